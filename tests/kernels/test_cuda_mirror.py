"""The CUDA kernels' indexing, re-enacted in numpy (bnn_tune.kernels._mirror), against the float oracle."""

from __future__ import annotations

import numpy as np
import pytest

from bnn_tune.kernels import pack_bits, padded_k, popcount_rows
from bnn_tune.kernels._mirror import mirror_bmma, mirror_gemv, mirror_pack_sign


def _oracle(xa, xw):
    return np.where(xa >= 0, 1, -1).astype(np.int64) @ np.where(xw >= 0, 1, -1).astype(np.int64).T


@pytest.mark.parametrize("b,k", [(1, 1), (3, 31), (2, 257), (16, 600)])
def test_pack_sign_mirror(b, k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((b, k)).astype(np.float32)
    x[0, 0] = 0.0  # sign(0) = +1
    wd = padded_k(k) // 32
    words, pa = mirror_pack_sign(x, k, wd)
    np.testing.assert_array_equal(words, pack_bits(x >= 0))
    np.testing.assert_array_equal(pa, (x >= 0).sum(1))


@pytest.mark.parametrize("b,o,k", [(1, 1, 5), (1, 45, 300), (3, 70, 33), (16, 33, 520), (5, 100, 1030), (2, 9, 20000)])
def test_gemv_mirror_int32(b, o, k):
    rng = np.random.default_rng(o * k)
    xa, xw = rng.standard_normal((b, k)).astype(np.float32), rng.standard_normal((o, k))
    w = pack_bits(xw >= 0)
    ref = _oracle(xa, xw)
    np.testing.assert_array_equal(mirror_gemv(w, k, x=xa), ref)  # fused sign+pack
    np.testing.assert_array_equal(mirror_gemv(w, k, a=pack_bits(xa >= 0)), ref)


@pytest.mark.parametrize("b,o,k", [(1, 45, 300), (4, 70, 33), (2, 257, 100)])
def test_gemv_mirror_threshold_emits_next_layer_bits(b, o, k):
    rng = np.random.default_rng(o + k)
    xa, xw = rng.standard_normal((b, k)).astype(np.float32), rng.standard_normal((o, k))
    thr = rng.integers(-k // 3, k // 3, size=o).astype(np.int32)
    out_ld = padded_k(o) // 32  # next layer's padded word count: padding words/bits must be 0
    bits = mirror_gemv(pack_bits(xw >= 0), k, x=xa, thr=thr, out_ld=out_ld)
    np.testing.assert_array_equal(bits, pack_bits(_oracle(xa, xw) >= thr))


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (16, 8, 256), (70, 75, 300), (130, 9, 520), (5, 130, 1000), (3, 131, 2100)])
def test_bmma_mirror(m, n, k):
    rng = np.random.default_rng(m * n + k)
    xa, xw = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    a, w = pack_bits(xa >= 0), pack_bits(xw >= 0)
    c = mirror_bmma(a, w, k, popcount_rows(a), popcount_rows(w))
    np.testing.assert_array_equal(c, _oracle(xa, xw))
