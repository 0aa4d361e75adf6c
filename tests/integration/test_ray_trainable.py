"""bnn_tune.trainable under Ray Tune: reports, checkpoints, exact resume, failures, PBT, acceptance.

All tests share the session Ray runtime (``ray_session`` in tests/conftest.py) and train tiny digits
runs (few epochs, ``max_steps_per_epoch``) so the Ray part of the suite stays short on 2 cores.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from bnn_tune.plugins._outcome import is_sub_epoch_result

pytest.importorskip("ray.tune")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

import torch  # noqa: E402
from ray import tune  # noqa: E402

import bnn_tune  # noqa: E402
from bnn_tune._trainable import CHECKPOINT_FILE, load_checkpoint_state, restore_trainer  # noqa: E402

TINY = {"dataset": "digits", "optimizer": "bop", "max_steps_per_epoch": 6, "width": 0.5}


def _run_config(tmp_path: Path, name: str, **kwargs) -> tune.RunConfig:
    return tune.RunConfig(name=name, storage_path=str(tmp_path.resolve()), verbose=0, **kwargs)


# ---------------------------------------------------------------- without Ray: the resume primitive
def test_restore_trainer_continues_exactly_with_schedules():
    """2 epochs + checkpoint + 2 resumed epochs == 4 straight epochs (weights, flips, schedule)."""
    cfg = {**TINY, "epochs": 4, "gamma_schedule": {"type": "step", "every": 1, "factor": 0.5}}
    straight = bnn_tune.Trainer(cfg)
    hist = [straight.train_epoch().as_dict() for _ in range(4)]

    first = bnn_tune.Trainer(cfg)
    first.train_epoch(), first.train_epoch()
    state = first.state_dict()
    resumed = bnn_tune.Trainer(cfg)
    assert restore_trainer(resumed, state) == {}
    rest = [resumed.train_epoch().as_dict() for _ in range(2)]
    for a, b in zip(hist[2:], rest):
        for key in ("epoch", "train_loss", "val_acc", "flip_rate", "hp/gamma"):
            assert a[key] == b[key], key
    for (k, v), v2 in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(v, v2), k


def test_restore_trainer_applies_mutated_hyperparameters():
    cfg = {**TINY, "epochs": 3, "gamma": 1e-3, "threshold": 1e-6,
           "gamma_schedule": {"type": "step", "every": 1, "factor": 0.5}}
    donor = bnn_tune.Trainer(cfg)
    donor.train_epoch()
    mutated = bnn_tune.Trainer({**cfg, "gamma": 4e-3, "threshold": 1e-7})
    changed = restore_trainer(mutated, donor.state_dict())
    assert set(changed) == {"gamma", "threshold"}
    group = mutated.optimizer.optimizers["binary"].param_groups[0]
    # the schedule keeps its position (1 epoch: factor 0.5) and restarts from the new initial gamma
    assert group["gamma"] == pytest.approx(4e-3 * 0.5)
    assert group["threshold"] == 1e-7
    assert mutated.epoch == 1
    assert mutated.train_epoch().epoch == 2


# ---------------------------------------------------------------- with Ray
def test_tuner_reports_every_epoch_with_a_loadable_checkpoint(ray_session, tmp_path):
    tuner = tune.Tuner(
        bnn_tune.trainable,
        param_space={**TINY, "epochs": 2},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
        run_config=_run_config(tmp_path, "report"),
    )
    result = tuner.fit()[0]
    assert result.error is None
    m = result.metrics
    for key in ("val_acc", "val_loss", "train_acc", "train_loss", "flip_rate", "log_flip_rate", "epoch",
                "hp/gamma", "hp/threshold", "node_id"):
        assert key in m, key
    assert any(k.startswith("flip_rate/") for k in m)
    assert m["epoch"] == 2 and m["training_iteration"] == 2
    assert m["log_flip_rate"] == pytest.approx(math.log(m["flip_rate"] + math.exp(-9)))
    df = result.metrics_dataframe  # one result per epoch (trainable_sub_epoch adds the first epoch's points)
    assert list(df["training_iteration"]) == [1, 2] and list(df["epoch"]) == [1, 2]
    state = load_checkpoint_state(result.checkpoint.path)  # weights_only=True inside
    assert state["epoch"] == 2 and state["config"]["optimizer"] == "bop"
    assert "model" in state and os.path.isfile(os.path.join(result.checkpoint.path, CHECKPOINT_FILE))


def test_bad_config_and_nan_fail_alone(ray_session, tmp_path):
    analysis = tune.run(
        bnn_tune.trainable,
        config={**TINY, "optimizer": "latent_adam", "epochs": 2,
                "lr": tune.grid_search([1e-3, -1.0, 1e37])},
        storage_path=str(tmp_path), name="failures", raise_on_failed_trial=False, verbose=0,
        metric="val_acc", mode="max",
    )
    by_lr = {t.config["lr"]: t for t in analysis.trials}
    assert by_lr[1e-3].status == "TERMINATED" and by_lr[1e-3].last_result["epoch"] == 2
    assert by_lr[-1.0].status == "ERROR" and by_lr[1e37].status == "ERROR"
    assert "`lr` must be a finite number > 0, but got lr=-1.0." in by_lr[-1.0].get_error()
    assert "ConfigError" in by_lr[-1.0].get_error()
    assert "FloatingPointError" in by_lr[1e37].get_error()
    assert "became non-finite at epoch 1" in by_lr[1e37].get_error()


def test_pbt_mutates_gamma_and_threshold_through_checkpoints(ray_session, tmp_path):
    """PBT copies the better trial's checkpoint and mutates gamma/threshold; the resumed optimizer uses
    the new values (reported as hp/gamma, hp/threshold) and the epoch counter continues."""
    from ray.tune.schedulers import PopulationBasedTraining

    class Recorder(tune.Callback):
        """Every result as the driver sees it, with the trial's config at that moment."""

        def __init__(self):
            self.rows = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if is_sub_epoch_result(result):  # the first epoch's flip-rate points carry no hyperparameters
                return
            self.rows.setdefault(trial.trial_id, []).append(
                (result["epoch"], result["hp/gamma"], result["hp/threshold"],
                 trial.config["gamma"], trial.config["threshold"]))

    gammas, thresholds = [2e-3, 5e-3], [1e-7, 1e-6]
    pbt = PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=2, quantile_fraction=0.5,
        resample_probability=1.0, hyperparam_mutations={"gamma": gammas, "threshold": thresholds},
        synch=True,
    )
    recorder = Recorder()
    analysis = tune.run(
        bnn_tune.trainable,
        config={**TINY, "epochs": 5, "gamma": tune.grid_search([1e-5, 1e-3]), "threshold": 1e-3},
        scheduler=pbt, metric="val_acc", mode="max", reuse_actors=True, callbacks=[recorder],
        storage_path=str(tmp_path), name="pbt", verbose=0, raise_on_failed_trial=False,
    )
    assert [t.status for t in analysis.trials] == ["TERMINATED", "TERMINATED"]
    exploited = 0
    for rows in recorder.rows.values():
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5], rows  # the epoch counter continues through exploits
        # every epoch ran with the trial's config of that moment; PBT may mutate trial.config while it
        # processes the result that triggers the exploit (before callbacks see it), so a result is
        # checked against the config recorded with it or with the previous result
        for i, row in enumerate(rows):
            candidates = [row[3:]] + ([rows[i - 1][3:]] if i else [])
            assert any(row[1:3] == pytest.approx(c) for c in candidates), rows
        assert rows[-1][1:3] == pytest.approx(trial_config := rows[-1][3:]), trial_config
        if rows[-1][3] in gammas:  # only PBT puts these values into a config
            exploited += 1
            assert rows[0][3] in (1e-5, 1e-3) and rows[0][4] == 1e-3  # started on its initial config
            switch = next(i for i, r in enumerate(rows) if r[1] in gammas)
            assert switch in (2, 4)  # after a perturbation interval, continuing from the copied checkpoint
    assert exploited >= 1


