/* Tests for the tokenizer.json reader (tokenizer.h): every test string of
 * tests/data/tokenizers/cases.json (tests/oracles/tokenizer_oracle.py) through every tokenizer
 * there, ids equal to Hugging Face `tokenizers`' with and without special tokens, decode equal to
 * its decode (skip_special on and off), decodes of arbitrary id lists (invalid UTF-8 from byte
 * tokens), then lookups, BOS/EOS, digest, appending, threads, error messages, allocation failures,
 * and a speed note (printed, not asserted).
 *
 * argv[1] is tests/data/tokenizers, argv[2] a scratch directory (created). */
#include "mt_test.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/timer.h"
#include "medtrain/tokenizer.h"

static const char *data_dir = "tests/data/tokenizers";
static const char *tmp_dir = "/tmp";

/* ---- fixture helpers ------------------------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t n;
} text;

static text unhex(const char *h) {
    size_t n = strlen(h) / 2;
    text t = {malloc(n + 1), n};
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        t.p[i] = (char)v;
    }
    t.p[n] = '\0';
    return t;
}

/* At most 60 bytes of s, printable ASCII as is, the rest as \xNN (for messages). */
static const char *show(const char *s, size_t n) {
    static char buf[4][256];
    static int which;
    char *b = buf[which++ & 3], *o = b;
    for (size_t i = 0; i < n && i < 60; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127 && c != '\\')
            *o++ = (char)c;
        else
            o += sprintf(o, "\\x%02x", c);
    }
    if (n > 60) o += sprintf(o, "...(%zu bytes)", n);
    *o = '\0';
    return b;
}

static cJSON *load_cases(void) {
    char path[4096];
    cJSON *doc = NULL;
    snprintf(path, sizeof path, "%s/cases.json", data_dir);
    MT_CHECK_OK(mt_json_read_file(path, &doc));
    return doc;
}

static mt_tokenizer *open_tok(const char *file) {
    char path[4096];
    mt_tokenizer *tok = NULL;
    snprintf(path, sizeof path, "%s/%s", data_dir, file);
    MT_CHECK_OK(mt_tokenizer_load(path, &tok));
    return tok;
}

/* ids equal to the JSON array want; on a difference, says where. */
static bool same_ids(const mt_token_ids *got, const cJSON *want, const char *what,
                     const char *tname, const text *t) {
    size_t n = (size_t)cJSON_GetArraySize(want), k = 0;
    const cJSON *w = want->child;
    for (; k < n && k < got->n; k++, w = w->next)
        if (got->ids[k] != (int32_t)w->valuedouble) break;
    if (k == n && n == got->n) return true;
    mt_test_check_failed(__FILE__, __LINE__,
                         "%s %s \"%s\": %zu ids, expected %zu; first difference at %zu: %d vs %d",
                         tname, what, show(t->p, t->n), got->n, n, k, k < got->n ? got->ids[k] : -1,
                         k < n ? (int)w->valuedouble : -1);
    return false;
}

/* Decoded text equal to the case's hex (or to the test string when the key is absent). */
static void check_decode(const mt_tokenizer *tok, const mt_token_ids *ids, bool skip,
                         const cJSON *c, const char *key, const text *t, const char *tname) {
    char *got = NULL;
    size_t len = 0;
    MT_CHECK_OK(mt_tokenizer_decode(tok, ids->ids, ids->n, skip, &got, &len));
    if (!got) return;
    const cJSON *h = cJSON_GetObjectItem(c, key);
    text want = h ? unhex(h->valuestring) : (text){NULL, 0};
    const char *wp = h ? want.p : t->p;
    size_t wn = h ? want.n : t->n;
    MT_CHECK(len == wn && !memcmp(got, wp, wn), "%s %s of \"%s\": \"%s\", expected \"%s\"", tname,
             key, show(t->p, t->n), show(got, len), show(wp, wn));
    MT_CHECK(got[len] == '\0', "%s: decode not NUL-terminated", tname);
    free(want.p);
    mt_free(got);
}

