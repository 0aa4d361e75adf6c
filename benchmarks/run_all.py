"""Run every benchmark script (``benchmarks/*.py`` and ``benchmarks/science/*.py``) in its own process.

    python benchmarks/run_all.py [--quick] [--out DIR] [--only NAME ...]

``--quick`` (used by CI) passes ``--quick`` to every script: tiny budgets that check the scripts run end to
end and write their JSON + PNG (to ``benchmarks/results/quick/`` unless ``--out`` is given). Without it the full benchmarks run (see BENCHMARKS.md for the figures and
their commands). Exits non-zero if any script fails; prints one line per script with its wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_IS_FILE = {"bench_flip_counter", "bench_optim_step", "bench_tanh", "bench_train_step"}


def scripts() -> list[Path]:
    """Every runnable benchmark script (private helpers starting with ``_`` and this file excluded)."""
    found = sorted(HERE.glob("*.py")) + sorted((HERE / "science").glob("*.py"))
    return [p for p in found if not p.name.startswith("_") and p.name != Path(__file__).name]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets (CI)")
    p.add_argument("--out", default=None, help="results directory passed to every script (default: each script's own)")
    p.add_argument("--only", nargs="*", default=None, help="run only the scripts with these stems")
    p.add_argument("--timeout", type=float, default=None, help="seconds per script")
    args = p.parse_args(argv)
    if args.quick and args.out is None:  # smoke runs never overwrite the recorded full-run figures
        args.out = str(HERE / "results" / "quick")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    failed = []
    for script in scripts():
        if args.only is not None and script.stem not in args.only:
            continue
        cmd = [sys.executable, str(script)]
        if args.quick:
            cmd.append("--quick")
        if args.out:
            out = Path(args.out)
            # the science scripts and bench_kernels take a directory; bench_flip_counter and bench_optim_step a file
            cmd += ["--out", str(out / f"{script.stem}.json") if script.stem in OUT_IS_FILE else str(out)]
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        dt = time.perf_counter() - t0
        print(f"[run_all] {script.relative_to(ROOT)}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {dt:.1f}s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"[run_all] failed: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
