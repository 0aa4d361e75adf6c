"""BNEW: Binarized Networks the Easy Way (Paren & Poudel, seed 001)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..nn import binarize, is_binary_parameter
from ._common import adam_update_, check_betas, check_in_range, gather_adam_group, use_foreach

__all__ = ["BNEW", "ClipWeight", "install_clip_quantizers"]


class _ClipFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return w.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad


class ClipWeight(nn.Module):
    """Weight quantizer of BNEW: ``clip(w, -1, 1)`` in training, ``sign(w)`` in eval mode.

    In training mode the forward weight is the relaxed real weight clipped to ``[-1, 1]`` (gradient
    handed through unchanged). In eval mode (validation, test, checkpoint selection, export) the layer
    computes with the hard sign ``sign(w)`` (``sign(0) = +1``): the binary network that is deployed, as
    :class:`~bnn_tune.optim.TanhSign` does for BMD. After BNEW's lock the weights are exactly +-1 and the
    two coincide. Set :attr:`relaxed` (or use :func:`bnn_tune.optim.relaxed_weights`) to evaluate the
    relaxed network instead.
    """

    relaxed: bool = False

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training or self.relaxed:
            return _ClipFn.apply(w)
        return binarize(w)


def install_clip_quantizers(model: nn.Module) -> list[ClipWeight]:
    """Replace the weight quantizer of every binary layer by :class:`ClipWeight` and clip the weights."""
    out = []
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and is_binary_parameter(w) and hasattr(module, "weight_quantizer"):
            module.weight_quantizer = ClipWeight()
            with torch.no_grad():
                w.clamp_(-1.0, 1.0)
            out.append(module.weight_quantizer)
    return out


def bnew_phase_steps(total_steps: int, t_start: float, t_lock: float) -> tuple[int, int]:
    """``(S, L)``: phase 2 covers steps ``S <= t < L``; the lock (projection) happens at step ``L - 1``.

    ``S = round(t_start * total_steps)``, ``L = max(round(t_lock * total_steps), S + 1)``; the number
    of phase-2 steps is ``T = L - S >= 1``.
    """
    start = int(round(t_start * total_steps))
    lock = max(int(round(t_lock * total_steps)), start + 1)
    return start, lock


class BNEW(torch.optim.Optimizer):
    r"""BNEW: relax to ``[-1, 1]``, push to the corners with a negative weight decay, then lock.

    The binary layers use the real weights clipped to ``[-1, 1]`` in the forward pass of training
    (:class:`ClipWeight`, installed by the ``"bnew"`` entry's ``prepare_model``; evaluation uses their
    sign) and the model is trained in four phases over ``total_steps`` optimizer steps (``t = 0, 1, ...``),
    following the authors' code (Alasdair-P/bnew ``prox.py``: ``u_reg`` and ``prox_opt.adjust_reg``;
    ``binary_main.py``: ``post_update`` runs between ``backward`` and ``optimizer.step``):

    1. ``t < S``: binary activations, real weights; every step clamps the weights to ``[-1, 1]`` and then
       takes an Adam step of size ``eta_t = lr (1 - t/S)`` (the reference's "convex_hull" phase 1).
    2. ``S <= t < L`` (``s = t - S``, ``T = L - S``): a fresh Adam (moments and bias correction reset at
       ``t = S``, as the reference starts phase 2 as a new run), and every step is

       .. math::  w \leftarrow \Pi_{[-1,1]}\big((1 + 2\,\mathrm{reg}_t)\, w\big), \qquad
                  w \leftarrow w - \eta_t\, d_t

       with ``reg_t = beta (s + 1)`` growing linearly (no ``eta`` in the push, strongest at the end),
       ``d_t`` Adam's direction and ``eta_t = lr (1 - s / (N - S))`` decaying linearly over the rest of
       the run (``N = total_steps``; the reference's phase-2 run continues past the lock). The push is
       the gradient step of the regulariser ``reg (p - ||w||^2)`` (a negative weight decay).
    3. At the last phase-2 step ``t = L - 1`` the weights are projected onto {-1, +1}
       (``sign``, ``sign(0) = +1``) and frozen: later gradients are ignored.
    4. ``t >= L``: only the real-valued parameters (batch-norm, first/last layers; the other part of
       :func:`~bnn_tune.optim.build`) are fine-tuned.

    Phase boundaries are fractions of the run: ``S = round(t_start * total_steps)`` and
    ``L = round(t_lock * total_steps)`` (the reference's CIFAR-10 recipe, 200 epochs of phase 1 and a
    1000-epoch phase 2 frozen at epoch 980, is ``t_start ~ 0.17``, ``t_lock ~ 0.98``). **T = L - S is the
    number of phase-2 steps**, and ``beta_T = beta * T`` is the value ``reg_t`` reaches at the lock (the
    reference's ``--reg``, 1e-4 to 1e-3 on CIFAR-10). Give exactly one of ``beta`` (per step) and
    ``beta_T``. ``t_lock = 1`` locks at the last step of the run (no phase 4).

    Args:
        params: the binary parameters (real values in ``[-1, 1]``).
        lr: Adam step size ``eta`` (the initial value of each linear decay).
        betas, eps: Adam's moment rates and epsilon.
        beta: slope of ``reg_t`` per step, ``>= 0``.
        beta_T: ``beta * T``, ``>= 0``.
        t_start: fraction of the run spent in phase 1, in ``[0, t_lock)``.
        t_lock: fraction of the run at which the weights are projected and frozen, in ``(t_start, 1]``.
        total_steps: optimizer steps of the run (``epochs * steps_per_epoch``).
        foreach: use the multi-tensor path; ``None`` picks it on CUDA.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
        >>> opt = BNEW([w], lr=0.1, beta_T=5.0, t_start=0.0, t_lock=1.0, total_steps=3)
        >>> for _ in range(3):
        ...     w.grad = torch.tensor([-0.1, 0.1]); opt.step()
        >>> w.tolist()
        [1.0, -1.0]

    References:
        Paren & Poudel, "Training Binarized Neural Networks the Easy Way" (Toshiba, poster);
        code: github.com/Alasdair-P/bnew (``prox.py``, ``binary_main.py``, ``reproduce/cifar10/10bnew.py``).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        beta: float | None = None,
        beta_T: float | None = None,
        t_start: float = 0.17,
        t_lock: float = 0.98,
        total_steps: int,
        foreach: bool | None = None,
    ) -> None:
        check_in_range("lr", lr, 0.0, None, low_open=True)
        check_betas(betas)
        check_in_range("eps", eps, 0.0, None)
        if (beta is None) == (beta_T is None):
            raise ValueError(
                f"Give exactly one of `beta` (per step) and `beta_T` (= beta * T), but got beta={beta!r}, "
                f"beta_T={beta_T!r}."
            )
        check_in_range("beta", beta, 0.0, None, allow_none=True)
        check_in_range("beta_T", beta_T, 0.0, None, allow_none=True)
        check_in_range("total_steps", total_steps, 1, None)
        if not float(total_steps).is_integer():
            raise ValueError(f"`total_steps` must be an integer, but got total_steps={total_steps!r}.")
        check_in_range("t_lock", t_lock, 0.0, 1.0, low_open=True)  # "beyond the run" = t_lock > 1
        check_in_range("t_start", t_start, 0.0, 1.0, high_open=True)
        if not t_start < t_lock:
            raise ValueError(
                f"`t_start` must be in [0, t_lock) = [0, {t_lock}), but got t_start={t_start!r} "
                "(phase 1 must end before the lock)."
            )
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, beta=beta, beta_T=beta_T,
                                      t_start=float(t_start), t_lock=float(t_lock), total_steps=int(total_steps),
                                      foreach=foreach))
        for group in self.param_groups:
            group.setdefault("num_steps", 0)
            group.setdefault("reg_t", 0.0)

    @staticmethod
    def schedule(group: dict[str, Any], t: int) -> tuple[str, float, float]:
        """``(phase, eta_t, reg_t)`` of step ``t`` for a parameter group (phase "1", "2" or "4")."""
        total = group["total_steps"]
        start, lock = bnew_phase_steps(total, group["t_start"], group["t_lock"])
        base = group["lr"]
        if t < start:
            return "1", base * (1.0 - t / start), 0.0
        if t < lock:
            s = t - start
            slope = group["beta"] if group["beta"] is not None else group["beta_T"] / (lock - start)
            return "2", base * (1.0 - s / max(total - start, 1)), slope * (s + 1)
        return "4", 0.0, 0.0

    def is_locked(self, group: dict[str, Any] | None = None) -> bool:
        """True once the weights of ``group`` (default: the first) are projected and frozen."""
        group = self.param_groups[0] if group is None else group
        _, lock = bnew_phase_steps(group["total_steps"], group["t_start"], group["t_lock"])
        return group["num_steps"] >= lock

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One BNEW step (``closure`` re-evaluates the loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            t = group["num_steps"]
            phase, eta, reg = self.schedule(group, t)
            group["num_steps"] = t + 1
            group["reg_t"] = reg
            if phase == "4":
                continue  # frozen binary weights: gradients are ignored
            start, lock = bnew_phase_steps(group["total_steps"], group["t_start"], group["t_lock"])
            if t == start and start > 0:  # phase 2 starts a fresh Adam
                for p in group["params"]:
                    self.state[p].clear()
            params, grads, exp_avgs, exp_avg_sqs, steps = gather_adam_group(self, group)
            if params:
                foreach = use_foreach(group["foreach"], params)
                # push (1 + 2 reg_t) and projection onto [-1, 1] first, then the Adam step (reference order)
                scale = 1.0 + 2.0 * reg
                if foreach:
                    if scale != 1.0:
                        torch._foreach_mul_(params, scale)
                    torch._foreach_clamp_min_(params, -1.0)
                    torch._foreach_clamp_max_(params, 1.0)
                else:
                    for p in params:
                        if scale != 1.0:
                            p.mul_(scale)
                        p.clamp_(-1.0, 1.0)
                beta1, beta2 = group["betas"]
                adam_update_(params, grads, exp_avgs, exp_avg_sqs, steps, lr=eta, beta1=beta1, beta2=beta2,
                             eps=group["eps"], foreach=foreach)
            if t + 1 == lock:  # phase 3: project onto {-1, +1} and freeze
                for p in group["params"]:
                    p.copy_(binarize(p))
        return loss
