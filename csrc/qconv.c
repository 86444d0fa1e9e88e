/* Integer convolution as GEMM (graphopt_qconv in graphopt_qkernels.h), in one parallel region:
 *
 *   1. (windows with padding, strides or s8 activations) the input is copied once into planes
 *      padded with the zero point, every tap of every output inside, so the packing below
 *      has no bounds checks; the threads share the channels (dynamically), then wait until
 *      all are padded (a count, not a barrier: a thread another process delays does not hold
 *      the other until it arrives). When B is packed whole (small B, below) a thread pads
 *      each channel it packs into one of two planes of its slot instead: each channel is then
 *      padded about once anyway, and the work memory stays that of two planes (bundles for
 *      small devices).
 *   2. The output columns are cut into blocks of `per` column panels (a block's packed B is
 *      an L2 share). A work item is a block and a range of row panels; a thread packs its
 *      item's block into its own slot (im2col straight from the padded planes into registers
 *      where it can, else through gathered rows; the planes themselves for a 1x1 stride-1
 *      window), unless it holds it already, then runs the tiles while it is hot. A small B
 *      of a 1x1 stride-1 window over many columns is cut into column ranges the same way
 *      (each packed into its place in the shared B by the thread that runs all rows on it).
 *
 * Against the former im2col of the whole B then a GEMM (two parallel regions), this saves one
 * fork/join per layer and the round trip of B through memory. Each output tile is computed
 * and stored by one thread, so the bits do not depend on the schedule or the thread count.
 *
 * Stride-1 windows over wide rows skip the im2col altogether: graphopt_qconv_implicit (below).
 */
#include "graphopt_qinternal.h"

typedef struct {
    int64_t K, K4, N, np;   /* GEMM depth, its groups of 4, output columns and their panels */
    int64_t per, nb;        /* column panels per block, blocks */
    int whole;              /* B packed whole, by all threads, into the shared work (small B) */
    int flat;               /* 1x1 stride-1 window without padding: B's rows are X's planes */
    int64_t ph, pw;         /* padded planes (not flat) */
    int64_t planes, shared; /* work bytes: the padded planes, them and the whole B */
    int64_t block, slot;    /* a slot: a block of B panels (not whole), then gathered rows */
    int64_t own;            /* then (whole, not flat) the slot's own padded planes, or 0 */
} conv_plan;

static conv_plan plan_of(const graphopt_qconv_shape* s) {
    conv_plan p;
    p.K = s->channels * s->kernel_h * s->kernel_w;
    p.K4 = q_k_groups(p.K);
    p.N = s->out_height * s->out_width;
    p.np = (p.N + QNR - 1) / QNR;
    /* B up to 4 blocks (an L2) is packed once and shared: blocks of it would be packed again
     * by every thread that runs a part of their rows */
    p.whole = p.np * p.K4 * QNR * 4 <= 4 * GRAPHOPT_QBLOCK_BYTES;
    p.per = p.whole ? p.np : GRAPHOPT_QBLOCK_BYTES / (p.K4 * QNR * 4);
    if (!p.whole && p.per >= QBLOCK_PANELS) /* whole register tiles in a block */
        p.per = p.per / QBLOCK_PANELS * QBLOCK_PANELS;
    p.per = p.per < 1 ? 1 : (p.per > p.np ? p.np : p.per);
    p.nb = (p.np + p.per - 1) / p.per;
    p.flat = s->kernel_h == 1 && s->kernel_w == 1 && s->stride_h == 1 && s->stride_w == 1 &&
             s->pad_top == 0 && s->pad_left == 0 && s->out_height == s->height &&
             s->out_width == s->width;
    p.ph = q_padded_h(s);
    p.pw = q_padded_w(s);
    p.block = q_round_up(p.per * p.K4 * QNR * 4, 64);
    p.planes = p.flat || p.whole ? 0 : q_round_up(s->channels * p.ph * p.pw + PLANE_SLACK, 64);
    p.shared = p.planes + (p.whole ? p.block : 0);
    /* two: the 4 taps of a group lie in at most two channels (windows of 3 taps or more) */
    p.own = p.flat || !p.whole ? 0 : 2 * q_round_up(p.ph * p.pw + PLANE_SLACK, 64);
    /* 4 gathered rows of a block with slack for the vector spills */
    p.slot = (p.whole ? 0 : p.block) + q_round_up(4 * p.per * QNR + PLANE_SLACK, 64) + p.own;
    return p;
}

int64_t graphopt_qconv_work(const graphopt_qconv_shape* s, int slots) {
    const conv_plan p = plan_of(s);
    return p.shared + (slots < 1 ? 1 : slots) * p.slot;
}

/* n bytes of pad (pads: 64 of them), a row's border columns: a byte or two, often none (a 1x1
 * stride-2 window crops), where the library calls per row cost more than the copies. */
static void fill_border(uint8_t* dst, const uint8_t* pads, uint8_t pad, int64_t n) {
    if (n > 64)
        memset(dst, pad, (size_t)n);
    else if (n > 0)
        graphopt_q_copy_short(dst, pads, (size_t)n);
}

/* Channel c of X into its padded plane: border rows and columns set to pad, interior copied
 * (x: 0x80 flips s8 to u8). */
static void pad_channel(const uint8_t* xc, const graphopt_qconv_shape* s, const conv_plan* p,
                        uint8_t pad, uint8_t x, uint8_t* plane) {
    const int64_t left = s->pad_left < p->pw ? s->pad_left : p->pw;
    int64_t inner = s->width < p->pw - left ? s->width : p->pw - left;
    if (inner < 0) inner = 0;
    const int64_t right = p->pw - left - inner;
    uint8_t pads[64];
    memset(pads, pad, sizeof pads);
    for (int64_t py = 0; py < p->ph; ++py) {
        uint8_t* dst = plane + py * p->pw;
        const int64_t iy = py - s->pad_top;
        if (iy < 0 || iy >= s->height) {
            memset(dst, pad, (size_t)p->pw);
            continue;
        }
        fill_border(dst, pads, pad, left);
        const uint8_t* src = xc + iy * s->width;
        if (x)
            for (int64_t i = 0; i < inner; ++i) dst[left + i] = (uint8_t)(src[i] ^ x);
        else
            graphopt_q_copy_short(dst + left, src, (size_t)inner);
        fill_border(dst + left + inner, pads, pad, right);
    }
}

