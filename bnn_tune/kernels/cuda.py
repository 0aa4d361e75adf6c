"""CUDA path: build ``csrc/*.cu`` with nvcc into a shared library and call it through ctypes.

Used only when a GPU is visible. The first call compiles the sources for the GPU's architecture
(``nvcc -O3 -shared -gencode arch=compute_XY,code=[sm_XY,compute_XY]``) into a cache directory
(:func:`bnn_tune.kernels._native.cache_dir`) keyed by a hash of the sources, nvcc version and
architecture; later calls load the cached library. Tensors are passed as raw device pointers on
torch's current stream. Packed words live in ``torch.int32`` tensors (the same 32 bits as the
``uint32`` words of the model file).

Functions:

* :func:`pack_sign` - ``float32 [B, K]`` -> packed words ``[B, Wd]`` and ``popcount(a)`` ``[B]``.
* :func:`gemv` - batch 1..16 XOR-popcount GEMV/GEMM on CUDA cores, fused sign+pack of a float
  input, int32 output or threshold output emitting the next layer's packed bits.
* :func:`bmma` - large batch: tensor-core ``mma.m16n8k256 .b1 .and.popc`` GEMM, int32 output
  ``K - 2 popc(a) - 2 popc(w) + 4 popc(a & w)``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import torch

from .._errors import DeviceUnavailableError
from ._native import cache_dir

__all__ = ["CSRC", "available", "bmma", "build", "compile_command", "gemv", "load", "pack_sign"]

CSRC = Path(__file__).parent / "csrc"
_LIB: ctypes.CDLL | None = None
_ERRORS = {1: "bad argument", 2: "shared memory too large for this K and batch", 3: "kernel launch failed"}


def nvcc_path() -> str | None:
    return shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                    if os.environ.get("CUDA_HOME") else None)


def available() -> bool:
    """True when a CUDA GPU is visible and nvcc is found (the kernels can be built and run)."""
    return torch.cuda.is_available() and nvcc_path() is not None


def sources() -> list[Path]:
    return sorted(CSRC.glob("*.cu"))


def compile_command(out: str | os.PathLike, arch: str = "90") -> list[str]:
    """The nvcc command that builds the shared library for ``sm_<arch>``."""
    return [nvcc_path() or "nvcc", "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC",
            f"-gencode=arch=compute_{arch},code=[sm_{arch},compute_{arch}]", "-I", str(CSRC),
            *map(str, sources()), "-o", os.fspath(out)]


def build(arch: str | None = None, *, verbose: bool = False) -> Path:
    """Compile the kernels (cached) and return the library path."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc was not found (PATH or CUDA_HOME); it is needed to build the bnn-tune CUDA "
                           "kernels. Install the CUDA toolkit, or use device='cpu'.")
    if arch is None:
        major, minor = torch.cuda.get_device_capability()
        arch = f"{major}{minor}"
    if int(arch) < 80:
        raise RuntimeError(f"The bnn-tune CUDA kernels need sm_80 or newer (b1 mma), but the GPU is sm_{arch}.")
    h = hashlib.sha256()
    for f in [*sources(), *CSRC.glob("*.cuh")]:
        h.update(f.name.encode() + f.read_bytes())
    h.update(subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.encode())
    h.update(arch.encode())
    cache = cache_dir()
    lib = cache / f"libbnn_tune_cuda_sm{arch}_{h.hexdigest()[:16]}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run(compile_command(tmp, arch), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed building the bnn-tune CUDA kernels:\n{proc.stderr[-4000:]}")
        if verbose:
            print(proc.stderr)
        os.replace(tmp, lib)
    return lib


