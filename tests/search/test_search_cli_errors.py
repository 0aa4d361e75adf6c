"""``bnn-tune search`` answers a storage it cannot open with one ``error:`` line naming the URL (exit 2);
``make_storage`` raises ``ValueError`` with the same words."""

from __future__ import annotations

import pytest

pytest.importorskip("optuna")

from bnn_tune.cli import main  # noqa: E402
from bnn_tune.search.optuna import make_storage  # noqa: E402


@pytest.mark.parametrize("kind", ["missing driver", "unopenable database"])
def test_unreachable_storage_is_one_clear_error(kind, tmp_path, capsys):
    url = "postgresql://user@127.0.0.1:1/bnn" if kind == "missing driver" else f"sqlite:///{tmp_path}"
    code = main(["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "1", "--epochs", "1",
                 "--storage", url, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: Cannot open the Optuna storage '{url}'") and "reachable" in err[0]
    with pytest.raises(ValueError, match="Cannot open the Optuna storage"):
        make_storage(url)


def test_a_search_with_no_completed_trial_says_which_rule_stopped_them_and_what_to_change():
    """Every trial stopped or failed: one line counting the trials by the status the deciding rule gave them, with
    the fix (more samples, another seed, or --pruner none)."""
    from bnn_tune.search._rows import TrialRow, why_none_completed

    rows = [TrialRow("0", "flip-early"), TrialRow("1", "flip-early"), TrialRow("2", "pruned: hyperband"),
            TrialRow("3", "failed")]
    line = why_none_completed(rows, "flip+hyperband")
    assert line.startswith("no trial completed: 1 pruned: hyperband, 2 flip-early, 1 failed;"), line
    assert "--pruner none" in line and "--samples" in line and "never flipped" in line
    assert why_none_completed([TrialRow("0", "failed")], "asha") == (
        "no trial completed: 1 failed; every trial failed: see the errors above (the note of each trial in "
        "summary.json)")


@pytest.mark.parametrize("url, why", [
    ("journal:/runs/j.log", "a journal URL starts with 'journal://'"),
    ("journal:runs/j.log", "a journal URL starts with 'journal://'"),
    ("journal://", "no file path after 'journal://'"),
    ("sqlite:/runs/s.db", "a SQLite URL starts with 'sqlite:///'"),
    ("runs/study.db", ""),
])
def test_malformed_storage_url_is_refused_before_anything_is_written(url, why, tmp_path, capsys, monkeypatch):
    """``journal:/runs/j.log`` used to be read as a relative path ending in .log: a folder named ``journal:``."""
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "1", "--epochs", "1",
                 "--storage", url, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: `storage` must be ':memory:', an RDB URL (sqlite:///path.db") and "journal:///" in err[0]
    assert f"but got storage={url!r}" in err[0] and why in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no journal: folder, no run/
    with pytest.raises(ValueError, match="`storage` must be"):
        make_storage(url)


def test_reading_a_missing_storage_file_creates_nothing(tmp_path):
    from bnn_tune._errors import PathNotFoundError

    for url in (f"sqlite:///{tmp_path / 'a' / 'nothere.db'}", f"journal://{tmp_path / 'b' / 'nothere.log'}"):
        with pytest.raises(PathNotFoundError, match="No Optuna storage file at"):
            make_storage(url, create=False)
    assert list(tmp_path.iterdir()) == []
    assert make_storage(f"journal://{tmp_path / 'c' / 'ok.log'}") is not None  # writing creates it, as before
    assert (tmp_path / "c").is_dir()


@pytest.mark.parametrize("args, message", [
    (["--heartbeat-interval", "0"], "`heartbeat_interval` must be an integer >= 1, but got heartbeat_interval=0 "
                                    "(--heartbeat-interval on the command line)."),
    (["--grace-period", "0"], "`grace_period` must be an integer >= 1, but got grace_period=0 (--grace-period on "
                              "the command line)."),
    (["--heartbeat-interval", "5", "--grace-period", "5"], "`grace_period` must be greater than `heartbeat_interval`, "
                                                           "but got grace_period=5 with heartbeat_interval=5"),
    (["--backend", "ray", "--grace-period", "20"], "--heartbeat-interval and --grace-period apply to --backend optuna "
                                                   "only"),
])
def test_heartbeat_flags_are_validated_before_anything_is_written(args, message, tmp_path, capsys):
    code = main(["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "1", "--epochs", "1", *args,
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not (tmp_path / "run").exists()


def test_heartbeat_flags_reach_the_settings_and_the_smallest_valid_values_pass():
    import argparse

    from bnn_tune.search.cli import add_search_arguments
    from bnn_tune.search.settings import SearchSettings

    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    settings = SearchSettings.from_args(parser.parse_args(
        ["--backend", "optuna", "--heartbeat-interval", "1", "--grace-period", "2", "--out", "/tmp/unused"]))
    assert (settings.heartbeat_interval, settings.grace_period) == (1, 2)
    defaults = SearchSettings.from_args(parser.parse_args(["--backend", "optuna", "--out", "/tmp/unused"]))
    assert (defaults.heartbeat_interval, defaults.grace_period) == (10, 30)


def test_postgresql_url_takes_the_installed_driver():
    """SQLAlchemy 2.0 reads ``postgresql://`` as psycopg2; the ``postgres`` extra installs psycopg (3)."""
    import importlib.util

    from bnn_tune.search._storage import _with_installed_driver

    assert _with_installed_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert _with_installed_driver("mysql://u@h/db") == "mysql://u@h/db"
    has = {name: importlib.util.find_spec(name) is not None for name in ("psycopg", "psycopg2")}
    expected = "postgresql+psycopg://u@h/db" if has["psycopg"] and not has["psycopg2"] else None
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        got = _with_installed_driver(url)
        assert got == (expected or url), (url, got, has)
