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
