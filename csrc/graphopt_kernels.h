/* Hand-written kernels that graphopt's generated C calls: GEMM, im2col, depthwise convolution.
 *
 * Plain C99. The native build compiles these with -O3 -march=native (and OpenMP when available);
 * the inner loops are written so the compiler vectorizes them for whatever ISA it targets.
 * GRAPHOPT_PORTABLE selects smaller register tiles suited to scalar/SSE-only machines.
 *
 * Epilogues: the heavy kernels call back into generated code on each finished output tile
 * (bias, activation, residual add...) while the tile is still in cache. The callback sees the
 * tile as rows [i0, i0+m) and columns [j0, j0+n) of the kernel's 2-D output view.
 */
#ifndef GRAPHOPT_KERNELS_H
#define GRAPHOPT_KERNELS_H

#include <stdint.h>

#define GRAPHOPT_MAX_EPILOGUE_OPERANDS 4

typedef struct graphopt_epilogue graphopt_epilogue;

/* Apply the epilogue to the tile C[0..m) x [0..n) (row stride ldc) whose top-left element is
 * (i0, j0) in the caller's output view. Must be thread-safe: tiles run in parallel. */
typedef void (*graphopt_epilogue_fn)(const graphopt_epilogue* self, float* C, int64_t ldc,
                                     int64_t i0, int64_t j0, int64_t m, int64_t n);

struct graphopt_epilogue {
    graphopt_epilogue_fn fn;
    const void* operands[GRAPHOPT_MAX_EPILOGUE_OPERANDS];
    int64_t row_base; /* added to i0 by the generated callback: batch/group offset of the call */
};

/* Scratch floats graphopt_sgemm needs for an M x N x K product (packed panels of A and B). */
int64_t graphopt_sgemm_scratch(int64_t M, int64_t N, int64_t K);

/* C[i*ldc + j] = sum_k A[i*rsa + k*csa] * B[k*rsb + j*csb], then epi (if not NULL) per tile.
 * `scratch` holds graphopt_sgemm_scratch(M, N, K) floats, 64-byte aligned. C must not alias
 * A or B. */
void graphopt_sgemm(int64_t M, int64_t N, int64_t K,
                    const float* A, int64_t rsa, int64_t csa,
                    const float* B, int64_t rsb, int64_t csb,
                    float* C, int64_t ldc, float* scratch, const graphopt_epilogue* epi);

/* 2-D convolution geometry (one image, one group). */
typedef struct {
    int64_t channels, height, width;       /* input planes of this group */
    int64_t out_height, out_width;
    int64_t kernel_h, kernel_w, stride_h, stride_w;
    int64_t pad_top, pad_left, dilation_h, dilation_w;
} graphopt_conv2d_shape;

/* cols[(c*kh*kw + ky*kw + kx) * (oh*ow) + oy*ow + ox] = X[c, oy*sh + ky*dh - pt, ox*sw + kx*dw - pl]
 * (0 outside the image): the B operand of convolution as a GEMM. */
void graphopt_im2col(const float* X, const graphopt_conv2d_shape* s, float* cols);

/* Depthwise convolution (one filter per channel, multiplier 1) of one image:
 * Y[c] = conv(X[c], W[c]); epi is called per channel plane as row c (row_base added by it). */
void graphopt_depthwise_conv2d(const float* X, const float* W, float* Y,
                               const graphopt_conv2d_shape* s, const graphopt_epilogue* epi);

/* Threads used by the parallel loops (no-op without OpenMP). */
void graphopt_set_num_threads(int n);
int graphopt_get_num_threads(void);

#endif
