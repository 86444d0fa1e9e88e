/* What the integer kernels (q*.c, graphopt_qkernels.h) share: the ISA choice, tile sizes, the
 * per-thread work slots, the padded plane, and the one epilogue every kernel stores through.
 * Private to csrc: generated code includes graphopt_qkernels.h only.
 *
 * Include this first in every q*.c file. Its pragma turns off FMA contraction for the whole
 * translation unit (intrinsics included), so the epilogue's float arithmetic rounds exactly as
 * graphopt/quantization/rounding.py and onnxruntime do: its only fused multiply-adds are
 * explicit fmaf calls or _mm256_fmadd_ps, each rounding once.
 */
#ifndef GRAPHOPT_QINTERNAL_H
#define GRAPHOPT_QINTERNAL_H

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <stdint.h>
#include <string.h>

#include "graphopt_kernels.h" /* GRAPHOPT_WORTH_THREADS: the one grain rule */
#include "graphopt_qkernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* The micro-kernel family from the compiler's macros (graphopt_qgemm_isa reports it). */
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
/* The x86 vector paths (AVX2, and AVX-512 VNNI, which also has AVX2) of everything but the
 * micro-kernel. */
#define QX86 (QISA == 1 || QISA == 2)

#define QMR GRAPHOPT_QMR
#define QNR GRAPHOPT_QNR
/* Slack after a padded plane and after gathered rows for the vector over-reads/-writes
 * (int8/packing.py's, through graphopt_config.h). */
#define PLANE_SLACK GRAPHOPT_QPLANE_SLACK
/* The register tile in panels: QTILE_A row panels (QMR rows each) x QTILE_B column panels (QNR
 * columns each). The packed layouts are those of one panel on every ISA (weights are packed
 * once, whatever the target); a micro-kernel reads the panels of its tile as separate streams.
 * VNNI: 8 x 48, 24 zmm accumulators (qgemm_tile.c); AVX2 and NEON: 4 x 16, what their 16
 * (AVX2) vector registers hold with the widening temporaries. */
#if QISA == 2
#define QTILE_A 2
#define QTILE_B 3
#else
#define QTILE_A 1
#define QTILE_B 1
#endif
#define QTM (QTILE_A * QMR) /* rows of a register tile */
#define QTN (QTILE_B * QNR) /* columns of a register tile: the accumulators' row stride */
/* Column panels per block of packed B are a multiple of this (when a block holds that many):
 * every ISA's QTILE_B divides it, and the work size (int8/packing.py) stays ISA-independent. */
#define QBLOCK_PANELS 6

/* The grain rule counts fp32 multiply-adds (Target.grain: ~20 GMAC/s a core); the int8 conv
 * runs faster on the same core, so integer MACs are scaled down before the rule sees them:
 * AVX2 ~60-75 GMAC/s on Zen 3 (vpmaddubsw: four products per 32-bit lane, less the widening
 * add and the epilogue): 3; VNNI ~150-200 GMAC/s on Zen 4 (vpdpbusd, 64 a cycle): 8. */
#if QISA == 2
#define QMACS_PER_MAC 8
#else
#define QMACS_PER_MAC 3
#endif

#if defined(__GNUC__)
#define QINLINE static inline __attribute__((always_inline))
#else
#define QINLINE static inline
#endif

/* Accumulators stored and reloaded whole vectors at a time: on Zen 4 a zmm store across a
 * cache line costs two, and its reload misses the store forwarding. */
#if defined(__GNUC__)
#define QALIGNED(n) __attribute__((aligned(n)))
#else
#define QALIGNED(n)
#endif

static inline int64_t q_k_groups(int64_t K) { return (K + 3) / 4; }

