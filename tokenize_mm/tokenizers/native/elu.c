/* ELU (Clevert et al., 2016, "Fast and Accurate Deep Network Learning by Exponential Linear
 * Units"), alpha = 1: y = x for x >= 0, y = exp(x) - 1 below, elementwise over n floats.
 *
 * SEANet's encoder (EnCodec, Defossez et al., 2022) applies an ELU before every convolution, and on
 * the CPU torch's ELU spends most of its time in a double-float expm1 (about 6 times the cost of
 * a copy). Here expm1 is the textbook reduction (Tang, 1992, "Table-driven implementation of the
 * expm1 function in IEEE floating-point arithmetic", without the table):
 *     x = k ln2 + r, |r| <= ln2 / 2,  k = round(x / ln2)   (ln2 split in two: Cody and Waite)
 *     expm1(x) = 2^k expm1(r) + (2^k - 1)                  (one fused multiply-add; 2^k - 1 exact)
 * with expm1(r) = r + r^2 (1/2 + r/6 + ... + r^5/5040), Taylor to r^7, whose remainder is under
 * 1.3e-8 of the result for |r| <= ln2 / 2. Within one unit in the last place of a float64 ELU
 * over [-100, 5] (tests/unit/test_elu.py; under 0.9 in the scans we made).
 *
 * Every variant computes each element with the same operations in the same order (fused
 * multiply-adds, k rounded in the current rounding mode, round to nearest even unless a caller
 * changed it), so the AVX2 and portable variants return bitwise the same values, also for any
 * number of threads (each element is computed alone; threads take fixed chunks). x >= 0
 * (including -0.0, +inf) and NaN pass through unchanged; below -87 the result is -1 (as
 * exp(x) - 1 rounds to). x and y may be the same buffer (in place).
 *
 * The gradient, from the output: dy/dx = 1 for y > 0 and exp(x) = y + 1 below, so
 * dL/dx = g for y > 0, else fma(g, y, g) (one rounding; torch computes exp(x) again). Where
 * y + 1 is tiny (x below about -15) it keeps y's absolute error, not a relative one: the
 * gradient there is off by up to 6e-8 |g| (0 below about -17), as torch's in-place ELU's is.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TMM_OK 0
#define TMM_EUNSUPPORTED 2

int tmm_best_variant(void); /* nearest_code.c */

#define LN2_HI 0.693359375f /* 355 / 512: k * LN2_HI is exact for |k| < 2^14 */
#define LN2_LO -2.12194440e-4f
#define LOG2E 1.44269504088896341f
#define X_MIN -87.0f /* 2^k stays a normal float; expm1 is -1 in float32 below about -17 */
#define C2 0.5f
#define C3 (1.0f / 6.0f)
#define C4 (1.0f / 24.0f)
#define C5 (1.0f / 120.0f)
#define C6 (1.0f / 720.0f)
#define C7 (1.0f / 5040.0f)

/* ---- portable variant: the reference the vector variant must match ------------------------- */

static float elu_one(float x) {
    if (!(x < 0.0f)) return x; /* x >= 0 or NaN */
    const float c = x < X_MIN ? X_MIN : x;
    const float k = nearbyintf(c * LOG2E);
    float r = fmaf(k, -LN2_HI, c);
    r = fmaf(k, -LN2_LO, r);
    float q = fmaf(C7, r, C6);
    q = fmaf(q, r, C5);
    q = fmaf(q, r, C4);
    q = fmaf(q, r, C3);
    q = fmaf(q, r, C2);
    const float p = fmaf(r * r, q, r); /* expm1(r) */
    const uint32_t bits = (uint32_t)((int32_t)k + 127) << 23;
    float s; /* 2^k */
    memcpy(&s, &bits, sizeof s);
    return fmaf(s, p, s - 1.0f);
}

static void elu_portable(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = elu_one(x[i]);
}

static void elu_backward_portable(const float *g, const float *y, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = y[i] > 0.0f ? g[i] : fmaf(g[i], y[i], g[i]);
}

