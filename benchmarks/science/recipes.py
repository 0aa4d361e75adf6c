"""Training recipes: every optimizer with and without distillation, two-step training and twin init.

Each binary optimizer starts from its tuned preset (``search_spaces/presets.json``, tuned at 10 epochs,
mlp width 0.5) and trains under the same budget of ``--budget`` trial-epochs, the real-valued twin's
epochs included (:mod:`bnn_tune.recipes`):

* ``one_step``: the preset alone for the whole budget;
* ``distill``: the twin for budget/2 epochs (``--twin-fraction``), then the binary net for the rest
  with distillation;
* ``init``: the twin first, then the binary net starts from its weights (signs for Bop-style);
* ``distill+init``: both, from the same twin;
* ``two_step`` (latent-weight optimizers): step 1 real weights + weight decay, step 2 binary, budget epochs;
* ``two_step+distill+init`` (latent-weight optimizers): all three (twin first, as above).

Distillation uses the defaults (weight 1, T = 4), two-step ``step1_fraction=0.5`` and
``step1_weight_decay=5e-6``: nothing here is tuned per recipe. The real twin is trained for the whole
budget (its test accuracy is the target). Every cell runs ``--seeds`` seeds (model init, data order);
the figures are medians with [min, max] over seeds of the test accuracy.

    python benchmarks/science/recipes.py [--quick] [--out DIR] [--seeds 0 1 2] [--budgets 20 10]

The JSON is rewritten after each dataset (``"complete": false`` until the last one).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

import _common as C

OPTIMIZERS = ["bop", "bop2", "latent_adam", "bmd", "bnew", "filter"]
RECIPES = ["one_step", "distill", "init", "distill+init", "two_step", "two_step+distill+init"]


def _extra(p):
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    p.add_argument("--optimizers", nargs="+", default=OPTIMIZERS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--twin-fraction", type=float, default=0.5, help="share of the budget the twin trains (0.5)")
    p.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    p.add_argument("--budgets", nargs="+", type=int, default=[20, 10],
                   help="trial-epochs per run, the twin's included, one per dataset (default: digits 20, mnist1d 10)")


def recipe_config(base: Mapping[str, Any], recipe: str, budget: int, twin_fraction: float = 0.5
                  ) -> dict[str, Any] | None:
    """The flat config of one recipe under ``budget`` trial-epochs, or None where it does not apply.

    Recipes with a twin give it ``round(twin_fraction * budget)`` epochs (at least 1) and the binary
    network the rest.

    Example:
        >>> recipe_config({"optimizer": "bop", "epochs": 10}, "distill", 20)["teacher_epochs"]
        10
        >>> recipe_config({"optimizer": "bop", "epochs": 10}, "two_step", 20) is None
        True
    """
    from bnn_tune.config import TWO_STEP_OPTIMIZERS

    cfg = dict(base)
    parts = set(recipe.split("+"))
    if "two_step" in parts:
        if cfg["optimizer"] not in TWO_STEP_OPTIMIZERS:
            return None
        cfg["recipe"] = "two_step"
    twin = parts & {"distill", "init"}
    if twin:
        twin_epochs = min(max(1, round(twin_fraction * budget)), budget - 1)
        cfg.update(epochs=budget - twin_epochs, teacher_epochs=twin_epochs)
        if "distill" in parts:
            cfg["teacher"] = "twin"
        if "init" in parts:
            cfg["init_from"] = "twin"
    else:
        cfg["epochs"] = budget
    return cfg


def summarise(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max of a list of accuracies (NaNs dropped)."""
    vals = [v for v in values if v == v]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def gaps(table: Mapping[str, Mapping[str, Mapping[str, Any]]], twin_median: float) -> dict[str, Any]:
    """Per recipe, the best optimizer's median test accuracy and its gap to the twin (in points).

    Example:
        >>> t = {"bop": {"one_step": {"test": {"median": 0.95}}, "distill": {"test": {"median": 0.97}}}}
        >>> g = gaps(t, 0.99)
        >>> g["best"]["recipe"], round(g["best"]["gap_pp"], 1)
        ('distill', 2.0)
    """
    per_recipe: dict[str, Any] = {}
    for opt, recipes in table.items():
        for recipe, cell in recipes.items():
            med = cell["test"]["median"]
            if med == med and (recipe not in per_recipe or med > per_recipe[recipe]["test_median"]):
                per_recipe[recipe] = {"optimizer": opt, "test_median": med, "gap_pp": 100 * (twin_median - med)}
    best_recipe = max(per_recipe, key=lambda r: per_recipe[r]["test_median"]) if per_recipe else None
    best = {"recipe": best_recipe, **per_recipe[best_recipe]} if best_recipe else {}
    return {"per_recipe": per_recipe, "best": best}


def twin_accuracy(base: Mapping[str, Any], budget: int) -> tuple[float, float]:
    """Test and validation accuracy of the real twin trained for ``budget`` epochs."""
    import torch

    from bnn_tune.config import TrialConfig
    from bnn_tune.recipes import train_twin

    cfg = TrialConfig.from_dict({**base, "optimizer": "latent_adam", "teacher": "twin", "teacher_epochs": budget})
    d = C.data(cfg.dataset)
    model = train_twin(cfg, d)
    with torch.no_grad():
        test = float((model(d.x_test).argmax(1) == d.y_test).float().mean())
        val = float((model(d.x_val).argmax(1) == d.y_val).float().mean())
    return test, val


