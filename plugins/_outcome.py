"""What a trial's bookkeeping is called, in one place: keys, the stop-reason format and the status of a trial.

Every module that writes or reads a trial's side series or its stop reason takes the names from here (the
Optuna objective, the Ray trainable, the pruners and schedulers, the replay, the ranking and the report), so a
key cannot drift between them. No optuna or ray import.

* Optuna user attrs (``trial.user_attrs[...]``; Optuna 5 has no system attrs): ``*_ATTR``, all under the
  ``bnn_tune:`` namespace.
* Ray Tune result keys (``ray.tune.report({...})``): ``*_KEY``.
* A stop reason is ``"<rule>: <reason>"`` (:func:`format_stop_reason` / :func:`parse_stop_reason`), where rule
  is one of :data:`RULES`.
* The status of a finished trial (:func:`trial_status`) is one of :data:`STATUSES`: ``completed`` (ran every
  epoch, no stop), ``pruned: asha`` / ``pruned: hyperband`` / ``pruned: median`` (successive halving or the median
  rule stopped it), ``flip-early`` / ``flip-collapse`` / ``flip-band`` (a flip-rate rule stopped it), ``stopped``
  (ended before its last epoch with no rule to name: a strategy without a scheduler and no recorded reason, such
  as a stop criterion of the user's own), ``failed``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "CHECKPOINT_ATTR",
    "CONFIG_ATTR",
    "FAIL_REASON_ATTR",
    "FLIP_RATE_ATTR",
    "FLIP_RATE_KEY",
    "FLIP_RULES",
    "LAYER_FLIP_RATE_ATTR",
    "PROTECTED_ATTR",
    "PRUNE_REASON_ATTR",
    "RULES",
    "SCHEDULE_RULES",
    "STATUSES",
    "STOP_REASON_FILE",
    "STOP_REASON_KEY",
    "SUB_EPOCH_KEY",
    "SUB_EPOCH_POINTS",
    "SUB_FLIP_RATE_ATTR",
    "SUB_FLIP_RATE_KEY",
    "TEST_ACC_ATTR",
    "VAL_ACC_ATTR",
    "WORKER_ATTR",
    "count_statuses",
    "format_stop_reason",
    "is_sub_epoch_result",
    "parse_stop_reason",
    "trial_status",
]

# ---------------------------------------------------------------- Optuna user attrs
FLIP_RATE_ATTR = "bnn_tune:log_flip_rate"
"""Log flip rate of every epoch (``log(flip_rate + e^-9)``), a list."""
SUB_FLIP_RATE_ATTR = "bnn_tune:sub_log_flip_rate"
"""Log flip rates of the sub-epoch points so far (every 1/:data:`SUB_EPOCH_POINTS` epoch), a list."""
LAYER_FLIP_RATE_ATTR = "bnn_tune:layer_log_flip_rate"
VAL_ACC_ATTR = "bnn_tune:val_acc"
TEST_ACC_ATTR = "bnn_tune:test_acc"
CONFIG_ATTR = "bnn_tune:config"
CHECKPOINT_ATTR = "bnn_tune:checkpoint"
FAIL_REASON_ATTR = "bnn_tune:fail_reason"
PRUNE_REASON_ATTR = "bnn_tune:prune_reason"
"""The stop reason of a pruned trial, ``"<rule>: <reason>"``."""
WORKER_ATTR = "bnn_tune:worker"
"""``"<host>:<pid>"`` of the process that runs the trial (``bnn-tune search``), so that an interrupted search fails
only its own workers' trials, never those of another machine sharing the study."""
PROTECTED_ATTR = "bnn_tune:protected"
"""Why a rule kept a trial that successive halving wanted to stop (``"protect: ..."``)."""

# ---------------------------------------------------------------- Ray Tune result keys
FLIP_RATE_KEY = "log_flip_rate"
SUB_FLIP_RATE_KEY = "sub_log_flip_rate"
STOP_REASON_KEY = "stop_reason"
SUB_EPOCH_KEY = "sub_epoch_point"
"""Marks a sub-epoch result of :func:`bnn_tune.trainable` (inside the first epoch): the index (1..7) of the
sub-epoch point it reports. Such a result carries :data:`SUB_FLIP_RATE_KEY` (the epoch's points so far),
``epoch`` = ``training_iteration`` = the epochs finished (0) and NaN in place of the epoch metrics
(``val_acc``...), which are not measured inside an epoch; :func:`is_sub_epoch_result` tells it apart."""
STOP_REASON_FILE = "bnn_tune_stop_reason.txt"

