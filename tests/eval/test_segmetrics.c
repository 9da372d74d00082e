/* Tests for the segmentation metrics and overlays (segmetrics.h): every case of
 * tests/eval/data/segmetrics_cases.txt (tests/oracles/segmetrics_oracle.py, MONAI semantics in
 * numpy/scipy) through the class-map and the binary entry points under both empty-truth rules,
 * the cohort means, hand-computed cases that pin the semantics (border pixels are surface, the
 * percentile's interpolation, spacing), the surfaces, bad arguments, allocation failures, and
 * overlays: pixel colours against a direct reference, a PNG read back with libpng, and failed
 * writes that leave nothing behind.
 *
 * Tolerances: Dice and IoU 1e-12, HD95 1e-9 (relative above 1); counts exactly. argv[1] is
 * tests/eval/data. */
#include "mt_test.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <png.h>

#include "medtrain/fs.h"
#include "medtrain/mem.h"
#include "medtrain/segmetrics.h"
#include "medtrain/timer.h"

#define TOL_OVERLAP 1e-12
#define TOL_HD      1e-9

static const char *data_dir = "tests/eval/data";
static char tmpdir[64];

/* Equal within tol (relative above 1), or both NaN; the rest of the arguments name the value. */
#define CHECK_VAL(got, want, tol, ...)                                                             \
    do {                                                                                           \
        double g_ = (got), w_ = (want);                                                            \
        bool ok_ = isnan(w_) ? isnan(g_) : fabs(g_ - w_) <= (tol)*fmax(1.0, fabs(w_));             \
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

typedef struct want_class {
    int64_t n_pred, n_true, n_inter;
    double dice[2], iou[2]; /* [mode]: 0 ignore, 1 one */
    double hd95_px, hd95_mm;
} want_class;

typedef struct seg_case {
    char name[64], group[16];
    int h, w, n_classes;
    double spacing[2];
    uint8_t *pred, *truth;
    want_class *want; /* n_classes */
} seg_case;

typedef struct want_mean { /* a "mean" line */
    char group[16];
    int mode, c;
    double v[4]; /* dice, iou, hd95_px, hd95_mm */
    int64_t n[4];
} want_mean;

typedef struct want_overall { /* an "overall" line */
    char group[16];
    int mode, first;
    double v[8]; /* dice, iou, hd95_px, hd95_mm, then pooled */
    int64_t n[8];
} want_overall;

enum { MAX_CASES = 64, MAX_MEANS = 64, MAX_OVERALL = 16 };
static seg_case cases[MAX_CASES];
static want_mean means[MAX_MEANS];
static want_overall overalls[MAX_OVERALL];
static int n_cases, n_means, n_overalls;
static char *fixture_text;

/* The next whitespace-separated token (comments from '#' to the end of the line skipped), NUL
 * terminated in place; NULL at the end. */
static char *next_token(char **pos) {
    char *p = *pos;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p != '#') break;
        while (*p && *p != '\n') p++;
    }
    if (!*p) return *pos = p, NULL;
    char *start = p;
    while (*p && *p != ' ' && *p != '\n' && *p != '\t' && *p != '\r') p++;
    if (*p) *p++ = '\0';
    *pos = p;
    return start;
}

static double tok_num(char **pos) {
    char *t = next_token(pos);
    return t ? strtod(t, NULL) : NAN;
}

static long long tok_int(char **pos) {
    char *t = next_token(pos);
    return t ? strtoll(t, NULL, 10) : -1;
}

/* RLE runs "v*n" (or "v") until n pixels are filled; false when the runs do not fit. */
static bool read_rle(char **pos, uint8_t *px, size_t n) {
    size_t at = 0;
    while (at < n) {
        char *t = next_token(pos), *end;
        if (!t) return false;
        long v = strtol(t, &end, 10), run = *end == '*' ? strtol(end + 1, NULL, 10) : 1;
        if (v < 0 || v > 255 || run < 1 || (size_t)run > n - at) return false;
        memset(px + at, (int)v, (size_t)run);
        at += (size_t)run;
    }
    return true;
}

