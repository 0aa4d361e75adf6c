/* Packed CPU inference engine: direct binary convolution on bit-packed NHWC activations.
 *
 * Activations: uint32 words, NHWC, CW = ceil(C / 32) words per pixel, channel c in bit c % 32 of word
 * c / 32 (LSB first, bit 1 = +1, channel-padding bits 0). A layer's input buffer carries its padding
 * border (`Hp = H + 2 ph`, `Wp = W + 2 pw`), filled once with the +1 (all valid channel bits set) or -1
 * (all 0) value the layer was trained with; producers write only the interior.
 *
 * Weights (bnn_tune/kernels/_engine.py lays them out): [OB][KWORDS][16] uint32, OB = ceil(O / 16)
 * blocks of 16 output channels, KWORDS = kh * kw * CW in (ky, kx, cw) order, so one 512-bit register
 * holds one input word position of 16 output channels. The kernel broadcasts one activation word,
 * XORs it with the weight vectors and accumulates popcounts in 32-bit lanes: acc = popcount(a ^ w)
 * over the exact K (padding bits are 0 in both operands, no tile padding), y = K - 2 acc.
 *
 * Epilogues: bits mode writes the next layer's bits directly (bit = y >= thr, precomputed as the
 * popcount threshold acc <= athr = floor((K - thr) / 2); athr = -1 for padded channels keeps their
 * bits 0), 16 channels = one uint16 of the output pixel; int mode writes y as int32 [M][O].
 *
 * ISAs: 3 = AVX-512 VPOPCNTDQ (4 pixels x 4 channel vectors in registers, tiles of 64 pixels per
 * weight group so the group stays in L1), 2 = AVX2 (vpshufb nibble
 * popcount with byte accumulators widened every 31 words), 1 = portable C. Threads: the output pixels
 * (rows) cut in TASKS_PER_THREAD contiguous ranges per thread, each thread claiming the next free range;
 * with fewer pixels than threads (batch-1 linear layers) the output channel blocks are cut instead;
 * calls under min_parallel_work stay on one thread. Three pools
 * (bnn_engine_set_pool): the OpenMP runtime torch uses, when bnn_tune/kernels/_engine.py hands over its
 * GOMP_parallel entry (torch's workers, still spinning after its last parallel region, take the engine's
 * shares); a persistent pool of the engine's own workers (spin, then futex sleep); pthreads started and
 * joined per call (also in a child after fork). The library is not linked against any OpenMP runtime:
 * the entry is looked up in the process at run time.
 * Built by bnn_tune/kernels/_native.py (-O3 -march=native -ffp-contract=off -pthread).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BNN_X86 1 /* pragma: no mutate: only tested with #ifdef */
#endif

typedef struct {
    const uint32_t* in;
    int N, Hp, Wp, CW;        /* input buffer (with border) */
    int Ho, Wo, kh, kw, sh, sw;
    const uint32_t* w;        /* [OB][KWORDS][16] */
    int OB, K, O;
    const int32_t* athr;      /* [OB * 16] or NULL (int mode) */
    void* out;
    int Hpo, Wpo, CWo, bo;    /* bits mode: output buffer geometry and border */
} conv_args;

typedef struct {
    const conv_args* a;
    int isa, m0, m1, ob0, ob1;
} conv_task;

static inline const uint32_t* pix_in(const conv_args* a, int m) {
    const int hw = a->Ho * a->Wo;
    const int n = m / hw, r = m % hw, oy = r / a->Wo, ox = r % a->Wo;
    return a->in + (((long long)n * a->Hp + (long long)oy * a->sh) * a->Wp + (long long)ox * a->sw) * a->CW;
}

static inline uint16_t* pix_out16(const conv_args* a, int m) {
    const int hw = a->Ho * a->Wo;
    const int n = m / hw, r = m % hw, oy = r / a->Wo, ox = r % a->Wo;
    uint32_t* o = (uint32_t*)a->out +
                  (((long long)n * a->Hpo + oy + a->bo) * a->Wpo + ox + a->bo) * a->CWo;
    return (uint16_t*)o;
}

