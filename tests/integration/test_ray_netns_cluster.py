"""``bnn-tune search`` on a Ray cluster of two hosts: network namespaces joined by a veth pair.

The head node runs in one namespace, the worker node in another (``tools/netns_hosts.py``: each has its own
interfaces and ports, and they reach each other only across the veth), the driver on the head host; the
file system is shared, as an NFS mount would be, so the trials' checkpoints under ``--out`` are seen by both.
The commands are README's ("Distributed runs"), with this test's own names, temp dirs and output folder.

* The worker host is lost mid-trial (every process inside its namespace SIGKILLed, after a checkpoint of its
  trial): Ray retries the trial (``--max-failures 1``) on the head from that checkpoint, and its final metrics
  equal an uninterrupted twin's (``bnn_tune.fit`` of the same config).
* The driver is SIGKILLed while both trials are running with a checkpoint: ``bnn-tune search ... --resume``
  finishes the search, every trial continuing from its checkpoint (none runs its first epoch twice).

Skipped, with the reason, where network namespaces cannot be made (not root, no iproute2); CI (``make
system-deps``, ``BNN_TUNE_REQUIRE_DISTRIBUTED=1``) fails instead. Every wait polls a state with a deadline.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import load_tool, ray_test_env, skip_distributed

pytest.importorskip("ray.tune")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]
cluster_marks = [pytest.mark.slow, pytest.mark.distributed]

NETNS = load_tool("netns_hosts")
HEAD, WORKER = "bnn-head", "bnn-worker"  # README's namespace names; the test's own are unique per process
# README's commands ("Distributed runs"); the test swaps in its namespaces, temp dir and output folder
FAST_FAILURE_DETECTION = "RAY_health_check_period_ms=1000 RAY_health_check_failure_threshold=3"
HEAD_START = (f"ip netns exec {HEAD} env {FAST_FAILURE_DETECTION} ray start --head --node-ip-address "
              f"{NETNS.HEAD_IP} --port 6379 --num-cpus 1 --include-dashboard false --disable-usage-stats "
              "--temp-dir /tmp/bnn-ray/head")
WORKER_START = (f"ip netns exec {WORKER} ray start --address {NETNS.HEAD_IP}:6379 --node-ip-address "
                f"{NETNS.WORKER_IP} --num-cpus 1 --disable-usage-stats --temp-dir /tmp/bnn-ray/worker")
SEARCH = (f"ip netns exec {HEAD} bnn-tune search --backend ray --address {NETNS.HEAD_IP}:6379 --optimizer bop "
          "--dataset digits --samples 2 --epochs 8 --workers 2 --seed 0 --pruner none -p max_steps_per_epoch=8 "
          "-p width=0.25 -p threads=1 --out /tmp/bnn-ray/runs/bop-cluster")
# the same search, its experiment state saved every 0.1 s (Ray's default period is at least 10 s),
# so that the state the test reads before killing the driver is the one --resume starts from
# (16 epochs: the first saved state that holds both trials' checkpoints comes a few epochs in)
RESUMABLE = SEARCH.replace(f"exec {HEAD} bnn-tune", f"exec {HEAD} env TUNE_GLOBAL_CHECKPOINT_S=0.1 bnn-tune").replace(
    "bop-cluster", "bop-resume").replace("--epochs 8", "--epochs 16")
EPOCHS, RESUMABLE_EPOCHS = 8, 16
METRICS = ("epoch", "val_acc", "val_loss", "train_loss", "flip_rate")


class Cluster:
    """The two hosts of one test module and what runs on them."""

    def __init__(self, hosts, temp: str) -> None:
        self.hosts, self.temp = hosts, temp
        # RAY_TMPDIR: what Ray writes outside --temp-dir (ray_current_cluster) stays in this run's folder too
        self.env = {**ray_test_env(), "MPLBACKEND": "Agg", "RAY_TMPDIR": temp}

    def parse(self, command: str) -> tuple[list[str], dict[str, str]]:
        """README's ``ip netns exec NS [env K=V ...] PROGRAM ...`` as this run's argv (its namespaces, temp dir and
        programs from this environment) and the environment to run it with."""
        args = shlex.split(command.replace("/tmp/bnn-ray", self.temp))
        assert args[:3] == ["ip", "netns", "exec"], command
        namespace = {HEAD: self.hosts.head, WORKER: self.hosts.worker}[args[3]]
        rest, env = args[4:], dict(self.env)
        if rest[0] == "env":
            rest = rest[1:]
            while "=" in rest[0]:
                key, value = rest.pop(0).split("=", 1)
                env[key] = value
        program = {"ray": [os.path.join(os.path.dirname(sys.executable), "ray")],
                   "bnn-tune": [sys.executable, "-m", "bnn_tune.cli"]}[rest[0]]
        return self.hosts.exec(namespace, [*program, *rest[1:]]), env

    def run(self, command: str, timeout: float = 240) -> str:
        argv, env = self.parse(command)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def start(self, command: str) -> subprocess.Popen:
        argv, env = self.parse(command)
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


@pytest.fixture(scope="module")
def cluster():
    """Both hosts, and the head node running on the first; everything inside them killed at the end."""
    reason = NETNS.unavailable_reason()
    if reason is not None:
        skip_distributed(reason)
    hosts = NETNS.TwoHosts(f"bnn{os.getpid()}")
    temp = tempfile.mkdtemp(prefix="bnnrn")  # short: Ray's socket paths must fit 107 bytes
    try:
        hosts.up()
        c = Cluster(hosts, temp)
        c.run(HEAD_START)
        yield c
    finally:
        hosts.down()
        shutil.rmtree(temp, ignore_errors=True)


def _results(trial_dir: Path) -> list[dict]:
    try:
        lines = (trial_dir / "result.json").read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the driver is writing this line
            break
    return rows


def _trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.glob("trainable_*") if p.is_dir())


def _wait_for(what: str, check, deadline: float, proc: subprocess.Popen):
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the search exited ({proc.returncode}) before {what}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.02)  # polling interval of a bounded wait for a state
    pytest.fail(f"timed out waiting for {what}")


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    return out


def _twin(trial_dir: Path) -> list[dict]:
    import bnn_tune

    history = bnn_tune.fit(json.loads((trial_dir / "params.json").read_text())).history
    return [{k: getattr(m, k) for k in METRICS} for m in history]


def _by_epoch(rows: list[dict]) -> list[dict]:
    """The last result reported for each epoch, in epoch order (a resumed trial may report one again)."""
    last = {r["epoch"]: {k: r[k] for k in METRICS} for r in rows}
    return [last[e] for e in sorted(last)]


@pytest.mark.slow
@pytest.mark.distributed
def test_lost_worker_host_its_trial_resumes_on_the_head_from_its_checkpoint(cluster):
    cluster.run(WORKER_START)
    out = Path(cluster.temp) / "runs" / "bop-cluster"
    driver = cluster.start(SEARCH)
    experiment = out / "ray_results" / "bop-cluster"

    def on_worker_with_checkpoint():
        for d in _trial_dirs(experiment):
            rows = _results(d)
            if rows and rows[-1].get("node_ip") == NETNS.WORKER_IP and list(d.glob("checkpoint_*/checkpoint.pt")):
                return d
        return None

    try:
        victim = _wait_for("a trial on the worker host with a checkpoint", on_worker_with_checkpoint,
                           time.monotonic() + 240, driver)
        cluster.hosts.signal_all(cluster.hosts.worker, signal.SIGSTOP)  # the host freezes: no more progress
        seen = _results(victim)[-1]["epoch"]
        assert seen <= EPOCHS - 2, f"the trial on the worker host reached epoch {seen} of {EPOCHS} before the kill"
        cluster.hosts.kill_host(cluster.hosts.worker)  # ... and is lost
        _finish(driver)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    summary = json.loads((out / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"], summary["trials"]
    rows = _results(victim)
    last = rows[-1]
    assert last["node_ip"] == NETNS.HEAD_IP and last["epoch"] == EPOCHS
    restored_at = last["training_iteration"] - last["iterations_since_restore"]
    assert seen <= restored_at < EPOCHS, (seen, restored_at)  # from its last checkpoint, not from scratch
    _assert_twin(rows, victim)  # every epoch as an uninterrupted run of the same config


def _assert_twin(rows: list[dict], trial_dir: Path) -> None:
    got, twin = _by_epoch(rows), _twin(trial_dir)
    differ = [(g["epoch"], {k: (g[k], t[k]) for k in METRICS if g[k] != t[k]}) for g, t in zip(got, twin) if g != t]
    assert len(got) == len(twin) and not differ, (
        f"{trial_dir.name}: reported {[(r['epoch'], r['node_ip'], r['iterations_since_restore']) for r in rows]}; "
        f"differs from the uninterrupted twin at {differ}")


@pytest.mark.slow
@pytest.mark.distributed
def test_killed_driver_resume_finishes_with_no_trial_run_twice_from_scratch(cluster):
    from ray.tune import ExperimentAnalysis

    cluster.hosts.kill_host(cluster.hosts.worker)  # whatever the previous test left there
    cluster.run(WORKER_START.replace("bnn-ray/worker", "bnn-ray/worker2"))
    command = RESUMABLE
    out = Path(cluster.temp) / "runs" / "bop-resume"
    experiment = out / "ray_results" / "bop-resume"
    driver = cluster.start(command)

    def both_running_with_checkpoints():
        """Both trials unfinished in the saved state (which records a RUNNING trial as PENDING), each with a
        checkpoint: the state --resume starts from."""
        if not list(experiment.glob("experiment_state-*.json")):
            return None
        quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
        level, quiet.level = quiet.level, logging.ERROR  # (it warns that it finds no result files yet)
        try:
            trials = ExperimentAnalysis(str(experiment)).trials
        except Exception:  # the driver is writing it: read it again at the next poll
            return None
        finally:
            quiet.setLevel(level)
        return len(trials) == 2 and all(t.status == "PENDING" and t.checkpoint is not None for t in trials)

    try:
        deadline = time.monotonic() + 240
        while True:
            _wait_for("both trials unfinished with a checkpoint in the experiment state", both_running_with_checkpoints,
                      deadline, driver)
            os.killpg(driver.pid, signal.SIGSTOP)  # the state cannot change any more
            if both_running_with_checkpoints():
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
                break
            os.killpg(driver.pid, signal.SIGCONT)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert not (out / "summary.json").exists()
    resume = cluster.start(command + " --resume")
    _finish(resume)
    summary = json.loads((out / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"], summary["trials"]
    dirs = _trial_dirs(experiment)
    assert len(dirs) == 2, dirs  # no trial lost, none started anew
    for d in dirs:
        rows = _results(d)
        assert [r["epoch"] for r in rows].count(1) == 1, (d.name, [r["epoch"] for r in rows])  # not from scratch
        assert rows[-1]["epoch"] == RESUMABLE_EPOCHS and rows[-1]["iterations_since_restore"] < RESUMABLE_EPOCHS
        _assert_twin(rows, d)


def test_readme_shows_the_commands_this_test_runs():
    readme = (ROOT / "README.md").read_text()
    hosts = NETNS.TwoHosts("bnn")
    for command in [*(" ".join(c) for c in hosts.commands()), HEAD_START, WORKER_START, SEARCH, RESUMABLE,
                    RESUMABLE + " --resume"]:
        assert command in readme, command
