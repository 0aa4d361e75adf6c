"""FlipRatePruner through study.ask()/trial.report()/should_prune() on synthetic flip-rate series."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest

from bnn_tune.plugins.optuna import FLIP_RATE_ATTR, PRUNE_REASON_ATTR, FlipRatePruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

FROZEN = -9.0
HEALTHY = -5.0


def _feed(trial, lfr, values, start_step=1):
    """Report like bnn_tune.objective does: series attr first, then the value; return should_prune()."""
    answers = []
    for i, v in enumerate(values):
        trial.set_user_attr(FLIP_RATE_ATTR, list(lfr[: i + 1]))
        trial.report(v, start_step + i)
        answers.append(trial.should_prune())
    return answers


def _complete(study, value, n=1):
    for _ in range(n):
        t = study.ask()
        study.tell(t, value)


# ------------------------------------------------------------------ validation, one test per argument
def test_wrapped_pruner_validation():
    with pytest.raises(TypeError, match="`wrapped_pruner` must be an optuna BasePruner or None"):
        FlipRatePruner(wrapped_pruner="median")  # type: ignore[arg-type]


@pytest.mark.parametrize("name,bad", [
    ("n_startup_trials", -1), ("n_startup_trials", 1.0),
    ("n_warmup_steps", -1), ("n_warmup_steps", True),
    ("interval_steps", 0), ("interval_steps", "2"),
    ("patience", 0), ("patience", 1.5),
])
def test_integer_argument_validation(name, bad):
    with pytest.raises(ValueError, match=f"`{name}` must be an integer >= "):
        FlipRatePruner(**{name: bad})


def test_floor_validation():
    with pytest.raises(ValueError, match="`floor` must be a log flip rate in"):
        FlipRatePruner(floor=-10.0)


def test_relative_drop_validation():
    with pytest.raises(ValueError, match="`relative_drop` must be in"):
        FlipRatePruner(relative_drop=1.0)


def test_min_improvement_validation():
    with pytest.raises(ValueError, match="`min_improvement` must be a finite number >= 0"):
        FlipRatePruner(min_improvement=-1.0)


def test_combine_validation():
    with pytest.raises(ValueError, match="`combine` must be 'and' or 'or', but got combine='xor'"):
        FlipRatePruner(combine="xor")


def test_flip_rate_key_validation():
    with pytest.raises(ValueError, match="`flip_rate_key` must be a non-empty string"):
        FlipRatePruner(flip_rate_key="")


def test_rare_options_are_keyword_only():
    with pytest.raises(TypeError):
        FlipRatePruner(None, 0, 2, 1, 2, -8.0, 0.99, 0.0, "or")  # type: ignore[misc]
    with pytest.raises(TypeError):
        FlipRatePruner(None, 0, 2, 1, 2, -8.0, 0.99, 0.0, margin=0.1, combine="and", flip_rate_key="k", x=1)  # type: ignore[call-arg]


# ------------------------------------------------------------------ behaviour
def test_frozen_trial_is_pruned_after_warmup_and_reason_recorded():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=2, patience=2))
    trial = study.ask()
    answers = _feed(trial, [FROZEN] * 4, [0.1, 0.12, 0.14, 0.16])
    assert answers == [False, False, True, True]  # epochs 1-2: warm-up; epoch 3 judged (as FlipRateStopper)
    reason = study.trials[0].user_attrs[PRUNE_REASON_ATTR]
    assert "never rose above the floor" in reason


def test_healthy_trial_is_not_pruned():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=0, patience=1))
    trial = study.ask()
    assert not any(_feed(trial, [HEALTHY] * 8, [0.5] * 8))
    assert PRUNE_REASON_ATTR not in study.trials[0].user_attrs


def test_late_decay_with_improving_accuracy_is_not_pruned():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=2, patience=2))
    trial = study.ask()
    lfr = [-4.0, -4.5, -5.0, -5.2, -5.5, -8.5, -8.8, -8.9, -9.0]
    acc = [0.40, 0.60, 0.70, 0.75, 0.78, 0.82, 0.84, 0.85, 0.86]
    assert not any(_feed(trial, lfr, acc))


def test_collapse_after_activity_with_stalled_accuracy_is_pruned():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=1, patience=2))
    trial = study.ask()
    answers = _feed(trial, [-6.0, -8.5, -8.9, -9.0], [0.30, 0.30, 0.29, 0.30])
    assert answers == [False, False, True, True]
    assert "collapsed" in study.trials[0].user_attrs[PRUNE_REASON_ATTR]


def test_best_trial_of_the_study_is_never_pruned():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=0, patience=1))
    _complete(study, 0.5)
    trial = study.ask()
    assert not any(_feed(trial, [FROZEN] * 4, [0.6] * 4))  # better than every completed trial
    trial2 = study.ask()
    assert all(_feed(trial2, [FROZEN] * 4, [0.4] * 4))


def test_minimize_direction_uses_the_lowest_value_as_best():
    study = optuna.create_study(direction="minimize", pruner=FlipRatePruner(n_warmup_steps=0, patience=1))
    _complete(study, 0.5)
    assert not any(_feed(study.ask(), [FROZEN] * 3, [0.4] * 3))
    assert all(_feed(study.ask(), [FROZEN] * 3, [0.6] * 3))


def test_n_startup_trials_disables_pruning_until_enough_trials_complete():
    study = optuna.create_study(direction="maximize",
                                pruner=FlipRatePruner(n_startup_trials=2, n_warmup_steps=0, patience=1))
    assert not any(_feed(study.ask(), [FROZEN] * 3, [0.1] * 3))
    _complete(study, 0.9, n=2)
    assert all(_feed(study.ask(), [FROZEN] * 3, [0.1] * 3))


def test_n_warmup_steps_is_a_step_value_like_optuna():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=5, patience=1))
    answers = _feed(study.ask(), [FROZEN] * 6, [0.1] * 6, start_step=0)  # steps 0..5
    assert answers == [False] * 5 + [True]


def test_interval_steps_checks_only_every_interval():
    study = optuna.create_study(direction="maximize",
                                pruner=FlipRatePruner(n_warmup_steps=0, interval_steps=3, patience=1))
    answers = _feed(study.ask(), [FROZEN] * 7, [0.1] * 7, start_step=0)  # steps 0..6
    assert answers == [True, False, False, True, False, False, True]


def test_missing_series_never_prunes():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=0, patience=1))
    trial = study.ask()
    for step in range(4):
        trial.report(0.1, step)
        assert not trial.should_prune()


def test_custom_flip_rate_key():
    study = optuna.create_study(direction="maximize",
                                pruner=FlipRatePruner(n_warmup_steps=0, patience=1, flip_rate_key="lfr"))
    trial = study.ask()
    trial.set_user_attr("lfr", [FROZEN])
    trial.report(0.1, 0)
    assert trial.should_prune()


class _Always(optuna.pruners.BasePruner):
    def __init__(self, answer):
        self.answer = answer

    def prune(self, study, trial):
        return self.answer


@pytest.mark.parametrize("combine,wrapped,frozen,expected", [
    ("and", True, True, True), ("and", False, True, False), ("and", True, False, False),
    ("or", True, False, True), ("or", False, True, True), ("or", False, False, False),
])
def test_wrapped_pruner_composition(combine, wrapped, frozen, expected):
    pruner = FlipRatePruner(_Always(wrapped), n_warmup_steps=0, patience=1, combine=combine)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    trial.set_user_attr(FLIP_RATE_ATTR, [FROZEN if frozen else HEALTHY])
    trial.report(0.1, 0)
    assert trial.should_prune() is expected
    assert (PRUNE_REASON_ATTR in study.trials[0].user_attrs) is expected


def test_composes_with_median_pruner():
    pruner = FlipRatePruner(optuna.pruners.MedianPruner(n_startup_trials=1), n_warmup_steps=0, patience=1,
                            combine="or")
    study = optuna.create_study(direction="maximize", pruner=pruner)
    t0 = study.ask()
    _feed(t0, [HEALTHY] * 3, [0.9] * 3)
    study.tell(t0, 0.9)
    t1 = study.ask()
    assert _feed(t1, [HEALTHY] * 3, [0.2] * 3)[-1]  # healthy flip rate, but below the median
    assert "MedianPruner" in study.trials[1].user_attrs[PRUNE_REASON_ATTR]


def test_pickle_round_trip():
    pruner = FlipRatePruner(optuna.pruners.MedianPruner(), n_startup_trials=3, n_warmup_steps=4, interval_steps=2,
                            patience=3, floor=-7.0, relative_drop=None, min_improvement=0.01, combine="or",
                            flip_rate_key="x")
    clone = pickle.loads(pickle.dumps(pruner))
    assert repr(clone) == repr(pruner)
    assert clone.rule == pruner.rule
    study = optuna.create_study(direction="maximize", pruner=pickle.loads(pickle.dumps(FlipRatePruner(
        n_warmup_steps=0, patience=1))))
    assert _feed(study.ask(), [FROZEN], [0.1]) == [True]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_prune_reason_is_recorded_in_persistent_storages(tmp_path, kind):
    if kind == "sqlite":
        storage = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.create_study(direction="maximize", storage=storage, study_name="s",
                                pruner=FlipRatePruner(n_warmup_steps=0, patience=1))
    trial = study.ask()
    assert all(_feed(trial, [FROZEN] * 2, [0.1] * 2))
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    reloaded = optuna.load_study(study_name="s", storage=storage)
    assert "frozen" in reloaded.trials[0].user_attrs[PRUNE_REASON_ATTR]
    assert reloaded.trials[0].state == optuna.trial.TrialState.PRUNED


def test_nan_values_are_handled():
    study = optuna.create_study(direction="maximize", pruner=FlipRatePruner(n_warmup_steps=0, patience=2))
    trial = study.ask()
    assert _feed(trial, [-5.0, FROZEN, FROZEN], [0.3, math.nan, math.nan])[-1]


def test_margin_validation():
    with pytest.raises(ValueError, match="`margin` must be a finite number >= 0"):
        FlipRatePruner(margin=-1.0)


def test_margin_protects_trials_near_the_best():
    study = optuna.create_study(direction="maximize",
                                pruner=FlipRatePruner(n_warmup_steps=0, patience=1, margin=0.05))
    _complete(study, 0.9)
    assert not any(_feed(study.ask(), [FROZEN] * 3, [0.87] * 3))
    assert all(_feed(study.ask(), [FROZEN] * 3, [0.8] * 3))


# ------------------------------------------------------------------ both directions (issue 26)
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_value_is_the_best_completed_trial_in_the_studys_direction(direction):
    # two completed trials, 0.2 and 0.8: the best is 0.8 when maximizing and 0.2 when minimizing. A frozen
    # trial at 0.5 trails the best either way and is pruned; one that equals the best is kept.
    best, worst = (0.8, 0.2) if direction == "maximize" else (0.2, 0.8)
    study = optuna.create_study(direction=direction, pruner=FlipRatePruner(n_warmup_steps=0, patience=1))
    _complete(study, 0.2)
    _complete(study, 0.8)
    assert all(_feed(study.ask(), [FROZEN] * 3, [0.5] * 3))
    assert not any(_feed(study.ask(), [FROZEN] * 3, [best] * 3))
    assert all(_feed(study.ask(), [FROZEN] * 3, [worst] * 3))


def test_record_user_attr_says_whether_the_storage_took_it():
    from bnn_tune.plugins.optuna import record_user_attr

    study = optuna.create_study()
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    assert record_user_attr(study, frozen, "k", "v") is True
    assert study.trials[0].user_attrs["k"] == "v"
    study.tell(trial, 1.0)
    assert record_user_attr(study, frozen, "k", "late") is False  # a finished trial refuses: logged, not raised
