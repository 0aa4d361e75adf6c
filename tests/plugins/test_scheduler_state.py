"""The Ray schedulers' state survives a save/restore and a ``Tuner.restore`` (through the experiment folder), and
what they say: stops counted by rule, no stop at the last epoch, sub-epoch results kept from the wrapped scheduler."""

from __future__ import annotations

import os
import pickle
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune")

from ray.tune.schedulers import TrialScheduler  # noqa: E402

from bnn_tune.plugins._outcome import STOP_REASON_KEY, SUB_EPOCH_KEY  # noqa: E402
from bnn_tune.plugins.ray import SCHEDULER_STATE_FILE  # noqa: E402
from bnn_tune.plugins.strategies import get_strategy  # noqa: E402

E = 9


class _Trial:
    """What the schedulers read of a Tune trial (hashable: MedianStoppingRule keys by trial)."""

    def __init__(self, tid, staging=None):
        self.trial_id, self.last_result = tid, None
        self.storage = None if staging is None else SimpleNamespace(experiment_driver_staging_path=str(staging))


_trial = _Trial


def _stream():
    """(trial id, result) in arrival order: three healthy trials complete, then a frozen, a collapsing, a noisy
    and a mediocre one run side by side (their decisions read the completed trials' values and flip rates)."""
    out = []
    for n, top in enumerate((0.86, 0.88, 0.90)):  # each better than the last: successive halving keeps them
        out += [(f"good{n}", {"training_iteration": e, "val_acc": top, "log_flip_rate": -3.0 - 0.1 * n,
                              "sub_log_flip_rate": [-3.0] * 8}) for e in range(1, E + 1)]
    late = {"frozen": ([-9.0] * E, [0.1] * E), "collapse": ([-3.0, -3.0] + [-8.5] * 7, [0.3] * E),
            "noisy": ([-0.2] * E, [0.5] * E), "mediocre": ([-3.0] * E, [0.2 + 0.01 * e for e in range(E)])}
    for e in range(1, E + 1):
        for tid, (lfr, val) in late.items():
            out.append((tid, {"training_iteration": e, "val_acc": val[e - 1], "log_flip_rate": lfr[e - 1],
                              "sub_log_flip_rate": [lfr[e - 1] if tid != "frozen" else -4.0] * 8}))
    return out


class _Driver:
    """Plays Tune's part: adds a trial before its first result, completes it after its last or after a STOP."""

    def __init__(self, scheduler, staging=None):
        self.s, self.staging, self.trials, self.done = scheduler, staging, {}, set()

    def feed(self, items):
        decisions = []
        for tid, result in items:
            if tid in self.done:
                continue
            if tid not in self.trials:
                self.trials[tid] = _trial(tid, self.staging)
                self.s.on_trial_add(None, self.trials[tid])
            t = self.trials[tid]
            t.last_result = dict(result)
            action = self.s.on_trial_result(None, t, t.last_result)
            decisions.append((tid, result["training_iteration"], action))
            if action == TrialScheduler.STOP or result["training_iteration"] == E:
                self.s.on_trial_complete(None, t, t.last_result)
                self.done.add(tid)
        return decisions


@pytest.mark.parametrize("name", ["flip+asha", "flip+hyperband", "flip"])
def test_save_and_restore_give_the_uninterrupted_decisions(tmp_path, name):
    """(The median rule's own state is not carried: Ray gives MedianStoppingRule no save.)"""
    import numpy as np

    stream = _stream()
    cut = 3 * E + 4  # the good trials completed, the others a result in
    np.random.seed(0)  # AsyncHyperBand draws each trial's bracket
    twin = _Driver(get_strategy(name).ray_scheduler(E))
    expected = twin.feed(stream)
    np.random.seed(0)
    first = _Driver(get_strategy(name).ray_scheduler(E))
    head = first.feed(stream[:cut])
    first.s.save(str(tmp_path / "state.pkl"))
    fresh = get_strategy(name).ray_scheduler(E)
    fresh.restore(str(tmp_path / "state.pkl"))
    second = _Driver(fresh)
    second.trials, second.done = first.trials, first.done  # Tune keeps its trials; only the scheduler restarts
    assert head + second.feed(stream[cut:]) == expected
    assert fresh.stop_reasons == twin.s.stop_reasons and fresh.stop_reasons  # some rule stopped some trial