/* ---- against `tokenizers` -------------------------------------------------------------------- */

static int n_strings_checked;

static void check_tokenizer(const char *tname, const cJSON *entry, const text *tests, int ntest) {
    mt_tokenizer *tok = open_tok(cJSON_GetObjectItem(entry, "file")->valuestring);
    if (!tok) return;
    MT_CHECK(mt_tokenizer_vocab_size(tok) == cJSON_GetObjectItem(entry, "vocab_size")->valueint,
             "%s: vocab size %d", tname, mt_tokenizer_vocab_size(tok));
    const cJSON *cases = cJSON_GetObjectItem(entry, "cases");
    MT_CHECK(cJSON_GetArraySize(cases) == ntest, "%s", tname);
    mt_token_ids ids = {0}, ids_sp = {0};
    int i = 0;
    for (const cJSON *c = cases->child; c && i < ntest; c = c->next, i++) {
        const text *t = &tests[i];
        ids.n = ids_sp.n = 0;
        MT_CHECK_OK(mt_tokenizer_encode(tok, t->p, t->n, false, &ids));
        MT_CHECK_OK(mt_tokenizer_encode(tok, t->p, t->n, true, &ids_sp));
        same_ids(&ids, cJSON_GetObjectItem(c, "ids"), "ids", tname, t);
        same_ids(&ids_sp, cJSON_GetObjectItem(c, "ids_special"), "ids_special", tname, t);
        check_decode(tok, &ids, false, c, "decoded", t, tname);
        check_decode(tok, &ids_sp, false, c, "decoded_special", t, tname);
        check_decode(tok, &ids_sp, true, c, "decoded_special_skip", t, tname);
        n_strings_checked++;
    }
    /* Arbitrary id lists: every id in order, random runs, byte soups. */
    const cJSON *decodes = cJSON_GetObjectItem(entry, "decodes");
    i = 0;
    for (const cJSON *d = decodes->child; d; d = d->next, i++) {
        const cJSON *list = cJSON_GetObjectItem(d, "ids");
        ids.n = 0;
        for (const cJSON *x = list->child; x; x = x->next) {
            if (ids.n == ids.cap) {
                ids.cap = ids.cap ? 2 * ids.cap : 64;
                ids.ids = mt_realloc(ids.ids, ids.cap, sizeof *ids.ids, "test ids");
            }
            ids.ids[ids.n++] = (int32_t)x->valuedouble;
        }
        char key[2][16] = {"decoded", "decoded_skip"};
        for (int skip = 0; skip < 2; skip++) {
            char *got = NULL;
            size_t len = 0;
            MT_CHECK_OK(mt_tokenizer_decode(tok, ids.ids, ids.n, skip, &got, &len));
            text want = unhex(cJSON_GetObjectItem(d, key[skip])->valuestring);
            MT_CHECK(got && len == want.n && !memcmp(got, want.p, want.n),
                     "%s decodes[%d] %s: \"%s\", expected \"%s\"", tname, i, key[skip],
                     got ? show(got, len) : "", show(want.p, want.n));
            free(want.p);
            mt_free(got);
        }
    }
    /* token_to_id for a few strings */
    const cJSON *tid = cJSON_GetObjectItem(entry, "token_ids");
    for (const cJSON *x = tid->child; x; x = x->next) {
        int32_t want = cJSON_IsNull(x) ? -1 : (int32_t)x->valuedouble;
        MT_CHECK(mt_tokenizer_token_id(tok, x->string) == want,
                 "%s: token_id(%s) = %d, expected %d", tname, x->string,
                 mt_tokenizer_token_id(tok, x->string), want);
        if (want >= 0) {
            size_t len;
            const char *s = mt_tokenizer_token(tok, want, &len);
            MT_CHECK(s && len == strlen(x->string) && !strcmp(s, x->string), "%s: token(%d)", tname,
                     want);
        }
    }
    mt_token_ids_free(&ids), mt_token_ids_free(&ids_sp);
    mt_tokenizer_free(tok);
}

