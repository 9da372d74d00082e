/* Reading tokenizer.json (the format `tokenizers` serialises a Tokenizer to) into the tokenizer's
 * tables. Every message names the file and the JSON field ("model.merges[12]"); anything this
 * reader cannot run exactly (another model type, a normalizer or pre-tokenizer it lacks, an unknown
 * split regex, BPE dropout) fails to load rather than tokenizing differently. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "tokenizer_internal.h"

typedef struct loader {
    const char *file;
    mt_tokenizer *tok;
} loader;

#define PATH_MAX_ 160

static mt_status bad(const loader *L, mt_status code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static mt_status bad(const loader *L, mt_status code, const char *path, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mt_fail(code, "%s: %s: %s", L->file, path, msg);
}

/* A field path into buf (PATH_MAX_ bytes); a very deep path is cut, never overrun. */
static const char *pathf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *pathf(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, PATH_MAX_, fmt, ap);
    va_end(ap);
    return buf;
}

/* "a.b" / "a[3]" into buf. */
static const char *sub(char *buf, const char *path, const char *key) {
    return pathf(buf, "%s%s%s", path, *path ? "." : "", key);
}
static const char *idx(char *buf, const char *path, int i) {
    return pathf(buf, "%s[%d]", path, i);
}

static bool absent(const cJSON *v) {
    return !v || cJSON_IsNull(v);
}

/* Field getters: a missing or null field takes the default; a field of the wrong type fails. */
static mt_status get_bool(const loader *L, const cJSON *o, const char *path, const char *key,
                          bool def, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char p[PATH_MAX_];
    if (absent(v)) return *out = def, MT_OK;
    if (!cJSON_IsBool(v)) return bad(L, MT_ERR_FORMAT, sub(p, path, key), "expected true or false");
    *out = cJSON_IsTrue(v);
    return MT_OK;
}

static mt_status get_str(const loader *L, const cJSON *o, const char *path, const char *key,
                         bool required, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char p[PATH_MAX_];
    *out = NULL;
    if (absent(v)) return required ? bad(L, MT_ERR_FORMAT, sub(p, path, key), "missing") : MT_OK;
    if (!cJSON_IsString(v)) return bad(L, MT_ERR_FORMAT, sub(p, path, key), "expected a string");
    *out = v->valuestring;
    return MT_OK;
}

static mt_status get_int(const loader *L, const cJSON *v, const char *path, int64_t lo, int64_t hi,
                         int64_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return bad(L, MT_ERR_FORMAT, path, "expected an integer in [%lld, %lld]", (long long)lo,
                   (long long)hi);
    *out = (int64_t)v->valuedouble;
    return MT_OK;
}

static mt_status get_obj(const loader *L, const cJSON *o, const char *path, const char *key,
                         const cJSON **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char p[PATH_MAX_];
    *out = NULL;
    if (absent(v)) return MT_OK;
    if (!cJSON_IsObject(v)) return bad(L, MT_ERR_FORMAT, sub(p, path, key), "expected an object");
    *out = v;
    return MT_OK;
}

static mt_status get_type(const loader *L, const cJSON *o, const char *path, const char **type) {
    MT_TRY(get_str(L, o, path, "type", true, type));
    return MT_OK;
}

static mt_status dup(const char *s, char **out) {
    *out = mt_strdup(s, "tokenizer string");
    return *out ? MT_OK : MT_ERR_NOMEM;
}

/* A single character (Metaspace replacement, Strip content), kept as its UTF-8. */
static mt_status get_char(const loader *L, const cJSON *o, const char *path, const char *key,
                          const char *def, char **out) {
    const char *s;
    char p[PATH_MAX_];
    MT_TRY(get_str(L, o, path, key, def == NULL, &s));
    if (!s) s = def;
    size_t n = strlen(s);
    if (n == 0 || tk_utf8_check(s, n) != n || (size_t)tk_utf8_len((unsigned char)s[0]) != n)
        return bad(L, MT_ERR_FORMAT, sub(p, path, key), "expected one character, found \"%s\"", s);
    return dup(s, out);
}

