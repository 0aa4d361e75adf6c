"""The C-engine column of the op table: which ops a packed-engine chain runs, and as which step.

The engine (:class:`bnn_tune.kernels.BinaryChain`) keeps activations as packed NHWC bits from one binary layer to
the next. Each op kind registers what it is inside a chain (:data:`ENGINE`): a :class:`ChainLayer` (binary
layers, a max-pool on bits, a flatten), the chain's input binarization (:class:`InputSign`, from a
``batchnorm_sign``), or ``None`` (the op runs outside chains, on the reference path).

A chain (:func:`chain_end`): an optional input binarization directly before a binary layer, then binary layers
whose output is thresholded bits, a conv optionally followed by one max-pool (on bits) and flattens leading into
the next binary layer; it ends after a binary layer without threshold (integer output) or before the first op
that is not part of it. Trailing flattens stay outside (run on the bits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..kernels._engine import BinaryChain, ChainLayer
from ._format import PackedFormatError
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

__all__ = ["ENGINE", "InputSign", "build_chain", "chain_end"]


@dataclass(frozen=True)
class InputSign:
    """The chain's input bit is ``x * scale + shift >= 0`` (float64): a ``batchnorm_sign`` before the chain."""

    scale: np.ndarray
    shift: np.ndarray


ChainPart = ChainLayer | InputSign | None
ENGINE: OpTable[Callable[[Any], ChainPart]] = OpTable("engine")


@ENGINE.register(ReLU, AvgPool2d, AdaptiveAvgPool2d, BatchNorm, Linear, Conv2d, BinaryWeightLinear,
                 BinaryWeightConv2d, Residual)
def _outside(op: Op) -> ChainPart:
    return None  # float ops: the reference path runs them (a residual's body gets chains of its own)


@ENGINE.register(BatchNormSign)
def _input_sign(op: BatchNormSign) -> ChainPart:
    return InputSign(op.scale.astype(np.float64), op.shift.astype(np.float64))


@ENGINE.register(Flatten)
def _flatten(op: Flatten) -> ChainPart:
    return ChainLayer("flatten")


@ENGINE.register(MaxPool2d)
def _maxpool(op: MaxPool2d) -> ChainPart:
    return ChainLayer("maxpool", kernel=op.kernel_size, stride=op.stride, padding=op.padding,
                      and_channels=op.and_channels)


@ENGINE.register(BinaryLinear)
def _binary_linear(op: BinaryLinear) -> ChainPart:
    return ChainLayer("linear", op.weight_bits, threshold=op.threshold)


@ENGINE.register(BinaryConv2d)
def _binary_conv(op: BinaryConv2d) -> ChainPart:
    kh, kw = op.kernel_size
    return ChainLayer("conv", op.weight_bits.reshape(op.out_features, kh, kw, op.in_channels), threshold=op.threshold,
                      stride=op.stride, padding=op.padding, pad_value=op.pad_value)


def chain_end(ops: list[Op], i: int) -> int:
    """End (exclusive) of the chain starting at ``ops[i]``, or ``i`` when none starts there (module docstring)."""
    k = i
    if isinstance(ops[k], BatchNormSign) and k + 1 < len(ops) and isinstance(ops[k + 1], BinaryLinear):
        k += 1
    if not isinstance(ops[k], BinaryLinear):
        return i
    while True:
        op = ops[k]
        k += 1
        assert isinstance(op, BinaryLinear)
        if op.threshold is None:
            return k
        if isinstance(op, BinaryConv2d) and k < len(ops) and isinstance(ops[k], MaxPool2d):
            k += 1
        f = k
        while f < len(ops) and isinstance(ops[f], Flatten):
            f += 1
        if f < len(ops) and isinstance(ops[f], BinaryLinear):
            k = f
            continue
        return k


def build_chain(ops: list[Op], in_shape: tuple[int, ...], *, threads: int | None, isa: str | None) -> BinaryChain:
    """The engine chain running ``ops`` (a chain found by :func:`chain_end`) on inputs of shape ``in_shape``."""
    scale = shift = None
    layers: list[ChainLayer] = []
    for op in ops:
        part = ENGINE(op)(op)
        if isinstance(part, InputSign):
            scale, shift = part.scale, part.shift
        elif part is None:
            raise ValueError(f"Op {op.name!r} ({op.kind}) cannot run inside an engine chain.")
        else:
            layers.append(part)
    try:
        return BinaryChain(in_shape, layers, input_scale=scale, input_shift=shift, threads=threads, isa=isa)
    except ValueError as e:
        raise PackedFormatError(f"Layers {ops[0].name}..{ops[-1].name} do not fit an input of shape "
                                f"{tuple(in_shape)}: {e}") from None
