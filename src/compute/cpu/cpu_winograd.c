/* 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2016): forward, backward data and backward
 * filter. cpu_conv.c decides when to call it (mt_cpu_winograd_pays).
 *
 * The output (N,P,Q,K) is cut into 2x2 tiles, th = ceil(P/2) by tw = ceil(Q/2) per image; tile
 * (n, i, j) reads the 4x4 input patch d at rows 2i - pad_h .. +3 and columns 2j - pad_w .. +3
 * (zeros outside the image, so any padding works) and is
 *     y = A^T [ U ⊙ V ] A,   U = G g G^T (per filter k and channel c),   V = B^T d B (per c),
 * the product summed over channels; outputs of a last tile row or column beyond an odd P or Q
 * are computed and dropped. At each of the 16 positions xi of the transformed 4x4 tile that sum
 * is a GEMM over a block of tiles:
 *     M_xi (tiles, K) = V_xi (tiles, C) U_xi (C, K),
 * so a tile costs 16 C*K multiply-adds where the direct convolution (and im2col) spends 4 * 9:
 * 2.25x fewer, for the price of the transforms (additions, vectorised over channels, which NHWC
 * keeps contiguous) and of rounding: the transforms add and subtract up to 4 values twice, which
 * bench-scale layers show as relative errors of a few 1e-7, like im2col's (test_ops holds both to
 * 1e-5 of the sum of the terms' magnitudes).
 *
 *     B^T = | 1  0 -1  0 |    G = | 1    0    0  |    A^T = | 1  1  1  0 |
 *           | 0  1  1  0 |        | 1/2  1/2  1/2 |          | 0  1 -1 -1 |
 *           | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
 *           | 0  1  0 -1 |        | 0    0    1  |
 *
 * Layout: a block's V is (tiles, 16, C) and M (tiles, 16, K), a tile's transform one contiguous
 * row, so V_xi and M_xi are strided views (leading dims 16C and 16K) that OpenBLAS reads and
 * writes in place. GEMMs are NN calls: those of up to SMALL_MNK multiply-adds then run unpacked
 * (OpenBLAS's small-matrix kernels, which take no transposed A), much faster on the thin shapes of
 * few channels.
 *
 * Backward data. dx of a stride-1 convolution is the forward convolution of dy with the filters
 * flipped and transposed (cpu_conv.c); with `flip` the filter transform reads w (K, 3, 3, C) as
 * those filters, w'[c, r, s, k] = w[k, 2-r, 2-s, c], so no transposed copy of w is made.
 *
 * Backward filter. With Z = A dY A^T (4x4, from the 2x2 output-gradient tile), the gradient of
 * U_xi is dU_xi (K, C) = sum over tiles of Z_xi^T V_xi, a GEMM with a long sum, and that of g is
 * G^T dU G. A small dU is summed as PARTS partials over fixed ranges of tiles (threads take whole
 * ranges, no barriers), a large one block by block with each dU_xi owned by one thread; either
 * way every sum runs in an order fixed by the shape.
 *
 * Blocks and threads. Tiles go in blocks of a number fixed by the shape alone (block_tiles). In
 * the forward each thread takes whole blocks: transforms the block's input tiles into its own V,
 * makes the 16 single-threaded GEMMs into its own M and transforms M into the output tiles (plus
 * bias). The filter transform runs once per call, its filters split between threads. A result
 * then never depends on the thread count nor on which thread computed it. */
#include <limits.h>
#include <omp.h>
#include <cblas.h>
#include "cpu_ops.h"

