"""One small scheduler for any hyperparameter in ``param_groups`` (gamma, threshold, beta, lr...).

A schedule multiplies a hyperparameter's initial value by a factor that depends on the epoch
(or, with ``per="step"``, the optimizer step). Specs are plain dicts (or the short string form) so they
fit in a flat Ray/Optuna config under ``<hyperparameter>_schedule``:

=====================================================  ==============================================
spec                                                   factor at time t (T = total epochs or steps)
=====================================================  ==============================================
``{"type": "constant"}``                               1
``{"type": "step", "every": 100, "factor": 0.1}``      ``factor ** (t // every)`` (Bop paper's gamma decay)
``{"type": "linear", "end_factor": 0.0}``              ``1 + (end_factor - 1) * t / T``
``{"type": "cosine", "end_factor": 0.0}``              ``end + (1 - end) * (1 + cos(pi t / T)) / 2``
``{"type": "exponential", "factor": 0.97}``            ``factor ** t``
=====================================================  ==============================================

String form: ``"step:every=100,factor=0.1"``. Every spec accepts ``"per": "epoch"`` (default) or
``"step"``. :class:`HyperparameterScheduler` writes ``group[key] = initial * factor(t)``; call
``step()`` once per epoch (or per optimizer step with ``per="step"``). Its ``state_dict`` stores the
time and the initial values, so a resumed run continues the same curve.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.SGD([p], lr=1.0)
    >>> s = HyperparameterScheduler(opt, "lr", {"type": "step", "every": 2, "factor": 0.1}, total=10)
    >>> [round(opt.param_groups[0]["lr"], 3) for _ in range(4) if s.step() is None]
    [1.0, 0.1, 0.1, 0.01]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["HyperparameterScheduler", "parse_schedule", "schedule_factor", "validate_schedule"]

_SPEC_KEYS = {
    "constant": set(),
    "step": {"every", "factor"},
    "linear": {"end_factor"},
    "cosine": {"end_factor"},
    "exponential": {"factor"},
}
_DEFAULTS = {"factor": 0.1, "end_factor": 0.0}


def parse_schedule(spec: str | Mapping[str, Any], key: str = "schedule") -> dict[str, Any]:
    """Normalise a schedule spec (dict or ``"type:k=v,..."`` string) and validate it."""
    if isinstance(spec, str):
        kind_text, _, rest = spec.partition(":")
        d: dict[str, Any] = {"type": kind_text.strip()}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            k, eq, v = item.partition("=")
            if not eq:
                raise ValueError(f"`{key}_schedule` item {item!r} must look like name=value.")
            d[k.strip()] = v.strip() if k.strip() == "per" else float(v)
    elif isinstance(spec, Mapping):
        d = dict(spec)
    else:
        raise ValueError(f"`{key}_schedule` must be a dict or a string, but got {spec!r}.")
    kind = d.get("type")
    if kind not in _SPEC_KEYS:
        raise ValueError(f"`{key}_schedule` type must be one of {sorted(_SPEC_KEYS)}, but got type={kind!r}.")
    allowed = _SPEC_KEYS[kind] | {"type", "per"}
    for k in d:
        if k not in allowed:
            raise ValueError(f"Unknown key {k!r} in `{key}_schedule` of type {kind!r}. Valid keys: {sorted(allowed)}.")
    d.setdefault("per", "epoch")
    if d["per"] not in ("epoch", "step"):
        raise ValueError(f"`{key}_schedule` per must be 'epoch' or 'step', but got per={d['per']!r}.")
    for k in _SPEC_KEYS[kind]:
        if k == "every":
            if k not in d:
                raise ValueError(f"`{key}_schedule` of type 'step' needs 'every'.")
            if not float(d[k]).is_integer() or d[k] < 1:
                raise ValueError(f"`every` must be an integer >= 1, but got every={d[k]!r}.")
            d[k] = int(d[k])
        else:
            d.setdefault(k, _DEFAULTS[k])
            if not 0 <= float(d[k]) <= (1 if kind != "exponential" else 1):
                raise ValueError(f"`{k}` must be in [0, 1], but got {k}={d[k]!r}.")
            d[k] = float(d[k])
    return d


def validate_schedule(key: str, spec: Any) -> dict[str, Any]:
    """Validate the ``<key>_schedule`` value of a config; returns the normalised spec."""
    return parse_schedule(spec, key)


def schedule_factor(spec: Mapping[str, Any], t: int, total: int) -> float:
    """The multiplicative factor of ``spec`` at time ``t`` of ``total``."""
    kind = spec["type"]
    frac = min(max(t / max(total, 1), 0.0), 1.0)
    if kind == "constant":
        return 1.0
    if kind == "step":
        return float(spec["factor"]) ** (t // int(spec["every"]))
    if kind == "linear":
        return 1.0 + (float(spec["end_factor"]) - 1.0) * frac
    if kind == "cosine":
        end = float(spec["end_factor"])
        return end + (1.0 - end) * (1.0 + math.cos(math.pi * frac)) / 2.0
    if kind == "exponential":
        return float(spec["factor"]) ** t
    raise ValueError(f"Unknown schedule type {kind!r}.")


class HyperparameterScheduler:
    """Drive ``param_group[key]`` of an optimizer along a schedule.

    Args:
        optimizer: any optimizer (a :class:`~bnn_tune.optim.CombinedOptimizer` included); only groups
            that have ``key`` are touched.
        key: the hyperparameter (``"gamma"``, ``"threshold"``, ``"lr"``...), as the config names it.
        spec: a schedule spec (see module docs).
        total: epochs (or steps, for ``per="step"``) of the run, for linear/cosine.
        param_key: the ``param_groups`` key written (default ``key``; e.g. ``"lr"`` for ``latent_lr``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, key: str, spec: str | Mapping[str, Any], *, total: int,
                 param_key: str | None = None):
        self.optimizer = optimizer
        self.key = key
        self.param_key = key if param_key is None else param_key
        self.spec = parse_schedule(spec, key)
        self.total = int(total)
        self.groups = [g for g in optimizer.param_groups if self.param_key in g]
        if not self.groups:
            raise ValueError(
                f"`{key}_schedule`: no parameter group of {type(optimizer).__name__} has a hyperparameter "
                f"{self.param_key!r}."
            )
        self.initial = [g[self.param_key] for g in self.groups]
        self.t = 0
        self._apply()

    @property
    def per(self) -> str:
        return str(self.spec["per"])

    def _apply(self) -> None:
        f = schedule_factor(self.spec, self.t, self.total)
        for g, v0 in zip(self.groups, self.initial):
            g[self.param_key] = v0 * f

    def step(self) -> None:
        """Advance one epoch (or step) and write the new values."""
        self.t += 1
        self._apply()

    def current(self) -> list[float]:
        return [g[self.param_key] for g in self.groups]

    def state_dict(self) -> dict[str, Any]:
        return {"key": self.key, "t": self.t, "initial": list(self.initial), "spec": dict(self.spec)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["key"] != self.key:
            raise ValueError(f"Scheduler state is for {state['key']!r}, not {self.key!r}.")
        self.t = int(state["t"])
        self.initial = list(state["initial"])
        self._apply()
