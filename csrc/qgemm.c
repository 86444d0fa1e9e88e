/* u8 x s8 GEMM with int32 accumulators and the fused requantizing epilogue
 * (graphopt_qkernels.h): the loops over tiles of packed panels, their micro-kernel
 * (qgemm_tile.c) and their store (qepilogue.c).
 */
#include "graphopt_qinternal.h"

/* The m x n outputs of a tile's accumulators (row ip * QMR, column jp * QNR on). */
static void store_tile(const int32_t* acc, int64_t ip, int64_t jp, int64_t m, int64_t n,
                       const graphopt_qepilogue* e, const graphopt_qconsts* k, void* C,
                       int64_t rs, int64_t cs) {
#if QX86
    if (k && n % 16 == 0) {
        graphopt_q_store_full_tile(acc, e, k, ip * QMR, jp * QNR, (int)m, (int)n,
                                   (int8_t*)C + ip * QMR * rs + jp * QNR, rs);
        return;
    }
#endif
    graphopt_q_store_tile(acc, QTN, ip * QMR, jp * QNR, m, n, e, k, C, rs, cs);
}

/* One register tile (ma row panels from ip, nb column panels from jp; Bp: column panel jp0)
 * computed and stored; with `column` (a whole tile followed by the last panel, of one
 * column) that column too, where the ISA folds it into the tile. Returns the column panels
 * done. */
static int run_tile(int64_t K4, const int8_t* Ap, int64_t M, int64_t ip, int ma,
                    const uint8_t* Bp, int64_t N, int64_t jp0, int64_t jp, int nb, int column,
                    const graphopt_qepilogue* e, const graphopt_qconsts* k, void* C, int64_t rs,
                    int64_t cs) {
    int32_t acc[QTM * QTN] QALIGNED(64), last[QTM] QALIGNED(32);
    const int64_t m = M - ip * QMR < ma * QMR ? M - ip * QMR : ma * QMR;
    const int64_t n = N - jp * QNR < nb * QNR ? N - jp * QNR : nb * QNR;
    const int8_t* a = Ap + ip * K4 * QMR * 4;
    const uint8_t* b = Bp + (jp - jp0) * K4 * QNR * 4;
    if (column && graphopt_q_compute_tile_column(K4, a, b, acc, last)) {
        store_tile(acc, ip, jp, m, n, e, k, C, rs, cs);
        graphopt_q_store_tile(last, 1, ip * QMR, (jp + nb) * QNR, m, 1, e, k, C, rs, cs);
        return nb + 1;
    }
    /* a last panel of a few columns (14x14 planes: 12 * 16 + 4) */
    if (n <= 4 && graphopt_q_gemv_tile(K4, a, ma, b, n, e->narrow, acc)) {
        graphopt_q_store_tile(acc, QTN, ip * QMR, jp * QNR, m, n, e, k, C, rs, cs);
        return nb;
    }
    graphopt_q_compute_tile(K4, a, ma, b, nb, acc, e->narrow, n);
    store_tile(acc, ip, jp, m, n, e, k, C, rs, cs);
    return nb;
}

void graphopt_q_tiles(int64_t K4, const int8_t* Ap, int64_t M, int64_t ip0, int64_t ip1,
                      const uint8_t* Bp, int64_t N, int64_t jp0, int64_t jp1,
                      const graphopt_qepilogue* e, const graphopt_qconsts* k, void* C, int64_t rs,
                      int64_t cs) {
    /* the last panel holds one column: folded into the whole tile before it (no second pass
     * over A for it) */
    const int64_t lone = N % QNR == 1 && (N + QNR - 1) / QNR == jp1 ? jp1 - 1 : -1;
    for (int64_t ip = ip0; ip < ip1; ip += QTILE_A) {
        const int ma = ip1 - ip < QTILE_A ? (int)(ip1 - ip) : QTILE_A;
        for (int64_t jp = jp0; jp < jp1;) {
            const int nb = jp1 - jp < QTILE_B ? (int)(jp1 - jp) : QTILE_B;
            const int column = ma == QTILE_A && nb == QTILE_B && jp + nb == lone;
            jp += run_tile(K4, Ap, M, ip, ma, Bp, N, jp0, jp, nb, column, e, k, C, rs, cs);
        }
    }
}

void graphopt_qgemm(int64_t M, int64_t N, int64_t K, const int8_t* Ap, const uint8_t* Bp,
                    const graphopt_qepilogue* e, void* C, int64_t rs, int64_t cs) {
    const int64_t K4 = q_k_groups(K), mp = (M + QMR - 1) / QMR, np = (N + QNR - 1) / QNR;
    const int64_t mt = (mp + QTILE_A - 1) / QTILE_A; /* row tiles */
    /* column panels per block: within a block, a row panel's tiles are stored side by side
     * (rows written sequentially, not one 16-byte piece per row in a different page) */
    int64_t per = GRAPHOPT_QBLOCK_BYTES / (K4 * QNR * 4);
    per = per < 1 ? 1 : (per >= QBLOCK_PANELS ? per / QBLOCK_PANELS * QBLOCK_PANELS : per);
    const int64_t nb = (np + per - 1) / per;
    const graphopt_qepilogue local = *e; /* see graphopt_q_store_tile */
    graphopt_qconsts consts;
    const graphopt_qconsts* k = graphopt_q_epilogue_consts(&local, cs, &consts);
    /* bytes: a GEMV (N 1, the classifier) streams its weights once and is memory-bound */
    const int parallel = GRAPHOPT_WORTH_THREADS(M * N * K / QMACS_PER_MAC, M * K + K * N);
    (void)parallel;
    /* dynamic: a thread that another process on the machine delays does not hold the other at
     * the barrier with half the work left; each tile is one thread's, so the bits do not
     * depend on the schedule */
#ifdef _OPENMP
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
#endif
    for (int64_t jb = 0; jb < nb; ++jb)
        for (int64_t it = 0; it < mt; ++it) {
            const int64_t jp0 = jb * per, jp1 = jp0 + per < np ? jp0 + per : np;
            const int64_t ip = it * QTILE_A, ip1 = ip + QTILE_A < mp ? ip + QTILE_A : mp;
            graphopt_q_tiles(K4, Ap, M, ip, ip1, Bp + jp0 * K4 * QNR * 4, N, jp0, jp1, &local,
                             k, C, rs, cs);
        }
}