/* {"String": s} or {"Regex": r}; Regex only where the caller accepts one. */
static mt_status get_pattern(const loader *L, const cJSON *o, const char *path, const char **lit,
                             const char **regex) {
    const cJSON *pat;
    char p[PATH_MAX_], q[PATH_MAX_];
    MT_TRY(get_obj(L, o, path, "pattern", &pat));
    sub(p, path, "pattern");
    if (!pat)
        return bad(L, MT_ERR_FORMAT, p, "missing (expected {\"String\": ...} or {\"Regex\": ...})");
    MT_TRY(get_str(L, pat, p, "String", false, lit));
    if (regex) MT_TRY(get_str(L, pat, p, "Regex", false, regex));
    if (*lit || (regex && *regex)) return MT_OK;
    if (cJSON_GetObjectItemCaseSensitive(pat, "Regex"))
        return bad(L, MT_ERR_UNSUPPORTED, sub(q, p, "Regex"),
                   "regex patterns are not supported here, only {\"String\": ...}");
    return bad(L, MT_ERR_FORMAT, p, "expected {\"String\": ...} or {\"Regex\": ...}");
}

/* A list of steps: one object, or {"type": "Sequence", key: [...]} (nested sequences flatten). */
typedef mt_status (*step_fn)(const loader *L, const cJSON *o, const char *path, const char *type);

static mt_status each_step(const loader *L, const cJSON *o, const char *path, const char *seq_key,
                           step_fn fn) {
    const char *type;
    char p[PATH_MAX_], q[PATH_MAX_];
    if (absent(o)) return MT_OK;
    if (!cJSON_IsObject(o)) return bad(L, MT_ERR_FORMAT, path, "expected an object or null");
    MT_TRY(get_type(L, o, path, &type));
    if (strcmp(type, "Sequence")) return fn(L, o, path, type);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, seq_key);
    sub(p, path, seq_key);
    if (!cJSON_IsArray(list)) return bad(L, MT_ERR_FORMAT, p, "expected an array");
    int i = 0;
    for (const cJSON *it = list->child; it; it = it->next, i++)
        MT_TRY(each_step(L, it, idx(q, p, i), seq_key, fn));
    return MT_OK;
}

static mt_status grow_steps(void **v, size_t n, size_t size) {
    size_t cap = n; /* exact growth: these lists are short */
    return tk_grow(v, &cap, n + 1, size, "tokenizer steps");
}

/* ---- model ----------------------------------------------------------------------------------- */

static mt_status load_vocab(const loader *L, const cJSON *model) {
    tk_bpe *m = &L->tok->bpe;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    char p[PATH_MAX_];
    if (absent(vocab)) return bad(L, MT_ERR_FORMAT, "model.vocab", "missing");
    if (!cJSON_IsObject(vocab)) return bad(L, MT_ERR_FORMAT, "model.vocab", "expected an object");
    int64_t max_id = -1;
    for (const cJSON *it = vocab->child; it; it = it->next) {
        int64_t id = 0;
        pathf(p, "model.vocab[\"%.60s\"]", it->string);
        MT_TRY(get_int(L, it, p, 0, INT32_MAX - 1, &id));
        MT_TRY(tk_strmap_put(&m->vocab, it->string, strlen(it->string), (int32_t)id));
        if (id > max_id) max_id = id;
    }
    m->n_ids = (int32_t)(max_id + 1);
    m->tok_of_id = mt_alloc((size_t)(m->n_ids + 1) * sizeof *m->tok_of_id, "vocab index");
    if (!m->tok_of_id) return MT_ERR_NOMEM;
    for (int32_t i = 0; i < m->n_ids; i++) m->tok_of_id[i] = -1;
    for (size_t k = 0; k < m->vocab.n; k++) m->tok_of_id[m->vocab.ent[k].val] = (int32_t)k;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_id[b] = tk_strmap_get(&m->vocab, name, 6);
    }
    return MT_OK;
}

static int32_t vocab_id(const tk_bpe *m, const char *s) {
    return tk_strmap_get(&m->vocab, s, strlen(s));
}

/* One merge: "a b" (split at the first space) or ["a", "b"]. */
static mt_status merge_parts(const loader *L, const cJSON *it, const char *path, tk_bytes *buf,
                             const char **a, const char **b) {
    if (cJSON_IsString(it)) {
        const char *sp = strchr(it->valuestring, ' ');
        if (!sp)
            return bad(L, MT_ERR_FORMAT, path, "expected \"a b\", found \"%.60s\"",
                       it->valuestring);
        buf->n = 0;
        MT_TRY(tk_bytes_add(buf, it->valuestring, (size_t)(sp - it->valuestring) + 1));
        buf->p[sp - it->valuestring] = '\0';
        *a = buf->p, *b = sp + 1;
        return MT_OK;
    }
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
        cJSON_IsString(it->child->next)) {
        *a = it->child->valuestring, *b = it->child->next->valuestring;
        return MT_OK;
    }
    return bad(L, MT_ERR_FORMAT, path, "expected \"a b\" or [\"a\", \"b\"]");
}

