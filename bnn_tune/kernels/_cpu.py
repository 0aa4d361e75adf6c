"""CPU path: XOR-popcount GEMM and binary convolution on packed words.

``binary_gemm`` computes ``y[m, o] = K - 2 popcount(a[m] ^ w[o])`` on 64-bit views of the packed
``uint32`` rows with one of two exact backends:

* ``"native"``: ``csrc/bgemm_cpu.c`` (4x4 register-blocked popcount loop, OpenMP), compiled on first
  use with the system C compiler and loaded with ctypes (:mod:`bnn_tune.kernels._native`);
* ``"numpy"``: ``numpy.bitwise_count`` on broadcast XORs, in row chunks so the ``[chunk, O, W]``
  temporary stays a few MiB. Always available.

``"auto"`` (default) takes the native kernel when it builds. Measured on the 2-core development VM
(``benchmarks/bench_kernels.py --backends``), 4096x4096 layer: batch 1 numpy 0.45 ms vs native
0.03 ms; batch 256 numpy 126 ms vs native 3.3 ms, so the compiled path pays off, most at large
batch where numpy's broadcast temporaries dominate.

``binary_conv2d`` lowers a convolution to that GEMM by im2col (channel-innermost patches,
``(kh, kw, C)`` order, matching the packed weight layout of the model file): on packed bytes when
``C % 8 == 0`` (:func:`im2col_packed`, 8x less data moved), on booleans otherwise.
"""

from __future__ import annotations

import numpy as np

from ._native import native_gemm
from ._packing import K_TILE, pack_bits, padded_k

__all__ = ["binary_conv2d", "binary_gemm", "im2col_bits", "im2col_packed", "reorder_conv_weight"]

_CHUNK_ELEMS = 1 << 21  # uint64 elements of the [chunk, O, W] temporary (16 MiB)


def _u64(words: np.ndarray) -> np.ndarray:
    words = np.ascontiguousarray(words, dtype=np.uint32)
    if words.shape[-1] % 2:
        return words  # odd word count (tile 32): stay with 32-bit words
    return words.view(np.uint64)


