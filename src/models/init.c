/* Initialisation (torchvision's schemes with Philox streams) and parameter access in file layout.
 *
 * Values are drawn in torchvision's element order ((K,C,R,S) for a conv) and then converted to
 * the memory layout, so an initialisation does not depend on how medtrain stores a tensor; each
 * table entry has its own stream (seed, "init", entry index), so re-initialising a subset (a new
 * head) gives exactly what a full initialisation would have. */
#include <math.h>
#include <string.h>
#include "medtrain/rng.h"
#include "model_internal.h"

#define INIT_STREAM 0x696e6974ull /* "init" */

/* file (K,C,R,S) <-> memory (K,R,S,C) */
static void to_krsc(const mt_param *p, const float *src, float *dst) {
    int64_t K = p->shape[0], C = p->shape[1], RS = p->shape[2] * p->shape[3];
    for (int64_t k = 0; k < K; k++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t j = 0; j < RS; j++) dst[(k * RS + j) * C + c] = src[(k * C + c) * RS + j];
}

static void to_kcrs(const mt_param *p, const float *src, float *dst) {
    int64_t K = p->shape[0], C = p->shape[1], RS = p->shape[2] * p->shape[3];
    for (int64_t k = 0; k < K; k++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t j = 0; j < RS; j++) dst[(k * C + c) * RS + j] = src[(k * RS + j) * C + c];
}

static mt_status check_index(const mt_model *m, int i, bool trainable, const char *what) {
    if (i < 0 || i >= m->P.n)
        return mt_fail(MT_ERR_ARG, "%s: index %d outside the table of %d entries", what, i, m->P.n);
    if (trainable && !m->P.p[i].trainable)
        return mt_fail(MT_ERR_ARG, "%s: '%s' is a buffer, not a trainable parameter", what,
                       m->P.p[i].name);
    return MT_OK;
}

static mt_tensor device_view(mt_model *m, float *base, const mt_param *p) {
    return mt_tensor_1d(base + p->offset, MT_F32, m->ctx->device, p->numel);
}

mt_status mt_model_param_set(mt_model *m, int i, const float *src) {
    MT_TRY(check_index(m, i, false, "model param set"));
    const mt_param *p = &m->P.p[i];
    const float *from = src;
    if (p->conv_krsc) {
        to_krsc(p, src, m->stage);
        from = m->stage;
    }
    mt_tensor dev = device_view(m, p->trainable ? m->P.params : m->P.buffers, p);
    mt_tensor host = mt_tensor_1d((void *)from, MT_F32, MT_CPU, p->numel);
    MT_TRY(mt_tensor_copy(m->ctx, &dev, &host));
    return mt_ctx_sync(m->ctx);
}

static mt_status get(mt_model *m, const mt_param *p, float *base, float *dst) {
    mt_tensor dev = device_view(m, base, p);
    mt_tensor host = mt_tensor_1d(p->conv_krsc ? m->stage : dst, MT_F32, MT_CPU, p->numel);
    MT_TRY(mt_tensor_copy(m->ctx, &host, &dev));
    MT_TRY(mt_ctx_sync(m->ctx));
    if (p->conv_krsc) to_kcrs(p, m->stage, dst);
    return MT_OK;
}

mt_status mt_model_param_get(mt_model *m, int i, float *dst) {
    MT_TRY(check_index(m, i, false, "model param get"));
    const mt_param *p = &m->P.p[i];
    return get(m, p, p->trainable ? m->P.params : m->P.buffers, dst);
}

mt_status mt_model_grad_get(mt_model *m, int i, float *dst) {
    MT_TRY(check_index(m, i, true, "model grad get"));
    return get(m, &m->P.p[i], m->P.grads, dst);
}

/* Entry i's initial values in file layout. */
static void init_values(const mt_model *m, int i, uint64_t seed, float *out) {
    const mt_param *p = &m->P.p[i];
    mt_rng r;
    mt_rng_init(&r, seed, INIT_STREAM, (uint64_t)i);
    double std = 0, bound = 0, value = 0;
    switch ((mdl_init)m->init[i]) {
    case MDL_INIT_ONE:
        value = 1;
        break;
    case MDL_INIT_ZERO:
        break;
    case MDL_INIT_CONV_FAN_OUT: /* gain sqrt(2) over fan_out = K*R*S */
        std = sqrt(2.0 / (double)(p->shape[0] * p->shape[2] * p->shape[3]));
        break;
    case MDL_INIT_CONV_FAN_IN: /* gain sqrt(2) over fan_in = C*R*S */
        std = sqrt(2.0 / (double)(p->shape[1] * p->shape[2] * p->shape[3]));
        break;
    case MDL_INIT_LINEAR: /* kaiming_uniform(a=sqrt(5)) and the bias rule: both 1/sqrt(fan_in) */
        bound = 1.0 / sqrt((double)m->fan_in[i]);
        break;
    }
    for (int64_t j = 0; j < p->numel; j++) {
        if (std > 0)
            out[j] = (float)(std * mt_rng_normal(&r));
        else if (bound > 0)
            out[j] = (float)((2.0 * mt_rng_uniform_f64(&r) - 1.0) * bound);
        else
            out[j] = (float)value;
    }
}

static mt_status init_one(mt_model *m, int i, uint64_t seed) {
    /* values go through a second host buffer: param_set uses stage for the layout change */
    float *v = mt_alloc((size_t)m->P.p[i].numel * sizeof *v, "initial values");
    if (!v) return MT_ERR_NOMEM;
    init_values(m, i, seed, v);
    mt_status s = mt_model_param_set(m, i, v);
    mt_free(v);
    return s;
}

mt_status mt_model_init(mt_model *m, uint64_t seed) {
    for (int i = 0; i < m->P.n; i++) MT_TRY(init_one(m, i, seed));
    return MT_OK;
}

mt_status mt_model_init_params(mt_model *m, uint64_t seed, int n, const char *const *names) {
    for (int k = 0; k < n; k++)
        if (mt_model_find(m, names[k]) < 0)
            return mt_fail(MT_ERR_ARG, "model %s has no parameter '%s' to initialise", m->arch_name,
                           names[k]);
    for (int k = 0; k < n; k++) MT_TRY(init_one(m, mt_model_find(m, names[k]), seed));
    return MT_OK;
}
