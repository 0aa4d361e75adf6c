"""BNN-HPO v2: budget accounting, the mean-based target and regrets, bootstrap intervals, the baseline grid
and the leave-one-task-out choice (synthetic tables and logs; no training)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from bnn_tune.hpobench._replay import BASELINE_PRUNERS, make_pruner, replay
from bnn_tune.hpobench.evaluate import (
    at_budgets,
    average_ranks,
    bootstrap_ci,
    cell_scores,
    incumbent,
    loto_choice,
    paired_share_difference,
    score_incumbent,
    summarize_budgets,
    verdict,
)
from bnn_tune.hpobench.protocol import (
    BASELINES,
    CONTENDERS,
    anytime,
    compile_report,
    contenders_for,
)
from bnn_tune.hpobench.table import Table, load
from bnn_tune.plugins._outcome import SUB_FLIP_RATE_ATTR


class _PruneAt(optuna.pruners.BasePruner):
    """Prunes every trial once it reported ``step`` epochs, or (``sub_points``) after that many sub-epoch
    flip-rate points of the first epoch."""

    def __init__(self, step: int | None = None, sub_points: int | None = None) -> None:
        self.step, self.sub_points = step, sub_points
        self.judges_sub_epoch = sub_points is not None

    def prune(self, study, trial) -> bool:
        if self.sub_points is not None and trial.last_step is None:
            return len(trial.user_attrs.get(SUB_FLIP_RATE_ATTR, [])) >= self.sub_points
        return self.step is not None and trial.last_step is not None and trial.last_step >= self.step


# --- budget accounting -----------------------------------------------------------------------------------------

def test_a_study_stops_once_it_spent_the_budget(synthetic_dir):
    E = load("bop_digits", data_dir=synthetic_dir).epochs
    r = replay("bop_digits", pruner="none", sampler="random", seed=1, budget=3, data_dir=synthetic_dir)
    assert len(r["trials"]) == 3 and r["trial_epochs_total"] == 3 * E  # no trial cap of 60, no 4th trial
    r = replay("bop_digits", pruner="none", sampler="random", seed=1, budget=2.5, data_dir=synthetic_dir)
    assert [c for c, _, _ in r["trials"]] == [E, E, E]  # the trial crossing 2.5E finishes
    assert r["n_trials"] == 3
    big = replay("bop_digits", pruner="none", sampler="random", seed=1, budget=70, data_dir=synthetic_dir)
    assert big["n_trials"] == 70  # more than the fixed protocol's 60 trials


def test_a_pruned_trial_is_charged_the_epochs_it_trained(synthetic_dir):
    E = load("bop_digits", data_dir=synthetic_dir).epochs
    r = replay("bop_digits", pruner=lambda: _PruneAt(step=3), sampler="random", seed=0, budget=1,
               data_dir=synthetic_dir)
    assert [c for c, _, _ in r["trials"]] == [3.0] * math.ceil(E / 3)
    assert all(v is None for _, _, v in r["trials"])  # none completed


def test_a_sub_epoch_stop_is_charged_its_fraction(synthetic_dir):
    E = load("bop_digits", data_dir=synthetic_dir).epochs
    r = replay("bop_digits", pruner=lambda: _PruneAt(sub_points=3), sampler="random", seed=0, budget=1,
               data_dir=synthetic_dir)
    assert {c for c, _, _ in r["trials"]} == {3 / 8}
    assert len(r["trials"]) == math.ceil(E / (3 / 8))
    costs = [c for c, _, _ in r["trials"]]
    assert sum(costs[:-1]) < E <= sum(costs)


def test_flip_early_stops_are_charged_and_the_budget_holds(synthetic_dir):
    E = load("bop_digits", data_dir=synthetic_dir).epochs
    r = replay("bop_digits", pruner="flip+asha", seed=0, budget=4, data_dir=synthetic_dir)
    costs = [c for c, _, _ in r["trials"]]
    assert r["stop_rules"].get("flip-early", 0) > 0
    assert any(0 < c < 1 and (c * 8) == int(c * 8) for c in costs)  # k/8 of an epoch
    assert sum(costs[:-1]) < 4 * E <= sum(costs)
    assert r["trial_epochs_total"] == pytest.approx(sum(costs))


def test_budget_is_validated(synthetic_dir):
    with pytest.raises(ValueError, match="budget"):
        replay("bop_digits", budget=0, data_dir=synthetic_dir)


# --- target and regret on cell means --------------------------------------------------------------------------

def _tiny_table() -> Table:
    # cell 0: one lucky seed (0.90) but a mean of 0.70; cell 1: 0.72 on both seeds (the best mean);
    # cell 2: 0.718 mean (a target cell: within 0.5 pp); cell 3: diverged on one seed (NaN counts 0)
    val = np.array([[0.90, 0.50], [0.72, 0.72], [0.716, 0.720], [0.6, np.nan]], dtype=np.float32)
    test = np.array([[0.60, 0.60], [0.70, 0.70], [0.80, 0.80], [0.5, np.nan]], dtype=np.float32)
    curves = {"val_acc": val[:, :, None], "test_acc": test[:, :, None]}
    return Table("tiny", {"epochs": 1}, [{}] * 4, curves)


def test_target_and_regret_are_taken_on_cell_means():
    s = cell_scores(_tiny_table())
    assert s["val"] == pytest.approx([0.70, 0.72, 0.718, 0.30], abs=1e-6)
    # the user picks the lucky seed's cell 0: single-seed 0.90 beats cell 1's 0.72
    trials = [(1.0, 0, 0.90), (1.0, 1, 0.72)]
    inc = incumbent(trials, limit=2.0)
    assert inc == 0
    r = score_incumbent(inc, s)
    assert r["at_target"] is False
    assert r["val_regret"] == pytest.approx((0.72 - 0.70) / (0.72 - 0.30), abs=1e-5)  # float32 table
    assert r["test_regret"] == pytest.approx((0.80 - 0.60) / (0.80 - 0.25), abs=1e-5)
    two = score_incumbent(2, s)  # within 0.5 pp of the best mean: at the target, and the best on test
    assert two["at_target"] is True and two["test_regret"] == pytest.approx(0.0)
    assert score_incumbent(1, s)["val_regret"] == 0.0


def test_the_incumbent_counts_only_trials_ended_within_the_budget():
    trials = [(1.0, 3, 0.5), (0.125, 1, None), (1.0, 0, 0.9)]
    assert incumbent(trials, 1.0) == 3
    assert incumbent(trials, 2.0) == 3  # the third trial ends at 2.125
    assert incumbent(trials, 2.125) == 0
    assert incumbent([], 5.0) is None


def test_a_study_without_incumbent_is_worst_and_not_at_target():
    s = cell_scores(_tiny_table())
    r = at_budgets([(0.125, 0, None)], s, epochs=1, budgets=(1, 2))
    assert r == {1.0: {"at_target": False, "val_regret": 1.0, "test_regret": 1.0},
                 2.0: {"at_target": False, "val_regret": 1.0, "test_regret": 1.0}}


def test_anytime_curves_agree_with_at_budgets():
    s = cell_scores(_tiny_table())
    rng = np.random.default_rng(0)
    for _ in range(20):
        trials = [(float(rng.choice([0.125, 0.5, 1.0])), int(rng.integers(4)),
                   None if rng.random() < 0.3 else float(rng.random())) for _ in range(12)]
        grid = [0.5 * k for k in range(1, 17)]
        a = anytime(trials, s, 1, grid)
        b = at_budgets(trials, s, 1, grid)
        assert list(a["at_target"]) == [float(b[g]["at_target"]) for g in grid]
        assert list(a["test_regret"]) == pytest.approx([b[g]["test_regret"] for g in grid])


# --- bootstrap --------------------------------------------------------------------------------------------------

def test_bootstrap_ci_is_deterministic_and_brackets_the_statistic():
    x = np.random.default_rng(1).normal(size=100)
    a, b = bootstrap_ci(x), bootstrap_ci(x)
    assert a == b
    assert a[1] <= a[0] <= a[2] and a[0] == pytest.approx(float(np.median(x)))
    assert bootstrap_ci(x, seed=2) != a  # the resamples are the seed's


def test_bootstrap_ci_covers_the_true_share_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = 0
    for rep in range(300):
        _, lo, hi = bootstrap_ci(rng.random(100) < 0.3, np.mean, n_boot=500, seed=rep)
        hits += lo <= 0.3 <= hi
    assert 0.90 <= hits / 300 <= 0.99


def test_bootstrap_ci_of_the_median_covers_the_true_median():
    rng = np.random.default_rng(3)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (bootstrap_ci(rng.normal(size=101), n_boot=400, seed=k)[1:]
                                              for k in range(150)))
    assert 0.88 <= hits / 150 <= 0.995


def test_paired_difference_keeps_failed_seeds_and_gives_verdicts():
    a = [True] * 80 + [False] * 20
    b = [True] * 40 + [False] * 60  # includes seeds where b had no incumbent at all (not at target)
    d = paired_share_difference(a, b)
    assert d[0] == pytest.approx(0.4) and verdict(d) == "wins"
    assert verdict(paired_share_difference(b, a)) == "loses"
    assert verdict(paired_share_difference(a, a)) == "ties"


def test_summarize_budgets_reports_shares_and_medians():
    per_seed = [{5.0: {"at_target": i % 4 == 0, "val_regret": i / 10, "test_regret": 0.5}} for i in range(8)]
    s = summarize_budgets(per_seed, n_boot=100)
    assert s[5.0]["share_at_target"][0] == pytest.approx(0.25)
    assert s[5.0]["test_regret"] == (0.5, 0.5, 0.5)


# --- the baseline grid ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("r", [2, 3])
def test_asha_grid_builds_successive_halving_with_its_settings(m, r):
    p = make_pruner(f"asha-m{m}-rf{r}", 15)
    assert type(p) is optuna.pruners.SuccessiveHalvingPruner
    assert (p._min_resource, p._reduction_factor) == (m, r)


def test_the_other_baselines_build_what_their_names_say():
    p = make_pruner("patient2+asha", 15)
    assert type(p) is optuna.pruners.PatientPruner and p._patience == 2
    assert (p._wrapped_pruner._min_resource, p._wrapped_pruner._reduction_factor) == (1, 3)
    # TPE + Hyperband is bracket-aware: optuna.pruners._filter_study hands TPE the trial's bracket only
    assert isinstance(make_pruner("hyperband", 15), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("flip+hyperband", 15), optuna.pruners.HyperbandPruner)
    assert type(make_pruner("median", 15)) is optuna.pruners.MedianPruner
    assert CONTENDERS["random-search"] == ("random", "none", "reinterpreted")
    assert CONTENDERS["none"] == ("tpe", "none", "reinterpreted")
    assert set(BASELINES) == {"none", "random-search", "hyperband", "median", "patient2+asha",
                              *(f"asha-m{m}-rf{r}" for m in (1, 2, 3) for r in (2, 3))}
    assert {f"asha-m{m}-rf{r}" for m in (1, 2, 3) for r in (2, 3)} | {"patient2+asha"} == set(BASELINE_PRUNERS)


def test_research_baselines_stay_out_of_the_shipped_registry():
    from bnn_tune.plugins.strategies import STRATEGIES

    assert not set(BASELINE_PRUNERS) & set(STRATEGIES)


def test_naive_contender_only_where_the_task_has_a_twin():
    assert "naive/none" not in contenders_for("filter_mnist1d")
    assert "naive/none" in contenders_for("bop_digits")
    with pytest.raises(ValueError, match="Unknown contender 'nope'"):
        contenders_for("bop_digits", ["nope"])


# --- leave one task out --------------------------------------------------------------------------------------------

def test_loto_never_looks_at_the_task_itself():
    rng = np.random.default_rng(0)
    cands = ["a", "b", "c", "d"]
    for _ in range(50):
        scores = {t: {c: float(rng.random()) for c in cands} for t in ("t1", "t2", "t3", "t4")}
        chosen = loto_choice(scores, "t2", cands)
        for c in cands:  # whatever t2's own results, its choice stays
            scores["t2"] = {k: (1.0 if k == c else 0.0) for k in cands}
            assert loto_choice(scores, "t2", cands) == chosen
        others = {c: np.mean([scores[t][c] for t in ("t1", "t3", "t4")]) for c in cands}
        assert chosen == max(cands, key=lambda c: others[c])


def _doc(shares: dict[str, list[bool]], seeds: int = 4) -> dict:
    return {"seeds": list(range(seeds)), "budgets": [5.0], "held_out": False, "contenders": {
        n: {"per_budget": {"5": {"share_at_target": (float(np.mean(bits)), 0.0, 1.0)}},
            "per_seed": {"5": {"at_target": "".join("1" if x else "0" for x in bits)}},
            "budget_to_half": 5.0 if np.mean(bits) >= 0.5 else None} for n, bits in shares.items()}}


def test_compile_report_chooses_each_tasks_baseline_on_the_other_tasks():
    T, F = True, False
    docs = {"t1": _doc({"flip+gated-asha": [T, T, T, T], "none": [T, T, F, F], "median": [F, F, F, F]}),
            "t2": _doc({"flip+gated-asha": [T, F, F, F], "none": [F, F, F, F], "median": [T, T, T, T]}),
            "t3": _doc({"flip+gated-asha": [T, T, F, F], "none": [T, T, T, F], "median": [T, F, F, F]})}
    rep = compile_report(docs, baselines=("none", "median"), n_boot=200)
    # t2 alone favours median; on t1 and t3, none is better -> none is t2's LOTO baseline
    assert rep["per_task"]["t2"]["loto_baseline"] == "none"
    assert rep["per_task"]["t2"]["oracle_baseline"] == "median"
    assert rep["per_task"]["t1"]["loto_baseline"] == "median"  # t2 (1.0) + t3 (0.25) vs none 0 + 0.75
    assert rep["per_task"]["t1"]["vs"]["median"]["5"]["diff"][0] == pytest.approx(1.0)
    assert set(rep["rank"]["5"]) == {"flip+gated-asha", "none", "median"}


def test_average_ranks_share_ties():
    assert average_ranks({"x": {"a": 1.0, "b": 1.0, "c": 0.0}}) == {"a": 1.5, "b": 1.5, "c": 3.0}


def test_held_out_tasks_are_ranked_apart():
    T, F = True, False
    docs = {"t1": _doc({"flip+gated-asha": [T, T, T, T], "none": [F, F, F, F]}),
            "t2": _doc({"flip+gated-asha": [T, T, F, F], "none": [T, T, T, T]}),
            "t3": _doc({"flip+gated-asha": [F, F, F, F], "none": [T, T, F, F]})}
    docs["t3"]["held_out"] = True
    rep = compile_report(docs, baselines=("none",), n_boot=100)
    assert rep["rank_held_out"]["5"] == {"flip+gated-asha": 2.0, "none": 1.0}
    assert rep["rank_design"]["5"] == {"flip+gated-asha": 1.5, "none": 1.5}
    assert "rank_held_out" not in compile_report({k: docs[k] for k in ("t1", "t2")}, baselines=("none",), n_boot=100)


def test_every_baseline_is_a_contender_the_replay_can_build():
    from bnn_tune.hpobench.protocol import BASELINES, CONTENDERS

    assert {f"asha-m{m}-rf{r}" for m in (1, 2, 3) for r in (2, 3)} <= set(BASELINES)
    for name in BASELINES:
        sampler, pruner, space = CONTENDERS[name]
        assert space == "reinterpreted" and sampler in ("tpe", "random"), name
        make_pruner(pruner, 9)


def test_task_figures_from_hand_made_logs(synthetic_dir):
    """Two seeds of one contender: seed 0 picks the best cell after one training, seed 1 only the worst cell; the
    figures say so per seed and budget, with the target at the best cell mean - 0.5 pp."""
    from bnn_tune.hpobench.evaluate import cell_scores
    from bnn_tune.hpobench.protocol import task_figures
    from bnn_tune.hpobench.table import load

    table = load("bop_digits", data_dir=synthetic_dir)
    s = cell_scores(table)
    E = table.epochs
    best, worst = int(np.argmax(s["val"])), int(np.argmin(s["val"]))
    logs = {"none": [{"trials": [(float(E), best, 0.9), (float(E), worst, 0.1)], "stop_rules": {"asha": 1}},
                     {"trials": [(float(E), worst, 0.2), (0.125, best, None), (0.125, best, None)],
                      "stop_rules": {"asha": 2, "flip-early": 1}}]}
    doc = task_figures("bop_digits", logs, [0, 1], budgets=(1.0, 2.0), data_dir=synthetic_dir, n_boot=50,
                       curve_step=0.5)
    assert doc["curve_budgets"] == [0.5, 1.0, 1.5, 2.0]
    assert doc["best_mean_val"] == pytest.approx(float(s["val"].max()))
    assert doc["best_mean_test"] == pytest.approx(float(s["test"].max()))
    assert doc["target"] == pytest.approx(float(s["val"].max()) - 0.005)
    assert doc["target_cells"] == int((s["val"] >= s["val"].max() - 0.005 - 1e-12).sum()) >= 1
    assert doc["held_out"] is False and doc["seeds"] == [0, 1]
    c = doc["contenders"]["none"]
    assert (c["sampler"], c["pruner"], c["space"]) == CONTENDERS["none"]
    assert c["per_seed"]["1"]["at_target"] == "10" and c["per_seed"]["2"]["at_target"] == "10"
    assert c["per_seed"]["1"]["val_regret"][0] == 0.0 and c["per_seed"]["1"]["val_regret"][1] == 1.0
    assert c["curve"]["share_at_target"] == [0.0, 0.5, 0.5, 0.5]
    assert c["budget_to_half"] == 1.0
    assert c["stop_rules"] == {"asha": 3, "flip-early": 1}
    assert c["trials_at_max_budget"] == 2.5  # the median of 2 and 3 trials


def _full_doc(shares: dict[str, list[bool]], halves: dict[str, float | None], held_out: bool = False) -> dict:
    doc = _doc(shares)
    doc["held_out"] = held_out
    for n, c in doc["contenders"].items():
        c["per_budget"]["5"].update(val_regret=(0.1, 0.0, 0.2), test_regret=(0.2, 0.1, 0.3))
        c["budget_to_half"] = halves.get(n)
    return doc


def test_oracle_baseline_ties_go_to_the_first_listed_baseline():
    T, F = True, False
    docs = {"t1": _doc({"flip+gated-asha": [T, T, T, T], "none": [T, T, F, F], "median": [T, T, F, F]}),
            "t2": _doc({"flip+gated-asha": [T, T, T, T], "none": [T, F, F, F], "median": [T, F, F, F]})}
    assert compile_report(docs, baselines=("none", "median"), n_boot=50)["per_task"]["t1"]["oracle_baseline"] == "none"
    assert compile_report(docs, baselines=("median", "none"), n_boot=50)["per_task"]["t1"]["oracle_baseline"] == "median"


def test_markdown_names_the_baselines_held_out_tasks_ratios_and_ranks():
    from bnn_tune.hpobench.protocol import markdown

    T, F = True, False
    docs = {"t1": _full_doc({"flip+gated-asha": [T, T, T, T], "none": [T, T, F, F], "median": [T, T, T, F]},
                            {"flip+gated-asha": 2.0, "none": 4.0, "median": None}),
            "t2": _full_doc({"flip+gated-asha": [T, F, F, F], "none": [F, F, F, F], "median": [T, T, T, T],
                             "naive/none": [F, F, F, F]},
                            {"flip+gated-asha": 3.0, "none": 2.0, "median": 1.0, "naive/none": None}),
            "t3": _full_doc({"flip+gated-asha": [T, T, F, F], "none": [T, T, T, F], "median": [T, F, F, F],
                             "naive/none": [T, F, F, F]},
                            {"flip+gated-asha": 3.0, "none": 2.0, "median": None, "naive/none": 4.0}, held_out=True)}
    rep = compile_report(docs, baselines=("none", "median"), n_boot=50)
    assert {t: (r["loto_baseline"], r["oracle_baseline"]) for t, r in rep["per_task"].items()} == {
        "t1": ("median", "median"), "t2": ("none", "median"), "t3": ("median", "none")}
    md = markdown(docs, rep)
    lines = md.splitlines()
    # the LOTO baseline is tagged; the oracle one only where it differs from the LOTO choice
    assert "| t2 | none (LOTO baseline) |" in md and "| t2 | median (oracle baseline) |" in md
    assert not any(line.startswith("| t1 |") and "(oracle baseline)" in line for line in lines)
    assert any(line.startswith("| t3 (held out) | ") for line in lines)
    assert "Average rank over the held-out tasks only:" in md and "Average rank over the design tasks only:" in md
    # budget to half: default / LOTO baseline; a missing figure is "never" and no ratio
    b2h = [line for line in lines if line.startswith("| t1 | 2E |")]
    assert b2h == ["| t1 | 2E | median: never | 4E | - |"]
    assert "| t2 | 3E | none: 2E | 2E | 1.50x |" in lines
    # spaces: a ratio only where both halves exist
    spaces = [line for line in lines if line.startswith(("| t2 | 0%", "| t3 | 75%"))]
    assert spaces[-1].endswith("| 2E / 4E = 0.50x |") and [s for s in spaces if s.startswith("| t2")][0].endswith(
        "| 2E / never |")
    # average ranks: best (lowest) first
    ranks = rep["rank"]["5"]
    table = md.split("### Average rank across tasks by share at target (1 = best)")[1].split("\n\n")[1].splitlines()[2:]
    assert [r.split(" | ")[0][2:] for r in table] == sorted(ranks, key=ranks.get)


# --- exact edges of the protocol's bookkeeping (issue 26: tools/mutate.py) --------------------------------------

def test_the_first_of_equal_incumbents_stands_and_budgets_are_inclusive():
    from bnn_tune.hpobench.evaluate import budget_to_share

    assert incumbent([(1.0, 3, 0.5), (1.0, 4, 0.5)], limit=5.0) == 3
    assert incumbent([(0.5, 3, 0.5), (0.5, 4, 0.75)], limit=1.0) == 4  # ends exactly at the limit: counts
    assert budget_to_share([0.5, 1.0, 1.5], [0.25, 0.5, 1.0], 0.5) == 1.0  # reaching the share exactly counts
    assert budget_to_share([0.5, 1.0], [0.25, 0.375], 0.5) is None


def test_verdicts_need_the_interval_to_exclude_zero_strictly():
    assert verdict((0.5, 0.0, 1.0)) == "ties" and verdict((-0.5, -1.0, 0.0)) == "ties"
    assert verdict((0.5, 0.125, 1.0)) == "wins" and verdict((-0.5, -1.0, -0.125)) == "loses"


def test_a_cell_exactly_at_the_tolerance_is_a_target_and_flat_scores_have_no_regret():
    s = {"val": np.array([0.5, 0.75, 0.625]), "test": np.array([0.5, 0.5, 0.5])}
    assert score_incumbent(2, s, tolerance=0.125)["at_target"] is True
    assert score_incumbent(0, s, tolerance=0.125)["at_target"] is False
    r = score_incumbent(0, s)
    assert r["val_regret"] == 1.0 and r["test_regret"] == 0.0  # every cell equal on test: no regret


def test_loto_ties_go_to_the_first_candidate_and_a_lone_task_takes_the_first():
    s = {"a": {"x": 1.0, "y": 0.0}, "b": {"x": 0.5, "y": 0.5}}
    assert loto_choice(s, "a", ["x", "y"]) == "x" and loto_choice(s, "a", ["y", "x"]) == "y"
    assert loto_choice({"a": {"x": 0.0, "y": 1.0}}, "a", ["x", "y"]) == "x"


def test_bootstrap_interval_is_the_central_level():
    # values 0..99: the bootstrap of the mean is ~N(49.5, 2.9); a 50% interval is much narrower than a 99% one
    v = np.arange(100.0)
    m, lo50, hi50 = bootstrap_ci(v, np.mean, n_boot=4000, level=0.5)
    _, lo99, hi99 = bootstrap_ci(v, np.mean, n_boot=4000, level=0.99)
    assert m == 49.5 and lo99 < lo50 < m < hi50 < hi99
    assert hi50 - lo50 == pytest.approx(2 * 0.674 * 2.887, rel=0.15) and hi99 - lo99 == pytest.approx(
        2 * 2.576 * 2.887, rel=0.15)


def test_aggregate_gives_medians_quartiles_and_shares_with_never_as_infinity():
    from bnn_tune.hpobench.evaluate import aggregate

    def res(to_target, total, best, pruned, rules):
        return {"trials_to_target": to_target, "trial_epochs_to_target": None if to_target is None else 2.0 * to_target,
                "trial_epochs_total": total, "best_final_val_acc": best, "best_test_acc": best - 0.125,
                "best_config_pruned": pruned, "stop_rules": rules}

    out = aggregate([res(3, 10.0, 0.5, False, {"asha": 2}), res(None, 20.0, 0.75, True, {"asha": 1, "flip-early": 4}),
                     res(1, 30.0, 0.625, False, {}), res(5, 40.0, 0.25, True, {}), res(2, 50.0, 0.375, False, {})])
    assert out["n"] == 5
    assert out["trials_to_target"] == (3.0, 2.0, 5.0)  # median, 25th, 75th of 1, 2, 3, 5, never (= inf)
    assert out["trial_epochs_to_target"] == (6.0, 4.0, 10.0)
    assert out["trial_epochs_total"] == (30.0, 20.0, 40.0)
    assert out["best_final_val_acc"] == (0.5, 0.375, 0.625) and out["best_test_acc"][0] == 0.375
    assert out["reached"] == 0.8 and out["best_config_pruned"] == 0.4
    assert out["stop_rules"] == {"asha": 3, "flip-early": 4}
    never = aggregate([res(None, 5.0, 0.1, False, {})] * 3)
    assert never["trials_to_target"] == (math.inf,) * 3 and never["reached"] == 0.0


def test_bootstrap_of_the_median_is_not_the_bootstrap_of_the_mean():
    # one outlier in ten: the median of (almost) every resample is 0, the mean of most is not
    v = [0.0] * 9 + [100.0]
    assert bootstrap_ci(v, n_boot=500) == (0.0, 0.0, 0.0)
    assert bootstrap_ci(v, np.mean, n_boot=500)[2] > 10.0


def test_cell_scores_take_the_last_epoch_and_aggregate_the_exact_median():
    from bnn_tune.hpobench.evaluate import aggregate

    val = np.array([[[0.9, 0.5], [0.9, 0.7]], [[0.1, 0.8], [0.1, 0.6]]], dtype=np.float32)  # (cells, seeds, epochs)
    t = Table("two_epochs", {"epochs": 2}, [{}, {}], {"val_acc": val, "test_acc": val})
    scores = cell_scores(t)
    assert scores["val"] == pytest.approx([0.6, 0.7]) and scores["test"] == pytest.approx([0.6, 0.7])  # final epoch
    rs = [{"trials_to_target": k, "trial_epochs_to_target": k, "trial_epochs_total": float(k),
           "best_final_val_acc": k / 100, "best_test_acc": k / 100, "best_config_pruned": False, "stop_rules": {}}
          for k in range(101)]
    assert aggregate(rs)["trial_epochs_total"] == (50.0, 25.0, 75.0)


def test_average_rank_leaves_out_the_research_candidates_and_ablations():
    # the ranks compare what a user can pick (shipped strategies, baselines); the default's design variants have
    # their own tables, and ranking 20 near-copies of the default would push every baseline down
    T, F = True, False
    docs = {t: _doc({"flip+gated-asha": [T, T, F, F], "flip+hyperband": [T, F, F, F], "none": [T, T, T, F],
                     "flip+gated-asha -early": [T, T, T, T], "flip-rules": [T, T, T, T]}) for t in ("t1", "t2")}
    rep = compile_report(docs, baselines=("none",), n_boot=200)
    assert set(rep["rank"]["5"]) == {"flip+gated-asha", "flip+hyperband", "none"}
    assert rep["rank"]["5"] == {"none": 1.0, "flip+gated-asha": 2.0, "flip+hyperband": 3.0}


def test_every_research_pruner_is_a_research_contender():
    from bnn_tune.hpobench._replay import CANDIDATE_PRUNERS
    from bnn_tune.hpobench.protocol import ABLATIONS, CANDIDATES, RESEARCH, SHIPPED

    assert set(RESEARCH) == set(CANDIDATE_PRUNERS)
    assert set(CANDIDATES) <= set(RESEARCH) | set(SHIPPED) and set(ABLATIONS) <= set(RESEARCH) | set(SHIPPED)
