/* Tests for the text metrics (textmetrics.h) against sacrebleu, rouge-score and nltk, from
 * tests/eval/data/textmetrics_*.{json,txt} (tests/oracles/textmetrics_oracle.py):
 *
 *   - the Unicode tables (Python's str.lower(), final-sigma classes, str.isspace()) for every
 *     code point, and nltk's Porter stems of ~2000 words, exactly;
 *   - both tokenizers on every fixture string, byte for byte;
 *   - BLEU statistics exactly, and score, precisions and BP to 1e-9 (relative above 1), for each
 *     pair alone and for the corpus, in ten smoothing / lowercase / effective-order variants;
 *   - ROUGE-L precision, recall and F to 1e-12, per pair and as corpus means;
 *   - hand-checked examples from the two packages' documentation, shards adding up, bad
 *     arguments, invalid UTF-8, allocation failures, and a few thousand reports for timing.
 * argv[1] is tests/eval/data. */
#include "mt_test.h"

#include <stdint.h>
#include <stdlib.h>

#include "eval/textmetrics_internal.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/textmetrics.h"
#include "medtrain/timer.h"

#define BLEU_TOL  1e-9
#define ROUGE_TOL 1e-12

static const char *data_dir = "tests/eval/data";
static double max_bleu_diff, max_rouge_diff; /* the largest differences seen, for the log */

/* |got - want| <= tol * max(1, |want|); records the largest difference in *worst. */
#define CHECK_CLOSE(got, want, tol, worst, ...)                                                    \
    do {                                                                                           \
        double g_ = (got), w_ = (want), d_ = fabs(g_ - w_);                                        \
        if (d_ > *(worst)) *(worst) = d_;                                                          \
        if (!(d_ <= (tol)*fmax(1.0, fabs(w_)))) {                                                  \
            char ctx_[256];                                                                        \
            snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                              \
            mt_test_check_failed(__FILE__, __LINE__, "%s: %s = %.17g, expected %.17g", ctx_, #got, \
                                 g_, w_);                                                          \
        }                                                                                          \
    } while (0)

/* ---- Fixtures -------------------------------------------------------------------------------- */

static cJSON *cases;

static cJSON *load_cases(void) {
    if (cases) return cases;
    char path[4096];
    snprintf(path, sizeof path, "%s/textmetrics_cases.json", data_dir);
    MT_CHECK_OK(mt_json_read_file(path, &cases));
    return cases;
}

static const char *jstr(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jat(const cJSON *arr, int i) {
    const cJSON *v = cJSON_GetArrayItem(arr, i);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static FILE *open_data(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    FILE *f = fopen(path, "r");
    MT_CHECK(f != NULL, "cannot open %s", path);
    return f;
}

/* A pair's references as a NULL-free array (refs[0..n)). */
typedef struct pair_refs {
    const char *r[8];
    int n;
} pair_refs;

static pair_refs refs_of(const cJSON *pair) {
    pair_refs p = {.n = 0};
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(pair, "refs")) {
        if (p.n < 8) p.r[p.n++] = v->valuestring;
    }
    return p;
}

/* ---- Unicode tables -------------------------------------------------------------------------- */

enum { N_POINTS = 0x110000 };

static void test_unicode_tables(void) {
    FILE *f = open_data("textmetrics_unicase.txt");
    if (!f) return;
    uint32_t *lower = malloc(N_POINTS * sizeof *lower);
    uint8_t *cls = calloc(N_POINTS, 1), *space = calloc(N_POINTS, 1);
    for (uint32_t c = 0; c < N_POINTS; c++) lower[c] = c;
    char line[256];
    int n_lower = 0, n_runs = 0, n_spaces = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned a, b, k;
        if (sscanf(line, "L %x %x", &a, &b) == 2 && a < N_POINTS)
            lower[a] = b, n_lower++; /* first point; U+0130's second is checked below */
        else if (sscanf(line, "C %x %x %u", &a, &b, &k) == 3 && b < N_POINTS)
            for (n_runs++; a <= b; a++) cls[a] = (uint8_t)k;
        else if (sscanf(line, "S %x", &a) == 1 && a < N_POINTS)
            space[a] = 1, n_spaces++;
    }
    fclose(f);
    MT_CHECK(n_lower > 1400 && n_runs > 500 && n_spaces == 29, "%d %d %d", n_lower, n_runs,
             n_spaces);
    int bad = 0;
    for (uint32_t c = 0; c < N_POINTS && bad < 10; c++) {
        if (c >= 0xD800 && c < 0xE000) continue;
        bool ok = mt_unicase_lower(c) == lower[c] && mt_unicase_sigma_class(c) == cls[c] &&
                  mt_unicase_isspace(c) == space[c];
        MT_CHECK(ok, "U+%04X: lower U+%04X (expected U+%04X), class %d (%d), space %d (%d)", c,
                 mt_unicase_lower(c), lower[c], mt_unicase_sigma_class(c), cls[c],
                 mt_unicase_isspace(c), space[c]);
        bad += !ok;
    }
    /* The two context rules of str.lower(). */
    mt_text_u32 out = {0};
    uint32_t dotted[] = {0x130};
    MT_CHECK_OK(mt_text_lower(dotted, 1, &out));
    MT_CHECK(out.n == 2 && out.p[0] == 'i' && out.p[1] == 0x307);
    uint32_t sigmas[] = {0x3A3, ' ', 'A', 0x3A3, ' ', 'A', 0x3A3, 'B', ' ', 'A', 0x301, 0x3A3, '.'};
    uint32_t want[] = {0x3C3, ' ', 'a', 0x3C2, ' ', 'a', 0x3C3, 'b', ' ', 'a', 0x301, 0x3C2, '.'};
    MT_CHECK_OK(mt_text_lower(sigmas, 13, &out));
    MT_CHECK(out.n == 13 && !memcmp(out.p, want, sizeof want));
    mt_text_u32_free(&out);
    free(lower), free(cls), free(space);
}

