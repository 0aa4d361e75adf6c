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
    "trainable_sub_epoch",
    "with_resources",
]

if TYPE_CHECKING:
    from ._trainable import trainable, trainable_sub_epoch, with_resources
    from .objective import objective


def __getattr__(name: str) -> Any:
    # the trainable lives in a private module: a public submodule named ``trainable`` would replace this
    # function by the module as soon as anything imported the submodule
    if name == "trainable":
        from ._trainable import trainable

        return trainable
    if name == "trainable_sub_epoch":
        from ._trainable import trainable_sub_epoch

        return trainable_sub_epoch
    if name == "with_resources":
        from ._trainable import with_resources

        return with_resources
    if name == "objective":
        from .objective import objective

        return objective
    raise AttributeError(f"module 'bnn_tune' has no attribute {name!r}")
