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
from pathlib import Path
from typing import Any

from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from bnn_tune.plugins._collapse import CollapseDecision, FlipRateCollapseRule

__all__ = [
    "FLIP_RATE_KEY",
    "STOP_REASON_FILE",
    "STOP_REASON_KEY",
    "FlipRateScheduler",
    "FlipRateStopper",
    "read_stop_reason",
]

from bnn_tune.plugins._outcome import FLIP_RATE_KEY, STOP_REASON_FILE, STOP_REASON_KEY  # noqa: E402

_logger = logging.getLogger("bnn_tune.ray")


def _check_mode(mode: Any) -> None:
    if mode not in (None, "min", "max"):
        raise ValueError(f"`mode` must be 'min' or 'max', but got mode={mode!r}.")


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
        """``{trial_id: reason}`` for every trial this stopper stopped."""
        return self._tracker.stop_reasons

    def __repr__(self) -> str:
        return f"FlipRateStopper(metric={self.metric!r}, mode={self.mode!r}, rule={self.rule!r})"

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        decision = self._tracker.observe(trial_id, result, self.metric, self.mode)
        if decision is None or not decision.stop:
            return False
        self._tracker.stop_reasons[trial_id] = decision.reason
        result[STOP_REASON_KEY] = f"FlipRateStopper: {decision.reason}"
        _logger.info("trial %s stopped at iteration %s: %s", trial_id, result.get("training_iteration"),
                     decision.reason)
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
        self._scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._scheduler.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        metric, mode = self.metric, self.mode
        if metric and mode:
            decision = self._tracker.observe(trial.trial_id, result, metric, mode)
            if decision is not None and decision.stop:
                self._tracker.stop_reasons[trial.trial_id] = decision.reason
                _logger.info("trial %s stopped at iteration %s: %s", trial.trial_id,
                             result.get("training_iteration"), decision.reason)
                _write_reason_file(trial, decision.reason)
                return TrialScheduler.STOP
        return self._scheduler.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        reason = self._tracker.stop_reasons.get(trial.trial_id)
        if reason is not None and isinstance(getattr(trial, "last_result", None), dict):
            # Tune calls this right after storing the stopping result as trial.last_result, which is what
            # Result.metrics and the experiment state show.
            trial.last_result[STOP_REASON_KEY] = f"FlipRateScheduler: {reason}"
        self._scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._scheduler.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        return self._scheduler.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        stopped = len(self._tracker.stop_reasons)
        return f"{self._scheduler.debug_string()}\nFlipRateScheduler: {stopped} trial(s) stopped for a collapsed flip rate."

    def save(self, checkpoint_path: str) -> None:
        self._scheduler.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self._scheduler.restore(checkpoint_path)


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
    """Why the flip-rate rule stopped a trial, or None: from a Ray ``Result``, a result dict or a trial dir.

    Example:
        >>> read_stop_reason({"stop_reason": "FlipRateStopper: frozen"})
        'FlipRateStopper: frozen'
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
