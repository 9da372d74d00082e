/* Llama-family models from Hugging Face directories (lm.h): config.json parsing, the parameter
 * table, strict loading with errors that name the tensor or key, and logits against transformers.
 * Usage: test_llama DATA_DIR TMP_DIR.
 *
 * DATA_DIR holds tests/oracles/llama_oracle.py's fixtures: llama_f32/ (F32, one file, tied
 * embeddings, llama3 rope scaling), llama_bf16_sharded/ (BF16 in two shards with an index,
 * transformers 4's config spelling), mistral_f16/ (F16, head_dim 32 != hidden/heads, one kv head),
 * and <name>.ref.safetensors beside each: input_ids (B,T) and transformers' float64 logits.
 * Logit errors are |c - r| / max(|r|, rms(r)) and must stay within 1e-4; the worst per fixture is
 * printed. The broken directories of the error tests are written under TMP_DIR. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/lm.h"
#include "medtrain/ops.h"
#include "medtrain/safetensors.h"
#include "models/llama_internal.h"
#include "mt_test.h"

#define TOL 1e-4

static const char *data_dir = "tests/models/data", *tmp_dir = "/tmp";
static mt_ctx ctx;

static const char *path_in(const char *dir, const char *name) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static const char *data(const char *name) {
    return path_in(data_dir, name);
}

/* ---- reference logits ------------------------------------------------------------------------ */

typedef struct ref {
    int64_t B, T, V;
    int32_t *ids;
    float *logits;
} ref;

static bool read_ref(const char *fixture, ref *r) {
    char name[256];
    snprintf(name, sizeof name, "%s.ref.safetensors", fixture);
    memset(r, 0, sizeof *r);
    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open(data(name), &f));
    if (!f) return false;
    const mt_st_tensor *ids = mt_st_find(f, "input_ids"), *lg = mt_st_find(f, "logits");
    MT_CHECK(ids && lg && ids->ndim == 2 && lg->ndim == 3, "%s: input_ids (B,T), logits (B,T,V)",
             name);
    bool ok = ids && lg && ids->ndim == 2 && lg->ndim == 3;
    if (ok) {
        r->B = ids->shape[0], r->T = ids->shape[1], r->V = lg->shape[2];
        float *tmp = malloc((size_t)ids->numel * sizeof *tmp);
        r->ids = malloc((size_t)ids->numel * sizeof *r->ids);
        r->logits = malloc((size_t)lg->numel * sizeof *r->logits);
        MT_CHECK_OK(mt_st_read_f32(f, ids, tmp));
        MT_CHECK_OK(mt_st_read_f32(f, lg, r->logits));
        for (int64_t i = 0; i < ids->numel; i++) r->ids[i] = (int32_t)tmp[i];
        free(tmp);
    }
    mt_st_close(f);
    return ok;
}

static void free_ref(ref *r) {
    free(r->ids);
    free(r->logits);
}

static double rms_of(const float *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s / (double)n);
}

/* The worst |got - want| / max(|want|, rms) over n values. */
static double worst_error(const float *got, const float *want, int64_t n, double rms) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / fmax(fabs(want[i]), rms);
        if (!(e <= worst)) worst = e; /* NaN wins */
    }
    return worst;
}

/* Runs the forward of ids (B,T) into host logits (B,T,V), or (B,V) when last_only. */
static mt_status run(mt_lm *lm, const int32_t *ids, int64_t B, int64_t T, bool train,
                     bool last_only, float *out) {
    const int64_t V = mt_lm_get_config(lm)->vocab_size;
    mt_tensor t_ids = mt_tensor_2d((void *)ids, MT_I32, MT_CPU, B, T);
    mt_tensor lg = last_only ? mt_tensor_2d(out, MT_F32, MT_CPU, B, V)
                             : mt_tensor_3d(out, MT_F32, MT_CPU, B, T, V);
    return mt_lm_forward(lm, &ctx, &t_ids, train, &lg);
}

/* ---- parity with transformers ---------------------------------------------------------------- */

