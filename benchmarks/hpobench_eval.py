"""BNN-HPO v2: search strategies and spaces on the recorded BNN tables at equal trial-epoch budgets.

Every contender of :mod:`bnn_tune.hpobench.protocol` (the default ``flip+hyperband``, ``flip+asha``, and the
baselines: no pruning, random search, ASHA min_resource {1,2,3} x reduction_factor {2,3}, Hyperband (TPE's
BOHB-like bracket pairing), median, PatientPruner around ASHA; the naive twin space without pruning) is
replayed on each task once per sampler seed until it has spent the largest budget (no trial cap), and scored
after 5, 10, 20 and 40 E (E = one full training): the share of studies whose incumbent (best single-seed
val) is a target cell on the cells' means over all training seeds, the incumbent's normalized val and test
regret, bootstrap 95% intervals over the seeds, the best baseline per task chosen leave-one-task-out, paired
verdicts, average ranks, anytime curves. Writes ``hpobench_v2_<task>.json`` / ``.png`` per task and
``hpobench_v2_summary.json`` + ``.md`` over every task whose JSON is in ``--out``; tasks can be run in
separate pieces (``--tasks``) and put together with ``--report-only``.

    python benchmarks/hpobench_eval.py [--seeds 3000-3099] [--tasks T1,T2] [--workers 1] [--report-only]

The old fixed 60-trial evaluation (v1, BENCHMARKS.md "BNN-HPO", history) is this file at commit cdca7d0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnn_tune.hpobench import tasks  # noqa: E402
from bnn_tune.hpobench.evaluate import BUDGETS, parse_seeds  # noqa: E402
from bnn_tune.hpobench.protocol import (  # noqa: E402
    CONTENDERS,
    compile_report,
    markdown,
    replay_logs,
    task_figures,
)
from bnn_tune.hpobench.tasks import get_task  # noqa: E402

MAIN = ("flip+hyperband", "none", "random-search", "asha-m1-rf3", "hyperband")


def plot(doc: dict, out: Path) -> None:
    """Anytime curves of one task: share of studies at the target (left) and the incumbent's median test
    regret (right) against the budget; the default and the plain baselines bold, the grid thin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = doc["curve_budgets"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20").colors
    for i, (name, c) in enumerate(doc["contenders"].items()):
        style = ({"lw": 2.5, "color": "k"} if name == "flip+hyperband" else
                 {"lw": 1.8, "color": colors[2 * MAIN.index(name)]} if name in MAIN else
                 {"lw": 0.9, "alpha": 0.8, "ls": "--", "color": colors[(2 * i + 1) % 20]})
        ax.plot(x, c["curve"]["share_at_target"], label=name, **style)
        bx.plot(x, c["curve"]["test_regret_median"], label=name, **style)
    for b in doc["budgets"]:
        ax.axvline(b, color="k", lw=0.5, alpha=0.3)
        bx.axvline(b, color="k", lw=0.5, alpha=0.3)
    ax.set(xlabel="budget (E = one full training of trial-epochs)", ylabel="share of studies at the target",
           title=f"{doc['task']}: incumbent is a target cell", ylim=(0, 1.02))
    bx.set(xlabel="budget (E)", ylabel="incumbent's normalized test regret (median)",
           title=f"{doc['task']}: test regret")
    bx.set_ylim(0, 0.5)
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="3000-3099", help="sampler seeds (default 3000-3099: never used for tuning)")
    ap.add_argument("--tasks", default=None, help="comma-separated tasks to replay (default: all recorded)")
    ap.add_argument("--contenders", default=None, help=f"comma-separated subset of {list(CONTENDERS)}")
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS), help="budgets in E (default 5,10,20,40)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--n-boot", type=int, default=2000, dest="n_boot", help="bootstrap resamples (default 2000)")
    ap.add_argument("--logs", default=None, help="folder to keep the replays' trial logs in (gzip JSON)")
    ap.add_argument("--from-logs", action="store_true", dest="from_logs",
                    help="recompute a task's figures from its --logs file instead of replaying (if present)")
    ap.add_argument("--report-only", action="store_true", help="only put together the task JSONs already in --out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true", help="smoke run (CI): seeds 0-1, budgets 1,2, 200 resamples")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.budgets, a.n_boot = "0-1", "1,2", 200
    seeds = parse_seeds(a.seeds)
    budgets = [float(b) for b in a.budgets.split(",")]
    names = a.contenders.split(",") if a.contenders else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # a superseded v1 table (its grid lies outside the space) stays in the history, not in the v2 figures
    current = [t for t in tasks() if get_task(t).superseded_by is None]
    run = [] if a.report_only else (a.tasks.split(",") if a.tasks else current)
    for t in run:
        t0 = time.time()
        cache = Path(a.logs) / f"hpobench_v2_{t}.logs.json.gz" if a.logs else None
        if a.from_logs and cache is not None and cache.is_file():
            logs = json.loads(gzip.decompress(cache.read_bytes()))
            missing = [n for n in (names or CONTENDERS) if n not in logs]
            if missing:  # replay only the contenders the cached logs lack, and keep them too
                logs.update(replay_logs(t, seeds, names=missing, budget=max(budgets), workers=a.workers))
                cache.write_bytes(gzip.compress(json.dumps(logs, separators=(",", ":")).encode()))
        else:
            logs = replay_logs(t, seeds, names=names, budget=max(budgets), workers=a.workers)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(gzip.compress(json.dumps(logs, separators=(",", ":")).encode()))
        doc = task_figures(t, logs, seeds, budgets=budgets, n_boot=a.n_boot)
        doc["wall_seconds"] = round(time.time() - t0, 1)
        doc["command"] = "python benchmarks/hpobench_eval.py " + " ".join(sys.argv[1:])
        (out / f"hpobench_v2_{t}.json").write_text(json.dumps(doc, separators=(",", ":")))
        plot(doc, out / f"hpobench_v2_{t}.png")
        print(f"{t}: {len(doc['contenders'])} contenders x {len(seeds)} seeds in {doc['wall_seconds']} s", flush=True)
    docs = {}
    for t in current:
        p = out / f"hpobench_v2_{t}.json"
        if p.is_file():
            docs[t] = json.loads(p.read_text())
            if a.report_only:
                plot(docs[t], out / f"hpobench_v2_{t}.png")
    if not docs:
        print(f"no hpobench_v2_<task>.json in {out}: nothing to report")
        return 0
    report = compile_report(docs, n_boot=a.n_boot)
    (out / "hpobench_v2_summary.json").write_text(json.dumps(report, indent=1))
    text = markdown(docs, report)
    (out / "hpobench_v2_summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
