"""Tuned configurations per (optimizer, dataset, model), each with how it was found.

The presets live in ``presets.json`` next to this module (``{"format_version": 1, "presets": [...]}``);
each entry holds the flat ``config`` (optimizer hyperparameters and the training keys the tuning used) and
its ``provenance``: the exact sweep ``command``, the ``date`` (ISO 8601), the ``metric`` optimised, its
``value``, and optionally ``n_trials`` and ``notes``. :func:`record` appends or replaces an entry (used by
the benchmark scripts that produce them); :func:`get` and :func:`list` read them.

Example:
    >>> from bnn_tune.search_spaces import presets
    >>> all(isinstance(p, presets.Preset) for p in presets.list())
    True
"""

from __future__ import annotations

import builtins
import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PRESETS_PATH", "Preset", "Provenance", "get", "list", "record"]

PRESETS_PATH = Path(__file__).with_name("presets.json")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Provenance:
    """How a preset was found.

    Attributes:
        command: the command line that ran the sweep (reproducible as written).
        date: ISO 8601 date (UTC) of the sweep.
        metric: the optimised metric (e.g. ``"val_acc"``).
        value: the metric's value for this configuration.
        n_trials: trials in the sweep (0 = unknown).
        notes: free text (hardware, caveats).
    """

    command: str
    date: str
    metric: str
    value: float
    n_trials: int = 0
    notes: str = ""


@dataclass(frozen=True)
class Preset:
    """A tuned flat configuration with its key and :class:`Provenance`."""

    optimizer: str
    dataset: str
    model: str
    config: Mapping[str, Any]
    provenance: Provenance
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_config(self, **overrides: Any) -> dict[str, Any]:
        """The flat config (``optimizer``, ``dataset``, ``model`` included), with ``overrides`` applied."""
        out = {"optimizer": self.optimizer, "dataset": self.dataset, "model": self.model, **self.config}
        out.update(overrides)
        return out


def _load(path: str | os.PathLike | None = None) -> builtins.list[Preset]:
    path = Path(path or PRESETS_PATH)
    if not path.exists():
        return []
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: `format_version` must be {FORMAT_VERSION}, but got {doc.get('format_version')!r}.")
    out = []
    for e in doc.get("presets", []):
        out.append(Preset(e["optimizer"], e["dataset"], e["model"], dict(e["config"]),
                          Provenance(**e["provenance"]), dict(e.get("extra", {}))))
    return out


def list(*, path: str | os.PathLike | None = None) -> builtins.list[Preset]:  # noqa: A001 - public API name
    """Every stored preset, sorted by (optimizer, dataset, model)."""
    return sorted(_load(path), key=lambda p: (p.optimizer, p.dataset, p.model))


def get(optimizer: str, dataset: str = "digits", model: str = "mlp", *,
        path: str | os.PathLike | None = None) -> Preset:
    """The preset tuned for ``(optimizer, dataset, model)``.

    Raises:
        KeyError: naming the missing key and the available ones.
    """
    for p in _load(path):
        if (p.optimizer, p.dataset, p.model) == (optimizer, dataset, model):
            return p
    have = [(p.optimizer, p.dataset, p.model) for p in list(path=path)]
    raise KeyError(f"No preset for optimizer={optimizer!r}, dataset={dataset!r}, model={model!r}. "
                   f"Available: {have}.")


def record(optimizer: str, dataset: str, model: str, config: Mapping[str, Any], *, command: str, metric: str,
           value: float, n_trials: int = 0, notes: str = "", date: str | None = None,
           path: str | os.PathLike | None = None) -> Preset:
    """Store (or replace) the preset for ``(optimizer, dataset, model)`` and return it.

    ``config`` is validated with :class:`bnn_tune.TrialConfig` first, so a preset always loads.
    """
    from bnn_tune.config import TrialConfig

    if not command or not metric:
        raise ValueError("A preset needs its provenance: `command` and `metric` must be non-empty.")
    flat = {k: v for k, v in dict(config).items() if k not in ("optimizer", "dataset", "model")}
    TrialConfig.from_dict({"optimizer": optimizer, "dataset": dataset, "model": model, **flat})
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    preset = Preset(optimizer, dataset, model, flat, Provenance(command, date, metric, float(value), n_trials, notes))
    path = Path(path or PRESETS_PATH)
    entries = [p for p in _load(path) if (p.optimizer, p.dataset, p.model) != (optimizer, dataset, model)]
    entries.append(preset)
    entries.sort(key=lambda p: (p.optimizer, p.dataset, p.model))
    doc = {"format_version": FORMAT_VERSION,
           "presets": [{"optimizer": p.optimizer, "dataset": p.dataset, "model": p.model, "config": dict(p.config),
                        "provenance": asdict(p.provenance), **({"extra": dict(p.extra)} if p.extra else {})}
                       for p in entries]}
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return preset
