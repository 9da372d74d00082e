/* Text metrics (textmetrics.h): corpus BLEU as sacrebleu computes it, ROUGE-L as rouge-score does.
 *
 * How. A segment is one hypothesis and its references. Each string is tokenized (texttok.c) into
 * space-separated tokens; the segment's tokens are then interned: sorted by their bytes, equal
 * tokens get equal uint32 ids, so that everything after compares integers.
 *
 *   BLEU     each text's n-grams (n = 1..4, as id tuples) are sorted; one merge walk over the
 *            hypothesis's runs and every reference's runs gives, per distinct hypothesis n-gram,
 *            its count and its largest count in any one reference (sacrebleu's max-merged
 *            reference Counter), whence correct_n += min(the two), total_n += count.
 *   ROUGE-L  LCS length by the textbook dynamic programme, one row of hypothesis length.
 *
 * Scoring BLEU from the summed statistics (mt_bleu_score) is sacrebleu's compute_bleu operation
 * for operation (same products, quotients and summation order), so the results agree to the last
 * bit or so. */
#include "medtrain/textmetrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textmetrics_internal.h"
#include "medtrain/mem.h"

/* ---- A segment: tokenized texts and token ids ----------------------------------------------- */

typedef struct token_ref {
    const char *s;
    uint32_t len, at; /* length in bytes; index into seg.ids */
} token_ref;

/* One n-gram of token ids; unused tail ids are UINT32_MAX. */
typedef struct gram {
    uint32_t n, id[MT_BLEU_ORDER];
} gram;

typedef struct seg {
    int n_texts;         /* 1 + references */
    mt_text_scratch tok; /* tokenizer scratch */
    mt_text_buf *text;   /* [n_texts]: text 0 the hypothesis, then the references, tokenized */
    bool *present;       /* [n_texts]: false for a NULL reference */
    size_t *first, *len; /* [n_texts]: each text's tokens are ids[first .. first + len) */
    size_t *cursor;      /* [n_texts]: merge-walk positions */
    uint32_t *ids;       /* [tokens] token ids */
    token_ref *refs;     /* [tokens] sort scratch */
    size_t cap_ids, cap_refs;
    gram *grams; /* n-grams of every text, text after text */
    size_t *gram_first, *gram_len, cap_grams;
    uint32_t *row; /* LCS row */
    size_t cap_row;
} seg;

static void seg_free(seg *s) {
    mt_text_scratch_free(&s->tok);
    for (int t = 0; s->text && t < s->n_texts; t++) mt_text_buf_free(&s->text[t]);
    mt_free(s->text), mt_free(s->present), mt_free(s->first); /* first: len, cursor, gram_* too */
    mt_free(s->ids), mt_free(s->refs), mt_free(s->grams), mt_free(s->row);
    memset(s, 0, sizeof *s);
}

static mt_status seg_init(seg *s, int n_refs) {
    memset(s, 0, sizeof *s);
    size_t k = (size_t)n_refs + 1;
    s->n_texts = (int)k;
    s->text = mt_calloc(k, sizeof *s->text, "text metrics: texts of a segment");
    s->present = mt_calloc(k, sizeof *s->present, "text metrics: texts of a segment");
    s->first = mt_calloc(5 * k, sizeof *s->first, "text metrics: texts of a segment");
    if (!s->text || !s->present || !s->first) {
        seg_free(s);
        return MT_ERR_NOMEM;
    }
    s->len = s->first + k, s->gram_first = s->first + 2 * k, s->gram_len = s->first + 3 * k;
    s->cursor = s->first + 4 * k;
    return MT_OK;
}

/* Grows array a (room for cap items) to hold n items, contents kept; returns MT_ERR_NOMEM from
 * the calling function when it cannot. */
#define TRY_GROW(a, cap, n, what)                                                                  \
    do {                                                                                           \
        if ((n) > (cap)) {                                                                         \
            size_t c_ = (cap) ? (cap) : 256;                                                       \
            while (c_ < (n)) c_ *= 2;                                                              \
            void *q_ = mt_realloc((a), c_, sizeof *(a), (what));                                   \
            if (!q_) return MT_ERR_NOMEM;                                                          \
            (a) = q_, (cap) = c_;                                                                  \
        }                                                                                          \
    } while (0)

