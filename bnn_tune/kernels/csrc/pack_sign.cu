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

// sign + pack of a float NCHW feature map into packed NHWC words for bnn_bconv, spatial padding included:
// out [N, H + 2 ph, W + 2 pw, Cw], word cw of pixel (n, hp, wp) holds channels 32 cw .. 32 cw + 31
// (bit = x >= 0; padding pixels hold pad_bit for every real channel; bits past C are 0).
// One thread per output word; adjacent threads take adjacent words, then adjacent pixels (so a warp reads
// consecutive w of one channel plane). Grid ceil(total / 256) x 256 threads.
extern "C" __global__ void bnn_pack_nhwc(const float* __restrict__ x, int N, int C, int H, int W, int ph, int pw,
                                         int pad_bit, int Cw, uint32_t* __restrict__ out) {
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    const long long total = (long long)N * Hp * Wp * Cw;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int cw = (int)(idx % Cw);
    long long p = idx / Cw;
    const int wp = (int)(p % Wp);
    p /= Wp;
    const int hp = (int)(p % Hp);
    const int n = (int)(p / Hp);
    const int h = hp - ph, w = wp - pw;
    const bool inside = h >= 0 && h < H && w >= 0 && w < W;
    const int c_end = min(C - cw * 32, 32);
    uint32_t word = 0;
    if (inside) {
        const float* src = x + (((long long)n * C + cw * 32) * H + h) * W + w;
        for (int b = 0; b < c_end; ++b) word |= (uint32_t)(src[(long long)b * H * W] >= 0.0f) << b;
    } else if (pad_bit) {
        word = c_end == 32 ? 0xffffffffu : ((1u << c_end) - 1u);
    }
    out[idx] = word;
}
