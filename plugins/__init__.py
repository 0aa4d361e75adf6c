"""Search-framework adapters for bnn-tune.

One framework-free collapse rule (:class:`FlipRateCollapseRule`, in ``plugins/_collapse.py``) with thin
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

__all__ = ["CollapseDecision", "FlipRateCollapseRule"]
