/* The epilogue every integer kernel stores through: int32 accumulators -> requantized u8/s8
 * (or float) outputs, with a fused Relu/Clip and residual QLinearAdd (graphopt_qkernels.h has
 * the arithmetic). The vector forms give the scalar form's integers: clamp in float,
 * cvtps2dq rounds half to even like nearbyintf, fused multiply-adds only where explicit. */
#include <math.h>

#include "graphopt_qinternal.h"

/* The float is clamped first (exact: rint is monotone and the bounds are integers), so the
 * conversion never overflows. */
int32_t graphopt_q_requant(int32_t acc, float m, int32_t zp, int32_t lo, int32_t hi) {
    float v = (float)acc * m;
    const float flo = (float)(lo - zp), fhi = (float)(hi - zp);
    v = v < flo ? flo : (v > fhi ? fhi : v);
    return (int32_t)nearbyintf(v) + zp;
}

/* As onnxruntime's x86-64 kernel computes it (MLAS AVX2, two fused multiply-adds); fmaf rounds
 * once on every target (hardware or libm). */
int32_t graphopt_q_ladd(int32_t a, int32_t b, float ra, float rb, float fixed, int32_t lo,
                        int32_t hi) {
    float v = fmaf((float)a, ra, fmaf((float)b, rb, fixed));
    const float flo = (float)lo, fhi = (float)hi;
    v = v < flo ? flo : (v > fhi ? fhi : v);
    return (int32_t)nearbyintf(v);
}

#if QX86
static graphopt_qconsts vector_consts(const graphopt_qepilogue* e) {
    graphopt_qconsts k;
    k.lo = _mm256_set1_ps((float)(e->lo - e->zero_point));
    k.hi = _mm256_set1_ps((float)(e->hi - e->zero_point));
    k.zp = _mm256_set1_epi32(e->zero_point);
    k.ra = _mm256_set1_ps(e->ratio_a);
    k.rb = _mm256_set1_ps(e->ratio_b);
    k.fixed = _mm256_set1_ps(e->fixed);
    k.add_lo = _mm256_set1_ps((float)e->add_lo);
    k.add_hi = _mm256_set1_ps((float)e->add_hi);
    k.u8 = e->out_type == GRAPHOPT_Q_U8;
#ifdef __FMA__
    k.fused = e->add != NULL && e->add_cs == 1;
#else
    k.fused = 0;
#endif
    k.low_free = !k.fused && e->lo == (k.u8 ? 0 : -128) && e->zero_point >= 0;
    return k;
}

/* Whether the vector epilogue can store this one (a residual needs FMA and contiguous rows). */
static int vector_epilogue(const graphopt_qepilogue* e, int64_t cs) {
    if (cs != 1 || e->out_type == GRAPHOPT_Q_F32) return 0;
#ifdef __FMA__
    return !e->add || e->add_cs == 1;
#else
    return !e->add;
#endif
}

#if QISA == 2
/* 16 outputs in one zmm: q_requant_vec's operations, in the same order, on 16 lanes (the same
 * roundings: cvtps2dq half to even, each fused multiply-add rounded once), then saturated to
 * bytes: u8 after a max with 0 (vpmovusdb reads its lanes unsigned), s8 by vpmovsdb. */
typedef struct {
    __m512 lo, hi, ra, rb, fixed, add_lo, add_hi;
    __m512i zp;
} zmm_consts;

/* A ymm constant in both halves of a zmm. */
static __m512 twice(__m256 v) {
    const __m256d d = _mm256_castps_pd(v);
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(d), d, 1));
}

/* The zmm forms of graphopt_qconsts (the same values, made once per tile). */
static zmm_consts zmm_consts_of(const graphopt_qconsts* k) {
    const __m512i zp = _mm512_inserti64x4(_mm512_castsi256_si512(k->zp), k->zp, 1);
    const zmm_consts z = {twice(k->lo), twice(k->hi),     twice(k->ra),     twice(k->rb),
                          twice(k->fixed), twice(k->add_lo), twice(k->add_hi), zp};
    return z;
}

/* 16 requantized outputs as int32 lanes (before the narrowing to bytes), no residual. */
QINLINE __m512i requant_plain_zmm(__m512i acc, __m512i bias, __m512 mult, const zmm_consts* z,
                                  int clamp_low) {
    const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, bias)), mult);
    const __m512 low = clamp_low ? _mm512_max_ps(v, z->lo) : v;
    return _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(low, z->hi)), z->zp);
}