static void test_against_tokenizers(void) {
    cJSON *doc = load_cases();
    if (!doc) return;
    const cJSON *tj = cJSON_GetObjectItem(doc, "tests");
    int ntest = cJSON_GetArraySize(tj), i = 0;
    text *tests = calloc((size_t)ntest, sizeof *tests);
    for (const cJSON *t = tj->child; t; t = t->next)
        tests[i++] = unhex(cJSON_GetObjectItem(t, "hex")->valuestring);
    int ntok = 0;
    for (const cJSON *e = cJSON_GetObjectItem(doc, "tokenizers")->child; e; e = e->next, ntok++)
        check_tokenizer(e->string, e, tests, ntest);
    printf("  %d tokenizers x %d strings, %d checked (tokenizers %s)\n", ntok, ntest,
           n_strings_checked, cJSON_GetObjectItem(doc, "tokenizers_version")->valuestring);
    MT_CHECK(ntok >= 8 && ntest >= 60, "fixture too small: %d tokenizers, %d strings", ntok, ntest);
    for (i = 0; i < ntest; i++) free(tests[i].p);
    free(tests);
    cJSON_Delete(doc);
}

/* ---- by hand --------------------------------------------------------------------------------- */

static void encode_str(const mt_tokenizer *tok, const char *s, bool sp, mt_token_ids *ids) {
    ids->n = 0;
    MT_CHECK_OK(mt_tokenizer_encode(tok, s, strlen(s), sp, ids));
}

static void test_special_tokens(void) {
    mt_tokenizer *l3 = open_tok("llama3.json"), *l2 = open_tok("llama2.json");
    mt_tokenizer *g2 = open_tok("gpt2.json"), *always = open_tok("sp_meta_always.json");
    if (!l3 || !l2 || !g2 || !always) goto out;
    int32_t bot = mt_tokenizer_token_id(l3, "<|begin_of_text|>");
    int32_t eot = mt_tokenizer_token_id(l3, "<|eot_id|>");
    MT_CHECK(bot >= 0 && eot >= 0 && mt_tokenizer_bos(l3) == bot);
    MT_CHECK(mt_tokenizer_eos(l3) == mt_tokenizer_token_id(l3, "<|end_of_text|>"));
    MT_CHECK(mt_tokenizer_is_special(l3, eot) && !mt_tokenizer_is_special(l3, 279));
    MT_CHECK(
        !mt_tokenizer_is_special(l3, mt_tokenizer_token_id(l3, "mmHg"))); /* added, not special */
    MT_CHECK(mt_tokenizer_bos(l2) == 1 && mt_tokenizer_eos(l2) == 2);
    MT_CHECK(mt_tokenizer_bos(always) == 1 && mt_tokenizer_eos(always) == 2); /* from "$A </s>" */
    MT_CHECK(mt_tokenizer_bos(g2) == -1, "GPT-2 adds no BOS");
    MT_CHECK(mt_tokenizer_eos(g2) == mt_tokenizer_token_id(g2, "<|endoftext|>"));
    MT_CHECK(mt_tokenizer_token(l3, -1, NULL) == NULL &&
             mt_tokenizer_token(l3, 1 << 30, NULL) == NULL);

    /* A special token in the text is one id; add_special puts BOS first. */
    mt_token_ids ids = {0};
    encode_str(l3, "<|eot_id|>", true, &ids);
    MT_CHECK(ids.n == 2 && ids.ids[0] == bot && ids.ids[1] == eot);
    encode_str(l3, "", true, &ids);
    MT_CHECK(ids.n == 1 && ids.ids[0] == bot);
    encode_str(l3, "", false, &ids);
    MT_CHECK(ids.n == 0);
    encode_str(always, "x", true, &ids);
    MT_CHECK(ids.n >= 3 && ids.ids[0] == 1 && ids.ids[ids.n - 1] == 2);

    /* encode appends: a prompt and its response in one buffer */
    ids.n = 0;
    MT_CHECK_OK(mt_tokenizer_encode(l3, "Findings:", 9, true, &ids));
    size_t n1 = ids.n;
    MT_CHECK_OK(mt_tokenizer_encode(l3, " clear.<|eot_id|>", 17, false, &ids));
    MT_CHECK(ids.n > n1 + 1 && ids.ids[0] == bot && ids.ids[ids.n - 1] == eot);
    char *s = NULL;
    MT_CHECK_OK(mt_tokenizer_decode(l3, ids.ids, ids.n, true, &s, NULL));
    MT_CHECK(s && !strcmp(s, "Findings: clear."), "%s", s ? s : "");
    mt_free(s);
    mt_token_ids_free(&ids);
    MT_CHECK(ids.ids == NULL && ids.n == 0 && ids.cap == 0);
out:
    mt_tokenizer_free(l3), mt_tokenizer_free(l2), mt_tokenizer_free(g2), mt_tokenizer_free(always);
}

