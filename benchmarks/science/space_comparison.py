"""Search spaces: trials needed to reach a target accuracy, reinterpreted space vs its naive twin.

For each optimizer space (``bop``: gamma/tau in log coordinates with tau = 0 reachable, vs gamma as a
learning rate and tau linear like a weight decay; ``latent_adam``: lr and init scale tied by Theorem 1, vs
lr / init scale / weight decay independent) one Optuna study per sampler seed (TPE, ``--seeds`` seeds)
runs :func:`bnn_tune.objective` with ``suggest`` and another with ``naive_suggest``, each until a trial
reaches ``--target`` validation accuracy or ``--max-trials`` trials ran. Reported: trials-to-target per
seed (a study that never reached the target counts as max_trials + 1, marked censored), the medians, and
their ratio. Goal (issue 8): median ratio <= 0.6.

    python benchmarks/science/space_comparison.py [--quick] [--out DIR]
"""

from __future__ import annotations

import logging
import statistics
import time

import _common as C


def _extra(p):
    p.add_argument("--spaces", nargs="+", default=["bop", "latent_adam"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--max-trials", type=int, default=20)
    p.add_argument("--target", type=float, default=0.955, help="validation accuracy to reach")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--width", type=float, default=0.5)


def trials_to_target(space: str, naive: bool, seed: int, base: dict, target: float, max_trials: int) -> dict:
    import optuna

    import bnn_tune.objective as objective_mod

    obj = objective_mod.objective(space, base_config=base, naive=naive, data=C.data(base["dataset"]))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def stop_at_target(study, trial):
        if trial.value is not None and trial.value >= target:
            study.stop()

    t0 = time.perf_counter()
    study.optimize(obj, n_trials=max_trials, callbacks=[stop_at_target])
    values = [t.value for t in study.trials]
    hit = next((i + 1 for i, v in enumerate(values) if v is not None and v >= target), None)
    return {"seed": seed, "naive": naive, "trials_to_target": hit if hit else max_trials + 1, "censored": hit is None,
            "values": values, "best": max((v for v in values if v is not None), default=None),
            "wall_s": time.perf_counter() - t0}


def main() -> None:
    import optuna

    args = C.parse_args(__doc__, _extra)
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("bnn_tune").setLevel(logging.ERROR)
    seeds = 2 if args.quick else args.seeds
    max_trials = 3 if args.quick else args.max_trials
    target = 0.5 if args.quick else args.target
    base = {"dataset": "digits", "model": "mlp", "width": args.width, "epochs": 2 if args.quick else args.epochs,
            "batch_size": 64, "seed": 0}
    if args.quick:
        base["max_steps_per_epoch"] = 5
    res = {}
    for space in args.spaces:
        rows = {"reinterpreted": [], "naive": []}
        for seed in range(seeds):
            for key, naive in (("reinterpreted", False), ("naive", True)):
                r = trials_to_target(space, naive, seed, base, target, max_trials)
                rows[key].append(r)
                print(f"{space:12s} {key:13s} seed {seed}: {r['trials_to_target']}{'+' if r['censored'] else ''} "
                      f"trials (best {r['best']:.3f}, {r['wall_s']:.0f}s)")
        med = {k: statistics.median(r["trials_to_target"] for r in v) for k, v in rows.items()}
        res[space] = {"rows": rows, "median_trials": med, "ratio": med["reinterpreted"] / med["naive"],
                      "censored": {k: sum(r["censored"] for r in v) for k, v in rows.items()},
                      "goal_ratio_le_0.6": med["reinterpreted"] / med["naive"] <= 0.6}
        print(space, res[space]["median_trials"], "ratio", res[space]["ratio"])

    plt = C.plt()
    fig, axes = plt.subplots(1, len(res), figsize=(6 * len(res), 4.5), squeeze=False)
    for ax, (space, r) in zip(axes[0], res.items()):
        for j, key in enumerate(("reinterpreted", "naive")):
            ys = [x["trials_to_target"] for x in r["rows"][key]]
            ax.scatter([j + 0.05 * (i - len(ys) / 2) for i in range(len(ys))], ys, color=f"C{j}", zorder=3,
                       label=f"{key} (median {r['median_trials'][key]:g})")
            ax.hlines(r["median_trials"][key], j - 0.3, j + 0.3, color=f"C{j}")
        ax.axhline(max_trials + 1, ls=":", color="gray", label="censored (target never reached)")
        ax.set_xticks([0, 1], ["reinterpreted", "naive"])
        ax.set_ylabel(f"trials to val acc >= {target}")
        ax.set_title(f"{space}: ratio {r['ratio']:.2f} (goal <= 0.6)")
        ax.legend(fontsize=7)
    fig.suptitle(f"TPE, {seeds} sampler seeds, digits mlp width {args.width}, {base['epochs']} epochs per trial")
    C.save("space_comparison", args, {"settings": {**base, "spaces": args.spaces, "seeds": seeds,
                                                   "max_trials": max_trials, "target": target, "sampler": "TPE"},
                                      "results": res}, fig, t0)


if __name__ == "__main__":
    main()
