"""``bnn-tune search --backend ray`` end to end in a subprocess: embedded local Ray, ranking,
best_config.json, results under the run directory, nothing written to the home directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("ray.tune")
pytest.importorskip("optuna")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]


def test_search_cli_ray_backend_runs_contained(ray_env, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--dataset", "digits", "--samples", "3", "--epochs", "2", "--workers", "2",
           "-p", "max_steps_per_epoch=5", "-p", "width=0.5", "--out", str(out)]
    env = {**ray_env, "HOME": str(home), "BNN_TUNE_CPU_KERNEL": "numpy"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=360, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "bop on digits: 3 trials" in log  # the final ranking
    assert "== Status ==" in log  # the live progress table
    best = json.loads((out / "best_config.json").read_text())
    assert best["optimizer"] == "bop" and best["dataset"] == "digits" and best["max_steps_per_epoch"] == 5
    from bnn_tune.config import TrialConfig

    TrialConfig.from_dict(best)  # usable as `bnn-tune fit --config best_config.json`
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 3
    assert summary["experiment_path"] == str(out.resolve() / "ray_results" / "run")
    assert (out / "ray_results" / "run").is_dir()
    assert not (out / "ray_tmp").exists()  # Ray's temp dir lived in the run directory and was removed
    assert [p for p in home.rglob("*")] == [], "the search wrote to the home directory"


def test_search_cli_ray_backend_rejects_bad_fixed_config(ray_env, tmp_path):
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--samples", "2", "-p", "epoch=3", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=ray_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Unknown key 'epoch'. Did you mean 'epochs'?" in proc.stdout + proc.stderr


def test_search_cli_accepts_fractional_gpus_and_says_when_the_cluster_has_none(ray_env, tmp_path):
    # --gpus-per-trial takes a fraction (several trials share a GPU); on a cluster without enough GPUs the
    # search stops with one line instead of leaving every trial pending forever
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the request is satisfiable here")
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--samples", "1", "--epochs", "1", "--gpus-per-trial", "0.25", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=ray_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    assert "--gpus-per-trial 0.25 asks for GPUs, but the Ray cluster has 0" in log
    assert "Traceback" not in log
