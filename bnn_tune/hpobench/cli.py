"""``bnn-tune hpobench``: replay searches on a recorded task and print medians with IQR."""

from __future__ import annotations

import argparse
import json

from ..cli import register_command

__all__: list[str] = []


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="recorded task (see bnn_tune.hpobench.tasks())")
    p.add_argument("--pruner", default="asha,flip+asha,flip+hyperband",
                   help="pruner name(s), comma-separated: none, median, asha, hyperband, flip, flip+asha, "
                        "flip+hyperband (bnn-tune search's default), flip+median, flip-or+asha (default: asha,flip+asha,flip+hyperband)")
    p.add_argument("--space", default="reinterpreted", help="reinterpreted or naive (default reinterpreted)")
    p.add_argument("--sampler", default="tpe", help="tpe, random or qmc (default tpe)")
    p.add_argument("--seeds", default="0-9", help="sampler seeds, e.g. 0-49 or 1000-1039 (default 0-9)")
    p.add_argument("--n-trials", type=int, default=None, dest="n_trials", help="trials per search (default 60)")
    p.add_argument("--json", action="store_true", help="print the aggregates as JSON")


def _fmt(q: tuple[float, float, float], digits: int) -> str:
    def one(x: float) -> str:
        return "never" if x == float("inf") else f"{x:.{digits}f}"
    return f"{one(q[0])} [{one(q[1])}, {one(q[2])}]"


def _run(args: argparse.Namespace) -> int:
    import sys

    from . import tasks
    from .evaluate import aggregate, parse_seeds, run_many

    known = tasks()
    if args.task not in known:
        print(f"bnn-tune hpobench: error: unknown task {args.task!r}; recorded tasks: {known}", file=sys.stderr)
        return 2
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        print(f"bnn-tune hpobench: error: {exc}", file=sys.stderr)
        return 2
    from ._replay import PRUNERS, SPACES

    pruners = [p.strip() for p in args.pruner.split(",") if p.strip()]
    bad = [p for p in pruners if p not in PRUNERS]
    if bad or not pruners:
        print(f"bnn-tune hpobench: error: unknown pruner {bad[0] if bad else args.pruner!r}; "
              f"choose from {list(PRUNERS)}", file=sys.stderr)
        return 2
    if args.space not in SPACES:
        print(f"bnn-tune hpobench: error: unknown space {args.space!r}; choose from {list(SPACES)}", file=sys.stderr)
        return 2
    if args.sampler not in ("tpe", "random", "qmc"):
        print(f"bnn-tune hpobench: error: unknown sampler {args.sampler!r}; choose from ['tpe', 'random', 'qmc']",
              file=sys.stderr)
        return 2
    if args.n_trials is not None and args.n_trials < 1:
        print(f"bnn-tune hpobench: error: --n-trials must be >= 1, but got {args.n_trials}", file=sys.stderr)
        return 2
    try:
        rows = {p: aggregate(run_many(args.task, p, seeds, space=args.space, sampler=args.sampler,
                                      n_trials=args.n_trials)) for p in pruners}
    except ValueError as exc:
        print(f"bnn-tune hpobench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"hpobench {args.task}, space={args.space}, sampler={args.sampler}, seeds {args.seeds} "
                    f"(median [25%, 75%])")
    for col in ("pruner", "trials to target", "trial-epochs to target", "trial-epochs total", "best final val",
                "reached", "best config pruned", "stopped by"):
        t.add_column(col, justify="right" if col not in ("pruner", "stopped by") else "left")
    for p, r in rows.items():
        t.add_row(p, _fmt(r["trials_to_target"], 0), _fmt(r["trial_epochs_to_target"], 1),
                  _fmt(r["trial_epochs_total"], 1), _fmt(r["best_final_val_acc"], 4), f"{r['reached']:.0%}",
                  f"{r['best_config_pruned']:.0%}", ", ".join(f"{k} {v}" for k, v in sorted(r["stop_rules"].items())))
    Console(width=200).print(t)
    return 0


register_command("hpobench", _add, _run)
