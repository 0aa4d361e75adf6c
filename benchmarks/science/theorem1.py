"""Theorem 1 of Helwegen et al. 2019: scaling the learning rate and the initial latent weights by the same C
leaves the binary weights unchanged.

Two copies of the digits binary MLP train on the same mini-batches: A with (lr, w~_0) and B with
(C * lr, C * w~_0). After every step the script counts the fraction of binary weights sign(w~) where A and B
differ. Conditions:

* ``exact_sgd``: plain SGD on the latent weights, unclipped STE (pseudo-gradient independent of |w~|), no
  latent clipping -- the theorem's conditions; expected 0 differences at every step.
* ``exact_adam``: the same with Adam on the latent weights (LatentAdam, clip_value=None): Adam's step does
  not depend on the gradient's scale, so the theorem's argument holds too.
* ``clipped``: the usual recipe -- LatentAdam with latent clipping to [-1, 1] and the clipped STE
  (gradient zero where |w~| > 1); the conditions fail, so the trajectories may drift apart ("nearly
  unchanged" is what is measured).
* ``lr_only`` (control): C * lr with the *unscaled* init; shows the init scaling is what keeps the
  trajectory.

The real-valued parameters (first/last layer, batch norm) use Adam with the same lr in A and B.
Float64 throughout; C = 0.25/4 are powers of two (bit-exact scaling), 0.1/10 are not.

    python benchmarks/science/theorem1.py [--quick] [--out DIR]
"""

from __future__ import annotations

import copy
import time

import _common as C
import torch
import torch.nn.functional as F

CS = [0.1, 0.25, 4.0, 10.0]
QUICK_CS = [0.25, 10.0]


def _model(seed: int, clip_ste: bool):
    from bnn_tune.nn import SteSign, build_model

    torch.manual_seed(seed)
    m = build_model("mlp", (1, 8, 8), 10, width=0.5).double()
    for mod in m.modules():
        if getattr(mod, "weight_quantizer", None) is not None:
            mod.weight_quantizer = SteSign(1.0 if clip_ste else None)
    return m


def _binary(m):
    from bnn_tune.nn import binary_parameters

    return [p for _, p in binary_parameters(m)]


def _make_opt(kind: str, params, lr: float):
    from bnn_tune.optim import LatentAdam

    if kind == "exact_sgd":
        return torch.optim.SGD(params, lr=lr)
    if kind == "exact_adam":
        return LatentAdam(params, lr=lr, clip_value=None)
    return LatentAdam(params, lr=lr, clip_value=1.0)


def run_pair(kind: str, c: float, steps: int, lr: float, seed: int = 0) -> dict:
    from bnn_tune.nn import binarize, is_binary_parameter

    d = C.data("digits")
    x, y = d.x_train.double(), d.y_train
    xv, yv = d.x_val.double(), d.y_val
    clip_ste = kind == "clipped"
    a = _model(seed, clip_ste)
    b = copy.deepcopy(a)
    init_c = 1.0 if kind == "lr_only" else c
    with torch.no_grad():
        for p in _binary(b):
            p.mul_(init_c)
    opts = []
    for m, lr_b in ((a, lr), (b, c * lr)):
        bin_p = [p for p in m.parameters() if is_binary_parameter(p)]
        real_p = [p for p in m.parameters() if not is_binary_parameter(p)]
        opts.append((_make_opt(kind, bin_p, lr_b), torch.optim.Adam(real_p, lr=1e-3)))
    gen = torch.Generator().manual_seed(seed + 1)
    n_bin = sum(p.numel() for p in _binary(a))
    diff, flips, val = [], [], {"A": [], "B": []}
    for epoch in C.minibatch_epochs(len(y), 64, steps, gen):
        for idx in epoch:
            prev = [binarize(p.detach()).clone() for p in _binary(a)]
            for m, (ob, orl) in zip((a, b), opts):
                m.train()
                loss = F.cross_entropy(m(x[idx]), y[idx])
                ob.zero_grad()
                orl.zero_grad()
                loss.backward()
                ob.step()
                orl.step()
            nd = sum(int((binarize(pa.detach()) != binarize(pb.detach())).sum())
                     for pa, pb in zip(_binary(a), _binary(b)))
            nf = sum(int((binarize(pa.detach()) != q).sum()) for pa, q in zip(_binary(a), prev))
            diff.append(nd / n_bin)
            flips.append(nf / n_bin)
        with torch.no_grad():
            for key, m in (("A", a), ("B", b)):
                m.eval()
                val[key].append(float((m(xv).argmax(1) == yv).float().mean()))
    return {"kind": kind, "C": c, "steps": steps, "lr": lr, "diff_fraction": diff, "flip_rate_A": flips,
            "max_diff": max(diff), "mean_diff": sum(diff) / len(diff), "final_diff": diff[-1],
            "steps_with_any_diff": sum(1 for v in diff if v > 0), "val_acc_A": val["A"], "val_acc_B": val["B"],
            "total_flips_A": int(round(sum(flips) * n_bin)), "n_binary_weights": n_bin}


