"""BNN-HPO: a tabular benchmark of BNN training (recorded learning curves + replay).

``tasks()`` lists the recorded tasks; ``load(task)`` returns a task's table; ``replay(task, ...)`` runs a
real Optuna study whose objective reads the recorded curves (``optuna`` is imported only by the replay).
"""

from __future__ import annotations

from typing import Any

from .table import Table, load, tasks

__all__ = ["Table", "load", "replay", "tasks"]


def replay(task: str, **kwargs: Any) -> dict[str, Any]:
    """Run one replayed search (see :func:`bnn_tune.hpobench._replay.replay`; imports optuna)."""
    from ._replay import replay as _replay

    return _replay(task, **kwargs)
