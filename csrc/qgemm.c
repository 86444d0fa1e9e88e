/* u8 x s8 GEMM with int32 accumulators and a fused requantizing epilogue (graphopt_qkernels.h).
 *
 * Every path computes the exact int32 dot products (no saturating instruction ever sees a
 * value that could saturate), so they all hand the same accumulators to the one scalar
 * epilogue below; the epilogue's float arithmetic is compiled without FMA contraction (its
 * only fused multiply-adds are explicit fmaf calls) so rint(float(acc) * mult) and QLinearAdd
 * round exactly as rounding.py / reference.py and onnxruntime do.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graphopt_qkernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && !defined(GRAPHOPT_QGEMM_SCALAR)
#define QISA 2
#include <immintrin.h>
#elif defined(__AVX2__) && !defined(GRAPHOPT_QGEMM_SCALAR)
#define QISA 1
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__) && !defined(GRAPHOPT_QGEMM_SCALAR)
#define QISA 3
#include <arm_neon.h>
#else
#define QISA 0
#endif

#define QMR GRAPHOPT_QMR
#define QNR GRAPHOPT_QNR
#define PARALLEL_MIN_MACS (1 << 20)

int graphopt_qgemm_isa(void) { return QISA; }

static int64_t k_groups(int64_t K) { return (K + 3) / 4; }

int64_t graphopt_qgemm_packed_b_bytes(int64_t K, int64_t N) {
    return ((N + QNR - 1) / QNR) * k_groups(K) * QNR * 4;
}

/* Zero the padding of packed panels: k rows K..4*K4 and columns N..QNR*np. */
static void zero_padding(int64_t K, int64_t N, uint8_t* panels) {
    const int64_t K4 = k_groups(K), np = (N + QNR - 1) / QNR;
    for (int64_t k = K; k < 4 * K4; ++k)
        for (int64_t n = 0; n < np * QNR; ++n)
            panels[((n >> 4) * K4 + (k >> 2)) * QNR * 4 + (n & 15) * 4 + (k & 3)] = 0;
    for (int64_t n = N; n < np * QNR; ++n)
        for (int64_t k = 0; k < K; ++k)
            panels[((n >> 4) * K4 + (k >> 2)) * QNR * 4 + (n & 15) * 4 + (k & 3)] = 0;
}

static void interleave4x16(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2,
                           const uint8_t* r3, uint8_t* o);

void graphopt_qgemm_pack_b(const uint8_t* X, int64_t rs, int64_t cs, int64_t K, int64_t N,
                           int flip, uint8_t* panels) {
    const int64_t K4 = k_groups(K), panel = K4 * QNR * 4, full = N / QNR;
    const uint8_t x = flip ? 0x80 : 0;
    int64_t done = 0; /* columns packed by the fast path: whole panels of contiguous rows */
    if (cs == 1 && !flip && K % 4 == 0) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (K * N >= (1 << 18))
#endif
        for (int64_t p = 0; p < full; ++p)
            for (int64_t g = 0; g < K4; ++g) {
                const uint8_t* r = X + 4 * g * rs + p * QNR;
                interleave4x16(r, r + rs, r + 2 * rs, r + 3 * rs, panels + p * panel + g * QNR * 4);
            }
        done = full * QNR;
    }
    for (int64_t k = 0; k < K; ++k) {
        uint8_t* o = panels + (k >> 2) * QNR * 4 + (k & 3);
        const uint8_t* row = X + k * rs;
        for (int64_t n = done; n < N; ++n)
            o[(n >> 4) * panel + (n & 15) * 4] = (uint8_t)(row[n * cs] ^ x);
    }
    zero_padding(K, N, panels);
}

