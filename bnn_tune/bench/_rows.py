"""Rows shared by the CPU (:mod:`._model`) and CUDA (:mod:`._cuda`) benchmark tables."""

from __future__ import annotations

from typing import Any

__all__ = ["bench_row"]


def bench_row(scope: str, name: str, op: str, batch: int, packed_ms: float, base: dict[str, float],
         packed_bytes: int, fp32_bytes: int, shape: dict[str, Any]) -> dict[str, Any]:
    return {
        "scope": scope, "name": name, "op": op, "batch": batch, "shape": shape,
        "packed_ms": packed_ms, "baseline_ms": base,
        "speedup": {k: v / packed_ms for k, v in base.items()},
        "packed_samples_per_s": batch / (packed_ms * 1e-3),
        "weight_bytes": {"packed": packed_bytes, "fp32": fp32_bytes, "fp16": fp32_bytes // 2},
    }