static inline int64_t q_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---- per-thread work memory (the caller's: kernels never allocate) ------------------------- */

/* Threads of a kernel's parallel region: the run time's count capped by the caller's slots
 * (1 without OpenMP). */
static inline int q_team_size(int slots) {
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    return slots < 1 ? 1 : (threads < slots ? threads : slots);
}

/* This thread's slot of `work` (slot bytes each, one slot per thread of the team). */
static inline uint8_t* q_slot_of(void* work, int64_t slot) {
    int t = 0;
#ifdef _OPENMP
    t = omp_get_thread_num();
#endif
    return (uint8_t*)work + t * slot;
}

/* ---- the padded plane (qplane.c) ---------------------------------------------------------- */

/* ph x pw: the plane holding every tap of every output, padded (see graphopt_q_pad_plane). */
static inline int64_t q_padded_h(const graphopt_qconv_shape* s) {
    return (s->out_height - 1) * s->stride_h + (s->kernel_h - 1) * s->dilation_h + 1;
}

static inline int64_t q_padded_w(const graphopt_qconv_shape* s) {
    return (s->out_width - 1) * s->stride_w + (s->kernel_w - 1) * s->dilation_w + 1;
}

/* One channel xc copied into a ph x pw plane padded with `pad` (x: 0x80 flips s8 to u8). The
 * border is the same for every channel: only the first call (fill != 0) writes it, later ones
 * copy the interior rows. The caller's slot has PLANE_SLACK bytes after it for over-reads. */
void graphopt_q_pad_plane(const uint8_t* xc, const graphopt_qconv_shape* s, int64_t ph,
                          int64_t pw, uint8_t pad, uint8_t x, int fill, uint8_t* padded);

/* memcpy for the short rows of small planes (7 to 28 elements), where a library call costs
 * more than the copy. */
void graphopt_q_copy_short(void* dst, const void* src, size_t n);

#if QX86
/* src[0], src[sw], ... src[15 * sw] for sw 1 or 2 (reads 16 * sw bytes). Stride 2 keeps the
 * low byte of each 16-bit pair: the even elements. */
static inline __m128i q_strided16(const uint8_t* src, int64_t sw) {
    if (sw == 1) return _mm_loadu_si128((const __m128i*)src);
#if QISA == 2 && defined(__AVX512VL__)
    /* vpmovwb: the low byte of each 16-bit pair in one instruction (not three) */
    return _mm256_cvtepi16_epi8(_mm256_loadu_si256((const __m256i*)src));
#else
    const __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i*)src),
                                       _mm256_set1_epi16(0xff));
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi16(v, v), 0x08));
#endif
}

/* Saturating narrowing of 8 (then 16) int32 lanes already in range: the store's bytes. */
static inline __m128i q_narrow16(__m256i q0, __m256i q1, int u8) {
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
    const __m128i l = _mm256_castsi256_si128(w), h = _mm256_extracti128_si256(w, 1);
    return u8 ? _mm_packus_epi16(l, h) : _mm_packs_epi16(l, h);
}
#endif

/* ---- packed B panels (qpack.c) ------------------------------------------------------------ */

