"""A recorded task's table: curves indexed by grid point, training seed and epoch (numpy only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .tasks import TASKS

__all__ = ["DATA_DIR", "Table", "load", "tasks"]

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Table:
    """One task's recorded curves.

    Attributes:
        name: task name.
        meta: the recording's metadata (grid, base config, command, date, machine, wall time).
        configs: grid points, index ``c`` of every array.
        curves: ``{name: float32 array (configs, seeds, epochs)}``; ``sub_flip_rate`` is
            ``(configs, seeds, epochs * sub_epoch_points)``.
    """

    name: str
    meta: dict[str, Any]
    configs: list[dict[str, Any]]
    curves: dict[str, np.ndarray]

    @property
    def epochs(self) -> int:
        return int(self.meta["epochs"])

    @property
    def n_seeds(self) -> int:
        return int(self.curves["val_acc"].shape[1])

    @property
    def sub_epoch_points(self) -> int:
        return int(self.meta["sub_epoch_points"])

    def final_val(self) -> np.ndarray:
        """Mean over training seeds of the last epoch's validation accuracy, per grid point (NaN -> 0)."""
        return np.nan_to_num(self.curves["val_acc"][:, :, -1].astype(np.float64), nan=0.0).mean(axis=1)

    @property
    def best_config(self) -> int:
        """Index of the grid point with the highest mean final validation accuracy."""
        return int(np.argmax(self.final_val()))

    @property
    def best_final_val(self) -> float:
        return float(self.final_val()[self.best_config])

    def target(self, tolerance: float = 0.005) -> float:
        """The replay's target: within ``tolerance`` (0.5 pp) of the table's best final val accuracy."""
        return self.best_final_val - tolerance


def tasks() -> list[str]:
    """Names of the tasks whose recorded data ships with the package (sorted)."""
    return sorted(n for n in TASKS if (DATA_DIR / f"{n}.npz").is_file())


@lru_cache(maxsize=16)
def _load(path: str) -> Table:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        curves = {k: z[k] for k in z.files if k != "meta"}
    return Table(meta["task"], meta, list(meta["configs"]), curves)


def load(task: str, *, data_dir: str | Path | None = None) -> Table:
    """The recorded table of ``task`` (``data_dir``: another folder of ``<task>.npz`` files)."""
    path = Path(data_dir) / f"{task}.npz" if data_dir is not None else DATA_DIR / f"{task}.npz"
    if not path.is_file():
        known = tasks() if data_dir is None else sorted(p.stem for p in Path(data_dir).glob("*.npz"))
        raise ValueError(f"Unknown hpobench task {task!r} (no {path.name} recorded). Recorded tasks: {known}.")
    return _load(str(path))
