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


def _conv_oracle(x, wf, stride, padding, pad_value):
    import torch
    import torch.nn.functional as F

    xs = torch.where(torch.from_numpy(x) >= 0, 1.0, -1.0).double()
    ws = torch.where(torch.from_numpy(wf) >= 0, 1.0, -1.0).double()
    ph, pw = padding
    xs = F.pad(xs, (pw, pw, ph, ph), value=pad_value)
    return F.conv2d(xs, ws, stride=stride).round().long().permute(0, 2, 3, 1).numpy()  # NHWC


@pytest.mark.parametrize("n,c,h,w,o,ks,stride,padding,pad_value", [
    (1, 3, 5, 6, 5, (3, 3), (1, 1), (1, 1), -1.0),
    (2, 40, 4, 5, 9, (3, 2), (2, 1), (1, 0), 1.0),
    (1, 70, 3, 3, 130, (1, 1), (1, 1), (0, 0), -1.0),  # 3 channel words, 2 blocks of output channels
    (1, 64, 5, 5, 3, (5, 5), (1, 1), (0, 0), 1.0),  # 50 K words: 4 pipeline stages, ring wraps
    (1, 33, 3, 4, 5, (3, 3), (1, 1), (1, 1), 1.0),  # one channel past a word: 2 words, the second nearly empty
    (1, 65, 2, 2, 4, (1, 1), (1, 1), (0, 0), -1.0),  # 3 words, the last holding one channel
])
def test_bconv_mirror_implicit_gemm(n, c, h, w, o, ks, stride, padding, pad_value):
    from bnn_tune.kernels._mirror import mirror_bconv, mirror_pack_nhwc
    from bnn_tune.kernels.cuda import tap_aligned_weight

    rng = np.random.default_rng(c * o + h)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0  # sign(0) = +1
    wf = rng.standard_normal((o, c, *ks))
    bits = (wf >= 0).transpose(0, 2, 3, 1).reshape(o, -1)  # the model file's (kh, kw, c) patch order
    words = tap_aligned_weight(bits, ks, c)
    act = mirror_pack_nhwc(x, padding, pad_value)
    assert act.shape == (n, h + 2 * padding[0], w + 2 * padding[1], -(-c // 32))
    k = ks[0] * ks[1] * c
    y = mirror_bconv(act, words, k, popcount_rows(words), kernel_size=ks, stride=stride)
    np.testing.assert_array_equal(y, _conv_oracle(x, wf, stride, padding, pad_value))


def test_tap_aligned_weight_layout():
    from bnn_tune.kernels.cuda import tap_aligned_weight

    bits = np.zeros((1, 2 * 1 * 33), bool)  # kernel (2, 1), 33 channels: Cw = 2 words per tap
    bits[0, 32] = True  # tap 0, channel 32 -> word 1, bit 0
    bits[0, 33 + 1] = True  # tap 1, channel 1 -> word 2, bit 1
    words = tap_aligned_weight(bits, (2, 1), 33)
    assert words.shape == (1, 8)
    assert words[0].tolist() == [0, 1, 2, 0, 0, 0, 0, 0]