/* ---------------------------------------------------------------- portable */
static void conv_portable(const conv_args* a, int m0, int m1, int ob0, int ob1) {
    const int kwcw = a->kw * a->CW, kwords = a->kh * kwcw, row = a->Wp * a->CW;
    for (int m = m0; m < m1; ++m) {
        const uint32_t* ip = pix_in(a, m);
        for (int ob = ob0; ob < ob1; ++ob) {
            int32_t acc[16] = {0};
            const uint32_t* wb = a->w + (long long)ob * kwords * 16;
            for (int ky = 0; ky < a->kh; ++ky) {
                const uint32_t* ir = ip + (long long)ky * row;
                const uint32_t* wr = wb + (long long)ky * kwcw * 16;
                for (int i = 0; i < kwcw; ++i) {
                    const uint32_t x = ir[i];
                    for (int l = 0; l < 16; ++l) acc[l] += __builtin_popcount(x ^ wr[i * 16 + l]);
                }
            }
            if (a->athr) {
                uint16_t bits = 0;
                for (int l = 0; l < 16; ++l) bits |= (uint16_t)(acc[l] <= a->athr[ob * 16 + l]) << l;
                pix_out16(a, m)[ob] = bits;
            } else {
                int32_t* y = (int32_t*)a->out + (long long)m * a->O;
                for (int l = 0; l < 16 && ob * 16 + l < a->O; ++l) y[ob * 16 + l] = a->K - 2 * acc[l];
            }
        }
    }
}

#ifdef BNN_X86
/* ---------------------------------------------------------------- AVX-512 VPOPCNTDQ */
#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))

static inline __attribute__((always_inline)) AVX512_TARGET void
blk512(const conv_args* a, const int m, const int ob, const int px, const int ov) {
    const int kwcw = a->kw * a->CW, kwords = a->kh * kwcw, row = a->Wp * a->CW;
    const uint32_t* ip[4];
    for (int p = 0; p < px; ++p) ip[p] = pix_in(a, m + p);
    __m512i acc[4][4];
    for (int p = 0; p < 4; ++p)
        for (int j = 0; j < 4; ++j) acc[p][j] = _mm512_setzero_si512();
    const uint32_t* wb = a->w + (long long)ob * kwords * 16;
    for (int ky = 0; ky < a->kh; ++ky) {
        const uint32_t* wr = wb + (long long)ky * kwcw * 16;
        const long long io = (long long)ky * row;
        for (int i = 0; i < kwcw; ++i) {
            __m512i wv[4];
            for (int j = 0; j < ov; ++j) wv[j] = _mm512_loadu_si512(wr + ((long long)j * kwords + i) * 16);
            for (int p = 0; p < px; ++p) {
                const __m512i x = _mm512_set1_epi32((int)ip[p][io + i]);
                for (int j = 0; j < ov; ++j)
                    acc[p][j] = _mm512_add_epi32(acc[p][j], _mm512_popcnt_epi32(_mm512_xor_si512(x, wv[j])));
            }
        }
    }
    if (a->athr) {
        for (int j = 0; j < ov; ++j) {
            const __m512i t = _mm512_loadu_si512(a->athr + (ob + j) * 16);
            for (int p = 0; p < px; ++p) pix_out16(a, m + p)[ob + j] = (uint16_t)_mm512_cmple_epi32_mask(acc[p][j], t);
        }
    } else {
        const __m512i kv = _mm512_set1_epi32(a->K);
        for (int j = 0; j < ov; ++j) {
            const int o0 = (ob + j) * 16, left = a->O - o0;
            const __mmask16 mk = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            for (int p = 0; p < px; ++p) {
                const __m512i y = _mm512_sub_epi32(kv, _mm512_slli_epi32(acc[p][j], 1));
                _mm512_mask_storeu_epi32((int32_t*)a->out + (long long)(m + p) * a->O + o0, mk, y);
            }
        }
    }
}

#define MCHUNK 64 /* output pixels per tile: one group of 4 weight vectors stays in L1 across the tile (pragma: no mutate: a tile size, every pixel is computed alike in any tile) */

static inline __attribute__((always_inline)) AVX512_TARGET void
tile512(const conv_args* a, int mc, int mend, int ob, const int ov) {
    int m = mc;
    for (; m + 4 <= mend; m += 4) blk512(a, m, ob, 4, ov);
    for (; m < mend; ++m) blk512(a, m, ob, 1, ov);
}

