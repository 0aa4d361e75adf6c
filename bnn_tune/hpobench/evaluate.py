"""Many replayed searches -> figures (used by ``bnn-tune hpobench`` and ``benchmarks/hpobench_eval.py``).

v1 (fixed 60-trial studies): medians and interquartile ranges of trials / trial-epochs to the target
(:func:`aggregate`). v2, the protocol of BNN-HPO v2: every study spends the same budget of trial-epochs;
after each budget in :data:`BUDGETS` (units of E = one full training) the *incumbent* is the completed trial
with the best single-seed val (as a user would pick it, :func:`incumbent`), and it is scored on its grid
cell's means over all training seeds (:func:`score_incumbent`): at the target (within 0.5 pp of the best
cell's mean val) or not, and its normalized val and test regret. Over sampler seeds: shares and medians
with bootstrap 95% intervals (:func:`bootstrap_ci`), paired differences (:func:`paired_share_difference`),
average ranks across tasks (:func:`average_ranks`) and the best baseline chosen leave-one-task-out
(:func:`loto_choice`). Numpy only; the replays themselves import optuna.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["BUDGETS", "aggregate", "at_budgets", "average_ranks", "bootstrap_ci", "budget_to_share", "cell_scores",
           "incumbent", "loto_choice", "paired_share_difference", "parse_seeds", "run_many", "score_incumbent",
           "summarize_budgets", "verdict"]


def parse_seeds(text: str) -> list[int]:
    """``"0-49"`` -> 0..49; ``"1,5,7"``; ``"1000-1039,7"``. Bad text raises ``ValueError`` naming it."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            if dash:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"bad seed range {part!r} in {text!r}; use e.g. '0-49' or '1,2,3' (non-negative, low-high)") from None
    if not out or min(out) < 0:
        raise ValueError(f"bad seeds {text!r}; use e.g. '0-49' or '1,2,3' (non-negative integers)")
    return out


def run_many(task: str, pruner: str, seeds: Iterable[int], **kwargs: Any) -> list[dict[str, Any]]:
    """One :func:`bnn_tune.hpobench.replay` per seed (same other arguments)."""
    from ._replay import replay

    return [replay(task, pruner=pruner, seed=s, **kwargs) for s in seeds]


