"""Optuna adapter of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`: :class:`FlipSHPruner`, flip rate + successive halving.

The objective (:func:`bnn_tune.objective`, the hpobench replay) stores the log flip rate of every epoch in
``trial.user_attrs["bnn_tune:log_flip_rate"]`` and, between epochs, the sub-epoch log flip rates (every
1/8 epoch) in ``trial.user_attrs["bnn_tune:sub_log_flip_rate"]``, asking ``should_prune`` after each sub-epoch
point; the pruner tells a sub-epoch call from an epoch
call and applies only the ``flip-early`` rule there. Sub-epoch checks happen inside the first epoch
(before any ``trial.report``: ``last_step`` is None), where they can save most of successive halving's
first rung; at every epoch report the whole sub-epoch series is judged again.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from bnn_tune.plugins._flip_sh import FlipSHRule, RuleDecision
from bnn_tune.plugins.optuna import FLIP_RATE_ATTR, PRUNE_REASON_ATTR, record_user_attr

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["PROTECTED_ATTR", "SUB_FLIP_RATE_ATTR", "FlipSHPruner"]

from bnn_tune.plugins._outcome import PROTECTED_ATTR, SUB_FLIP_RATE_ATTR  # noqa: E402

_logger = logging.getLogger("bnn_tune.pruner")


class FlipSHPruner(BasePruner):
    """Successive halving (or Hyperband) with the flip-rate rules of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`.

    Order of a check: ``flip-early`` (sub-epoch flip rate never above the floor) -> at epoch reports,
    ``flip-collapse`` -> ``flip-band`` -> the wrapped pruner; when it says prune, ``protect`` may keep a late
    bloomer (rising objective, or with ``band_protect`` a flip rate inside the best trials' band). A
    pruned trial's user attr ``"bnn_tune:prune_reason"`` is ``"<rule>: <reason>"`` with rule ``flip-early``,
    ``flip-collapse``, ``flip-band`` or ``asha`` (the wrapped pruner); a protected trial gets ``"bnn_tune:protected"``.

    Args:
        wrapped_pruner: default ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``.
        max_steps: the trial's last step (epochs), for the late-bloomer projection; default: the largest
            last step of a completed trial (or 0 until one completes: no projection limit).
        **rule_kwargs: :class:`FlipSHRule` arguments (``floor``, ``sub_patience``, ``patience``, ``margin``,
            ``window``, ``min_rise``...).
            ``**bnn_tune.plugins._flip_sh.RECOMMENDED`` gives the ``flip+asha`` settings of the hpobench evaluation
            (the band rule with band protection).
    """

    judges_sub_epoch = True
    """Tells the objectives to ask this pruner every 1/8 of the first epoch, before any report."""

    def __init__(self, wrapped_pruner: BasePruner | None = None, *, max_steps: int | None = None,
                 **rule_kwargs: Any) -> None:
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise TypeError(f"`wrapped_pruner` must be an optuna BasePruner or None, but got {wrapped_pruner!r}.")
        self._wrapped = wrapped_pruner or optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        self.rule = FlipSHRule(**rule_kwargs)
        self._max_steps = max_steps

    def __repr__(self) -> str:
        return f"FlipSHPruner({type(self._wrapped).__name__}(...), rule={self.rule!r})"

    def decide(self, study: Study, trial: FrozenTrial) -> RuleDecision:
        """The decision for ``trial`` (asks the wrapped pruner at epoch reports; records nothing)."""
        step = trial.last_step or 0
        subs = trial.user_attrs.get(SUB_FLIP_RATE_ATTR) or []
        if subs:
            early = self.rule.frozen_early(subs)
            if early.stop:
                return early
        if trial.last_step is None:  # a sub-epoch check inside the first epoch: only flip-early applies
            return RuleDecision(False, "flip-early", "sub-epoch check: the flip rate rose above the floor")
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        maximize = study.direction == StudyDirection.MAXIMIZE
        finished = [t.value for t in completed if t.value is not None and math.isfinite(t.value)]
        best_value = (max(finished) if maximize else min(finished)) if finished else None
        iv = trial.intermediate_values
        values = [iv[s] for s in sorted(iv)]
        series = list(trial.user_attrs.get(FLIP_RATE_ATTR) or [])
        if series:
            d = self.rule.collapsed(series, values, best_value=best_value, maximize=maximize)
            if d.stop:
                return d
        refs = [(t.value, list(t.user_attrs.get(FLIP_RATE_ATTR) or [])) for t in completed
                if t.value is not None and math.isfinite(t.value)]
        if series:
            d = self.rule.out_of_band(series, refs, maximize=maximize)
            if d.stop:
                return d
        if not self._wrapped.prune(study, trial):
            return RuleDecision(False, "asha", f"{type(self._wrapped).__name__} promotes or continues")
        max_steps = self._max_steps or max((t.last_step or 0 for t in completed), default=0)
        keep = self.rule.protect(series, values, remaining=max(max_steps - step, 0), best_value=best_value,
                                 maximize=maximize) if series else RuleDecision(True, "asha", "no flip-rate series")
        if not keep.stop:
            return keep
        band_keep = self.rule.in_band(series, refs, maximize=maximize) if series else keep
        if not band_keep.stop:
            return band_keep
        return RuleDecision(True, "asha", f"{type(self._wrapped).__name__} stopped it at step {step} ({keep.reason})")

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        d = self.decide(study, trial)
        if d.stop:
            record_user_attr(study, trial, PRUNE_REASON_ATTR, d.message())
            _logger.info("trial %d pruned at step %s: %s", trial.number, trial.last_step, d.message())
        elif d.rule == "protect":
            record_user_attr(study, trial, PROTECTED_ATTR, d.message())
        return d.stop

