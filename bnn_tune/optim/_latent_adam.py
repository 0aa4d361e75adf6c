"""LatentAdam: Adam on real-valued latent weights, forward ``sign(w~)``, latents clipped to [-1, 1].

The straight-through-estimator baseline of seeds 000/001 (Hubara et al. 2016; Larq's default recipe).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["LatentAdam"]


class LatentAdam(torch.optim.Adam):
    """Adam on latent weights followed by a clip to ``[-clip_value, clip_value]``.

    The update is :class:`torch.optim.Adam`'s (decoupled from the clip), then
    ``w~ <- clamp(w~, -clip_value, clip_value)``. ``clip_value=None`` disables the clip (the setting of
    the Bop paper's Theorem 1).

    Args:
        params: the binary (latent) parameters.
        lr: Adam step size (in latent units: it is redundant with ``init_scale``, see Theorem 1).
        betas, eps, weight_decay: as :class:`torch.optim.Adam` (weight decay is L2, coupled).
        clip_value: latent weights are clipped to ``[-clip_value, clip_value]``; ``None`` = no clip.

    References:
        Hubara et al., "Binarized Neural Networks", NeurIPS 2016.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_value: float | None = 1.0,
    ) -> None:
        if clip_value is not None and not clip_value > 0:
            raise ValueError(f"`clip_value` must be > 0 or None, but got clip_value={clip_value}.")
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, but got lr={lr}.")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("clip_value", clip_value)
        self.defaults["clip_value"] = clip_value

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = super().step(closure)
        for group in self.param_groups:
            c = group["clip_value"]
            if c is None:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                torch._foreach_clamp_min_(params, -c)
                torch._foreach_clamp_max_(params, c)
        return loss
