"""Packed sign bits of a CPU float32 tensor and the count of changed signs (``csrc/signs_cpu.c``).

The flip counter's hot path (:class:`bnn_tune.metrics.FlipCounter`): one pass over the weights that writes
64 signs per ``int64`` word and counts how many differ from the previous words, instead of ``torch.ge`` into
a bool tensor, ``torch.ne`` and ``count_nonzero`` (three passes and two 1-byte-per-weight tensors). The sign
is ``x >= 0`` (both zeros +, NaN counted as -), as with ``torch.ge(x, 0)``; counts are exact integers.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import torch

from ._native import build_library

__all__ = ["packed_sign_words", "raw_sign_bits", "sign_bits", "sign_kernel_applies"]

_SRC = Path(__file__).parent / "csrc" / "signs_cpu.c"
_STATE: dict[str, Any] = {}
_LOCK = threading.Lock()


def _lib() -> ctypes.CDLL | None:
    if "lib" not in _STATE:
        with _LOCK:
            if "lib" not in _STATE:
                dll = build_library(_SRC, "libbnn_tune_signs")
                if dll is not None:
                    dll.bnn_sign_bits_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
                    dll.bnn_sign_bits_f32.restype = ctypes.c_int64
                _STATE["lib"] = dll
    return _STATE["lib"]


def sign_kernel_applies(x: torch.Tensor) -> bool:
    """True for a contiguous CPU float32 tensor when the C kernel is built."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous() and _lib() is not None


def raw_sign_bits() -> Any:
    """The C function ``(x_ptr, words_ptr, n, count) -> int`` without :func:`sign_bits`' checks (a per-step
    caller that checked its tensors once), or ``None`` when it is not built."""
    lib = _lib()
    return None if lib is None else lib.bnn_sign_bits_f32


def packed_sign_words(x: torch.Tensor) -> torch.Tensor:
    """An ``int64`` buffer with one word per 64 elements of ``x``, for :func:`sign_bits`."""
    return torch.zeros((x.numel() + 63) // 64, dtype=torch.int64)


def sign_bits(x: torch.Tensor, words: torch.Tensor, *, count: bool) -> int:
    """Write the sign bits of ``x`` into ``words``; with ``count``, return how many differ from the old words.

    Call only where :func:`sign_kernel_applies` is true, with ``words`` from :func:`packed_sign_words`.

    Example:
        >>> x = torch.tensor([0.5, -0.0, -1.0, float("nan")])
        >>> words = packed_sign_words(x)
        >>> not sign_kernel_applies(x) or (sign_bits(x, words, count=True), int(words[0])) == (2, 0b0011)
        True
    """
    if words.dtype != torch.int64 or not words.is_contiguous() or words.numel() != (x.numel() + 63) // 64:
        raise ValueError(f"`words` must be a contiguous int64 tensor of {(x.numel() + 63) // 64} words, but got "
                         f"{words.dtype} of {words.numel()}.")
    lib = _lib()
    if lib is None or not sign_kernel_applies(x):
        why = ("the C kernel is not built" if lib is None else
               f"`x` must be a contiguous CPU float32 tensor, but got {x.dtype} on {x.device.type}"
               f"{'' if x.is_contiguous() else ', not contiguous'}")
        raise ValueError(f"sign_bits: {why}; check sign_kernel_applies(x) first and count with torch otherwise.")
    return int(lib.bnn_sign_bits_f32(x.data_ptr(), words.data_ptr(), x.numel(), 1 if count else 0))
