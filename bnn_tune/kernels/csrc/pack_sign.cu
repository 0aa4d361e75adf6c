// sign + pack: float activations [B, K] (row stride ldx) -> packed words [B, Wd] and popc(a) [B].
//
// One warp per 32-element word: lane l reads x[32 w + l] (coalesced 128 B), __ballot_sync turns
// the 32 predicates (x >= 0, i.e. sign(0) = +1; 0 beyond K) into one word whose bit l is lane l's
// bit: exactly the LSB-first convention. Lane 0 writes the word and adds its popcount to pa[b]
// (pa is zeroed by the caller on the same stream). Grid (B, ceil(Wd / 8)), 256 threads.
#include "bnn_common.cuh"

extern "C" __global__ void bnn_pack_sign(const float* __restrict__ x, long long ldx, int B, int K, int Wd,
                                         uint32_t* __restrict__ out, int32_t* __restrict__ pa) {
    const int lane = threadIdx.x & 31;
    const int warps_per_block = blockDim.x >> 5;
    const long long word = (long long)blockIdx.y * warps_per_block + (threadIdx.x >> 5);
    const int b = blockIdx.x;  // rows on x (up to 2^31 - 1: batch x pixels after im2col)
    if (b >= B || word >= Wd) return;  // whole warp exits together
    const long long k = word * 32 + lane;
    const bool bit = (k < K) && (x[(long long)b * ldx + k] >= 0.0f);
    const uint32_t w = __ballot_sync(0xffffffffu, bit);
    if (lane == 0) {
        out[(long long)b * Wd + word] = w;
        if (pa != nullptr) atomicAdd(pa + b, __popc(w));
    }
}
