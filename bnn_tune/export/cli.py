"""``bnn-tune export RUN_DIR --out DIR``: export the best trial of a Ray or Optuna search."""

from __future__ import annotations

import argparse
import json

from ..cli import register_command


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="Ray Tune experiment directory, or an Optuna storage URL (with --study)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--study", default=None, dest="study_name", help="Optuna study name (for a storage URL)")
    p.add_argument("--metric", default="val_acc")
    p.add_argument("--mode", default="max", choices=["max", "min"])
    p.add_argument("--scope", default="last", choices=["last", "all"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="benchmark device")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    p.add_argument("--full", action="store_true", help="full benchmark repeats (default: quick)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the benchmark (default 1; 0 = torch's)")
    p.add_argument("--no-retrain", action="store_true", help="fail instead of retraining when no checkpoint exists")


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ._best import export_best

    console = Console()
    # user errors (no such source, unwritable --out, bad config) are answered by bnn_tune.cli.main
    summary = export_best(args.source, args.out, study_name=args.study_name, metric=args.metric,
                          mode=args.mode, scope=args.scope, bench=not args.no_bench,
                          bench_device=args.device, bench_threads=args.threads or None, quick=not args.full,
                          retrain=not args.no_retrain)
    weights = summary["weights"]
    console.print(f"exported trial {summary['trial']} of {summary['source']} ({summary['metric']}="
                  f"{summary['value']:.4f}); weights: "
                  + ("[yellow]retrained with bnn_tune.fit (no checkpoint)[/yellow]" if weights == "retrained"
                     else f"checkpoint {summary['checkpoint']}"))
    console.print(f"test accuracy: torch {summary['torch_test_acc']:.4f}, packed {summary['packed_test_acc']:.4f}, "
                  f"agreement {summary['agreement']:.4f}")
    console.print(f"wrote {args.out}/config.json, model.bnn.safetensors, export.json"
                  + ("" if args.no_bench else ", bench.json, bench.png"))
    console.print_json(json.dumps(summary["weight_bytes"]))
    return 0


register_command("export", _add, _run)
