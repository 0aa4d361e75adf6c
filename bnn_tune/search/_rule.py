"""The flip-rate collapse rule's settings in ``bnn-tune search``, one source for both backends."""

from __future__ import annotations

from typing import Any

__all__ = ["flip_rule_settings"]


def flip_rule_settings(epochs: int) -> dict[str, Any]:
    """Arguments of :class:`plugins.optuna.FlipRatePruner` and :class:`plugins.ray.FlipRateScheduler` for a
    search of ``epochs``-epoch trials: the first ``max(2, epochs // 5)`` epochs are never judged, two
    collapsed epochs in a row stop a trial, and a trial within 0.02 validation accuracy of the best is a
    contender (the noise of a few hundred validation samples) and finishes.

    Example:
        >>> flip_rule_settings(20)
        {'n_warmup_steps': 4, 'patience': 2, 'margin': 0.02}
    """
    return {"n_warmup_steps": max(2, int(epochs) // 5), "patience": 2, "margin": 0.02}
