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

#endif
