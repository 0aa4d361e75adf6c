"""Binary layers, quantizers and the model zoo."""

from __future__ import annotations

from ._layers import (
    BinaryConv2d,
    BinaryLinear,
    BinaryParameter,
    binary_parameters,
    is_binary_parameter,
    is_bounded,
    is_sign_valued,
    mark_bounded,
    mark_sign_valued,
)
from ._models import (
    MODELS,
    BatchNormNoScale,
    BiRealBlock,
    build_model,
    check_input_shape,
    list_models,
)
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
    "check_input_shape",
    "get_quantizer",
    "is_binary_parameter",
    "is_bounded",
    "is_sign_valued",
    "list_models",
    "list_quantizers",
    "mark_bounded",
    "mark_sign_valued",
    "ste_sign",
    "swish_sign",
]
