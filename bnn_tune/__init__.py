"""bnn-tune: hyperparameter search for Binarized Neural Networks with Optuna and Ray Tune.

``import bnn_tune`` imports neither ray nor optuna: :func:`trainable` and :func:`objective` load them
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ConfigError, TrialConfig
from .metrics import FlipCounter
from .train import EpochMetrics, FitResult, Trainer, fit

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EpochMetrics",
    "FitResult",
    "FlipCounter",
    "Trainer",
    "TrialConfig",
    "__version__",
    "fit",
    "objective",
    "trainable",
]

if TYPE_CHECKING:
    from .objective import objective
    from .trainable import trainable


def __getattr__(name: str) -> Any:
    if name == "trainable":
        from .trainable import trainable

        return trainable
    if name == "objective":
        from .objective import objective

        return objective
    raise AttributeError(f"module 'bnn_tune' has no attribute {name!r}")