static void parity(const char *fixture) {
    ref r;
    if (!read_ref(fixture, &r)) return;
    mt_lm *lm = NULL;
    MT_CHECK_OK(mt_lm_load(&ctx, data(fixture), &lm));
    if (!lm) {
        free_ref(&r);
        return;
    }
    MT_CHECK(mt_lm_get_config(lm)->vocab_size == r.V, "%s: vocab %lld, reference %lld", fixture,
             (long long)mt_lm_get_config(lm)->vocab_size, (long long)r.V);
    const int64_t B = r.B, T = r.T, V = r.V, n = B * T * V;
    const double rms = rms_of(r.logits, n);
    float *got = calloc((size_t)n, sizeof *got), *kept = calloc((size_t)n, sizeof *kept);
    float *last = calloc((size_t)(B * V), sizeof *last), *want_last = malloc((size_t)(B * V) * 4);
    double e_all = INFINITY, e_last = INFINITY, e_prefix = INFINITY;

    mt_status s = run(lm, r.ids, B, T, false, false, got);
    MT_CHECK(s == MT_OK, "%s: forward failed (%s): %s", fixture, mt_status_name(s),
             mt_error_message());
    if (s == MT_OK) {
        e_all = worst_error(got, r.logits, n, rms);
        MT_CHECK(e_all <= TOL, "%s: logits differ from transformers by %.3g", fixture, e_all);

        /* A training forward keeps every layer's activations; the arithmetic is the same. */
        size_t infer_bytes = mt_lm_activation_bytes(lm);
        MT_CHECK_OK(run(lm, r.ids, B, T, true, false, kept));
        MT_CHECK(!memcmp(kept, got, (size_t)n * sizeof *got), "%s: train forward differs", fixture);
        MT_CHECK(mt_lm_activation_bytes(lm) > infer_bytes && infer_bytes > 0,
                 "%s: activation bytes %zu (train) vs %zu (inference)", fixture,
                 mt_lm_activation_bytes(lm), infer_bytes);
        MT_CHECK(mt_lm_plan(lm, B, T, true, false) == mt_lm_activation_bytes(lm),
                 "%s: plan %zu, held %zu", fixture, mt_lm_plan(lm, B, T, true, false),
                 mt_lm_activation_bytes(lm));

        /* Generation: the last position only. */
        for (int64_t b = 0; b < B; b++)
            memcpy(want_last + b * V, r.logits + (b * T + T - 1) * V, (size_t)V * sizeof(float));
        MT_CHECK_OK(run(lm, r.ids, B, T, false, true, last));
        e_last = worst_error(last, want_last, B * V, rms);
        MT_CHECK(e_last <= TOL, "%s: last-position logits off by %.3g", fixture, e_last);

        /* A shorter prefix after the longer run (RoPE table reused from row 0): causal attention
         * makes its logits the reference's first T-2 positions. */
        const int64_t Tp = T - 2;
        int32_t *pids = malloc((size_t)(B * Tp) * sizeof *pids);
        float *pref = malloc((size_t)(B * Tp * V) * sizeof *pref);
        float *pwant = malloc((size_t)(B * Tp * V) * sizeof *pwant);
        for (int64_t b = 0; b < B; b++) {
            memcpy(pids + b * Tp, r.ids + b * T, (size_t)Tp * sizeof *pids);
            memcpy(pwant + b * Tp * V, r.logits + b * T * V, (size_t)(Tp * V) * sizeof(float));
        }
        MT_CHECK_OK(run(lm, pids, B, Tp, false, false, pref));
        e_prefix = worst_error(pref, pwant, B * Tp * V, rms);
        MT_CHECK(e_prefix <= TOL, "%s: prefix logits off by %.3g", fixture, e_prefix);
        free(pids), free(pref), free(pwant);
    }
    float maxabs = 0;
    for (int64_t i = 0; i < n; i++) maxabs = fmaxf(maxabs, fabsf(r.logits[i]));
    printf("  %-18s B=%lld T=%lld V=%lld, max |logit| %.3g: worst error %.3g (all positions), "
           "%.3g (last only), %.3g (prefix)\n",
           fixture, (long long)B, (long long)T, (long long)V, maxabs, e_all, e_last, e_prefix);
    free(got), free(kept), free(last), free(want_last);
    mt_lm_free(lm);
    free_ref(&r);
}

static void test_parity_f32_tied_llama3(void) {
    parity("llama_f32");
}
static void test_parity_bf16_sharded(void) {
    parity("llama_bf16_sharded");
}
static void test_parity_mistral_f16(void) {
    parity("mistral_f16");
}