/* n bytes src[0], src[sw], ... into dst. The vector path (sw 1 or 2) moves 16 bytes at a time
 * and may write up to 15 bytes past n and read up to 32 bytes past the last element. */
static void gather_row(const uint8_t* src, int64_t sw, int64_t n, uint8_t* dst) {
    int64_t o = 0;
#if QX86
    if (sw <= 2)
        for (; o < n; o += 16)
            _mm_storeu_si128((__m128i*)(dst + o), q_strided16(src + o * sw, sw));
#endif
    for (; o < n; ++o) dst[o] = src[o * sw];
}

/* The window tap (c, ky, kx) of a row k of B, advanced k by k without divisions. */
typedef struct {
    int64_t c, ky, kx;
} tap;

static tap tap_of(const graphopt_qconv_shape* s, int64_t k) {
    const int64_t taps = s->kernel_h * s->kernel_w;
    tap t = {k / taps, (k % taps) / s->kernel_w, k % s->kernel_w};
    return t;
}

static void next_tap(const graphopt_qconv_shape* s, tap* t) {
    if (++t->kx < s->kernel_w) return;
    t->kx = 0;
    if (++t->ky < s->kernel_h) return;
    t->ky = 0;
    ++t->c;
}

/* Where a thread's gathers find channel c padded: the shared planes, or its own two planes
 * (channel c in plane c % 2, padded when the channel there changes). */
typedef struct {
    const uint8_t* X;
    uint8_t* planes;
    int own;
    int64_t cached[2]; /* own: the channel in each plane, -1 none */
    uint8_t pad, flip;
} source;

static const uint8_t* channel_plane(source* src, const graphopt_qconv_shape* s,
                                    const conv_plan* p, int64_t c);

/* Columns n0 .. n0 + count of B's row at tap t, gathered from the padded planes into dst;
 * (oy, ox): the output pixel of column n0. */
static void gather_tap(source* src, const graphopt_qconv_shape* s, const conv_plan* p,
                       tap t, int64_t oy, int64_t ox, int64_t count, uint8_t* dst) {
    const int64_t ow = s->out_width, sw = s->stride_w, row = s->stride_h * p->pw;
    const uint8_t* base = channel_plane(src, s, p, t.c) + t.ky * s->dilation_h * p->pw +
                          t.kx * s->dilation_w + oy * row;
    for (int64_t done = 0; done < count; base += row, ox = 0) { /* in order: a spill is
                                                                   overwritten */
        const int64_t run = ow - ox < count - done ? ow - ox : count - done;
        gather_row(base + ox * sw, sw, run, dst + done);
        done += run;
    }
}

/* Group g (taps from t) of column panels [jp0, jp0 + panels) of B packed into out (panel q
 * of the range at out + q * K4 * 64): from X's planes when flat, else gathered from the padded
 * planes into rows first. Columns past N and rows past K are zero (s8 flipped: 0x80), where
 * zero weights meet them. rows: 4 * panels * QNR bytes and slack. */
static void pack_rows(source* src, const graphopt_qconv_shape* s, const conv_plan* p,
                      int64_t jp0, int64_t panels, int64_t g, tap t, uint8_t* rows,
                      uint8_t* out) {
    const uint8_t flip = src->flip;
    const int64_t n0 = jp0 * QNR, width = panels * QNR;
    const int64_t count = p->N - n0 < width ? p->N - n0 : width; /* valid columns */
    const int64_t whole = p->flat ? count / QNR : 0; /* panels interleaved straight from X */
    const int64_t oy = n0 / s->out_width, ox = n0 % s->out_width;
    const uint8_t* r[4];
    for (int i = 0; i < 4; ++i, next_tap(s, &t)) {
        const int64_t k = 4 * g + i;
        uint8_t* row = rows + i * width;
        r[i] = row;
        if (k >= p->K) {
            memset(row, 0, (size_t)width);
        } else if (p->flat) {
            r[i] = src->X + k * p->N + n0;
            if (whole < panels) { /* the last panel, partly past N: via the rows */
                memcpy(row + whole * QNR, r[i] + whole * QNR, (size_t)(count - whole * QNR));
                memset(row + count, 0, (size_t)(width - count));
            }
        } else {
            gather_tap(src, s, p, t, oy, ox, count, row);
            memset(row + count, 0, (size_t)(width - count));
        }
    }
    for (int64_t q = 0; q < panels; ++q) {
        const int64_t at = q * QNR;
        uint8_t* o = out + (q * p->K4 + g) * QNR * 4;
        if (q < whole)
            q_interleave4x16(r[0] + at, r[1] + at, r[2] + at, r[3] + at, o);
        else
            q_interleave4x16(rows + at, rows + width + at, rows + 2 * width + at,
                             rows + 3 * width + at, o);
        if (flip && p->flat) /* gathered rows were flipped in the padded planes already */
            for (int i = 0; i < QNR * 4; ++i) o[i] ^= flip;
    }
}

#if QISA == 2 && defined(__AVX512VBMI__)
#define QPERMUTE 1 /* vpermb: a panel of narrow output rows picked out of one 64-byte load */
#else
#define QPERMUTE 0
#endif

/* Offset in a padded plane (from a tap's first element) of output column n's tap. */
static int64_t tap_offset(const graphopt_qconv_shape* s, const conv_plan* p, int64_t n) {
    return n / s->out_width * s->stride_h * p->pw + n % s->out_width * s->stride_w;
}

/* Whether output rows are narrower than a panel and the 16 columns of every panel lie within
 * 64 bytes of their first (in every tap): then pack_direct picks them out of one load with
 * vpermb. */
