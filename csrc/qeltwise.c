/* Elementwise int8 ops whose rounding must match onnxruntime: QLinearAdd and the requantizing
 * copy (DequantizeLinear then QuantizeLinear) of Concat inputs. */
#include "graphopt_qinternal.h"

#include <math.h>


#if QX86 && defined(__FMA__)
/* 8 u8 (or s8) elements as floats. */
static __m256 load8_ps(const void* p, int is_signed) {
    const __m128i raw = _mm_loadl_epi64((const __m128i*)p);
    return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(raw) : _mm256_cvtepu8_epi32(raw));
}
#endif

#if QISA == 2 && defined(__FMA__)
/* qadd_range's vector loop on AVX-512, 16 elements at a time (the same two fused
 * multiply-adds and clamp, so the same integers); returns where it stopped. */
static int64_t qadd_range512(const void* a, const void* b, int64_t b_step, int64_t from,
                             int64_t to, int is_signed, float ratio_a, float ratio_b, float fixed,
                             int32_t lo, int32_t hi, void* y) {
    const __m512 ra = _mm512_set1_ps(ratio_a), rb = _mm512_set1_ps(ratio_b);
    const __m512 fx = _mm512_set1_ps(fixed), flo = _mm512_set1_ps((float)lo);
    const __m512 fhi = _mm512_set1_ps((float)hi);
    const float b0 = (float)(is_signed ? ((const int8_t*)b)[0] : ((const uint8_t*)b)[0]);
    int64_t i = from;
    for (; i + 16 <= to; i += 16) {
        const __m128i ra8 = _mm_loadu_si128((const __m128i*)((const int8_t*)a + i));
        const __m128i rb8 = b_step ? _mm_loadu_si128((const __m128i*)((const int8_t*)b + i))
                                   : _mm_setzero_si128();
        const __m512i va = is_signed ? _mm512_cvtepi8_epi32(ra8) : _mm512_cvtepu8_epi32(ra8);
        const __m512i vb = is_signed ? _mm512_cvtepi8_epi32(rb8) : _mm512_cvtepu8_epi32(rb8);
        const __m512 fb = b_step ? _mm512_cvtepi32_ps(vb) : _mm512_set1_ps(b0);
        const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(va), ra, _mm512_fmadd_ps(fb, rb, fx));
        /* clamped to [lo, hi] first: the truncating narrowing is then exact */
        const __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, flo), fhi));
        _mm_storeu_si128((__m128i*)((int8_t*)y + i), _mm512_cvtepi32_epi8(q));
    }
    return i;
}
#endif

/* QLinearAdd of elements [from, to): graphopt_q_ladd() per element, 8 at a time where the
 * vector path has FMA (the same two single-rounding fused multiply-adds). */
static void qadd_range(const void* a, const void* b, int64_t b_step, int64_t from, int64_t to,
                       int is_signed, float ratio_a, float ratio_b, float fixed, int32_t lo,
                       int32_t hi, void* y) {
    int64_t i = from;
#if QISA == 2 && defined(__FMA__)
    i = qadd_range512(a, b, b_step, from, to, is_signed, ratio_a, ratio_b, fixed, lo, hi, y);
#endif
#if QX86 && defined(__FMA__)
    const __m256 ra = _mm256_set1_ps(ratio_a), rb = _mm256_set1_ps(ratio_b);
    const __m256 fx = _mm256_set1_ps(fixed), flo = _mm256_set1_ps((float)lo);
    const __m256 fhi = _mm256_set1_ps((float)hi);
    const int32_t b0 = is_signed ? ((const int8_t*)b)[0] : ((const uint8_t*)b)[0];
    for (; i + 8 <= to; i += 8) {
        const __m256 vb = b_step ? load8_ps((const int8_t*)b + i, is_signed)
                                 : _mm256_set1_ps((float)b0);
        const __m256 v = _mm256_fmadd_ps(load8_ps((const int8_t*)a + i, is_signed), ra,
                                         _mm256_fmadd_ps(vb, rb, fx));
        const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, flo), fhi));
        _mm_storel_epi64((__m128i*)((int8_t*)y + i), q_narrow16(q, q, !is_signed));
    }
#endif
    for (; i < to; ++i) {
        const int64_t j = i * b_step;
        const int32_t va = is_signed ? ((const int8_t*)a)[i] : ((const uint8_t*)a)[i];
        const int32_t vb = is_signed ? ((const int8_t*)b)[j] : ((const uint8_t*)b)[j];
        const int32_t q = graphopt_q_ladd(va, vb, ratio_a, ratio_b, fixed, lo, hi);
        if (is_signed)
            ((int8_t*)y)[i] = (int8_t)q;
        else
            ((uint8_t*)y)[i] = (uint8_t)q;
    }
}

void graphopt_qadd(const void* a, const void* b, int64_t b_step, int64_t n, int is_signed,
                   float ratio_a, float ratio_b, float fixed, int32_t lo, int32_t hi, void* y) {
#ifdef _OPENMP
    /* a parallel region only when shared: even one of a single thread costs libgomp ~1 us */
    if (GRAPHOPT_WORTH_THREADS(0, 3 * n) && omp_get_max_threads() > 1) {
        const int64_t block = 1 << 14, blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static)
        for (int64_t p = 0; p < blocks; ++p)
            qadd_range(a, b, b_step, p * block, p * block + block < n ? p * block + block : n,
                       is_signed, ratio_a, ratio_b, fixed, lo, hi, y);
        return;
    }
#endif
    qadd_range(a, b, b_step, 0, n, is_signed, ratio_a, ratio_b, fixed, lo, hi, y);
}

void graphopt_qrequant(const void* x, int64_t n, int x_signed, int32_t x_zp, float x_scale,
                       int y_signed, int32_t y_zp, float y_scale, void* y) {
    const int32_t lo = y_signed ? -128 : 0, hi = y_signed ? 127 : 255;
    for (int64_t i = 0; i < n; ++i) {
        const int32_t v = x_signed ? ((const int8_t*)x)[i] : ((const uint8_t*)x)[i];
        float f = (float)(v - x_zp) * x_scale;
        f = f / y_scale;
        const float flo = (float)(lo - y_zp), fhi = (float)(hi - y_zp);
        f = f < flo ? flo : (f > fhi ? fhi : f);
        const int32_t r = (int32_t)nearbyintf(f) + y_zp;
        if (y_signed)
            ((int8_t*)y)[i] = (int8_t)r;
        else
            ((uint8_t*)y)[i] = (uint8_t)r;
    }
}
