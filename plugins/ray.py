"""Ray Tune adapters of the flip-rate collapse rule: :class:`FlipRateStopper` and :class:`FlipRateScheduler`.

The rule itself is :class:`bnn_tune.plugins.FlipRateCollapseRule` (no framework import); the adapters only keep
each trial's series of ``log_flip_rate`` and of the objective metric (as reported by
:func:`bnn_tune.trainable`, one entry per ``training_iteration``) and ask the rule after every result.
The best value reported by the *other* trials so far is the rule's ``best_value``, so the best trial of a
sweep is never stopped.

Use the stopper with any scheduler (``tune.run(stop=...)`` / ``RunConfig(stop=...)``, combined with other
stoppers through ``ray.tune.stopper.CombinedStopper``), or the scheduler to wrap another scheduler
(ASHA, HyperBand, median stopping, FIFO) so that the collapse rule runs before it. Population based
training is a scheduler itself; pair it with :class:`FlipRateStopper`.

Stopped trials say why: a log line on the ``bnn_tune.ray`` logger, the adapter's ``stop_reasons``
(``{trial_id: reason}``), the field ``"stop_reason"`` in the trial's last result
(``Result.metrics["stop_reason"]``; the stopper writes it into the reported result, so ``result.json``
has it too) and, for the scheduler, a file ``bnn_tune_stop_reason.txt`` in the trial directory
(:func:`read_stop_reason` reads either).

Example:
    >>> from ray import tune
    >>> from ray.tune.schedulers import ASHAScheduler
    >>> from bnn_tune.plugins.ray import FlipRateScheduler, FlipRateStopper
    >>> scheduler = FlipRateScheduler(ASHAScheduler(max_t=20, grace_period=2), n_warmup_steps=2)
    >>> stopper = FlipRateStopper(metric="val_acc", mode="max", patience=3)

References:
    Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural Network Optimization",
    NeurIPS 2019 (eq. 7, Fig. 1: low gamma / high tau freeze the binary weights).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from bnn_tune._validate import check_range
from bnn_tune.plugins._collapse import CollapseDecision, FlipRateCollapseRule

__all__ = [
    "FLIP_RATE_KEY",
    "SCHEDULER_STATE_FILE",
    "STOP_REASON_FILE",
    "STOP_REASON_KEY",
    "EpochScheduler",
    "FlipRateScheduler",
    "FlipRateStopper",
    "read_stop_reason",
    "schedule_rule_of",
]

from bnn_tune.plugins._outcome import (  # noqa: E402
    FLIP_RATE_KEY,
    STOP_REASON_FILE,
    STOP_REASON_KEY,
    format_stop_reason,
    is_sub_epoch_result,
    parse_stop_reason,
)

SCHEDULER_STATE_FILE = "bnn_tune_scheduler_state.pkl"
"""The file in the experiment folder where :class:`FlipRateScheduler` (and :class:`~bnn_tune.plugins.flip_sh_ray.FlipSHScheduler`)
keep their state after every result; ``Tuner.restore`` brings it back (Ray itself restores a scheduler as it
was pickled when the experiment started)."""

_logger = logging.getLogger("bnn_tune.ray")


def _check_mode(mode: Any) -> None:
    if mode not in (None, "min", "max"):
        raise ValueError(f"`mode` must be 'min' or 'max', but got mode={mode!r}.")


def schedule_rule_of(scheduler: TrialScheduler) -> str:
    """The rule name a stop of ``scheduler`` gets: ``hyperband`` (Hyperband, or asynchronous Hyperband with more
    than one bracket), ``median`` (``MedianStoppingRule``) or ``asha``.

    Example:
        >>> from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule
        >>> schedule_rule_of(AsyncHyperBandScheduler(max_t=9, brackets=3)), schedule_rule_of(MedianStoppingRule())
        ('hyperband', 'median')
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler, MedianStoppingRule

    if isinstance(scheduler, HyperBandScheduler) or (
            isinstance(scheduler, AsyncHyperBandScheduler) and len(getattr(scheduler, "_brackets", ())) > 1):
        return "hyperband"
    if isinstance(scheduler, MedianStoppingRule):
        return "median"
    return "asha"


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


