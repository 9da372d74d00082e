/* LoRA on the Llama model (lm.h: mt_lm_lora_*): PEFT's LoraConfig on the seven projections.
 *
 * A targeted projection y = x W^T (W frozen, (out, in)) gains y += scale * (x A^T) B^T with A
 * (r, in) and B (out, r). A and B are table entries appended after the base weights, trainable, so
 * they sit in the model's `params` and their gradients in `grads`, layer by layer in PeftModel's
 * state_dict order; an all-reduce bucket is an offset range and the last layer's tensors, whose
 * gradients the backward finishes first, lie at the end.
 *
 * Names are the keys of PEFT's adapter_model.safetensors (PeftModel's state_dict without the
 * adapter name): "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight".
 *
 * The low-rank path needs u = x A^T (N, r) in the forward and g = dy B (N, r) in the backward; both
 * live in the activation memory (one pair for the model), and u is recomputed in the backward from
 * the projection's input, which the forward keeps anyway: r*(in) flops per row, not worth N*r
 * floats per projection and layer.
 *
 * Dropout (PEFT's lora_dropout, training forwards only) drops the LoRA path's input:
 * y = x W^T + scale * (drop(x) A^T) B^T. The mask of projection j of layer l comes from Philox
 * keyed by (seed, DROP_STREAM ^ step), counted from offset (7 l + j) << 40, so masks never share
 * numbers and the backward recomputes them instead of keeping them. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "llama_internal.h"
#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/ops.h"
#include "medtrain/rng.h"
#include "medtrain/safetensors.h"

#define INIT_STREAM 0x696e6974ull         /* "init", as src/models/init.c */
#define DROP_STREAM 0x6c6f726100000000ull /* "lora" in the high half; the step in the low */

