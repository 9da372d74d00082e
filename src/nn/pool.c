/* Pooling layers: max and average pooling (PyTorch's MaxPool2d/AvgPool2d) and global average
 * pooling, the head of ResNet and DenseNet (adaptive_avg_pool2d to 1x1, then flatten). */
#include "nn_internal.h"

mt_status mt_nn_maxpool_fwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *x,
                            mt_tensor *y, mt_tensor *argmax) {
    if (e->plan) return MT_OK;
    return mt_maxpool2d_fwd(e->ctx, p, x, y, argmax);
}

mt_status mt_nn_maxpool_bwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *argmax,
                            const mt_tensor *dy, mt_tensor *dx) {
    if (e->plan) return MT_OK;
    return mt_maxpool2d_bwd(e->ctx, p, argmax, dy, dx);
}

mt_status mt_nn_avgpool_fwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *x,
                            mt_tensor *y) {
    if (e->plan) return MT_OK;
    return mt_avgpool2d_fwd(e->ctx, p, x, y);
}

mt_status mt_nn_avgpool_bwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *dy,
                            mt_tensor *dx) {
    if (e->plan) return MT_OK;
    return mt_avgpool2d_bwd(e->ctx, p, dy, dx);
}

/* The whole map is one window: (N,H,W,C) -> (N,1,1,C), seen as (N,C). */
static mt_pool2d_params gap_params(const mt_tensor *x) {
    int h = (int)x->shape[1], w = (int)x->shape[2];
    return (mt_pool2d_params){
        .kh = h, .kw = w, .stride_h = h, .stride_w = w, .count_include_pad = true};
}

static mt_status gap_check(const mt_tensor *x, const mt_tensor *y) {
    if (x->ndim != 4 || y->ndim != 2 || y->shape[0] != x->shape[0] || y->shape[1] != x->shape[3]) {
        char a[96], b[96];
        return mt_fail(MT_ERR_SHAPE,
                       "global average pool: x %s and y %s: expected (N,H,W,C), (N,C)",
                       mt_tensor_describe(x, a, sizeof a), mt_tensor_describe(y, b, sizeof b));
    }
    return MT_OK;
}

mt_status mt_nn_gap_fwd(mt_nn_env *e, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    MT_TRY(gap_check(x, y));
    mt_pool2d_params p = gap_params(x);
    mt_tensor y4 = mt_tensor_4d(y->data, y->dtype, y->device, y->shape[0], 1, 1, y->shape[1]);
    return mt_avgpool2d_fwd(e->ctx, &p, x, &y4);
}

mt_status mt_nn_gap_bwd(mt_nn_env *e, const mt_tensor *dy, mt_tensor *dx) {
    if (e->plan) return MT_OK;
    MT_TRY(gap_check(dx, dy));
    mt_pool2d_params p = gap_params(dx);
    mt_tensor dy4 = mt_tensor_4d(dy->data, dy->dtype, dy->device, dy->shape[0], 1, 1, dy->shape[1]);
    return mt_avgpool2d_bwd(e->ctx, &p, &dy4, dx);
}
