/* u8 x s8 GEMM with int32 accumulators and a fused requantizing epilogue (graphopt_qkernels.h).
 *
 * Every path computes the exact int32 dot products (no saturating instruction ever sees a
 * value that could saturate), so they all hand the same accumulators to the one epilogue
 * below; its float arithmetic is compiled without FMA contraction (its only fused
 * multiply-adds are explicit fmaf calls, or _mm256_fmadd_ps in the AVX2 form, which rounds
 * once the same way) so rint(float(acc) * mult) and QLinearAdd round exactly as
 * rounding.py / reference.py and onnxruntime do.
 *
 * Where the time goes (resnet18 / mobilenet_v2, AVX2): the 4 x 16 micro-kernel, then im2col
 * (each channel padded once, rows gathered with vector copies), the epilogue (vectorized,
 * residual included) and depthwise (taps paired for vpmaddwd over 16 outputs; stride-1
 * planes run as one flat row so 7x7 planes still fill vectors).
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <math.h>
#include <string.h>

#include "graphopt_kernels.h" /* GRAPHOPT_WORTH_THREADS: the one grain rule */
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
/* The grain rule counts fp32 multiply-adds; an int8 one costs about a quarter of that (four
 * products per 32-bit lane), so integer MACs are scaled down before the rule sees them. */
#define QMACS_PER_MAC 4

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
#pragma omp parallel for schedule(static) if (GRAPHOPT_WORTH_THREADS(0, 2 * K * N))
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

/* The first and the last c bytes of n (c <= n <= 2c): two fixed-size copies, inlined. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void copy_ends(uint8_t* d, const uint8_t* s, size_t n, size_t c) {
    memcpy(d, s, c);
    memcpy(d + n - c, s + n - c, c);
}

/* memcpy for the short rows of small planes (7 to 28 elements), where a library call costs
 * more than the copy. */
static inline void copy_short(void* dst, const void* src, size_t n) {
    uint8_t* d = (uint8_t*)dst;
    const uint8_t* s = (const uint8_t*)src;
    if (n > 64)
        memcpy(d, s, n);
    else if (n >= 32)
        copy_ends(d, s, n, 32);
    else if (n >= 16)
        copy_ends(d, s, n, 16);
    else if (n >= 8)
        copy_ends(d, s, n, 8);
    else if (n >= 4)
        copy_ends(d, s, n, 4);
    else
        for (size_t i = 0; i < n; ++i) d[i] = s[i];
}

/* One channel copied into a plane padded with the zero point (ph x pw: every tap of every
 * output inside, so the loops that read it have no bounds checks); its work slot has slack
 * after it for the over-reads of the vector loads. The border is the same for every channel:
 * only the first call (fill != 0) writes it, later ones copy the interior rows. */
static void pad_plane(const uint8_t* xc, const graphopt_qconv_shape* s, int64_t ph, int64_t pw,
                      uint8_t pad, uint8_t x, int fill, uint8_t* padded) {
    const int64_t left = s->pad_left < pw ? s->pad_left : pw;
    int64_t inner = s->width < pw - left ? s->width : pw - left;
    if (inner < 0) inner = 0;
    if (fill) memset(padded, pad, (size_t)(ph * pw));
    for (int64_t py = 0; py < ph; ++py) {
        const int64_t iy = py - s->pad_top;
        if (iy < 0 || iy >= s->height) continue;
        uint8_t* dst = padded + py * pw + left;
        const uint8_t* src = xc + iy * s->width;
        if (x)
            for (int64_t i = 0; i < inner; ++i) dst[i] = (uint8_t)(src[i] ^ x);
        else
            copy_short(dst, src, (size_t)inner);
    }
}

/* Slack after a padded plane and after the im2col rows for the vector over-reads/-writes
 * (int8/packing.py's, through graphopt_config.h). */
#define PLANE_SLACK GRAPHOPT_QPLANE_SLACK

