"""Bop, the latent-free Binary Optimizer (Helwegen et al. 2019, Algorithm 2 of seed 002)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ._common import check_in_range, flip_where_aligned_, use_foreach

__all__ = ["Bop"]


class Bop(torch.optim.Optimizer):
    r"""Binary Optimizer: flip a binary weight when a consistent, strong gradient signal asks for it.

    The parameters hold the binary weights themselves (+-1 values, see ``prepare_model`` of the
    ``"bop"`` registry entry, which binarizes the initial weights). Each step updates an exponential
    moving average of the (pseudo-)gradient and flips the weights it points against:

    .. math::

        m &\leftarrow (1 - \gamma)\, m + \gamma\, g \\
        w_i &\leftarrow -w_i \quad \text{if } |m_i| > \tau \text{ and } \operatorname{sign}(m_i) = \operatorname{sign}(w_i)

    The comparison is strict (Algorithm 2), so ``|m| == tau`` does not flip and ``m == 0`` never flips,
    also with ``tau = 0``. With ``tau = 0`` the binary weight after every step is ``-sign(m)`` (where
    ``m != 0``): Bop is then a latent-weight method whose latent weight is ``-m`` (see the paper's
    discussion; proven flip for flip in ``tests/optim``). Implemented as ``w <- -w where m * w > tau``,
    which equals the rule for ``w`` in {-1, +1}. NaN in ``m`` never flips. The state is one float per
    weight (``exp_avg``), against two for latent SGD with momentum and three for latent Adam.

    ``gamma`` and ``threshold`` live in ``param_groups`` so a
    :class:`~bnn_tune.optim.HyperparameterScheduler` can decay them (the paper decays gamma x0.1 every
    100 epochs on CIFAR-10: config ``gamma_schedule={"type": "step", "every": 100, "factor": 0.1}``).

    Args:
        params: the binary parameters (values in {-1, +1}) or parameter groups.
        gamma: adaptivity rate of the moving average, in (0, 1]. CIFAR-10: 1e-4 decayed x0.1 every 100
            epochs (paper Sec. 5.2 and code); ImageNet: the code's recipe is 1e-4 decayed linearly to 1e-6
            (Bop2ndOrder repo, ``birealnet_batch.py``), the paper text says 5e-4 decayed to 2.5e-6.
        threshold: flip threshold ``tau >= 0`` (larq's name). CIFAR-10: 1e-8; ImageNet: 1e-8 in the code,
            1e-7 in the paper text.
        foreach: use the multi-tensor (``torch._foreach_*``) path; ``None`` picks it on CUDA.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 1.0]))
        >>> opt = Bop([w], gamma=1.0, threshold=0.5)
        >>> w.grad = torch.tensor([2.0, 2.0, 0.1])
        >>> opt.step()
        >>> w.tolist()
        [-1.0, -1.0, 1.0]

    References:
        Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural Network
        Optimization", NeurIPS 2019 (Algorithm 2).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        gamma: float = 1e-4,
        threshold: float = 1e-8,
        *,
        foreach: bool | None = None,
    ) -> None:
        check_in_range("gamma", gamma, 0.0, 1.0, low_open=True)
        check_in_range("threshold", threshold, 0.0, None)
        super().__init__(params, dict(gamma=gamma, threshold=threshold, foreach=foreach))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One Bop step on every parameter that has a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Bop does not support sparse gradients.")
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
            if not params:
                continue
            fn = _multi_tensor_bop if use_foreach(group["foreach"], params) else _single_tensor_bop
            fn(params, grads, exp_avgs, gamma=group["gamma"], threshold=group["threshold"])
        return loss


_CPU_CHUNK = 1 << 14  # elements per CPU block: its m, w, g and scratch stay in L1/L2, and each op stays
# below torch's intra-op grain size (32768), so a block is processed by one thread without sync.


def _single_tensor_bop(params, grads, exp_avgs, *, gamma: float, threshold: float) -> None:
    for p, g, m in zip(params, grads, exp_avgs):
        if p.is_cuda or not (p.is_contiguous() and g.is_contiguous() and m.is_contiguous()):
            m.lerp_(g, gamma)  # m + gamma (g - m) = (1 - gamma) m + gamma g
            flip_where_aligned_([p], [m], threshold, foreach=False)
            continue
        # CPU: the same element-wise ops block by block, one small scratch buffer, one memory pass.
        pf, gf, mf = p.view(-1), g.view(-1), m.view(-1)
        n = pf.numel()
        scratch = torch.empty(min(n, _CPU_CHUNK), dtype=p.dtype)
        for i in range(0, n, _CPU_CHUNK):
            j = min(i + _CPU_CHUNK, n)
            mc, pc, s = mf[i:j], pf[i:j], scratch[: j - i]
            mc.lerp_(gf[i:j], gamma)
            torch.mul(mc, pc, out=s).gt_(threshold)  # 1.0 where m * w > tau
            pc.addcmul_(pc, s, value=-2.0)  # w <- w (1 - 2 mask)


def _multi_tensor_bop(params, grads, exp_avgs, *, gamma: float, threshold: float) -> None:
    torch._foreach_lerp_(exp_avgs, grads, gamma)
    flip_where_aligned_(params, exp_avgs, threshold, foreach=True)
