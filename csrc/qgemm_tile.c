/* The GEMM micro-kernels: acc[r*QNR + c] = sum_k A[r, k] * B[k, c] over one QMR x QNR tile of
 * packed panels (graphopt_qkernels.h), one per ISA. Every path computes the exact int32 dot
 * products (no saturating instruction ever sees a value that could saturate), so all of them
 * hand the same accumulators to the one epilogue (qepilogue.c).
 */
#include "graphopt_qinternal.h"

int graphopt_qgemm_isa(void) { return QISA; }

static void tile_scalar(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc) {
    for (int i = 0; i < QMR * QTN; ++i) acc[i] = 0;
    for (int64_t g = 0; g < K4; ++g, a += QMR * 4, b += QNR * 4)
        for (int r = 0; r < QMR; ++r)
            for (int c = 0; c < QNR; ++c) {
                int32_t s = 0;
                for (int t = 0; t < 4; ++t) s += (int32_t)a[r * 4 + t] * (int32_t)b[c * 4 + t];
                acc[r * QTN + c] += s;
            }
}

#if QISA == 2
/* One register tile of MA row panels x NB column panels (MA * QMR x NB * QNR outputs): MA * 4 *
 * NB zmm accumulators, NB B loads and MA * 4 weight broadcasts per group of 4 k. At 2 x 3
 * (8 x 48: 24 accumulators of the 32 registers) vpdpbusd's latency is hidden and there are 11
 * loads per 24 vpdpbusd; the 4 x 16 tile had 5 per 4. The panels of a tile are separate
 * streams (a = K4 * 16, b = K4 * 64 bytes apart), so the packed layouts stay those of the
 * 4 x 16 granule on every ISA (weights are packed once, whatever the target). Constant MA and
 * NB after inlining: the loops unroll and the accumulators live in registers. */
QINLINE int32_t weights4(const int8_t* p) {
    int32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* named accumulators c<row><column panel>, not an array: GCC kept an array of them in memory */
#define QV_DECLARE(r)                                                                      \
    __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0
#define QV_ROW(r, ap)                                                                      \
    do {                                                                                   \
        const __m512i wv = _mm512_set1_epi32(weights4(ap));                                \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, b0, wv);                                    \
        if (NB > 1) c##r##1 = _mm512_dpbusd_epi32(c##r##1, b1, wv);                        \
        if (NB > 2) c##r##2 = _mm512_dpbusd_epi32(c##r##2, b2, wv);                        \
    } while (0)
#define QV_STORE(r)                                                                        \
    do {                                                                                   \
        _mm512_storeu_si512((void*)(acc + r * QTN), c##r##0);                              \
        if (NB > 1) _mm512_storeu_si512((void*)(acc + r * QTN + QNR), c##r##1);            \
        if (NB > 2) _mm512_storeu_si512((void*)(acc + r * QTN + 2 * QNR), c##r##2);        \
    } while (0)

/* COLUMN (MA 2): also column 0 of the panel after the tile's into column[8], from the same A
 * loads (a ymm vpdpbusd: the column's quad against the 4 k of the 8 rows).
 * IMPLICIT (graphopt_q_compute_tile_implicit): group g of the tile's first panel is at
 * b + offs[g] and the next panels follow it 64 bytes apart (16 consecutive pixels of an
 * interleaved plane each), not at b + g * 64 and K4 * 64 apart. */
QINLINE void tile_vnni(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc, const int MA,
                       const int NB, const int COLUMN, int32_t* column, const int IMPLICIT,
                       const int64_t* offs) {
    const int64_t a_panel = K4 * QMR * 4, b_panel = IMPLICIT ? QNR * 4 : K4 * QNR * 4;
    const int8_t* a1 = a + a_panel;
    const uint8_t* bx = b + NB * b_panel;
    __m256i cx = _mm256_setzero_si256();
    QV_DECLARE(0);
    QV_DECLARE(1);
    QV_DECLARE(2);
    QV_DECLARE(3);
    QV_DECLARE(4);
    QV_DECLARE(5);
    QV_DECLARE(6);
    QV_DECLARE(7);
    for (int64_t g = 0; g < K4; ++g, a += QMR * 4, a1 += QMR * 4, bx += QNR * 4) {
        const uint8_t* bg = IMPLICIT ? b + offs[g] : b + g * QNR * 4;
        if (COLUMN) {
            const __m256i rows = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)a)),
                _mm_loadu_si128((const __m128i*)a1), 1);
            cx = _mm256_dpbusd_epi32(cx, _mm256_set1_epi32(weights4((const int8_t*)bx)), rows);
        }
        const __m512i b0 = _mm512_loadu_si512((const void*)bg);
        const __m512i b1 = NB > 1 ? _mm512_loadu_si512((const void*)(bg + b_panel)) : b0;
        const __m512i b2 = NB > 2 ? _mm512_loadu_si512((const void*)(bg + 2 * b_panel)) : b0;
        QV_ROW(0, a);
        QV_ROW(1, a + 4);
        QV_ROW(2, a + 8);
        QV_ROW(3, a + 12);
        if (MA > 1) {
            QV_ROW(4, a1);
            QV_ROW(5, a1 + 4);
            QV_ROW(6, a1 + 8);
            QV_ROW(7, a1 + 12);
        }
    }
    if (COLUMN) _mm256_storeu_si256((__m256i*)column, cx);
    QV_STORE(0);
    QV_STORE(1);
    QV_STORE(2);
    QV_STORE(3);
    if (MA > 1) {
        QV_STORE(4);
        QV_STORE(5);
        QV_STORE(6);
        QV_STORE(7);
    }
}
#undef QV_DECLARE
#undef QV_ROW
#undef QV_STORE
#if QTILE_A != 2 || QTILE_B != 3
#error "the VNNI micro-kernel is written for 2 x 3 panels (8 x 48)"
#endif