/* Store 4 rows of 16 bytes (k = 4g .. 4g+3 of 16 columns) as one panel group [c][t]. */
static void interleave4x16(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2,
                           const uint8_t* r3, uint8_t* o) {
#if QISA == 1 || QISA == 2
    const __m128i a0 = _mm_loadu_si128((const __m128i*)r0), a1 = _mm_loadu_si128((const __m128i*)r1);
    const __m128i a2 = _mm_loadu_si128((const __m128i*)r2), a3 = _mm_loadu_si128((const __m128i*)r3);
    const __m128i lo01 = _mm_unpacklo_epi8(a0, a1), lo23 = _mm_unpacklo_epi8(a2, a3);
    const __m128i hi01 = _mm_unpackhi_epi8(a0, a1), hi23 = _mm_unpackhi_epi8(a2, a3);
    _mm_storeu_si128((__m128i*)o, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128((__m128i*)(o + 16), _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128((__m128i*)(o + 32), _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128((__m128i*)(o + 48), _mm_unpackhi_epi16(hi01, hi23));
#else
    for (int c = 0; c < QNR; ++c) {
        o[c * 4] = r0[c];
        o[c * 4 + 1] = r1[c];
        o[c * 4 + 2] = r2[c];
        o[c * 4 + 3] = r3[c];
    }
#endif
}

/* First output index o in [0, out] with 0 <= o * stride + offset (offset may be negative). */
static int64_t first_inside(int64_t stride, int64_t offset, int64_t out) {
    const int64_t o = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    return o < out ? o : out;
}

/* One im2col row (tap dy, dx of one channel plane) over all N output positions, into `out`:
 * per output row, padding | a copy (stride 1) or strided gather | padding. */
static void im2col_row(const uint8_t* plane, const graphopt_qconv_shape* s, int64_t dy,
                       int64_t dx, uint8_t pad, uint8_t x, uint8_t* out) {
    const int64_t oh = s->out_height, ow = s->out_width, sw = s->stride_w;
    const int64_t offset = dx - s->pad_left;
    const int64_t lo = first_inside(sw, offset, ow);
    int64_t hi = s->width - offset <= 0 ? 0 : (s->width - offset + sw - 1) / sw;
    if (hi > ow) hi = ow;
    if (hi < lo) hi = lo;
    for (int64_t oy = 0; oy < oh; ++oy, out += ow) {
        const int64_t iy = oy * s->stride_h + dy - s->pad_top;
        if (iy < 0 || iy >= s->height) {
            memset(out, pad, (size_t)ow);
            continue;
        }
        const uint8_t* row = plane + iy * s->width + offset;
        memset(out, pad, (size_t)lo);
        if (sw == 1 && !x)
            memcpy(out + lo, row + lo, (size_t)(hi - lo));
        else
            for (int64_t o = lo; o < hi; ++o) out[o] = (uint8_t)(row[o * sw] ^ x);
        memset(out + hi, pad, (size_t)(ow - hi));
    }
}

/* im2col into the packed panels, one group of 4 rows k at a time: the 4 rows are written whole
 * (row-wise, copies of image rows) into a thread's buffer, then interleaved into every panel. */
void graphopt_qim2col_packed(const uint8_t* X, const graphopt_qconv_shape* s, uint8_t pad,
                             int flip, uint8_t* panels) {
    const int64_t kh = s->kernel_h, kw = s->kernel_w, N = s->out_height * s->out_width;
    const int64_t K = s->channels * kh * kw, K4 = k_groups(K), np = (N + QNR - 1) / QNR;
    const int64_t span = np * QNR; /* row length in the buffer, zero past N */
    const uint8_t x = flip ? 0x80 : 0;
#ifdef _OPENMP
#pragma omp parallel if (K * N >= (1 << 18))
#endif
    {
        uint8_t* rows = (uint8_t*)calloc((size_t)(4 * span), 1);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t g = 0; g < K4; ++g) {
            for (int t = 0; t < 4; ++t) {
                const int64_t k = 4 * g + t;
                if (k >= K) {
                    memset(rows + t * span, 0, (size_t)span);
                    continue;
                }
                const int64_t ch = k / (kh * kw), ky = (k / kw) % kh, kx = k % kw;
                im2col_row(X + ch * s->height * s->width, s, ky * s->dilation_h,
                           kx * s->dilation_w, pad, x, rows + t * span);
            }
            for (int64_t p = 0; p < np; ++p)
                interleave4x16(rows + p * QNR, rows + span + p * QNR, rows + 2 * span + p * QNR,
                               rows + 3 * span + p * QNR, panels + (p * K4 + g) * QNR * 4);
        }
        free(rows);
    }
}

/* ---- the epilogue: int32 accumulators -> output, shared by every path ---------------------- */

/* rint(float(acc) * m) + zp, clamped: the float is clamped first (exact: rint is monotone and
 * the bounds are integers), so the conversion never overflows. */
static int32_t requant(int32_t acc, float m, int32_t zp, int32_t lo, int32_t hi) {
    float v = (float)acc * m;
    const float flo = (float)(lo - zp), fhi = (float)(hi - zp);
    v = v < flo ? flo : (v > fhi ? fhi : v);
    return (int32_t)nearbyintf(v) + zp;
}

/* QLinearAdd as onnxruntime's x86-64 kernel computes it (MLAS AVX2, two fused multiply-adds):
 * rint(fma(a, ra, fma(b, rb, fixed))); fmaf rounds once on every target (hardware or libm). */
static int32_t qladd(int32_t a, int32_t b, float ra, float rb, float fixed, int32_t lo,
                     int32_t hi) {
    float v = fmaf((float)a, ra, fmaf((float)b, rb, fixed));
    const float flo = (float)lo, fhi = (float)hi;
    v = v < flo ? flo : (v > fhi ? fhi : v);
    return (int32_t)nearbyintf(v);
}

#if QISA == 1 || QISA == 2
/* 8 requantized outputs of one row (no residual): the vector form of requant() -- clamp in
 * float, cvtps2dq rounds half to even (default MXCSR), + zero point: the same integers. */
static void requant8(const int32_t* acc, int32_t bias, float m, const graphopt_qepilogue* e,
                     void* out) {
    const __m256 v = _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_loadu_si256((const __m256i*)acc),
                                            _mm256_set1_epi32(bias))), _mm256_set1_ps(m));
    const __m256 lo = _mm256_set1_ps((float)(e->lo - e->zero_point));
    const __m256 hi = _mm256_set1_ps((float)(e->hi - e->zero_point));
    const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi)),
                                       _mm256_set1_epi32(e->zero_point));
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    const __m128i b = e->out_type == GRAPHOPT_Q_U8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
    _mm_storel_epi64((__m128i*)out, b);
}
#endif

