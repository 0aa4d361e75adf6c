"""Optuna adapter of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`: :class:`FlipSHPruner`, flip rate + successive halving.

The objective (:func:`bnn_tune.objective`, the hpobench replay) stores the log flip rate of every epoch in
``trial.user_attrs["bnn_tune:log_flip_rate"]`` and, between epochs, the sub-epoch log flip rates (every
1/8 epoch) in ``trial.user_attrs["bnn_tune:sub_log_flip_rate"]``, asking ``should_prune`` after each sub-epoch
point of the first epoch (before any ``trial.report``: ``last_step`` is None), where only ``flip-early``
applies; at every epoch report the whole sub-epoch series is judged again. The pruner reads these into a
:class:`~bnn_tune.plugins._flip_sh.TrialView`, asks :meth:`FlipSHRule.decide` with the wrapped pruner's
verdict (asked only when the rule's order reaches it) and records the decision.

Hyperband: Optuna's samplers see only the trials of the current trial's bracket when the study's pruner
*is* a ``HyperbandPruner`` (``optuna.pruners._filter_study``). ``FlipSHPruner(HyperbandPruner(...))``
therefore returns a :class:`FlipHyperbandPruner`, a ``HyperbandPruner`` whose bracket bookkeeping is the
wrapped pruner's, so TPE samples exactly as with the plain ``HyperbandPruner``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.pruners import BasePruner, HyperbandPruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from bnn_tune.plugins._flip_sh import FlipSHRule, RuleDecision, TrialView
from bnn_tune.plugins._outcome import (
    FLIP_RATE_ATTR,
    PROTECTED_ATTR,
    PRUNE_REASON_ATTR,
    SUB_FLIP_RATE_ATTR,
)
from bnn_tune.plugins.optuna import record_user_attr, schedule_rule_of

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["PROTECTED_ATTR", "SUB_FLIP_RATE_ATTR", "FlipHyperbandPruner", "FlipSHPruner"]

_logger = logging.getLogger("bnn_tune.pruner")


class FlipSHPruner(BasePruner):
    """Successive halving (or Hyperband) with the flip-rate rules of :class:`bnn_tune.plugins._flip_sh.FlipSHRule`.

    Order of a check (:meth:`FlipSHRule.decide`): ``flip-early`` (sub-epoch flip rate never above the floor)
    -> at epoch reports, ``flip-collapse`` -> ``flip-band`` -> the wrapped pruner; when it says prune,
    ``protect`` may keep a late bloomer (rising objective, or with ``band.protect`` a flip rate inside the best
    trials' band). A pruned trial's user attr ``"bnn_tune:prune_reason"`` is ``"<rule>: <reason>"`` with rule
    ``flip-early``, ``flip-collapse``, ``flip-band`` or the wrapped pruner's (``asha``, ``hyperband``,
    ``median``); a protected trial gets ``"bnn_tune:protected"``. Around a ``HyperbandPruner`` the instance is a
    :class:`FlipHyperbandPruner` (see the module docstring).

    Args:
        wrapped_pruner: default ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``.
        max_steps: the trials' reports (epochs): no stop at the last one, and the late-bloomer projection's
            end; default: the most reports of a completed trial (unknown until one completes).
        rule: the :class:`FlipSHRule`; or give its settings as ``**rule_kwargs`` (``floor``, ``sub_patience``,
            ``band_width``...; ``**bnn_tune.plugins._flip_sh.RECOMMENDED`` gives the shipped settings).
    """

    judges_sub_epoch = True
    """Tells the objectives to ask this pruner every 1/8 of the first epoch, before any report."""

    def __new__(cls, wrapped_pruner: BasePruner | None = None, *args: Any, **kwargs: Any) -> FlipSHPruner:
        if cls is FlipSHPruner and isinstance(wrapped_pruner, HyperbandPruner):
            cls = FlipHyperbandPruner
        return super().__new__(cls)

    def __init__(self, wrapped_pruner: BasePruner | None = None, *, max_steps: int | None = None,
                 rule: FlipSHRule | None = None, **rule_kwargs: Any) -> None:
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise TypeError(f"`wrapped_pruner` must be an optuna BasePruner or None, but got {wrapped_pruner!r}.")
        if rule is not None and rule_kwargs:
            raise ValueError(f"Give either `rule` or its settings as keywords, not both (got {sorted(rule_kwargs)}).")
        if rule is not None and not isinstance(rule, FlipSHRule):
            raise TypeError(f"`rule` must be a FlipSHRule or None, but got rule={rule!r}.")
        self._wrapped = wrapped_pruner or optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        self.rule = rule if rule is not None else FlipSHRule.from_kwargs(**rule_kwargs)
        self._max_steps = max_steps

    @property
    def wrapped_pruner(self) -> BasePruner:
        """The successive-halving pruner whose verdict the rule takes."""
        return self._wrapped

    @property
    def schedule_rule(self) -> str:
        """The rule name of the wrapped pruner's stops (``asha``, ``hyperband``, ``median``)."""
        return schedule_rule_of(self._wrapped)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self._wrapped).__name__}(...), rule={self.rule!r})"

    def view(self, study: Study, trial: FrozenTrial) -> TrialView:
        """What the rule reads about ``trial`` (framework-free)."""
        subs = tuple(float(x) for x in trial.user_attrs.get(SUB_FLIP_RATE_ATTR) or ())
        if trial.last_step is None:  # a sub-epoch check inside the first epoch
            return TrialView(sub_log_flip_rates=subs, sub_epoch=True)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        maximize = study.direction == StudyDirection.MAXIMIZE
        done = [t for t in completed if t.value is not None and math.isfinite(t.value)]
        finished = [t.value for t in done if t.value is not None]
        iv = trial.intermediate_values
        # epochs are counted as reports (a recipe's twin epochs shift the step, not the count)
        max_steps = self._max_steps or max((len(t.intermediate_values) for t in completed), default=0) or None
        return TrialView(
            sub_log_flip_rates=subs,
            log_flip_rates=tuple(float(x) for x in trial.user_attrs.get(FLIP_RATE_ATTR) or ()),
            values=tuple(float(iv[s]) for s in sorted(iv)),
            completed=tuple((float(t.value), tuple(float(x) for x in t.user_attrs.get(FLIP_RATE_ATTR) or ()))
                            for t in done if t.value is not None),
            completed_values=tuple(tuple(float(t.intermediate_values[s]) for s in sorted(t.intermediate_values))
                                   for t in done if t.value is not None),
            best_value=(max(finished) if maximize else min(finished)) if finished else None,
            maximize=maximize,
            remaining=None if max_steps is None else max(max_steps - len(iv), 0),
        )

    def _scheduler_prunes(self, study: Study, trial: FrozenTrial) -> bool:
        return self._wrapped.prune(study, trial)

    def decide(self, study: Study, trial: FrozenTrial) -> RuleDecision:
        """The decision for ``trial`` (asks the wrapped pruner only when the rule's order reaches it; records
        nothing)."""
        return self.rule.decide(self.view(study, trial), lambda: self._scheduler_prunes(study, trial),
                                schedule_rule=self.schedule_rule,
                                scheduler_name=type(self._wrapped).__name__, at=f"step {trial.last_step}")

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        d = self.decide(study, trial)
        if d.stop:
            record_user_attr(study, trial, PRUNE_REASON_ATTR, d.message())
            _logger.info("trial %d pruned at step %s: %s", trial.number, trial.last_step, d.message())
        elif d.rule in ("protect", "rank-gate"):
            record_user_attr(study, trial, PROTECTED_ATTR, d.message())
        return d.stop


