"""Ray Tune function trainable (``bnn_tune.trainable``) around :class:`bnn_tune.train.Trainer`.

:func:`trainable` trains one configuration epoch by epoch and, after every epoch, calls
``ray.tune.report(metrics, checkpoint=...)`` with ``training_iteration`` = the epoch. The metrics are :meth:`EpochMetrics.as_dict`
(``val_acc``, ``val_loss``, ``train_acc``, ``train_loss``, ``flip_rate``, ``log_flip_rate``,
``flip_rate/<layer>``, ``epoch``, ``epoch_time``, ``trial_epochs``, ``hp/<scheduled key>``) plus ``sub_log_flip_rate``
(a list: the epoch's log flip rate every 1/8 epoch) and ``hp/<key>`` for every
numeric hyperparameter the binary optimizer is actually using, ``node_id`` (the Ray node the trial
ran on) and ``device`` (where it trained). The checkpoint is a directory holding ``checkpoint.pt`` = :meth:`Trainer.state_dict` (model,
optimizer, schedulers, RNG states, epoch, history and the flat ``"config"``), readable with
``torch.load(..., weights_only=True)``.

Sub-epoch results (:func:`trainable_sub_epoch` only; :func:`trainable` reports epochs alone, so Ray's counters
such as ``iterations_since_restore`` and ``progress.csv`` are the plain per-epoch ones): inside the first epoch of
a trial (not of a resumed one) :func:`trainable_sub_epoch` also reports after
each of the first 7 of the epoch's 8 sub-epoch points a small result without a checkpoint:
``sub_epoch_point`` (1..7; :func:`bnn_tune.plugins._outcome.is_sub_epoch_result` tells such a result apart),
``sub_log_flip_rate`` (the epoch's log flip rates so far), ``epoch`` = ``training_iteration`` = 0, and NaN for
``val_acc``, ``val_loss``, ``train_acc``, ``train_loss`` (not measured inside an epoch; present because Tune
refuses a result without the experiment's metric). A scheduler's ``flip-early`` rule
(:class:`bnn_tune.plugins.flip_sh_ray.FlipSHScheduler`) can so stop a frozen trial after as many sub-epoch points
as the Optuna objective's pruner. Because every epoch result sets ``training_iteration`` to its epoch,
iteration-based schedules count epochs: ASHA/Hyperband with ``time_attr="training_iteration"`` and grace >= 1
ignore the sub-epoch results (iteration 0, below every rung), a ``time_attr="trial_epochs"`` schedule ignores
them (they lack the key), and bnn-tune's Ray schedulers (:mod:`bnn_tune.plugins.ray`) never hand them to the
scheduler they wrap. Ray's plain ``MedianStoppingRule`` would count their NaN values: wrap it in
:class:`bnn_tune.plugins.ray.EpochScheduler` (``--pruner median`` does). Readers of ``result.json`` skip them
(rankings, reports); ``progress.csv`` takes its columns from the first result, so it holds only the sub-epoch
columns -- read ``result.json``.

Resuming: when Ray hands the trial a checkpoint (``ray.tune.get_checkpoint()``: a restored
experiment, a retried failure, a paused trial, or a PBT exploit), the trainer continues exactly where
the checkpoint stopped: same weights, optimizer state, schedule position and random streams, so the
next epoch is epoch ``checkpoint epoch + 1``. If the trial's config differs from the checkpoint's config
(PBT copies a better trial's checkpoint and mutates e.g. Bop's ``gamma``/``threshold``), the mutated
hyperparameters are written into the resumed optimizer's ``param_groups`` (and into the initial value of
a schedule that drives them), so the new values take effect from the next step on.

Training recipes (:mod:`bnn_tune.recipes`): a trial with ``teacher="twin"`` or ``init_from="twin"``
trains the real-valued twin before its first report (its seconds are in the first
``time_this_iter_s``/``epoch_time``) and reports ``trial_epochs`` = the twin's epochs + ``epoch``; give
ASHA/HyperBand ``time_attr="trial_epochs"`` to compare trials at equal spent budget. Twins are cached
in ``<experiment folder>/teachers`` (unless the config sets ``teacher_cache_dir``), so trials with the
same data/model/seed reuse one.

Devices: with ``device`` absent or ``"auto"`` the trial trains on a GPU when Ray assigned it one
(``ray.get_gpu_ids()``), on the CPU otherwise; ``"cpu"``/``"cuda"`` are obeyed as given. Ask Ray for
a GPU per trial with :func:`with_resources` (or ``tune.with_resources(bnn_tune.trainable, {"cpu": 1,
"gpu": 1})``).

Failures: an invalid config raises :class:`~bnn_tune.config.ConfigError` and a non-finite loss raises
``FloatingPointError``; either fails that trial alone, with the message in the trial's error file
(``Result.error``) while the other trials go on.

Example:
    >>> from ray import tune  # doctest: +SKIP
    >>> import bnn_tune  # doctest: +SKIP
    >>> analysis = tune.run(  # doctest: +SKIP
    ...     bnn_tune.trainable,
    ...     config={"dataset": "digits", "optimizer": "bop", "epochs": 10,
    ...             "gamma": tune.loguniform(1e-4, 1e-1), "threshold": tune.loguniform(1e-8, 1e-4)},
    ...     num_samples=8, metric="val_acc", mode="max")
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._imports import require
from .config import TrialConfig
from .metrics import SubEpochFlipRates, log_flip_rate
from .plugins._outcome import SUB_EPOCH_KEY, SUB_EPOCH_POINTS, SUB_FLIP_RATE_KEY
from .train import Trainer

__all__ = ["CHECKPOINT_FILE", "load_checkpoint_state", "restore_trainer", "trainable", "with_resources"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
"""Name of the file inside every checkpoint directory the trainable reports."""

_NOT_MEASURED = {"val_acc": math.nan, "val_loss": math.nan, "train_acc": math.nan, "train_loss": math.nan}
"""The epoch metrics of a sub-epoch result: not measured inside an epoch (present for Tune's metric check)."""


def _trial_device(requested: Any) -> str:
    """``"auto"`` (or absent) -> ``"cuda"`` when Ray assigned this trial a GPU, else ``"cpu"``."""
    if requested not in (None, "auto"):
        return requested
    import ray

    try:  # outside a Ray worker there is no assignment (and asking would start a Ray runtime in this process)
        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:  # not inside a Ray worker
        gpus = []
    return "cuda" if gpus and torch.cuda.is_available() else "cpu"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        try:
            return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
        except Exception:
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


def _hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def restore_trainer(trainer: Trainer, state: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Load a checkpoint ``state`` into ``trainer``, keeping the trainer's own hyperparameters.

    ``trainer`` was built from the trial's (possibly new) config. After
    :meth:`Trainer.load_state_dict`, every optimizer hyperparameter whose value differs between a fresh
    build from the checkpoint's config and a fresh build from the trainer's config (that is, one the
    config change touched: a PBT mutation of ``gamma``, ``threshold``, ``lr``...) is set to the
    trainer's value; a schedule driving such a key keeps its position and restarts its curve from the
    new initial value. Hyperparameters the config did not touch keep their checkpointed values.

    Args:
        trainer: a trainer built from the config to continue with.
        state: a :meth:`Trainer.state_dict` (e.g. ``torch.load(path, weights_only=True)``).

    Returns:
        ``{param_group key: (checkpoint value, new value)}`` for every hyperparameter that changed.

    Example:
        >>> t = Trainer({"dataset": "synthetic", "epochs": 2, "max_steps_per_epoch": 2})
        >>> _ = t.train_epoch()
        >>> t2 = Trainer({"dataset": "synthetic", "epochs": 2, "max_steps_per_epoch": 2, "lr": 0.01})
        >>> restore_trainer(t2, t.state_dict())
        {'lr': (0.001, 0.01)}
        >>> t2.epoch
        1
    """
    fresh = _hyperparameters(trainer.optimizer)
    fresh_initial = [list(s.initial) for s in trainer.schedulers]
    trainer.load_state_dict(state)
    old_config = TrialConfig.from_dict(state["config"])
    new_config = trainer.config
    keys = set(old_config.optimizer_params) | {"lr"}
    if all(_same(old_config.to_dict().get(k), new_config.to_dict().get(k)) for k in keys):
        return {}
    # What the checkpoint's config builds at t=0, on a throw-away copy of the model (deepcopy drops
    # the Python attributes that mark binary parameters, so copy those over).
    from . import optim

    model = copy.deepcopy(trainer.model)
    for src, dst in zip(trainer.model.parameters(), model.parameters()):
        dst.__dict__.update(src.__dict__)
    old_build = _hyperparameters(optim.build(model, old_config, steps_per_epoch=trainer.steps_per_epoch))
    changed: dict[str, tuple[Any, Any]] = {}
    groups = trainer.optimizer.param_groups
    if len(old_build) != len(groups):
        raise ValueError("The checkpoint's optimizer has a different number of parameter groups than this config's.")
    for group, new, old in zip(groups, fresh, old_build):
        for key, value in new.items():
            if key in old and not _same(old[key], value):
                changed.setdefault(key, (old[key], value))
                group[key] = value
    for sched, initial in zip(trainer.schedulers, fresh_initial):
        if sched.key in changed:
            sched.load_state_dict({**sched.state_dict(), "initial": initial})
    return changed


def load_checkpoint_state(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read ``checkpoint.pt`` from a checkpoint directory (or the file itself) with ``weights_only=True``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_FILE)
    return torch.load(path, map_location=map_location, weights_only=True)


def _optimizer_metrics(trainer: Trainer) -> dict[str, float]:
    """``hp/<key>``: numeric hyperparameters in use by the binary optimizer, and the real part's lr."""
    out: dict[str, float] = {}
    parts = getattr(trainer.optimizer, "optimizers", {"binary": trainer.optimizer})
    binary = parts.get("binary")
    if binary is not None and binary.param_groups:
        for key, value in binary.param_groups[0].items():
            if key in trainer.config.optimizer_params and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"hp/{key}"] = float(value)
    real = parts.get("real")
    if real is not None and real.param_groups:
        out["hp/lr"] = float(real.param_groups[0]["lr"])
    return out


def _experiment_teachers_dir() -> str | None:
    """``<experiment folder>/teachers``: where trials of one run share their trained twins."""
    from ray import tune

    try:
        trial_dir = tune.get_context().get_trial_dir()
    except Exception:  # not inside a Tune trial
        return None
    return os.path.join(os.path.dirname(os.path.abspath(trial_dir)), "teachers") if trial_dir else None


def trainable(config: Mapping[str, Any]) -> None:
    """Train one BNN configuration as a Ray Tune trial: report and checkpoint every epoch.

    See the module documentation for the metrics, the checkpoint layout, resuming (PBT included),
    device choice and failure behaviour.

    Args:
        config: flat config (``bnn_tune.config.TrialConfig`` keys and the optimizer's
            hyperparameters); unknown keys and out-of-range values fail the trial.

    Raises:
        bnn_tune.config.ConfigError: the config is invalid (the trial errors, the others go on).
        FloatingPointError: the loss became NaN/inf.

    Example:
        >>> from ray import tune  # doctest: +SKIP
        >>> tuner = tune.Tuner(bnn_tune.trainable,  # doctest: +SKIP
        ...                    param_space={"dataset": "digits", "epochs": 5},
        ...                    tune_config=tune.TuneConfig(metric="val_acc", mode="max"))
        >>> best = tuner.fit().get_best_result()  # doctest: +SKIP
    """
    _train(config, sub_epoch_reports=False)


def trainable_sub_epoch(config: Mapping[str, Any]) -> None:
    """:func:`trainable` that also reports the sub-epoch results of the first epoch (module docstring), so that a
    scheduler's ``flip-early`` rule (:class:`bnn_tune.plugins.flip_sh_ray.FlipSHScheduler`) can stop a frozen trial
    inside its first epoch, as the Optuna objective's pruner does. ``bnn-tune search --backend ray`` runs it for
    the strategies that judge sub-epoch points (``Strategy.judges_sub_epoch``).

    Example:
        >>> from ray import tune  # doctest: +SKIP
        >>> from bnn_tune.plugins.strategies import get_strategy  # doctest: +SKIP
        >>> tune.Tuner(bnn_tune.trainable_sub_epoch, param_space={"dataset": "digits", "epochs": 5},  # doctest: +SKIP
        ...            tune_config=tune.TuneConfig(scheduler=get_strategy("flip+hyperband").ray_scheduler(5)))
    """
    _train(config, sub_epoch_reports=True)


def _train(config: Mapping[str, Any], *, sub_epoch_reports: bool) -> None:
    ray = require("ray", feature="bnn_tune.trainable")
    from ray import tune

    flat = dict(config)
    flat["device"] = _trial_device(flat.get("device"))
    if "twin" in (flat.get("teacher"), flat.get("init_from")) and flat.get("teacher_cache_dir") is None:
        cache = _experiment_teachers_dir()
        if cache is not None:
            flat["teacher_cache_dir"] = cache
    trainer = Trainer(flat)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint_state(directory, map_location=trainer.device)
        changed = restore_trainer(trainer, state)
        if changed:
            logger.info("bnn_tune: resumed after epoch %d with new hyperparameters %s", trainer.epoch,
                        {k: f"{a} -> {b}" for k, (a, b) in changed.items()})
    try:  # (outside a Ray worker, asking the runtime context would start a Ray runtime in this process)
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:
        node_id = ""
    seen = [0]  # sub-epoch points before the epoch in progress

    def on_sub_point(rates: list[float]) -> None:
        # inside the first epoch, a sub-epoch result after each of its first 7 points, so that a scheduler's
        # flip-early rule can stop a frozen trial there, as the Optuna objective's pruner does
        k = len(rates) - seen[0]
        if sub_epoch_reports and trainer.epoch == 0 and k < SUB_EPOCH_POINTS:
            tune.report({SUB_EPOCH_KEY: k, SUB_FLIP_RATE_KEY: [log_flip_rate(r) for r in rates[seen[0]:]],
                         "epoch": 0, "training_iteration": 0, **_NOT_MEASURED})

    subs = SubEpochFlipRates(trainer.flips, trainer.steps_per_epoch, SUB_EPOCH_POINTS,
                             on_sub_point).attach(trainer.optimizer)
    while trainer.epoch < trainer.config.epochs:
        seen[0] = len(subs.rates)
        m = trainer.train_epoch()
        if not (math.isfinite(m.train_loss) and math.isfinite(m.val_loss)):
            raise FloatingPointError(
                f"The loss became non-finite at epoch {m.epoch} (train_loss={m.train_loss}, "
                f"val_loss={m.val_loss}); the trial was stopped. Config: {trainer.config.to_dict()}"
            )
        metrics: dict[str, Any] = {**m.as_dict(), **_optimizer_metrics(trainer), "node_id": node_id,
                                   "device": str(trainer.device),
                                   # training_iteration counts epochs, whatever sub-epoch results came before
                                   "training_iteration": m.epoch,
                                   # this epoch's log flip rate every 1/8 epoch (bnn_tune.plugins.flip_sh_ray reads it)
                                   SUB_FLIP_RATE_KEY: [log_flip_rate(r) for r in subs.rates[seen[0]:]]}
        with tempfile.TemporaryDirectory(prefix="bnn_tune_ckpt_") as directory:
            torch.save(trainer.state_dict(), os.path.join(directory, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def with_resources(*, cpu: float = 1, gpu: float = 0, trainable_fn: Callable[..., Any] | None = None) -> Any:
    """:func:`trainable` with Ray resources per trial (``tune.with_resources``).

    A trial given a GPU trains on it (``device`` absent or ``"auto"``); fractional GPUs pack several
    small trials on one device.

    Args:
        cpu: CPUs per trial.
        gpu: GPUs per trial (0 = CPU training).
        trainable_fn: the trainable to wrap (default :func:`trainable`).

    Example:
        >>> from ray import tune  # doctest: +SKIP
        >>> tuner = tune.Tuner(bnn_tune.with_resources(cpu=2, gpu=0.5),  # doctest: +SKIP
        ...                    param_space={"dataset": "cifar10", "model": "vgg_small"})
    """
    if cpu < 0 or gpu < 0:
        raise ValueError(f"`cpu` and `gpu` must be >= 0, but got cpu={cpu!r}, gpu={gpu!r}.")
    require("ray", feature="bnn_tune.with_resources")
    from ray import tune

    return tune.with_resources(trainable_fn or trainable, {"cpu": cpu, "gpu": gpu})
