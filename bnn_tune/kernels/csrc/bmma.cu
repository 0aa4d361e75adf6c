// Large-batch binary GEMM on tensor cores: mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc
//
//   C[m, n] = K - 2 popc(a[m]) - 2 popc(w[n]) + 4 popc(a[m] & w[n])
//
// (AND+POPC is native on sm_80/sm_90; XOR+POPC is emulated on sm_90, so the AND form is used and
// the per-row/per-channel popcounts pa[M] (from bnn_pack_sign) and pw[N] (stored in the model file)
// turn it into the +-1 dot product.) A = packed activations [M, Wd] (M = batch x output pixels for a
// convolution), W = packed weights [N, Wd], Wd % 8 == 0 (256-bit K tile), zero padding.
//
// Tiling: block 64 (M) x 128 (N) outputs, 8 warps in 2 x 4, warp tile 32 x 32 = 2 m16 tiles x 4 n8
// tiles. K advances by 512 bits (16 words) per stage through a BMMA_STAGES-deep cp.async pipeline
// (multi-buffered shared memory: stages s+1 .. s+STAGES-1 are in flight while stage s feeds the tensor
// cores; 16-byte copies zero-filled beyond M, N, Wd). Shared rows are padded to 20 words so the fragment
// loads below hit 32 distinct banks. Fragments (PTX ISA, m16n8k256 .b1; group = lane / 4,
// tid = lane % 4, 8 words per 256-bit row):  a0 = A[group][tid], a1 = A[group + 8][tid],
// a2 = A[group][tid + 4], a3 = A[group + 8][tid + 4];  b0 = W[group][tid], b1 = W[group][tid + 4];
// c0 = C[group][2 tid], c1 = C[group][2 tid + 1], c2 = C[group + 8][2 tid], c3 = C[group + 8][2 tid + 1].
// Launch: grid (ceil(N / 128), ceil(M / 64)), 256 threads, static shared memory (45 KiB).
//
// bnn_bconv: the same GEMM as a bit-packed implicit-GEMM convolution (no im2col matrix in memory, no
// fp32 anywhere). A row m = (image, oh, ow) of the virtual im2col matrix is gathered by the stage loader
// straight from packed NHWC activations act [N, Hp, Wp, Cw] (spatial padding already in them,
// bnn_pack_nhwc) with 4-byte cp.async copies: K word kw = tap * Cw + cw, tap = i * KW + j, reads
// act[image, oh * sh + i, ow * sw + j, cw]; words past taps * Cw are zero-filled. The weights use the same
// tap-aligned K layout (each tap's channels start on a word). popc(a[m]) is summed by the thread that
// copied the words, so no separate pass over the activations is needed. Output C [M, N] = NHWC int32.
#include "bnn_common.cuh"

#define BM 64
#define BN 128
#define BMMA_THREADS 256
#define STAGE_WORDS 16
#define SROW 20  // padded shared row (words)
#define BMMA_STAGES 3

__device__ __forceinline__ void bmma_and_popc(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// One stage: A tile 64 rows x 4 uint4 (1 copy per thread), W tile 128 rows x 4 uint4 (2 per thread).
__device__ __forceinline__ void bmma_load_stage(uint32_t* As, uint32_t* Ws, const uint32_t* __restrict__ A,
                                                const uint32_t* __restrict__ W, int M, int N, int Wd, int m0,
                                                int n0, int k0) {
    if (As != nullptr) {
        const int row = threadIdx.x >> 2, q = threadIdx.x & 3;
        const int word = k0 + q * 4;
        const bool ok = m0 + row < M && word < Wd;
        bnn_cp_async16(As + row * SROW + q * 4, ok ? A + (long long)(m0 + row) * Wd + word : A, ok ? 16 : 0);
    }
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        const int idx = threadIdx.x + t * BMMA_THREADS;
        const int row = idx >> 2, q = idx & 3;
        const int word = k0 + q * 4;
        const bool ok = n0 + row < N && word < Wd;
        bnn_cp_async16(Ws + row * SROW + q * 4, ok ? W + (long long)(n0 + row) * Wd + word : W, ok ? 16 : 0);
    }
}