/* The fused QLinearAdd of 16 requantized outputs q and their residual bytes raw. */
QINLINE __m512i residual_zmm(__m512i q, __m128i raw, const zmm_consts* z, int u8) {
    const __m512 b = _mm512_cvtepi32_ps(u8 ? _mm512_cvtepu8_epi32(raw)
                                           : _mm512_cvtepi8_epi32(raw));
    const __m512 s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), z->ra,
                                     _mm512_fmadd_ps(b, z->rb, z->fixed));
    return _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(s, z->add_lo), z->add_hi));
}

/* 16 requantized outputs as int32 lanes (before the narrowing to bytes). */
QINLINE __m512i requant_zmm(__m512i acc, __m512i bias, __m512 mult, const zmm_consts* z,
                            const int8_t* add, int u8, int clamp_low) {
    const __m512i q = requant_plain_zmm(acc, bias, mult, z, clamp_low);
    return add ? residual_zmm(q, _mm_loadu_si128((const __m128i*)add), z, u8) : q;
}

QINLINE __m128i requant16_zmm(__m512i acc, __m512i bias, __m512 mult, const zmm_consts* z,
                              const int8_t* add, int u8, int clamp_low) {
    const __m512i q = requant_zmm(acc, bias, mult, z, add, u8, clamp_low);
    return u8 ? _mm512_cvtusepi32_epi8(_mm512_max_epi32(q, _mm512_setzero_si512()))
              : _mm512_cvtsepi32_epi8(q);
}

/* 48 requantized outputs (int32 lanes of q[0..2]) narrowed to the low 48 bytes, in order:
 * saturated to 16 then 8 bits by in-lane packs (the same bytes as vpmovusdb after the max with
 * 0 / vpmovsdb: saturation is monotone), then the lanes put in order. */
QINLINE __m512i narrow48(const __m512i q[3], int u8) {
    const __m512i w01 = _mm512_packs_epi32(q[0], q[1]), w22 = _mm512_packs_epi32(q[2], q[2]);
    /* lane L: 4 bytes each of q0, q1, q2, q2 (their lane L) */
    const __m512i b = u8 ? _mm512_packus_epi16(w01, w22) : _mm512_packs_epi16(w01, w22);
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_epi32(order, b);
}

/* 48 outputs of a row (a whole tile's) from three vectors of accumulators: saturated to 16
 * then 8 bits by in-lane packs (the same bytes as vpmovusdb after the max with 0 / vpmovsdb:
 * saturation is monotone), then the lanes put in order; 2 packs and a permute for 48 bytes
 * instead of three 2-uop vpmov. */
QINLINE void requant48_zmm(const int32_t* acc, __m512i bias, __m512 mult, const zmm_consts* z,
                           const int8_t* add, int u8, int clamp_low, int8_t* out) {
    __m512i q[3];
    for (int i = 0; i < 3; ++i)
        q[i] = requant_zmm(_mm512_loadu_si512((const void*)(acc + 16 * i)), bias, mult, z,
                           add ? add + 16 * i : NULL, u8, clamp_low);
    const __m512i v = narrow48(q, u8);
    _mm256_storeu_si256((__m256i*)out, _mm512_castsi512_si256(v));
    _mm_storeu_si128((__m128i*)(out + 32), _mm512_extracti32x4_epi32(v, 2));
}

/* Rows of a tile of the implicit GEMM (graphopt_q_store_runs): each row's 48 virtual columns
 * requantized together (their residual bytes gathered by masked loads), then its runs of real
 * columns stored by masked stores: no per-run calls, no scalar tails. */
