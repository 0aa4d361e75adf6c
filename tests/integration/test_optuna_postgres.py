"""``bnn-tune search --backend optuna`` on a real PostgreSQL server, 4 worker processes, one SIGKILLed mid-trial.

The server is the system's PostgreSQL, started by ``tools/pg_server.py`` (the ``postgres_server`` fixture) on a
free port; the search is README's command (:data:`COMMAND`, "Distributed runs") run as a subprocess. Once a trial
is RUNNING with a heartbeat and before its first report, the test stops its worker (SIGSTOP), checks in the
database that the trial is still RUNNING with no report (so the worker cannot be about to complete it), and
kills it (SIGKILL): the trial goes stale after ``--grace-period`` and is failed and retried with the same
parameters. Then:

* every trial number is handed out once, none is left RUNNING or WAITING, only the killed trial failed, its one
  retry completed, and the study holds ``--samples`` finished trials (the driver runs the share of the killed
  worker too);
* the retry's per-epoch ``val_acc`` and flip rates equal those of an uninterrupted twin (``bnn_tune.fit`` of the
  same config);
* ``bnn-tune report``, ``bnn-tune export`` and optuna-dashboard read the study from PostgreSQL.

No sleep decides an ordering: every wait polls a state with a deadline.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP/SIGKILL of a worker")

COMMAND = ("bnn-tune search --backend optuna --optimizer bop --dataset digits --samples 8 --epochs 2 --workers 4 "
           "--seed 0 --pruner none -p max_steps_per_epoch=8 -p width=0.25 --heartbeat-interval 1 --grace-period 15 "
           '--storage "$PG_URL" --study bop-pg --out runs/bop-pg')
"""README's command (section "Distributed runs"), run here with ``$PG_URL`` the test's database."""
REPORT, EXPORT = "bnn-tune report runs/bop-pg", "bnn-tune export runs/bop-pg --no-bench"
DASHBOARD = 'optuna-dashboard "$PG_URL"'
N_TRIALS, EPOCHS = 8, 2


def _argv(command: str, url: str) -> list[str]:
    args = shlex.split(command.replace('"$PG_URL"', url))
    assert args[0] == "bnn-tune"
    return [sys.executable, "-m", "bnn_tune.cli", *args[1:]]


def _env() -> dict[str, str]:
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MPLBACKEND": "Agg"}


def _trials(url: str) -> list[tuple]:
    """``(number, state, heartbeats, reports, worker, has config)`` of every trial, read with SQL (no Optuna cache)."""
    import psycopg

    query = ("SELECT t.number, t.state, "
             "(SELECT count(*) FROM trial_heartbeats h WHERE h.trial_id = t.trial_id), "
             "(SELECT count(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id), "
             "(SELECT a.value_json FROM trial_user_attributes a WHERE a.trial_id = t.trial_id "
             "AND a.key = 'bnn_tune:worker'), "
             "(SELECT count(*) FROM trial_user_attributes a WHERE a.trial_id = t.trial_id "
             "AND a.key = 'bnn_tune:config') FROM trials t ORDER BY t.number")
    try:
        with psycopg.connect(url, connect_timeout=10) as con:
            return [(n, str(s), hb, iv, json.loads(w) if w else None, configured)
                    for n, s, hb, iv, w, configured in con.execute(query)]
    except psycopg.errors.UndefinedTable:  # the search has not created the schema yet
        return []


def _in_first_epoch(url: str, number: int | None = None) -> tuple[int, int] | None:
    """``(trial number, worker pid)`` of a trial that is training its first epoch: RUNNING with a heartbeat, its
    config sampled and stored (so its retry gets the same one), no report yet (``number``: that trial)."""
    for n, state, beats, reports, worker, configured in _trials(url):
        if (number is None or n == number) and state.endswith("RUNNING") and beats and configured and not reports \
                and worker:
            return n, int(worker.rsplit(":", 1)[1])
    return None


def _kill_a_worker_mid_trial(url: str, driver: subprocess.Popen, deadline: float) -> tuple[int, int]:
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"the search exited ({driver.returncode}) before a worker could be killed"
        found = _in_first_epoch(url)
        if found is not None:
            number, pid = found
            os.kill(pid, signal.SIGSTOP)  # frozen: it can neither report nor complete the trial any more
            if _in_first_epoch(url, number) == found:  # still inside its first epoch after the stop
                os.kill(pid, signal.SIGKILL)
                return number, pid
            os.kill(pid, signal.SIGCONT)  # it reported in between: let it go on and choose again
        time.sleep(0.05)  # polling interval of a bounded wait for a state
    pytest.fail("timed out waiting for a trial RUNNING with a heartbeat")


@pytest.fixture(scope="module")
def killed_search(postgres_server, tmp_path_factory):
    """README's search on a fresh PostgreSQL database, one worker SIGKILLed mid-trial; yields what it left."""
    url = postgres_server.create_database(f"bop_pg_{os.getpid()}")
    cwd = tmp_path_factory.mktemp("pg")
    driver = subprocess.Popen(_argv(COMMAND, url), cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        victim, pid = _kill_a_worker_mid_trial(url, driver, time.monotonic() + 240)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0, output[-4000:]
    assert f"dashboard: optuna-dashboard {url}" in output  # the search names the dashboard of its storage
    return {"url": url, "cwd": cwd, "victim": victim, "pid": pid, "output": output}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(400)
@linux_only
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_every_trial_once_none_left_running_and_the_killed_trial_retried(killed_search):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from bnn_tune.search._storage import make_storage

    study = optuna.load_study(study_name="bop-pg", storage=make_storage(killed_search["url"]))
    trials = study.get_trials(deepcopy=False)
    states = [(t.number, t.state.name) for t in trials]
    assert sorted(t.number for t in trials) == list(range(len(trials))), states  # every number handed out once
    assert len({t._trial_id for t in trials}) == len(trials)
    assert not [s for s in states if s[1] in ("RUNNING", "WAITING")], states
    victim = killed_search["victim"]
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim], states
    lost = trials[victim]
    assert lost.user_attrs["bnn_tune:worker"].endswith(f":{killed_search['pid']}")
    assert not lost.intermediate_values and lost.params  # killed inside its first epoch, its config drawn
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, states
    assert retries[0].params == lost.params
    # --samples finished trials, as without the kill: the killed worker's unstarted share ran too
    assert sum(t.state == TrialState.COMPLETE for t in trials) == N_TRIALS and len(trials) == N_TRIALS + 1, states

    # the retry ends exactly where an uninterrupted run of the same config ends
    import bnn_tune

    retry = retries[0]
    twin = bnn_tune.fit(retry.user_attrs["bnn_tune:config"])
    assert [retry.intermediate_values[e] for e in sorted(retry.intermediate_values)] == \
        [m.val_acc for m in twin.history]
    assert retry.user_attrs["bnn_tune:log_flip_rate"] == [m.log_flip_rate for m in twin.history]
    assert retry.value == twin.history[-1].val_acc and len(twin.history) == EPOCHS


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(400)
@linux_only
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_report_export_and_dashboard_read_the_postgres_study(killed_search, monkeypatch, capsys):
    from bnn_tune.cli import main

    cwd, url = killed_search["cwd"], killed_search["url"]
    summary = json.loads((cwd / "runs" / "bop-pg" / "summary.json").read_text())
    assert summary["storage"] == url  # what report and export follow
    monkeypatch.chdir(cwd)
    for command in (REPORT, EXPORT):  # the commands in this process (the same main as the bnn-tune script)
        assert main(_argv(command, url)[3:]) == 0, f"{command}:\n{capsys.readouterr()}"
    report = (cwd / "runs" / "bop-pg" / "report.html").read_text()
    assert "bop-pg" in report and "Flip-rate curves" in report
    exported = json.loads((cwd / "runs" / "bop-pg" / "export" / "export.json").read_text())
    best = summary["best"]
    assert str(exported["trial"]) == str(best["trial"]) and exported["value"] == best["val_acc"]

    # optuna-dashboard DASHBOARD serves this WSGI app: the study and every trial with its reports
    from wsgiref.util import setup_testing_defaults

    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    assert shlex.split(DASHBOARD)[0] == "optuna-dashboard"
    app = optuna_dashboard.wsgi(url)

    def get(path: str) -> dict:
        environ: dict = {}
        setup_testing_defaults(environ)
        environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
        status: list[str] = []
        body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
        assert status and status[0].startswith("200"), (path, status, body[:300])
        return json.loads(body)

    (study,) = [s for s in get("/api/studies")["study_summaries"] if s["study_name"] == "bop-pg"]
    trials = get(f"/api/studies/{study['study_id']}")["trials"]
    assert len(trials) == N_TRIALS + 1
    assert sum(1 for t in trials if t["state"] == "Complete" and len(t["intermediate_values"]) == EPOCHS) == N_TRIALS


def test_readme_shows_the_commands_this_test_runs():
    readme = (ROOT / "README.md").read_text()
    for command in (COMMAND, REPORT, EXPORT, DASHBOARD):
        assert command in readme, command
