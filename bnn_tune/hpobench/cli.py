"""``bnn-tune hpobench``: replay searches on a recorded task and print their figures.

With ``--budgets 5,10,20,40`` (the BNN-HPO v2 protocol) every study spends the largest budget of trial-epochs
(in units of E = one full training, no trial cap) and is scored after each budget: the share of studies whose
incumbent is a target cell and the incumbent's normalized val / test regret, with bootstrap 95% intervals.
Without it, the v1 fixed-trial figures: medians with IQR of trials / trial-epochs to the target."""

from __future__ import annotations

import argparse
import json

from ..cli import register_command

__all__: list[str] = []


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="recorded task (see bnn_tune.hpobench.tasks())")
    p.add_argument("--pruner", default="asha,flip+gated-asha,flip+hyperband",
                   help="pruner name(s), comma-separated: none, median, asha, hyperband, flip, flip+asha, "
                        "flip+gated-asha (bnn-tune search's default), flip+hyperband, flip+median, flip-or+asha, the "
                        "research baselines asha-m{1,2,3}-rf{2,3}, patient2+asha, and issue 25's candidates "
                        "(bnn_tune.hpobench.protocol.RESEARCH) (default: asha,flip+gated-asha,flip+hyperband)")
    p.add_argument("--space", default="reinterpreted", help="reinterpreted or naive (default reinterpreted)")
    p.add_argument("--sampler", default="tpe", help="tpe, random or qmc (default tpe)")
    p.add_argument("--seeds", default="0-9", help="sampler seeds, e.g. 0-49 or 1000-1039 (default 0-9)")
    p.add_argument("--n-trials", type=int, default=None, dest="n_trials", help="trials per search (default 60)")
    p.add_argument("--budgets", default=None,
                   help="equal-budget protocol: budgets in E = one full training, e.g. 5,10,20,40 (no trial cap)")
    p.add_argument("--json", action="store_true", help="print the aggregates as JSON")


def _fmt(q: tuple[float, float, float], digits: int) -> str:
    def one(x: float) -> str:
        return "never" if x == float("inf") else f"{x:.{digits}f}"
    return f"{one(q[0])} [{one(q[1])}, {one(q[2])}]"


def _run(args: argparse.Namespace) -> int:
    import sys

    from . import tasks
    from .evaluate import aggregate, parse_seeds, run_many

    known = tasks()
    if args.task not in known:
        print(f"bnn-tune hpobench: error: unknown task {args.task!r}; recorded tasks: {known}", file=sys.stderr)
        return 2
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        print(f"bnn-tune hpobench: error: {exc}", file=sys.stderr)
        return 2
    from ._replay import PRUNERS, SPACES

    pruners = [p.strip() for p in args.pruner.split(",") if p.strip()]
    bad = [p for p in pruners if p not in PRUNERS]
    if bad or not pruners:
        print(f"bnn-tune hpobench: error: unknown pruner {bad[0] if bad else args.pruner!r}; "
              f"choose from {list(PRUNERS)}", file=sys.stderr)
        return 2
    if args.space not in SPACES:
        print(f"bnn-tune hpobench: error: unknown space {args.space!r}; choose from {list(SPACES)}", file=sys.stderr)
        return 2
    if args.sampler not in ("tpe", "random", "qmc"):
        print(f"bnn-tune hpobench: error: unknown sampler {args.sampler!r}; choose from ['tpe', 'random', 'qmc']",
              file=sys.stderr)
        return 2
    if args.n_trials is not None and args.n_trials < 1:
        print(f"bnn-tune hpobench: error: --n-trials must be >= 1, but got {args.n_trials}", file=sys.stderr)
        return 2
    if args.budgets is not None:
        try:
            budgets = sorted({float(b) for b in args.budgets.split(",")})
            if not budgets or budgets[0] <= 0 or not all(b < float("inf") for b in budgets):
                raise ValueError
        except ValueError:
            print(f"bnn-tune hpobench: error: bad --budgets {args.budgets!r}; use e.g. 5,10,20,40 (numbers > 0)",
                  file=sys.stderr)
            return 2
        if args.n_trials is not None:
            print("bnn-tune hpobench: error: --budgets runs without a trial cap; drop --n-trials", file=sys.stderr)
            return 2
        return _run_budgets(args, pruners, seeds, budgets)
    try:
        rows = {p: aggregate(run_many(args.task, p, seeds, space=args.space, sampler=args.sampler,
                                      n_trials=args.n_trials)) for p in pruners}
    except ValueError as exc:
        print(f"bnn-tune hpobench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"hpobench {args.task}, space={args.space}, sampler={args.sampler}, seeds {args.seeds} "
                    f"(median [25%, 75%])")
    for col in ("pruner", "trials to target", "trial-epochs to target", "trial-epochs total", "best final val",
                "reached", "best config pruned", "stopped by"):
        t.add_column(col, justify="right" if col not in ("pruner", "stopped by") else "left")
    for p, r in rows.items():
        t.add_row(p, _fmt(r["trials_to_target"], 0), _fmt(r["trial_epochs_to_target"], 1),
                  _fmt(r["trial_epochs_total"], 1), _fmt(r["best_final_val_acc"], 4), f"{r['reached']:.0%}",
                  f"{r['best_config_pruned']:.0%}", ", ".join(f"{k} {v}" for k, v in sorted(r["stop_rules"].items())))
    Console(width=200).print(t)
    return 0


def _run_budgets(args: argparse.Namespace, pruners: list[str], seeds: list[int], budgets: list[float]) -> int:
    from . import load
    from ._replay import replay
    from .evaluate import at_budgets, cell_scores, summarize_budgets

    table = load(args.task)
    scores = cell_scores(table)
    rows = {}
    for p in pruners:
        logs = [replay(args.task, pruner=p, space=args.space, sampler=args.sampler, seed=s, budget=max(budgets))
                for s in seeds]
        per_seed = [at_budgets(r["trials"], scores, table.epochs, budgets) for r in logs]
        rows[p] = {f"{b:g}": v for b, v in summarize_budgets(per_seed).items()}
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"hpobench {args.task}, space={args.space}, sampler={args.sampler}, seeds {args.seeds}: "
                    f"incumbent on cell means (value \\[bootstrap 95% CI])")
    for col in ("pruner", "budget", "share at target", "val regret (median)", "test regret (median)"):
        t.add_column(col, justify="left" if col == "pruner" else "right")
    for p, per in rows.items():
        for b, r in per.items():
            t.add_row(p, f"{b}E", *(f"{r[k][0]:.{d}} [{r[k][1]:.{d}}, {r[k][2]:.{d}}]" for k, d in
                                    (("share_at_target", "0%"), ("val_regret", "3f"), ("test_regret", "3f"))))
    Console(width=200).print(t)
    return 0


register_command("hpobench", _add, _run)
