/* config.json of a Hugging Face Llama-family model (lm.h: mt_lm_config).
 *
 * Reads the keys the forward depends on, with transformers' defaults for the optional ones, and
 * refuses what the forward cannot compute exactly (biases, activations other than SiLU, RoPE
 * variants other than default / linear / llama3, partial rotary). Every message names the file
 * and the key. Keys the forward does not depend on (initializer_range, use_cache, token ids,
 * pretraining_tp, attention_dropout, ...) are not read. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/lm.h"
#include "medtrain/mem.h"

static bool present(const cJSON *j) {
    return j && !cJSON_IsNull(j);
}

/* A human rendering of a JSON value for messages ("true", "\"abc\"", "[...]"). */
static const char *show(const cJSON *j, char *buf, size_t n) {
    if (cJSON_IsString(j))
        snprintf(buf, n, "\"%.60s\"", j->valuestring);
    else if (cJSON_IsNumber(j))
        snprintf(buf, n, "%.17g", j->valuedouble);
    else if (cJSON_IsBool(j))
        snprintf(buf, n, "%s", cJSON_IsTrue(j) ? "true" : "false");
    else if (cJSON_IsArray(j))
        snprintf(buf, n, "an array");
    else if (cJSON_IsObject(j))
        snprintf(buf, n, "an object");
    else
        snprintf(buf, n, "null");
    return buf;
}

/* An integer >= min under key (in obj, called where in messages). Absent or null: def, or an
 * error when required. */
static mt_status get_int(const char *name, const cJSON *obj, const char *where, const char *key,
                         bool required, int64_t def, int64_t min, int64_t *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char buf[96];
    if (!present(j)) {
        if (required) return mt_fail(MT_ERR_CONFIG, "%s: %s%s: missing", name, where, key);
        *out = def;
        return MT_OK;
    }
    double v = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!(v == floor(v) && fabs(v) < 9007199254740992.0))
        return mt_fail(MT_ERR_CONFIG, "%s: %s%s: expected an integer, found %s", name, where, key,
                       show(j, buf, sizeof buf));
    if (v < (double)min)
        return mt_fail(MT_ERR_CONFIG, "%s: %s%s: expected >= %lld, found %lld", name, where, key,
                       (long long)min, (long long)v);
    *out = (int64_t)v;
    return MT_OK;
}

/* A finite number > 0 (or >= 0 when zero_ok). */
static mt_status get_num(const char *name, const cJSON *obj, const char *where, const char *key,
                         bool required, double def, bool zero_ok, double *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char buf[96];
    if (!present(j)) {
        if (required) return mt_fail(MT_ERR_CONFIG, "%s: %s%s: missing", name, where, key);
        *out = def;
        return MT_OK;
    }
    double v = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!isfinite(v) || v < 0 || (v == 0 && !zero_ok))
        return mt_fail(MT_ERR_CONFIG, "%s: %s%s: expected a number %s 0, found %s", name, where,
                       key, zero_ok ? ">=" : ">", show(j, buf, sizeof buf));
    *out = v;
    return MT_OK;
}

static mt_status get_bool(const char *name, const cJSON *obj, const char *key, bool def,
                          bool *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char buf[96];
    if (!present(j)) {
        *out = def;
        return MT_OK;
    }
    if (!cJSON_IsBool(j))
        return mt_fail(MT_ERR_CONFIG, "%s: %s: expected true or false, found %s", name, key,
                       show(j, buf, sizeof buf));
    *out = cJSON_IsTrue(j);
    return MT_OK;
}

/* A string under key, or NULL when absent or null. */
static mt_status get_str(const char *name, const cJSON *obj, const char *where, const char *key,
                         const char **out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char buf[96];
    *out = NULL;
    if (!present(j)) return MT_OK;
    if (!cJSON_IsString(j))
        return mt_fail(MT_ERR_CONFIG, "%s: %s%s: expected a string, found %s", name, where, key,
                       show(j, buf, sizeof buf));
    *out = j->valuestring;
    return MT_OK;
}

/* ---- sections ---------------------------------------------------------------------------- */