/* Row r0 + r, columns c0 .. c0 + n of the output from acc[r * lda + c]. */
static void store_tile(const int32_t* acc, int64_t lda, int64_t r0, int64_t c0, int64_t m,
                       int64_t n, const graphopt_qepilogue* e, void* C, int64_t rs, int64_t cs) {
    for (int64_t r = 0; r < m; ++r) {
        const int32_t bias = e->bias ? e->bias[r0 + r] : 0;
        const float mult = e->mult[r0 + r];
        const int32_t* a = acc + r * lda;
        int64_t c = 0;
        if (e->out_type == GRAPHOPT_Q_F32) {
            for (; c < n; ++c)
                ((float*)C)[(r0 + r) * rs + (c0 + c) * cs] = (float)(a[c] + bias) * mult;
            continue;
        }
#if QISA == 1 || QISA == 2
        if (cs == 1 && !e->add)
            for (; c + 8 <= n; c += 8)
                requant8(a + c, bias, mult, e, (int8_t*)C + (r0 + r) * rs + c0 + c);
#endif
        /* the epilogue read once: byte stores through C may alias *e, so its fields used in
         * the loop would otherwise be reloaded per element */
        const int32_t zp = e->zero_point, lo = e->lo, hi = e->hi, u8 = e->out_type == GRAPHOPT_Q_U8;
        const void* add = e->add;
        for (; c < n; ++c) {
            const int64_t at = (r0 + r) * rs + (c0 + c) * cs;
            int32_t q = requant(a[c] + bias, mult, zp, lo, hi);
            if (add) {
                const int64_t bt = (r0 + r) * e->add_rs + (c0 + c) * e->add_cs;
                const int32_t b = u8 ? ((const uint8_t*)add)[bt] : ((const int8_t*)add)[bt];
                q = qladd(q, b, e->ratio_a, e->ratio_b, e->fixed, e->add_lo, e->add_hi);
            }
            if (u8)
                ((uint8_t*)C)[at] = (uint8_t)q;
            else
                ((int8_t*)C)[at] = (int8_t)q;
        }
    }
}

