/* Tests for the classification metrics (metrics.h): every number against scikit-learn's, from
 * tests/eval/data/metrics_cases.json (tests/oracles/metrics_oracle.py), then hand-computed cases,
 * a brute-force O(n^2) comparison on awkward floats, the error paths (NaN scores, bad targets, bad
 * arguments, allocation failures) and a 10^6-row run against a histogram count.
 *
 * Tolerance 1e-12 relative: AUROC here is an exact integer count divided once, sklearn's a
 * trapezoid sum; they differ in the last bits. Counts and thresholds must be equal exactly.
 * argv[1] is tests/eval/data. */
#include "mt_test.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>

#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/metrics.h"
#include "medtrain/timer.h"

#define TOL 1e-12

static const char *data_dir = "tests/eval/data";

/* Equal within TOL, or both NaN; ctx names the case and label. */
#define CHECK_VAL(got, want, ...)                                                                  \
    do {                                                                                           \
        double g_ = (got), w_ = (want);                                                            \
        bool ok_ = isnan(w_) ? isnan(g_) : fabs(g_ - w_) <= TOL * fmax(1.0, fabs(w_));             \
        if (!ok_) {                                                                                \
            char ctx_[256];                                                                        \
            snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                              \
            mt_test_check_failed(__FILE__, __LINE__, "%s: %s = %.17g, expected %.17g", ctx_, #got, \
                                 g_, w_);                                                          \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_I(got, want, ...)                                                                 \
    do {                                                                                           \
        long long g_ = (got), w_ = (want);                                                         \
        if (g_ != w_) {                                                                            \
            char ctx_[256];                                                                        \
            snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                              \
            mt_test_check_failed(__FILE__, __LINE__, "%s: %s = %lld, expected %lld", ctx_, #got,   \
                                 g_, w_);                                                          \
        }                                                                                          \
    } while (0)

/* ---- Fixture reading ------------------------------------------------------------------------ */

/* A JSON number; null is NaN, "inf"/"-inf" are infinities. */
static double jnum(const cJSON *v) {
    if (cJSON_IsNumber(v)) return v->valuedouble;
    if (cJSON_IsString(v) && !strcmp(v->valuestring, "inf")) return INFINITY;
    if (cJSON_IsString(v) && !strcmp(v->valuestring, "-inf")) return -INFINITY;
    return NAN;
}

static double jat(const cJSON *obj, const char *key, int i) {
    return jnum(cJSON_GetArrayItem(cJSON_GetObjectItem(obj, key), i));
}

static double jget(const cJSON *obj, const char *key) {
    return jnum(cJSON_GetObjectItem(obj, key));
}

/* A case's score table; arrays and names are owned by it. */
typedef struct fixture {
    const char *name;
    mt_score_table t;
    float *scores, *targets;
    const char **names;
} fixture;

static bool fixture_load(const cJSON *c, fixture *f) {
    memset(f, 0, sizeof *f);
    f->name = cJSON_GetObjectItem(c, "name")->valuestring;
    int64_t n = (int64_t)jget(c, "n");
    int L = (int)jget(c, "L");
    const cJSON *s = cJSON_GetObjectItem(c, "scores"), *y = cJSON_GetObjectItem(c, "targets");
    MT_CHECK(cJSON_GetArraySize(s) == n * L && cJSON_GetArraySize(y) == n * L, "%s", f->name);
    if (cJSON_GetArraySize(s) != n * L || cJSON_GetArraySize(y) != n * L) return false;
    f->scores = malloc((size_t)(n * L + 1) * sizeof(float));
    f->targets = malloc((size_t)(n * L + 1) * sizeof(float));
    for (int64_t i = 0; i < n * L; i++) {
        f->scores[i] = (float)jnum(cJSON_GetArrayItem(s, (int)i));
        f->targets[i] = (float)jnum(cJSON_GetArrayItem(y, (int)i));
    }
    const cJSON *names = cJSON_GetObjectItem(c, "names");
    if (names) {
        f->names = malloc((size_t)L * sizeof *f->names);
        for (int j = 0; j < L; j++) f->names[j] = cJSON_GetArrayItem(names, j)->valuestring;
    }
    f->t = (mt_score_table){f->scores, f->targets, n, L, f->names};
    return true;
}

static void fixture_free(fixture *f) {
    free(f->scores), free(f->targets), free(f->names);
}

/* ---- Against sklearn ------------------------------------------------------------------------ */

static void check_auroc(const fixture *f, const cJSON *c) {
    for (int j = 0; j < f->t.n_labels; j++) {
        mt_auroc a;
        MT_CHECK_OK(mt_metrics_auroc(&f->t, j, &a));
        double want = jat(c, "auroc", j);
        CHECK_VAL(a.value, want, "%s label %d", f->name, j);
        MT_CHECK(a.defined == !isnan(want), "%s label %d", f->name, j);
        CHECK_EQ_I(a.n_pos, (long long)jat(c, "n_pos", j), "%s label %d", f->name, j);
        CHECK_EQ_I(a.n_neg, (long long)jat(c, "n_neg", j), "%s label %d", f->name, j);
        CHECK_EQ_I(a.n_unknown, (long long)jat(c, "n_unknown", j), "%s label %d", f->name, j);
    }
}

/* The summary's AUROC parts, the same for any thresholds. */
static void check_summary_auroc(const fixture *f, const cJSON *c, const mt_metrics_summary *s) {
    CHECK_VAL(s->macro_auroc, jget(c, "macro_auroc"), "%s", f->name);
    CHECK_VAL(s->micro_auroc.value, jget(c, "micro_auroc"), "%s", f->name);
    CHECK_EQ_I(s->n_auroc_defined, (long long)jget(c, "n_auroc_defined"), "%s", f->name);
    CHECK_EQ_I(s->n_auroc_defined + s->n_auroc_undefined, f->t.n_labels, "%s", f->name);
}

/* One entry of "at": every label through mt_metrics_confusion and through mt_metrics_summarize. */
static void check_at(const fixture *f, const cJSON *c, const cJSON *at) {
    int L = f->t.n_labels;
    float t = (float)jget(at, "threshold");
    float *th = malloc((size_t)L * sizeof *th);
    mt_label_metrics *m = malloc((size_t)L * sizeof *m);
    for (int j = 0; j < L; j++) th[j] = t;
    mt_metrics_summary s;
    MT_CHECK_OK(mt_metrics_summarize(&f->t, th, m, &s));
    for (int j = 0; j < L; j++) {
        mt_confusion k;
        MT_CHECK_OK(mt_metrics_confusion(&f->t, j, t, &k));
        CHECK_EQ_I(k.tp, (long long)jat(at, "tp", j), "%s t=%g label %d", f->name, t, j);
        CHECK_EQ_I(k.fp, (long long)jat(at, "fp", j), "%s t=%g label %d", f->name, t, j);
        CHECK_EQ_I(k.fn, (long long)jat(at, "fn", j), "%s t=%g label %d", f->name, t, j);
        CHECK_EQ_I(k.tn, (long long)jat(at, "tn", j), "%s t=%g label %d", f->name, t, j);
        MT_CHECK(!memcmp(&k, &m[j].counts, sizeof k), "%s t=%g label %d: summary counts differ",
                 f->name, t, j);
        CHECK_VAL(mt_metrics_precision(k), jat(at, "precision", j), "%s t=%g label %d", f->name, t,
                  j);
        CHECK_VAL(mt_metrics_recall(k), jat(at, "recall", j), "%s t=%g label %d", f->name, t, j);
        CHECK_VAL(mt_metrics_f1(k), jat(at, "f1", j), "%s t=%g label %d", f->name, t, j);
        CHECK_VAL(m[j].f1, jat(at, "f1", j), "%s t=%g label %d", f->name, t, j);
        CHECK_VAL(m[j].auroc.value, jat(c, "auroc", j), "%s t=%g label %d", f->name, t, j);
    }
    CHECK_VAL(s.macro_f1, jget(at, "macro_f1"), "%s t=%g", f->name, t);
    CHECK_VAL(s.micro_f1, jget(at, "micro_f1"), "%s t=%g", f->name, t);
    check_summary_auroc(f, c, &s);
    free(th), free(m);
}

static void check_best(const fixture *f, const cJSON *best) {
    int L = f->t.n_labels;
    float *th = malloc((size_t)L * sizeof *th);
    for (int j = 0; j < L; j++) {
        mt_best_f1 b;
        MT_CHECK_OK(mt_metrics_best_f1(&f->t, j, &b));
        double want = jat(best, "threshold", j);
        MT_CHECK(isnan(want) ? isnan(b.threshold) : b.threshold == (float)want,
                 "%s label %d: best threshold %.9g, expected %.9g", f->name, j, b.threshold, want);
        MT_CHECK(b.defined == !isnan(want), "%s label %d", f->name, j);
        CHECK_VAL(b.f1, jat(best, "f1", j), "%s label %d", f->name, j);
        if (b.defined) { /* its counts are those at its threshold */
            mt_confusion k;
            MT_CHECK_OK(mt_metrics_confusion(&f->t, j, b.threshold, &k));
            MT_CHECK(!memcmp(&k, &b.counts, sizeof k), "%s label %d", f->name, j);
        }
        th[j] = b.defined ? b.threshold : INFINITY;
    }
    mt_metrics_summary s;
    MT_CHECK_OK(mt_metrics_summarize(&f->t, th, NULL, &s));
    CHECK_VAL(s.macro_f1, jget(best, "macro_f1"), "%s at best thresholds", f->name);
    CHECK_VAL(s.micro_f1, jget(best, "micro_f1"), "%s at best thresholds", f->name);
    free(th);
}

static void check_roc(const fixture *f, const cJSON *roc) {
    int j = (int)jget(roc, "label");
    const cJSON *fpr = cJSON_GetObjectItem(roc, "fpr");
    mt_roc_curve r;
    MT_CHECK_OK(mt_metrics_roc_curve(&f->t, j, &r));
    CHECK_EQ_I(r.n, cJSON_GetArraySize(fpr), "%s label %d: ROC points", f->name, j);
    for (int64_t i = 0; i < r.n && i < cJSON_GetArraySize(fpr); i++) {
        CHECK_VAL(r.fpr[i], jat(roc, "fpr", (int)i), "%s label %d point %lld", f->name, j,
                  (long long)i);
        CHECK_VAL(r.tpr[i], jat(roc, "tpr", (int)i), "%s label %d point %lld", f->name, j,
                  (long long)i);
        MT_CHECK(r.thresholds[i] == (float)jat(roc, "thresholds", (int)i),
                 "%s label %d point %lld: threshold %.9g, expected %.9g", f->name, j, (long long)i,
                 r.thresholds[i], jat(roc, "thresholds", (int)i));
    }
    mt_roc_curve_free(&r);
}

static void test_sklearn_fixtures(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics_cases.json", data_dir);
    cJSON *doc;
    MT_CHECK_OK(mt_json_read_file(path, &doc));
    if (mt_test_failed_checks) return;
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        fixture f;
        if (!fixture_load(c, &f)) continue;
        check_auroc(&f, c);
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "at")) check_at(&f, c, x);
        check_best(&f, cJSON_GetObjectItem(c, "best"));
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "roc")) check_roc(&f, x);
        fixture_free(&f);
        n_cases++;
    }
    MT_CHECK(n_cases >= 9, "only %d cases in %s", n_cases, path);
    cJSON_Delete(doc);
}

