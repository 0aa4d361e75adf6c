"""``PackedModel``: runs a packed model file on the CPU packed kernels (and float32 for real layers)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..kernels._cpu import binary_conv2d, binary_gemm
from ..kernels._packing import pack_bits, unpack_bits
from ._format import PackedFormatError, read_packed_file, write_packed_file
from ._pack import compile_model

__all__ = ["PackedModel", "load_packed", "pack_model", "save_packed"]

_Value = torch.Tensor | np.ndarray  # float activations (torch) or bits (numpy bool, True = +1)


def _to_float(v: _Value) -> torch.Tensor:
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.where(v, 1.0, -1.0).astype(np.float32))
    return v


def _to_bits(v: _Value) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    return (v >= 0).numpy()


def _chan(t: np.ndarray | torch.Tensor, ndim: int):
    """Reshape a per-channel vector to broadcast over dim 1 of an ``ndim`` tensor."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


class PackedModel:
    """A binarized network in packed form: XOR-popcount binary layers, folded batch-norm thresholds.

    Build one with :func:`pack_model` from a trained model or :func:`load_packed` from a file. The
    forward pass follows the header's op list; binary layers run on packed ``uint32`` words with the
    CPU kernels of :mod:`bnn_tune.kernels`, real layers (first/last, shortcuts) in float32.

    Args:
        header: the JSON header (see :mod:`bnn_tune.export._format`).
        tensors: the named arrays the header refers to.

    Example:
        >>> from bnn_tune.nn import build_model
        >>> m = build_model("mlp", (1, 8, 8), 10, width=0.125).eval()
        >>> pm = pack_model(m, input_shape=(1, 8, 8))
        >>> pm.predict(torch.randn(4, 1, 8, 8)).shape
        (4,)
    """

    def __init__(self, header: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
        self.header = dict(header)
        self.tensors = dict(tensors)
        self._t: dict[str, Any] = {}
        self._runners: dict[str, Any] = {}
        self._prepare(self.header["layers"])

    # ------------------------------------------------------------------ setup
    def _get(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise PackedFormatError(f"The header refers to tensor {name!r}, which the file does not contain.") from None

    def _opt(self, name: str | None) -> np.ndarray | None:
        return None if name is None else self._get(name)

    def _prepare(self, ops: list[dict[str, Any]]) -> None:
        """Convert tensors once to the runtime form (torch for float ops, 64-bit-ready words for bits)."""
        for op in ops:
            kind = op.get("op")
            n: str = op.get("name", "?")
            if kind in ("linear", "conv2d"):
                bias = self._opt(op["bias"])
                self._t[n] = (torch.from_numpy(self._get(op["weight"]).copy()),
                              None if bias is None else torch.from_numpy(bias.copy()))
            elif kind in ("batchnorm", "batchnorm_sign"):
                self._t[n] = (torch.from_numpy(self._get(op["scale"]).copy()),
                              torch.from_numpy(self._get(op["shift"]).copy()))
            elif kind in ("binary_linear", "binary_conv2d"):
                w = self._get(op["weight"])
                if w.dtype != np.uint32 or w.shape != (op["out_features"], op["k_padded"] // 32):
                    raise PackedFormatError(f"{n}: packed weight has dtype {w.dtype} shape {w.shape}, expected "
                                            f"uint32 {(op['out_features'], op['k_padded'] // 32)}.")
                thr = self._opt(op["threshold"])
                bias = self._opt(op["bias"])
                self._t[n] = (w, thr, None if bias is None else torch.from_numpy(bias.copy()))
            elif kind in ("binary_weight_linear", "binary_weight_conv2d"):
                bits = unpack_bits(self._get(op["weight"]), op["k"])
                w = np.where(bits, 1.0, -1.0).astype(np.float32)
                if kind == "binary_weight_conv2d":
                    o, c, kh, kw = op["weight_shape"]
                    w = w.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
                bias = self._opt(op["bias"])
                self._t[n] = (torch.from_numpy(np.ascontiguousarray(w)),
                              None if bias is None else torch.from_numpy(bias.copy()))
            elif kind == "maxpool2d":
                ac = self._opt(op.get("and_channels"))
                self._t[n] = None if ac is None else torch.from_numpy(ac.astype(bool))
            elif kind == "residual":
                self._prepare(op["body"])
                self._prepare(op["shortcut"])
            elif kind in ("flatten", "relu", "avgpool2d", "adaptive_avgpool2d"):
                pass
            else:
                raise PackedFormatError(f"Unknown op {kind!r} in the packed model header (layer {n!r}).")

    # ------------------------------------------------------------------ forward
    def _run(self, ops: list[dict[str, Any]], v: _Value) -> _Value:
        for op in ops:
            v = self._op(op, v)
        return v

    def _op(self, op: dict[str, Any], v: _Value) -> _Value:
        kind, n = op["op"], op["name"]
        if kind == "flatten":
            return v.reshape(v.shape[0], -1)
        if kind == "relu":
            return F.relu(_to_float(v))
        if kind == "maxpool2d":
            x = _to_float(v)
            and_ch = self._t[n]
            if and_ch is not None:  # pool on bits: OR (max) for normal channels, AND (min) for flipped ones
                s = _chan(torch.where(and_ch, -1.0, 1.0), x.ndim)
                x = F.max_pool2d(x * s, op["kernel_size"], op["stride"], op["padding"]) * s
            else:
                x = F.max_pool2d(x, op["kernel_size"], op["stride"], op["padding"])
            return x.numpy() > 0 if isinstance(v, np.ndarray) else x
        if kind == "avgpool2d":
            return F.avg_pool2d(_to_float(v), op["kernel_size"], op["stride"], op["padding"],
                                ceil_mode=op["ceil_mode"], count_include_pad=op["count_include_pad"])
        if kind == "adaptive_avgpool2d":
            return F.adaptive_avg_pool2d(_to_float(v), op["output_size"])
        if kind == "batchnorm":
            scale, shift = self._t[n]
            x = _to_float(v)
            return x * _chan(scale, x.ndim) + _chan(shift, x.ndim)
        if kind == "batchnorm_sign":
            scale, shift = self._t[n]
            x = _to_float(v).double()
            return (x * _chan(scale.double(), x.ndim) + _chan(shift.double(), x.ndim) >= 0).numpy()
        if kind in ("linear", "conv2d", "binary_weight_linear", "binary_weight_conv2d"):
            w, b = self._t[n]
            if op.get("input_sign"):
                x = _to_float(_to_bits(v))
            else:
                x = _to_float(v)
            if kind.endswith("linear"):
                return F.linear(x, w, b)
            stride, padding = op["stride"], op["padding"]
            if op.get("input_sign") and any(padding):
                x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=op["pad_value"])
                padding = [0, 0]
            return F.conv2d(x, w, b, stride, padding)
        if kind in ("binary_linear", "binary_conv2d"):
            w, thr, bias = self._t[n]
            bits = _to_bits(v)
            if kind == "binary_linear":
                y = binary_gemm(pack_bits(bits.reshape(bits.shape[0], -1)), w, op["k"])
            else:
                y = binary_conv2d(bits, w, k=op["k"], out_channels=op["out_features"],
                                  kernel=tuple(op["kernel_size"]), stride=tuple(op["stride"]),
                                  padding=tuple(op["padding"]), pad_value=op["pad_value"] > 0)
            if thr is not None:
                return y >= _chan(thr, y.ndim)
            out = torch.from_numpy(y.astype(np.float32))
            return out if bias is None else out + _chan(bias, out.ndim)
        if kind == "residual":
            return _to_float(self._run(op["body"], v)) + _to_float(self._run(op["shortcut"], v))
        raise PackedFormatError(f"Unknown op {kind!r} (layer {n!r}).")

    @torch.no_grad()
    def logits(self, x: Any, *, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
        """Class scores ``float32 [N, num_classes]`` for a batch ``x`` (numpy or torch, model input shape).

        ``device="cuda"`` runs the binary layers on the CUDA kernels (needs a GPU; NVRTC from torch's CUDA wheels builds them, see
        :mod:`bnn_tune.export._cuda_runner`); the default is the CPU packed kernels.
        """
        if device not in ("cpu",) and not str(device).startswith("cuda"):
            raise ValueError(f"`device` must be 'cpu' or 'cuda[:N]', but got device={device!r}.")
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float()
        if x.ndim == 0:
            raise ValueError("`x` must be a batch of inputs, but got a scalar.")
        outs = []
        if str(device).startswith("cuda"):
            runner = self._runners.get(str(device))
            if runner is None:
                from ._cuda_runner import CudaRunner

                runner = self._runners[str(device)] = CudaRunner(self, device)
            for i in range(0, x.shape[0], batch_size):
                outs.append(runner.logits(x[i: i + batch_size]).cpu().numpy())
            return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), np.float32)
        x = x.cpu()
        for i in range(0, x.shape[0], batch_size):
            outs.append(_to_float(self._run(self.header["layers"], x[i: i + batch_size])).numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), np.float32)

    def predict(self, x: Any, *, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
        """Predicted class indices ``int64 [N]`` (argmax of :meth:`logits`)."""
        return self.logits(x, batch_size=batch_size, device=device).argmax(axis=1)

    __call__ = logits

    # ------------------------------------------------------------------ info
    @property
    def num_classes(self) -> int | None:
        return self.header.get("model", {}).get("num_classes")

    @property
    def config(self) -> dict[str, Any] | None:
        """The flat training config stored in the file (``None`` when packed without one)."""
        return self.header.get("config")

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of stored weights: ``{"binary": packed words, "real": float32 params}``."""
        binary = sum(v.nbytes for k, v in self.tensors.items() if k.endswith(".weight_bits"))
        return {"binary": int(binary), "real": int(sum(v.nbytes for v in self.tensors.values()) - binary)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as one safetensors file (see :func:`save_packed`)."""
        write_packed_file(path, self.header, self.tensors)

    def __repr__(self) -> str:
        m = self.header.get("model", {})
        return (f"PackedModel(model={m.get('name')!r}, layers={len(self.header['layers'])}, "
                f"weight_bytes={self.weight_bytes()})")


def _model_info(model: nn.Module, config: Mapping[str, Any] | None, input_shape: Any, num_classes: int | None
                ) -> dict[str, Any]:
    if num_classes is None:
        last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        num_classes = int(last[-1].out_features) if last else None
    info: dict[str, Any] = {"input_shape": list(input_shape) if input_shape is not None else None,
                            "num_classes": num_classes}
    if config is not None:
        for key in ("model", "width", "depth", "activation", "dataset"):
            if key in config:
                info["name" if key == "model" else key] = config[key]
    return info


def pack_model(model: nn.Module, config: Any = None, *, input_shape: tuple[int, ...] | None = None,
               num_classes: int | None = None) -> PackedModel:
    """Pack a trained zoo model (binary weights -> bits, batch-norm -> thresholds) in memory.

    The model is read in inference form: batch-norms use their running statistics whatever
    ``model.training`` is, and binary weights are ``sign(w)`` (see :mod:`bnn_tune.export._pack`).

    Args:
        model: an ``nn.Sequential`` from :func:`bnn_tune.nn.build_model` (or made of the same layers).
        config: the training config (flat dict or :class:`~bnn_tune.config.TrialConfig`), stored in
            the header so :func:`~bnn_tune.fit` can retrain it; ``None`` to store none.
        input_shape: shape of one input; when given, per-layer output shapes are recorded (and the
            packing is checked by one forward pass).
        num_classes: stored in the header (default: ``out_features`` of the last linear layer).

    Returns:
        :class:`PackedModel`.

    Example:
        >>> from bnn_tune.nn import build_model
        >>> pm = pack_model(build_model("mlp", (40,), 10, width=0.125))
        >>> [op["op"] for op in pm.header["layers"]][:4]
        ['flatten', 'linear', 'batchnorm_sign', 'binary_linear']
    """
    if config is not None and not isinstance(config, Mapping):
        config = config.to_dict()
    header, tensors = compile_model(model, model_info=_model_info(model, config, input_shape, num_classes),
                                    config=config)
    pm = PackedModel(header, tensors)
    if input_shape is not None:
        _trace(pm, header["layers"], torch.zeros((1, *input_shape)))
    return pm


def _trace(pm: PackedModel, ops: list[dict[str, Any]], v: _Value) -> _Value:
    """Record every op's ``input_shape``/``output_shape`` (per sample) by one forward pass."""
    for op in ops:
        op["input_shape"] = list(v.shape[1:])
        if op["op"] == "residual":
            _trace(pm, op["body"], v)
            _trace(pm, op["shortcut"], v)
        v = pm._op(op, v)
        op["output_shape"] = list(v.shape[1:])
    return v


def save_packed(model: nn.Module | PackedModel, path: str | os.PathLike, *, config: Any = None,
                input_shape: tuple[int, ...] | None = None) -> PackedModel:
    """Pack ``model`` (unless it already is a :class:`PackedModel`) and write it to ``path``.

    Example:
        >>> import tempfile, os
        >>> from bnn_tune.nn import build_model
        >>> path = os.path.join(tempfile.mkdtemp(), "m.bnn.safetensors")
        >>> _ = save_packed(build_model("mlp", (40,), 10, width=0.125), path)
        >>> load_packed(path).num_classes
        10
    """
    pm = model if isinstance(model, PackedModel) else pack_model(model, config, input_shape=input_shape)
    pm.save(path)
    return pm


def load_packed(path: str | os.PathLike) -> PackedModel:
    """Load a packed model file; corrupted, truncated or version-mismatched files raise
    :class:`~bnn_tune.export.PackedFormatError` saying which.

    No pickle is involved: safetensors arrays and a JSON header, verified against its SHA-256 checksum.
    """
    header, tensors = read_packed_file(path)
    return PackedModel(header, tensors)
