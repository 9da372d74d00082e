/* Synthetic chest radiographs: rendering is deterministic, the anatomy is where it should be,
 * each finding changes the film where and how it does on real films and strongly enough to learn,
 * the multi-label structure masks agree with the class mask and overlap where the heart meets the
 * lungs, and a cohort's files vary as planned, carry the planted PHI, and repeat byte for byte
 * (with or without the multi-label masks). */
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "medtrain/dicom.h"
#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/image.h"
#include "medtrain/mem.h"
#include "medtrain/rng.h"
#include "medtrain/synth.h"
#include "mt_test.h"

enum { EFF, PTX, CARDIO, CONS, EDEMA, NODULE };

typedef struct film {
    mt_image img;
    uint8_t *mask;
    int h, w;
} film;

static bool render(uint64_t seed, int64_t index, int h, int w, const uint8_t *findings, film *f) {
    f->h = h, f->w = w;
    f->img = (mt_image){0};
    f->mask = malloc((size_t)h * w);
    mt_status st = mt_synth_render(seed, index, h, w, findings, &f->img, f->mask);
    if (st != MT_OK) {
        MT_CHECK(false, "render(%llu, %lld): %s", (unsigned long long)seed, (long long)index,
                 mt_error_message());
        free(f->mask);
        return false;
    }
    return true;
}

static void film_free(film *f) {
    mt_image_free(&f->img);
    free(f->mask);
}

static const uint8_t *only(int finding) {
    static uint8_t f[MT_SYNTH_N_FINDINGS];
    memset(f, 0, sizeof f);
    if (finding >= 0) f[finding] = 1;
    return f;
}

/* ---- measurements on a film, from its mask -----------------------------------------------------
 */

typedef struct extent {
    int x0, x1, y0, y1; /* bounding box, inclusive; x0 > x1 when empty */
    double cx, cy;      /* centroid */
    long n;
} extent;

/* Pixels of class cls; side -1: left half only, +1: right half only, 0: all. */
static extent extent_of(const film *f, int cls, int side) {
    extent e = {f->w, -1, f->h, -1, 0, 0, 0};
    for (int y = 0; y < f->h; y++)
        for (int x = 0; x < f->w; x++) {
            if (f->mask[y * f->w + x] != cls) continue;
            if ((side < 0 && x >= f->w / 2) || (side > 0 && x < f->w / 2)) continue;
            if (x < e.x0) e.x0 = x;
            if (x > e.x1) e.x1 = x;
            if (y < e.y0) e.y0 = y;
            if (y > e.y1) e.y1 = y;
            e.cx += x, e.cy += y, e.n++;
        }
    if (e.n) e.cx /= (double)e.n, e.cy /= (double)e.n;
    return e;
}

/* Heart width over thoracic width (the lungs' outer extent), as a radiologist measures it. */
static double cardiothoracic_ratio(const film *f) {
    extent heart = extent_of(f, MT_SYNTH_HEART, 0), lung = extent_of(f, MT_SYNTH_LUNG, 0);
    if (!heart.n || !lung.n) return 0;
    return (double)(heart.x1 - heart.x0 + 1) / (double)(lung.x1 - lung.x0 + 1);
}

/* Mean of img over lung pixels of one side whose row lies in [fy0, fy1) of that lung's height and
 * whose column lies in [fx0, fx1) of its width measured from the midline outwards. */
static double lung_zone_mean(const film *f, const float *img, int side, double fy0, double fy1,
                             double fx0, double fx1) {
    extent e = extent_of(f, MT_SYNTH_LUNG, side);
    if (!e.n) return 0;
    double s = 0;
    long n = 0;
    for (int y = 0; y < f->h; y++) {
        double ry = (double)(y - e.y0) / (e.y1 - e.y0 + 1);
        if (ry < fy0 || ry >= fy1) continue;
        for (int x = 0; x < f->w; x++) {
            if (f->mask[y * f->w + x] != MT_SYNTH_LUNG) continue;
            if ((side < 0 && x >= f->w / 2) || (side > 0 && x < f->w / 2)) continue;
            double rx = side < 0 ? (double)(e.x1 - x) / (e.x1 - e.x0 + 1)
                                 : (double)(x - e.x0) / (e.x1 - e.x0 + 1);
            if (rx < fx0 || rx >= fx1) continue;
            s += img[y * f->w + x], n++;
        }
    }
    return n ? s / (double)n : 0;
}

/* Lung pixels within `rim` pixels of a non-lung pixel (a square neighbourhood), in the upper
 * fraction `upper` of the lung: *rim_mean; the rest of that lung: *core_mean. */
static void lung_rim(const film *f, int side, int rim, double upper, double *rim_mean,
                     double *core_mean) {
    extent e = extent_of(f, MT_SYNTH_LUNG, side);
    double rs = 0, cs = 0;
    long rn = 0, cn = 0;
    for (int y = 0; y < f->h; y++)
        for (int x = 0; x < f->w; x++) {
            if (f->mask[y * f->w + x] != MT_SYNTH_LUNG) continue;
            if ((side < 0 && x >= f->w / 2) || (side > 0 && x < f->w / 2)) continue;
            bool edge = false;
            for (int dy = -rim; dy <= rim && !edge; dy++)
                for (int dx = -rim; dx <= rim && !edge; dx++) {
                    int yy = y + dy, xx = x + dx;
                    edge = yy < 0 || xx < 0 || yy >= f->h || xx >= f->w ||
                           f->mask[yy * f->w + xx] == MT_SYNTH_BACKGROUND;
                }
            float v = f->img.data[y * f->w + x];
            if (edge && y < e.y0 + upper * (e.y1 - e.y0))
                rs += v, rn++;
            else if (!edge)
                cs += v, cn++;
        }
    *rim_mean = rn ? rs / (double)rn : 0;
    *core_mean = cn ? cs / (double)cn : 0;
}

