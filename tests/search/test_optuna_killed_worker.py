"""A SIGKILLed Optuna worker leaves no trial RUNNING: with the heartbeat of ``bnn-tune search --backend
optuna`` (RDB storage), the lost trial is failed and retried, and the study ends with every trial finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent("""
    import sys
    from bnn_tune.search.optuna import SearchSettings, run_optuna_search
    settings = SearchSettings(space="bop", base_config={"dataset": "digits", "model": "mlp", "epochs": 6,
                              "max_steps_per_epoch": 100, "width": 0.25}, n_trials=4, storage=sys.argv[1],
                              study_name="hb", workers=2, pruner="none", seed=0, verbose=False,
                              heartbeat_interval=1, grace_period=10)
    run_optuna_search(settings)
""")


def _workers(pid: int) -> list[int]:
    """The driver's spawned worker processes (not multiprocessing's resource tracker)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    out = []
    for k in kids:
        try:
            cmd = Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in cmd:
            out.append(k)
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes in /proc")
def test_sigkill_of_one_worker_fails_and_retries_its_trial(tmp_path):
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    url = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, url], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)  # polling the storage for the state to reach: both workers inside a trial
            try:
                study = optuna.load_study(study_name="hb", storage=url)
            except KeyError:
                continue
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            workers = _workers(driver.pid)
            if len(running) == 2 and len(workers) == 2:
                victim = workers[0]
                os.kill(victim, signal.SIGKILL)
        assert victim is not None, "never saw two trials running at once"
        assert driver.wait(timeout=180) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    trials = optuna.load_study(study_name="hb", storage=url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1, states  # the killed worker's trial (grace 10 s: a loaded machine's late beat is no loss)
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == failed[0].number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == failed[0].params
