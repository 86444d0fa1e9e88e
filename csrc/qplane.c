/* The padded plane of the integer kernels that read windows one channel at a time (depthwise,
 * max pooling): one channel copied into a plane wide and tall enough that every tap of every
 * output is inside, so the loops that read it have no bounds checks. */
#include "graphopt_qinternal.h"

/* The first and the last c bytes of n (c <= n <= 2c): two fixed-size copies, inlined. */
QINLINE void copy_ends(uint8_t* d, const uint8_t* s, size_t n, size_t c) {
    memcpy(d, s, c);
    memcpy(d + n - c, s + n - c, c);
}

void graphopt_q_copy_short(void* dst, const void* src, size_t n) {
    uint8_t* d = (uint8_t*)dst;
    const uint8_t* s = (const uint8_t*)src;
    if (n > 64)
        memcpy(d, s, n);
    else if (n >= 32)
        copy_ends(d, s, n, 32);
    else if (n >= 16)
        copy_ends(d, s, n, 16);
    else if (n >= 8)
        copy_ends(d, s, n, 8);
    else if (n >= 4)
        copy_ends(d, s, n, 4);
    else
        for (size_t i = 0; i < n; ++i) d[i] = s[i];
}

void graphopt_q_pad_plane(const uint8_t* xc, const graphopt_qconv_shape* s, int64_t ph,
                          int64_t pw, uint8_t pad, uint8_t x, int fill, uint8_t* padded) {
    const int64_t left = s->pad_left < pw ? s->pad_left : pw;
    int64_t inner = s->width < pw - left ? s->width : pw - left;
    if (inner < 0) inner = 0;
    if (fill) memset(padded, pad, (size_t)(ph * pw));
    for (int64_t py = 0; py < ph; ++py) {
        const int64_t iy = py - s->pad_top;
        if (iy < 0 || iy >= s->height) continue;
        uint8_t* dst = padded + py * pw + left;
        const uint8_t* src = xc + iy * s->width;
        if (x)
            for (int64_t i = 0; i < inner; ++i) dst[i] = (uint8_t)(src[i] ^ x);
        else
            graphopt_q_copy_short(dst, src, (size_t)inner);
    }
}
