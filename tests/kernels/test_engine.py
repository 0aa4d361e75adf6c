"""Packed CPU engine (csrc/bconv_cpu.c) against the float oracle, on every instruction-set path."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnn_tune.kernels import BinaryChain, ChainLayer, _engine, available_isas, engine_available
from bnn_tune.kernels._engine import (
    DEFAULT_POOL,
    POOLS,
    set_min_parallel_work,
    set_thread_pool,
    thread_pool,
)

# skip only where no kernel can be built (no C compiler, or the numpy path forced); a kernel that fails to build or
# load on a machine with a compiler is a failure, not a skip
_NO_C = (shutil.which(os.environ.get("CC") or "cc") is None and shutil.which("gcc") is None) or \
    os.environ.get("BNN_TUNE_CPU_KERNEL", "").lower() == "numpy"
pytestmark = pytest.mark.skipif(_NO_C, reason="no C compiler for the packed engine")
ISAS = available_isas() if engine_available() else []


def test_the_engine_builds_here_with_every_isa_of_this_cpu():
    assert engine_available() and ISAS[0] == "portable"


@pytest.fixture(autouse=True)
def _threads_on_small_layers():
    """Split even these tiny layers over the threads (the default keeps work under ~0.1 ms on one)."""
    set_min_parallel_work(0)
    yield
    set_min_parallel_work(1 << 17)


def _pm1(b) -> torch.Tensor:
    return torch.from_numpy(np.where(b, 1.0, -1.0))


def _conv_ref(xb, w, stride, pad, pad_value):
    """conv2d of the +-1 tensors (float64, exact), input padded with pad_value; w is [O, kh, kw, C]."""
    x = F.pad(_pm1(xb), (pad, pad, pad, pad), value=pad_value)
    return F.conv2d(x, _pm1(w).permute(0, 3, 1, 2), None, stride).round().long().numpy()


def _thresholds(y, rng):
    """Thresholds on the boundary: y itself at some pixel (>= holds there), y + 1 (fails), extremes."""
    o = y.shape[1]
    flat = y.transpose(1, 0, 2, 3).reshape(o, -1) if y.ndim == 4 else y.T
    pick = flat[np.arange(o), rng.integers(0, flat.shape[1], o)]
    thr = pick + rng.integers(0, 2, o)
    thr[0] = flat.min() - 5  # always 1
    if o > 1:
        thr[1] = flat.max() + 5  # always 0
    return thr


CONVS = [  # n, c, h, w, o, k, stride, pad, pad_value
    (2, 5, 7, 6, 20, 3, 1, 1, 1.0),
    (3, 64, 6, 6, 64, 3, 1, 1, -1.0),
    (1, 40, 9, 9, 70, 3, 2, 1, 1.0),
    (5, 33, 4, 3, 17, 1, 1, 0, 1.0),
    (2, 96, 5, 5, 130, 3, 1, 1, 1.0),
    (1, 3, 2, 2, 1, 3, 1, 1, -1.0),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CONVS)
def test_conv_int_and_threshold_match_oracle(isa, case):
    n, c, h, w, o, k, s, p, pv = case
    rng = np.random.default_rng(sum(case[:6]))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wb = rng.random((o, k, k, c)) < 0.5
    ref = _conv_ref(x >= 0, wb, s, p, pv)
    layer = dict(stride=(s, s), padding=(p, p), pad_value=pv)
    y = BinaryChain((c, h, w), [ChainLayer("conv", wb, **layer)], threads=2, isa=isa).run(x)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, ref)
    thr = _thresholds(ref, rng)
    bits = BinaryChain((c, h, w), [ChainLayer("conv", wb, threshold=thr, **layer)], threads=2, isa=isa).run(x >= 0)
    assert bits.dtype == bool
    np.testing.assert_array_equal(bits, ref >= thr[None, :, None, None])


def _reference_chain(x, convs, pools, lin_w, lin_thr, scale, shift):
    """The same chain step by step in float64 torch: BN-sign, conv + threshold, bit pool, flatten, linear."""
    xt = torch.from_numpy(x).double()
    b = (xt * torch.from_numpy(scale)[None, :, None, None] + torch.from_numpy(shift)[None, :, None, None] >= 0).numpy()
    for (w, thr, pv), (and_ch) in zip(convs, pools):
        y = _conv_ref(b, w, 1, 1, pv)
        b = y >= thr[None, :, None, None]
        if and_ch is not None:
            s = torch.where(torch.from_numpy(and_ch), -1.0, 1.0).double()[None, :, None, None]
            b = (F.max_pool2d(_pm1(b) * s, 2) * s).numpy() > 0
    flat = _pm1(b.reshape(b.shape[0], -1)).numpy()
    y = np.rint(flat @ np.where(lin_w, 1.0, -1.0).T).astype(np.int64)
    return y if lin_thr is None else y >= lin_thr


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("final_threshold", [True, False])
def test_whole_chain_matches_step_by_step(isa, final_threshold):
    """BN-sign input, two convs (mixed pad values), bit max-pool with AND channels, flatten, linear."""
    rng = np.random.default_rng(7)
    n, c, h, w = 3, 6, 8, 6
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    scale, shift = rng.standard_normal(c), rng.standard_normal(c) * 0.3
    w1, w2 = rng.random((40, 3, 3, c)) < 0.5, rng.random((36, 3, 3, 40)) < 0.5
    t1, t2 = rng.integers(-8, 8, 40), rng.integers(-20, 20, 36)
    and1, and2 = rng.random(40) < 0.4, rng.random(36) < 0.4
    lw = rng.random((21, 36 * 2 * 1)) < 0.5
    lt = rng.integers(-6, 6, 21) if final_threshold else None
    layers = [ChainLayer("conv", w1, threshold=t1, padding=(1, 1), pad_value=-1.0),
              ChainLayer("maxpool", kernel=(2, 2), stride=(2, 2), and_channels=and1),
              ChainLayer("conv", w2, threshold=t2, padding=(1, 1), pad_value=1.0),
              ChainLayer("maxpool", kernel=(2, 2), stride=(2, 2), and_channels=and2),
              ChainLayer("flatten"), ChainLayer("linear", lw, threshold=lt)]
    got = BinaryChain((c, h, w), layers, input_scale=scale, input_shift=shift, threads=2, isa=isa).run(x)
    ref = _reference_chain(x, [(w1, t1, -1.0), (w2, t2, 1.0)], [and1, and2], lw, lt, scale, shift)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("isa", ISAS)
def test_threads_and_channel_split_agree(isa):
    """Batch-1 linear with many output blocks splits the channels, larger batches the pixels: same bits."""
    rng = np.random.default_rng(3)
    w = rng.random((300, 1000)) < 0.5
    thr = rng.integers(-30, 30, 300)
    for n in (1, 2, 37):
        x = rng.standard_normal((n, 1000)).astype(np.float32)
        outs = [BinaryChain((1000,), [ChainLayer("linear", w, threshold=thr)], threads=t, isa=isa).run(x)
                for t in (1, 3, 8)]
        ref = np.rint(_pm1(x >= 0).numpy() @ _pm1(w).numpy().T) >= thr
        for o in outs:
            np.testing.assert_array_equal(o, ref)


@pytest.fixture
def pool_restored():
    yield
    set_thread_pool(DEFAULT_POOL)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("isa", ISAS)
def test_thread_pools_split_exactly(isa, pool, pool_restored):
    """threads=2 and 3 on each pool, sometimes right after torch's own parallel calls, on inputs that
    alternate (a share left undone, or read before it is finished, would leave the other input's result
    in the buffers): identical to the oracle, with helper threads provably running some of the tasks."""
    expect = pool if pool != "openmp" or _torch_backend() == "OpenMP" else "pthreads"
    assert set_thread_pool(pool) == expect
    lib = _engine._lib()
    rng = np.random.default_rng(11)
    n, c, h, w, o = 16, 64, 16, 15, 48
    xs = [rng.standard_normal((n, c, h, w)).astype(np.float32) for _ in range(2)]
    wb = rng.random((o, 3, 3, c)) < 0.5
    refs = [_conv_ref(x >= 0, wb, 1, 1, 1.0) for x in xs]
    thr = _thresholds(refs[0], rng)
    refbits = [r >= thr[:, None, None] for r in refs]
    big = torch.randn(256, 256)
    for t in (3, 2):  # 2 after 3: a persistent pool holds an extra worker that must stay out
        chain = BinaryChain((c, h, w), [ChainLayer("conv", wb, padding=(1, 1))], threads=t, isa=isa)
        bits = BinaryChain((c, h, w), [ChainLayer("conv", wb, threshold=thr, padding=(1, 1))], threads=t, isa=isa)
        helped = lib.bnn_engine_helper_tasks()
        for i in range(400):  # until a helper thread has run tasks (a loaded machine may delay them)
            if i % 3 == 0:
                big @ big  # torch's workers busy / spinning right before the engine call
            np.testing.assert_array_equal(chain.run(xs[i % 2]), refs[i % 2])
            np.testing.assert_array_equal(bits.run(xs[i % 2] >= 0), refbits[i % 2])
            if i >= 6 and lib.bnn_engine_helper_tasks() > helped:
                break
        assert lib.bnn_engine_helper_tasks() > helped, f"no helper thread ran a task in {i + 1} calls"


def _torch_backend() -> str:
    info = torch.__config__.parallel_info()
    return "OpenMP" if "parallel backend: OpenMP" in info else "other"


@pytest.mark.skipif(_torch_backend() != "OpenMP", reason="torch does not run on OpenMP here")
def test_openmp_pool_is_the_runtime_torch_loaded(pool_restored):
    """The engine's GOMP_parallel lies inside the libgomp torch mapped (not a second copy of the runtime)."""
    from bnn_tune.kernels._engine import _torch_gomp_parallel

    assert set_thread_pool("openmp") == "openmp" and thread_pool() == "openmp"
    addr = _torch_gomp_parallel()
    torch_lib = str(Path(torch.__file__).parent / "lib")
    spans = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            # an OpenMP runtime's file (libgomp*, libomp*, libiomp5*), not any path containing "omp"
            # (scipy's _decomp_update, pyarrow's _compute are loaded in a full test run)
            if len(parts) == 6 and "x" in parts[1] and re.match(r"lib(?:g|i)?omp\d*(?:[-.]|$)", Path(parts[5]).name):
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                spans.append((parts[5], lo, hi))
    owners = [path for path, lo, hi in spans if lo <= addr < hi]
    assert len(owners) == 1, spans
    if any(path.startswith(torch_lib) for path, _, _ in spans):  # a wheel with its bundled runtime
        assert owners[0].startswith(torch_lib)
    else:  # torch on the system's runtime: not another package's vendored copy (scikit-learn ships one)
        assert ".libs/" not in owners[0], owners
    assert set_thread_pool("pthreads") == "pthreads" and thread_pool() == "pthreads"