static bool read_case(char **pos, seg_case *c) {
    snprintf(c->name, sizeof c->name, "%s", next_token(pos));
    snprintf(c->group, sizeof c->group, "%s", next_token(pos));
    c->h = (int)tok_int(pos), c->w = (int)tok_int(pos), c->n_classes = (int)tok_int(pos);
    c->spacing[0] = tok_num(pos), c->spacing[1] = tok_num(pos);
    size_t n = (size_t)c->h * c->w;
    c->pred = malloc(n), c->truth = malloc(n);
    c->want = calloc((size_t)c->n_classes, sizeof *c->want);
    char *t = next_token(pos);
    if (!t || strcmp(t, "pred") || !read_rle(pos, c->pred, n)) return false;
    t = next_token(pos);
    if (!t || strcmp(t, "true") || !read_rle(pos, c->truth, n)) return false;
    for (int k = 0; k < c->n_classes; k++) {
        t = next_token(pos);
        if (!t || strcmp(t, "class") || tok_int(pos) != k) return false;
        want_class *wc = &c->want[k];
        wc->n_pred = tok_int(pos), wc->n_true = tok_int(pos), wc->n_inter = tok_int(pos);
        wc->dice[0] = tok_num(pos), wc->dice[1] = tok_num(pos);
        wc->iou[0] = tok_num(pos), wc->iou[1] = tok_num(pos);
        wc->hd95_px = tok_num(pos), wc->hd95_mm = tok_num(pos);
    }
    t = next_token(pos);
    return t && !strcmp(t, "end");
}

static int mode_of(const char *s) {
    return s && !strcmp(s, "one") ? 1 : 0;
}

static bool load_fixtures(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/segmetrics_cases.txt", data_dir);
    size_t size;
    MT_CHECK_OK(mt_file_read(path, &fixture_text, &size));
    if (!fixture_text) return false;
    char *pos = fixture_text, *t;
    while ((t = next_token(&pos))) {
        if (!strcmp(t, "case") && n_cases < MAX_CASES) {
            if (!read_case(&pos, &cases[n_cases++])) {
                MT_CHECK(false, "%s: case %s is malformed", path, cases[n_cases - 1].name);
                return false;
            }
        } else if (!strcmp(t, "mean") && n_means < MAX_MEANS) {
            want_mean *m = &means[n_means++];
            snprintf(m->group, sizeof m->group, "%s", next_token(&pos));
            m->mode = mode_of(next_token(&pos));
            m->c = (int)tok_int(&pos);
            for (int k = 0; k < 4; k++) m->v[k] = tok_num(&pos), m->n[k] = tok_int(&pos);
        } else if (!strcmp(t, "overall") && n_overalls < MAX_OVERALL) {
            want_overall *o = &overalls[n_overalls++];
            snprintf(o->group, sizeof o->group, "%s", next_token(&pos));
            o->mode = mode_of(next_token(&pos));
            o->first = (int)tok_int(&pos);
            for (int k = 0; k < 8; k++) o->v[k] = tok_num(&pos), o->n[k] = tok_int(&pos);
        } else {
            MT_CHECK(false, "%s: unexpected token '%s' (or too many entries)", path, t);
            return false;
        }
    }
    return true;
}

static void free_fixtures(void) {
    for (int i = 0; i < n_cases; i++)
        free(cases[i].pred), free(cases[i].truth), free(cases[i].want);
    mt_free(fixture_text);
}

/* ---- Against the oracle --------------------------------------------------------------------- */

static void check_class(const seg_case *c, int k, int mode, const mt_seg_class_metrics *got,
                        const char *how) {
    const want_class *w = &c->want[k];
    CHECK_EQ_I(got->n_pred, w->n_pred, "%.63s class %d (%s)", c->name, k, how);
    CHECK_EQ_I(got->n_true, w->n_true, "%.63s class %d (%s)", c->name, k, how);
    CHECK_EQ_I(got->n_inter, w->n_inter, "%.63s class %d (%s)", c->name, k, how);
    CHECK_VAL(got->dice, w->dice[mode], TOL_OVERLAP, "%.63s class %d (%s)", c->name, k, how);
    CHECK_VAL(got->iou, w->iou[mode], TOL_OVERLAP, "%.63s class %d (%s)", c->name, k, how);
    CHECK_VAL(got->hd95_px, w->hd95_px, TOL_HD, "%.63s class %d (%s)", c->name, k, how);
    CHECK_VAL(got->hd95_mm, w->hd95_mm, TOL_HD, "%.63s class %d (%s)", c->name, k, how);
}

static mt_seg_opts case_opts(const seg_case *c, int mode, bool background) {
    return (mt_seg_opts){.empty = mode ? MT_SEG_EMPTY_ONE : MT_SEG_EMPTY_IGNORE,
                         .spacing = {c->spacing[0], c->spacing[1]},
                         .include_background = background};
}

/* Class maps, with and without the background, both empty-truth rules. */
static void check_case_classes(const seg_case *c) {
    mt_seg_mask p = {c->pred, c->h, c->w}, g = {c->truth, c->h, c->w};
    mt_seg_class_metrics *m = calloc((size_t)c->n_classes, sizeof *m);
    for (int mode = 0; mode < 2; mode++)
        for (int bg = 0; bg < 2; bg++) {
            mt_seg_opts o = case_opts(c, mode, bg);
            MT_CHECK_OK(mt_seg_case_classes(&p, &g, c->n_classes, &o, m));
            for (int k = bg ? 0 : 1; k < c->n_classes; k++)
                check_class(c, k, mode, &m[k], mode ? "classes, empty one" : "classes");
            if (!bg) /* class 0 left out: undefined, nothing counted */
                MT_CHECK(isnan(m[0].dice) && isnan(m[0].iou) && isnan(m[0].hd95_px) &&
                             isnan(m[0].hd95_mm) && !m[0].n_pred && !m[0].n_true && !m[0].n_inter,
                         "%s: class 0 without include_background", c->name);
        }
    free(m);
}

