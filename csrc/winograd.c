/* Winograd convolution F(4x4, 3x3) and F(2x2, 3x3): 36 (16) multiplications per 4x4 (2x2)
 * output tile and channel pair instead of 144 (36), the products done as GEMMs on
 * graphopt_sgemm_ex's micro-kernels.
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
 *   1. input transform per channel, one B panel (NR tiles) at a time, written straight into
 *      the GEMM's B panel layout;
 *   2. the GEMMs (both operands packed: each tile runs over all of C in registers);
 *   3. output transform per band of output rows and group of output channels (a 28x28 plane
 *      has 7 bands: alone they would split 4/3 between 2 threads), then the epilogue on the
 *      part of the band while hot.
 * The 1-D transforms run over runs of tiles held in small arrays, lanes contiguous, so the
 * compiler vectorizes them across tiles.
 */
#include <string.h>

#include "graphopt_simd.h"
#include "graphopt_winograd.h"

#define NR GRAPHOPT_GEMM_NR
#define MR GRAPHOPT_GEMM_MR
#define MAX_ALPHA 6 /* F(4x4, 3x3) */
#define CHUNK 16    /* tiles per run of the output transform */
#define IN_CHUNK NR /* tiles per run of the input transform: one B panel */
#define CHANNEL_GROUP 16 /* output channels per work item of the output transform */

static int64_t wino_min(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t wino_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

typedef struct {
    int64_t tiles_h, tiles_w, tiles, tiles_padded; /* tiles_padded: tiles rounded up to NR */
} tiling;

static tiling tiling_of(const graphopt_conv2d_shape* s, int tile) {
    tiling t;
    t.tiles_h = (s->out_height + tile - 1) / tile;
    t.tiles_w = (s->out_width + tile - 1) / tile;
    t.tiles = t.tiles_h * t.tiles_w;
    t.tiles_padded = wino_round_up(t.tiles, NR);
    return t;
}

int64_t graphopt_winograd_scratch(const graphopt_conv2d_shape* s, int64_t out_channels,
                                  int tile) {
    const tiling t = tiling_of(s, tile);
    const int64_t points = (int64_t)(tile + 2) * (tile + 2);
    return points * (s->channels * t.tiles_padded + out_channels * t.tiles);
}

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

/* The three phases for one tile size (a constant after inlining). */
GRAPHOPT_INLINE void winograd(const int tile, const float* X, const float* U, float* Y,
                              const graphopt_conv2d_shape* s, int64_t out_channels,
                              float* scratch, const graphopt_epilogue* epi) {
    const int points = (tile + 2) * (tile + 2);
    const tiling tl = tiling_of(s, tile);
    const int64_t C = s->channels, M = out_channels;
    const int64_t plane_in = s->height * s->width, plane = s->out_height * s->out_width;
    const int64_t vstride = C * tl.tiles_padded, pstride = M * tl.tiles;
    const int64_t ustride = wino_round_up(M, MR) * C;
    float* V = scratch;
    float* P = scratch + points * vstride;
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
            graphopt_sgemm_ex(M, tl.tiles, C, NULL, 0, 0, U + xi * ustride, NULL, 0, 0,
                              V + xi * vstride, P + xi * pstride, tl.tiles, NULL, NULL);
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
