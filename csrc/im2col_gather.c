/* im2col into GEMM B panels for small output planes: pad once, then gather.
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
#include "graphopt_simd.h" /* GRAPHOPT_INLINE */

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
            float* restrict dst = padded + c * plane + (y + s->pad_top) * p.width + s->pad_left;
            const float* restrict src = X + (c * s->height + y) * s->width;
            for (int64_t x = 0; x < used; ++x) dst[x] = src[x]; /* a few floats: no memcpy call */
        }
    }
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