def test_acceptance_tune_run_bop_space_with_flip_rate_scheduler(ray_session, tmp_path):
    """The issue's acceptance: tune.run over bnn_tune.search_spaces.bop.ray_space() on digits with the flip-rate
    scheduler (wrapping ASHA) completes and its best trial reaches >= 0.90 validation accuracy."""
    import random

    import numpy as np
    from ray.tune.schedulers import ASHAScheduler

    from bnn_tune.plugins.ray import FlipRateScheduler
    from bnn_tune.search_spaces import bop

    random.seed(0)
    np.random.seed(0)
    epochs = 5
    scheduler = FlipRateScheduler(ASHAScheduler(max_t=epochs, grace_period=2), metric="val_acc", mode="max")
    analysis = tune.run(
        bnn_tune.trainable,
        config=bop.ray_space() | {"dataset": "digits", "epochs": epochs},
        num_samples=4,
        stop={"training_iteration": epochs},
        scheduler=scheduler,
        storage_path=str(tmp_path), name="acceptance", verbose=0, raise_on_failed_trial=False,
    )
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 4
    best = analysis.get_best_trial("val_acc", "max", scope="all")
    best_acc = best.metric_analysis["val_acc"]["max"]
    assert best_acc >= 0.90, (best.config, best_acc)


