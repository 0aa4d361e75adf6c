"""One row per trial (bnn_tune/search/_rows.py): the ranking and the best trial both backends report, the
status counts, summary.json / best_config.json, the live view's lines."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import pytest
from rich.console import Console

from bnn_tune.search._rows import (
    SUMMARY_FORMAT,
    LiveView,
    TrialRow,
    _epochs_text,
    _fmt,
    _jsonable,
    best_row,
    count_statuses,
    print_ranking,
    rank,
    why_none_completed,
    write_outputs,
)

NAN = float("nan")


def _rows() -> list[TrialRow]:
    # completed trials rank by their FINAL val_acc (not their best epoch); the others by their best val_acc
    return [
        TrialRow("a", "completed", val_acc=0.5, best_val_acc=0.875),
        TrialRow("b", "pruned: hyperband", val_acc=0.25, best_val_acc=0.75),
        TrialRow("c", "completed", val_acc=0.625, best_val_acc=0.625),
        TrialRow("d", "flip-early", val_acc=None, best_val_acc=None),
        TrialRow("e", "completed", val_acc=NAN, best_val_acc=0.9375),  # no finite final value: not a completed rank
        TrialRow("f", "pruned: hyperband", val_acc=0.125, best_val_acc=0.25),
        TrialRow("g", "completed", val_acc=0.5625, best_val_acc=0.5625),
    ]


def test_rank_puts_completed_first_by_final_val_acc_then_the_rest_by_best():
    assert [r.trial for r in rank(_rows())] == ["c", "g", "a", "e", "b", "f", "d"]
    assert rank([]) == []


def test_best_row_is_the_completed_trial_with_the_highest_final_val_acc():
    assert best_row(_rows()).trial == "c"  # not "e" (best epoch 0.94, final NaN), not "a" (best epoch 0.875)
    # the highest final value of any trial is a pruned one's: it is never the best
    rows = [TrialRow("p", "pruned: asha", val_acc=0.99, best_val_acc=0.99), TrialRow("q", "completed", val_acc=0.25)]
    assert best_row(rows).trial == "q"
    assert best_row([TrialRow("p", "pruned: asha", val_acc=0.99, best_val_acc=0.99)]) is None
    assert best_row([TrialRow("e", "completed", val_acc=NAN, best_val_acc=0.5)]) is None
    assert best_row([TrialRow("e", "completed", val_acc=math.inf)]) is None
    assert best_row([]) is None
    # a value of exactly 0 is a value (not "missing")
    assert best_row([TrialRow("z", "completed", val_acc=0.0)]).trial == "z"


def test_count_statuses_adds_running_only_when_some_run():
    rows = [TrialRow("1", "completed"), TrialRow("2", "running"), TrialRow("3", "completed"), TrialRow("4", "running")]
    assert count_statuses(rows) == {"completed": 2, "running": 2}
    assert "running" not in count_statuses(rows[:1])
    assert count_statuses([]) == {}


def test_jsonable_turns_non_finite_numbers_into_null_and_keeps_the_rest():
    value = {"a": math.inf, 1: [NAN, -math.inf, 0.5, (2, "x")], "b": True, "c": None, "d": object}
    got = _jsonable(value)
    assert got == {"a": None, "1": [None, None, 0.5, [2, "x"]], "b": True, "c": None, "d": str(object)}
    json.dumps(got, allow_nan=False)
    assert TrialRow("t", "completed", val_acc=NAN, params={"lr": math.inf}).as_json()["params"] == {"lr": None}


@pytest.mark.parametrize("value,text", [(0.0, "0"), (0.5, "0.5"), (0.01, "0.01"), (0.00125, "0.00125"),
                                        (0.009999, "0.01"), (123.45678, "123.5"), (1000.0, "1e+03"),
                                        (999.9, "999.9"), (-0.001, "-0.001"), (NAN, "nan"), (math.inf, "nan"),
                                        (None, ""), (3, "3"), ("bop", "bop")])
def test_fmt_four_significant_digits_and_exponents_outside_0_01_to_1000(value, text):
    assert _fmt(value) == text


def test_epochs_text_whole_epochs_without_decimals():
    assert (_epochs_text(2.0), _epochs_text(2), _epochs_text(0.25), _epochs_text(0)) == ("2", "2", "0.25", "0")


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=400, force_terminal=False, color_system=None), buf


def test_live_view_prints_a_trial_once_per_status_and_the_status_line():
    console, buf = _console()
    with LiveView(console, n_trials=4, epochs=10) as view:
        view.started("1")
        view.started("2")
        view.finished(TrialRow("1", "completed", val_acc=0.5, epochs=10, params={"gamma": 1e-4}))
        view.finished(TrialRow("1", "completed", val_acc=0.5, epochs=10))  # the same again: no second line
        view.finished(TrialRow("3", "flip-early", epochs=0.25, note="flip-early: never flipped"))
        assert view.running == {"2"}
    lines = buf.getvalue().splitlines()
    assert lines[0] == "trial 1: completed, val_acc 0.5000, epochs 10/10, gamma=0.0001"
    assert lines[1] == "trial 3: flip-early, val_acc -, epochs 0.25/10 -- flip-early: never flipped"
    assert lines[2].startswith("trials: 1 running, 2 of 4 done (1 completed, 1 flip-early); "
                               "best val_acc 0.5000 (trial 1); elapsed ")
    assert len(lines) == 3


def test_live_view_disabled_prints_nothing():
    console, buf = _console()
    with LiveView(console, n_trials=1, epochs=1, enabled=False) as view:
        view.finished(TrialRow("1", "completed", val_acc=0.5))
    assert buf.getvalue() == ""


@pytest.mark.parametrize("top,more", [(2, "(5 more trials in summary.json; --top N shows more)"), (7, None)])
def test_print_ranking_shows_the_top_rows_in_rank_order(top, more):
    console, buf = _console()
    print_ranking(console, _rows(), top=top, epochs=10, title="digits")
    text = buf.getvalue()
    assert text.index(" c ") < text.index(" g ")
    assert (" a " in text) == (top > 2)
    if more:
        assert text.rstrip().endswith(more)
    else:
        assert "more trials" not in text


def _settings(tmp_path):
    return SimpleNamespace(out=tmp_path / "new" / "out", backend="optuna", study_name="s", space_name="bop", naive=False,
                           pruner="flip+hyperband", seed=3, n_trials=7, workers=1, epochs=10,
                           base_config={"dataset": "digits", "lr_scale": math.inf})


def test_write_outputs_summary_ranks_every_trial_and_names_the_best(tmp_path):
    rows = _rows()
    rows[2].config = {"optimizer": "bop", "dataset": "digits", "epochs": 3}
    rows[2].test_acc = 0.5
    write_outputs(_settings(tmp_path), rows[:1], elapsed_s=0.5, extra={})  # out and its parent are made
    summary = write_outputs(_settings(tmp_path), rows, elapsed_s=1.5, extra={"storage": "sqlite:///x"})  # again
    on_disk = json.loads((tmp_path / "new" / "out" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["format_version"] == SUMMARY_FORMAT
    assert summary["storage"] == "sqlite:///x"  # extra overrides the defaults
    assert summary["fixed"] == {"dataset": "digits", "lr_scale": None}
    assert [t["trial"] for t in summary["trials"]] == ["c", "g", "a", "e", "b", "f", "d"]
    assert summary["counts"] == count_statuses(rows)
    assert summary["best"]["trial"] == "c" and summary["best"]["test_acc"] == 0.5
    best = json.loads((tmp_path / "new" / "out" / "best_config.json").read_text())
    assert (best["optimizer"], best["epochs"]) == ("bop", 3)


def test_write_outputs_without_a_completed_trial_writes_no_best_config(tmp_path):
    rows = [r for r in _rows() if r.status != "completed"]
    summary = write_outputs(_settings(tmp_path), rows, elapsed_s=0.0, extra={})
    assert summary["best"] is None and summary["storage"] is None
    assert not (tmp_path / "new" / "out" / "best_config.json").exists()


def test_why_none_completed_names_what_stopped_the_trials():
    assert why_none_completed([], "asha") == "no trial completed: no trials"
    line = why_none_completed([TrialRow("1", "pruned: asha"), TrialRow("2", "failed")], "asha")
    assert "the strategy (asha) stopped every trial" in line and "flip-early means" not in line
    assert "every trial failed" not in line


def test_a_trial_that_never_reported_trained_zero_epochs():
    row = TrialRow("9", "failed")
    assert (row.epochs, row.val_acc, row.params, row.note) == (0, None, {}, "")


def test_lines_are_never_cut_to_the_console_width():
    """Piped output (CI, | tee) prints every line once and in full, however narrow the console."""
    buf = io.StringIO()
    console = Console(file=buf, width=30, force_terminal=False, color_system=None)
    params = {f"param_{i}": 0.125 for i in range(6)}
    with LiveView(console, n_trials=2, epochs=10) as view:
        view.finished(TrialRow("1", "completed", val_acc=0.5, epochs=10, params=params))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith("param_5=0.125") and lines[1].startswith("trials: 0 running, 1 of 2")


def test_disabled_view_stays_silent_on_a_terminal_too():
    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=True, color_system=None)
    with LiveView(console, n_trials=1, epochs=1, enabled=False) as view:
        view.started("1")
        view.finished(TrialRow("1", "completed", val_acc=0.5))
    assert buf.getvalue() == ""
