/* Models: creation from an architecture's table, the forward and backward entry points, and the
 * activation memory they run in.
 *
 * Activation memory is planned per batch shape (see model_internal.h): on the first forward for
 * a shape, the architecture's training forward + backward and its eval forward run in plan mode
 * (no arithmetic) against a first-fit allocator over an unbounded fake range; the highest byte
 * either reached is the size. One device allocation of that size is made (grown, never shrunk,
 * when a later shape needs more) and every real step replays the same requests into it. */
#include <stdio.h>
#include <string.h>
#include "model_internal.h"

static const mdl_arch *const archs[] = {&mdl_resnet18, &mdl_resnet34, &mdl_resnet50,
                                        &mdl_densenet121, &mdl_unet};
#define N_ARCHS   (int)(sizeof archs / sizeof archs[0])
#define ALIGN     64
#define PLAN_BASE ((uintptr_t)1 << 20) /* plan mode's fake base: never dereferenced */

/* ---- the workspace allocator ------------------------------------------------------------- */

static mt_status ws_take(mdl_ws *ws, size_t bytes, size_t *off) {
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (!bytes) bytes = ALIGN;
    size_t at = 0;
    int i = 0;
    for (; i < ws->n; i++) {
        if (ws->live[i].off >= at + bytes) break; /* the gap before block i fits */
        at = ws->live[i].off + ws->live[i].len;
    }
    if (at + bytes > ws->cap)
        return mt_fail(MT_ERR_INTERNAL,
                       "activation memory: %zu bytes at offset %zu exceed the planned %zu "
                       "(the forward/backward requests differ from the plan's)",
                       bytes, at, ws->cap);
    if (ws->n == ws->n_cap) {
        int cap = ws->n_cap ? 2 * ws->n_cap : 64;
        mdl_block *live = mt_realloc(ws->live, (size_t)cap, sizeof *live, "activation blocks");
        if (!live) return MT_ERR_NOMEM;
        ws->live = live, ws->n_cap = cap;
    }
    memmove(ws->live + i + 1, ws->live + i, (size_t)(ws->n - i) * sizeof *ws->live);
    ws->live[i] = (mdl_block){at, bytes};
    ws->n++;
    if (at + bytes > ws->peak) ws->peak = at + bytes;
    *off = at;
    return MT_OK;
}

static void ws_give(mdl_ws *ws, size_t off) {
    for (int i = ws->n - 1; i >= 0; i--)
        if (ws->live[i].off == off) {
            memmove(ws->live + i, ws->live + i + 1, (size_t)(ws->n - i - 1) * sizeof *ws->live);
            ws->n--;
            return;
        }
}

static mt_status take(mdl_run *r, mt_tensor *t, mt_dtype dtype, int ndim, const int64_t *shape) {
    mt_tensor v = mt_tensor_view(NULL, dtype, r->e.ctx->device, ndim, shape);
    size_t off = 0;
    MT_TRY(ws_take(r->ws, mt_tensor_bytes(&v), &off));
    v.data = (void *)(r->ws->base + off);
    *t = v;
    return MT_OK;
}

mt_status mdl_alloc(mdl_run *r, mt_tensor *t, mt_dtype dtype, int64_t n, int64_t h, int64_t w,
                    int64_t c) {
    return take(r, t, dtype, 4, (int64_t[]){n, h, w, c});
}

mt_status mdl_alloc2(mdl_run *r, mt_tensor *t, int64_t n, int64_t c) {
    return take(r, t, MT_F32, 2, (int64_t[]){n, c});
}

mt_status mdl_alloc_like(mdl_run *r, mt_tensor *t, const mt_tensor *like) {
    return take(r, t, MT_F32, like->ndim, like->shape);
}

void mdl_release(mdl_run *r, mt_tensor *t) {
    if (!t->data) return;
    ws_give(r->ws, (size_t)((uintptr_t)t->data - r->ws->base));
    t->data = NULL;
}

/* ---- creation ----------------------------------------------------------------------------- */

