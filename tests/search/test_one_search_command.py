"""``bnn-tune search`` is one command: the same settings, defaults, seeds, statuses and files on both backends,
one ``error:`` line for a bad value, and Ctrl-C that leaves a study ``--resume`` continues.

The Ray side of the same contract is in tests/integration/test_ray_search_cli.py (same summary schema).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from bnn_tune.cli import main  # noqa: E402
from bnn_tune.search.settings import DEFAULT_EPOCHS, SearchSettings, sampler_seeds  # noqa: E402

TINY = ["-p", "max_steps_per_epoch=2", "-p", "width=0.0625"]
SUMMARY_KEYS = {"format_version", "backend", "study", "space", "naive", "pruner", "seed", "samples", "workers",
                "epochs", "fixed", "metric", "mode", "storage", "experiment_path", "elapsed_s", "counts", "best",
                "trials"}
ROW_KEYS = {"trial", "status", "val_acc", "best_val_acc", "epochs", "params", "config", "note", "log_flip_rate",
            "test_acc", "checkpoint"}


def test_both_backends_take_the_same_settings_with_the_same_defaults(tmp_path):
    common = {"base_config": {}, "out": tmp_path / "x", "seed": 1}
    ray, opt = SearchSettings(backend="ray", **common), SearchSettings(backend="optuna", **common)
    assert ray.space == opt.space == "bop"  # the optimizer need not be given to either
    assert ray.base_config == opt.base_config
    assert ray.epochs == opt.epochs == DEFAULT_EPOCHS["digits"] == 10 and ray.dataset == "digits"
    assert ray.workers == opt.workers == (os.cpu_count() or 1) and ray.pruner == opt.pruner == "flip+gated-asha"
    assert ray.n_trials == opt.n_trials == 16 and ray.sampler_seeds() == opt.sampler_seeds()


def test_worker_seeds_are_spawned_from_the_root_seed_and_never_collide():
    # with seed + i, the runs --seed 2 and --seed 3 on two workers shared the worker seed 3
    runs = {seed: sampler_seeds(seed, 2) for seed in range(50)}
    every = [s for seeds in runs.values() for s in seeds]
    assert len(set(every)) == len(every)
    assert sampler_seeds(7, 2) == sampler_seeds(7, 2)


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_without_a_seed_each_search_draws_one_and_says_it(backend, tmp_path):
    a = SearchSettings(backend=backend, out=tmp_path / "a", storage=":memory:" if backend == "optuna" else None)
    b = SearchSettings(backend=backend, out=tmp_path / "b", storage=":memory:" if backend == "optuna" else None)
    assert a.seed_drawn and b.seed_drawn and a.seed != b.seed
    assert f"seed={a.seed} (drawn; rerun with --seed to repeat the draws)" in a.describe()
    again = a.replace(seed=a.seed)
    assert not again.seed_drawn and again.sampler_seeds() == a.sampler_seeds()


def test_rerunning_with_the_printed_seed_repeats_the_draws(tmp_path, capsys):
    args = ["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "2", "--epochs", "1",
            "--workers", "1", "--pruner", "none", *TINY]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    seed = int(re.search(r"seed=(\d+) \(drawn", capsys.readouterr().out).group(1))
    assert main([*args, "--seed", str(seed), "--out", str(tmp_path / "again")]) == 0
    first, again = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("first", "again"))
    assert first["seed"] == again["seed"] == seed
    assert [t["params"] for t in first["trials"]] != []
    assert sorted(json.dumps(t["params"], sort_keys=True) for t in first["trials"]) == sorted(
        json.dumps(t["params"], sort_keys=True) for t in again["trials"])


def test_the_optuna_backend_writes_what_the_ray_backend_writes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "3", "--epochs", "2",
                 "--workers", "1", "--seed", "0", *TINY, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS and all(set(t) == ROW_KEYS for t in summary["trials"])
    assert summary["backend"] == "optuna" and summary["storage"] == f"sqlite:///{out.resolve() / 'study.db'}"
    # the live line, the ranking's title and summary.json count the same statuses
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items())
    assert f"done ({counts})" in text and "3 trials in" in text and counts in text.split("3 trials in")[1]
    assert sum(summary["counts"].values()) == 3
    best = json.loads((out / "best_config.json").read_text())
    assert best["optimizer"] == "bop" and best["epochs"] == 2
    assert (out / "export" / "model.bnn.safetensors").is_file()
    assert json.loads((out / "export" / "export.json").read_text())["trial"] == summary["best"]["trial"]
    capsys.readouterr()
    # usable as it is, and it reproduces the search trial exactly: its thread count is part of the config
    assert best["threads"] == (os.cpu_count() or 1)
    import optuna

    study = optuna.load_study(study_name="run", storage=summary["storage"])
    trial = study.trials[int(summary["best"]["trial"])]
    import torch

    torch.set_num_threads(1 if best["threads"] > 1 else 2)  # the refit must not depend on the process's count
    assert main(["fit", "--config", str(out / "best_config.json"), "--json"]) == 0
    refit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [m["val_acc"] for m in refit["history"]] == trial.user_attrs["bnn_tune:val_acc"]
    assert refit["history"][-1]["val_acc"] == trial.value == summary["best"]["val_acc"]


def test_a_bad_dataset_is_refused_once_before_any_trial(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--backend", "optuna", "--optimizer", "bop", "--dataset", "digitz", "--samples", "3",
                 "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "digitz" in err[0], err
    assert not out.exists()


def test_resume_is_required_to_continue_a_study_and_starts_one_where_there_is_none(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "1", "--epochs", "1", "--seed", "0",
            "--pruner", "none", *TINY, "--out", str(out)]
    assert main([*args, "--resume"]) == 0  # nothing to resume: it starts (every machine runs the same command)
    assert main(args) == 2
    assert "already holds the study 'run'; pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # 1 trial asked, 1 done: nothing more runs
    assert len(json.loads((out / "summary.json").read_text())["trials"]) == 1
    assert main([*args[:6], "2", *args[7:], "--resume"]) == 0  # --samples 2 in all: one more
    assert len(json.loads((out / "summary.json").read_text())["trials"]) == 2


def _wait(pred, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)  # polling a file written by another process, not synchronising threads


@pytest.mark.timeout(400)
@pytest.mark.parametrize("workers", [2, 1])
def test_ctrl_c_on_optuna_workers_is_one_line_and_resume_finishes_the_study(tmp_path, workers):
    import optuna

    from bnn_tune.search._storage import make_storage

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bnn_tune.cli", "search", "--backend", "optuna", "--optimizer", "bop",
           # 20 short epochs: on a quiet machine 3 epochs of a trial took ~0.3 s and the whole search ended between
           # two polls of the study, before any Ctrl-C; a trial now stays RUNNING with a report for most of its run
           "--samples", "6", "--epochs", "20", "--workers", str(workers), "--seed", "0", "--pruner", "none",
           "-p", "max_steps_per_epoch=40", "-p", "width=0.25", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        # a trial that reported an epoch is past its sampling: its retry must reuse its parameters
        _wait(lambda: (out / "study.db").exists() and _running(out) >= 1, 240, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert proc.returncode == 130, (stdout[-2000:], stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("interrupted: the search is saved in sqlite:///"), lines
    assert lines[0].endswith("--resume") and "Traceback" not in stdout
    study = optuna.load_study(study_name="run", storage=make_storage(f"sqlite:///{out / 'study.db'}"))
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, states  # the study is consistent
    assert all(t.user_attrs.get("bnn_tune:worker") for t in study.trials)  # which process ran each trial
    interrupted = [t for t in study.trials if t.user_attrs.get("bnn_tune:fail_reason", "").startswith("interrupted")]
    assert interrupted, states
    resume = [sys.executable, "-m", "bnn_tune.cli", *re.search(r"bnn-tune (.*)$", lines[0]).group(1).split()]
    done = subprocess.run(resume, capture_output=True, text=True, cwd=tmp_path, timeout=360)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name="run", storage=make_storage(f"sqlite:///{out / 'study.db'}"))
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 6  # --samples is the total: the interrupted trials ran again, nothing more
    retried = {t.user_attrs.get("bnn_tune:retry_of") for t in study.trials} - {None}
    assert retried == {t.number for t in interrupted}
    assert any(t.params for t in interrupted)
    for t in interrupted:  # run again with the same parameters (a trial stopped before it sampled draws anew)
        twin = next(r for r in study.trials if r.user_attrs.get("bnn_tune:retry_of") == t.number)
        assert twin.state.name == "COMPLETE" and (twin.params == t.params or not t.params)


def _running(out: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("select count(*) from trials t join trial_intermediate_values v on "
                              "v.trial_id = t.trial_id where t.state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_the_same_config_is_stopped_at_the_same_point_for_the_same_rule_by_both_backends(tmp_path, ray_env,
                                                                                      monkeypatch):
    """Through what ``bnn-tune search`` builds (settings -> strategy -> backend): a frozen Bop config (gamma 1e-6,
    threshold 1e-3 never flips a weight) and a healthy one, enqueued first with the same training seed, end with
    the same status, epochs and rule on Optuna and on Ray."""
    pytest.importorskip("ray.tune")
    from bnn_tune.search import SearchSettings, run_search

    for k, v in ray_env.items():
        monkeypatch.setenv(k, v)
    frozen = {"gamma": 1e-6, "threshold": 1e-3, "gamma_schedule": "constant", "lr": 1e-3}
    healthy = {"gamma": 1e-3, "threshold": 1e-7, "gamma_schedule": "constant", "lr": 1e-3}
    got = {}
    for backend in ("optuna", "ray"):
        settings = SearchSettings(backend=backend, base_config={"epochs": 2, "max_steps_per_epoch": 8, "width": 0.25},
                                  n_trials=2, workers=1, seed=0, enqueue=[frozen, healthy], verbose=False,
                                  out=tmp_path / backend)
        result = run_search(settings, export=False)
        got[backend] = sorted((r.params["gamma"], r.status, r.epochs, (r.note or "").split(":")[0])
                              for r in result.rows)
    assert got["optuna"] == got["ray"], got
    assert got["optuna"][0] == (1e-6, "flip-early", 0.125, "flip-early")  # after the first 1/8 epoch
    assert got["optuna"][1][:3] == (1e-3, "completed", 2)
