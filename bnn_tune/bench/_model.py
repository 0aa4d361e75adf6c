"""Benchmark of the packed kernels against the float twin, per layer and per model.

Method (CPU): ``time.perf_counter`` around each call, ``warmup`` untimed calls, then the median of
``repeats`` timed calls, packed and baseline calls alternating (A, B, A, B...) so that both see the
same machine load (the development VM is shared). The packed side is the packed CPU engine
(:class:`bnn_tune.kernels.BinaryChain`, ``csrc/bconv_cpu.c``) when it builds, the numpy/im2col path
otherwise (``meta["cpu_engine"]``). A binary layer of a model (``scope="layer"``) is timed as the engine
runs it inside the chain: its one C call, reading the packed bits of the previous layer and writing its
thresholded output bits (no packing, no numpy). The whole model (``scope="model"``) is
:meth:`~bnn_tune.export.PackedModel.logits` from a float batch to float logits: real first/last layers
in torch, input sign+pack, the binary chain, unpacking. The 4096x4096 linear (``scope="large_layer"``)
is timed standalone from a bool batch to bool output bits (pack, XOR-popcount, threshold, unpack), its
packed weights rotating over several copies (more bytes than the last-level cache). The baseline is the
same layer of the real-valued twin (``build_model(..., binary=False)``) in float32 with
``torch.nn.functional`` (or the whole twin), timed in the same run with the same threads (the engine
gets ``torch.get_num_threads()`` threads).

Method (CUDA): CUDA events around a CUDA graph of ``inner`` launches, medians over repeats, weights
rotating over enough copies to exceed L2; baselines ``torch.matmul`` in fp16 and bf16 (cuBLAS), and
for linear layers at batch > 16 cuBLAS int8 (``torch._int_mm``) where the shape allows.

Rows: ``scope`` is ``"layer"`` (one binary layer of the model), ``"model"`` (the whole packed model vs
the whole twin), or ``"large_layer"`` (a 4096x4096 linear layer, the memory-bound case the 1-bit
weights are for). ``speedup[base] = baseline_ms / packed_ms``; batch-256 rows also give throughput.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..export._graph import BinaryConv2d, binary_ops
from ..export._model import pack_model
from ..kernels._cpu import binary_conv2d, binary_gemm
from ..kernels._engine import BinaryChain, ChainLayer, engine_available, selected_isa, thread_pool
from ..kernels._native import native_available
from ..kernels._packing import pack_bits, padded_k
from ..nn import build_model
from . import _cuda
from ._rows import bench_row

__all__ = ["benchmark_model", "format_table", "plot_results", "randomize_model"]

_LLC_BYTES = 64 << 20

# published speed-ups of binary over float convolution, for the table caption and BENCHMARKS.md
ANCHORS = {
    "Larq Compute Engine": "8.5-18.5x binary conv vs float (ARM, Bannink et al. 2021)",
    "daBNN": "8-24x binary conv vs float (ARM, Zhang et al. 2019)",
}


def _median_ms(fn: Callable[[], Any], *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e3)


def _median_pair(fa: Callable[[], Any], fb: Callable[[], Any], *, warmup: int, repeats: int) -> tuple[float, float]:
    """Median ms of two functions timed alternately (A, B, A, B, ...), so both see the same load."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return float(np.median(ta) * 1e3), float(np.median(tb) * 1e3)


def randomize_model(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics (some negative scales), eval mode: a stand-in for a
    trained model when benchmarking speed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                if m.weight is not None:  # None: a batch norm without scale (BatchNormNoScale)
                    m.weight.copy_(torch.randn(c, generator=g))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(c, generator=g))
    return model.eval()


