/* Depthwise convolution of u8 (or flipped s8) planes with s8 filters, int32 sums, then the
 * epilogue per channel (graphopt_qkernels.h). On AVX-512 VNNI, 3x3 windows at stride 1 and 2
 * run the quad path below (vpdpbusd, requantized in registers); elsewhere taps are paired for
 * vpmaddwd over 16 outputs, and stride-1 planes run as one flat row so 7x7 planes still fill
 * vectors. docs/QUANTIZATION.md has the measurements behind the choices. */
#include "graphopt_qinternal.h"

/* Channels a thread takes at a time: 4 chunks a thread, so a core slowed by another job
 * hands its last ones to the other, at 4 atomic steps a thread instead of one a channel. */
static int64_t dw_chunk(int64_t channels, int team) {
    return (channels + 4 * team - 1) / (4 * team);
}

#if QX86
/* 16 u8 elements src[0], src[sw], ... widened to int16 (sw 1 or 2; stride 2 keeps the low
 * byte of each 16-bit pair: the even elements). */
QINLINE __m256i load16(const uint8_t* src, int64_t sw) {
    if (sw == 1) return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)src));
    return _mm256_and_si256(_mm256_loadu_si256((const __m256i*)src), _mm256_set1_epi16(0xff));
}
#endif

#if QX86
/* Two taps (offsets oa, ob; weight pair wp) of 16 outputs added to s0 (outputs 0-3 | 8-11)
 * and s1 (4-7 | 12-15). */
#define DW_PAIR(b, oa, ob, wp, sw)                                                           \
    do {                                                                                      \
        const __m256i va = load16((b) + (oa), sw), vb = load16((b) + (ob), sw);              \
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_unpacklo_epi16(va, vb), wp));     \
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_unpackhi_epi16(va, vb), wp));     \
    } while (0)

/* One channel's epilogue as vectors, for sums requantized straight from registers. */
typedef struct {
    __m256i bias;
    __m256 mult;
    const graphopt_qconsts* k;
    int u8, clamp_low;
} dw_requant;

/* dw_run's vector loop for a 3x3 window at stride sw (a constant where inlined): the taps'
 * offsets and weight pairs stay in registers for the whole row (the generic loop reloads
 * them per 16 outputs, as its int32 stores may alias the pairs). rq NULL: int32 sums into
 * out; else requantized bytes into bytes (16 at a time: up to 15 past count). */
QINLINE void dw_run3x3(const uint8_t* base, const int64_t* off, const int32_t* pairs,
                       int64_t sw, int64_t count, int32_t* out, const dw_requant* rq,
                       uint8_t* bytes) {
    const int64_t o0 = off[0], o1 = off[1], o2 = off[2], o3 = off[3], o4 = off[4];
    const int64_t o5 = off[5], o6 = off[6], o7 = off[7], o8 = off[8];
    const __m256i w0 = _mm256_set1_epi32(pairs[0]), w1 = _mm256_set1_epi32(pairs[1]);
    const __m256i w2 = _mm256_set1_epi32(pairs[2]), w3 = _mm256_set1_epi32(pairs[3]);
    const __m256i w4 = _mm256_set1_epi32(pairs[4]); /* (w[8], 0): its second tap is o8 again */
    /* the epilogue in locals: the byte stores may alias anything read through a pointer */
    const graphopt_qconsts k = rq ? *rq->k : (graphopt_qconsts){0};
    const __m256i bias = rq ? rq->bias : w0;
    const __m256 mult = rq ? rq->mult : _mm256_setzero_ps();
    const int u8 = rq ? rq->u8 : 0, clamp_low = rq ? rq->clamp_low : 0;
    for (int64_t i = 0; i < count; i += 16) {
        const uint8_t* b = base + i * sw;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0;
        DW_PAIR(b, o0, o1, w0, sw);
        DW_PAIR(b, o2, o3, w1, sw);
        DW_PAIR(b, o4, o5, w2, sw);
        DW_PAIR(b, o6, o7, w3, sw);
        DW_PAIR(b, o8, o8, w4, sw);
        const __m256i lo = _mm256_permute2x128_si256(s0, s1, 0x20);
        const __m256i hi = _mm256_permute2x128_si256(s0, s1, 0x31);
        if (rq) {
            q_requant_store16(lo, hi, bias, mult, &k, NULL, u8, clamp_low, (int8_t*)bytes + i);
        } else {
            _mm256_storeu_si256((__m256i*)(out + i), lo);
            _mm256_storeu_si256((__m256i*)(out + i + 8), hi);
        }
    }
}

/* A 3x3 stride-1 channel requantized as it is summed (no residual): the padded plane as one
 * flat row into `line` (pw bytes per output row), then the valid bytes into y. (At stride 2
 * the int32 sums and the separate epilogue measured faster.) */
static void dw_channel3x3(const uint8_t* padded, const int64_t* off, const int32_t* pairs,
                          const graphopt_qconv_shape* s, int64_t pw, const dw_requant* rq,
                          uint8_t* line, uint8_t* y) {
    const int64_t oh = s->out_height, ow = s->out_width;
    dw_run3x3(padded, off, pairs, 1, (oh - 1) * pw + ow, NULL, rq, line);
    for (int64_t oy = 0; oy < oh; ++oy)
        graphopt_q_copy_short(y + oy * ow, line + oy * pw, (size_t)ow);
}
#endif