def _forked_child_run(chain, x, ref, conn):
    conn.send((thread_pool(), bool(np.array_equal(chain.run(x), ref))))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
@pytest.mark.parametrize("pool", ["openmp", "persistent"])
def test_forked_child_runs_on_pthreads(pool, pool_restored):
    """A forked child has no threads behind the parent's OpenMP team (a GOMP call there hangs) nor the
    parent's pool workers: the engine switches the child to pthreads."""
    import multiprocessing as mp

    set_thread_pool(pool)
    rng = np.random.default_rng(12)
    wb = rng.random((32, 3, 3, 32)) < 0.5
    chain = BinaryChain((32, 8, 8), [ChainLayer("conv", wb, padding=(1, 1))], threads=2)
    x = rng.standard_normal((4, 32, 8, 8)).astype(np.float32)
    ref = chain.run(x)  # the parent's team / workers exist now
    recv, send = mp.get_context("fork").Pipe(duplex=False)
    proc = mp.get_context("fork").Process(target=_forked_child_run, args=(chain, x, ref, send))
    proc.start()
    got = recv.poll(60) and recv.recv()
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    assert got == ("pthreads", True)


def test_bad_pool_is_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"pool='tbb'.*one of \['pthreads', 'persistent', 'openmp'\]"):
        set_thread_pool("tbb")
    monkeypatch.setenv("BNN_TUNE_CPU_POOL", "tbb")
    with pytest.raises(ValueError, match=r"BNN_TUNE_CPU_POOL='tbb'"):
        BinaryChain((4, 2, 2), [ChainLayer("conv", np.ones((4, 1, 1, 4), dtype=bool))])


