"""Pruners on the same Bop gamma/tau sweep: trial-epochs, best accuracy, wall time.

One Optuna study per pruner, all with the same :class:`optuna.samplers.GridSampler` (same seed, so the same
configurations in the same order) over Bop's gamma x tau, each trial trained by :func:`bnn_tune.objective`
(the product path: per-epoch ``trial.report``, flip-rate series in the user attrs, ``should_prune``).
Pruners: none, ``MedianPruner``, ASHA (Optuna's ``SuccessiveHalvingPruner``), ``FlipRatePruner`` and
``FlipRatePruner(MedianPruner, combine="or")``.

Goal (issue 8): >= 40% fewer trial-epochs than no pruner with the best trial within 0.5 pp, and fewer
trial-epochs than ASHA at equal best accuracy.

Because a trial's training is deterministic and independent of the pruner, the curves of the no-pruner
study also let the script *replay* every pruner over more grid orders (``--orders``, sampler seeds): the
replay feeds the recorded per-epoch val_acc / flip-rate series to the same pruners through the same
protocol, which measures how much the result depends on the order in which the grid is visited.

    python benchmarks/science/pruner_comparison.py [--quick] [--out DIR]
"""

from __future__ import annotations

import logging
import statistics
import time

import _common as C

GAMMAS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
TAUS = [0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4]


def _extra(p):
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--orders", type=int, default=10, help="grid orders (sampler seeds) in the replay")


def gamma_tau_space(trial):
    """Bop in gamma x tau (the grid sampler picks the values)."""
    return {"optimizer": "bop", "gamma": trial.suggest_float("gamma", 1e-6, 1e-1, log=True),
            "threshold": trial.suggest_float("threshold", 0.0, 1e-3)}


def pruners():
    import optuna

    from bnn_tune.plugins.optuna import FlipRatePruner

    return {
        "none": optuna.pruners.NopPruner(),
        "median": optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        "asha": optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
        "fliprate": FlipRatePruner(),
        "fliprate+median": FlipRatePruner(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
                                          combine="or"),
    }


def summarize(study, n_epochs: int) -> dict:
    import optuna

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    best = max(done, key=lambda t: t.value) if done else None
    return {
        "trials": len(trials),
        "completed": len(done),
        "pruned": len(pruned),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "trial_epochs": sum(len(t.intermediate_values) for t in trials),
        "max_trial_epochs": len(trials) * n_epochs,
        "best_value": best.value if best else None,
        "best_params": best.params if best else None,
        "pruned_configs": [dict(t.params, pruned_at=t.last_step,
                                reason=t.user_attrs.get("bnn_tune:prune_reason", "")) for t in pruned],
    }


def live(base: dict, grid: dict, seed: int) -> tuple[dict, dict]:
    import optuna

    import bnn_tune.objective as objective_mod

    obj = objective_mod.objective(gamma_tau_space, base_config=base, data=C.data(base["dataset"]))
    out, curves = {}, {}
    for name, pruner in pruners().items():
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(grid, seed=seed),
                                    pruner=pruner)
        t0 = time.perf_counter()
        study.optimize(obj, n_trials=len(grid["gamma"]) * len(grid["threshold"]))
        out[name] = {**summarize(study, base["epochs"]), "wall_s": time.perf_counter() - t0}
        print(f"{name:16s} trial-epochs {out[name]['trial_epochs']:4d}/{out[name]['max_trial_epochs']} "
              f"pruned {out[name]['pruned']:2d} best {out[name]['best_value']:.4f} wall {out[name]['wall_s']:.1f}s")
        if name == "none":
            for t in study.get_trials(deepcopy=False):
                key = (t.params["gamma"], t.params["threshold"])
                curves[key] = {"val_acc": list(t.user_attrs["bnn_tune:val_acc"]),
                               "log_flip_rate": list(t.user_attrs["bnn_tune:log_flip_rate"]),
                               "final": t.value,
                               "epoch_s": t.duration.total_seconds() / max(len(t.intermediate_values), 1)}
    return out, curves


def replay(curves: dict, grid: dict, seed: int, n_epochs: int) -> dict:
    """Run each pruner on a study whose objective replays the recorded curves (same protocol as the
    objective: user attrs first, then report, then should_prune except after the last epoch)."""
    import optuna

    def objective(trial):
        cfg = gamma_tau_space(trial)
        c = curves[(cfg["gamma"], cfg["threshold"])]
        for e in range(n_epochs):
            trial.set_user_attr("bnn_tune:log_flip_rate", c["log_flip_rate"][: e + 1])
            trial.set_user_attr("bnn_tune:val_acc", c["val_acc"][: e + 1])
            trial.report(c["val_acc"][e], e + 1)
            if e + 1 < n_epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return c["final"]

    out = {}
    for name, pruner in pruners().items():
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(grid, seed=seed),
                                    pruner=pruner)
        study.optimize(objective, n_trials=len(grid["gamma"]) * len(grid["threshold"]))
        s = summarize(study, n_epochs)
        s["est_wall_s"] = sum(curves[(t.params["gamma"], t.params["threshold"])]["epoch_s"] * len(t.intermediate_values)
                              for t in study.get_trials(deepcopy=False))
        out[name] = s
    return out