class _FlipRateTracker:
    """Per-trial series and the sweep's best values; the part both adapters share (plain, picklable)."""

    def __init__(self, rule: FlipRateCollapseRule, flip_rate_key: str) -> None:
        self.rule = rule
        self.flip_rate_key = flip_rate_key
        self.series: dict[str, dict[int, tuple[float, float]]] = {}
        self.best: dict[str, float] = {}  # own best per trial, sign-adjusted (larger is better)
        self.stop_reasons: dict[str, str] = {}

    def observe(self, trial_id: str, result: dict[str, Any], metric: str, mode: str) -> CollapseDecision | None:
        """Record one result and return the rule's decision (None: the result lacks the metrics)."""
        lfr = _number(result.get(self.flip_rate_key))
        value = _number(result.get(metric))
        if lfr is None or value is None:
            return None
        series = self.series.setdefault(trial_id, {})
        step = int(result.get("training_iteration", len(series) + 1))
        series[step] = (lfr, value)  # keyed by iteration: a result replayed after a restore replaces its twin
        sign = 1.0 if mode == "max" else -1.0
        if math.isfinite(value):
            self.best[trial_id] = max(self.best.get(trial_id, -math.inf), sign * value)
        others = [v for t, v in self.best.items() if t != trial_id]
        best_value = sign * max(others) if others else None
        ordered = [series[k] for k in sorted(series)]
        return self.rule.decide([x for x, _ in ordered], [v for _, v in ordered], best_value=best_value,
                                maximize=mode == "max")

    def forget(self, trial_id: str) -> None:
        self.series.pop(trial_id, None)


def _rule(n_warmup_steps, patience, floor, relative_drop, min_improvement, margin) -> FlipRateCollapseRule:
    return FlipRateCollapseRule(n_warmup_steps=n_warmup_steps, patience=patience, floor=floor,
                                relative_drop=relative_drop, min_improvement=min_improvement, margin=margin)


