"""Config keys of the training recipes: ranges, keys that would do nothing, optimizers two-step rejects."""

from __future__ import annotations

import pytest

from bnn_tune.config import TWO_STEP_OPTIMIZERS, ConfigError, TrialConfig
from bnn_tune.optim import list_optimizers


def _cfg(**kw):
    return TrialConfig.from_dict({"dataset": "synthetic", **kw})


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"teacher": "tw1n"}, r"`teacher` must be None, 'twin' or the path of an existing model file.*no such file"),
        ({"teacher": 3}, r"`teacher` must be None, 'twin' or the path"),
        ({"teacher": ""}, r"`teacher` must be None"),
        ({"init_from": "real"}, r"`init_from` must be None or 'twin', but got init_from='real'"),
        ({"recipe": "two-step"}, r"`recipe` must be one of \['one_step', 'two_step'\].*Did you mean 'two_step'"),
        ({"teacher": "twin", "teacher_epochs": 0}, r"`teacher_epochs` must be an integer >= 1"),
        ({"teacher": "twin", "teacher_epochs": 1.5}, r"`teacher_epochs` must be an integer"),
        ({"teacher": "twin", "teacher_lr": 0.0}, r"`teacher_lr` must be a finite number > 0"),
        ({"teacher": "twin", "distill_weight": 0}, r"`distill_weight` must be a finite number > 0"),
        ({"teacher": "twin", "distill_temperature": -1.0}, r"`distill_temperature` must be a finite number > 0"),
        ({"recipe": "two_step", "step1_fraction": 1.0}, r"`step1_fraction` must be in \(0, 1\)"),
        ({"recipe": "two_step", "step1_weight_decay": -1e-3}, r"`step1_weight_decay` must be a finite number >= 0"),
        ({"recipe": "two_step", "epochs": 1}, r"needs epochs >= 2"),
        ({"teacher_cache_dir": 5}, r"`teacher_cache_dir` must be a folder path or None"),
    ],
)
def test_bad_values_raise_one_clear_line(kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**kw)


@pytest.mark.parametrize(
    ("kw", "needs"),
    [
        ({"distill_weight": 2.0}, "a teacher"),
        ({"distill_temperature": 2.0}, "a teacher"),
        ({"teacher_epochs": 3}, "a twin"),
        ({"teacher_lr": 1e-3}, "a twin"),
        ({"step1_fraction": 0.5}, "recipe='two_step'"),
        ({"step1_weight_decay": 1e-4}, "recipe='two_step'"),
    ],
)
def test_keys_that_would_do_nothing_are_rejected(kw, needs):
    key = next(iter(kw))
    with pytest.raises(ConfigError, match=rf"`{key}` only applies with {needs}"):
        _cfg(**kw)


@pytest.mark.parametrize("optimizer", sorted(set(list_optimizers()) - set(TWO_STEP_OPTIMIZERS)))
def test_two_step_rejected_for_optimizers_without_latent_weights(optimizer):
    with pytest.raises(ConfigError, match=rf"applies to the latent-weight optimizers.*optimizer='{optimizer}'.*"
                                          r"use recipe='one_step'"):
        _cfg(optimizer=optimizer, recipe="two_step")


@pytest.mark.parametrize("optimizer", list_optimizers())
def test_every_recipe_validates_where_it_applies(optimizer):
    kw = {"teacher": "twin", "teacher_epochs": 2, "teacher_lr": 1e-3, "distill_weight": 0.5,
          "distill_temperature": 2.0, "init_from": "twin"}
    if optimizer in TWO_STEP_OPTIMIZERS:
        kw.update(recipe="two_step", step1_fraction=0.3, step1_weight_decay=1e-4)
    cfg = _cfg(optimizer=optimizer, **kw)
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg  # round trip, defaults (None) included


def test_teacher_path_must_exist(tmp_path):
    path = tmp_path / "twin.safetensors"
    with pytest.raises(ConfigError, match="no such file"):
        _cfg(teacher=str(path))
    path.write_bytes(b"x")
    assert _cfg(teacher=str(path)).teacher == str(path)


def test_readme_recipe_table_lists_exactly_the_recipe_keys():
    import re
    from pathlib import Path

    from bnn_tune.recipes import RECIPE_KEYS

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Training recipes"):]
    section = section[: section.index("\n## ", 1)]
    listed = {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", section, flags=re.M)}
    assert listed == {*RECIPE_KEYS, "teacher_cache_dir"}