static mt_status check_opts(const mt_model_opts *o, const mdl_arch **arch) {
    if (!o || !o->arch) return mt_fail(MT_ERR_ARG, "model: no architecture given");
    *arch = NULL;
    for (int i = 0; i < N_ARCHS; i++)
        if (!strcmp(o->arch, archs[i]->name)) *arch = archs[i];
    if (!*arch) {
        char known[128] = "";
        for (int i = 0; i < N_ARCHS; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                     archs[i]->name);
        return mt_fail(MT_ERR_ARG, "model: unknown architecture '%s' (known: %s)", o->arch, known);
    }
    if (o->in_channels < 1 || o->in_channels > 4096)
        return mt_fail(MT_ERR_ARG, "model %s: in_channels %d (expected 1 or 3)", o->arch,
                       o->in_channels);
    if (o->n_outputs < 1)
        return mt_fail(MT_ERR_ARG, "model %s: n_outputs %d (expected >= 1)", o->arch, o->n_outputs);
    if (!(o->drop_rate >= 0 && o->drop_rate < 1))
        return mt_fail(MT_ERR_ARG, "model %s: drop_rate %g (expected in [0,1))", o->arch,
                       o->drop_rate);
    if (o->depth < 0 || o->depth > 8 || o->channels < 0 || o->channels > 4096)
        return mt_fail(MT_ERR_ARG, "model %s: depth %d, channels %d (expected 1..8 and 1..4096)",
                       o->arch, o->depth, o->channels);
    if (o->norm != MT_NORM_BATCH && o->norm != MT_NORM_INSTANCE)
        return mt_fail(MT_ERR_ARG, "model %s: unknown norm kind %d", o->arch, (int)o->norm);
    if (!(o->bn_momentum >= 0 && o->bn_momentum <= 1) || !(o->bn_eps >= 0))
        return mt_fail(MT_ERR_ARG, "model %s: bn_momentum %g, bn_eps %g (expected [0,1] and >= 0)",
                       o->arch, o->bn_momentum, o->bn_eps);
    return MT_OK;
}

static mt_status alloc_flat(mt_ctx *ctx, mt_tensor *t, size_t n) {
    MT_TRY(mt_tensor_alloc(ctx, t, MT_F32, 1, (int64_t[]){(int64_t)n}));
    return mt_tensor_zero(ctx, t);
}

static size_t up16(size_t n) {
    return (n + 15) / 16 * 16;
}

/* The flat buffers, the env's device scratch (BN statistics, per-channel sums, 1.0f) and host
 * scratch. */
static mt_status alloc_buffers(mt_model *m, const mdl_builder *b) {
    MT_TRY(alloc_flat(m->ctx, &m->t_params, m->P.n_train));
    MT_TRY(alloc_flat(m->ctx, &m->t_grads, m->P.n_train));
    MT_TRY(alloc_flat(m->ctx, &m->t_buffers, m->P.n_buf));
    m->P.params = m->t_params.data, m->P.grads = m->t_grads.data;
    m->P.buffers = m->t_buffers.data;
    m->n_stats = up16(b->n_stats);
    m->small_n = up16(4 * (size_t)b->max_c + 8);
    MT_TRY(alloc_flat(m->ctx, &m->t_aux, m->n_stats + m->small_n + 16));
    m->stats = m->t_aux.data;
    m->small = m->stats + m->n_stats;
    m->one = m->small + m->small_n;
    float one = 1.0f;
    mt_tensor host_one = mt_tensor_1d(&one, MT_F32, MT_CPU, 1);
    mt_tensor dev_one = mt_tensor_1d(m->one, MT_F32, m->ctx->device, 1);
    MT_TRY(mt_tensor_copy(m->ctx, &dev_one, &host_one));
    m->host = mt_calloc(m->small_n, sizeof(float), "model host scratch");
    for (int i = 0; i < m->P.n; i++)
        if ((size_t)m->P.p[i].numel > m->stage_n) m->stage_n = (size_t)m->P.p[i].numel;
    m->stage = m->host ? mt_alloc(m->stage_n * sizeof(float), "model staging buffer") : NULL;
    return m->stage ? MT_OK : MT_ERR_NOMEM;
}

mt_status mt_model_create(mt_ctx *ctx, const mt_model_opts *opts, mt_model **out) {
    *out = NULL;
    const mdl_arch *arch = NULL;
    MT_TRY(check_opts(opts, &arch));
    if (!ctx || !ctx->backend) return mt_fail(MT_ERR_ARG, "model: the context is not initialised");
    mt_model *m = mt_calloc(1, sizeof *m, "model");
    if (!m) return MT_ERR_NOMEM;
    m->ctx = ctx;
    m->arch = arch;
    m->opts = *opts;
    snprintf(m->arch_name, sizeof m->arch_name, "%s", arch->name);
    m->opts.arch = m->arch_name;
    if (m->opts.bn_momentum == 0) m->opts.bn_momentum = 0.1f;
    if (m->opts.bn_eps == 0) m->opts.bn_eps = 1e-5f;
    if (m->opts.depth == 0) m->opts.depth = 4;
    if (m->opts.channels == 0) m->opts.channels = 32;
    mdl_builder b = {.status = MT_OK};
    mt_status s = arch->build(&b, &m->opts, &m->net);
    if (s == MT_OK) s = b.status;
    m->P.p = b.p, m->P.n = b.n, m->P.n_train = b.n_train, m->P.n_buf = b.n_buf;
    m->init = b.init, m->fan_in = b.fan_in;
    if (s == MT_OK) s = alloc_buffers(m, &b);
    if (s != MT_OK) {
        mt_model_free(m);
        return mt_error_wrap(s, "creating model %s: ", opts->arch);
    }
    *out = m;
    return MT_OK;
}

