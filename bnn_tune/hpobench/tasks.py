"""The recorded tasks of the BNN tabular benchmark: base config, grid, budget, search space.

Framework-free (no optuna/ray). Each task is one ``(optimizer, dataset, model)`` with a dense grid of the
hyperparameters its search space samples; every grid point is trained with ``len(seeds)`` training seeds
for ``epochs`` epochs by :mod:`bnn_tune.hpobench.record`. Hyperparameters a space samples that are not in
the grid (e.g. the real-valued Adam ``lr`` of most tasks) keep the base config's value in the table.

Tables v2 (issue 24): eight more tasks, each with >= 64 grid points and 3 training seeds, among them
convnets on real 8x8 and 28x28 digits, a 40-epoch task with cosine learning-rate schedules, a task whose
grid holds the real-valued ``lr``, and the ``bmd`` and ``bop2`` optimizers. Three of them are *held out*
(``held_out=True``): they are recorded only after the default search strategy's settings are frozen (issue
25), so that the default can be judged on tasks it was not designed on; the recorder refuses them until
then. Every task states its recording cost: ``epoch_seconds`` is one trial-epoch (training, validation and
test evaluation) measured on one torch thread of this project's 2-core VM, so ``cost_minutes`` is the
single-process recording time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SUB_EPOCH_POINTS", "TASKS", "Task", "design_tasks", "get_task", "held_out_tasks"]

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
        held_out: recorded only after the default strategy's settings are frozen (issue 25); the recorder
            refuses it until then.
        epoch_seconds: measured seconds of one trial-epoch on one torch thread (the recording's cost unit);
            for the five v1 tasks, their recordings' ``run_seconds`` per trial-epoch at load 9-21.
        superseded_by: a v1 table kept for the history whose grid the space cannot reach; the v2
            evaluation replays its successor instead.
    """

    name: str
    space: str
    base: dict[str, Any]
    grid: dict[str, tuple[float, ...]]
    seeds: tuple[int, ...] = (0, 1)
    naive: bool = True
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    held_out: bool = False
    epoch_seconds: float | None = None
    superseded_by: str | None = None

    @property
    def epochs(self) -> int:
        return int(self.base["epochs"])

    @property
    def n_configs(self) -> int:
        """Grid points: the product of the grid's value counts."""
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n

    @property
    def trial_epochs(self) -> int:
        """Trial-epochs of the whole recording: grid points x training seeds x epochs."""
        return self.n_configs * len(self.seeds) * self.epochs

    @property
    def cost_minutes(self) -> float | None:
        """Estimated single-process recording time (``trial_epochs * epoch_seconds / 60``), if measured."""
        return None if self.epoch_seconds is None else self.trial_epochs * self.epoch_seconds / 60.0


_MNIST1D = {"dataset": "mnist1d", "model": "mlp", "batch_size": 128, "lr": 1e-3}
_BOP_GRID = {"gamma": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
             "threshold": (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)}

# ------------------------------------------------------------------------------------------- tables v2
_SEEDS3 = (0, 1, 2)
# convnets: BinaryNet (binary 3x3 convs, three 2x2 max-pools, two binary FC layers, real first conv and
# classifier) at 1/8 width on 8x8 digits, at 1/16 width and 16 steps of 64 images per "epoch" on 28x28 MNIST
_CONV_DIGITS = {"dataset": "digits", "model": "binarynet", "width": 0.125, "batch_size": 64, "lr": 1e-3}
_CONV_MNIST = {"dataset": "mnist_5k", "model": "binarynet", "width": 0.0625, "batch_size": 64, "lr": 1e-3,
               "max_steps_per_epoch": 16}