/* ---- micro-kernels: acc[r*QNR + c] = sum_k A[r, k] * B[k, c] over one QMR x QNR tile ------- */

static void tile_scalar(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc) {
    for (int i = 0; i < QMR * QNR; ++i) acc[i] = 0;
    for (int64_t g = 0; g < K4; ++g, a += QMR * 4, b += QNR * 4)
        for (int r = 0; r < QMR; ++r)
            for (int c = 0; c < QNR; ++c) {
                int32_t s = 0;
                for (int t = 0; t < 4; ++t) s += (int32_t)a[r * 4 + t] * (int32_t)b[c * 4 + t];
                acc[r * QNR + c] += s;
            }
}

#if QISA == 2
static void tile_simd(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc, int narrow) {
    (void)narrow;
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t g = 0; g < K4; ++g, a += QMR * 4, b += QNR * 4) {
        const __m512i bv = _mm512_loadu_si512((const void*)b);
        int32_t w[4];
        memcpy(w, a, 16);
        c0 = _mm512_dpbusd_epi32(c0, bv, _mm512_set1_epi32(w[0]));
        c1 = _mm512_dpbusd_epi32(c1, bv, _mm512_set1_epi32(w[1]));
        c2 = _mm512_dpbusd_epi32(c2, bv, _mm512_set1_epi32(w[2]));
        c3 = _mm512_dpbusd_epi32(c3, bv, _mm512_set1_epi32(w[3]));
    }
    _mm512_storeu_si512((void*)(acc + 0 * QNR), c0);
    _mm512_storeu_si512((void*)(acc + 1 * QNR), c1);
    _mm512_storeu_si512((void*)(acc + 2 * QNR), c2);
    _mm512_storeu_si512((void*)(acc + 3 * QNR), c3);
}
#elif QISA == 1
/* vpmaddubsw: u8 x s8 pairs summed into int16, exact when |w| <= 64 (|255 * 64 * 2| = 32640
 * < 32767); vpmaddwd with ones then sums pairs into int32. */
static void tile_maddubs(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c[QMR][2];
    for (int r = 0; r < QMR; ++r) c[r][0] = c[r][1] = _mm256_setzero_si256();
    for (int64_t g = 0; g < K4; ++g, a += QMR * 4, b += QNR * 4) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)b);
        const __m256i b1 = _mm256_loadu_si256((const __m256i*)(b + 32));
        for (int r = 0; r < QMR; ++r) {
            int32_t w;
            memcpy(&w, a + r * 4, 4);
            const __m256i wv = _mm256_set1_epi32(w);
            c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(b0, wv), ones));
            c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(b1, wv), ones));
        }
    }
    for (int r = 0; r < QMR; ++r) {
        _mm256_storeu_si256((__m256i*)(acc + r * QNR), c[r][0]);
        _mm256_storeu_si256((__m256i*)(acc + r * QNR + 8), c[r][1]);
    }
}

/* Full 8-bit weights: widen both operands to int16 and use vpmaddwd only (never saturates).
 * Each 16-byte quarter of a B group (4 columns x 4 k) widens to one vector; the products come
 * out as (k0+k1, k2+k3) pairs per column, summed by a final horizontal add. */
