/* Optimizers over the model's flat buffers, and learning-rate schedules.
 *
 * The state buffers have the layout of the trainable parameters, so a checkpoint saves each as
 * one tensor and the update walks the parameter table, stepping each parameter's slice through
 * the backend's sgd_step / adamw_step ops with that parameter's weight decay (0 for norms and
 * biases). torch.optim keeps per-parameter state too; the arithmetic is the same. */
#include <math.h>
#include <string.h>

#include "medtrain/ops.h"
#include "medtrain/train.h"

static mt_tensor slice(mt_ctx *ctx, float *base, const mt_param *p) {
    return mt_tensor_1d(base + p->offset, MT_F32, ctx->device, p->numel);
}

static mt_status alloc_state(mt_ctx *ctx, size_t n, float **out) {
    mt_tensor t;
    MT_TRY(mt_tensor_alloc(ctx, &t, MT_F32, 1, (int64_t[]){(int64_t)(n ? n : 1)}));
    mt_status st = mt_tensor_zero(ctx, &t);
    if (st != MT_OK) {
        mt_tensor_free(ctx, &t);
        return st;
    }
    *out = t.data;
    return MT_OK;
}

static void free_state(mt_ctx *ctx, float **buf, size_t n) {
    if (!*buf) return;
    mt_tensor t = mt_tensor_1d(*buf, MT_F32, ctx->device, (int64_t)(n ? n : 1));
    mt_tensor_free(ctx, &t);
    *buf = NULL;
}

mt_status mt_optimizer_init(mt_optimizer *o, mt_ctx *ctx, mt_params *params,
                            const mt_opt_config *cfg) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->ctx = ctx;
    o->params = params;
    bool need_m = cfg->kind == MT_OPT_ADAMW || cfg->momentum != 0.0f;
    if (need_m) MT_TRY(alloc_state(ctx, params->n_train, &o->m));
    if (cfg->kind == MT_OPT_ADAMW) {
        mt_status st = alloc_state(ctx, params->n_train, &o->v);
        if (st != MT_OK) {
            mt_optimizer_free(o);
            return st;
        }
    }
    return MT_OK;
}

void mt_optimizer_free(mt_optimizer *o) {
    if (!o->ctx) return;
    free_state(o->ctx, &o->m, o->params->n_train);
    free_state(o->ctx, &o->v, o->params->n_train);
}

mt_status mt_optimizer_step(mt_optimizer *o, float lr) {
    mt_params *ps = o->params;
    const mt_opt_config *c = &o->cfg;
    for (int i = 0; i < ps->n; i++) {
        const mt_param *p = &ps->p[i];
        if (!p->trainable) continue;
        float wd = p->decay ? c->weight_decay : 0.0f;
        mt_tensor w = slice(o->ctx, ps->params, p), g = slice(o->ctx, ps->grads, p);
        mt_status st;
        if (c->kind == MT_OPT_ADAMW) {
            mt_tensor m = slice(o->ctx, o->m, p), v = slice(o->ctx, o->v, p);
            st =
                mt_adamw_step(o->ctx, &w, &g, &m, &v, lr, c->beta1, c->beta2, c->eps, wd, o->t + 1);
        } else {
            mt_tensor m = o->m ? slice(o->ctx, o->m, p) : (mt_tensor){0};
            st = mt_sgd_step(o->ctx, &w, &g, o->m ? &m : NULL, lr, c->momentum, c->dampening, wd,
                             c->nesterov, o->t == 0);
        }
        if (st != MT_OK) return mt_error_wrap(st, "optimizer step, parameter %s: ", p->name);
    }
    o->t++;
    return MT_OK;
}

int mt_optimizer_state(mt_optimizer *o, const char *names[2], float *bufs[2]) {
    if (o->cfg.kind == MT_OPT_ADAMW) {
        names[0] = "exp_avg", bufs[0] = o->m;
        names[1] = "exp_avg_sq", bufs[1] = o->v;
        return 2;
    }
    if (!o->m) return 0;
    names[0] = "momentum_buffer", bufs[0] = o->m;
    return 1;
}

double mt_schedule_lr(const mt_schedule *s, int64_t step) {
    if (s->warmup > 0 && step < s->warmup) return s->peak * (double)(step + 1) / (double)s->warmup;
    int64_t span = s->total - s->warmup;
    double progress = span > 0 ? (double)(step - s->warmup) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    if (progress < 0.0) progress = 0.0;
    switch (s->kind) {
    case MT_SCHED_LINEAR:
        return s->peak - (s->peak - s->min_lr) * progress;
    case MT_SCHED_COSINE:
        return s->min_lr + (s->peak - s->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
    case MT_SCHED_CONSTANT:
    default:
        return s->peak;
    }
}
