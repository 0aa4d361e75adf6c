"""The safetensors columns of the op table: a typed op <-> its header entry and named tensors.

``write``: every op becomes one JSON entry of ``header["layers"]`` (``{"op": kind, "name": ..., fields}``) and its
arrays become tensors named ``"<layer>.<role>"`` (``weight_bits``, ``popcount``, ``threshold``, ``flip``, ``bias``,
``weight``, ``scale``, ``shift``); an entry refers to its tensors by name. ``read`` is the inverse, and checks
what the header promises (dtypes, shapes, the tensors it names); a broken entry raises
:class:`~bnn_tune.export.PackedFormatError` naming the layer. The layout is
:data:`~bnn_tune.export.FORMAT_VERSION` 2 (see :mod:`._format`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._format import PackedFormatError
from ._graph import (
    OP_TYPES,
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

__all__ = ["read_graph", "write_graph"]

Tensors = Mapping[str, np.ndarray]
ReadFn = Callable[[dict[str, Any], Tensors], Op]
WriteFn = Callable[[Any, dict[str, np.ndarray]], dict[str, Any]]

READ: OpTable[ReadFn] = OpTable("read")
WRITE: OpTable[WriteFn] = OpTable("write")


def read_graph(layers: list[dict[str, Any]], tensors: Tensors) -> list[Op]:
    """The typed ops of a header's ``layers`` list (an unknown op kind or broken entry raises ``PackedFormatError``)."""
    ops = []
    for entry in layers:
        kind = entry.get("op") if isinstance(entry, dict) else None
        name = entry.get("name", "?") if isinstance(entry, dict) else "?"
        cls = OP_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise PackedFormatError(f"Unknown op {kind!r} in the packed model header (layer {name!r}); this "
                                    f"version reads {sorted(OP_TYPES)}.")
        try:
            op = READ.handler(cls, name)(entry, tensors)
        except KeyError as e:
            raise PackedFormatError(f"Layer {name!r} ({kind}): the header entry lacks the field {e.args[0]!r}.") from None
        op.input_shape = _opt_list(entry.get("input_shape"))
        op.output_shape = _opt_list(entry.get("output_shape"))
        ops.append(op)
    return ops


