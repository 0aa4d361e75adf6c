"""Bop searched in its own coordinates: adaptivity rate gamma and threshold tau.

Bop flips a binary weight when the exponential moving average of its gradient, ``m <- (1 - gamma) m +
gamma g``, exceeds the threshold tau (config key ``threshold``, larq's name) and agrees in sign with the
weight. gamma sets how *consistent* a signal must be (time scale ~1/gamma steps) and tau how *strong*; both
act on the flip rate directly, so both are searched log-uniformly over the decades where the flip rate
moves (gamma 1e-6..1e-1, tau 1e-9..1e-3, plus tau = 0, which the paper shows overfits), with every setting
of the paper and its code inside (``PAPER_SETTINGS``, each citing its file). Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural Network
Optimization", NeurIPS 2019 (Algorithm 2, Sec. 5).

Example:
    >>> import optuna
    >>> from bnn_tune.search_spaces import bop
    >>> study = optuna.create_study()
    >>> cfg = bop.suggest(study.ask())
    >>> cfg["optimizer"], 1e-6 <= cfg["gamma"] <= 1e-1
    ('bop', True)
"""

from __future__ import annotations

from typing import Any

from ._common import REAL_LR, LogRange, check_overrides, ray_distribution, suggest_log

__all__ = ["GAMMA", "NAME", "PAPER_SETTINGS", "THRESHOLD", "naive_suggest", "ray_space", "suggest"]

NAME = "bop"
GAMMA = LogRange(1e-6, 1e-1)
# tau: samples in [1e-10, 1e-9) mean tau = 0 (the paper's unthresholded setting, Fig. 1)
THRESHOLD = LogRange(1e-9, 1e-3, zero_below=1e-9)
# gamma decay: x0.1 every 100 epochs (CIFAR-10, Sec. 5.2 and bop_sec52), linear to 1% (the ImageNet code
# recipe, gamma 1e-4 -> 1e-6), cosine to 1%
GAMMA_SCHEDULES = ("constant", "step:every=100,factor=0.1", "linear:end_factor=0.01", "cosine:end_factor=0.01")

PAPER_SETTINGS = [
    {"gamma": 1e-4, "threshold": 1e-8, "gamma_schedule": "step:every=100,factor=0.1", "lr": 1e-2,
     "source": "plumerai/rethinking-bnn-optimization bnn_optimization/models/binarynet.py bop_sec52 "
               "(CIFAR-10 BinaryNet, paper Sec. 5.2: 500 epochs, gamma x0.1 every 100, Adam 1e-2)"},
    {"gamma": 1e-4, "threshold": 1e-8, "gamma_schedule": "linear:end_factor=0.01", "lr": 2.5e-3,
     "source": "CuauSuarez/Bop2ndOrder (branch conference) bnn_optimization/models/birealnet_batch.py bop "
               "(ImageNet Bi-Real Net: gamma 1e-4 -> 1e-6 linear, Adam 2.5e-3 -> 5e-6)"},
    {"gamma": 5e-4, "threshold": 1e-7, "lr": 2.5e-3,
     "source": "Helwegen et al. 2019 paper text Sec. 5.3 (ImageNet; gamma and lr decayed to 2.5e-6)"},
    {"gamma": 1e-3, "threshold": 1e-6, "lr": 1e-2,
     "source": "plumerai/rethinking-bnn-optimization bnn_optimization/models/binarynet.py bop (Fig. 1 centre)"},
    {"gamma": 1e-2, "threshold": 1e-6, "source": "Helwegen et al. 2019 Fig. 1, aggressive gamma"},
    {"gamma": 1e-3, "threshold": 0.0, "source": "Helwegen et al. 2019 Fig. 1, tau = 0"},
    {"gamma": 1e-4, "threshold": 1e-8,
     "source": "CuauSuarez/Bop2ndOrder (branch conference) bnn_optimization/optimizers.py Bop defaults"},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample a Bop configuration (define-by-run; only ``trial.suggest_*`` calls).

    Args:
        trial: an ``optuna.Trial`` (or Ray's suggest captor).

    Returns:
        Flat config: ``optimizer``, ``gamma``, ``threshold`` (0 in the zero decade), ``gamma_schedule``,
        ``lr`` (Adam for the real-valued parameters).
    """
    return {
        "optimizer": NAME,
        "gamma": suggest_log(trial, "gamma", GAMMA),
        "threshold": suggest_log(trial, "threshold", THRESHOLD),
        "gamma_schedule": trial.suggest_categorical("gamma_schedule", list(GAMMA_SCHEDULES)),
        "lr": suggest_log(trial, "lr", REAL_LR),
    }


def naive_suggest(trial: Any) -> dict[str, Any]:
    """Bop searched the way a real-valued user would: gamma as a learning rate, tau linearly.

    gamma gets a typical learning-rate range (1e-4..1e-1) and the threshold a uniform range like a
    weight-decay coefficient (0..1e-3), so the paper's tau (1e-8..1e-6) gets almost no prior mass. The
    baseline against which :func:`suggest` is measured.
    """
    return {
        "optimizer": NAME,
        "gamma": trial.suggest_float("gamma", 1e-4, 1e-1, log=True),
        "threshold": trial.suggest_float("threshold", 0.0, 1e-3),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
    }


def ray_space(**overrides: Any) -> dict[str, Any]:
    """The same space as Ray Tune domains (``tune.loguniform``...); ``overrides`` replace or add keys.

    Example:
        >>> space = ray_space(epochs=10)  # doctest: +SKIP
    """
    from bnn_tune._imports import require

    tune = require("ray.tune", feature="bnn_tune.search_spaces.bop.ray_space()")
    space = {
        "optimizer": NAME,
        "gamma": ray_distribution(GAMMA),
        "threshold": ray_distribution(THRESHOLD),
        "gamma_schedule": tune.choice(list(GAMMA_SCHEDULES)),
        "lr": ray_distribution(REAL_LR),
    }
    return check_overrides(NAME, space, overrides)
