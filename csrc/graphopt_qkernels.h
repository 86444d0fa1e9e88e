/* Integer (INT8) kernels: u8 x s8 GEMM with int32 accumulation and a fused requantizing
 * epilogue, convolution on it (im2col packed block by block), depthwise convolution, pooling,
 * and the int8 elementwise ops whose rounding must match onnxruntime (QLinearAdd, requantizing
 * copy, average pooling). Implemented by csrc/q*.c (graphopt_qinternal.h: what they share).
 *
 * Arithmetic (graphopt/quantization/rounding.py is the definition; every path here gives the
 * same integers):
 *   acc   = bias'[r] + sum_k W[r,k] * X[k,c]            exact int32 (bias' = bias - x_zp*sum_k W)
 *   q     = clamp(rint(float(acc) * mult[r]) + y_zp, lo, hi)      round half to even, float32
 * lo/hi are the output type's range narrowed by a fused Relu/Clip. A fused residual add then
 * follows QLinearAdd: clamp(rint(fma(q, ratio_a, fma(b, ratio_b, fixed))), add_lo, add_hi).
 *
 * Packed layouts (K rounded up to a multiple of 4, zero weights in the padding):
 *   A (weights, s8, packed at compile time by graphopt/backend/c/ops/qlinear.py):
 *     Ap[((p * K4 + g) * QMR + r) * 4 + t] = W[p*QMR + r, 4*g + t]
 *   B (activations, u8, packed per call):
 *     Bp[((p * K4 + g) * QNR + c) * 4 + t] = X[4*g + t, p*QNR + c]
 * A micro-kernel's register tile is a whole number of these panels (graphopt_qinternal.h: 8 x 48
 * on AVX-512 VNNI, 4 x 16 elsewhere), so the layouts do not depend on the ISA.
 * The micro-kernel path is chosen from the compiler's macros: AVX-512 VNNI (vpdpbusd), AVX2
 * (vpmaddubsw when every weight is in [-64, 64] so its int16 pair sums cannot saturate,
 * else activations and weights widened to int16 for vpmaddwd), NEON (widened, vmlal), scalar.
 */
#ifndef GRAPHOPT_QKERNELS_H
#define GRAPHOPT_QKERNELS_H

#include <stdint.h>

#include "graphopt_config.h" /* GRAPHOPT_QMR x GRAPHOPT_QNR tiles (int8/packing.py's) */

enum { GRAPHOPT_Q_U8 = 0, GRAPHOPT_Q_S8 = 1, GRAPHOPT_Q_F32 = 2 };

/* What the GEMM does with each int32 accumulator (see the header comment). */
typedef struct {
    const int32_t* bias;  /* per row, zero-point correction included; NULL: 0 */
    const float* mult;    /* per row: x_scale * w_scale[r] / y_scale (F32 out: x_scale*w_scale) */
    int32_t out_type;     /* GRAPHOPT_Q_U8 / _S8: requantize; _F32: store float(acc) * mult */
    int32_t zero_point;   /* output zero point */
    int32_t lo, hi;       /* output clamp (type range, narrowed by Relu/Clip) */
    int32_t narrow;       /* 1: every weight in [-64, 64] (AVX2 may use vpmaddubsw) */
    /* fused residual add (QLinearAdd of the requantized value and `add`); add == NULL: none */
    const void* add;
    int64_t add_rs, add_cs;
    float ratio_a, ratio_b, fixed;
    int32_t add_lo, add_hi;
} graphopt_qepilogue;

/* Bytes of packed B for a K x N operand. */
int64_t graphopt_qgemm_packed_b_bytes(int64_t K, int64_t N);

/* Pack B[k, n] = X[k*rs + n*cs] (u8; with flip, s8 data stored as u8 by x ^ 0x80). */
void graphopt_qgemm_pack_b(const uint8_t* X, int64_t rs, int64_t cs, int64_t K, int64_t N,
                           int flip, uint8_t* panels);

/* 2-D geometry of one image and group (same fields as graphopt_conv2d_shape). */
typedef struct {
    int64_t channels, height, width;
    int64_t out_height, out_width;
    int64_t kernel_h, kernel_w, stride_h, stride_w;
    int64_t pad_top, pad_left, dilation_h, dilation_w;
} graphopt_qconv_shape;

/* Work memory: the kernels below never allocate. `work` holds `slots` slots of the size the
 * *_work function gives (graphopt/backend/int8/packing.py computes the same), one per thread:
 * a call runs on at most `slots` threads (1 without OpenMP). `work` is 8-byte aligned. */
