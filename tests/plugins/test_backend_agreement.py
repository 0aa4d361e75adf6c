"""One pruning decision, two backends: the pruner and the scheduler exactly as ``bnn-tune search`` builds
them (``make_pruner`` for ``--backend optuna``, ``make_scheduler`` for ``--backend ray``) stop a trial at
the same epoch for the same flip-rate and accuracy series."""

from __future__ import annotations

import types

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("ray.tune")

from ray.tune.schedulers import TrialScheduler  # noqa: E402

from bnn_tune.objective import FLIP_RATE_ATTR  # noqa: E402
from bnn_tune.search.optuna import make_pruner  # noqa: E402
from bnn_tune.search.ray import make_scheduler  # noqa: E402

FROZEN, HEALTHY = -9.0, -4.0
SERIES = {
    "frozen from the start": ([FROZEN] * 12, [0.10 + 0.001 * i for i in range(12)]),
    "collapse after activity": ([-5.0, -5.2, -5.5, -8.5, -8.8, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0],
                                [0.30, 0.32, 0.33, 0.33, 0.33, 0.32, 0.33, 0.33, 0.33, 0.33, 0.33, 0.33]),
    "late collapse": ([HEALTHY] * 6 + [-8.9] * 6, [0.2, 0.3, 0.35, 0.36, 0.36, 0.36] + [0.36] * 6),
    "relative drop": ([-3.0, -3.0, -3.2, -8.0 + 0.5, -7.6, -7.7, -7.7, -7.7, -7.7, -7.7, -7.7, -7.7],
                      [0.3] * 12),
    "healthy": ([HEALTHY] * 12, [0.3 + 0.01 * i for i in range(12)]),
}


def _optuna_stop_epoch(lfr, acc, epochs, best):
    study = optuna.create_study(direction="maximize", pruner=make_pruner("flip", epochs=epochs))
    done = study.ask()
    study.tell(done, best)  # the sweep's best so far, so the guard does not protect the trial
    trial = study.ask()
    for epoch in range(1, epochs + 1):  # as bnn_tune.objective: series attr, report(val_acc, epoch)
        trial.set_user_attr(FLIP_RATE_ATTR, lfr[:epoch])
        trial.report(acc[epoch - 1], epoch)
        if epoch < epochs and trial.should_prune():
            return epoch
    return None


def _ray_stop_epoch(lfr, acc, epochs, best):
    scheduler = make_scheduler("flip", epochs)
    scheduler.set_search_properties("val_acc", "max")
    trials = [types.SimpleNamespace(trial_id=t, storage=None, last_result={}, status="RUNNING",
                                    config={}, evaluated_params={}) for t in ("best", "t")]
    for t in trials:
        scheduler.on_trial_add(None, t)
    # the best trial's report, as in the Optuna study: one epoch at the sweep's best value
    scheduler.on_trial_result(None, trials[0], {"training_iteration": 1, "val_acc": best, "log_flip_rate": HEALTHY})
    for epoch in range(1, epochs + 1):  # as bnn_tune.trainable reports: training_iteration == epoch
        result = {"training_iteration": epoch, "epoch": epoch, "val_acc": acc[epoch - 1],
                  "log_flip_rate": lfr[epoch - 1]}
        decision = scheduler.on_trial_result(None, trials[1], result)
        if decision == TrialScheduler.STOP and "t" in scheduler.stop_reasons:
            return epoch
    return None


@pytest.mark.parametrize("epochs", [10, 12, 20])
@pytest.mark.parametrize("name", list(SERIES))
def test_backends_stop_at_the_same_epoch(name, epochs):
    lfr, acc = (s + s[-1:] * (epochs - len(s)) for s in SERIES[name])  # the last epoch repeated
    best = 0.9
    o = _optuna_stop_epoch(lfr, acc, epochs, best)
    r = _ray_stop_epoch(lfr, acc, epochs, best)
    assert o == r, f"{name}: optuna pruned after epoch {o}, ray stopped after epoch {r}"
    if name == "healthy":
        assert o is None
    else:
        # never before the warm-up: the first max(2, epochs // 5) epochs are never judged
        assert o is not None and o > max(2, epochs // 5)


def test_frozen_trial_stops_right_after_the_warmup_in_both():
    lfr, acc = SERIES["frozen from the start"]
    assert _optuna_stop_epoch(lfr, acc, 10, 0.9) == 3 == _ray_stop_epoch(lfr, acc, 10, 0.9)
