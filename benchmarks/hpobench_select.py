"""Issue 25: choose the default strategy leave one task out, and ablate its rules, from the BNN-HPO v2 figures.

Reads the per-task JSONs that ``hpobench_eval.py`` wrote (``--out``, default ``benchmarks/results``) and prints
two tables (also written as ``hpobench_v2_selection.md`` / ``.json`` in ``--out``):

1. **Selection.** For every task, the candidate chosen on the *other* tasks by a safety-first rule: fewest
   paired losses against TPE without pruning (``none``) over the budgets, then most paired wins, then the
   highest mean share at the target; and how that choice does on the task left out (share and verdict
   against ``none`` at every budget). The rule puts "never below no pruning" (issue 25, item 3) before
   the mean share, which alone would pick the candidate with the largest wins whatever it loses elsewhere.
2. **Ablation.** The default against each variant with one of its rules turned off (paired difference in share
   at the target, default minus variant, per task and budget; wins / ties / losses of the default).
3. **Rank consistency** of the recorded tables, the evidence behind the rank gate: over every recorded run
   that did not freeze in its first epoch, Spearman's rank correlation of val accuracy after epoch 1, 3 and 9
   with the final val accuracy, and the share of the best 10% of runs (by final val) that a top-third cut at
   that epoch would keep.

    python benchmarks/hpobench_select.py [--out benchmarks/results] [--budgets 5,10,20]

The candidates' replays come from ``hpobench_eval.py --contenders ...`` (see BENCHMARKS.md "BNN-HPO").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnn_tune.hpobench.evaluate import paired_share_difference, verdict  # noqa: E402
from bnn_tune.hpobench.protocol import ABLATIONS, CANDIDATES, DEFAULT  # noqa: E402

MARK = {"wins": "+", "ties": "=", "loses": "-"}


def load(out: Path) -> dict[str, dict]:
    docs = {}
    for p in sorted(out.glob("hpobench_v2_*.json")):
        if p.stem.endswith(("summary", "selection")):
            continue
        doc = json.loads(p.read_text())
        if not doc.get("held_out"):
            docs[doc["task"]] = doc
    return docs


def bits(doc: dict, name: str, b: str) -> list[bool]:
    return [c == "1" for c in doc["contenders"][name]["per_seed"][b]["at_target"]]


def verdicts(docs: dict, names: list[str], budgets: list[str], n_boot: int) -> dict[tuple[str, str, str], tuple[str, float]]:
    """``(task, name, budget) -> (verdict against none, share at the target)``, each paired bootstrap run once."""
    return {(t, n, b): (verdict(paired_share_difference(bits(docs[t], n, b), bits(docs[t], "none", b), n_boot=n_boot)),
                        float(np.mean(bits(docs[t], n, b))))
            for t in docs for n in names for b in budgets}


def rule_key(table: dict, name: str, tasks: list[str], budgets: list[str]) -> tuple[int, int, float]:
    """The selection rule's sort key over ``tasks`` x ``budgets``: (losses to none, -wins, -mean share)."""
    cells = [table[(t, name, b)] for t in tasks for b in budgets]
    return (sum(v == "loses" for v, _ in cells), -sum(v == "wins" for v, _ in cells),
            -float(np.mean([s for _, s in cells])))


