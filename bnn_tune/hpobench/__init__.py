"""BNN-HPO: a tabular benchmark of BNN training (recorded learning curves + replay).

``tasks()`` lists the recorded tasks; ``load(task)`` returns a task's table; ``replay(task, ...)`` runs a
real Optuna study whose objective reads the recorded curves (``optuna`` is imported only by the replay).
``design_tasks()`` / ``held_out_tasks()`` split the defined tasks into those a strategy may be tuned on and
those recorded and judged only once the default strategy is frozen.
"""

from __future__ import annotations

from typing import Any

from .table import Table, load, tasks
from .tasks import design_tasks, held_out_tasks

__all__ = ["Table", "design_tasks", "held_out_tasks", "load", "replay", "tasks"]


def replay(task: str, **kwargs: Any) -> dict[str, Any]:
    """Run one replayed search (see :func:`bnn_tune.hpobench._replay.replay`; imports optuna)."""
    from ._replay import replay as _replay

    return _replay(task, **kwargs)
