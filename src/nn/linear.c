/* Linear layer, PyTorch's nn.Linear: y (N,out) = x (N,in) W^T + b with W (out,in). The bias
 * gradient is a column sum of dy (mt_reduce) added into the flat gradient buffer. */
#include "nn_internal.h"

mt_status mt_nn_linear_fwd(mt_nn_env *e, const mt_nn_linear *l, const mt_tensor *x, mt_tensor *y) {
    if (e->plan) return MT_OK;
    mt_tensor w = mt_tensor_2d(e->params + l->w, MT_F32, e->ctx->device, l->out, l->in);
    MT_TRY(mt_gemm(e->ctx, false, true, 1.0f, x, &w, 0.0f, y)); /* (N,in) x (out,in)^T */
    if (l->b < 0) return MT_OK;
    mt_tensor b = mt_nn_flat(e, e->params, (size_t)l->b, l->out);
    return mt_add(e->ctx, y, &b, y);
}

mt_status mt_nn_linear_bwd(mt_nn_env *e, const mt_nn_linear *l, const mt_tensor *x,
                           const mt_tensor *dy, mt_tensor *dx) {
    if (e->plan) return MT_OK;
    mt_device dev = e->ctx->device;
    mt_tensor dw = mt_tensor_2d(e->grads + l->w, MT_F32, dev, l->out, l->in);
    MT_TRY(mt_gemm(e->ctx, true, false, 1.0f, dy, x, 1.0f, &dw)); /* (N,out)^T x (N,in) */
    MT_TRY(mt_nn_ready(e, l->w, (size_t)l->out * (size_t)l->in));
    if (l->b >= 0) {
        if (e->small_n < (size_t)l->out)
            return mt_fail(MT_ERR_INTERNAL, "linear backward: scratch of %zu floats < %d outputs",
                           e->small_n, l->out);
        mt_tensor sum = mt_tensor_1d(e->small, MT_F32, dev, l->out);
        mt_tensor db = mt_nn_flat(e, e->grads, (size_t)l->b, l->out);
        MT_TRY(mt_reduce(e->ctx, MT_REDUCE_SUM, dy, 0, &sum));
        MT_TRY(mt_axpy(e->ctx, 1.0f, &sum, &db));
        MT_TRY(mt_nn_ready(e, (size_t)l->b, (size_t)l->out));
    }
    if (!dx) return MT_OK;
    mt_tensor w = mt_tensor_2d(e->params + l->w, MT_F32, dev, l->out, l->in);
    return mt_gemm(e->ctx, false, false, 1.0f, dy, &w, 0.0f, dx); /* (N,out) x (out,in) */
}