static void test_digest(void) {
    char path[4096], hex[MT_SHA256_HEX];
    snprintf(path, sizeof path, "%s/llama3.json", data_dir);
    MT_CHECK_OK(mt_sha256_file(path, hex));
    mt_tokenizer *tok = open_tok("llama3.json");
    if (!tok) return;
    MT_CHECK(!strcmp(mt_tokenizer_digest(tok), hex), "%s vs %s", mt_tokenizer_digest(tok), hex);
    mt_tokenizer_free(tok);
}

static void test_bad_calls(void) {
    mt_tokenizer *tok = open_tok("llama2.json");
    if (!tok) return;
    mt_token_ids ids = {0};
    MT_CHECK_OK(mt_tokenizer_encode(tok, "ok", 2, false, &ids));
    size_t n = ids.n;
    /* invalid UTF-8: refused with the offset, and ids keeps what it had */
    MT_CHECK_FAILS(mt_tokenizer_encode(tok, "ab\xC3(", 4, false, &ids), MT_ERR_ARG,
                   "not valid UTF-8", "byte 2");
    MT_CHECK_FAILS(mt_tokenizer_encode(tok, "\xED\xA0\x80", 3, false, &ids), MT_ERR_ARG, "byte 0");
    MT_CHECK_FAILS(mt_tokenizer_encode(tok, "\xF4\x90\x80\x80", 4, false, &ids), MT_ERR_ARG,
                   "UTF-8");
    MT_CHECK_FAILS(mt_tokenizer_encode(tok, "\xC0\xAF", 2, false, &ids), MT_ERR_ARG, "UTF-8");
    MT_CHECK(ids.n == n);
    /* NUL is an ordinary character */
    ids.n = 0;
    MT_CHECK_OK(mt_tokenizer_encode(tok, "a\0b", 3, false, &ids));
    char *s = NULL;
    size_t len = 0;
    MT_CHECK_OK(mt_tokenizer_decode(tok, ids.ids, ids.n, false, &s, &len));
    MT_CHECK(s && len == 3 && !memcmp(s, "a\0b", 3));
    mt_free(s);
    int32_t bad[] = {5, -1};
    MT_CHECK_FAILS(mt_tokenizer_decode(tok, bad, 2, false, &s, NULL), MT_ERR_ARG, "id -1",
                   "position 1", "outside the vocabulary");
    bad[1] = mt_tokenizer_vocab_size(tok);
    MT_CHECK_FAILS(mt_tokenizer_decode(tok, bad, 2, false, &s, NULL), MT_ERR_ARG, "outside");
    MT_CHECK_OK(mt_tokenizer_decode(tok, NULL, 0, false, &s, &len));
    MT_CHECK(s && len == 0 && s[0] == '\0');
    mt_free(s);
    mt_token_ids_free(&ids);
    mt_tokenizer_free(tok);
}

