/* Integer pooling: MaxPool of u8/s8 planes (compared as u8, s8 flipped),
 * QLinearGlobalAveragePool, and the QDQ ReduceMean of integer rows (graphopt_qkernels.h). */
#include "graphopt_qinternal.h"

#include <math.h>

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

/* A thread's planes of graphopt_qmaxpool: its chunks within a parallel region, else all. */
static void maxpool_thread(const uint8_t* X, const graphopt_qconv_shape* s, uint8_t x,
                           uint8_t* Y, void* work, int64_t chunk) {
    const int64_t oh = s->out_height, ow = s->out_width, ph = q_padded_h(s), pw = q_padded_w(s);
    const int64_t plane = s->height * s->width, slot = graphopt_qmaxpool_work(s);
    uint8_t* padded = q_slot_of(work, slot);
    int first = 1; /* this thread's plane has no border yet */
    memset(padded, 0, (size_t)slot); /* the slack read past the plane stays defined */
    (void)chunk;
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

/* s8 data is compared as u8 after x ^ 0x80 (order preserving), so the border is 0 in either
 * case: the least value, never above a window's maximum (every window holds an input). */
void graphopt_qmaxpool(const uint8_t* X, const graphopt_qconv_shape* s, int is_signed,
                       uint8_t* Y, void* work, int slots) {
    const uint8_t x = is_signed ? 0x80 : 0;
    const int team = q_team_size(slots);
    /* 4 chunks a thread (see qdepthwise.c's dw_chunk) */
    const int64_t chunk = (s->channels + 4 * team - 1) / (4 * team);
    const int64_t bytes = s->channels * (s->height * s->width + s->out_height * s->out_width);
    if (team > 1 && GRAPHOPT_WORTH_THREADS(0, bytes)) {
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
#endif
        maxpool_thread(X, s, x, Y, work, chunk);
    } else { /* no parallel region at all: even one of a single thread costs libgomp ~1 us */
        maxpool_thread(X, s, x, Y, work, chunk);
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

/* ---- DequantizeLinear -> ReduceMean over trailing axes -> QuantizeLinear, as onnxruntime
 * runs it (it has no integer kernel for ReduceMean: the QDQ model's float arithmetic) -------- */

/* What the mean of a row needs: its integers and their DequantizeLinear parameters. */
typedef struct {
    const uint8_t* x; /* u8, or s8 read as such */
    int64_t n;
    int is_signed;
    int32_t zero_point;
    float scale;
} qrow;

/* Element i of the row as onnxruntime's DequantizeLinear gives it: (x - zp) * scale in float. */
static inline float qrow_value(const qrow* r, int64_t i) {
    const int32_t v = r->is_signed ? (int32_t)(int8_t)r->x[i] : (int32_t)r->x[i];
    return (float)(v - r->zero_point) * r->scale;
}

#if QX86
/* The dequantized elements i, ..., i + 7 (i + 3 for qrow_values4). */
static inline __m256 qrow_values8(const qrow* r, int64_t i) {
    const __m128i raw = _mm_loadl_epi64((const __m128i*)(r->x + i));
    const __m256i v = r->is_signed ? _mm256_cvtepi8_epi32(raw) : _mm256_cvtepu8_epi32(raw);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, _mm256_set1_epi32(r->zero_point))),
                         _mm256_set1_ps(r->scale));
}

static inline __m128 qrow_values4(const qrow* r, int64_t i) {
    int32_t quad;
    memcpy(&quad, r->x + i, 4);
    const __m128i raw = _mm_cvtsi32_si128(quad);
    const __m128i v = r->is_signed ? _mm_cvtepi8_epi32(raw) : _mm_cvtepu8_epi32(raw);
    return _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(v, _mm_set1_epi32(r->zero_point))),
                      _mm_set1_ps(r->scale));
}
#endif

/* Eigen's packet part of a row sum: `packets` (>= 1) 4-float packets from `start` go to two
 * accumulators in turn (lanes 0-3 and 4-7 below), which are then added, then an odd last
 * packet is added; the result is the horizontal sum (a0 + a2) + (a1 + a3). */
static float qrow_packets_sum(const qrow* r, int64_t start, int64_t packets) {
    const int64_t pairs_end = start + 8 * (packets / 2), end = start + 4 * packets;
#if QX86
    __m128 acc = qrow_values4(r, start);
    if (packets > 1) {
        __m256 both = qrow_values8(r, start);
        for (int64_t i = start + 8; i < pairs_end; i += 8)
            both = _mm256_add_ps(both, qrow_values8(r, i));
        acc = _mm_add_ps(_mm256_castps256_ps128(both), _mm256_extractf128_ps(both, 1));
        if (end > pairs_end) acc = _mm_add_ps(acc, qrow_values4(r, pairs_end));
    }
    const __m128 half = _mm_add_ps(acc, _mm_movehl_ps(acc, acc)); /* a0 + a2, a1 + a3 */
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_shuffle_ps(half, half, 1)));
#else
    float acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = j < 4 || packets > 1 ? qrow_value(r, start + j) : 0.0f;
    if (packets > 1) {
        for (int64_t i = start + 8; i < pairs_end; i += 8)
            for (int j = 0; j < 8; ++j) acc[j] += qrow_value(r, i + j);
        for (int j = 0; j < 4; ++j) acc[j] += acc[j + 4];
        if (end > pairs_end)
            for (int j = 0; j < 4; ++j) acc[j] += qrow_value(r, pairs_end + j);
    }
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
#endif
}