AVX512_TARGET static void conv_avx512(const conv_args* a, int m0, int m1, int ob0, int ob1) {
    for (int mc = m0; mc < m1; mc += MCHUNK) {
        const int mend = mc + MCHUNK < m1 ? mc + MCHUNK : m1;
        int ob = ob0;
        for (; ob + 4 <= ob1; ob += 4) tile512(a, mc, mend, ob, 4);
        for (; ob + 2 <= ob1; ob += 2) tile512(a, mc, mend, ob, 2);
        for (; ob < ob1; ++ob) tile512(a, mc, mend, ob, 1);
    }
}

/* ---------------------------------------------------------------- AVX2 */
#define AVX2_TARGET __attribute__((target("avx2")))

static inline __attribute__((always_inline)) AVX2_TARGET __m256i pc8(__m256i x, __m256i lut, __m256i lo) {
    const __m256i l = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, lo));
    const __m256i h = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), lo));
    return _mm256_add_epi8(l, h);
}

static inline __attribute__((always_inline)) AVX2_TARGET __m256i widen(__m256i b) {
    const __m256i s16 = _mm256_maddubs_epi16(b, _mm256_set1_epi8(1));
    return _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
}

static inline __attribute__((always_inline)) AVX2_TARGET void
blk256(const conv_args* a, const int m, const int ob, const int px) {
    const int kwcw = a->kw * a->CW, kwords = a->kh * kwcw, row = a->Wp * a->CW;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i lo = _mm256_set1_epi8(0x0f);
    const uint32_t* ip[2];
    for (int p = 0; p < px; ++p) ip[p] = pix_in(a, m + p);
    __m256i acc[2][2], bacc[2][2];
    for (int p = 0; p < 2; ++p) acc[p][0] = acc[p][1] = bacc[p][0] = bacc[p][1] = _mm256_setzero_si256();
    const uint32_t* wb = a->w + (long long)ob * kwords * 16;
    int cnt = 0;
    for (int ky = 0; ky < a->kh; ++ky) {
        const uint32_t* wr = wb + (long long)ky * kwcw * 16;
        const long long io = (long long)ky * row;
        for (int i = 0; i < kwcw; ++i) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i*)(wr + i * 16));
            const __m256i w1 = _mm256_loadu_si256((const __m256i*)(wr + i * 16 + 8));
            for (int p = 0; p < px; ++p) {
                const __m256i x = _mm256_set1_epi32((int)ip[p][io + i]);
                bacc[p][0] = _mm256_add_epi8(bacc[p][0], pc8(_mm256_xor_si256(x, w0), lut, lo));
                bacc[p][1] = _mm256_add_epi8(bacc[p][1], pc8(_mm256_xor_si256(x, w1), lut, lo));
            }
            if (++cnt == 31) { /* 31 * 8 < 256: byte lanes cannot overflow */
                for (int p = 0; p < px; ++p)
                    for (int h = 0; h < 2; ++h) {
                        acc[p][h] = _mm256_add_epi32(acc[p][h], widen(bacc[p][h]));
                        bacc[p][h] = _mm256_setzero_si256();
                    }
                cnt = 0;
            }
        }
    }
    for (int p = 0; p < px; ++p)
        for (int h = 0; h < 2; ++h) acc[p][h] = _mm256_add_epi32(acc[p][h], widen(bacc[p][h]));
    if (a->athr) {
        const __m256i t0 = _mm256_loadu_si256((const __m256i*)(a->athr + ob * 16));
        const __m256i t1 = _mm256_loadu_si256((const __m256i*)(a->athr + ob * 16 + 8));
        for (int p = 0; p < px; ++p) { /* acc <= t  <=>  !(acc > t) */
            const int g0 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(acc[p][0], t0)));
            const int g1 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(acc[p][1], t1)));
            pix_out16(a, m + p)[ob] = (uint16_t)~(g0 | (g1 << 8));
        }
    } else {
        for (int p = 0; p < px; ++p) {
            int32_t v[16];
            _mm256_storeu_si256((__m256i*)v, acc[p][0]);
            _mm256_storeu_si256((__m256i*)(v + 8), acc[p][1]);
            int32_t* y = (int32_t*)a->out + (long long)(m + p) * a->O;
            for (int l = 0; l < 16 && ob * 16 + l < a->O; ++l) y[ob * 16 + l] = a->K - 2 * v[l];
        }
    }
}

