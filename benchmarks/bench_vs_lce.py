"""bnn-tune's packed engine against Larq Compute Engine on the same model: BENCHMARKS.md's LCE table (issue 28).

    make bench-vs-lce                      # = the line below, after `make lce-env`
    python benchmarks/bench_vs_lce.py --out benchmarks/results/vs_lce
    python benchmarks/bench_vs_lce.py --quick

binarynet and vgg_small (width 0.5, 3x32x32), batch 1, 8 and 64, 1 and 2 threads, both engines timed in
interleaved rounds on the same inputs (method: :mod:`bnn_tune.bench.lce`). Writes ``vs_lce.json`` (rows, the
versions of both sides, the machine) and ``vs_lce.md`` (the table) under ``--out``. Needs the LCE environment
(``make lce-env``); without it the script says so in one line (exit 2; ``--quick``, CI's smoke run: exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["binarynet", "vgg_small"])
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="binarynet at width 0.25, batch 1, 1 thread, 2 rounds")
    p.add_argument("--out", default="benchmarks/results/vs_lce")
    args = p.parse_args(argv)

    from bnn_tune.bench.lce import compare, machine, markdown_table
    from bnn_tune.export._lce import LceWorker, lce_python

    try:
        python = lce_python()
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 0 if args.quick else 2
    if args.quick:
        args.models, args.width, args.batch, args.threads, args.rounds = ["binarynet"], 0.25, [1], [1], 2
    rows = []
    with LceWorker(python) as worker, tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            rows += compare(model, worker=worker, width=args.width, batch_sizes=args.batch, threads=args.threads,
                            rounds=args.rounds, target_s=0.05 if args.quick else 0.15,
                            default_setting=not args.quick, workdir=tmp)
            print(markdown_table([r for r in rows if r["model"] == model]), flush=True)
        versions = worker.versions
    meta = {"machine": machine(), "lce_versions": versions, "width": args.width, "input_shape": [3, 32, 32],
            "rounds": args.rounds, "weights": "random (bnn_tune.bench.randomize_model); timing does not depend on them"}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vs_lce.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "vs_lce.md"), "w") as f:
        f.write(markdown_table(rows) + "\n")
    print(f"wrote {os.path.join(args.out, 'vs_lce.json')} and vs_lce.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
