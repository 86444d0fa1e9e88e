/* Small output planes, from one zero-padded copy of the input: im2col into GEMM B panels by
 * gathering (graphopt_im2col_gather), or a direct convolution with output channels in
 * registers (graphopt_conv_direct, below).
 *
 * graphopt_im2col_packed walks each im2col row in runs that end at a panel or output-row
 * boundary, checking the padding per run; when output rows are shorter than a panel (digits
 * and other small feature maps: 4 or 8 columns against NR = 16) the runs are a few floats
 * each and their bookkeeping costs more than the copy (about 2 ns per float here). Here the
 * input is first copied into planes wide enough that every window is inside (zeros around),
 * which makes im2col row (c, ky, kx) a fixed gather: column j reads
 * padded[c][oy*sh + ky*dh][ox*sw + kx*dw], j = oy*ow + ox, i.e. plane c's base plus
 * ky*dh*Wp + kx*dw plus an offset offsets[j] that depends on j alone. At stride 1 along x
 * with the output width dividing NR (digits_cnn's 8 and 4) a panel row is whole output rows,
 * copied as runs of ow floats (copy_output_rows): 3x faster than the float-by-float gather
 * (16 channels on 8x8: 4.8 -> 1.3 us; 32 on 4x4: 3.4 -> 1.0 us, minimum of 20000 calls).
 */
#include <string.h>

#include "graphopt_im2col_gather.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include "graphopt_simd.h" /* GRAPHOPT_INLINE, vec_t */

#define NR GRAPHOPT_GEMM_NR

typedef struct {
    int64_t height, width; /* padded plane: every window of every output inside */
} padded_plane;

static padded_plane padded_of(const graphopt_conv2d_shape* s) {
    padded_plane p;
    p.height = (s->out_height - 1) * s->stride_h + (s->kernel_h - 1) * s->dilation_h + 1;
    p.width = (s->out_width - 1) * s->stride_w + (s->kernel_w - 1) * s->dilation_w + 1;
    return p;
}

static int64_t columns_padded(const graphopt_conv2d_shape* s) {
    return (s->out_height * s->out_width + NR - 1) / NR * NR;
}

/* Stride 1 along x with NR a multiple of the output width `ow`: a panel row is NR / ow whole
 * output rows, each ow contiguous floats of one padded input row, so every im2col row is
 * copied as runs of ow floats instead of gathered float by float. Output rows past the last
 * (the padding columns of the last panel, discarded by the GEMM) are zeros. */
GRAPHOPT_INLINE void copy_output_rows(const int ow, const graphopt_conv2d_shape* s,
                                      const float* padded, padded_plane p, float* panels) {
    /* the geometry in locals: the stores below could alias *s, which would reload it */
    const int64_t channels = s->channels, kh = s->kernel_h, kw = s->kernel_w;
    const int64_t oh = s->out_height, row_step = s->stride_h * p.width;
    const int64_t dy = s->dilation_h * p.width, dx = s->dilation_w, plane = p.height * p.width;
    const int64_t panel_rows = NR / ow, panel_count = (oh + panel_rows - 1) / panel_rows;
    float* dst = panels; /* the panels in order: panel q, then im2col row, then column */
    for (int64_t q = 0; q < panel_count; ++q) {
        const int64_t live = oh - q * panel_rows < panel_rows ? oh - q * panel_rows : panel_rows;
        for (int64_t c = 0; c < channels; ++c)
            for (int64_t ky = 0; ky < kh; ++ky)
                for (int64_t kx = 0; kx < kw; ++kx, dst += NR) {
                    const float* src = padded + c * plane + ky * dy + kx * dx +
                                       q * panel_rows * row_step;
                    /* constant sizes: compilers emit vector moves, not calls */
                    int64_t t = 0;
                    for (; t < live; ++t, src += row_step)
                        memcpy(dst + t * ow, src, (size_t)ow * sizeof(float));
                    for (; t < panel_rows; ++t) memset(dst + t * ow, 0, (size_t)ow * sizeof(float));
                }
    }
}

int64_t graphopt_im2col_gather_scratch(const graphopt_conv2d_shape* s) {
    const padded_plane p = padded_of(s);
    return (int64_t)sizeof(float) * s->channels * p.height * p.width +
           (int64_t)sizeof(int32_t) * columns_padded(s);
}

/* X's planes into `padded` (p.height x p.width each, zeros around): every window of every
 * output is then inside. */
