/* safetensors load and save under torchvision's names and shapes.
 *
 * Load first sorts every name into loaded, missing, unexpected and mismatched (PyTorch's
 * load_state_dict report), decides whether that is an error, and only then writes anything, so
 * a failed load leaves the model as it was. Tensors are converted to f32 (F32, BF16, F16 and the
 * integer types torch writes) and conv weights from (K,C,R,S) to (K,R,S,C). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "medtrain/safetensors.h"
#include "model_internal.h"

#define LIST_IN_ERROR 8 /* names shown per category in an error message */

/* A newline-separated list of names. */
typedef struct name_list {
    char *s;
    size_t len, cap;
    int n;
    mt_status status;
} name_list;

static void list_add(name_list *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void list_add(name_list *l, const char *fmt, ...) {
    if (l->status != MT_OK) return;
    char item[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(item, sizeof item, fmt, ap);
    va_end(ap);
    size_t need = l->len + strlen(item) + 2;
    if (need > l->cap) {
        size_t cap = need * 2;
        char *s = mt_realloc(l->s, cap, 1, "load report");
        if (!s) {
            l->status = MT_ERR_NOMEM;
            return;
        }
        l->s = s, l->cap = cap;
    }
    l->len += (size_t)sprintf(l->s + l->len, "%s%s", l->n ? "\n" : "", item);
    l->n++;
}

/* "a, b, c and 5 more" from the first LIST_IN_ERROR lines of l, into buf. */
static const char *list_brief(const name_list *l, char *buf, size_t size) {
    size_t at = 0;
    const char *p = l->s ? l->s : "";
    buf[0] = 0;
    for (int i = 0; i < l->n && i < LIST_IN_ERROR; i++) {
        const char *end = strchr(p, '\n');
        int len = end ? (int)(end - p) : (int)strlen(p);
        int w = snprintf(buf + at, size - at, "%s%.*s", i ? ", " : "", len, p);
        if (w < 0 || (size_t)w >= size - at) return buf;
        at += (size_t)w;
        p = end ? end + 1 : p + len;
    }
    if (l->n > LIST_IN_ERROR) snprintf(buf + at, size - at, " and %d more", l->n - LIST_IN_ERROR);
    return buf;
}

static char *list_take(name_list *l) {
    char *s = l->s ? l->s : mt_strdup("", "load report");
    l->s = NULL;
    return s;
}

void mt_load_report_free(mt_load_report *r) {
    if (!r) return;
    mt_free(r->missing);
    mt_free(r->unexpected);
    mt_free(r->mismatched);
    memset(r, 0, sizeof *r);
}

/* ---- load ----------------------------------------------------------------------------------- */

enum action { LOAD, MISSING, ZERO_COUNTER, REINIT, MISMATCH };

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static bool is_head(const char *name) {
    return !strncmp(name, "fc.", 3) || !strncmp(name, "classifier.", 11) ||
           !strncmp(name, "head.", 5);
}

static bool same_shape(const mt_param *p, const mt_st_tensor *t) {
    if (p->ndim != t->ndim) return false;
    for (int i = 0; i < p->ndim; i++)
        if (p->shape[i] != t->shape[i]) return false;
    return true;
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

static bool readable(const mt_st_tensor *t) {
    static const char *const ok[] = {"F32", "BF16", "F16", "F64", "I64", "U64", "I32",
                                     "U32", "I16",  "U16", "I8",  "U8",  "BOOL"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(t->dtype_name, ok[i])) return true;
    return false;
}

typedef struct load_plan {
    enum action *act;
    const mt_st_tensor **src;
    name_list missing, unexpected, mismatched;
    int n_bad, n_reinit;
    const char *bad_dtype; /* a tensor medtrain cannot convert */
} load_plan;

static void classify(const mt_model *m, const mt_st_file *f, const mt_load_opts *o, load_plan *lp) {
    for (int i = 0; i < m->P.n; i++) {
        const mt_param *p = &m->P.p[i];
        const mt_st_tensor *t = mt_st_find(f, p->name);
        lp->src[i] = t;
        if (!t) {
            lp->act[i] = ends_with(p->name, ".num_batches_tracked") ? ZERO_COUNTER : MISSING;
            if (lp->act[i] == MISSING) list_add(&lp->missing, "%s", p->name);
        } else if (!same_shape(p, t)) {
            char a[96], b[96];
            shape_str(t->ndim, t->shape, a, sizeof a);
            shape_str(p->ndim, p->shape, b, sizeof b);
            list_add(&lp->mismatched, "%s: file %s, model %s", p->name, a, b);
            lp->act[i] = o->reinit_head && is_head(p->name) ? REINIT : MISMATCH;
            if (lp->act[i] == REINIT)
                lp->n_reinit++;
            else
                lp->n_bad++;
        } else {
            lp->act[i] = LOAD;
            if (!readable(t) && !lp->bad_dtype) lp->bad_dtype = t->name;
        }
    }
    for (size_t j = 0; j < mt_st_count(f); j++) {
        const char *name = mt_st_at(f, j)->name;
        if (mt_model_find(m, name) < 0) list_add(&lp->unexpected, "%s", name);
    }
}

static mt_status load_error(const mt_model *m, const char *path, const mt_load_opts *o,
                            const load_plan *lp) {
    if (lp->missing.status || lp->unexpected.status || lp->mismatched.status) return MT_ERR_NOMEM;
    if (lp->bad_dtype)
        return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s' has a dtype medtrain cannot read", path,
                       lp->bad_dtype);
    bool strict_fail = o->strict && (lp->missing.n || lp->unexpected.n);
    if (!strict_fail && !lp->n_bad) return MT_OK;
    char miss[1024] = "", unexp[1024] = "", mism[1024] = "", msg[3200];
    int at = snprintf(msg, sizeof msg, "%s does not fit %s:", path, m->arch_name);
    if (o->strict && lp->missing.n)
        at += snprintf(msg + at, sizeof msg - (size_t)at, " %d missing (%s);", lp->missing.n,
                       list_brief(&lp->missing, miss, sizeof miss));
    if (o->strict && lp->unexpected.n && at < (int)sizeof msg)
        at += snprintf(msg + at, sizeof msg - (size_t)at, " %d unexpected (%s);", lp->unexpected.n,
                       list_brief(&lp->unexpected, unexp, sizeof unexp));
    if (lp->mismatched.n && at < (int)sizeof msg)
        snprintf(msg + at, sizeof msg - (size_t)at, " %d mismatched (%s)%s", lp->mismatched.n,
                 list_brief(&lp->mismatched, mism, sizeof mism),
                 o->reinit_head ? "" : "; for a new head set reinit_head");
    return mt_fail(MT_ERR_SHAPE, "%s", msg);
}

static mt_status apply(mt_model *m, const mt_st_file *f, const mt_load_opts *o,
                       const load_plan *lp) {
    float *buf = mt_alloc(m->stage_n * sizeof *buf, "load buffer");
    if (!buf) return MT_ERR_NOMEM;
    mt_status s = MT_OK;
    for (int i = 0; i < m->P.n && s == MT_OK; i++) {
        if (lp->act[i] == LOAD) {
            s = mt_st_read_f32(f, lp->src[i], buf);
            if (s == MT_OK) s = mt_model_param_set(m, i, buf);
        } else if (lp->act[i] == ZERO_COUNTER) {
            buf[0] = 0;
            s = mt_model_param_set(m, i, buf);
        }
    }
    for (int i = 0; i < m->P.n && s == MT_OK; i++) {
        const char *name = m->P.p[i].name;
        if (lp->act[i] == REINIT) s = mt_model_init_params(m, o->head_seed, 1, &name);
    }
    mt_free(buf);
    return s;
}

mt_status mt_model_load(mt_model *m, const char *path, const mt_load_opts *opts,
                        mt_load_report *report) {
    mt_load_opts o = opts ? *opts : (mt_load_opts){.strict = true};
    if (report) memset(report, 0, sizeof *report);
    mt_st_file *f;
    MT_TRY(mt_st_open(path, &f));
    load_plan lp = {.act = mt_calloc((size_t)m->P.n, sizeof *lp.act, "load plan"),
                    .src = mt_calloc((size_t)m->P.n, sizeof *lp.src, "load plan")};
    mt_status s = lp.act && lp.src ? MT_OK : MT_ERR_NOMEM;
    if (s == MT_OK) {
        classify(m, f, &o, &lp);
        s = load_error(m, path, &o, &lp);
    }
    if (s == MT_OK) s = apply(m, f, &o, &lp);
    if (report) {
        report->n_missing = lp.missing.n, report->missing = list_take(&lp.missing);
        report->n_unexpected = lp.unexpected.n, report->unexpected = list_take(&lp.unexpected);
        report->n_mismatched = lp.mismatched.n, report->mismatched = list_take(&lp.mismatched);
    }
    mt_free(lp.missing.s), mt_free(lp.unexpected.s), mt_free(lp.mismatched.s);
    mt_free(lp.act), mt_free(lp.src);
    mt_st_close(f);
    return s;
}

/* ---- save ----------------------------------------------------------------------------------- */

mt_status mt_model_save(mt_model *m, const char *path, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values) {
    /* Every tensor is referenced by the writer until it saves: one host copy of everything. */
    size_t total = m->P.n_train + m->P.n_buf;
    float *host = mt_alloc((total ? total : 1) * sizeof *host, "model save buffer");
    int64_t *counts = mt_calloc((size_t)m->P.n + 1, sizeof *counts, "model save counters");
    mt_st_writer *w = NULL;
    mt_status s = host && counts ? mt_st_writer_new(&w) : MT_ERR_NOMEM;
    size_t at = 0;
    for (int i = 0; i < m->P.n && s == MT_OK; i++) {
        const mt_param *p = &m->P.p[i];
        s = mt_model_param_get(m, i, host + at);
        const void *data = host + at;
        if (s == MT_OK && p->file_dtype == MT_I64) {
            counts[i] = (int64_t)host[at];
            data = &counts[i];
        }
        if (s == MT_OK) s = mt_st_writer_add(w, p->name, p->file_dtype, p->ndim, p->shape, data);
        at += (size_t)p->numel;
    }
    for (int i = 0; i < n_meta && s == MT_OK; i++)
        s = mt_st_writer_meta(w, meta_keys[i], meta_values[i]);
    if (s == MT_OK) s = mt_st_writer_save(w, path);
    mt_st_writer_free(w);
    mt_free(host);
    mt_free(counts);
    if (s != MT_OK) return mt_error_wrap(s, "saving %s: ", path);
    return MT_OK;
}
