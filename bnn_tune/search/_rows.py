"""One row per trial, the same for both backends: ranking, live view, ``summary.json``, ``best_config.json``.

Each backend turns its own records (Optuna ``FrozenTrial``, Ray ``Result``/``Trial``) into :class:`TrialRow`;
everything after that is shared: the status comes from the rule that decided
(:func:`bnn_tune.plugins._outcome.trial_status`), the live line, the final ranking and ``summary.json`` count
the same statuses, and the best trial is the completed trial with the highest final ``val_acc``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ..plugins._outcome import count_statuses as _count

__all__ = ["SUMMARY_FORMAT", "LiveView", "TrialRow", "best_row", "count_statuses", "print_ranking", "rank",
           "write_outputs"]

SUMMARY_FORMAT = 1


@dataclass
class TrialRow:
    """A trial as the search reports it.

    Attributes:
        trial: Optuna trial number or Ray trial id (as a string).
        status: one of :data:`bnn_tune.plugins._outcome.STATUSES`, or ``"running"`` while it runs.
        val_acc: validation accuracy of its last epoch (the model that is exported).
        best_val_acc: its best epoch's validation accuracy.
        epochs: epochs trained (a stop inside the first epoch counts the fraction of sub-epoch points).
        params: the sampled parameters.
        config: the flat trial config it trained with (``bnn-tune fit --config`` takes it).
        note: the stop reason (``"<rule>: <reason>"``) or the error.
        log_flip_rate: of its last epoch.
        test_acc: test accuracy of its last epoch, when recorded.
        checkpoint: where its weights are (Optuna: the checkpoint file; Ray: the trial directory).
    """

    trial: str
    status: str
    val_acc: float | None = None
    best_val_acc: float | None = None
    epochs: float = 0
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    note: str = ""
    log_flip_rate: float | None = None
    test_acc: float | None = None
    checkpoint: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _finite(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def rank(rows: Iterable[TrialRow]) -> list[TrialRow]:
    """Completed trials first by final ``val_acc``, then the others by their best ``val_acc``."""
    def key(r: TrialRow) -> tuple[int, float]:
        if r.status == "completed" and _finite(r.val_acc):
            return (0, -float(r.val_acc))  # type: ignore[arg-type]
        return (1, -float(r.best_val_acc) if _finite(r.best_val_acc) else math.inf)

    return sorted(rows, key=key)


def best_row(rows: Iterable[TrialRow]) -> TrialRow | None:
    """The completed trial with the highest final ``val_acc`` (None when no trial completed)."""
    ranked = rank(rows)
    return ranked[0] if ranked and ranked[0].status == "completed" and _finite(ranked[0].val_acc) else None


def count_statuses(rows: Iterable[TrialRow]) -> dict[str, int]:
    """``{status: trials}`` in the order of :data:`STATUSES` (:func:`bnn_tune.plugins._outcome.count_statuses`),
    then ``running``."""
    rows = list(rows)
    counts = _count([r.status for r in rows if r.status != "running"])
    running = sum(r.status == "running" for r in rows)
    return {**counts, **({"running": running} if running else {})}


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.3g}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e3) else f"{v:.4g}"
    return "" if v is None else str(v)


def _epochs_text(e: float) -> str:
    return f"{e:g}" if float(e) != int(e) else str(int(e))


class LiveView:
    """The one progress display of a search, the same for both backends.

    A line per finished trial (its status, ``val_acc``, epochs, every sampled value in full and the stop reason),
    and a status line: trials running / done, the count per status, the best so far and the time elapsed.
    On a terminal the status line stays at the bottom (``rich.live``); piped (CI, ``| tee``), every line is
    printed once, in full, never cut to 80 columns.
    """

    def __init__(self, console: Any, *, n_trials: int, epochs: int, enabled: bool = True) -> None:
        self.console = console
        self.n_trials = n_trials
        self.epochs = epochs
        self.enabled = enabled
        self.rows: dict[str, TrialRow] = {}
        self.running: set[str] = set()
        self.t0 = time.perf_counter()
        self._live: Any = None

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> LiveView:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self._live = Live(self._status_text(), console=self.console, refresh_per_second=2, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        if self.enabled and self.rows:
            self.console.print(self._status_text(), soft_wrap=True)

    # -------------------------------------------------------------- events
    def started(self, trial: str) -> None:
        self.running.add(str(trial))
        self._refresh()

    def finished(self, row: TrialRow) -> None:
        self.running.discard(row.trial)
        if row.trial in self.rows and self.rows[row.trial].status == row.status:
            return
        self.rows[row.trial] = row
        if self.enabled:
            self.console.print(self._trial_line(row), soft_wrap=True, highlight=False)
        self._refresh()

    # -------------------------------------------------------------- text
    def _trial_line(self, r: TrialRow) -> str:
        val = f"val_acc {r.val_acc:.4f}" if _finite(r.val_acc) else "val_acc -"
        params = " ".join(f"{k}={_fmt(v)}" for k, v in r.params.items())
        note = f" -- {r.note}" if r.note else ""
        return (f"trial {r.trial}: {r.status}, {val}, epochs {_epochs_text(r.epochs)}/{self.epochs}"
                + (f", {params}" if params else "") + note)

    def _status_text(self) -> str:
        done = len(self.rows)
        best = best_row(self.rows.values())
        best_text = f"best val_acc {best.val_acc:.4f} (trial {best.trial})" if best else "best val_acc -"
        elapsed = time.perf_counter() - self.t0
        return (f"trials: {len(self.running)} running, {done} of {self.n_trials} done "
                f"({_counts_text(count_statuses(self.rows.values()))}); {best_text}; elapsed {elapsed:.0f} s")

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._status_text())


def print_ranking(console: Any, rows: Sequence[TrialRow], *, top: int, epochs: int, title: str) -> None:
    """The final ranking (a rich table; wide enough for every value and note when piped)."""
    from rich.table import Table

    ranked = rank(rows)
    params = sorted({k for r in ranked[:top] for k in r.params})
    table = Table(title=f"{title}: {_counts_text(count_statuses(rows))}", title_justify="left")
    for col in ("rank", "trial", "status", "val_acc", "best val_acc", f"epochs (of {epochs})", "log_flip_rate",
                *params, "note"):
        table.add_column(col, justify="left" if col in ("trial", "status", "note") else "right",
                         overflow="fold")
    for i, r in enumerate(ranked[:top], 1):
        table.add_row(str(i), r.trial, r.status, _fmt(r.val_acc), _fmt(r.best_val_acc), _epochs_text(r.epochs),
                      _fmt(r.log_flip_rate), *(_fmt(r.params.get(k)) for k in params), r.note)
    console.print(table)
    if len(ranked) > top:
        console.print(f"({len(ranked) - top} more trials in summary.json; --top N shows more)")


def write_outputs(settings: Any, rows: Sequence[TrialRow], *, elapsed_s: float, extra: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.json`` (one schema for both backends) and, when a trial completed, ``best_config.json``.

    Returns the summary.
    """
    from ..config import TrialConfig

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    best = best_row(rows)
    summary: dict[str, Any] = {
        "format_version": SUMMARY_FORMAT,
        "backend": settings.backend,
        "study": settings.study_name,
        "space": settings.space_name,
        "naive": settings.naive,
        "pruner": settings.pruner,
        "seed": settings.seed,
        "samples": settings.n_trials,
        "workers": settings.workers,
        "epochs": settings.epochs,
        "fixed": _jsonable(dict(settings.base_config)),
        "metric": "val_acc",
        "mode": "max",
        "storage": None,
        "experiment_path": None,
        **_jsonable(extra),
        "elapsed_s": elapsed_s,
        "counts": count_statuses(rows),
        "best": None,
        "trials": [r.as_json() for r in rank(rows)],
    }
    if best is not None and best.config is not None:
        flat = TrialConfig.from_dict(best.config).to_dict()
        flat = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}
        (out / "best_config.json").write_text(json.dumps(_jsonable(flat), indent=2, sort_keys=True) + "\n")
        summary["best"] = {"trial": best.trial, "val_acc": best.val_acc, "test_acc": best.test_acc,
                           "params": _jsonable(best.params), "config_file": str(out / "best_config.json"),
                           "checkpoint": best.checkpoint}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def why_none_completed(rows: Sequence[TrialRow], pruner: str) -> str:
    """One line for a search that ended without a completed trial: what ended the trials and what to change."""
    counts = count_statuses(rows)
    stopped = {s: n for s, n in counts.items() if s not in ("completed", "failed", "running")}
    hint = ""
    if stopped:
        hint = (f"; the strategy ({pruner}) stopped every trial that did not fail: run more --samples (or another "
                f"--seed), or --pruner none to train every trial to the end")
        if "flip-early" in stopped:
            hint += "; flip-early means the sampled optimizer settings never flipped a binary weight"
    elif counts.get("failed"):
        hint = "; every trial failed: see the errors above (the note of each trial in summary.json)"
    return f"no trial completed: {_counts_text(counts)}{hint}"
