"""``flip-early`` acts inside the first epoch in both backends: the same frozen config with the same seed is stopped
after the same number of sub-epoch points, by the same rule, by the Optuna pruner (through :func:`bnn_tune.objective`)
and by the Ray scheduler (fed :func:`bnn_tune.trainable`'s own result stream, in-process)."""

from __future__ import annotations

import math

import optuna
import pytest

pytest.importorskip("ray.tune")

from ray import tune  # noqa: E402
from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402

import bnn_tune  # noqa: E402
from bnn_tune.plugins._flip_sh import FlipSHRule  # noqa: E402
from bnn_tune.plugins._outcome import (  # noqa: E402
    PRUNE_REASON_ATTR,
    SUB_EPOCH_KEY,
    SUB_FLIP_RATE_ATTR,
    SUB_FLIP_RATE_KEY,
    is_sub_epoch_result,
    parse_stop_reason,
)
from bnn_tune.plugins.strategies import get_strategy  # noqa: E402

EPOCHS = 3
FROZEN = {"dataset": "digits", "optimizer": "bop", "gamma": 1e-3, "threshold": 1.0, "epochs": EPOCHS,
          "max_steps_per_epoch": 16, "seed": 0, "width": 0.5}


class _Stopped(Exception):
    pass


class _Trial:
    def __init__(self, tid):
        self.trial_id, self.storage, self.last_result = tid, None, None


def ray_stream(scheduler, config, monkeypatch, fn=None):
    """Run the trainable in this process, handing each reported result to ``scheduler`` as Tune would; stop it
    when the scheduler says STOP. Returns the results and the stop reason."""
    trial = _Trial("t")
    scheduler.on_trial_add(None, trial)
    results: list[dict] = []

    def report(metrics, checkpoint=None):
        result = {**metrics}
        result.setdefault("training_iteration", len(results) + 1)  # as Ray's Trainable does (setdefault)
        results.append(result)
        trial.last_result = result
        if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            scheduler.on_trial_complete(None, trial, result)
            raise _Stopped

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    try:
        (fn or bnn_tune.trainable_sub_epoch)(config)
    except _Stopped:
        pass
    return results, scheduler.stop_reasons.get("t")


def optuna_trial(pruner, config):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    space = {k: v for k, v in config.items() if k in ("optimizer", "gamma", "threshold")}
    base = {k: v for k, v in config.items() if k not in space}
    study.optimize(bnn_tune.objective(lambda trial: dict(space), base_config=base), n_trials=1)
    return study.trials[0]


@pytest.mark.parametrize("name", ["flip+hyperband", "flip+asha"])
def test_search_strategies_stop_a_frozen_trial_after_the_same_sub_epoch_points(name, monkeypatch):
    strategy = get_strategy(name)
    t = optuna_trial(strategy.optuna_pruner(EPOCHS), FROZEN)
    results, reason = ray_stream(strategy.ray_scheduler(EPOCHS), FROZEN, monkeypatch)
    assert t.state == optuna.trial.TrialState.PRUNED and t.last_step is None
    optuna_points = len(t.user_attrs[SUB_FLIP_RATE_ATTR])
    last = results[-1]
    assert is_sub_epoch_result(last), "the Ray scheduler stopped the trial only at an epoch result"
    assert last[SUB_EPOCH_KEY] == len(last[SUB_FLIP_RATE_KEY]) == optuna_points == 1
    assert parse_stop_reason(reason)[0] == parse_stop_reason(t.user_attrs[PRUNE_REASON_ATTR])[0] == "flip-early"


def test_a_slower_rule_stops_both_after_the_same_later_point(monkeypatch):
    """With ``sub_patience=3`` both wait for the third point (the first epoch's sub-epoch results go on)."""
    from bnn_tune.plugins.flip_sh import FlipSHPruner
    from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler

    rule = FlipSHRule(sub_patience=3)
    t = optuna_trial(FlipSHPruner(optuna.pruners.NopPruner(), max_steps=EPOCHS, rule=rule), FROZEN)
    results, reason = ray_stream(FlipSHScheduler(FIFOScheduler(), "val_acc", "max", max_t=EPOCHS, rule=rule),
                                 FROZEN, monkeypatch)
    assert len(t.user_attrs[SUB_FLIP_RATE_ATTR]) == results[-1][SUB_EPOCH_KEY] == 3
    assert [r[SUB_EPOCH_KEY] for r in results] == [1, 2, 3]
    assert reason.startswith("flip-early: ") and t.user_attrs[PRUNE_REASON_ATTR].startswith("flip-early: ")


def test_sub_epoch_results_only_in_the_first_epoch_and_epochs_count_iterations(monkeypatch):
    """A healthy trial: 7 sub-epoch results (iteration 0, NaN metrics) then one result per epoch whose
    ``training_iteration`` is the epoch; the scheduler never stops it."""
    healthy = {**FROZEN, "threshold": 1e-8, "gamma": 1e-2}
    results, reason = ray_stream(get_strategy("flip+hyperband").ray_scheduler(EPOCHS), healthy, monkeypatch)
    subs = [r for r in results if is_sub_epoch_result(r)]
    epochs = [r for r in results if not is_sub_epoch_result(r)]
    assert reason is None and [r[SUB_EPOCH_KEY] for r in subs] == list(range(1, 8))
    assert all(r["training_iteration"] == 0 and math.isnan(r["val_acc"]) and "checkpoint" not in r for r in subs)
    assert [(r["training_iteration"], r["epoch"]) for r in epochs] == [(e, e) for e in range(1, EPOCHS + 1)]
    assert all(len(r[SUB_FLIP_RATE_KEY]) == 8 for r in epochs) and epochs[0][SUB_FLIP_RATE_KEY][:7] == subs[-1][
        SUB_FLIP_RATE_KEY]


def test_the_plain_trainable_reports_epochs_only(monkeypatch):
    """``bnn_tune.trainable`` keeps Ray's counters per epoch (iterations_since_restore, progress.csv): the sub-epoch
    results come only from ``bnn_tune.trainable_sub_epoch``, which the search runs for strategies that judge them."""
    healthy = {**FROZEN, "threshold": 1e-8, "gamma": 1e-2}
    results, _ = ray_stream(get_strategy("flip").ray_scheduler(EPOCHS), healthy, monkeypatch, fn=bnn_tune.trainable)
    assert [r["epoch"] for r in results] == list(range(1, EPOCHS + 1))
    assert not any(is_sub_epoch_result(r) for r in results)
    assert get_strategy("flip+hyperband").judges_sub_epoch and not get_strategy("asha").judges_sub_epoch
