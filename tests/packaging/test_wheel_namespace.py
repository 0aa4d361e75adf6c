"""The wheel installs one top-level package, ``bnn_tune``: ``plugins/`` and ``search_spaces/`` go inside its namespace.

An application with its own top-level ``plugins`` package (a common name) must be able to import it beside
bnn-tune: the test builds the wheel from a copy of the sources, installs it into a fresh virtual environment
(dependencies lent by this environment's site-packages through a ``.pth`` line, so nothing is downloaded), puts
a dummy ``plugins`` package next to it and imports both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("bnn_tune", "plugins", "search_spaces"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(out), str(src)])
    (whl,) = out.glob("bnn_tune-*.whl")
    return whl


def test_the_wheel_has_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert z.read(top_level).decode().split() == ["bnn_tune"]
    assert top == {"bnn_tune"}
    assert "bnn_tune/plugins/optuna.py" in names and "bnn_tune/search_spaces/presets.json" in names


def test_an_application_plugins_package_and_bnn_tune_import_side_by_side(wheel, tmp_path):
    # a fresh interpreter that sees neither this checkout nor this environment (other tests' fixtures may have put
    # the checkout on PYTHONPATH for Ray's workers: pip would then call bnn-tune "already satisfied")
    env_vars = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV") and not k.startswith("PIP_")}
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], env=env_vars, cwd=tmp_path)
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env=env_vars,
                     cwd=tmp_path).stdout.strip())
    assert (site / "bnn_tune" / "plugins" / "optuna.py").is_file()  # installed from the wheel
    # torch, numpy, optuna... from this environment; the editable install's .pth there is not read from a .pth path
    (site / "lent_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    app = tmp_path / "app"
    (app / "plugins").mkdir(parents=True)
    (app / "plugins" / "__init__.py").write_text("WHO = 'the application'\n")
    (app / "search_spaces.py").write_text("WHO = 'the application too'\n")
    code = """
import json, plugins, search_spaces
import bnn_tune, bnn_tune.plugins.optuna, bnn_tune.plugins.ray
from bnn_tune import search_spaces as spaces
from bnn_tune.search_spaces import bop, presets
print(json.dumps({"app": plugins.WHO, "app2": search_spaces.WHO, "bnn_tune": bnn_tune.__file__,
                  "pruner": bnn_tune.plugins.optuna.FlipRatePruner.__module__, "spaces": spaces.list_spaces(),
                  "bop": bop.suggest.__module__, "presets": len(presets.list()) > 0}))
"""
    got = json.loads(_run([str(py), "-c", code], cwd=app, env=env_vars).stdout.strip().splitlines()[-1])
    assert got["app"] == "the application" and got["app2"] == "the application too"
    assert got["bnn_tune"].startswith(str(site)), got  # the installed wheel, not this checkout
    assert got["pruner"] == "bnn_tune.plugins.optuna"
    assert got["bop"] == "bnn_tune.search_spaces.bop" and "bop" in got["spaces"] and got["presets"]
    help_text = _run([str(env / "bin" / "bnn-tune"), "--help"], cwd=app, env=env_vars).stdout
    assert "search" in help_text