#define MIN_CHANNELS       8          /* channels and filters below which im2col is as fast */
#define MIN_OUTPUT         8          /* output height and width below which the forward is not */
#define BLOCK_BYTES        (1u << 19) /* V and M of a forward block of tiles: in a core's L2 */
#define SMALL_MNK          1000000    /* GEMMs OpenBLAS runs unpacked: multiply-adds (see above) */
#define LARGE_TILES        192        /* tiles per block where U_xi is packed: at least this many */
#define EVEN_BLOCKS        32         /* below this many blocks, a multiple of 4 of them */
#define FILTER_BLOCK_BYTES (1u << 20) /* V and Z of a block of the filter gradient's tiles */
#define FILTER_MIN_TILES   64         /* ... at least this many: the GEMMs' sums */
#define PARTS              16         /* partial sums of a small filter gradient ... */
#define PARTS_MAX          (1 << 21)  /* ... of at most this many values in all (8 MiB) */
#define PAR_MACS           (1 << 20)  /* multiply-adds below which a call runs on one thread */

/* The transforms are additions vectorised over channels: where the compiler can, it builds them
 * for AVX-512 and AVX2 as well, and the loader picks what the CPU has (the rest of medtrain is
 * built for baseline x86-64). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

static size_t g_block_bytes; /* a test's block size (mt_cpu_winograd_set_block_bytes), or 0 */

void mt_cpu_winograd_set_block_bytes(size_t bytes) {
    g_block_bytes = bytes;
}

/* Where it pays, from bench_conv and single-layer timings on one core (docs/PERFORMANCE.md): with
 * 8 channels and 8 filters or more (at 3 or 4 it runs even with im2col, the transforms costing as
 * much as the GEMMs save). The forward (and backward data) also wants an output of at least 8x8:
 * on 7x7 a quarter of the tiles' outputs are padding, and the few tiles per image, 16, pack the
 * large U_xi of such layers (512 channels) once per few rows, which loses to im2col (0.8x); the
 * filter gradient, whose GEMMs sum over all tiles, gains there too (1.5x). */
bool mt_cpu_winograd_pays(const mt_conv2d_desc *d, bool filter_gradient) {
    if (d->c > INT_MAX / 16 || d->k > INT_MAX / 16) return false; /* leading dims 16 C, 16 K */
    return d->r == 3 && d->s == 3 && d->stride_h == 1 && d->stride_w == 1 && d->dil_h == 1 &&
           d->dil_w == 1 && d->groups == 1 && d->c >= MIN_CHANNELS && d->k >= MIN_CHANNELS &&
           d->p >= (filter_gradient ? 1 : MIN_OUTPUT) && d->q >= (filter_gradient ? 1 : MIN_OUTPUT);
}

/* Tiles per block: a function of the shape alone, so that no result depends on the thread count.
 * About BLOCK_BYTES of V and M; where U_xi is small enough for OpenBLAS's unpacked kernels, few
 * enough tiles for its GEMMs to take them, else at least LARGE_TILES, for each GEMM to be worth
 * packing U_xi for; and, where there are few blocks, a multiple of 4 of them (threads that share
 * them evenly). A test's block size (g_block_bytes) is taken as it is. */
static int64_t block_tiles(const mt_conv2d_desc *d, int64_t tiles) {
    const int64_t per_tile = 16 * (d->c + d->k) * (int64_t)sizeof(float), ck = d->c * d->k;
    if (g_block_bytes) {
        int64_t block = (int64_t)g_block_bytes / per_tile;
        return block < 1 ? 1 : block < tiles ? block : tiles;
    }
    int64_t block = BLOCK_BYTES / per_tile;
    if (16 * ck <= SMALL_MNK && block > SMALL_MNK / ck) block = SMALL_MNK / ck;
    if (16 * ck > SMALL_MNK && block < LARGE_TILES) block = LARGE_TILES;
    if (block < 1) block = 1;
    int64_t blocks = (tiles + block - 1) / block;
    if (blocks < EVEN_BLOCKS) blocks = (blocks + 3) / 4 * 4;
    block = (tiles + blocks - 1) / blocks;
    return block;
}

