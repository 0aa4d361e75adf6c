"""Bit packing shared by the CPU path, the CUDA kernels and the packed model file.

Convention (the file format's ``bit_convention``): a +-1 vector of length ``K`` is stored as
``ceil(K / k_tile) * k_tile / 32`` little-endian ``uint32`` words, element ``k`` in bit ``k % 32``
(LSB first) of word ``k // 32``; bit 1 means +1, bit 0 means -1. The ``k_pad - K`` padding bits
are 0 in both operands, so they add nothing to ``popcount(a)``, ``popcount(w)``,
``popcount(a & w)`` or ``popcount(a ^ w)``, and the dot product over the true ``K`` is

    dot(a, w) = K - 2 popcount(a ^ w) = K - 2 popcount(a) - 2 popcount(w) + 4 popcount(a & w).

``K_TILE = 256`` bits is the ``k`` of the tensor-core instruction ``mma.m16n8k256`` and a multiple
of the 128-bit (16-byte) vector loads of the CUDA GEMV kernel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["K_TILE", "pack_bits", "padded_k", "popcount_rows", "unpack_bits"]

K_TILE = 256


def padded_k(k: int, tile: int = K_TILE) -> int:
    """Smallest multiple of ``tile`` that is >= ``k`` (at least one tile)."""
    if k < 1:
        raise ValueError(f"`k` must be >= 1, but got k={k}.")
    if tile < 32 or tile % 32:
        raise ValueError(f"`tile` must be a positive multiple of 32, but got tile={tile}.")
    return max(1, -(-k // tile)) * tile


def pack_bits(bits: np.ndarray, *, tile: int = K_TILE) -> np.ndarray:
    """Pack the last axis of a boolean array (True = +1) into LSB-first ``uint32`` words.

    Args:
        bits: boolean (or 0/1) array ``[..., K]``.
        tile: the packed length is padded with zero bits to a multiple of ``tile`` bits.

    Returns:
        ``uint32`` array ``[..., padded_k(K, tile) // 32]``.

    Example:
        >>> pack_bits(np.array([True, False, True]), tile=32)
        array([5], dtype=uint32)
    """
    bits = np.asarray(bits)
    k = bits.shape[-1]
    kp = padded_k(k, tile)
    packed = np.packbits(bits.astype(bool, copy=False), axis=-1, bitorder="little")  # [..., ceil(k / 8)]
    out = np.zeros((*bits.shape[:-1], kp // 8), dtype=np.uint8)
    out[..., : packed.shape[-1]] = packed  # padding bytes stay 0 (packbits zero-fills the last byte)
    return out.view("<u4").astype(np.uint32, copy=False)


def unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``uint32 [..., W]`` -> bool ``[..., k]``."""
    words = np.ascontiguousarray(words, dtype="<u4")
    if k > words.shape[-1] * 32:
        raise ValueError(f"`k` must be <= {words.shape[-1] * 32} for {words.shape[-1]} words, but got k={k}.")
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    return bits[..., :k].astype(bool)


def popcount_rows(words: np.ndarray) -> np.ndarray:
    """Number of set bits of every row (``int32``): ``popcount(w)`` per output channel."""
    return np.bitwise_count(np.asarray(words)).sum(axis=-1, dtype=np.int64).astype(np.int32)