static double box_mean(const film *f, int cx, int cy, int r) {
    double s = 0;
    int n = 0;
    for (int y = cy - r; y <= cy + r; y++)
        for (int x = cx - r; x <= cx + r; x++)
            if (y >= 0 && x >= 0 && y < f->h && x < f->w) s += f->img.data[y * f->w + x], n++;
    return n ? s / n : 0;
}

/* ---- per-finding features a trivial classifier could use ------------------------------------ */

static double feature(const film *f, int finding) {
    double best = -1e9;
    switch (finding) {
    case EFF: /* the lung base is bright */
        for (int side = -1; side <= 1; side += 2) {
            double base = lung_zone_mean(f, f->img.data, side, 0.78, 1.01, 0, 1.01);
            double mid = lung_zone_mean(f, f->img.data, side, 0.3, 0.6, 0, 1.01);
            if (base - mid > best) best = base - mid;
        }
        return best;
    case PTX: /* the upper rim of one lung is darker than its core */
        for (int side = -1; side <= 1; side += 2) {
            double rim, core;
            lung_rim(f, side, f->w / 40 + 1, 0.75, &rim, &core);
            if (core - rim > best) best = core - rim;
        }
        return best;
    case CARDIO:
        return cardiothoracic_ratio(f);
    case EDEMA: /* perihilar lung brighter than the lateral lung at the same height */
        best = 0;
        for (int side = -1; side <= 1; side += 2)
            best += lung_zone_mean(f, f->img.data, side, 0.25, 0.7, 0, 0.45) -
                    lung_zone_mean(f, f->img.data, side, 0.25, 0.7, 0.6, 1.01);
        return best;
    case CONS:
    case NODULE: {
        /* the brightest local patch (consolidation) or blob over its surroundings (nodule) in
         * the lung, relative to the lung's mean */
        int r = finding == CONS ? f->w / 20 : f->w / 80 + 1, ring = finding == CONS ? 0 : 3 * r;
        double lung = lung_zone_mean(f, f->img.data, -1, 0, 1.01, 0, 1.01) +
                      lung_zone_mean(f, f->img.data, 1, 0, 1.01, 0, 1.01);
        for (int y = 0; y < f->h; y++)
            for (int x = 0; x < f->w; x++) {
                if (f->mask[y * f->w + x] != MT_SYNTH_LUNG) continue;
                bool inside = true;
                for (int k = 0; k < 4 && inside; k++) {
                    int dx = (k == 0) - (k == 1), dy = (k == 2) - (k == 3);
                    int yy = y + dy * (r + 1), xx = x + dx * (r + 1);
                    inside = yy >= 0 && xx >= 0 && yy < f->h && xx < f->w &&
                             f->mask[yy * f->w + xx] == MT_SYNTH_LUNG;
                }
                if (!inside) continue;
                double v = box_mean(f, x, y, r);
                v -= ring ? box_mean(f, x, y, ring) : lung / 2;
                if (v > best) best = v;
            }
        return best;
    }
    }
    return 0;
}

/* Area under the ROC curve of score for labels (Mann-Whitney, ties count half). */
static double auroc(const double *score, const uint8_t *label, int n) {
    double wins = 0;
    long pairs = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (!label[i] || label[j]) continue;
            wins += score[i] > score[j] ? 1 : score[i] == score[j] ? 0.5 : 0;
            pairs++;
        }
    return pairs ? wins / (double)pairs : 0;
}

/* ---- rendering ------------------------------------------------------------------------------- */

static void test_render_deterministic(void) {
    uint8_t f[MT_SYNTH_N_FINDINGS] = {1, 0, 1, 0, 1, 1};
    film a, b, c, d;
    if (!render(5, 3, 96, 80, f, &a) || !render(5, 3, 96, 80, f, &b)) return;
    MT_CHECK(memcmp(a.img.data, b.img.data, 96 * 80 * sizeof(float)) == 0, "same seed and index");
    MT_CHECK(memcmp(a.mask, b.mask, 96 * 80) == 0);
    if (render(5, 4, 96, 80, f, &c)) {
        MT_CHECK(memcmp(a.img.data, c.img.data, 96 * 80 * sizeof(float)) != 0, "another index");
        film_free(&c);
    }
    if (render(6, 3, 96, 80, f, &d)) {
        MT_CHECK(memcmp(a.img.data, d.img.data, 96 * 80 * sizeof(float)) != 0, "another seed");
        film_free(&d);
    }
    float lo = 1, hi = 0;
    for (int i = 0; i < 96 * 80; i++) lo = fminf(lo, a.img.data[i]), hi = fmaxf(hi, a.img.data[i]);
    MT_CHECK(lo >= 0 && hi <= 1 && hi - lo > 0.5f, "range [%g, %g]", lo, hi);
    film_free(&a), film_free(&b);

    mt_image img = {0};
    MT_CHECK_FAILS(mt_synth_render(1, 0, 8, 64, NULL, &img, NULL), MT_ERR_ARG, "8x64");
    /* no mask and no findings are fine */
    MT_CHECK_OK(mt_synth_render(1, 0, 32, 48, NULL, &img, NULL));
    mt_image_free(&img);
}