AVX2_TARGET static void conv_avx2(const conv_args* a, int m0, int m1, int ob0, int ob1) {
    for (int mc = m0; mc < m1; mc += MCHUNK) {
        const int mend = mc + MCHUNK < m1 ? mc + MCHUNK : m1;
        for (int ob = ob0; ob < ob1; ++ob) {
            int m = mc;
            for (; m + 2 <= mend; m += 2) blk256(a, m, ob, 2);
            for (; m < mend; ++m) blk256(a, m, ob, 1);
        }
    }
}
#endif

/* Tasks run on each path (index: 1 portable, 2 AVX2, 3 AVX-512), all calls together: the results of every path
 * are identical by design, so tests read these to know which path a chain really took. */
static long long isa_tasks[4] = {0, 0, 0, 0};

long long bnn_engine_isa_tasks(int isa) {
    return isa >= 1 && isa <= 3 ? __atomic_load_n(&isa_tasks[isa], __ATOMIC_RELAXED) : -1;
}

static void conv_worker(const conv_task* t) {
#ifdef BNN_X86
    if (t->isa == 3) {
        __atomic_fetch_add(&isa_tasks[3], 1, __ATOMIC_RELAXED);
        conv_avx512(t->a, t->m0, t->m1, t->ob0, t->ob1);
        return;
    }
    if (t->isa == 2) {
        __atomic_fetch_add(&isa_tasks[2], 1, __ATOMIC_RELAXED);
        conv_avx2(t->a, t->m0, t->m1, t->ob0, t->ob1);
        return;
    }
#endif
    __atomic_fetch_add(&isa_tasks[1], 1, __ATOMIC_RELAXED);
    conv_portable(t->a, t->m0, t->m1, t->ob0, t->ob1);
}

#define MAX_THREADS 256 /* pragma: no mutate: a clamp of `threads` far above any machine the tests run on */
/* A layer is cut into this many tasks per thread, claimed in turn: a thread that starts late or is
   preempted leaves more of the work to the others. */
#define TASKS_PER_THREAD 4 /* pragma: no mutate: how finely work is cut; every task computes the same exact values */
static long long min_parallel_work = 1LL << 17; /* 16-channel vector steps (pragma: no mutate: a speed threshold, results do not depend on the thread count) */

/* Tests set 0 so that small problems exercise the thread splits. */
void bnn_engine_set_min_parallel_work(long long w) { min_parallel_work = w; }

/* The tasks of one call; every thread of the team claims the next unclaimed one until none is left, so
 * a thread that starts late (preempted, or still busy elsewhere) leaves its share to the others. */
typedef struct {
    const conv_task* tasks;
    int n;
    int next; /* atomic */
    pthread_t caller;
} task_list;

/* Tasks run by threads other than the caller, all calls together (tests check the helpers take part). */
static long long helper_tasks = 0;

long long bnn_engine_helper_tasks(void) { return __atomic_load_n(&helper_tasks, __ATOMIC_RELAXED); }

static void claim_tasks(void* arg) {
    task_list* l = (task_list*)arg;
    const int helper = !pthread_equal(pthread_self(), l->caller);
    int i;
    while ((i = __atomic_fetch_add(&l->next, 1, __ATOMIC_RELAXED)) < l->n) {
        conv_worker(&l->tasks[i]);
        if (helper) __atomic_fetch_add(&helper_tasks, 1, __ATOMIC_RELAXED);
    }
}

static void* claim_tasks_thread(void* arg) {
    claim_tasks(arg);
    return NULL;
}

/* libgomp's entry for `#pragma omp parallel num_threads(n)`: fn(data) on a team of n threads (the
 * caller included), returning after the team's closing barrier. */
typedef void (*gomp_parallel_fn)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);

/* ---------------------------------------------------------------- persistent pool
 * Worker threads started once and kept. A call publishes its tasks under a new generation and wakes the
 * workers; every thread, the caller included, claims tasks with a compare-and-swap on (generation, next
 * task), so a worker that wakes late finds the call over and claims nothing: the caller waits only for
 * tasks actually claimed, never for a worker to show up. After a call a worker spins ~SPIN_NS for the
 * next one (layers of a chain follow within microseconds), then sleeps on a futex. One call at a time
 * uses the pool; a concurrent caller runs its tasks itself. */
#if defined(__linux__)
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#define BNN_POOL 1 /* pragma: no mutate: only tested with #ifdef */
#define SPIN_NS 200000LL /* pragma: no mutate: how long an idle worker spins before sleeping (speed only) */

