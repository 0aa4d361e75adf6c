"""The flip-rate collapse rule, free of any search framework (no optuna or ray import).

Bop's two hyperparameters act on one observable, the **flip rate** (fraction of binary weights whose
sign changes per optimizer step; ``log_flip_rate = log(flip_rate + e^-9)``, Helwegen et al. 2019,
eq. 7): a very low adaptivity rate gamma or a very high threshold tau gives a near-zero flip rate and
extremely slow learning. Such a run wastes its budget and should be stopped early. A flip rate that
decays *late* while the accuracy keeps improving (gamma decayed by a schedule, a converging run) is
normal and must be left alone. :class:`FlipRateCollapseRule` tells the two apart; the Optuna pruner
(:class:`bnn_tune.plugins.optuna.FlipRatePruner`) and the Ray stopper/scheduler (``bnn_tune.plugins.ray``) are thin
adapters around it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bnn_tune._validate import check_range

__all__ = ["CollapseDecision", "FlipRateCollapseRule"]


@dataclass(frozen=True)
class CollapseDecision:
    """What :meth:`FlipRateCollapseRule.decide` concluded.

    Attributes:
        stop: True when the run should be stopped (pruned).
        reason: one sentence saying why (also when ``stop`` is False), for logs and user attrs.
    """

    stop: bool
    reason: str

    def __bool__(self) -> bool:
        return self.stop


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True, kw_only=True)
class FlipRateCollapseRule:
    """Decide whether a run's flip rate collapsed before the run learned.

    The rule looks at the per-report series of log flip rates and of the objective (e.g. validation
    accuracy). A report counts as *collapsed* when its log flip rate is at or below ``floor`` (the binary
    weights are essentially frozen), or, when ``relative_drop`` is set, when the flip rate fell by at least
    that fraction below the highest flip rate seen at earlier reports. The run is stopped when all of
    the following hold:

    1. more than ``n_warmup_steps`` reports exist (warm-up: the first reports are never judged);
    2. the last ``patience`` reports are all collapsed;
    3. the objective did not improve by more than ``min_improvement`` over those ``patience`` reports
       compared with the best value before them -- a flip rate that decays while the accuracy still
       improves is convergence (e.g. gamma decayed by a schedule), not collapse. This condition is
       waived when the flip rate never rose above ``floor`` at any report: then the binary weights never
       trained, and whatever the accuracy gains comes from the real-valued layers alone;
    4. the run is not the best of the sweep: when ``best_value`` (the best objective of the other
       trials) is given, a run whose own best value equals or beats it -- or comes within ``margin`` of
       it -- is never stopped.

    A run that has converged -- flip rate decayed below the floor *and* objective flat for ``patience``
    reports -- can still be stopped when it trails the best trial: its binary weights no longer move, so
    the remaining epochs are unlikely to make it the best (raise ``patience`` to be more lenient).
    :func:`bnn_tune.objective` never asks after the last epoch.

    Non-finite entries (NaN) are ignored: a NaN flip rate counts neither as collapsed nor as healthy,
    a NaN objective value never counts as an improvement. Only the common prefix of the two series is
    used when their lengths differ.

    A frozen dataclass: the settings are its fields (keyword-only), checked in ``__post_init__``; equal
    settings compare equal.

    Args:
        n_warmup_steps: number of reports that are never judged (>= 0).
        patience: number of consecutive collapsed reports needed to stop (>= 1).
        floor: log flip rate at or below which the binary weights count as frozen; ``log(flip_rate +
            e^-9)`` lies in ``[-9, log(1 + e^-9)]``, so the floor must be in ``(-9, 0]``. The default
            -8.0 is a flip rate of about 2e-4 per step.
        relative_drop: fraction in ``(0, 1)`` by which the flip rate must fall below its running peak to
            count as collapsed even above the floor (0.99 = a hundredfold drop); ``None`` disables it.
        min_improvement: improvement of the objective (in its own units) over the patience window
            that counts as "still learning" (>= 0).
        margin: a run whose best value is within ``margin`` (objective units, >= 0) of
            ``best_value`` counts as a contender and is not stopped -- the best-of-sweep guard widened by
            the metric's noise, so converged runs near the top (e.g. a decayed gamma schedule) finish.

    Example:
        >>> rule = FlipRateCollapseRule(n_warmup_steps=1, patience=2)
        >>> rule.decide([-8.9, -9.0, -9.0], [0.10, 0.11, 0.11]).stop
        True
        >>> rule.decide([-5.0, -5.5, -6.0], [0.50, 0.70, 0.80]).stop
        False

    References:
        Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural Network
        Optimization", NeurIPS 2019 (Fig. 1: low gamma / high tau give near-zero flip rates and
        extremely slow learning).
    """

    n_warmup_steps: int = 2
    patience: int = 2
    floor: float = -8.0
    relative_drop: float | None = 0.99
    min_improvement: float = 0.0
    margin: float = 0.0

    def __post_init__(self) -> None:
        check_range("n_warmup_steps", self.n_warmup_steps, 0, integer=True)
        check_range("patience", self.patience, 1, integer=True)
        check_range("floor", self.floor, -9.0, 0.0, low_open=True, what="a log flip rate")
        check_range("relative_drop", self.relative_drop, 0.0, 1.0, low_open=True, high_open=True, none_ok=True)
        check_range("min_improvement", self.min_improvement, 0.0)
        check_range("margin", self.margin, 0.0)
        for name in ("floor", "min_improvement", "margin"):  # ints given for floats compare and print as floats
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.relative_drop is not None:
            object.__setattr__(self, "relative_drop", float(self.relative_drop))

    # ------------------------------------------------------------------ the rule
    def _collapsed(self, lfr: Sequence[float]) -> list[bool | None]:
        """Per report: True (collapsed), False (healthy) or None (non-finite, unknown)."""
        out: list[bool | None] = []
        peak = -math.inf
        drop = None if self.relative_drop is None else math.log1p(-self.relative_drop)
        for x in lfr:
            if not _finite(x):
                out.append(None)
                continue
            x = float(x)
            below_peak = drop is not None and peak > -math.inf and x <= peak + drop
            out.append(x <= self.floor or below_peak)
            peak = max(peak, x)
        return out

    def decide(
        self,
        log_flip_rates: Sequence[float],
        values: Sequence[float],
        *,
        best_value: float | None = None,
        maximize: bool = True,
    ) -> CollapseDecision:
        """Apply the rule to one run.

        Args:
            log_flip_rates: log flip rate at each report so far, oldest first.
            values: objective value at each report (same order), e.g. validation accuracy.
            best_value: best objective value among the other trials of the sweep (None: unknown).
            maximize: whether larger objective values are better.

        Returns:
            :class:`CollapseDecision` with ``stop`` and a one-sentence ``reason``.
        """
        n = min(len(log_flip_rates), len(values))
        lfr = [float(x) for x in list(log_flip_rates)[:n]]
        vals = [float(v) if _finite(v) else math.nan for v in list(values)[:n]]
        if n <= self.n_warmup_steps:
            return CollapseDecision(False, f"warm-up: {n} of {self.n_warmup_steps} reports seen")
        if n < self.patience:
            return CollapseDecision(False, f"only {n} reports, fewer than patience={self.patience}")
        collapsed = self._collapsed(lfr)
        window = collapsed[-self.patience:]
        if not all(c is True for c in window):
            return CollapseDecision(False, f"flip rate is not collapsed (log flip rate {lfr[-1]:.2f})")

        sign = 1.0 if maximize else -1.0
        finite_vals = [sign * v for v in vals if math.isfinite(v)]
        own_best = max(finite_vals) if finite_vals else -math.inf
        if best_value is not None and _finite(best_value) and own_best >= sign * float(best_value):
            return CollapseDecision(
                False, f"flip rate collapsed but this run is the best of the sweep ({sign * own_best:.4g})"
            )
        if best_value is not None and _finite(best_value) and own_best >= sign * float(best_value) - self.margin:
            return CollapseDecision(
                False, f"flip rate collapsed but this run ({sign * own_best:.4g}) is within margin={self.margin:g} "
                f"of the best of the sweep ({float(best_value):.4g})"
            )

        first = n - self.patience  # index of the first report in the window
        ever_active = any(_finite(x) and x > self.floor for x in lfr)
        before = [sign * v for v in vals[:first] if math.isfinite(v)]
        inside = [sign * v for v in vals[first:] if math.isfinite(v)]
        improvement = (max(inside) - max(before)) if (before and inside) else -math.inf
        if ever_active and improvement > self.min_improvement:
            return CollapseDecision(
                False,
                f"flip rate decayed (log flip rate {lfr[-1]:.2f}) but the objective still improves "
                f"(+{improvement:.4g} over the last {self.patience} reports): converging, not collapsed",
            )
        peak = max((x for x in lfr if _finite(x)), default=math.nan)
        if not ever_active:
            why = (f"the flip rate never rose above the floor (log flip rate <= {self.floor:g} at every report, "
                   f"peak {peak:.2f}): the binary weights are frozen")
        else:
            first_bad = next(i for i in range(first, n) if collapsed[i])
            level = (f"at or below the floor {self.floor:g}" if lfr[-1] <= self.floor
                     else f"more than {self.relative_drop:.0%} below its peak {peak:.2f}")
            why = (f"the flip rate collapsed (log flip rate {lfr[-1]:.2f}, {level}) for {self.patience} reports "
                   f"since report {first_bad + 1} while the objective did not improve by more than "
                   f"{self.min_improvement:g}")
        return CollapseDecision(
            True, f"{why}; best value {sign * own_best:.4g} after {n} reports (too low gamma or too high threshold?)"
        )
