/* Convolution layer: the weight (K,R,S,C/groups) and optional bias (K) live in the flat
 * parameter buffer; forward and backward are the mt_conv2d_* ops on views of them. */
#include "nn_internal.h"

void mt_nn_conv_out(const mt_nn_conv *l, int64_t h, int64_t w, int64_t *p, int64_t *q) {
    *p = mt_conv2d_out_dim(h, l->r, l->geo.stride_h, l->geo.pad_h, l->geo.dil_h);
    *q = mt_conv2d_out_dim(w, l->s, l->geo.stride_w, l->geo.pad_w, l->geo.dil_w);
}

static mt_tensor weight(const mt_nn_env *e, float *base, const mt_nn_conv *l) {
    int g = l->geo.groups > 0 ? l->geo.groups : 1;
    return mt_tensor_4d(base + l->w, MT_F32, e->ctx->device, l->k, l->r, l->s, l->c / g);
}

mt_status mt_nn_conv_fwd(mt_nn_env *e, const mt_nn_conv *l, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    mt_tensor w = weight(e, e->params, l), b = mt_nn_flat(e, e->params, (size_t)l->b, l->k);
    return mt_conv2d_fwd(e->ctx, &l->geo, x, &w, l->b >= 0 ? &b : NULL, y);
}

mt_status mt_nn_conv_bwd(mt_nn_env *e, const mt_nn_conv *l, const mt_tensor *x, const mt_tensor *dy,
                         mt_tensor *dx) {
    if (e->plan) return MT_OK;
    mt_tensor dw = weight(e, e->grads, l), db = mt_nn_flat(e, e->grads, (size_t)l->b, l->k);
    MT_TRY(mt_conv2d_bwd_filter(e->ctx, &l->geo, x, dy, &dw, l->b >= 0 ? &db : NULL));
    MT_TRY(mt_nn_ready(e, l->w, (size_t)mt_tensor_numel(&dw)));
    if (l->b >= 0) MT_TRY(mt_nn_ready(e, (size_t)l->b, (size_t)l->k));
    if (!dx) return MT_OK;
    mt_tensor w = weight(e, e->params, l);
    return mt_conv2d_bwd_data(e->ctx, &l->geo, dy, &w, dx);
}

/* ---- transposed convolution ---------------------------------------------------------------- */

void mt_nn_convt_out(const mt_nn_convt *l, int64_t h, int64_t w, int64_t *p, int64_t *q) {
    const mt_conv2d_params *g = &l->geo;
    *p = (h - 1) * g->stride_h - 2 * g->pad_h + g->dil_h * (l->r - 1) + 1 + l->out_pad_h;
    *q = (w - 1) * g->stride_w - 2 * g->pad_w + g->dil_w * (l->s - 1) + 1 + l->out_pad_w;
}

static mt_tensor weight_t(const mt_nn_env *e, float *base, const mt_nn_convt *l) {
    int g = l->geo.groups > 0 ? l->geo.groups : 1;
    return mt_tensor_4d(base + l->w, MT_F32, e->ctx->device, l->c, l->r, l->s, l->k / g);
}

mt_status mt_nn_convt_fwd(mt_nn_env *e, const mt_nn_convt *l, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    mt_tensor w = weight_t(e, e->params, l), b = mt_nn_flat(e, e->params, (size_t)l->b, l->k);
    return mt_conv_transpose2d_fwd(e->ctx, &l->geo, l->out_pad_h, l->out_pad_w, x, &w,
                                   l->b >= 0 ? &b : NULL, y);
}

mt_status mt_nn_convt_bwd(mt_nn_env *e, const mt_nn_convt *l, const mt_tensor *x,
                          const mt_tensor *dy, mt_tensor *dx) {
    if (e->plan) return MT_OK;
    mt_tensor dw = weight_t(e, e->grads, l), db = mt_nn_flat(e, e->grads, (size_t)l->b, l->k);
    MT_TRY(mt_conv_transpose2d_bwd_filter(e->ctx, &l->geo, l->out_pad_h, l->out_pad_w, x, dy, &dw,
                                          l->b >= 0 ? &db : NULL));
    if (l->b >= 0)
        MT_TRY(mt_nn_ready(e, (size_t)l->b, (size_t)l->k)); /* the reverse of the table */
    MT_TRY(mt_nn_ready(e, l->w, (size_t)mt_tensor_numel(&dw)));
    if (!dx) return MT_OK;
    mt_tensor w = weight_t(e, e->params, l);
    return mt_conv_transpose2d_bwd_data(e->ctx, &l->geo, l->out_pad_h, l->out_pad_w, dy, &w, dx);
}
