"""LatentAdam: Adam on real-valued latent weights, forward ``sign(w~)``, latents clipped to [-1, 1].

The straight-through-estimator baseline of seeds 000/001 (Hubara et al. 2016; Larq's default recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..nn import mark_bounded
from ._common import adam_update_, check_betas, check_in_range, gather_adam_group, use_foreach

__all__ = ["LatentAdam"]


class LatentAdam(torch.optim.Optimizer):
    r"""Adam on latent weights followed by a clip to ``[-clip_value, clip_value]``.

    The binary layers compute with ``sign(w~)`` (``sign(0) = +1``) and receive the straight-through
    pseudo-gradient of ``ste_sign``, ``dL/dw~ = dL/dw * 1[|w~| <= 1]``. Each step is Adam's
    (same arithmetic as :class:`torch.optim.Adam`; ``weight_decay`` is coupled L2) followed by

    .. math::  \tilde w \leftarrow \operatorname{clip}(\tilde w, -c, c)

    ``clip_value=None`` disables the clip: with an unclipped straight-through estimator this is the
    setting of the Bop paper's Theorem 1, where scaling ``lr`` and the initial latent weights by the
    same ``C`` leaves every binary weight unchanged. Flips are sign changes of ``w~``.

    Args:
        params: the binary (latent) parameters or parameter groups.
        lr: Adam step size in latent units (redundant with the latent init scale, see Theorem 1).
        betas: Adam's moment rates, each in [0, 1).
        eps: Adam's denominator epsilon, ``>= 0``.
        weight_decay: L2 penalty added to the gradient, ``>= 0``.
        clip_value: latent weights are clipped to ``[-clip_value, clip_value]``; ``None`` = no clip.
        foreach: use the multi-tensor path; ``None`` picks it on CUDA.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([0.999, -0.5]))
        >>> opt = LatentAdam([w], lr=0.1)
        >>> w.grad = torch.tensor([-1.0, -1.0])
        >>> opt.step()
        >>> [round(x, 3) for x in w.tolist()]
        [1.0, -0.4]

    References:
        Hubara et al., "Binarized Neural Networks", NeurIPS 2016. Larq, "Training BNNs" (seed 000).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_value: float | None = 1.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        check_in_range("lr", lr, 0.0, None, low_open=True)
        check_betas(betas)
        check_in_range("eps", eps, 0.0, None)
        check_in_range("weight_decay", weight_decay, 0.0, None)
        check_in_range("clip_value", clip_value, 0.0, None, low_open=True, allow_none=True)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      clip_value=clip_value, foreach=foreach))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One Adam step and clip on every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = gather_adam_group(self, group)
            if not params:
                continue
            foreach = use_foreach(group["foreach"], params)
            beta1, beta2 = group["betas"]
            adam_update_(params, grads, exp_avgs, exp_avg_sqs, steps, lr=group["lr"], beta1=beta1, beta2=beta2,
                         eps=group["eps"], weight_decay=group["weight_decay"], foreach=foreach)
            c = group["clip_value"]
            if c is not None:
                if foreach:
                    torch._foreach_clamp_min_(params, -c)
                    torch._foreach_clamp_max_(params, c)
                else:
                    for p in params:
                        p.clamp_(-c, c)
                for p in params:  # |w~| <= c now: the layers skip the all-ones STE mask (bnn_tune.nn.is_bounded)
                    mark_bounded(p, c)
        return loss
