/* PEFT adapter directories (lm.h: mt_lm_lora_save, mt_lm_lora_load): adapter_config.json (a
 * LoraConfig as PEFT writes it) and adapter_model.safetensors (PeftModel's LoRA state_dict without
 * the adapter name, as PEFT's save_pretrained writes it).
 *
 * Saving writes "<dir>.tmp/", syncs both files and the directory, and renames it onto dir (an old
 * dir is first renamed to "<dir>.old" and removed after), so dir is always a whole adapter. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "llama_internal.h"
#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/safetensors.h"

static const char *const TARGET_NAMES[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                           "gate_proj", "up_proj", "down_proj"};

/* ---- save ------------------------------------------------------------------------------------ */

static cJSON *config_json(const mt_lm *lm) {
    const llama_lora *lo = &lm->lora;
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON *t = cJSON_AddArrayToObject(j, "target_modules");
    for (int k = 0; k < LLAMA_N_PROJ && t; k++)
        if (lo->mask & (1u << k)) cJSON_AddItemToArray(t, cJSON_CreateString(TARGET_NAMES[k]));
    if (lo->base_model[0])
        cJSON_AddStringToObject(j, "base_model_name_or_path", lo->base_model);
    else
        cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON_AddNumberToObject(j, "r", lo->opts.r);
    cJSON_AddNumberToObject(j, "lora_alpha", lo->opts.alpha);
    cJSON_AddNumberToObject(j, "lora_dropout", lo->opts.dropout);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddBoolToObject(j, "fan_in_fan_out", false);
    cJSON_AddBoolToObject(j, "use_rslora", lo->opts.rslora);
    cJSON_AddBoolToObject(j, "use_dora", false);
    cJSON_AddBoolToObject(j, "init_lora_weights", true);
    cJSON_AddBoolToObject(j, "inference_mode", true);
    cJSON_AddNullToObject(j, "modules_to_save");
    cJSON_AddNullToObject(j, "layers_to_transform");
    cJSON_AddNullToObject(j, "layers_pattern");
    cJSON_AddObjectToObject(j, "rank_pattern");
    cJSON_AddObjectToObject(j, "alpha_pattern");
    cJSON_AddNullToObject(j, "revision");
    return j;
}