static void tile_widened(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc) {
    for (int half = 0; half < 2; ++half) {
        __m256i c[QMR][2];
        for (int r = 0; r < QMR; ++r) c[r][0] = c[r][1] = _mm256_setzero_si256();
        const int8_t* ap = a;
        const uint8_t* bp = b + half * 32;
        for (int64_t g = 0; g < K4; ++g, ap += QMR * 4, bp += QNR * 4) {
            const __m256i b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)bp));
            const __m256i b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(bp + 16)));
            const __m256i wa = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)ap));
            const __m256i w0 = _mm256_permute4x64_epi64(wa, 0x00);
            const __m256i w1 = _mm256_permute4x64_epi64(wa, 0x55);
            const __m256i w2 = _mm256_permute4x64_epi64(wa, 0xAA);
            const __m256i w3 = _mm256_permute4x64_epi64(wa, 0xFF);
            c[0][0] = _mm256_add_epi32(c[0][0], _mm256_madd_epi16(b0, w0));
            c[0][1] = _mm256_add_epi32(c[0][1], _mm256_madd_epi16(b1, w0));
            c[1][0] = _mm256_add_epi32(c[1][0], _mm256_madd_epi16(b0, w1));
            c[1][1] = _mm256_add_epi32(c[1][1], _mm256_madd_epi16(b1, w1));
            c[2][0] = _mm256_add_epi32(c[2][0], _mm256_madd_epi16(b0, w2));
            c[2][1] = _mm256_add_epi32(c[2][1], _mm256_madd_epi16(b1, w2));
            c[3][0] = _mm256_add_epi32(c[3][0], _mm256_madd_epi16(b0, w3));
            c[3][1] = _mm256_add_epi32(c[3][1], _mm256_madd_epi16(b1, w3));
        }
        for (int r = 0; r < QMR; ++r) {
            /* c[r][0] = [c0 c0 c1 c1 | c2 c2 c3 c3], c[r][1] likewise columns 4-7 */
            const __m256i h = _mm256_hadd_epi32(c[r][0], c[r][1]); /* c0 c1 c4 c5 | c2 c3 c6 c7 */
            _mm256_storeu_si256((__m256i*)(acc + r * QNR + half * 8),
                                _mm256_permute4x64_epi64(h, 0xD8));
        }
    }
}

static void tile_simd(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc, int narrow) {
    if (narrow)
        tile_maddubs(K4, a, b, acc);
    else
        tile_widened(K4, a, b, acc);
}
#elif QISA == 3
/* NEON: activations widened to u16 (< 256, so exact as s16), weights to s16, vmlal_s16 into
 * int32 lanes holding the four k of a group; lanes summed at the end. */
static void tile_simd(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc, int narrow) {
    (void)narrow;
    for (int quad = 0; quad < QNR / 4; ++quad) {
        int32x4_t c[QMR][4];
        for (int r = 0; r < QMR; ++r)
            for (int j = 0; j < 4; ++j) c[r][j] = vdupq_n_s32(0);
        const int8_t* ap = a;
        const uint8_t* bp = b + quad * 16;
        for (int64_t g = 0; g < K4; ++g, ap += QMR * 4, bp += QNR * 4) {
            const uint8x16_t bb = vld1q_u8(bp);
            const int16x8_t lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(bb)));
            const int16x8_t hi = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(bb)));
            const int16x8_t wa = vmovl_s8(vld1_s8(ap));
            const int16x8_t wb = vmovl_s8(vld1_s8(ap + 8));
            const int16x4_t w[4] = {vget_low_s16(wa), vget_high_s16(wa), vget_low_s16(wb),
                                    vget_high_s16(wb)};
            for (int r = 0; r < QMR; ++r) {
                c[r][0] = vmlal_s16(c[r][0], vget_low_s16(lo), w[r]);
                c[r][1] = vmlal_s16(c[r][1], vget_high_s16(lo), w[r]);
                c[r][2] = vmlal_s16(c[r][2], vget_low_s16(hi), w[r]);
                c[r][3] = vmlal_s16(c[r][3], vget_high_s16(hi), w[r]);
            }
        }
        for (int r = 0; r < QMR; ++r)
            for (int j = 0; j < 4; ++j) acc[r * QNR + quad * 4 + j] = vaddvq_s32(c[r][j]);
    }
}
#endif

static void compute_tile(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc,
                         int narrow) {
#if QISA == 0
    (void)narrow;
    tile_scalar(K4, a, b, acc);
#else
    tile_simd(K4, a, b, acc, narrow);
#endif
}