def test_collapsing_config_is_stopped_with_its_reason(ray_session, tmp_path):
    """End to end with the scheduler exactly as ``bnn-tune search --backend ray`` builds it: a healthy Bop
    run finishes; a run whose threshold freezes every binary weight (log flip rate -9 from epoch 1) is
    stopped right after the warm-up, and its result, its trial directory and the scheduler say why. The
    frozen run goes first (one trial at a time): alone, ASHA has no rung to compare it with, so the stop
    is the flip rule's."""
    from bnn_tune.plugins.ray import read_stop_reason
    from bnn_tune.search.ray import make_scheduler

    epochs = 6  # warm-up max(2, 6 // 5) = 2 epochs: the frozen run is judged first at epoch 3
    scheduler = make_scheduler("flip", epochs)
    tuner = tune.Tuner(
        bnn_tune.trainable,
        param_space={**TINY, "max_steps_per_epoch": 8, "epochs": epochs, "threshold": tune.grid_search([1.0, 1e-8])},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", scheduler=scheduler, max_concurrent_trials=1),
        run_config=_run_config(tmp_path, "collapse"),
    )
    grid = tuner.fit()
    by_threshold = {r.config["threshold"]: r for r in grid}
    healthy, frozen = by_threshold[1e-8], by_threshold[1.0]
    assert healthy.metrics["training_iteration"] == epochs and read_stop_reason(healthy) is None
    assert frozen.metrics["training_iteration"] == 3
    reason = read_stop_reason(frozen)
    assert reason.startswith("flip-collapse: ") and "never rose above the floor" in reason
    (trial_id,) = scheduler.stop_reasons
    assert reason.endswith(scheduler.stop_reasons[trial_id])
    assert read_stop_reason(frozen.path) == scheduler.stop_reasons[trial_id]  # the file in the trial dir


def test_bnn_tune_trainable_is_the_function_and_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, inspect, bnn_tune; assert 'ray' not in sys.modules, 'import bnn_tune imported ray'\n"
            "import bnn_tune.search.ray, bnn_tune._trainable\n"
            "assert inspect.isfunction(bnn_tune.trainable), bnn_tune.trainable\n"
            "assert inspect.isfunction(bnn_tune.with_resources)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
