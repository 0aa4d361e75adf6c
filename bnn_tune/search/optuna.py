"""The Optuna backend of ``bnn-tune search``: N worker processes on one storage, the study in ``--out``.

:func:`run_optuna_search` takes the :class:`bnn_tune.search.settings.SearchSettings` both backends take. The
study lives in ``settings.storage`` (default ``sqlite:///<out>/study.db``; any URL
:func:`bnn_tune.search._storage.make_storage` reads), checkpoints of completed trials in
``<out>/trial_<number>/checkpoint.pt``. With ``workers > 1`` the study is created once, then ``workers``
processes (multiprocessing, spawn) each load it and run ``study.optimize`` on their share of the trials still
missing; worker ``i`` samples with TPE seeded by ``settings.sampler_seeds()[i]``. Optuna's storage hands every
trial number to exactly one process, so no trial is lost or duplicated. The driver follows the study in the
storage and feeds the live view (:class:`bnn_tune.search._rows.LiveView`).

Resuming (``resume=True``): the trials already finished count towards ``n_trials``; a trial that Ctrl-C
interrupted is run again with the same parameters; with nothing to resume the study starts (so every machine of
a distributed search runs the same command with ``--resume``). Workers stop once the study holds ``n_trials``
finished trials (Optuna's ``MaxTrialsCallback``), however many machines share it. Without ``resume`` a storage
that already holds the study is refused (one ``ValueError``), so two searches never mix by accident.

Killed workers: with an RDB storage every running trial writes a heartbeat every ``heartbeat_interval``
seconds; a trial whose heartbeat is older than ``grace_period`` (its worker was killed, its machine lost)
is marked FAIL by the next trial any worker starts, and Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues
it again with the same parameters (``max_retry`` times). When the workers are done, the driver fails the stale
trials that are left and runs their retries itself, so no trial stays RUNNING forever, then the trials the killed
workers never started, so the study ends with ``n_trials`` finished trials. (Optuna's ``JournalStorage`` has no
heartbeat: a journal study keeps a killed worker's trial RUNNING.) The heartbeat's period and grace are
``--heartbeat-interval`` and ``--grace-period``.

Ctrl-C: the workers ignore SIGINT; the driver stops them with SIGTERM, which each turns into a
``KeyboardInterrupt`` inside its trial (Optuna marks the trial FAIL, and it is recorded as interrupted so
``--resume`` runs it again), and raises :class:`SearchInterrupted` once they have exited.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from .._imports import require
from ..plugins._outcome import (
    CHECKPOINT_ATTR,
    CONFIG_ATTR,
    FAIL_REASON_ATTR,
    FLIP_RATE_ATTR,
    PRUNE_REASON_ATTR,
    SUB_EPOCH_POINTS,
    SUB_FLIP_RATE_ATTR,
    TEST_ACC_ATTR,
    WORKER_ATTR,
    trial_status,
)
from ._rows import LiveView, TrialRow
from ._rule import DEFAULT_PRUNER
from ._storage import make_storage
from .settings import SearchSettings

__all__ = ["INTERRUPTED", "SearchInterrupted", "SearchSettings", "make_pruner", "make_storage", "row_of_trial",
           "run_optuna_search"]

_logger = logging.getLogger("bnn_tune.search")

INTERRUPTED = "interrupted (Ctrl-C or SIGTERM): --resume runs it again"
"""The fail reason of a trial that Ctrl-C stopped."""
_RETRY_OF_ATTR = "bnn_tune:retry_of"


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C ended the search; the study is consistent and ``--resume`` continues it."""


def make_pruner(kind: str = DEFAULT_PRUNER, *, epochs: int | None = None) -> Any:
    """The Optuna pruner of the strategy ``kind`` for ``epochs``-epoch trials (default 10): one of
    :data:`bnn_tune.plugins.strategies.STRATEGIES`, built by :meth:`bnn_tune.plugins.strategies.Strategy.optuna_pruner`
    (the registry describes each; the Ray backend's :func:`bnn_tune.search.ray.make_scheduler` builds from the
    same settings)."""
    from bnn_tune.plugins.strategies import get_strategy

    return get_strategy(kind).optuna_pruner(epochs if epochs is not None else 10)


