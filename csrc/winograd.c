/* Winograd convolution F(4x4, 3x3) and F(2x2, 3x3): 36 (16) multiplications per 4x4 (2x2)
 * output tile and channel pair instead of 144 (36), the products done as GEMMs: on AVX-512
 * by the lane path's own 16 x 16 register tile (below), elsewhere by graphopt_sgemm_ex's
 * micro-kernels.
 *
 * F(4x4, 3x3), with the matrices of Lavin & Gray ("Fast Algorithms for Convolutional Neural
 * Networks", 2016), interpolation points 0, +-1, +-2, infinity:
 *
 *   B^T = [4  0 -5  0 1 0]   G = [ 1/4     0     0]   A^T = [1 1  1 1  1 0]
 *         [0 -4 -4  1 1 0]       [-1/6  -1/6  -1/6]         [0 1 -1 2 -2 0]
 *         [0  4 -4 -1 1 0]       [-1/6   1/6  -1/6]         [0 1  1 4  4 0]
 *         [0 -2 -1  2 1 0]       [1/24  1/12   1/6]         [0 1 -1 8 -8 1]
 *         [0  2 -1 -2 1 0]       [1/24 -1/12   1/6]
 *         [0  4  0 -5 0 1]       [   0     0     1]
 *
 * F(2x2, 3x3) (points 0, +-1, infinity), for planes too small to give F(4x4) enough tiles:
 *
 *   B^T = [1  0 -1  0]   G = [  1    0    0]   A^T = [1 1  1  0]
 *         [0  1  1  0]       [1/2  1/2  1/2]         [0 1 -1 -1]
 *         [0 -1  1  0]       [1/2 -1/2  1/2]
 *         [0  1  0 -1]       [  0    0    1]
 *
 * An output tile is Y = A^T [ sum_c U[m, c] . V[c] ] A with U = G w G^T (weights, done at
 * compile time in float64) and V = B^T d B (d: the input tile, zero outside the image).
 * Each position xi of the transformed tile (a "point") is one GEMM: P[xi] (M x tiles) =
 * U[xi] (M x C) @ V[xi] (C x tiles). Three phases, each parallel over independent items
 * that the threads take dynamically (a core the OS gives to another process leaves its items
 * to the other instead of holding it at the phase's barrier):
 *   1. input transform per channel, written straight into the layout the GEMM reads (the
 *      generic path: one B panel of NR tiles at a time);
 *   2. the GEMMs (both operands packed: each tile runs over all of C in registers);
 *   3. output transform per band of output rows and group of output channels (a 28x28 plane
 *      has 7 bands: alone they would split 4/3 between 2 threads), then the epilogue on the
 *      part of the band while hot.
 * The generic path's 1-D transforms run over runs of tiles held in small arrays, lanes
 * contiguous, so the compiler vectorizes them across tiles; the lane path's work on vectors
 * of 16 tiles.
 */
#include <string.h>

#include "graphopt_simd.h"
#include "graphopt_winograd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define NR GRAPHOPT_GEMM_NR
#define MR GRAPHOPT_GEMM_MR
#define MAX_ALPHA 6 /* F(4x4, 3x3) */
#define CHUNK 16    /* tiles per run of the output transform */
#define IN_CHUNK NR /* tiles per run of the input transform: one B panel */
#define CHANNEL_GROUP 16 /* output channels per work item of the output transform */

#ifdef GRAPHOPT_WINOGRAD_LANES
#define TILE_PAD GRAPHOPT_WINOGRAD_LANES /* the lane path's tile rows: whole vectors */
#else
#define TILE_PAD NR /* the GEMM's B panels */
#endif

