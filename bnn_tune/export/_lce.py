"""The LCE column of the op table: a packed model as a larq Keras model, converted by Larq Compute Engine.

:data:`LCE` gives every op kind a handler that appends Keras layer specs (class, config, weights as numpy
arrays) to a :class:`LayerSpecs` list; no TensorFlow is imported here. The specs go to
``bnn_tune/export/_lce_worker.py``, which runs in the separate LCE environment (``make lce-env``:
tensorflow-cpu, tf-keras, larq, larq-compute-engine, numpy < 2), builds the ``tf.keras`` model with larq's
``QuantConv2D``/``QuantDense``, converts it with ``larq_compute_engine.convert_keras_model`` and runs LCE's
interpreter. :class:`LceWorker` talks to that process (JSON lines on stdin/stdout, arrays in ``.npy``/``.npz``
files read with ``allow_pickle=False``).

How each op maps (NCHW PyTorch -> NHWC Keras):

* ``binary_conv2d`` -> ``QuantConv2D(input_quantizer="ste_sign", kernel_quantizer="ste_sign")``, ``padding="same"``
  with ``pad_values=1`` (or ``"valid"`` without padding); the weights are the file's bits with the folded
  batch-norm's pre-flips undone, and the folded threshold becomes a ``BatchNormalization`` with scale +-1 (-1 for
  the flipped channels) and shift ``0.5 - threshold``: the next layer's ``ste_sign`` then gives exactly the
  file's bit ``y >= threshold`` (``y`` is an integer, the 0.5 keeps float rounding away from the edge). A
  max-pool on bits goes between the conv and that batch-norm (max of ``y``, then the sign-flipping scale: the
  AND of the flipped channels), so LCE computes what the packed model computes.
* ``binary_linear`` -> a binary conv too (LCE leaves ``QuantDense`` in float, larq/compute-engine#53): over a
  flattened ``H x W x C`` map a ``valid`` ``H x W`` conv, over a vector a 1x1 conv on a 1x1 map.
* ``conv2d``/``linear`` (real, the first/last layers) -> ``ZeroPadding2D`` + ``Conv2D`` / ``QuantDense`` (with
  ``input_quantizer="ste_sign"`` where the layer reads bits); ``batchnorm``/``batchnorm_sign`` -> a
  ``BatchNormalization`` (the consumer binarizes); pools, ReLU -> their Keras layers; PyTorch's NCHW flatten
  order is kept by permuting the next layer's weights.
* ``residual`` (Bi-Real blocks), -1 padding, padded pools and other shapes LCE has no layer for raise
  :class:`LceUnsupportedError` (a ``ValueError``) naming the layer.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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

__all__ = ["LCE", "LCE_PACKAGES", "LayerSpecs", "LceUnsupportedError", "LceWorker", "export_lce", "keras_specs",
           "lce_python"]

LCE_PACKAGES = "tensorflow-cpu==2.16.2 tf-keras==2.16.0 larq==0.13.3 larq-compute-engine==0.16.0"
_WORKER = Path(__file__).with_name("_lce_worker.py")
_BN_EPS = 1e-3


@dataclass
class LayerSpecs:
    """Keras layers in order, and the layout of the tensor between them.

    ``shape``: the current per-sample Keras shape, ``(H, W, C)`` or ``(F,)``; ``flat_from``: ``(C, H, W)`` when a
    PyTorch flatten of that map is pending (Keras still holds the map; the consumer permutes its weights);
    ``threshold``: a folded threshold to apply as a batch-norm after an optional max-pool.
    """

    input_shape: tuple[int, ...]
    layers: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple[int, ...] = ()
    flat_from: tuple[int, int, int] | None = None
    threshold: tuple[str, np.ndarray, np.ndarray] | None = None

    def add(self, cls: str, config: dict[str, Any], weights: list[np.ndarray] | None = None, *,
            name: str, shape: tuple[int, ...]) -> None:
        keys = []
        for i, w in enumerate(weights or []):
            key = f"{len(self.layers)}.{i}"
            self.weights[key] = np.ascontiguousarray(w, dtype=np.float32)
            keys.append(key)
        self.layers.append({"class": cls, "config": config, "weights": keys, "op": name})
        self.shape = shape

    def flush_threshold(self) -> None:
        if self.threshold is not None:
            name, gamma, beta = self.threshold
            self.threshold = None
            self.batchnorm(f"{name}.threshold", gamma, beta)

    def materialize_flat(self) -> None:
        """Turn a pending flatten into a Keras vector in PyTorch's NCHW order."""
        if self.flat_from is not None:
            c, h, w = self.flat_from
            self.flat_from = None
            self.add("Permute", {"dims": [3, 1, 2]}, name="flatten", shape=(c, h, w))
            self.add("Flatten", {}, name="flatten", shape=(c * h * w,))

    def batchnorm(self, name: str, scale: np.ndarray, shift: np.ndarray) -> None:
        """``x * scale + shift`` per channel as a ``BatchNormalization`` (mean 0, variance 1)."""
        gamma = np.asarray(scale, np.float64) * math.sqrt(1.0 + _BN_EPS)
        n = len(gamma)
        self.add("BatchNormalization", {"epsilon": _BN_EPS},
                 [gamma, np.asarray(shift, np.float64), np.zeros(n), np.ones(n)], name=name, shape=self.shape)


