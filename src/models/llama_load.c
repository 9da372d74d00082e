/* Reading a Hugging Face model directory into a Llama model (lm.h: mt_lm_load).
 *
 * 1. config.json -> mt_lm_config (llama_config.c) -> the parameter table, in transformers'
 *    state_dict order, every tensor under its Hugging Face name and shape.
 * 2. The weight files: model.safetensors, or (when it is absent, as transformers looks) the shards
 *    that model.safetensors.index.json's weight_map names, each memory-mapped once.
 * 3. Every name sorted into loaded, missing, unexpected and mis-shaped; anything but "loaded" is
 *    an error listing the names (strict, as torch's load_state_dict). Only then is memory
 *    allocated and anything converted, so a failed load costs no device memory.
 * 4. Each tensor converted to f32 (F32, BF16, F16, F64) straight into the flat buffer on the CPU,
 *    or through a host staging buffer onto another device. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama_internal.h"
#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/safetensors.h"

#define LIST_IN_ERROR 8 /* names shown per category in an error */

/* ---- the table ------------------------------------------------------------------------------- */

static mt_status add(mt_lm *lm, int *cap, const char *name, int ndim, int64_t d0, int64_t d1) {
    mt_params *P = &lm->P;
    if (P->n == *cap) {
        int n = *cap ? 2 * *cap : 64;
        mt_param *p = mt_realloc(P->p, (size_t)n, sizeof *p, "parameter table");
        if (!p) return MT_ERR_NOMEM;
        P->p = p, *cap = n;
    }
    mt_param *p = &P->p[P->n];
    memset(p, 0, sizeof *p);
    int len = snprintf(p->name, sizeof p->name, "%s", name);
    if (len < 0 || (size_t)len >= sizeof p->name)
        return mt_fail(MT_ERR_INTERNAL, "parameter name '%s' is too long", name);
    p->ndim = ndim;
    p->shape[0] = d0, p->shape[1] = d1;
    p->numel = ndim == 1 ? d0 : d0 * d1;
    p->trainable = false; /* base weights are frozen; LoRA adds the trainable tensors */
    p->decay = ndim == 2; /* were they trained: not the norms */
    p->file_dtype = MT_F32;
    p->offset = P->n_buf;
    P->n_buf += (size_t)p->numel;
    P->n++;
    return MT_OK;
}

mt_status llama_build_table(mt_lm *lm) {
    const mt_lm_config *c = &lm->cfg;
    const int64_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const int64_t q = c->num_attention_heads * c->head_dim,
                  kv = c->num_key_value_heads * c->head_dim;
    int cap = 0;
    char n[112];
    MT_TRY(add(lm, &cap, "model.embed_tokens.weight", 2, V, C));
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        /* LlamaDecoderLayer registers self_attn, mlp, input_layernorm, post_attention_layernorm */
        static const char *const leaf[] = {
            "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
            "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
            "mlp.down_proj",    "input_layernorm",  "post_attention_layernorm"};
        const int64_t shape[][2] = {{q, C}, {kv, C}, {kv, C}, {C, q}, {I, C},
                                    {I, C}, {C, I},  {C, 0},  {C, 0}};
        for (int i = 0; i < 9; i++) {
            snprintf(n, sizeof n, "model.layers.%lld.%s.weight", (long long)l, leaf[i]);
            MT_TRY(add(lm, &cap, n, shape[i][1] ? 2 : 1, shape[i][0], shape[i][1]));
        }
    }
    MT_TRY(add(lm, &cap, "model.norm.weight", 1, C, 0));
    if (!c->tie_word_embeddings) MT_TRY(add(lm, &cap, "lm_head.weight", 2, V, C));
    return MT_OK;
}

static mt_tensor weight_view(mt_lm *lm, int i) {
    const mt_param *p = &lm->P.p[i];
    float *flat = p->trainable ? lm->P.params : lm->P.buffers; /* LoRA's or the base weights */
    float *base = flat ? flat + p->offset : NULL;
    return mt_tensor_view(base, MT_F32, lm->ctx->device, p->ndim, p->shape);
}