Grid = dict[str, tuple[float, ...]]
# Bop: gamma in half decades where the flip rate moves fastest, tau over its whole range (0 included)
_BOP_GRID_64: Grid = {
    "gamma": (1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1),
    "threshold": (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3),
}
_BOP2_GRID: Grid = {
    "gamma": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
    "sigma": (1e-5, 1e-3, 1e-1),
    "threshold": (0.0, 1e-7, 1e-5, 1e-3, 1e-1),
}
_BMD_GRID: Grid = {
    "beta0": (0.1, 1.0, 10.0, 100.0),
    "beta_growth": (1.0, 1e1, 1e2, 1e3, 1e4),
    "latent_lr": (1e-4, 1e-3, 1e-2, 1e-1),
}
_LATENT_ADAM_GRID: Grid = {
    "latent_lr": (1e-4, 1e-3, 1e-2, 1e-1),
    "weight_decay": (0.0, 1e-5, 1e-4, 1e-3),
    "init_scale": (1e-3, 1e-2, 1e-1, 1.0),
}
# BNEW: reg at the lock (beta * T) over the space's useful decades, both phase boundaries inside its ranges
_BNEW_GRID: Grid = {
    "beta_T": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    "latent_lr": (1e-4, 1e-3, 1e-2, 1e-1),
    "t_start": (0.0, 0.25),
    "t_lock": (0.6, 0.9),
}
_COSINE = "cosine:end_factor=0.01"

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "bop_digits", "bop",
            base={"dataset": "digits", "model": "mlp", "optimizer": "bop", "epochs": 15, "batch_size": 64,
                  "lr": 1e-3},
            grid=_BOP_GRID,
            description="Bop gamma x tau, digits MLP, 15 epochs",
            epoch_seconds=1.21,
        ),
        Task(
            "bop_mnist1d", "bop",
            base={**_MNIST1D, "optimizer": "bop", "epochs": 15},
            grid=_BOP_GRID,
            description="Bop gamma x tau, mnist1d MLP, 15 epochs (harder than digits: frozen runs end low)",
            epoch_seconds=0.56,
        ),
        Task(
            "latent_adam_mnist1d", "latent_adam",
            base={**_MNIST1D, "optimizer": "latent_adam", "epochs": 10, "clip_value": 1.0},
            grid={"latent_lr": (1e-4, 1e-3, 1e-2, 1e-1),
                  "weight_decay": (0.0, 1e-4, 1e-2),
                  "init_scale": (1e-3, 1e-2, 1e-1, 1.0)},
            description="latent Adam lr x weight decay x init scale, mnist1d MLP, 10 epochs",
            epoch_seconds=1.91,
        ),
        Task(
            "filter_mnist1d", "filters",
            base={**_MNIST1D, "optimizer": "filter", "order": 2, "epochs": 16},
            grid={"gamma": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                  "alpha": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)},
            naive=False, fixed={"order": 2},
            description="order-2 gradient filter gamma x alpha, mnist1d MLP, 16 epochs",
            epoch_seconds=1.96,
        ),
        Task(
            "bnew_mnist1d", "bnew",
            base={**_MNIST1D, "optimizer": "bnew", "epochs": 10},
            grid={"beta_T": (1e-2, 1e1, 1e4),
                  "latent_lr": (1e-4, 1e-3, 1e-2, 1e-1),
                  "t_lock": (0.5, 0.9)},
            naive=False, superseded_by="bnew_betaT_mnist1d",
            description="BNEW beta*T x latent lr x t_lock, mnist1d MLP, 10 epochs",
            epoch_seconds=2.28,
        ),
        # ---- tables v2, design tasks (recorded first; the default strategy may be tuned on them)
        Task(
            "bop_conv_digits", "bop",
            base={**_CONV_DIGITS, "optimizer": "bop", "epochs": 20},
            grid={"gamma": (1e-5, 1e-4, 1e-3, 1e-2),
                  "threshold": (0.0, 1e-8, 1e-6, 1e-4),
                  "lr": (3e-4, 1e-3, 3e-3, 1e-2)},
            seeds=_SEEDS3, fixed={"gamma_schedule": "constant"}, epoch_seconds=0.31,
            description="Bop gamma x tau x the real-valued Adam lr, BinaryNet/8 on 8x8 digits, 20 epochs: a "
                        "convnet whose real first conv and classifier make lr matter beside the flip rate",
        ),
        Task(
            "bmd_mnist1d", "bmd",
            base={**_MNIST1D, "optimizer": "bmd", "epochs": 20},
            grid=_BMD_GRID, seeds=_SEEDS3, epoch_seconds=0.14,
            description="binary mirror descent beta0 x beta growth x latent lr, mnist1d MLP, 20 epochs: an "
                        "annealed (tanh -> sign) optimizer whose flip rate falls as beta grows",
        ),
        Task(
            "bop2_conv_digits", "bop2",
            base={**_CONV_DIGITS, "optimizer": "bop2", "epochs": 15},
            grid=_BOP2_GRID, seeds=_SEEDS3, epoch_seconds=0.31,
            description="Bop2ndOrder gamma x sigma x tau, BinaryNet/8 on 8x8 digits, 15 epochs: a normalized "
                        "flip statistic, so frozen and noisy runs sit at other tau than Bop's",
        ),
        Task(
            "latent_adam_cosine_mnist1d", "latent_adam",
            base={**_MNIST1D, "optimizer": "latent_adam", "epochs": 40, "clip_value": 1.0,
                  "latent_lr_schedule": _COSINE, "lr_schedule": _COSINE},
            grid=_LATENT_ADAM_GRID, seeds=_SEEDS3, epoch_seconds=0.13,
            description="latent Adam lr x weight decay x init scale with cosine decay of both learning rates "
                        "to 1%, mnist1d MLP, 40 epochs: a long run, where early stopping can pay most, and "
                        "curves that cross late as the schedule anneals",
        ),
        Task(
            "bnew_betaT_mnist1d", "bnew",
            base={**_MNIST1D, "optimizer": "bnew", "epochs": 20},
            grid=_BNEW_GRID, seeds=_SEEDS3, naive=False, epoch_seconds=0.36,  # (recorded at load 5-7)
            description="BNEW beta*T x latent lr x t_start x t_lock inside the bnew space's ranges, mnist1d MLP, "
                        "20 epochs (the v1 bnew_mnist1d grid recorded beta_T 1e1 and 1e4, outside the space, so "
                        "every replayed sample snapped to one beta_T)",
        ),
        Task(
            "bop_conv_mnist5k", "bop",
            base={**_CONV_MNIST, "optimizer": "bop", "epochs": 12},
            grid=_BOP_GRID_64, seeds=_SEEDS3, fixed={"gamma_schedule": "constant"},
            epoch_seconds=1.76,  # (the recording's, shard 2 at load 5-7; a pilot at load 2-4 measured 1.2)
            description="Bop gamma x tau, BinaryNet/16 on real 28x28 MNIST (mnist_5k), 12 epochs of 16 steps: "
                        "the 28x28 convnet of a live end-to-end run (issue 25)",
        ),
        # ---- tables v2, held-out tasks (record only once the default strategy's settings are frozen)
        Task(
            "latent_adam_conv_mnist5k", "latent_adam",
            base={**_CONV_MNIST, "optimizer": "latent_adam", "epochs": 12, "clip_value": 1.0,
                  "latent_lr_schedule": _COSINE},
            grid=_LATENT_ADAM_GRID, seeds=_SEEDS3, held_out=True, epoch_seconds=1.22,
            description="held out: latent Adam lr x weight decay x init scale (cosine latent lr), BinaryNet/16 "
                        "on 28x28 MNIST, 12 epochs of 16 steps: a latent-weight convnet",
        ),
        Task(
            "bmd_conv_digits", "bmd",
            base={**_CONV_DIGITS, "optimizer": "bmd", "epochs": 20},
            grid=_BMD_GRID, seeds=_SEEDS3, held_out=True, epoch_seconds=0.73,  # the recording's (load 8-11; a pilot at load 2-4: 0.34)
            description="held out: binary mirror descent beta0 x growth x latent lr, BinaryNet/8 on 8x8 "
                        "digits, 20 epochs",
        ),
        Task(
            "bop2_mlp_mnist5k", "bop2",
            base={"dataset": "mnist_5k", "model": "mlp", "batch_size": 128, "lr": 1e-3, "optimizer": "bop2",
                  "epochs": 30, "gamma_schedule": "linear:end_factor=0.01"},
            grid=_BOP2_GRID, seeds=_SEEDS3, held_out=True, epoch_seconds=0.37,  # the recording's (load 8-11; a pilot at load 2-4: 0.18)
            description="held out: Bop2ndOrder gamma x sigma x tau with gamma decayed linearly to 1% (as the "
                        "authors' CIFAR recipe), MLP on 28x28 MNIST, 30 epochs: an easy table where pruning "
                        "must not lose",
        ),
    )
}


def design_tasks() -> list[str]:
    """Names of the tasks a search strategy may be designed and tuned on (every task not held out)."""
    return [n for n, t in TASKS.items() if not t.held_out]


def held_out_tasks() -> list[str]:
    """Names of the held-out tasks: recorded and judged only after the default strategy is frozen."""
    return [n for n, t in TASKS.items() if t.held_out]


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown hpobench task {name!r}. Known tasks: {sorted(TASKS)}.")
    return TASKS[name]