/* Two threads encode the same strings with one tokenizer and get the same ids. */
typedef struct job {
    const mt_tokenizer *tok;
    size_t total;
    mt_status st;
} job;

static const char *const THREAD_TEXT =
    "IMPRESSION: No acute cardiopulmonary process. Stable 4 mm nodule; it's unchanged. 胸部 🙂";

static void *thread_main(void *arg) {
    job *j = arg;
    mt_token_ids ids = {0};
    for (int r = 0; r < 300 && j->st == MT_OK; r++) {
        ids.n = 0;
        j->st = mt_tokenizer_encode(j->tok, THREAD_TEXT, strlen(THREAD_TEXT), true, &ids);
        for (size_t k = 0; k < ids.n; k++) j->total = j->total * 31 + (size_t)ids.ids[k];
    }
    mt_token_ids_free(&ids);
    return NULL;
}

static void test_threads(void) {
    mt_tokenizer *tok = open_tok("llama3.json");
    if (!tok) return;
    job j[3] = {{tok, 0, MT_OK}, {tok, 0, MT_OK}, {tok, 0, MT_OK}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, thread_main, &j[k]);
    thread_main(&j[2]);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    MT_CHECK(j[0].st == MT_OK && j[1].st == MT_OK && j[2].st == MT_OK);
    MT_CHECK(j[0].total == j[2].total && j[1].total == j[2].total);
    mt_tokenizer_free(tok);
}

/* ---- errors ---------------------------------------------------------------------------------- */

/* A tokenizer.json around the given parts (each a JSON value as text). */
static char *make_json(const char *model, const char *pre, const char *norm, const char *dec,
                       const char *post) {
    static const char *const base_model =
        "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}";
    char *s = malloc(8192);
    snprintf(s, 8192,
             "{\"version\": \"1.0\", \"added_tokens\": [],\n \"normalizer\": %s,\n"
             " \"pre_tokenizer\": %s,\n \"post_processor\": %s,\n \"decoder\": %s,\n"
             " \"model\": %s}\n",
             norm ? norm : "null", pre ? pre : "null", post ? post : "null", dec ? dec : "null",
             model ? model : base_model);
    return s;
}

#define LOAD_FAILS(json, code, ...)                                                                \
    do {                                                                                           \
        char *j_ = (json);                                                                         \
        mt_tokenizer *t_ = NULL;                                                                   \
        MT_CHECK_FAILS(mt_tokenizer_load_buffer(j_, strlen(j_), "my/tokenizer.json", &t_), code,   \
                       "my/tokenizer.json", __VA_ARGS__);                                          \
        MT_CHECK(t_ == NULL);                                                                      \
        mt_tokenizer_free(t_);                                                                     \
        free(j_);                                                                                  \
    } while (0)

/* Ids no token has (a hole in the vocab) decode to nothing and an id past the end is an error.
 * An added token not in the vocab gets the id `tokenizers` gives it, whatever the file says: the
 * vocab's length (2 here, the id of "b" too; the added token wins, as there). */
