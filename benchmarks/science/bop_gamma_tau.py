"""Bop's gamma/tau grid (Helwegen et al. 2019, Fig. 1): flip rate and validation accuracy.

Claims checked (seed 002, Sec. 5.1):

* a higher adaptivity rate gamma and a lower threshold tau give a higher flip rate;
* very low gamma / very high tau learn extremely slowly (near-zero flip rate);
* tau = 0 makes the validation accuracy volatile (measured as the standard deviation of the
  epoch-to-epoch changes of val_acc over the second half of training, next to tau > 0 at the same gamma).

Trains the binary MLP on digits (offline) for every (gamma, tau) of the grid with the paper's Adam for
the real-valued parameters, one seed per cell (plus extra seeds for the volatility comparison).

    python benchmarks/science/bop_gamma_tau.py [--quick] [--out DIR] [--dataset digits|mnist1d]
"""

from __future__ import annotations

import itertools
import math
import statistics
import time

import _common as C

GAMMAS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
TAUS = [0.0, 1e-8, 1e-6, 1e-4, 1e-3]
QUICK_GAMMAS = [1e-4, 1e-2]
QUICK_TAUS = [0.0, 1e-4]
CENTRE = (1e-3, 1e-6)  # the paper's Fig. 1 centre (gamma, tau)


def _extra(p):
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist1d", "synthetic"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--vol-seeds", type=int, default=3, help="seeds for the tau=0 volatility comparison")


