"""The C tanh (``csrc/tanh_cpu.c``, BMD's forward weight): the correctly rounded tanh almost everywhere, the
special values of ``torch.tanh``, the same bits whatever the build flags and thread split."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from bnn_tune.kernels import _tanh
from bnn_tune.kernels._native import native_available
from bnn_tune.kernels._tanh import scaled_tanh, tanh_kernel_available

# skip only where no kernel can be built (no C compiler, or the numpy path forced); a kernel that fails to build or
# load on a machine with a compiler is a failure, not a skip
_NO_C = (shutil.which(os.environ.get("CC") or "cc") is None and shutil.which("gcc") is None) or \
    os.environ.get("BNN_TUNE_CPU_KERNEL", "").lower() == "numpy"
pytestmark = pytest.mark.skipif(_NO_C, reason="no C compiler (BMD then uses torch.tanh)")


def test_the_kernel_builds_here():
    assert tanh_kernel_available() and scaled_tanh(torch.zeros(2), 1.0) is not None


def _sample(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(-(2**31), 2**31 - 1, (n,), dtype=torch.int64, generator=g).to(torch.int32).view(torch.float32)
    return torch.cat([bits, torch.randn(n, generator=g) * 2, torch.randn(n // 4, generator=g) * 1e-3,
                      torch.linspace(-12, 12, n // 4)])


def _ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    def ordered(t):
        i = t.view(torch.int32).long()
        return torch.where(i < 0, -(2**31) - i, i)
    return (ordered(a) - ordered(b)).abs()


def test_it_is_the_float64_tanh_rounded_to_float():
    x = _sample(500_000, seed=0)
    x = x[torch.isfinite(x)]
    ref = torch.from_numpy(np.tanh(x.numpy().astype(np.float64)).astype(np.float32))
    y = scaled_tanh(x, 1.0)
    # numpy's float64 tanh is itself within an ulp of double: a double-rounding mismatch is ~1e-8 per element
    assert int((y != ref).sum()) <= 2
    assert int(_ulps(y, ref).max()) <= 1
    assert int(_ulps(y, torch.tanh(x)).max()) <= 1  # MKL's / Sleef's tanh are within an ulp as well


def test_special_values_are_torch_tanh_s():
    x = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-45, -1e-45, 1e-38, 9.0, 9.02, -20.0, 25.0, 3e38,
                      -3e38, 1e-4])
    y = scaled_tanh(x, 1.0)
    assert torch.equal(y.view(torch.int32), torch.tanh(x).view(torch.int32))  # signed zeros and +-1 included
    nan = scaled_tanh(torch.tensor([float("nan"), 1.0]), 1.0)
    assert torch.isnan(nan[0]) and nan[1] == np.float32(np.tanh(1.0))


def test_beta_scales_in_float_first():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(10_000, generator=g)
    for beta in (1.0, 3.7, 0.1, 250.0):
        z = w * torch.tensor(beta)  # the float32 product torch.tanh(w * beta) would see
        assert torch.equal(scaled_tanh(w, beta), scaled_tanh(z, 1.0))
    assert torch.equal(scaled_tanh(w, 0.0), torch.zeros_like(w).copysign(w))  # +-0 * 0


def test_threaded_split_gives_the_single_thread_bits(monkeypatch):
    x = _sample(300_001, seed=2)  # odd length: the last part is short and unaligned
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = scaled_tanh(x, 1.5)
        torch.set_num_threads(3)
        monkeypatch.setattr(_tanh, "_MIN_SPLIT", 1000)
        split = scaled_tanh(x, 1.5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.view(torch.int32), split.view(torch.int32))


def test_declines_what_it_cannot_do():
    assert scaled_tanh(torch.ones(4, dtype=torch.float64), 1.0) is None
    assert scaled_tanh(torch.ones(4, 4).t()[0], 1.0) is None  # not contiguous
    assert scaled_tanh(torch.ones(4, dtype=torch.bfloat16), 1.0) is None
    assert scaled_tanh(torch.ones(0), 1.0).numel() == 0


@pytest.mark.skipif(not native_available() or shutil.which("cc") is None, reason="needs cc")
def test_same_bits_without_march_native_and_without_vectorization(tmp_path):
    """The claim behind "the same bits on every CPU": other instruction sets and a scalar loop agree."""
    x = _sample(100_000, seed=3)
    want = scaled_tanh(x, 1.25)
    for flags in (["-O3"], ["-O2", "-fno-tree-vectorize"], ["-O3", "-mavx2", "-mfma"], ["-O3", "-mno-avx"]):
        lib = tmp_path / f"t{len(list(tmp_path.iterdir()))}.so"
        subprocess.run(["cc", *flags, "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared", str(_tanh._SRC), "-o", str(lib)],
                       check=True, capture_output=True)
        dll = ctypes.CDLL(str(lib))
        dll.bnn_tanh_scaled_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float]
        y = torch.empty_like(x)
        dll.bnn_tanh_scaled_f32(x.data_ptr(), y.data_ptr(), x.numel(), 1.25)
        assert torch.equal(y.view(torch.int32), want.view(torch.int32)), flags


def test_bmd_trains_with_it():
    from bnn_tune.optim import TanhSign

    q = TanhSign(beta=2.5).train()
    w = torch.randn(1000, requires_grad=True)
    y = q(w)
    assert torch.equal(y.detach(), scaled_tanh(w.detach(), 2.5))
    y.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # mirror descent: the gradient passes unchanged


def _child_tanh(x, want, q):
    torch.set_num_threads(2)
    y = scaled_tanh(x, 1.5)
    # compared in numpy: torch's own parallel ops hang in a child forked after the parent used its OpenMP team
    q.put(bool(np.array_equal(y.numpy().view(np.int32), want.numpy().view(np.int32))))


def test_a_forked_child_computes_it_on_one_thread_without_hanging(monkeypatch):
    """The parent ran the split on torch's OpenMP team; a fork has no team behind it (a GOMP call would hang)."""
    import multiprocessing as mp

    monkeypatch.setattr(_tanh, "_MIN_SPLIT", 1000)
    x = _sample(50_000, seed=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = scaled_tanh(x, 1.5)
    finally:
        torch.set_num_threads(threads)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_tanh, args=(x, want, q))
    p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
        pytest.fail("the forked child hung in scaled_tanh")
    assert p.exitcode == 0 and q.get(timeout=10) is True


