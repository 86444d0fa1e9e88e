/* Single-precision GEMM: packed panels around a register-tiled micro-kernel written per ISA.
 *
 * Blocking (BLIS-style): for each NC-wide block of columns and KC-deep slice of K, B is packed
 * into column panels of NR (zero-padded); for each MC-high block of rows, A is packed into row
 * panels of MR; then every MR x NR tile of C is computed by the micro-kernel from one A panel
 * and one B panel, its MR * NR / VLEN vector accumulators staying in registers for the whole
 * slice. Tile sizes, blocking and the ISA come from the generated graphopt_config.h. The tile
 * loop is the OpenMP-parallel one. After the last K slice the epilogue runs on each tile while
 * it is hot in L1.
 *
 * Weights packed at compile time (graphopt_sgemm_ex's Ap / Bp) skip their packing step: the
 * panels span the whole K, so a slice is an offset into them. With both operands packed (at
 * compile time, or here in one piece when they fit one B block) no block is shared between
 * tiles, and each tile runs over all of K at once (sgemm_packed).
 *
 * Small M (a few rows, e.g. batch-1 fully connected layers on an unpacked B) skips packing:
 * C rows are built with an i-k-j loop whose inner j loop streams a contiguous row of B.
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
#define NC GRAPHOPT_GEMM_NC
#define SMALL_M GRAPHOPT_GEMM_SMALL_M
#define PACK_WHOLE GRAPHOPT_GEMM_PACK_WHOLE
/* below this many multiply-adds a GEMM runs on one thread (a fork/join costs more) */
#define PARALLEL_MIN_WORK GRAPHOPT_PARALLEL_MIN_MACS

#if MC % MR != 0 || NC % NR != 0
#error "graphopt_config.h: MC must be a multiple of MR and NC of NR"
#endif
#if MR > 16
#error "graphopt_config.h: MR above 16 needs more cases in tile_rows"
#endif

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int64_t graphopt_sgemm_scratch(int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0 || K <= 0 || M <= SMALL_M) return 0;
    const int64_t a_whole = round_up(M, MR) * K, b_whole = round_up(N, NR) * K;
    if (a_whole <= PACK_WHOLE && b_whole <= PACK_WHOLE) return a_whole + b_whole;
    int64_t kc = min64(K, KC);
    return round_up(min64(M, MC), MR) * kc + round_up(min64(N, NC), NR) * kc;
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

/* Pack `count` rows (of A) or columns (of B) into panels of `width`, zero-padded:
 * dst[p][k][w] = src[(p*width + w) * stride + k * k_stride] for k < kc. Element strides:
 * A panels take rows (stride rsa, k_stride csa), B panels take columns (csb, rsb). Called
 * inside a parallel region: the panels are shared among its threads. */
static void pack_panels(int64_t count, int64_t kc, const float* src, int64_t stride,
                        int64_t k_stride, int64_t width, float* dst) {
    int64_t panels = (count + width - 1) / width;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t p = 0; p < panels; ++p) {
        int64_t first = p * width, live = min64(width, count - first);
        float* out = dst + p * width * kc;
        for (int64_t k = 0; k < kc; ++k) {
            const float* in = src + first * stride + k * k_stride;
            float* o = out + k * width;
            if (stride == 1)
                for (int64_t w = 0; w < live; ++w) o[w] = in[w];
            else
                for (int64_t w = 0; w < live; ++w) o[w] = in[w * stride];
            for (int64_t w = live; w < width; ++w) o[w] = 0.0f;
        }
    }
}

