"""latent_adam's ``init_steps``: the initial latent magnitude given in consistent steps of ``latent_lr`` (the
latent_adam search space's coordinate), capped at the clip value; with ``init_scale`` both must agree."""

from __future__ import annotations

import pytest

import bnn_tune
from bnn_tune.nn import is_binary_parameter

TINY = {"dataset": "synthetic", "width": 0.125, "batch_size": 32, "max_steps_per_epoch": 2, "epochs": 1,
        "optimizer": "latent_adam"}


def _max_latent(trainer) -> list[float]:
    return [p.abs().max().item() for p in trainer.model.parameters() if is_binary_parameter(p)]


@pytest.mark.parametrize("steps, lr, clip, expected", [
    (3.0, 1e-2, 1.0, 0.03),    # steps x lr
    (100.0, 1e-1, 1.0, 1.0),   # capped at the clip value exactly
    (50.0, 1e-2, 0.5, 0.5),    # ... at a clip value other than 1
    (0.1, 1e-3, 1.0, 1e-4),    # a fraction of a step
    (100.0, 1e-1, None, 10.0), # no clipping: nothing to cap at
])
def test_init_steps_sets_the_initial_latent_scale(steps, lr, clip, expected):
    t = bnn_tune.Trainer({**TINY, "latent_lr": lr, "init_steps": steps, "clip_value": clip})
    assert _max_latent(t) and all(m == pytest.approx(expected, rel=1e-6) for m in _max_latent(t))


def test_init_steps_and_a_consistent_init_scale_are_accepted_an_inconsistent_one_refused():
    t = bnn_tune.Trainer({**TINY, "latent_lr": 1e-2, "init_steps": 5.0, "init_scale": 0.05})
    assert all(m == pytest.approx(0.05) for m in _max_latent(t))
    with pytest.raises(ValueError, match=r"`init_scale`=0.2 disagrees with `init_steps`=5.0 x `latent_lr`=0.01"):
        bnn_tune.Trainer({**TINY, "latent_lr": 1e-2, "init_steps": 5.0, "init_scale": 0.2})


@pytest.mark.parametrize("bad", [0.0, -1.0, True, "3"])
def test_init_steps_must_be_positive(bad):
    with pytest.raises(ValueError, match="`init_steps` must be > 0 or None"):
        bnn_tune.Trainer({**TINY, "init_steps": bad})


def test_without_init_steps_the_init_scale_alone_decides():
    t = bnn_tune.Trainer({**TINY, "latent_lr": 1e-2, "init_scale": 0.25})
    assert all(m == pytest.approx(0.25) for m in _max_latent(t))
