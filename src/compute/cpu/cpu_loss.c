/* Losses on the CPU: cross-entropy over classes and binary cross-entropy with logits.
 *
 * Both average over the entries that count (rows whose target is not ignore_index; targets that are
 * not NaN) and write the mean into the one-element loss tensor; with nothing to count the loss is 0
 * and so are the gradients. Per-row (or per-chunk) partial sums go to double accumulators in the
 * context's scratch arena and are added in a fixed order, so the loss does not depend on the thread
 * count. Formulas are the numerically stable ones: log-sum-exp after subtracting the row max, and
 * for BCE with pos_weight pw (PyTorch's BCEWithLogitsLoss):
 *     l  = (1-y) x + (1 + (pw-1) y) (log1p(exp(-|x|)) + max(-x, 0))
 *     dl = (1-y) - (1 + (pw-1) y) sigmoid(-x)                                                   */
#include <inttypes.h>
#include <math.h>
#include "cpu_ops.h"

#define PAR_MIN 16384 /* elements; below this one thread does everything */

/* ---- cross-entropy --------------------------------------------------------------------------- */

/* Checks every target and counts the rows that are not ignored. Runs before anything is written, so
 * a bad target leaves the outputs untouched. */
static mt_status ce_count(const char *op, const int32_t *t, int64_t rows, int64_t c,
                          int ignore_index, int64_t *count) {
    int64_t n = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (t[r] == ignore_index) continue;
        if (t[r] < 0 || t[r] >= c)
            return mt_fail(MT_ERR_ARG,
                           "%s: row %" PRId64 ": target %d is outside [0,%" PRId64
                           ") and is not ignore_index (%d)",
                           op, r, (int)t[r], c, ignore_index);
        n++;
    }
    *count = n;
    return MT_OK;
}

/* max and sum(exp(x - max)) of one row */
static void row_lse_parts(const float *x, int64_t c, float *mx, double *sum) {
    float m = x[0];
    for (int64_t j = 1; j < c; j++) m = x[j] > m ? x[j] : m;
    double s = 0.0;
    for (int64_t j = 0; j < c; j++) s += exp((double)x[j] - m);
    *mx = m;
    *sum = s;
}

mt_status mt_cpu_cross_entropy_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                   int ignore_index, mt_tensor *loss) {
    int64_t c = logits->shape[logits->ndim - 1], rows = mt_tensor_numel(logits) / c, count = 0;
    const float *x = logits->data;
    const int32_t *t = targets->data;
    MT_TRY(ce_count("cross_entropy_fwd", t, rows, c, ignore_index, &count));
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    double *row_loss = mt_arena_alloc(&ctx->scratch, (size_t)rows * sizeof(double));
    if (!row_loss) return mt_error_wrap(MT_ERR_NOMEM, "cross_entropy_fwd: ");
#pragma omp parallel for num_threads(ctx->threads) if (rows * c > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        if (t[r] == ignore_index) {
            row_loss[r] = 0.0;
            continue;
        }
        float mx;
        double sum;
        row_lse_parts(xr, c, &mx, &sum);
        row_loss[r] = mx + log(sum) - xr[t[r]];
    }
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) total += row_loss[r];
    *(float *)loss->data = count ? (float)(total / (double)count) : 0.0f;
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_cross_entropy_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                   int ignore_index, float dloss, mt_tensor *dlogits) {
    int64_t c = logits->shape[logits->ndim - 1], rows = mt_tensor_numel(logits) / c, count = 0;
    const float *x = logits->data;
    const int32_t *t = targets->data;
    float *dx = dlogits->data;
    MT_TRY(ce_count("cross_entropy_bwd", t, rows, c, ignore_index, &count));
    double scale = count ? (double)dloss / (double)count : 0.0;
#pragma omp parallel for num_threads(ctx->threads) if (rows * c > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *dr = dx + r * c;
        if (t[r] == ignore_index) {
            for (int64_t j = 0; j < c; j++) dr[j] = 0.0f;
            continue;
        }
        float mx;
        double sum;
        row_lse_parts(xr, c, &mx, &sum);
        double inv = 1.0 / sum;
        /* x[j] is read before dr[j] is written: dlogits may be logits. */
        for (int64_t j = 0; j < c; j++)
            dr[j] = (float)((exp((double)xr[j] - mx) * inv - (j == t[r])) * scale);
    }
    return MT_OK;
}

/* ---- binary cross-entropy with logits -------------------------------------------------------- */

#define BCE_CHUNK 4096 /* elements per partial sum; fixed, so the sum order is too */

static inline double bce_term(double x, double y, double pw) {
    return (1.0 - y) * x + (1.0 + (pw - 1.0) * y) * (log1p(exp(-fabs(x))) + fmax(-x, 0.0));
}

static inline double sigmoid_neg(double x) { /* sigmoid(-x) without overflow */
    if (x >= 0) {
        double e = exp(-x);
        return e / (1.0 + e);
    }
    return 1.0 / (1.0 + exp(x));
}

mt_status mt_cpu_bce_logits_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                const mt_tensor *pos_weight, mt_tensor *loss) {
    int64_t n = mt_tensor_numel(logits), l = logits->shape[logits->ndim - 1];
    int64_t chunks = (n + BCE_CHUNK - 1) / BCE_CHUNK;
    const float *x = logits->data, *y = targets->data;
    const float *pw = pos_weight ? pos_weight->data : NULL;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    double *part = mt_arena_alloc(&ctx->scratch, (size_t)chunks * sizeof(double));
    int64_t *known = mt_arena_alloc(&ctx->scratch, (size_t)chunks * sizeof(int64_t));
    if (!part || !known) {
        mt_arena_rewind(&ctx->scratch, mark);
        return mt_error_wrap(MT_ERR_NOMEM, "bce_logits_fwd: ");
    }
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t k = 0; k < chunks; k++) {
        int64_t end = (k + 1) * BCE_CHUNK < n ? (k + 1) * BCE_CHUNK : n, cnt = 0;
        double s = 0.0;
        for (int64_t i = k * BCE_CHUNK; i < end; i++) {
            if (isnan(y[i])) continue; /* unknown label: no loss, no count */
            s += bce_term(x[i], y[i], pw ? pw[i % l] : 1.0);
            cnt++;
        }
        part[k] = s;
        known[k] = cnt;
    }
    double total = 0.0;
    int64_t count = 0;
    for (int64_t k = 0; k < chunks; k++) total += part[k], count += known[k];
    *(float *)loss->data = count ? (float)(total / (double)count) : 0.0f;
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

mt_status mt_cpu_bce_logits_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                const mt_tensor *pos_weight, float dloss, mt_tensor *dlogits) {
    int64_t n = mt_tensor_numel(logits), l = logits->shape[logits->ndim - 1], count = 0;
    const float *x = logits->data, *y = targets->data;
    const float *pw = pos_weight ? pos_weight->data : NULL;
    float *dx = dlogits->data;
    /* An integer sum: exact, so its reduction order does not matter. */
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN) reduction(+ : count)
    for (int64_t i = 0; i < n; i++) count += !isnan(y[i]);
    double scale = count ? (double)dloss / (double)count : 0.0;
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        double yi = y[i], xi = x[i], w = pw ? pw[i % l] : 1.0;
        dx[i] = isnan(yi)
                    ? 0.0f
                    : (float)(scale * ((1.0 - yi) - (1.0 + (w - 1.0) * yi) * sigmoid_neg(xi)));
    }
    return MT_OK;
}
