/* Single-precision GEMM: packed panels + a register-tiled micro-kernel the compiler vectorizes.
 *
 * Blocking (BLIS-style, simplified): for each KC-deep slice of K, B is packed into column panels
 * of NR (zero-padded) and A into row panels of MR; then every MR x NR tile of C is computed by
 * the micro-kernel from one A panel and one B panel. The tile loop is the OpenMP-parallel one.
 * After the last K slice, the epilogue runs on the tile while it is hot in cache.
 *
 * Small M (a few rows, e.g. batch-1 fully connected layers) skips packing: C rows are built with
 * an i-k-j loop whose inner j loop streams a contiguous row of B.
 */
#include <string.h>

#include "graphopt_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef GRAPHOPT_PORTABLE
#define MR 4
#define NR 8
#else
#define MR 6
#define NR 32
#endif
#define KC 256
#define NC 4096
#define MC 1032 /* a multiple of MR in both configurations */
#define SMALL_M 4

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int64_t graphopt_sgemm_scratch(int64_t M, int64_t N, int64_t K) {
    if (M <= SMALL_M) return 0;
    int64_t kc = min64(K, KC);
    return round_up(min64(M, MC), MR) * kc + round_up(min64(N, NC), NR) * kc + 16;
}

/* acc = a_panel (kc x MR) * b_panel (kc x NR); C tile = acc (+ C when accumulate). */
static void micro_kernel(int64_t kc, const float* restrict a, const float* restrict b,
                         float* restrict c, int64_t ldc, int accumulate, int64_t m, int64_t n) {
    float acc[MR][NR];
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NR; ++j) acc[r][j] = 0.0f;
    for (int64_t k = 0; k < kc; ++k) {
        const float* bk = b + k * NR;
        const float* ak = a + k * MR;
        for (int r = 0; r < MR; ++r) {
            const float ar = ak[r];
            for (int j = 0; j < NR; ++j) acc[r][j] += ar * bk[j];
        }
    }
    if (m == MR && n == NR) {
        for (int r = 0; r < MR; ++r) {
            float* cr = c + r * ldc;
            if (accumulate)
                for (int j = 0; j < NR; ++j) cr[j] += acc[r][j];
            else
                for (int j = 0; j < NR; ++j) cr[j] = acc[r][j];
        }
        return;
    }
    for (int64_t r = 0; r < m; ++r) {
        float* cr = c + r * ldc;
        if (accumulate)
            for (int64_t j = 0; j < n; ++j) cr[j] += acc[r][j];
        else
            for (int64_t j = 0; j < n; ++j) cr[j] = acc[r][j];
    }
}

/* Pack `count` rows (of A) or columns (of B) into panels of `width`, zero-padded:
 * dst[p][k][w] = src[(p*width + w) * stride + k * k_stride] for k < kc. Element strides:
 * A panels take rows (stride rsa, k_stride csa), B panels take columns (csb, rsb). */
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
#pragma omp parallel for schedule(static) if (M * N * K >= (1 << 20))
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

void graphopt_sgemm(int64_t M, int64_t N, int64_t K,
                    const float* A, int64_t rsa, int64_t csa,
                    const float* B, int64_t rsb, int64_t csb,
                    float* C, int64_t ldc, float* scratch, const graphopt_epilogue* epi) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; ++i) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        if (epi) epi->fn(epi, C, ldc, 0, 0, M, N);
        return;
    }
    if (M <= SMALL_M) {
        sgemm_small_m(M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, epi);
        return;
    }
    const int64_t kc_max = min64(K, KC);
    float* a_packed = scratch;
    float* b_packed = scratch + round_up(min64(M, MC), MR) * kc_max;
    /* One parallel region per call: every thread walks the same blocks; the work-sharing
     * loops inside (packing, tiles) end in barriers, so a block's panels are complete before
     * any tile reads them and stay untouched until every tile is done. */
#ifdef _OPENMP
#pragma omp parallel if (M * N * K >= (1 << 20))
#endif
    for (int64_t jc = 0; jc < N; jc += NC) {
        const int64_t nc = min64(NC, N - jc);
        for (int64_t ic = 0; ic < M; ic += MC) {
            const int64_t mc = min64(MC, M - ic);
            for (int64_t pc = 0; pc < K; pc += KC) {
                const int64_t kc = min64(KC, K - pc);
                const int last = pc + kc >= K;
                const int64_t np = (nc + NR - 1) / NR, mp = (mc + MR - 1) / MR;
                pack_panels(nc, kc, B + pc * rsb + jc * csb, csb, rsb, NR, b_packed);
                pack_panels(mc, kc, A + ic * rsa + pc * csa, rsa, csa, MR, a_packed);
#ifdef _OPENMP
#pragma omp for collapse(2) schedule(static)
#endif
                for (int64_t jp = 0; jp < np; ++jp) {
                    for (int64_t ip = 0; ip < mp; ++ip) {
                        const int64_t i = ip * MR, j = jp * NR;
                        const int64_t m = min64(MR, mc - i), n = min64(NR, nc - j);
                        float* c = C + (ic + i) * ldc + jc + j;
                        micro_kernel(kc, a_packed + ip * MR * kc, b_packed + jp * NR * kc,
                                     c, ldc, pc > 0, m, n);
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
