"""The rank gate (issue 25): successive halving's accuracy stops pass only where early ranks held on the task."""

from __future__ import annotations

import math

import optuna
import pytest

from bnn_tune.plugins._flip_sh import FlipSHRule, RankGate, TrialView, spearman
from bnn_tune.plugins._outcome import FLIP_RATE_ATTR, PROTECTED_ATTR, PRUNE_REASON_ATTR


def test_spearman_against_hand_values():
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.8)  # 1 - 6*4/(5*24)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3) -> Pearson of the ranks
    assert spearman([0.1, 0.1, 0.9], [1.0, 2.0, 3.0]) == pytest.approx(1.5 / math.sqrt(1.5 * 2.0))
    # monotone transforms do not change it; a constant side has no rank order
    assert spearman([1e-9, 1e-3, 1.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([2.0, 2.0], [1.0, 2.0]) is None and spearman([1.0], [1.0]) is None
    with pytest.raises(ValueError, match="one length"):
        spearman([1.0, 2.0], [1.0])


def _done(curves):
    """completed / completed_values of a view from ``[(early..., final)]`` curves."""
    return tuple((c[-1], ()) for c in curves), tuple(tuple(c) for c in curves)


# five completed trials whose report-1 values rank against their finals with Spearman exactly 0.8
AT_08 = [(0.1, 0.1), (0.2, 0.3), (0.3, 0.2), (0.4, 0.5), (0.5, 0.4)]


@pytest.mark.parametrize("rho, stop", [(0.8, True), (0.81, False)])
def test_the_gate_lets_a_stop_through_exactly_at_its_threshold(rho, stop):
    rule = FlipSHRule(gate=RankGate(rho=rho, min_ref=5))
    completed, values = _done(AT_08)
    d = rule.gated(1, completed, values)
    assert d.stop is stop and d.rule == "rank-gate"


@pytest.mark.parametrize("n, stop", [(4, False), (5, True)])
def test_the_gate_stands_aside_below_min_ref_completed_trials(n, stop):
    curves = [(k / 10, k / 10) for k in range(n)]  # early ranks = final ranks
    rule = FlipSHRule(gate=RankGate(rho=0.5, min_ref=5))
    d = rule.gated(1, *_done(curves))
    assert d.stop is stop
    if not stop:
        assert "fewer than min_ref=5" in d.reason


def test_trials_without_that_report_or_with_nan_do_not_count():
    good = [(k / 10, 0.5, k / 10) for k in range(5)]  # report 2 constant, report 1 ranks like the final
    short = [(0.9, 0.1)]  # a completed trial with only two reports (its final is 0.1)
    nan = [(math.nan, 0.0, 0.3)]
    rule = FlipSHRule(gate=RankGate(rho=0.9, min_ref=5))
    assert rule.gated(1, *_done(good + nan)).stop is True  # the NaN trial is left out, not counted
    assert rule.gated(1, *_done(good + short)).stop is False  # ... the short one counts at report 1: ranks break
    assert rule.gated(3, *_done(good + short)).stop is True  # at report 3 it has no value and is left out
    d = rule.gated(2, *_done(good))  # no spread at report 2
    assert d.stop is False and "no spread" in d.reason
    assert FlipSHRule().gated(1, *_done(good)).stop is True  # no gate: every stop passes


@pytest.mark.parametrize("maximize", [True, False])
def test_decide_keeps_a_stop_the_gate_refuses_in_both_directions(maximize):
    sign = 1.0 if maximize else -1.0
    rule = FlipSHRule(gate=RankGate(rho=0.8, min_ref=5), min_rise=None)
    anti = [(sign * (1 - k / 10), sign * k / 10) for k in range(5)]  # early ranks reversed at the end
    agree = [(sign * k / 10, sign * k / 10) for k in range(5)]
    for curves, stop in ((anti, False), (agree, True)):
        completed, values = _done(curves)
        view = TrialView(log_flip_rates=(-3.0,), values=(sign * 0.05,), completed=completed, completed_values=values,
                         best_value=sign * 0.4, maximize=maximize, remaining=5)
        d = rule.decide(view, True, schedule_rule="hyperband")
        assert d.stop is stop and d.rule == ("hyperband" if stop else "rank-gate")
        # the scheduler continues: the gate is not asked and nothing is stopped
        assert rule.decide(view, False, schedule_rule="hyperband").stop is False


def test_flip_early_can_be_turned_off():
    frozen = TrialView(sub_log_flip_rates=(-9.0,) * 8, sub_epoch=True)
    assert FlipSHRule().decide(frozen).stop is True
    assert FlipSHRule(use_early=False).decide(frozen).stop is False


def test_gate_settings_are_validated_and_take_flat_keywords():
    assert FlipSHRule.from_kwargs(gate_rho=0.6, gate_min_ref=4).gate == RankGate(rho=0.6, min_ref=4)
    with pytest.raises(ValueError, match=r"gate_rho"):
        RankGate(rho=1.5)
    with pytest.raises(ValueError, match=r"gate_min_ref"):
        RankGate(min_ref=1)
    with pytest.raises(ValueError, match="`gate` must be a RankGate"):
        FlipSHRule(gate=0.8)  # type: ignore[arg-type]


def _study_with(curves, direction="maximize"):
    from bnn_tune.plugins.flip_sh import FlipSHPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = FlipSHPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), max_steps=4,
                          rule=FlipSHRule(gate=RankGate(rho=0.8, min_ref=5), min_rise=None))
    study = optuna.create_study(direction=direction, pruner=pruner)
    for c in curves:
        t = study.ask()
        for e, v in enumerate(c, start=1):
            t.report(v, e)
            t.should_prune()  # successive halving records its rungs when asked (the gate keeps these: < min_ref)
        study.tell(t, c[-1])
    return study


