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


@pytest.mark.parametrize("name", list_models())
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