def _copies(nbytes: int, limit: int = 64) -> int:
    return int(min(limit, max(1, -(-_LLC_BYTES // max(nbytes, 1)))))


# ---------------------------------------------------------------------- CPU
def _cpu_linear(name: str, o: int, k: int, batch: int, *, scope: str, warmup: int, repeats: int,
                rng: np.random.Generator) -> dict[str, Any]:
    kp = padded_k(k)
    engine = engine_available()
    n_w = _copies(o * kp // 8) if scope == "large_layer" else 1
    wbits = [rng.random((o, k)) < 0.5 for _ in range(n_w)]
    thr = rng.integers(-k // 4, k // 4, size=o).astype(np.int32)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    xt = torch.from_numpy(x)
    xb = x >= 0
    i = [0]
    if engine:
        threads = torch.get_num_threads()
        chains = [BinaryChain((k,), [ChainLayer("linear", w, threshold=thr)], threads=threads) for w in wbits]
        for c in chains:
            c.run(xb)
        if scope == "large_layer":  # standalone: bool in, bits out, weights rotating

            def packed():
                i[0] += 1
                return chains[i[0] % n_w].run(xb)
        else:  # inside a chain: the layer's C call on packed bits
            packed = chains[0].layer_call(0, batch)
    else:
        ws = [pack_bits(w) for w in wbits]

        def packed():
            i[0] += 1
            y = binary_gemm(pack_bits(xb), ws[i[0] % n_w], k)
            return y >= thr

    wf = [torch.randn(o, k) for _ in range(_copies(o * k * 4, limit=4))]

    def fp32():
        i[0] += 1
        return F.linear(xt, wf[i[0] % len(wf)])

    p, b = _median_pair(packed, fp32, warmup=warmup, repeats=repeats)
    row = bench_row(scope, name, "binary_linear", batch, p, {"fp32": b}, o * kp // 8, o * k * 4,
               {"out": o, "k": k, "k_padded": kp})
    row["backend"] = ("engine-" + chains[0].isa) if engine else ("native" if native_available() else "numpy")
    if scope == "large_layer":  # does the compiled path pay off? time the numpy backend too
        ws_np = [pack_bits(w) for w in wbits[:2]]

        def numpy_path():
            i[0] += 1
            return binary_gemm(pack_bits(xb), ws_np[i[0] % 2], k, backend="numpy") >= thr

        row["numpy_backend_ms"] = _median_ms(numpy_path, warmup=1, repeats=max(3, repeats // 3))
    return row


def _cpu_conv(name: str, op: BinaryConv2d, batch: int, *, warmup: int, repeats: int,
              rng: np.random.Generator) -> dict[str, Any]:
    if op.input_shape is None:
        raise ValueError(f"Layer {op.name!r} has no recorded input shape; trace the packed model first.")
    c, h, w = op.input_shape
    o, k = op.out_features, op.k
    kh, kw = op.kernel_size
    kp = padded_k(k)
    wbits = rng.random((o, k)) < 0.5
    thr = rng.integers(-k // 4, k // 4, size=o).astype(np.int32)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    xb = x >= 0
    xt = torch.from_numpy(x)
    wt = torch.randn(o, c, kh, kw)
    ph, pw = op.padding
    engine = engine_available() and ph == pw
    if engine:  # inside a chain: the layer's C call on packed bits, thresholded bits out
        chain = BinaryChain((c, h, w), [ChainLayer("conv", wbits.reshape(o, kh, kw, c), threshold=thr,
                                                   stride=op.stride, padding=(ph, pw),
                                                   pad_value=op.pad_value)],
                            threads=torch.get_num_threads())
        chain.run(xb)
        packed = chain.layer_call(0, batch)
    else:
        wp = pack_bits(wbits)

        def packed():
            y = binary_conv2d(xb, wp, k=k, out_channels=o, kernel=(kh, kw), stride=tuple(op.stride),
                              padding=(ph, pw), pad_value=True)
            return y >= thr[None, :, None, None]

    def fp32():
        return F.conv2d(xt, wt, None, op.stride, op.padding)

    p, b = _median_pair(packed, fp32, warmup=warmup, repeats=repeats)
    row = bench_row("layer", name, "binary_conv2d", batch, p, {"fp32": b}, o * kp // 8, o * k * 4,
                    {"in": [c, h, w], "out": o, "kernel": [kh, kw], "k": k, "k_padded": kp})
    row["backend"] = ("engine-" + chain.isa) if engine else ("native" if native_available() else "numpy")
    return row


def benchmark_model(
    model: str = "mlp",
    input_shape: tuple[int, ...] = (1, 8, 8),
    num_classes: int = 10,
    *,
    width: float = 1.0,
    depth: int = 2,
    device: str = "cpu",
    quick: bool = False,
    packed: Any = None,
    batch_sizes: tuple[int, ...] = (1, 256),
    include_large_layer: bool = True,
    large_layer: tuple[int, int] = (4096, 4096),
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time a packed model and its float twin, per binary layer and whole, at each batch size.

    Args:
        model, input_shape, num_classes, width, depth: the zoo model (see :func:`bnn_tune.nn.build_model`).
        device: ``"cpu"`` (numpy packed kernels vs torch fp32) or ``"cuda"`` (CUDA kernels vs
            cuBLAS fp16/bf16; needs a GPU).
        quick: fewer repeats (for tests and ``export_best``).
        packed: a :class:`~bnn_tune.export.PackedModel` to time (default: the zoo model with random
            weights and batch-norm statistics, packed).
        batch_sizes: batch sizes to time (batch 1 latency, batch 256 throughput).
        include_large_layer: add the ``large_layer`` (out, in) binary linear layer rows.
        seed: seed of the random inputs and weights.
        threads: CPU threads for both sides (``torch.set_num_threads`` and the native kernel's
            split) during the run; default: torch's current setting. On a shared machine 1 thread
            gives stable numbers (torch's thread pool stalls when its threads are preempted).

    Returns:
        A JSON-serializable dict: ``meta`` (host, threads, method) and ``rows`` (see module doc).

    Example:
        >>> res = benchmark_model("mlp", (1, 8, 8), width=0.125, quick=True, include_large_layer=False)
        >>> sorted({r["scope"] for r in res["rows"]})
        ['layer', 'model']
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be 'cpu' or 'cuda', but got device={device!r}.")
    if threads is not None and threads < 1:
        raise ValueError(f"`threads` must be >= 1, but got threads={threads}.")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _benchmark_model(model, input_shape, num_classes, width=width, depth=depth, device=device,
                                quick=quick, packed=packed, batch_sizes=batch_sizes,
                                include_large_layer=include_large_layer, large_layer=large_layer, seed=seed)
    finally:
        torch.set_num_threads(old_threads)


def _benchmark_model(model, input_shape, num_classes, *, width, depth, device, quick, packed, batch_sizes,
                     include_large_layer, large_layer, seed) -> dict[str, Any]:

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    twin = build_model(model, input_shape, num_classes, binary=False, width=width, depth=depth).eval()
    if packed is None:
        binary = randomize_model(build_model(model, input_shape, num_classes, width=width, depth=depth), seed)
        try:
            packed = pack_model(binary, {"model": model, "width": width, "depth": depth}, input_shape=input_shape,
                                num_classes=num_classes)
        except ValueError as exc:  # e.g. binarynet_paper's zero padding: no packed form, nothing to time
            raise ValueError(f"Model {model!r} has no packed form, so there is nothing to benchmark: {exc}") from exc
    elif packed.ops[0].input_shape is None:
        packed.trace(input_shape)
    warmup, repeats = (2, 7) if quick else (5, 31)
    meta = {
        "device": device, "model": model, "input_shape": list(input_shape), "width": width, "depth": depth,
        "num_classes": num_classes, "quick": quick, "warmup": warmup, "repeats": repeats,
        "torch": torch.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "statistic": "median", "packed_weight_bytes": packed.weight_bytes(),
        "cpu_backend": "native" if native_available() else "numpy",
        "cpu_engine": None, "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "anchors": ANCHORS,
    }
    if device == "cuda":

        meta["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        cuda_rows = _cuda.run(packed, twin, input_shape, batch_sizes=batch_sizes, quick=quick,
                               include_large_layer=include_large_layer, large_layer=large_layer, seed=seed)
        return {"meta": meta, "rows": cuda_rows}

    if engine_available():
        meta["cpu_engine"] = {"isa": selected_isa(), "threads": torch.get_num_threads(), "pool": thread_pool()}
    rows: list[dict[str, Any]] = []
    for op in binary_ops(packed.ops):
        for bs in batch_sizes:
            if not isinstance(op, BinaryConv2d):
                rows.append(_cpu_linear(op.name, op.out_features, op.k, bs, scope="layer",
                                        warmup=warmup, repeats=repeats, rng=rng))
            else:
                rows.append(_cpu_conv(op.name, op, bs, warmup=warmup, repeats=repeats, rng=rng))
    fp32_bytes = sum(p.numel() * 4 for p in twin.parameters())
    pbytes = packed.weight_bytes()
    saved = packed._engine  # time the engine at the bench's threads, then give the model its setting back
    if engine_available():
        packed.set_cpu_engine(True, threads=torch.get_num_threads())
    try:
        for bs in batch_sizes:
            x = torch.randn(bs, *input_shape)
            with torch.no_grad():
                p, b = _median_pair(partial(packed.logits, x, preprocessed=True), partial(twin, x), warmup=warmup, repeats=repeats)
            rows.append(bench_row("model", model, "model", bs, p, {"fp32": b}, pbytes["binary"] + pbytes["real"],
                                  fp32_bytes, {"input": list(input_shape)}))
    finally:
        packed._engine = saved
        packed._chains.clear()
    if include_large_layer:
        o, k = large_layer
        for bs in batch_sizes:
            rows.append(_cpu_linear(f"linear_{o}x{k}", o, k, bs, scope="large_layer", warmup=warmup,
                                    repeats=repeats, rng=rng))
    return {"meta": meta, "rows": rows}


def format_table(res: dict[str, Any]):
    """A ``rich`` table of the rows."""
    from rich.table import Table

    meta = res["meta"]
    bases = sorted({b for r in res["rows"] for b in r["baseline_ms"]})
    eng = meta.get("cpu_engine")
    where = f"{meta['device']}" + (f", engine {eng['isa']} x{eng['threads']} threads" if eng else "")
    t = Table(title=f"bnn-tune bench: {meta['model']} {tuple(meta['input_shape'])} on {where} "
                    f"(median of {meta['repeats']})",
              caption="anchors: " + "; ".join(f"{k} {v}" for k, v in ANCHORS.items())
              if meta["device"] == "cpu" else None)
    for col in ("scope", "name", "batch", "packed ms", *[f"{b} ms" for b in bases], *[f"x vs {b}" for b in bases],
                "samples/s", "weights packed/fp32"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        wb = r["weight_bytes"]
        t.add_row(r["scope"], r["name"], str(r["batch"]), f"{r['packed_ms']:.4f}",
                  *[f"{r['baseline_ms'].get(b, float('nan')):.4f}" for b in bases],
                  *[f"{r['speedup'].get(b, float('nan')):.2f}" for b in bases],
                  f"{r['packed_samples_per_s']:.3g}", f"{wb['packed']}/{wb['fp32']} B")
    return t


def _label(r: dict[str, Any]) -> str:
    sh = r["shape"]
    if r["scope"] == "model":
        return f"whole model\n{r['name']}"
    if r["op"] == "binary_conv2d":
        c, h, w = sh["in"]
        return f"conv {r['name']}\n{c}->{sh['out']} @{h}x{w}"
    return f"{'linear' if r['scope'] == 'layer' else 'layer'} {r['name']}\n{sh['k']}->{sh['out']}"


def plot_results(res: dict[str, Any], path: str | os.PathLike) -> str:
    """Bar plot (PNG): speed-up of the packed kernels over each baseline, one panel per batch size."""
    from .._imports import require

    # an explicit Figure on the Agg canvas: no global backend switch and no pyplot state in the caller
    require("matplotlib", feature="the benchmark plot")
    import matplotlib.ticker
    from matplotlib.figure import Figure

    rows = res["rows"]
    batches = sorted({r["batch"] for r in rows})
    bases = sorted({b for r in rows for b in r["baseline_ms"]})
    fig = Figure(figsize=(max(6, 0.6 * len(rows) / max(1, len(batches)) + 4) * len(batches) / 1.4, 4.8))
    axes = fig.subplots(1, len(batches), squeeze=False)
    for ax, bs in zip(axes[0], batches):
        sel = [r for r in rows if r["batch"] == bs]
        xs = np.arange(len(sel))
        wbar = 0.8 / len(bases)
        for j, b in enumerate(bases):
            vals = [r["speedup"].get(b, np.nan) for r in sel]
            bars = ax.bar(xs + (j - (len(bases) - 1) / 2) * wbar, vals, wbar, label=f"vs torch {b}")
            for rect, v in zip(bars, vals):
                ax.annotate(f"{v:.1f}x", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8)
        if any(r["scope"] == "large_layer" for r in sel) and res["meta"]["device"] == "cpu" and bs == 1:
            ax.axhline(8.0, color="r", ls="--", lw=0.8, label="goal 8x (4096x4096, batch 1)")
        ax.set_xticks(xs)
        ax.set_xticklabels([_label(r) for r in sel], rotation=40, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel("speed-up (baseline time / packed time)")
        ax.set_title(f"batch {bs}" + (" (latency)" if bs == 1 else " (throughput)"))
        ax.legend(fontsize=7)
    meta = res["meta"]
    fig.suptitle(f"packed 1-bit kernels vs float twin: {meta['model']} {tuple(meta['input_shape'])} on "
                 f"{meta['device']}, {meta.get('torch_threads')} thread(s), median of {meta['repeats']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return os.fspath(path)