static void test_anatomy(void) {
    static const int sizes[3][2] = {{128, 128}, {100, 170}, {170, 100}};
    for (int s = 0; s < 3; s++)
        for (int64_t i = 0; i < 12; i++) {
            film f;
            int h = sizes[s][0], w = sizes[s][1];
            if (!render(11, i, h, w, NULL, &f)) return;
            extent left = extent_of(&f, MT_SYNTH_LUNG, -1), right = extent_of(&f, MT_SYNTH_LUNG, 1);
            extent heart = extent_of(&f, MT_SYNTH_HEART, 0);
            double n = (double)h * w;
            double lung_frac = (left.n + right.n) / n, heart_frac = heart.n / n;
            MT_CHECK(left.n > 0 && right.n > 0, "%dx%d index %lld: lungs on both sides", h, w,
                     (long long)i);
            MT_CHECK(lung_frac > 0.12 && lung_frac < 0.5, "%dx%d index %lld: lung fraction %.3f", h,
                     w, (long long)i, lung_frac);
            MT_CHECK(heart_frac > 0.02 && heart_frac < 0.15,
                     "%dx%d index %lld: heart fraction %.3f", h, w, (long long)i, heart_frac);
            MT_CHECK(left.cx < heart.cx && heart.cx < right.cx && heart.cx > w / 2.0,
                     "index %lld: heart between the lungs, to the image's right: %.1f %.1f %.1f",
                     (long long)i, left.cx, heart.cx, right.cx);
            MT_CHECK(heart.cy > (left.cy + right.cy) / 2, "heart in the lower chest");
            /* on a film the lungs are dark and the heart bright */
            double lung_mean = lung_zone_mean(&f, f.img.data, -1, 0, 1.01, 0, 1.01);
            double heart_mean = 0;
            for (int k = 0; k < h * w; k++)
                if (f.mask[k] == MT_SYNTH_HEART) heart_mean += f.img.data[k];
            heart_mean /= (double)heart.n;
            MT_CHECK(heart_mean > lung_mean + 0.15, "heart %.3f vs lung %.3f", heart_mean,
                     lung_mean);
            double ctr = cardiothoracic_ratio(&f);
            MT_CHECK(ctr > 0.3 && ctr < 0.52, "index %lld: normal cardiothoracic ratio %.3f",
                     (long long)i, ctr);
            film_free(&f);
        }
}

/* Each finding alone against the same film without it: where and which way the film changes. */
static void test_findings_change_the_right_region(void) {
    enum { H = 160, W = 160 };
    for (int64_t i = 0; i < 8; i++) {
        film base, f;
        if (!render(21, i, H, W, NULL, &base)) return;
        float diff[H * W];

        /* Effusion: the lung bases fill in; the upper zones do not change. */
        if (!render(21, i, H, W, only(EFF), &f)) return;
        for (int k = 0; k < H * W; k++) diff[k] = f.img.data[k] - base.img.data[k];
        double low = fmax(lung_zone_mean(&base, diff, -1, 0.8, 1.01, 0, 1.01),
                          lung_zone_mean(&base, diff, 1, 0.8, 1.01, 0, 1.01));
        double up = fmax(fabs(lung_zone_mean(&base, diff, -1, 0, 0.3, 0, 1.01)),
                         fabs(lung_zone_mean(&base, diff, 1, 0, 0.3, 0, 1.01)));
        MT_CHECK(low > 0.1 && up < 0.005, "index %lld: effusion: base +%.3f, apex %.4f",
                 (long long)i, low, up);
        MT_CHECK(memcmp(f.mask, base.mask, H * W) == 0, "effusion keeps the anatomical masks");
        film_free(&f);

        /* Pneumothorax: darker, in the lung, at its edge; almost nothing brighter. */
        if (!render(21, i, H, W, only(PTX), &f)) return;
        double darker = 0, brighter = 0, dark_in_lung = 0;
        for (int k = 0; k < H * W; k++) {
            float d = f.img.data[k] - base.img.data[k];
            if (d < 0) darker -= d;
            if (d > 0) brighter += d;
            if (d < 0 && base.mask[k] == MT_SYNTH_LUNG) dark_in_lung -= d;
        }
        MT_CHECK(darker > 10 * brighter && dark_in_lung > 0.9 * darker && darker > 20,
                 "index %lld: pneumothorax: darker %.1f, brighter %.1f, in lung %.1f", (long long)i,
                 darker, brighter, dark_in_lung);
        double rim0, core0, rim1, core1;
        int side = 0;
        for (int s = -1; s <= 1 && !side; s += 2) {
            lung_rim(&base, s, 4, 0.75, &rim0, &core0);
            lung_rim(&f, s, 4, 0.75, &rim1, &core1);
            if (rim0 - rim1 > 0.1) side = s;
        }
        MT_CHECK(side != 0, "index %lld: pneumothorax darkens one lung's upper rim", (long long)i);
        if (side) MT_CHECK(fabs((core0 - core1)) < 0.5 * (rim0 - rim1), "rim more than core");
        film_free(&f);

        /* Cardiomegaly: heart wider than 55% of the chest (it was under half). */
        if (!render(21, i, H, W, only(CARDIO), &f)) return;
        double ctr0 = cardiothoracic_ratio(&base), ctr1 = cardiothoracic_ratio(&f);
        MT_CHECK(ctr0 < 0.5 && ctr1 > 0.55, "index %lld: cardiothoracic ratio %.3f -> %.3f",
                 (long long)i, ctr0, ctr1);
        film_free(&f);

        /* Nodule: a small bright blob, nothing else. */
        if (!render(21, i, H, W, only(NODULE), &f)) return;
        extent blob = {W, -1, H, -1, 0, 0, 0};
        float peak = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float d = f.img.data[y * W + x] - base.img.data[y * W + x];
                peak = fmaxf(peak, d);
                if (d < 0.05f) continue;
                blob.n++;
                if (x < blob.x0) blob.x0 = x;
                if (x > blob.x1) blob.x1 = x;
                if (y < blob.y0) blob.y0 = y;
                if (y > blob.y1) blob.y1 = y;
            }
        MT_CHECK(peak > 0.15 && blob.n >= 4 && blob.n < 0.01 * H * W &&
                     blob.x1 - blob.x0 < W / 12 && blob.y1 - blob.y0 < H / 12,
                 "index %lld: nodule: peak %.3f, %ld pixels, %dx%d box", (long long)i, peak, blob.n,
                 blob.x1 - blob.x0 + 1, blob.y1 - blob.y0 + 1);
        film_free(&f);

        /* Edema: perihilar lung brighter, more than the lateral lung. */
        if (!render(21, i, H, W, only(EDEMA), &f)) return;
        for (int k = 0; k < H * W; k++) diff[k] = f.img.data[k] - base.img.data[k];
        double hilar = 0, lateral = 0;
        for (int s = -1; s <= 1; s += 2) {
            hilar += lung_zone_mean(&base, diff, s, 0.3, 0.7, 0, 0.4) / 2;
            lateral += lung_zone_mean(&base, diff, s, 0.3, 0.7, 0.75, 1.01) / 2;
        }
        MT_CHECK(hilar > 0.08 && hilar > lateral + 0.03,
                 "index %lld: edema: perihilar +%.3f, lateral +%.3f", (long long)i, hilar, lateral);
        film_free(&f);

        /* Consolidation: a dense patch inside one lung. */
        if (!render(21, i, H, W, only(CONS), &f)) return;
        long patch = 0, patch_in_lung = 0;
        for (int k = 0; k < H * W; k++) {
            if (f.img.data[k] - base.img.data[k] < 0.1f) continue;
            patch++;
            patch_in_lung += base.mask[k] != MT_SYNTH_BACKGROUND;
        }
        MT_CHECK(patch > 0.004 * H * W && patch < 0.1 * H * W && patch_in_lung > 0.95 * patch,
                 "index %lld: consolidation: %ld pixels denser, %ld in the lungs", (long long)i,
                 patch, patch_in_lung);
        film_free(&f);
        film_free(&base);
    }
}