// Gather loader of bnn_bconv: this thread's 4 consecutive K words of its A row, 4-byte copies.
struct BconvGeom {
    const uint32_t* row;  // act + offset of (image, oh * sh, ow * sw, 0); act itself for rows >= M
    bool valid;           // row < M
    int Wp, Cw, KW, taps;
};

__device__ __forceinline__ void bconv_load_a(uint32_t* As, const BconvGeom& g, int k0) {
    const int row = threadIdx.x >> 2, q = threadIdx.x & 3;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const int kw = k0 + q * 4 + e;
        const int tap = kw / g.Cw, cw = kw - tap * g.Cw;
        const int i = tap / g.KW, j = tap - i * g.KW;
        const bool ok = g.valid && tap < g.taps;
        const uint32_t* src = ok ? g.row + ((long long)i * g.Wp + j) * g.Cw + cw : nullptr;
        const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(As + row * SROW + q * 4 + e));
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(ok ? src : g.row), "r"(ok ? 4 : 0));
    }
}

template <bool CONV>
__device__ __forceinline__ void bmma_body(const uint32_t* __restrict__ A, const BconvGeom& geom,
                                          const uint32_t* __restrict__ W, int M, int N, int K, int Wd,
                                          const int32_t* __restrict__ pa, const int32_t* __restrict__ pw,
                                          int32_t* __restrict__ C) {
    __shared__ __align__(16) uint32_t As[BMMA_STAGES][BM * SROW];
    __shared__ __align__(16) uint32_t Ws[BMMA_STAGES][BN * SROW];
    __shared__ int pa_s[BM];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp >> 2, wn = warp & 3;
    const int group = lane >> 2, tid = lane & 3;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int nk = (Wd + STAGE_WORDS - 1) / STAGE_WORDS;
    int acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0;
    int my_pop = 0;  // CONV: popcount of the A words this thread copied (its row, words q*4..q*4+3 per stage)
    // prologue: stages 0 .. STAGES-2 in flight (one commit group each, empty past the end)
#pragma unroll
    for (int s = 0; s < BMMA_STAGES - 1; ++s) {
        if (s < nk) {
            if (CONV) {
                bconv_load_a(As[s], geom, s * STAGE_WORDS);
                bmma_load_stage(nullptr, Ws[s], nullptr, W, M, N, Wd, m0, n0, s * STAGE_WORDS);
            } else {
                bmma_load_stage(As[s], Ws[s], A, W, M, N, Wd, m0, n0, s * STAGE_WORDS);
            }
        }
        bnn_cp_async_commit();
    }
    for (int kt = 0; kt < nk; ++kt) {
        bnn_cp_async_wait<BMMA_STAGES - 2>();  // stage kt has landed (for this thread) ...
        __syncthreads();                        // ... and for all; buffer (kt - 1) % STAGES is free again
        const int pre = kt + BMMA_STAGES - 1;
        if (pre < nk) {
            const int buf = pre % BMMA_STAGES;
            if (CONV) {
                bconv_load_a(As[buf], geom, pre * STAGE_WORDS);
                bmma_load_stage(nullptr, Ws[buf], nullptr, W, M, N, Wd, m0, n0, pre * STAGE_WORDS);
            } else {
                bmma_load_stage(As[buf], Ws[buf], A, W, M, N, Wd, m0, n0, pre * STAGE_WORDS);
            }
        }
        bnn_cp_async_commit();
        const uint32_t* as = As[kt % BMMA_STAGES];
        const uint32_t* ws = Ws[kt % BMMA_STAGES];
        if (CONV) {
            const uint4 mine = *reinterpret_cast<const uint4*>(as + (threadIdx.x >> 2) * SROW + (threadIdx.x & 3) * 4);
            my_pop += __popc(mine.x) + __popc(mine.y) + __popc(mine.z) + __popc(mine.w);
        }
#pragma unroll
        for (int kc = 0; kc < STAGE_WORDS; kc += BNN_K_TILE_WORDS) {
            uint32_t af[2][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const uint32_t* base = as + (wm * 32 + i * 16) * SROW + kc;
                af[i][0] = base[group * SROW + tid];
                af[i][1] = base[(group + 8) * SROW + tid];
                af[i][2] = base[group * SROW + tid + 4];
                af[i][3] = base[(group + 8) * SROW + tid + 4];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const uint32_t* base = ws + (wn * 32 + j * 8) * SROW + kc;
                bf[j][0] = base[group * SROW + tid];
                bf[j][1] = base[group * SROW + tid + 4];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    bmma_and_popc(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
        }
    }
    bnn_cp_async_wait<0>();
    if (CONV) {  // the 4 copying threads of a row are lanes 4r..4r+3 of one warp
        my_pop += __shfl_xor_sync(0xffffffffu, my_pop, 1);
        my_pop += __shfl_xor_sync(0xffffffffu, my_pop, 2);
        if ((threadIdx.x & 3) == 0) pa_s[threadIdx.x >> 2] = my_pop;
        __syncthreads();
    }
    // epilogue: +-1 dot product from the AND counts
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int lb = wm * 32 + i * 16 + group;  // local row
        const int mb = m0 + lb;
        int pa0, pa1;
        if (CONV) {
            pa0 = pa_s[lb];
            pa1 = pa_s[lb + 8];
        } else {
            pa0 = mb < M ? pa[mb] : 0;
            pa1 = mb + 8 < M ? pa[mb + 8] : 0;
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int m = mb + (r >= 2 ? 8 : 0);
                const int n = n0 + wn * 32 + j * 8 + 2 * tid + (r & 1);
                if (m < M && n < N) C[(long long)m * N + n] = K - 2 * (r >= 2 ? pa1 : pa0) - 2 * pw[n] + 4 * acc[i][j][r];
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(BMMA_THREADS)
bnn_bmma(const uint32_t* __restrict__ A, const uint32_t* __restrict__ W, int M, int N, int K, int Wd,
         const int32_t* __restrict__ pa, const int32_t* __restrict__ pw, int32_t* __restrict__ C) {
    const BconvGeom none{A, false, 0, 1, 1, 0};
    bmma_body<false>(A, none, W, M, N, K, Wd, pa, pw, C);
}

// act [Nimg, Hp, Wp, Cw] packed NHWC (padded), W [N, Wd] tap-aligned weights, C [M = Nimg * Ho * Wo, N].
// K = the real +-1 length KH * KW * channels (padding bits are 0 on both sides).
extern "C" __global__ void __launch_bounds__(BMMA_THREADS)
bnn_bconv(const uint32_t* __restrict__ act, const uint32_t* __restrict__ W, int M, int N, int K, int Wd,
          int Hp, int Wp, int Cw, int KW, int taps, int Ho, int Wo, int sh, int sw,
          const int32_t* __restrict__ pw, int32_t* __restrict__ C) {
    const int m = blockIdx.y * BM + (threadIdx.x >> 2);  // the A row this thread gathers
    BconvGeom g{act, m < M, Wp, Cw, KW, taps};
    if (m < M) {
        const int img = m / (Ho * Wo), rem = m - img * (Ho * Wo);
        const int oh = rem / Wo, ow = rem - oh * Wo;
        g.row = act + (((long long)img * Hp + (long long)oh * sh) * Wp + (long long)ow * sw) * Cw;
    }
    bmma_body<true>(nullptr, g, W, M, N, K, Wd, nullptr, pw, C);
}
