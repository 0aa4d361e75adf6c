"""Every registered optimizer trains a BNN through ``bnn_tune.fit``/``Trainer``: accuracy, binary
weights, flip counting, resume, schedules and config errors."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from bnn_tune import optim
from bnn_tune.config import ConfigError
from bnn_tune.data import load_dataset
from bnn_tune.nn import binarize, binary_parameters
from bnn_tune.train import Trainer, fit

# lr is the Adam rate of the *real* parameters (first/last layer, batch-norm). At 1e-5 they barely
# move, so the accuracy below is earned by the binary weights (see the no-flip control).
BASE = {"dataset": "digits", "model": "mlp", "epochs": 3, "lr": 1e-5, "seed": 0, "batch_size": 64}
ALWAYS_BINARY = {"bop", "bop2", "filter"}  # the parameters themselves hold +-1 at every step


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.2, root="data", download=False)


def _is_pm1(t: torch.Tensor) -> bool:
    return bool(((t == 1) | (t == -1)).all())


def test_no_flip_control_stays_below_target(digits):
    r = fit({**BASE, "optimizer": "bop", "threshold": 1e3}, data=digits)
    assert r.history[-1].flip_rate == 0.0
    assert r.history[-1].val_acc < 0.5


@pytest.mark.parametrize("name", optim.list_optimizers())
def test_each_optimizer_trains_digits_mlp(name, digits):
    seen_binary = []

    def check(metrics, trainer):
        if name in ALWAYS_BINARY:
            seen_binary.append(all(_is_pm1(p.detach()) for _, p in binary_parameters(trainer.model)))

    r = fit({**BASE, "optimizer": name}, data=digits, callback=check)
    assert r.status == "completed"
    assert r.history[-1].val_acc >= 0.85, [m.val_acc for m in r.history]
    assert sum(m.flip_rate for m in r.history) > 0
    model = r.model.eval()
    layers = [m for m in model.modules() if hasattr(m, "weight_quantizer") and m.weight_quantizer is not None]
    assert layers
    for layer in layers:
        # The forward weight of the trained (eval-mode) network is binary for every method.
        assert _is_pm1(layer.quantized_weight().detach())
        w = layer.weight.detach()
        if name in ALWAYS_BINARY or name == "bnew":  # bnew: projected and frozen at t_lock
            assert _is_pm1(w)
        if name in ("latent_adam", "bnew"):
            assert w.abs().max() <= 1.0
    if name in ALWAYS_BINARY:
        assert seen_binary and all(seen_binary)


@pytest.mark.parametrize("name", optim.list_optimizers())
def test_flip_counter_sees_every_flip(name, digits):
    tr = Trainer({**BASE, "optimizer": name, "epochs": 2}, data=digits)
    params = [p for _, p in binary_parameters(tr.model)]
    tr.flips.reset()
    manual = 0
    rule = 0
    batches = list(tr._batches())[:8]
    for x, y in batches:
        loss = F.cross_entropy(tr.model(x), y)
        tr.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        before = [binarize(p.detach()) for p in params]
        if name == "bop":  # the flips are the update itself: predict them from Algorithm 2
            group = tr.optimizer.binary.param_groups[0]
            for p in params:
                m = tr.optimizer.binary.state[p].get("exp_avg", torch.zeros_like(p))
                m_new = torch.lerp(m, p.grad, group["gamma"])
                rule += int(((m_new.abs() > group["threshold"]) & (torch.sign(m_new) == p.detach())).sum())
        tr.optimizer.step()
        manual += sum(int((binarize(p.detach()) != b).sum()) for p, b in zip(params, before))
    summary = tr.flips.summary()
    assert summary["steps"] == len(batches)
    assert summary["flips"] == manual > 0
    if name == "bop":
        assert rule == manual


@pytest.mark.parametrize("name", optim.list_optimizers())
def test_resume_is_exact_for_every_optimizer(name, digits):
    cfg = {**BASE, "optimizer": name, "epochs": 2, "max_steps_per_epoch": 6, "lr": 1e-3}
    full = Trainer(cfg, data=digits)
    full.train_epoch()
    full.train_epoch()

    part = Trainer(cfg, data=digits)
    part.train_epoch()
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)
    buf.seek(0)
    state = pickle.loads(pickle.dumps(torch.load(buf, weights_only=True)))
    resumed = Trainer(cfg, data=digits)
    resumed.load_state_dict(state)
    resumed.train_epoch()

    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    sa, sb = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert sa["binary"]["param_groups"] == sb["binary"]["param_groups"]
    for key, st in sa["binary"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, sb["binary"]["state"][key][k]), (key, k)
    assert full.history[-1].flip_rate == resumed.history[-1].flip_rate


def test_gamma_schedule_drives_param_group_through_fit(digits):
    gamma = 1e-3
    cfg = {**BASE, "optimizer": "bop", "gamma": gamma, "gamma_schedule": {"type": "step", "every": 1, "factor": 0.1},
           "max_steps_per_epoch": 3}
    seen = []

    def record(metrics, trainer):
        seen.append(trainer.optimizer.binary.param_groups[0]["gamma"])

    r = fit(cfg, data=digits, callback=record)
    assert seen == pytest.approx([gamma * 0.1, gamma * 0.01, gamma * 0.001])
    assert [m.as_dict()["hp/gamma"] for m in r.history] == pytest.approx(seen)


def test_alpha_schedule_for_filter(digits):
    cfg = {**BASE, "optimizer": "filter", "alpha": 0.02, "alpha_schedule": {"type": "linear", "end_factor": 0.0},
           "epochs": 2, "max_steps_per_epoch": 2}
    r = fit(cfg, data=digits)
    assert [m.as_dict()["hp/alpha"] for m in r.history] == pytest.approx([0.01, 0.0])


def test_lr_schedule_moves_only_the_real_parameters_adam(digits):
    cfg = {**BASE, "optimizer": "latent_adam", "latent_lr": 0.02, "lr": 1e-3, "epochs": 2, "max_steps_per_epoch": 2,
           "lr_schedule": {"type": "step", "every": 1, "factor": 0.5}}
    tr = Trainer(cfg, data=digits)
    tr.run()
    assert [g["lr"] for g in tr.optimizer.optimizers["real"].param_groups] == pytest.approx([2.5e-4])
    assert [g["lr"] for g in tr.optimizer.binary.param_groups] == [0.02]  # the binary rate is latent_lr's


@pytest.mark.parametrize("name", ["latent_adam", "bmd", "bnew"])
def test_latent_lr_schedule_drives_only_the_binary_rate(name, digits):
    cfg = {**BASE, "optimizer": name, "latent_lr": 0.02, "lr": 1e-3, "epochs": 2, "max_steps_per_epoch": 2,
           "latent_lr_schedule": "step:every=1,factor=0.1"}
    r = fit(cfg, data=digits)
    assert [m.as_dict()["hp/latent_lr"] for m in r.history] == pytest.approx([2e-3, 2e-4])
    tr = Trainer(cfg, data=digits)
    tr.train_epoch()
    assert [g["lr"] for g in tr.optimizer.binary.param_groups] == pytest.approx([2e-3])
    assert [g["lr"] for g in tr.optimizer.optimizers["real"].param_groups] == [1e-3]


def test_every_schedulable_key_reaches_a_param_group():
    for name in optim.list_optimizers():
        spec = optim.get(name)
        opt = spec.validate(dict(spec.hyperparameters))
        for key in spec.schedulable:
            assert any(spec.group_key(key) in g for g in opt.param_groups), (name, key)


def test_schedule_key_no_group_carries_is_rejected_at_config_time(monkeypatch):
    from bnn_tune.optim import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    optim.register("sgd_with_extra", torch.optim.SGD, hyperparameters={"momentum": 0.0, "extra": 1.0},
                   make=lambda params, h, *, lr, **_c: torch.optim.SGD(params, lr=lr, momentum=h["momentum"]))
    from bnn_tune.config import TrialConfig

    TrialConfig.from_dict({"optimizer": "sgd_with_extra", "momentum_schedule": "constant"})
    with pytest.raises(ConfigError, match=r"`extra_schedule`: no parameter group of optimizer 'sgd_with_extra' "
                                          r"carries 'extra'"):
        TrialConfig.from_dict({"optimizer": "sgd_with_extra", "extra_schedule": "constant"})
    with pytest.raises(ConfigError, match="Unknown key 'beta0_schedule'"):  # BMD's beta follows its own law
        TrialConfig.from_dict({"optimizer": "bmd", "beta0_schedule": "constant"})


def test_bnew_validation_is_the_sign_network_and_relaxed_is_reported(digits):
    import copy

    from bnn_tune.optim import relaxed_weights

    tr = Trainer({**BASE, "optimizer": "bnew", "epochs": 4, "lr": 1e-3, "max_steps_per_epoch": 6}, data=digits)
    m = tr.train_epoch()
    assert not tr.optimizer.binary.is_locked()
    signed = copy.deepcopy(tr.model).eval()
    with torch.no_grad():
        for _, p in binary_parameters(signed):
            p.copy_(binarize(p))
    x, y = tr.data.x_val, tr.data.y_val
    with relaxed_weights(signed):
        sign_acc = (signed(x).argmax(1) == y).float().mean().item()
    with relaxed_weights(tr.model.eval()):
        relaxed_acc = (tr.model(x).argmax(1) == y).float().mean().item()
    assert m.val_acc == pytest.approx(sign_acc)
    assert m.as_dict()["val_acc_relaxed"] == pytest.approx(relaxed_acc)
    assert sign_acc != relaxed_acc  # the two networks differ before the lock
    assert "val_acc_relaxed" not in fit({**BASE, "optimizer": "bop", "epochs": 1, "max_steps_per_epoch": 2},
                                        data=digits).history[0].as_dict()


def test_flip_rule_does_not_stop_bnew_after_the_lock(digits):
    from bnn_tune.plugins._collapse import FlipRateCollapseRule

    r = fit({**BASE, "optimizer": "bnew", "epochs": 5, "t_start": 0.1, "t_lock": 0.3, "max_steps_per_epoch": 4},
            data=digits)
    lfr = [m.log_flip_rate for m in r.history]
    assert all(x == x for x in lfr[:2]) and all(x != x for x in lfr[2:])  # NaN once frozen for a whole epoch
    rule = FlipRateCollapseRule(n_warmup_steps=1, patience=2)
    assert not rule.decide(lfr, [0.5] * len(lfr)).stop
    assert rule.decide([*lfr[:2], -9.0, -9.0, -9.0], [0.5] * 5).stop  # what a 0 flip rate would have done


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"optimizer": "bop", "gamma": 1.5}, "`gamma` must be in (0, 1], but got gamma=1.5."),
        ({"optimizer": "bop", "threshold": -1.0}, "`threshold` must be a finite number >= 0, but got threshold=-1.0."),
        ({"optimizer": "bnew", "beta": -0.5}, "`beta` must be a finite number >= 0 or None, but got beta=-0.5."),
        ({"optimizer": "bnew", "t_lock": 1.5}, "`t_lock` must be in (0, 1], but got t_lock=1.5."),
        ({"optimizer": "bnew", "beta": 0.1, "beta_T": 3.0}, "Give exactly one of `beta`"),
        ({"optimizer": "filter", "order": 3}, "`order` must be 1 or 2, but got order=3."),
        ({"optimizer": "bmd", "beta_growth": 0.5}, "`beta_growth` must be a finite number >= 1"),
        ({"optimizer": "bopp"}, "Unknown optimizer 'bopp'. Available: ['bmd', 'bnew', 'bop', 'bop2', 'filter',"),
        ({"optimizer": "bop", "gama": 0.1}, "Unknown key 'gama'. Did you mean 'gamma'?"),
        ({"optimizer": "bop", "alpha": 0.1}, "hyperparameter of another optimizer"),
    ],
)
def test_bad_config_raises(config, message):
    with pytest.raises(ConfigError) as info:
        fit({**BASE, **config})
    assert message in str(info.value)


def test_bnew_accepts_beta_or_beta_T(digits):
    for extra in ({"beta": 0.05}, {"beta_T": 2.0}, {}):
        tr = Trainer({**BASE, "optimizer": "bnew", "epochs": 1, "max_steps_per_epoch": 4, **extra}, data=digits)
        g = tr.optimizer.binary.param_groups[0]
        assert (g["beta"] is None) != (g["beta_T"] is None)


def test_bnew_default_regulariser_pushes_weights_to_the_corners(digits):
    # Same run with lambda = 0 (beta = 0) and with the default beta_T: only the negative weight decay
    # differs, and before the lock it must have moved the weights towards +-1 (not just the projection).
    means = {}
    for extra in ({"beta": 0.0}, {}):
        tr = Trainer({**BASE, "optimizer": "bnew", "epochs": 5, **extra}, data=digits)
        for _ in range(3):  # 54 of 90 steps; the lock is at step 88
            tr.train_epoch()
        assert not tr.optimizer.binary.is_locked()
        means[bool(extra)] = torch.cat([p.detach().abs().flatten() for _, p in binary_parameters(tr.model)]).mean()
    assert means[False] > 0.3 > 3 * means[True]


def test_mid_run_bnew_checkpoint_exports_the_network_it_was_scored_on(digits):
    """Before the lock, eval mode and the packed export both use sign(w): predictions agree everywhere."""
    from bnn_tune.export import pack_model

    tr = Trainer({**BASE, "optimizer": "bnew", "epochs": 4, "lr": 1e-3, "max_steps_per_epoch": 6}, data=digits)
    m = tr.train_epoch()
    assert not tr.optimizer.binary.is_locked()
    x = tr.data.x_test
    with torch.no_grad():
        ref = tr.model.eval()(x).argmax(1).numpy()
    packed = pack_model(tr.model, input_shape=tuple(digits.input_shape))
    assert (packed.predict(x) == ref).all()
    assert tr.evaluate("test")[1] == pytest.approx(float((ref == tr.data.y_test.numpy()).mean()))
    assert m.val_acc_relaxed is not None
