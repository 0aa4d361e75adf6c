"""``benchmarks/hpobench_reeval.py``: which cell a study ships, with and without re-evaluating its top cells."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "hpobench_reeval", Path(__file__).resolve().parents[2] / "benchmarks" / "hpobench_reeval.py")
reeval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reeval)

# 3 cells x 3 training seeds of final val: cell 0 is lucky on seed 0 only, cell 1 is good on every seed
FIN = np.array([[0.90, 0.70, 0.70],
                [0.85, 0.84, 0.86],
                [0.90, 0.60, 0.60]])


def test_without_reevaluation_the_first_trial_with_the_best_single_seed_val_is_shipped():
    trials = [[2.0, 1, 0.85], [2.0, 0, 0.90], [2.0, 2, 0.90]]  # cells 0 and 2 tie: the earlier trial wins
    assert reeval.shipped_cell(trials, FIN, limit=6.0, k=0) == 0
    assert reeval.shipped_cell(trials, FIN, limit=4.0, k=0) == 0
    assert reeval.shipped_cell(trials, FIN, limit=3.9, k=0) == 1  # the second trial is past the budget
    assert reeval.shipped_cell([[0.125, 0, None]], FIN, limit=6.0, k=0) is None  # nothing completed


def test_reevaluation_ships_the_best_mean_over_the_seeds_seen_plus_one_unseen():
    trials = [[2.0, 1, 0.85], [2.0, 0, 0.90]]
    # top 2: cell 0 (0.90, + unseen seed 1: 0.70 -> 0.80) and cell 1 (0.85, + unseen seed 1: 0.84 -> 0.845)
    assert reeval.shipped_cell(trials, FIN, limit=4.0, k=2) == 1
    # top 1 only: cell 0 is re-evaluated alone and shipped
    assert reeval.shipped_cell(trials, FIN, limit=4.0, k=1) == 0
    # a pruned trial (no final val) is charged but never shipped
    assert reeval.shipped_cell([[1.0, 2, None], *trials], FIN, limit=5.0, k=2) == 1


def test_bad_arguments_give_one_error_line(tmp_path, capsys):
    import pytest

    for argv, message in ((["--logs", str(tmp_path)], "no hpobench_v2_<task>.logs.json.gz in"),
                          (["--logs", str(tmp_path), "--k", "x"], "--budgets takes numbers"),
                          (["--logs", str(tmp_path), "--budgets", "2", "--k", "0,3"], "every budget must exceed every k")):
        with pytest.raises(SystemExit) as e:
            reeval.main([*argv, "--out", str(tmp_path / "out")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
