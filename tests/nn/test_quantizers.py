import math

import pytest
import torch

from bnn_tune.nn import (
    ApproxSign,
    SteSign,
    SwishSign,
    approx_sign,
    binarize,
    get_quantizer,
    ste_sign,
    swish_sign,
)

X = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.5])


@pytest.mark.parametrize("fn", [ste_sign, approx_sign, swish_sign])
def test_forward_is_sign_with_zero_positive(fn):
    assert fn(X).tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


def _grad(fn, x=X, **kw):
    x = x.clone().requires_grad_(True)
    fn(x, **kw).backward(torch.ones_like(x))
    return x.grad


def test_ste_sign_backward_is_clip_indicator():
    assert _grad(ste_sign).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert _grad(ste_sign, clip_value=0.3).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert _grad(ste_sign, clip_value=None).tolist() == [1.0] * 7


def test_approx_sign_backward():
    expected = [max(0.0, 2 - 2 * abs(v)) for v in X.tolist()]
    assert torch.allclose(_grad(approx_sign), torch.tensor(expected))


def test_swish_sign_backward_matches_autograd_of_smooth_surrogate():
    beta = 5.0
    x = torch.linspace(-2, 2, 41, requires_grad=True)
    s = torch.sigmoid(beta * x)
    surrogate = 2 * s * (1 + beta * x * (1 - s)) - 1
    (g_ref,) = torch.autograd.grad(surrogate.sum(), x)
    assert torch.allclose(_grad(swish_sign, x.detach(), beta=beta), g_ref, atol=1e-5)


def test_swish_sign_backward_is_finite_far_out():
    g = _grad(swish_sign, torch.tensor([-1e4, 1e4]))
    assert torch.isfinite(g).all() and g.abs().max() < 1e-6


def test_modules_and_registry():
    assert isinstance(get_quantizer("ste_sign"), SteSign)
    assert isinstance(get_quantizer("approx_sign"), ApproxSign)
    assert isinstance(get_quantizer("swish_sign"), SwishSign)
    with pytest.raises(ValueError, match=r"Unknown quantizer 'ste'\. Available: \['approx_sign', 'ste_sign', 'swish_sign'\]"):
        get_quantizer("ste")
    with pytest.raises(ValueError, match="clip_value=-1"):
        SteSign(-1)
    with pytest.raises(ValueError, match="beta=0"):
        SwishSign(0)


def test_binarize_dtype_and_values():
    x = torch.tensor([-0.0, 0.0, -1e-30, math.inf], dtype=torch.float64)
    out = binarize(x)
    assert out.dtype == torch.float64 and out.tolist() == [1.0, 1.0, -1.0, 1.0]
    assert math.isnan(binarize(torch.tensor([math.nan])).item())


# --- the fused kernels (issue 14) compute exactly what the plain formulas compute --------------------
SPECIAL = torch.tensor([-math.inf, -3.0, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 3.0, math.inf, math.nan])


def _bits(t: torch.Tensor) -> list[int]:
    return t.contiguous().view(torch.int32).tolist()


@pytest.mark.parametrize("fn", [ste_sign, approx_sign, swish_sign])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_forward_propagates_nan_and_maps_both_zeros_to_plus_one(fn, requires_grad):
    out = fn(SPECIAL.clone().requires_grad_(requires_grad))
    assert out[:-1].tolist() == [-1.0] * 5 + [1.0] * 7 and math.isnan(out[-1].item())
    assert out.requires_grad == requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_binarize_matches_the_chained_where_reference(dtype):
    x = torch.cat([SPECIAL, torch.randn(1000)]).to(dtype)
    one = torch.ones((), dtype=dtype)
    ref = torch.where(x >= 0, one, torch.where(x < 0, -one, x))
    out = binarize(x)
    assert out.dtype == dtype and torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.nan_to_num(7.0), ref.nan_to_num(7.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_binarize_is_exact_at_the_ends_of_the_range(dtype):
    # binarize computes clamp(x S S + C, -1, 1): the smallest subnormals (where x S S is smallest, a wrong C
    # would flip their sign or turn -tiny into +1), the largest finite values (x S overflows), every binade
    fi = torch.finfo(dtype)
    tiny = fi.smallest_normal * fi.eps
    mags = [tiny, 2 * tiny, 3 * tiny, fi.smallest_normal, fi.max, fi.max / 2, 1.0 - fi.eps / 2, 1.0 + fi.eps]
    mags += [2.0**e for e in range(math.frexp(fi.smallest_normal)[1] - 1, math.frexp(fi.max)[1])]
    x = torch.tensor(mags, dtype=torch.float64).to(dtype)
    assert bool((x != 0).all()) and bool(x.isfinite().all())  # every magnitude is representable in dtype
    x = torch.cat([x, -x, SPECIAL.to(dtype)])
    one = torch.ones((), dtype=dtype)
    ref = torch.where(x >= 0, one, torch.where(x < 0, -one, x))
    out = binarize(x)
    assert out.dtype == dtype and torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.nan_to_num(7.0), ref.nan_to_num(7.0))
    # a view keeps its strides and the input is untouched
    t = x.reshape(1, -1).expand(3, -1).t()
    assert torch.equal(binarize(t).nan_to_num(7.0), ref.reshape(-1, 1).expand(-1, 3).nan_to_num(7.0))


def test_ste_and_approx_backward_are_bitwise_the_plain_formulas():
    # gradient with NaN, inf, signed zeros: mask * grad must give the same bits as grad * mask (NaN * 0 = NaN,
    # -g * 0 = -0.0), the contract of the unfused versions.
    x = torch.cat([SPECIAL, torch.randn(200) * 2])
    grad = torch.cat([torch.tensor([math.nan, math.inf, -math.inf, -0.0, -2.0]), torch.randn(len(x) - 5)])
    for clip in (1.0, 0.3):
        xr = x.clone().requires_grad_(True)
        ste_sign(xr, clip).backward(grad)
        assert _bits(xr.grad) == _bits(grad * (x.abs() <= clip).to(grad.dtype))
    xr = x.clone().requires_grad_(True)
    approx_sign(xr).backward(grad)
    assert _bits(xr.grad) == _bits(grad * torch.clamp(2.0 - 2.0 * x.abs(), min=0.0))
