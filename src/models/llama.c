/* The Llama forward (lm.h: mt_lm_forward), one function per block so that a backward can run the
 * same blocks in reverse:
 *
 *     ids -> embed -> [attn_block -> mlp_block] x L -> head -> logits
 *
 * Every tensor a forward touches is a view into one activation allocation, laid out by layout()
 * for (B, T): a training forward gives each layer its own llama_layer_acts (what the backward of
 * that layer reads), an inference forward lets all layers share one. The same function sizes the
 * allocation (mt_lm_plan), so the two cannot disagree.
 *
 * RoPE tables are computed on the host as transformers computes them: inv_freq in f32 (with the
 * linear or llama3 adjustment), angle = f32(position * inv_freq), then cos and sin of that f32
 * angle, and copied to the device once for the longest sequence seen. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "llama_internal.h"
#include "medtrain/mem.h"
#include "medtrain/ops.h"

#define ALIGN 64

/* ---- RoPE ------------------------------------------------------------------------------------ */

/* transformers' _compute_default_rope_parameters / _linear_scaling / _llama3 (modeling_rope_utils),
 * in the same f32 arithmetic. */
void llama_inv_freq(const mt_lm_config *c, float *inv) {
    const int64_t half = c->head_dim / 2;
    const float base = (float)c->rope_theta, dim = (float)c->head_dim;
    for (int64_t i = 0; i < half; i++) inv[i] = 1.0f / powf(base, (float)(2 * i) / dim);
    if (c->rope_type == MT_LM_ROPE_LINEAR) {
        for (int64_t i = 0; i < half; i++) inv[i] /= (float)c->rope_factor;
    } else if (c->rope_type == MT_LM_ROPE_LLAMA3) {
        const float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor;
        const float hi = (float)c->rope_high_freq_factor;
        const float old = (float)c->rope_original_max_positions;
        const float low_wavelen = (float)(c->rope_original_max_positions / c->rope_low_freq_factor);
        const float high_wavelen =
            (float)(c->rope_original_max_positions / c->rope_high_freq_factor);
        for (int64_t i = 0; i < half; i++) {
            const float wavelen = (float)(2 * M_PI) / inv[i];
            /* long wavelengths are divided by factor, short ones kept, the band between smoothed */
            const float scaled = wavelen > low_wavelen ? inv[i] / factor : inv[i];
            const float smooth = (old / wavelen - lo) / (hi - lo);
            const float smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
            const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
            inv[i] = medium ? smoothed : scaled;
        }
    }
}

/* cos and sin (len, D/2) for positions 0..len-1 on the model's device. */
static mt_status ensure_rope(mt_lm *lm, int64_t len) {
    if (len <= lm->rope_len) return MT_OK;
    const int64_t half = lm->cfg.head_dim / 2;
    mt_tensor_free(lm->ctx, &lm->rope_cos);
    mt_tensor_free(lm->ctx, &lm->rope_sin);
    lm->rope_len = 0;
    float *inv = mt_alloc((size_t)half * sizeof(float), "RoPE frequencies");
    float *host = inv ? mt_alloc((size_t)(2 * len * half) * sizeof(float), "RoPE tables") : NULL;
    mt_status s = host ? MT_OK : MT_ERR_NOMEM;
    if (s == MT_OK) {
        llama_inv_freq(&lm->cfg, inv);
        float *cs = host, *sn = host + len * half;
        for (int64_t t = 0; t < len; t++)
            for (int64_t i = 0; i < half; i++) {
                const float angle = (float)t * inv[i];
                cs[t * half + i] = (float)cos((double)angle);
                sn[t * half + i] = (float)sin((double)angle);
            }
        const int64_t shape[] = {len, half};
        s = mt_tensor_alloc(lm->ctx, &lm->rope_cos, MT_F32, 2, shape);
        if (s == MT_OK) s = mt_tensor_alloc(lm->ctx, &lm->rope_sin, MT_F32, 2, shape);
        mt_tensor hc = mt_tensor_2d(cs, MT_F32, MT_CPU, len, half);
        mt_tensor hs = mt_tensor_2d(sn, MT_F32, MT_CPU, len, half);
        if (s == MT_OK) s = mt_tensor_copy(lm->ctx, &lm->rope_cos, &hc);
        if (s == MT_OK) s = mt_tensor_copy(lm->ctx, &lm->rope_sin, &hs);
        if (s == MT_OK) s = mt_ctx_sync(lm->ctx);
    }
    mt_free(inv);
    mt_free(host);
    if (s != MT_OK) return s;
    lm->rope_len = len;
    return MT_OK;
}

