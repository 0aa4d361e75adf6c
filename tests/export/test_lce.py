"""LCE export (issue 28): the Keras layer specs reproduce the packed model exactly (checked here without
TensorFlow, by running the specs with Keras' semantics in torch), a missing LCE environment is one error line,
and, in the LCE environment (``make test-lce``), the converted ``.tflite`` predicts what PyTorch predicts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnn_tune.cli import main
from bnn_tune.export import pack_model
from bnn_tune.export._lce import LceUnsupportedError, keras_specs
from bnn_tune.nn import build_model

from .test_packed_model import _randomize

LCE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-lce" / "bin" / "python"


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)  # larq's ste_sign: sign(0) = +1


def run_specs(specs, x: np.ndarray) -> np.ndarray:
    """Run Keras layer specs (NHWC) as Keras and larq define them (float64 torch ops)."""
    v = torch.from_numpy(x).double()
    for layer in specs.layers:
        cls, cfg = layer["class"], layer["config"]
        ws = [torch.from_numpy(specs.weights[k]).double() for k in layer["weights"]]
        if cls in ("QuantConv2D", "QuantDense"):
            if cfg.get("input_quantizer") == "ste_sign":
                v = _sign(v)
            kernel = _sign(ws[0]) if cfg.get("kernel_quantizer") == "ste_sign" else ws[0]
            bias = ws[1] if cfg["use_bias"] else None
            if cls == "QuantDense":
                v = v @ kernel + (0 if bias is None else bias)
                continue
            xc = v.permute(0, 3, 1, 2)
            if cfg["padding"] == "same":  # stride 1, odd kernel: (k - 1) / 2 per side, with pad_values
                kh, kw = cfg["kernel_size"]
                xc = F.pad(xc, ((kw - 1) // 2,) * 2 + ((kh - 1) // 2,) * 2, value=cfg.get("pad_values", 0.0))
            y = F.conv2d(xc, kernel.permute(3, 2, 0, 1), bias, tuple(cfg["strides"]))
            v = y.permute(0, 2, 3, 1)
        elif cls == "ZeroPadding2D":
            (t, b), (lf, r) = cfg["padding"]
            v = F.pad(v, (0, 0, lf, r, t, b))
        elif cls == "BatchNormalization":
            gamma, beta, mean, var = ws
            v = gamma * (v - mean) / torch.sqrt(var + cfg["epsilon"]) + beta
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            pool = F.max_pool2d if cls == "MaxPooling2D" else F.avg_pool2d
            v = pool(v.permute(0, 3, 1, 2), cfg["pool_size"], cfg["strides"]).permute(0, 2, 3, 1)
        elif cls == "GlobalAveragePooling2D":
            v = v.mean(dim=(1, 2), keepdim=True)
        elif cls == "ReLU":
            v = F.relu(v)
        elif cls == "Flatten":
            v = v.reshape(len(v), -1)
        elif cls == "Permute":
            v = v.permute(0, *cfg["dims"])
        elif cls == "Reshape":
            v = v.reshape(len(v), *cfg["target_shape"])
        else:
            raise AssertionError(f"no Keras semantics for {cls} in this test")
    return v.numpy()


def _to_keras(x: torch.Tensor) -> np.ndarray:
    return (x.permute(0, 2, 3, 1) if x.ndim == 4 else x).numpy()


@pytest.mark.parametrize("name,shape,width", [("binarynet", (3, 16, 16), 0.125), ("vgg_small", (3, 16, 16), 0.125),
                                              ("mlp", (40,), 0.3), ("mlp", (1, 8, 8), 0.125),
                                              ("binarynet", (1, 8, 8), 0.0625)])
def test_keras_specs_compute_the_packed_model(name, shape, width):
    """Every threshold, pre-flip, AND-pool and flatten order survives the mapping: logits as the packed model's."""
    torch.manual_seed(0)
    model = _randomize(build_model(name, shape, 10, width=width), seed=1)  # ~1/3 negative BN scales, some zero
    pm = pack_model(model, input_shape=shape)
    assert any(op.flip is not None and op.flip.any() for op in pm.ops if hasattr(op, "flip"))
    specs = keras_specs(pm.ops, shape)
    x = torch.randn(64, *shape) * 2
    got = run_specs(specs, _to_keras(x))
    np.testing.assert_allclose(got, pm.logits(x), rtol=1e-5, atol=1e-4)
    binary = [layer for layer in specs.layers if layer["config"].get("kernel_quantizer") == "ste_sign"]
    assert len(binary) == sum(op.kind.startswith("binary_") for op in pm.ops)
    assert all(layer["class"] == "QuantConv2D" for layer in binary)  # dense binary layers too (LCE keeps them binary)


