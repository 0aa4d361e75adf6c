"""Replay on a synthetic table in the real file format (fast) and on the shipped tables (tiny subsets)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnn_tune import hpobench
from bnn_tune.hpobench._replay import replay, snap
from bnn_tune.hpobench.table import load


def test_snap_uses_the_space_coordinates(synthetic_dir):
    t = load("bop_digits", data_dir=synthetic_dir)
    grid = t.meta["grid"]

    def idx(gamma, tau):
        return grid["gamma"].index(gamma) * len(grid["threshold"]) + grid["threshold"].index(tau)

    # log coordinates: 3e-8 is nearer 1e-8 than 1e-7 (log ratio 1.10 vs 1.20); 0 maps to the recorded 0
    assert snap(t, {"gamma": 2e-4, "threshold": 3e-8}, {"gamma", "threshold"}) == idx(1e-4, 1e-8)
    assert snap(t, {"gamma": 4e-4, "threshold": 0.0}, {"gamma", "threshold"}) == idx(1e-3, 0.0)
    # 4e-5: log-nearest 1e-4 (ratio 2.5 < 4), linear-nearest 1e-5 (the naive space samples tau linearly)
    assert snap(t, {"gamma": 2e-4, "threshold": 4e-5}, {"gamma", "threshold"}) == idx(1e-4, 1e-4)
    assert snap(t, {"gamma": 2e-4, "threshold": 4e-5}, {"gamma"}) == idx(1e-4, 1e-5)
    assert snap(t, {"gamma": 2e-4, "threshold": 6e-4}, {"gamma"}) == idx(1e-4, 1e-3)
    assert t.configs[idx(1e-4, 1e-8)] == {"gamma": 1e-4, "threshold": 1e-8}


def test_replay_result_matches_the_table(synthetic_dir):
    t = load("bop_digits", data_dir=synthetic_dir)
    r = replay("bop_digits", pruner="none", sampler="random", seed=3, n_trials=25, data_dir=synthetic_dir)
    assert set(r) >= {"trials_to_target", "trial_epochs_to_target", "trial_epochs_total", "best_final_val_acc",
                      "best_test_acc", "best_config_pruned"}
    assert r["trial_epochs_total"] == 25 * t.epochs  # no pruner: every trial runs every epoch
    assert r["target"] == pytest.approx(t.best_final_val - 0.005)
    assert r["best_test_acc"] == pytest.approx(r["best_final_val_acc"] - 0.01, abs=1e-6)  # synthetic test = val - .01
    assert not r["best_config_pruned"] and r["n_pruned"] == 0
    if r["trials_to_target"] is not None:
        assert r["trial_epochs_to_target"] == r["trials_to_target"] * t.epochs
    # the replay is deterministic in its seed
    r2 = replay("bop_digits", pruner="none", sampler="random", seed=3, n_trials=25, data_dir=synthetic_dir)
    assert r2["best_so_far"] == r["best_so_far"]


@pytest.mark.parametrize("pruner", ["hyperband", "flip+hyperband"])
def test_hyperband_replays_are_deterministic(synthetic_dir, pruner):
    """HyperbandPruner picks a trial's bracket from crc32(study name, trial number): with Optuna's random
    study names the same replay seed gave different results run to run."""
    a = replay("bop_digits", pruner=pruner, seed=5, n_trials=30, data_dir=synthetic_dir)
    b = replay("bop_digits", pruner=pruner, seed=5, n_trials=30, data_dir=synthetic_dir)
    assert a["best_so_far"] == b["best_so_far"] and a["stop_rules"] == b["stop_rules"]


def test_flip_asha_stops_frozen_trials_at_an_eighth_of_an_epoch(synthetic_dir):
    a = replay("bop_digits", pruner="asha", seed=0, n_trials=30, data_dir=synthetic_dir)
    f = replay("bop_digits", pruner="flip+asha", seed=0, n_trials=30, data_dir=synthetic_dir)
    assert f["stop_rules"].get("flip-early", 0) > 0
    # every flip-early stop costs 1/8 epoch: the total is not a whole number of epochs
    assert f["trial_epochs_total"] % 1 == pytest.approx(0.125 * f["stop_rules"]["flip-early"] % 1)
    # without the band protection (which spends epochs on in-band runs ASHA would stop) the flip-early stops
    # make the search cheaper than ASHA alone
    import optuna

    from bnn_tune.plugins.flip_sh import FlipSHPruner

    f0 = replay("bop_digits", pruner=lambda: FlipSHPruner(optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=3)), seed=0, n_trials=30, data_dir=synthetic_dir)
    assert f0["trial_epochs_total"] < a["trial_epochs_total"]
    assert a["stop_rules"] == {"SuccessiveHalvingPruner": a["n_pruned"]}


def test_naive_space_reaches_only_what_its_ranges_allow(synthetic_dir):
    # naive Bop: threshold uniform in [0, 1e-3] snaps linearly to 1e-4 / 1e-3 (frozen in the synthetic table)
    r = replay("bop_digits", pruner="none", space="naive", seed=0, n_trials=10, data_dir=synthetic_dir)
    assert r["best_final_val_acc"] == pytest.approx(0.3)
    assert r["trials_to_target"] is None and r["trial_epochs_to_target"] is None


@pytest.mark.parametrize("kw, msg", [({"pruner": "ashaa"}, "Unknown pruner"), ({"space": "odd"}, "Unknown space"),
                                     ({"n_trials": 0}, "n_trials"), ({"sampler": "grid"}, "Unknown sampler")])
def test_bad_arguments(synthetic_dir, kw, msg):
    with pytest.raises(ValueError, match=msg):
        replay("bop_digits", data_dir=synthetic_dir, **kw)


def test_unknown_task():
    with pytest.raises(ValueError, match="Unknown hpobench task"):
        hpobench.replay("nope")


@pytest.mark.parametrize("task", hpobench.tasks())
def test_shipped_table_is_complete_and_replays(task):
    t = load(task)
    n_c = len(t.configs)
    assert t.curves["val_acc"].shape == (n_c, t.n_seeds, t.epochs) and t.n_seeds >= 2
    assert t.curves["sub_flip_rate"].shape == (n_c, t.n_seeds, t.epochs * t.sub_epoch_points)
    assert {"command", "date", "machine", "wall_seconds"} <= set(t.meta)
    ok = t.curves["completed"]
    assert ok.mean() > 0.5
    v = t.curves["val_acc"][ok]
    assert np.all((v >= 0) & (v <= 1))
    # the epoch flip rate is the step-weighted mean of its sub-epoch rates (the same counter, 8 windows)
    sub = t.curves["sub_flip_rate"][ok].reshape(-1, t.epochs, t.sub_epoch_points).mean(-1)
    fr = t.curves["flip_rate"][ok]
    known = np.isfinite(fr)  # BNEW reports no flip rate once its weights are locked
    assert known.mean() > 0.5
    assert np.allclose(sub[known], fr[known], rtol=0.35, atol=1e-4)
    r = replay(task, pruner="flip+asha", seed=0, n_trials=8)
    assert r["n_trials"] == 8 and math.isfinite(r["trial_epochs_total"])


@pytest.mark.skipif("filter_mnist1d" not in hpobench.tasks(), reason="filter_mnist1d not recorded")
def test_filter_replay_pins_the_recorded_order(monkeypatch):
    import optuna

    seen = []
    real = optuna.create_study

    def spy(**kw):
        study = real(**kw)
        seen.append(study)
        return study

    monkeypatch.setattr(optuna, "create_study", spy)
    replay("filter_mnist1d", pruner="none", seed=1, n_trials=6)
    assert [t.params["order"] for t in seen[0].trials] == [2] * 6  # only order 2 is recorded


# ----------------------------------------------------------------------------- issue 26 (tools/mutate.py)
class _Table:
    """What :func:`summarize` reads of a table: the target and the best configuration's index."""

    def __init__(self, target, best_config=7):
        self._target, self.best_config = target, best_config

    def target(self):
        return self._target