static struct {
    pthread_mutex_t lock;
    int nworkers;
    uint32_t gen;                 /* futex word: bumped once per call */
    int sleeping;                 /* workers in (or entering) futex wait */
    uint64_t claim;               /* gen << 32 | next task */
    const conv_task* tasks;       /* valid while a task of gen is claimed and not done */
    int n;
    int done;                     /* tasks of gen finished */
    int helpers;                  /* workers 0 .. helpers-1 take part in gen (threads - 1) */
} pool = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, NULL, 0, 0, 0};

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void cpu_relax(void) {
#ifdef BNN_X86
    __builtin_ia32_pause();
#endif
}

/* Claim and run tasks of generation g until none is left. */
static void pool_claim(uint32_t g, int helper) {
    for (;;) {
        uint64_t c = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
        for (;;) {
            if ((uint32_t)(c >> 32) != g || (int)(uint32_t)c >= __atomic_load_n(&pool.n, __ATOMIC_RELAXED)) return;
            if (__atomic_compare_exchange_n(&pool.claim, &c, c + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
        }
        conv_worker(&pool.tasks[(uint32_t)c]); /* pool.tasks belongs to g until this task is done */
        if (helper) __atomic_fetch_add(&helper_tasks, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&pool.done, 1, __ATOMIC_RELEASE);
    }
}

static void* pool_worker(void* arg) {
    const int idx = (int)(uintptr_t)arg;
    uint32_t seen = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t g = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE);
        if (g == seen) {
            const long long until = now_ns() + SPIN_NS;
            int k = 0;
            while ((g = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE)) == seen) {
                cpu_relax();
                if (++k % 64 == 0 && now_ns() > until) { /* pragma: no mutate: how often the clock is read */
                    __atomic_fetch_add(&pool.sleeping, 1, __ATOMIC_SEQ_CST);
                    syscall(SYS_futex, &pool.gen, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
                    __atomic_fetch_sub(&pool.sleeping, 1, __ATOMIC_SEQ_CST);
                }
            }
        }
        seen = g;
        if (idx < __atomic_load_n(&pool.helpers, __ATOMIC_RELAXED)) pool_claim(g, 1); /* threads= holds */
    }
    return NULL;
}

static void pool_reset_in_child(void) { /* the workers did not survive the fork */
    pthread_mutex_init(&pool.lock, NULL);
    pool.nworkers = 0;
    pool.sleeping = 0;
}

/* 0 when the tasks ran on the pool (with fewer workers if some could not start); -1 when another
 * caller holds it. */
static int pool_run(const conv_task* tasks, int n, int nthreads) {
    if (pthread_mutex_trylock(&pool.lock) != 0) return -1;
    while (pool.nworkers < nthreads - 1) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        const int ok = pthread_create(&th, &at, pool_worker, (void*)(uintptr_t)pool.nworkers) == 0;
        pthread_attr_destroy(&at);
        if (!ok) break;
        ++pool.nworkers;
    }
    const uint32_t g = pool.gen + 1;
    pool.tasks = tasks;
    __atomic_store_n(&pool.n, n, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.helpers, nthreads - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.claim, (uint64_t)g << 32, __ATOMIC_RELEASE);
    __atomic_store_n(&pool.gen, g, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool.sleeping, __ATOMIC_SEQ_CST) > 0)
        syscall(SYS_futex, &pool.gen, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0); /* the right ones among them */
    pool_claim(g, 0);
    for (int k = 0; __atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < n; ++k) {
        if (k < 4096) cpu_relax(); /* pragma: no mutate: spin count before yielding (speed only) */
        else sched_yield(); /* a worker holding a task was preempted */
    }
    pthread_mutex_unlock(&pool.lock);
    return 0;
}
#endif

/* Thread pool: 0 = pthreads started and joined per call, 1 = persistent pool, 2 = OpenMP (gomp_parallel). */
static int pool_kind = 0;
static gomp_parallel_fn gomp_parallel = NULL;
static int atfork_registered = 0;

/* In a forked child libgomp has no threads behind the parent's team (a GOMP call hangs) and the pool
 * has no workers: the child starts over on pthreads. */
static void reset_in_child(void) {
    gomp_parallel = NULL;
    pool_kind = 0;
#ifdef BNN_POOL
    pool_reset_in_child();
#endif
}

