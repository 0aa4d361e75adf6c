"""Acceptance: a real Optuna study on digits with bnn_tune.search_spaces.bop.suggest and FlipRatePruner.

24 trials of Bop on a small binary MLP, including enqueued settings whose flip rate collapses (very low
gamma, very high threshold: the binary weights never flip). The collapsed trials must be pruned within a
few epochs, and the pruner must never prune the best trial of the study.
"""

from __future__ import annotations

import time

import optuna
import torch

import bnn_tune
from bnn_tune.data import load_dataset
from bnn_tune.plugins.optuna import FlipRatePruner
from bnn_tune.search_spaces import bop

optuna.logging.set_verbosity(optuna.logging.WARNING)

EPOCHS = 8
BASE = {"dataset": "digits", "model": "mlp", "epochs": EPOCHS, "max_steps_per_epoch": 10, "width": 0.25,
        "batch_size": 64}
COLLAPSING = [  # far below the flip threshold: |m| ~ gamma * |g| never reaches tau
    {"gamma": 1e-6, "threshold": 1e-3},
    {"gamma": 3e-6, "threshold": 5e-4},
    {"gamma": 1e-5, "threshold": 1e-3},
    {"gamma": 1e-2, "threshold": 1e-3},
]
HEALTHY = [  # the paper's settings (Sec. 5, Fig. 1), the second with a decaying gamma
    {"gamma": 1e-3, "threshold": 1e-6, "gamma_schedule": "constant", "lr": 3e-3},
    {"gamma": 1e-3, "threshold": 1e-6, "gamma_schedule": "cosine:end_factor=0.01", "lr": 3e-3},
    {"gamma": 1e-4, "threshold": 1e-8, "gamma_schedule": "constant", "lr": 3e-3},
]


def test_bop_study_prunes_collapsed_trials_and_never_the_best():
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_dataset("digits", val_fraction=0.2, root="data", download=False)
    n_warmup, patience = 2, 2
    pruner = FlipRatePruner(n_warmup_steps=n_warmup, patience=patience)
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=8))
    for params in HEALTHY[:1] + [{**c, "gamma_schedule": "constant", "lr": 3e-3} for c in COLLAPSING] + HEALTHY[1:]:
        study.enqueue_trial(params)
    study.optimize(bnn_tune.objective(bop.suggest, base_config=BASE, data=data), n_trials=24)
    elapsed = time.perf_counter() - t0

    trials = study.trials
    assert len(trials) == 24
    by_number = {t.number: t for t in trials}
    states = [t.state.name for t in trials]
    assert "FAIL" not in states, [t.user_attrs.get("bnn_tune:fail_reason") for t in trials]

    # 1. every enqueued collapsing setting was pruned within a few epochs, with its reason recorded
    for number in range(1, 1 + len(COLLAPSING)):
        t = by_number[number]
        assert t.params["threshold"] >= 5e-4
        assert t.state.name == "PRUNED", (t.params, t.user_attrs["bnn_tune:log_flip_rate"])
        assert t.last_step <= n_warmup + patience, t.last_step  # pruned by epoch 4 of 8
        assert max(t.user_attrs["bnn_tune:log_flip_rate"]) < -8.0
        assert "frozen" in t.user_attrs["bnn_tune:prune_reason"]

    # 2. the pruner never pruned the best trial: every pruned config, rerun to the end without a pruner
    # (CPU runs are deterministic for a seed), finishes below the best completed value
    best = study.best_trial
    assert best.state.name == "COMPLETE" and best.value > 0.8
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    for t in pruned:
        assert t.user_attrs["bnn_tune:prune_reason"]
        full = bnn_tune.fit(t.user_attrs["bnn_tune:config"])
        assert len(full.history) == EPOCHS
        rerun = full.history[-1].val_acc  # what the objective would have returned
        assert rerun < best.value, (t.number, t.params, rerun, best.value)

    # 3. healthy paper settings, including the late flip-rate decay of a cosine gamma schedule, complete
    for number in (0, 1 + len(COLLAPSING), 2 + len(COLLAPSING)):
        assert by_number[number].state.name == "COMPLETE", (number, by_number[number].user_attrs)

    # 4. pruning saved budget: at least half the epochs of the pruned trials were not run
    assert len(pruned) >= len(COLLAPSING)
    saved = sum(EPOCHS - t.last_step for t in pruned)
    assert saved >= 0.5 * len(pruned) * EPOCHS, [t.last_step for t in pruned]
    print(f"\n{len(trials)} trials in {elapsed:.1f}s: {states.count('COMPLETE')} complete, "
          f"{len(pruned)} pruned, best val_acc {best.value:.3f} (trial {best.number}: {best.params})")