/* ---- Hand-computed cases -------------------------------------------------------------------- */

/* One label: AUROC of (s, y). */
static double auroc1(const float *s, const float *y, int64_t n) {
    mt_score_table t = {s, y, n, 1, NULL};
    mt_auroc a = {0};
    MT_CHECK_OK(mt_metrics_auroc(&t, 0, &a));
    return a.value;
}

static void test_auroc_by_hand(void) {
    float y[] = {0, 0, 1, 1};
    float perfect[] = {0.1f, 0.2f, 0.3f, 0.4f}, reversed[] = {0.4f, 0.3f, 0.2f, 0.1f};
    float ties[] = {0.5f, 0.5f, 0.5f, 0.5f}, doc[] = {0.1f, 0.4f, 0.35f, 0.8f};
    MT_CHECK_NEAR(auroc1(perfect, y, 4), 1.0, 0);
    MT_CHECK_NEAR(auroc1(reversed, y, 4), 0.0, 0);
    MT_CHECK_NEAR(auroc1(ties, y, 4), 0.5, 0);
    MT_CHECK_NEAR(auroc1(doc, y, 4), 0.75, 0); /* sklearn's roc_auc_score docstring */
    /* One tie across classes: 3 of 4 pairs right, 1 tied: (3 + 0.5) / 4. */
    float part[] = {0.1f, 0.3f, 0.3f, 0.4f};
    MT_CHECK_NEAR(auroc1(part, y, 4), 0.875, 0);
    /* -0.0 and +0.0 are one score; logits far apart still rank. */
    float zeros[] = {0.0f, -1e30f, -0.0f, 1e30f};
    MT_CHECK_NEAR(auroc1(zeros, y, 4), 0.875, 0);
    /* Unknown targets are skipped, whatever their score (NaN included). */
    float yu[] = {0, NAN, 1, NAN}, su[] = {0.2f, NAN, 0.9f, INFINITY};
    MT_CHECK_NEAR(auroc1(su, yu, 4), 1.0, 0);
}