/* U_xi (C, K) = (G g G^T)[xi] for the filters g of rows a in [a0, a1) of w: for the forward,
 * w (K, 3, 3, C) and U_xi[c][a] from g = w[a, :, :, c]; with flip, w (C, 3, 3, K) and U_xi[a][b]
 * from g = w[a, 2-r, 2-s, b]. Either way the inner loop runs along w's contiguous dim. */
VECTOR_CLONES
static void filter_transform(const float *w, int64_t na, int64_t nb, bool flip, int64_t a0,
                             int64_t a1, float *u) {
    const int64_t plane = na * nb, sa = flip ? nb : 1, sb = flip ? 1 : na;
    for (int64_t a = a0; a < a1; a++) {
        const float *g = w + a * 9 * nb;
        float *out = u + a * sa;
#pragma omp simd
        for (int64_t b = 0; b < nb; b++) {
            float f[3][3], t[4][3];
            for (int tap = 0; tap < 9; tap++)
                f[tap / 3][tap % 3] = g[(flip ? 8 - tap : tap) * nb + b];
            for (int s = 0; s < 3; s++) { /* t = G f */
                t[0][s] = f[0][s];
                t[1][s] = 0.5f * (f[0][s] + f[1][s] + f[2][s]);
                t[2][s] = 0.5f * (f[0][s] - f[1][s] + f[2][s]);
                t[3][s] = f[2][s];
            }
            for (int r = 0; r < 4; r++) { /* u = t G^T */
                out[(r * 4 + 0) * plane + b * sb] = t[r][0];
                out[(r * 4 + 1) * plane + b * sb] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
                out[(r * 4 + 2) * plane + b * sb] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
                out[(r * 4 + 3) * plane + b * sb] = t[r][2];
            }
        }
    }
}

/* V[xi][ch] = (B^T d B)[xi] of the 4x4 patch whose pixel (a, b) has its c channels at px[a*4 + b]
 * (a buffer of zeros for padding). */
__attribute__((always_inline)) static inline void input_transform(const float *const px[16],
                                                                  int64_t c, float *restrict v) {
#pragma omp simd
    for (int64_t ch = 0; ch < c; ch++) {
        float d[4][4], t[4][4];
        for (int i = 0; i < 16; i++) d[i / 4][i % 4] = px[i][ch];
        for (int b = 0; b < 4; b++) { /* t = B^T d */
            t[0][b] = d[0][b] - d[2][b];
            t[1][b] = d[1][b] + d[2][b];
            t[2][b] = d[2][b] - d[1][b];
            t[3][b] = d[1][b] - d[3][b];
        }
        for (int a = 0; a < 4; a++) { /* v = t B */
            v[(a * 4 + 0) * c + ch] = t[a][0] - t[a][2];
            v[(a * 4 + 1) * c + ch] = t[a][1] + t[a][2];
            v[(a * 4 + 2) * c + ch] = t[a][2] - t[a][1];
            v[(a * 4 + 3) * c + ch] = t[a][1] - t[a][3];
        }
    }
}

/* The 2x2 output tile A^T M A + bias of M[xi][ch] into out[0..3] (pixels (0,0), (0,1), (1,0),
 * (1,1); a spare row for those outside the output). */
__attribute__((always_inline)) static inline void
output_transform(const float *restrict m, int64_t k, const float *bias, float *const out[4]) {
    float *o0 = out[0], *o1 = out[1], *o2 = out[2], *o3 = out[3];
#pragma omp simd
    for (int64_t ch = 0; ch < k; ch++) {
        float s[2][4];
        for (int b = 0; b < 4; b++) { /* s = A^T m */
            float m0 = m[b * k + ch], m1 = m[(4 + b) * k + ch], m2 = m[(8 + b) * k + ch],
                  m3 = m[(12 + b) * k + ch];
            s[0][b] = m0 + m1 + m2;
            s[1][b] = m1 - m2 - m3;
        }
        o0[ch] = s[0][0] + s[0][1] + s[0][2] + bias[ch];
        o1[ch] = s[0][1] - s[0][2] - s[0][3] + bias[ch];
        o2[ch] = s[1][0] + s[1][1] + s[1][2] + bias[ch];
        o3[ch] = s[1][1] - s[1][2] - s[1][3] + bias[ch];
    }
}