/* kind as above; fn: the address of GOMP_parallel in the OpenMP runtime torch loaded (kind 2).
 * Returns the kind in use (0 when the asked one is unavailable). */
int bnn_engine_set_pool(int kind, void* fn) {
    if (!atfork_registered) atfork_registered = pthread_atfork(NULL, NULL, reset_in_child) == 0;
    gomp_parallel = NULL;
    pool_kind = 0;
    if (!atfork_registered) return 0;
#ifdef BNN_POOL
    if (kind == 1) pool_kind = 1;
#endif
    if (kind == 2 && fn) {
        gomp_parallel = (gomp_parallel_fn)fn;
        pool_kind = 2;
    }
    return pool_kind;
}

int bnn_engine_pool(void) { return pool_kind; }

/* Run tasks[0..n) on nthreads threads: the pool in use, or nthreads - 1 new pthreads and the caller's. */
static void run_tasks(const conv_task* tasks, int n, int nthreads) {
    task_list l = {tasks, n, 0, pthread_self()};
    if (nthreads > n) nthreads = n;
    if (nthreads <= 1) { claim_tasks(&l); return; }
    const int kind = pool_kind;
    gomp_parallel_fn par = gomp_parallel;
    if (kind == 2 && par) { par(claim_tasks, &l, (unsigned)nthreads, 0); return; }
#ifdef BNN_POOL
    if (kind == 1) {
        if (pool_run(tasks, n, nthreads) != 0) claim_tasks(&l); /* pool busy: run them here */
        return;
    }
#endif
    pthread_t th[MAX_THREADS];
    int started[MAX_THREADS];
    for (int i = 1; i < nthreads; ++i) started[i] = pthread_create(&th[i], NULL, claim_tasks_thread, &l) == 0;
    claim_tasks(&l); /* a thread that could not start leaves its tasks to the caller */
    for (int i = 1; i < nthreads; ++i)
        if (started[i]) pthread_join(th[i], NULL);
}

int bnn_engine_isa(void) {
#ifdef BNN_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vpopcntdq"))
        return 3;
    if (__builtin_cpu_supports("avx2")) return 2;
#endif
    return 1;
}

/* One binary layer. geo: N Hp Wp CW Ho Wo kh kw sh sw OB K O Hpo Wpo CWo bo (17 ints). */
void bnn_engine_conv(const uint32_t* in, const uint32_t* w, const int32_t* athr, void* out, const int* geo,
                     int isa, int threads) {
    conv_args a = {in, geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6], geo[7], geo[8], geo[9],
                   w, geo[10], geo[11], geo[12], athr, out, geo[13], geo[14], geo[15], geo[16]};
    const int M = a.N * a.Ho * a.Wo;
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    /* below ~0.1 ms of work a thread costs more than it saves (and on a busy machine a preempted
       thread stalls the join): stay on the caller's thread */
    /* on the openmp pool the team already runs (torch's workers spin or wake within microseconds), so an
       eighth of that work already pays: batch-1 layers of 25-50 us split there (bench_kernels.py, 2 threads) */
    const long long min_work = pool_kind == 2 ? min_parallel_work / 8 : min_parallel_work;
    if ((long long)M * a.OB * a.kh * a.kw * a.CW < min_work) threads = 1;
    conv_task tasks[MAX_THREADS * TASKS_PER_THREAD];
    const int parts = threads > 1 ? threads * TASKS_PER_THREAD : 1;
    int n = 0;
    if (M >= 4 * threads || a.OB < 2 * threads) { /* split output pixels, in multiples of 4 */
        int step = (M + parts - 1) / parts;
        step = (step + 3) / 4 * 4;
        for (int m = 0; m < M; m += step)
            tasks[n++] = (conv_task){&a, isa, m, m + step < M ? m + step : M, 0, a.OB};
    } else { /* few pixels, many channel blocks (batch-1 linear): split the channel blocks, by 4 */
        int step = (a.OB + parts - 1) / parts;
        step = (step + 3) / 4 * 4;
        for (int ob = 0; ob < a.OB; ob += step)
            tasks[n++] = (conv_task){&a, isa, 0, M, ob, ob + step < a.OB ? ob + step : a.OB};
    }
    if (n == 0) return;
    run_tasks(tasks, n, threads);
}