static void test_roc_curve_by_hand(void) {
    float y[] = {0, 0, 1, 1}, s[] = {0.1f, 0.4f, 0.35f, 0.8f};
    mt_score_table t = {s, y, 4, 1, NULL};
    mt_roc_curve r;
    MT_CHECK_OK(mt_metrics_roc_curve(&t, 0, &r)); /* sklearn's roc_curve docstring */
    double fpr[] = {0, 0, 0.5, 0.5, 1}, tpr[] = {0, 0.5, 0.5, 1, 1};
    float th[] = {INFINITY, 0.8f, 0.4f, 0.35f, 0.1f};
    MT_CHECK(r.n == 5);
    for (int i = 0; i < 5 && i < r.n; i++) {
        MT_CHECK(r.fpr[i] == fpr[i] && r.tpr[i] == tpr[i] && r.thresholds[i] == th[i], "point %d",
                 i);
        MT_CHECK(r.tp[i] == (int64_t)(tpr[i] * 2) && r.fp[i] == (int64_t)(fpr[i] * 2), "point %d",
                 i);
    }
    mt_roc_curve_free(&r);
    MT_CHECK(r.n == 0 && !r.fpr);
    mt_roc_curve_free(&r); /* twice is harmless */

    /* No known pair at all: the single point (NaN, NaN) at +inf. */
    float yn[] = {NAN, NAN};
    t = (mt_score_table){s, yn, 2, 1, NULL};
    MT_CHECK_OK(mt_metrics_roc_curve(&t, 0, &r));
    MT_CHECK(r.n == 1 && isnan(r.fpr[0]) && isnan(r.tpr[0]) && r.thresholds[0] == INFINITY);
    mt_roc_curve_free(&r);
}

