/* Vectorizable float exp, erf and tanh for generated elementwise loops.
 *
 * libm's expf/erff/tanhf are opaque calls: a loop that calls them runs one element at a time
 * (erff alone took 12% of a BERT encoder's run). These are branch-free inline functions made
 * of multiply-adds, clamps (selects) and integer bit moves only, so gcc/clang vectorize the
 * loops that inline them at -O3 (AVX2, AVX-512, NEON) and plain C99 still builds them on any
 * target. Double-precision ops keep libm (graphopt_exp, graphopt_erf, graphopt_tanh are exp,
 * erf, tanh), so the generated `graphopt_exp{f}` spelling covers both types.
 *
 * Accuracy (against double-precision libm over dense grids, native and -O2 portable builds;
 * tests/backend/test_transformer_kernels.py checks these bounds):
 *   graphopt_expf:  relative error < 1e-7 (about 1 ulp) wherever e^x is a normal float;
 *                   0 below x = -87.3 (e^x < 1.03 FLT_MIN: absolute error < 1.3e-38);
 *                   +inf above ln(FLT_MAX) = 88.72; NaN propagates.
 *   graphopt_erff:  absolute error < 5e-7 (|erf| <= 1); exactly +-1 beyond |x| = 4; NaN
 *                   propagates.
 *   graphopt_tanhf: absolute and relative error < 5e-7 (tanh x = x below |x| = 4e-4, where
 *                   that is the rounded value); exactly +-1 beyond |x| = 9; NaN propagates.
 * onnxruntime's own MLAS kernels use approximations of the same kind.
 */
#ifndef GRAPHOPT_MATH_H
#define GRAPHOPT_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define GRAPHOPT_MATH_INLINE static inline __attribute__((always_inline))
#else
#define GRAPHOPT_MATH_INLINE static inline
#endif

/* The float whose bits are `bits` (memcpy: the defined way to pun; compilers emit no copy). */
GRAPHOPT_MATH_INLINE float graphopt_float_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* cond ? a : b as integer bit masks. A plain ?: on floats is turned back into branches by
 * gcc (it threads the clamped constant through the code that follows), and under the default
 * -ftrapping-math a branch over float operations cannot be if-converted: the loop would stay
 * scalar. The masks keep it a select. */
GRAPHOPT_MATH_INLINE float graphopt_select(int cond, float a, float b) {
    uint32_t ua, ub;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    const uint32_t mask = (uint32_t)0 - (uint32_t)(cond != 0);
    return graphopt_float_bits((ua & mask) | (ub & ~mask));
}

/* |x| by clearing the sign bit (no libm call, so bundles for microcontrollers need none). */
GRAPHOPT_MATH_INLINE float graphopt_absf(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return graphopt_float_bits(bits & 0x7fffffffu);
}

/* x clamped to [lo, hi]; NaN stays NaN (both comparisons are false). */
GRAPHOPT_MATH_INLINE float graphopt_clampf(float x, float lo, float hi) {
    const float low = graphopt_select(x < lo, lo, x);
    return graphopt_select(low > hi, hi, low);
}

/* e^r where xc = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), by Cephes' degree-7
 * polynomial; n to *n. xc is already clamped by the caller (graphopt_expf, and the softmax's
 * graphopt_expf_nonpos in graphopt_rows.h). */
GRAPHOPT_MATH_INLINE float graphopt_exp_reduced(float xc, int32_t* n) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float t = xc * 1.44269504088896341f + magic;
    const float nf = t - magic;
    const float r = (xc - nf * 0.693359375f) - nf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    *n = (int32_t)nf;
    return p * r * r + r + 1.0f;
}

/* e^x: e^r (graphopt_exp_reduced) times 2^n, applied as two factors 2^(n/2) 2^(n - n/2) so
 * that n = 128 (the overflow to +inf) needs no branch. Results below e^-87.3 = 1.03 FLT_MIN are
 * flushed to 0, and x is clamped there first so that the discarded product is never subnormal
 * either: computing a subnormal costs a microcode assist per element on x86, and masked
 * attention scores (-inf, -1e4) land there by the thousand. */
GRAPHOPT_MATH_INLINE float graphopt_expf(float x) {
    const float xc = graphopt_clampf(x, -87.3f, 89.0f); /* NaN stays NaN */
    int32_t n;
    const float p = graphopt_exp_reduced(xc, &n);
    const int32_t half = n / 2;
    const float s1 = graphopt_float_bits((uint32_t)(half + 127) << 23);
    const float s2 = graphopt_float_bits((uint32_t)(n - half + 127) << 23);
    return graphopt_select(x < -87.3f, 0.0f, p * s1 * s2);
}

/* x P(x^2) / Q(x^2): the odd/even rational form of erf and tanh below; P has 7 and Q 5
 * coefficients, highest power first (constant arrays: the loops unroll into multiply-adds). */
GRAPHOPT_MATH_INLINE float graphopt_odd_rationalf(float x, const float p[7], const float q[5]) {
    const float x2 = x * x;
    float num = p[0], den = q[0];
    int i;
    for (i = 1; i < 7; ++i) num = num * x2 + p[i];
    for (i = 1; i < 5; ++i) den = den * x2 + q[i];
    return x * num / den;
}

/* erf x: the odd/even rational minimax fit on [-4, 4] used by Eigen and XLA; erf of +-4 rounds
 * to +-1 in float, so the clamp is exact. */
GRAPHOPT_MATH_INLINE float graphopt_erff(float x) {
    static const float p[7] = {-2.72614225801306e-10f, 2.77068142495902e-08f,
                               -2.10102402082508e-06f, -5.69250639462346e-05f,
                               -7.34990630326855e-04f, -2.95459980854025e-03f,
                               -1.60960333262415e-02f};
    static const float q[5] = {-1.45660718464996e-05f, -2.13374055278905e-04f,
                               -1.68282697438203e-03f, -7.37332916720468e-03f,
                               -1.42647390514189e-02f};
    return graphopt_odd_rationalf(graphopt_clampf(x, -4.0f, 4.0f), p, q); /* NaN stays NaN */
}

/* tanh x: the odd/even rational fit of Eigen on [-9, 9] (tanh of +-9 rounds to +-1); below
 * |x| = 4e-4, tanh x rounds to x. */
GRAPHOPT_MATH_INLINE float graphopt_tanhf(float x) {
    static const float p[7] = {-2.76076847742355e-16f, 2.00018790482477e-13f,
                               -8.60467152213735e-11f, 5.12229709037114e-08f,
                               1.48572235717979e-05f, 6.37261928875436e-04f,
                               4.89352455891786e-03f};
    static const float q[5] = {0.0f, 1.19825839466702e-06f, 1.18534705686654e-04f,
                               2.26843463243900e-03f, 4.89352518554385e-03f};
    const float y = graphopt_odd_rationalf(graphopt_clampf(x, -9.0f, 9.0f), p, q);
    return graphopt_select(graphopt_absf(x) < 4e-4f, x, y);
}

/* Double precision: libm (no faster equivalent here is accurate enough for double). */
#define graphopt_exp exp
#define graphopt_erf erf
#define graphopt_tanh tanh

#endif