/* Each class on its own, as a binary mask (map == k). */
static void check_case_binary(const seg_case *c) {
    size_t n = (size_t)c->h * c->w;
    uint8_t *bp = malloc(n), *bg = malloc(n);
    for (int k = 0; k < c->n_classes; k++) {
        for (size_t i = 0; i < n; i++) bp[i] = c->pred[i] == k, bg[i] = c->truth[i] == k;
        mt_seg_mask p = {bp, c->h, c->w}, g = {bg, c->h, c->w};
        for (int mode = 0; mode < 2; mode++) {
            mt_seg_opts o = case_opts(c, mode, false);
            mt_seg_class_metrics m;
            MT_CHECK_OK(mt_seg_case_binary(&p, &g, &o, &m));
            check_class(c, k, mode, &m, mode ? "binary, empty one" : "binary");
        }
    }
    free(bp), free(bg);
}

static void test_oracle_cases(void) {
    MT_CHECK(n_cases >= 30, "only %d cases in the fixture", n_cases);
    for (int i = 0; i < n_cases; i++) {
        check_case_classes(&cases[i]);
        check_case_binary(&cases[i]);
    }
}

/* NULL options: IGNORE, spacing 1 (hd95_mm = hd95_px), background excluded. */
static void test_default_options(void) {
    for (int i = 0; i < n_cases; i++) {
        const seg_case *c = &cases[i];
        mt_seg_mask p = {c->pred, c->h, c->w}, g = {c->truth, c->h, c->w};
        mt_seg_class_metrics m[MT_SEG_MAX_CLASSES];
        MT_CHECK_OK(mt_seg_case_classes(&p, &g, c->n_classes, NULL, m));
        MT_CHECK(isnan(m[0].dice), "%s: background excluded by default", c->name);
        for (int k = 1; k < c->n_classes; k++) {
            CHECK_VAL(m[k].dice, c->want[k].dice[0], TOL_OVERLAP, "%.63s class %d", c->name, k);
            CHECK_VAL(m[k].hd95_px, c->want[k].hd95_px, TOL_HD, "%.63s class %d", c->name, k);
            CHECK_VAL(m[k].hd95_mm, c->want[k].hd95_px, TOL_HD, "%.63s class %d", c->name, k);
        }
    }
}

/* The group's table (cases x classes, background included) under one empty-truth rule. */
static mt_seg_class_metrics *group_table(const char *group, int mode, int *n_rows, int *n_classes) {
    mt_seg_class_metrics *t = NULL;
    *n_rows = 0, *n_classes = 0;
    for (int i = 0; i < n_cases; i++) {
        const seg_case *c = &cases[i];
        if (strcmp(c->group, group)) continue;
        MT_CHECK(!*n_classes || *n_classes == c->n_classes, "%s: classes differ in group %s",
                 c->name, group);
        *n_classes = c->n_classes;
        t = realloc(t, (size_t)(*n_rows + 1) * c->n_classes * sizeof *t);
        mt_seg_mask p = {c->pred, c->h, c->w}, g = {c->truth, c->h, c->w};
        mt_seg_opts o = case_opts(c, mode, true);
        MT_CHECK_OK(mt_seg_case_classes(&p, &g, c->n_classes, &o, t + *n_rows * c->n_classes));
        (*n_rows)++;
    }
    return t;
}

static void test_oracle_summaries(void) {
    MT_CHECK(n_overalls >= 8 && n_means >= 8, "%d overall and %d mean lines", n_overalls, n_means);
    for (int i = 0; i < n_overalls; i++) {
        const want_overall *o = &overalls[i];
        int rows, C;
        mt_seg_class_metrics *t = group_table(o->group, o->mode, &rows, &C);
        mt_seg_class_summary per[MT_SEG_MAX_CLASSES];
        mt_seg_summary s;
        MT_CHECK_OK(mt_seg_summarize(t, rows, C, o->first, per, &s));
        const mt_seg_mean *got[8] = {&s.dice,           &s.iou,           &s.hd95_px,
                                     &s.hd95_mm,        &s.pooled_dice,   &s.pooled_iou,
                                     &s.pooled_hd95_px, &s.pooled_hd95_mm};
        for (int k = 0; k < 8; k++) {
            CHECK_VAL(got[k]->mean, o->v[k], TOL_OVERLAP, "%.63s mode %d first %d value %d",
                      o->group, o->mode, o->first, k);
            CHECK_EQ_I(got[k]->n, o->n[k], "%.63s mode %d first %d value %d", o->group, o->mode,
                       o->first, k);
        }
        for (int j = 0; j < n_means; j++) {
            const want_mean *m = &means[j];
            if (strcmp(m->group, o->group) || m->mode != o->mode) continue;
            const mt_seg_mean *pc[4] = {&per[m->c].dice, &per[m->c].iou, &per[m->c].hd95_px,
                                        &per[m->c].hd95_mm};
            for (int k = 0; k < 4; k++) {
                CHECK_VAL(pc[k]->mean, m->v[k], TOL_OVERLAP, "%.63s mode %d class %d value %d",
                          m->group, m->mode, m->c, k);
                CHECK_EQ_I(pc[k]->n, m->n[k], "%.63s mode %d class %d value %d", m->group, m->mode,
                           m->c, k);
            }
        }
        free(t);
    }
}

