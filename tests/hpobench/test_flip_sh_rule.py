"""FlipSHRule (framework-free) and FlipSHPruner on hand-built studies."""

from __future__ import annotations

import optuna
import pytest

from bnn_tune.plugins._flip_sh import Band, FlipSHRule
from bnn_tune.plugins.flip_sh import PROTECTED_ATTR, SUB_FLIP_RATE_ATTR, FlipSHPruner
from bnn_tune.plugins.optuna import FLIP_RATE_ATTR, PRUNE_REASON_ATTR


def test_frozen_early_needs_sub_patience_and_never_active():
    rule = FlipSHRule(sub_patience=2, floor=-8.0)
    assert not rule.frozen_early([-9.0]).stop  # one report < sub_patience
    assert rule.frozen_early([-9.0, -8.5]).stop
    assert rule.frozen_early([-9.0, -8.0]).stop  # at the floor counts as frozen
    assert not rule.frozen_early([-9.0, -7.9]).stop
    assert not rule.frozen_early([-3.0, -9.0, -9.0]).stop  # was active: a late decay is not judged here
    assert rule.frozen_early([-9.0, float("nan"), -9.0]).message().startswith("flip-early: ")


def test_protect_requires_healthy_flips_rising_value_and_reachable_best():
    rule = FlipSHRule(window=2, min_rise=0.01, margin=0.02)
    rising = [0.30, 0.40, 0.50]
    assert not rule.protect([-4, -4, -4], rising, remaining=10, best_value=0.9).stop  # protected
    assert rule.protect([-4, -4, -4], [0.30, 0.305, 0.31], remaining=10, best_value=0.9).stop  # too flat
    assert rule.protect([-4, -4, -9], rising, remaining=10, best_value=0.9).stop  # flip rate frozen
    assert rule.protect([-2, -2, -7], rising, remaining=10, best_value=0.9).stop  # 99% below its peak
    assert rule.protect([-4, -4, -4], rising, remaining=1, best_value=0.9).stop  # 0.55 < 0.9 - 0.02
    assert not rule.protect([-4, -4, -4], rising, remaining=4, best_value=0.9).stop  # 0.5 + 4*0.1 >= 0.88
    assert rule.protect([-4, -4], [0.3, 0.4], remaining=10, best_value=0.9).stop  # fewer than window + 1
    assert FlipSHRule(min_rise=None).protect([-4, -4, -4], rising, remaining=10, best_value=0.9).stop


@pytest.mark.parametrize("kw", [{"sub_patience": 0}, {"window": 0}, {"min_rise": -1.0}, {"floor": -10.0}])
def test_bad_arguments_raise(kw):
    with pytest.raises(ValueError):
        FlipSHRule(**kw)


def _study(pruner):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner)


def _run(study, values, lfrs, subs_first_epoch=None, sub_per_epoch=None):
    """Report like the replay objective; returns (pruned, last step)."""
    trial = study.ask()
    subs = []
    if subs_first_epoch is not None:
        for x in subs_first_epoch:
            subs.append(x)
            trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(subs))
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return True, 0, trial.number
    for e, (v, x) in enumerate(zip(values, lfrs), start=1):
        if sub_per_epoch is not None and e > 1:
            subs += [x] * sub_per_epoch
        trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(subs))
        trial.set_user_attr(FLIP_RATE_ATTR, list(lfrs[:e]))
        trial.report(v, e)
        if e < len(values) and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return True, e, trial.number
    study.tell(trial, values[-1])
    return False, len(values), trial.number


def test_pruner_stops_frozen_trial_inside_first_epoch_with_reason():
    study = _study(FlipSHPruner(sub_patience=1))
    pruned, step, n = _run(study, [0.3] * 5, [-9.0] * 5, subs_first_epoch=[-9.0] * 7)
    assert pruned and step == 0
    assert study.trials[n].user_attrs[PRUNE_REASON_ATTR].startswith("flip-early: ")
    # an active trial is not stopped in its first epoch
    pruned, step, _ = _run(study, [0.5, 0.6, 0.7, 0.8, 0.9], [-4.0] * 5, subs_first_epoch=[-4.0] * 7)
    assert not pruned and step == 5


