/* Convolution helpers: im2col (convolution as GEMM) and a direct depthwise kernel.
 *
 * Both split each output row into the part whose taps fall inside the image and the padded
 * borders, so the inner loops carry no bounds checks and vectorize for stride 1.
 */
#include <string.h>

#include "graphopt_kernels.h"

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

void graphopt_im2col(const float* X, const graphopt_conv2d_shape* s, float* cols) {
    const int64_t oh = s->out_height, ow = s->out_width, plane = oh * ow;
    const int64_t rows = s->channels * s->kernel_h * s->kernel_w;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * plane >= (1 << 17))
#endif
    for (int64_t row = 0; row < rows; ++row) {
        const int64_t kx = row % s->kernel_w, ky = (row / s->kernel_w) % s->kernel_h;
        const int64_t c = row / (s->kernel_w * s->kernel_h);
        const float* x = X + c * s->height * s->width;
        float* out = cols + row * plane;
        const int64_t y_off = ky * s->dilation_h - s->pad_top;
        const int64_t x_off = kx * s->dilation_w - s->pad_left;
        int64_t x_lo, x_hi;
        valid_range(ow, s->stride_w, x_off, s->width, &x_lo, &x_hi);
        for (int64_t oy = 0; oy < oh; ++oy) {
            float* o = out + oy * ow;
            const int64_t iy = oy * s->stride_h + y_off;
            if (iy < 0 || iy >= s->height) {
                memset(o, 0, (size_t)ow * sizeof(float));
                continue;
            }
            const float* xr = x + iy * s->width;
            for (int64_t ox = 0; ox < x_lo; ++ox) o[ox] = 0.0f;
            if (s->stride_w == 1)
                for (int64_t ox = x_lo; ox < x_hi; ++ox) o[ox] = xr[ox + x_off];
            else
                for (int64_t ox = x_lo; ox < x_hi; ++ox) o[ox] = xr[ox * s->stride_w + x_off];
            for (int64_t ox = x_hi; ox < ow; ++ox) o[ox] = 0.0f;
        }
    }
}

void graphopt_depthwise_conv2d(const float* X, const float* W, float* Y,
                               const graphopt_conv2d_shape* s, const graphopt_epilogue* epi) {
    const int64_t oh = s->out_height, ow = s->out_width, plane = oh * ow;
    const int64_t kh = s->kernel_h, kw = s->kernel_w;
    int64_t ox_lo[kw], ox_hi[kw]; /* valid output columns per kernel column (C99 VLA) */
    for (int64_t kx = 0; kx < kw; ++kx)
        valid_range(ow, s->stride_w, kx * s->dilation_w - s->pad_left, s->width, &ox_lo[kx],
                    &ox_hi[kx]);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (s->channels * plane * kh * kw >= (1 << 18))
#endif
    for (int64_t c = 0; c < s->channels; ++c) {
        const float* x = X + c * s->height * s->width;
        const float* w = W + c * kh * kw;
        float* y = Y + c * plane;
        /* one output row at a time, all taps accumulated while the row sits in L1 */
        for (int64_t oy = 0; oy < oh; ++oy) {
            float* restrict yr = y + oy * ow;
            for (int64_t ox = 0; ox < ow; ++ox) yr[ox] = 0.0f;
            for (int64_t ky = 0; ky < kh; ++ky) {
                const int64_t iy = oy * s->stride_h + ky * s->dilation_h - s->pad_top;
                if (iy < 0 || iy >= s->height) continue;
                for (int64_t kx = 0; kx < kw; ++kx) {
                    const float wv = w[ky * kw + kx];
                    const int64_t x_off = kx * s->dilation_w - s->pad_left;
                    const int64_t lo = ox_lo[kx], hi = ox_hi[kx];
                    const float* restrict xr = x + iy * s->width;
                    if (s->stride_w == 1)
                        for (int64_t ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox + x_off];
                    else
                        for (int64_t ox = lo; ox < hi; ++ox)
                            yr[ox] += wv * xr[ox * s->stride_w + x_off];
                }
            }
        }
        if (epi) epi->fn(epi, y, plane, c, 0, 1, plane);
    }
}
