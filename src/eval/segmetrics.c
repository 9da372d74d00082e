/* Segmentation metrics (segmetrics.h): Dice, IoU and HD95 per case and class, with MONAI's
 * semantics, and their means over a cohort.
 *
 * How. One pass over the two class maps counts |P|, |G| and |P∩G| of every class and the bounding
 * box of P∪G. HD95 of a class then works inside that box only: every surface pixel of either mask
 * lies in it, so distances between surface pixels never need anything outside it (this is also why
 * MONAI's crop to the box does not change its result).
 *
 * The distance from a surface pixel of A to the nearest surface pixel ("site") of B is an exact
 * Euclidean distance transform in two passes (Felzenszwalb and Huttenlocher, 2012):
 *
 *   columns  near[y, x] = the row of the nearest site in column x (two scans; -1 when none);
 *   rows     for each row y holding a pixel of A, the lower envelope of the parabolas
 *            (sr (y - near[y, x]))^2 + (sc (q - x))^2 over the columns x that have a site gives,
 *            at each q, the column of a nearest site: min over sites of
 *            sr^2 dy^2 + sc^2 dx^2 = min over columns of (sc^2 dx^2 + the column's best sr^2 dy^2).
 *
 * The distance is then recomputed from the chosen site as sqrt((sr dy)^2 + (sc dx)^2), the way
 * scipy's distance_transform_edt computes it from its feature transform, so ties between equally
 * near sites give the same value. The column pass does not depend on the spacing; the row pass
 * runs once for pixels and, when the spacing is anisotropic, once more for mm. The 95th percentile
 * comes from a quickselect, with numpy's linear interpolation. Cost: O(box area) per class and
 * direction; a 512 x 512 lung mask takes a few milliseconds. */
#include "medtrain/segmetrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "medtrain/mem.h"

#define PERCENTILE 95.0

/* ---- Checking inputs ------------------------------------------------------------------------ */

static mt_status check_mask(const char *what, const mt_seg_mask *m) {
    if (!m) return mt_fail(MT_ERR_ARG, "segmetrics: %s is NULL", what);
    if (m->h < 1 || m->w < 1 || m->h > MT_SEG_MAX_SIDE || m->w > MT_SEG_MAX_SIDE ||
        (int64_t)m->h * m->w > MT_SEG_MAX_PIXELS)
        return mt_fail(MT_ERR_ARG,
                       "segmetrics: %s is %dx%d, expected 1..%d pixels a side and at most %lld "
                       "pixels",
                       what, m->h, m->w, MT_SEG_MAX_SIDE, (long long)MT_SEG_MAX_PIXELS);
    if (!m->px)
        return mt_fail(MT_ERR_ARG, "segmetrics: %s pixels are NULL (%dx%d)", what, m->h, m->w);
    return MT_OK;
}

static mt_status check_pair(const mt_seg_mask *pred, const mt_seg_mask *truth) {
    MT_TRY(check_mask("pred", pred));
    MT_TRY(check_mask("truth", truth));
    if (pred->h != truth->h || pred->w != truth->w)
        return mt_fail(MT_ERR_SHAPE,
                       "segmetrics: pred is %dx%d but truth is %dx%d (h x w): expected the same "
                       "size (resize the prediction to the mask's geometry first)",
                       pred->h, pred->w, truth->h, truth->w);
    return MT_OK;
}

/* The options with their defaults filled in. */
typedef struct seg_params {
    mt_seg_empty empty;
    double sr, sc; /* spacing (row, col) */
    bool include_background;
} seg_params;

static mt_status resolve_opts(const mt_seg_opts *o, seg_params *p) {
    mt_seg_opts d = {0};
    if (!o) o = &d;
    if (o->empty != MT_SEG_EMPTY_IGNORE && o->empty != MT_SEG_EMPTY_ONE)
        return mt_fail(MT_ERR_ARG,
                       "segmetrics: empty-truth option %d, expected MT_SEG_EMPTY_IGNORE (0) or "
                       "MT_SEG_EMPTY_ONE (1)",
                       (int)o->empty);
    for (int i = 0; i < 2; i++)
        if (!isfinite(o->spacing[i]) || o->spacing[i] < 0)
            return mt_fail(MT_ERR_ARG,
                           "segmetrics: pixel spacing (%s) is %g mm, expected a positive number "
                           "(or 0 for 1)",
                           i ? "col" : "row", o->spacing[i]);
    p->empty = o->empty;
    p->sr = o->spacing[0] > 0 ? o->spacing[0] : 1.0;
    p->sc = o->spacing[1] > 0 ? o->spacing[1] : 1.0;
    p->include_background = o->include_background;
    return MT_OK;
}

