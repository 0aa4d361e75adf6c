"""Record a task's learning curves: every grid point x training seed, every epoch, sub-epoch flip rates.

Framework-free: trains with :func:`bnn_tune.train.fit` and an epoch callback; the sub-epoch flip rate is
read by :class:`~bnn_tune.metrics.SubEpochFlipRates` (a step post-hook on the trainer's flip counter). The
result is one compressed ``.npz`` per task with float32 arrays shaped ``(configs, seeds, epochs)`` (and
``(configs, seeds, epochs * 8)`` for the sub-epoch flip rate) plus a JSON ``meta`` entry with the grid,
the exact command, settings, date, machine and the recording's wall time. float32 throughout: accuracies
step by 1/800 against a 0.5 pp target tolerance, and flip rates go down to 1e-7 (below float16's normal
range); a 64-cell, 3-seed, 20-epoch table is about 0.2 MB compressed.

Recording is sharded and resumable, so a task fits in pieces of a session: the runs (grid point x seed,
in table order) are dealt round-robin to ``n`` shards; :func:`record_shard` records shard ``i`` of ``n``
into ``<out>/partial/<task>.shard-<i>-of-<n>.npz``, rewriting that file after every run, and skips the runs
a previous (interrupted) call already wrote there; :func:`merge_shards` checks that the partial files
together hold every run of the same task definition and writes the final ``<out>/<task>.npz``, equal to
an unsharded recording of the same runs (CPU training is deterministic).

    python benchmarks/record_hpobench.py --task bop_conv_digits --shard 1/3   # then 2/3, 3/3, in any order
    python benchmarks/record_hpobench.py --task bop_conv_digits --merge
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bnn_tune.metrics import SubEpochFlipRates

from .tasks import SUB_EPOCH_POINTS, Task, get_task

__all__ = ["CURVES", "PARTIAL_DIR", "grid_configs", "merge_shards", "parse_shard", "partial_path", "record_run",
           "record_shard", "record_task", "shard_runs"]

CURVES = ("val_acc", "test_acc", "val_loss", "test_loss", "train_loss", "flip_rate", "log_flip_rate")
"""Per-epoch arrays stored for every run (``sub_flip_rate`` has ``SUB_EPOCH_POINTS`` entries per epoch)."""

PARTIAL_DIR = "partial"
"""Sub-folder of the output folder that holds the shards' partial files."""

_TIMING_META = ("command", "date", "machine", "software", "workers", "wall_seconds", "run_seconds", "shards")
"""Meta entries that describe one recording session rather than the table (they differ between shards)."""

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


