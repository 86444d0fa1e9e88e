/* Depthwise convolution of u8 (or flipped s8) planes with s8 filters, int32 sums, then the
 * shared epilogue per channel (graphopt_qkernels.h). Taps are paired for vpmaddwd over 16
 * outputs; stride-1 planes run as one flat row so 7x7 planes still fill vectors. */
#include "graphopt_qinternal.h"

#if QX86
/* 16 u8 elements src[0], src[sw], ... widened to int16 (sw 1 or 2; stride 2 keeps the low
 * byte of each 16-bit pair: the even elements). */
QINLINE __m256i load16(const uint8_t* src, int64_t sw) {
    if (sw == 1) return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)src));
    return _mm256_and_si256(_mm256_loadu_si256((const __m256i*)src), _mm256_set1_epi16(0xff));
}
#endif

#if QX86
/* Two taps (offsets oa, ob; weight pair wp) of 16 outputs added to s0 (outputs 0-3 | 8-11)
 * and s1 (4-7 | 12-15). */
#define DW_PAIR(b, oa, ob, wp, sw)                                                           \
    do {                                                                                      \
        const __m256i va = load16((b) + (oa), sw), vb = load16((b) + (ob), sw);              \
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_unpacklo_epi16(va, vb), wp));     \
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_unpackhi_epi16(va, vb), wp));     \
    } while (0)

/* One channel's epilogue as vectors, for sums requantized straight from registers. */
typedef struct {
    __m256i bias;
    __m256 mult;
    const graphopt_qconsts* k;
    int u8, clamp_low;
} dw_requant;

/* dw_run's vector loop for a 3x3 window at stride sw (a constant where inlined): the taps'
 * offsets and weight pairs stay in registers for the whole row (the generic loop reloads
 * them per 16 outputs, as its int32 stores may alias the pairs). rq NULL: int32 sums into
 * out; else requantized bytes into bytes (16 at a time: up to 15 past count). */
QINLINE void dw_run3x3(const uint8_t* base, const int64_t* off, const int32_t* pairs,
                       int64_t sw, int64_t count, int32_t* out, const dw_requant* rq,
                       uint8_t* bytes) {
    const int64_t o0 = off[0], o1 = off[1], o2 = off[2], o3 = off[3], o4 = off[4];
    const int64_t o5 = off[5], o6 = off[6], o7 = off[7], o8 = off[8];
    const __m256i w0 = _mm256_set1_epi32(pairs[0]), w1 = _mm256_set1_epi32(pairs[1]);
    const __m256i w2 = _mm256_set1_epi32(pairs[2]), w3 = _mm256_set1_epi32(pairs[3]);
    const __m256i w4 = _mm256_set1_epi32(pairs[4]); /* (w[8], 0): its second tap is o8 again */
    /* the epilogue in locals: the byte stores may alias anything read through a pointer */
    const graphopt_qconsts k = rq ? *rq->k : (graphopt_qconsts){0};
    const __m256i bias = rq ? rq->bias : w0;
    const __m256 mult = rq ? rq->mult : _mm256_setzero_ps();
    const int u8 = rq ? rq->u8 : 0, clamp_low = rq ? rq->clamp_low : 0;
    for (int64_t i = 0; i < count; i += 16) {
        const uint8_t* b = base + i * sw;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0;
        DW_PAIR(b, o0, o1, w0, sw);
        DW_PAIR(b, o2, o3, w1, sw);
        DW_PAIR(b, o4, o5, w2, sw);
        DW_PAIR(b, o6, o7, w3, sw);
        DW_PAIR(b, o8, o8, w4, sw);
        const __m256i lo = _mm256_permute2x128_si256(s0, s1, 0x20);
        const __m256i hi = _mm256_permute2x128_si256(s0, s1, 0x31);
        if (rq) {
            q_requant_store16(lo, hi, bias, mult, &k, NULL, u8, clamp_low, (int8_t*)bytes + i);
        } else {
            _mm256_storeu_si256((__m256i*)(out + i), lo);
            _mm256_storeu_si256((__m256i*)(out + i + 8), hi);
        }
    }
}

/* A 3x3 stride-1 channel requantized as it is summed (no residual): the padded plane as one
 * flat row into `line` (pw bytes per output row), then the valid bytes into y. (At stride 2
 * the int32 sums and the separate epilogue measured faster.) */