/* The ma x nb tile with constant sizes (IMPLICIT: B read through offs). */
QINLINE void tile_vnni_sized(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int nb,
                             int32_t* acc, const int IMPLICIT, const int64_t* offs) {
    if (ma == 2 && nb == 3)
        tile_vnni(K4, a, b, acc, 2, 3, 0, NULL, IMPLICIT, offs);
    else if (ma == 2 && nb == 2)
        tile_vnni(K4, a, b, acc, 2, 2, 0, NULL, IMPLICIT, offs);
    else if (ma == 2)
        tile_vnni(K4, a, b, acc, 2, 1, 0, NULL, IMPLICIT, offs);
    else if (nb == 3)
        tile_vnni(K4, a, b, acc, 1, 3, 0, NULL, IMPLICIT, offs);
    else if (nb == 2)
        tile_vnni(K4, a, b, acc, 1, 2, 0, NULL, IMPLICIT, offs);
    else
        tile_vnni(K4, a, b, acc, 1, 1, 0, NULL, IMPLICIT, offs);
}

static void tile_simd(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int nb,
                      int32_t* acc, int narrow, int64_t n) {
    (void)narrow;
    (void)n;
    tile_vnni_sized(K4, a, ma, b, nb, acc, 0, NULL);
}

/* The 4 lanes of each 128-bit quarter summed: the rows of a panel. */
static __m128i sum_quarters(__m512i v) {
    return _mm_add_epi32(_mm_add_epi32(_mm512_castsi512_si128(v), _mm512_extracti32x4_epi32(v, 1)),
                         _mm_add_epi32(_mm512_extracti32x4_epi32(v, 2),
                                       _mm512_extracti32x4_epi32(v, 3)));
}

/* Groups g0 + j .. of column 0 spread over the quarters of a zmm: quads[j + q] in quarter q. */
QINLINE __m512i spread4(const int32_t* quads) {
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_permutexvar_epi32(spread,
                                    _mm512_castsi128_si512(_mm_loadu_si128((const __m128i*)quads)));
}

/* The first `groups` (1 to 4) groups of an A panel at a, the rest zero. */
QINLINE __m512i a_groups(const int8_t* a, int64_t groups) {
    return _mm512_maskz_loadu_epi32(groups >= 4 ? 0xFFFF : (__mmask16)((1u << (4 * groups)) - 1),
                                    a);
}

/* acc[r * QTN] = sum_k A[r, k] * B[k, 0] (ma row panels, one column): a tile with 47 of its 48
 * columns wasted is 16 times slower. The column's quads (one per group, 64 bytes apart in the
 * panel) are first copied together, a chunk at a time; then four groups a step are spread over
 * the quarters of a zmm against 64 contiguous bytes of each A panel, two sums per panel
 * alternating (vpdpbusd's latency). */