def test_a_scheduler_restored_by_tuner_restore_reads_its_state_from_the_experiment_folder(tmp_path):
    """``Tuner.restore`` unpickles the scheduler as it was when the experiment started (Ray never calls its
    ``restore``): it finds its state in the experiment folder at the first ``on_trial_add`` and goes on as the
    uninterrupted scheduler would."""
    stream = _stream()
    cut = 3 * E + 6
    pristine = pickle.dumps(get_strategy("flip+hyperband").ray_scheduler(E))  # what tuner.pkl holds
    import numpy as np

    np.random.seed(0)  # AsyncHyperBand draws each trial's bracket
    twin = _Driver(pickle.loads(pristine))
    expected = twin.feed(stream)
    np.random.seed(0)
    first = _Driver(pickle.loads(pristine), staging=tmp_path)
    head = first.feed(stream[:cut])
    assert (tmp_path / SCHEDULER_STATE_FILE).is_file()
    restored = pickle.loads(pristine)
    second = _Driver(restored, staging=tmp_path)
    for tid in first.trials:  # Tune re-adds every trial of the restored experiment
        second.trials[tid] = _trial(tid, tmp_path)
        restored.on_trial_add(None, second.trials[tid])
    second.done = first.done
    assert head + second.feed(stream[cut:]) == expected
    assert restored.stop_reasons == twin.s.stop_reasons


def test_debug_string_counts_stops_by_rule():
    d = _Driver(get_strategy("flip+asha").ray_scheduler(E))
    d.feed(_stream())
    rules = d.s.stops_by_rule()
    assert set(rules) <= {"flip-early", "flip-collapse", "flip-band", "asha"} and sum(rules.values()) == len(
        d.s.stop_reasons)
    assert rules.get("flip-band")
    line = d.s.debug_string().splitlines()[-1]
    assert line == "FlipSHScheduler: trials stopped by rule: " + ", ".join(f"{r} {n}" for r, n in rules.items()) + "."
    assert "collapsed flip rate" not in d.s.debug_string()


@pytest.mark.parametrize("name, late_acc", [("flip+asha", 0.96), ("flip+hyperband", 0.96), ("flip", 0.5)])
def test_a_trial_at_its_last_epoch_gets_no_stop_reason(name, late_acc):
    """Ray's ASHA answers STOP at max_t (a better trial reaching the end), and a trial may collapse exactly at
    its last epoch: neither is a prune, so neither gets a stop reason."""
    s = get_strategy(name).ray_scheduler(E)
    best = _trial("best")
    s.on_trial_add(None, best)
    for e in range(1, E + 1):
        s.on_trial_result(None, best, {"training_iteration": e, "val_acc": 0.95, "log_flip_rate": -3.0})
    s.on_trial_complete(None, best, {"training_iteration": E, "val_acc": 0.95, "log_flip_rate": -3.0})
    t = _trial("late")
    s.on_trial_add(None, t)
    actions = []
    for e in range(1, E + 1):
        t.last_result = {"training_iteration": e, "val_acc": late_acc, "log_flip_rate": -3.0 if e < E - 1 else -8.9}
        actions.append(s.on_trial_result(None, t, t.last_result))
    s.on_trial_complete(None, t, t.last_result)
    assert actions == [TrialScheduler.CONTINUE] * E and "late" not in s.stop_reasons
    assert STOP_REASON_KEY not in t.last_result


def test_sub_epoch_results_never_reach_the_wrapped_scheduler():
    from ray.tune.schedulers import MedianStoppingRule

    for name in ("median", "flip+median", "flip", "flip+asha"):
        s = get_strategy(name).ray_scheduler(E)
        inner = s.scheduler
        seen = []
        inner.on_trial_result = lambda tc, trial, result, seen=seen: seen.append(result) or TrialScheduler.CONTINUE
        t = _trial("t")
        s.on_trial_add(None, t)
        sub = {SUB_EPOCH_KEY: 1, "sub_log_flip_rate": [-3.0], "training_iteration": 0, "val_acc": float("nan")}
        assert s.on_trial_result(None, t, sub) == TrialScheduler.CONTINUE and seen == [], name
        s.on_trial_result(None, t, {"training_iteration": 1, "val_acc": 0.5, "log_flip_rate": -3.0})
        assert len(seen) == 1, name
    assert isinstance(get_strategy("median").ray_scheduler(E).scheduler, MedianStoppingRule)


def test_the_state_file_never_appears_half_written_in_the_synced_folder(tmp_path, monkeypatch):
    """Tune's syncer copies the staging folder while trials run: a temp file inside it that is renamed away
    mid-copy failed the experiment's sync in a live search ("Failed to open local file ...pkl.tmp"). While the
    state is written, the staging folder holds at most the previous complete state file."""
    import bnn_tune.plugins.ray as pray

    staging = tmp_path / "driver_artifacts"
    staging.mkdir()
    seen = []
    real_dump = pray.pickle.dump

    def spying_dump(obj, f, *a, **kw):
        seen.append(sorted(os.listdir(staging)))
        return real_dump(obj, f, *a, **kw)

    monkeypatch.setattr(pray.pickle, "dump", spying_dump)
    driver = _Driver(get_strategy("flip+gated-asha").ray_scheduler(E), staging=staging)
    driver.feed(_stream()[: 2 * E])
    assert seen and all(names in ([], [SCHEDULER_STATE_FILE]) for names in seen), seen
    assert sorted(os.listdir(staging)) == [SCHEDULER_STATE_FILE]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bnn_tune")] == []  # no temp file left
