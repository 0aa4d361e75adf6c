import pytest
import torch
import torch.nn.functional as F

from bnn_tune.nn import (
    BinaryConv2d,
    BinaryLinear,
    binarize,
    binary_parameters,
    is_binary_parameter,
    ste_sign,
)


def test_binary_linear_equals_float_matmul_of_pm1():
    torch.manual_seed(0)
    layer = BinaryLinear(37, 11)
    x = torch.randn(5, 37)
    expected = binarize(x) @ binarize(layer.weight).T
    assert torch.equal(layer(x), expected)
    # and each output is an integer of K's parity in [-K, K]
    assert torch.equal(expected.remainder(2), torch.full_like(expected, 37 % 2))


def test_binary_linear_real_activations_and_real_weights():
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    layer = BinaryLinear(8, 3, input_quantizer=None)
    assert torch.allclose(layer(x), x @ binarize(layer.weight).T)
    last = BinaryLinear(8, 3, bias=True, weight_quantizer=None)
    assert torch.allclose(last(x), binarize(x) @ last.weight.T + last.bias)
    assert is_binary_parameter(layer.weight) and not is_binary_parameter(last.weight)
    assert not is_binary_parameter(last.bias)


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
@pytest.mark.parametrize("stride", [1, 2])
def test_binary_conv_equals_float_conv_of_pm1_with_pad_value(pad_value, stride):
    torch.manual_seed(1)
    conv = BinaryConv2d(3, 5, 3, stride=stride, padding=1, pad_value=pad_value)
    x = torch.randn(2, 3, 7, 9)
    xq = F.pad(binarize(x), (1, 1, 1, 1), value=pad_value)
    expected = F.conv2d(xq, binarize(conv.weight), stride=stride)
    assert torch.equal(conv(x), expected)
    assert set(expected.unique().remainder(2).tolist()) == {1.0}  # K = 27 is odd, outputs are odd


def test_binary_conv_rejects_bad_pad_value():
    with pytest.raises(ValueError, match=r"must be 1.0, -1.0 or 0.0 \(zero padding\), but got pad_value=0.5"):
        BinaryConv2d(1, 1, 3, padding=1, pad_value=0.5)
    BinaryConv2d(1, 1, 3, padding=1, pad_value=0.0)  # zero padding: the Bop paper's BinaryNet (not packable)


def test_gradient_flows_through_ste_to_latent_weight():
    layer = BinaryLinear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -2.0, 0.1, -0.1], [1.5, 0.0, -0.3, 0.9]]))
    layer(torch.randn(3, 4)).sum().backward()
    g = layer.weight.grad
    assert g[0, 1] == 0 and g[1, 0] == 0  # |w| > 1: clipped by ste_sign
    assert (g[0, [0, 2, 3]] != 0).all()


def test_binary_parameters_lists_only_binary_weights():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), BinaryLinear(4, 4), BinaryLinear(4, 2, weight_quantizer=None))
    assert [n for n, _ in binary_parameters(model)] == ["1.weight"]


def test_flag_survives_to_deepcopy_and_pickle():
    import copy

    layer = BinaryLinear(3, 2).to(torch.float64)
    assert is_binary_parameter(layer.weight)
    assert is_binary_parameter(copy.deepcopy(layer).weight)
    import pickle

    assert is_binary_parameter(pickle.loads(pickle.dumps(layer)).weight)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t.contiguous().view(torch.int64)


