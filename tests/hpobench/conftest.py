"""A synthetic recorded table in the real file format, for fast replay tests (no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bnn_tune.hpobench.record import CURVES, grid_configs
from bnn_tune.hpobench.tasks import SUB_EPOCH_POINTS, get_task


def synthetic_table(path, task_name: str = "bop_digits") -> None:
    """Bop-like curves: frozen (threshold >= 1e-5 or gamma <= 1e-5: flip rate 0, accuracy flat at 0.3),
    one late bloomer (gamma 1e-4, threshold 1e-8: slow start, best at the end), the rest fast and good."""
    task = get_task(task_name)
    configs = grid_configs(task)
    n_c, n_s, n_e = len(configs), 2, task.epochs
    a = {k: np.zeros((n_c, n_s, n_e), np.float32) for k in CURVES}
    a["sub_flip_rate"] = np.zeros((n_c, n_s, n_e * SUB_EPOCH_POINTS), np.float32)
    t = np.arange(1, n_e + 1)
    for ci, cfg in enumerate(configs):
        frozen = cfg["threshold"] >= 1e-5 or cfg["gamma"] <= 1e-5
        bloomer = cfg["gamma"] == 1e-4 and cfg["threshold"] == 1e-8
        for s in range(n_s):
            if frozen:
                acc, fr = np.full(n_e, 0.3), np.zeros(n_e)
            elif bloomer:
                acc, fr = 0.2 + 0.78 * t / n_e, np.full(n_e, 1e-3)
            else:
                q = 0.8 + 0.1 * math.log10(cfg["gamma"] / 1e-6) / 5 - 0.01 * s
                acc, fr = q * (1 - np.exp(-t / 2)), np.full(n_e, 1e-2)
            a["val_acc"][ci, s] = acc
            a["test_acc"][ci, s] = acc - 0.01
            a["flip_rate"][ci, s] = fr
            a["log_flip_rate"][ci, s] = np.log(fr + math.exp(-9))
            a["sub_flip_rate"][ci, s] = np.repeat(fr, SUB_EPOCH_POINTS)
    meta = {"task": task.name, "space": task.space, "base": task.base, "grid": {k: list(v) for k, v in task.grid.items()},
            "seeds": [0, 1], "epochs": n_e, "sub_epoch_points": SUB_EPOCH_POINTS, "configs": configs,
            "command": "synthetic", "date": "", "machine": "", "wall_seconds": 0, "run_seconds": 0}
    a["completed"] = np.ones((n_c, n_s), bool)
    np.savez_compressed(path / f"{task_name}.npz", meta=np.array(json.dumps(meta)), **a)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hpobench")
    synthetic_table(d)
    return d