/* A guard against findings too faint to learn: on 128x128 films with other findings mixed in, a
 * trivial hand-made feature per finding separates positives from negatives. */
static void test_findings_are_learnable(void) {
    enum { N = 120, S = 128 };
    mt_rng r;
    mt_rng_init(&r, 99, 0, 0);
    for (int finding = 0; finding < MT_SYNTH_N_FINDINGS; finding++) {
        double score[N];
        uint8_t label[N];
        for (int i = 0; i < N; i++) {
            uint8_t f[MT_SYNTH_N_FINDINGS];
            for (int k = 0; k < MT_SYNTH_N_FINDINGS; k++) f[k] = mt_rng_uniform(&r) < 0.2f;
            f[finding] = label[i] = (uint8_t)(i % 2);
            film m;
            if (!render(31 + (uint64_t)finding, i, S, S, f, &m)) return;
            score[i] = feature(&m, finding);
            film_free(&m);
        }
        double a = auroc(score, label, N);
        printf("  %-14s AUROC of a one-number feature at %dx%d: %.3f\n", mt_synth_findings[finding],
               S, S, a);
        MT_CHECK(a > 0.8, "%s: AUROC %.3f", mt_synth_findings[finding], a);
    }
}

/* ---- cohorts --------------------------------------------------------------------------------- */

static char tmp_root[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir) {
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct csv_row {
    char path[128];
    char cell[MT_SYNTH_N_FINDINGS][4];
} csv_row;

/* Parses labels.csv; returns the number of rows, or -1 with a failed check. */
static int read_labels(const char *dir, csv_row *rows, int cap) {
    char path[256], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/labels.csv", dir);
    if (mt_file_read(path, &text, &n) != MT_OK) {
        MT_CHECK(false, "%s: %s", path, mt_error_message());
        return -1;
    }
    const char *header = "path,Effusion,Pneumothorax,Cardiomegaly,Consolidation,Edema,Nodule\n";
    int count = -1;
    if (strncmp(text, header, strlen(header)) != 0) {
        MT_CHECK(false, "labels.csv header: %.80s", text);
    } else {
        count = 0;
        char *line = text + strlen(header), *next;
        for (; *line; line = next) {
            next = strchr(line, '\n');
            MT_CHECK(next != NULL, "line ends with a newline");
            if (!next) break;
            *next++ = '\0';
            if (count >= cap) {
                count = cap + 1;
                break;
            }
            csv_row *row = &rows[count++];
            char *field = strtok(line, ","); /* path never empty */
            snprintf(row->path, sizeof row->path, "%s", field ? field : "");
            char *rest = field ? line + strlen(field) + 1 : line;
            for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++) {
                char *comma = strchr(rest, ',');
                size_t len = comma ? (size_t)(comma - rest) : strlen(rest);
                MT_CHECK(len < 3 && (comma != NULL) == (f < MT_SYNTH_N_FINDINGS - 1),
                         "row %d: cell %d", count, f);
                snprintf(row->cell[f], sizeof row->cell[f], "%.*s", (int)(len < 3 ? len : 3), rest);
                bool ok = !strcmp(row->cell[f], "") || !strcmp(row->cell[f], "0") ||
                          !strcmp(row->cell[f], "1") || !strcmp(row->cell[f], "-1");
                MT_CHECK(ok, "row %d: value '%s'", count, row->cell[f]);
                rest = comma ? comma + 1 : rest + len;
            }
        }
    }
    mt_free(text);
    return count;
}