static void test_undefined_labels(void) {
    /* Label 0 positives only, 1 negatives only, 2 unknown throughout, 3 defined. */
    float s[] = {0.9f, 0.1f, 0.5f, 0.8f, 0.7f, 0.2f, NAN, 0.3f};
    float y[] = {1, 0, NAN, 1, 1, 0, NAN, 0};
    mt_score_table t = {s, y, 2, 4, NULL};
    mt_auroc a;
    for (int j = 0; j < 3; j++) {
        MT_CHECK_OK(mt_metrics_auroc(&t, j, &a));
        MT_CHECK(!a.defined && isnan(a.value), "label %d", j);
    }
    MT_CHECK_OK(mt_metrics_auroc(&t, 2, &a));
    MT_CHECK(a.n_pos == 0 && a.n_neg == 0 && a.n_unknown == 2);
    MT_CHECK_OK(mt_metrics_auroc(&t, 3, &a));
    MT_CHECK(a.defined && a.value == 1.0);

    float th[] = {0.5f, 0.5f, 0.5f, 0.5f};
    mt_label_metrics m[4];
    mt_metrics_summary sum;
    MT_CHECK_OK(mt_metrics_summarize(&t, th, m, &sum));
    MT_CHECK(sum.n_auroc_defined == 1 && sum.n_auroc_undefined == 3 && sum.macro_auroc == 1.0);
    /* Pooled: positives 0.9, 0.7, 0.8; negatives 0.5, 0.1, 0.3 (label 2's NaN score skipped). */
    MT_CHECK(sum.micro_auroc.defined && sum.micro_auroc.value == 1.0);
    MT_CHECK(sum.micro_auroc.n_pos == 3 && sum.micro_auroc.n_neg == 3 &&
             sum.micro_auroc.n_unknown == 2);
    /* F1: label 0 1.0, label 1 0 (nothing to find), label 2 0, label 3 1.0; macro over all 4. */
    MT_CHECK_NEAR(sum.macro_f1, 0.5, 0);
    MT_CHECK_NEAR(sum.micro_f1, 1.0, 0);

    /* No rows: every label undefined, nothing fails. */
    t = (mt_score_table){NULL, NULL, 0, 4, NULL};
    MT_CHECK_OK(mt_metrics_summarize(&t, th, m, &sum));
    MT_CHECK(sum.n_auroc_undefined == 4 && isnan(sum.macro_auroc) && !sum.micro_auroc.defined);
    MT_CHECK(sum.macro_f1 == 0 && sum.micro_f1 == 0 && m[0].precision == 0 && m[0].recall == 0);
    mt_best_f1 b;
    MT_CHECK_OK(mt_metrics_best_f1(&t, 0, &b));
    MT_CHECK(!b.defined && isnan(b.threshold) && b.f1 == 0);
}

