/* Classification metrics (metrics.h): AUROC, ROC curves, confusion counts, F1 and its best
 * threshold, macro and micro aggregates, all equal to scikit-learn's.
 *
 * How. For one label, each known pair's score becomes an order-preserving 32-bit key; positives and
 * negatives go into two arrays (one buffer: positives fill it from the front, negatives from the
 * back) and each is radix-sorted. Walking both arrays from the top merges them into groups of equal
 * score, in descending order, with the number of positives and negatives in each group. Every
 * metric is a fold over those groups:
 *
 *   AUROC       each negative in a group scores 1 per positive above it and 1/2 per positive in the
 *               same group (the tie-aware Mann-Whitney count), over n_pos * n_neg. Summed as an
 *               exact integer (twice the area), divided once.
 *   ROC curve   one point per group: cumulative (fp, tp), threshold = the group's score.
 *   best F1     the cut after each group; F1 compared exactly as integer ratios.
 *
 * mt_metrics_summarize gathers every label into one buffer (each label's positives and negatives
 * are contiguous runs in it), sorts each run for the per-label AUROC, then sorts the whole positive
 * and negative regions for the micro AUROC of the pooled pairs. */
#include "medtrain/metrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "medtrain/mem.h"

/* ---- Checking inputs ------------------------------------------------------------------------ */

/* "label 'Edema' (3)" or "label 3", for messages. */
static const char *label_name(const mt_score_table *t, int label, char *buf, size_t size) {
    if (t->names && t->names[label])
        snprintf(buf, size, "label '%s' (%d)", t->names[label], label);
    else
        snprintf(buf, size, "label %d", label);
    return buf;
}

static mt_status check_table(const mt_score_table *t) {
    if (!t) return mt_fail(MT_ERR_ARG, "metrics: score table is NULL");
    if (t->n_labels < 1)
        return mt_fail(MT_ERR_ARG, "metrics: expected at least 1 label, found n_labels = %d",
                       t->n_labels);
    if (t->n < 0 || t->n > MT_METRICS_MAX_PAIRS)
        return mt_fail(MT_ERR_ARG, "metrics: row count %lld outside [0, %lld]", (long long)t->n,
                       (long long)MT_METRICS_MAX_PAIRS);
    if (t->n > 0 && (!t->scores || !t->targets))
        return mt_fail(MT_ERR_ARG, "metrics: %s is NULL with %lld rows",
                       t->scores ? "targets" : "scores", (long long)t->n);
    return MT_OK;
}

static mt_status check_label(const mt_score_table *t, int label) {
    MT_TRY(check_table(t));
    if (label < 0 || label >= t->n_labels)
        return mt_fail(MT_ERR_ARG, "metrics: label index %d outside [0, %d)", label, t->n_labels);
    return MT_OK;
}

/* Reads pair (row, label): *y = 1 or 0 for a known target, -1 for unknown (NaN). A known pair
 * must have a finite score. */
static mt_status read_pair(const mt_score_table *t, int label, int64_t row, int *y, float *s) {
    size_t at = (size_t)row * (size_t)t->n_labels + (size_t)label;
    float target = t->targets[at];
    char name[160];
    if (isnan(target)) {
        *y = -1;
        return MT_OK;
    }
    if (target != 0.0f && target != 1.0f)
        return mt_fail(MT_ERR_ARG, "%s, row %lld: target %g, expected 1, 0 or NaN (unknown)",
                       label_name(t, label, name, sizeof name), (long long)row, (double)target);
    *s = t->scores[at];
    if (!isfinite(*s))
        return mt_fail(MT_ERR_NUMERIC,
                       "%s, row %lld: score is %g, expected a finite number (the target is known; "
                       "check the model's outputs)",
                       label_name(t, label, name, sizeof name), (long long)row, (double)*s);
    *y = target == 1.0f;
    return MT_OK;
}

/* ---- Sortable keys ------------------------------------------------------------------------ */

/* Maps a float to a uint32 whose unsigned order is the float order (for every non-NaN float,
 * infinities included): flip all bits of negatives, set the sign bit of positives. -0.0 becomes
 * +0.0 first, so the two zeros are one score (they compare equal as floats). */