void graphopt_qgemm(int64_t M, int64_t N, int64_t K, const int8_t* Ap, const uint8_t* Bp,
                    const graphopt_qepilogue* e, void* C, int64_t rs, int64_t cs) {
    const int64_t K4 = k_groups(K), mp = (M + QMR - 1) / QMR, np = (N + QNR - 1) / QNR;
    (void)tile_scalar;
#ifdef _OPENMP
#pragma omp parallel for collapse(2) schedule(static) if (M * N * K >= PARALLEL_MIN_MACS)
#endif
    for (int64_t jp = 0; jp < np; ++jp)
        for (int64_t ip = 0; ip < mp; ++ip) {
            int32_t acc[QMR * QNR];
            const int64_t m = M - ip * QMR < QMR ? M - ip * QMR : QMR;
            const int64_t n = N - jp * QNR < QNR ? N - jp * QNR : QNR;
            compute_tile(K4, Ap + ip * K4 * QMR * 4, Bp + jp * K4 * QNR * 4, acc, e->narrow);
            store_tile(acc, QNR, ip * QMR, jp * QNR, m, n, e, C, rs, cs);
        }
}

/* ---- depthwise convolution, elementwise int8 ops --------------------------------------------- */

void graphopt_qdepthwise(const uint8_t* X, const int8_t* W, const graphopt_qconv_shape* s,
                         uint8_t pad, int flip, const graphopt_qepilogue* e, void* Y) {
    const int64_t kh = s->kernel_h, kw = s->kernel_w, oh = s->out_height, ow = s->out_width;
    const int64_t sh = s->stride_h, sw = s->stride_w, dh = s->dilation_h, dw = s->dilation_w;
    /* each channel is copied into a plane padded with the zero point, so every tap is inside
     * and the inner loop over a row of outputs has no bounds checks (it vectorizes) */
    const int64_t ph = (oh - 1) * sh + (kh - 1) * dh + 1, pw = (ow - 1) * sw + (kw - 1) * dw + 1;
    const uint8_t x = flip ? 0x80 : 0;
#ifdef _OPENMP
#pragma omp parallel if (s->channels * oh * ow * kh * kw >= PARALLEL_MIN_MACS)
#endif
    {
        uint8_t* padded = (uint8_t*)malloc((size_t)(ph * pw + 32)); /* slack: 16-byte loads */
        int32_t* acc = (int32_t*)malloc((size_t)(ow + 8) * sizeof(int32_t));
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t ch = 0; ch < s->channels; ++ch) {
            const uint8_t* xc = X + ch * s->height * s->width;
            const int8_t* wc = W + ch * kh * kw;
            for (int64_t py = 0; py < ph; ++py) { /* pad | row | pad, row by row */
                const int64_t iy = py - s->pad_top;
                uint8_t* dst = padded + py * pw;
                if (iy < 0 || iy >= s->height) {
                    memset(dst, pad, (size_t)pw);
                    continue;
                }
                const int64_t left = s->pad_left < pw ? s->pad_left : pw;
                int64_t inner = s->width < pw - left ? s->width : pw - left;
                if (inner < 0) inner = 0;
                memset(dst, pad, (size_t)left);
                const uint8_t* src = xc + iy * s->width;
                if (x)
                    for (int64_t i = 0; i < inner; ++i) dst[left + i] = (uint8_t)(src[i] ^ x);
                else
                    memcpy(dst + left, src, (size_t)inner);
                memset(dst + left + inner, pad, (size_t)(pw - left - inner));
            }
            for (int64_t oy = 0; oy < oh; ++oy) {
                int64_t start = 0;
#if QISA == 1 || QISA == 2
                /* 8 outputs at a time, all taps summed in one register (stride 1 or 2) */
                const __m128i evens = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1,
                                                    -1, -1, -1, -1);
                /* a partial last chunk computes lanes past the row from the next padded row
                 * (or the slack): they land in acc's spare 8 entries and are never stored */
                if (sw <= 2)
                    for (; start < ow; start += 8) {
                        __m256i sum = _mm256_setzero_si256();
                        for (int64_t ky = 0; ky < kh; ++ky)
                            for (int64_t kx = 0; kx < kw; ++kx) {
                                const uint8_t* src = padded + (oy * sh + ky * dh) * pw + kx * dw +
                                                     start * sw;
                                const __m128i v = sw == 1
                                    ? _mm_loadl_epi64((const __m128i*)src)
                                    : _mm_shuffle_epi8(_mm_loadu_si128((const __m128i*)src), evens);
                                sum = _mm256_add_epi32(sum, _mm256_mullo_epi32(
                                    _mm256_cvtepu8_epi32(v), _mm256_set1_epi32(wc[ky * kw + kx])));
                            }
                        _mm256_storeu_si256((__m256i*)(acc + start), sum);
                    }
#endif
                for (int64_t ox = start; ox < ow; ++ox) acc[ox] = 0;
                for (int64_t ky = 0; ky < kh; ++ky)
                    for (int64_t kx = 0; kx < kw; ++kx) {
                        /* |u8 * s8| <= 32640: the product fits int16 (pmullw), then widens */
                        const int16_t w = wc[ky * kw + kx];
                        const uint8_t* src = padded + (oy * sh + ky * dh) * pw + kx * dw;
                        for (int64_t ox = start; ox < ow; ++ox)
                            acc[ox] += (int16_t)(w * (int16_t)src[ox * sw]);
                    }
                store_tile(acc, ow, ch, oy * ow, 1, ow, e, Y, oh * ow, 1);
            }
        }
        free(padded);
        free(acc);
    }
}

