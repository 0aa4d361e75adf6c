"""Every command of the README runs: its python blocks, its ``bnn-tune`` command lines, ``make run``'s job.

The README is written with small settings (a few epochs on digits), so its examples are executed as
written, each in a fresh subprocess inside a temporary directory (files they write land there). A block
preceded by ``<!-- readme-test: skip REASON -->`` is not run (none is at the moment). The tables of
optimizers and search spaces are checked against the registries.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"(?P<skip><!-- readme-test: skip[^>]*-->\s*\n)?```(?P<lang>\w+)[^\n]*\n(?P<body>.*?)\n```", re.S)


def _blocks(lang: str) -> list[tuple[str, str]]:
    """``(heading, code)`` of every fenced block in ``lang`` that is not marked to skip."""
    text = README.read_text()
    out = []
    for m in _FENCE.finditer(text):
        if m.group("lang") != lang or m.group("skip"):
            continue
        heading = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)
        out.append((heading[-1] if heading else "top", m.group("body")))
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["MPLBACKEND"] = "Agg"
    return env


def _run(args: list[str], cwd: Path, ray_env: dict[str, str], timeout: int = 400) -> subprocess.CompletedProcess:
    # a block that starts Ray writes to the test's own RAY_TMPDIR (the ray_env fixture), not /tmp/ray
    env = {**_env(), "RAY_TMPDIR": ray_env["RAY_TMPDIR"]}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


PY_BLOCKS = _blocks("python")


def _param(heading: str, code: str):
    # each block trains real (small) models in a fresh interpreter: 10-40 s each on an idle laptop CPU
    marks = [pytest.mark.slow] + ([pytest.mark.ray] if "from ray" in code else [])
    return pytest.param(code, id=re.sub(r"\W+", "_", heading).strip("_").lower(), marks=marks)


def test_readme_has_the_promised_sections():
    text = README.read_text()
    for needle in ("make run", "make test", "## Optuna in 10 lines", "## Ray Tune in 10 lines",
                   "## Optimizers", "## Search-space coordinates", "## Distributed", "optuna-dashboard sqlite:///",
                   "ray.init(address=", "## Export, benchmark, report", "## Known limits"):
        assert needle in text, needle
    for heading, code in PY_BLOCKS:
        if "10 lines" in heading:
            lines = [ln for ln in code.splitlines() if ln.strip()]
            assert len(lines) <= 14, f"{heading}: {len(lines)} lines"


@pytest.mark.parametrize("code", [_param(h, c) for h, c in PY_BLOCKS])
def test_python_block_runs(code, tmp_path, ray_env):
    script = tmp_path / "block.py"
    script.write_text(code + "\n")
    _run([sys.executable, str(script)], tmp_path, ray_env)


@pytest.mark.slow
def test_cli_commands_run_in_order(tmp_path, ray_env):
    lines = [ln.split("#")[0].strip() for _, code in _blocks("bash") for ln in code.splitlines()]
    commands = [ln for ln in lines if ln.startswith("bnn-tune ")]
    assert any(c.startswith("bnn-tune search") for c in commands)
    for cmd in commands:  # in README order: search, export, bench, report share runs/
        _run([sys.executable, "-m", "bnn_tune.cli", *shlex.split(cmd)[1:]], tmp_path, ray_env)
    assert (tmp_path / "runs" / "bop-ray" / "best_config.json").is_file()  # the Ray backend's search
    assert (tmp_path / "runs" / "bop" / "study.db").is_file()
    assert (tmp_path / "runs" / "bop" / "best_config.json").is_file()
    assert json.loads((tmp_path / "runs" / "bop" / "summary.json").read_text())["backend"] == "optuna"
    assert (tmp_path / "runs" / "bop" / "export" / "model.bnn.safetensors").is_file()
    report = (tmp_path / "runs" / "bop" / "report.html").read_text()
    assert "Kernel benchmark" in report and "Flip-rate curves" in report
    # the make lines of the README are the Makefile's targets
    makes = {ln.split()[1] for ln in lines if ln.startswith("make ")}
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert makes <= targets, makes - targets


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_make_run_job_runs(tmp_path, ray_env):
    """``make run`` = set-up + the Makefile's ``bnn-tune search`` line (a Ray search on digits); that line
    runs here with a smaller budget (2 trials x 2 short epochs) and writes its results under ``--out``."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", makefile, re.M).group(1)
    out_default = re.search(r"^RUN_OUT \?= (\S+)$", makefile, re.M).group(1)
    args = shlex.split(recipe.replace("$(RUN_OUT)", out_default))
    assert args[0].endswith("bnn-tune") and args[1] == "search", recipe
    assert args[args.index("--optimizer") + 1] == "bop" and args[args.index("--dataset") + 1] == "digits"
    _run([sys.executable, "-m", "bnn_tune.cli", *args[1:], "--samples", "2", "--epochs", "2", "--workers", "2", "--seed", "0",
          "-p", "max_steps_per_epoch=5", "-p", "width=0.5"], tmp_path, ray_env)
    out = tmp_path / out_default
    best = json.loads((out / "best_config.json").read_text())
    assert best["optimizer"] == "bop" and best["dataset"] == "digits"
    assert len(json.loads((out / "summary.json").read_text())["trials"]) == 2


def _table_rows(after: str) -> list[list[str]]:
    text = README.read_text()
    section = text[text.index(after):]
    rows, body = [], False
    for ln in section.splitlines()[1:]:
        if ln.startswith("## "):
            break
        if ln.startswith("|---"):
            body = True  # rows after the header separator
        elif body and ln.startswith("| `"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]])
    return rows


def test_optimizer_table_matches_registry():
    from bnn_tune import optim

    rows = {re.sub(r"`", "", r[0]): r for r in _table_rows("## Optimizers")}
    assert sorted(rows) == sorted(optim.list_optimizers())
    for name, row in rows.items():
        listed = set(re.findall(r"`(\w+)`", row[2]))
        assert listed, name
        unknown = listed - set(optim.get(name).hyperparameters)
        assert not unknown, f"{name}: README lists {sorted(unknown)}, registry has {sorted(optim.get(name).hyperparameters)}"


def test_search_space_table_matches_spaces():
    import optuna

    from bnn_tune import search_spaces

    rows = {re.sub(r"`", "", r[0]): r for r in _table_rows("## Search-space coordinates")}
    assert sorted(rows) == search_spaces.list_spaces()
    for name, row in rows.items():
        mod = search_spaces.get(name)
        sampled: set[str] = set()
        for seed in range(4):  # conditional spaces (filters) sample different keys per trial
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
            trial = study.ask()
            cfg = mod.suggest(trial)
            sampled |= set(trial.params) | set(cfg)
        listed = set(re.findall(r"`(\w+)`", row[1]))
        assert listed <= sampled, f"{name}: README lists {sorted(listed - sampled)} not produced by suggest()"
        assert set(trial.params) - {"order"} <= listed | {"lr"} or name == "filters", (name, trial.params)