/* The views follow the table's order (llama_build_table). */
void llama_bind_weights(mt_lm *lm) {
    int at = 0;
    lm->embed = weight_view(lm, at++);
    for (int64_t l = 0; l < lm->cfg.num_hidden_layers; l++) {
        llama_layer *L = &lm->layers[l];
        mt_tensor *order[] = {&L->wq,  &L->wk,    &L->wv,      &L->wo,       &L->wgate,
                              &L->wup, &L->wdown, &L->in_norm, &L->post_norm};
        for (int i = 0; i < 9; i++) *order[i] = weight_view(lm, at++);
    }
    lm->final_norm = weight_view(lm, at++);
    lm->lm_head = lm->cfg.tie_word_embeddings ? lm->embed : weight_view(lm, at++);
}

/* ---- the weight files ------------------------------------------------------------------------ */

typedef struct wsrc {
    const char *name;
    int file;
    const mt_st_tensor *t;
    bool used;
} wsrc;

typedef struct wfiles {
    char where[1100]; /* the index or the single file, for messages */
    mt_st_file **files;
    char **names; /* file names as in the index */
    int n_files;
    wsrc *src; /* sorted by name */
    int n_src;
    cJSON *index;
} wfiles;

static void wfiles_free(wfiles *w) {
    for (int i = 0; i < w->n_files; i++) {
        mt_st_close(w->files[i]);
        mt_free(w->names[i]);
    }
    mt_free(w->files);
    mt_free(w->names);
    mt_free(w->src);
    cJSON_Delete(w->index);
    memset(w, 0, sizeof *w);
}

static int src_cmp(const void *a, const void *b) {
    return strcmp(((const wsrc *)a)->name, ((const wsrc *)b)->name);
}

static wsrc *src_find(const wfiles *w, const char *name) {
    wsrc key = {.name = name};
    return bsearch(&key, w->src, (size_t)w->n_src, sizeof key, src_cmp);
}

static mt_status add_file(wfiles *w, const char *name, int *index) {
    for (int i = 0; i < w->n_files; i++)
        if (!strcmp(w->names[i], name)) {
            *index = i;
            return MT_OK;
        }
    int n = w->n_files + 1;
    mt_st_file **f = mt_realloc(w->files, (size_t)n, sizeof *f, "shard list");
    if (f) w->files = f;
    char **nm = f ? mt_realloc(w->names, (size_t)n, sizeof *nm, "shard list") : NULL;
    if (nm) w->names = nm;
    char *copy = nm ? mt_strdup(name, "shard name") : NULL;
    if (!copy) return MT_ERR_NOMEM;
    w->files[w->n_files] = NULL;
    w->names[w->n_files] = copy;
    *index = w->n_files++;
    return MT_OK;
}

static mt_status open_single(wfiles *w, const char *path) {
    snprintf(w->where, sizeof w->where, "%s", path);
    int f;
    MT_TRY(add_file(w, "model.safetensors", &f));
    MT_TRY(mt_st_open(path, &w->files[f]));
    size_t n = mt_st_count(w->files[f]);
    w->src = mt_calloc(n ? n : 1, sizeof *w->src, "tensor list");
    if (!w->src) return MT_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const mt_st_tensor *t = mt_st_at(w->files[f], i);
        w->src[w->n_src++] = (wsrc){.name = t->name, .file = f, .t = t};
    }
    return MT_OK;
}

