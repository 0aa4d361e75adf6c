"""``run_search``: one search, either backend, the same console output and the same files in ``out``.

Both backends of ``bnn-tune search`` end here: :func:`run_search` prints what runs (the settings' line, with the
seed it used), the live view while trials run, the ranking at the end, and writes into ``settings.out``:

* ``summary.json``: one schema for both backends (:func:`bnn_tune.search._rows.write_outputs`): the settings,
  ``counts`` per status, ``best``, and a row per trial with its status, the rule that stopped it and why;
* ``best_config.json``: the best completed trial's flat config, as ``bnn-tune fit --config`` takes it (its
  ``threads`` key included, so the refit trains like the trial did);
* ``export/``: the best trial's packed model (:func:`bnn_tune.export.export_best`);
* the backend's own records: the Optuna study (``study.db`` by default) or Ray's results
  (``ray_results/<name>``), which ``--resume``, ``bnn-tune report`` and ``bnn-tune export`` read.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cli import make_console
from ._rows import LiveView, TrialRow, best_row, print_ranking, why_none_completed, write_outputs
from .settings import SearchSettings

__all__ = ["SearchResult", "run_search"]


@dataclass
class SearchResult:
    """What :func:`run_search` did: the rows, the summary written, and the exit code of the command."""

    rows: list[TrialRow]
    summary: dict[str, Any]
    best: TrialRow | None
    exit_code: int


def run_search(settings: SearchSettings, *, console: Any = None, export: bool = True) -> SearchResult:
    """Run ``settings`` on its backend and write the outputs (see the module docstring).

    Raises:
        bnn_tune.search.optuna.SearchInterrupted: Ctrl-C; the study or experiment is consistent and
            ``resume=True`` continues it.
    """
    console = console or make_console()
    if settings.verbose:
        console.print(settings.describe(), soft_wrap=True, highlight=False)
    view = LiveView(console, n_trials=settings.n_trials, epochs=settings.epochs, enabled=settings.verbose)
    t0 = time.perf_counter()
    with view:
        if settings.backend == "optuna":
            from .optuna import row_of_trial, run_optuna_search

            study = run_optuna_search(settings, view=view)
            rows = [row_of_trial(t, pruner=settings.pruner) for t in study.get_trials(deepcopy=False)]
            extra: dict[str, Any] = {"storage": settings.storage}
        else:
            from .ray import run_ray_search

            rows, extra, _ = run_ray_search(settings, view=view)
    elapsed = time.perf_counter() - t0
    summary = write_outputs(settings, rows, elapsed_s=elapsed, extra=extra)
    best = best_row(rows)
    if settings.verbose:
        print_ranking(console, rows, top=settings.top, epochs=settings.epochs,
                      title=f"{settings.study_name} ({settings.backend}): {len(rows)} trials in {elapsed:.0f} s")
    if best is None:
        console.print(f"[yellow]{why_none_completed(rows, settings.pruner)}[/yellow]", soft_wrap=True)
        return SearchResult(rows, summary, None, 1)
    out = settings.out_dir
    if settings.verbose:
        console.print(f"best: trial {best.trial}, val_acc {best.val_acc:.4f}; config -> {out / 'best_config.json'} "
                      f"(bnn-tune fit --config {out / 'best_config.json'})", soft_wrap=True, highlight=False)
    if export:
        _export(console, settings, best)
    storage = str(settings.storage)
    if settings.verbose and settings.backend == "optuna" and "://" in storage and not storage.startswith("journal:"):
        # any RDB URL (sqlite:///..., postgresql://...): optuna-dashboard opens it as the search did
        console.print(f"dashboard: optuna-dashboard {settings.storage}", soft_wrap=True, highlight=False)
    return SearchResult(rows, summary, best, 0)


def _checkpoint_of(settings: SearchSettings, row: TrialRow) -> str | None:
    if not row.checkpoint:
        return None
    path = Path(row.checkpoint)
    if settings.backend == "ray" and path.is_dir():  # the trial directory: its latest checkpoint is the last epoch's
        dirs = sorted(glob.glob(str(path / "checkpoint_*")))
        path = Path(dirs[-1]) / "checkpoint.pt" if dirs else path / "missing"
    return str(path) if path.is_file() else None


def _export(console: Any, settings: SearchSettings, best: TrialRow) -> None:
    """The best trial's packed model into ``<out>/export`` (a failure is reported; the search succeeded)."""
    from ..export import export_best
    from ..export._best import BestTrial

    source = BestTrial(config=dict(best.config or {}), metric="val_acc", value=float(best.val_acc or 0.0),
                       trial_id=best.trial, checkpoint=_checkpoint_of(settings, best),
                       source=f"{settings.backend}:{settings.study_name}")
    try:
        written = export_best(source, settings.out_dir / "export", bench_threads=1)
    except Exception as exc:  # noqa: BLE001 - the search itself succeeded; report and go on
        console.print(f"[yellow]export failed:[/yellow] {type(exc).__name__}: {exc}", soft_wrap=True)
        return
    if settings.verbose:
        accs = ""
        if isinstance(written.get("torch_test_acc"), float) and isinstance(written.get("packed_test_acc"), float):
            accs = (f"; test accuracy: PyTorch {written['torch_test_acc']:.4f}, packed {written['packed_test_acc']:.4f}"
                    + (f", agreement {written['agreement']:.2%}" if isinstance(written.get("agreement"), float) else ""))
        console.print(f"exported trial {best.trial} -> {os.path.join(settings.out_dir, 'export')} (weights: "
                      f"{written.get('weights')}){accs}", soft_wrap=True, highlight=False)
