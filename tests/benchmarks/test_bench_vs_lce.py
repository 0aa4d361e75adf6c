"""``bnn_tune.bench.lce`` (benchmarks/bench_vs_lce.py) with a stand-in for the LCE worker: the rows, the
interleaving and the agreement check, without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bnn_tune.bench.lce import compare, markdown_table

from ..export.test_lce import run_specs

ROOT = Path(__file__).resolve().parents[2]


class FakeWorker:
    """Runs the Keras specs with Keras semantics (tests/export/test_lce.py) instead of LCE's interpreter."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.models: dict[str, tuple] = {}
        self.loaded: list[tuple] = []

    def convert(self, specs, path, *, batch_size=1):
        self.calls.append(f"convert b{batch_size}")
        self.models[str(path)] = (specs, batch_size)
        return {"ops": {"LceBconv2d": sum(layer["config"].get("kernel_quantizer") == "ste_sign"
                                          for layer in specs.layers)}, "bytes": 123}

    def load(self, path, *, threads=1, setting="best"):
        self.calls.append(f"load t{threads} {setting}")
        self.loaded.append((self.models[str(path)][0], None))
        return len(self.loaded) - 1

    def predict(self, handle, x):
        specs, _ = self.loaded[handle]
        self.loaded[handle] = (specs, x)
        y = run_specs(specs, x)
        if handle == 1:  # the second interpreter disagrees on the first sample: the row must show it
            y[0] = -y[0]
        return y

    def time(self, handle, calls):
        self.calls.append("time")
        return [1.0] * calls


def test_compare_rows_interleave_and_check_agreement(tmp_path):
    w = FakeWorker()
    rows = compare("binarynet", worker=w, input_shape=(3, 16, 16), width=0.125, batch_sizes=(1, 4), threads=(1,),
                   rounds=3, target_s=0.001, workdir=str(tmp_path))
    assert [(r["batch"], r["threads"], r["lce_setting"]) for r in rows] == [(1, 1, "best"), (1, 1, "default"),
                                                                          (4, 1, "best")]
    assert [r["agreement"] for r in rows] == [1.0, 0.0, 1.0]  # batch 1: the one sample flipped
    assert all(r["lce_ops"]["LceBconv2d"] == 7 and r["lce_ms"] == 1.0 for r in rows)
    assert all(r["ratio"] == r["lce_ms"] / r["bnn_tune_ms"] for r in rows)
    assert w.calls[:2] == ["convert b1", "load t1 best"] and "convert b4" in w.calls
    table = markdown_table(rows)
    assert table.splitlines()[0].startswith("| model | batch | threads | LCE setting | bnn-tune ms")
    assert "| binarynet | 1 | 1 | default |" in table and "| 0% |" in table


def test_script_without_lce_environment_says_so(tmp_path):
    env = {"BNN_TUNE_LCE_PYTHON": str(tmp_path / "none"), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    full = subprocess.run([sys.executable, "benchmarks/bench_vs_lce.py", "--out", str(tmp_path / "o")], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    assert full.returncode == 2
    assert full.stderr.strip().startswith("error: LCE export needs") and "make lce-env" in full.stderr
    quick = subprocess.run([sys.executable, "benchmarks/bench_vs_lce.py", "--quick", "--out", str(tmp_path / "o")],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert quick.returncode == 0 and "make lce-env" in quick.stderr  # CI's smoke run without the environment
    assert not (tmp_path / "o").exists()
