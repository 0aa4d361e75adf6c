"""The pruning strategies, one registry for both backends: every ``--pruner`` name, its settings and what it builds.

``bnn-tune search`` (both backends), :func:`bnn_tune.search.make_pruner`, :func:`bnn_tune.search.ray.make_scheduler`
and the hpobench replay (``bnn_tune.hpobench.replay(pruner=NAME)``) all ask :func:`get_strategy`; a strategy
builds its Optuna pruner and its Ray Tune scheduler from one :class:`StrategySettings` for the trials' epochs,
so the two backends (and the benchmark) run the same rule. Importing this module imports neither optuna nor
ray; each builder imports its framework.

=================  =======================================================================================
name               what stops a trial
=================  =======================================================================================
``flip+gated-asha`` (default) the flip-rate rules of :data:`~bnn_tune.plugins._flip_sh.GATED_RULE` around one
                   successive-halving bracket (rungs 1, 3, 9... epochs) whose accuracy stops pass the rank
                   gate: a run successive halving would stop is kept unless the completed trials' accuracy at
                   that epoch ranks like their final accuracy (Spearman >= 0.8 over >= 8 trials). On BNN
                   tables early accuracy rarely ranks like final accuracy, so in practice the flip rules
                   decide; the gate stands aside until it has evidence (issue 25, BENCHMARKS.md)
``flip+hyperband``  Hyperband -- successive halving in :func:`hyperband_brackets` brackets whose
                   first rungs are 1, 3, 9... epochs -- with the flip-rate rules of
                   :class:`~bnn_tune.plugins._flip_sh.FlipSHRule` at :data:`~bnn_tune.plugins._flip_sh.RECOMMENDED_RULE`
                   (``flip-early`` inside the first epoch, ``flip-collapse``, ``flip-band``, late-bloomer protection)
``flip+asha``      the same rules around one successive-halving bracket
``hyperband``      Hyperband alone
``asha``           successive halving alone (min resource 1 epoch, reduction factor 3)
``flip``           the flip-rate collapse rule alone (warm-up ``max(2, epochs // 5)`` epochs, patience 2,
                   margin 0.02)
``flip+median``    the collapse rule or the median rule, whichever stops first
``median``         the median rule (5 startup trials, 2 warm-up epochs)
``none``           every trial runs to the end
=================  =======================================================================================

Optuna: ``FlipSHPruner`` (a ``HyperbandPruner`` itself around Hyperband, so TPE samples per bracket as with
Hyperband alone), ``HyperbandPruner``, ``SuccessiveHalvingPruner``, ``FlipRatePruner``, ``MedianPruner``,
``NopPruner``. Ray Tune: ``FlipSHScheduler`` around ``AsyncHyperBandScheduler`` (the brackets Optuna's
``HyperbandPruner`` derives for ``max_resource = epochs + 1``), ``FlipRateScheduler``, ``EpochScheduler`` around
``MedianStoppingRule``, ``FIFOScheduler``; time in epochs (``training_iteration``, which
:func:`bnn_tune.trainable` sets to the epoch).

Example:
    >>> get_strategy("flip+hyperband").schedule_rule, get_strategy("flip").judges_sub_epoch
    ('hyperband', False)
    >>> get_strategy("flip").settings(20).collapse
    {'n_warmup_steps': 4, 'patience': 2, 'margin': 0.02}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bnn_tune._validate import check_range
from bnn_tune.plugins._flip_sh import GATED_RULE, RECOMMENDED_RULE, FlipSHRule

__all__ = ["DEFAULT_STRATEGY", "MEDIAN_SETTINGS", "SH_SETTINGS", "STRATEGIES", "Strategy", "StrategySettings",
           "collapse_settings", "get_strategy", "hyperband_brackets", "list_strategies"]

SH_SETTINGS: dict[str, int] = {"min_resource": 1, "reduction_factor": 3}
"""Successive halving's rungs: 1, 3, 9... epochs, the top third promoted (the hpobench evaluation's settings)."""

MEDIAN_SETTINGS: dict[str, int] = {"n_startup_trials": 5, "n_warmup_steps": 2}
"""The median rule: judged once 5 trials completed, from epoch 3 on (Ray: ``min_samples_required``, ``grace_period``)."""


def hyperband_brackets(epochs: int) -> int:
    """Brackets of Hyperband for ``epochs``-epoch trials, as Optuna's ``HyperbandPruner(min_resource=1,
    reduction_factor=3)`` derives them (``max_resource = epochs + 1``): ``floor(log3(epochs + 1)) + 1``.

    Example:
        >>> [hyperband_brackets(e) for e in (1, 2, 10, 25, 26)]
        [1, 2, 3, 3, 4]
    """
    # Optuna's own float formula (HyperbandPruner._try_initialization), so both backends get the same count
    return math.floor(math.log((int(epochs) + 1) / SH_SETTINGS["min_resource"], SH_SETTINGS["reduction_factor"])) + 1


def collapse_settings(epochs: int) -> dict[str, Any]:
    """The collapse rule of ``flip`` / ``flip+median`` for ``epochs``-epoch trials: the first ``max(2, epochs // 5)``
    epochs are never judged, two collapsed epochs in a row stop a trial, and a trial within 0.02 validation
    accuracy of the best is a contender (the noise of a few hundred validation samples) and finishes.

    Example:
        >>> collapse_settings(20)
        {'n_warmup_steps': 4, 'patience': 2, 'margin': 0.02}
    """
    return {"n_warmup_steps": max(2, int(epochs) // 5), "patience": 2, "margin": 0.02}


@dataclass(frozen=True)
class StrategySettings:
    """The numbers a strategy's Optuna pruner and Ray scheduler are both built from, for ``epochs``-epoch trials.

    Attributes:
        epochs: the trials' epochs (Ray's ``max_t``; the last epoch is never stopped).
        successive_halving: ``{"min_resource", "reduction_factor", "brackets"}`` (1 bracket: ASHA), or None.
        flip_sh: the :class:`FlipSHRule` around successive halving, or None.
        collapse: :func:`collapse_settings` for the collapse rule alone, or None.
        median: :data:`MEDIAN_SETTINGS`, or None.
    """

    epochs: int
    successive_halving: dict[str, int] | None = None
    flip_sh: FlipSHRule | None = None
    collapse: dict[str, Any] | None = None
    median: dict[str, int] | None = None


@dataclass(frozen=True)
class Strategy:
    """One ``--pruner`` strategy: its name, its one-line summary and how it stops trials.

    Attributes:
        name: the ``--pruner`` name.
        summary: one line, for ``--help`` and the README.
        schedule_rule: the rule name its scheduler part stops with (``asha``, ``hyperband``, ``median``), or None.
        judges_sub_epoch: whether it stops trials inside the first epoch (``flip-early``).
        flip: the flip-rate part: ``"flip-sh"`` (:class:`FlipSHRule` around the schedule), ``"collapse"`` (the
            collapse rule, or-ed with the schedule) or None.
        gated: with ``flip="flip-sh"``, the rule is :data:`~bnn_tune.plugins._flip_sh.GATED_RULE` (the schedule's
            accuracy stops pass the rank gate) instead of :data:`~bnn_tune.plugins._flip_sh.RECOMMENDED_RULE`.
    """

    name: str
    summary: str
    schedule_rule: str | None
    judges_sub_epoch: bool
    flip: str | None = None
    gated: bool = False

    def settings(self, epochs: int) -> StrategySettings:
        """The settings both builders use for ``epochs``-epoch trials."""
        check_range("epochs", epochs, 1, integer=True)
        sh = None
        if self.schedule_rule in ("asha", "hyperband"):
            sh = {**SH_SETTINGS, "brackets": hyperband_brackets(epochs) if self.schedule_rule == "hyperband" else 1}
        return StrategySettings(
            epochs=epochs,
            successive_halving=sh,
            flip_sh=(GATED_RULE if self.gated else RECOMMENDED_RULE) if self.flip == "flip-sh" else None,
            collapse=collapse_settings(epochs) if self.flip == "collapse" else None,
            median=dict(MEDIAN_SETTINGS) if self.schedule_rule == "median" else None,
        )

    def optuna_pruner(self, epochs: int) -> Any:
        """The Optuna pruner (``optuna.pruners.BasePruner``) of this strategy for ``epochs``-epoch trials."""
        from bnn_tune._imports import require

        optuna = require("optuna", feature=f"the {self.name!r} pruner")
        st = self.settings(epochs)
        inner: Any = None
        if st.successive_halving is not None:
            kw = {k: st.successive_halving[k] for k in ("min_resource", "reduction_factor")}
            inner = (optuna.pruners.HyperbandPruner(**kw) if self.schedule_rule == "hyperband"
                     else optuna.pruners.SuccessiveHalvingPruner(**kw))
        elif st.median is not None:
            inner = optuna.pruners.MedianPruner(**st.median)
        if st.flip_sh is not None:
            from bnn_tune.plugins.flip_sh import FlipSHPruner

            return FlipSHPruner(inner, max_steps=epochs, rule=st.flip_sh)
        if st.collapse is not None:
            from bnn_tune.plugins.optuna import FlipRatePruner

            return FlipRatePruner(inner, combine="or", **st.collapse)
        return inner if inner is not None else optuna.pruners.NopPruner()

    def ray_scheduler(self, epochs: int, metric: str = "val_acc", mode: str = "max") -> Any:
        """The Ray Tune scheduler (``TrialScheduler``) of this strategy for ``epochs``-epoch trials on ``metric``."""
        from bnn_tune._imports import require

        require("ray.tune", feature=f"the {self.name!r} scheduler")
        from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

        from bnn_tune.plugins.ray import EpochScheduler, FlipRateScheduler

        st = self.settings(epochs)
        inner: Any = None
        if st.successive_halving is not None:
            sh = st.successive_halving
            inner = AsyncHyperBandScheduler(time_attr="training_iteration", metric=metric, mode=mode, max_t=epochs,
                                            grace_period=sh["min_resource"], reduction_factor=sh["reduction_factor"],
                                            brackets=sh["brackets"])
        elif st.median is not None:
            inner = MedianStoppingRule(time_attr="training_iteration", metric=metric, mode=mode,
                                       grace_period=st.median["n_warmup_steps"],
                                       min_samples_required=st.median["n_startup_trials"])
        if st.flip_sh is not None:
            from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler

            return FlipSHScheduler(inner, metric, mode, max_t=epochs, rule=st.flip_sh)
        if st.collapse is not None:
            # the metric goes on the wrapper: the driver's TuneConfig may set none, and FIFO has none to lend it
            return FlipRateScheduler(inner, metric, mode, max_t=epochs, **st.collapse)
        if isinstance(inner, MedianStoppingRule):
            return EpochScheduler(inner, metric, mode, max_t=epochs)
        return inner if inner is not None else FIFOScheduler()


_STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("flip+gated-asha", "the flip-rate rules (flip-early, flip-collapse, flip-band, protect) plus successive "
             "halving whose accuracy stops pass the rank gate (only where early ranks held); the default", "asha",
             True, "flip-sh", gated=True),
    Strategy("flip+hyperband", "Hyperband plus the flip-rate rules (flip-early, flip-collapse, flip-band, protect)",
             "hyperband", True, "flip-sh"),
    Strategy("flip+asha", "successive halving (ASHA) plus the flip-rate rules", "asha", True, "flip-sh"),
    Strategy("hyperband", "Hyperband alone (rungs 1, 3, 9... epochs)", "hyperband", False),
    Strategy("asha", "successive halving (ASHA) alone (rungs 1, 3, 9... epochs)", "asha", False),
    Strategy("flip", "the flip-rate collapse rule alone", None, False, "collapse"),
    Strategy("flip+median", "the flip-rate collapse rule or the median rule", "median", False, "collapse"),
    Strategy("median", "the median rule alone", "median", False),
    Strategy("none", "no pruning: every trial runs to the end", None, False),
)}

STRATEGIES: tuple[str, ...] = tuple(_STRATEGIES)
"""``bnn-tune search --pruner`` names, in both backends (the default first)."""

DEFAULT_STRATEGY = "flip+gated-asha"


def get_strategy(name: Any) -> Strategy:
    """The strategy called ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`STRATEGIES`.

    Example:
        >>> get_strategy("asha").summary
        'successive halving (ASHA) alone (rungs 1, 3, 9... epochs)'
        >>> get_strategy("ashaa")
        Traceback (most recent call last):
        ...
        ValueError: Unknown strategy 'ashaa'. Available: ['asha', 'flip', 'flip+asha', 'flip+gated-asha', 'flip+hyperband', 'flip+median', 'hyperband', 'median', 'none'].
    """
    try:
        return _STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown strategy {name!r}. Available: {sorted(_STRATEGIES)}.") from None


def list_strategies() -> list[str]:
    """The strategy names, in :data:`STRATEGIES` order (the default first)."""
    return list(STRATEGIES)
