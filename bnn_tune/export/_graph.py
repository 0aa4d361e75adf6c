"""The compiled form of a packed model: a list of typed ops, and the table of their handlers.

A model is compiled once (:mod:`._pack` from PyTorch, :func:`._header.read_graph` from a file) into a list of
small dataclasses, one class per op kind (:data:`OP_TYPES`). What a backend does with an op kind lives in one
:class:`OpTable` per backend, each kind registered once:

==============  =========================================================  ==========================
table           what its handler does                                      module
==============  =========================================================  ==========================
``read``        header entry + tensors -> typed op (validated)             :mod:`._header`
``write``       typed op -> header entry + tensors (the safetensors file)  :mod:`._header`
``reference``   run the op in numpy/torch (the reference forward pass)     :mod:`._reference`
``engine``      the op's step in a packed C-engine chain, or none          :mod:`._chains`
``cuda``        run the op on the CUDA kernels                             :mod:`._cuda_runner`
``lce``         the op as larq Keras layers, for Larq Compute Engine       :mod:`._lce`
==============  =========================================================  ==========================

A new format or backend is a new table with one handler per kind; a new op kind is one dataclass here and one
handler in every table (``tests/export/test_op_table.py`` checks that every table covers every kind).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

__all__ = [
    "OP_TYPES", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm", "BatchNormSign", "BinaryConv2d", "BinaryLinear",
    "BinaryWeightConv2d", "BinaryWeightLinear", "Conv2d", "Flatten", "Linear", "MaxPool2d", "Op", "OpTable", "ReLU",
    "Residual", "TABLES", "binary_ops", "walk",
]

Pair = tuple[int, int]


@dataclass(eq=False, kw_only=True)
class Op:
    """One step of a packed model. ``input_shape``/``output_shape``: per sample, recorded by a traced pass."""

    kind: ClassVar[str] = ""
    name: str
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None


@dataclass(eq=False, kw_only=True)
class Flatten(Op):
    """``x.reshape(N, -1)`` (NCHW order)."""

    kind: ClassVar[str] = "flatten"


@dataclass(eq=False, kw_only=True)
class ReLU(Op):
    kind: ClassVar[str] = "relu"


@dataclass(eq=False, kw_only=True)
class MaxPool2d(Op):
    """Max-pool; on bits after a folded batch-norm: OR for normal channels, AND for the ``and_channels`` (flipped ones).

    ``and_channels_tensor`` names the stored vector (the producing layer's ``flip`` tensor).
    """

    kind: ClassVar[str] = "maxpool2d"
    kernel_size: Pair
    stride: Pair
    padding: Pair
    and_channels: np.ndarray | None = None
    and_channels_tensor: str | None = None


@dataclass(eq=False, kw_only=True)
class AvgPool2d(Op):
    kind: ClassVar[str] = "avgpool2d"
    kernel_size: Pair
    stride: Pair
    padding: Pair
    ceil_mode: bool
    count_include_pad: bool


@dataclass(eq=False, kw_only=True)
class AdaptiveAvgPool2d(Op):
    kind: ClassVar[str] = "adaptive_avgpool2d"
    output_size: Pair


@dataclass(eq=False, kw_only=True)
class BatchNorm(Op):
    """``x * scale + shift`` per channel (float32; a batch-norm in inference form)."""

    kind: ClassVar[str] = "batchnorm"
    scale: np.ndarray
    shift: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.scale.shape[0])


@dataclass(eq=False, kw_only=True)
class BatchNormSign(BatchNorm):
    """The bit ``x * scale + shift >= 0`` (computed in float64): a batch-norm folded into the next binarization."""

    kind: ClassVar[str] = "batchnorm_sign"


@dataclass(eq=False, kw_only=True)
class Linear(Op):
    """Real-valued ``F.linear``; ``input_sign``: the input is binarized first (a binary-input, real-weight layer)."""

    kind: ClassVar[str] = "linear"
    weight: np.ndarray
    bias: np.ndarray | None
    input_sign: bool = False


@dataclass(eq=False, kw_only=True)
class Conv2d(Linear):
    """Real-valued ``F.conv2d``; with ``input_sign`` the binarized input is padded with ``pad_value``."""

    kind: ClassVar[str] = "conv2d"
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    pad_value: float = 0.0


@dataclass(eq=False, kw_only=True)
class _PackedWeight(Op):
    """Binary weights as ``sign(w)`` bits packed LSB-first into ``uint32`` words (``k`` true bits per row)."""

    weights_packed: np.ndarray  # uint32 [out_features, k_padded // 32]
    popcount: np.ndarray  # int32 [out_features]: set bits per row
    k: int
    out_features: int
    weight_shape: list[int]  # of the PyTorch weight
    bias: np.ndarray | None

    @property
    def k_padded(self) -> int:
        return int(self.weights_packed.shape[1]) * 32

    @cached_property
    def weight_bits(self) -> np.ndarray:
        """bool ``[out_features, k]`` (True = +1), in the file's ``(kh, kw, c)`` patch order for a conv."""
        from ..kernels._packing import unpack_bits

        return unpack_bits(self.weights_packed, self.k)

    @cached_property
    def weight_pm1(self) -> np.ndarray:
        """float32 +-1 weights in PyTorch's layout (``[O, C, kh, kw]`` for a conv, ``[O, F]`` otherwise)."""
        w = np.where(self.weight_bits, 1.0, -1.0).astype(np.float32)
        if isinstance(self, _ConvGeometry):
            o, c, kh, kw = self.weight_shape
            w = w.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(w)


@dataclass(eq=False, kw_only=True)
class _ConvGeometry:
    in_channels: int
    kernel_size: Pair
    stride: Pair
    padding: Pair


@dataclass(eq=False, kw_only=True)
class BinaryWeightLinear(_PackedWeight):
    """Binary weights, real inputs: a float product with the unpacked +-1 weights."""

    kind: ClassVar[str] = "binary_weight_linear"
    in_features: int = 0


@dataclass(eq=False, kw_only=True)
class BinaryWeightConv2d(_ConvGeometry, _PackedWeight):
    kind: ClassVar[str] = "binary_weight_conv2d"


@dataclass(eq=False, kw_only=True)
class BinaryLinear(_PackedWeight):
    """XOR-popcount layer on binarized input: ``y = K - 2 popcount(a ^ w)``.

    ``threshold`` (int32 ``[O]``, a folded batch-norm): the output is the bit ``y >= threshold``, with the weights of
    the ``flip`` channels pre-flipped; ``None``: the output is ``y`` (+ ``bias``) as float.
    """

    kind: ClassVar[str] = "binary_linear"
    in_features: int = 0
    pad_value: float = 1.0
    threshold: np.ndarray | None = None
    flip: np.ndarray | None = None
    folded_batchnorm: str | None = None


@dataclass(eq=False, kw_only=True)
class BinaryConv2d(_ConvGeometry, BinaryLinear):
    """A binary conv as :class:`BinaryLinear` over ``(kh, kw, c)`` patches; the input is padded with ``pad_value``."""

    kind: ClassVar[str] = "binary_conv2d"


@dataclass(eq=False, kw_only=True)
class Residual(Op):
    """``body(x) + shortcut(x)`` (a Bi-Real block)."""

    kind: ClassVar[str] = "residual"
    body: list[Op]
    shortcut: list[Op]


OP_TYPES: dict[str, type[Op]] = {t.kind: t for t in (
    Flatten, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm, BatchNormSign, Linear, Conv2d,
    BinaryWeightLinear, BinaryWeightConv2d, BinaryLinear, BinaryConv2d, Residual)}
"""Every op kind, by the name the file's header gives it."""

H = TypeVar("H", bound=Callable[..., Any])

TABLES: dict[str, OpTable[Any]] = {}
"""Every :class:`OpTable` made so far, by backend name (a backend's module makes its table when imported)."""


class OpTable(Generic[H]):
    """One backend's handler per op kind (a column of the op table; see the module docstring).

    Example:
        >>> table = OpTable("demo")
        >>> @table.register(Flatten, ReLU)
        ... def _shape_only(op):
        ...     return op.kind
        >>> table(ReLU(name="act"))(ReLU(name="act"))
        'relu'
        >>> del TABLES["demo"]  # tables are global, one per backend
    """

    def __init__(self, backend: str) -> None:
        if backend in TABLES:
            raise ValueError(f"An op table for backend {backend!r} exists already.")
        self.backend = backend
        self._handlers: dict[type[Op], H] = {}
        TABLES[backend] = self

    def register(self, *types: type[Op]) -> Callable[[H], H]:
        """Decorator: ``fn`` handles the given op kinds (exact classes, not their subclasses)."""
        def deco(fn: H) -> H:
            for t in types:
                if t in self._handlers:
                    raise ValueError(f"Op kind {t.kind!r} has a {self.backend} handler already.")
                self._handlers[t] = fn
            return fn
        return deco

    def __call__(self, op: Op) -> H:
        """The handler of ``op``'s kind; an op kind the backend does not know raises ``NotImplementedError``."""
        return self.handler(type(op), op.name)

    def handler(self, op_type: type[Op], layer: str = "?") -> H:
        """The handler of the op kind ``op_type`` (``layer``: named in the error when there is none)."""
        try:
            return self._handlers[op_type]
        except KeyError:
            raise NotImplementedError(f"The {self.backend} backend has no handler for op kind {op_type.kind!r} "
                                      f"(layer {layer!r}); it handles {sorted(self.kinds())}.") from None

    def kinds(self) -> set[str]:
        return {t.kind for t in self._handlers}


def walk(ops: list[Op]) -> Iterator[Op]:
    """Every op, depth first (a residual block, then its body and shortcut ops)."""
    for op in ops:
        yield op
        if isinstance(op, Residual):
            yield from walk(op.body)
            yield from walk(op.shortcut)


def binary_ops(ops: list[Op]) -> list[BinaryLinear]:
    """The XOR-popcount layers (``binary_linear``/``binary_conv2d``) in forward order, residual bodies included."""
    return [op for op in walk(ops) if isinstance(op, BinaryLinear)]
