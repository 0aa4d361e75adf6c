"""bnn-tune's packed CPU engine against Larq Compute Engine on the same model (``benchmarks/bench_vs_lce.py``).

One model (a zoo model with :func:`~bnn_tune.bench.randomize_model`'s random weights and batch-norm
statistics: the timing of either engine does not depend on the values) is packed for bnn-tune and converted
for LCE through the LCE column of the op table (:mod:`bnn_tune.export._lce`); both answer the same inputs,
and a row records whether their predicted classes agree. LCE runs in its own environment
(:class:`~bnn_tune.export._lce.LceWorker`, ``make lce-env``), with a ``.tflite`` converted per batch size
(LCE's graphs have a fixed batch), under two interpreter settings: ``best`` (indirect BGEMM + XNNPACK) and
``default`` (LCE's interpreter defaults; batch 1 only, it is slow).

Timing: ``time.perf_counter`` around each call, float NHWC/NCHW input to float logits on both sides
(bnn-tune: :meth:`~bnn_tune.export.PackedModel.logits` with ``preprocessed=True``; LCE: the interpreter's
``predict`` on one batch, inside the worker process, so no inter-process cost is timed). The two engines
alternate in rounds (bnn-tune, LCE, LCE, bnn-tune, ...) so that load on a shared machine hits both alike;
rows give the median over every timed call and ``ratio = lce_ms / bnn_tune_ms`` (> 1: bnn-tune faster).
Threads: bnn-tune's engine and torch (its real first/last layers) get ``threads``, LCE's interpreter
``num_threads``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["compare", "markdown_table"]


def _bnn_ms(pm: Any, x: torch.Tensor, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        pm.logits(x, preprocessed=True)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def compare(model: str, *, worker: Any, input_shape: tuple[int, ...] = (3, 32, 32), width: float = 0.5,
            num_classes: int = 10, batch_sizes: Sequence[int] = (1, 8, 64), threads: Sequence[int] = (1, 2),
            rounds: int = 7, target_s: float = 0.15, default_setting: bool = True, seed: int = 0,
            workdir: str) -> list[dict[str, Any]]:
    """Rows of bnn-tune vs LCE for one model: per batch size, thread count and LCE setting (module docstring).

    Args:
        worker: an open :class:`~bnn_tune.export._lce.LceWorker`.
        rounds: interleaved rounds; each side runs about ``target_s`` seconds of calls per round.
        default_setting: also time LCE's default interpreter setting (batch 1).
        workdir: where the ``.tflite`` files are written.
    """
    from ..export._lce import keras_specs
    from ..export._model import pack_model
    from ..nn import build_model
    from ._model import randomize_model

    net = randomize_model(build_model(model, input_shape, num_classes, width=width), seed)
    pm = pack_model(net, {"model": model, "width": width}, input_shape=input_shape)
    specs = keras_specs(pm.ops, input_shape)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    old_threads = torch.get_num_threads()
    try:
        for batch in batch_sizes:
            path = os.path.join(workdir, f"{model}_b{batch}.tflite")
            report = worker.convert(specs, path, batch_size=batch)
            x = torch.randn(batch, *input_shape, generator=gen)
            xk = x.permute(0, 2, 3, 1).numpy() if x.ndim == 4 else x.numpy()
            for t in threads:
                torch.set_num_threads(t)
                pm.set_cpu_engine(True, threads=t)
                ref = pm.logits(x, preprocessed=True)
                settings = ["best"] + (["default"] if default_setting and batch == 1 else [])
                for setting in settings:
                    handle = worker.load(path, threads=t, setting=setting)
                    agree = float((worker.predict(handle, xk).argmax(1) == ref.argmax(1)).mean())
                    ours, theirs = _interleave(pm, x, worker, handle, rounds, target_s)
                    b, lce_ms = statistics.median(ours), statistics.median(theirs)
                    rows.append({"model": model, "width": width, "input_shape": list(input_shape), "batch": batch,
                                 "threads": t, "lce_setting": setting, "bnn_tune_ms": b, "lce_ms": lce_ms,
                                 "ratio": lce_ms / b, "calls": [len(ours), len(theirs)], "agreement": agree,
                                 "lce_ops": report["ops"], "tflite_bytes": report["bytes"],
                                 "packed_bytes": sum(pm.weight_bytes().values())})
    finally:
        torch.set_num_threads(old_threads)
    return rows


def _interleave(pm: Any, x: torch.Tensor, worker: Any, handle: int, rounds: int, target_s: float
                ) -> tuple[list[float], list[float]]:
    # warm-up (buffers, chains, XNNPACK's packing), then calls per round sized to ~target_s per side
    once_b = min(_bnn_ms(pm, x, 3))
    once_l = min(worker.time(handle, 3))
    n_b = max(1, int(target_s * 1e3 / max(once_b, 1e-3)))
    n_l = max(1, int(target_s * 1e3 / max(once_l, 1e-3)))
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(rounds):
        if r % 2 == 0:
            ours += _bnn_ms(pm, x, n_b)
            theirs += worker.time(handle, n_l)
        else:
            theirs += worker.time(handle, n_l)
            ours += _bnn_ms(pm, x, n_b)
    return ours, theirs


def machine() -> dict[str, Any]:
    """The machine and software a comparison ran on."""
    from ..kernels._engine import engine_available, selected_isa

    return {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "bnn_tune_isa": selected_isa() if engine_available() else None,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """BENCHMARKS.md's table: one line per model, batch, threads and LCE setting."""
    lines = ["| model | batch | threads | LCE setting | bnn-tune ms | LCE ms | LCE / bnn-tune | same class |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['lce_setting']} | {r['bnn_tune_ms']:.3f} | "
                     f"{r['lce_ms']:.3f} | {r['ratio']:.2f} | {r['agreement']:.0%} |")
    return "\n".join(lines)