/* ---- Counting ------------------------------------------------------------------------------ */

/* Per class: |P|, |G|, |P∩G| and the bounding box of P∪G (rows y0..y1, cols x0..x1). */
typedef struct class_count {
    int64_t n_pred, n_true, n_inter;
    int y0, y1, x0, x1;
} class_count;

static const char *value_expectation(int n_classes, bool binary, char *buf, size_t size) {
    if (binary)
        snprintf(buf, size, "expected 0 or 1 (a binary mask)");
    else
        snprintf(buf, size, "expected a class index < n_classes = %d", n_classes);
    return buf;
}

/* Fills cnt[0..n_classes) in one pass; fails on the first value >= n_classes. */
static mt_status count_classes(const mt_seg_mask *pred, const mt_seg_mask *truth, int n_classes,
                               bool binary, class_count *cnt) {
    for (int c = 0; c < n_classes; c++)
        cnt[c] = (class_count){.y0 = pred->h, .y1 = -1, .x0 = pred->w, .x1 = -1};
    int w = pred->w;
    for (int y = 0; y < pred->h; y++) {
        const uint8_t *p = pred->px + (size_t)y * w, *g = truth->px + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            int a = p[x], b = g[x];
            if (a >= n_classes || b >= n_classes) {
                char expect[80];
                return mt_fail(MT_ERR_ARG, "segmetrics: %s pixel (row %d, col %d) holds %d, %s",
                               a >= n_classes ? "pred" : "truth", y, x, a >= n_classes ? a : b,
                               value_expectation(n_classes, binary, expect, sizeof expect));
            }
            cnt[a].n_pred++, cnt[b].n_true++;
            cnt[a].n_inter += a == b;
            for (int k = 0; k < 1 + (a != b); k++) {
                class_count *c = &cnt[k ? b : a];
                if (y < c->y0) c->y0 = y;
                c->y1 = y;
                if (x < c->x0) c->x0 = x;
                if (x > c->x1) c->x1 = x;
            }
        }
    }
    return MT_OK;
}

/* ---- Surfaces ------------------------------------------------------------------------------ */

/* Is pixel (y, x) of value v on the surface of the mask (labels == v)? The mask is eroded with
 * the 4-connected cross and border 0: a pixel survives only when its 4 neighbours are inside the
 * image and hold v too. */
static bool on_surface(const uint8_t *px, int h, int w, int y, int x, uint8_t v) {
    const uint8_t *p = px + (size_t)y * w + x;
    if (y == 0 || x == 0 || y == h - 1 || x == w - 1) return true;
    return p[-1] != v || p[1] != v || p[-w] != v || p[w] != v;
}

mt_status mt_seg_surface(const mt_seg_mask *labels, uint8_t *out) {
    MT_TRY(check_mask("labels", labels));
    if (!out) return mt_fail(MT_ERR_ARG, "segmetrics: surface output is NULL");
    int h = labels->h, w = labels->w;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t v = labels->px[(size_t)y * w + x];
            out[(size_t)y * w + x] = v && on_surface(labels->px, h, w, y, x, v) ? v : 0;
        }
    return MT_OK;
}

/* The box a class's distances are computed in, and the class's two surfaces inside it. */
typedef struct box {
    int y0, x0, bh, bw; /* origin in the image, size */
} box;