def write_graph(ops: list[Op], tensors: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The header ``layers`` list of ``ops``; their arrays are added to ``tensors``."""
    out = []
    for op in ops:
        entry = {"op": op.kind, "name": op.name, **WRITE(op)(op, tensors)}
        if op.input_shape is not None:
            entry["input_shape"] = list(op.input_shape)
        if op.output_shape is not None:
            entry["output_shape"] = list(op.output_shape)
        out.append(entry)
    return out


# ---------------------------------------------------------------------- helpers
def _opt_list(v: Any) -> list[int] | None:
    return None if v is None else [int(x) for x in v]


def _pair(v: Any) -> tuple[int, int]:
    a, b = v
    return int(a), int(b)


def _get(tensors: Tensors, name: str, layer: str) -> np.ndarray:
    try:
        return np.array(tensors[name])  # a writable copy (safetensors' arrays may be read-only)
    except KeyError:
        raise PackedFormatError(f"The header refers to tensor {name!r} (layer {layer!r}), which the file does "
                                "not contain.") from None


def _opt(tensors: Tensors, name: str | None, layer: str) -> np.ndarray | None:
    return None if name is None else _get(tensors, name, layer)


def _put(tensors: dict[str, np.ndarray], name: str, arr: np.ndarray | None) -> str | None:
    if arr is None:
        return None
    if name in tensors:
        raise ValueError(f"Two ops write the tensor {name!r}; layer names must be unique.")
    tensors[name] = np.ascontiguousarray(arr)
    return name


def _conv_fields(e: dict[str, Any]) -> dict[str, Any]:
    return {"in_channels": int(e["in_channels"]), "kernel_size": _pair(e["kernel_size"]),
            "stride": _pair(e["stride"]), "padding": _pair(e["padding"])}


def _write_conv_fields(op: Any) -> dict[str, Any]:
    return {"in_channels": op.in_channels, "kernel_size": list(op.kernel_size), "stride": list(op.stride),
            "padding": list(op.padding)}


# ---------------------------------------------------------------------- shape-only ops
@READ.register(Flatten, ReLU)
def _read_plain(e: dict[str, Any], t: Tensors) -> Op:
    return OP_TYPES[e["op"]](name=e["name"])


@WRITE.register(Flatten, ReLU)
def _write_plain(op: Op, t: dict[str, np.ndarray]) -> dict[str, Any]:
    return {}


@READ.register(MaxPool2d)
def _read_maxpool(e: dict[str, Any], t: Tensors) -> Op:
    ref = e["and_channels"]
    ac = _opt(t, ref, e["name"])
    return MaxPool2d(name=e["name"], kernel_size=_pair(e["kernel_size"]), stride=_pair(e["stride"]),
                     padding=_pair(e["padding"]), and_channels=None if ac is None else ac.astype(bool),
                     and_channels_tensor=ref)


@WRITE.register(MaxPool2d)
def _write_maxpool(op: MaxPool2d, t: dict[str, np.ndarray]) -> dict[str, Any]:
    if (op.and_channels is None) != (op.and_channels_tensor is None):
        raise ValueError(f"{op.name}: `and_channels` and `and_channels_tensor` must be given together.")
    if op.and_channels_tensor is not None and op.and_channels_tensor not in t:  # normally the producer's flip
        _put(t, op.and_channels_tensor, np.asarray(op.and_channels).astype(np.uint8))
    return {"kernel_size": list(op.kernel_size), "stride": list(op.stride), "padding": list(op.padding),
            "and_channels": op.and_channels_tensor}


@READ.register(AvgPool2d)
def _read_avgpool(e: dict[str, Any], t: Tensors) -> Op:
    return AvgPool2d(name=e["name"], kernel_size=_pair(e["kernel_size"]), stride=_pair(e["stride"]),
                     padding=_pair(e["padding"]), ceil_mode=bool(e["ceil_mode"]),
                     count_include_pad=bool(e["count_include_pad"]))


@WRITE.register(AvgPool2d)
def _write_avgpool(op: AvgPool2d, t: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"kernel_size": list(op.kernel_size), "stride": list(op.stride), "padding": list(op.padding),
            "ceil_mode": op.ceil_mode, "count_include_pad": op.count_include_pad}


@READ.register(AdaptiveAvgPool2d)
def _read_adaptive(e: dict[str, Any], t: Tensors) -> Op:
    return AdaptiveAvgPool2d(name=e["name"], output_size=_pair(e["output_size"]))


@WRITE.register(AdaptiveAvgPool2d)
def _write_adaptive(op: AdaptiveAvgPool2d, t: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"output_size": list(op.output_size)}


# ---------------------------------------------------------------------- batch-norms
@READ.register(BatchNorm, BatchNormSign)
def _read_bn(e: dict[str, Any], t: Tensors) -> Op:
    n = e["name"]
    cls = BatchNormSign if e["op"] == "batchnorm_sign" else BatchNorm
    return cls(name=n, scale=_get(t, e["scale"], n), shift=_get(t, e["shift"], n))


@WRITE.register(BatchNorm, BatchNormSign)
def _write_bn(op: BatchNorm, t: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"channels": op.channels, "scale": _put(t, f"{op.name}.scale", op.scale.astype(np.float32)),
            "shift": _put(t, f"{op.name}.shift", op.shift.astype(np.float32))}


# ---------------------------------------------------------------------- real layers
@READ.register(Linear, Conv2d)
def _read_real(e: dict[str, Any], t: Tensors) -> Op:
    n = e["name"]
    common = {"name": n, "weight": _get(t, e["weight"], n), "bias": _opt(t, e["bias"], n),
              "input_sign": bool(e["input_sign"])}
    if e["op"] == "linear":
        return Linear(**common)
    return Conv2d(**common, stride=_pair(e["stride"]), padding=_pair(e["padding"]), pad_value=float(e["pad_value"]))


@WRITE.register(Linear, Conv2d)
def _write_real(op: Linear, t: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {"input_sign": op.input_sign, "weight": _put(t, f"{op.name}.weight", op.weight),
           "weight_shape": list(op.weight.shape), "bias": _put(t, f"{op.name}.bias", op.bias)}
    if isinstance(op, Conv2d):
        out.update(stride=list(op.stride), padding=list(op.padding), pad_value=op.pad_value)
    return out


# ---------------------------------------------------------------------- packed-weight layers
def _packed_fields(e: dict[str, Any], t: Tensors) -> dict[str, Any]:
    n = e["name"]
    w = _get(t, e["weight"], n)
    o, k, kp = int(e["out_features"]), int(e["k"]), int(e["k_padded"])
    if w.dtype != np.uint32 or w.shape != (o, kp // 32):
        raise PackedFormatError(f"{n}: packed weight has dtype {w.dtype} shape {w.shape}, expected "
                                f"uint32 {(o, kp // 32)}.")
    if "kernel_size" in e:
        kh, kw = e["kernel_size"]
        if k != kh * kw * e["in_channels"]:
            raise PackedFormatError(f"{n}: k={k} but a {kh}x{kw} conv over {e['in_channels']} "
                                    f"channels has k={kh * kw * e['in_channels']}.")
    return {"name": n, "weights_packed": w, "popcount": _get(t, e["popcount"], n), "k": k, "out_features": o,
            "weight_shape": [int(s) for s in e["weight_shape"]], "bias": _opt(t, e["bias"], n)}


def _write_packed_fields(op: Any, t: dict[str, np.ndarray]) -> dict[str, Any]:
    n = op.name
    return {"out_features": op.out_features, "k": op.k, "k_padded": op.k_padded,
            "weight": _put(t, f"{n}.weight_bits", op.weights_packed), "popcount": _put(t, f"{n}.popcount", op.popcount),
            "bias": _put(t, f"{n}.bias", op.bias), "weight_shape": list(op.weight_shape)}


@READ.register(BinaryWeightLinear, BinaryWeightConv2d)
def _read_binary_weight(e: dict[str, Any], t: Tensors) -> Op:
    f = _packed_fields(e, t)
    if e["op"] == "binary_weight_linear":
        return BinaryWeightLinear(**f, in_features=int(e["in_features"]))
    return BinaryWeightConv2d(**f, **_conv_fields(e))


@WRITE.register(BinaryWeightLinear, BinaryWeightConv2d)
def _write_binary_weight(op: Any, t: dict[str, np.ndarray]) -> dict[str, Any]:
    out = _write_packed_fields(op, t)
    out.update(threshold=None, flip=None)
    out.update(_write_conv_fields(op) if isinstance(op, BinaryWeightConv2d) else {"in_features": op.in_features})
    return out


@READ.register(BinaryLinear, BinaryConv2d)
def _read_binary(e: dict[str, Any], t: Tensors) -> Op:
    n = e["name"]
    f = _packed_fields(e, t)
    flip = _opt(t, e["flip"], n)
    f.update(pad_value=float(e["pad_value"]), threshold=_opt(t, e["threshold"], n),
             flip=None if flip is None else flip, folded_batchnorm=e.get("folded_batchnorm"))
    if e["op"] == "binary_linear":
        return BinaryLinear(**f, in_features=int(e["in_features"]))
    return BinaryConv2d(**f, **_conv_fields(e))


@WRITE.register(BinaryLinear, BinaryConv2d)
def _write_binary(op: BinaryLinear, t: dict[str, np.ndarray]) -> dict[str, Any]:
    n = op.name
    out = _write_packed_fields(op, t)
    out.update(pad_value=op.pad_value, threshold=_put(t, f"{n}.threshold", op.threshold),
               flip=_put(t, f"{n}.flip", op.flip))
    if op.folded_batchnorm is not None:
        out["folded_batchnorm"] = op.folded_batchnorm
    out.update(_write_conv_fields(op) if isinstance(op, BinaryConv2d) else {"in_features": op.in_features})
    return out


# ---------------------------------------------------------------------- blocks
@READ.register(Residual)
def _read_residual(e: dict[str, Any], t: Tensors) -> Op:
    return Residual(name=e["name"], body=read_graph(e["body"], t), shortcut=read_graph(e["shortcut"], t))


@WRITE.register(Residual)
def _write_residual(op: Residual, t: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"body": write_graph(op.body, t), "shortcut": write_graph(op.shortcut, t)}
