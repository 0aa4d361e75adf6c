"""Import hygiene: export/kernels never pull in ray or optuna; the CLI has `export` and `bench` (the `export`
command reads search folders and storage URLs, so it lives in bnn_tune.search.export_cli)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_no_heavy_imports():
    code = ("import sys, bnn_tune.export, bnn_tune.kernels, bnn_tune.bench.cli, bnn_tune.search.export_cli; "
            "print(sorted(m for m in ('ray', 'optuna', 'matplotlib') if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"


def test_cli_registers_export_and_bench(capsys):
    import pytest

    from bnn_tune.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "export" in text and "bench" in text