static mt_status load_merges(const loader *L, const cJSON *model) {
    tk_bpe *m = &L->tok->bpe;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (absent(merges)) return bad(L, MT_ERR_FORMAT, "model.merges", "missing");
    if (!cJSON_IsArray(merges)) return bad(L, MT_ERR_FORMAT, "model.merges", "expected an array");
    size_t plen = m->prefix ? strlen(m->prefix) : 0;
    tk_bytes pa = {0}, cat = {0};
    mt_status st = MT_OK;
    int rank = 0;
    for (const cJSON *it = merges->child; it && st == MT_OK; it = it->next, rank++) {
        char p[PATH_MAX_];
        const char *a = NULL, *b = NULL;
        idx(p, "model.merges", rank);
        if ((st = merge_parts(L, it, p, &pa, &a, &b))) break;
        /* the merged token drops b's continuing_subword_prefix */
        size_t bl = strlen(b), skip = plen <= bl ? plen : bl;
        cat.n = 0;
        if ((st = tk_bytes_add(&cat, a, strlen(a))) ||
            (st = tk_bytes_add(&cat, b + skip, bl - skip)))
            break;
        int32_t ia = vocab_id(m, a), ib = vocab_id(m, b), iab = vocab_id(m, cat.p);
        const char *missing = ia < 0 ? a : ib < 0 ? b : iab < 0 ? cat.p : NULL;
        if (missing) {
            st = bad(L, MT_ERR_FORMAT, p, "token \"%.60s\" is not in model.vocab", missing);
            break;
        }
        st = tk_bpe_add_merge(m, ia, ib, rank, iab);
    }
    tk_bytes_free(&pa), tk_bytes_free(&cat);
    return st;
}

static mt_status load_model(const loader *L, const cJSON *root) {
    tk_bpe *m = &L->tok->bpe;
    const cJSON *model;
    const char *type, *unk, *prefix, *suffix;
    MT_TRY(get_obj(L, root, "", "model", &model));
    if (!model) return bad(L, MT_ERR_FORMAT, "model", "missing");
    MT_TRY(get_str(L, model, "model", "type", false, &type));
    if (type && strcmp(type, "BPE"))
        return bad(L, MT_ERR_UNSUPPORTED, "model.type",
                   "unsupported model type \"%s\" (supported: BPE)", type);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (!absent(dropout) && (!cJSON_IsNumber(dropout) || dropout->valuedouble != 0.0))
        return bad(L, MT_ERR_UNSUPPORTED, "model.dropout",
                   "BPE dropout makes encoding random and is not supported (expected null)");
    MT_TRY(get_str(L, model, "model", "unk_token", false, &unk));
    MT_TRY(get_str(L, model, "model", "continuing_subword_prefix", false, &prefix));
    MT_TRY(get_str(L, model, "model", "end_of_word_suffix", false, &suffix));
    MT_TRY(get_bool(L, model, "model", "fuse_unk", false, &m->fuse_unk));
    MT_TRY(get_bool(L, model, "model", "byte_fallback", false, &m->byte_fallback));
    MT_TRY(get_bool(L, model, "model", "ignore_merges", false, &m->ignore_merges));
    if (prefix && *prefix) MT_TRY(dup(prefix, &m->prefix));
    if (suffix && *suffix) MT_TRY(dup(suffix, &m->suffix));
    MT_TRY(load_vocab(L, model));
    m->unk_id = -1;
    if (unk && (m->unk_id = vocab_id(m, unk)) < 0)
        return bad(L, MT_ERR_FORMAT, "model.unk_token", "\"%.60s\" is not in model.vocab", unk);
    return load_merges(L, model);
}

/* ---- normalizer ------------------------------------------------------------------------------ */

static mt_status norm_step(const loader *L, const cJSON *o, const char *path, const char *type) {
    mt_tokenizer *tok = L->tok;
    tk_norm n = {0};
    const char *a, *b;
    char p[PATH_MAX_];
    if (!strcmp(type, "Prepend")) {
        MT_TRY(get_str(L, o, path, "prepend", true, &a));
        n.kind = TK_NORM_PREPEND;
        MT_TRY(dup(a, &n.a));
    } else if (!strcmp(type, "Replace")) {
        MT_TRY(get_pattern(L, o, path, &a, NULL));
        MT_TRY(get_str(L, o, path, "content", true, &b));
        n.kind = TK_NORM_REPLACE;
        if (dup(a, &n.a) || dup(b, &n.b)) return mt_free(n.a), MT_ERR_NOMEM;
    } else
        return bad(L, MT_ERR_UNSUPPORTED, sub(p, path, "type"),
                   "unsupported normalizer \"%s\" (supported: Prepend, Replace with a string "
                   "pattern, Sequence of these)",
                   type);
    mt_status st = grow_steps((void **)&tok->norm, tok->n_norm, sizeof *tok->norm);
    if (st) return mt_free(n.a), mt_free(n.b), st;
    tok->norm[tok->n_norm++] = n;
    return MT_OK;
}

