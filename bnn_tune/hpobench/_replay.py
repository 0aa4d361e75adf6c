"""Replay a search on a recorded table: a real Optuna study whose objective reads recorded curves.

The sampler is Optuna's own and the pruner is built by the strategy registry
(:mod:`bnn_tune.plugins.strategies`) exactly as ``bnn-tune search`` builds it for the table's epochs; only the
training is replaced. Each trial samples a configuration with the task's
search space (``suggest`` or ``naive_suggest``), snaps every grid key to the nearest recorded value in the
space's own coordinate (log distance for a log-sampled parameter, linear otherwise), picks one recorded
training seed from ``(seed, trial number)`` and reports the recorded validation accuracy epoch by epoch
exactly as :func:`bnn_tune.objective` does (``trial.report(val_acc, epoch)``, the log flip-rate series in
the user attrs, no ``should_prune`` after the last epoch). Between epochs it also publishes the sub-epoch
flip rates (every 1/8 epoch) and, for a pruner with ``judges_sub_epoch = True``, asks ``should_prune`` after
each point of the first epoch, so it can stop a trial inside its first epoch; the trial-epochs count that
fraction.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from bnn_tune._validate import check_range
from bnn_tune.metrics import log_flip_rate
from bnn_tune.plugins.strategies import STRATEGIES, get_strategy

from .table import Table, load
from .tasks import get_task

__all__ = ["BASELINE_PRUNERS", "EXTRA_PRUNERS", "PRUNERS", "SPACES", "make_pruner", "replay", "snap"]

from ..plugins._outcome import (  # noqa: E402
    FLIP_RATE_ATTR,
    PRUNE_REASON_ATTR,
    SUB_FLIP_RATE_ATTR,
    TEST_ACC_ATTR,
    parse_stop_reason,
)

SPACES = ("reinterpreted", "naive")


def _flip_or_asha(epochs: int) -> Any:
    from bnn_tune.plugins.optuna import FlipRatePruner
    from bnn_tune.plugins.strategies import SH_SETTINGS, collapse_settings

    return FlipRatePruner(optuna.pruners.SuccessiveHalvingPruner(**SH_SETTINGS), combine="or", **collapse_settings(epochs))


def _asha(min_resource: int, reduction_factor: int) -> Callable[[int], Any]:
    def build(epochs: int) -> Any:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor)

    return build


def _patient_asha(patience: int) -> Callable[[int], Any]:
    def build(epochs: int) -> Any:
        from bnn_tune.plugins.strategies import SH_SETTINGS

        with warnings.catch_warnings():  # "PatientPruner is experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.PatientPruner(optuna.pruners.SuccessiveHalvingPruner(**SH_SETTINGS),
                                                patience=patience)

    return build


BASELINE_PRUNERS: dict[str, Callable[[int], Any]] = {
    **{f"asha-m{m}-rf{r}": _asha(m, r) for m in (1, 2, 3) for r in (2, 3)},
    "patient2+asha": _patient_asha(2),
}
"""The tuned baselines of the BNN-HPO v2 protocol (research-only, not ``bnn-tune search`` strategies):
``asha-m{M}-rf{R}`` is ``SuccessiveHalvingPruner(min_resource=M, reduction_factor=R)`` for M in {1, 2, 3} and
R in {2, 3} (``asha-m1-rf3`` builds what the ``asha`` strategy builds); ``patient2+asha`` is
``PatientPruner(SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), patience=2)`` (ASHA's stop is
vetoed while the trial improved within the last 2 epochs). The shipped ``none``, ``median`` and ``hyperband``
complete the grid; ``hyperband`` with TPE is Optuna's BOHB-like pairing (``optuna.pruners._filter_study``
gives TPE only the trials of the sampled trial's bracket), and random search is the ``random`` sampler."""

def _flip_variant(inner: str, **changes: Any) -> Callable[[int], Any]:
    """The shipped flip rules (:data:`RECOMMENDED_RULE`) with ``changes`` around ``inner`` (``"none"``,
    ``"asha"`` or ``"hyperband"``): the candidates and ablations of issue 25."""

    def build(epochs: int) -> Any:
        import dataclasses

        from bnn_tune.plugins._flip_sh import RECOMMENDED_RULE
        from bnn_tune.plugins.flip_sh import FlipSHPruner
        from bnn_tune.plugins.strategies import SH_SETTINGS

        wrapped = {"none": optuna.pruners.NopPruner, "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(**SH_SETTINGS),
                   "hyperband": lambda: optuna.pruners.HyperbandPruner(**SH_SETTINGS)}[inner]()
        return FlipSHPruner(wrapped, max_steps=epochs, rule=dataclasses.replace(RECOMMENDED_RULE, **changes))

    return build