static void test_f1_rules(void) {
    /* score >= threshold is positive: 0.5 at threshold 0.5 is. */
    float s[] = {0.5f, 0.4f, 0.9f, 0.1f}, y[] = {1, 1, 0, 0};
    mt_score_table t = {s, y, 4, 1, NULL};
    mt_confusion c;
    MT_CHECK_OK(mt_metrics_confusion(&t, 0, 0.5f, &c));
    MT_CHECK(c.tp == 1 && c.fn == 1 && c.fp == 1 && c.tn == 1);
    MT_CHECK_NEAR(mt_metrics_f1(c), 0.5, 0);
    /* Nothing predicted positive: precision and F1 are 0 (zero_division=0), not NaN. */
    MT_CHECK_OK(mt_metrics_confusion(&t, 0, INFINITY, &c));
    MT_CHECK(c.tp == 0 && c.fp == 0 && mt_metrics_precision(c) == 0 && mt_metrics_f1(c) == 0);
    MT_CHECK(mt_metrics_recall(c) == 0);
    MT_CHECK_OK(mt_metrics_confusion(&t, 0, -INFINITY, &c));
    MT_CHECK(c.tp == 2 && c.fp == 2);
    MT_CHECK(mt_metrics_f1((mt_confusion){0}) == 0);

    /* Best F1 ties: at 0.9 F1 = 2/3 (tp 1, fn 1), at 0.6 F1 = 4/6 (tp 2, fp 2); the larger wins. */
    float s2[] = {0.9f, 0.8f, 0.7f, 0.6f}, y2[] = {1, 0, 0, 1};
    t = (mt_score_table){s2, y2, 4, 1, NULL};
    mt_best_f1 b;
    MT_CHECK_OK(mt_metrics_best_f1(&t, 0, &b));
    MT_CHECK(b.defined && b.threshold == 0.9f, "threshold %g", b.threshold);
    MT_CHECK_NEAR(b.f1, 2.0 / 3.0, 1e-15);
    MT_CHECK(b.counts.tp == 1 && b.counts.fp == 0 && b.counts.fn == 1 && b.counts.tn == 2);
    /* Positives only: the lowest score predicts everything, F1 = 1. */
    float y3[] = {1, 1, 1, 1};
    t.targets = y3;
    MT_CHECK_OK(mt_metrics_best_f1(&t, 0, &b));
    MT_CHECK(b.defined && b.threshold == 0.6f && b.f1 == 1.0);
}

