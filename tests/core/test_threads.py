"""A trial's torch thread count is part of its config (``threads``): CPU results depend on it, so a refit with
the trial's flat config repeats the trial's metrics exactly whatever the process's thread count, and the
process's count is restored after every run (also when the run raises)."""

from __future__ import annotations

import json

import pytest
import torch

from bnn_tune import Trainer, fit
from bnn_tune.cli import main
from bnn_tune.config import ConfigError, TrialConfig

# digits with Bop, 10 epochs of 18 steps: the metrics of a few hundred steps
TRIAL = {"dataset": "digits", "optimizer": "bop", "epochs": 10, "seed": 0, "threads": 1}


def _history(rows):
    return [{k: v for k, v in row.items() if k != "epoch_time"} for row in rows]


@pytest.fixture
def process_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_fit_config_repeats_the_trial_whatever_the_process_thread_count(tmp_path, capsys, process_threads):
    flat = TrialConfig.from_dict(TRIAL).to_dict()  # what a search writes to best_config.json
    assert flat["threads"] == 1
    path = tmp_path / "best_config.json"
    path.write_text(json.dumps(flat))
    runs = []
    for process in (2, 1):  # the process's own setting changes between the trial and its refit
        torch.set_num_threads(process)
        assert main(["fit", "--config", str(path), "--json"]) == 0
        assert torch.get_num_threads() == process  # restored after the run
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["config"]["threads"] == 1
    assert _history(runs[0]["history"]) == _history(runs[1]["history"])
    assert runs[0]["test_acc"] == runs[1]["test_acc"]


@pytest.mark.slow  # two threads on a shared 2-core machine stall (10x slower); run by `make test-slow`
def test_the_thread_count_changes_cpu_results(process_threads):
    """Why the key exists: the same seed at 1 and 2 threads trains to other weights."""
    one = fit({**TRIAL, "epochs": 4, "threads": 1})
    two = fit({**TRIAL, "epochs": 4, "threads": 2})
    assert [m.train_loss for m in one.history] != [m.train_loss for m in two.history]


def test_threads_apply_inside_each_step_and_are_restored_on_error(process_threads):
    torch.set_num_threads(2)
    seen = []

    def callback(m, trainer):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt  # e.g. Ctrl-C, or optuna.TrialPruned raised by a callback

    trainer = Trainer({"dataset": "synthetic", "epochs": 2, "max_steps_per_epoch": 2, "threads": 1})
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyboardInterrupt):
        trainer.run(callback)
    assert seen == [1] and torch.get_num_threads() == 2
    trainer.train_epoch()  # the Ray trainable's path: epoch by epoch
    assert torch.get_num_threads() == 2
    assert TrialConfig.from_dict({"threads": 3.0}).threads == 3  # a JSON float that is an integer
    default = Trainer({"dataset": "synthetic", "epochs": 1, "max_steps_per_epoch": 1})
    assert default.config.threads is None and torch.get_num_threads() == 2  # None: the process's setting


@pytest.mark.parametrize("value, words", [(0, "`threads` must be an integer >= 1, but got threads=0."),
                                          (1.5, "`threads` must be an integer >= 1, but got threads=1.5."),
                                          ("2", "`threads` must be an integer >= 1, but got threads='2'.")])
def test_bad_threads_value_is_one_error_line(value, words, capsys):
    with pytest.raises(ConfigError) as info:
        TrialConfig.from_dict({"threads": value})
    assert str(info.value) == words
    assert main(["fit", "--dataset", "synthetic", "-p", f"threads={json.dumps(value)}"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"error: {words}"], captured.err