/* ---- Hand-computed cases -------------------------------------------------------------------- */

static mt_seg_class_metrics binary(const uint8_t *p, const uint8_t *g, int h, int w,
                                   const mt_seg_opts *o) {
    mt_seg_mask mp = {p, h, w}, mg = {g, h, w};
    mt_seg_class_metrics m = {0};
    MT_CHECK_OK(mt_seg_case_binary(&mp, &mg, o, &m));
    return m;
}

static void test_hand_cases(void) {
    /* Two single pixels: (0,0) and (3,4). Dice 0, HD95 = 5, or sqrt(6^2 + 4^2) at spacing 2 x 1. */
    uint8_t p[6 * 6] = {0}, g[6 * 6] = {0};
    g[0] = 1, p[3 * 6 + 4] = 1;
    mt_seg_opts o = {.spacing = {2.0, 1.0}};
    mt_seg_class_metrics m = binary(p, g, 6, 6, &o);
    MT_CHECK(m.dice == 0 && m.iou == 0 && m.n_inter == 0, "disjoint pixels");
    MT_CHECK_NEAR(m.hd95_px, 5.0, 1e-15);
    MT_CHECK_NEAR(m.hd95_mm, sqrt(52.0), 1e-15);

    /* A 1 x 10 strip (every pixel on the border, so every pixel is surface) against its first
     * pixel: the truth's distances are 0..9, their 95th percentile 9 * 0.95 = 8.55 (linear). */
    uint8_t strip[10], first[10] = {1};
    memset(strip, 1, sizeof strip);
    m = binary(first, strip, 1, 10, NULL);
    MT_CHECK_NEAR(m.dice, 2.0 / 11.0, 1e-15);
    MT_CHECK_NEAR(m.iou, 0.1, 1e-15);
    MT_CHECK_NEAR(m.hd95_px, 8.55, 1e-13);

    /* A full image is all border: its surface is the frame, and two full images are 0 apart. A
     * 5 x 5 frame against a full 5 x 5: distances 0 both ways (the frame is the full image's
     * surface). */
    uint8_t full[25], frame[25];
    memset(full, 1, sizeof full);
    for (int i = 0; i < 25; i++) frame[i] = i / 5 == 0 || i / 5 == 4 || i % 5 == 0 || i % 5 == 4;
    m = binary(frame, full, 5, 5, NULL);
    MT_CHECK(m.hd95_px == 0 && m.n_pred == 16 && m.n_true == 25 && m.n_inter == 16, "frame");
    MT_CHECK_NEAR(m.dice, 32.0 / 41.0, 1e-15);

    /* Empty truth: IGNORE gives NaN, ONE gives 0 (prediction not empty) or 1 (both empty); HD95
     * is NaN either way. */
    uint8_t none[25] = {0};
    m = binary(frame, none, 5, 5, NULL);
    MT_CHECK(isnan(m.dice) && isnan(m.iou) && isnan(m.hd95_px) && isnan(m.hd95_mm), "ignore");
    o = (mt_seg_opts){.empty = MT_SEG_EMPTY_ONE};
    m = binary(frame, none, 5, 5, &o);
    MT_CHECK(m.dice == 0 && m.iou == 0 && isnan(m.hd95_px), "one, prediction not empty");
    m = binary(none, none, 5, 5, &o);
    MT_CHECK(m.dice == 1 && m.iou == 1 && isnan(m.hd95_px), "one, both empty");
    m = binary(none, frame, 5, 5, &o); /* empty prediction, truth not: 0 under both rules */
    MT_CHECK(m.dice == 0 && m.iou == 0 && isnan(m.hd95_px) && isnan(m.hd95_mm), "empty pred");
}

