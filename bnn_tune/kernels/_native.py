"""Optional compiled CPU kernel (``csrc/bgemm_cpu.c``) loaded with ctypes.

Built on first use with the system C compiler (``$CC`` or ``cc``: ``-O3 -march=native``, falling
back to ``-O3``, then to the numpy path) into :func:`cache_dir` (``$BNN_TUNE_CACHE``,
else ``$XDG_CACHE_HOME/bnn_tune`` or ``~/.cache/bnn_tune``), keyed by a hash of the source, the compiler
and the CPU. ``BNN_TUNE_CPU_KERNEL=numpy``
disables it. :func:`bnn_tune.kernels.binary_gemm` uses it when it loads; both paths are exact, the
test suite checks them against each other and against the float oracle.

Threads: calls with more than ``_PARALLEL_WORK`` word operations split the weight rows over
``torch.get_num_threads()`` Python threads (ctypes releases the GIL during the call), the same
thread count the float baseline uses.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["build_library", "native_available", "native_gemm"]

logger = logging.getLogger(__name__)
_SRC = Path(__file__).parent / "csrc" / "bgemm_cpu.c"
_STATE: dict[str, object] = {}


def cache_dir() -> Path:
    """Where compiled kernels are cached: ``$BNN_TUNE_CACHE``, else ``$XDG_CACHE_HOME/bnn_tune``, else
    ``~/.cache/bnn_tune``."""
    if os.environ.get("BNN_TUNE_CACHE"):
        return Path(os.environ["BNN_TUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnn_tune"


def _cpu_signature() -> bytes:
    """Machine, CPU model and instruction-set flags (Linux ``/proc/cpuinfo``; the machine name elsewhere)."""
    import platform

    sig = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    sig += line
                elif not line.strip():
                    break  # the first processor's block is enough
    except OSError:
        pass
    return sig.encode()


def build_library(src: Path, stem: str, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """Compile ``src`` into a cached shared library and load it; ``None`` when that is impossible.

    ``-O3 -march=native`` (falling back to ``-O3``) plus ``extra_flags``; the cache key covers the
    source, the compiler, the flags and the CPU. ``BNN_TUNE_CPU_KERNEL=numpy`` disables every compiled
    CPU kernel.
    """
    if os.environ.get("BNN_TUNE_CPU_KERNEL", "").lower() == "numpy":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    cache = cache_dir()
    # -march=native: the CPU is part of the key, so a cache shared by several machines (an NFS home on a
    # Ray cluster) never hands one CPU a library built for another's instruction set
    key = hashlib.sha256(src.read_bytes() + cc.encode() + " ".join(extra_flags).encode()
                         + _cpu_signature()).hexdigest()[:16]
    lib = cache / f"{stem}_{key}.so"
    if not lib.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        for flags in (["-march=native"], []):
            proc = subprocess.run([cc, "-O3", *flags, *extra_flags, "-fPIC", "-shared", str(src), "-o", str(tmp)],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                os.replace(tmp, lib)
                break
            logger.debug("building %s with %s failed: %s", src.name, flags, proc.stderr[-2000:])
        else:
            return None
    try:
        return ctypes.CDLL(str(lib))
    except OSError:
        return None


def _build() -> ctypes.CDLL | None:
    dll = build_library(_SRC, "libbnn_tune_cpu")
    if dll is None:
        return None
    p, i = ctypes.c_void_p, ctypes.c_int
    dll.bnn_cpu_gemm.argtypes = [p, p, i, i, i, i, p, i]
    dll.bnn_cpu_gemm.restype = None
    return dll


def _lib() -> ctypes.CDLL | None:
    if "lib" not in _STATE:
        _STATE["lib"] = _build()
    return _STATE["lib"]  # type: ignore[return-value]


def native_available() -> bool:
    """True when the compiled CPU kernel is built and loaded."""
    return _lib() is not None


def native_gemm(a64: np.ndarray, w64: np.ndarray, k: int) -> np.ndarray | None:
    """``K - 2 popcount(a ^ w)`` for ``uint64 [M, W]`` x ``uint64 [O, W]``; ``None`` when unavailable."""
    lib = _lib()
    if lib is None:
        return None
    a64 = np.ascontiguousarray(a64, dtype=np.uint64)
    w64 = np.ascontiguousarray(w64, dtype=np.uint64)
    m, wd = a64.shape
    o = w64.shape[0]
    y = np.empty((m, o), dtype=np.int32)
    threads = _threads()
    a_ptr, w_ptr, y_ptr = a64.ctypes.data, w64.ctypes.data, y.ctypes.data
    if threads <= 1 or m * o * wd < _PARALLEL_WORK or (o < 8 * threads and m < 8 * threads):
        lib.bnn_cpu_gemm(a_ptr, w_ptr, m, o, wd, k, y_ptr, o)
        return y
    if o >= 8 * threads:  # split the weight rows (batch-1 GEMV: each thread streams its share of W)
        step = -(-o // threads)
        step += -step % 4  # keep the 4-row register blocks whole

        def part(start: int) -> None:
            lib.bnn_cpu_gemm(a_ptr, w_ptr + start * wd * 8, m, min(step, o - start), wd, k, y_ptr + start * 4, o)

        total = o
    else:  # few output channels, many rows (convolutions): split the activation rows
        step = -(-m // threads)
        step += -step % 4

        def part(start: int) -> None:  # type: ignore[misc]
            lib.bnn_cpu_gemm(a_ptr + start * wd * 8, w_ptr, min(step, m - start), o, wd, k, y_ptr + start * o * 4, o)

        total = m
    list(_pool(threads).map(part, range(0, total, step)))
    return y


_PARALLEL_WORK = 1 << 20


def _threads() -> int:
    try:
        import torch

        return max(1, torch.get_num_threads())
    except Exception:  # pragma: no cover
        return 1


def _pool(n: int):
    from concurrent.futures import ThreadPoolExecutor

    pool = _STATE.get("pool")
    if pool is None or _STATE.get("pool_size") != n:
        pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="bnn_tune_gemm")
        _STATE["pool"], _STATE["pool_size"] = pool, n
    return pool