def test_buffers_reused_per_batch_size():
    rng = np.random.default_rng(0)
    w = rng.random((16, 3, 3, 8)) < 0.5
    chain = BinaryChain((8, 5, 5), [ChainLayer("conv", w, padding=(1, 1))], threads=1)
    xa, xb = (rng.standard_normal((2, 8, 5, 5)).astype(np.float32) for _ in range(2))
    ya = chain.run(xa).copy()
    bufs = chain._buffers[2]
    yb = chain.run(xb)
    assert chain._buffers[2] is bufs
    np.testing.assert_array_equal(yb, _conv_ref(xb >= 0, w, 1, 1, 1.0))
    np.testing.assert_array_equal(chain.run(xa), ya)  # nothing left over from the previous batch
    assert chain.run(xa[:1]).shape == (1, 16, 5, 5)


def test_outputs_are_not_views_of_the_buffers():
    """A later run (or another thread's) must not change an earlier result: int and bit outputs."""
    rng = np.random.default_rng(4)
    w = rng.random((24, 50)) < 0.5
    xa, xb = (rng.standard_normal((3, 50)).astype(np.float32) for _ in range(2))
    for thr in (None, rng.integers(-5, 5, 24)):
        chain = BinaryChain((50,), [ChainLayer("linear", w, threshold=thr)], threads=1)
        ya = chain.run(xa)
        ref = ya.copy()
        chain.run(xb)
        np.testing.assert_array_equal(ya, ref)