/* out[i] = sum_t w[t] * base[off[t] + i * sw] for i < count (exact int32). The vector path
 * pairs taps for vpmaddwd (|u8 * s8| pair sums fit int32) and writes up to 15 entries past
 * count (callers leave room); it reads at most 32 + 16 * sw bytes past the last tap. */
static void dw_run(const uint8_t* base, const int64_t* off, const int8_t* w,
                   const int32_t* pairs, int64_t taps, int64_t sw, int64_t count, int32_t* out) {
    int64_t i = 0;
#if QX86
    if (taps == 9 && sw == 1) {
        dw_run3x3(base, off, pairs, 1, count, out, NULL, NULL);
        return;
    }
    if (taps == 9 && sw == 2) {
        dw_run3x3(base, off, pairs, 2, count, out, NULL, NULL);
        return;
    }
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

#if QISA == 2
/* ---- AVX-512 VNNI: 3x3 windows at stride 1 and 2 as u8 quads ------------------------------
 * A 32-bit lane j of a 64-byte load at p holds p[4j .. 4j+3]; vpdpbusd with the weight quad
 * (w[ky][0], w[ky][1], w[ky][2], 0) adds one kernel row of the window that starts at p[4j].
 * Four loads per kernel row give 64 outputs with no shuffle: at p, p+1, p+2, p+3 (stride 1:
 * outputs 4j, 4j+1, 4j+2, 4j+3) or p, p+2, p+64, p+66 (stride 2: 2j, 2j+1, 32+2j, 33+2j).
 * The outputs are a flat run over the padded plane (`step` run positions per output row, ow
 * of them kept); at stride 2 the plane's even and odd rows are stored apart, so the run's
 * windows are 2 bytes apart in one plane row. Requantized, the four accumulators are packed
 * (saturating) and put back in output order by one in-lane byte shuffle (and a qword permute
 * at stride 2), then each output row's bytes are stored under a mask. */

/* The epilogue and the output order as vectors (bias and mult: the channel's). */
typedef struct {
    __m512i bias;
    __m512 mult, guard;
    __m512i zp16;    /* the zero point, int16 lanes (added with saturation after packing) */
    __m512i lo, hi;  /* the clamp on output bytes */
    __m512i order;   /* in-lane shuffle of the packed bytes to output order */
} dw_quad_consts;

/* float(acc) * mult rounded half to even (cvtps2dq, default MXCSR), as graphopt_q_requant
 * computes it before the zero point. With guard (a multiplier >= 1/2), a product past int32
 * is first bounded, or it would convert to INT_MIN (below 1/2 none can reach 2^30). */
QINLINE __m512i dw_rint(__m512i acc, const dw_quad_consts* c, int guard) {
    const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), c->mult);
    return _mm512_cvtps_epi32(guard ? _mm512_min_ps(v, c->guard) : v);
}

/* 64 requantized output bytes from the four accumulators (lanes in the load order above):
 * rint, then the zero point and the type's range by saturating packs (exact: an int16
 * saturated value stays outside the byte range after + zero point), the Relu/Clip bounds on
 * bytes, then the output order. */
QINLINE __m512i dw_quads_to_bytes(__m512i a0, __m512i a1, __m512i a2, __m512i a3,
                                  const dw_quad_consts* c, int u8, int guard, int64_t sw) {
    const __m512i p01 = _mm512_adds_epi16(
        _mm512_packs_epi32(dw_rint(a0, c, guard), dw_rint(a1, c, guard)), c->zp16);
    const __m512i p23 = _mm512_adds_epi16(
        _mm512_packs_epi32(dw_rint(a2, c, guard), dw_rint(a3, c, guard)), c->zp16);
    __m512i b = u8 ? _mm512_packus_epi16(p01, p23) : _mm512_packs_epi16(p01, p23);
    b = u8 ? _mm512_min_epu8(_mm512_max_epu8(b, c->lo), c->hi)
           : _mm512_min_epi8(_mm512_max_epi8(b, c->lo), c->hi);
    b = _mm512_shuffle_epi8(b, c->order);
    if (sw == 2) /* each 128-bit lane holds outputs 8L.. and 32+8L..: gather the halves */
        b = _mm512_permutexvar_epi64(_mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0), b);
    return b;
}

/* The 64 outputs at run position f: tops[ky] is kernel row ky of output 0's window. */
QINLINE __m512i dw_quad_group(const uint8_t* const* tops, const __m512i* wq, int64_t sw,
                              int64_t f, const dw_quad_consts* c, int u8, int guard) {
    const int64_t d1 = sw == 1 ? 1 : 2, d2 = sw == 1 ? 2 : 64, d3 = sw == 1 ? 3 : 66;
    __m512i a0 = c->bias, a1 = a0, a2 = a0, a3 = a0;
    for (int ky = 0; ky < 3; ++ky) {
        const uint8_t* p = tops[ky] + sw * f;
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(p), wq[ky]);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(p + d1), wq[ky]);
        a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512(p + d2), wq[ky]);
        a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512(p + d3), wq[ky]);
    }
    return dw_quads_to_bytes(a0, a1, a2, a3, c, u8, guard, sw);
}

/* Bits [from, from + n) of a byte mask (0 < n, from + n <= 64). */
static inline __mmask64 dw_bits(int64_t from, int64_t n) {
    return (__mmask64)((~0ULL >> (64 - n)) << from);
}

/* The kept bytes of 64 outputs at run position f (rows step apart in the run, ow long, oh of
 * them): one masked store per output row they touch; oy: the row holding f. */
