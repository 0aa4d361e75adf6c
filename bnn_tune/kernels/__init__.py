"""Packed XNOR/AND-popcount kernels: bit packing, the CPU path (numpy) and the CUDA path.

* :func:`pack_bits` / :func:`unpack_bits`: the bit convention of the packed model file.
* :func:`binary_gemm`, :func:`binary_conv2d`: CPU XOR-popcount GEMM and im2col convolution
  (compiled C kernel ``csrc/bgemm_cpu.c`` when a C compiler is present, numpy otherwise); the
  reference path for the engine.
* :class:`BinaryChain`: the packed CPU inference engine (``csrc/bconv_cpu.c``): bit-packed NHWC
  activations through a chain of direct binary convolutions / linears, thresholds and bit pools, on
  AVX-512 VPOPCNTDQ, AVX2 or portable C (:func:`available_isas`, ``$BNN_TUNE_CPU_ISA``), threaded
  (by default on torch's OpenMP team; ``$BNN_TUNE_CPU_POOL`` picks the engine's own persistent workers or
  per-call pthreads).
* :mod:`bnn_tune.kernels.cuda`: the CUDA kernels (``csrc/*.cu``: batch 1..16 GEMV on CUDA cores,
  tensor-core ``mma ... .b1 .and.popc`` GEMM, sign+pack), compiled with NVRTC (nvcc optional) on first use when a GPU is
  visible; :mod:`bnn_tune.kernels._mirror`: a numpy re-enactment of their indexing for CPU tests.

The lowest layer: imports nothing else of bnn_tune. Whole-model benchmarking (``bnn-tune bench``) lives
above it, in :mod:`bnn_tune.export`.
"""

from __future__ import annotations

from ._cpu import binary_conv2d, binary_gemm, im2col_bits, reorder_conv_weight
from ._engine import BinaryChain, ChainLayer, available_isas, engine_available
from ._packing import K_TILE, pack_bits, padded_k, popcount_rows, unpack_bits

__all__ = [
    "K_TILE",
    "BinaryChain",
    "ChainLayer",
    "available_isas",
    "engine_available",
    "binary_conv2d",
    "binary_gemm",
    "im2col_bits",
    "pack_bits",
    "padded_k",
    "popcount_rows",
    "reorder_conv_weight",
    "unpack_bits",
]