def binary_gemm(a: np.ndarray, w: np.ndarray, k: int, *, backend: str = "auto") -> np.ndarray:
    """Dot products of packed +-1 rows: ``y = a_pm1 @ w_pm1.T`` as ``int32 [M, O]``.

    Args:
        a: packed activations ``uint32 [M, W]`` (see :func:`~bnn_tune.kernels.pack_bits`).
        w: packed weights ``uint32 [O, W]`` with the same padding (zero bits) as ``a``.
        k: the true ``K`` before padding.
        backend: ``"auto"``, ``"native"`` (raise if it cannot be built) or ``"numpy"``.

    Example:
        >>> from bnn_tune.kernels import pack_bits
        >>> a = pack_bits(np.array([[True, True, False]]))
        >>> w = pack_bits(np.array([[True, False, False]]))
        >>> binary_gemm(a, w, 3).tolist()  # (+1)(+1) + (+1)(-1) + (-1)(-1)
        [[1]]
    """
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"`a` [M, W] and `w` [O, W] must have the same word count, but got "
                         f"a.shape={a.shape}, w.shape={w.shape}.")
    if not 0 < k <= a.shape[1] * 32:
        raise ValueError(f"`k` must be in [1, {a.shape[1] * 32}], but got k={k}.")
    if backend not in ("auto", "native", "numpy"):
        raise ValueError(f"`backend` must be 'auto', 'native' or 'numpy', but got backend={backend!r}.")
    a64, w64 = _u64(a), _u64(w)
    if backend != "numpy" and a64.dtype == np.uint64:
        y = native_gemm(a64, w64, k)
        if y is not None:
            return y
        if backend == "native":
            raise RuntimeError("The native CPU kernel could not be built (no C compiler, or "
                               "BNN_TUNE_CPU_KERNEL=numpy); use backend='numpy' or 'auto'.")
    m, o = a.shape[0], w.shape[0]
    out = np.empty((m, o), dtype=np.int32)
    chunk = max(1, _CHUNK_ELEMS // max(1, o * w64.shape[1]))
    for s in range(0, m, chunk):
        blk = a64[s: s + chunk]
        if blk.shape[0] == 1:
            pc = np.bitwise_count(w64 ^ blk).sum(axis=1, dtype=np.int32)[None]
        else:
            pc = np.bitwise_count(blk[:, None, :] ^ w64[None, :, :]).sum(axis=2, dtype=np.int32)
        out[s: s + chunk] = k - 2 * pc
    return out


def reorder_conv_weight(weight_bits: np.ndarray) -> np.ndarray:
    """``[O, C, kh, kw]`` -> ``[O, kh * kw * C]`` (channel-innermost, the im2col patch order)."""
    o = weight_bits.shape[0]
    return np.ascontiguousarray(np.transpose(weight_bits, (0, 2, 3, 1))).reshape(o, -1)


def im2col_bits(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                pad_value: bool) -> tuple[np.ndarray, int, int]:
    """Patches of a boolean ``[N, C, H, W]`` map: ``([N * Ho * Wo, kh * kw * C], Ho, Wo)``.

    The map is padded with ``pad_value`` (True = +1), as :class:`~bnn_tune.nn.BinaryConv2d` does.
    """
    n, c, h, wd = x.shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    xh = np.transpose(x, (0, 2, 3, 1))  # NHWC
    if ph or pw:
        xh = np.pad(xh, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(xh, (kh, kw), axis=(1, 2))  # N, H', W', C, kh, kw
    win = win[:, ::sh, ::sw]
    ho, wo = win.shape[1], win.shape[2]
    cols = np.transpose(win, (0, 1, 2, 4, 5, 3)).reshape(n * ho * wo, kh * kw * c)
    return cols, ho, wo


def im2col_packed(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  pad_value: bool, *, tile: int = K_TILE) -> tuple[np.ndarray, int, int]:
    """im2col on packed bytes, for ``C % 8 == 0``: ``(uint32 [N * Ho * Wo, Wd], Ho, Wo)``.

    Each pixel's channels are packed once into ``C / 8`` bytes (LSB first); a patch is then the
    concatenation of ``kh * kw`` such byte strings, which is exactly the ``(kh, kw, c)`` bit order of
    :func:`im2col_bits` + :func:`pack_bits`, moving 8x fewer bytes. Padding pixels are 0xFF (+1) or 0x00.
    """
    n, c, h, w = x.shape
    if c % 8:
        raise ValueError(f"im2col_packed needs channels divisible by 8, but got C={c}.")
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    xh = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))  # packbits on a transposed view is ~5x slower
    xb = np.packbits(xh, axis=-1, bitorder="little")  # N, H, W, C/8
    if ph or pw:
        xb = np.pad(xb, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=0xFF if pad_value else 0)
    win = np.lib.stride_tricks.sliding_window_view(xb, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # N,Ho,Wo,C/8,kh,kw
    ho, wo = win.shape[1], win.shape[2]
    kbytes = kh * kw * c // 8
    kp = padded_k(kh * kw * c, tile)
    out = np.zeros((n * ho * wo, kp // 8), dtype=np.uint8)
    out[:, :kbytes] = np.transpose(win, (0, 1, 2, 4, 5, 3)).reshape(n * ho * wo, kbytes)
    return out.view("<u4").astype(np.uint32, copy=False), ho, wo


def binary_conv2d(x: np.ndarray, w_packed: np.ndarray, *, k: int, out_channels: int, kernel: tuple[int, int],
                  stride: tuple[int, int], padding: tuple[int, int], pad_value: bool = True,
                  tile: int = K_TILE) -> np.ndarray:
    """Binary convolution of a boolean map ``[N, C, H, W]`` with packed ``[O, W]`` weights.

    Returns the integer pre-activations ``int32 [N, O, Ho, Wo]`` (equal to ``conv2d`` of the +-1
    tensors with ``pad_value`` padding).
    """
    n = x.shape[0]
    x = np.asarray(x, dtype=bool)
    if x.shape[1] % 8 == 0:
        a, ho, wo = im2col_packed(x, kernel, stride, padding, pad_value, tile=tile)
    else:
        cols, ho, wo = im2col_bits(x, kernel, stride, padding, pad_value)
        a = pack_bits(cols, tile=tile)
    y = binary_gemm(a, w_packed, k)
    return np.ascontiguousarray(y.reshape(n, ho, wo, out_channels).transpose(0, 3, 1, 2))
