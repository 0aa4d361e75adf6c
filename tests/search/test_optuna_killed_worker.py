"""A SIGKILLed Optuna worker leaves no trial RUNNING: with the heartbeat of ``bnn-tune search --backend
optuna`` (RDB storage), the lost trial is failed and retried, and the study ends with every trial finished.

Deterministic on a loaded machine: the first trial any worker starts claims the victim role (an exclusive
marker file), records its pid and trial number, and stays inside the trial; the test kills that pid only
once the storage shows that trial RUNNING with a heartbeat row (a trial without one is never failed as
stale). No sleep decides an ordering: the polls below wait for a state, with a bounded deadline."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[2]

# the search space of the run: the real "bop" space, plus the victim role for the first trial to claim it
SPACE = textwrap.dedent("""
    import os
    import threading
    from pathlib import Path

    from bnn_tune.objective import resolve_space

    def suggest(trial):
        params = resolve_space("bop")(trial)
        marks = Path(os.environ["HB_MARKS"])
        try:
            fd = os.open(marks / "victim.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # another trial is the victim (or this is its retry): train normally
            return params
        os.close(fd)
        (marks / "victim.tmp").write_text(f"{os.getpid()} {trial.number}")
        os.replace(marks / "victim.tmp", marks / "victim")  # the test sees the whole line or nothing
        threading.Event().wait(240)  # inside the trial until the test kills this process
        raise RuntimeError("the test never killed the victim worker")
""")

DRIVER = textwrap.dedent("""
    import sys
    from hb_space import suggest
    from bnn_tune.search.optuna import SearchSettings, run_optuna_search
    settings = SearchSettings(space=suggest, base_config={"dataset": "digits", "model": "mlp", "epochs": 2,
                              "max_steps_per_epoch": 20, "width": 0.25}, n_trials=4, storage=sys.argv[1],
                              study_name="hb", workers=2, pruner="none", seed=0, verbose=False,
                              heartbeat_interval=1, grace_period=int(sys.argv[2]))
    run_optuna_search(settings)
""")

GRACE = 20  # seconds without a heartbeat before a trial counts as lost: a survivor's beat late by 19 s is no loss


def _wait_for(what: str, check, deadline: float, driver: subprocess.Popen):
    """Poll ``check()`` until it returns something truthy; fail if the driver exits or the deadline passes."""
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        assert driver.poll() is None, f"the search exited ({driver.returncode}) before {what}"
        time.sleep(0.1)  # polling interval of a bounded wait for a state, not an ordering by time
    pytest.fail(f"timed out waiting for {what}")


def _victim(marks: Path):
    try:
        pid, number = (marks / "victim").read_text().split()
    except FileNotFoundError:
        return None
    return int(pid), int(number)


def _running_with_heartbeat(db: Path, number: int) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            row = con.execute("SELECT t.state, COUNT(h.trial_heartbeat_id) FROM trials t LEFT JOIN "
                              "trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.number = ? GROUP BY "
                              "t.trial_id", (number,)).fetchone()
    except sqlite3.OperationalError:  # the schema is still being created
        return False
    return row is not None and row[0] == "RUNNING" and row[1] == 1


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and a process group")
def test_sigkill_of_one_worker_fails_and_retries_its_trial(tmp_path):
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    (tmp_path / "hb_space.py").write_text(SPACE)
    marks = tmp_path / "marks"
    marks.mkdir()
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    env = {**os.environ, "HB_MARKS": str(marks),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # its own process group, so that the cleanup reaches the spawned workers too
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, url, str(GRACE)], cwd=tmp_path, env=env,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        pid, number = _wait_for("a worker to enter its trial", lambda: _victim(marks), deadline, driver)
        assert pid != driver.pid  # a worker process, not the driver
        _wait_for(f"trial {number} to be RUNNING with a heartbeat", lambda: _running_with_heartbeat(db, number),
                  deadline, driver)
        os.kill(pid, signal.SIGKILL)
        assert driver.wait(timeout=300) == 0
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    trials = optuna.load_study(study_name="hb", storage=url).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [number], states  # only the killed worker's trial
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, states
    assert retries[0].params == failed[0].params
    # the survivor's 2 trials, the retry, and the victim's second share of n_trials=4, which the driver ran after
    # the workers were done: the study ends with n_trials completed trials, as without the kill
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4 and len(trials) == 5, states