static int64_t wino_min(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t wino_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

typedef struct {
    int64_t tiles_h, tiles_w, tiles;
    int64_t tiles_padded; /* tiles rounded up to TILE_PAD */
    int64_t points;       /* (tile + 2)^2 */
} tiling;

static tiling tiling_of(const graphopt_conv2d_shape* s, int tile) {
    tiling t;
    t.points = (int64_t)(tile + 2) * (tile + 2);
    t.tiles_h = (s->out_height + tile - 1) / tile;
    t.tiles_w = (s->out_width + tile - 1) / tile;
    t.tiles = t.tiles_h * t.tiles_w;
    t.tiles_padded = wino_round_up(t.tiles, TILE_PAD);
    return t;
}

int64_t graphopt_winograd_scratch(const graphopt_conv2d_shape* s, int64_t out_channels,
                                  int tile) {
    const tiling t = tiling_of(s, tile);
#ifdef GRAPHOPT_WINOGRAD_LANES
    return t.points * (s->channels + out_channels) * t.tiles_padded;
#else
    return t.points * (s->channels * t.tiles_padded + out_channels * t.tiles);
#endif
}

#ifdef GRAPHOPT_WINOGRAD_LANES
/* The lane path (AVX-512): 16 tiles of a tile row per vector, one lane each.
 *
 * Layouts (xi: point): V[c][xi][t] and P[m][xi][t], rows of tiles_padded (a multiple of 16)
 * floats over the tiles in row-major order, a channel's points together (each transform
 * reads or writes one contiguous block per channel instead of 36 far-apart rows: 2.5x faster
 * transforms); U[xi] in 16-row panels over all of C, U[xi][m / 16][c][m % 16]. The input
 * transform reads each input row of a tile row's 16 tiles as 5 (F(2x2): 3) masked vector
 * loads (zeros outside the image, no padded copy) and splits them into the alpha columns by
 * lane permutes; the output transform interleaves its 4 (2)
 * columns back into whole output rows the same way. The GEMM is a 16 x 16 register tile:
 * 16 output channels by 16 tiles, one vector load of V and 16 broadcast FMAs per channel.
 * With tiles as the vector lanes, a plane of 16 tiles (14x14 in F(4x4), 7x7 in F(2x2)) fills
 * the tile exactly, where the 32-column GEMM panels would be half padding. */
#include <immintrin.h>

#define LANES GRAPHOPT_WINOGRAD_LANES
#define U_ROWS LANES /* rows per packed U panel (ops/winograd.py panel_rows) */

typedef __m512 lanes_t;

/* Lanes k of a 16-float load at column `first` of a row that fall in [0, width). */
static __mmask16 inside_lanes(int64_t first, int64_t width) {
    int64_t lo = -first, hi = width - first;
    lo = lo < 0 ? 0 : lo;
    hi = hi > LANES ? LANES : hi;
    if (hi <= lo) return 0;
    return (__mmask16)((((uint32_t)1 << hi) - 1) & ~(((uint32_t)1 << lo) - 1));
}

static __mmask16 first_lanes(int64_t n) { return inside_lanes(0, n); }

/* col[j][l] = row[tile * l + j] for j < tile + 2, l < 16, from a[q] = row[16 q ..] (q <= tile):
 * the columns of 16 consecutive tiles. */
GRAPHOPT_INLINE void split_columns(const int tile, const lanes_t* a, lanes_t* col) {
    const __m512i next = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17);
    if (tile == 4) {
        const __m512i i01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21,
                                              25, 29);
        const __m512i i23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23,
                                              27, 31);
        const lanes_t u01 = _mm512_permutex2var_ps(a[0], i01, a[1]);
        const lanes_t u23 = _mm512_permutex2var_ps(a[0], i23, a[1]);
        const lanes_t w01 = _mm512_permutex2var_ps(a[2], i01, a[3]);
        const lanes_t w23 = _mm512_permutex2var_ps(a[2], i23, a[3]);
        col[0] = _mm512_shuffle_f32x4(u01, w01, 0x44); /* low halves of both */
        col[1] = _mm512_shuffle_f32x4(u01, w01, 0xEE); /* high halves */
        col[2] = _mm512_shuffle_f32x4(u23, w23, 0x44);
        col[3] = _mm512_shuffle_f32x4(u23, w23, 0xEE);
        col[4] = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(a[4]), _mm512_castps_si512(col[0]), 1));
        col[5] = _mm512_permutex2var_ps(col[1], next, a[4]);
    } else {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                               28, 30);
        const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                              29, 31);
        col[0] = _mm512_permutex2var_ps(a[0], even, a[1]);
        col[1] = _mm512_permutex2var_ps(a[0], odd, a[1]);
        col[2] = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(a[2]), _mm512_castps_si512(col[0]), 1));
        col[3] = _mm512_permutex2var_ps(col[1], next, a[2]);
    }
}

