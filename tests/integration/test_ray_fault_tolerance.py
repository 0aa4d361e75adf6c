"""Fault tolerance of bnn_tune.trainable under Ray Tune.

* a worker killed after a checkpoint is retried by ``FailureConfig(max_failures=1)`` from that checkpoint
  and ends bit-identical to an uninterrupted twin;
* a driver killed mid-experiment (SIGKILL to its process group) is resumed with ``Tuner.restore``: no
  trial is lost, every trial continues from the checkpoint recorded in the experiment state, and the
  final metrics equal an uninterrupted twin's.

Every wait is bounded, so a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

from ray import tune  # noqa: E402

import bnn_tune  # noqa: E402
from bnn_tune._trainable import load_checkpoint_state  # noqa: E402

TINY = {"dataset": "digits", "optimizer": "bop", "max_steps_per_epoch": 6, "width": 0.5}


def test_max_failures_retries_a_killed_worker_from_its_checkpoint(ray_session, tmp_path):
    marker = str(tmp_path / "killed-once")

    def flaky_trainable(config):
        """bnn_tune.trainable whose worker process dies right after its 2nd checkpoint, once per test."""
        from ray import tune as ray_tune

        import bnn_tune as bt

        original = ray_tune.report

        def report(metrics, *, checkpoint=None):
            original(metrics, checkpoint=checkpoint)
            if metrics["epoch"] == 2:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    return
                os._exit(1)  # a hard crash of the worker: no exception, no cleanup

        ray_tune.report = report
        try:
            bt.trainable(config)
        finally:
            ray_tune.report = original

    epochs = 4
    analysis = tune.run(
        flaky_trainable,
        config={**TINY, "epochs": epochs},
        num_samples=2,  # two identical trials: one is killed, its twin runs straight through
        max_failures=1,
        storage_path=str(tmp_path), name="retry", verbose=0, metric="val_acc", mode="max",
        raise_on_failed_trial=False,
    )
    assert os.path.exists(marker)
    trials = sorted(analysis.trials, key=lambda t: t.run_metadata.num_failures)
    straight, retried = trials
    assert [t.status for t in trials] == ["TERMINATED", "TERMINATED"]
    assert (straight.run_metadata.num_failures, retried.run_metadata.num_failures) == (0, 1)
    # restarted from the epoch-2 checkpoint, not from scratch: 2 epochs ran since the restore
    assert retried.last_result["training_iteration"] == epochs
    assert retried.last_result["iterations_since_restore"] == epochs - 2
    assert straight.last_result["iterations_since_restore"] == epochs
    state = load_checkpoint_state(retried.checkpoint.path)
    assert [m["epoch"] for m in state["history"]] == list(range(1, epochs + 1))
    # resumed exactly: the retried trial ends bit-identical to its uninterrupted twin
    a, b = straight.last_result, retried.last_result
    for key in ("epoch", "train_loss", "val_acc", "val_loss", "flip_rate"):
        assert a[key] == b[key], key


_DRIVER = textwrap.dedent(
    """
    import os
    import sys
    import time
    import ray
    from ray import tune
    import bnn_tune

    storage, temp_dir, gate = sys.argv[1], sys.argv[2], sys.argv[3]

    def trainable(config):  # named like bnn_tune.trainable, so that Tuner.restore accepts that one
        \"\"\"bnn_tune.trainable that stays inside its trial after reporting epoch GATE until `gate` exists.\"\"\"
        from ray import tune as ray_tune

        import bnn_tune as bt

        original = ray_tune.report

        def report(metrics, *, checkpoint=None):
            original(metrics, checkpoint=checkpoint)  # returns once the driver has the result
            deadline = time.monotonic() + 240
            while metrics["epoch"] >= GATE and not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting for a state (the gate file), bounded

        ray_tune.report = report
        try:
            bt.trainable(config)
        finally:
            ray_tune.report = original

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    tuner = tune.Tuner(
        trainable,
        param_space={**TINY, "epochs": EPOCHS, "gamma": tune.grid_search(GAMMAS)},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=2),
        run_config=tune.RunConfig(name="killme", storage_path=storage, verbose=0),
    )
    tuner.fit()
    print("DRIVER FINISHED")
    """
)


def _state_epochs(experiment: Path) -> dict[str, int]:
    """``{trial id: epoch of its latest checkpoint}`` as the experiment state file records it: the state
    that ``Tuner.restore`` resumes from (not the checkpoint folders on disk, which may be newer)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment))
    return {t.trial_id: int(Path(t.checkpoint.path).name.split("_")[-1]) + 1
            for t in analysis.trials if t.checkpoint is not None}


