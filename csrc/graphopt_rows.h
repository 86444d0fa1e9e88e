/* Row kernels of generated code: Softmax, LogSoftmax and Layer/RMS normalization of one
 * contiguous row (the generated code calls the pieces and does the one libm call per row, log
 * or sqrt, itself: these headers call no libm function, so bundles list only what a model uses).
 *
 * Written so that gcc/clang vectorize them without -ffast-math: a sum keeps
 * GRAPHOPT_ROW_LANES independent partial results (a fixed inner loop the compiler turns into
 * vector registers) instead of one serial accumulator, whose reordering C forbids; exp is
 * graphopt_math.h's inline graphopt_expf. The lanes change the order of the float additions
 * only, not the values added (sums of a row differ from a serial sum by a few ulp).
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

/* y[j] = e^(x[j] - shift); returns their sum. */
GRAPHOPT_MATH_INLINE float graphopt_row_exp_sumf(const float* x, float* y, int64_t n,
                                                 float shift) {
    float lanes[GRAPHOPT_ROW_LANES] = {0};
    int64_t j = 0;
    int l;
    for (; j + GRAPHOPT_ROW_LANES <= n; j += GRAPHOPT_ROW_LANES)
        for (l = 0; l < GRAPHOPT_ROW_LANES; ++l) {
            const float e = graphopt_expf(x[j + l] - shift);
            y[j + l] = e;
            lanes[l] += e;
        }
    for (; j < n; ++j) {
        const float e = graphopt_expf(x[j] - shift);
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
 * (V packed per head); both operands are packed into cache-resident buffers by the caller, so
 * the tile sums in registers (fixed trip counts: the compiler unrolls the rows and vectorizes
 * the columns) and stores once. */
#define GRAPHOPT_ATTN_ROWS 6
#define GRAPHOPT_ATTN_COLS 16

#if defined(__AVX2__) && defined(__FMA__)
/* Row r of the tile: c<r>0/c<r>1 += a[r][p] * (b0, b1). */
#define GRAPHOPT_ATTN_FMA_ROW(r)                                     \
    av = _mm256_broadcast_ss(a + (r) * lda + p);                     \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                      \
    c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1)
#define GRAPHOPT_ATTN_STORE_ROW(r)                                   \
    _mm256_storeu_ps(c + (r) * ldc, c##r##0);                        \
    _mm256_storeu_ps(c + (r) * ldc + 8, c##r##1)
#endif

GRAPHOPT_MATH_INLINE void graphopt_attn_tilef(const float* a, int64_t lda, const float* b,
                                              int64_t ldb, int64_t k, float* c, int64_t ldc) {
    int64_t p;
#if defined(__AVX2__) && defined(__FMA__)
    /* 12 named accumulators: gcc keeps an array of them on the stack */
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (p = 0; p < k; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b + p * ldb), b1 = _mm256_loadu_ps(b + p * ldb + 8);
        __m256 av;
        GRAPHOPT_ATTN_FMA_ROW(0);
        GRAPHOPT_ATTN_FMA_ROW(1);
        GRAPHOPT_ATTN_FMA_ROW(2);
        GRAPHOPT_ATTN_FMA_ROW(3);
        GRAPHOPT_ATTN_FMA_ROW(4);
        GRAPHOPT_ATTN_FMA_ROW(5);
    }
    GRAPHOPT_ATTN_STORE_ROW(0);
    GRAPHOPT_ATTN_STORE_ROW(1);
    GRAPHOPT_ATTN_STORE_ROW(2);
    GRAPHOPT_ATTN_STORE_ROW(3);
    GRAPHOPT_ATTN_STORE_ROW(4);
    GRAPHOPT_ATTN_STORE_ROW(5);
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
    int64_t j;
    for (j = 0; j < n; j += GRAPHOPT_ATTN_COLS)
        graphopt_attn_tilef(a, lda, b + j, ldb, k, c + j, ldc);
}

/* Softmax of a score row in place, then probabilities that are NaN set to 0 when
 * `nan_to_zero` (the Where(IsNaN(p), 0, p) exporters add so fully masked rows give zeros). */
GRAPHOPT_MATH_INLINE void graphopt_attn_softmaxf(float* row, int64_t n, int nan_to_zero) {
    const float top = graphopt_row_maxf(row, n);
    const float scale = 1.0f / graphopt_row_exp_sumf(row, row, n, top);
    int64_t j;
    if (nan_to_zero)
        for (j = 0; j < n; ++j) {
            const float p = row[j] * scale;
            row[j] = graphopt_select(p != p, 0.0f, p);
        }
    else
        for (j = 0; j < n; ++j) row[j] *= scale;
}

#endif
