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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels import cuda
from ..kernels._packing import unpack_bits

__all__ = ["CudaRunner"]


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
    """GPU executor of a packed model's op list (see the module docstring)."""

    def __init__(self, pm: Any, device: str | torch.device = "cuda") -> None:
        if not cuda.available():
            raise RuntimeError("PackedModel on 'cuda' needs a CUDA GPU and NVRTC (cuda-bindings and nvidia-cuda-nvrtc, "
                               "which torch's CUDA wheels bring) or nvcc; use device='cpu'.")
        self.pm = pm
        self.device = torch.device(device)
        self._t: dict[str, Any] = {}
        self._prepare(pm.header["layers"])

    def _dev(self, arr: np.ndarray | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if arr is None:
            return None
        t = torch.from_numpy(np.ascontiguousarray(arr).copy())
        if dtype is not None:
            t = t.to(dtype)
        return t.to(self.device)

    def _words(self, words: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(words).view(np.int32).copy()).to(self.device)

    def _prepare(self, ops: list[dict[str, Any]]) -> None:
        pm = self.pm
        for op in ops:
            kind, n = op["op"], op["name"]
            if kind in ("linear", "conv2d", "binary_weight_linear", "binary_weight_conv2d"):
                w, b = pm._t[n]
                self._t[n] = (w.to(self.device), None if b is None else b.to(self.device))
            elif kind in ("batchnorm", "batchnorm_sign"):
                s, h = pm._t[n]
                self._t[n] = (s.to(self.device), h.to(self.device))
            elif kind == "maxpool2d":
                self._t[n] = None if pm._t[n] is None else pm._t[n].to(self.device)
            elif kind in ("binary_linear", "binary_conv2d"):
                words = pm.tensors[op["weight"]]
                if kind == "binary_conv2d":  # (kh, kw, c) bits -> tap-aligned words
                    bits = unpack_bits(words, op["k"]).reshape(op["out_features"], op["k"])
                    words = cuda.tap_aligned_weight(bits, tuple(op["kernel_size"]), op["in_channels"])
                thr = pm.tensors.get(op["threshold"]) if op["threshold"] else None
                bias = pm.tensors.get(op["bias"]) if op["bias"] else None
                self._t[n] = (self._words(words), self._dev(pm.tensors[op["popcount"]], torch.int32),
                              self._dev(thr, torch.int32), self._dev(bias))
            elif kind == "residual":
                self._prepare(op["body"])
                self._prepare(op["shortcut"])

    def _gemm(self, x: torch.Tensor, w: torch.Tensor, pw: torch.Tensor, k: int) -> torch.Tensor:
        """int32 +-1 dot products of the rows of float ``x`` (signed here) with packed ``w``."""
        wd = w.shape[1]
        a, pa = cuda.pack_sign(x.float().contiguous(), wd)
        if x.shape[0] <= 16:
            return cuda.gemv(w, k, a=a)
        return cuda.bmma(a, w, k, pa, pw)

    def _binary_linear(self, op: dict[str, Any], v: Any) -> Any:
        w, pw, thr, bias = self._t[op["name"]]
        k, o = op["k"], op["out_features"]
        packed_in = isinstance(v, _PackedBits) and v.k == k and v.words.shape[1] == w.shape[1]
        batch = v.words.shape[0] if isinstance(v, _PackedBits) else v.shape[0]
        if thr is not None and batch <= 16:  # stays packed: GEMV with the fused threshold output
            src = {"a": v.words} if packed_in else {"x": _floats(v).flatten(1).float().contiguous()}
            return _PackedBits(cuda.gemv(w, k, thr=thr, out_words=_out_words(o), **src), o)
        y = cuda.gemv(w, k, a=v.words) if packed_in else self._gemm(_floats(v).flatten(1), w, pw, k)
        if thr is not None:
            return torch.where(y >= _chan(thr, y.ndim), 1.0, -1.0)
        out = y.float()
        return out if bias is None else out + _chan(bias, out.ndim)

    def _op(self, op: dict[str, Any], v: Any) -> Any:
        kind, n = op["op"], op["name"]
        if kind == "binary_linear":
            return self._binary_linear(op, v)
        v = _floats(v)
        if kind == "flatten":
            return v.flatten(1)
        if kind == "relu":
            return F.relu(v)
        if kind == "maxpool2d":
            and_ch = self._t[n]
            if and_ch is not None:
                s = _chan(torch.where(and_ch, -1.0, 1.0), v.ndim)
                return F.max_pool2d(v * s, op["kernel_size"], op["stride"], op["padding"]) * s
            return F.max_pool2d(v, op["kernel_size"], op["stride"], op["padding"])
        if kind == "avgpool2d":
            return F.avg_pool2d(v, op["kernel_size"], op["stride"], op["padding"], ceil_mode=op["ceil_mode"],
                                count_include_pad=op["count_include_pad"])
        if kind == "adaptive_avgpool2d":
            return F.adaptive_avg_pool2d(v, op["output_size"])
        if kind == "batchnorm":
            s, h = self._t[n]
            return v * _chan(s, v.ndim) + _chan(h, v.ndim)
        if kind == "batchnorm_sign":
            s, h = self._t[n]
            return _pm1(v.double() * _chan(s.double(), v.ndim) + _chan(h.double(), v.ndim)).float()
        if kind in ("linear", "conv2d", "binary_weight_linear", "binary_weight_conv2d"):
            w, b = self._t[n]
            x = _pm1(v) if op.get("input_sign") else v
            if kind.endswith("linear"):
                return F.linear(x, w, b)
            padding = op["padding"]
            if op.get("input_sign") and any(padding):
                x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=op["pad_value"])
                padding = [0, 0]
            return F.conv2d(x, w, b, op["stride"], padding)
        if kind == "binary_conv2d":
            w, pw, thr, bias = self._t[n]
            act = cuda.pack_nhwc(v.float().contiguous(), tuple(op["padding"]), op["pad_value"])
            y = cuda.bconv(act, w, op["k"], pw, kernel_size=tuple(op["kernel_size"]),
                           stride=tuple(op["stride"])).permute(0, 3, 1, 2)
            if thr is not None:
                return torch.where(y >= _chan(thr, y.ndim), 1.0, -1.0)
            out = y.float()
            return out if bias is None else out + _chan(bias, out.ndim)
        if kind == "residual":
            body, short = v, v
            for o in op["body"]:
                body = self._op(o, body)
            for o in op["shortcut"]:
                short = self._op(o, short)
            return _floats(body) + _floats(short)
        raise ValueError(f"Unknown op {kind!r} (layer {n!r}).")

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        v = x.to(self.device, torch.float32)
        for op in self.pm.header["layers"]:
            v = self._op(op, v)
        return _floats(v)
