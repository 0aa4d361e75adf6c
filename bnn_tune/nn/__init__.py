"""Binary layers, quantizers and the model zoo."""

from __future__ import annotations

from ._layers import (
    BinaryConv2d,
    BinaryLinear,
    BinaryParameter,
    binary_parameters,
    is_binary_parameter,
)
from ._models import MODELS, BatchNormNoScale, BiRealBlock, build_model, list_models
from ._quantizers import (
    ApproxSign,
    SteSign,
    SwishSign,
    approx_sign,
    binarize,
    get_quantizer,
    list_quantizers,
    ste_sign,
    swish_sign,
)

__all__ = [
    "MODELS",
    "ApproxSign",
    "BatchNormNoScale",
    "BiRealBlock",
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryParameter",
    "SteSign",
    "SwishSign",
    "approx_sign",
    "binarize",
    "binary_parameters",
    "build_model",
    "get_quantizer",
    "is_binary_parameter",
    "list_models",
    "list_quantizers",
    "ste_sign",
    "swish_sign",
]
