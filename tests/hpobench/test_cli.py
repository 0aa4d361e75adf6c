"""``bnn-tune hpobench``: a table/JSON from replays; bad input -> one ``error:`` line, exit 2."""

from __future__ import annotations

import json

import pytest

from bnn_tune import hpobench
from bnn_tune.cli import main
from bnn_tune.hpobench.evaluate import parse_seeds


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1000-1001,7") == [1000, 1001, 7]
    for bad in ("3-1", "a", "-2", ""):
        with pytest.raises(ValueError, match="seed"):
            parse_seeds(bad)


@pytest.mark.parametrize("argv, needle", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--task", "bop_digits", "--seeds", "9-1"], "bad seed range '9-1'"),
    (["--task", "bop_digits", "--pruner", "asha,ashaa"], "unknown pruner 'ashaa'"),
    (["--task", "bop_digits", "--space", "odd"], "unknown space 'odd'"),
    (["--task", "bop_digits", "--n-trials", "0"], "--n-trials must be >= 1"),
    (["--task", "bop_digits", "--sampler", "grid"], "unknown sampler 'grid'"),
    (["--task", "bop_digits", "--budgets", "0,5"], "bad --budgets '0,5'"),
    (["--task", "bop_digits", "--budgets", "5,inf"], "bad --budgets '5,inf'"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, needle, capsys):
    if "bop_digits" in argv and "bop_digits" not in hpobench.tasks():
        pytest.skip("bop_digits not recorded")
    assert main(["hpobench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bnn-tune hpobench: error:") and needle in err and "\n" not in err


@pytest.mark.skipif("bop_digits" not in hpobench.tasks(), reason="bop_digits not recorded")
def test_json_aggregates(capsys):
    assert main(["hpobench", "--task", "bop_digits", "--pruner", "none,flip+asha", "--seeds", "0-1",
                 "--n-trials", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == {"none", "flip+asha"}
    assert rows["none"]["n"] == 2
    assert rows["none"]["trial_epochs_total"][0] == 4 * hpobench.load("bop_digits").epochs
    assert rows["flip+asha"]["trial_epochs_total"][0] <= rows["none"]["trial_epochs_total"][0]


@pytest.mark.skipif("bop_digits" not in hpobench.tasks(), reason="bop_digits not recorded")
def test_budgets_protocol_json(capsys):
    assert main(["hpobench", "--task", "bop_digits", "--pruner", "none,asha-m3-rf2", "--seeds", "0-2",
                 "--budgets", "1,2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == {"none", "asha-m3-rf2"} and set(rows["none"]) == {"1", "2"}
    share = rows["none"]["2"]["share_at_target"]
    assert len(share) == 3 and share[1] <= share[0] <= share[2]


@pytest.mark.parametrize("argv, needle", [
    (["--budgets", "0,5"], "bad --budgets"),
    (["--budgets", "x"], "bad --budgets"),
    (["--budgets", "5", "--n-trials", "10"], "drop --n-trials"),
])
def test_bad_budgets_are_one_error_line(argv, needle, capsys):
    if "bop_digits" not in hpobench.tasks():
        pytest.skip("bop_digits not recorded")
    assert main(["hpobench", "--task", "bop_digits", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bnn-tune hpobench: error:") and needle in err


def test_table_cells_say_never_for_a_target_never_reached():
    from bnn_tune.hpobench.cli import _fmt

    assert _fmt((float("inf"), 2.0, float("inf")), 1) == "never [2.0, never]"
    assert _fmt((3.0, 1.0, 12.0), 0) == "3 [1, 12]"


@pytest.mark.skipif("bop_digits" not in hpobench.tasks(), reason="bop_digits not recorded")
def test_one_trial_is_a_valid_search_and_the_table_prints_whole_trials(capsys):
    import re

    assert main(["hpobench", "--task", "bop_digits", "--pruner", "none", "--seeds", "0", "--n-trials", "1"]) == 0
    assert main(["hpobench", "--task", "bop_digits", "--pruner", "none", "--seeds", "0-2", "--n-trials", "30"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│ none")][-1]
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert re.fullmatch(r"\d+ \[\d+, \d+\]", cells[1]), cells  # trials: whole numbers
    for epochs in (cells[2], cells[3]):  # trial-epochs to target and in total: one decimal
        assert re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", epochs), cells
