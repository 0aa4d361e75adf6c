"""BMD's forward weight: ``torch.tanh(w * beta)`` against the C tanh (``bnn_tune.kernels._tanh.scaled_tanh``).

Times both on float32 weights (median of ``--repeats`` calls, 1 and 2 threads) and counts where each differs
from the float64 tanh rounded to float32 (the correctly rounded value, up to numpy's float64 tanh).

    python benchmarks/bench_tanh.py [--quick] [--sizes 65536 2097152] [--threads 1 2] [--repeats 30] [--out FILE]

Writes ``benchmarks/results/tanh.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bnn_tune.kernels._tanh import scaled_tanh, tanh_kernel_available

RESULTS = Path(__file__).resolve().parent / "results"


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budget (CI): small sizes, 5 repeats")
    p.add_argument("--sizes", nargs="*", type=int, default=[65536, 2_097_152])
    p.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--out", default=None, help="JSON file (default results/tanh.json, --quick: results/quick/)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [65536, 262144], 5
    if args.out is None:
        args.out = str(RESULTS / ("quick" if args.quick else "") / "tanh.json")
    if not tanh_kernel_available():
        print("error: the C tanh is not available (no C compiler, or BNN_TUNE_CPU_KERNEL=numpy)", file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in args.sizes:
        w = torch.randn(n, generator=g) * 0.5  # latent weights of a trained BMD layer are O(1)
        beta = torch.tensor(args.beta)
        for threads in args.threads:
            torch.set_num_threads(threads)
            t_torch = _median_ms(lambda w=w, beta=beta: torch.tanh(w * beta), args.repeats)
            t_c = _median_ms(lambda w=w: scaled_tanh(w, args.beta), args.repeats)
            rows.append({"n": n, "threads": threads, "torch_ms": t_torch, "c_ms": t_c, "speedup": t_torch / t_c})
    x = torch.randn(200_000 if args.quick else 2_000_000, generator=g) * 2
    ref = torch.from_numpy(np.tanh(x.numpy().astype(np.float64)).astype(np.float32))
    accuracy = {"elements": x.numel(), "torch_differs_from_rounded_float64": int((torch.tanh(x) != ref).sum()),
                "c_differs_from_rounded_float64": int((scaled_tanh(x, 1.0) != ref).sum())}
    doc = {"machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                       "capability": torch.backends.cpu.get_cpu_capability(), "mkl": torch.backends.mkl.is_available()},
           "rows": rows, "accuracy": accuracy}
    out = Path(args.out)
    if out.is_dir():  # a results directory, as run_all hands some scripts
        out = out / "tanh.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print("| elements | threads | torch.tanh(w * beta) ms | C tanh ms | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['threads']} | {r['torch_ms']:.3f} | {r['c_ms']:.3f} | {r['speedup']:.1f}x |")
    print(f"\nof {accuracy['elements']} N(0, 4) inputs, torch.tanh differs from the rounded float64 tanh at "
          f"{accuracy['torch_differs_from_rounded_float64']}, the C tanh at {accuracy['c_differs_from_rounded_float64']}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