def _schedule_rule(pruner: str) -> str | None:
    """The rule a strategy's scheduler stops with (``asha``, ``hyperband``, ``median``; None without one)."""
    from ..plugins.strategies import get_strategy

    return get_strategy(pruner).schedule_rule


def row_of_trial(trial: Any, *, pruner: str = DEFAULT_PRUNER) -> TrialRow:
    """The :class:`TrialRow` of an Optuna ``FrozenTrial``."""
    state = trial.state.name
    iv = trial.intermediate_values
    values = [iv[s] for s in sorted(iv)]
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    subs = trial.user_attrs.get(SUB_FLIP_RATE_ATTR) or []
    epochs: float = float(trial.last_step) if trial.last_step is not None else len(subs) / SUB_EPOCH_POINTS
    reason = trial.user_attrs.get(PRUNE_REASON_ATTR) if state == "PRUNED" else None
    fail = trial.user_attrs.get(FAIL_REASON_ATTR) if state == "FAIL" else None
    if state in ("RUNNING", "WAITING"):
        status = "running"
    else:
        status = trial_status(failed=state == "FAIL", stop_reason=reason, stopped=state == "PRUNED",
                              schedule_rule=_schedule_rule(pruner))
    value = trial.value if state == "COMPLETE" else (values[-1] if values else None)
    config = trial.user_attrs.get(CONFIG_ATTR)
    used = {**trial.params, **{k: v for k, v in (config or {}).items() if k in trial.params}}
    lfr = trial.user_attrs.get(FLIP_RATE_ATTR) or []
    return TrialRow(
        trial=str(trial.number), status=status, val_acc=value, best_val_acc=max(finite) if finite else None,
        epochs=int(epochs) if float(epochs).is_integer() else epochs, params=used, config=config,
        note=reason or fail or ("pruned (no reason recorded)" if state == "PRUNED" else ""),
        log_flip_rate=lfr[-1] if lfr else None, test_acc=trial.user_attrs.get(TEST_ACC_ATTR),
        checkpoint=trial.user_attrs.get(CHECKPOINT_ATTR))


def _storage(settings: SearchSettings) -> Any:
    return make_storage(settings.storage, heartbeat_interval=settings.heartbeat_interval,
                        grace_period=settings.grace_period, max_retry=settings.max_retry)


_STOP = threading.Event()
"""Set by the first Ctrl-C (driver) or SIGTERM (worker): the running trial ends at its next safe point."""


def _request_stop(signum: int, frame: Any) -> None:
    """Signal handler: the first signal asks the running trial to stop at its next safe point (between two storage
    calls, so no database transaction is cut in half); a second one interrupts at once."""
    if _STOP.is_set():
        raise KeyboardInterrupt
    _STOP.set()


class _StopAwareTrial:
    """An Optuna trial that raises ``KeyboardInterrupt`` before its next report, prune check or user attr once a
    stop was requested: the objective calls these every 1/8 epoch, outside any storage call."""

    _CHECKED = frozenset({"report", "should_prune", "set_user_attr"})

    def __init__(self, trial: Any) -> None:
        self._trial = trial

    def __getattr__(self, name: str) -> Any:
        if name in self._CHECKED and _STOP.is_set():
            raise KeyboardInterrupt
        return getattr(self._trial, name)


