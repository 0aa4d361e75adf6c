"""Binary optimizers, their registry and the model-level builder.

=================  ==========================  ==================================================
registry name      class                       rule (see each class for the formulas)
=================  ==========================  ==================================================
``bop``            :class:`Bop`                flip where the gradient EMA is strong and aligned
``bop2``           :class:`Bop2ndOrder`        Bop on the EMA normalised by the gradients' RMS
``latent_adam``    :class:`LatentAdam`         Adam on latent weights, ``sign`` forward, clip
``bmd``            :class:`BMD`                Adam on ``w~``, forward ``tanh(beta_t w~)``
``bnew``           :class:`BNEW`               negative weight decay to the corners, then lock
``filter``         :class:`GradientFilter`     sign opposite to a 1st/2nd-order gradient filter
=================  ==========================  ==================================================

:func:`build` gives one optimizer for a whole model (binary weights to the chosen optimizer, the
rest to Adam, routed by :func:`route_parameters`); :class:`HyperparameterScheduler` drives any
``param_groups`` key (``gamma``, ``threshold``, ``alpha``, ``lr``...) along a schedule.

Decisions (the papers leave them open):

* Forward weight and flips. Bop, Bop2ndOrder and the filters keep +-1 in the parameter
  (``prepare_model`` binarizes the initial weights). LatentAdam, BMD and BNEW keep a real latent;
  the weight that is exported, and whose sign changes the flip rate counts, is ``sign(w~)``
  (``sign(0) = +1``). BMD computes with ``tanh(beta_t w~)`` in training mode and with ``sign(w~)``
  in eval mode, so validation accuracy is the deployable network's. BNEW computes with ``w`` clipped
  to [-1, 1], which is ``sign(w)`` once the lock has projected the weights.
* BMD's ``beta_t = beta0 * beta_growth ** (t / total_steps)``: ``beta_growth`` is the growth over
  the whole run, so the two numbers mean the same in short and long runs.
* BNEW's ``t_start`` and ``t_lock`` are fractions of the run's optimizer steps (``t_lock`` in
  (t_start, 1]; larger is "beyond the run" and raises); ``T`` is the number of phase-2 steps
  ``round(t_lock N) - round(t_start N)`` and ``beta_T = beta * T`` is ``lambda`` at the lock.
  Neither ``beta`` nor ``beta_T`` given: ``beta_T = 10 / (latent_lr * T)``, for which the
  regulariser grows the weights about ``exp(beta_T * latent_lr * T / 3) ~ 28x`` over phase 2.
* Latent methods take their own ``latent_lr``; the config's ``lr`` is the Adam rate of the real
  parameters. Registry hyperparameters may not reuse a common config key.
* ``foreach=None`` picks the multi-tensor path on CUDA and the single-tensor one on CPU (Bop's CPU
  path works in cache-sized blocks, see ``benchmarks/bench_optim_step.py``).

Example:
    >>> from bnn_tune import optim
    >>> optim.list_optimizers()
    ['bmd', 'bnew', 'bop', 'bop2', 'filter', 'latent_adam']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..schedules import HyperparameterScheduler, parse_schedule, schedule_factor, validate_schedule
from ._bmd import BMD, TanhSign, install_tanh_quantizers
from ._bnew import BNEW, ClipWeight, install_clip_quantizers
from ._bop import Bop
from ._bop2 import Bop2ndOrder
from ._build import CombinedOptimizer, build, route_parameters
from ._filter import GradientFilter
from ._latent_adam import LatentAdam
from ._registry import (
    ENTRY_POINT_GROUP,
    OptimizerSpec,
    get,
    list_optimizers,
    register,
    reserve_config_keys,
)

__all__ = [
    "BMD",
    "BNEW",
    "ENTRY_POINT_GROUP",
    "Bop",
    "Bop2ndOrder",
    "ClipWeight",
    "CombinedOptimizer",
    "GradientFilter",
    "HyperparameterScheduler",
    "LatentAdam",
    "OptimizerSpec",
    "TanhSign",
    "binarize_weights",
    "build",
    "get",
    "install_clip_quantizers",
    "install_tanh_quantizers",
    "list_optimizers",
    "parse_schedule",
    "register",
    "reserve_config_keys",
    "route_parameters",
    "schedule_factor",
    "validate_schedule",
]


def binarize_weights(model: nn.Module, hparams: Mapping[str, Any] | None = None) -> None:
    """``prepare_model`` of the latent-free optimizers: set every binary weight to ``sign(w)`` (+-1)."""
    from ..nn import binarize, is_binary_parameter

    with torch.no_grad():
        for p in model.parameters():
            if is_binary_parameter(p):
                p.copy_(binarize(p))


# ----------------------------------------------------------------------------- built-in registrations
# Defaults train the digits MLP of the test suite to >= 0.85 validation accuracy in a few epochs
# (tests/optim/test_training.py); the papers' settings for long CIFAR/ImageNet runs are in the
# docstrings and in search_spaces.


def _latent_make(params, hparams, *, lr, **_ctx):
    h = dict(hparams)
    latent_lr = h.pop("latent_lr", None)
    h.pop("init_scale", None)
    return LatentAdam(params, lr=lr if latent_lr is None else latent_lr, **h)


def _latent_prepare(model, hparams):
    from ..nn import is_binary_parameter

    scale = hparams.get("init_scale", None)
    if scale is None:
        return
    if not scale > 0:
        raise ValueError(f"`init_scale` must be > 0 or None, but got init_scale={scale!r}.")
    with torch.no_grad():
        for p in model.parameters():
            if is_binary_parameter(p):
                p.mul_(scale / max(p.abs().max().item(), 1e-12))


def _check_init_scale(params, hparams, **ctx):
    scale = hparams.get("init_scale", None)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
        raise ValueError(f"`init_scale` must be > 0 or None, but got init_scale={scale!r}.")
    return _latent_make(params, hparams, **ctx)


register(
    "latent_adam",
    LatentAdam,
    hyperparameters={"latent_lr": 1e-2, "init_scale": None, "betas": (0.9, 0.999), "eps": 1e-8,
                     "weight_decay": 0.0, "clip_value": 1.0},
    make=_check_init_scale,
    prepare_model=_latent_prepare,
    description="Adam on latent weights with the straight-through estimator and clipping to [-1, 1].",
    reference="Hubara et al. 2016; Larq 'Training BNNs' guide",
)

register(
    "bop",
    Bop,
    hyperparameters={"gamma": 1e-3, "threshold": 1e-6},
    make=lambda params, h, **_ctx: Bop(params, **h),
    prepare_model=binarize_weights,
    schedulable=("gamma", "threshold"),
    description="Bop: flip where |EMA of gradients| > threshold and its sign agrees with the weight's.",
    reference="Helwegen et al. 2019 (NeurIPS), Algorithm 2",
)

register(
    "bop2",
    Bop2ndOrder,
    hyperparameters={"gamma": 1e-2, "sigma": 1e-2, "threshold": 0.1, "eps": 1e-10},
    make=lambda params, h, **_ctx: Bop2ndOrder(params, **h),
    prepare_model=binarize_weights,
    schedulable=("gamma", "sigma", "threshold"),
    description="Bop with a second moment: flip where |m| / (sqrt(v) + eps) > threshold.",
    reference="Suarez-Ramirez et al. 2021; Helwegen et al. 2019 section 6",
)


def _bmd_make(params, hparams, *, lr, total_steps, **_ctx):
    h = dict(hparams)
    latent_lr = h.pop("latent_lr", None)
    return BMD(params, lr=lr if latent_lr is None else latent_lr, total_steps=total_steps, **h)


def _bmd_prepare(model, hparams):
    install_tanh_quantizers(model, hparams.get("beta0", 1.0))


register(
    "bmd",
    BMD,
    hyperparameters={"latent_lr": 1e-2, "beta0": 1.0, "beta_growth": 100.0, "betas": (0.9, 0.999), "eps": 1e-8},
    make=_bmd_make,
    prepare_model=_bmd_prepare,
    description="Mirror descent with the tanh map: Adam on w~, forward tanh(beta_t w~), beta_t growing.",
    reference="Ajanthan et al. 2021 (AISTATS); Paren & Poudel (BNEW poster)",
)

_BNEW_DEFAULT_PUSH = 10.0


def _bnew_make(params, hparams, *, lr, total_steps, **_ctx):
    from ._bnew import bnew_phase_steps

    h = dict(hparams)
    latent_lr = h.pop("latent_lr", None)
    eta = lr if latent_lr is None else latent_lr
    if h.get("beta") is None and h.get("beta_T") is None and isinstance(eta, (int, float)) and eta > 0:
        # Default: beta_T = 10 / (eta T). With lambda_t = beta_T s/T and eta_t = eta (1 - s/T) the
        # weights grow by about exp(sum 2 lambda_t eta_t) = exp(beta_T eta T / 3) = e^3.3 ~ 28x over
        # phase 2: the regulariser (not only the final projection) brings them to the corners.
        start, lock = bnew_phase_steps(int(total_steps), float(h.get("t_start", 0.25)), float(h.get("t_lock", 0.8)))
        h["beta_T"] = _BNEW_DEFAULT_PUSH / (eta * (lock - start))
    return BNEW(params, lr=eta, total_steps=total_steps, **h)


def _bnew_prepare(model, hparams):
    install_clip_quantizers(model)


register(
    "bnew",
    BNEW,
    hyperparameters={"latent_lr": 1e-2, "beta": None, "beta_T": None, "t_start": 0.25, "t_lock": 0.8,
                     "betas": (0.9, 0.999), "eps": 1e-8},
    make=_bnew_make,
    prepare_model=_bnew_prepare,
    description="BNEW: weights in [-1, 1], negative weight decay lambda_t = beta t, projection and lock.",
    reference="Paren & Poudel, 'Training Binarized Neural Networks the Easy Way'",
)

register(
    "filter",
    GradientFilter,
    hyperparameters={"order": 2, "gamma": 0.1, "alpha": 1e-2, "threshold": 0.0},
    make=lambda params, h, **_ctx: GradientFilter(params, **h),
    prepare_model=binarize_weights,
    schedulable=("gamma", "alpha", "threshold"),
    description="Sign opposite to a first/second-order gradient filter (alpha = lr * weight decay).",
    reference="Quist et al. 2023 (ICLR)",
)