/* ---- Tokenizers and stems -------------------------------------------------------------------- */

static void check_tokens(const char *text, const char *want, char *got, const char *what) {
    MT_CHECK(got && want && !strcmp(got, want),
             "%s of \"%s\":\n    got      \"%s\"\n    expected \"%s\"", what, text,
             got ? got : "(null)", want ? want : "(null)");
    mt_free(got);
}

static void test_tokenizers(void) {
    cJSON *doc = load_cases();
    if (!doc) return;
    const cJSON *s;
    int n = 0;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(doc, "strings")) {
        const char *text = jstr(s, "text");
        char *got = NULL;
        MT_CHECK_OK(mt_bleu_tokenize(text, false, &got));
        check_tokens(text, jstr(s, "tok13a"), got, "13a");
        MT_CHECK_OK(mt_bleu_tokenize(text, true, &got));
        check_tokens(text, jstr(s, "tok13a_lc"), got, "13a lowercase");
        MT_CHECK_OK(mt_rouge_tokenize(text, false, &got));
        check_tokens(text, jstr(s, "rouge"), got, "rouge");
        MT_CHECK_OK(mt_rouge_tokenize(text, true, &got));
        check_tokens(text, jstr(s, "rouge_stem"), got, "rouge stemmed");
        n++;
    }
    MT_CHECK(n >= 100, "only %d strings", n);
}

static void test_porter_stems(void) {
    FILE *f = open_data("textmetrics_stems.txt");
    if (!f) return;
    char line[256], word[128], stem[128];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%127s %127s", word, stem) == 2) {
            size_t len = mt_porter_stem(word, strlen(word));
            word[len] = '\0';
            MT_CHECK(!strcmp(word, stem), "line %d: stem \"%s\", expected \"%s\"", n + 1, word,
                     stem);
            n++;
        }
    fclose(f);
    MT_CHECK(n >= 1500, "only %d stems", n);
}

/* ---- BLEU against sacrebleu ------------------------------------------------------------------ */

typedef struct variant {
    const char *name;
    mt_bleu_opts opts;
} variant;

static const variant VARIANTS[] = {
    {"exp", {MT_BLEU_SMOOTH_EXP, 0, false, false}},
    {"none", {MT_BLEU_SMOOTH_NONE, 0, false, false}},
    {"floor", {MT_BLEU_SMOOTH_FLOOR, 0, false, false}},
    {"add-k", {MT_BLEU_SMOOTH_ADD_K, 0, false, false}},
    {"floor@0.5", {MT_BLEU_SMOOTH_FLOOR, 0.5, false, false}},
    {"add-k@2", {MT_BLEU_SMOOTH_ADD_K, 2, false, false}},
    {"exp_lc", {MT_BLEU_SMOOTH_EXP, 0, true, false}},
    {"none_lc", {MT_BLEU_SMOOTH_NONE, 0, true, false}},
    {"exp_eff", {MT_BLEU_SMOOTH_EXP, 0, false, true}},
    {"none_eff", {MT_BLEU_SMOOTH_NONE, 0, false, true}},
};
enum { N_VARIANTS = sizeof VARIANTS / sizeof VARIANTS[0] };

