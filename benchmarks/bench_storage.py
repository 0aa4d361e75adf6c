"""Storage overhead of ``bnn-tune search --backend optuna``: ms of bookkeeping per reported epoch (issue 27).

SQLite, a journal file and PostgreSQL (a server started by ``tools/pg_server.py``, on 127.0.0.1), each with 1, 4 and 8
worker processes on one study. Every worker runs ``study.optimize`` with the storage the search makes
(:func:`bnn_tune.search._storage.make_storage`: the heartbeat on for the RDB storages; SQLite's asks serialized by
:func:`bnn_tune.search.optuna.serialize_asks`) and an objective that makes exactly the storage calls of
:class:`bnn_tune.objective.Objective` for one trial, with no training in between: the worker and config user attrs,
the bop space's four ``suggest_*`` calls, the 8 sub-epoch flip-rate series of the first epoch, then per epoch three
series (flip rate, val_acc, per-layer flip rates), ``trial.report`` and ``trial.should_prune`` (not after the last
epoch), and the test accuracy and checkpoint attrs before ``tell``. The sampler is random (TPE's own cost grows with the
trials and is no storage cost) and the pruner Optuna's NopPruner (``--pruner none``).

Overhead per reported epoch = a worker's wall time for its trials / the epochs they reported (so a trial's ask and
tell are spread over its epochs); the table gives the median over the workers, and the throughput of all workers
together. The workers start together (after their imports and ``load_study``) and the first trial of each is not
timed (connection set-up). The server runs with PostgreSQL's durable defaults (``fsync``, ``synchronous_commit``),
SQLite with Optuna's (a journal in rollback mode, synchronous FULL).

    python benchmarks/bench_storage.py --out benchmarks/results/storage       # the full table of BENCHMARKS.md
    python benchmarks/bench_storage.py --quick                                # smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STORAGES = ("sqlite", "journal", "postgresql")
LAYERS = ("fc1", "fc2", "fc3")


def _pg_tool() -> Any:
    spec = importlib.util.spec_from_file_location("bnn_tune_tool_pg_server", ROOT / "tools" / "pg_server.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _objective(epochs: int, worker: str) -> Any:
    """The storage calls of bnn_tune.objective.Objective for one ``epochs``-epoch trial, without the training."""
    from bnn_tune.plugins._outcome import (
        CHECKPOINT_ATTR,
        CONFIG_ATTR,
        FLIP_RATE_ATTR,
        LAYER_FLIP_RATE_ATTR,
        SUB_EPOCH_POINTS,
        SUB_FLIP_RATE_ATTR,
        TEST_ACC_ATTR,
        VAL_ACC_ATTR,
        WORKER_ATTR,
    )
    from bnn_tune.search_spaces import bop

    def objective(trial: Any) -> float:
        trial.set_user_attr(WORKER_ATTR, worker)
        params = bop.suggest(trial)
        trial.set_user_attr(CONFIG_ATTR, {"dataset": "digits", "optimizer": "bop", "epochs": epochs, **params})
        subs: list[float] = []
        for point in range(SUB_EPOCH_POINTS):
            subs.append(-3.0 - point / 10)
            trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(subs))
        lfr: list[float] = []
        accs: list[float] = []
        layers: dict[str, list[float]] = {}
        for epoch in range(1, epochs + 1):
            lfr.append(-3.0 - epoch / 10)
            accs.append(0.5 + epoch / 100)
            for name in LAYERS:
                layers.setdefault(name, []).append(-3.0 - epoch / 20)
            trial.set_user_attr(FLIP_RATE_ATTR, list(lfr))
            trial.set_user_attr(VAL_ACC_ATTR, list(accs))
            trial.set_user_attr(LAYER_FLIP_RATE_ATTR, {k: list(v) for k, v in layers.items()})
            trial.report(accs[-1], epoch)
            if epoch < epochs:
                trial.should_prune()
        trial.set_user_attr(TEST_ACC_ATTR, accs[-1])
        trial.set_user_attr(CHECKPOINT_ATTR, f"/runs/bench/trial_{trial.number}/checkpoint.pt")
        return accs[-1]

    return objective


def _prepared(url: str, study_name: str, epochs: int, index: int) -> tuple[Any, Any]:
    """A worker's study (the storage as the search opens it) and objective, after one untimed trial."""
    import optuna

    from bnn_tune.search._storage import make_storage
    from bnn_tune.search.optuna import serialize_asks

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rdb = "://" in url and not url.startswith("journal")
    storage = make_storage(url, heartbeat_interval=10, grace_period=30) if rdb else make_storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=index),
                              pruner=optuna.pruners.NopPruner())
    serialize_asks(study, url)
    objective = _objective(epochs, f"bench:{os.getpid()}:{index}")
    study.optimize(objective, n_trials=1)  # connections and caches set up: not timed
    return study, objective


