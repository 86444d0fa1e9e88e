/* Single-precision GEMM: packed panels around a register-tiled micro-kernel written per ISA.
 *
 * Blocking (BLIS-style): A is packed into row panels of MR (zero-padded), B into column panels
 * of NR; every MR x NR tile of C is computed by the micro-kernel from one A panel and one B
 * panel over a KC-deep slice of K, its MR * NR / VLEN vector accumulators staying in registers
 * for the whole slice. An MC-row block of A panels (MC x KC, about half of L2) stays in cache
 * while the column panels pass; one B panel slice (KC x NR, about half of L1) while the row
 * panels of the block pass. Tile sizes, blocking and the ISA come from the generated
 * graphopt_config.h. After the last K slice the epilogue runs on each tile while it is hot.
 *
 * Threads (sgemm_blocked): one parallel region per call. With A packed whole (at compile time
 * as Ap, or at run time), C is cut into independent items that the threads take dynamically,
 * so a thread the OS preempts does not hold the others at a barrier. A small enough to stay
 * in L2 (at most MC x KC floats): A is packed once before the items (the one barrier), an
 * item is a range of column panels over all rows, and each thread packs the B panels it
 * reads into its own buffer, so nothing about B is shared. A larger A: an item is a block of
 * rows whose A panels over all of K stay in L2 by a range of columns, so each B panel is read
 * once per block instead of all of A once per column panel (at 2 threads the two cores would
 * otherwise share the L3 bandwidth streaming A); B is packed whole, shared, unless it comes
 * packed (Bp, or im2col written in the panel layout: read in place), and what is packed at
 * run time is packed lazily, each A block and B panel by the first item that needs it, with
 * no barrier at all (compute_row_items). An A too large to pack whole is packed one MC x KC
 * block at a time, shared, between barriers. Calls below the target's grain
 * (GRAPHOPT_WORTH_THREADS) stay on one thread, without opening a parallel region at all.
 *
 * Small M (a few rows, e.g. batch-1 fully connected layers) skips packing A. On B packed at
 * compile time (the usual weight) the product is a stream of B (sgemv_packed, memory-bound:
 * see there); on an unpacked B, C rows are built with an i-k-j loop whose inner j loop
 * streams a contiguous row of B.
 */
#include <string.h>

#include "graphopt_kernels.h"
#include "graphopt_simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define MR GRAPHOPT_GEMM_MR
#define NR GRAPHOPT_GEMM_NR
#define VLEN GRAPHOPT_GEMM_VLEN
#define NV (NR / VLEN)
#define KC GRAPHOPT_GEMM_KC
#define MC GRAPHOPT_GEMM_MC
#define SMALL_M GRAPHOPT_GEMM_SMALL_M
#define PACK_WHOLE GRAPHOPT_GEMM_PACK_WHOLE

#if MC % MR != 0
#error "graphopt_config.h: MC must be a multiple of MR"
#endif
#if MR > 16
#error "graphopt_config.h: MR above 16 needs more cases in tile_rows"
#endif

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Whether a GEMM with A packed whole (a_floats of panels) runs by row items (compute_row_items)
 * rather than column items: A beyond one L2 block, with B packed at compile time or small
 * enough to pack whole at run time. */
static int by_row_items(int64_t a_floats, int64_t b_floats, int b_packed) {
    return a_floats > (int64_t)MC * KC && (b_packed || b_floats <= PACK_WHOLE);
}

int64_t graphopt_sgemm_scratch(int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0 || K <= 0 || M <= SMALL_M) return 0;
    const int64_t a_whole = round_up(M, MR) * K, b_whole = round_up(N, NR) * K;
    if (a_whole > PACK_WHOLE) return round_up(min64(M, MC), MR) * min64(K, KC);
    if (!by_row_items(a_whole, b_whole, 0)) return a_whole;
    return a_whole + b_whole + round_up(M, MR) / MR + round_up(N, NR) / NR; /* + flags */
}

/* Independent accumulator sets a tile of `rows` rows uses: enough FMA chains in flight to hide
 * the FMA latency when the tile itself has few vectors (e.g. a single row of a batch-1 layer). */
