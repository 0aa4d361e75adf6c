"""``bnn-tune search --backend ray``: OptunaSearch + ASHA + the flip-rate rule on a Ray cluster.

:func:`run_ray_search` is what the ``search`` command calls for the Ray backend. It

* starts an embedded local Ray runtime with the machine's CPUs (``ray.init(num_cpus=os.cpu_count())``,
  no dashboard, temp dir under the run directory) or joins a cluster (``--address auto`` /
  ``ray://host:10001``);
* samples configurations with ``OptunaSearch(space=search_spaces.<optimizer>.suggest)`` (TPE,
  define-by-run), at most ``--workers`` trials at a time (``max_concurrent_trials``);
* stops bad trials with ASHA and collapsed ones with :class:`plugins.ray.FlipRateScheduler`;
* prints a live progress table (Ray's ``CLIReporter``) and a final ranking;
* writes everything under ``--out``: Ray results in ``<out>/ray_results/<name>`` (an absolute
  ``storage_path``), ``<out>/best_config.json`` (the best trial's flat config, usable as
  ``bnn-tune fit --config``), ``<out>/summary.json`` (the ranking), and the packed best model when the
  export module provides ``bnn_tune.export.export_best``.

Runs are quiet and contained: ``RAY_AUTH_MODE=disabled``, ``RAY_USAGE_STATS_ENABLED=0`` and Ray's temp
dir under the run directory (or a short dir in the system temp dir when the run directory's path is too
long for Ray's Unix sockets); nothing is written to the home directory. A search interrupted with
Ctrl-C (or a killed driver) continues with ``--resume`` from its trials' checkpoints.

``--storage`` is the Optuna storage of the searcher's study (``sqlite:///study.db``, a
``postgresql://`` URL or a journal file ``*.log``), so TPE's history persists as with the Optuna
backend; any other value (a directory, ``s3://...``) is taken as Ray's ``storage_path`` instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_EPOCHS", "run_ray_search"]

DEFAULT_EPOCHS = {"digits": 10, "synthetic": 5, "mnist1d": 30, "mnist": 10, "fashion_mnist": 10}
_METRIC, _MODE = "val_acc", "max"
_MAX_SOCKET_BASE = 40  # Ray's socket paths (<temp>/session_<41 chars>/sockets/plasma_store) must fit 107 bytes
_RDB_PREFIXES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")

logger = logging.getLogger("bnn_tune.search")


def _arg(args: Namespace, name: str, default: Any = None) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def _quiet_env() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the CLIReporter below instead of the new engine
    # checkpoints every epoch with num_to_keep force frequent (cheap, local) experiment snapshots: expected
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _ray_temp_dir(out: Path) -> tuple[str, bool]:
    """Ray's temp dir: ``<out>/ray_tmp`` when short enough for Ray's sockets, else a fresh short dir."""
    wanted = out / "ray_tmp"
    if len(str(wanted)) <= _MAX_SOCKET_BASE:
        wanted.mkdir(parents=True, exist_ok=True)
        return str(wanted), False
    return tempfile.mkdtemp(prefix="bnnray_"), True


def _optuna_storage(url: str) -> Any:
    import optuna

    if url.endswith((".log", ".journal")):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url))
    return optuna.storages.RDBStorage(url)


def _param_names(suggest: Any) -> list[str]:
    """Names the define-by-run space samples (one dry run on a throw-away in-memory study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    suggest(trial)
    return list(trial.params)


def _best_epoch_value(result: Any) -> float:
    df = result.metrics_dataframe
    if df is not None and _METRIC in df and len(df):
        vals = [float(v) for v in df[_METRIC] if v == v]
        if vals:
            return max(vals)
    v = (result.metrics or {}).get(_METRIC)
    return float(v) if isinstance(v, (int, float)) else math.nan


def _status(result: Any, epochs: int, stop_reason: str | None) -> str:
    if result.error is not None:
        return "error"
    if stop_reason:
        return "collapsed"
    done = int((result.metrics or {}).get("epoch", 0) or 0)
    return "completed" if done >= epochs else f"stopped@{done}"


def _ranking(results: Any, epochs: int, params: list[str]) -> list[dict[str, Any]]:
    from plugins.ray import read_stop_reason

    rows = []
    for r in results:
        m = r.metrics or {}
        reason = read_stop_reason(r)
        error = None if r.error is None else str(r.error).strip().splitlines()[-1][:300]
        rows.append({
            "trial_id": m.get("trial_id") or Path(str(r.path)).name,
            "status": _status(r, epochs, reason),
            "best_val_acc": _best_epoch_value(r),
            "val_acc": m.get("val_acc"),
            "epochs": m.get("epoch"),
            "log_flip_rate": m.get("log_flip_rate"),
            "params": {k: (r.config or {}).get(k) for k in params},
            "config": dict(r.config or {}),
            "stop_reason": reason,
            "error": error,
            "path": str(r.path),
        })
    rows.sort(key=lambda d: (-(d["best_val_acc"]) if d["best_val_acc"] == d["best_val_acc"] else math.inf))
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e3) else f"{v:.4g}"
    return "" if v is None else str(v)


