"""Validated trial configuration.

A trial is configured by one flat dict (the shape Ray Tune and Optuna hand to a trainable):
common keys (below), the chosen binary optimizer's hyperparameters under the names its registry
spec lists (``bnn_tune.optim.get(name).hyperparameters``), and ``<hyperparameter>_schedule`` keys.
Unknown keys raise with the closest valid name; out-of-range values raise naming value and range.

Example:
    >>> cfg = TrialConfig.from_dict({"dataset": "digits", "optimizer": "latent_adam", "epochs": 3})
    >>> cfg.epochs
    3
    >>> TrialConfig.from_dict({"epoch": 3})
    Traceback (most recent call last):
    ...
    bnn_tune.config.ConfigError: Unknown key 'epoch'. Did you mean 'epochs'? ...
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import data, nn, optim
from ._validate import check_range
from .schedules import validate_schedule

__all__ = ["COMMON_KEYS", "ConfigError", "RECIPES", "TWO_STEP_OPTIMIZERS", "TrialConfig", "load_config_file"]

RECIPES: tuple[str, ...] = ("one_step", "two_step")
"""Values of the ``recipe`` key (:mod:`bnn_tune.recipes`)."""

TWO_STEP_OPTIMIZERS: tuple[str, ...] = ("bmd", "latent_adam")
"""Optimizers with latent real-valued weights that ``recipe="two_step"`` trains as real weights first."""

TWO_STEP_REJECTED = {
    "bop": "Bop keeps no latent weights: its weights are +-1 from the first step",
    "bop2": "Bop2ndOrder keeps no latent weights: its weights are +-1 from the first step",
    "filter": "the gradient filters keep no latent weights and take no weight decay",
    "bnew": "BNEW's own phase 1 already trains real weights with binary activations",
}


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a flat config from a JSON file (what ``--config`` takes).

    Raises:
        ConfigError: the file is missing, unreadable, not valid JSON (with line and column) or not a
            JSON object.
    """
    p = os.fspath(path)
    try:
        with open(p) as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"Config file {p!r} does not exist; check the --config path.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {p!r} cannot be read ({type(exc).__name__}: {exc}).") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Config file {p!r} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                          f"{exc.colno}.") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"Config file {p!r} must hold a JSON object of config keys, but holds a "
                          f"{type(cfg).__name__}.")
    return cfg


def _check_range(key: str, value: Any, low: float | None, high: float | None, *, low_open=False, high_open=False,
                 integer=False) -> None:
    """The project's one range check (:func:`bnn_tune._validate.check_range`), raising ``ConfigError``; an
    integer key also takes an integral float (``10.0`` from a JSON file or a Ray space)."""
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    check_range(key, value, low, high, low_open=low_open, high_open=high_open, integer=integer, error=ConfigError)