#define SPLITS(rows) ((rows) * NV >= 8 ? 1 : (rows) * NV >= 4 ? 2 : 4)

/* c[r*ldc + j] (+)= sum_k a[k*MR + r] * b[k*NR + j] for r < rows, j < NR: the micro-kernel.
 * `rows` is a constant at every call site, so the loops unroll and acc lives in registers;
 * K is split round-robin over SPLITS(rows) accumulator sets, summed at the end. */
GRAPHOPT_INLINE void tile(const int rows, int64_t kc, const float* restrict a,
                          const float* restrict b, float* restrict c, int64_t ldc,
                          int accumulate) {
    const int S = SPLITS(rows);
    vec_t acc[4][MR][NV];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 16
        for (int r = 0; r < rows; ++r)
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) acc[s][r][v] = VEC_ZERO();
    int64_t k = 0;
    for (; k + S <= kc; k += S) {
#pragma GCC unroll 4
        for (int s = 0; s < S; ++s) {
            const float* bk = b + (k + s) * NR;
            const float* ak = a + (k + s) * MR;
            vec_t bv[NV];
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) bv[v] = VEC_LOAD(bk + v * VLEN);
#pragma GCC unroll 16
            for (int r = 0; r < rows; ++r) {
                const vec_t ar = VEC_SET1(ak[r]);
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v) acc[s][r][v] = VEC_FMA(acc[s][r][v], ar, bv[v]);
            }
        }
    }
    for (; k < kc; ++k) {
#pragma GCC unroll 16
        for (int r = 0; r < rows; ++r) {
            const vec_t ar = VEC_SET1(a[k * MR + r]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v)
                acc[0][r][v] = VEC_FMA(acc[0][r][v], ar, VEC_LOAD(b + k * NR + v * VLEN));
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < rows; ++r) {
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
            vec_t sum = acc[0][r][v];
#pragma GCC unroll 4
            for (int s = 1; s < S; ++s) sum = VEC_ADD(sum, acc[s][r][v]);
            float* p = c + r * ldc + v * VLEN;
            VEC_STORE(p, accumulate ? VEC_ADD(VEC_LOAD(p), sum) : sum);
        }
    }
}

#define TILE_CASE(n) \
    case n: tile(n, kc, a, b, c, ldc, accumulate); return;

/* The micro-kernel for the `rows` (1..MR) live rows of a panel. */
static void tile_rows(int64_t rows, int64_t kc, const float* restrict a, const float* restrict b,
                      float* restrict c, int64_t ldc, int accumulate) {
    switch (rows) {
        TILE_CASE(MR)
#if MR > 1
        TILE_CASE(1)
#endif
#if MR > 2
        TILE_CASE(2)
#endif
#if MR > 3
        TILE_CASE(3)
#endif
#if MR > 4
        TILE_CASE(4)
#endif
#if MR > 5
        TILE_CASE(5)
#endif
#if MR > 6
        TILE_CASE(6)
#endif
#if MR > 7
        TILE_CASE(7)
#endif
#if MR > 8
        TILE_CASE(8)
#endif
#if MR > 9
        TILE_CASE(9)
#endif
#if MR > 10
        TILE_CASE(10)
#endif
#if MR > 11
        TILE_CASE(11)
#endif
#if MR > 12
        TILE_CASE(12)
#endif
#if MR > 13
        TILE_CASE(13)
#endif
#if MR > 14
        TILE_CASE(14)
#endif
#if MR > 15
        TILE_CASE(15)
#endif
        default: return;
    }
}

/* An m x n (m <= MR, n <= NR) tile of C; a narrow one goes through a local full-width tile. */
static void compute_tile(int64_t m, int64_t n, int64_t kc, const float* a, const float* b,
                         float* c, int64_t ldc, int accumulate) {
    if (n == NR) {
        tile_rows(m, kc, a, b, c, ldc, accumulate);
        return;
    }
    float part[MR * NR];
    tile_rows(m, kc, a, b, part, NR, 0);
    for (int64_t r = 0; r < m; ++r) {
        float* cr = c + r * ldc;
        const float* pr = part + r * NR;
        if (accumulate)
            for (int64_t j = 0; j < n; ++j) cr[j] += pr[j];
        else
            for (int64_t j = 0; j < n; ++j) cr[j] = pr[j];
    }
}