/* s[i] = 1 on the surface of (px == v), within the box. */
static void box_surface(const mt_seg_mask *m, uint8_t v, box b, uint8_t *s) {
    for (int y = 0; y < b.bh; y++) {
        const uint8_t *row = m->px + (size_t)(b.y0 + y) * m->w + b.x0;
        for (int x = 0; x < b.bw; x++)
            s[(size_t)y * b.bw + x] =
                row[x] == v && on_surface(m->px, m->h, m->w, b.y0 + y, b.x0 + x, v);
    }
}

/* ---- Distance transform --------------------------------------------------------------------- */

/* Scratch for one class: the two surfaces, the column pass, one row's envelope, the distances. */
typedef struct hd_scratch {
    uint8_t *surf_p, *surf_g;  /* (bh, bw) */
    int32_t *near;             /* (bh, bw): row of the nearest site in the column, or -1 */
    int32_t *env_site;         /* (bw): columns of the envelope's parabolas */
    int32_t *site_of;          /* (bw): column of the nearest site, per pixel of a row */
    double *env_from;          /* (bw): where each parabola starts to be lowest */
    double *env_g;             /* (bw): each parabola's f(x) + sc2 x^2 */
    double *dist_px, *dist_mm; /* one per surface pixel of the source */
} hd_scratch;

/* near[] for the sites in s: for every pixel, the row of the nearest site in its column. Two
 * sweeps over whole rows (cache-friendly): downwards the nearest site at or above, upwards a
 * nearer one at or below (below[x]: the last site seen in column x, or -1). */
static void column_pass(const uint8_t *s, box b, int32_t *near, int32_t *below) {
    size_t bw = (size_t)b.bw;
    for (size_t x = 0; x < bw; x++) near[x] = s[x] ? 0 : -1;
    for (int y = 1; y < b.bh; y++) {
        const uint8_t *srow = s + (size_t)y * bw;
        int32_t *nrow = near + (size_t)y * bw, *above = nrow - bw;
        for (size_t x = 0; x < bw; x++) nrow[x] = srow[x] ? y : above[x];
    }
    for (size_t x = 0; x < bw; x++) below[x] = -1;
    for (int y = b.bh - 1; y >= 0; y--) {
        const uint8_t *srow = s + (size_t)y * bw;
        int32_t *nrow = near + (size_t)y * bw;
        for (size_t x = 0; x < bw; x++) {
            if (srow[x]) below[x] = y;
            int32_t d = below[x];
            if (d >= 0 && (nrow[x] < 0 || d - y < y - nrow[x])) nrow[x] = d;
        }
    }
}

/* The column of a nearest site for each q in row y where want[q], into site_of[q]: the lower
 * envelope of the parabolas f(x) + sc2 (q - x)^2, f(x) = sr2 (y - near[y, x])^2, over the columns
 * with a site (there is at least one: every column of the box with a site has near >= 0 in every
 * row). Parabola x is kept as g(x) = f(x) + sc2 x^2; it overtakes parabola v < x at
 * q = (g(x) - g(v)) / (2 sc2 (x - v)). */
static void row_envelope(const int32_t *near_row, int y, int bw, double sr2, double sc2,
                         const uint8_t *want, hd_scratch *t) {
    int k = -1; /* the envelope: parabolas env_site[0..k], lowest from env_from[j] on */
    for (int x = 0; x < bw; x++) {
        if (near_row[x] < 0) continue;
        double dy = (double)(y - near_row[x]), gx = sr2 * dy * dy + sc2 * x * x;
        if (k < 0) {
            t->env_site[0] = x, t->env_g[0] = gx, t->env_from[0] = -INFINITY, k = 0;
            continue;
        }
        double s;
        for (;;) { /* ends at k = 0 at the latest: env_from[0] is -inf */
            s = (gx - t->env_g[k]) / (2 * sc2 * (x - t->env_site[k]));
            if (s > t->env_from[k]) break;
            k--;
        }
        k++;
        t->env_site[k] = x, t->env_g[k] = gx, t->env_from[k] = s;
    }
    for (int q = 0, j = 0; q < bw; q++) {
        while (j < k && t->env_from[j + 1] <= q) j++;
        if (want[q]) t->site_of[q] = t->env_site[j];
    }
}