/* The inverse for an output row: r[q][k] = o[k % tile][(16 q + k) / tile], q < tile. */
GRAPHOPT_INLINE void join_columns(const int tile, const lanes_t* o, lanes_t* r) {
    if (tile == 4) {
        const __m512i a_lo = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11,
                                               19, 27);
        const __m512i a_hi = _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7,
                                               15, 23, 31);
        const lanes_t u01 = _mm512_shuffle_f32x4(o[0], o[1], 0x44);
        const lanes_t w01 = _mm512_shuffle_f32x4(o[0], o[1], 0xEE);
        const lanes_t u23 = _mm512_shuffle_f32x4(o[2], o[3], 0x44);
        const lanes_t w23 = _mm512_shuffle_f32x4(o[2], o[3], 0xEE);
        r[0] = _mm512_permutex2var_ps(u01, a_lo, u23);
        r[1] = _mm512_permutex2var_ps(u01, a_hi, u23);
        r[2] = _mm512_permutex2var_ps(w01, a_lo, w23);
        r[3] = _mm512_permutex2var_ps(w01, a_hi, w23);
    } else {
        const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                             23);
        const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14,
                                             30, 15, 31);
        r[0] = _mm512_permutex2var_ps(o[0], lo, o[1]);
        r[1] = _mm512_permutex2var_ps(o[0], hi, o[1]);
    }
}