/* A shard file name from the index: a plain name inside the directory. */
static bool plain_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static mt_status open_index(wfiles *w, const char *dir, const char *path) {
    snprintf(w->where, sizeof w->where, "%s", path);
    MT_TRY(mt_json_read_file(path, &w->index));
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(w->index, "weight_map");
    if (!cJSON_IsObject(map))
        return mt_fail(MT_ERR_FORMAT, "%s: weight_map: %s", path,
                       map ? "expected an object (tensor name -> shard file)" : "missing");
    int n = cJSON_GetArraySize(map);
    w->src = mt_calloc(n ? (size_t)n : 1, sizeof *w->src, "tensor list");
    if (!w->src) return MT_ERR_NOMEM;
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e) || !plain_name(e->valuestring))
            return mt_fail(MT_ERR_FORMAT,
                           "%s: weight_map: '%s': expected the name of a shard file in the "
                           "directory",
                           path, e->string);
        int f;
        MT_TRY(add_file(w, e->valuestring, &f));
        w->src[w->n_src++] = (wsrc){.name = e->string, .file = f};
    }
    for (int i = 0; i < w->n_files; i++) {
        char shard[1100];
        snprintf(shard, sizeof shard, "%s/%s", dir, w->names[i]);
        if (!mt_path_exists(shard)) {
            int holds = 0;
            const char *first = NULL;
            for (int j = 0; j < w->n_src; j++)
                if (w->src[j].file == i && !holds++) first = w->src[j].name;
            return mt_fail(MT_ERR_IO,
                           "%s: weight_map: shard file %s (holding %s and %d more tensors) does "
                           "not exist",
                           path, shard, first, holds - 1);
        }
        MT_TRY(mt_st_open(shard, &w->files[i]));
    }
    for (int j = 0; j < w->n_src; j++) {
        wsrc *s = &w->src[j];
        s->t = mt_st_find(w->files[s->file], s->name);
        if (!s->t)
            return mt_fail(MT_ERR_FORMAT,
                           "%s: weight_map puts tensor '%s' in %s, which does not hold it", path,
                           s->name, w->names[s->file]);
    }
    return MT_OK;
}

static mt_status open_weights(wfiles *w, const char *dir) {
    char single[1100], index[1100], bin[1100];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    mt_status s;
    if (mt_path_exists(single))
        s = open_single(w, single);
    else if (mt_path_exists(index))
        s = open_index(w, dir, index);
    else {
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin", dir);
        bool torch_only = mt_path_exists(bin);
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin.index.json", dir);
        torch_only = torch_only || mt_path_exists(bin);
        if (torch_only)
            return mt_fail(MT_ERR_UNSUPPORTED,
                           "%s: the weights are pytorch_model.bin; medtrain reads safetensors "
                           "only (convert them, e.g. AutoModelForCausalLM.from_pretrained(dir)."
                           "save_pretrained(dir, safe_serialization=True))",
                           dir);
        return mt_fail(MT_ERR_IO,
                       "%s: no model.safetensors or model.safetensors.index.json in the model "
                       "directory",
                       dir);
    }
    if (s != MT_OK) return s;
    qsort(w->src, (size_t)w->n_src, sizeof *w->src, src_cmp);
    for (int j = 1; j < w->n_src; j++)
        if (!strcmp(w->src[j].name, w->src[j - 1].name))
            return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s' is listed twice", w->where,
                           w->src[j].name);
    return MT_OK;
}

/* ---- the strict check ------------------------------------------------------------------------ */

/* A message being built: categories of names, at most LIST_IN_ERROR each. */
typedef struct msg {
    char s[MT_ERROR_MAX - 64];
    size_t at;
} msg;

