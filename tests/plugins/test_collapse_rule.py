"""The framework-free flip-rate collapse rule (plugins/_collapse.py)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import pytest

from bnn_tune.plugins import CollapseDecision, FlipRateCollapseRule

FROZEN = -9.0  # log(0 + e^-9): no flips at all
HEALTHY = -5.0  # about 0.7% of the binary weights flip per step


# ------------------------------------------------------------------ validation, one test per argument
@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_n_warmup_steps_validation(bad):
    with pytest.raises(ValueError, match="`n_warmup_steps` must be an integer >= 0"):
        FlipRateCollapseRule(n_warmup_steps=bad)


@pytest.mark.parametrize("bad", [0, -2, 2.0, False, None])
def test_patience_validation(bad):
    with pytest.raises(ValueError, match="`patience` must be an integer >= 1"):
        FlipRateCollapseRule(patience=bad)


@pytest.mark.parametrize("bad", [-9.0, -12.0, 0.5, math.nan, "x", True])
def test_floor_validation(bad):
    with pytest.raises(ValueError, match=r"`floor` must be a log flip rate in \(-9, 0\]"):
        FlipRateCollapseRule(floor=bad)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 2, math.nan, "0.5"])
def test_relative_drop_validation(bad):
    with pytest.raises(ValueError, match=r"`relative_drop` must be in \(0, 1\) or None"):
        FlipRateCollapseRule(relative_drop=bad)


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan, "0", None])
def test_min_improvement_validation(bad):
    with pytest.raises(ValueError, match="`min_improvement` must be a finite number >= 0"):
        FlipRateCollapseRule(min_improvement=bad)


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        FlipRateCollapseRule(2, 2)  # type: ignore[misc]


def test_error_names_the_value():
    with pytest.raises(ValueError, match=r"but got patience=0\."):
        FlipRateCollapseRule(patience=0)


# ------------------------------------------------------------------ behaviour
def test_frozen_from_the_start_is_stopped_after_warmup_and_patience():
    rule = FlipRateCollapseRule(n_warmup_steps=2, patience=2)
    lfr, acc = [FROZEN] * 6, [0.10, 0.20, 0.30, 0.40, 0.50, 0.60]
    # warm-up: reports 1..2 never judged
    assert not rule.decide(lfr[:2], acc[:2]).stop
    # report 3 with patience 2: the last two reports are frozen; accuracy still rises (real layers learn),
    # but the binary weights never trained, so the run is stopped anyway
    d = rule.decide(lfr[:3], acc[:3])
    assert isinstance(d, CollapseDecision) and d.stop
    assert "never rose above the floor" in d.reason


def test_healthy_flip_rate_is_never_stopped():
    rule = FlipRateCollapseRule(n_warmup_steps=0, patience=1)
    d = rule.decide([HEALTHY] * 10, [0.5] * 10)
    assert not d.stop and "not collapsed" in d.reason


def test_late_decay_under_a_schedule_while_accuracy_improves_is_kept():
    # gamma decayed x0.1 at report 6: the flip rate falls below the floor, the accuracy keeps rising
    rule = FlipRateCollapseRule(n_warmup_steps=2, patience=2)
    lfr = [-4.0, -4.5, -5.0, -5.2, -5.5, -8.5, -8.8, -8.9]
    acc = [0.40, 0.60, 0.70, 0.75, 0.78, 0.82, 0.84, 0.85]
    for t in range(1, len(lfr) + 1):
        d = rule.decide(lfr[:t], acc[:t])
        assert not d.stop, (t, d.reason)
    assert "still improves" in rule.decide(lfr, acc).reason


def test_collapse_after_some_activity_with_stalled_accuracy_is_stopped():
    rule = FlipRateCollapseRule(n_warmup_steps=1, patience=2)
    lfr = [-6.0, -8.5, -8.9, -9.0]
    acc = [0.30, 0.30, 0.29, 0.30]
    assert not rule.decide(lfr[:2], acc[:2]).stop  # only one collapsed report
    d = rule.decide(lfr[:3], acc[:3])
    assert d.stop and "collapsed" in d.reason and "did not improve" in d.reason


def test_relative_drop_from_the_peak_counts_as_collapse_above_the_floor():
    lfr = [-3.0, -7.7, -7.8, -7.9]  # above the floor -8, but ~100x fewer flips than at the peak
    acc = [0.5, 0.5, 0.5, 0.5]
    assert FlipRateCollapseRule(n_warmup_steps=1, patience=2, relative_drop=0.99).decide(lfr, acc).stop
    assert not FlipRateCollapseRule(n_warmup_steps=1, patience=2, relative_drop=None).decide(lfr, acc).stop
    # a 10x drop is not a 99% drop
    assert not FlipRateCollapseRule(n_warmup_steps=1, patience=2).decide([-3.0, -5.0, -5.2], acc[:3]).stop


def test_min_improvement_sets_what_counts_as_learning():
    lfr = [-5.0, -8.5, -8.6, -8.7]
    acc = [0.50, 0.50, 0.505, 0.51]
    assert not FlipRateCollapseRule(n_warmup_steps=1, patience=2).decide(lfr, acc).stop
    assert FlipRateCollapseRule(n_warmup_steps=1, patience=2, min_improvement=0.02).decide(lfr, acc).stop


def test_best_trial_of_the_sweep_is_never_stopped():
    rule = FlipRateCollapseRule(n_warmup_steps=0, patience=1)
    lfr, acc = [FROZEN] * 4, [0.9, 0.9, 0.9, 0.9]
    assert rule.decide(lfr, acc).stop
    assert rule.decide(lfr, acc, best_value=0.95).stop
    d = rule.decide(lfr, acc, best_value=0.9)
    assert not d.stop and "best of the sweep" in d.reason
    # minimisation: lower is better
    loss = [0.3, 0.3, 0.3, 0.3]
    assert not rule.decide(lfr, loss, best_value=0.4, maximize=False).stop
    assert rule.decide(lfr, loss, best_value=0.2, maximize=False).stop


def test_minimize_direction_for_improvement():
    rule = FlipRateCollapseRule(n_warmup_steps=1, patience=2)
    lfr = [-5.0, -8.5, -8.6]
    assert not rule.decide(lfr, [1.0, 0.8, 0.6], maximize=False).stop  # loss falls: learning
    assert rule.decide(lfr, [1.0, 1.1, 1.2], maximize=False).stop


def test_nan_entries_are_ignored():
    rule = FlipRateCollapseRule(n_warmup_steps=0, patience=2)
    # a NaN flip rate in the window is not "collapsed"
    assert not rule.decide([FROZEN, math.nan], [0.1, 0.1]).stop
    # NaN objective values never count as improvement
    d = rule.decide([-5.0, FROZEN, FROZEN], [0.5, math.nan, math.nan])
    assert d.stop


def test_series_of_different_lengths_use_the_common_prefix():
    rule = FlipRateCollapseRule(n_warmup_steps=2, patience=1)
    assert not rule.decide([FROZEN] * 5, [0.1, 0.1]).stop  # only 2 aligned reports: warm-up


def test_decision_is_falsy_when_not_stopping():
    rule = FlipRateCollapseRule()
    assert not rule.decide([], [])
    assert "warm-up" in rule.decide([], []).reason


def test_pickle_round_trip_and_equality():
    rule = FlipRateCollapseRule(n_warmup_steps=3, patience=4, floor=-7.5, relative_drop=None, min_improvement=0.01)
    clone = pickle.loads(pickle.dumps(rule))
    assert clone == rule and repr(clone) == repr(rule)
    lfr, acc = [-5.0, FROZEN, FROZEN, FROZEN, FROZEN, FROZEN], [0.2] * 6
    assert clone.decide(lfr, acc) == rule.decide(lfr, acc)


def test_module_imports_no_framework():
    code = "import sys, plugins, bnn_tune.plugins._collapse; assert 'optuna' not in sys.modules and 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan, "0", None, True])
def test_margin_validation(bad):
    with pytest.raises(ValueError, match="`margin` must be a finite number >= 0"):
        FlipRateCollapseRule(margin=bad)


def test_margin_keeps_converged_contenders_near_the_best():
    # a decayed gamma schedule: flip rate below the floor, accuracy flat just under the sweep's best
    lfr = [-3.0, -5.5, -6.2, -6.5, -7.4, -8.1, -8.3]
    acc = [0.951, 0.972, 0.976, 0.969, 0.972, 0.976, 0.965]
    assert FlipRateCollapseRule().decide(lfr, acc, best_value=0.983).stop
    d = FlipRateCollapseRule(margin=0.02).decide(lfr, acc, best_value=0.983)
    assert not d.stop and "within margin=0.02" in d.reason
    # a frozen run far below the best is still stopped
    assert FlipRateCollapseRule(margin=0.02).decide([FROZEN] * 4, [0.5] * 4, best_value=0.983).stop
    # minimisation: within margin above the best loss
    assert not FlipRateCollapseRule(margin=0.1).decide([FROZEN] * 4, [0.35] * 4, best_value=0.3, maximize=False).stop


# ------------------------------------------------------------------ exact edges (issue 26: found by tools/mutate.py)
def test_a_flip_rate_exactly_at_the_floor_never_rose_above_it():
    # "never rose above the floor" includes sitting exactly on it: the accuracy gain is the real-valued
    # layers', so the improvement waiver applies and the run is stopped although its accuracy rises
    rule = FlipRateCollapseRule(n_warmup_steps=1, patience=2, floor=-8.0)
    d = rule.decide([-8.0, -8.0, -8.0], [0.1, 0.2, 0.3])
    assert d.stop and "never rose above the floor" in d.reason
    # just above the floor once: the binary weights trained, the rising accuracy keeps the run
    assert not rule.decide([-7.99, -8.0, -8.0], [0.1, 0.2, 0.3]).stop


def test_an_objective_that_stays_exactly_level_did_not_improve():
    # improvement must be *more than* min_improvement: a level objective (improvement exactly 0, or exactly
    # min_improvement) is not learning
    lfr = [-5.0, FROZEN, FROZEN]
    assert FlipRateCollapseRule(n_warmup_steps=1, patience=2).decide(lfr, [0.5, 0.5, 0.5]).stop
    assert FlipRateCollapseRule(n_warmup_steps=1, patience=2, min_improvement=0.25).decide(
        lfr, [0.5, 0.75, 0.5]).stop
    assert not FlipRateCollapseRule(n_warmup_steps=1, patience=2, min_improvement=0.25).decide(
        lfr, [0.5, 0.875, 0.5]).stop


def test_the_best_of_the_sweep_guard_uses_the_runs_best_value_not_its_last():
    rule = FlipRateCollapseRule(n_warmup_steps=0, patience=1)
    # best 0.9 then fell to 0.5: the run equalled the sweep's best once, so it is not stopped
    assert not rule.decide([FROZEN] * 3, [0.9, 0.5, 0.5], best_value=0.9).stop
    # minimisation: the run's best is its lowest loss
    assert not rule.decide([FROZEN] * 3, [0.2, 0.6, 0.6], best_value=0.2, maximize=False).stop
    assert rule.decide([FROZEN] * 3, [0.3, 0.6, 0.6], best_value=0.2, maximize=False).stop


@pytest.mark.parametrize("maximize", [True, False])
def test_margin_is_inclusive_and_measured_towards_the_worse_side(maximize):
    # exactly `margin` behind the best is still a contender; a hair further is not. Values chosen so the
    # differences are exact in binary floating point.
    sign = 1.0 if maximize else -1.0
    best = 0.75
    rule = FlipRateCollapseRule(n_warmup_steps=0, patience=1, margin=0.25)
    at_edge = best - sign * 0.25
    beyond = best - sign * 0.375
    assert not rule.decide([FROZEN] * 2, [at_edge] * 2, best_value=best, maximize=maximize).stop
    assert rule.decide([FROZEN] * 2, [beyond] * 2, best_value=best, maximize=maximize).stop


def test_relative_drop_is_inclusive_at_exactly_the_drop():
    # relative_drop=0.75 is a drop to a quarter: log(1/4) below the peak counts as collapsed, exactly
    peak = -2.0
    drop = math.log1p(-0.75)
    rule = FlipRateCollapseRule(n_warmup_steps=1, patience=1, relative_drop=0.75)
    assert rule.decide([peak, peak + drop], [0.5, 0.5]).stop
    assert not rule.decide([peak, peak + drop + 1e-9], [0.5, 0.5]).stop
    # the peak is the highest earlier report, not the first or the last one
    assert rule.decide([peak - 1.0, peak, peak + drop], [0.5] * 3).stop


def test_reason_names_the_peak_and_the_floor_level():
    rule = FlipRateCollapseRule(n_warmup_steps=0, patience=1, floor=-8.0)
    d = rule.decide([-8.5, -9.0], [0.1, 0.1])
    assert d.stop and "peak -8.50" in d.reason  # the highest log flip rate seen, not the lowest
    d = rule.decide([-5.0, -8.0], [0.5, 0.5])
    assert d.stop and "at or below the floor -8" in d.reason  # exactly on the floor is "at" it