/* The 1-D input transform B^T on vectors: out[r] = sum_i B^T[r][i] d[i]. */
GRAPHOPT_INLINE void input_pass_lanes(const int tile, const lanes_t* d, lanes_t* out) {
    if (tile == 4) {
        const lanes_t four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
        const lanes_t two = _mm512_set1_ps(2.0f);
        const lanes_t d12 = _mm512_sub_ps(d[1], d[2]), d31 = _mm512_sub_ps(d[3], d[1]);
        const lanes_t d42 = _mm512_sub_ps(d[4], d[2]);
        out[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
        out[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
        out[2] = _mm512_fmadd_ps(four, d12, _mm512_sub_ps(d[4], d[3]));
        out[3] = _mm512_fmadd_ps(two, d31, d42);
        out[4] = _mm512_fnmadd_ps(two, d31, d42);
        out[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
    } else {
        out[0] = _mm512_sub_ps(d[0], d[2]);
        out[1] = _mm512_add_ps(d[1], d[2]);
        out[2] = _mm512_sub_ps(d[2], d[1]);
        out[3] = _mm512_sub_ps(d[1], d[3]);
    }
}

/* The 1-D output transform A^T on vectors: out[r] = sum_i A^T[r][i] p[i], r < tile. */
GRAPHOPT_INLINE void output_pass_lanes(const int tile, const lanes_t* p, lanes_t* out) {
    if (tile == 4) {
        const lanes_t s12 = _mm512_add_ps(p[1], p[2]), d12 = _mm512_sub_ps(p[1], p[2]);
        const lanes_t s34 = _mm512_add_ps(p[3], p[4]), d34 = _mm512_sub_ps(p[3], p[4]);
        out[0] = _mm512_add_ps(_mm512_add_ps(p[0], s12), s34);
        out[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
        out[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
        out[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), p[5]);
    } else {
        out[0] = _mm512_add_ps(_mm512_add_ps(p[0], p[1]), p[2]);
        out[1] = _mm512_sub_ps(_mm512_sub_ps(p[1], p[2]), p[3]);
    }
}

/* Point strides of V and P (the lane layouts above). */
static int64_t v_point_stride(const tiling* tl, int64_t C) { (void)C; return tl->tiles_padded; }
static int64_t p_point_stride(const tiling* tl, int64_t M) { (void)M; return tl->tiles_padded; }

/* Channel c's transformed tiles V[c][xi][t] for the tiles of each tile row, 16 at a time. */
GRAPHOPT_INLINE void input_channel(const int tile, const float* x, const graphopt_conv2d_shape* s,
                                   const tiling* tl, int64_t c, int64_t vstride, float* V) {
    const int alpha = tile + 2;
    float* v = V + c * tl->points * tl->tiles_padded;
    for (int64_t ty = 0; ty < tl->tiles_h; ++ty) {
        const int64_t top = tile * ty - s->pad_top;
        for (int64_t tx0 = 0; tx0 < tl->tiles_w; tx0 += LANES) {
            const int64_t left = tile * tx0 - s->pad_left;
            __mmask16 load[MAX_ALPHA - 1];
            for (int q = 0; q <= tile; ++q) load[q] = inside_lanes(left + LANES * q, s->width);
            lanes_t h[MAX_ALPHA][MAX_ALPHA]; /* h[i][b]: row i after the horizontal pass */
            for (int i = 0; i < alpha; ++i) {
                const int64_t iy = top + i;
                lanes_t a[MAX_ALPHA - 1], col[MAX_ALPHA];
                for (int q = 0; q <= tile; ++q)
                    a[q] = iy >= 0 && iy < s->height
                               ? _mm512_maskz_loadu_ps(load[q], x + iy * s->width + left +
                                                                    LANES * q)
                               : _mm512_setzero_ps();
                split_columns(tile, a, col);
                input_pass_lanes(tile, col, h[i]);
            }
            const __mmask16 store = first_lanes(tl->tiles_w - tx0);
            float* dst = v + ty * tl->tiles_w + tx0;
            for (int b = 0; b < alpha; ++b) { /* vertical pass over column b of h */
                lanes_t column[MAX_ALPHA], out[MAX_ALPHA];
                for (int i = 0; i < alpha; ++i) column[i] = h[i][b];
                input_pass_lanes(tile, column, out);
                for (int r = 0; r < alpha; ++r)
                    _mm512_mask_storeu_ps(dst + (r * alpha + b) * vstride, store, out[r]);
            }
        }
    }
    if (tl->tiles_padded > tl->tiles) /* zero lanes past the last tile: finite GEMM inputs */
        for (int xi = 0; xi < alpha * alpha; ++xi)
            _mm512_mask_storeu_ps(v + xi * vstride + tl->tiles, first_lanes(tl->tiles_padded -
                                                                            tl->tiles),
                                  _mm512_setzero_ps());
}

/* p[r][l] = sum_c u[c][r] v[c][l] for r < rows (<= 16), lanes l in `live`: the register
 * tile, 16 accumulators over all of C; `u` is one packed panel of 16 rows, v's rows ldv apart. */
static void lane_tile(int64_t rows, __mmask16 live, int64_t C, const float* restrict u,
                      const float* restrict v, int64_t ldv, float* restrict p, int64_t ldp) {
    lanes_t acc[U_ROWS];
#pragma GCC unroll 16
    for (int r = 0; r < U_ROWS; ++r) acc[r] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t c = 0; c < C; ++c) {
        const lanes_t b = _mm512_loadu_ps(v + c * ldv);
#pragma GCC unroll 16
        for (int r = 0; r < U_ROWS; ++r)
            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(u[c * U_ROWS + r]), b, acc[r]);
    }
    for (int64_t r = 0; r < rows; ++r) _mm512_mask_storeu_ps(p + r * ldp, live, acc[r]);
}

/* The last few columns (n <= TAIL_TILES) the other way round: 16 rows per vector (a panel
 * row of u) times one broadcast column, n FMAs per step of C instead of a whole register
 * tile's 16 (28x28 planes have 49 tiles: 3 vectors and 1 tile). */
#define TAIL_TILES 8
static void tail_tile(int64_t rows, int64_t n, int64_t C, const float* restrict u,
                      const float* restrict v, int64_t ldv, float* restrict p, int64_t ldp) {
    lanes_t acc[TAIL_TILES];
    for (int64_t j = 0; j < n; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t c = 0; c < C; ++c) {
        const lanes_t w = _mm512_loadu_ps(u + c * U_ROWS);
        for (int64_t j = 0; j < n; ++j)
            acc[j] = _mm512_fmadd_ps(w, _mm512_set1_ps(v[c * ldv + j]), acc[j]);
    }
    float column[TAIL_TILES][LANES];
    for (int64_t j = 0; j < n; ++j) _mm512_storeu_ps(column[j], acc[j]);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) p[r * ldp + j] = column[j][r];
}

/* A GEMM's right operand as the lane tiles read it: rows of columns in panels `width` wide
 * (a multiple of 16), `panel_step` apart, a panel's rows `row_step` apart. */
typedef struct {
    const float* base;
    int64_t width, panel_step, row_step;
} lane_operand;

static const float* column_block(const lane_operand* b, int64_t j) {
    return b->base + (j / b->width) * b->panel_step + j % b->width;
}

/* c[r][j] = sum_k a[k][r] b[k][j] for r < rows, j < N: one 16-row panel of A (K deep) by all
 * the columns, 16 at a time, the last <= TAIL_TILES columns by tail_tile. */
static void lane_rows(int64_t rows, int64_t N, int64_t K, const float* a, const lane_operand* b,
                      float* c, int64_t ldc) {
    const int64_t rest = N % LANES, tail = rest <= TAIL_TILES ? rest : 0, whole = N - tail;
    for (int64_t j = 0; j < whole; j += LANES)
        lane_tile(rows, first_lanes(whole - j), K, a, column_block(b, j), b->row_step, c + j,
                  ldc);
    if (tail) tail_tile(rows, tail, K, a, column_block(b, whole), b->row_step, c + whole, ldc);
}

/* One point's product P (M x tiles) = U (M x C, panels) @ V (C x tiles), rows of V and P a
 * point block apart. */
static void point_gemm(int64_t M, int64_t C, const tiling* tl, const float* U, const float* V,
                       float* P) {
    const int64_t ld = tl->points * tl->tiles_padded;
    const lane_operand v = {V, tl->tiles_padded, 0, ld};
    for (int64_t m0 = 0; m0 < M; m0 += U_ROWS)
        lane_rows(wino_min(U_ROWS, M - m0), tl->tiles, C, U + m0 * C, &v, P + m0 * ld, ld);
}

/* Row panel p of graphopt_lane_sgemm, then the epilogue on its rows. */
static void lane_panel(int64_t p, int64_t M, int64_t N, int64_t K, const float* Ap,
                       const lane_operand* b, float* C, int64_t ldc, const graphopt_epilogue* epi) {
    const int64_t m0 = p * U_ROWS, rows = wino_min(U_ROWS, M - m0);
    lane_rows(rows, N, K, Ap + m0 * K, b, C + m0 * ldc, ldc);
    if (epi) epi->fn(epi, C + m0 * ldc, ldc, m0, 0, rows, N);
}

void graphopt_lane_sgemm(int64_t M, int64_t N, int64_t K, const float* Ap, const float* Bp,
                         float* C, int64_t ldc, const graphopt_epilogue* epi) {
    const lane_operand b = {Bp, NR, K * NR, NR};
    const int64_t panels = (M + U_ROWS - 1) / U_ROWS;
#ifdef _OPENMP
    /* below the grain no region at all (even an if(0) region costs a team set-up) */
    if (GRAPHOPT_WORTH_THREADS(M * N * K, 0) && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t p = 0; p < panels; ++p) lane_panel(p, M, N, K, Ap, &b, C, ldc, epi);
        return;
    }
#endif
    for (int64_t p = 0; p < panels; ++p) lane_panel(p, M, N, K, Ap, &b, C, ldc, epi);
}