def _gate(rho: float, min_ref: int = 8) -> Any:
    from bnn_tune.plugins._flip_sh import RankGate

    return RankGate(rho=rho, min_ref=min_ref)


def _band(*, stops: bool = True, protect: bool = True) -> Any:
    """The shipped band (width 2, protection +-1) with its stops or its protection turned off."""
    from bnn_tune.plugins._flip_sh import Band

    return Band(width=2.0, stops=stops, protect=protect, protect_width=1.0)


def _no_band_stops(**changes: Any) -> dict[str, Any]:
    """``changes`` on top of the default's rule (:data:`GATED_RULE`: gate, band without stops) for its ablations."""
    from bnn_tune.plugins._flip_sh import GATED_RULE

    return {"gate": GATED_RULE.gate, "band": GATED_RULE.band, **changes}


CANDIDATE_PRUNERS: dict[str, Callable[[int], Any]] = {
    "flip-rules": _flip_variant("none"),
    **{f"flip+asha+gate{r:g}": _flip_variant("asha", gate=_gate(r)) for r in (0.6, 0.8)},
    **{f"flip+hyperband+gate{r:g}": _flip_variant("hyperband", gate=_gate(r)) for r in (0.6, 0.8)},
    # ablations of flip+asha+gate0.8, one rule off at a time (without the gate: flip+asha; without ASHA: flip-rules)
    "flip+asha+gate0.8 -early": _flip_variant("asha", gate=_gate(0.8), use_early=False),
    "flip+asha+gate0.8 -band": _flip_variant("asha", gate=_gate(0.8), band=_band(stops=False)),
    "flip+asha+gate0.8 -collapse": _flip_variant("asha", gate=_gate(0.8), use_collapse=False),
    "flip+asha+gate0.8 -protect": _flip_variant("asha", gate=_gate(0.8), min_rise=None, band=_band(protect=False)),
    # second round: the default flip+gated-asha (= flip+asha+gate0.8 -band) with one more rule off
    "flip+gated-asha -early": _flip_variant("asha", **_no_band_stops(use_early=False)),
    "flip+gated-asha -collapse": _flip_variant("asha", **_no_band_stops(use_collapse=False)),
    "flip+gated-asha -protect": _flip_variant("asha", **_no_band_stops(min_rise=None, band=None)),
    "flip+gated-asha -gate": _flip_variant("asha", **_no_band_stops(gate=None)),
    "flip+gated-asha -asha": _flip_variant("none", **_no_band_stops()),
}
"""Issue 25's candidates for the default: the flip rules alone (no accuracy stops), and the flip rules around
ASHA / Hyperband whose accuracy stops pass a rank gate (:class:`bnn_tune.plugins._flip_sh.RankGate`, Spearman
threshold 0.6 or 0.8, 8 completed trials)."""

EXTRA_PRUNERS: dict[str, Callable[[int], Any]] = {"flip-or+asha": _flip_or_asha, **BASELINE_PRUNERS,
                                                  **CANDIDATE_PRUNERS}
"""Research variants measured by the benchmark beside the shipped strategies: ``flip-or+asha`` is the older
composition ``FlipRatePruner(SuccessiveHalvingPruner, combine="or")`` with the ``flip`` strategy's settings,
and the :data:`BASELINE_PRUNERS`."""

PRUNERS: tuple[str, ...] = (*STRATEGIES, *EXTRA_PRUNERS)
"""Pruner names: every strategy of :mod:`bnn_tune.plugins.strategies` (built exactly as ``bnn-tune search``
builds it for the table's epochs) and the :data:`EXTRA_PRUNERS`."""


def make_pruner(name: str | Callable[[], Any], epochs: int) -> Any:
    """A fresh pruner called ``name`` (one of :data:`PRUNERS`) for ``epochs``-epoch trials, or ``name()`` for a
    factory (tuning)."""
    if callable(name):
        return name()
    if name in EXTRA_PRUNERS:
        return EXTRA_PRUNERS[name](epochs)
    if name not in STRATEGIES:
        raise ValueError(f"Unknown pruner {name!r}. Available: {sorted(PRUNERS)}.")
    return get_strategy(name).optuna_pruner(epochs)


def _make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    raise ValueError(f"Unknown sampler {name!r}. Known samplers: ['tpe', 'random', 'qmc'].")


