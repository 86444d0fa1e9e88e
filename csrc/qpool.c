/* Integer pooling: MaxPool of u8/s8 planes (compared as u8, s8 flipped) and
 * QLinearGlobalAveragePool (graphopt_qkernels.h). */
#include "graphopt_qinternal.h"

/* A slot of max pooling: the padded plane and its slack. */
int64_t graphopt_qmaxpool_work(const graphopt_qconv_shape* s) {
    return q_round_up(q_padded_h(s) * q_padded_w(s) + PLANE_SLACK, 64);
}

/* One output row: out[i] = x ^ max over the window of top[ky * dh * pw + kx * dw + i * sw].
 * The vector path keeps the maximum of 16 outputs in a register; a row of at least 16 ends
 * with an overlapping vector (it rewrites equal bytes) instead of a scalar tail. */
static void maxpool_row(const uint8_t* top, const graphopt_qconv_shape* s, int64_t pw,
                        uint8_t x, uint8_t* out) {
    const int64_t ow = s->out_width, sw = s->stride_w;
    const int64_t dy = s->dilation_h * pw, dx = s->dilation_w;
    int64_t i = 0;
#if QX86
    if (sw <= 2 && ow >= 16) {
        const __m128i flip = _mm_set1_epi8((char)x);
        for (int64_t next = 0; i < ow; next += 16) {
            i = next + 16 <= ow ? next : ow - 16;
            __m128i m = _mm_setzero_si128(); /* the least value: every window holds an input */
            for (int64_t ky = 0; ky < s->kernel_h; ++ky)
                for (int64_t kx = 0; kx < s->kernel_w; ++kx)
                    m = _mm_max_epu8(m, q_strided16(top + ky * dy + kx * dx + i * sw, sw));
            _mm_storeu_si128((__m128i*)(out + i), _mm_xor_si128(m, flip));
            i += 16;
        }
    }
#endif
    for (; i < ow; ++i) {
        uint8_t m = 0;
        for (int64_t ky = 0; ky < s->kernel_h; ++ky)
            for (int64_t kx = 0; kx < s->kernel_w; ++kx) {
                const uint8_t v = top[ky * dy + kx * dx + i * sw];
                m = v > m ? v : m;
            }
        out[i] = (uint8_t)(m ^ x);
    }
}

/* s8 data is compared as u8 after x ^ 0x80 (order preserving), so the border is 0 in either
 * case: the least value, never above a window's maximum (every window holds an input). */
void graphopt_qmaxpool(const uint8_t* X, const graphopt_qconv_shape* s, int is_signed,
                       uint8_t* Y, void* work, int slots) {
    const int64_t oh = s->out_height, ow = s->out_width, ph = q_padded_h(s), pw = q_padded_w(s);
    const int64_t plane = s->height * s->width, slot = graphopt_qmaxpool_work(s);
    const uint8_t x = is_signed ? 0x80 : 0;
    const int team = q_team_size(slots);
    const int parallel = GRAPHOPT_WORTH_THREADS(0, s->channels * (plane + oh * ow));
    /* 4 chunks a thread (see qdepthwise.c's dw_chunk) */
    const int64_t chunk = (s->channels + 4 * team - 1) / (4 * team);
    (void)chunk;
    (void)parallel;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* padded = q_slot_of(work, slot);
        int first = 1; /* this thread's plane has no border yet */
        memset(padded, 0, (size_t)slot); /* the slack read past the plane stays defined */
#ifdef _OPENMP
#pragma omp for schedule(dynamic, chunk)
#endif
        for (int64_t ch = 0; ch < s->channels; ++ch) {
            graphopt_q_pad_plane(X + ch * plane, s, ph, pw, 0, x, first, padded);
            first = 0;
            for (int64_t oy = 0; oy < oh; ++oy)
                maxpool_row(padded + oy * s->stride_h * pw, s, pw, x, Y + (ch * oh + oy) * ow);
        }
    }
}

void graphopt_qglobal_avgpool(const void* x, int64_t channels, int64_t size, int is_signed,
                              int32_t x_zp, float scale, int32_t y_zp, void* y) {
    const int32_t lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
    for (int64_t c = 0; c < channels; ++c) {
        int32_t sum = 0;
        for (int64_t i = 0; i < size; ++i)
            sum += is_signed ? ((const int8_t*)x)[c * size + i] : ((const uint8_t*)x)[c * size + i];
        const int32_t q = graphopt_q_requant(sum - (int32_t)size * x_zp, scale, y_zp, lo, hi);
        if (is_signed)
            ((int8_t*)y)[c] = (int8_t)q;
        else
            ((uint8_t*)y)[c] = (uint8_t)q;
    }
}