#if QISA == 1 || QISA == 2
/* src[0], src[sw], ... src[15 * sw] for sw 1 or 2 (reads 16 * sw bytes). Stride 2 keeps the
 * low byte of each 16-bit pair: the even elements. */
static inline __m128i strided16(const uint8_t* src, int64_t sw) {
    if (sw == 1) return _mm_loadu_si128((const __m128i*)src);
    const __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i*)src),
                                       _mm256_set1_epi16(0xff));
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi16(v, v), 0x08));
}
#endif

/* n bytes src[0], src[sw], ... into dst. The vector path (sw 1 or 2) moves 16 bytes at a time
 * and may write up to 15 bytes past n and read up to 64 bytes past the last element. */
static void gather_row(const uint8_t* src, int64_t sw, int64_t n, uint8_t* dst) {
    int64_t o = 0;
#if QISA == 1 || QISA == 2
    if (sw <= 2)
        for (; o < n; o += 16) _mm_storeu_si128((__m128i*)(dst + o), strided16(src + o * sw, sw));
#endif
    if (sw == 1 && o < n)
        memcpy(dst + o, src + o, (size_t)(n - o));
    else
        for (; o < n; ++o) dst[o] = src[o * sw];
}

/* ---- per-thread work memory (the caller's: kernels never allocate) ------------------------- */

