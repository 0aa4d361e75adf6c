"""``benchmarks/hpobench_eval.py --quick`` (what ``run_all.py --quick`` runs) writes the protocol's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnn_tune import hpobench

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif("bop_digits" not in hpobench.tasks(), reason="bop_digits not recorded")
def test_quick_run_writes_task_and_summary_figures(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hpobench_eval.py"), "--quick", "--tasks", "bop_digits",
           "--contenders", "flip+hyperband,none,asha-m3-rf2,naive/none", "--out", str(tmp_path),
           "--logs", str(tmp_path / "logs")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    doc = json.loads((tmp_path / "hpobench_v2_bop_digits.json").read_text())
    assert doc["budgets"] == [1.0, 2.0] and doc["seeds"] == [0, 1] and doc["training_seeds"] >= 2
    c = doc["contenders"]["flip+hyperband"]
    assert set(c["per_budget"]) == {"1", "2"} and len(c["per_seed"]["2"]["at_target"]) == 2
    assert len(c["curve"]["share_at_target"]) == len(doc["curve_budgets"]) == 4
    assert (tmp_path / "hpobench_v2_bop_digits.png").stat().st_size > 0
    rep = json.loads((tmp_path / "hpobench_v2_summary.json").read_text())
    assert rep["tasks"] == ["bop_digits"] and "spaces" in rep["per_task"]["bop_digits"]
    assert "Share of studies" in (tmp_path / "hpobench_v2_summary.md").read_text()
    # the figures can be recomputed from the kept trial logs without replaying
    again = subprocess.run([*cmd, "--from-logs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert json.loads((tmp_path / "hpobench_v2_bop_digits.json").read_text())["contenders"] == doc["contenders"]
