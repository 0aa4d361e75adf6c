"""Optuna search on in-memory, SQLite and journal storages; two worker processes on one storage; the CLI."""

from __future__ import annotations

import json

import optuna
import pytest

from bnn_tune.search.optuna import SearchSettings, make_pruner, make_storage, run_optuna_search

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {"dataset": "digits", "epochs": 2, "max_steps_per_epoch": 2, "width": 0.0625, "batch_size": 32}


def test_make_storage_parses_urls(tmp_path):
    from optuna.storages import JournalStorage, RDBStorage

    assert make_storage(None) is None and make_storage(":memory:") is None
    assert isinstance(make_storage(f"sqlite:///{tmp_path}/a/s.db"), RDBStorage)
    assert isinstance(make_storage(f"journal://{tmp_path}/b/s.log"), JournalStorage)
    assert isinstance(make_storage(str(tmp_path / "c.log")), JournalStorage)
    assert isinstance(make_storage(str(tmp_path / "d.journal")), JournalStorage)
    with pytest.raises(ValueError, match=r"`storage` must be ':memory:', an RDB URL .* but got storage='study\.db'"):
        make_storage("study.db")


def test_make_pruner_kinds():
    from bnn_tune.plugins._flip_sh import GATED_RULE, RECOMMENDED_RULE
    from bnn_tune.plugins.flip_sh import FlipSHPruner
    from bnn_tune.plugins.optuna import FlipRatePruner

    default = make_pruner()  # bnn-tune search's default strategy: flip+gated-asha
    assert isinstance(default, FlipSHPruner) and not isinstance(default, optuna.pruners.HyperbandPruner)
    assert isinstance(default._wrapped, optuna.pruners.SuccessiveHalvingPruner)
    assert default.rule == GATED_RULE
    flip_hb = make_pruner("flip+hyperband")
    assert isinstance(flip_hb._wrapped, optuna.pruners.HyperbandPruner) and flip_hb.rule == RECOMMENDED_RULE
    flip_asha = make_pruner("flip+asha")
    assert isinstance(flip_asha, FlipSHPruner)
    assert isinstance(flip_asha._wrapped, optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("asha"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("flip"), FlipRatePruner)
    assert isinstance(make_pruner("flip+median"), FlipRatePruner)
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match=r"Unknown strategy 'ashaa'\. Available: \['asha', 'flip', 'flip\+asha', "
                                         r"'flip\+gated-asha', 'flip\+hyperband', 'flip\+median', 'hyperband', 'median', 'none'\]\."):
        make_pruner("ashaa")


def test_settings_validation():
    with pytest.raises(ValueError, match="`n_trials` must be an integer >= 1, but got n_trials=0"):
        SearchSettings(space="latent_adam", base_config=TINY, n_trials=0, storage=":memory:")
    with pytest.raises(ValueError, match="`workers` > 1 needs a shared storage"):
        SearchSettings(space="latent_adam", base_config=TINY, n_trials=2, workers=2, storage=":memory:")


def test_in_memory_single_process(tmp_path):
    study = run_optuna_search(SearchSettings(space="latent_adam", base_config=TINY, n_trials=2, seed=0,
                                             out=tmp_path, storage=":memory:", verbose=False, pruner="none"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert (tmp_path / "trial_1" / "checkpoint.pt").exists()


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_storage_without_losing_or_duplicating_trials(tmp_path, kind):
    url = f"journal://{tmp_path}/study.log" if kind == "journal" else f"sqlite:///{tmp_path}/study.db"
    n = 5
    settings = SearchSettings(space="latent_adam", base_config=TINY, n_trials=n, storage=url, study_name="s",
                              workers=2, seed=0, out=tmp_path / "art", verbose=False, pruner="none")
    study = run_optuna_search(settings)
    trials = optuna.load_study(study_name="s", storage=make_storage(url)).trials
    assert sorted(t.number for t in trials) == list(range(n))  # none lost, none duplicated
    assert len({t._trial_id for t in trials}) == n
    assert all(t.state.name == "COMPLETE" for t in trials), [t.state.name for t in trials]
    assert all(len(t.user_attrs["bnn_tune:log_flip_rate"]) == 2 for t in trials)
    assert sorted(p.name for p in (tmp_path / "art").glob("trial_*")) == sorted(f"trial_{i}" for i in range(n))
    assert len(study.trials) == n
    # the same study again is refused without --resume; resumed, --samples is the total: one more trial
    with pytest.raises(ValueError, match="already holds the study 's'; pass --resume"):
        run_optuna_search(settings)
    again = run_optuna_search(settings.replace(n_trials=n + 1, workers=1, resume=True))
    assert sorted(t.number for t in again.trials) == list(range(n + 1))
    assert len(run_optuna_search(settings.replace(n_trials=n + 1, resume=True)).trials) == n + 1  # nothing missing


def test_cli_search_writes_study_best_json_and_ranking(tmp_path, capsys):
    from bnn_tune.cli import main

    out = tmp_path / "run"
    rc = main(["search", "--backend", "optuna", "--optimizer", "latent_adam", "--samples", "3", "--epochs", "2", "--seed", "0",
               "-p", "max_steps_per_epoch=2", "-p", "width=0.0625", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    # the default strategy (flip+asha) may prune the later trials of this tiny study: 3 trials in all
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]  # the same counts the live line and the ranking's title print
    assert counts.get("completed", 0) >= 1 and sum(counts.values()) == 3, text
    assert "run (optuna): 3 trials in" in text and ", ".join(f"{n} {s}" for s, n in counts.items()) in text
    assert "rank" in text
    assert f"optuna-dashboard sqlite:///{out / 'study.db'}" in text
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    config = json.loads((out / "best_config.json").read_text())
    assert config["optimizer"] == "latent_adam" and config["epochs"] == 2
    assert best["checkpoint"].endswith(f"trial_{best['trial']}/checkpoint.pt")
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3 and study.best_value == best["val_acc"] and str(study.best_trial.number) == best["trial"]


def test_cli_search_errors(tmp_path, capsys):
    from bnn_tune.cli import main

    assert main(["search", "--backend", "optuna", "--optimizer", "bopp", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown search space 'bopp'" in capsys.readouterr().err
    assert main(["search", "--backend", "optuna", "--optimizer", "latent_adam", "--space", "bop",
                 "--out", str(tmp_path / "x")]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["search", "--backend", "optuna", "--optimizer", "bop", "--workers", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "`workers` must be an integer >= 1, but got workers=0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written by a refused command