QINLINE void dw_quad_store(__m512i b, int64_t f, int64_t oy, int64_t step, int64_t ow,
                           int64_t oh, uint8_t* y) {
    for (int64_t row = oy * step; row < f + 64 && oy < oh; row += step, ++oy) {
        const int64_t from = row > f ? row : f, to = row + ow < f + 64 ? row + ow : f + 64;
        if (to > from) /* run position p goes to y + oy * ow + p - row */
            _mm512_mask_storeu_epi8(y + oy * (ow - step) + f, dw_bits(from - f, to - from), b);
    }
}

/* Where a group's outputs go when they are stored at once: its kept lanes (of run positions
 * at, ..., at + 63), compressed (VBMI2), are the contiguous output bytes from `out`. One store
 * a group instead of one an output row (7 a channel on 7x7 planes, each ~5 cycles). */
typedef struct {
    uint64_t keep;
    int64_t out;
} dw_group_store;

/* One channel's run of `run` positions in groups of 64 (the last one ends at the run's end,
 * storing equal bytes again) into the output plane y: by groups (stores, VBMI2) or rows. */
QINLINE void dw_quad_run(const uint8_t* const* tops, const __m512i* wq, int64_t sw, int64_t run,
                         int64_t step, int64_t ow, int64_t oh, const dw_quad_consts* c, int u8,
                         int guard, const dw_group_store* stores, uint8_t* y) {
    int64_t oy = 0;
    for (int64_t f = 0; f < run; f += 64) {
        const int64_t at = f + 64 > run && run >= 64 ? run - 64 : f;
        const __m512i b = dw_quad_group(tops, wq, sw, at, c, u8, guard);
#ifdef __AVX512VBMI2__
        if (stores) {
            const dw_group_store* st = stores + f / 64;
            _mm512_mask_storeu_epi8(y + st->out, dw_bits(0, _mm_popcnt_u64(st->keep)),
                                    _mm512_maskz_compress_epi8(st->keep, b));
            continue;
        }
#else
        (void)stores;
#endif
        while ((oy + 1) * step <= at) ++oy;
        dw_quad_store(b, at, oy, step, ow, oh, y);
    }
}

/* The geometry of the quad path for one layer. */
typedef struct {
    int64_t pitch;    /* bytes per stored plane row */
    int64_t step;     /* run positions per output row */
    int64_t run;
    int64_t top[3];   /* offsets of the kernel rows of output 0's window */
    int64_t odd;      /* stride 2: where the odd rows start (a 64-byte multiple, so no 64-byte
                       * chunk of the plane mixes even and odd rows: see dw_table_of) */
    int64_t plane;    /* bytes of the stored plane (all written by the padding) */
    int64_t reach;    /* bytes from the plane start the loads may read */
} dw_quad_geometry;

static dw_quad_geometry dw_quad_geometry_of(const graphopt_qconv_shape* s) {
    const int64_t sw = s->stride_w, ph = q_padded_h(s), pw = q_padded_w(s);
    dw_quad_geometry g;
    g.pitch = sw == 1 ? pw : q_round_up(pw, 2); /* stride 2: the run steps 2 bytes */
    g.step = g.pitch / sw;
    g.run = (s->out_height - 1) * g.step + s->out_width;
    g.odd = sw == 1 ? 0 : q_round_up((ph + 1) / 2 * g.pitch, 64);
    g.top[0] = 0;
    g.top[1] = sw == 1 ? pw : g.odd;
    g.top[2] = sw == 1 ? 2 * pw : g.pitch;
    g.plane = sw == 1 ? ph * g.pitch : g.odd + ph / 2 * g.pitch;
    const int64_t last = g.run >= 64 ? g.run - 64 : 0;
    const int64_t top = g.top[1] > g.top[2] ? g.top[1] : g.top[2];
    g.reach = top + sw * last + (sw == 1 ? 3 : 66) + 64;
    if (g.reach < g.plane) g.reach = g.plane;
    return g;
}

#ifdef __AVX512VBMI2__
#define DW_STORE_GROUPS 64 /* runs up to 4096 positions */

/* The store of every group of the run (see dw_group_store); 0 if it has too many groups, or
 * rows so long that a group meets at most two (the compress, ~5 cycles, then saves too little:
 * 1.2x faster on 7x7 to 28x28 planes, even at 56x56, 1.5x slower at 112x112). */
static int dw_group_stores_of(const dw_quad_geometry* g, int64_t ow, int64_t oh,
                              dw_group_store* stores) {
    const int64_t groups = (g->run + 63) / 64;
    if (groups > DW_STORE_GROUPS || g->step > 32) return 0;
    for (int64_t k = 0; k < groups; ++k) {
        const int64_t at = 64 * k + 64 > g->run && g->run >= 64 ? g->run - 64 : 64 * k;
        int64_t oy = at / g->step, ox = at % g->step; /* of lane i */
        stores[k].keep = 0;
        stores[k].out = -1;
        for (int64_t i = 0; i < 64 && oy < oh; i += g->step - ox, ox = 0, ++oy) {
            if (ox >= ow) continue; /* lanes i.. up to the row's end: past the output row */
            stores[k].keep |= dw_bits(i, ow - ox < 64 - i ? ow - ox : 64 - i);
            if (stores[k].out < 0) stores[k].out = oy * ow + ox;
        }
        if (!stores[k].keep) return 0;
    }
    return 1;
}
#endif

