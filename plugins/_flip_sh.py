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
* ``flip-band`` (epoch, off unless a :class:`Band` is given): once ``band.min_ref`` trials completed, the log
  flip rate a run shows at epoch ``e`` is compared with the flip rates the ``band.top`` best completed
  trials showed at the same epoch; a run more than ``band.width`` below that band (frozen) or above it
  (noisy plateau: Helwegen et al. 2019, Fig. 1 -- too high a flip rate never settles) is stopped, from
  epoch ``band.warmup`` on. With ``band.protect`` a run *inside* the band is also kept when successive
  halving would stop it (it flips like the winners did at that epoch: a late bloomer on this task).

Every other decision is the wrapped scheduler's, named by its rule (``asha``, ``hyperband``, ``median``).
:meth:`FlipSHRule.decide` owns the order of the checks and takes the wrapped scheduler's verdict as an
argument; the Optuna adapter (:class:`bnn_tune.plugins.flip_sh.FlipSHPruner`) and the Ray adapter
(:class:`bnn_tune.plugins.flip_sh_ray.FlipSHScheduler`) only read their framework's data into a
:class:`TrialView` and write the decision back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bnn_tune._validate import check_range
from bnn_tune.plugins._collapse import CollapseDecision, FlipRateCollapseRule
from bnn_tune.plugins._outcome import SCHEDULE_RULES

__all__ = ["GATED_RULE", "RECOMMENDED", "RECOMMENDED_RULE", "Band", "FlipSHRule", "RankGate", "RuleDecision", "TrialView", "spearman"]


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


@dataclass(frozen=True, kw_only=True)
class Band:
    """The ``flip-band`` rule's settings: the band the best completed trials' flip rates span at each epoch.

    Args:
        width: slack (log flip-rate units, >= 0) around the band beyond which a run is stopped.
        top: how many of the best completed trials span the band (>= 1).
        min_ref: completed trials needed before the band judges (>= 1).
        warmup: first epoch (report) at which ``flip-band`` may stop a run (>= 1).
        stops: whether ``flip-band`` stops runs outside the band (False: the band only protects).
        protect: keep a run successive halving stops when its flip rate is inside the band.
        protect_width: slack (log units, >= 0) around the band for ``protect``.

    Example:
        >>> Band(width=2.0, protect=True)
        Band(width=2.0, top=3, min_ref=3, warmup=1, stops=True, protect=True, protect_width=0.0)
    """

    width: float
    top: int = 3
    min_ref: int = 3
    warmup: int = 1
    stops: bool = True
    protect: bool = False
    protect_width: float = 0.0

    def __post_init__(self) -> None:
        check_range("band_width", self.width, 0.0)
        for name in ("top", "min_ref", "warmup"):
            check_range(f"band_{name}", getattr(self, name), 1, integer=True)
        check_range("band_protect_width", self.protect_width, 0.0)
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "protect_width", float(self.protect_width))
        object.__setattr__(self, "protect", bool(self.protect))
        object.__setattr__(self, "stops", bool(self.stops))


@dataclass(frozen=True, kw_only=True)
class RankGate:
    """The ``rank-gate`` rule's settings: successive halving judges on early accuracy only where early accuracy
    has ranked like final accuracy on this task.

    When the wrapped scheduler wants to stop a run at report ``e``, the gate looks at the completed trials:
    it lets the stop through only if at least ``min_ref`` of them have a finite objective at report ``e`` and
    at the end, and the Spearman rank correlation between the two is at least ``rho``. Otherwise the
    scheduler's rung cannot be trusted on this task (a slow starter may be the winner) and the run is kept.
    With too few completed trials, or no spread to rank, the gate stands aside: it keeps the run.

    Args:
        rho: the smallest rank correlation (in [-1, 1]) at which the scheduler may stop runs.
        min_ref: completed trials needed before the scheduler may stop any run (>= 2).

    Example:
        >>> RankGate()
        RankGate(rho=0.8, min_ref=8)
    """

    rho: float = 0.8
    min_ref: int = 8

    def __post_init__(self) -> None:
        check_range("gate_rho", self.rho, -1.0, 1.0)
        check_range("gate_min_ref", self.min_ref, 2, integer=True)
        object.__setattr__(self, "rho", float(self.rho))


