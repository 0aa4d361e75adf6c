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
           "--contenders", "flip+gated-asha,none,asha-m3-rf2,naive/none", "--out", str(tmp_path),
           "--logs", str(tmp_path / "logs")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    doc = json.loads((tmp_path / "hpobench_v2_bop_digits.json").read_text())
    assert doc["budgets"] == [1.0, 2.0] and doc["seeds"] == [0, 1] and doc["training_seeds"] >= 2
    c = doc["contenders"]["flip+gated-asha"]
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


def test_report_leaves_out_a_superseded_table_and_replays_only_current_ones(tmp_path):
    """A superseded v1 table's figures in --out stay out of the report (its grid lies outside the space);
    the successor's are in."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    shipped = ROOT / "benchmarks" / "results"
    for t in ("bop_digits", "bnew_betaT_mnist1d"):
        (tmp_path / f"hpobench_v2_{t}.json").write_text((shipped / f"hpobench_v2_{t}.json").read_text())
    stale = json.loads((shipped / "hpobench_v2_bnew_betaT_mnist1d.json").read_text())
    stale["task"] = "bnew_mnist1d"
    (tmp_path / "hpobench_v2_bnew_mnist1d.json").write_text(json.dumps(stale))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hpobench_eval.py"), "--report-only", "--out", str(tmp_path),
           "--n-boot", "50"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rep = json.loads((tmp_path / "hpobench_v2_summary.json").read_text())
    assert rep["tasks"] == ["bnew_betaT_mnist1d", "bop_digits"]
    assert "bnew_mnist1d |" not in (tmp_path / "hpobench_v2_summary.md").read_text()


def test_markdown_leaves_out_a_default_that_was_not_replayed(tmp_path):
    # a report over contenders without the default (e.g. baselines only) prints their tables, not a KeyError
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hpobench_eval.py"), "--quick", "--tasks", "bop_digits",
           "--contenders", "none,asha-m3-rf2", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bop_digits | none |" in (tmp_path / "hpobench_v2_summary.md").read_text()