static bool same_file(const char *a, const char *b) {
    char ha[MT_SHA256_HEX], hb[MT_SHA256_HEX];
    if (mt_sha256_file(a, ha) != MT_OK || mt_sha256_file(b, hb) != MT_OK) return false;
    return strcmp(ha, hb) == 0;
}

static bool file_contains(const char *path, const char *needle) {
    char *data;
    size_t n;
    if (mt_file_read(path, &data, &n) != MT_OK) return false;
    bool found = memmem(data, n, needle, strlen(needle)) != NULL;
    mt_free(data);
    return found;
}

static void test_cohort(void) {
    enum { N = 16 };
    char a[128], b[128], c[128];
    snprintf(a, sizeof a, "%s/a", tmp_root);
    snprintf(b, sizeof b, "%s/b", tmp_root);
    snprintf(c, sizeof c, "%s/c", tmp_root);
    mt_synth_summary sa, sb, sc;
    MT_CHECK_OK(mt_synth_cohort(
        &(mt_synth_opts){.out = a, .n = N, .h = 256, .w = 320, .seed = 7, .threads = 2}, &sa));
    MT_CHECK_OK(mt_synth_cohort(
        &(mt_synth_opts){.out = b, .n = N, .h = 256, .w = 320, .seed = 7, .threads = 1}, &sb));
    MT_CHECK_OK(mt_synth_cohort(
        &(mt_synth_opts){.out = c, .n = N, .h = 256, .w = 320, .seed = 8, .threads = 2}, &sc));
    MT_CHECK(sa.images == N && sa.patients >= 1 && sa.patients <= sa.studies && sa.studies <= N);
    MT_CHECK(memcmp(&sa, &sb, sizeof sa) == 0, "summaries differ with the thread count");
    for (int k = 0; k < MT_TS_COUNT; k++)
        MT_CHECK(sa.per_syntax[k] == N / MT_TS_COUNT, "%s used %lld times",
                 mt_dicom_syntax_name((mt_dicom_syntax)k), (long long)sa.per_syntax[k]);

    /* running again into the same directory is refused */
    MT_CHECK_FAILS(
        mt_synth_cohort(
            &(mt_synth_opts){.out = a, .n = N, .h = 256, .w = 320, .seed = 7, .threads = 2}, NULL),
        MT_ERR_ARG, "already holds a cohort");

    csv_row rows[N + 1], rows_c[N + 1];
    int n = read_labels(a, rows, N), nc = read_labels(c, rows_c, N);
    MT_CHECK(n == N && nc == N, "labels.csv rows: %d and %d", n, nc);
    if (n != N || nc != N) return;
    long positives[MT_SYNTH_N_FINDINGS] = {0};
    int differ = 0, seen_bits[17] = {0}, seen_mono1 = 0, seen_syntax[MT_TS_COUNT] = {0};
    char pa[1024], pb[1024];
    for (int i = 0; i < N; i++) {
        for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++) positives[f] += !strcmp(rows[i].cell[f], "1");
        char want[64];
        snprintf(want, sizeof want, "/img_%06d.dcm", i);
        MT_CHECK(strncmp(rows[i].path, "pat_", 4) == 0 && strstr(rows[i].path, "/study_") &&
                     strstr(rows[i].path, want),
                 "row %d: path %s", i, rows[i].path);

        /* byte-identical with another thread count, different with another seed */
        snprintf(pa, sizeof pa, "%s/dicom/%.200s", a, rows[i].path);
        snprintf(pb, sizeof pb, "%s/dicom/%.200s", b, rows[i].path);
        MT_CHECK(same_file(pa, pb), "%s differs between 1 and 2 threads", rows[i].path);
        snprintf(pb, sizeof pb, "%s/dicom/%.200s", c, rows_c[i].path);
        differ += !same_file(pa, pb);

        /* read back: the file says what it holds, and shows the anatomy the mask says */
        mt_dicom_image d = {0};
        MT_CHECK_OK(mt_dicom_read(pa, &d));
        MT_CHECK(d.rows == 256 && d.cols == 320, "%s: %dx%d", pa, d.rows, d.cols);
        seen_bits[d.bits_stored & 15 ? d.bits_stored : 16] = 1;
        seen_mono1 += !strcmp(d.photometric, "MONOCHROME1");
        MT_CHECK(!strcmp(d.photometric, "MONOCHROME1") || !strcmp(d.photometric, "MONOCHROME2"));
        MT_CHECK(strstr(d.patient_id, MT_SYNTH_PHI_MARK) != NULL, "patient id carries the mark");
        MT_CHECK(d.has_spacing && d.pixel_spacing[0] > 0.1 && d.pixel_spacing[0] < 2);
        for (int k = 0; k < MT_TS_COUNT; k++)
            if (!strcmp(d.transfer_syntax_uid, mt_dicom_syntax_uid((mt_dicom_syntax)k)))
                seen_syntax[k] = 1;
        mt_image disp = {0};
        MT_CHECK_OK(mt_image_from_dicom(&d, &(mt_window_opts){true, 0.5, 99.5}, &disp, NULL));

        snprintf(pb, sizeof pb, "%s/masks/img_%06d.png", a, i);
        uint8_t *mask = NULL;
        int mh = 0, mw = 0;
        MT_CHECK_OK(mt_png_read_u8(pb, &mask, &mh, &mw));
        MT_CHECK(mh == 256 && mw == 320, "mask %dx%d", mh, mw);
        if (mask && disp.data && mh == 256 && mw == 320) {
            double lung = 0, heart = 0;
            long nl = 0, nh = 0, bad = 0;
            for (int k = 0; k < mh * mw; k++) {
                bad += mask[k] > 2;
                if (mask[k] == MT_SYNTH_LUNG) lung += disp.data[k], nl++;
                if (mask[k] == MT_SYNTH_HEART) heart += disp.data[k], nh++;
            }
            MT_CHECK(bad == 0 && nl > 0 && nh > 0, "mask classes");
            MT_CHECK(nl && nh && heart / nh > lung / nl + 0.1,
                     "%s (%s, %d bits): displayed heart %.3f not brighter than lungs %.3f",
                     rows[i].path, d.photometric, d.bits_stored, nh ? heart / nh : 0,
                     nl ? lung / nl : 0);
        }
        mt_free(mask);
        mt_image_free(&disp);

        /* planted PHI, searchable in files that are not deflated */
        if (strcmp(d.transfer_syntax_uid, mt_dicom_syntax_uid(MT_TS_DEFLATE)) != 0) {
            MT_CHECK(file_contains(pa, "QZPHI^PATIENT"), "%s: patient name", pa);
            MT_CHECK(file_contains(pa, MT_SYNTH_PHI_BIRTH_DATE), "%s: birth date", pa);
            MT_CHECK(file_contains(pa, "QZPHI-A"), "%s: accession number", pa);
            MT_CHECK(file_contains(pa, "QZPHI PRIVATE") && file_contains(pa, "QZPHI-PRIVATE-"),
                     "%s: private tag", pa);
            MT_CHECK(file_contains(pa, "QZPHI^DOCTOR"), "%s: physician", pa);
        }
        mt_dicom_image_free(&d);
    }
    for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++)
        MT_CHECK(positives[f] == sa.positives[f], "%s: %ld ones in labels.csv, summary %lld",
                 mt_synth_findings[f], positives[f], (long long)sa.positives[f]);
    for (int k = 0; k < MT_TS_COUNT; k++)
        MT_CHECK(seen_syntax[k], "%s read back", mt_dicom_syntax_name((mt_dicom_syntax)k));
    MT_CHECK(seen_bits[8] + seen_bits[12] + seen_bits[16] >= 2, "bits stored vary");
    MT_CHECK(seen_mono1 > 0 && seen_mono1 < N, "MONOCHROME1: %d of %d", seen_mono1, N);
    MT_CHECK(differ > N / 2, "only %d of %d files differ with another seed", differ, N);
    snprintf(pa, sizeof pa, "%s/labels.csv", a);
    snprintf(pb, sizeof pb, "%s/labels.csv", b);
    MT_CHECK(same_file(pa, pb), "labels.csv differs between 1 and 2 threads");
    snprintf(pa, sizeof pa, "%s/masks/img_000003.png", a);
    snprintf(pb, sizeof pb, "%s/masks/img_000003.png", b);
    MT_CHECK(same_file(pa, pb), "masks differ between 1 and 2 threads");
}

