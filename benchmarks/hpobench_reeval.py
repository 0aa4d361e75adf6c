"""Winner's curse check on the BNN-HPO v2 replays (issue 25): the incumbent chosen on one training seed's val,
against re-evaluating the top-k cells on one more training seed (k more trainings, taken out of the same
budget) and shipping the cell with the best mean of its seeds seen.

Reads the trial logs that ``hpobench_eval.py --logs DIR`` keeps (``hpobench_v2_<task>.logs.json.gz``; each
trial is ``[epochs charged, cell, final val or null]``); the extra seed of a cell is a recorded training seed
that its trials have not shown yet (the one whose final val is not among its seen values). At budget B the
re-evaluating study stops sampling at B - k trainings. Scored as the protocol scores it: at the target when
the shipped cell's mean final val over all training seeds is within 0.5 pp of the best cell's mean.

    python benchmarks/hpobench_reeval.py --logs /tmp/hpo_v2/logs   # -> benchmarks/results/hpobench_reeval.json
    python benchmarks/hpobench_reeval.py --quick --out DIR          # smoke run (CI): replays bop_digits, 2 seeds
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnn_tune.hpobench import tasks  # noqa: E402
from bnn_tune.hpobench.table import load  # noqa: E402
from bnn_tune.hpobench.tasks import get_task  # noqa: E402


def shipped_cell(trials: list, fin: np.ndarray, *, limit: float, k: int) -> int | None:
    """The cell a study ships after spending at most ``limit`` trial-epochs, re-evaluating its top ``k`` cells
    (by best single-seed val) on one unseen training seed each (``k = 0``: the best single-seed val)."""
    spent, seen, first_best = 0.0, {}, {}
    for i, (e, cell, val) in enumerate(trials):
        if spent + e > limit + 1e-9:
            break
        spent += e
        if val is not None:
            c = int(cell)
            seen.setdefault(c, []).append(float(val))
            if c not in first_best or float(val) > first_best[c][0]:
                first_best[c] = (float(val), -i)  # ties go to the earlier trial, as the protocol's incumbent
    if not seen:
        return None
    ranked = sorted(first_best, key=lambda c: first_best[c], reverse=True)
    if k == 0:
        return ranked[0]
    scores = {}
    for c in ranked[:k]:
        used = {int(np.argmin(np.abs(fin[c] - v))) for v in seen[c]}
        fresh = [s for s in range(fin.shape[1]) if s not in used]
        scores[c] = float(np.mean(seen[c] + ([float(fin[c, fresh[0]])] if fresh else [])))
    return max(scores, key=lambda c: scores[c])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", default=None, help="the --logs folder of hpobench_eval.py (required unless --quick)")
    ap.add_argument("--contenders", default="flip+hyperband,none")
    ap.add_argument("--budgets", default="10,20,40")
    ap.add_argument("--k", default="0,2,3", help="cells re-evaluated (0: no re-evaluation)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for hpobench_reeval.json")
    ap.add_argument("--quick", action="store_true", help="smoke run: replay bop_digits on 2 seeds to 3E")
    a = ap.parse_args(argv)
    if a.quick:
        a.budgets, a.k = "2,3", "0,1"
    elif not a.logs:
        ap.error("--logs is required (the folder hpobench_eval.py --logs wrote)")
    try:
        budgets, ks = [float(b) for b in a.budgets.split(",")], [int(k) for k in a.k.split(",")]
    except ValueError:
        ap.error(f"--budgets takes numbers and --k whole numbers, comma-separated, but got --budgets {a.budgets!r} "
                 f"--k {a.k!r}")
    if min(ks) < 0 or min(budgets) <= max(ks):
        ap.error(f"every budget must exceed every k (re-evaluations come out of the budget) and k >= 0, but got "
                 f"--budgets {a.budgets} --k {a.k}")
    result: dict[str, dict[str, float]] = {}
    names = a.contenders.split(",")
    for t in (["bop_digits"] if a.quick else [t for t in tasks() if get_task(t).superseded_by is None]):
        path = Path(a.logs or ".") / f"hpobench_v2_{t}.logs.json.gz"
        if a.quick:
            from bnn_tune.hpobench.protocol import replay_logs

            logs = replay_logs(t, [0, 1], names=names, budget=max(budgets))
        elif path.is_file():
            logs = json.loads(gzip.decompress(path.read_bytes()))
        else:
            print(f"{t}: no logs in {a.logs}, skipped", file=sys.stderr)
            continue
        missing = [n for n in names if n not in logs]
        if missing:
            ap.error(f"no contender {missing[0]!r} in the logs of {t} (they hold {sorted(logs)}); pass --contenders")
        tab = load(t)
        fin = tab.curves["val_acc"][..., -1]
        mean = fin.mean(axis=1)
        target = mean >= mean.max() - 0.005
        epochs = tab.curves["val_acc"].shape[-1]
        row = {}
        for name in names:
            for b in budgets:
                for k in ks:
                    cells = [shipped_cell(s["trials"], fin, limit=(b - k) * epochs, k=k) for s in logs[name]]
                    row[f"{name} {b:g}E k={k}"] = round(float(np.mean([c is not None and target[c] for c in cells])), 2)
        result[t] = row
        print(t, " ".join(f"{key}: {v:.0%}" for key, v in row.items()), flush=True)
    if not result:
        ap.error(f"no hpobench_v2_<task>.logs.json.gz in {a.logs}: run benchmarks/hpobench_eval.py --logs {a.logs} first")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/hpobench_reeval.py " + " ".join(sys.argv[1:])
    (Path(a.out) / "hpobench_reeval.json").write_text(json.dumps({"command": command, "shares": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