/* Where padded row py is stored: rows `pitch` apart, at stride 2 the even rows first, then
 * the odd rows from `odd`. */
static inline int64_t dw_plane_row(int64_t py, int64_t sh, int64_t pitch, int64_t odd) {
    return sh == 1 ? py * pitch : (py & 1) * odd + (py >> 1) * pitch;
}

/* Copy n bytes (flipping s8 with x): the store under a mask (nothing written past n), the
 * load whole unless it would read past end (a masked load after masked stores measured
 * ~10% slower: it waits for them). */
static inline void dw_copy_row(uint8_t* dst, const uint8_t* src, int64_t n, __m512i x,
                               const uint8_t* end) {
    for (int64_t i = 0; i < n; i += 64) {
        const __mmask64 m = dw_bits(0, n - i < 64 ? n - i : 64);
        const __m512i v = src + i + 64 <= end ? _mm512_loadu_si512(src + i)
                                              : _mm512_maskz_loadu_epi8(m, src + i);
        _mm512_mask_storeu_epi8(dst + i, m, _mm512_xor_si512(v, x));
    }
}

/* A channel copied into the plane (geometry g) with zero-point borders (as
 * graphopt_q_pad_plane). Only the first call of a thread (fill) writes the border: it is the
 * same for every channel. end: the input's end, not to be read past. */
static void dw_quad_pad(const uint8_t* xc, const graphopt_qconv_shape* s,
                        const dw_quad_geometry* g, uint8_t pad, uint8_t x, int fill,
                        const uint8_t* end, uint8_t* plane) {
    const int64_t ph = q_padded_h(s), pw = q_padded_w(s);
    const int64_t left = s->pad_left < pw ? s->pad_left : pw;
    const int64_t inner = s->width < pw - left ? s->width : pw - left;
    const __m512i flip = _mm512_set1_epi8((char)x);
    if (fill) memset(plane, pad, (size_t)g->plane);
    if (inner <= 0) return;
    for (int64_t py = 0; py < ph; ++py) {
        const int64_t iy = py - s->pad_top;
        if (iy < 0 || iy >= s->height) continue;
        uint8_t* row = plane + dw_plane_row(py, s->stride_h, g->pitch, g->odd);
        dw_copy_row(row + left, xc + iy * s->width, inner, flip, end);
    }
}

/* A 64-byte chunk of a padded plane made from the input by one byte permute (VBMI, below). */
typedef struct {
    int64_t start; /* the window's first input byte (channel offset) */
    uint64_t from_input; /* plane bytes taken from the window (the others: the zero point) */
    uint8_t index[64];   /* their window offsets */
} dw_pad_chunk;

#ifdef __AVX512VBMI__
/* Small planes (up to DW_TABLE_BYTES) are padded 64 bytes at a time by vpermi2b instead of row
 * by row: per 64-byte chunk of the plane, a table made once per call gives the 128-byte window
 * of the input its bytes come from, where each comes from, and which are border (the zero
 * point). On 7x7 and 14x14 planes the row copies were about half the layer's time. */
#define DW_TABLE_BYTES 4096 /* planes up to 56x56 (the table is on the stack) */

/* source[b]: the input offset plane byte b comes from, -1 for the border (rows `pitch` apart,
 * at stride 2 the even rows first, then the odd ones); bytes past the plane up to a whole
 * chunk are border too. Made at every call: 16 offsets a store. */
static void dw_plane_sources(const graphopt_qconv_shape* s, const dw_quad_geometry* g,
                             int32_t* source) {
    const int64_t ph = q_padded_h(s), pw = q_padded_w(s);
    const int64_t left = s->pad_left < pw ? s->pad_left : pw;
    const int64_t inner = s->width < pw - left ? s->width : pw - left;
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t b = 0; b < q_round_up(g->plane, 64); b += 16)
        _mm512_storeu_si512(source + b, _mm512_set1_epi32(-1));
    for (int64_t py = 0; py < ph; ++py) {
        const int64_t iy = py - s->pad_top;
        if (iy < 0 || iy >= s->height) continue;
        int32_t* row = source + dw_plane_row(py, s->stride_h, g->pitch, g->odd) + left;
        for (int64_t j = 0; j < inner; j += 16) {
            const __mmask16 kept = (__mmask16)dw_bits(0, inner - j < 16 ? inner - j : 16);
            const __m512i first = _mm512_set1_epi32((int32_t)(iy * s->width + j));
            _mm512_mask_storeu_epi32(row + j, kept, _mm512_add_epi32(iota, first));
        }
    }
}

/* The table of the plane's chunks; 0 if some chunk's sources span more than one 128-byte
 * window (then the rows are copied). */
static int dw_table_of(const graphopt_qconv_shape* s, const dw_quad_geometry* g,
                       dw_pad_chunk* chunks) {
    int32_t source[DW_TABLE_BYTES + 64];
    dw_plane_sources(s, g, source);
    for (int64_t k = 0; k * 64 < g->plane; ++k) {
        __m512i v[4];
        __mmask16 valid[4];
        int32_t lo = INT32_MAX, hi = -1;
        for (int q = 0; q < 4; ++q) {
            v[q] = _mm512_loadu_si512(source + 64 * k + 16 * q);
            valid[q] = _mm512_cmpge_epi32_mask(v[q], _mm512_setzero_si512());
            const int32_t qlo = _mm512_mask_reduce_min_epi32(valid[q], v[q]);
            const int32_t qhi = _mm512_reduce_max_epi32(v[q]);
            lo = qlo < lo ? qlo : lo;
            hi = qhi > hi ? qhi : hi;
        }
        if (hi >= 0 && hi - lo >= 128) return 0;
        dw_pad_chunk* c = chunks + k;
        c->start = hi < 0 ? 0 : lo;
        c->from_input = 0;
        for (int q = 0; q < 4; ++q) {
            const __m512i index = _mm512_maskz_sub_epi32(valid[q], v[q],
                                                         _mm512_set1_epi32((int32_t)c->start));
            _mm_storeu_si128((__m128i*)(c->index + 16 * q), _mm512_cvtepi32_epi8(index));
            c->from_input |= (uint64_t)valid[q] << (16 * q);
        }
    }
    return 1;
}

