"""``bnn-tune report RUN_DIR``: one self-contained HTML page about a search run.

The page has, for every search found under ``RUN_DIR``:

* the **ranking table** (completed trials by final ``val_acc``, then pruned/stopped trials by their best
  ``val_acc``, then failed ones; the searched hyperparameters; why a trial was pruned or failed);
* **flip-rate curves**: the log flip rate ``log(flip_rate + e^-9)`` (Helwegen et al. 2019, eq. 7) of every
  trial per epoch, coloured by outcome, best trial in black;
* **accuracy curves**: validation accuracy per epoch, same colours;
* **pruned vs completed**: trials and epochs spent per outcome, and each trial's best accuracy against
  its last log flip rate (collapsed runs sit at the left);
* **hyperparameter importance** (Optuna studies with at least two completed trials, Optuna's default
  evaluator);

and the **kernel benchmark** of every ``bench.json`` (written by ``bnn-tune bench`` / ``bnn-tune export``):
a table of the rows and the speed-up of the packed kernels over the float baseline per layer and batch.

What is read (no Ray import; Optuna only for Optuna storages):

* the search that ``RUN_DIR`` is the ``--out`` folder of, either backend
  (:func:`bnn_tune.search._outdir.resolve_search_dir`: ``summary.json``'s storage or Ray experiment, also
  when it lies outside ``RUN_DIR``), and besides it:
* Optuna: ``study.db`` (SQLite) or ``study.log`` / ``*.journal`` (journal file) directly in ``RUN_DIR``
  (``bnn-tune search --out RUN_DIR`` writes ``study.db``); every study in the storage, or ``--study``.
  Series come from the user attrs ``bnn_tune:val_acc`` and ``bnn_tune:log_flip_rate`` that
  :func:`bnn_tune.objective` records (``val_acc`` falls back to the intermediate values), reasons from
  ``bnn_tune:prune_reason`` / ``bnn_tune:fail_reason``.
* Ray Tune: every experiment directory below ``RUN_DIR`` (e.g. ``RUN_DIR/ray_results/<experiment>/``)
  whose trial directories hold ``params.json`` and ``result.json`` (one JSON line per epoch report of
  :func:`bnn_tune.trainable`). A trial with ``error.txt`` failed; one that reported fewer epochs than its ``epochs`` was pruned
  (stopped early; the ``stop_reason`` written by ``bnn_tune.plugins.ray.FlipRateStopper``/``FlipRateScheduler``
  says why when it was the collapse rule); the others completed.
* ``bench.json`` anywhere below ``RUN_DIR`` (e.g. ``RUN_DIR/export/bench.json``).

Images are PNGs drawn with matplotlib's Agg canvas and embedded as base64, so the HTML file can be
mailed or attached to a CI run as is. ``--png-dir`` also writes them as files.

Example:
    bnn-tune search --optimizer bop --samples 8 --epochs 5 --out runs/bop
    bnn-tune export runs/bop --out runs/bop/export
    bnn-tune report runs/bop            # -> runs/bop/report.html
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._imports import require
from ..cli import register_command
from ..plugins._outcome import CONFIG_ATTR, is_sub_epoch_result, parse_stop_reason
from ._outdir import LOOKED_FOR, resolve_search_dir, storage_url
from ._storage import make_storage, storage_file

__all__ = [
    "BenchRun",
    "SearchRun",
    "TrialRecord",
    "build_report",
    "find_runs",
    "load_bench",
    "load_optuna_runs",
    "load_ray_runs",
    "render_html",
    "write_report",
]

COMPLETE, PRUNED, FAIL, RUNNING = "COMPLETE", "PRUNED", "FAIL", "RUNNING"
_COLORS = {COMPLETE: "tab:blue", PRUNED: "tab:red", FAIL: "tab:gray", RUNNING: "tab:green"}
_LOG_FLOOR = -9.0  # log(0 + e^-9): a trial whose binary weights never flip


# ---------------------------------------------------------------------------------------------- data
@dataclass
class TrialRecord:
    """One trial of a search, whatever the framework.

    Attributes:
        trial_id: Optuna trial number or Ray trial directory name.
        state: ``COMPLETE``, ``PRUNED`` (pruned or stopped early), ``FAIL`` or ``RUNNING``.
        value: the objective (final ``val_acc``) for completed trials, else None.
        params: the searched hyperparameters.
        val_acc: validation accuracy per epoch.
        log_flip_rate: log flip rate per epoch.
        note: why the trial was pruned, stopped or failed.
        epochs_planned: the configured number of epochs, when known.
    """

    trial_id: str
    state: str
    value: float | None
    params: dict[str, Any]
    val_acc: list[float] = field(default_factory=list)
    log_flip_rate: list[float] = field(default_factory=list)
    note: str = ""
    epochs_planned: int | None = None

    @property
    def best_val_acc(self) -> float:
        finite = [v for v in self.val_acc if v is not None and math.isfinite(v)]
        return max(finite) if finite else float("nan")

    @property
    def epochs(self) -> int:
        return max(len(self.val_acc), len(self.log_flip_rate))


@dataclass
class SearchRun:
    """The trials of one Optuna study or one Ray Tune experiment."""

    kind: str  # "optuna" | "ray"
    name: str
    source: str
    trials: list[TrialRecord]
    importance: dict[str, float] | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def ranked(self) -> list[TrialRecord]:
        """Completed by value, then pruned/running by best accuracy, then failed."""
        order = {COMPLETE: 0, PRUNED: 1, RUNNING: 1, FAIL: 2}

        def key(t: TrialRecord) -> tuple[int, float]:
            v = t.value if t.state == COMPLETE and t.value is not None and math.isfinite(t.value) else t.best_val_acc
            return (order.get(t.state, 3), -(v if math.isfinite(v) else -1.0))

        return sorted(self.trials, key=key)

    def best(self) -> TrialRecord | None:
        done = [t for t in self.trials if t.state == COMPLETE and t.value is not None and math.isfinite(t.value)]
        return max(done, key=lambda t: t.value) if done else None  # type: ignore[arg-type,return-value]

    def searched_params(self) -> list[str]:
        """Parameters whose value differs between trials (all of them for a single trial)."""
        keys = sorted({k for t in self.trials for k in t.params})
        if len(self.trials) < 2:
            return keys
        return [k for k in keys if len({json.dumps(t.params.get(k), sort_keys=True, default=str)
                                         for t in self.trials}) > 1]


@dataclass
class BenchRun:
    """One ``bench.json`` (``{"meta": {...}, "rows": [...]}`` of ``bnn_tune.export.benchmark_model``)."""

    source: str
    meta: dict[str, Any]
    rows: list[dict[str, Any]]


def _finite_list(values: Any) -> list[float]:
    if not isinstance(values, (list, tuple)):
        return []
    out = []
    for v in values:
        try:
            out.append(float(v) if v is not None else float("nan"))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


# ---------------------------------------------------------------------------------------------- Optuna
def _optuna_storage_paths(run_dir: Path) -> list[Path]:
    found = [p for p in (run_dir / "study.db", run_dir / "study.log") if p.is_file()]
    found += sorted(p for p in run_dir.glob("*.journal") if p.is_file())
    return found


def _storage_for(path: Path) -> Any:
    return make_storage(storage_url(path), create=False)


def _importance(study: Any) -> dict[str, float] | None:
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    if len(done) < 2 or not any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        return None
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None


def load_optuna_runs(path: str | os.PathLike, *, study_name: str | None = None) -> list[SearchRun]:
    """The studies in an Optuna SQLite (``.db``) or journal (``.log``/``.journal``) file, or a storage URL."""
    optuna = require("optuna", feature="bnn-tune report on an Optuna study")

    from ..objective import FAIL_REASON_ATTR, FLIP_RATE_ATTR, PRUNE_REASON_ATTR, VAL_ACC_ATTR

    if isinstance(path, str) and ("://" in path or path.startswith("journal:")):
        storage, label = make_storage(path, create=False), path  # a storage URL (summary.json's "storage")
    else:
        storage, label = _storage_for(Path(path)), str(path)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is not None:
        if study_name not in names:
            raise ValueError(f"No study named {study_name!r} in {label!r}. Available: {sorted(names)}.")
        names = [study_name]
    runs = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = []
        for t in study.get_trials(deepcopy=False):
            state = t.state.name
            state = {"WAITING": RUNNING}.get(state, state)
            val = _finite_list(t.user_attrs.get(VAL_ACC_ATTR))
            if not val and t.intermediate_values:
                val = [float(t.intermediate_values[k]) for k in sorted(t.intermediate_values)]
            config = t.user_attrs.get(CONFIG_ATTR) or {}
            note = ""
            if state == PRUNED:
                note = str(t.user_attrs.get(PRUNE_REASON_ATTR) or "pruned by the study's pruner")
            elif state == FAIL:
                note = str(t.user_attrs.get(FAIL_REASON_ATTR) or "failed")
            value = t.value if state == COMPLETE else None
            trials.append(TrialRecord(
                trial_id=str(t.number), state=state, value=value, params=dict(t.params), val_acc=val,
                log_flip_rate=_finite_list(t.user_attrs.get(FLIP_RATE_ATTR)), note=note,
                epochs_planned=config.get("epochs") if isinstance(config, dict) else None,
            ))
        runs.append(SearchRun("optuna", name, label, trials, importance=_importance(study)))
    return runs


# ---------------------------------------------------------------------------------------------- Ray
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written when the run was interrupted
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _ray_trial(tdir: Path, params: dict[str, Any]) -> TrialRecord:
    rows = _read_jsonl(tdir / "result.json")
    rows = [r for r in rows if ("val_acc" in r or "log_flip_rate" in r or "flip_rate" in r)
            and not is_sub_epoch_result(r)]  # the trainable's reports inside the first epoch are not epochs
    val = [float(r.get("val_acc", float("nan"))) for r in rows]
    lfr = []
    for r in rows:
        if "log_flip_rate" in r:
            lfr.append(float(r["log_flip_rate"]))
        elif "flip_rate" in r:
            lfr.append(math.log(float(r["flip_rate"]) + math.exp(_LOG_FLOOR)))
    planned = params.get("epochs") if isinstance(params.get("epochs"), int) else None
    stop = next((str(r["stop_reason"]) for r in reversed(rows) if r.get("stop_reason")), "")
    reason_file = tdir / "bnn_tune_stop_reason.txt"
    if not stop and reason_file.is_file():
        stop = reason_file.read_text().strip()
    error = tdir / "error.txt"
    last = rows[-1].get("epoch", len(rows)) if rows else 0
    ran_all = planned is not None and isinstance(last, int) and last >= planned
    if error.is_file():
        text = error.read_text().strip().splitlines()
        state, note = FAIL, (text[-1] if text else "error.txt")
    elif stop and not ran_all:  # a stop decided on the last epoch changes nothing: the trial completed
        state, note = PRUNED, stop
    elif planned is not None and not ran_all:
        state, note = PRUNED, f"stopped after epoch {last} of {planned} (scheduler or stopper)"
    else:
        state, note = COMPLETE, ""
    value = val[-1] if state == COMPLETE and val else None
    short = re.match(r"^([A-Za-z0-9.]+_[0-9a-f]{5,}_\d+)", tdir.name)  # trainable_8f76b1f7_2_<params>_<date>
    return TrialRecord(short.group(1) if short else tdir.name, state, value, params, val, lfr, note, planned)


def load_ray_runs(run_dir: str | os.PathLike, *, also: Sequence[Path] = ()) -> list[SearchRun]:
    """Ray Tune experiments below ``run_dir`` (directories whose subdirectories hold ``params.json``), and the
    experiment folders ``also`` (a summary.json's ``experiment_path`` outside ``run_dir``)."""
    run_dir = Path(run_dir)
    experiments: dict[Path, list[Path]] = {}
    seen: set[Path] = set()
    for params in [*sorted(run_dir.rglob("params.json")), *(p for d in also for p in sorted(Path(d).glob("*/params.json")))]:
        tdir = params.parent
        if (tdir / "result.json").is_file() and tdir.resolve() not in seen:
            seen.add(tdir.resolve())
            experiments.setdefault(tdir.parent, []).append(tdir)
    runs = []
    for exp, tdirs in sorted(experiments.items()):
        trials = []
        for tdir in tdirs:
            try:
                loaded = json.loads((tdir / "params.json").read_text())
            except (OSError, json.JSONDecodeError):
                loaded = {}
            trials.append(_ray_trial(tdir, loaded if isinstance(loaded, dict) else {}))
        runs.append(SearchRun("ray", exp.name, str(exp), trials))
    return runs


# ---------------------------------------------------------------------------------------------- bench
def load_bench(run_dir: str | os.PathLike) -> list[BenchRun]:
    """Every ``bench.json`` below ``run_dir`` (``bnn-tune bench``/``export`` output)."""
    out = []
    for path in sorted(Path(run_dir).rglob("bench.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("rows"), list):
            out.append(BenchRun(str(path), dict(doc.get("meta") or {}), list(doc["rows"])))
    return out


def _is_local(storage: str, files: Sequence[Path]) -> bool:
    named = storage_file(storage)
    return named is not None and named[1].resolve() in {f.resolve() for f in files}


def find_runs(run_dir: str | os.PathLike, *, study_name: str | None = None) -> tuple[list[SearchRun], list[BenchRun]]:
    """All searches and benchmarks under ``run_dir`` (see the module docstring for the layouts)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR {str(run_dir)!r} is not a directory.")
    found = resolve_search_dir(run_dir)  # the --out folder of either backend (summary.json first)
    searches: list[SearchRun] = []
    local = _optuna_storage_paths(run_dir)
    if found is not None and found.backend == "optuna" and not _is_local(found.storage or "", local):
        searches += load_optuna_runs(found.storage or "", study_name=study_name)  # a storage outside the folder
    for path in local:
        searches += load_optuna_runs(path, study_name=study_name)
    outside = [e for e in (found.experiments if found is not None else ()) if not e.resolve().is_relative_to(
        run_dir.resolve())]
    searches += load_ray_runs(run_dir, also=outside)
    return searches, load_bench(run_dir)


# ---------------------------------------------------------------------------------------------- figures
def _figure(w: float = 7.0, h: float = 4.0, ncols: int = 1) -> tuple[Any, Any]:
    require("matplotlib", feature="bnn-tune report")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _curves(run: SearchRun, attr: str, ylabel: str, title: str, *, floor: float | None = None) -> bytes | None:
    best = run.best()
    drawn = [t for t in run.trials if getattr(t, attr)]
    if not drawn:
        return None
    fig, (ax,) = _figure()
    labelled: set[str] = set()
    for t in sorted(drawn, key=lambda t: t is best):  # best last, on top
        ys = getattr(t, attr)
        is_best = t is best
        label = f"best (trial {t.trial_id})" if is_best else (None if t.state in labelled else t.state.lower())
        if not is_best:
            labelled.add(t.state)
        ax.plot(range(1, len(ys) + 1), ys, color="black" if is_best else _COLORS.get(t.state, "tab:olive"),
                lw=2.4 if is_best else 1.0, alpha=1.0 if is_best else 0.65, label=label,
                marker="o" if len(ys) == 1 else None, ms=3)
    if floor is not None:
        ax.axhline(floor, color="0.5", ls=":", lw=0.8)
        ax.annotate("no flips (floor e^-9)", (1, floor), xytext=(2, 3), textcoords="offset points", fontsize=7,
                    color="0.4")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _outcomes(run: SearchRun) -> bytes | None:
    if not run.trials:
        return None
    fig, (ax1, ax2) = _figure(10.0, 4.0, ncols=2)
    states = [s for s in (COMPLETE, PRUNED, FAIL, RUNNING) if any(t.state == s for t in run.trials)]
    n = [sum(t.state == s for t in run.trials) for s in states]
    ep = [sum(t.epochs for t in run.trials if t.state == s) for s in states]
    xs = range(len(states))
    b1 = ax1.bar([x - 0.2 for x in xs], n, 0.4, color=[_COLORS[s] for s in states], label="trials")
    ax1b = ax1.twinx()
    b2 = ax1b.bar([x + 0.2 for x in xs], ep, 0.4, color=[_COLORS[s] for s in states], alpha=0.45, hatch="//",
                  label="epochs trained")
    for bars, vals, axis in ((b1, n, ax1), (b2, ep, ax1b)):
        for rect, v in zip(bars, vals):
            axis.annotate(str(v), (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center",
                          va="bottom", fontsize=8)
    ax1.set_xticks(list(xs))
    ax1.set_xticklabels([s.lower() for s in states])
    ax1.set_ylabel("trials (solid)")
    ax1b.set_ylabel("epochs trained (hatched)")
    total = sum(ep)
    saved_n = sum(max(0, (t.epochs_planned or t.epochs) - t.epochs) for t in run.trials if t.state == PRUNED)
    saved = f"; pruning saved {saved_n} epochs" if saved_n else ""
    ax1.set_title(f"outcomes: {len(run.trials)} trials, {total} epochs{saved}", fontsize=9)
    ax1.set_ylim(0, max(n) * 1.25 + 0.5)
    ax1b.set_ylim(0, max(ep) * 1.25 + 0.5)
    for s in states:
        sel = [t for t in run.trials if t.state == s and t.log_flip_rate and math.isfinite(t.best_val_acc)]
        if sel:
            ax2.scatter([t.log_flip_rate[-1] for t in sel], [t.best_val_acc for t in sel], color=_COLORS[s],
                        label=s.lower(), s=28, alpha=0.8, edgecolor="k", linewidth=0.3)
    best = run.best()
    if best is not None and best.log_flip_rate:
        ax2.scatter([best.log_flip_rate[-1]], [best.best_val_acc], marker="*", s=180, color="gold", edgecolor="k",
                    label=f"best (trial {best.trial_id})", zorder=5)
    ax2.axvline(_LOG_FLOOR, color="0.5", ls=":", lw=0.8)
    ax2.set_xlabel("log flip rate at the last epoch")
    ax2.set_ylabel("best val_acc")
    ax2.set_title("accuracy vs flip rate (collapsed runs sit at the left)", fontsize=9)
    ax2.grid(alpha=0.3)
    if ax2.collections:
        ax2.legend(fontsize=8, loc="best")
    return _png(fig)


def _importance_plot(run: SearchRun) -> bytes | None:
    if not run.importance:
        return None
    items = sorted(run.importance.items(), key=lambda kv: kv[1])
    fig, (ax,) = _figure(7.0, 0.45 * len(items) + 1.4)
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.annotate(f"{v:.2f}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("importance (Optuna's default evaluator, fANOVA)")
    ax.set_title("hyperparameter importance for the objective (final val_acc)", fontsize=10)
    ax.set_xlim(0, max(v for _, v in items) * 1.2 + 1e-9)
    return _png(fig)


def _bench_plot(bench: BenchRun) -> bytes | None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    rows = [r for r in bench.rows if isinstance(r.get("speedup"), dict) and r["speedup"]]
    if not rows:
        return None
    batches = sorted({r.get("batch") for r in rows}, key=lambda b: (b is None, b))
    bases = sorted({b for r in rows for b in r["speedup"]})
    per = max(len([r for r in rows if r.get("batch") == b]) for b in batches)
    fig, axes = _figure(max(5.0, 0.55 * per + 2.5) * len(batches), 4.6, ncols=len(batches))
    for ax, bs in zip(axes, batches):
        sel = [r for r in rows if r.get("batch") == bs]
        wbar = 0.8 / len(bases)
        for j, b in enumerate(bases):
            vals = [float(r["speedup"].get(b, float("nan"))) for r in sel]
            xs = [i + (j - (len(bases) - 1) / 2) * wbar for i in range(len(sel))]
            bars = ax.bar(xs, vals, wbar, label=f"vs {b}")
            for rect, v in zip(bars, vals):
                if math.isfinite(v):
                    ax.annotate(f"{v:.2g}x", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                                ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        # plain "0.5x / 1x / 2x" ticks: matplotlib's default log labels read "9x10^-1"
        finite = [v for r in sel for v in (float(x) for x in r["speedup"].values()) if math.isfinite(v) and v > 0]
        lo, hi = min(finite + [1.0]), max(finite + [1.0])
        ax.set_ylim(lo / 1.3, hi * 1.3)
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
                 if lo / 1.3 <= t <= hi * 1.3]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([f"{r.get('name') or 'layer'}\n[{r.get('scope', '')}]" for r in sel], rotation=40,
                           ha="right", fontsize=7)
        ax.set_ylabel("speed-up (baseline ms / packed ms)")
        ax.set_title(f"batch {bs}" + (" (latency)" if bs == 1 else ""), fontsize=10)
        ax.legend(fontsize=7)
    meta = bench.meta
    fig.suptitle(f"packed 1-bit kernels vs float: {meta.get('model', '?')} on {meta.get('device', '?')} "
                 f"({meta.get('statistic', 'median')} of {meta.get('repeats', '?')})", fontsize=10)
    return _png(fig)


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin-top:22px}table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}tr.COMPLETE td.s{color:#1f77b4}tr.PRUNED td.s{color:#d62728}tr.FAIL td.s{color:#777}
tr.best{font-weight:bold;background:#fffbe6}img{max-width:100%;border:1px solid #eee;margin:6px 0}
.muted{color:#777;font-size:12px}code{background:#f5f5f5;padding:1px 4px}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return ""
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def _img(png: bytes | None, alt: str, images: dict[str, bytes], key: str) -> str:
    if png is None:
        return f'<p class="muted">({html.escape(alt)}: no data)</p>'
    images[key] = png
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" data-name="{html.escape(key)}" src="data:image/png;base64,{data}">'


def _ranking_table(run: SearchRun, top: int) -> str:
    params = run.searched_params()
    best = run.best()
    head = ["rank", "trial", "state", "val_acc", "best val_acc", "epochs", "last log flip rate", *params, "note"]
    left = {"state", "note"}
    out = ["<table><tr>" + "".join(f'<th class="{"l" if h in left else ""}">{html.escape(h)}</th>' for h in head)
           + "</tr>"]
    for i, t in enumerate(run.ranked()[:top], 1):
        epochs = f"{t.epochs}" + (f"/{t.epochs_planned}" if t.epochs_planned else "")
        cells = [str(i), t.trial_id, t.state.lower(), _fmt(t.value), _fmt(t.best_val_acc), epochs,
                 _fmt(t.log_flip_rate[-1]) if t.log_flip_rate else "", *[_fmt(t.params.get(k)) for k in params],
                 t.note]
        cls = t.state + (" best" if t is best else "")
        tds = []
        for h, c in zip(head, cells):
            klass = "s l" if h == "state" else ("l" if h in left else "")
            tds.append(f'<td class="{klass}">{html.escape(c)}</td>')
        out.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>")
    out.append("</table>")
    if len(run.trials) > top:
        out.append(f'<p class="muted">{len(run.trials) - top} more trials not shown (--top {top}).</p>')
    return "\n".join(out)


def stop_rule(note: str) -> str:
    """The rule named by a stop reason (``"<rule>: <reason>"``, :func:`bnn_tune.plugins._outcome.format_stop_reason`):
    ``"flip-band: ..."`` -> ``flip-band``; ``"unrecorded"`` when the reason names no rule (a scheduler that
    records none, e.g. a plain ASHA).

    Example:
        >>> stop_rule("flip-early: log flip rate <= -8 at all 3 sub-epoch reports"), stop_rule("")
        ('flip-early', 'unrecorded')
    """
    parsed = parse_stop_reason(note)
    return parsed[0] if parsed else "unrecorded"


def stops_by_rule(run: SearchRun) -> dict[str, dict[str, int]]:
    """``{rule: {"trials", "epochs_trained", "epochs_saved"}}`` over the run's pruned/stopped trials (epochs saved
    = planned - trained, when the planned number is known)."""
    out: dict[str, dict[str, int]] = {}
    for t in run.trials:
        if t.state != PRUNED:
            continue
        row = out.setdefault(stop_rule(t.note), {"trials": 0, "epochs_trained": 0, "epochs_saved": 0})
        row["trials"] += 1
        row["epochs_trained"] += t.epochs
        row["epochs_saved"] += max(0, (t.epochs_planned or t.epochs) - t.epochs)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["epochs_saved"]))


def _stops_table(run: SearchRun) -> str:
    rows = stops_by_rule(run)
    if not rows:
        return '<p class="muted">No trial was pruned or stopped.</p>'
    out = ['<table><tr><th class="l">stopped by</th><th>trials</th><th>epochs trained</th><th>epochs saved</th></tr>']
    for rule, r in rows.items():
        out.append(f'<tr><td class="l">{html.escape(rule)}</td><td>{r["trials"]}</td><td>{r["epochs_trained"]}</td>'
                   f'<td>{r["epochs_saved"]}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _bench_table(bench: BenchRun) -> str:
    bases = sorted({b for r in bench.rows for b in (r.get("baseline_ms") or {})})
    head = ["scope", "name", "batch", "packed ms", *[f"{b} ms" for b in bases], *[f"speed-up vs {b}" for b in bases],
            "weights packed / fp32 (bytes)"]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in bench.rows:
        wb = r.get("weight_bytes") or {}
        cells = [r.get("scope", ""), r.get("name", ""), r.get("batch", ""), _fmt(r.get("packed_ms")),
                 *[_fmt((r.get("baseline_ms") or {}).get(b)) for b in bases],
                 *[(_fmt((r.get("speedup") or {}).get(b)) + "x") if (r.get("speedup") or {}).get(b) else ""
                   for b in bases],
                 f"{wb.get('packed', '')} / {wb.get('fp32', '')}"]
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


def build_report(searches: Sequence[SearchRun], benches: Sequence[BenchRun], *, title: str = "bnn-tune report",
                 top: int = 30) -> tuple[str, dict[str, bytes]]:
    """The HTML page and its images (``{name: png bytes}``, also embedded in the page)."""
    images: dict[str, bytes] = {}
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">generated {now} by <code>bnn-tune report</code>; {len(searches)} search(es), '
             f"{len(benches)} benchmark(s).</p>"]
    if not searches and not benches:
        parts.append("<p>Nothing found: no study.db/study.log, no Ray trial directories, no bench.json.</p>")
    for k, run in enumerate(searches):
        slug = f"{k}_{_slug(run.name)}"
        counts = ", ".join(f"{v} {s.lower()}" for s, v in sorted(run.counts().items()))
        best = run.best()
        parts.append(f'<h2 id="search-{slug}">{html.escape(run.kind.capitalize())} '
                     f"{'study' if run.kind == 'optuna' else 'experiment'} {html.escape(run.name)}</h2>")
        parts.append(f'<p>{len(run.trials)} trials ({html.escape(counts)}); source <code>{html.escape(run.source)}'
                     "</code>" + (f"; best: trial {html.escape(best.trial_id)} with val_acc {best.value:.4f}"
                                  if best is not None and best.value is not None else "; no completed trial")
                     + ".</p>")
        parts.append("<h3>Ranking</h3>" + _ranking_table(run, top))
        parts.append("<h3>Flip-rate curves</h3>")
        parts.append(_img(_curves(run, "log_flip_rate", "log flip rate  log(flips/weights/step + e^-9)",
                                  f"flip rate per epoch ({run.name})", floor=_LOG_FLOOR),
                          "flip-rate curves", images, f"{slug}_flip_rates"))
        parts.append("<h3>Accuracy curves</h3>")
        parts.append(_img(_curves(run, "val_acc", "validation accuracy", f"val_acc per epoch ({run.name})"),
                          "accuracy curves", images, f"{slug}_accuracy"))
        parts.append("<h3>Pruned vs completed</h3>")
        parts.append(_img(_outcomes(run), "pruned vs completed", images, f"{slug}_outcomes"))
        parts.append("<h3>What each rule saved</h3>" + _stops_table(run))
        if run.importance:
            parts.append("<h3>Hyperparameter importance</h3>")
            parts.append(_img(_importance_plot(run), "importance", images, f"{slug}_importance"))
    for k, bench in enumerate(benches):
        meta = bench.meta
        parts.append(f'<h2 id="bench-{k}">Kernel benchmark: {html.escape(str(meta.get("model", "?")))} on '
                     f"{html.escape(str(meta.get('device', '?')))}</h2>")
        facts = ", ".join(f"{key}={html.escape(_fmt(meta[key]))}" for key in
                          ("input_shape", "width", "depth", "statistic", "repeats", "torch_threads", "cpu", "gpu")
                          if meta.get(key) is not None)
        parts.append(f'<p>source <code>{html.escape(bench.source)}</code>; {facts}.</p>')
        parts.append(_bench_table(bench))
        parts.append(_img(_bench_plot(bench), "kernel benchmark", images, f"bench_{k}"))
    parts.append("</body></html>")
    return "\n".join(parts), images


def render_html(run_dir: str | os.PathLike, *, study_name: str | None = None, top: int = 30) -> tuple[str, dict[str, bytes]]:
    """Find everything under ``run_dir`` and build the page (see :func:`build_report`); a folder with nothing to
    report raises ``ValueError`` naming what was looked for (nothing is written)."""
    searches, benches = find_runs(run_dir, study_name=study_name)
    if not searches and not benches:
        raise ValueError(f"Nothing to report in {str(run_dir)!r}: looked for {LOOKED_FOR} and bench.json. Give the "
                         "--out folder of bnn-tune search or bench.")
    return build_report(searches, benches, title=f"bnn-tune report: {Path(run_dir).resolve().name}", top=top)


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 study_name: str | None = None, top: int = 30, png_dir: str | os.PathLike | None = None) -> Path:
    """Write the self-contained HTML report of ``run_dir`` (default ``RUN_DIR/report.html``).

    Args:
        run_dir: a run directory (see the module docstring for what is read).
        out: the HTML file to write.
        study_name: only this Optuna study.
        top: rows of each ranking table.
        png_dir: also write every image as ``<png_dir>/<name>.png``.

    Returns:
        The path of the HTML file.

    Example:
        >>> write_report("runs/bop")  # doctest: +SKIP
        PosixPath('runs/bop/report.html')
    """
    page, images = render_html(run_dir, study_name=study_name, top=top)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    if png_dir is not None:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
        for name, png in images.items():
            (Path(png_dir) / f"{name}.png").write_bytes(png)
    return path


# ---------------------------------------------------------------------------------------------- CLI
def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory: study.db/study.log, Ray results, bench.json")
    p.add_argument("--out", default=None, help="HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--study", default=None, dest="study_name", help="only this Optuna study")
    p.add_argument("--top", type=int, default=30, help="rows of each ranking table (default 30)")
    p.add_argument("--png-dir", default=None, dest="png_dir", help="also write the images as PNG files here")


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    # user errors (missing run dir, unknown study, unwritable --out) are answered by bnn_tune.cli.main
    path = write_report(args.run_dir, args.out, study_name=args.study_name, top=args.top, png_dir=args.png_dir)
    console.print(f"wrote {path}", soft_wrap=True, highlight=False)
    return 0


register_command("report", _add, _run)
