"""The BNN-HPO v2 evaluation: every contender, on every recorded task, at equal trial-epoch budgets.

A *contender* is a ``(sampler, pruner, space)`` triple replayed with :func:`bnn_tune.hpobench.replay` and a
``budget`` of the largest protocol budget (:data:`bnn_tune.hpobench.evaluate.BUDGETS`, in units of E = one
full training). :func:`run_task` replays each contender on each sampler seed of one task and reduces the
trial logs to the protocol's figures (:func:`task_figures`); :func:`compile_report` puts the tasks together
(average ranks per budget, the best tuned baseline per task chosen leave-one-task-out, paired verdicts of
the default against it and against no pruning, the reinterpreted space against its naive twin);
:func:`markdown` prints what BENCHMARKS.md ("BNN-HPO") shows. ``benchmarks/hpobench_eval.py`` is the thin
script around these.

Contenders (research names; the shipped strategies keep their ``bnn-tune search`` names):

- ``flip+hyperband``: the default of ``bnn-tune search`` (TPE); ``flip+asha`` beside it;
- :data:`BASELINES`: ``none`` (TPE, no pruning), ``random-search`` (random sampler, no pruning),
  ``asha-m{1,2,3}-rf{2,3}`` (successive halving, min_resource x reduction_factor), ``hyperband`` (TPE with
  Optuna's ``HyperbandPruner``: TPE sees only the trials of the sampled trial's bracket, Optuna's BOHB-like
  pairing), ``median``, ``patient2+asha`` (``PatientPruner`` around ASHA);
- ``naive/none``: TPE on the naive twin space, no pruning, on tasks that have one (the space comparison).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .evaluate import (
    BUDGETS,
    at_budgets,
    average_ranks,
    budget_to_share,
    cell_scores,
    loto_choice,
    paired_share_difference,
    summarize_budgets,
    verdict,
)

__all__ = ["ABLATIONS", "BASELINES", "CANDIDATES", "CONTENDERS", "DEFAULT", "RESEARCH", "SHIPPED", "anytime", "compile_report", "contenders_for", "markdown",
           "replay_logs", "run_task", "task_figures"]

DEFAULT = "flip+gated-asha"

RESEARCH: tuple[str, ...] = (
    "flip-rules", "flip+asha+gate0.6", "flip+asha+gate0.8", "flip+hyperband+gate0.6", "flip+hyperband+gate0.8",
    "flip+asha+gate0.8 -early", "flip+asha+gate0.8 -band", "flip+asha+gate0.8 -collapse", "flip+asha+gate0.8 -protect",
    "flip+gated-asha -early", "flip+gated-asha -collapse", "flip+gated-asha -protect", "flip+gated-asha -gate",
    "flip+gated-asha -asha")
"""Issue 25's research contenders (``bnn_tune.hpobench._replay.CANDIDATE_PRUNERS``): the candidates for the default
and its ablations; left out of the average ranks, which compare what a user can pick."""

CONTENDERS: dict[str, tuple[str, str, str]] = {
    "flip+gated-asha": ("tpe", "flip+gated-asha", "reinterpreted"),
    "flip+hyperband": ("tpe", "flip+hyperband", "reinterpreted"),
    "flip+asha": ("tpe", "flip+asha", "reinterpreted"),
    "none": ("tpe", "none", "reinterpreted"),
    "random-search": ("random", "none", "reinterpreted"),
    **{f"asha-m{m}-rf{r}": ("tpe", f"asha-m{m}-rf{r}", "reinterpreted") for m in (1, 2, 3) for r in (2, 3)},
    "hyperband": ("tpe", "hyperband", "reinterpreted"),
    "median": ("tpe", "median", "reinterpreted"),
    "patient2+asha": ("tpe", "patient2+asha", "reinterpreted"),
    "naive/none": ("tpe", "none", "naive"),
    **{name: ("tpe", name, "reinterpreted") for name in RESEARCH},
}
"""``name -> (sampler, pruner, space)`` of every contender the evaluation replays."""

SHIPPED: tuple[str, ...] = ("flip+gated-asha", "flip+hyperband", "flip+asha")
"""The ``bnn-tune search`` strategies the evaluation replays (the default first)."""

CANDIDATES: tuple[str, ...] = (
    # round 1: the shipped flip+hyperband / flip+asha, the flip rules with no accuracy stops, both around a
    # rank-gated ASHA / Hyperband (Spearman 0.6 or 0.8)
    "flip+hyperband", "flip+asha", "flip-rules", "flip+asha+gate0.6", "flip+asha+gate0.8", "flip+hyperband+gate0.6",
    "flip+hyperband+gate0.8",
    # round 2: round 1's pick (flip+asha+gate0.8) with one rule off; "-band" (the band only protects) is the
    # shipped flip+gated-asha
    "flip+asha+gate0.8 -early", "flip+gated-asha", "flip+asha+gate0.8 -collapse", "flip+asha+gate0.8 -protect")
"""The candidates for the default strategy (issue 25), in two design rounds; ``benchmarks/hpobench_select.py``
chooses among them leave one task out."""

ABLATIONS: dict[str, str] = {
    "flip+gated-asha -early": "flip-early",
    "flip+gated-asha -collapse": "flip-collapse",
    "flip+gated-asha -protect": "protect (late bloomer and band)",
    "flip+gated-asha -gate": "rank gate (plain ASHA stops)",
    "flip+gated-asha -asha": "successive halving (no accuracy stops)",
    "flip+asha+gate0.8": "(flip-band stops turned on)",
}
"""``variant -> the rule it turns off`` of the default ``flip+gated-asha`` (the ablation table of issue 25)."""

BASELINES: tuple[str, ...] = ("none", "random-search", *(f"asha-m{m}-rf{r}" for m in (1, 2, 3) for r in (2, 3)),
                              "hyperband", "median", "patient2+asha")
"""The baselines with the same tuning effort as the flip rules (issue 24, item 2); the best one per task is
chosen leave-one-task-out among these."""


def contenders_for(task: str, names: Iterable[str] | None = None) -> list[str]:
    """The contenders that apply to ``task`` (``naive/none`` only where the task has a naive twin)."""
    from .tasks import get_task

    names = list(CONTENDERS) if names is None else list(names)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"Unknown contender {unknown[0]!r}. Available: {sorted(CONTENDERS)}.")
    return [n for n in names if CONTENDERS[n][2] != "naive" or get_task(task).naive]


def anytime(trials: Sequence[Sequence[Any]], scores: dict[str, np.ndarray], epochs: int,
            grid: Sequence[float]) -> dict[str, np.ndarray]:
    """At each budget of ``grid`` (units of E, ascending): whether the incumbent is at the target and its val /
    test regret (the same as :func:`bnn_tune.hpobench.evaluate.at_budgets`, in one pass over the trials)."""
    from .evaluate import score_incumbent

    limits = np.asarray(grid, dtype=np.float64) * epochs
    ends = np.cumsum([float(t[0]) for t in trials]) if trials else np.zeros(0)
    out = {k: np.zeros(len(limits)) for k in ("at_target", "val_regret", "test_regret")}
    best, cell, i = -math.inf, None, 0
    for j, limit in enumerate(limits):
        while i < len(trials) and ends[i] <= limit + 1e-9:
            value = trials[i][2]
            if value is not None and math.isfinite(value) and value > best:
                best, cell = value, int(trials[i][1])
            i += 1
        r = score_incumbent(cell, scores)
        for k in out:
            out[k][j] = float(r[k])
    return out


def _replay_one(job: tuple[str, str, int, float, str | None]) -> dict[str, Any]:
    from ._replay import replay

    task, name, seed, budget, data_dir = job
    sampler, pruner, space = CONTENDERS[name]
    r = replay(task, sampler=sampler, pruner=pruner, space=space, seed=seed, budget=budget, data_dir=data_dir)
    return {"trials": r["trials"], "stop_rules": r["stop_rules"]}


def replay_logs(task: str, seeds: Sequence[int], *, names: Iterable[str] | None = None, budget: float = max(BUDGETS),
                workers: int = 1, data_dir: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Replay every contender of ``task`` once per sampler seed with ``budget`` (in E, no trial cap):
    ``{contender: [{"trials": ..., "stop_rules": ...} per seed]}``, the input of :func:`task_figures`."""
    names = contenders_for(task, names)
    jobs = [(task, n, int(s), float(budget), data_dir) for n in names for s in seeds]
    if workers <= 1:
        logs = [_replay_one(j) for j in jobs]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            logs = list(ex.map(_replay_one, jobs, chunksize=4))
    by_name: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for (_t, n, _s, _b, _d), log in zip(jobs, logs):
        by_name[n].append(log)
    return by_name