static void dw_channel3x3(const uint8_t* padded, const int64_t* off, const int32_t* pairs,
                          const graphopt_qconv_shape* s, int64_t pw, const dw_requant* rq,
                          uint8_t* line, uint8_t* y) {
    const int64_t oh = s->out_height, ow = s->out_width;
    dw_run3x3(padded, off, pairs, 1, (oh - 1) * pw + ow, NULL, rq, line);
    for (int64_t oy = 0; oy < oh; ++oy)
        graphopt_q_copy_short(y + oy * ow, line + oy * pw, (size_t)ow);
}
#endif

/* out[i] = sum_t w[t] * base[off[t] + i * sw] for i < count (exact int32). The vector path
 * pairs taps for vpmaddwd (|u8 * s8| pair sums fit int32) and writes up to 15 entries past
 * count (callers leave room); it reads at most 32 + 16 * sw bytes past the last tap. */
static void dw_run(const uint8_t* base, const int64_t* off, const int8_t* w,
                   const int32_t* pairs, int64_t taps, int64_t sw, int64_t count, int32_t* out) {
    int64_t i = 0;
#if QX86
    if (taps == 9 && sw == 1) {
        dw_run3x3(base, off, pairs, 1, count, out, NULL, NULL);
        return;
    }
    if (taps == 9 && sw == 2) {
        dw_run3x3(base, off, pairs, 2, count, out, NULL, NULL);
        return;
    }
    if (sw <= 2)
        for (; i < count; i += 16) {
            __m256i s0 = _mm256_setzero_si256(), s1 = s0;
            for (int64_t t = 0; t < taps; t += 2) {
                const __m256i va = load16(base + off[t] + i * sw, sw);
                const __m256i vb = t + 1 < taps ? load16(base + off[t + 1] + i * sw, sw) : va;
                const __m256i wp = _mm256_set1_epi32(pairs[t / 2]);
                /* lanes: lo = outputs 0-3 | 8-11, hi = 4-7 | 12-15 */
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_unpacklo_epi16(va, vb), wp));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_unpackhi_epi16(va, vb), wp));
            }
            _mm256_storeu_si256((__m256i*)(out + i), _mm256_permute2x128_si256(s0, s1, 0x20));
            _mm256_storeu_si256((__m256i*)(out + i + 8), _mm256_permute2x128_si256(s0, s1, 0x31));
        }
#else
    (void)pairs;
#endif
    for (; i < count; ++i) {
        int32_t sum = 0;
        for (int64_t t = 0; t < taps; ++t) sum += (int32_t)w[t] * (int32_t)base[off[t] + i * sw];
        out[i] = sum;
    }
}

/* The pieces of a depthwise slot, in this order (8-byte multiples: the int64 offsets first). */
typedef struct {
    int64_t off, acc, line, pairs, padded, total;
} dw_layout;

static dw_layout dw_layout_of(const graphopt_qconv_shape* s) {
    const int64_t taps = s->kernel_h * s->kernel_w, plane = s->out_height * s->out_width;
    const int flat = s->stride_h == 1 && s->stride_w == 1;
    const int64_t run = flat ? (s->out_height - 1) * q_padded_w(s) + s->out_width : 0;
    dw_layout l;
    l.off = 0;
    l.acc = l.off + taps * (int64_t)sizeof(int64_t);
    l.line = l.acc + q_round_up((plane + 16) * (int64_t)sizeof(int32_t), 8);
    l.pairs = l.line + (flat ? q_round_up((run + 16) * (int64_t)sizeof(int32_t), 8) : 0);
    l.padded = l.pairs + q_round_up((taps / 2 + 1) * (int64_t)sizeof(int32_t), 8);
    l.total = q_round_up(l.padded + q_padded_h(s) * q_padded_w(s) + PLANE_SLACK, 64);
    return l;
}

int64_t graphopt_qdepthwise_work(const graphopt_qconv_shape* s) { return dw_layout_of(s).total; }