void mt_model_free(mt_model *m) {
    if (!m) return;
    if (m->net) m->arch->free(m->net);
    mt_tensor_free(m->ctx, &m->t_params);
    mt_tensor_free(m->ctx, &m->t_grads);
    mt_tensor_free(m->ctx, &m->t_buffers);
    mt_tensor_free(m->ctx, &m->t_aux);
    mt_tensor_free(m->ctx, &m->act);
    mt_free(m->ws.live);
    mt_free(m->host);
    mt_free(m->stage);
    mt_free(m->P.p);
    mt_free(m->init);
    mt_free(m->fan_in);
    mt_free(m);
}

mt_params *mt_model_params(mt_model *m) {
    return &m->P;
}

const mt_model_opts *mt_model_options(const mt_model *m) {
    return &m->opts;
}

bool mt_model_dense(const mt_model *m) {
    return m->arch->dense;
}

int mt_model_find(const mt_model *m, const char *name) {
    for (int i = 0; i < m->P.n; i++)
        if (!strcmp(m->P.p[i].name, name)) return i;
    return -1;
}

void mt_model_set_bn_frozen(mt_model *m, bool frozen) {
    m->bn_frozen = frozen;
}

void mt_model_set_sync_bn(mt_model *m, mt_allreduce_fn fn, void *user) {
    m->sync = fn;
    m->sync_user = user;
}

/* ---- runs and planning ------------------------------------------------------------------- */

static mdl_run run_for(mt_model *m, mt_ctx *ctx, bool train, bool plan) {
    mdl_run r = {.ws = &m->ws};
    r.e = (mt_nn_env){.ctx = ctx,
                      .params = m->P.params,
                      .grads = m->P.grads,
                      .buffers = m->P.buffers,
                      .stats = m->stats,
                      .small = m->small,
                      .host = m->host,
                      .small_n = m->small_n,
                      .one = m->one,
                      .train = train,
                      .plan = plan,
                      .bn_momentum = m->opts.bn_momentum,
                      .bn_eps = m->opts.bn_eps,
                      .sync = m->sync,
                      .sync_user = m->sync_user,
                      .bn_frozen = m->bn_frozen};
    return r;
}

static void ws_reset(mdl_ws *ws, uintptr_t base, size_t cap) {
    ws->base = base, ws->cap = cap, ws->n = 0, ws->peak = 0;
}

/* Peak bytes of one plan-mode pass: a training forward and backward, or an eval forward. */
static mt_status plan_pass(mt_model *m, bool train, int64_t n, int64_t h, int64_t w, size_t *peak) {
    mdl_run r = run_for(m, m->ctx, train, true);
    ws_reset(&m->ws, PLAN_BASE, SIZE_MAX / 2);
    mt_device dev = m->ctx->device;
    mt_tensor x = mt_tensor_4d(NULL, MT_F32, dev, n, h, w, m->opts.in_channels);
    mt_tensor logits = m->arch->dense ? mt_tensor_4d(NULL, MT_F32, dev, n, h, w, m->opts.n_outputs)
                                      : mt_tensor_2d(NULL, MT_F32, dev, n, m->opts.n_outputs);
    MT_TRY(m->arch->forward(&r, m->net, &x, &logits));
    if (train) MT_TRY(m->arch->backward(&r, m->net, &logits));
    if (m->ws.n)
        return mt_fail(MT_ERR_INTERNAL, "model %s: %d activation blocks outlive the %s pass",
                       m->arch_name, m->ws.n, train ? "training" : "eval");
    *peak = m->ws.peak;
    return MT_OK;
}

mt_status mt_model_plan(mt_model *m, int64_t n, int64_t h, int64_t w, size_t *bytes) {
    if (n < 1 || h < 1 || w < 1)
        return mt_fail(MT_ERR_SHAPE, "model %s: batch shape %lldx%lldx%lld", m->arch_name,
                       (long long)n, (long long)h, (long long)w);
    m->ready_for_backward = false; /* the plan overwrites the kept-activation views */
    size_t train_peak = 0, eval_peak = 0;
    MT_TRY(plan_pass(m, true, n, h, w, &train_peak));
    MT_TRY(plan_pass(m, false, n, h, w, &eval_peak));
    *bytes = train_peak > eval_peak ? train_peak : eval_peak;
    return MT_OK;
}

