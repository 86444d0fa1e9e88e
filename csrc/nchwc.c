/* Blocked-layout (NCHWc) kernels: layout conversions, depthwise 3x3, 1x1 and direct convolutions,
 * max pooling.
 *
 * One "block vector" holds the B = GRAPHOPT_NCHWC channels of one pixel: a SIMD register on
 * the AVX-512/AVX2/NEON families, a small struct of floats the compiler keeps in registers on
 * the scalar path. The fused epilogue (bias, residual add, Relu/Clip) runs on the block vectors
 * before they are stored, SiLU on each stored tile while it is in L1; anything else goes
 * through the generic callback afterwards.
 */
#include <math.h>

#include "graphopt_math.h"
#include "graphopt_nchwc.h"
#include "graphopt_simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define B GRAPHOPT_NCHWC

#if GRAPHOPT_GEMM_VLEN > 1
typedef vec_t bvec;
#define BV_LOAD(p) VEC_LOAD(p)
#define BV_STORE(p, v) VEC_STORE((p), (v))
#define BV_SET1(x) VEC_SET1(x)
#define BV_FMA(acc, a, b) VEC_FMA((acc), (a), (b))
#define BV_ADD(a, b) VEC_ADD((a), (b))
#define BV_ZERO() VEC_ZERO()
/* x86 max/min return their second operand when either is NaN: v second, so NaN passes
 * through as in the NCHW epilogues (graphopt/backend/c/exprs.py) and onnxruntime */
#if GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX512
#define BV_CLAMP(v, lo, hi) _mm512_min_ps((hi), _mm512_max_ps((lo), (v)))
#define BV_MAX(v, acc) _mm512_max_ps((v), (acc))
#elif GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX2
#define BV_CLAMP(v, lo, hi) _mm256_min_ps((hi), _mm256_max_ps((lo), (v)))
#define BV_MAX(v, acc) _mm256_max_ps((v), (acc))
#else
#define BV_CLAMP(v, lo, hi) vminq_f32(vmaxq_f32((v), (lo)), (hi))
#define BV_MAX(v, acc) vbslq_f32(vcgtq_f32((v), (acc)), (v), (acc))
#endif
#else /* scalar path: B lanes as plain C */
typedef struct { float v[B]; } bvec;
GRAPHOPT_INLINE bvec bv_load(const float* p) {
    bvec r;
    for (int l = 0; l < B; ++l) r.v[l] = p[l];
    return r;
}
GRAPHOPT_INLINE void bv_store(float* p, bvec a) {
    for (int l = 0; l < B; ++l) p[l] = a.v[l];
}
GRAPHOPT_INLINE bvec bv_set1(float x) {
    bvec r;
    for (int l = 0; l < B; ++l) r.v[l] = x;
    return r;
}
GRAPHOPT_INLINE bvec bv_fma(bvec acc, bvec a, bvec b) {
    for (int l = 0; l < B; ++l) acc.v[l] += a.v[l] * b.v[l];
    return acc;
}
GRAPHOPT_INLINE bvec bv_add(bvec a, bvec b) {
    for (int l = 0; l < B; ++l) a.v[l] += b.v[l];
    return a;
}
GRAPHOPT_INLINE bvec bv_clamp(bvec a, bvec lo, bvec hi) {
    for (int l = 0; l < B; ++l) {
        const float v = a.v[l] < lo.v[l] ? lo.v[l] : a.v[l];
        a.v[l] = v > hi.v[l] ? hi.v[l] : v;
    }
    return a;
}
#define BV_LOAD(p) bv_load(p)
#define BV_STORE(p, v) bv_store((p), (v))
#define BV_SET1(x) bv_set1(x)
#define BV_FMA(acc, a, b) bv_fma((acc), (a), (b))
#define BV_ADD(a, b) bv_add((a), (b))
#define BV_ZERO() bv_set1(0.0f)
#define BV_CLAMP(v, lo, hi) bv_clamp((v), (lo), (hi))
GRAPHOPT_INLINE bvec bv_max(bvec v, bvec acc) {
    for (int l = 0; l < B; ++l) acc.v[l] = v.v[l] > acc.v[l] ? v.v[l] : acc.v[l];
    return acc;
}
#define BV_MAX(v, acc) bv_max((v), (acc))
#endif
/* BV_MAX(v, acc) is v > acc ? v : acc per lane (x86 max: its second operand when either is
 * NaN): a NaN in the first tap of a window stays, a later one is skipped, as the NCHW
 * MaxPool (ops/pool.py) computes. */

/* The fused epilogue of one block vector; r: the residual at the output's offset, or NULL. */
typedef struct {
    bvec lo, hi;
    int clamp, add_first;
} finisher;

static finisher make_finisher(const graphopt_nchwc_epi* fe) {
    finisher f;
    f.lo = BV_SET1(fe ? fe->lo : -INFINITY);
    f.hi = BV_SET1(fe ? fe->hi : INFINITY);
    f.clamp = fe != NULL && (fe->lo > -INFINITY || fe->hi < INFINITY);
    f.add_first = fe != NULL && fe->add_first;
    return f;
}

