"""search_spaces: define-by-run purity, ranges, paper settings, configs that validate, Ray compatibility."""

from __future__ import annotations

import math

import optuna
import pytest

from bnn_tune import optim, search_spaces
from bnn_tune.config import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAMES = search_spaces.list_spaces()
BASE = {"dataset": "digits", "epochs": 3}


class SuggestOnly:
    """A trial exposing only the suggest_* API (anything else a space touches raises AttributeError)."""

    def __init__(self, seed=0):
        import random

        self.rng = random.Random(seed)
        self.params = {}

    def suggest_float(self, name, low, high, *, log=False, step=None):
        v = math.exp(self.rng.uniform(math.log(low), math.log(high))) if log else self.rng.uniform(low, high)
        self.params[name] = v
        return v

    def suggest_int(self, name, low, high, *, step=1, log=False):
        v = self.rng.randint(low, high)
        self.params[name] = v
        return v

    def suggest_categorical(self, name, choices):
        v = self.rng.choice(list(choices))
        self.params[name] = v
        return v


def _samples(fn, n=40):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        t = study.ask()
        cfg = fn(t)
        out.append((t.params, cfg))
        study.tell(t, 0.0)
    return out


def test_list_and_get():
    assert NAMES == ["bmd", "bnew", "bop", "bop2", "filters", "latent_adam"]
    for name in NAMES:
        assert search_spaces.get(name).__name__ == f"bnn_tune.search_spaces.{name}"
    assert search_spaces.get("filter") is search_spaces.get("filters")  # the optimizer's registry name


