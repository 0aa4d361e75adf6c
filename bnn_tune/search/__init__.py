"""A whole search: the ``bnn-tune search`` command, its Ray and Optuna backends, ranking and report.

The top stage of the package: it drives :func:`bnn_tune.trainable` (Ray Tune) or
:func:`bnn_tune.objective` (Optuna) over a space of :mod:`search_spaces`, prunes with :mod:`plugins`,
and exports the best trial with :mod:`bnn_tune.export`. Nothing below imports it.

* :mod:`bnn_tune.search.cli`: ``bnn-tune search`` (argument parsing, backend choice, the ranking table).
* :mod:`bnn_tune.search.ray`: the Ray Tune backend (:func:`run_ray_search`).
* :mod:`bnn_tune.search.optuna`: the Optuna backend (:class:`SearchSettings`, :func:`run_optuna_search`,
  :func:`make_storage`, :func:`make_pruner`).
* :mod:`bnn_tune.search.report`: ``bnn-tune report`` (:func:`write_report`, one HTML page per run).

Importing this package imports neither ray nor optuna.
"""

from __future__ import annotations

from .optuna import SearchSettings, make_pruner, make_storage, run_optuna_search
from .ray import run_ray_search

__all__ = ["SearchSettings", "make_pruner", "make_storage", "run_optuna_search", "run_ray_search"]