class FlipRateStopper(Stopper):
    """Stop Ray Tune trials whose flip rate collapsed before they learned.

    After every result, the trial's ``log_flip_rate`` series and ``metric`` series go to
    :class:`bnn_tune.plugins.FlipRateCollapseRule`: after ``n_warmup_steps`` results, a trial is stopped when its
    log flip rate stayed at or below ``floor`` (or ``relative_drop`` below its own peak) for ``patience``
    consecutive results while ``metric`` did not improve by more than ``min_improvement``; a trial whose
    flip rate never rose above the floor is stopped even if the metric creeps up (only its real-valued
    layers learn). A late decay with a still-improving metric (a gamma schedule, convergence) is kept,
    and a trial whose best value equals or beats every other trial's best so far is never stopped.
    Results without the metric or the flip rate are ignored; NaN values count as unknown.

    A stopped trial's result gets ``"stop_reason"`` (so ``Result.metrics`` and ``result.json`` say why),
    ``stop_reasons[trial_id]`` keeps it and the ``bnn_tune.ray`` logger logs it. Compose with other
    stoppers with ``ray.tune.stopper.CombinedStopper`` and with any scheduler (ASHA included).

    Args:
        metric: the objective reported by the trainable (e.g. ``"val_acc"``).
        mode: ``"max"`` or ``"min"``.
        n_warmup_steps: results never judged at the start of a trial.
        patience: consecutive collapsed results needed to stop.
        floor: log flip rate (``log(flip_rate + e^-9)``, in ``(-9, 0]``) at or below which the binary
            weights count as frozen.
        relative_drop: fraction in (0, 1) by which the flip rate must fall below its running peak to count
            as collapsed above the floor; None disables it.
        min_improvement: improvement of ``metric`` over the patience window that counts as still learning.
        flip_rate_key: the result key holding the log flip rate.
        margin: a trial whose best value is within ``margin`` of the other trials' best is not stopped
            (the best-trial guard widened by the metric's noise; ``bnn-tune search`` uses 0.02).

    Example:
        >>> from ray.tune.stopper import CombinedStopper, MaximumIterationStopper
        >>> stop = CombinedStopper(FlipRateStopper("val_acc", "max"), MaximumIterationStopper(20))
        >>> s = FlipRateStopper("val_acc", "max", n_warmup_steps=2, patience=2)
        >>> [s("t0", {"training_iteration": i, "val_acc": 0.1, "log_flip_rate": -9.0}) for i in (1, 2, 3)]
        [False, False, True]

    References:
        Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural Network
        Optimization", NeurIPS 2019.
    """

    def __init__(
        self,
        metric: str = "val_acc",
        mode: str = "max",
        *,
        n_warmup_steps: int = 2,
        patience: int = 2,
        floor: float = -8.0,
        relative_drop: float | None = 0.99,
        min_improvement: float = 0.0,
        flip_rate_key: str = FLIP_RATE_KEY,
        margin: float = 0.0,
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"`metric` must be a non-empty string, but got metric={metric!r}.")
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', but got mode={mode!r}.")
        if not isinstance(flip_rate_key, str) or not flip_rate_key:
            raise ValueError(f"`flip_rate_key` must be a non-empty string, but got flip_rate_key={flip_rate_key!r}.")
        self.metric = metric
        self.mode = mode
        self._tracker = _FlipRateTracker(_rule(n_warmup_steps, patience, floor, relative_drop, min_improvement, margin),
                                         flip_rate_key)

    @property
    def rule(self) -> FlipRateCollapseRule:
        """The framework-free rule this stopper applies."""
        return self._tracker.rule

    @property
    def stop_reasons(self) -> dict[str, str]:
        """``{trial_id: "flip-collapse: <reason>"}`` for every trial this stopper stopped."""
        return self._tracker.stop_reasons

    def __repr__(self) -> str:
        return f"FlipRateStopper(metric={self.metric!r}, mode={self.mode!r}, rule={self.rule!r})"

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        decision = self._tracker.observe(trial_id, result, self.metric, self.mode)
        if decision is None or not decision.stop:
            return False
        message = format_stop_reason("flip-collapse", decision.reason)
        self._tracker.stop_reasons[trial_id] = message
        result[STOP_REASON_KEY] = message
        _logger.info("trial %s stopped at iteration %s: %s", trial_id, result.get("training_iteration"), message)
        return True

    def stop_all(self) -> bool:
        return False


