/* tanh(beta * x) for float32 arrays, evaluated in double precision and rounded once to float.
 *
 * BMD's forward weight (bnn_tune/optim/_bmd.py). Built with -ffp-contract=off -fno-trapping-math (the second
 * lets the compiler vectorize the loop's selects; neither changes a result) and without -ffast-math, the
 * loop uses only IEEE additions, multiplications, fused multiply-adds, one division, conversions, bit
 * operations and selects,
 * so the result is the same bit pattern on every x86 CPU and instruction set (the compiler may vectorize
 * the loop: each lane does the same operations in the same order). torch.tanh on a build with MKL calls
 * MKL's vsTanh, whose last bit depends on the code path MKL picks for the CPU and which runs as scalar
 * code on AMD CPUs (benchmarks/bench_tanh.py).
 *
 * Method: z = (float)(beta * x) (the float product torch computes), a = min(|z|, 20) in double, t = 2a,
 * t = k ln2 + r with k = round(t / ln2) and |r| <= ln2/2, p = expm1(r) by its degree-12 Taylor
 * polynomial, expm1(t) = 2^k p + (2^k - 1) (for t < ln2/2, k = 0 and r = t: no cancellation near 0), and
 * tanh(a) = expm1(t) / (expm1(t) + 2); the sign of z is put back last. The double result is within a few
 * 1e-16 (relative) of tanh, so the float result is the correctly rounded tanh except where the exact
 * value lies that close to a midpoint between two floats (tests/kernels/test_tanh_cpu.py counts them).
 * tanh(20) rounds to 1.0f, so clamping at 20 changes nothing and maps +-inf to +-1; NaN stays NaN;
 * -0.0 stays -0.0.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LN2_HI 6.93147180369123816490e-01 /* fdlibm's split of ln 2: k * LN2_HI is exact for |k| < 2^11 */
#define LN2_LO 1.90821492927058770002e-10
#define INV_LN2 1.44269504088896338700e+00
#define ROUND_MAGIC 6755399441055744.0    /* 1.5 * 2^52: (v + M) - M rounds v to the nearest integer */

void bnn_tanh_scaled_f32(const float *restrict x, float *restrict y, int64_t n, float beta) {
    for (int64_t i = 0; i < n; i++) {
        float zf = x[i] * beta;
        uint32_t zbits;
        memcpy(&zbits, &zf, sizeof zbits);
        uint32_t abits = zbits & 0x7fffffffu, sign = zbits & 0x80000000u;
        /* min(|z|, 20) as an integer min on the bits (0x41a00000 = 20.0f); a NaN, whose bits are above
           0x7f800000, is put back at the end */
        uint32_t cbits = abits < 0x41a00000u ? abits : 0x41a00000u;
        float af;
        memcpy(&af, &cbits, sizeof af);
        double a = (double)af;
        double t = a + a;
        double kb = fma(t, INV_LN2, ROUND_MAGIC);
        double k = kb - ROUND_MAGIC;
        double r = fma(-k, LN2_LO, fma(-k, LN2_HI, t));
        /* expm1(r) = sum_{n=1..12} r^n / n! (Horner with fused multiply-adds: fma() is exactly rounded, so a
           build without FMA instructions calls libm's fma and gets the same bits, only slower) */
        double p = 1.0 / 479001600.0;
        p = fma(p, r, 1.0 / 39916800.0);
        p = fma(p, r, 1.0 / 3628800.0);
        p = fma(p, r, 1.0 / 362880.0);
        p = fma(p, r, 1.0 / 40320.0);
        p = fma(p, r, 1.0 / 5040.0);
        p = fma(p, r, 1.0 / 720.0);
        p = fma(p, r, 1.0 / 120.0);
        p = fma(p, r, 1.0 / 24.0);
        p = fma(p, r, 1.0 / 6.0);
        p = fma(p, r, 0.5);
        p = fma(p, r, 1.0);
        p = p * r;
        uint64_t bits;
        memcpy(&bits, &kb, sizeof bits);  /* the low bits of kb hold k (0..58 here) */
        uint64_t e = ((bits & 0x7ffu) + 1023u) << 52;
        double two_k;
        memcpy(&two_k, &e, sizeof two_k);
        double em1 = fma(two_k, p, two_k - 1.0);
        float out = (float)(em1 / (em1 + 2.0));
        uint32_t obits;
        memcpy(&obits, &out, sizeof obits);
        obits |= sign;                    /* tanh is odd: |z|'s result with z's sign (-0.0 stays -0.0) */
        obits = abits > 0x7f800000u ? zbits : obits;  /* NaN in, the same NaN out */
        memcpy(&y[i], &obits, sizeof obits);
    }
}

/* The same on `parts` threads of the OpenMP team torch runs on: `gomp` is the address of GOMP_parallel in
 * torch's OpenMP runtime (bnn_tune.kernels._engine finds it). Its workers, still spinning after torch's
 * last parallel region, take the parts; threads of our own would compete with them for the cores. The
 * result does not depend on the split (each element is computed alone). NULL or parts <= 1: this thread. */
typedef void (*gomp_parallel_fn)(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);

typedef struct {
    const float *x;
    float *y;
    int64_t n, chunk;
    float beta;
    int parts, next;
} tanh_job;

static void tanh_parts(void *data) {
    tanh_job *j = (tanh_job *)data;
    int p;
    while ((p = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->parts) {
        int64_t s = (int64_t)p * j->chunk, e = s + j->chunk < j->n ? s + j->chunk : j->n;
        if (s < e) bnn_tanh_scaled_f32(j->x + s, j->y + s, e - s, j->beta);
    }
}

void bnn_tanh_scaled_f32_team(const float *x, float *y, int64_t n, float beta, int parts, void *gomp) {
    if (parts < 1) parts = 1;
    int64_t chunk = (n + parts - 1) / parts;
    chunk = (chunk + 15) / 16 * 16; /* whole 64-byte lines per part */
    tanh_job j = {x, y, n, chunk, beta, parts, 0};
    if (parts == 1 || gomp == 0) {
        tanh_parts(&j);
        return;
    }
    ((gomp_parallel_fn)gomp)(tanh_parts, &j, (unsigned)parts, 0);
}