@pytest.mark.parametrize("anti, pruned", [(True, False), (False, True)])
def test_optuna_adapter_hands_the_gate_the_completed_curves(anti, pruned):
    curves = [((1 - k / 10) if anti else k / 10, 0.5, 0.5, k / 10) for k in range(6)]
    study = _study_with(curves)
    t = study.ask()
    t.set_user_attr(FLIP_RATE_ATTR, [-3.0])
    t.report(-1.0, 1)  # the worst at rung 1: successive halving stops it
    assert t.should_prune() is pruned
    attrs = study._storage.get_trial(t._trial_id).user_attrs
    if pruned:
        assert attrs[PRUNE_REASON_ATTR].startswith("asha: ")
    else:
        assert attrs[PROTECTED_ATTR].startswith("rank-gate: kept")


@pytest.mark.parametrize("anti, stopped", [(True, False), (False, True)])
def test_ray_adapter_hands_the_gate_the_completed_curves(anti, stopped):
    pytest.importorskip("ray.tune")
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler

    class StopNew(TrialScheduler):  # the wrapped scheduler: stops trial "new" at every result
        def on_trial_add(self, tune_controller, trial):
            pass

        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.STOP if trial.trial_id == "new" else TrialScheduler.CONTINUE

        def on_trial_complete(self, tune_controller, trial, result):
            pass

    def _ray_feed(scheduler, tid, values, lfrs):
        trial = SimpleNamespace(trial_id=tid, storage=None, last_result=None)
        scheduler.on_trial_add(None, trial)
        result: dict = {}
        for e, (v, x) in enumerate(zip(values, lfrs), start=1):
            result = {"training_iteration": e, "epoch": e, "val_acc": v, "log_flip_rate": x}
            trial.last_result = result
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                scheduler.on_trial_complete(None, trial, result)
                return "stopped"
        scheduler.on_trial_complete(None, trial, result)
        return "completed"

    sched = FlipSHScheduler(StopNew(), "val_acc", "max", max_t=4,
                            rule=FlipSHRule(gate=RankGate(rho=0.8, min_ref=5), min_rise=None))
    for k in range(6):
        curve = [(1 - k / 10) if anti else k / 10, 0.5, 0.5, k / 10]
        assert _ray_feed(sched, f"done{k}", curve, [-3.0] * 4) == "completed"
    assert _ray_feed(sched, "new", [0.0, 0.0, 0.0, 0.0], [-3.0] * 4) == ("stopped" if stopped else "completed")
    if not stopped:
        assert sched.protected["new"].startswith("rank-gate: kept")


def test_a_band_without_stops_only_protects():
    from bnn_tune.plugins._flip_sh import Band

    winners = ((0.9, (-3.0,)), (0.8, (-3.5,)), (0.7, (-2.5,)))
    stopping = FlipSHRule(band=Band(width=0.5, protect=True))
    quiet = FlipSHRule(band=Band(width=0.5, stops=False, protect=True))
    # far below the band: the stopping band stops it, the quiet one does not
    assert stopping.out_of_band((-8.0,), winners).stop is True
    assert quiet.out_of_band((-8.0,), winners).stop is False
    # inside the band both keep a run successive halving wants to stop
    for rule in (stopping, quiet):
        assert rule.in_band((-3.0,), winners).stop is False
        assert rule.in_band((-8.0,), winners).stop is True


def test_the_default_strategy_is_the_gated_rule_with_a_protecting_band():
    from bnn_tune.plugins._flip_sh import GATED_RULE
    from bnn_tune.plugins.strategies import DEFAULT_STRATEGY, get_strategy

    rule = get_strategy(DEFAULT_STRATEGY).settings(12).flip_sh
    assert DEFAULT_STRATEGY == "flip+gated-asha" and rule == GATED_RULE
    assert rule.gate == RankGate(rho=0.8, min_ref=8) and rule.band.stops is False and rule.band.protect is True
    assert rule.use_early and rule.use_collapse and rule.min_rise is not None
