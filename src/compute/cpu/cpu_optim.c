/* Optimizer steps on the CPU, on one parameter's slice of the flat buffers, and the sum of
 * squares that global-norm clipping needs.
 *
 * The steps follow torch.optim's single-tensor code operation by operation, in f32 with the
 * scalar factors computed in double as Python computes them, so a step matches PyTorch's to
 * rounding. Every element is independent; loops split across ctx->threads. */
#include <math.h>
#include "cpu_ops.h"

#define PAR_MIN    32768 /* elements below which a loop runs on one thread */
#define SUMSQ_PART 65536 /* elements per partial sum of squares (fixed: thread-independent) */

mt_status mt_cpu_sgd_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad,
                          mt_tensor *momentum_buf, float lr, float momentum, float dampening,
                          float weight_decay, bool nesterov, bool first_step) {
    float *p = param->data, *buf = momentum_buf ? momentum_buf->data : NULL;
    const float *g = grad->data;
    const int64_t n = mt_tensor_numel(param);
    const float keep = (float)(1.0 - (double)dampening); /* add_(d_p, alpha=1 - dampening) */
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = weight_decay != 0.0f ? g[i] + weight_decay * p[i] : g[i];
        if (momentum != 0.0f) {
            float b = first_step ? d : momentum * buf[i] + keep * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] = p[i] - lr * d;
    }
    return MT_OK;
}

mt_status mt_cpu_adamw_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad, mt_tensor *m,
                            mt_tensor *v, float lr, float beta1, float beta2, float eps,
                            float weight_decay, int64_t t) {
    float *p = param->data, *mp = m->data, *vp = v->data;
    const float *g = grad->data;
    const int64_t n = mt_tensor_numel(param);
    /* the scalars, as torch computes them in Python floats */
    const float decay = (float)(1.0 - (double)lr * weight_decay);
    const float w1 = (float)(1.0 - (double)beta1), w2 = (float)(1.0 - (double)beta2);
    const double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
    const float step = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i] * decay, gi = g[i];
        /* exp_avg.lerp_(grad, 1 - beta1), with lerp's two forms */
        float mi = w1 < 0.5f ? mp[i] + w1 * (gi - mp[i]) : gi - (gi - mp[i]) * (1.0f - w1);
        float vi = vp[i] * beta2 + w2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        mp[i] = mi;
        vp[i] = vi;
        p[i] = pi + (-step * mi) / denom; /* addcdiv_(exp_avg, denom, value=-step_size) */
    }
    return MT_OK;
}

mt_status mt_cpu_sumsq(mt_ctx *ctx, const mt_tensor *x, mt_tensor *out) {
    const float *xp = x->data;
    const int64_t n = mt_tensor_numel(x), parts = (n + SUMSQ_PART - 1) / SUMSQ_PART;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    double *part = mt_cpu_scratch(ctx, (size_t)parts * sizeof(double), "sumsq", "partial sums");
    if (!part) return MT_ERR_NOMEM;
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t k = 0; k < parts; k++) {
        int64_t i1 = (k + 1) * SUMSQ_PART < n ? (k + 1) * SUMSQ_PART : n;
        double s = 0.0;
        for (int64_t i = k * SUMSQ_PART; i < i1; i++) s += (double)xp[i] * xp[i];
        part[k] = s;
    }
    double total = 0.0;
    for (int64_t k = 0; k < parts; k++) total += part[k];
    float *o = out->data;
    o[0] = (float)((double)o[0] + total);
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}
