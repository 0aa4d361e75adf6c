"""Benchmark plumbing: rows, JSON, plot and the `bnn-tune bench` CLI (tiny shapes, few repeats)."""

from __future__ import annotations

import json

import pytest

from bnn_tune.cli import main
from bnn_tune.export import benchmark_model, format_table, plot_results


def test_benchmark_model_rows_and_plot(tmp_path):
    res = benchmark_model("binarynet", (1, 8, 8), 10, width=0.0625, quick=True, batch_sizes=(1, 4),
                          large_layer=(64, 300), threads=1)
    json.dumps(res)
    rows = res["rows"]
    assert {r["scope"] for r in rows} == {"layer", "model", "large_layer"}
    layers = [r for r in rows if r["scope"] == "layer"]
    assert len(layers) == 2 * 7  # 5 binary convs + 2 binary FC, two batch sizes
    for r in rows:
        assert r["packed_ms"] > 0 and r["baseline_ms"]["fp32"] > 0
        assert r["speedup"]["fp32"] == pytest.approx(r["baseline_ms"]["fp32"] / r["packed_ms"])
        assert r["weight_bytes"]["packed"] < r["weight_bytes"]["fp32"]
    big = [r for r in rows if r["scope"] == "large_layer"]
    assert all("numpy_backend_ms" in r for r in big)
    assert res["meta"]["statistic"] == "median"
    from bnn_tune.kernels import engine_available

    if engine_available():  # the packed side is the engine, at the same thread count as torch
        assert res["meta"]["cpu_engine"]["threads"] == 1
        assert all(r["backend"].startswith("engine-") for r in rows if r["scope"] != "model")
    png = plot_results(res, tmp_path / "b.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert format_table(res).row_count == len(rows)


def test_bench_cli_writes_outputs(tmp_path, capsys):
    rc = main(["bench", "--model", "mlp", "--input-shape", "1,8,8", "--width", "0.125", "--quick", "--batch", "1",
               "--no-large-layer", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    assert {r["batch"] for r in res["rows"]} == {1}
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert "bnn-tune bench" in capsys.readouterr().out


def test_bench_cli_packed_file(tmp_path):
    from bnn_tune.export import randomize_model, save_packed
    from bnn_tune.nn import build_model

    path = tmp_path / "m.bnn.safetensors"
    save_packed(randomize_model(build_model("mlp", (40,), 10, width=0.1)), path, config={"model": "mlp", "width": 0.1},
                input_shape=(40,))
    assert main(["bench", "--packed", str(path), "--quick", "--batch", "2", "--no-large-layer",
                 "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["meta"]["input_shape"] == [40]


def test_cuda_bench_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        benchmark_model("mlp", (1, 8, 8), width=0.125, device="cuda", quick=True)
    with pytest.raises(ValueError, match="`device` must be 'cpu' or 'cuda'"):
        benchmark_model("mlp", device="tpu")


def test_cuda_summary_table_lists_speedups_bandwidth_and_copy_fraction():
    from bnn_tune.bench._cuda import summary

    rows = [
        {"scope": "large_layer", "name": "linear_4096x4096", "batch": 1, "packed_ms": 0.0025,
         "speedup": {"fp16": 12.5, "bf16": 12.25}, "effective_weight_gbps": 838.9, "copy_gbps": 4000.0,
         "fraction_of_copy_bandwidth": 0.2097},
        {"scope": "layer", "name": "conv2", "batch": 256, "packed_ms": 0.5,
         "speedup": {"fp16": 1.5, "bf16": 1.4, "int8": 0.75}},
    ]
    text = summary({"meta": {"gpu": "NVIDIA H200", "model": "vgg_small"}, "rows": rows})
    lines = text.splitlines()
    assert "NVIDIA H200" in lines[0] and "% copy" in lines[1]
    assert lines[3].split() == ["large_layer", "linear_4096x4096", "1", "2.5", "12.50", "12.25", "-", "839", "21"]
    assert lines[4].split() == ["layer", "conv2", "256", "500.0", "1.50", "1.40", "0.75", "-", "-"]
    assert lines[-1] == "device-to-device copy: 4000 GB/s (read + write)"
