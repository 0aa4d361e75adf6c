"""Helpers shared by the binary optimizers (validation messages, foreach choice, flip kernels)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .._validate import check_range
from ..nn import is_sign_valued, mark_sign_valued

__all__: list[str] = []


def check_in_range(name: str, value: Any, low: float | None, high: float | None, *, low_open: bool = False,
                   high_open: bool = False, allow_none: bool = False) -> None:
    """The project's one range check (:func:`bnn_tune._validate.check_range`) for an optimizer argument:
    "`gamma` must be in (0, 1], but got gamma=1.5."."""
    check_range(name, value, low, high, low_open=low_open, high_open=high_open, none_ok=allow_none)


def check_betas(betas: Any) -> None:
    """Adam's ``betas``: two numbers in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"`betas` must be a pair (beta1, beta2), but got betas={betas!r}.")
    check_in_range("betas[0]", betas[0], 0.0, 1.0, high_open=True)
    check_in_range("betas[1]", betas[1], 0.0, 1.0, high_open=True)


def use_foreach(foreach: bool | None, params: Sequence[torch.Tensor]) -> bool:
    """Resolve ``foreach=None`` like torch.optim: the multi-tensor path when every tensor is on CUDA."""
    if foreach is not None:
        return bool(foreach)
    return bool(params) and all(p.is_cuda for p in params) and not torch.jit.is_scripting()


def flip_where_aligned_(weights: list[torch.Tensor], signals: list[torch.Tensor], threshold: float, *,
                        foreach: bool) -> None:
    """``w <- -w`` where ``signal * w > threshold`` (in place).

    For ``w`` in {-1, +1} and ``threshold >= 0`` this is exactly "``|signal| > threshold`` and
    ``sign(signal) = sign(w)``" (Bop's rule): ``signal * w`` is ``+|signal|`` when the signs agree and
    ``-|signal|`` otherwise, and the product of a float with +-1 is exact. ``signal = 0`` never flips.
    ``signals`` are not modified.
    """
    if foreach:
        prods = torch._foreach_mul(signals, weights)
        # prod - t > 0  <=>  prod > t exactly in IEEE arithmetic, so sign(max(prod - t, 0)) is the mask.
        torch._foreach_sub_(prods, threshold)
        torch._foreach_clamp_min_(prods, 0.0)
        torch._foreach_sign_(prods)
        torch._foreach_addcmul_(weights, weights, prods, value=-2.0)  # w <- w (1 - 2 mask)
        return
    for w, s in zip(weights, signals):
        mask = torch.mul(s, w).gt_(threshold)  # 1.0 where it flips, 0.0 elsewhere
        w.addcmul_(w, mask, value=-2.0)


def mark_if_sign_valued(params: Sequence[torch.Tensor]) -> None:
    """Mark the tensors whose values are all exactly +-1 (:func:`bnn_tune.nn.mark_sign_valued`).

    Called once when a latent-free optimizer is built (one host sync per tensor, never per step).
    """
    for p in params:
        if p.numel() and bool((p.abs() == 1).all()):
            mark_sign_valued(p)


def sign_marks(params: Sequence[torch.Tensor]) -> list[bool]:
    """Which of ``params`` are sign-valued before a step (pass the list to :func:`remark_sign_valued`)."""
    return [is_sign_valued(p) for p in params]


def remark_sign_valued(params: Sequence[torch.Tensor], marks: Sequence[bool]) -> None:
    """After a step that only flipped signs (``w <- w (1 - 2 mask)``, mask in {0, 1}), a +-1 tensor is
    still +-1: renew the marks of the tensors that had one."""
    for p, m in zip(params, marks):
        if m:
            mark_sign_valued(p)


def init_adam_state(state: dict[str, Any], p: torch.Tensor) -> None:
    """Lazy Adam state: ``step`` (0-dim float tensor), ``exp_avg``, ``exp_avg_sq``."""
    if len(state) == 0:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def gather_adam_group(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> tuple[list[torch.Tensor], ...]:
    """``(params, grads, exp_avgs, exp_avg_sqs, steps)`` of the parameters of ``group`` that have a
    gradient, with their Adam state created on first use (the lists :func:`adam_update_` takes)."""
    params: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    exp_avgs: list[torch.Tensor] = []
    exp_avg_sqs: list[torch.Tensor] = []
    steps: list[torch.Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients.")
        state = optimizer.state[p]
        init_adam_state(state, p)
        params.append(p)
        grads.append(p.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        steps.append(state["step"])
    return params, grads, exp_avgs, exp_avg_sqs, steps


def adam_update_(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr: float, beta1: float, beta2: float,
                 eps: float, weight_decay: float = 0.0, foreach: bool) -> None:
    """One Adam step ``w <- w - lr * m_hat / (sqrt(v_hat) + eps)`` in place (L2 ``weight_decay``).

    The arithmetic follows :func:`torch.optim.adam` (bias corrections folded into the step size and
    the denominator), in a single-tensor loop or with ``torch._foreach_*`` kernels.
    """
    if foreach:
        torch._foreach_add_(steps, 1.0)
        if weight_decay != 0.0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        step_vals = [float(s) for s in steps]
        step_sizes = [-lr / (1.0 - beta1**t) for t in step_vals]
        bc2_sqrt = [math.sqrt(1.0 - beta2**t) for t in step_vals]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)
        return
    for p, g, m, v, s in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        s.add_(1.0)
        t = float(s)
        if weight_decay != 0.0:
            g = g.add(p, alpha=weight_decay)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = (v.sqrt() / math.sqrt(1.0 - beta2**t)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))
