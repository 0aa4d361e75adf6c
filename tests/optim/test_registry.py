"""Registry (names, entry points) and strict parameter routing of ``build``."""

from __future__ import annotations

import warnings

import pytest
import torch

from bnn_tune import optim
from bnn_tune.nn import BinaryLinear, build_model, is_binary_parameter
from bnn_tune.optim import _registry


def test_builtin_names():
    assert optim.list_optimizers() == ["bmd", "bnew", "bop", "bop2", "filter", "latent_adam"]
    assert optim.get("bop").cls is optim.Bop
    assert optim.get("bop2").cls is optim.Bop2ndOrder
    assert optim.get("filter").cls is optim.GradientFilter
    assert set(optim.get("bop").hyperparameters) == {"gamma", "threshold"}
    assert set(optim.get("filter").hyperparameters) == {"order", "gamma", "alpha", "threshold"}
    assert {"beta", "beta_T", "t_lock"} <= set(optim.get("bnew").hyperparameters)
    assert {"beta0", "beta_growth"} <= set(optim.get("bmd").hyperparameters)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'bopp'\. Available: \['bmd', 'bnew', 'bop', .*Did you mean 'bop'"):
        optim.get("bopp")


def test_register_rejects_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        optim.register("bop", optim.Bop)
    for bad in ("MyBop", "", 5, None):  # each condition of the name check on its own
        with pytest.raises(ValueError, match="lowercase"):
            optim.register(bad, optim.Bop)  # type: ignore[arg-type]
    # "lr" is the common key of the real-parameter Adam: it would never reach this optimizer.
    with pytest.raises(ValueError, match=r"Hyperparameter names \['lr'\] of optimizer 'mysgd' clash"):
        optim.register("mysgd", torch.optim.SGD, hyperparameters={"lr": 0.1})


class _EntryPoint:
    def __init__(self, name, fn):
        self.name = name
        self._fn = fn

    def load(self):
        return self._fn


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    monkeypatch.setattr(_registry, "_ENTRY_POINTS_LOADED", False)


def test_entry_point_group_registers_third_party_optimizers(monkeypatch, fresh_registry):
    calls = []

    def plugin():
        calls.append(1)
        optim.register(
            "thirdparty_sgd", torch.optim.SGD, hyperparameters={"momentum": 0.5},
            make=lambda params, h, *, lr, **_ctx: torch.optim.SGD(params, lr=lr, **h),
        )

    def broken():
        raise RuntimeError("boom")

    import importlib.metadata

    real_entry_points = importlib.metadata.entry_points

    def fake_entry_points(**kwargs):
        if kwargs.get("group") == "bnn_tune.optimizers":
            return [_EntryPoint("good", plugin), _EntryPoint("bad", broken)]
        return real_entry_points(**kwargs)

    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    with pytest.warns(UserWarning, match="entry point 'bad' failed to load: boom"):
        names = optim.list_optimizers()
    assert "thirdparty_sgd" in names and "bop" in names
    assert optim.get("thirdparty_sgd").hyperparameters == {"momentum": 0.5}
    optim.list_optimizers()
    assert calls == [1]  # loaded once

    from bnn_tune.config import TrialConfig

    cfg = TrialConfig.from_dict({"optimizer": "thirdparty_sgd", "momentum": 0.9, "epochs": 1})
    model = build_model("mlp", (1, 8, 8), 10)
    opt = optim.build(model, cfg, steps_per_epoch=2)
    assert isinstance(opt.binary, torch.optim.SGD) and opt.binary.param_groups[0]["momentum"] == 0.9


def test_route_parameters_claimed_twice_raises():
    layer = BinaryLinear(4, 3, bias=True)
    with pytest.raises(ValueError, match=r"Parameter 'weight' is claimed by more than one optimizer: \['a', 'b'\]"):
        optim.route_parameters(layer, {"a": is_binary_parameter, "b": lambda p: p.dim() == 2})


def test_route_parameters_unclaimed_warns():
    layer = BinaryLinear(4, 3, bias=True)
    with pytest.warns(UserWarning, match=r"1 parameters are claimed by no optimizer.*\['bias'\]"):
        parts = optim.route_parameters(layer, {"binary": is_binary_parameter})
    assert parts["binary"] == [layer.weight]


def test_build_routes_binary_and_real_strictly():
    model = build_model("mlp", (1, 8, 8), 10, depth=2)
    opt = optim.build(model, {"optimizer": "bop", "epochs": 2}, steps_per_epoch=3)
    binary = {id(p) for g in opt.binary.param_groups for p in g["params"]}
    real = {id(p) for g in opt.optimizers["real"].param_groups for p in g["params"]}
    assert binary == {id(p) for p in model.parameters() if is_binary_parameter(p)}
    assert real == {id(p) for p in model.parameters() if not is_binary_parameter(p)}
    assert isinstance(opt.optimizers["real"], torch.optim.Adam)
    # Bop's prepare_model binarized the initial weights.
    assert all(((p == 1) | (p == -1)).all() for p in model.parameters() if is_binary_parameter(p))

    model[1].weight.requires_grad_(False)  # a frozen real parameter is left out, with a warning
    with pytest.warns(UserWarning, match="claimed by no optimizer"):
        optim.build(model, {"optimizer": "bop", "epochs": 2})


def test_build_installs_method_quantizers():
    model = build_model("mlp", (1, 8, 8), 10)
    opt = optim.build(model, {"optimizer": "bmd", "epochs": 2, "beta0": 2.0}, steps_per_epoch=5)
    qs = [m for m in model.modules() if isinstance(m, optim.TanhSign)]
    assert len(qs) == 2 and all(float(q.beta) == 2.0 for q in qs)
    assert opt.binary.param_groups[0]["total_steps"] == 10
    model = build_model("mlp", (1, 8, 8), 10)
    optim.build(model, {"optimizer": "bnew", "epochs": 2}, steps_per_epoch=5)
    assert len([m for m in model.modules() if isinstance(m, optim.ClipWeight)]) == 2


def test_every_spec_validates_its_defaults():
    for name in optim.list_optimizers():
        spec = optim.get(name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            spec.validate(dict(spec.hyperparameters))


def test_build_takes_only_the_optimizer_part_of_a_dict():
    from bnn_tune import TrialConfig
    from bnn_tune.optim._build import _PART_DEFAULTS

    # the dict form fills the same defaults as a TrialConfig (this stage cannot import the config)
    assert {k: getattr(TrialConfig(), k) for k in _PART_DEFAULTS} == _PART_DEFAULTS
    model = build_model("mlp", (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"other keys \['dataset'\].*TrialConfig.from_dict"):
        optim.build(model, {"optimizer": "bop", "dataset": "digits"})
    with pytest.raises(ValueError, match="needs the config key 'optimizer'"):
        optim.build(model, {"gamma": 1e-3})
    with pytest.raises(ValueError, match="gamma"):
        optim.build(model, {"optimizer": "bop", "gamma": 2.0})
    # a whole validated config works as before
    opt = optim.build(model, TrialConfig.from_dict({"optimizer": "bop", "gamma": 1e-3}))
    assert opt.binary.param_groups[0]["gamma"] == 1e-3


def test_register_rejects_every_common_config_key():
    from bnn_tune.config import COMMON_KEYS

    for key in ("dataset", "seed", COMMON_KEYS[-1]):
        with pytest.raises(ValueError, match="clash with common config keys"):
            optim.register("mysgd2", torch.optim.SGD, hyperparameters={key: 0.1})


# ----------------------------------------------------------------------------- issue 26 (tools/mutate.py)
@pytest.mark.parametrize("scale", [0.25, 1.0, 3])
def test_latent_adam_init_scale_rescales_only_the_binary_weights(scale):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim.build(model, {"optimizer": "latent_adam", "init_scale": scale})
    for n, p in model.named_parameters():
        if is_binary_parameter(p):
            # the largest latent weight becomes exactly `scale`, the signs stay
            assert p.abs().max().item() == pytest.approx(scale, rel=1e-6), n
            assert torch.equal(torch.sign(p.detach()), torch.sign(before[n])), n
        else:
            assert torch.equal(p.detach(), before[n]), n


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, True, "1"])
def test_latent_adam_init_scale_must_be_a_positive_number(bad):
    model = build_model("mlp", (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"`init_scale` must be > 0 or None"):
        optim.build(model, {"optimizer": "latent_adam", "init_scale": bad})


def test_latent_adam_init_scale_of_all_zero_weights_stays_finite():
    model = build_model("mlp", (1, 8, 8), 10)
    with torch.no_grad():
        for p in model.parameters():
            if is_binary_parameter(p):
                p.zero_()
    optim.build(model, {"optimizer": "latent_adam", "init_scale": 0.5})
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_registry_defaults_agree_with_the_optimizer_classes():
    """A hyperparameter's default lives in two places (the class signature, for direct use, and the registry, for
    configs and search spaces); they agree except for the registry's deliberate digits-sized Bop settings and the
    keys only the registry knows (``latent_lr``, ``init_scale``)."""
    import inspect

    deliberate = {("bop", "gamma"), ("bop", "threshold")}
    for name in optim.list_optimizers():
        spec = _registry.get(name)
        signature = inspect.signature(spec.cls.__init__).parameters
        for key, value in spec.hyperparameters.items():
            if key in signature and (name, key) not in deliberate:
                assert signature[key].default == value, (name, key)


@pytest.mark.parametrize("epochs,steps,t_start,t_lock", [(2, 5, None, None), (3, 7, 0.25, 0.75)])
def test_bnew_default_push_is_e_to_the_10_over_phase_two(epochs, steps, t_start, t_lock):
    """Without beta/beta_T the registry sets beta_T = 10 / (T + 1), T = the phase-2 steps, so that the push
    sum_s 2 reg_t = beta_T (T + 1) is 10 whatever the run length (the comment in bnn_tune/optim/__init__.py)."""
    from bnn_tune.optim._bnew import bnew_phase_steps

    model = build_model("mlp", (1, 8, 8), 10)
    cfg = {"optimizer": "bnew", "epochs": epochs}
    if t_start is not None:
        cfg.update(t_start=t_start, t_lock=t_lock)
    opt = optim.build(model, cfg, steps_per_epoch=steps)
    group = opt.binary.param_groups[0]
    start, lock = bnew_phase_steps(epochs * steps, group["t_start"], group["t_lock"])
    assert group["beta_T"] * (lock - start + 1) == pytest.approx(10.0)


def test_build_counts_one_step_per_epoch_unless_told_otherwise():
    model = build_model("mlp", (1, 8, 8), 10)
    assert optim.build(model, {"optimizer": "bnew", "epochs": 3}).binary.param_groups[0]["total_steps"] == 3
    assert optim.build(model, {"optimizer": "bnew", "epochs": 3}, steps_per_epoch=4).binary.param_groups[0][
        "total_steps"] == 12


def test_hyperparameters_default_to_the_constructor_signature(fresh_registry):
    class _Opt(torch.optim.SGD):
        def __init__(self, params, rate=0.1, *args, momentum=0.0, nesterov=False, foreach=None, maximize=False,
                     _private=1, **kwargs):
            super().__init__(params, lr=rate, momentum=momentum, nesterov=nesterov)

    optim.register("signature_sgd", _Opt)
    # params/self, *args/**kwargs, private and torch's switches are not hyperparameters
    assert optim.get("signature_sgd").hyperparameters == {"rate": 0.1, "momentum": 0.0, "nesterov": False}


def test_latent_adam_prepare_hook_refuses_a_zero_scale_on_its_own():
    # the hook is public (OptimizerSpec.prepare_model, e.g. for a model prepared before the optimizer is built)
    model = build_model("mlp", (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"`init_scale` must be > 0 or None, but got init_scale=0.0"):
        optim.get("latent_adam").prepare_model(model, {"init_scale": 0.0})
