"""The Ray Tune backend of ``bnn-tune search``: OptunaSearch + the ``--pruner`` strategy on a Ray cluster.

:func:`run_ray_search` takes the :class:`bnn_tune.search.settings.SearchSettings` both backends take. It

* starts an embedded local Ray runtime with the machine's CPUs (no dashboard, temp dir under the run directory)
  or joins a cluster (``settings.address``: ``auto`` or ``ray://host:10001``);
* samples configurations with ``OptunaSearch`` (TPE, define-by-run, seeded by ``settings.sampler_seeds()[0]``),
  at most ``settings.workers`` trials at a time, each with ``threads`` CPUs (the config key its trainer uses);
* stops trials with the strategy's Ray scheduler (:func:`make_scheduler`);
* feeds the live view (:class:`bnn_tune.search._rows.LiveView`) from a Tune callback -- Ray's own status
  tables are off (``verbose=0``);
* keeps Ray's results in ``<out>/ray_results/<name>`` (an absolute ``storage_path``), from which ``resume``
  continues an interrupted search (``Tuner.restore``).

Runs are quiet and contained: ``RAY_AUTH_MODE=disabled``, ``RAY_USAGE_STATS_ENABLED=0`` and Ray's temp
dir under the run directory (or a short dir in the system temp dir when the run directory's path is too
long for Ray's Unix sockets); nothing is written to the home directory. Ctrl-C: Ray saves the experiment's
state, and :class:`bnn_tune.search.optuna.SearchInterrupted` is raised so the command prints one line.

``settings.storage`` is the Optuna storage of the searcher's study (``sqlite:///searcher.db``, a
``postgresql://`` URL or a journal file ``*.log``), so TPE's history persists as with the Optuna backend.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, TypeGuard

from ..plugins._outcome import SUB_EPOCH_KEY, SUB_EPOCH_POINTS, is_sub_epoch_result, trial_status
from ._rows import LiveView, TrialRow
from .optuna import SearchInterrupted, _schedule_rule
from .settings import DEFAULT_EPOCHS, SearchSettings

__all__ = ["DEFAULT_EPOCHS", "make_scheduler", "row_of_result", "run_ray_search"]

_METRIC, _MODE = "val_acc", "max"
_MAX_SOCKET_BASE = 40  # Ray's socket paths (<temp>/session_<41 chars>/sockets/plasma_store) must fit 107 bytes

logger = logging.getLogger("bnn_tune.search")


def _quiet_env(out: Path) -> None:
    # nothing goes to the home directory: matplotlib's and the kernels' caches live in the run directory
    os.environ.setdefault("MPLCONFIGDIR", str(out / ".cache" / "matplotlib"))
    os.environ.setdefault("BNN_TUNE_CACHE", str(out / ".cache" / "bnn_tune"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # verbose=0 below silences the legacy output entirely
    # checkpoints every epoch with num_to_keep force frequent (cheap, local) experiment snapshots: expected
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _ray_temp_dir(out: Path) -> tuple[str, bool]:
    """Ray's temp dir: ``<out>/ray_tmp`` when short enough for Ray's sockets, else a fresh short dir."""
    wanted = out / "ray_tmp"
    if len(str(wanted)) <= _MAX_SOCKET_BASE:
        wanted.mkdir(parents=True, exist_ok=True)
        return str(wanted), False
    return tempfile.mkdtemp(prefix="bnnray_"), True


def _param_names(suggest: Any) -> list[str]:
    """Names the define-by-run space samples (one dry run on a throw-away in-memory study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    suggest(trial)
    return list(trial.params)


def _finite(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _row(trial_id: str, metrics: dict[str, Any], config: dict[str, Any], *, params: list[str], epochs: int,
         pruner: str, error: str | None, best: float | None, stop_reason: str | None, path: str | None) -> TrialRow:
    done = metrics.get("epoch")
    done = float(done) if _finite(done) else 0.0
    if is_sub_epoch_result(metrics):  # stopped inside the first epoch, after this many of its 8 points
        done += float(metrics[SUB_EPOCH_KEY]) / SUB_EPOCH_POINTS
    status = trial_status(failed=error is not None, stop_reason=stop_reason if done < epochs else None,
                          stopped=done < epochs, schedule_rule=_schedule_rule(pruner))
    val = metrics.get(_METRIC)
    return TrialRow(trial=trial_id, status=status, val_acc=float(val) if _finite(val) else None,
                    best_val_acc=best, epochs=int(done) if done.is_integer() else done,
                    params={k: config.get(k) for k in params}, config=dict(config),
                    note=error or (stop_reason if status != "completed" else "") or "",
                    log_flip_rate=metrics.get("log_flip_rate"), test_acc=metrics.get("test_acc"),
                    checkpoint=path)


def row_of_result(result: Any, *, params: list[str], epochs: int, pruner: str) -> TrialRow:
    """The :class:`TrialRow` of a Ray ``Result``."""
    from ..plugins.ray import read_stop_reason

    m = dict(result.metrics or {})
    df = result.metrics_dataframe
    vals = [float(v) for v in df[_METRIC] if _finite(v)] if df is not None and _METRIC in df else []
    error = None if result.error is None else str(result.error).strip().splitlines()[-1][:500]
    return _row(str(m.get("trial_id") or Path(str(result.path)).name), m, dict(result.config or {}),
                params=params, epochs=epochs, pruner=pruner, error=error, best=max(vals) if vals else None,
                stop_reason=read_stop_reason(result), path=str(result.path))


def run_ray_search(settings: SearchSettings, *, view: LiveView | None = None) -> tuple[list[TrialRow], dict[str, Any], Any]:
    """Run the search on Ray; returns its rows, the summary fields of this backend and the ``ResultGrid``.

    Raises:
        ValueError: an existing experiment in ``out`` without ``resume`` (or ``resume`` without one), or
            ``gpus_per_trial`` on a cluster without that many GPUs (``DeviceUnavailableError``).
        SearchInterrupted: Ctrl-C; Ray saved the experiment and ``resume`` continues it.
    """
    from .._imports import require

    ray = require("ray", feature="bnn-tune search --backend ray")
    require("optuna", feature="bnn-tune search --backend ray (OptunaSearch)")
    from ray import tune

    out = settings.out_dir
    ray_storage = str(out / "ray_results")
    experiment = f"{ray_storage}/{settings.study_name}"
    exists = tune.Tuner.can_restore(experiment) if Path(experiment).exists() else False
    if exists and not settings.resume:
        raise ValueError(f"{experiment} already holds the search {settings.study_name!r}; pass --resume to continue "
                         "it, or choose another --out / --study.")
    if settings.resume and not exists:  # nothing to resume: start it
        settings = settings.replace(resume=False)
    storage = None
    if settings.storage:
        from ._storage import make_storage

        storage = make_storage(settings.storage)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_env(out)
    started, temp_dir, temp_is_ours = False, None, False
    if not ray.is_initialized():
        if settings.address:
            ray.init(address=settings.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            temp_dir, temp_is_ours = _ray_temp_dir(out)
            ray.init(num_cpus=settings.cpus, include_dashboard=False, _temp_dir=temp_dir,
                     logging_level=logging.WARNING, log_to_driver=False)
        started = True
    try:
        return _search(ray, settings, storage, ray_storage, experiment, view)
    finally:
        if started:
            ray.shutdown()
            if temp_dir and (temp_is_ours or not os.environ.get("BNN_TUNE_KEEP_RAY_TMP")):
                shutil.rmtree(temp_dir, ignore_errors=True)


def make_scheduler(pruner: str, epochs: int) -> Any:
    """The trial scheduler of ``bnn-tune search --backend ray --pruner PRUNER`` on ``val_acc``: the strategy's
    :meth:`bnn_tune.plugins.strategies.Strategy.ray_scheduler` for ``epochs``-epoch trials (the same settings as
    the Optuna backend's :func:`bnn_tune.search.optuna.make_pruner`)."""
    from bnn_tune.plugins.strategies import get_strategy

    return get_strategy(pruner).ray_scheduler(epochs, _METRIC, _MODE)




def _search(ray: Any, settings: SearchSettings, storage: Any, ray_storage: str, experiment: str,
            view: LiveView | None) -> tuple[list[TrialRow], dict[str, Any], Any]:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from .._errors import DeviceUnavailableError
    from .._trainable import with_resources

    epochs = settings.epochs
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    if settings.gpus_per_trial and cluster_gpus < settings.gpus_per_trial:  # else every trial waits forever
        raise DeviceUnavailableError(
            f"--gpus-per-trial {settings.gpus_per_trial:g} asks for GPUs, but the Ray cluster has {cluster_gpus:g}; "
            "run on a GPU node (or --address a cluster with GPUs) or drop the flag.")
    suggest = settings.suggest
    params = _param_names(suggest)
    space: Any = suggest
    searcher = OptunaSearch(space=space, metric=_METRIC, mode=_MODE, seed=settings.sampler_seeds()[0],
                            storage=storage, study_name=settings.study_name if storage is not None else None,
                            points_to_evaluate=[dict(p) for p in settings.enqueue] or None)
    scheduler = make_scheduler(settings.pruner, epochs)
    from . import _ray_view

    _ray_view.LIVE.update(view=view, scheduler=scheduler, row=_row)
    callbacks: list[Any] = [_ray_view.ViewCallback(params, epochs, settings.pruner)]
    run_config = tune.RunConfig(
        name=settings.study_name,
        storage_path=ray_storage,
        # keeps the best 5 and the latest; a margin so that a killed driver's last experiment snapshot
        # still finds the checkpoints it points to (--resume)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=5, checkpoint_score_attribute=_METRIC,
                                                checkpoint_score_order=_MODE),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        callbacks=callbacks,
        verbose=0,
    )
    threads = settings.base_config.get("threads") or 1
    from .._trainable import trainable, trainable_sub_epoch
    from ..plugins.strategies import get_strategy

    # sub-epoch results only for a strategy whose flip-early rule judges them
    fn = with_resources(cpu=threads, gpu=settings.gpus_per_trial,
                        trainable_fn=trainable_sub_epoch if get_strategy(settings.pruner).judges_sub_epoch else trainable)
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.ERROR)  # Ray's "stop signal received" / "experiment interrupted" lines
    with warnings.catch_warnings():
        # OptunaSearch reports every result at its training_iteration; the trainable's sub-epoch results share
        # iteration 0, which Optuna's study (a copy of TPE's history, not the pruning) then says it ignores
        warnings.filterwarnings("ignore", message=r".*step=0. is already reported", category=UserWarning)
        return _fit(tune, settings, fn, searcher, scheduler, run_config, experiment, view, params, tune_logger, level)


def _fit(tune: Any, settings: SearchSettings, fn: Any, searcher: Any, scheduler: Any, run_config: Any,
         experiment: str, view: LiveView | None, params: list[str], tune_logger: Any,
         level: int) -> tuple[list[TrialRow], dict[str, Any], Any]:
    from . import _ray_view

    epochs = settings.epochs
    try:
        if settings.resume:
            if view is not None and view.enabled:
                view.console.print(f"resuming the interrupted search in {experiment}", soft_wrap=True)
            tuner = tune.Tuner.restore(experiment, trainable=fn, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                fn, param_space=dict(settings.base_config),
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=settings.n_trials,
                                            max_concurrent_trials=settings.workers, reuse_actors=True),
                run_config=run_config)
        results = tuner.fit()
    finally:
        tune_logger.setLevel(level)
        _ray_view.LIVE.update(view=None, scheduler=None)
    rows = [row_of_result(results[i], params=params, epochs=epochs, pruner=settings.pruner)
            for i in range(len(results))]
    if len(rows) < settings.n_trials or _unfinished(experiment):
        raise SearchInterrupted
    return rows, {"experiment_path": experiment, "storage": settings.storage}, results


def _unfinished(experiment: str) -> bool:
    """Whether the experiment state Ray saved holds unfinished trials: an interrupted run, which
    ``Tuner.restore`` continues. Read from the state file, not from the returned trials: after Ctrl-C Tune saves
    the state and then stops the running trials, which leaves those trial objects TERMINATED (so a trial stopped
    mid-run by the interrupt would read as finished)."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(experiment).trials
    except Exception:  # no readable state: nothing saved to resume from
        return False
    return any(str(getattr(t, "status", "TERMINATED")) not in ("TERMINATED", "ERROR") for t in trials)
