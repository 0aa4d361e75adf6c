"""CUDA rows of the benchmark (see :mod:`bnn_tune.bench._model`): packed kernels vs cuBLAS/cuDNN
fp16 and bf16 of the same layer shapes, timed with CUDA graphs and events.

Per layer: each timed unit is a CUDA graph of ``inner`` calls whose buffers rotate over enough copies to exceed
the L2 cache (50 MiB on H100), so every call reads its weights from HBM; the time per call is the
graph's event-timed duration / ``inner``, and the reported value the median over ``repeats`` replays
after warm-up replays. Whole model: eager calls of the packed model on the CUDA kernels
(:class:`~bnn_tune.export._cuda_runner.CudaRunner`) vs the twin in fp16/bf16, CUDA events, medians
(weights are not rotated there: the model is small and cached for both). Every linear row also reports the
effective weight bandwidth (packed weight bytes / time) and its ratio to a device-to-device copy measured
in the same run; the large-layer rows cover the issue's goal shapes (4096x4096 and 16384x16384).
:func:`summary` prints the compact table of ``make gpu-check``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import DeviceUnavailableError
from ..export._graph import BinaryConv2d, binary_ops
from ..kernels import cuda
from ._rows import bench_row

_L2_BYTES = 128 << 20  # rotate over > 2x the L2 of H100/H200


def _n_copies(nbytes: int) -> int:
    return int(min(256, max(2, -(-_L2_BYTES // max(1, nbytes)))))


def _graph_ms(step: Callable[[int], Any], n: int, *, inner: int, warmup: int, repeats: int) -> float:
    """Median ms per call of ``step(i)`` (i rotates over n buffers) captured ``inner`` times in a graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3):  # eager warm-up (also builds the kernels / cuBLAS handles)
            step(i % n)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(inner):
            step(i % n)
    for _ in range(warmup):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        g.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return float(np.median(times))


