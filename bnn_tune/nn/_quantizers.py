"""Sign quantizers with pseudo-gradients.

Every quantizer has the same forward pass, ``sign(x)`` with ``sign(0) = +1`` (so the output is always
in {-1, +1}), and differs only in the pseudo-gradient it passes backwards:

==============  =====================================================  ==========================
name            backward: d sign(x) / dx is replaced by                 reference
==============  =====================================================  ==========================
``ste_sign``    ``1[|x| <= clip_value]``                               Hubara et al. 2016
``approx_sign`` ``(2 - 2|x|) * 1[|x| <= 1]``                           Liu et al. 2018 (Bi-Real)
``swish_sign``  ``beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))``  Darabi et al. 2018
==============  =====================================================  ==========================

``clip_value=None`` (or ``inf``) gives the unclipped straight-through estimator used by the Bop paper's
Theorem 1 (a magnitude-independent pseudo-gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "ApproxSign",
    "SteSign",
    "SwishSign",
    "approx_sign",
    "binarize",
    "get_quantizer",
    "list_quantizers",
    "ste_sign",
    "swish_sign",
]


def _sign_constants(dtype: torch.dtype) -> tuple[float, float]:
    """``(S, C)`` for :func:`binarize`: ``S = 2^(maxexp - 2)`` and ``C`` half the smallest nonzero ``|x| S S``."""
    fi = torch.finfo(dtype)
    scale = 2.0 ** (math.frexp(fi.max)[1] - 2)  # max = (1 - eps) 2^maxexp
    return scale, fi.smallest_normal * fi.eps * scale * scale / 2.0  # smallest subnormal * S * S / 2


_SIGN_CONSTANTS = {dt: _sign_constants(dt) for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def binarize(x: torch.Tensor) -> torch.Tensor:
    """Return ``sign(x)`` with ``sign(0) = +1``, in x's dtype (no gradient).

    NaN stays NaN, so a diverged network shows a NaN loss instead of silently binarizing NaN to -1.
    ``-0.0`` gives +1 like ``+0.0`` (``torch.sign`` cannot be used: it maps NaN and 0 to 0). Four
    vectorised element-wise passes over one output buffer, ``clamp(x * S * S + C, -1, 1)`` with ``S`` a
    power of two and ``C = (smallest subnormal) S^2 / 2``: both products are exact or overflow to
    +-inf, so a nonzero ``x`` becomes at least ``2C`` in magnitude with its sign and adding ``C`` keeps
    that sign, while both zeros become ``+C >= 1``; the clamp maps everything but NaN (which every step
    propagates) to +-1. The same numbers as ``x.clamp(-1, -1).masked_fill_(x >= 0, 1)`` at ~1/20 of its
    cost on CPU (``masked_fill_`` and ``where`` are not vectorised there).
    """
    consts = _SIGN_CONSTANTS.get(x.dtype)
    if consts is None:  # integer or complex input: the plain formula
        return x.clamp(-1, -1).masked_fill_(x >= 0, 1)
    scale, offset = consts
    return x.mul(scale).mul_(scale).add_(offset).clamp_(-1.0, 1.0)


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _ste_grad(x: torch.Tensor, grad: torch.Tensor, clip_value: float) -> torch.Tensor:
    """``grad * 1[|x| <= clip_value]``: 1.0 where ``|x| <= clip``, else 0.0, multiplied into the gradient
    in place (one buffer); ``grad`` itself when the clip is infinite."""
    if math.isinf(clip_value):
        return grad
    return x.abs().le_(clip_value).mul_(grad)


def _approx_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad * max(2 - 2|x|, 0)`` in one buffer; ``-2|x| + 2`` rounds exactly as ``2 - 2|x|`` (2|x| is exact)."""
    return x.abs().mul_(-2.0).add_(2.0).clamp_min_(0.0).mul_(grad)


