/* Packing u8 activations into the GEMM's B panels (layout in graphopt_qkernels.h). */
#include "graphopt_qinternal.h"

int64_t graphopt_qgemm_packed_b_bytes(int64_t K, int64_t N) {
    return ((N + QNR - 1) / QNR) * q_k_groups(K) * QNR * 4;
}

/* Zero the padding of packed panels: k rows K..4*K4 and columns N..QNR*np. */
static void zero_padding(int64_t K, int64_t N, uint8_t* panels) {
    const int64_t K4 = q_k_groups(K), np = (N + QNR - 1) / QNR;
    for (int64_t k = K; k < 4 * K4; ++k)
        for (int64_t n = 0; n < np * QNR; ++n)
            panels[((n / QNR) * K4 + (k >> 2)) * QNR * 4 + (n % QNR) * 4 + (k & 3)] = 0;
    for (int64_t n = N; n < np * QNR; ++n)
        for (int64_t k = 0; k < K; ++k)
            panels[((n / QNR) * K4 + (k >> 2)) * QNR * 4 + (n % QNR) * 4 + (k & 3)] = 0;
}

void graphopt_qgemm_pack_b(const uint8_t* X, int64_t rs, int64_t cs, int64_t K, int64_t N,
                           int flip, uint8_t* panels) {
    const int64_t K4 = q_k_groups(K), panel = K4 * QNR * 4, full = N / QNR;
    const uint8_t x = flip ? 0x80 : 0;
    int64_t done = 0; /* columns packed by the fast path: whole panels of contiguous rows */
    if (cs == 1 && !flip && K % 4 == 0) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (GRAPHOPT_WORTH_THREADS(0, 2 * K * N))
#endif
        for (int64_t p = 0; p < full; ++p)
            for (int64_t g = 0; g < K4; ++g) {
                const uint8_t* r = X + 4 * g * rs + p * QNR;
                q_interleave4x16(r, r + rs, r + 2 * rs, r + 3 * rs,
                                 panels + p * panel + g * QNR * 4);
            }
        done = full * QNR;
    }
    for (int64_t k = 0; k < K; ++k) {
        uint8_t* o = panels + (k >> 2) * QNR * 4 + (k & 3);
        const uint8_t* row = X + k * rs;
        for (int64_t n = done; n < N; ++n)
            o[(n / QNR) * panel + (n % QNR) * 4] = (uint8_t)(row[n * cs] ^ x);
    }
    zero_padding(K, N, panels);
}
