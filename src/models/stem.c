/* The stem of ResNet and DenseNet: conv 7x7 stride 2 pad 3 -> BN -> ReLU -> maxpool 3x3 stride 2
 * pad 1, taking (N,H,W,Cin) to (N,H/4,W/4,64).
 *
 * Kept for backward: a copy of the input (the conv's filter gradient needs it; the caller's
 * buffer may be reused by then), the conv output c0 (BN's input) and the pool's argmax. The
 * ReLU output is not kept: the pool output p is positive exactly where the winning ReLU output
 * was, so dp masked by p > 0 and routed through argmax is the gradient of the BN output. */
#include "model_internal.h"

static const mt_pool2d_params stem_pool = {
    .kh = 3, .kw = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1};

static int64_t pool_out(int64_t in) {
    return mt_pool2d_out_dim(in, stem_pool.kh, stem_pool.stride_h, stem_pool.pad_h, false);
}

void mdl_stem_build(mdl_builder *b, mdl_stem *s, const char *conv_name, const char *bn_name,
                    int in_channels, mdl_init init) {
    s->conv = mdl_conv(b, conv_name, in_channels, 64, 7, 2, 3, init);
    s->bn = mdl_bn(b, bn_name, 64);
}

mt_status mdl_stem_fwd(mdl_run *r, mdl_stem *s, const mt_tensor *x, mt_tensor *p) {
    mt_nn_env *e = &r->e;
    int64_t n = x->shape[0], h, w;
    MT_TRY(mdl_alloc(r, &s->x, MT_F32, n, x->shape[1], x->shape[2], x->shape[3]));
    MT_TRY(mt_nn_copy(e, x, &s->x));
    mt_nn_conv_out(&s->conv, x->shape[1], x->shape[2], &h, &w);
    if (h < 1 || w < 1 || pool_out(h) < 1 || pool_out(w) < 1)
        return mt_fail(MT_ERR_SHAPE, "input of %lldx%lld is too small for the stem",
                       (long long)x->shape[1], (long long)x->shape[2]);
    MT_TRY(mdl_alloc(r, &s->c0, MT_F32, n, h, w, 64));
    MT_TRY(mt_nn_conv_fwd(e, &s->conv, &s->x, &s->c0));
    mt_tensor a0 = s->c0; /* eval: BN and ReLU in place */
    if (e->train) {
        MT_TRY(mdl_alloc_like(r, &a0, &s->c0));
    } else {
        mdl_release(r, &s->x);
    }
    MT_TRY(mt_nn_bn_fwd(e, &s->bn, &s->c0, &a0));
    MT_TRY(mt_nn_relu_fwd(e, &a0, &a0));
    MT_TRY(mdl_alloc(r, p, MT_F32, n, pool_out(h), pool_out(w), 64));
    MT_TRY(mdl_alloc(r, &s->argmax, MT_I32, n, pool_out(h), pool_out(w), 64));
    MT_TRY(mt_nn_maxpool_fwd(e, &stem_pool, &a0, p, &s->argmax));
    if (e->train) {
        mdl_release(r, &a0);
    } else {
        mdl_release(r, &s->argmax);
        mdl_release(r, &s->c0);
    }
    return MT_OK;
}

mt_status mdl_stem_bwd(mdl_run *r, mdl_stem *s, mt_tensor *p, mt_tensor *dp) {
    mt_nn_env *e = &r->e;
    mt_tensor da0;
    MT_TRY(mt_nn_relu_bwd(e, p, dp, dp));
    mdl_release(r, p);
    MT_TRY(mdl_alloc_like(r, &da0, &s->c0));
    MT_TRY(mt_nn_maxpool_bwd(e, &stem_pool, &s->argmax, dp, &da0));
    mdl_release(r, &s->argmax);
    mdl_release(r, dp);
    MT_TRY(mt_nn_bn_bwd(e, &s->bn, &s->c0, &da0, &da0));
    mdl_release(r, &s->c0);
    MT_TRY(mt_nn_conv_bwd(e, &s->conv, &s->x, &da0, NULL));
    mdl_release(r, &da0);
    mdl_release(r, &s->x);
    return MT_OK;
}
