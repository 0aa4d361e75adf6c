"""``bnn-tune search --backend ray`` end to end in a subprocess: embedded local Ray, ranking,
best_config.json, results under the run directory, nothing written to the home directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

pytest.importorskip("ray.tune")
pytest.importorskip("optuna")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

# summary.json has one schema for both backends (tests/search/test_one_search_command.py checks the Optuna side)
SUMMARY_KEYS = {"format_version", "backend", "study", "space", "naive", "pruner", "seed", "samples", "workers",
                "epochs", "fixed", "metric", "mode", "storage", "experiment_path", "elapsed_s", "counts", "best",
                "trials"}
ROW_KEYS = {"trial", "status", "val_acc", "best_val_acc", "epochs", "params", "config", "note", "log_flip_rate",
            "test_acc", "checkpoint"}


def test_search_cli_ray_backend_runs_contained(ray_env, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--dataset", "digits", "--samples", "3", "--epochs", "2", "--workers", "2", "--seed", "0",
           "-p", "max_steps_per_epoch=5", "-p", "width=0.5", "--out", str(out)]
    env = {**ray_env, "HOME": str(home), "BNN_TUNE_CPU_KERNEL": "numpy"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=360, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "run (ray): 3 trials in" in log  # the final ranking
    assert "== Status ==" not in log and "Result logdir" not in log  # Ray's own status blocks are off
    assert len(re.findall(r"^trial \w+: (completed|pruned: \w+|flip-\w+|failed), val_acc", log, re.M)) == 3, log
    assert re.search(r"^trials: 0 running, 3 of 3 done", log, re.M), log  # the live view's last status line
    best = json.loads((out / "best_config.json").read_text())
    assert best["optimizer"] == "bop" and best["dataset"] == "digits" and best["max_steps_per_epoch"] == 5
    from bnn_tune.config import TrialConfig

    TrialConfig.from_dict(best)  # usable as `bnn-tune fit --config best_config.json`
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 3 and summary["backend"] == "ray"
    assert sum(summary["counts"].values()) == 3
    assert set(summary) == SUMMARY_KEYS and set(summary["trials"][0]) == ROW_KEYS  # the Optuna backend's schema
    assert summary["experiment_path"] == str(out.resolve() / "ray_results" / "run")
    assert (out / "ray_results" / "run").is_dir()
    assert not (out / "ray_tmp").exists()  # Ray's temp dir lived in the run directory and was removed
    assert [p for p in home.rglob("*")] == [], "the search wrote to the home directory"


def _one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    """The answer to a user mistake: exit 2, one ``error: ...`` line on stderr naming it, no traceback."""
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "error:" not in proc.stdout, proc.stdout[-3000:]


def test_search_cli_ray_backend_rejects_bad_fixed_config(ray_env, tmp_path):
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--samples", "2", "-p", "epoch=3", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=ray_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    _one_error_line(proc, "Unknown key 'epoch'. Did you mean 'epochs'?")
    assert not (tmp_path / "run").exists()  # refused before anything was started or written


def test_search_cli_ray_backend_rejects_bad_counts_before_starting_ray(ray_env, tmp_path):
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--samples", "0", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=ray_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    _one_error_line(proc, "`n_trials` must be an integer >= 1, but got n_trials=0 (--samples on the command line).")
    assert not (tmp_path / "run").exists()


def test_search_cli_accepts_fractional_gpus_and_says_when_the_cluster_has_none(ray_env, tmp_path):
    # --gpus-per-trial takes a fraction (several trials share a GPU); on a cluster without enough GPUs the
    # search stops with one line instead of leaving every trial pending forever
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the request is satisfiable here")
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--samples", "1", "--epochs", "1", "--gpus-per-trial", "0.25", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=ray_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    _one_error_line(proc, "--gpus-per-trial 0.25 asks for GPUs, but the Ray cluster has 0")


@pytest.mark.parametrize("when", ["first trial mid-run", "second trial running"])
def test_search_cli_resume_continues_an_interrupted_search(ray_env, tmp_path, when):
    """Ctrl-C (SIGINT) once the first trial has saved a checkpoint, or once the first trial has finished and the
    second runs, then ``--resume``: the same trials continue from the checkpoints in the experiment state that
    Ctrl-C saved, and every trial ends at the last epoch. The second case is the one CI met: Tune stops the
    running trial after saving the state, the returned trial reads TERMINATED, and the search was reported as
    finished (exit 0, the stopped trial ranked as pruned)."""
    from ray.tune import ExperimentAnalysis

    from .test_ray_fault_tolerance import _state_epochs, _wait_for

    # 16 short epochs a trial: the interrupt lands (Tune reacts within a step of its loop) long before the
    # ~30 epochs still to run end the search, also on a loaded machine
    epochs, out = 16, tmp_path / "run"
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "ray", "--optimizer", "bop",
           "--dataset", "digits", "--samples", "2", "--epochs", str(epochs), "--workers", "1", "--pruner", "none",
           "--seed", "0", "-p", "max_steps_per_epoch=3", "-p", "width=0.5", "--out", str(out)]
    experiment = out / "ray_results" / "run"

    def checkpoints() -> list[int]:  # checkpoints on disk per trial folder (num_to_keep=5 drops the worst)
        return [len(list(d.glob("checkpoint_*"))) for d in experiment.glob("*/")]

    proc = subprocess.Popen(cmd, env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path, start_new_session=True)
    try:
        # one trial at a time. A checkpoint folder on disk is not yet one the driver has registered (CI once
        # sent Ctrl-C between the two and the saved state held no checkpoint); the trainable's report()
        # returns only once the driver has taken the result, so when the second checkpoint is being
        # written the first is in the driver's state.
        if when == "first trial mid-run":
            _wait_for(lambda: max(checkpoints(), default=0) >= 2, 240, "a second checkpoint", proc)
        else:  # the first trial has finished (one at a time), the second has reported
            _wait_for(lambda: sum(n >= 1 for n in checkpoints()) == 2, 240, "the second trial's first checkpoint", proc)
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends: Tune saves the state and stops
        first_log = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, first_log[-3000:]  # one line says how to continue
    assert "interrupted: the search is saved in" in first_log and "--resume" in first_log
    assert "Traceback" not in first_log, first_log[-3000:]
    at_stop = _state_epochs(experiment)  # what --resume reads
    assert at_stop, first_log[-3000:]
    assert min(at_stop.values()) < epochs or len(at_stop) < 2, (at_stop, first_log[-3000:])  # interrupted

    proc2 = subprocess.run([*cmd, "--resume"], env=ray_env, capture_output=True, text=True, timeout=360, cwd=tmp_path)
    log = proc2.stdout + proc2.stderr
    assert proc2.returncode == 0, log[-4000:]
    assert f"resuming the interrupted search in {experiment.resolve()}" in " ".join(log.split())
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 2, summary["trials"]
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"], summary["trials"]
    assert set(at_stop) <= {t["trial"] for t in summary["trials"]}  # the same trials, not new ones
    final = {t.trial_id: t.last_result for t in ExperimentAnalysis(str(experiment)).trials}
    for trial_id, epoch in at_stop.items():
        # an unfinished trial continued from the checkpoint in the state: only the epochs after it ran again
        assert final[trial_id]["epoch"] == epochs
        since = epochs - epoch if epoch < epochs else epochs  # (a finished one was not run again)
        assert final[trial_id]["iterations_since_restore"] == since, (trial_id, epoch, final[trial_id])