/* Z[xi][ch] = (A g A^T)[xi] of the 2x2 output-gradient tile whose pixel (a, b) has its k values
 * at g[a*2 + b] (zeros outside the output): the gradient of M_xi. */
__attribute__((always_inline)) static inline void grad_transform(const float *const g[4], int64_t k,
                                                                 float *restrict z) {
#pragma omp simd
    for (int64_t ch = 0; ch < k; ch++) {
        float d00 = g[0][ch], d01 = g[1][ch], d10 = g[2][ch], d11 = g[3][ch];
        float r[4][2] = {{d00, d01}, {d00 + d10, d01 + d11}, {d00 - d10, d01 - d11}, {-d10, -d11}};
        for (int a = 0; a < 4; a++) { /* z = r A^T */
            z[(a * 4 + 0) * k + ch] = r[a][0];
            z[(a * 4 + 1) * k + ch] = r[a][0] + r[a][1];
            z[(a * 4 + 2) * k + ch] = r[a][0] - r[a][1];
            z[(a * 4 + 3) * k + ch] = -r[a][1];
        }
    }
}

/* The tiling of the output: th x tw tiles per image, numbered (n, i, j) row-major. */
typedef struct tiling {
    const mt_conv2d_desc *d;
    int64_t th, tw, tiles;
} tiling;

/* Tile t0's coordinates, then stepped along tile by tile. */
typedef struct tile_pos {
    int64_t n, i, j;
} tile_pos;

static tile_pos tile_at(const tiling *tl, int64_t t) {
    return (tile_pos){t / (tl->th * tl->tw), t / tl->tw % tl->th, t % tl->tw};
}

static inline void tile_next(const tiling *tl, tile_pos *tp) {
    if (++tp->j < tl->tw) return;
    tp->j = 0;
    if (++tp->i < tl->th) return;
    tp->i = 0;
    tp->n++;
}

/* Transforms the input tiles [t0, t0 + nt) into v (nt, 16, c). */
VECTOR_CLONES
static void input_tiles(const tiling *tl, const float *x, const float *zeros, int64_t t0,
                        int64_t nt, float *v) {
    const mt_conv2d_desc *d = tl->d;
    const int64_t c = d->c;
    tile_pos tp = tile_at(tl, t0);
    for (int64_t t = 0; t < nt; t++, tile_next(tl, &tp)) {
        const int64_t ih0 = 2 * tp.i - d->pad_h, iw0 = 2 * tp.j - d->pad_w;
        const float *px[16];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) {
                int64_t ih = ih0 + a, iw = iw0 + b;
                bool inside = ih >= 0 && ih < d->h && iw >= 0 && iw < d->w;
                px[a * 4 + b] = inside ? x + ((tp.n * d->h + ih) * d->w + iw) * c : zeros;
            }
        input_transform(px, c, v + t * 16 * c);
    }
}

/* Transforms m (nt, 16, k) into the output tiles [t0, t0 + nt). */
VECTOR_CLONES
static void output_tiles(const tiling *tl, const float *m, const float *bias, float *spare,
                         int64_t t0, int64_t nt, float *y) {
    const mt_conv2d_desc *d = tl->d;
    const int64_t k = d->k;
    tile_pos tp = tile_at(tl, t0);
    for (int64_t t = 0; t < nt; t++, tile_next(tl, &tp)) {
        float *out[4];
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                int64_t p = 2 * tp.i + a, q = 2 * tp.j + b;
                out[a * 2 + b] =
                    p < d->p && q < d->q ? y + ((tp.n * d->p + p) * d->q + q) * k : spare;
            }
        output_transform(m + t * 16 * k, k, bias, out);
    }
}

