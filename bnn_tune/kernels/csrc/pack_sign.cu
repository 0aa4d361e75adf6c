// sign + pack: float activations [B, K] (row stride ldx) -> packed words [B, Wd] and popc(a) [B].
//
// One warp per 32-element word: lane l reads x[32 w + l] (coalesced 128 B), __ballot_sync turns
// the 32 predicates (x >= 0, i.e. sign(0) = +1; 0 beyond K) into one word whose bit l is lane l's
// bit: exactly the LSB-first convention. Lane 0 writes the word and adds its popcount to pa[b].
#include "bnn_common.cuh"

__global__ void bnn_pack_sign_kernel(const float* __restrict__ x, int ldx, int B, int K, int Wd,
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

extern "C" int bnn_pack_sign(const float* x, int ldx, int B, int K, int Wd, uint32_t* out, int32_t* pa,
                             cudaStream_t stream) {
    if (B < 1 || K < 1 || Wd * 32 < K || ldx < K || (Wd + 7) / 8 > 65535) return BNN_EBADARG;
    if (pa != nullptr) cudaMemsetAsync(pa, 0, sizeof(int32_t) * B, stream);
    const int threads = 256;
    dim3 grid(B, (Wd + threads / 32 - 1) / (threads / 32));
    bnn_pack_sign_kernel<<<grid, threads, 0, stream>>>(x, ldx, B, K, Wd, out, pa);
    return cudaGetLastError() == cudaSuccess ? BNN_OK : BNN_ELAUNCH;
}