/* Pack `live` rows (of A) or columns (of B) into one panel of `width`, zero-padded:
 * dst[k][w] = src[w * stride + k * k_stride] for k < kc, w < live. Element strides: an A panel
 * takes rows (stride rsa, k_stride csa), a B panel columns (csb, rsb). */
static void pack_panel(int64_t live, int64_t kc, const float* restrict src, int64_t stride,
                       int64_t k_stride, int64_t width, float* restrict dst) {
    if (k_stride == 1 && stride != 1) { /* transposed operand: read each source row in order */
        for (int64_t w = 0; w < live; ++w)
            for (int64_t k = 0; k < kc; ++k) dst[k * width + w] = src[w * stride + k];
        for (int64_t k = 0; k < kc; ++k)
            for (int64_t w = live; w < width; ++w) dst[k * width + w] = 0.0f;
        return;
    }
    if (stride == 1 && live == NR && width == NR) { /* a full B panel: rows of NR floats */
        for (int64_t k = 0; k < kc; ++k)
            for (int w = 0; w < NR; ++w) dst[k * NR + w] = src[k * k_stride + w];
        return;
    }
    for (int64_t k = 0; k < kc; ++k) {
        const float* in = src + k * k_stride;
        float* o = dst + k * width;
        if (stride == 1)
            for (int64_t w = 0; w < live; ++w) o[w] = in[w];
        else
            for (int64_t w = 0; w < live; ++w) o[w] = in[w * stride];
        for (int64_t w = live; w < width; ++w) o[w] = 0.0f;
    }
}

/* `count` rows or columns as consecutive panels (pack_panel each). Called inside a parallel
 * region, the panels are shared among its threads and the loop ends in a barrier. */
static void pack_panels(int64_t count, int64_t kc, const float* src, int64_t stride,
                        int64_t k_stride, int64_t width, float* dst) {
    int64_t panels = (count + width - 1) / width;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t p = 0; p < panels; ++p)
        pack_panel(min64(width, count - p * width), kc, src + p * width * stride, stride,
                   k_stride, width, dst + p * width * kc);
}

/* Few rows: C[i, :] = sum_k A[i, k] * B[k, :] with the j loop contiguous when csb == 1. */
static void sgemm_small_m(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsa,
                          int64_t csa, const float* B, int64_t rsb, int64_t csb, float* C,
                          int64_t ldc, const graphopt_epilogue* epi) {
    const int64_t chunk = 256;
    int64_t chunks = (N + chunk - 1) / chunk;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (GRAPHOPT_WORTH_THREADS(M * N * K, 4 * K * N))
#endif
    for (int64_t t = 0; t < chunks; ++t) {
        int64_t j0 = t * chunk, nc = min64(chunk, N - j0);
        for (int64_t i = 0; i < M; ++i) {
            float* restrict c = C + i * ldc + j0;
            for (int64_t j = 0; j < nc; ++j) c[j] = 0.0f;
            for (int64_t k = 0; k < K; ++k) {
                const float a = A[i * rsa + k * csa];
                const float* restrict b = B + k * rsb + j0 * csb;
                if (csb == 1)
                    for (int64_t j = 0; j < nc; ++j) c[j] += a * b[j];
                else
                    for (int64_t j = 0; j < nc; ++j) c[j] += a * b[j * csb];
            }
        }
        if (epi) epi->fn(epi, C + j0, ldc, 0, j0, M, nc);
    }
}

/* One GEMM call as the threads see it. */
typedef struct {
    int64_t M, N, K;
    const float* A;
    int64_t rsa, csa;
    const float* B;
    int64_t rsb, csb;
    const float* Bp;
    float* C;
    int64_t ldc;
    const graphopt_epilogue* epi;
} gemm_call;