/* Transforms the output-gradient tiles [t0, t0 + nt) into z (nt, 16, k). */
VECTOR_CLONES
static void grad_tiles(const tiling *tl, const float *dy, const float *zeros, int64_t t0,
                       int64_t nt, float *z) {
    const mt_conv2d_desc *d = tl->d;
    const int64_t k = d->k;
    tile_pos tp = tile_at(tl, t0);
    for (int64_t t = 0; t < nt; t++, tile_next(tl, &tp)) {
        const float *g[4];
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                int64_t p = 2 * tp.i + a, q = 2 * tp.j + b;
                g[a * 2 + b] =
                    p < d->p && q < d->q ? dy + ((tp.n * d->p + p) * d->q + q) * k : zeros;
            }
        grad_transform(g, k, z + t * 16 * k);
    }
}

/* dw[a] (3, 3, C) += G^T dU[a] G for filters a in [a0, a1), dU (16, K, C): U = G g G^T, so the
 * gradient of g is G^T (the gradient of U) G. */
VECTOR_CLONES
static void filter_grad_transform(const float *du, int64_t k, int64_t c, int64_t a0, int64_t a1,
                                  float *dw) {
    for (int64_t a = a0; a < a1; a++) {
        const float *src = du + a * c;
        float *out = dw + a * 9 * c;
#pragma omp simd
        for (int64_t ch = 0; ch < c; ch++) {
            float u[4][4], e[3][4];
            for (int i = 0; i < 16; i++) u[i / 4][i % 4] = src[i * k * c + ch];
            for (int b = 0; b < 4; b++) { /* e = G^T u */
                e[0][b] = u[0][b] + 0.5f * (u[1][b] + u[2][b]);
                e[1][b] = 0.5f * (u[1][b] - u[2][b]);
                e[2][b] = 0.5f * (u[1][b] + u[2][b]) + u[3][b];
            }
            for (int r = 0; r < 3; r++) { /* dw += e G */
                out[(r * 3 + 0) * c + ch] += e[r][0] + 0.5f * (e[r][1] + e[r][2]);
                out[(r * 3 + 1) * c + ch] += 0.5f * (e[r][1] - e[r][2]);
                out[(r * 3 + 2) * c + ch] += 0.5f * (e[r][1] + e[r][2]) + e[r][3];
            }
        }
    }
}

static int64_t round16(int64_t n) {
    return (n + 15) / 16 * 16;
}

