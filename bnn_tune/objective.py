"""The Optuna objective: one BNN training per trial, reported epoch by epoch, prunable, fail-safe.

``bnn_tune.objective(space)`` returns a callable for ``study.optimize``. Per trial it samples a flat
config from the space, merges it over ``base_config``, trains with :class:`bnn_tune.Trainer` (the loop of
:func:`bnn_tune.fit`) and after every epoch

* appends to the user attrs ``"bnn_tune:log_flip_rate"`` (the series :class:`bnn_tune.plugins.optuna.FlipRatePruner`
  reads), ``"bnn_tune:val_acc"`` and ``"bnn_tune:layer_log_flip_rate"`` (``{layer: [...]}``),
* calls ``trial.report(val_acc, trial_epochs)`` (``trial_epochs`` = the epoch, plus the real-valued
  twin's epochs when the config trains one: :mod:`bnn_tune.recipes`) and raises :class:`optuna.TrialPruned` when
  ``trial.should_prune()`` says so (the pruner's reason is in ``"bnn_tune:prune_reason"``); the pruner is
  not asked after the last epoch, when stopping would save nothing.

The trial's value is the validation accuracy of the last epoch (the state that is checkpointed). The flat
config is stored in ``"bnn_tune:config"``; with ``artifact_dir`` the final :meth:`Trainer.state_dict` is
saved to ``<artifact_dir>/trial_<number>/checkpoint.pt`` and its path stored in ``"bnn_tune:checkpoint"``
(what :func:`bnn_tune.export.export_best` reads); trained twins are cached in ``<artifact_dir>/teachers``
unless the config sets ``teacher_cache_dir``. A trial whose config is invalid (:class:`ConfigError`),
whose loss diverges (NaN/inf) or whose training raises fails *alone*: the objective records
``"bnn_tune:fail_reason"`` and returns NaN, which Optuna marks as FAIL and the study goes on with
``study.optimize``'s defaults.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._imports import require

if TYPE_CHECKING:
    import optuna

    from .data import DataSplits

__all__ = [
    "CHECKPOINT_ATTR",
    "CONFIG_ATTR",
    "FAIL_REASON_ATTR",
    "FLIP_RATE_ATTR",
    "LAYER_FLIP_RATE_ATTR",
    "Objective",
    "SUB_FLIP_RATE_ATTR",
    "VAL_ACC_ATTR",
    "objective",
    "resolve_space",
]

from .plugins._outcome import (  # the keys live in one module; re-exported here for the objective's users
    CHECKPOINT_ATTR,
    CONFIG_ATTR,
    FAIL_REASON_ATTR,
    FLIP_RATE_ATTR,
    LAYER_FLIP_RATE_ATTR,
    PRUNE_REASON_ATTR,
    SUB_EPOCH_POINTS,
    SUB_FLIP_RATE_ATTR,
    TEST_ACC_ATTR,
    VAL_ACC_ATTR,
)

_logger = logging.getLogger("bnn_tune.objective")

SpaceLike = str | ModuleType | Callable[[Any], Mapping[str, Any]]


def resolve_space(space: SpaceLike, *, naive: bool = False) -> Callable[[Any], Mapping[str, Any]]:
    """A define-by-run function from a search-space name, module or callable.

    Args:
        space: ``"bop"`` (a :mod:`search_spaces` name), a module with ``suggest``, or ``suggest(trial)``.
        naive: use the module's ``naive_suggest`` instead (names and modules only).
    """
    if isinstance(space, str):
        from bnn_tune import search_spaces

        space = search_spaces.get(space)
    if isinstance(space, ModuleType):
        attr = "naive_suggest" if naive else "suggest"
        fn = getattr(space, attr, None)
        if not callable(fn):
            raise ValueError(f"Search-space module {space.__name__!r} has no callable `{attr}(trial)`.")
        return fn
    if naive:
        raise ValueError("`naive=True` needs a search-space name or module, not a callable.")
    if not callable(space):
        raise TypeError(f"`space` must be a search-space name, module or callable, but got space={space!r}.")
    return space


def _log_fr(rate: float) -> float:
    from .metrics import log_flip_rate

    return log_flip_rate(rate)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Objective:
    """The callable returned by :func:`objective` (picklable: it holds only plain settings).

    Call it with an ``optuna.Trial``; see :func:`objective` for what it records.
    """

    def __init__(
        self,
        space: SpaceLike,
        *,
        base_config: Mapping[str, Any] | None = None,
        artifact_dir: str | os.PathLike | None = None,
        naive: bool = False,
        data: DataSplits | None = None,
    ) -> None:
        if base_config is not None and not isinstance(base_config, Mapping):
            raise TypeError(f"`base_config` must be a mapping or None, but got base_config={base_config!r}.")
        self.space = space
        self.suggest = resolve_space(space, naive=naive)
        self.base_config = dict(base_config or {})
        self.artifact_dir = None if artifact_dir is None else str(Path(artifact_dir).resolve())
        self.naive = naive
        self.data = data

    def __repr__(self) -> str:
        name = getattr(self.suggest, "__module__", "?") + "." + getattr(self.suggest, "__name__", "?")
        return f"Objective(space={name}, base_config={self.base_config!r}, artifact_dir={self.artifact_dir!r})"

    def _fail(self, trial: optuna.Trial, reason: str) -> float:
        trial.set_user_attr(FAIL_REASON_ATTR, reason)
        _logger.warning("trial %d failed: %s", trial.number, reason)
        return float("nan")

    def __call__(self, trial: optuna.Trial) -> float:
        optuna = require("optuna", feature="bnn_tune.objective")
        from .config import ConfigError, TrialConfig
        from .metrics import SubEpochFlipRates
        from .train import Trainer

        try:
            params = self.suggest(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            return self._fail(trial, f"the search space raised {type(exc).__name__}: {exc}")
        if not isinstance(params, Mapping):
            return self._fail(trial, f"the search space must return a dict, but returned {type(params).__name__}")
        flat = {**self.base_config, **params}
        if self.artifact_dir is not None and "twin" in (flat.get("teacher"), flat.get("init_from")):
            # trials of this study (in this worker or any sharing the folder) reuse a trained twin
            flat.setdefault("teacher_cache_dir", str(Path(self.artifact_dir) / "teachers"))
        try:
            cfg = TrialConfig.from_dict(flat)
        except ConfigError as exc:
            trial.set_user_attr(CONFIG_ATTR, _jsonable(flat))
            return self._fail(trial, f"invalid config: {exc}")
        trial.set_user_attr(CONFIG_ATTR, _jsonable(cfg.to_dict()))

        lfr: list[float] = []
        accs: list[float] = []
        layers: dict[str, list[float]] = {}

        def callback(m: Any, _trainer: Any) -> None:
            lfr.append(float(m.log_flip_rate))
            accs.append(float(m.val_acc))
            for name, rate in m.layer_flip_rates.items():
                layers.setdefault(name, []).append(_log_fr(float(rate)))
            trial.set_user_attr(FLIP_RATE_ATTR, list(lfr))
            trial.set_user_attr(VAL_ACC_ATTR, list(accs))
            trial.set_user_attr(LAYER_FLIP_RATE_ATTR, {k: list(v) for k, v in layers.items()})
            # the step counts the twin's epochs too (bnn_tune.recipes): pruners compare equal budgets
            trial.report(float(m.val_acc), m.trial_epochs)
            # after the last epoch there is nothing left to save: the trial completes
            if m.epoch < cfg.epochs and trial.should_prune():
                reason = trial.user_attrs.get(PRUNE_REASON_ATTR) or "the study's pruner said so"
                raise optuna.TrialPruned(f"pruned at epoch {m.epoch}: {reason}")

        def on_sub_point(rates: list[float]) -> None:
            # the sub-epoch log flip rates (every 1/8 epoch); inside the first epoch a pruner with
            # ``judges_sub_epoch = True`` (bnn_tune.plugins.flip_sh.FlipSHPruner) is asked after each point, so a
            # frozen run stops before a whole epoch
            trial.set_user_attr(SUB_FLIP_RATE_ATTR, [_log_fr(r) for r in rates])
            # only a pruner that says it judges sub-epoch reports is asked before the first trial.report
            if (len(rates) < SUB_EPOCH_POINTS and getattr(trial.study.pruner, "judges_sub_epoch", False)
                    and trial.should_prune()):
                reason = trial.user_attrs.get(PRUNE_REASON_ATTR) or "the study's pruner said so"
                raise optuna.TrialPruned(f"pruned inside epoch 1: {reason}")

        try:
            trainer = Trainer(cfg, data=self.data)
            SubEpochFlipRates(trainer.flips, trainer.steps_per_epoch, SUB_EPOCH_POINTS,
                              on_sub_point).attach(trainer.optimizer)
            result = trainer.run(callback)
        except optuna.TrialPruned:
            raise
        except ConfigError as exc:
            return self._fail(trial, f"invalid config: {exc}")
        except Exception as exc:
            return self._fail(trial, f"training raised {type(exc).__name__}: {exc}")
        if result.status == "diverged":
            return self._fail(trial, result.message)
        if not result.history:
            return self._fail(trial, "no epoch finished")
        value = float(result.history[-1].val_acc)
        if not math.isfinite(value):
            return self._fail(trial, f"the final validation accuracy is not finite ({value})")
        if math.isfinite(result.test_acc):
            trial.set_user_attr(TEST_ACC_ATTR, float(result.test_acc))
        if self.artifact_dir is not None:
            path = Path(self.artifact_dir) / f"trial_{trial.number}" / "checkpoint.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save(str(path))
            trial.set_user_attr(CHECKPOINT_ATTR, str(path))
        return value


def objective(
    space: SpaceLike,
    *,
    base_config: Mapping[str, Any] | None = None,
    artifact_dir: str | os.PathLike | None = None,
    naive: bool = False,
    data: DataSplits | None = None,
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective that trains one BNN configuration per trial.

    The space's values override ``base_config`` (what the space samples is what Optuna records). Each
    epoch stores the flip-rate and accuracy series in the trial's user attrs, reports ``val_acc`` and
    honours ``trial.should_prune()``. The value returned is the last epoch's validation accuracy
    (maximise it). Invalid configs, diverged losses and training errors fail the trial alone: the reason
    goes to the user attr ``"bnn_tune:fail_reason"`` and the objective returns NaN (Optuna: FAIL).

    Args:
        space: a :mod:`search_spaces` name (``"bop"``), a space module, or a ``suggest(trial)`` callable.
        base_config: fixed config keys (dataset, model, epochs, ...).
        artifact_dir: when given, the final checkpoint of every completed trial is saved to
            ``<artifact_dir>/trial_<number>/checkpoint.pt`` (user attr ``"bnn_tune:checkpoint"``).
        naive: use the space's ``naive_suggest`` (the real-valued-style baseline).
        data: preloaded :class:`~bnn_tune.data.DataSplits` shared by all trials (default: load per trial).

    Returns:
        :class:`Objective`, a picklable callable for ``study.optimize``.

    Example:
        >>> import optuna, bnn_tune
        >>> from bnn_tune.plugins.optuna import FlipRatePruner
        >>> study = optuna.create_study(direction="maximize", pruner=FlipRatePruner())
        >>> study.optimize(bnn_tune.objective("latent_adam", base_config={"epochs": 2,
        ...     "max_steps_per_epoch": 5}), n_trials=2)  # doctest: +SKIP

    References:
        Helwegen et al. 2019 (flip rate, eq. 7); Optuna's pruning protocol (``report``/``should_prune``).
    """
    return Objective(space, base_config=base_config, artifact_dir=artifact_dir, naive=naive, data=data)


class _CallableModule(types.ModuleType):
    """Lets ``bnn_tune.objective(...)`` work even when the attribute resolves to this submodule
    (importing ``bnn_tune.objective`` binds the module to the package attribute)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Callable[[Any], float]:
        return objective(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