/* ---- pre-tokenizer --------------------------------------------------------------------------- */

static mt_status get_prepend(const loader *L, const cJSON *o, const char *path, tk_prepend *out) {
    const char *s;
    char p[PATH_MAX_];
    MT_TRY(get_str(L, o, path, "prepend_scheme", false, &s));
    if (!s) { /* older files: add_prefix_space */
        bool add = true;
        MT_TRY(get_bool(L, o, path, "add_prefix_space", true, &add));
        *out = add ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
        return MT_OK;
    }
    if (!strcmp(s, "always")) return *out = TK_PREPEND_ALWAYS, MT_OK;
    if (!strcmp(s, "first")) return *out = TK_PREPEND_FIRST, MT_OK;
    if (!strcmp(s, "never")) return *out = TK_PREPEND_NEVER, MT_OK;
    return bad(L, MT_ERR_FORMAT, sub(p, path, "prepend_scheme"),
               "expected \"always\", \"first\" or \"never\", found \"%s\"", s);
}

static mt_status get_behavior(const loader *L, const cJSON *o, const char *path, tk_behavior *out) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    const char *s;
    char p[PATH_MAX_];
    MT_TRY(get_str(L, o, path, "behavior", true, &s));
    for (int k = 0; k < 5; k++)
        if (!strcmp(s, names[k])) return *out = (tk_behavior)k, MT_OK;
    return bad(L, MT_ERR_FORMAT, sub(p, path, "behavior"),
               "expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous, "
               "found \"%s\"",
               s);
}

static mt_status pre_split(const loader *L, const cJSON *o, const char *path, tk_pretok *t) {
    const char *lit, *re;
    char p[PATH_MAX_], q[PATH_MAX_];
    MT_TRY(get_pattern(L, o, path, &lit, &re));
    MT_TRY(get_behavior(L, o, path, &t->behavior));
    MT_TRY(get_bool(L, o, path, "invert", false, &t->invert));
    if (lit) {
        t->kind = TK_PRE_SPLIT_LITERAL;
        return dup(lit, &t->literal);
    }
    int r = tk_regex_lookup(re);
    if (r < 0)
        return bad(L, MT_ERR_UNSUPPORTED, sub(q, sub(p, path, "pattern"), "Regex"),
                   "unknown split pattern \"%.300s\" (this reader runs only the GPT-2, Llama-3 / "
                   "cl100k and Qwen2 patterns)",
                   re);
    t->kind = TK_PRE_SPLIT_REGEX;
    t->regex = (tk_regex)r;
    return MT_OK;
}

static mt_status pre_step(const loader *L, const cJSON *o, const char *path, const char *type) {
    mt_tokenizer *tok = L->tok;
    tk_pretok t = {0};
    char p[PATH_MAX_];
    if (!strcmp(type, "Split")) {
        mt_status st = pre_split(L, o, path, &t);
        if (st) return mt_free(t.literal), st;
    } else if (!strcmp(type, "ByteLevel")) {
        t.kind = TK_PRE_BYTELEVEL;
        MT_TRY(get_bool(L, o, path, "add_prefix_space", true, &t.add_prefix_space));
        MT_TRY(get_bool(L, o, path, "use_regex", true, &t.use_regex));
    } else if (!strcmp(type, "Metaspace")) {
        t.kind = TK_PRE_METASPACE;
        MT_TRY(get_prepend(L, o, path, &t.prepend));
        MT_TRY(get_bool(L, o, path, "split", true, &t.split));
        MT_TRY(get_char(L, o, path, "replacement", "\xE2\x96\x81", &t.replacement));
    } else
        return bad(L, MT_ERR_UNSUPPORTED, sub(p, path, "type"),
                   "unsupported pre-tokenizer \"%s\" (supported: ByteLevel, Split, Metaspace, "
                   "Sequence of these)",
                   type);
    mt_status st = grow_steps((void **)&tok->pre, tok->n_pre, sizeof *tok->pre);
    if (st) return mt_free(t.literal), mt_free(t.replacement), st;
    tok->pre[tok->n_pre++] = t;
    return MT_OK;
}

