"""The training loop: :class:`Trainer` (one epoch at a time, checkpointable) and :func:`fit`."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import optim
from ._errors import DeviceUnavailableError
from .config import TrialConfig
from .data import DataSplits, load_dataset
from .metrics import FlipCounter
from .nn import build_model
from .recipes import Recipe

__all__ = ["EpochMetrics", "FitResult", "Trainer", "fit", "resolve_device", "torch_threads"]


@dataclass
class EpochMetrics:
    """What one epoch reports (the keys of ``as_dict`` are the metric names Ray/Optuna see)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    flip_rate: float
    log_flip_rate: float
    layer_flip_rates: dict[str, float] = field(default_factory=dict)
    epoch_time: float = 0.0
    trial_epochs: int = 0
    hyperparameters: dict[str, float] = field(default_factory=dict)
    val_acc_relaxed: float | None = None

    def as_dict(self) -> dict[str, float]:
        """Flat metrics: ``val_acc``..., ``flip_rate/<layer>``, ``hp/<name>`` (current scheduled values).

        ``val_acc`` is always the binary network's (eval-mode sign weights); ``val_acc_relaxed`` (only for
        optimizers with a relaxed forward weight, BNEW and BMD) is the relaxed network's. The flip rates
        are NaN for an epoch in which the binary optimizer had frozen its weights by design (BNEW after
        the lock): no signal, so the flip-rate collapse rule neither counts it as collapsed nor healthy.
        """
        d = {k: v for k, v in asdict(self).items()
             if k not in ("layer_flip_rates", "hyperparameters") and v is not None}
        d.update({f"flip_rate/{k}": v for k, v in self.layer_flip_rates.items()})
        d.update({f"hp/{k}": v for k, v in self.hyperparameters.items()})
        return d


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        config: the validated config.
        history: one :class:`EpochMetrics` per finished epoch.
        status: ``"completed"``, ``"stopped"`` (a callback asked to stop) or ``"diverged"`` (NaN/inf loss).
        message: why the run ended, for non-completed runs.
        model: the trained model (eval mode).
        test_acc: accuracy on the test split at the end (NaN when diverged).
    """

    config: TrialConfig
    history: list[EpochMetrics]
    status: str
    message: str
    model: nn.Module
    test_acc: float

    @property
    def best_val_acc(self) -> float:
        return max((m.val_acc for m in self.history), default=float("nan"))

    @property
    def final(self) -> EpochMetrics | None:
        return self.history[-1] if self.history else None


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> the first GPU when one is visible, else CPU; ``cuda`` without a GPU raises."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device={device!r} was asked for, but no CUDA GPU is visible; use "
                                     "device='cpu' or 'auto' (CLI: --device cpu).")
    if device.startswith("cuda:") and device[5:].isdigit() and int(device[5:]) >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"device={device!r} was asked for, but only {torch.cuda.device_count()} CUDA "
                                     f"GPU(s) are visible; use cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, then restore the previous count (also on error);
    ``None`` leaves the setting alone.

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains one configuration epoch by epoch; its :meth:`state_dict` resumes a run exactly.

    Args:
        config: flat config dict or :class:`TrialConfig`.
        data: preloaded :class:`DataSplits` (default: loaded from ``config.dataset``).

    Example:
        >>> t = Trainer({"dataset": "synthetic", "epochs": 1, "max_steps_per_epoch": 2})
        >>> m = t.train_epoch()
        >>> m.epoch
        1
    """

    def __init__(self, config: Mapping[str, Any] | TrialConfig, *, data: DataSplits | None = None) -> None:
        self.config = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        with torch_threads(self.config.threads):  # the twin of a recipe trains here
            self._build(data)

    def _build(self, data: DataSplits | None) -> None:
        cfg = self.config
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        splits = data or load_dataset(cfg.dataset, val_fraction=cfg.val_fraction, root=cfg.data_root,
                                      download=cfg.download)
        # the whole dataset lives on the trial's device: batches are indexed there, never copied per step
        self.data = splits.to(self.device, channels_last=cfg.channels_last)
        self.model = build_model(
            cfg.model, splits.input_shape, splits.num_classes, binary=True, width=cfg.width, depth=cfg.depth,
            activation=cfg.activation_quantizer, bn_momentum=cfg.bn_momentum,
        ).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # distillation teacher / twin initialisation / two-step (bnn_tune.recipes), before the optimizer
        self.recipe = Recipe(cfg, self.model, self.data, self.device)
        n = len(self.data.y_train)
        self.steps_per_epoch = math.ceil(n / cfg.batch_size)
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        self.optimizer = optim.build(self.model, cfg, steps_per_epoch=self.steps_per_epoch)
        self.schedulers = []
        opt_spec = optim.get(cfg.optimizer)
        for key, spec in cfg.schedules.items():
            parsed = optim.parse_schedule(spec, key)
            total = cfg.epochs if parsed["per"] == "epoch" else cfg.epochs * self.steps_per_epoch
            target, param_key = optim.schedule_target(self.optimizer, opt_spec, key)  # exactly the owner
            self.schedulers.append(
                optim.HyperparameterScheduler(target, key, parsed, total=total, param_key=param_key)
            )
        self.relaxed_metric = optim.has_relaxed_weights(self.model)
        self.flips = FlipCounter(self.model).attach(self.optimizer)
        # torch.compile wraps the forward only: self.model (state dict keys, checkpoints, export) is unchanged
        self._forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.model) if cfg.compile else self.model  # type: ignore[assignment]
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.epoch = 0
        self.history: list[EpochMetrics] = []

    # ------------------------------------------------------------------ steps
    def _batches(self):
        n = len(self.data.y_train)
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        bs = self.config.batch_size
        for i in range(self.steps_per_epoch):
            idx = perm[i * bs: (i + 1) * bs]
            if len(idx) == 0:
                break
            x = self.data.x_train[idx]
            if self.config.augment and self.data.augment is not None:
                x = self.data.augment(x, self.generator)
            yield x, self.data.y_train[idx]

    def _autocast(self):
        """bf16 autocast on the trial's device when ``amp`` is on (a no-op context otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the batch ``(x, y)`` (flips are counted by the optimizer's hooks).

        Returns:
            ``(loss, logits)``, detached, on the device (no host sync).
        """
        with self._autocast():
            logits = self._forward(x)
            loss = self.recipe.loss(logits, x, y)  # cross-entropy, plus distillation with a teacher
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.recipe.after_step(self.optimizer)
        return loss.detach(), logits.detach()

    def train_epoch(self) -> EpochMetrics:
        """Run one epoch, evaluate on the validation split, return its metrics (with the config's ``threads``)."""
        with torch_threads(self.config.threads):
            return self._train_epoch()

    def _train_epoch(self) -> EpochMetrics:
        t0 = time.perf_counter()
        self.recipe.start_epoch(self.epoch)
        self.model.train()
        self.flips.reset()
        frozen = bool(getattr(self.optimizer.binary, "is_locked", lambda: False)())
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for x, y in self._batches():
            loss, logits = self.train_step(x, y)
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            for s in self.schedulers:
                if s.per == "step":
                    s.step()
        for s in self.schedulers:
            if s.per == "epoch":
                s.step()
        self.epoch += 1
        flips = self.flips.summary()
        if frozen:  # weights frozen by the optimizer's design for the whole epoch: the flip rate says nothing
            nan = float("nan")
            flips = {"flip_rate": nan, "log_flip_rate": nan, "layers": {k: nan for k in flips["layers"]}}
        val_loss, val_acc = self.evaluate("val")
        relaxed = self.evaluate("val", relaxed=True)[1] if self.relaxed_metric else None
        metrics = EpochMetrics(
            epoch=self.epoch,
            train_loss=(loss_sum / max(seen, 1)).item(),
            train_acc=correct.item() / max(seen, 1),
            val_loss=val_loss,
            val_acc=val_acc,
            flip_rate=flips["flip_rate"],
            log_flip_rate=flips["log_flip_rate"],
            layer_flip_rates=flips["layers"],
            epoch_time=time.perf_counter() - t0 + self.recipe.take_setup_time(),
            trial_epochs=self.recipe.teacher_epochs + self.epoch,
            hyperparameters={s.key: float(s.current()[0]) for s in self.schedulers},
            val_acc_relaxed=relaxed,
        )
        self.history.append(metrics)
        return metrics

    @torch.no_grad()
    def evaluate(self, split: str = "val", batch_size: int = 1024, *, relaxed: bool = False) -> tuple[float, float]:
        """``(loss, accuracy)`` on ``"train"``, ``"val"`` or ``"test"`` in eval mode.

        Eval mode computes with the binary network (sign weights); ``relaxed=True`` uses the relaxed
        forward weights of BNEW/BMD instead (:func:`bnn_tune.optim.relaxed_weights`).
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"`split` must be 'train', 'val' or 'test', but got split={split!r}.")
        with torch_threads(self.config.threads):
            return self._evaluate(split, batch_size, relaxed)

    def _evaluate(self, split: str, batch_size: int, relaxed: bool) -> tuple[float, float]:
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        was_training = self.model.training
        self.model.eval()
        loss_sum, correct = 0.0, 0
        with optim.relaxed_weights(self.model) if relaxed else contextlib.nullcontext():
            for i in range(0, len(y), batch_size):
                with self._autocast():
                    logits = self._forward(x[i: i + batch_size]).float()
                loss_sum += F.cross_entropy(logits, y[i: i + batch_size], reduction="sum").item()
                correct += int((logits.argmax(1) == y[i: i + batch_size]).sum())
        self.model.train(was_training)
        return loss_sum / max(len(y), 1), correct / max(len(y), 1)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimizer, schedulers, RNG states, epoch, history.

        Only tensors and plain Python containers, so ``torch.load(..., weights_only=True)`` reads it. On a
        GPU the device's CUDA RNG state is kept too (``"cuda_rng"``), so a resumed GPU trial draws the same
        random numbers (dropout, CUDA-side sampling) as an uninterrupted one.
        """
        state = {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(m) for m in self.history],
            "config": self.config.to_dict(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next :meth:`train_epoch` continues where it stopped."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if len(state["schedulers"]) != len(self.schedulers):
            raise ValueError("The checkpoint's schedules do not match this config's schedules.")
        for s, st in zip(self.schedulers, state["schedulers"]):
            s.load_state_dict(st)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:  # a CPU checkpoint or a CPU resume: no CUDA stream
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.epoch = int(state["epoch"])
        self.history = [EpochMetrics(**m) for m in state["history"]]

    def save(self, path: str) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str) -> None:
        """Load a checkpoint written by :meth:`save` (``weights_only=True``: no arbitrary unpickling)."""
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))

    # ------------------------------------------------------------------ loop
    def run(self, callback: Callable[[EpochMetrics, Trainer], bool | None] | None = None) -> FitResult:
        """Train the remaining epochs. ``callback(metrics, trainer)`` returning True stops the run.

        The whole run, callbacks included, uses the config's ``threads`` (the previous count is restored).
        """
        with torch_threads(self.config.threads):
            return self._run(callback)

    def _run(self, callback: Callable[[EpochMetrics, Trainer], bool | None] | None) -> FitResult:
        status, message = "completed", ""
        while self.epoch < self.config.epochs:
            m = self.train_epoch()
            if not (math.isfinite(m.train_loss) and math.isfinite(m.val_loss)):
                status = "diverged"
                message = (f"loss became non-finite at epoch {m.epoch} (train_loss={m.train_loss}, "
                           f"val_loss={m.val_loss}); the run was stopped")
                break
            if callback is not None and callback(m, self):
                status, message = "stopped", f"stopped by callback after epoch {m.epoch}"
                break
        test_acc = float("nan") if status == "diverged" else self.evaluate("test")[1]
        self.model.eval()
        return FitResult(self.config, list(self.history), status, message, self.model, test_acc)


def fit(
    config: Mapping[str, Any] | TrialConfig,
    *,
    callback: Callable[[EpochMetrics, Trainer], bool | None] | None = None,
    data: DataSplits | None = None,
) -> FitResult:
    """Train one BNN configuration without Ray or Optuna.

    Args:
        config: flat config (see :class:`~bnn_tune.config.TrialConfig`); unknown keys raise.
        callback: called after every epoch with ``(EpochMetrics, Trainer)``; return True to stop.
            Exceptions it raises (e.g. ``optuna.TrialPruned``) propagate to the caller.
        data: preloaded data (default: the config's dataset).

    Returns:
        :class:`FitResult` (a NaN/inf loss ends the run with ``status="diverged"``, it does not raise).

    Example:
        >>> r = fit({"dataset": "synthetic", "epochs": 1, "max_steps_per_epoch": 3})
        >>> r.status
        'completed'
    """
    return Trainer(config, data=data).run(callback)