def test_pruner_protects_late_bloomer_that_asha_stops():
    E = 9
    good = [0.5, 0.85, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    bloomer = [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97]  # promoted at step 1, last at step 3, rising
    flat = [0.6] * E  # promoted at step 1, last at step 3, flat
    fates = {}
    for name, pruner in (("asha", optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)),
                         ("flip+asha", FlipSHPruner(max_steps=E, window=2, min_rise=0.01))):
        study = _study(pruner)
        for _ in range(3):
            _run(study, good, [-4.0] * E, subs_first_epoch=[-4.0] * 7)
        fates[name] = (_run(study, bloomer, [-4.0] * E), _run(study, flat, [-4.0] * E), study)
    (b_pruned, b_step, _), (f_pruned, f_step, _), _ = fates["asha"]
    assert (b_pruned, b_step, f_pruned, f_step) == (True, 3, True, 3)
    (b_pruned, b_step, bn), (f_pruned, f_step, fn), study = fates["flip+asha"]
    assert (b_pruned, b_step) == (False, E)  # the late bloomer finishes and is the best trial
    assert study.best_trial.number == bn
    assert study.trials[bn].user_attrs[PROTECTED_ATTR].startswith("protect: late bloomer")
    assert (f_pruned, f_step) == (True, 3)
    assert study.trials[fn].user_attrs[PRUNE_REASON_ATTR].startswith("asha: SuccessiveHalvingPruner stopped it")


