"""Evaluate pruning strategies and search spaces on the recorded BNN tabular benchmark (bnn_tune.hpobench).

For every recorded task: replayed Optuna searches (TPE, 60 trials) on held-out sampler seeds with each
pruner -> median and interquartile range of trial-epochs and trials to the target (0.5 pp below the
table's best mean final val accuracy), how often the table's best config was pruned, and who stopped
what; the reinterpreted space against its naive twin (no pruner, trials to target); one plot per task of
trial-epochs vs best-so-far (median over seeds) per strategy. The flip+asha settings were chosen on sampler
seeds 0-79 only (BENCHMARKS.md, "BNN-HPO"); evaluate on seeds never used for tuning (default 1000-1039).
Per task it also reports the floor any pruner that judges a trial only against other trials faces: the
first trial of a study and the trial that reaches the target both run all E epochs, so unless the first
trial already reaches the target, the target costs at least 2E trial-epochs.

    python benchmarks/hpobench_eval.py [--seeds 1000-1039] [--context-seeds 1000-1004] [--tasks T1,T2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnn_tune.hpobench import tasks  # noqa: E402
from bnn_tune.hpobench.evaluate import aggregate, parse_seeds  # noqa: E402
from bnn_tune.hpobench.tasks import get_task  # noqa: E402

MAIN = ("asha", "flip+asha", "hyperband", "flip+hyperband")


def fixed_init_latent_adam(trial):
    """The candidate redesign from seed 004 (init scale a transient: fixed at 1e-3; latent_lr and weight decay
    searched as the filter's step and decay), measured against the tied space that ships."""
    from bnn_tune.search_spaces._common import suggest_log
    from bnn_tune.search_spaces.latent_adam import LATENT_LR, WEIGHT_DECAY

    return {"optimizer": "latent_adam", "latent_lr": suggest_log(trial, "latent_lr", LATENT_LR), "init_scale": 1e-3,
            "weight_decay": suggest_log(trial, "weight_decay", WEIGHT_DECAY)}


EXTRA_SPACES = {"latent_adam_mnist1d": {"fixed init 1e-3 (seed-004 candidate)": fixed_init_latent_adam}}
CONTEXT = ("none", "median", "flip", "flip+median", "flip-or+asha")


N_TRIALS = 60


def _one(args):
    task, pruner, space, seed = args
    from bnn_tune.hpobench import replay

    fn = EXTRA_SPACES.get(task, {}).get(space, space)
    r = replay(task, pruner=pruner, space=fn, seed=seed, n_trials=N_TRIALS)
    return task, pruner, space, seed, r


def run(jobs, workers):
    if workers <= 1:
        return [_one(j) for j in jobs]
    with ProcessPoolExecutor(workers) as ex:
        return list(ex.map(_one, jobs, chunksize=4))


def median_curve(curves, grid):
    """Median over seeds of best-so-far (a step function of cumulative trial-epochs) on ``grid``."""
    ys = []
    for c in curves:
        xs = np.array([x for x, _ in c])
        vs = np.array([v if v == v else 0.0 for _, v in c])
        idx = np.searchsorted(xs, grid, side="right") - 1
        ys.append(np.where(idx >= 0, vs[np.clip(idx, 0, None)], np.nan))
    return np.nanmedian(np.array(ys), axis=0)


def plot(task, by_pruner, target, out, to_target=None):
    """Left: median best-so-far vs cumulative trial-epochs, zoomed on the last 3 points below the target.
    Right: the fraction of studies that reached the target within x trial-epochs (the spread of the goal's
    metric: where a curve crosses 0.5 is its median)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = ("asha", "flip+asha", "hyperband", "flip+hyperband", "none")
    xmax = max(c[-1][0] for cs in by_pruner.values() for c in cs)
    grid = np.linspace(0, xmax, 400)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for p, cs in by_pruner.items():
        style = {"lw": 2} if p in main else {"lw": 0.8, "alpha": 0.6, "ls": "--"}
        line, = ax.plot(grid, median_curve(cs, grid), label=p, **style)
        if to_target and p in to_target:
            xs = np.array([math.inf if v is None else v for v in to_target[p]])
            bx.plot(grid, [(xs <= g).mean() for g in grid], color=line.get_color(), label=p, **style)
    ax.axhline(target, color="k", ls=":", lw=1, label="target")
    ax.set_xlabel("trial-epochs (cumulative)")
    ax.set_ylabel("best final val acc so far (median over seeds)")
    ax.set_title(f"hpobench {task}: best so far")
    ax.set_ylim(target - 0.03, target + 0.01)
    ax.legend(fontsize=7, loc="lower right")
    bx.set_xlabel("trial-epochs (cumulative)")
    bx.set_ylabel("fraction of studies at the target")
    bx.set_title(f"{task}: reached the target within x")
    bx.set_ylim(0, 1.02)
    bx.axhline(0.5, color="k", ls=":", lw=0.8)
    bx.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def fmt(q, d):
    return "never" if q[0] == math.inf else f"{q[0]:.{d}f} [{q[1]:.{d}f}, {'inf' if q[2] == math.inf else f'{q[2]:.{d}f}'}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1000-1039", help="held-out sampler seeds for asha vs flip+asha and spaces")
    ap.add_argument("--context-seeds", default="1000-1004", help="seeds for the other pruners (context)")
    ap.add_argument("--tasks", default=None, help="comma-separated (default: all recorded)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-trials", type=int, default=60, help="trials per replayed search (default 60)")
    ap.add_argument("--no-context", action="store_true", help="only asha vs flip+asha and the spaces")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true", help="smoke run (CI): seeds 0-1, context seed 0, 12 trials, 1 worker")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.context_seeds, a.n_trials, a.workers = "0-1", "0", 12, 1
    global N_TRIALS, CONTEXT
    N_TRIALS = a.n_trials
    if a.no_context:
        CONTEXT = ()
    seeds, ctx = parse_seeds(a.seeds), parse_seeds(a.context_seeds)
    names = a.tasks.split(",") if a.tasks else tasks()
    jobs = []
    for t in names:
        jobs += [(t, p, "reinterpreted", s) for p in MAIN for s in seeds]
        jobs += [(t, p, "reinterpreted", s) for p in CONTEXT for s in ctx]
        jobs += [(t, "none", "reinterpreted", s) for s in seeds if "none" not in CONTEXT or s not in ctx]
        if not get_task(t).naive and not EXTRA_SPACES.get(t):
            jobs = [j for j in jobs if not (j[0] == t and j[1] == "none" and j[3] not in ctx)]
        if get_task(t).naive:
            jobs += [(t, "none", "naive", s) for s in seeds]
        jobs += [(t, "none", name, s) for name in EXTRA_SPACES.get(t, {}) for s in seeds]
    t0 = time.time()
    results = run(jobs, a.workers)
    wall = time.time() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"seeds": a.seeds, "context_seeds": a.context_seeds, "wall_seconds": round(wall, 1),
                     "n_trials": a.n_trials, "sampler": "tpe", "tasks": {}}
    for t in names:
        from bnn_tune.hpobench import load

        table = load(t)
        rows = {}
        curves = {}
        to_target = {}
        for p in dict.fromkeys((*MAIN, "none", *CONTEXT)):
            if p not in MAIN and not any(tt == t and pp == p for (tt, pp, _sp, _s, _r) in results):
                continue
            cs = seeds if p in MAIN or (p == "none" and not CONTEXT) else ctx
            rs = [r for (tt, pp, sp, s, r) in results if tt == t and pp == p and sp == "reinterpreted" and s in cs]
            rows[p] = aggregate(rs)
            curves[p] = [r["best_so_far"] for r in rs]
            to_target[p] = [r["trial_epochs_to_target"] for r in rs]
        reint = [r for (tt, pp, sp, s, r) in results if tt == t and pp == "none" and sp == "reinterpreted"]
        spaces = {"reinterpreted": aggregate(reint)} if reint else {}
        for name in ("naive", *EXTRA_SPACES.get(t, {})):
            rs = [r for (tt, pp, sp, _s, r) in results if tt == t and sp == name]
            if rs:
                spaces[name] = aggregate(rs)
        a_res = {s: r for (tt, pp, sp, s, r) in results if tt == t and pp == "asha" and sp == "reinterpreted"}
        f_res = {s: r for (tt, pp, sp, s, r) in results if tt == t and pp == "flip+asha" and sp == "reinterpreted"}
        ratios = [f_res[s]["trial_epochs_to_target"] / a_res[s]["trial_epochs_to_target"] for s in seeds
                  if f_res[s]["trial_epochs_to_target"] and a_res[s]["trial_epochs_to_target"]]
        ratio_total = [f_res[s]["trial_epochs_total"] / a_res[s]["trial_epochs_total"] for s in seeds]
        fa, aa = rows["flip+asha"]["trial_epochs_to_target"][0], rows["asha"]["trial_epochs_to_target"][0]
        none_rs = [r for (tt, pp, sp, _s, r) in results if tt == t and pp == "none" and sp == "reinterpreted"]
        floor = {"two_full_trials": 2 * table.epochs, "asha_median_x0.8": 0.8 * aa if math.isfinite(aa) else None,
                 "first_trial_reaches_target": (sum(r["trials_to_target"] == 1 for r in none_rs) / len(none_rs))
                 if none_rs else None}
        hb = {}
        for inner in ("hyperband", "median"):
            x = {s: r for (tt, pp, sp, s, r) in results if tt == t and pp == inner and sp == "reinterpreted"}
            y = {s: r for (tt, pp, sp, s, r) in results if tt == t and pp == f"flip+{inner}" and sp == "reinterpreted"}
            both = [s for s in x if s in y and x[s]["trial_epochs_to_target"] and y[s]["trial_epochs_to_target"]]
            if both:
                hb[f"flip+{inner}_over_{inner}_paired"] = list(np.percentile(
                    [y[s]["trial_epochs_to_target"] / x[s]["trial_epochs_to_target"] for s in both], [50, 25, 75]))
        summary["tasks"][t] = {
            "description": get_task(t).description, "configs": len(table.configs), "epochs": table.epochs,
            "best_final_val": table.best_final_val, "best_config": table.configs[table.best_config],
            "recording": {k: table.meta[k] for k in ("command", "date", "machine", "wall_seconds", "run_seconds")},
            "pruners": rows, "spaces": spaces,
            "flip_asha_over_asha_epochs_to_target": fa / aa if math.isfinite(fa) and math.isfinite(aa) else None,
            "paired_ratio_epochs_to_target": list(np.percentile(ratios, [50, 25, 75])) if ratios else None,
            "paired_ratio_epochs_total": list(np.percentile(ratio_total, [50, 25, 75])),
            "relative_pruner_floor": floor, **hb,
            "median_epochs_to_target_over_asha": {
                p: (r["trial_epochs_to_target"][0] / aa if math.isfinite(aa) else None) for p, r in rows.items()},
        }
        plot(t, curves, table.target(), out / f"hpobench_{t}.png", to_target=to_target)
    for t, s in summary["tasks"].items():
        (out / f"hpobench_{t}.json").write_text(json.dumps({**summary, "tasks": {t: s}}, indent=1, default=float))
    for t, s in summary["tasks"].items():
        print(f"\n## {t}: {s['description']} ({s['configs']} configs, best {s['best_final_val']:.4f})")
        print("| pruner | seeds | trial-epochs to target | trials to target | trial-epochs total | reached | "
              "best config pruned | stopped by |")
        print("|---|---|---|---|---|---|---|---|")
        for p, r in s["pruners"].items():
            print(f"| {p} | {r['n']} | {fmt(r['trial_epochs_to_target'], 1)} | {fmt(r['trials_to_target'], 0)} | "
                  f"{fmt(r['trial_epochs_total'], 1)} | {r['reached']:.0%} | {r['best_config_pruned']:.0%} | "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(r['stop_rules'].items()))} |")
        print(f"flip+asha / asha trial-epochs to target (medians): {s['flip_asha_over_asha_epochs_to_target']}; "
              f"paired per seed [median, q25, q75]: {s['paired_ratio_epochs_to_target']}; "
              f"total: {s['paired_ratio_epochs_total']}")
        print(f"floor of a relative pruner: {s['relative_pruner_floor']}; "
              + "; ".join(f"{k}: {s[k]}" for k in s if k.endswith("_paired")))
        for sp, r in s["spaces"].items():
            print(f"space {sp} (no pruner, {r['n']} seeds): trials to target {fmt(r['trials_to_target'], 0)}, "
                  f"reached {r['reached']:.0%}, best final val {fmt(r['best_final_val_acc'], 4)}")
    print(f"\nwall {wall:.0f} s for {len(jobs)} replays")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