/* Max-pool on bits: in [N][H][W][CW] (no border) -> out interior of [N][Hpo][Wpo][CW] at border bo.
 * OR over the window, AND for the channels set in andm[CW] (negative batch-norm scale). */
void bnn_engine_maxpool(const uint32_t* in, const uint32_t* andm, uint32_t* out, int N, int H, int W, int CW,
                        int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo, int Hpo, int Wpo, int bo) {
    for (int n = 0; n < N; ++n)
        for (int oy = 0; oy < Ho; ++oy)
            for (int ox = 0; ox < Wo; ++ox) {
                uint32_t* op = out + (((long long)n * Hpo + oy + bo) * Wpo + ox + bo) * CW;
                for (int c = 0; c < CW; ++c) {
                    uint32_t vo = 0, va = 0xFFFFFFFFu;
                    for (int ky = 0; ky < kh; ++ky) {
                        const int y = oy * sh - ph + ky;
                        if (y < 0 || y >= H) continue;
                        for (int kx = 0; kx < kw; ++kx) {
                            const int x = ox * sw - pw + kx;
                            if (x < 0 || x >= W) continue;
                            const uint32_t v = in[(((long long)n * H + y) * W + x) * CW + c];
                            vo |= v;
                            va &= v;
                        }
                    }
                    op[c] = (vo & ~andm[c]) | (va & andm[c]);
                }
            }
}

/* Sign and pack a float NCHW map into the interior of a [N][Hp][Wp][CW] buffer at border bo:
 * bit = x * scale[c] + shift[c] >= 0 in double (the batchnorm_sign op; two roundings, no FMA), or
 * x >= 0 when scale is NULL; from a bool (uint8 0/1) map when xb is given. Blocks of 16 pixels of a row
 * build their words in registers (the inner pixel loop vectorises); the border is left alone. */
#define PACK_BLOCK(EXPR)                                                                          \
    for (int c = c0; c < c1; ++c) {                                                               \
        const long long off = (((long long)n * C + c) * H + y) * W + x0;                          \
        const uint32_t sft = (uint32_t)(c & 31);                                                  \
        const double s = scale ? scale[c] : 1.0, b = scale ? shift[c] : 0.0;                      \
        (void)s; (void)b;                                                                         \
        if (nb == 16)                                                                             \
            for (int p = 0; p < 16; ++p) acc[p] |= (uint32_t)(EXPR) << sft;                       \
        else                                                                                      \
            for (int p = 0; p < nb; ++p) acc[p] |= (uint32_t)(EXPR) << sft;                       \
    }

void bnn_engine_pack(const float* x, const uint8_t* xb, const double* scale, const double* shift, uint32_t* out,
                     int N, int C, int H, int W, int Hp, int Wp, int CW, int bo) {
    for (int n = 0; n < N; ++n)
        for (int y = 0; y < H; ++y)
            for (int x0 = 0; x0 < W; x0 += 16) {
                const int nb = W - x0 < 16 ? W - x0 : 16;
                uint32_t* px = out + (((long long)n * Hp + y + bo) * Wp + bo + x0) * CW;
                for (int cw = 0; cw < CW; ++cw) {
                    const int c0 = cw * 32, c1 = c0 + 32 < C ? c0 + 32 : C;
                    uint32_t acc[16] = {0};
                    if (xb) {
                        PACK_BLOCK(xb[off + p] != 0)
                    } else if (scale) {
                        PACK_BLOCK((double)x[off + p] * s + b >= 0.0)
                    } else {
                        PACK_BLOCK(x[off + p] >= 0.0f)
                    }
                    for (int p = 0; p < nb; ++p) px[(long long)p * CW + cw] = acc[p];
                }
            }
}

/* Unpack the interior of a [N][Hp][Wp][CW] bit buffer to a bool (uint8) NCHW map. */
void bnn_engine_unpack(const uint32_t* in, uint8_t* x, int N, int C, int H, int W, int Hp, int Wp, int CW, int bo) {
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) {
            uint8_t* xc = x + ((long long)n * C + c) * H * W;
            const int cw = c >> 5, sft = c & 31;
            for (int y = 0; y < H; ++y) {
                const uint32_t* row = in + (((long long)n * Hp + y + bo) * Wp + bo) * CW + cw;
                for (int xx = 0; xx < W; ++xx) xc[(long long)y * W + xx] = (row[(long long)xx * CW] >> sft) & 1u;
            }
        }
}
