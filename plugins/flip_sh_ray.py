"""Ray Tune adapter of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`: :class:`FlipSHScheduler` around ASHA/HyperBand.

Same decisions as :class:`bnn_tune.plugins.flip_sh.FlipSHPruner` (``flip-early`` on the sub-epoch log flip rates a
result carries in ``"sub_log_flip_rate"`` -- a list, the points of that epoch --, ``flip-collapse``,
``flip-band`` against the completed trials' series, then the wrapped scheduler, whose STOP ``protect`` may turn
into CONTINUE for a late bloomer). Ray results come once
per epoch, so ``flip-early`` stops a frozen trial at its first result (the Optuna objective can stop inside
the first epoch). Stopped trials say why exactly like :class:`bnn_tune.plugins.ray.FlipRateScheduler`
(``stop_reasons``, ``"stop_reason"`` in the last result, ``bnn_tune_stop_reason.txt``), as
``"<rule>: <reason>"``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.schedulers import TrialScheduler

from bnn_tune.plugins._flip_sh import FlipSHRule
from bnn_tune.plugins.ray import FlipRateScheduler, _FlipRateTracker, _number, _write_reason_file

__all__ = ["SUB_FLIP_RATE_KEY", "FlipSHScheduler"]

from bnn_tune.plugins._outcome import SUB_FLIP_RATE_KEY  # noqa: E402

_logger = logging.getLogger("bnn_tune.ray")


class FlipSHScheduler(FlipRateScheduler):
    """ASHA (or any scheduler) with the flip-rate rules of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`.

    Args:
        scheduler: the wrapped scheduler, e.g. ``ASHAScheduler(max_t=E, grace_period=1, reduction_factor=3)``.
        metric, mode: as in :class:`bnn_tune.plugins.ray.FlipRateScheduler`.
        max_t: the trial's last iteration for the late-bloomer projection (default: the wrapped
            scheduler's ``max_t``).
        **rule_kwargs: :class:`FlipSHRule` arguments.
            ``**bnn_tune.plugins._flip_sh.RECOMMENDED`` gives the ``flip+asha`` settings of the hpobench evaluation.
    """

    def __init__(self, scheduler: TrialScheduler | None = None, metric: str | None = None, mode: str | None = None,
                 *, max_t: int | None = None, **rule_kwargs: Any) -> None:
        super().__init__(scheduler, metric, mode)
        self.flip_sh = FlipSHRule(**rule_kwargs)
        self._tracker = _FlipRateTracker(self.flip_sh.collapse, self._tracker.flip_rate_key)
        self._subs: dict[str, dict[int, list[float]]] = {}
        self._max_t = max_t
        self.protected: dict[str, str] = {}
        self._completed: dict[str, float] = {}  # final value per completed trial, sign-adjusted
        self._completed_series: dict[str, list[float]] = {}  # its log flip-rate series (for flip-band)

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        value = _number((result or {}).get(self.metric)) if self.metric else None
        if value is not None and math.isfinite(value) and trial.trial_id not in self._tracker.stop_reasons:
            self._completed[trial.trial_id] = value if self.mode == "max" else -value
            series = self._tracker.series.get(trial.trial_id, {})
            self._completed_series[trial.trial_id] = [series[k][0] for k in sorted(series)]
        super().on_trial_complete(tune_controller, trial, result)

    def __repr__(self) -> str:
        return f"FlipSHScheduler({type(self._scheduler).__name__}(...), metric={self.metric!r}, rule={self.flip_sh!r})"

    def _stop(self, trial: Any, result: dict[str, Any], message: str) -> str:
        self._tracker.stop_reasons[trial.trial_id] = message
        _logger.info("trial %s stopped at iteration %s: %s", trial.trial_id, result.get("training_iteration"), message)
        _write_reason_file(trial, message)
        return TrialScheduler.STOP

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        metric, mode = self.metric, self.mode
        if not (metric and mode):
            return self._scheduler.on_trial_result(tune_controller, trial, result)
        tid = trial.trial_id
        it = int(result.get("training_iteration", 0))
        subs = result.get(SUB_FLIP_RATE_KEY)
        if isinstance(subs, (list, tuple)):
            self._subs.setdefault(tid, {})[it] = [float(x) for x in subs]
        all_subs = [x for k in sorted(self._subs.get(tid, {})) for x in self._subs[tid][k]]
        if all_subs:
            early = self.flip_sh.frozen_early(all_subs)
            if early.stop:
                return self._stop(trial, result, early.message())
        self._tracker.observe(tid, result, metric, mode)  # records the series (its own verdict is not used)
        series = self._tracker.series.get(tid, {})
        ordered = [series[k] for k in sorted(series)]
        sign = 1.0 if mode == "max" else -1.0
        # like the Optuna pruner: the best *completed* trial's final value
        best_value = sign * max(self._completed.values()) if self._completed else None
        if ordered:
            decision = self.flip_sh.collapsed([x for x, _ in ordered], [v for _, v in ordered], best_value=best_value,
                                              maximize=mode == "max")
            if decision.stop:
                return self._stop(trial, result, decision.message())
        refs = [(sign * v, self._completed_series.get(t, [])) for t, v in self._completed.items()]
        if ordered:
            band = self.flip_sh.out_of_band([x for x, _ in ordered], refs, maximize=mode == "max")
            if band.stop:
                return self._stop(trial, result, band.message())
        action = self._scheduler.on_trial_result(tune_controller, trial, result)
        if action != TrialScheduler.STOP or not ordered:
            return action
        max_t = self._max_t or _number(getattr(self._scheduler, "_max_t", None)) or 0
        keep = self.flip_sh.protect([x for x, _ in ordered], [v for _, v in ordered],
                                    remaining=int(max(max_t - it, 0)) if math.isfinite(max_t) else 0,
                                    best_value=best_value, maximize=mode == "max")
        if keep.stop:
            keep_band = self.flip_sh.in_band([x for x, _ in ordered], refs, maximize=mode == "max")
            if not keep_band.stop:
                self.protected[tid] = keep_band.message()
                return TrialScheduler.CONTINUE
        if not keep.stop:
            self.protected[tid] = keep.message()
            return TrialScheduler.CONTINUE
        return self._stop(trial, result, f"asha: {type(self._scheduler).__name__} stopped it at iteration {it} "
                                         f"({keep.reason})")