/* Removes dir and the files directly inside it (what an adapter directory holds). */
static void remove_flat_dir(const char *dir) {
    static const char *const files[] = {"adapter_config.json", "adapter_model.safetensors"};
    char p[2200];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static mt_status write_aside(mt_lm *lm, const char *tmp, float *host) {
    char p[1200];
    MT_TRY(mt_mkdir_p(tmp));
    cJSON *j = config_json(lm);
    if (!j) return mt_fail(MT_ERR_NOMEM, "%s: out of memory building adapter_config.json", tmp);
    snprintf(p, sizeof p, "%s/adapter_config.json", tmp);
    mt_status s = mt_json_write_file(p, j, 0);
    cJSON_Delete(j);
    MT_TRY(s);
    mt_tensor d = mt_tensor_1d(lm->P.params, MT_F32, lm->ctx->device, (int64_t)lm->P.n_train);
    mt_tensor h = mt_tensor_1d(host, MT_F32, MT_CPU, (int64_t)lm->P.n_train);
    MT_TRY(mt_tensor_copy(lm->ctx, &h, &d));
    MT_TRY(mt_ctx_sync(lm->ctx));
    mt_st_writer *w = NULL;
    MT_TRY(mt_st_writer_new(&w));
    s = mt_st_writer_meta(w, "format", "pt");
    for (int i = 0; i < lm->P.n && s == MT_OK; i++) {
        const mt_param *q = &lm->P.p[i];
        if (q->trainable) s = mt_st_writer_add(w, q->name, MT_F32, 2, q->shape, host + q->offset);
    }
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", tmp);
    if (s == MT_OK) s = mt_st_writer_save(w, p);
    mt_st_writer_free(w);
    MT_TRY(s);
    return mt_fsync_dir(tmp);
}

static void parent_of(const char *dir, char *out, size_t n) {
    snprintf(out, n, "%s", dir);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, n, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        *slash = '\0';
}

mt_status mt_lm_lora_save(mt_lm *lm, const char *dir) {
    if (!lm->lora.on) return mt_fail(MT_ERR_ARG, "mt_lm_lora_save %s: the model has no LoRA", dir);
    char tmp[1100], old[1100], parent[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    snprintf(old, sizeof old, "%s.old", dir);
    remove_flat_dir(tmp);
    float *host = mt_alloc(lm->P.n_train * sizeof *host, "LoRA weights");
    if (!host) return MT_ERR_NOMEM;
    mt_status s = write_aside(lm, tmp, host);
    mt_free(host);
    if (s != MT_OK) return mt_error_wrap(s, "saving the LoRA adapter %s: ", dir);
    const bool had = mt_path_exists(dir);
    if (had) {
        remove_flat_dir(old);
        if (rename(dir, old) != 0)
            return mt_fail(MT_ERR_IO,
                           "saving the LoRA adapter: cannot move the old %s aside to %s: %s", dir,
                           old, strerror(errno));
    }
    if (rename(tmp, dir) != 0)
        return mt_fail(MT_ERR_IO, "saving the LoRA adapter: cannot rename %s to %s: %s", tmp, dir,
                       strerror(errno));
    if (had) remove_flat_dir(old);
    parent_of(dir, parent, sizeof parent);
    return mt_fsync_dir(parent);
}

/* ---- load ------------------------------------------------------------------------------------ */

static mt_status bad(const char *path, const char *key, const char *why) {
    return mt_fail(MT_ERR_UNSUPPORTED, "%s: %s: %s", path, key, why);
}

/* A key that must be absent, null, false, empty or equal to what medtrain does. */
static bool empty_or_false(const cJSON *v) {
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v) ||
           ((cJSON_IsObject(v) || cJSON_IsArray(v)) && cJSON_GetArraySize(v) == 0);
}

static mt_status read_config(const char *path, mt_lm_lora_opts *o, char *targets, size_t n,
                             char *base, size_t nb) {
    cJSON *j = NULL;
    MT_TRY(mt_json_read_file(path, &j));
    mt_status s = MT_OK;
    const cJSON *v;
#define GET(k) (v = cJSON_GetObjectItemCaseSensitive(j, k))
    memset(o, 0, sizeof *o);
    if (!cJSON_IsString(GET("peft_type")) || strcmp(v->valuestring, "LORA"))
        s = bad(path, "peft_type", "expected \"LORA\"");
    else if (!cJSON_IsNumber(GET("r")) || v->valuedouble < 1 ||
             v->valuedouble != (int)v->valuedouble)
        s = mt_fail(MT_ERR_CONFIG, "%s: r: expected an integer >= 1", path);
    else {
        o->r = (int)v->valuedouble;
        o->alpha = cJSON_IsNumber(GET("lora_alpha")) ? (float)v->valuedouble : 8.0f;
        o->dropout = cJSON_IsNumber(GET("lora_dropout")) ? (float)v->valuedouble : 0.0f;
        o->rslora = cJSON_IsTrue(GET("use_rslora"));
        if (cJSON_IsString(GET("base_model_name_or_path")))
            snprintf(base, nb, "%s", v->valuestring);
        o->base_model = base;
    }
    static const char *const off[] = {
        "use_dora",      "fan_in_fan_out",      "modules_to_save",         "rank_pattern",
        "alpha_pattern", "layers_to_transform", "trainable_token_indices", "layer_replication"};
    for (size_t k = 0; k < sizeof off / sizeof *off && s == MT_OK; k++)
        if (!empty_or_false(GET(off[k])))
            s = bad(path, off[k], "not supported by medtrain (expected null, false or empty)");
    if (s == MT_OK && GET("bias") && !(cJSON_IsString(v) && !strcmp(v->valuestring, "none")))
        s = bad(path, "bias", "only \"none\" is supported");
    if (s == MT_OK) {
        GET("target_modules");
        size_t at = 0;
        targets[0] = '\0';
        if (!cJSON_IsArray(v))
            s = bad(path, "target_modules",
                    "expected a list of module names (a regular expression string is not "
                    "supported)");
        const cJSON *e;
        if (s == MT_OK) cJSON_ArrayForEach(e, v) {
                if (!cJSON_IsString(e)) {
                    s = bad(path, "target_modules", "expected strings");
                    break;
                }
                at += (size_t)snprintf(targets + at, at < n ? n - at : 0, "%s%s", at ? "," : "",
                                       e->valuestring);
            }
        o->targets = targets;
    }
#undef GET
    cJSON_Delete(j);
    return s;
}

/* The file's tensors against the table: every LoRA entry present with its shape, nothing else. */
static mt_status check_file(const mt_lm *lm, const mt_st_file *f, const char *path) {
    char a[64], b[64];
    for (int i = 0; i < lm->P.n; i++) {
        const mt_param *p = &lm->P.p[i];
        if (!p->trainable) continue;
        const mt_st_tensor *t = mt_st_find(f, p->name);
        if (!t)
            return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s' is missing (%zu tensors in the file)",
                           path, p->name, mt_st_count(f));
        if (t->ndim != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
            snprintf(b, sizeof b, "[%lld,%lld]", (long long)p->shape[0], (long long)p->shape[1]);
            size_t at = (size_t)snprintf(a, sizeof a, "[");
            for (int k = 0; k < t->ndim && at < sizeof a; k++)
                at += (size_t)snprintf(a + at, sizeof a - at, "%s%lld", k ? "," : "",
                                       (long long)t->shape[k]);
            if (at < sizeof a) snprintf(a + at, sizeof a - at, "]");
            return mt_fail(MT_ERR_SHAPE, "%s: tensor '%s': file %s, model %s", path, p->name, a, b);
        }
        if (strcmp(t->dtype_name, "F32") && strcmp(t->dtype_name, "BF16") &&
            strcmp(t->dtype_name, "F16") && strcmp(t->dtype_name, "F64"))
            return mt_fail(MT_ERR_UNSUPPORTED,
                           "%s: tensor '%s' is %s; expected F32, BF16, F16 or F64", path, p->name,
                           t->dtype_name);
    }
    for (size_t k = 0; k < mt_st_count(f); k++) {
        const char *name = mt_st_at(f, k)->name;
        const int i = mt_lm_find(lm, name);
        if (i < 0 || !lm->P.p[i].trainable)
            return mt_fail(MT_ERR_FORMAT,
                           "%s: tensor '%s' is not a LoRA tensor of this model (LoRA on %s, r %d)",
                           path, name, lm->lora.targets, lm->lora.opts.r);
    }
    return MT_OK;
}

