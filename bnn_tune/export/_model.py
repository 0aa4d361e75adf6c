"""``PackedModel``: runs a packed model file on the CPU packed kernels (and float32 for real layers)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import InputTransform
from ..kernels._engine import BinaryChain, engine_available
from ._chains import build_chain, chain_end
from ._format import PackedFormatError, read_packed_file, write_packed_file
from ._graph import BatchNormSign, BinaryLinear, Op, Residual
from ._header import read_graph
from ._pack import compile_model
from ._reference import REFERENCE, Value, binary_output, run_reference, to_float

__all__ = ["PackedModel", "load_packed", "pack_model", "save_packed"]


class PackedModel:
    """A binarized network in packed form: XOR-popcount binary layers, folded batch-norm thresholds.

    Build one with :func:`pack_model` from a trained model or :func:`load_packed` from a file. The header's op
    list is compiled once into typed ops (:attr:`ops`, the dataclasses of :mod:`bnn_tune.export._graph`); the
    forward pass runs them through the op table's handlers: binary layers on packed ``uint32`` words with the
    CPU kernels of :mod:`bnn_tune.kernels`, real layers (first/last, shortcuts) in float32.

    On the CPU, every run of binary ops (a batch-norm sign, binary convs/linears with folded thresholds,
    bit max-pools, flattens) goes to the packed engine (:class:`bnn_tune.kernels.BinaryChain`: bit-packed
    NHWC activations, direct convolution in C, one call per layer, buffers kept per batch size) when it
    builds; :meth:`set_cpu_engine` switches it off (the numpy reference path) or sets its threads / ISA.

    Input: when the file carries an input transform (``header["input_transform"]``, written by
    :func:`~bnn_tune.export.export_best` from the dataset's training statistics), :meth:`logits` and
    :meth:`predict` take the user's raw arrays (sklearn digits ``X`` with values 0..16, uint8 images,
    MNIST-1D rows) and standardize them as training did; ``preprocessed=True`` takes input already
    normalized like the training data. A model packed without a transform takes model-ready input.

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
        self._runners: dict[str, Any] = {}
        tr = self.header.get("input_transform")
        self.input_transform: InputTransform | None = None if tr is None else InputTransform.from_dict(tr)
        self._check_convention()
        layers = self.header.get("layers")
        if not isinstance(layers, list):
            raise PackedFormatError(f"The packed model header has no op list ('layers'), but got {type(layers).__name__}.")
        self.ops: list[Op] = read_graph(layers, self.tensors)
        self._engine: dict[str, Any] | None = {"threads": None, "isa": None} if engine_available() else None
        self._chains: dict[tuple, BinaryChain] = {}
        self._segments: dict[int, list[tuple[int, int, bool]]] = {}  # id(op list) -> [i, j), is a chain

    def set_cpu_engine(self, enabled: bool = True, *, threads: int | None = None, isa: str | None = None) -> None:
        """Use the packed C engine for binary chains (``enabled=True``, default when it builds) or the numpy
        reference path. ``threads``: per layer (default every core); ``isa``: ``"avx512"``, ``"avx2"``,
        ``"portable"`` (default ``$BNN_TUNE_CPU_ISA`` or the best the CPU has)."""
        self._chains.clear()
        if not enabled:
            self._engine = None
            return
        if not engine_available():
            raise RuntimeError("The packed CPU engine could not be built (no C compiler, or "
                               "BNN_TUNE_CPU_KERNEL=numpy); use set_cpu_engine(False).")
        from ..kernels._engine import _resolve_isa

        _resolve_isa(isa)  # a bad ISA fails here, not at the first batch
        if threads is not None and threads < 1:
            raise ValueError(f"`threads` must be >= 1, but got threads={threads}.")
        self._engine = {"threads": threads, "isa": isa}

    def _check_convention(self) -> None:
        from ._pack import BIT_CONVENTION

        conv = self.header.get("bit_convention") or {}
        for key in ("word_bits", "bit_order", "one_means", "pad_bits", "conv_patch_order"):
            if conv.get(key) != BIT_CONVENTION[key]:
                raise PackedFormatError(f"The file's bit convention has {key}={conv.get(key)!r}, but this version "
                                        f"reads {key}={BIT_CONVENTION[key]!r}; re-export the model with it.")

    # ------------------------------------------------------------------ forward
    def _run(self, ops: list[Op], v: Value) -> Value:
        """Run ``ops``: engine chains where the engine is on, every other op on its reference handler."""
        if self._engine is None:
            for op in ops:
                v = REFERENCE(op)(op, v, self._run)
            return v
        segments = self._segments.get(id(ops))
        if segments is None:
            segments = self._segments[id(ops)] = _segments(ops)
        for i, j, is_chain in segments:
            if is_chain:
                v = self._run_chain(ops, i, j, v)
            else:
                v = REFERENCE(ops[i])(ops[i], v, self._run)
        return v

    def _run_chain(self, ops: list[Op], i: int, j: int, v: Value) -> Value:
        """Run ``ops[i:j]`` (a chain, see :func:`bnn_tune.export._chains.chain_end`) on the packed C engine."""
        if isinstance(v, np.ndarray) and not isinstance(ops[i], BatchNormSign):
            x = np.ascontiguousarray(v, dtype=bool)
        else:
            x = np.ascontiguousarray(to_float(v).numpy(), dtype=np.float32)
        key = (id(ops), i, x.shape[1:], x.dtype.kind)
        chain = self._chains.get(key)
        if chain is None:
            eng = self._engine or {}
            chain = self._chains[key] = build_chain(ops[i:j], x.shape[1:], threads=eng.get("threads"),
                                                    isa=eng.get("isa"))
        y = chain.run(x)
        last = ops[j - 1]
        if isinstance(last, BinaryLinear) and last.threshold is None:  # integer output: float + bias
            return binary_output(last, y)
        return y

    def trace(self, input_shape: tuple[int, ...]) -> None:
        """Record every op's per-sample ``input_shape``/``output_shape`` (on :attr:`ops` and in the header's
        ``layers``) by one reference forward pass on zeros of ``input_shape``."""
        _trace(self.ops, self.header["layers"], torch.zeros((1, *input_shape)))

    def model_input(self, x: Any, *, preprocessed: bool = False) -> torch.Tensor:
        """The float32 model input for a batch ``x``: the stored input transform applied to raw ``x``
        (unless ``preprocessed`` or none is stored), its shape checked against the model's.

        Raises:
            ValueError: ``x`` is not a batch of the expected shape (the message names that shape).
        """
        if isinstance(x, torch.Tensor):
            x = x.detach()
        elif not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("`x` must be a batch of inputs, but got a scalar.")
        if self.input_transform is not None and not preprocessed:
            return self.input_transform(x)
        t = torch.as_tensor(x).float()
        shape = self.header.get("model", {}).get("input_shape")
        if shape is not None and tuple(t.shape[1:]) != tuple(shape):
            n = math.prod(shape)
            if t.ndim >= 2 and math.prod(t.shape[1:]) == n:
                return t.reshape(t.shape[0], *shape)
            hint = "" if self.input_transform is None else " (normalized like the training data)"
            raise ValueError(f"Expected a batch of model inputs{hint} of shape (N, {', '.join(map(str, shape))}), "
                             f"but got shape {tuple(t.shape)}.")
        return t

    @torch.no_grad()
    def logits(self, x: Any, *, batch_size: int = 512, device: str = "cpu", preprocessed: bool = False
               ) -> np.ndarray:
        """Class scores ``float32 [N, num_classes]`` for a batch ``x`` (numpy or torch).

        ``x`` is raw input as the training data came (see :attr:`input_transform`; the transform is
        applied here), or, with ``preprocessed=True`` or a model stored without a transform, input of
        the model's shape normalized like the training data. ``device="cuda"`` runs the binary layers
        on the CUDA kernels (needs a GPU; NVRTC from torch's CUDA wheels
        builds them, see :mod:`bnn_tune.export._cuda_runner`); the
        default is the CPU packed kernels.
        """
        if device not in ("cpu",) and not str(device).startswith("cuda"):
            raise ValueError(f"`device` must be 'cpu' or 'cuda[:N]', but got device={device!r}.")
        x = self.model_input(x, preprocessed=preprocessed)
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
            outs.append(to_float(self._run(self.ops, x[i: i + batch_size])).numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), np.float32)

    def predict(self, x: Any, *, batch_size: int = 512, device: str = "cpu", preprocessed: bool = False
                ) -> np.ndarray:
        """Predicted class indices ``int64 [N]`` (argmax of :meth:`logits`; raw input unless ``preprocessed``)."""
        return self.logits(x, batch_size=batch_size, device=device, preprocessed=preprocessed).argmax(axis=1)

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