# ---------------------------------------------------------------------------------------------- shards
def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: shard 2 of 4 (1-based). Bad text raises ``ValueError`` naming it."""
    if isinstance(text, tuple):
        i, n = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if m is None:
            raise ValueError(f"`shard` must look like i/n (e.g. 2/4: the second of four pieces), but got shard={text!r}.")
        i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= i <= n:
        raise ValueError(f"`shard` i/n needs 1 <= i <= n, but got shard={i}/{n}.")
    return i, n


def shard_runs(n_configs: int, n_seeds: int, shard: str | tuple[int, int]) -> list[tuple[int, int]]:
    """The ``(config index, seed index)`` runs of ``shard`` i/n: every n-th run of the table order (config
    major), starting at run ``i - 1``; the n shards together hold each run exactly once, and a task's grid
    points of every cost are spread evenly over them."""
    i, n = parse_shard(shard)
    runs = [(ci, si) for ci in range(n_configs) for si in range(n_seeds)]
    return runs[i - 1:: n]


def partial_path(out_dir: str | os.PathLike[str], task: str, shard: str | tuple[int, int]) -> Path:
    """``<out_dir>/partial/<task>.shard-<i>-of-<n>.npz``."""
    i, n = parse_shard(shard)
    return Path(out_dir) / PARTIAL_DIR / f"{task}.shard-{i}-of-{n}.npz"


def _definition(task: Task, configs: list[dict[str, Any]]) -> dict[str, Any]:
    """What makes two recordings parts of one table (everything but the session's timing)."""
    return {"task": task.name, "space": task.space, "base": task.base, "grid": {k: list(v) for k, v in task.grid.items()},
            "seeds": list(task.seeds), "epochs": task.epochs, "sub_epoch_points": SUB_EPOCH_POINTS,
            "configs": configs}


def _empty_arrays(n_c: int, n_s: int, n_e: int) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {k: np.full((n_c, n_s, n_e), np.nan, dtype=np.float32) for k in CURVES}
    arrays["sub_flip_rate"] = np.full((n_c, n_s, n_e * SUB_EPOCH_POINTS), np.nan, dtype=np.float32)
    arrays["completed"] = np.zeros((n_c, n_s), dtype=np.bool_)
    return arrays


def _session_meta(command: Sequence[str] | None, workers: int) -> dict[str, Any]:
    import torch

    return {
        "command": " ".join(command if command is not None else sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
                   f"{os.cpu_count()} cpus (shared with other jobs)".strip(),
        "software": f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
        "workers": workers, "torch_threads": 1,
    }


def _save(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a killed recorder leaves the previous file, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"])), {k: z[k] for k in z.files if k != "meta"}


def _job(args: tuple[Task, dict[str, Any], int, int, int]) -> tuple[int, int, dict[str, list[float]], float]:
    import torch

    torch.set_num_threads(1)
    task, params, ci, si, seed = args
    t0 = time.perf_counter()
    res = record_run(task, params, seed)
    return ci, si, res, time.perf_counter() - t0


def _resolve(task: str | Task, allow_held_out: bool) -> Task:
    tk = task if isinstance(task, Task) else get_task(task)
    if tk.held_out and not allow_held_out:
        raise ValueError(f"Task {tk.name!r} is held out: it is recorded only after the default search strategy's "
                         "settings are frozen (issue 25). Pass allow_held_out=True (CLI: --allow-held-out) then.")
    return tk


def record_shard(task: str | Task, out_dir: str | os.PathLike[str], *, shard: str | tuple[int, int] = (1, 1),
                 workers: int = 1, command: Sequence[str] | None = None, limit: int | None = None,
                 allow_held_out: bool = False, on_run: Callable[[int, int, float], None] | None = None) -> Path:
    """Record shard ``i/n`` of ``task`` into its partial file (see the module docs); returns its path.

    Runs already in an existing partial file of the same task definition are skipped (resume); the file is
    rewritten after every run, so an interrupted call loses at most the runs in progress.

    Args:
        task: a task name (or a :class:`Task`, for tests).
        shard: ``"i/n"`` or ``(i, n)``, 1-based.
        workers: processes (each with one torch thread).
        command: the command line stored in the metadata (default ``sys.argv``).
        limit: only the first ``limit`` grid points (for tests and quick checks).
        allow_held_out: record a task marked ``held_out`` (only once the default strategy is frozen).
        on_run: called as ``on_run(done, total, seconds)`` after each run (progress).

    Raises:
        ValueError: a bad ``shard``; a held-out task without ``allow_held_out``; an existing partial file
            recorded from another definition of the task (the message names the file).
    """
    tk = _resolve(task, allow_held_out)
    shard = parse_shard(shard)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be an integer >= 1, but got workers={workers!r}.")
    configs = grid_configs(tk)[: limit or None]
    definition = _definition(tk, configs)
    path = partial_path(out_dir, tk.name, shard)
    n_c, n_s, n_e = len(configs), len(tk.seeds), tk.epochs
    wall, run_seconds = 0.0, np.zeros((n_c, n_s), dtype=np.float32)
    arrays, recorded = _empty_arrays(n_c, n_s, n_e), np.zeros((n_c, n_s), dtype=np.bool_)
    if path.is_file():
        old_meta, old = _read(path)
        if {k: old_meta.get(k) for k in definition} != json.loads(json.dumps(definition)):
            raise ValueError(f"{path} was recorded from another definition of task {tk.name!r} (grid, seeds, "
                             "epochs or base config differ); delete it to record this shard anew.")
        arrays = {k: old[k] for k in arrays}
        recorded, run_seconds = old["recorded"], old["run_seconds"]
        wall = float(old_meta.get("wall_seconds", 0.0))
    todo = [(tk, configs[ci], ci, si, tk.seeds[si]) for ci, si in shard_runs(n_c, n_s, shard) if not recorded[ci, si]]
    meta = {**definition, **_session_meta(command, workers), "shard": list(shard), "limit": limit}
    t0 = time.time()

    def store(results: Iterator[tuple[int, int, dict[str, list[float]], float]]) -> None:
        for done, (ci, si, res, secs) in enumerate(results, 1):
            for k in CURVES:
                arrays[k][ci, si] = res[k]
            arrays["sub_flip_rate"][ci, si] = res["sub_flip_rate"]
            arrays["completed"][ci, si] = bool(res["status"][0])
            recorded[ci, si], run_seconds[ci, si] = True, secs
            meta.update(wall_seconds=round(wall + time.time() - t0, 1), run_seconds=round(float(run_seconds.sum()), 1))
            _save(path, meta, {**arrays, "recorded": recorded, "run_seconds": run_seconds})
            if on_run is not None:
                on_run(done, len(todo), secs)

    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            store(pool.imap_unordered(_job, todo))
    else:
        store(map(_job, todo))
    if not todo:  # nothing left to run: still leave a file that says so
        meta.update(wall_seconds=round(wall, 1), run_seconds=round(float(run_seconds.sum()), 1))
        _save(path, meta, {**arrays, "recorded": recorded, "run_seconds": run_seconds})
    return path


def merge_shards(task: str | Task, out_dir: str | os.PathLike[str], *, keep_parts: bool = False,
                 command: Sequence[str] | None = None) -> Path:
    """Merge the partial files of ``task`` under ``out_dir/partial`` into ``out_dir/<task>.npz``; returns it.

    The parts may come from different shardings (e.g. 1/2 and a re-run as 3/4 and 4/4); they must share the
    task definition, and a run recorded twice must be identical. The merged ``meta`` sums the parts' wall
    and run seconds and lists their commands.

    Raises:
        ValueError: no partial files; a part recorded from another definition of the task (than the current
            one in :mod:`~bnn_tune.hpobench.tasks`, or than another part); a run recorded twice with different
            values; runs missing (the message names the shards to run and the command).
    """
    tk = task if isinstance(task, Task) else get_task(task)
    parts = sorted((Path(out_dir) / PARTIAL_DIR).glob(f"{tk.name}.shard-*-of-*.npz"))
    if not parts:
        raise ValueError(f"No partial files of task {tk.name!r} under {Path(out_dir) / PARTIAL_DIR}; record them "
                         f"first: python benchmarks/record_hpobench.py --task {tk.name} --shard 1/N (each of 1..N).")
    metas, datas = zip(*(_read(p) for p in parts))
    limit = metas[0].get("limit")
    definition = json.loads(json.dumps(_definition(tk, grid_configs(tk)[: limit or None])))
    for p, m in zip(parts, metas):
        if {k: m.get(k) for k in definition} != definition or m.get("limit") != limit:
            raise ValueError(f"{p} was recorded from another definition of task {tk.name!r} than tasks.py's "
                             "(grid, seeds, epochs or base config differ) or than the other parts; delete it and "
                             "record its shard again.")
    n_c, n_s = len(definition["configs"]), len(definition["seeds"])
    arrays, recorded = _empty_arrays(n_c, n_s, int(definition["epochs"])), np.zeros((n_c, n_s), dtype=np.bool_)
    run_seconds = 0.0
    for p, d in zip(parts, datas):
        mine = d["recorded"]
        both = mine & recorded
        for k in arrays:
            if both.any() and not np.array_equal(arrays[k][both], d[k][both], equal_nan=k != "completed"):
                raise ValueError(f"{p} holds a run that another part also holds, with different {k!r}; delete one "
                                 "of them and record its shard again.")
            arrays[k][mine] = d[k][mine]
        recorded |= mine
        run_seconds += float(d["run_seconds"][mine & ~both].sum())
    if not recorded.all():
        missing = sorted({f"{m['shard'][0]}/{m['shard'][1]}" for m, d in zip(metas, datas)
                          if not d["recorded"][tuple(np.array(shard_runs(n_c, n_s, tuple(m["shard"]))).T)].all()})
        if not missing:
            covered = {int(m["shard"][0]) for m in metas}
            n = int(metas[0]["shard"][1])
            missing = [f"{i}/{n}" for i in range(1, n + 1) if i not in covered]
        raise ValueError(f"Task {tk.name!r}: {int((~recorded).sum())} of {recorded.size} runs are not recorded yet "
                         f"(shards {', '.join(missing) or '?'} unfinished or missing); run: python "
                         f"benchmarks/record_hpobench.py --task {tk.name} --shard <i/n> for each, then --merge.")
    meta = {**definition, **_session_meta(command, max(int(m.get("workers", 1)) for m in metas)),
            "shards": [{"shard": m["shard"], "command": m["command"], "date": m["date"], "machine": m["machine"],
                        "wall_seconds": m["wall_seconds"]} for m in metas],
            "wall_seconds": round(sum(float(m["wall_seconds"]) for m in metas), 1),
            "run_seconds": round(run_seconds, 1)}
    path = Path(out_dir) / f"{tk.name}.npz"
    _save(path, meta, arrays)
    if not keep_parts:
        for p in parts:
            p.unlink()
    return path


def record_task(name: str | Task, out_dir: str | os.PathLike[str], *, workers: int = 2,
                command: Sequence[str] | None = None, limit: int | None = None, allow_held_out: bool = False) -> Path:
    """Record every grid point x seed of task ``name`` into ``out_dir/<name>.npz``; returns the path.

    One shard (1/1) then :func:`merge_shards`: an interrupted call resumes from its partial file.

    Args:
        workers: processes (each with one torch thread).
        command: the command line stored in the metadata (default ``sys.argv``).
        limit: record only the first ``limit`` grid points (for tests).
        allow_held_out: record a task marked ``held_out``.
    """
    record_shard(name, out_dir, shard=(1, 1), workers=workers, command=command, limit=limit,
                 allow_held_out=allow_held_out)
    return merge_shards(name, out_dir, command=command)
