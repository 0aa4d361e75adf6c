"""A whole search: the ``bnn-tune search`` command, its Ray and Optuna backends, ranking and report.

The top stage of the package: it drives :func:`bnn_tune.trainable` (Ray Tune) or
:func:`bnn_tune.objective` (Optuna) over a space of :mod:`bnn_tune.search_spaces`, prunes with
:mod:`bnn_tune.plugins`, and exports the best trial with :mod:`bnn_tune.export`. Nothing below imports it.

* :mod:`bnn_tune.search.settings`: :class:`SearchSettings`, one validated settings object for both backends.
* :mod:`bnn_tune.search.run`: :func:`run_search` (either backend; the same live view, ranking and files).
* :mod:`bnn_tune.search.cli`: ``bnn-tune search`` (arguments -> settings -> :func:`run_search`).
* :mod:`bnn_tune.search.ray` / :mod:`bnn_tune.search.optuna`: the backends (:func:`run_ray_search`,
  :func:`run_optuna_search`, :func:`make_scheduler`, :func:`make_pruner`).
* :mod:`bnn_tune.search.report`: ``bnn-tune report`` (:func:`write_report`, one HTML page per run).

Importing this package imports neither ray nor optuna.
"""

from __future__ import annotations

from ._storage import make_storage
from .optuna import make_pruner, run_optuna_search
from .ray import run_ray_search
from .run import SearchResult, run_search
from .settings import SearchSettings

__all__ = ["SearchResult", "SearchSettings", "make_pruner", "make_storage", "run_optuna_search", "run_ray_search",
           "run_search"]
