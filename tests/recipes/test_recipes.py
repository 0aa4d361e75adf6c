"""bnn_tune.recipes through the Trainer: distillation, the twin and its cache, twin init, two-step training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bnn_tune
from bnn_tune import recipes
from bnn_tune.config import TrialConfig
from bnn_tune.nn import is_binary_parameter

TINY = {"dataset": "synthetic", "width": 0.125, "batch_size": 32, "max_steps_per_epoch": 3, "epochs": 2}
TWIN = {**TINY, "teacher_epochs": 1}


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    recipes.clear_memory_cache()
    yield
    recipes.clear_memory_cache()


def _binary(model):
    return [p for p in model.parameters() if is_binary_parameter(p)]


def _binary_layers(model):
    return [m for m in model.modules() if hasattr(m, "weight_quantizer") and is_binary_parameter(m.weight)]


# ---------------------------------------------------------------- distillation
def test_distillation_loss_is_t_squared_kl_of_softened_logits():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    T = 3.0
    p_t, p_s = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
    by_hand = T * T * (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    assert recipes.distillation_loss(s, t, T).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert recipes.distillation_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def test_trainer_loss_adds_weighted_distillation_from_the_twin():
    trainer = bnn_tune.Trainer({**TWIN, "teacher": "twin", "distill_weight": 2.5, "distill_temperature": 2.0})
    teacher = trainer.recipe.teacher
    assert teacher is not None and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x, y = trainer.data.x_train[:16], trainer.data.y_train[:16]
    logits = trainer.model(x)
    expected = F.cross_entropy(logits, y) + 2.5 * recipes.distillation_loss(logits, teacher(x), 2.0)
    assert trainer.recipe.loss(logits, x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    plain = bnn_tune.Trainer(TINY)
    assert plain.recipe.loss(logits, x, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_twin_trains_in_its_own_rng_so_the_student_starts_the_same():
    with_twin = bnn_tune.Trainer({**TWIN, "teacher": "twin"})
    without = bnn_tune.Trainer(TINY)
    for a, b in zip(with_twin.model.state_dict().values(), without.model.state_dict().values()):
        assert torch.equal(a, b)
    # the teacher really trained: it differs from the twin's initialisation
    cfg = TrialConfig.from_dict({**TWIN, "teacher": "twin"})
    torch.manual_seed(cfg.seed)
    init = recipes._build_twin(cfg, with_twin.data)
    trained = with_twin.recipe.teacher
    assert not torch.equal(next(init.parameters()), next(trained.parameters()).cpu())


# ---------------------------------------------------------------- cost accounting
def test_trial_epochs_count_the_twin_and_the_first_epoch_time_its_seconds():
    r = bnn_tune.fit({**TINY, "teacher": "twin", "teacher_epochs": 3})
    assert [m.trial_epochs for m in r.history] == [4, 5]
    assert [m.as_dict()["trial_epochs"] for m in r.history] == [4, 5]
    plain = bnn_tune.fit(TINY)
    assert [m.trial_epochs for m in plain.history] == [1, 2]
    # init_from alone trains a twin too; teacher_epochs defaults to epochs
    init = bnn_tune.fit({**TINY, "init_from": "twin"})
    assert [m.trial_epochs for m in init.history] == [3, 4]


def test_setup_seconds_go_into_the_first_epoch_time_once():
    trainer = bnn_tune.Trainer({**TWIN, "teacher": "twin"})
    setup = trainer.recipe.setup_seconds
    assert setup > 0
    first = trainer.train_epoch()
    assert first.epoch_time >= setup
    assert trainer.recipe.take_setup_time() == 0.0


# ---------------------------------------------------------------- the cache
def test_twin_cache_on_disk_is_keyed_by_config_and_reused(tmp_path):
    cfg = {**TWIN, "teacher": "twin", "teacher_cache_dir": str(tmp_path)}
    first = bnn_tune.Trainer(cfg)
    assert not first.recipe.from_cache
    files = sorted(p.name for p in tmp_path.iterdir())
    key = recipes._hash(recipes.twin_key(TrialConfig.from_dict(cfg)))
    assert files == [f"twin-{key}.safetensors"]
    recipes.clear_memory_cache()  # force the disk path
    second = bnn_tune.Trainer(cfg)
    assert second.recipe.from_cache
    for a, b in zip(first.recipe.teacher.state_dict().values(), second.recipe.teacher.state_dict().values()):
        assert torch.equal(a, b)
    # same student run whether the twin was trained or read: the cache changes nothing but time
    h1 = [first.train_epoch().as_dict() for _ in range(2)]
    h2 = [second.train_epoch().as_dict() for _ in range(2)]
    for a, b in zip(h1, h2):
        assert a["train_loss"] == b["train_loss"] and a["val_acc"] == b["val_acc"]
    # a different seed (or twin budget) is another twin
    bnn_tune.Trainer({**cfg, "seed": 1})
    bnn_tune.Trainer({**cfg, "teacher_epochs": 2})
    assert len(list(tmp_path.iterdir())) == 3
    # the distillation settings are not part of the twin's key
    assert bnn_tune.Trainer({**cfg, "distill_weight": 3.0}).recipe.from_cache


def test_memory_cache_serves_the_same_process_without_a_folder():
    first = bnn_tune.Trainer({**TWIN, "teacher": "twin"})
    second = bnn_tune.Trainer({**TWIN, "init_from": "twin"})
    assert not first.recipe.from_cache and second.recipe.from_cache


# ---------------------------------------------------------------- teacher from a file
def test_teacher_from_safetensors_and_from_torch_state_dict(tmp_path):
    twin_trainer = bnn_tune.Trainer({**TWIN, "teacher": "twin"})
    twin = twin_trainer.recipe.teacher
    st = tmp_path / "twin.safetensors"
    recipes.save_twin(twin, st)
    pt = tmp_path / "twin.pt"
    torch.save(twin.state_dict(), pt)
    for path in (st, pt):
        t = bnn_tune.Trainer({**TINY, "teacher": str(path)})
        assert t.recipe.teacher_epochs == 0  # a file costs no trial-epochs
        for a, b in zip(twin.state_dict().values(), t.recipe.teacher.state_dict().values()):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not fit the real-valued twin of model='mlp'"):
        bnn_tune.Trainer({**TINY, "width": 0.25, "teacher": str(st)})


def test_teacher_file_is_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported"):
        bnn_tune.Trainer({**TINY, "teacher": str(path)})


# ---------------------------------------------------------------- init from the twin
@pytest.mark.parametrize("optimizer", ["latent_adam", "bop", "filter", "bnew", "bmd"])
def test_init_from_twin_copies_weights_and_the_optimizer_prepares_them(optimizer):
    trainer = bnn_tune.Trainer({**TWIN, "optimizer": optimizer, "init_from": "twin"})
    recipes.clear_memory_cache()
    twin = recipes._cached_twin(trainer.config, trainer.data, trainer.device)[0]
    for src, dst in zip(twin.parameters(), trainer.model.parameters()):
        if not is_binary_parameter(dst):
            assert torch.equal(src, dst)
        elif optimizer in ("bop", "filter"):
            assert torch.equal(dst, torch.where(src >= 0, 1.0, -1.0))
        elif optimizer == "bnew":
            assert torch.equal(dst, src.clamp(-1, 1))
        else:
            assert torch.equal(dst, src)
    # batch-norm running statistics start fresh (binary layers produce another scale)
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def test_init_from_twin_with_init_scale_rescales_the_latent_weights():
    trainer = bnn_tune.Trainer({**TWIN, "optimizer": "latent_adam", "init_from": "twin", "init_scale": 0.5})
    for p in _binary(trainer.model):
        assert p.abs().max().item() == pytest.approx(0.5)


# ---------------------------------------------------------------- two-step
def test_two_step_uses_real_weights_then_binary_weights():
    trainer = bnn_tune.Trainer({**TINY, "optimizer": "latent_adam", "epochs": 4, "recipe": "two_step",
                                "step1_fraction": 0.5})
    assert trainer.recipe.step1_epochs == 2
    layers = _binary_layers(trainer.model)
    originals = [layer.weight_quantizer for layer in layers]
    trainer.recipe.start_epoch(0)
    for layer in layers:
        assert torch.equal(layer.quantized_weight(), layer.weight)  # real weights in step 1
    trainer.recipe.start_epoch(2)
    for layer, q in zip(layers, originals):
        assert layer.weight_quantizer is q
        assert set(layer.quantized_weight().unique().tolist()) <= {-1.0, 1.0}


def test_two_step_decays_latent_weights_in_step_one_only():
    wd, lr = 1e-2, 0.05
    trainer = bnn_tune.Trainer({**TINY, "optimizer": "latent_adam", "epochs": 4, "recipe": "two_step",
                                "step1_weight_decay": wd, "latent_lr": lr})
    trainer.recipe.start_epoch(0)
    before = [p.detach().clone() for p in _binary(trainer.model)]
    real_before = [p.detach().clone() for p in trainer.model.parameters() if not is_binary_parameter(p)]
    trainer.recipe.after_step(trainer.optimizer)
    for b, p in zip(before, _binary(trainer.model)):
        assert torch.allclose(p, b * (1 - lr * wd))
    for b, p in zip(real_before, (p for p in trainer.model.parameters() if not is_binary_parameter(p))):
        assert torch.equal(p, b)
    trainer.recipe.start_epoch(2)
    before = [p.detach().clone() for p in _binary(trainer.model)]
    trainer.recipe.after_step(trainer.optimizer)
    for b, p in zip(before, _binary(trainer.model)):
        assert torch.equal(p, b)


@pytest.mark.parametrize("optimizer", ["latent_adam", "bmd"])
def test_two_step_resumes_exactly_from_a_step_one_checkpoint(optimizer):
    cfg = {**TINY, "optimizer": optimizer, "epochs": 3, "recipe": "two_step", "step1_fraction": 0.5}
    straight = bnn_tune.Trainer(cfg)
    hist = [straight.train_epoch().as_dict() for _ in range(3)]
    first = bnn_tune.Trainer(cfg)
    first.train_epoch()
    resumed = bnn_tune.Trainer(cfg)
    resumed.load_state_dict(first.state_dict())
    rest = [resumed.train_epoch().as_dict() for _ in range(2)]
    for a, b in zip(hist[1:], rest):
        assert a["train_loss"] == b["train_loss"] and a["val_acc"] == b["val_acc"]
    assert not any(isinstance(layer.weight_quantizer, recipes._RealWeight) for layer in _binary_layers(resumed.model))


@pytest.mark.parametrize("optimizer", ["bop", "bop2", "latent_adam", "bmd", "bnew", "filter"])
def test_every_recipe_trains_every_optimizer_it_applies_to(optimizer):
    from bnn_tune.config import TWO_STEP_OPTIMIZERS

    cfg = {**TWIN, "optimizer": optimizer, "teacher": "twin", "init_from": "twin"}
    if optimizer in TWO_STEP_OPTIMIZERS:
        cfg["recipe"] = "two_step"
    r = bnn_tune.fit(cfg)
    assert r.status == "completed" and math.isfinite(r.test_acc)
    for layer in _binary_layers(r.model):  # step 2 ran: the forward weights are +-1 again
        assert not isinstance(layer.weight_quantizer, recipes._RealWeight)
    if optimizer in ("bop", "bop2", "filter"):
        for p in _binary(r.model):
            assert set(p.unique().tolist()) <= {-1.0, 1.0}