/* ---- activation memory ----------------------------------------------------------------------- */

typedef struct bump {
    unsigned char *base; /* NULL while sizing */
    size_t at;
    mt_device dev;
} bump;

static mt_tensor take(bump *b, mt_dtype dtype, int ndim, const int64_t *shape) {
    mt_tensor t = mt_tensor_view(NULL, dtype, b->dev, ndim, shape);
    b->at = (b->at + ALIGN - 1) / ALIGN * ALIGN;
    t.data = b->base ? b->base + b->at : NULL;
    b->at += mt_tensor_bytes(&t);
    return t;
}

#define TAKE(b, dtype, ...)                                                                        \
    take(b, dtype, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),                      \
         (int64_t[]){__VA_ARGS__})

static void layout_layer(bump *b, const mt_lm_config *c, int64_t B, int64_t T,
                         llama_layer_acts *la) {
    const int64_t N = B * T, C = c->hidden_size, D = c->head_dim, I = c->intermediate_size;
    const int64_t hq = c->num_attention_heads, hkv = c->num_key_value_heads;
    la->x = TAKE(b, MT_F32, N, C);
    la->h1 = TAKE(b, MT_F32, N, C);
    la->rstd1 = TAKE(b, MT_F32, N);
    la->q = TAKE(b, MT_F32, B, T, hq, D);
    la->k = TAKE(b, MT_F32, B, T, hkv, D);
    la->v = TAKE(b, MT_F32, B, T, hkv, D);
    la->a = TAKE(b, MT_F32, B, T, hq, D);
    la->lse = TAKE(b, MT_F32, B, hq, T);
    la->x2 = TAKE(b, MT_F32, N, C);
    la->h2 = TAKE(b, MT_F32, N, C);
    la->rstd2 = TAKE(b, MT_F32, N);
    la->gate = TAKE(b, MT_F32, N, I);
    la->up = TAKE(b, MT_F32, N, I);
    la->s = TAKE(b, MT_F32, N, I);
}

/* Lays out a forward of (B, T) from base (NULL: only counts); returns the bytes. layers (may be
 * NULL while counting) receives num_hidden_layers entries. */
static size_t layout(const mt_lm *lm, int64_t B, int64_t T, bool train, bool last_only,
                     unsigned char *base, llama_layer_acts *layers, llama_acts *A) {
    const mt_lm_config *c = &lm->cfg;
    const int64_t N = B * T, C = c->hidden_size, R = last_only ? B : N;
    bump b = {.base = base, .dev = lm->ctx->device};
    memset(A, 0, sizeof *A);
    A->B = B, A->T = T, A->train = train, A->last_only = last_only;
    A->layer = layers;
    A->ids = TAKE(&b, MT_I32, N);
    llama_layer_acts one;
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        if (l == 0 || train) layout_layer(&b, c, B, T, &one);
        if (layers) layers[l] = one;
    }
    A->xf = TAKE(&b, MT_F32, N, C);
    if (last_only) A->xl = TAKE(&b, MT_F32, B, C);
    A->hf = TAKE(&b, MT_F32, R, C);
    A->rstdf = TAKE(&b, MT_F32, R);
    if (lm->lora.on) {
        A->lora_u = TAKE(&b, MT_F32, N, (int64_t)lm->lora.opts.r);
        A->lora_g = TAKE(&b, MT_F32, N, (int64_t)lm->lora.opts.r);
        if (train && lm->lora.opts.dropout > 0) {
            const int64_t q = c->num_attention_heads * c->head_dim, I = c->intermediate_size;
            const int64_t widest = I > q ? (I > C ? I : C) : (q > C ? q : C);
            A->lora_xd = TAKE(&b, MT_F32, N, widest);
            A->lora_mask = TAKE(&b, MT_U8, N, widest);
        }
    }
    if (train && !last_only) {
        const int64_t I = c->intermediate_size, D = c->head_dim;
        const int64_t hq = c->num_attention_heads, hkv = c->num_key_value_heads;
        A->dx = TAKE(&b, MT_F32, N, C);
        A->dh = TAKE(&b, MT_F32, N, C);
        A->dgate = TAKE(&b, MT_F32, N, I);
        A->dup = TAKE(&b, MT_F32, N, I);
        A->da = TAKE(&b, MT_F32, B, T, hq, D);
        A->dq = TAKE(&b, MT_F32, B, T, hq, D);
        A->dk = TAKE(&b, MT_F32, B, T, hkv, D);
        A->dv = TAKE(&b, MT_F32, B, T, hkv, D);
    }
    return (b.at + ALIGN - 1) / ALIGN * ALIGN;
}