static uint32_t score_key(float s) {
    if (s == 0.0f) s = 0.0f;
    uint32_t b;
    memcpy(&b, &s, sizeof b);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

static float key_score(uint32_t k) {
    uint32_t b = (k & 0x80000000u) ? k & 0x7fffffffu : ~k;
    float s;
    memcpy(&s, &b, sizeof s);
    return s;
}

/* LSD radix sort, ascending, 4 passes of 8 bits; a pass is skipped when every key shares its byte
 * (probabilities share their top byte). tmp holds n keys. */
static void radix_sort(uint32_t *a, int64_t n, uint32_t *tmp) {
    if (n < 2) return;
    int64_t count[4][256];
    memset(count, 0, sizeof count);
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) count[b][(a[i] >> (8 * b)) & 255]++;
    uint32_t *src = a, *dst = tmp;
    for (int b = 0; b < 4; b++) {
        int shift = 8 * b;
        if (count[b][(src[0] >> shift) & 255] == n) continue;
        int64_t offset[256], sum = 0;
        for (int d = 0; d < 256; d++) offset[d] = sum, sum += count[b][d];
        for (int64_t i = 0; i < n; i++) dst[offset[(src[i] >> shift) & 255]++] = src[i];
        uint32_t *swap = src;
        src = dst, dst = swap;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof *a);
}

/* Number of keys >= k in ascending a[0..n). */
static int64_t count_at_least(const uint32_t *a, int64_t n, uint32_t k) {
    int64_t lo = 0, hi = n; /* first index with a[i] >= k lies in [lo, hi] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return n - lo;
}

/* ---- Gathering a label's known pairs ------------------------------------------------------ */

/* Room for keys: positives are appended at keys[n_pos++], negatives at keys[cap - ++n_neg]. */
typedef struct key_buf {
    uint32_t *keys, *tmp; /* cap each; tmp is radix-sort scratch */
    int64_t cap, n_pos, n_neg, n_unknown;
} key_buf;

/* One label's (or the pool's) sorted keys: positives and negatives, ascending. */
typedef struct key_run {
    uint32_t *pos, *neg;
    int64_t n_pos, n_neg, n_unknown;
} key_run;

static mt_status key_buf_alloc(key_buf *kb, int64_t cap) {
    memset(kb, 0, sizeof *kb);
    size_t slots = cap > 0 ? (size_t)cap : 1;
    kb->keys = mt_alloc(2 * slots * sizeof *kb->keys, "metrics: sort keys (2 per pair)");
    if (!kb->keys) return MT_ERR_NOMEM;
    kb->tmp = kb->keys + slots;
    kb->cap = cap;
    return MT_OK;
}

/* Appends the label's known pairs to kb and sorts them; *run views them. */
static mt_status gather_sorted(const mt_score_table *t, int label, key_buf *kb, key_run *run) {
    int64_t pos0 = kb->n_pos, neg0 = kb->n_neg, unknown = 0;
    for (int64_t row = 0; row < t->n; row++) {
        int y = 0;
        float s = 0;
        MT_TRY(read_pair(t, label, row, &y, &s));
        if (y < 0)
            unknown++;
        else if (y)
            kb->keys[kb->n_pos++] = score_key(s);
        else
            kb->keys[kb->cap - ++kb->n_neg] = score_key(s);
    }
    kb->n_unknown += unknown;
    *run = (key_run){.pos = kb->keys + pos0,
                     .neg = kb->keys + kb->cap - kb->n_neg,
                     .n_pos = kb->n_pos - pos0,
                     .n_neg = kb->n_neg - neg0,
                     .n_unknown = unknown};
    radix_sort(run->pos, run->n_pos, kb->tmp);
    radix_sort(run->neg, run->n_neg, kb->tmp);
    return MT_OK;
}

/* For the single-label functions: checks, allocates and gathers. On success free kb->keys. */
static mt_status load_label(const mt_score_table *t, int label, key_buf *kb, key_run *run) {
    MT_TRY(check_label(t, label));
    MT_TRY(key_buf_alloc(kb, t->n));
    mt_status st = gather_sorted(t, label, kb, run);
    if (st != MT_OK) mt_free(kb->keys);
    return st;
}

/* ---- Walking groups of equal score, descending -------------------------------------------- */

typedef struct group_walk {
    const uint32_t *pos, *neg;
    int64_t ip, in; /* unvisited: pos[0..ip), neg[0..in) */
} group_walk;

static group_walk walk_start(const key_run *r) {
    return (group_walk){r->pos, r->neg, r->n_pos, r->n_neg};
}

/* The next group: its key and how many positives and negatives share it. */
static bool walk_next(group_walk *w, uint32_t *key, int64_t *gp, int64_t *gn) {
    if (!w->ip && !w->in) return false;
    uint32_t k = w->ip ? w->pos[w->ip - 1] : w->neg[w->in - 1];
    if (w->in && w->neg[w->in - 1] > k) k = w->neg[w->in - 1];
    int64_t p = 0, q = 0;
    while (w->ip && w->pos[w->ip - 1] == k) w->ip--, p++;
    while (w->in && w->neg[w->in - 1] == k) w->in--, q++;
    *key = k, *gp = p, *gn = q;
    return true;
}

/* ---- Metrics of a sorted run -------------------------------------------------------------- */

static mt_auroc auroc_of(const key_run *r) {
    mt_auroc a = {.value = NAN, .n_pos = r->n_pos, .n_neg = r->n_neg, .n_unknown = r->n_unknown};
    if (!r->n_pos || !r->n_neg) return a;
    /* Twice the area: < 2 * n_pos * n_neg <= n^2 / 2, inside 64 bits for n <= 2^31. */
    uint64_t area2 = 0, above = 0;
    group_walk w = walk_start(r);
    uint32_t k;
    int64_t gp, gn;
    while (walk_next(&w, &k, &gp, &gn)) {
        area2 += (uint64_t)gn * (2 * above + (uint64_t)gp);
        above += (uint64_t)gp;
    }
    a.value = (double)area2 / (2.0 * (double)r->n_pos * (double)r->n_neg);
    a.defined = true;
    return a;
}

static mt_confusion confusion_of(const key_run *r, float threshold) {
    uint32_t k = score_key(threshold);
    mt_confusion c = {.tp = count_at_least(r->pos, r->n_pos, k),
                      .fp = count_at_least(r->neg, r->n_neg, k)};
    c.fn = r->n_pos - c.tp, c.tn = r->n_neg - c.fp;
    return c;
}

static mt_best_f1 best_f1_of(const key_run *r) {
    mt_best_f1 b = {.threshold = NAN, .counts = {.fn = r->n_pos, .tn = r->n_neg}};
    if (!r->n_pos) return b;
    /* F1 = 2tp / (2tp + fp + fn) = 2tp / (tp + n_pos + fp); a beats b when tp_a * den_b >
     * tp_b * den_a (tp <= 2^31, den <= 2^32: the products fit). Strictly greater, walking down,
     * keeps the largest threshold among equals. */
    uint64_t tp = 0, fp = 0, best_tp = 0, best_den = 1;
    group_walk w = walk_start(r);
    uint32_t k;
    int64_t gp, gn;
    while (walk_next(&w, &k, &gp, &gn)) {
        tp += (uint64_t)gp, fp += (uint64_t)gn;
        uint64_t den = tp + (uint64_t)r->n_pos + fp;
        if (!b.defined || tp * best_den > best_tp * den) {
            b.defined = true, b.threshold = key_score(k);
            best_tp = tp, best_den = den;
            b.counts = (mt_confusion){.tp = (int64_t)tp,
                                      .fp = (int64_t)fp,
                                      .fn = r->n_pos - (int64_t)tp,
                                      .tn = r->n_neg - (int64_t)fp};
        }
    }
    b.f1 = mt_metrics_f1(b.counts);
    return b;
}

/* ---- Public functions ---------------------------------------------------------------------- */

static double ratio(int64_t num, int64_t den) {
    return den > 0 ? (double)num / (double)den : 0.0;
}

double mt_metrics_precision(mt_confusion c) {
    return ratio(c.tp, c.tp + c.fp);
}
double mt_metrics_recall(mt_confusion c) {
    return ratio(c.tp, c.tp + c.fn);
}
double mt_metrics_f1(mt_confusion c) {
    return ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn);
}

