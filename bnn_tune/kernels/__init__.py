"""Packed XNOR/AND-popcount kernels: bit packing, the CPU path (numpy) and the CUDA path.

* :func:`pack_bits` / :func:`unpack_bits`: the bit convention of the packed model file.
* :func:`binary_gemm`, :func:`binary_conv2d`: CPU XOR-popcount GEMM and im2col convolution.
* :mod:`bnn_tune.kernels.cuda`: the CUDA kernels (``csrc/*.cu``), built with nvcc on first use when
  a GPU is visible; :mod:`bnn_tune.kernels.mirror`: a numpy mirror of their indexing for CPU tests.
"""

from __future__ import annotations

from ._cpu import binary_conv2d, binary_gemm, im2col_bits, reorder_conv_weight
from ._packing import K_TILE, pack_bits, padded_k, popcount_rows, unpack_bits

__all__ = [
    "K_TILE",
    "binary_conv2d",
    "binary_gemm",
    "im2col_bits",
    "pack_bits",
    "padded_k",
    "popcount_rows",
    "reorder_conv_weight",
    "unpack_bits",
]

from ._bench import benchmark_model, format_table, plot_results, randomize_model  # noqa: E402

__all__ += ["benchmark_model", "format_table", "plot_results", "randomize_model"]