/* 64 input bytes at p, whole unless they would pass end (then the bytes before it). */
static inline __m512i dw_load_until(const uint8_t* p, const uint8_t* end) {
    if (p + 64 <= end) return _mm512_loadu_si512(p);
    return _mm512_maskz_loadu_epi8(p < end ? dw_bits(0, end - p) : 0, p);
}

/* One channel's plane from the table (whole 64-byte stores: the slot has room past it). */
static void dw_table_pad(const uint8_t* xc, const dw_pad_chunk* chunks, int64_t n,
                         __m512i zp, __m512i flip, const uint8_t* end, uint8_t* plane) {
    for (int64_t k = 0; k < n; ++k) {
        const dw_pad_chunk* c = chunks + k;
        const __m512i lo = dw_load_until(xc + c->start, end);
        const __m512i hi = dw_load_until(xc + c->start + 64, end);
        const __m512i v = _mm512_xor_si512(
            _mm512_permutex2var_epi8(lo, _mm512_loadu_si512(c->index), hi), flip);
        _mm512_storeu_si512(plane + 64 * k, _mm512_mask_blend_epi8(c->from_input, zp, v));
    }
}
#endif

/* In-lane shuffle from the packed layout (accumulator k, 32-bit lane j of the 128-bit lane:
 * byte 4k + j) to output order. */
static __m512i dw_quad_order(int64_t sw) {
    int8_t idx[64];
    for (int q = 0; q < 16; ++q) {
        /* stride 1: output 4j + k; stride 2: 2j + k (k < 2) in the low half, 32 + 2j + k - 2
         * in the high half */
        const int k = sw == 1 ? q % 4 : (q / 8) * 2 + q % 2;
        const int j = sw == 1 ? q / 4 : (q % 8) / 2;
        for (int lane = 0; lane < 4; ++lane) idx[lane * 16 + q] = (int8_t)(k * 4 + j);
    }
    return _mm512_loadu_si512(idx);
}

/* Bytes of the slot the quad path uses: the plane and what its loads read past it. */
static int64_t dw_quad_slot(const graphopt_qconv_shape* s) { return dw_quad_geometry_of(s).reach; }

/* Whether the quad path runs this call: 3x3, no dilation, equal strides 1 or 2, a requantized
 * output without a residual, and the layer's slot large enough. */
static int dw_quad_applies(const graphopt_qconv_shape* s, const graphopt_qepilogue* e,
                           int64_t slot) {
    if (s->kernel_h != 3 || s->kernel_w != 3 || s->dilation_h != 1 || s->dilation_w != 1)
        return 0;
    if (s->stride_h != s->stride_w || s->stride_h > 2 || e->add ||
        e->out_type == GRAPHOPT_Q_F32)
        return 0;
    return dw_quad_slot(s) <= slot;
}

/* Wide planes at stride 2 (ow > 32: rows of whole groups) skip the padded copy: each output
 * row reads the input rows directly, under masks that put the zero point where the windows pass the
 * plane's left or right edge (masked-off bytes are never read: no fault past the input), and
 * a kernel row above or below the plane is the zero point throughout. A row's 64-output
 * groups store contiguously. */
#define DW_DIRECT_GROUPS 8 /* rows up to 512 outputs wide */

typedef struct {
    __mmask64 mask[DW_DIRECT_GROUPS][4]; /* bytes inside the plane, per group and load */
    int64_t groups;
} dw_direct_geometry;

/* Offset of load d (of 4) from a group's first window: see the quad loads above. */
static inline int64_t dw_load_offset(int64_t sw, int d) {
    static const int64_t offsets[2][4] = {{0, 1, 2, 3}, {0, 2, 64, 66}};
    return offsets[sw - 1][d];
}

static dw_direct_geometry dw_direct_geometry_of(const graphopt_qconv_shape* s) {
    dw_direct_geometry g;
    g.groups = (s->out_width + 63) / 64;
    for (int64_t gi = 0; gi < g.groups && gi < DW_DIRECT_GROUPS; ++gi)
        for (int d = 0; d < 4; ++d) { /* byte i is input column c0 + i */
            const int64_t c0 = s->stride_w * 64 * gi - s->pad_left + dw_load_offset(s->stride_w, d);
            const int64_t from = c0 < 0 ? -c0 : 0, to = s->width - c0 < 64 ? s->width - c0 : 64;
            g.mask[gi][d] = to > from ? dw_bits(from, to - from) : 0;
        }
    return g;
}

/* One channel's output rows from its input plane xc; fill: the zero point as stored before
 * the flip (x), zp: as the kernels see it. */
