// Large-batch binary GEMM on tensor cores: mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc
//
//   C[m, n] = K - 2 popc(a[m]) - 2 popc(w[n]) + 4 popc(a[m] & w[n])
//
// (AND+POPC is native on sm_80/sm_90; XOR+POPC is emulated on sm_90, so the AND form is used and
// the per-row/per-channel popcounts pa[M] (from bnn_pack_sign) and pw[N] (stored in the model file)
// turn it into the +-1 dot product.) A = packed activations [M, Wd] (M = batch x output pixels for a
// convolution after im2col), W = packed weights [N, Wd], Wd % 8 == 0 (256-bit K tile), zero padding.
//
// Tiling: block 64 x 64 outputs, 4 warps in 2 x 2, warp tile 32 x 32 = 2 m16 tiles x 4 n8 tiles.
// K advances by 512 bits (16 words) per stage: A and W tiles are copied to shared memory with 16-byte
// loads (zero-filled beyond M, N, Wd), rows padded to 20 words so the fragment loads below hit 32
// distinct banks. Fragments (PTX ISA, m16n8k256 .b1; group = lane / 4, tid = lane % 4, 8 words per
// 256-bit row):  a0 = A[group][tid], a1 = A[group + 8][tid], a2 = A[group][tid + 4],
// a3 = A[group + 8][tid + 4];  b0 = W[group][tid], b1 = W[group][tid + 4];
// c0 = C[group][2 tid], c1 = C[group][2 tid + 1], c2 = C[group + 8][2 tid], c3 = C[group + 8][2 tid + 1].
#include "bnn_common.cuh"

#define BM 64
#define BN 64
#define STAGE_WORDS 16
#define SROW 20  // padded shared row (words)

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

__global__ void __launch_bounds__(128)
bnn_bmma_kernel(const uint32_t* __restrict__ A, const uint32_t* __restrict__ W, int M, int N, int K, int Wd,
                const int32_t* __restrict__ pa, const int32_t* __restrict__ pw, int32_t* __restrict__ C) {
    __shared__ __align__(16) uint32_t As[BM * SROW];
    __shared__ __align__(16) uint32_t Ws[BN * SROW];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int group = lane >> 2, tid = lane & 3;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    int acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0;

    for (int k0 = 0; k0 < Wd; k0 += STAGE_WORDS) {
        // 64 rows x 4 uint4 per tile = 256 uint4, 2 per thread, for A and W each
#pragma unroll
        for (int t = 0; t < 2; ++t) {
            const int idx = threadIdx.x + t * 128;
            const int row = idx >> 2, q = idx & 3;
            const int word = k0 + q * 4;
            uint4 av = make_uint4(0u, 0u, 0u, 0u), wv = make_uint4(0u, 0u, 0u, 0u);
            if (m0 + row < M && word < Wd) av = __ldg(reinterpret_cast<const uint4*>(A + (long long)(m0 + row) * Wd + word));
            if (n0 + row < N && word < Wd) wv = __ldg(reinterpret_cast<const uint4*>(W + (long long)(n0 + row) * Wd + word));
            *reinterpret_cast<uint4*>(As + row * SROW + q * 4) = av;
            *reinterpret_cast<uint4*>(Ws + row * SROW + q * 4) = wv;
        }
        __syncthreads();
#pragma unroll
        for (int kc = 0; kc < STAGE_WORDS; kc += BNN_K_TILE_WORDS) {
            uint32_t af[2][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const uint32_t* base = As + (wm * 32 + i * 16) * SROW + kc;
                af[i][0] = base[group * SROW + tid];
                af[i][1] = base[(group + 8) * SROW + tid];
                af[i][2] = base[group * SROW + tid + 4];
                af[i][3] = base[(group + 8) * SROW + tid + 4];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const uint32_t* base = Ws + (wn * 32 + j * 8) * SROW + kc;
                bf[j][0] = base[group * SROW + tid];
                bf[j][1] = base[group * SROW + tid + 4];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    bmma_and_popc(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
        }
        __syncthreads();
    }
    // epilogue: +-1 dot product from the AND counts
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int m = m0 + wm * 32 + i * 16 + group + (r >= 2 ? 8 : 0);
                const int n = n0 + wn * 32 + j * 8 + 2 * tid + (r & 1);
                if (m < M && n < N) C[(long long)m * N + n] = K - 2 * pa[m] - 2 * pw[n] + 4 * acc[i][j][r];
            }
        }
    }
}

extern "C" int bnn_bmma(const uint32_t* A, const uint32_t* W, int M, int N, int K, int Wd, const int32_t* pa,
                        const int32_t* pw, int32_t* C, cudaStream_t stream) {
    if (M < 1 || N < 1 || K < 1 || Wd % 8 != 0 || Wd * 32 < K || (M + BM - 1) / BM > 65535) return BNN_EBADARG;
    dim3 grid((N + BN - 1) / BN, (M + BM - 1) / BM);
    bnn_bmma_kernel<<<grid, 128, 0, stream>>>(A, W, M, N, K, Wd, pa, pw, C);
    return cudaGetLastError() == cudaSuccess ? BNN_OK : BNN_ELAUNCH;
}
