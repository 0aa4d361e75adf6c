"""The pruning strategies of ``bnn-tune search``, one source for both backends.

``--pruner`` names (Optuna pruner / Ray Tune scheduler):

* ``flip+hyperband`` (default): Hyperband -- successive halving in :func:`hyperband_brackets` brackets whose
  first rungs are 1, 3, 9... epochs (reduction factor 3) -- with the flip-rate rules of
  :class:`bnn_tune.plugins._flip_sh.FlipSHRule` at their :data:`bnn_tune.plugins._flip_sh.RECOMMENDED` settings
  (:class:`bnn_tune.plugins.flip_sh.FlipSHPruner` around ``HyperbandPruner`` / :class:`bnn_tune.plugins.flip_sh_ray.FlipSHScheduler`
  around ``AsyncHyperBandScheduler``): the strategy that reached the hpobench target soonest, median over
  held-out sampler seeds (BENCHMARKS.md, "BNN-HPO").
* ``flip+asha``: the same rules around one successive-halving bracket (min resource 1 epoch, reduction
  factor 3).
* ``hyperband``, ``asha``: those schedules alone (``HyperbandPruner`` / ``SuccessiveHalvingPruner``; Ray:
  ``AsyncHyperBandScheduler`` with the brackets / ``ASHAScheduler``).
* ``flip``: the flip-rate collapse rule alone (:class:`bnn_tune.plugins.optuna.FlipRatePruner` /
  :class:`bnn_tune.plugins.ray.FlipRateScheduler` over FIFO), with :func:`flip_rule_settings`.
* ``flip+median``: the collapse rule or the median rule, whichever stops first.
* ``median``: Optuna's ``MedianPruner`` (5 startup trials, 2 warm-up epochs) / Ray's ``MedianStoppingRule``
  (5 trials, 2 epochs of grace).
* ``none``: every trial runs to the end.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DEFAULT_PRUNER", "MEDIAN_SETTINGS", "PRUNERS", "SH_SETTINGS", "check_pruner", "flip_rule_settings",
           "hyperband_brackets"]

PRUNERS = ("flip+hyperband", "flip+asha", "hyperband", "asha", "flip", "flip+median", "median", "none")
"""``bnn-tune search --pruner`` names, in both backends."""

DEFAULT_PRUNER = "flip+hyperband"

SH_SETTINGS: dict[str, int] = {"min_resource": 1, "reduction_factor": 3}
"""Successive halving's rungs in ``asha`` and ``flip+asha``: 1, 3, 9... epochs, the top third promoted (the
settings of the hpobench evaluation)."""

MEDIAN_SETTINGS: dict[str, int] = {"n_startup_trials": 5, "n_warmup_steps": 2}


def hyperband_brackets(epochs: int) -> int:
    """Brackets of Hyperband for ``epochs``-epoch trials, as Optuna's ``HyperbandPruner(min_resource=1,
    reduction_factor=3)`` derives them (``max_resource = epochs + 1``): ``floor(log3(epochs + 1)) + 1``.

    Example:
        >>> [hyperband_brackets(e) for e in (1, 2, 10, 25, 26)]
        [1, 2, 3, 3, 4]
    """
    # Optuna's own float formula (HyperbandPruner._try_initialization), so both backends get the same count
    return math.floor(math.log((int(epochs) + 1) / SH_SETTINGS["min_resource"], SH_SETTINGS["reduction_factor"])) + 1


def check_pruner(name: Any) -> str:
    """``name`` if it is one of :data:`PRUNERS`; otherwise ``ValueError`` naming it and the choices."""
    if name not in PRUNERS:
        raise ValueError(f"`pruner` must be one of {list(PRUNERS)}, but got pruner={name!r}.")
    return str(name)


def flip_rule_settings(epochs: int) -> dict[str, Any]:
    """Arguments of :class:`bnn_tune.plugins.optuna.FlipRatePruner` and :class:`bnn_tune.plugins.ray.FlipRateScheduler` for a
    search of ``epochs``-epoch trials: the first ``max(2, epochs // 5)`` epochs are never judged, two
    collapsed epochs in a row stop a trial, and a trial within 0.02 validation accuracy of the best is a
    contender (the noise of a few hundred validation samples) and finishes.

    Example:
        >>> flip_rule_settings(20)
        {'n_warmup_steps': 4, 'patience': 2, 'margin': 0.02}
    """
    return {"n_warmup_steps": max(2, int(epochs) // 5), "patience": 2, "margin": 0.02}