void graphopt_qadd(const void* a, const void* b, int64_t b_step, int64_t n, int is_signed,
                   float ratio_a, float ratio_b, float fixed, int32_t lo, int32_t hi, void* y) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n >= (1 << 18))
#endif
    for (int64_t i = 0; i < n; ++i) {
        const int64_t j = i * b_step;
        const int32_t va = is_signed ? ((const int8_t*)a)[i] : ((const uint8_t*)a)[i];
        const int32_t vb = is_signed ? ((const int8_t*)b)[j] : ((const uint8_t*)b)[j];
        const int32_t q = qladd(va, vb, ratio_a, ratio_b, fixed, lo, hi);
        if (is_signed)
            ((int8_t*)y)[i] = (int8_t)q;
        else
            ((uint8_t*)y)[i] = (uint8_t)q;
    }
}

void graphopt_qrequant(const void* x, int64_t n, int x_signed, int32_t x_zp, float x_scale,
                       int y_signed, int32_t y_zp, float y_scale, void* y) {
    const int32_t lo = y_signed ? -128 : 0, hi = y_signed ? 127 : 255;
    for (int64_t i = 0; i < n; ++i) {
        const int32_t v = x_signed ? ((const int8_t*)x)[i] : ((const uint8_t*)x)[i];
        float f = (float)(v - x_zp) * x_scale;
        f = f / y_scale;
        const float flo = (float)(lo - y_zp), fhi = (float)(hi - y_zp);
        f = f < flo ? flo : (f > fhi ? fhi : f);
        const int32_t r = (int32_t)nearbyintf(f) + y_zp;
        if (y_signed)
            ((int8_t*)y)[i] = (int8_t)r;
        else
            ((uint8_t*)y)[i] = (uint8_t)r;
    }
}

void graphopt_qglobal_avgpool(const void* x, int64_t channels, int64_t size, int is_signed,
                              int32_t x_zp, float scale, int32_t y_zp, void* y) {
    const int32_t lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
    for (int64_t c = 0; c < channels; ++c) {
        int32_t sum = 0;
        for (int64_t i = 0; i < size; ++i)
            sum += is_signed ? ((const int8_t*)x)[c * size + i] : ((const uint8_t*)x)[c * size + i];
        const int32_t q = requant(sum - (int32_t)size * x_zp, scale, y_zp, lo, hi);
        if (is_signed)
            ((int8_t*)y)[c] = (int8_t)q;
        else
            ((uint8_t*)y)[c] = (uint8_t)q;
    }
}