static int narrow_rows_fit(const graphopt_qconv_shape* s, const conv_plan* p) {
    if (!QPERMUTE || s->out_width >= QNR) return 0;
    for (int64_t ox = 0; ox < s->out_width; ++ox)
        if (tap_offset(s, p, ox + QNR - 1) - tap_offset(s, p, ox) >= 64) return 0;
    return 1;
}

#if QPERMUTE
/* Four panels (64 columns) a step (vpermt2b): each tap's 64 columns picked out of a 128-byte
 * window of its plane, in the order that makes two in-lane unpacks give the four panels'
 * groups whole (lane j, byte p of the picked vector: column 16 * (p / 4) + 4 * j + p % 4, so
 * that panel q's group is unpack*_epi16 of positions 4q .. 4q + 3 of every lane). */
enum { QUAD_STEPS = 32 }; /* steps of a block planned at once (the rest: a panel at a time) */
typedef struct {
    int64_t steps;
    int64_t at[QUAD_STEPS];          /* a step's first column's offset in a tap's plane */
    uint8_t picks[QUAD_STEPS][64];   /* its columns' offsets from there, in the picked order */
} quad_plan;

/* Whether every 64 consecutive columns lie within 128 bytes of their first in every tap. */
static int quad_windows_fit(const graphopt_qconv_shape* s, const conv_plan* p) {
    for (int64_t ox = 0; ox < s->out_width; ++ox)
        if (tap_offset(s, p, ox + 4 * QNR - 1) - tap_offset(s, p, ox) >= 128) return 0;
    return 1;
}

/* The steps of `direct` panels from jp0 that lie inside N, planned. */
static void plan_quads(const graphopt_qconv_shape* s, const conv_plan* p, int64_t jp0,
                       int64_t direct, quad_plan* q) {
    const int64_t inside = (p->N - jp0 * QNR) / QNR, panels = inside < direct ? inside : direct;
    q->steps = panels / 4 < QUAD_STEPS ? panels / 4 : QUAD_STEPS;
    if (q->steps && !quad_windows_fit(s, p)) q->steps = 0;
    for (int64_t i = 0; i < q->steps; ++i) {
        const int64_t n = (jp0 + 4 * i) * QNR;
        q->at[i] = tap_offset(s, p, n);
        for (int b = 0; b < 64; ++b) {
            const int64_t column = 16 * ((b % 16) / 4) + 4 * (b / 16) + b % 4;
            q->picks[i][b] = (uint8_t)(tap_offset(s, p, n + column) - q->at[i]);
        }
    }
}

/* Group g of the planned steps from the 4 taps' planes into out (the first step's panel). */
static void pack_quads(const uint8_t* const base[4], const quad_plan* q, int64_t K4,
                       uint8_t* out) {
    const int64_t panel = K4 * QNR * 4;
    for (int64_t i = 0; i < q->steps; ++i, out += 4 * panel) {
        const __m512i pick = _mm512_loadu_si512((const void*)q->picks[i]);
        __m512i v[4];
        for (int t = 0; t < 4; ++t) {
            const uint8_t* w = base[t] + q->at[i];
            v[t] = _mm512_permutex2var_epi8(_mm512_loadu_si512((const void*)w), pick,
                                            _mm512_loadu_si512((const void*)(w + 64)));
        }
        const __m512i lo01 = _mm512_unpacklo_epi8(v[0], v[1]);
        const __m512i lo23 = _mm512_unpacklo_epi8(v[2], v[3]);
        const __m512i hi01 = _mm512_unpackhi_epi8(v[0], v[1]);
        const __m512i hi23 = _mm512_unpackhi_epi8(v[2], v[3]);
        _mm512_storeu_si512((void*)out, _mm512_unpacklo_epi16(lo01, lo23));
        _mm512_storeu_si512((void*)(out + panel), _mm512_unpackhi_epi16(lo01, lo23));
        _mm512_storeu_si512((void*)(out + 2 * panel), _mm512_unpacklo_epi16(hi01, hi23));
        _mm512_storeu_si512((void*)(out + 3 * panel), _mm512_unpackhi_epi16(hi01, hi23));
    }
}
#endif

/* Leading panels of [jp0, jp0 + panels) that pack_direct packs: all whole panels (inside N)
 * when all 4 taps of a group are at hand (shared planes, or own ones with windows of 3 taps or
 * more) and either output rows are at least a panel wide (a panel spans at most two of them)
 * with a column stride of 1 or 2, or (vpermb) every panel lies within 64 bytes. */
static int64_t direct_panels(const source* src, const graphopt_qconv_shape* s,
                             const conv_plan* p, int64_t jp0, int64_t panels) {
#if QX86
    if (p->flat || (src->own && s->kernel_h * s->kernel_w < 3)) return 0;
    const int wide = s->out_width >= QNR && s->stride_w <= 2;
    const int narrow = !wide && narrow_rows_fit(s, p);
    if (!wide && !narrow) return 0;
    /* vpermb also packs a last panel partly past N: its load ends 63 bytes past the last
     * column's tap, inside the plane's slack, and the columns past N are never stored */
    const int64_t left = p->N - jp0 * QNR;
    const int64_t inside = narrow ? (left + QNR - 1) / QNR : left / QNR;
    return inside < panels ? inside : panels;
#else
    (void)src, (void)s, (void)p, (void)jp0, (void)panels, (void)narrow_rows_fit;
    return 0;
#endif
}

#if QX86
/* Panel 16 columns from `at` of each tap's plane, rows of at least a panel: one load, or two
 * blended at the split when the panel crosses into the next output row (the second starts
 * `split` elements before that row, so its lane i is element i - split of the row). Loads may
 * reach 32 bytes past a row or 30 before one: inside the planes (their slack, the rows
 * above). */