GRAPHOPT_INLINE bvec finish(bvec v, const finisher* f, const float* r) {
    if (r && f->add_first) v = BV_ADD(v, BV_LOAD(r));
    if (f->clamp) v = BV_CLAMP(v, f->lo, f->hi);
    if (r && !f->add_first) v = BV_ADD(v, BV_LOAD(r));
    return v;
}

/* SiLU in place, x / (1 + e^-x) as the NCHW epilogues compute it (exprs.py Swish), on `rows`
 * runs of `n` floats `stride` apart that the kernel has just stored (still in L1): a plain
 * loop over the inline graphopt_expf, which the compiler vectorizes. Not inlined into the
 * register tiles: its constants would take the registers of their FMA loops. */
static void silu_rows(const graphopt_nchwc_epi* fe, float* y, int64_t stride, int64_t rows,
                      int64_t n) {
    if (!fe || !fe->silu) return;
    for (int64_t i = 0; i < rows; ++i) {
        float* p = y + i * stride;
        for (int64_t j = 0; j < n; ++j) p[j] = p[j] / (1.0f + graphopt_expf(-p[j]));
    }
}

static bvec bias_block(const graphopt_nchwc_epi* fe, int64_t block) {
    return fe && fe->bias ? BV_LOAD(fe->bias + block * B) : BV_ZERO();
}

/* Split n items into `parts` near-equal contiguous parts: the first item of part i. Pixel
 * chunks and register tiles are split so, not as full ones plus a remainder: a 49-pixel plane
 * is 2 chunks of 25 and 24 (not 48 and 1, which left one thread idle) and 5- and 6-pixel
 * tiles (not a 1-pixel tile that runs the whole weight panel for 2 accumulators). */
static int64_t even_split(int64_t n, int64_t parts, int64_t i) {
    return n / parts * i + (i < n % parts ? i : n % parts);
}

/* NCHWC_FOR(n, worth, body...) runs `body` once per part of the iterations 0..n, with
 * `begin` and `end` the part's range. Parallel loops hand out NCHWC_PARTS near-equal dynamic
 * parts, as the GEMM and Winograd kernels do: a thread the OS holds back (2 cores shared with
 * other processes) then delays a call by one part, not by its static half of the work; 16
 * parts keep the imbalance under 1/16 with one atomic increment each. A loop the grain rule
 * keeps serial (`worth` false), or one run with one thread, never enters OpenMP: opening a
 * team costs 1-2 us even when its if() clause is false, more than a small kernel's whole
 * work (digits_cnn's 8x8 planes). */
#ifdef _OPENMP
#define NCHWC_PARTS 16
#define NCHWC_FOR(n, worth, ...)                                                   \
    do {                                                                           \
        const int64_t n_ = (n);                                                    \
        if ((worth) && n_ > 1 && omp_get_max_threads() > 1) {                      \
            const int64_t parts_ = n_ < NCHWC_PARTS ? n_ : NCHWC_PARTS;            \
            _Pragma("omp parallel for schedule(dynamic, 1)")                       \
            for (int64_t part_ = 0; part_ < parts_; ++part_) {                     \
                const int64_t begin = even_split(n_, parts_, part_);               \
                const int64_t end = even_split(n_, parts_, part_ + 1);             \
                __VA_ARGS__                                                        \
            }                                                                      \
        } else {                                                                   \
            const int64_t begin = 0, end = n_;                                     \
            __VA_ARGS__                                                            \
        }                                                                          \
    } while (0)
#else
#define NCHWC_FOR(n, worth, ...)                                                   \
    do {                                                                           \
        const int64_t begin = 0, end = (n);                                        \
        __VA_ARGS__                                                                \
    } while (0)
#endif

#if defined(__GNUC__)
#define PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#else
#define PREFETCH_L2(p) ((void)0)
#endif

/* [lo, hi): the output columns whose whole window row lies inside the input row. */
static void inside_columns(const graphopt_conv2d_shape* s, int64_t* lo, int64_t* hi) {
    const int64_t last_tap = s->width - 1 - (s->kernel_w - 1) * s->dilation_w + s->pad_left;
    int64_t first = (s->pad_left + s->stride_w - 1) / s->stride_w;
    int64_t end = last_tap >= 0 ? last_tap / s->stride_w + 1 : 0;
    if (end > s->out_width) end = s->out_width;
    if (first > end) first = end;
    *lo = first;
    *hi = end;
}

/* ---- layout conversions ------------------------------------------------------------------ */

/* Each block of B planes of one image <-> its plane of B-float pixels (to_blocked: NCHW in).
 * `channels` is the NCHW side's count: with C % B != 0 the last block of each image has
 * C % B real lanes, and ToBlocked writes zeros into its pad lanes (what every blocked kernel
 * relies on: graphopt/backend/layouts.py keeps them zero), FromBlocked drops them. */
