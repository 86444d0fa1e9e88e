/* Row kernels of generated code: Softmax, LogSoftmax and Layer/RMS normalization of one
 * contiguous row (the generated code calls the pieces and does the one libm call per row, log
 * or sqrt, itself: these headers call no libm function, so bundles list only what a model uses).
 *
 * Written so that gcc/clang vectorize them without -ffast-math: a sum keeps
 * GRAPHOPT_ROW_LANES independent partial results (a fixed inner loop the compiler turns into
 * vector registers) instead of one serial accumulator, whose reordering C forbids; exp is
 * graphopt_math.h's graphopt_expf, shortened below to arguments <= 0 (graphopt_expf_nonpos).
 * The lanes change the order of the float additions only, not the values added (sums of a row
 * differ from a serial sum by a few ulp).
 */
#ifndef GRAPHOPT_ROWS_H
#define GRAPHOPT_ROWS_H

#include <stdint.h>

#include "graphopt_math.h"

#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

#define GRAPHOPT_ROW_LANES 16

/* max_j x[j] (-inf for an empty row). A row with a NaN may return it or skip it: either way
 * the exp pass then makes the row NaN. Compilers do not vectorize a float max reduction without
 * -ffinite-math-only, hence the intrinsics where the target has them. */
GRAPHOPT_MATH_INLINE float graphopt_row_maxf(const float* x, int64_t n) {
    float top = -INFINITY;
    int64_t j = 0;
#if defined(__AVX__)
    if (n >= 8) {
        float lanes[8];
        int l;
        __m256 m = _mm256_loadu_ps(x);
        for (j = 8; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
        _mm256_storeu_ps(lanes, m);
        for (l = 0; l < 8; ++l) top = lanes[l] > top ? lanes[l] : top;
    }
#elif defined(__ARM_NEON) && defined(__aarch64__)
    if (n >= 4) {
        float32x4_t m = vld1q_f32(x);
        for (j = 4; j + 4 <= n; j += 4) m = vmaxq_f32(m, vld1q_f32(x + j));
        top = vmaxvq_f32(m);
    }
#endif
    for (; j < n; ++j) top = x[j] > top ? x[j] : top;
    return top;
}

/* e^x for x <= 0 (or NaN): the arguments of a softmax after its max is subtracted. The same
 * values as graphopt_expf there (n is then in [-126, 0], so 2^n is one normal factor and the
 * overflow handling is not needed), for fewer vector operations per element. */
GRAPHOPT_MATH_INLINE float graphopt_expf_nonpos(float x) {
    const float xc = graphopt_select(x < -87.3f, -87.3f, x); /* NaN stays NaN */
    int32_t n;
    const float p = graphopt_exp_reduced(xc, &n);
    return graphopt_select(x < -87.3f, 0.0f, p * graphopt_float_bits((uint32_t)(n + 127) << 23));
}

/* y[j] = e^(x[j] - shift) with shift >= every x[j] (the row's max); returns their sum. */
GRAPHOPT_MATH_INLINE float graphopt_row_exp_sumf(const float* x, float* y, int64_t n,
                                                 float shift) {
    float lanes[GRAPHOPT_ROW_LANES] = {0};
    int64_t j = 0;
    int l;
    for (; j + GRAPHOPT_ROW_LANES <= n; j += GRAPHOPT_ROW_LANES)
        for (l = 0; l < GRAPHOPT_ROW_LANES; ++l) {
            const float e = graphopt_expf_nonpos(x[j + l] - shift);
            y[j + l] = e;
            lanes[l] += e;
        }
    for (; j < n; ++j) {
        const float e = graphopt_expf_nonpos(x[j] - shift);
        y[j] = e;
        lanes[0] += e;
    }
    for (l = 1; l < GRAPHOPT_ROW_LANES; ++l) lanes[0] += lanes[l];
    return lanes[0];
}

/* Softmax of a contiguous row: y = e^(x - max) / sum e^(x - max) (subtracting the max keeps
 * the exponentials finite). A row of -inf only (fully masked) gives NaN, as onnxruntime does. */
GRAPHOPT_MATH_INLINE void graphopt_softmax_rowf(const float* x, float* y, int64_t n) {
    const float top = graphopt_row_maxf(x, n);
    const float scale = 1.0f / graphopt_row_exp_sumf(x, y, n, top);
    int64_t j;
    for (j = 0; j < n; ++j) y[j] *= scale;
}

/* sum_j (x[j] - center)^2 in double lanes (center 0: the sum of squares). */
GRAPHOPT_MATH_INLINE double graphopt_row_square_sum(const float* x, int64_t n, double center) {
    double lanes[GRAPHOPT_ROW_LANES / 2] = {0};
    int64_t j = 0;
    int l;
    for (; j + GRAPHOPT_ROW_LANES / 2 <= n; j += GRAPHOPT_ROW_LANES / 2)
        for (l = 0; l < GRAPHOPT_ROW_LANES / 2; ++l) {
            const double d = (double)x[j + l] - center;
            lanes[l] += d * d;
        }
    for (; j < n; ++j) {
        const double d = (double)x[j] - center;
        lanes[0] += d * d;
    }
    for (l = 1; l < GRAPHOPT_ROW_LANES / 2; ++l) lanes[0] += lanes[l];
    return lanes[0];
}

/* sum_j x[j] in double lanes. */
GRAPHOPT_MATH_INLINE double graphopt_row_sum(const float* x, int64_t n) {
    double lanes[GRAPHOPT_ROW_LANES / 2] = {0};
    int64_t j = 0;
    int l;
    for (; j + GRAPHOPT_ROW_LANES / 2 <= n; j += GRAPHOPT_ROW_LANES / 2)
        for (l = 0; l < GRAPHOPT_ROW_LANES / 2; ++l) lanes[l] += (double)x[j + l];
    for (; j < n; ++j) lanes[0] += (double)x[j];
    for (l = 1; l < GRAPHOPT_ROW_LANES / 2; ++l) lanes[0] += lanes[l];
    return lanes[0];
}

/* y = (x - mu) * inv * scale + bias over a contiguous row: the last pass of Layer/RMS
 * normalization (mu = 0 for RMS), after graphopt_row_sum and graphopt_row_square_sum gave the
 * statistics. scale and bias are rows of n, or NULL. */
GRAPHOPT_MATH_INLINE void graphopt_norm_apply_rowf(const float* x, float* y, int64_t n,
                                                   float mu, float inv, const float* scale,
                                                   const float* bias) {
    int64_t j;
    if (scale && bias)
        for (j = 0; j < n; ++j) y[j] = (x[j] - mu) * inv * scale[j] + bias[j];
    else if (scale)
        for (j = 0; j < n; ++j) y[j] = (x[j] - mu) * inv * scale[j];
    else if (bias)
        for (j = 0; j < n; ++j) y[j] = (x[j] - mu) * inv + bias[j];
    else
        for (j = 0; j < n; ++j) y[j] = (x[j] - mu) * inv;
}

/* Attention tiles (the fused attention step, graphopt/backend/c/ops/attention.py): a block of
 * GRAPHOPT_ATTN_ROWS rows times GRAPHOPT_ATTN_COLS columns of C = A B, with A row-major
 * (rows of k at stride lda) and B row-major (k rows of at least GRAPHOPT_ATTN_COLS at stride
 * ldb). Scores are (scaled Q rows) x (K^T packed per head), outputs are (probability rows) x
 * (V packed per head, or its rows in place); the operands are cache-resident, so
 * the tile sums in registers (fixed trip counts: the compiler unrolls the rows and vectorizes
 * the columns) and stores once. */
#define GRAPHOPT_ATTN_ROWS 6
#define GRAPHOPT_ATTN_COLS 16

#if defined(__AVX2__) && defined(__FMA__)
/* The register tile in vectors of `lanes` floats, 2 per row: c<r>0/c<r>1 += a[r][p] * (b0, b1)
 * over p, then stored (named accumulators: gcc keeps an array of them on the stack). */
#define GRAPHOPT_ATTN_FMA_ROW(r, set1, fma)                          \
    av = set1(a[(r) * lda + p]);                                     \
    c##r##0 = fma(av, b0, c##r##0);                                  \
    c##r##1 = fma(av, b1, c##r##1)
#define GRAPHOPT_ATTN_STORE_ROW(r, store, lanes)                     \
    store(c + (r) * ldc, c##r##0);                                   \
    store(c + (r) * ldc + (lanes), c##r##1)
/* step(r, x, y) for the tile's 6 rows */
#define GRAPHOPT_ATTN_EACH_ROW(step, x, y) \
    step(0, x, y); step(1, x, y); step(2, x, y); step(3, x, y); step(4, x, y); step(5, x, y)
#define GRAPHOPT_ATTN_TILE(vec, lanes, zero, load, set1, fma, store)                       \
    do {                                                                                    \
        vec c00 = zero(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;            \
        vec c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;               \
        for (p = 0; p < k; ++p) {                                                           \
            const vec b0 = load(b + p * ldb), b1 = load(b + p * ldb + (lanes));             \
            vec av;                                                                         \
            GRAPHOPT_ATTN_EACH_ROW(GRAPHOPT_ATTN_FMA_ROW, set1, fma);                       \
        }                                                                                   \
        GRAPHOPT_ATTN_EACH_ROW(GRAPHOPT_ATTN_STORE_ROW, store, lanes);                      \
    } while (0)
#endif

GRAPHOPT_MATH_INLINE void graphopt_attn_tilef(const float* a, int64_t lda, const float* b,
                                              int64_t ldb, int64_t k, float* c, int64_t ldc) {
    int64_t p;
#if defined(__AVX2__) && defined(__FMA__)
    GRAPHOPT_ATTN_TILE(__m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps,
                       _mm256_fmadd_ps, _mm256_storeu_ps);
#else
    float acc[GRAPHOPT_ATTN_ROWS][GRAPHOPT_ATTN_COLS];
    int r, j;
    for (r = 0; r < GRAPHOPT_ATTN_ROWS; ++r)
        for (j = 0; j < GRAPHOPT_ATTN_COLS; ++j) acc[r][j] = 0.0f;
    for (p = 0; p < k; ++p) {
        const float* bp = b + p * ldb;
        for (r = 0; r < GRAPHOPT_ATTN_ROWS; ++r) {
            const float av = a[r * lda + p];
            for (j = 0; j < GRAPHOPT_ATTN_COLS; ++j) acc[r][j] += av * bp[j];
        }
    }
    for (r = 0; r < GRAPHOPT_ATTN_ROWS; ++r)
        for (j = 0; j < GRAPHOPT_ATTN_COLS; ++j) c[r * ldc + j] = acc[r][j];
#endif
}

#if defined(__AVX512F__)
/* GRAPHOPT_ATTN_ROWS x 32 columns of C = A B in 16-lane registers: half the broadcasts and
 * loads per multiply-add of the 8-lane tile. */
GRAPHOPT_MATH_INLINE void graphopt_attn_tile32f(const float* a, int64_t lda, const float* b,
                                                int64_t ldb, int64_t k, float* c, int64_t ldc) {
    int64_t p;
    GRAPHOPT_ATTN_TILE(__m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps,
                       _mm512_fmadd_ps, _mm512_storeu_ps);
}
#endif

/* C = A B for GRAPHOPT_ATTN_ROWS rows and n columns, n a multiple of GRAPHOPT_ATTN_COLS.
 * Not inlined: the loop calling it also runs the softmax, whose constants gcc would otherwise
 * keep in the vector registers the tile's accumulators need (they then spill to the stack). */
#if defined(__GNUC__)
#define GRAPHOPT_ATTN_CALL static __attribute__((noinline, unused))
#else
#define GRAPHOPT_ATTN_CALL static
#endif
GRAPHOPT_ATTN_CALL void graphopt_attn_rowsf(const float* a, int64_t lda, const float* b,
                                            int64_t ldb, int64_t k, float* c, int64_t ldc,
                                            int64_t n) {
    int64_t j = 0;
#if defined(__AVX512F__)
    for (; j + 2 * GRAPHOPT_ATTN_COLS <= n; j += 2 * GRAPHOPT_ATTN_COLS)
        graphopt_attn_tile32f(a, lda, b + j, ldb, k, c + j, ldc);
#endif
    for (; j < n; j += GRAPHOPT_ATTN_COLS)
        graphopt_attn_tilef(a, lda, b + j, ldb, k, c + j, ldc);
}

/* kt[d * ldt + j] = k[j * step + d]: K^T of one head whose rows (depth floats) are contiguous,
 * by 8 x 8 blocks transposed in registers where the target has AVX. */
GRAPHOPT_MATH_INLINE void graphopt_attn_transposef(const float* k, int64_t step, int64_t keys,
                                                   int64_t depth, float* kt, int64_t ldt) {
    int64_t j = 0, d;
#if defined(__AVX__)
    for (; j + 8 <= keys; j += 8)
        for (d = 0; d + 8 <= depth; d += 8) {
            const float* s = k + j * step + d;
            float* t = kt + d * ldt + j;
            const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + step);
            const __m256 r2 = _mm256_loadu_ps(s + 2 * step), r3 = _mm256_loadu_ps(s + 3 * step);
            const __m256 r4 = _mm256_loadu_ps(s + 4 * step), r5 = _mm256_loadu_ps(s + 5 * step);
            const __m256 r6 = _mm256_loadu_ps(s + 6 * step), r7 = _mm256_loadu_ps(s + 7 * step);
            const __m256 u0 = _mm256_unpacklo_ps(r0, r1), u1 = _mm256_unpackhi_ps(r0, r1);
            const __m256 u2 = _mm256_unpacklo_ps(r2, r3), u3 = _mm256_unpackhi_ps(r2, r3);
            const __m256 u4 = _mm256_unpacklo_ps(r4, r5), u5 = _mm256_unpackhi_ps(r4, r5);
            const __m256 u6 = _mm256_unpacklo_ps(r6, r7), u7 = _mm256_unpackhi_ps(r6, r7);
            const __m256 v0 = _mm256_shuffle_ps(u0, u2, 0x44), v1 = _mm256_shuffle_ps(u0, u2, 0xee);
            const __m256 v2 = _mm256_shuffle_ps(u1, u3, 0x44), v3 = _mm256_shuffle_ps(u1, u3, 0xee);
            const __m256 v4 = _mm256_shuffle_ps(u4, u6, 0x44), v5 = _mm256_shuffle_ps(u4, u6, 0xee);
            const __m256 v6 = _mm256_shuffle_ps(u5, u7, 0x44), v7 = _mm256_shuffle_ps(u5, u7, 0xee);
            _mm256_storeu_ps(t, _mm256_permute2f128_ps(v0, v4, 0x20));
            _mm256_storeu_ps(t + ldt, _mm256_permute2f128_ps(v1, v5, 0x20));
            _mm256_storeu_ps(t + 2 * ldt, _mm256_permute2f128_ps(v2, v6, 0x20));
            _mm256_storeu_ps(t + 3 * ldt, _mm256_permute2f128_ps(v3, v7, 0x20));
            _mm256_storeu_ps(t + 4 * ldt, _mm256_permute2f128_ps(v0, v4, 0x31));
            _mm256_storeu_ps(t + 5 * ldt, _mm256_permute2f128_ps(v1, v5, 0x31));
            _mm256_storeu_ps(t + 6 * ldt, _mm256_permute2f128_ps(v2, v6, 0x31));
            _mm256_storeu_ps(t + 7 * ldt, _mm256_permute2f128_ps(v3, v7, 0x31));
        }
    if (depth % 8) /* the columns the blocks left, for the rows they covered */
        for (d = depth - depth % 8; d < depth; ++d) {
            int64_t i;
            for (i = 0; i < j; ++i) kt[d * ldt + i] = k[i * step + d];
        }
#endif
    for (; j < keys; ++j)
        for (d = 0; d < depth; ++d) kt[d * ldt + j] = k[j * step + d];
}

/* Score row of the fused attention: row += mask (mask NULL: none); returns the row's max. One
 * pass, so the row is read once before the exponentials. */
GRAPHOPT_MATH_INLINE float graphopt_attn_mask_maxf(float* row, const float* mask, int64_t n) {
    int64_t j;
    if (mask)
        for (j = 0; j < n; ++j) row[j] += mask[j];
    return graphopt_row_maxf(row, n);
}

/* y[d] = o[d] / sum for the n outputs of one query row (y at stride `step`). A NaN sum (a
 * fully masked row, or a NaN score: every probability of the row is then NaN) gives zeros when
 * `nan_to_zero` (the Where(IsNaN(p), 0, p) exporters add), NaN otherwise, as the softmax
 * followed by the product would. */
GRAPHOPT_MATH_INLINE void graphopt_attn_normalizef(const float* o, float* y, int64_t step,
                                                   int64_t n, float sum, int nan_to_zero) {
    const float inv = nan_to_zero && sum != sum ? 0.0f : 1.0f / sum;
    int64_t d;
    if (inv == 0.0f) /* not o * 0: o is NaN there */
        for (d = 0; d < n; ++d) y[d * step] = 0.0f;
    else if (step == 1)
        for (d = 0; d < n; ++d) y[d] = o[d] * inv;
    else
        for (d = 0; d < n; ++d) y[d * step] = o[d] * inv;
}

#endif