QINLINE void runs_rows(const int32_t* acc, const graphopt_qepilogue* e,
                       const graphopt_qconsts* k, int64_t r0, int m, const graphopt_qrun* runs,
                       int count, int8_t* C, int64_t rs, int u8, int clamp_low) {
    const zmm_consts z = zmm_consts_of(k);
    for (int r = 0; r < m; ++r) {
        const __m512i bv = _mm512_set1_epi32(e->bias ? e->bias[r0 + r] : 0);
        const __m512 mv = _mm512_set1_ps(e->mult[r0 + r]);
        __m512i q[3];
        for (int i = 0; i < 3; ++i)
            q[i] = requant_plain_zmm(_mm512_loadu_si512((const void*)(acc + r * QTN + 16 * i)),
                                     bv, mv, &z, clamp_low);
        if (k->fused) {
            const int8_t* add = (const int8_t*)e->add + (r0 + r) * e->add_rs;
            __m512i raw = _mm512_setzero_si512();
            for (int j = 0; j < count; ++j)
                raw = _mm512_mask_loadu_epi8(raw, runs[j].lanes, add + runs[j].at);
            q[0] = residual_zmm(q[0], _mm512_extracti32x4_epi32(raw, 0), &z, u8);
            q[1] = residual_zmm(q[1], _mm512_extracti32x4_epi32(raw, 1), &z, u8);
            q[2] = residual_zmm(q[2], _mm512_extracti32x4_epi32(raw, 2), &z, u8);
        }
        const __m512i v = narrow48(q, u8);
        int8_t* row = C + (r0 + r) * rs;
        for (int j = 0; j < count; ++j)
            _mm512_mask_storeu_epi8(row + runs[j].at, runs[j].lanes, v);
    }
}
#endif

/* The rows of graphopt_q_store_full_tile, the output type and the lower clamp constants at
 * each call. */
QINLINE void full_tile_rows(const int32_t* acc, const graphopt_qepilogue* e,
                            const graphopt_qconsts* k, int64_t r0, int64_t c0, int m, int n,
                            int8_t* out, int64_t rs, int u8, int clamp_low) {
#if QISA == 2
    const zmm_consts z = zmm_consts_of(k);
#endif
    for (int r = 0; r < m; ++r) {
        const int8_t* add = k->fused ? (const int8_t*)e->add + (r0 + r) * e->add_rs + c0 : NULL;
        const int32_t bias = e->bias ? e->bias[r0 + r] : 0;
        const float mult = e->mult[r0 + r];
#if QISA == 2
        const __m512i bv = _mm512_set1_epi32(bias);
        const __m512 mv = _mm512_set1_ps(mult);
        if (n == 48) {
            requant48_zmm(acc + r * QTN, bv, mv, &z, add, u8, clamp_low, out + r * rs);
            continue;
        }
        for (int c = 0; c < n; c += 16)
            _mm_storeu_si128((__m128i*)(out + r * rs + c),
                             requant16_zmm(_mm512_loadu_si512((const void*)(acc + r * QTN + c)),
                                           bv, mv, &z, add ? add + c : NULL, u8, clamp_low));
#else
        for (int c = 0; c < n; c += 16)
            q_requant_store16(_mm256_loadu_si256((const __m256i*)(acc + r * QTN + c)),
                              _mm256_loadu_si256((const __m256i*)(acc + r * QTN + c + 8)),
                              _mm256_set1_epi32(bias), _mm256_set1_ps(mult), k,
                              add ? add + c : NULL, u8, clamp_low, out + r * rs + c);
#endif
    }
}

/* call(u8, clamp_low) with the output type and whether the low clamp is needed as constants,
 * so each of the four inlined variants drops the branches it does not need. */
#define WITH_STORE_FLAGS(k, call)          \
    do {                                   \
        if ((k)->u8 && (k)->low_free)      \
            call(1, 0);                    \
        else if ((k)->u8)                  \
            call(1, 1);                    \
        else if ((k)->low_free)            \
            call(0, 0);                    \
        else                               \
            call(0, 1);                    \
    } while (0)

void graphopt_q_store_full_tile(const int32_t* acc, const graphopt_qepilogue* e,
                                const graphopt_qconsts* k, int64_t r0, int64_t c0, int m, int n,
                                int8_t* out, int64_t rs) {
#define FULL_TILE_ROWS(u8, clamp_low) full_tile_rows(acc, e, k, r0, c0, m, n, out, rs, u8, clamp_low)
    WITH_STORE_FLAGS(k, FULL_TILE_ROWS);
#undef FULL_TILE_ROWS
}

#if QISA == 2 && defined(__AVX512VL__)
/* n < 16 outputs of a row from acc (add: their n residual bytes) with requant16_zmm's
 * arithmetic, lanes past n masked off (nothing read or written past them). Returns n. */
static int64_t masked_tail(const int32_t* acc, int32_t bias, float mult,
                           const graphopt_qconsts* k, const int8_t* add, int64_t n, int8_t* out) {
    const __mmask16 lanes = (__mmask16)((1u << n) - 1);
    const zmm_consts z = zmm_consts_of(k);
    int8_t residual[16] = {0};
    if (add) memcpy(residual, add, (size_t)n);
    const __m128i q = requant16_zmm(_mm512_maskz_loadu_epi32(lanes, acc),
                                    _mm512_set1_epi32(bias), _mm512_set1_ps(mult), &z,
                                    add ? residual : NULL, k->u8, 1);
    _mm_mask_storeu_epi8(out, lanes, q);
    return n;
}
#endif