static int64_t round_up64(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ph x pw: the padded plane holding every tap of every output (see pad_plane). */
static int64_t padded_h(const graphopt_qconv_shape* s) {
    return (s->out_height - 1) * s->stride_h + (s->kernel_h - 1) * s->dilation_h + 1;
}

static int64_t padded_w(const graphopt_qconv_shape* s) {
    return (s->out_width - 1) * s->stride_w + (s->kernel_w - 1) * s->dilation_w + 1;
}

/* Threads of a kernel's parallel region: the run time's count capped by the caller's slots
 * (1 without OpenMP). */
static int team_size(int slots) {
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    return slots < 1 ? 1 : (threads < slots ? threads : slots);
}

/* This thread's slot of `work` (slot bytes each, one slot per thread of the team). */
static uint8_t* slot_of(void* work, int64_t slot) {
    int t = 0;
#ifdef _OPENMP
    t = omp_get_thread_num();
#endif
    return (uint8_t*)work + t * slot;
}

/* A slot of im2col: the 4 gathered rows, then the padded plane, each followed by slack. */
int64_t graphopt_qim2col_work(const graphopt_qconv_shape* s) {
    const int64_t span = round_up64(s->out_height * s->out_width, QNR);
    return round_up64(4 * span + PLANE_SLACK + padded_h(s) * padded_w(s) + PLANE_SLACK, 64);
}

/* im2col into the packed panels, one group of 4 rows k at a time: each channel is padded once
 * (per thread), the 4 rows are gathered whole from it into a thread's buffer, then interleaved
 * into every panel. */
void graphopt_qim2col_packed(const uint8_t* X, const graphopt_qconv_shape* s, uint8_t pad,
                             int flip, uint8_t* panels, void* work, int slots) {
    const int64_t kh = s->kernel_h, kw = s->kernel_w, oh = s->out_height, ow = s->out_width;
    const int64_t N = oh * ow, K = s->channels * kh * kw, K4 = k_groups(K);
    const int64_t np = (N + QNR - 1) / QNR, span = np * QNR; /* buffer row: zero past N */
    const int64_t ph = padded_h(s), pw = padded_w(s), slot = graphopt_qim2col_work(s);
    const uint8_t x = flip ? 0x80 : 0;
    const int team = team_size(slots);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (GRAPHOPT_WORTH_THREADS(0, 2 * K * N))
#endif
    {
        uint8_t* rows = slot_of(work, slot);
        uint8_t* padded = rows + 4 * span + PLANE_SLACK;
        int64_t cached = -1; /* the channel in `padded` */
        memset(rows, 0, (size_t)slot); /* the slack read past the data stays defined */
#ifdef _OPENMP
#pragma omp for schedule(dynamic) /* see graphopt_qgemm */
#endif
        for (int64_t g = 0; g < K4; ++g) {
            for (int t = 0; t < 4; ++t) {
                const int64_t k = 4 * g + t;
                uint8_t* row = rows + t * span;
                if (k >= K) {
                    memset(row, 0, (size_t)span);
                    continue;
                }
                const int64_t ch = k / (kh * kw), ky = (k / kw) % kh, kx = k % kw;
                if (ch != cached) {
                    pad_plane(X + ch * s->height * s->width, s, ph, pw, pad, x, cached < 0,
                              padded);
                    cached = ch;
                }
                const uint8_t* src = padded + ky * s->dilation_h * pw + kx * s->dilation_w;
                for (int64_t oy = 0; oy < oh; ++oy) /* in order: a row's spill is overwritten */
                    gather_row(src + oy * s->stride_h * pw, s->stride_w, ow, row + oy * ow);
                memset(row + N, 0, (size_t)(span - N));
            }
            for (int64_t p = 0; p < np; ++p)
                interleave4x16(rows + p * QNR, rows + span + p * QNR, rows + 2 * span + p * QNR,
                               rows + 3 * span + p * QNR, panels + (p * K4 + g) * QNR * 4);
        }
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
/* The epilogue's constants as vectors, made once per store (not per 8 outputs). */
typedef struct {
    __m256 lo, hi;          /* clamp of float(acc) * mult: type range - zero point */
    __m256i zp;
    __m256 ra, rb, fixed, add_lo, add_hi; /* the fused QLinearAdd */
    int u8;
    int fused;              /* a residual handled here (needs FMA and contiguous rows) */
    int low_free;           /* the lower clamp may be left to the narrowing (see requant_vec) */
} qconsts;

static qconsts vector_consts(const graphopt_qepilogue* e) {
    qconsts k;
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

/* 8 requantized outputs (int32 lanes): the vector form of requant() -- clamp in float,
 * cvtps2dq rounds half to even (default MXCSR), + zero point: the same integers. With a
 * residual (add: 8 contiguous elements) QLinearAdd follows as qladd() computes it: two fused
 * multiply-adds, each rounded once like fmaf. clamp_low 0 (k->low_free only) skips the lower
 * clamp: the bound is the type's least value and the zero point >= 0, so anything below,
 * even cvtps2dq's INT_MIN for a huge negative, stays below after + zp and the saturating
 * narrowing makes it the least value, as the clamp would (the upper clamp also keeps a huge
 * positive from becoming INT_MIN). */
#if defined(__GNUC__)
__attribute__((always_inline)) /* called per 8 outputs: a call would cost as much as its body */
#endif
static inline __m256i requant_vec(__m256i acc, __m256i bias, __m256 mult, const qconsts* k,
                                  const void* add, int clamp_low) {
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

/* Saturating narrowing of 8 (then 16) int32 lanes already in range: the store's bytes. */
static inline __m128i narrow16(__m256i q0, __m256i q1, int u8) {
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
    const __m128i l = _mm256_castsi256_si128(w), h = _mm256_extracti128_si256(w, 1);
    return u8 ? _mm_packus_epi16(l, h) : _mm_packs_epi16(l, h);
}

/* 16 outputs of one row from two vectors of 8 accumulators (add: their 16 residual bytes). */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void requant_store16(__m256i lo, __m256i hi, __m256i bias, __m256 mult,
                                   const qconsts* k, const int8_t* add, int u8, int clamp_low,
                                   int8_t* out) {
    const __m256i q0 = requant_vec(lo, bias, mult, k, add, clamp_low);
    const __m256i q1 = requant_vec(hi, bias, mult, k, add ? add + 8 : NULL, clamp_low);
    _mm_storeu_si128((__m128i*)out, narrow16(q0, q1, u8));
}

/* The rows of store_full_tile, the output type and the lower clamp constants at each call. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void full_tile_rows(const int32_t* acc, const graphopt_qepilogue* e,
                                  const qconsts* k, int64_t r0, int64_t c0, int8_t* out,
                                  int64_t rs, int u8, int clamp_low) {
    for (int r = 0; r < QMR; ++r) {
        const int8_t* add = k->fused ? (const int8_t*)e->add + (r0 + r) * e->add_rs + c0 : NULL;
        requant_store16(_mm256_loadu_si256((const __m256i*)(acc + r * QNR)),
                        _mm256_loadu_si256((const __m256i*)(acc + r * QNR + 8)),
                        _mm256_set1_epi32(e->bias ? e->bias[r0 + r] : 0),
                        _mm256_set1_ps(e->mult[r0 + r]), k, add, u8, clamp_low, out + r * rs);
    }
}

/* A whole QMR x QNR tile of acc (rows r0.., columns c0.. of the output, `out` its first byte,
 * rows rs apart) with the vector epilogue: no bounds or layout checks per row. */
static void store_full_tile(const int32_t* acc, const graphopt_qepilogue* e, const qconsts* k,
                            int64_t r0, int64_t c0, int8_t* out, int64_t rs) {
    if (k->u8 && k->low_free)
        full_tile_rows(acc, e, k, r0, c0, out, rs, 1, 0);
    else if (k->u8)
        full_tile_rows(acc, e, k, r0, c0, out, rs, 1, 1);
    else if (k->low_free)
        full_tile_rows(acc, e, k, r0, c0, out, rs, 0, 0);
    else
        full_tile_rows(acc, e, k, r0, c0, out, rs, 0, 1);
}

/* One output row c0 .. c0 + n (contiguous) from acc: 16, then 8 at a time; returns the count
 * stored (the rest is left to the scalar loop). */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline int64_t store_row_vec(const int32_t* acc, int32_t bias, float mult, const qconsts* k,
                             const graphopt_qepilogue* e, int64_t row, int64_t c0, int64_t n,
                             int8_t* out) {
    const __m256i bv = _mm256_set1_epi32(bias);
    const __m256 mv = _mm256_set1_ps(mult);
    const int8_t* add = k->fused ? (const int8_t*)e->add + row * e->add_rs + c0 : NULL;
    int64_t c = 0;
    for (; c + 16 <= n; c += 16)
        requant_store16(_mm256_loadu_si256((const __m256i*)(acc + c)),
                        _mm256_loadu_si256((const __m256i*)(acc + c + 8)), bv, mv, k,
                        add ? add + c : NULL, k->u8, 1, out + c);
    for (; c + 8 <= n; c += 8) {
        const __m256i q = requant_vec(_mm256_loadu_si256((const __m256i*)(acc + c)), bv, mv, k,
                                      add ? add + c : NULL, 1);
        _mm_storel_epi64((__m128i*)(out + c), narrow16(q, q, k->u8));
    }
    return c;
}
#else
typedef struct {
    int unused; /* no vector epilogue on this path */
} qconsts;
#endif

/* The vector constants of `e` stored with column stride cs, in *out; NULL: scalar epilogue. */
static const qconsts* epilogue_consts(const graphopt_qepilogue* e, int64_t cs, qconsts* out) {
#if QISA == 1 || QISA == 2
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

/* Row r0 + r, columns c0 .. c0 + n of the output from acc[r * lda + c]. `e` must not alias C
 * (callers pass a local copy: byte stores through C could alias it, and every field would be
 * reloaded per element); k: its vector constants (vector_consts), or NULL for scalar only. */
static void store_tile(const int32_t* acc, int64_t lda, int64_t r0, int64_t c0, int64_t m,
                       int64_t n, const graphopt_qepilogue* e, const qconsts* k, void* C,
                       int64_t rs, int64_t cs) {
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
        if (k)
            c = store_row_vec(a, bias, mult, k, e, r0 + r, c0, n, (int8_t*)C + (r0 + r) * rs + c0);
#else
        (void)k;
#endif
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

/* Not inlined into graphopt_qgemm: the epilogue's constants live there, and sharing the 16
 * vector registers with them made the micro-kernel spill. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void compute_tile(int64_t K4, const int8_t* a, const uint8_t* b, int32_t* acc,
                         int narrow, int64_t n) {
#if QISA == 0
    (void)narrow;
    (void)n;
    tile_scalar(K4, a, b, acc);
#else
    tile_simd(K4, a, b, acc, narrow, n);
#endif
}

/* Bytes of packed B a block of column panels may take: an L2 share, so the panels stay cached
 * while every row panel of A passes over them. */
#define B_BLOCK_BYTES (128 * 1024)

void graphopt_qgemm(int64_t M, int64_t N, int64_t K, const int8_t* Ap, const uint8_t* Bp,
                    const graphopt_qepilogue* e, void* C, int64_t rs, int64_t cs) {
    const int64_t K4 = k_groups(K), mp = (M + QMR - 1) / QMR, np = (N + QNR - 1) / QNR;
    /* column panels per block: within a block, a row panel's tiles are stored side by side
     * (rows written sequentially, not one 16-byte piece per row in a different page) */
    const int64_t per = B_BLOCK_BYTES / (K4 * QNR * 4) > 1 ? B_BLOCK_BYTES / (K4 * QNR * 4) : 1;
    const int64_t nb = (np + per - 1) / per;
    const graphopt_qepilogue local = *e; /* see store_tile */
    qconsts consts;
    const qconsts* k = epilogue_consts(&local, cs, &consts);
    const int parallel = GRAPHOPT_WORTH_THREADS(M * N * K / QMACS_PER_MAC, 0);
    (void)tile_scalar;
    (void)parallel;
    /* dynamic: a thread that another process on the machine delays does not hold the other at
     * the barrier with half the work left; each tile is one thread's, so the bits do not
     * depend on the schedule */
#ifdef _OPENMP
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
#endif
    for (int64_t jb = 0; jb < nb; ++jb)
        for (int64_t ip = 0; ip < mp; ++ip) {
            const int64_t m = M - ip * QMR < QMR ? M - ip * QMR : QMR;
            const int64_t end = (jb + 1) * per < np ? (jb + 1) * per : np;
            for (int64_t jp = jb * per; jp < end; ++jp) {
                int32_t acc[QMR * QNR];
                const int64_t n = N - jp * QNR < QNR ? N - jp * QNR : QNR;
                compute_tile(K4, Ap + ip * K4 * QMR * 4, Bp + jp * K4 * QNR * 4, acc,
                             local.narrow, n);
#if QISA == 1 || QISA == 2
                if (k && m == QMR && n == QNR) {
                    store_full_tile(acc, &local, k, ip * QMR, jp * QNR,
                                    (int8_t*)C + ip * QMR * rs + jp * QNR, rs);
                    continue;
                }
#endif
                store_tile(acc, QNR, ip * QMR, jp * QNR, m, n, &local, k, C, rs, cs);
            }
        }
}

/* ---- depthwise convolution, elementwise int8 ops --------------------------------------------- */

#if QISA == 1 || QISA == 2
/* 16 u8 elements src[0], src[sw], ... widened to int16 (sw 1 or 2; stride 2 keeps the low
 * byte of each 16-bit pair: the even elements). */
static __m256i load16(const uint8_t* src, int64_t sw) {
    if (sw == 1) return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)src));
    return _mm256_and_si256(_mm256_loadu_si256((const __m256i*)src), _mm256_set1_epi16(0xff));
}
#endif

/* out[i] = sum_t w[t] * base[off[t] + i * sw] for i < count (exact int32). The vector path
 * pairs taps for vpmaddwd (|u8 * s8| pair sums fit int32) and writes up to 15 entries past
 * count (callers leave room); it reads at most 32 + 16 * sw bytes past the last tap. */
static void dw_run(const uint8_t* base, const int64_t* off, const int8_t* w,
                   const int32_t* pairs, int64_t taps, int64_t sw, int64_t count, int32_t* out) {
    int64_t i = 0;
#if QISA == 1 || QISA == 2
    if (sw <= 2)
        for (; i < count; i += 16) {
            __m256i s0 = _mm256_setzero_si256(), s1 = s0;
            for (int64_t t = 0; t < taps; t += 2) {
                const __m256i va = load16(base + off[t] + i * sw, sw);
                const __m256i vb = t + 1 < taps ? load16(base + off[t + 1] + i * sw, sw) : va;
                const __m256i wp = _mm256_set1_epi32(pairs[t / 2]);
                /* lanes: lo = outputs 0-3 | 8-11, hi = 4-7 | 12-15 */
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_unpacklo_epi16(va, vb), wp));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_unpackhi_epi16(va, vb), wp));
            }
            _mm256_storeu_si256((__m256i*)(out + i), _mm256_permute2x128_si256(s0, s1, 0x20));
            _mm256_storeu_si256((__m256i*)(out + i + 8), _mm256_permute2x128_si256(s0, s1, 0x31));
        }
#else
    (void)pairs;
#endif
    for (; i < count; ++i) {
        int32_t sum = 0;
        for (int64_t t = 0; t < taps; ++t) sum += (int32_t)w[t] * (int32_t)base[off[t] + i * sw];
        out[i] = sum;
    }
}

