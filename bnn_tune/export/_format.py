"""The packed model file: one safetensors file with a JSON header under the metadata key ``bnn_tune``.

Layout::

    safetensors file
      __metadata__["bnn_tune"] = JSON header:
        format: "bnn-tune-packed", format_version: 2 (version 1 files, without input_transform, still load)
        bit_convention: {word_bits: 32, bit_order: "lsb_first", one_means: +1, pad_bits: 0,
                         k_tile_bits: 256, conv_patch_order: "kh,kw,c", dot: "K - 2 popcount(a ^ w)"}
        model: {name, input_shape, num_classes, ...}, config: the flat training config (or null)
        input_transform: how raw inputs become model inputs (or null): {raw_shape, raw_dtype, input_shape,
                         mean, std (per feature or channel, training split), divide_by, channels_last}
                         (see bnn_tune.data.InputTransform); applied by PackedModel.predict/logits
        layers: the op list (per-layer shapes, true K, padded K, tensor names)
        checksum: {algorithm: "sha256", value: hex digest of the header (without checksum) and all tensors}
      tensors: "<layer>.<name>" -> uint32 packed weights, int32 popcounts/thresholds, float32 real weights

Nothing is unpickled: safetensors stores raw little-endian arrays and the header is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "PackedFormatError", "checksum", "read_packed_file", "write_packed_file"]

FORMAT = "bnn-tune-packed"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no input_transform (read as null)
_META_KEY = "bnn_tune"


class PackedFormatError(ValueError):
    """A packed model file is corrupted, truncated, of another format, or of an unsupported version."""


def checksum(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the header (without ``checksum``, canonical JSON) and every tensor (sorted by name)."""
    h = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "checksum"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(f"\0{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def write_packed_file(path: str | os.PathLike, header: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``tensors`` and ``header`` (a checksum is added) as one safetensors file."""
    from safetensors.numpy import save_file

    header = dict(header)
    header["format_version"] = FORMAT_VERSION  # a loaded version-1 model is re-saved as the current version
    header.setdefault("input_transform", None)
    header["checksum"] = {"algorithm": "sha256", "value": checksum(header, tensors)}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.fspath(path),
              metadata={_META_KEY: json.dumps(header, sort_keys=True)})


def read_packed_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a packed model file; raise :class:`PackedFormatError` with the reason."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No packed model file at {path!r}.")
    try:
        with safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackedFormatError(
            f"{path!r} is not a readable safetensors file (truncated or corrupted?): {exc}"
        ) from exc
    if _META_KEY not in meta:
        raise PackedFormatError(f"{path!r} is a safetensors file but has no bnn-tune header "
                                f"(metadata key {_META_KEY!r}); it was not written by bnn_tune.export.")
    try:
        header = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise PackedFormatError(f"{path!r}: the bnn-tune header is not valid JSON (corrupted?): {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PackedFormatError(f"{path!r}: header format is {header.get('format') if isinstance(header, dict) else None!r}, "
                                f"expected {FORMAT!r}.")
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        raise PackedFormatError(
            f"{path!r} has packed format version {version!r}, but this bnn-tune reads versions "
            f"{list(READABLE_VERSIONS)}; re-export the model with this version (bnn-tune export)."
        )
    stored = (header.get("checksum") or {}).get("value")
    actual = checksum(header, tensors)
    if stored != actual:
        raise PackedFormatError(f"{path!r}: checksum mismatch (stored {stored}, computed {actual}); "
                                "the file is corrupted.")
    header.setdefault("input_transform", None)  # version 1: no stored transform (after the checksum)
    return header, tensors