static void pad_planes(const float* X, const graphopt_conv2d_shape* s, padded_plane p,
                       float* padded) {
    const int64_t plane = p.height * p.width;
    memset(padded, 0, (size_t)(s->channels * plane) * sizeof(float));
    /* input columns [0, used) land inside the padded plane (the rest no window reads) */
    const int64_t used = p.width - s->pad_left < s->width ? p.width - s->pad_left : s->width;
    for (int64_t c = 0; c < s->channels; ++c) {
        for (int64_t y = 0; y < s->height && y + s->pad_top < p.height; ++y) {
            float* restrict dst = padded + c * plane + (y + s->pad_top) * p.width + s->pad_left;
            const float* restrict src = X + (c * s->height + y) * s->width;
            for (int64_t x = 0; x < used; ++x) dst[x] = src[x]; /* a few floats: no memcpy call */
        }
    }
}

void graphopt_im2col_gather(const float* X, const graphopt_conv2d_shape* s, float* panels,
                            void* work) {
    const padded_plane p = padded_of(s);
    const int64_t plane = p.height * p.width, columns = s->out_height * s->out_width;
    const int64_t kh = s->kernel_h, kw = s->kernel_w, rows = s->channels * kh * kw;
    const int64_t width = columns_padded(s);
    float* padded = (float*)work;
    int32_t* offsets = (int32_t*)(padded + s->channels * plane);
    pad_planes(X, s, p, padded);
    if (s->stride_w == 1 && NR % s->out_width == 0) {
        switch (s->out_width) { /* a constant length per case: the copies become vector moves */
            case 1: copy_output_rows(1, s, padded, p, panels); return;
            case 2: copy_output_rows(2, s, padded, p, panels); return;
            case 4: copy_output_rows(4, s, padded, p, panels); return;
            case 8: copy_output_rows(8, s, padded, p, panels); return;
            default: break;
        }
    }
    for (int64_t j = 0; j < width; ++j) { /* padding columns read offset 0 (discarded) */
        const int64_t oy = j / s->out_width, ox = j % s->out_width;
        offsets[j] = j < columns ? (int32_t)(oy * s->stride_h * p.width + ox * s->stride_w) : 0;
    }
    for (int64_t row = 0; row < rows; ++row) {
        const int64_t kx = row % kw, ky = (row / kw) % kh, c = row / (kw * kh);
        const float* base = padded + c * plane + ky * s->dilation_h * p.width + kx * s->dilation_w;
        for (int64_t q = 0; q < width; q += NR) {
            float* restrict dst = panels + ((q / NR) * rows + row) * NR;
            const int32_t* off = offsets + q;
#pragma GCC unroll 16
            for (int w = 0; w < NR; ++w) dst[w] = base[off[w]];
        }
    }
}

/* ---- Direct convolution of small planes ---------------------------------------------------
 * A tile of DIRECT_PIXELS output pixels by DIRECT_BLOCK output channels accumulates in
 * registers: vectors run over the output channels (the weights of one tap, packed at compile
 * time in the order the tile reads them), each pixel's input is one broadcast per tap, read
 * from the padded planes through a table of tap offsets and one of pixel offsets. No im2col
 * buffer and no GEMM packing; any stride, dilation and plane shape (a pixel tile may span
 * output rows). 6 pixels x 2 vectors = 12 accumulators + 2 weight vectors + 1 broadcast of
 * the 16 AVX2 registers; each tap is 8 loads for 12 FMAs. */
#define DIRECT_VECTORS 2
#define DIRECT_BLOCK (DIRECT_VECTORS * GRAPHOPT_GEMM_VLEN)
#define DIRECT_PIXELS 6

int64_t graphopt_conv_direct_scratch(const graphopt_conv2d_shape* s) {
    const padded_plane p = padded_of(s);
    return (int64_t)sizeof(float) * s->channels * p.height * p.width +
           (int64_t)sizeof(int32_t) * (s->channels * s->kernel_h * s->kernel_w +
                                       s->out_height * s->out_width);
}

#if GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX2
/* r[p] (pixel p's 8 channels) -> r[i] (channel i's 8 pixels). */
GRAPHOPT_INLINE void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* The first `count` (a constant, <= 8) floats of v to y. */
GRAPHOPT_INLINE void store_first(float* y, __m256 v, const int count) {
    __m128 part = _mm256_castps256_ps128(v);
    int rest = count;
    if (rest >= 4) {
        _mm_storeu_ps(y, part);
        part = _mm256_extractf128_ps(v, 1);
        y += 4;
        rest -= 4;
    }
    if (rest >= 2) {
        _mm_storel_pi((__m64*)y, part);
        part = _mm_movehl_ps(part, part);
        y += 2;
        rest -= 2;
    }
    if (rest) _mm_store_ss(y, part);
}
#endif

