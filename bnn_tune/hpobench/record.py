"""Record a task's learning curves: every grid point x training seed, every epoch, sub-epoch flip rates.

Framework-free: trains with :func:`bnn_tune.train.fit` and an epoch callback; the sub-epoch flip rate is
read by :class:`~bnn_tune.metrics.SubEpochFlipRates` (a step post-hook on the trainer's flip counter). The
result is one compressed ``.npz`` per task with float32 arrays shaped ``(configs, seeds, epochs)`` (and
``(configs, seeds, epochs * 8)`` for the sub-epoch flip rate) plus a JSON ``meta`` entry with the grid,
the exact command, settings, date, machine and the recording's wall time.

    python benchmarks/record_hpobench.py --task bop_digits --workers 2
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bnn_tune.metrics import SubEpochFlipRates

from .tasks import SUB_EPOCH_POINTS, Task, get_task

__all__ = ["CURVES", "grid_configs", "record_run", "record_task"]

CURVES = ("val_acc", "test_acc", "val_loss", "test_loss", "train_loss", "flip_rate", "log_flip_rate")
"""Per-epoch arrays stored for every run (``sub_flip_rate`` has ``SUB_EPOCH_POINTS`` entries per epoch)."""

_DATA_CACHE: dict[str, Any] = {}


def grid_configs(task: Task) -> list[dict[str, Any]]:
    """The grid points of ``task`` in table order (the last key varies fastest)."""
    keys = list(task.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(task.grid[k] for k in keys))]


def record_run(task: Task, params: dict[str, Any], seed: int) -> dict[str, list[float]]:
    """Train one grid point with one training seed; returns ``{curve: [per epoch]}`` and ``sub_flip_rate``.

    A run whose loss becomes non-finite stops (``fit``'s ``"diverged"``); its remaining epochs are NaN.
    """
    from bnn_tune.data import load_dataset
    from bnn_tune.train import Trainer

    cfg = {**task.base, **params, "seed": int(seed)}
    key = f"{cfg['dataset']}:{cfg.get('val_fraction', 0.2)}"
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(cfg["dataset"], val_fraction=cfg.get("val_fraction", 0.2))
    out: dict[str, list[float]] = {k: [] for k in CURVES}

    def callback(m: Any, trainer: Any) -> bool:
        test_loss, test_acc = trainer.evaluate("test")
        for k, v in (("val_acc", m.val_acc), ("test_acc", test_acc), ("val_loss", m.val_loss),
                     ("test_loss", test_loss), ("train_loss", m.train_loss), ("flip_rate", m.flip_rate),
                     ("log_flip_rate", m.log_flip_rate)):
            out[k].append(float(v))
        return False

    trainer = Trainer(cfg, data=_DATA_CACHE[key])
    subs = SubEpochFlipRates(trainer.flips, trainer.steps_per_epoch, SUB_EPOCH_POINTS).attach(trainer.optimizer)
    result = trainer.run(callback)  # Trainer.run is what fit() calls; the trainer is needed for the hook
    sub = list(subs.rates)
    epochs = task.epochs
    for k in CURVES:
        out[k] += [math.nan] * (epochs - len(out[k]))
    sub += [math.nan] * (epochs * SUB_EPOCH_POINTS - len(sub))
    out["sub_flip_rate"] = sub[: epochs * SUB_EPOCH_POINTS]
    out["status"] = [1.0 if result.status == "completed" else 0.0]
    return out


def _job(args: tuple[str, int, int]) -> tuple[int, int, dict[str, list[float]], float]:
    import torch

    torch.set_num_threads(1)
    name, ci, si = args
    task = get_task(name)
    t0 = time.perf_counter()
    res = record_run(task, grid_configs(task)[ci], task.seeds[si])
    return ci, si, res, time.perf_counter() - t0


def record_task(name: str, out_dir: str | os.PathLike[str], *, workers: int = 2,
                command: Sequence[str] | None = None, limit: int | None = None) -> Path:
    """Record every grid point x seed of task ``name`` into ``out_dir/<name>.npz``; returns the path.

    Args:
        workers: processes (each with one torch thread).
        command: the command line stored in the metadata (default ``sys.argv``).
        limit: record only the first ``limit`` grid points (for tests).
    """
    import multiprocessing as mp

    task = get_task(name)
    configs = grid_configs(task)[: limit or None]
    n_c, n_s, n_e = len(configs), len(task.seeds), task.epochs
    arrays: dict[str, np.ndarray] = {k: np.full((n_c, n_s, n_e), np.nan, dtype=np.float32) for k in CURVES}
    arrays["sub_flip_rate"] = np.full((n_c, n_s, n_e * SUB_EPOCH_POINTS), np.nan, dtype=np.float32)
    arrays["completed"] = np.zeros((n_c, n_s), dtype=np.bool_)
    jobs = [(name, ci, si) for ci in range(n_c) for si in range(n_s)]
    t0 = time.time()
    run_seconds = 0.0
    if workers > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            results = list(pool.imap_unordered(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    for ci, si, res, secs in results:
        run_seconds += secs
        for k in CURVES:
            arrays[k][ci, si] = res[k]
        arrays["sub_flip_rate"][ci, si] = res["sub_flip_rate"]
        arrays["completed"][ci, si] = bool(res["status"][0])
    import torch

    meta = {
        "task": task.name, "space": task.space, "base": task.base, "grid": {k: list(v) for k, v in task.grid.items()},
        "seeds": list(task.seeds), "epochs": n_e, "sub_epoch_points": SUB_EPOCH_POINTS, "configs": configs,
        "command": " ".join(command if command is not None else sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
                   f"{os.cpu_count()} cpus (shared with other jobs)".strip(),
        "software": f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
        "workers": workers, "torch_threads": 1,
        "wall_seconds": round(time.time() - t0, 1), "run_seconds": round(run_seconds, 1),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.npz"
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    return path
