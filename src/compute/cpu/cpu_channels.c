/* Channel concatenation on the CPU: copying a tensor's channels into, or out of, a column range of
 * a wider tensor with the same rows (DenseNet's concatenations and their backward). One memcpy or
 * one short loop per row, rows split across threads. */
#include <string.h>
#include "cpu_ops.h"

#define PAR_MIN 32768 /* elements below which a loop runs on one thread */

mt_status mt_cpu_channels_put(mt_ctx *ctx, const mt_tensor *src, int64_t offset, mt_tensor *dst) {
    const float *sp = src->data;
    float *dp = dst->data;
    const int64_t cs = src->shape[src->ndim - 1], cd = dst->shape[dst->ndim - 1];
    const int64_t rows = mt_tensor_numel(src) / cs;
#pragma omp parallel for num_threads(ctx->threads) if (rows * cs > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        memcpy(dp + r * cd + offset, sp + r * cs, (size_t)cs * sizeof(float));
    return MT_OK;
}

mt_status mt_cpu_channels_get(mt_ctx *ctx, const mt_tensor *src, int64_t offset, float beta,
                              mt_tensor *out) {
    const float *sp = src->data;
    float *op = out->data;
    const int64_t cs = src->shape[src->ndim - 1], co = out->shape[out->ndim - 1];
    const int64_t rows = mt_tensor_numel(out) / co;
#pragma omp parallel for num_threads(ctx->threads) if (rows * co > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *s = sp + r * cs + offset;
        float *o = op + r * co;
        if (beta == 0.0f) /* overwrite: NaN in out does not survive */
            memcpy(o, s, (size_t)co * sizeof(float));
        else if (beta == 1.0f)
            for (int64_t j = 0; j < co; j++) o[j] += s[j];
        else
            for (int64_t j = 0; j < co; j++) o[j] = beta * o[j] + s[j];
    }
    return MT_OK;
}