/* The tile's sums, clamped to [lo, hi] (NaN passes, as in the NCHW epilogues), from
 * pixels-by-channels registers to channels-by-pixels memory: Y[i * plane + p] for channels
 * i < m. AVX2 transposes 8 x 8 in registers; elsewhere the tile goes through L1. */
GRAPHOPT_INLINE void direct_store(const int count, vec_t acc[DIRECT_PIXELS][DIRECT_VECTORS],
                                  float lo, float hi, float* Y, int64_t plane, int64_t m) {
#if GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX2 && DIRECT_PIXELS <= 8
    const __m256 low = _mm256_set1_ps(lo), high = _mm256_set1_ps(hi);
#pragma GCC unroll 4
    for (int v = 0; v < DIRECT_VECTORS; ++v) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int p = 0; p < 8; ++p) /* max/min return their second operand on NaN */
            r[p] = p < count ? _mm256_min_ps(high, _mm256_max_ps(low, acc[p][v]))
                             : _mm256_setzero_ps();
        transpose8(r);
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
            if (v * 8 + i < m) store_first(Y + (v * 8 + i) * plane, r[i], count);
    }
#else
    float tile[DIRECT_PIXELS][DIRECT_BLOCK];
#pragma GCC unroll 8
    for (int p = 0; p < count; ++p)
#pragma GCC unroll 8
        for (int v = 0; v < DIRECT_VECTORS; ++v)
            VEC_STORE(tile[p] + v * GRAPHOPT_GEMM_VLEN, acc[p][v]);
    for (int64_t i = 0; i < m; ++i)
#pragma GCC unroll 8
        for (int p = 0; p < count; ++p) {
            const float t = tile[p][i];
            Y[i * plane + p] = t < lo ? lo : t > hi ? hi : t;
        }
#endif
}

/* One tile: the `count` pixels at padded-plane offsets pix[0 .. count) by the output
 * channels of weight block w (`depth` taps of DIRECT_BLOCK floats), channels [0, m) stored
 * to Y[i * plane + p]. `count` is a constant in each instance (direct_tile_of): a short last
 * tile computes only its own pixels. */
GRAPHOPT_INLINE void direct_tile(const int count, const float* padded, const int32_t* taps,
                                 int64_t depth, const int32_t* pix, const float* w,
                                 const float* bias, float lo, float hi, float* Y, int64_t plane,
                                 int64_t m) {
    vec_t acc[DIRECT_PIXELS][DIRECT_VECTORS];
    float first[DIRECT_BLOCK]; /* the bias of the block's channels (0 past m or without) */
    for (int i = 0; i < DIRECT_BLOCK; ++i) first[i] = bias && i < m ? bias[i] : 0.0f;
#pragma GCC unroll 8
    for (int v = 0; v < DIRECT_VECTORS; ++v) {
        const vec_t b = VEC_LOAD(first + v * GRAPHOPT_GEMM_VLEN);
#pragma GCC unroll 8
        for (int p = 0; p < count; ++p) acc[p][v] = b;
    }
    int32_t at[DIRECT_PIXELS];
#pragma GCC unroll 8
    for (int p = 0; p < count; ++p) at[p] = pix[p];
    for (int64_t k = 0; k < depth; ++k, w += DIRECT_BLOCK) {
        const float* x = padded + taps[k];
        vec_t wv[DIRECT_VECTORS];
#pragma GCC unroll 8
        for (int v = 0; v < DIRECT_VECTORS; ++v) wv[v] = VEC_LOAD(w + v * GRAPHOPT_GEMM_VLEN);
#pragma GCC unroll 8
        for (int p = 0; p < count; ++p) {
            const vec_t xv = VEC_SET1(x[at[p]]);
#pragma GCC unroll 8
            for (int v = 0; v < DIRECT_VECTORS; ++v) acc[p][v] = VEC_FMA(acc[p][v], xv, wv[v]);
        }
    }
    direct_store(count, acc, lo, hi, Y, plane, m);
}

