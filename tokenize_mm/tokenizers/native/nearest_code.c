/* Fused nearest-code assignment: the product x E^T and the argmin in one pass, in cache.
 *
 * For every row x_i (D floats) the index of the codebook entry E_k minimising
 *     s_ik = |E_k|^2 - 2 x_i . E_k,
 * the first such index on ties: the same problem as VQ-VAE's assignment step (van den Oord et
 * al., 2017), computed without the (N, K) score matrix that a matmul followed by an argmin writes
 * to memory and reads again. The tiling is the register blocking of GotoBLAS / BLIS micro-kernels
 * (Goto and van de Geijn, 2008, "Anatomy of High-Performance Matrix Multiplication"; Van Zee and
 * van de Geijn, 2015, "BLIS"): a tile of R rows times W codes accumulates in vector registers
 * while D runs; its scores then go into each lane's running minimum (one vector min) and into
 * the R rows' score lines, R * K floats that stay in the L1/L2 cache, where the first position of
 * each row's minimum is found once its last code is scored. Per score that is one min and one
 * store, where tracking the index lane by lane cost a compare and two blends, and a matmul path
 * pays a pass over the scores in memory.
 *
 * Every score is computed the same way by every variant and every thread count:
 *     acc = 0; for d in 0..D-1: acc = fma(x[d], -2 E[k][d], acc);  s = acc + |E_k|^2
 * (one rounding per fused multiply-add, D ascending; -2 E is exact), and the winner is the lowest
 * index among the minimal scores. So the AVX-512, AVX2 and portable variants return bitwise the
 * same codes, on any machine and for any number of threads (tests/unit/test_nearest_code.py).
 * A NaN score never wins; a row whose scores are all NaN or +inf gets code 0.
 *
 * Built and loaded by fused.py (ctypes; no Python or torch headers). Threads take chunks of rows
 * as they finish (no barrier but the final join): OpenMP's (built with -fopenmp), else POSIX
 * threads. Rows are independent, so the codes do not depend on which thread took which rows.
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#else
#include <pthread.h>
#endif
#include <stdint.h>
#include <stdlib.h>

#define TMM_OK 0
#define TMM_ENOMEM 1
#define TMM_EUNSUPPORTED 2
#define MAX_R 6 /* the most rows a variant's tile has */
/* Rows a thread takes at a time: threads that start late (a sleeping OpenMP worker) or run
 * slower (a core shared with another process) take fewer chunks; a multiple of R. */
#define CHUNK_ROWS 240

/* Work shared by the threads of one call. `packed` holds -2 E in tiles of `width` codes,
 * [tile][d][lane] (codes past K are zero), `sqnorm` |E|^2 padded with +inf to the same length. */
typedef struct {
    const float *x;
    int64_t d;
    const float *packed;
    const float *sqnorm;
    int64_t k_padded;
    int64_t n;
    int64_t *out;
} job_t;

/* ---- portable variant: one score at a time; the reference the vector variants must match --- */

static void rows_portable(const job_t *job, int64_t begin, int64_t end, float *scores) {
    (void)scores;
    const int64_t d = job->d, width = 16;
    for (int64_t i = begin; i < end; i++) {
        const float *xi = job->x + i * d;
        float best = INFINITY;
        int64_t at = 0;
        for (int64_t k = 0; k < job->k_padded; k++) {
            const float *e = job->packed + (k / width) * d * width + (k % width);
            float acc = 0.0f;
            for (int64_t j = 0; j < d; j++) acc = fmaf(xi[j], e[j * width], acc);
            float s = acc + job->sqnorm[k];
            if (s < best) {
                best = s;
                at = k;
            }
        }
        job->out[i] = at;
    }
}

/* ---- vector variants: R rows x (NV vectors of VL lanes) codes per tile ---------------------- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* AVX2 + FMA: 6 rows x 16 codes, twelve 8-lane accumulators (BLIS's Haswell kernel shape). */
#define KERNEL_NAME rows_avx2
#define KERNEL_TARGET __attribute__((target("avx2,fma")))
#define R 6
#define NV 2
#define VL 8
#define VEC __m256
#define VZERO() _mm256_setzero_ps()
#define VINF() _mm256_set1_ps(INFINITY)
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VBCAST(p) _mm256_broadcast_ss(p)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VMIN(a, b) _mm256_min_ps(a, b) /* b where either is NaN */
#define VSET1(x) _mm256_set1_ps(x)
#define EQBITS(a, b) ((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)))
#include "nearest_code_kernel.h"

/* AVX-512F: 6 rows x 32 codes, twelve 16-lane accumulators. The rows' score lines stay in a
 * 32 KiB L1 beside the codebook tiles streaming through it up to K = 1024 (24 KiB): with 8 rows
 * (32 KiB, the whole L1) this variant ran at 0.55 of the 6-row one and of the AVX2 variant on an
 * AMD EPYC Zen 4 (benchmarks/tokenizers.py). */
#define KERNEL_NAME rows_avx512
#define KERNEL_TARGET __attribute__((target("avx512f")))
#define R 6
#define NV 2
#define VL 16
#define VEC __m512
#define VZERO() _mm512_setzero_ps()
#define VINF() _mm512_set1_ps(INFINITY)
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VMIN(a, b) _mm512_min_ps(a, b)
#define VSET1(x) _mm512_set1_ps(x)
#define EQBITS(a, b) ((unsigned)_mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ))
#include "nearest_code_kernel.h"
#endif

