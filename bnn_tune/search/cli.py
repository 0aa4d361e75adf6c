"""``bnn-tune search``: a hyperparameter search with Ray Tune (default) or Optuna.

Example:
    bnn-tune search --optimizer bop --dataset digits --samples 16 --out runs/digits-bop   # local Ray
    bnn-tune search --backend optuna --optimizer bop --samples 16 --workers 2 --out runs/bop
    optuna-dashboard sqlite:///runs/bop/study.db

The Ray backend (:mod:`bnn_tune.search.ray`) starts an embedded local Ray runtime with the machine's
CPUs or joins a cluster with ``--address``. With the Optuna backend, the study is stored in
``<out>/study.db`` (SQLite), checkpoints of completed trials go to
``<out>/trial_<number>/checkpoint.pt``, and ``<out>/best.json`` holds the best trial's config, value and
checkpoint path. ``--storage`` takes any URL :func:`bnn_tune.search.optuna.make_storage` accepts
(``sqlite:///...``, ``journal:///path.log``, ``:memory:``). ``--backend ray`` (the default when ray is
installed) hands the same arguments to ``bnn_tune.search.ray.run_ray_search``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from ..cli import add_config_arguments, config_from_args, register_command
from ._rule import DEFAULT_PRUNER, PRUNERS

__all__ = ["add_search_arguments", "print_ranking", "run_search_command"]


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--backend", choices=("ray", "optuna"), default=None,
                   help="search framework: ray (default when ray is installed: embedded local Ray or --address) "
                        "or optuna (worker processes sharing --storage)")
    p.add_argument("--space", default=None,
                   help="search space name (default: the --optimizer's space; see search_spaces.list_spaces())")
    p.add_argument("--naive", action="store_true", help="use the space's naive_suggest (real-valued-style baseline)")
    p.add_argument("--samples", type=int, default=16, help="number of trials (default 16)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (sqlite:///path.db, journal:///path.log, :memory:) of the study: "
                        "with --backend optuna the shared study (default sqlite:///<out>/study.db), with Ray "
                        "the OptunaSearch sampler's study (default in memory)")
    p.add_argument("--workers", type=int, default=None,
                   help="concurrent trials: Ray's max_concurrent_trials (default: all CPUs of the cluster) or "
                        "Optuna worker processes sharing the storage (default 1)")
    p.add_argument("--address", default=None,
                   help="ray backend: Ray cluster to join ('auto' or ray://host:10001; default: embedded local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="ray backend: continue the interrupted search in --out from its trials' checkpoints")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, dest="gpus_per_trial",
                   help="ray backend: GPUs reserved per trial (fractions allowed; default 0)")
    p.add_argument("--max-failures", type=int, default=1, dest="max_failures",
                   help="ray backend: retries of a crashed trial from its last checkpoint (default 1)")
    p.add_argument("--study", default=None, dest="study_name", help="study name (default: the --out folder name)")
    p.add_argument("--out", default=None, help="output folder (default runs/<study>)")
    p.add_argument("--pruner", default=DEFAULT_PRUNER, choices=PRUNERS,
                   help="flip+hyperband (default): Hyperband with the flip-rate rules (flip-early, flip-band, "
                        "late-bloomer protection); flip+asha: the same with one successive-halving bracket; "
                        "hyperband, asha: those alone; flip: the flip-rate collapse rule alone; flip+median: "
                        "collapse or median rule; median; none")
    p.add_argument("--top", type=int, default=10, help="rows of the final ranking table")


def _default_name(args: argparse.Namespace, space: str) -> str:
    dataset = getattr(args, "dataset", None) or "digits"
    return f"{space}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _short(text: str | None, n: int = 70) -> str:
    if not text:
        return ""
    return text if len(text) <= n else text[: n - 1] + "…"


def print_ranking(study: Any, *, top: int = 10, console: Any = None) -> None:
    """A rich table of the best trials (completed first, by value) and the state counts."""
    from rich.console import Console
    from rich.table import Table

    from ..objective import CONFIG_ATTR, FAIL_REASON_ATTR, PRUNE_REASON_ATTR

    console = console or Console()
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1

    def key(t: Any) -> tuple[int, float]:
        done = t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)
        best_iv = max((v for v in t.intermediate_values.values() if math.isfinite(v)), default=-math.inf)
        return (0 if done else 1, -(t.value if done else best_iv))

    ranked = sorted(trials, key=key)[:top]
    param_names = sorted({k for t in ranked for k in t.params})
    table = Table(title=f"study {study.study_name!r}: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())))
    for col in ("rank", "trial", "state", "val_acc", "epochs", *param_names, "note"):
        table.add_column(col, justify="left" if col in ("state", "note") else "right")
    for i, t in enumerate(ranked, 1):
        val = "" if t.value is None or not math.isfinite(t.value) else f"{t.value:.4f}"
        if not val and t.intermediate_values:
            val = f"({max(t.intermediate_values.values()):.4f})"
        note = t.user_attrs.get(PRUNE_REASON_ATTR) if t.state.name == "PRUNED" else t.user_attrs.get(FAIL_REASON_ATTR)
        # show the config values the trial trained with (e.g. threshold 0 from the zero decade), not raw samples
        used = {**t.params, **{k: v for k, v in (t.user_attrs.get(CONFIG_ATTR) or {}).items() if k in t.params}}
        cells = [f"{used[k]:.3g}" if isinstance(used.get(k), float) else str(used.get(k, "")) for k in param_names]
        table.add_row(str(i), str(t.number), t.state.name, val, str(t.last_step or ""), *cells, _short(note))
    console.print(table)


def _write_best(study: Any, out: Path) -> dict[str, Any] | None:
    from ..objective import CHECKPOINT_ATTR, CONFIG_ATTR

    try:
        best = study.best_trial
    except ValueError:
        return None
    doc = {"study": study.study_name, "trial": best.number, "value": best.value, "metric": "val_acc",
           "params": best.params, "config": best.user_attrs.get(CONFIG_ATTR),
           "checkpoint": best.user_attrs.get(CHECKPOINT_ATTR)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "best.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return doc


def _why_none_completed(study: Any, args: argparse.Namespace) -> str:
    """One line for a search that ended without a completed trial: what ended the trials and what to change."""
    from collections import Counter

    from ..objective import PRUNE_REASON_ATTR
    from .report import stop_rule

    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name.lower() for t in trials)
    rules = Counter(stop_rule(t.user_attrs.get(PRUNE_REASON_ATTR, "")) for t in trials if t.state.name == "PRUNED")
    parts = ", ".join(f"{n} {state}" for state, n in states.most_common()) or "no trials"
    why = f" ({', '.join(f'{rule}: {n}' for rule, n in rules.most_common())})" if rules else ""
    hint = ""
    if rules:
        hint = (f"; the pruner ({args.pruner}) stopped every trial: run more --samples (or another --seed), or "
                f"--pruner none to train every trial to the end")
        if "flip-early" in rules:
            hint += "; flip-early means the sampled optimizer settings never flipped a binary weight"
    elif states.get("fail"):
        hint = "; every trial failed: see the errors above"
    return f"no trial completed: {parts}{why}{hint}"


def run_search_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the ranking into 80 columns
        console = Console(width=160)
    backend = args.backend
    if backend is None:
        import importlib.util

        backend = "ray" if importlib.util.find_spec("ray") is not None else "optuna"
        if backend == "optuna":
            console.print("ray is not installed (pip install 'bnn-tune[ray]'): searching with the Optuna backend")
    if backend == "ray":
        from .ray import run_ray_search

        return int(run_ray_search(args) or 0)
    ray_only = [flag for flag, used in (("--address", args.address), ("--resume", args.resume),
                                        ("--gpus-per-trial", args.gpus_per_trial),
                                        ("--max-failures", args.max_failures != 1)) if used]
    if ray_only:
        raise ValueError(f"{', '.join(ray_only)} only apply to --backend ray.")
    if args.workers is None:
        args.workers = 1
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, but got {args.workers}.")

    from bnn_tune import search_spaces

    from .optuna import SearchSettings, run_optuna_search

    base = config_from_args(args)
    optimizer = base.pop("optimizer", None)
    space_name = args.space or optimizer
    if not space_name:
        raise ValueError(f"give --optimizer (e.g. bop) or --space; spaces: {search_spaces.list_spaces()}")
    space = search_spaces.get(space_name)  # user errors here and below are answered by bnn_tune.cli.main
    if optimizer and space.NAME != optimizer and not args.naive:
        raise ValueError(f"--optimizer {optimizer!r} does not match --space {space_name!r} "
                         f"(which searches optimizer {space.NAME!r}).")
    name = args.study_name or (Path(args.out).name if args.out else _default_name(args, space_name))
    if not re.fullmatch(r"[\w.\-]+", name):
        raise ValueError(f"--study must be letters, digits, '.', '-' or '_', but got {name!r}.")
    out = Path(args.out or Path("runs") / name)
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    settings = SearchSettings(space=space_name, base_config=base, n_trials=args.samples, storage=storage,
                              study_name=name, workers=args.workers, pruner=args.pruner, seed=args.seed,
                              artifact_dir=str(out), naive=args.naive)
    console.print(f"bnn-tune search: space={space_name}{' (naive)' if args.naive else ''} trials={args.samples} "
                  f"workers={args.workers} storage={storage} study={name} out={out}")
    study = run_optuna_search(settings)
    print_ranking(study, top=args.top, console=console)
    best = _write_best(study, out)
    if best is None:
        console.print(f"[yellow]{_why_none_completed(study, args)}[/yellow]")
        return 1
    console.print(f"best: trial {best['trial']} val_acc={best['value']:.4f} -> {out / 'best.json'}")
    if storage.startswith("sqlite:///"):
        console.print(f"dashboard: optuna-dashboard {storage}")
    return 0


register_command("search", add_search_arguments, run_search_command)
