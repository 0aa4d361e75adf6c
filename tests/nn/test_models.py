import pytest
import torch

from bnn_tune.nn import BinaryConv2d, BinaryLinear, build_model, is_binary_parameter, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("binary", [True, False])
def test_every_model_runs_and_twins_have_same_shapes(name, binary):
    shape = (24,) if name == "mlp" else (3, 16, 16)
    model = build_model(name, shape, 7, binary=binary, width=0.125)
    twin = build_model(name, shape, 7, binary=not binary, width=0.125)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 7)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [tuple(p.shape) for p in twin.parameters()]


@pytest.mark.parametrize("name", [n for n in list_models() if n != "binarynet_paper"])
def test_first_and_last_layers_are_real(name):
    shape = (24,) if name == "mlp" else (3, 16, 16)
    model = build_model(name, shape, 5, width=0.125)
    weights = [(n, p) for n, p in model.named_parameters() if p.ndim > 1]
    assert not is_binary_parameter(weights[0][1]), weights[0][0]
    assert not is_binary_parameter(weights[-1][1]), weights[-1][0]
    assert any(is_binary_parameter(p) for _, p in weights)
    twin = build_model(name, shape, 5, width=0.125, binary=False)
    assert not any(isinstance(m, (BinaryLinear, BinaryConv2d)) for m in twin.modules())


def test_batchnorm_momentum_is_larq_recommendation():
    model = build_model("mlp", (8,), 2)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and all(m.momentum == 0.1 for m in bns)  # PyTorch 0.1 == Keras 0.9


def test_binarynet_structure_matches_paper_plan():
    model = build_model("binarynet", (3, 32, 32), 10)
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [128, 128, 256, 256, 512, 512]
    assert fcs == [1024, 1024, 10]


def test_unknown_model_and_wrong_input():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet'\. Available: \["):
        build_model("resnet", (8,), 2)
    with pytest.raises(ValueError, match="needs image input"):
        build_model("binarynet", (64,), 2)


def test_binarynet_paper_is_the_bop_papers_network():
    from bnn_tune.nn import BatchNormNoScale

    model = build_model("binarynet_paper", (3, 32, 32), 10)
    kernels = [(n, p) for n, p in model.named_parameters() if p.ndim > 1]
    assert all(is_binary_parameter(p) for _, p in kernels)  # first and last kernels binarized too
    layers = [m for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))]
    assert [m.out_channels for m in layers if isinstance(m, BinaryConv2d)] == [128, 128, 256, 256, 512, 512]
    assert [m.out_features for m in layers if isinstance(m, BinaryLinear)] == [1024, 1024, 10]
    first, last = layers[0], layers[-1]
    assert first.input_quantizer is None and first.padding == (0, 0)  # real image in, unpadded
    assert last.input_quantizer is not None and last.bias is None
    assert all(m.pad_value == 0.0 and m.padding == (1, 1) for m in layers[1:6])  # zero padding
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 9 and all(isinstance(m, BatchNormNoScale) and m.weight is None for m in bns)
    assert isinstance(list(model)[-1], BatchNormNoScale)  # batch norm after the last layer
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10) and all(p.grad is not None for p in model.parameters())
    # zero padding: a binarized input padded with 0 contributes nothing at the border
    conv = layers[1]
    x = torch.ones(1, conv.in_channels, 4, 4)
    ref = torch.nn.functional.conv2d(x, conv.quantized_weight(), None, 1, 1)
    torch.testing.assert_close(conv(x), ref)


def test_binarynet_paper_trains_with_bop_and_export_rejects_it_clearly(tmp_path):
    from bnn_tune import optim
    from bnn_tune.export import save_packed

    model = build_model("binarynet_paper", (3, 16, 16), 4, width=0.0625)
    opt = optim.build(model, {"optimizer": "bop", "epochs": 1, "gamma": 0.5, "threshold": 0.0})
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    before = [p.detach().clone() for p in model.parameters() if is_binary_parameter(p)]
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    after = [p.detach() for p in model.parameters() if is_binary_parameter(p)]
    assert all(set(p.unique().tolist()) <= {-1.0, 1.0} for p in after)  # Bop kept every kernel +-1
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # and flipped some
    with pytest.raises(ValueError, match=r"zeros \(pad_value=0.0.*binarynet_paper.*Train model 'binarynet'"):
        save_packed(model.eval(), tmp_path / "m.bnn.safetensors", config={"model": "binarynet_paper"},
                    input_shape=(3, 16, 16))