class _Interruptible:
    """The objective, recording a Ctrl-C (or SIGTERM) that ends a trial so that ``--resume`` runs it again, and
    the process that runs the trial (so an interrupted search fails only its own trials)."""

    def __init__(self, objective: Callable[[Any], float]) -> None:
        self.objective = objective

    def __call__(self, trial: Any) -> float:
        try:
            if _STOP.is_set():  # asked before this trial sampled anything: it runs again on --resume
                raise KeyboardInterrupt
            trial.set_user_attr(WORKER_ATTR, _WORKER)
            return self.objective(_StopAwareTrial(trial))
        except KeyboardInterrupt:
            try:
                trial.set_user_attr(FAIL_REASON_ATTR, INTERRUPTED)
            except Exception:  # noqa: BLE001 - the storage may be gone too; the trial still fails
                pass
            raise


_WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _objective(settings: SearchSettings) -> _Interruptible:
    from ..objective import objective

    return _Interruptible(objective(settings.space, base_config=settings.base_config,
                                    artifact_dir=str(settings.out), naive=settings.naive))


def _worker(settings: SearchSettings, n_trials: int, index: int, resumed_after: int) -> None:
    global _WORKER
    _WORKER = f"{socket.gethostname()}:{os.getpid()}"
    # SIGINT is ignored (inherited from the driver); the driver's SIGTERM stops the running trial at a safe point
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        optuna = require("optuna", feature="bnn-tune search")
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.load_study(study_name=settings.study_name, storage=_storage(settings),
                                  sampler=optuna.samplers.TPESampler(
                                      seed=settings.sampler_seeds(resumed_after=resumed_after)[index]),
                                  pruner=make_pruner(settings.pruner, epochs=settings.epochs))
        serialize_asks(study, settings.storage)
        study.optimize(_objective(settings), n_trials=n_trials, callbacks=[_enough(settings), _stop_if_asked])
    except KeyboardInterrupt:
        sys.exit(130)
    if _STOP.is_set():
        sys.exit(130)


def serialize_asks(study: Any, storage_url: str | None) -> None:
    """Workers on one local SQLite file take turns at ``study.ask()``.

    SQLite has no row locks: two processes can both read an enqueued trial as WAITING and both set it RUNNING
    (Optuna's ``SELECT ... FOR UPDATE`` is a plain read there), so both run it and the second ``tell`` fails
    with "Cannot tell a COMPLETE trial" (CI met it when ``--resume`` re-enqueued interrupted trials for two
    workers). An exclusive ``flock`` on ``<db>.ask.lock`` around ``ask`` (pop + commit) rules that out; server
    databases lock the row themselves and journal storage has its own lock.
    """
    from ._storage import storage_file

    where = storage_file(storage_url) if storage_url else None
    if where is None or where[0] != "sqlite" or getattr(study, "_bnn_tune_serialized", False):
        return  # (twice would deadlock: a second flock of the same file in one process waits for the first)
    import fcntl

    lock_path = where[1].with_name(where[1].name + ".ask.lock")
    ask = study.ask

    def locked_ask(*args: Any, **kwargs: Any) -> Any:
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                return ask(*args, **kwargs)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    study.ask = locked_ask
    study._bnn_tune_serialized = True


def _stop_if_asked(study: Any, trial: Any) -> None:
    """A stop asked between two trials: start no other one."""
    if _STOP.is_set():
        study.stop()


