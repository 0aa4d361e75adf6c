"""The compiled CUDA kernels on a GPU: exact int32 equality with the +-1 oracle, poisoned outputs,
fresh random inputs each call. Deselected by default (`cuda` marker; `make gpu-check` runs them).

Skipped only when no GPU is visible: on a GPU machine a kernel that cannot be built or loaded (no
NVRTC, a compile error, a bad cubin) fails these tests instead of skipping them."""

from __future__ import annotations

import pytest
import torch

from bnn_tune.kernels import cuda

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

POISON = -0x5A5A5A5B


def _pack(bits: torch.Tensor, wd: int) -> torch.Tensor:
    """Reference packing on the GPU with torch ops (LSB first, zero padding)."""
    b, k = bits.shape
    full = torch.zeros((b, wd * 32), dtype=torch.int64, device=bits.device)
    full[:, :k] = bits.long()
    words = (full.view(b, wd, 32) << torch.arange(32, device=bits.device)).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # same 32 bits


def _oracle(xa, xw):
    return (torch.where(xa >= 0, 1.0, -1.0).double() @ torch.where(xw >= 0, 1.0, -1.0).double().T).round().int()


def _wd(k):
    return -(-k // 256) * 8


def test_every_kernel_builds_and_loads():
    from bnn_tune.kernels import _nvrtc

    assert cuda.available(), f"a GPU is visible but no kernel compiler was found (compiler={_nvrtc.compiler()})"
    dev = torch.cuda.current_device()
    for path in cuda.build():
        assert path.exists()
    for src, names in cuda.kernel_names().items():
        for name in names:
            assert _nvrtc.function(dev, src, name) is not None


@pytest.mark.parametrize("b,k", [(1, 1), (3, 300), (16, 4097), (200, 1000)])
def test_pack_sign(b, k):
    x = torch.randn(b, k, device="cuda")
    x[0, 0] = 0.0
    words, pa = cuda.pack_sign(x, _wd(k))
    assert torch.equal(words, _pack(x >= 0, _wd(k)))
    assert torch.equal(pa, (x >= 0).sum(1).int())


@pytest.mark.parametrize("b,o,k", [(1, 1, 5), (1, 4096, 4096), (3, 70, 33), (16, 33, 520), (5, 1000, 1030), (9, 129, 3000),
                                   (2, 300, 20000)])
def test_gemv_int32_fused_and_packed(b, o, k):
    for _ in range(2):  # fresh inputs each time
        xa, xw = torch.randn(b, k, device="cuda"), torch.randn(o, k, device="cuda")
        w = _pack(xw >= 0, _wd(k))
        ref = _oracle(xa, xw)
        out = torch.full((b, o), POISON, dtype=torch.int32, device="cuda")
        assert torch.equal(cuda.gemv(w, k, x=xa, out=out), ref)
        out.fill_(POISON)
        assert torch.equal(cuda.gemv(w, k, a=_pack(xa >= 0, _wd(k)), out=out), ref)


@pytest.mark.parametrize("b,o,k", [(1, 45, 300), (4, 70, 33), (16, 4096, 4096), (1, 13, 20000)])
def test_gemv_threshold_bits(b, o, k):
    xa, xw = torch.randn(b, k, device="cuda"), torch.randn(o, k, device="cuda")
    thr = torch.randint(-k // 3, k // 3 + 1, (o,), dtype=torch.int32, device="cuda")
    out_words = _wd(o)
    out = torch.full((b, out_words), POISON, dtype=torch.int32, device="cuda")
    bits = cuda.gemv(_pack(xw >= 0, _wd(k)), k, x=xa, thr=thr, out_words=out_words, out=out)
    assert torch.equal(bits, _pack(_oracle(xa, xw) >= thr, out_words))


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (16, 8, 256), (70, 75, 300), (256, 4096, 4096), (1000, 130, 1030),
                                   (67, 131, 2100)])
def test_bmma(m, n, k):
    for _ in range(2):
        xa, xw = torch.randn(m, k, device="cuda"), torch.randn(n, k, device="cuda")
        a, pa = cuda.pack_sign(xa, _wd(k))
        w, pw = cuda.pack_sign(xw, _wd(k))
        out = torch.full((m, n), POISON, dtype=torch.int32, device="cuda")
        assert torch.equal(cuda.bmma(a, w, k, pa, pw, out=out), _oracle(xa, xw))