typedef enum tokenizer { TOK_13A, TOK_ROUGE } tokenizer;

/* Tokenizes text t (NULL: an absent reference) with the segment's tokenizer. */
static mt_status seg_tokenize(seg *s, int t, const char *str, tokenizer kind, bool flag,
                              const char *what) {
    s->present[t] = str != NULL;
    s->text[t].n = 0;
    if (!str) return MT_OK;
    return kind == TOK_13A ? mt_text_tok_13a(str, flag, what, &s->tok, &s->text[t])
                           : mt_text_tok_rouge(str, flag, what, &s->tok, &s->text[t]);
}

static int cmp_token(const void *a, const void *b) {
    const token_ref *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Splits every present text into tokens and gives equal tokens equal ids. */
static mt_status seg_intern(seg *s) {
    size_t total = 0;
    for (int t = 0; t < s->n_texts; t++) {
        s->first[t] = total, s->len[t] = 0;
        if (!s->present[t] || !s->text[t].n) continue;
        s->len[t] = 1;
        for (size_t i = 0; i < s->text[t].n; i++) s->len[t] += s->text[t].p[i] == ' ';
        total += s->len[t];
    }
    if (total >= UINT32_MAX)
        return mt_fail(MT_ERR_ARG, "text metrics: %zu tokens in one segment, at most %u", total,
                       UINT32_MAX - 1);
    TRY_GROW(s->refs, s->cap_refs, total, "text metrics: tokens");
    TRY_GROW(s->ids, s->cap_ids, total, "text metrics: token ids");

    size_t k = 0;
    for (int t = 0; t < s->n_texts; t++) {
        const char *p = s->text[t].p, *end = p + s->text[t].n;
        for (size_t i = 0; i < s->len[t]; i++) {
            const char *q = memchr(p, ' ', (size_t)(end - p));
            if (!q) q = end;
            s->refs[k] = (token_ref){p, (uint32_t)(q - p), (uint32_t)k};
            k++, p = q + 1;
        }
    }
    if (total > 1) qsort(s->refs, total, sizeof *s->refs, cmp_token);
    uint32_t id = 0;
    for (size_t i = 0; i < total; i++) {
        if (i && cmp_token(&s->refs[i - 1], &s->refs[i])) id++;
        s->ids[s->refs[i].at] = id;
    }
    return MT_OK;
}

/* ---- BLEU statistics ----------------------------------------------------------------------- */

static int cmp_gram(const void *a, const void *b) {
    const gram *x = a, *y = b;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    for (int k = 0; k < MT_BLEU_ORDER; k++)
        if (x->id[k] != y->id[k]) return x->id[k] < y->id[k] ? -1 : 1;
    return 0;
}

/* Every text's n-grams, n = 1..4, sorted text by text. */
static mt_status seg_grams(seg *s) {
    size_t total = 0;
    for (int t = 0; t < s->n_texts; t++)
        for (size_t n = 1; n <= MT_BLEU_ORDER; n++) total += s->len[t] >= n ? s->len[t] - n + 1 : 0;
    TRY_GROW(s->grams, s->cap_grams, total, "bleu: n-grams");
    size_t k = 0;
    for (int t = 0; t < s->n_texts; t++) {
        const uint32_t *ids = s->ids + s->first[t];
        s->gram_first[t] = k;
        for (uint32_t n = 1; n <= MT_BLEU_ORDER; n++)
            for (size_t i = 0; i + n <= s->len[t]; i++) {
                gram g = {.n = n, .id = {UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX}};
                memcpy(g.id, ids + i, n * sizeof *ids);
                s->grams[k++] = g;
            }
        s->gram_len[t] = k - s->gram_first[t];
        if (s->gram_len[t] > 1)
            qsort(s->grams + s->gram_first[t], s->gram_len[t], sizeof *s->grams, cmp_gram);
    }
    return MT_OK;
}

/* Length of the run of grams equal to g[0] in g[0..n). */
static size_t run_length(const gram *g, size_t n) {
    size_t k = 1;
    while (k < n && !cmp_gram(&g[0], &g[k])) k++;
    return k;
}

/* sacrebleu's _get_closest_ref_len: the present reference closest in length, ties to the
 * shorter. */
static int64_t closest_ref_len(const seg *s) {
    int64_t hyp = (int64_t)s->len[0], best = -1, best_diff = -1;
    for (int t = 1; t < s->n_texts; t++) {
        if (!s->present[t]) continue;
        int64_t len = (int64_t)s->len[t], diff = llabs(hyp - len);
        if (best_diff < 0 || diff < best_diff || (diff == best_diff && len < best))
            best = len, best_diff = diff;
    }
    return best;
}

/* Adds the tokenized, interned segment's statistics to acc. */
static mt_status seg_bleu(seg *s, mt_bleu_stats *acc) {
    MT_TRY(seg_grams(s));
    mt_bleu_stats st = {.sys_len = (int64_t)s->len[0], .ref_len = closest_ref_len(s)};
    const gram *h = s->grams + s->gram_first[0];
    size_t nh = s->gram_len[0];
    for (int t = 1; t < s->n_texts; t++) s->cursor[t] = 0;
    for (size_t i = 0; i < nh;) {
        size_t count = run_length(h + i, nh - i), most = 0;
        for (int t = 1; t < s->n_texts; t++) { /* absent references have no n-grams */
            const gram *r = s->grams + s->gram_first[t];
            size_t nr = s->gram_len[t], *c = &s->cursor[t];
            while (*c < nr && cmp_gram(&r[*c], &h[i]) < 0) (*c)++;
            if (*c < nr && !cmp_gram(&r[*c], &h[i])) {
                size_t m = run_length(r + *c, nr - *c);
                most = m > most ? m : most;
                *c += m;
            }
        }
        uint32_t n = h[i].n - 1;
        st.total[n] += (int64_t)count;
        st.correct[n] += (int64_t)(count < most ? count : most);
        i += count;
    }
    acc->sys_len += st.sys_len, acc->ref_len += st.ref_len;
    for (int n = 0; n < MT_BLEU_ORDER; n++)
        acc->correct[n] += st.correct[n], acc->total[n] += st.total[n];
    return MT_OK;
}

/* ---- Checking arguments --------------------------------------------------------------------- */

/* The references of a segment: refs[r] (per segment) or refs[r][i] (streams). */
typedef struct ref_view {
    const char *const *per_seg;       /* mt_*_add_segment / mt_rouge_l_multi: refs[r] */
    const char *const *const *stream; /* corpus functions: refs[r][i] */
    size_t i;
} ref_view;

static const char *ref_at(ref_view v, int r) {
    return v.stream ? v.stream[r][v.i] : v.per_seg[r];
}

static void ref_name(ref_view v, int r, char *buf, size_t size) {
    if (v.stream)
        snprintf(buf, size, "refs[%d][%zu]", r, v.i);
    else
        snprintf(buf, size, "refs[%d]", r);
}

/* Every segment needs one reference that is not NULL. */
static mt_status check_has_ref(const char *who, ref_view v, int n_refs) {
    for (int r = 0; r < n_refs; r++)
        if (ref_at(v, r)) return MT_OK;
    if (v.stream)
        return mt_fail(MT_ERR_ARG,
                       "%s: hypothesis %zu has no reference (refs[0..%d][%zu] are all NULL), "
                       "expected at least one",
                       who, v.i, n_refs - 1, v.i);
    return mt_fail(MT_ERR_ARG, "%s: refs[0..%d] are all NULL, expected at least one reference", who,
                   n_refs - 1);
}

static mt_status check_refs(const char *who, const void *refs, int n_refs) {
    if (!refs) return mt_fail(MT_ERR_ARG, "%s: refs is NULL", who);
    if (n_refs < 1 || n_refs > 1 << 20)
        return mt_fail(MT_ERR_ARG, "%s: n_refs = %d, expected 1 to %d references", who, n_refs,
                       1 << 20);
    return MT_OK;
}

/* The corpus functions' arrays: hyps[0..n), refs[0..n_refs) each of n strings. */
static mt_status check_corpus(const char *who, const char *const *hyps, size_t n,
                              const char *const *const *refs, int n_refs, const void *out) {
    if (!hyps) return mt_fail(MT_ERR_ARG, "%s: hyps is NULL", who);
    if (!n) return mt_fail(MT_ERR_ARG, "%s: n = 0, expected at least one hypothesis", who);
    MT_TRY(check_refs(who, refs, n_refs));
    for (int r = 0; r < n_refs; r++)
        if (!refs[r])
            return mt_fail(MT_ERR_ARG,
                           "%s: refs[%d] is NULL, expected %zu references (NULL entries where a "
                           "hypothesis has fewer)",
                           who, r, n);
    if (!out) return mt_fail(MT_ERR_ARG, "%s: out is NULL", who);
    for (size_t i = 0; i < n; i++) {
        if (!hyps[i]) return mt_fail(MT_ERR_ARG, "%s: hyps[%zu] is NULL", who, i);
        MT_TRY(check_has_ref(who, (ref_view){.stream = refs, .i = i}, n_refs));
    }
    return MT_OK;
}

/* Tokenizes and interns a segment: the hypothesis (named hyp_name) and its references. */
static mt_status seg_load(seg *s, const char *hyp, const char *hyp_name, ref_view v, tokenizer kind,
                          bool flag) {
    char name[64];
    MT_TRY(seg_tokenize(s, 0, hyp, kind, flag, hyp_name));
    for (int r = 0; r + 1 < s->n_texts; r++) {
        ref_name(v, r, name, sizeof name);
        MT_TRY(seg_tokenize(s, r + 1, ref_at(v, r), kind, flag, name));
    }
    return seg_intern(s);
}

/* ---- BLEU ------------------------------------------------------------------------------------ */

static mt_status check_opts(const mt_bleu_opts *o) {
    if (o->smooth < MT_BLEU_SMOOTH_EXP || o->smooth > MT_BLEU_SMOOTH_ADD_K)
        return mt_fail(MT_ERR_ARG, "bleu: opts.smooth = %d, expected an mt_bleu_smooth (0 to 3)",
                       (int)o->smooth);
    if (!isfinite(o->smooth_value) || o->smooth_value < 0)
        return mt_fail(MT_ERR_ARG, "bleu: opts.smooth_value = %g, expected a finite value >= 0",
                       o->smooth_value);
    return MT_OK;
}

static mt_status check_stats(const mt_bleu_stats *s) {
    if (s->sys_len < 0 || s->ref_len < 0)
        return mt_fail(MT_ERR_ARG, "bleu: stats sys_len = %lld, ref_len = %lld, expected >= 0",
                       (long long)s->sys_len, (long long)s->ref_len);
    for (int n = 0; n < MT_BLEU_ORDER; n++)
        if (s->correct[n] < 0 || s->correct[n] > s->total[n])
            return mt_fail(MT_ERR_ARG,
                           "bleu: stats correct[%d] = %lld, total[%d] = %lld, expected 0 <= "
                           "correct <= total",
                           n, (long long)s->correct[n], n, (long long)s->total[n]);
    return MT_OK;
}

/* sacrebleu's my_log: log, with log 0 = -9999999999. */
static double floored_log(double p) {
    return p == 0.0 ? -9999999999.0 : log(p);
}

mt_status mt_bleu_score(const mt_bleu_stats *stats, const mt_bleu_opts *opts, mt_bleu_result *out) {
    if (!stats) return mt_fail(MT_ERR_ARG, "bleu: stats is NULL");
    if (!out) return mt_fail(MT_ERR_ARG, "bleu: out is NULL");
    mt_bleu_opts o = opts ? *opts : (mt_bleu_opts){0};
    MT_TRY(check_opts(&o));
    MT_TRY(check_stats(stats));
    double k = o.smooth_value;
    if (k == 0) k = o.smooth == MT_BLEU_SMOOTH_FLOOR ? 0.1 : 1.0;

    mt_bleu_result r = {.bp = 1.0, .stats = *stats};
    const mt_bleu_stats *s = stats;
    if (s->sys_len < s->ref_len)
        r.bp = s->sys_len > 0 ? exp(1.0 - (double)s->ref_len / (double)s->sys_len) : 0.0;
    bool any = false;
    for (int n = 0; n < MT_BLEU_ORDER; n++) any |= s->correct[n] != 0;
    if (!any) { /* sacrebleu's early stop (#141): BLEU 0, precisions 0 */
        *out = r;
        return MT_OK;
    }

    double smooth_mteval = 1.0;
    int eff_order = MT_BLEU_ORDER;
    for (int n = 1; n <= MT_BLEU_ORDER; n++) {
        double correct = (double)s->correct[n - 1], total = (double)s->total[n - 1];
        if (o.smooth == MT_BLEU_SMOOTH_ADD_K && n > 1) correct += k, total += k;
        if (total == 0) break;
        if (o.effective_order) eff_order = n;
        double *p = &r.precisions[n - 1];
        if (correct == 0) {
            if (o.smooth == MT_BLEU_SMOOTH_EXP) {
                smooth_mteval *= 2;
                *p = 100. / (smooth_mteval * total);
            } else if (o.smooth == MT_BLEU_SMOOTH_FLOOR) {
                *p = 100. * k / total;
            }
        } else {
            *p = 100. * correct / total;
        }
    }
    double sum = 0; /* Python's sum(), left to right */
    for (int n = 0; n < eff_order; n++) sum += floored_log(r.precisions[n]);
    r.score = r.bp * exp(sum / eff_order);
    *out = r;
    return MT_OK;
}

mt_status mt_bleu_add_segment(const char *hyp, const char *const *refs, int n_refs, bool lowercase,
                              mt_bleu_stats *acc) {
    if (!hyp) return mt_fail(MT_ERR_ARG, "bleu: hyp is NULL");
    MT_TRY(check_refs("bleu", refs, n_refs));
    if (!acc) return mt_fail(MT_ERR_ARG, "bleu: acc is NULL");
    ref_view v = {.per_seg = refs};
    MT_TRY(check_has_ref("bleu", v, n_refs));
    seg s;
    MT_TRY(seg_init(&s, n_refs));
    mt_status st = seg_load(&s, hyp, "hyp", v, TOK_13A, lowercase);
    if (st == MT_OK) st = seg_bleu(&s, acc);
    seg_free(&s);
    return st;
}

mt_status mt_bleu_corpus(const char *const *hyps, size_t n, const char *const *const *refs,
                         int n_refs, const mt_bleu_opts *opts, mt_bleu_result *out) {
    MT_TRY(check_corpus("bleu", hyps, n, refs, n_refs, out));
    mt_bleu_opts o = opts ? *opts : (mt_bleu_opts){0};
    MT_TRY(check_opts(&o));
    seg s;
    MT_TRY(seg_init(&s, n_refs));
    mt_bleu_stats acc = {0};
    mt_status st = MT_OK;
    char name[48];
    for (size_t i = 0; i < n && st == MT_OK; i++) {
        snprintf(name, sizeof name, "hyps[%zu]", i);
        st = seg_load(&s, hyps[i], name, (ref_view){.stream = refs, .i = i}, TOK_13A, o.lowercase);
        if (st == MT_OK) st = seg_bleu(&s, &acc);
    }
    seg_free(&s);
    return st == MT_OK ? mt_bleu_score(&acc, &o, out) : st;
}

/* Copies a tokenizer's output into a fresh allocation for the caller. */
static mt_status hand_out(mt_text_buf *t, char **out) {
    *out = mt_alloc(t->n + 1, "text metrics: tokenized text");
    if (!*out) return MT_ERR_NOMEM;
    memcpy(*out, t->p, t->n + 1);
    return MT_OK;
}

mt_status mt_bleu_tokenize(const char *text, bool lowercase, char **out) {
    if (!out) return mt_fail(MT_ERR_ARG, "bleu: out is NULL");
    *out = NULL;
    if (!text) return mt_fail(MT_ERR_ARG, "bleu: text is NULL");
    mt_text_scratch s = {0};
    mt_text_buf t = {0};
    mt_status st = mt_text_tok_13a(text, lowercase, "text", &s, &t);
    if (st == MT_OK) st = hand_out(&t, out);
    mt_text_scratch_free(&s), mt_text_buf_free(&t);
    return st;
}

/* ---- ROUGE-L --------------------------------------------------------------------------------- */

/* Length of the longest common subsequence of a[0..na) and b[0..nb); row holds nb + 1. */
static size_t lcs_length(const uint32_t *a, size_t na, const uint32_t *b, size_t nb,
                         uint32_t *row) {
    memset(row, 0, (nb + 1) * sizeof *row);
    for (size_t i = 0; i < na; i++) {
        uint32_t diag = 0; /* row[j - 1] of the previous i */
        for (size_t j = 1; j <= nb; j++) {
            uint32_t up = row[j];
            row[j] = a[i] == b[j - 1] ? diag + 1 : (up > row[j - 1] ? up : row[j - 1]);
            diag = up;
        }
    }
    return row[nb];
}

/* rouge-score's _score_lcs: precision over the hypothesis, recall over the reference. */
static mt_rouge_result lcs_scores(size_t lcs, size_t n_hyp, size_t n_ref) {
    mt_rouge_result r = {0};
    if (!n_hyp || !n_ref) return r;
    r.precision = (double)lcs / (double)n_hyp;
    r.recall = (double)lcs / (double)n_ref;
    r.f = r.precision + r.recall > 0 ? 2 * r.precision * r.recall / (r.precision + r.recall) : 0.0;
    return r;
}

/* The best reference of a loaded segment: highest F, the first on ties (np.argmax). */
static mt_status seg_rouge(seg *s, mt_rouge_result *out) {
    TRY_GROW(s->row, s->cap_row, s->len[0] + 1, "rouge: LCS row");
    bool found = false;
    for (int t = 1; t < s->n_texts; t++) {
        if (!s->present[t]) continue;
        size_t lcs =
            lcs_length(s->ids + s->first[t], s->len[t], s->ids + s->first[0], s->len[0], s->row);
        mt_rouge_result r = lcs_scores(lcs, s->len[0], s->len[t]);
        if (!found || r.f > out->f) *out = r, found = true;
    }
    return MT_OK;
}

mt_status mt_rouge_l_multi(const char *hyp, const char *const *refs, int n_refs, bool stem,
                           mt_rouge_result *out) {
    if (!hyp) return mt_fail(MT_ERR_ARG, "rouge: hyp is NULL");
    MT_TRY(check_refs("rouge", refs, n_refs));
    if (!out) return mt_fail(MT_ERR_ARG, "rouge: out is NULL");
    ref_view v = {.per_seg = refs};
    MT_TRY(check_has_ref("rouge", v, n_refs));
    seg s;
    MT_TRY(seg_init(&s, n_refs));
    mt_status st = seg_load(&s, hyp, "hyp", v, TOK_ROUGE, stem);
    if (st == MT_OK) st = seg_rouge(&s, out);
    seg_free(&s);
    return st;
}

mt_status mt_rouge_l(const char *hyp, const char *ref, bool stem, mt_rouge_result *out) {
    if (!ref) return mt_fail(MT_ERR_ARG, "rouge: ref is NULL");
    return mt_rouge_l_multi(hyp, &ref, 1, stem, out);
}

mt_status mt_rouge_l_corpus(const char *const *hyps, size_t n, const char *const *const *refs,
                            int n_refs, bool stem, mt_rouge_result *mean,
                            mt_rouge_result *per_pair) {
    MT_TRY(check_corpus("rouge", hyps, n, refs, n_refs, mean));
    seg s;
    MT_TRY(seg_init(&s, n_refs));
    mt_rouge_result sum = {0}, r = {0};
    mt_status st = MT_OK;
    char name[48];
    for (size_t i = 0; i < n && st == MT_OK; i++) {
        snprintf(name, sizeof name, "hyps[%zu]", i);
        st = seg_load(&s, hyps[i], name, (ref_view){.stream = refs, .i = i}, TOK_ROUGE, stem);
        if (st == MT_OK) st = seg_rouge(&s, &r);
        if (st != MT_OK) break;
        /* Python's sum(values) / len(values), left to right */
        sum.precision += r.precision, sum.recall += r.recall, sum.f += r.f;
        if (per_pair) per_pair[i] = r;
    }
    seg_free(&s);
    if (st != MT_OK) return st;
    double d = (double)n;
    *mean = (mt_rouge_result){sum.precision / d, sum.recall / d, sum.f / d};
    return MT_OK;
}

mt_status mt_rouge_tokenize(const char *text, bool stem, char **out) {
    if (!out) return mt_fail(MT_ERR_ARG, "rouge: out is NULL");
    *out = NULL;
    if (!text) return mt_fail(MT_ERR_ARG, "rouge: text is NULL");
    mt_text_scratch s = {0};
    mt_text_buf t = {0};
    mt_status st = mt_text_tok_rouge(text, stem, "text", &s, &t);
    if (st == MT_OK) st = hand_out(&t, out);
    mt_text_scratch_free(&s), mt_text_buf_free(&t);
    return st;
}