/* Few rows: C[i, :] = sum_k A[i, k] * B[k, :] with the j loop contiguous when csb == 1. */
static void sgemm_small_m(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsa,
                          int64_t csa, const float* B, int64_t rsb, int64_t csb, float* C,
                          int64_t ldc, const graphopt_epilogue* epi) {
    const int64_t chunk = 256;
    int64_t chunks = (N + chunk - 1) / chunk;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (M * N * K >= PARALLEL_MIN_WORK)
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

/* pack_panels over all of K, in a parallel region of its own: the layout of Ap / Bp. */
static void pack_whole(int64_t count, int64_t K, const float* src, int64_t stride,
                       int64_t k_stride, int64_t width, float* dst, int64_t work) {
#ifdef _OPENMP
#pragma omp parallel if (work >= PARALLEL_MIN_WORK)
#endif
    pack_panels(count, K, src, stride, k_stride, width, dst);
    (void)work;
}

/* Both operands packed (a convolution on packed weights and packed im2col): the tiles share
 * nothing, so each computes its dot products over all of K in registers and stores once, and
 * the threads meet at one barrier per call instead of one per block. */
static void sgemm_packed(int64_t M, int64_t N, int64_t K, const float* Ap, const float* Bp,
                         float* C, int64_t ldc, const graphopt_epilogue* epi) {
    const int64_t np = (N + NR - 1) / NR, mp = (M + MR - 1) / MR;
#ifdef _OPENMP
#pragma omp parallel for collapse(2) schedule(static) if (M * N * K >= PARALLEL_MIN_WORK)
#endif
    for (int64_t jp = 0; jp < np; ++jp) {
        for (int64_t ip = 0; ip < mp; ++ip) {
            const int64_t i = ip * MR, j = jp * NR;
            const int64_t m = min64(MR, M - i), n = min64(NR, N - j);
            float* c = C + i * ldc + j;
            compute_tile(m, n, K, Ap + ip * K * MR, Bp + jp * K * NR, c, ldc, 0);
            if (epi) epi->fn(epi, c, ldc, i, j, m, n);
        }
    }
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
    if (!Ap && !Bp && M <= SMALL_M) {
        sgemm_small_m(M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, epi);
        return;
    }
    if (Ap && Bp) {
        sgemm_packed(M, N, K, Ap, Bp, C, ldc, epi);
        return;
    }
    /* Operands not packed at compile time but small enough (one B block each): pack them
     * whole (in scratch), then run as above: a fork/join per packing and one for the tiles
     * instead of a few barriers per block. */
    if (!Ap && !Bp && round_up(M, MR) * K <= PACK_WHOLE && round_up(N, NR) * K <= PACK_WHOLE) {
        float* b_whole = scratch + round_up(M, MR) * K;
        pack_whole(M, K, A, rsa, csa, MR, scratch, M * N * K);
        pack_whole(N, K, B, csb, rsb, NR, b_whole, M * N * K);
        sgemm_packed(M, N, K, scratch, b_whole, C, ldc, epi);
        return;
    }
    if (Ap && round_up(N, NR) * K <= PACK_WHOLE) {
        pack_whole(N, K, B, csb, rsb, NR, scratch, M * N * K);
        sgemm_packed(M, N, K, Ap, scratch, C, ldc, epi);
        return;
    }
    if (Bp && round_up(M, MR) * K <= PACK_WHOLE) {
        pack_whole(M, K, A, rsa, csa, MR, scratch, M * N * K);
        sgemm_packed(M, N, K, scratch, Bp, C, ldc, epi);
        return;
    }
    const int64_t kc_max = min64(K, KC);
    float* a_buffer = scratch;
    float* b_buffer = scratch + (Ap ? 0 : round_up(min64(M, MC), MR) * kc_max);
    /* One parallel region per call: every thread walks the same blocks; the work-sharing
     * loops inside (packing, tiles) end in barriers, so a block's panels are complete before
     * any tile reads them and stay untouched until every tile is done. */
#ifdef _OPENMP
#pragma omp parallel if (M * N * K >= PARALLEL_MIN_WORK)
#endif
    for (int64_t jc = 0; jc < N; jc += NC) {
        const int64_t nc = min64(NC, N - jc), np = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < K; pc += KC) {
            const int64_t kc = min64(KC, K - pc);
            const int last = pc + kc >= K;
            const float* b_panels = Bp ? Bp + (jc / NR) * K * NR + pc * NR : b_buffer;
            const int64_t b_step = Bp ? K * NR : kc * NR;
            if (!Bp) pack_panels(nc, kc, B + pc * rsb + jc * csb, csb, rsb, NR, b_buffer);
            for (int64_t ic = 0; ic < M; ic += MC) {
                const int64_t mc = min64(MC, M - ic), mp = (mc + MR - 1) / MR;
                const float* a_panels = Ap ? Ap + (ic / MR) * K * MR + pc * MR : a_buffer;
                const int64_t a_step = Ap ? K * MR : kc * MR;
                if (!Ap) pack_panels(mc, kc, A + ic * rsa + pc * csa, rsa, csa, MR, a_buffer);
#ifdef _OPENMP
#pragma omp for collapse(2) schedule(static)
#endif
                for (int64_t jp = 0; jp < np; ++jp) {
                    for (int64_t ip = 0; ip < mp; ++ip) {
                        const int64_t i = ip * MR, j = jp * NR;
                        const int64_t m = min64(MR, mc - i), n = min64(NR, nc - j);
                        float* c = C + (ic + i) * ldc + jc + j;
                        compute_tile(m, n, kc, a_panels + ip * a_step, b_panels + jp * b_step,
                                     c, ldc, pc > 0);
                        if (last && epi) epi->fn(epi, c, ldc, ic + i, jc + j, m, n);
                    }
                }
            }
        }
    }
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