size_t mt_lm_plan(const mt_lm *lm, int64_t batch, int64_t seq, bool train, bool last_only) {
    llama_acts A;
    return layout(lm, batch, seq, train, last_only, NULL, NULL, &A);
}

size_t mt_lm_activation_bytes(const mt_lm *lm) {
    return lm->act_cap;
}

static mt_status ensure_acts(mt_lm *lm, size_t bytes) {
    if (!lm->layer_acts) {
        lm->layer_acts = mt_calloc((size_t)lm->cfg.num_hidden_layers, sizeof *lm->layer_acts,
                                   "layer activation views");
        if (!lm->layer_acts) return MT_ERR_NOMEM;
    }
    if (bytes <= lm->act_cap) return MT_OK;
    mt_tensor_free(lm->ctx, &lm->act);
    lm->act_cap = 0;
    MT_TRY(mt_tensor_alloc(lm->ctx, &lm->act, MT_U8, 1, (int64_t[]){(int64_t)bytes}));
    lm->act_cap = bytes;
    return MT_OK;
}

/* ---- blocks ---------------------------------------------------------------------------------- */

/* t seen as (rows, numel/rows): the GEMM view of a (B,T,H,D) activation. */
static mt_tensor rows2d(const mt_tensor *t, int64_t rows) {
    mt_tensor v = *t;
    v.ndim = 2;
    v.shape[0] = rows;
    v.shape[1] = mt_tensor_numel(t) / rows;
    v.shape[2] = v.shape[3] = 0;
    return v;
}

/* y (N, out) = x (N, in) W^T for a Hugging Face (out, in) weight, plus y's old value when acc. */
static mt_status linear(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, bool acc,
                        mt_tensor *y) {
    return mt_gemm(ctx, false, true, 1.0f, x, w, acc ? 1.0f : 0.0f, y);
}

/* x2 = x + o_proj(attention(rope(q), rope(k), v)) with q, k, v projections of RMSNorm(x). */
static mt_status attn_block(mt_lm *lm, mt_ctx *ctx, int64_t l, llama_layer_acts *la,
                            const mt_tensor *cos, const mt_tensor *sin) {
    const llama_layer *L = &lm->layers[l];
    const mt_lm_config *c = &lm->cfg;
    const int64_t N = la->x.shape[0];
    mt_tensor q = rows2d(&la->q, N), k = rows2d(&la->k, N), v = rows2d(&la->v, N);
    mt_tensor a = rows2d(&la->a, N);
    MT_TRY(mt_rmsnorm_fwd(ctx, &la->x, &L->in_norm, (float)c->rms_norm_eps, &la->h1, &la->rstd1));
    MT_TRY(llama_proj_fwd(lm, ctx, l, LLAMA_Q, &la->h1, &L->wq, false, &q)); /* -> (N,Hq*D) */
    MT_TRY(llama_proj_fwd(lm, ctx, l, LLAMA_K, &la->h1, &L->wk, false, &k)); /* -> (N,Hkv*D) */
    MT_TRY(llama_proj_fwd(lm, ctx, l, LLAMA_V, &la->h1, &L->wv, false, &v));
    MT_TRY(mt_rope(ctx, &la->q, cos, sin, false, &la->q));
    MT_TRY(mt_rope(ctx, &la->k, cos, sin, false, &la->k));
    const float scale = (float)(1.0 / sqrt((double)c->head_dim));
    MT_TRY(mt_attention_fwd(ctx, &la->q, &la->k, &la->v, scale, true, &la->a, &la->lse));
    MT_TRY(mt_tensor_copy(ctx, &la->x2, &la->x));
    return llama_proj_fwd(lm, ctx, l, LLAMA_O, &a, &L->wo, true, &la->x2); /* -> (N,C), added */
}

/* out = x2 + down_proj(silu(gate_proj(h2)) * up_proj(h2)), h2 = RMSNorm(x2). out may be x (the
 * next layer's input in an inference forward shares the slot). */