def load() -> ctypes.CDLL:
    """Build (if needed) and load the library; sets the ctypes signatures."""
    global _LIB
    if _LIB is None:
        if not torch.cuda.is_available():
            raise DeviceUnavailableError("No CUDA GPU is visible; the CUDA kernels cannot run (use the CPU path, "
                                         "device='cpu').")
        lib = ctypes.CDLL(str(build()))
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.bnn_pack_sign.argtypes = [p, i, i, i, i, p, p, p]
        lib.bnn_gemv.argtypes = [p, i, p, p, i, i, i, i, p, p, p, i, p]
        lib.bnn_bmma.argtypes = [p, p, i, i, i, i, p, p, p, p]
        for f in (lib.bnn_pack_sign, lib.bnn_gemv, lib.bnn_bmma):
            f.restype = i
        _LIB = lib
    return _LIB


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def _check(rc: int, name: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{name}: {_ERRORS.get(rc, f'error {rc}')}")


def _words(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype not in (torch.int32, torch.uint32) or not t.is_cuda or not t.is_contiguous() or t.ndim != 2:
        raise ValueError(f"`{name}` must be a contiguous 2-D CUDA int32 tensor of packed words, but got "
                         f"dtype={t.dtype}, device={t.device}, shape={tuple(t.shape)}.")
    if t.data_ptr() % 16 or t.shape[1] % 8:
        raise ValueError(f"`{name}` must be 16-byte aligned with a multiple of 8 words per row (256-bit K "
                         f"tile), but got {t.shape[1]} words at address % 16 = {t.data_ptr() % 16}.")
    return t


def pack_sign(x: torch.Tensor, wd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign+pack ``float32 [B, K]`` into ``int32 [B, wd]`` words and ``popcount`` per row."""
    if x.dtype != torch.float32 or not x.is_cuda or x.ndim != 2 or x.stride(1) != 1:
        raise ValueError("`x` must be a CUDA float32 [B, K] tensor with unit column stride.")
    out = torch.empty((x.shape[0], wd), dtype=torch.int32, device=x.device)
    pa = torch.empty(x.shape[0], dtype=torch.int32, device=x.device)
    _check(load().bnn_pack_sign(_ptr(x), x.stride(0), x.shape[0], x.shape[1], wd, _ptr(out), _ptr(pa), _stream()),
           "bnn_pack_sign")
    return out, pa


def gemv(w: torch.Tensor, k: int, *, x: torch.Tensor | None = None, a: torch.Tensor | None = None,
         thr: torch.Tensor | None = None, out_words: int | None = None, out: torch.Tensor | None = None
         ) -> torch.Tensor:
    """Binary GEMV/GEMM for batch 1..16: ``int32 [B, O]`` or, with ``thr``, packed bits ``[B, out_words]``.

    Give either ``x`` (float32 [B, K], signed and packed inside the kernel) or ``a`` (packed [B, Wd]).
    """
    w = _words(w, "w")
    o, wd = w.shape
    src = x if x is not None else a
    if src is None or (x is not None and a is not None):
        raise ValueError("Give exactly one of `x` (float input) or `a` (packed input).")
    if a is not None:
        _words(a, "a")
    elif x is not None and (x.dtype != torch.float32 or not x.is_cuda or x.ndim != 2 or x.stride(1) != 1):
        raise ValueError("`x` must be a CUDA float32 [B, K] tensor with unit column stride.")
    b = src.shape[0]
    if not 1 <= b <= 16:
        raise ValueError(f"`gemv` handles batch 1..16, but got batch={b}; use `bmma` for larger batches.")
    if thr is not None:
        out_words = out_words or -(-o // 32)
        res = out if out is not None else torch.empty((b, out_words), dtype=torch.int32, device=w.device)
        y, bits = None, res
    else:
        res = out if out is not None else torch.empty((b, o), dtype=torch.int32, device=w.device)
        y, bits = res, None
    _check(load().bnn_gemv(_ptr(x), x.stride(0) if x is not None else 0, _ptr(a), _ptr(w), o, k, wd, b,
                           _ptr(thr), _ptr(y), _ptr(bits), out_words or 0, _stream()), "bnn_gemv")
    return res


def bmma(a: torch.Tensor, w: torch.Tensor, k: int, pa: torch.Tensor, pw: torch.Tensor,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """Tensor-core binary GEMM: ``int32 [M, N]`` +-1 dot products of packed rows of ``a`` and ``w``."""
    a, w = _words(a, "a"), _words(w, "w")
    m, wd = a.shape
    n = w.shape[0]
    res = out if out is not None else torch.empty((m, n), dtype=torch.int32, device=a.device)
    _check(load().bnn_bmma(_ptr(a), _ptr(w), m, n, k, wd, _ptr(pa), _ptr(pw), _ptr(res), _stream()), "bnn_bmma")
    return res
