"""Shared fixtures. Ray starts only when a test asks for ``ray_session`` (non-Ray tests never import it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# RAY_worker_niceness: Ray starts its workers at nice 15, so on a loaded machine a test's trials starve behind
# every other process and its timeouts expire; at 0 they compete like the test's driver does
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",
           "RAY_worker_niceness": "0"}


def ray_test_env() -> dict[str, str]:
    """Environment for Ray drivers/workers started by tests: quiet, no home-directory writes, and this
    checkout importable by the workers."""
    env = dict(os.environ)
    env.update({k: v for k, v in RAY_ENV.items() if k not in os.environ})
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _ray_tmpdir(prefix: str) -> str:
    """A fresh, short Ray temp root (Ray's socket paths must stay < 108 bytes) with its ``ray`` folder:
    as ``RAY_TMPDIR`` it takes what Ray would write to ``/tmp/ray`` (``ray.cluster_utils.Cluster`` writes
    ``ray_current_cluster`` there), so a test neither needs ``/tmp/ray`` nor meets another Ray's files."""
    root = tempfile.mkdtemp(prefix=prefix)
    os.mkdir(os.path.join(root, "ray"))
    return root


@pytest.fixture
def ray_env():
    """:func:`ray_test_env` for subprocess drivers (multi-node cluster, killed driver), with the test's own
    ``RAY_TMPDIR`` (removed afterwards). Ray picks free ports (GCS, workers) by itself."""
    root = _ray_tmpdir("bnnr_")
    try:
        yield {**ray_test_env(), "RAY_TMPDIR": root}
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime (2 CPUs) for the whole test session, in its own temp dir (also this process's
    ``RAY_TMPDIR``), removed at the end.

    Yields the temp dir. Tests that need their own cluster (multi-node, driver kill) run it in a
    subprocess instead.
    """
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    root = _ray_tmpdir("bnnray_")
    os.environ.update({**ray_test_env(), "RAY_TMPDIR": root})
    temp_dir = os.path.join(root, "ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             configure_logging=False)
    try:
        yield temp_dir
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def load_tool(name: str):
    """A script of ``tools/`` as a module (``tools/`` is no package: its scripts also run on their own)."""
    spec = importlib.util.spec_from_file_location(f"bnn_tune_tool_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling find the module by name
    spec.loader.exec_module(module)
    return module


REQUIRE_DISTRIBUTED = "BNN_TUNE_REQUIRE_DISTRIBUTED"
"""Set to 1 by .ci/run (after ``make system-deps``): a distributed test that cannot run fails instead of skipping."""


def skip_distributed(reason: str) -> None:
    """Skip a ``distributed`` test with ``reason``; fail instead where CI promised the environment."""
    if os.environ.get(REQUIRE_DISTRIBUTED) == "1":
        pytest.fail(f"{reason} ({REQUIRE_DISTRIBUTED}=1: this environment must run the distributed tests)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away PostgreSQL server (``tools/pg_server.py``: the system's initdb/pg_ctl, a temp folder, a free
    port on 127.0.0.1) for the whole session, stopped and removed at the end. ``server.create_database(name)``
    gives a test its own database. Skips (fails under CI) where PostgreSQL or psycopg is missing."""
    if importlib.util.find_spec("psycopg") is None:
        skip_distributed("psycopg is not installed (pip install 'bnn-tune[postgres]'; make setup installs it)")
    tool = load_tool("pg_server")
    reason = tool.unavailable_reason()
    if reason is not None:
        skip_distributed(reason)
    server = tool.PostgresServer(durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