/* sqrt((sr dy)^2 + (sc dx)^2), in scipy's order of operations. */
static double site_distance(int dy, int dx, double sr, double sc) {
    double a = (double)dy * sr, b = (double)dx * sc;
    return sqrt(a * a + b * b);
}

/* Distances from every surface pixel of src to the nearest site of the column pass in t->near,
 * into t->dist_px (spacing 1 x 1) and, when mm, t->dist_mm (spacing sr x sc). Returns the count.
 * The sites must not be empty. An isotropic spacing scales every distance alike, so the sites
 * nearest in pixels are the nearest in mm: one envelope serves both. */
static int64_t directed_distances(const uint8_t *src, box b, const seg_params *p, bool mm,
                                  hd_scratch *t) {
    int passes = mm && p->sr != p->sc ? 2 : 1;
    int64_t n = 0;
    for (int y = 0; y < b.bh; y++) {
        const uint8_t *want = src + (size_t)y * b.bw;
        if (!memchr(want, 1, (size_t)b.bw)) continue;
        const int32_t *near_row = t->near + (size_t)y * b.bw;
        int64_t row_start = n;
        for (int pass = 0; pass < passes; pass++) {
            double sr = pass ? p->sr : 1.0, sc = pass ? p->sc : 1.0;
            row_envelope(near_row, y, b.bw, sr * sr, sc * sc, want, t);
            n = row_start;
            for (int q = 0; q < b.bw; q++) {
                if (!want[q]) continue;
                int x = t->site_of[q], dy = y - near_row[x], dx = q - x;
                if (pass == 0) t->dist_px[n] = site_distance(dy, dx, 1.0, 1.0);
                if (mm && (pass == 1 || passes == 1))
                    t->dist_mm[n] = site_distance(dy, dx, p->sr, p->sc);
                n++;
            }
        }
    }
    return n;
}

/* ---- Percentile ----------------------------------------------------------------------------- */

/* Moves the k-th smallest of a[0..n) to a[k], smaller ones before it, larger after
 * (quickselect, median-of-three pivot). */
static void select_kth(double *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi];
        double pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                double s = a[i];
                a[i++] = a[j], a[j--] = s;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return; /* a[j+1..i) all equal the pivot and k is among them */
    }
}

/* numpy.percentile(a, q) with the default linear method: the virtual index (n - 1) q / 100
 * between two order statistics, blended as numpy's _lerp does. a is reordered. n >= 1. */
static double percentile(double *a, int64_t n, double q) {
    double vi = (double)(n - 1) * (q / 100.0);
    if (vi >= (double)(n - 1)) {
        double m = a[0];
        for (int64_t i = 1; i < n; i++) m = a[i] > m ? a[i] : m;
        return m;
    }
    int64_t lo = (int64_t)floor(vi);
    double t = vi - (double)lo;
    select_kth(a, n, lo);
    double below = a[lo], above = a[lo + 1];
    for (int64_t i = lo + 2; i < n; i++) above = a[i] < above ? a[i] : above;
    double diff = above - below;
    return t >= 0.5 ? above - diff * (1 - t) : below + diff * t;
}

/* ---- HD95 of one class ---------------------------------------------------------------------- */

static mt_status scratch_alloc(hd_scratch *t, int64_t pixels, int w, void **block) {
    size_t n = (size_t)pixels, bw = (size_t)w;
    /* doubles first (aligned), then int32s, then bytes */
    size_t bytes = (2 * n + 2 * bw) * sizeof(double) + (n + 2 * bw) * sizeof(int32_t) + 2 * n;
    char *m = mt_alloc(bytes, "segmetrics: HD95 scratch (about 22 bytes per pixel)");
    if (!m) return MT_ERR_NOMEM;
    t->dist_px = (double *)m;
    t->dist_mm = t->dist_px + n;
    t->env_from = t->dist_mm + n;
    t->env_g = t->env_from + bw;
    t->near = (int32_t *)(t->env_g + bw);
    t->env_site = t->near + n;
    t->site_of = t->env_site + bw;
    t->surf_p = (uint8_t *)(t->site_of + bw);
    t->surf_g = t->surf_p + n;
    *block = m;
    return MT_OK;
}

