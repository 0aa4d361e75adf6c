"""The Ray schedulers make the same decisions as their Optuna forms on recorded curves (single trial:
successive halving promotes a lone trial in both frameworks, so only the flip-rate rules decide)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest

from bnn_tune.hpobench.table import load
from bnn_tune.metrics import log_flip_rate

pytest.importorskip("ray.tune")

from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402

from bnn_tune.plugins.flip_sh import SUB_FLIP_RATE_ATTR, FlipSHPruner  # noqa: E402
from bnn_tune.plugins.flip_sh_ray import FlipSHScheduler  # noqa: E402
from bnn_tune.plugins.optuna import FLIP_RATE_ATTR, PRUNE_REASON_ATTR, FlipRatePruner  # noqa: E402
from bnn_tune.plugins.ray import FlipRateScheduler  # noqa: E402


def _curves(table, ci, si):
    P = table.sub_epoch_points
    c = table.curves
    val = [float(x) for x in c["val_acc"][ci, si]]
    lfr = [float(x) for x in c["log_flip_rate"][ci, si]]
    subs = [log_flip_rate(float(x)) for x in c["sub_flip_rate"][ci, si]]
    return val, lfr, [subs[e * P:(e + 1) * P] for e in range(len(val))]


def optuna_stop(pruner, val, lfr, subs):
    """(epoch in which the trial stopped or None, reason) under the replay's reporting protocol."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna_stop_in(optuna.create_study(direction="maximize", pruner=pruner), val, lfr, subs)


def ray_stop(scheduler, val, lfr, subs):
    trial = SimpleNamespace(trial_id="t0", storage=None)
    scheduler.set_search_properties("val_acc", "max")
    scheduler.on_trial_add(None, trial)
    for e in range(len(val)):
        result = {"training_iteration": e + 1, "val_acc": val[e], "log_flip_rate": lfr[e],
                  "sub_log_flip_rate": subs[e]}
        if e + 1 < len(val) and scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            return e + 1, scheduler.stop_reasons.get("t0", "")
    return None, ""


def _cells(table, n=12):
    """Grid points with different fates: frozen, collapsed and healthy runs, training seed 0."""
    final = table.final_val()
    order = sorted(range(len(table.configs)), key=lambda i: final[i])
    step = max(1, len(order) // n)
    return [(ci, 0) for ci in order[::step]]


def _table():
    from bnn_tune import hpobench

    return load("bop_digits") if "bop_digits" in hpobench.tasks() else None


@pytest.fixture(scope="module")
def table(synthetic_dir):
    return _table() or load("bop_digits", data_dir=synthetic_dir)


def test_flip_sh_scheduler_matches_flip_sh_pruner(table):
    E = table.epochs
    stops = 0
    for ci, si in _cells(table):
        val, lfr, subs = _curves(table, ci, si)
        o = optuna_stop(FlipSHPruner(max_steps=E), val, lfr, subs)
        r = ray_stop(FlipSHScheduler(ASHAScheduler(max_t=E, grace_period=1, reduction_factor=3), max_t=E),
                     val, lfr, subs)
        assert o[0] == r[0], (table.configs[ci], o, r)
        assert o[1].split(":")[0] == r[1].split(":")[0], (o, r)
        stops += o[0] is not None
    assert stops >= 1  # the curves include at least one the rules stop


@pytest.mark.parametrize("name", ["flip+hyperband", "flip+asha", "hyperband", "asha", "flip"])
def test_search_cli_strategies_decide_alike(table, name):
    """``bnn-tune search --pruner NAME``: the Optuna pruner (``make_pruner``) and the Ray scheduler
    (``make_scheduler``) the two backends build stop each recorded curve at the same epoch by the same rule."""
    from bnn_tune.search.optuna import make_pruner
    from bnn_tune.search.ray import make_scheduler

    E = table.epochs
    stops = 0
    for ci, si in _cells(table):
        val, lfr, subs = _curves(table, ci, si)
        o = optuna_stop(make_pruner(name, epochs=E), val, lfr, subs)
        r = ray_stop(make_scheduler(name, E), val, lfr, subs)
        assert o[0] == r[0], (name, table.configs[ci], o, r)
        if name == "flip":  # FlipRateScheduler keeps the bare reason (its result says "FlipRateScheduler: ...")
            assert o[1] == (f"flip-collapse: {r[1]}" if r[1] else ""), (o, r)
        else:
            assert o[1].split(":")[0] == r[1].split(":")[0], (o, r)
        stops += o[0] is not None
    assert stops >= (1 if name.startswith("flip") else 0)  # a lone trial: successive halving (or median) alone keeps it


def test_every_ray_scheduler_carries_the_metric():
    """The search driver's TuneConfig passes no metric: each scheduler must carry val_acc/max itself, or a
    flip-rate wrapper around FIFO would never judge anything."""
    from bnn_tune.search._rule import PRUNERS
    from bnn_tune.search.ray import make_scheduler

    for name in PRUNERS:
        if name != "none":
            built = make_scheduler(name, 10)
            assert built.metric == "val_acc" and (getattr(built, "mode", None) or built._mode) == "max", (name, built)


@pytest.mark.parametrize("name", ["flip+hyperband", "flip+asha"])
def test_search_default_is_the_strategy_the_replay_measures(name):
    """``bnn-tune search --pruner NAME`` builds the pruner that ``bnn_tune.hpobench.replay(pruner=NAME)`` measured:
    same wrapped schedule and settings, same flip-rate rule."""
    from bnn_tune.hpobench._replay import make_pruner as replay_pruner
    from bnn_tune.search._rule import DEFAULT_PRUNER
    from bnn_tune.search.optuna import make_pruner

    assert DEFAULT_PRUNER == "flip+hyperband"
    a, b = make_pruner(name, epochs=10), replay_pruner(name)
    assert type(a) is type(b) and type(a._wrapped) is type(b._wrapped)
    assert repr(a.rule) == repr(b.rule)
    for attr in ("_min_resource", "_reduction_factor", "_max_resource"):
        assert getattr(a._wrapped, attr, None) == getattr(b._wrapped, attr, None), attr


def test_flip_rate_scheduler_matches_flip_rate_pruner(table):
    """``FlipRateScheduler(ASHAScheduler)`` (the Ray backend) vs ``FlipRatePruner(SuccessiveHalving, or)``."""
    E = table.epochs
    for ci, si in _cells(table):
        val, lfr, subs = _curves(table, ci, si)
        o = optuna_stop(FlipRatePruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
                                       combine="or", margin=0.02), val, lfr, subs)
        r = ray_stop(FlipRateScheduler(ASHAScheduler(max_t=E, grace_period=1, reduction_factor=3), margin=0.02),
                     val, lfr, subs)
        assert o[0] == r[0], (table.configs[ci], o, r)
        assert not math.isnan(val[-1])