QINLINE void wide_panel(const uint8_t* const base[4], const graphopt_qconv_shape* s,
                        const conv_plan* p, int64_t oy, int64_t ox, __m128i v[4]) {
    static const uint8_t ramp[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                     255, 255, 255, 255, 255, 255, 255, 255,
                                     255, 255, 255, 255, 255, 255, 255, 255};
    const int64_t sw = s->stride_w, row = s->stride_h * p->pw;
    const int64_t split = s->out_width - ox, at = oy * row + ox * sw;
    for (int i = 0; i < 4; ++i) v[i] = q_strided16(base[i] + at, sw);
    if (split < QNR) {
        const __m128i second = _mm_loadu_si128((const __m128i*)(ramp + QNR - split));
        const int64_t next = (oy + 1) * row - split * sw;
        for (int i = 0; i < 4; ++i)
            v[i] = _mm_blendv_epi8(v[i], q_strided16(base[i] + next, sw), second);
    }
}

/* Group g (taps from t, all < K) of `count` whole panels from jp0, loaded straight from the
 * padded planes into registers and interleaved: im2col without the round trip of gathered
 * rows through memory. Narrow rows (vpermb): each panel's 16 columns are picked out of one
 * 64-byte load by the byte offsets of its first column's position in a row (at most 63 past
 * the plane's end: its slack). */
static void pack_direct(source* src, const graphopt_qconv_shape* s, const conv_plan* p,
                        int64_t jp0, int64_t count, const uint8_t (*picks)[QNR],
                        const void* quads, int64_t g, tap t, uint8_t* out) {
    const int64_t ow = s->out_width;
    const uint8_t* base[4];
    for (int i = 0; i < 4; ++i, next_tap(s, &t))
        base[i] = channel_plane(src, s, p, t.c) + t.ky * s->dilation_h * p->pw +
                  t.kx * s->dilation_w;
    out += g * QNR * 4;
#if QPERMUTE
    if (quads) { /* the leading panels four at a time */
        const quad_plan* q = (const quad_plan*)quads;
        pack_quads(base, q, p->K4, out);
        jp0 += 4 * q->steps;
        count -= 4 * q->steps;
        out += 4 * q->steps * p->K4 * QNR * 4;
    }
#else
    (void)quads;
#endif
    int64_t oy = jp0 * QNR / ow, ox = jp0 * QNR % ow;
#if QPERMUTE
    if (picks) {
        for (int64_t n = jp0 * QNR, q = 0; q < count; ++q, n += QNR, out += p->K4 * QNR * 4) {
            const __m512i pick = _mm512_zextsi128_si512(
                _mm_loadu_si128((const __m128i*)picks[n % ow]));
            const int64_t at = tap_offset(s, p, n);
            __m128i v[4];
            for (int i = 0; i < 4; ++i)
                v[i] = _mm512_castsi512_si128(_mm512_permutexvar_epi8(
                    pick, _mm512_loadu_si512((const void*)(base[i] + at))));
            q_interleave4x16_regs(v[0], v[1], v[2], v[3], out);
        }
        return;
    }
#else
    (void)picks;
#endif
    for (int64_t q = 0; q < count; ++q, out += p->K4 * QNR * 4) {
        __m128i v[4];
        wide_panel(base, s, p, oy, ox, v);
        q_interleave4x16_regs(v[0], v[1], v[2], v[3], out);
        ox += QNR;
        if (ox >= ow) {
            ox -= ow;
            ++oy;
        }
    }
}
#endif

/* Groups [g0, g1) of column panels [jp0, jp0 + panels) of B packed into out (panel q of the
 * range at out + q * K4 * 64): the leading panels straight from the padded planes where
 * pack_direct can, the others through gathered rows (pack_rows). */
static void pack_block(source* src, const graphopt_qconv_shape* s, const conv_plan* p,
                       int64_t jp0, int64_t panels, int64_t g0, int64_t g1, uint8_t* rows,
                       uint8_t* out) {
    const int64_t direct = direct_panels(src, s, p, jp0, panels);
    const uint8_t(*narrow)[QNR] = NULL; /* rows narrower than a panel: vpermb's picks */
#if QPERMUTE
    /* [ox of a panel's first column][column] -> the column's offset in a tap's plane */
    uint8_t picks[QNR][QNR];
    if (direct && s->out_width < QNR) {
        for (int64_t x = 0; x < s->out_width; ++x)
            for (int c = 0; c < QNR; ++c)
                picks[x][c] = (uint8_t)(tap_offset(s, p, x + c) - tap_offset(s, p, x));
        narrow = (const uint8_t(*)[QNR])picks;
    }
#endif
    const void* quads = NULL; /* the leading panels four at a time (vpermt2b) */
#if QPERMUTE
    quad_plan plan;
    if (direct) {
        plan_quads(s, p, jp0, direct, &plan);
        quads = plan.steps ? &plan : NULL;
    }
#endif
    tap t = tap_of(s, 4 * g0);
    for (int64_t g = g0; g < g1; ++g) {
        int64_t done = 0;
#if QX86
        if (direct && 4 * g + 4 <= p->K) {
            pack_direct(src, s, p, jp0, direct, narrow, quads, g, t, out);
            done = direct;
        }
#else
        (void)direct, (void)narrow, (void)quads; /* 0, NULL: no direct packing off x86 */
#endif
        if (done < panels)
            pack_rows(src, s, p, jp0 + done, panels - done, g, t, rows,
                      out + done * p->K4 * QNR * 4);
        for (int i = 0; i < 4; ++i) next_tap(s, &t);
    }
}

static const uint8_t* channel_plane(source* src, const graphopt_qconv_shape* s,
                                    const conv_plan* p, int64_t c) {
    if (!src->own) return src->planes + c * p->ph * p->pw;
    uint8_t* plane = src->planes + (c & 1) * (p->own / 2);
    if (src->cached[c & 1] != c) {
        pad_channel(src->X + c * s->height * s->width, s, p, src->pad, src->flip, plane);
        src->cached[c & 1] = c;
    }
    return plane;
}

/* One more item of a shared phase done (by any thread). */
static void item_done(int64_t* done) {
#ifdef _OPENMP
#pragma omp flush
#pragma omp atomic update
#endif
    ++*done;
}