def main() -> None:
    args = C.parse_args(__doc__)
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.float64)
    cs = QUICK_CS if args.quick else CS
    steps = 20 if args.quick else 180  # 180 steps = 10 epochs of digits at batch 64
    lrs = {"exact_sgd": 1.0, "exact_adam": 1e-2, "clipped": 1e-2, "lr_only": 1e-2}
    results = []
    for kind in ("exact_sgd", "exact_adam", "clipped", "lr_only"):
        for c in cs:
            r = run_pair(kind, c, steps, lrs[kind])
            results.append(r)
            print(f"{kind:10s} C={c:<5g} max diff {r['max_diff']:.4f} mean {r['mean_diff']:.4f} "
                  f"steps with diff {r['steps_with_any_diff']}/{steps} flips(A) {r['total_flips_A']} "
                  f"val A {r['val_acc_A'][-1]:.3f} B {r['val_acc_B'][-1]:.3f}")
    summary = {f"{r['kind']}:C={r['C']:g}": {k: r[k] for k in ("max_diff", "mean_diff", "final_diff",
                                                                "steps_with_any_diff", "total_flips_A")}
               for r in results}
    exact_ok = all(r["max_diff"] == 0.0 for r in results if r["kind"].startswith("exact"))

    plt = C.plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for r in results:
        ls = {"exact_sgd": "-", "exact_adam": ":", "clipped": "--", "lr_only": "-."}[r["kind"]]
        axes[0].plot(range(1, len(r["diff_fraction"]) + 1), r["diff_fraction"], ls, label=f"{r['kind']} C={r['C']:g}")
    axes[0].set_yscale("symlog", linthresh=1e-4)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("fraction of binary weights differing (A vs B)")
    axes[0].set_title("sign(w~) of (lr, w0) vs (C lr, C w0)")
    axes[0].legend(fontsize=6, ncol=2)
    for r in results:
        if r["kind"] in ("clipped", "lr_only"):
            axes[1].plot(r["val_acc_B"], "--" if r["kind"] == "clipped" else "-.", label=f"B {r['kind']} C={r['C']:g}")
    axes[1].plot(results[0]["val_acc_A"], "k-", lw=2, label="A exact_sgd")
    ref = next(r for r in results if r["kind"] == "clipped")
    axes[1].plot(ref["val_acc_A"], "k--", lw=2, label="A clipped")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("val accuracy")
    axes[1].legend(fontsize=6)
    kinds = ["exact_sgd", "exact_adam", "clipped", "lr_only"]
    for i, c in enumerate(cs):
        vals = [next(r["mean_diff"] for r in results if r["kind"] == k and r["C"] == c) for k in kinds]
        axes[2].bar([j + i * 0.8 / len(cs) for j in range(len(kinds))], vals, width=0.8 / len(cs), label=f"C={c:g}")
    axes[2].set_xticks([j + 0.3 for j in range(len(kinds))], kinds)
    axes[2].set_ylabel("mean fraction differing per step")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"Theorem 1 (seed 002): exact conditions give 0 differing weights at every step: {exact_ok}")
    C.save("theorem1", args, {"settings": {"cs": cs, "steps": steps, "lrs": lrs, "dataset": "digits",
                                           "model": "mlp width 0.5", "dtype": "float64"},
                              "exact_conditions_zero_difference": exact_ok, "summary": summary,
                              "runs": results}, fig, t0)


if __name__ == "__main__":
    main()
