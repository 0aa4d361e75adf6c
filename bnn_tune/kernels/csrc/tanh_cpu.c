/* tanh(beta * x) for float32 arrays, evaluated in double precision and rounded once to float.
 *
 * BMD's forward weight (bnn_tune/optim/_bmd.py). Built with -ffp-contract=off and without -ffast-math, the
 * loop uses only IEEE additions, multiplications, one division, conversions and selects, so the result
 * is the same bit pattern on every x86 CPU and instruction set (the compiler may vectorize the loop:
 * each lane does the same operations in the same order). torch.tanh on a build with MKL calls MKL's
 * vsTanh, whose last bit depends on the code path MKL picks for the CPU (and which runs as scalar code on
 * AMD CPUs: 5.6 ns per element measured here, against about 0.5 ns for this loop).
 *
 * Method: z = (float)(beta * x) (the float product torch computes), a = min(|z|, 20) in double,
 * t = 2a, em1 = expm1(t) (a degree-13 Taylor polynomial for t < 0.25; otherwise exp(t) - 1 with
 * t = k ln2 + r, |r| <= ln2/2, a degree-13 Taylor polynomial for exp(r) and an exact 2^k), and
 * tanh(a) = em1 / (em1 + 2); the sign of z is put back last. Relative error of the double result is
 * below 1e-15, so the float result is the correctly rounded tanh except where the exact value lies
 * within that of a midpoint between two floats (tests/kernels/test_tanh_cpu.py counts them).
 * tanh(20) rounds to 1.0f, so clamping at 20 changes nothing and maps +-inf to +-1; NaN stays NaN;
 * -0.0 stays -0.0.
 */
#include <stdint.h>
#include <string.h>

static inline double poly13(double u) {
    /* sum_{n=1..13} u^n / n!  (Horner) */
    double p = 1.0 / 6227020800.0;               /* 1/13! */
    p = p * u + 1.0 / 479001600.0;               /* 1/12! */
    p = p * u + 1.0 / 39916800.0;                /* 1/11! */
    p = p * u + 1.0 / 3628800.0;                 /* 1/10! */
    p = p * u + 1.0 / 362880.0;
    p = p * u + 1.0 / 40320.0;
    p = p * u + 1.0 / 5040.0;
    p = p * u + 1.0 / 720.0;
    p = p * u + 1.0 / 120.0;
    p = p * u + 1.0 / 24.0;
    p = p * u + 1.0 / 6.0;
    p = p * u + 0.5;
    p = p * u + 1.0;
    return p * u;
}

#define LN2_HI 6.93147180369123816490e-01 /* fdlibm's split of ln 2: k * LN2_HI is exact for |k| < 2^11 */
#define LN2_LO 1.90821492927058770002e-10
#define INV_LN2 1.44269504088896338700e+00
#define ROUND_MAGIC 6755399441055744.0    /* 1.5 * 2^52: (v + M) - M rounds v to the nearest integer */

void bnn_tanh_scaled_f32(const float *x, float *y, int64_t n, float beta) {
    for (int64_t i = 0; i < n; i++) {
        float zf = x[i] * beta;
        double z = (double)zf;
        double a = z < 0.0 ? -z : z;      /* NaN: the comparison is false and a stays NaN */
        a = a > 20.0 ? 20.0 : a;
        double t = a + a;
        double small = poly13(t);
        double kb = t * INV_LN2 + ROUND_MAGIC;
        double k = kb - ROUND_MAGIC;
        double r = (t - k * LN2_HI) - k * LN2_LO;
        uint64_t bits;
        memcpy(&bits, &kb, sizeof bits);  /* the low bits of kb hold k (0..58 here) */
        uint64_t e = ((bits & 0x7ffu) + 1023u) << 52;
        double two_k;
        memcpy(&two_k, &e, sizeof two_k);
        double large = (poly13(r) + 1.0) * two_k - 1.0;
        double em1 = t < 0.25 ? small : large;
        float out = (float)(em1 / (em1 + 2.0));
        y[i] = zf < 0.0f ? -out : out;
    }
}
