"""Packed 1-bit kernels vs the float twin: the script behind the figures in the README/report.

Runs ``bnn-tune bench`` for each model given (default: vgg_small on 3x32x32 at width 0.25, plus the
4096x4096 layer rows) and each thread count, and writes ``bench.json`` + ``bench.png`` per model under
``--out`` (``<device>_<model>``, with ``_t<threads>`` when ``--threads`` is given).

    python benchmarks/bench_kernels.py                      # CPU, all rows, full repeats
    python benchmarks/bench_kernels.py --device cuda        # GPU: CUDA kernels vs cuBLAS fp16/bf16
    python benchmarks/bench_kernels.py --models mlp vgg_small --quick
    python benchmarks/bench_kernels.py --models binarynet vgg_small --width 0.5 --batch 1 64 \
        --threads 1 2 --out benchmarks/results/engine              # the packed-engine figures

CPU goals (packed engine, issue 15): every binary conv layer >= 8x torch fp32, whole binarynet and
vgg_small >= 3x at batch 1 and 64, the 4096x4096 linear >= 8x. Each large_layer row also times the numpy
backend (``numpy_backend_ms``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bnn_tune.cli import main as cli_main

SHAPES = {"mlp": "1,8,8", "binarynet": "3,32,32", "vgg_small": "3,32,32", "birealnet18": "3,32,32"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--models", nargs="+", default=["vgg_small"])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="CPU threads for both sides, one run per value (default: torch's setting)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: 1 256)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    runs = [(m, t) for t in (args.threads or [None]) for m in args.models]
    for model, threads in runs:
        suffix = f"_t{threads}" if args.threads else ""
        out = os.path.join(args.out, f"{args.device}_{model}{suffix}")
        cmd = ["bench", "--device", args.device, "--model", model, "--input-shape", SHAPES[model],
               "--width", str(args.width), "--out", out]
        if args.quick:
            cmd.append("--quick")
        if threads:
            cmd += ["--threads", str(threads)]
        for b in args.batch or []:
            cmd += ["--batch", str(b)]
        if model != args.models[0]:
            cmd.append("--no-large-layer")
        rc = cli_main(cmd)
        if rc:
            return rc
        res = json.load(open(os.path.join(out, "bench.json")))
        for r in res["rows"]:
            if r["scope"] == "large_layer":
                extra = f", numpy backend {r['numpy_backend_ms']:.3f} ms" if "numpy_backend_ms" in r else ""
                print(f"{r['name']} batch {r['batch']}: packed {r['packed_ms']:.3f} ms, "
                      + ", ".join(f"{b} {v:.3f} ms ({r['speedup'][b]:.1f}x)" for b, v in r["baseline_ms"].items())
                      + extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