@pytest.mark.parametrize("n,c,h,w,o,ks,stride,padding,pad_value", [
    (1, 3, 5, 6, 5, (3, 3), (1, 1), (1, 1), -1.0),
    (2, 40, 9, 7, 9, (3, 2), (2, 1), (1, 0), 1.0),
    (3, 70, 6, 6, 130, (1, 1), (1, 1), (0, 0), -1.0),
    (1, 64, 5, 5, 3, (5, 5), (1, 1), (0, 0), 1.0),
    (8, 128, 16, 16, 256, (3, 3), (1, 1), (1, 1), 1.0),
])
def test_bconv_implicit_gemm(n, c, h, w, o, ks, stride, padding, pad_value):
    import torch.nn.functional as F

    x = torch.randn(n, c, h, w, device="cuda")
    wf = torch.randn(o, c, *ks, device="cuda")
    bits = (wf >= 0).permute(0, 2, 3, 1).reshape(o, -1).cpu().numpy()
    words = torch.from_numpy(cuda.tap_aligned_weight(bits, ks, c).view("int32")).cuda()
    pw = (wf >= 0).reshape(o, -1).sum(1).int()
    act = cuda.pack_nhwc(x, padding, pad_value)
    xs = F.pad(torch.where(x >= 0, 1.0, -1.0).double(), (padding[1], padding[1], padding[0], padding[0]),
               value=pad_value)
    ref = F.conv2d(xs, torch.where(wf >= 0, 1.0, -1.0).double(), stride=stride).round().int().permute(0, 2, 3, 1)
    y = cuda.bconv(act, words, ks[0] * ks[1] * c, pw, kernel_size=ks, stride=stride)
    assert torch.equal(y, ref)


def test_odd_shapes_strided_input_and_side_stream():
    """Odd sizes everywhere, a strided float input (a column slice, as after unfold), launches on a side
    stream and in a CUDA graph: the kernels run on torch's current stream. `make gpu-check` also runs
    this test under compute-sanitizer (memcheck): any out-of-bounds access fails it there."""
    k, o = 777, 45
    xw = torch.randn(o, k, device="cuda")
    w = _pack(xw >= 0, _wd(k))
    wide = torch.randn(3, k + 29, device="cuda")
    x = wide[:, :k]  # row stride k + 29
    ref = _oracle(x, xw)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = cuda.gemv(w, k, x=x)
        a, pa = cuda.pack_sign(x, _wd(k))
        c = cuda.bmma(a, w, k, pa, (xw >= 0).sum(1).int())
        img = torch.randn(3, 37, 5, 7, device="cuda")  # odd conv: 2 channel words, stride 2, +1 padding
        wc = torch.randn(11, 37, 3, 3, device="cuda")
        bits = (wc >= 0).permute(0, 2, 3, 1).reshape(11, -1).cpu().numpy()
        words = torch.from_numpy(cuda.tap_aligned_weight(bits, (3, 3), 37).view("int32")).cuda()
        yc = cuda.bconv(cuda.pack_nhwc(img, (1, 1), 1.0), words, 9 * 37, (wc >= 0).reshape(11, -1).sum(1).int(),
                        kernel_size=(3, 3), stride=(2, 2))
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(y, ref) and torch.equal(c, ref)
    import torch.nn.functional as F

    xs = F.pad(torch.where(img >= 0, 1.0, -1.0).double(), (1, 1, 1, 1), value=1.0)
    refc = F.conv2d(xs, torch.where(wc >= 0, 1.0, -1.0).double(), stride=2).round().int().permute(0, 2, 3, 1)
    assert torch.equal(yc, refc)
    out = torch.full((3, o), POISON, dtype=torch.int32, device="cuda")
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        cuda.gemv(w, k, a=a, out=out)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, ref)


def test_bad_arguments_raise():
    w = torch.zeros((4, 8), dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="covering k=300 bits"):
        cuda.gemv(w, 300, x=torch.randn(1, 300, device="cuda"))  # K > Wd * 32
    with pytest.raises(ValueError, match="exactly one"):
        cuda.gemv(w, 10)
    with pytest.raises(ValueError, match=r"`thr` must have shape \[4\]"):
        cuda.gemv(w, 10, a=torch.zeros((1, 8), dtype=torch.int32, device="cuda"),
                  thr=torch.zeros(5, dtype=torch.int32, device="cuda"))
    with pytest.raises(ValueError, match="`pa` must have dtype torch.int32"):
        cuda.bmma(w, w, 10, torch.zeros(4, device="cuda"), torch.zeros(4, dtype=torch.int32, device="cuda"))