static mt_status mlp_block(mt_lm *lm, mt_ctx *ctx, int64_t l, llama_layer_acts *la,
                           mt_tensor *out) {
    const llama_layer *L = &lm->layers[l];
    MT_TRY(mt_rmsnorm_fwd(ctx, &la->x2, &L->post_norm, (float)lm->cfg.rms_norm_eps, &la->h2,
                          &la->rstd2));
    MT_TRY(
        llama_proj_fwd(lm, ctx, l, LLAMA_GATE, &la->h2, &L->wgate, false, &la->gate)); /* ->(N,I) */
    MT_TRY(llama_proj_fwd(lm, ctx, l, LLAMA_UP, &la->h2, &L->wup, false, &la->up));
    MT_TRY(mt_swiglu_fwd(ctx, &la->gate, &la->up, &la->s));
    MT_TRY(mt_tensor_copy(ctx, out, &la->x2));
    return llama_proj_fwd(lm, ctx, l, LLAMA_DOWN, &la->s, &L->wdown, true,
                          out); /* ->(N,C), added */
}

/* logits = lm_head(RMSNorm(xf)) over every row, or over each sequence's last row. */
static mt_status head(const mt_lm *lm, mt_ctx *ctx, llama_acts *A, mt_tensor *logits) {
    const int64_t C = lm->cfg.hidden_size;
    const mt_tensor *src = &A->xf;
    if (A->last_only) {
        const size_t row = (size_t)C * sizeof(float);
        for (int64_t b = 0; b < A->B; b++) {
            mt_tensor from = mt_tensor_1d((char *)A->xf.data + (size_t)(b * A->T + A->T - 1) * row,
                                          MT_F32, A->xf.device, C);
            mt_tensor to =
                mt_tensor_1d((char *)A->xl.data + (size_t)b * row, MT_F32, A->xl.device, C);
            MT_TRY(mt_tensor_copy(ctx, &to, &from));
        }
        src = &A->xl;
    }
    MT_TRY(
        mt_rmsnorm_fwd(ctx, src, &lm->final_norm, (float)lm->cfg.rms_norm_eps, &A->hf, &A->rstdf));
    mt_tensor out = rows2d(logits, A->hf.shape[0]);
    return linear(ctx, &A->hf, &lm->lm_head, false, &out); /* (R,C) -> (R,V) */
}

/* ---- the forward ----------------------------------------------------------------------------- */

static mt_status check_forward(const mt_lm *lm, const mt_ctx *ctx, const mt_tensor *ids,
                               const mt_tensor *logits, bool *last_only) {
    char a[96], b[96];
    if (ctx->device != lm->ctx->device)
        return mt_fail(MT_ERR_ARG, "lm forward: the context runs on %s, the model lives on %s",
                       mt_device_name(ctx->device), mt_device_name(lm->ctx->device));
    if (ids->ndim != 2 || ids->dtype != MT_I32 || ids->shape[0] < 1 || ids->shape[1] < 1)
        return mt_fail(MT_ERR_SHAPE, "lm forward: ids %s: expected (B,T) i32 with B, T >= 1",
                       mt_tensor_describe(ids, a, sizeof a));
    const int64_t B = ids->shape[0], T = ids->shape[1], V = lm->cfg.vocab_size;
    *last_only = logits->ndim == 2;
    bool ok = logits->dtype == MT_F32 && logits->device == ctx->device && logits->data &&
              (*last_only ? logits->shape[0] == B && logits->shape[1] == V
                          : logits->ndim == 3 && logits->shape[0] == B && logits->shape[1] == T &&
                                logits->shape[2] == V);
    if (!ok)
        return mt_fail(MT_ERR_SHAPE,
                       "lm forward: logits %s for ids %s: expected [%lld,%lld,%lld] (every "
                       "position) or [%lld,%lld] (the last) f32 on %s",
                       mt_tensor_describe(logits, a, sizeof a),
                       mt_tensor_describe(ids, b, sizeof b), (long long)B, (long long)T,
                       (long long)V, (long long)B, (long long)V, mt_device_name(ctx->device));
    if (lm->cfg.sliding_window && T > lm->cfg.sliding_window)
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "lm forward: %lld tokens exceed Mistral's sliding_window %lld, which "
                       "medtrain does not apply (transformers would mask beyond it)",
                       (long long)T, (long long)lm->cfg.sliding_window);
    return MT_OK;
}

