"""Model zoo: binary models and their real-valued twins.

Every builder takes ``binary=True|False``. The binary model keeps its first and last layers
real-valued (the last one reads binary activations), binarizes everything in between, and uses
batch-norm momentum 0.1 in PyTorch's convention (= 0.9 in Keras', as Larq recommends for BNNs).
The real-valued twin has the same layer shapes with float weights and ReLU activations, for baselines.

=============  ==================================================================  =============
name           architecture                                                        input
=============  ==================================================================  =============
``mlp``        real Linear-BN, ``depth`` x (BinaryLinear-BN), real Linear            any (flattened)
``binarynet``  BinaryNet of Courbariaux et al. 2016: 2x128C3-MP-2x256C3-MP-2x512C3-MP-2x1024FC  images
``binarynet_paper``  the Bop paper's BinaryNet: every kernel binary, BN without scale, zero pad  images
``vgg_small``  VGG-Small (LQ-Nets / seed 002 CIFAR): 128-128-MP-256-256-MP-512-512-MP-FC  images
``birealnet18`` Bi-Real-Net-18 (Liu et al. 2018): real shortcut around every binary 3x3 conv  images
=============  ==================================================================  =============

``width`` scales every channel/unit count (``mlp``: 256 x width hidden units).

``binarynet`` follows this zoo's conventions (real first and last layers, binary inputs padded with +1 so
the packed export is exact). ``binarynet_paper`` is the network the Bop paper trained on CIFAR-10
(plumerai/rethinking-bnn-optimization ``bnn_optimization/models/binarynet.py``, the same in
CuauSuarez/Bop2ndOrder ``binarynet_batch.py``): the first conv binarizes its kernel (real input, no
padding), the last dense layer binarizes input and kernel (no bias) and is followed by a batch norm,
every batch norm has a shift but no scale (Keras ``scale=False``), and binarized inputs are zero padded
(larq's default). Zero padding has no bit-packed form, so ``bnn-tune export`` rejects that model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BinaryConv2d, BinaryLinear

__all__ = ["MODELS", "BatchNormNoScale", "build_model", "list_models"]

Act = str | None


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _linear(i: int, o: int, *, binary: bool, act: Act, bias: bool = False, real_weights: bool = False) -> nn.Module:
    if not binary:
        return nn.Linear(i, o, bias=bias)
    return BinaryLinear(i, o, bias=bias, input_quantizer=act, weight_quantizer=None if real_weights else "ste_sign")


def _conv(i: int, o: int, *, binary: bool, act: Act, stride: int = 1, k: int = 3) -> nn.Module:
    if not binary:
        return nn.Conv2d(i, o, k, stride=stride, padding=k // 2, bias=False)
    return BinaryConv2d(i, o, k, stride=stride, padding=k // 2, input_quantizer=act)


def _relu(binary: bool) -> list[nn.Module]:
    # In the binary model the activation is the next layer's input quantizer.
    return [] if binary else [nn.ReLU()]


def mlp(
    input_shape: tuple[int, ...], num_classes: int, *, binary: bool = True, width: float = 1.0,
    depth: int = 2, activation: Act = "ste_sign", bn_momentum: float = 0.1,
) -> nn.Module:
    """Binary MLP for flat inputs (digits, MNIST-1D)."""
    d_in = 1
    for s in input_shape:
        d_in *= s
    h = _ch(256, width)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(d_in, h, bias=False), nn.BatchNorm1d(h, momentum=bn_momentum)]
    layers += _relu(binary)
    for _ in range(depth):
        layers += [_linear(h, h, binary=binary, act=activation), nn.BatchNorm1d(h, momentum=bn_momentum)]
        layers += _relu(binary)
    layers.append(_linear(h, num_classes, binary=binary, act=activation, bias=True, real_weights=True))
    return nn.Sequential(*layers)


def _vgg(
    input_shape: tuple[int, ...], num_classes: int, *, plan: list[int | str], fc: list[int], binary: bool,
    width: float, activation: Act, bn_momentum: float,
) -> nn.Module:
    c_in, hgt, wid = input_shape
    layers: list[nn.Module] = []
    c = c_in
    convs = [i for i, item in enumerate(plan) if item != "M"]
    for i in convs:
        o = _ch(int(plan[i]), width)
        if i == convs[0]:
            layers.append(nn.Conv2d(c, o, 3, padding=1, bias=False))
        else:
            layers.append(_conv(c, o, binary=binary, act=activation))
        if i + 1 < len(plan) and plan[i + 1] == "M":  # pool the conv output, before BN (BinaryNet order)
            layers.append(nn.MaxPool2d(2))
            hgt, wid = hgt // 2, wid // 2
        layers.append(nn.BatchNorm2d(o, momentum=bn_momentum))
        layers += _relu(binary)
        c = o
    d = _flatten(layers, c, hgt, wid, input_shape)
    for f in fc:
        o = _ch(f, width)
        layers += [_linear(d, o, binary=binary, act=activation), nn.BatchNorm1d(o, momentum=bn_momentum)]
        layers += _relu(binary)
        d = o
    layers.append(_linear(d, num_classes, binary=binary, act=activation, bias=True, real_weights=True))
    return nn.Sequential(*layers)


def _flatten(layers: list[nn.Module], c: int, hgt: int, wid: int, input_shape: tuple[int, ...]) -> int:
    """Append the flatten after the conv stack; returns the features it yields (checks the map is not empty)."""
    if hgt < 1 or wid < 1:
        raise ValueError(f"input_shape={input_shape} is too small for this model's pooling.")
    layers.append(nn.Flatten())
    return c * hgt * wid


def binarynet(input_shape, num_classes, *, binary=True, width=1.0, depth=2, activation="ste_sign", bn_momentum=0.1):
    """BinaryNet (Courbariaux et al. 2016), the CIFAR-10 model of seed 002."""
    plan: list[int | str] = [128, 128, "M", 256, 256, "M", 512, 512, "M"]
    return _vgg(tuple(input_shape), num_classes, plan=plan, fc=[1024, 1024], binary=binary, width=width,
                activation=activation, bn_momentum=bn_momentum)


class BatchNormNoScale(nn.modules.batchnorm._BatchNorm):
    """Batch norm with a learned shift and no scale (Keras ``BatchNormalization(scale=False)``).

    ``weight`` is ``None`` (a scale of 1); ``bias`` is the shift. 2-D or 4-D input.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        del self.weight
        self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if getattr(self, "bias", None) is not None:
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"BatchNormNoScale expects 2-D or 4-D input, but got {input.dim()}-D input.")


