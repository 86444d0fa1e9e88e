/* A few vector macros over the GEMM micro-kernel family graphopt_config.h selects.
 *
 * vec_t holds GRAPHOPT_GEMM_VLEN floats. Each family checks that the compiler flags really
 * enable its instructions, so a config header that does not match the flags fails to compile
 * instead of running an illegal instruction.
 */
#ifndef GRAPHOPT_SIMD_H
#define GRAPHOPT_SIMD_H

#include "graphopt_config.h"

#if GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX512
#if !defined(__AVX512F__) || !defined(__FMA__)
#error "graphopt_config.h selects the AVX-512 GEMM kernels; the flags lack AVX-512F or FMA"
#endif
#include <immintrin.h>
typedef __m512 vec_t;
#define VEC_ZERO() _mm512_setzero_ps()
#define VEC_LOAD(p) _mm512_loadu_ps(p)
#define VEC_STORE(p, v) _mm512_storeu_ps((p), (v))
#define VEC_SET1(x) _mm512_set1_ps(x)
#define VEC_FMA(acc, a, b) _mm512_fmadd_ps((a), (b), (acc))
#define VEC_ADD(a, b) _mm512_add_ps((a), (b))

#elif GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_AVX2
#if !defined(__AVX2__) || !defined(__FMA__)
#error "graphopt_config.h selects the AVX2 GEMM kernels; the flags lack AVX2 or FMA"
#endif
#include <immintrin.h>
typedef __m256 vec_t;
#define VEC_ZERO() _mm256_setzero_ps()
#define VEC_LOAD(p) _mm256_loadu_ps(p)
#define VEC_STORE(p, v) _mm256_storeu_ps((p), (v))
#define VEC_SET1(x) _mm256_set1_ps(x)
#define VEC_FMA(acc, a, b) _mm256_fmadd_ps((a), (b), (acc))
#define VEC_ADD(a, b) _mm256_add_ps((a), (b))

#elif GRAPHOPT_GEMM_ISA == GRAPHOPT_ISA_NEON
#if !defined(__ARM_NEON)
#error "graphopt_config.h selects the NEON GEMM kernels; the flags lack NEON"
#endif
#include <arm_neon.h>
typedef float32x4_t vec_t;
#define VEC_ZERO() vdupq_n_f32(0.0f)
#define VEC_LOAD(p) vld1q_f32(p)
#define VEC_STORE(p, v) vst1q_f32((p), (v))
#define VEC_SET1(x) vdupq_n_f32(x)
#if defined(__aarch64__)
#define VEC_FMA(acc, a, b) vfmaq_f32((acc), (a), (b))
#else
#define VEC_FMA(acc, a, b) vmlaq_f32((acc), (a), (b))
#endif
#define VEC_ADD(a, b) vaddq_f32((a), (b))

#else /* scalar: plain C the compiler keeps in registers */
typedef float vec_t;
#define VEC_ZERO() 0.0f
#define VEC_LOAD(p) (*(p))
#define VEC_STORE(p, v) (*(p) = (v))
#define VEC_SET1(x) (x)
#define VEC_FMA(acc, a, b) ((acc) + (a) * (b))
#define VEC_ADD(a, b) ((a) + (b))
#endif

#if GRAPHOPT_GEMM_NR % GRAPHOPT_GEMM_VLEN != 0
#error "the GEMM tile width NR must be a multiple of the vector length"
#endif

#if defined(__GNUC__)
#define GRAPHOPT_INLINE static inline __attribute__((always_inline))
#else
#define GRAPHOPT_INLINE static inline
#endif

#endif