static void gemv_vnni(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int32_t* acc) {
    enum { CHUNK = 64 }; /* groups whose quads are copied at once */
    const int8_t* a1 = a + K4 * QMR * 4;
    __m512i s00 = _mm512_setzero_si512(), s01 = s00, s10 = s00, s11 = s00;
    for (int64_t g0 = 0; g0 < K4; g0 += CHUNK) {
        const int64_t count = K4 - g0 < CHUNK ? K4 - g0 : CHUNK;
        int32_t quads[CHUNK + 4];
        for (int64_t j = 0; j < count; ++j) memcpy(&quads[j], b + (g0 + j) * QNR * 4, 4);
        memset(quads + count, 0, 4 * sizeof(int32_t)); /* read by the last step */
        int64_t j = 0;
        for (; j + 8 <= count; j += 8) {
            const int64_t at = (g0 + j) * 16;
            const __m512i x0 = spread4(quads + j), x1 = spread4(quads + j + 4);
            s00 = _mm512_dpbusd_epi32(s00, x0, _mm512_loadu_si512((const void*)(a + at)));
            s01 = _mm512_dpbusd_epi32(s01, x1, _mm512_loadu_si512((const void*)(a + at + 64)));
            if (ma > 1) {
                s10 = _mm512_dpbusd_epi32(s10, x0, _mm512_loadu_si512((const void*)(a1 + at)));
                s11 = _mm512_dpbusd_epi32(s11, x1, _mm512_loadu_si512((const void*)(a1 + at + 64)));
            }
        }
        for (; j < count; j += 4) { /* the last 1 to 7 groups; A past them masked to zero */
            const int64_t at = (g0 + j) * 16;
            const __m512i x = spread4(quads + j); /* lanes past count meet zero weights */
            s00 = _mm512_dpbusd_epi32(s00, x, a_groups(a + at, count - j));
            if (ma > 1) s10 = _mm512_dpbusd_epi32(s10, x, a_groups(a1 + at, count - j));
        }
    }
    int32_t sum[2][4];
    _mm_storeu_si128((__m128i*)sum[0], sum_quarters(_mm512_add_epi32(s00, s01)));
    _mm_storeu_si128((__m128i*)sum[1], sum_quarters(_mm512_add_epi32(s10, s11)));
    for (int p = 0; p < ma; ++p)
        for (int r = 0; r < QMR; ++r) acc[(p * QMR + r) * QTN] = sum[p][r];
}

/* Group g of the first 4 columns of the panel at b against one A panel at a, into *sum:
 * lane 4c + r sums column c's quad (spread over quarter c) against row r's (A's 16 bytes in
 * every quarter). */
QINLINE void columns4_group(const int8_t* a, const uint8_t* b, int64_t g, __m512i* sum) {
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m128i quads = _mm_loadu_si128((const __m128i*)(b + g * QNR * 4));
    const __m128i rows = _mm_loadu_si128((const __m128i*)(a + g * QMR * 4));
    const __m512i x = _mm512_permutexvar_epi32(spread, _mm512_castsi128_si512(quads));
    *sum = _mm512_dpbusd_epi32(*sum, x, _mm512_broadcast_i32x4(rows));
}

/* acc[r * QTN + c] for the first 2 to 4 columns c of the panel at b (ma row panels): a tile
 * with 44 of its 48 columns wasted (14x14 planes: 12 * 16 + 4) costs 8 vpdpbusd a group, this
 * one per row panel (columns4_group). Four groups a step into their own sums (vpdpbusd's
 * latency). */