def _eager_ms(fn: Callable[[], Any], *, warmup: int, repeats: int) -> float:
    """Median ms of eager calls timed with CUDA events (for whole models, which are not graph-captured)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def _copy_gbps(*, warmup: int, repeats: int) -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _graph_ms(lambda i: dst.copy_(src), 1, inner=4, warmup=warmup, repeats=repeats)
    return 2 * src.numel() / (ms * 1e-3) / 1e9  # read + write


def _wd(k: int) -> int:
    return -(-k // 256) * 8


def _linear_rows(name: str, scope: str, o: int, k: int, batch: int, *, inner: int, warmup: int, repeats: int,
                 copy_gbps: float | None) -> dict[str, Any]:
    wd = _wd(k)
    packed_bytes = o * wd * 4
    n = _n_copies(packed_bytes)
    ws = [torch.randint(-2**31, 2**31 - 1, (o, wd), dtype=torch.int32, device="cuda") for _ in range(n)]
    pws = [torch.randint(0, k, (o,), dtype=torch.int32, device="cuda") for _ in range(n)]
    thr = torch.zeros(o, dtype=torch.int32, device="cuda")
    x = torch.randn(batch, k, device="cuda")
    if batch <= 16:
        a, _ = cuda.pack_sign(x, wd)
        out = torch.empty((batch, _wd(o)), dtype=torch.int32, device="cuda")
        op = "gemv_cuda_cores"

        def packed(i):  # packed input -> threshold -> next layer's packed bits
            cuda.gemv(ws[i], k, a=a, thr=thr, out_words=_wd(o), out=out)
    else:
        out = torch.empty((batch, o), dtype=torch.int32, device="cuda")
        op = "bmma_and_popc"

        def packed(i):  # sign+pack of the float input, then the tensor-core GEMM
            a, pa = cuda.pack_sign(x, wd)
            cuda.bmma(a, ws[i], k, pa, pws[i], out=out)
    p = _graph_ms(packed, n, inner=inner, warmup=warmup, repeats=repeats)
    base = {}
    for dt, label in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        nf = _n_copies(o * k * 2)
        wf = [torch.randn(o, k, device="cuda", dtype=dt) for _ in range(nf)]
        xf = x.to(dt)

        def dense(i: int, xf: torch.Tensor = xf, wf: list[torch.Tensor] = wf) -> torch.Tensor:
            return torch.matmul(xf, wf[i].T)

        base[label] = _graph_ms(dense, nf, inner=inner, warmup=warmup, repeats=repeats)
    if batch > 16 and batch % 8 == 0 and k % 8 == 0 and o % 8 == 0:  # cuBLAS int8 GEMM (int32 accumulate)
        try:
            ni = _n_copies(o * k)
            wi = [torch.randint(-127, 128, (k, o), dtype=torch.int8, device="cuda") for _ in range(ni)]
            xi = torch.randint(-127, 128, (batch, k), dtype=torch.int8, device="cuda")

            def int8(i: int, xi: torch.Tensor = xi, wi: list[torch.Tensor] = wi) -> torch.Tensor:
                return torch._int_mm(xi, wi[i])

            base["int8"] = _graph_ms(int8, ni, inner=inner, warmup=warmup, repeats=repeats)
        except (RuntimeError, AttributeError):  # _int_mm unsupported for this shape/build
            pass
    row = bench_row(scope, name, op, batch, p, base, packed_bytes, o * k * 4, {"out": o, "k": k, "k_padded": wd * 32})
    row["effective_weight_gbps"] = packed_bytes / (p * 1e-3) / 1e9
    if copy_gbps:
        row["copy_gbps"] = copy_gbps
        row["fraction_of_copy_bandwidth"] = row["effective_weight_gbps"] / copy_gbps
    return row


def _convbench_row(op: BinaryConv2d, batch: int, *, inner: int, warmup: int, repeats: int) -> dict[str, Any]:
    if op.input_shape is None:
        raise ValueError(f"Layer {op.name!r} has no recorded input shape; trace the packed model first.")
    c, h, w = op.input_shape
    o, k = op.out_features, op.k
    kh, kw = op.kernel_size
    wd = -(-kh * kw * -(-c // 32) // 8) * 8  # tap-aligned K words (cuda.tap_aligned_weight)
    n = _n_copies(o * wd * 4)
    ws = [torch.randint(-2**31, 2**31 - 1, (o, wd), dtype=torch.int32, device="cuda") for _ in range(n)]
    pw = torch.randint(0, k, (o,), dtype=torch.int32, device="cuda")
    x = torch.randn(batch, c, h, w, device="cuda")
    stride, padding = op.stride, op.padding

    def packed(i):  # sign+pack into NHWC words (+1 padding), then the implicit-GEMM tensor-core convolution
        act = cuda.pack_nhwc(x, tuple(padding), 1.0)
        return cuda.bconv(act, ws[i], k, pw, kernel_size=(kh, kw), stride=tuple(stride))

    p = _graph_ms(packed, n, inner=inner, warmup=warmup, repeats=repeats)
    base = {}
    for dt, label in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        nf = _n_copies(o * k * 2)
        wf = [torch.randn(o, c, kh, kw, device="cuda", dtype=dt) for _ in range(nf)]
        xf = x.to(dt)

        def dense(i: int, xf: torch.Tensor = xf, wf: list[torch.Tensor] = wf) -> torch.Tensor:
            return F.conv2d(xf, wf[i], None, stride, padding)

        base[label] = _graph_ms(dense, nf, inner=inner, warmup=warmup, repeats=repeats)
    return bench_row("layer", op.name, "binary_conv2d", batch, p, base, o * wd * 4, o * k * 4,
                {"in": [c, h, w], "out": o, "kernel": [kh, kw], "k": k, "k_padded": wd * 32})


def run(packed: Any, twin: Any, input_shape: tuple[int, ...], *, batch_sizes: tuple[int, ...], quick: bool,
        include_large_layer: bool, large_layer: tuple[int, int], seed: int) -> list[dict[str, Any]]:
    if not cuda.available():
        raise DeviceUnavailableError("device='cuda' was asked for, but no CUDA GPU (or no kernel compiler: NVRTC "
                                     "from cuda-bindings/nvidia-cuda-nvrtc, or nvcc) is available; use --device cpu.")
    torch.manual_seed(seed)
    warmup, repeats, inner = (3, 10, 20) if quick else (10, 50, 50)
    copy = _copy_gbps(warmup=warmup, repeats=repeats)
    rows = []
    for op in binary_ops(packed.ops):
        for bs in batch_sizes:
            if not isinstance(op, BinaryConv2d):
                rows.append(_linear_rows(op.name, "layer", op.out_features, op.k, bs, inner=inner,
                                         warmup=warmup, repeats=repeats, copy_gbps=copy))
            else:
                rows.append(_convbench_row(op, bs, inner=inner, warmup=warmup, repeats=repeats))
    # whole model: the packed model on the CUDA kernels (eager; CudaRunner) vs the twin in fp16 / bf16
    from ..export._cuda_runner import CudaRunner

    runner = CudaRunner(packed)
    twin = twin.cuda().eval()
    pbytes = packed.weight_bytes()
    fp32_bytes = sum(p.numel() * 4 for p in twin.parameters())
    for bs in batch_sizes:
        x = torch.randn(bs, *input_shape, device="cuda")
        p = _eager_ms(partial(runner.logits, x), warmup=warmup, repeats=repeats)
        base = {}
        for dt, label in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
            t = twin.to(dt)
            xd = x.to(dt)
            with torch.no_grad():
                base[label] = _eager_ms(partial(t, xd), warmup=warmup, repeats=repeats)
        rows.append(bench_row("model", packed.header.get("model", {}).get("name") or "model", "model", bs, p, base,
                         pbytes["binary"] + pbytes["real"], fp32_bytes, {"input": list(input_shape)}))
    if include_large_layer:
        for o, k in dict.fromkeys([tuple(large_layer), (16384, 16384)]):
            for bs in batch_sizes:
                rows.append(_linear_rows(f"linear_{o}x{k}", "large_layer", o, k, bs, inner=inner, warmup=warmup,
                                         repeats=repeats, copy_gbps=copy))
    return rows


def summary(res: dict[str, Any]) -> str:
    """The compact plain-text table of a CUDA benchmark result (``make gpu-check``).

    One line per row: packed time in microseconds, speed-up over cuBLAS/cuDNN fp16 and bf16 and over
    int8 ``torch._int_mm`` (where measured, batch > 16), effective weight bandwidth in GB/s and its
    percentage of the device-to-device copy bandwidth measured in the same run ("-" where not measured).
    """
    meta = res.get("meta", {})
    head = f"{'row':<34} {'batch':>5} {'us':>9} {'x fp16':>7} {'x bf16':>7} {'x int8':>7} {'GB/s':>7} {'% copy':>7}"
    lines = [f"bnn-tune gpu-check: {meta.get('gpu', meta.get('device', '?'))}, model {meta.get('model', '?')}, "
             "medians of CUDA-graph replays", head, "-" * len(head)]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in res["rows"]:
        sp = r["speedup"]
        frac = r.get("fraction_of_copy_bandwidth")
        lines.append(f"{(r['scope'] + ' ' + r['name'])[:34]:<34} {r['batch']:>5} {r['packed_ms'] * 1e3:>9.1f} "
                     f"{num(sp.get('fp16'), '.2f'):>7} {num(sp.get('bf16'), '.2f'):>7} {num(sp.get('int8'), '.2f'):>7} "
                     f"{num(r.get('effective_weight_gbps'), '.0f'):>7} {num(None if frac is None else 100 * frac, '.0f'):>7}")
    copy = next((r["copy_gbps"] for r in res["rows"] if r.get("copy_gbps")), None)
    if copy:
        lines.append(f"device-to-device copy: {copy:.0f} GB/s (read + write)")
    return "\n".join(lines)
