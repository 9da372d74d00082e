/* Embedding lookup on the CPU: out[i] = table[ids[i]], and its backward dtable[ids[i]] += dout[i].
 *
 * Ids are checked before anything is written, so a bad id leaves the outputs untouched. The
 * backward is deterministic without atomics: threads split the D columns, and each walks all ids in
 * order, so repeated ids add up in the same order as a serial loop whatever the thread count. */
#include <inttypes.h>
#include <string.h>
#include "cpu_ops.h"

#define PAR_MIN   16384 /* elements of out/dout; below this one thread does everything */
#define COL_BLOCK 64    /* columns per backward work item */

static mt_status check_ids(const char *op, const int32_t *ids, int64_t n, int64_t v) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= v)
            return mt_fail(MT_ERR_ARG,
                           "%s: ids[%" PRId64 "] = %d is outside the table's [0,%" PRId64 ")", op,
                           i, (int)ids[i], v);
    return MT_OK;
}

mt_status mt_cpu_embedding_fwd(mt_ctx *ctx, const mt_tensor *table, const mt_tensor *ids,
                               mt_tensor *out) {
    int64_t v = table->shape[0], d = table->shape[1], n = mt_tensor_numel(ids);
    const int32_t *id = ids->data;
    const float *tp = table->data;
    float *op = out->data;
    MT_TRY(check_ids("embedding_fwd", id, n, v));
#pragma omp parallel for num_threads(ctx->threads) if (n * d > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        memcpy(op + i * d, tp + (int64_t)id[i] * d, (size_t)d * sizeof(float));
    return MT_OK;
}

mt_status mt_cpu_embedding_bwd(mt_ctx *ctx, const mt_tensor *ids, const mt_tensor *dout,
                               mt_tensor *dtable) {
    int64_t v = dtable->shape[0], d = dtable->shape[1], n = mt_tensor_numel(ids);
    const int32_t *id = ids->data;
    const float *gp = dout->data;
    float *tp = dtable->data;
    MT_TRY(check_ids("embedding_bwd", id, n, v));
    int64_t blocks = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for num_threads(ctx->threads) if (n * d > PAR_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
        for (int64_t i = 0; i < n; i++) {
            float *row = tp + (int64_t)id[i] * d;
            const float *g = gp + i * d;
            for (int64_t j = j0; j < j1; j++) row[j] += g[j];
        }
    }
    return MT_OK;
}
