"""``bnn_tune.bench.train_step``: the pieces behind benchmarks/bench_train_step.py (issue 14)."""

from __future__ import annotations

import torch

from bnn_tune.bench import train_step as tb
from bnn_tune.nn import binary_parameters


def test_real_twin_is_the_same_architecture_with_real_weights_and_adam():
    data = tb._data_for("mlp")
    twin = tb._real_twin("mlp", 0.25, 16, data)
    assert binary_parameters(twin.model) == []
    assert type(twin.optimizer) is torch.optim.Adam and twin.flips._handles == []
    binary = tb.Trainer(tb._config("mlp", 0.25, 16, "bop"), data=data)
    shapes = lambda m: [tuple(p.shape) for p in m.parameters() if p.dim() > 1]  # noqa: E731
    assert shapes(twin.model) == shapes(binary.model)
    before = [p.detach().clone() for p in twin.model.parameters()]
    twin.train_step(*tb._batch(data, 16))
    assert any(not torch.equal(a, b) for a, b in zip(before, twin.model.parameters()))


def test_step_rows_and_split_report_medians_and_ratios():
    rows = tb.step_rows("mlp", 0.25, batch_size=16, threads=1, optimizers=["bop", "latent_adam"], steps=2, warmup=1)
    assert [r["optimizer"] for r in rows] == ["bop", "latent_adam"]
    for r in rows:
        assert r["binary_ms"] > 0 and r["real_ms"] > 0
        assert abs(r["ratio"] - r["binary_ms"] / r["real_ms"]) < 1e-9
    split = tb.step_split("mlp", 0.25, batch_size=16, threads=1, optimizer="bop", steps=2, warmup=1)
    assert set(split) == {"forward", "backward", "opt_step", "flips"} and all(v > 0 for v in split.values())


def test_convnet_rows_use_cifar_shaped_images_and_batches_larger_than_the_data_repeat():
    data = tb.synthetic_images(n=8)
    x, y = tb._batch(data, 20)
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    assert tb._data_for("binarynet").input_shape == (3, 32, 32)


def test_warm_startup_is_measured_in_process():
    out = tb.startup_warm(repeats=1)
    assert 0 < out["first_step_s"] < 60