static void reorder(const float* X, float* Y, int64_t n, int64_t channels, int64_t plane,
                    int to_blocked) {
    const int64_t per_image = (channels + B - 1) / B;
    const int64_t blocks = n * per_image;
    NCHWC_FOR(blocks, GRAPHOPT_WORTH_THREADS(0, 8 * blocks * plane * B),
        for (int64_t q = begin; q < end; ++q) {
            const int64_t first = (q % per_image) * B;
            const int lanes = (int)(channels - first < B ? channels - first : B);
            const int64_t nchw = ((q / per_image) * channels + first) * plane;
            if (to_blocked) {
                const float* x = X + nchw;
                float* restrict y = Y + q * B * plane;
                if (lanes == B) {
                    for (int64_t p = 0; p < plane; ++p)
                        for (int l = 0; l < B; ++l) y[p * B + l] = x[l * plane + p];
                } else {
                    for (int64_t p = 0; p < plane; ++p)
                        for (int l = 0; l < B; ++l)
                            y[p * B + l] = l < lanes ? x[l * plane + p] : 0.0f;
                }
            } else {
                const float* x = X + q * B * plane;
                float* restrict y = Y + nchw;
                for (int l = 0; l < lanes; ++l)
                    for (int64_t p = 0; p < plane; ++p) y[l * plane + p] = x[p * B + l];
            }
        });
}

void graphopt_nchw_to_nchwc(const float* X, float* Y, int64_t n, int64_t channels,
                            int64_t plane) {
    reorder(X, Y, n, channels, plane, 1);
}

void graphopt_nchwc_to_nchw(const float* X, float* Y, int64_t n, int64_t channels,
                            int64_t plane) {
    reorder(X, Y, n, channels, plane, 0);
}

/* ---- depthwise 3x3 ----------------------------------------------------------------------- */

/* One output pixel whose window may cross the border: only the taps inside the image. */
static bvec dw_border(const float* x, const bvec* w, bvec acc, int64_t iy0, int64_t ix0,
                      int64_t height, int64_t width) {
    for (int ky = 0; ky < 3; ++ky) {
        const int64_t iy = iy0 + ky;
        if (iy < 0 || iy >= height) continue;
        for (int kx = 0; kx < 3; ++kx) {
            const int64_t ix = ix0 + kx;
            if (ix >= 0 && ix < width)
                acc = BV_FMA(acc, BV_LOAD(x + (iy * width + ix) * B), w[ky * 3 + kx]);
        }
    }
    return acc;
}

#define DW_PIXELS 6 /* interior pixels per group: 6 accumulators + 9 weights in registers */

/* Keep a loaded vector in a register: GCC otherwise turns each of its uses back into a memory
 * operand of the FMA, one load per tap instead of one per pixel (with it the stride-1
 * depthwise took 25% less time on Zen 4). */
#if defined(__GNUC__) && GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX512
#define DW_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define DW_IN_REGISTER(v) ((void)0)
#endif

/* `count` consecutive output pixels whose window columns are all inside, the first window at
 * input pixel `origin`, consecutive pixels `step` (1 or 2, a constant after inlining, so
 * windows sharing an input load it once) input pixels apart: independent FMA chains over the
 * window rows [ky0, ky1) (all 3 but on the top and bottom borders). */
GRAPHOPT_INLINE void dw_interior(const int count, const int step, const float* x,
                                 const bvec* w, bvec bias, int64_t origin, int64_t width,
                                 int ky0, int ky1, bvec* out) {
    bvec acc[DW_PIXELS];
#pragma GCC unroll 6
    for (int u = 0; u < count; ++u) acc[u] = bias;
#pragma GCC unroll 3
    for (int ky = 0; ky < 3; ++ky) {
        if (ky < ky0 || ky >= ky1) continue;
        /* each input pixel of the row loaded once, for all the taps that read it */
        const float* xr = x + (origin + ky * width) * B;
        bvec in[(DW_PIXELS - 1) * 2 + 3];
#pragma GCC unroll 13
        for (int i = 0; i < (count - 1) * step + 3; ++i) {
            in[i] = BV_LOAD(xr + i * B);
            DW_IN_REGISTER(in[i]);
        }
#pragma GCC unroll 3
        for (int kx = 0; kx < 3; ++kx) {
#pragma GCC unroll 6
            for (int u = 0; u < count; ++u)
                acc[u] = BV_FMA(acc[u], in[u * step + kx], w[ky * 3 + kx]);
        }
    }
#pragma GCC unroll 6
    for (int u = 0; u < count; ++u) out[u] = acc[u];
}

/* Output columns [ox, ox + count) of a row (dw_interior), finished and stored. */
GRAPHOPT_INLINE void dw_group(const int count, const int step, const float* x, const bvec* w,
                              bvec bias, int64_t origin, int64_t width, int ky0, int ky1,
                              int64_t ox, float* yr, const float* rr, const finisher* f) {
    bvec out[DW_PIXELS];
    dw_interior(count, step, x, w, bias, origin + ox * step, width, ky0, ky1, out);
#pragma GCC unroll 6
    for (int u = 0; u < count; ++u)
        BV_STORE(yr + (ox + u) * B, finish(out[u], f, rr ? rr + (ox + u) * B : NULL));
}

/* One output row's interior columns [ox, hi) with `step` a compile-time stride: groups of
 * DW_PIXELS, then one group of the rest (a 7x7 plane's 5 interior columns are one group,
 * not 5 single pixels). */
