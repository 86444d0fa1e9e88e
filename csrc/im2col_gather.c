/* im2col into GEMM B panels for small output planes: pad once, then gather.
 *
 * graphopt_im2col_packed walks each im2col row in runs that end at a panel or output-row
 * boundary, checking the padding per run; when output rows are shorter than a panel (digits
 * and other small feature maps: 4 or 8 columns against NR = 16) the runs are a few floats
 * each and their bookkeeping costs more than the copy (about 2 ns per float here). Here the
 * input is first copied into planes wide enough that every window is inside (zeros around),
 * which makes im2col row (c, ky, kx) a fixed gather: column j reads
 * padded[c][oy*sh + ky*dh][ox*sw + kx*dw], j = oy*ow + ox, i.e. plane c's base plus
 * ky*dh*Wp + kx*dw plus an offset offsets[j] that depends on j alone.
 */
#include <string.h>

#include "graphopt_im2col_gather.h"

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

int64_t graphopt_im2col_gather_scratch(const graphopt_conv2d_shape* s) {
    const padded_plane p = padded_of(s);
    return (int64_t)sizeof(float) * s->channels * p.height * p.width +
           (int64_t)sizeof(int32_t) * columns_padded(s);
}

void graphopt_im2col_gather(const float* X, const graphopt_conv2d_shape* s, float* panels,
                            void* work) {
    const padded_plane p = padded_of(s);
    const int64_t plane = p.height * p.width, columns = s->out_height * s->out_width;
    const int64_t kh = s->kernel_h, kw = s->kernel_w, rows = s->channels * kh * kw;
    const int64_t width = columns_padded(s);
    float* padded = (float*)work;
    int32_t* offsets = (int32_t*)(padded + s->channels * plane);
    memset(padded, 0, (size_t)(s->channels * plane) * sizeof(float));
    /* input columns [0, used) land inside the padded plane (the rest no window reads) */
    const int64_t used = p.width - s->pad_left < s->width ? p.width - s->pad_left : s->width;
    for (int64_t c = 0; c < s->channels; ++c) {
        for (int64_t y = 0; y < s->height && y + s->pad_top < p.height; ++y) {
            if (used > 0)
                memcpy(padded + c * plane + (y + s->pad_top) * p.width + s->pad_left,
                       X + (c * s->height + y) * s->width, (size_t)used * sizeof(float));
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