def _state_epochs_or_none(experiment: Path) -> dict[str, int]:
    if not list(experiment.glob("experiment_state-*.json")):
        return {}
    try:
        return _state_epochs(experiment)
    except Exception:  # the driver is writing it: read it again at the next poll
        return {}


def _wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver exited (rc={proc.returncode}) before {what}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_killed_driver_resumes_with_tuner_restore(ray_session, ray_env, tmp_path):
    """Every trial stops at epoch ``gate_epoch`` until the driver is killed, so the kill lands mid-run on any
    machine; the restored trials resume from the checkpoints in the experiment state and end exactly like
    an uninterrupted twin."""
    epochs, gate_epoch, gammas = 4, 2, [1e-3, 3e-3]
    storage = tmp_path / "storage"
    temp_dir = tempfile.mkdtemp(prefix="bnnkill_")
    gate = tmp_path / "gate"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.replace("TINY", repr(TINY)).replace("EPOCHS", str(epochs))
                      .replace("GATE", str(gate_epoch)).replace("GAMMAS", repr(gammas)))
    env = {**ray_env, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    proc = subprocess.Popen([sys.executable, str(script), str(storage), temp_dir, str(gate)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    experiment = storage / "killme"
    try:
        _wait_for(lambda: (lambda e: len(e) == 2 and set(e.values()) == {gate_epoch})(
            _state_epochs_or_none(experiment)), 180, f"the state to record both trials at epoch {gate_epoch}", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _stop_leftover_ray(temp_dir)
    assert "DRIVER FINISHED" not in (proc.stdout.read() if proc.stdout else "")
    at_kill = _state_epochs(experiment)  # the driver is dead: this is the state the restore reads
    assert len(at_kill) == 2 and set(at_kill.values()) == {gate_epoch}, at_kill

    gate.touch()  # (the restore runs bnn_tune.trainable itself; the gate only matters to the killed driver)
    assert tune.Tuner.can_restore(str(experiment))
    restored = tune.Tuner.restore(str(experiment), trainable=bnn_tune.trainable, resume_unfinished=True,
                                  resume_errored=True)
    results = restored.fit()
    assert len(results) == 2, "a trial was lost"
    assert not results.errors
    twin = tune.run(bnn_tune.trainable, config={**TINY, "epochs": epochs, "gamma": tune.grid_search(gammas)},
                    storage_path=str(tmp_path / "twin"), name="twin", verbose=0, metric="val_acc", mode="max")
    twins = {t.config["gamma"]: t.last_result for t in twin.trials}
    for r in results:
        trial_id = r.metrics["trial_id"]
        assert r.metrics["epoch"] == epochs and r.metrics["training_iteration"] == epochs
        # continued from the checkpoint the state recorded, not from scratch nor from a later one
        assert r.metrics["iterations_since_restore"] == epochs - at_kill[trial_id], trial_id
        # the trainer's own history, saved in the final checkpoint: every epoch exactly once
        state = load_checkpoint_state(r.checkpoint.path)
        assert [m["epoch"] for m in state["history"]] == list(range(1, epochs + 1)), trial_id
        # and exactly where an uninterrupted run of the same config ends
        expected = twins[r.config["gamma"]]
        for key in ("epoch", "train_loss", "val_acc", "val_loss", "flip_rate"):
            assert r.metrics[key] == expected[key], (trial_id, key)


def _stop_leftover_ray(temp_dir: str) -> None:
    """Stop the killed driver's Ray processes (found by this test's unique temp dir) and remove the dir."""
    import shutil

    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline and int(pid_dir.name) != os.getpid():
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(temp_dir, ignore_errors=True)