class _SteSignFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, clip_value: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.clip_value = clip_value
        return binarize(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _ste_grad(x, grad, ctx.clip_value), None


class _ApproxSignFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return binarize(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _approx_grad(x, grad)


class _SwishSignFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.beta = beta
        return binarize(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        b = ctx.beta
        bx = b * x
        # cosh overflows for |bx| > ~88 in float32; the derivative is 0 there anyway.
        d = b * (2.0 - bx * torch.tanh(bx / 2.0)) / (1.0 + torch.cosh(bx.clamp(-80.0, 80.0)))
        return grad * d, None


def ste_sign(x: torch.Tensor, clip_value: float | None = 1.0) -> torch.Tensor:
    """Sign with the straight-through estimator ``grad * 1[|x| <= clip_value]``.

    Args:
        x: input tensor.
        clip_value: gradient is zero where ``|x| > clip_value``; ``None`` disables the clip.

    Example:
        >>> x = torch.tensor([-2.0, -0.5, 0.0, 0.5], requires_grad=True)
        >>> ste_sign(x).tolist()
        [-1.0, -1.0, 1.0, 1.0]
    """
    c = math.inf if clip_value is None else float(clip_value)
    if c <= 0:
        raise ValueError(f"`clip_value` must be > 0 or None, but got clip_value={clip_value}.")
    if not _needs_grad(x):
        return binarize(x)
    return _SteSignFn.apply(x, c)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with the piecewise-polynomial pseudo-gradient ``(2 - 2|x|)`` on ``|x| <= 1`` (Bi-Real)."""
    if not _needs_grad(x):
        return binarize(x)
    return _ApproxSignFn.apply(x)


def swish_sign(x: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """Sign with the derivative of ``2 sigmoid(beta x) (1 + beta x (1 - sigmoid(beta x))) - 1``."""
    if beta <= 0:
        raise ValueError(f"`beta` must be > 0, but got beta={beta}.")
    if not _needs_grad(x):
        return binarize(x)
    return _SwishSignFn.apply(x, float(beta))


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """ATen's ``suggest_memory_format`` (which ``F.pad`` uses for its output) for a 4-d tensor."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _binarize_padded(x: torch.Tensor, ph: int, pw: int, value: float) -> torch.Tensor:
    """``F.pad(binarize(x), (pw, pw, ph, ph), value=value)`` for ``value`` +-1 in one buffer (no pad copy).

    ``x * S`` is written into the interior of the padded buffer, the border is filled with ``value``, and
    the rest of :func:`binarize` runs in place over the whole buffer: it maps +-1 to itself, so the
    border keeps ``value`` and the interior gets exactly ``binarize(x)``. The memory format is the one
    ``F.pad`` gives (:func:`_memory_format`).
    """
    n, c, h, w = x.shape
    out = torch.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    scale, offset = _SIGN_CONSTANTS[x.dtype]
    torch.mul(x, scale, out=out[:, :, ph:ph + h, pw:pw + w])
    if ph:
        out[:, :, :ph].fill_(value)
        out[:, :, ph + h:].fill_(value)
    if pw:
        out[:, :, ph:ph + h, :pw].fill_(value)
        out[:, :, ph:ph + h, pw + w:].fill_(value)
    return out.mul_(scale).add_(offset).clamp_(-1.0, 1.0)


class _PaddedSignFn(torch.autograd.Function):
    """Sign of ``x`` padded with +-1, with the ``ste_sign`` (``clip_value`` a number) or ``approx_sign``
    (``clip_value`` None) pseudo-gradient; backward = the quantizer's backward of the unpadded slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, ph: int, pw: int, value: float,  # type: ignore[override]
                clip_value: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.pad, ctx.clip_value = (ph, pw), clip_value
        return _binarize_padded(x, ph, pw, value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        (ph, pw), h, w = ctx.pad, x.shape[2], x.shape[3]
        inner = grad[:, :, ph:ph + h, pw:pw + w]
        if ctx.clip_value is None:
            gx = _approx_grad(x, inner)
        elif math.isinf(ctx.clip_value):  # what F.pad's backward hands the quantizer: a copy of the slice
            gx = inner.clone(memory_format=_memory_format(grad))
        else:
            gx = _ste_grad(x, inner, ctx.clip_value)
        return gx, None, None, None, None


def _fused_clip(x: torch.Tensor, value: float, quantizer: nn.Module) -> tuple[bool, float | None]:
    """``(True, clip)`` when sign + +-1 padding can run fused for ``quantizer`` (``clip`` None: ``approx_sign``,
    ``inf``: the unclipped STE), else ``(False, None)``."""
    if value not in (1.0, -1.0) or x.dim() != 4 or x.dtype not in _SIGN_CONSTANTS:
        return False, None
    if type(quantizer) is SteSign:
        return True, math.inf if quantizer.clip_value is None else float(quantizer.clip_value)
    if type(quantizer) is ApproxSign:
        return True, None
    return False, None


def padded_sign(x: torch.Tensor, ph: int, pw: int, value: float, quantizer: nn.Module) -> torch.Tensor | None:
    """``F.pad(quantizer(x), (pw, pw, ph, ph), value=value)`` without the pad copy, or ``None`` when no
    fused form applies (a quantizer other than ``SteSign``/``ApproxSign``, a pad value other than +-1, a
    dtype :func:`binarize` has no constants for, not a 4-d input). Same numbers forward and backward."""
    ok, clip = _fused_clip(x, value, quantizer)
    if not ok:
        return None
    if not _needs_grad(x):
        return _binarize_padded(x, ph, pw, value)
    return _PaddedSignFn.apply(x, ph, pw, value, clip)


class _PaddedSignConvFn(torch.autograd.Function):
    """``conv2d(F.pad(quantizer(x), value), w, b, stride)`` whose backward never forms the border's gradient.

    The forward is the convolution of the +-1-padded sign buffer (:func:`_binarize_padded`). Backward, the
    input gradient is the one of a convolution with its own ``(ph, pw)`` zero padding on the unpadded input
    (the gradient of the padded buffer's interior, the only part the quantizer passes on), so the
    border's gradient is neither computed nor sliced away; the weight and bias gradients come from the
    padded buffer as before, with the same call autograd's own backward of the convolution makes.

    Bits: the forward and the weight and bias gradients are the same calls as before. The input gradient is
    the same sum, but oneDNN picks a kernel per shape: on the zoo's layouts (NCHW, square padding) it adds
    in the same order and training keeps its bits (``tests/nn/test_layers.py``,
    ``tests/core/test_step_trajectory.py``); on some others (channels_last stride 1, stride 2 with few
    channels) the last bits differ.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                stride: tuple[int, int], ph: int, pw: int, value: float, clip_value: float | None) -> torch.Tensor:
        xq = _binarize_padded(x, ph, pw, value)
        ctx.save_for_backward(x, xq, weight)
        ctx.conf = (list(stride), [ph, pw], clip_value, None if bias is None else [bias.shape[0]])
        return torch.nn.functional.conv2d(xq, weight, bias, stride, 0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, xq, weight = ctx.saved_tensors
        stride, pad, clip_value, bias_sizes = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        conv_backward = torch.ops.aten.convolution_backward
        gx = gw = gb = None
        if need_w or need_b:
            _, gw, gb = conv_backward(grad, xq, weight, bias_sizes, stride, [0, 0], [1, 1], False, [0, 0], 1,
                                      [False, need_w, need_b])
        if need_x:
            gi = conv_backward(grad, x, weight, None, stride, pad, [1, 1], False, [0, 0], 1, [True, False, False])[0]
            if clip_value is None:
                gx = _approx_grad(x, gi)
            else:
                gx = _ste_grad(x, gi, clip_value)
        return gx, gw, gb, None, None, None, None, None


def padded_sign_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                       ph: int, pw: int, value: float, quantizer: nn.Module) -> torch.Tensor | None:
    """``F.conv2d(F.pad(quantizer(x), (pw, pw, ph, ph), value=value), weight, bias, stride)`` in one autograd
    node (:class:`_PaddedSignConvFn`), or ``None`` where :func:`padded_sign` has no fused form or autocast
    is on (the node would save and differentiate the un-cast tensors). Same numbers forward and backward, up
    to the order in which oneDNN adds the input gradient (see :class:`_PaddedSignConvFn`)."""
    ok, clip = _fused_clip(x, value, quantizer)
    if not ok or torch.is_autocast_enabled(x.device.type):
        return None
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad
                                           or (bias is not None and bias.requires_grad)):
        return torch.nn.functional.conv2d(_binarize_padded(x, ph, pw, value), weight, bias, stride, 0)
    return _PaddedSignConvFn.apply(x, weight, bias, tuple(stride), ph, pw, value, clip)


class SteSign(nn.Module):
    """Module form of :func:`ste_sign`."""

    def __init__(self, clip_value: float | None = 1.0) -> None:
        super().__init__()
        if clip_value is not None and clip_value <= 0:
            raise ValueError(f"`clip_value` must be > 0 or None, but got clip_value={clip_value}.")
        self.clip_value = clip_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_sign(x, self.clip_value)

    def extra_repr(self) -> str:
        return f"clip_value={self.clip_value}"


class ApproxSign(nn.Module):
    """Module form of :func:`approx_sign`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return approx_sign(x)


class SwishSign(nn.Module):
    """Module form of :func:`swish_sign`."""

    def __init__(self, beta: float = 5.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"`beta` must be > 0, but got beta={beta}.")
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swish_sign(x, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


_QUANTIZERS: dict[str, Callable[[], nn.Module]] = {
    "ste_sign": SteSign,
    "approx_sign": ApproxSign,
    "swish_sign": SwishSign,
}


def list_quantizers() -> list[str]:
    """Sorted names accepted by :func:`get_quantizer`."""
    return sorted(_QUANTIZERS)


def get_quantizer(name: str) -> nn.Module:
    """Build a quantizer module by name (``ste_sign``, ``approx_sign``, ``swish_sign``)."""
    try:
        return _QUANTIZERS[name]()
    except KeyError:
        raise ValueError(
            f"Unknown quantizer {name!r}. Available: {list_quantizers()}."
        ) from None
