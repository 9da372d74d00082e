/* 2-D convolution on the CPU: NHWC activations, KRSC filters, GEMMs through OpenBLAS.
 *
 * Shapes: x (N,H,W,C), w (K,R,S,Cg) with Cg = C/groups and Kg = K/groups, y (N,P,Q,K). Output
 * pixels are the GEMM rows, M = N*P*Q; group g reads channels [g*Cg, (g+1)*Cg) and writes filters
 * [g*Kg, (g+1)*Kg).
 *
 * Forward. A 1x1, stride-1, unpadded convolution is exactly y (M,K) = x (M,C) w^T: one GEMM per
 * group that reads x in place. Every other convolution first builds im2col rows, one per output
 * pixel, holding the L = R*S*Cg inputs its filters see, ordered (r, s, c) like the KRSC filters;
 * in NHWC each row is a few contiguous runs of Cg (one run of S*C per kernel row when groups is 1
 * and dilation is 1). Then y_block = col w_g^T. Each thread builds a block of rows into its own
 * buffer of about BLOCK_BYTES (sized for L2) and multiplies it at once, so memory stays bounded
 * whatever the batch and the column buffer is read back from cache. A layer with short rows and
 * few filters (a stem) multiplies its block in calls of a few hundred rows (small_rows).
 *
 * Backward data. A 1x1 stride-1 unpadded convolution is one GEMM, dx = dy w. Any other stride-1
 * convolution whose padding stays within the kernel's reach has as its input gradient a forward
 * convolution of dy with the filters flipped and transposed (w'[c,r,s,k] = w[k,R-1-r,S-1-s,c]),
 * which the forward code runs. The rest (strided convolutions) take dcol = dy w_g for a chunk of
 * rows, then col2im adds every column entry back onto the input pixel it came from. col2im is a
 * gather: each input pixel sums, in a fixed order, what the chunk's output pixels took from it
 * (tap tables list which taps reach each input row and column), so threads never write the same
 * dx element.
 *
 * Backward filter. dw_g += dy_g^T col over chunks of rows (beta 1: gradients accumulate);
 * dbias += the column sums of dy (in double, over a fixed split of the rows). The GEMM has a small
 * output and a long sum. A dw of up to PARTS_MAX values is summed as fixed partial sums over
 * ranges of rows, one range per thread at a time; a larger one is split between threads along its
 * output: by im2col columns when there are more of them than filters (each thread builds only its
 * own columns), else by filters (threads build the chunk's rows together). Chunks and ranges have
 * fixed sizes, so every gradient is summed in the same order on any number of threads.
 *
 * Winograd. 3x3 stride-1 convolutions (dilation 1, one group) of at least 8 channels and 8
 * filters take Winograd F(2x2, 3x3) instead (cpu_winograd.c): 2.25x fewer multiply-adds, in 16
 * GEMMs over blocks of 2x2 output tiles. The forward and the backward data, through the same
 * transposed convolution as above, do so where the output is at least 8x8 (mt_cpu_winograd_pays
 * has the measured crossovers); the filter gradient whatever the output size. In a ResNet that is
 * every stride-1 3x3 layer (those of 7x7 for the filter gradient only), in a U-Net every 3x3
 * layer but the first (1 or 3 channels). Tiles go in blocks of sizes fixed by the shape, so the
 * threading rule below holds there too.
 *
 * Depthwise convolutions (groups == C == K) would be GEMMs with one column; they run as direct
 * loops instead, one multiply-add per tap vectorised over channels, with the filters transposed
 * to (R*S, C) so that channels are contiguous in both operands.
 *
 * Threads. OpenMP's threads and OpenBLAS's own would busy-wait against each other for the same
 * cores whenever one hands over to the other (several times the work on a loaded machine, as
 * bench_conv shows). So an op runs entirely in its own OpenMP region of ctx->threads threads, each
 * making its own single-threaded GEMM calls, and OpenBLAS is set to one thread for the duration of
 * the op and restored after. A convolution's speed and its results then depend on ctx->threads
 * alone, whatever OPENBLAS_NUM_THREADS says; and as the GEMMs are split along their outputs,
 * never along their sums, and the chunks have fixed sizes, the results come out the same on any
 * thread count (test_ops checks 1 against 3). */
#include <limits.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>
#include "cpu_ops.h"

#define BLOCK_BYTES (1u << 20) /* a thread's im2col block (forward) */
#define BLOCK_ROWS  256        /* ... but at least this many rows: a GEMM worth packing w for */
#define CHUNK_BYTES (8u << 20) /* the shared column buffer of the backward passes */
#define CHUNK_ROWS  1024       /* ... at least this many rows: dw is read and written per chunk */
#define PARTS       16         /* partial sums of a filter gradient ... */
#define PARTS_MAX   (1 << 18)  /* ... of at most this many values (16 MiB of partials) */
#define PAR_MIN     32768      /* elements below which a loop runs on one thread */
#define PAR_MACS    (1 << 20)  /* multiply-adds below which a convolution runs on one thread */
#define GEMM_ROWS   (1 << 30)  /* rows per GEMM call where there is no column buffer */
#define SMALL_MNK   1000000    /* a GEMM of at most this many multiply-adds ... (see small_rows) */

static size_t g_block_bytes = BLOCK_BYTES, g_chunk_bytes = CHUNK_BYTES;
static int64_t g_block_rows = BLOCK_ROWS, g_chunk_rows = CHUNK_ROWS;

void mt_cpu_conv_set_chunk_bytes(size_t bytes) {
    g_chunk_bytes = bytes ? bytes : CHUNK_BYTES;
    g_block_bytes = bytes && bytes < BLOCK_BYTES ? bytes : BLOCK_BYTES;
    g_block_rows = bytes ? 1 : BLOCK_ROWS;
    g_chunk_rows = bytes ? 1 : CHUNK_ROWS;
    mt_cpu_winograd_set_block_bytes(bytes);
}

