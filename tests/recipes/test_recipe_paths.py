"""Recipes through the Optuna objective (pruner steps, shared twin cache), export, the spaces and Ray."""

from __future__ import annotations

import json

import pytest
import torch

import bnn_tune
from bnn_tune import recipes

TINY = {"dataset": "synthetic", "width": 0.125, "batch_size": 32, "max_steps_per_epoch": 3, "epochs": 2,
        "teacher_epochs": 2}


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    recipes.clear_memory_cache()
    yield
    recipes.clear_memory_cache()


def _space(trial):
    return {"optimizer": "bop", "teacher": "twin",
            "init_from": trial.suggest_categorical("init_from", [None, "twin"]),
            "gamma": trial.suggest_float("gamma", 1e-3, 1e-2, log=True)}


def test_objective_reports_at_trial_epochs_shares_the_twin_and_exports(tmp_path):
    optuna = pytest.importorskip("optuna")
    from bnn_tune.export import export_best, load_packed

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    obj = bnn_tune.objective(_space, base_config=TINY, artifact_dir=tmp_path / "run")
    study.optimize(obj, n_trials=2)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), \
        [t.user_attrs.get("bnn_tune:fail_reason") for t in study.trials]
    for t in study.trials:
        # the twin's 2 epochs come first: the pruner sees steps 3 and 4 (trial-epochs), not 1 and 2
        assert sorted(t.intermediate_values) == [3, 4]
        assert t.user_attrs["bnn_tune:config"]["teacher_cache_dir"] == str((tmp_path / "run" / "teachers").resolve())
    # one twin for both trials (same data/model/seed), on disk under the run folder
    assert len(list((tmp_path / "run" / "teachers").glob("twin-*.safetensors"))) == 1
    out = tmp_path / "export"
    summary = export_best(study, out, bench=False)
    assert summary["weights"] == "checkpoint"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher"] == "twin"
    packed = load_packed(out / "model.bnn.safetensors")
    assert packed is not None


def test_export_from_a_two_step_checkpoint_does_not_retrain_a_twin(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from bnn_tune.export import export_best

    study = optuna.create_study(direction="maximize")
    space = lambda trial: {"optimizer": "latent_adam", "recipe": "two_step", "init_from": "twin"}  # noqa: E731
    study.optimize(bnn_tune.objective(space, base_config=TINY, artifact_dir=tmp_path / "run"), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE

    def no_twin(*_a, **_k):
        raise AssertionError("export trained a twin")

    monkeypatch.setattr(recipes, "train_twin", no_twin)
    recipes.clear_memory_cache()
    summary = export_best(study, tmp_path / "export", bench=False)
    assert summary["weights"] == "checkpoint" and summary["agreement"] == 1.0


def test_pruned_trial_with_a_teacher_is_pruned_at_its_trial_epoch(tmp_path):
    optuna = pytest.importorskip("optuna")

    class PruneAtFirstReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(direction="maximize", pruner=PruneAtFirstReport())
    study.optimize(bnn_tune.objective(_space, base_config={**TINY, "epochs": 3}), n_trials=1)
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.PRUNED and list(t.intermediate_values) == [3]


# ---------------------------------------------------------------- search spaces (opt-in)
@pytest.mark.parametrize("name", ["bop", "bop2", "latent_adam", "bmd", "bnew", "filters"])
def test_with_recipes_samples_valid_configs_and_defaults_stay_recipe_free(name):
    optuna = pytest.importorskip("optuna")
    from bnn_tune import search_spaces
    from bnn_tune.config import TWO_STEP_OPTIMIZERS, TrialConfig
    from bnn_tune.search_spaces._common import with_recipes

    space = search_spaces.get(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = with_recipes(space.suggest)(trial)
        optimizer = params["optimizer"]
        TrialConfig.from_dict(params)  # every sampled recipe applies to this optimizer
        seen |= {(k, str(params.get(k))) for k in ("teacher", "init_from", "recipe")}
        study.tell(trial, 0.0)
    assert ("teacher", "twin") in seen and ("init_from", "twin") in seen
    assert (("recipe", "two_step") in seen) == (optimizer in TWO_STEP_OPTIMIZERS)
    # off by default: the space itself samples no recipe key
    plain = space.suggest(study.ask())
    assert not set(plain) & set(recipes.RECIPE_KEYS)


# ---------------------------------------------------------------- Ray
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ray_trainable_reports_trial_epochs_and_caches_the_twin_in_the_experiment(ray_session, tmp_path):
    pytest.importorskip("ray.tune")
    from ray import tune

    from bnn_tune._trainable import load_checkpoint_state

    tuner = tune.Tuner(
        bnn_tune.trainable,
        param_space={**TINY, "optimizer": "bop", "teacher": "twin", "init_from": "twin",
                     "gamma": tune.grid_search([1e-3, 2e-3])},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=1),
        run_config=tune.RunConfig(name="recipes", storage_path=str(tmp_path.resolve()), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    for result in grid:
        assert result.metrics["trial_epochs"] == 4 and result.metrics["epoch"] == 2
        state = load_checkpoint_state(result.checkpoint.to_directory())
        assert state["config"]["teacher"] == "twin"
        assert torch.is_tensor(next(iter(state["model"].values())))
    cached = list((tmp_path / "recipes" / "teachers").glob("twin-*.safetensors"))
    assert len(cached) == 1