def main() -> None:
    import optuna

    args = C.parse_args(__doc__, _extra)
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("bnn_tune").setLevel(logging.ERROR)
    gammas, taus = ([1e-6, 1e-3, 1e-1], [0.0, 1e-4]) if args.quick else (GAMMAS, TAUS)
    epochs = 4 if args.quick else args.epochs
    orders = 2 if args.quick else args.orders
    grid = {"gamma": gammas, "threshold": taus}
    base = {"dataset": "digits", "model": "mlp", "width": 0.5, "epochs": epochs, "lr": 1e-3, "batch_size": 64,
            "seed": 0}
    if args.quick:
        base["max_steps_per_epoch"] = 5
    live_res, curves = live(base, grid, seed=0)
    rep = {s: replay(curves, grid, s, epochs) for s in range(orders)}

    def verdict(res: dict) -> dict:
        none, asha = res["none"], res["asha"]
        v = {}
        for name, r in res.items():
            if name == "none":
                continue
            saving = 1 - r["trial_epochs"] / none["trial_epochs"]
            gap_pp = 100 * (none["best_value"] - (r["best_value"] or 0.0))
            v[name] = {"saving_vs_none": saving, "best_gap_pp": gap_pp,
                       "goal_40pct_and_0.5pp": saving >= 0.4 and gap_pp <= 0.5,
                       "fewer_epochs_than_asha": r["trial_epochs"] < asha["trial_epochs"],
                       "best_ge_asha": (r["best_value"] or 0) >= (asha["best_value"] or 0)}
        return v

    live_verdict = verdict(live_res)
    rep_stats = {}
    for name in pruners():
        eps = [rep[s][name]["trial_epochs"] for s in rep]
        gaps = [100 * (rep[s]["none"]["best_value"] - (rep[s][name]["best_value"] or 0)) for s in rep]
        rep_stats[name] = {"trial_epochs_median": statistics.median(eps), "trial_epochs_min": min(eps),
                           "trial_epochs_max": max(eps), "best_gap_pp_median": statistics.median(gaps),
                           "best_gap_pp_max": max(gaps),
                           "orders_meeting_goal": sum(1 for s in rep if name != "none" and
                                                      verdict(rep[s])[name]["goal_40pct_and_0.5pp"])}
    print("live verdict:", live_verdict)
    print("replay:", rep_stats)

    plt = C.plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = list(pruners())
    axes[0].bar(names, [live_res[n]["trial_epochs"] for n in names], color="C0", label="live (order 0)")
    axes[0].errorbar(names, [rep_stats[n]["trial_epochs_median"] for n in names],
                     yerr=[[rep_stats[n]["trial_epochs_median"] - rep_stats[n]["trial_epochs_min"] for n in names],
                           [rep_stats[n]["trial_epochs_max"] - rep_stats[n]["trial_epochs_median"] for n in names]],
                     fmt="o", color="k", label=f"replay median/min/max over {orders} orders")
    axes[0].axhline(0.6 * live_res["none"]["trial_epochs"], ls="--", color="r", label="goal: 60% of none")
    axes[0].set_ylabel("total trial-epochs")
    axes[0].legend(fontsize=7)
    axes[0].tick_params(axis="x", rotation=20)
    axes[1].bar(names, [100 * (live_res[n]["best_value"] or 0) for n in names])
    lo = min(100 * (live_res[n]["best_value"] or 0) for n in names)
    axes[1].set_ylim(lo - 2, 100 * live_res["none"]["best_value"] + 1)
    axes[1].axhline(100 * live_res["none"]["best_value"] - 0.5, ls="--", color="r", label="none - 0.5 pp")
    axes[1].set_ylabel("best val acc (%)")
    axes[1].legend(fontsize=7)
    axes[1].tick_params(axis="x", rotation=20)
    for _key, c in curves.items():
        collapsed = max(c["log_flip_rate"]) <= -8.0
        axes[2].plot(range(1, epochs + 1), c["val_acc"], color="C3" if collapsed else "C0", alpha=0.5, lw=1)
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("val acc")
    axes[2].set_title("no-pruner curves (red: flip rate never above e^-8)")
    fig.suptitle("Pruners on the Bop gamma x tau grid (digits mlp): " + ", ".join(
        f"{n}: {100 * live_verdict[n]['saving_vs_none']:.0f}% saved" for n in live_verdict))
    payload = {"settings": {**base, "grid": grid, "orders": orders,
                            "pruners": {n: repr(p) for n, p in pruners().items()}},
               "live": live_res, "live_verdict": live_verdict, "replay_stats": rep_stats, "replay": rep,
               "curves": [{"gamma": k[0], "threshold": k[1], **v} for k, v in curves.items()]}
    C.save("pruner_comparison", args, payload, fig, t0)


if __name__ == "__main__":
    main()