def _ranks(xs: Sequence[float]) -> list[float]:
    """Average ranks (1-based; ties share the mean of their ranks)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long series (average ranks for ties); None when either has
    no spread or fewer than 2 points.

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3, 4], [4, 3, 2, 1])
        (1.0, -1.0)
        >>> spearman([1, 1, 1], [1, 2, 3]) is None
        True
    """
    if len(xs) != len(ys):
        raise ValueError(f"spearman needs two series of one length, but got {len(xs)} and {len(ys)} points.")
    if len(xs) < 2:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx <= 0 or syy <= 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class TrialView:
    """What :meth:`FlipSHRule.decide` reads about one trial, in framework-free form.

    Attributes:
        sub_log_flip_rates: the sub-epoch log flip rates so far (every 1/8 epoch), oldest first.
        log_flip_rates: the log flip rate of every finished epoch.
        values: the objective at every finished epoch (same order).
        completed: ``(final value, log flip-rate series)`` of every completed trial (the band's references).
        completed_values: the objective series of every completed trial, in the order of ``completed`` (the rank
            gate's references; empty when the adapter does not supply them: the gate then stands aside).
        best_value: the best completed trial's final value (None: none completed yet).
        maximize: whether larger objective values are better.
        remaining: epochs left after this report (None: unknown; 0: the trial's last epoch).
        sub_epoch: a check inside an epoch (only ``flip-early`` applies).
    """

    sub_log_flip_rates: tuple[float, ...] = ()
    log_flip_rates: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    completed: tuple[tuple[float, tuple[float, ...]], ...] = ()
    completed_values: tuple[tuple[float, ...], ...] = ()
    best_value: float | None = None
    maximize: bool = True
    remaining: int | None = None
    sub_epoch: bool = False


