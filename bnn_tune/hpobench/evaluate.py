"""Many replayed searches -> medians and interquartile ranges (used by ``bnn-tune hpobench`` and
``benchmarks/hpobench_eval.py``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["aggregate", "parse_seeds", "run_many"]


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
