"""Every script `make bench-quick` runs takes the flags run_all hands it (a missing --quick failed CI once)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_benchmark_script_declares_quick_and_out():
    scripts = _run_all().scripts()
    assert len(scripts) >= 10
    common = (ROOT / "benchmarks" / "science" / "_common.py").read_text(encoding="utf-8")
    assert '"--quick"' in common and '"--out"' in common  # C.parse_args of the science scripts

    def declares(path: Path) -> bool:
        text = path.read_text(encoding="utf-8")
        if path.parent.name == "science" and "C.parse_args(" in text:
            return True
        return '"--quick"' in text and '"--out"' in text

    assert [p.name for p in scripts if not declares(p)] == []
