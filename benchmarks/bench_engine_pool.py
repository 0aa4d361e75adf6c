"""Which thread pool the packed engine should split a layer on, measured next to torch (issue 15).

The engine's threads meet torch's OpenMP workers, which keep spinning for a while after each of torch's
parallel calls (a ``PackedModel`` runs its real first/last layers in torch between engine calls, and
``bnn-tune bench`` alternates fp32 and engine calls). This script times binary layers of the shapes in
vgg_small / binarynet at width 0.5 (and the 4096x4096 linear) with both pools in the same run, each
engine call right after a torch fp32 call of the same layer, the pools taking turns call by call:

    fp32, engine on "pthreads", fp32, engine on "persistent", fp32, engine on "openmp", fp32, ...

and, for reference, each pool with no torch call in between (``alone_ms``), and the engine on one
thread. Medians of ``--repeats`` rounds; the fp32 median is shared by the pools. Writes ``pool.json`` under ``--out``.

    python benchmarks/bench_engine_pool.py --threads 2 --out benchmarks/results/engine_pool
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bnn_tune.kernels._engine import (
    DEFAULT_POOL,
    POOLS,
    BinaryChain,
    ChainLayer,
    set_thread_pool,
    thread_pool,
)

# (name, C, H, W, O): 3x3 binary convs (padding 1) at width 0.5 on 3x32x32; then the 4096x4096 linear
CONVS = [("conv 64->64 32x32", 64, 32, 32, 64), ("conv 64->128 16x16", 64, 16, 16, 128),
         ("conv 128->128 16x16", 128, 16, 16, 128), ("conv 128->256 8x8", 128, 8, 8, 256),
         ("conv 256->256 8x8", 256, 8, 8, 256)]


def _rounds(calls: list, repeats: int) -> list[float]:
    """Median ms of each call, the calls taking turns in a fixed order every round."""
    times: list[list[float]] = [[] for _ in calls]
    for r in range(repeats + 3):
        for i, (pool, f) in enumerate(calls):
            if pool is not None:
                set_thread_pool(pool)
            t0 = time.perf_counter()
            f()
            dt = time.perf_counter() - t0
            if r >= 3:  # warm-up rounds
                times[i].append(dt)
    return [float(np.median(t) * 1e3) for t in times]


def _layer(name: str, chains: dict[int, BinaryChain], x: np.ndarray, fp32, threads: int, repeats: int) -> dict:
    n = x.shape[0]
    steps = {}
    for t, chain in chains.items():
        chain.run(x)  # fills the buffers; the timed call is the layer's one C call
        steps[t] = chain.layer_call(0, n)
    step = steps[threads]
    alt = _rounds([c for pool in POOLS for c in ((None, fp32), (pool, step))], repeats)
    alone = _rounds([(pool, step) for pool in POOLS] + [("pthreads", steps[1])], repeats)
    fp = float(np.median(alt[0::2]))
    row = {"name": name, "batch": n, "fp32_ms": fp, "engine_1_thread_ms": alone[-1]}
    for pool, ms, ms_alone in zip(POOLS, alt[1::2], alone):
        row[pool] = {"ms": ms, "x_vs_fp32": fp / ms, "alone_ms": ms_alone}
    print(f"{name:20s} b{n}: fp32 {fp:7.2f} ms, 1 thr {alone[-1]:.3f} | " + " | ".join(
        f"{p} {row[p]['ms']:.3f} {row[p]['x_vs_fp32']:.1f}x (alone {row[p]['alone_ms']:.3f})" for p in POOLS),
        flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch and engine threads (default 2)")
    p.add_argument("--batch", type=int, nargs="+", default=[64])
    p.add_argument("--repeats", type=int, default=31)
    p.add_argument("--out", default="benchmarks/results/engine_pool")
    p.add_argument("--quick", action="store_true", help="batch 8, 3 repeats, two layers (checks the script runs)")
    args = p.parse_args(argv)
    convs = CONVS
    if args.quick:
        args.batch, args.repeats, convs = [8], 3, CONVS[:1]
    if args.threads < 1 or args.repeats < 1:
        p.error(f"--threads and --repeats must be >= 1, but got {args.threads} and {args.repeats}")
    torch.set_num_threads(args.threads)
    if set_thread_pool("openmp") != "openmp":
        p.error("torch's OpenMP runtime was not found in this process: nothing to compare")
    rng = np.random.default_rng(0)
    rows = []
    with torch.no_grad():
        for n in args.batch:
            for name, c, h, w, o in convs:
                layer = ChainLayer("conv", rng.random((o, 3, 3, c)) < 0.5, threshold=rng.integers(-9, 9, o),
                                   padding=(1, 1))
                chains = {t: BinaryChain((c, h, w), [layer], threads=t) for t in {1, args.threads}}
                xt, wt = torch.randn(n, c, h, w), torch.randn(o, c, 3, 3)
                rows.append(_layer(name, chains, rng.standard_normal((n, c, h, w)).astype(np.float32),
                                   lambda xt=xt, wt=wt: F.conv2d(xt, wt, padding=1), args.threads, args.repeats))
            layer = ChainLayer("linear", rng.random((4096, 4096)) < 0.5, threshold=rng.integers(-9, 9, 4096))
            chains = {t: BinaryChain((4096,), [layer], threads=t) for t in {1, args.threads}}
            xt, wt = torch.randn(n, 4096), torch.randn(4096, 4096)
            rows.append(_layer("linear 4096x4096", chains, rng.standard_normal((n, 4096)).astype(np.float32),
                               lambda xt=xt, wt=wt: F.linear(xt, wt), args.threads, args.repeats))
    set_thread_pool(os.environ.get("BNN_TUNE_CPU_POOL", DEFAULT_POOL).lower())
    meta = {"threads": args.threads, "repeats": args.repeats, "quick": args.quick, "torch": torch.__version__,
            "load_avg": list(os.getloadavg()), "pool_after": thread_pool(), "statistic": "median"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out / 'pool.json'} (load average {meta['load_avg']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
