"""``benchmarks/hpobench_select.py``: the default is chosen safety first, leave one task out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnn_tune import hpobench

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("bop_digits", "bop_mnist1d", "latent_adam_mnist1d")


def _doc(task: str, shares: dict[str, str]) -> dict:
    return {"task": task, "held_out": False, "contenders": {
        n: {"per_seed": {"5": {"at_target": bits}}} for n, bits in shares.items()}}


@pytest.mark.skipif(not set(TASKS) <= set(hpobench.tasks()), reason="tables not recorded")
def test_the_rule_puts_no_loss_to_no_pruning_before_the_mean_share(tmp_path):
    n = 40
    none = "0" * 20 + "1" * 20
    for task in TASKS:
        shares = {"none": none,
                  # flip+hyperband: the highest mean share, but on bop_digits it loses to no pruning beyond the CI
                  "flip+hyperband": ("0" * n) if task == "bop_digits" else "1" * n,
                  # flip+gated-asha: never below no pruning, a little above it
                  "flip+gated-asha": "0" * 18 + "1" * 22}
        shares.update({c: none for c in ("flip+asha", "flip-rules")})
        (tmp_path / f"hpobench_v2_{task}.json").write_text(json.dumps(_doc(task, shares)))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hpobench_select.py"), "--out", str(tmp_path),
                           "--n-boot", "300"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sel = json.loads((tmp_path / "hpobench_v2_selection.json").read_text())
    assert sel["chosen_on_all_tasks"] == "flip+gated-asha"
    # leaving bop_digits out hides flip+hyperband's loss: the rule then picks it there (it never sees the task)
    assert sel["selection"]["bop_digits"]["chosen"] == "flip+hyperband"
    assert sel["selection"]["bop_mnist1d"]["chosen"] == "flip+gated-asha"
    assert set(sel["rank_consistency"]) == set(TASKS)
    # a budget the figures do not have is one error line
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hpobench_select.py"), "--out", str(tmp_path),
                          "--budgets", "7"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --budgets 7")