static void check_stats(const mt_bleu_stats *s, const cJSON *want, const char *ctx) {
    int64_t got[10] = {s->sys_len, s->ref_len};
    for (int n = 0; n < 4; n++) got[2 + n] = s->correct[n], got[6 + n] = s->total[n];
    for (int k = 0; k < 10; k++)
        MT_CHECK(got[k] == (int64_t)jat(want, k), "%s: stats[%d] = %lld, expected %.0f", ctx, k,
                 (long long)got[k], jat(want, k));
}

/* [score, p1..p4, bp] of variant v in the fixture's bleu object. */
static void check_bleu(const mt_bleu_result *r, const cJSON *bleu, const char *v, const char *ctx) {
    const cJSON *want = cJSON_GetObjectItem(bleu, v);
    MT_CHECK(cJSON_GetArraySize(want) == 6, "%s: no variant %s", ctx, v);
    CHECK_CLOSE(r->score, jat(want, 0), BLEU_TOL, &max_bleu_diff, "%s %s", ctx, v);
    for (int n = 0; n < 4; n++)
        CHECK_CLOSE(r->precisions[n], jat(want, 1 + n), BLEU_TOL, &max_bleu_diff, "%s %s p%d", ctx,
                    v, n + 1);
    CHECK_CLOSE(r->bp, jat(want, 5), BLEU_TOL, &max_bleu_diff, "%s %s", ctx, v);
}

static void test_variants_known(void) {
    cJSON *doc = load_cases();
    if (!doc) return;
    const cJSON *v;
    int n = 0;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(doc, "variants")) {
        bool known = false;
        for (int k = 0; k < N_VARIANTS; k++) known |= !strcmp(VARIANTS[k].name, v->valuestring);
        MT_CHECK(known, "fixture variant %s has no entry in VARIANTS", v->valuestring);
        n++;
    }
    MT_CHECK(n == N_VARIANTS);
}

/* Each pair alone: statistics through mt_bleu_add_segment, scores through mt_bleu_corpus (one
 * hypothesis, one stream per reference) and through mt_bleu_score of the statistics. */
static void test_bleu_pairs(void) {
    cJSON *doc = load_cases();
    if (!doc) return;
    const cJSON *p;
    int i = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(doc, "pairs")) {
        const char *hyp = jstr(p, "hyp");
        pair_refs refs = refs_of(p);
        const cJSON *bleu = cJSON_GetObjectItem(p, "bleu");
        char ctx[64];
        snprintf(ctx, sizeof ctx, "pair %d", i);
        mt_bleu_stats st[2] = {{0}, {0}};
        for (int lc = 0; lc < 2; lc++) {
            MT_CHECK_OK(mt_bleu_add_segment(hyp, refs.r, refs.n, lc, &st[lc]));
            check_stats(&st[lc], cJSON_GetObjectItem(bleu, lc ? "stats_lc" : "stats"), ctx);
        }
        const char *const *streams[8];
        for (int r = 0; r < refs.n; r++) streams[r] = &refs.r[r];
        for (int k = 0; k < N_VARIANTS; k++) {
            const variant *v = &VARIANTS[k];
            mt_bleu_result a, b;
            MT_CHECK_OK(mt_bleu_corpus(&hyp, 1, streams, refs.n, &v->opts, &a));
            MT_CHECK_OK(mt_bleu_score(&st[v->opts.lowercase], &v->opts, &b));
            check_bleu(&a, bleu, v->name, ctx);
            MT_CHECK(!memcmp(&a, &b, sizeof a), "%s %s: corpus and score differ", ctx, v->name);
        }
        i++;
    }
    MT_CHECK(i >= 70, "only %d pairs", i);
}

/* The pairs' references as streams: refs[r][i], NULL where pair i has fewer than r + 1. */
typedef struct corpus {
    const char **hyps;
    const char **stream[8];
    const char *const *refs[8];
    int n, n_refs;
} corpus;