mt_status mt_cpu_winograd_fwd(mt_ctx *ctx, const mt_conv2d_desc *d, const float *x, const float *w,
                              bool flip, const float *bias, float *y, const char *op) {
    tiling tl = {.d = d, .th = (d->p + 1) / 2, .tw = (d->q + 1) / 2};
    tl.tiles = d->n * tl.th * tl.tw;
    const int64_t c = d->c, k = d->k, block = block_tiles(d, tl.tiles);
    const int64_t blocks = (tl.tiles + block - 1) / block;
    /* per thread: V (block, 16, c), M (block, 16, k), a spare output row; shared: U (16, c, k),
     * zeros and the bias (zeros when there is none) */
    const int64_t per_thread = round16(16 * block * c) + round16(16 * block * k) + round16(k);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *u = mt_cpu_scratch(ctx, (size_t)(16 * k * c) * sizeof(float), op,
                              "Winograd-transformed filters");
    float *zeros = mt_cpu_scratch(ctx, (size_t)(c + k) * sizeof(float), op, "zero padding");
    float *bufs = mt_cpu_scratch(ctx, (size_t)(ctx->threads * per_thread) * sizeof(float), op,
                                 "Winograd tile blocks");
    if (!u || !zeros || !bufs) {
        mt_arena_rewind(&ctx->scratch, mark);
        return MT_ERR_NOMEM;
    }
    for (int64_t i = 0; i < c + k; i++) zeros[i] = 0.0f;
    const float *b = bias ? bias : zeros;
    /* the filters (flip: the transposed convolution's (c, 3, 3, k), read flipped) */
    const int64_t na = flip ? c : k, nb = flip ? k : c;
#pragma omp parallel num_threads(ctx->threads) if (tl.tiles * 16 * c * k > PAR_MACS)
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        filter_transform(w, na, nb, flip, na * me / nt, na * (me + 1) / nt, u);
#pragma omp barrier
        float *v = bufs + me * per_thread, *m = v + round16(16 * block * c),
              *spare = m + round16(16 * block * k);
#pragma omp for schedule(dynamic)
        for (int64_t bi = 0; bi < blocks; bi++) {
            int64_t t0 = bi * block, ntl = tl.tiles - t0 < block ? tl.tiles - t0 : block;
            input_tiles(&tl, x, zeros, t0, ntl, v);
            for (int xi = 0; xi < 16; xi++) /* M_xi = V_xi U_xi */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ntl, (int)k, (int)c,
                            1.0f, v + xi * c, (int)(16 * c), u + xi * c * k, (int)k, 0.0f,
                            m + xi * k, (int)(16 * k));
            output_tiles(&tl, m, b, spare, t0, ntl, y);
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* Tiles per block of the filter gradient: a function of the shape alone (the order of its sums). */
static int64_t filter_block_tiles(const mt_conv2d_desc *d, int64_t tiles) {
    const int64_t per_tile = 16 * (d->c + d->k) * (int64_t)sizeof(float);
    int64_t block = (int64_t)(g_block_bytes ? g_block_bytes : FILTER_BLOCK_BYTES) / per_tile;
    if (!g_block_bytes && block < FILTER_MIN_TILES) block = FILTER_MIN_TILES;
    if (block < 1) block = 1;
    return block < tiles ? block : tiles;
}

/* One block of a filter gradient: the tiles [t0, t0 + nt) transformed into v and z, then
 * dU_xi (K, C) += Z_xi^T V_xi for every xi. */
static void filter_block(const tiling *tl, const float *x, const float *dy, const float *zeros,
                         int64_t t0, int64_t nt, float *v, float *z, float *du) {
    const int64_t c = tl->d->c, k = tl->d->k;
    input_tiles(tl, x, zeros, t0, nt, v);
    grad_tiles(tl, dy, zeros, t0, nt, z);
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)c, (int)nt, 1.0f,
                    z + xi * k, (int)(16 * k), v + xi * c, (int)(16 * c), 1.0f, du + xi * k * c,
                    (int)c);
}

/* dU as PARTS partial sums over fixed ranges of tiles, taken by threads as they come free, each
 * range in blocks from the thread's own buffers; then added in order. No barriers until the end,
 * and the ranges do not depend on the thread count. For a small dU (16 K C, PARTS copies). */
static void filter_by_parts(mt_ctx *ctx, const tiling *tl, const float *x, const float *dy,
                            const float *zeros, float *bufs, float *parts, float *dw) {
    const mt_conv2d_desc *d = tl->d;
    const int64_t c = d->c, k = d->k, nu = 16 * k * c, block = block_tiles(d, tl->tiles);
    const int64_t per_thread = round16(16 * block * c) + round16(16 * block * k);
#pragma omp parallel num_threads(ctx->threads) if (tl->tiles * 16 * c * k > PAR_MACS)
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        float *v = bufs + me * per_thread, *z = v + round16(16 * block * c);
#pragma omp for schedule(dynamic)
        for (int part = 0; part < PARTS; part++) {
            float *acc = parts + part * nu;
            for (int64_t i = 0; i < nu; i++) acc[i] = 0.0f;
            int64_t r0 = tl->tiles * part / PARTS, r1 = tl->tiles * (part + 1) / PARTS;
            for (int64_t t0 = r0; t0 < r1; t0 += block)
                filter_block(tl, x, dy, zeros, t0, r1 - t0 < block ? r1 - t0 : block, v, z, acc);
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nu; i++) {
            float sum = parts[i];
            for (int part = 1; part < PARTS; part++) sum += parts[part * nu + i];
            parts[i] = sum;
        }
        filter_grad_transform(parts, k, c, k * me / nt, k * (me + 1) / nt, dw);
    }
}