/* Small M on B packed at compile time (batch-1 fully connected layers): C is a few rows, so
 * the product is a stream of B that reads every weight once, bound by the cache (or memory)
 * the weights come from, not by the FMAs. Each NR-column panel of Bp is K contiguous rows of
 * NR floats; the rows of A are read in place (no packing), `pair` panels at a time sharing
 * each broadcast of A, with enough independent accumulator chains (GEMV_CHAINS vectors) to
 * cover the FMA latency, and a prefetch a few rows ahead in each panel so the next lines are
 * in flight while these are summed. Columns of the last panel past N are zero padding: that
 * panel goes to a local row. */
#define GEMV_CHAINS 8
#define GEMV_PAIR(rows) ((rows) * NV * 2 <= GEMV_CHAINS ? 2 : 1)
#define GEMV_VECTORS(rows) ((rows) * NV * GEMV_PAIR(rows)) /* accumulators per chain */
#define GEMV_SPLITS(rows) \
    (GEMV_VECTORS(rows) >= GEMV_CHAINS ? 1 : GEMV_CHAINS / GEMV_VECTORS(rows))
#define GEMV_PREFETCH_ROWS (512 / NR) /* 2 KiB ahead in each panel */

#if defined(__GNUC__)
#define GEMV_PREFETCH(p) __builtin_prefetch((p), 0, 0)
#else
#define GEMV_PREFETCH(p) ((void)0)
#endif

/* out[r * ldo + q * NR + j] = sum_k A[r, k] * panel q of b, for r < rows, q < pair, j < NR. */
GRAPHOPT_INLINE void gemv_panels(const int rows, const int pair, int64_t K, const float* a,
                                 int64_t rsa, int64_t csa, const float* restrict b,
                                 float* restrict out, int64_t ldo) {
    const int S = pair == GEMV_PAIR(rows) ? GEMV_SPLITS(rows) : 1;
    const int64_t step = K * NR; /* from one panel to the next */
    vec_t acc[GEMV_SPLITS(1)][SMALL_M][GEMV_PAIR(1)][NV]; /* one row has the most of both */
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
        for (int r = 0; r < rows; ++r)
#pragma GCC unroll 2
            for (int q = 0; q < pair; ++q)
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v) acc[s][r][q][v] = VEC_ZERO();
    int64_t k = 0;
    for (; k + S <= K; k += S) {
#pragma GCC unroll 2
        for (int q = 0; q < pair; ++q) GEMV_PREFETCH(b + q * step + (k + GEMV_PREFETCH_ROWS) * NR);
#pragma GCC unroll 8
        for (int s = 0; s < S; ++s) {
            vec_t bv[GEMV_PAIR(1)][NV];
#pragma GCC unroll 2
            for (int q = 0; q < pair; ++q)
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v)
                    bv[q][v] = VEC_LOAD(b + q * step + (k + s) * NR + v * VLEN);
#pragma GCC unroll 4
            for (int r = 0; r < rows; ++r) {
                const vec_t ar = VEC_SET1(a[r * rsa + (k + s) * csa]);
#pragma GCC unroll 2
                for (int q = 0; q < pair; ++q)
#pragma GCC unroll 16
                    for (int v = 0; v < NV; ++v)
                        acc[s][r][q][v] = VEC_FMA(acc[s][r][q][v], ar, bv[q][v]);
            }
        }
    }
    for (; k < K; ++k)
#pragma GCC unroll 4
        for (int r = 0; r < rows; ++r) {
            const vec_t ar = VEC_SET1(a[r * rsa + k * csa]);
#pragma GCC unroll 2
            for (int q = 0; q < pair; ++q)
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v)
                    acc[0][r][q][v] = VEC_FMA(acc[0][r][q][v], ar,
                                              VEC_LOAD(b + q * step + k * NR + v * VLEN));
        }
#pragma GCC unroll 4
    for (int r = 0; r < rows; ++r)
#pragma GCC unroll 2
        for (int q = 0; q < pair; ++q)
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) {
                vec_t sum = acc[0][r][q][v];
#pragma GCC unroll 8
                for (int s = 1; s < S; ++s) sum = VEC_ADD(sum, acc[s][r][q][v]);
                VEC_STORE(out + r * ldo + q * NR + v * VLEN, sum);
            }
}

/* Column panels [p0, p1) of the small-M product: pairs of full panels straight into C, a last
 * lone or partial panel through `part`. `rows` is a constant at every call site. */
