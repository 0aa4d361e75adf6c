"""The ``bnn-tune`` command line: ``fit`` (one configuration); more subcommands register here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "make_console", "parse_assignments", "register_command"]

_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def register_command(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Add a subcommand (used by the optional modules: search, export, bench, report)."""
    _COMMANDS[name] = (add_arguments, run)


PIPED_WIDTH = 1000
"""Columns of a console that is not a terminal (a pipe, a log file, CI): wide enough that no value is cut."""


def make_console(*, stderr: bool = False) -> Any:
    """A rich console for a command's output: the terminal's width on a terminal; piped, ``PIPED_WIDTH``
    columns, so tables print their full values (rich would squeeze them into 80 columns, ``train_…``)
    and a line never wraps mid-value. Tables are as wide as their content, not the console."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=PIPED_WIDTH)
    return console


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["gamma=1e-4", "augment=false"]`` -> ``{"gamma": 1e-4, "augment": False}`` (values are JSON when they parse)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise ValueError(f"-p expects KEY=VALUE, but got {item!r}.")
        out[key.strip()] = _value(val.strip())
    return out


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="dataset (default digits)")
    p.add_argument("--model", default=None, help="model (default mlp)")
    p.add_argument("--optimizer", default=None, help="binary optimizer registry name")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, dest="batch_size")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--config", default=None, help="JSON file with a flat config")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. -p gamma=1e-4 -p threshold=1e-8 (repeatable)")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from .config import load_config_file

    cfg: dict[str, Any] = {}
    if args.config:
        cfg.update(load_config_file(args.config))
    for key in ("dataset", "model", "optimizer", "epochs", "batch_size", "seed", "device"):
        v = getattr(args, key, None)
        if v is not None:
            cfg[key] = v
    cfg.update(parse_assignments(args.param))
    return cfg


def _fit_args(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--save", default=None, help="write the final checkpoint (model+optimizer) to this path")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def _run_fit(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from .train import Trainer

    console = make_console(stderr=args.json)
    trainer = Trainer(config_from_args(args))  # a bad config: ConfigError, answered by main()
    cfg = trainer.config
    console.print(f"bnn-tune fit: optimizer={cfg.optimizer} model={cfg.model} dataset={cfg.dataset} "
                  f"epochs={cfg.epochs} device={trainer.device}")
    with Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("fit", total=cfg.epochs, info="")

        def cb(m, _t):
            progress.update(task, advance=1,
                            info=f"val_acc={m.val_acc:.4f} loss={m.train_loss:.4f} flip_rate={m.flip_rate:.2e}")

        result = trainer.run(cb)
    if args.save:
        trainer.save(args.save)
    if args.json:
        print(json.dumps({"status": result.status, "message": result.message, "test_acc": result.test_acc,
                          "best_val_acc": result.best_val_acc, "config": cfg.to_dict(),
                          "history": [m.as_dict() for m in result.history]}, default=str))
        return 0 if result.status != "diverged" else 1
    table = Table(title=f"{cfg.optimizer} on {cfg.dataset} ({cfg.model})")
    for col in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "flip_rate", "log_flip_rate", "time_s"):
        table.add_column(col, justify="right")
    for m in result.history:
        table.add_row(str(m.epoch), f"{m.train_loss:.4f}", f"{m.train_acc:.4f}", f"{m.val_loss:.4f}",
                      f"{m.val_acc:.4f}", f"{m.flip_rate:.3e}", f"{m.log_flip_rate:.2f}", f"{m.epoch_time:.2f}")
    console.print(table)
    console.print(f"status={result.status} best val_acc={result.best_val_acc:.4f} test_acc={result.test_acc:.4f}"
                  + (f" ({result.message})" if result.message else ""))
    return 0 if result.status != "diverged" else 1


register_command("fit", _fit_args, _run_fit)


def _load_optional_commands() -> None:
    import importlib

    for mod in ("bnn_tune.search.cli", "bnn_tune.search.export_cli", "bnn_tune.bench.cli", "bnn_tune.search.report",
                "bnn_tune.hpobench.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod and not mod.startswith(str(exc.name)):
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``bnn-tune`` command; returns the exit code.

    A user mistake (bad config value or file, missing dataset files, ``--device cuda`` without a GPU,
    a missing source, an output folder that cannot be written, a missing optional dependency) is
    answered with one line ``error: ...`` on stderr and exit code 2; ``--debug`` shows the traceback.
    """
    from ._errors import USER_ERRORS, user_message

    _load_optional_commands()
    parser = argparse.ArgumentParser(prog="bnn-tune", description="Hyperparameter search for binarized networks.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _run) in _COMMANDS.items():
        add(sub.add_parser(name, parents=[common]))
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command][1](args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # `python -m bnn_tune.cli`: run the imported package module, whose registry the subcommands fill
    from bnn_tune.cli import main as _main

    sys.exit(_main())
