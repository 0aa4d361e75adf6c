"""Rows shared by the CPU (:mod:`._bench`) and CUDA (:mod:`._cuda_bench`) benchmark tables."""

from __future__ import annotations

from typing import Any

__all__ = ["bench_row", "binary_ops"]


def bench_row(scope: str, name: str, op: str, batch: int, packed_ms: float, base: dict[str, float],
         packed_bytes: int, fp32_bytes: int, shape: dict[str, Any]) -> dict[str, Any]:
    return {
        "scope": scope, "name": name, "op": op, "batch": batch, "shape": shape,
        "packed_ms": packed_ms, "baseline_ms": base,
        "speedup": {k: v / packed_ms for k, v in base.items()},
        "packed_samples_per_s": batch / (packed_ms * 1e-3),
        "weight_bytes": {"packed": packed_bytes, "fp32": fp32_bytes, "fp16": fp32_bytes // 2},
    }


def binary_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for op in ops:
        if op["op"] in ("binary_linear", "binary_conv2d"):
            out.append(op)
        elif op["op"] == "residual":
            out += binary_ops(op["body"])
    return out