/* ---- decoder --------------------------------------------------------------------------------- */

static mt_status dec_step(const loader *L, const cJSON *o, const char *path, const char *type) {
    mt_tokenizer *tok = L->tok;
    tk_dec d = {0};
    const char *a, *b;
    char p[PATH_MAX_];
    mt_status st = MT_OK;
    if (!strcmp(type, "ByteLevel"))
        d.kind = TK_DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback"))
        d.kind = TK_DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse"))
        d.kind = TK_DEC_FUSE;
    else if (!strcmp(type, "Replace")) {
        d.kind = TK_DEC_REPLACE;
        MT_TRY(get_pattern(L, o, path, &a, NULL));
        MT_TRY(get_str(L, o, path, "content", true, &b));
        if ((st = dup(a, &d.a)) == MT_OK) st = dup(b, &d.b);
    } else if (!strcmp(type, "Strip")) {
        int64_t start = 0, stop = 0;
        d.kind = TK_DEC_STRIP;
        MT_TRY(get_int(L, cJSON_GetObjectItemCaseSensitive(o, "start"), sub(p, path, "start"), 0,
                       1 << 20, &start));
        MT_TRY(get_int(L, cJSON_GetObjectItemCaseSensitive(o, "stop"), sub(p, path, "stop"), 0,
                       1 << 20, &stop));
        d.start = (int)start, d.stop = (int)stop;
        st = get_char(L, o, path, "content", NULL, &d.a);
    } else if (!strcmp(type, "Metaspace")) {
        d.kind = TK_DEC_METASPACE;
        MT_TRY(get_prepend(L, o, path, &d.prepend));
        st = get_char(L, o, path, "replacement", "\xE2\x96\x81", &d.a);
    } else
        return bad(L, MT_ERR_UNSUPPORTED, sub(p, path, "type"),
                   "unsupported decoder \"%s\" (supported: ByteLevel, Replace, ByteFallback, Fuse, "
                   "Strip, Metaspace, Sequence of these)",
                   type);
    if (st == MT_OK) st = grow_steps((void **)&tok->dec, tok->n_dec, sizeof *tok->dec);
    if (st) return mt_free(d.a), mt_free(d.b), st;
    tok->dec[tok->n_dec++] = d;
    return MT_OK;
}

/* ---- post-processor -------------------------------------------------------------------------- */

static mt_status tpl_push(int32_t **v, size_t *n, int32_t id) {
    MT_TRY(grow_steps((void **)v, *n, sizeof **v));
    (*v)[(*n)++] = id;
    return MT_OK;
}

/* TemplateProcessing's "single": special tokens before and after one $A. */
static mt_status post_template(const loader *L, const cJSON *o, const char *path) {
    mt_tokenizer *tok = L->tok;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    char p[PATH_MAX_], q[PATH_MAX_];
    if (!cJSON_IsArray(single))
        return bad(L, MT_ERR_FORMAT, sub(p, path, "single"), "expected an array");
    if (tok->n_tpl_pre || tok->n_tpl_post)
        return bad(L, MT_ERR_UNSUPPORTED, path, "a second template post-processor");
    bool seen_a = false;
    int i = 0;
    for (const cJSON *it = single->child; it; it = it->next, i++) {
        idx(p, sub(q, path, "single"), i);
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (seq) {
            if (seen_a)
                return bad(L, MT_ERR_UNSUPPORTED, p, "more than one sequence in the template");
            seen_a = true;
            continue;
        }
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
        if (!cJSON_IsString(name))
            return bad(L, MT_ERR_FORMAT, p,
                       "expected {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": ...}}");
        const cJSON *def = cJSON_GetObjectItemCaseSensitive(specials, name->valuestring);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids))
            return bad(L, MT_ERR_FORMAT, sub(q, path, "special_tokens"),
                       "\"%.60s\" (used by single[%d]) has no ids", name->valuestring, i);
        int j = 0;
        for (const cJSON *x = ids->child; x; x = x->next, j++) {
            int64_t id = 0;
            char r[PATH_MAX_], s2[PATH_MAX_];
            pathf(r, "%s.special_tokens[\"%.40s\"].ids", path, name->valuestring);
            MT_TRY(get_int(L, x, idx(s2, r, j), 0, INT32_MAX - 1, &id));
            if (seen_a)
                MT_TRY(tpl_push(&tok->tpl_post, &tok->n_tpl_post, (int32_t)id));
            else
                MT_TRY(tpl_push(&tok->tpl_pre, &tok->n_tpl_pre, (int32_t)id));
        }
    }
    if (!seen_a) return bad(L, MT_ERR_FORMAT, sub(p, path, "single"), "no {\"Sequence\": ...}");
    return MT_OK;
}