/* ---- dispatch ------------------------------------------------------------------------------ */

/* Rows [begin, end) of a job; scores: MAX_R * k_padded floats of scratch for this thread. */
typedef void (*rows_fn)(const job_t *, int64_t, int64_t, float *);

/* Variant ids, also the Python side's names: 0 portable, 1 avx2, 2 avx512. */
int tmm_best_variant(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static int variant_ok(int variant) {
    return variant == 0 || (variant > 0 && variant <= tmm_best_variant());
}

static rows_fn variant_fn(int variant) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (variant == 2) return rows_avx512;
    if (variant == 1) return rows_avx2;
#endif
    (void)variant;
    return rows_portable;
}

static int64_t variant_width(int variant) { return variant == 2 ? 32 : 16; }

/* Rows [c * CHUNK_ROWS, (c + 1) * CHUNK_ROWS) of the job, clipped to n. */
static void run_chunk(const job_t *job, rows_fn fn, int64_t c, float *scores) {
    int64_t stop = (c + 1) * CHUNK_ROWS < job->n ? (c + 1) * CHUNK_ROWS : job->n;
    fn(job, c * CHUNK_ROWS, stop, scores);
}

#ifndef _OPENMP
typedef struct {
    const job_t *job;
    rows_fn fn;
    int64_t chunks, *next; /* the chunk count and the next chunk to take, shared */
    float *scores;
} worker_t;

static void *run_worker(void *arg) {
    const worker_t *w = (const worker_t *)arg;
    for (int64_t c; (c = __atomic_fetch_add(w->next, 1, __ATOMIC_RELAXED)) < w->chunks;)
        run_chunk(w->job, w->fn, c, w->scores);
    return NULL;
}
#endif

/* out[i] = argmin_k |E_k|^2 - 2 x_i . E_k for x (n, d), codebook (k, d), sqnorm (k), all
 * C-contiguous float32; out (n) int64. variant: -1 the best this CPU runs, else 0/1/2.
 * threads >= 1. Returns TMM_OK, TMM_ENOMEM or TMM_EUNSUPPORTED (variant not on this CPU). */
int tmm_nearest_code(const float *x, int64_t n, int64_t d, const float *codebook,
                     const float *sqnorm, int64_t k, int64_t *out, int variant, int threads) {
    if (variant < 0) variant = tmm_best_variant();
    if (!variant_ok(variant)) return TMM_EUNSUPPORTED;
    if (n <= 0) return TMM_OK;
    const int64_t width = variant_width(variant);
    const int64_t k_padded = (k + width - 1) / width * width;
    float *packed = (float *)calloc((size_t)(k_padded * d), sizeof(float));
    float *sq = (float *)malloc((size_t)k_padded * sizeof(float));
    if (!packed || !sq) {
        free(packed);
        free(sq);
        return TMM_ENOMEM;
    }
    for (int64_t c = 0; c < k_padded; c++) {
        sq[c] = c < k ? sqnorm[c] : INFINITY;
        if (c >= k) continue;
        float *tile = packed + (c / width) * d * width + (c % width);
        for (int64_t j = 0; j < d; j++) tile[j * width] = -2.0f * codebook[c * d + j];
    }
    job_t job = {x, d, packed, sq, k_padded, n, out};
    rows_fn fn = variant_fn(variant);
    if (threads < 1) threads = 1;
    if (threads > n) threads = (int)n;
    const size_t line = (size_t)(MAX_R * k_padded); /* one thread's score lines */
    float *scores = (float *)malloc((size_t)threads * line * sizeof(float));
    int rc = scores ? TMM_OK : TMM_ENOMEM;
    const int64_t chunks = (n + CHUNK_ROWS - 1) / CHUNK_ROWS;
    if (rc == TMM_OK && threads == 1) {
        fn(&job, 0, n, scores);
    } else if (rc == TMM_OK) {
#ifdef _OPENMP
        /* The threads of the OpenMP runtime torch loaded (fused.py imports torch first, and the
         * library's libgomp.so.1 resolves to the one already loaded): torch's intra-op workers,
         * which spin a while after each torch op, take the chunks instead of competing with
         * new threads for the cores (POSIX threads ran slower right after a torch op). */
#pragma omp parallel num_threads(threads)
        {
            float *mine = scores + (size_t)omp_get_thread_num() * line;
#pragma omp for schedule(dynamic, 1)
            for (int64_t c = 0; c < chunks; c++) run_chunk(&job, fn, c, mine);
        }
#else
        pthread_t *ids = (pthread_t *)malloc((size_t)threads * sizeof(pthread_t));
        char *started = (char *)calloc((size_t)threads, 1);
        worker_t *workers = (worker_t *)malloc((size_t)threads * sizeof(worker_t));
        int64_t next = 0;
        if (!ids || !started || !workers) {
            rc = TMM_ENOMEM;
        } else {
            for (int t = 0; t < threads; t++) {
                workers[t] = (worker_t){&job, fn, chunks, &next, scores + (size_t)t * line};
                if (t > 0) started[t] = pthread_create(&ids[t], NULL, run_worker, &workers[t]) == 0;
            }
            run_worker(&workers[0]); /* the calling thread works too, until no chunk is left */
            for (int t = 1; t < threads; t++)
                if (started[t]) pthread_join(ids[t], NULL);
        }
        free(ids);
        free(started);
        free(workers);
#endif
    }
    free(scores);
    free(packed);
    free(sq);
    return rc;
}