GRAPHOPT_INLINE void gemv_range(const int rows, const gemm_call* g, int64_t p0, int64_t p1) {
    const int pair = GEMV_PAIR(rows);
    int64_t p = p0;
    for (; p + pair <= p1 && (p + pair) * NR <= g->N; p += pair)
        gemv_panels(rows, pair, g->K, g->A, g->rsa, g->csa, g->Bp + p * g->K * NR, g->C + p * NR,
                    g->ldc);
    for (; p < p1; ++p) {
        const int64_t n = min64(NR, g->N - p * NR);
        float part[SMALL_M * NR];
        gemv_panels(rows, 1, g->K, g->A, g->rsa, g->csa, g->Bp + p * g->K * NR,
                    n == NR ? g->C + p * NR : part, n == NR ? g->ldc : NR);
        if (n < NR)
            for (int r = 0; r < rows; ++r)
                memcpy(g->C + r * g->ldc + p * NR, part + r * NR, (size_t)n * sizeof(float));
    }
}

#define GEMV_CASE(n) \
    case n: gemv_range(n, g, p0, p1); break;

/* Thread t of `threads`' share of the small-M product: an even share of pairs of panels (a
 * pair never straddles two threads), then the epilogue on those columns once they are final. */
static void gemv_share(const gemm_call* g, int threads, int t) {
    const int64_t np = (g->N + NR - 1) / NR, units = (np + 1) / 2;
    const int64_t p0 = min64(np, units * t / threads * 2);
    const int64_t p1 = min64(np, units * (t + 1) / threads * 2);
    switch (g->M) {
        GEMV_CASE(1)
#if SMALL_M > 1
        GEMV_CASE(2)
#endif
#if SMALL_M > 2
        GEMV_CASE(3)
#endif
#if SMALL_M > 3
        GEMV_CASE(4)
#endif
        default: break;
    }
    if (g->epi && p1 > p0)
        g->epi->fn(g->epi, g->C + p0 * NR, g->ldc, 0, p0 * NR, g->M,
                   min64(g->N, p1 * NR) - p0 * NR);
}

/* C = A Bp for M <= SMALL_M: a stream of B, so the grain rule is given its bytes too. One
 * core streams 55-70 GB/s from L3 (Zen 3; ~92 GB/s on Zen 4), two ~95 GB/s (Zen 3). With
 * build.py's bounded spin the team is awake within a run (fork/join ~1 us instead of 12-40 us
 * asleep), so an MLP's 1.6 MB and 1 MB layers pay on two threads: 784x512 took 10-12 us
 * instead of 17 us on the Zen 4 guest (`graphopt bench mlp.onnx --layers 3`). */
static void sgemv_packed(const gemm_call* g) {
#ifdef _OPENMP
    if (GRAPHOPT_WORTH_THREADS(g->M * g->N * g->K, 4 * g->K * g->N) && omp_get_max_threads() > 1) {
#pragma omp parallel
        gemv_share(g, omp_get_num_threads(), omp_get_thread_num());
        return;
    }
#endif
    gemv_share(g, 1, 0);
}

/* A rectangle of the tile grid, in panels: row panels [ip0, ip1), column panels [jp0, jp1). */
typedef struct {
    int64_t ip0, ip1, jp0, jp1;
} tile_share;

/* Work items per thread when A is packed whole: enough that a thread the OS stops for a while
 * (the cores are often shared) leaves its items to the others. */
#define ITEMS_PER_THREAD 8

/* The tiles of rectangle `s` over the K slice [pc, pc + kc). A row panel p of the slice is at
 * a + (p - a_first) * a_step: A packed whole (a_first 0, a_step K * MR, `a` already offset by
 * pc * MR) or one block packed for this slice (a_first its first panel, a_step kc * MR). Per
 * column panel, B comes from Bp or is packed here into the thread's own `b_buffer` (kc x NR,
 * kept in cache while every row panel streams through the micro-kernel) unless `b_whole`
 * holds all of B as panels (Bp, or packed in scratch). */
