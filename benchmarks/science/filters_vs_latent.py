"""Gradient filters (Quist et al. 2023, seed 004): the order-2 filter *is* latent SGD + momentum + weight decay.

Part 1 -- flip-for-flip agreement on the digits binary MLP (float64). Latent weights updated by
``m <- (1-gamma) m + gamma g; w~ <- (1 - eta*lam) w~ - eta*m`` with forward sign(w~) and the unclipped STE,
against :class:`bnn_tune.optim.GradientFilter` (order 2, same gamma, alpha = eta*lam, inertia
i_0 = -lam*w~_0) on a copy whose weights are sign(w~_0). Real-valued parameters: Adam, same lr in both.
Reported per step: the fraction of binary weights where sign(w~) != w_filter (expected 0), and the flips.
A second filter run starts from i_0 = 0 (ignoring the latent init) to show what the init scale does.

Part 2 -- accuracy on the same budget: the order-2 filter optimizer (one step, grid over alpha and gamma)
against the two-step latent recipe (Liu et al. 2021, quoted in seed 004: step 1 binary activations + real
weights with Adam and weight decay, step 2 binary weights from step 1 with Adam and no weight decay), each
with 4 configurations x the same epochs x the same seeds; the configuration is picked on validation
accuracy, test accuracy reported.

    python benchmarks/science/filters_vs_latent.py [--quick] [--out DIR]
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time

import _common as C
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- part 1
def agreement(steps: int, gamma: float, eta: float, lam: float, init_scale: float, seed: int = 0) -> dict:
    from bnn_tune.nn import SteSign, binarize, binary_parameters, build_model, is_binary_parameter
    from bnn_tune.optim import GradientFilter

    d = C.data("digits")
    x, y = d.x_train.double(), d.y_train
    torch.manual_seed(seed)
    lat = build_model("mlp", (1, 8, 8), 10, width=0.5).double()
    for mod in lat.modules():
        if getattr(mod, "weight_quantizer", None) is not None:
            mod.weight_quantizer = SteSign(None)  # unclipped STE: the pseudo-gradient ignores |w~|
    with torch.no_grad():
        for _, p in binary_parameters(lat):
            p.mul_(init_scale / p.abs().max())
    filters = {}
    for name, zero_init in (("filter", False), ("filter_i0_zero", True)):
        m = copy.deepcopy(lat)
        with torch.no_grad():
            for _, p in binary_parameters(m):
                p.copy_(binarize(p))
        bp = [p for _, p in binary_parameters(m)]
        opt = GradientFilter(bp, order=2, gamma=gamma, alpha=eta * lam)
        for p, (_, w) in zip(bp, binary_parameters(lat)):
            opt.state[p]["exp_avg"] = torch.zeros_like(p)
            opt.state[p]["inertia"] = torch.zeros_like(p) if zero_init else -lam * w.detach().clone()
        real = torch.optim.Adam([p for p in m.parameters() if not is_binary_parameter(p)], lr=1e-3)
        filters[name] = (m, opt, real)
    lat_bin = [p for _, p in binary_parameters(lat)]
    lat_real = torch.optim.Adam([p for p in lat.parameters() if not is_binary_parameter(p)], lr=1e-3)
    mom = [torch.zeros_like(p) for p in lat_bin]
    n_bin = sum(p.numel() for p in lat_bin)
    gen = torch.Generator().manual_seed(seed + 1)
    out = {k: [] for k in ("filter", "filter_i0_zero")}
    flips = []
    for epoch in C.minibatch_epochs(len(y), 64, steps, gen):
        for idx in epoch:
            prev = [binarize(p.detach()).clone() for p in lat_bin]
            # latent: SGD with EMA momentum and decoupled weight decay (the formula, written out)
            lat.train()
            loss = F.cross_entropy(lat(x[idx]), y[idx])
            lat_real.zero_grad()
            for p in lat_bin:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                for p, mo in zip(lat_bin, mom):
                    mo.mul_(1 - gamma).add_(p.grad, alpha=gamma)
                    p.mul_(1 - eta * lam).sub_(eta * mo)
            lat_real.step()
            flips.append(sum(int((binarize(p.detach()) != q).sum()) for p, q in zip(lat_bin, prev)) / n_bin)
            for name, (m, opt, real) in filters.items():
                m.train()
                loss = F.cross_entropy(m(x[idx]), y[idx])
                opt.zero_grad()
                real.zero_grad()
                loss.backward()
                opt.step()
                real.step()
                nd = sum(int((binarize(pl.detach()) != pf.detach()).sum())
                         for pl, (_, pf) in zip(lat_bin, binary_parameters(m)))
                out[name].append(nd / n_bin)
    return {"gamma": gamma, "eta": eta, "lam": lam, "alpha": eta * lam, "init_scale": init_scale, "steps": steps,
            "disagreement": out["filter"], "disagreement_i0_zero": out["filter_i0_zero"], "flip_rate_latent": flips,
            "max_disagreement": max(out["filter"]), "total_flips_latent": int(round(sum(flips) * n_bin)),
            "max_disagreement_i0_zero": max(out["filter_i0_zero"]),
            "final_disagreement_i0_zero": out["filter_i0_zero"][-1]}


# ----------------------------------------------------------------------------- part 2
def run_filter(base: dict, alpha: float, gamma: float, seed: int) -> dict:
    from bnn_tune.train import Trainer

    t = Trainer({**base, "optimizer": "filter", "order": 2, "alpha": alpha, "gamma": gamma, "seed": seed},
                data=C.data(base["dataset"]))
    val = [t.train_epoch().val_acc for _ in range(base["epochs"])]
    return {"val_acc": val, "final_val_acc": val[-1], "test_acc": t.evaluate("test")[1]}


def run_two_step(base: dict, latent_lr: float, wd: float, seed: int) -> dict:
    """Step 1 (first half of the epochs): real weights, binary activations, Adam + weight decay.
    Step 2 (second half): binary weights (clipped STE) from step 1, Adam, no weight decay."""
    from bnn_tune.nn import SteSign
    from bnn_tune.train import Trainer

    t = Trainer({**base, "optimizer": "latent_adam", "latent_lr": latent_lr, "weight_decay": wd, "seed": seed},
                data=C.data(base["dataset"]))
    layers = [m for m in t.model.modules() if getattr(m, "weight_quantizer", None) is not None]
    for m in layers:
        m.weight_quantizer = None  # step 1: real-valued weights
    e1 = base["epochs"] // 2
    val = [t.train_epoch().val_acc for _ in range(e1)]
    for m in layers:
        m.weight_quantizer = SteSign(1.0)
    for g in t.optimizer.binary.param_groups:
        g["weight_decay"] = 0.0
    val += [t.train_epoch().val_acc for _ in range(base["epochs"] - e1)]
    return {"val_acc": val, "final_val_acc": val[-1], "test_acc": t.evaluate("test")[1], "step1_epochs": e1}


def main() -> None:
    args = C.parse_args(__doc__)
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.float64)
    steps = 25 if args.quick else 360
    settings = [(0.1, 1.0, 0.05, 1.0)] if args.quick else [(0.1, 1.0, 0.05, 1.0), (0.5, 0.1, 0.5, 0.1),
                                                           (0.01, 5.0, 0.002, 0.05)]
    agree = []
    for gamma, eta, lam, scale in settings:
        r = agreement(steps, gamma, eta, lam, scale)
        agree.append(r)
        print(f"gamma={gamma} eta={eta} lam={lam} init={scale}: max disagreement {r['max_disagreement']:.2e} "
              f"over {steps} steps, {r['total_flips_latent']} flips; i0=0 variant max "
              f"{r['max_disagreement_i0_zero']:.3f} final {r['final_disagreement_i0_zero']:.3f}")
    torch.set_default_dtype(torch.float32)

    epochs = 2 if args.quick else 16
    seeds = [0] if args.quick else [0, 1]
    base = {"dataset": "digits", "model": "mlp", "width": 0.5, "epochs": epochs, "lr": 1e-3, "batch_size": 64}
    if args.quick:
        base["max_steps_per_epoch"] = 5
    filt_grid = list(itertools.product([1e-3, 1e-2], [1e-2, 1e-1]))  # (alpha, gamma)
    two_grid = list(itertools.product([1e-3, 1e-2], [1e-5, 1e-3]))  # (latent_lr, weight decay of step 1)
    if args.quick:
        filt_grid, two_grid = filt_grid[:1], two_grid[:1]
    table: dict[str, list[dict]] = {"filter": [], "two_step": []}
    for kind, grid, run, keys in (("filter", filt_grid, run_filter, ("alpha", "gamma")),
                                  ("two_step", two_grid, run_two_step, ("latent_lr", "weight_decay"))):
        for point in grid:
            rs = [run(base, *point, s) for s in seeds]
            row = {**dict(zip(keys, point)), "runs": rs, "val": statistics.mean(r["final_val_acc"] for r in rs),
                   "test": statistics.mean(r["test_acc"] for r in rs)}
            table[kind].append(row)
            print(f"{kind} " + " ".join(f"{k}={v}" for k, v in zip(keys, point))
                  + f": val {row['val']:.3f} test {row['test']:.3f}")
    best = {k: max(v, key=lambda r: r["val"]) for k, v in table.items()}
    findings = {
        "order2_filter_equals_latent_sgd": all(r["max_disagreement"] == 0.0 for r in agree),
        "max_disagreement_over_settings": max(r["max_disagreement"] for r in agree),
        "flips_compared": sum(r["total_flips_latent"] for r in agree),
        "best_filter": {k: best["filter"][k] for k in ("alpha", "gamma", "val", "test")},
        "best_two_step": {k: best["two_step"][k] for k in ("latent_lr", "weight_decay", "val", "test")},
        "test_gap_filter_minus_two_step_pp": 100 * (best["filter"]["test"] - best["two_step"]["test"]),
        "budget": f"{len(filt_grid)} configs x {len(seeds)} seeds x {epochs} epochs each",
    }
    print(findings)

    plt = C.plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for r in agree:
        lab = f"gamma={r['gamma']}, alpha={r['alpha']:.3g}"
        axes[0].plot(r["disagreement"], label=f"i0=-lam w0: {lab}")
        axes[0].plot(r["disagreement_i0_zero"], "--", color=axes[0].lines[-1].get_color(), label=f"i0=0: {lab}")
    axes[0].set_yscale("symlog", linthresh=1e-4)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("fraction sign(w~) != w_filter")
    axes[0].set_title("order-2 filter vs latent SGD+momentum+WD")
    axes[0].legend(fontsize=6)
    for r in agree:
        axes[1].plot(r["flip_rate_latent"], label=f"gamma={r['gamma']}, alpha={r['alpha']:.3g}")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_title("flip rate per step (identical in both)")
    axes[1].legend(fontsize=7)
    for k, ls in (("filter", "-"), ("two_step", "--")):
        for run in best[k]["runs"]:
            axes[2].plot(range(1, epochs + 1), run["val_acc"], ls, label=f"{k} seed")
    axes[2].axvline(epochs // 2 + 0.5, color="gray", ls=":", label="two-step switch")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("val acc")
    axes[2].set_title(f"best configs: filter test {best['filter']['test']:.3f}, two-step {best['two_step']['test']:.3f}")
    axes[2].legend(fontsize=7)
    C.save("filters_vs_latent", args, {"settings": {"agreement": settings, "agreement_steps": steps, **base,
                                                    "seeds": seeds, "filter_grid": filt_grid, "two_step_grid": two_grid},
                                       "findings": findings, "agreement": agree, "accuracy": table}, fig, t0)


if __name__ == "__main__":
    main()