static void test_surface(void) {
    /* Class 1's centre (2,2) has four class-1 neighbours: the only pixel off the surface. Every
     * class-2 pixel is on the border or next to another class. */
    static const uint8_t map[5 * 6] = {0, 0, 0, 0, 0, 0, /**/ 0, 1, 1, 1, 0, 0, /**/
                                       0, 1, 1, 1, 2, 2, /**/ 0, 1, 1, 1, 2, 2, /**/
                                       0, 0, 0, 0, 2, 2};
    uint8_t want[30], out[30];
    memcpy(want, map, sizeof want);
    want[2 * 6 + 2] = 0;
    mt_seg_mask m = {map, 5, 6};
    MT_CHECK_OK(mt_seg_surface(&m, out));
    MT_CHECK(!memcmp(out, want, sizeof out), "surface of the class map");
    MT_CHECK_FAILS(mt_seg_surface(&m, NULL), MT_ERR_ARG, "NULL");
}

/* ---- Errors --------------------------------------------------------------------------------- */

static void test_bad_arguments(void) {
    uint8_t a[12] = {0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0}, b[12] = {0};
    mt_seg_mask p = {a, 3, 4}, g = {b, 3, 4}, g_wide = {b, 4, 3}, no_px = {NULL, 3, 4};
    mt_seg_mask zero = {a, 0, 4};
    mt_seg_class_metrics m[4];
    MT_CHECK_FAILS(mt_seg_case_binary(&p, &g_wide, NULL, m), MT_ERR_SHAPE, "pred is 3x4",
                   "truth is 4x3");
    MT_CHECK_FAILS(mt_seg_case_classes(&p, &g_wide, 3, NULL, m), MT_ERR_SHAPE, "same size");
    MT_CHECK_FAILS(mt_seg_case_binary(NULL, &g, NULL, m), MT_ERR_ARG, "pred is NULL");
    MT_CHECK_FAILS(mt_seg_case_binary(&p, NULL, NULL, m), MT_ERR_ARG, "truth is NULL");
    MT_CHECK_FAILS(mt_seg_case_binary(&p, &no_px, NULL, m), MT_ERR_ARG, "truth pixels are NULL");
    MT_CHECK_FAILS(mt_seg_case_binary(&zero, &g, NULL, m), MT_ERR_ARG, "pred is 0x4");
    MT_CHECK_FAILS(mt_seg_case_binary(&p, &g, NULL, NULL), MT_ERR_ARG, "output is NULL");
    MT_CHECK_FAILS(mt_seg_case_classes(&p, &g, 1, NULL, m), MT_ERR_ARG, "n_classes = 1");
    MT_CHECK_FAILS(mt_seg_case_classes(&p, &g, 257, NULL, m), MT_ERR_ARG, "n_classes = 257");
    MT_CHECK_FAILS(mt_seg_case_classes(&p, &g, 3, NULL, NULL), MT_ERR_ARG, "3 entries");

    /* Values: a binary mask holds 0/1, a class map indices < n_classes. */
    a[6] = 2;
    MT_CHECK_FAILS(mt_seg_case_binary(&p, &g, NULL, m), MT_ERR_ARG,
                   "pred pixel (row 1, col 2) holds 2", "expected 0 or 1");
    MT_CHECK_OK(mt_seg_case_classes(&p, &g, 3, NULL, m));
    b[11] = 3;
    MT_CHECK_FAILS(mt_seg_case_classes(&p, &g, 3, NULL, m), MT_ERR_ARG,
                   "truth pixel (row 2, col 3) holds 3", "n_classes = 3");
    b[11] = 0, a[6] = 1;

    mt_seg_opts o = {.spacing = {-1.0, 1.0}};
    MT_CHECK_FAILS(mt_seg_case_binary(&p, &g, &o, m), MT_ERR_ARG, "spacing (row) is -1");
    o = (mt_seg_opts){.spacing = {1.0, NAN}};
    MT_CHECK_FAILS(mt_seg_case_binary(&p, &g, &o, m), MT_ERR_ARG, "spacing (col) is nan");
    o = (mt_seg_opts){.empty = (mt_seg_empty)7};
    MT_CHECK_FAILS(mt_seg_case_binary(&p, &g, &o, m), MT_ERR_ARG, "empty-truth option 7");

    mt_seg_summary s;
    MT_CHECK_FAILS(mt_seg_summarize(m, 1, 4, 4, NULL, &s), MT_ERR_ARG, "first class 4");
    MT_CHECK_FAILS(mt_seg_summarize(m, 1, 0, 0, NULL, &s), MT_ERR_ARG, "n_classes = 0");
    MT_CHECK_FAILS(mt_seg_summarize(NULL, 2, 4, 1, NULL, &s), MT_ERR_ARG, "2 cases", "NULL");
    MT_CHECK_FAILS(mt_seg_summarize(m, 1, 4, 1, NULL, NULL), MT_ERR_ARG, "summary output");
    /* No cases: every mean undefined, nothing counted. */
    MT_CHECK_OK(mt_seg_summarize(NULL, 0, 4, 1, NULL, &s));
    MT_CHECK(isnan(s.dice.mean) && s.dice.n == 0 && isnan(s.pooled_hd95_mm.mean), "no cases");
}

