"""The flip-rate rule composed with successive halving, free of any search framework.

:class:`FlipSHRule` adds three decisions to a successive-halving scheduler (ASHA / Hyperband), each with a
name and a one-sentence reason so a report can say what each rule saved:

* ``flip-early`` (sub-epoch): a run whose log flip rate has been at or below ``floor`` at every sub-epoch
  report so far, for at least ``sub_patience`` reports, never trained its binary weights (a Bop run with
  pi = -9 after an eighth of an epoch does not recover: Helwegen et al. 2019, Fig. 1) -- stop it before
  it spends a whole epoch on successive halving's first rung. A run that was ever active is never
  judged here, so a late, legitimate decay (gamma schedule, BNEW's lock) is left to the other rules.
* ``flip-collapse`` (epoch): :class:`bnn_tune.plugins.FlipRateCollapseRule` (collapsed for ``patience`` reports while
  the objective does not improve, and not within ``margin`` of the best completed trial; never before a
  trial completed).
* ``protect`` (epoch): when successive halving wants to stop a run, keep it if it is a late bloomer: its
  flip rate is healthy (above ``floor`` and not ``relative_drop`` below its own peak) *and* its objective
  rose by at least ``min_rise`` per report over the last ``window`` reports *and* that slope, carried over
  the remaining reports, would reach the best completed value minus ``margin``.
* ``flip-band`` (epoch, off unless ``band_width`` is set): once ``band_min_ref`` trials completed, the log
  flip rate a run shows at epoch ``e`` is compared with the flip rates the ``band_top`` best completed
  trials showed at the same epoch; a run more than ``band_width`` below that band (frozen) or above it
  (noisy plateau: Helwegen et al. 2019, Fig. 1 -- too high a flip rate never settles) is stopped, from
  epoch ``band_warmup`` on. With ``band_protect`` a run *inside* the band is also kept when successive
  halving would stop it (it flips like the winners did at that epoch: a late bloomer on this task).

Every other decision is successive halving's (``asha``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bnn_tune.plugins._collapse import CollapseDecision, FlipRateCollapseRule

__all__ = ["RECOMMENDED", "FlipSHRule", "RuleDecision"]

RECOMMENDED: dict[str, object] = {"band_width": 2.0, "band_protect": True, "band_protect_width": 1.0}
"""The ``flip+asha`` settings (:class:`FlipSHRule` keyword arguments over its defaults), chosen on hpobench replay
seeds 40-79 (TPE, 60 trials, all four tasks) among 9 variants tuned on seeds 0-79; held-out figures in BENCHMARKS.md "BNN-HPO"."""


@dataclass(frozen=True)
class RuleDecision:
    """A decision with the name of the rule that made it (``flip-early``, ``flip-collapse``, ``protect``...)."""

    stop: bool
    rule: str
    reason: str

    def __bool__(self) -> bool:
        return self.stop

    def message(self) -> str:
        """``"<rule>: <reason>"`` -- the form stored as the prune/stop reason."""
        return f"{self.rule}: {self.reason}"


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class FlipSHRule:
    """Flip-rate decisions around successive halving (see the module docstring).

    Args:
        floor: log flip rate (``log(flip_rate + e^-9)``, in ``(-9, 0]``) at or below which the binary weights
            count as frozen.
        sub_patience: sub-epoch reports at or below the floor (with none above) needed for ``flip-early``.
        patience, relative_drop, min_improvement, margin: the collapse rule's (``flip-collapse``); ``margin``
            is also the late-bloomer projection's slack.
        window: reports over which a late bloomer's rise is measured (>= 1).
        min_rise: objective rise per report (objective units) that counts as blooming; ``None`` disables
            ``protect``.
        use_collapse: whether ``flip-collapse`` runs (False: only ``flip-early`` and ``protect``).
        band_width: half-width slack (log flip-rate units) around the best completed trials' band for
            ``flip-band``; ``None`` turns the band rule off.
        band_top: how many of the best completed trials span the band (>= 1).
        band_min_ref: completed trials with a flip rate at that epoch needed before the band judges (>= 1).
        band_warmup: first epoch (report) at which ``flip-band`` may stop a run (>= 1).
        band_protect: keep a run successive halving stops when its flip rate is inside the band.
        band_protect_width: slack (log units, >= 0) around the band for ``band_protect``.

    Example:
        >>> rule = FlipSHRule(sub_patience=1)
        >>> rule.frozen_early([-9.0]).stop
        True
        >>> rule.frozen_early([-4.0, -9.0]).stop
        False
    """

    def __init__(
        self,
        *,
        floor: float = -8.0,
        sub_patience: int = 1,
        patience: int = 2,
        relative_drop: float | None = 0.99,
        min_improvement: float = 0.0,
        margin: float = 0.02,
        window: int = 2,
        min_rise: float | None = 0.01,
        use_collapse: bool = True,
        band_width: float | None = None,
        band_top: int = 3,
        band_min_ref: int = 3,
        band_warmup: int = 1,
        band_protect: bool = False,
        band_protect_width: float = 0.0,
    ) -> None:
        self.collapse = FlipRateCollapseRule(n_warmup_steps=0, patience=patience, floor=floor,
                                             relative_drop=relative_drop, min_improvement=min_improvement,
                                             margin=margin)
        if isinstance(sub_patience, bool) or not isinstance(sub_patience, int) or sub_patience < 1:
            raise ValueError(f"`sub_patience` must be an integer >= 1, but got sub_patience={sub_patience!r}.")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"`window` must be an integer >= 1, but got window={window!r}.")
        if min_rise is not None and (isinstance(min_rise, bool) or not isinstance(min_rise, (int, float))
                                     or not (min_rise >= 0 and math.isfinite(min_rise))):
            raise ValueError(f"`min_rise` must be a finite number >= 0 or None, but got min_rise={min_rise!r}.")
        for name, v in (("band_top", band_top), ("band_min_ref", band_min_ref), ("band_warmup", band_warmup)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, but got {name}={v!r}.")
        if band_width is not None and (isinstance(band_width, bool) or not isinstance(band_width, (int, float))
                                       or not (band_width >= 0 and math.isfinite(band_width))):
            raise ValueError(f"`band_width` must be a finite number >= 0 or None, but got band_width={band_width!r}.")
        self.band_width = None if band_width is None else float(band_width)
        self.band_top, self.band_min_ref, self.band_warmup = band_top, band_min_ref, band_warmup
        self.band_protect = bool(band_protect)
        if isinstance(band_protect_width, bool) or not isinstance(band_protect_width, (int, float)) or not (
                band_protect_width >= 0 and math.isfinite(band_protect_width)):
            raise ValueError(f"`band_protect_width` must be a finite number >= 0, but got "
                             f"band_protect_width={band_protect_width!r}.")
        self.band_protect_width = float(band_protect_width)
        self.floor = float(floor)
        self.sub_patience = sub_patience
        self.window = window
        self.min_rise = None if min_rise is None else float(min_rise)
        self.margin = float(margin)
        self.relative_drop = relative_drop
        self.use_collapse = bool(use_collapse)

    def __repr__(self) -> str:
        c = self.collapse
        return (f"FlipSHRule(floor={self.floor}, sub_patience={self.sub_patience}, patience={c.patience}, "
                f"relative_drop={c.relative_drop}, min_improvement={c.min_improvement}, margin={self.margin}, "
                f"window={self.window}, min_rise={self.min_rise}, band_width={self.band_width}, band_top={self.band_top}, "
                f"band_min_ref={self.band_min_ref}, band_warmup={self.band_warmup}, band_protect={self.band_protect}, "
                f"band_protect_width={self.band_protect_width})")

    # ------------------------------------------------------------------ sub-epoch
    def frozen_early(self, sub_log_flip_rates: Sequence[float]) -> RuleDecision:
        """``flip-early``: stop when every sub-epoch log flip rate so far is at or below the floor."""
        xs = [float(x) for x in sub_log_flip_rates if _finite(x)]
        if len(xs) < self.sub_patience:
            return RuleDecision(False, "flip-early", f"{len(xs)} of sub_patience={self.sub_patience} sub-epoch reports")
        peak = max(xs)
        if peak > self.floor:
            return RuleDecision(False, "flip-early", f"the flip rate rose above the floor (peak {peak:.2f})")
        return RuleDecision(
            True, "flip-early",
            f"log flip rate <= {self.floor:g} at all {len(xs)} sub-epoch reports (peak {peak:.2f}): the binary "
            f"weights never trained (too low gamma or too high threshold?)")

    # ------------------------------------------------------------------ epoch
    def collapsed(self, log_flip_rates: Sequence[float], values: Sequence[float], *,
                  best_value: float | None, maximize: bool = True) -> RuleDecision:
        """``flip-collapse``: :class:`FlipRateCollapseRule`'s decision, only once a best value exists (before
        the first completed trial nothing says the collapsed run is not the best one) and when enabled."""
        if not self.use_collapse:
            return RuleDecision(False, "flip-collapse", "the collapse rule is off")
        if best_value is None or not _finite(best_value):
            return RuleDecision(False, "flip-collapse", "no completed trial to compare with yet")
        d: CollapseDecision = self.collapse.decide(log_flip_rates, values, best_value=best_value, maximize=maximize)
        return RuleDecision(d.stop, "flip-collapse", d.reason)

    def protect(self, log_flip_rates: Sequence[float], values: Sequence[float], *, remaining: int,
                best_value: float | None, maximize: bool = True) -> RuleDecision:
        """``protect``: ``stop=False`` keeps a late bloomer successive halving wanted to stop.

        Returns ``RuleDecision(stop=True, ...)`` when the run is *not* protected (let the scheduler stop it).
        """
        if self.min_rise is None:
            return RuleDecision(True, "asha", "late-bloomer protection is off")
        n = min(len(log_flip_rates), len(values))
        if n <= self.window:
            return RuleDecision(True, "asha", f"only {n} reports, fewer than window+1={self.window + 1}")
        lfr = [float(x) for x in log_flip_rates[:n]]
        sign = 1.0 if maximize else -1.0
        vals = [sign * float(v) for v in values[:n]]
        if not (_finite(lfr[-1]) and _finite(vals[-1]) and _finite(vals[-1 - self.window])):
            return RuleDecision(True, "asha", "non-finite flip rate or objective")
        collapsed = self.collapse._collapsed(lfr)[-1]
        if collapsed is not False:
            return RuleDecision(True, "asha", f"flip rate not healthy (log flip rate {lfr[-1]:.2f})")
        slope = (vals[-1] - vals[-1 - self.window]) / self.window
        if slope < self.min_rise:
            return RuleDecision(True, "asha", f"objective rises {sign * slope:+.4g} per report < min_rise={self.min_rise:g}")
        projected = vals[-1] + slope * max(remaining, 0)
        if best_value is not None and _finite(best_value) and projected < sign * float(best_value) - self.margin:
            return RuleDecision(True, "asha", f"even rising {sign * slope:+.4g} per report it would reach only "
                                f"{sign * projected:.4g} < best {float(best_value):.4g} - margin")
        return RuleDecision(False, "protect", f"late bloomer: flip rate healthy (log flip rate {lfr[-1]:.2f}) and the "
                            f"objective rising {sign * slope:+.4g} per report (projected {sign * projected:.4g})")

    # ------------------------------------------------------------------ band
    def band(self, step: int, completed: Sequence[tuple[float, Sequence[float]]], *,
             maximize: bool = True) -> tuple[float, float] | None:
        """``(low, high)`` log flip rate at report ``step`` (1-based) of the ``band_top`` best completed trials
        (``completed``: ``(final value, log flip-rate series)`` pairs), or None with fewer than ``band_min_ref``
        of them having a finite flip rate at that step."""
        sign = 1.0 if maximize else -1.0
        ranked = sorted(((sign * float(v), s) for v, s in completed if _finite(v)), key=lambda p: -p[0])
        xs = [float(s[step - 1]) for _, s in ranked[: self.band_top] if len(s) >= step and _finite(s[step - 1])]
        if len(ranked) < self.band_min_ref or not xs:
            return None
        return min(xs), max(xs)

    def out_of_band(self, log_flip_rates: Sequence[float], completed: Sequence[tuple[float, Sequence[float]]], *,
                    maximize: bool = True) -> RuleDecision:
        """``flip-band``: stop a run whose latest log flip rate is more than ``band_width`` outside the band of
        the best completed trials at the same report (too low: frozen; too high: noisy plateau)."""
        if self.band_width is None:
            return RuleDecision(False, "flip-band", "the band rule is off")
        step = len(log_flip_rates)
        if step < self.band_warmup:
            return RuleDecision(False, "flip-band", f"report {step} < band_warmup={self.band_warmup}")
        x = float(log_flip_rates[-1]) if step else math.nan
        b = self.band(step, completed, maximize=maximize)
        if b is None or not _finite(x):
            return RuleDecision(False, "flip-band", "no band yet (too few completed trials) or no flip rate")
        lo, hi = b
        if x < lo - self.band_width:
            return RuleDecision(True, "flip-band", f"log flip rate {x:.2f} at report {step} is below the best "
                                f"trials' band [{lo:.2f}, {hi:.2f}] - {self.band_width:g}: frozen compared with the winners")
        if x > hi + self.band_width:
            return RuleDecision(True, "flip-band", f"log flip rate {x:.2f} at report {step} is above the best "
                                f"trials' band [{lo:.2f}, {hi:.2f}] + {self.band_width:g}: too noisy to settle")
        return RuleDecision(False, "flip-band", f"log flip rate {x:.2f} inside the best trials' band "
                            f"[{lo:.2f}, {hi:.2f}] +- {self.band_width:g}")

    def in_band(self, log_flip_rates: Sequence[float], completed: Sequence[tuple[float, Sequence[float]]], *,
                maximize: bool = True) -> RuleDecision:
        """``band_protect``: ``stop=False`` (rule ``protect``) keeps a run successive halving wants to stop whose
        latest log flip rate lies inside the best completed trials' band +- ``band_protect_width``; ``stop=True``
        otherwise."""
        if not self.band_protect or self.band_width is None:
            return RuleDecision(True, "asha", "band protection is off")
        step = len(log_flip_rates)
        b = self.band(step, completed, maximize=maximize) if step else None
        x = float(log_flip_rates[-1]) if step else math.nan
        if b is None or not _finite(x):
            return RuleDecision(True, "asha", "no band to compare with")
        lo, hi = b
        w = self.band_protect_width
        if lo - w <= x <= hi + w:
            return RuleDecision(False, "protect", f"flips like the best completed trials at report {step} "
                                f"(log flip rate {x:.2f} in [{lo:.2f}, {hi:.2f}] +- {w:g})")
        return RuleDecision(True, "asha", f"log flip rate {x:.2f} outside the best trials' band [{lo:.2f}, {hi:.2f}]")