/* Every label has both classes in any cohort of 10 or more images. */
static void test_cohort_labels_have_both_classes(void) {
    enum { N = 50 };
    char dir[128];
    snprintf(dir, sizeof dir, "%s/labels50", tmp_root);
    mt_synth_summary s;
    MT_CHECK_OK(mt_synth_cohort(
        &(mt_synth_opts){.out = dir, .n = N, .h = 48, .w = 40, .seed = 3, .threads = 2}, &s));
    csv_row rows[N + 1];
    if (read_labels(dir, rows, N) != N) return;
    for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++) {
        int ones = 0, zeros = 0, blank = 0;
        for (int i = 0; i < N; i++) {
            ones += !strcmp(rows[i].cell[f], "1");
            zeros += !strcmp(rows[i].cell[f], "0");
            blank += !strcmp(rows[i].cell[f], "") || !strcmp(rows[i].cell[f], "-1");
        }
        MT_CHECK(ones >= 5 && zeros >= 5, "%s: %d ones, %d zeros", mt_synth_findings[f], ones,
                 zeros);
        MT_CHECK(ones >= 0.1 * N && ones <= 0.45 * N, "%s: prevalence %d of %d",
                 mt_synth_findings[f], ones, N);
        MT_CHECK(blank < 0.2 * N, "%s: %d blank or uncertain", mt_synth_findings[f], blank);
    }
}

