"""Benchmarks of a whole packed model and of a training step (``bnn-tune bench``, ``benchmarks/*.py``).

* :func:`benchmark_model`, :func:`format_table`, :func:`plot_results`, :func:`randomize_model`: the packed kernels
  and the packed model against their float twin, per layer and whole model, on the CPU engine or the CUDA kernels
  (:mod:`bnn_tune.bench._model`, :mod:`bnn_tune.bench._cuda`; CLI ``bnn-tune bench`` in :mod:`bnn_tune.bench.cli`).
* :mod:`bnn_tune.bench.train_step`: a binary training step against its real-valued twin, and trial start-up time
  (``benchmarks/bench_train_step.py``).

This package sits beside :mod:`bnn_tune.export` (it times what export builds; :func:`bnn_tune.export.export_best`
asks it for the exported model's ``bench.json``). ``bnn_tune.export.benchmark_model`` and friends still work:
they are this package's functions.
"""

from __future__ import annotations

from ._model import benchmark_model, format_table, plot_results, randomize_model

__all__ = ["benchmark_model", "format_table", "plot_results", "randomize_model"]