def snap(table: Table, config: dict[str, Any], log_keys: set[str]) -> int:
    """Index of the recorded grid point nearest to ``config`` (per key: log distance for ``log_keys``)."""
    grid = table.meta["grid"]
    index = 0
    for key, values in grid.items():
        x = float(config.get(key, table.meta["base"].get(key, values[0])))
        if key in log_keys and all(v >= 0 for v in values):
            if x <= 0:
                cands = [i for i, v in enumerate(values) if v == 0] or [int(np.argmin(values))]
                best = cands[0]
            else:
                pos = [(abs(math.log(x) - math.log(v)), i) for i, v in enumerate(values) if v > 0]
                best = min(pos)[1]
        else:
            best = int(np.argmin([abs(x - v) for v in values]))
        index = index * len(values) + best
    return index


def replay(
    task: str,
    *,
    sampler: str = "tpe",
    pruner: str | Callable[[], Any] = "asha",
    space: str | Callable[[Any], dict[str, Any]] = "reinterpreted",
    seed: int = 0,
    n_trials: int | None = None,
    budget: float | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Run one replayed search of ``task`` and summarise it.

    Args:
        sampler: ``"tpe"``, ``"random"`` or ``"qmc"`` (seeded with ``seed``).
        pruner: a name in :data:`PRUNERS`, or a zero-argument factory of an Optuna pruner.
        space: ``"reinterpreted"`` (the space module's ``suggest``), ``"naive"`` (its ``naive_suggest``) or
            a ``suggest(trial)`` callable returning grid keys (to measure a candidate space).
        seed: sampler seed; also picks each trial's recorded training seed.
        n_trials: trials in the study (default: 60, or no cap when ``budget`` is given).
        budget: stop once the study has spent ``budget * E`` trial-epochs (``E`` = one full training, the
            table's epochs), with no trial cap (the protocol of BNN-HPO v2). A trial is charged what it
            trained: a pruned trial the epochs before its stop, a stop inside the first epoch its sub-epoch
            fraction (k/8 epoch), a diverged (NaN) trial the epochs it ran. The trial that crosses the budget
            finishes (the log has its cost; :func:`bnn_tune.hpobench.evaluate.incumbent` counts only trials
            that ended within a budget). With ``n_trials`` too, whichever comes first stops the study.
        data_dir: folder of recorded ``<task>.npz`` (default: the package's data).

    Returns:
        ``trials_to_target`` / ``trial_epochs_to_target`` (None if the target was never reached by a
        completed trial; target = table's best mean final val accuracy - 0.5 pp), ``trial_epochs_total``,
        ``best_final_val_acc``, ``best_test_acc`` (of the best completed trial), ``best_config_pruned``
        (the table's best grid point was sampled and pruned at least once), ``n_trials``, ``n_pruned``,
        ``stop_rules`` (``{rule: count}`` of who pruned), ``target``, ``best_so_far`` (per trial:
        cumulative trial-epochs and best completed value so far), ``trials`` (per trial in order: its
        cost in trial-epochs, its recorded grid cell, and its final val accuracy if it completed, else None).
    """
    from bnn_tune import search_spaces

    tk = get_task(task)
    table = load(task, data_dir=data_dir)
    if callable(space):
        suggest = space
    else:
        if space not in SPACES:
            raise ValueError(f"Unknown space {space!r}. Known spaces: {list(SPACES)}.")
        if space == "naive" and not tk.naive:
            raise ValueError(f"Task {task!r} has no naive twin on its grid; use space='reinterpreted'.")
        module = search_spaces.get(tk.space)
        suggest = module.suggest if space == "reinterpreted" else module.naive_suggest
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, but got seed={seed!r}.")
    if budget is not None:
        check_range("budget", budget, 0.0, low_open=True)
    elif n_trials is None:
        n_trials = 60
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ValueError(f"`n_trials` must be an integer >= 1, but got n_trials={n_trials!r}.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base_sampler = _make_sampler(sampler, seed)
    if tk.fixed and not callable(space):  # parameters the grid records at one value only (filter order 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            base_sampler = optuna.samplers.PartialFixedSampler(dict(tk.fixed), base_sampler)
    # a fixed study name: HyperbandPruner assigns brackets by crc32(study name, trial number), so a random
    # name would make hyperband replays differ from run to run
    study = optuna.create_study(direction="maximize", sampler=base_sampler, pruner=make_pruner(pruner, table.epochs),
                                study_name=f"hpobench-{task}-{sampler}-{seed}")
    sub_epoch = bool(getattr(study.pruner, "judges_sub_epoch", False))  # as bnn_tune.objective does
    c = table.curves
    P, E = table.sub_epoch_points, table.epochs
    val, test, lfr = c["val_acc"], c["test_acc"], c["log_flip_rate"]
    sub = c["sub_flip_rate"]
    used: list[float] = []
    cells: list[tuple[int, int]] = []

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest(trial)
        log_keys = {k for k, d in trial.distributions.items() if getattr(d, "log", False)}
        # a LogRange with a zero decade samples log but maps to 0; keys derived from a log key are log too
        log_keys |= {k for k in table.meta["grid"] if k not in trial.distributions}
        ci = snap(table, cfg, log_keys)
        si = random.Random(seed * 100_003 + trial.number).randrange(table.n_seeds)
        cells.append((ci, si))
        trial.set_user_attr("bnn_tune:grid_index", ci)
        series: list[float] = []
        subs: list[float] = []
        spent = 0.0
        try:
            for e in range(E):
                for k in range(P):  # sub-epoch flip rates inside epoch e+1
                    subs.append(log_flip_rate(float(sub[ci, si, e * P + k])) if math.isfinite(sub[ci, si, e * P + k])
                                else math.nan)
                    spent = e + (k + 1) / P
                    if k < P - 1 and e == 0 and sub_epoch:
                        trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(subs))
                        if trial.should_prune():
                            raise optuna.TrialPruned(trial.user_attrs.get(PRUNE_REASON_ATTR, ""))
                v = float(val[ci, si, e])
                if not math.isfinite(v):  # diverged: the objective fails the trial
                    return math.nan
                series.append(float(lfr[ci, si, e]))
                trial.set_user_attr(SUB_FLIP_RATE_ATTR, list(subs))
                trial.set_user_attr(FLIP_RATE_ATTR, list(series))
                trial.report(v, e + 1)
                if e + 1 < E and trial.should_prune():
                    raise optuna.TrialPruned(trial.user_attrs.get(PRUNE_REASON_ATTR, ""))
        finally:
            used.append(spent)
        trial.set_user_attr(TEST_ACC_ATTR, float(test[ci, si, -1]))
        return float(val[ci, si, -1])

    callbacks = []
    if budget is not None:
        limit = float(budget) * E

        def stop_at_budget(study: optuna.Study, _trial: Any) -> None:
            if math.fsum(used) >= limit - 1e-9:
                study.stop()

        callbacks.append(stop_at_budget)
    study.optimize(objective, n_trials=n_trials, catch=(), callbacks=callbacks)
    return summarize(study, table, used, cells)


def summarize(study: optuna.Study, table: Table, used: list[float], cells: list[tuple[int, int]]) -> dict[str, Any]:
    """The replay's result dict (see :func:`replay`)."""
    from optuna.trial import TrialState

    target = table.target()
    best_idx = table.best_config
    best = -math.inf
    best_test = math.nan
    to_target: int | None = None
    epochs_to_target: float | None = None
    spent = 0.0
    curve: list[tuple[float, float]] = []
    rules: dict[str, int] = {}
    best_pruned = False
    trials = study.get_trials(deepcopy=False)
    for t, cost, (ci, _si) in zip(trials, used, cells):
        spent += cost
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            if t.value > best:
                best, best_test = t.value, float(t.user_attrs.get(TEST_ACC_ATTR, math.nan))
            if to_target is None and t.value >= target:
                to_target, epochs_to_target = t.number + 1, spent
        if t.state == TrialState.PRUNED:
            parsed = parse_stop_reason(str(t.user_attrs.get(PRUNE_REASON_ATTR) or ""))
            rule = parsed[0] if parsed is not None else type(study.pruner).__name__
            rules[rule] = rules.get(rule, 0) + 1
            best_pruned = best_pruned or ci == best_idx
        curve.append((spent, best if best > -math.inf else math.nan))
    return {
        "trials_to_target": to_target,
        "trial_epochs_to_target": epochs_to_target,
        "trial_epochs_total": spent,
        "best_final_val_acc": best if best > -math.inf else math.nan,
        "best_test_acc": best_test,
        "best_config_pruned": best_pruned,
        "n_trials": len(trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "stop_rules": rules,
        "target": target,
        "best_so_far": curve,
        "trials": [(float(cost), int(ci), float(t.value) if t.state == TrialState.COMPLETE and t.value is not None
                    and math.isfinite(t.value) else None) for t, cost, (ci, _si) in zip(trials, used, cells)],
    }