def test_unknown_space_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown search space 'bopp'\. Available: \['bmd', .*Did you mean 'bop'"):
        search_spaces.get("bopp")
    with pytest.raises(ValueError, match="Unknown search space 3"):
        search_spaces.get(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fn", ["suggest", "naive_suggest"])
def test_spaces_are_pure_define_by_run_and_flat(name, fn):
    space = getattr(search_spaces.get(name), fn)
    for seed in range(20):
        trial = SuggestOnly(seed)
        cfg = space(trial)
        assert isinstance(cfg, dict) and isinstance(cfg["optimizer"], str)
        assert all(isinstance(v, (int, float, str, bool)) for v in cfg.values()), cfg
        # Ray's OptunaSearch merges the sampled params with the returned dict: every sampled name must be
        # a config key the space returns (no helper names leak into the config)
        assert set(trial.params) <= set(cfg), (set(trial.params) - set(cfg))
        assert all("/" not in k for k in cfg)  # Ray would unflatten "a/b"


@pytest.mark.parametrize("name", NAMES)
def test_module_contract(name):
    mod = search_spaces.get(name)
    assert mod.__doc__ and len(mod.__doc__.split(".")) >= 3
    assert "et al" in mod.__doc__ or "Paren" in mod.__doc__  # a paper reference
    for attr in ("NAME", "PAPER_SETTINGS", "suggest", "naive_suggest", "ray_space"):
        assert hasattr(mod, attr), attr


def _optimizer_registered(name: str) -> bool:
    return name in optim.list_optimizers()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fn", ["suggest", "naive_suggest"])
def test_sampled_configs_validate(name, fn):
    mod = search_spaces.get(name)
    for _, cfg in _samples(getattr(mod, fn), n=25):
        assert _optimizer_registered(cfg["optimizer"]), cfg["optimizer"]
        TrialConfig.from_dict({**BASE, **cfg})


def test_bop_ranges_and_paper_settings():
    from bnn_tune.search_spaces import bop

    assert (bop.GAMMA.low, bop.GAMMA.high) == (1e-6, 1e-1)
    assert (bop.THRESHOLD.low, bop.THRESHOLD.high) == (1e-9, 1e-3)
    for s in bop.PAPER_SETTINGS:
        assert s["gamma"] in bop.GAMMA and s["threshold"] in bop.THRESHOLD, s
    assert any(s["threshold"] == 0.0 for s in bop.PAPER_SETTINGS)
    samples = _samples(bop.suggest, n=80)
    gammas = [c["gamma"] for _, c in samples]
    thresholds = [c["threshold"] for _, c in samples]
    assert all(1e-6 <= g <= 1e-1 for g in gammas)
    assert all(t == 0.0 or 1e-9 <= t <= 1e-3 for t in thresholds)
    n_zero = sum(t == 0.0 for t in thresholds)
    assert 1 <= n_zero <= 30  # the zero decade is 1/7 of the prior mass
    # log-uniform: about as many samples below 1e-6 as above (midpoint of 1e-9..1e-3 in log space)
    nz = [t for t in thresholds if t > 0]
    assert 0.25 < sum(t < 1e-6 for t in nz) / len(nz) < 0.75


def test_bop_threshold_zero_option_is_explicit():
    from bnn_tune.search_spaces import bop

    fixed = optuna.trial.FixedTrial({"gamma": 1e-3, "threshold": 5e-10, "gamma_schedule": "constant", "lr": 1e-3})
    assert bop.suggest(fixed)["threshold"] == 0.0
    fixed = optuna.trial.FixedTrial({"gamma": 1e-3, "threshold": 2e-9, "gamma_schedule": "constant", "lr": 1e-3})
    assert bop.suggest(fixed)["threshold"] == 2e-9


@pytest.mark.parametrize("name", NAMES)
def test_paper_settings_are_valid_configs(name):
    mod = search_spaces.get(name)
    for setting in mod.PAPER_SETTINGS:
        cfg = {k: v for k, v in setting.items() if k != "source"}
        TrialConfig.from_dict({**BASE, "optimizer": mod.NAME, **cfg})


def test_paper_settings_lie_inside_every_space():
    for name in NAMES:
        mod = search_spaces.get(name)
        for setting in mod.PAPER_SETTINGS:
            for key, value in setting.items():
                rng = getattr(mod, key.upper(), None)
                if hasattr(rng, "low"):
                    assert value in rng, (name, key, value)


@pytest.mark.parametrize("name", ["bmd", "bnew", "bop", "bop2", "filters"])
def test_every_paper_setting_is_inside_its_space_and_cites_its_file(name):
    """Every key of every reference setting (schedules and the real-valued lr included) can be sampled."""
    from bnn_tune.search_spaces._common import outside_space

    mod = search_spaces.get(name)
    assert mod.PAPER_SETTINGS
    for setting in mod.PAPER_SETTINGS:
        assert outside_space(mod, setting) == [], (name, setting)
        assert isinstance(setting.get("source"), str) and setting["source"], setting


def test_reference_settings_the_issue_names_are_covered():
    from bnn_tune.search_spaces import bmd, bnew, bop, bop2, filters
    from bnn_tune.search_spaces._common import outside_space

    assert outside_space(bop, {"gamma": 1e-4, "threshold": 1e-8, "gamma_schedule": "step:every=100,factor=0.1"}) == []
    assert outside_space(bop, {"gamma": 1e-4, "threshold": 1e-8, "gamma_schedule": "linear:end_factor=0.01"}) == []
    assert outside_space(bop2, {"gamma": 1e-7, "sigma": 1e-7, "threshold": 1e-8}) == []
    assert outside_space(bop2, {"sigma": 1e-2}) == []
    assert outside_space(bmd, {"beta_growth": 3e4}) == []
    assert outside_space(bnew, {"t_start": 0.17, "t_lock": 0.98, "beta_T": 1e-4}) == []
    assert outside_space(filters, {"alpha_schedule": "linear"}) == []
    assert outside_space(bnew, {"t_lock": 1.5, "unknown": 1}) == ["t_lock=1.5", "unknown=1"]


def test_bop2_defaults_agree_with_the_authors():
    import inspect

    from bnn_tune import optim

    spec = optim.get("bop2")
    sig = inspect.signature(optim.Bop2ndOrder.__init__).parameters
    for key in ("gamma", "sigma", "threshold", "eps"):
        assert spec.hyperparameters[key] == sig[key].default, key
    assert {k: spec.hyperparameters[k] for k in ("gamma", "sigma", "threshold")} == {
        "gamma": 1e-6, "sigma": 1e-2, "threshold": 1e-6}
    from bnn_tune.search_spaces import bop2

    assert {"gamma": 1e-6, "sigma": 1e-2, "threshold": 1e-6} == {
        k: bop2.PAPER_SETTINGS[0][k] for k in ("gamma", "sigma", "threshold")}


def test_latent_adam_searches_the_initial_inertia_in_steps_not_the_init_scale():
    from bnn_tune.search_spaces import latent_adam

    steps = []
    for params, cfg in _samples(latent_adam.suggest, n=30):
        assert "init_scale" not in params  # never an independent dimension (Theorem 1): derived from the steps
        assert latent_adam.INIT_STEPS.low <= params["init_steps"] <= latent_adam.INIT_STEPS.high
        assert cfg["init_steps"] == params["init_steps"]
        assert cfg["init_scale"] == pytest.approx(min(1.0, cfg["init_steps"] * cfg["latent_lr"]))
        steps.append(cfg["init_steps"])
    assert min(steps) < 1.0 < 10.0 < max(steps)  # the ratio is searched, not fixed at 10
    # the naive twin does search them independently
    naive_params = {k for p, _ in _samples(latent_adam.naive_suggest, n=3) for k in p}
    assert {"latent_lr", "init_scale", "weight_decay"} <= naive_params


def test_filters_are_searched_in_filter_coordinates():
    from bnn_tune.search_spaces import filters

    orders = set()
    for params, cfg in _samples(filters.suggest, n=40):
        orders.add(cfg["order"])
        assert not {"lr", "weight_decay", "init_scale", "latent_lr"} & (set(params) - {"lr"})
        assert ("alpha" in cfg) == (cfg["order"] == 2)
        assert ("threshold" in cfg) == (cfg["order"] == 1)
    assert orders == {1, 2}


def test_bnew_searches_the_product_beta_T():
    from bnn_tune.search_spaces import bnew

    for params, cfg in _samples(bnew.suggest, n=10):
        assert "beta_T" in params and "beta" not in cfg
        assert {"t_start", "t_lock"} <= set(params) and cfg["t_start"] < cfg["t_lock"]
    assert "beta" in {k for p, _ in _samples(bnew.naive_suggest, n=2) for k in p}


@pytest.mark.parametrize("name", NAMES)
def test_ray_space_domains_sample_inside_the_ranges(name):
    pytest.importorskip("ray")
    from ray.tune.search.sample import Domain

    mod = search_spaces.get(name)
    space = mod.ray_space(epochs=5)
    assert space["optimizer"] == mod.NAME and space["epochs"] == 5
    for key, dom in space.items():
        rng = getattr(mod, key.upper(), None)
        if isinstance(dom, Domain) and hasattr(rng, "low") and hasattr(dom, "sample"):
            for _ in range(20):
                value = dom.sample() if not hasattr(dom, "func") else dom.func(None)
                value = value[0] if isinstance(value, list) else value
                assert value in rng, (key, value)


def test_ray_space_rejects_unknown_keys():
    pytest.importorskip("ray")
    from bnn_tune.search_spaces import bop

    with pytest.raises(ValueError, match=r"Unknown key 'gama' for a 'bop' space\. Did you mean 'gamma'\?"):
        bop.ray_space(gama=1e-3)


def test_spaces_work_unchanged_as_ray_optuna_search():
    pytest.importorskip("ray")
    from ray.tune.search.optuna import OptunaSearch

    for name in NAMES:
        mod = search_spaces.get(name)
        searcher = OptunaSearch(space=mod.suggest, metric="val_acc", mode="max", seed=0)
        for i in range(5):
            cfg = searcher.suggest(f"t{i}")
            assert cfg["optimizer"] == mod.NAME
            TrialConfig.from_dict({**BASE, **cfg})