static bool corpus_load(corpus *c) {
    memset(c, 0, sizeof *c);
    cJSON *doc = load_cases();
    if (!doc) return false;
    const cJSON *pairs = cJSON_GetObjectItem(doc, "pairs"), *p;
    c->n = cJSON_GetArraySize(pairs);
    c->hyps = calloc((size_t)c->n, sizeof *c->hyps);
    for (int r = 0; r < 8; r++) c->stream[r] = calloc((size_t)c->n, sizeof *c->stream[r]);
    int i = 0;
    cJSON_ArrayForEach(p, pairs) {
        pair_refs refs = refs_of(p);
        c->hyps[i] = jstr(p, "hyp");
        for (int r = 0; r < refs.n; r++) c->stream[r][i] = refs.r[r];
        if (refs.n > c->n_refs) c->n_refs = refs.n;
        i++;
    }
    for (int r = 0; r < 8; r++) c->refs[r] = c->stream[r];
    return true;
}

static void corpus_free(corpus *c) {
    free(c->hyps);
    for (int r = 0; r < 8; r++) free(c->stream[r]);
}

static void test_bleu_corpus(void) {
    corpus c;
    if (!corpus_load(&c)) return;
    const cJSON *bleu = cJSON_GetObjectItem(cJSON_GetObjectItem(cases, "corpus"), "bleu");
    MT_CHECK(c.n_refs == 3, "%d reference streams", c.n_refs);
    for (int k = 0; k < N_VARIANTS; k++) {
        const variant *v = &VARIANTS[k];
        mt_bleu_result r;
        MT_CHECK_OK(mt_bleu_corpus(c.hyps, (size_t)c.n, c.refs, c.n_refs, &v->opts, &r));
        check_bleu(&r, bleu, v->name, "corpus");
        check_stats(&r.stats, cJSON_GetObjectItem(bleu, v->opts.lowercase ? "stats_lc" : "stats"),
                    v->name);
    }
    /* Shards add up: statistics of two halves, summed, score as the whole (what ranks do). */
    size_t half = (size_t)c.n / 2;
    const char *const *second[8];
    for (int r = 0; r < c.n_refs; r++) second[r] = c.refs[r] + half;
    mt_bleu_result whole, a, b;
    MT_CHECK_OK(mt_bleu_corpus(c.hyps, (size_t)c.n, c.refs, c.n_refs, NULL, &whole));
    MT_CHECK_OK(mt_bleu_corpus(c.hyps, half, c.refs, c.n_refs, NULL, &a));
    MT_CHECK_OK(mt_bleu_corpus(c.hyps + half, (size_t)c.n - half, second, c.n_refs, NULL, &b));
    mt_bleu_stats sum = a.stats;
    sum.sys_len += b.stats.sys_len, sum.ref_len += b.stats.ref_len;
    for (int n = 0; n < 4; n++)
        sum.correct[n] += b.stats.correct[n], sum.total[n] += b.stats.total[n];
    mt_bleu_result summed;
    MT_CHECK_OK(mt_bleu_score(&sum, NULL, &summed));
    MT_CHECK(!memcmp(&summed, &whole, sizeof whole), "halves %.17g, whole %.17g", summed.score,
             whole.score);
    corpus_free(&c);
}

/* ---- ROUGE-L against rouge-score ------------------------------------------------------------- */

static void check_rouge(const mt_rouge_result *r, const cJSON *want, const char *ctx) {
    CHECK_CLOSE(r->precision, jat(want, 0), ROUGE_TOL, &max_rouge_diff, "%s", ctx);
    CHECK_CLOSE(r->recall, jat(want, 1), ROUGE_TOL, &max_rouge_diff, "%s", ctx);
    CHECK_CLOSE(r->f, jat(want, 2), ROUGE_TOL, &max_rouge_diff, "%s", ctx);
}

static void test_rouge_pairs(void) {
    cJSON *doc = load_cases();
    if (!doc) return;
    const cJSON *p;
    int i = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(doc, "pairs")) {
        pair_refs refs = refs_of(p);
        for (int stem = 0; stem < 2; stem++) {
            char ctx[64];
            snprintf(ctx, sizeof ctx, "pair %d%s", i, stem ? " stemmed" : "");
            mt_rouge_result r;
            MT_CHECK_OK(mt_rouge_l_multi(jstr(p, "hyp"), refs.r, refs.n, stem, &r));
            check_rouge(&r, cJSON_GetObjectItem(p, stem ? "rouge_stem" : "rouge"), ctx);
            if (refs.n == 1) {
                mt_rouge_result one;
                MT_CHECK_OK(mt_rouge_l(jstr(p, "hyp"), refs.r[0], stem, &one));
                MT_CHECK(!memcmp(&one, &r, sizeof r), "%s", ctx);
            }
        }
        i++;
    }
}

