"""BNEW (Paren & Poudel, seed 001): the best beta depends on the training length T; beta * T transfers.

BNEW's negative weight decay grows as lambda_t = beta * t over the T phase-2 steps, so what decides how
hard the weights are pushed to {-1, 1} before the lock is lambda at the lock, beta * T. The script sweeps
the per-step slope ``beta`` on one log grid for three run lengths (epochs -> T phase-2 steps) and reports,
per T, the best beta and the best beta * T. The claim holds when the best beta moves with T (roughly as
1/T) while the best beta * T stays roughly put.

    python benchmarks/science/bnew_beta_T.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
import statistics
import time

import _common as C

EPOCHS = [4, 8, 16]
BETAS = [10 ** (e / 2) for e in range(-10, 3)]  # 1e-5 .. 10, half decades
QUICK_EPOCHS = [2, 4]
QUICK_BETAS = [1e-4, 1e-2, 1.0]


def _extra(p):
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist1d", "synthetic"])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--width", type=float, default=0.5)


def main() -> None:
    from bnn_tune.optim._bnew import bnew_phase_steps

    args = C.parse_args(__doc__, _extra)
    t0 = time.perf_counter()
    epochs_list, betas = (QUICK_EPOCHS, QUICK_BETAS) if args.quick else (EPOCHS, BETAS)
    seeds = 1 if args.quick else args.seeds
    base = {"dataset": args.dataset, "model": "mlp", "optimizer": "bnew", "width": args.width, "lr": 1e-3,
            "latent_lr": 1e-2, "t_lock": 0.8, "batch_size": 64}
    if args.quick:
        base["max_steps_per_epoch"] = 5
    n_train = len(C.data(args.dataset).y_train)
    steps_per_epoch = base.get("max_steps_per_epoch") or math.ceil(n_train / base["batch_size"])
    per_T = []
    for ep in epochs_list:
        total = ep * steps_per_epoch
        s, lock = bnew_phase_steps(total, 0.25, 0.8)
        T = lock - s
        rows = []
        for beta in betas:
            accs = []
            for seed in range(seeds):
                r = C.train({**base, "epochs": ep, "beta": beta, "seed": seed})
                accs.append(r["final_val_acc"])
            acc = statistics.mean(accs)
            rows.append({"beta": beta, "beta_T": beta * T, "final_val_acc": acc, "per_seed": accs})
            print(f"epochs={ep} T={T} beta={beta:.2e} beta*T={beta * T:.3g}: val {acc:.3f}")
        best = max(rows, key=lambda r: r["final_val_acc"])
        # the optimum is often a plateau: report the geometric centre of the cells within 1 pp of the best
        near = [r for r in rows if r["final_val_acc"] >= best["final_val_acc"] - 0.01]
        centre = math.exp(statistics.mean(math.log(r["beta"]) for r in near))
        per_T.append({"epochs": ep, "total_steps": total, "T": T, "rows": rows, "best_beta": best["beta"],
                      "best_beta_T": best["beta"] * T, "best_val_acc": best["final_val_acc"],
                      "near_best_beta_centre": centre, "near_best_beta_T_centre": centre * T,
                      "near_best_betas": [r["beta"] for r in near]})

    def spread(vals):  # decades between the smallest and the largest
        return math.log10(max(vals) / min(vals))

    findings = {
        "best_beta_by_T": {str(p["T"]): p["best_beta"] for p in per_T},
        "best_beta_T_by_T": {str(p["T"]): p["best_beta_T"] for p in per_T},
        "near_best_beta_centre_by_T": {str(p["T"]): p["near_best_beta_centre"] for p in per_T},
        "near_best_beta_T_centre_by_T": {str(p["T"]): p["near_best_beta_T_centre"] for p in per_T},
        "decades_spread_of_beta_centre": spread([p["near_best_beta_centre"] for p in per_T]),
        "decades_spread_of_beta_T_centre": spread([p["near_best_beta_T_centre"] for p in per_T]),
        "T_range_decades": spread([p["T"] for p in per_T]),
    }
    print(findings)

    fig = plot(per_T, findings, args.dataset)
    name = "bnew_beta_T" if args.dataset == "digits" else f"bnew_beta_T_{args.dataset}"
    C.save(name, args, {"settings": {**base, "epochs": epochs_list, "betas": betas, "seeds": seeds,
                                              "steps_per_epoch": steps_per_epoch},
                                 "findings": findings, "per_T": per_T}, fig, t0)


def plot(per_T, findings, dataset):
    plt = C.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for p in per_T:
        b = [r["beta"] for r in p["rows"]]
        a = [r["final_val_acc"] for r in p["rows"]]
        axes[0].plot(b, a, "o-", label=f"{p['epochs']} epochs (T={p['T']})")
        axes[1].plot([x * p["T"] for x in b], a, "o-", label=f"T={p['T']}")
        axes[0].axvline(p["near_best_beta_centre"], color=axes[0].lines[-1].get_color(), ls=":")
        axes[1].axvline(p["near_best_beta_T_centre"], color=axes[1].lines[-1].get_color(), ls=":")
    for ax, xl in ((axes[0], "beta (lambda slope per step)"), (axes[1], "beta * T (lambda at the lock)")):
        ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("final val acc")
        ax.legend()
    axes[0].set_title("val acc vs beta (dotted: centre of cells within 1 pp of best)")
    axes[1].set_title("the same runs vs beta * T")
    fig.suptitle(f"BNEW on {dataset}: spread of the optimum {findings['decades_spread_of_beta_centre']:.2f} "
                 f"decades in beta vs {findings['decades_spread_of_beta_T_centre']:.2f} in beta*T "
                 f"(T spans {findings['T_range_decades']:.2f})")
    return fig


if __name__ == "__main__":
    main()
