"""Plots of a bnn-tune Optuna study: flip-rate curves, accuracy curves, parameter importance.

The flip-rate curves read the per-epoch series the objective stores in ``"bnn_tune:log_flip_rate"``
(one line per trial, coloured by final state, so collapsed-and-pruned runs stand out); accuracy curves,
importance and history are Optuna's own ``optuna.visualization.matplotlib`` plots.

Example:
    >>> from bnn_tune import viz
    >>> paths = viz.save_figures(study, "runs/bop/plots")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from ._imports import require
from .plugins._outcome import FLIP_RATE_ATTR

__all__ = ["plot_accuracy", "plot_flip_rates", "plot_optimization_history", "plot_param_importances", "save_figures"]

_STATE_COLORS = {"COMPLETE": "tab:blue", "PRUNED": "tab:red", "FAIL": "tab:gray", "RUNNING": "tab:green"}


def _optuna_mpl() -> Any:
    require("matplotlib", feature="bnn_tune.viz")
    optuna = require("optuna", feature="bnn_tune.viz")
    return optuna.visualization.matplotlib


def plot_flip_rates(study: Any, *, ax: Any = None, key: str = FLIP_RATE_ATTR, best_first: bool = True) -> Any:
    """Log flip rate per epoch of every trial (complete: blue, pruned: red, failed: grey; best: bold).

    Args:
        study: an ``optuna.Study`` run with :func:`bnn_tune.objective`.
        ax: matplotlib Axes to draw into (default: a new figure).
        key: user attr holding the per-epoch series.
        best_first: draw the best completed trial last and thick.

    Returns:
        The matplotlib Axes.
    """
    require("matplotlib", feature="bnn_tune.viz")
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    trials = study.get_trials(deepcopy=False)
    try:
        best = study.best_trial.number
    except ValueError:
        best = None
    seen_states = set()
    for t in sorted(trials, key=lambda t: t.number == best if best_first else 0):
        series = t.user_attrs.get(key)
        if not series:
            continue
        state = t.state.name
        is_best = t.number == best
        label = f"best (trial {t.number})" if is_best else (state.lower() if state not in seen_states else None)
        seen_states.add(state)
        ax.plot(range(1, len(series) + 1), series, color="black" if is_best else _STATE_COLORS.get(state, "tab:olive"),
                lw=2.5 if is_best else 1.0, alpha=1.0 if is_best else 0.6, label=label)
    ax.axhline(-9.0, color="0.6", ls=":", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("log flip rate  log(flips/weights/step + e^-9)")
    ax.set_title(f"Flip rate of every trial ({study.study_name})")
    if ax.lines:
        ax.legend(loc="best", fontsize=8)
    return ax


def plot_accuracy(study: Any) -> Any:
    """Validation accuracy per epoch of every trial (Optuna's ``plot_intermediate_values``)."""
    mpl = _optuna_mpl()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = mpl.plot_intermediate_values(study)
    ax.set_ylabel("val_acc")
    return ax


def plot_param_importances(study: Any, **kwargs: Any) -> Any:
    """Hyperparameter importance (Optuna's fANOVA-based ``plot_param_importances``); needs >= 2 completed
    trials with varying parameters."""
    mpl = _optuna_mpl()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mpl.plot_param_importances(study, **kwargs)


def plot_optimization_history(study: Any) -> Any:
    """Best value so far per trial (Optuna's ``plot_optimization_history``)."""
    mpl = _optuna_mpl()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mpl.plot_optimization_history(study)


def save_figures(study: Any, out_dir: str | Path, *, fmt: str = "png") -> dict[str, Path]:
    """Write every plot that the study's data supports to ``out_dir``; returns ``{name: path}``.

    Importance needs at least two completed trials with finite values; it is skipped otherwise.
    """
    require("matplotlib", feature="bnn_tune.viz")
    import matplotlib.pyplot as plt  # the caller's backend (headless matplotlib picks Agg by itself)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    makers = {"flip_rates": lambda: plot_flip_rates(study), "accuracy": lambda: plot_accuracy(study),
              "history": lambda: plot_optimization_history(study)}
    if len(done) >= 2 and any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        makers["importance"] = lambda: plot_param_importances(study)
    paths = {}
    for name, make in makers.items():
        ax = make()
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        path = out / f"{name}.{fmt}"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[name] = path
    return paths