/* RobertaProcessing / BertProcessing: cls $A sep, each ["token", id]. */
static mt_status post_cls_sep(const loader *L, const cJSON *o, const char *path) {
    mt_tokenizer *tok = L->tok;
    const char *keys[2] = {"cls", "sep"};
    if (tok->n_tpl_pre || tok->n_tpl_post)
        return bad(L, MT_ERR_UNSUPPORTED, path, "a second template post-processor");
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        char p[PATH_MAX_], q[PATH_MAX_];
        int64_t id = 0;
        sub(p, path, keys[k]);
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
            return bad(L, MT_ERR_FORMAT, p, "expected [\"token\", id]");
        MT_TRY(get_int(L, v->child->next, idx(q, p, 1), 0, INT32_MAX - 1, &id));
        if (k == 0)
            MT_TRY(tpl_push(&tok->tpl_pre, &tok->n_tpl_pre, (int32_t)id));
        else
            MT_TRY(tpl_push(&tok->tpl_post, &tok->n_tpl_post, (int32_t)id));
    }
    return MT_OK;
}

static mt_status post_step(const loader *L, const cJSON *o, const char *path, const char *type) {
    char p[PATH_MAX_];
    if (!strcmp(type, "ByteLevel")) return MT_OK; /* offsets only */
    if (!strcmp(type, "TemplateProcessing")) return post_template(L, o, path);
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing"))
        return post_cls_sep(L, o, path);
    return bad(L, MT_ERR_UNSUPPORTED, sub(p, path, "type"),
               "unsupported post-processor \"%s\" (supported: TemplateProcessing, "
               "RobertaProcessing, BertProcessing, ByteLevel, Sequence of these)",
               type);
}

/* ---- added tokens ---------------------------------------------------------------------------- */

/* Replace: every occurrence of a, left to right; z counts the bytes still aligned to the first
 * original character (copies of them, and text inserted for a match that ends among them). */
static mt_status norm_replace(const tk_norm *r, const tk_bytes *in, tk_bytes *out, size_t *z) {
    size_t an = strlen(r->a), bn = strlen(r->b), i = 0, zin = *z;
    *z = 0;
    MT_TRY(tk_bytes_reserve(out, in->n));
    while (i < in->n) {
        const char *hit = an ? memmem(in->p + i, in->n - i, r->a, an) : NULL;
        size_t at = hit ? (size_t)(hit - in->p) : in->n;
        MT_TRY(tk_bytes_add(out, in->p + i, at - i));
        *z += tk_sub_z(zin, i, at);
        if (!hit) break;
        MT_TRY(tk_bytes_add(out, r->b, bn));
        if (at + an - 1 < zin) *z += bn;
        i = at + an;
    }
    return MT_OK;
}

mt_status tk_normalize(const mt_tokenizer *tok, const char *s, size_t n, tk_bytes *out,
                       tk_bytes *tmp, size_t *z) {
    out->n = 0;
    MT_TRY(tk_bytes_add(out, s, n));
    for (size_t k = 0; k < tok->n_norm; k++) {
        const tk_norm *r = &tok->norm[k];
        tmp->n = 0;
        if (r->kind == TK_NORM_PREPEND) {
            if (out->n == 0) continue; /* Prepend leaves an empty string alone */
            MT_TRY(tk_bytes_add(tmp, r->a, strlen(r->a)));
            MT_TRY(tk_bytes_add(tmp, out->p, out->n));
            if (*z) *z += strlen(r->a);
        } else
            MT_TRY(norm_replace(r, out, tmp, z));
        tk_bytes t = *out;
        *out = *tmp, *tmp = t;
    }
    return MT_OK;
}

/* The id `tokenizers` gives a new added token (AddedVocabulary::add_tokens): its id if the
 * content is known, else one past the largest added id, or the model's vocab length. */