def _print_ranking(console: Any, rows: list[dict[str, Any]], params: list[str], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("#", "trial", "status", "epochs", "best val_acc", "log_flip_rate", *params, "note"):
        table.add_column(col, justify="left" if col in ("trial", "status", "note") else "right")
    for i, row in enumerate(rows, 1):
        note = row["stop_reason"] or row["error"] or ""
        table.add_row(str(i), row["trial_id"], row["status"], _fmt(row["epochs"]), _fmt(row["best_val_acc"]),
                      _fmt(row["log_flip_rate"]), *(_fmt(row["params"][k]) for k in params),
                      note[:80] + ("..." if len(note) > 80 else ""))
    console.print(table)


def run_ray_search(args: Namespace) -> int:
    """Run a Ray Tune search from parsed ``bnn-tune search`` arguments; returns the exit code.

    Args:
        args: ``optimizer`` (registry/search-space name, default ``bop``), ``dataset`` (``digits``),
            ``samples`` (trials, 16), ``epochs`` (per trial, per-dataset default), ``out`` (run
            directory, ``runs/<optimizer>-<dataset>``), ``address`` (None = embedded local Ray),
            ``storage`` (Optuna storage URL of the searcher's study, or Ray storage path), ``workers``
            (concurrent trials, default = CPUs), ``study`` (study/experiment name), ``param`` (list of
            ``KEY=VALUE`` fixed config entries), optional ``seed`` (sampler seed), ``resume``
            (continue an interrupted search in ``out``), ``gpus_per_trial``.

    Returns:
        0 when at least one trial finished, 1 when every trial failed, 2 on invalid arguments.

    Example:
        >>> from argparse import Namespace  # doctest: +SKIP
        >>> run_ray_search(Namespace(optimizer="bop", dataset="digits", samples=16, out="runs/demo"))  # doctest: +SKIP
    """
    from rich.console import Console

    from ._imports import require
    from .cli import parse_assignments
    from .config import ConfigError, TrialConfig

    console = Console(width=None if sys.stdout.isatty() else 160)
    ray = require("ray", feature="bnn-tune search --backend ray")
    require("optuna", feature="bnn-tune search --backend ray (OptunaSearch)")
    import search_spaces

    optimizer = _arg(args, "optimizer", "bop")
    dataset = _arg(args, "dataset", "digits")
    samples = int(_arg(args, "samples", 16))
    epochs = int(_arg(args, "epochs", DEFAULT_EPOCHS.get(dataset, 20)))
    name = _arg(args, "study", f"{optimizer}-{dataset}")
    out = Path(_arg(args, "out", f"runs/{name}")).expanduser().resolve()
    seed = _arg(args, "seed", 0)
    gpus = float(_arg(args, "gpus_per_trial", 0))
    if samples < 1:
        console.print(f"[red]error:[/red] `samples` must be >= 1, but got samples={samples}.")
        return 2
    try:
        space = search_spaces.get(optimizer)
        fixed: dict[str, Any] = {"dataset": dataset, "epochs": epochs, **parse_assignments(_arg(args, "param", []))}
        fixed.pop("optimizer", None)
        # validate the fixed part now (with the space's defaults), not inside 16 failing trials
        TrialConfig.from_dict({**space.suggest(_DefaultTrial()), **fixed})
    except (ValueError, ConfigError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    epochs = int(fixed["epochs"])
    out.mkdir(parents=True, exist_ok=True)
    storage = _arg(args, "storage")
    optuna_storage = None
    ray_storage = out / "ray_results"
    if storage:
        if str(storage).startswith(_RDB_PREFIXES) or str(storage).endswith((".log", ".journal")):
            optuna_storage = _optuna_storage(str(storage))
        elif "://" in str(storage):
            ray_storage = str(storage)  # type: ignore[assignment]
        else:
            ray_storage = Path(storage).expanduser().resolve()

    _quiet_env()
    address = _arg(args, "address")
    started, temp_dir, temp_is_ours = False, None, False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            temp_dir, temp_is_ours = _ray_temp_dir(out)
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=temp_dir,
                     logging_level=logging.WARNING, log_to_driver=False)
        started = True
    try:
        return _search(ray, args, console, space, optimizer, dataset, samples, epochs, name, out, fixed, seed,
                       gpus, optuna_storage, ray_storage)
    finally:
        if started:
            ray.shutdown()
            if temp_dir and (temp_is_ours or not os.environ.get("BNN_TUNE_KEEP_RAY_TMP")):
                shutil.rmtree(temp_dir, ignore_errors=True)


class _DefaultTrial:
    """A stand-in Optuna trial returning each range's middle (validates fixed keys without sampling)."""

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return math.sqrt(low * high) if log else (low + high) / 2.0

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return int(low)

    def suggest_categorical(self, name, choices):
        return choices[0]


def _search(ray, args, console, space, optimizer, dataset, samples, epochs, name, out, fixed, seed, gpus,
            optuna_storage, ray_storage) -> int:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from plugins.ray import FlipRateScheduler

    from .trainable import trainable, with_resources

    cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    workers = int(_arg(args, "workers", max(1, int(cpus))))
    params = _param_names(space.suggest)
    searcher = OptunaSearch(space=space.suggest, metric=_METRIC, mode=_MODE, seed=seed,
                            storage=optuna_storage, study_name=name if optuna_storage is not None else None)
    scheduler = FlipRateScheduler(
        ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=max(1, epochs // 4),
                      reduction_factor=2),
        metric=_METRIC, mode=_MODE, n_warmup_steps=max(2, epochs // 5), patience=2,
    )
    reporter = tune.CLIReporter(
        metric_columns={"epoch": "epoch", _METRIC: _METRIC, "log_flip_rate": "log_flip_rate"},
        parameter_columns=params, max_report_frequency=5, sort_by_metric=True, metric=_METRIC, mode=_MODE,
        max_progress_rows=max(20, samples), print_intermediate_tables=True,
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=str(ray_storage),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=_METRIC,
                                                checkpoint_score_order=_MODE),
        failure_config=tune.FailureConfig(max_failures=int(_arg(args, "max_failures", 1))),
        progress_reporter=reporter,
        verbose=1,
    )
    fn = with_resources(cpu=1, gpu=gpus) if gpus else trainable
    experiment = f"{ray_storage}/{name}" if "://" in str(ray_storage) else str(Path(ray_storage) / name)
    console.print(
        f"bnn-tune search (ray): optimizer={optimizer} dataset={dataset} samples={samples} epochs={epochs} "
        f"workers={workers} cluster CPUs={cpus:g}\n  space: search_spaces.{space.__name__.split('.')[-1]}.suggest "
        f"{params}; fixed: {fixed}\n  results: {experiment}"
    )
    t0 = time.perf_counter()
    if _arg(args, "resume", False) and tune.Tuner.can_restore(experiment):
        console.print(f"resuming the interrupted search in {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable=fn, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            fn,
            param_space=fixed,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=samples,
                                        max_concurrent_trials=workers, reuse_actors=True),
            run_config=run_config,
        )
    results = tuner.fit()
    elapsed = time.perf_counter() - t0

    rows = _ranking(results, epochs, params)
    _print_ranking(console, rows, params,
                   f"{optimizer} on {dataset}: {len(rows)} trials in {elapsed:.0f} s (ranked by best {_METRIC})")
    ok = [r for r in rows if r["status"] != "error" and r["best_val_acc"] == r["best_val_acc"]]
    summary = {"optimizer": optimizer, "dataset": dataset, "samples": samples, "epochs": epochs,
               "metric": _METRIC, "mode": _MODE, "elapsed_s": elapsed, "experiment_path": experiment,
               "trials": rows}
    if not ok:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        console.print("[red]every trial failed[/red]; see the errors above and in " + experiment)
        return 1
    best_row = ok[0]
    best_config = _flat_config(best_row["config"])
    (out / "best_config.json").write_text(json.dumps(best_config, indent=2, sort_keys=True, default=str) + "\n")
    summary["best"] = {k: best_row[k] for k in ("trial_id", "best_val_acc", "path")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    console.print(f"best trial {best_row['trial_id']}: {_METRIC}={best_row['best_val_acc']:.4f}; "
                  f"config -> {out / 'best_config.json'}")
    _maybe_export(console, results, out)
    return 0


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flat config of a trial as ``bnn-tune fit --config`` takes it (validated, JSON types)."""
    from .config import TrialConfig

    flat = TrialConfig.from_dict(config).to_dict()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}


def _maybe_export(console: Any, results: Any, out: Path) -> None:
    try:
        from .export import export_best  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        console.print("export skipped: bnn_tune.export.export_best is not available in this installation")
        return
    try:
        written = export_best(results, out / "export")
    except Exception as exc:  # the search itself succeeded; report and go on
        console.print(f"[yellow]export failed:[/yellow] {exc}")
        return
    console.print(f"exported the best model -> {written}")