/* P->G or G->P: the percentile of the distances from src's surface to the sites' surface. */
static void directed_hd(const uint8_t *src, const uint8_t *sites, box b, const seg_params *p,
                        bool mm, hd_scratch *t, double *px, double *in_mm) {
    column_pass(sites, b, t->near, t->site_of);
    int64_t n = directed_distances(src, b, p, mm, t);
    *px = percentile(t->dist_px, n, PERCENTILE);
    *in_mm = mm ? percentile(t->dist_mm, n, PERCENTILE) : *px;
}

/* HD95 of class v, both masks non-empty, in pixels and mm. */
static void class_hd95(const mt_seg_mask *pred, const mt_seg_mask *truth, uint8_t v,
                       const class_count *c, const seg_params *p, hd_scratch *t,
                       mt_seg_class_metrics *out) {
    box b = {.y0 = c->y0, .x0 = c->x0, .bh = c->y1 - c->y0 + 1, .bw = c->x1 - c->x0 + 1};
    box_surface(pred, v, b, t->surf_p);
    box_surface(truth, v, b, t->surf_g);
    bool mm = p->sr != 1.0 || p->sc != 1.0;
    double pg_px, pg_mm, gp_px, gp_mm;
    directed_hd(t->surf_p, t->surf_g, b, p, mm, t, &pg_px, &pg_mm);
    directed_hd(t->surf_g, t->surf_p, b, p, mm, t, &gp_px, &gp_mm);
    out->hd95_px = fmax(pg_px, gp_px);
    out->hd95_mm = fmax(pg_mm, gp_mm);
}

/* ---- One case ------------------------------------------------------------------------------- */

static void overlap_metrics(const class_count *c, mt_seg_empty empty, mt_seg_class_metrics *m) {
    *m = (mt_seg_class_metrics){.dice = NAN,
                                .iou = NAN,
                                .hd95_px = NAN,
                                .hd95_mm = NAN,
                                .n_pred = c->n_pred,
                                .n_true = c->n_true,
                                .n_inter = c->n_inter};
    if (c->n_true > 0) {
        m->dice = (double)(2 * c->n_inter) / (double)(c->n_pred + c->n_true);
        m->iou = (double)c->n_inter / (double)(c->n_pred + c->n_true - c->n_inter);
    } else if (empty == MT_SEG_EMPTY_ONE) {
        m->dice = m->iou = c->n_pred == 0 ? 1.0 : 0.0;
    }
}

/* Metrics of classes first..n_classes-1 into out[c]; out[c] for c < first is all NaN. */
static mt_status case_metrics(const mt_seg_mask *pred, const mt_seg_mask *truth, int n_classes,
                              int first, bool binary, const seg_params *p,
                              mt_seg_class_metrics *out) {
    class_count cnt[MT_SEG_MAX_CLASSES];
    MT_TRY(count_classes(pred, truth, n_classes, binary, cnt));
    int64_t box_max = 0, w_max = 1;
    for (int c = first; c < n_classes; c++)
        if (cnt[c].n_pred && cnt[c].n_true) {
            int64_t bw = cnt[c].x1 - cnt[c].x0 + 1, bh = cnt[c].y1 - cnt[c].y0 + 1;
            box_max = bw * bh > box_max ? bw * bh : box_max;
            w_max = bw > w_max ? bw : w_max;
        }
    hd_scratch t = {0};
    void *block = NULL;
    if (box_max) MT_TRY(scratch_alloc(&t, box_max, (int)w_max, &block));
    for (int c = 0; c < n_classes; c++) {
        if (c < first) {
            out[c] =
                (mt_seg_class_metrics){.dice = NAN, .iou = NAN, .hd95_px = NAN, .hd95_mm = NAN};
            continue;
        }
        overlap_metrics(&cnt[c], p->empty, &out[c]);
        if (cnt[c].n_pred && cnt[c].n_true)
            class_hd95(pred, truth, (uint8_t)c, &cnt[c], p, &t, &out[c]);
    }
    mt_free(block);
    return MT_OK;
}

