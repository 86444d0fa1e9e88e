/* Integer convolution as GEMM (graphopt_qconv in graphopt_qkernels.h), in one parallel region:
 *
 *   1. (windows with padding, strides or s8 activations) the input is copied once into planes
 *      padded with the zero point, every tap of every output inside, so the gathers below
 *      have no bounds checks; the threads share the channels, then meet at the one barrier.
 *      When B is packed whole (small B, below) a thread pads each channel it gathers into a
 *      plane of its slot instead: each channel is then padded about once anyway, and the
 *      work memory stays that of one plane (bundles for small devices).
 *   2. The output columns are cut into blocks of `per` column panels (a block's packed B is
 *      an L2 share). A work item is a block and a range of row panels; a thread packs its
 *      item's block into its own slot (im2col gather, or the planes themselves for a 1x1
 *      stride-1 window), unless it holds it already, then runs the tiles while it is hot.
 *
 * Against the former im2col of the whole B then a GEMM (two parallel regions), this saves one
 * fork/join per layer and the round trip of B through memory. Each output tile is computed
 * and stored by one thread, so the bits do not depend on the schedule or the thread count.
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
    int64_t own;            /* then (whole, not flat) the slot's own padded plane, or 0 */
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
    p.own = p.flat || !p.whole ? 0 : q_round_up(p.ph * p.pw + PLANE_SLACK, 64);
    /* 4 gathered rows of a block with slack for the vector spills */
    p.slot = (p.whole ? 0 : p.block) + q_round_up(4 * p.per * QNR + PLANE_SLACK, 64) + p.own;
    return p;
}

int64_t graphopt_qconv_work(const graphopt_qconv_shape* s, int slots) {
    const conv_plan p = plan_of(s);
    return p.shared + (slots < 1 ? 1 : slots) * p.slot;
}

/* Channel c of X into its padded plane: border rows and columns set to pad, interior copied
 * (x: 0x80 flips s8 to u8). */
static void pad_channel(const uint8_t* xc, const graphopt_qconv_shape* s, const conv_plan* p,
                        uint8_t pad, uint8_t x, uint8_t* plane) {
    const int64_t left = s->pad_left < p->pw ? s->pad_left : p->pw;
    int64_t inner = s->width < p->pw - left ? s->width : p->pw - left;
    if (inner < 0) inner = 0;
    for (int64_t py = 0; py < p->ph; ++py) {
        uint8_t* dst = plane + py * p->pw;
        const int64_t iy = py - s->pad_top;
        if (iy < 0 || iy >= s->height) {
            memset(dst, pad, (size_t)p->pw);
            continue;
        }
        memset(dst, pad, (size_t)left);
        const uint8_t* src = xc + iy * s->width;
        if (x)
            for (int64_t i = 0; i < inner; ++i) dst[left + i] = (uint8_t)(src[i] ^ x);
        else
            memcpy(dst + left, src, (size_t)inner);
        memset(dst + left + inner, pad, (size_t)(p->pw - left - inner));
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

/* Where a thread's gathers find channel c padded: the shared planes, or its own plane (then
 * padded when the channel changes). */
typedef struct {
    const uint8_t* X;
    uint8_t* planes;
    int own;
    int64_t cached; /* own: the channel in the plane, -1 none */
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

/* Groups [g0, g1) of column panels [jp0, jp0 + panels) of B packed into out (panel q of the
 * range at out + q * K4 * 64): from X's planes when flat, else gathered from the padded
 * planes. Columns past N and rows past K are zero (s8 flipped: 0x80), where zero weights meet
 * them. rows: 4 * panels * QNR bytes and slack. */
static void pack_block(source* src, const graphopt_qconv_shape* s, const conv_plan* p,
                       int64_t jp0, int64_t panels, int64_t g0, int64_t g1, uint8_t* rows,
                       uint8_t* out) {
    const uint8_t* X = src->X;
    const uint8_t flip = src->flip;
    const int64_t n0 = jp0 * QNR, width = panels * QNR;
    const int64_t count = p->N - n0 < width ? p->N - n0 : width; /* valid columns */
    const int64_t whole = p->flat ? count / QNR : 0; /* panels interleaved straight from X */
    const int64_t oy = n0 / s->out_width, ox = n0 % s->out_width;
    tap t = tap_of(s, 4 * g0);
    for (int64_t g = g0; g < g1; ++g) {
        const uint8_t* r[4];
        for (int i = 0; i < 4; ++i, next_tap(s, &t)) {
            const int64_t k = 4 * g + i;
            uint8_t* row = rows + i * width;
            r[i] = row;
            if (k >= p->K) {
                memset(row, 0, (size_t)width);
            } else if (p->flat) {
                r[i] = X + k * p->N + n0;
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
}

static const uint8_t* channel_plane(source* src, const graphopt_qconv_shape* s,
                                    const conv_plan* p, int64_t c) {
    if (!src->own) return src->planes + c * p->ph * p->pw;
    if (src->cached != c) {
        pad_channel(src->X + c * s->height * s->width, s, p, src->pad, src->flip, src->planes);
        src->cached = c;
    }
    return src->planes;
}

/* Row chunks of a block: enough work items for every thread to take a few (a thread that
 * another process delays then holds no one up). */
static int64_t row_chunks(int threads, int64_t blocks, int64_t mp) {
    const int64_t chunks = threads > 1 ? (3 * threads + blocks - 1) / blocks : 1;
    return chunks > mp ? mp : chunks;
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
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* mine = q_slot_of(slots0, p.slot);
        uint8_t* panels = p.whole ? shared_b : mine;
        uint8_t* rows = mine + (p.whole ? 0 : p.block);
        source src = {X, planes, 0, -1, pad, x};
        if (p.own) {
            src.planes = mine + p.slot - p.own;
            src.own = 1;
            memset(src.planes + p.ph * p.pw, 0, PLANE_SLACK); /* read past: stays defined */
        }
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_num_threads();
#endif
        if (p.planes) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t c = 0; c < s->channels; ++c)
                pad_channel(X + c * s->height * s->width, s, &p, pad, x,
                            planes + c * p.ph * p.pw);
        }
        if (p.whole) { /* pack B together, then share the rows */
            const int64_t step = 16; /* groups per item */
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
            for (int64_t g = 0; g < p.K4; g += step)
                pack_block(&src, s, &p, 0, p.np, g, g + step < p.K4 ? g + step : p.K4, rows,
                           panels);
            const int64_t chunks = row_chunks(threads, 1, mp);
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
            for (int64_t chunk = 0; chunk < chunks; ++chunk)
                graphopt_q_tiles(p.K4, Ap, M, chunk * mp / chunks, (chunk + 1) * mp / chunks,
                                 panels, p.N, 0, p.np, &local, k, Y, p.N, 1);
        } else { /* each thread packs the blocks it runs */
            const int64_t chunks = row_chunks(threads, p.nb, mp);
            int64_t held = -1; /* the block packed in this thread's slot */
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
            for (int64_t item = 0; item < p.nb * chunks; ++item) {
                const int64_t b = item / chunks, chunk = item % chunks;
                const int64_t jp0 = b * p.per, jp1 = jp0 + p.per < p.np ? jp0 + p.per : p.np;
                if (b != held) {
                    pack_block(&src, s, &p, jp0, jp1 - jp0, 0, p.K4, rows, panels);
                    held = b;
                }
                graphopt_q_tiles(p.K4, Ap, M, chunk * mp / chunks, (chunk + 1) * mp / chunks,
                                 panels, p.N, jp0, jp1, &local, k, Y, p.N, 1);
            }
        }
    }
}