/* One output row c0 .. c0 + n (contiguous) from acc: 16, then 8 at a time; returns the count
 * stored (the rest is left to the scalar loop). */
QINLINE int64_t store_row_vec(const int32_t* acc, int32_t bias, float mult,
                              const graphopt_qconsts* k, const graphopt_qepilogue* e, int64_t row,
                              int64_t c0, int64_t n, int8_t* out) {
    const __m256i bv = _mm256_set1_epi32(bias);
    const __m256 mv = _mm256_set1_ps(mult);
    const int8_t* add = k->fused ? (const int8_t*)e->add + row * e->add_rs + c0 : NULL;
    int64_t c = 0;
    for (; c + 16 <= n; c += 16)
        q_requant_store16(_mm256_loadu_si256((const __m256i*)(acc + c)),
                        _mm256_loadu_si256((const __m256i*)(acc + c + 8)), bv, mv, k,
                        add ? add + c : NULL, k->u8, 1, out + c);
#if QISA == 2 && defined(__AVX512VL__)
    if (c < n) /* the last 1 to 15 (runs of the implicit GEMM's rows): masked, not scalar */
        c += masked_tail(acc + c, bias, mult, k, add ? add + c : NULL, n - c, out + c);
#endif
    for (; c + 8 <= n; c += 8) {
        const __m256i q = q_requant_vec(_mm256_loadu_si256((const __m256i*)(acc + c)), bv, mv,
                                        k, add ? add + c : NULL, 1);
        _mm_storel_epi64((__m128i*)(out + c), q_narrow16(q, q, k->u8));
    }
    return c;
}
#endif

const graphopt_qconsts* graphopt_q_epilogue_consts(const graphopt_qepilogue* e, int64_t cs,
                                                   graphopt_qconsts* out) {
#if QX86
    if (vector_epilogue(e, cs)) {
        *out = vector_consts(e);
        return out;
    }
#else
    (void)e;
    (void)cs;
    (void)out;
#endif
    return NULL;
}

void graphopt_q_store_tile(const int32_t* acc, int64_t lda, int64_t r0, int64_t c0, int64_t m,
                           int64_t n, const graphopt_qepilogue* e, const graphopt_qconsts* k,
                           void* C, int64_t rs, int64_t cs) {
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
#if QX86
        if (k)
            c = store_row_vec(a, bias, mult, k, e, r0 + r, c0, n, (int8_t*)C + (r0 + r) * rs + c0);
#else
        (void)k;
#endif
        const int32_t zp = e->zero_point, lo = e->lo, hi = e->hi;
        const int32_t u8 = e->out_type == GRAPHOPT_Q_U8;
        const void* add = e->add;
        for (; c < n; ++c) {
            const int64_t at = (r0 + r) * rs + (c0 + c) * cs;
            int32_t q = graphopt_q_requant(a[c] + bias, mult, zp, lo, hi);
            if (add) {
                const int64_t bt = (r0 + r) * e->add_rs + (c0 + c) * e->add_cs;
                const int32_t b = u8 ? ((const uint8_t*)add)[bt] : ((const int8_t*)add)[bt];
                q = graphopt_q_ladd(q, b, e->ratio_a, e->ratio_b, e->fixed, e->add_lo,
                                    e->add_hi);
            }
            if (u8)
                ((uint8_t*)C)[at] = (uint8_t)q;
            else
                ((int8_t*)C)[at] = (int8_t)q;
        }
    }
}

int graphopt_q_store_runs(const int32_t* acc, const graphopt_qepilogue* e,
                          const graphopt_qconsts* k, int64_t r0, int m, const graphopt_qrun* runs,
                          int count, void* C, int64_t rs) {
#if QISA == 2
    if (!k) return 0;
    int8_t* out = (int8_t*)C;
#define RUNS_ROWS(u8, clamp_low) runs_rows(acc, e, k, r0, m, runs, count, out, rs, u8, clamp_low)
    WITH_STORE_FLAGS(k, RUNS_ROWS);
#undef RUNS_ROWS
    return 1;
#else
    (void)acc, (void)e, (void)k, (void)r0, (void)m, (void)runs, (void)count, (void)C, (void)rs;
    return 0;
#endif
}