def _worker(url: str, study_name: str, trials: int, epochs: int, index: int, ready: Any, go: Any,
            results: Any) -> None:
    study, objective = _prepared(url, study_name, epochs, index)
    ready.release()
    go.wait()
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    results.put((index, time.perf_counter() - t0))


def run_case(url: str, *, workers: int, trials: int, epochs: int) -> dict[str, Any]:
    """``workers`` processes, ``trials`` timed trials each, on a fresh study in ``url``."""
    import optuna

    from bnn_tune.search._storage import make_storage

    name = f"bench-{workers}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=name, storage=make_storage(url), direction="maximize")
    if workers == 1:  # this process is the worker (no start-up of a second interpreter)
        study, objective = _prepared(url, name, epochs, 0)
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=trials)
        times = [time.perf_counter() - t0]
        return _row(url, name, times, times[0], workers=workers, trials=trials, epochs=epochs)
    ctx = mp.get_context("spawn")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, name, trials, epochs, i, ready, go, results))
             for i in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=600):
            raise RuntimeError("a benchmark worker did not get ready in 10 min")
    t0 = time.perf_counter()
    go.set()
    times = sorted(results.get(timeout=1800)[1] for _ in procs)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark worker exited with {p.exitcode}")
    return _row(url, name, times, wall, workers=workers, trials=trials, epochs=epochs)


def _row(url: str, name: str, times: list[float], wall: float, *, workers: int, trials: int,
         epochs: int) -> dict[str, Any]:
    import optuna

    from bnn_tune.search._storage import make_storage

    study = optuna.load_study(study_name=name, storage=make_storage(url))
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states.count("COMPLETE") == workers * (trials + 1), states
    per_epoch = [1e3 * t / (trials * epochs) for t in times]
    return {"workers": workers, "trials_per_worker": trials, "epochs": epochs,
            "ms_per_epoch_median": statistics.median(per_epoch), "ms_per_epoch_max": max(per_epoch),
            "ms_per_trial_median": statistics.median(per_epoch) * epochs,
            "epochs_per_s_all_workers": workers * trials * epochs / wall, "wall_s": wall}


def _urls(kind: str, folder: Path, server: Any, tag: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder / f'{tag}.db'}"
    if kind == "journal":
        return f"journal://{folder / f'{tag}.log'}"
    return server.create_database(tag.replace("-", "_"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 worker, 2 trials of 2 epochs (CI smoke run, a few seconds)")
    p.add_argument("--out", default=str(HERE / "results" / "storage"), help="folder for storage.json")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1 4 8)")
    p.add_argument("--trials", type=int, default=None, help="timed trials per worker (default 10)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 10, digits' default)")
    p.add_argument("--storages", nargs="+", default=list(STORAGES), choices=STORAGES)
    args = p.parse_args(argv)
    workers = args.workers or ([1] if args.quick else [1, 4, 8])
    trials = args.trials or (2 if args.quick else 10)
    epochs = args.epochs or (2 if args.quick else 10)
    for name, value in (("--trials", trials), ("--epochs", epochs), *(("--workers", w) for w in workers)):
        if value < 1:
            print(f"error: {name} must be >= 1, but got {value}", file=sys.stderr)
            return 2
    server = None
    skipped: dict[str, str] = {}
    storages = list(args.storages)
    if "postgresql" in storages:
        tool = _pg_tool()
        reason = tool.unavailable_reason()
        if reason is None and importlib.util.find_spec("psycopg") is None:
            reason = "psycopg is not installed (pip install 'bnn-tune[postgres]')"
        if reason is not None:
            if os.environ.get("BNN_TUNE_REQUIRE_DISTRIBUTED") == "1":
                print(f"error: {reason}", file=sys.stderr)
                return 1
            print(f"postgresql skipped: {reason}", flush=True)
            skipped["postgresql"] = reason
            storages.remove("postgresql")
        else:
            server = tool.PostgresServer()
            server.start()
    folder = Path(tempfile.mkdtemp(prefix="bnn_storage_bench_"))
    rows = []
    try:
        for kind in storages:
            for w in workers:
                url = _urls(kind, folder, server, f"{kind}-{w}")
                row = {"storage": kind, **run_case(url, workers=w, trials=trials, epochs=epochs)}
                rows.append(row)
                print(f"{kind:10s} {w} workers: {row['ms_per_epoch_median']:7.2f} ms/epoch (median worker; max "
                      f"{row['ms_per_epoch_max']:.2f}), {row['ms_per_trial_median']:7.1f} ms/trial, "
                      f"{row['epochs_per_s_all_workers']:7.0f} epochs/s all workers", flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import optuna
    import sqlalchemy

    doc = {"benchmark": "bench_storage", "quick": args.quick, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "optuna": optuna.__version__,
                       "sqlalchemy": sqlalchemy.__version__, "load_avg_at_end": os.getloadavg()},
           "settings": {"workers": workers, "trials_per_worker": trials, "epochs": epochs}, "skipped": skipped,
           "rows": rows}
    (out / "storage.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out / 'storage.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
