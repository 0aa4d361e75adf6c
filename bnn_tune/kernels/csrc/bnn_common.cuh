// Shared definitions of the bnn-tune CUDA kernels.
//
// Bit convention (same as the packed model file, bnn_tune/kernels/_packing.py): a +-1 vector of
// length K is stored as Wd = ceil(K / 256) * 8 little-endian uint32 words, element k in bit k % 32
// (LSB first) of word k / 32, bit 1 = +1, padding bits 0 in both operands. Then
//   dot(a, w) = K - 2 popc(a ^ w) = K - 2 popc(a) - 2 popc(w) + 4 popc(a & w).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

#define BNN_K_TILE_BITS 256
#define BNN_K_TILE_WORDS 8

// Error codes returned by the extern "C" launchers (0 = launched).
#define BNN_OK 0
#define BNN_EBADARG 1
#define BNN_ESMEM 2
#define BNN_ELAUNCH 3

__device__ __forceinline__ int bnn_warp_sum(int v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
