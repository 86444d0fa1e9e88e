/* Convolution helpers: im2col straight into GEMM panels (convolution as GEMM) and a direct
 * depthwise kernel.
 *
 * Both split each output row into the part whose taps fall inside the image and the padded
 * borders, so the inner loops carry no bounds checks and vectorize for stride 1 (and, with
 * AVX2, stride 2).
 *
 * graphopt_conv2d_gemm runs im2col and the GEMM one block of output columns at a time, the
 * block's columns (about a quarter of L2) still in cache when its GEMM reads them; on
 * resnet18's 7x7 stride-2 stem (147-deep columns for 12544 outputs, 7.4 MB as a whole) this
 * cut the layer from 5.4 to 4.0 ms at 1 thread on the Zen 3 host. Where the weights are larger
 * than a block's columns, every block would read them through the cache again, so the whole
 * im2col is written first and the GEMM blocks its rows (resnet18's 3x3 stride-2 layers).
 */
#include "graphopt_kernels.h"
#include "graphopt_simd.h"
#ifdef __AVX2__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define TABLED_TAPS 16
#define BLOCKS_PER_THREAD 4 /* graphopt_conv2d_gemm: enough blocks to even out the threads */

/* First and one-past-last output index o in [0, out) with 0 <= o*stride + offset < size. */
static void valid_range(int64_t out, int64_t stride, int64_t offset, int64_t size,
                        int64_t* lo, int64_t* hi) {
    int64_t first = 0, last = out;
    if (offset < 0) first = (-offset + stride - 1) / stride;
    if (size - offset <= 0) {
        last = 0;
    } else {
        int64_t bound = (size - offset + stride - 1) / stride; /* o*stride + offset < size */
        if (bound < last) last = bound;
    }
    if (first > last) first = last;
    *lo = first;
    *hi = last;
}

/* o[t] = x[2 * t] for t < NR (stride-2 taps); `whole`: x[2 * NR - 1] may be read too. */
static void even_lanes(const float* x, int whole, float* restrict o) {
#if defined(__AVX2__) && GRAPHOPT_GEMM_NR % 8 == 0
    if (whole) { /* two loads and two shuffles per 8 lanes instead of 8 scalar copies */
        for (int t = 0; t < GRAPHOPT_GEMM_NR; t += 8) {
            const __m256 a = _mm256_loadu_ps(x + 2 * t), b = _mm256_loadu_ps(x + 2 * t + 8);
            const __m256 ab = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
            _mm256_storeu_ps(o + t, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                        _mm256_castps_pd(ab), _MM_SHUFFLE(3, 1, 2, 0))));
        }
        return;
    }
#else
    (void)whole;
#endif
    for (int t = 0; t < GRAPHOPT_GEMM_NR; ++t) o[t] = x[2 * t];
}

/* Write n consecutive im2col values of one output row, starting at output column ox, to o:
 * output column q reads input column q * stride + offset of the row xr, zero outside [lo, hi)
 * (the padding). xr[row_width - 1] is the row's last column. */
static void im2col_run(const float* xr, int64_t row_width, int64_t stride, int64_t offset,
                       int64_t ox, int64_t n, int64_t lo, int64_t hi, float* restrict o) {
    int64_t first = lo - ox, last = hi - ox; /* [first, last): inside the row */
    if (first < 0) first = 0;
    if (last > n) last = n;
    if (last < first) last = first;
    if (stride == 1 && first == 0 && last == GRAPHOPT_GEMM_NR) { /* a whole panel row */
#pragma GCC unroll 16
        for (int v = 0; v < GRAPHOPT_GEMM_NR; v += GRAPHOPT_GEMM_VLEN)
            VEC_STORE(o + v, VEC_LOAD(xr + ox + offset + v));
        return;
    }
    if (stride == 2 && first == 0 && last == GRAPHOPT_GEMM_NR) { /* a whole strided panel row */
        even_lanes(xr + 2 * ox + offset, 2 * (ox + GRAPHOPT_GEMM_NR) + offset <= row_width, o);
        return;
    }
    for (int64_t t = 0; t < first; ++t) o[t] = 0.0f;
    if (stride == 1)
        for (int64_t t = first; t < last; ++t) o[t] = xr[ox + t + offset];
    else
        for (int64_t t = first; t < last; ++t) o[t] = xr[(ox + t) * stride + offset];
    for (int64_t t = last; t < n; ++t) o[t] = 0.0f;
}