mt_status mt_model_reserve(mt_model *m, int64_t n, int64_t h, int64_t w) {
    if (m->act_need && n == m->shape_n && h == m->shape_h && w == m->shape_w) return MT_OK;
    size_t need = 0;
    MT_TRY(mt_model_plan(m, n, h, w, &need));
    if (need > m->act_cap) {
        mt_tensor_free(m->ctx, &m->act);
        m->act_cap = 0;
        mt_status s = mt_tensor_alloc(m->ctx, &m->act, MT_U8, 1, (int64_t[]){(int64_t)need});
        if (s != MT_OK)
            return mt_error_wrap(s, "model %s: activation memory for a batch of %lldx%lldx%lld: ",
                                 m->arch_name, (long long)n, (long long)h, (long long)w);
        m->act_cap = need;
    }
    m->act_need = need;
    m->shape_n = n, m->shape_h = h, m->shape_w = w;
    return MT_OK;
}

size_t mt_model_activation_bytes(const mt_model *m) {
    return m->act_need ? m->act_need + m->n_stats * sizeof(float) : 0;
}

/* ---- forward and backward ---------------------------------------------------------------- */

static mt_status check_io(const mt_model *m, const mt_ctx *ctx, const mt_tensor *x,
                          const mt_tensor *y, const char *yname) {
    char a[96], b[96];
    if (!ctx || ctx->device != m->ctx->device)
        return mt_fail(MT_ERR_ARG, "model %s: the context must run on %s, where the model lives",
                       m->arch_name, mt_device_name(m->ctx->device));
    if (x && (x->ndim != 4 || x->dtype != MT_F32 || x->shape[3] != m->opts.in_channels))
        return mt_fail(MT_ERR_SHAPE, "model %s: input %s: expected (N,H,W,%d) f32", m->arch_name,
                       mt_tensor_describe(x, a, sizeof a), m->opts.in_channels);
    int64_t n = x ? x->shape[0] : m->shape_n;
    if (m->arch->dense) {
        int64_t h = x ? x->shape[1] : m->shape_h, w = x ? x->shape[2] : m->shape_w;
        if (y->ndim != 4 || y->dtype != MT_F32 || y->device != ctx->device || y->shape[0] != n ||
            y->shape[1] != h || y->shape[2] != w || y->shape[3] != m->opts.n_outputs)
            return mt_fail(MT_ERR_SHAPE, "model %s: %s %s: expected [%lld,%lld,%lld,%d] f32 %s",
                           m->arch_name, yname, mt_tensor_describe(y, b, sizeof b), (long long)n,
                           (long long)h, (long long)w, m->opts.n_outputs,
                           mt_device_name(ctx->device));
        return MT_OK;
    }
    if (y->ndim != 2 || y->dtype != MT_F32 || y->device != ctx->device || y->shape[0] != n ||
        y->shape[1] != m->opts.n_outputs)
        return mt_fail(MT_ERR_SHAPE, "model %s: %s %s: expected [%lld,%d] f32 %s", m->arch_name,
                       yname, mt_tensor_describe(y, b, sizeof b), (long long)n, m->opts.n_outputs,
                       mt_device_name(ctx->device));
    return MT_OK;
}

mt_status mt_model_forward(mt_model *m, mt_ctx *ctx, const mt_tensor *x, bool train,
                           uint64_t dropout_seed, uint64_t step, mt_tensor *logits) {
    MT_TRY(check_io(m, ctx, x, logits, "logits"));
    mt_status s = mt_model_reserve(m, x->shape[0], x->shape[1], x->shape[2]);
    if (s != MT_OK) return mt_error_wrap(s, "%s forward: ", m->arch_name);
    m->ready_for_backward = false;
    mdl_run r = run_for(m, ctx, train, false);
    r.dropout_seed = dropout_seed, r.step = step;
    ws_reset(&m->ws, (uintptr_t)m->act.data, m->act_cap);
    s = m->arch->forward(&r, m->net, x, logits);
    if (s != MT_OK) return mt_error_wrap(s, "%s forward: ", m->arch_name);
    m->ready_for_backward = train;
    return MT_OK;
}

mt_status mt_model_backward(mt_model *m, mt_ctx *ctx, const mt_tensor *dlogits,
                            mt_grad_ready_fn ready, void *user) {
    if (!m->ready_for_backward)
        return mt_fail(MT_ERR_ARG,
                       "%s backward: needs a training forward first (each backward "
                       "consumes the activations of one training forward)",
                       m->arch_name);
    MT_TRY(check_io(m, ctx, NULL, dlogits, "dlogits"));
    mdl_run r = run_for(m, ctx, true, false);
    r.e.ready = ready, r.e.ready_user = user;
    m->ready_for_backward = false;
    mt_status s = m->arch->backward(&r, m->net, dlogits);
    if (s != MT_OK) return mt_error_wrap(s, "%s backward: ", m->arch_name);
    if (m->ws.n)
        return mt_fail(MT_ERR_INTERNAL, "%s backward: %d activation blocks left", m->arch_name,
                       m->ws.n);
    return MT_OK;
}
