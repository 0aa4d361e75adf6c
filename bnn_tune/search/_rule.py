"""The ``--pruner`` names of ``bnn-tune search``: a thin view of :mod:`bnn_tune.plugins.strategies`, the one registry.

Kept for the callers that import from here (the CLI, the backends); the strategies, their settings and what
they build live in the registry.
"""

from __future__ import annotations

from typing import Any

from bnn_tune.plugins.strategies import (
    DEFAULT_STRATEGY,
    MEDIAN_SETTINGS,
    SH_SETTINGS,
    STRATEGIES,
    collapse_settings,
    get_strategy,
    hyperband_brackets,
)

__all__ = ["DEFAULT_PRUNER", "MEDIAN_SETTINGS", "PRUNERS", "SH_SETTINGS", "check_pruner", "flip_rule_settings",
           "hyperband_brackets"]

PRUNERS = STRATEGIES
"""``bnn-tune search --pruner`` names, in both backends."""

DEFAULT_PRUNER = DEFAULT_STRATEGY

flip_rule_settings = collapse_settings


def check_pruner(name: Any) -> str:
    """``name`` if it is a strategy name; otherwise the registry's ``ValueError`` naming it and the choices."""
    return get_strategy(name).name