/* im2col row `row` (a channel and tap) over the output positions [j0, j1) (j0 a multiple of
 * NR): position j = oy*ow + ox goes to lane j % NR of panel (j - j0) / NR of `panels`, walked
 * in runs that end at a panel or output-row boundary; zero columns pad the last panel. */
static void im2col_row(const float* X, const graphopt_conv2d_shape* s, int64_t row, int64_t j0,
                       int64_t j1, float* panels) {
    const int64_t ow = s->out_width, kw = s->kernel_w, kh = s->kernel_h;
    const int64_t panel_size = s->channels * kh * kw * GRAPHOPT_GEMM_NR;
    const int64_t kx = row % kw, ky = (row / kw) % kh, c = row / (kw * kh);
    const float* x = X + c * s->height * s->width;
    const int64_t y_off = ky * s->dilation_h - s->pad_top;
    const int64_t x_off = kx * s->dilation_w - s->pad_left;
    int64_t lo, hi;
    valid_range(ow, s->stride_w, x_off, s->width, &lo, &hi);
    float* o = panels + row * GRAPHOPT_GEMM_NR;
    int64_t oy = j0 / ow, ox = j0 % ow, lane = 0;
    for (int64_t j = j0; j < j1;) {
        const int64_t iy = oy * s->stride_h + y_off;
        int64_t n = GRAPHOPT_GEMM_NR - lane;
        if (n > ow - ox) n = ow - ox;
        if (n > j1 - j) n = j1 - j;
        if (iy >= 0 && iy < s->height)
            im2col_run(x + iy * s->width, s->width, s->stride_w, x_off, ox, n, lo, hi, o + lane);
        else
            for (int64_t t = 0; t < n; ++t) o[lane + t] = 0.0f;
        j += n;
        lane += n;
        ox += n;
        if (ox == ow) {
            ox = 0;
            ++oy;
        }
        if (lane == GRAPHOPT_GEMM_NR) {
            lane = 0;
            o += panel_size;
        }
    }
    for (; lane > 0 && lane < GRAPHOPT_GEMM_NR; ++lane) o[lane] = 0.0f;
}

void graphopt_im2col_packed(const float* X, const graphopt_conv2d_shape* s, float* panels) {
    const int64_t rows = s->channels * s->kernel_h * s->kernel_w;
    const int64_t plane = s->out_height * s->out_width;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (GRAPHOPT_WORTH_THREADS(0, 8 * rows * plane))
#endif
    for (int64_t row = 0; row < rows; ++row) im2col_row(X, s, row, 0, plane, panels);
}

/* An epilogue seen through a column block: the block's tile (i0, j0) is (i0, j0 + col) of
 * the convolution's output view. */
typedef struct {
    graphopt_epilogue base; /* first: a pointer to it is a pointer to the whole */
    const graphopt_epilogue* inner;
    int64_t col;
} shifted_epilogue;

static void shifted_epilogue_fn(const graphopt_epilogue* self, float* C, int64_t ldc,
                                int64_t i0, int64_t j0, int64_t m, int64_t n) {
    const shifted_epilogue* e = (const shifted_epilogue*)self;
    e->inner->fn(e->inner, C, ldc, i0, j0 + e->col, m, n);
}

/* Column panels per block of graphopt_conv2d_gemm: its im2col columns fill about a quarter of
 * L2 (twice a KC x NR GEMM slice, which tiles.py sizes from L2), next to the packed weights. */
static int64_t block_panels(int64_t depth) {
    const int64_t panels = 2 * (int64_t)GRAPHOPT_GEMM_KC / depth;
    return panels < 1 ? 1 : panels;
}

/* Block [j0, j1) of graphopt_conv2d_gemm: its im2col into `panels`, then its GEMM. */
static void conv_block(const float* X, const float* Ap, float* Y,
                       const graphopt_conv2d_shape* s, int64_t out_channels, int64_t j0,
                       int64_t j1, float* panels, const graphopt_epilogue* epi) {
    const int64_t depth = s->channels * s->kernel_h * s->kernel_w;
    const int64_t plane = s->out_height * s->out_width;
    for (int64_t row = 0; row < depth; ++row) im2col_row(X, s, row, j0, j1, panels);
    shifted_epilogue shifted = {{shifted_epilogue_fn, {0}, 0}, epi, j0};
    graphopt_sgemm_ex(out_channels, j1 - j0, depth, NULL, 0, 0, Ap, NULL, 0, 0, panels, Y + j0,
                      plane, NULL, epi ? &shifted.base : NULL);
}