def binarynet_paper(input_shape, num_classes, *, binary=True, width=1.0, depth=2, activation="ste_sign",
                    bn_momentum=0.1):
    """The Bop paper's BinaryNet: all kernels binary (first one on real input), BN without scale, zero padding.

    Layers (Keras order of the reference): C3 (valid) - BN - C3 - MP - BN - 2 x (C3 [- MP] - BN) at 2x and 4x
    the width - 2 x (FC - BN) - FC - BN. The real-valued twin (``binary=False``) has the same shapes with
    float kernels and ReLU.
    """
    c_in, hgt, wid = input_shape
    layers: list[nn.Module] = []

    def conv(i: int, o: int, *, first: bool) -> nn.Module:
        if not binary:
            return nn.Conv2d(i, o, 3, padding=0 if first else 1, bias=False)
        return BinaryConv2d(i, o, 3, padding=0 if first else 1, input_quantizer=None if first else activation,
                            pad_value=0.0)

    def norm(o: int) -> nn.Module:
        return BatchNormNoScale(o, momentum=bn_momentum)

    c = c_in
    hgt, wid = hgt - 2, wid - 2  # the first conv is unpadded
    for j, (mult, pool) in enumerate(((1, False), (1, True), (2, False), (2, True), (4, False), (4, True))):
        o = _ch(128 * mult, width)
        layers.append(conv(c, o, first=j == 0))
        if pool:
            layers.append(nn.MaxPool2d(2))
            hgt, wid = hgt // 2, wid // 2
        layers.append(norm(o))
        layers += _relu(binary)
        c = o
    d = _flatten(layers, c, hgt, wid, input_shape)
    for f in (1024, 1024):
        o = _ch(f, width)
        layers += [_linear(d, o, binary=binary, act=activation), norm(o)]
        layers += _relu(binary)
        d = o
    layers += [_linear(d, num_classes, binary=binary, act=activation), norm(num_classes)]
    return nn.Sequential(*layers)