static mt_status parse_architecture(const char *name, const cJSON *root, mt_lm_config *c) {
    static const char *const known[] = {"LlamaForCausalLM", "MistralForCausalLM"};
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *arch = NULL;
    char buf[96];
    if (present(archs)) {
        const cJSON *first = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
        if (!cJSON_IsString(first))
            return mt_fail(MT_ERR_CONFIG, "%s: architectures: expected a list of names, found %s",
                           name, show(archs, buf, sizeof buf));
        arch = first->valuestring;
    } else {
        const char *type;
        MT_TRY(get_str(name, root, "", "model_type", &type));
        if (!type)
            return mt_fail(MT_ERR_CONFIG,
                           "%s: architectures: missing (and no model_type): cannot tell which "
                           "model this is",
                           name);
        arch = !strcmp(type, "llama") ? known[0] : !strcmp(type, "mistral") ? known[1] : type;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(arch, known[i])) {
            snprintf(c->architecture, sizeof c->architecture, "%s", arch);
            return MT_OK;
        }
    return mt_fail(MT_ERR_UNSUPPORTED,
                   "%s: architectures: '%.60s' is not supported (medtrain reads LlamaForCausalLM "
                   "and MistralForCausalLM)",
                   name, arch);
}

static mt_status parse_shapes(const char *name, const cJSON *root, mt_lm_config *c) {
    MT_TRY(get_int(name, root, "", "hidden_size", true, 0, 1, &c->hidden_size));
    MT_TRY(get_int(name, root, "", "intermediate_size", true, 0, 1, &c->intermediate_size));
    MT_TRY(get_int(name, root, "", "num_hidden_layers", true, 0, 1, &c->num_hidden_layers));
    MT_TRY(get_int(name, root, "", "num_attention_heads", true, 0, 1, &c->num_attention_heads));
    MT_TRY(get_int(name, root, "", "num_key_value_heads", false, c->num_attention_heads, 1,
                   &c->num_key_value_heads));
    MT_TRY(get_int(name, root, "", "vocab_size", true, 0, 1, &c->vocab_size));
    int64_t h = c->hidden_size, nh = c->num_attention_heads;
    if (!present(cJSON_GetObjectItemCaseSensitive(root, "head_dim")) && h % nh)
        return mt_fail(MT_ERR_CONFIG,
                       "%s: head_dim: missing, and hidden_size %lld is not a multiple of "
                       "num_attention_heads %lld",
                       name, (long long)h, (long long)nh);
    MT_TRY(get_int(name, root, "", "head_dim", false, h / nh, 1, &c->head_dim));
    if (c->head_dim % 2)
        return mt_fail(MT_ERR_CONFIG, "%s: head_dim: %lld is odd (RoPE rotates pairs)", name,
                       (long long)c->head_dim);
    if (nh % c->num_key_value_heads)
        return mt_fail(MT_ERR_CONFIG,
                       "%s: num_key_value_heads: %lld does not divide num_attention_heads %lld",
                       name, (long long)c->num_key_value_heads, (long long)nh);
    /* Keep every activation's element count far inside int64 (and a row inside int32 for the
     * kernels that index rows with int). */
    const int64_t lim = (int64_t)1 << 24;
    if (h > lim || c->intermediate_size > lim || c->vocab_size > lim || nh > lim ||
        c->head_dim > lim || nh * c->head_dim > lim || c->num_hidden_layers > 4096)
        return mt_fail(MT_ERR_CONFIG,
                       "%s: sizes too large (hidden_size %lld, intermediate_size "
                       "%lld, vocab_size %lld, heads %lld x head_dim %lld, layers %lld)",
                       name, (long long)h, (long long)c->intermediate_size,
                       (long long)c->vocab_size, (long long)nh, (long long)c->head_dim,
                       (long long)c->num_hidden_layers);
    bool mistral = !strcmp(c->architecture, "MistralForCausalLM");
    MT_TRY(get_int(name, root, "", "max_position_embeddings", false, mistral ? 131072 : 2048, 1,
                   &c->max_position_embeddings));
    MT_TRY(get_num(name, root, "", "rms_norm_eps", false, 1e-6, true, &c->rms_norm_eps));
    MT_TRY(get_bool(name, root, "tie_word_embeddings", false, &c->tie_word_embeddings));
    c->sliding_window = 0;
    if (mistral) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        if (!sw) /* transformers' MistralConfig default; null turns it off */
            c->sliding_window = 4096;
        else if (!cJSON_IsNull(sw))
            MT_TRY(get_int(name, root, "", "sliding_window", false, 0, 1, &c->sliding_window));
    }
    return MT_OK;
}

/* What the forward computes: SiLU, no biases. */
static mt_status parse_refusals(const char *name, const cJSON *root) {
    const char *act;
    MT_TRY(get_str(name, root, "", "hidden_act", &act));
    if (act && strcmp(act, "silu"))
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: hidden_act: '%.40s' is not supported (only silu)",
                       name, act);
    static const char *const biases[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        bool on = false;
        MT_TRY(get_bool(name, root, biases[i], false, &on));
        if (on)
            return mt_fail(MT_ERR_UNSUPPORTED, "%s: %s: true is not supported (no biases)", name,
                           biases[i]);
    }
    return MT_OK;
}