/* ---- Errors --------------------------------------------------------------------------------- */

static void test_bad_values(void) {
    static const char *const names[] = {"Atelectasis", "Edema"};
    float s[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, NAN}, y[] = {0, 1, 1, 0, 0, 1};
    mt_score_table t = {s, y, 3, 2, names};
    mt_auroc a;
    mt_roc_curve r;
    mt_confusion c;
    mt_best_f1 b;
    mt_metrics_summary sum;
    float th[] = {0.5f, 0.5f};
    /* A known target with a NaN score names the label and the row, in every function. */
    MT_CHECK_OK(mt_metrics_auroc(&t, 0, &a));
    MT_CHECK_FAILS(mt_metrics_auroc(&t, 1, &a), MT_ERR_NUMERIC, "label 'Edema' (1)", "row 2",
                   "nan");
    MT_CHECK_FAILS(mt_metrics_roc_curve(&t, 1, &r), MT_ERR_NUMERIC, "'Edema'", "row 2");
    MT_CHECK(r.n == 0 && !r.fpr);
    MT_CHECK_FAILS(mt_metrics_confusion(&t, 1, 0.5f, &c), MT_ERR_NUMERIC, "'Edema'", "row 2");
    MT_CHECK_FAILS(mt_metrics_best_f1(&t, 1, &b), MT_ERR_NUMERIC, "'Edema'", "row 2");
    MT_CHECK_FAILS(mt_metrics_summarize(&t, th, NULL, &sum), MT_ERR_NUMERIC, "'Edema'", "row 2");
    s[5] = -INFINITY;
    MT_CHECK_FAILS(mt_metrics_auroc(&t, 1, &a), MT_ERR_NUMERIC, "'Edema'", "row 2", "-inf");
    /* ... but an unknown target's NaN score is skipped. */
    y[5] = NAN;
    s[5] = NAN;
    MT_CHECK_OK(mt_metrics_summarize(&t, th, NULL, &sum));

    /* Targets other than 0, 1, NaN; without names the label is its index. */
    y[2] = 0.5f;
    t.names = NULL;
    MT_CHECK_FAILS(mt_metrics_auroc(&t, 0, &a), MT_ERR_ARG, "label 0, row 1", "target 0.5");
    MT_CHECK_FAILS(mt_metrics_summarize(&t, th, NULL, &sum), MT_ERR_ARG, "label 0, row 1");
    y[2] = 1;
    th[1] = NAN;
    MT_CHECK_FAILS(mt_metrics_summarize(&t, th, NULL, &sum), MT_ERR_ARG, "label 1", "threshold");
    MT_CHECK_FAILS(mt_metrics_confusion(&t, 0, NAN, &c), MT_ERR_ARG, "label 0", "threshold");
}

static void test_bad_arguments(void) {
    float s[] = {0.1f, 0.2f}, y[] = {0, 1};
    mt_score_table t = {s, y, 2, 1, NULL};
    mt_auroc a;
    mt_metrics_summary sum;
    MT_CHECK_FAILS(mt_metrics_auroc(NULL, 0, &a), MT_ERR_ARG, "NULL");
    MT_CHECK_FAILS(mt_metrics_auroc(&t, 1, &a), MT_ERR_ARG, "label index 1", "[0, 1)");
    MT_CHECK_FAILS(mt_metrics_auroc(&t, -1, &a), MT_ERR_ARG, "label index -1");
    MT_CHECK_FAILS(mt_metrics_summarize(&t, NULL, NULL, &sum), MT_ERR_ARG, "thresholds");
    mt_score_table bad = t;
    bad.n_labels = 0;
    MT_CHECK_FAILS(mt_metrics_auroc(&bad, 0, &a), MT_ERR_ARG, "n_labels = 0");
    bad = t, bad.n = -1;
    MT_CHECK_FAILS(mt_metrics_auroc(&bad, 0, &a), MT_ERR_ARG, "row count -1");
    bad = t, bad.n = MT_METRICS_MAX_PAIRS + 1;
    MT_CHECK_FAILS(mt_metrics_auroc(&bad, 0, &a), MT_ERR_ARG, "row count");
    bad = t, bad.n_labels = 4, bad.n = MT_METRICS_MAX_PAIRS / 2;
    float th[4] = {0};
    MT_CHECK_FAILS(mt_metrics_summarize(&bad, th, NULL, &sum), MT_ERR_ARG, "pooled pairs");
    bad = t, bad.scores = NULL;
    MT_CHECK_FAILS(mt_metrics_auroc(&bad, 0, &a), MT_ERR_ARG, "scores is NULL");
    bad = t, bad.targets = NULL;
    MT_CHECK_FAILS(mt_metrics_auroc(&bad, 0, &a), MT_ERR_ARG, "targets is NULL");
}