/* Allocation failures: the scratch for HD95 fails cleanly; with none needed nothing is allocated.
 */
static void test_alloc_failures(void) {
    const seg_case *c = &cases[0];
    mt_seg_mask p = {c->pred, c->h, c->w}, g = {c->truth, c->h, c->w};
    mt_seg_class_metrics m[2];
    mt_alloc_fail_after(1);
    MT_CHECK_FAILS(mt_seg_case_classes(&p, &g, 2, NULL, m), MT_ERR_NOMEM, "HD95 scratch");
    mt_alloc_fail_after(0);
    uint8_t none[16] = {0};
    mt_seg_mask e = {none, 4, 4};
    mt_alloc_fail_after(1);
    MT_CHECK_OK(mt_seg_case_binary(&e, &e, NULL, m));
    mt_alloc_fail_after(0);
}

/* ---- Overlays ------------------------------------------------------------------------------- */

enum { OH = 8, OW = 10 };
static uint8_t ov_img[OH * OW], ov_truth[OH * OW], ov_pred[OH * OW];

/* Image 10 y + x (0..79). Truth: class 1 rows 1..4 x cols 1..5, class 2 rows 6..7 x cols 7..9
 * (on the border). Prediction: class 1 rows 2..5 x cols 2..6. */
static mt_seg_overlay overlay_case(void) {
    for (int y = 0; y < OH; y++)
        for (int x = 0; x < OW; x++) {
            int i = y * OW + x;
            ov_img[i] = (uint8_t)(10 * y + x);
            ov_truth[i] = (y >= 1 && y <= 4 && x >= 1 && x <= 5) ? 1 : (y >= 6 && x >= 7) ? 2 : 0;
            ov_pred[i] = y >= 2 && y <= 5 && x >= 2 && x <= 6;
        }
    return (mt_seg_overlay){
        .image_u8 = ov_img, .truth = ov_truth, .pred = ov_pred, .h = OH, .w = OW, .n_classes = 3};
}

/* The colour the documentation promises at (y, x), computed directly from the definitions. */
static void reference_pixel(const mt_seg_overlay *ov, const double *grey, int y, int x,
                            uint8_t out[3]) {
    int i = y * ov->w + x;
    uint8_t gv = (uint8_t)floor(grey[i] + 0.5);
    out[0] = out[1] = out[2] = gv;
    const uint8_t *maps[2] = {ov->truth, ov->pred};
    for (int k = 0; k < 2; k++) {
        const uint8_t *m = maps[k];
        if (!m || !m[i]) continue;
        bool surface = y == 0 || x == 0 || y == ov->h - 1 || x == ov->w - 1 || m[i - 1] != m[i] ||
                       m[i + 1] != m[i] || m[i - ov->w] != m[i] || m[i + ov->w] != m[i];
        if (surface && (k == 0 || (y + 2 * x) % 8 < 4)) mt_seg_color(m[i], out);
    }
}

static void check_against_reference(const mt_seg_overlay *ov, const double *grey,
                                    const uint8_t *rgb, const char *what) {
    int bad = 0;
    for (int y = 0; y < ov->h; y++)
        for (int x = 0; x < ov->w; x++) {
            uint8_t want[3];
            reference_pixel(ov, grey, y, x, want);
            if (memcmp(want, rgb + 3 * (y * ov->w + x), 3) && bad++ < 5)
                MT_CHECK(false, "%s: pixel (%d, %d) is (%d, %d, %d), expected (%d, %d, %d)", what,
                         y, x, rgb[3 * (y * ov->w + x)], rgb[3 * (y * ov->w + x) + 1],
                         rgb[3 * (y * ov->w + x) + 2], want[0], want[1], want[2]);
        }
}

static bool pixel_is(const uint8_t *rgb, int y, int x, int r, int g, int b) {
    const uint8_t *p = rgb + 3 * (y * OW + x);
    return p[0] == r && p[1] == g && p[2] == b;
}