GRAPHOPT_INLINE void dw_row_interior(const int step, const float* x, const bvec* w, bvec bias,
                                     int64_t origin, int64_t width, int ky0, int ky1,
                                     int64_t ox, int64_t hi, float* yr, const float* rr,
                                     const finisher* f) {
    for (; ox + DW_PIXELS <= hi; ox += DW_PIXELS)
        dw_group(DW_PIXELS, step, x, w, bias, origin, width, ky0, ky1, ox, yr, rr, f);
#define DW_REST(n) \
    case n: dw_group(n, step, x, w, bias, origin, width, ky0, ky1, ox, yr, rr, f); break;
    switch (hi - ox) {
        DW_REST(1) DW_REST(2) DW_REST(3) DW_REST(4) DW_REST(5)
        default: break;
    }
#undef DW_REST
}

/* Output row oy of channel block cb. */
static void dw_row(const float* X, const float* W, float* Y, const graphopt_conv2d_shape* s,
                   const graphopt_nchwc_epi* fe, const graphopt_epilogue* epi,
                   const finisher* f, int64_t lo, int64_t hi, int64_t cb, int64_t oy) {
    const int64_t h = s->height, wd = s->width, oh = s->out_height, ow = s->out_width;
    const int64_t sw = s->stride_w, plane_out = oh * ow;
    const float* x = X + cb * h * wd * B;
    float* yr = Y + (cb * plane_out + oy * ow) * B;
    const float* rr = fe && fe->residual ? fe->residual + (cb * plane_out + oy * ow) * B : NULL;
    bvec w[9];
    for (int t = 0; t < 9; ++t) w[t] = BV_LOAD(W + (cb * 9 + t) * B);
    const bvec bias = bias_block(fe, cb);
    const int64_t iy0 = oy * s->stride_h - s->pad_top;
    /* the window rows inside the image: all 3 but on the top and bottom borders */
    const int ky0 = iy0 < 0 ? (int)(-iy0 < 3 ? -iy0 : 3) : 0;
    const int ky1 = h - iy0 < 3 ? (int)(h - iy0 > 0 ? h - iy0 : 0) : 3;
    int64_t ox = 0;
    if (ky0 < ky1) {
        for (; ox < lo; ++ox)
            BV_STORE(yr + ox * B, finish(dw_border(x, w, bias, iy0, ox * sw - s->pad_left, h, wd),
                                         f, rr ? rr + ox * B : NULL));
        const int64_t origin = iy0 * wd - s->pad_left;
        if (sw == 1)
            dw_row_interior(1, x, w, bias, origin, wd, ky0, ky1, ox, hi, yr, rr, f);
        else
            dw_row_interior(2, x, w, bias, origin, wd, ky0, ky1, ox, hi, yr, rr, f);
        ox = hi > ox ? hi : ox;
    }
    for (; ox < ow; ++ox)
        BV_STORE(yr + ox * B, finish(dw_border(x, w, bias, iy0, ox * sw - s->pad_left, h, wd), f,
                                     rr ? rr + ox * B : NULL));
    silu_rows(fe, yr, 0, 1, ow * B);
    if (epi) epi->fn(epi, yr, plane_out * B, cb, oy * ow * B, 1, ow * B);
}

/* Parallel over channel blocks x output rows (a row is one block's ow pixels: enough work per
 * iteration, and blocks x rows splits evenly between threads however few blocks there are),
 * from the grain rule's multiply-adds or bytes: a memory-bound kernel gains from a second
 * core sooner than the GEMM. */
void graphopt_nchwc_depthwise3x3(const float* X, const float* W, float* Y,
                                 const graphopt_conv2d_shape* s, const graphopt_nchwc_epi* fe,
                                 const graphopt_epilogue* epi) {
    const int64_t blocks = s->channels / B, oh = s->out_height;
    const int64_t plane_out = oh * s->out_width;
    int64_t lo, hi;
    inside_columns(s, &lo, &hi);
    const finisher f = make_finisher(fe);
    NCHWC_FOR(blocks * oh,
              GRAPHOPT_WORTH_THREADS(blocks * plane_out * 9 * B, 8 * blocks * plane_out * B),
        for (int64_t r = begin; r < end; ++r)
            dw_row(X, W, Y, s, fe, epi, &f, lo, hi, r / oh, r % oh););
}

/* ---- pointwise (1x1) --------------------------------------------------------------------- */

#define PW_PIXELS 6  /* pixels per register tile: 6 x 2 accumulators + 2 weights + 1 broadcast */
#define PW_CHUNK 48  /* pixels whose input slice stays in cache while every output block runs */
#define PW_KC 128    /* channels per pass: a pair's weights for one pass (KC x 2B) stay in L1 */

/* Store a register tile: `count` consecutive pixels of output blocks mb, mb + 1 (nb of them,
 * `plane_stride` floats apart), with the epilogue when `last` (a partial sum otherwise). */