/* Output channels [m0, m1), tile row ty: y = A^T P A for 16 tiles at a time, written to its
 * rows of the planes of Y. */
GRAPHOPT_INLINE void output_row(const int tile, const float* P, int64_t pstride,
                                const tiling* tl, int64_t m0, int64_t m1, int64_t ty,
                                const graphopt_conv2d_shape* s, float* Y) {
    const int alpha = tile + 2;
    const int64_t plane = s->out_height * s->out_width;
    const int64_t rows = wino_min(tile, s->out_height - tile * ty);
    for (int64_t tx0 = 0; tx0 < tl->tiles_w; tx0 += LANES) {
        const int64_t n = wino_min(LANES, tl->tiles_w - tx0), x0 = tile * tx0;
        const __mmask16 live = first_lanes(n);
        __mmask16 store[MAX_ALPHA - 2];
        for (int q = 0; q < tile; ++q)
            store[q] = first_lanes(wino_min(tile * n, s->out_width - x0) - LANES * q);
        for (int64_t m = m0; m < m1; ++m) {
            const float* p = P + m * tl->points * tl->tiles_padded + ty * tl->tiles_w + tx0;
            lanes_t tmp[MAX_ALPHA - 2][MAX_ALPHA]; /* tmp[i][b] = (A^T P)[i][b] */
            for (int b = 0; b < alpha; ++b) {
                lanes_t column[MAX_ALPHA], out[MAX_ALPHA - 2];
                for (int a = 0; a < alpha; ++a)
                    column[a] = _mm512_maskz_loadu_ps(live, p + (a * alpha + b) * pstride);
                output_pass_lanes(tile, column, out);
                for (int i = 0; i < tile; ++i) tmp[i][b] = out[i];
            }
            float* y = Y + m * plane + x0;
            for (int64_t i = 0; i < rows; ++i) { /* horizontal pass, then whole output rows */
                lanes_t o[MAX_ALPHA - 2], r[MAX_ALPHA - 2];
                output_pass_lanes(tile, tmp[i], o);
                join_columns(tile, o, r);
                float* yr = y + (tile * ty + i) * s->out_width;
                for (int q = 0; q < tile; ++q)
                    _mm512_mask_storeu_ps(yr + LANES * q, store[q], r[q]);
            }
        }
    }
}

