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
  (``sign(0) = +1``). BMD computes with ``tanh(beta_t w~)`` and BNEW with ``w`` clipped to [-1, 1] in
  training mode; both compute with ``sign(w~)`` in eval mode, so validation/test accuracy, checkpoint
  selection and export all see the deployable binary network. :func:`relaxed_weights` evaluates the
  relaxed network instead (the trainer reports it as ``val_acc_relaxed``).
* BMD's ``beta_t = beta0 * beta_growth ** (t / total_steps)``: ``beta_growth`` is the growth over
  the whole run, so the two numbers mean the same in short and long runs.
* BNEW follows the authors' code (push ``(1 + 2 reg_t)`` with ``reg_t`` linear in t and no step size,
  push and clamp before the Adam step, a fresh Adam for phase 2). ``t_start`` and ``t_lock`` are
  fractions of the run's optimizer steps (``t_lock`` in (t_start, 1]; larger is "beyond the run" and
  raises); ``T`` is the number of phase-2 steps ``round(t_lock N) - round(t_start N)`` and
  ``beta_T = beta * T`` is ``reg`` at the lock. Neither ``beta`` nor ``beta_T`` given:
  ``beta_T = 10 / (T + 1)``, for which the push alone grows a weight by ``prod (1 + 2 reg_t) ~ e^10``
  over phase 2 (the reference's CIFAR-10 run, ``reg = 1e-4`` over ~3.8e5 steps, is ~e^38).
* Schedules: ``lr_schedule`` drives only the real-valued parameters' Adam; ``<key>_schedule`` of a
  binary hyperparameter drives only the binary optimizer's ``param_groups`` entry for that key
  (``latent_lr`` is the binary optimizer's ``lr``), see :func:`schedule_target`.
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

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
    "has_relaxed_weights",
    "install_clip_quantizers",
    "install_tanh_quantizers",
    "list_optimizers",
    "parse_schedule",
    "register",
    "relaxed_weights",
    "reserve_config_keys",
    "route_parameters",
    "schedule_target",
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


@contextmanager
def relaxed_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, quantizers with a relaxed form (:class:`ClipWeight`, :class:`TanhSign`) compute
    with it in eval mode too (BNEW's clipped real weights, BMD's ``tanh(beta_t w~)``) instead of the sign.

    Example:
        >>> from bnn_tune.nn import BinaryLinear
        >>> layer = BinaryLinear(2, 1, input_quantizer=None)
        >>> _ = install_clip_quantizers(layer)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.5, -0.25]]))
        >>> layer.eval().quantized_weight().tolist()
        [[1.0, -1.0]]
        >>> with relaxed_weights(layer):
        ...     layer.quantized_weight().tolist()
        [[0.5, -0.25]]
    """
    mods = [m for m in model.modules() if isinstance(m, (ClipWeight, TanhSign))]
    for m in mods:
        m.relaxed = True
    try:
        yield model
    finally:
        for m in mods:
            m.relaxed = False


def has_relaxed_weights(model: nn.Module) -> bool:
    """Whether ``model`` has a quantizer whose relaxed form differs from its eval-mode sign."""
    return any(isinstance(m, (ClipWeight, TanhSign)) for m in model.modules())


def schedule_target(optimizer: torch.optim.Optimizer, spec: OptimizerSpec, key: str
                    ) -> tuple[torch.optim.Optimizer, str]:
    """``(sub-optimizer, param_groups key)`` that the config's ``<key>_schedule`` drives.

    ``lr`` is the real-valued parameters' Adam rate (part ``"real"`` of a :class:`CombinedOptimizer`);
    every other key is a hyperparameter of the binary optimizer (``spec.group_key`` maps config names
    such as ``latent_lr`` to the group key ``lr``). A key that the target's ``param_groups`` do not
    carry raises ``ValueError`` naming it.
    """
    parts = getattr(optimizer, "optimizers", None)
    if key == "lr":
        target = parts.get("real") if parts is not None else optimizer
        if target is None:
            raise ValueError("`lr_schedule` drives the real-valued parameters' Adam, but this model has no "
                             "real-valued trainable parameters; remove `lr_schedule`.")
        return target, "lr"
    if key not in spec.schedulable:
        raise ValueError(f"`{key}_schedule`: {key!r} is not a schedulable hyperparameter of optimizer "
                         f"{spec.name!r}; schedulable: {['lr', *spec.schedulable]}.")
    target = parts["binary"] if parts is not None else optimizer
    gkey = spec.group_key(key)
    if not any(gkey in g for g in target.param_groups):
        raise ValueError(f"`{key}_schedule`: no parameter group of {type(target).__name__} carries {gkey!r}; "
                         f"schedulable keys of optimizer {spec.name!r}: {['lr', *spec.schedulable]}.")
    return target, gkey


# ----------------------------------------------------------------------------- built-in registrations
# Defaults train the digits MLP of the test suite to >= 0.85 validation accuracy in a few epochs
# (tests/optim/test_training.py); the papers' settings for long CIFAR/ImageNet runs are in the
# docstrings and in search_spaces.


def _latent_make(params, hparams, *, lr, **_ctx):
    h = dict(hparams)
    latent_lr = h.pop("latent_lr", None)
    h.pop("init_scale", None)
    h.pop("init_steps", None)
    return LatentAdam(params, lr=lr if latent_lr is None else latent_lr, **h)


def _latent_init_scale(hparams) -> float | None:
    """The initial latent scale: ``init_scale``, or ``init_steps * latent_lr`` (capped at ``clip_value``) when the initial
    inertia is given in consistent steps (``init_steps``, the latent_adam search space's coordinate); both given
    must agree (relative 1e-6)."""
    scale, steps = hparams.get("init_scale", None), hparams.get("init_steps", None)
    if steps is None:
        return scale
    latent_lr = hparams.get("latent_lr", 1e-2)
    clip = hparams.get("clip_value", 1.0)
    derived = float(steps) * float(latent_lr)
    if clip is not None:  # clip_value=None: no clipping, nothing to cap at
        derived = min(float(clip), derived)
    if scale is not None and not math.isclose(float(scale), derived, rel_tol=1e-6):
        raise ValueError(f"`init_scale`={scale!r} disagrees with `init_steps`={steps!r} x `latent_lr`={latent_lr!r} "
                         f"(capped at clip_value) = {derived!r}; give one of them.")
    return derived


def _latent_prepare(model, hparams):
    from ..nn import is_binary_parameter

    scale = _latent_init_scale(hparams)
    if scale is None:
        return
    if not scale > 0:
        raise ValueError(f"`init_scale` must be > 0 or None, but got init_scale={scale!r}.")
    with torch.no_grad():
        for p in model.parameters():
            if is_binary_parameter(p):
                p.mul_(scale / max(p.abs().max().item(), 1e-12))


def _check_init_scale(params, hparams, **ctx):
    for key in ("init_scale", "init_steps"):
        v = hparams.get(key, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ValueError(f"`{key}` must be > 0 or None, but got {key}={v!r}.")
    _latent_init_scale(hparams)  # both given: they must agree
    return _latent_make(params, hparams, **ctx)


register(
    "latent_adam",
    LatentAdam,
    hyperparameters={"latent_lr": 1e-2, "init_scale": None, "init_steps": None, "betas": (0.9, 0.999), "eps": 1e-8,
                     "weight_decay": 0.0, "clip_value": 1.0},
    make=_check_init_scale,
    prepare_model=_latent_prepare,
    schedulable=("latent_lr", "weight_decay", "clip_value", "eps"),
    group_keys={"latent_lr": "lr"},
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
    hyperparameters={"gamma": 1e-6, "sigma": 1e-2, "threshold": 1e-6, "eps": 1e-10},  # the authors' defaults
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
    schedulable=("latent_lr",),  # beta_t follows beta0 * beta_growth ** (t / T) by construction
    group_keys={"latent_lr": "lr"},
    description="Mirror descent with the tanh map: Adam on w~, forward tanh(beta_t w~), beta_t growing.",
    reference="Ajanthan et al. 2021 (AISTATS); Paren & Poudel (BNEW poster)",
)

_BNEW_DEFAULT_PUSH = 10.0
_BNEW_T_START, _BNEW_T_LOCK = 0.17, 0.98  # the reference's CIFAR-10 phases (200 + 980 of 1200 epochs)


def _bnew_make(params, hparams, *, lr, total_steps, **_ctx):
    from ._bnew import bnew_phase_steps

    h = dict(hparams)
    latent_lr = h.pop("latent_lr", None)
    eta = lr if latent_lr is None else latent_lr
    if h.get("beta") is None and h.get("beta_T") is None:
        # Default: beta_T = 10 / (T + 1). With reg_t = beta_T (s + 1) / T the push alone grows a weight by
        # prod (1 + 2 reg_t) ~ exp(sum 2 reg_t) = exp(beta_T (T + 1)) = e^10 over phase 2: the regulariser
        # (not only the final projection) brings the weights to the corners.
        t_start, t_lock = h.get("t_start", _BNEW_T_START), h.get("t_lock", _BNEW_T_LOCK)
        if isinstance(t_start, (int, float)) and isinstance(t_lock, (int, float)):
            start, lock = bnew_phase_steps(int(total_steps), float(t_start), float(t_lock))
            h["beta_T"] = _BNEW_DEFAULT_PUSH / (lock - start + 1)
    return BNEW(params, lr=eta, total_steps=total_steps, **h)


def _bnew_prepare(model, hparams):
    install_clip_quantizers(model)


register(
    "bnew",
    BNEW,
    hyperparameters={"latent_lr": 1e-2, "beta": None, "beta_T": None, "t_start": _BNEW_T_START,
                     "t_lock": _BNEW_T_LOCK, "betas": (0.9, 0.999), "eps": 1e-8},
    make=_bnew_make,
    prepare_model=_bnew_prepare,
    schedulable=("latent_lr",),  # reg_t and the phases follow the run by construction
    group_keys={"latent_lr": "lr"},
    description="BNEW: weights in [-1, 1], negative weight decay reg_t = beta t, projection and lock.",
    reference="Paren & Poudel, 'Training Binarized Neural Networks the Easy Way'; github.com/Alasdair-P/bnew",
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
