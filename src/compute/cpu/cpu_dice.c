/* Soft Dice pieces on the CPU: the per-image, per-class sums a Dice loss is made of, and the
 * elementwise gradient once the caller has turned the loss's derivative into two coefficients.
 *
 * p and g are (N,P,C): images, pixels, classes (an NHWC map is (N, H*W, C)). dice_sums splits each
 * image's pixels into chunks of a fixed size (mt_cpu_sum_chunk_rows of the pixel and class counts,
 * never of the thread count); each (image, chunk) work item sums its pixels in double into its own
 * row of partials, and each image's partials are then added in chunk order. So the sums are the
 * same bits on any number of threads, and a long image loses nothing to f32 accumulation.
 *
 * dice_bwd is elementwise: dp = a*g + b*(squared ? 2p : 1) with (a, b) the coefficients of the
 * pixel's image and class; dp may be p or g. */
#include "cpu_ops.h"

#define PAR_MIN 32768 /* elements below which a loop runs on one thread */

mt_status mt_cpu_dice_sums(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g, bool squared,
                           mt_tensor *sums) {
    const int64_t n = p->shape[0], pix = p->shape[1], c = p->shape[2];
    const float *pp = p->data, *gp = g->data;
    float *out = sums->data;
    const int64_t per = mt_cpu_sum_chunk_rows(pix, c), chunks = (pix + per - 1) / per;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    double *part = mt_cpu_scratch(ctx, (size_t)(n * chunks * c * 3) * sizeof(double), "dice_sums",
                                  "per-chunk partial sums");
    if (!part) return MT_ERR_NOMEM;
#pragma omp parallel for num_threads(ctx->threads) if (n * pix * c > PAR_MIN)
    for (int64_t it = 0; it < n * chunks; it++) {
        const int64_t img = it / chunks, ch = it % chunks;
        const int64_t i0 = ch * per, i1 = i0 + per < pix ? i0 + per : pix;
        double *acc = part + it * c * 3; /* (c, 3) */
        for (int64_t k = 0; k < c * 3; k++) acc[k] = 0.0;
        for (int64_t i = i0; i < i1; i++) {
            const float *pr = pp + (img * pix + i) * c, *gr = gp + (img * pix + i) * c;
            for (int64_t k = 0; k < c; k++) {
                double pv = pr[k], gv = gr[k];
                acc[3 * k] += pv * gv;
                acc[3 * k + 1] += squared ? pv * pv : pv;
                acc[3 * k + 2] += squared ? gv * gv : gv;
            }
        }
    }
    for (int64_t img = 0; img < n; img++) {
        double *total = part + img * chunks * c * 3;
        for (int64_t ch = 1; ch < chunks; ch++) /* in chunk order */
            for (int64_t k = 0; k < c * 3; k++) total[k] += total[ch * c * 3 + k];
        for (int64_t k = 0; k < c * 3; k++) out[img * c * 3 + k] = (float)total[k];
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_dice_bwd(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g,
                          const mt_tensor *coef, bool squared, mt_tensor *dp) {
    const int64_t n = p->shape[0], pix = p->shape[1], c = p->shape[2];
    const float *pp = p->data, *gp = g->data, *cf = coef->data;
    float *out = dp->data;
#pragma omp parallel for num_threads(ctx->threads) if (n * pix * c > PAR_MIN)
    for (int64_t row = 0; row < n * pix; row++) {
        const float *ab = cf + (row / pix) * c * 2; /* (c, 2) of this row's image */
        const float *pr = pp + row * c, *gr = gp + row * c;
        float *o = out + row * c;
        if (squared)
            for (int64_t k = 0; k < c; k++) o[k] = ab[2 * k] * gr[k] + ab[2 * k + 1] * 2.0f * pr[k];
        else
            for (int64_t k = 0; k < c; k++) o[k] = ab[2 * k] * gr[k] + ab[2 * k + 1];
    }
    return MT_OK;
}