def _segments(ops: list[Op]) -> list[tuple[int, int, bool]]:
    """``ops`` cut into engine chains ``(i, j, True)`` and single ops outside them ``(i, i + 1, False)``."""
    out, i = [], 0
    while i < len(ops):
        j = chain_end(ops, i)
        out.append((i, j, True) if j > i else (i, i + 1, False))
        i = max(j, i + 1)
    return out


def _trace(ops: list[Op], entries: list[dict[str, Any]], v: Value) -> Value:
    for op, entry in zip(ops, entries, strict=True):
        op.input_shape = entry["input_shape"] = list(v.shape[1:])
        if isinstance(op, Residual):
            _trace(op.body, entry["body"], v)
            _trace(op.shortcut, entry["shortcut"], v)
        v = REFERENCE(op)(op, v, run_reference)
        op.output_shape = entry["output_shape"] = list(v.shape[1:])
    return v


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
               num_classes: int | None = None, input_transform: InputTransform | None = None) -> PackedModel:
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
        input_transform: how raw inputs become model inputs (a dataset's
            :attr:`~bnn_tune.data.DataSplits.input_transform`); stored, and applied by ``predict``.

    Returns:
        :class:`PackedModel`.

    Example:
        >>> from bnn_tune.nn import build_model
        >>> pm = pack_model(build_model("mlp", (40,), 10, width=0.125))
        >>> [op.kind for op in pm.ops][:4]
        ['flatten', 'linear', 'batchnorm_sign', 'binary_linear']
    """
    if config is not None and not isinstance(config, Mapping):
        config = config.to_dict()
    if input_transform is not None:
        if input_shape is None:
            input_shape = tuple(input_transform.input_shape)
        elif tuple(input_shape) != tuple(input_transform.input_shape):
            raise ValueError(f"`input_transform` makes inputs of shape {tuple(input_transform.input_shape)}, "
                             f"but input_shape={tuple(input_shape)}.")
    header, tensors = compile_model(model, model_info=_model_info(model, config, input_shape, num_classes),
                                    config=config,
                                    input_transform=None if input_transform is None else input_transform.to_dict())
    pm = PackedModel(header, tensors)
    if input_shape is not None:
        pm.trace(input_shape)
    return pm


def save_packed(model: nn.Module | PackedModel, path: str | os.PathLike, *, config: Any = None,
                input_shape: tuple[int, ...] | None = None, input_transform: InputTransform | None = None
                ) -> PackedModel:
    """Pack ``model`` (unless it already is a :class:`PackedModel`) and write it to ``path``.

    Example:
        >>> import tempfile, os
        >>> from bnn_tune.nn import build_model
        >>> path = os.path.join(tempfile.mkdtemp(), "m.bnn.safetensors")
        >>> _ = save_packed(build_model("mlp", (40,), 10, width=0.125), path)
        >>> load_packed(path).num_classes
        10
    """
    pm = model if isinstance(model, PackedModel) else pack_model(model, config, input_shape=input_shape,
                                                                 input_transform=input_transform)
    pm.save(path)
    return pm


def load_packed(path: str | os.PathLike) -> PackedModel:
    """Load a packed model file; corrupted, truncated or version-mismatched files raise
    :class:`~bnn_tune.export.PackedFormatError` saying which.

    No pickle is involved: safetensors arrays and a JSON header, verified against its SHA-256 checksum.
    """
    header, tensors = read_packed_file(path)
    return PackedModel(header, tensors)