#else /* the generic path: any ISA through graphopt_sgemm_ex's micro-kernel */
#define U_ROWS MR /* rows per packed U panel: the GEMM's A panels */

/* Point strides: V[xi] holds C x tiles as NR-column B panels, P[xi] is M x tiles. */
static int64_t v_point_stride(const tiling* tl, int64_t C) { return C * tl->tiles_padded; }
static int64_t p_point_stride(const tiling* tl, int64_t M) { return M * tl->tiles; }

/* The (tile+2)^2 input tiles of tiles [t0, t0 + n) (row-major over the tile grid) of one
 * channel into d[i][j][l] (tile l), zeros outside the image and in lanes [n, IN_CHUNK). A
 * tile's rows are checked one at a time: only rows that cross the left or right border are
 * copied element by element. */
GRAPHOPT_INLINE void load_tiles(const int tile, const float* x, const graphopt_conv2d_shape* s,
                                const tiling* tl, int64_t t0, int64_t n,
                                float d[MAX_ALPHA][MAX_ALPHA][IN_CHUNK]) {
    const int alpha = tile + 2;
    int64_t ty = t0 / tl->tiles_w, tx = t0 % tl->tiles_w;
    for (int64_t l = 0; l < n; ++l) {
        const int64_t top = tile * ty - s->pad_top, left = tile * tx - s->pad_left;
        const int inside = left >= 0 && left + alpha <= s->width;
        for (int i = 0; i < alpha; ++i) {
            const int64_t iy = top + i;
            if (iy < 0 || iy >= s->height) {
                for (int j = 0; j < alpha; ++j) d[i][j][l] = 0.0f;
                continue;
            }
            const float* xr = x + iy * s->width + left;
            if (inside) {
#pragma GCC unroll 6
                for (int j = 0; j < alpha; ++j) d[i][j][l] = xr[j];
            } else {
                for (int j = 0; j < alpha; ++j)
                    d[i][j][l] = left + j >= 0 && left + j < s->width ? xr[j] : 0.0f;
            }
        }
        if (++tx == tl->tiles_w) {
            tx = 0;
            ++ty;
        }
    }
    for (int64_t l = n; l < IN_CHUNK; ++l)
        for (int i = 0; i < alpha; ++i)
            for (int j = 0; j < alpha; ++j) d[i][j][l] = 0.0f;
}

/* The 1-D input transform B^T over IN_CHUNK lanes: out[r * step + l] = sum_i B^T[r][i] in[i][l]
 * (tile + 2 rows in and out). */
GRAPHOPT_INLINE void input_pass(const int tile, const float* const in[MAX_ALPHA], int64_t step,
                                float* out) {
    if (tile == 4) {
        for (int64_t l = 0; l < IN_CHUNK; ++l) {
            const float d0 = in[0][l], d1 = in[1][l], d2 = in[2][l], d3 = in[3][l];
            const float d4 = in[4][l], d5 = in[5][l];
            out[0 * step + l] = 4.0f * d0 - 5.0f * d2 + d4;
            out[1 * step + l] = -4.0f * (d1 + d2) + d3 + d4;
            out[2 * step + l] = 4.0f * (d1 - d2) - d3 + d4;
            out[3 * step + l] = 2.0f * (d3 - d1) - d2 + d4;
            out[4 * step + l] = 2.0f * (d1 - d3) - d2 + d4;
            out[5 * step + l] = 4.0f * d1 - 5.0f * d3 + d5;
        }
    } else {
        for (int64_t l = 0; l < IN_CHUNK; ++l) {
            const float d0 = in[0][l], d1 = in[1][l], d2 = in[2][l], d3 = in[3][l];
            out[0 * step + l] = d0 - d2;
            out[1 * step + l] = d1 + d2;
            out[2 * step + l] = d2 - d1;
            out[3 * step + l] = d1 - d3;
        }
    }
}