/* The pieces of a depthwise slot, in this order (8-byte multiples: the int64 offsets first). */
typedef struct {
    int64_t off, acc, line, pairs, padded, total;
} dw_layout;

static dw_layout dw_layout_of(const graphopt_qconv_shape* s) {
    const int64_t taps = s->kernel_h * s->kernel_w, plane = s->out_height * s->out_width;
    const int flat = s->stride_h == 1 && s->stride_w == 1;
    const int64_t run = flat ? (s->out_height - 1) * padded_w(s) + s->out_width : 0;
    dw_layout l;
    l.off = 0;
    l.acc = l.off + taps * (int64_t)sizeof(int64_t);
    l.line = l.acc + round_up64((plane + 16) * (int64_t)sizeof(int32_t), 8);
    l.pairs = l.line + (flat ? round_up64((run + 16) * (int64_t)sizeof(int32_t), 8) : 0);
    l.padded = l.pairs + round_up64((taps / 2 + 1) * (int64_t)sizeof(int32_t), 8);
    l.total = round_up64(l.padded + padded_h(s) * padded_w(s) + PLANE_SLACK, 64);
    return l;
}

int64_t graphopt_qdepthwise_work(const graphopt_qconv_shape* s) { return dw_layout_of(s).total; }

void graphopt_qdepthwise(const uint8_t* X, const int8_t* W, const graphopt_qconv_shape* s,
                         uint8_t pad, int flip, const graphopt_qepilogue* e, void* Y, void* work,
                         int slots) {
    const int64_t kh = s->kernel_h, kw = s->kernel_w, oh = s->out_height, ow = s->out_width;
    const int64_t sh = s->stride_h, sw = s->stride_w, dh = s->dilation_h, dw = s->dilation_w;
    const int64_t ph = padded_h(s), pw = padded_w(s);
    const int64_t taps = kh * kw, plane = oh * ow;
    /* stride 1: the padded plane is one long row (pw outputs per output row, ow of them kept),
     * so short rows (7x7 planes) still fill whole vectors */
    const int flat = sh == 1 && sw == 1;
    const int64_t run = flat ? (oh - 1) * pw + ow : ow;
    const uint8_t x = flip ? 0x80 : 0;
    const graphopt_qepilogue local = *e; /* see store_tile */
    const dw_layout layout = dw_layout_of(s);
    const int team = team_size(slots);
    qconsts consts;
    const qconsts* k = epilogue_consts(&local, 1, &consts);
    const int64_t macs = s->channels * plane * taps;
    const int parallel = GRAPHOPT_WORTH_THREADS(macs, 2 * s->channels * plane);
    (void)team;
    (void)parallel;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* mine = slot_of(work, layout.total);
        int64_t* off = (int64_t*)(mine + layout.off);
        int32_t* acc = (int32_t*)(mine + layout.acc);
        int32_t* line = flat ? (int32_t*)(mine + layout.line) : NULL;
        int32_t* pairs = (int32_t*)(mine + layout.pairs);
        uint8_t* padded = mine + layout.padded;
        int first = 1; /* this thread's plane has no border yet */
        memset(padded, 0, (size_t)(ph * pw + PLANE_SLACK)); /* the slack read stays defined */
        for (int64_t t = 0; t < taps; ++t) off[t] = (t / kw) * dh * pw + (t % kw) * dw;
#ifdef _OPENMP
#pragma omp for schedule(dynamic) /* see graphopt_qgemm */
#endif
        for (int64_t ch = 0; ch < s->channels; ++ch) {
            pad_plane(X + ch * s->height * s->width, s, ph, pw, pad, x, first, padded);
            first = 0;
            const int8_t* wc = W + ch * taps;
            for (int64_t t = 0; t < taps; t += 2) /* int16 weight pairs (w[t], w[t+1] or 0) */
                pairs[t / 2] = (int32_t)((uint32_t)(uint16_t)wc[t] |
                                         (uint32_t)(uint16_t)(t + 1 < taps ? wc[t + 1] : 0) << 16);
            if (flat) {
                dw_run(padded, off, wc, pairs, taps, 1, run, line);
                for (int64_t oy = 0; oy < oh; ++oy)
                    copy_short(acc + oy * ow, line + oy * pw, (size_t)ow * sizeof(int32_t));
            } else {
                for (int64_t oy = 0; oy < oh; ++oy)
                    dw_run(padded + oy * sh * pw, off, wc, pairs, taps, sw, ow, acc + oy * ow);
            }
            store_tile(acc, plane, ch, 0, 1, plane, &local, k, Y, plane, 1);
        }
    }
}

