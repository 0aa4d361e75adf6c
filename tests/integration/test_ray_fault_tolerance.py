"""Fault tolerance of bnn_tune.trainable under Ray Tune.

* a worker killed after a checkpoint is retried by ``FailureConfig(max_failures=1)`` from that checkpoint
  and ends bit-identical to an uninterrupted twin;
* a driver killed mid-experiment (SIGKILL to its process group) is resumed with ``Tuner.restore``: no
  trial is lost and interrupted trials continue from their checkpoints.

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
    import sys
    import time
    import ray
    from ray import tune
    import bnn_tune


    class Pace(tune.Callback):
        # slows the experiment down from the driver so the kill lands mid-run on any machine: a function
        # trainable's report() blocks until the driver fetches the result, so a pause here paces every trial

        def on_trial_result(self, iteration, trials, trial, result, **info):
            time.sleep(0.2)


    storage, temp_dir = sys.argv[1], sys.argv[2]
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    tuner = tune.Tuner(
        bnn_tune.trainable,
        param_space={"dataset": "digits", "optimizer": "bop", "max_steps_per_epoch": 6, "width": 0.5,
                     "epochs": EPOCHS, "gamma": tune.grid_search([1e-3, 2e-3, 3e-3, 4e-3])},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=2),
        # every checkpoint kept: with num_to_keep, Ray may delete the checkpoint that the last experiment
        # snapshot points to just before a SIGKILL (then that trial cannot be restored)
        run_config=tune.RunConfig(name="killme", storage_path=storage, verbose=0, callbacks=[Pace()]),
    )
    tuner.fit()
    print("DRIVER FINISHED")
    """
)


def _checkpointed_epochs(experiment: Path) -> dict[str, int]:
    """``{trial dir name: latest checkpoint epoch}`` from the checkpoint directories on disk."""
    out = {}
    for ckpt in experiment.glob("*/checkpoint_*/checkpoint.pt"):
        epoch = int(ckpt.parent.name.split("_")[-1]) + 1
        out[ckpt.parent.parent.name] = max(out.get(ckpt.parent.parent.name, 0), epoch)
    return out


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
    epochs = 20
    storage = tmp_path / "storage"
    temp_dir = tempfile.mkdtemp(prefix="bnnkill_")
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.replace("EPOCHS", str(epochs)))
    env = {**ray_env, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    proc = subprocess.Popen([sys.executable, str(script), str(storage), temp_dir], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    experiment = storage / "killme"
    try:
        _wait_for(lambda: list(experiment.glob("experiment_state-*.json")) and any(
            e >= 3 for e in _checkpointed_epochs(experiment).values()), 180, "a trial to checkpoint 3 epochs", proc)
        time.sleep(1.0)  # let the driver snapshot the experiment state with these checkpoints
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _stop_leftover_ray(temp_dir)
    at_kill = _checkpointed_epochs(experiment)
    assert "DRIVER FINISHED" not in (proc.stdout.read() if proc.stdout else "")
    interrupted = {name for name, e in at_kill.items() if e < epochs}
    assert interrupted, f"no trial was interrupted mid-run: {at_kill}"

    assert tune.Tuner.can_restore(str(experiment))
    restored = tune.Tuner.restore(str(experiment), trainable=bnn_tune.trainable, resume_unfinished=True,
                                  resume_errored=True)
    results = restored.fit()
    assert len(results) == 4, "a trial was lost"
    assert not results.errors
    continued = 0
    for r in results:
        name = Path(r.path).name
        assert r.metrics["epoch"] == epochs and r.metrics["training_iteration"] == epochs
        # the trainer's own history, saved in the final checkpoint: every epoch exactly once
        state = load_checkpoint_state(r.checkpoint.path)
        assert [m["epoch"] for m in state["history"]] == list(range(1, epochs + 1)), name
        if name in interrupted:
            # continued from a checkpoint taken before the kill, not from scratch
            resumed_from = epochs - r.metrics["iterations_since_restore"]
            assert 1 <= resumed_from <= at_kill[name], (name, resumed_from, at_kill[name])
            continued += 1
    assert continued == len(interrupted)


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