mt_status mt_metrics_auroc(const mt_score_table *t, int label, mt_auroc *out) {
    key_buf kb;
    key_run run;
    MT_TRY(load_label(t, label, &kb, &run));
    *out = auroc_of(&run);
    mt_free(kb.keys);
    return MT_OK;
}

mt_status mt_metrics_best_f1(const mt_score_table *t, int label, mt_best_f1 *out) {
    key_buf kb;
    key_run run;
    MT_TRY(load_label(t, label, &kb, &run));
    *out = best_f1_of(&run);
    mt_free(kb.keys);
    return MT_OK;
}

void mt_roc_curve_free(mt_roc_curve *c) {
    if (!c) return;
    mt_free(c->fpr); /* the one allocation */
    memset(c, 0, sizeof *c);
}

mt_status mt_metrics_roc_curve(const mt_score_table *t, int label, mt_roc_curve *out) {
    memset(out, 0, sizeof *out);
    key_buf kb;
    key_run run;
    MT_TRY(load_label(t, label, &kb, &run));
    group_walk w = walk_start(&run);
    uint32_t k;
    int64_t gp, gn, n = 1;
    while (walk_next(&w, &k, &gp, &gn)) n++;

    /* One block: fpr, tpr, tp, fp (8 bytes each), then thresholds (4). */
    size_t m = (size_t)n;
    char *block = mt_alloc(m * (4 * 8 + sizeof(float)), "metrics: ROC curve points");
    if (!block) {
        mt_free(kb.keys);
        return MT_ERR_NOMEM;
    }
    mt_roc_curve c = {.n = n,
                      .fpr = (double *)block,
                      .tpr = (double *)block + m,
                      .tp = (int64_t *)(block + 16 * m),
                      .fp = (int64_t *)(block + 24 * m),
                      .thresholds = (float *)(block + 32 * m)};
    c.thresholds[0] = INFINITY, c.tp[0] = 0, c.fp[0] = 0;
    w = walk_start(&run);
    for (int64_t i = 1; walk_next(&w, &k, &gp, &gn); i++) {
        c.thresholds[i] = key_score(k);
        c.tp[i] = c.tp[i - 1] + gp;
        c.fp[i] = c.fp[i - 1] + gn;
    }
    for (int64_t i = 0; i < n; i++) {
        c.fpr[i] = run.n_neg ? (double)c.fp[i] / (double)run.n_neg : NAN;
        c.tpr[i] = run.n_pos ? (double)c.tp[i] / (double)run.n_pos : NAN;
    }
    mt_free(kb.keys);
    *out = c;
    return MT_OK;
}

