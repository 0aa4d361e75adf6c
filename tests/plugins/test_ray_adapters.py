"""FlipRateStopper / FlipRateScheduler on synthetic result streams (no Ray runtime is started)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune")

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler  # noqa: E402
from ray.tune.stopper import CombinedStopper, MaximumIterationStopper  # noqa: E402

from bnn_tune.plugins import FlipRateCollapseRule  # noqa: E402
from bnn_tune.plugins.ray import (  # noqa: E402
    STOP_REASON_KEY,
    FlipRateScheduler,
    FlipRateStopper,
    read_stop_reason,
)

FROZEN = -9.0  # log flip rate of a run whose binary weights never flip
HEALTHY = -4.0


def _result(i: int, lfr: float, acc: float) -> dict:
    return {"training_iteration": i, "log_flip_rate": lfr, "val_acc": acc}


def _feed(stopper, trial_id, series):
    return [stopper(trial_id, _result(i + 1, lfr, acc)) for i, (lfr, acc) in enumerate(series)]


# ---------------------------------------------------------------- stopper
def test_stopper_stops_frozen_trial_and_says_why(caplog):
    s = FlipRateStopper("val_acc", "max", n_warmup_steps=2, patience=2)
    s("good", _result(1, HEALTHY, 0.9))  # another trial is better, so the guard does not apply
    results = [_result(i, FROZEN, 0.1) for i in (1, 2, 3)]
    with caplog.at_level("INFO", logger="bnn_tune.ray"):
        decisions = [s("bad", r) for r in results]
    assert decisions == [False, False, True]
    assert "frozen" in results[-1][STOP_REASON_KEY]
    assert results[-1][STOP_REASON_KEY].startswith("flip-collapse: ")
    assert STOP_REASON_KEY not in results[0]
    assert "bad" in s.stop_reasons and "good" not in s.stop_reasons
    assert any("trial bad stopped at iteration 3" in r.getMessage() for r in caplog.records)
    assert read_stop_reason(results[-1]) == results[-1][STOP_REASON_KEY]


def test_stopper_keeps_healthy_and_converging_trials():
    s = FlipRateStopper(n_warmup_steps=1, patience=2)
    s("best", _result(1, HEALTHY, 0.99))
    assert not any(_feed(s, "healthy", [(HEALTHY, 0.3)] * 6))
    # flip rate decays a hundredfold late while accuracy keeps improving: convergence, not collapse
    converging = [(-3.0, 0.3), (-3.0, 0.5), (-8.5, 0.6), (-8.6, 0.7), (-8.7, 0.8)]
    assert not any(_feed(s, "converging", converging))


def test_stopper_never_stops_the_best_trial():
    s = FlipRateStopper(n_warmup_steps=1, patience=2)
    s("other", _result(1, HEALTHY, 0.2))
    # frozen, but its accuracy beats every other trial: kept
    assert not any(_feed(s, "best", [(FROZEN, 0.5)] * 5))


def test_stopper_margin_keeps_trials_near_the_best():
    # converged (flip rate decayed, accuracy flat) 1 point under the best: stopped without a margin,
    # kept with margin=0.02 (the bnn-tune search setting), stopped again once it trails by more
    converged = [(-3.0, 0.97), (-8.5, 0.97), (-8.6, 0.97), (-8.7, 0.97), (-8.8, 0.97)]
    decisions = {}
    for margin in (0.0, 0.02):
        s = FlipRateStopper(n_warmup_steps=1, patience=2, margin=margin)
        s("best", _result(1, HEALTHY, 0.98))
        decisions[margin] = any(_feed(s, "near", converged))
    assert decisions == {0.0: True, 0.02: False}
    s = FlipRateStopper(n_warmup_steps=1, patience=2, margin=0.02)
    s("best", _result(1, HEALTHY, 0.98))
    assert any(_feed(s, "far", [(lfr, acc - 0.05) for lfr, acc in converged]))
    assert FlipRateScheduler(ASHAScheduler(), margin=0.02).rule.margin == 0.02


def test_stopper_min_mode():
    s = FlipRateStopper("val_loss", "min", n_warmup_steps=1, patience=2)
    s("best", {"training_iteration": 1, "log_flip_rate": HEALTHY, "val_loss": 0.1})
    out = [s("bad", {"training_iteration": i, "log_flip_rate": FROZEN, "val_loss": 2.0}) for i in (1, 2, 3)]
    assert out[-1] is True


def test_stopper_ignores_results_without_metrics_and_replayed_iterations():
    s = FlipRateStopper(n_warmup_steps=1, patience=2)
    s("best", _result(1, HEALTHY, 0.9))
    assert s("t", {"training_iteration": 1, "done": True}) is False
    # the same iteration replayed (e.g. after a restore) replaces its twin instead of lengthening the series
    assert [s("t", _result(1, FROZEN, 0.1)) for _ in range(5)] == [False] * 5
    assert s("t", _result(2, FROZEN, 0.1)) is True


def test_stopper_composes_with_combined_stopper():
    flip = FlipRateStopper(n_warmup_steps=1, patience=2)
    combined = CombinedStopper(flip, MaximumIterationStopper(max_iter=3))
    flip("best", _result(1, HEALTHY, 0.9))
    assert [combined("t", _result(i, FROZEN, 0.1)) for i in (1, 2)] == [False, True]
    # the iteration cap still works (MaximumIterationStopper counts results per trial)
    assert [combined("h", _result(i, HEALTHY, 0.95)) for i in (1, 2, 3)] == [False, False, True]
    assert not combined.stop_all()


def test_stopper_pickles_with_its_state():
    s = FlipRateStopper(n_warmup_steps=2, patience=2, floor=-7.5)
    s("best", _result(1, HEALTHY, 0.9))
    _feed(s, "t", [(FROZEN, 0.1)] * 2)
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.rule == s.rule and s2.metric == "val_acc"
    assert s2("t", _result(3, FROZEN, 0.1)) is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": ""}, "`metric` must be a non-empty string"),
        ({"mode": "maximize"}, "`mode` must be 'min' or 'max', but got mode='maximize'."),
        ({"patience": 0}, "`patience` must be an integer >= 1, but got patience=0."),
        ({"n_warmup_steps": -1}, "`n_warmup_steps` must be an integer >= 0"),
        ({"floor": -10.0}, "`floor` must be a log flip rate in (-9, 0]"),
        ({"relative_drop": 1.5}, "`relative_drop` must be in (0, 1) or None"),
        ({"min_improvement": -1.0}, "`min_improvement` must be a finite number >= 0"),
        ({"flip_rate_key": ""}, "`flip_rate_key` must be a non-empty string"),
        ({"margin": -0.1}, "`margin` must be a finite number >= 0, but got margin=-0.1."),
    ],
)
def test_stopper_validates_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        FlipRateStopper(**kwargs)
    assert message in str(info.value)


# ---------------------------------------------------------------- scheduler
class _Recorder(FIFOScheduler):
    """A wrapped scheduler that records the hooks it receives and answers with a fixed decision."""

    def __init__(self, decision=TrialScheduler.CONTINUE):
        super().__init__()
        self.decision = decision
        self.calls: list[str] = []

    def on_trial_add(self, tune_controller, trial):
        self.calls.append("add")

    def on_trial_result(self, tune_controller, trial, result):
        self.calls.append("result")
        return self.decision

    def on_trial_complete(self, tune_controller, trial, result):
        self.calls.append("complete")

    def on_trial_error(self, tune_controller, trial):
        self.calls.append("error")

    def on_trial_remove(self, tune_controller, trial):
        self.calls.append("remove")


def _trial(trial_id):
    return SimpleNamespace(trial_id=trial_id, last_result={})


def test_scheduler_stops_collapsed_trial_and_defers_otherwise(caplog):
    inner = _Recorder()
    s = FlipRateScheduler(inner, n_warmup_steps=2, patience=2)
    assert s.set_search_properties("val_acc", "max")
    best, bad = _trial("best"), _trial("bad")
    s.on_trial_add(None, bad)
    assert s.on_trial_result(None, best, _result(1, HEALTHY, 0.9)) == TrialScheduler.CONTINUE
    decisions = []
    with caplog.at_level("INFO", logger="bnn_tune.ray"):
        for i in (1, 2, 3):
            r = _result(i, FROZEN, 0.1)
            decisions.append(s.on_trial_result(None, bad, r))
            bad.last_result = r
    assert decisions == [TrialScheduler.CONTINUE, TrialScheduler.CONTINUE, TrialScheduler.STOP]
    # Tune calls on_trial_complete after a STOP; the reason lands in the trial's last result
    s.on_trial_complete(None, bad, bad.last_result)
    assert bad.last_result[STOP_REASON_KEY].startswith("flip-collapse: the flip rate never rose")
    assert inner.calls == ["add", "result", "result", "result", "complete"]  # the stopping result is not forwarded
    assert "bad" in s.stop_reasons
    assert any("trial bad stopped" in r.getMessage() for r in caplog.records)


def test_scheduler_passes_through_wrapped_decisions():
    s = FlipRateScheduler(_Recorder(TrialScheduler.STOP), metric="val_acc", mode="max")
    assert s.on_trial_result(None, _trial("t"), _result(1, HEALTHY, 0.5)) == TrialScheduler.STOP
    s2 = FlipRateScheduler(_Recorder(TrialScheduler.PAUSE), metric="val_acc", mode="max")
    assert s2.on_trial_result(None, _trial("t"), _result(1, HEALTHY, 0.5)) == TrialScheduler.PAUSE


def test_scheduler_search_properties_reach_the_wrapped_scheduler():
    asha = ASHAScheduler(max_t=10, grace_period=1)
    s = FlipRateScheduler(asha)
    assert s.metric is None
    assert s.set_search_properties("val_acc", "max")
    assert (s.metric, s.mode) == ("val_acc", "max")
    assert (asha.metric, asha._mode) == ("val_acc", "max")
    # metric/mode taken from the wrapped scheduler when given there
    s2 = FlipRateScheduler(ASHAScheduler(metric="val_loss", mode="min"))
    assert (s2.metric, s2.mode) == ("val_loss", "min")
    # conflicting metric, as Tune's own schedulers do: refuse
    s3 = FlipRateScheduler(metric="val_acc", mode="max")
    assert not s3.set_search_properties("val_loss", "min")


def test_scheduler_pickles_with_wrapped_scheduler():
    s = FlipRateScheduler(ASHAScheduler(max_t=10, grace_period=1), "val_acc", "max", patience=3)
    assert s.scheduler.metric == "val_acc"  # metric/mode given here reach the wrapped scheduler
    t = _trial("t")
    s.on_trial_add(None, t)
    s.on_trial_result(None, t, _result(1, HEALTHY, 0.5))
    s2 = pickle.loads(pickle.dumps(s))
    assert isinstance(s2.scheduler, ASHAScheduler)
    assert s2.rule == FlipRateCollapseRule(n_warmup_steps=2, patience=3)
    assert s2._tracker.series == s._tracker.series


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("asha",), {}, TypeError, "`scheduler` must be a ray.tune TrialScheduler or None"),
        ((), {"mode": "up"}, ValueError, "`mode` must be 'min' or 'max', but got mode='up'."),
        ((), {"patience": 0}, ValueError, "`patience` must be an integer >= 1"),
        ((FlipRateScheduler(),), {}, ValueError, "already a FlipRateScheduler"),
    ],
)
def test_scheduler_validates_arguments(args, kwargs, error, message):
    with pytest.raises(error) as info:
        FlipRateScheduler(*args, **kwargs)
    assert message in str(info.value)


def test_import_plugins_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, plugins; assert 'ray' not in sys.modules; import bnn_tune.plugins.ray; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- issue 26 (tools/mutate.py)
def test_read_stop_reason_from_every_form(tmp_path):
    from bnn_tune.plugins.ray import STOP_REASON_FILE

    (tmp_path / STOP_REASON_FILE).write_text("flip-band: too noisy\n")
    empty = tmp_path / "other"
    empty.mkdir()
    assert read_stop_reason(str(tmp_path)) == "flip-band: too noisy"  # a trial dir, as str or Path
    assert read_stop_reason(tmp_path) == "flip-band: too noisy"
    assert read_stop_reason(empty) is None  # a trial nobody stopped
    # a Ray Result: its metrics first, then its trial dir
    assert read_stop_reason(SimpleNamespace(metrics={STOP_REASON_KEY: "asha: x"}, path=str(empty))) == "asha: x"
    assert read_stop_reason(SimpleNamespace(metrics={"val_acc": 0.5}, path=str(tmp_path))) == "flip-band: too noisy"
    assert read_stop_reason(SimpleNamespace(metrics=None, path=None)) is None


@pytest.mark.parametrize("max_t,ok", [(1, True), (9, True), (None, True), (0, False), (2.5, False), (True, False)])
def test_scheduler_max_t_is_a_positive_integer_or_none(max_t, ok):
    if ok:
        FlipRateScheduler(max_t=max_t)
    else:
        with pytest.raises(ValueError, match="`max_t` must be an integer >= 1"):
            FlipRateScheduler(max_t=max_t)


def test_search_properties_complete_a_wrapped_scheduler_that_has_a_metric_but_no_mode():
    class _MetricOnly(_Recorder):
        metric, _mode = "val_acc", None

        def set_search_properties(self, metric, mode, **spec):
            self.calls.append(f"props {metric} {mode}")
            self._mode = mode
            return True

    inner = _MetricOnly()
    s = FlipRateScheduler(inner)
    assert s.set_search_properties("val_acc", "max")
    assert inner.calls == ["props val_acc max"] and (s.metric, s.mode) == ("val_acc", "max")


def test_a_trial_stopped_at_an_epoch_keeps_its_metric_even_when_nan():
    # only a stop inside the first epoch (a sub-epoch result, no value yet) drops the metric so the searcher
    # records a pruned trial; a diverged epoch value (NaN) stays what it is
    s = FlipRateScheduler(_Recorder(), "val_acc", "max", n_warmup_steps=0, patience=1)
    t = _trial("t")
    s.on_trial_add(None, t)
    r = _result(1, FROZEN, float("nan"))
    t.last_result = r
    assert s.on_trial_result(None, t, r) == TrialScheduler.STOP
    s.on_trial_complete(None, t, r)
    assert "val_acc" in t.last_result and t.last_result[STOP_REASON_KEY].startswith("flip-collapse: ")