/* The sizes every path needs, derived once. */
typedef struct geom {
    const mt_conv2d_desc *d;
    int64_t cg, kg, kc; /* channels and filters per group; im2col row length r*s*cg */
    int64_t m;          /* output pixels n*p*q */
} geom;

static geom geom_of(const mt_conv2d_desc *d) {
    geom g = {.d = d, .cg = d->c / d->groups, .kg = d->k / d->groups, .m = d->n * d->p * d->q};
    g.kc = d->r * d->s * g.cg;
    return g;
}

/* OpenBLAS takes int sizes; an im2col row, a channel count or a filter count beyond that is not a
 * convolution anyone runs, but it must fail rather than wrap. */
static mt_status check_blas_sizes(const char *op, const geom *g) {
    if (g->kc > INT_MAX || g->d->c > INT_MAX || g->d->k > INT_MAX)
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "%s: an im2col row of %lld values (or %lld channels, %lld filters) exceeds "
                       "the 32-bit sizes of the CPU BLAS",
                       op, (long long)g->kc, (long long)g->d->c, (long long)g->d->k);
    return MT_OK;
}

/* Row-major sgemm; callers have checked that every size fits in an int. */
static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                  int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* OpenBLAS single-threaded while the op's OpenMP team makes the GEMM calls; returns the setting
 * to restore. (Not for ops running concurrently on several host threads: the setting is global.) */
static int blas_enter(const mt_ctx *ctx) {
    int n = openblas_get_num_threads();
    if (n != 1) openblas_set_num_threads(1);
    return n;
}

static void blas_leave(const mt_ctx *ctx, int n) {
    if (n != 1) openblas_set_num_threads(n);
}

/* Worth a team of threads: a small convolution costs less than the team's start and barriers. */
static bool parallel(const geom *g) {
    return g->m * g->kc * g->kg * g->d->groups > PAR_MACS;
}

static bool is_pointwise(const mt_conv2d_desc *d) {
    return d->r == 1 && d->s == 1 && d->stride_h == 1 && d->stride_w == 1 && d->pad_h == 0 &&
           d->pad_w == 0;
}

static bool is_depthwise(const mt_conv2d_desc *d) {
    return d->groups > 1 && d->groups == d->c && d->groups == d->k;
}

/* Output rows whose im2col rows fit in bytes, at least one and at most all. */
static int64_t rows_in(const geom *g, size_t bytes) {
    int64_t rows = (int64_t)(bytes / ((size_t)g->kc * sizeof(float)));
    if (rows < 1) rows = 1;
    if (rows > GEMM_ROWS) rows = GEMM_ROWS;
    return rows < g->m ? rows : g->m;
}

/* Rows of a backward chunk: CHUNK_BYTES of columns, but at least CHUNK_ROWS. */
static int64_t chunk_rows(const geom *g) {
    int64_t rows = rows_in(g, g_chunk_bytes);
    if (rows < g_chunk_rows) rows = g_chunk_rows < g->m ? g_chunk_rows : g->m;
    return rows;
}

/* Rows per GEMM call for a layer with a short im2col row and few filters (a stem: 64 filters of
 * 7x7x1 or 7x7x3), or 0 for any other. OpenBLAS (0.3.17 on, AVX-512 x86-64) runs a GEMM of up to
 * SMALL_MNK multiply-adds with kernels that read the operands in place, and on such shapes they
 * are far faster than its packed kernels, which spend a C tile's load and store on every 49 or
 * 147 multiply-adds: y = col w^T as NN calls on w^T (k = 49) goes from 60 to 107 GF/s a core,
 * dw^T += col^T dy from 50 to 83. So these layers make their GEMMs calls of at most this many
 * rows, in the orientations that gain: y = col wt with wt = w^T, and dwt (kc, kg) += col^T dy. */
static int64_t small_rows(const geom *g) {
    int64_t rows = SMALL_MNK / (g->kc * g->kg) / 16 * 16;
    return rows >= 32 ? rows : 0;
}

