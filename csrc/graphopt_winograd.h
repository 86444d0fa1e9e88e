/* Winograd F(4x4, 3x3) and F(2x2, 3x3) convolution (stride 1, dilation 1, one group): see
 * csrc/winograd.c.
 *
 * Y[m] = sum_c X[c] * W[m, c] computed per output tile (tile x tile, tile = 4 or 2) from an
 * alpha x alpha input tile d (alpha = tile + 2) as A^T [ sum_c (G W[m,c] G^T) . (B^T d_c B) ] A:
 * alpha^2 element-wise products summed over the channels, i.e. alpha^2 GEMMs
 * U[xi] (M x C) @ V[xi] (C x tiles), where U holds the weights transformed and packed at
 * compile time (graphopt/backend/c/ops/winograd.py).
 */
#ifndef GRAPHOPT_WINOGRAD_H
#define GRAPHOPT_WINOGRAD_H

#include <stdint.h>

#include "graphopt_kernels.h"

/* AVX-512 builds run Winograd on their own lane path (csrc/winograd.c): 16 tiles per vector
 * and a 16 x 16 tile GEMM, U packed in 16-row panels; other builds go through
 * graphopt_sgemm_ex's micro-kernel, U in its MR-row panels. ops/winograd.py `panel_rows`
 * mirrors this choice. */
#if GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX512
#define GRAPHOPT_WINOGRAD_LANES 16

/* The lane path's GEMM on its own: C (M x N, row stride ldc) = A @ B with A as 16-row panels
 * over all of K (Ap[(p*K + k)*16 + r] = A[p*16 + r, k]) and B as graphopt_sgemm_ex's NR-column
 * panels (Bp). Columns go 16 per register tile and the last <= 8 one by one, so N = 49 (a
 * 7x7 plane) costs 49 columns' work where the 32-column panels compute 64; threads share the
 * row panels, epi runs on each panel's rows once they are done. */
void graphopt_lane_sgemm(int64_t M, int64_t N, int64_t K, const float* Ap, const float* Bp,
                         float* C, int64_t ldc, const graphopt_epilogue* epi);
#endif

/* Scratch floats graphopt_winograd_conv2d needs for `out_channels` outputs of shape `s` with
 * tiles of `tile`: the transformed input (alpha^2 x C x tiles rounded up to NR, GEMM B panels)
 * and the alpha^2 GEMM products (alpha^2 x M x tiles). Python mirrors this in
 * ops/winograd.py. */
int64_t graphopt_winograd_scratch(const graphopt_conv2d_shape* s, int64_t out_channels,
                                  int tile);

/* One image: Y (M x OH x OW) = conv3x3(X (C x H x W), W), stride 1, dilation 1, pads from `s`,
 * by F(tile x tile, 3x3), tile 4 or 2. `U` holds the transformed weights as alpha^2 GEMM A
 * operands packed in MR-row panels, one after the other (each round_up(M, MR) * C floats).
 * epi (if not NULL) runs on each finished band of output rows, seen as rows [0, M) of the
 * [M, OH*OW] view (row_base added by it). */
void graphopt_winograd_conv2d(const float* X, const float* U, float* Y,
                              const graphopt_conv2d_shape* s, int64_t out_channels, int tile,
                              float* scratch, const graphopt_epilogue* epi);

#endif
