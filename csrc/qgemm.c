/* u8 x s8 GEMM with int32 accumulators and the fused requantizing epilogue
 * (graphopt_qkernels.h): the loops over tiles of packed panels, their micro-kernel
 * (qgemm_tile.c) and their store (qepilogue.c).
 */
#include "graphopt_qinternal.h"

#if QX86
/* The 4 activations of group g (column 0 of a packed B) in every 32-bit lane of a half. */
static inline __m128i x_group(const uint8_t* Bp, int64_t g) {
    int32_t v;
    memcpy(&v, Bp + g * QNR * 4, 4);
    return _mm_set1_epi32(v);
}

/* acc[r] = sum_k A[r, k] * B[k, 0] over one row panel a and column panel b (narrow weights):
 * vpmaddubsw over two groups of 4 rows x 4 k at once instead of a tile with 15 of its 16
 * columns wasted. */
static void gemv_panel(int64_t K4, const int8_t* a, const uint8_t* Bp, int32_t* acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s = _mm256_setzero_si256();
    int64_t g = 0;
    for (; g + 2 <= K4; g += 2, a += 2 * QMR * 4) {
        const __m256i xv = _mm256_setr_m128i(x_group(Bp, g), x_group(Bp, g + 1));
        const __m256i av = _mm256_loadu_si256((const __m256i*)a);
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(xv, av), ones));
    }
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    if (g < K4) {
        const __m128i p = _mm_maddubs_epi16(x_group(Bp, g), _mm_loadu_si128((const __m128i*)a));
        h = _mm_add_epi32(h, _mm_madd_epi16(p, _mm_set1_epi16(1)));
    }
    _mm_storeu_si128((__m128i*)acc, h);
}
#endif

void graphopt_q_tiles(int64_t K4, const int8_t* Ap, int64_t M, int64_t ip0, int64_t ip1,
                      const uint8_t* Bp, int64_t N, int64_t jp0, int64_t jp1,
                      const graphopt_qepilogue* e, const graphopt_qconsts* k, void* C, int64_t rs,
                      int64_t cs) {
    for (int64_t ip = ip0; ip < ip1; ++ip) {
        const int64_t m = M - ip * QMR < QMR ? M - ip * QMR : QMR;
        for (int64_t jp = jp0; jp < jp1; ++jp) {
            int32_t acc[QMR * QNR];
            const int64_t n = N - jp * QNR < QNR ? N - jp * QNR : QNR;
#if QX86
            if (n == 1 && e->narrow) { /* a last panel of one column (7x7 planes: 3 * 16 + 1) */
                gemv_panel(K4, Ap + ip * K4 * QMR * 4, Bp + (jp - jp0) * K4 * QNR * 4, acc);
                graphopt_q_store_tile(acc, 1, ip * QMR, jp * QNR, m, 1, e, k, C, rs, cs);
                continue;
            }
#endif
            graphopt_q_compute_tile(K4, Ap + ip * K4 * QMR * 4, Bp + (jp - jp0) * K4 * QNR * 4,
                                    acc, e->narrow, n);
#if QX86
            if (k && m == QMR && n == QNR) {
                graphopt_q_store_full_tile(acc, e, k, ip * QMR, jp * QNR,
                                           (int8_t*)C + ip * QMR * rs + jp * QNR, rs);
                continue;
            }
#endif
            graphopt_q_store_tile(acc, QNR, ip * QMR, jp * QNR, m, n, e, k, C, rs, cs);
        }
    }
}

void graphopt_qgemm(int64_t M, int64_t N, int64_t K, const int8_t* Ap, const uint8_t* Bp,
                    const graphopt_qepilogue* e, void* C, int64_t rs, int64_t cs) {
    const int64_t K4 = q_k_groups(K), mp = (M + QMR - 1) / QMR, np = (N + QNR - 1) / QNR;
    /* column panels per block: within a block, a row panel's tiles are stored side by side
     * (rows written sequentially, not one 16-byte piece per row in a different page) */
    int64_t per = GRAPHOPT_QBLOCK_BYTES / (K4 * QNR * 4);
    per = per < 1 ? 1 : per;
    const int64_t nb = (np + per - 1) / per;
    const graphopt_qepilogue local = *e; /* see graphopt_q_store_tile */
    graphopt_qconsts consts;
    const graphopt_qconsts* k = graphopt_q_epilogue_consts(&local, cs, &consts);
    const int parallel = GRAPHOPT_WORTH_THREADS(M * N * K / QMACS_PER_MAC, 0);
    (void)parallel;
    /* dynamic: a thread that another process on the machine delays does not hold the other at
     * the barrier with half the work left; each tile is one thread's, so the bits do not
     * depend on the schedule */
#ifdef _OPENMP
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
#endif
    for (int64_t jb = 0; jb < nb; ++jb)
        for (int64_t ip = 0; ip < mp; ++ip) {
            const int64_t jp0 = jb * per, jp1 = jp0 + per < np ? jp0 + per : np;
            graphopt_q_tiles(K4, Ap, M, ip, ip + 1, Bp + jp0 * K4 * QNR * 4, N, jp0, jp1, &local,
                             k, C, rs, cs);
        }
}