/* [*lo, *hi): part `part` of `parts` near-equal pieces of [0, n), in multiples of `align`. */
static void split(int64_t n, int parts, int part, int64_t align, int64_t *lo, int64_t *hi) {
    int64_t units = (n + align - 1) / align;
    int64_t a = units * part / parts * align, b = units * (part + 1) / parts * align;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

/* Taps s in [*lo, *hi) of a kernel row starting at input column i0 land inside [0, len). */
static void valid_taps(int64_t i0, int64_t taps, int64_t dil, int64_t len, int64_t *lo,
                       int64_t *hi) {
    int64_t a, b;
    if (dil == 1) { /* the usual case, without the divisions */
        a = i0 >= 0 ? 0 : -i0;
        b = i0 > len - 1 ? 0 : len - i0;
    } else {
        a = i0 >= 0 ? 0 : (-i0 + dil - 1) / dil;
        b = i0 > len - 1 ? 0 : (len - 1 - i0) / dil + 1;
    }
    if (a > taps) a = taps;
    if (b > taps) b = taps;
    *lo = a;
    *hi = b > a ? b : a;
}

/* ---- im2col and col2im ----------------------------------------------------------------------- */

/* dst[0..n) = src[0..n), or 0 when src is NULL. Runs are often a few floats (a one-channel stem
 * copies 7 at a time, an RGB one 21), where a call to memcpy costs more than the copy: a run of
 * 4 to 32 floats is two fixed-size copies from either end that overlap in the middle, which
 * compile to a few vector moves. */
static inline void copy_ends(float *dst, const float *src, int64_t n, const float *zeros,
                             size_t h) {
    memcpy(dst, src ? src : zeros, h * sizeof(float));
    memcpy(dst + n - (int64_t)h, src ? src + n - (int64_t)h : zeros, h * sizeof(float));
}

static inline void copy_run(float *dst, const float *src, int64_t n) {
    static const float zeros[16];
    if (n > 32) {
        if (src)
            memcpy(dst, src, (size_t)n * sizeof(float));
        else
            memset(dst, 0, (size_t)n * sizeof(float));
    } else if (n > 16) {
        copy_ends(dst, src, n, zeros, 16);
    } else if (n > 8) {
        copy_ends(dst, src, n, zeros, 8);
    } else if (n >= 4) {
        copy_ends(dst, src, n, zeros, 4);
    } else {
        for (int64_t i = 0; i < n; i++) dst[i] = src ? src[i] : 0.0f;
    }
}

/* col (m, kc) = the im2col rows of output pixels [m0, m0+m) for group gi; padding reads 0. Runs on
 * the calling thread. */
static void im2col(const geom *g, const float *x, int64_t gi, int64_t m0, int64_t m, float *col) {
    const mt_conv2d_desc *d = g->d;
    const int64_t cg = g->cg, kc = g->kc, run = d->s * cg;
    const bool one_run = d->dil_w == 1 && cg == d->c; /* a kernel row is one contiguous run */
    /* output pixel (n, p, q) of row i, stepped along rather than divided out per row */
    int64_t q = m0 % d->q, p = m0 / d->q % d->p, n = m0 / d->q / d->p;
    for (int64_t i = 0; i < m; i++, q++) {
        if (q == d->q) {
            q = 0;
            if (++p == d->p) p = 0, n++;
        }
        int64_t ih0 = p * d->stride_h - d->pad_h, iw0 = q * d->stride_w - d->pad_w, s_lo, s_hi;
        valid_taps(iw0, d->s, d->dil_w, d->w, &s_lo, &s_hi);
        float *row = col + i * kc;
        for (int64_t r = 0; r < d->r; r++) {
            float *dst = row + r * run;
            int64_t ih = ih0 + r * d->dil_h;
            if (ih < 0 || ih >= d->h) {
                copy_run(dst, NULL, run);
                continue;
            }
            const float *src = x + (n * d->h + ih) * d->w * d->c + gi * cg;
            copy_run(dst, NULL, s_lo * cg);
            if (one_run)
                copy_run(dst + s_lo * cg, src + (iw0 + s_lo) * d->c, (s_hi - s_lo) * cg);
            else
                for (int64_t s = s_lo; s < s_hi; s++)
                    copy_run(dst + s * cg, src + (iw0 + s * d->dil_w) * d->c, cg);
            copy_run(dst + s_hi * cg, NULL, (d->s - s_hi) * cg);
        }
    }
}

/* Columns [l0, l1) of the same im2col rows, into col (m, l1 - l0): a thread building only the
 * columns of the filter gradient it owns. */
static void im2col_cols(const geom *g, const float *x, int64_t gi, int64_t m0, int64_t m,
                        int64_t l0, int64_t l1, float *col) {
    const mt_conv2d_desc *d = g->d;
    const int64_t cg = g->cg, width = l1 - l0;
    for (int64_t i = 0; i < m; i++) {
        int64_t mi = m0 + i, q = mi % d->q, np = mi / d->q, p = np % d->p, n = np / d->p;
        int64_t ih0 = p * d->stride_h - d->pad_h, iw0 = q * d->stride_w - d->pad_w;
        float *row = col + i * width - l0;
        for (int64_t l = l0; l < l1;) { /* one run of channels of one tap at a time */
            int64_t tap = l / cg, c = l % cg, end = (tap + 1) * cg < l1 ? (tap + 1) * cg : l1;
            int64_t ih = ih0 + tap / d->s * d->dil_h, iw = iw0 + tap % d->s * d->dil_w;
            bool inside = ih >= 0 && ih < d->h && iw >= 0 && iw < d->w;
            copy_run(row + l,
                     inside ? x + ((n * d->h + ih) * d->w + iw) * d->c + gi * cg + c : NULL,
                     end - l);
            l = end;
        }
    }
}

/* For col2im: which taps read each input position along one dim. Input position i is read by tap
 * t of output o when o*stride - pad + t*dil == i; taps[i*k + j], outs[i*k + j] for j < count[i]
 * list those pairs in increasing t. */
typedef struct tap_table {
    int32_t *count, *taps, *outs;
} tap_table;

static bool tap_table_init(mt_ctx *ctx, int64_t len, int64_t k, int64_t out, int stride, int pad,
                           int dil, tap_table *tt) {
    tt->count = mt_cpu_scratch(ctx, (size_t)len * sizeof(int32_t), "conv2d_bwd_data", "tap table");
    tt->taps =
        mt_cpu_scratch(ctx, (size_t)(len * k) * sizeof(int32_t), "conv2d_bwd_data", "tap table");
    tt->outs =
        mt_cpu_scratch(ctx, (size_t)(len * k) * sizeof(int32_t), "conv2d_bwd_data", "tap table");
    if (!tt->count || !tt->taps || !tt->outs) return false;
    for (int64_t i = 0; i < len; i++) {
        int32_t c = 0;
        for (int64_t t = 0; t < k; t++) {
            int64_t u = i + pad - t * dil;
            if (u < 0) break;
            if (u % stride || u / stride >= out) continue;
            tt->taps[i * k + c] = (int32_t)t;
            tt->outs[i * k + c] = (int32_t)(u / stride);
            c++;
        }
        tt->count[i] = c;
    }
    return true;
}

/* dx[.., gi*cg : (gi+1)*cg] += the entries of dcol (m, kc), rows [m0, m0+m), each added back to
 * the input pixel im2col took it from. A gather over input pixels: for each, the taps (r, s)
 * whose output pixel (p, q) lies in the chunk, in (r, s) order. A worksharing loop: call it from
 * inside a parallel region (or outside one, where it runs on the calling thread). */
static void col2im_add(const geom *g, const tap_table *th, const tap_table *tw, const float *dcol,
                       int64_t gi, int64_t m0, int64_t m, float *dx) {
    const mt_conv2d_desc *d = g->d;
    const int64_t cg = g->cg, kc = g->kc, pq = d->p * d->q;
    const int64_t n_first = m0 / pq, n_last = (m0 + m - 1) / pq;
    const int64_t rows = (n_last - n_first + 1) * d->h;
#pragma omp for schedule(static)
    for (int64_t j = 0; j < rows; j++) {
        int64_t n = n_first + j / d->h, ih = j % d->h;
        /* the chunk's output rows of image n, and whether any of them reaches input row ih */
        int64_t lo = m0 > n * pq ? m0 : n * pq, hi = m0 + m < (n + 1) * pq ? m0 + m : (n + 1) * pq;
        int64_t p_lo = (lo - n * pq) / d->q, p_hi = (hi - 1 - n * pq) / d->q;
        if (ih < p_lo * d->stride_h - d->pad_h ||
            ih > p_hi * d->stride_h - d->pad_h + (d->r - 1) * d->dil_h)
            continue;
        const int32_t nr = th->count[ih], *rs = th->taps + ih * d->r, *ps = th->outs + ih * d->r;
        for (int64_t iw = 0; iw < d->w; iw++) {
            float *dst = dx + ((n * d->h + ih) * d->w + iw) * d->c + gi * cg;
            const int32_t ns = tw->count[iw], *ss = tw->taps + iw * d->s,
                          *qs = tw->outs + iw * d->s;
            for (int32_t a = 0; a < nr; a++) {
                int64_t base = (n * d->p + ps[a]) * d->q;
                for (int32_t b = 0; b < ns; b++) {
                    int64_t mi = base + qs[b];
                    if (mi < m0 || mi >= m0 + m) continue;
                    const float *src = dcol + (mi - m0) * kc + (rs[a] * d->s + ss[b]) * cg;
                    for (int64_t c = 0; c < cg; c++) dst[c] += src[c];
                }
            }
        }
    }
}

/* ---- depthwise ------------------------------------------------------------------------------- */

/* wt (r*s, c) = w (c, r, s, 1) transposed, so that channels are contiguous. */
static float *transpose_depthwise(mt_ctx *ctx, const mt_conv2d_desc *d, const float *w,
                                  const char *op) {
    int64_t rs = d->r * d->s;
    float *wt = mt_cpu_scratch(ctx, (size_t)(rs * d->c) * sizeof(float), op,
                               "transposed depthwise filters");
    if (!wt) return NULL;
    for (int64_t c = 0; c < d->c; c++)
        for (int64_t t = 0; t < rs; t++) wt[t * d->c + c] = w[c * rs + t];
    return wt;
}

static mt_status depthwise_fwd(mt_ctx *ctx, const mt_conv2d_desc *d, const float *x, const float *w,
                               const float *bias, float *y) {
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    const float *wt = transpose_depthwise(ctx, d, w, "conv2d_fwd");
    if (!wt) return MT_ERR_NOMEM;
    const int64_t c = d->c, rows = d->n * d->p;
#pragma omp parallel for num_threads(ctx->threads) if (rows * d->q * c > PAR_MIN)
    for (int64_t np = 0; np < rows; np++) {
        int64_t n = np / d->p, p = np % d->p, ih0 = p * d->stride_h - d->pad_h;
        for (int64_t q = 0; q < d->q; q++) {
            float *out = y + (np * d->q + q) * c;
            int64_t iw0 = q * d->stride_w - d->pad_w, s_lo, s_hi;
            valid_taps(iw0, d->s, d->dil_w, d->w, &s_lo, &s_hi);
            for (int64_t k = 0; k < c; k++) out[k] = bias ? bias[k] : 0.0f;
            for (int64_t r = 0; r < d->r; r++) {
                int64_t ih = ih0 + r * d->dil_h;
                if (ih < 0 || ih >= d->h) continue;
                for (int64_t s = s_lo; s < s_hi; s++) {
                    const float *in = x + ((n * d->h + ih) * d->w + iw0 + s * d->dil_w) * c;
                    const float *wk = wt + (r * d->s + s) * c;
                    for (int64_t k = 0; k < c; k++) out[k] += in[k] * wk[k];
                }
            }
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* dx by gathering, for each input pixel, dy * w over the taps that read it. */
static mt_status depthwise_bwd_data(mt_ctx *ctx, const mt_conv2d_desc *d, const float *dy,
                                    const float *w, float *dx) {
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    const float *wt = transpose_depthwise(ctx, d, w, "conv2d_bwd_data");
    if (!wt) return MT_ERR_NOMEM;
    const int64_t c = d->c, rows = d->n * d->h;
#pragma omp parallel for num_threads(ctx->threads) if (rows * d->w * c > PAR_MIN)
    for (int64_t nh = 0; nh < rows; nh++) {
        int64_t n = nh / d->h, ih = nh % d->h;
        for (int64_t iw = 0; iw < d->w; iw++) {
            float *out = dx + (nh * d->w + iw) * c;
            for (int64_t k = 0; k < c; k++) out[k] = 0.0f;
            for (int64_t r = 0; r < d->r; r++) {
                int64_t t = ih + d->pad_h - r * d->dil_h;
                if (t < 0) break;
                if (t % d->stride_h || t / d->stride_h >= d->p) continue;
                for (int64_t s = 0; s < d->s; s++) {
                    int64_t u = iw + d->pad_w - s * d->dil_w;
                    if (u < 0) break;
                    if (u % d->stride_w || u / d->stride_w >= d->q) continue;
                    const float *g =
                        dy + ((n * d->p + t / d->stride_h) * d->q + u / d->stride_w) * c;
                    const float *wk = wt + (r * d->s + s) * c;
                    for (int64_t k = 0; k < c; k++) out[k] += g[k] * wk[k];
                }
            }
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* dw[c, r, s] += sum over output pixels of dy * x: per-chunk partials in double over a fixed split
 * of the output rows (n, p), added in chunk order. */
static mt_status depthwise_bwd_filter(mt_ctx *ctx, const mt_conv2d_desc *d, const float *x,
                                      const float *dy, float *dw) {
    const int64_t c = d->c, rs = d->r * d->s, rows = d->n * d->p;
    const int64_t per = mt_cpu_sum_chunk_rows(rows, d->q * c), chunks = (rows + per - 1) / per;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    double *part = mt_cpu_scratch(ctx, (size_t)(chunks * rs * c) * sizeof(double),
                                  "conv2d_bwd_filter", "depthwise partial sums");
    if (!part) return MT_ERR_NOMEM;
#pragma omp parallel for num_threads(ctx->threads) if (rows * d->q * c * rs > PAR_MIN)
    for (int64_t ch = 0; ch < chunks; ch++) {
        double *acc = part + ch * rs * c;
        for (int64_t i = 0; i < rs * c; i++) acc[i] = 0.0;
        int64_t end = (ch + 1) * per < rows ? (ch + 1) * per : rows;
        for (int64_t np = ch * per; np < end; np++) {
            int64_t n = np / d->p, p = np % d->p, ih0 = p * d->stride_h - d->pad_h;
            for (int64_t q = 0; q < d->q; q++) {
                const float *g = dy + (np * d->q + q) * c;
                int64_t iw0 = q * d->stride_w - d->pad_w, s_lo, s_hi;
                valid_taps(iw0, d->s, d->dil_w, d->w, &s_lo, &s_hi);
                for (int64_t r = 0; r < d->r; r++) {
                    int64_t ih = ih0 + r * d->dil_h;
                    if (ih < 0 || ih >= d->h) continue;
                    for (int64_t s = s_lo; s < s_hi; s++) {
                        const float *in = x + ((n * d->h + ih) * d->w + iw0 + s * d->dil_w) * c;
                        double *a = acc + (r * d->s + s) * c;
                        for (int64_t k = 0; k < c; k++) a[k] += (double)g[k] * in[k];
                    }
                }
            }
        }
    }
    for (int64_t ch = 1; ch < chunks; ch++)
        for (int64_t i = 0; i < rs * c; i++) part[i] += part[ch * rs * c + i];
    for (int64_t k = 0; k < c; k++)
        for (int64_t t = 0; t < rs; t++)
            dw[k * rs + t] = (float)((double)dw[k * rs + t] + part[t * c + k]);
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* ---- the ops --------------------------------------------------------------------------------- */

/* y (m, k) = x (m, c) w^T group by group, x read in place: rows split between threads. */
static void pointwise_fwd(mt_ctx *ctx, const geom *g, const float *x, const float *w,
                          const float *bias, float *y) {
    const mt_conv2d_desc *d = g->d;
    int64_t blocks = (g->m + GEMM_ROWS - 1) / GEMM_ROWS;
    if (blocks < ctx->threads) blocks = ctx->threads;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (parallel(g))
    for (int64_t b = 0; b < blocks; b++) {
        int64_t m0, m1;
        split(g->m, (int)blocks, (int)b, 1, &m0, &m1);
        for (int64_t gi = 0; gi < d->groups; gi++)
            sgemm(false, true, m1 - m0, g->kg, g->cg, 1.0f, x + m0 * d->c + gi * g->cg, d->c,
                  w + gi * g->kg * g->cg, g->cg, 0.0f, y + m0 * d->k + gi * g->kg, d->k);
        if (bias)
            for (int64_t i = m0; i < m1; i++)
                for (int64_t k = 0; k < d->k; k++) y[i * d->k + k] += bias[k];
    }
}

/* The im2col forward on raw pointers; the caller has set OpenBLAS up (blas_enter). Each thread
 * builds a block of rows in its own buffer, multiplies it and adds the bias. */
static mt_status im2col_fwd(mt_ctx *ctx, const mt_conv2d_desc *d, const float *x, const float *w,
                            const float *bias, float *y, const char *op) {
    geom g = geom_of(d);
    MT_TRY(check_blas_sizes(op, &g));
    int64_t rows = rows_in(&g, g_block_bytes);
    if (rows < g_block_rows) rows = g_block_rows < g.m ? g_block_rows : g.m;
    /* as many blocks for every thread, of near-equal size */
    int64_t blocks = (g.m + rows - 1) / rows;
    blocks = (blocks + ctx->threads - 1) / ctx->threads * ctx->threads;
    rows = (g.m + blocks - 1) / blocks;
    blocks = (g.m + rows - 1) / rows;
    const int64_t sub = small_rows(&g);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *cols = mt_cpu_scratch(ctx, (size_t)(ctx->threads * rows * g.kc) * sizeof(float), op,
                                 "im2col blocks");
    /* wt (groups, kc, kg): each group's filters transposed, for the small GEMMs */
    float *wt =
        sub ? mt_cpu_scratch(ctx, (size_t)(d->k * g.kc) * sizeof(float), op, "transposed filters")
            : NULL;
    if (!cols || (sub && !wt)) {
        mt_arena_rewind(&ctx->scratch, mark);
        return MT_ERR_NOMEM;
    }
    for (int64_t gi = 0; sub && gi < d->groups; gi++)
        for (int64_t kk = 0; kk < g.kg; kk++)
            for (int64_t l = 0; l < g.kc; l++)
                wt[(gi * g.kc + l) * g.kg + kk] = w[(gi * g.kg + kk) * g.kc + l];
#pragma omp parallel for num_threads(ctx->threads) schedule(dynamic) if (parallel(&g))
    for (int64_t b = 0; b < blocks; b++) {
        float *col = cols + omp_get_thread_num() * rows * g.kc;
        int64_t m0 = b * rows, m = g.m - m0 < rows ? g.m - m0 : rows;
        for (int64_t gi = 0; gi < d->groups; gi++) {
            im2col(&g, x, gi, m0, m, col);
            if (!sub) {
                sgemm(false, true, m, g.kg, g.kc, 1.0f, col, g.kc, w + gi * g.kg * g.kc, g.kc, 0.0f,
                      y + m0 * d->k + gi * g.kg, d->k);
                continue;
            }
            for (int64_t i = 0; i < m; i += sub)
                sgemm(false, false, m - i < sub ? m - i : sub, g.kg, g.kc, 1.0f, col + i * g.kc,
                      g.kc, wt + gi * g.kc * g.kg, g.kg, 0.0f, y + (m0 + i) * d->k + gi * g.kg,
                      d->k);
        }
        if (bias)
            for (int64_t i = m0; i < m0 + m; i++)
                for (int64_t k = 0; k < d->k; k++) y[i * d->k + k] += bias[k];
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_conv2d_fwd(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *x,
                            const mt_tensor *w, const mt_tensor *bias, mt_tensor *y) {
    const float *xp = x->data, *wp = w->data, *bp = bias ? bias->data : NULL;
    float *yp = y->data;
    if (is_depthwise(d)) return depthwise_fwd(ctx, d, xp, wp, bp, yp);
    geom g = geom_of(d);
    MT_TRY(check_blas_sizes("conv2d_fwd", &g));
    int saved = blas_enter(ctx);
    mt_status st = MT_OK;
    if (is_pointwise(d))
        pointwise_fwd(ctx, &g, xp, wp, bp, yp);
    else if (mt_cpu_winograd_pays(d, false))
        st = mt_cpu_winograd_fwd(ctx, d, xp, wp, false, bp, yp, "conv2d_fwd");
    else
        st = im2col_fwd(ctx, d, xp, wp, bp, yp, "conv2d_fwd");
    blas_leave(ctx, saved);
    return st;
}

/* dx (m, c) = dy (m, k) w group by group: rows split between threads. */
static void pointwise_bwd_data(mt_ctx *ctx, const geom *g, const float *dy, const float *w,
                               float *dx) {
    const mt_conv2d_desc *d = g->d;
    int64_t blocks = (g->m + GEMM_ROWS - 1) / GEMM_ROWS;
    if (blocks < ctx->threads) blocks = ctx->threads;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (parallel(g))
    for (int64_t b = 0; b < blocks; b++) {
        int64_t m0, m1;
        split(g->m, (int)blocks, (int)b, 1, &m0, &m1);
        for (int64_t gi = 0; gi < d->groups; gi++)
            sgemm(false, false, m1 - m0, g->cg, g->kg, 1.0f, dy + m0 * d->k + gi * g->kg, d->k,
                  w + gi * g->kg * g->cg, g->cg, 0.0f, dx + m0 * d->c + gi * g->cg, d->c);
    }
}

/* A stride-1 convolution whose padding is at most its dilated kernel's reach has, as its input
 * gradient, a forward convolution of dy: dx = conv(dy, w') with w'[c, r, s, k] = w[k, R-1-r,
 * S-1-s, c] (per group) and padding dil*(R-1) - pad. It runs at the forward's speed and writes dx
 * once, without col2im. */
static bool transposes_to_fwd(const mt_conv2d_desc *d) {
    return d->stride_h == 1 && d->stride_w == 1 && d->pad_h <= d->dil_h * (d->r - 1) &&
           d->pad_w <= d->dil_w * (d->s - 1);
}

static mt_status bwd_data_as_fwd(mt_ctx *ctx, const geom *g, const float *dy, const float *w,
                                 float *dx) {
    const mt_conv2d_desc *d = g->d;
    mt_conv2d_desc t = {.n = d->n,
                        .h = d->p,
                        .w = d->q,
                        .c = d->k,
                        .k = d->c,
                        .r = d->r,
                        .s = d->s,
                        .p = d->h,
                        .q = d->w,
                        .stride_h = 1,
                        .stride_w = 1,
                        .pad_h = (int)(d->dil_h * (d->r - 1) - d->pad_h),
                        .pad_w = (int)(d->dil_w * (d->s - 1) - d->pad_w),
                        .dil_h = d->dil_h,
                        .dil_w = d->dil_w,
                        .groups = d->groups};
    if (mt_cpu_winograd_pays(&t, false)) /* reads w flipped and transposed itself */
        return mt_cpu_winograd_fwd(ctx, &t, dy, w, true, NULL, dx, "conv2d_bwd_data");
    const int64_t rs = d->r * d->s;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *wt = mt_cpu_scratch(ctx, (size_t)(d->k * rs * g->cg) * sizeof(float), "conv2d_bwd_data",
                               "transposed filters");
    if (!wt) return MT_ERR_NOMEM;
    /* wt (C, R, S, Kg): channel gi*cg + c of wt is filter row (gi*kg + kk, flipped tap, c) of w;
     * per group and tap a (kg, cg) -> (cg, kg) transpose, done in TILE x TILE tiles so that both
     * sides are read and written in runs */
    enum { TILE = 32 };
    const int64_t kt = (g->kg + TILE - 1) / TILE, ct = (g->cg + TILE - 1) / TILE;
    const int64_t items = d->groups * rs * kt * ct;
#pragma omp parallel for num_threads(ctx->threads) if (d->k * rs * g->cg > PAR_MIN)
    for (int64_t it = 0; it < items; it++) {
        int64_t gi = it / (rs * kt * ct), tap = it / (kt * ct) % rs;
        int64_t k0 = it / ct % kt * TILE, c0 = it % ct * TILE;
        int64_t k1 = k0 + TILE < g->kg ? k0 + TILE : g->kg,
                c1 = c0 + TILE < g->cg ? c0 + TILE : g->cg;
        for (int64_t c = c0; c < c1; c++)
            for (int64_t kk = k0; kk < k1; kk++)
                wt[((gi * g->cg + c) * rs + tap) * g->kg + kk] =
                    w[((gi * g->kg + kk) * rs + rs - 1 - tap) * g->cg + c];
    }
    mt_status st = im2col_fwd(ctx, &t, dy, wt, NULL, dx, "conv2d_bwd_data");
    mt_arena_rewind(&ctx->scratch, mark);
    return st;
}

/* dx by dcol = dy w and col2im, a chunk of rows at a time. */
static mt_status bwd_data_col2im(mt_ctx *ctx, const geom *gp, const float *dyp, const float *wp,
                                 float *dxp, int64_t total) {
    const geom g = *gp;
    const mt_conv2d_desc *d = g.d;
    int64_t rows = chunk_rows(&g);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *dcol = mt_cpu_scratch(ctx, (size_t)(rows * g.kc) * sizeof(float), "conv2d_bwd_data",
                                 "column gradient buffer");
    tap_table th, tw;
    if (!dcol || !tap_table_init(ctx, d->h, d->r, d->p, d->stride_h, d->pad_h, d->dil_h, &th) ||
        !tap_table_init(ctx, d->w, d->s, d->q, d->stride_w, d->pad_w, d->dil_w, &tw)) {
        mt_arena_rewind(&ctx->scratch, mark);
        return MT_ERR_NOMEM;
    }
    /* per chunk of rows: dcol = dy w (rows split between threads), then col2im (input rows
     * split); the worksharing loops' barriers separate the phases */
#pragma omp parallel num_threads(ctx->threads) if (parallel(&g))
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
#pragma omp for schedule(static)
        for (int64_t i = 0; i < total; i++) dxp[i] = 0.0f;
        for (int64_t m0 = 0; m0 < g.m; m0 += rows) {
            int64_t m = g.m - m0 < rows ? g.m - m0 : rows, a, b;
            split(m, nt, me, 1, &a, &b);
            for (int64_t gi = 0; gi < d->groups; gi++) {
                sgemm(false, false, b - a, g.kc, g.kg, 1.0f, dyp + (m0 + a) * d->k + gi * g.kg,
                      d->k, wp + gi * g.kg * g.kc, g.kc, 0.0f, dcol + a * g.kc, g.kc);
#pragma omp barrier
                col2im_add(&g, &th, &tw, dcol, gi, m0, m, dxp); /* ends with a barrier */
            }
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_conv2d_bwd_data(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *dy,
                                 const mt_tensor *w, mt_tensor *dx) {
    const float *dyp = dy->data, *wp = w->data;
    float *dxp = dx->data;
    if (is_depthwise(d)) return depthwise_bwd_data(ctx, d, dyp, wp, dxp);
    geom g = geom_of(d);
    MT_TRY(check_blas_sizes("conv2d_bwd_data", &g));
    int saved = blas_enter(ctx);
    mt_status st = MT_OK;
    if (is_pointwise(d))
        pointwise_bwd_data(ctx, &g, dyp, wp, dxp);
    else if (transposes_to_fwd(d))
        st = bwd_data_as_fwd(ctx, &g, dyp, wp, dxp);
    else
        st = bwd_data_col2im(ctx, &g, dyp, wp, dxp, mt_tensor_numel(dx));
    blas_leave(ctx, saved);
    return st;
}

/* The GEMM dw_g (kg, kc) += dy_g^T (kg, m) col (m, kc) split between threads along its larger
 * output dim, in multiples of 16 (a vector of floats). (1x1 convolutions, whose column is x.) */
static void filter_gemm_part(const geom *g, int64_t gi, int nt, int me, int64_t m, const float *dy,
                             int64_t ldy, const float *col, int64_t ldcol, float *dw) {
    int64_t lo, hi;
    if (g->kg >= g->kc) {
        split(g->kg, nt, me, 16, &lo, &hi);
        sgemm(true, false, hi - lo, g->kc, m, 1.0f, dy + gi * g->kg + lo, ldy, col, ldcol, 1.0f,
              dw + (gi * g->kg + lo) * g->kc, g->kc);
    } else {
        split(g->kc, nt, me, 16, &lo, &hi);
        sgemm(true, false, g->kg, hi - lo, m, 1.0f, dy + gi * g->kg, ldy, col + lo, ldcol, 1.0f,
              dw + gi * g->kg * g->kc + lo, g->kc);
    }
}

/* dw += dy^T col with each thread owning a range of dw's columns (taps x channels): it builds just
 * those columns of each chunk's im2col rows and multiplies them. Threads share nothing and never
 * wait for each other until the end. For the usual case of more columns than filters. */
static mt_status filter_by_columns(mt_ctx *ctx, const geom *g, const float *x, const float *dy,
                                   float *dw) {
    const mt_conv2d_desc *d = g->d;
    const int64_t rows = chunk_rows(g);
    /* thread me's block of rows x (l1 - l0) starts at rows * (l0 + 16 * me): disjoint blocks */
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *cols = mt_cpu_scratch(ctx, (size_t)(rows * (g->kc + 16 * ctx->threads)) * sizeof(float),
                                 "conv2d_bwd_filter", "im2col column blocks");
    if (!cols) return MT_ERR_NOMEM;
#pragma omp parallel num_threads(ctx->threads) if (parallel(g))
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t l0, l1;
        split(g->kc, nt, me, 16, &l0, &l1);
        float *col = cols + rows * (l0 + 16 * me);
        for (int64_t m0 = 0; l1 > l0 && m0 < g->m; m0 += rows) {
            int64_t m = g->m - m0 < rows ? g->m - m0 : rows;
            for (int64_t gi = 0; gi < d->groups; gi++) {
                im2col_cols(g, x, gi, m0, m, l0, l1, col);
                sgemm(true, false, g->kg, l1 - l0, m, 1.0f, dy + m0 * d->k + gi * g->kg, d->k, col,
                      l1 - l0, 1.0f, dw + gi * g->kg * g->kc + l0, g->kc);
            }
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* dw += dy^T col with the im2col rows of each chunk split between threads and the GEMM split by
 * filters; barriers separate the two. For more filters than columns (a stem on a 1-channel image,
 * strided 1x1 convolutions). */
static mt_status filter_by_rows(mt_ctx *ctx, const geom *g, const float *x, const float *dy,
                                float *dw) {
    const mt_conv2d_desc *d = g->d;
    const int64_t rows = chunk_rows(g);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *col = mt_cpu_scratch(ctx, (size_t)(rows * g->kc) * sizeof(float), "conv2d_bwd_filter",
                                "im2col column buffer");
    if (!col) return MT_ERR_NOMEM;
#pragma omp parallel num_threads(ctx->threads) if (parallel(g))
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        for (int64_t m0 = 0; m0 < g->m; m0 += rows) {
            int64_t m = g->m - m0 < rows ? g->m - m0 : rows, a, b;
            split(m, nt, me, 1, &a, &b);
            for (int64_t gi = 0; gi < d->groups; gi++) {
                im2col(g, x, gi, m0 + a, b - a, col + a * g->kc);
#pragma omp barrier
                filter_gemm_part(g, gi, nt, me, m, dy + m0 * d->k, d->k, col, g->kc, dw);
#pragma omp barrier
            }
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* dw += dy^T col as PARTS partial sums over fixed ranges of rows, taken by threads as they come
 * free, each range in blocks of im2col rows (from each thread's own L2-sized buffer); the partials
 * are then added in order. For a dw small enough to hold PARTS copies of (up to PARTS_MAX values):
 * no barriers, and no GEMM split thin (a stem on a 1-channel image has a 64 x 49 dw, which split
 * by filters or columns runs at a fraction of the GEMM's speed). The ranges do not depend on the
 * thread count, nor then does the result. */
static mt_status filter_by_parts(mt_ctx *ctx, const geom *g, const float *x, const float *dy,
                                 float *dw) {
    const mt_conv2d_desc *d = g->d;
    const int64_t nw = d->k * g->kc, block = rows_in(g, g_block_bytes), sub = small_rows(g);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *parts = mt_cpu_scratch(ctx, (size_t)(PARTS * nw) * sizeof(float), "conv2d_bwd_filter",
                                  "partial filter gradients");
    float *cols = mt_cpu_scratch(ctx, (size_t)(ctx->threads * block * g->kc) * sizeof(float),
                                 "conv2d_bwd_filter", "im2col blocks");
    if (!parts || !cols) {
        mt_arena_rewind(&ctx->scratch, mark);
        return MT_ERR_NOMEM;
    }
#pragma omp parallel num_threads(ctx->threads) if (parallel(g))
    {
        float *col = cols + omp_get_thread_num() * block * g->kc;
#pragma omp for schedule(dynamic)
        for (int part = 0; part < PARTS; part++) {
            float *acc = parts + part * nw;
            int64_t r0, r1;
            split(g->m, PARTS, part, 1, &r0, &r1);
            for (int64_t i = 0; i < nw; i++) acc[i] = 0.0f;
            for (int64_t m0 = r0; m0 < r1; m0 += block) {
                int64_t m = r1 - m0 < block ? r1 - m0 : block;
                for (int64_t gi = 0; gi < d->groups; gi++) {
                    im2col(g, x, gi, m0, m, col);
                    if (!sub) {
                        sgemm(true, false, g->kg, g->kc, m, 1.0f, dy + m0 * d->k + gi * g->kg, d->k,
                              col, g->kc, 1.0f, acc + gi * g->kg * g->kc, g->kc);
                        continue;
                    }
                    for (int64_t i = 0; i < m; i += sub) /* acc_g (kc, kg) += col^T dy_g */
                        sgemm(true, false, g->kc, g->kg, m - i < sub ? m - i : sub, 1.0f,
                              col + i * g->kc, g->kc, dy + (m0 + i) * d->k + gi * g->kg, d->k, 1.0f,
                              acc + gi * g->kg * g->kc, g->kg);
                }
            }
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nw; i++) {
            /* the partials of dw[i]: i itself, or (small GEMMs) its place in the transposed
             * (kc, kg) block of its group */
            int64_t gi = i / (g->kg * g->kc), kk = i / g->kc % g->kg, l = i % g->kc;
            int64_t j = sub ? (gi * g->kc + l) * g->kg + kk : i;
            float sum = 0.0f; /* partials first, then one add: accumulating g twice gives 2g */
            for (int part = 0; part < PARTS; part++) sum += parts[part * nw + j];
            dw[i] += sum;
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_conv2d_bwd_filter(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *x,
                                   const mt_tensor *dy, mt_tensor *dw, mt_tensor *dbias) {
    const float *xp = x->data, *dyp = dy->data;
    float *dwp = dw->data;
    geom g = geom_of(d);
    if (dbias) MT_TRY(mt_cpu_column_sums_add(ctx, dyp, g.m, d->k, dbias->data));
    if (is_depthwise(d)) return depthwise_bwd_filter(ctx, d, xp, dyp, dwp);
    MT_TRY(check_blas_sizes("conv2d_bwd_filter", &g));
    int saved = blas_enter(ctx);
    if (is_pointwise(d)) { /* dw_g (kg, cg) += dy_g^T (kg, m) x_g (m, cg): x is the column */
#pragma omp parallel num_threads(ctx->threads) if (parallel(&g))
        {
            int nt = omp_get_num_threads(), me = omp_get_thread_num();
            for (int64_t m0 = 0; m0 < g.m; m0 += GEMM_ROWS) {
                int64_t m = g.m - m0 < GEMM_ROWS ? g.m - m0 : GEMM_ROWS;
                for (int64_t gi = 0; gi < d->groups; gi++)
                    filter_gemm_part(&g, gi, nt, me, m, dyp + m0 * d->k, d->k,
                                     xp + m0 * d->c + gi * g.cg, d->c, dwp);
            }
        }
        blas_leave(ctx, saved);
        return MT_OK;
    }
    if (mt_cpu_winograd_pays(d, true)) {
        mt_status st = mt_cpu_winograd_bwd_filter(ctx, d, xp, dyp, dwp);
        blas_leave(ctx, saved);
        return st;
    }
    mt_status st = d->k * g.kc <= PARTS_MAX ? filter_by_parts(ctx, &g, xp, dyp, dwp)
                   : g.kc >= g.kg           ? filter_by_columns(ctx, &g, xp, dyp, dwp)
                                            : filter_by_rows(ctx, &g, xp, dyp, dwp);
    blas_leave(ctx, saved);
    return st;
}
