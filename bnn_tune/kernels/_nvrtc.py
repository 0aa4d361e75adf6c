"""Build the CUDA kernels into cubins with NVRTC and launch them through the CUDA driver API.

No CUDA toolkit is needed: torch's CUDA wheels bring NVRTC (``nvidia-cuda-nvrtc``) and the driver
bindings (``cuda-bindings``). Each ``csrc/*.cu`` file (kernels only, ``extern "C" __global__``) is
compiled to a cubin for one architecture (``sm_80``, ``sm_90``, ...; NVRTC's ``--gpu-architecture=sm_XY``)
and cached under :func:`bnn_tune.kernels._native.cache_dir` ``/cuda`` keyed by a hash of the source,
the headers, the compiler version, its options and the architecture. ``nvcc -cubin`` is an optional
second compiler (``BNN_TUNE_CUDA_COMPILER=nvcc``, or automatically when NVRTC is missing and nvcc is on
PATH / ``CUDA_HOME``); both produce the same kind of cubin and are loaded the same way.

Loading and launching: the cubin is loaded with ``cuModuleLoadData`` into the device's primary context
(the context torch uses), kernels are looked up with ``cuModuleGetFunction`` and launched with
``cuLaunchKernel`` on torch's current stream (so they order with torch ops and can be captured in CUDA
graphs). Every NVRTC and driver call goes through :func:`check`, which raises :class:`CudaError` naming
the return code (``CUDA_ERROR_INVALID_VALUE``, ``NVRTC_ERROR_COMPILATION``, ...) and, for compilation,
the compiler log.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from ._native import cache_dir

__all__ = ["ARCHS", "CSRC", "KERNELS", "CudaError", "check", "compile_cubin", "build_all", "compiler", "cubin_arch", "cubin_bytes", "launch",
           "nvcc_path", "nvrtc_available", "sources"]

CSRC = Path(__file__).parent / "csrc"
ARCHS = ("80", "90")  # the architectures the package is tested to compile for (b1 mma needs sm_80+)
_OPTIONS = ("-std=c++17", "--use_fast_math")
# every kernel entry point per source: loading a module resolves all of them at once, so a first call inside
# a CUDA-graph capture needs no module load
KERNELS = {
    "pack_sign.cu": ("bnn_pack_sign", "bnn_pack_nhwc"),
    "bgemv.cu": tuple(f"bnn_gemv_b{bm}_{kind}" for kind in ("packed", "fused") for bm in (1, 4, 16)),
    "bmma.cu": ("bnn_bmma", "bnn_bconv"),
}
_LOCK = threading.Lock()
_MODULES: dict[tuple[int, str], Any] = {}  # (device, source name) -> CUmodule
_FUNCS: dict[tuple[int, str], Any] = {}  # (device, kernel name) -> CUfunction
_CTX: dict[int, Any] = {}  # device -> primary CUcontext


class CudaError(RuntimeError):
    """A CUDA driver or NVRTC call returned an error code (named in the message)."""


def sources() -> list[Path]:
    """The kernel sources (``csrc/*.cu``)."""
    return sorted(CSRC.glob("*.cu"))


def nvcc_path() -> str | None:
    """nvcc on PATH, else ``$CUDA_HOME/bin/nvcc`` if it exists, else ``None``."""
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME")
    cand = os.path.join(home, "bin", "nvcc") if home else None
    return cand if cand and os.access(cand, os.X_OK) else None


def nvrtc_available() -> bool:
    """True when ``cuda.bindings.nvrtc`` imports and finds the NVRTC library."""
    try:
        from cuda.bindings import nvrtc

        check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    except Exception:  # ImportError, or the library is missing (cuda.pathfinder raises its own type)
        return False
    return True


def compiler() -> str | None:
    """The compiler the kernels are built with: ``"nvrtc"`` (default), ``"nvcc"`` or ``None`` (neither).

    ``BNN_TUNE_CUDA_COMPILER=nvrtc|nvcc`` forces one; an unknown value raises.
    """
    forced = os.environ.get("BNN_TUNE_CUDA_COMPILER", "").lower()
    if forced not in ("", "nvrtc", "nvcc"):
        raise ValueError(f"BNN_TUNE_CUDA_COMPILER must be 'nvrtc' or 'nvcc', but got {forced!r}.")
    if forced == "nvcc" or (not forced and not nvrtc_available()):
        return "nvcc" if nvcc_path() else None
    return "nvrtc" if nvrtc_available() else None


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-bindings result ``(code, *values)``; raise :class:`CudaError` unless code is 0.

    Returns ``None``, the single value, or the tuple of values. The message names the call and the
    code (``"cuModuleLoadData failed: CUDA_ERROR_INVALID_IMAGE (device kernel image is invalid)"``).
    """
    code, *values = result if isinstance(result, tuple) else (result,)
    if int(code) != 0:
        name = getattr(code, "name", None) or f"error {int(code)}"
        detail = _describe(code)
        raise CudaError(f"{what} failed: {name}" + (f" ({detail})" if detail else "") + ".")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _describe(code: Any) -> str:
    """The library's description of an error code ('' when it cannot be had, e.g. no driver)."""
    try:
        from cuda.bindings import driver, nvrtc

        if isinstance(code, nvrtc.nvrtcResult):
            text = nvrtc.nvrtcGetErrorString(code)[1]
        elif isinstance(code, driver.CUresult):
            err, text = driver.cuGetErrorString(code)
            if int(err) != 0:
                return ""
        else:
            return ""
    except Exception:  # no driver library on this machine: the name alone must do
        return ""
    return text.decode() if isinstance(text, bytes) else str(text or "")


# ---------------------------------------------------------------------------------------- compile
def _headers() -> list[Path]:
    return sorted(CSRC.glob("*.cuh"))


def _compiler_id(kind: str) -> bytes:
    if kind == "nvrtc":
        from cuda.bindings import nvrtc

        major, minor = check(nvrtc.nvrtcVersion(), "nvrtcVersion")
        return f"nvrtc {major}.{minor}".encode()
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc was not found (PATH or CUDA_HOME).")
    return subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.encode()


def _key(src: Path, arch: str, kind: str) -> str:
    h = hashlib.sha256()
    for f in [src, *_headers()]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(_compiler_id(kind) + " ".join(_OPTIONS).encode() + arch.encode())
    return h.hexdigest()[:16]


def _arch(arch: str | int) -> str:
    arch = str(arch).removeprefix("sm_")
    if not arch.isdigit() or int(arch) < 80:
        raise ValueError(f"The bnn-tune CUDA kernels need sm_80 or newer (b1 tensor-core mma), but got arch={arch!r}.")
    return arch


def nvrtc_compile(src: Path, arch: str) -> tuple[bytes, str]:
    """Compile one source with NVRTC: ``(cubin, log)``; raises :class:`CudaError` with the log on failure."""
    from cuda.bindings import nvrtc

    prog = check(nvrtc.nvrtcCreateProgram(src.read_bytes(), src.name.encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture=sm_{arch}".encode(), f"--include-path={CSRC}".encode(),
                b"--ptxas-options=-v", *(o.encode() for o in _OPTIONS)]
        rc = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        size = check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buf = b" " * size
        check(nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.rstrip(b"\0 ").decode(errors="replace")
        try:
            check(rc, f"nvrtcCompileProgram({src.name}, sm_{arch})")
        except CudaError as exc:
            raise CudaError(f"{exc}\n{log[-4000:]}") from None
        size = check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
    finally:
        check(nvrtc.nvrtcDestroyProgram(prog), "nvrtcDestroyProgram")
    return cubin, log


def nvcc_compile(src: Path, arch: str) -> tuple[bytes, str]:
    """Compile one source with ``nvcc -cubin``: ``(cubin, log)``."""
    import tempfile

    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc was not found (PATH or CUDA_HOME).")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "k.cubin"
        proc = subprocess.run([nvcc, "-O3", "-cubin", f"-arch=sm_{arch}", "-Xptxas", "-v", "-I", str(CSRC),
                               *_OPTIONS, str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed building {src.name} for sm_{arch}:\n{proc.stderr[-4000:]}")
        return out.read_bytes(), proc.stderr


def compile_cubin(src: Path | str, arch: str | int, *, kind: str | None = None) -> Path:
    """The cached cubin of ``src`` for ``sm_<arch>`` (compiled on first use); returns its path."""
    src = Path(src)
    if not src.is_absolute():
        src = CSRC / src
    arch = _arch(arch)
    kind = kind or compiler()
    if kind is None:
        raise RuntimeError("Neither NVRTC nor nvcc was found, so the bnn-tune CUDA kernels cannot be built. "
                           "Install torch's CUDA wheels (they bring cuda-bindings and nvidia-cuda-nvrtc), or "
                           "`pip install cuda-bindings nvidia-cuda-nvrtc`, or use device='cpu'.")
    cache = cache_dir() / "cuda"
    path = cache / f"{src.stem}_sm{arch}_{kind}_{_key(src, arch, kind)}.cubin"
    if not path.exists():
        cubin, log = (nvrtc_compile if kind == "nvrtc" else nvcc_compile)(src, arch)
        cache.mkdir(parents=True, exist_ok=True)
        for target, data in ((path.with_suffix(".log"), log.encode()), (path, cubin)):
            tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: a concurrent builder never sees half a file
    return path


def cubin_bytes(src: Path | str, arch: str | int) -> bytes:
    """The cubin of ``src`` for ``sm_<arch>``: from the cache, or compiled in memory (with a warning) when
    the cache directory cannot be written (a read-only home on a cluster node)."""
    try:
        return compile_cubin(src, arch).read_bytes()
    except OSError as exc:
        import warnings

        warnings.warn(f"bnn-tune kernel cache {cache_dir() / 'cuda'} is not writable ({exc}); compiling "
                      f"{Path(src).name} in memory (set BNN_TUNE_CACHE to a writable directory).", stacklevel=2)
        src = Path(src) if Path(src).is_absolute() else CSRC / src
        kind = compiler()
        return (nvrtc_compile if kind == "nvrtc" else nvcc_compile)(src, _arch(arch))[0]


def build_all(archs: tuple[str, ...] = ARCHS, *, kind: str | None = None) -> dict[tuple[str, str], Path]:
    """Compile every source for every arch (in parallel threads: NVRTC releases the GIL); ``{(source, arch): path}``."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(src, _arch(a)) for a in archs for src in sources()]
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        paths = list(pool.map(lambda job: compile_cubin(job[0], job[1], kind=kind), jobs))
    return {(src.name, arch): p for (src, arch), p in zip(jobs, paths)}


def cubin_arch(cubin: bytes) -> int:
    """The SM architecture a CUDA ELF cubin was built for (e.g. 90), from its ELF header.

    Raises ``ValueError`` when the bytes are not a 64-bit CUDA ELF (``e_machine`` 190, EM_CUDA).
    """
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise ValueError("not a 64-bit ELF image")
    e_machine = int.from_bytes(cubin[18:20], "little")
    if e_machine != 190:
        raise ValueError(f"ELF machine is {e_machine}, not EM_CUDA (190)")
    flags = int.from_bytes(cubin[48:52], "little")
    # EI_ABIVERSION >= 8 (CUDA 12.8+ toolchains): SM in bits 8..15; older ABI: SM in bits 0..7
    return (flags >> 8) & 0xFF if cubin[8] >= 8 else flags & 0xFF


# ------------------------------------------------------------------------------------------ launch
def _context(device: int) -> Any:
    """Make the device's primary context (torch's) current on this thread; return it."""
    from cuda.bindings import driver

    ctx = _CTX.get(device)
    if ctx is None:
        check(driver.cuInit(0), "cuInit")
        dev = check(driver.cuDeviceGet(device), "cuDeviceGet")
        ctx = check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        _CTX[device] = ctx
    if int(check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent") or 0) != int(ctx):
        check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    return ctx


def _device_arch(device: int) -> str:
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return _arch(f"{major}{minor}")


def function(device: int, source: str, name: str) -> Any:
    """The ``CUfunction`` ``name`` of ``csrc/<source>`` on ``device`` (built and loaded on first use)."""
    from cuda.bindings import driver

    key = (device, name)
    f = _FUNCS.get(key)
    if f is not None:
        _context(device)
        return f
    with _LOCK:
        _context(device)
        mod = _MODULES.get((device, source))
        if mod is None:
            cubin = cubin_bytes(source, _device_arch(device))
            mod = check(driver.cuModuleLoadData(cubin), f"cuModuleLoadData({source})")
            _MODULES[(device, source)] = mod
            for other in KERNELS.get(source, ()):
                _FUNCS[(device, other)] = check(driver.cuModuleGetFunction(mod, other.encode()),
                                                f"cuModuleGetFunction({other})")
        f = _FUNCS.get(key)
        if f is None:
            f = check(driver.cuModuleGetFunction(mod, name.encode()), f"cuModuleGetFunction({name})")
            _FUNCS[key] = f
    return f


def set_max_dynamic_smem(f: Any, nbytes: int, name: str) -> None:
    from cuda.bindings import driver

    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    check(driver.cuFuncSetAttribute(f, attr, nbytes), f"cuFuncSetAttribute({name}, {nbytes} B shared)")


def launch(device: int, source: str, name: str, grid: tuple[int, int, int], block: tuple[int, int, int],
           args: list[tuple[Any, Any]], *, smem: int = 0, stream: int) -> None:
    """``cuLaunchKernel`` of kernel ``name`` with ``args`` = [(value, ctypes type)], on ``stream``."""
    import contextlib

    import torch
    from cuda.bindings import driver

    # on another GPU than torch's current one: switch torch's device for the launch (and back), so the
    # thread's current context stays the one torch's runtime expects
    other = torch.cuda.is_available() and torch.cuda.current_device() != device
    with torch.cuda.device(device) if other else contextlib.nullcontext():
        f = function(device, source, name)
        if smem > 48 * 1024:
            set_max_dynamic_smem(f, smem, name)
        values = tuple(0 if v is None else v for v, _ in args)
        types = tuple(t for _, t in args)
        check(driver.cuLaunchKernel(f, *grid, *block, smem, driver.CUstream(stream), (values, types), 0),
              f"cuLaunchKernel({name}, grid={grid}, block={block}, smem={smem})")


C_PTR, C_INT, C_LONG = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
