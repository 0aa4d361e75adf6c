"""export_best on a real Ray Tune experiment directory (slow: starts Ray)."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _trainable(config):
    """Minimal stand-in for bnn_tune.trainable: report + checkpoint.pt (Trainer.state_dict) per epoch."""
    from ray import tune

    from bnn_tune import Trainer

    t = Trainer(config)
    while t.epoch < t.config.epochs:
        m = t.train_epoch()
        with tempfile.TemporaryDirectory() as d:
            t.save(os.path.join(d, "checkpoint.pt"))
            tune.report(m.as_dict(), checkpoint=tune.Checkpoint.from_directory(d))


def test_export_best_real_ray_experiment(ray_session, tmp_path):
    import sys

    import ray
    from ray import tune

    from bnn_tune.export import export_best, load_packed

    # the session's Ray runtime (its own temp dir; workers import this checkout): tests/ is not importable
    # by the workers, so this module's trainable travels by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    space = {"dataset": "synthetic", "model": "mlp", "width": 0.125, "epochs": 2, "max_steps_per_epoch": 2,
             "seed": tune.grid_search([0, 1])}
    tuner = tune.Tuner(_trainable, param_space=space,
                       tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
                       run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path / "ray")))
    grid = tuner.fit()
    best = grid.get_best_result()
    from_dir = export_best(str(tmp_path / "ray" / "exp"), tmp_path / "out_dir", bench=False)
    from_grid = export_best(grid, tmp_path / "out_grid", bench=False)
    assert from_dir["weights"] == from_grid["weights"] == "checkpoint"
    assert json.loads((tmp_path / "out_dir" / "config.json").read_text())["seed"] == best.config["seed"]
    assert from_dir["agreement"] == 1.0
    assert load_packed(tmp_path / "out_grid" / "model.bnn.safetensors").config["seed"] == best.config["seed"]
