"""``SearchSettings`` (bnn_tune/search/settings.py): one validation test per argument, each bound stood on
(the smallest valid value passes, one past it fails), and the defaults both backends derive."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("optuna")

from bnn_tune.search.settings import _SEED_LIMIT, SearchSettings, sampler_seeds  # noqa: E402


def _make(tmp_path, **kw):
    kw.setdefault("out", tmp_path / "run")
    kw.setdefault("storage", ":memory:")
    kw.setdefault("seed", 0)
    return SearchSettings(**kw)


@pytest.mark.parametrize("name,low", [("n_trials", 1), ("top", 1), ("heartbeat_interval", 1), ("max_retry", 0),
                                      ("workers", 1), ("seed", 0)])
def test_each_count_accepts_its_smallest_value_and_refuses_one_less(name, low, tmp_path):
    assert getattr(_make(tmp_path, **{name: low}), name) == low
    with pytest.raises(ValueError, match=rf"`{name}` must be an integer"):
        _make(tmp_path, **{name: low - 1})


def test_grace_period_must_exceed_the_heartbeat_interval(tmp_path):
    # a trial is failed after grace_period s without a heartbeat: one heartbeat interval must fit inside it
    assert _make(tmp_path, heartbeat_interval=1, grace_period=2).grace_period == 2
    with pytest.raises(ValueError, match=r"`grace_period` must be greater than `heartbeat_interval`"):
        _make(tmp_path, heartbeat_interval=2, grace_period=2)
    with pytest.raises(ValueError, match=r"`grace_period` must be an integer"):
        _make(tmp_path, heartbeat_interval=1, grace_period=0)


def test_max_failures_minus_one_means_unlimited_retries_on_ray(tmp_path):
    assert _make(tmp_path, backend="ray", storage=None, max_failures=-1).max_failures == -1
    with pytest.raises(ValueError, match=r"`max_failures` must be an integer >= -1.*--max-failures"):
        _make(tmp_path, backend="ray", storage=None, max_failures=-2)


def test_seed_top_bound_and_flag_named_in_the_error(tmp_path):
    assert _make(tmp_path, seed=_SEED_LIMIT - 1).seed == 2**32 - 1
    with pytest.raises(ValueError, match=r"`seed` must be .*--seed on the command line"):
        _make(tmp_path, seed=2**32)
    with pytest.raises(ValueError, match=r"--samples on the command line"):
        _make(tmp_path, n_trials=0)


@pytest.mark.parametrize("gpus,ok", [(0, True), (0.5, True), (-0.5, False), (float("nan"), False),
                                     (float("inf"), False), (True, False), ("1", False)])
def test_gpus_per_trial_is_a_finite_number_at_least_zero(gpus, ok, tmp_path):
    if ok:
        assert _make(tmp_path, backend="ray", storage=None, gpus_per_trial=gpus).gpus_per_trial == gpus
    else:
        with pytest.raises(ValueError, match="`gpus_per_trial` must be a number >= 0"):
            _make(tmp_path, backend="ray", storage=None, gpus_per_trial=gpus)


def test_ray_only_flags_are_refused_on_optuna_and_named(tmp_path):
    with pytest.raises(ValueError, match=r"^--address apply to --backend ray only; drop it"):
        _make(tmp_path, address="ray://x:1")
    with pytest.raises(ValueError, match=r"^--gpus-per-trial, --max-failures apply .* drop them"):
        _make(tmp_path, gpus_per_trial=1, max_failures=2)
    assert _make(tmp_path, max_failures=1).backend == "optuna"  # the default value is not "used"


def test_workers_default_and_threads_per_trial(tmp_path):
    cpus = os.cpu_count() or 1
    mem = _make(tmp_path)
    assert mem.workers == 1 and mem.base_config["threads"] == cpus  # in-memory storage: one worker
    ray = _make(tmp_path, backend="ray", storage=None)
    assert ray.workers == cpus and ray.base_config["threads"] == 1
    two = _make(tmp_path, storage=f"sqlite:///{tmp_path / 's.db'}", workers=2)
    assert two.base_config["threads"] == max(1, cpus // 2)
    assert _make(tmp_path, base_config={"threads": 3}).base_config["threads"] == 3  # a fixed value wins
    with pytest.raises(ValueError, match="`workers` > 1 needs a shared storage"):
        _make(tmp_path, workers=2)
    assert _make(tmp_path, workers=1).workers == 1


def test_default_storage_and_names(tmp_path):
    s = _make(tmp_path, storage=None, out=tmp_path / "my-run.1")
    assert s.study_name == "my-run.1" and s.out == (tmp_path / "my-run.1").resolve()
    assert s.storage == f"sqlite:///{(tmp_path / 'my-run.1').resolve() / 'study.db'}"
    assert _make(tmp_path, backend="ray", storage=None).storage is None  # Ray: the sampler's study in memory
    named = _make(tmp_path, study_name="given", out=None)
    assert named.out == Path("runs", "given").resolve()  # default out: runs/<study_name>
    with pytest.raises(ValueError, match="`study_name` must be letters"):
        _make(tmp_path, study_name="a b")


def test_space_and_optimizer_must_agree(tmp_path):
    s = _make(tmp_path, base_config={"optimizer": "bop"})
    assert s.space == "bop" and s.base_config["optimizer"] == "bop"
    assert _make(tmp_path, space="latent_adam").base_config["optimizer"] == "latent_adam"
    with pytest.raises(ValueError, match="does not match --space"):
        _make(tmp_path, space="latent_adam", base_config={"optimizer": "bop"})
    with pytest.raises(ValueError, match="`space` must be a search-space name or a define-by-run callable"):
        _make(tmp_path, space=3)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        _make(tmp_path, backend="dask")
    with pytest.raises(ValueError, match="`base_config` must be a mapping"):
        _make(tmp_path, base_config=[("epochs", 1)])


def test_epochs_default_per_dataset_unless_fixed(tmp_path):
    assert _make(tmp_path).epochs == 10 and _make(tmp_path).dataset == "digits"
    assert _make(tmp_path, base_config={"dataset": "synthetic"}).epochs == 5
    assert _make(tmp_path, base_config={"epochs": 2}).epochs == 2


def test_sampler_seeds_follow_the_resumed_streams():
    five = sampler_seeds(11, 5)
    assert sampler_seeds(11, 2, resumed_after=3) == five[3:]
    assert sampler_seeds(11, 1) == five[:1]


def test_replace_validates_again_and_describe_names_everything(tmp_path):
    s = _make(tmp_path, seed=5)
    with pytest.raises(ValueError, match="`top` must be"):
        s.replace(top=0)
    line = s.replace(top=3).describe()
    assert line.startswith("bnn-tune search (optuna): space=bop dataset=digits epochs=10 trials=16 workers=1 ")
    assert "seed=5 out=" in line and "(drawn" not in line and "storage=:memory:" in line
    assert "space=bop (naive)" in _make(tmp_path, naive=True).describe()


@pytest.mark.parametrize("ray_installed", [True, False])
def test_the_command_line_default_backend_is_ray_when_installed(ray_installed, tmp_path, monkeypatch):
    import importlib.util

    from bnn_tune import cli
    from bnn_tune.search import run as run_module

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if ray_installed else None) if name == "ray" else real(name, *a))
    seen = []
    monkeypatch.setattr(run_module, "run_search",
                        lambda settings, console=None: seen.append(settings) or SimpleNamespace(exit_code=0))
    assert cli.main(["search", "--samples", "1", "--epochs", "1", "--seed", "1", "--out", str(tmp_path / "r")]) == 0
    assert seen[0].backend == ("ray" if ray_installed else "optuna")
    assert seen[0].verbose is True  # the command always shows its live view and ranking


def test_heartbeat_defaults_are_the_readme_s():
    """README: with an RDB storage the search beats every 10 s, fails a trial silent for 30 s and retries it."""
    defaults = {f.name: f.default for f in dataclasses.fields(SearchSettings)}
    assert (defaults["heartbeat_interval"], defaults["grace_period"], defaults["max_retry"]) == (10, 30, 2)