SUB_EPOCH_POINTS = 8
"""Sub-epoch flip-rate points per epoch (every 1/8 epoch)."""

# ---------------------------------------------------------------- rules and statuses
FLIP_RULES = ("flip-early", "flip-collapse", "flip-band")
"""Rules that stop a trial for its flip rate; a trial stopped by one has that rule as its status."""
SCHEDULE_RULES = ("asha", "hyperband", "median")
"""Rules that stop a trial for its objective (successive halving, Hyperband, the median rule): status
``"pruned: <rule>"``."""
RULES = FLIP_RULES + SCHEDULE_RULES
STATUSES = ("completed", *(f"pruned: {r}" for r in SCHEDULE_RULES), *FLIP_RULES, "stopped", "failed")

_REASON = re.compile(r"^([a-z][a-z0-9+-]*): (.*)$", re.S)


def is_sub_epoch_result(result: object) -> bool:
    """Whether a Ray result (a dict) is a sub-epoch result (:data:`SUB_EPOCH_KEY`), which schedulers ranking
    epochs, rankings and reports skip.

    Example:
        >>> is_sub_epoch_result({"sub_epoch_point": 3, "val_acc": float("nan")}), is_sub_epoch_result({"val_acc": 0.9})
        (True, False)
    """
    return isinstance(result, dict) and result.get(SUB_EPOCH_KEY) is not None


def format_stop_reason(rule: str, reason: str) -> str:
    """``"<rule>: <reason>"``, the one form a stop reason takes in user attrs, Ray results and logs.

    Raises:
        ValueError: ``rule`` is not one of :data:`RULES`.

    Example:
        >>> format_stop_reason("flip-early", "never flipped")
        'flip-early: never flipped'
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)}, but got rule={rule!r}.")
    return f"{rule}: {reason}"


def parse_stop_reason(text: str | None) -> tuple[str, str] | None:
    """``(rule, reason)`` of a stop reason written by :func:`format_stop_reason`; None for an empty text or one
    that names no known rule.

    Example:
        >>> parse_stop_reason("flip-band: above the band")
        ('flip-band', 'above the band')
        >>> parse_stop_reason("something else") is None
        True
    """
    m = _REASON.match((text or "").strip())
    if not m or m.group(1) not in RULES:
        return None
    return m.group(1), m.group(2)


def trial_status(*, failed: bool = False, stop_reason: str | None = None, stopped: bool = False,
                 schedule_rule: str | None = None) -> str:
    """The status of a finished trial, from the rule that decided (one of :data:`STATUSES`).

    Args:
        failed: the trial raised (or its worker died and it was not retried).
        stop_reason: the recorded ``"<rule>: <reason>"``, if any.
        stopped: the trial ended before its last epoch (an Optuna PRUNED state, a Ray trial with fewer epochs
            than planned) even if no reason was recorded.
        schedule_rule: the rule of the strategy's scheduler (``asha``, ``hyperband``, ``median``), named for a
            trial that was stopped without a recorded reason (a plain ASHA records none); without one such a
            trial is ``stopped`` (no rule of the strategy stopped it).

    Example:
        >>> trial_status(stop_reason="flip-early: never flipped")
        'flip-early'
        >>> trial_status(stopped=True, schedule_rule="hyperband"), trial_status(stopped=True), trial_status()
        ('pruned: hyperband', 'stopped', 'completed')
    """
    if failed:
        return "failed"
    parsed = parse_stop_reason(stop_reason)
    if parsed is not None:
        rule = parsed[0]
        return rule if rule in FLIP_RULES else f"pruned: {rule}"
    if stopped or stop_reason:
        return f"pruned: {schedule_rule}" if schedule_rule in SCHEDULE_RULES else "stopped"
    return "completed"


def count_statuses(statuses: Iterable[str]) -> dict[str, int]:
    """``{status: count}`` over :data:`STATUSES`, in their order, zeros left out (the live line, the ranking
    and ``summary.json`` count with this).

    Raises:
        ValueError: a status that is not one of :data:`STATUSES`.

    Example:
        >>> count_statuses(["completed", "flip-early", "pruned: asha", "completed"])
        {'completed': 2, 'pruned: asha': 1, 'flip-early': 1}
    """
    counts = dict.fromkeys(STATUSES, 0)
    for s in statuses:
        if s not in counts:
            raise ValueError(f"`status` must be one of {list(STATUSES)}, but got status={s!r}.")
        counts[s] += 1
    return {s: n for s, n in counts.items() if n}