static const char *const proj_name[LLAMA_N_PROJ] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};
static const char *const proj_parent[LLAMA_N_PROJ] = {
    "self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};

static const mt_tensor *proj_weight(const mt_lm *lm, int64_t l, int proj) {
    const llama_layer *L = &lm->layers[l];
    const mt_tensor *w[LLAMA_N_PROJ] = {&L->wq,    &L->wk,  &L->wv,   &L->wo,
                                        &L->wgate, &L->wup, &L->wdown};
    return w[proj];
}

static int lora_a(const mt_lm *lm, int64_t l, int proj) {
    return lm->lora.on ? lm->lora.index[l * LLAMA_N_PROJ + proj] : -1;
}

/* Table entry i as a 2-D tensor in base (params or grads). */
static mt_tensor entry(const mt_lm *lm, float *base, int i) {
    const mt_param *p = &lm->P.p[i];
    return mt_tensor_view(base + p->offset, MT_F32, lm->ctx->device, 2, p->shape);
}

/* ---- targets --------------------------------------------------------------------------------- */

/* "q_proj,v_proj" -> bit mask; NULL or "" -> all seven. */
static mt_status parse_targets(const char *s, unsigned *mask) {
    *mask = 0;
    if (!s || !*s) {
        *mask = (1u << LLAMA_N_PROJ) - 1;
        return MT_OK;
    }
    const char *p = s;
    while (*p) {
        size_t n = strcspn(p, ",");
        int k = -1;
        for (int j = 0; j < LLAMA_N_PROJ; j++)
            if (strlen(proj_name[j]) == n && !strncmp(p, proj_name[j], n)) k = j;
        if (k < 0)
            return mt_fail(MT_ERR_CONFIG,
                           "LoRA target_modules: '%.*s' is not a projection of a Llama layer "
                           "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                           (int)n, p);
        *mask |= 1u << k;
        p += n;
        if (*p == ',') p++;
    }
    if (!*mask) return mt_fail(MT_ERR_CONFIG, "LoRA target_modules: none given in '%s'", s);
    return MT_OK;
}

static void targets_string(unsigned mask, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = '\0';
    for (int j = 0; j < LLAMA_N_PROJ; j++)
        if (mask & (1u << j))
            at += (size_t)snprintf(buf + at, at < n ? n - at : 0, "%s%s", at ? "," : "",
                                   proj_name[j]);
}

/* ---- the table and init ---------------------------------------------------------------------- */

static mt_status append(mt_lm *lm, const char *name, int64_t d0, int64_t d1) {
    mt_params *P = &lm->P;
    mt_param *p = mt_realloc(P->p, (size_t)P->n + 1, sizeof *p, "parameter table");
    if (!p) return MT_ERR_NOMEM;
    P->p = p;
    p = &P->p[P->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = 2;
    p->shape[0] = d0, p->shape[1] = d1;
    p->numel = d0 * d1;
    p->trainable = true;
    p->decay = true; /* as Hugging Face's Trainer: every non-bias, non-norm weight */
    p->file_dtype = MT_F32;
    p->offset = P->n_train;
    P->n_train += (size_t)p->numel;
    return MT_OK;
}

/* PEFT's reset_lora_parameters: A = kaiming_uniform_(a=sqrt(5)): bound = sqrt(6 / ((1 + 5) in))
 * = 1/sqrt(in); B = 0. */
static mt_status init_entries(mt_lm *lm, uint64_t seed) {
    size_t most = 0;
    for (int i = 0; i < lm->P.n; i++)
        if (lm->P.p[i].trainable && (size_t)lm->P.p[i].numel > most)
            most = (size_t)lm->P.p[i].numel;
    float *v = mt_alloc(most * sizeof *v, "LoRA init");
    if (!v) return MT_ERR_NOMEM;
    mt_status s = MT_OK;
    for (int i = 0; i < lm->P.n && s == MT_OK; i++) {
        const mt_param *p = &lm->P.p[i];
        if (!p->trainable) continue;
        const bool is_a = strstr(p->name, ".lora_A.") != NULL;
        const float bound = is_a ? 1.0f / sqrtf((float)p->shape[1]) : 0.0f;
        mt_rng r;
        mt_rng_init(&r, seed, INIT_STREAM, (uint64_t)i);
        for (int64_t k = 0; k < p->numel; k++)
            v[k] = is_a ? (2.0f * mt_rng_uniform(&r) - 1.0f) * bound : 0.0f;
        s = mt_lm_param_set(lm, i, v);
    }
    mt_free(v);
    return s;
}

static mt_status zero_grads(mt_lm *lm) {
    float *z = mt_calloc(lm->P.n_train, sizeof *z, "LoRA gradients");
    if (!z) return MT_ERR_NOMEM;
    mt_tensor h = mt_tensor_1d(z, MT_F32, MT_CPU, (int64_t)lm->P.n_train);
    mt_status s = mt_tensor_copy(lm->ctx, &lm->lora.t_grads, &h);
    if (s == MT_OK) s = mt_ctx_sync(lm->ctx);
    mt_free(z);
    return s;
}

mt_status mt_lm_lora_add(mt_lm *lm, const mt_lm_lora_opts *o) {
    llama_lora *lo = &lm->lora;
    if (lo->on) return mt_fail(MT_ERR_ARG, "mt_lm_lora_add: the model has LoRA already");
    if (o->r < 1 || !(o->alpha >= 0) || !(o->dropout >= 0 && o->dropout < 1))
        return mt_fail(MT_ERR_CONFIG,
                       "LoRA: r %d, lora_alpha %g, lora_dropout %g: expected r >= 1, alpha >= 0, "
                       "0 <= dropout < 1",
                       o->r, (double)o->alpha, (double)o->dropout);
    unsigned mask;
    MT_TRY(parse_targets(o->targets, &mask));
    const int64_t L = lm->cfg.num_hidden_layers;
    lo->index = mt_alloc((size_t)(L * LLAMA_N_PROJ) * sizeof *lo->index, "LoRA index");
    if (!lo->index) return MT_ERR_NOMEM;
    const int n0 = lm->P.n;
    const size_t t0 = lm->P.n_train;
    char name[112];
    mt_status s = MT_OK;
    for (int64_t l = 0; l < L && s == MT_OK; l++)
        for (int j = 0; j < LLAMA_N_PROJ && s == MT_OK; j++) {
            lo->index[l * LLAMA_N_PROJ + j] = -1;
            if (!(mask & (1u << j))) continue;
            const mt_tensor *w = proj_weight(lm, l, j); /* (out, in) */
            lo->index[l * LLAMA_N_PROJ + j] = lm->P.n;
            snprintf(name, sizeof name, "base_model.model.model.layers.%lld.%s.%s.lora_A.weight",
                     (long long)l, proj_parent[j], proj_name[j]);
            s = append(lm, name, o->r, w->shape[1]);
            snprintf(name, sizeof name, "base_model.model.model.layers.%lld.%s.%s.lora_B.weight",
                     (long long)l, proj_parent[j], proj_name[j]);
            if (s == MT_OK) s = append(lm, name, w->shape[0], o->r);
        }
    const int64_t n = (int64_t)lm->P.n_train;
    if (s == MT_OK) s = mt_tensor_alloc(lm->ctx, &lo->t_params, MT_F32, 1, &n);
    if (s == MT_OK) s = mt_tensor_alloc(lm->ctx, &lo->t_grads, MT_F32, 1, &n);
    if (s != MT_OK) {
        mt_tensor_free(lm->ctx, &lo->t_params);
        mt_tensor_free(lm->ctx, &lo->t_grads);
        mt_free(lo->index);
        lo->index = NULL;
        lm->P.n = n0, lm->P.n_train = t0;
        return s;
    }
    lm->P.params = lo->t_params.data;
    lm->P.grads = lo->t_grads.data;
    lo->on = true;
    lo->opts = *o;
    lo->mask = mask;
    targets_string(mask, lo->targets, sizeof lo->targets);
    lo->opts.targets = lo->targets;
    snprintf(lo->base_model, sizeof lo->base_model, "%s", o->base_model ? o->base_model : "");
    lo->opts.base_model = lo->base_model;
    if (lo->opts.alpha == 0) lo->opts.alpha = (float)o->r;
    lo->scale = o->rslora ? lo->opts.alpha / sqrtf((float)o->r) : lo->opts.alpha / (float)o->r;
    /* the table grew: the staging buffer (other devices) must hold the largest entry */
    if (lm->ctx->device != MT_CPU) {
        size_t most = lm->stage_n;
        for (int i = n0; i < lm->P.n; i++)
            if ((size_t)lm->P.p[i].numel > most) most = (size_t)lm->P.p[i].numel;
        if (most > lm->stage_n) {
            float *st = mt_realloc(lm->stage, most, sizeof *st, "weight staging buffer");
            if (!st) return MT_ERR_NOMEM;
            lm->stage = st, lm->stage_n = most;
        }
    }
    lm->acts.train = false; /* a forward from before has no LoRA scratch: no backward of it */
    MT_TRY(zero_grads(lm));
    return init_entries(lm, o->seed);
}

mt_status mt_lm_zero_grads(mt_lm *lm) {
    return lm->lora.on ? zero_grads(lm) : MT_OK;
}

void llama_lora_free(mt_lm *lm) {
    mt_tensor_free(lm->ctx, &lm->lora.t_params);
    mt_tensor_free(lm->ctx, &lm->lora.t_grads);
    mt_free(lm->lora.index);
    memset(&lm->lora, 0, sizeof lm->lora);
}

mt_status mt_lm_grad_get(mt_lm *lm, int i, float *dst) {
    if (i < 0 || i >= lm->P.n || !lm->P.p[i].trainable)
        return mt_fail(MT_ERR_ARG, "mt_lm_grad_get: %d is not a trainable table entry", i);
    const mt_param *p = &lm->P.p[i];
    mt_tensor d = mt_tensor_1d(lm->P.grads + p->offset, MT_F32, lm->ctx->device, p->numel);
    mt_tensor h = mt_tensor_1d(dst, MT_F32, MT_CPU, p->numel);
    MT_TRY(mt_tensor_copy(lm->ctx, &h, &d));
    return mt_ctx_sync(lm->ctx);
}

void mt_lm_lora_set_step(mt_lm *lm, uint64_t step) {
    lm->lora.step = step;
}

/* ---- forward and backward of a projection ---------------------------------------------------- */

static bool dropping(const mt_lm *lm) {
    return lm->acts.train && lm->lora.opts.dropout > 0;
}

/* The LoRA path's input: x, or drop(x) (into the scratch, its mask beside it) in training. */
static mt_status lora_input(mt_lm *lm, mt_ctx *ctx, int64_t l, int proj, const mt_tensor *x,
                            mt_tensor *xd, mt_tensor *mask) {
    *xd = *x;
    if (!dropping(lm)) return MT_OK;
    *xd = mt_tensor_view(lm->acts.lora_xd.data, MT_F32, x->device, 2, x->shape);
    *mask = mt_tensor_view(lm->acts.lora_mask.data, MT_U8, x->device, 2, x->shape);
    const uint64_t offset = (uint64_t)(l * LLAMA_N_PROJ + proj) << 40;
    return mt_dropout_fwd(ctx, lm->lora.opts.dropout, lm->lora.opts.seed,
                          DROP_STREAM ^ lm->lora.fwd_step, offset, x, xd, mask);
}

/* u or g: (N, r) for the rows of x */
static mt_tensor scratch(const mt_tensor *t, int64_t rows) {
    mt_tensor v = *t;
    v.shape[0] = rows;
    return v;
}

mt_status llama_proj_fwd(mt_lm *lm, mt_ctx *ctx, int64_t l, int proj, const mt_tensor *x,
                         const mt_tensor *w, bool acc, mt_tensor *y) {
    MT_TRY(mt_gemm(ctx, false, true, 1.0f, x, w, acc ? 1.0f : 0.0f, y)); /* (N,in) -> (N,out) */
    const int i = lora_a(lm, l, proj);
    if (i < 0) return MT_OK;
    mt_tensor a = entry(lm, lm->P.params, i), b = entry(lm, lm->P.params, i + 1);
    mt_tensor u = scratch(&lm->acts.lora_u, x->shape[0]), xd, mask;
    MT_TRY(lora_input(lm, ctx, l, proj, x, &xd, &mask));
    MT_TRY(mt_gemm(ctx, false, true, 1.0f, &xd, &a, 0.0f, &u));        /* (N,in) -> (N,r) */
    return mt_gemm(ctx, false, true, lm->lora.scale, &u, &b, 1.0f, y); /* (N,r) -> (N,out) */
}

mt_status llama_proj_bwd(mt_lm *lm, mt_ctx *ctx, int64_t l, int proj, const mt_tensor *x,
                         const mt_tensor *w, const mt_tensor *dy, bool acc, mt_tensor *dx) {
    MT_TRY(mt_gemm(ctx, false, false, 1.0f, dy, w, acc ? 1.0f : 0.0f, dx)); /* dy W: (N,in) */
    const int i = lora_a(lm, l, proj);
    if (i < 0) return MT_OK;
    const float sc = lm->lora.scale;
    mt_tensor a = entry(lm, lm->P.params, i), b = entry(lm, lm->P.params, i + 1);
    mt_tensor da = entry(lm, lm->P.grads, i), db = entry(lm, lm->P.grads, i + 1);
    mt_tensor u = scratch(&lm->acts.lora_u, x->shape[0]);
    mt_tensor g = scratch(&lm->acts.lora_g, x->shape[0]);
    mt_tensor xd, mask;
    MT_TRY(lora_input(lm, ctx, l, proj, x, &xd, &mask));        /* the forward's mask again */
    MT_TRY(mt_gemm(ctx, false, true, 1.0f, &xd, &a, 0.0f, &u)); /* u = xd A^T (N,r) */
    MT_TRY(mt_gemm(ctx, true, false, sc, dy, &u, 1.0f, &db));   /* dB += sc dy^T u (out,r) */
    MT_TRY(mt_gemm(ctx, false, false, 1.0f, dy, &b, 0.0f, &g)); /* g = dy B (N,r) */
    MT_TRY(mt_gemm(ctx, true, false, sc, &g, &xd, 1.0f, &da));  /* dA += sc g^T xd (r,in) */
    if (!dropping(lm)) return mt_gemm(ctx, false, false, sc, &g, &a, 1.0f, dx); /* dx += sc g A */
    /* through the dropout: dx += drop'(sc g A), in xd's slot (xd is no longer needed) */
    MT_TRY(mt_gemm(ctx, false, false, sc, &g, &a, 0.0f, &xd));
    MT_TRY(mt_dropout_bwd(ctx, lm->lora.opts.dropout, &mask, &xd, &xd));
    return mt_axpy(ctx, 1.0f, &xd, dx);
}

mt_status llama_lora_ready(mt_lm *lm, int64_t l, mt_grad_ready_fn ready, void *user) {
    if (!ready) return MT_OK;
    for (int j = LLAMA_N_PROJ - 1; j >= 0; j--) {
        const int i = lora_a(lm, l, j);
        if (i < 0) continue;
        for (int k = i + 1; k >= i; k--)
            MT_TRY(ready(user, lm->P.p[k].offset, (size_t)lm->P.p[k].numel));
    }
    return MT_OK;
}