/* Wait until `total` items of a shared phase are done: the phase's end without a barrier, so a
 * thread that another process delays does not hold the others until it arrives (they take its
 * items: dynamic schedule). */
static void wait_items(int64_t* done, int64_t total) {
    for (;;) {
        int64_t now;
#ifdef _OPENMP
#pragma omp atomic read
#endif
        now = *done;
        if (now >= total) break;
#if QX86
        _mm_pause();
#endif
    }
#ifdef _OPENMP
#pragma omp flush
#endif
}

/* Column panels per block for a team of `threads`: p->per (what a slot holds) or, when that
 * many blocks do not divide among the threads, fewer in a count that does (9 blocks on 2
 * threads: 5 for one, 4 for the other, which then waits a ninth of the layer). */
static int64_t balanced_per(const conv_plan* p, int threads) {
    if (threads < 2 || p->nb % threads == 0) return p->per;
    /* whole register tiles, blocks not below half the size: 196 panels on 2 threads: 22 of 9 */
    for (int64_t per = p->per / QTILE_B * QTILE_B; per >= QTILE_B && 2 * per >= p->per;
         per -= QTILE_B)
        if ((p->np + per - 1) / per % threads == 0) return per;
    const int64_t blocks = (p->nb + threads - 1) / threads * threads;
    return (p->np + blocks - 1) / blocks;
}

/* Row chunks of a block: enough work items for every thread to take a few (a thread that
 * another process delays then holds no one up), at most one per register tile of rows. */
static int64_t row_chunks(int threads, int64_t blocks, int64_t mp) {
    const int64_t chunks = threads > 1 ? (3 * threads + blocks - 1) / blocks : 1;
    const int64_t tiles = (mp + QTILE_A - 1) / QTILE_A;
    return chunks > tiles ? tiles : chunks;
}

/* Items of whole (1x1, flat) column ranges for a team, or 0: B packed together, then its rows
 * shared. A flat B is packed straight from X's planes, so a range costs about its share of
 * the whole; packed by the thread that runs every row on it, it needs no wait for the others,
 * and a B of few groups (a few channels over a large plane: 2 items of 16 groups) no longer
 * packs on one thread. Wanted: a few ranges per thread (dynamic schedule), whole register
 * tiles each. One thread keeps the whole B (the ranges' calls cost ~8% of a 30 us layer). */
static int64_t column_items(const conv_plan* p, int threads) {
    const int64_t tiles = (p->np + QTILE_B - 1) / QTILE_B;
    return p->flat && threads > 1 && tiles >= 4 * threads ? 4 * threads : 0;
}

/* Row panels [*ip0, *ip1) of chunk `chunk` of `chunks`: whole register tiles (but the last). */
static void chunk_rows(int64_t chunk, int64_t chunks, int64_t mp, int64_t* ip0, int64_t* ip1) {
    const int64_t tiles = (mp + QTILE_A - 1) / QTILE_A;
    const int64_t t0 = chunk * tiles / chunks, t1 = (chunk + 1) * tiles / chunks;
    *ip0 = t0 * QTILE_A;
    *ip1 = t1 * QTILE_A < mp ? t1 * QTILE_A : mp;
}

/* Work item `item` of blocks of `per` of np column panels, each cut into `chunks` of mp row
 * panels: its column panels [*jp0, *jp1) and row panels [*ip0, *ip1); returns its block. */
static int64_t block_item(int64_t item, int64_t chunks, int64_t per, int64_t np, int64_t mp,
                          int64_t* jp0, int64_t* jp1, int64_t* ip0, int64_t* ip1) {
    const int64_t b = item / chunks;
    *jp0 = b * per;
    *jp1 = *jp0 + per < np ? *jp0 + per : np;
    chunk_rows(item % chunks, chunks, mp, ip0, ip1);
    return b;
}

