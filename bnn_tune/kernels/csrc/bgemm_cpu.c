/* CPU binary GEMM on packed 64-bit words: y[m, o] = K - 2 popcount(a[m] ^ w[o]).
 *
 * Same bit convention as the model file (LSB-first words, bit 1 = +1, zero padding); 64-bit words are
 * two consecutive uint32 words of a row. Blocking: 4 activation rows x 4 weight rows per inner
 * kernel (16 independent popcount accumulators, each weight word loaded once per 4 rows), weight rows
 * in blocks of 64 to stay in L1/L2. y has row stride ldy, so callers can split the weight rows
 * across threads (bnn_tune/kernels/_native.py does, from Python threads: ctypes drops the GIL).
 * No OpenMP: on a shared 2-core machine its barriers stalled for whole scheduler quanta (8-12 ms
 * per call measured), and a second OpenMP runtime next to torch's is asking for trouble.
 * Built by bnn_tune/kernels/_native.py with the system C compiler (-O3 -march=native).
 */
#include <stdint.h>

#define OB 64 /* pragma: no mutate: a block size (L1/L2); every block computes the same exact sums */

static inline int pc(uint64_t v) { return __builtin_popcountll(v); }

void bnn_cpu_gemm(const uint64_t* a, const uint64_t* w, int M, int O, int W, int K, int32_t* y, int ldy) {
    const int nob = (O + OB - 1) / OB;
    for (int ob = 0; ob < nob; ++ob) {
        const int o_end = (ob + 1) * OB < O ? (ob + 1) * OB : O;
        int m = 0;
        for (; m + 4 <= M; m += 4) {
            const uint64_t *a0 = a + (long long)m * W, *a1 = a0 + W, *a2 = a1 + W, *a3 = a2 + W;
            int o = ob * OB;
            for (; o + 4 <= o_end; o += 4) {
                const uint64_t *w0 = w + (long long)o * W, *w1 = w0 + W, *w2 = w1 + W, *w3 = w2 + W;
                int s[4][4] = {{0}};
                for (int i = 0; i < W; ++i) {
                    const uint64_t x0 = a0[i], x1 = a1[i], x2 = a2[i], x3 = a3[i];
                    const uint64_t v0 = w0[i], v1 = w1[i], v2 = w2[i], v3 = w3[i];
                    s[0][0] += pc(x0 ^ v0); s[0][1] += pc(x0 ^ v1); s[0][2] += pc(x0 ^ v2); s[0][3] += pc(x0 ^ v3);
                    s[1][0] += pc(x1 ^ v0); s[1][1] += pc(x1 ^ v1); s[1][2] += pc(x1 ^ v2); s[1][3] += pc(x1 ^ v3);
                    s[2][0] += pc(x2 ^ v0); s[2][1] += pc(x2 ^ v1); s[2][2] += pc(x2 ^ v2); s[2][3] += pc(x2 ^ v3);
                    s[3][0] += pc(x3 ^ v0); s[3][1] += pc(x3 ^ v1); s[3][2] += pc(x3 ^ v2); s[3][3] += pc(x3 ^ v3);
                }
                for (int r = 0; r < 4; ++r)
                    for (int c = 0; c < 4; ++c) y[(long long)(m + r) * ldy + o + c] = K - 2 * s[r][c];
            }
            for (; o < o_end; ++o) {
                const uint64_t* wr = w + (long long)o * W;
                int s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                for (int i = 0; i < W; ++i) {
                    s0 += pc(a0[i] ^ wr[i]); s1 += pc(a1[i] ^ wr[i]); s2 += pc(a2[i] ^ wr[i]); s3 += pc(a3[i] ^ wr[i]);
                }
                y[(long long)m * ldy + o] = K - 2 * s0;
                y[(long long)(m + 1) * ldy + o] = K - 2 * s1;
                y[(long long)(m + 2) * ldy + o] = K - 2 * s2;
                y[(long long)(m + 3) * ldy + o] = K - 2 * s3;
            }
        }
        for (; m < M; ++m) {  /* leftover rows (and batch 1): 4 weight rows at a time */
            const uint64_t* ar = a + (long long)m * W;
            int o = ob * OB;
            for (; o + 4 <= o_end; o += 4) {
                const uint64_t *w0 = w + (long long)o * W, *w1 = w0 + W, *w2 = w1 + W, *w3 = w2 + W;
                int s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                for (int i = 0; i < W; ++i) {
                    const uint64_t x = ar[i];
                    s0 += pc(x ^ w0[i]); s1 += pc(x ^ w1[i]); s2 += pc(x ^ w2[i]); s3 += pc(x ^ w3[i]);
                }
                y[(long long)m * ldy + o] = K - 2 * s0;
                y[(long long)m * ldy + o + 1] = K - 2 * s1;
                y[(long long)m * ldy + o + 2] = K - 2 * s2;
                y[(long long)m * ldy + o + 3] = K - 2 * s3;
            }
            for (; o < o_end; ++o) {
                const uint64_t* wr = w + (long long)o * W;
                int s0 = 0;
                for (int i = 0; i < W; ++i) s0 += pc(ar[i] ^ wr[i]);
                y[(long long)m * ldy + o] = K - 2 * s0;
            }
        }
    }
}
