"""BNEW (Paren & Poudel, seed 001): does the best regulariser slope transfer across run lengths as beta * T?

BNEW (the authors' form, Alasdair-P/bnew ``prox.py``) pushes the relaxed weights with ``w <- clamp((1 +
2 reg_t) w)`` before every Adam step of phase 2, ``reg_t = beta * (t - S + 1)`` growing linearly over the T
phase-2 steps, then projects onto {-1, 1} and freezes at the lock. The poster notes that the optimal beta
depends on T. Two coordinates could transfer: ``beta * T`` (``reg`` at the lock, the reference's ``--reg``)
and ``beta * T^2`` (the total log push ``sum 2 reg_t ~ beta T^2``). The script sweeps the per-step slope
``beta`` on one log grid for three run lengths and several seeds, and reports per T the median final
(sign-network) validation accuracy of each cell with its seed range, and the centre of the near-best cells in
beta, beta * T and beta * T^2. A coordinate transfers when its centre stays put across T while beta's moves.

    python benchmarks/science/bnew_beta_T.py [--quick] [--out DIR] [--dataset mnist1d] [--seeds 3]
"""

from __future__ import annotations

import math
import statistics
import time

import _common as C

EPOCHS = [5, 10, 20]
BETAS = [10.0 ** e for e in range(-7, 0)]  # 1e-7 .. 1e-1, decades
QUICK_EPOCHS = [2, 4]
QUICK_BETAS = [1e-4, 1e-2, 1.0]
NEAR_PP = 0.01  # a cell is near-best when its median is within 1 pp of the best median


def _extra(p):
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist1d", "synthetic"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--width", type=float, default=0.5)


def _spread(vals):  # decades between the smallest and the largest
    return math.log10(max(vals) / min(vals))


def main() -> None:
    from bnn_tune import optim
    from bnn_tune.optim._bnew import bnew_phase_steps

    args = C.parse_args(__doc__, _extra)
    t0 = time.perf_counter()
    epochs_list, betas = (QUICK_EPOCHS, QUICK_BETAS) if args.quick else (EPOCHS, BETAS)
    seeds = 1 if args.quick else args.seeds
    defaults = optim.get("bnew").hyperparameters
    t_start, t_lock = defaults["t_start"], defaults["t_lock"]
    base = {"dataset": args.dataset, "model": "mlp", "optimizer": "bnew", "width": args.width, "lr": 1e-3,
            "latent_lr": 1e-2, "t_start": t_start, "t_lock": t_lock, "batch_size": 64}
    if args.quick:
        base["max_steps_per_epoch"] = 5
    n_train = len(C.data(args.dataset).y_train)
    steps_per_epoch = base.get("max_steps_per_epoch") or math.ceil(n_train / base["batch_size"])
    per_T = []
    for ep in epochs_list:
        total = ep * steps_per_epoch
        s, lock = bnew_phase_steps(total, t_start, t_lock)
        T = lock - s
        rows = []
        for beta in betas:
            accs = []
            for seed in range(seeds):
                r = C.train({**base, "epochs": ep, "beta": beta, "seed": seed})
                accs.append(r["final_val_acc"])
            med = statistics.median(accs)
            rows.append({"beta": beta, "beta_T": beta * T, "beta_T2": beta * T * T, "median_val_acc": med,
                         "min_val_acc": min(accs), "max_val_acc": max(accs), "per_seed": accs})
            print(f"epochs={ep} T={T} beta={beta:.1e} beta*T={beta * T:.3g} beta*T^2={beta * T * T:.3g}: "
                  f"median val {med:.3f} [{min(accs):.3f}, {max(accs):.3f}]", flush=True)
        best = max(rows, key=lambda r: r["median_val_acc"])
        # the optimum is often a plateau: the geometric centre of the cells within NEAR_PP of the best median
        near = [r for r in rows if r["median_val_acc"] >= best["median_val_acc"] - NEAR_PP]
        centre = math.exp(statistics.mean(math.log(r["beta"]) for r in near))
        per_T.append({"epochs": ep, "total_steps": total, "T": T, "rows": rows, "best_beta": best["beta"],
                      "best_median_val_acc": best["median_val_acc"], "near_best_betas": [r["beta"] for r in near],
                      "near_best_beta_centre": centre, "near_best_beta_T_centre": centre * T,
                      "near_best_beta_T2_centre": centre * T * T})

    findings = {
        "T": [p["T"] for p in per_T],
        "best_median_val_acc_by_T": {str(p["T"]): p["best_median_val_acc"] for p in per_T},
        "near_best_betas_by_T": {str(p["T"]): p["near_best_betas"] for p in per_T},
        "near_best_beta_centre_by_T": {str(p["T"]): p["near_best_beta_centre"] for p in per_T},
        "decades_spread_of_beta_centre": _spread([p["near_best_beta_centre"] for p in per_T]),
        "decades_spread_of_beta_T_centre": _spread([p["near_best_beta_T_centre"] for p in per_T]),
        "decades_spread_of_beta_T2_centre": _spread([p["near_best_beta_T2_centre"] for p in per_T]),
        "T_range_decades": _spread([p["T"] for p in per_T]),
    }
    print(findings)

    fig = plot(per_T, findings, args.dataset, seeds)
    name = "bnew_beta_T" if args.dataset == "digits" else f"bnew_beta_T_{args.dataset}"
    C.save(name, args, {"settings": {**base, "epochs": epochs_list, "betas": betas, "seeds": seeds,
                                     "steps_per_epoch": steps_per_epoch, "near_pp": NEAR_PP},
                        "findings": findings, "per_T": per_T}, fig, t0)


def plot(per_T, findings, dataset, seeds):
    plt = C.plt()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    coords = (("beta", "beta (reg slope per step)", 0), ("beta_T", "beta * T (reg at the lock)", 1),
              ("beta_T2", "beta * T^2 (total log push)", 2))
    for p in per_T:
        a = [r["median_val_acc"] for r in p["rows"]]
        lo = [r["median_val_acc"] - r["min_val_acc"] for r in p["rows"]]
        hi = [r["max_val_acc"] - r["median_val_acc"] for r in p["rows"]]
        for key, _, i in coords:
            x = [r[key] for r in p["rows"]]
            axes[i].errorbar(x, a, yerr=[lo, hi], fmt="o-", capsize=3, label=f"{p['epochs']} epochs (T={p['T']})")
    for _key, xl, i in coords:
        axes[i].set_xscale("log")
        axes[i].set_xlabel(xl)
        axes[i].set_ylabel(f"final val acc (median, range of {seeds} seeds)")
        axes[i].legend(fontsize=8)
    fig.suptitle(f"BNEW (reference form) on {dataset}: near-best centre spreads {findings['decades_spread_of_beta_centre']:.2f} "
                 f"decades in beta, {findings['decades_spread_of_beta_T_centre']:.2f} in beta*T, "
                 f"{findings['decades_spread_of_beta_T2_centre']:.2f} in beta*T^2 (T spans "
                 f"{findings['T_range_decades']:.2f}); shared machine")
    return fig


if __name__ == "__main__":
    main()
