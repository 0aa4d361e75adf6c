"""``bnn-tune export SOURCE [--out DIR] [--format packed|lce]``: export the best trial of a search (either backend).

SOURCE is the ``--out`` folder of ``bnn-tune search`` (either backend, resolved by
:func:`bnn_tune.search._outdir.resolve_search_dir`: ``summary.json``, then a ``study.db`` inside, then a Ray
experiment inside), a Ray experiment folder, an Optuna storage URL or file (``sqlite:///runs/bop/study.db``,
``runs/bop/study.db``, ``journal:///runs/bop/study.log``; ``--study`` names the study, optional when the
storage holds one). The default ``--out`` is ``SOURCE/export`` for a folder.

The command lives with the search stage because it reads a search's folder and storage URLs
(:func:`bnn_tune.search._storage.make_storage` with ``create=False``: a missing database is an error, not
an empty new file); :func:`bnn_tune.export.export_best` does the export.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .._errors import PathNotFoundError
from ..cli import make_console, register_command
from ._outdir import EXPORT_DIR, LOOKED_FOR, open_study, resolve_search_dir

__all__ = ["export_source"]

_STORAGE_SUFFIXES = (".db", ".log", ".journal")


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="the --out folder of bnn-tune search (either backend), a Ray experiment folder, "
                                  "or an Optuna storage URL/file (sqlite:///runs/bop/study.db)")
    p.add_argument("--out", default=None, help="output folder (default SOURCE/export for a folder)")
    p.add_argument("--study", default=None, dest="study_name",
                   help="Optuna study name (default: the folder's study, or the storage's only study)")
    p.add_argument("--metric", default="val_acc")
    p.add_argument("--mode", default="max", choices=["max", "min"])
    p.add_argument("--scope", default="last", choices=["last", "all"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="benchmark device")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    p.add_argument("--full", action="store_true", help="full benchmark repeats (default: quick)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the benchmark (default 1; 0 = torch's)")
    p.add_argument("--no-retrain", action="store_true", help="fail instead of retraining when no checkpoint exists")
    p.add_argument("--format", default="packed", choices=["packed", "lce"],
                   help="packed: model.bnn.safetensors (always written); lce: also model.tflite, converted by Larq "
                        "Compute Engine (needs `make lce-env`)")


def export_source(source: str, *, study_name: str | None = None) -> tuple[Any, str | None]:
    """``(what export_best takes, default output folder)`` for a command-line SOURCE (module docstring).

    Nothing is created: a missing folder, database or study raises ``ValueError``/``PathNotFoundError``
    naming what was looked for.
    """
    is_storage_file = os.path.isfile(source) and source.endswith(_STORAGE_SUFFIXES)
    if "://" in source or source.startswith("journal:") or is_storage_file:
        url = f"sqlite:///{Path(source).resolve()}" if is_storage_file and source.endswith(".db") else source
        return open_study(url, study_name), None
    if not os.path.isdir(source):
        raise PathNotFoundError(f"No such folder {source!r}; give the --out folder of bnn-tune search, a Ray "
                                "experiment folder, or an Optuna storage URL with --study.")
    found = resolve_search_dir(source)
    if found is None:
        raise ValueError(f"Nothing to export in {source!r}: looked for {LOOKED_FOR}. Give the --out folder of "
                         "bnn-tune search, a Ray experiment folder, or an Optuna storage URL with --study.")
    if study_name is not None:
        if found.backend != "optuna":
            raise ValueError(f"--study names an Optuna study, but {source!r} holds a Ray experiment; drop --study.")
        assert found.storage is not None
        return open_study(found.storage, study_name), os.path.join(source, EXPORT_DIR)
    return found.source(), os.path.join(source, EXPORT_DIR)


def _run(args: argparse.Namespace) -> int:
    from ..export import export_best

    console = make_console()
    # user errors (no such source or study, unwritable --out, bad config) are answered by bnn_tune.cli.main
    source, default_out = export_source(args.source, study_name=args.study_name)
    out = args.out or default_out
    if out is None:
        raise ValueError(f"--out is required for a storage URL ({args.source!r}); e.g. --out runs/export.")
    summary = export_best(source, out, metric=args.metric, mode=args.mode, scope=args.scope,
                          bench=not args.no_bench, bench_device=args.device, bench_threads=args.threads or None,
                          quick=not args.full, retrain=not args.no_retrain,
                          formats=("packed", "lce") if args.format == "lce" else ("packed",))
    weights = summary["weights"]
    console.print(f"exported trial {summary['trial']} of {summary['source']} ({summary['metric']}="
                  f"{summary['value']:.4f}); weights: "
                  + ("[yellow]retrained with bnn_tune.fit (no checkpoint)[/yellow]" if weights == "retrained"
                     else f"checkpoint {summary['checkpoint']}"), highlight=False)
    console.print(f"test accuracy: torch {summary['torch_test_acc']:.4f}, packed {summary['packed_test_acc']:.4f}, "
                  f"agreement {summary['agreement']:.4f}", highlight=False)
    size = summary["weight_bytes"]
    console.print(f"packed model size: {size['binary']} bytes of binary weights (1 bit each), {size['real']} bytes "
                  f"of the rest (real-valued layers, batch-norm, thresholds), {size['binary'] + size['real']} bytes "
                  "in all", highlight=False)
    lce = summary.get("lce")
    if lce is not None:
        console.print(f"LCE: {lce['model_file']} ({lce['bytes']} bytes, {lce['ops'].get('LceBconv2d', 0)} LceBconv2d "
                      f"ops), test accuracy {lce['lce_test_acc']:.4f}, agreement with torch {lce['agreement']:.4f}",
                      highlight=False)
    console.print(f"wrote {out}/config.json, model.bnn.safetensors, export.json"
                  + (", model.tflite" if lce is not None else "")
                  + ("" if args.no_bench else ", bench.json, bench.png"), highlight=False)
    return 0


register_command("export", _add, _run)
