"""Run an Optuna study of BNN trainings: storage from a URL, N worker processes on one storage.

Storage URLs (``storage=``):

* ``None`` or ``":memory:"``: in-memory (one process only);
* an RDB URL (``sqlite:///runs/NAME/study.db``, ``postgresql://...``, ``mysql://...``): Optuna's
  :class:`~optuna.storages.RDBStorage` (SQLite gets a 60 s lock timeout so several processes can share it);
* ``journal:///abs/path/study.log`` (``journal://relative/path.log`` is relative), or any path ending in
  ``.log`` / ``.journal``: :class:`~optuna.storages.JournalStorage` with a file backend (append-only,
  safe for several processes on one machine or on NFS).

With ``workers > 1`` the study is created once, then ``workers`` processes (multiprocessing, spawn) each
load it and run ``study.optimize`` on their share of ``n_trials``; Optuna's storage hands every trial number
to exactly one process, so no trial is lost or duplicated. The storage is readable by optuna-dashboard
(``optuna-dashboard sqlite:///runs/NAME/study.db``).

Killed workers: with an RDB storage every running trial writes a heartbeat every ``heartbeat_interval``
seconds; a trial whose heartbeat is older than ``grace_period`` (its worker was killed, its machine lost)
is marked FAIL by the next trial any worker starts, and Optuna's ``RetryHeartbeatStaleTrialCallback`` (the
``RetryFailedTrialCallback`` of earlier versions) enqueues it
again with the same parameters (``max_retry`` times). When the workers are done, the driver fails the stale
trials that are left and runs their retries itself, so no trial stays RUNNING forever. (Optuna's
``JournalStorage`` has no heartbeat: a journal study keeps a killed worker's trial RUNNING.)
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._imports import require
from ._rule import DEFAULT_PRUNER, MEDIAN_SETTINGS, SH_SETTINGS, check_pruner, flip_rule_settings
from ._storage import make_storage

__all__ = ["SearchSettings", "make_pruner", "make_storage", "run_optuna_search"]

_logger = logging.getLogger("bnn_tune.search")


def make_pruner(kind: str = DEFAULT_PRUNER, *, epochs: int | None = None, **flip_kwargs: Any) -> Any:
    """The Optuna pruner called ``kind`` (one of :data:`bnn_tune.search._rule.PRUNERS`, described there).

    ``flip+hyperband`` (default) / ``flip+asha``: :class:`bnn_tune.plugins.flip_sh.FlipSHPruner` around ``HyperbandPruner`` /
    ``SuccessiveHalvingPruner`` (min resource 1, reduction factor 3) with :data:`bnn_tune.plugins._flip_sh.RECOMMENDED`;
    ``hyperband`` / ``asha``: those alone; ``flip``:
    :class:`bnn_tune.plugins.optuna.FlipRatePruner`; ``flip+median``: flip rule OR median; ``median``: Optuna's
    MedianPruner; ``none``: no pruning. The collapse rule of ``flip``/``flip+median`` takes
    :func:`bnn_tune.search._rule.flip_rule_settings` for ``epochs`` (the same as the Ray backend's
    :class:`bnn_tune.plugins.ray.FlipRateScheduler`); ``flip_kwargs`` override them (or, for ``flip+asha``, the
    :class:`bnn_tune.plugins._flip_sh.FlipSHRule` settings of ``flip+hyperband`` / ``flip+asha``).
    """
    optuna = require("optuna", feature="bnn-tune search")
    check_pruner(kind)
    if kind in ("flip+hyperband", "flip+asha", "hyperband", "asha"):
        inner = (optuna.pruners.HyperbandPruner(**SH_SETTINGS) if kind.endswith("hyperband")
                 else optuna.pruners.SuccessiveHalvingPruner(**SH_SETTINGS))
        if not kind.startswith("flip+"):
            return inner
        from bnn_tune.plugins._flip_sh import RECOMMENDED
        from bnn_tune.plugins.flip_sh import FlipSHPruner

        return FlipSHPruner(inner, **{**RECOMMENDED, **flip_kwargs})  # type: ignore[arg-type]
    if kind == "median":
        return optuna.pruners.MedianPruner(**MEDIAN_SETTINGS)
    if kind == "none":
        return optuna.pruners.NopPruner()
    from bnn_tune.plugins.optuna import FlipRatePruner

    # the objective is validation accuracy: runs within 2 points of the best are contenders (noise of a
    # few hundred validation samples), so converged runs near the top finish instead of being pruned
    flip_kwargs = {**flip_rule_settings(epochs if epochs is not None else 10), **flip_kwargs}
    if kind == "flip":
        return FlipRatePruner(**flip_kwargs)
    return FlipRatePruner(optuna.pruners.MedianPruner(**MEDIAN_SETTINGS), combine="or", **flip_kwargs)


@dataclass
class SearchSettings:
    """Everything a worker process needs (plain data, picklable under spawn)."""

    space: Any
    base_config: dict[str, Any]
    n_trials: int
    storage: str | None = None
    study_name: str | None = None
    workers: int = 1
    pruner: str = DEFAULT_PRUNER
    seed: int | None = None
    artifact_dir: str | None = None
    naive: bool = False
    enqueue: Sequence[Mapping[str, Any]] = field(default_factory=list)
    verbose: bool = True
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2


def _storage(settings: SearchSettings) -> Any:
    return make_storage(settings.storage, heartbeat_interval=settings.heartbeat_interval,
                        grace_period=settings.grace_period, max_retry=settings.max_retry)


def _report_trial(study: Any, trial: Any) -> None:
    from ..objective import FAIL_REASON_ATTR, PRUNE_REASON_ATTR

    state = trial.state.name
    value = "" if trial.value is None else f" val_acc={trial.value:.4f}"
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    why = trial.user_attrs.get(PRUNE_REASON_ATTR) if state == "PRUNED" else trial.user_attrs.get(FAIL_REASON_ATTR)
    steps = "" if trial.last_step is None else f" epochs={trial.last_step}"
    print(f"[trial {trial.number:>3}] {state:<8}{value}{steps} {params}" + (f" -- {why}" if why else ""),
          flush=True)


def _worker(settings: SearchSettings, n_trials: int, index: int) -> None:
    optuna = require("optuna", feature="bnn-tune search")
    import torch

    from ..objective import objective

    threads = max(1, (os.cpu_count() or 1) // max(1, settings.workers))
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = None if settings.seed is None else settings.seed + index
    study = optuna.load_study(study_name=settings.study_name, storage=_storage(settings),
                              sampler=optuna.samplers.TPESampler(seed=seed),
                              pruner=make_pruner(settings.pruner, epochs=_epochs(settings)))
    obj = objective(settings.space, base_config=settings.base_config, artifact_dir=settings.artifact_dir,
                    naive=settings.naive)
    study.optimize(obj, n_trials=n_trials, callbacks=[_report_trial] if settings.verbose else None)


def _epochs(settings: SearchSettings) -> int:
    from ..config import TrialConfig

    return int(settings.base_config.get("epochs", TrialConfig.epochs))


def _shares(n: int, workers: int) -> list[int]:
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)]


def run_optuna_search(settings: SearchSettings, *, on_trial: Callable[[Any, Any], None] | None = None) -> Any:
    """Create (or resume) the study and run ``settings.n_trials`` trials on ``settings.workers`` processes.

    Args:
        settings: what to search and where to store it.
        on_trial: extra ``callback(study, frozen_trial)`` (single-process runs only).

    Returns:
        The ``optuna.Study`` (reloaded from the storage after multi-process runs).

    Raises:
        ValueError: ``workers > 1`` with in-memory storage, or bad counts.
    """
    optuna = require("optuna", feature="bnn-tune search")
    if isinstance(settings.n_trials, bool) or not isinstance(settings.n_trials, int) or settings.n_trials < 1:
        raise ValueError(f"`n_trials` must be an integer >= 1, but got n_trials={settings.n_trials!r}.")
    if isinstance(settings.workers, bool) or not isinstance(settings.workers, int) or settings.workers < 1:
        raise ValueError(f"`workers` must be an integer >= 1, but got workers={settings.workers!r}.")
    storage = _storage(settings)
    if settings.workers > 1 and storage is None:
        raise ValueError("`workers` > 1 needs a shared storage (an RDB URL or a journal file), but got the "
                         "in-memory storage; pass storage='sqlite:///path/study.db' or 'journal:///path/study.log'.")
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=make_pruner(settings.pruner, epochs=_epochs(settings)),
    )
    settings.study_name = study.study_name
    for params in settings.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    if settings.workers == 1:
        from ..objective import objective

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        obj = objective(settings.space, base_config=settings.base_config, artifact_dir=settings.artifact_dir,
                        naive=settings.naive)
        callbacks = [cb for cb in (_report_trial if settings.verbose else None, on_trial) if cb is not None]
        study.optimize(obj, n_trials=settings.n_trials, callbacks=callbacks)
        return study
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings, n, i), name=f"bnn-tune-worker-{i}")
             for i, n in enumerate(_shares(settings.n_trials, settings.workers)) if n > 0]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    study = optuna.load_study(study_name=settings.study_name, storage=_storage(settings),
                              sampler=optuna.samplers.TPESampler(seed=settings.seed),
                              pruner=make_pruner(settings.pruner, epochs=_epochs(settings)))
    killed = [p.name for p in procs if p.exitcode is not None and p.exitcode < 0]
    if killed:
        _logger.warning("search workers %s were killed; failing and retrying their trials", killed)
        _recover_lost_trials(study, settings)
    failed = [p.name for p in procs if p.exitcode is not None and p.exitcode > 0]
    if failed:
        raise RuntimeError(f"search workers {failed} exited with errors (exit codes "
                           f"{[p.exitcode for p in procs]}); the storage keeps every finished trial.")
    return study


def _recover_lost_trials(study: Any, settings: SearchSettings) -> None:
    """After killed workers: fail their trials once the heartbeat is stale, then run the retries here."""
    optuna = require("optuna", feature="bnn-tune search")
    from optuna.trial import TrialState

    from ..objective import objective

    # the study's storage is Optuna's cache around the RDB storage: ask it, not an attribute of the RDB one
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    if not interval:  # journal/in-memory: no heartbeat
        return
    # a lost trial goes stale grace_period after its last beat; the margin absorbs a loaded machine's slow polls
    deadline = time.monotonic() + settings.grace_period + max(3 * interval, 10)
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.monotonic() < deadline:
        with warnings.catch_warnings():  # experimental in Optuna, and what the heartbeat is for
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        time.sleep(min(1.0, settings.heartbeat_interval))  # waiting for the heartbeat to go stale
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if waiting:
        obj = objective(settings.space, base_config=settings.base_config, artifact_dir=settings.artifact_dir,
                        naive=settings.naive)
        study.optimize(obj, n_trials=waiting, callbacks=[_report_trial] if settings.verbose else None)
