"""One decision, two adapters: the Optuna pruner and the Ray scheduler feed :meth:`FlipSHRule.decide` the same
inputs, and every strategy is built from one registry (search, replay, both backends)."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from bnn_tune.hpobench.table import load
from bnn_tune.metrics import log_flip_rate
from bnn_tune.plugins._flip_sh import FlipSHRule
from bnn_tune.plugins.strategies import STRATEGIES, get_strategy

pytest.importorskip("ray.tune")

from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402

from bnn_tune.plugins._outcome import (  # noqa: E402
    FLIP_RATE_ATTR,
    PRUNE_REASON_ATTR,
    SUB_EPOCH_KEY,
    SUB_FLIP_RATE_ATTR,
)


def _curves(table, ci, si):
    P = table.sub_epoch_points
    c = table.curves
    val = [float(x) for x in c["val_acc"][ci, si]]
    lfr = [float(x) for x in c["log_flip_rate"][ci, si]]
    subs = [log_flip_rate(float(x)) for x in c["sub_flip_rate"][ci, si]]
    return val, lfr, [subs[e * P:(e + 1) * P] for e in range(len(val))]


@pytest.fixture(scope="module")
def table(synthetic_dir):
    from bnn_tune import hpobench

    return load("bop_digits") if "bop_digits" in hpobench.tasks() else load("bop_digits", data_dir=synthetic_dir)


@pytest.fixture
def views(monkeypatch):
    """Every (view, verdict asked?) FlipSHRule.decide receives, and its decision."""
    seen: list[tuple] = []
    original = FlipSHRule.decide

    def spy(self, view, scheduler_stops=False, **kw):
        asked = []

        def verdict():
            asked.append(True)
            return scheduler_stops() if callable(scheduler_stops) else scheduler_stops
        d = original(self, view, verdict, **kw)
        seen.append((view, bool(asked), d.stop, d.rule))
        return d
    monkeypatch.setattr(FlipSHRule, "decide", spy)
    return seen


def optuna_run(study, val, lfr, subs):
    """One trial under the objective's protocol (sub-epoch checks in epoch 1, no check after the last epoch)."""
    trial = study.ask()
    flat: list[float] = []
    for e in range(len(val)):
        if e == 0:
            for k in range(1, len(subs[0])):
                trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(subs[0][:k]))
                if trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    return "stopped"
        flat += subs[e]
        trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(flat))
        trial.set_user_attr(FLIP_RATE_ATTR, lfr[: e + 1])
        trial.report(val[e], e + 1)
        if e + 1 < len(val) and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return study.trials[trial.number].user_attrs.get(PRUNE_REASON_ATTR, "")
    study.tell(trial, val[-1])
    return ""


def ray_run(scheduler, tid, val, lfr, subs):
    """The same trial as :func:`bnn_tune.trainable`'s result stream (sub-epoch results, then epochs)."""
    trial = SimpleNamespace(trial_id=tid, storage=None, last_result=None)
    scheduler.on_trial_add(None, trial)
    stream = [{SUB_EPOCH_KEY: k, "sub_log_flip_rate": subs[0][:k], "training_iteration": 0, "epoch": 0,
               "val_acc": float("nan")} for k in range(1, len(subs[0]))]
    stream += [{"training_iteration": e + 1, "epoch": e + 1, "val_acc": val[e], "log_flip_rate": lfr[e],
                "sub_log_flip_rate": subs[e]} for e in range(len(val))]
    for r in stream:
        trial.last_result = r
        if scheduler.on_trial_result(None, trial, r) == TrialScheduler.STOP:
            scheduler.on_trial_complete(None, trial, r)
            return "stopped"
    scheduler.on_trial_complete(None, trial, stream[-1])
    return ""


class _BelowHalfPruner(optuna.pruners.BasePruner):
    """A wrapped schedule both frameworks can run identically: stop at epoch >= 2 below 0.5."""

    def prune(self, study, trial):
        return trial.last_step is not None and trial.last_step >= 2 and trial.intermediate_values[trial.last_step] < 0.5


class _BelowHalfScheduler(FIFOScheduler):
    def on_trial_result(self, tune_controller, trial, result):
        stop = result["training_iteration"] >= 2 and result["val_acc"] < 0.5
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE


@pytest.mark.parametrize("name", ["flip+gated-asha", "flip+hyperband", "flip+asha"])
def test_both_adapters_feed_decide_the_same_inputs(table, views, name):
    """A sequence of recorded trials (healthy winners first, then frozen, collapsing and noisy ones judged against
    them) through FlipSHPruner and FlipSHScheduler with the strategy's rule and epochs: every call of
    :meth:`FlipSHRule.decide` gets the same :class:`TrialView` in both, asks the wrapped schedule at the same
    points and decides the same. (The wrapped schedule is one both frameworks run identically: Optuna's and
    Ray's Hyperband hash trials into brackets differently.)"""
    from bnn_tune.plugins.flip_sh import FlipSHPruner
    from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler

    E = table.epochs
    final = table.final_val()
    order = sorted(range(len(table.configs)), key=lambda i: -final[i])
    cells = order[:4] + order[len(order) // 2::max(1, len(order) // 10)]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rule = get_strategy(name).settings(E).flip_sh
    study = optuna.create_study(direction="maximize", study_name="eq",
                                pruner=FlipSHPruner(_BelowHalfPruner(), max_steps=E, rule=rule))
    for ci in cells:
        optuna_run(study, *_curves(table, ci, 0))
    o_views = list(views)
    views.clear()
    scheduler = FlipSHScheduler(_BelowHalfScheduler(), "val_acc", "max", max_t=E, rule=rule)
    for n, ci in enumerate(cells):
        ray_run(scheduler, f"t{n}", *_curves(table, ci, 0))
    # Ray also shows the scheduler each trial's last epoch, which the Optuna objective never asks about; the
    # rule never stops there
    last = [x for x in views if x[0].remaining == 0]
    assert last and all(not stop and rule == "completed" for *_, stop, rule in last)
    assert o_views == [x for x in views if x[0].remaining != 0]
    rules = {rule for *_, stop, rule in o_views if stop}
    if get_strategy(name).gated:  # the gate keeps what the schedule would stop: it decided, in both adapters
        assert "flip-early" in rules and "rank-gate" in {rule for *_, rule in o_views}, rules
    else:
        assert "flip-early" in rules and len(rules) >= 2, rules  # the curves exercise the sub-epoch and epoch rules
    assert any(asked for _, asked, *_ in o_views)  # and the wrapped schedule's verdict
    assert any(v.completed and v.best_value is not None for v, *_ in o_views)


def test_every_ray_scheduler_carries_the_metric():
    """The search driver's TuneConfig passes no metric: each scheduler must carry val_acc/max itself, or a
    flip-rate wrapper around FIFO would never judge anything."""
    from bnn_tune.search.ray import make_scheduler

    for name in STRATEGIES:
        if name != "none":
            built = make_scheduler(name, 10)
            assert built.metric == "val_acc" and (getattr(built, "mode", None) or built._mode) == "max", (name, built)


def _describe(pruner) -> tuple:
    """A pruner's class and settings, recursively through the wrapped pruner (for equality)."""
    inner = getattr(pruner, "_wrapped", None) or getattr(pruner, "_wrapped_pruner", None)
    state = {k: v for k, v in vars(pruner).items() if k not in ("_wrapped", "_wrapped_pruner")}
    return type(pruner), repr(sorted(state.items(), key=lambda kv: kv[0])), None if inner is None else _describe(inner)


@pytest.mark.parametrize("name", STRATEGIES)
def test_replay_builds_exactly_what_search_builds(name):
    """``bnn_tune.hpobench.replay(pruner=NAME)`` measures what ``bnn-tune search --pruner NAME`` ships: the same
    classes and settings (the flip rule's warm-up included) for the same epochs."""
    from bnn_tune.hpobench._replay import make_pruner as replay_pruner
    from bnn_tune.search.optuna import make_pruner

    for epochs in (10, 20):
        assert _describe(make_pruner(name, epochs=epochs)) == _describe(replay_pruner(name, epochs))
    if name == "flip":
        assert replay_pruner(name, 20).rule.n_warmup_steps == 4  # max(2, epochs // 5), not 2


@pytest.mark.parametrize("name", STRATEGIES)
def test_both_backends_build_from_the_same_settings(name):
    s = get_strategy(name).settings(20)
    pruner, scheduler = get_strategy(name).optuna_pruner(20), get_strategy(name).ray_scheduler(20)
    if s.flip_sh is not None:
        assert pruner.rule == scheduler.flip_sh == s.flip_sh
        assert pruner._max_steps == scheduler._max_t == 20
    if s.collapse is not None:
        assert pruner.rule == scheduler.rule and pruner.rule.n_warmup_steps == s.collapse["n_warmup_steps"] == 4
    if s.successive_halving is not None:
        sh = s.successive_halving
        asha = scheduler.scheduler if hasattr(scheduler, "scheduler") else scheduler
        optuna_sh = getattr(pruner, "_wrapped", pruner)
        assert (optuna_sh._min_resource, optuna_sh._reduction_factor) == (sh["min_resource"], sh["reduction_factor"])
        assert (asha._max_t, asha._reduction_factor, len(asha._brackets)) == (20, sh["reduction_factor"], sh["brackets"])
        assert asha._brackets[0]._rungs[-1][0] == sh["min_resource"]  # the first rung: grace period 1 epoch
    if s.median is not None:
        median = getattr(pruner, "_wrapped_pruner", None) or pruner
        assert (median._n_startup_trials, median._n_warmup_steps) == (5, 2)
        assert (scheduler.scheduler._min_samples_required, scheduler.scheduler._grace_period) == (5, 2)
    expected = {"flip": None, "none": None, "flip+median": "median", "flip+gated-asha": "asha"}
    assert get_strategy(name).schedule_rule == expected.get(name, name.split("+")[-1])
    # the gate is the default's only: the other flip-sh strategies keep every stop of their schedule
    assert (s.flip_sh is not None and s.flip_sh.gate is not None) == (name == "flip+gated-asha")


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match=r"Unknown strategy 'ashaa'\. Available: \['asha', 'flip', "):
        get_strategy("ashaa")
    from bnn_tune.search.optuna import make_pruner

    with pytest.raises(ValueError, match=r"Unknown strategy 'ashaa'"):
        make_pruner("ashaa")
