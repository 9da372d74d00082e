/* Reductions on the CPU: sum, mean or max of x viewed as (outer, n, inner) over n.
 *
 * Work is split over (outer row, block of inner columns) pairs; each pair walks n in order with a
 * small block of double accumulators, so memory is read in rows (cache-friendly even when inner is
 * large) and every output is summed in the same order whatever the thread count. */
#include <math.h>
#include "cpu_ops.h"

#define COL_BLOCK 64 /* inner columns per work item: one cache line of accumulators x 8 */

mt_status mt_cpu_reduce(mt_ctx *ctx, mt_reduce_kind kind, const mt_tensor *x, int64_t outer,
                        int64_t n, int64_t inner, mt_tensor *out) {
    const float *xp = x->data;
    float *op = out->data;
    int64_t blocks = (inner + COL_BLOCK - 1) / COL_BLOCK, items = outer * blocks;
#pragma omp parallel for num_threads(ctx->threads) if (outer * n * inner > 32768)
    for (int64_t it = 0; it < items; it++) {
        int64_t o = it / blocks, j0 = (it % blocks) * COL_BLOCK;
        int64_t w = inner - j0 < COL_BLOCK ? inner - j0 : COL_BLOCK;
        const float *base = xp + o * n * inner + j0;
        double acc[COL_BLOCK];
        if (kind == MT_REDUCE_MAX) {
            /* n > 0 here (ops.c rejects an empty max); a NaN wins, as in PyTorch. */
            for (int64_t j = 0; j < w; j++) acc[j] = base[j];
            for (int64_t k = 1; k < n; k++)
                for (int64_t j = 0; j < w; j++) {
                    double v = base[k * inner + j];
                    if (!isnan(acc[j]) && (v > acc[j] || isnan(v))) acc[j] = v;
                }
        } else {
            for (int64_t j = 0; j < w; j++) acc[j] = 0.0;
            for (int64_t k = 0; k < n; k++)
                for (int64_t j = 0; j < w; j++) acc[j] += base[k * inner + j];
            if (kind == MT_REDUCE_MEAN)
                for (int64_t j = 0; j < w; j++) acc[j] /= (double)n; /* n == 0: NaN, as PyTorch */
        }
        for (int64_t j = 0; j < w; j++) op[o * inner + j0 + j] = (float)acc[j];
    }
    return MT_OK;
}

/* ---- per-column sums over a fixed split of the rows (shared with conv, bn) --------------------
 */

#define SUM_CHUNK_ELEMS 65536 /* elements per chunk: enough work per item, few partials */
#define SUM_CHUNK_MIN   16    /* rows per chunk at least, however wide the rows */

int64_t mt_cpu_sum_chunk_rows(int64_t rows, int64_t cols) {
    int64_t r = cols > 0 ? SUM_CHUNK_ELEMS / cols : rows;
    if (r < SUM_CHUNK_MIN) r = SUM_CHUNK_MIN;
    return r < rows ? r : (rows > 0 ? rows : 1);
}

void *mt_cpu_scratch(mt_ctx *ctx, size_t bytes, const char *op, const char *what) {
    void *p = mt_arena_alloc(&ctx->scratch, bytes);
    if (!p) mt_error_wrap(MT_ERR_NOMEM, "%s: %s (%zu bytes): ", op, what, bytes);
    return p;
}

mt_status mt_cpu_column_sums_add(mt_ctx *ctx, const float *x, int64_t rows, int64_t cols,
                                 float *out) {
    int64_t per = mt_cpu_sum_chunk_rows(rows, cols), chunks = (rows + per - 1) / per;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    double *part = mt_cpu_scratch(ctx, (size_t)(chunks * cols) * sizeof(double), "column sums",
                                  "per-chunk partial sums");
    if (!part) return MT_ERR_NOMEM;
#pragma omp parallel for num_threads(ctx->threads) if (rows * cols > 32768)
    for (int64_t ch = 0; ch < chunks; ch++) {
        double *acc = part + ch * cols;
        int64_t i1 = (ch + 1) * per < rows ? (ch + 1) * per : rows;
        for (int64_t j = 0; j < cols; j++) acc[j] = 0.0;
        for (int64_t i = ch * per; i < i1; i++)
            for (int64_t j = 0; j < cols; j++) acc[j] += x[i * cols + j];
    }
    for (int64_t ch = 1; ch < chunks; ch++) /* in chunk order, row by row */
        for (int64_t j = 0; j < cols; j++) part[j] += part[ch * cols + j];
    for (int64_t j = 0; j < cols; j++) out[j] = (float)((double)out[j] + part[j]);
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}