GRAPHOPT_INLINE void tile_store(const int count, const int nb, bvec (*acc)[2], float* y,
                                int64_t plane_stride, int64_t mb, int last,
                                const graphopt_nchwc_epi* fe, const finisher* f,
                                const float* r) {
    for (int j = 0; j < nb; ++j) {
        float* yj = y + j * plane_stride;
        if (!last) {
#pragma GCC unroll 6
            for (int u = 0; u < count; ++u) BV_STORE(yj + u * B, acc[u][j]);
            continue;
        }
        const bvec bias = bias_block(fe, mb + j);
        const float* rj = r ? r + j * plane_stride : NULL;
#pragma GCC unroll 6
        for (int u = 0; u < count; ++u)
            BV_STORE(yj + u * B, finish(BV_ADD(acc[u][j], bias), f, rj ? rj + u * B : NULL));
    }
}

/* Output blocks [mb, mb + nb) (nb <= 2) of `count` pixels over the input channel blocks
 * [cb0, cb1): the register tile of the 1x1 convolution as a GEMM over the channels. x: pixel
 * p0 of input block 0; y: pixel p0 of output block mb. The first pass starts from zero, later
 * ones from y; the last applies the epilogue. */
GRAPHOPT_INLINE void pw_tile(const int count, const int nb, const float* x, const float* w,
                             float* y, int64_t channels, int64_t plane, int64_t mb, int64_t cb0,
                             int64_t cb1, int last, const graphopt_nchwc_epi* fe,
                             const finisher* f, const float* r) {
    bvec acc[PW_PIXELS][2];
#pragma GCC unroll 6
    for (int u = 0; u < count; ++u) {
        acc[u][0] = cb0 ? BV_LOAD(y + u * B) : BV_ZERO();
        acc[u][1] = cb0 && nb > 1 ? BV_LOAD(y + plane * B + u * B) : BV_ZERO();
    }
    const float* w1 = w + channels * B;
    for (int64_t cb = cb0; cb < cb1; ++cb) {
        const float* xc = x + cb * plane * B;
        const float* wc = w + cb * B * B;
        const float* wc1 = w1 + cb * B * B;
#pragma GCC unroll 16
        for (int l = 0; l < B; ++l) {
            const bvec a0 = BV_LOAD(wc + l * B);
            const bvec a1 = nb > 1 ? BV_LOAD(wc1 + l * B) : a0;
#pragma GCC unroll 6
            for (int u = 0; u < count; ++u) {
                const bvec xv = BV_SET1(xc[u * B + l]);
                acc[u][0] = BV_FMA(acc[u][0], xv, a0);
                if (nb > 1) acc[u][1] = BV_FMA(acc[u][1], xv, a1);
            }
        }
    }
    tile_store(count, nb, acc, y, plane * B, mb, last, fe, f, r);
}

/* pw_tile with `count` (<= PW_PIXELS) and nb known at compile time in each branch. */
static void pw_tile_any(int count, int nb, const float* x, const float* w, float* y,
                        int64_t channels, int64_t plane, int64_t mb, int64_t cb0, int64_t cb1,
                        int last, const graphopt_nchwc_epi* fe, const finisher* f,
                        const float* r) {
#define PW_CASE(n)                                                                            \
    case n:                                                                                   \
        if (nb > 1) pw_tile(n, 2, x, w, y, channels, plane, mb, cb0, cb1, last, fe, f, r);    \
        else pw_tile(n, 1, x, w, y, channels, plane, mb, cb0, cb1, last, fe, f, r);           \
        break;
    switch (count) {
        PW_CASE(1) PW_CASE(2) PW_CASE(3) PW_CASE(4) PW_CASE(5) PW_CASE(6)
        default: break;
    }
#undef PW_CASE
}

/* Weights above this many bytes do not stay in L2 from one run to the next: they come from
 * L3 or memory, one pair of output blocks after the other. */
#define PW_COLD_WEIGHTS (512 * 1024)

#define LINE_FLOATS (64 / (int64_t)sizeof(float))

/* Cache lines [first, first + count) of p, those before `end`, asked for into L2. */
static void prefetch_lines(const float* p, int64_t first, int64_t count, int64_t end) {
    const int64_t last = first + count < end ? first + count : end;
    for (int64_t i = first; i < last; ++i) PREFETCH_L2(p + i * LINE_FLOATS);
}

/* Output blocks 2q, 2q + 1 over pixel chunk `chunk` of `chunks`, every input channel. With
 * cold weights (whole weights above PW_COLD_WEIGHTS) each tile also asks for its share of the
 * next pair's weights, so they arrive while this pair computes: one core gets ~22 GB/s from
 * memory on one stream, and a stream the hardware prefetcher picks up late stalls the FMAs
 * (features.18 of mobilenet_v2: 1.6 MB of weights, 420 us in the model against 364 us hot). */
