"""Search-framework adapters for bnn-tune.

The pruning strategies in one registry (:mod:`bnn_tune.plugins.strategies`: :func:`get_strategy`), built from
framework-free rules (:class:`FlipSHRule` in ``plugins/_flip_sh.py``, :class:`FlipRateCollapseRule` in
``plugins/_collapse.py``, frozen dataclasses) with thin
adapters per framework: ``bnn_tune.plugins.optuna.FlipRatePruner`` (an Optuna pruner) and
``bnn_tune.plugins.ray.FlipRateStopper`` / ``bnn_tune.plugins.ray.FlipRateScheduler`` (Ray Tune). Importing ``plugins``
imports neither optuna nor ray; the adapters import their framework when their module is imported.

Example:
    >>> from bnn_tune.plugins import FlipRateCollapseRule
    >>> FlipRateCollapseRule(patience=3).patience
    3
"""

from __future__ import annotations

from ._collapse import CollapseDecision, FlipRateCollapseRule
from ._flip_sh import Band, FlipSHRule, RuleDecision, TrialView
from .strategies import DEFAULT_STRATEGY, STRATEGIES, Strategy, get_strategy, list_strategies

__all__ = ["DEFAULT_STRATEGY", "STRATEGIES", "Band", "CollapseDecision", "FlipRateCollapseRule", "FlipSHRule",
           "RuleDecision", "Strategy", "TrialView", "get_strategy", "list_strategies"]
