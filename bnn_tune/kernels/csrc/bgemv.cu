// Batch 1..16 binary GEMV/GEMM on CUDA cores (memory-bound: the packed weights are the traffic).
//
//   y[b, o] = K - 2 popc(a[b] ^ w[o])            (int32 output), or
//   bit[b, o] = y[b, o] >= thr[o]                  (threshold output, packed for the next layer)
//
// Layout: weights w [O, Wd] uint32 (Wd % 8 == 0, rows 16-byte aligned), activations either packed
// a [B, Wd] or float x [B, ldx] that the block signs and packs into shared memory itself (fused
// sign+pack, one __ballot_sync per word). A block of 8 warps owns a tile of 32 output rows; warp w
// owns rows tile*32 + w*4 .. +3. For each row the 32 lanes read the row as uint4 (16-byte)
// vectors q = lane, lane+32, ...: a warp reads 512 contiguous bytes per step (coalesced).
// Per-lane XOR-popcounts are summed with a butterfly shuffle; lane 0 holds y.
// Threshold output: the 32 bits of a tile (one per row) form word `tile` of the next layer's
// packed activations: rows >= O give 0, so the next layer's zero padding comes for free when the
// grid covers its Wd_next words.
#include "bnn_common.cuh"

#define GEMV_WARPS 8
#define GEMV_ROWS_PER_WARP 4
#define GEMV_TILE_ROWS (GEMV_WARPS * GEMV_ROWS_PER_WARP)  // 32 = one output word
#define GEMV_MAX_B 16

template <int BMAX, bool FUSED_SIGN>
__global__ void __launch_bounds__(GEMV_WARPS * 32, 1)
bnn_gemv_kernel(const float* __restrict__ x, int ldx, const uint32_t* __restrict__ a,
                const uint32_t* __restrict__ w, int O, int K, int Wd, int B,
                const int32_t* __restrict__ thr, int32_t* __restrict__ y,
                uint32_t* __restrict__ out_bits, int out_ld) {
    extern __shared__ uint32_t a_s[];  // [B][Wd] packed activations
    __shared__ uint32_t bits_s[BMAX][GEMV_TILE_ROWS];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    // 1. activations -> shared memory (fused sign+pack, or a copy of packed words)
    if (FUSED_SIGN) {
        for (int b = 0; b < B; ++b) {
            const float* xb = x + (long long)b * ldx;
            for (int word = warp; word < Wd; word += GEMV_WARPS) {
                const int k = word * 32 + lane;
                const bool bit = (k < K) && (__ldg(xb + k) >= 0.0f);
                const uint32_t v = __ballot_sync(0xffffffffu, bit);
                if (lane == 0) a_s[b * Wd + word] = v;
            }
        }
    } else {
        const uint4* a4 = reinterpret_cast<const uint4*>(a);
        uint4* s4 = reinterpret_cast<uint4*>(a_s);
        for (int i = threadIdx.x; i < B * Wd / 4; i += blockDim.x) s4[i] = a4[i];
    }
    __syncthreads();
    // 2. rows of this warp: the ROWS_PER_WARP weight vectors are loaded together (4 independent
    //    16-byte loads in flight per lane), then XOR-popcounted against every batch row.
    const int tile = blockIdx.x;
    const int Wq = Wd >> 2;  // uint4 per row
    const uint4* as4 = reinterpret_cast<const uint4*>(a_s);
    const int o0 = tile * GEMV_TILE_ROWS + warp * GEMV_ROWS_PER_WARP;
    int acc[GEMV_ROWS_PER_WARP][BMAX];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS_PER_WARP; ++r)
