"""Run a :class:`~bnn_tune.export.PackedModel` on a GPU with the CUDA kernels.

Binary linear layers: activations are signed and packed on the GPU (``bnn_pack_sign``), then batch <= 16
uses the CUDA-core GEMV and larger batches the tensor-core AND-popcount GEMM. Binary convolutions are a
bit-packed implicit GEMM: the input is signed and packed once into NHWC words with its padding
(``bnn_pack_nhwc``), and the tensor-core kernel (``bnn_bconv``) gathers every output pixel's patch from
them; no im2col matrix and no fp32 copy of the patches is made. Folded thresholds are applied to the
int32 outputs. Real layers, pools and batch-norms run as torch ops on the GPU.

Between binary linear layers at batch <= 16 the activations stay packed: a thresholded layer runs the
GEMV with its fused threshold output (the next layer's packed words, :class:`_PackedBits`) and the next
binary linear layer reads them as they are. Any other consumer (real layers, pools, convolutions,
residual sums, the final logits) gets them unpacked to +-1 floats; convolution outputs are thresholded
to +-1 floats.

Convolution weights are re-laid out once at load from the file's ``(kh, kw, c)`` bit order to the
tap-aligned words of :func:`~bnn_tune.kernels.cuda.tap_aligned_weight` (each tap's channels start on a word).

This is the CUDA column of the op table (:mod:`bnn_tune.export._graph`): :data:`CUDA` holds one handler per op
kind, ``handler(runner, op, v) -> v``; device copies of an op's arrays are made once, on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels import cuda
from ._graph import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm,
    BatchNormSign,
    BinaryConv2d,
    BinaryLinear,
    BinaryWeightConv2d,
    BinaryWeightLinear,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    Op,
    OpTable,
    ReLU,
    Residual,
)

__all__ = ["CUDA", "CudaRunner"]

CUDA: OpTable[Callable[[Any, Any, Any], Any]] = OpTable("cuda")


def _chan(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _pm1(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v >= 0, 1.0, -1.0)


class _PackedBits:
    """Binary activations ``[B, k]`` kept as packed words ``int32 [B, Wd]`` (bit 1 = +1, padding 0)."""

    def __init__(self, words: torch.Tensor, k: int) -> None:
        self.words, self.k = words, k

    def unpack(self) -> torch.Tensor:
        shifts = torch.arange(32, device=self.words.device, dtype=torch.int32)
        bits = (self.words.unsqueeze(-1) >> shifts) & 1  # arithmetic shift, & 1: the bit itself
        return torch.where(bits.flatten(1)[:, : self.k] != 0, 1.0, -1.0)


def _floats(v: Any) -> torch.Tensor:
    return v.unpack() if isinstance(v, _PackedBits) else v


def _out_words(o: int) -> int:
    """Packed words of an ``o``-long activation vector as the next layer reads it (256-bit tiles)."""
    return -(-o // 256) * 8


class CudaRunner:
    """GPU executor of a packed model's typed ops (see the module docstring)."""

    def __init__(self, pm: Any, device: str | torch.device = "cuda") -> None:
        if not cuda.available():
            raise RuntimeError("PackedModel on 'cuda' needs a CUDA GPU and NVRTC (cuda-bindings and nvidia-cuda-nvrtc, "
                               "which torch's CUDA wheels bring) or nvcc; use device='cpu'.")
        self.pm = pm
        self.device = torch.device(device)
        self._dev_cache: dict[tuple[int, str], Any] = {}

    def dev(self, op: Op, role: str, make: Callable[[], Any]) -> Any:
        """The device copy ``role`` of ``op``'s arrays, made by ``make()`` on first use."""
        key = (id(op), role)
        if key not in self._dev_cache:
            self._dev_cache[key] = make()
        return self._dev_cache[key]

    def to_dev(self, arr: np.ndarray | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if arr is None:
            return None
        t = torch.from_numpy(np.ascontiguousarray(arr).copy())
        if dtype is not None:
            t = t.to(dtype)
        return t.to(self.device)

    def words(self, words: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(words).view(np.int32).copy()).to(self.device)

    def gemm(self, x: torch.Tensor, w: torch.Tensor, pw: torch.Tensor, k: int) -> torch.Tensor:
        """int32 +-1 dot products of the rows of float ``x`` (signed here) with packed ``w``."""
        wd = w.shape[1]
        a, pa = cuda.pack_sign(x.float().contiguous(), wd)
        if x.shape[0] <= 16:
            return cuda.gemv(w, k, a=a)
        return cuda.bmma(a, w, k, pa, pw)

    def run(self, ops: list[Op], v: Any) -> Any:
        for op in ops:
            v = CUDA(op)(self, op, v)
        return v

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return _floats(self.run(self.pm.ops, x.to(self.device, torch.float32)))


def _binary_weights(r: CudaRunner, op: BinaryLinear) -> tuple[torch.Tensor, Any, Any, Any]:
    """Device ``(words, popcounts, thresholds, bias)`` of a binary layer (conv words tap-aligned)."""
    def make() -> tuple[torch.Tensor, Any, Any, Any]:
        words = op.weights_packed
        if isinstance(op, BinaryConv2d):  # (kh, kw, c) bits -> tap-aligned words
            words = cuda.tap_aligned_weight(op.weight_bits, op.kernel_size, op.in_channels)
        return (r.words(words), r.to_dev(op.popcount, torch.int32), r.to_dev(op.threshold, torch.int32),
                r.to_dev(op.bias))
    return r.dev(op, "binary", make)


def _thresholded(op: BinaryLinear, y: torch.Tensor, thr: Any, bias: Any) -> torch.Tensor:
    if thr is not None:
        return torch.where(y >= _chan(thr, y.ndim), 1.0, -1.0)
    out = y.float()
    return out if bias is None else out + _chan(bias, out.ndim)


@CUDA.register(BinaryLinear)
def _binary_linear(r: CudaRunner, op: BinaryLinear, v: Any) -> Any:
    w, pw, thr, bias = _binary_weights(r, op)
    k, o = op.k, op.out_features
    packed_in = isinstance(v, _PackedBits) and v.k == k and v.words.shape[1] == w.shape[1]
    batch = v.words.shape[0] if isinstance(v, _PackedBits) else v.shape[0]
    if thr is not None and batch <= 16:  # stays packed: GEMV with the fused threshold output
        src = {"a": v.words} if packed_in else {"x": _floats(v).flatten(1).float().contiguous()}
        return _PackedBits(cuda.gemv(w, k, thr=thr, out_words=_out_words(o), **src), o)
    y = cuda.gemv(w, k, a=v.words) if packed_in else r.gemm(_floats(v).flatten(1), w, pw, k)
    return _thresholded(op, y, thr, bias)


@CUDA.register(BinaryConv2d)
def _binary_conv(r: CudaRunner, op: BinaryConv2d, v: Any) -> Any:
    w, pw, thr, bias = _binary_weights(r, op)
    act = cuda.pack_nhwc(_floats(v).float().contiguous(), op.padding, op.pad_value)
    y = cuda.bconv(act, w, op.k, pw, kernel_size=op.kernel_size, stride=op.stride).permute(0, 3, 1, 2)
    return _thresholded(op, y, thr, bias)


@CUDA.register(Flatten)
def _flatten(r: CudaRunner, op: Flatten, v: Any) -> Any:
    return _floats(v).flatten(1)


@CUDA.register(ReLU)
def _relu(r: CudaRunner, op: ReLU, v: Any) -> Any:
    return F.relu(_floats(v))


@CUDA.register(MaxPool2d)
def _maxpool(r: CudaRunner, op: MaxPool2d, v: Any) -> Any:
    v = _floats(v)
    if op.and_channels is not None:
        and_ch = r.dev(op, "and_channels", lambda: r.to_dev(op.and_channels))
        s = _chan(torch.where(and_ch, -1.0, 1.0), v.ndim)
        return F.max_pool2d(v * s, op.kernel_size, op.stride, op.padding) * s
    return F.max_pool2d(v, op.kernel_size, op.stride, op.padding)


@CUDA.register(AvgPool2d)
def _avgpool(r: CudaRunner, op: AvgPool2d, v: Any) -> Any:
    return F.avg_pool2d(_floats(v), op.kernel_size, op.stride, op.padding, ceil_mode=op.ceil_mode,
                        count_include_pad=op.count_include_pad)


@CUDA.register(AdaptiveAvgPool2d)
def _adaptive_avgpool(r: CudaRunner, op: AdaptiveAvgPool2d, v: Any) -> Any:
    return F.adaptive_avg_pool2d(_floats(v), op.output_size)


def _scale_shift(r: CudaRunner, op: BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    return r.dev(op, "bn", lambda: (r.to_dev(op.scale), r.to_dev(op.shift)))


@CUDA.register(BatchNorm)
def _batchnorm(r: CudaRunner, op: BatchNorm, v: Any) -> Any:
    v = _floats(v)
    s, h = _scale_shift(r, op)
    return v * _chan(s, v.ndim) + _chan(h, v.ndim)


@CUDA.register(BatchNormSign)
def _batchnorm_sign(r: CudaRunner, op: BatchNormSign, v: Any) -> Any:
    v = _floats(v)
    s, h = _scale_shift(r, op)
    return _pm1(v.double() * _chan(s.double(), v.ndim) + _chan(h.double(), v.ndim)).float()


def _real_product(op: Any, w: torch.Tensor, b: Any, v: Any, *, conv: bool, input_sign: bool) -> Any:
    v = _floats(v)
    x = _pm1(v) if input_sign else v
    if not conv:
        return F.linear(x, w, b)
    padding = op.padding
    if input_sign and any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=op.pad_value)
        padding = (0, 0)
    return F.conv2d(x, w, b, op.stride, padding)


@CUDA.register(Linear, Conv2d)
def _real(r: CudaRunner, op: Linear, v: Any) -> Any:
    w, b = r.dev(op, "real", lambda: (r.to_dev(op.weight), r.to_dev(op.bias)))
    return _real_product(op, w, b, v, conv=isinstance(op, Conv2d), input_sign=op.input_sign)


@CUDA.register(BinaryWeightLinear, BinaryWeightConv2d)
def _binary_weight(r: CudaRunner, op: Any, v: Any) -> Any:
    w, b = r.dev(op, "real", lambda: (r.to_dev(op.weight_pm1), r.to_dev(op.bias)))
    return _real_product(op, w, b, v, conv=isinstance(op, BinaryWeightConv2d), input_sign=False)


@CUDA.register(Residual)
def _residual(r: CudaRunner, op: Residual, v: Any) -> Any:
    return _floats(r.run(op.body, v)) + _floats(r.run(op.shortcut, v))
