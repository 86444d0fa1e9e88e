/* im2col for small output planes by gathering from a zero-padded copy: see
 * csrc/im2col_gather.c. */
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

#endif