static void test_vocab_holes(void) {
    const char *json = "{\"added_tokens\": [{\"id\": 7, \"content\": \"<e>\", \"special\": true}],"
                       " \"model\": {\"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}";
    mt_tokenizer *tok = NULL;
    MT_CHECK_OK(mt_tokenizer_load_buffer(json, strlen(json), "holes.json", &tok));
    if (!tok) return;
    MT_CHECK(mt_tokenizer_vocab_size(tok) == 3, "%d", mt_tokenizer_vocab_size(tok));
    MT_CHECK(mt_tokenizer_token_id(tok, "<e>") == 2 && mt_tokenizer_token_id(tok, "b") == 2);
    MT_CHECK(mt_tokenizer_token(tok, 1, NULL) == NULL && mt_tokenizer_eos(tok) == -1);
    int32_t ids[] = {0, 1, 2, 3};
    char *s = NULL;
    MT_CHECK_OK(mt_tokenizer_decode(tok, ids, 3, false, &s, NULL));
    MT_CHECK(s && !strcmp(s, "a <e>"), "%s", s ? s : "");
    mt_free(s);
    MT_CHECK_OK(mt_tokenizer_decode(tok, ids, 3, true, &s, NULL));
    MT_CHECK(s && !strcmp(s, "a"), "%s", s ? s : "");
    mt_free(s);
    MT_CHECK_FAILS(mt_tokenizer_decode(tok, ids, 4, false, &s, NULL), MT_ERR_ARG, "id 3");
    mt_tokenizer_free(tok);
}