def _enough(settings: SearchSettings) -> Any:
    """Stops a worker once the study holds ``n_trials`` finished trials (other workers and machines count)."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    return MaxTrialsCallback(settings.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _shares(n: int, workers: int) -> list[int]:
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)]


def _existing_study(settings: SearchSettings) -> bool:
    """Whether the storage already holds ``settings.study_name`` (without creating a database file)."""
    optuna = require("optuna", feature="bnn-tune search")
    from ._storage import storage_file

    url = settings.storage
    if url in (None, "", ":memory:"):
        return False
    local = storage_file(url)  # type: ignore[arg-type]
    if local is not None and not local[1].exists():
        return False
    names = optuna.study.get_all_study_names(storage=make_storage(url))
    return settings.study_name in names


def _prepare(settings: SearchSettings) -> tuple[Any, int, int]:
    """Create or (with ``resume``) load the study; returns it, the number of trials still to run and the number
    it held (a resumed search's samplers take the seed streams after those: :func:`sampler_seeds`)."""
    optuna = require("optuna", feature="bnn-tune search")
    from optuna.trial import TrialState

    exists = _existing_study(settings)
    if exists and not settings.resume:
        raise ValueError(f"the storage {settings.storage} already holds the study {settings.study_name!r}; pass "
                         "--resume to continue it, or choose another --out / --study.")
    storage = _storage(settings)
    study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize",
                                load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=settings.sampler_seeds()[0]),
                                pruner=make_pruner(settings.pruner, epochs=settings.epochs))
    trials = study.get_trials(deepcopy=False)
    if trials:  # resumed: do not draw the first run's configurations again
        study.sampler = optuna.samplers.TPESampler(seed=settings.sampler_seeds(resumed_after=len(trials))[0])
    retried = {t.user_attrs.get(_RETRY_OF_ATTR) for t in trials}
    interrupted = [t for t in trials if t.state == TrialState.FAIL
                   and t.user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED and t.number not in retried]
    for t in interrupted:  # run again with the same parameters
        study.enqueue_trial(dict(t.params), user_attrs={_RETRY_OF_ATTR: t.number})
    for params in settings.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.user_attrs.get(FAIL_REASON_ATTR) != INTERRUPTED))
    return study, max(0, settings.n_trials - done), len(trials)


def run_optuna_search(settings: SearchSettings, *, view: LiveView | None = None,
                      on_trial: Callable[[Any, Any], None] | None = None) -> Any:
    """Create (or resume) the study and run the trials still missing of ``settings.n_trials`` on
    ``settings.workers`` processes.

    Args:
        settings: what to search and where to store it (validated when it was made).
        view: the live view to feed (a line per finished trial).
        on_trial: extra ``callback(study, frozen_trial)`` (single-process runs only).

    Returns:
        The ``optuna.Study`` (reloaded from the storage after multi-process runs).

    Raises:
        ValueError: the storage already holds the study and ``resume`` is off (or the reverse).
        SearchInterrupted: Ctrl-C; the trials it interrupted are recorded and ``resume`` runs them again.
    """
    optuna = require("optuna", feature="bnn-tune search")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported once, by the objective and the view
    study, remaining, resumed_after = _prepare(settings)
    if remaining == 0:
        return study
    workers = min(settings.workers or 1, remaining)
    if workers == 1:
        def report(study: Any, trial: Any) -> None:
            if view is not None:
                view.finished(row_of_trial(trial, pruner=settings.pruner))
            if on_trial is not None:
                on_trial(study, trial)

        _STOP.clear()
        previous = _install(signal.SIGINT, _request_stop)
        serialize_asks(study, settings.storage)  # other processes may share the file
        try:
            study.optimize(_objective(settings), n_trials=remaining,
                           callbacks=[report, _enough(settings), _stop_if_asked])
        except KeyboardInterrupt:
            raise SearchInterrupted from None
        finally:
            _install(signal.SIGINT, previous)
        if _STOP.is_set():
            raise SearchInterrupted
        return study
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings, n, i, resumed_after), name=f"bnn-tune-worker-{i}")
             for i, n in enumerate(_shares(remaining, workers)) if n > 0]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers inherit "ignore Ctrl-C"
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        _follow(study, procs, view, settings)
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker ends its trial at the next safe point and exits
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.kill()
        _fail_orphans(study, procs)
        raise SearchInterrupted from None
    study = optuna.load_study(study_name=settings.study_name, storage=_storage(settings),
                              sampler=optuna.samplers.TPESampler(seed=settings.sampler_seeds()[0]),
                              pruner=make_pruner(settings.pruner, epochs=settings.epochs))
    killed = [p.name for p in procs if p.exitcode is not None and p.exitcode < 0]
    if killed:
        _logger.warning("search workers %s were killed; failing and retrying their trials", killed)
        _recover_lost_trials(study, settings, view)
    failed = [p.name for p in procs if p.exitcode is not None and p.exitcode > 0]
    if failed:
        raise RuntimeError(f"search workers {failed} exited with errors (exit codes "
                           f"{[p.exitcode for p in procs]}); the storage keeps every finished trial.")
    _follow(study, [], view, settings)  # the trials the last poll missed
    return study


