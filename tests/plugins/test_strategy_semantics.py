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


# ------------------------------------------------------------------ adapters' bookkeeping (issue 26: tools/mutate.py)
def _flip_sh_study(direction="maximize", **kw):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction=direction, pruner=FlipSHPruner(**kw))


def _reported_trial(study, values, lfr=-3.0):
    trial = study.ask()
    for e, v in enumerate(values, start=1):
        trial.set_user_attr(FLIP_RATE_ATTR, [lfr] * e)
        trial.report(v, e)
    return study._storage.get_trial(trial._trial_id)


def test_every_strategy_pruner_says_whether_it_judges_sub_epoch_points():
    # the objective and the replay ask a pruner inside the first epoch only when it says so: the registry's
    # flag and the pruner's attribute must agree, or flip-early never runs (or runs for a pruner without it)
    from bnn_tune.plugins.strategies import list_strategies

    assert FlipSHPruner.judges_sub_epoch is True
    for name in list_strategies():
        strategy = get_strategy(name)
        pruner = strategy.optuna_pruner(9)
        assert bool(getattr(pruner, "judges_sub_epoch", False)) == strategy.judges_sub_epoch, name


def test_flip_sh_view_counts_remaining_reports_and_knows_when_it_does_not_know():
    study = _flip_sh_study(max_steps=9)
    view = FlipSHPruner(max_steps=9).view(study, _reported_trial(study, [0.1, 0.2, 0.3]))
    assert view.remaining == 6 and view.values == (0.1, 0.2, 0.3) and view.best_value is None
    # no max_steps and no completed trial: the number of epochs left is unknown, not 0 or 1
    study = _flip_sh_study()
    assert FlipSHPruner().view(study, _reported_trial(study, [0.1])).remaining is None
    # ... and learnt from the longest completed trial once one completed
    done = study.ask()
    for e in range(1, 6):
        done.report(0.5, e)
    study.tell(done, 0.5)
    assert FlipSHPruner().view(study, _reported_trial(study, [0.1, 0.2])).remaining == 3


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_flip_sh_view_best_value_ignores_non_finite_completed_values(direction):
    study = _flip_sh_study(direction)
    for value in (0.25, 0.75, math.inf if direction == "maximize" else -math.inf):
        t = study.ask()
        t.report(value, 1)
        study.tell(t, value)
    view = FlipSHPruner().view(study, _reported_trial(study, [0.5]))
    assert view.best_value == (0.75 if direction == "maximize" else 0.25)
    assert sorted(v for v, _ in view.completed) == [0.25, 0.75]


def _ray_trial(tid):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=tid, storage=None, last_result=None)


def _ray_feed(scheduler, tid, values, lfrs):
    from ray.tune.schedulers import TrialScheduler

    trial = _ray_trial(tid)
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


def _stopping_scheduler(stop_at=2, only=""):
    """A wrapped scheduler that stops the trials whose id starts with ``only`` at iteration ``stop_at``."""
    from ray.tune.schedulers import TrialScheduler

    class _Stop(TrialScheduler):
        def on_trial_add(self, tune_controller, trial):
            pass

        def on_trial_result(self, tune_controller, trial, result):
            stop = trial.trial_id.startswith(only) and result["training_iteration"] >= stop_at
            return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

        def on_trial_complete(self, tune_controller, trial, result):
            pass

    return _Stop()


@pytest.mark.parametrize("mode", ["max", "min"])
def test_ray_flip_sh_best_value_follows_the_mode_and_skips_stopped_trials(mode):
    pytest.importorskip("ray.tune")
    from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler

    sched = FlipSHScheduler(_stopping_scheduler(only="stop"), "val_acc", mode, max_t=4, min_rise=None)
    good, bad = (0.9, 0.2) if mode == "max" else (0.1, 0.8)
    assert _ray_feed(sched, "a", [good] * 4, [-3.0] * 4) == "completed"
    assert _ray_feed(sched, "b", [bad] * 4, [-3.0] * 4) == "completed"
    # a trial the wrapped scheduler stopped (Ray still calls on_trial_complete) is no reference, even with the
    # best value of all
    best_ever = 1.0 if mode == "max" else 0.0
    assert _ray_feed(sched, "stop-c", [best_ever] * 3, [-3.0] * 3) == "stopped"
    view = sched.view("d", {"training_iteration": 1, "epoch": 1, "val_acc": 0.5, "log_flip_rate": -3.0})
    assert view.best_value == good and view.maximize == (mode == "max")
    assert sorted(v for v, _ in view.completed) == sorted([good, bad])