class FlipHyperbandPruner(FlipSHPruner, HyperbandPruner):
    """:class:`FlipSHPruner` around a ``HyperbandPruner``, itself a ``HyperbandPruner`` for Optuna's samplers.

    ``optuna.pruners._filter_study`` hands a sampler only the trials of the current trial's bracket when
    ``isinstance(study.pruner, HyperbandPruner)``, through ``pruner._get_bracket_id`` and
    ``pruner._create_bracket_study``; both are the wrapped pruner's here, and the wrapped pruner is
    initialised at the first ``prune`` call as a plain ``HyperbandPruner`` would be (whatever the flip rules
    decide), so the sampler sees the same bracket history as with ``HyperbandPruner`` alone.
    ``FlipSHPruner(HyperbandPruner(...))`` returns an instance of this class.

    Example:
        >>> import optuna
        >>> p = FlipSHPruner(optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3))
        >>> type(p).__name__, isinstance(p, optuna.pruners.HyperbandPruner), p.schedule_rule
        ('FlipHyperbandPruner', True, 'hyperband')
    """

    def __init__(self, wrapped_pruner: HyperbandPruner | None = None, *, max_steps: int | None = None,
                 rule: FlipSHRule | None = None, **rule_kwargs: Any) -> None:
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, HyperbandPruner):
            raise TypeError(f"`wrapped_pruner` must be an optuna HyperbandPruner or None, but got {wrapped_pruner!r}.")
        # HyperbandPruner.__init__ is not run: every Hyperband attribute Optuna reads is the wrapped pruner's
        FlipSHPruner.__init__(self, wrapped_pruner or HyperbandPruner(min_resource=1, reduction_factor=3),
                              max_steps=max_steps, rule=rule, **rule_kwargs)

    def _hyperband(self, study: Study) -> HyperbandPruner:
        hb = self._wrapped
        assert isinstance(hb, HyperbandPruner)
        if not hb._pruners:  # a plain HyperbandPruner initialises at its first prune call
            hb._try_initialization(study)
        return hb

    def _scheduler_prunes(self, study: Study, trial: FrozenTrial) -> bool:
        return self._hyperband(study).prune(study, trial)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        if trial.last_step is not None:  # where the plain pruner is asked: at epoch reports
            self._hyperband(study)
        return FlipSHPruner.prune(self, study, trial)

    def _get_bracket_id(self, study: Study, trial: FrozenTrial) -> int:
        return self._wrapped._get_bracket_id(study, trial)  # type: ignore[attr-defined]

    def _create_bracket_study(self, study: Study, bracket_id: int) -> Study:
        return self._wrapped._create_bracket_study(study, bracket_id)  # type: ignore[attr-defined]
