"""The reference column of the op table: every op kind run in numpy/torch on the CPU.

Values between ops are float ``torch.Tensor`` activations or numpy ``bool`` bits (True = +1, the output of a
thresholded binary layer or a ``batchnorm_sign``). Binary layers run the XOR-popcount kernels of
:mod:`bnn_tune.kernels._cpu` one layer at a time; this is the path the packed C engine (:mod:`._chains`) is
checked against bit for bit, and the one that runs where the engine does not build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels._cpu import binary_conv2d, binary_gemm
from ..kernels._packing import pack_bits
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

__all__ = ["REFERENCE", "Value", "binary_output", "chan", "run_reference", "to_bits", "to_float"]

Value = torch.Tensor | np.ndarray  # float activations (torch) or bits (numpy bool, True = +1)
Runner = Callable[[list[Op], Value], Value]  # runs a sub-list of ops (a residual block's body)
RunFn = Callable[[Any, Value, Runner], Value]

REFERENCE: OpTable[RunFn] = OpTable("reference")


def to_float(v: Value) -> torch.Tensor:
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.where(v, 1.0, -1.0).astype(np.float32))
    return v


def to_bits(v: Value) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    return (v >= 0).numpy()


def chan(t: Any, ndim: int) -> Any:
    """Reshape a per-channel vector to broadcast over dim 1 of an ``ndim`` tensor."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(a)


def run_reference(ops: list[Op], v: Value) -> Value:
    """Run ``ops`` one at a time on the reference handlers (residual blocks too)."""
    for op in ops:
        v = REFERENCE(op)(op, v, run_reference)
    return v


def binary_output(op: BinaryLinear, y: np.ndarray) -> Value:
    """A binary layer's output from its int32 pre-activations ``y``: bits ``y >= threshold`` or float ``y + bias``."""
    if op.threshold is not None:
        return y >= chan(op.threshold, y.ndim)
    out = torch.from_numpy(y.astype(np.float32))
    return out if op.bias is None else out + chan(torch.from_numpy(op.bias), out.ndim)


@REFERENCE.register(Flatten)
def _flatten(op: Flatten, v: Value, run: Runner) -> Value:
    return v.reshape(v.shape[0], -1)


@REFERENCE.register(ReLU)
def _relu(op: ReLU, v: Value, run: Runner) -> Value:
    return F.relu(to_float(v))


@REFERENCE.register(MaxPool2d)
def _maxpool(op: MaxPool2d, v: Value, run: Runner) -> Value:
    x = to_float(v)
    if op.and_channels is not None:  # pool on bits: OR (max) for normal channels, AND (min) for flipped ones
        s = chan(torch.where(torch.from_numpy(op.and_channels), -1.0, 1.0), x.ndim)
        x = F.max_pool2d(x * s, op.kernel_size, op.stride, op.padding) * s
    else:
        x = F.max_pool2d(x, op.kernel_size, op.stride, op.padding)
    return x.numpy() > 0 if isinstance(v, np.ndarray) else x


@REFERENCE.register(AvgPool2d)
def _avgpool(op: AvgPool2d, v: Value, run: Runner) -> Value:
    return F.avg_pool2d(to_float(v), op.kernel_size, op.stride, op.padding, ceil_mode=op.ceil_mode,
                        count_include_pad=op.count_include_pad)


@REFERENCE.register(AdaptiveAvgPool2d)
def _adaptive_avgpool(op: AdaptiveAvgPool2d, v: Value, run: Runner) -> Value:
    return F.adaptive_avg_pool2d(to_float(v), op.output_size)


@REFERENCE.register(BatchNorm)
def _batchnorm(op: BatchNorm, v: Value, run: Runner) -> Value:
    x = to_float(v)
    return x * chan(torch.from_numpy(op.scale), x.ndim) + chan(torch.from_numpy(op.shift), x.ndim)


@REFERENCE.register(BatchNormSign)
def _batchnorm_sign(op: BatchNormSign, v: Value, run: Runner) -> Value:
    x = to_float(v).double()
    scale, shift = torch.from_numpy(op.scale).double(), torch.from_numpy(op.shift).double()
    return (x * chan(scale, x.ndim) + chan(shift, x.ndim) >= 0).numpy()


def _real_product(op: Any, w: torch.Tensor, bias: torch.Tensor | None, v: Value, *, conv: bool,
                  input_sign: bool) -> Value:
    x = to_float(to_bits(v)) if input_sign else to_float(v)
    if not conv:
        return F.linear(x, w, bias)
    stride, padding = op.stride, op.padding
    if input_sign and any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=op.pad_value)
        padding = (0, 0)
    return F.conv2d(x, w, bias, stride, padding)


@REFERENCE.register(Linear, Conv2d)
def _real(op: Linear, v: Value, run: Runner) -> Value:
    return _real_product(op, torch.from_numpy(op.weight), _t(op.bias), v, conv=isinstance(op, Conv2d),
                         input_sign=op.input_sign)


@REFERENCE.register(BinaryWeightLinear, BinaryWeightConv2d)
def _binary_weight(op: Any, v: Value, run: Runner) -> Value:
    return _real_product(op, torch.from_numpy(op.weight_pm1), _t(op.bias), v, conv=isinstance(op, BinaryWeightConv2d),
                         input_sign=False)


@REFERENCE.register(BinaryLinear)
def _binary_linear(op: BinaryLinear, v: Value, run: Runner) -> Value:
    bits = to_bits(v)
    return binary_output(op, binary_gemm(pack_bits(bits.reshape(bits.shape[0], -1)), op.weights_packed, op.k))


@REFERENCE.register(BinaryConv2d)
def _binary_conv(op: BinaryConv2d, v: Value, run: Runner) -> Value:
    y = binary_conv2d(to_bits(v), op.weights_packed, k=op.k, out_channels=op.out_features, kernel=op.kernel_size,
                      stride=op.stride, padding=op.padding, pad_value=op.pad_value > 0)
    return binary_output(op, y)


@REFERENCE.register(Residual)
def _residual(op: Residual, v: Value, run: Runner) -> Value:
    return to_float(run(op.body, v)) + to_float(run(op.shortcut, v))