LceFn = Callable[[Any, LayerSpecs], None]
LCE: OpTable[LceFn] = OpTable("lce")


def keras_specs(ops: list[Op], input_shape: tuple[int, ...]) -> LayerSpecs:
    """The Keras layer specs of ``ops`` for inputs of PyTorch shape ``input_shape`` (``(C, H, W)`` or ``(F,)``)."""
    shape = (input_shape[1], input_shape[2], input_shape[0]) if len(input_shape) == 3 else tuple(input_shape)
    specs = LayerSpecs(input_shape=shape, shape=shape)
    for op in ops:
        LCE(op)(op, specs)
    specs.flush_threshold()
    if specs.flat_from is not None or len(specs.shape) != 1:
        specs.add("Flatten", {}, name="output", shape=(math.prod(specs.shape),))
    return specs


class LceUnsupportedError(ValueError):
    """A layer of the packed model has no form in the LCE export (a residual block, -1 padding, ...)."""


def _unsupported(op: Op, why: str) -> LceUnsupportedError:
    return LceUnsupportedError(f"Layer {op.name!r} ({op.kind}) has no LCE form: {why}.")


def _need_map(op: Op, s: LayerSpecs) -> tuple[int, int, int]:
    if s.flat_from is not None or len(s.shape) != 3:
        raise _unsupported(op, f"it needs an image input, but gets a vector of shape {s.shape}")
    h, w, c = s.shape
    return h, w, c


def _out_hw(h: int, w: int, k: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]) -> tuple[int, int]:
    return (h + 2 * pad[0] - k[0]) // stride[0] + 1, (w + 2 * pad[1] - k[1]) // stride[1] + 1


@LCE.register(Residual)
def _residual(op: Residual, s: LayerSpecs) -> None:
    raise _unsupported(op, "the LCE export writes sequential models (binarynet, vgg_small, mlp), not residual "
                           "blocks")


@LCE.register(Flatten)
def _flatten(op: Flatten, s: LayerSpecs) -> None:
    s.flush_threshold()
    if len(s.shape) == 3 and s.flat_from is None:
        h, w, c = s.shape
        s.flat_from = (c, h, w)


@LCE.register(ReLU)
def _relu(op: ReLU, s: LayerSpecs) -> None:
    s.flush_threshold()
    s.materialize_flat()
    s.add("ReLU", {}, name=op.name, shape=s.shape)


@LCE.register(MaxPool2d)
def _maxpool(op: MaxPool2d, s: LayerSpecs) -> None:
    h, w, c = _need_map(op, s)
    if any(op.padding):
        raise _unsupported(op, f"Keras pools do not pad with -inf (padding={op.padding})")
    if op.and_channels is not None and s.threshold is None:
        raise _unsupported(op, "a pool on bits must follow a thresholded binary conv")
    ho, wo = _out_hw(h, w, op.kernel_size, op.stride, (0, 0))
    s.add("MaxPooling2D", {"pool_size": list(op.kernel_size), "strides": list(op.stride), "padding": "valid"},
          name=op.name, shape=(ho, wo, c))  # before the pending threshold: max of y, then the +-1 scale