/* ---- config.json ----------------------------------------------------------------------------- */

static void test_config_fixtures(void) {
    mt_lm_config c;
    MT_CHECK_OK(mt_lm_config_read(data("llama_f32/config.json"), &c));
    MT_CHECK(!strcmp(c.architecture, "LlamaForCausalLM"));
    MT_CHECK(c.hidden_size == 64 && c.intermediate_size == 172 && c.num_hidden_layers == 2);
    MT_CHECK(c.num_attention_heads == 4 && c.num_key_value_heads == 2 && c.head_dim == 16);
    MT_CHECK(c.vocab_size == 300 && c.tie_word_embeddings && c.rms_norm_eps == 1e-6);
    MT_CHECK(c.rope_type == MT_LM_ROPE_LLAMA3 && c.rope_theta == 10000 && c.rope_factor == 8);
    MT_CHECK(c.rope_low_freq_factor == 1 && c.rope_high_freq_factor == 4);
    MT_CHECK(c.rope_original_max_positions == 32 && !strcmp(c.torch_dtype, "float32"));

    MT_CHECK_OK(mt_lm_config_read(data("llama_bf16_sharded/config.json"), &c));
    MT_CHECK(c.rope_type == MT_LM_ROPE_DEFAULT && c.rope_theta == 10000);
    MT_CHECK(!c.tie_word_embeddings && !strcmp(c.torch_dtype, "bfloat16"));

    MT_CHECK_OK(mt_lm_config_read(data("mistral_f16/config.json"), &c));
    MT_CHECK(!strcmp(c.architecture, "MistralForCausalLM") && c.head_dim == 32);
    MT_CHECK(c.num_key_value_heads == 1 && c.sliding_window == 0 && c.rope_theta == 250000);
    MT_CHECK(c.rms_norm_eps == 1e-5 && c.vocab_size == 256 && c.intermediate_size == 128);
}

#define BASE                                                                                       \
    "\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "                  \
    "\"num_attention_heads\": 4, \"vocab_size\": 100"

static mt_status parse(const char *json, mt_lm_config *c) {
    return mt_lm_config_parse(json, strlen(json), "dir/config.json", c);
}

static void test_config_defaults_and_spellings(void) {
    mt_lm_config c;
    MT_CHECK_OK(parse("{\"model_type\": \"llama\", " BASE "}", &c));
    MT_CHECK(!strcmp(c.architecture, "LlamaForCausalLM") && c.num_key_value_heads == 4);
    MT_CHECK(c.head_dim == 16 && c.rms_norm_eps == 1e-6 && c.rope_theta == 10000);
    MT_CHECK(c.rope_type == MT_LM_ROPE_DEFAULT && !c.tie_word_embeddings);
    MT_CHECK(c.max_position_embeddings == 2048 && c.torch_dtype[0] == 0);
    /* Mistral without sliding_window gets transformers' default 4096. */
    MT_CHECK_OK(parse("{\"architectures\": [\"MistralForCausalLM\"], " BASE "}", &c));
    MT_CHECK(c.sliding_window == 4096);
    /* transformers 4: rope_theta beside rope_scaling {"type": ...} */
    MT_CHECK_OK(parse("{\"model_type\": \"llama\", " BASE ", \"rope_theta\": 5e5, "
                      "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
                      &c));
    MT_CHECK(c.rope_type == MT_LM_ROPE_LINEAR && c.rope_factor == 2 && c.rope_theta == 5e5);
    /* transformers 5: rope_parameters holds the theta */
    MT_CHECK_OK(parse("{\"model_type\": \"llama\", " BASE ", \"rope_parameters\": {"
                      "\"rope_type\": \"default\", \"rope_theta\": 123.0}}",
                      &c));
    MT_CHECK(c.rope_type == MT_LM_ROPE_DEFAULT && c.rope_theta == 123);
}