static void pw_item(const float* X, const float* W, float* Y, int64_t channels,
                    int64_t out_channels, int64_t plane, const graphopt_nchwc_epi* fe,
                    const graphopt_epilogue* epi, const finisher* f, int64_t chunks,
                    int64_t chunk, int64_t q) {
    const int64_t blocks = out_channels / B, in_blocks = channels / B, kc = PW_KC / B;
    const int64_t mb = 2 * q, nb = blocks - mb < 2 ? blocks - mb : 2;
    const int64_t first = even_split(plane, chunks, chunk);
    const int64_t size = even_split(plane, chunks, chunk + 1) - first;
    const int64_t tiles = (size + PW_PIXELS - 1) / PW_PIXELS;
    const int64_t next_blocks = blocks - mb - nb < 2 ? blocks - mb - nb : 2;
    const int cold = channels * out_channels * (int64_t)sizeof(float) > PW_COLD_WEIGHTS;
    const float* next = W + (mb + nb) * channels * B;
    const int64_t next_lines = cold ? (next_blocks * channels * B + LINE_FLOATS - 1) / LINE_FLOATS
                                    : 0;
    const int64_t calls = (in_blocks + kc - 1) / kc * tiles;
    const int64_t per_call = (next_lines + calls - 1) / calls;
    int64_t call = 0;
    for (int64_t cb0 = 0; cb0 < in_blocks; cb0 += kc) {
        const int64_t cb1 = cb0 + kc < in_blocks ? cb0 + kc : in_blocks;
        const int last = cb1 == in_blocks;
        for (int64_t t = 0; t < tiles; ++t, ++call) {
            if (next_lines) prefetch_lines(next, call * per_call, per_call, next_lines);
            const int64_t p0 = first + even_split(size, tiles, t);
            const int count = (int)(first + even_split(size, tiles, t + 1) - p0);
            const int64_t at = mb * plane * B + p0 * B;
            pw_tile_any(count, (int)nb, X + p0 * B, W + mb * channels * B, Y + at, channels,
                        plane, mb, cb0, cb1, last, fe, f,
                        fe && fe->residual ? fe->residual + at : NULL);
            if (last) silu_rows(fe, Y + at, plane * B, nb, (int64_t)count * B);
            if (last && epi) epi->fn(epi, Y + at, plane * B, mb, p0 * B, nb, (int64_t)count * B);
        }
    }
}

/* Parallel over chunk x pair iterations of equal work. */
void graphopt_nchwc_pointwise(const float* X, const float* W, float* Y, int64_t channels,
                              int64_t out_channels, int64_t plane,
                              const graphopt_nchwc_epi* fe, const graphopt_epilogue* epi) {
    const int64_t pairs = (out_channels / B + 1) / 2;
    const int64_t chunks = (plane + PW_CHUNK - 1) / PW_CHUNK;
    const finisher f = make_finisher(fe);
    NCHWC_FOR(chunks * pairs, GRAPHOPT_WORTH_THREADS(plane * channels * out_channels, 0),
        for (int64_t r = begin; r < end; ++r)
            pw_item(X, W, Y, channels, out_channels, plane, fe, epi, &f, chunks, r / pairs,
                    r % pairs););
}

/* ---- direct convolution (group 1, any window) -------------------------------------------- */

/* Zeros read in place of the taps that fall in the padding (a pixel is at most B floats). */
static const float pad_zeros[B];

/* `count` output pixels of one row, consecutive ones `stride` input columns apart: a register
 * tile of output blocks mb, mb + nb. With check = 0 every window lies inside the image; with
 * check = 1 (border tiles) rows outside are skipped and each pixel's columns outside read
 * zeros. The input comes in blocks of `blk` channels: 1 (NCHW) or B (NCHWc), a pixel being
 * blk floats. stride3 > 0: the window is 3x3 with dilation 1 and stride_w is stride3, known at
 * compile time, so the taps unroll and each input row's loads are constant offsets from one
 * pointer; on an NCHW input (one FMA pair per pixel and tap) the loop overhead and address
 * arithmetic of a runtime window otherwise cost as much as the FMAs (the stem ran at half the
 * pointwise rate). */