int64_t graphopt_qdepthwise_work(const graphopt_qconv_shape* s);

/* Bytes of work memory graphopt_qconv needs with `slots` slots (padded planes shared by the
 * threads, then a slot each). */
int64_t graphopt_qconv_work(const graphopt_qconv_shape* s, int slots);

/* Convolution of one image and group: Y (M x out_height*out_width, contiguous) =
 * epilogue(W * im2col(X)), W the M x (channels*kh*kw) weights packed as A panels, X u8 (or s8
 * with flip) planes; pad = the x zero point (as u8, after the flip). */
void graphopt_qconv(const uint8_t* X, const graphopt_qconv_shape* s, int64_t M,
                    const int8_t* Ap, uint8_t pad, int flip, const graphopt_qepilogue* e,
                    void* Y, void* work, int slots);

/* graphopt_qconv for a stride-1 window without dilation, as an implicit GEMM: K ordered
 * tap-outer, channel-group-inner (k = (ky * kw + kx) * 4 * ceil(channels / 4) + c, zero
 * weights for the channels past the last: int8/packing.py pack_implicit_a), B read straight
 * from padded planes of 4 interleaved channels. Work: graphopt_qconv_implicit_work. */
int64_t graphopt_qconv_implicit_work(const graphopt_qconv_shape* s, int slots);
void graphopt_qconv_implicit(const uint8_t* X, const graphopt_qconv_shape* s, int64_t M,
                             const int8_t* Ap, uint8_t pad, int flip,
                             const graphopt_qepilogue* e, void* Y, void* work, int slots);

/* C[r*rs + c*cs] = epilogue(acc[r, c]) for r < M, c < N: C is uint8_t, int8_t or float. */
void graphopt_qgemm(int64_t M, int64_t N, int64_t K, const int8_t* Ap, const uint8_t* Bp,
                    const graphopt_qepilogue* e, void* C, int64_t rs, int64_t cs);

/* Depthwise convolution of one image: channel c of X (u8, or s8 with flip) with W[c] (s8,
 * kh*kw), then the epilogue with row c; output planes contiguous. */
void graphopt_qdepthwise(const uint8_t* X, const int8_t* W, const graphopt_qconv_shape* s,
                         uint8_t pad, int flip, const graphopt_qepilogue* e, void* Y, void* work,
                         int slots);

/* MaxPool of one image's `channels` planes (u8, or s8 when is_signed), output planes
 * contiguous; the geometry's pads are the window's, the border never wins. */
int64_t graphopt_qmaxpool_work(const graphopt_qconv_shape* s);
void graphopt_qmaxpool(const uint8_t* X, const graphopt_qconv_shape* s, int is_signed,
                       uint8_t* Y, void* work, int slots);

/* QLinearAdd of n elements (u8 when is_signed == 0, else s8); b_step 0 broadcasts b[0]. */
void graphopt_qadd(const void* a, const void* b, int64_t b_step, int64_t n, int is_signed,
                   float ratio_a, float ratio_b, float fixed, int32_t lo, int32_t hi, void* y);

/* y = clamp(rint(((x - x_zp) * x_scale) / y_scale) + y_zp): DequantizeLinear then
 * QuantizeLinear (requantizing Concat inputs and pooling outputs). */
void graphopt_qrequant(const void* x, int64_t n, int x_signed, int32_t x_zp, float x_scale,
                       int y_signed, int32_t y_zp, float y_scale, void* y);

/* QLinearGlobalAveragePool over `channels` planes of `size` elements:
 * y = clamp(rint(float(sum - size * x_zp) * scale) + y_zp), scale = x_scale / y_scale / size. */
void graphopt_qglobal_avgpool(const void* x, int64_t channels, int64_t size, int is_signed,
                              int32_t x_zp, float scale, int32_t y_zp, void* y);

/* DequantizeLinear -> ReduceMean over the `size` elements of each of `rows` rows ->
 * QuantizeLinear, in onnxruntime's float arithmetic (its order of the row sums: qpool.c). */
void graphopt_qreduce_mean(const void* x, int64_t rows, int64_t size, int is_signed,
                           int32_t x_zp, float x_scale, int32_t y_zp, float y_scale, void* y);

/* Which micro-kernel this build uses: 0 scalar, 1 AVX2, 2 AVX-512 VNNI, 3 NEON. */
int graphopt_qgemm_isa(void);

#endif
