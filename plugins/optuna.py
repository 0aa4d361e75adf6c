"""Optuna adapters: :class:`FlipRatePruner`, the flip-rate collapse rule as an Optuna pruner.

The rule itself lives in :mod:`bnn_tune.plugins._collapse` (no framework import); this module only reads the
series from an Optuna trial and records the decision. The objective (:func:`bnn_tune.objective`) stores
the log flip rate of every epoch in ``trial.user_attrs["bnn_tune:log_flip_rate"]`` (a list, one entry
per reported step) and reports the validation accuracy with ``trial.report(val_acc, epoch)``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, PercentilePruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from bnn_tune._validate import check_range
from bnn_tune.plugins._collapse import CollapseDecision, FlipRateCollapseRule

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["FLIP_RATE_ATTR", "PRUNE_REASON_ATTR", "FlipRatePruner", "record_user_attr", "schedule_rule_of"]

from bnn_tune.plugins._outcome import FLIP_RATE_ATTR, PRUNE_REASON_ATTR, format_stop_reason  # noqa: E402

_logger = logging.getLogger("bnn_tune.pruner")


def record_user_attr(study: Study, trial: FrozenTrial, key: str, value: Any) -> bool:
    """Set a user attribute of a running trial from code that only has its :class:`FrozenTrial`.

    Pruners receive a frozen copy of the trial; the attribute is written through the study's storage
    (in-memory, RDB and journal storages all implement ``set_trial_user_attr``). Returns False (and
    logs) when the storage refuses, e.g. because the trial already finished.
    """
    try:
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    except Exception as exc:  # never let bookkeeping break the study
        _logger.warning("could not record user attr %r of trial %d: %s", key, trial.number, exc)
        return False
    return True


def schedule_rule_of(pruner: BasePruner) -> str:
    """The rule name a stop of ``pruner`` gets: ``hyperband``, ``median`` (median/percentile) or ``asha``.

    Example:
        >>> import optuna
        >>> schedule_rule_of(optuna.pruners.HyperbandPruner()), schedule_rule_of(optuna.pruners.MedianPruner())
        ('hyperband', 'median')
    """
    if isinstance(pruner, HyperbandPruner):
        return "hyperband"
    if isinstance(pruner, (MedianPruner, PercentilePruner)):
        return "median"
    return "asha"


def _is_check_step(step: int, steps: Any, n_warmup_steps: int, interval_steps: int) -> bool:
    """Optuna's interval rule: check at the first reported step of every interval after warm-up."""
    nearest_lower = (step - n_warmup_steps) // interval_steps * interval_steps + n_warmup_steps
    second_last = max((s for s in steps if s != step), default=-1)
    return second_last < nearest_lower