GRAPHOPT_INLINE void conv_tile(const int count, const int nb, const int check, const int blk,
                               const int stride3, const float* X, const float* w, float* y,
                               const graphopt_conv2d_shape* s, int64_t iy0, int64_t ix0,
                               int64_t plane_out, int64_t mb, const graphopt_nchwc_epi* fe,
                               const finisher* f, const float* r) {
    bvec acc[PW_PIXELS][2];
#pragma GCC unroll 6
    for (int u = 0; u < count; ++u) acc[u][0] = acc[u][1] = BV_ZERO();
    const int64_t kh = stride3 ? 3 : s->kernel_h, kw = stride3 ? 3 : s->kernel_w;
    const int64_t dh = stride3 ? 1 : s->dilation_h, dw = stride3 ? 1 : s->dilation_w;
    const int64_t taps = kh * kw;
    const int64_t plane_in = s->height * s->width;
    const int64_t step = (stride3 ? stride3 : s->stride_w) * blk;
    const float* w1 = w + s->channels * taps * B;
    for (int64_t cb = 0; cb < s->channels / blk; ++cb) {
        const float* xb = X + cb * plane_in * blk;
#pragma GCC unroll 3
        for (int64_t ky = 0; ky < kh; ++ky) {
            const int64_t iy = iy0 + ky * dh;
            if (check && (iy < 0 || iy >= s->height)) continue;
#pragma GCC unroll 3
            for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t ix = ix0 + kx * dw;
                const float* xp = check ? NULL : xb + (iy * s->width + ix) * blk;
                const float* px[PW_PIXELS];
                if (check) {
#pragma GCC unroll 6
                    for (int u = 0; u < count; ++u) {
                        const int64_t c = ix + u * s->stride_w;
                        px[u] = c >= 0 && c < s->width ? xb + (iy * s->width + c) * blk
                                                       : pad_zeros;
                    }
                }
                const int64_t at = (cb * blk * taps + ky * kw + kx) * B;
#pragma GCC unroll 16
                for (int l = 0; l < blk; ++l) {
                    const bvec a0 = BV_LOAD(w + at + l * taps * B);
                    const bvec a1 = nb > 1 ? BV_LOAD(w1 + at + l * taps * B) : a0;
#pragma GCC unroll 6
                    for (int u = 0; u < count; ++u) {
                        const bvec xv = BV_SET1(check ? px[u][l] : xp[u * step + l]);
                        acc[u][0] = BV_FMA(acc[u][0], xv, a0);
                        if (nb > 1) acc[u][1] = BV_FMA(acc[u][1], xv, a1);
                    }
                }
            }
        }
    }
    tile_store(count, nb, acc, y, plane_out * B, mb, 1, fe, f, r);
}

/* conv_tile with count, nb, check, blk and stride3 known at compile time in each branch; the
 * unrolled 3x3 window (stride 1 or 2) only for interior tiles on an NCHW input (a first
 * layer). */
#define CONV_TILE(n, m, check, blk, stride3) \
    conv_tile(n, m, check, blk, stride3, X, w, y, s, iy0, ix0, plane_out, mb, fe, f, r)
#define CONV_PAIR(n, check, blk, stride3)                                    \
    if (nb > 1) CONV_TILE(n, 2, check, blk, stride3);                        \
    else CONV_TILE(n, 1, check, blk, stride3);
#define CONV_CASE_BLOCKED(n)                                                 \
    case n:                                                                  \
        if (check) { CONV_PAIR(n, 1, B, 0) } else { CONV_PAIR(n, 0, B, 0) }  \
        break;
#define CONV_CASE_NCHW(n)                                                    \
    case n:                                                                  \
        if (check) { CONV_PAIR(n, 1, 1, 0) }                                 \
        else if (stride3 == 1) { CONV_PAIR(n, 0, 1, 1) }                     \
        else if (stride3 == 2) { CONV_PAIR(n, 0, 1, 2) }                     \
        else { CONV_PAIR(n, 0, 1, 0) }                                       \
        break;
#define CONV_DISPATCH(CASE)                                                  \
    switch (count) {                                                         \
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)                      \
        default: break;                                                      \
    }

static void conv_tile_any(int count, int nb, int check, int in_blocked, const float* X,
                          const float* w, float* y, const graphopt_conv2d_shape* s, int64_t iy0,
                          int64_t ix0, int64_t plane_out, int64_t mb,
                          const graphopt_nchwc_epi* fe, const finisher* f, const float* r) {
    const int window3 = s->kernel_h == 3 && s->kernel_w == 3 && s->dilation_h == 1 &&
                        s->dilation_w == 1;
    /* AVX-512 only: with AVX2's 16 registers the unrolled window spills (the stem took 20%
     * longer than with the loops) */
    const int stride3 = GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX512 && window3 && s->stride_w <= 2
                            ? (int)s->stride_w
                            : 0;
    if (in_blocked) {
        CONV_DISPATCH(CONV_CASE_BLOCKED)
    } else {
        CONV_DISPATCH(CONV_CASE_NCHW)
    }
}
#undef CONV_DISPATCH
#undef CONV_CASE_NCHW
#undef CONV_CASE_BLOCKED
#undef CONV_PAIR
#undef CONV_TILE

/* Output row oy of output blocks 2q, 2q + 1, split into near-equal tiles of at most
 * PW_PIXELS pixels (a 7-pixel row is 4 + 3, not 6 + 1), border tiles included; [lo, hi):
 * the output columns whose whole window row lies inside the input row. */
static void conv_row(const float* X, int in_blocked, const float* W, float* Y,
                     const graphopt_conv2d_shape* s, int64_t out_channels,
                     const graphopt_nchwc_epi* fe, const graphopt_epilogue* epi,
                     const finisher* f, int64_t lo, int64_t hi, int64_t q, int64_t oy) {
    const int64_t blocks = out_channels / B, mb = 2 * q, nb = blocks - mb < 2 ? blocks - mb : 2;
    const int64_t ow = s->out_width, plane_out = s->out_height * ow;
    const int64_t tiles = (ow + PW_PIXELS - 1) / PW_PIXELS;
    const int64_t iy0 = oy * s->stride_h - s->pad_top;
    const int rows_inside = iy0 >= 0 && iy0 + (s->kernel_h - 1) * s->dilation_h < s->height;
    const float* w = W + mb * s->channels * s->kernel_h * s->kernel_w * B;
    for (int64_t t = 0; t < tiles; ++t) {
        const int64_t ox = even_split(ow, tiles, t);
        const int count = (int)(even_split(ow, tiles, t + 1) - ox);
        const int inside = rows_inside && ox >= lo && ox + count <= hi;
        const int64_t at = mb * plane_out * B + (oy * ow + ox) * B;
        conv_tile_any(count, (int)nb, !inside, in_blocked, X, w, Y + at, s, iy0,
                      ox * s->stride_w - s->pad_left, plane_out, mb, fe, f,
                      fe && fe->residual ? fe->residual + at : NULL);
        silu_rows(fe, Y + at, plane_out * B, nb, (int64_t)count * B);
        if (epi)
            epi->fn(epi, Y + at, plane_out * B, mb, (oy * ow + ox) * B, nb, (int64_t)count * B);
    }
}