static void test_errors(void) {
    char path[4096];
    mt_tokenizer *tok = NULL;
    /* the minimal file loads, and merges */
    char *ok = make_json(NULL, NULL, NULL, NULL, NULL);
    MT_CHECK_OK(mt_tokenizer_load_buffer(ok, strlen(ok), "t.json", &tok));
    if (tok) {
        mt_token_ids ids = {0};
        encode_str(tok, "abba", false, &ids);
        MT_CHECK(ids.n == 3 && ids.ids[0] == 2 && ids.ids[1] == 1 && ids.ids[2] == 0);
        char *s = NULL;
        MT_CHECK_OK(mt_tokenizer_decode(tok, ids.ids, ids.n, false, &s, NULL));
        MT_CHECK(s && !strcmp(s, "ab b a"), "no decoder: tokens joined with spaces: %s", s);
        mt_free(s), mt_token_ids_free(&ids);
        mt_tokenizer_free(tok);
    }
    free(ok);

    snprintf(path, sizeof path, "%s/no_such_tokenizer.json", tmp_dir);
    MT_CHECK_FAILS(mt_tokenizer_load(path, &tok), MT_ERR_IO, path, "cannot open");
    MT_CHECK(tok == NULL);

    /* malformed JSON: the file and the line */
    snprintf(path, sizeof path, "%s/broken.json", tmp_dir);
    const char *broken = "{\n  \"model\": {\n    \"vocab\": {\"a\": 0,,}\n  }\n}\n";
    MT_CHECK_OK(mt_file_write_atomic(path, broken, strlen(broken)));
    char where[4200];
    snprintf(where, sizeof where, "%s:3:", path);
    MT_CHECK_FAILS(mt_tokenizer_load(path, &tok), MT_ERR_FORMAT, where, "invalid JSON");

    LOAD_FAILS(make_json("{\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}", 0, 0, 0, 0),
               MT_ERR_UNSUPPORTED, "model.type", "WordPiece", "supported: BPE");
    LOAD_FAILS(make_json("{\"type\": \"BPE\", \"merges\": []}", 0, 0, 0, 0), MT_ERR_FORMAT,
               "model.vocab: missing");
    LOAD_FAILS(make_json("{\"type\": \"BPE\", \"vocab\": {\"a\": 0}}", 0, 0, 0, 0), MT_ERR_FORMAT,
               "model.merges: missing");
    LOAD_FAILS(make_json("{\"vocab\": {\"a\": -3}, \"merges\": []}", 0, 0, 0, 0), MT_ERR_FORMAT,
               "model.vocab[\"a\"]", "integer");
    LOAD_FAILS(make_json("{\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}", 0, 0, 0, 0),
               MT_ERR_FORMAT, "model.merges[0]", "\"ab\" is not in model.vocab");
    LOAD_FAILS(make_json("{\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"ab\"]}", 0, 0, 0, 0),
               MT_ERR_FORMAT, "model.merges[0]", "expected \"a b\"");
    LOAD_FAILS(
        make_json("{\"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"<unk>\"}", 0, 0, 0, 0),
        MT_ERR_FORMAT, "model.unk_token", "<unk>");
    LOAD_FAILS(make_json("{\"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}", 0, 0, 0, 0),
               MT_ERR_UNSUPPORTED, "model.dropout");
    LOAD_FAILS(
        make_json(0,
                  "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                  "\"pattern\": {\"Regex\": \"\\\\p{L}+|\\\\s+\"}, \"behavior\": \"Isolated\", "
                  "\"invert\": false}]}",
                  0, 0, 0),
        MT_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[0].pattern.Regex",
        "unknown split pattern \"\\p{L}+|\\s+\"");
    LOAD_FAILS(make_json(0, "{\"type\": \"Whitespace\"}", 0, 0, 0), MT_ERR_UNSUPPORTED,
               "pre_tokenizer.type", "\"Whitespace\"");
    LOAD_FAILS(make_json(0,
                         "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": "
                         "\"Sideways\"}",
                         0, 0, 0),
               MT_ERR_FORMAT, "pre_tokenizer.behavior", "Sideways");
    LOAD_FAILS(make_json(0, 0, "{\"type\": \"NFC\"}", 0, 0), MT_ERR_UNSUPPORTED, "normalizer.type",
               "\"NFC\"");
    LOAD_FAILS(make_json(0, 0,
                         "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, "
                         "\"content\": \" \"}",
                         0, 0),
               MT_ERR_UNSUPPORTED, "normalizer.pattern.Regex");
    LOAD_FAILS(make_json(0, 0, 0, "{\"type\": \"WordPiece\", \"prefix\": \"##\"}", 0),
               MT_ERR_UNSUPPORTED, "decoder.type", "\"WordPiece\"");
    LOAD_FAILS(make_json(0, 0, 0,
                         "{\"type\": \"Strip\", \"content\": \"ab\", \"start\": 1, "
                         "\"stop\": 0}",
                         0),
               MT_ERR_FORMAT, "decoder.content", "one character");
    LOAD_FAILS(make_json(0, 0, 0, 0,
                         "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                         "{\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", "
                         "\"type_id\": 0}}], \"special_tokens\": {}}"),
               MT_ERR_FORMAT, "post_processor.special_tokens", "<s>");
    LOAD_FAILS(make_json(0, 0, 0, 0,
                         "{\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 102], "
                         "\"cls\": [\"[CLS]\", 101]}"),
               MT_ERR_FORMAT, "post_processor", "template token id");
    LOAD_FAILS(make_json(0, 0, 0, 0,
                         "{\"type\": \"Sequence\", \"processors\": [{\"type\": "
                         "\"ByteLevel\"}, {\"type\": \"Fancy\"}]}"),
               MT_ERR_UNSUPPORTED, "post_processor.processors[1].type", "Fancy");
    char *arr = strdup("[1, 2]");
    LOAD_FAILS(arr, MT_ERR_FORMAT, "top level");
    LOAD_FAILS(make_json(0, 0, "{\"type\": \"Prepend\", \"prepend\": \"\xF0\"}", 0, 0),
               MT_ERR_FORMAT, "not valid UTF-8");
}

/* Load, encode and decode with the k-th allocation failing, k = 1, 2, ...; returns how many failed.
 */
static int fail_each_allocation(const char *file, const char *input) {
    char path[4096], *json;
    size_t n;
    snprintf(path, sizeof path, "%s/%s", data_dir, file);
    MT_CHECK_OK(mt_file_read(path, &json, &n));
    int k;
    for (k = 1; k < 100000; k++) {
        mt_tokenizer *tok = NULL;
        mt_token_ids ids = {0};
        char *s = NULL;
        mt_alloc_fail_after(k);
        mt_status st = mt_tokenizer_load_buffer(json, n, file, &tok);
        if (st == MT_OK) st = mt_tokenizer_encode(tok, input, strlen(input), true, &ids);
        if (st == MT_OK) st = mt_tokenizer_decode(tok, ids.ids, ids.n, false, &s, NULL);
        mt_alloc_fail_after(0);
        mt_free(s);
        mt_token_ids_free(&ids);
        mt_tokenizer_free(tok);
        if (st == MT_OK) break;
        MT_CHECK(st == MT_ERR_NOMEM, "%s, allocation %d: %s", file, k, mt_error_message());
        if (st != MT_ERR_NOMEM) break;
    }
    mt_free(json);
    return k - 1;
}

/* SQLite-style: the n-th allocation fails, for every n until loading, encoding and decoding
 * succeed; each failure must come back as MT_ERR_NOMEM (and ASan / valgrind see no leak). */
static void test_allocation_failures(void) {
    const char *input = "<|begin_of_text|>It's clear.  \n\n 12345 mmHg 胸部 🙂 <s>x</s>";
    const char *files[] = {"llama3.json", "llama2.json", "sp_meta_always.json", "affixes.json"};
    for (int f = 0; f < 4; f++)
        printf("  %s: every one of %d allocations failed once, cleanly\n", files[f],
               fail_each_allocation(files[f], input));
}

/* ---- speed note ------------------------------------------------------------------------------ */

static void test_speed_note(void) {
    cJSON *doc = load_cases();
    if (!doc) return;
    /* the test strings joined, repeated to ~1 MB */
    size_t cap = 1 << 21, n = 0;
    char *corpus = malloc(cap);
    const cJSON *tj = cJSON_GetObjectItem(doc, "tests");
    while (n < (1 << 20)) {
        for (const cJSON *t = tj->child; t; t = t->next) {
            text x = unhex(cJSON_GetObjectItem(t, "hex")->valuestring);
            if (n + x.n + 1 < cap) memcpy(corpus + n, x.p, x.n), n += x.n, corpus[n++] = '\n';
            free(x.p);
        }
    }
    const char *names[] = {"llama3.json", "gpt2.json", "llama2.json", "sp_meta_always.json"};
    for (int k = 0; k < 4; k++) {
        mt_tokenizer *tok = open_tok(names[k]);
        if (!tok) continue;
        mt_token_ids ids = {0};
        /* per line, as a packer calls it */
        double t0 = mt_now();
        size_t ntok = 0;
        for (size_t i = 0; i < n;) {
            char *nl = memchr(corpus + i, '\n', n - i);
            size_t e = nl ? (size_t)(nl - corpus) + 1 : n;
            ids.n = 0;
            MT_CHECK_OK(mt_tokenizer_encode(tok, corpus + i, e - i, false, &ids));
            ntok += ids.n;
            i = e;
        }
        double dt = mt_now() - t0;
        printf("  speed %-20s %8.0f ktokens/s  %6.1f MB/s  (%zu tokens, %.2f MB, one thread)\n",
               names[k], ntok / dt / 1e3, n / dt / 1e6, ntok, n / 1e6);
        mt_token_ids_free(&ids);
        mt_tokenizer_free(tok);
    }
    free(corpus);
    cJSON_Delete(doc);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    if (argc > 2) {
        tmp_dir = argv[2];
        if (mt_mkdir_p(tmp_dir) != MT_OK) {
            fprintf(stderr, "%s\n", mt_error_message());
            return 1;
        }
    }
    MT_RUN(test_against_tokenizers);
    MT_RUN(test_special_tokens);
    MT_RUN(test_digest);
    MT_RUN(test_bad_calls);
    MT_RUN(test_threads);
    MT_RUN(test_vocab_holes);
    MT_RUN(test_errors);
    MT_RUN(test_allocation_failures);
    MT_RUN(test_speed_note);
    return mt_test_summary();
}