def test_ray_flip_sh_records_protected_late_bloomers_and_refuses_a_foreign_rule():
    pytest.importorskip("ray.tune")
    from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler

    with pytest.raises(TypeError, match="`rule` must be a FlipSHRule or None"):
        FlipSHScheduler(_stopping_scheduler(), "val_acc", "max", rule="flip")  # type: ignore[arg-type]
    sched = FlipSHScheduler(_stopping_scheduler(), "val_acc", "max", max_t=9, window=1, min_rise=0.01)
    # rising 0.2 per epoch with a healthy flip rate: the wrapped scheduler's stop is overruled and recorded
    assert _ray_feed(sched, "bloom", [0.2, 0.4, 0.6], [-3.0] * 3) == "completed"
    assert sched.protected["bloom"].startswith("protect: late bloomer")
    # flat: the wrapped scheduler's stop stands, named by its rule
    assert _ray_feed(sched, "flat", [0.2, 0.2], [-3.0] * 2) == "stopped"
    assert "flat" not in sched.protected and sched.stop_reasons["flat"].startswith("asha: ")


def test_ray_trial_stopped_inside_the_first_epoch_has_no_metric_and_a_reason():
    # Tune hands the searcher trial.last_result: a trial stopped by flip-early at a sub-epoch point carries NaN in
    # place of the metric, which OptunaSearch would record as a failure; the scheduler drops it (pruned, not
    # failed). An epoch result keeps its metric.
    pytest.importorskip("ray.tune")
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from bnn_tune.plugins._outcome import SUB_EPOCH_KEY
    from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler
    from bnn_tune.plugins.ray import STOP_REASON_KEY

    sched = FlipSHScheduler(FIFOScheduler(), "val_acc", "max", max_t=4, sub_patience=2)
    trial = _ray_trial("frozen")
    sched.on_trial_add(None, trial)
    decisions = []
    for k in (1, 2):
        result = {SUB_EPOCH_KEY: k, "sub_log_flip_rate": [-9.0] * k, "training_iteration": 0, "epoch": 0,
                  "val_acc": math.nan}
        trial.last_result = result
        decisions.append(sched.on_trial_result(None, trial, result))
    assert decisions == [TrialScheduler.CONTINUE, TrialScheduler.STOP]
    sched.on_trial_complete(None, trial, trial.last_result)
    assert "val_acc" not in trial.last_result
    assert trial.last_result[STOP_REASON_KEY].startswith("flip-early: ")
    # stopped at an epoch result: the value stays
    sched2 = FlipSHScheduler(_stopping_scheduler(stop_at=1), "val_acc", "max", max_t=4, min_rise=None)
    epoch = _ray_trial("e")
    sched2.on_trial_add(None, epoch)
    epoch.last_result = {"training_iteration": 1, "epoch": 1, "val_acc": 0.25, "log_flip_rate": -3.0}
    assert sched2.on_trial_result(None, epoch, epoch.last_result) == TrialScheduler.STOP
    sched2.on_trial_complete(None, epoch, epoch.last_result)
    assert epoch.last_result["val_acc"] == 0.25 and epoch.last_result[STOP_REASON_KEY].startswith("asha: ")


def test_ray_scheduler_without_a_mode_only_passes_results_through():
    # without a mode the collapse rule cannot tell better from worse: it judges nothing, the wrapped scheduler
    # decides
    pytest.importorskip("ray.tune")
    from ray.tune.schedulers import TrialScheduler

    from bnn_tune.plugins.ray import FlipRateScheduler

    sched = FlipRateScheduler(_stopping_scheduler(stop_at=99), metric="val_acc", n_warmup_steps=0, patience=1)
    trial = _ray_trial("t")
    sched.on_trial_add(None, trial)
    for e in (1, 2, 3):
        result = {"training_iteration": e, "val_acc": 0.1, "log_flip_rate": -9.0}
        assert sched.on_trial_result(None, trial, result) == TrialScheduler.CONTINUE
    assert sched.stop_reasons == {}
