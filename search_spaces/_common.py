"""Shared pieces of the search spaces: ranges (one source of truth for Optuna and Ray), helpers."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LogRange", "UniformRange", "check_overrides", "outside_space", "ray_distribution", "suggest_log"]


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
