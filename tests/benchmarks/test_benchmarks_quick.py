"""The science benchmark scripts run end to end in their ``--quick`` mode and write sane JSON + PNG.

Each script runs in a subprocess exactly as CI's ``python benchmarks/run_all.py --quick`` runs it; the
test then checks the JSON it wrote (command, quick flag, the script's key figures) and that the plot is a
PNG. The budgets are tiny (a few optimizer steps per trial), so these check plumbing, not the claims; the
claims are measured by the full runs recorded in BENCHMARKS.md.

Each quick run costs ~5-10 s of CPU (most of it imports and data loading) but took 35-145 s of wall time
on the shared 2-core machine, so only the pruner comparison (the product path: objective + pruners) runs
in the default suite; the others are marked ``slow`` (``pytest -m slow tests/benchmarks``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCIENCE = ROOT / "benchmarks" / "science"

# script stem -> keys its JSON must hold
EXPECTED = {
    "bop_gamma_tau": ["findings", "grid", "volatility"],
    "theorem1": ["exact_conditions_zero_difference", "summary", "runs"],
    "bnew_beta_T": ["findings", "per_T"],
    "filters_vs_latent": ["findings", "agreement", "accuracy"],
    "accuracy_table": ["table"],
    "pruner_comparison": ["live", "live_verdict", "replay_stats"],
    "space_comparison": ["results"],
    "recipes": ["findings", "results", "settings"],
}


def _run(stem: str, out: Path, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, str(SCIENCE / f"{stem}.py"), "--quick", "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    doc = json.loads((out / f"{stem}.json").read_text())
    png = (out / f"{stem}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["quick"] is True and doc["benchmark"] == stem and "--quick" in doc["command"]
    for key in EXPECTED[stem]:
        assert key in doc, f"{stem}.json lacks {key!r}"
    return doc


def test_every_science_script_is_covered():
    stems = {p.stem for p in SCIENCE.glob("*.py") if not p.name.startswith("_")}
    assert stems == set(EXPECTED)


@pytest.mark.slow
def test_theorem1_quick_exact_conditions_hold(tmp_path):
    doc = _run("theorem1", tmp_path)
    assert doc["exact_conditions_zero_difference"] is True
    lr_only = [v for k, v in doc["summary"].items() if k.startswith("lr_only")]
    assert lr_only and all(v["max_diff"] > 0 for v in lr_only)  # the control really differs


@pytest.mark.slow
def test_filters_quick_order2_matches_latent(tmp_path):
    doc = _run("filters_vs_latent", tmp_path)
    assert doc["findings"]["order2_filter_equals_latent_sgd"] is True
    assert doc["findings"]["flips_compared"] > 0


@pytest.mark.slow
def test_bop_gamma_tau_quick(tmp_path):
    doc = _run("bop_gamma_tau", tmp_path)
    assert len(doc["grid"]) == 4
    assert all(len(c["val_acc"]) == doc["settings"]["epochs"] for c in doc["grid"])


@pytest.mark.slow
def test_bnew_beta_T_quick(tmp_path):
    from bnn_tune import optim
    from bnn_tune.optim._bnew import bnew_phase_steps

    doc = _run("bnew_beta_T", tmp_path)
    assert len(doc["per_T"]) == 2
    hp = optim.get("bnew").hyperparameters
    for p in doc["per_T"]:
        # T is the length of BNEW's annealing phase for the run's step count, and beta*T uses it
        assert p["total_steps"] == p["epochs"] * 5  # --quick: 5 steps per epoch
        start, lock = bnew_phase_steps(p["total_steps"], hp["t_start"], hp["t_lock"])
        assert p["T"] == lock - start > 0, p
        assert all(r["beta_T"] == r["beta"] * p["T"] for r in p["rows"])
        best = max(r["median_val_acc"] for r in p["rows"])
        assert p["best_median_val_acc"] == best and p["best_beta"] in p["near_best_betas"]
    assert doc["per_T"][0]["T"] < doc["per_T"][1]["T"]  # two different phase lengths to compare


def test_pruner_comparison_quick(tmp_path):
    doc = _run("pruner_comparison", tmp_path)
    live = doc["live"]
    assert set(live) == {"none", "median", "asha", "fliprate", "fliprate+median"}
    assert live["none"]["pruned"] == 0 and live["none"]["trial_epochs"] == live["none"]["max_trial_epochs"]
    assert all(r["trial_epochs"] <= live["none"]["trial_epochs"] for r in live.values())


@pytest.mark.slow
def test_space_comparison_quick(tmp_path):
    # (this used to assert `median_trials["naive"] >= 1`, true whatever the script computes)
    doc = _run("space_comparison", tmp_path, "--spaces", "bop", "--seeds", "1")
    st, res = doc["settings"], doc["results"]["bop"]
    target, max_trials = st["target"], st["max_trials"]
    for key, naive in (("reinterpreted", False), ("naive", True)):
        rows = res["rows"][key]
        assert len(rows) == st["seeds"] and all(r["naive"] is naive for r in rows)
        for r in rows:
            # trials to target: the first trial whose value reaches the target, counted from 1, else censored
            # at max_trials + 1; the study stopped there
            hits = [i + 1 for i, v in enumerate(r["values"]) if v is not None and v >= target]
            assert r["trials_to_target"] == (hits[0] if hits else max_trials + 1), r
            assert r["censored"] is (not hits)
            assert len(r["values"]) == (hits[0] if hits else max_trials)
        assert res["median_trials"][key] == statistics.median(r["trials_to_target"] for r in rows)
        assert res["censored"][key] == sum(r["censored"] for r in rows)
    assert res["ratio"] == res["median_trials"]["reinterpreted"] / res["median_trials"]["naive"]
    assert res["goal_ratio_le_0.6"] is (res["ratio"] <= 0.6)


@pytest.mark.slow
def test_accuracy_table_quick(tmp_path):
    doc = _run("accuracy_table", tmp_path, "--datasets", "digits")
    row = doc["table"]["digits"]
    assert set(row) == {"bop", "bop2", "latent_adam", "bmd", "bnew", "filter", "real"}
    assert all(r["best_val_acc"] is not None and r["failed"] == 0 for r in row.values())


@pytest.mark.slow
def test_recipes_quick(tmp_path):
    doc = _run("recipes", tmp_path)
    table = doc["results"]["digits"]["table"]
    assert set(table["bop"]) == {"one_step", "distill", "init", "distill+init"}  # two-step rejected for Bop
    assert {"two_step", "two_step+distill+init"} <= set(table["latent_adam"])
    assert doc["complete"] is True and doc["findings"]["digits"]["twin_test_median"] is not None


def test_run_all_lists_the_scripts():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.pop(0)
    names = {p.stem for p in run_all.scripts()}
    assert set(EXPECTED) <= names and "run_all" not in names and "_common" not in names
