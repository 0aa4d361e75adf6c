"""Digits load without importing scikit-learn, identical to ``sklearn.datasets.load_digits`` (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bnn_tune.data import load_dataset
from bnn_tune.data._offline import _digits_arrays

ROOT = Path(__file__).resolve().parents[2]


def test_digits_arrays_equal_sklearn_load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    data, target = _digits_arrays()
    assert np.array_equal(data, d.data) and data.dtype == d.data.dtype
    assert np.array_equal(target, d.target)


def test_loading_digits_does_not_import_sklearn_and_is_cached_per_process():
    code = ("import sys; from bnn_tune.data import load_dataset; a = load_dataset('digits'); "
            "b = load_dataset('digits'); assert a is b; assert 'sklearn' not in sys.modules, 'sklearn imported'")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(load_dataset("digits").y_train) > 0
