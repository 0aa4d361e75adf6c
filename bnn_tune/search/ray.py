"""``bnn-tune search --backend ray``: OptunaSearch + ASHA + the flip-rate rule on a Ray cluster.

:func:`run_ray_search` is what the ``search`` command calls for the Ray backend. It

* starts an embedded local Ray runtime with the machine's CPUs (``ray.init(num_cpus=os.cpu_count())``,
  no dashboard, temp dir under the run directory) or joins a cluster (``--address auto`` /
  ``ray://host:10001``);
* samples configurations with ``OptunaSearch(space=search_spaces.<optimizer>.suggest)`` (TPE,
  define-by-run), at most ``--workers`` trials at a time (``max_concurrent_trials``);
* stops trials with the ``--pruner`` strategy (:func:`make_scheduler`; default ``flip+hyperband``: asynchronous
  Hyperband with the flip-rate rules of :class:`bnn_tune.plugins.flip_sh_ray.FlipSHScheduler`);
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

from ._rule import DEFAULT_PRUNER, check_pruner

__all__ = ["DEFAULT_EPOCHS", "run_ray_search"]

DEFAULT_EPOCHS = {"digits": 10, "synthetic": 5, "mnist1d": 30, "mnist": 10, "fashion_mnist": 10}
_METRIC, _MODE = "val_acc", "max"
_MAX_SOCKET_BASE = 40  # Ray's socket paths (<temp>/session_<41 chars>/sockets/plasma_store) must fit 107 bytes
_RDB_PREFIXES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")

logger = logging.getLogger("bnn_tune.search")


def _arg(args: Namespace, name: str, default: Any = None) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def _quiet_env(out: Path) -> None:
    # nothing goes to the home directory: matplotlib's and the kernels' caches live in the run directory
    os.environ.setdefault("MPLCONFIGDIR", str(out / ".cache" / "matplotlib"))
    os.environ.setdefault("BNN_TUNE_CACHE", str(out / ".cache" / "bnn_tune"))
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
    done = int((result.metrics or {}).get("epoch", 0) or 0)
    if done >= epochs:  # a stop decided on the last epoch changes nothing: the trial ran to the end
        return "completed"
    return "collapsed" if stop_reason else f"stopped@{done}"


def _ranking(results: Any, epochs: int, params: list[str]) -> list[dict[str, Any]]:
    from bnn_tune.plugins.ray import read_stop_reason

    rows: list[dict[str, Any]] = []
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
    def order(row: dict[str, Any]) -> float:
        value = float(row["best_val_acc"])
        return -value if math.isfinite(value) else math.inf

    rows.sort(key=order)
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
        note = (row["stop_reason"] if row["status"] == "collapsed" else None) or row["error"] or ""
        table.add_row(str(i), row["trial_id"], row["status"], _fmt(row["epochs"]), _fmt(row["best_val_acc"]),
                      _fmt(row["log_flip_rate"]), *(_fmt(row["params"][k]) for k in params),
                      note[:80] + ("..." if len(note) > 80 else ""))
    console.print(table)


def run_ray_search(args: Namespace) -> int:
    """Run a Ray Tune search from parsed ``bnn-tune search`` arguments; returns the exit code.

    Args:
        args: the ``search`` command's namespace. Read here: ``optimizer`` (default ``bop``), ``space``
            and ``naive`` (which space function), the config options of ``bnn-tune fit`` (``dataset``,
            ``model``, ``epochs``, ``batch_size``, ``device``, ``config`` JSON file, ``param`` list of
            ``KEY=VALUE``), ``samples`` (trials, 16), ``out`` (run directory, ``runs/<study>``),
            ``study_name`` (study/experiment name), ``storage`` (Optuna storage URL of the searcher's
            study; default in-memory), ``workers`` (concurrent trials; default all CPUs of the
            cluster), ``seed`` (sampler seed), ``pruner`` (a name of
            :data:`bnn_tune.search._rule.PRUNERS`, default ``flip+hyperband``: see :func:`make_scheduler`), ``top`` (ranking rows), and
            when present ``address`` (None: embedded local Ray; ``auto`` or ``ray://host:10001``),
            ``resume`` (continue the interrupted search in ``out``), ``gpus_per_trial``,
            ``max_failures`` (retries of a crashed trial from its checkpoint, default 1).

    Returns:
        0 when at least one trial finished, 1 when every trial failed.

    Raises:
        ValueError: an invalid argument (``ConfigError`` for the trial config), or ``--gpus-per-trial``
            on a cluster without that many GPUs (``DeviceUnavailableError``); ``bnn-tune search`` prints
            it as one ``error: ...`` line on stderr and exits with 2.

    Example:
        >>> from argparse import Namespace  # doctest: +SKIP
        >>> run_ray_search(Namespace(optimizer="bop", dataset="digits", samples=16, out="runs/demo"))  # doctest: +SKIP
    """
    from rich.console import Console

    from .._imports import require
    from ..config import TrialConfig

    console = Console(width=None if sys.stdout.isatty() else 160)
    ray = require("ray", feature="bnn-tune search --backend ray")
    require("optuna", feature="bnn-tune search --backend ray (OptunaSearch)")
    from bnn_tune import search_spaces

    # a bad argument raises ValueError/ConfigError here, before Ray starts: `bnn-tune` prints it as one
    # `error: ...` line on stderr (exit 2), like every other command
    fixed = _fixed_config(args)
    optimizer = fixed.pop("optimizer", None) or "bop"
    space_name = _arg(args, "space", optimizer)
    space = search_spaces.get(space_name)
    if space.NAME != optimizer and not _arg(args, "naive", False) and _arg(args, "optimizer") is not None:
        raise ValueError(f"--optimizer {optimizer!r} does not match --space {space_name!r} "
                         f"(which searches optimizer {space.NAME!r}).")
    suggest = space.naive_suggest if _arg(args, "naive", False) else space.suggest
    fixed.setdefault("dataset", "digits")
    fixed.setdefault("epochs", DEFAULT_EPOCHS.get(fixed["dataset"], 20))
    # validate the fixed part now (with a mid-range sample of the space), not inside every trial
    TrialConfig.from_dict({**suggest(_DefaultTrial()), **fixed})
    samples = int(_arg(args, "samples", 16))
    if samples < 1:
        raise ValueError(f"`samples` must be >= 1, but got samples={samples}.")
    workers = _arg(args, "workers")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"`workers` must be >= 1, but got workers={workers}.")
    gpus = float(_arg(args, "gpus_per_trial", 0))
    if not gpus >= 0:
        raise ValueError(f"`gpus_per_trial` must be >= 0, but got gpus_per_trial={gpus}.")
    max_failures = int(_arg(args, "max_failures", 1))
    if max_failures < -1:
        raise ValueError(f"`max_failures` must be >= 0 (or -1: retry forever), but got max_failures={max_failures}.")
    pruner = check_pruner(_arg(args, "pruner", DEFAULT_PRUNER))
    given_out = _arg(args, "out")
    name = _arg(args, "study_name", _arg(args, "study", Path(given_out).name if given_out
                                         else f"{space_name}-{fixed['dataset']}"))
    out = Path(given_out or f"runs/{name}").expanduser().resolve()
    storage = _searcher_storage(_arg(args, "storage"))
    out.mkdir(parents=True, exist_ok=True)
    settings = {"optimizer": optimizer, "space": space_name, "suggest": suggest, "fixed": fixed, "samples": samples,
                "workers": None if workers is None else int(workers), "pruner": pruner, "name": name, "out": out,
                "storage": storage, "seed": _arg(args, "seed", 0), "top": int(_arg(args, "top", 20)),
                "resume": bool(_arg(args, "resume", False)), "gpus": gpus, "max_failures": max_failures,
                "ray_storage": _arg(args, "ray_storage", str(out / "ray_results"))}

    _quiet_env(out)
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
        return _search(ray, console, settings)
    finally:
        if started:
            ray.shutdown()
            if temp_dir and (temp_is_ours or not os.environ.get("BNN_TUNE_KEEP_RAY_TMP")):
                shutil.rmtree(temp_dir, ignore_errors=True)


def _fixed_config(args: Namespace) -> dict[str, Any]:
    """The config entries every trial shares (``bnn-tune fit`` options, ``--config``, ``-p KEY=VALUE``)."""
    from ..cli import config_from_args, parse_assignments

    if all(hasattr(args, k) for k in ("config", "param")):
        return config_from_args(args)
    fixed = {k: getattr(args, k) for k in ("dataset", "model", "optimizer", "epochs", "batch_size", "seed", "device")
             if getattr(args, k, None) is not None}
    fixed.update(parse_assignments(getattr(args, "param", None) or []))
    return fixed


def _searcher_storage(url: Any) -> Any:
    """The Optuna storage of OptunaSearch's study (None: in memory); same URLs as the Optuna backend."""
    if url is None:
        return None
    try:
        from .optuna import make_storage
    except ImportError:
        if url.startswith(_RDB_PREFIXES) or url.endswith((".log", ".journal")):
            return _optuna_storage(url)
        raise ValueError(f"`storage` must be an Optuna storage URL, but got storage={url!r}.") from None
    return make_storage(url)


class _DefaultTrial:
    """A stand-in Optuna trial returning each range's middle (validates fixed keys without sampling)."""

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return math.sqrt(low * high) if log else (low + high) / 2.0

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return int(low)

    def suggest_categorical(self, name, choices):
        return choices[0]


def make_scheduler(pruner: str, epochs: int) -> Any:
    """The trial scheduler of ``bnn-tune search --backend ray --pruner PRUNER`` on ``val_acc`` (the names of
    :data:`bnn_tune.search._rule.PRUNERS`, the same strategies as the Optuna backend's
    :func:`bnn_tune.search.optuna.make_pruner`): ``flip+hyperband`` (default) is
    :class:`bnn_tune.plugins.flip_sh_ray.FlipSHScheduler` with :data:`bnn_tune.plugins._flip_sh.RECOMMENDED` around
    ``AsyncHyperBandScheduler`` (grace 1 epoch, reduction factor 3, the brackets Optuna's ``HyperbandPruner``
    derives: :func:`bnn_tune.search._rule.hyperband_brackets`); ``flip+asha`` the same around one bracket
    (``ASHAScheduler``); ``hyperband`` / ``asha`` those alone; ``flip`` the collapse rule
    (:class:`bnn_tune.plugins.ray.FlipRateScheduler`, :func:`bnn_tune.search._rule.flip_rule_settings`) over FIFO;
    ``median`` Ray's ``MedianStoppingRule`` (5 trials, 2 epochs of grace); ``flip+median`` the collapse rule
    over it; ``none`` FIFO."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

    from ._rule import MEDIAN_SETTINGS, SH_SETTINGS, flip_rule_settings, hyperband_brackets

    check_pruner(pruner)
    if pruner == "none":
        return FIFOScheduler()
    if pruner in ("flip+hyperband", "flip+asha", "hyperband", "asha"):
        sh = AsyncHyperBandScheduler(time_attr="training_iteration", metric=_METRIC, mode=_MODE, max_t=epochs,
                                     grace_period=SH_SETTINGS["min_resource"],
                                     reduction_factor=SH_SETTINGS["reduction_factor"],
                                     brackets=hyperband_brackets(epochs) if pruner.endswith("hyperband") else 1)
        if not pruner.startswith("flip+"):
            return sh
        from bnn_tune.plugins._flip_sh import RECOMMENDED
        from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler

        return FlipSHScheduler(sh, max_t=epochs, **RECOMMENDED)  # type: ignore[arg-type]
    from bnn_tune.plugins.ray import FlipRateScheduler

    inner: Any = FIFOScheduler()
    if pruner in ("median", "flip+median"):
        inner = MedianStoppingRule(time_attr="training_iteration", metric=_METRIC, mode=_MODE,
                                   grace_period=MEDIAN_SETTINGS["n_warmup_steps"],
                                   min_samples_required=MEDIAN_SETTINGS["n_startup_trials"])
        if pruner == "median":
            return inner
    # the metric goes on the wrapper: the driver's TuneConfig sets none, and FIFO has none to lend it
    return FlipRateScheduler(inner, _METRIC, _MODE, **flip_rule_settings(epochs))


def _search(ray: Any, console: Any, st: dict[str, Any]) -> int:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from .._errors import DeviceUnavailableError
    from .._trainable import trainable, with_resources

    fixed, epochs, out, name = st["fixed"], int(st["fixed"]["epochs"]), st["out"], st["name"]
    cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    if st["gpus"] and cluster_gpus < st["gpus"]:  # else every trial would wait forever for a GPU
        raise DeviceUnavailableError(
            f"--gpus-per-trial {st['gpus']:g} asks for GPUs, but the Ray cluster has {cluster_gpus:g}; run on a "
            "GPU node (or --address a cluster with GPUs) or drop the flag.")
    workers = st["workers"] or max(1, int(cpus))
    params = _param_names(st["suggest"])
    searcher = OptunaSearch(space=st["suggest"], metric=_METRIC, mode=_MODE, seed=st["seed"],
                            storage=st["storage"], study_name=name if st["storage"] is not None else None)
    scheduler = make_scheduler(st["pruner"], epochs)
    reporter = tune.CLIReporter(
        metric_columns={"epoch": "epoch", _METRIC: _METRIC, "log_flip_rate": "log_flip_rate"},
        parameter_columns=params, max_report_frequency=5, sort_by_metric=True, metric=_METRIC, mode=_MODE,
        max_progress_rows=max(20, st["samples"]), print_intermediate_tables=True,
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=st["ray_storage"],
        # keeps the best 5 and the latest; a margin so that a killed driver's last experiment snapshot
        # still finds the checkpoints it points to (--resume)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=5, checkpoint_score_attribute=_METRIC,
                                                checkpoint_score_order=_MODE),
        failure_config=tune.FailureConfig(max_failures=st["max_failures"]),
        progress_reporter=reporter,
        verbose=1,
    )
    fn = with_resources(cpu=1, gpu=st["gpus"]) if st["gpus"] else trainable
    experiment = f"{st['ray_storage'].rstrip('/')}/{name}"
    console.print(
        f"bnn-tune search (ray): space={st['space']} trials={st['samples']} epochs={epochs} workers={workers} "
        f"cluster CPUs={cpus:g} pruner={st['pruner']}\n  sampled: {params}; fixed: {fixed}\n  results: {experiment}"
    )
    t0 = time.perf_counter()
    if st["resume"] and tune.Tuner.can_restore(experiment):
        console.print(f"resuming the interrupted search in {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable=fn, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            fn,
            param_space={**fixed, "optimizer": st["optimizer"]} if "optimizer" not in params else fixed,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=st["samples"],
                                        max_concurrent_trials=workers, reuse_actors=True),
            run_config=run_config,
        )
    results = tuner.fit()
    elapsed = time.perf_counter() - t0

    rows = _ranking(results, epochs, params)
    _print_ranking(console, rows[: st["top"]], params,
                   f"{st['space']} on {fixed['dataset']}: {len(rows)} trials in {elapsed:.0f} s "
                   f"(ranked by best {_METRIC}; {sum(r['status'] == 'collapsed' for r in rows)} stopped for a "
                   f"collapsed flip rate)")
    ok = [r for r in rows if r["status"] != "error" and r["best_val_acc"] == r["best_val_acc"]]
    summary = {"space": st["space"], "fixed": fixed, "samples": st["samples"], "epochs": epochs,
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
                  f"config -> {out / 'best_config.json'} (bnn-tune fit --config {out / 'best_config.json'})")
    _maybe_export(console, results, out)
    return 0


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flat config of a trial as ``bnn-tune fit --config`` takes it (validated, JSON types)."""
    from ..config import TrialConfig

    flat = TrialConfig.from_dict(config).to_dict()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}


def _maybe_export(console: Any, results: Any, out: Path) -> None:
    try:
        from ..export import export_best  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        console.print("export skipped: bnn_tune.export.export_best is not available in this installation")
        return
    try:
        written = export_best(results, out / "export")
    except Exception as exc:  # the search itself succeeded; report and go on
        console.print(f"[yellow]export failed:[/yellow] {exc}")
        return
    if isinstance(written, dict):
        agreement = written.get("agreement")
        console.print(
            f"exported the best model -> {out / 'export'}: {written.get('model_file')} + {written.get('config')}"
            + (f"; test accuracy PyTorch {written['torch_test_acc']:.4f} / packed {written['packed_test_acc']:.4f}"
               if isinstance(written.get("torch_test_acc"), float) and isinstance(written.get("packed_test_acc"), float)
               else "")
            + (f", agreement {agreement:.2%}" if isinstance(agreement, float) else ""))
    else:
        console.print(f"exported the best model -> {written}")