static mt_status check_threshold(const mt_score_table *t, int label, float threshold) {
    char name[160];
    if (isnan(threshold))
        return mt_fail(MT_ERR_ARG, "%s: threshold is NaN, expected a number",
                       label_name(t, label, name, sizeof name));
    return MT_OK;
}

mt_status mt_metrics_confusion(const mt_score_table *t, int label, float threshold,
                               mt_confusion *out) {
    MT_TRY(check_label(t, label));
    MT_TRY(check_threshold(t, label, threshold));
    mt_confusion c = {0};
    for (int64_t row = 0; row < t->n; row++) {
        int y = 0;
        float s = 0;
        MT_TRY(read_pair(t, label, row, &y, &s));
        if (y < 0) continue;
        bool pred = s >= threshold;
        c.tp += y && pred, c.fn += y && !pred;
        c.fp += !y && pred, c.tn += !y && !pred;
    }
    *out = c;
    return MT_OK;
}

/* Per-label metrics into per_label[j] (when given) and their sums into out. */
static mt_status summarize_labels(const mt_score_table *t, const float *thresholds, key_buf *kb,
                                  mt_label_metrics *per_label, mt_metrics_summary *out) {
    double auroc_sum = 0, f1_sum = 0;
    for (int j = 0; j < t->n_labels; j++) {
        MT_TRY(check_threshold(t, j, thresholds[j]));
        key_run run;
        MT_TRY(gather_sorted(t, j, kb, &run));
        mt_label_metrics m = {.auroc = auroc_of(&run), .counts = confusion_of(&run, thresholds[j])};
        m.precision = mt_metrics_precision(m.counts);
        m.recall = mt_metrics_recall(m.counts);
        m.f1 = mt_metrics_f1(m.counts);
        if (per_label) per_label[j] = m;
        if (m.auroc.defined)
            out->n_auroc_defined++, auroc_sum += m.auroc.value;
        else
            out->n_auroc_undefined++;
        f1_sum += m.f1;
        out->micro_counts.tp += m.counts.tp, out->micro_counts.fp += m.counts.fp;
        out->micro_counts.fn += m.counts.fn, out->micro_counts.tn += m.counts.tn;
    }
    out->macro_auroc = out->n_auroc_defined ? auroc_sum / out->n_auroc_defined : NAN;
    out->macro_f1 = f1_sum / t->n_labels;
    out->micro_f1 = mt_metrics_f1(out->micro_counts);
    return MT_OK;
}

mt_status mt_metrics_summarize(const mt_score_table *t, const float *thresholds,
                               mt_label_metrics *per_label, mt_metrics_summary *out) {
    MT_TRY(check_table(t));
    if (!thresholds) return mt_fail(MT_ERR_ARG, "metrics: thresholds is NULL (expected L values)");
    if (t->n > MT_METRICS_MAX_PAIRS / t->n_labels)
        return mt_fail(MT_ERR_ARG, "metrics: %lld rows x %d labels exceed %lld pooled pairs",
                       (long long)t->n, t->n_labels, (long long)MT_METRICS_MAX_PAIRS);
    key_buf kb;
    MT_TRY(key_buf_alloc(&kb, t->n * t->n_labels));
    mt_metrics_summary s = {0};
    mt_status st = summarize_labels(t, thresholds, &kb, per_label, &s);
    if (st == MT_OK) {
        /* Every label's runs are sorted; sorting the whole regions pools them. */
        key_run pool = {.pos = kb.keys,
                        .neg = kb.keys + kb.cap - kb.n_neg,
                        .n_pos = kb.n_pos,
                        .n_neg = kb.n_neg,
                        .n_unknown = kb.n_unknown};
        radix_sort(pool.pos, pool.n_pos, kb.tmp);
        radix_sort(pool.neg, pool.n_neg, kb.tmp);
        s.micro_auroc = auroc_of(&pool);
        *out = s;
    }
    mt_free(kb.keys);
    return st;
}
