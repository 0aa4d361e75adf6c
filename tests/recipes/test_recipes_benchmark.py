"""The importable logic of benchmarks/science/recipes.py: budgets, applicability, summaries."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SCIENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "science"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCIENCE))
    try:
        yield importlib.import_module("recipes")
    finally:
        sys.path.remove(str(SCIENCE))
        sys.modules.pop("recipes", None)


@pytest.mark.parametrize("recipe", ["one_step", "distill", "init", "distill+init", "two_step",
                                    "two_step+distill+init"])
@pytest.mark.parametrize("optimizer", ["bop", "latent_adam"])
def test_every_recipe_spends_the_same_budget_and_validates(bench, recipe, optimizer):
    from bnn_tune.config import TrialConfig

    cfg = bench.recipe_config({"dataset": "synthetic", "optimizer": optimizer, "epochs": 10}, recipe, 20)
    if optimizer == "bop" and recipe.startswith("two_step"):
        assert cfg is None
        return
    c = TrialConfig.from_dict(cfg)
    twin = c.teacher == "twin" or c.init_from == "twin"
    assert c.epochs + (c.teacher_epochs if twin else 0) == 20
    assert (c.recipe == "two_step") == recipe.startswith("two_step")
    assert (c.teacher == "twin") == ("distill" in recipe) and (c.init_from == "twin") == ("init" in recipe)


def test_summaries_and_gaps(bench):
    assert bench.summarise([0.9, float("nan"), 0.7, 0.8]) == {"median": 0.8, "min": 0.7, "max": 0.9, "n": 3}
    table = {"bop": {"one_step": {"test": {"median": 0.95}}, "distill": {"test": {"median": 0.97}}},
             "bmd": {"one_step": {"test": {"median": 0.96}}, "distill": {"test": {"median": float("nan")}}}}
    g = bench.gaps(table, 0.99)
    assert g["per_recipe"]["one_step"]["optimizer"] == "bmd"
    assert g["best"]["recipe"] == "distill" and g["best"]["gap_pp"] == pytest.approx(2.0)
