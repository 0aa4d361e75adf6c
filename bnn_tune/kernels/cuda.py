"""CUDA path: the ``csrc/*.cu`` kernels, compiled with NVRTC and launched through the driver API.

Used only when a GPU is visible. The first call of a kernel compiles its source for the GPU's
architecture into a cached cubin and loads it (:mod:`bnn_tune.kernels._nvrtc`: NVRTC from torch's CUDA
wheels, ``nvcc`` optional); launches go on torch's current stream. Every tensor handed to a kernel is
checked first (:func:`check_tensor`: dtype, device, contiguity, shape/length, 16-byte alignment of
packed words), and the scalar arguments against the kernel's limits, so a bad call raises a
``ValueError`` naming the argument instead of reading out of bounds. Packed words live in
``torch.int32`` tensors (the same 32 bits as the ``uint32`` words of the model file).

Functions:

* :func:`pack_sign` - ``float32 [B, K]`` -> packed words ``[B, Wd]`` and ``popcount(a)`` ``[B]``.
* :func:`gemv` - batch 1..16 XOR-popcount GEMV/GEMM on CUDA cores, fused sign+pack of a float
  input, int32 output or threshold output emitting the next layer's packed bits.
* :func:`bmma` - large batch: tensor-core ``mma.m16n8k256 .b1 .and.popc`` GEMM, int32 output
  ``K - 2 popc(a) - 2 popc(w) + 4 popc(a & w)``.
* :func:`pack_nhwc` + :func:`bconv` - binary convolution as a bit-packed implicit GEMM: the float NCHW
  input is signed and packed once into NHWC words (spatial padding included), and the tensor-core
  kernel gathers each output pixel's patch from them (no im2col matrix, no fp32 copy);
  :func:`tap_aligned_weight` lays the weights out to match (each kernel tap's channels start on a word).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._nvrtc import (
    ARCHS,
    C_INT,
    C_LONG,
    C_PTR,
    CSRC,
    KERNELS,
    CudaError,
    compile_cubin,
    compiler,
    launch,
    nvcc_path,
    sources,
)

__all__ = ["ARCHS", "CSRC", "CudaError", "available", "bconv", "bmma", "build", "check_tensor", "gemv", "nvcc_path",
           "pack_nhwc", "pack_sign", "sources", "tap_aligned_weight"]

GEMV_MAX_B = 16
GEMV_TILE_ROWS = 8  # rows per GEMV block (one byte of threshold output): bgemv.cu
GEMV_THREADS = 128
BMMA_BM, BMMA_BN, BMMA_THREADS = 64, 128, 256  # bmma.cu
_MAX_GRID_Y = 65535
_MAX_SMEM = 227 * 1024  # opt-in dynamic shared memory per block on sm_90 (sm_80: 163 KiB)
_INT_MAX = 2**31 - 1


def available() -> bool:
    """True when a CUDA GPU is visible and a kernel compiler (NVRTC, else nvcc) is found."""
    return torch.cuda.is_available() and compiler() is not None


def build(arch: str | int | None = None) -> list:
    """Compile every kernel source for ``sm_<arch>`` (default: the current GPU's) into the cache; the paths."""
    if arch is None:
        major, minor = torch.cuda.get_device_capability()
        arch = f"{major}{minor}"
    return [compile_cubin(src, arch) for src in sources()]


def check_tensor(t: torch.Tensor | None, name: str, *, dtype: torch.dtype | tuple[torch.dtype, ...],
                 shape: Sequence[int | None], device: torch.device | None = None, words: bool = False,
                 row_contiguous: bool = False) -> torch.Tensor:
    """Check one tensor argument of a kernel; returns it.

    Args:
        t: the tensor.
        name: its argument name (for the message).
        dtype: the allowed dtype(s).
        shape: the exact shape, ``None`` for a free dimension.
        device: the device every argument of the call must be on (default: ``t``'s, which must be CUDA).
        words: packed words: the rows must start on 16-byte boundaries (``uint4`` loads).
        row_contiguous: only unit stride on the last dimension is needed (a row stride >= the row
            length is passed to the kernel); otherwise the tensor must be contiguous.

    Raises:
        ValueError: one line naming the argument, what was expected and what was given.
    """
    if t is None:
        raise ValueError(f"`{name}` is required, but got None.")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if t.dtype not in dtypes:
        raise ValueError(f"`{name}` must have dtype {' or '.join(map(str, dtypes))}, but got dtype={t.dtype}.")
    want = torch.device(device) if device is not None else None
    if want is None and t.device.type != "cuda":
        raise ValueError(f"`{name}` must be on a CUDA device, but got device={t.device}.")
    if want is not None and t.device != want:
        raise ValueError(f"`{name}` must be on {want} like the other arguments, but got device={t.device}.")
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want_shape = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"`{name}` must have shape {want_shape}, but got shape={list(t.shape)}.")
    if row_contiguous:
        if t.ndim and t.shape[-1] > 1 and t.stride(-1) != 1 or t.ndim == 2 and t.stride(0) < t.shape[1]:
            raise ValueError(f"`{name}` needs unit stride along its last dimension and a row stride >= the row "
                             f"length, but got stride={t.stride()}; pass `{name}.contiguous()`.")
    elif not t.is_contiguous():
        raise ValueError(f"`{name}` must be contiguous, but got stride={t.stride()}; pass `{name}.contiguous()`.")
    if words and t.device.type != "meta" and t.data_ptr() % 16:
        raise ValueError(f"`{name}` must start on a 16-byte boundary (uint4 loads), but its address % 16 = "
                         f"{t.data_ptr() % 16}; pass a fresh tensor (`{name}.clone()`).")
    return t


