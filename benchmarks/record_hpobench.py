"""Record one task of the BNN tabular benchmark (bnn_tune.hpobench) into the package's data folder.

    python benchmarks/record_hpobench.py --task bop_digits [--workers 2] [--out bnn_tune/hpobench/data]
    python benchmarks/record_hpobench.py --task bop_conv_mnist5k --shard 1/2    # a piece that fits a session
    python benchmarks/record_hpobench.py --task bop_conv_mnist5k --shard 2/2    # resumes if interrupted
    python benchmarks/record_hpobench.py --task bop_conv_mnist5k --merge        # -> <out>/<task>.npz
    python benchmarks/record_hpobench.py --list                                 # tasks, cost, status

Each grid point x training seed is trained on CPU with one torch thread per worker process; the output
``<task>.npz`` holds the curves and, in its ``meta`` entry, the commands, dates, machine and wall time. A
shard writes ``<out>/partial/<task>.shard-<i>-of-<n>.npz`` after every run (commit it when it finishes);
``--merge`` checks that the parts hold every run, writes the table and deletes the parts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnn_tune.hpobench.record import (  # noqa: E402
    PARTIAL_DIR,
    merge_shards,
    parse_shard,
    record_shard,
    record_task,
)
from bnn_tune.hpobench.tasks import TASKS  # noqa: E402


def _list(out: Path) -> None:
    print(f"{'task':28} {'role':8} {'optimizer':11} {'model / dataset':26} {'cells':>5} {'seeds':>5} {'epochs':>6} "
          f"{'trial-ep':>8} {'CPU min':>7}  status")
    for t in TASKS.values():
        parts = sorted((out / PARTIAL_DIR).glob(f"{t.name}.shard-*-of-*.npz"))
        status = "recorded" if (out / f"{t.name}.npz").is_file() else (
            f"{len(parts)} partial file(s)" if parts else "to record")
        cost = f"{t.cost_minutes:7.0f}" if t.cost_minutes is not None else "      ?"
        print(f"{t.name:28} {'held-out' if t.held_out else 'design':8} {t.base['optimizer']:11} "
              f"{t.base['model'] + ' / ' + t.base['dataset']:26} {t.n_configs:5} {len(t.seeds):5} {t.epochs:6} "
              f"{t.trial_epochs:8} {cost}  {status}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=None, choices=sorted(TASKS), help="task to record (required unless --quick)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None,
                   help="folder of the tables (default: the package's bnn_tune/hpobench/data; --quick: a temp dir)")
    p.add_argument("--limit", type=int, default=None, help="only the first N grid points (a quick check)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="record only shard I of N (1-based) into <out>/partial/; resumes an interrupted shard")
    p.add_argument("--merge", action="store_true", help="merge the task's partial files into <out>/<task>.npz")
    p.add_argument("--keep-parts", action="store_true", help="with --merge: keep the partial files")
    p.add_argument("--allow-held-out", action="store_true",
                   help="record a held-out task (only once the default strategy's settings are frozen, issue 25)")
    p.add_argument("--list", action="store_true", help="print the tasks with their cost and recording status")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (CI): the first 2 grid points of --task (default bop_digits), 1 worker, into a "
                        "temporary folder unless --out is given (never over the shipped table)")
    a = p.parse_args()
    if a.out is None:
        a.out = tempfile.mkdtemp(prefix="record_hpobench-") if a.quick else str(ROOT / "bnn_tune" / "hpobench" / "data")
    command = ["python", "benchmarks/record_hpobench.py", *sys.argv[1:]]
    if a.list:
        _list(Path(a.out))
        return 0
    if a.quick:
        a.task, a.limit, a.workers = a.task or "bop_digits", a.limit or 2, 1
    elif a.task is None:
        p.error("--task is required (one of: " + ", ".join(sorted(TASKS)) + ")")
    if a.merge and a.shard:
        p.error("--merge and --shard are separate steps: record every shard, then --merge")
    try:
        if a.merge:
            path = merge_shards(a.task, a.out, keep_parts=a.keep_parts, command=command)
        elif a.shard:
            i, n = parse_shard(a.shard)
            t0 = time.time()

            def progress(done: int, total: int, secs: float) -> None:
                print(f"{a.task} shard {i}/{n}: run {done}/{total} ({secs:.1f} s), {time.time() - t0:.0f} s", flush=True)

            path = record_shard(a.task, a.out, shard=(i, n), workers=a.workers, limit=a.limit, command=command,
                                allow_held_out=a.allow_held_out, on_run=progress)
        else:
            path = record_task(a.task, a.out, workers=a.workers, limit=a.limit, command=command,
                               allow_held_out=a.allow_held_out)
    except ValueError as exc:
        print(f"record_hpobench.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