def rank_consistency(task: str, rungs: tuple[int, ...] = (1, 3, 9)) -> dict[int, tuple[float, float]]:
    """``{epoch: (Spearman of val at that epoch vs final val, share of the top-10% runs a top-third cut keeps)}``
    over every run of ``task``'s table whose sub-epoch flip rate rose above e^-8 in its first epoch."""
    import math

    from bnn_tune.hpobench.table import load as load_table
    from bnn_tune.plugins._flip_sh import spearman

    tb = load_table(task)
    val, sub = tb.curves["val_acc"], tb.curves["sub_flip_rate"]
    frozen = np.all(sub[:, :, :tb.sub_epoch_points] <= math.exp(-8), axis=2)
    keep = ~frozen & np.isfinite(val[:, :, -1])
    out = {}
    for r in rungs:
        if r >= tb.epochs:
            continue
        x, y = val[:, :, r - 1][keep], val[:, :, -1][keep]
        top = y >= np.quantile(y, 0.9)
        kept = x >= np.quantile(x, 2 / 3)
        rho = spearman(x.tolist(), y.tolist())  # None: no spread (0.0 is a value, not a missing one)
        out[r] = (math.nan if rho is None else float(rho), float(np.mean(kept[top])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--budgets", default=None, help="budgets (E) the selection rule counts (default: every budget the "
                    "figures have, 5,10,20,40 in the recorded ones)")
    ap.add_argument("--n-boot", type=int, default=2000, dest="n_boot")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 resamples")
    a = ap.parse_args()
    if a.quick:
        a.n_boot = 200
    out = Path(a.out)
    docs = load(out)
    cands = [c for c in CANDIDATES if docs and all(c in d["contenders"] for d in docs.values())]
    if len(docs) < 2 or not cands or not all("none" in d["contenders"] for d in docs.values()):
        print(f"error: {out} needs the figures of >= 2 design tasks with 'none' and the candidates {list(CANDIDATES)} "
              f"(python benchmarks/hpobench_eval.py --contenders ...)", file=sys.stderr)
        return 2
    tasks = sorted(docs)
    all_b = [b for b in docs[tasks[0]]["contenders"]["none"]["per_seed"]]
    try:
        budgets = all_b if a.budgets is None else [f"{float(b):g}" for b in a.budgets.split(",")]
    except ValueError:
        budgets = [a.budgets]
    if not set(budgets) <= set(all_b):
        print(f"error: --budgets {a.budgets} not among the figures' budgets {all_b}", file=sys.stderr)
        return 2
    lines = ["#### Choosing the default leave one task out (safety first: fewest losses to no pruning, then most "
             "wins, then mean share)", "",
             "| left out | chosen on the other tasks | " + " | ".join(f"{b}E" for b in all_b) + " |",
             "|---|---|" + "---|" * len(all_b)]
    table = verdicts(docs, cands, budgets, a.n_boot)
    result: dict = {"budgets": budgets, "candidates": cands, "selection": {}, "ablation": {}}
    for t in tasks:
        others = [u for u in tasks if u != t]
        ranked = sorted(cands, key=lambda c: rule_key(table, c, others, budgets))
        pick = ranked[0]
        cells = []
        for b in all_b:
            diff = paired_share_difference(bits(docs[t], pick, b), bits(docs[t], "none", b), n_boot=a.n_boot)
            share = np.mean(bits(docs[t], pick, b))
            cells.append(f"{100 * share:.0f}% vs {100 * np.mean(bits(docs[t], 'none', b)):.0f}% "
                         f"({100 * diff[0]:+.0f} [{100 * diff[1]:+.0f}, {100 * diff[2]:+.0f}]) **{verdict(diff)}**")
        result["selection"][t] = {"chosen": pick, "verdicts": cells}
        lines.append(f"| {t} | {pick} | " + " | ".join(cells) + " |")
    full = sorted(cands, key=lambda c: rule_key(table, c, tasks, budgets))
    result["chosen_on_all_tasks"] = full[0]
    lines += ["", f"On all {len(tasks)} tasks the rule picks **{full[0]}**; every candidate (losses / wins against no "
              "pruning over the budgets, mean share at the target):", ""]
    for c in full:
        lo, wi, ms = (abs(x) for x in rule_key(table, c, tasks, budgets))
        lines.append(f"- {c}: {lo} losses, {wi} wins, mean share {100 * ms:.1f}%")
    default = DEFAULT if all(DEFAULT in d["contenders"] for d in docs.values()) else None
    abl = [v for v in ABLATIONS if default and all(v in d["contenders"] for d in docs.values())]
    if abl:
        lines += ["", f"#### Ablation: {default} minus the variant with one rule off (paired difference in share at "
                  "the target, 95% CI; + default wins, = ties, - default loses)", "",
                  "| rule off (variant) | " + " | ".join(tasks) + " | wins / ties / losses | mean diff |",
                  "|---|" + "---|" * (len(tasks) + 2)]
        for v in abl:
            row, diffs, count = [], [], {"wins": 0, "ties": 0, "loses": 0}
            for t in tasks:
                marks = ""
                for b in all_b:
                    diff = paired_share_difference(bits(docs[t], default, b), bits(docs[t], v, b), n_boot=a.n_boot)
                    count[verdict(diff)] += 1
                    marks += MARK[verdict(diff)]
                    diffs.append(diff[0])
                row.append(marks)
            result["ablation"][v] = {"rule_off": ABLATIONS[v], "per_task": dict(zip(tasks, row)), **count,
                                     "mean_diff": float(np.mean(diffs))}
            lines.append(f"| {ABLATIONS[v]} ({v}) | " + " | ".join(row) +
                         f" | {count['wins']} / {count['ties']} / {count['loses']} | {100 * np.mean(diffs):+.1f} pp |")
        lines.append("")
        lines.append("Each cell: the verdict at " + ", ".join(f"{b}E" for b in all_b) + ".")
    lines += ["", "#### Rank consistency of the design tables (runs that did not freeze in their first epoch)", "",
              "| task | epoch 1: Spearman / top-10% kept by a top-third cut | epoch 3 | epoch 9 |", "|---|---|---|---|"]
    for t in tasks:
        rc = rank_consistency(t)
        result.setdefault("rank_consistency", {})[t] = {str(k): v for k, v in rc.items()}
        lines.append(f"| {t} | " + " | ".join(f"{rc[r][0]:.2f} / {100 * rc[r][1]:.0f}%" if r in rc else "-"
                                               for r in (1, 3, 9)) + " |")
    text = "\n".join(lines) + "\n"
    (out / "hpobench_v2_selection.md").write_text(text)
    (out / "hpobench_v2_selection.json").write_text(json.dumps(result, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
