"""Export: the packed model file (safetensors + JSON header), its loader, and ``export_best``.

* :func:`pack_model` / :func:`save_packed`: a trained zoo model -> :class:`PackedModel` / one
  ``*.bnn.safetensors`` file. Binary weights become ``sign(w)`` bits packed LSB-first into ``uint32``
  words (bit 1 = +1, ``K`` zero-padded to 256 bits), with ``popcount(w)`` per output channel; a
  batch-norm feeding a binary activation folds into an integer threshold per channel (negative-scale
  channels pre-flipped, zero-scale channels constant); first/last layers stay float32. Rules in
  :mod:`bnn_tune.export._pack`, file layout in :mod:`bnn_tune.export._format`.
* :func:`load_packed`: read and verify a file (checksum, format version); never unpickles.
* :class:`PackedModel`: ``logits(x)`` / ``predict(x)`` on the CPU packed kernels, or
  ``device="cuda"`` on the CUDA kernels.
* :func:`benchmark_model`, :func:`format_table`, :func:`plot_results`, :func:`randomize_model`: packed
  kernels vs the float twin, per layer and whole model; they live in :mod:`bnn_tune.bench` (``bnn-tune bench``)
  and are reachable from here, loaded on first use.
* Inside: a model is compiled once into typed ops (:mod:`bnn_tune.export._graph`), and every backend (file
  reader/writer, numpy reference, C engine, CUDA) is a table with one handler per op kind.
* :func:`export_best`: the best trial of a Ray Tune or Optuna search -> ``config.json``,
  ``model.bnn.safetensors``, ``bench.json``, ``bench.png``, ``export.json`` (CLI ``bnn-tune export``).

Example:
    >>> import torch
    >>> from bnn_tune.nn import build_model
    >>> model = build_model("vgg_small", (3, 16, 16), 10, width=0.0625).eval()
    >>> packed = pack_model(model, {"model": "vgg_small", "width": 0.0625}, input_shape=(3, 16, 16))
    >>> x = torch.randn(8, 3, 16, 16)
    >>> bool((packed.predict(x) == model(x).argmax(1).numpy()).all())
    True
"""

from __future__ import annotations

from ._format import FORMAT_VERSION, PackedFormatError
from ._model import PackedModel, load_packed, pack_model, save_packed

__all__ = [
    "FORMAT_VERSION",
    "PackedFormatError",
    "PackedModel",
    "benchmark_model",
    "export_best",
    "format_table",
    "load_packed",
    "pack_model",
    "plot_results",
    "randomize_model",
    "save_packed",
]


_BENCH = ("benchmark_model", "format_table", "plot_results", "randomize_model")


def __getattr__(name: str):
    if name == "export_best":
        from ._best import export_best

        return export_best
    if name in _BENCH:
        from ..bench import _model

        return getattr(_model, name)
    raise AttributeError(f"module 'bnn_tune.export' has no attribute {name!r}")
