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


def test_a_search_with_no_completed_trial_says_which_rule_stopped_them_and_what_to_change(tmp_path, capsys):
    """Every trial frozen (gamma 1e-9 cannot flip a weight): exit 1 and one line counting the trials by the rule
    that stopped them, with the fix (more samples, another seed, or --pruner none)."""
    import argparse

    import optuna

    from bnn_tune.objective import PRUNE_REASON_ATTR
    from bnn_tune.search.cli import _why_none_completed

    study = optuna.create_study(direction="maximize")
    for reason in ("flip-early: log flip rate <= -8 at all 1 sub-epoch reports", "flip-early: ...", "asha: rung 1"):
        t = study.ask()
        t.set_user_attr(PRUNE_REASON_ATTR, reason)
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
    t = study.ask()
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    line = _why_none_completed(study, argparse.Namespace(pruner="flip+hyperband"))
    assert line.startswith("no trial completed: 3 pruned, 1 fail (flip-early: 2, asha: 1)"), line
    assert "--pruner none" in line and "--samples" in line and "never flipped" in line
    failed = optuna.create_study(direction="maximize")
    failed.tell(failed.ask(), state=optuna.trial.TrialState.FAIL)
    assert _why_none_completed(failed, argparse.Namespace(pruner="asha")) == (
        "no trial completed: 1 fail; every trial failed: see the errors above")


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