void graphopt_qconv(const uint8_t* X, const graphopt_qconv_shape* s, int64_t M,
                    const int8_t* Ap, uint8_t pad, int flip, const graphopt_qepilogue* e,
                    void* Y, void* work, int slots) {
    const conv_plan p = plan_of(s);
    const uint8_t x = flip ? 0x80 : 0;
    const int64_t mp = (M + QMR - 1) / QMR;
    const graphopt_qepilogue local = *e; /* see graphopt_q_store_tile */
    uint8_t* planes = (uint8_t*)work;
    uint8_t* shared_b = planes + p.planes; /* the whole B (p.whole) */
    uint8_t* slots0 = planes + p.shared;
    graphopt_qconsts consts;
    const graphopt_qconsts* k = graphopt_q_epilogue_consts(&local, 1, &consts);
    const int team = q_team_size(slots);
    const int parallel = GRAPHOPT_WORTH_THREADS(M * p.N * p.K / QMACS_PER_MAC, 0);
    (void)team;
    (void)parallel;
    if (p.planes) /* what the vector loads read past the last plane stays defined */
        memset(planes + s->channels * p.ph * p.pw, 0, PLANE_SLACK);
    int64_t padded = 0, packed = 0; /* items of the shared phases done */
    const int64_t step = 16;        /* groups per item of packing a whole B */
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* mine = q_slot_of(slots0, p.slot);
        uint8_t* panels = p.whole ? shared_b : mine;
        uint8_t* rows = mine + (p.whole ? 0 : p.block);
        source src = {X, planes, 0, {-1, -1}, pad, x};
        if (p.own) {
            src.planes = mine + p.slot - p.own;
            src.own = 1;
            for (int i = 0; i < 2; ++i) /* read past: stays defined */
                memset(src.planes + i * (p.own / 2) + p.ph * p.pw, 0, PLANE_SLACK);
        }
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_num_threads();
#endif
        if (p.planes) {
#ifdef _OPENMP
#pragma omp for schedule(dynamic) nowait
#endif
            for (int64_t c = 0; c < s->channels; ++c) {
                pad_channel(X + c * s->height * s->width, s, &p, pad, x,
                            planes + c * p.ph * p.pw);
                item_done(&padded);
            }
            wait_items(&padded, s->channels);
        }
        const int64_t ranges = p.whole ? column_items(&p, threads) : 0;
        if (ranges) { /* each thread packs the column ranges it runs */
            const int64_t tiles = (p.np + QTILE_B - 1) / QTILE_B;
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
            for (int64_t item = 0; item < ranges; ++item) {
                const int64_t jp0 = item * tiles / ranges * QTILE_B;
                const int64_t end = (item + 1) * tiles / ranges * QTILE_B;
                const int64_t jp1 = end < p.np ? end : p.np;
                uint8_t* range = panels + jp0 * p.K4 * QNR * 4;
                pack_block(&src, s, &p, jp0, jp1 - jp0, 0, p.K4, rows, range);
                graphopt_q_tiles(p.K4, Ap, M, 0, mp, range, p.N, jp0, jp1, &local, k, Y, p.N, 1);
            }
        } else if (p.whole) { /* pack B together, then share the rows */
#ifdef _OPENMP
#pragma omp for schedule(dynamic) nowait
#endif
            for (int64_t g = 0; g < p.K4; g += step) {
                pack_block(&src, s, &p, 0, p.np, g, g + step < p.K4 ? g + step : p.K4, rows,
                           panels);
                item_done(&packed);
            }
            wait_items(&packed, (p.K4 + step - 1) / step);
            const int64_t chunks = row_chunks(threads, 1, mp);
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
            for (int64_t chunk = 0; chunk < chunks; ++chunk) {
                int64_t ip0, ip1;
                chunk_rows(chunk, chunks, mp, &ip0, &ip1);
                graphopt_q_tiles(p.K4, Ap, M, ip0, ip1, panels, p.N, 0, p.np, &local, k, Y, p.N,
                                 1);
            }
        } else { /* each thread packs the blocks it runs */
            const int64_t per = balanced_per(&p, threads), nb = (p.np + per - 1) / per;
            const int64_t chunks = row_chunks(threads, nb, mp);
            int64_t held = -1; /* the block packed in this thread's slot */
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
            for (int64_t item = 0; item < nb * chunks; ++item) {
                int64_t jp0, jp1, ip0, ip1;
                const int64_t b = block_item(item, chunks, per, p.np, mp, &jp0, &jp1, &ip0, &ip1);
                if (b != held) {
                    pack_block(&src, s, &p, jp0, jp1 - jp0, 0, p.K4, rows, panels);
                    held = b;
                }
                graphopt_q_tiles(p.K4, Ap, M, ip0, ip1, panels, p.N, jp0, jp1, &local, k, Y, p.N,
                                 1);
            }
        }
    }
}

/* ---- implicit GEMM (graphopt_qconv_implicit): stride 1, no dilation ------------------------
 *
 * The input is padded once into planes of 4 channels interleaved (per pixel the 4 bytes of a
 * VNNI k-group), and K is ordered tap-outer, channel-group-inner (the weights packed to match,
 * int8/packing.py pack_implicit_a). With stride 1 the B group of 16 consecutive "virtual"
 * columns v = oy * pw + ox (the output pixels over the padded width; columns ox >= out_width
 * are computed and dropped) for tap (ky, kx) and channel group cg is the 64 bytes at pixel
 * v + ky * pw + kx of group cg's plane: the VNNI micro-kernel reads them there through a
 * per-group offset table, with no im2col. Other ISAs copy those 64-byte groups into packed
 * panels (no gathers, no interleave) and run their own micro-kernel. */
typedef struct {
    int64_t C4, K4;      /* channel groups, GEMM groups (taps x channel groups) */
    int64_t ph, pw;      /* padded plane */
    int64_t plane;       /* bytes of one channel group's interleaved plane */
    int64_t nv, npv;     /* virtual columns up to the last output, their panels */
    int64_t per;         /* virtual panels per packed block (ISAs without the direct kernel) */
    int64_t planes;      /* work bytes: the planes and their slack */
    int64_t table;       /* work bytes: the offsets */
    int64_t slot;        /* a thread's packed block (ISAs without the direct kernel) */
} implicit_plan;

static implicit_plan implicit_plan_of(const graphopt_qconv_shape* s) {
    implicit_plan p;
    p.C4 = q_k_groups(s->channels);
    p.K4 = s->kernel_h * s->kernel_w * p.C4;
    p.ph = q_padded_h(s);
    p.pw = q_padded_w(s);
    p.plane = p.ph * p.pw * 4;
    p.nv = (s->out_height - 1) * p.pw + s->out_width;
    p.npv = (p.nv + QNR - 1) / QNR;
    p.per = GRAPHOPT_QBLOCK_BYTES / (p.K4 * QNR * 4);
    if (p.per >= QBLOCK_PANELS) p.per = p.per / QBLOCK_PANELS * QBLOCK_PANELS;
    p.per = p.per < 1 ? 1 : (p.per > p.npv ? p.npv : p.per);
    /* the last panel's loads reach 15 pixels (60 bytes) past the last plane: its slack */
    p.planes = q_round_up(p.C4 * p.plane + PLANE_SLACK, 64);
    p.table = q_round_up(p.K4 * (int64_t)sizeof(int64_t), 64);
    p.slot = q_round_up(p.per * p.K4 * QNR * 4, 64);
    return p;
}

int64_t graphopt_qconv_implicit_work(const graphopt_qconv_shape* s, int slots) {
    const implicit_plan p = implicit_plan_of(s);
    return p.planes + p.table + (slots < 1 ? 1 : slots) * p.slot;
}