static void test_allocation_failures(void) {
    float s[] = {0.1f, 0.2f, 0.3f}, y[] = {0, 1, 1}, th[] = {0.5f};
    mt_score_table t = {s, y, 3, 1, NULL};
    mt_auroc a;
    mt_roc_curve r;
    mt_best_f1 b;
    mt_metrics_summary sum;
    mt_alloc_fail_after(1);
    MT_CHECK_FAILS(mt_metrics_auroc(&t, 0, &a), MT_ERR_NOMEM, "sort keys");
    mt_alloc_fail_after(1);
    MT_CHECK_FAILS(mt_metrics_best_f1(&t, 0, &b), MT_ERR_NOMEM, "sort keys");
    mt_alloc_fail_after(1);
    MT_CHECK_FAILS(mt_metrics_summarize(&t, th, NULL, &sum), MT_ERR_NOMEM, "sort keys");
    mt_alloc_fail_after(2); /* the keys succeed, the curve does not; ASan checks nothing leaks */
    MT_CHECK_FAILS(mt_metrics_roc_curve(&t, 0, &r), MT_ERR_NOMEM, "ROC curve");
    MT_CHECK(r.n == 0 && !r.fpr);
    mt_alloc_fail_after(0);
    MT_CHECK_OK(mt_metrics_roc_curve(&t, 0, &r));
    mt_roc_curve_free(&r);
}

/* ---- Brute force on awkward floats ---------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t next_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}
static double uniform(void) {
    return (double)(next_u64() >> 11) * 0x1.0p-53;
}

/* Scores across the whole float range: huge and tiny magnitudes, both signs and zeros, subnormals,
 * and many repeats, so that every byte of the radix keys matters. */
static float awkward(void) {
    static const float pool[] = {0.0f,   -0.0f,   FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN,
                                 1e-40f, -1e-40f, 1.0f,    -1.0f,    0.5f,    3.0e38f};
    double u = uniform();
    if (u < 0.3) return pool[next_u64() % (sizeof pool / sizeof *pool)];
    float mag = (float)pow(10.0, -40 + 78 * uniform());
    return u < 0.65 ? mag : -mag;
}

