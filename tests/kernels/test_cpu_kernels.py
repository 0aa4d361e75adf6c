"""CPU packed kernels against the float oracle (matmul / conv2d of +-1 tensors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnn_tune.kernels import (
    binary_conv2d,
    binary_gemm,
    pack_bits,
    padded_k,
    popcount_rows,
    reorder_conv_weight,
    unpack_bits,
)
from bnn_tune.kernels._native import native_available


def _pm1(b):
    return np.where(b, 1, -1).astype(np.int64)


BACKENDS = ["numpy", "native"] if native_available() else ["numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m,o,k", [(1, 1, 1), (1, 7, 31), (3, 33, 33), (5, 10, 257), (17, 65, 1000), (2, 3, 4096),
                                   (9, 130, 70)])
def test_binary_gemm_matches_oracle(m, o, k, backend):
    rng = np.random.default_rng(m * 1000 + k)
    a, w = rng.random((m, k)) < 0.5, rng.random((o, k)) < 0.5
    y = binary_gemm(pack_bits(a), pack_bits(w), k, backend=backend)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, _pm1(a) @ _pm1(w).T)


def test_native_kernel_builds_here():
    """The dev/CI machines have a C compiler: the compiled path must be the one in use."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert native_available()


def test_binary_gemm_chunks_large_batch(monkeypatch):
    from bnn_tune.kernels import _cpu

    monkeypatch.setattr(_cpu, "_CHUNK_ELEMS", 64)
    rng = np.random.default_rng(0)
    a, w = rng.random((37, 300)) < 0.5, rng.random((9, 300)) < 0.5
    y = binary_gemm(pack_bits(a), pack_bits(w), 300, backend="numpy")
    np.testing.assert_array_equal(y, _pm1(a) @ _pm1(w).T)


def test_tile_32_odd_word_count():
    rng = np.random.default_rng(1)
    a, w = rng.random((4, 40)) < 0.5, rng.random((6, 40)) < 0.5
    pa, pw = pack_bits(a, tile=32), pack_bits(w, tile=32)
    assert pa.shape == (4, 2)
    np.testing.assert_array_equal(binary_gemm(pa, pw, 40), _pm1(a) @ _pm1(w).T)


def test_and_formulation_identity():
    rng = np.random.default_rng(2)
    k = 777
    a, w = rng.random((5, k)) < 0.5, rng.random((8, k)) < 0.5
    pa, pw = pack_bits(a), pack_bits(w)
    and_pc = np.bitwise_count(pa[:, None, :] & pw[None]).sum(-1)
    dot = k - 2 * popcount_rows(pa)[:, None] - 2 * popcount_rows(pw)[None] + 4 * and_pc
    np.testing.assert_array_equal(dot, binary_gemm(pa, pw, k))


@pytest.mark.parametrize("c,o,h,k,s,p", [(3, 5, 7, 3, 1, 1), (4, 6, 9, 3, 2, 1), (2, 3, 5, 1, 1, 0), (5, 4, 6, 3, 2, 0),
                                         (8, 5, 7, 3, 1, 1), (16, 9, 6, 3, 2, 1), (24, 3, 5, 1, 1, 0), (40, 7, 5, 3, 1, 1)])
def test_binary_conv2d_matches_torch(c, o, h, k, s, p):
    rng = np.random.default_rng(c * 10 + h)
    x = rng.random((2, c, h, h + 1)) < 0.5
    wb = rng.random((o, c, k, k)) < 0.5
    wp = pack_bits(reorder_conv_weight(wb))
    y = binary_conv2d(x, wp, k=c * k * k, out_channels=o, kernel=(k, k), stride=(s, s), padding=(p, p))
    xt = F.pad(torch.from_numpy(_pm1(x).astype(np.float64)), (p, p, p, p), value=1.0)
    ref = F.conv2d(xt, torch.from_numpy(_pm1(wb).astype(np.float64)), stride=s)
    np.testing.assert_array_equal(y, ref.numpy().astype(np.int32))


def test_pack_unpack_roundtrip_and_padding_zero():
    rng = np.random.default_rng(3)
    bits = rng.random((3, 4, 70)) < 0.5
    w = pack_bits(bits)
    assert w.shape == (3, 4, padded_k(70) // 32)
    np.testing.assert_array_equal(unpack_bits(w, 70), bits)
    assert not unpack_bits(w, padded_k(70))[..., 70:].any()


def test_errors():
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        padded_k(0)
    with pytest.raises(ValueError, match="`tile` must be a positive multiple of 32"):
        padded_k(5, 48)
    a = pack_bits(np.ones((2, 10), bool))
    with pytest.raises(ValueError, match="same word count"):
        binary_gemm(a, pack_bits(np.ones((2, 300), bool)), 10)
    with pytest.raises(ValueError, match=r"`k` must be in \[1, 256\]"):
        binary_gemm(a, a, 300)
    with pytest.raises(ValueError, match="`backend` must be"):
        binary_gemm(a, a, 10, backend="gpu")


def test_native_threaded_split_matches(monkeypatch):
    from bnn_tune.kernels import _native

    if not native_available():
        pytest.skip("no native kernel")
    monkeypatch.setattr(_native, "_PARALLEL_WORK", 0)
    monkeypatch.setattr(_native, "_threads", lambda: 3)
    rng = np.random.default_rng(5)
    for m, o in ((6, 101), (103, 5)):  # split over weight rows, then over activation rows
        a, w = rng.random((m, 500)) < 0.5, rng.random((o, 500)) < 0.5
        np.testing.assert_array_equal(binary_gemm(pack_bits(a), pack_bits(w), 500, backend="native"),
                                      _pm1(a) @ _pm1(w).T)


@pytest.mark.parametrize("pad_value", [True, False])
def test_im2col_packed_equals_bool_path(pad_value):
    from bnn_tune.kernels import im2col_bits
    from bnn_tune.kernels._cpu import im2col_packed

    rng = np.random.default_rng(7)
    x = rng.random((2, 16, 5, 6)) < 0.5
    a, ho, wo = im2col_packed(x, (3, 3), (2, 1), (1, 1), pad_value)
    cols, ho2, wo2 = im2col_bits(x, (3, 3), (2, 1), (1, 1), pad_value)
    assert (ho, wo) == (ho2, wo2)
    np.testing.assert_array_equal(a, pack_bits(cols))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1024, 1025, 4097])
