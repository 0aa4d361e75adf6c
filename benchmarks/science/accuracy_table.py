"""Accuracy table: every binary optimizer tuned with its own search space on the same trial budget,
next to the real-valued twin of the same model.

For each dataset (digits, mnist1d) and each optimizer (bop, bop2, latent_adam, bmd, bnew, filter) one
Optuna study (TPE, fixed seed, no pruner) runs ``--trials`` trials of :func:`bnn_tune.objective` with the
optimizer's space from :mod:`search_spaces` (its ``suggest``), all trials with the same epochs/model. The
best trial is picked on validation accuracy (last epoch); its test accuracy is reported. The real-valued
twin (``build_model(..., binary=False)``, plain Adam on every parameter) gets the same budget: ``--trials``
TPE trials over the Adam learning rate and weight decay.

With ``--record-presets`` the best configuration of every (optimizer, dataset) is stored in
``search_spaces/presets.json`` with its provenance (this command, date, val_acc, trials).

    python benchmarks/science/accuracy_table.py [--quick] [--out DIR] [--record-presets]
"""

from __future__ import annotations

import logging
import time

import _common as C
import torch
import torch.nn.functional as F

OPTIMIZERS = ["bop", "bop2", "latent_adam", "bmd", "bnew", "filter"]
SPACE = {"filter": "filters"}


def _extra(p):
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    p.add_argument("--trials", type=int, default=None, help="trials per optimizer (default 12 digits / 8 mnist1d)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 10)")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--record-presets", action="store_true", help="store the best configs in search_spaces/presets.json")


def real_twin_trial(trial, base: dict) -> float:
    """The real-valued twin: same architecture without binarization, Adam on everything."""
    from bnn_tune.nn import build_model

    lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
    wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    d = C.data(base["dataset"])
    torch.manual_seed(base["seed"])
    model = build_model("mlp", d.input_shape, d.num_classes, binary=False, width=base["width"], depth=2)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    gen = torch.Generator().manual_seed(base["seed"])
    bs = base["batch_size"]
    steps_cap = base.get("max_steps_per_epoch") or 10**9

    def acc(x, y):
        model.eval()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    for epoch in range(base["epochs"]):
        model.train()
        perm = torch.randperm(len(d.y_train), generator=gen)
        for k, i in enumerate(range(0, len(perm), bs)):
            if k >= steps_cap:
                break
            idx = perm[i:i + bs]
            x = d.x_train[idx]
            if base.get("augment", True) and d.augment is not None:
                x = d.augment(x, gen)
            loss = F.cross_entropy(model(x), d.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        trial.report(acc(d.x_val, d.y_val), epoch + 1)
    val = acc(d.x_val, d.y_val)
    trial.set_user_attr("bnn_tune:test_acc", acc(d.x_test, d.y_test))
    return val


def tune(name: str, base: dict, n_trials: int, seed: int = 0) -> dict:
    import optuna

    import bnn_tune.objective as objective_mod

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, n_trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    t0 = time.perf_counter()
    if name == "real":
        study.optimize(lambda t: real_twin_trial(t, base), n_trials=n_trials)
    else:
        obj = objective_mod.objective(SPACE.get(name, name), base_config=base, data=C.data(base["dataset"]))
        study.optimize(obj, n_trials=n_trials)
    wall = time.perf_counter() - t0
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    if not done:
        return {"optimizer": name, "best_val_acc": None, "test_acc": None, "failed": len(failed), "wall_s": wall,
                "fail_reasons": [t.user_attrs.get("bnn_tune:fail_reason") for t in failed]}
    best = max(done, key=lambda t: t.value)
    return {"optimizer": name, "best_val_acc": best.value, "test_acc": best.user_attrs.get("bnn_tune:test_acc"),
            "best_params": best.params, "best_config": best.user_attrs.get("bnn_tune:config", best.params),
            "median_val_acc": sorted(t.value for t in done)[len(done) // 2], "completed": len(done),
            "failed": len(failed), "fail_reasons": [t.user_attrs.get("bnn_tune:fail_reason") for t in failed],
            "all_values": [t.value for t in study.trials], "wall_s": wall}


def main() -> None:
    import optuna

    args = C.parse_args(__doc__, _extra)
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("bnn_tune").setLevel(logging.ERROR)
    table = {}
    budgets = {}
    for ds in args.datasets:
        n_trials = 2 if args.quick else (args.trials or (12 if ds == "digits" else 8))
        epochs = 2 if args.quick else (args.epochs or 10)
        base = {"dataset": ds, "model": "mlp", "width": args.width, "epochs": epochs, "batch_size": 64, "seed": 0}
        if args.quick:
            base["max_steps_per_epoch"] = 5
        budgets[ds] = {"trials": n_trials, **base}
        table[ds] = {}
        for name in [*OPTIMIZERS, "real"]:
            r = tune(name, base, n_trials)
            table[ds][name] = r
            print(f"{ds:8s} {name:12s} best val {r['best_val_acc']} test {r['test_acc']} "
                  f"failed {r['failed']} wall {r['wall_s']:.1f}s")

    if args.record_presets and not args.quick:
        from bnn_tune.search_spaces import presets

        for ds, rows in table.items():
            for name, r in rows.items():
                if name == "real" or r["best_val_acc"] is None:
                    continue
                cfg = {k: v for k, v in dict(r["best_config"]).items()
                       if k not in ("device", "data_root", "download", "max_steps_per_epoch")}
                presets.record(name, ds, "mlp", cfg, command=C.command_line(), metric="val_acc",
                               value=r["best_val_acc"], n_trials=budgets[ds]["trials"],
                               notes=f"benchmarks/science/accuracy_table.py: TPE seed 0, no pruner, "
                                     f"{budgets[ds]['epochs']} epochs, mlp width {args.width}; "
                                     f"test_acc={r['test_acc']:.4f}; CPU")

    plt = C.plt()
    names = [*OPTIMIZERS, "real"]
    fig, axes = plt.subplots(1, len(table), figsize=(6 * len(table), 4.5), squeeze=False)
    for ax, (ds, rows) in zip(axes[0], table.items()):
        vals = [100 * (rows[n]["test_acc"] or 0) for n in names]
        bars = ax.bar(names, vals, color=["C0"] * len(OPTIMIZERS) + ["C2"])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.5, f"{v:.1f}", ha="center", fontsize=8)
        ax.set_ylim(max(0, min(vals) - 15), 100)
        ax.set_ylabel("test acc (%) of the best-val trial")
        ax.set_title(f"{ds}: {budgets[ds]['trials']} TPE trials x {budgets[ds]['epochs']} epochs each")
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle("Each optimizer tuned in its own space (same budget); green: real-valued twin")
    C.save("accuracy_table", args, {"settings": {"budgets": budgets, "optimizers": OPTIMIZERS,
                                                 "real_twin": "build_model(binary=False) + AdamW (lr, weight_decay)"},
                                    "table": table}, fig, t0)


if __name__ == "__main__":
    main()
