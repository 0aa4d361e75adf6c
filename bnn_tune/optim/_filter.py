"""Gradient-filter optimizers for binary weights (Quist et al., ICLR 2023, seed 004)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ._common import (
    check_in_range,
    flip_where_aligned_,
    mark_if_sign_valued,
    remark_sign_valued,
    sign_marks,
    use_foreach,
)

__all__ = ["GradientFilter"]


class GradientFilter(torch.optim.Optimizer):
    r"""Flip binary weights against the output of a first- or second-order low-pass gradient filter.

    The parameters hold +-1 weights. The gradient passes through one (``order=1``) or two
    (``order=2``, the "cascaded EMA" of the paper's code) exponential moving averages, and the binary
    weight is set to the sign *opposite* to the filter output ``y``:

    .. math::

        m &\leftarrow (1 - \gamma)\, m + \gamma\, g \\
        i &\leftarrow (1 - \alpha)\, i + \alpha\, m \qquad (\text{order 2 only; } y = i, \text{ else } y = m) \\
        w_j &\leftarrow -w_j \quad \text{if } y_j\, w_j > \tau

    With ``threshold`` ``tau = 0`` (the default) this keeps ``w = -sign(y)`` wherever ``y != 0``;
    ``y = 0`` never flips. ``order=1`` is Bop's rule (``m`` compared with ``tau``).

    **Why these are the magnitude hyperparameters of latent-weight training.** Latent SGD with EMA
    momentum and decoupled weight decay,

    .. math::

        m \leftarrow (1-\gamma) m + \gamma g, \qquad \tilde w \leftarrow (1 - \eta\lambda)\,\tilde w - \eta\, m,
        \qquad w = \operatorname{sign}(\tilde w),

    is, with the substitution ``i = -lambda * w~`` (``lambda > 0``),
    ``i <- (1 - eta*lambda) i + eta*lambda m``: the order-2 filter with **alpha = eta * lambda**, and
    ``sign(w~) = -sign(i)`` at every step, provided the filter starts at ``i_0 = -lambda * w~_0``.
    Learning rate and weight decay only enter through their product alpha; the latent initial scale
    only sets ``i_0``, a transient that decays like ``(1 - alpha)^t`` (the filter starts at ``i_0 = 0``).
    A learning-rate schedule ``eta_t`` is an ``alpha`` schedule: config ``alpha_schedule``. The test
    ``tests/optim`` checks the mapping flip for flip.

    Args:
        params: the binary parameters (values in {-1, +1}) or parameter groups.
        order: 1 (one EMA, Bop-like) or 2 (cascaded EMA).
        gamma: adaptivity rate of the gradient EMA, in (0, 1] (``1 - momentum`` of latent SGD).
        alpha: rate of the second filter, in (0, 1] (``lr * weight_decay``); unused for order 1 but
            kept in ``param_groups`` so one config serves both orders.
        threshold: flip threshold ``tau >= 0`` on the filter output.
        foreach: use the multi-tensor path; ``None`` picks it on CUDA.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> opt = GradientFilter([w], order=2, gamma=1.0, alpha=0.5)
        >>> w.grad = torch.tensor([1.0, -1.0])
        >>> opt.step()
        >>> w.tolist()
        [-1.0, 1.0]

    References:
        Quist, Tang, van Gemert et al., "Understanding Weight-Magnitude Hyperparameters in Training
        Binary Networks", ICLR 2023.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        order: int = 2,
        gamma: float = 0.1,
        alpha: float = 1e-2,
        threshold: float = 0.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"`order` must be 1 or 2, but got order={order!r}.")
        check_in_range("gamma", gamma, 0.0, 1.0, low_open=True)
        check_in_range("alpha", alpha, 0.0, 1.0, low_open=True)
        check_in_range("threshold", threshold, 0.0, None)
        super().__init__(params, dict(order=int(order), gamma=gamma, alpha=alpha, threshold=threshold,
                                      foreach=foreach))
        for group in self.param_groups:
            mark_if_sign_valued(group["params"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One filter step on every parameter that has a gradient (``closure`` re-evaluates the loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            order = group["order"]
            params, grads, exp_avgs, inertias = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("GradientFilter does not support sparse gradients.")
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if order == 2 and "inertia" not in state:
                    state["inertia"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                if order == 2:
                    inertias.append(state["inertia"])
            if not params:
                continue
            fn = _multi_tensor_filter if use_foreach(group["foreach"], params) else _single_tensor_filter
            marks = sign_marks(params)
            fn(params, grads, exp_avgs, inertias, order=order, gamma=group["gamma"], alpha=group["alpha"],
               threshold=group["threshold"])
            remark_sign_valued(params, marks)
        return loss


def _single_tensor_filter(params, grads, exp_avgs, inertias, *, order, gamma, alpha, threshold) -> None:
    for j, (p, g, m) in enumerate(zip(params, grads, exp_avgs)):
        m.lerp_(g, gamma)
        y = m
        if order == 2:
            y = inertias[j].lerp_(m, alpha)
        flip_where_aligned_([p], [y], threshold, foreach=False)


def _multi_tensor_filter(params, grads, exp_avgs, inertias, *, order, gamma, alpha, threshold) -> None:
    torch._foreach_lerp_(exp_avgs, grads, gamma)
    out = exp_avgs
    if order == 2:
        torch._foreach_lerp_(inertias, exp_avgs, alpha)
        out = inertias
    flip_where_aligned_(params, out, threshold, foreach=True)