def _q(xs: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(xs, dtype=np.float64)
    return tuple(float(np.percentile(a, q, method="nearest")) for q in (50, 25, 75))  # type: ignore[return-value]


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and IQR (25th, 75th percentile; ``inf`` where a search never reached the target) of the
    replay results, plus the fraction that reached the target and that pruned the table's best config."""
    inf = math.inf
    out: dict[str, Any] = {"n": len(results)}
    for key in ("trials_to_target", "trial_epochs_to_target"):
        out[key] = _q([inf if r[key] is None else r[key] for r in results])
    for key in ("trial_epochs_total", "best_final_val_acc", "best_test_acc"):
        out[key] = _q([r[key] for r in results])
    out["reached"] = sum(r["trials_to_target"] is not None for r in results) / max(len(results), 1)
    out["best_config_pruned"] = sum(bool(r["best_config_pruned"]) for r in results) / max(len(results), 1)
    rules: dict[str, int] = {}
    for r in results:
        for k, v in r["stop_rules"].items():
            rules[k] = rules.get(k, 0) + v
    out["stop_rules"] = rules
    return out


# --- BNN-HPO v2: equal trial-epoch budgets (issue 24) ----------------------------------------------------------

BUDGETS: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
"""The protocol's budgets, in units of E = one full training (the task's epochs) of trial-epochs."""


def cell_scores(table: Any) -> dict[str, np.ndarray]:
    """Per grid cell, the mean over all training seeds of the final val and test accuracy (NaN counts 0, as a
    diverged run scores nothing): the scores the protocol's target and regrets are taken on."""
    c = table.curves
    val = np.nan_to_num(np.asarray(c["val_acc"][:, :, -1], dtype=np.float64), nan=0.0).mean(axis=1)
    test = np.nan_to_num(np.asarray(c["test_acc"][:, :, -1], dtype=np.float64), nan=0.0).mean(axis=1)
    return {"val": val, "test": test}


def incumbent(trials: Sequence[Sequence[Any]], limit: float) -> int | None:
    """The grid cell a user would pick after spending ``limit`` trial-epochs: the completed trial with the best
    single-seed final val accuracy among those that ended within ``limit`` (trials run one after another, so a
    trial ends at the cumulative cost of the trials up to it). ``trials``: ``(cost, cell, value or None)`` in
    order, as :func:`bnn_tune.hpobench.replay` returns them. None if no trial completed in time.

    Example:
        >>> incumbent([(1.0, 4, 0.5), (0.25, 7, None), (1.0, 2, 0.6), (1.0, 9, 0.9)], limit=2.25)
        2
        >>> incumbent([(0.125, 3, None)], limit=5.0) is None
        True
    """
    spent, best, cell = 0.0, -math.inf, None
    for cost, ci, value in trials:
        spent += float(cost)
        if spent > limit + 1e-9:
            break
        if value is not None and math.isfinite(value) and value > best:
            best, cell = value, int(ci)
    return cell


def score_incumbent(cell: int | None, scores: dict[str, np.ndarray], tolerance: float = 0.005) -> dict[str, Any]:
    """Whether ``cell`` is a target cell (its mean val within ``tolerance`` of the best cell's mean val) and its
    normalized val and test regrets (``(best - cell) / (best - worst)`` over the cells' means, 0 = the best
    cell, 1 = the worst). A study with no incumbent (``cell`` None) is not at the target and has regret 1, so
    paired comparisons keep the seeds where a strategy failed.

    Example:
        >>> import numpy as np
        >>> s = {"val": np.array([0.5, 0.8, 0.796, 0.6]), "test": np.array([0.4, 0.7, 0.8, 0.6])}
        >>> r = score_incumbent(2, s)
        >>> r["at_target"], round(r["val_regret"], 4), round(r["test_regret"], 4)
        (True, 0.0133, 0.0)
        >>> score_incumbent(None, s)["val_regret"]
        1.0
    """
    if cell is None:
        return {"at_target": False, "val_regret": 1.0, "test_regret": 1.0}
    out: dict[str, Any] = {}
    for key in ("val", "test"):
        s = scores[key]
        hi, lo = float(s.max()), float(s.min())
        out[f"{key}_regret"] = (hi - float(s[cell])) / (hi - lo) if hi > lo else 0.0
    out["at_target"] = bool(scores["val"][cell] >= float(scores["val"].max()) - tolerance - 1e-12)
    return out


def at_budgets(trials: Sequence[Sequence[Any]], scores: dict[str, np.ndarray], epochs: int,
               budgets: Iterable[float] = BUDGETS) -> dict[float, dict[str, Any]]:
    """:func:`score_incumbent` of the incumbent after each budget (in units of E = ``epochs`` trial-epochs)."""
    return {float(b): score_incumbent(incumbent(trials, float(b) * epochs), scores) for b in budgets}


def bootstrap_ci(values: Sequence[float] | np.ndarray, stat: Any = np.median, *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """``(stat(values), low, high)``: the percentile bootstrap ``level`` interval of ``stat`` over ``values``
    (resampled with replacement ``n_boot`` times, deterministic in ``seed``).

    Example:
        >>> bootstrap_ci([1.0, 1.0, 1.0])
        (1.0, 1.0, 1.0)
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boots = np.apply_along_axis(stat, 1, a[idx]) if stat is not np.mean else a[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [50 * (1 - level), 100 - 50 * (1 - level)])
    return (float(stat(a)), float(lo), float(hi))


def paired_share_difference(a: Sequence[bool], b: Sequence[bool], *, n_boot: int = 2000,
                            seed: int = 0) -> tuple[float, float, float]:
    """Share at target of ``a`` minus that of ``b`` on the same sampler seeds (index i = seed i in both), with
    a paired percentile bootstrap 95% interval (seeds resampled jointly). Seeds where a strategy found no
    incumbent count as not at the target, so they stay in the pair."""
    x = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return bootstrap_ci(x, np.mean, n_boot=n_boot, seed=seed)


def verdict(diff_ci: Sequence[float]) -> str:
    """``"wins"`` / ``"loses"`` when the paired 95% interval excludes 0 on that side, else ``"ties"``."""
    if diff_ci[1] > 0:
        return "wins"
    if diff_ci[2] < 0:
        return "loses"
    return "ties"


def summarize_budgets(per_seed: Sequence[dict[float, dict[str, Any]]], *, n_boot: int = 2000) -> dict[float, Any]:
    """Per budget over the seeds: share at target, median val and test regret, each ``(value, low, high)``
    with a bootstrap 95% interval."""
    out: dict[float, Any] = {}
    for b in per_seed[0] if per_seed else ():
        rows = [r[b] for r in per_seed]
        out[b] = {"share_at_target": bootstrap_ci([r["at_target"] for r in rows], np.mean, n_boot=n_boot),
                  "val_regret": bootstrap_ci([r["val_regret"] for r in rows], n_boot=n_boot),
                  "test_regret": bootstrap_ci([r["test_regret"] for r in rows], n_boot=n_boot)}
    return out


def average_ranks(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean rank per contender over tasks (``scores[task][contender]``, higher is better; rank 1 = best, tied
    scores share their mean rank). Only contenders present on every task are ranked.

    Example:
        >>> average_ranks({"t1": {"a": 0.9, "b": 0.5, "c": 0.5}, "t2": {"a": 0.1, "b": 0.2, "c": 0.3}})
        {'a': 2.0, 'b': 2.25, 'c': 1.75}
    """
    common = sorted(set.intersection(*(set(v) for v in scores.values()))) if scores else []
    total = {c: 0.0 for c in common}
    for row in scores.values():
        vals = np.array([row[c] for c in common], dtype=np.float64)
        for i, c in enumerate(common):
            total[c] += 1 + float((vals > vals[i]).sum()) + 0.5 * float((vals == vals[i]).sum() - 1)
    return {c: total[c] / len(scores) for c in common}


def loto_choice(scores: dict[str, dict[str, float]], task: str, candidates: Iterable[str]) -> str:
    """The baseline chosen for ``task`` without looking at it (leave one task out): the candidate with the
    highest mean score over the *other* tasks (``scores[task][candidate]``, higher is better; ties -> the
    first in ``candidates`` order). With no other task, the first candidate.

    Example:
        >>> s = {"a": {"x": 1.0, "y": 0.0}, "b": {"x": 0.2, "y": 0.6}, "c": {"x": 0.3, "y": 0.5}}
        >>> loto_choice(s, "a", ["x", "y"]), loto_choice(s, "b", ["x", "y"])
        ('y', 'x')
    """
    cands = list(candidates)
    others = [t for t in scores if t != task]
    if not others:
        return cands[0]
    means = [float(np.mean([scores[t][c] for t in others])) for c in cands]
    return cands[int(np.argmax(means))]


def budget_to_share(budgets: Sequence[float], shares: Sequence[float], share: float = 0.5) -> float | None:
    """The smallest budget on an anytime curve at which the share of studies at the target reaches ``share``
    (None if it never does)."""
    for b, s in zip(budgets, shares):
        if s >= share - 1e-12:
            return float(b)
    return None
