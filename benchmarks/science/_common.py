"""Shared plumbing of the science benchmarks: arguments, data cache, training runs, result files.

Every script in ``benchmarks/science`` is runnable alone::

    python benchmarks/science/NAME.py [--quick] [--out DIR]

and writes ``DIR/NAME.json`` (settings, the command, the measured figures, wall time) and ``DIR/NAME.png``.
The repository root is put on ``sys.path`` so the scripts run from a checkout without installing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results"
CAVEAT = ("2-core CPU machine shared with other jobs while measured: wall times are noisy upper bounds; "
          "accuracies and epoch counts are deterministic for a given seed.")

_DATA: dict[tuple[str, float], Any] = {}


def parse_args(doc: str | None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--quick`` (CI smoke run, seconds), ``--out DIR`` (default ``benchmarks/results``), ``--threads``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny budget: checks the script runs (CI)")
    p.add_argument("--out", default=None,
                   help="directory for NAME.json and NAME.png (default benchmarks/results, "
                        "benchmarks/results/quick with --quick so smoke runs never overwrite full results)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    if args.out is None:
        args.out = str(DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    torch.set_num_threads(max(1, args.threads))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def command_line() -> str:
    """The command that reproduces this run (relative script path, same flags)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(ROOT))
    except ValueError:
        script_s = str(script)
    return " ".join(["python", script_s, *map(shlex.quote, sys.argv[1:])])


def data(name: str, val_fraction: float = 0.2):
    """Load (once per process) a dataset's splits."""
    key = (name, val_fraction)
    if key not in _DATA:
        from bnn_tune.data import load_dataset

        _DATA[key] = load_dataset(name, val_fraction=val_fraction, root=str(ROOT / "data"), download=False)
    return _DATA[key]


def train(config: Mapping[str, Any], *, callback: Callable | None = None) -> dict[str, Any]:
    """Train one config with :class:`bnn_tune.Trainer`; return its per-epoch series and summary."""
    from bnn_tune.train import Trainer

    cfg = dict(config)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, data=data(cfg.get("dataset", "digits"), cfg.get("val_fraction", 0.2)))
    result = trainer.run(callback)
    hist = result.history
    return {
        "config": cfg,
        "status": result.status,
        "val_acc": [h.val_acc for h in hist],
        "train_acc": [h.train_acc for h in hist],
        "flip_rate": [h.flip_rate for h in hist],
        "log_flip_rate": [h.log_flip_rate for h in hist],
        "final_val_acc": hist[-1].val_acc if hist else float("nan"),
        "best_val_acc": max((h.val_acc for h in hist), default=float("nan")),
        "test_acc": float(result.test_acc),
        "epochs_run": len(hist),
        "wall_s": time.perf_counter() - t0,
    }


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def save(name: str, args: argparse.Namespace, payload: Mapping[str, Any], fig: Any, t_start: float) -> Path:
    """Write ``<out>/<name>.json`` (payload + provenance) and ``<out>/<name>.png``; print a short line."""
    out = Path(args.out)
    doc = {
        "benchmark": name,
        "command": command_line(),
        "quick": bool(args.quick),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": round(time.perf_counter() - t_start, 2),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}",
        "caveat": CAVEAT,
        **payload,
    }
    path = out / f"{name}.json"
    with open(path, "w") as f:
        json.dump(_clean(doc), f, indent=1)
        f.write("\n")
    if fig is not None:
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
    print(f"[{name}] wrote {path} and {name}.png in {doc['wall_s']:.1f}s")
    return path


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def minibatch_epochs(n: int, batch: int, steps: int, gen: torch.Generator):
    """Index tensors of exactly ``steps`` full mini-batches of ``batch`` out of ``n`` samples, one list per
    epoch (a fresh permutation from ``gen`` each; the last epoch is cut at ``steps``)."""
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        epoch = [perm[i:i + batch] for i in range(0, n - batch + 1, batch)][: steps - done]
        done += len(epoch)
        yield epoch


def volatility(series: list[float]) -> float:
    """Standard deviation of the epoch-to-epoch changes of a series (0 for fewer than 3 points)."""
    if len(series) < 3:
        return 0.0
    d = [b - a for a, b in zip(series[:-1], series[1:])]
    mu = sum(d) / len(d)
    return math.sqrt(sum((x - mu) ** 2 for x in d) / (len(d) - 1))