#if QX86
/* Store 4 rows of 16 bytes in registers (k = 4g .. 4g+3) as one panel group [c][t]. */
static inline void q_interleave4x16_regs(__m128i a0, __m128i a1, __m128i a2, __m128i a3,
                                         uint8_t* o) {
    const __m128i lo01 = _mm_unpacklo_epi8(a0, a1), lo23 = _mm_unpacklo_epi8(a2, a3);
    const __m128i hi01 = _mm_unpackhi_epi8(a0, a1), hi23 = _mm_unpackhi_epi8(a2, a3);
    _mm_storeu_si128((__m128i*)o, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128((__m128i*)(o + 16), _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128((__m128i*)(o + 32), _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128((__m128i*)(o + 48), _mm_unpackhi_epi16(hi01, hi23));
}
#endif

/* Store 4 rows of 16 bytes (k = 4g .. 4g+3 of 16 columns) as one panel group [c][t]. */
static inline void q_interleave4x16(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2,
                                    const uint8_t* r3, uint8_t* o) {
#if QX86
    q_interleave4x16_regs(_mm_loadu_si128((const __m128i*)r0), _mm_loadu_si128((const __m128i*)r1),
                          _mm_loadu_si128((const __m128i*)r2), _mm_loadu_si128((const __m128i*)r3),
                          o);
#else
    for (int c = 0; c < QNR; ++c) {
        o[c * 4] = r0[c];
        o[c * 4 + 1] = r1[c];
        o[c * 4 + 2] = r2[c];
        o[c * 4 + 3] = r3[c];
    }
#endif
}

/* ---- the epilogue: int32 accumulators -> output (qepilogue.c) ----------------------------- */

#if QX86
/* The epilogue's constants as vectors, made once per call (not per 8 outputs). */
typedef struct {
    __m256 lo, hi;          /* clamp of float(acc) * mult: type range - zero point */
    __m256i zp;
    __m256 ra, rb, fixed, add_lo, add_hi; /* the fused QLinearAdd */
    int u8;
    int fused;              /* a residual handled here (needs FMA and contiguous rows) */
    int low_free;           /* the lower clamp may be left to the narrowing (q_requant_vec) */
} graphopt_qconsts;
#else
typedef struct {
    int unused; /* no vector epilogue on this path */
} graphopt_qconsts;
#endif

#if QX86
/* 8 requantized outputs (int32 lanes): the vector form of graphopt_q_requant() -- clamp in
 * float, cvtps2dq rounds half to even (default MXCSR), + zero point: the same integers. With a
 * residual (add: 8 contiguous elements) QLinearAdd follows as graphopt_q_ladd() computes it:
 * two fused multiply-adds, each rounded once like fmaf. clamp_low 0 (k->low_free only) skips
 * the lower clamp: the bound is the type's least value and the zero point >= 0, so anything
 * below, even cvtps2dq's INT_MIN for a huge negative, stays below after + zp and the saturating
 * narrowing makes it the least value, as the clamp would (the upper clamp also keeps a huge
 * positive from becoming INT_MIN). */
/* always inline: called per 8 outputs, a call would cost as much as its body */
QINLINE __m256i q_requant_vec(__m256i acc, __m256i bias, __m256 mult,
                              const graphopt_qconsts* k, const void* add, int clamp_low) {
    const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, bias)), mult);
    const __m256 low = clamp_low ? _mm256_max_ps(v, k->lo) : v;
    __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(low, k->hi)), k->zp);
#ifdef __FMA__
    if (add) {
        const __m128i raw = _mm_loadl_epi64((const __m128i*)add);
        const __m256 b = _mm256_cvtepi32_ps(k->u8 ? _mm256_cvtepu8_epi32(raw)
                                                  : _mm256_cvtepi8_epi32(raw));
        const __m256 s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), k->ra,
                                         _mm256_fmadd_ps(b, k->rb, k->fixed));
        q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(s, k->add_lo), k->add_hi));
    }
#else
    (void)add;
#endif
    return q;
}

/* 16 outputs of one row from two vectors of 8 accumulators (add: their 16 residual bytes). */
QINLINE void q_requant_store16(__m256i lo, __m256i hi, __m256i bias, __m256 mult,
                               const graphopt_qconsts* k, const int8_t* add, int u8,
                               int clamp_low, int8_t* out) {
    const __m256i q0 = q_requant_vec(lo, bias, mult, k, add, clamp_low);
    const __m256i q1 = q_requant_vec(hi, bias, mult, k, add ? add + 8 : NULL, clamp_low);
    _mm_storeu_si128((__m128i*)out, q_narrow16(q0, q1, u8));
}
#endif

/* rint(float(acc) * m) + zp, clamped (the scalar epilogue; every vector form equals it). */
int32_t graphopt_q_requant(int32_t acc, float m, int32_t zp, int32_t lo, int32_t hi);

/* QLinearAdd of two stored values as onnxruntime computes it:
 * rint(fma(a, ra, fma(b, rb, fixed))), clamped to [lo, hi]. */
int32_t graphopt_q_ladd(int32_t a, int32_t b, float ra, float rb, float fixed, int32_t lo,
                        int32_t hi);

/* The vector constants of `e` stored with column stride cs, in *out; NULL: scalar epilogue. */
const graphopt_qconsts* graphopt_q_epilogue_consts(const graphopt_qepilogue* e, int64_t cs,
                                                   graphopt_qconsts* out);

/* Row r0 + r, columns c0 .. c0 + n of the output from acc[r * lda + c]. `e` must not alias C
 * (callers pass a local copy: byte stores through C could alias it, and every field would be
 * reloaded per element); k: its vector constants, or NULL for scalar only. */
