"""FlipCounter overhead: training-step time with and without the flip counter attached.

Goal (issue 2): overhead <= 5% of a training step. Interleaves three variants (no counter, the counter
with packed signs counted in C, the counter with bool tensors: ``FlipCounter(packed=False)``) so machine
noise hits all equally; reports medians over repeats.

    python benchmarks/bench_flip_counter.py [--quick] [--out benchmarks/results/flip_counter.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bnn_tune import optim
from bnn_tune.config import TrialConfig
from bnn_tune.metrics import FlipCounter
from bnn_tune.nn import build_model


def step_time(model, opt, x, y, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def bench(name: str, shape: tuple[int, ...], width: float, batch: int, repeats: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, shape, 10, width=width)
    cfg = TrialConfig.from_dict({"model": name, "optimizer": "latent_adam"})
    opt = optim.build(model, cfg)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    counter = FlipCounter(model)  # packed signs, counted in C (where the kernel is built)
    bool_counter = FlipCounter(model, packed=False)  # bool tensors, torch.ge / ne / count_nonzero
    step_time(model, opt, x, y, 3)  # warm-up
    plain, counted, counted_bool = [], [], []
    for _ in range(repeats):
        plain.append(step_time(model, opt, x, y, steps))
        for c, out in ((counter, counted), (bool_counter, counted_bool)):
            c.attach(opt)
            out.append(step_time(model, opt, x, y, steps))
            c.detach()
    p, c, cb = statistics.median(plain), statistics.median(counted), statistics.median(counted_bool)
    alone = {name: statistics.median(counter_alone(k, steps) for _ in range(repeats))
             for name, k in (("packed", counter), ("bool", bool_counter))}
    n_binary = sum(counter.sizes)
    return {"model": name, "input_shape": list(shape), "width": width, "batch": batch, "binary_weights": n_binary,
            "step_ms": p * 1e3, "step_ms_with_counter": c * 1e3, "overhead": c / p - 1,
            "packed": any(counter._packed), "step_ms_with_bool_counter": cb * 1e3, "overhead_bool": cb / p - 1,
            "counter_us": alone["packed"] * 1e6, "bool_counter_us": alone["bool"] * 1e6}


def counter_alone(counter: FlipCounter, steps: int) -> float:
    """Seconds per step of the counter's own hooks (signs before, count after), no training around them."""
    counter.before_step()
    counter.after_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        counter.before_step()
        counter.after_step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke run)")
    ap.add_argument("--out", default=None,
                    help="JSON path (default benchmarks/results/flip_counter.json, quick runs: results/quick/)")
    args = ap.parse_args()
    if args.out is None:  # a smoke run never overwrites the recorded figures
        args.out = "benchmarks/results/quick/flip_counter.json" if args.quick else "benchmarks/results/flip_counter.json"
    repeats, steps = (3, 5) if args.quick else (15, 20)
    cases = [("mlp", (1, 8, 8), 1.0, 64), ("mlp", (40,), 4.0, 128), ("binarynet", (3, 32, 32), 0.25, 64)]
    rows = [bench(*c, repeats=repeats, steps=steps) for c in cases]
    print(f"{'model':10} {'width':>5} {'batch':>5} {'binary w':>9} {'step ms':>8} {'+counter':>9} {'overhead':>9} "
          f"{'+bool':>8} {'overhead':>9} {'counter us':>11} {'bool us':>8}")
    for r in rows:
        print(f"{r['model']:10} {r['width']:5} {r['batch']:5} {r['binary_weights']:9d} {r['step_ms']:8.2f} "
              f"{r['step_ms_with_counter']:9.2f} {100 * r['overhead']:8.1f}% {r['step_ms_with_bool_counter']:8.2f} "
              f"{100 * r['overhead_bool']:8.1f}% {r['counter_us']:11.0f} {r['bool_counter_us']:8.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                               "threads": torch.get_num_threads(), "quick": args.quick, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