static void test_config_errors(void) {
    mt_lm_config c;
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": "
                         "128, \"num_hidden_layers\": 2, \"vocab_size\": 100}",
                         &c),
                   MT_ERR_CONFIG, "dir/config.json", "num_attention_heads: missing");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"rope_type\": "
                         "\"yarn\", \"factor\": 4.0}}",
                         &c),
                   MT_ERR_UNSUPPORTED, "dir/config.json", "unsupported rope_scaling type 'yarn'");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"rope_parameters\": {\"rope_type\""
                         ": \"dynamic\", \"factor\": 2.0, \"rope_theta\": 1e4}}",
                         &c),
                   MT_ERR_UNSUPPORTED, "rope_parameters.rope_type",
                   "unsupported rope_scaling type 'dynamic'");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"rope_type\": "
                         "\"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                         "\"high_freq_factor\": 4.0}}",
                         &c),
                   MT_ERR_CONFIG, "rope_scaling.original_max_position_embeddings: missing");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", \"hidden_size\": \"64\", "
                         "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                         "\"num_attention_heads\": 4, \"vocab_size\": 100}",
                         &c),
                   MT_ERR_CONFIG, "hidden_size: expected an integer, found \"64\"");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"num_key_value_heads\": 3}", &c),
                   MT_ERR_CONFIG, "num_key_value_heads: 3 does not divide num_attention_heads 4");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"head_dim\": 15}", &c),
                   MT_ERR_CONFIG, "head_dim: 15 is odd");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"attention_bias\": true}", &c),
                   MT_ERR_UNSUPPORTED, "attention_bias");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"hidden_act\": \"gelu\"}", &c),
                   MT_ERR_UNSUPPORTED, "hidden_act: 'gelu'");
    MT_CHECK_FAILS(parse("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE "}", &c),
                   MT_ERR_UNSUPPORTED, "architectures: 'Qwen2ForCausalLM' is not supported");
    MT_CHECK_FAILS(parse("{" BASE "}", &c), MT_ERR_CONFIG, "architectures: missing");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": "
                         "128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                         "\"vocab_size\": 0}",
                         &c),
                   MT_ERR_CONFIG, "vocab_size: expected >= 1, found 0");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"rms_norm_eps\": -1}", &c),
                   MT_ERR_CONFIG, "rms_norm_eps: expected a number >= 0, found -1");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": 2}", &c),
                   MT_ERR_CONFIG, "rope_scaling: expected an object or null, found 2");
    MT_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE, &c), MT_ERR_FORMAT,
                   "dir/config.json");
}

/* ---- the parameter table --------------------------------------------------------------------- */

static void test_table(void) {
    mt_lm *lm = NULL;
    MT_CHECK_OK(mt_lm_load(&ctx, data("llama_bf16_sharded"), &lm));
    if (!lm) return;
    mt_params *P = mt_lm_params(lm);
    MT_CHECK(P->n == 1 + 2 * 9 + 2, "%d entries", P->n);
    MT_CHECK(P->n_train == 0 && P->params == NULL);
    static const char *const first[] = {
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
    };
    size_t at = 0;
    for (int i = 0; i < P->n; i++) {
        if (i < 10) MT_CHECK(!strcmp(P->p[i].name, first[i]), "entry %d: %s", i, P->p[i].name);
        MT_CHECK(P->p[i].offset == at && !P->p[i].trainable, "%s", P->p[i].name);
        MT_CHECK(P->p[i].decay == (P->p[i].ndim == 2), "%s", P->p[i].name);
        at += (size_t)P->p[i].numel;
    }
    MT_CHECK(at == P->n_buf);
    MT_CHECK(!strcmp(P->p[P->n - 2].name, "model.norm.weight"));
    MT_CHECK(!strcmp(P->p[P->n - 1].name, "lm_head.weight"));
    int k = mt_lm_find(lm, "model.layers.1.self_attn.k_proj.weight");
    MT_CHECK(k >= 0 && P->p[k].shape[0] == 32 && P->p[k].shape[1] == 64);
    MT_CHECK(mt_lm_find(lm, "model.layers.2.self_attn.k_proj.weight") == -1);

    /* Values: BF16 widened exactly (the shard's bits in the top half of each float). */
    int o = mt_lm_find(lm, "model.layers.1.self_attn.o_proj.weight");
    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open(data("llama_bf16_sharded/model-00002-of-00002.safetensors"), &f));
    const mt_st_tensor *t = f ? mt_st_find(f, P->p[o].name) : NULL;
    if (t && o >= 0) {
        MT_CHECK(!strcmp(t->dtype_name, "BF16"));
        float *v = malloc((size_t)t->numel * sizeof *v);
        MT_CHECK_OK(mt_lm_param_get(lm, o, v));
        const unsigned char *raw = t->data;
        bool same = true;
        for (int64_t i = 0; i < t->numel && same; i++) {
            uint16_t h = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
            same = v[i] == mt_bf16_to_f32(h);
        }
        MT_CHECK(same, "o_proj values differ from the file's bf16");
        free(v);
    } else {
        MT_CHECK(false, "o_proj of layer 1 not in shard 2");
    }
    mt_st_close(f);
    mt_lm_free(lm);

    MT_CHECK_OK(mt_lm_load(&ctx, data("llama_f32"), &lm));
    if (!lm) return;
    MT_CHECK(mt_lm_find(lm, "lm_head.weight") == -1, "tied: no lm_head.weight entry");
    mt_lm_free(lm);
}