static void compute_block(const gemm_call* g, const float* a, int64_t a_step, int64_t a_first,
                          const float* b_whole, const tile_share* s, int64_t pc, int64_t kc,
                          float* b_buffer) {
    const int last = pc + kc >= g->K;
    for (int64_t jp = s->jp0; jp < s->jp1; ++jp) {
        const int64_t j = jp * NR, n = min64(NR, g->N - j);
        const float* b = b_buffer;
        if (b_whole)
            b = b_whole + jp * g->K * NR + pc * NR;
        else
            pack_panel(n, kc, g->B + pc * g->rsb + j * g->csb, g->csb, g->rsb, NR, b_buffer);
        for (int64_t ip = s->ip0; ip < s->ip1; ++ip) {
            const int64_t i = ip * MR, m = min64(MR, g->M - i);
            float* c = g->C + i * g->ldc + j;
            compute_tile(m, n, kc, a + (ip - a_first) * a_step, b, c, g->ldc, pc > 0);
            if (last && g->epi) g->epi->fn(g->epi, c, g->ldc, i, j, m, n);
        }
    }
}

/* Items (rectangles of C over all of K) with A packed whole: independent, so the threads take
 * them dynamically and never wait for each other. An item spans all rows unless there are too
 * few column panels to go round (each row chunk packs the B panels it reads again). Per
 * column panel, B slice by slice stays in L1 while every row panel of the item passes. */
static void compute_items(const gemm_call* g, const float* a_whole, int64_t mp, int64_t np,
                          int threads, float* b_buffer) {
    const int64_t wanted = (int64_t)ITEMS_PER_THREAD * threads;
    const int64_t rows = min64(mp, (wanted + np - 1) / np), height = (mp + rows - 1) / rows;
    int64_t width = np * rows / wanted;
    width = width < 1 ? 1 : width;
    const int64_t items = rows * ((np + width - 1) / width);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (int64_t item = 0; item < items; ++item) {
        const int64_t r = item % rows, c = item / rows;
        const int64_t ip0 = r * height, ip1 = min64(mp, ip0 + height);
        for (int64_t jp = c * width; jp < min64(np, (c + 1) * width); ++jp) {
            const tile_share one = {ip0, ip1, jp, jp + 1};
            for (int64_t pc = 0; pc < g->K; pc += KC)
                compute_block(g, a_whole + pc * MR, g->K * MR, 0, g->Bp, &one, pc,
                              min64(KC, g->K - pc), b_buffer);
        }
    }
}

/* The row items pack what did not come packed lazily, into shared whole panels: each A block
 * and each B panel by the first item that needs it, which claims it through a flag (in
 * scratch, zeroed before the parallel region); an item finding it claimed waits until it is
 * published (one panel or block: microseconds). So the threads never meet at a barrier,
 * where a thread the OS stopped would hold the others, and a panel is packed by the thread
 * about to read it, into its own cache. */
#define PACKED (1 << 30)

/* 1 if the caller is to pack what `flag` guards (and then publish it); 0 once it is packed. */
static int claim(int* flag) {
#ifdef _OPENMP
    int seen;
#pragma omp atomic read seq_cst
    seen = *flag;
    if (seen >= PACKED) return 0;
#pragma omp atomic capture seq_cst
    {
        seen = *flag;
        *flag += 1;
    }
    if (seen == 0) return 1;
    while (seen < PACKED) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_ia32_pause();
#endif
#pragma omp atomic read seq_cst
        seen = *flag;
    }
    return 0;
#else
    return *flag < PACKED;
#endif
}

static void publish(int* flag) {
#ifdef _OPENMP
#pragma omp atomic write seq_cst
#endif
    *flag = PACKED;
}

/* Row panels [ip0, ip1) of A over all of K into their place in a_whole, once. */
static void ensure_a_block(const gemm_call* g, float* a_whole, int* flag, int64_t ip0,
                           int64_t ip1) {
    if (!claim(flag)) return;
    for (int64_t ip = ip0; ip < ip1; ++ip)
        pack_panel(min64(MR, g->M - ip * MR), g->K, g->A + ip * MR * g->rsa, g->rsa, g->csa, MR,
                   a_whole + ip * g->K * MR);
    publish(flag);
}