void graphopt_conv2d_gemm(const float* X, const float* Ap, float* Y,
                          const graphopt_conv2d_shape* s, int64_t out_channels, float* cols,
                          const graphopt_epilogue* epi) {
    const int64_t depth = s->channels * s->kernel_h * s->kernel_w;
    const int64_t plane = s->out_height * s->out_width;
    int64_t width = block_panels(depth) * GRAPHOPT_GEMM_NR;
    if (out_channels > width) {
        /* each block would stream all the weights through the cache again (more floats than
         * the block's columns): cheaper to write the whole im2col once and let the GEMM
         * block its rows */
        graphopt_im2col_packed(X, s, cols);
        graphopt_sgemm_ex(out_channels, plane, depth, NULL, 0, 0, Ap, NULL, 0, 0, cols, Y, plane,
                          NULL, epi);
        return;
    }
#ifdef _OPENMP
    const int64_t threads = omp_get_max_threads();
    if (threads > 1 && GRAPHOPT_WORTH_THREADS(out_channels * plane * depth, 0)) {
        /* blocks narrow enough for BLOCKS_PER_THREAD each, taken dynamically; each block's
         * GEMM runs on its thread (a nested region). A thread reuses one block of `cols`
         * (written and read in its own cache, not a fresh stretch of memory each time) where
         * there is room, else the block's own place in the whole layout. */
        const int64_t panels = (plane - 1) / (BLOCKS_PER_THREAD * threads * GRAPHOPT_GEMM_NR) + 1;
        if (panels * GRAPHOPT_GEMM_NR < width) width = panels * GRAPHOPT_GEMM_NR;
        const int64_t blocks = (plane + width - 1) / width;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t t = omp_get_thread_num(), j0 = b * width;
            float* own = (t + 1) * width <= plane ? cols + t * width * depth : cols + j0 * depth;
            conv_block(X, Ap, Y, s, out_channels, j0, j0 + width < plane ? j0 + width : plane,
                       own, epi);
        }
        return;
    }
#endif
    for (int64_t j0 = 0; j0 < plane; j0 += width)
        conv_block(X, Ap, Y, s, out_channels, j0, j0 + width < plane ? j0 + width : plane, cols,
                   epi);
}

/* One output element of a depthwise channel: the taps that fall inside the image. */
static float depthwise_point(const float* x, const float* w, const graphopt_conv2d_shape* s,
                             int64_t oy, int64_t ox) {
    float acc = 0.0f;
    for (int64_t ky = 0; ky < s->kernel_h; ++ky) {
        const int64_t iy = oy * s->stride_h + ky * s->dilation_h - s->pad_top;
        if (iy < 0 || iy >= s->height) continue;
        for (int64_t kx = 0; kx < s->kernel_w; ++kx) {
            const int64_t ix = ox * s->stride_w + kx * s->dilation_w - s->pad_left;
            if (ix >= 0 && ix < s->width) acc += w[ky * s->kernel_w + kx] * x[iy * s->width + ix];
        }
    }
    return acc;
}

/* The depthwise taps of kernel rows [ky_lo, ky_hi) around `origin`: tap (ky, kx) reads
 * x[origin + ky*dh*W + kx*dw] (+ the lane). `count` (1..DW_VECTORS) vectors of consecutive
 * outputs are summed in registers and stored to out; the caller guarantees every tap read is
 * inside the channel's plane. */