/* RoPE: transformers 5's rope_parameters, or transformers 4's rope_theta + rope_scaling. */
static mt_status parse_rope(const char *name, const cJSON *root, mt_lm_config *c) {
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const char *sect = "rope_parameters";
    if (!present(rp))
        rp = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling"), sect = "rope_scaling";
    char where[32], buf[96];
    snprintf(where, sizeof where, "%s.", sect);
    if (present(rp) && !cJSON_IsObject(rp))
        return mt_fail(MT_ERR_CONFIG, "%s: %s: expected an object or null, found %s", name, sect,
                       show(rp, buf, sizeof buf));
    if (!present(rp)) rp = NULL;

    const cJSON *theta_obj =
        rp && present(cJSON_GetObjectItemCaseSensitive(rp, "rope_theta")) ? rp : root;
    MT_TRY(get_num(name, theta_obj, theta_obj == rp ? where : "", "rope_theta", false, 10000.0,
                   false, &c->rope_theta));
    double partial;
    MT_TRY(get_num(name, rp ? rp : root, rp ? where : "", "partial_rotary_factor", false, 1.0,
                   false, &partial));
    if (partial != 1.0)
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "%s: %spartial_rotary_factor: %g is not supported (RoPE on whole heads "
                       "only)",
                       name, rp ? where : "", partial);

    const char *type = NULL, *type_key = "rope_type";
    if (rp) {
        MT_TRY(get_str(name, rp, where, "rope_type", &type));
        if (!type) {
            type_key = "type";
            MT_TRY(get_str(name, rp, where, "type", &type));
        }
    }
    if (!type || !strcmp(type, "default")) {
        c->rope_type = MT_LM_ROPE_DEFAULT;
        return MT_OK;
    }
    if (!strcmp(type, "linear")) {
        c->rope_type = MT_LM_ROPE_LINEAR;
        return get_num(name, rp, where, "factor", true, 0, false, &c->rope_factor);
    }
    if (!strcmp(type, "llama3")) {
        c->rope_type = MT_LM_ROPE_LLAMA3;
        MT_TRY(get_num(name, rp, where, "factor", true, 0, false, &c->rope_factor));
        MT_TRY(
            get_num(name, rp, where, "low_freq_factor", true, 0, false, &c->rope_low_freq_factor));
        MT_TRY(get_num(name, rp, where, "high_freq_factor", true, 0, false,
                       &c->rope_high_freq_factor));
        MT_TRY(get_int(name, rp, where, "original_max_position_embeddings", true, 0, 1,
                       &c->rope_original_max_positions));
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return mt_fail(MT_ERR_CONFIG,
                           "%s: %shigh_freq_factor: %g must exceed low_freq_factor %g", name, where,
                           c->rope_high_freq_factor, c->rope_low_freq_factor);
        return MT_OK;
    }
    return mt_fail(MT_ERR_UNSUPPORTED,
                   "%s: %s%s: unsupported rope_scaling type '%.40s' (medtrain supports default, "
                   "linear and llama3)",
                   name, where, type_key, type);
}

mt_status mt_lm_config_parse(const char *text, size_t n, const char *name, mt_lm_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = NULL;
    MT_TRY(mt_json_parse(text, n, name, &root));
    mt_status s = MT_OK;
    if (!cJSON_IsObject(root)) s = mt_fail(MT_ERR_CONFIG, "%s: expected a JSON object", name);
    if (s == MT_OK) s = parse_architecture(name, root, cfg);
    if (s == MT_OK) s = parse_shapes(name, root, cfg);
    if (s == MT_OK) s = parse_refusals(name, root);
    if (s == MT_OK) s = parse_rope(name, root, cfg);
    if (s == MT_OK) {
        const char *dt = NULL;
        s = get_str(name, root, "", "torch_dtype", &dt);
        if (s == MT_OK && !dt) s = get_str(name, root, "", "dtype", &dt);
        if (s == MT_OK && dt) snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dt);
    }
    cJSON_Delete(root);
    return s;
}

mt_status mt_lm_config_read(const char *path, mt_lm_config *cfg) {
    char *text;
    size_t n;
    MT_TRY(mt_file_read(path, &text, &n));
    mt_status s = mt_lm_config_parse(text, n, path, cfg);
    mt_free(text);
    return s;
}