def _late_vol(series):
    return C.volatility(series[len(series) // 2 - 1:])


def main() -> None:
    args = C.parse_args(__doc__, _extra)
    t0 = time.perf_counter()
    gammas, taus = (QUICK_GAMMAS, QUICK_TAUS) if args.quick else (GAMMAS, TAUS)
    epochs = args.epochs or (3 if args.quick else 20)
    base = {"dataset": args.dataset, "model": "mlp", "optimizer": "bop", "epochs": epochs, "width": args.width,
            "lr": 1e-3, "batch_size": 64, "seed": 0}
    if args.quick:
        base["max_steps_per_epoch"] = 5
    runs = {}
    for g, tau in itertools.product(gammas, taus):
        r = C.train({**base, "gamma": g, "threshold": tau})
        runs[(g, tau)] = r
        print(f"gamma={g:g} tau={tau:g}: final val {r['final_val_acc']:.3f} mean log flip {statistics.mean(r['log_flip_rate']):.2f}")

    mean_lfr = {k: statistics.mean(r["log_flip_rate"]) for k, r in runs.items()}
    # monotonicity: flip rate rises with gamma at fixed tau, falls with tau at fixed gamma
    up_g = [(mean_lfr[(a, t)] <= mean_lfr[(b, t)]) for t in taus for a, b in zip(gammas[:-1], gammas[1:])]
    down_t = [(mean_lfr[(g, a)] >= mean_lfr[(g, b)]) for g in gammas for a, b in zip(taus[:-1], taus[1:])]

    # slow learning: epochs to reach 90% of the grid's best final accuracy
    best_final = max(r["final_val_acc"] for r in runs.values())
    target = 0.9 * best_final

    def epochs_to(r):
        return next((i + 1 for i, a in enumerate(r["val_acc"]) if a >= target), None)

    # volatility: tau = 0 vs the paper's tau at the centre gamma, several seeds
    g0 = 1e-3 if 1e-3 in gammas else gammas[0]
    tau_ref = 1e-6 if 1e-6 in taus else taus[-1]
    vol = {"gamma": g0, "tau_zero": [], "tau_ref": tau_ref, "tau_ref_runs": []}
    n_vol = 1 if args.quick else args.vol_seeds
    for seed in range(n_vol):
        for key, tau in (("tau_zero", 0.0), ("tau_ref_runs", tau_ref)):
            r = runs[(g0, tau)] if seed == 0 else C.train({**base, "gamma": g0, "threshold": tau, "seed": seed})
            vol[key].append({"seed": seed, "volatility": _late_vol(r["val_acc"]), "final_val_acc": r["final_val_acc"],
                             "best_val_acc": r["best_val_acc"], "val_acc": r["val_acc"]})
    vz = statistics.mean(v["volatility"] for v in vol["tau_zero"])
    vr = statistics.mean(v["volatility"] for v in vol["tau_ref_runs"])
    # volatility over the whole grid, tau = 0 column vs the rest (same gammas)
    col_vol = {f"{tau:g}": statistics.mean(_late_vol(runs[(g, tau)]["val_acc"]) for g in gammas) for tau in taus}

    lo_corner, hi_corner = runs[(gammas[0], taus[-1])], runs[(gammas[-1], taus[0])]
    findings = {
        "flip_rate_rises_with_gamma": f"{sum(up_g)}/{len(up_g)} adjacent pairs",
        "flip_rate_falls_with_tau": f"{sum(down_t)}/{len(down_t)} adjacent pairs",
        "low_gamma_high_tau_corner": {"gamma": gammas[0], "tau": taus[-1],
                                      "mean_log_flip_rate": mean_lfr[(gammas[0], taus[-1])],
                                      "final_val_acc": lo_corner["final_val_acc"],
                                      "epochs_to_90pct_of_best": epochs_to(lo_corner)},
        "high_gamma_low_tau_corner": {"gamma": gammas[-1], "tau": taus[0],
                                      "mean_log_flip_rate": mean_lfr[(gammas[-1], taus[0])],
                                      "final_val_acc": hi_corner["final_val_acc"],
                                      "epochs_to_90pct_of_best": epochs_to(hi_corner)},
        "volatility_tau0_mean": vz,
        "volatility_tau_ref_mean": vr,
        "volatility_ratio_tau0_over_ref": vz / vr if vr > 0 else math.inf,
        "volatility_by_tau_mean_over_gammas": col_vol,
        "best_cell": max(((g, t, r["final_val_acc"]) for (g, t), r in runs.items()), key=lambda x: x[2]),
    }
    print(findings)

    plt = C.plt()
    fig, axes = plt.subplots(3, 2, figsize=(11, 12))
    for ax, key, title, cmap in ((axes[0, 0], "final_val_acc", "final val acc", "viridis"),
                                 (axes[0, 1], None, "mean log flip rate (eq. 7)", "magma")):
        mat = [[(runs[(g, t)][key] if key else mean_lfr[(g, t)]) for t in taus] for g in gammas]
        im = ax.imshow(mat, cmap=cmap, aspect="auto", origin="lower")
        for i, j in itertools.product(range(len(gammas)), range(len(taus))):
            ax.text(j, i, f"{mat[i][j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(taus)), [f"{t:g}" for t in taus])
        ax.set_yticks(range(len(gammas)), [f"{g:g}" for g in gammas])
        ax.set_xlabel("threshold tau")
        ax.set_ylabel("adaptivity gamma")
        ax.set_title(title)
        fig.colorbar(im, ax=ax)
    tau_c = CENTRE[1] if CENTRE[1] in taus else taus[-1]
    g_c = CENTRE[0] if CENTRE[0] in gammas else gammas[0]
    for g in gammas:
        r = runs[(g, tau_c)]
        axes[1, 0].plot(range(1, epochs + 1), r["val_acc"], "--", label=f"gamma={g:g}")
        axes[1, 0].plot(range(1, epochs + 1), r["train_acc"], "-", alpha=0.4, color=axes[1, 0].lines[-1].get_color())
        axes[2, 0].plot(range(1, epochs + 1), r["log_flip_rate"], label=f"gamma={g:g}")
    for t in taus:
        r = runs[(g_c, t)]
        axes[1, 1].plot(range(1, epochs + 1), r["val_acc"], "--", label=f"tau={t:g}")
        axes[1, 1].plot(range(1, epochs + 1), r["train_acc"], "-", alpha=0.4, color=axes[1, 1].lines[-1].get_color())
        axes[2, 1].plot(range(1, epochs + 1), r["log_flip_rate"], label=f"tau={t:g}")
    axes[1, 0].set_title(f"tau={tau_c:g}: accuracy (train -, val --)")
    axes[1, 1].set_title(f"gamma={g_c:g}: accuracy (train -, val --)")
    axes[2, 0].set_title(f"tau={tau_c:g}: log flip rate pi")
    axes[2, 1].set_title(f"gamma={g_c:g}: log flip rate pi")
    for ax in axes[1:].ravel():
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(f"Bop on {args.dataset} (mlp width {args.width}): tau=0 val volatility {vz:.4f} vs "
                 f"tau={tau_ref:g} {vr:.4f}")
    payload = {
        "settings": {**base, "gammas": gammas, "taus": taus, "volatility_seeds": n_vol},
        "findings": findings,
        "volatility": vol,
        "grid": [{"gamma": g, "threshold": t, "mean_log_flip_rate": mean_lfr[(g, t)], **runs[(g, t)]}
                 for (g, t) in runs],
    }
    C.save("bop_gamma_tau", args, payload, fig, t0)


if __name__ == "__main__":
    main()
