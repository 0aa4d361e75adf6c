"""What the strategies mean beyond their flip rules: Hyperband's bracket sampling, the rule a stop is named by,
no stop at the last epoch, one range validator."""

from __future__ import annotations

import math

import optuna
import pytest

from bnn_tune._validate import check_range
from bnn_tune.plugins._flip_sh import FlipSHRule, TrialView
from bnn_tune.plugins._outcome import (
    FLIP_RATE_ATTR,
    PRUNE_REASON_ATTR,
    count_statuses,
    trial_status,
)
from bnn_tune.plugins.flip_sh import FlipHyperbandPruner, FlipSHPruner
from bnn_tune.plugins.strategies import get_strategy


class _HistorySpy(optuna.samplers.RandomSampler):
    """Records the trials the sampler is shown at every independent draw (after Optuna's bracket filter)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.seen: list[tuple[int, tuple[int, ...]]] = []

    def sample_independent(self, study, trial, name, distribution):
        self.seen.append((trial.number, tuple(t.number for t in study.get_trials(deepcopy=False))))
        return super().sample_independent(study, trial, name, distribution)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    for e in range(1, 10):
        trial.set_user_attr(FLIP_RATE_ATTR, [-3.0] * e)  # healthy: no flip rule acts
        trial.report(x * e / 9, e)
        if e < 9 and trial.should_prune():
            raise optuna.TrialPruned()
    return x


def test_flip_hyperband_shows_the_sampler_the_bracket_history_of_plain_hyperband():
    """TPE (any sampler) sees only the trial's Hyperband bracket when the pruner *is* a HyperbandPruner; with
    flip+hyperband it must see exactly the history it sees with HyperbandPruner alone."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    histories = {}
    for name, pruner in (("hyperband", optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)),
                         ("flip+hyperband", get_strategy("flip+hyperband").optuna_pruner(9))):
        spy = _HistorySpy(seed=0)
        study = optuna.create_study(direction="maximize", sampler=spy, pruner=pruner, study_name="hb")
        study.optimize(_objective, n_trials=30)
        histories[name] = spy.seen
    assert isinstance(get_strategy("flip+hyperband").optuna_pruner(9), optuna.pruners.HyperbandPruner)
    assert histories["flip+hyperband"] == histories["hyperband"]
    # the filter is in force: some trial is shown fewer trials than were finished before it
    assert any(len(seen) < number for number, seen in histories["hyperband"])


def test_flip_sh_pruner_around_hyperband_is_a_hyperband_pruner():
    p = FlipSHPruner(optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3), sub_patience=2)
    assert type(p) is FlipHyperbandPruner and p.rule.sub_patience == 2 and p.schedule_rule == "hyperband"
    assert type(FlipSHPruner()) is FlipSHPruner and FlipSHPruner().schedule_rule == "asha"
    with pytest.raises(TypeError, match="`wrapped_pruner` must be an optuna HyperbandPruner"):
        FlipHyperbandPruner(optuna.pruners.MedianPruner())


@pytest.mark.parametrize("inner, rule", [(optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3), "hyperband"),
                                         (optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), "asha"),
                                         (optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0), "median")])
def test_a_stop_of_the_wrapped_pruner_is_named_by_its_rule(inner, rule):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=FlipSHPruner(inner, max_steps=9, min_rise=None),
                                study_name="rules")
    for value in (0.9, 0.9, 0.9, 0.9):
        t = study.ask()
        for e in range(1, 10):
            t.set_user_attr(FLIP_RATE_ATTR, [-3.0] * e)
            t.report(value, e)
            assert e == 9 or not t.should_prune()
        study.tell(t, value)
    pruned = []
    for _ in range(6):  # some bad trial lands in a bracket that stops it
        t = study.ask()
        for e in range(1, 10):
            t.set_user_attr(FLIP_RATE_ATTR, [-3.0] * e)
            t.report(0.1, e)
            if t.should_prune():
                pruned.append(study.trials[t.number].user_attrs[PRUNE_REASON_ATTR])
                break
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
    assert pruned and all(r.startswith(f"{rule}: {type(inner).__name__} stopped it at step ") for r in pruned), pruned
    assert {trial_status(stop_reason=r) for r in pruned} == {"pruned: " + rule}


def test_the_last_epoch_is_never_a_stop():
    """A trial at its last epoch ran every epoch: no rule stops it, the scheduler is not even asked."""
    rule = FlipSHRule()
    asked = []
    frozen = TrialView(sub_log_flip_rates=(-9.0,) * 8, log_flip_rates=(-9.0,) * 5, values=(0.1,) * 5, best_value=0.9,
                       remaining=0)
    d = rule.decide(frozen, lambda: asked.append(1) or True)
    assert (d.stop, d.rule, asked) == (False, "completed", [])
    d = rule.decide(TrialView(**{**vars(frozen), "remaining": 1}), lambda: asked.append(1) or True)
    assert (d.stop, d.rule) == (True, "flip-early")
    d = rule.decide(TrialView(log_flip_rates=(-3.0,), values=(0.1,), remaining=1), True, schedule_rule="median")
    assert (d.stop, d.rule) == (True, "median")
    with pytest.raises(ValueError, match=r"`schedule_rule` must be one of \['asha', 'hyperband', 'median'\]"):
        rule.decide(TrialView(), schedule_rule="fifo")