static void test_overlay_render(void) {
    mt_seg_overlay ov = overlay_case();
    uint8_t rgb[OH * OW * 3];
    MT_CHECK_OK(mt_seg_overlay_render(&ov, rgb));
    double grey[OH * OW];
    for (int i = 0; i < OH * OW; i++) grey[i] = ov_img[i] * 255.0 / 79.0;
    check_against_reference(&ov, grey, rgb, "u8 image");

    /* Spot checks, by hand. Palette: 1 red (230, 25, 75), 2 green (60, 180, 75). */
    uint8_t red[3], green[3];
    mt_seg_color(1, red), mt_seg_color(2, green);
    MT_CHECK(red[0] == 230 && red[1] == 25 && red[2] == 75, "class 1 is red");
    MT_CHECK(green[0] == 60 && green[1] == 180 && green[2] == 75, "class 2 is green");
    MT_CHECK(pixel_is(rgb, 0, 0, 0, 0, 0), "minimum is black");
    MT_CHECK(pixel_is(rgb, 7, 0, 226, 226, 226), "70 of 0..79 is round(225.9) = 226");
    MT_CHECK(pixel_is(rgb, 3, 3, 107, 107, 107), "inside both masks: grey");
    MT_CHECK(pixel_is(rgb, 1, 1, 230, 25, 75), "true contour: solid red");
    MT_CHECK(pixel_is(rgb, 1, 4, 230, 25, 75), "true contour, top edge: solid");
    MT_CHECK(pixel_is(rgb, 5, 2, 230, 25, 75), "predicted contour, dash on ((5 + 4) %% 8 = 1)");
    MT_CHECK(pixel_is(rgb, 2, 6, 84, 84, 84), "predicted contour, dash off ((2 + 12) %% 8 = 6)");
    MT_CHECK(pixel_is(rgb, 7, 9, 60, 180, 75), "class 2 on the image corner: green");
    MT_CHECK(pixel_is(rgb, 6, 8, 60, 180, 75), "class 2 top edge: green");
    MT_CHECK(pixel_is(rgb, 5, 0, 161, 161, 161), "background pixel: round(50 * 255 / 79) = 161");

    /* Float image: its own min..max, NaN black and ignored; truth only. */
    float f[OH * OW];
    for (int i = 0; i < OH * OW; i++) f[i] = -1.0f + 0.5f * (float)ov_img[i];
    f[3 * OW + 3] = NAN;
    f[0] = -INFINITY; /* ignored by the window too: the minimum becomes -0.5 */
    mt_seg_overlay fo = {.image_f32 = f, .truth = ov_truth, .h = OH, .w = OW, .n_classes = 3};
    MT_CHECK_OK(mt_seg_overlay_render(&fo, rgb));
    for (int i = 0; i < OH * OW; i++)
        grey[i] = i == 0 || i == 3 * OW + 3 ? 0.0 : ((double)f[i] + 0.5) * 255.0 / 39.0;
    check_against_reference(&fo, grey, rgb, "float image");
    MT_CHECK(pixel_is(rgb, 3, 3, 0, 0, 0) && pixel_is(rgb, 0, 0, 0, 0, 0), "non-finite: black");

    /* A constant image is black; no masks, no contours. */
    memset(f, 0, sizeof f);
    fo = (mt_seg_overlay){.image_f32 = f, .h = OH, .w = OW, .n_classes = 2};
    MT_CHECK_OK(mt_seg_overlay_render(&fo, rgb));
    bool black = true;
    for (int i = 0; i < OH * OW * 3; i++) black &= rgb[i] == 0;
    MT_CHECK(black, "constant image, no masks: black");
    mt_seg_color(13, red);
    MT_CHECK(red[0] == 230 && red[1] == 25, "colours repeat after 12");
}

static void test_overlay_bad_arguments(void) {
    mt_seg_overlay ov = overlay_case();
    uint8_t rgb[OH * OW * 3];
    float f[OH * OW] = {0};
    mt_seg_overlay both = ov;
    both.image_f32 = f;
    MT_CHECK_FAILS(mt_seg_overlay_render(&both, rgb), MT_ERR_ARG, "exactly one", "both");
    mt_seg_overlay neither = ov;
    neither.image_u8 = NULL;
    MT_CHECK_FAILS(mt_seg_overlay_render(&neither, rgb), MT_ERR_ARG, "neither");
    mt_seg_overlay two = ov;
    two.n_classes = 2;
    MT_CHECK_FAILS(mt_seg_overlay_render(&two, rgb), MT_ERR_ARG,
                   "truth pixel (row 6, col 7) holds 2");
    MT_CHECK_FAILS(mt_seg_overlay_render(&ov, NULL), MT_ERR_ARG, "output buffer");
    MT_CHECK_FAILS(mt_seg_overlay_render(NULL, rgb), MT_ERR_ARG, "NULL");
    mt_seg_overlay empty = ov;
    empty.h = 0;
    MT_CHECK_FAILS(mt_seg_overlay_render(&empty, rgb), MT_ERR_ARG, "0x10");
}