@pytest.mark.parametrize("pool", POOLS)
def test_concurrent_runs_agree(pool, pool_restored):
    """One chain shared by 4 Python threads, and two chains at once (a busy persistent pool runs the
    second caller's tasks on that caller)."""
    from concurrent.futures import ThreadPoolExecutor

    set_thread_pool(pool)
    rng = np.random.default_rng(5)
    w = rng.random((32, 3, 3, 16)) < 0.5
    chains = [BinaryChain((16, 12, 12), [ChainLayer("conv", w, padding=(1, 1))], threads=2) for _ in range(2)]
    xs = [rng.standard_normal((4, 16, 12, 12)).astype(np.float32) for _ in range(8)]
    refs = [_conv_ref(x >= 0, w, 1, 1, 1.0) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda ix: chains[ix[0] % 2].run(ix[1]), enumerate(xs * 4)))
    for i, y in enumerate(outs):
        np.testing.assert_array_equal(y, refs[i % len(xs)])


def test_env_var_forces_isa(monkeypatch):
    w = np.ones((4, 1, 1, 4), dtype=bool)
    for isa in ISAS:
        monkeypatch.setenv("BNN_TUNE_CPU_ISA", isa)
        assert BinaryChain((4, 2, 2), [ChainLayer("conv", w)]).isa == isa
    monkeypatch.setenv("BNN_TUNE_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match=r"BNN_TUNE_CPU_ISA='sse9'.*one of"):
        BinaryChain((4, 2, 2), [ChainLayer("conv", w)])
    monkeypatch.delenv("BNN_TUNE_CPU_ISA")
    assert BinaryChain((4, 2, 2), [ChainLayer("conv", w)]).isa == ISAS[-1]


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    w = rng.random((16, 3, 3, 8)) < 0.5
    chain = BinaryChain((8, 5, 5), [ChainLayer("conv", w, padding=(1, 1))], threads=1)
    with pytest.raises(ValueError, match=r"shape \[N, 8, 5, 5\], but got \(2, 8, 5, 4\)"):
        chain.run(np.zeros((2, 8, 5, 4), np.float32))
    with pytest.raises(ValueError, match="float32 or bool, but got dtype float64"):
        chain.run(np.zeros((2, 8, 5, 5)))
    with pytest.raises(ValueError, match=r"\[O, kh, kw, 8\].*\(16, 3, 3, 7\)"):
        BinaryChain((8, 5, 5), [ChainLayer("conv", w[..., :7])])
    with pytest.raises(ValueError, match="bool array"):
        BinaryChain((8, 5, 5), [ChainLayer("conv", w.astype(np.uint8))])
    with pytest.raises(ValueError, match=r"threshold` must have shape \(16,\)"):
        BinaryChain((8, 5, 5), [ChainLayer("conv", w, threshold=np.zeros(15))])
    with pytest.raises(ValueError, match="only the last binary layer"):
        BinaryChain((8, 5, 5), [ChainLayer("conv", w), ChainLayer("conv", w)])
    with pytest.raises(ValueError, match=r"linear weight must be \[O, 400\]"):
        BinaryChain((8, 5, 5), [ChainLayer("conv", w, threshold=np.zeros(16), padding=(1, 1)), ChainLayer("flatten"),
                                ChainLayer("linear", np.ones((3, 10), bool))])
    with pytest.raises(ValueError, match="threads"):
        BinaryChain((8, 5, 5), [ChainLayer("conv", w)], threads=0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("f", [1024, 1025, 2049])
def test_saturated_counts_all_plus_one_against_all_minus_one(isa, f):
    """Every popcount lane at its maximum: all +1 inputs against all -1 weights (y = -K), K >= 1024, odd K and K
    not a multiple of the word or vector width (AVX2 widens its byte counters every 31 words: 32 words of all-ones
    XORs would overflow them). Thresholds stand on the edge: y >= -K holds, y >= -K + 1 does not."""
    ones = np.ones((3, f), dtype=np.float32)
    w = np.zeros((20, f), dtype=bool)
    w[10:] = True  # the last 10 rows agree with the input everywhere: y = +K
    want = np.where(np.arange(20) < 10, -f, f)[None].repeat(3, 0)
    for t in (1, 2):
        y = BinaryChain((f,), [ChainLayer("linear", w)], threads=t, isa=isa).run(ones)
        np.testing.assert_array_equal(y, want)
        thr = np.where(np.arange(20) % 2 == 0, want[0], want[0] + 1)  # at the value, one past it
        bits = BinaryChain((f,), [ChainLayer("linear", w, threshold=thr)], threads=t, isa=isa).run(ones)
        np.testing.assert_array_equal(bits, (want >= thr[None]))
        np.testing.assert_array_equal(bits[0], np.arange(20) % 2 == 0)


@pytest.mark.parametrize("isa", ISAS)
def test_saturated_conv_counts_over_kernel_rows(isa):
    """A 3x3 conv over 130 channels (K = 1170 over 3 kernel rows of 15 words): all +1 against all -1, with +1
    and -1 padding at the border, equals the oracle (the borders change how many terms agree)."""
    c, o = 130, 17
    x = np.ones((2, c, 4, 5), dtype=np.float32)
    w = np.zeros((o, 3, 3, c), dtype=bool)
    w[-1] = True
    for pv in (1.0, -1.0):
        ref = _conv_ref(x >= 0, w, 1, 1, pv)
        assert ref.min() == -3 * 3 * c if pv > 0 else ref.max() == 3 * 3 * c
        y = BinaryChain((c, 4, 5), [ChainLayer("conv", w, padding=(1, 1), pad_value=pv)], threads=2, isa=isa).run(x)
        np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("isa", ISAS)
def test_non_contiguous_and_channels_last_inputs(isa):
    """A channels-last map (an NCHW view of NHWC memory, what a torch channels_last tensor gives numpy) and a
    strided slice give the same result as their contiguous copies."""
    rng = np.random.default_rng(9)
    nhwc = rng.standard_normal((3, 6, 7, 40)).astype(np.float32)
    x = nhwc.transpose(0, 3, 1, 2)
    assert not x.flags.c_contiguous
    w = rng.random((24, 3, 3, 40)) < 0.5
    chain = BinaryChain((40, 6, 7), [ChainLayer("conv", w, padding=(1, 1))], threads=2, isa=isa)
    np.testing.assert_array_equal(chain.run(x), _conv_ref(x >= 0, w, 1, 1, 1.0))
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(memory_format=torch.channels_last)
    np.testing.assert_array_equal(chain.run(xt.numpy()), chain.run(np.ascontiguousarray(x)))
    strided = rng.standard_normal((6, 40, 6, 7)).astype(np.float32)[::2]
    np.testing.assert_array_equal(chain.run(strided), _conv_ref(strided >= 0, w, 1, 1, 1.0))


@pytest.mark.parametrize("pad_value", [-1.0, 1.0])
@pytest.mark.parametrize("width", [16, 17, 35])
def test_packing_rows_of_whole_and_partial_16_pixel_blocks(width, pad_value):
    """The input is signed and packed 16 pixels of a row at a time (a whole block, then the rest): rows of exactly
    16, 16 + 1 and 2 x 16 + 3 pixels, over 40 channels (two words, the second partly padding), from float32, from
    bool and through a batch-norm sign, all equal to the oracle."""
    rng = np.random.default_rng(width)
    c, h = 40, 3
    x = rng.standard_normal((2, c, h, width)).astype(np.float32)
    x[0, :, 0, :5] = 0.0  # x >= 0 holds at zero
    x[1, :, 1, :3] = -0.0
    w = rng.random((18, 3, 3, c)) < 0.5
    chain = BinaryChain((c, h, width), [ChainLayer("conv", w, padding=(1, 1), pad_value=pad_value)], threads=1)
    np.testing.assert_array_equal(chain.run(x), _conv_ref(x >= 0, w, 1, 1, pad_value))
    np.testing.assert_array_equal(chain.run(x < 0), _conv_ref(x < 0, w, 1, 1, pad_value))
    scale, shift = rng.standard_normal(c), rng.standard_normal(c) * 0.5
    bn = BinaryChain((c, h, width), [ChainLayer("conv", w, padding=(1, 1), pad_value=pad_value)], threads=1,
                     input_scale=scale, input_shift=shift)
    bits = x.astype(np.float64) * scale[None, :, None, None] + shift[None, :, None, None] >= 0
    np.testing.assert_array_equal(bn.run(x), _conv_ref(bits, w, 1, 1, pad_value))


@pytest.mark.parametrize("isa", ISAS)
def test_each_isa_runs_its_own_path(isa, monkeypatch):
    """Every path gives identical results, so only the engine's per-path task counts show which one ran: a chain
    built with ``isa=`` (or ``$BNN_TUNE_CPU_ISA``) runs all its tasks on that path and none on another."""
    from bnn_tune.kernels._engine import isa_task_counts

    rng = np.random.default_rng(6)
    w = rng.random((40, 3, 3, 8)) < 0.5
    x = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    for how in ("arg", "env"):
        if how == "env":
            monkeypatch.setenv("BNN_TUNE_CPU_ISA", isa)
        chain = BinaryChain((8, 6, 6), [ChainLayer("conv", w, padding=(1, 1))], threads=2,
                            isa=isa if how == "arg" else None)
        before = isa_task_counts()
        np.testing.assert_array_equal(chain.run(x), _conv_ref(x >= 0, w, 1, 1, 1.0))
        after = isa_task_counts()
        ran = {k: after[k] - before[k] for k in after}
        assert ran[isa] >= 1 and all(v == 0 for k, v in ran.items() if k != isa), (how, ran)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("hw", [(5, 5), (6, 7)])
def test_padded_bit_maxpool_windows_over_the_edges(isa, hw):
    """A 3x3 stride-2 bit max-pool with padding 1 (windows that hang over every edge: only the pixels inside
    count, as torch's max_pool2d pads with -inf), AND channels for negative scales, then a padded conv reading the
    pooled map's border: equal to the step-by-step oracle."""
    rng = np.random.default_rng(hw[1])
    c, (h, w_) = 36, hw
    x = rng.standard_normal((2, c, h, w_)).astype(np.float32)
    w1, w2 = rng.random((40, 3, 3, c)) < 0.5, rng.random((20, 3, 3, 40)) < 0.5
    t1 = rng.integers(-6, 6, 40)
    and1 = rng.random(40) < 0.5
    layers = [ChainLayer("conv", w1, threshold=t1, padding=(1, 1)),
              ChainLayer("maxpool", kernel=(3, 3), stride=(2, 2), padding=(1, 1), and_channels=and1),
              ChainLayer("conv", w2, padding=(1, 1), pad_value=1.0)]
    got = BinaryChain((c, h, w_), layers, threads=2, isa=isa).run(x)
    b = _conv_ref(x >= 0, w1, 1, 1, 1.0) >= t1[None, :, None, None]
    s = torch.where(torch.from_numpy(and1), -1.0, 1.0).double()[None, :, None, None]
    pooled = (F.max_pool2d(_pm1(b) * s, 3, 2, 1) * s).numpy() > 0
    np.testing.assert_array_equal(got, _conv_ref(pooled, w2, 1, 1, 1.0))


def test_set_pool_returns_the_pool_in_use(pool_restored):
    """The C entry answers with the pool it now uses: OpenMP without a GOMP entry is unavailable (pthreads, 0), and
    a GOMP entry handed with another kind does not switch to OpenMP."""
    from bnn_tune.kernels._engine import _torch_gomp_parallel

    lib = _engine._lib()
    assert lib.bnn_engine_set_pool(2, None) == 0 and thread_pool() == "pthreads"
    gomp = _torch_gomp_parallel()
    if gomp is not None:
        assert lib.bnn_engine_set_pool(1, gomp) == 1 and thread_pool() == "persistent"
        assert lib.bnn_engine_set_pool(0, gomp) == 0 and thread_pool() == "pthreads"
        assert lib.bnn_engine_set_pool(2, gomp) == 2 and thread_pool() == "openmp"


def test_small_layers_stay_on_one_task_below_min_parallel_work(pool_restored):
    """Below ``set_min_parallel_work`` steps a layer is one task on the caller's thread; at 0 the same layer is cut
    into TASKS_PER_THREAD (4) tasks per thread."""
    from bnn_tune.kernels._engine import isa_task_counts

    set_thread_pool("pthreads")
    rng = np.random.default_rng(13)
    w = rng.random((16, 3, 3, 8)) < 0.5
    x = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
    chain = BinaryChain((8, 8, 8), [ChainLayer("conv", w, padding=(1, 1))], threads=2, isa=ISAS[-1])
    for work, tasks in ((1 << 40, 1), (0, 8)):
        set_min_parallel_work(work)
        before = isa_task_counts()[ISAS[-1]]
        np.testing.assert_array_equal(chain.run(x), _conv_ref(x >= 0, w, 1, 1, 1.0))
        assert isa_task_counts()[ISAS[-1]] - before == tasks, work


def test_kernel_as_large_as_the_input_gives_one_pixel():
    """An unpadded 3x3 kernel on a 3x3 map fits exactly once (1x1 out); on 2x3 it does not fit."""
    rng = np.random.default_rng(14)
    w = rng.random((5, 3, 3, 4)) < 0.5
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    y = BinaryChain((4, 3, 3), [ChainLayer("conv", w)], threads=1).run(x)
    assert y.shape == (2, 5, 1, 1)
    np.testing.assert_array_equal(y, _conv_ref(x >= 0, w, 1, 0, 1.0))
    with pytest.raises(ValueError, match="kernel 3x3 does not fit a 2x3 input"):
        BinaryChain((4, 2, 3), [ChainLayer("conv", w)])
    with pytest.raises(ValueError, match="kernel 3x3 does not fit a 3x2 input"):
        BinaryChain((4, 3, 2), [ChainLayer("conv", w)])


@pytest.mark.parametrize("isa", ISAS)
def test_thresholds_beyond_the_reachable_range(isa):
    """y lies in [-K, K]: a threshold above K (K + 1, K + 2, K + 3, far above) never holds, even where y = K; one
    at or below -K always holds, even where y = -K."""
    f = 70
    x = np.ones((2, f), dtype=np.float32)
    w = np.zeros((8, f), dtype=bool)
    w[:4] = True  # y = +K for these rows, -K for the others
    thr = np.array([f + 1, f + 2, f + 3, f + 1000, -f, -f - 1, -f - 2, -f - 1000])
    bits = BinaryChain((f,), [ChainLayer("linear", w, threshold=thr)], threads=1, isa=isa).run(x)
    np.testing.assert_array_equal(bits, np.array([[False] * 4 + [True] * 4] * 2))


def test_layer_call_runs_one_step_on_the_run_s_buffers():
    """layer_call(i, n) times step i alone on the batch-n buffers of earlier runs (allocating them when there are
    none); i must index a step."""
    rng = np.random.default_rng(15)
    w1, w2 = rng.random((16, 3, 3, 8)) < 0.5, rng.random((12, 3, 3, 16)) < 0.5
    layers = [ChainLayer("conv", w1, threshold=rng.integers(-4, 4, 16), padding=(1, 1)),
              ChainLayer("conv", w2, padding=(1, 1))]
    chain = BinaryChain((8, 5, 5), layers, threads=1)
    x = rng.standard_normal((2, 8, 5, 5)).astype(np.float32)
    y = chain.run(x)
    bufs = chain._buffers[2]
    bufs[-1][...] = 0
    chain.layer_call(1, 2)()  # the last step again, on the bits the run left in its input buffer
    assert chain._buffers[2] is bufs
    np.testing.assert_array_equal(chain._output(bufs[-1], 2), y)
    chain.layer_call(0, 3)()  # no run with batch 3 yet: its buffers are made
    assert len(chain._buffers[3]) == len(bufs)
    for i in (-1, 2):
        with pytest.raises(ValueError, match=r"`i` must be in \[0, 2\)"):
            chain.layer_call(i, 2)


@pytest.mark.parametrize("isa", ISAS)
def test_padded_channels_stay_zero_between_layers(isa):
    """20 output channels fill two 16-channel blocks; the 12 padding channels must stay 0 bits in the next layer's
    input even where a padding channel's popcount is 0 (an all -1 input against its all-zero weight bits)."""
    rng = np.random.default_rng(16)
    x = -np.ones((2, 8, 5, 5), dtype=np.float32)
    w1, w2 = rng.random((20, 3, 3, 8)) < 0.5, rng.random((6, 3, 3, 20)) < 0.5
    t1 = rng.integers(-4, 4, 20)
    layers = [ChainLayer("conv", w1, threshold=t1, padding=(1, 1), pad_value=-1.0),
              ChainLayer("conv", w2, padding=(1, 1), pad_value=1.0)]
    got = BinaryChain((8, 5, 5), layers, threads=1, isa=isa).run(x)
    b = _conv_ref(x >= 0, w1, 1, 1, -1.0) >= t1[None, :, None, None]
    np.testing.assert_array_equal(got, _conv_ref(b, w2, 1, 1, 1.0))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("stride", [(2, 1), (1, 2)])
def test_unequal_strides(isa, stride):
    """Row and column strides are separate: (2, 1) and (1, 2) against conv2d's."""
    rng = np.random.default_rng(stride[0])
    x = rng.standard_normal((2, 8, 7, 6)).astype(np.float32)
    w = rng.random((16, 3, 3, 8)) < 0.5
    y = BinaryChain((8, 7, 6), [ChainLayer("conv", w, stride=stride, padding=(1, 1))], threads=2, isa=isa).run(x)
    xt = F.pad(_pm1(x >= 0), (1, 1, 1, 1), value=1.0)
    ref = F.conv2d(xt, _pm1(w).permute(0, 3, 1, 2), None, stride).round().long().numpy()
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kernel", [(3, 1), (1, 3), (2, 3)])
def test_non_square_kernels(isa, kernel):
    """kh and kw are separate: 3x1, 1x3 and 2x3 kernels against conv2d's."""
    rng = np.random.default_rng(sum(kernel))
    x = rng.standard_normal((2, 8, 6, 5)).astype(np.float32)
    w = rng.random((16, *kernel, 8)) < 0.5
    y = BinaryChain((8, 6, 5), [ChainLayer("conv", w)], threads=2, isa=isa).run(x)
    np.testing.assert_array_equal(y, _conv_ref(x >= 0, w, 1, 0, 1.0))
