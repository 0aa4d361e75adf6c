"""Packed 1-bit kernels vs the float twin: the script behind the figures in the README/report.

Runs ``bnn-tune bench`` for each model given (default: vgg_small on 3x32x32 at width 0.25, plus the
4096x4096 layer rows) and writes ``bench.json`` + ``bench.png`` per model under ``--out``.

    python benchmarks/bench_kernels.py                      # CPU, all rows, full repeats
    python benchmarks/bench_kernels.py --device cuda        # GPU: CUDA kernels vs cuBLAS fp16/bf16
    python benchmarks/bench_kernels.py --models mlp vgg_small --quick

CPU goal recorded in bench.json (large_layer, batch 1): >= 8x torch fp32. Each large_layer row also
times the numpy backend (``numpy_backend_ms``) to show whether the compiled C kernel pays off.
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
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both sides (default: torch's)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    for i, model in enumerate(args.models):
        out = os.path.join(args.out, f"{args.device}_{model}")
        cmd = ["bench", "--device", args.device, "--model", model, "--input-shape", SHAPES[model],
               "--width", str(args.width), "--out", out]
        if args.quick:
            cmd.append("--quick")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if i > 0:
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