#define DW_VECTORS 4
GRAPHOPT_INLINE void depthwise_taps(const int count, const float* x, const float* w,
                                    const graphopt_conv2d_shape* s, int64_t origin,
                                    int64_t ky_lo, int64_t ky_hi, float* out) {
    vec_t acc[DW_VECTORS];
#pragma GCC unroll 4
    for (int u = 0; u < count; ++u) acc[u] = VEC_ZERO();
    for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
        const float* xr = x + (origin + ky * s->dilation_h * s->width);
        for (int64_t kx = 0; kx < s->kernel_w; ++kx) {
            const vec_t wv = VEC_SET1(w[ky * s->kernel_w + kx]);
            const float* xk = xr + kx * s->dilation_w;
#pragma GCC unroll 4
            for (int u = 0; u < count; ++u)
                acc[u] = VEC_FMA(acc[u], wv, VEC_LOAD(xk + u * GRAPHOPT_GEMM_VLEN));
        }
    }
#pragma GCC unroll 4
    for (int u = 0; u < count; ++u) VEC_STORE(out + u * GRAPHOPT_GEMM_VLEN, acc[u]);
}

/* depthwise_taps for one output (the scalar tail of a run). */
static float depthwise_tap_sum(const float* x, const float* w, const graphopt_conv2d_shape* s,
                               int64_t origin, int64_t ky_lo, int64_t ky_hi) {
    float acc = 0.0f;
    for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
        const float* xr = x + (origin + ky * s->dilation_h * s->width);
        for (int64_t kx = 0; kx < s->kernel_w; ++kx)
            acc += w[ky * s->kernel_w + kx] * xr[kx * s->dilation_w];
    }
    return acc;
}

/* Outputs out[0 .. n) whose taps (kernel rows [ky_lo, ky_hi)) are all inside the plane and
 * whose first tap is at `origin`, consecutive outputs reading consecutive inputs. */
static void depthwise_span(const float* x, const float* w, const graphopt_conv2d_shape* s,
                           int64_t origin, int64_t ky_lo, int64_t ky_hi, int64_t n, float* out) {
    const int64_t block = DW_VECTORS * GRAPHOPT_GEMM_VLEN;
    int64_t j = 0;
    for (; j + block <= n; j += block)
        depthwise_taps(DW_VECTORS, x, w, s, origin + j, ky_lo, ky_hi, out + j);
    for (; j + GRAPHOPT_GEMM_VLEN <= n; j += GRAPHOPT_GEMM_VLEN)
        depthwise_taps(1, x, w, s, origin + j, ky_lo, ky_hi, out + j);
    for (; j < n; ++j) out[j] = depthwise_tap_sum(x, w, s, origin + j, ky_lo, ky_hi);
}

/* One output row of a depthwise channel with stride_w == 1: the columns [lo, hi) (lo <= hi)
 * whose taps all fall inside the row as one span over the kernel rows inside the image, the
 * others (borders) one by one. */
static void depthwise_row_unit_stride(const float* x, const float* w,
                                      const graphopt_conv2d_shape* s, int64_t oy, int64_t lo,
                                      int64_t hi, float* yr) {
    const int64_t top = oy * s->stride_h - s->pad_top; /* input row of kernel row 0 */
    int64_t ky_lo = 0, ky_hi = s->kernel_h;
    while (ky_lo < ky_hi && top + ky_lo * s->dilation_h < 0) ++ky_lo;
    while (ky_hi > ky_lo && top + (ky_hi - 1) * s->dilation_h >= s->height) --ky_hi;
    for (int64_t ox = 0; ox < lo; ++ox) yr[ox] = depthwise_point(x, w, s, oy, ox);
    if (hi > lo)
        depthwise_span(x, w, s, top * s->width + lo - s->pad_left, ky_lo, ky_hi, hi - lo,
                       yr + lo);
    for (int64_t ox = hi; ox < s->out_width; ++ox)
        yr[ox] = depthwise_point(x, w, s, oy, ox);
}

/* The border columns (outside [lo, hi)) of an output row. */
static void depthwise_row_borders(const float* x, const float* w,
                                  const graphopt_conv2d_shape* s, int64_t oy, int64_t lo,
                                  int64_t hi, float* yr) {
    for (int64_t ox = 0; ox < lo; ++ox) yr[ox] = depthwise_point(x, w, s, oy, ox);
    for (int64_t ox = hi; ox < s->out_width; ++ox) yr[ox] = depthwise_point(x, w, s, oy, ox);
}