def _install(signum: int, handler: Any) -> Any:
    """``signal.signal`` where it is allowed (the main thread); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return handler
    return signal.signal(signum, handler)


def _fail_orphans(study: Any, procs: list[Any]) -> None:
    """Fail, as interrupted, the trials this search's (now stopped) workers left RUNNING; trials of other
    processes or machines sharing the study are left alone."""
    from optuna.trial import TrialState

    ours = {f"{socket.gethostname()}:{p.pid}" for p in procs}
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(WORKER_ATTR) in ours:
            storage.set_trial_user_attr(t._trial_id, FAIL_REASON_ATTR, INTERRUPTED)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _follow(study: Any, procs: list[Any], view: LiveView | None, settings: SearchSettings) -> None:
    """Wait for the workers, feeding the live view from the storage once a second."""
    from optuna.trial import TrialState

    seen: set[int] = set()
    while True:
        alive = any(p.is_alive() for p in procs)
        if view is not None:
            for t in study.get_trials(deepcopy=False):
                if t.state == TrialState.RUNNING:
                    view.started(str(t.number))
                elif t.state.is_finished() and t.number not in seen:
                    seen.add(t.number)
                    view.finished(row_of_trial(t, pruner=settings.pruner))
        if not alive:
            return
        # until a worker exits, or a second (the poll interval of the live view)
        mp.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=1.0)


def _recover_lost_trials(study: Any, settings: SearchSettings, view: LiveView | None) -> None:
    """After killed workers: fail their trials once the heartbeat is stale, run the retries here, then the trials
    the killed workers never started (so the study ends with ``n_trials`` finished trials, as without the kill)."""
    optuna = require("optuna", feature="bnn-tune search")

    # the study's storage is Optuna's cache around the RDB storage: ask it, not an attribute of the RDB one
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    if interval:  # journal/in-memory: no heartbeat, the killed worker's trial stays RUNNING
        _retry_stale_trials(study, settings, interval)
    missing = settings.n_trials - _finished(study)
    if missing > 0:
        # seeded after the trials the study holds, like a resumed search: not the first worker's draws again
        study.sampler = optuna.samplers.TPESampler(
            seed=settings.sampler_seeds(resumed_after=len(study.get_trials(deepcopy=False)))[0])
        serialize_asks(study, settings.storage)
        study.optimize(_objective(settings), n_trials=missing, callbacks=[_enough(settings)])


def _finished(study: Any) -> int:
    """Trials that count towards ``n_trials``: completed, pruned, and failed ones that nothing runs again (a trial
    failed by the heartbeat counts through its retry, an interrupted one through ``--resume``)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in retried
                   and t.user_attrs.get(FAIL_REASON_ATTR) != INTERRUPTED))


def _retry_stale_trials(study: Any, settings: SearchSettings, interval: int) -> None:
    """Fail the trials whose heartbeat went stale (their worker was killed) and run their retries here."""
    optuna = require("optuna", feature="bnn-tune search")
    from optuna.trial import TrialState

    # a lost trial goes stale grace_period after its last beat; the margin absorbs a loaded machine's slow polls
    deadline = time.monotonic() + settings.grace_period + max(3 * interval, 10)
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.monotonic() < deadline:
        with warnings.catch_warnings():  # experimental in Optuna, and what the heartbeat is for
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        time.sleep(min(1.0, settings.heartbeat_interval))  # waiting for the heartbeat to go stale
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if waiting:
        serialize_asks(study, settings.storage)
        study.optimize(_objective(settings), n_trials=waiting)
