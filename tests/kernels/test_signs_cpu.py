"""Packed sign bits and their change count (``csrc/signs_cpu.c``, the flip counter's hot path) against torch."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest
import torch

from bnn_tune.kernels import _signs
from bnn_tune.kernels._signs import packed_sign_words, sign_bits, sign_kernel_applies

# skip only where no kernel can be built (no C compiler, or the numpy path forced); a kernel that fails to build or
# load on a machine with a compiler is a failure, not a skip
_NO_C = (shutil.which(os.environ.get("CC") or "cc") is None and shutil.which("gcc") is None) or \
    os.environ.get("BNN_TUNE_CPU_KERNEL", "").lower() == "numpy"
pytestmark = pytest.mark.skipif(_NO_C, reason="no C compiler")


def test_the_kernel_builds_and_applies_here():
    assert sign_kernel_applies(torch.zeros(3)) and _signs.raw_sign_bits() is not None


def _words_torch(x: torch.Tensor) -> list[int]:
    bits = (x >= 0).tolist()
    return [sum(1 << b for b, on in enumerate(bits[w:w + 64]) if on) for w in range(0, len(bits), 64)]


def _tricky(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-45, -1e-45])
    idx = torch.randint(0, n, (min(n, 40),), generator=g)
    x[idx] = special[torch.arange(len(idx)) % len(special)]
    return x


@pytest.mark.parametrize("n", [1, 63, 64, 65, 130, 1000, 4099])
def test_words_and_counts_are_torch_s(n):
    a, b = _tricky(n, seed=n), _tricky(n, seed=n + 1)
    words = packed_sign_words(a)
    assert sign_bits(a, words, count=True) == int((a >= 0).sum())  # from all-zero words: the + signs
    assert [w & (2**64 - 1) for w in words.tolist()] == _words_torch(a)  # high bits of the last word stay 0
    assert sign_bits(b, words, count=True) == int(((a >= 0) != (b >= 0)).sum())
    assert sign_bits(b, words, count=False) == 0


def test_bad_words_are_refused():
    x = torch.zeros(100)
    with pytest.raises(ValueError, match="2 words"):
        sign_bits(x, torch.zeros(1, dtype=torch.int64), count=True)
    assert not sign_kernel_applies(torch.zeros(4, dtype=torch.float64))
    assert not sign_kernel_applies(torch.zeros(4, 4).t())
    # a tensor the kernel cannot read is refused with a ValueError (not an assert, which -O strips)
    with pytest.raises(ValueError, match="float64"):
        sign_bits(torch.zeros(4, dtype=torch.float64), torch.zeros(1, dtype=torch.int64), count=True)
    with pytest.raises(ValueError, match="not contiguous"):
        sign_bits(torch.zeros(4, 4).t(), torch.zeros(1, dtype=torch.int64), count=True)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs cc")
def test_avx2_and_portable_builds_agree(tmp_path):
    a, b = _tricky(5000, seed=7), _tricky(5000, seed=8)
    want_words = packed_sign_words(a)
    sign_bits(a, want_words, count=False)
    want = sign_bits(b, want_words, count=True)
    for i, flags in enumerate((["-mavx2"], ["-mno-avx"], ["-march=native"])):
        lib = tmp_path / f"s{i}.so"
        subprocess.run(["cc", "-O3", *flags, "-fPIC", "-shared", str(_signs._SRC), "-o", str(lib)], check=True,
                       capture_output=True)
        dll = ctypes.CDLL(str(lib))
        dll.bnn_sign_bits_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        dll.bnn_sign_bits_f32.restype = ctypes.c_int64
        words = packed_sign_words(a)
        dll.bnn_sign_bits_f32(a.data_ptr(), words.data_ptr(), a.numel(), 0)
        assert dll.bnn_sign_bits_f32(b.data_ptr(), words.data_ptr(), b.numel(), 1) == want, flags
        assert torch.equal(words, want_words), flags
        # every sign flips (all + to all -), at a length that is not a multiple of the 64-sign word: the count
        # saturates and the last word's unused bits stay 0
        for n in (1, 64, 1025):
            pos, neg = torch.ones(n), -torch.ones(n)
            words = packed_sign_words(pos)
            assert dll.bnn_sign_bits_f32(pos.data_ptr(), words.data_ptr(), n, 1) == n, (flags, n)
            assert [w & (2**64 - 1) for w in words.tolist()] == _words_torch(pos), (flags, n)
            assert dll.bnn_sign_bits_f32(neg.data_ptr(), words.data_ptr(), n, 1) == n, (flags, n)
            assert dll.bnn_sign_bits_f32(pos.data_ptr(), words.data_ptr(), n, 0) == 0, (flags, n)