/* ---- AVX2 + FMA: 8 lanes, the same operations ---------------------------------------------- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static void elu_avx2(const float *x, float *y, int64_t n) {
    const __m256 zero = _mm256_setzero_ps(), xmin = _mm256_set1_ps(X_MIN);
    const __m256 log2e = _mm256_set1_ps(LOG2E), one = _mm256_set1_ps(1.0f);
    const __m256 nhi = _mm256_set1_ps(-LN2_HI), nlo = _mm256_set1_ps(-LN2_LO);
    const __m256i bias = _mm256_set1_epi32(127);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 keep = _mm256_cmp_ps(v, zero, _CMP_NLT_UQ); /* x >= 0 or NaN */
        const __m256 c = _mm256_max_ps(v, xmin);
        const __m256 k = _mm256_round_ps(_mm256_mul_ps(c, log2e),
                                         _MM_FROUND_CUR_DIRECTION);
        __m256 r = _mm256_fmadd_ps(k, nhi, c);
        r = _mm256_fmadd_ps(k, nlo, r);
        __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(C7), r, _mm256_set1_ps(C6));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(C5));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(C4));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(C3));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(C2));
        const __m256 p = _mm256_fmadd_ps(_mm256_mul_ps(r, r), q, r);
        const __m256 s = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), bias), 23));
        const __m256 out = _mm256_fmadd_ps(s, p, _mm256_sub_ps(s, one));
        _mm256_storeu_ps(y + i, _mm256_blendv_ps(out, v, keep));
    }
    elu_portable(x + i, y + i, n - i); /* the last n % 8: the same numbers */
}

__attribute__((target("avx2,fma"))) static void elu_backward_avx2(const float *g, const float *y,
                                                                  float *out, int64_t n) {
    const __m256 zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i), yv = _mm256_loadu_ps(y + i);
        const __m256 positive = _mm256_cmp_ps(yv, zero, _CMP_GT_OQ);
        const __m256 below = _mm256_fmadd_ps(gv, yv, gv);
        _mm256_storeu_ps(out + i, _mm256_blendv_ps(below, gv, positive));
    }
    elu_backward_portable(g + i, y + i, out + i, n - i);
}
#endif

/* ---- dispatch ------------------------------------------------------------------------------ */

#define CHUNK 65536 /* elements a thread takes at a time (a multiple of 8) */

/* Both passes as one shape: out[i] from a[i] (and b[i] for the backward). */
typedef void (*pass_fn)(const float *a, const float *b, float *out, int64_t n);

static void forward_portable(const float *x, const float *unused, float *y, int64_t n) {
    (void)unused;
    elu_portable(x, y, n);
}
#if defined(__x86_64__) && defined(__GNUC__)
static void forward_avx2(const float *x, const float *unused, float *y, int64_t n) {
    (void)unused;
    elu_avx2(x, y, n);
}
#endif

/* Runs the pass of `variant` (-1 the best this CPU runs, 0 portable, 1 AVX2: also what an
 * AVX-512 CPU runs, the loop being bound by memory) over n elements in fixed chunks on up to
 * `threads` OpenMP threads (one without OpenMP). b may be NULL for the forward. */
static int run(pass_fn portable, pass_fn avx2, const float *a, const float *b, float *out,
               int64_t n, int variant, int threads) {
    const int best = tmm_best_variant();
    if (variant < 0) variant = best;
    if (variant > best) return TMM_EUNSUPPORTED;
    pass_fn fn = variant >= 1 && avx2 ? avx2 : portable;
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && chunks > 1)
#endif
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t begin = c * CHUNK, len = n - begin < CHUNK ? n - begin : CHUNK;
        fn(a + begin, b ? b + begin : NULL, out + begin, len);
    }
    (void)threads;
    return TMM_OK;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define AVX2_FORWARD forward_avx2
#define AVX2_BACKWARD elu_backward_avx2
#else
#define AVX2_FORWARD NULL
#define AVX2_BACKWARD NULL
#endif

/* y[i] = ELU(x[i]) for n floats (y == x allowed). variant: -1 the best this CPU runs, 0 portable,
 * 1 AVX2. threads >= 1. Returns TMM_OK, or TMM_EUNSUPPORTED for a variant this CPU does not run. */
int tmm_elu(const float *x, float *y, int64_t n, int variant, int threads) {
    return run(forward_portable, AVX2_FORWARD, x, NULL, y, n, variant, threads);
}

/* out[i] = dL/dx from g = dL/dy and y = ELU(x), n floats (out == g allowed); variant and
 * threads as tmm_elu. */
int tmm_elu_backward(const float *g, const float *y, float *out, int64_t n, int variant,
                     int threads) {
    return run(elu_backward_portable, AVX2_BACKWARD, g, y, out, n, variant, threads);
}