static void test_cohort_varying_sizes(void) {
    char dir[128], path[1024];
    snprintf(dir, sizeof dir, "%s/sizes", tmp_root);
    mt_synth_summary s;
    MT_CHECK_OK(mt_synth_cohort(
        &(mt_synth_opts){.out = dir, .n = 2, .h = 0, .w = 0, .seed = 4, .threads = 2}, &s));
    csv_row rows[3];
    if (read_labels(dir, rows, 2) != 2) return;
    for (int i = 0; i < 2; i++) {
        mt_dicom_image d = {0};
        snprintf(path, sizeof path, "%s/dicom/%s", dir, rows[i].path);
        MT_CHECK_OK(mt_dicom_read_header(path, &d));
        int h = d.rows, w = d.cols;
        mt_dicom_image_free(&d);
        MT_CHECK(h >= 1000 && h <= 3000 && w >= 1000 && w <= 3000 && h != w, "%s: %dx%d", path, h,
                 w);
        uint8_t *mask = NULL;
        int mh = 0, mw = 0;
        snprintf(path, sizeof path, "%s/masks/img_%06d.png", dir, i);
        MT_CHECK_OK(mt_png_read_u8(path, &mask, &mh, &mw));
        MT_CHECK(mh == h && mw == w, "mask %dx%d for a %dx%d film", mh, mw, h, w);
        mt_free(mask);
    }
}

/* Benchmarks need one encoding throughout: a fixed syntax and bit depth apply to every file. */
static void test_cohort_fixed_syntax_and_bits(void) {
    char dir[128], path[1024];
    snprintf(dir, sizeof dir, "%s/fixed", tmp_root);
    mt_synth_summary s;
    MT_CHECK_OK(mt_synth_cohort(&(mt_synth_opts){.out = dir,
                                                 .n = 3,
                                                 .h = 64,
                                                 .w = 48,
                                                 .seed = 5,
                                                 .threads = 2,
                                                 .fixed_syntax = true,
                                                 .syntax = MT_TS_JPEG2000,
                                                 .bits = 12},
                                &s));
    MT_CHECK(s.per_syntax[MT_TS_JPEG2000] == 3, "%lld of 3 in JPEG 2000",
             (long long)s.per_syntax[MT_TS_JPEG2000]);
    csv_row rows[4];
    if (read_labels(dir, rows, 3) != 3) return;
    for (int i = 0; i < 3; i++) {
        mt_dicom_image d = {0};
        snprintf(path, sizeof path, "%s/dicom/%s", dir, rows[i].path);
        MT_CHECK_OK(mt_dicom_read_header(path, &d));
        MT_CHECK(!strcmp(d.transfer_syntax_uid, mt_dicom_syntax_uid(MT_TS_JPEG2000)), "%s",
                 d.transfer_syntax_uid);
        MT_CHECK(d.bits_stored == 12, "bits stored %d", d.bits_stored);
        mt_dicom_image_free(&d);
    }
}

/* Structure masks: the same film and class mask as mt_synth_render; the class mask is HEART on the
 * heart plane, else LUNG on either lung plane; the lungs are disjoint, the patient's right lung on
 * the image's left; the heart overlaps a lung on every film (its outline crosses theirs). */
static void test_structures(void) {
    enum { H = 160, W = 128 };
    size_t n = (size_t)H * W;
    const uint8_t *fs[] = {NULL, only(CARDIO), only(EFF), only(PTX)};
    for (int t = 0; t < 8; t++) {
        const uint8_t *findings = fs[t % 4];
        film f;
        if (!render(11, t, H, W, findings, &f)) continue;
        mt_image img = {0};
        uint8_t *mask = malloc(n), *planes = malloc(n * MT_SYNTH_N_STRUCTURES);
        MT_CHECK_OK(mt_synth_render_structures(11, t, H, W, findings, &img, mask, planes));
        MT_CHECK(img.data && memcmp(img.data, f.img.data, n * sizeof(float)) == 0 &&
                     memcmp(mask, f.mask, n) == 0,
                 "film %d: the structures changed the film or its class mask", t);
        const uint8_t *rl = planes + n * MT_SYNTH_RIGHT_LUNG, *ll = planes + n * MT_SYNTH_LEFT_LUNG,
                      *hp = planes + n * MT_SYNTH_HEART_ML;
        long bad = 0, overlap = 0, both_lungs = 0, cnt[3] = {0, 0, 0};
        double cx[3] = {0, 0, 0};
        for (size_t i = 0; i < n; i++) {
            int want = hp[i]            ? MT_SYNTH_HEART
                       : rl[i] || ll[i] ? MT_SYNTH_LUNG
                                        : MT_SYNTH_BACKGROUND;
            bad += mask[i] != want || rl[i] > 1 || ll[i] > 1 || hp[i] > 1;
            overlap += hp[i] && (rl[i] || ll[i]);
            both_lungs += rl[i] && ll[i];
            for (int s = 0; s < 3; s++)
                if (planes[s * n + i]) cnt[s]++, cx[s] += (double)(i % W);
        }
        MT_CHECK(bad == 0, "film %d: %ld pixels where class mask and planes disagree", t, bad);
        MT_CHECK(both_lungs == 0, "film %d: %ld pixels in both lungs", t, both_lungs);
        MT_CHECK(overlap > 0, "film %d: the heart overlaps no lung", t);
        MT_CHECK(cnt[0] > 0 && cnt[1] > 0 && cnt[2] > 0, "film %d: an empty structure", t);
        if (cnt[0] && cnt[1])
            MT_CHECK(cx[0] / cnt[0] < W / 2.0 && cx[1] / cnt[1] > W / 2.0,
                     "film %d: right lung at x %.1f, left lung at x %.1f", t, cx[0] / cnt[0],
                     cx[1] / cnt[1]);
        mt_image_free(&img);
        free(mask), free(planes);
        film_free(&f);
    }
    MT_CHECK(!strcmp(mt_synth_structures[MT_SYNTH_RIGHT_LUNG], "right_lung") &&
             !strcmp(mt_synth_structures[MT_SYNTH_LEFT_LUNG], "left_lung") &&
             !strcmp(mt_synth_structures[MT_SYNTH_HEART_ML], "heart"));
}