def vgg_small(input_shape, num_classes, *, binary=True, width=1.0, depth=2, activation="ste_sign", bn_momentum=0.1):
    """VGG-Small: six 3x3 convolutions and one real classifier."""
    plan: list[int | str] = [128, 128, "M", 256, 256, "M", 512, 512, "M"]
    return _vgg(tuple(input_shape), num_classes, plan=plan, fc=[], binary=binary, width=width,
                activation=activation, bn_momentum=bn_momentum)


class BiRealBlock(nn.Module):
    """``out = BN(conv(sign(x))) + shortcut(x)`` with a real-valued shortcut (Bi-Real-Net)."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, binary: bool, activation: Act, bn_momentum: float):
        super().__init__()
        self.conv = _conv(c_in, c_out, binary=binary, act=activation, stride=stride)
        self.bn = nn.BatchNorm2d(c_out, momentum=bn_momentum)
        self.act = nn.Identity() if binary else nn.ReLU()
        if stride != 1 or c_in != c_out:
            # ceil_mode: an odd input (7x7 in a 28x28 MNIST net) pools to the conv's ceil(7/2) = 4, not 3;
            # the partial window averages its valid pixels (no padding); even inputs are unchanged
            self.shortcut: nn.Module = nn.Sequential(
                nn.AvgPool2d(stride, ceil_mode=True) if stride != 1 else nn.Identity(),
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out, momentum=bn_momentum),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x))) + self.shortcut(x)


def birealnet18(input_shape, num_classes, *, binary=True, width=1.0, depth=2, activation="ste_sign", bn_momentum=0.1):
    """Bi-Real-Net-18 for small images: 3x3 real stem, 4 stages x 4 binary convs, real classifier."""
    c_in = input_shape[0]
    c = _ch(64, width)
    layers: list[nn.Module] = [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c, momentum=bn_momentum)]
    for stage, mult in enumerate((1, 2, 4, 8)):
        o = _ch(64 * mult, width)
        for i in range(4):
            stride = 2 if (i == 0 and stage > 0) else 1
            layers.append(BiRealBlock(c, o, stride, binary=binary, activation=activation, bn_momentum=bn_momentum))
            c = o
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    needs_image: bool


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", mlp, False),
    "binarynet": ModelSpec("binarynet", binarynet, True),
    "binarynet_paper": ModelSpec("binarynet_paper", binarynet_paper, True),
    "vgg_small": ModelSpec("vgg_small", vgg_small, True),
    "birealnet18": ModelSpec("birealnet18", birealnet18, True),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def check_input_shape(name: str, input_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` when the zoo model ``name`` cannot take inputs of ``input_shape`` (without
    building it): image models need ``(C, H, W)``, the VGG-style models (three 2x2 max-pools) at least 8x8
    (``binarynet_paper``, whose first conv is unpadded, 10x10).
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Available: {list_models()}.")
    shape = tuple(input_shape)
    if MODELS[name].needs_image and len(shape) != 3:
        raise ValueError(
            f"Model {name!r} needs image input (C, H, W), but the dataset has input_shape={shape}; "
            "use model='mlp' for flat data."
        )
    if name in ("binarynet", "vgg_small") and min(shape[1:]) < 8:
        raise ValueError(f"Model {name!r} pools three times by 2 and needs images of at least 8x8, but the "
                         f"dataset has input_shape={shape}; use model='mlp' or 'birealnet18'.")
    if name == "binarynet_paper" and min(shape[1:]) < 10:
        raise ValueError(f"Model {name!r} shrinks the image by 2 in its unpadded first conv, then pools three "
                         f"times by 2, and needs images of at least 10x10, but the dataset has input_shape={shape}; "
                         "use model='binarynet' or 'mlp'.")


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, binary: bool = True, width: float = 1.0,
    depth: int = 2, activation: Act = "ste_sign", bn_momentum: float = 0.1,
) -> nn.Module:
    """Build a model of the zoo by name (binary, or its real-valued twin with ``binary=False``)."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Available: {list_models()}.")
    spec = MODELS[name]
    shape = tuple(input_shape)
    check_input_shape(name, shape)
    return spec.builder(shape, num_classes, binary=binary, width=width, depth=depth, activation=activation,
                        bn_momentum=bn_momentum)
