// Batch 1..16 binary GEMV/GEMM on CUDA cores (memory-bound: the packed weights are the traffic).
//
//   y[b, o] = K - 2 popc(a[b] ^ w[o])            (int32 output), or
//   bit[b, o] = y[b, o] >= thr[o]                  (threshold output, packed for the next layer)
//
// Layout: weights w [O, Wd] uint32 (Wd % 8 == 0, rows 16-byte aligned), activations either packed
// a [B, Wd] or float x [B, ldx] that the block signs and packs into shared memory itself (fused
// sign+pack, one __ballot_sync per word).
//
// Built for bandwidth: a block of 4 warps owns only 8 output rows (one output byte), so a
// 4096-row layer launches 512 blocks (several per SM on a 132-SM H100/H200) and a 16384-row one
// 2048. Warp w owns rows tile*8 + 2w, +1. Lane l reads uint4 (16-byte) vectors q = l + 32 u,
// u < GEMV_UNROLL, of both rows: 2 x 4 independent 16-byte loads in flight per lane, issued at the
// top of the kernel before the shared-memory barrier of the fused sign+pack (and, with the
// thresholds, before any other memory traffic); the loop is software-pipelined (the next chunk's
// loads are issued before the current chunk's popcounts). Packed activations are read straight
// from global memory (the same few KiB for every warp: L1 hits), so that path has no barrier at all.
// Per-lane XOR-popcounts are summed with a butterfly shuffle.
// Threshold output: the 8 row bits of a block form byte `tile` of the next layer's packed
// activations (little-endian words, so byte t holds rows 8t..8t+7: bit k of word k / 32); rows >= O
// give 0, so the next layer's zero padding comes for free when the grid covers its 4 * Wd_next bytes.
#include "bnn_common.cuh"

#define GEMV_WARPS 4
#define GEMV_ROWS_PER_WARP 2
#define GEMV_TILE_ROWS (GEMV_WARPS * GEMV_ROWS_PER_WARP)  // 8 = one output byte
#define GEMV_UNROLL 4
#define GEMV_MAX_B 16