QINLINE void dw_direct_rows(const uint8_t* xc, const __m512i* wq, const dw_direct_geometry* g,
                            const graphopt_qconv_shape* s, int64_t sw, __m512i fill,
                            __m512i zp, __m512i flip, int flipped, const dw_quad_consts* c,
                            int u8, int guard, uint8_t* y) {
    const int64_t ow = s->out_width;
    for (int64_t oy = 0; oy < s->out_height; ++oy) {
        const uint8_t* rows[3];
        for (int ky = 0; ky < 3; ++ky) {
            const int64_t iy = oy * s->stride_h + ky - s->pad_top;
            rows[ky] = iy >= 0 && iy < s->height ? xc + iy * s->width - s->pad_left : NULL;
        }
        for (int64_t gi = 0; gi < g->groups; ++gi) {
            __m512i a[4] = {c->bias, c->bias, c->bias, c->bias};
            for (int ky = 0; ky < 3; ++ky)
                for (int d = 0; d < 4; ++d) {
                    __m512i v = zp;
                    if (rows[ky]) {
                        v = _mm512_mask_loadu_epi8(fill, g->mask[gi][d],
                                                   rows[ky] + sw * 64 * gi + dw_load_offset(sw, d));
                        if (flipped) v = _mm512_xor_si512(v, flip);
                    }
                    a[d] = _mm512_dpbusd_epi32(a[d], v, wq[ky]);
                }
            const int64_t n = ow - 64 * gi < 64 ? ow - 64 * gi : 64;
            _mm512_mask_storeu_epi8(y + oy * ow + 64 * gi, dw_bits(0, n),
                                    dw_quads_to_bytes(a[0], a[1], a[2], a[3], c, u8, guard, sw));
        }
    }
}

/* The weight quads (w[ky][0], w[ky][1], w[ky][2], 0) of a channel, broadcast. */
static void dw_weight_quads(const int8_t* wc, __m512i* wq) {
    for (int ky = 0; ky < 3; ++ky)
        wq[ky] = _mm512_set1_epi32((int32_t)((uint32_t)(uint8_t)wc[3 * ky] |
                                             (uint32_t)(uint8_t)wc[3 * ky + 1] << 8 |
                                             (uint32_t)(uint8_t)wc[3 * ky + 2] << 16));
}

/* A call of RUN(sw, u8, guard) with constant arguments for variant (sw == 2) * 4 + u8 * 2 +
 * guard, so each is compiled on its own. */
#define DW_VARIANTS(variant, RUN)                                                             \
    switch (variant) {                                                                        \
    case 0: RUN(1, 0, 0); break;                                                              \
    case 1: RUN(1, 0, 1); break;                                                              \
    case 2: RUN(1, 1, 0); break;                                                              \
    case 3: RUN(1, 1, 1); break;                                                              \
    case 4: RUN(2, 0, 0); break;                                                              \
    case 5: RUN(2, 0, 1); break;                                                              \
    case 6: RUN(2, 1, 0); break;                                                              \
    default: RUN(2, 1, 1); break;                                                             \
    }

/* One channel (plane padded): the run in the variant its stride, output type and multiplier
 * need. */
static void dw_quad_channel(const uint8_t* plane, const __m512i* wq, const dw_quad_geometry* g,
                            const dw_quad_consts* c, int64_t ow, int64_t oh, int variant,
                            const dw_group_store* stores, uint8_t* y) {
    const uint8_t* tops[3] = {plane + g->top[0], plane + g->top[1], plane + g->top[2]};
#define DW_RUN(sw, u8, guard) \
    dw_quad_run(tops, wq, sw, g->run, g->step, ow, oh, c, u8, guard, stores, y)
    DW_VARIANTS(variant, DW_RUN)
#undef DW_RUN
}

/* One channel of a wide plane, read directly (see dw_direct_rows). */
static void dw_direct_channel(const uint8_t* xc, const __m512i* wq, const dw_direct_geometry* g,
                              const graphopt_qconv_shape* s, uint8_t pad, uint8_t x,
                              const dw_quad_consts* c, int variant, uint8_t* y) {
    const __m512i fill = _mm512_set1_epi8((char)(pad ^ x)), zp = _mm512_set1_epi8((char)pad);
    const __m512i flip = _mm512_set1_epi8((char)x);
#define DW_RUN(sw, u8, guard) \
    dw_direct_rows(xc, wq, g, s, sw, fill, zp, flip, x != 0, c, u8, guard, y)
    DW_VARIANTS(variant, DW_RUN)
#undef DW_RUN
}

/* What the threads of dw_quad share, read only. */
typedef struct {
    const uint8_t* X;
    const int8_t* W;
    const graphopt_qconv_shape* s;
    const graphopt_qepilogue* e;
    void* Y;
    void* work;
    int64_t slot, chunk;
    uint8_t pad, x; /* the zero point as stored, the flip of s8 inputs */
    const dw_quad_geometry* g;
    const dw_direct_geometry* dg; /* direct: stride 2 read from the input rows */
    int direct;
    const dw_pad_chunk* table; /* of `chunks` chunks; NULL: planes padded row by row */
    int64_t chunks;
    const dw_group_store* stores; /* NULL: stores row by row */
    const dw_quad_consts* proto;  /* the epilogue's constants (bias and mult: per channel) */
} dw_quad_job;

/* A thread's channels of dw_quad: its chunks within a parallel region; called outside one,
 * the (orphaned) omp for gives the caller every channel. */
