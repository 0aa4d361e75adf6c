"""bnn_tune.objective with real (tiny) trainings: series in user attrs, checkpoints, failures, pruning."""

from __future__ import annotations

import math
import subprocess
import sys

import optuna
import pytest
import torch

import bnn_tune
from bnn_tune.data import load_dataset
from bnn_tune.plugins.optuna import FlipRatePruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {"dataset": "digits", "epochs": 3, "max_steps_per_epoch": 4, "width": 0.125, "batch_size": 32}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.2, root="data", download=False)


def test_completed_trials_record_series_config_and_checkpoint(tmp_path, digits):
    study = optuna.create_study(direction="maximize")
    obj = bnn_tune.objective("latent_adam", base_config=TINY, artifact_dir=tmp_path, data=digits)
    study.optimize(obj, n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in study.trials:
        ua = t.user_attrs
        assert len(ua["bnn_tune:log_flip_rate"]) == 3 and all(-9.0 <= x <= 0.0 for x in ua["bnn_tune:log_flip_rate"])
        assert ua["bnn_tune:val_acc"][-1] == pytest.approx(t.value)
        assert sorted(t.intermediate_values) == [1, 2, 3]
        assert ua["bnn_tune:val_acc"] == [t.intermediate_values[s] for s in (1, 2, 3)]
        assert ua["bnn_tune:layer_log_flip_rate"] and all(len(v) == 3 for v in ua["bnn_tune:layer_log_flip_rate"].values())
        cfg = ua["bnn_tune:config"]
        assert cfg["optimizer"] == "latent_adam" and cfg["epochs"] == 3
        assert cfg["latent_lr"] == pytest.approx(t.params["latent_lr"])
        path = ua["bnn_tune:checkpoint"]
        assert path == str(tmp_path.resolve() / f"trial_{t.number}" / "checkpoint.pt")
        state = torch.load(path, weights_only=True)
        assert state["epoch"] == 3 and state["config"]["latent_lr"] == cfg["latent_lr"]


def test_space_values_override_base_config(digits):
    study = optuna.create_study(direction="maximize")
    space = lambda trial: {"optimizer": "latent_adam", "lr": trial.suggest_float("lr", 2e-3, 2e-3)}  # noqa: E731
    study.optimize(bnn_tune.objective(space, base_config={**TINY, "epochs": 1, "lr": 1e-2}, data=digits), n_trials=1)
    assert study.trials[0].user_attrs["bnn_tune:config"]["lr"] == 2e-3


def test_invalid_configs_fail_alone_and_the_study_goes_on(digits):
    calls = []

    def space(trial):
        calls.append(trial.number)
        x = trial.suggest_int("x", 0, 10)
        if trial.number == 0:
            return {"optimizer": "latent_adam", "epochs": 0}  # out of range
        if trial.number == 1:
            return {"optimizer": "latent_adam", "gama": 1e-3}  # typo
        if trial.number == 2:
            raise RuntimeError("space bug")
        return {"optimizer": "latent_adam", "seed": x}

    study = optuna.create_study(direction="maximize")
    study.optimize(bnn_tune.objective(space, base_config={**TINY, "epochs": 1}, data=digits), n_trials=4)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "FAIL", "FAIL", "COMPLETE"]
    reasons = [t.user_attrs.get("bnn_tune:fail_reason", "") for t in study.trials]
    assert "`epochs` must be an integer >= 1, but got epochs=0" in reasons[0]
    assert "Unknown key 'gama'" in reasons[1]
    assert "RuntimeError: space bug" in reasons[2]
    assert study.trials[0].user_attrs["bnn_tune:config"]["epochs"] == 0  # what was tried is kept


def test_diverging_training_fails_alone(digits):
    import dataclasses

    # NaN inputs make the loss non-finite: fit() stops the run as "diverged"; the trial fails alone
    poisoned = dataclasses.replace(digits, x_train=torch.full_like(digits.x_train, float("nan")))
    study = optuna.create_study(direction="maximize")
    study.optimize(bnn_tune.objective("latent_adam", base_config=TINY, data=poisoned), n_trials=2)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert "non-finite" in study.trials[0].user_attrs["bnn_tune:fail_reason"]
    study.optimize(bnn_tune.objective("latent_adam", base_config=TINY, data=digits), n_trials=1)
    assert study.trials[-1].state.name == "COMPLETE"


def test_frozen_binary_weights_are_pruned_with_a_reason(digits):
    # a latent step of 1e-9 never moves a latent weight across zero: no flips, the binary weights are frozen
    def space(trial):
        lr = trial.suggest_float("latent_lr", 1e-9, 1e-9)
        return {"optimizer": "latent_adam", "latent_lr": lr, "init_scale": 1.0}

    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=1, patience=1))
    study.optimize(bnn_tune.objective(space, base_config={**TINY, "epochs": 5}, data=digits), n_trials=1)
    t = study.trials[0]
    # the first n_warmup_steps reports are never judged (as the Ray stopper): judged at epoch 2
    assert t.state.name == "PRUNED" and t.last_step == 2
    assert t.user_attrs["bnn_tune:log_flip_rate"] == [pytest.approx(-9.0)] * 2
    assert "frozen" in t.user_attrs["bnn_tune:prune_reason"]


def test_objective_is_picklable_and_reachable_as_attribute():
    import pickle

    obj = bnn_tune.objective("bop", base_config={"epochs": 2})
    clone = pickle.loads(pickle.dumps(obj))
    assert clone.base_config == {"epochs": 2} and clone.suggest.__name__ == "suggest"
    import bnn_tune.objective as module

    assert callable(module) and bnn_tune.objective("latent_adam").suggest.__module__ == "bnn_tune.search_spaces.latent_adam"


def test_bad_space_arguments():
    with pytest.raises(ValueError, match="Unknown search space 'nope'"):
        bnn_tune.objective("nope")
    with pytest.raises(TypeError, match="`space` must be a search-space name, module or callable"):
        bnn_tune.objective(42)
    with pytest.raises(TypeError, match="`base_config` must be a mapping"):
        bnn_tune.objective("bop", base_config=[1])


def test_import_bnn_tune_objective_does_not_import_optuna():
    code = "import sys, bnn_tune, bnn_tune.objective; assert 'optuna' not in sys.modules, 'optuna imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_value_is_the_last_epoch_accuracy(digits):
    study = optuna.create_study(direction="maximize")
    study.optimize(bnn_tune.objective("latent_adam", base_config=TINY, data=digits), n_trials=1)
    t = study.trials[0]
    assert math.isclose(t.value, t.intermediate_values[3])


def test_pruner_is_not_asked_after_the_last_epoch(digits):
    asked = []

    class Recorder(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            asked.append(trial.last_step)
            return True

    study = optuna.create_study(direction="maximize", pruner=Recorder())
    study.optimize(bnn_tune.objective("latent_adam", base_config={**TINY, "epochs": 1}, data=digits), n_trials=1)
    assert study.trials[0].state.name == "COMPLETE" and asked == []
    study.optimize(bnn_tune.objective("latent_adam", base_config=TINY, data=digits), n_trials=1)
    assert study.trials[1].state.name == "PRUNED" and asked == [1]