#pragma unroll
        for (int b = 0; b < BMAX; ++b) acc[r][b] = 0;
    for (int q = lane; q < Wq; q += 32) {
        uint4 wv[GEMV_ROWS_PER_WARP];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS_PER_WARP; ++r)
            wv[r] = (o0 + r < O) ? __ldg(reinterpret_cast<const uint4*>(w + (long long)(o0 + r) * Wd) + q)
                                 : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int b = 0; b < BMAX; ++b) {
            if (b < B) {
                const uint4 av = as4[b * Wq + q];
#pragma unroll
                for (int r = 0; r < GEMV_ROWS_PER_WARP; ++r)
                    acc[r][b] += __popc(av.x ^ wv[r].x) + __popc(av.y ^ wv[r].y) + __popc(av.z ^ wv[r].z) +
                                 __popc(av.w ^ wv[r].w);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS_PER_WARP; ++r) {
        const int row_in_tile = warp * GEMV_ROWS_PER_WARP + r;
        const int o = o0 + r;
#pragma unroll
        for (int b = 0; b < BMAX; ++b) {
            if (b < B) {
                const int pc = bnn_warp_sum(acc[r][b]);
                const int dot = K - 2 * pc;
                if (lane == 0) {
                    if (out_bits != nullptr) {
                        bits_s[b][row_in_tile] = (o < O && dot >= thr[o]) ? 1u : 0u;
                    } else if (o < O) {
                        y[(long long)b * O + o] = dot;
                    }
                }
            }
        }
    }
    // 3. threshold output: 32 row bits -> one packed word per batch row
    if (out_bits != nullptr) {
        __syncthreads();
        if (threadIdx.x < B) {
            uint32_t word = 0;
#pragma unroll
            for (int i = 0; i < GEMV_TILE_ROWS; ++i) word |= bits_s[threadIdx.x][i] << i;
            out_bits[(long long)threadIdx.x * out_ld + tile] = word;
        }
    }
}

template <int BMAX, bool FUSED>
static int launch(const float* x, int ldx, const uint32_t* a, const uint32_t* w, int O, int K, int Wd, int B,
                  const int32_t* thr, int32_t* y, uint32_t* out_bits, int out_ld, cudaStream_t stream) {
    const size_t smem = sizeof(uint32_t) * (size_t)B * Wd;
    if (smem > 48 * 1024) {
        if (smem > 200 * 1024) return BNN_ESMEM;
        if (cudaFuncSetAttribute(bnn_gemv_kernel<BMAX, FUSED>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)smem) != cudaSuccess)
            return BNN_ESMEM;
    }
    // threshold output covers the next layer's padded words (out_ld); int32 output covers O rows
    const int tiles = out_bits != nullptr ? out_ld : (O + GEMV_TILE_ROWS - 1) / GEMV_TILE_ROWS;
    bnn_gemv_kernel<BMAX, FUSED><<<tiles, GEMV_WARPS * 32, smem, stream>>>(x, ldx, a, w, O, K, Wd, B, thr, y,
                                                                         out_bits, out_ld);
    return cudaGetLastError() == cudaSuccess ? BNN_OK : BNN_ELAUNCH;
}

// x (float [B, ldx], fused sign+pack) or a (packed [B, Wd]) must be given, not both.
// out_bits != nullptr: threshold output into out_bits [B, out_ld] (out_ld = next layer's Wd, >= ceil(O/32)),
// else int32 y [B, O].
extern "C" int bnn_gemv(const float* x, int ldx, const uint32_t* a, const uint32_t* w, int O, int K, int Wd,
                        int B, const int32_t* thr, int32_t* y, uint32_t* out_bits, int out_ld,
                        cudaStream_t stream) {
    if ((x == nullptr) == (a == nullptr) || O < 1 || K < 1 || B < 1 || B > GEMV_MAX_B || Wd % 8 != 0 ||
        Wd * 32 < K || (x != nullptr && ldx < K))
        return BNN_EBADARG;
    if (out_bits != nullptr && (thr == nullptr || out_ld * 32 < O)) return BNN_EBADARG;
    if (out_bits == nullptr && y == nullptr) return BNN_EBADARG;
    const bool fused = x != nullptr;
    if (B <= 1) return fused ? launch<1, true>(x, ldx, a, w, O, K, Wd, B, thr, y, out_bits, out_ld, stream)
                             : launch<1, false>(x, ldx, a, w, O, K, Wd, B, thr, y, out_bits, out_ld, stream);
    if (B <= 4) return fused ? launch<4, true>(x, ldx, a, w, O, K, Wd, B, thr, y, out_bits, out_ld, stream)
                             : launch<4, false>(x, ldx, a, w, O, K, Wd, B, thr, y, out_bits, out_ld, stream);
    return fused ? launch<16, true>(x, ldx, a, w, O, K, Wd, B, thr, y, out_bits, out_ld, stream)
                 : launch<16, false>(x, ldx, a, w, O, K, Wd, B, thr, y, out_bits, out_ld, stream);
}
