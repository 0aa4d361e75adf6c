"""The recorder on a two-step budget, and the sub-epoch flip rate in a live Optuna objective."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna
import pytest

from bnn_tune import objective
from bnn_tune.hpobench.record import grid_configs, record_run
from bnn_tune.hpobench.tasks import SUB_EPOCH_POINTS, get_task
from bnn_tune.objective import SUB_FLIP_RATE_ATTR
from bnn_tune.plugins.flip_sh import FlipSHPruner
from bnn_tune.plugins.optuna import PRUNE_REASON_ATTR


def test_record_run_curves_and_sub_epoch_rates():
    task = get_task("bop_digits")
    task = dataclasses.replace(task, base={**task.base, "epochs": 2, "max_steps_per_epoch": 16})
    assert len(grid_configs(task)) == len(task.grid["gamma"]) * len(task.grid["threshold"])
    out = record_run(task, {"gamma": 1e-2, "threshold": 0.0}, seed=0)
    assert all(len(out[k]) == 2 for k in ("val_acc", "test_acc", "flip_rate", "log_flip_rate"))
    sub = np.array(out["sub_flip_rate"]).reshape(2, SUB_EPOCH_POINTS)
    # 16 steps in 8 windows of 2 steps: the epoch flip rate is exactly the mean of its windows
    assert np.allclose(sub.mean(1), out["flip_rate"], rtol=1e-6)
    assert out["flip_rate"][0] > 0 and out["status"] == [1.0]
    assert out["log_flip_rate"][0] == pytest.approx(math.log(out["flip_rate"][0] + math.exp(-9)), rel=1e-6)


def test_live_objective_stops_a_frozen_run_inside_its_first_epoch():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=FlipSHPruner(sub_patience=2))
    space = lambda trial: {"optimizer": "bop", "gamma": 1e-3, "threshold": 1.0}  # noqa: E731  tau=1: frozen
    study.optimize(objective(space, base_config={"dataset": "digits", "epochs": 3, "max_steps_per_epoch": 16}),
                   n_trials=1)
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.PRUNED
    assert t.last_step is None  # stopped before the first epoch's report
    assert len(t.user_attrs[SUB_FLIP_RATE_ATTR]) == 2 and t.user_attrs[SUB_FLIP_RATE_ATTR][0] == pytest.approx(-9.0)
    assert t.user_attrs[PRUNE_REASON_ATTR].startswith("flip-early: ")