static void test_brute_force(void) {
    enum { N = 400, L = 3 };
    static float s[N * L], y[N * L];
    for (int i = 0; i < N * L; i++) {
        s[i] = awkward();
        double u = uniform();
        y[i] = u < 0.05 ? NAN : u < 0.45 ? 1.0f : 0.0f;
    }
    mt_score_table t = {s, y, N, L, NULL};
    for (int j = 0; j < L; j++) {
        /* AUROC: every (positive, negative) pair, 1 when ranked right, 1/2 when tied. */
        double right = 0, pairs = 0;
        for (int p = 0; p < N; p++)
            for (int q = 0; q < N; q++) {
                if (y[p * L + j] != 1 || y[q * L + j] != 0) continue;
                float sp = s[p * L + j], sq = s[q * L + j];
                right += sp > sq ? 1 : sp == sq ? 0.5 : 0;
                pairs++;
            }
        mt_auroc a;
        MT_CHECK_OK(mt_metrics_auroc(&t, j, &a));
        MT_CHECK_NEAR(a.value, right / pairs, TOL);
        /* Best F1: try every known score as the threshold; keep the largest on ties. */
        double best = -1;
        float best_t = NAN;
        for (int r = 0; r < N; r++) {
            if (isnan(y[r * L + j])) continue;
            float th = s[r * L + j];
            mt_confusion c;
            MT_CHECK_OK(mt_metrics_confusion(&t, j, th, &c));
            double f1 = mt_metrics_f1(c);
            if (f1 > best || (f1 == best && th > best_t)) best = f1, best_t = th;
        }
        mt_best_f1 b;
        MT_CHECK_OK(mt_metrics_best_f1(&t, j, &b));
        MT_CHECK(b.threshold == best_t, "label %d: %.9g, expected %.9g", j, b.threshold, best_t);
        MT_CHECK_NEAR(b.f1, best, 0);
        /* The ROC curve's thresholds are the distinct known scores, descending, and its counts
         * are mt_metrics_confusion's. */
        mt_roc_curve r;
        MT_CHECK_OK(mt_metrics_roc_curve(&t, j, &r));
        for (int64_t i = 1; i < r.n; i++) {
            MT_CHECK(r.thresholds[i] < r.thresholds[i - 1], "label %d point %lld", j, (long long)i);
            mt_confusion c;
            MT_CHECK_OK(mt_metrics_confusion(&t, j, r.thresholds[i], &c));
            MT_CHECK(c.tp == r.tp[i] && c.fp == r.fp[i], "label %d point %lld", j, (long long)i);
        }
        MT_CHECK(r.tp[r.n - 1] == a.n_pos && r.fp[r.n - 1] == a.n_neg);
        mt_roc_curve_free(&r);
    }
}

/* ---- Scale ---------------------------------------------------------------------------------- */

/* 10^6 rows, 2 labels, scores on 1000 levels (heavy ties): AUROC against a histogram count, which
 * needs no sort. Prints the time. */
static void test_million_rows(void) {
    enum { N = 1000000, L = 2, LEVELS = 1000 };
    float *s = malloc((size_t)N * L * sizeof *s), *y = malloc((size_t)N * L * sizeof *y);
    int64_t(*hist)[LEVELS][2] = calloc(L, sizeof *hist);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < L; j++) {
            int pos = uniform() < (j ? 0.02 : 0.3);
            int level = (int)(LEVELS * fmin(0.999999, fmax(0, uniform() * 0.8 + 0.2 * pos)));
            s[i * L + j] = (float)level / LEVELS;
            y[i * L + j] = (float)pos;
            hist[j][level][pos]++;
        }
    float th[L] = {0.5f, 0.5f};
    mt_label_metrics m[L];
    mt_metrics_summary sum;
    double t0 = mt_now();
    MT_CHECK_OK(mt_metrics_summarize(&(mt_score_table){s, y, N, L, NULL}, th, m, &sum));
    double dt = mt_now() - t0;
    printf("  summarize %d rows x %d labels: %.3f s\n", N, L, dt);
    int64_t pooled[LEVELS][2] = {{0}};
    for (int j = 0; j <= L; j++) { /* j == L: the pool */
        int64_t(*h)[2] = j < L ? hist[j] : pooled;
        double area = 0, above = 0, np = 0, nn = 0;
        for (int v = LEVELS - 1; v >= 0; v--) {
            area += (double)h[v][0] * (above + 0.5 * (double)h[v][1]);
            above += (double)h[v][1];
            np += (double)h[v][1], nn += (double)h[v][0];
            if (j < L) pooled[v][0] += h[v][0], pooled[v][1] += h[v][1];
        }
        double got = j < L ? m[j].auroc.value : sum.micro_auroc.value;
        MT_CHECK_NEAR(got, area / (np * nn), TOL);
    }
    free(s), free(y), free(hist);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    MT_RUN(test_sklearn_fixtures);
    MT_RUN(test_auroc_by_hand);
    MT_RUN(test_roc_curve_by_hand);
    MT_RUN(test_undefined_labels);
    MT_RUN(test_f1_rules);
    MT_RUN(test_bad_values);
    MT_RUN(test_bad_arguments);
    MT_RUN(test_allocation_failures);
    MT_RUN(test_brute_force);
    MT_RUN(test_million_rows);
    return mt_test_summary();
}
