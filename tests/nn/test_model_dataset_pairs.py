"""Every (zoo model, dataset input shape) pair the config accepts builds, trains a step and packs to a
model that agrees with PyTorch; a pair that cannot work is refused by the config, naming both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnn_tune.config import ConfigError, TrialConfig
from bnn_tune.data import dataset_input_shape, list_datasets
from bnn_tune.export import load_packed, save_packed
from bnn_tune.nn import build_model, list_models

WIDTH = {"mlp": 0.125, "binarynet": 0.0625, "binarynet_paper": 0.0625, "vgg_small": 0.0625, "birealnet18": 0.0625}
PAIRS = [(m, d) for m in list_models() for d in list_datasets()]


def _accepted(model: str, dataset: str) -> bool:
    try:
        TrialConfig.from_dict({"model": model, "dataset": dataset})
    except ConfigError:
        return False
    return True


def test_every_builtin_dataset_declares_its_shape():
    assert {d: dataset_input_shape(d) for d in list_datasets()} == {
        "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "digits": (1, 8, 8), "fashion_mnist": (1, 28, 28),
        "mnist": (1, 28, 28), "mnist1d": (40,), "mnist_5k": (1, 28, 28), "synthetic": (1, 8, 8)}


@pytest.mark.parametrize("model,dataset", PAIRS)
def test_accepted_pair_trains_a_step_and_packs_exactly(model, dataset, tmp_path):
    if not _accepted(model, dataset):
        pytest.skip("refused at config time (test_refused_pairs_name_model_and_dataset)")
    shape = dataset_input_shape(dataset)
    torch.manual_seed(0)
    net = build_model(model, shape, 10, width=WIDTH[model])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(8, *shape)
    loss = torch.nn.functional.cross_entropy(net(x), torch.arange(8) % 10)  # one training step, BN in train mode
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    net.eval()
    path = tmp_path / "m.bnn.safetensors"
    if model == "binarynet_paper":  # zero padding of binary inputs has no bit-packed form: a clear refusal
        with pytest.raises(ValueError, match=r"pads its binarized input with zeros"):
            save_packed(net, path, input_shape=shape)
        return
    save_packed(net, path, input_shape=shape)
    pm = load_packed(path)
    xt = torch.randn(64, *shape) * 2
    with torch.no_grad():
        ref = net(xt)
    np.testing.assert_array_equal(pm.predict(xt), ref.argmax(1).numpy())
    np.testing.assert_allclose(pm.logits(xt), ref.numpy(), rtol=1e-4, atol=1e-3)


def test_birealnet18_takes_28x28_mnist():
    assert _accepted("birealnet18", "mnist") and _accepted("birealnet18", "fashion_mnist")


@pytest.mark.parametrize("model", ["binarynet", "vgg_small", "birealnet18"])
def test_refused_pairs_name_model_and_dataset(model):
    with pytest.raises(ConfigError, match=rf"model='{model}' cannot take dataset='mnist1d': .*needs image input"):
        TrialConfig.from_dict({"model": model, "dataset": "mnist1d"})
