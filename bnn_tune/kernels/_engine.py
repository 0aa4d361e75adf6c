"""Packed CPU inference engine: a chain of binary layers on bit-packed NHWC activations.

:class:`BinaryChain` runs a sequence of binary convolutions / linear layers (with their batch-norm
folded into integer thresholds), bit max-pools and flattens in C (``csrc/bconv_cpu.c``): the input is
signed and packed once (``C / 32`` words per pixel, NHWC, the padding value each convolution was
trained with written into the packed border), every layer is one C call that convolves directly on the
packed words (no im2col) and writes the next layer's bits, and only the chain's output comes back to
numpy. Buffers are allocated once per batch size. Arrays in, arrays out; it knows nothing of the model
file (:class:`bnn_tune.export.PackedModel` builds chains from its op list).

Instruction sets (``isa``): ``"avx512"`` (VPOPCNTDQ), ``"avx2"`` (vpshufb popcount), ``"portable"``
(plain C); default: ``$BNN_TUNE_CPU_ISA`` if set, else the best the CPU has. All are exact and give
identical results. ``threads`` (default: every core this process may use) split the output pixels.

Thread pools (:func:`set_thread_pool`, ``$BNN_TUNE_CPU_POOL``; all give identical results):
``"openmp"`` (the default: the only one that scaled next to torch on a quiet machine) runs a layer's split on the OpenMP runtime torch uses (its ``GOMP_parallel``, found among
the libraries the process has loaded once torch is imported), so torch's workers, which keep spinning
for a while after each of torch's own parallel calls, take the engine's shares instead of competing with
engine threads for the cores; ``"persistent"``: the engine's own workers, started once, spinning briefly
after each call and then sleeping; a late worker leaves its share to the caller instead of holding the
call up; ``"pthreads"``: threads started and joined per call (the fallback: no OpenMP runtime found, or
a child after ``fork``, where libgomp has no threads behind the parent's team).
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._native import build_library
from ._packing import pack_bits

__all__ = ["ISAS", "POOLS", "BinaryChain", "ChainLayer", "available_isas", "engine_available", "isa_task_counts",
           "selected_isa", "set_thread_pool", "thread_pool"]

ISAS = ("portable", "avx2", "avx512")  # index + 1 is the C side's code
_SRC = Path(__file__).parent / "csrc" / "bconv_cpu.c"
_STATE: dict[str, Any] = {}


def _lib() -> ctypes.CDLL | None:
    if "lib" not in _STATE:
        dll = build_library(_SRC, "libbnn_tune_engine", ("-ffp-contract=off", "-pthread"))
        if dll is not None:
            p, i = ctypes.c_void_p, ctypes.c_int
            dll.bnn_engine_isa.argtypes, dll.bnn_engine_isa.restype = [], i
            dll.bnn_engine_set_min_parallel_work.argtypes = [ctypes.c_longlong]
            dll.bnn_engine_set_min_parallel_work.restype = None
            dll.bnn_engine_conv.argtypes = [p, p, p, p, p, i, i]
            dll.bnn_engine_maxpool.argtypes = [p, p, p] + [i] * 15
            dll.bnn_engine_pack.argtypes = [p, p, p, p, p] + [i] * 8
            dll.bnn_engine_unpack.argtypes = [p, p] + [i] * 8
            dll.bnn_engine_set_pool.argtypes, dll.bnn_engine_set_pool.restype = [i, p], i
            dll.bnn_engine_pool.argtypes, dll.bnn_engine_pool.restype = [], i
            dll.bnn_engine_helper_tasks.argtypes, dll.bnn_engine_helper_tasks.restype = [], ctypes.c_longlong
            dll.bnn_engine_isa_tasks.argtypes, dll.bnn_engine_isa_tasks.restype = [i], ctypes.c_longlong
            for f in ("bnn_engine_conv", "bnn_engine_maxpool", "bnn_engine_pack", "bnn_engine_unpack"):
                getattr(dll, f).restype = None
            _STATE["lib"] = dll
            env = os.environ.get("BNN_TUNE_CPU_POOL", "").lower()
            set_thread_pool(env if env in POOLS else DEFAULT_POOL)  # a bad value is refused by BinaryChain
        _STATE["lib"] = dll
    return _STATE["lib"]


POOLS = ("pthreads", "persistent", "openmp")  # index: the C side's code
DEFAULT_POOL = "openmp"  # measured on the quiet VM: benchmarks/bench_engine_pool.py, BENCHMARKS.md ("Thread pools")


def _torch_gomp_parallel() -> int | None:
    """Address of ``GOMP_parallel`` in the OpenMP runtime torch runs on, or ``None``.

    Only when torch's parallel backend is OpenMP. The runtime is the one already mapped into the process
    (``/proc/self/maps``; torch wheels bundle ``torch/lib/libgomp.so.1``), opened again by its path, which
    hands back the same loaded copy: a second copy would keep its own threads and fix nothing.
    """
    import re

    import torch

    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(maxsplit=5)[-1].strip() for line in f if "omp" in line}
    except OSError:  # not Linux
        return None
    torch_lib = str(Path(torch.__file__).parent / "lib")
    found = sorted((not p.startswith(torch_lib), p) for p in paths
                   if re.fullmatch(r"lib(gomp|iomp5|omp)\.so[.0-9]*", os.path.basename(p)))
    for _, path in found:
        try:
            fn = ctypes.CDLL(path).GOMP_parallel
        except (OSError, AttributeError):
            continue
        return ctypes.cast(fn, ctypes.c_void_p).value
    return None


def _check_pool(pool: str, where: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"{where}={pool!r} is not a thread pool; use one of {list(POOLS)}.")


def set_thread_pool(pool: str) -> str:
    """Run the engine's thread split, for every chain, on ``"openmp"`` (torch's runtime; pthreads when it
    cannot be found), ``"persistent"`` or ``"pthreads"`` (see the module doc); returns the pool now in use
    (:func:`thread_pool`). The default is ``$BNN_TUNE_CPU_POOL``, else ``DEFAULT_POOL``."""
    _check_pool(pool, "pool")
    lib = _lib()
    if lib is None:
        return "pthreads"
    fn = _torch_gomp_parallel() if pool == "openmp" else None
    return POOLS[lib.bnn_engine_set_pool(POOLS.index(pool), fn)]


def thread_pool() -> str:
    """The pool the engine's threads come from now: ``"openmp"``, ``"persistent"`` or ``"pthreads"``."""
    lib = _lib()
    return "pthreads" if lib is None else POOLS[lib.bnn_engine_pool()]


