/* Kernels over the blocked layout NCHWc: channels in blocks of GRAPHOPT_NCHWC (one SIMD
 * register of floats), element (n, c, h, w) at ((n * C/B + c/B) * H*W + h*W + w) * B + c%B.
 *
 * A 1x1 convolution then reads B input channels of a pixel in one vector and a depthwise
 * convolution computes B channels of a pixel in one FMA, which plain NCHW cannot do on small
 * planes. A channel count C that is not a multiple of B is padded to whole blocks whose pad
 * lanes hold zeros: ToBlocked writes them, and the kernels keep them zero because layout
 * selection zero-pads the weights and bias (graphopt/backend/layouts.py); the kernels below
 * see the padded count.
 * B = GRAPHOPT_NCHWC of graphopt_config.h: the SIMD width of the GEMM family (4 on the scalar
 * path, where the lanes are plain C loops).
 */
#ifndef GRAPHOPT_NCHWC_H
#define GRAPHOPT_NCHWC_H

#include <stdint.h>

#include "graphopt_kernels.h"

#ifndef GRAPHOPT_NCHWC
#error "graphopt_config.h lacks GRAPHOPT_NCHWC (the block width, c/nchwc.py)"
#endif
#if GRAPHOPT_GEMM_VLEN > 1 && GRAPHOPT_NCHWC != GRAPHOPT_GEMM_VLEN
#error "the NCHWc block must be one vector of the GEMM family"
#endif

/* The fused epilogue the blocked kernels apply in registers: v = acc + bias[c]; then, in that
 * order, v += residual (when add_first), v = min(max(v, lo), hi), v += residual (when not
 * add_first). bias / residual may be NULL; residual has the output's (blocked) layout.
 * Relu is lo = 0, hi = inf; no clamp is lo = -inf, hi = inf. With silu, v = v * sigmoid(v)
 * follows, on each register tile right after it is stored (so after any residual). */
typedef struct {
    const float* bias;
    const float* residual;
    float lo, hi;
    int add_first;
    int silu;
} graphopt_nchwc_epi;

/* NCHW [n, C, plane] -> NCHWc [n, ceil(C/B), plane, B] (pad lanes zeroed), and back (pad
 * lanes dropped); `channels` is C, the NCHW side's count. */
void graphopt_nchw_to_nchwc(const float* X, float* Y, int64_t n, int64_t channels,
                            int64_t plane);
void graphopt_nchwc_to_nchw(const float* X, float* Y, int64_t n, int64_t channels,
                            int64_t plane);

/* Depthwise 3x3 convolution of one image (s->channels = all C, any stride and padding,
 * dilation 1): W packed as [C/B][9][B]; fe applied per output vector; epi (may be NULL) per
 * output row of a channel block: tiles of row cb of the view [C/B, OH*OW*B] (row_base added
 * by it). */
void graphopt_nchwc_depthwise3x3(const float* X, const float* W, float* Y,
                                 const graphopt_conv2d_shape* s, const graphopt_nchwc_epi* fe,
                                 const graphopt_epilogue* epi);

/* 1x1 stride-1 convolution of one image: Y[mb, p, :] = sum_c X[c/B, p, c%B] * W[mb, c, :]
 * with W packed as [M/B][C][B]; fe and epi as above (epi on tiles of the view
 * [M/B, plane*B]). */
void graphopt_nchwc_pointwise(const float* X, const float* W, float* Y, int64_t channels,
                              int64_t out_channels, int64_t plane,
                              const graphopt_nchwc_epi* fe, const graphopt_epilogue* epi);

/* Direct convolution (group 1, any window, stride and dilation) of one image into NCHWc:
 * X in NCHW (in_blocked 0, any channel count) or NCHWc (1); W packed as [M/B][C][KH][KW][B];
 * fe and epi as above. A first layer (3 input channels) reads the model's NCHW input as is. */
void graphopt_nchwc_conv2d(const float* X, int in_blocked, const float* W, float* Y,
                           const graphopt_conv2d_shape* s, int64_t out_channels,
                           const graphopt_nchwc_epi* fe, const graphopt_epilogue* epi);

/* Max pooling of `blocks` blocked planes (n * C/B) over s's window (s->channels unused); a
 * window with no tap inside gives -inf. */
void graphopt_nchwc_maxpool(const float* X, float* Y, int64_t blocks,
                            const graphopt_conv2d_shape* s);

#endif