/* ---- broken directories ---------------------------------------------------------------------- */

/* An empty directory TMP_DIR/name; the returned path stays valid until the next call. */
static const char *make_dir(const char *name) {
    static char d[1024];
    snprintf(d, sizeof d, "%s/%s", tmp_dir, name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    MT_CHECK(system(cmd) == 0);
    MT_CHECK_OK(mt_mkdir_p(d));
    return d;
}

static void copy_file(const char *from, const char *to) {
    char *buf = NULL;
    size_t n = 0;
    MT_CHECK_OK(mt_file_read(from, &buf, &n));
    if (buf) MT_CHECK_OK(mt_file_write_atomic(to, buf, n));
    mt_free(buf);
}

/* A fixture's directory copied under TMP_DIR (config.json, weights and index). */
static const char *copy_fixture(const char *fixture, const char *name) {
    const char *d = make_dir(name);
    static const char *const files[] = {
        "config.json", "model.safetensors", "model.safetensors.index.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        const char *from = path_in(data(fixture), files[i]);
        if (mt_path_exists(from)) copy_file(from, path_in(d, files[i]));
    }
    return d;
}

/* Edits dir/name (JSON): sets key (at the top level, or inside object `in` when given) to value
 * (parsed JSON), or removes it when value is NULL. */
static void edit_json(const char *dir, const char *name, const char *in, const char *key,
                      const char *value) {
    cJSON *j = NULL;
    MT_CHECK_OK(mt_json_read_file(path_in(dir, name), &j));
    if (!j) return;
    cJSON *obj = in ? cJSON_GetObjectItemCaseSensitive(j, in) : j;
    MT_CHECK(obj != NULL, "%s: no %s", name, in);
    if (obj) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
        if (value) cJSON_AddItemToObject(obj, key, cJSON_Parse(value));
    }
    MT_CHECK_OK(mt_json_write_file(path_in(dir, name), j, 0));
    cJSON_Delete(j);
}

/* Rewrites dir/model.safetensors from llama_f32's: without `drop`, with `reshape` stored as
 * (d0, d1) (its data cut short), with an extra tensor `extra` (64 floats), and with `as_i32`
 * stored as I32. Any of them may be NULL. */