def engine_available() -> bool:
    """True when the engine's C library builds and loads (a C compiler is present)."""
    return _lib() is not None


def available_isas() -> list[str]:
    """Instruction-set paths this CPU can run, slowest first (``"portable"`` always)."""
    lib = _lib()
    if lib is None:
        return []
    return list(ISAS[: lib.bnn_engine_isa()])


def _resolve_isa(isa: str | None) -> int:
    have = available_isas()
    if isa is None:
        isa = os.environ.get("BNN_TUNE_CPU_ISA") or have[-1]
        where = "BNN_TUNE_CPU_ISA"
    else:
        where = "isa"
    isa = isa.lower()
    if isa not in ISAS:
        raise ValueError(f"{where}={isa!r} is not an instruction-set path; use one of {list(ISAS)}.")
    if isa not in have:
        raise ValueError(f"{where}={isa!r}, but this CPU only supports {have}; pick one of those.")
    return ISAS.index(isa) + 1


def set_min_parallel_work(steps: int) -> None:
    """Below ``steps`` vector steps (output pixels x 16-channel blocks x K words) a layer runs on one
    thread (default ``2**17``, about 0.1 ms; an eighth of it on the ``openmp`` pool, whose team is already
    running); tests set 0 to exercise the thread splits on small layers."""
    lib = _lib()
    if lib is not None:
        lib.bnn_engine_set_min_parallel_work(int(steps))