def run_task(task: str, seeds: Sequence[int], *, names: Iterable[str] | None = None,
             budgets: Sequence[float] = BUDGETS, workers: int = 1, data_dir: str | None = None,
             n_boot: int = 2000, curve_step: float = 0.5) -> dict[str, Any]:
    """:func:`replay_logs` with ``budget=max(budgets)``, reduced by :func:`task_figures`."""
    by_name = replay_logs(task, seeds, names=names, budget=max(budgets), workers=workers, data_dir=data_dir)
    return task_figures(task, by_name, list(seeds), budgets=budgets, data_dir=data_dir, n_boot=n_boot,
                        curve_step=curve_step)


def _key(b: float) -> str:
    return f"{float(b):g}"


def task_figures(task: str, logs: dict[str, list[dict[str, Any]]], seeds: Sequence[int], *,
                 budgets: Sequence[float] = BUDGETS, data_dir: str | None = None, n_boot: int = 2000,
                 curve_step: float = 0.5) -> dict[str, Any]:
    """The protocol's figures of one task from the replays' logs (``logs[contender][i]`` = the replay on
    ``seeds[i]``): per contender and budget the share at target, median val / test regret (bootstrap 95%
    intervals), the per-seed outcomes (for paired comparisons), anytime curves, trials and stops."""
    from .table import load
    from .tasks import get_task

    table = load(task, data_dir=data_dir)
    scores = cell_scores(table)
    epochs = table.epochs
    grid = [curve_step * k for k in range(1, int(round(max(budgets) / curve_step)) + 1)]
    tk = get_task(task)
    doc: dict[str, Any] = {
        "task": task, "description": tk.description, "held_out": bool(getattr(tk, "held_out", False)),
        "epochs": epochs, "configs": len(table.configs), "training_seeds": table.n_seeds,
        "best_mean_val": float(scores["val"].max()), "best_mean_test": float(scores["test"].max()),
        "target": float(scores["val"].max()) - 0.005,
        "target_cells": int((scores["val"] >= scores["val"].max() - 0.005 - 1e-12).sum()),
        "seeds": [int(s) for s in seeds], "budgets": [float(b) for b in budgets], "curve_budgets": grid,
        "contenders": {},
    }
    for name, rs in logs.items():
        per_seed = [at_budgets(r["trials"], scores, epochs, budgets) for r in rs]
        summary = summarize_budgets(per_seed, n_boot=n_boot)
        curves = [anytime(r["trials"], scores, epochs, grid) for r in rs]
        share = np.mean([c["at_target"] for c in curves], axis=0)
        rules: dict[str, int] = {}
        for r in rs:
            for k, v in r["stop_rules"].items():
                rules[k] = rules.get(k, 0) + v
        sampler, pruner, space = CONTENDERS[name]
        doc["contenders"][name] = {
            "sampler": sampler, "pruner": pruner, "space": space,
            "per_budget": {_key(b): v for b, v in summary.items()},
            "per_seed": {_key(b): {"at_target": "".join("1" if p[b]["at_target"] else "0" for p in per_seed),
                                   "val_regret": [round(p[b]["val_regret"], 4) for p in per_seed],
                                   "test_regret": [round(p[b]["test_regret"], 4) for p in per_seed]}
                         for b in summary},
            "curve": {"share_at_target": [round(float(x), 4) for x in share],
                      "val_regret_median": [round(float(x), 4) for x in
                                            np.median([c["val_regret"] for c in curves], axis=0)],
                      "test_regret_median": [round(float(x), 4) for x in
                                             np.median([c["test_regret"] for c in curves], axis=0)]},
            "budget_to_half": budget_to_share(grid, share.tolist(), 0.5),
            "trials_at_max_budget": float(np.median([len(r["trials"]) for r in rs])),
            "stop_rules": rules,
        }
    return doc