def _choice(key: str, value: Any, valid: list[str]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"`{key}` must be one of {valid}, but got {key}={value!r}.{hint}")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs, validated.

    Attributes:
        dataset: dataset registry name (``bnn_tune.data.list_datasets()``).
        model: model zoo name (``bnn_tune.nn.list_models()``).
        optimizer: binary optimizer registry name (``bnn_tune.optim.list_optimizers()``).
        epochs: training epochs (>= 1).
        batch_size: mini-batch size.
        seed: seeds torch, numpy and the data split; CPU runs are deterministic.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (GPU when one is visible).
        lr: Adam learning rate for the real-valued parameters.
        width: channel/unit multiplier of the model.
        depth: number of binary hidden layers of ``mlp``.
        activation: activation quantizer (``ste_sign``, ``approx_sign``, ``swish_sign``) or ``"none"``
            to keep real activations.
        bn_momentum: batch-norm momentum in PyTorch's convention (0.1 = Keras' 0.9, Larq's advice).
        val_fraction: fraction of the training data held out for validation (datasets without a
            fixed validation split).
        augment: standard augmentation for image datasets (CIFAR: pad 4, random crop, flip).
        data_root: directory of torchvision datasets.
        download: let torchvision download missing files.
        max_steps_per_epoch: cap optimizer steps per epoch (0 = full epoch); for quick tests.
        amp: bf16 autocast of the forward pass (GPU speed; on CPU it runs but is rarely faster).
        channels_last: NHWC memory layout for the model and 4-D inputs (faster convolutions on GPUs).
        compile: ``torch.compile`` the model's forward (needs a C++ compiler on CPU; the first steps
            pay the compilation).
        teacher: distillation teacher: ``None``, ``"twin"`` (train the real-valued twin first, in the
            same trial) or the path of a twin's weights (safetensors, or a ``torch.save``'d state dict
            read with ``weights_only=True``). See :mod:`bnn_tune.recipes`.
        teacher_epochs: epochs of the twin (``None`` = ``epochs``); only with a twin.
        teacher_lr: AdamW learning rate of the twin (``None`` = 3e-3); only with a twin.
        distill_weight: weight of the distillation term (``None`` = 1.0); only with a teacher.
        distill_temperature: softmax temperature T of distillation (``None`` = 4.0); only with a teacher.
        recipe: ``"one_step"`` or ``"two_step"`` (latent-weight optimizers: real weights with weight
            decay first, then binary weights without).
        step1_fraction: fraction of ``epochs`` in step 1 (``None`` = 0.5); only with ``two_step``.
        step1_weight_decay: decoupled weight decay of step 1 (``None`` = 5e-6); only with ``two_step``.
        init_from: ``None`` or ``"twin"``: binary/latent weights (and all real parameters) start from
            the trained twin's (their signs for the latent-free optimizers).
        teacher_cache_dir: folder where trained twins are cached by config hash (``None``: in memory
            only; the objective and trainable fill in their run folder).
        threads: torch's CPU thread count (``torch.set_num_threads``) while the trial builds, trains and
            evaluates, restored afterwards; ``None`` leaves the process's setting. CPU results depend on it
            (reductions split over threads add in another order), so a run repeats a trial exactly only
            with the trial's ``threads``.
        optimizer_params: the binary optimizer's hyperparameters (defaults filled in).
        schedules: ``{hyperparameter: schedule spec}`` from ``<name>_schedule`` keys.
    """

    dataset: str = "digits"
    model: str = "mlp"
    optimizer: str = "latent_adam"
    epochs: int = 20
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    lr: float = 1e-3
    width: float = 1.0
    depth: int = 2
    activation: str = "ste_sign"
    bn_momentum: float = 0.1
    val_fraction: float = 0.2
    augment: bool = True
    data_root: str = "data"
    download: bool = False
    max_steps_per_epoch: int = 0
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    teacher: str | None = None
    teacher_epochs: int | None = None
    teacher_lr: float | None = None
    distill_weight: float | None = None
    distill_temperature: float | None = None
    recipe: str = "one_step"
    step1_fraction: float | None = None
    step1_weight_decay: float | None = None
    init_from: str | None = None
    teacher_cache_dir: str | None = None
    threads: int | None = None
    optimizer_params: Mapping[str, Any] = field(default_factory=dict)
    schedules: Mapping[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrialConfig:
        """Validate a flat config dict (unknown keys and out-of-range values raise :class:`ConfigError`)."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"A config must be a mapping of keys to values, but got {type(config).__name__}.")
        config = dict(config)
        common = set(COMMON_KEYS)
        opt_name = config.get("optimizer", cls.optimizer)
        try:
            spec = optim.get(opt_name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        hp_keys = set(spec.hyperparameters)
        sched_keys = {f"{k}_schedule" for k in (*spec.schedulable, "lr")}
        valid = common | hp_keys | sched_keys
        for key in config:
            if key not in valid:
                close = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                others = sorted(set().union(*(set(optim.get(n).hyperparameters) for n in optim.list_optimizers())))
                extra = (
                    f" ({key!r} is a hyperparameter of another optimizer, not of {opt_name!r}.)"
                    if key in others
                    else ""
                )
                raise ConfigError(
                    f"Unknown key {key!r}.{hint}{extra} Valid keys for optimizer {opt_name!r}: {sorted(valid)}."
                )
        kwargs = {k: config[k] for k in common if k in config}
        hparams = {k: config.get(k, spec.hyperparameters[k]) for k in spec.hyperparameters}
        schedules = {k[: -len("_schedule")]: v for k, v in config.items() if k in sched_keys and v is not None}
        for int_key in ("epochs", "batch_size", "seed", "depth", "max_steps_per_epoch", "teacher_epochs", "threads"):
            if int_key in kwargs and isinstance(kwargs[int_key], float) and kwargs[int_key].is_integer():
                kwargs[int_key] = int(kwargs[int_key])
        self = cls(**kwargs, optimizer_params=hparams, schedules=schedules)
        self._validate(data, nn, spec)
        return self

    def _validate(self, data, nn, spec) -> None:
        _choice("dataset", self.dataset, data.list_datasets())
        _choice("model", self.model, nn.list_models())
        shape = data.dataset_input_shape(self.dataset)
        if shape is not None:
            try:
                nn.check_input_shape(self.model, shape)
            except ValueError as exc:
                raise ConfigError(f"model={self.model!r} cannot take dataset={self.dataset!r}: {exc}") from None
        _check_range("epochs", self.epochs, 1, None, integer=True)
        _check_range("batch_size", self.batch_size, 1, None, integer=True)
        _check_range("seed", self.seed, 0, 2**32 - 1, integer=True)
        _check_range("lr", self.lr, 0, None, low_open=True)
        _check_range("width", self.width, 0, 16, low_open=True)
        _check_range("depth", self.depth, 0, 64, integer=True)
        _check_range("bn_momentum", self.bn_momentum, 0, 1)
        _check_range("val_fraction", self.val_fraction, 0, 1, low_open=True, high_open=True)
        _check_range("max_steps_per_epoch", self.max_steps_per_epoch, 0, None, integer=True)
        if self.threads is not None:
            _check_range("threads", self.threads, 1, None, integer=True)
        _choice("activation", self.activation, [*nn.list_quantizers(), "none"])
        for key in ("augment", "download", "amp", "channels_last", "compile"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"`{key}` must be True or False, but got {key}={getattr(self, key)!r}.")
        self._validate_recipe()
        dev = self.device
        if not isinstance(dev, str) or not (dev in ("cpu", "cuda", "auto") or dev.startswith("cuda:")):
            raise ConfigError(f"`device` must be 'cpu', 'cuda', 'cuda:N' or 'auto', but got device={dev!r}.")
        try:
            binary_opt = spec.validate(self.optimizer_params, total_steps=self.epochs * 10, steps_per_epoch=10,
                                       epochs=self.epochs, lr=self.lr)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc)) from None
        if self.schedules:
            for key, sched in self.schedules.items():
                try:
                    validate_schedule(key, sched)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
                # `lr` is the real-valued Adam's; every other schedule must reach a key the binary
                # optimizer's param_groups carry (else the trainer would raise mid-setup)
                gkey = spec.group_key(key)
                if key != "lr" and not any(gkey in g for g in getattr(binary_opt, "param_groups", [])):
                    raise ConfigError(
                        f"`{key}_schedule`: no parameter group of optimizer {self.optimizer!r} carries {gkey!r}, "
                        f"so the schedule would drive nothing; schedulable keys: {['lr', *spec.schedulable]}."
                    )

    def _validate_recipe(self) -> None:
        """Training-recipe keys (:mod:`bnn_tune.recipes`): ranges, and no key that would do nothing."""
        teacher = self.teacher
        if teacher is not None and (not isinstance(teacher, str) or not teacher):
            raise ConfigError(f"`teacher` must be None, 'twin' or the path of a model file, but got teacher={teacher!r}.")
        if teacher not in (None, "twin") and not os.path.isfile(teacher):
            raise ConfigError(f"`teacher` must be None, 'twin' or the path of an existing model file, but got "
                              f"teacher={teacher!r} (no such file).")
        if self.init_from not in (None, "twin"):
            raise ConfigError(f"`init_from` must be None or 'twin', but got init_from={self.init_from!r}.")
        _choice("recipe", self.recipe, list(RECIPES))
        twin = "twin" in (teacher, self.init_from)
        needs = {"teacher_epochs": (twin, "a twin (teacher='twin' or init_from='twin')"),
                 "teacher_lr": (twin, "a twin (teacher='twin' or init_from='twin')"),
                 "distill_weight": (teacher is not None, "a teacher (teacher='twin' or a path)"),
                 "distill_temperature": (teacher is not None, "a teacher (teacher='twin' or a path)"),
                 "step1_fraction": (self.recipe == "two_step", "recipe='two_step'"),
                 "step1_weight_decay": (self.recipe == "two_step", "recipe='two_step'")}
        for key, (applies, what) in needs.items():
            value = getattr(self, key)
            if value is not None and not applies:
                raise ConfigError(f"`{key}` only applies with {what}, but got {key}={value!r}; drop it or set {what}.")
        if self.teacher_epochs is not None:
            _check_range("teacher_epochs", self.teacher_epochs, 1, None, integer=True)
        if self.teacher_lr is not None:
            _check_range("teacher_lr", self.teacher_lr, 0, None, low_open=True)
        if self.distill_weight is not None:
            _check_range("distill_weight", self.distill_weight, 0, None, low_open=True)
        if self.distill_temperature is not None:
            _check_range("distill_temperature", self.distill_temperature, 0, None, low_open=True)
        if self.step1_fraction is not None:
            _check_range("step1_fraction", self.step1_fraction, 0, 1, low_open=True, high_open=True)
        if self.step1_weight_decay is not None:
            _check_range("step1_weight_decay", self.step1_weight_decay, 0, None)
        if self.recipe == "two_step":
            if self.optimizer not in TWO_STEP_OPTIMIZERS:
                why = TWO_STEP_REJECTED.get(self.optimizer, "it has no latent real-valued weights")
                raise ConfigError(
                    f"`recipe='two_step'` applies to the latent-weight optimizers {list(TWO_STEP_OPTIMIZERS)}, but got "
                    f"optimizer={self.optimizer!r} ({why}); use recipe='one_step'.")
            if self.epochs < 2:
                raise ConfigError(f"`recipe='two_step'` needs epochs >= 2 (one per step), but got epochs={self.epochs!r}.")
        if self.teacher_cache_dir is not None and not isinstance(self.teacher_cache_dir, str):
            raise ConfigError(f"`teacher_cache_dir` must be a folder path or None, but got "
                              f"teacher_cache_dir={self.teacher_cache_dir!r}.")

    # ---------------------------------------------------------------- views
    def to_dict(self) -> dict[str, Any]:
        """The flat dict this config was built from (defaults filled in); ``from_dict`` round-trips."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.pop("optimizer_params")
        out.pop("schedules")
        out.update(self.optimizer_params)
        out.update({f"{k}_schedule": v for k, v in self.schedules.items()})
        return out

    def replace(self, **changes: Any) -> TrialConfig:
        """A new validated config with ``changes`` applied to the flat dict."""
        d = self.to_dict()
        d.update(changes)
        return TrialConfig.from_dict(d)

    @property
    def binary_activations(self) -> bool:
        return self.activation != "none"

    @property
    def activation_quantizer(self) -> str | None:
        return None if self.activation == "none" else self.activation


COMMON_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrialConfig) if f.name not in ("optimizer_params", "schedules")
)
"""The config keys every trial accepts, whatever its optimizer."""

optim.reserve_config_keys(COMMON_KEYS)