@pytest.mark.parametrize("parts", [0, 1, 2, 3, 5])
def test_every_element_is_computed_whatever_the_split(parts):
    """The team entry cuts n elements into ``parts`` chunks of ceil(n / parts) rounded up to 16: lengths one past,
    at and one short of a multiple of 16 x parts leave no element (the last one included) uncomputed. Without a
    GOMP entry the parts run on this thread; parts < 1 counts as one."""
    lib = _tanh._lib()
    for n in (1, 15, 16, 17, 16 * 3 * 2 - 1, 16 * 3 * 2, 16 * 3 * 2 + 1, 16 * 5 * 3 + 1, 16 * 2 * 7 + 1):
        x = torch.linspace(-3, 3, n)
        want = scaled_tanh(x, 0.75)
        y = torch.full_like(x, float("nan"))
        lib.bnn_tanh_scaled_f32_team(x.data_ptr(), y.data_ptr(), n, 0.75, parts, None)
        assert torch.equal(y.view(torch.int32), want.view(torch.int32)), (parts, n)


def test_clamp_edge_at_twenty():
    """|z| is clamped at 20 (tanh(20) rounds to 1.0f): values at, just under and just over the clamp are torch's."""
    edge = torch.tensor([20.0]).view(torch.int32)
    z = torch.cat([edge - 1, edge, edge + 1]).view(torch.float32)
    z = torch.cat([z, -z])
    assert torch.equal(scaled_tanh(z, 1.0), torch.tanh(z.double()).float())