static void test_rouge_corpus(void) {
    corpus c;
    if (!corpus_load(&c)) return;
    const cJSON *want = cJSON_GetObjectItem(cases, "corpus"),
                *pairs = cJSON_GetObjectItem(cases, "pairs");
    mt_rouge_result *per = calloc((size_t)c.n, sizeof *per);
    for (int stem = 0; stem < 2; stem++) {
        const char *key = stem ? "rouge_stem" : "rouge";
        mt_rouge_result mean;
        MT_CHECK_OK(mt_rouge_l_corpus(c.hyps, (size_t)c.n, c.refs, c.n_refs, stem, &mean, per));
        check_rouge(&mean, cJSON_GetObjectItem(want, key), stem ? "corpus stemmed" : "corpus");
        for (int i = 0; i < c.n; i++) {
            char ctx[64];
            snprintf(ctx, sizeof ctx, "corpus pair %d %s", i, key);
            check_rouge(&per[i], cJSON_GetObjectItem(cJSON_GetArrayItem(pairs, i), key), ctx);
        }
        mt_rouge_result again; /* per_pair is optional */
        MT_CHECK_OK(mt_rouge_l_corpus(c.hyps, (size_t)c.n, c.refs, c.n_refs, stem, &again, NULL));
        MT_CHECK(!memcmp(&again, &mean, sizeof mean));
    }
    free(per);
    corpus_free(&c);
}

/* ---- Hand-checked ---------------------------------------------------------------------------- */

static void test_documented_examples(void) {
    /* sacrebleu's README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17
     * ref_len = 18); the digits are sacrebleu 2.6's. */
    const char *hyps[] = {"The dog bit the man.", "It wasn't surprising.",
                          "The man had just bitten him."};
    const char *r0[] = {"The dog bit the man.", "It was not unexpected.", "The man bit him first."};
    const char *r1[] = {"The dog had bit the man.", "No one was surprised.",
                        "The man had bitten the dog."};
    const char *const *refs[] = {r0, r1};
    mt_bleu_result b;
    MT_CHECK_OK(mt_bleu_corpus(hyps, 3, refs, 2, NULL, &b));
    MT_CHECK_NEAR(b.score, 48.530827009929865, 1e-13);
    MT_CHECK_NEAR(b.precisions[0], 82.3529411764706, 1e-13);
    MT_CHECK_NEAR(b.precisions[3], 37.5, 0);
    MT_CHECK_NEAR(b.bp, 0.9428731438548749, 1e-15);
    MT_CHECK(b.stats.sys_len == 17 && b.stats.ref_len == 18);
    MT_CHECK(b.stats.correct[0] == 14 && b.stats.correct[1] == 7 && b.stats.correct[2] == 5 &&
             b.stats.correct[3] == 3);
    MT_CHECK(b.stats.total[0] == 17 && b.stats.total[1] == 14 && b.stats.total[2] == 11 &&
             b.stats.total[3] == 8);

    /* rouge-score's README: LCS "the quick brown jumps the" = 5 of 8 and 9 tokens. */
    mt_rouge_result r;
    MT_CHECK_OK(mt_rouge_l("The quick brown dog jumps on the log.",
                           "The quick brown fox jumps over the lazy dog", false, &r));
    MT_CHECK(r.precision == 0.625 && r.recall == 5.0 / 9.0);
    MT_CHECK_NEAR(r.f, 0.5882352941176471, 1e-16);

    /* Identical text: BLEU 100 (sacrebleu: 100.00000000000004, exp(log(100))), ROUGE-L 1. */
    const char *same[] = {"No acute cardiopulmonary process."};
    const char *const *same_refs[] = {same};
    MT_CHECK_OK(mt_bleu_corpus(same, 1, same_refs, 1, NULL, &b));
    MT_CHECK(b.score == 100.00000000000004 && b.bp == 1.0, "%.17g", b.score);
    MT_CHECK_OK(mt_rouge_l(same[0], same[0], true, &r));
    MT_CHECK(r.precision == 1 && r.recall == 1 && r.f == 1);

    /* Nothing in common, or an empty side: all zero, nothing undefined. */
    MT_CHECK_OK(mt_rouge_l("", "No acute findings.", false, &r));
    MT_CHECK(r.precision == 0 && r.recall == 0 && r.f == 0);
    const char *empty[] = {""};
    MT_CHECK_OK(mt_bleu_corpus(empty, 1, same_refs, 1, NULL, &b));
    MT_CHECK(b.score == 0 && b.bp == 0 && b.stats.sys_len == 0 && b.stats.ref_len == 5);
}