/* Column panel jp of B over all of K into its place in b_whole, once. */
static void ensure_b_panel(const gemm_call* g, float* b_whole, int* flag, int64_t jp) {
    if (!claim(flag)) return;
    pack_panel(min64(NR, g->N - jp * NR), g->K, g->B + jp * NR * g->csb, g->csb, g->rsb, NR,
               b_whole + jp * g->K * NR);
    publish(flag);
}

/* A larger than an L2 block (MC x KC floats), B whole as panels: items are blocks of rows few
 * enough that their A panels over all of K stay in L2, by a range of columns; each B panel is
 * read from L3 once per block instead of all of A once per column panel (at 2 threads the two
 * cores would otherwise share the L3 bandwidth streaming A). Ap / Bp are read in place, else
 * A goes to a_whole and B to b_whole lazily (flags: one per row block, then one per column
 * panel). Items go along the columns of a row block, whose A stays in L2 from one to the
 * next, unless A is packed here: then down the rows, so that items running at once pack
 * different A blocks instead of one waiting for the other's. Each item starts on its own
 * share of the columns (by row block modulo the threads), so that concurrent items pack
 * different B panels. */
static void compute_row_items(const gemm_call* g, const float* Ap, float* a_whole,
                              float* b_whole, int* flags, int64_t mp, int64_t np, int threads) {
    int64_t height = (int64_t)MC * KC / ((int64_t)MR * g->K);
    height = height < 1 ? 1 : height;
    /* twice the items of compute_items: B panels come packed or shared, so a finer cut costs
     * no packing, only A blocks read again from L3, and leaves a shorter tail at the end */
    const int64_t rows = (mp + height - 1) / height;
    const int64_t wanted = (int64_t)2 * ITEMS_PER_THREAD * threads;
    const int64_t cols = rows >= wanted ? 1 : min64(np, (wanted + rows - 1) / rows);
    const int64_t width = (np + cols - 1) / cols;
    const float* a = Ap ? Ap : a_whole;
    const float* b = g->Bp ? g->Bp : b_whole;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (int64_t item = 0; item < rows * cols; ++item) {
        const int64_t r = Ap ? item / cols : item % rows, c = Ap ? item % cols : item / rows;
        const int64_t ip0 = r * height, ip1 = min64(mp, ip0 + height);
        const int64_t jp0 = c * width, span = min64(np, jp0 + width) - jp0;
        const int64_t first = span * (r % threads) / threads;
        if (!Ap) ensure_a_block(g, a_whole, flags + r, ip0, ip1);
        for (int64_t q = 0; q < span; ++q) {
            const int64_t jp = jp0 + (first + q) % span;
            const tile_share s = {ip0, ip1, jp, jp + 1};
            if (!g->Bp) ensure_b_panel(g, b_whole, flags + mp + jp, jp);
            compute_block(g, a, g->K * MR, 0, b, &s, 0, g->K, NULL);
        }
    }
}

/* A too large to pack whole: one MC x KC block at a time, packed by all threads together,
 * then each computes its fixed share of the columns, with a barrier before the next block. */
static void compute_by_blocks(const gemm_call* g, int64_t mp, int64_t np, int threads, int t,
                              float* a_block, float* b_buffer) {
    for (int64_t ib = 0; ib < mp; ib += MC / MR) {
        const tile_share s = {ib, min64(ib + MC / MR, mp), np * t / threads,
                              np * (t + 1) / threads};
        for (int64_t pc = 0; pc < g->K; pc += KC) {
            const int64_t kc = min64(KC, g->K - pc);
            pack_panels(min64(MC, g->M - ib * MR), kc, g->A + ib * MR * g->rsa + pc * g->csa,
                        g->rsa, g->csa, MR, a_block);
            compute_block(g, a_block, kc * MR, ib, g->Bp, &s, pc, kc, b_buffer);
#ifdef _OPENMP
#pragma omp barrier /* every thread is done with this A block before it is repacked */
#endif
        }
    }
}

/* The flags of the row items' lazy packing (zeroed), or NULL when the call runs otherwise or
 * packs nothing at run time. Scratch holds A's panels (unless Ap), B's (unless Bp), then
 * mp + np flags: the layout graphopt_sgemm_scratch and GemmTiles.scratch_bytes size. */