def _study(trials):
    """A study of finished trials: ``(state, value, test_acc, prune reason)`` each."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from bnn_tune.hpobench._replay import PRUNE_REASON_ATTR, TEST_ACC_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for state, value, test_acc, reason in trials:
        attrs = {TEST_ACC_ATTR: test_acc} if test_acc is not None else {}
        if reason:
            attrs[PRUNE_REASON_ATTR] = reason
        # Optuna records a pruned trial's last intermediate value as its value (study.tell): keep that here
        study.add_trial(create_trial(state=TrialState[state], value=value if state in ("COMPLETE", "PRUNED") else None,
                                     intermediate_values={1: value} if value is not None else {}, user_attrs=attrs))
    return study


def test_summary_reports_the_first_trial_that_reached_the_target():
    from bnn_tune.hpobench._replay import summarize

    study = _study([("COMPLETE", 0.5, 0.49, None), ("COMPLETE", 0.9, 0.80, None), ("PRUNED", 0.3, None, "asha: x"),
                    ("COMPLETE", 0.95, 0.85, None)])
    r = summarize(study, _Table(target=0.9), used=[3.0, 3.0, 1.0, 3.0], cells=[(0, 0), (1, 0), (7, 0), (2, 0)])
    # the target is reached exactly (>=) by trial #1 (the 2nd), after 6 trial-epochs; later hits do not move it
    assert (r["trials_to_target"], r["trial_epochs_to_target"]) == (2, 6.0)
    assert r["trial_epochs_total"] == 10.0
    assert (r["best_final_val_acc"], r["best_test_acc"]) == (0.95, 0.85)
    assert r["best_config_pruned"] and r["n_pruned"] == 1 and r["stop_rules"] == {"asha": 1}
    assert [v for _, v in r["best_so_far"]] == [0.5, 0.9, 0.9, 0.95]
    assert [x[2] for x in r["trials"]] == [0.5, 0.9, None, 0.95]


def test_summary_keeps_the_first_of_equal_best_values_and_counts_unnamed_stops():
    from bnn_tune.hpobench._replay import summarize

    study = _study([("COMPLETE", 0.9, 0.70, None), ("COMPLETE", 0.9, 0.95, None), ("PRUNED", 0.1, None, None)])
    r = summarize(study, _Table(target=0.99, best_config=3), used=[2.0, 2.0, 0.5], cells=[(0, 0), (1, 0), (2, 0)])
    assert (r["best_final_val_acc"], r["best_test_acc"]) == (0.9, 0.70)  # the first to reach 0.9 stands
    assert r["trials_to_target"] is None and r["trial_epochs_to_target"] is None  # never reached
    assert not r["best_config_pruned"]
    assert r["stop_rules"] == {type(study.pruner).__name__: 1}  # no reason recorded: the pruner's class
    empty = summarize(_study([("PRUNED", 0.1, None, "flip-early: x")]), _Table(0.5), used=[0.125], cells=[(0, 0)])
    assert math.isnan(empty["best_final_val_acc"]) and math.isnan(empty["best_so_far"][0][1])


def test_snap_edges_missing_keys_and_zero_on_a_log_grid():
    from types import SimpleNamespace

    grid = {"gamma": [1e-4, 1e-3, 1e-2], "threshold": [0.0, 1e-8, 1e-6], "width": [0.5, 1.0]}
    t = SimpleNamespace(meta={"grid": grid, "base": {"width": 1.0}})
    log = {"gamma", "threshold"}

    def idx(g, tau, w):
        return (g * 3 + tau) * 2 + w

    # a key neither sampled nor in the table's base takes the grid's first value; the base value otherwise
    assert snap(t, {"threshold": 1e-8}, log) == idx(0, 1, 1)
    # 0 (or below) on a log grid: the recorded 0 if there is one, else the smallest value
    assert snap(t, {"gamma": 1e-2, "threshold": 0.0}, log) == idx(2, 0, 1)
    assert snap(t, {"gamma": 0.0, "threshold": 1e-6}, log) == idx(0, 2, 1)
    assert snap(t, {"gamma": -1.0, "threshold": 1e-6, "width": 0.6}, log) == idx(0, 2, 0)


class _SpyPruner:
    """Never prunes; records what it was asked: (last step, sub-epoch points so far)."""

    judges_sub_epoch = True

    def __init__(self):
        self.asked = []

    def prune(self, study, trial):
        from bnn_tune.hpobench._replay import SUB_FLIP_RATE_ATTR

        self.asked.append((trial.last_step, len(trial.user_attrs.get(SUB_FLIP_RATE_ATTR) or ())))
        return False


def test_replay_asks_the_pruner_where_the_objective_does(synthetic_dir):
    """Inside the first epoch after each sub-epoch point but the last, then after every epoch but the last;
    values are reported at steps 1..E (bnn_tune.objective's protocol)."""
    t = load("bop_digits", data_dir=synthetic_dir)
    P, E = t.sub_epoch_points, t.epochs
    spy = _SpyPruner()
    r = replay("bop_digits", pruner=lambda: spy, sampler="random", seed=0, n_trials=1, data_dir=synthetic_dir)
    assert spy.asked == [(None, k) for k in range(1, P)] + [(e, P * e) for e in range(1, E)]
    assert r["n_trials"] == 1 and r["trial_epochs_total"] == E and r["trials"][0][2] is not None


def test_budget_stops_the_study_once_spent_exactly(synthetic_dir):
    t = load("bop_digits", data_dir=synthetic_dir)
    r = replay("bop_digits", pruner="none", sampler="random", seed=1, budget=2, data_dir=synthetic_dir)
    assert r["n_trials"] == 2 and r["trial_epochs_total"] == 2 * t.epochs  # 2 full trials spend exactly 2E


def test_a_grid_key_the_space_derives_is_snapped_in_log_coordinates(synthetic_dir):
    """A space may sample a log coordinate under another name and derive the grid key (a LogRange with a zero
    decade): the derived key is snapped like a log key, not linearly."""
    t = load("bop_digits", data_dir=synthetic_dir)
    configs = []

    def space(trial):
        cfg = {"gamma": trial.suggest_float("gamma", 1e-6, 1e-1, log=True),
               "threshold": 10 ** trial.suggest_float("log10_threshold", -8.0, -3.0)}
        configs.append(cfg)
        return cfg

    r = replay("bop_digits", pruner="none", sampler="random", space=space, seed=2, n_trials=12,
               data_dir=synthetic_dir)
    cells = [cell for _, cell, _ in r["trials"]]
    assert cells == [snap(t, cfg, {"gamma", "threshold"}) for cfg in configs]
    assert cells != [snap(t, cfg, {"gamma"}) for cfg in configs]  # the case is one where it matters