def isa_task_counts() -> dict[str, int]:
    """Layer tasks run so far on each instruction-set path, all chains together (``{}`` without the engine).

    Every path gives identical results, so this is how a test knows which path a chain really took."""
    lib = _lib()
    return {} if lib is None else {name: int(lib.bnn_engine_isa_tasks(i + 1)) for i, name in enumerate(ISAS)}


def selected_isa(isa: str | None = None) -> str:
    """The path a chain built now takes: ``isa``, else ``$BNN_TUNE_CPU_ISA``, else the best available."""
    return ISAS[_resolve_isa(isa) - 1]


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ChainLayer:
    """One step of a :class:`BinaryChain`.

    ``kind``:

    * ``"conv"``: ``weight`` bool ``[O, kh, kw, C]`` (True = +1; the model file's ``(kh, kw, c)``
      patch order), ``stride``, ``padding`` (equal on both axes), ``pad_value`` (+1 or -1, what the
      layer pads its binarized input with); ``threshold`` int ``[O]``: the output bit is
      ``y >= threshold`` (a folded batch-norm), or ``None``: the integer ``y`` is the chain's output
      (last step only).
    * ``"linear"``: ``weight`` bool ``[O, F]``, ``F`` in the NCHW-flatten order of its input map;
      ``threshold`` as above.
    * ``"maxpool"``: ``kernel``, ``stride``, ``padding``, ``and_channels`` (bool ``[C]`` or ``None``):
      max-pool on bits, OR over the window, AND for the channels set in ``and_channels``.
    * ``"flatten"``: NCHW flatten (the packed data stays NHWC; the next linear's weights are reordered).
    """

    kind: str
    weight: np.ndarray | None = None
    threshold: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    pad_value: float = 1.0
    kernel: tuple[int, int] = (1, 1)
    and_channels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _channel_words(c: int) -> int:
    """uint32 words holding ``c`` channel bits of one pixel."""
    return -(-c // 32)


def _engine_weight(bits4: np.ndarray) -> tuple[np.ndarray, int]:
    """bool ``[O, kh, kw, C]`` -> uint32 ``[OB, kh * kw * CW, 16]`` (16 output channels per vector)."""
    o = bits4.shape[0]
    words = pack_bits(bits4, tile=32)  # [O, kh, kw, CW], channel padding bits 0
    words = words.reshape(o, -1)
    ob = -(-o // 16)
    padded = np.zeros((ob * 16, words.shape[1]), dtype=np.uint32)
    padded[:o] = words
    return np.ascontiguousarray(padded.reshape(ob, 16, -1).transpose(0, 2, 1)), ob


class _Map:
    """Shape of a packed map between steps: C channels, H x W pixels, flattened or not."""

    def __init__(self, c: int, h: int, w: int, flat: bool) -> None:
        self.c, self.h, self.w, self.flat = c, h, w, flat


@dataclass(eq=False)
class _FlattenStep:
    """NCHW flatten: nothing runs (the packed data stays NHWC; the next linear's weights are reordered)."""

    border: int = 0


@dataclass(eq=False)
class _PoolStep:
    """Bit max-pool: OR over the window, AND for the channels set in ``and_mask`` (packed ``uint32`` words)."""

    and_mask: np.ndarray
    args: tuple[int, ...]  # (h, w, channel words, kh, kw, sh, sw, ph, pw, ho, wo) for bnn_engine_maxpool
    input_map: _Map
    border: int = 0


@dataclass(eq=False)
class _ConvStep:
    """A binary conv (a linear layer is a 1x1 conv over one pixel) as one ``bnn_engine_conv`` call.

    ``weights_packed``: uint32 ``[blocks, kh * kw * channel words, 16]`` (16 output channels per block);
    ``threshold_popcount``: int32 per output channel (padded to the blocks with -1), the output bit is
    ``popcount(a ^ w) <= threshold_popcount`` (the folded ``y >= threshold``); ``None``: int32 ``y`` out.
    ``input_geometry``: (padded h, padded w, channel words, ho, wo, kh, kw, sh, sw) of the C call.
    """

    weights_packed: np.ndarray
    blocks: int
    k: int
    out_channels: int
    threshold_popcount: np.ndarray | None
    input_geometry: tuple[int, ...]
    input_map: _Map
    border: int
    pad_one: bool
    geometry_by_batch: dict[int, np.ndarray] = field(default_factory=dict)


_Step = _FlattenStep | _PoolStep | _ConvStep


class BinaryChain:
    """A chain of binary layers run by the packed C engine.

    Args:
        input_shape: ``(C, H, W)`` or ``(F,)`` of one input sample.
        layers: the :class:`ChainLayer` steps; the first must be ``"conv"`` or ``"linear"``; every binary step but the last needs a ``threshold``.
        input_scale, input_shift: per-channel ``float`` vectors: the input bit is
            ``x * scale + shift >= 0`` in float64 (a ``batchnorm_sign`` op before the chain);
            ``None``: ``x >= 0`` (a bool input is taken as the bits themselves).
        threads: threads per layer (default: every core this process may use).
        isa: ``"avx512"``, ``"avx2"``, ``"portable"``; default ``$BNN_TUNE_CPU_ISA`` or the best available.

    :meth:`run` returns bool bits (``[N, C, H, W]``, or ``[N, O]`` after a linear layer) when the last
    binary step has a threshold, else its ``int32`` pre-activations ``y = K - 2 popcount(a ^ w)`` in the
    same shapes.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> w = rng.random((8, 3, 3, 4)) < 0.5
        >>> chain = BinaryChain((4, 5, 5), [ChainLayer("conv", w, padding=(1, 1))], threads=1)
        >>> chain.run(rng.standard_normal((2, 4, 5, 5)).astype(np.float32)).shape
        (2, 8, 5, 5)
    """

    def __init__(self, input_shape: tuple[int, ...], layers: list[ChainLayer], *,
                 input_scale: np.ndarray | None = None, input_shift: np.ndarray | None = None,
                 threads: int | None = None, isa: str | None = None) -> None:
        lib = _lib()
        if lib is None:
            raise RuntimeError("The packed CPU engine could not be built (no C compiler, or "
                               "BNN_TUNE_CPU_KERNEL=numpy).")
        self._lib = lib
        self.isa = ISAS[_resolve_isa(isa) - 1]
        if os.environ.get("BNN_TUNE_CPU_POOL"):
            _check_pool(os.environ["BNN_TUNE_CPU_POOL"].lower(), "BNN_TUNE_CPU_POOL")
        self._isa = ISAS.index(self.isa) + 1
        if threads is not None and threads < 1:
            raise ValueError(f"`threads` must be >= 1, but got threads={threads}.")
        self.threads = threads or default_threads()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise ValueError(f"`input_shape` must be (C, H, W) or (F,), but got {input_shape}.")
        self.input_shape = shape
        if not layers:
            raise ValueError("A BinaryChain needs at least one layer.")
        c, h, w = (shape[0], 1, 1) if len(shape) == 1 else shape
        self._scale: np.ndarray | None = None
        self._shift: np.ndarray | None = None
        if input_scale is not None or input_shift is not None:
            shapes = [None if v is None else np.shape(v) for v in (input_scale, input_shift)]
            if shapes != [(c,), (c,)]:
                raise ValueError(f"`input_scale` and `input_shift` must both have shape ({c},), but got "
                                 f"{shapes[0]} and {shapes[1]}.")
            self._scale = np.ascontiguousarray(input_scale, dtype=np.float64)
            self._shift = np.ascontiguousarray(input_shift, dtype=np.float64)
        self._steps: list[_Step] = []
        cur = _Map(c, h, w, len(shape) == 1)
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            cur = self._plan(layer, cur, last, i)
        if isinstance(self._steps[-1], _FlattenStep):
            raise ValueError("A BinaryChain cannot end with a flatten; flatten the returned bits instead.")
        self.output_map = cur
        last_step = self._steps[-1]
        self._int_out = isinstance(last_step, _ConvStep) and last_step.threshold_popcount is None
        self._buffers: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()  # the buffers are shared; ctypes drops the GIL during the C calls

    # ------------------------------------------------------------------ planning
    def _plan(self, layer: ChainLayer, cur: _Map, last: bool, i: int) -> _Map:
        kind = layer.kind
        if kind == "flatten":
            if i == 0:
                raise ValueError("A BinaryChain cannot start with a flatten; pass the input as [N, F] instead.")
            self._steps.append(_FlattenStep())
            return _Map(cur.c, cur.h, cur.w, True)
        if kind == "maxpool":
            prev = self._steps[-1] if self._steps else None
            if not isinstance(prev, _ConvStep) or prev.threshold_popcount is None:
                raise ValueError(f"layer {i}: a bit max-pool must follow a thresholded binary conv.")
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
            ho, wo = (cur.h + 2 * ph - kh) // sh + 1, (cur.w + 2 * pw - kw) // sw + 1
            and_bits = np.zeros(_channel_words(cur.c) * 32, dtype=bool)
            if layer.and_channels is not None:
                if np.shape(layer.and_channels) != (cur.c,):
                    raise ValueError(f"layer {i}: `and_channels` must have shape ({cur.c},), but got "
                                     f"{np.shape(layer.and_channels)}.")
                and_bits[: cur.c] = np.asarray(layer.and_channels, dtype=bool)
            self._steps.append(_PoolStep(and_mask=pack_bits(and_bits, tile=32),
                                         args=(cur.h, cur.w, _channel_words(cur.c), kh, kw, sh, sw, ph, pw, ho, wo),
                                         input_map=cur))
            return _Map(cur.c, ho, wo, False)
        if kind not in ("conv", "linear"):
            raise ValueError(f"layer {i}: unknown kind {kind!r}; use 'conv', 'linear', 'maxpool' or 'flatten'.")
        wbits = np.asarray(layer.weight)
        if wbits.dtype != bool:
            raise ValueError(f"layer {i}: `weight` must be a bool array (True = +1), but got dtype {wbits.dtype}.")
        o = wbits.shape[0]
        words_in = _channel_words(cur.c)
        if kind == "conv":
            if cur.flat:
                raise ValueError(f"layer {i}: a conv cannot follow a flatten.")
            if wbits.ndim != 4 or wbits.shape[3] != cur.c:
                raise ValueError(f"layer {i}: conv weight must be [O, kh, kw, {cur.c}] for a {cur.c}-channel "
                                 f"input, but got shape {wbits.shape}.")
            kh, kw = wbits.shape[1:3]
            (sh, sw), (ph, pw) = layer.stride, layer.padding
            if ph != pw:
                raise ValueError(f"layer {i}: the engine pads both axes alike, but got padding={layer.padding}.")
            ho, wo = (cur.h + 2 * ph - kh) // sh + 1, (cur.w + 2 * pw - kw) // sw + 1
            if ho < 1 or wo < 1:
                raise ValueError(f"layer {i}: kernel {kh}x{kw} does not fit a {cur.h}x{cur.w} input.")
            if layer.pad_value not in (1.0, -1.0):
                raise ValueError(f"layer {i}: `pad_value` must be +1 or -1, but got {layer.pad_value}.")
            bits4 = np.zeros((o, kh, kw, words_in * 32), dtype=bool)
            bits4[..., : cur.c] = wbits
            k = kh * kw * cur.c
            geo_in = (cur.h + 2 * ph, cur.w + 2 * ph, words_in, ho, wo, kh, kw, sh, sw)
            border, pad_one = ph, layer.pad_value > 0
            out = _Map(o, ho, wo, False)
        else:
            f = cur.c * cur.h * cur.w
            if wbits.ndim != 2 or wbits.shape[1] != f:
                raise ValueError(f"layer {i}: linear weight must be [O, {f}] for a {(cur.c, cur.h, cur.w)} input, "
                                 f"but got shape {wbits.shape}.")
            # NCHW-flatten columns -> the packed NHWC order (h, w, c padded to words)
            b = wbits.reshape(o, cur.c, cur.h, cur.w).transpose(0, 2, 3, 1)
            bits4 = np.zeros((o, cur.h, cur.w, words_in * 32), dtype=bool)
            bits4[..., : cur.c] = b
            bits4 = bits4.reshape(o, 1, 1, -1)
            k = f
            geo_in = (1, 1, cur.h * cur.w * words_in, 1, 1, 1, 1, 1, 1)
            border, pad_one = 0, False
            out = _Map(o, 1, 1, True)
        weights_packed, blocks = _engine_weight(bits4)
        threshold_popcount = None
        if layer.threshold is not None:
            thr = np.asarray(layer.threshold).astype(np.int64)
            if thr.shape != (o,):
                raise ValueError(f"layer {i}: `threshold` must have shape ({o},), but got {thr.shape}.")
            threshold_popcount = np.full(blocks * 16, -1, dtype=np.int32)
            threshold_popcount[:o] = np.clip((k - thr) // 2, -1, k)  # y >= thr  <=>  popcount <= (K - thr) / 2
        elif not last:
            raise ValueError(f"layer {i}: only the last binary layer may go without a threshold (integer output).")
        self._steps.append(_ConvStep(weights_packed=weights_packed, blocks=blocks, k=k, out_channels=o,
                                     threshold_popcount=threshold_popcount, input_geometry=geo_in, input_map=cur,
                                     border=border, pad_one=pad_one))
        return out

    # ------------------------------------------------------------------ buffers
    def _alloc(self, n: int) -> list[np.ndarray]:
        """Input buffer of every step (with its border) and the chain's output buffer."""
        bufs: list[np.ndarray] = []
        for st in self._steps:
            if isinstance(st, _FlattenStep):
                bufs.append(bufs[-1])  # never read: the step after a flatten reads its own buffer
                continue
            m = st.input_map
            b = st.border
            buf = np.zeros((n, m.h + 2 * b, m.w + 2 * b, _channel_words(m.c)), dtype=np.uint32)
            if b and isinstance(st, _ConvStep) and st.pad_one:
                buf[...] = pack_bits(np.arange(_channel_words(m.c) * 32) < m.c, tile=32)  # valid channel bits set
            bufs.append(buf)
        o = self.output_map
        if self._int_out:
            bufs.append(np.zeros((n * o.h * o.w, o.c), dtype=np.int32))
        else:
            bufs.append(np.zeros((n, o.h, o.w, _channel_words(o.c)), dtype=np.uint32))
        return bufs

    def _next_input(self, bufs: list[np.ndarray], i: int) -> tuple[np.ndarray, int]:
        """Buffer and border the output of step ``i`` is written to."""
        j = i + 1
        while j < len(self._steps) and isinstance(self._steps[j], _FlattenStep):
            j += 1
        if j >= len(self._steps):
            return bufs[-1], 0
        return bufs[j], self._steps[j].border

    # ------------------------------------------------------------------ run
    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the chain on a float32 (signed here) or bool batch of shape ``[N, *input_shape]``."""
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"input must have shape [N, {', '.join(map(str, self.input_shape))}], "
                             f"but got {x.shape}.")
        if x.dtype not in (np.float32, np.bool_):
            raise ValueError(f"input must be float32 or bool, but got dtype {x.dtype}.")
        n = x.shape[0]
        if n == 0:
            raise ValueError("input must hold at least one sample, but got N=0.")
        if x.dtype == np.bool_ and self._scale is not None:
            raise ValueError("input must be float32 when the chain starts with a batch-norm sign, but got bool.")
        with self._lock:
            return self._run(np.ascontiguousarray(x), n)

    def _run(self, x: np.ndarray, n: int) -> np.ndarray:
        bufs = self._buffers.get(n)
        if bufs is None:
            bufs = self._buffers[n] = self._alloc(n)
        lib = self._lib
        first, b0 = self._steps[0], bufs[0]
        assert not isinstance(first, _FlattenStep)  # refused in __init__
        m0 = first.input_map
        dims = (n, m0.c, m0.h, m0.w, b0.shape[1], b0.shape[2], b0.shape[3], first.border)
        sc = None if self._scale is None else self._scale.ctypes.data
        sf = None if self._shift is None else self._shift.ctypes.data
        if x.dtype == np.bool_:
            lib.bnn_engine_pack(None, x.ctypes.data, None, None, b0.ctypes.data, *dims)
        else:
            lib.bnn_engine_pack(x.ctypes.data, None, sc, sf, b0.ctypes.data, *dims)
        for i in range(len(self._steps)):
            self._step(i, bufs, n)
        return self._output(bufs[-1], n)

    def _step(self, i: int, bufs: list[np.ndarray], n: int) -> None:
        st = self._steps[i]
        if isinstance(st, _FlattenStep):
            return
        src = bufs[i]
        dst, bo = self._next_input(bufs, i)
        if isinstance(st, _PoolStep):
            self._lib.bnn_engine_maxpool(src.ctypes.data, st.and_mask.ctypes.data, dst.ctypes.data, n, *st.args,
                                         dst.shape[1], dst.shape[2], bo)
            return
        geo = st.geometry_by_batch.get(n)
        if geo is None:
            out_geo = ((0, 0, 0, 0) if st.threshold_popcount is None
                       else (dst.shape[1], dst.shape[2], dst.shape[3], bo))
            geo = st.geometry_by_batch[n] = np.array((n, *st.input_geometry, st.blocks, st.k, st.out_channels,
                                                      *out_geo), dtype=np.int32)
        thr = None if st.threshold_popcount is None else st.threshold_popcount.ctypes.data
        self._lib.bnn_engine_conv(src.ctypes.data, st.weights_packed.ctypes.data, thr, dst.ctypes.data,
                                  geo.ctypes.data, self._isa, self.threads)

    def layer_call(self, i: int, n: int) -> Any:
        """A function running step ``i`` alone on the batch-``n`` buffers (for per-layer timing: the layer's
        input is whatever the buffers hold, e.g. from a previous :meth:`run`)."""
        if not 0 <= i < len(self._steps):
            raise ValueError(f"`i` must be in [0, {len(self._steps)}), but got i={i}.")
        bufs = self._buffers.get(n)
        if bufs is None:
            bufs = self._buffers[n] = self._alloc(n)
        return lambda: self._step(i, bufs, n)

    def _output(self, buf: np.ndarray, n: int) -> np.ndarray:
        o = self.output_map
        if self._int_out:
            y = buf.reshape(n, o.h, o.w, o.c).transpose(0, 3, 1, 2).copy()  # never a view of the buffer
            return y.reshape((n, o.c) if o.flat else (n, o.c, o.h, o.w))
        bits = np.empty((n, o.c, o.h, o.w), dtype=np.uint8)
        self._lib.bnn_engine_unpack(buf.ctypes.data, bits.ctypes.data, n, o.c, o.h, o.w, o.h, o.w, buf.shape[3], 0)
        bits = bits.view(bool)
        return bits.reshape(n, o.c) if o.flat else bits