static int64_t added_new_id(const mt_tokenizer *tok, const char *content) {
    int32_t known = tk_strmap_get(&tok->added_by_content, content, strlen(content));
    if (known >= 0) return tok->added[known].id;
    int32_t v = vocab_id(&tok->bpe, content);
    if (v >= 0) return v;
    int64_t vlen = (int64_t)tok->bpe.vocab.n, max = -1;
    for (size_t k = 0; k < tok->n_added; k++)
        if (tok->added[k].id > max) max = tok->added[k].id;
    if (max < 0) return vlen;
    return max >= vlen || vlen == 0 ? max + 1 : vlen;
}

static mt_status added_one(const loader *L, const cJSON *it, const char *path) {
    mt_tokenizer *tok = L->tok;
    tk_added a = {0};
    const char *content;
    if (!cJSON_IsObject(it)) return bad(L, MT_ERR_FORMAT, path, "expected an object");
    MT_TRY(get_str(L, it, path, "content", true, &content));
    MT_TRY(get_bool(L, it, path, "special", false, &a.special));
    MT_TRY(get_bool(L, it, path, "single_word", false, &a.single_word));
    MT_TRY(get_bool(L, it, path, "lstrip", false, &a.lstrip));
    MT_TRY(get_bool(L, it, path, "rstrip", false, &a.rstrip));
    MT_TRY(get_bool(L, it, path, "normalized", !a.special, &a.normalized));
    if (!*content) return MT_OK; /* `tokenizers` ignores empty added tokens */
    int64_t id = added_new_id(tok, content);
    if (id > INT32_MAX - 1) return bad(L, MT_ERR_FORMAT, path, "too many added tokens");
    a.id = (int32_t)id;
    a.len = strlen(content);
    int32_t known = tk_strmap_get(&tok->added_by_content, content, a.len);
    if (known >= 0) { /* the same content again: the later flags win */
        a.content = tok->added[known].content;
        tok->added[known] = a;
        return MT_OK;
    }
    MT_TRY(dup(content, &a.content));
    mt_status st = grow_steps((void **)&tok->added, tok->n_added, sizeof *tok->added);
    if (!st) st = tk_strmap_put(&tok->added_by_content, content, a.len, (int32_t)tok->n_added);
    if (st) return mt_free(a.content), st;
    tok->added[tok->n_added++] = a;
    return MT_OK;
}

static mt_status load_added(const loader *L, const cJSON *root) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    char p[PATH_MAX_];
    if (absent(list)) return MT_OK;
    if (!cJSON_IsArray(list)) return bad(L, MT_ERR_FORMAT, "added_tokens", "expected an array");
    int i = 0;
    for (const cJSON *it = list->child; it; it = it->next, i++)
        MT_TRY(added_one(L, it, idx(p, "added_tokens", i)));
    return MT_OK;
}

/* Longest pattern first; among equal patterns (two normalized tokens can normalize alike) the one
 * listed first wins, where `tokenizers` 0.23 picks one in hash order, differently run to run. */
static int cmp_len_desc(const void *x, const void *y, void *ctx) {
    const mt_tokenizer *tok = ctx;
    int32_t i = *(const int32_t *)x, j = *(const int32_t *)y;
    size_t a = tok->added[i].pat_len, b = tok->added[j].pat_len;
    return a < b ? 1 : a > b ? -1 : (i > j) - (i < j);
}

/* Patterns (normalized content for normalized tokens), and the by-first-byte match index. */
static mt_status index_added(mt_tokenizer *tok) {
    tk_bytes pat = {0}, tmp = {0};
    mt_status st = MT_OK;
    for (size_t k = 0; k < tok->n_added && !st; k++) {
        tk_added *a = &tok->added[k];
        if (!a->normalized) {
            a->pattern = a->content, a->pat_len = a->len;
            continue;
        }
        size_t z = 0;
        if ((st = tk_normalize(tok, a->content, a->len, &pat, &tmp, &z))) break;
        a->pattern = mt_alloc(pat.n + 1, "added token pattern");
        if (!a->pattern)
            st = MT_ERR_NOMEM;
        else
            memcpy(a->pattern, pat.p, pat.n + 1), a->pat_len = pat.n;
    }
    tk_bytes_free(&pat), tk_bytes_free(&tmp);
    MT_TRY(st);
    for (int set = 0; set < 2; set++) {
        uint32_t *off = tok->match_off[set];
        memset(off, 0, sizeof tok->match_off[set]);
        for (size_t k = 0; k < tok->n_added; k++)
            if (tok->added[k].normalized == set && tok->added[k].pat_len)
                off[(unsigned char)tok->added[k].pattern[0] + 1]++;
        for (int b = 0; b < 256; b++) off[b + 1] += off[b];
        tok->match_idx[set] = mt_alloc((off[256] + 1) * sizeof(int32_t), "added token index");
        if (!tok->match_idx[set]) return MT_ERR_NOMEM;
        uint32_t fill[256];
        memcpy(fill, off, sizeof fill);
        for (size_t k = 0; k < tok->n_added; k++)
            if (tok->added[k].normalized == set && tok->added[k].pat_len)
                tok->match_idx[set][fill[(unsigned char)tok->added[k].pattern[0]]++] = (int32_t)k;
        for (int b = 0; b < 256; b++)
            qsort_r(tok->match_idx[set] + off[b], off[b + 1] - off[b], sizeof(int32_t),
                    cmp_len_desc, tok);
    }
    return MT_OK;
}

