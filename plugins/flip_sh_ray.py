"""Ray Tune adapter of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`: :class:`FlipSHScheduler` around ASHA/HyperBand.

The decisions are :meth:`FlipSHRule.decide`'s, exactly as in :class:`bnn_tune.plugins.flip_sh.FlipSHPruner`:
this adapter only keeps each trial's series from Ray's results, reads them into a
:class:`~bnn_tune.plugins._flip_sh.TrialView` and turns the decision into a Tune action. ``flip-early`` reads the
sub-epoch log flip rates a result carries in ``"sub_log_flip_rate"`` (the points of its epoch so far):
:func:`bnn_tune.trainable` reports sub-epoch results inside the first epoch (marked with ``"sub_epoch_point"``),
so a frozen trial stops after as many sub-epoch points as in the Optuna objective. Sub-epoch results never
reach the wrapped scheduler. Stopped trials say why exactly like :class:`bnn_tune.plugins.ray.FlipRateScheduler`
(``stop_reasons``, ``"stop_reason"`` in the last result, ``bnn_tune_stop_reason.txt``), as ``"<rule>: <reason>"``
with rule ``flip-early``, ``flip-collapse``, ``flip-band`` or the wrapped scheduler's (``asha``, ``hyperband``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.schedulers import TrialScheduler

from bnn_tune.plugins._flip_sh import FlipSHRule, TrialView
from bnn_tune.plugins._outcome import SUB_FLIP_RATE_KEY, is_sub_epoch_result
from bnn_tune.plugins.ray import FlipRateScheduler, _FlipRateTracker, _number, schedule_rule_of

__all__ = ["SUB_FLIP_RATE_KEY", "FlipSHScheduler"]

_logger = logging.getLogger("bnn_tune.ray")


class FlipSHScheduler(FlipRateScheduler):
    """ASHA (or any scheduler) with the flip-rate rules of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`.

    Args:
        scheduler: the wrapped scheduler, e.g. ``ASHAScheduler(max_t=E, grace_period=1, reduction_factor=3)``.
        metric, mode: as in :class:`bnn_tune.plugins.ray.FlipRateScheduler`.
        max_t: the trials' last epoch (no stop there; the late-bloomer projection's end; default: the wrapped
            scheduler's ``max_t``).
        rule: the :class:`FlipSHRule`; or give its settings as ``**rule_kwargs`` (``**bnn_tune.plugins._flip_sh.RECOMMENDED``
            gives the shipped settings).
    """

    def __init__(self, scheduler: TrialScheduler | None = None, metric: str | None = None, mode: str | None = None,
                 *, max_t: int | None = None, rule: FlipSHRule | None = None, **rule_kwargs: Any) -> None:
        if rule is not None and rule_kwargs:
            raise ValueError(f"Give either `rule` or its settings as keywords, not both (got {sorted(rule_kwargs)}).")
        if rule is not None and not isinstance(rule, FlipSHRule):
            raise TypeError(f"`rule` must be a FlipSHRule or None, but got rule={rule!r}.")
        super().__init__(scheduler, metric, mode, max_t=max_t)
        self.flip_sh = rule if rule is not None else FlipSHRule.from_kwargs(**rule_kwargs)
        self._tracker = _FlipRateTracker(self.flip_sh.collapse, self._tracker.flip_rate_key)
        self._subs: dict[str, dict[int, list[float]]] = {}
        self.protected: dict[str, str] = {}
        self._completed: dict[str, float] = {}  # final value per completed trial, sign-adjusted
        self._completed_series: dict[str, list[float]] = {}  # its log flip-rate series (for flip-band)
        self._completed_values: dict[str, list[float]] = {}  # its objective series, as reported (rank-gate)

    @property
    def schedule_rule(self) -> str:
        """The rule name of the wrapped scheduler's stops (``asha``, ``hyperband``, ``median``)."""
        return schedule_rule_of(self._scheduler)

    def __repr__(self) -> str:
        return f"FlipSHScheduler({type(self._scheduler).__name__}(...), metric={self.metric!r}, rule={self.flip_sh!r})"

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        value = _number((result or {}).get(self.metric)) if self.metric else None
        if value is not None and math.isfinite(value) and trial.trial_id not in self._tracker.stop_reasons:
            self._completed[trial.trial_id] = value if self.mode == "max" else -value
            series = self._tracker.series.get(trial.trial_id, {})
            self._completed_series[trial.trial_id] = [series[k][0] for k in sorted(series)]
            self._completed_values[trial.trial_id] = [series[k][1] for k in sorted(series)]
        super().on_trial_complete(tune_controller, trial, result)

    def view(self, trial_id: str, result: dict[str, Any]) -> TrialView:
        """Record ``result`` and return what the rule reads about the trial (framework-free)."""
        subs = result.get(SUB_FLIP_RATE_KEY)
        sub_epoch = is_sub_epoch_result(result)
        done = int(result.get("training_iteration", 0))  # epochs finished (bnn_tune.trainable reports it so)
        if isinstance(subs, (list, tuple)):  # the points of the epoch in progress (sub-epoch) or just finished
            self._subs.setdefault(trial_id, {})[done + 1 if sub_epoch else done] = [float(x) for x in subs]
        per_epoch = self._subs.get(trial_id, {})
        all_subs = tuple(x for k in sorted(per_epoch) for x in per_epoch[k])
        if sub_epoch:
            return TrialView(sub_log_flip_rates=all_subs, sub_epoch=True)
        assert self.metric and self.mode
        self._tracker.observe(trial_id, result, self.metric, self.mode)  # records the series
        series = self._tracker.series.get(trial_id, {})
        ordered = [series[k] for k in sorted(series)]
        sign = 1.0 if self.mode == "max" else -1.0
        last = self._last_epoch()
        return TrialView(
            sub_log_flip_rates=all_subs,
            log_flip_rates=tuple(x for x, _ in ordered),
            values=tuple(v for _, v in ordered),
            completed=tuple((sign * v, tuple(self._completed_series.get(t, ()))) for t, v in self._completed.items()),
            completed_values=tuple(tuple(self._completed_values.get(t, ())) for t in self._completed),
            best_value=sign * max(self._completed.values()) if self._completed else None,
            maximize=self.mode == "max",
            remaining=None if last is None else max(last - done, 0),
        )

    def _on_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if not (self.metric and self.mode):
            return TrialScheduler.CONTINUE if is_sub_epoch_result(result) else self._scheduler.on_trial_result(
                tune_controller, trial, result)
        tid = trial.trial_id
        action: list[str] = []

        def scheduler_stops() -> bool:
            action.append(self._scheduler.on_trial_result(tune_controller, trial, result))
            return action[-1] == TrialScheduler.STOP

        d = self.flip_sh.decide(self.view(tid, result), scheduler_stops, schedule_rule=self.schedule_rule,
                                scheduler_name=type(self._scheduler).__name__,
                                at=f"iteration {result.get('training_iteration')}")
        if d.stop:
            return self._stop(trial, result, d.message())
        if d.rule in ("protect", "rank-gate"):
            self.protected[tid] = d.message()
            return TrialScheduler.CONTINUE
        return action[-1] if action else TrialScheduler.CONTINUE

    def _rule_state(self) -> dict[str, Any]:
        return {**super()._rule_state(), "subs": self._subs, "protected": self.protected,
                "completed": self._completed, "completed_series": self._completed_series,
                "completed_values": self._completed_values}

    def _set_rule_state(self, state: dict[str, Any]) -> None:
        super()._set_rule_state(state)
        self._subs, self.protected = state["subs"], state["protected"]
        self._completed, self._completed_series = state["completed"], state["completed_series"]
        self._completed_values = state.get("completed_values", {})