#if QX86
/* Elements i .. i + 15 of 4 rows (flipped by f) as 16 pixels of 4 interleaved bytes. */
static void interleave16(const uint8_t* const src[4], int64_t i, __m128i f, uint8_t* out) {
    q_interleave4x16_regs(_mm_xor_si128(_mm_loadu_si128((const __m128i*)(src[0] + i)), f),
                          _mm_xor_si128(_mm_loadu_si128((const __m128i*)(src[1] + i)), f),
                          _mm_xor_si128(_mm_loadu_si128((const __m128i*)(src[2] + i)), f),
                          _mm_xor_si128(_mm_loadu_si128((const __m128i*)(src[3] + i)), f), out);
}

/* The last n (< 16) elements from i of 4 rows as interleave16, nothing read or written past
 * them (the rows end there; the plane's next pixels may be another thread's). */
static void interleave_tail(const uint8_t* const src[4], int64_t i, int64_t n, __m128i f,
                            uint8_t* out) {
#if QISA == 2 && defined(__AVX512VL__)
    const __mmask16 lanes = (__mmask16)((1u << n) - 1);
    __m128i v[4];
    for (int t = 0; t < 4; ++t) v[t] = _mm_xor_si128(_mm_maskz_loadu_epi8(lanes, src[t] + i), f);
    const __m128i lo01 = _mm_unpacklo_epi8(v[0], v[1]), lo23 = _mm_unpacklo_epi8(v[2], v[3]);
    const __m128i hi01 = _mm_unpackhi_epi8(v[0], v[1]), hi23 = _mm_unpackhi_epi8(v[2], v[3]);
    const __m128i quads[4] = {_mm_unpacklo_epi16(lo01, lo23), _mm_unpackhi_epi16(lo01, lo23),
                              _mm_unpacklo_epi16(hi01, hi23), _mm_unpackhi_epi16(hi01, hi23)};
    for (int j = 0; j < 4; ++j) /* pixels 4j .. 4j + 3 */
        _mm_mask_storeu_epi32(out + 16 * j, (__mmask8)((lanes >> (4 * j)) & 0xF), quads[j]);
#else
    uint8_t rows[4][QNR], pixels[QNR * 4];
    const uint8_t* from[4] = {rows[0], rows[1], rows[2], rows[3]};
    for (int t = 0; t < 4; ++t) graphopt_q_copy_short(rows[t], src[t] + i, (size_t)n);
    interleave16(from, 0, f, pixels);
    graphopt_q_copy_short(out, pixels, (size_t)n * 4);
#endif
}
#endif

/* n pixels of 4 pad bytes (a few: no library call). */
static void pad_pixels(uint8_t* dst, uint8_t pad, int64_t n) {
    const uint32_t word = pad * 0x01010101u;
    for (int64_t i = 0; i < n; ++i) memcpy(dst + 4 * i, &word, 4);
}

/* Channels 4 cg .. 4 cg + 3 of X into their interleaved padded plane (channels past the last:
 * the pad, against zero weights). */
static void interleave_group(const uint8_t* X, const graphopt_qconv_shape* s,
                             const implicit_plan* p, int64_t cg, uint8_t pad, uint8_t flip,
                             uint8_t* out) {
    const int64_t hw = s->height * s->width, left = s->pad_left;
    const int64_t inner = s->width < p->pw - left ? s->width : p->pw - left;
    const int whole = 4 * cg + 4 <= s->channels;
    for (int64_t py = 0; py < p->ph; ++py) {
        uint8_t* row = out + py * p->pw * 4;
        const int64_t iy = py - s->pad_top;
        if (iy < 0 || iy >= s->height) {
            memset(row, pad, (size_t)(p->pw * 4));
            continue;
        }
        pad_pixels(row, pad, left);
        pad_pixels(row + (left + inner) * 4, pad, p->pw - left - inner);
        const uint8_t* src[4];
        for (int t = 0; t < 4; ++t)
            src[t] = 4 * cg + t < s->channels ? X + (4 * cg + t) * hw + iy * s->width : NULL;
        uint8_t* dst = row + left * 4;
        int64_t i = 0;
#if QX86
        const __m128i f = _mm_set1_epi8((char)flip);
        if (whole) {
            for (; i + QNR <= inner; i += QNR) interleave16(src, i, f, dst + i * 4);
            if (i < inner) interleave_tail(src, i, inner - i, f, dst + i * 4);
            i = inner;
        }
#else
        (void)whole;
#endif
        for (; i < inner; ++i)
            for (int t = 0; t < 4; ++t)
                dst[i * 4 + t] = src[t] ? (uint8_t)(src[t][i] ^ flip) : pad;
    }
}

/* offs[g]: where group g (tap-outer, channel group inner) of virtual column 0 starts. */
static void implicit_offsets(const graphopt_qconv_shape* s, const implicit_plan* p,
                             int64_t* offs) {
    for (int64_t ky = 0, g = 0; ky < s->kernel_h; ++ky)
        for (int64_t kx = 0; kx < s->kernel_w; ++kx)
            for (int64_t cg = 0; cg < p->C4; ++cg, ++g)
                offs[g] = cg * p->plane + (ky * p->pw + kx) * 4;
}

/* Virtual panels [jp0, jp0 + panels) packed as B panels (the path without a direct kernel). */
static void pack_implicit(const uint8_t* planes, const int64_t* offs, const implicit_plan* p,
                          int64_t jp0, int64_t panels, uint8_t* out) {
    for (int64_t q = 0; q < panels; ++q)
        for (int64_t g = 0; g < p->K4; ++g, out += QNR * 4)
            memcpy(out, planes + offs[g] + (jp0 + q) * QNR * 4, QNR * 4);
}

enum { MAX_RUNS = QTN + 1 }; /* runs of real columns in a tile (at most one a column) */

/* The runs of real columns among the n virtual columns from v0 (the padded width's dropped):
 * run j is tile columns [first[j], first[j] + length[j]) to output column column[j]. */