/* dU summed block after block: all threads transform a block's tiles, then each xi's GEMM is
 * one thread's, so that every dU_xi adds its blocks in the same order whatever the thread count.
 * For a dU too large for partial copies. */
static void filter_by_blocks(mt_ctx *ctx, const tiling *tl, const float *x, const float *dy,
                             const float *zeros, float *v, float *z, float *du, float *dw) {
    const mt_conv2d_desc *d = tl->d;
    const int64_t c = d->c, k = d->k, block = filter_block_tiles(d, tl->tiles);
#pragma omp parallel num_threads(ctx->threads) if (tl->tiles * 16 * c * k > PAR_MACS)
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
#pragma omp for schedule(static)
        for (int64_t i = 0; i < 16 * k * c; i++) du[i] = 0.0f;
        for (int64_t t0 = 0; t0 < tl->tiles; t0 += block) {
            int64_t ntl = tl->tiles - t0 < block ? tl->tiles - t0 : block;
            int64_t lo = ntl * me / nt, hi = ntl * (me + 1) / nt;
            input_tiles(tl, x, zeros, t0 + lo, hi - lo, v + lo * 16 * c);
            grad_tiles(tl, dy, zeros, t0 + lo, hi - lo, z + lo * 16 * k);
#pragma omp barrier
            for (int xi = 16 * me / nt; xi < 16 * (me + 1) / nt; xi++)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)c, (int)ntl, 1.0f,
                            z + xi * k, (int)(16 * k), v + xi * c, (int)(16 * c), 1.0f,
                            du + xi * k * c, (int)c);
#pragma omp barrier
        }
        filter_grad_transform(du, k, c, k * me / nt, k * (me + 1) / nt, dw);
    }
}

mt_status mt_cpu_winograd_bwd_filter(mt_ctx *ctx, const mt_conv2d_desc *d, const float *x,
                                     const float *dy, float *dw) {
    tiling tl = {.d = d, .th = (d->p + 1) / 2, .tw = (d->q + 1) / 2};
    tl.tiles = d->n * tl.th * tl.tw;
    const int64_t c = d->c, k = d->k, nu = 16 * k * c;
    const char *op = "conv2d_bwd_filter";
    const bool by_parts = PARTS * nu <= PARTS_MAX;
    /* by parts: PARTS copies of dU and each thread's V and Z; by blocks: dU, V and Z */
    const int64_t block = by_parts ? block_tiles(d, tl.tiles) : filter_block_tiles(d, tl.tiles);
    const int64_t bufs = by_parts
                             ? ctx->threads * (round16(16 * block * c) + round16(16 * block * k))
                             : round16(16 * block * c) + round16(16 * block * k);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *du = mt_cpu_scratch(ctx, (size_t)((by_parts ? PARTS : 1) * nu) * sizeof(float), op,
                               "Winograd-transformed filter gradients");
    float *buf = mt_cpu_scratch(ctx, (size_t)bufs * sizeof(float), op, "Winograd tile blocks");
    float *zeros = mt_cpu_scratch(ctx, (size_t)(c + k) * sizeof(float), op, "zero padding");
    if (!du || !buf || !zeros) {
        mt_arena_rewind(&ctx->scratch, mark);
        return MT_ERR_NOMEM;
    }
    for (int64_t i = 0; i < c + k; i++) zeros[i] = 0.0f;
    if (by_parts)
        filter_by_parts(ctx, &tl, x, dy, zeros, buf, du, dw);
    else
        filter_by_blocks(ctx, &tl, x, dy, zeros, buf, buf + round16(16 * block * c), du, dw);
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}