class FlipRateScheduler(TrialScheduler):
    """A trial scheduler that stops collapsed trials, then defers to another scheduler.

    Every result first goes to :class:`bnn_tune.plugins.FlipRateCollapseRule` (same rule and arguments as
    :class:`FlipRateStopper`); a collapsed trial is stopped, every other decision (continue, stop,
    pause) and every other hook is the wrapped scheduler's. ``metric``/``mode`` come from the
    arguments, from ``tune.run(metric=..., mode=...)``/``TuneConfig`` (passed on to the wrapped
    scheduler too), or from the wrapped scheduler's own.

    A stopped trial's last result gets ``"stop_reason"`` (``Result.metrics["stop_reason"]``), its trial
    directory a ``bnn_tune_stop_reason.txt``, ``stop_reasons[trial_id]`` keeps it and the
    ``bnn_tune.ray`` logger logs it.

    Args:
        scheduler: the wrapped scheduler (default ``FIFOScheduler()``), e.g. ``ASHAScheduler()``.
        metric: the objective (default: set by Tune or taken from ``scheduler``).
        mode: ``"max"`` or ``"min"`` (same).
        n_warmup_steps, patience, floor, relative_drop, min_improvement, flip_rate_key, margin: as in
            :class:`FlipRateStopper`.
        max_t: the trials' last epoch: a result of that epoch is never stopped by the rule (the trial ran to
            the end; default: the wrapped scheduler's ``max_t`` if it has one).

    Sub-epoch results (:func:`bnn_tune.plugins._outcome.is_sub_epoch_result`: :func:`bnn_tune.trainable`
    reports them inside the first epoch) never reach the wrapped scheduler. The scheduler's state (series,
    stop reasons, the wrapped scheduler's own state) travels with :meth:`save`/:meth:`restore` and, after
    every result, into ``bnn_tune_scheduler_state.pkl`` in the experiment folder, which a scheduler restored by
    ``Tuner.restore`` reads back at its first ``on_trial_add``.

    Example:
        >>> from ray.tune.schedulers import ASHAScheduler
        >>> s = FlipRateScheduler(ASHAScheduler(max_t=10, grace_period=2), patience=3)
        >>> s.set_search_properties("val_acc", "max")
        True
    """

    def __init__(
        self,
        scheduler: TrialScheduler | None = None,
        metric: str | None = None,
        mode: str | None = None,
        *,
        n_warmup_steps: int = 2,
        patience: int = 2,
        floor: float = -8.0,
        relative_drop: float | None = 0.99,
        min_improvement: float = 0.0,
        flip_rate_key: str = FLIP_RATE_KEY,
        margin: float = 0.0,
        max_t: int | None = None,
    ) -> None:
        if scheduler is not None and not isinstance(scheduler, TrialScheduler):
            raise TypeError(f"`scheduler` must be a ray.tune TrialScheduler or None, but got scheduler={scheduler!r}.")
        if isinstance(scheduler, FlipRateScheduler):
            raise ValueError("`scheduler` is already a FlipRateScheduler; wrap the inner scheduler once.")
        _check_mode(mode)
        if not isinstance(flip_rate_key, str) or not flip_rate_key:
            raise ValueError(f"`flip_rate_key` must be a non-empty string, but got flip_rate_key={flip_rate_key!r}.")
        super().__init__()
        self._scheduler = scheduler if scheduler is not None else FIFOScheduler()
        self._metric = metric
        self._mode = mode
        self._tracker = _FlipRateTracker(_rule(n_warmup_steps, patience, floor, relative_drop, min_improvement, margin),
                                         flip_rate_key)
        self._max_t = check_range("max_t", max_t, 1, integer=True, none_ok=True)
        self._added: set[str] = set()  # trials the wrapped scheduler was told about (kept across a restore)
        self._state_loaded = False
        if metric or mode:
            self.set_search_properties(metric, mode)

    # ------------------------------------------------------------------ properties
    @property
    def scheduler(self) -> TrialScheduler:
        """The wrapped scheduler."""
        return self._scheduler

    @property
    def rule(self) -> FlipRateCollapseRule:
        return self._tracker.rule

    @property
    def stop_reasons(self) -> dict[str, str]:
        """``{trial_id: reason}`` for every trial the collapse rule stopped."""
        return self._tracker.stop_reasons

    @property
    def metric(self) -> str | None:
        inner = getattr(self._scheduler, "metric", None)
        return self._metric or (None if inner == DEFAULT_METRIC else inner)

    @property
    def mode(self) -> str | None:
        return self._mode or getattr(self._scheduler, "_mode", None)

    @property
    def supports_buffered_results(self) -> bool:
        return self._scheduler.supports_buffered_results

    def __repr__(self) -> str:
        return (f"FlipRateScheduler({type(self._scheduler).__name__}(...), metric={self.metric!r}, "
                f"mode={self.mode!r}, rule={self.rule!r})")

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        _check_mode(mode)
        if (metric and self.metric not in (None, DEFAULT_METRIC, metric)) or (mode and self.mode not in (None, mode)):
            return False  # like Tune's own schedulers: a conflicting metric/mode is refused
        if getattr(self._scheduler, "metric", None) in (None, DEFAULT_METRIC) or getattr(
            self._scheduler, "_mode", "max"
        ) is None:
            if not self._scheduler.set_search_properties(metric or self._metric, mode or self._mode, **spec):
                return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    # ------------------------------------------------------------------ hooks
    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_persisted(trial)
        if trial.trial_id in self._added:  # restored: the wrapped scheduler's restored state has it already
            return
        self._added.add(trial.trial_id)
        self._scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._scheduler.on_trial_error(tune_controller, trial)

    def _last_epoch(self) -> int | None:
        if self._max_t is not None:
            return self._max_t
        inner = _number(getattr(self._scheduler, "_max_t", None))
        return int(inner) if inner is not None and math.isfinite(inner) else None

    def _stop(self, trial: Any, result: dict[str, Any], message: str) -> str:
        """Record ``message`` (``"<rule>: <reason>"``) as ``trial``'s stop reason and return STOP."""
        self._tracker.stop_reasons[trial.trial_id] = message
        _logger.info("trial %s stopped at iteration %s: %s", trial.trial_id, result.get("training_iteration"), message)
        _write_reason_file(trial, message)
        return TrialScheduler.STOP

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        try:
            return self._on_result(tune_controller, trial, result)
        finally:
            self._persist(trial)

    def _on_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        metric, mode = self.metric, self.mode
        if is_sub_epoch_result(result):  # inside an epoch: the collapse rule and the wrapped scheduler judge epochs
            return TrialScheduler.CONTINUE
        if metric and mode:
            decision = self._tracker.observe(trial.trial_id, result, metric, mode)
            last = self._last_epoch()
            final = last is not None and int(result.get("training_iteration", 0)) >= last
            if decision is not None and decision.stop and not final:
                return self._stop(trial, result, format_stop_reason("flip-collapse", decision.reason))
        return self._scheduler.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        reason = self._tracker.stop_reasons.get(trial.trial_id)
        last = getattr(trial, "last_result", None)
        if reason is not None and isinstance(last, dict):
            # Tune calls this right after storing the stopping result as trial.last_result, which is what
            # Result.metrics, the experiment state and the searcher's on_trial_complete see.
            last[STOP_REASON_KEY] = reason
            metric = self.metric
            if is_sub_epoch_result(last) and metric and not _finite_number(last.get(metric)):
                # stopped inside the first epoch, before any value: the searcher records it as pruned, not failed
                last.pop(metric, None)
        self._scheduler.on_trial_complete(tune_controller, trial, result)
        self._persist(trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._scheduler.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        return self._scheduler.choose_trial_to_run(tune_controller)

    def stops_by_rule(self) -> dict[str, int]:
        """``{rule: trials stopped}`` (``flip-early``, ``flip-collapse``, ``flip-band``, ``asha``, ``hyperband``,
        ``median``)."""
        rules = Counter((parse_stop_reason(r) or ("?", ""))[0] for r in self._tracker.stop_reasons.values())
        return dict(sorted(rules.items()))

    def debug_string(self) -> str:
        rules = self.stops_by_rule()
        counts = ", ".join(f"{rule} {n}" for rule, n in rules.items()) if rules else "none yet"
        return f"{self._scheduler.debug_string()}\n{type(self).__name__}: trials stopped by rule: {counts}."

    # ------------------------------------------------------------------ state
    def _rule_state(self) -> dict[str, Any]:
        t = self._tracker
        return {"series": t.series, "best": t.best, "stop_reasons": t.stop_reasons, "added": self._added}

    def _set_rule_state(self, state: dict[str, Any]) -> None:
        t = self._tracker
        t.series, t.best, t.stop_reasons = state["series"], state["best"], state["stop_reasons"]
        self._added = state["added"]

    def _state(self) -> dict[str, Any]:
        inner: bytes | None = None
        with tempfile.TemporaryDirectory(prefix="bnn_tune_sched_") as tmp:
            path = os.path.join(tmp, "inner.pkl")
            try:
                self._scheduler.save(path)
            except NotImplementedError:  # FIFO, median: Ray gives them no save; they restart empty
                pass
            else:
                inner = Path(path).read_bytes()
        return {"format": 1, "class": type(self).__name__, "rules": self._rule_state(), "inner": inner}

    def _set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != 1 or state.get("class") != type(self).__name__:
            raise ValueError(f"The saved scheduler state is a {state.get('class')!r} state (format "
                             f"{state.get('format')!r}), not a {type(self).__name__} state of format 1.")
        self._set_rule_state(state["rules"])
        if state["inner"] is not None:
            with tempfile.TemporaryDirectory(prefix="bnn_tune_sched_") as tmp:
                path = os.path.join(tmp, "inner.pkl")
                Path(path).write_bytes(state["inner"])
                self._scheduler.restore(path)

    def save(self, checkpoint_path: str) -> None:
        """Write everything the decisions read -- the rules' series, references and stop reasons, and the
        wrapped scheduler's own saved state -- to ``checkpoint_path`` (pickle)."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self._state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Load what :meth:`save` wrote: later decisions are those of the scheduler that saved it."""
        with open(checkpoint_path, "rb") as f:
            self._set_state(pickle.load(f))
        self._state_loaded = True

    def _state_path(self, trial: Any) -> str | None:
        try:
            return Path(trial.storage.experiment_driver_staging_path, SCHEDULER_STATE_FILE).as_posix()
        except Exception:  # a trial without Tune storage (a test double)
            return None

    def _persist(self, trial: Any) -> None:
        """Keep the state next to the experiment's own state (synced with it; read back by a restore).

        The file is written beside the staging folder and moved in whole: Tune's syncer copies the staging folder
        while trials run, and a half-written or renamed-away temp file inside it fails the experiment's sync
        ("Failed to open local file ...pkl.tmp")."""
        path = self._state_path(trial)
        if path is None:
            return
        tmp = None
        try:
            parent = os.path.dirname(os.path.dirname(os.path.abspath(path)))
            fd, tmp = tempfile.mkstemp(prefix=".bnn_tune_scheduler_state.", dir=parent)
            with os.fdopen(fd, "wb") as f:
                pickle.dump(self._state(), f)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:  # bookkeeping must never break the experiment
            _logger.debug("could not write %s: %s", path, exc)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    def _load_persisted(self, trial: Any) -> None:
        if self._state_loaded:
            return
        self._state_loaded = True
        path = self._state_path(trial)
        if path is None or not os.path.isfile(path) or self._added:
            return
        self.restore(path)
        _logger.info("restored the %s state of %d trial(s) from %s", type(self).__name__, len(self._added), path)


class EpochScheduler(FlipRateScheduler):
    """A scheduler shown only epoch results: sub-epoch results of :func:`bnn_tune.trainable` get CONTINUE and
    never reach it (``MedianStoppingRule`` would count their NaN values); no flip-rate rule. Its state
    survives ``Tuner.restore`` as :class:`FlipRateScheduler`'s does.

    Example:
        >>> from ray.tune.schedulers import MedianStoppingRule
        >>> s = EpochScheduler(MedianStoppingRule(metric="val_acc", mode="max"))
        >>> s.scheduler.__class__.__name__
        'MedianStoppingRule'
    """

    def _on_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if is_sub_epoch_result(result):
            return TrialScheduler.CONTINUE
        return self._scheduler.on_trial_result(tune_controller, trial, result)

    def __repr__(self) -> str:
        return f"EpochScheduler({type(self._scheduler).__name__}(...), metric={self.metric!r}, mode={self.mode!r})"


def _finite_number(x: Any) -> bool:
    v = _number(x)
    return v is not None and math.isfinite(v)


def _write_reason_file(trial: Any, reason: str) -> None:
    """Write the stop reason next to the trial's results (local or remote storage); never raises."""
    try:
        storage = trial.storage
        path = Path(storage.trial_fs_path, STOP_REASON_FILE).as_posix()
        with storage.storage_filesystem.open_output_stream(path) as f:
            f.write((reason + "\n").encode())
    except Exception as exc:  # bookkeeping must never break the experiment
        _logger.debug("could not write %s for trial %s: %s", STOP_REASON_FILE, getattr(trial, "trial_id", "?"), exc)


def read_stop_reason(result: Any) -> str | None:
    """Why a rule stopped a trial (``"<rule>: <reason>"``), or None: from a Ray ``Result``, a result dict or a
    trial dir.

    Example:
        >>> read_stop_reason({"stop_reason": "flip-collapse: frozen"})
        'flip-collapse: frozen'
    """
    if isinstance(result, dict):
        return result.get(STOP_REASON_KEY)
    if isinstance(result, (str, os.PathLike)):
        f = Path(result, STOP_REASON_FILE)
        return f.read_text().strip() if f.is_file() else None
    metrics = getattr(result, "metrics", None) or {}
    if metrics.get(STOP_REASON_KEY):
        return metrics[STOP_REASON_KEY]
    path = getattr(result, "path", None)
    return read_stop_reason(path) if path else None