/* ---- Failure paths --------------------------------------------------------------------------- */

static void test_bad_arguments(void) {
    const char *hyps[] = {"a b c", "d e"}, *r0[] = {"a b c", NULL}, *r1[] = {"a b", NULL};
    const char *const *refs[] = {r0, r1};
    const char *ok0[] = {"a b c", "d e"};
    const char *const *ok[] = {ok0};
    mt_bleu_result b;
    mt_rouge_result r;
    mt_bleu_stats st = {0};
    MT_CHECK_FAILS(mt_bleu_corpus(NULL, 2, ok, 1, NULL, &b), MT_ERR_ARG, "hyps is NULL");
    MT_CHECK_FAILS(mt_bleu_corpus(hyps, 0, ok, 1, NULL, &b), MT_ERR_ARG, "n = 0");
    MT_CHECK_FAILS(mt_bleu_corpus(hyps, 2, NULL, 1, NULL, &b), MT_ERR_ARG, "refs is NULL");
    MT_CHECK_FAILS(mt_bleu_corpus(hyps, 2, ok, 0, NULL, &b), MT_ERR_ARG, "n_refs = 0");
    MT_CHECK_FAILS(mt_bleu_corpus(hyps, 2, ok, 1, NULL, NULL), MT_ERR_ARG, "out is NULL");
    const char *const *ref_null[] = {ok0, NULL};
    MT_CHECK_FAILS(mt_bleu_corpus(hyps, 2, ref_null, 2, NULL, &b), MT_ERR_ARG, "refs[1] is NULL");
    const char *hyp_null[] = {"a", NULL};
    MT_CHECK_FAILS(mt_bleu_corpus(hyp_null, 2, ok, 1, NULL, &b), MT_ERR_ARG, "hyps[1] is NULL");
    MT_CHECK_FAILS(mt_bleu_corpus(hyps, 2, refs, 2, NULL, &b), MT_ERR_ARG, "hypothesis 1",
                   "refs[0..1][1]");
    MT_CHECK_FAILS(mt_rouge_l_corpus(hyps, 2, refs, 2, false, &r, NULL), MT_ERR_ARG,
                   "hypothesis 1");
    MT_CHECK_OK(mt_bleu_corpus(hyps, 1, refs, 2, NULL, &b)); /* the first has its references */

    mt_bleu_opts o = {.smooth = (mt_bleu_smooth)7};
    MT_CHECK_FAILS(mt_bleu_corpus(hyps, 2, ok, 1, &o, &b), MT_ERR_ARG, "opts.smooth = 7");
    o = (mt_bleu_opts){.smooth = MT_BLEU_SMOOTH_FLOOR, .smooth_value = -1};
    MT_CHECK_FAILS(mt_bleu_score(&st, &o, &b), MT_ERR_ARG, "smooth_value = -1");
    o.smooth_value = NAN;
    MT_CHECK_FAILS(mt_bleu_score(&st, &o, &b), MT_ERR_ARG, "smooth_value = nan");
    MT_CHECK_FAILS(mt_bleu_score(NULL, NULL, &b), MT_ERR_ARG, "stats is NULL");
    st.correct[2] = 3, st.total[2] = 2;
    MT_CHECK_FAILS(mt_bleu_score(&st, NULL, &b), MT_ERR_ARG, "correct[2] = 3", "total[2] = 2");
    st = (mt_bleu_stats){.sys_len = -1};
    MT_CHECK_FAILS(mt_bleu_score(&st, NULL, &b), MT_ERR_ARG, "sys_len = -1");

    const char *nulls[] = {NULL, NULL};
    MT_CHECK_FAILS(mt_bleu_add_segment(NULL, ok0, 1, false, &st), MT_ERR_ARG, "hyp is NULL");
    MT_CHECK_FAILS(mt_bleu_add_segment("a", nulls, 2, false, &st), MT_ERR_ARG, "refs[0..1]");
    MT_CHECK_FAILS(mt_bleu_add_segment("a", ok0, 1, false, NULL), MT_ERR_ARG, "acc is NULL");
    MT_CHECK_FAILS(mt_rouge_l(NULL, "a", false, &r), MT_ERR_ARG, "hyp is NULL");
    MT_CHECK_FAILS(mt_rouge_l("a", NULL, false, &r), MT_ERR_ARG, "ref is NULL");
    MT_CHECK_FAILS(mt_rouge_l("a", "a", false, NULL), MT_ERR_ARG, "out is NULL");
    MT_CHECK_FAILS(mt_rouge_l_multi("a", ok0, -1, false, &r), MT_ERR_ARG, "n_refs = -1");
    char *t = (char *)"x";
    MT_CHECK_FAILS(mt_bleu_tokenize(NULL, false, &t), MT_ERR_ARG, "text is NULL");
    MT_CHECK(t == NULL);
    MT_CHECK_FAILS(mt_rouge_tokenize("a", false, NULL), MT_ERR_ARG, "out is NULL");
}

