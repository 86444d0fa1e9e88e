/* Convolution of small output planes from a zero-padded copy of the input: im2col by
 * gathering, or a direct kernel with output channels in registers. See csrc/im2col_gather.c. */
#ifndef GRAPHOPT_IM2COL_GATHER_H
#define GRAPHOPT_IM2COL_GATHER_H

#include <stdint.h>

#include "graphopt_kernels.h"

/* Scratch bytes graphopt_im2col_gather needs for shape `s`: the zero-padded input planes
 * (floats) and one input offset per output column of the packed panels (int32_t). Python
 * mirrors this in graphopt/backend/c/ops/im2col_gather.py. */
int64_t graphopt_im2col_gather_scratch(const graphopt_conv2d_shape* s);

/* The same B panels as graphopt_im2col_packed (NR-column panels over K = channels*kh*kw, zero
 * columns padding oh*ow), built by copying X once into zero-padded planes and then gathering
 * every panel row through a table of offsets: no bounds checks and no short runs, which is
 * what costs graphopt_im2col_packed its time when output rows are shorter than a panel. */
void graphopt_im2col_gather(const float* X, const graphopt_conv2d_shape* s, float* panels,
                            void* work);

/* Scratch bytes of graphopt_conv_direct: the zero-padded input planes (floats), one offset
 * per tap and one per output pixel rounded up to a whole tile (int32_t). Python mirrors this
 * in graphopt/backend/c/ops/im2col_gather.py. */
int64_t graphopt_conv_direct_scratch(const graphopt_conv2d_shape* s);

/* Y (out_channels x OH*OW, one image and group) = conv(X) + bias (NULL: none), clamped to
 * [lo, hi] (a fused Relu/Clip; -inf, inf for none), then epi over that [out_channels, OH*OW]
 * view. Wp holds the weights [M, C, KH, KW] as blocks of
 * 2 * GRAPHOPT_GEMM_VLEN output channels: Wp[(b * C*KH*KW + k) * block + i] = W[b * block + i,
 * k], zeros past M. `work` holds graphopt_conv_direct_scratch(s) bytes. */
void graphopt_conv_direct(const float* X, const float* Wp, const float* bias, float lo,
                          float hi, float* Y, const graphopt_conv2d_shape* s,
                          int64_t out_channels, void* work, const graphopt_epilogue* epi);

#endif
