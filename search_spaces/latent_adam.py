"""Latent-weight Adam (STE + clip) searched as a gradient filter: step size and decay; init scale a transient.

Only the sign of a latent weight reaches the network, so its magnitude is inertia, not a weight (Bop paper,
Sec. 3). Seed 004 (Quist et al.) shows that latent SGD with momentum and weight decay *is* the order-2
gradient filter with ``alpha = lr * weight_decay`` and that the initial latent scale only sets a
transient: after about ``init_scale / latent_lr`` consistent steps the initial magnitudes are forgotten. So
this space searches the two filter coordinates -- the step size ``latent_lr`` (with the clip at 1,
``1/latent_lr`` is the inertia capacity in consistent steps) and the decay ``weight_decay`` (0 reachable) --
and fixes ``init_scale`` to a small :data:`INIT_SCALE`, which makes the transient a few steps at every
``latent_lr`` of the range instead of spending a search dimension on it. (The former reinterpretation
tied ``init_scale = 10 * latent_lr`` by Theorem 1, which holds only without clipping; BENCHMARKS.md,
"BNN-HPO", compares both with the naive space.) Helwegen et al., NeurIPS 2019
(Theorem 1); Quist et al., "Understanding Weight-Magnitude Hyperparameters in Training Binary Networks",
ICLR 2023.
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["INIT_SCALE", "LATENT_LR", "NAME", "PAPER_SETTINGS", "WEIGHT_DECAY", "naive_suggest", "ray_space",
           "suggest"]

NAME = "latent_adam"
LATENT_LR = LogRange(1e-5, 1e-1)
WEIGHT_DECAY = LogRange(1e-6, 1e-2, zero_below=1e-6)
CLIP_VALUE = 1.0
# the initial latent scale: a transient of about INIT_SCALE / latent_lr steps (<= 10 steps over LATENT_LR)
INIT_SCALE = 1e-3

PAPER_SETTINGS = [
    {"latent_lr": 1e-3, "weight_decay": 0.0, "source": "Bop paper Sec. 5.2 Adam baseline (lr 1e-3); Larq default"},
    {"latent_lr": 1e-2, "weight_decay": 0.0, "source": "Bop paper Sec. 5.2 real-valued Adam lr 1e-2"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a latent-Adam configuration in filter coordinates (step size, decay; init scale fixed)."""
    return {
        "optimizer": NAME,
        "latent_lr": suggest_log(trial, "latent_lr", LATENT_LR),
        "init_scale": INIT_SCALE,
        "clip_value": CLIP_VALUE,
        "weight_decay": suggest_log(trial, "weight_decay", WEIGHT_DECAY),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """Latent Adam searched as a real-valued user would: lr, weight decay and init scale independently.

    The init scale only sets a transient, so this space spends a whole dimension on it; it is the
    baseline :func:`suggest` is measured against (and the naive twin of the other latent-weight spaces).
    """
    return {
        "optimizer": NAME,
        "latent_lr": trial.suggest_float("latent_lr", 1e-5, 1e-1, log=True),
        "init_scale": trial.suggest_float("init_scale", 1e-3, 1.0, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
    }


def ray_space(**overrides: Any) -> dict[str, Any]:
    """The same space as Ray Tune domains (``init_scale`` fixed)."""
    space = {
        "optimizer": NAME,
        "latent_lr": ray_distribution(LATENT_LR),
        "init_scale": INIT_SCALE,
        "clip_value": CLIP_VALUE,
        "weight_decay": ray_distribution(WEIGHT_DECAY),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)

