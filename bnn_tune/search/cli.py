"""``bnn-tune search``: one command, two backends (Ray Tune, the default when ray is installed, or Optuna).

Example:
    bnn-tune search --optimizer bop --dataset digits --samples 16 --out runs/digits-bop              # Ray
    bnn-tune search --backend optuna --optimizer bop --samples 16 --workers 2 --out runs/bop
    bnn-tune search --backend optuna --optimizer bop --samples 32 --out runs/bop --resume          # 16 more

Both backends take the same :class:`bnn_tune.search.settings.SearchSettings` (same defaults, validated once:
a bad value is one ``error: ...`` line, exit 2, before anything is written), print the same live view and
ranking, and write the same files into ``--out`` (:mod:`bnn_tune.search.run`): ``summary.json``,
``best_config.json`` (usable as ``bnn-tune fit --config``) and ``export/``. Ctrl-C prints one line, exits 130
and leaves the study or experiment consistent: the same command with ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from ..cli import add_config_arguments, register_command
from ._rule import DEFAULT_PRUNER, PRUNERS

__all__ = ["add_search_arguments", "run_search_command"]


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--backend", choices=("ray", "optuna"), default=None,
                   help="search framework: ray (default when ray is installed: embedded local Ray or --address) "
                        "or optuna (worker processes sharing --storage)")
    p.add_argument("--space", default=None,
                   help="search space name (default: the --optimizer's space, bop without one; see "
                        "bnn_tune.search_spaces.list_spaces())")
    p.add_argument("--naive", action="store_true", help="use the space's naive_suggest (real-valued-style baseline)")
    p.add_argument("--samples", type=int, default=16, help="trials in all (default 16; with --resume, the total)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (sqlite:///path.db, postgresql://..., journal:///path.log, :memory:): "
                        "with --backend optuna the shared study (default sqlite:///<out>/study.db), with Ray the "
                        "OptunaSearch sampler's study (default in memory)")
    p.add_argument("--workers", type=int, default=None,
                   help="concurrent trials (default: all CPUs); each trial trains with CPUs // workers threads")
    p.add_argument("--address", default=None,
                   help="ray backend: Ray cluster to join ('auto' or ray://host:10001; default: embedded local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in --out (both backends): finished trials count towards --samples, "
                        "interrupted ones run again")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, dest="gpus_per_trial",
                   help="ray backend: GPUs reserved per trial (fractions allowed; default 0)")
    p.add_argument("--max-failures", type=int, default=1, dest="max_failures",
                   help="ray backend: retries of a crashed trial from its last checkpoint (default 1)")
    p.add_argument("--heartbeat-interval", type=int, default=None, dest="heartbeat_interval", metavar="SECONDS",
                   help="optuna backend, RDB storage: a running trial writes a heartbeat this often (default 10)")
    p.add_argument("--grace-period", type=int, default=None, dest="grace_period", metavar="SECONDS",
                   help="optuna backend, RDB storage: a trial without a heartbeat for this long (its worker was killed, "
                        "its machine lost) is failed and retried with the same parameters (default 30)")
    p.add_argument("--study", default=None, dest="study_name", help="study name (default: the --out folder name)")
    p.add_argument("--out", default=None, help="output folder (default runs/<study>)")
    p.add_argument("--pruner", default=DEFAULT_PRUNER, choices=PRUNERS,
                   help="the strategy that stops trials early: flip+gated-asha (default): the flip-rate rules "
                        "(flip-early, flip-collapse, flip-band, late-bloomer protection) around successive halving "
                        "whose accuracy stops pass a rank gate (only where early accuracy has ranked like final "
                        "accuracy); flip+hyperband, flip+asha: the flip rules around plain Hyperband / successive "
                        "halving; hyperband, asha: those alone; flip: the flip-rate "
                        "collapse rule alone; flip+median: collapse or median rule; median; none")
    p.add_argument("--top", type=int, default=10, help="rows of the final ranking table")
    # the search's --seed (added by add_config_arguments) is its root seed, not the trials' training seed
    for action in p._actions:
        if action.dest == "seed":
            action.help = ("root seed of the search (worker samplers are spawned from it); default: drawn and "
                           "printed. The trials' training seed is the config key: -p seed=N")


def _resume_command() -> str:
    args = [a for a in sys.argv[1:] if a != "--resume"]
    return "bnn-tune " + " ".join(shlex.quote(a) for a in args) + " --resume"


def run_search_command(args: argparse.Namespace) -> int:
    from ..cli import make_console
    from .optuna import SearchInterrupted
    from .run import run_search
    from .settings import SearchSettings

    settings = SearchSettings.from_args(args)  # a bad value: ValueError, one `error:` line from bnn_tune.cli.main
    console: Any = make_console()
    if settings.backend == "optuna" and args.backend is None:
        console.print("ray is not installed (pip install 'bnn-tune[ray]'): searching with the Optuna backend")
    try:
        return run_search(settings, console=console).exit_code
    except SearchInterrupted:
        where = settings.storage if settings.backend == "optuna" else settings.out_dir / "ray_results"
        print(f"interrupted: the search is saved in {where}; continue it with: {_resume_command()}",
              file=sys.stderr, flush=True)
        return 130


register_command("search", add_search_arguments, run_search_command)