/* One output row of a depthwise channel, any stride: tap by tap over the valid columns. */
static void depthwise_row_strided(const float* x, const float* w,
                                  const graphopt_conv2d_shape* s, int64_t oy,
                                  const int64_t* ox_lo, const int64_t* ox_hi, float* restrict yr) {
    const int64_t ow = s->out_width, kw = s->kernel_w;
    for (int64_t ox = 0; ox < ow; ++ox) yr[ox] = 0.0f;
    for (int64_t ky = 0; ky < s->kernel_h; ++ky) {
        const int64_t iy = oy * s->stride_h + ky * s->dilation_h - s->pad_top;
        if (iy < 0 || iy >= s->height) continue;
        const float* restrict xr = x + iy * s->width;
        for (int64_t kx = 0; kx < kw; ++kx) {
            const float wv = w[ky * kw + kx];
            const int64_t x_off = kx * s->dilation_w - s->pad_left;
            int64_t lo, hi; /* output columns whose tap falls inside the row */
            if (kx < TABLED_TAPS) {
                lo = ox_lo[kx];
                hi = ox_hi[kx];
            } else {
                valid_range(ow, s->stride_w, x_off, s->width, &lo, &hi);
            }
            for (int64_t ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox * s->stride_w + x_off];
        }
    }
}

void graphopt_depthwise_conv2d(const float* X, const float* W, float* Y,
                               const graphopt_conv2d_shape* s, const graphopt_epilogue* epi) {
    const int64_t oh = s->out_height, ow = s->out_width, plane = oh * ow;
    const int64_t kh = s->kernel_h, kw = s->kernel_w;
    /* valid output columns per kernel column, for the first TABLED_TAPS kernel columns (wider
     * kernels compute the rest where they are used); their intersection [lo, hi) holds the
     * columns whose taps are all inside the row */
    int64_t ox_lo[TABLED_TAPS], ox_hi[TABLED_TAPS], lo = 0, hi = ow;
    for (int64_t kx = 0; kx < kw; ++kx) {
        int64_t first, last;
        valid_range(ow, s->stride_w, kx * s->dilation_w - s->pad_left, s->width, &first, &last);
        if (kx < TABLED_TAPS) {
            ox_lo[kx] = first;
            ox_hi[kx] = last;
        }
        if (first > lo) lo = first;
        if (last < hi) hi = last;
    }
    if (hi < lo) hi = lo;
    /* Unit strides with as many output as input columns: output j = oy*ow + ox reads input
     * j + (ky*dh - pt)*W + kx*dw - pl for every tap, so the rows whose kernel rows all fall
     * inside the image form one flat span (from their first to their last interior column)
     * computed like a 1-D convolution, whatever the row width; the border columns inside it
     * read neighbouring rows and are recomputed after. */
    int64_t flat_first = 0, flat_last = 0;
    if (s->stride_w == 1 && s->stride_h == 1 && ow == s->width && lo < hi) {
        flat_first = s->pad_top;
        flat_last = s->height + s->pad_top - (kh - 1) * s->dilation_h;
        if (flat_last > oh) flat_last = oh;
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) \
    if (GRAPHOPT_WORTH_THREADS(s->channels * plane * kh * kw, \
                               4 * s->channels * (s->height * s->width + plane)))
#endif
    for (int64_t c = 0; c < s->channels; ++c) {
        const float* x = X + c * s->height * s->width;
        const float* w = W + c * kh * kw;
        float* y = Y + c * plane;
        int64_t oy = 0;
        if (flat_first < flat_last) { /* rows [flat_first, flat_last) as one flat span */
            for (; oy < flat_first; ++oy)
                depthwise_row_unit_stride(x, w, s, oy, lo, hi, y + oy * ow);
            const int64_t first = flat_first * ow + lo, last = (flat_last - 1) * ow + hi;
            depthwise_span(x, w, s, first - s->pad_top * s->width - s->pad_left, 0, kh,
                           last - first, y + first);
            for (; oy < flat_last; ++oy)
                depthwise_row_borders(x, w, s, oy, lo, hi, y + oy * ow);
        }
        for (; oy < oh; ++oy) {
            if (s->stride_w == 1)
                depthwise_row_unit_stride(x, w, s, oy, lo, hi, y + oy * ow);
            else
                depthwise_row_strided(x, w, s, oy, ox_lo, ox_hi, y + oy * ow);
        }
        if (epi) epi->fn(epi, y, plane, c, 0, 1, plane);
    }
}
