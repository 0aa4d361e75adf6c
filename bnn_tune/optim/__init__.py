"""Binary optimizers, their registry and the model-level builder.

Example:
    >>> from bnn_tune import optim
    >>> "latent_adam" in optim.list_optimizers()
    True
"""

from __future__ import annotations

from ._build import CombinedOptimizer, build
from ._latent_adam import LatentAdam
from ._registry import OptimizerSpec, get, list_optimizers, register
from ._schedule import HyperparameterScheduler, parse_schedule, schedule_factor, validate_schedule

__all__ = [
    "CombinedOptimizer",
    "HyperparameterScheduler",
    "LatentAdam",
    "OptimizerSpec",
    "build",
    "get",
    "list_optimizers",
    "parse_schedule",
    "register",
    "schedule_factor",
    "validate_schedule",
]


def _latent_make(params, hparams, *, lr, **_ctx):
    h = dict(hparams)
    latent_lr = h.pop("latent_lr", None)
    h.pop("init_scale", None)
    return LatentAdam(params, lr=lr if latent_lr is None else latent_lr, **h)


def _latent_prepare(model, hparams):
    import torch

    from ..nn import is_binary_parameter

    scale = hparams.get("init_scale", None)
    if scale is None:
        return
    with torch.no_grad():
        for p in model.parameters():
            if is_binary_parameter(p):
                p.mul_(scale / max(p.abs().max().item(), 1e-12))


register(
    "latent_adam",
    LatentAdam,
    hyperparameters={"latent_lr": None, "init_scale": None, "betas": (0.9, 0.999), "eps": 1e-8,
                     "weight_decay": 0.0, "clip_value": 1.0},
    make=_latent_make,
    prepare_model=_latent_prepare,
    description="Adam on latent weights with the straight-through estimator and clipping to [-1, 1].",
    reference="Hubara et al. 2016; Larq 'Training BNNs' guide",
)