@LCE.register(AvgPool2d)
def _avgpool(op: AvgPool2d, s: LayerSpecs) -> None:
    s.flush_threshold()
    h, w, c = _need_map(op, s)
    if any(op.padding) or op.ceil_mode:
        raise _unsupported(op, f"padding={op.padding}, ceil_mode={op.ceil_mode} (Keras: valid pools only)")
    ho, wo = _out_hw(h, w, op.kernel_size, op.stride, (0, 0))
    s.add("AveragePooling2D", {"pool_size": list(op.kernel_size), "strides": list(op.stride), "padding": "valid"},
          name=op.name, shape=(ho, wo, c))


@LCE.register(AdaptiveAvgPool2d)
def _adaptive_avgpool(op: AdaptiveAvgPool2d, s: LayerSpecs) -> None:
    s.flush_threshold()
    _, _, c = _need_map(op, s)
    if tuple(op.output_size) != (1, 1):
        raise _unsupported(op, f"output_size={op.output_size} (only (1, 1), a global pool)")
    s.add("GlobalAveragePooling2D", {"keepdims": True}, name=op.name, shape=(1, 1, c))


@LCE.register(BatchNorm, BatchNormSign)
def _batchnorm(op: BatchNorm, s: LayerSpecs) -> None:
    s.flush_threshold()
    s.materialize_flat()
    s.batchnorm(op.name, op.scale, op.shift)


def _dense_input(op: Op, s: LayerSpecs, w: np.ndarray) -> np.ndarray:
    """``w`` ``[O, F]`` with its columns in the order of the Keras vector the layer reads (a Flatten is added)."""
    if s.flat_from is not None:
        c, h, wd = s.flat_from
        s.flat_from = None
        w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        s.add("Flatten", {}, name=f"{op.name}.flatten", shape=(w.shape[1],))
    elif len(s.shape) != 1:
        s.add("Flatten", {}, name=f"{op.name}.flatten", shape=(math.prod(s.shape),))
    if s.shape != (w.shape[1],):
        raise _unsupported(op, f"its weight reads {w.shape[1]} features, but the input has shape {s.shape}")
    return w


def _real_dense(op: Any, s: LayerSpecs, w: np.ndarray, *, input_sign: bool, kernel_sign: bool) -> None:
    s.flush_threshold()
    w = _dense_input(op, s, w)
    weights = [w.T] + ([op.bias] if op.bias is not None else [])
    s.add("QuantDense", {"units": int(w.shape[0]), "use_bias": op.bias is not None,
                         "input_quantizer": "ste_sign" if input_sign else None,
                         "kernel_quantizer": "ste_sign" if kernel_sign else None},
          weights, name=op.name, shape=(int(w.shape[0]),))


def _real_conv(op: Any, s: LayerSpecs, w: np.ndarray, *, input_sign: bool, kernel_sign: bool) -> None:
    s.flush_threshold()
    h, wd, c = _need_map(op, s)
    o, _, kh, kw = w.shape
    ho, wo = _out_hw(h, wd, (kh, kw), op.stride, op.padding)
    config: dict[str, Any] = {"filters": int(o), "kernel_size": [int(kh), int(kw)], "strides": list(op.stride),
                              "use_bias": op.bias is not None, "kernel_quantizer": "ste_sign" if kernel_sign else None,
                              "input_quantizer": "ste_sign" if input_sign else None}
    if input_sign and any(op.padding):  # pads the binarized input with +-1: only "same" with pad value 1 exists
        _same_padding(op, (kh, kw), op.stride, op.padding, op.pad_value)
        config.update(padding="same", pad_values=1.0)
    else:
        if any(op.padding):
            s.add("ZeroPadding2D", {"padding": [[p, p] for p in op.padding]}, name=f"{op.name}.pad",
                  shape=(h + 2 * op.padding[0], wd + 2 * op.padding[1], c))
        config["padding"] = "valid"
    weights = [w.transpose(2, 3, 1, 0)] + ([op.bias] if op.bias is not None else [])
    s.add("QuantConv2D", config, weights, name=op.name, shape=(ho, wo, int(o)))


def _same_padding(op: Op, k: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int], value: float) -> None:
    if value != 1.0:
        raise _unsupported(op, f"it pads its binary input with {value:g}; LCE pads binary convs with +1 only")
    if tuple(stride) != (1, 1) or any(2 * p != kk - 1 for p, kk in zip(pad, k)):
        raise _unsupported(op, f"padding={tuple(pad)} with kernel {tuple(k)} and stride {tuple(stride)} is not "
                               "Keras' 'same' padding")