def test_flip_band_same_decisions_with_completed_trials(table):
    """``flip-band`` judges against completed trials: both adapters first see the table's three best configs
    complete, then each candidate curve; the wrapped scheduler never stops (FIFO / NopPruner), so the band
    (and flip-early) alone decide, at the same epoch with the same rule."""
    from ray.tune.schedulers import FIFOScheduler

    E = table.epochs
    final = table.final_val()
    best3 = sorted(range(len(table.configs)), key=lambda i: -final[i])[:3]
    kw = {"band_width": 0.5, "band_warmup": 2, "min_rise": None}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stops = 0
    for ci, si in _cells(table):
        val, lfr, subs = _curves(table, ci, si)
        study = optuna.create_study(direction="maximize", pruner=FlipSHPruner(optuna.pruners.NopPruner(),
                                                                              max_steps=E, **kw))
        sched = FlipSHScheduler(FIFOScheduler(), max_t=E, **kw)
        sched.set_search_properties("val_acc", "max")
        for j, bi in enumerate(best3):
            bval, blfr, _ = _curves(table, bi, 0)
            t = study.ask()
            t.set_user_attr(FLIP_RATE_ATTR, blfr)
            study.tell(t, bval[-1])
            rt = SimpleNamespace(trial_id=f"b{j}", storage=None)
            sched.on_trial_add(None, rt)
            for e in range(E):
                sched.on_trial_result(None, rt, {"training_iteration": e + 1, "val_acc": bval[e], "log_flip_rate": blfr[e]})
            sched.on_trial_complete(None, rt, {"training_iteration": E, "val_acc": bval[-1], "log_flip_rate": blfr[-1]})
        o = optuna_stop_in(study, val, lfr, subs)
        r = ray_stop(sched, val, lfr, subs)
        assert o[0] == r[0], (table.configs[ci], o, r)
        assert o[1].split(":")[0] == r[1].split(":")[0], (o, r)
        stops += o[1].startswith("flip-band")
    assert stops >= 1  # the band stopped at least one of the curves


def optuna_stop_in(study, val, lfr, subs):
    """:func:`optuna_stop` in an existing study (with completed trials)."""
    trial = study.ask()
    flat: list[float] = []
    for e in range(len(val)):
        flat += subs[e]
        if e == 0:
            for k in range(1, len(subs[0])):
                trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(subs[0][:k]))
                if trial.should_prune():
                    return 1, study.trials[trial.number].user_attrs.get(PRUNE_REASON_ATTR, "")
        trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(flat))
        trial.set_user_attr(FLIP_RATE_ATTR, lfr[: e + 1])
        trial.report(val[e], e + 1)
        if e + 1 < len(val) and trial.should_prune():
            return e + 1, study.trials[trial.number].user_attrs.get(PRUNE_REASON_ATTR, "")
    return None, ""