static mt_status load_tensors(mt_lm *lm, const char *path) {
    mt_st_file *f = NULL;
    MT_TRY(mt_st_open(path, &f));
    float *host = NULL;
    mt_status s = check_file(lm, f, path);
    if (s == MT_OK) {
        host = mt_alloc(lm->P.n_train * sizeof *host, "LoRA weights");
        if (!host) s = MT_ERR_NOMEM;
    }
    for (int i = 0; i < lm->P.n && s == MT_OK; i++)
        if (lm->P.p[i].trainable)
            s = mt_st_read_f32(f, mt_st_find(f, lm->P.p[i].name), host + lm->P.p[i].offset);
    if (s == MT_OK) {
        mt_tensor d = mt_tensor_1d(lm->P.params, MT_F32, lm->ctx->device, (int64_t)lm->P.n_train);
        mt_tensor h = mt_tensor_1d(host, MT_F32, MT_CPU, (int64_t)lm->P.n_train);
        s = mt_tensor_copy(lm->ctx, &d, &h);
        if (s == MT_OK) s = mt_ctx_sync(lm->ctx);
    }
    mt_free(host);
    mt_st_close(f);
    return s;
}

mt_status mt_lm_lora_load(mt_lm *lm, const char *dir) {
    char path[1100], targets[128], base[512] = "";
    mt_lm_lora_opts o;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    MT_TRY(read_config(path, &o, targets, sizeof targets, base, sizeof base));
    if (!lm->lora.on) {
        mt_status s = mt_lm_lora_add(lm, &o);
        if (s != MT_OK) return mt_error_wrap(s, "%s: ", path);
    } else {
        llama_lora *lo = &lm->lora;
        mt_lm_lora_opts want = o;
        char norm[160];
        unsigned mask = 0;
        for (int k = 0; k < LLAMA_N_PROJ; k++) {
            /* the file's list, as a mask, in medtrain's order */
            char key[32];
            snprintf(key, sizeof key, ",%s,", TARGET_NAMES[k]);
            snprintf(norm, sizeof norm, ",%s,", targets);
            if (strstr(norm, key)) mask |= 1u << k;
        }
        if (want.r != lo->opts.r || mask != lo->mask || want.rslora != lo->opts.rslora ||
            want.alpha != lo->opts.alpha)
            return mt_fail(MT_ERR_CONFIG,
                           "%s: r %d, lora_alpha %g, use_rslora %d, target_modules %s; the model "
                           "has LoRA with r %d, alpha %g, rslora %d on %s",
                           path, want.r, (double)want.alpha, want.rslora, targets, lo->opts.r,
                           (double)lo->opts.alpha, lo->opts.rslora, lo->targets);
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    return load_tensors(lm, path);
}