def test_binary_gemm_saturated_all_plus_against_all_minus(k, backend):
    """Every popcount at its maximum (all +1 rows against all -1 rows: y = -K) and at zero (equal rows: y = +K), with
    K >= 1024, odd K and K not a multiple of 64; 6 x 70 covers the 4x4 register blocks, their leftover rows and
    columns and two 64-row weight blocks."""
    a = np.ones((6, k), dtype=bool)
    w = np.zeros((70, k), dtype=bool)
    w[1::3] = True
    want = np.where(w.any(1), k, -k)[None].repeat(6, 0)
    np.testing.assert_array_equal(binary_gemm(pack_bits(a), pack_bits(w), k, backend=backend), want)
    np.testing.assert_array_equal(binary_gemm(pack_bits(~a), pack_bits(w), k, backend=backend), -want)


@pytest.mark.parametrize("c", [3, 16])  # the bool im2col and the packed-byte im2col
@pytest.mark.parametrize("padding", [(0, 1), (1, 0), (2, 1)])
@pytest.mark.parametrize("pad_value", [True, False])
def test_binary_conv2d_padding_on_one_axis(c, padding, pad_value):
    """Padding on only one axis (or unequal) is still padding: the result is conv2d of the +-1 map padded with
    pad_value (+1 or -1) by ph rows and pw columns."""
    rng = np.random.default_rng(c + 10 * padding[0] + padding[1])
    x = rng.random((2, c, 5, 6)) < 0.5
    wb = rng.random((4, c, 3, 3)) < 0.5
    ph, pw = padding
    y = binary_conv2d(x, pack_bits(reorder_conv_weight(wb)), k=c * 9, out_channels=4, kernel=(3, 3), stride=(1, 1),
                      padding=padding, pad_value=pad_value)
    xt = F.pad(torch.from_numpy(_pm1(x).astype(np.float64)), (pw, pw, ph, ph), value=1.0 if pad_value else -1.0)
    ref = F.conv2d(xt, torch.from_numpy(_pm1(wb).astype(np.float64)))
    np.testing.assert_array_equal(y, ref.numpy().astype(np.int32))


def test_without_the_native_kernel_auto_falls_back_and_native_refuses(monkeypatch):
    from bnn_tune.kernels import _cpu

    monkeypatch.setattr(_cpu, "native_gemm", lambda *a: None)  # as when no C compiler is found
    rng = np.random.default_rng(8)
    a, w = rng.random((3, 200)) < 0.5, rng.random((5, 200)) < 0.5
    np.testing.assert_array_equal(binary_gemm(pack_bits(a), pack_bits(w), 200), _pm1(a) @ _pm1(w).T)
    with pytest.raises(RuntimeError, match="native CPU kernel could not be built"):
        binary_gemm(pack_bits(a), pack_bits(w), 200, backend="native")


def test_cpu_signature_is_the_first_processor_s_model_and_flags(monkeypatch):
    import io

    from bnn_tune.kernels import _native

    info = ("processor\t: 0\nvendor_id\t: Acme\nmodel name\t: Acme 9000\nflags\t\t: fpu avx2\n\n"
            "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    monkeypatch.setattr(_native, "open", lambda *a, **k: io.StringIO(info), raising=False)
    sig = _native._cpu_signature().decode()
    assert "model name\t: Acme 9000" in sig and "flags\t\t: fpu avx2" in sig
    assert "vendor_id" not in sig and "Other" not in sig and "processor" not in sig


def test_build_falls_back_to_plain_o3_when_march_native_fails(tmp_path, monkeypatch):
    """A compiler that refuses -march=native (some cross or old compilers): the kernel is built without it."""
    import os
    import shutil

    from bnn_tune.kernels import _native, _signs

    real = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if real is None:
        pytest.skip("no C compiler")
    fake = tmp_path / "cc"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = "-march=native" ] && echo "no native" >&2 && exit 1; done\n'
                    f'exec {real} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("BNN_TUNE_CACHE", str(tmp_path / "cache"))
    dll = _native.build_library(_signs._SRC, "libfallback_test")
    assert dll is not None and hasattr(dll, "bnn_sign_bits_f32")
    assert len(list((tmp_path / "cache").glob("libfallback_test_*.so"))) == 1