def test_verdict_is_asked_only_when_the_rule_order_reaches_it():
    rule = FlipSHRule()
    asked = []
    rule.decide(TrialView(sub_log_flip_rates=(-9.0,), sub_epoch=True), lambda: asked.append(1) or True)
    rule.decide(TrialView(sub_log_flip_rates=(-9.0,) * 8, log_flip_rates=(-9.0,), values=(0.1,)),
                lambda: asked.append(2) or True)
    assert asked == []
    rule.decide(TrialView(log_flip_rates=(-3.0,), values=(0.5,)), lambda: asked.append(3) or False)
    assert asked == [3]


def test_count_statuses_counts_every_status_and_refuses_others():
    assert count_statuses(["flip-early", "completed", "pruned: hyperband", "flip-early"]) == {
        "completed": 1, "pruned: hyperband": 1, "flip-early": 2}
    with pytest.raises(ValueError, match="`status` must be one of .* but got status='collapsed'"):
        count_statuses(["collapsed"])


@pytest.mark.parametrize("pruner, expected", [("asha", "pruned: asha"), ("flip+hyperband", "pruned: hyperband"),
                                              ("flip+median", "pruned: median"), ("none", "stopped"),
                                              ("flip", "stopped")])
def test_a_stop_without_reason_names_the_strategy_scheduler_or_no_rule(pruner, expected):
    """A trial that ended early with no recorded reason was stopped by the strategy's scheduler (a plain ASHA
    records none); a strategy without one names no rule it does not have (Ray once ranked an interrupted
    trial of ``--pruner none`` as ``pruned: asha``)."""
    from bnn_tune.plugins._outcome import trial_status

    rule = get_strategy(pruner).schedule_rule
    assert trial_status(stopped=True, schedule_rule=rule) == expected
    assert trial_status(stopped=False, schedule_rule=rule) == "completed"
    assert count_statuses([expected]) == {expected: 1}


# ---------------------------------------------------------------- the one range validator
@pytest.mark.parametrize("value, ok", [(1, True), (0, False), (True, False), (1.0, False), (None, False)])
def test_check_range_integer_bounds(value, ok):
    if ok:
        assert check_range("n", value, 1, integer=True) == value
    else:
        with pytest.raises(ValueError, match=rf"`n` must be an integer >= 1, but got n={value!r}\."):
            check_range("n", value, 1, integer=True)


@pytest.mark.parametrize("value, ok", [(0.5, True), (0.0, False), (1.0, False), (1e-12, True), (math.nan, False),
                                       (None, True), ("0.5", False)])
def test_check_range_open_interval(value, ok):
    if ok:
        assert check_range("p", value, 0, 1, low_open=True, high_open=True, none_ok=True) == value
    else:
        with pytest.raises(ValueError, match=r"`p` must be in \(0, 1\) or None, but got p="):
            check_range("p", value, 0, 1, low_open=True, high_open=True, none_ok=True)


@pytest.mark.parametrize("value, ok", [(0.0, True), (-0.0, True), (-1e-9, False), (math.inf, False)])
def test_check_range_one_sided_needs_a_finite_number(value, ok):
    if ok:
        check_range("m", value, 0.0)
    else:
        with pytest.raises(ValueError, match=r"`m` must be a finite number >= 0"):
            check_range("m", value, 0.0)


def test_rules_are_frozen_dataclasses_validated_by_the_one_validator():
    from dataclasses import FrozenInstanceError

    from bnn_tune.plugins import FlipRateCollapseRule
    from bnn_tune.plugins._flip_sh import Band

    assert FlipSHRule(floor=-7) == FlipSHRule(floor=-7.0) and FlipSHRule().band is None
    with pytest.raises(FrozenInstanceError):
        FlipSHRule().floor = -5.0  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"`floor` must be a log flip rate in \(-9, 0\], but got floor=-9"):
        FlipSHRule(floor=-9)
    with pytest.raises(ValueError, match=r"`sub_patience` must be an integer >= 1, but got sub_patience=0\."):
        FlipSHRule(sub_patience=0)
    with pytest.raises(ValueError, match=r"`band_top` must be an integer >= 1, but got band_top=0\."):
        Band(width=1.0, top=0)
    with pytest.raises(ValueError, match=r"`patience` must be an integer >= 1, but got patience=0\."):
        FlipRateCollapseRule(patience=0)