/* Reads an 8-bit RGB PNG with libpng's simplified API; NULL on failure. */
static uint8_t *read_rgb_png(const char *path, int *h, int *w) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path)) return NULL;
    MT_CHECK(im.format == PNG_FORMAT_RGB, "%s: stored format %u, expected RGB", path, im.format);
    im.format = PNG_FORMAT_RGB;
    uint8_t *px = malloc(PNG_IMAGE_SIZE(im));
    if (!png_image_finish_read(&im, NULL, px, 0, NULL)) {
        free(px);
        return NULL;
    }
    *h = (int)im.height, *w = (int)im.width;
    return px;
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static void test_overlay_write(void) {
    mt_seg_overlay ov = overlay_case();
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/overlays", tmpdir);
    MT_CHECK(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    snprintf(path, sizeof path, "%s/case.png", dir);
    MT_CHECK_OK(mt_seg_overlay_write(path, &ov));
    uint8_t want[OH * OW * 3];
    MT_CHECK_OK(mt_seg_overlay_render(&ov, want));
    int h = 0, w = 0;
    uint8_t *back = read_rgb_png(path, &h, &w);
    MT_CHECK(back && h == OH && w == OW, "%s read back as %dx%d", path, h, w);
    MT_CHECK(back && !memcmp(back, want, sizeof want), "PNG pixels equal the rendered ones");
    MT_CHECK(back && pixel_is(back, 1, 1, 230, 25, 75) && pixel_is(back, 3, 3, 107, 107, 107),
             "contour and non-contour pixels in the file");
    free(back);

    /* Failures leave nothing behind: a missing directory, a path that is a directory, bad
     * arguments and an allocation failure; an older file at the path stays as it was. */
    char missing[192];
    snprintf(missing, sizeof missing, "%s/no/such/dir/case.png", tmpdir);
    MT_CHECK_FAILS(mt_seg_overlay_write(missing, &ov), MT_ERR_IO, "case.png");
    MT_CHECK(!mt_path_exists(missing), "no file after a failed write");
    char sub[192];
    snprintf(sub, sizeof sub, "%s/subdir", dir);
    MT_CHECK(mkdir(sub, 0755) == 0, "mkdir %s", sub);
    MT_CHECK(mt_seg_overlay_write(sub, &ov) == MT_ERR_IO, "writing over a directory fails");
    MT_CHECK(count_dir_entries(dir) == 2, "only case.png and subdir/: no temporary file left");
    mt_seg_overlay bad = ov;
    bad.n_classes = 2;
    MT_CHECK_FAILS(mt_seg_overlay_write(path, &bad), MT_ERR_ARG, "holds 2");
    mt_alloc_fail_after(1);
    MT_CHECK_FAILS(mt_seg_overlay_write(path, &ov), MT_ERR_NOMEM, "case.png", "RGB image");
    mt_alloc_fail_after(2);
    MT_CHECK_FAILS(mt_seg_overlay_write(path, &ov), MT_ERR_NOMEM, "case.png", "contour");
    mt_alloc_fail_after(0);
    MT_CHECK(count_dir_entries(dir) == 2, "no temporary file after failed writes");
    back = read_rgb_png(path, &h, &w);
    MT_CHECK(back && !memcmp(back, want, sizeof want), "the older file is untouched");
    free(back);
    MT_CHECK_FAILS(mt_seg_overlay_write(NULL, &ov), MT_ERR_ARG, "path is NULL");
}

/* ---- Timing (printed, not asserted: timed assertions do not belong in tests) ---------------- */

static void test_lungs_timing(void) {
    for (int i = 0; i < n_cases; i++) {
        const seg_case *c = &cases[i];
        if (strcmp(c->name, "lungs_512")) continue;
        mt_seg_mask p = {c->pred, c->h, c->w}, g = {c->truth, c->h, c->w};
        mt_seg_opts o = case_opts(c, 0, false);
        mt_seg_class_metrics m[2];
        enum { REPS = 20 };
        double t0 = mt_now();
        for (int r = 0; r < REPS; r++) MT_CHECK_OK(mt_seg_case_classes(&p, &g, 2, &o, m));
        double ms = (mt_now() - t0) * 1e3 / REPS;
        printf("  lungs_512 (512x512, %lld + %lld pixels, px and mm): %.2f ms per case\n",
               (long long)m[1].n_pred, (long long)m[1].n_true, ms);
        return;
    }
    MT_CHECK(false, "lungs_512 missing from the fixture");
}

static bool loaded;
static void test_load_fixtures(void) {
    loaded = load_fixtures();
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mt_segmetrics_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    MT_RUN(test_load_fixtures);
    if (loaded) {
        MT_RUN(test_oracle_cases);
        MT_RUN(test_default_options);
        MT_RUN(test_oracle_summaries);
        MT_RUN(test_alloc_failures);
        MT_RUN(test_lungs_timing);
    } else {
        mt_test_skip("oracle tests", "fixture did not load");
    }
    MT_RUN(test_hand_cases);
    MT_RUN(test_surface);
    MT_RUN(test_bad_arguments);
    MT_RUN(test_overlay_render);
    MT_RUN(test_overlay_bad_arguments);
    MT_RUN(test_overlay_write);
    free_fixtures();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return mt_test_summary();
}
