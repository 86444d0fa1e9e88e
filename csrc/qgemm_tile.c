/* The GEMM micro-kernels: acc[r*QNR + c] = sum_k A[r, k] * B[k, c] over one QMR x QNR tile of
 * packed panels (graphopt_qkernels.h), one per ISA. Every path computes the exact int32 dot
 * products (no saturating instruction ever sees a value that could saturate), so all of them
 * hand the same accumulators to the one epilogue (qepilogue.c).
 */
#include "graphopt_qinternal.h"

int graphopt_qgemm_isa(void) { return QISA; }

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
static void tile_simd(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc, int narrow,
                      int64_t n) {
    (void)narrow;
    (void)n;
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
#if QMR != 4 || QNR != 16
#error "the AVX2 micro-kernels are written for 4 x 16 tiles"
#endif
/* The 4 weights of one row at p, in every 32-bit lane (a broadcast load). */
static inline __m256i row4(const int8_t* p) {
    int32_t w;
    memcpy(&w, p, 4);
    return _mm256_set1_epi32(w);
}

static void tile_maddubs(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc,
                         int half) {
    const __m256i ones = _mm256_set1_epi16(1);
    /* named accumulators, not an array: GCC kept an array of them partly in memory */
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
#define QMAC(c, bv, wv) \
    c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(bv, wv), ones))
    if (half) /* the last column panel has at most 8 columns: its first half only */
        for (int64_t g = 0; g < K4; ++g, a += QMR * 4, b += QNR * 4) {
            const __m256i b0 = _mm256_loadu_si256((const __m256i*)b);
            QMAC(c00, b0, row4(a));
            QMAC(c10, b0, row4(a + 4));
            QMAC(c20, b0, row4(a + 8));
            QMAC(c30, b0, row4(a + 12));
        }
    else
        for (int64_t g = 0; g < K4; ++g, a += QMR * 4, b += QNR * 4) {
            const __m256i b0 = _mm256_loadu_si256((const __m256i*)b);
            const __m256i b1 = _mm256_loadu_si256((const __m256i*)(b + 32));
            __m256i w = row4(a);
            QMAC(c00, b0, w);
            QMAC(c01, b1, w);
            w = row4(a + 4);
            QMAC(c10, b0, w);
            QMAC(c11, b1, w);
            w = row4(a + 8);
            QMAC(c20, b0, w);
            QMAC(c21, b1, w);
            w = row4(a + 12);
            QMAC(c30, b0, w);
            QMAC(c31, b1, w);
        }
#undef QMAC
    _mm256_storeu_si256((__m256i*)(acc + 0 * QNR), c00);
    _mm256_storeu_si256((__m256i*)(acc + 0 * QNR + 8), c01);
    _mm256_storeu_si256((__m256i*)(acc + 1 * QNR), c10);
    _mm256_storeu_si256((__m256i*)(acc + 1 * QNR + 8), c11);
    _mm256_storeu_si256((__m256i*)(acc + 2 * QNR), c20);
    _mm256_storeu_si256((__m256i*)(acc + 2 * QNR + 8), c21);
    _mm256_storeu_si256((__m256i*)(acc + 3 * QNR), c30);
    _mm256_storeu_si256((__m256i*)(acc + 3 * QNR + 8), c31);
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

/* n: the tile's valid columns (a last panel of at most 8 needs half the work) */
static void tile_simd(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc, int narrow,
                      int64_t n) {
    if (narrow)
        tile_maddubs(K4, a, b, acc, n <= 8);
    else
        tile_widened(K4, a, b, acc);
}
#elif QISA == 3
/* NEON: activations widened to u16 (< 256, so exact as s16), weights to s16, vmlal_s16 into
 * int32 lanes holding the four k of a group; lanes summed at the end. */
static void tile_simd(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc, int narrow,
                      int64_t n) {
    (void)narrow;
    (void)n;
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

/* A call of its own (not inlined into graphopt_qgemm): the epilogue's constants live there, and
 * sharing the 16 vector registers with them made the micro-kernel spill. */
void graphopt_q_compute_tile(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc,
                             int narrow, int64_t n) {
#if QISA == 0
    (void)narrow;
    (void)n;
    tile_scalar(K4, a, b, acc);
#else
    (void)tile_scalar;
    tile_simd(K4, a, b, acc, narrow, n);
#endif
}
