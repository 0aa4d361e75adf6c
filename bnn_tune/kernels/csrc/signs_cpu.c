/* Sign bits of a float32 array, packed 64 to a word, and the number that changed since the last call.
 *
 * The flip counter (bnn_tune/metrics.py) keeps the signs of every binary parameter between optimizer
 * steps. bit = (x >= 0) (IEEE ordered comparison: +0.0 and -0.0 give 1, NaN gives 0, like torch.ge(x, 0));
 * element i is bit i % 64 of word i / 64, and the unused high bits of the last word are 0. Integer
 * results: every path (AVX-512, AVX2, plain C) returns the same count and words.
 */
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__AVX2__)
#include <immintrin.h>
#endif

static inline uint64_t word_signs(const float *x, int64_t len) {
    uint64_t m = 0;
    if (len == 64) {
#if defined(__AVX512F__)
        const __m512 zero = _mm512_setzero_ps();
        for (int q = 0; q < 4; q++)
            m |= (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(x + 16 * q), zero, _CMP_GE_OQ) << (16 * q);
        return m;
#elif defined(__AVX2__)
        const __m256 zero = _mm256_setzero_ps();
        for (int q = 0; q < 8; q++)
            m |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8 * q), zero, _CMP_GE_OQ))
                 << (8 * q);
        return m;
#endif
    }
    for (int64_t b = 0; b < len; b++)
        m |= (uint64_t)(x[b] >= 0.0f) << b;
    return m;
}

/* Write the sign bits of x[0..n) into words[0..ceil(n/64)); when count is non-zero, return how many differ
   from the bits the words held before (else 0). */
int64_t bnn_sign_bits_f32(const float *x, uint64_t *words, int64_t n, int count) {
    int64_t flips = 0;
    int64_t nw = (n + 63) / 64;
    for (int64_t w = 0; w < nw; w++) {
        int64_t len = n - 64 * w < 64 ? n - 64 * w : 64;
        uint64_t m = word_signs(x + 64 * w, len);
        if (count)
            flips += __builtin_popcountll(m ^ words[w]);
        words[w] = m;
    }
    return flips;
}