def _wd_ok(wd: int, k: int, name: str) -> None:
    if wd % 8 or wd * 32 < k or k < 1:
        raise ValueError(f"`{name}` must have a multiple of 8 words per row (256-bit K tile) covering k={k} bits, "
                         f"but got {wd} words.")


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def pack_sign(x: torch.Tensor, wd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign+pack ``float32 [B, K]`` into ``int32 [B, wd]`` words and ``popcount`` per row."""
    check_tensor(x, "x", dtype=torch.float32, shape=(None, None), row_contiguous=True)
    b, k = x.shape
    _wd_ok(wd, k, "wd")
    if b < 1 or b > _INT_MAX or -(-wd // 8) > _MAX_GRID_Y:
        raise ValueError(f"`pack_sign` handles 1..2^31-1 rows and up to {_MAX_GRID_Y * 256} bits per row, but got "
                         f"x of shape {list(x.shape)}.")
    out = torch.empty((b, wd), dtype=torch.int32, device=x.device)
    pa = torch.zeros(b, dtype=torch.int32, device=x.device)  # the kernel adds popcounts atomically
    launch(_index(x.device), "pack_sign.cu", "bnn_pack_sign", (b, -(-wd // 8), 1), (256, 1, 1),
           [(x.data_ptr(), C_PTR), (x.stride(0), C_LONG), (b, C_INT), (k, C_INT), (wd, C_INT), (out.data_ptr(), C_PTR),
            (pa.data_ptr(), C_PTR)], stream=_stream(x.device))
    return out, pa


def gemv_plan(o: int, wd: int, b: int, *, fused: bool, threshold: bool, out_words: int) -> tuple[str, int, int]:
    """``(kernel name, blocks, dynamic shared bytes)`` of a GEMV call (grid sizing of ``bgemv.cu``)."""
    bmax = 1 if b <= 1 else 4 if b <= 4 else 16
    name = f"bnn_gemv_b{bmax}_{'fused' if fused else 'packed'}"
    blocks = 4 * out_words if threshold else -(-o // GEMV_TILE_ROWS)
    return name, blocks, 4 * b * wd if fused else 0


def gemv(w: torch.Tensor, k: int, *, x: torch.Tensor | None = None, a: torch.Tensor | None = None,
         thr: torch.Tensor | None = None, out_words: int | None = None, out: torch.Tensor | None = None
         ) -> torch.Tensor:
    """Binary GEMV/GEMM for batch 1..16: ``int32 [B, O]`` or, with ``thr``, packed bits ``[B, out_words]``.

    Give either ``x`` (float32 [B, K], signed and packed inside the kernel) or ``a`` (packed [B, Wd]).
    """
    check_tensor(w, "w", dtype=(torch.int32, torch.uint32), shape=(None, None), words=True)
    o, wd = w.shape
    _wd_ok(wd, k, "w")
    dev = w.device
    if (x is None) == (a is None):
        raise ValueError("Give exactly one of `x` (float input) or `a` (packed input).")
    if a is not None:
        check_tensor(a, "a", dtype=(torch.int32, torch.uint32), shape=(None, wd), device=dev, words=True)
        src = a
    else:
        assert x is not None
        check_tensor(x, "x", dtype=torch.float32, shape=(None, None), device=dev, row_contiguous=True)
        if x.shape[1] < k:
            raise ValueError(f"`x` must have at least k={k} columns, but got shape={list(x.shape)}.")
        src = x
    b = src.shape[0]
    if not 1 <= b <= GEMV_MAX_B:
        raise ValueError(f"`gemv` handles batch 1..{GEMV_MAX_B}, but got batch={b}; use `bmma` for larger batches.")
    if thr is not None:
        check_tensor(thr, "thr", dtype=torch.int32, shape=(o,), device=dev)
        out_words = out_words or -(-o // 32)
        if out_words * 32 < o:
            raise ValueError(f"`out_words` must cover o={o} output bits, but got out_words={out_words}.")
        if out is None:
            out = torch.empty((b, out_words), dtype=torch.int32, device=dev)
        check_tensor(out, "out", dtype=(torch.int32, torch.uint32), shape=(b, out_words), device=dev)
    else:
        if out_words is not None:
            raise ValueError("`out_words` is only used with `thr` (threshold output).")
        out_words = 0
        if out is None:
            out = torch.empty((b, o), dtype=torch.int32, device=dev)
        check_tensor(out, "out", dtype=torch.int32, shape=(b, o), device=dev)
    name, blocks, smem = gemv_plan(o, wd, b, fused=x is not None, threshold=thr is not None, out_words=out_words)
    if smem > _MAX_SMEM:
        raise ValueError(f"batch={b} x {wd} words of activations need {smem} B of shared memory (at most "
                         f"{_MAX_SMEM}); pass packed `a` instead of `x`.")
    y, bits = (None, out) if thr is not None else (out, None)
    launch(_index(dev), "bgemv.cu", name, (blocks, 1, 1), (GEMV_THREADS, 1, 1),
           [(_ptr(x), C_PTR), (x.stride(0) if x is not None else 0, C_LONG), (_ptr(a), C_PTR), (w.data_ptr(), C_PTR),
            (o, C_INT), (k, C_INT), (wd, C_INT), (b, C_INT), (_ptr(thr), C_PTR), (_ptr(y), C_PTR),
            (_ptr(bits), C_PTR), (4 * out_words, C_INT)], smem=smem, stream=_stream(dev))
    return out


def bmma(a: torch.Tensor, w: torch.Tensor, k: int, pa: torch.Tensor, pw: torch.Tensor,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """Tensor-core binary GEMM: ``int32 [M, N]`` +-1 dot products of packed rows of ``a`` and ``w``."""
    check_tensor(a, "a", dtype=(torch.int32, torch.uint32), shape=(None, None), words=True)
    m, wd = a.shape
    dev = a.device
    check_tensor(w, "w", dtype=(torch.int32, torch.uint32), shape=(None, wd), device=dev, words=True)
    n = w.shape[0]
    _wd_ok(wd, k, "a")
    check_tensor(pa, "pa", dtype=torch.int32, shape=(m,), device=dev)
    check_tensor(pw, "pw", dtype=torch.int32, shape=(n,), device=dev)
    if out is None:
        out = torch.empty((m, n), dtype=torch.int32, device=dev)
    check_tensor(out, "out", dtype=torch.int32, shape=(m, n), device=dev)
    if m < 1 or n < 1 or -(-m // BMMA_BM) > _MAX_GRID_Y:
        raise ValueError(f"`bmma` handles 1..{_MAX_GRID_Y * BMMA_BM} rows of `a` and >= 1 row of `w`, but got "
                         f"m={m}, n={n}.")
    launch(_index(dev), "bmma.cu", "bnn_bmma", (-(-n // BMMA_BN), -(-m // BMMA_BM), 1), (BMMA_THREADS, 1, 1),
           [(a.data_ptr(), C_PTR), (w.data_ptr(), C_PTR), (m, C_INT), (n, C_INT), (k, C_INT), (wd, C_INT),
            (pa.data_ptr(), C_PTR), (pw.data_ptr(), C_PTR), (out.data_ptr(), C_PTR)], stream=_stream(dev))
    return out


def tap_aligned_weight(bits: np.ndarray, kernel_size: tuple[int, int], in_channels: int) -> np.ndarray:
    """Binary conv weights ``bool [O, KH * KW * C]`` in ``(kh, kw, c)`` patch order (the model file's)
    -> ``uint32 [O, Wd]`` words for :func:`bconv`: tap ``t = i * KW + j`` occupies words ``t * Cw ..
    t * Cw + Cw - 1`` (``Cw = ceil(C / 32)``, channel c in bit c % 32 of word c // 32, padding bits 0),
    ``Wd = taps * Cw`` rounded up to a multiple of 8 (256-bit K tile)."""
    from ._packing import pack_bits

    o = bits.shape[0]
    kh, kw = kernel_size
    taps, cw = kh * kw, -(-in_channels // 32)
    per_tap = np.zeros((o, taps, cw * 32), dtype=bool)
    per_tap[:, :, :in_channels] = bits.reshape(o, taps, in_channels)
    words = pack_bits(per_tap.reshape(o, taps * cw * 32))  # pads to a multiple of 256 bits
    assert words.shape[1] == -(-taps * cw // 8) * 8
    return words


def pack_nhwc(x: torch.Tensor, padding: tuple[int, int] = (0, 0), pad_value: float = -1.0) -> torch.Tensor:
    """Sign+pack ``float32 [N, C, H, W]`` into ``int32 [N, H + 2 ph, W + 2 pw, ceil(C / 32)]`` words.

    Padding pixels are ``pad_value`` (+1 or -1) on every real channel; bits past ``C`` are 0.
    """
    check_tensor(x, "x", dtype=torch.float32, shape=(None, None, None, None))
    n, c, h, w = x.shape
    ph, pw = padding
    if min(n, c, h, w) < 1 or ph < 0 or pw < 0 or pad_value not in (-1.0, 1.0):
        raise ValueError(f"`pack_nhwc` needs a non-empty [N, C, H, W] input, padding >= 0 and pad_value +-1, but got "
                         f"shape={list(x.shape)}, padding={padding}, pad_value={pad_value}.")
    cw = -(-c // 32)
    out = torch.empty((n, h + 2 * ph, w + 2 * pw, cw), dtype=torch.int32, device=x.device)
    total = out.numel()
    if -(-total // 256) > _INT_MAX:
        raise ValueError(f"`pack_nhwc` output of {total} words is too large for one launch.")
    launch(_index(x.device), "pack_sign.cu", "bnn_pack_nhwc", (-(-total // 256), 1, 1), (256, 1, 1),
           [(x.data_ptr(), C_PTR), (n, C_INT), (c, C_INT), (h, C_INT), (w, C_INT), (ph, C_INT), (pw, C_INT),
            (int(pad_value > 0), C_INT), (cw, C_INT), (out.data_ptr(), C_PTR)], stream=_stream(x.device))
    return out


def bconv(act: torch.Tensor, w: torch.Tensor, k: int, pw: torch.Tensor, *, kernel_size: tuple[int, int],
          stride: tuple[int, int] = (1, 1), out: torch.Tensor | None = None) -> torch.Tensor:
    """Binary convolution as an implicit GEMM on tensor cores: ``int32 [N, Ho, Wo, O]`` (NHWC).

    Args:
        act: packed NHWC activations ``[N, Hp, Wp, Cw]`` from :func:`pack_nhwc` (padding included).
        w: :func:`tap_aligned_weight` words ``[O, Wd]``.
        k: the real patch length ``KH * KW * C``.
        pw: ``popcount`` of each weight row ``int32 [O]``.
        kernel_size, stride: the convolution's ``(KH, KW)`` and ``(sh, sw)``.
    """
    check_tensor(act, "act", dtype=(torch.int32, torch.uint32), shape=(None, None, None, None))
    n_img, hp, wp, cw = act.shape
    dev = act.device
    kh, kw = kernel_size
    sh, sw = stride
    taps = kh * kw
    check_tensor(w, "w", dtype=(torch.int32, torch.uint32), shape=(None, -(-taps * cw // 8) * 8), device=dev,
                 words=True)
    o, wd = w.shape
    check_tensor(pw, "pw", dtype=torch.int32, shape=(o,), device=dev)
    if min(kh, kw, sh, sw) < 1 or hp < kh or wp < kw or not 1 <= k <= taps * cw * 32:
        raise ValueError(f"`bconv` needs kernel_size/stride >= 1, a kernel no larger than the padded input and "
                         f"1 <= k <= {taps * cw * 32}, but got kernel_size={kernel_size}, stride={stride}, "
                         f"act shape={list(act.shape)}, k={k}.")
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    m = n_img * ho * wo
    if m > _INT_MAX or -(-m // BMMA_BM) > _MAX_GRID_Y:
        raise ValueError(f"`bconv` handles up to {_MAX_GRID_Y * BMMA_BM} output pixels per call, but got {m}; "
                         "split the batch.")
    if out is None:
        out = torch.empty((n_img, ho, wo, o), dtype=torch.int32, device=dev)
    check_tensor(out, "out", dtype=torch.int32, shape=(n_img, ho, wo, o), device=dev)
    launch(_index(dev), "bmma.cu", "bnn_bconv", (-(-o // BMMA_BN), -(-m // BMMA_BM), 1), (BMMA_THREADS, 1, 1),
           [(act.data_ptr(), C_PTR), (w.data_ptr(), C_PTR), (m, C_INT), (o, C_INT), (k, C_INT), (wd, C_INT),
            (hp, C_INT), (wp, C_INT), (cw, C_INT), (kw, C_INT), (taps, C_INT), (ho, C_INT), (wo, C_INT), (sh, C_INT),
            (sw, C_INT), (pw.data_ptr(), C_PTR), (out.data_ptr(), C_PTR)], stream=_stream(dev))
    return out


def kernel_names() -> dict[str, list[str]]:
    """Every kernel entry point per source file (what :func:`build` must produce)."""
    return {src: list(names) for src, names in KERNELS.items()}
