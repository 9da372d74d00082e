/* RMSNorm over the last dim on the CPU, as Hugging Face's LlamaRMSNorm in f32: x viewed as
 * (rows, D), w (D).
 *
 * Forward, per row:  rstd = 1 / sqrt(mean(x^2) + eps),  y = (x * rstd) * w
 * in LlamaRMSNorm's order (x is normalised and rounded to f32, then weighted). The mean of squares
 * is summed in double.
 *
 * Backward. With y_j = w_j x_j rstd and d rstd / d x_j = -rstd^3 x_j / D,
 *     dx_j = rstd w_j dy_j - x_j rstd^3 mean_k(w_k dy_k x_k)
 *     dw_j += sum over rows of dy_j x_j rstd
 * The row sums are in double and so is the column sum of dw, which goes over a fixed split of the
 * rows (mt_cpu_sum_chunk_rows): one row of double partials per chunk, added in chunk order, so dw
 * comes out the same on any number of threads. A chunk reads each row before it writes dx, so dx
 * may be dy (and y may be x). */
#include <math.h>
#include "cpu_ops.h"

#define PAR_MIN 32768 /* elements below which one thread does all rows */

mt_status mt_cpu_rmsnorm_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, float eps,
                             mt_tensor *y, mt_tensor *rstd) {
    const int64_t d = x->shape[x->ndim - 1], rows = mt_tensor_numel(x) / d;
    const float *xp = x->data, *wp = w->data;
    float *yp = y->data, *rp = rstd ? rstd->data : NULL;
#pragma omp parallel for num_threads(ctx->threads) if (rows * d > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xp + r * d;
        float *yr = yp + r * d;
        double ss = 0.0;
        for (int64_t j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
        const float rs = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        for (int64_t j = 0; j < d; j++) yr[j] = (xr[j] * rs) * wp[j];
        if (rp) rp[r] = rs;
    }
    return MT_OK;
}

/* dx for one row, adding the row's dy * x * rstd into acc (when not NULL) before dx is written. */
static void row_bwd(const float *xr, const float *wp, float rs, const float *dyr, float *dxr,
                    int64_t d, double *acc) {
    double s = 0.0;
    for (int64_t j = 0; j < d; j++) s += (double)wp[j] * dyr[j] * xr[j];
    if (acc)
        for (int64_t j = 0; j < d; j++) acc[j] += (double)dyr[j] * xr[j] * rs;
    const float c = (float)((double)rs * rs * rs * s / (double)d);
    for (int64_t j = 0; j < d; j++) dxr[j] = rs * (wp[j] * dyr[j]) - xr[j] * c;
}

mt_status mt_cpu_rmsnorm_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w,
                             const mt_tensor *rstd, const mt_tensor *dy, mt_tensor *dx,
                             mt_tensor *dw) {
    const int64_t d = x->shape[x->ndim - 1], rows = mt_tensor_numel(x) / d;
    const int64_t per = mt_cpu_sum_chunk_rows(rows, d), chunks = (rows + per - 1) / per;
    const float *xp = x->data, *wp = w->data, *rp = rstd->data, *dyp = dy->data;
    float *dxp = dx->data;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    double *part = NULL;
    if (dw) {
        part = mt_cpu_scratch(ctx, (size_t)(chunks * d) * sizeof(double), "rmsnorm_bwd",
                              "per-chunk partial sums of dw");
        if (!part) {
            mt_arena_rewind(&ctx->scratch, mark);
            return MT_ERR_NOMEM;
        }
    }
#pragma omp parallel for num_threads(ctx->threads) schedule(dynamic) if (rows * d > PAR_MIN)
    for (int64_t ch = 0; ch < chunks; ch++) {
        double *acc = part ? part + ch * d : NULL;
        const int64_t end = (ch + 1) * per < rows ? (ch + 1) * per : rows;
        for (int64_t j = 0; acc && j < d; j++) acc[j] = 0.0;
        for (int64_t r = ch * per; r < end; r++)
            row_bwd(xp + r * d, wp, rp[r], dyp + r * d, dxp + r * d, d, acc);
    }
    if (dw) {
        float *dwp = dw->data;
        for (int64_t ch = 1; ch < chunks; ch++) /* in chunk order */
            for (int64_t j = 0; j < d; j++) part[j] += part[ch * d + j];
        for (int64_t j = 0; j < d; j++) dwp[j] = (float)((double)dwp[j] + part[j]);
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}