/* ---- ids, BOS and EOS ------------------------------------------------------------------------ */

static mt_status index_ids(const loader *L) {
    mt_tokenizer *tok = L->tok;
    int32_t n = tok->bpe.n_ids;
    for (size_t k = 0; k < tok->n_added; k++)
        if (tok->added[k].id >= n) n = tok->added[k].id + 1;
    for (size_t k = 0; k < tok->n_tpl_pre + tok->n_tpl_post; k++) {
        int32_t id = k < tok->n_tpl_pre ? tok->tpl_pre[k] : tok->tpl_post[k - tok->n_tpl_pre];
        if (id >= n)
            return bad(L, MT_ERR_FORMAT, "post_processor",
                       "template token id %d is not in the vocabulary (size %d)", id, n);
    }
    tok->n_ids = n;
    tok->added_of_id = mt_alloc((size_t)(n + 1) * sizeof *tok->added_of_id, "added token index");
    if (!tok->added_of_id) return MT_ERR_NOMEM;
    for (int32_t i = 0; i < n; i++) tok->added_of_id[i] = -1;
    for (size_t k = 0; k < tok->n_added; k++) tok->added_of_id[tok->added[k].id] = (int32_t)k;
    tok->bos = tok->n_tpl_pre ? tok->tpl_pre[0] : -1;
    tok->eos = tok->n_tpl_post ? tok->tpl_post[0] : -1;
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"};
    for (int k = 0; k < 4 && tok->eos < 0; k++) {
        int32_t a = tk_strmap_get(&tok->added_by_content, eos_names[k], strlen(eos_names[k]));
        if (a >= 0 && tok->added[a].special) tok->eos = tok->added[a].id;
    }
    return MT_OK;
}

void tk_bytemap_init(tk_bytemap *m) {
    int next = 256;
    for (int c = 0; c < 324; c++) m->byte_of[c] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = printable ? b : next++;
        char u[4];
        m->len[b] = (uint8_t)tk_utf8_put((uint32_t)cp, u);
        memcpy(m->utf8[b], u, m->len[b]);
        m->byte_of[cp] = (int16_t)b;
    }
}

/* ---- the whole file -------------------------------------------------------------------------- */

static mt_status load_root(const loader *L, const cJSON *root) {
    mt_tokenizer *tok = L->tok;
    if (!cJSON_IsObject(root)) return bad(L, MT_ERR_FORMAT, "(top level)", "expected an object");
    MT_TRY(load_model(L, root));
    MT_TRY(each_step(L, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer",
                     "normalizers", norm_step));
    MT_TRY(each_step(L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer",
                     "pretokenizers", pre_step));
    MT_TRY(each_step(L, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor",
                     "processors", post_step));
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    tok->has_decoder = !absent(dec);
    MT_TRY(each_step(L, dec, "decoder", "decoders", dec_step));
    MT_TRY(load_added(L, root));
    MT_TRY(index_added(tok));
    return index_ids(L);
}

mt_status tk_load(const char *json, size_t n, const char *name, mt_tokenizer *tok) {
    uint8_t digest[MT_SHA256_BYTES];
    MT_TRY(mt_sha256(json, n, digest));
    mt_hex(digest, MT_SHA256_BYTES, tok->digest);
    tk_bytemap_init(&tok->bytemap);
    tok->bos = tok->eos = -1;
    /* JSON text is UTF-8 (serde_json insists); every string below may reach the scanners, which
     * read whole characters. */
    size_t bad_at = tk_utf8_check(json, n);
    if (bad_at < n) return mt_fail(MT_ERR_FORMAT, "%s: not valid UTF-8 at byte %zu", name, bad_at);
    cJSON *root;
    MT_TRY(mt_json_parse(json, n, name, &root));
    loader L = {name, tok};
    mt_status st = load_root(&L, root);
    cJSON_Delete(root);
    return st;
}
