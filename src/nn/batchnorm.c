/* Batch normalisation, PyTorch's BatchNorm2d over NHWC maps seen as (rows, C), with SyncBN.
 *
 * Training uses the batch mean and biased variance, keeps them (env->stats) for backward and moves
 * the running statistics as PyTorch does: running = (1-m) running + m batch, the variance with
 * Bessel's factor count/(count-1), num_batches_tracked += 1.
 *
 * SyncBN (env->sync set) combines the ranks' moments before normalising, in two sums (the
 * mean, then the squared deviations from it: sync_moments) so that the variance is as exact as
 * one rank's; one sum of E[x^2] - E[x]^2 would lose digits wherever |mean| >> std. In backward the
 * gradients of gamma and beta are this rank's sums (the gradient all-reduce adds the ranks' shares
 * later), while dx uses the sums over all ranks and the global row count, as
 * torch.nn.SyncBatchNorm. */
#include <math.h>
#include "nn_internal.h"

static mt_tensor vec(const mt_nn_env *e, float *base, size_t off, int c) {
    return mt_nn_flat(e, base, off, c);
}

static mt_tensor host_vec(float *p, int c) {
    return mt_tensor_1d(p, MT_F32, MT_CPU, c);
}

static mt_status check(const mt_nn_env *e, const mt_nn_bn *l, const mt_tensor *x, const char *op) {
    if (nn_channels(x) != l->c) {
        char d[96];
        return mt_fail(MT_ERR_SHAPE, "batch norm %s: x %s: expected %d channels", op,
                       mt_tensor_describe(x, d, sizeof d), l->c);
    }
    if (e->small_n < 4 * (size_t)l->c + 2)
        return mt_fail(MT_ERR_INTERNAL, "batch norm %s: scratch of %zu floats for %d channels", op,
                       e->small_n, l->c);
    return MT_OK;
}

/* Batch statistics (training, BN not frozen), or the running ones. */
static bool batch_stats(const mt_nn_env *e) {
    return e->train && !e->bn_frozen;
}

/* The mean and variance a forward normalised with: the batch's (train) or the running ones. */
static void used_stats(const mt_nn_env *e, const mt_nn_bn *l, mt_tensor *mean, mt_tensor *var) {
    if (batch_stats(e)) {
        *mean = vec(e, e->stats, l->stats, l->c);
        *var = vec(e, e->stats, l->stats + (size_t)l->c, l->c);
    } else {
        *mean = vec(e, e->buffers, l->running_mean, l->c);
        *var = vec(e, e->buffers, l->running_var, l->c);
    }
}

/* mean, var (device) from this rank's rows -> over all ranks; *count becomes the global rows.
 * Two sums: n and n*mean give the global mean mu; then n*(var + (mean - mu)^2) adds up the
 * squared deviations from mu, all positive, so nothing cancels. */
static mt_status sync_moments(mt_nn_env *e, const mt_nn_bn *l, mt_tensor *mean, mt_tensor *var,
                              double *count) {
    int c = l->c;
    /* host: local mean (c) | local var (c) | n, then n*mean -> mu (1 + c) */
    float *hm = e->host, *hv = hm + c, *sums = hv + c, *mu = sums + 1;
    mt_tensor thm = host_vec(hm, c), thv = host_vec(hv, c), tmu = host_vec(mu, c);
    MT_TRY(mt_tensor_copy(e->ctx, &thm, mean));
    MT_TRY(mt_tensor_copy(e->ctx, &thv, var));
    MT_TRY(mt_ctx_sync(e->ctx));
    double n = *count;
    sums[0] = (float)n;
    for (int i = 0; i < c; i++) mu[i] = (float)(n * hm[i]);
    MT_TRY(e->sync(e->sync_user, sums, 1 + (size_t)c));
    double total = sums[0];
    if (!(total > 0)) return mt_fail(MT_ERR_COMM, "SyncBN: the ranks' row counts sum to %g", total);
    for (int i = 0; i < c; i++) {
        mu[i] = (float)(mu[i] / total);
        double d = (double)hm[i] - mu[i];
        hv[i] = (float)(n * (hv[i] + d * d));
    }
    MT_TRY(e->sync(e->sync_user, hv, (size_t)c));
    for (int i = 0; i < c; i++) hv[i] = (float)(hv[i] / total);
    MT_TRY(mt_tensor_copy(e->ctx, mean, &tmu));
    MT_TRY(mt_tensor_copy(e->ctx, var, &thv));
    *count = total;
    return MT_OK;
}