def test_keras_specs_keep_pytorch_flatten_order_for_float_layers():
    # a batch-norm after a flatten reads the NCHW vector: the specs permute the NHWC map back before flattening
    model = _randomize(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.BatchNorm1d(48),
                                           torch.nn.ReLU(), torch.nn.Linear(48, 5)), seed=0)
    pm = pack_model(model, input_shape=(2, 6, 6))
    specs = keras_specs(pm.ops, (2, 6, 6))
    assert [layer["class"] for layer in specs.layers][:4] == ["QuantConv2D", "Permute", "Flatten", "BatchNormalization"]
    x = torch.randn(8, 2, 6, 6)
    np.testing.assert_allclose(run_specs(specs, _to_keras(x)), pm.logits(x), rtol=1e-5, atol=1e-5)


def test_keras_specs_refuse_what_lce_cannot_express():
    pm = pack_model(build_model("birealnet18", (3, 16, 16), 10, width=0.125).eval())
    with pytest.raises(LceUnsupportedError, match=r"^Layer '.*' \(residual\) has no LCE form: .*sequential"):
        keras_specs(pm.ops, (3, 16, 16))
    m = build_model("vgg_small", (3, 16, 16), 10, width=0.125).eval()
    for mod in m.modules():
        if hasattr(mod, "pad_value") and mod.pad_value == 1.0:
            mod.pad_value = -1.0
    pm = pack_model(m)
    with pytest.raises(LceUnsupportedError, match="pads its binary input with -1; LCE pads binary convs with \\+1"):
        keras_specs(pm.ops, (3, 16, 16))


def test_missing_lce_environment_is_one_error_line(tmp_path, capsys, monkeypatch):
    exp = tmp_path / "exp" / "trial_0"
    exp.mkdir(parents=True)
    (exp / "params.json").write_text(json.dumps({"dataset": "synthetic", "model": "mlp", "width": 0.125,
                                                 "epochs": 1, "max_steps_per_epoch": 2}))
    (exp / "result.json").write_text(json.dumps({"val_acc": 0.5}))
    monkeypatch.setenv("BNN_TUNE_LCE_PYTHON", str(tmp_path / "no-such-python"))
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "exp"), "--out", str(out), "--no-bench", "--format", "lce"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: LCE export needs TensorFlow, larq and Larq Compute")
    assert "run `make lce-env`" in err and "larq-compute-engine==0.16.0" in err
    assert not out.exists()  # refused before training or writing anything


def _lce_python() -> str | None:
    env = os.environ.get("BNN_TUNE_LCE_PYTHON")
    path = Path(env) if env else LCE_PYTHON
    return str(path) if path.is_file() else None


@pytest.mark.lce
@pytest.mark.skipif(_lce_python() is None, reason="no LCE environment (.venv-lce or $BNN_TUNE_LCE_PYTHON): "
                                                  "run `make test-lce`, which makes it with `make lce-env`")
@pytest.mark.parametrize("model", ["binarynet", "vgg_small"])
def test_export_lce_predicts_what_pytorch_predicts(model, tmp_path, capsys):
    """A trained model through `bnn-tune export --format lce`: LCE's interpreter gives PyTorch's class on every
    test input, and the binary layers (convs and dense) are LceBconv2d."""
    from bnn_tune import Trainer

    exp = tmp_path / "exp" / "trial_0"
    cfg = {"dataset": "digits", "model": model, "width": 0.25, "epochs": 1, "max_steps_per_epoch": 20,
           "batch_size": 64, "seed": 0}
    ckpt = exp / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    (exp / "params.json").write_text(json.dumps(cfg))
    (exp / "result.json").write_text(json.dumps({"val_acc": 0.9, "checkpoint_dir_name": "checkpoint_000000"}))
    t = Trainer(cfg)
    t.train_epoch()
    t.save(str(ckpt / "checkpoint.pt"))
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "exp"), "--out", str(out), "--no-bench", "--format", "lce"]) == 0
    assert "LceBconv2d" in capsys.readouterr().out
    summary = json.loads((out / "export.json").read_text())
    lce = summary["lce"]
    assert (out / "model.tflite").stat().st_size == lce["bytes"] > 0
    n_binary = 7 if model == "binarynet" else 5  # binarynet: 5 convs + 2 dense; vgg_small: 5 convs
    assert lce["ops"]["LceBconv2d"] == n_binary
    assert lce["agreement"] == 1.0, lce
    assert lce["lce_test_acc"] == summary["torch_test_acc"]
    assert lce["versions"]["larq-compute-engine"] == "0.16.0"