static void gemv4_vnni(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int32_t* acc) {
    const int8_t* a1 = a + K4 * QMR * 4;
    __m512i s0[4], s1[4];
    for (int u = 0; u < 4; ++u) s0[u] = s1[u] = _mm512_setzero_si512();
    int64_t g = 0;
    for (; g + 4 <= K4; g += 4)
        for (int u = 0; u < 4; ++u) {
            columns4_group(a, b, g + u, &s0[u]);
            if (ma > 1) columns4_group(a1, b, g + u, &s1[u]);
        }
    for (; g < K4; ++g) {
        columns4_group(a, b, g, &s0[0]);
        if (ma > 1) columns4_group(a1, b, g, &s1[0]);
    }
    int32_t sum[2][16];
    _mm512_storeu_si512((void*)sum[0], _mm512_add_epi32(_mm512_add_epi32(s0[0], s0[1]),
                                                        _mm512_add_epi32(s0[2], s0[3])));
    _mm512_storeu_si512((void*)sum[1], _mm512_add_epi32(_mm512_add_epi32(s1[0], s1[1]),
                                                        _mm512_add_epi32(s1[2], s1[3])));
    for (int p = 0; p < ma; ++p)
        for (int r = 0; r < QMR; ++r)
            for (int c = 0; c < 4; ++c) acc[(p * QMR + r) * QTN + c] = sum[p][4 * c + r];
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

#if QISA == 1
/* The AVX2 one-column tile (narrow weights): vpmaddubsw over two groups of 4 rows x 4 k at once
 * instead of a tile with 15 of its 16 columns wasted. */
static inline __m128i x_group(const uint8_t* b, int64_t g) {
    int32_t v;
    memcpy(&v, b + g * QNR * 4, 4);
    return _mm_set1_epi32(v);
}

static void gemv_maddubs(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s = _mm256_setzero_si256();
    int64_t g = 0;
    for (; g + 2 <= K4; g += 2, a += 2 * QMR * 4) {
        const __m256i xv = _mm256_setr_m128i(x_group(b, g), x_group(b, g + 1));
        const __m256i av = _mm256_loadu_si256((const __m256i*)a);
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(xv, av), ones));
    }
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    if (g < K4) {
        const __m128i p = _mm_maddubs_epi16(x_group(b, g), _mm_loadu_si128((const __m128i*)a));
        h = _mm_add_epi32(h, _mm_madd_epi16(p, _mm_set1_epi16(1)));
    }
    int32_t sum[4];
    _mm_storeu_si128((__m128i*)sum, h);
    for (int r = 0; r < QMR; ++r) acc[r * QTN] = sum[r];
}
#endif

int graphopt_q_gemv_tile(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int64_t n,
                         int narrow, int32_t* acc) {
#if QISA == 2
    (void)narrow;
    if (n == 1)
        gemv_vnni(K4, a, ma, b, acc);
    else if (n <= 4)
        gemv4_vnni(K4, a, ma, b, acc);
    else
        return 0;
    return 1;
#elif QISA == 1
    if (!narrow || ma != 1 || n != 1) return 0;
    gemv_maddubs(K4, a, b, acc);
    return 1;
#else
    (void)K4, (void)a, (void)ma, (void)b, (void)n, (void)narrow, (void)acc;
    return 0;
#endif
}

int graphopt_q_compute_tile_column(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc,
                                   int32_t* column) {
#if QISA == 2
    tile_vnni(K4, a, b, acc, 2, 3, 1, column, 0, NULL);
    return 1;
#else
    (void)K4, (void)a, (void)b, (void)acc, (void)column;
    return 0;
#endif
}

/* A call of its own (not inlined into the tile loop): the epilogue's constants live there, and
 * sharing the vector registers with them made the micro-kernel spill. */
void graphopt_q_compute_tile(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int nb,
                             int32_t* acc, int narrow, int64_t n) {
#if QISA == 0
    (void)narrow, (void)n, (void)ma, (void)nb;
    tile_scalar(K4, a, b, acc);
#elif QISA == 2
    (void)tile_scalar;
    tile_simd(K4, a, ma, b, nb, acc, narrow, n);
#else
    (void)tile_scalar, (void)ma, (void)nb; /* one panel each way: QTILE_A = QTILE_B = 1 */
    tile_simd(K4, a, b, acc, narrow, n);
#endif
}

int graphopt_q_compute_tile_implicit(int64_t K4, const int8_t* a, int ma, const uint8_t* b,
                                     int nb, const int64_t* offs, int32_t* acc) {
#if QISA == 2
    tile_vnni_sized(K4, a, ma, b, nb, acc, 1, offs);
    return 1;
#else
    (void)K4, (void)a, (void)ma, (void)b, (void)nb, (void)offs, (void)acc;
    return 0;
#endif
}
