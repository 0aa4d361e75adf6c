"""Binary training step vs its real-valued twin (every optimizer), step split, trial start-up time.

Goal (issue 14): a binary step (Trainer.train_step: forward, backward, binary optimizer + Adam, flip
counting) costs <= 1.3x the real twin (same architecture, real weights, Adam) on the convnets and <= 1.5x
on the MLPs, worst case over the rows, CPU, measured in the same run; a warm trial (reused worker)
reaches the end of its first step in < 1 s. The logic is in ``bnn_tune.bench.train_step``.

    python benchmarks/bench_train_step.py [--quick] [--out FILE] [--models mlp:1,binarynet:0.25 ...]
        [--batch-sizes 64 256] [--threads 1 2] [--optimizers bop ...] [--steps 15] [--make-run]

Writes ``benchmarks/results/train_step[_quick].json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from bnn_tune import optim
from bnn_tune.bench import train_step as tb

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = {"mlp": 1.5, "conv": 1.3}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budget (CI): two models, one batch size and thread")
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--models", nargs="*", default=None, help="model:width entries (default: the issue's five)")
    p.add_argument("--batch-sizes", nargs="*", type=int, default=[64, 256])
    p.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    p.add_argument("--optimizers", nargs="*", default=None, help="default: every registered optimizer")
    p.add_argument("--steps", type=int, default=15, help="timed steps per row (after 3 warm-up steps)")
    p.add_argument("--make-run", action="store_true", help="also time `make run`'s search (trials/minute)")
    args = p.parse_args(argv)
    cases = [(m.split(":")[0], float(m.split(":")[1])) for m in args.models] if args.models else tb.DEFAULT_CASES
    optimizers = args.optimizers or optim.list_optimizers()
    batches, threads, steps, warmup = args.batch_sizes, args.threads, args.steps, 3
    if args.quick:
        cases, batches, threads, steps, warmup = [("mlp", 1.0), ("binarynet", 0.125)], [64], [1], 3, 1
        optimizers = args.optimizers or ["bop", "latent_adam"]
    rows, splits = [], []
    for model, width in cases:
        for bs in batches:
            for th in threads:
                new = tb.step_rows(model, width, batch_size=bs, threads=th, optimizers=optimizers, steps=steps,
                                   warmup=warmup)
                rows += new
                for r in new:
                    print(f"{model:12s} w={width:<5g} b={bs:<4d} t={th} {r['optimizer']:12s} "
                          f"{r['binary_ms']:8.2f} ms vs real {r['real_ms']:8.2f} ms  x{r['ratio']:.2f}", flush=True)
        for opt in (["bop", "latent_adam"] if not args.quick else ["bop"]):
            if opt in optimizers:
                s = tb.step_split(model, width, batch_size=batches[0], threads=threads[-1], optimizer=opt,
                                  steps=steps, warmup=warmup)
                splits.append(dict(model=model, width=width, batch_size=batches[0], threads=threads[-1],
                                   optimizer=opt, **s))
                print(f"split {model} {opt}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in s.items()), flush=True)
    startup = {"cold": tb.startup_cold(1 if args.quick else 3), "warm": tb.startup_warm(2 if args.quick else 5)}
    print(f"start-up: cold {startup['cold']['first_step_s']:.2f} s, warm {startup['warm']['first_step_s']:.3f} s")
    worst = {
        "mlp": max((r["ratio"] for r in rows if r["model"] == "mlp"), default=None),
        "conv": max((r["ratio"] for r in rows if r["model"] in tb.CONVNETS), default=None),
    }
    doc = {
        "benchmark": "train_step",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpu_count": torch.get_num_threads(),
                    "torch": torch.__version__, "note": "shared machine: compare ratios within the run"},
        "rows": rows,
        "split_ms": splits,
        "startup": startup,
        "worst_ratio": worst,
        "goal": GOAL,
        "goal_met": {k: (v is not None and v <= GOAL[k]) for k, v in worst.items()},
        "warm_startup_goal_met": startup["warm"]["first_step_s"] < 1.0,
    }
    if args.make_run:
        with tempfile.TemporaryDirectory() as d:
            doc["make_run"] = tb.search_rate(str(Path(d) / "run"))
        print(f"make run: {doc['make_run']['trials_per_minute']:.1f} trials/minute")
    print(f"worst ratio: mlp {worst['mlp']}, convnets {worst['conv']} (goal {GOAL})")
    out = Path(args.out) if args.out else RESULTS / f"train_step{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
