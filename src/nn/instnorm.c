/* Instance normalisation, PyTorch's InstanceNorm2d(affine=True, track_running_stats=False): each
 * image's (H*W, C) map is normalised with its own per-channel mean and biased variance, in
 * training and evaluation alike.
 *
 * Built on the batch-norm ops, one image at a time: an image seen as (H*W, C) rows is exactly
 * what BatchNorm normalises over, and its backward with batch statistics over count = H*W rows is
 * InstanceNorm's. gamma and beta are shared by all images, so their gradients add up over images.
 */
#include "nn_internal.h"

typedef struct in_view {
    int64_t n, rows; /* images, H*W */
    int c;
} in_view;

static mt_status check(const mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x,
                       const mt_tensor *stats, const char *op, in_view *v) {
    char d[96], s[96];
    if (x->ndim != 4 || x->shape[3] != l->c)
        return mt_fail(MT_ERR_SHAPE, "instance norm %s: x %s: expected (N,H,W,%d)", op,
                       mt_tensor_describe(x, d, sizeof d), l->c);
    v->n = x->shape[0], v->rows = x->shape[1] * x->shape[2], v->c = l->c;
    if (stats->ndim != 2 || stats->shape[0] != v->n || stats->shape[1] != 2 * (int64_t)l->c ||
        stats->dtype != MT_F32)
        return mt_fail(MT_ERR_SHAPE, "instance norm %s: stats %s: expected [%lld,%d] f32", op,
                       mt_tensor_describe(stats, s, sizeof s), (long long)v->n, 2 * l->c);
    if (e->train && v->rows < 2)
        return mt_fail(MT_ERR_SHAPE,
                       "instance norm: x %s: training needs more than one spatial element",
                       mt_tensor_describe(x, d, sizeof d));
    if (e->small_n < 2 * (size_t)l->c)
        return mt_fail(MT_ERR_INTERNAL, "instance norm %s: scratch of %zu floats for %d channels",
                       op, e->small_n, l->c);
    return MT_OK;
}

/* Image i of x as (H*W, C) rows. */
static mt_tensor image_rows(const mt_tensor *x, const in_view *v, int64_t i) {
    float *p = (float *)x->data + (size_t)(i * v->rows * v->c);
    return mt_tensor_2d(p, MT_F32, x->device, v->rows, v->c);
}

/* Image i's mean and variance: views of row i of stats. */
static void image_stats(const mt_tensor *stats, const in_view *v, int64_t i, mt_tensor *mean,
                        mt_tensor *var) {
    float *p = (float *)stats->data + (size_t)(i * 2 * v->c);
    *mean = mt_tensor_1d(p, MT_F32, stats->device, v->c);
    *var = mt_tensor_1d(p + v->c, MT_F32, stats->device, v->c);
}

static mt_status apply(mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x, const mt_tensor *stats,
                       bool compute_stats, bool relu, mt_tensor *y, const char *op) {
    in_view v;
    MT_TRY(check(e, l, x, stats, op, &v));
    mt_tensor gamma = mt_nn_flat(e, e->params, l->weight, l->c);
    mt_tensor beta = mt_nn_flat(e, e->params, l->bias, l->c);
    for (int64_t i = 0; i < v.n; i++) {
        mt_tensor xi = image_rows(x, &v, i), yi = image_rows(y, &v, i), mean, var;
        image_stats(stats, &v, i, &mean, &var);
        if (compute_stats) MT_TRY(mt_bn_stats(e->ctx, &xi, &mean, &var));
        MT_TRY(mt_bn_fwd(e->ctx, &xi, &mean, &var, e->bn_eps, &gamma, &beta, &yi));
    }
    if (!relu) return MT_OK;
    return mt_act_fwd(e->ctx, MT_ACT_RELU, y, y);
}

mt_status mt_nn_in_fwd(mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x, mt_tensor *stats,
                       mt_tensor *y) {
    if (e->plan) return MT_OK;
    return apply(e, l, x, stats, true, false, y, "forward");
}

mt_status mt_nn_in_apply(mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x,
                         const mt_tensor *stats, bool relu, mt_tensor *y) {
    if (e->plan) return MT_OK;
    return apply(e, l, x, stats, false, relu, y, "recompute");
}

mt_status mt_nn_in_bwd(mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x, const mt_tensor *stats,
                       const mt_tensor *dy, mt_tensor *dx) {
    if (e->plan) return MT_OK;
    in_view v;
    MT_TRY(check(e, l, x, stats, "backward", &v));
    int c = l->c;
    mt_tensor gamma = mt_nn_flat(e, e->params, l->weight, c);
    mt_tensor dgamma = mt_nn_flat(e, e->grads, l->weight, c);
    mt_tensor dbeta = mt_nn_flat(e, e->grads, l->bias, c);
    mt_tensor sum_dy = mt_nn_flat(e, e->small, 0, c);
    mt_tensor sum_dy_xhat = mt_nn_flat(e, e->small, (size_t)c, c);
    for (int64_t i = 0; i < v.n; i++) {
        mt_tensor xi = image_rows(x, &v, i), dyi = image_rows(dy, &v, i);
        mt_tensor dxi = image_rows(dx, &v, i), mean, var;
        image_stats(stats, &v, i, &mean, &var);
        MT_TRY(mt_bn_bwd_reduce(e->ctx, &xi, &dyi, &mean, &var, e->bn_eps, &sum_dy, &sum_dy_xhat));
        MT_TRY(mt_axpy(e->ctx, 1.0f, &sum_dy_xhat, &dgamma));
        MT_TRY(mt_axpy(e->ctx, 1.0f, &sum_dy, &dbeta));
        MT_TRY(mt_bn_bwd(e->ctx, &xi, &dyi, &mean, &var, e->bn_eps, &gamma, &sum_dy, &sum_dy_xhat,
                         (double)v.rows, true, &dxi));
    }
    MT_TRY(mt_nn_ready(e, l->bias, (size_t)c));
    return mt_nn_ready(e, l->weight, (size_t)c);
}
