"""Shared fixtures. Ray starts only when a test asks for ``ray_session`` (non-Ray tests never import it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}


def ray_test_env() -> dict[str, str]:
    """Environment for Ray drivers/workers started by tests: quiet, no home-directory writes, and this
    checkout importable by the workers."""
    env = dict(os.environ)
    env.update({k: v for k, v in RAY_ENV.items() if k not in os.environ})
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


@pytest.fixture
def ray_env() -> dict[str, str]:
    """:func:`ray_test_env` for subprocess drivers (multi-node cluster, killed driver)."""
    return ray_test_env()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime (2 CPUs) for the whole test session; its temp dir is removed at the end.

    Yields the temp dir. Tests that need their own cluster (multi-node, driver kill) run it in a
    subprocess instead.
    """
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    os.environ.update(ray_test_env())
    temp_dir = tempfile.mkdtemp(prefix="bnnray_")  # short: Ray's socket paths must stay < 108 bytes
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             configure_logging=False)
    try:
        yield temp_dir
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
