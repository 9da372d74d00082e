/* The environment helpers and the stateless layers: activation, dropout, channel concatenation,
 * residual sums. Each is a thin call of its op that also honours env->plan (see nn.h). */
#include "nn_internal.h"

mt_tensor mt_nn_flat(const mt_nn_env *e, float *base, size_t off, int64_t n) {
    /* In plan mode the buffers may not exist yet; the view is never dereferenced then. */
    return mt_tensor_1d(base ? base + off : NULL, MT_F32, e->ctx->device, n);
}

mt_status mt_nn_ready(mt_nn_env *e, size_t off, size_t n) {
    if (e->plan || !e->ready) return MT_OK;
    return e->ready(e->ready_user, off, n);
}

mt_status mt_nn_relu_fwd(mt_nn_env *e, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    return mt_act_fwd(e->ctx, MT_ACT_RELU, x, y);
}

mt_status mt_nn_relu_bwd(mt_nn_env *e, const mt_tensor *y, const mt_tensor *dy, mt_tensor *dx) {
    if (e->plan) return MT_OK;
    /* relu'(x) = [x > 0] = [y > 0]: the op's "forward input" may be the output. */
    return mt_act_bwd(e->ctx, MT_ACT_RELU, y, dy, dx);
}

mt_status mt_nn_dropout_fwd(mt_nn_env *e, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                            const mt_tensor *x, mt_tensor *y, mt_tensor *mask) {
    if (e->plan) return MT_OK;
    if (!e->train || p <= 0) return mt_tensor_copy(e->ctx, y, x);
    return mt_dropout_fwd(e->ctx, p, seed, stream, offset, x, y, mask);
}

mt_status mt_nn_dropout_bwd(mt_nn_env *e, float p, const mt_tensor *mask, const mt_tensor *dy,
                            mt_tensor *dx) {
    if (e->plan) return MT_OK;
    if (!e->train || p <= 0) return mt_tensor_copy(e->ctx, dx, dy);
    return mt_dropout_bwd(e->ctx, p, mask, dy, dx);
}

mt_status mt_nn_concat_put(mt_nn_env *e, const mt_tensor *src, int64_t off, mt_tensor *dst) {
    if (e->plan) return MT_OK;
    mt_tensor s = nn_rows(src, nn_channels(src)), d = nn_rows(dst, nn_channels(dst));
    return mt_channels_put(e->ctx, &s, off, &d);
}

mt_status mt_nn_concat_get(mt_nn_env *e, const mt_tensor *src, int64_t off, float beta,
                           mt_tensor *out) {
    if (e->plan) return MT_OK;
    mt_tensor s = nn_rows(src, nn_channels(src)), o = nn_rows(out, nn_channels(out));
    return mt_channels_get(e->ctx, &s, off, beta, &o);
}

mt_status mt_nn_add(mt_nn_env *e, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    return mt_axpy(e->ctx, 1.0f, x, y);
}

mt_status mt_nn_copy(mt_nn_env *e, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    return mt_tensor_copy(e->ctx, y, x);
}

mt_status mt_nn_upsample_fwd(mt_nn_env *e, mt_upsample_mode mode, bool align_corners,
                             const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    return mt_upsample2d_fwd(e->ctx, mode, align_corners, x, y);
}

mt_status mt_nn_upsample_bwd(mt_nn_env *e, mt_upsample_mode mode, bool align_corners,
                             const mt_tensor *dy, mt_tensor *dx) {
    if (e->plan) return MT_OK;
    return mt_upsample2d_bwd(e->ctx, mode, align_corners, dy, dx);
}