def _bits(doc: dict[str, Any], name: str, b: str) -> list[bool]:
    return [c == "1" for c in doc["contenders"][name]["per_seed"][b]["at_target"]]


def compile_report(docs: dict[str, dict[str, Any]], *, default: str = DEFAULT,
                   baselines: Sequence[str] = BASELINES, n_boot: int = 2000) -> dict[str, Any]:
    """Put the tasks' :func:`task_figures` together: per budget the average rank of every contender across
    tasks (by share at target), per task the best baseline chosen leave-one-task-out (highest mean share at
    target over the budgets on the *other* tasks) and the oracle best baseline (chosen on the task itself,
    for context), and paired verdicts (``wins`` / ``ties`` / ``loses`` at the 95% level) of ``default`` against
    the LOTO baseline and against ``none``; the space comparison (``none`` vs ``naive/none``) where a task
    has a naive twin. Every task must have the same seeds and budgets."""
    tasks = sorted(docs)
    if not tasks:
        return {"tasks": [], "budgets": [], "rank": {}, "per_task": {}}
    budgets = [_key(b) for b in docs[tasks[0]]["budgets"]]
    for t in tasks:
        if docs[t]["seeds"] != docs[tasks[0]]["seeds"] or [_key(b) for b in docs[t]["budgets"]] != budgets:
            raise ValueError(f"Task {t!r} was replayed with other seeds or budgets than {tasks[0]!r}; rerun it.")
    # ranked: the shipped strategies and the baselines; the research candidates and ablations of the default
    # (CANDIDATES, ABLATIONS) have their own tables (benchmarks/hpobench_select.py)
    research = set(RESEARCH) - {default, *SHIPPED}
    main = [n for n in docs[tasks[0]]["contenders"] if n != "naive/none" and n not in research
            and all(n in docs[t]["contenders"] for t in tasks)]
    cands = [b for b in baselines if b in main]

    def share(t: str, n: str, b: str) -> float:
        return float(docs[t]["contenders"][n]["per_budget"][b]["share_at_target"][0])

    mean_share = {t: {n: float(np.mean([share(t, n, b) for b in budgets])) for n in cands} for t in tasks}
    report: dict[str, Any] = {
        "tasks": tasks, "budgets": budgets, "default": default, "baselines": cands,
        "seeds": docs[tasks[0]]["seeds"],
        "rank": {b: average_ranks({t: {n: share(t, n, b) for n in main} for t in tasks}) for b in budgets},
        "per_task": {},
    }
    held_out = [t for t in tasks if docs[t].get("held_out")]
    if held_out and len(held_out) < len(tasks):  # issue 25: tasks recorded after the default froze, apart
        for key, group in (("rank_design", [t for t in tasks if t not in held_out]), ("rank_held_out", held_out)):
            report[key] = {b: average_ranks({t: {n: share(t, n, b) for n in main} for t in group}) for b in budgets}
    for t in tasks:
        d = docs[t]
        loto = loto_choice(mean_share, t, cands)
        oracle = max(cands, key=lambda n: (mean_share[t][n], -cands.index(n)))
        row: dict[str, Any] = {"held_out": d.get("held_out", False), "loto_baseline": loto,
                               "oracle_baseline": oracle, "vs": {}}
        if default in d["contenders"]:
            for other in dict.fromkeys((loto, "none", oracle)):
                if other not in d["contenders"]:
                    continue
                row["vs"][other] = {}
                for b in budgets:
                    diff = paired_share_difference(_bits(d, default, b), _bits(d, other, b), n_boot=n_boot)
                    row["vs"][other][b] = {"diff": diff, "verdict": verdict(diff)}
            half = d["contenders"][default]["budget_to_half"]
            base_half = d["contenders"][loto]["budget_to_half"]
            row["budget_to_half"] = {"default": half, "loto_baseline": base_half}
        if "naive/none" in d["contenders"] and "none" in d["contenders"]:
            sp: dict[str, Any] = {}
            for b in budgets:
                diff = paired_share_difference(_bits(d, "none", b), _bits(d, "naive/none", b), n_boot=n_boot)
                sp[b] = {"reinterpreted": d["contenders"]["none"]["per_budget"][b]["share_at_target"],
                         "naive": d["contenders"]["naive/none"]["per_budget"][b]["share_at_target"],
                         "diff": diff, "verdict": verdict(diff)}
            r_half, n_half = (d["contenders"][n]["budget_to_half"] for n in ("none", "naive/none"))
            sp["budget_to_half"] = {"reinterpreted": r_half, "naive": n_half,
                                    "ratio": (r_half / n_half) if r_half and n_half else None}
            row["spaces"] = sp
        report["per_task"][t] = row
    return report