template <int R>
__device__ __forceinline__ void gemv_load(uint4 (&v)[R][GEMV_UNROLL], const uint32_t* __restrict__ w, int o0,
                                          int O, int Wd, int Wq, int q0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const uint4* row = reinterpret_cast<const uint4*>(w + (long long)(o0 + r) * Wd);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
            const int q = q0 + u * 32;
            v[r][u] = (o0 + r < O && q < Wq) ? __ldg(row + q) : make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

template <int BMAX, bool FUSED>
__device__ __forceinline__ void gemv_body(const float* __restrict__ x, long long ldx, const uint32_t* __restrict__ a,
                                          const uint32_t* __restrict__ w, int O, int K, int Wd, int B,
                                          const int32_t* __restrict__ thr, int32_t* __restrict__ y,
                                          uint8_t* __restrict__ out_bytes, int out_ld_bytes) {
    extern __shared__ uint4 a_s4[];  // fused sign+pack: [B][Wq] packed activations
    __shared__ uint8_t bits_s[BMAX][GEMV_TILE_ROWS];
    constexpr int R = GEMV_ROWS_PER_WARP;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int tile = blockIdx.x;
    const int Wq = Wd >> 2;  // uint4 per row
    const int o0 = tile * GEMV_TILE_ROWS + warp * R;
    // 1. first chunk of weights and the thresholds: in flight before anything else
    uint4 cur[R][GEMV_UNROLL];
    gemv_load<R>(cur, w, o0, O, Wd, Wq, lane);
    int t[R];
#pragma unroll
    for (int r = 0; r < R; ++r) t[r] = (out_bytes != nullptr && o0 + r < O) ? __ldg(thr + o0 + r) : 0;
    // 2. fused sign+pack of the float input into shared memory (the only barrier before the epilogue)
    if (FUSED) {
        uint32_t* a_s = reinterpret_cast<uint32_t*>(a_s4);
        for (int b = 0; b < B; ++b) {
            const float* xb = x + (long long)b * ldx;
            for (int word = warp; word < Wd; word += GEMV_WARPS) {
                const int k = word * 32 + lane;
                const bool bit = (k < K) && (__ldg(xb + k) >= 0.0f);
                const uint32_t v = __ballot_sync(0xffffffffu, bit);
                if (lane == 0) a_s[b * Wd + word] = v;
            }
        }
        __syncthreads();
    }
    const uint4* a4 = reinterpret_cast<const uint4*>(a);
    int acc[R][BMAX];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int b = 0; b < BMAX; ++b) acc[r][b] = 0;
    // 3. software-pipelined main loop
    for (int q0 = lane; q0 < Wq; q0 += 32 * GEMV_UNROLL) {
        uint4 nxt[R][GEMV_UNROLL];
        gemv_load<R>(nxt, w, o0, O, Wd, Wq, q0 + 32 * GEMV_UNROLL);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
            const int q = q0 + u * 32;
            if (q < Wq) {
#pragma unroll
                for (int b = 0; b < BMAX; ++b) {
                    if (b < B) {
                        const uint4 av = FUSED ? a_s4[b * Wq + q] : __ldg(a4 + (long long)b * Wq + q);
#pragma unroll
                        for (int r = 0; r < R; ++r) acc[r][b] += bnn_popc4(av, cur[r][u]);
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; ++u) cur[r][u] = nxt[r][u];
    }
    // 4. epilogue
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int o = o0 + r;
#pragma unroll
        for (int b = 0; b < BMAX; ++b) {
            if (b < B) {
                const int dot = K - 2 * bnn_warp_sum(acc[r][b]);
                if (lane == 0) {
                    if (out_bytes != nullptr) {
                        bits_s[b][warp * R + r] = (o < O && dot >= t[r]) ? 1 : 0;
                    } else if (o < O) {
                        y[(long long)b * O + o] = dot;
                    }
                }
            }
        }
    }
    if (out_bytes != nullptr) {  // 8 row bits -> one byte of the next layer's packed activations
        __syncthreads();
        if (threadIdx.x < B) {
            uint32_t byte = 0;
#pragma unroll
            for (int i = 0; i < GEMV_TILE_ROWS; ++i) byte |= (uint32_t)bits_s[threadIdx.x][i] << i;
            out_bytes[(long long)threadIdx.x * out_ld_bytes + tile] = (uint8_t)byte;
        }
    }
}

// Entry points, one per (batch bound, input kind). Launch: grid = ceil(O / 8) blocks (int32 output)
// or 4 * out_words blocks (threshold output), GEMV_WARPS * 32 threads, dynamic shared memory
// B * Wd * 4 bytes for the fused kernels (0 for the packed ones). Exactly one of y / out_bytes is set.
// __launch_bounds__(128, 4): <= 128 registers, so >= 4 blocks (16 warps of loads) share an SM (and ptxas
// does not pick a low register target that spills, as it did for the b4 kernel on sm_80).
#define BNN_GEMV_ENTRY(NAME, BMAX, FUSED)                                                                        \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32, 4)                                              \
    NAME(const float* __restrict__ x, long long ldx, const uint32_t* __restrict__ a,                               \
         const uint32_t* __restrict__ w, int O, int K, int Wd, int B, const int32_t* __restrict__ thr,            \
         int32_t* __restrict__ y, uint8_t* __restrict__ out_bytes, int out_ld_bytes) {                            \
        gemv_body<BMAX, FUSED>(x, ldx, a, w, O, K, Wd, B, thr, y, out_bytes, out_ld_bytes);                      \
    }

BNN_GEMV_ENTRY(bnn_gemv_b1_packed, 1, false)
BNN_GEMV_ENTRY(bnn_gemv_b4_packed, 4, false)
BNN_GEMV_ENTRY(bnn_gemv_b16_packed, 16, false)
BNN_GEMV_ENTRY(bnn_gemv_b1_fused, 1, true)
BNN_GEMV_ENTRY(bnn_gemv_b4_fused, 4, true)
BNN_GEMV_ENTRY(bnn_gemv_b16_fused, 16, true)