def test_pruner_collapse_rule_stops_collapsed_loser_the_wrapped_pruner_keeps():
    E = 9
    study = _study(FlipSHPruner(optuna.pruners.NopPruner(), max_steps=E, patience=2))
    _run(study, [0.9] * E, [-4.0] * E)
    # the wrapped pruner keeps it, but its flip rate collapses while the value stays flat below the best
    pruned, step, n = _run(study, [0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [-3.0, -9.0, -9.0] + [-9.0] * 6)
    assert pruned and step == 3
    assert study.trials[n].user_attrs[PRUNE_REASON_ATTR].startswith("flip-collapse: ")


def test_collapse_waits_for_a_completed_trial_and_can_be_switched_off():
    rule = FlipSHRule(patience=2)
    frozen = ([-3.0, -9.0, -9.0], [0.5, 0.4, 0.4])
    assert not rule.collapsed(*frozen, best_value=None).stop  # nothing says it is not the best run yet
    assert rule.collapsed(*frozen, best_value=0.9).message().startswith("flip-collapse: ")
    assert not FlipSHRule(use_collapse=False).collapsed(*frozen, best_value=0.9).stop


# ---------------------------------------------------------------- flip-band
WINNERS = [(0.90, [-3.0, -5.0, -6.0]), (0.88, [-3.5, -5.5, -6.5]), (0.87, [-3.2, -5.2, -6.2])]
LOSER = (0.40, [-1.0, -1.0, -1.0])  # a completed noisy run: must not widen the band (not among band_top)


def test_band_spans_the_best_completed_trials_at_the_same_report():
    rule = FlipSHRule(band=Band(width=1.0, top=3, min_ref=3))
    assert rule.band_range(1, [*WINNERS, LOSER]) == (-3.5, -3.0)
    assert rule.band_range(2, [LOSER, *WINNERS]) == (-5.5, -5.0)  # order of the completed list does not matter
    assert rule.band_range(1, WINNERS[:2]) is None  # fewer than band_min_ref completed
    assert rule.band_range(4, WINNERS) is None  # no completed series that long
    # minimising: the best trials are the lowest values
    assert FlipSHRule(band=Band(width=1.0, top=1, min_ref=1)).band_range(1, [*WINNERS, LOSER], maximize=False) == (-1.0, -1.0)


def test_out_of_band_stops_frozen_and_noisy_runs_after_warmup():
    rule = FlipSHRule(band=Band(width=1.0, warmup=2))
    refs = [*WINNERS, LOSER]
    noisy = rule.out_of_band([-3.0, -3.9], refs)  # band at report 2: [-5.5, -5.0]; -3.9 > -5.0 + 1
    assert noisy.stop and noisy.message().startswith("flip-band: ") and "noisy" in noisy.reason
    frozen = rule.out_of_band([-3.0, -6.6], refs)
    assert frozen.stop and "frozen" in frozen.reason
    assert not rule.out_of_band([-3.0, -4.1], refs).stop  # within the slack
    assert not rule.out_of_band([-3.0, -6.4], refs).stop
    assert not rule.out_of_band([-9.0], refs).stop  # report 1 < band_warmup
    assert not rule.out_of_band([-3.0, -1.0], WINNERS[:2]).stop  # no band yet
    assert not FlipSHRule().out_of_band([-3.0, -1.0], refs).stop  # off by default


def test_in_band_protection_only_inside_the_band_and_only_when_enabled():
    rule = FlipSHRule(band=Band(width=1.0, protect=True))
    refs = [*WINNERS, LOSER]
    keep = rule.in_band([-3.0, -5.2], refs)
    assert not keep.stop and keep.rule == "protect"
    assert rule.in_band([-3.0, -4.5], refs).stop  # outside the band itself (the slack is only for stopping)
    assert FlipSHRule(band=Band(width=1.0)).in_band([-3.0, -5.2], refs).stop  # band_protect off
    wide = FlipSHRule.from_kwargs(band_width=1.0, band_protect=True, band_protect_width=0.5)
    assert not wide.in_band([-3.0, -4.6], refs).stop  # -4.6 <= -5.0 + 0.5
    assert wide.in_band([-3.0, -4.4], refs).stop
    assert not wide.in_band([-3.0, -5.9], refs).stop and wide.in_band([-3.0, -6.1], refs).stop


def test_replay_flip_asha_uses_the_recommended_band_settings():
    from bnn_tune.hpobench._replay import make_pruner
    from bnn_tune.plugins._flip_sh import RECOMMENDED

    rule = make_pruner("flip+asha", 9).rule
    assert RECOMMENDED["band_protect"] is True
    assert rule.band == Band(width=RECOMMENDED["band_width"], protect=RECOMMENDED["band_protect"],
                             protect_width=RECOMMENDED["band_protect_width"])


@pytest.mark.parametrize("kw", [{"band_width": -1.0}, {"band_top": 0}, {"band_min_ref": 0}, {"band_warmup": 0},
                                {"band_width": float("inf")}, {"band_protect_width": -0.5}])
def test_bad_band_arguments_raise(kw):
    # the flat keywords of earlier versions still build the Band (FlipSHRule.from_kwargs)
    with pytest.raises(ValueError, match=next(iter(kw))):
        FlipSHRule.from_kwargs(**{"band_width": 1.0, **kw})
    with pytest.raises(ValueError, match=next(iter(kw))):
        Band(**{"width": 1.0, **{k[len("band_"):]: v for k, v in kw.items()}})


def test_band_keywords_without_a_width_are_refused_not_ignored():
    with pytest.raises(ValueError, match=r"`band_top` needs `band_width`"):
        FlipSHRule.from_kwargs(band_top=2)


def test_pruner_band_stops_noisy_trial_asha_promotes_and_keeps_in_band_bloomer():
    """ASHA promotes a noisy run on early accuracy and stops a slow starter flipping like the winners; the band
    rule reverses both."""
    E = 9
    good = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9, 0.9]
    lfr_good = [-3.0, -5.0, -6.0, -6.0, -6.0, -6.0, -6.0, -6.0, -6.0]
    noisy = [0.7, 0.75, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]  # best at rungs 1 and 3 by accuracy
    slow = [0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 0.85, 0.9, 0.95]  # worst early, best at the end
    fates = {}
    for name, pruner in (("asha", optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)),
                         ("band", FlipSHPruner(max_steps=E, min_rise=None, band_width=1.0, band_warmup=2,
                                               band_protect=True))):
        study = _study(pruner)
        for _ in range(3):
            _run(study, good, lfr_good)
        fates[name] = (_run(study, noisy, [-1.5] * E), _run(study, slow, lfr_good), study)
    (n_pruned, _, _), (s_pruned, s_step, _), _ = fates["asha"]
    assert not n_pruned and s_pruned and s_step == 1
    (n_pruned, n_step, nn), (s_pruned, s_step, sn), study = fates["band"]
    assert (n_pruned, n_step) == (True, 2)
    assert study.trials[nn].user_attrs[PRUNE_REASON_ATTR].startswith("flip-band: ")
    assert (s_pruned, s_step) == (False, E)
    assert study.trials[sn].user_attrs[PROTECTED_ATTR].startswith("protect: flips like the best")
    assert study.best_trial.number == sn


# ------------------------------------------------------------------ exact edges (issue 26: found by tools/mutate.py)
def test_band_includes_a_completed_trial_at_its_own_last_report():
    # the winners reported 3 epochs: at report 3 their last flip rates span the band
    rule = FlipSHRule(band=Band(width=1.0, top=3, min_ref=3))
    assert rule.band_range(3, WINNERS) == (-6.5, -6.0)