/* The float sum of the row's values in onnxruntime's order: Eigen's sum of a contiguous vector
 * with 4-float (SSE) packets from `start`, its first 16-byte aligned element
 * (qrow_packets_sum), then the elements before `start` and after the packets, one at a time.
 * Too few elements for a packet: a left-to-right sum. */
static float qrow_eigen_sum(const qrow* r, int64_t start) {
    const int64_t n = r->n, packets = start < n ? (n - start) / 4 : 0;
    float sum;
    if (packets == 0) {
        sum = qrow_value(r, 0);
        for (int64_t i = 1; i < n; ++i) sum += qrow_value(r, i);
        return sum;
    }
    sum = qrow_packets_sum(r, start, packets);
    for (int64_t i = 0; i < start; ++i) sum += qrow_value(r, i);
    for (int64_t i = start + 4 * packets; i < n; ++i) sum += qrow_value(r, i);
    return sum;
}

/* QuantizeLinear of the means sums[i] / size (the division by the scale, round half to even,
 * saturation), a block of rows at a time so that the divisions vectorize. */
static void qrow_quantize_means(const float* sums, int64_t rows, int64_t size, int is_signed,
                                int32_t y_zp, float y_scale, void* y) {
    const int32_t lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
    const float low = (float)(lo - y_zp), high = (float)(hi - y_zp), count = (float)size;
    for (int64_t i = 0; i < rows; ++i) {
        float v = sums[i] / count / y_scale;
        v = v < low ? low : (v > high ? high : v);
        const int32_t q = (int32_t)nearbyintf(v) + y_zp;
        if (is_signed)
            ((int8_t*)y)[i] = (int8_t)q;
        else
            ((uint8_t*)y)[i] = (uint8_t)q;
    }
}

#define QROW_BLOCK 64

/* Rows of `size` elements (row r at r * size of a 16-byte aligned float buffer in onnxruntime:
 * its first aligned element is (-r * size) mod 4): the float mean (sum / size), quantized as
 * QuantizeLinear does. */
/* Rows [from, to) of graphopt_qreduce_mean, a block at a time. */
static void qrow_means(const void* x, int64_t from, int64_t to, int64_t size, int is_signed,
                       int32_t x_zp, float x_scale, int32_t y_zp, float y_scale, void* y) {
    for (int64_t block = from; block < to; block += QROW_BLOCK) {
        const int64_t last = block + QROW_BLOCK < to ? block + QROW_BLOCK : to;
        float sums[QROW_BLOCK];
        /* rows 4 apart start their packets alike: taken together, the loops' counts repeat */
        for (int64_t first = block; first < block + 4 && first < last; ++first) {
            const int64_t start = (4 - (first * size) % 4) % 4;
            for (int64_t row = first; row < last; row += 4) {
                const qrow r = {(const uint8_t*)x + row * size, size, is_signed, x_zp, x_scale};
                sums[row - block] = qrow_eigen_sum(&r, start < size ? start : size);
            }
        }
        qrow_quantize_means(sums, last - block, size, is_signed, y_zp, y_scale,
                            (int8_t*)y + block);
    }
}

/* Rows of `size` elements (row r at r * size of a 16-byte aligned float buffer in onnxruntime:
 * its first aligned element is (-r * size) mod 4): the float mean (sum / size), quantized as
 * QuantizeLinear does. */
void graphopt_qreduce_mean(const void* x, int64_t rows, int64_t size, int is_signed,
                           int32_t x_zp, float x_scale, int32_t y_zp, float y_scale, void* y) {
#ifdef _OPENMP
    /* a parallel region only when shared: even one of a single thread costs libgomp ~1 us */
    if (GRAPHOPT_WORTH_THREADS(0, 4 * rows * size) && omp_get_max_threads() > 1) {
        const int64_t blocks = (rows + QROW_BLOCK - 1) / QROW_BLOCK;
#pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t from = b * QROW_BLOCK;
            qrow_means(x, from, from + QROW_BLOCK < rows ? from + QROW_BLOCK : rows, size,
                       is_signed, x_zp, x_scale, y_zp, y_scale, y);
        }
        return;
    }
#endif
    qrow_means(x, 0, rows, size, is_signed, x_zp, x_scale, y_zp, y_scale, y);
}
