"""Compile a trained PyTorch BNN into the packed op list (:func:`pack_model`): typed ops of :mod:`._graph`.

Rules:

* Binary weights are exported as ``binarize(w)`` (sign, ``sign(0) = +1``) whatever
  ``weight_quantizer`` the layer carried during training: latent weights (LatentAdam), Bop's +-1
  weights, BMD's ``tanh(beta w)`` and BNEW's clipped real weights all become their hard sign, which
  is the deployed network (BMD and BNEW end training with that projection).
* Binary layers whose input is binarized (``input_quantizer`` set) become ``binary_linear`` /
  ``binary_conv2d`` on packed words; layers with binary weights but real inputs
  (``activation="none"``) keep the packed weights and unpack them for a float product.
* A batch-norm whose output is binarized by the next layer (possibly through ``Flatten``) is folded:
  ``sign(a y + b)`` with ``a = gamma / sqrt(var + eps)``, ``b = beta - a mean``. When ``y`` is the
  integer output of a binary layer (possibly through ``MaxPool2d``) the fold becomes an integer
  threshold per channel: ``a > 0``: bit = ``y >= ceil(-b / a)``; ``a < 0``: the channel's weights are
  pre-flipped (``y' = -y``) and bit = ``y' >= ceil(b / a)``; ``a = 0``: constant ``b >= 0``, stored as
  the threshold ``-K`` (always 1) or ``K + 1`` (never). A max-pool between the layer and the
  batch-norm becomes a pool on bits: OR for normal channels, AND for flipped ones (max of ``y`` is
  min of ``y'``). Otherwise (real input, e.g. after the first real conv) the fold is a float
  ``batchnorm_sign`` op.
* First/last real layers, shortcuts, pools and non-folded batch-norms stay real (float32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import nn as bnn
from ..kernels._cpu import reorder_conv_weight
from ..kernels._packing import K_TILE, pack_bits, popcount_rows
from . import _graph as g
from ._format import FORMAT, FORMAT_VERSION
from ._header import write_graph

__all__ = ["BIT_CONVENTION", "compile_model", "compile_ops"]

BIT_CONVENTION = {
    "word_bits": 32,
    "word_dtype": "uint32 little-endian",
    "bit_order": "lsb_first",
    "one_means": 1,
    "zero_means": -1,
    "pad_bits": 0,
    "k_tile_bits": K_TILE,
    "conv_patch_order": "kh,kw,c",
    "dot": "K - 2*popcount(a ^ w) = K - 2*popcount(a) - 2*popcount(w) + 4*popcount(a & w)",
    "binary_weight": "sign(w), sign(0) = +1, whatever weight_quantizer was used in training",
}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Compiler:
    def __init__(self) -> None:
        self._fold: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(BatchNorm op) -> float64 (a, b)

    # ------------------------------------------------------------------ modules
    def module(self, m: nn.Module, name: str) -> list[g.Op]:
        if isinstance(m, nn.Sequential):
            out: list[g.Op] = []
            for child_name, child in m.named_children():
                out += self.module(child, f"{name}.{child_name}" if name else child_name)
            return out
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return []
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"Cannot export {name}: only Flatten(start_dim=1, end_dim=-1) is supported.")
            return [g.Flatten(name=name)]
        if isinstance(m, nn.ReLU):
            return [g.ReLU(name=name)]
        if isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != (1, 1) or m.ceil_mode:
                raise ValueError(f"Cannot export {name}: MaxPool2d with dilation or ceil_mode.")
            return [g.MaxPool2d(name=name, kernel_size=_pair(m.kernel_size),
                                stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                                padding=_pair(m.padding))]
        if isinstance(m, nn.AvgPool2d):
            return [g.AvgPool2d(name=name, kernel_size=_pair(m.kernel_size),
                                stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                                padding=_pair(m.padding), ceil_mode=bool(m.ceil_mode),
                                count_include_pad=bool(m.count_include_pad))]
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return [g.AdaptiveAvgPool2d(name=name, output_size=_pair(m.output_size))]
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return [self.batchnorm(m, name)]
        if isinstance(m, bnn.BiRealBlock):
            conv = self.module(m.conv, f"{name}.conv")
            bn = self.module(m.bn, f"{name}.bn")
            act = self.module(m.act, f"{name}.act")
            return [g.Residual(name=name, body=conv + bn + act, shortcut=self.module(m.shortcut, f"{name}.shortcut"))]
        if isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d)):
            return [self.binary_layer(m, name)]
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return [self.real_layer(m, name, input_sign=False)]
        raise ValueError(f"Cannot export module {name!r} of type {type(m).__name__}; supported: the layers "
                         "of bnn_tune.nn.build_model (Linear, Conv2d, BinaryLinear, BinaryConv2d, BatchNorm, "
                         "pools, Flatten, ReLU, BiRealBlock).")

    def batchnorm(self, m: Any, name: str) -> g.BatchNorm:
        if m.running_mean is None or m.running_var is None:
            raise ValueError(f"Cannot export {name}: batch-norm without running statistics.")
        var = m.running_var.detach().double().cpu()
        mean = m.running_mean.detach().double().cpu()
        gamma = m.weight.detach().double().cpu() if m.weight is not None else torch.ones_like(mean)
        beta = m.bias.detach().double().cpu() if m.bias is not None else torch.zeros_like(mean)
        a = gamma / torch.sqrt(var + m.eps)
        b = beta - a * mean
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise ValueError(f"Cannot export {name}: batch-norm parameters are not finite.")
        op = g.BatchNorm(name=name, scale=a.numpy().astype(np.float32), shift=b.numpy().astype(np.float32))
        self._fold[id(op)] = (a.numpy(), b.numpy())  # float64, for folding
        return op

    def real_layer(self, m: Any, name: str, *, input_sign: bool) -> g.Linear:
        w = _np(m.weight).astype(np.float32)
        bias = _np(m.bias).astype(np.float32) if m.bias is not None else None
        if isinstance(m, nn.Linear):
            return g.Linear(name=name, weight=w, bias=bias, input_sign=input_sign)
        self._check_conv(m, name)
        return g.Conv2d(name=name, weight=w, bias=bias, input_sign=input_sign, stride=_pair(m.stride),
                        padding=_pair(m.padding),
                        pad_value=float(getattr(m, "pad_value", 0.0)) if input_sign else 0.0)

    @staticmethod
    def _check_conv(m: Any, name: str) -> None:
        if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"Cannot export {name}: only groups=1, dilation=1, integer zero padding convs.")

    def binary_layer(self, m: Any, name: str) -> g.Op:
        if m.weight_quantizer is None:  # real weights (last layer reading binary activations)
            return self.real_layer(m, name, input_sign=m.input_quantizer is not None)
        if m.input_quantizer is not None and getattr(m, "pad_value", 1.0) == 0.0 and any(_pair(m.padding)):
            raise ValueError(
                f"Cannot export layer {name!r}: it pads its binarized input with zeros (pad_value=0.0, the Bop paper's "
                "BinaryNet, model 'binarynet_paper'), which has no bit-packed form; packed kernels pad with +1 or "
                "-1. Train model 'binarynet' (one padding) to export."
            )
        w = m.weight.detach().cpu()
        bits = (w >= 0).numpy()  # binarize(): sign with sign(0) = +1
        conv = isinstance(m, bnn.BinaryConv2d)
        if conv:
            self._check_conv(m, name)
            flat = reorder_conv_weight(bits)
        else:
            flat = bits
        o, k = flat.shape
        packed = pack_bits(flat)
        common: dict[str, Any] = {
            "name": name, "weights_packed": packed, "popcount": popcount_rows(packed), "k": int(k),
            "out_features": int(o), "weight_shape": list(w.shape),
            "bias": _np(m.bias).astype(np.float32) if m.bias is not None else None}
        geometry: dict[str, Any] = {"in_channels": int(m.in_channels), "kernel_size": _pair(m.kernel_size),
                    "stride": _pair(m.stride), "padding": _pair(m.padding)} if conv else {}
        if m.input_quantizer is None:  # binary weights, real activations: float product with unpacked weights
            if conv:
                return g.BinaryWeightConv2d(**common, **geometry)
            return g.BinaryWeightLinear(**common, in_features=int(m.in_features))
        pad_value = float(getattr(m, "pad_value", 1.0))
        if conv:
            return g.BinaryConv2d(**common, **geometry, pad_value=pad_value)
        return g.BinaryLinear(**common, in_features=int(m.in_features), pad_value=pad_value)

    # ------------------------------------------------------------------ folding
    def fold(self, ops: list[g.Op]) -> list[g.Op]:
        for op in ops:
            if isinstance(op, g.Residual):
                op.body = self.fold(op.body)
                op.shortcut = self.fold(op.shortcut)
        out: list[g.Op] = []
        for i, op in enumerate(ops):
            if type(op) is not g.BatchNorm or not self._feeds_sign(ops, i):
                out.append(op)
                continue
            # producer: the last op before this BN, skipping max-pools
            p = len(out) - 1
            while p >= 0 and isinstance(out[p], g.MaxPool2d):
                p -= 1
            prod = out[p] if p >= 0 else None
            if isinstance(prod, g.BinaryLinear) and prod.threshold is None and prod.bias is None:
                pools = [q for q in out[p + 1:] if isinstance(q, g.MaxPool2d)]
                self._fold_threshold(prod, op, pools)
            else:
                out.append(g.BatchNormSign(name=op.name, scale=op.scale, shift=op.shift))
        return out

    @staticmethod
    def _feeds_sign(ops: list[g.Op], i: int) -> bool:
        j = i + 1
        while j < len(ops) and isinstance(ops[j], g.Flatten):
            j += 1
        if j >= len(ops):
            return False
        nxt = ops[j]
        return isinstance(nxt, g.BinaryLinear) or (isinstance(nxt, g.Linear) and nxt.input_sign)

    def _fold_threshold(self, prod: g.BinaryLinear, bn: g.BatchNorm, pools: list[g.MaxPool2d]) -> None:
        name, k = prod.name, prod.k
        a, b = self._fold[id(bn)]
        if len(a) != prod.out_features:
            raise ValueError(f"Batch-norm {bn.name} has {len(a)} channels but {name} has {prod.out_features}.")
        thr = np.empty(len(a), dtype=np.int64)
        flip = a < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = np.ceil(-b / a)
            neg = np.ceil(b / a)
        for c in range(len(a)):
            if a[c] > 0:
                t = pos[c]
            elif a[c] < 0:
                t = neg[c]
            else:  # zero scale: constant output sign(b)
                t = -k if b[c] >= 0 else k + 1
            thr[c] = int(min(max(t, -k), k + 1)) if math.isfinite(t) else (-k if t < 0 else k + 1)
        # pre-flip the weights of negative-scale channels (padding bits stay 0)
        bits = prod.weight_bits.copy()
        bits[flip] = ~bits[flip]
        prod.weights_packed = pack_bits(bits)
        prod.popcount = popcount_rows(prod.weights_packed)
        prod.__dict__.pop("weight_bits", None)  # the cached unpacked bits are stale now
        prod.threshold = thr.astype(np.int32)
        prod.flip = flip.astype(np.uint8)
        prod.folded_batchnorm = bn.name
        for pool in pools:
            pool.and_channels = flip.copy()
            pool.and_channels_tensor = f"{name}.flip"


def compile_ops(model: nn.Module) -> list[g.Op]:
    """The typed ops of ``model`` with batch-norms folded (see the module docstring for the rules)."""
    comp = _Compiler()
    return comp.fold(comp.module(model, ""))


def compile_model(model: nn.Module, *, model_info: Mapping[str, Any], config: Mapping[str, Any] | None,
                  input_transform: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, tensors)`` of the packed form of ``model`` (see the module docstring for the rules)."""
    tensors: dict[str, np.ndarray] = {}
    layers = write_graph(compile_ops(model), tensors)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bit_convention": BIT_CONVENTION,
        "model": dict(model_info),
        "config": dict(config) if config is not None else None,
        "input_transform": dict(input_transform) if input_transform is not None else None,
        "layers": layers,
    }
    return header, tensors