static void dw_quad_thread(const dw_quad_job* j) {
    const graphopt_qconv_shape* s = j->s;
    const int64_t plane_out = s->out_height * s->out_width, plane_in = s->height * s->width;
    const uint8_t* end = j->X + s->channels * plane_in; /* the input's last byte + 1 */
    const int u8 = j->e->out_type == GRAPHOPT_Q_U8;
    uint8_t* plane = q_slot_of(j->work, j->slot);
    dw_quad_consts c = *j->proto;
    int first = 1; /* this thread's plane has no border yet */
    if (!j->direct) /* read past the plane: defined */
        memset(plane + j->g->plane, 0, (size_t)(j->g->reach - j->g->plane));
#ifdef __AVX512VBMI__
    const __m512i zpv = _mm512_set1_epi8((char)j->pad), flip = _mm512_set1_epi8((char)j->x);
#endif
#ifdef _OPENMP
#pragma omp for schedule(dynamic, j->chunk)
#endif
    for (int64_t ch = 0; ch < s->channels; ++ch) {
        const float mult = j->e->mult[ch];
        const int variant = (s->stride_w == 2) * 4 + u8 * 2 + !(mult < 0.5f && mult > -0.5f);
        __m512i wq[3];
        dw_weight_quads(j->W + ch * 9, wq);
        c.bias = _mm512_set1_epi32(j->e->bias ? j->e->bias[ch] : 0);
        c.mult = _mm512_set1_ps(mult);
        uint8_t* y = (uint8_t*)j->Y + ch * plane_out;
        const uint8_t* xc = j->X + ch * plane_in;
        if (j->direct) {
            dw_direct_channel(xc, wq, j->dg, s, j->pad, j->x, &c, variant, y);
            continue;
        }
#ifdef __AVX512VBMI__
        if (j->table)
            dw_table_pad(xc, j->table, j->chunks, zpv, flip, end, plane);
        else
#endif
            dw_quad_pad(xc, s, j->g, j->pad, j->x, first, end, plane);
        first = 0;
        dw_quad_channel(plane, wq, j->g, &c, s->out_width, s->out_height, variant, j->stores, y);
    }
}

/* graphopt_qdepthwise on the quad path (the slot: the plane and its over-read). */
static void dw_quad(const uint8_t* X, const int8_t* W, const graphopt_qconv_shape* s,
                    uint8_t pad, uint8_t x, const graphopt_qepilogue* e, void* Y, void* work,
                    int64_t slot, int team) {
    const dw_quad_geometry g = dw_quad_geometry_of(s);
    /* stride 2 on wide planes reads the input directly; stride 1 pads (the masked loads cost
     * more than the copy there) */
    const int direct = s->stride_w == 2 && s->out_width > 32 &&
                       s->out_width <= 64 * DW_DIRECT_GROUPS;
    const dw_direct_geometry dg = dw_direct_geometry_of(s);
    const int64_t chunks = (g.plane + 63) / 64; /* of the plane, stored whole by the table */
    dw_quad_job job = {X, W, s, e, Y, work, slot, dw_chunk(s->channels, team), pad, x, &g, &dg,
                       direct, NULL, chunks, NULL, NULL};
#ifdef __AVX512VBMI__
    dw_pad_chunk table[DW_TABLE_BYTES / 64]; /* made once, read by every thread */
    if (!direct && g.plane <= DW_TABLE_BYTES && 64 * chunks <= slot && dw_table_of(s, &g, table))
        job.table = table;
#endif
#ifdef __AVX512VBMI2__
    dw_group_store stores[DW_STORE_GROUPS]; /* made once, read by every thread */
    if (!direct && dw_group_stores_of(&g, s->out_width, s->out_height, stores))
        job.stores = stores;
#endif
    dw_quad_consts proto;
    proto.guard = _mm512_set1_ps(65536.0f);
    proto.zp16 = _mm512_set1_epi16((int16_t)e->zero_point);
    proto.lo = _mm512_set1_epi8((char)e->lo);
    proto.hi = _mm512_set1_epi8((char)e->hi);
    proto.order = dw_quad_order(s->stride_w);
    job.proto = &proto;
    /* one-core time per channel, fitted on Zen 4 (ns: 5 a group of 64 outputs, 2.6 an output
     * row, 1.5 a 64-byte chunk padded from the table or 4 a row copied, 6 the rest), as the
     * fp32 multiply-adds of the grain rule (20 a ns): small planes cost far more than their
     * MACs say (a 14x14 stride-2 layer of 576 channels: ~20 us, left on one thread) */
    const int64_t pad_ns = job.table ? 3 * chunks / 2 : direct ? 0 : 4 * q_padded_h(s);
    const int64_t ns = s->channels * (6 + 5 * ((g.run + 63) / 64) + 13 * s->out_height / 5 +
                                      pad_ns);
    if (team > 1 && GRAPHOPT_WORTH_THREADS(20 * ns, 0)) {
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
#endif
        dw_quad_thread(&job);
    } else { /* no parallel region at all: even one of a single thread costs libgomp ~1 us */
        dw_quad_thread(&job);
    }
}
#endif

/* The pieces of a depthwise slot, in this order (8-byte multiples: the int64 offsets first). */
typedef struct {
    int64_t off, acc, line, pairs, padded, total;
} dw_layout;