mt_status mt_lm_forward(mt_lm *lm, mt_ctx *ctx, const mt_tensor *ids, bool train,
                        mt_tensor *logits) {
    bool last_only = false;
    MT_TRY(check_forward(lm, ctx, ids, logits, &last_only));
    const int64_t B = ids->shape[0], T = ids->shape[1], L = lm->cfg.num_hidden_layers;
    MT_TRY(ensure_rope(lm, T));
    llama_acts *A = &lm->acts;
    MT_TRY(ensure_acts(lm, layout(lm, B, T, train, last_only, NULL, NULL, A)));
    layout(lm, B, T, train, last_only, lm->act.data, lm->layer_acts, A);
    lm->lora.fwd_step = lm->lora.step; /* the backward draws this forward's dropout masks */

    /* The first T rows of the tables: positions 0..T-1. */
    mt_tensor cos = lm->rope_cos, sin = lm->rope_sin;
    cos.shape[0] = sin.shape[0] = T;

    mt_tensor ids1 = mt_tensor_1d(ids->data, MT_I32, ids->device, B * T);
    MT_TRY(mt_tensor_copy(ctx, &A->ids, &ids1));
    MT_TRY(mt_embedding_fwd(ctx, &lm->embed, &A->ids, &A->layer[0].x)); /* (N) -> (N,C) */
    for (int64_t l = 0; l < L; l++) {
        llama_layer_acts *la = &A->layer[l];
        mt_tensor *out = l + 1 < L ? &A->layer[l + 1].x : &A->xf;
        mt_status s = attn_block(lm, ctx, l, la, &cos, &sin);
        if (s == MT_OK) s = mlp_block(lm, ctx, l, la, out);
        if (s != MT_OK) return mt_error_wrap(s, "lm forward, layer %lld: ", (long long)l);
    }
    return head(lm, ctx, A, logits);
}

/* ---- the backward ---------------------------------------------------------------------------- */

/* Layer l in reverse. On entry A->dx holds d loss / d (the layer's output); on return, d loss /
 * d (its input x). The residual adds make dx flow straight through; each block adds its own. */
static mt_status mlp_block_bwd(mt_lm *lm, mt_ctx *ctx, int64_t l, llama_layer_acts *la,
                               llama_acts *A) {
    const llama_layer *L = &lm->layers[l];
    /* out = x2 + s Wdown^T: ds (N,I) into dgate's slot, then SwiGLU's backward in place */
    MT_TRY(llama_proj_bwd(lm, ctx, l, LLAMA_DOWN, &la->s, &L->wdown, &A->dx, false, &A->dgate));
    MT_TRY(mt_swiglu_bwd(ctx, &la->gate, &la->up, &A->dgate, &A->dgate, &A->dup));
    /* h2 feeds gate and up: dh2 (N,C) = dgate Wgate + dup Wup (+ LoRA) */
    MT_TRY(llama_proj_bwd(lm, ctx, l, LLAMA_GATE, &la->h2, &L->wgate, &A->dgate, false, &A->dh));
    MT_TRY(llama_proj_bwd(lm, ctx, l, LLAMA_UP, &la->h2, &L->wup, &A->dup, true, &A->dh));
    MT_TRY(mt_rmsnorm_bwd(ctx, &la->x2, &L->post_norm, &la->rstd2, &A->dh, &A->dh, NULL));
    return mt_axpy(ctx, 1.0f, &A->dh, &A->dx); /* dx2 = dout + through the MLP */
}

