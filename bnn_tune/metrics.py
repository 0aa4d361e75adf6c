"""Training metrics: the flip rate of binary weights, and accuracy.

**Flip rate** (the one definition used everywhere in bnn-tune): the fraction of binary weights whose
sign changed in one optimizer step, averaged over the steps of an epoch,
``flip_rate = flips / (binary weights x steps)``. Its log form ``pi = log(flip_rate + e^-9)`` is the
Bop paper's eq. 7 (Helwegen et al. 2019), which keeps the quantity finite at zero flips.
The sign of a weight is ``sign(w)`` with ``sign(0) = +1``: for Bop the weights are the binary weights,
for latent-weight methods the latent weights, for BMD/BNEW the weight that would be exported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .kernels._signs import packed_sign_words, raw_sign_bits, sign_kernel_applies
from .nn import binary_parameters

__all__ = ["LOG_FLIP_RATE_EPS", "FlipCounter", "SubEpochFlipRates", "accuracy", "log_flip_rate"]

LOG_FLIP_RATE_EPS = math.exp(-9)


def log_flip_rate(flip_rate: float) -> float:
    """``log(flip_rate + e^-9)`` (seed 002, eq. 7)."""
    return math.log(flip_rate + LOG_FLIP_RATE_EPS)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (logits.argmax(-1) == target).float().mean().item()


class FlipCounter:
    """Count sign flips of binary parameters at every optimizer step, per layer and in total.

    The counter registers a step pre-hook (remember the signs) and a post-hook (count the changes) on
    the optimizer; counts accumulate on the parameters' device and are read once per epoch by
    :meth:`summary` (no host sync per step).

    Args:
        params: a model (its binary parameters are used) or ``(name, parameter)`` pairs.
        packed: keep the signs of contiguous CPU float32 parameters packed 64 to a word and count changes in C
            (``True``, the default where the kernel is built) or in bool tensors with ``torch.ge`` / ``torch.ne``
            (``False``); both count the same flips.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([0.5, -0.5, 0.1, -0.1]))
        >>> opt = torch.optim.SGD([w], lr=1.0)
        >>> counter = FlipCounter([("w", w)]).attach(opt)
        >>> w.grad = torch.tensor([1.0, 0.0, 0.0, -1.0]); opt.step()
        >>> counter.summary()["flip_rate"]
        0.5
    """

    def __init__(self, params: nn.Module | Iterable[tuple[str, torch.Tensor]], *, packed: bool = True) -> None:
        named = binary_parameters(params) if isinstance(params, nn.Module) else list(params)
        if not named:
            raise ValueError("FlipCounter got no binary parameters to watch.")
        self.names = [n[: -len(".weight")] if n.endswith(".weight") else n for n, _ in named]
        self.params = [p for _, p in named]
        self.sizes = [p.numel() for p in self.params]
        # contiguous CPU float32 parameters keep their signs packed 64 to a word and are counted by one C pass
        # (csrc/signs_cpu.c: ~10x cheaper than ge + ne + count_nonzero); others keep bool tensors
        self._packed = [bool(packed) and sign_kernel_applies(p) for p in self.params]
        self._sign_bits = raw_sign_bits()  # (x_ptr, words_ptr, n, count) -> changed signs; words sized here
        self._signs = [packed_sign_words(p) if use else torch.empty_like(p, dtype=torch.bool)
                       for p, use in zip(self.params, self._packed)]
        # the bool path's second buffer (an empty placeholder for packed parameters)
        self._scratch = [torch.empty(0, dtype=torch.bool) if use else torch.empty_like(p, dtype=torch.bool)
                         for p, use in zip(self.params, self._packed)]
        self._versions: list[int | None] = [None] * len(self.params)
        self._handles: list[Any] = []
        self.reset()

    def attach(self, optimizer: torch.optim.Optimizer) -> FlipCounter:
        """Register the step hooks on ``optimizer``; returns ``self``."""
        self._handles.append(optimizer.register_step_pre_hook(lambda *_: self.before_step()))
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.after_step()))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self) -> None:
        """Start a new counting window (an epoch)."""
        self._flips = [torch.zeros((), dtype=torch.int64, device=p.device) for p in self.params]
        self._packed_flips = [0] * len(self.params)  # counts of the packed (C) path, Python ints
        self.steps = 0

    @torch.no_grad()
    def before_step(self) -> None:
        # The signs saved after the previous step are still valid unless the parameter was modified
        # in between (its version counter moved): then take them again.
        for i, p in enumerate(self.params):
            if self._packed[i] and not (p.dtype is torch.float32 and p.device.type == "cpu" and p.is_contiguous()
                                        and p.numel() == self.sizes[i]):
                self._packed[i] = False  # moved to another device, dtype or size since construction
                self._signs[i] = torch.empty_like(p, dtype=torch.bool)
                self._scratch[i] = torch.empty_like(p, dtype=torch.bool)
                self._versions[i] = None
            if self._versions[i] != p._version:
                if self._packed[i]:
                    self._sign_bits(p.data_ptr(), self._signs[i].data_ptr(), self.sizes[i], 0)
                else:
                    torch.ge(p, 0, out=self._signs[i])

    @torch.no_grad()
    def after_step(self) -> None:
        for i, p in enumerate(self.params):
            if self._packed[i]:
                self._packed_flips[i] += self._sign_bits(p.data_ptr(), self._signs[i].data_ptr(), self.sizes[i], 1)
                self._versions[i] = p._version
                continue
            new, old = self._scratch[i], self._signs[i]
            torch.ge(p, 0, out=new)
            # in place into the old signs (no per-step allocation) and count_nonzero, which is ~2x faster
            # than sum() over a bool tensor on CPU; no host sync
            self._flips[i].add_(torch.ne(new, old, out=old).count_nonzero())
            self._signs[i], self._scratch[i] = new, old
            self._versions[i] = p._version
        self.steps += 1

    def layer_flips(self) -> list[int]:
        """Flips per parameter in the window so far (one host sync per tensor-held count)."""
        return [int(f.item()) + c for f, c in zip(self._flips, self._packed_flips)]

    def summary(self, *, reset: bool = False) -> dict[str, Any]:
        """Flip rates of the window so far.

        Returns:
            ``{"flips": int, "steps": int, "flip_rate": float, "log_flip_rate": float,
            "layers": {name: flip_rate}}``; rates are 0.0 before the first step.
        """
        flips = self.layer_flips()
        steps = max(self.steps, 1)
        total = sum(flips)
        rate = total / (sum(self.sizes) * steps)
        out = {
            "flips": total,
            "steps": self.steps,
            "flip_rate": rate,
            "log_flip_rate": log_flip_rate(rate),
            "layers": {n: f / (size * steps) for n, f, size in zip(self.names, flips, self.sizes)},
        }
        if reset:
            self.reset()
        return out


class SubEpochFlipRates:
    """The flip rate of every ``1/points`` of an epoch, read from a :class:`FlipCounter` by a step post-hook.

    Attach it after the counter (hooks run in registration order, so the counter's count is current).
    ``rates`` holds one flip rate per window, all epochs so far; ``on_point(rates)`` (optional) is called
    after each window, e.g. to ask an Optuna pruner inside the first epoch. It relies on the counter being
    reset at the start of every epoch (``Trainer.train_epoch`` does).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([0.5, -0.5]))
        >>> opt = torch.optim.SGD([w], lr=1.0)
        >>> counter = FlipCounter([("w", w)]).attach(opt)
        >>> sub = SubEpochFlipRates(counter, steps_per_epoch=2, points=2).attach(opt)
        >>> w.grad = torch.tensor([1.0, 0.0]); opt.step(); w.grad = torch.tensor([0.0, 0.0]); opt.step()
        >>> sub.rates
        [0.5, 0.0]
    """

    def __init__(self, counter: FlipCounter, steps_per_epoch: int, points: int = 8, on_point: Any = None) -> None:
        if points < 1 or steps_per_epoch < 1:
            raise ValueError(f"`points` and `steps_per_epoch` must be >= 1, but got {points!r}, {steps_per_epoch!r}.")
        self.counter = counter
        self.bounds = {max(1, round(steps_per_epoch * (k + 1) / points)) for k in range(points)}
        self.on_point = on_point
        self.rates: list[float] = []
        self._steps = 0
        self._flips = 0

    def attach(self, optimizer: torch.optim.Optimizer) -> SubEpochFlipRates:
        optimizer.register_step_post_hook(lambda *_: self.after_step())
        return self

    def after_step(self) -> None:
        n = self.counter.steps
        # the counter was reset (a new epoch): its count restarts below or, for one-step epochs, exactly at the
        # step the last window ended on (the counter steps before this hook, so without a reset n > self._steps)
        if n <= self._steps:
            self._steps, self._flips = 0, 0
        if n in self.bounds and n != self._steps:
            total = sum(self.counter.layer_flips())
            self.rates.append((total - self._flips) / (sum(self.counter.sizes) * (n - self._steps)))
            self._steps, self._flips = n, total
            if self.on_point is not None:
                self.on_point(self.rates)
