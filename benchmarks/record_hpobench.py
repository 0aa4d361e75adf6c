"""Re-record one task of the BNN tabular benchmark (bnn_tune.hpobench) into the package's data folder.

    python benchmarks/record_hpobench.py --task bop_digits [--workers 2] [--out bnn_tune/hpobench/data]

Each grid point x training seed is trained on CPU with one torch thread per worker process; the output
``<task>.npz`` holds the curves and, in its ``meta`` entry, this command, the date, the machine and the
wall time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnn_tune.hpobench.record import record_task  # noqa: E402
from bnn_tune.hpobench.tasks import TASKS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=None, choices=sorted(TASKS), help="task to record (required unless --quick)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bnn_tune" / "hpobench" / "data"))
    p.add_argument("--limit", type=int, default=None, help="only the first N grid points (a quick check)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (CI): the first 2 grid points of --task (default bop_digits), 1 worker")
    a = p.parse_args()
    if a.quick:
        a.task, a.limit, a.workers = a.task or "bop_digits", a.limit or 2, 1
    elif a.task is None:
        p.error("--task is required (one of: " + ", ".join(sorted(TASKS)) + ")")
    path = record_task(a.task, a.out, workers=a.workers, limit=a.limit,
                       command=["python", "benchmarks/record_hpobench.py", *sys.argv[1:]])
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