/* direct_tile with its pixel count known at compile time. */
static void direct_tile_of(int64_t count, const float* padded, const int32_t* taps,
                           int64_t depth, const int32_t* pix, const float* w, const float* bias,
                           float lo, float hi, float* Y, int64_t plane, int64_t m) {
    switch (count) {
#define DIRECT_CASE(n) \
    case n: direct_tile(n, padded, taps, depth, pix, w, bias, lo, hi, Y, plane, m); return;
        DIRECT_CASE(1) DIRECT_CASE(2) DIRECT_CASE(3) DIRECT_CASE(4) DIRECT_CASE(5)
#undef DIRECT_CASE
        default:
            direct_tile(DIRECT_PIXELS, padded, taps, depth, pix, w, bias, lo, hi, Y, plane, m);
    }
}

/* What graphopt_conv_direct's tiles share: the padded planes, offset tables and operands. */
typedef struct {
    const float* padded;
    const int32_t *taps, *pix;
    const float *weights, *bias;
    float lo, hi;
    float* Y;
    int64_t depth, plane, out_channels, tiles;
} direct_range;

/* Tiles [q0, q1): tile q is pixel tile q % tiles of channel block q / tiles. The pixels are
 * shared out evenly (16 as 6 + 5 + 5, not 6 + 6 + 4): a tile of 4 pixels has 8 accumulators,
 * too few to hide the FMA latency (measured: 10% slower on 32 channels at 4x4). */
static void direct_tiles(const direct_range* r, int64_t q0, int64_t q1) {
    const int64_t base = r->plane / r->tiles, extra = r->plane % r->tiles;
    for (int64_t q = q0; q < q1; ++q) {
        const int64_t b = q / r->tiles, t = q - b * r->tiles, m0 = b * DIRECT_BLOCK;
        const int64_t j0 = t * base + (t < extra ? t : extra), rest = r->out_channels - m0;
        direct_tile_of(base + (t < extra), r->padded, r->taps, r->depth, r->pix + j0,
                       r->weights + b * r->depth * DIRECT_BLOCK, r->bias ? r->bias + m0 : NULL,
                       r->lo, r->hi, r->Y + m0 * r->plane + j0, r->plane,
                       rest < DIRECT_BLOCK ? rest : DIRECT_BLOCK);
    }
}

void graphopt_conv_direct(const float* X, const float* Wp, const float* bias, float lo,
                          float hi, float* Y, const graphopt_conv2d_shape* s,
                          int64_t out_channels, void* work, const graphopt_epilogue* epi) {
    const padded_plane p = padded_of(s);
    const int64_t planep = p.height * p.width, plane = s->out_height * s->out_width;
    const int64_t kh = s->kernel_h, kw = s->kernel_w, depth = s->channels * kh * kw;
    float* padded = (float*)work;
    int32_t* taps = (int32_t*)(padded + s->channels * planep);
    int32_t* pix = taps + depth;
    pad_planes(X, s, p, padded);
    /* nested loops, not k / kw and k % kw: 64-bit divisions cost ~10 cycles each, as much as
     * a small convolution's arithmetic */
    int32_t* tap = taps;
    for (int64_t c = 0; c < s->channels; ++c)
        for (int64_t ky = 0; ky < kh; ++ky)
            for (int64_t kx = 0; kx < kw; ++kx)
                *tap++ = (int32_t)(c * planep + ky * s->dilation_h * p.width + kx * s->dilation_w);
    int32_t* at = pix;
    for (int64_t oy = 0; oy < s->out_height; ++oy)
        for (int64_t ox = 0; ox < s->out_width; ++ox)
            *at++ = (int32_t)(oy * s->stride_h * p.width + ox * s->stride_w);
    const int64_t tiles = (plane + DIRECT_PIXELS - 1) / DIRECT_PIXELS;
    const int64_t blocks = (out_channels + DIRECT_BLOCK - 1) / DIRECT_BLOCK;
    direct_range range = {padded, taps, pix, Wp, bias, lo, hi, Y, depth, plane, out_channels,
                          tiles};
#ifdef _OPENMP
    /* a team is opened only when it pays: even an if(0) parallel region costs ~1 us */
    if (GRAPHOPT_WORTH_THREADS(out_channels * plane * depth, 0) && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(static)
        for (int64_t q = 0; q < blocks * tiles; ++q) direct_tiles(&range, q, q + 1);
    } else
#endif
        direct_tiles(&range, 0, blocks * tiles);
    if (epi) epi->fn(epi, Y, plane, 0, 0, out_channels, plane);
}