@LCE.register(Linear)
def _linear(op: Linear, s: LayerSpecs) -> None:
    _real_dense(op, s, op.weight, input_sign=op.input_sign, kernel_sign=False)


@LCE.register(Conv2d)
def _conv(op: Conv2d, s: LayerSpecs) -> None:
    _real_conv(op, s, op.weight, input_sign=op.input_sign, kernel_sign=False)


@LCE.register(BinaryWeightLinear)
def _binary_weight_linear(op: BinaryWeightLinear, s: LayerSpecs) -> None:
    _real_dense(op, s, op.weight_pm1, input_sign=False, kernel_sign=True)


@LCE.register(BinaryWeightConv2d)
def _binary_weight_conv(op: BinaryWeightConv2d, s: LayerSpecs) -> None:
    _real_conv(op, s, op.weight_pm1, input_sign=False, kernel_sign=True)


def _unflipped_pm1(op: BinaryLinear) -> np.ndarray:
    """The layer's +-1 weights ``[O, k]`` as trained (the folded batch-norm's pre-flips undone)."""
    bits = op.weight_bits
    if op.flip is not None:
        bits = bits ^ op.flip.astype(bool)[:, None]
    return np.where(bits, 1.0, -1.0).astype(np.float32)


def _binary_out(op: BinaryLinear, s: LayerSpecs) -> None:
    if op.threshold is not None:  # bit = y' >= thr with y' = -y on flipped channels: sign(+-y + 0.5 - thr)
        flip = np.zeros(op.out_features, bool) if op.flip is None else op.flip.astype(bool)
        s.threshold = (op.name, np.where(flip, -1.0, 1.0), 0.5 - op.threshold.astype(np.float64))


@LCE.register(BinaryConv2d)
def _binary_conv(op: BinaryConv2d, s: LayerSpecs) -> None:
    s.flush_threshold()
    h, w, c = _need_map(op, s)
    if c != op.in_channels:
        raise _unsupported(op, f"it reads {op.in_channels} channels, but the input has {c}")
    kh, kw = op.kernel_size
    ho, wo = _out_hw(h, w, op.kernel_size, op.stride, op.padding)
    config: dict[str, Any] = {"filters": op.out_features, "kernel_size": [kh, kw], "strides": list(op.stride),
                              "use_bias": op.bias is not None, "input_quantizer": "ste_sign",
                              "kernel_quantizer": "ste_sign"}
    if any(op.padding):
        _same_padding(op, op.kernel_size, op.stride, op.padding, op.pad_value)
        config.update(padding="same", pad_values=1.0)
    else:
        config["padding"] = "valid"
    kernel = _unflipped_pm1(op).reshape(op.out_features, kh, kw, c).transpose(1, 2, 3, 0)
    weights = [kernel] + ([op.bias] if op.bias is not None else [])
    s.add("QuantConv2D", config, weights, name=op.name, shape=(ho, wo, op.out_features))
    _binary_out(op, s)


@LCE.register(BinaryLinear)
def _binary_linear(op: BinaryLinear, s: LayerSpecs) -> None:
    """A binary conv LCE keeps binary: ``valid`` ``H x W`` over a flattened map, 1x1 over a vector."""
    s.flush_threshold()
    w = _unflipped_pm1(op)
    o = op.out_features
    if s.flat_from is not None:
        c, h, wd = s.flat_from
        s.flat_from = None
        kernel = w.reshape(o, c, h, wd).transpose(2, 3, 1, 0)
    else:
        f = math.prod(s.shape)
        if f != op.k:
            raise _unsupported(op, f"it reads {op.k} features, but the input has shape {s.shape}")
        if s.shape != (1, 1, f):
            s.add("Reshape", {"target_shape": [1, 1, f]}, name=f"{op.name}.reshape", shape=(1, 1, f))
        kernel = w.T.reshape(1, 1, f, o)
    weights = [kernel] + ([op.bias] if op.bias is not None else [])
    s.add("QuantConv2D", {"filters": o, "kernel_size": list(kernel.shape[:2]), "strides": [1, 1], "padding": "valid",
                          "use_bias": op.bias is not None, "input_quantizer": "ste_sign",
                          "kernel_quantizer": "ste_sign"}, weights, name=op.name, shape=(1, 1, o))
    _binary_out(op, s)