/* Parallel over output block pairs x output rows. */
void graphopt_nchwc_conv2d(const float* X, int in_blocked, const float* W, float* Y,
                           const graphopt_conv2d_shape* s, int64_t out_channels,
                           const graphopt_nchwc_epi* fe, const graphopt_epilogue* epi) {
    const int64_t pairs = (out_channels / B + 1) / 2;
    const int64_t oh = s->out_height, ow = s->out_width;
    int64_t lo, hi;
    inside_columns(s, &lo, &hi);
    const finisher f = make_finisher(fe);
    const int64_t macs = oh * ow * s->channels * s->kernel_h * s->kernel_w * out_channels;
    NCHWC_FOR(pairs * oh, GRAPHOPT_WORTH_THREADS(macs, 0),
        for (int64_t r = begin; r < end; ++r)
            conv_row(X, in_blocked, W, Y, s, out_channels, fe, epi, &f, lo, hi, r / oh, r % oh););
}

/* ---- max pooling ------------------------------------------------------------------------- */

/* One output pixel's window, taps outside the image skipped (`check`), or all inside: then
 * the first tap seeds the maximum and is taken again (max(v, v) is v, NaN included). */
GRAPHOPT_INLINE bvec pool_window(const int check, const float* x, const graphopt_conv2d_shape* s,
                                 int64_t iy0, int64_t ix0) {
    if (!check) {
        const float* p = x + (iy0 * s->width + ix0) * B;
        const int64_t row = s->dilation_h * s->width * B, col = s->dilation_w * B;
        bvec acc = BV_LOAD(p);
        for (int64_t ky = 0; ky < s->kernel_h; ++ky)
            for (int64_t kx = 0; kx < s->kernel_w; ++kx)
                acc = BV_MAX(BV_LOAD(p + ky * row + kx * col), acc);
        return acc;
    }
    bvec acc = BV_SET1(-INFINITY);
    int first = 1;
    for (int64_t ky = 0; ky < s->kernel_h; ++ky) {
        const int64_t iy = iy0 + ky * s->dilation_h;
        if (check && (iy < 0 || iy >= s->height)) continue;
        for (int64_t kx = 0; kx < s->kernel_w; ++kx) {
            const int64_t ix = ix0 + kx * s->dilation_w;
            if (check && (ix < 0 || ix >= s->width)) continue;
            const bvec v = BV_LOAD(x + (iy * s->width + ix) * B);
            acc = first ? v : BV_MAX(v, acc);
            first = 0;
        }
    }
    return acc;
}

/* Output row oy of block q: border pixels tap by tap, the interior [lo, hi) without checks. */
static void pool_row(const float* X, float* Y, const graphopt_conv2d_shape* s, int64_t lo,
                     int64_t hi, int64_t q, int64_t oy) {
    const int64_t ow = s->out_width, sw = s->stride_w;
    const float* x = X + q * s->height * s->width * B;
    float* y = Y + (q * s->out_height + oy) * ow * B;
    const int64_t iy0 = oy * s->stride_h - s->pad_top;
    const int rows_inside = iy0 >= 0 && iy0 + (s->kernel_h - 1) * s->dilation_h < s->height;
    int64_t ox = 0;
    if (rows_inside) {
        for (; ox < lo; ++ox)
            BV_STORE(y + ox * B, pool_window(1, x, s, iy0, ox * sw - s->pad_left));
        for (; ox < hi; ++ox)
            BV_STORE(y + ox * B, pool_window(0, x, s, iy0, ox * sw - s->pad_left));
    }
    for (; ox < ow; ++ox) BV_STORE(y + ox * B, pool_window(1, x, s, iy0, ox * sw - s->pad_left));
}

void graphopt_nchwc_maxpool(const float* X, float* Y, int64_t blocks,
                            const graphopt_conv2d_shape* s) {
    const int64_t h = s->height, wd = s->width, oh = s->out_height, ow = s->out_width;
    int64_t lo, hi;
    inside_columns(s, &lo, &hi);
    NCHWC_FOR(blocks * oh, GRAPHOPT_WORTH_THREADS(0, 4 * blocks * (h * wd + oh * ow) * B),
        for (int64_t r = begin; r < end; ++r) pool_row(X, Y, s, lo, hi, r / oh, r % oh););
}