static int real_runs(const graphopt_qconv_shape* s, const implicit_plan* p, int64_t v0,
                     int64_t n, int64_t* first, int64_t* length, int64_t* column) {
    const int64_t ow = s->out_width;
    int64_t oy = v0 / p->pw, ox = v0 % p->pw;
    int count = 0;
    for (int64_t v = 0; v < n;) {
        if (ox >= ow) { /* the padded width's columns: to the next row */
            v += p->pw - ox;
            ox = 0;
            ++oy;
            continue;
        }
        const int64_t run = ow - ox < n - v ? ow - ox : n - v;
        first[count] = v;
        length[count] = run;
        column[count++] = oy * ow + ox;
        v += run;
        ox += run;
    }
    return count;
}

/* The n virtual columns from v0 of a tile's accumulators (rows r0 .. r0 + m) stored: the real
 * ones, by masked stores of whole rows where the ISA can, else run by run. */
static void store_virtual(const int32_t* acc, const graphopt_qconv_shape* s,
                          const implicit_plan* p, int64_t r0, int64_t m, int64_t v0, int64_t n,
                          const graphopt_qepilogue* e, const graphopt_qconsts* k, void* Y) {
    const int64_t N = s->out_height * s->out_width;
    int64_t first[MAX_RUNS], length[MAX_RUNS], column[MAX_RUNS];
    const int count = real_runs(s, p, v0, n, first, length, column);
    graphopt_qrun runs[MAX_RUNS];
    for (int j = 0; j < count; ++j) {
        runs[j].at = column[j] - first[j];
        runs[j].lanes = (length[j] < 64 ? (1ull << length[j]) - 1 : ~0ull) << first[j];
    }
    if (graphopt_q_store_runs(acc, e, k, r0, (int)m, runs, count, Y, N)) return;
    for (int j = 0; j < count; ++j)
        graphopt_q_store_tile(acc + first[j], QTN, r0, column[j], m, length[j], e, k, Y, N, 1);
}

/* Row panels [ip0, ip1) x virtual panels [jp0, jp1): read from the planes (direct kernel) or
 * from `packed` (panel jp0 first). */
static void implicit_tiles(const graphopt_qconv_shape* s, const implicit_plan* p,
                           const int8_t* Ap, int64_t M, int64_t ip0, int64_t ip1,
                           const uint8_t* planes, const int64_t* offs, const uint8_t* packed,
                           int64_t jp0, int64_t jp1, const graphopt_qepilogue* e,
                           const graphopt_qconsts* k, void* Y) {
    int32_t acc[QTM * QTN] QALIGNED(64);
    for (int64_t ip = ip0; ip < ip1; ip += QTILE_A) {
        const int ma = ip1 - ip < QTILE_A ? (int)(ip1 - ip) : QTILE_A;
        const int8_t* a = Ap + ip * p->K4 * QMR * 4;
        const int64_t m = M - ip * QMR < ma * QMR ? M - ip * QMR : ma * QMR;
        for (int64_t jp = jp0; jp < jp1; jp += QTILE_B) {
            const int nb = jp1 - jp < QTILE_B ? (int)(jp1 - jp) : QTILE_B;
            const int64_t n = p->nv - jp * QNR < nb * QNR ? p->nv - jp * QNR : nb * QNR;
            if (packed)
                graphopt_q_compute_tile(p->K4, a, ma, packed + (jp - jp0) * p->K4 * QNR * 4, nb,
                                        acc, e->narrow, n);
            else
                graphopt_q_compute_tile_implicit(p->K4, a, ma, planes + jp * QNR * 4, nb, offs,
                                                 acc);
            store_virtual(acc, s, p, ip * QMR, m, jp * QNR, n, e, k, Y);
        }
    }
}

void graphopt_qconv_implicit(const uint8_t* X, const graphopt_qconv_shape* s, int64_t M,
                             const int8_t* Ap, uint8_t pad, int flip,
                             const graphopt_qepilogue* e, void* Y, void* work, int slots) {
    const implicit_plan p = implicit_plan_of(s);
    const uint8_t x = flip ? 0x80 : 0;
    const int64_t mp = (M + QMR - 1) / QMR;
    const graphopt_qepilogue local = *e; /* see graphopt_q_store_tile */
    uint8_t* planes = (uint8_t*)work;
    int64_t* offs = (int64_t*)(planes + p.planes);
    uint8_t* slots0 = planes + p.planes + p.table;
    graphopt_qconsts consts;
    const graphopt_qconsts* k = graphopt_q_epilogue_consts(&local, 1, &consts);
    const int team = q_team_size(slots);
    const int parallel = GRAPHOPT_WORTH_THREADS(M * p.nv * p.K4 * 4 / QMACS_PER_MAC, 0);
    const int direct = QISA == 2; /* else B packed from the planes, block by block */
    (void)team;
    (void)parallel;
    memset(planes + p.C4 * p.plane, 0, PLANE_SLACK); /* read past: stays defined */
    implicit_offsets(s, &p, offs);
    int64_t padded = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* mine = q_slot_of(slots0, p.slot);
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_num_threads();
#pragma omp for schedule(dynamic) nowait
#endif
        for (int64_t cg = 0; cg < p.C4; ++cg) {
            interleave_group(X, s, &p, cg, pad, x, planes + cg * p.plane);
            item_done(&padded);
        }
        wait_items(&padded, p.C4);
        /* blocks of one register tile when B is read in place (no block to pack once): the
         * items then divide evenly among the threads (the block size does not change the speed
         * of one thread) */
        const int64_t per = direct ? QTILE_B : p.per, nb = (p.npv + per - 1) / per;
        const int64_t chunks = row_chunks(threads, nb, mp);
        int64_t held = -1; /* the block packed in this thread's slot */
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
        for (int64_t item = 0; item < nb * chunks; ++item) {
            int64_t jp0, jp1, ip0, ip1;
            const int64_t b = block_item(item, chunks, per, p.npv, mp, &jp0, &jp1, &ip0, &ip1);
            if (!direct && b != held) {
                pack_implicit(planes, offs, &p, jp0, jp1 - jp0, mine);
                held = b;
            }
            implicit_tiles(s, &p, Ap, M, ip0, ip1, planes, offs, direct ? NULL : mine, jp0, jp1,
                           &local, k, Y);
        }
    }
}