class FlipRatePruner(BasePruner):
    """Prune trials whose flip rate collapsed before they learned.

    The decision is :class:`bnn_tune.plugins.FlipRateCollapseRule`'s: after warm-up, a trial is pruned when its
    log flip rate stayed at or below ``floor`` (or ``relative_drop`` below its own peak) for
    ``patience`` consecutive reports while its intermediate value did not improve by more than
    ``min_improvement``; a trial whose flip rate never rose above the floor is pruned even if its
    accuracy creeps up (only its real-valued layers learn). A decaying flip rate with a still-improving
    value (a gamma schedule, a converging run) is kept, and so is the best trial of the study: a trial
    whose best intermediate value equals or beats the best completed trial is never pruned. When it
    prunes, the pruner writes the reason to the trial's user attr ``"bnn_tune:prune_reason"`` and logs it.

    The flip-rate series is read from ``trial.user_attrs[flip_rate_key]`` (a list, entry ``i`` belongs to
    the ``i``-th reported step); the values from ``trial.intermediate_values``. A trial without the
    attribute is never pruned by the flip rule.

    With ``wrapped_pruner`` the pruner composes like :class:`optuna.pruners.PatientPruner`: by default
    (``combine="and"``) the wrapped pruner is asked only when the flip rule says prune; with
    ``combine="or"`` a trial is pruned when either says so (e.g. collapsed runs and below-median runs).

    Args:
        wrapped_pruner: another pruner to compose with, or None.
        n_startup_trials: pruning is disabled until this many trials completed in the study.
        n_warmup_steps: pruning is disabled while the trial's last step is below this value, and for its
            first ``n_warmup_steps`` reports (steps counted from 1, like epochs, or from 0, the first
            judged report is number ``n_warmup_steps + 1``, as in :class:`bnn_tune.plugins.ray.FlipRateStopper`).
        interval_steps: interval in steps between pruning checks, offset by the warm-up steps.
        patience: consecutive collapsed reports needed to prune.
        floor: log flip rate (``log(flip_rate + e^-9)``, in ``(-9, 0]``) at or below which the binary
            weights count as frozen.
        relative_drop: fraction in (0, 1) by which the flip rate must fall below its running peak to count
            as collapsed above the floor; None disables it.
        min_improvement: improvement of the intermediate value over the patience window that counts
            as still learning.
        combine: ``"and"`` or ``"or"``, how the wrapped pruner's answer combines with the flip rule.
        flip_rate_key: user attr holding the log flip-rate series.
        margin: a trial whose best intermediate value is within ``margin`` of the best completed trial
            is not pruned (the best-trial guard widened by the metric's noise; ``bnn-tune search`` uses
            0.02 of validation accuracy).

    Example:
        >>> import optuna
        >>> from bnn_tune.plugins.optuna import FlipRatePruner
        >>> study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=1))
        >>> trial = study.ask()
        >>> for epoch in (1, 2, 3):
        ...     trial.set_user_attr("bnn_tune:log_flip_rate", [-9.0] * epoch)
        ...     trial.report(0.1, epoch)
        >>> trial.should_prune()
        True

    References:
        Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural Network
        Optimization", NeurIPS 2019 (eq. 7 and Fig. 1).
    """

    def __init__(
        self,
        wrapped_pruner: BasePruner | None = None,
        n_startup_trials: int = 0,
        n_warmup_steps: int = 2,
        interval_steps: int = 1,
        patience: int = 2,
        floor: float = -8.0,
        relative_drop: float | None = 0.99,
        min_improvement: float = 0.0,
        *,
        combine: str = "and",
        flip_rate_key: str = FLIP_RATE_ATTR,
        margin: float = 0.0,
    ) -> None:
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise TypeError(
                f"`wrapped_pruner` must be an optuna BasePruner or None, but got "
                f"wrapped_pruner={wrapped_pruner!r}."
            )
        check_range("n_startup_trials", n_startup_trials, 0, integer=True)
        check_range("n_warmup_steps", n_warmup_steps, 0, integer=True)
        check_range("interval_steps", interval_steps, 1, integer=True)
        if combine not in ("and", "or"):
            raise ValueError(f"`combine` must be 'and' or 'or', but got combine={combine!r}.")
        if not isinstance(flip_rate_key, str) or not flip_rate_key:
            raise ValueError(f"`flip_rate_key` must be a non-empty string, but got flip_rate_key={flip_rate_key!r}.")
        # the rule validates patience, floor, relative_drop, min_improvement. Warm-up is checked twice: as
        # Optuna's step value (step < n_warmup_steps) and by the rule as a count of reports, so the first
        # n_warmup_steps reports are never judged whether steps count from 0 or, as bnn_tune.objective's
        # epochs, from 1 -- the decision falls at the same epoch as bnn_tune.plugins.ray's FlipRateStopper.
        self._rule = FlipRateCollapseRule(
            n_warmup_steps=n_warmup_steps, patience=patience, floor=floor, relative_drop=relative_drop,
            min_improvement=min_improvement, margin=margin,
        )
        self._wrapped_pruner = wrapped_pruner
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps
        self._interval_steps = interval_steps
        self._combine = combine
        self._flip_rate_key = flip_rate_key

    @property
    def rule(self) -> FlipRateCollapseRule:
        """The framework-free rule this pruner applies."""
        return self._rule

    def __repr__(self) -> str:
        r = self._rule
        wrapped = "None" if self._wrapped_pruner is None else f"{type(self._wrapped_pruner).__name__}(...)"
        return (
            f"FlipRatePruner(wrapped_pruner={wrapped}, n_startup_trials={self._n_startup_trials}, "
            f"n_warmup_steps={self._n_warmup_steps}, interval_steps={self._interval_steps}, patience={r.patience}, "
            f"floor={r.floor}, relative_drop={r.relative_drop}, min_improvement={r.min_improvement}, margin={r.margin}, "
            f"combine={self._combine!r}, flip_rate_key={self._flip_rate_key!r})"
        )

    # ------------------------------------------------------------------ decision
    def decide(self, study: Study, trial: FrozenTrial) -> CollapseDecision:
        """The flip rule's decision for ``trial`` (ignores the wrapped pruner; records nothing)."""
        step = trial.last_step
        if step is None:
            return CollapseDecision(False, "no value reported yet")
        if step < self._n_warmup_steps:
            return CollapseDecision(False, f"warm-up: step {step} < n_warmup_steps={self._n_warmup_steps}")
        if not _is_check_step(step, trial.intermediate_values.keys(), self._n_warmup_steps, self._interval_steps):
            return CollapseDecision(False, f"step {step} is not a check step (interval_steps={self._interval_steps})")
        series = trial.user_attrs.get(self._flip_rate_key)
        if not series:
            return CollapseDecision(False, f"no flip-rate series in user attr {self._flip_rate_key!r}")
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < self._n_startup_trials:
            return CollapseDecision(
                False, f"startup: {len(completed)} of n_startup_trials={self._n_startup_trials} trials completed"
            )
        maximize = study.direction == StudyDirection.MAXIMIZE
        finished = [t.value for t in completed if t.value is not None and math.isfinite(t.value)]
        best_value = (max(finished) if maximize else min(finished)) if finished else None
        iv = trial.intermediate_values
        values = [iv[s] for s in sorted(iv)]
        return self._rule.decide(list(series), values, best_value=best_value, maximize=maximize)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        decision = self.decide(study, trial)
        reason = format_stop_reason("flip-collapse", decision.reason)
        if self._wrapped_pruner is None:
            stop = decision.stop
        elif self._combine == "and":
            stop = decision.stop and self._wrapped_pruner.prune(study, trial)
            if stop:
                reason = f"{reason} (confirmed by {type(self._wrapped_pruner).__name__})"
        elif decision.stop:
            stop = True
        else:
            stop = self._wrapped_pruner.prune(study, trial)
            if stop:
                reason = format_stop_reason(schedule_rule_of(self._wrapped_pruner),
                                            f"{type(self._wrapped_pruner).__name__} pruned it at step {trial.last_step}")
        if stop:
            record_user_attr(study, trial, PRUNE_REASON_ATTR, reason)
            _logger.info("trial %d pruned at step %s: %s", trial.number, trial.last_step, reason)
        return stop

