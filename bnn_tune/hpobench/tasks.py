"""The recorded tasks of the BNN tabular benchmark: base config, grid, budget, search space.

Framework-free (no optuna/ray). Each task is one ``(optimizer, dataset, model)`` with a dense grid of the
hyperparameters its search space samples; every grid point is trained with ``len(seeds)`` training seeds
for ``epochs`` epochs by :mod:`bnn_tune.hpobench.record`. Hyperparameters a space samples that are not in
the grid (e.g. the real-valued Adam ``lr`` of the bop space) keep the base config's value in the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SUB_EPOCH_POINTS", "TASKS", "Task", "get_task"]

SUB_EPOCH_POINTS = 8
"""Sub-epoch flip-rate reports per epoch (one per 1/8 epoch)."""


@dataclass(frozen=True)
class Task:
    """One recorded task.

    Attributes:
        name: task name (``bop_digits``...).
        space: the :mod:`search_spaces` module whose ``suggest``/``naive_suggest`` the replay samples.
        base: the config every grid point starts from (dataset, model, epochs...).
        grid: ``{config key: recorded values}``; the table holds their full product.
        seeds: training seeds recorded per grid point.
        naive: whether the space's ``naive_suggest`` maps onto this grid (its keys are grid keys).
        description: one line for tables.
        fixed: sampled parameters the replay pins (``optuna.samplers.PartialFixedSampler``) because the grid
            holds only that value, e.g. the filter space's ``order`` (only order 2 is recorded).
    """

    name: str
    space: str
    base: dict[str, Any]
    grid: dict[str, tuple[float, ...]]
    seeds: tuple[int, ...] = (0, 1)
    naive: bool = True
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return int(self.base["epochs"])


_MNIST1D = {"dataset": "mnist1d", "model": "mlp", "batch_size": 128, "lr": 1e-3}
_BOP_GRID = {"gamma": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
             "threshold": (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)}

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "bop_digits", "bop",
            base={"dataset": "digits", "model": "mlp", "optimizer": "bop", "epochs": 15, "batch_size": 64,
                  "lr": 1e-3},
            grid=_BOP_GRID,
            description="Bop gamma x tau, digits MLP, 15 epochs",
        ),
        Task(
            "bop_mnist1d", "bop",
            base={**_MNIST1D, "optimizer": "bop", "epochs": 15},
            grid=_BOP_GRID,
            description="Bop gamma x tau, mnist1d MLP, 15 epochs (harder than digits: frozen runs end low)",
        ),
        Task(
            "latent_adam_mnist1d", "latent_adam",
            base={**_MNIST1D, "optimizer": "latent_adam", "epochs": 10, "clip_value": 1.0},
            grid={"latent_lr": (1e-4, 1e-3, 1e-2, 1e-1),
                  "weight_decay": (0.0, 1e-4, 1e-2),
                  "init_scale": (1e-3, 1e-2, 1e-1, 1.0)},
            description="latent Adam lr x weight decay x init scale, mnist1d MLP, 10 epochs",
        ),
        Task(
            "filter_mnist1d", "filters",
            base={**_MNIST1D, "optimizer": "filter", "order": 2, "epochs": 16},
            grid={"gamma": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                  "alpha": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)},
            naive=False, fixed={"order": 2},
            description="order-2 gradient filter gamma x alpha, mnist1d MLP, 16 epochs",
        ),
        Task(
            "bnew_mnist1d", "bnew",
            base={**_MNIST1D, "optimizer": "bnew", "epochs": 10},
            grid={"beta_T": (1e-2, 1e1, 1e4),
                  "latent_lr": (1e-4, 1e-3, 1e-2, 1e-1),
                  "t_lock": (0.5, 0.9)},
            naive=False,
            description="BNEW beta*T x latent lr x t_lock, mnist1d MLP, 10 epochs",
        ),
    )
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown hpobench task {name!r}. Known tasks: {sorted(TASKS)}.")
    return TASKS[name]