static void test_invalid_utf8(void) {
    /* What Python's strict decoder refuses: the byte named is the first that cannot be. */
    static const struct {
        const char *text, *at;
    } bad[] = {
        {"ok \x80", "byte 3 (0x80)"},      /* stray continuation */
        {"\xc0\x80", "byte 0 (0xc0)"},     /* overlong NUL */
        {"\xe0\x80\xaf", "byte 1"},        /* overlong 3-byte */
        {"\xed\xa0\x80", "byte 1 (0xa0)"}, /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", "byte 1"},    /* above U+10FFFF */
        {"\xf5\x80", "byte 0 (0xf5)"},
        {"ab\xe2\x82", "byte 4 (0x00)"}, /* cut short by the end */
        {"\xc3(", "byte 1 (0x28)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *text = bad[i].text;
        char *t = NULL;
        MT_CHECK_FAILS(mt_bleu_tokenize(text, false, &t), MT_ERR_ARG, "invalid UTF-8", bad[i].at);
        MT_CHECK_FAILS(mt_rouge_tokenize(text, true, &t), MT_ERR_ARG, "invalid UTF-8", bad[i].at);
        const char *hyps[] = {"fine", text};
        const char *const *refs[] = {hyps};
        mt_bleu_result b;
        MT_CHECK_FAILS(mt_bleu_corpus(hyps, 2, refs, 1, NULL, &b), MT_ERR_ARG, "hyps[1]");
        const char *swapped[] = {"fine", "fine"};
        const char *const *bad_refs[] = {swapped, hyps};
        MT_CHECK_FAILS(mt_bleu_corpus(swapped, 2, bad_refs, 2, NULL, &b), MT_ERR_ARG, "refs[1][1]",
                       bad[i].at);
        mt_rouge_result r;
        MT_CHECK_FAILS(mt_rouge_l("fine", text, false, &r), MT_ERR_ARG, "refs[0]");
    }
    /* The largest and smallest of each length decode. */
    char *t = NULL;
    MT_CHECK_OK(mt_bleu_tokenize("\x7f \xc2\x80 \xdf\xbf \xe0\xa0\x80 \xef\xbf\xbf "
                                 "\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf",
                                 false, &t));
    MT_CHECK(t && !strcmp(t, "\x7f \xc2\x80 \xdf\xbf \xe0\xa0\x80 \xef\xbf\xbf "
                             "\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf"),
             "%s", t);
    mt_free(t);
}

/* Every allocation in turn fails: each call reports MT_ERR_NOMEM (and, under ASan, leaks
 * nothing) until enough succeed. */
static void test_allocation_failures(void) {
    const char *hyps[] = {"Mild cardiomegaly; small left pleural effusion.", "No acute process."};
    const char *r0[] = {"Mild cardiomegaly with a small left effusion.", "No acute findings."};
    const char *r1[] = {NULL, "Normal chest."};
    const char *const *refs[] = {r0, r1};
    int calls = 0;
    for (int which = 0; which < 4; which++) {
        for (long k = 1; k < 1000; k++) {
            mt_alloc_fail_after(k);
            mt_bleu_result b;
            mt_rouge_result r;
            char *t = NULL;
            mt_status st = which == 0   ? mt_bleu_corpus(hyps, 2, refs, 2, NULL, &b)
                           : which == 1 ? mt_rouge_l_corpus(hyps, 2, refs, 2, true, &r, NULL)
                           : which == 2 ? mt_bleu_tokenize(hyps[0], true, &t)
                                        : mt_rouge_tokenize(hyps[0], true, &t);
            mt_alloc_fail_after(0);
            mt_free(t);
            calls++;
            if (st == MT_OK) break;
            MT_CHECK(st == MT_ERR_NOMEM, "function %d, allocation %ld: %s", which, k,
                     mt_error_message());
        }
    }
    MT_CHECK(calls > 8, "%d", calls);
}

/* ---- Scale ----------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t next_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* 2000 report pairs of ~60 words from a radiology vocabulary; prints the time. References are
 * the hypotheses with a few words replaced, so scores are high but not perfect. */
static void test_many_reports(void) {
    static const char *words[] = {"no",
                                  "acute",
                                  "cardiopulmonary",
                                  "process",
                                  "mild",
                                  "cardiomegaly",
                                  "small",
                                  "left",
                                  "right",
                                  "pleural",
                                  "effusion",
                                  "effusions",
                                  "the",
                                  "lungs",
                                  "are",
                                  "clear",
                                  "pneumothorax",
                                  "is",
                                  "there",
                                  "stable",
                                  "3.5",
                                  "cm",
                                  "nodule",
                                  "in",
                                  "upper",
                                  "lobe",
                                  "T7-T8",
                                  "atelectasis",
                                  "opacity",
                                  "opacities",
                                  "unchanged",
                                  "since",
                                  "prior",
                                  "exam",
                                  "heart",
                                  "size",
                                  "normal",
                                  ".",
                                  ",",
                                  ";",
                                  "(",
                                  ")"};
    enum { N = 2000, LEN = 60, NW = sizeof words / sizeof words[0] };
    char **hyp = malloc(N * sizeof *hyp), **ref = malloc(N * sizeof *ref);
    for (int i = 0; i < N; i++) {
        hyp[i] = malloc(LEN * 20), ref[i] = malloc(LEN * 20);
        size_t a = 0, b = 0;
        for (int j = 0; j < LEN; j++) {
            const char *w = words[next_u64() % NW];
            const char *v = next_u64() % 10 ? w : words[next_u64() % NW];
            a += (size_t)sprintf(hyp[i] + a, "%s ", w);
            b += (size_t)sprintf(ref[i] + b, "%s ", v);
        }
    }
    const char *const *refs[] = {(const char *const *)ref};
    mt_bleu_result b;
    mt_rouge_result r;
    double t0 = mt_now();
    MT_CHECK_OK(mt_bleu_corpus((const char *const *)hyp, N, refs, 1, NULL, &b));
    double t1 = mt_now();
    MT_CHECK_OK(mt_rouge_l_corpus((const char *const *)hyp, N, refs, 1, true, &r, NULL));
    double t2 = mt_now();
    printf("  %d reports of %d words: BLEU %.2f in %.3f s, ROUGE-L F %.4f (stemmed) in %.3f s\n", N,
           LEN, b.score, t1 - t0, r.f, t2 - t1);
    MT_CHECK(b.score > 50 && b.score < 100 && r.f > 0.8 && r.f < 1, "%g %g", b.score, r.f);
    /* Same word count; a replaced T7-T8 (3 tokens) makes the lengths differ a little. */
    MT_CHECK(b.bp > 0.99 && labs((long)(b.stats.sys_len - b.stats.ref_len)) < N * LEN / 50);
    for (int i = 0; i < N; i++) free(hyp[i]), free(ref[i]);
    free(hyp), free(ref);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    MT_RUN(test_unicode_tables);
    MT_RUN(test_tokenizers);
    MT_RUN(test_porter_stems);
    MT_RUN(test_variants_known);
    MT_RUN(test_bleu_pairs);
    MT_RUN(test_bleu_corpus);
    MT_RUN(test_rouge_pairs);
    MT_RUN(test_rouge_corpus);
    MT_RUN(test_documented_examples);
    MT_RUN(test_bad_arguments);
    MT_RUN(test_invalid_utf8);
    MT_RUN(test_allocation_failures);
    MT_RUN(test_many_reports);
    printf("  largest difference from the oracle: BLEU %.3g, ROUGE-L %.3g\n", max_bleu_diff,
           max_rouge_diff);
    cJSON_Delete(cases);
    return mt_test_summary();
}