def run_dataset(ds: str, optimizers: list[str], seeds: list[int], budget: int, *, quick: bool,
                cache_dir: str, twin_fraction: float = 0.5, recipes: list[str] = RECIPES) -> dict[str, Any]:
    from bnn_tune.search_spaces import presets

    table: dict[str, dict[str, Any]] = {}
    twin_tests, twin_vals = [], []
    common = {"dataset": ds, "model": "mlp", "width": 0.5, "batch_size": 64}
    if quick:
        common["max_steps_per_epoch"] = 3
    for seed in seeds:
        t, v = twin_accuracy({**common, "seed": seed}, budget)
        twin_tests.append(t)
        twin_vals.append(v)
    for opt in optimizers:
        preset = presets.get(opt, ds).as_config()
        table[opt] = {}
        for recipe in recipes:
            runs = []
            for seed in seeds:
                base = {**preset, **common, "seed": seed, "teacher_cache_dir": cache_dir}
                cfg = recipe_config(base, recipe, budget, twin_fraction)
                if cfg is None:
                    break
                r = C.train(cfg)
                runs.append({"seed": seed, "test_acc": r["test_acc"], "final_val_acc": r["final_val_acc"],
                             "status": r["status"], "wall_s": r["wall_s"]})
            if not runs:
                continue
            table[opt][recipe] = {"test": summarise(r["test_acc"] for r in runs),
                                  "val": summarise(r["final_val_acc"] for r in runs), "runs": runs}
            cell = table[opt][recipe]["test"]
            print(f"  {ds:8s} {opt:12s} {recipe:22s} test median {cell['median']:.4f} "
                  f"[{cell['min']:.4f}, {cell['max']:.4f}]", flush=True)
    twin = {"test": summarise(twin_tests), "val": summarise(twin_vals), "test_runs": twin_tests}
    return {"twin": twin, "table": table, "gaps": gaps(table, twin["test"]["median"])}


def markdown(res: Mapping[str, Any], optimizers: list[str]) -> str:
    """One dataset's table for BENCHMARKS.md: median [min, max] test accuracy in %, per optimizer and recipe."""
    recipes = [r for r in RECIPES if any(r in res["table"].get(o, {}) for o in optimizers)]
    lines = ["| optimizer | " + " | ".join(f"`{r}`" for r in recipes) + " |", "|---" * (len(recipes) + 1) + "|"]
    for opt in optimizers:
        cells = []
        for r in recipes:
            s = res["table"].get(opt, {}).get(r, {}).get("test")
            cells.append("—" if s is None else f"{100 * s['median']:.1f} [{100 * s['min']:.1f}, {100 * s['max']:.1f}]")
        lines.append(f"| {opt} | " + " | ".join(cells) + " |")
    t = res["twin"]["test"]
    lines.append(f"| real twin | {100 * t['median']:.1f} [{100 * t['min']:.1f}, {100 * t['max']:.1f}] |"
                 + " |" * (len(recipes) - 1))
    return "\n".join(lines)


def plot(results: Mapping[str, Any], optimizers: list[str]):
    plt = C.plt()
    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.5), squeeze=False)
    width = 0.8 / len(RECIPES)
    for ax, (ds, res) in zip(axes[0], results.items()):
        for k, recipe in enumerate(RECIPES):
            xs, meds, lo, hi = [], [], [], []
            for i, opt in enumerate(optimizers):
                cell = res["table"].get(opt, {}).get(recipe)
                if cell is None:
                    continue
                s = cell["test"]
                xs.append(i + (k - len(RECIPES) / 2 + 0.5) * width)
                meds.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            ax.bar(xs, meds, width, yerr=[lo, hi], capsize=2, label=recipe)
        tw = res["twin"]["test"]["median"]
        ax.axhline(tw, color="k", ls="--", lw=1, label=f"real twin {tw:.3f}")
        ax.axhline(tw - 0.015, color="k", ls=":", lw=1, label="twin - 1.5 pp")
        vals = [c["test"]["min"] for o in res["table"].values() for c in o.values()]
        ax.set_ylim(max(0.0, min(vals) - 0.02), min(1.0, tw + 0.02))
        ax.set_xticks(range(len(optimizers)), optimizers)
        ax.set_title(f"{ds}: test accuracy, median [min, max] over seeds")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.suptitle("Training recipes under one budget of trial-epochs (twin included); shared 2-core CPU")
    return fig


def main() -> None:
    import optuna

    args = C.parse_args(__doc__, _extra)
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("bnn_tune").setLevel(logging.ERROR)
    datasets, optimizers, seeds, budgets = args.datasets, args.optimizers, args.seeds, args.budgets
    if args.quick:
        datasets, optimizers, seeds, budgets = ["digits"], ["bop", "latent_adam"], [0], [4]
    if len(budgets) < len(datasets):
        raise SystemExit(f"error: --budgets needs one value per dataset ({datasets}), but got {budgets}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bnn_tune_recipes_") as cache:
        for ds, budget in zip(datasets, budgets):
            results[ds] = run_dataset(ds, optimizers, seeds, budget, quick=args.quick, cache_dir=cache,
                                      twin_fraction=args.twin_fraction, recipes=args.recipes)
            results[ds]["budget"] = budget
            findings = {d: {"budget": r["budget"], "twin_test_median": r["twin"]["test"]["median"],
                            **r["gaps"]["best"], "baseline_best": r["gaps"]["per_recipe"].get("one_step")}
                        for d, r in results.items()}
            payload = {"settings": {"datasets": datasets, "optimizers": optimizers, "seeds": seeds,
                                    "budgets": dict(zip(datasets, budgets)), "recipes": args.recipes, "twin_fraction": args.twin_fraction, "model": "mlp",
                                    "width": 0.5},
                       "complete": len(results) == len(datasets), "findings": findings, "results": results}
            C.save("recipes", args, payload, plot(results, optimizers), t0)
            print(markdown(results[ds], optimizers), flush=True)


if __name__ == "__main__":
    main()