static dw_layout dw_layout_of(const graphopt_qconv_shape* s) {
    const int64_t taps = s->kernel_h * s->kernel_w, plane = s->out_height * s->out_width;
    const int flat = s->stride_h == 1 && s->stride_w == 1;
    const int64_t run = flat ? (s->out_height - 1) * q_padded_w(s) + s->out_width : 0;
    dw_layout l;
    l.off = 0;
    l.acc = l.off + taps * (int64_t)sizeof(int64_t);
    l.line = l.acc + q_round_up((plane + 16) * (int64_t)sizeof(int32_t), 8);
    l.pairs = l.line + (flat ? q_round_up((run + 16) * (int64_t)sizeof(int32_t), 8) : 0);
    l.padded = l.pairs + q_round_up((taps / 2 + 1) * (int64_t)sizeof(int32_t), 8);
    l.total = q_round_up(l.padded + q_padded_h(s) * q_padded_w(s) + PLANE_SLACK, 64);
    return l;
}

int64_t graphopt_qdepthwise_work(const graphopt_qconv_shape* s) { return dw_layout_of(s).total; }

void graphopt_qdepthwise(const uint8_t* X, const int8_t* W, const graphopt_qconv_shape* s,
                         uint8_t pad, int flip, const graphopt_qepilogue* e, void* Y, void* work,
                         int slots) {
    const int64_t kh = s->kernel_h, kw = s->kernel_w, oh = s->out_height, ow = s->out_width;
    const int64_t sh = s->stride_h, sw = s->stride_w, dh = s->dilation_h, dw = s->dilation_w;
    const int64_t ph = q_padded_h(s), pw = q_padded_w(s);
    const int64_t taps = kh * kw, plane = oh * ow;
    /* stride 1: the padded plane is one long row (pw outputs per output row, ow of them kept),
     * so short rows (7x7 planes) still fill whole vectors */
    const int flat = sh == 1 && sw == 1;
    const int64_t run = flat ? (oh - 1) * pw + ow : ow;
    const uint8_t x = flip ? 0x80 : 0;
    const graphopt_qepilogue local = *e; /* see graphopt_q_store_tile */
    const dw_layout layout = dw_layout_of(s);
    const int team = q_team_size(slots);
    graphopt_qconsts consts;
    const graphopt_qconsts* k = graphopt_q_epilogue_consts(&local, 1, &consts);
    /* a depthwise MAC (with its share of padding and epilogue) runs at ~10 G/s a core, half
     * the rate of the fp32 GEMM MACs the grain rule counts: it weighs 2 */
    const int64_t macs = 2 * s->channels * plane * taps;
    /* 3x3 at stride 1 without a residual: requantized from registers (dw_channel3x3) */
    const int quick = QX86 && k && !local.add && taps == 9 && flat && dh == 1 && dw == 1;
    const int parallel = GRAPHOPT_WORTH_THREADS(macs, 2 * s->channels * plane);
#if QISA == 2
    if (dw_quad_applies(s, &local, layout.total)) {
        dw_quad(X, W, s, pad, x, &local, Y, work, layout.total, team);
        return;
    }
#endif
    const int64_t chunk = dw_chunk(s->channels, team);
    (void)chunk;
    (void)parallel;
    (void)quick;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* mine = q_slot_of(work, layout.total);
        int64_t* off = (int64_t*)(mine + layout.off);
        int32_t* acc = (int32_t*)(mine + layout.acc);
        int32_t* line = flat ? (int32_t*)(mine + layout.line) : NULL;
        int32_t* pairs = (int32_t*)(mine + layout.pairs);
        uint8_t* padded = mine + layout.padded;
        int first = 1; /* this thread's plane has no border yet */
        memset(padded, 0, (size_t)(ph * pw + PLANE_SLACK)); /* the slack read stays defined */
        for (int64_t t = 0; t < taps; ++t) off[t] = (t / kw) * dh * pw + (t % kw) * dw;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, chunk)
#endif
        for (int64_t ch = 0; ch < s->channels; ++ch) {
            graphopt_q_pad_plane(X + ch * s->height * s->width, s, ph, pw, pad, x, first, padded);
            first = 0;
            const int8_t* wc = W + ch * taps;
            for (int64_t t = 0; t < taps; t += 2) /* int16 weight pairs (w[t], w[t+1] or 0) */
                pairs[t / 2] = (int32_t)((uint32_t)(uint16_t)wc[t] |
                                         (uint32_t)(uint16_t)(t + 1 < taps ? wc[t + 1] : 0) << 16);
#if QX86
            if (quick) {
                dw_requant rq;
                rq.bias = _mm256_set1_epi32(local.bias ? local.bias[ch] : 0);
                rq.mult = _mm256_set1_ps(local.mult[ch]);
                rq.k = k;
                rq.u8 = k->u8;
                rq.clamp_low = !k->low_free;
                dw_channel3x3(padded, off, pairs, s, pw, &rq, (uint8_t*)line,
                              (uint8_t*)Y + ch * plane);
                continue;
            }
#endif
            if (flat) {
                dw_run(padded, off, wc, pairs, taps, 1, run, line);
                for (int64_t oy = 0; oy < oh; ++oy)
                    graphopt_q_copy_short(acc + oy * ow, line + oy * pw,
                                          (size_t)ow * sizeof(int32_t));
            } else {
                for (int64_t oy = 0; oy < oh; ++oy)
                    dw_run(padded + oy * sh * pw, off, wc, pairs, taps, sw, ow, acc + oy * ow);
            }
            graphopt_q_store_tile(acc, plane, ch, 0, 1, plane, &local, k, Y, plane, 1);
        }
    }
}
