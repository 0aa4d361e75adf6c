"""Shared pieces of the search spaces: ranges (one source of truth for Optuna and Ray), helpers."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LogRange", "UniformRange", "check_overrides", "outside_space", "ray_distribution", "suggest_log",
           "suggest_recipe", "with_recipes"]


@dataclass(frozen=True)
class LogRange:
    """A log-uniform range ``[low, high]``, optionally with an explicit zero.

    With ``zero_below`` set, the sampled range is extended one decade down to ``zero_below / 10`` and
    every sample below ``zero_below`` is returned as exactly 0: the zero setting (e.g. Bop's tau = 0)
    gets the prior mass of one decade and stays reachable by TPE/CMA-ES, while the sampled parameter
    keeps its config name (so the same function works as Ray's ``OptunaSearch(space=...)``).
    """

    low: float
    high: float
    zero_below: float | None = None

    @property
    def sample_low(self) -> float:
        return self.low if self.zero_below is None else self.zero_below / 10.0

    def map(self, value: float) -> float:
        """The config value of a sample (0 for samples in the zero decade)."""
        return 0.0 if self.zero_below is not None and value < self.zero_below else float(value)

    def __contains__(self, value: float) -> bool:
        if value == 0:
            return self.zero_below is not None
        return self.low * (1 - 1e-12) <= value <= self.high * (1 + 1e-12)


@dataclass(frozen=True)
class UniformRange:
    """A uniform range ``[low, high]`` (e.g. BNEW's phase fractions)."""

    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def outside_space(module: Any, setting: Mapping[str, Any]) -> list[str]:
    """The keys of ``setting`` (a ``PAPER_SETTINGS`` entry) whose value the space ``module`` cannot sample.

    A key ``k`` is checked against the module's range ``K.upper()`` (:class:`LogRange`,
    :class:`UniformRange`), ``lr`` against :data:`REAL_LR`, ``order`` against ``ORDERS`` and ``k_schedule``
    against ``K_SCHEDULES``; ``source`` and ``note`` are documentation. A key with no such range is
    reported too (the space does not search it, so the setting is not inside the space).
    """
    bad = []
    for key, value in setting.items():
        if key in ("source", "note"):
            continue
        if key == "lr":
            ok = value in REAL_LR
        elif key.endswith("_schedule"):
            ok = value in getattr(module, f"{key[: -len('_schedule')].upper()}_SCHEDULES", ())
        elif key == "order":
            ok = value in getattr(module, "ORDERS", ())
        else:
            rng = getattr(module, key.upper(), None)
            ok = rng is not None and hasattr(rng, "low") and value in rng
        if not ok:
            bad.append(f"{key}={value!r}")
    return bad


def suggest_log(trial: Any, name: str, rng: LogRange) -> float:
    """``trial.suggest_float(name, ..., log=True)`` mapped through :meth:`LogRange.map`."""
    return rng.map(trial.suggest_float(name, rng.sample_low, rng.high, log=True))


class _LogWithZeroSampler:
    """Picklable sampler for ``tune.sample_from``: log-uniform with the zero decade mapped to 0."""

    def __init__(self, rng: LogRange) -> None:
        self.rng = rng

    def __call__(self, _spec: Any = None) -> float:
        lo, hi = math.log(self.rng.sample_low), math.log(self.rng.high)
        return self.rng.map(math.exp(random.uniform(lo, hi)))

    def __repr__(self) -> str:
        return f"log-uniform[{self.rng.low:g}, {self.rng.high:g}] or 0 (p={self._p_zero():.2f})"

    def _p_zero(self) -> float:
        lo, hi = math.log(self.rng.sample_low), math.log(self.rng.high)
        return (math.log(self.rng.zero_below) - lo) / (hi - lo) if self.rng.zero_below else 0.0


def ray_distribution(rng: LogRange) -> Any:
    """The Ray Tune domain of a :class:`LogRange` (imports ray lazily)."""
    from bnn_tune._imports import require

    tune = require("ray.tune", feature="search_spaces.<name>.ray_space()")
    if rng.zero_below is None:
        return tune.loguniform(rng.low, rng.high)
    return tune.sample_from(_LogWithZeroSampler(rng))


def check_overrides(optimizer: str, space: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` into a Ray space; a key that no config of ``optimizer`` accepts raises."""
    import dataclasses
    import difflib

    from bnn_tune.config import TrialConfig

    valid = {f.name for f in dataclasses.fields(TrialConfig)} - {"optimizer_params", "schedules"}
    valid |= set(space)
    try:
        from bnn_tune import optim

        spec = optim.get(optimizer)
        valid |= set(spec.hyperparameters) | {f"{k}_schedule" for k in (*spec.schedulable, "lr")}
    except ValueError:  # optimizer not registered in this installation: accept the space's own keys
        pass
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown key {key!r} for a {optimizer!r} space.{hint} Valid keys: {sorted(valid)}.")
    out = dict(space)
    out.update(overrides)
    return out


# the Adam learning rate of the real-valued parameters (BN, first/last layers), shared by all spaces:
# Bop paper: 1e-2 (CIFAR-10), 2.5e-3 (ImageNet); Adam's default 1e-3
REAL_LR = LogRange(1e-4, 3e-2)


# ----------------------------------------------------------------------------- training recipes (opt-in)
# Not in any space's ``suggest`` by default (the presets were measured without them): add them with
# ``with_recipes(space.suggest)`` or by calling ``suggest_recipe`` inside a custom space.
DISTILL_WEIGHT = LogRange(0.3, 3.0)
DISTILL_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
STEP1_WEIGHT_DECAY = LogRange(1e-6, 1e-2, zero_below=1e-6)


def suggest_recipe(trial: Any, optimizer: str, *, teacher: bool = True, init: bool = True,
                   two_step: bool = True) -> dict[str, Any]:
    """Training-recipe dimensions (:mod:`bnn_tune.recipes`) for ``optimizer``, as define-by-run calls.

    Samples ``teacher`` in ``[None, "twin"]`` (then ``distill_weight`` log-uniform in [0.3, 3] and
    ``distill_temperature`` in {1, 2, 4, 8}), ``init_from`` in ``[None, "twin"]`` and, for the
    latent-weight optimizers only, ``recipe`` in ``["one_step", "two_step"]`` (then ``step1_fraction``
    in [0.25, 0.75] and ``step1_weight_decay`` log-uniform in [1e-6, 1e-2] or 0). The twin's own budget
    (``teacher_epochs``, ``teacher_lr``) is not searched: set it in the base config.

    Example:
        >>> import optuna
        >>> params = suggest_recipe(optuna.trial.FixedTrial({"teacher": "twin", "distill_weight": 1.0,
        ...     "distill_temperature": 4.0, "init_from": None}), "bop")
        >>> sorted(params)
        ['distill_temperature', 'distill_weight', 'init_from', 'teacher']
    """
    from bnn_tune.config import TWO_STEP_OPTIMIZERS

    out: dict[str, Any] = {}
    if teacher:
        out["teacher"] = trial.suggest_categorical("teacher", [None, "twin"])
        if out["teacher"] is not None:
            out["distill_weight"] = suggest_log(trial, "distill_weight", DISTILL_WEIGHT)
            out["distill_temperature"] = trial.suggest_categorical("distill_temperature", list(DISTILL_TEMPERATURES))
    if init:
        out["init_from"] = trial.suggest_categorical("init_from", [None, "twin"])
    if two_step and optimizer in TWO_STEP_OPTIMIZERS:
        out["recipe"] = trial.suggest_categorical("recipe", ["one_step", "two_step"])
        if out["recipe"] == "two_step":
            out["step1_fraction"] = trial.suggest_float("step1_fraction", 0.25, 0.75)
            out["step1_weight_decay"] = suggest_log(trial, "step1_weight_decay", STEP1_WEIGHT_DECAY)
    return out


class with_recipes:  # noqa: N801 - used like a function: with_recipes(space.suggest)
    """A space's ``suggest`` plus :func:`suggest_recipe`'s dimensions (picklable, define-by-run).

    Args:
        suggest: a ``suggest(trial) -> dict`` whose result names its ``"optimizer"``.
        **kwargs: :func:`suggest_recipe`'s switches (``teacher``, ``init``, ``two_step``).

    Example:
        >>> import optuna, search_spaces
        >>> space = with_recipes(search_spaces.get("bop").suggest, init=False)
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> "teacher" in space(study.ask())
        True
    """

    def __init__(self, suggest: Any, **kwargs: bool) -> None:
        self.suggest = suggest
        self.kwargs = kwargs

    def __call__(self, trial: Any) -> dict[str, Any]:
        params = dict(self.suggest(trial))
        params.update(suggest_recipe(trial, str(params.get("optimizer", "")), **self.kwargs))
        return params
