/* Batch norm on the CPU, over x viewed as (rows, C) (an NHWC map is (N*H*W, C)).
 *
 * The reductions (bn_stats, bn_bwd_reduce) sum per channel over a fixed split of the rows
 * (mt_cpu_sum_chunk_rows): each chunk fills its own row of partial sums, and the partials are
 * added in chunk order, so the results are the same bits on any number of threads. Within a chunk,
 * blocks of BLOCK rows are summed in f32 (vector-wide; 16 terms lose nothing that matters) and
 * each block's sums are added in double. bn_stats is one pass: it sums x - K and (x - K)^2 with K,
 * the first row, as a per-channel shift, which keeps the variance accurate when the mean is large
 * against the spread (E[x^2] - E[x]^2 without a shift would cancel catastrophically).
 *
 * The elementwise passes (bn_fwd, bn_bwd) fold the per-channel constants first (in double) and
 * then do two or three f32 operations per element:
 *     y  = (x - mean) * (gamma * invstd) + beta
 *     dx = (gamma * invstd) * (dy - sum_dy/count - (x - mean) * invstd * sum_dy_xhat/count)
 * Subtracting the mean before scaling (rather than x * scale + shift) keeps y accurate in the
 * same large-mean case. */
#include <math.h>
#include "cpu_ops.h"

#define PAR_MIN 32768 /* elements below which a loop runs on one thread */
#define BLOCK   16    /* rows summed in f32 before each addition in double */

typedef struct bn_shape {
    int64_t rows, c;
} bn_shape;

static bn_shape shape_of(const mt_tensor *x) {
    bn_shape s = {.c = x->shape[x->ndim - 1]};
    s.rows = mt_tensor_numel(x) / s.c;
    return s;
}

/* Per-chunk partial sums: two rows of c doubles per chunk, and two rows of c floats per chunk for
 * the block sums. */
typedef struct partials {
    double *p;
    float *f;
    int64_t per, chunks;
} partials;

static mt_status partials_init(mt_ctx *ctx, bn_shape s, const char *op, partials *pt) {
    pt->per = mt_cpu_sum_chunk_rows(s.rows, s.c);
    pt->chunks = (s.rows + pt->per - 1) / pt->per;
    pt->p = mt_cpu_scratch(ctx, (size_t)(pt->chunks * 2 * s.c) * sizeof(double), op,
                           "per-chunk partial sums");
    pt->f = mt_cpu_scratch(ctx, (size_t)(pt->chunks * 2 * s.c) * sizeof(float), op,
                           "per-chunk block sums");
    return pt->p && pt->f ? MT_OK : MT_ERR_NOMEM;
}

/* Chunk ch's sums over its rows, into its two rows of pt->p: per channel j,
 *     stats (dy NULL):  sum (x - k),  sum (x - k)^2        with k the shift
 *     backward:         sum dy,       sum dy * (x - k)     with k the mean */
static void chunk_sums(const partials *pt, int64_t ch, bn_shape s, const float *x, const float *dy,
                       const float *k) {
    const int64_t c = s.c, end = (ch + 1) * pt->per < s.rows ? (ch + 1) * pt->per : s.rows;
    double *s1 = pt->p + ch * 2 * c, *s2 = s1 + c;
    float *f1 = pt->f + ch * 2 * c, *f2 = f1 + c;
    for (int64_t j = 0; j < c; j++) s1[j] = s2[j] = 0.0;
    for (int64_t b = ch * pt->per; b < end; b += BLOCK) {
        int64_t e = b + BLOCK < end ? b + BLOCK : end;
        for (int64_t j = 0; j < c; j++) f1[j] = f2[j] = 0.0f;
        for (int64_t i = b; i < e; i++) {
            const float *row = x + i * c, *g = dy ? dy + i * c : NULL;
            if (!g)
                for (int64_t j = 0; j < c; j++) {
                    float v = row[j] - k[j];
                    f1[j] += v;
                    f2[j] += v * v;
                }
            else
                for (int64_t j = 0; j < c; j++) {
                    f1[j] += g[j];
                    f2[j] += g[j] * (row[j] - k[j]);
                }
        }
        for (int64_t j = 0; j < c; j++) s1[j] += f1[j], s2[j] += f2[j];
    }
}

/* Adds every chunk's two rows into chunk 0's, in chunk order. */
static void partials_total(const partials *pt, int64_t c) {
    for (int64_t ch = 1; ch < pt->chunks; ch++)
        for (int64_t j = 0; j < 2 * c; j++) pt->p[j] += pt->p[ch * 2 * c + j];
}

/* invstd = 1 / sqrt(var + eps), in double. */
static double invstd_of(float var, float eps) {
    return 1.0 / sqrt((double)var + (double)eps);
}

