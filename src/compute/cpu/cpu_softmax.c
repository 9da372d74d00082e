/* Softmax and log-softmax over the last dim, forward and backward, on the CPU.
 *
 * Forward subtracts the row max before exponentiating (no overflow for any finite logits) and sums
 * in double. Backward, from the forward output y and the incoming gradient dy:
 *     softmax:      dx = y * (dy - sum(dy * y))
 *     log-softmax:  dx = dy - exp(y) * sum(dy)
 * Rows are independent, so OpenMP splits over rows and results do not depend on the thread count.
 * Each element is read before it is written, so dx may be dy or y and y may be x. */
#include <math.h>
#include "cpu_ops.h"

#define PAR_MIN 16384 /* elements; below this one thread does all rows */

mt_status mt_cpu_softmax_fwd(mt_ctx *ctx, bool log_softmax, const mt_tensor *x, mt_tensor *y) {
    int64_t c = x->shape[x->ndim - 1], rows = mt_tensor_numel(x) / c;
    const float *xp = x->data;
    float *yp = y->data;
#pragma omp parallel for num_threads(ctx->threads) if (rows * c > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xp + r * c;
        float *yr = yp + r * c;
        float mx = xr[0];
        for (int64_t j = 1; j < c; j++) mx = xr[j] > mx ? xr[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < c; j++) sum += exp((double)xr[j] - mx);
        if (log_softmax) {
            double lse = mx + log(sum);
            for (int64_t j = 0; j < c; j++) yr[j] = (float)(xr[j] - lse);
        } else {
            double inv = 1.0 / sum;
            for (int64_t j = 0; j < c; j++) yr[j] = (float)(exp((double)xr[j] - mx) * inv);
        }
    }
    return MT_OK;
}

mt_status mt_cpu_softmax_bwd(mt_ctx *ctx, bool log_softmax, const mt_tensor *y, const mt_tensor *dy,
                             mt_tensor *dx) {
    int64_t c = y->shape[y->ndim - 1], rows = mt_tensor_numel(y) / c;
    const float *yp = y->data, *dyp = dy->data;
    float *dxp = dx->data;
#pragma omp parallel for num_threads(ctx->threads) if (rows * c > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = yp + r * c, *dyr = dyp + r * c;
        float *dxr = dxp + r * c;
        double s = 0.0;
        if (log_softmax) {
            for (int64_t j = 0; j < c; j++) s += dyr[j];
            for (int64_t j = 0; j < c; j++) dxr[j] = (float)(dyr[j] - exp((double)yr[j]) * s);
        } else {
            for (int64_t j = 0; j < c; j++) s += (double)dyr[j] * yr[j];
            for (int64_t j = 0; j < c; j++) dxr[j] = (float)(yr[j] * (dyr[j] - s));
        }
    }
    return MT_OK;
}
