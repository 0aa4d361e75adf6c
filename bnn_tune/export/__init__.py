"""Export: packed model file (safetensors + JSON header), its loader, and ``export_best``."""

from __future__ import annotations

from ._format import FORMAT_VERSION, PackedFormatError
from ._model import PackedModel, load_packed, pack_model, save_packed

__all__ = [
    "FORMAT_VERSION",
    "PackedFormatError",
    "PackedModel",
    "export_best",
    "load_packed",
    "pack_model",
    "save_packed",
]


def __getattr__(name: str):
    if name == "export_best":
        from ._best import export_best

        return export_best
    raise AttributeError(f"module 'bnn_tune.export' has no attribute {name!r}")