static int* row_item_flags(const gemm_call* g, const float* Ap, float* scratch) {
    const int64_t mp = (g->M + MR - 1) / MR, np = (g->N + NR - 1) / NR;
    const int64_t a_floats = mp * MR * g->K, b_floats = np * NR * g->K;
    if ((Ap && g->Bp) || (!Ap && a_floats > PACK_WHOLE) ||
        !by_row_items(a_floats, b_floats, g->Bp != NULL))
        return NULL;
    int* flags = (int*)(scratch + (Ap ? 0 : a_floats) + (g->Bp ? 0 : b_floats));
    memset(flags, 0, (size_t)(mp + np) * sizeof(int));
    return flags;
}

/* Thread t of `threads`' share of the packed GEMM; see the file comment. */
static void blocked_share(const gemm_call* g, const float* Ap, float* scratch, int* flags,
                          int threads, int t) {
    const int64_t mp = (g->M + MR - 1) / MR, np = (g->N + NR - 1) / NR;
    float b_raw[KC * NR + 64 / sizeof(float)]; /* 64-byte aligned below: no split loads */
    float* b_buffer = (float*)(((uintptr_t)b_raw + 63) & ~(uintptr_t)63);
    if (!Ap && mp * MR * g->K > PACK_WHOLE) {
        compute_by_blocks(g, mp, np, threads, t, scratch, b_buffer);
    } else if (by_row_items(mp * MR * g->K, np * NR * g->K, g->Bp != NULL)) {
        compute_row_items(g, Ap, scratch, scratch + (Ap ? 0 : mp * MR * g->K), flags, mp, np,
                          threads);
    } else {
        if (!Ap) pack_panels(g->M, g->K, g->A, g->rsa, g->csa, MR, scratch); /* barrier */
        compute_items(g, Ap ? Ap : scratch, mp, np, threads, b_buffer);
    }
}

/* The packed GEMM in one parallel region (one fork/join per call) when it is worth threads;
 * below the grain no region at all (even an `if (0)` region costs a team setup per call). */
static void sgemm_blocked(const gemm_call* g, const float* Ap, float* scratch) {
    int* flags = row_item_flags(g, Ap, scratch);
#ifdef _OPENMP
    if (GRAPHOPT_WORTH_THREADS(g->M * g->N * g->K, 0) && omp_get_max_threads() > 1) {
#pragma omp parallel
        blocked_share(g, Ap, scratch, flags, omp_get_num_threads(), omp_get_thread_num());
        return;
    }
    if (omp_get_level() > 0) { /* inside a caller's region (Winograd points, conv blocks), */
#pragma omp parallel num_threads(1) /* even a team of one: the loops inside must bind to */
        blocked_share(g, Ap, scratch, flags, 1, 0); /* their own team, not to the caller's */
        return;
    }
#endif
    blocked_share(g, Ap, scratch, flags, 1, 0);
}

void graphopt_sgemm(int64_t M, int64_t N, int64_t K,
                    const float* A, int64_t rsa, int64_t csa,
                    const float* B, int64_t rsb, int64_t csb,
                    float* C, int64_t ldc, float* scratch, const graphopt_epilogue* epi) {
    graphopt_sgemm_ex(M, N, K, A, rsa, csa, NULL, B, rsb, csb, NULL, C, ldc, scratch, epi);
}

void graphopt_sgemm_ex(int64_t M, int64_t N, int64_t K,
                       const float* A, int64_t rsa, int64_t csa, const float* Ap,
                       const float* B, int64_t rsb, int64_t csb, const float* Bp,
                       float* C, int64_t ldc, float* scratch, const graphopt_epilogue* epi) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; ++i) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        if (epi) epi->fn(epi, C, ldc, 0, 0, M, N);
        return;
    }
    const gemm_call g = {M, N, K, A, rsa, csa, B, rsb, csb, Bp, C, ldc, epi};
    if (!Ap && M <= SMALL_M) {
        if (Bp)
            sgemv_packed(&g);
        else
            sgemm_small_m(M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, epi);
        return;
    }
    sgemm_blocked(&g, Ap, scratch);
}

void graphopt_set_num_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int graphopt_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