mt_status mt_cpu_bn_stats(mt_ctx *ctx, const mt_tensor *x, mt_tensor *mean, mt_tensor *var) {
    const float *xp = x->data;
    bn_shape s = shape_of(x);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    partials pt;
    MT_TRY(partials_init(ctx, s, "bn_stats", &pt));
    const float *shift = xp; /* row 0 */
#pragma omp parallel for num_threads(ctx->threads) if (s.rows * s.c > PAR_MIN)
    for (int64_t ch = 0; ch < pt.chunks; ch++) chunk_sums(&pt, ch, s, xp, NULL, shift);
    partials_total(&pt, s.c);
    float *mp = mean->data, *vp = var->data;
    for (int64_t j = 0; j < s.c; j++) {
        double m1 = pt.p[j] / (double)s.rows, m2 = pt.p[s.c + j] / (double)s.rows;
        double v = m2 - m1 * m1;
        mp[j] = (float)(shift[j] + m1);
        vp[j] = (float)(v > 0 ? v : 0.0);
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_bn_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *mean,
                        const mt_tensor *var, float eps, const mt_tensor *gamma,
                        const mt_tensor *beta, mt_tensor *y) {
    const float *xp = x->data, *mp = mean->data, *vp = var->data;
    const float *gp = gamma ? gamma->data : NULL, *bp = beta ? beta->data : NULL;
    float *yp = y->data;
    bn_shape s = shape_of(x);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *k = mt_cpu_scratch(ctx, (size_t)(3 * s.c) * sizeof(float), "bn_fwd", "scales");
    if (!k) return MT_ERR_NOMEM;
    float *m = k, *scale = k + s.c, *shift = k + 2 * s.c; /* (c) each */
    for (int64_t j = 0; j < s.c; j++) {
        m[j] = mp[j];
        scale[j] = (float)((gp ? gp[j] : 1.0) * invstd_of(vp[j], eps));
        shift[j] = bp ? bp[j] : 0.0f;
    }
#pragma omp parallel for num_threads(ctx->threads) if (s.rows * s.c > PAR_MIN)
    for (int64_t i = 0; i < s.rows; i++) {
        const float *in = xp + i * s.c;
        float *out = yp + i * s.c;
        for (int64_t j = 0; j < s.c; j++) out[j] = (in[j] - m[j]) * scale[j] + shift[j];
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_bn_bwd_reduce(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy,
                               const mt_tensor *mean, const mt_tensor *var, float eps,
                               mt_tensor *sum_dy, mt_tensor *sum_dy_xhat) {
    const float *xp = x->data, *gp = dy->data, *mp = mean->data, *vp = var->data;
    bn_shape s = shape_of(x);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    partials pt;
    MT_TRY(partials_init(ctx, s, "bn_bwd_reduce", &pt));
#pragma omp parallel for num_threads(ctx->threads) if (s.rows * s.c > PAR_MIN)
    for (int64_t ch = 0; ch < pt.chunks; ch++) chunk_sums(&pt, ch, s, xp, gp, mp);
    partials_total(&pt, s.c);
    float *sd = sum_dy->data, *sdx = sum_dy_xhat->data;
    for (int64_t j = 0; j < s.c; j++) {
        sd[j] = (float)pt.p[j];
        sdx[j] = (float)(pt.p[s.c + j] * invstd_of(vp[j], eps));
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_bn_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy, const mt_tensor *mean,
                        const mt_tensor *var, float eps, const mt_tensor *gamma,
                        const mt_tensor *sum_dy, const mt_tensor *sum_dy_xhat, double count,
                        bool batch_stats, mt_tensor *dx) {
    const float *xp = x->data, *gp = dy->data, *mp = mean->data, *vp = var->data;
    const float *gam = gamma ? gamma->data : NULL;
    float *out = dx->data;
    bn_shape s = shape_of(x);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *k = mt_cpu_scratch(ctx, (size_t)(4 * s.c) * sizeof(float), "bn_bwd", "scales");
    if (!k) return MT_ERR_NOMEM;
    /* dx = a * (dy - b - (x - m) * e) per channel; eval mode has b = e = 0 */
    float *a = k, *b = k + s.c, *e = k + 2 * s.c, *m = k + 3 * s.c;
    const float *sd = batch_stats ? sum_dy->data : NULL,
                *sdx = batch_stats ? sum_dy_xhat->data : NULL;
    for (int64_t j = 0; j < s.c; j++) {
        double inv = invstd_of(vp[j], eps);
        a[j] = (float)((gam ? gam[j] : 1.0) * inv);
        b[j] = batch_stats ? (float)(sd[j] / count) : 0.0f;
        e[j] = batch_stats ? (float)(inv * sdx[j] / count) : 0.0f;
        m[j] = mp[j];
    }
#pragma omp parallel for num_threads(ctx->threads) if (s.rows * s.c > PAR_MIN)
    for (int64_t i = 0; i < s.rows; i++) {
        const float *in = xp + i * s.c, *g = gp + i * s.c;
        float *o = out + i * s.c;
        if (batch_stats)
            for (int64_t j = 0; j < s.c; j++) o[j] = a[j] * (g[j] - b[j] - (in[j] - m[j]) * e[j]);
        else
            for (int64_t j = 0; j < s.c; j++) o[j] = a[j] * g[j];
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}