static mt_status attn_block_bwd(mt_lm *lm, mt_ctx *ctx, int64_t l, llama_layer_acts *la,
                                llama_acts *A, const mt_tensor *cos, const mt_tensor *sin) {
    const mt_lm_config *c = &lm->cfg;
    const llama_layer *L = &lm->layers[l];
    const int64_t N = la->x.shape[0];
    mt_tensor a = rows2d(&la->a, N), da = rows2d(&A->da, N);
    mt_tensor dq = rows2d(&A->dq, N), dk = rows2d(&A->dk, N), dv = rows2d(&A->dv, N);
    /* x2 = x + a Wo^T */
    MT_TRY(llama_proj_bwd(lm, ctx, l, LLAMA_O, &a, &L->wo, &A->dx, false, &da));
    const float scale = (float)(1.0 / sqrt((double)c->head_dim));
    MT_TRY(mt_attention_bwd(ctx, &la->q, &la->k, &la->v, &la->a, &la->lse, &A->da, scale, true,
                            &A->dq, &A->dk, &A->dv));
    /* q and k were rotated after the projections: rotate their gradients back */
    MT_TRY(mt_rope(ctx, &A->dq, cos, sin, true, &A->dq));
    MT_TRY(mt_rope(ctx, &A->dk, cos, sin, true, &A->dk));
    MT_TRY(llama_proj_bwd(lm, ctx, l, LLAMA_Q, &la->h1, &L->wq, &dq, false, &A->dh));
    MT_TRY(llama_proj_bwd(lm, ctx, l, LLAMA_K, &la->h1, &L->wk, &dk, true, &A->dh));
    MT_TRY(llama_proj_bwd(lm, ctx, l, LLAMA_V, &la->h1, &L->wv, &dv, true, &A->dh));
    MT_TRY(mt_rmsnorm_bwd(ctx, &la->x, &L->in_norm, &la->rstd1, &A->dh, &A->dh, NULL));
    return mt_axpy(ctx, 1.0f, &A->dh, &A->dx);
}

mt_status mt_lm_backward(mt_lm *lm, mt_ctx *ctx, const mt_tensor *dlogits, mt_grad_ready_fn ready,
                         void *user) {
    llama_acts *A = &lm->acts;
    char d[96];
    if (!lm->lora.on)
        return mt_fail(MT_ERR_ARG, "lm backward: the model has no trainable tensors (add LoRA "
                                   "with mt_lm_lora_add or mt_lm_lora_load first)");
    if (!lm->layer_acts || !A->train || A->last_only)
        return mt_fail(MT_ERR_ARG, "lm backward: needs a training forward of every position "
                                   "(mt_lm_forward with train and (B,T,V) logits) first");
    if (ctx->device != lm->ctx->device)
        return mt_fail(MT_ERR_ARG, "lm backward: the context runs on %s, the model lives on %s",
                       mt_device_name(ctx->device), mt_device_name(lm->ctx->device));
    const int64_t B = A->B, T = A->T, V = lm->cfg.vocab_size, L = lm->cfg.num_hidden_layers;
    if (dlogits->ndim != 3 || dlogits->dtype != MT_F32 || dlogits->device != ctx->device ||
        dlogits->shape[0] != B || dlogits->shape[1] != T || dlogits->shape[2] != V)
        return mt_fail(MT_ERR_SHAPE, "lm backward: dlogits %s: expected [%lld,%lld,%lld] f32 on %s",
                       mt_tensor_describe(dlogits, d, sizeof d), (long long)B, (long long)T,
                       (long long)V, mt_device_name(ctx->device));
    mt_tensor cos = lm->rope_cos, sin = lm->rope_sin;
    cos.shape[0] = sin.shape[0] = T;
    /* logits = hf lm_head^T, hf = RMSNorm(xf): dhf (N,C) = dlogits lm_head, then the norm */
    mt_tensor dl = rows2d(dlogits, B * T);
    MT_TRY(mt_gemm(ctx, false, false, 1.0f, &dl, &lm->lm_head, 0.0f, &A->dx));
    MT_TRY(mt_rmsnorm_bwd(ctx, &A->xf, &lm->final_norm, &A->rstdf, &A->dx, &A->dx, NULL));
    for (int64_t l = L - 1; l >= 0; l--) {
        llama_layer_acts *la = &A->layer[l];
        mt_status s = mlp_block_bwd(lm, ctx, l, la, A);
        if (s == MT_OK) s = attn_block_bwd(lm, ctx, l, la, A, &cos, &sin);
        if (s == MT_OK) s = llama_lora_ready(lm, l, ready, user);
        if (s != MT_OK) return mt_error_wrap(s, "lm backward, layer %lld: ", (long long)l);
    }
    /* the embedding is frozen: dx stops here */
    return MT_OK;
}

void mt_lm_free(mt_lm *lm) {
    if (!lm) return;
    mt_tensor_free(lm->ctx, &lm->t_buffers);
    mt_tensor_free(lm->ctx, &lm->act);
    mt_tensor_free(lm->ctx, &lm->rope_cos);
    mt_tensor_free(lm->ctx, &lm->rope_sin);
    mt_free(lm->layers);
    mt_free(lm->layer_acts);
    mt_free(lm->stage);
    llama_lora_free(lm);
    mt_free(lm->P.p);
    mt_free(lm);
}
