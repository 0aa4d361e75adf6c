"""The +-1 mark that lets a binary layer skip binarizing Bop's weights (issue 14) is never stale."""

from __future__ import annotations

import pytest
import torch

from bnn_tune import optim
from bnn_tune.nn import BinaryLinear, SteSign, is_sign_valued, mark_sign_valued

LATENT_FREE = [optim.Bop, optim.Bop2ndOrder, optim.GradientFilter]


def _layer() -> BinaryLinear:
    torch.manual_seed(0)
    layer = BinaryLinear(6, 4)
    optim.binarize_weights(layer)
    return layer


@pytest.mark.parametrize("cls", LATENT_FREE)
def test_latent_free_optimizers_keep_the_mark_across_steps_and_flips(cls):
    layer = _layer()
    opt = cls([layer.weight], threshold=0.0)
    assert is_sign_valued(layer.weight) and layer.quantized_weight() is layer.weight
    before = layer.weight.detach().clone()
    for _ in range(5):
        layer.weight.grad = torch.randn_like(layer.weight)
        opt.step()
        assert is_sign_valued(layer.weight) and layer.quantized_weight() is layer.weight
        assert bool((layer.weight.abs() == 1).all())
    assert not torch.equal(before, layer.weight)  # it flipped, and the mark followed


def test_any_in_place_change_drops_the_mark_and_the_quantizer_is_applied_again():
    layer = _layer()
    optim.Bop([layer.weight])
    with torch.no_grad():
        layer.weight.mul_(0.5)
    assert not is_sign_valued(layer.weight)
    assert torch.equal(layer.quantized_weight(), torch.sign(layer.weight.detach()))
    layer.load_state_dict({"weight": torch.full((4, 6), -0.25)})
    assert layer.quantized_weight().unique().tolist() == [-1.0]


def test_latent_optimizers_and_non_sign_values_are_not_marked():
    layer = BinaryLinear(6, 4)
    optim.Bop([layer.weight])  # kaiming-uniform latent values: not +-1, no mark
    assert not is_sign_valued(layer.weight) and layer.quantized_weight() is not layer.weight
    layer = _layer()
    opt = optim.LatentAdam([layer.weight], lr=0.1)
    assert not is_sign_valued(layer.weight)
    layer.weight.grad = torch.ones_like(layer.weight)
    opt.step()
    assert not is_sign_valued(layer.weight)


@pytest.mark.parametrize("clip", [0.5, 1.0, None])
def test_skip_only_when_the_quantizer_is_the_identity_on_signs(clip):
    layer = BinaryLinear(6, 4, weight_quantizer=SteSign(clip))
    with torch.no_grad():
        layer.weight.copy_(torch.sign(layer.weight) + (layer.weight == 0))
    mark_sign_valued(layer.weight)
    skipped = layer.quantized_weight() is layer.weight
    assert skipped == (clip is None or clip >= 1.0)
    # and the gradient is the same either way as long as the skip is taken only then
    x = torch.randn(3, 6)
    layer(x).sum().backward()
    g_skip = layer.weight.grad.clone()
    layer.weight.grad = None
    with torch.no_grad():
        layer.weight.mul_(1.0)  # drop the mark: the quantizer runs
    layer(x).sum().backward()
    assert torch.equal(g_skip, layer.weight.grad)


def test_latent_adam_marks_clipped_latents_and_the_unmasked_gradient_is_the_same():
    from bnn_tune.nn import is_bounded

    torch.manual_seed(0)
    layer = BinaryLinear(6, 4)
    opt = optim.LatentAdam([layer.weight], lr=0.5)  # big steps: many latents end on the clip boundary
    x = torch.randn(5, 6)
    for _ in range(4):
        opt.zero_grad()
        (layer(x) * torch.arange(4.0)).sum().backward()  # a fixed direction: latents run into the clip
        opt.step()
        assert is_bounded(layer.weight, 1.0) and not is_bounded(layer.weight, 0.5)
    assert bool((layer.weight.abs() == 1).any())  # the mask's boundary case |w~| == clip is exercised
    layer.weight.grad = None
    layer(x).square().sum().backward()  # marked: unclipped estimator (|w~| <= 1 everywhere)
    fast = layer.weight.grad.clone()
    layer.weight.grad = None
    with torch.no_grad():
        layer.weight.mul_(1.0)  # unmarked: the masked estimator
    assert not is_bounded(layer.weight, 1.0)
    layer(x).square().sum().backward()
    assert torch.equal(fast, layer.weight.grad)


def test_no_bound_mark_without_clip():
    from bnn_tune.nn import is_bounded

    layer = BinaryLinear(6, 4)
    opt = optim.LatentAdam([layer.weight], lr=0.5, clip_value=None)
    layer.weight.grad = torch.ones_like(layer.weight)
    opt.step()
    assert not is_bounded(layer.weight, 1e9)