/* --multilabel-masks adds masks_ml/<structure>/ and changes no other byte. */
static void test_cohort_multilabel_masks(void) {
    enum { N = 4, H = 72, W = 64 };
    char a[128], b[128], pa[1024], pb[1024];
    snprintf(a, sizeof a, "%s/ml_no", tmp_root);
    snprintf(b, sizeof b, "%s/ml_yes", tmp_root);
    MT_CHECK_OK(mt_synth_cohort(
        &(mt_synth_opts){.out = a, .n = N, .h = H, .w = W, .seed = 9, .threads = 2}, NULL));
    MT_CHECK_OK(mt_synth_cohort(
        &(mt_synth_opts){
            .out = b, .n = N, .h = H, .w = W, .seed = 9, .threads = 2, .multilabel_masks = true},
        NULL));
    csv_row rows[N + 1];
    if (read_labels(b, rows, N) != N) return;
    snprintf(pa, sizeof pa, "%s/labels.csv", a);
    snprintf(pb, sizeof pb, "%s/labels.csv", b);
    MT_CHECK(same_file(pa, pb), "labels.csv differs");
    snprintf(pa, sizeof pa, "%s/masks_ml", a);
    MT_CHECK(!mt_path_exists(pa), "masks_ml/ written without the option");
    for (int i = 0; i < N; i++) {
        snprintf(pa, sizeof pa, "%s/dicom/%s", a, rows[i].path);
        snprintf(pb, sizeof pb, "%s/dicom/%s", b, rows[i].path);
        MT_CHECK(same_file(pa, pb), "%s differs", rows[i].path);
        snprintf(pa, sizeof pa, "%s/masks/img_%06d.png", a, i);
        snprintf(pb, sizeof pb, "%s/masks/img_%06d.png", b, i);
        MT_CHECK(same_file(pa, pb), "masks/img_%06d.png differs", i);
        uint8_t *cls = NULL, *pl[MT_SYNTH_N_STRUCTURES] = {0};
        int h = 0, w = 0;
        MT_CHECK_OK(mt_png_read_u8(pb, &cls, &h, &w));
        bool ok = cls && h == H && w == W;
        for (int s = 0; s < MT_SYNTH_N_STRUCTURES; s++) {
            snprintf(pb, sizeof pb, "%s/masks_ml/%s/img_%06d.png", b, mt_synth_structures[s], i);
            int ph = 0, pw = 0;
            MT_CHECK_OK(mt_png_read_u8(pb, &pl[s], &ph, &pw));
            ok = ok && pl[s] && ph == H && pw == W;
        }
        MT_CHECK(ok, "image %d: the structure masks are missing or mis-sized", i);
        long bad = 0;
        for (size_t k = 0; ok && k < (size_t)H * W; k++) {
            uint8_t r = pl[0][k], l = pl[1][k], hh = pl[2][k];
            int want = hh ? MT_SYNTH_HEART : r || l ? MT_SYNTH_LUNG : MT_SYNTH_BACKGROUND;
            bad += cls[k] != want || (r != 0 && r != 255) || (l != 0 && l != 255) ||
                   (hh != 0 && hh != 255);
        }
        MT_CHECK(bad == 0, "image %d: %ld pixels where the PNGs disagree", i, bad);
        mt_free(cls);
        for (int s = 0; s < MT_SYNTH_N_STRUCTURES; s++) mt_free(pl[s]);
    }
}

static void test_cohort_bad_options(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/bad", tmp_root);
    MT_CHECK_FAILS(
        mt_synth_cohort(
            &(mt_synth_opts){.out = dir, .n = 0, .h = 64, .w = 64, .seed = 1, .threads = 1}, NULL),
        MT_ERR_ARG, "0 images");
    MT_CHECK_FAILS(
        mt_synth_cohort(
            &(mt_synth_opts){.out = dir, .n = 4, .h = 64, .w = 0, .seed = 1, .threads = 1}, NULL),
        MT_ERR_ARG, "64x0");
    MT_CHECK_FAILS(
        mt_synth_cohort(
            &(mt_synth_opts){.out = NULL, .n = 4, .h = 64, .w = 64, .seed = 1, .threads = 1}, NULL),
        MT_ERR_ARG, "output directory");
    MT_CHECK(!mt_path_exists(dir), "nothing created for bad options");
    /* an output path that is a file */
    char file[160];
    snprintf(file, sizeof file, "%s/plainfile", tmp_root);
    MT_CHECK_OK(mt_file_write_atomic(file, "x", 1));
    MT_CHECK_FAILS(
        mt_synth_cohort(
            &(mt_synth_opts){.out = file, .n = 4, .h = 64, .w = 64, .seed = 1, .threads = 1}, NULL),
        MT_ERR_IO, "plainfile");
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/test_synth_XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    MT_RUN(test_render_deterministic);
    MT_RUN(test_anatomy);
    MT_RUN(test_findings_change_the_right_region);
    MT_RUN(test_findings_are_learnable);
    MT_RUN(test_cohort);
    MT_RUN(test_cohort_labels_have_both_classes);
    MT_RUN(test_cohort_varying_sizes);
    MT_RUN(test_cohort_fixed_syntax_and_bits);
    MT_RUN(test_structures);
    MT_RUN(test_cohort_multilabel_masks);
    MT_RUN(test_cohort_bad_options);
    rm_rf(tmp_root);
    return mt_test_summary();
}