/* running = (1-m) running + m batch (variance unbiased); num_batches_tracked += 1. */
static mt_status update_running(mt_nn_env *e, const mt_nn_bn *l, const mt_tensor *mean,
                                const mt_tensor *var, double count) {
    float m = e->bn_momentum;
    mt_tensor rm = vec(e, e->buffers, l->running_mean, l->c);
    mt_tensor rv = vec(e, e->buffers, l->running_var, l->c);
    mt_tensor nb = vec(e, e->buffers, l->num_batches, 1);
    mt_tensor one = mt_tensor_1d((float *)e->one, MT_F32, e->ctx->device, 1);
    MT_TRY(mt_scale(e->ctx, 1.0f - m, &rm));
    MT_TRY(mt_axpy(e->ctx, m, mean, &rm));
    MT_TRY(mt_scale(e->ctx, 1.0f - m, &rv));
    MT_TRY(mt_axpy(e->ctx, (float)(m * count / (count - 1.0)), var, &rv));
    return mt_axpy(e->ctx, 1.0f, &one, &nb);
}

mt_status mt_nn_bn_fwd(mt_nn_env *e, mt_nn_bn *l, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    MT_TRY(check(e, l, x, "forward"));
    mt_tensor x2 = nn_rows(x, l->c), y2 = nn_rows(y, l->c), mean, var;
    mt_tensor gamma = vec(e, e->params, l->weight, l->c), beta = vec(e, e->params, l->bias, l->c);
    used_stats(e, l, &mean, &var);
    if (batch_stats(e)) {
        double count = (double)x2.shape[0];
        MT_TRY(mt_bn_stats(e->ctx, &x2, &mean, &var));
        if (e->sync) MT_TRY(sync_moments(e, l, &mean, &var, &count));
        if (count < 2) {
            char d[96];
            return mt_fail(MT_ERR_SHAPE,
                           "batch norm: x %s: training needs more than one value per channel "
                           "(batch statistics over %g rows)",
                           mt_tensor_describe(x, d, sizeof d), count);
        }
        l->count = count;
        MT_TRY(update_running(e, l, &mean, &var, count));
    }
    return mt_bn_fwd(e->ctx, &x2, &mean, &var, e->bn_eps, &gamma, &beta, &y2);
}

mt_status mt_nn_bn_apply(mt_nn_env *e, const mt_nn_bn *l, const mt_tensor *x, bool relu,
                         mt_tensor *y) {
    if (e->plan) return MT_OK;
    MT_TRY(check(e, l, x, "recompute"));
    mt_tensor x2 = nn_rows(x, l->c), y2 = nn_rows(y, l->c), mean, var;
    mt_tensor gamma = vec(e, e->params, l->weight, l->c), beta = vec(e, e->params, l->bias, l->c);
    used_stats(e, l, &mean, &var);
    MT_TRY(mt_bn_fwd(e->ctx, &x2, &mean, &var, e->bn_eps, &gamma, &beta, &y2));
    return relu ? mt_act_fwd(e->ctx, MT_ACT_RELU, &y2, &y2) : MT_OK;
}

/* Sums over all ranks of sum_dy and sum_dy_xhat (2C, device) through host memory. */
static mt_status sync_sums(mt_nn_env *e, int c, mt_tensor *sums2c) {
    mt_tensor h = host_vec(e->host, 2 * c);
    MT_TRY(mt_tensor_copy(e->ctx, &h, sums2c));
    MT_TRY(mt_ctx_sync(e->ctx));
    MT_TRY(e->sync(e->sync_user, e->host, 2 * (size_t)c));
    return mt_tensor_copy(e->ctx, sums2c, &h);
}

mt_status mt_nn_bn_bwd(mt_nn_env *e, const mt_nn_bn *l, const mt_tensor *x, const mt_tensor *dy,
                       mt_tensor *dx) {
    if (e->plan) return MT_OK;
    MT_TRY(check(e, l, x, "backward"));
    int c = l->c;
    mt_tensor x2 = nn_rows(x, c), dy2 = nn_rows(dy, c), dx2 = nn_rows(dx, c), mean, var;
    used_stats(e, l, &mean, &var);
    mt_tensor sums = mt_tensor_1d(e->small, MT_F32, e->ctx->device, 2 * c);
    mt_tensor sum_dy = vec(e, e->small, 0, c), sum_dy_xhat = vec(e, e->small, (size_t)c, c);
    MT_TRY(mt_bn_bwd_reduce(e->ctx, &x2, &dy2, &mean, &var, e->bn_eps, &sum_dy, &sum_dy_xhat));
    mt_tensor dgamma = vec(e, e->grads, l->weight, c), dbeta = vec(e, e->grads, l->bias, c);
    MT_TRY(mt_axpy(e->ctx, 1.0f, &sum_dy_xhat, &dgamma));
    MT_TRY(mt_axpy(e->ctx, 1.0f, &sum_dy, &dbeta));
    MT_TRY(mt_nn_ready(e, l->bias, (size_t)c)); /* the reverse of the table */
    MT_TRY(mt_nn_ready(e, l->weight, (size_t)c));
    if (batch_stats(e) && e->sync) MT_TRY(sync_sums(e, c, &sums));
    mt_tensor gamma = vec(e, e->params, l->weight, c);
    return mt_bn_bwd(e->ctx, &x2, &dy2, &mean, &var, e->bn_eps, &gamma, &sum_dy, &sum_dy_xhat,
                     batch_stats(e) ? l->count : (double)x2.shape[0], batch_stats(e), &dx2);
}
