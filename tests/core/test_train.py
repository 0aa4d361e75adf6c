import dataclasses
import math

import pytest
import torch

from bnn_tune import Trainer, fit
from bnn_tune.data import load_dataset
from bnn_tune.nn import binarize, is_binary_parameter

QUICK = {"dataset": "synthetic", "epochs": 2, "max_steps_per_epoch": 5, "width": 0.25}


def _metrics(result):
    return [{k: v for k, v in m.as_dict().items() if k != "epoch_time"} for m in result.history]


def test_deterministic_rerun_gives_identical_metrics():
    a = fit({**QUICK, "seed": 3})
    b = fit({**QUICK, "seed": 3})
    c = fit({**QUICK, "seed": 4})
    assert _metrics(a) == _metrics(b)
    assert _metrics(a) != _metrics(c)


def test_epoch_metrics_contents():
    r = fit(QUICK)
    d = r.history[-1].as_dict()
    for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "flip_rate", "log_flip_rate", "epoch_time"):
        assert key in d
    layer_keys = [k for k in d if k.startswith("flip_rate/")]
    assert layer_keys == ["flip_rate/3", "flip_rate/5"]  # the two binary hidden layers of the MLP
    assert d["log_flip_rate"] == pytest.approx(math.log(d["flip_rate"] + math.exp(-9)))
    assert r.status == "completed" and 0 <= r.test_acc <= 1 and len(r.history) == 2


def test_binary_mlp_learns_digits():
    r = fit({"dataset": "digits", "epochs": 6, "seed": 0})
    assert r.best_val_acc >= 0.90, r.best_val_acc
    # what the model computes with is binary: every binary weight's forward value is +-1
    for p in r.model.parameters():
        if is_binary_parameter(p):
            assert set(binarize(p).unique().tolist()) <= {-1.0, 1.0}


def test_resume_continues_exactly(tmp_path):
    cfg = {**QUICK, "epochs": 3, "lr_schedule": {"type": "step", "every": 1, "factor": 0.5}}
    straight = Trainer(cfg)
    straight.run()
    first = Trainer(cfg)
    first.train_epoch()
    first.train_epoch()
    first.save(str(tmp_path / "ckpt.pt"))
    resumed = Trainer(cfg)
    resumed.load(str(tmp_path / "ckpt.pt"))
    assert resumed.epoch == 2
    resumed.train_epoch()
    for name, p in straight.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name
    a, b = straight.history[-1].as_dict(), resumed.history[-1].as_dict()
    a.pop("epoch_time"), b.pop("epoch_time")
    assert a == b
    assert resumed.optimizer.optimizers["real"].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)


def test_nan_loss_stops_with_clear_status():
    data = load_dataset("synthetic")
    bad = dataclasses.replace(data, x_train=torch.full_like(data.x_train, float("nan")))
    r = fit(QUICK, data=bad)
    assert r.status == "diverged" and "non-finite" in r.message and len(r.history) == 1
    assert math.isnan(r.test_acc)


def test_callback_can_stop_and_exceptions_propagate():
    r = fit({**QUICK, "epochs": 5}, callback=lambda m, t: m.epoch >= 2)
    assert r.status == "stopped" and len(r.history) == 2

    class Boom(Exception):
        pass

    def cb(m, t):
        raise Boom

    with pytest.raises(Boom):
        fit(QUICK, callback=cb)


def test_cuda_device_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
        Trainer({**QUICK, "device": "cuda"})


def test_checkpoint_keeps_and_restores_the_cuda_rng_state(monkeypatch):
    """On a GPU the checkpoint holds the device's CUDA RNG state and loading puts it back (CUDA faked:
    the Trainer runs on the CPU, its device claims cuda:0, torch.cuda's RNG calls are recorded)."""
    import torch

    from bnn_tune import Trainer

    cfg = {"dataset": "synthetic", "epochs": 1, "max_steps_per_epoch": 2, "width": 0.25}
    cpu_state = Trainer(cfg).state_dict()
    assert "cuda_rng" not in cpu_state  # nothing to keep on the CPU

    stream = torch.arange(16, dtype=torch.uint8)
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": calls.append(("get", device)) or stream)
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device="cuda": calls.append(("set", device, state.clone())))
    t = Trainer(cfg)
    t.device = torch.device("cuda:0")
    state = t.state_dict()
    assert torch.equal(state["cuda_rng"], stream) and calls == [("get", torch.device("cuda:0"))]

    resumed = Trainer(cfg)
    resumed.device = torch.device("cuda:0")
    resumed.load_state_dict(state)
    assert calls[-1][0] == "set" and calls[-1][1] == torch.device("cuda:0") and torch.equal(calls[-1][2], stream)

    calls.clear()
    Trainer(cfg).load_state_dict(state)  # a GPU checkpoint resumed on the CPU: the CUDA state is not used
    cpu_resume = Trainer(cfg)
    cpu_resume.device = torch.device("cuda:0")
    cpu_resume.load_state_dict(cpu_state)  # a CPU checkpoint resumed on a GPU: nothing to restore
    assert calls == []