@pytest.mark.parametrize("node", ["_PaddedSignConvFn", "_PaddedSignFn"])
@pytest.mark.parametrize("quantizer", ["ste", "ste_unclipped", "ste_0.5", "approx"])
@pytest.mark.parametrize("pad_value", [1.0, -1.0])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_sign_and_padding_gives_the_bits_of_sign_then_pad(quantizer, pad_value, fmt, dtype, node, monkeypatch):
    # BinaryConv2d writes sign(x) into a +-1-padded buffer and runs sign, padding and convolution as one
    # autograd node whose input gradient never forms the border (issue 14; `_PaddedSignFn` is the
    # sign-and-pad node used under autocast); forward, input, weight and bias gradients must be the bits of
    # quantizer(x) -> F.pad -> conv, for asymmetric padding, NaN, +-0 and |x| > 1
    from bnn_tune.nn import ApproxSign, SteSign, _layers
    if node == "_PaddedSignFn":
        monkeypatch.setattr(_layers, "padded_sign_conv2d", lambda *args: None)
    q = {"ste": SteSign(), "ste_unclipped": SteSign(None), "ste_0.5": SteSign(0.5), "approx": ApproxSign()}[quantizer]
    torch.manual_seed(2)
    conv = BinaryConv2d(4, 6, 3, stride=2, padding=(2, 1), pad_value=pad_value, input_quantizer=q,
                        bias=True).to(dtype)
    x0 = torch.randn(3, 4, 9, 8, dtype=dtype) * 1.5
    x0.view(-1)[:4] = torch.tensor([0.0, -0.0, float("nan"), 1.0], dtype=dtype)
    x0 = x0.contiguous(memory_format=fmt)
    g = torch.randn(3, 6, 6, 4, dtype=dtype)
    out = []
    for fused in (True, False):
        x = x0.clone(memory_format=torch.preserve_format).requires_grad_()
        conv.weight.grad = conv.bias.grad = None
        if fused:
            y = conv(x)
            assert node in str(y.grad_fn) + str(y.grad_fn.next_functions)  # the fused path ran
        else:
            xq = F.pad(q(x), (1, 1, 2, 2), value=pad_value)
            y = F.conv2d(xq, conv.quantized_weight(), conv.bias, 2, 0)
        y.backward(g)
        out.append((y.detach(), x.grad, conv.weight.grad, conv.bias.grad))
    for i, (a, b) in enumerate(zip(*out)):
        assert a.stride() == b.stride()
        if i == 1 and node == "_PaddedSignConvFn":
            # the input gradient of the one-node convolution is the same sum, but oneDNN may pick another
            # kernel for the unpadded shape (here: 4 channels, stride 2) and add in another order
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)
        else:
            assert torch.equal(_bits(a), _bits(b))
    assert bool(out[0][0].isnan().any()) and bool(out[0][1].isfinite().any())
    with torch.no_grad():  # and without a graph (evaluation)
        assert torch.equal(_bits(conv(x0)), _bits(out[0][0]))


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_conv_node_gives_the_bits_of_sign_then_pad_on_the_zoo_shapes(stride):
    # on the zoo's layouts (NCHW, 16+ channels, square padding 1) oneDNN adds the unpadded input gradient in
    # the padded one's order on this machine's ISAs (AVX-512, AVX2, SSE4.1 checked), so training keeps its
    # bits (tests/core/test_step_trajectory.py records birealnet18's and binarynet's trajectories)
    torch.manual_seed(4)
    conv = BinaryConv2d(16, 32, 3, stride=stride, padding=1)
    x0 = torch.randn(8, 16, 16, 16) * 1.5
    g = torch.randn(8, 32, 16 // stride, 16 // stride)
    grads = []
    for fused in (True, False):
        x = x0.clone().requires_grad_()
        conv.weight.grad = None
        if fused:
            y = conv(x)
            assert "_PaddedSignConvFn" in str(y.grad_fn)
        else:
            y = F.conv2d(F.pad(ste_sign(x), (1, 1, 1, 1), value=1.0), conv.quantized_weight(), None, stride, 0)
        y.backward(g)
        grads.append((x.grad, conv.weight.grad))
    assert torch.equal(_bits(grads[0][0]), _bits(grads[1][0])) and torch.equal(grads[0][1], grads[1][1])


def test_fused_conv_node_with_a_frozen_input_or_frozen_weights():
    # the one-node convolution differentiates only what asks for it: an input without grad (the first
    # binary layer on data) still trains the weights, frozen weights still pass the input gradient
    torch.manual_seed(3)
    conv = BinaryConv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    conv(x).square().sum().backward()
    ref = F.conv2d(F.pad(ste_sign(x), (1, 1, 1, 1), value=1.0), conv.quantized_weight(), None, 1, 0)
    w_grad = conv.weight.grad.clone()
    conv.weight.grad = None
    ref.square().sum().backward()
    assert torch.equal(w_grad, conv.weight.grad)
    conv.weight.requires_grad_(False)
    xg = x.clone().requires_grad_()
    y = conv(xg)
    assert "_PaddedSignConvFn" in str(y.grad_fn)
    y.sum().backward()
    assert xg.grad is not None and bool(xg.grad.abs().sum() > 0)


def test_fused_conv_node_is_skipped_under_autocast():
    # autocast casts inside the convolution; the one-node path would save un-cast tensors, so it is not used
    conv = BinaryConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and "_PaddedSignConvFn" not in str(y.grad_fn)
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