def _pct(ci: Sequence[float]) -> str:
    return f"{ci[0]:.0%} [{ci[1]:.0%}, {ci[2]:.0%}]"


def _e(x: float | None) -> str:
    return "never" if x is None else f"{x:g}E"


def _num(ci: Sequence[float]) -> str:
    return f"{ci[0]:.3f} [{ci[1]:.3f}, {ci[2]:.3f}]"


def markdown(docs: dict[str, dict[str, Any]], report: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables of the protocol (share at target, regrets, LOTO baseline, verdicts, ranks,
    spaces) from :func:`task_figures` and :func:`compile_report`."""
    lines: list[str] = []
    budgets = report["budgets"]
    default = report.get("default", DEFAULT)
    head = " | ".join(f"{b}E" for b in budgets)
    lines += ["### Share of studies whose incumbent is a target cell (95% bootstrap CI)", "",
              f"| task | contender | {head} |", "|---|---|" + "---|" * len(budgets)]
    for t in report["tasks"]:
        row = report["per_task"][t]
        shown = dict.fromkeys((default, row["loto_baseline"], row["oracle_baseline"], "none", "random-search"))
        for n in shown:
            if n not in docs[t]["contenders"]:
                continue
            tag = (" (LOTO baseline)" if n == row["loto_baseline"] else "") + \
                  (" (oracle baseline)" if n == row["oracle_baseline"] and n != row["loto_baseline"] else "")
            cells = " | ".join(_pct(docs[t]["contenders"][n]["per_budget"][b]["share_at_target"]) for b in budgets)
            lines.append(f"| {t}{' (held out)' if row['held_out'] else ''} | {n}{tag} | {cells} |")
    lines += ["", f"### {default} against the LOTO baseline, no pruning and the oracle baseline (context): paired "
              "difference in share at target (95% CI), verdict", "", f"| task | against | {head} |",
              "|---|---|" + "---|" * len(budgets)]
    for t in report["tasks"]:
        row = report["per_task"][t]
        for other, per in row["vs"].items():
            role = ", ".join(r for r, n in (("LOTO", row["loto_baseline"]), ("oracle", row["oracle_baseline"]))
                             if n == other)
            cells = " | ".join(f"{per[b]['diff'][0]:+.0%} [{per[b]['diff'][1]:+.0%}, {per[b]['diff'][2]:+.0%}] "
                               f"**{per[b]['verdict']}**" for b in budgets)
            lines.append(f"| {t} | {other}{f' ({role})' if role else ''} | {cells} |")
    lines += ["", "### Budget until half of the studies' incumbents are target cells (anytime curves, 0.5E steps)", "",
              f"| task | {default} | LOTO baseline | none | {default} / LOTO baseline |", "|---|---|---|---|---|"]
    for t in report["tasks"]:
        row = report["per_task"][t]
        h = [docs[t]["contenders"][n]["budget_to_half"] if n in docs[t]["contenders"] else None
             for n in (default, row["loto_baseline"], "none")]
        ratio = f"{h[0] / h[1]:.2f}x" if h[0] and h[1] else "-"
        lines.append(f"| {t} | {_e(h[0])} | {row['loto_baseline']}: {_e(h[1])} | {_e(h[2])} | {ratio} |")
    lines += ["", "### Incumbent's normalized regret, median [95% CI]: val / test", "",
              f"| task | contender | {head} |", "|---|---|" + "---|" * len(budgets)]
    for t in report["tasks"]:
        row = report["per_task"][t]
        for n in dict.fromkeys((default, row["loto_baseline"], "none")):
            if n not in docs[t]["contenders"]:
                continue
            pb = docs[t]["contenders"][n]["per_budget"]
            cells = " | ".join(f"{_num(pb[b]['val_regret'])} / {_num(pb[b]['test_regret'])}" for b in budgets)
            lines.append(f"| {t} | {n} | {cells} |")
    lines += ["", "### Average rank across tasks by share at target (1 = best)", "",
              f"| contender | {head} |", "|---|" + "---|" * len(budgets)]
    names = sorted(report["rank"][budgets[0]], key=lambda n: report["rank"][budgets[-1]][n])
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{report['rank'][b][n]:.2f}" for b in budgets) + " |")
    for key, what in (("rank_design", "design tasks"), ("rank_held_out", "held-out tasks")):
        if key in report:
            lines += ["", f"Average rank over the {what} only:", "", f"| contender | {head} |",
                      "|---|" + "---|" * len(budgets)]
            lines += [f"| {n} | " + " | ".join(f"{report[key][b][n]:.2f}" for b in budgets) + " |" for n in names]
    sp_tasks = [t for t in report["tasks"] if "spaces" in report["per_task"][t]]
    if sp_tasks:
        lines += ["", "### Spaces (TPE, no pruning): reinterpreted vs naive twin, share at target", "",
                  f"| task | {head} | budget to a 50% share (reint. / naive) |", "|---|" + "---|" * (len(budgets) + 1)]
        for t in sp_tasks:
            sp = report["per_task"][t]["spaces"]
            cells = " | ".join(f"{_pct(sp[b]['reinterpreted'])} vs {_pct(sp[b]['naive'])} **{sp[b]['verdict']}**"
                               for b in budgets)
            h = sp["budget_to_half"]
            ratio = "" if h["ratio"] is None else f" = {h['ratio']:.2f}x"
            lines.append(f"| {t} | {cells} | {_e(h['reinterpreted'])} / {_e(h['naive'])}{ratio} |")
    return "\n".join(lines) + "\n"