static void put(msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(msg *m, const char *fmt, ...) {
    if (m->at >= sizeof m->s) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(m->s + m->at, sizeof m->s - m->at, fmt, ap);
    va_end(ap);
    m->at = w < 0 ? sizeof m->s : m->at + (size_t)w;
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

static bool same_shape(const mt_param *p, const mt_st_tensor *t) {
    if (p->ndim != t->ndim) return false;
    for (int i = 0; i < p->ndim; i++)
        if (p->shape[i] != t->shape[i]) return false;
    return true;
}

/* Tensors transformers itself skips when loading a Llama. */
static bool ignored(const mt_lm *lm, const char *name) {
    const char *suffix = ".rotary_emb.inv_freq";
    size_t n = strlen(name), k = strlen(suffix);
    if (n >= k && !strcmp(name + n - k, suffix)) return true;
    return lm->cfg.tie_word_embeddings && !strcmp(name, "lm_head.weight");
}

static bool convertible(const mt_st_tensor *t) {
    return !strcmp(t->dtype_name, "F32") || !strcmp(t->dtype_name, "BF16") ||
           !strcmp(t->dtype_name, "F16") || !strcmp(t->dtype_name, "F64");
}

/* Resolves every table entry to its source (src[i]); fails listing what does not match. */
static mt_status check_names(mt_lm *lm, wfiles *w, const char *dir, const wsrc **src) {
    int n_missing = 0, n_unexpected = 0, n_shape = 0;
    msg missing = {0}, unexpected = {0}, shape = {0};
    for (int i = 0; i < lm->P.n; i++) {
        const mt_param *p = &lm->P.p[i];
        wsrc *s = src_find(w, p->name);
        src[i] = s;
        if (!s) {
            if (n_missing++ < LIST_IN_ERROR)
                put(&missing, "%s%s", n_missing > 1 ? ", " : "", p->name);
            continue;
        }
        s->used = true;
        if (!same_shape(p, s->t)) {
            char a[96], b[96];
            shape_str(s->t->ndim, s->t->shape, a, sizeof a);
            shape_str(p->ndim, p->shape, b, sizeof b);
            if (n_shape++ < LIST_IN_ERROR)
                put(&shape, "%s%s: file %s (in %s), model %s", n_shape > 1 ? "; " : "", p->name, a,
                    w->names[s->file], b);
        } else if (!convertible(s->t)) {
            return mt_fail(MT_ERR_UNSUPPORTED,
                           "%s: tensor '%s' is %s; medtrain reads F32, BF16, F16 and F64 weights "
                           "(not quantized checkpoints)",
                           mt_st_path(w->files[s->file]), p->name, s->t->dtype_name);
        }
    }
    for (int j = 0; j < w->n_src; j++)
        if (!w->src[j].used && !ignored(lm, w->src[j].name) && n_unexpected++ < LIST_IN_ERROR)
            put(&unexpected, "%s%s", n_unexpected > 1 ? ", " : "", w->src[j].name);
    if (!n_missing && !n_unexpected && !n_shape) return MT_OK;

    msg m = {0};
    put(&m, "%s: the weights do not match config.json (%s, %lld layers, hidden %lld)", dir,
        lm->cfg.architecture, (long long)lm->cfg.num_hidden_layers, (long long)lm->cfg.hidden_size);
    const char *what[] = {"missing", "unexpected", "with the wrong shape"};
    const int count[] = {n_missing, n_unexpected, n_shape};
    const msg *names[] = {&missing, &unexpected, &shape};
    for (int k = 0; k < 3; k++) {
        if (!count[k]) continue;
        put(&m, "; %d %s: %s", count[k], what[k], names[k]->s);
        if (count[k] > LIST_IN_ERROR) put(&m, " and %d more", count[k] - LIST_IN_ERROR);
    }
    return mt_fail(n_shape ? MT_ERR_SHAPE : MT_ERR_FORMAT, "%s (weights from %s)", m.s, w->where);
}

/* ---- conversion ------------------------------------------------------------------------------ */

static mt_status alloc_buffers(mt_lm *lm) {
    MT_TRY(mt_tensor_alloc(lm->ctx, &lm->t_buffers, MT_F32, 1, (int64_t[]){(int64_t)lm->P.n_buf}));
    lm->P.buffers = lm->t_buffers.data;
    lm->layers = mt_calloc((size_t)lm->cfg.num_hidden_layers, sizeof *lm->layers, "layer views");
    if (!lm->layers) return MT_ERR_NOMEM;
    if (lm->ctx->device != MT_CPU) {
        for (int i = 0; i < lm->P.n; i++)
            if ((size_t)lm->P.p[i].numel > lm->stage_n) lm->stage_n = (size_t)lm->P.p[i].numel;
        lm->stage = mt_alloc(lm->stage_n * sizeof(float), "weight staging buffer");
        if (!lm->stage) return MT_ERR_NOMEM;
    }
    llama_bind_weights(lm);
    return MT_OK;
}

static mt_status convert(mt_lm *lm, const wfiles *w, const wsrc *const *src) {
    for (int i = 0; i < lm->P.n; i++) {
        const mt_param *p = &lm->P.p[i];
        const wsrc *s = src[i];
        if (lm->ctx->device == MT_CPU) {
            MT_TRY(mt_st_read_f32(w->files[s->file], s->t, lm->P.buffers + p->offset));
        } else {
            MT_TRY(mt_st_read_f32(w->files[s->file], s->t, lm->stage));
            MT_TRY(mt_lm_param_set(lm, i, lm->stage));
        }
    }
    return MT_OK;
}

mt_status mt_lm_load(mt_ctx *ctx, const char *dir, mt_lm **out) {
    *out = NULL;
    if (!ctx || !ctx->backend)
        return mt_fail(MT_ERR_ARG, "mt_lm_load: the context is not initialised");
    mt_lm *lm = mt_calloc(1, sizeof *lm, "language model");
    if (!lm) return MT_ERR_NOMEM;
    lm->ctx = ctx;
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", dir);
    wfiles w = {0};
    const wsrc **src = NULL;
    mt_status s = mt_lm_config_read(path, &lm->cfg);
    if (s == MT_OK) s = llama_build_table(lm);
    if (s == MT_OK) s = open_weights(&w, dir);
    if (s == MT_OK) {
        src = mt_calloc((size_t)lm->P.n, sizeof *src, "tensor sources");
        s = src ? check_names(lm, &w, dir, src) : MT_ERR_NOMEM;
    }
    if (s == MT_OK) s = alloc_buffers(lm);
    if (s == MT_OK) s = convert(lm, &w, src);
    if (s == MT_OK) s = mt_ctx_sync(ctx);
    mt_free(src);
    wfiles_free(&w);
    if (s != MT_OK) {
        mt_lm_free(lm);
        return s;
    }
    *out = lm;
    return MT_OK;
}

/* ---- access ---------------------------------------------------------------------------------- */

const mt_lm_config *mt_lm_get_config(const mt_lm *lm) {
    return &lm->cfg;
}

mt_params *mt_lm_params(mt_lm *lm) {
    return &lm->P;
}

int mt_lm_find(const mt_lm *lm, const char *name) {
    for (int i = 0; i < lm->P.n; i++)
        if (!strcmp(lm->P.p[i].name, name)) return i;
    return -1;
}

static mt_status param_check(const mt_lm *lm, int i, const void *host, const char *fn) {
    if (i < 0 || i >= lm->P.n)
        return mt_fail(MT_ERR_ARG, "%s: no parameter %d (the table has %d)", fn, i, lm->P.n);
    if (!host) return mt_fail(MT_ERR_ARG, "%s: no host buffer for %s", fn, lm->P.p[i].name);
    return MT_OK;
}

mt_status mt_lm_param_get(mt_lm *lm, int i, float *dst) {
    MT_TRY(param_check(lm, i, dst, "mt_lm_param_get"));
    mt_tensor d = weight_view(lm, i);
    mt_tensor h = mt_tensor_1d(dst, MT_F32, MT_CPU, lm->P.p[i].numel);
    MT_TRY(mt_tensor_reshape(&d, 1, (int64_t[]){lm->P.p[i].numel}, &d));
    MT_TRY(mt_tensor_copy(lm->ctx, &h, &d));
    return mt_ctx_sync(lm->ctx);
}

mt_status mt_lm_param_set(mt_lm *lm, int i, const float *src) {
    MT_TRY(param_check(lm, i, src, "mt_lm_param_set"));
    mt_tensor d = weight_view(lm, i);
    mt_tensor h = mt_tensor_1d((void *)src, MT_F32, MT_CPU, lm->P.p[i].numel);
    MT_TRY(mt_tensor_reshape(&d, 1, (int64_t[]){lm->P.p[i].numel}, &d));
    MT_TRY(mt_tensor_copy(lm->ctx, &d, &h));
    return mt_ctx_sync(lm->ctx);
}
