"""``tanh(beta * x)`` on CPU float32 tensors with the same bits on every CPU (``csrc/tanh_cpu.c``).

BMD's forward weight. The C loop evaluates tanh in double precision and rounds once to float (the
correctly rounded tanh except within about 1e-15 of a midpoint between two floats), using only IEEE
operations compiled with ``-ffp-contract=off``, so any build of it on any x86 CPU returns the same bits.
``torch.tanh`` on an MKL build calls MKL's ``vsTanh``, whose last bit depends on the code path MKL picks
for the CPU (it agrees with the correctly rounded value to 1 ulp) and which runs as scalar code on AMD
CPUs (3-6 ns per element here depending on the magnitude, against about 1 ns for the C loop;
``benchmarks/bench_tanh.py``).

:func:`scaled_tanh` returns ``None`` where the kernel does not apply (no C compiler,
``BNN_TUNE_CPU_KERNEL=numpy``, a tensor that is not a contiguous CPU float32 tensor); the caller then
uses ``torch.tanh``. Large tensors are split over ``torch.get_num_threads()`` threads of torch's own
OpenMP team (one thread where torch does not run on OpenMP, and in a forked child).
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any

import torch

from ._native import build_library

__all__ = ["scaled_tanh", "tanh_kernel_available"]

_SRC = Path(__file__).parent / "csrc" / "tanh_cpu.c"
_STATE: dict[str, Any] = {}
_LOCK = threading.Lock()
_MIN_SPLIT = 1 << 16  # elements per thread below which one thread does it all (a thread hand-off costs ~20 us)


def _lib() -> ctypes.CDLL | None:
    if "lib" not in _STATE:
        with _LOCK:
            if "lib" not in _STATE:
                dll = build_library(_SRC, "libbnn_tune_tanh", ("-ffp-contract=off", "-fno-trapping-math"))
                if dll is not None:
                    dll.bnn_tanh_scaled_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                        ctypes.c_float]
                    dll.bnn_tanh_scaled_f32.restype = None
                    dll.bnn_tanh_scaled_f32_team.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                             ctypes.c_float, ctypes.c_int, ctypes.c_void_p]
                    dll.bnn_tanh_scaled_f32_team.restype = None
                _STATE["lib"] = dll
    return _STATE["lib"]


def tanh_kernel_available() -> bool:
    """True when the C tanh is built and loaded (a C compiler is present and the numpy path is not forced)."""
    return _lib() is not None


_HOME_PID = os.getpid()  # a forked child has no OpenMP team behind the parent's (a GOMP call there hangs)


def _team() -> int | None:
    """``GOMP_parallel`` of torch's OpenMP runtime, or ``None`` (not OpenMP, or a forked child)."""
    if os.getpid() != _HOME_PID:
        return None
    if "team" not in _STATE:
        from ._engine import _torch_gomp_parallel

        _STATE["team"] = _torch_gomp_parallel()
    return _STATE["team"]


def scaled_tanh(x: torch.Tensor, beta: float) -> torch.Tensor | None:
    """``tanh(x * beta)`` with ``x * beta`` rounded to float32 first (what ``torch.tanh(x * beta)`` computes
    before its tanh), or ``None`` when the C kernel does not apply.

    Args:
        x: a contiguous float32 CPU tensor (anything else returns ``None``); read only, and the result is
            not part of an autograd graph (call it from an ``autograd.Function``).
        beta: the scale, converted to float32.

    Example:
        >>> y = scaled_tanh(torch.tensor([0.0, -0.0, 0.5, float("inf")]), 2.0)
        >>> y is None or y.tolist() == [0.0, -0.0, 0.7615941762924194, 1.0]
        True
    """
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        return None
    lib = _lib()
    if lib is None:
        return None
    y = torch.empty_like(x)
    n = x.numel()
    parts = min(max(1, torch.get_num_threads()), n // _MIN_SPLIT)
    if parts <= 1:
        lib.bnn_tanh_scaled_f32(x.data_ptr(), y.data_ptr(), n, float(beta))
    else:
        lib.bnn_tanh_scaled_f32_team(x.data_ptr(), y.data_ptr(), n, float(beta), parts, _team())
    return y