@dataclass(frozen=True, kw_only=True)
class FlipSHRule:
    """Flip-rate decisions around successive halving (see the module docstring).

    A frozen dataclass: the settings are its keyword-only fields, checked in ``__post_init__``.
    :meth:`from_kwargs` also takes the flat ``band_width=...``/``band_top=...`` keywords of earlier versions.

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
        band: the ``flip-band`` rule's :class:`Band`; ``None`` turns it off.
        gate: the ``rank-gate`` rule's :class:`RankGate`; ``None`` lets every stop of the scheduler through.
        use_early: whether ``flip-early`` runs.

    Example:
        >>> rule = FlipSHRule(sub_patience=1)
        >>> rule.frozen_early([-9.0]).stop
        True
        >>> rule.frozen_early([-4.0, -9.0]).stop
        False
        >>> rule.decide(TrialView(log_flip_rates=(-3.0,), values=(0.5,), remaining=4), scheduler_stops=True,
        ...             schedule_rule="hyperband").message()
        'hyperband: the scheduler stopped it (only 1 reports, fewer than window+1=3)'
    """

    floor: float = -8.0
    sub_patience: int = 1
    patience: int = 2
    relative_drop: float | None = 0.99
    min_improvement: float = 0.0
    margin: float = 0.02
    window: int = 2
    min_rise: float | None = 0.01
    use_collapse: bool = True
    band: Band | None = None
    gate: RankGate | None = None
    use_early: bool = True
    collapse: FlipRateCollapseRule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # validates floor, patience, relative_drop, min_improvement, margin
        object.__setattr__(self, "collapse", FlipRateCollapseRule(
            n_warmup_steps=0, patience=self.patience, floor=self.floor, relative_drop=self.relative_drop,
            min_improvement=self.min_improvement, margin=self.margin))
        check_range("sub_patience", self.sub_patience, 1, integer=True)
        check_range("window", self.window, 1, integer=True)
        check_range("min_rise", self.min_rise, 0.0, none_ok=True)
        if self.band is not None and not isinstance(self.band, Band):
            raise ValueError(f"`band` must be a Band or None, but got band={self.band!r}.")
        if self.gate is not None and not isinstance(self.gate, RankGate):
            raise ValueError(f"`gate` must be a RankGate or None, but got gate={self.gate!r}.")
        object.__setattr__(self, "use_early", bool(self.use_early))
        for name in ("floor", "min_improvement", "margin"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "use_collapse", bool(self.use_collapse))
        if self.min_rise is not None:
            object.__setattr__(self, "min_rise", float(self.min_rise))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> FlipSHRule:
        """A rule from keywords, where ``band_width``, ``band_top``, ``band_min_ref``, ``band_warmup``,
        ``band_protect`` and ``band_protect_width`` build the :class:`Band` (``band_width=None``: no band).

        Example:
            >>> FlipSHRule.from_kwargs(band_width=2.0, band_protect=True).band.protect
            True
        """
        gate_kwargs = {k[len("gate_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("gate_")}
        if gate_kwargs:
            if "gate" in kwargs:
                raise ValueError("Give either `gate` or the `gate_*` keywords, not both.")
            kwargs["gate"] = RankGate(**gate_kwargs)
        band_kwargs = {k[len("band_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("band_")}
        if band_kwargs:
            if "band" in kwargs:
                raise ValueError("Give either `band` or the `band_*` keywords, not both.")
            width = band_kwargs.pop("width", None)
            if width is not None:
                kwargs["band"] = Band(width=width, **band_kwargs)
            elif band_kwargs:
                key, value = next(iter(band_kwargs.items()))
                raise ValueError(f"`band_{key}` needs `band_width` (without it the band rule is off), but got "
                                 f"band_{key}={value!r} and band_width=None.")
        return cls(**kwargs)

    # ------------------------------------------------------------------ the decision
    def decide(self, view: TrialView, scheduler_stops: bool | Callable[[], bool] = False, *,
               schedule_rule: str = "asha", scheduler_name: str = "the scheduler", at: str = "") -> RuleDecision:
        """The decision for one check of one trial, in the rule's order.

        1. inside an epoch (``view.sub_epoch``): ``flip-early`` only;
        2. at the trial's last epoch (``view.remaining == 0``): never stop (nothing is left to save);
        3. ``flip-early`` on the sub-epoch series, ``flip-collapse``, ``flip-band``;
        4. the wrapped scheduler's verdict ``scheduler_stops`` (a bool, or a callable asked only here);
        5. when it stops the trial: ``protect`` (a late bloomer) or band protection may keep it; otherwise
           the stop is named ``schedule_rule`` (``asha``, ``hyperband``, ``median``).

        Args:
            view: the trial's series and the sweep's references.
            scheduler_stops: the wrapped scheduler's verdict, or a zero-argument callable returning it.
            schedule_rule: the wrapped scheduler's rule name, one of ``asha``, ``hyperband``, ``median``.
            scheduler_name: how the stop reason names the wrapped scheduler (e.g. its class).
            at: where the trial is, for the stop reason (``"step 3"``).

        Returns:
            :class:`RuleDecision`: ``stop``, the deciding ``rule`` and its ``reason``.
        """
        if schedule_rule not in SCHEDULE_RULES:
            raise ValueError(f"`schedule_rule` must be one of {list(SCHEDULE_RULES)}, but got "
                             f"schedule_rule={schedule_rule!r}.")
        if view.sub_log_flip_rates and self.use_early:
            early = self.frozen_early(view.sub_log_flip_rates)
            if early.stop and (view.sub_epoch or view.remaining != 0):
                return early
        if view.sub_epoch:
            return RuleDecision(False, "flip-early", "sub-epoch check: the flip rate rose above the floor")
        if view.remaining is not None and view.remaining <= 0:
            return RuleDecision(False, "completed", "the trial's last epoch: nothing left to save")
        series, values = view.log_flip_rates, view.values
        if series:
            d = self.collapsed(series, values, best_value=view.best_value, maximize=view.maximize)
            if d.stop:
                return d
            d = self.out_of_band(series, view.completed, maximize=view.maximize)
            if d.stop:
                return d
        stops = scheduler_stops() if callable(scheduler_stops) else bool(scheduler_stops)
        if not stops:
            return RuleDecision(False, schedule_rule, f"{scheduler_name} promotes or continues")
        remaining = view.remaining if view.remaining is not None else 0
        keep = (self.protect(series, values, remaining=remaining, best_value=view.best_value,
                             maximize=view.maximize) if series else RuleDecision(True, "protect", "no flip-rate series"))
        if not keep.stop:
            return keep
        band_keep = self.in_band(series, view.completed, maximize=view.maximize) if series else keep
        if not band_keep.stop:
            return band_keep
        gate = self.gated(len(values), view.completed, view.completed_values)
        if not gate.stop:
            return gate
        return RuleDecision(True, schedule_rule, f"{scheduler_name} stopped it{' at ' + at if at else ''} ({keep.reason})")

    # ------------------------------------------------------------------ rank gate
    def gated(self, step: int, completed: Sequence[tuple[float, Sequence[float]]],
              completed_values: Sequence[Sequence[float]]) -> RuleDecision:
        """``rank-gate``: ``stop=False`` keeps a run the scheduler wants to stop at report ``step`` (1-based) unless
        the completed trials' objective at that report ranks like their final objective (Spearman >=
        ``gate.rho`` over >= ``gate.min_ref`` trials); ``stop=True`` lets the stop through (also without a gate).

        Example:
            >>> rule = FlipSHRule(gate=RankGate(rho=0.8, min_ref=3))
            >>> done = [(0.9, ()), (0.5, ()), (0.7, ())]
            >>> rule.gated(1, done, [(0.6, 0.9), (0.2, 0.5), (0.4, 0.7)]).stop   # early ranks = final ranks
            True
            >>> rule.gated(1, done, [(0.2, 0.9), (0.6, 0.5), (0.4, 0.7)]).message()
            'rank-gate: kept: at report 1 the completed trials rank against their final objective with Spearman -1.00 < 0.8 (3 trials): a slow starter may win here'
        """
        if self.gate is None:
            return RuleDecision(True, "rank-gate", "the rank gate is off")
        if step < 1:
            return RuleDecision(False, "rank-gate", "kept: no report to rank yet")
        pairs = [(float(vs[step - 1]), float(final)) for (final, _), vs in zip(completed, completed_values)
                 if len(vs) >= step and _finite(vs[step - 1]) and _finite(final)]
        if len(pairs) < self.gate.min_ref:
            return RuleDecision(False, "rank-gate", f"kept: {len(pairs)} completed trials with a report {step}, fewer "
                                f"than min_ref={self.gate.min_ref} to check that early ranks hold on this task")
        rho = spearman([a for a, _ in pairs], [b for _, b in pairs])
        if rho is None:
            return RuleDecision(False, "rank-gate", f"kept: no spread to rank among {len(pairs)} completed trials")
        if rho < self.gate.rho:
            return RuleDecision(False, "rank-gate", f"kept: at report {step} the completed trials rank against their "
                                f"final objective with Spearman {rho:.2f} < {self.gate.rho:g} ({len(pairs)} trials): a "
                                f"slow starter may win here")
        return RuleDecision(True, "rank-gate", f"early ranks hold at report {step} (Spearman {rho:.2f} >= "
                            f"{self.gate.rho:g}, {len(pairs)} trials)")

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
            return RuleDecision(True, "protect", "late-bloomer protection is off")
        n = min(len(log_flip_rates), len(values))
        if n <= self.window:
            return RuleDecision(True, "protect", f"only {n} reports, fewer than window+1={self.window + 1}")
        lfr = [float(x) for x in log_flip_rates[:n]]
        sign = 1.0 if maximize else -1.0
        vals = [sign * float(v) for v in values[:n]]
        if not (_finite(lfr[-1]) and _finite(vals[-1]) and _finite(vals[-1 - self.window])):
            return RuleDecision(True, "protect", "non-finite flip rate or objective")
        collapsed = self.collapse._collapsed(lfr)[-1]
        if collapsed is not False:
            return RuleDecision(True, "protect", f"flip rate not healthy (log flip rate {lfr[-1]:.2f})")
        slope = (vals[-1] - vals[-1 - self.window]) / self.window
        if slope < self.min_rise:
            return RuleDecision(True, "protect", f"objective rises {sign * slope:+.4g} per report < min_rise={self.min_rise:g}")
        projected = vals[-1] + slope * max(remaining, 0)
        if best_value is not None and _finite(best_value) and projected < sign * float(best_value) - self.margin:
            return RuleDecision(True, "protect", f"even rising {sign * slope:+.4g} per report it would reach only "
                                f"{sign * projected:.4g} < best {float(best_value):.4g} - margin")
        return RuleDecision(False, "protect", f"late bloomer: flip rate healthy (log flip rate {lfr[-1]:.2f}) and the "
                            f"objective rising {sign * slope:+.4g} per report (projected {sign * projected:.4g})")

    # ------------------------------------------------------------------ band
    def band_range(self, step: int, completed: Sequence[tuple[float, Sequence[float]]], *,
                   maximize: bool = True) -> tuple[float, float] | None:
        """``(low, high)`` log flip rate at report ``step`` (1-based) of the ``band.top`` best completed trials
        (``completed``: ``(final value, log flip-rate series)`` pairs), or None without a band or with fewer
        than ``band.min_ref`` completed trials."""
        if self.band is None:
            return None
        sign = 1.0 if maximize else -1.0
        ranked = sorted(((sign * float(v), s) for v, s in completed if _finite(v)), key=lambda p: -p[0])
        xs = [float(s[step - 1]) for _, s in ranked[: self.band.top] if len(s) >= step and _finite(s[step - 1])]
        if len(ranked) < self.band.min_ref or not xs:
            return None
        return min(xs), max(xs)

    def out_of_band(self, log_flip_rates: Sequence[float], completed: Sequence[tuple[float, Sequence[float]]], *,
                    maximize: bool = True) -> RuleDecision:
        """``flip-band``: stop a run whose latest log flip rate is more than ``band.width`` outside the band of
        the best completed trials at the same report (too low: frozen; too high: noisy plateau)."""
        if self.band is None or not self.band.stops:
            return RuleDecision(False, "flip-band", "the band rule's stops are off")
        width = self.band.width
        step = len(log_flip_rates)
        if step < self.band.warmup:
            return RuleDecision(False, "flip-band", f"report {step} < band warmup={self.band.warmup}")
        x = float(log_flip_rates[-1]) if step else math.nan
        b = self.band_range(step, completed, maximize=maximize)
        if b is None or not _finite(x):
            return RuleDecision(False, "flip-band", "no band yet (too few completed trials) or no flip rate")
        lo, hi = b
        if x < lo - width:
            return RuleDecision(True, "flip-band", f"log flip rate {x:.2f} at report {step} is below the best "
                                f"trials' band [{lo:.2f}, {hi:.2f}] - {width:g}: frozen compared with the winners")
        if x > hi + width:
            return RuleDecision(True, "flip-band", f"log flip rate {x:.2f} at report {step} is above the best "
                                f"trials' band [{lo:.2f}, {hi:.2f}] + {width:g}: too noisy to settle")
        return RuleDecision(False, "flip-band", f"log flip rate {x:.2f} inside the best trials' band "
                            f"[{lo:.2f}, {hi:.2f}] +- {width:g}")

    def in_band(self, log_flip_rates: Sequence[float], completed: Sequence[tuple[float, Sequence[float]]], *,
                maximize: bool = True) -> RuleDecision:
        """``band.protect``: ``stop=False`` (rule ``protect``) keeps a run successive halving wants to stop whose
        latest log flip rate lies inside the best completed trials' band +- ``band.protect_width``; ``stop=True``
        otherwise."""
        if self.band is None or not self.band.protect:
            return RuleDecision(True, "protect", "band protection is off")
        step = len(log_flip_rates)
        b = self.band_range(step, completed, maximize=maximize) if step else None
        x = float(log_flip_rates[-1]) if step else math.nan
        if b is None or not _finite(x):
            return RuleDecision(True, "protect", "no band to compare with")
        lo, hi = b
        w = self.band.protect_width
        if lo - w <= x <= hi + w:
            return RuleDecision(False, "protect", f"flips like the best completed trials at report {step} "
                                f"(log flip rate {x:.2f} in [{lo:.2f}, {hi:.2f}] +- {w:g})")
        return RuleDecision(True, "protect", f"log flip rate {x:.2f} outside the best trials' band [{lo:.2f}, {hi:.2f}]")


RECOMMENDED_RULE = FlipSHRule(band=Band(width=2.0, protect=True, protect_width=1.0))
"""The ``flip+asha`` / ``flip+hyperband`` rule, chosen on hpobench replay seeds 40-79 (TPE, 60 trials, all four
tasks) among 9 variants tuned on seeds 0-79; held-out figures in BENCHMARKS.md "BNN-HPO"."""

GATED_RULE = FlipSHRule(band=Band(width=2.0, stops=False, protect=True, protect_width=1.0),
                        gate=RankGate(rho=0.8, min_ref=8))
"""The rule of the default ``flip+gated-asha``: :data:`RECOMMENDED_RULE` with the rank gate and without the band's
stops (the band only protects runs that flip like the winners), chosen leave one task out on the ten BNN-HPO v2
design tables (issue 25; BENCHMARKS.md "BNN-HPO")."""

RECOMMENDED: dict[str, object] = {"band_width": 2.0, "band_protect": True, "band_protect_width": 1.0}
""":data:`RECOMMENDED_RULE` as keywords of :meth:`FlipSHRule.from_kwargs` (and of the adapters' ``**rule_kwargs``)."""
