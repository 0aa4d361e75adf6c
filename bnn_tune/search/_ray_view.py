"""The Tune callback that feeds ``bnn-tune search``'s live view (imports ray: loaded by the Ray backend only).

Ray pickles the run config, callbacks included, into the experiment state, so :class:`ViewCallback` is a
module-level class (pickled by reference) that holds no console: it forwards to :data:`LIVE`, the view of the
search running in this process -- after ``Tuner.restore`` too, which unpickles the callback.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from ray import tune

from ..plugins._outcome import STOP_REASON_KEY

__all__ = ["LIVE", "ViewCallback"]

LIVE: dict[str, Any] = {"view": None, "scheduler": None, "row": None}
"""``view``: the :class:`bnn_tune.search._rows.LiveView`; ``scheduler``: the search's scheduler (its
``stop_reasons``); ``row``: the function that makes a row of a trial (the Ray backend's)."""


def _finite(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class ViewCallback(tune.Callback):
    """A line in the live view per finished trial, and the running count."""

    def __init__(self, params: list[str], epochs: int, pruner: str) -> None:
        self.params, self.epochs, self.pruner = list(params), int(epochs), pruner
        self.best: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if LIVE["view"] is not None:
            LIVE["view"].started(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        v = result.get("val_acc")
        if _finite(v):
            self.best[trial.trial_id] = max(self.best.get(trial.trial_id, -math.inf), float(v))

    def _done(self, trial: Any, error: str | None) -> None:
        view, row = LIVE["view"], LIVE["row"]
        if view is None or row is None:
            return
        last = dict(trial.last_result or {})
        reasons = getattr(LIVE["scheduler"], "stop_reasons", None) or {}
        reason = reasons.get(trial.trial_id) or last.get(STOP_REASON_KEY)
        view.finished(row(trial.trial_id, last, dict(trial.config or {}), params=self.params, epochs=self.epochs,
                          pruner=self.pruner, error=error, best=self.best.get(trial.trial_id), stop_reason=reason,
                          path=None))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, f"error: see {getattr(trial, 'error_file', None) or 'the trial directory'}")