# ---------------------------------------------------------------------- the LCE environment
def lce_python() -> str:
    """The Python of the LCE environment: ``$BNN_TUNE_LCE_PYTHON``, else the checkout's ``.venv-lce``.

    Raises:
        ImportError: there is none (one line naming ``make lce-env``).
    """
    env = os.environ.get("BNN_TUNE_LCE_PYTHON")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / ".venv-lce" / "bin" / "python"
    if not path.is_file():
        where = f"BNN_TUNE_LCE_PYTHON={env!r} is not a file" if env else f"no LCE environment at {path.parent.parent}"
        raise ImportError(f"LCE export needs TensorFlow, larq and Larq Compute Engine in their own environment "
                          f"({where}): run `make lce-env` in the bnn-tune checkout (it installs {LCE_PACKAGES} "
                          "into .venv-lce), or set BNN_TUNE_LCE_PYTHON to a Python that has them.")
    return str(path)


class LceWorker:
    """A process of the LCE environment running ``_lce_worker.py serve``: convert, predict, time.

    Use as a context manager; every call sends one JSON line and reads one back (a worker error is raised
    here as ``RuntimeError`` with the worker's message).
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python or lce_python()
        self._tmp = tempfile.TemporaryDirectory(prefix="bnn_tune_lce_")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
        self._log_path = os.path.join(self._tmp.name, "worker.log")
        self._log = open(self._log_path, "w")  # TensorFlow's chatter: a file, so a full pipe never blocks it
        self._proc = subprocess.Popen([self.python, str(_WORKER), "serve"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        self.versions: dict[str, str] = self._call({"cmd": "versions"})["versions"]

    def __enter__(self) -> LceWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        self._tmp.cleanup()

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._proc.stdout.readline()
        if not line:
            self._log.flush()
            with open(self._log_path) as f:
                last = [ln for ln in f.read().splitlines() if ln.strip()][-1:] or ["?"]
            raise RuntimeError(f"The LCE worker ({self.python}) stopped: {last[0]}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"LCE worker: {out['error']}")
        return out

    def convert(self, specs: LayerSpecs, path: str | os.PathLike, *, batch_size: int = 1) -> dict[str, Any]:
        """Build the Keras model of ``specs`` (fixed ``batch_size``), convert it with LCE, write ``path``.

        Returns the worker's report: ``{"ops": {op name: count}, "bytes": file size}``.
        """
        d = tempfile.mkdtemp(dir=self._tmp.name)
        np.savez(os.path.join(d, "weights.npz"), **specs.weights)  # type: ignore[arg-type]  # numpy stubs: **arrays
        with open(os.path.join(d, "spec.json"), "w") as f:
            json.dump({"input_shape": list(specs.input_shape), "layers": specs.layers}, f)
        return self._call({"cmd": "convert", "spec": d, "out": os.fspath(path), "batch_size": batch_size})

    def load(self, path: str | os.PathLike, *, threads: int = 1, setting: str = "best") -> int:
        """Load a ``.tflite`` into an interpreter; returns its handle. ``setting``: ``"best"`` (indirect BGEMM,
        XNNPACK) or ``"default"`` (LCE's interpreter defaults)."""
        return int(self._call({"cmd": "load", "model": os.fspath(path), "threads": threads, "setting": setting})["id"])

    def predict(self, handle: int, x: np.ndarray) -> np.ndarray:
        """Logits of NHWC (or ``[N, F]``) float32 ``x``, in batches of the model's fixed batch size."""
        d = tempfile.mkdtemp(dir=self._tmp.name)
        src, dst = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
        np.save(src, np.ascontiguousarray(x, dtype=np.float32))
        self._call({"cmd": "predict", "id": handle, "input": src, "output": dst})
        return np.load(dst, allow_pickle=False)

    def time(self, handle: int, calls: int) -> list[float]:
        """Milliseconds of ``calls`` invocations on the interpreter's current input (set by :meth:`predict`)."""
        return [float(v) for v in self._call({"cmd": "time", "id": handle, "calls": calls})["ms"]]


def export_lce(specs: LayerSpecs, path: str | os.PathLike, *, worker: LceWorker, batch_size: int = 1
               ) -> dict[str, Any]:
    """Write the LCE ``.tflite`` of ``specs`` (:func:`keras_specs`) to ``path``; returns the converter's report."""
    return worker.convert(specs, path, batch_size=batch_size)