/* Channel c's transformed tiles V[xi][c][t] = (B^T d_t B)[xi], one B panel (NR tiles) at a
 * time, each panel row stored whole (matrix xi at V + xi * vstride: panel t / NR). */
GRAPHOPT_INLINE void input_channel(const int tile, const float* x, const graphopt_conv2d_shape* s,
                                   const tiling* tl, int64_t c, int64_t vstride, float* V) {
    const int alpha = tile + 2;
    float d[MAX_ALPHA][MAX_ALPHA][IN_CHUNK], e[MAX_ALPHA][MAX_ALPHA][IN_CHUNK];
    float out[MAX_ALPHA * MAX_ALPHA][IN_CHUNK];
    for (int64_t t0 = 0; t0 < tl->tiles; t0 += IN_CHUNK) {
        load_tiles(tile, x, s, tl, t0, wino_min(IN_CHUNK, tl->tiles - t0), d);
        for (int j = 0; j < alpha; ++j) { /* vertical pass: e[.][j] = B^T d[.][j] */
            const float* const column[MAX_ALPHA] = {d[0][j], d[1][j], d[2][j], d[3][j],
                                                    d[4][j], d[5][j]};
            input_pass(tile, column, MAX_ALPHA * IN_CHUNK, e[0][j]);
        }
        for (int a = 0; a < alpha; ++a) { /* horizontal pass: out[a * alpha + .] = e[a] B */
            const float* const row[MAX_ALPHA] = {e[a][0], e[a][1], e[a][2], e[a][3], e[a][4],
                                                 e[a][5]};
            input_pass(tile, row, IN_CHUNK, out[a * alpha]);
        }
        float* dst = V + ((t0 / NR) * s->channels + c) * NR;
        for (int xi = 0; xi < alpha * alpha; ++xi)
#pragma GCC unroll 16
            for (int v = 0; v < NR; v += GRAPHOPT_GEMM_VLEN)
                VEC_STORE(dst + xi * vstride + v, VEC_LOAD(out[xi] + v));
    }
}

/* The 1-D output transform A^T over n lanes: out[r * row_step + l * lane_step] =
 * sum_i A^T[r][i] in[i][l] (tile + 2 rows in, tile rows out). */
GRAPHOPT_INLINE void output_pass(const int tile, const float* const in[MAX_ALPHA], int64_t n,
                                 float* out, int64_t row_step, int64_t lane_step) {
    if (tile == 4) {
        for (int64_t l = 0; l < n; ++l) {
            const float s12 = in[1][l] + in[2][l], d12 = in[1][l] - in[2][l];
            const float s34 = in[3][l] + in[4][l], d34 = in[3][l] - in[4][l];
            float* o = out + l * lane_step;
            o[0 * row_step] = in[0][l] + s12 + s34;
            o[1 * row_step] = d12 + 2.0f * d34;
            o[2 * row_step] = s12 + 4.0f * s34;
            o[3 * row_step] = d12 + 8.0f * d34 + in[5][l];
        }
    } else {
        for (int64_t l = 0; l < n; ++l) {
            float* o = out + l * lane_step;
            o[0 * row_step] = in[0][l] + in[1][l] + in[2][l];
            o[1 * row_step] = in[1][l] - in[2][l] - in[3][l];
        }
    }
}

/* Output channels [m0, m1), tile row ty: y = A^T P A per tile, written to its rows of the
 * planes of Y. */