mt_status mt_seg_case_binary(const mt_seg_mask *pred, const mt_seg_mask *truth,
                             const mt_seg_opts *opts, mt_seg_class_metrics *out) {
    seg_params p;
    MT_TRY(check_pair(pred, truth));
    MT_TRY(resolve_opts(opts, &p));
    if (!out) return mt_fail(MT_ERR_ARG, "segmetrics: output is NULL");
    mt_seg_class_metrics both[2];
    MT_TRY(case_metrics(pred, truth, 2, 1, true, &p, both));
    *out = both[1];
    return MT_OK;
}

mt_status mt_seg_case_classes(const mt_seg_mask *pred, const mt_seg_mask *truth, int n_classes,
                              const mt_seg_opts *opts, mt_seg_class_metrics *out) {
    seg_params p;
    MT_TRY(check_pair(pred, truth));
    MT_TRY(resolve_opts(opts, &p));
    if (n_classes < 2 || n_classes > MT_SEG_MAX_CLASSES)
        return mt_fail(MT_ERR_ARG,
                       "segmetrics: n_classes = %d, expected 2..%d (class 0 is "
                       "the background)",
                       n_classes, MT_SEG_MAX_CLASSES);
    if (!out)
        return mt_fail(MT_ERR_ARG, "segmetrics: output is NULL (expected %d entries)", n_classes);
    return case_metrics(pred, truth, n_classes, p.include_background ? 0 : 1, false, &p, out);
}

/* ---- Means ---------------------------------------------------------------------------------- */

typedef struct mean_acc {
    double sum;
    int64_t n;
} mean_acc;

static void acc_add(mean_acc *a, double v) {
    if (!isnan(v)) a->sum += v, a->n++;
}

static mt_seg_mean acc_mean(mean_acc a) {
    return (mt_seg_mean){.mean = a.n ? a.sum / (double)a.n : NAN, .n = a.n};
}

mt_status mt_seg_summarize(const mt_seg_class_metrics *cases, int64_t n_cases, int n_classes,
                           int first_class, mt_seg_class_summary *per_class, mt_seg_summary *out) {
    if (n_classes < 1 || n_classes > MT_SEG_MAX_CLASSES)
        return mt_fail(MT_ERR_ARG, "segmetrics: n_classes = %d, expected 1..%d", n_classes,
                       MT_SEG_MAX_CLASSES);
    if (first_class < 0 || first_class >= n_classes)
        return mt_fail(MT_ERR_ARG, "segmetrics: first class %d outside [0, %d)", first_class,
                       n_classes);
    if (n_cases < 0 || (n_cases > 0 && !cases))
        return mt_fail(MT_ERR_ARG, "segmetrics: %lld cases with case table %s", (long long)n_cases,
                       cases ? "given" : "NULL");
    if (!out) return mt_fail(MT_ERR_ARG, "segmetrics: summary output is NULL");
    mean_acc classes[4] = {{0}}, pooled[4] = {{0}};
    for (int c = 0; c < n_classes; c++) {
        mean_acc a[4] = {{0}};
        for (int64_t i = 0; i < n_cases; i++) {
            const mt_seg_class_metrics *m = &cases[i * n_classes + c];
            acc_add(&a[0], m->dice), acc_add(&a[1], m->iou);
            acc_add(&a[2], m->hd95_px), acc_add(&a[3], m->hd95_mm);
        }
        mt_seg_class_summary s = {acc_mean(a[0]), acc_mean(a[1]), acc_mean(a[2]), acc_mean(a[3])};
        if (per_class) per_class[c] = s;
        if (c < first_class) continue;
        const mt_seg_mean *means[4] = {&s.dice, &s.iou, &s.hd95_px, &s.hd95_mm};
        for (int k = 0; k < 4; k++) {
            acc_add(&classes[k], means[k]->mean);
            pooled[k].sum += a[k].sum, pooled[k].n += a[k].n;
        }
    }
    *out = (mt_seg_summary){acc_mean(classes[0]), acc_mean(classes[1]), acc_mean(classes[2]),
                            acc_mean(classes[3]), acc_mean(pooled[0]),  acc_mean(pooled[1]),
                            acc_mean(pooled[2]),  acc_mean(pooled[3])};
    return MT_OK;
}