/* ---- max pooling ------------------------------------------------------------------------- */

/* A slot of max pooling: the padded plane and its slack. */
int64_t graphopt_qmaxpool_work(const graphopt_qconv_shape* s) {
    return round_up64(padded_h(s) * padded_w(s) + PLANE_SLACK, 64);
}

/* One output row: out[i] = x ^ max over the window of top[ky * dh * pw + kx * dw + i * sw].
 * The vector path keeps the maximum of 16 outputs in a register; a row of at least 16 ends
 * with an overlapping vector (it rewrites equal bytes) instead of a scalar tail. */
static void maxpool_row(const uint8_t* top, const graphopt_qconv_shape* s, int64_t pw, uint8_t x,
                        uint8_t* out) {
    const int64_t ow = s->out_width, sw = s->stride_w;
    const int64_t dy = s->dilation_h * pw, dx = s->dilation_w;
    int64_t i = 0;
#if QISA == 1 || QISA == 2
    if (sw <= 2 && ow >= 16) {
        const __m128i flip = _mm_set1_epi8((char)x);
        for (int64_t next = 0; i < ow; next += 16) {
            i = next + 16 <= ow ? next : ow - 16;
            __m128i m = _mm_setzero_si128(); /* the least value: every window holds an input */
            for (int64_t ky = 0; ky < s->kernel_h; ++ky)
                for (int64_t kx = 0; kx < s->kernel_w; ++kx)
                    m = _mm_max_epu8(m, strided16(top + ky * dy + kx * dx + i * sw, sw));
            _mm_storeu_si128((__m128i*)(out + i), _mm_xor_si128(m, flip));
            i += 16;
        }
    }
#endif
    for (; i < ow; ++i) {
        uint8_t m = 0;
        for (int64_t ky = 0; ky < s->kernel_h; ++ky)
            for (int64_t kx = 0; kx < s->kernel_w; ++kx) {
                const uint8_t v = top[ky * dy + kx * dx + i * sw];
                m = v > m ? v : m;
            }
        out[i] = (uint8_t)(m ^ x);
    }
}