GRAPHOPT_INLINE void output_row(const int tile, const float* P, int64_t pstride,
                                const tiling* tl, int64_t m0, int64_t m1, int64_t ty,
                                const graphopt_conv2d_shape* s, float* Y) {
    const int alpha = tile + 2;
    const int64_t plane = s->out_height * s->out_width;
    float tmp[MAX_ALPHA - 2][MAX_ALPHA][CHUNK], o[MAX_ALPHA - 2][(MAX_ALPHA - 2) * CHUNK];
    const int64_t rows = wino_min(tile, s->out_height - tile * ty);
    for (int64_t m = m0; m < m1; ++m) {
        float* y = Y + m * plane;
        for (int64_t tx0 = 0; tx0 < tl->tiles_w; tx0 += CHUNK) {
            const int64_t n = wino_min(CHUNK, tl->tiles_w - tx0);
            const float* p = P + m * tl->tiles + ty * tl->tiles_w + tx0;
            for (int b = 0; b < alpha; ++b) { /* vertical pass: tmp[.][b] = A^T P[.][b] */
                const float* column[MAX_ALPHA] = {p, p, p, p, p, p};
                for (int r = 0; r < alpha; ++r) column[r] = p + (r * alpha + b) * pstride;
                output_pass(tile, column, n, tmp[0][b], MAX_ALPHA * CHUNK, 1);
            }
            for (int i = 0; i < tile; ++i) { /* horizontal pass: (A^T P) A, per tile */
                const float* const row[MAX_ALPHA] = {tmp[i][0], tmp[i][1], tmp[i][2],
                                                     tmp[i][3], tmp[i][4], tmp[i][5]};
                output_pass(tile, row, n, o[i], 1, tile);
            }
            const int64_t x0 = tile * tx0, cols = wino_min(tile * n, s->out_width - x0);
            for (int64_t i = 0; i < rows; ++i)
                memcpy(y + (tile * ty + i) * s->out_width + x0, o[i],
                       (size_t)cols * sizeof(float));
        }
    }
}

/* One point's product P (M x tiles) = U (M x C, A panels) @ V (C x tiles, B panels). */
static void point_gemm(int64_t M, int64_t C, const tiling* tl, const float* U, const float* V,
                       float* P) {
    graphopt_sgemm_ex(M, tl->tiles, C, NULL, 0, 0, U, NULL, 0, 0, V, P, tl->tiles, NULL, NULL);
}
#endif

/* The three phases for one tile size (a constant after inlining). */
GRAPHOPT_INLINE void winograd(const int tile, const float* X, const float* U, float* Y,
                              const graphopt_conv2d_shape* s, int64_t out_channels,
                              float* scratch, const graphopt_epilogue* epi) {
    const int points = (tile + 2) * (tile + 2);
    const tiling tl = tiling_of(s, tile);
    const int64_t C = s->channels, M = out_channels;
    const int64_t plane_in = s->height * s->width, plane = s->out_height * s->out_width;
    const int64_t vstride = v_point_stride(&tl, C), pstride = p_point_stride(&tl, M);
    const int64_t ustride = wino_round_up(M, U_ROWS) * C;
    float* V = scratch;
    float* P = scratch + points * C * tl.tiles_padded; /* after V, in either layout */
    /* Work items small enough to share out dynamically (a core taken by another process
     * leaves its items to the other) and large enough to amortize their set-up: input
     * channels, points, tile rows by groups of output channels. The
     * GEMMs inside run on one thread each (a nested region). */
    const int64_t groups_out = (M + CHANNEL_GROUP - 1) / CHANNEL_GROUP;
#ifdef _OPENMP
#pragma omp parallel if (GRAPHOPT_WORTH_THREADS(points * M * C * tl.tiles, 0))
#endif
    {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t c = 0; c < C; ++c)
            input_channel(tile, X + c * plane_in, s, &tl, c, vstride, V);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int xi = 0; xi < points; ++xi)
            point_gemm(M, C, &tl, U + xi * ustride, V + xi * vstride, P + xi * pstride);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t item = 0; item < tl.tiles_h * groups_out; ++item) {
            const int64_t ty = item / groups_out, g = item % groups_out;
            const int64_t m0 = g * CHANNEL_GROUP, m1 = wino_min(M, m0 + CHANNEL_GROUP);
            output_row(tile, P, pstride, &tl, m0, m1, ty, s, Y);
            /* the epilogue on the band while it is hot */
            const int64_t first = tile * ty * s->out_width;
            const int64_t rows = wino_min(tile, s->out_height - tile * ty);
            if (epi) epi->fn(epi, Y + m0 * plane + first, plane, m0, first, m1 - m0,
                             rows * s->out_width);
        }
    }
}

void graphopt_winograd_conv2d(const float* X, const float* U, float* Y,
                              const graphopt_conv2d_shape* s, int64_t out_channels, int tile,
                              float* scratch, const graphopt_epilogue* epi) {
    if (tile == 4)
        winograd(4, X, U, Y, s, out_channels, scratch, epi);
    else
        winograd(2, X, U, Y, s, out_channels, scratch, epi);
}
