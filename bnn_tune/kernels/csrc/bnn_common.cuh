// Shared definitions of the bnn-tune CUDA kernels.
//
// Bit convention (same as the packed model file, bnn_tune/kernels/_packing.py): a +-1 vector of
// length K is stored as Wd = ceil(K / 256) * 8 little-endian uint32 words, element k in bit k % 32
// (LSB first) of word k / 32, bit 1 = +1, padding bits 0 in both operands. Then
//   dot(a, w) = K - 2 popc(a ^ w) = K - 2 popc(a) - 2 popc(w) + 4 popc(a & w).
//
// The sources hold only `extern "C" __global__` kernels (no host code): they are compiled to a cubin
// per architecture by NVRTC (or nvcc -cubin) and launched through the driver API
// (bnn_tune/kernels/_nvrtc.py), where the launch configuration and argument checks live.
#pragma once
#ifdef __CUDACC_RTC__  // NVRTC has no standard headers
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned char uint8_t;
#else
#include <cstdint>
#endif

#define BNN_K_TILE_BITS 256
#define BNN_K_TILE_WORDS 8

__device__ __forceinline__ int bnn_warp_sum(int v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ int bnn_popc4(uint4 a, uint4 b) {
    return __popc(a.x ^ b.x) + __popc(a.y ^ b.y) + __popc(a.z ^ b.z) + __popc(a.w ^ b.w);
}

// 16-byte asynchronous global -> shared copy (sm_80+); src_bytes = 0 zero-fills the destination
// without reading global memory (out-of-range rows and words).
__device__ __forceinline__ void bnn_cp_async16(void* smem, const void* gmem, int src_bytes) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void bnn_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void bnn_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