/* s8 data is compared as u8 after x ^ 0x80 (order preserving), so the border is 0 in either
 * case: the least value, never above a window's maximum (every window holds an input). */
void graphopt_qmaxpool(const uint8_t* X, const graphopt_qconv_shape* s, int is_signed,
                       uint8_t* Y, void* work, int slots) {
    const int64_t oh = s->out_height, ow = s->out_width, ph = padded_h(s), pw = padded_w(s);
    const int64_t plane = s->height * s->width, slot = graphopt_qmaxpool_work(s);
    const uint8_t x = is_signed ? 0x80 : 0;
    const int team = team_size(slots);
    const int parallel = GRAPHOPT_WORTH_THREADS(0, s->channels * (plane + oh * ow));
    (void)team;
    (void)parallel;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* padded = slot_of(work, slot);
        int first = 1; /* this thread's plane has no border yet */
        memset(padded, 0, (size_t)slot); /* the slack read past the plane stays defined */
#ifdef _OPENMP
#pragma omp for schedule(dynamic) /* see graphopt_qgemm */
#endif
        for (int64_t ch = 0; ch < s->channels; ++ch) {
            pad_plane(X + ch * plane, s, ph, pw, 0, x, first, padded);
            first = 0;
            for (int64_t oy = 0; oy < oh; ++oy)
                maxpool_row(padded + oy * s->stride_h * pw, s, pw, x, Y + (ch * oh + oy) * ow);
        }
    }
}

