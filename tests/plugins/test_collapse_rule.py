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