void graphopt_qdepthwise(const uint8_t* X, const int8_t* W, const graphopt_qconv_shape* s,
                         uint8_t pad, int flip, const graphopt_qepilogue* e, void* Y, void* work,
                         int slots) {
    const int64_t kh = s->kernel_h, kw = s->kernel_w, oh = s->out_height, ow = s->out_width;
    const int64_t sh = s->stride_h, sw = s->stride_w, dh = s->dilation_h, dw = s->dilation_w;
    const int64_t ph = q_padded_h(s), pw = q_padded_w(s);
    const int64_t taps = kh * kw, plane = oh * ow;
    /* stride 1: the padded plane is one long row (pw outputs per output row, ow of them kept),
     * so short rows (7x7 planes) still fill whole vectors */
    const int flat = sh == 1 && sw == 1;
    const int64_t run = flat ? (oh - 1) * pw + ow : ow;
    const uint8_t x = flip ? 0x80 : 0;
    const graphopt_qepilogue local = *e; /* see graphopt_q_store_tile */
    const dw_layout layout = dw_layout_of(s);
    const int team = q_team_size(slots);
    graphopt_qconsts consts;
    const graphopt_qconsts* k = graphopt_q_epilogue_consts(&local, 1, &consts);
    /* a depthwise MAC (with its share of padding and epilogue) runs at ~10 G/s a core, half
     * the rate of the fp32 GEMM MACs the grain rule counts: it weighs 2 */
    const int64_t macs = 2 * s->channels * plane * taps;
    /* 3x3 at stride 1 without a residual: requantized from registers (dw_channel3x3) */
    const int quick = QX86 && k && !local.add && taps == 9 && flat && dh == 1 && dw == 1;
    const int parallel = GRAPHOPT_WORTH_THREADS(macs, 2 * s->channels * plane);
    (void)team;
    (void)parallel;
    (void)quick;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (parallel)
#endif
    {
        uint8_t* mine = q_slot_of(work, layout.total);
        int64_t* off = (int64_t*)(mine + layout.off);
        int32_t* acc = (int32_t*)(mine + layout.acc);
        int32_t* line = flat ? (int32_t*)(mine + layout.line) : NULL;
        int32_t* pairs = (int32_t*)(mine + layout.pairs);
        uint8_t* padded = mine + layout.padded;
        int first = 1; /* this thread's plane has no border yet */
        memset(padded, 0, (size_t)(ph * pw + PLANE_SLACK)); /* the slack read stays defined */
        for (int64_t t = 0; t < taps; ++t) off[t] = (t / kw) * dh * pw + (t % kw) * dw;
#ifdef _OPENMP
#pragma omp for schedule(dynamic) /* see graphopt_qgemm */
#endif
        for (int64_t ch = 0; ch < s->channels; ++ch) {
            graphopt_q_pad_plane(X + ch * s->height * s->width, s, ph, pw, pad, x, first, padded);
            first = 0;
            const int8_t* wc = W + ch * taps;
            for (int64_t t = 0; t < taps; t += 2) /* int16 weight pairs (w[t], w[t+1] or 0) */
                pairs[t / 2] = (int32_t)((uint32_t)(uint16_t)wc[t] |
                                         (uint32_t)(uint16_t)(t + 1 < taps ? wc[t + 1] : 0) << 16);
#if QX86
            if (quick) {
                dw_requant rq;
                rq.bias = _mm256_set1_epi32(local.bias ? local.bias[ch] : 0);
                rq.mult = _mm256_set1_ps(local.mult[ch]);
                rq.k = k;
                rq.u8 = k->u8;
                rq.clamp_low = !k->low_free;
                dw_channel3x3(padded, off, pairs, s, pw, &rq, (uint8_t*)line,
                              (uint8_t*)Y + ch * plane);
                continue;
            }
#endif
            if (flat) {
                dw_run(padded, off, wc, pairs, taps, 1, run, line);
                for (int64_t oy = 0; oy < oh; ++oy)
                    graphopt_q_copy_short(acc + oy * ow, line + oy * pw,
                                          (size_t)ow * sizeof(int32_t));
            } else {
                for (int64_t oy = 0; oy < oh; ++oy)
                    dw_run(padded + oy * sh * pw, off, wc, pairs, taps, sw, ow, acc + oy * ow);
            }
            graphopt_q_store_tile(acc, plane, ch, 0, 1, plane, &local, k, Y, plane, 1);
        }
    }
}
