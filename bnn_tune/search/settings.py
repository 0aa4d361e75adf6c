"""One ``SearchSettings`` for both backends of ``bnn-tune search``, validated once, before anything starts.

The Ray and the Optuna backend take the same settings object with the same defaults:

* the optimizer's search space (``bop`` unless ``--optimizer``/``--space`` say otherwise), on ``digits``;
* ``epochs``: :data:`DEFAULT_EPOCHS` of the dataset (10 on digits) unless the fixed config sets it;
* ``workers``: concurrent trials, default every CPU (one process per trial with the Optuna backend, one Ray
  actor per trial with Ray), each trial training with ``threads = max(1, CPUs // workers)`` torch threads --
  a key of the trial's config, so ``bnn-tune fit --config best_config.json`` trains with the same count;
* ``seed``: the root seed of the search. Worker ``i`` samples with ``SeedSequence(seed).spawn(workers)[i]``
  (:func:`sampler_seeds`), so no two workers, and no two root seeds, share a sampler seed. Without a seed
  both backends draw one (:func:`draw_seed`) and print it: rerunning with ``--seed`` that value repeats the
  draws. ``--seed`` is the search's seed; the trials' training seed is the config key ``seed`` (``-p seed=N``).

Every mistake in the settings is one ``ValueError`` (``ConfigError`` for the fixed trial config) raised by the
constructor, which ``bnn-tune search`` prints as one ``error: ...`` line (exit 2) before any file is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnn_tune.plugins.strategies import DEFAULT_STRATEGY

__all__ = ["BACKENDS", "DEFAULT_EPOCHS", "SearchSettings", "draw_seed", "sampler_seeds"]

BACKENDS = ("ray", "optuna")
DEFAULT_EPOCHS = {"digits": 10, "synthetic": 5, "mnist1d": 30, "mnist": 10, "fashion_mnist": 10}
"""Epochs per trial when the fixed config does not set them (both backends)."""

_NAME = re.compile(r"[\w.\-]+")
_SEED_LIMIT = 2**32


def draw_seed() -> int:
    """A fresh root seed in ``[0, 2**32)`` for a search started without ``--seed``."""
    return secrets.randbelow(_SEED_LIMIT)


def sampler_seeds(seed: int, workers: int, *, resumed_after: int = 0) -> list[int]:
    """The sampler seed of each of ``workers`` workers, spawned from the root ``seed``.

    Independent streams (``numpy.random.SeedSequence(seed).spawn(...)``): unlike ``seed + i``, the
    searches ``--seed 2`` and ``--seed 3`` with two workers share no worker seed. A search resumed after
    ``resumed_after`` trials takes the streams after the first ``resumed_after`` ones, so it does not draw its
    first configurations again (the same study state and seed give the same streams).

    Example:
        >>> a, b = sampler_seeds(2, 2), sampler_seeds(3, 2)
        >>> len(set(a) | set(b))
        4
        >>> sampler_seeds(2, 2) == a
        True
    """
    import numpy as np

    children = np.random.SeedSequence(int(seed)).spawn(int(resumed_after) + int(workers))
    return [int(s.generate_state(1)[0]) for s in children[int(resumed_after):]]


_FLAGS = {"n_trials": "--samples", "workers": "--workers", "seed": "--seed", "top": "--top",
          "max_failures": "--max-failures", "heartbeat_interval": "--heartbeat-interval",
          "grace_period": "--grace-period"}


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """:func:`bnn_tune._validate.check_range` for a count, naming the command-line flag it came from."""
    from .._validate import check_range

    try:
        return int(check_range(name, value, low, high, integer=True))
    except ValueError as exc:
        flag = f" ({_FLAGS[name]} on the command line)" if name in _FLAGS else ""
        raise ValueError(f"{str(exc).rstrip('.')}{flag}.") from None


def _sample_once(suggest: Callable[[Any], Mapping[str, Any]]) -> Mapping[str, Any]:
    """One draw of the space on a throw-away in-memory Optuna trial (a space may use any of the trial's API)."""
    from .._imports import require

    optuna = require("optuna", feature="bnn-tune search")
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        return suggest(trial)
    finally:
        optuna.logging.set_verbosity(level)


@dataclass(frozen=True)
class SearchSettings:
    """What a search runs, for either backend (plain data, picklable under spawn).

    Args:
        space: a :mod:`bnn_tune.search_spaces` name (default: the fixed config's ``optimizer``, else ``bop``),
            or a define-by-run callable (Python API only).
        base_config: the config keys every trial shares (``dataset``, ``epochs``, ``model``, ``-p KEY=VALUE``...).
            ``optimizer`` there must match the space's.
        n_trials: trials in all (``--samples``); a resumed search runs only the ones still missing.
        backend: ``"ray"`` or ``"optuna"``.
        workers: concurrent trials (default: every CPU; 1 for an in-memory Optuna storage).
        pruner: a strategy name of :mod:`bnn_tune.plugins.strategies` (``--pruner``).
        seed: root seed (None: :func:`draw_seed` draws one; :attr:`seed_drawn` says so).
        out: output folder (default ``runs/<study_name>``).
        study_name: the study's / experiment's name (default: the ``out`` folder's name, else
            ``<space>-<dataset>-<time>``).
        storage: Optuna storage URL (Optuna backend: the study, default ``sqlite:///<out>/study.db``; Ray: the
            OptunaSearch sampler's study, default in memory).
        naive: sample the space's ``naive_suggest`` (the real-valued-style baseline).
        resume: continue the search already in ``out`` (both backends); without it an ``out`` that holds a
            search is refused.
        top: rows of the final ranking.
        enqueue: parameter dicts tried first (Optuna ``enqueue_trial`` / OptunaSearch ``points_to_evaluate``).
        verbose: print the live view and the ranking.
        address, gpus_per_trial, max_failures: Ray only (cluster address, GPUs per trial, retries of a crashed
            trial from its checkpoint).
        heartbeat_interval, grace_period, max_retry: Optuna RDB storages only (failing and retrying the trials
            of a killed worker).
    """

    space: Any = None
    base_config: Mapping[str, Any] = field(default_factory=dict)
    n_trials: int = 16
    backend: str = "optuna"
    workers: int | None = None
    pruner: str = DEFAULT_STRATEGY
    seed: int | None = None
    out: str | os.PathLike | None = None
    study_name: str | None = None
    storage: str | None = None
    naive: bool = False
    resume: bool = False
    top: int = 10
    enqueue: Sequence[Mapping[str, Any]] = ()
    verbose: bool = True
    address: str | None = None
    gpus_per_trial: float = 0.0
    max_failures: int = 1
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    seed_drawn: bool = field(default=False, init=False)
    cpus: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        from ..config import TrialConfig
        from ..plugins.strategies import get_strategy

        set_ = object.__setattr__
        if self.backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {list(BACKENDS)}, but got backend={self.backend!r}.")
        if not isinstance(self.base_config, Mapping):
            raise ValueError(f"`base_config` must be a mapping, but got base_config={self.base_config!r}.")
        base = dict(self.base_config)
        # the space: a name (the fixed optimizer's by default) or a callable
        optimizer = base.get("optimizer")
        space = self.space if self.space is not None else (optimizer or "bop")
        if isinstance(space, str):
            from .. import search_spaces

            module = search_spaces.get(space)  # unknown names: ValueError with the list
            if optimizer is not None and module.NAME != optimizer and not self.naive:
                raise ValueError(f"--optimizer {optimizer!r} does not match --space {space!r} (which searches "
                                 f"optimizer {module.NAME!r}); give one of them, or matching ones.")
            if self.naive and not callable(getattr(module, "naive_suggest", None)):
                raise ValueError(f"--naive: the space {space!r} has no naive twin (naive_suggest).")
            base.setdefault("optimizer", module.NAME)
        elif not callable(space):
            raise ValueError(f"`space` must be a search-space name or a define-by-run callable, but got "
                             f"space={space!r}.")
        set_(self, "space", space)
        base.setdefault("dataset", "digits")
        base.setdefault("epochs", DEFAULT_EPOCHS.get(str(base["dataset"]), 20))
        # counts and names
        _int("n_trials", self.n_trials, 1)  # --samples
        get_strategy(self.pruner)  # unknown strategy: ValueError with the list
        cpus = os.cpu_count() or 1
        set_(self, "cpus", cpus)
        if self.workers is not None:
            _int("workers", self.workers, 1)
        if self.seed is None:
            set_(self, "seed", draw_seed())
            set_(self, "seed_drawn", True)
        else:
            _int("seed", self.seed, 0, _SEED_LIMIT - 1)
        _int("top", self.top, 1)
        _int("max_failures", self.max_failures, -1)
        for name in ("heartbeat_interval", "grace_period", "max_retry"):
            _int(name, getattr(self, name), 0 if name == "max_retry" else 1)
        if self.grace_period <= self.heartbeat_interval:  # every live trial would be failed between two beats
            raise ValueError(f"`grace_period` must be greater than `heartbeat_interval`, but got grace_period="
                             f"{self.grace_period} with heartbeat_interval={self.heartbeat_interval} (--grace-period, "
                             "--heartbeat-interval on the command line).")
        gpus = self.gpus_per_trial
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not (gpus >= 0 and math.isfinite(gpus)):
            raise ValueError(f"`gpus_per_trial` must be a number >= 0, but got gpus_per_trial={gpus!r}.")
        if self.backend == "optuna":
            ray_only = [flag for flag, used in (("--address", self.address), ("--gpus-per-trial", gpus),
                                                ("--max-failures", self.max_failures != 1)) if used]
            if ray_only:
                raise ValueError(f"{', '.join(ray_only)} apply to --backend ray only; drop "
                                 f"{'them' if len(ray_only) > 1 else 'it'} or use --backend ray.")
        elif self.heartbeat_interval != 10 or self.grace_period != 30:
            raise ValueError("--heartbeat-interval and --grace-period apply to --backend optuna only (Ray retries a "
                             "lost trial from its checkpoint: --max-failures); drop them or use --backend optuna.")
        name = self.study_name or (Path(self.out).name if self.out else None) or (
            f"{space if isinstance(space, str) else 'space'}-{base['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}")
        if not _NAME.fullmatch(name):
            raise ValueError(f"`study_name` must be letters, digits, '.', '-' or '_', but got study_name={name!r}; "
                             "name the study with --study NAME.")
        set_(self, "study_name", name)
        set_(self, "out", Path(self.out or Path("runs") / name).expanduser().resolve())
        if self.storage is None and self.backend == "optuna":
            set_(self, "storage", f"sqlite:///{self.out_dir / 'study.db'}")
        if isinstance(self.storage, str):
            from ._storage import storage_file

            storage_file(self.storage)  # a malformed URL (journal:/x.log) is refused here, before anything is made
        workers = self.workers
        if workers is None:
            workers = 1 if (self.backend == "optuna" and self.storage in (None, "", ":memory:")) else cpus
        elif workers > 1 and self.backend == "optuna" and self.storage in (None, "", ":memory:"):
            raise ValueError(f"`workers` > 1 needs a shared storage, but got workers={workers} with the in-memory "
                             "storage; pass storage='sqlite:///path/study.db' or 'journal:///path/study.log'.")
        set_(self, "workers", int(workers))
        base.setdefault("threads", max(1, cpus // int(workers)))
        set_(self, "enqueue", tuple(dict(p) for p in self.enqueue))
        # the fixed part of every trial's config, validated now with one sample of the space (a registered space
        # is a pure define-by-run function; a callable of the user's may have side effects: only its fixed keys)
        if isinstance(space, str):
            TrialConfig.from_dict({**dict(_sample_once(self.suggest)), **base})
        elif "optimizer" in base:
            TrialConfig.from_dict(base)
        set_(self, "base_config", base)

    # ------------------------------------------------------------------ derived
    @property
    def suggest(self) -> Callable[[Any], Mapping[str, Any]]:
        """The define-by-run function the trials sample from."""
        from ..objective import resolve_space

        return resolve_space(self.space, naive=self.naive)

    @property
    def epochs(self) -> int:
        return int(self.base_config["epochs"])

    @property
    def dataset(self) -> str:
        return str(self.base_config["dataset"])

    @property
    def space_name(self) -> str:
        return self.space if isinstance(self.space, str) else getattr(self.space, "__qualname__", "space")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)  # type: ignore[arg-type]

    def sampler_seeds(self, *, resumed_after: int = 0) -> list[int]:
        """One sampler seed per worker (:func:`sampler_seeds` of the root seed)."""
        return sampler_seeds(int(self.seed), int(self.workers), resumed_after=resumed_after)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> SearchSettings:
        """A copy with ``changes``, validated again (a drawn seed is kept)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return SearchSettings(**{**fields, **changes})

    def describe(self) -> str:
        """One line: what runs where (printed at the start of a search)."""
        seed = f"seed={self.seed}" + (" (drawn; rerun with --seed to repeat the draws)" if self.seed_drawn else "")
        return (f"bnn-tune search ({self.backend}): space={self.space_name}{' (naive)' if self.naive else ''} "
                f"dataset={self.dataset} epochs={self.epochs} trials={self.n_trials} workers={self.workers} "
                f"threads/trial={self.base_config['threads']} pruner={self.pruner} {seed} out={self.out}"
                + (f" storage={self.storage}" if self.storage else ""))

    # ------------------------------------------------------------------ CLI
    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SearchSettings:
        """The settings of a parsed ``bnn-tune search`` command line."""
        from ..cli import config_from_args

        # --seed is the search's root seed; the trials' training seed is the config key (-p seed=N, --config)
        base = config_from_args(argparse.Namespace(**{**vars(args), "seed": None}))
        backend = args.backend
        if backend is None:
            import importlib.util

            backend = "ray" if importlib.util.find_spec("ray") is not None else "optuna"
        return cls(space=args.space, base_config=base, n_trials=args.samples, backend=backend, workers=args.workers,
                   pruner=args.pruner, seed=args.seed, out=args.out, study_name=args.study_name,
                   storage=args.storage, naive=args.naive, resume=args.resume, top=args.top,
                   address=args.address, gpus_per_trial=args.gpus_per_trial, max_failures=args.max_failures,
                   **{name: getattr(args, name) for name in ("heartbeat_interval", "grace_period")
                      if getattr(args, name, None) is not None})