#if (QISA == 1 || QISA == 2) && defined(__FMA__)
/* 8 u8 (or s8) elements as floats. */
static __m256 load8_ps(const void* p, int is_signed) {
    const __m128i raw = _mm_loadl_epi64((const __m128i*)p);
    return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(raw) : _mm256_cvtepu8_epi32(raw));
}
#endif

/* QLinearAdd of elements [from, to): qladd() per element, 8 at a time where the vector path
 * has FMA (the same two single-rounding fused multiply-adds). */
static void qadd_range(const void* a, const void* b, int64_t b_step, int64_t from, int64_t to,
                       int is_signed, float ratio_a, float ratio_b, float fixed, int32_t lo,
                       int32_t hi, void* y) {
    int64_t i = from;
#if (QISA == 1 || QISA == 2) && defined(__FMA__)
    const __m256 ra = _mm256_set1_ps(ratio_a), rb = _mm256_set1_ps(ratio_b);
    const __m256 fx = _mm256_set1_ps(fixed), flo = _mm256_set1_ps((float)lo);
    const __m256 fhi = _mm256_set1_ps((float)hi);
    const int32_t b0 = is_signed ? ((const int8_t*)b)[0] : ((const uint8_t*)b)[0];
    for (; i + 8 <= to; i += 8) {
        const __m256 vb = b_step ? load8_ps((const int8_t*)b + i, is_signed)
                                 : _mm256_set1_ps((float)b0);
        const __m256 v = _mm256_fmadd_ps(load8_ps((const int8_t*)a + i, is_signed), ra,
                                         _mm256_fmadd_ps(vb, rb, fx));
        const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, flo), fhi));
        _mm_storel_epi64((__m128i*)((int8_t*)y + i), narrow16(q, q, !is_signed));
    }
#endif
    for (; i < to; ++i) {
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

void graphopt_qadd(const void* a, const void* b, int64_t b_step, int64_t n, int is_signed,
                   float ratio_a, float ratio_b, float fixed, int32_t lo, int32_t hi, void* y) {
    const int64_t block = 1 << 14, blocks = (n + block - 1) / block;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (GRAPHOPT_WORTH_THREADS(0, 3 * n))
#endif
    for (int64_t p = 0; p < blocks; ++p)
        qadd_range(a, b, b_step, p * block, p * block + block < n ? p * block + block : n,
                   is_signed, ratio_a, ratio_b, fixed, lo, hi, y);
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