def test_band_edges_are_inside():
    # band at report 2: [-5.5, -5.0]; with width 1.0 a run exactly 1.0 outside either edge is not stopped
    rule = FlipSHRule(band=Band(width=1.0, warmup=1))
    refs = [*WINNERS, LOSER]
    assert not rule.out_of_band([-3.0, -4.0], refs).stop
    assert not rule.out_of_band([-3.0, -6.5], refs).stop
    assert rule.out_of_band([-3.0, -3.99], refs).stop and rule.out_of_band([-3.0, -6.51], refs).stop
    # band protection: the edges of band +- protect_width are inside too
    keep = FlipSHRule(band=Band(width=1.0, protect=True, protect_width=0.5))
    assert not keep.in_band([-3.0, -4.5], refs).stop and not keep.in_band([-3.0, -6.0], refs).stop
    # the band's warm-up is the first report it judges
    assert FlipSHRule(band=Band(width=1.0, warmup=2)).out_of_band([-3.0, -9.0], refs).stop


@pytest.mark.parametrize("maximize", [True, False])
def test_band_is_spanned_by_the_best_trials_in_either_direction(maximize):
    # top=1: the band is the single best trial's flip rate; best is the highest value when maximizing and the
    # lowest when minimizing
    rule = FlipSHRule(band=Band(width=0.5, top=1, min_ref=1))
    refs = [(0.9, [-2.0]), (0.1, [-6.0])]
    expected = (-2.0, -2.0) if maximize else (-6.0, -6.0)
    assert rule.band_range(1, refs, maximize=maximize) == expected


def test_band_width_zero_and_window_one_are_valid_settings():
    assert Band(width=0.0).width == 0.0 and Band(width=0.5).width == 0.5
    rule = FlipSHRule(window=1, min_rise=0.01, margin=0.0)
    # window=1: the rise of the last report alone
    assert not rule.protect([-4, -4], [0.3, 0.4], remaining=10, best_value=0.9).stop
    assert rule.protect([-4, -4], [0.4, 0.4], remaining=10, best_value=0.9).stop


def test_protect_needs_a_finite_objective_at_both_ends_of_the_window():
    rule = FlipSHRule(window=2, min_rise=0.01, margin=0.02)
    nan = float("nan")
    for values in ([nan, 0.4, 0.5], [0.3, 0.4, nan]):
        d = rule.protect([-4, -4, -4], values, remaining=10, best_value=0.9)
        assert d.stop and "non-finite" in d.reason
    assert rule.protect([-4, -4, nan], [0.3, 0.4, 0.5], remaining=10, best_value=0.9).stop


@pytest.mark.parametrize("maximize", [True, False])
def test_late_bloomer_projection_in_either_direction(maximize):
    # the objective improves by 0.1 per report (accuracy rising, or loss falling); best completed 0.9 (or 0.1
    # for a loss). 2 reports left reach exactly best - margin: protected; 1 report left does not.
    s = 1.0 if maximize else -1.0
    rule = FlipSHRule(window=2, min_rise=0.0625, margin=0.125)
    values = [0.5 - s * 0.25, 0.5 - s * 0.125, 0.5]  # exact in binary: +0.125 per report towards better
    best = 0.5 + s * 0.375  # 0.5 + 2 * 0.125 = best - margin exactly
    assert not rule.protect([-4, -4, -4], values, remaining=2, best_value=best, maximize=maximize).stop
    assert rule.protect([-4, -4, -4], values, remaining=1, best_value=best, maximize=maximize).stop
    # the same values read in the other direction are falling: never protected
    assert rule.protect([-4, -4, -4], values, remaining=10, best_value=best, maximize=not maximize).stop


def test_min_rise_is_inclusive():
    rule = FlipSHRule(window=2, min_rise=0.125, margin=0.0)
    assert not rule.protect([-4, -4, -4], [0.25, 0.375, 0.5], remaining=10, best_value=0.75).stop  # exactly min_rise
    assert rule.protect([-4, -4, -4], [0.25, 0.375, 0.49], remaining=10, best_value=0.75).stop


def test_defaults_are_the_settings_the_benchmarks_were_measured_with():
    # BENCHMARKS.md's flip+asha/flip+hyperband figures and RECOMMENDED_RULE use these defaults: changing one is
    # a decision that reruns the benchmark, not an edit a test should let through
    assert FlipSHRule() == FlipSHRule(floor=-8.0, sub_patience=1, patience=2, relative_drop=0.99, min_improvement=0.0,
                                      margin=0.02, window=2, min_rise=0.01, use_collapse=True, band=None)
    assert " collapse=" not in repr(FlipSHRule())  # derived from the settings, not one of them