void graphopt_q_store_tile(const int32_t* acc, int64_t lda, int64_t r0, int64_t c0, int64_t m,
                           int64_t n, const graphopt_qepilogue* e, const graphopt_qconsts* k,
                           void* C, int64_t rs, int64_t cs);

#if QX86
/* m rows of n columns (a multiple of 16) of acc (row stride QTN; rows r0.., columns c0.. of the
 * output, `out` its first byte, rows rs apart) with the vector epilogue (k not NULL): no bounds
 * or layout checks per row. */
void graphopt_q_store_full_tile(const int32_t* acc, const graphopt_qepilogue* e,
                                const graphopt_qconsts* k, int64_t r0, int64_t c0, int m, int n,
                                int8_t* out, int64_t rs);
#endif

/* A run of real output columns among a register tile's QTN columns: lanes (bit c: tile column
 * c) go to row element `at` + c. */
typedef struct {
    int64_t at;
    uint64_t lanes;
} graphopt_qrun;

/* Rows r0 .. r0 + m of a register tile's accumulators (acc, row stride QTN) stored to C (rows
 * rs apart) in `count` runs of columns, with the vector epilogue k (the implicit GEMM's tiles,
 * whose columns skip the padded width's). Returns 0 (nothing done) where this ISA has no such
 * store, or without k. */
int graphopt_q_store_runs(const int32_t* acc, const graphopt_qepilogue* e,
                          const graphopt_qconsts* k, int64_t r0, int m, const graphopt_qrun* runs,
                          int count, void* C, int64_t rs);

/* ---- the micro-kernel (qgemm_tile.c) and the tile loop (qgemm.c) ------------------------- */

/* acc[r*QTN + c] = sum_k A[r, k] * B[k, c] over one register tile of ma <= QTILE_A row panels
 * (a: the first; the next ones follow, K4 * QMR * 4 bytes apart) and nb <= QTILE_B column panels
 * (b: the first, K4 * QNR * 4 bytes apart) of K4 groups of 4; narrow: the weights fit
 * vpmaddubsw; n: the tile's valid columns. */
void graphopt_q_compute_tile(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int nb,
                             int32_t* acc, int narrow, int64_t n);

/* A whole register tile (QTILE_A x QTILE_B panels) into acc as graphopt_q_compute_tile, and
 * column 0 of the column panel after it into column[r] (QTM rows) in the same pass over A: a
 * last panel of one column (7x7 planes: 3 * 16 + 1) without reading A again. Returns 0
 * (nothing done) where this ISA has no such kernel. */
int graphopt_q_compute_tile_column(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc,
                                   int32_t* column);

/* acc[r*QTN + c] = sum_k A[r, k] * B[k, c] for the first n columns of b only (a last panel of
 * a few: n 1, and 2 to 4 on VNNI), ma row panels. Returns 0 (nothing done) where this ISA has
 * no such kernel (then a whole tile is computed). */
int graphopt_q_gemv_tile(int64_t K4, const int8_t* a, int ma, const uint8_t* b, int64_t n,
                         int narrow, int32_t* acc);

/* acc as graphopt_q_compute_tile, B read straight from interleaved padded planes (the
 * implicit GEMM of qconv.c): group g of the tile's first column panel is the 64 bytes at
 * b + offs[g], its next panels follow 64 bytes apart. Returns 0 (nothing done) where this ISA
 * has no such kernel (then B is packed from the planes, graphopt_q_compute_tile). */
int graphopt_q_compute_tile_implicit(int64_t K4, const int8_t* a, int ma, const uint8_t* b,
                                     int nb, const int64_t* offs, int32_t* acc);

/* Tiles of row panels [ip0, ip1) x column panels [jp0, jp1) of C = epilogue(A B), each
 * computed and stored (C[r*rs + c*cs]); Bp: column panel jp0 of the packed B (the others
 * follow). k: e's vector constants for this store, or NULL. */
void graphopt_q_tiles(int64_t K4, const int8_t* Ap, int64_t M, int64_t ip0, int64_t ip1,
                      const uint8_t* Bp, int64_t N, int64_t jp0, int64_t jp1,
                      const graphopt_qepilogue* e, const graphopt_qconsts* k, void* C, int64_t rs,
                      int64_t cs);

#endif