static void write_weights(const char *dir, const char *drop, const char *reshape, int64_t d0,
                          int64_t d1, const char *extra, const char *as_i32) {
    mt_st_file *f = NULL;
    mt_st_writer *w = NULL;
    MT_CHECK_OK(mt_st_open(data("llama_f32/model.safetensors"), &f));
    MT_CHECK_OK(mt_st_writer_new(&w));
    if (!f || !w) return;
    static float zeros[4096];
    for (size_t i = 0; i < mt_st_count(f); i++) {
        const mt_st_tensor *t = mt_st_at(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (reshape && !strcmp(t->name, reshape))
            MT_CHECK_OK(mt_st_writer_add(w, t->name, MT_F32, 2, (int64_t[]){d0, d1}, t->data));
        else if (as_i32 && !strcmp(t->name, as_i32))
            MT_CHECK_OK(mt_st_writer_add(w, t->name, MT_I32, t->ndim, t->shape, t->data));
        else
            MT_CHECK_OK(mt_st_writer_add(w, t->name, MT_F32, t->ndim, t->shape, t->data));
    }
    if (extra) MT_CHECK_OK(mt_st_writer_add(w, extra, MT_F32, 1, (int64_t[]){64}, zeros));
    MT_CHECK_OK(mt_st_writer_save(w, path_in(dir, "model.safetensors")));
    mt_st_writer_free(w);
    mt_st_close(f);
}

static mt_status load(const char *dir) {
    mt_lm *lm = NULL;
    mt_status s = mt_lm_load(&ctx, dir, &lm);
    MT_CHECK((s == MT_OK) == (lm != NULL));
    mt_lm_free(lm);
    return s;
}

static void test_missing_tensor(void) {
    const char *d = copy_fixture("llama_f32", "lm_missing");
    write_weights(d, "model.layers.1.mlp.up_proj.weight", NULL, 0, 0, NULL, NULL);
    MT_CHECK_FAILS(load(d), MT_ERR_FORMAT, "lm_missing", "1 missing",
                   "model.layers.1.mlp.up_proj.weight");
    /* Sharded: the index no longer lists a tensor. */
    d = copy_fixture("llama_bf16_sharded", "lm_missing_index");
    edit_json(d, "model.safetensors.index.json", "weight_map", "model.norm.weight", NULL);
    MT_CHECK_FAILS(load(d), MT_ERR_FORMAT, "1 missing: model.norm.weight");
    /* config.json says 3 layers; the files hold 2. */
    d = copy_fixture("llama_bf16_sharded", "lm_three_layers");
    edit_json(d, "config.json", NULL, "num_hidden_layers", "3");
    MT_CHECK_FAILS(load(d), MT_ERR_FORMAT, "9 missing", "model.layers.2.self_attn.q_proj.weight",
                   "3 layers");
    /* Untied config over a tied file: lm_head.weight is missing. */
    d = copy_fixture("llama_f32", "lm_untied");
    edit_json(d, "config.json", NULL, "tie_word_embeddings", "false");
    MT_CHECK_FAILS(load(d), MT_ERR_FORMAT, "1 missing: lm_head.weight");
}

static void test_unexpected_tensor(void) {
    const char *d = copy_fixture("llama_f32", "lm_unexpected");
    write_weights(d, NULL, NULL, 0, 0, "model.layers.0.self_attn.q_proj.bias", NULL);
    MT_CHECK_FAILS(load(d), MT_ERR_FORMAT, "1 unexpected: model.layers.0.self_attn.q_proj.bias");
    /* What transformers ignores too: RoPE's old buffer, and lm_head.weight beside tied
     * embeddings. */
    write_weights(d, NULL, NULL, 0, 0, "model.layers.0.self_attn.rotary_emb.inv_freq", NULL);
    MT_CHECK_OK(load(d));
    write_weights(d, NULL, NULL, 0, 0, "lm_head.weight", NULL);
    MT_CHECK_OK(load(d));
}

static void test_wrong_shape(void) {
    const char *d = copy_fixture("llama_f32", "lm_shape");
    write_weights(d, NULL, "model.layers.0.self_attn.k_proj.weight", 16, 64, NULL, NULL);
    MT_CHECK_FAILS(load(d), MT_ERR_SHAPE,
                   "model.layers.0.self_attn.k_proj.weight: file [16,64] (in model.safetensors), "
                   "model [32,64]");
    /* The config's heads disagree with the file: every k and v projection. */
    d = copy_fixture("llama_f32", "lm_kv_heads");
    edit_json(d, "config.json", NULL, "num_key_value_heads", "4");
    MT_CHECK_FAILS(load(d), MT_ERR_SHAPE, "4 with the wrong shape",
                   "model.layers.0.self_attn.k_proj.weight: file [32,64] (in model.safetensors), "
                   "model [64,64]");
}

static void test_bad_dtype(void) {
    const char *d = copy_fixture("llama_f32", "lm_dtype");
    write_weights(d, NULL, NULL, 0, 0, NULL, "model.norm.weight");
    MT_CHECK_FAILS(load(d), MT_ERR_UNSUPPORTED, "model.norm.weight", "is I32");
}

static void test_shards(void) {
    const char *d = copy_fixture("llama_bf16_sharded", "lm_no_shard");
    remove(path_in(d, "model-00002-of-00002.safetensors"));
    MT_CHECK_FAILS(load(d), MT_ERR_IO, "model.safetensors.index.json",
                   "model-00002-of-00002.safetensors", "does not exist");
    /* The index puts a tensor in the wrong shard. */
    d = copy_fixture("llama_bf16_sharded", "lm_wrong_shard");
    edit_json(d, "model.safetensors.index.json", "weight_map", "lm_head.weight",
              "\"model-00001-of-00002.safetensors\"");
    MT_CHECK_FAILS(load(d), MT_ERR_FORMAT, "'lm_head.weight' in model-00001-of-00002.safetensors",
                   "does not hold it");
    /* A shard name that leaves the directory. */
    d = copy_fixture("llama_bf16_sharded", "lm_escape");
    edit_json(d, "model.safetensors.index.json", "weight_map", "lm_head.weight",
              "\"../model-00002-of-00002.safetensors\"");
    MT_CHECK_FAILS(load(d), MT_ERR_FORMAT, "weight_map: 'lm_head.weight'");
    /* No weights at all; PyTorch pickles only. */
    d = make_dir("lm_no_weights");
    copy_file(data("llama_f32/config.json"), path_in(d, "config.json"));
    MT_CHECK_FAILS(load(d), MT_ERR_IO, "no model.safetensors or model.safetensors.index.json");
    MT_CHECK_OK(mt_file_write_atomic(path_in(d, "pytorch_model.bin"), "x", 1));
    MT_CHECK_FAILS(load(d), MT_ERR_UNSUPPORTED, "pytorch_model.bin");
    /* No config.json. */
    d = make_dir("lm_no_config");
    MT_CHECK_FAILS(load(d), MT_ERR_IO, "lm_no_config/config.json");
    /* A config error through the loader names the directory's file. */
    d = copy_fixture("llama_f32", "lm_bad_rope");
    edit_json(d, "config.json", "rope_parameters", "rope_type", "\"longrope\"");
    MT_CHECK_FAILS(load(d), MT_ERR_UNSUPPORTED, "lm_bad_rope/config.json",
                   "unsupported rope_scaling type 'longrope'");
}

/* transformers 4's spelling of llama_f32's RoPE gives the same model, bit for bit. */
static void test_legacy_rope_spelling(void) {
    ref r;
    if (!read_ref("llama_f32", &r)) return;
    const char *d = copy_fixture("llama_f32", "lm_legacy");
    edit_json(d, "config.json", NULL, "rope_parameters", NULL);
    edit_json(d, "config.json", NULL, "rope_theta", "10000.0");
    edit_json(d, "config.json", NULL, "rope_scaling",
              "{\"type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
              "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 32}");
    mt_lm *a = NULL, *b = NULL;
    MT_CHECK_OK(mt_lm_load(&ctx, data("llama_f32"), &a));
    MT_CHECK_OK(mt_lm_load(&ctx, d, &b));
    if (a && b) {
        const int64_t n = r.B * r.T * r.V;
        float *x = calloc((size_t)n, 4), *y = calloc((size_t)n, 4);
        MT_CHECK_OK(run(a, r.ids, r.B, r.T, false, false, x));
        MT_CHECK_OK(run(b, r.ids, r.B, r.T, false, false, y));
        MT_CHECK(!memcmp(x, y, (size_t)n * 4), "legacy spelling changes the logits");
        free(x), free(y);
    }
    mt_lm_free(a), mt_lm_free(b);
    free_ref(&r);
}

/* ---- forward arguments ----------------------------------------------------------------------- */

static void test_forward_errors(void) {
    mt_lm *lm = NULL;
    MT_CHECK_OK(mt_lm_load(&ctx, data("mistral_f16"), &lm));
    if (!lm) return;
    int32_t ids[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    float *out = calloc(2 * 5 * 256, sizeof *out);
    mt_tensor t_ids = mt_tensor_2d(ids, MT_I32, MT_CPU, 2, 5);
    mt_tensor bad = mt_tensor_3d(out, MT_F32, MT_CPU, 2, 5, 255);
    MT_CHECK_FAILS(mt_lm_forward(lm, &ctx, &t_ids, false, &bad), MT_ERR_SHAPE, "[2,5,255]",
                   "expected [2,5,256]");
    mt_tensor f_ids = mt_tensor_2d(ids, MT_F32, MT_CPU, 2, 5);
    mt_tensor lg = mt_tensor_3d(out, MT_F32, MT_CPU, 2, 5, 256);
    MT_CHECK_FAILS(mt_lm_forward(lm, &ctx, &f_ids, false, &lg), MT_ERR_SHAPE, "ids");
    ids[7] = 256;
    MT_CHECK(mt_lm_forward(lm, &ctx, &t_ids, false, &lg) != MT_OK, "id 256 of a 256-token vocab");
    MT_CHECK(strstr(mt_error_message(), "256") != NULL, "%s", mt_error_message());
    mt_lm_free(lm);
    free(out);

    /* Mistral's sliding window: refused past it rather than computed differently. */
    const char *d = copy_fixture("mistral_f16", "lm_window");
    edit_json(d, "config.json", NULL, "sliding_window", "4");
    MT_CHECK_OK(mt_lm_load(&ctx, d, &lm));
    if (!lm) return;
    out = calloc(2 * 5 * 256, sizeof *out);
    ids[7] = 8;
    lg = mt_tensor_3d(out, MT_F32, MT_CPU, 2, 5, 256);
    MT_CHECK_FAILS(mt_lm_forward(lm, &ctx, &t_ids, false, &lg), MT_ERR_UNSUPPORTED,
                   "5 tokens exceed Mistral's sliding_window 4");
    mt_lm_free(lm);
    free(out);
}

/* RoPE's inverse frequencies (computed in f32 as transformers does) against the formulas in
 * double: default, linear, and llama3 with llama_f32's parameters, whose eight frequencies fall
 * in all three of llama3's bands (kept, smoothed, divided by factor). */
static void test_rope_frequencies(void) {
    mt_lm_config c;
    MT_CHECK_OK(mt_lm_config_read(data("llama_f32/config.json"), &c));
    float inv[8];
    int bands[3] = {0};
    const double factor = 8, lo = 1, hi = 4, old = 32;
    for (int type = 0; type < 3; type++) {
        c.rope_type = type == 0   ? MT_LM_ROPE_DEFAULT
                      : type == 1 ? MT_LM_ROPE_LINEAR
                                  : MT_LM_ROPE_LLAMA3;
        llama_inv_freq(&c, inv);
        for (int i = 0; i < 8; i++) {
            double f = 1.0 / pow(10000.0, 2.0 * i / 16), wl = 2 * M_PI / f, want = f;
            if (type == 1) want = f / factor;
            if (type == 2) {
                if (wl > old / lo) {
                    want = f / factor, bands[2]++;
                } else if (wl < old / hi) {
                    bands[0]++;
                } else {
                    double sm = (old / wl - lo) / (hi - lo);
                    want = (1 - sm) * f / factor + sm * f, bands[1]++;
                }
            }
            MT_CHECK(fabs(inv[i] - want) <= 1e-6 * want, "type %d, i %d: %.9g, want %.9g", type, i,
                     inv[i], want);
        }
    }
    MT_CHECK(bands[0] && bands[1] && bands[2], "bands %d %d %d", bands[0], bands[1], bands[2]);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    if (argc > 2) tmp_dir = argv[2];
    mkdir(tmp_dir, 0755);
    if (mt_ctx_init(&ctx, MT_CPU, 0, 0) != MT_OK) {
        fprintf(stderr, "%s\n", mt_error_message());
        return 1;
    }
    MT_RUN(test_config_fixtures);
    MT_RUN(test_config_defaults_and_spellings);
    MT_RUN(test_config_errors);
    MT_RUN(test_table);
    MT_RUN(test_missing_tensor);
    MT_RUN(test_unexpected_tensor);
    MT_RUN(test_wrong_shape);
    MT_RUN(test_bad_dtype);
    MT_RUN(test_shards);
    MT_RUN(test_rope_frequencies);
    MT_RUN(test_parity_f32_tied_llama3);
    MT_RUN(test_parity_bf16_sharded);
    MT_RUN(test_parity_mistral_f16);
    MT_RUN(test_legacy_rope_spelling);
    MT_RUN(test_forward_errors);
    mt_ctx_free(&ctx);
    return mt_test_summary();
}
