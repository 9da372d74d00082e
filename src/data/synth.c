/* Synthetic chest radiographs and the cohorts `medtrain synth` writes (see medtrain/synth.h).
 *
 * How a film is made. Every pixel is mapped to chest coordinates (X to the image's right, Y down,
 * the thorax spanning about -0.45..0.45 both ways) by a per-image affine transform (scale, shift,
 * slight rotation), so any h x w works and non-square films show more neck or more flank rather
 * than a stretched chest. In those coordinates the anatomy is a set of smooth shapes, each adding
 * to or taking from a density D, the attenuation along the ray: the soft tissue of the body, the
 * air of the lungs (which is why lungs are dark), heart, mediastinum, spine, ribs, clavicles,
 * vessels. The film is 1 - exp(-mu D) through a per-image exposure curve, plus low-frequency
 * shading and quantum noise. Findings add or take density where they do on real films.
 *
 * Every parameter comes from a Philox stream named by (seed, what, index). Each finding draws its
 * own parameters whether or not it is present, so an index rendered with and without a finding
 * differs by that finding alone (the tests compare exactly that).
 *
 * Cohorts: a sequential plan (patients, studies, file variants, findings, labels) is made from the
 * seed, then images are rendered and written in parallel, each from its own streams, so the bytes
 * do not depend on the thread count. */
#include "medtrain/synth.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/dicom.h"
#include "medtrain/fs.h"
#include "medtrain/mem.h"
#include "medtrain/progress.h"
#include "medtrain/rng.h"

const char *const mt_synth_findings[MT_SYNTH_N_FINDINGS] = {
    "Effusion", "Pneumothorax", "Cardiomegaly", "Consolidation", "Edema", "Nodule"};

const char *const mt_synth_structures[MT_SYNTH_N_STRUCTURES] = {"right_lung", "left_lung", "heart"};

enum { F_EFFUSION, F_PNEUMOTHORAX, F_CARDIOMEGALY, F_CONSOLIDATION, F_EDEMA, F_NODULE };

/* Philox stream names: what the numbers are for. */
enum {
    S_ANATOMY = 0x5e0001,
    S_VESSELS,
    S_FINDING = 0x5e0010, /* + finding index */
    S_PLAN_PATIENT = 0x5e0020,
    S_PLAN_IMAGE,
    S_PLAN_FINDINGS,
    S_PLAN_FORCE,
    S_PLAN_SYNTAX,
    S_UID_STUDY,
    S_UID_SERIES,
    S_UID_SOP,
};

/* ---- small helpers --------------------------------------------------------------------------- */

static inline float clampf(float x, float lo, float hi) {
    return x < lo ? lo : x > hi ? hi : x;
}
/* 0 below e0, 1 above e1, smooth between (e0 > e1 gives the falling edge). */
static inline float smooth(float e0, float e1, float x) {
    float t = clampf((x - e0) / (e1 - e0), 0.0f, 1.0f);
    return t * t * (3.0f - 2.0f * t);
}
static inline float sq(float x) {
    return x * x;
}
static float urange(mt_rng *r, float lo, float hi) {
    return lo + (hi - lo) * mt_rng_uniform(r);
}

/* Integer hash (the murmur3 finalizer, chained) for textures and per-pixel noise: far cheaper
 * than a Philox block per pixel, and as deterministic. */
static inline uint32_t fmix(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}
static inline uint32_t hash3(uint32_t a, uint32_t b, uint32_t c) {
    return fmix(a ^ fmix(b ^ fmix(c + 0x9e3779b9u)));
}

/* Value noise in [0,1): a lattice of hashed values with spacing 1/freq, smoothly interpolated. */
static float vnoise(float x, float y, float freq, uint32_t key) {
    float fx = x * freq + 4096.0f, fy = y * freq + 4096.0f; /* positive for the integer part */
    int ix = (int)fx, iy = (int)fy;
    float tx = fx - (float)ix, ty = fy - (float)iy;
    tx = tx * tx * (3 - 2 * tx), ty = ty * ty * (3 - 2 * ty);
    float v00 = (float)(hash3((uint32_t)ix, (uint32_t)iy, key) >> 8) * 0x1.0p-24f;
    float v10 = (float)(hash3((uint32_t)ix + 1, (uint32_t)iy, key) >> 8) * 0x1.0p-24f;
    float v01 = (float)(hash3((uint32_t)ix, (uint32_t)iy + 1, key) >> 8) * 0x1.0p-24f;
    float v11 = (float)(hash3((uint32_t)ix + 1, (uint32_t)iy + 1, key) >> 8) * 0x1.0p-24f;
    return (v00 * (1 - tx) + v10 * tx) * (1 - ty) + (v01 * (1 - tx) + v11 * tx) * ty;
}

/* About N(0,1) per pixel: the sum of a hash's four bytes (Irwin-Hall), centred and scaled. */
static inline float pixel_gauss(int x, int y, uint32_t key) {
    uint32_t h = hash3((uint32_t)x, (uint32_t)y, key);
    int s = (int)(h & 255) + (int)(h >> 8 & 255) + (int)(h >> 16 & 255) + (int)(h >> 24);
    return (float)(s - 510) * (1.0f / 147.8f);
}

/* ---- geometry -------------------------------------------------------------------------------- */

/* One lung: a superellipse (round apex, square base, slightly wider below) cut by the diaphragm
 * dome below and the mediastinum medially. side is -1 for the image's left (the patient's right
 * on a PA film) and +1 for the image's right. */
typedef struct lung_geom {
    float side;
    float cx, cy, a, bt, bb;                  /* centre, half-width, half-heights above / below */
    float dome_top, dome_cx, dome_hw, dome_h; /* diaphragm: Y = top + h ((side X - cx) / hw)^2 */
    float lat;                                /* the lung's most lateral |X| */
} lung_geom;

typedef struct heart_geom {
    float x, y, a, b, c, s; /* ellipse centre, semi-axes, cos and sin of the long axis' tilt */
} heart_geom;

typedef struct segment {
    float x0, y0, x1, y1, r0, r1, amp; /* a tapered line: vessel, Kerley line, air bronchogram */
} segment;

typedef struct seglist {
    segment *s;
    int n, cap;
} seglist;

/* Everything one render needs. Lengths are in chest units. */
typedef struct film {
    int h, w;
    float m[6];       /* pixel (x, y) -> chest (m0 x + m1 y + m2, m3 x + m4 y + m5) */
    float inv[6];     /* chest -> pixel */
    float px, edge;   /* a pixel, and the half-width of soft edges */
    uint32_t key;     /* texture and noise hash key */
    const uint8_t *f; /* findings present */

    lung_geom lung[2];
    heart_geom heart;
    float heart_tilt, heart_k;
    float med_hw, knob_y, knob_r; /* mediastinum half-width, aortic knob */
    float hilum_x, hilum_y, carina_y;
    float body_hw, shoulder_y, clav_y;
    float rib_y0, rib_sp, rib_ht, rib_amp, rib_lat;
    float bubble;     /* gastric bubble: 0 = none, else its density */
    float gas[16][4]; /* bowel gas: centre and semi-axes */
    int n_gas;
    float mu, lo, hi, gamma, noise; /* exposure and noise */
    float wave[3][4];               /* low-frequency shading: kx, ky, phase, amplitude */

    /* findings (drawn always, used when present) */
    int eff_sides;                /* bit 0: lung 0, bit 1: lung 1 */
    float eff_top[2], eff_menisc; /* fluid level at the lateral wall, meniscus depth medially */
    int ptx_side;
    float ptx_gap;
    int cons_side;
    float cons_x, cons_y, cons_sx, cons_sy;
    float edema_amp;
    int nod_side;
    float nod_x, nod_y, nod_r, nod_amp, nod_phase;

    seglist vessels, bronchi; /* drawn into buffers before the per-pixel pass */
} film;

/* Approximate signed distance to the lung's superellipse outline (negative inside), without the
 * diaphragm and mediastinum cuts: the level f (1 on the outline) over its gradient. */
static float lung_sd(const lung_geom *g, float X, float Y) {
    float b = Y < g->cy ? g->bt : g->bb;
    float ly = (Y - g->cy) / b;
    float aw = g->a * (0.86f + 0.14f * clampf(ly, -1.0f, 1.0f));
    float ax = fabsf(g->side * (X - g->cx)) / aw, ay = fabsf(ly);
    float sx = sqrtf(ax), fx = ax * ax * sx;
    float fy = ly < 0 ? ay * ay : sq(ay * ay);
    float f = fx + fy;
    float gx = 2.5f * ax * sx / aw, gy = (ly < 0 ? 2 * ay : 4 * ay * ay * ay) / b;
    return (f - 1.0f) / fmaxf(sqrtf(gx * gx + gy * gy), 1.0f);
}

static inline float dome_y(const lung_geom *g, float X) {
    float u = (g->side * X - g->dome_cx) / g->dome_hw;
    return g->dome_top + g->dome_h * u * u * (u > 0 ? 1.0f : 0.35f); /* deep laterally */
}

/* The diaphragm under either lung, blended across the midline. */
static inline float diaphragm_y(const film *fm, float X) {
    float t = smooth(-0.06f, 0.06f, X);
    return (1 - t) * dome_y(&fm->lung[0], X) + t * dome_y(&fm->lung[1], X);
}

/* Medial edge of lung `side` at height Y: the mediastinum, with the aortic knob on the left. */
static inline float medial_x(const film *fm, const lung_geom *g, float Y) {
    float m = fm->med_hw + 0.15f * fmaxf(0.0f, Y - fm->carina_y) * (g->side > 0 ? 1.0f : 0.6f);
    if (g->side > 0) m += fm->knob_r * expf(-sq((Y - fm->knob_y) / 0.035f));
    return m;
}

static inline float heart_q(const heart_geom *hg, float X, float Y) {
    float dx = X - hg->x, dy = Y - hg->y;
    float u = (dx * hg->c + dy * hg->s) / hg->a, v = (-dx * hg->s + dy * hg->c) / hg->b;
    return u * u + v * v;
}

/* The lung's most lateral |X|, scanning the outline from apex to base above the diaphragm. */
static float lung_lateral(const lung_geom *g) {
    float best = 0;
    for (int i = 0; i <= 64; i++) {
        float ly = -1.0f + 1.9f * (float)i / 64;
        float aw = g->a * (0.86f + 0.14f * ly);
        float fy = ly < 0 ? ly * ly : sq(ly * ly);
        float x = fabsf(g->cx) + aw * powf(fmaxf(0.0f, 1 - fy), 0.4f);
        float y = g->cy + ly * (ly < 0 ? g->bt : g->bb);
        if (y < dome_y(g, g->side * x) && x > best) best = x;
    }
    return best;
}

/* ---- segments (vessels, Kerley lines, air bronchograms) ------------------------------------ */

static void seg_push(seglist *L, float x0, float y0, float x1, float y1, float r0, float r1,
                     float amp) {
    if (L->n < L->cap) L->s[L->n++] = (segment){x0, y0, x1, y1, r0, r1, amp};
}

/* A vessel tree from the hilum: each branch splits in two, shorter and thinner, until the
 * vessels are capillary-thin or leave the lung. */
static void grow_vessels(seglist *L, mt_rng *r, const lung_geom *g, float x, float y, float ang,
                         float len, float rad, float amp, int depth) {
    if (depth > 5 || rad < 0.002f) return;
    float x1 = x + len * cosf(ang), y1 = y + len * sinf(ang);
    if (lung_sd(g, x1, y1) > -0.004f) return;
    seg_push(L, x, y, x1, y1, rad, rad * 0.85f, amp);
    float spread = urange(r, 0.28f, 0.55f), tilt = urange(r, -0.15f, 0.15f);
    float shrink = urange(r, 0.68f, 0.82f);
    float s1 = urange(r, 0.5f, 1.0f), s2 = urange(r, 0.5f, 1.0f), shrink2 = urange(r, 0.68f, 0.82f);
    grow_vessels(L, r, g, x1, y1, ang + tilt - spread * s1, len * shrink, rad * 0.74f, amp * 0.78f,
                 depth + 1);
    grow_vessels(L, r, g, x1, y1, ang + tilt + spread * s2, len * shrink2, rad * 0.74f, amp * 0.78f,
                 depth + 1);
}

static inline void to_chest(const film *fm, float x, float y, float *X, float *Y) {
    *X = fm->m[0] * x + fm->m[1] * y + fm->m[2];
    *Y = fm->m[3] * x + fm->m[4] * y + fm->m[5];
}

/* Rasterises segments into buf (h*w), keeping the strongest value per pixel (max for positive
 * amplitudes, min for negative), so that branches meeting at a joint do not double. A line
 * thinner than a pixel is drawn a pixel wide and proportionally fainter rather than aliased. */
static void draw_segments(const film *fm, const seglist *L, float *buf) {
    for (int k = 0; k < L->n; k++) {
        const segment *s = &L->s[k];
        float rmax = fmaxf(fmaxf(s->r0, s->r1), 0.7f * fm->px); /* the bump's full radius */
        float px0 = fm->inv[0] * s->x0 + fm->inv[1] * s->y0 + fm->inv[2];
        float py0 = fm->inv[3] * s->x0 + fm->inv[4] * s->y0 + fm->inv[5];
        float px1 = fm->inv[0] * s->x1 + fm->inv[1] * s->y1 + fm->inv[2];
        float py1 = fm->inv[3] * s->x1 + fm->inv[4] * s->y1 + fm->inv[5];
        float pad = rmax / fm->px + 2;
        int xa = (int)floorf(fminf(px0, px1) - pad), xb = (int)ceilf(fmaxf(px0, px1) + pad);
        int ya = (int)floorf(fminf(py0, py1) - pad), yb = (int)ceilf(fmaxf(py0, py1) + pad);
        if (xa < 0) xa = 0;
        if (ya < 0) ya = 0;
        if (xb > fm->w - 1) xb = fm->w - 1;
        if (yb > fm->h - 1) yb = fm->h - 1;
        float dx = s->x1 - s->x0, dy = s->y1 - s->y0, len2 = fmaxf(dx * dx + dy * dy, 1e-12f);
        for (int y = ya; y <= yb; y++) {
            for (int x = xa; x <= xb; x++) {
                float X, Y;
                to_chest(fm, (float)x + 0.5f, (float)y + 0.5f, &X, &Y);
                float t = clampf(((X - s->x0) * dx + (Y - s->y0) * dy) / len2, 0.0f, 1.0f);
                float d2 = sq(X - s->x0 - t * dx) + sq(Y - s->y0 - t * dy);
                float r = s->r0 + t * (s->r1 - s->r0), re = fmaxf(r, 0.7f * fm->px);
                if (d2 >= re * re) continue;
                float v = s->amp * (r / re) * sq(1 - d2 / (re * re));
                float *p = &buf[(size_t)y * (size_t)fm->w + (size_t)x];
                if (s->amp >= 0 ? v > *p : v < *p) *p = v;
            }
        }
    }
}

/* ---- drawing the parameters ----------------------------------------------------------------- */

static void setup_transform(film *fm, mt_rng *r) {
    int h = fm->h, w = fm->w;
    /* Chest units per pixel: the shorter side spans the chest; the longer side stretches it by at
     * most 1.2 and shows more of the body beyond. */
    float sx = fminf((float)w, 1.2f * (float)h), sy = fminf((float)h, 1.2f * (float)w);
    float scale = urange(r, 0.88f, 1.0f), rot = urange(r, -0.05f, 0.05f);
    float dx = urange(r, -0.03f, 0.03f), dy = urange(r, -0.03f, 0.03f);
    float c = cosf(rot), s = sinf(rot);
    /* centred (u, v) = ((x - w/2) / sx, (y - h/2) / sy); chest = R(-rot) ((u, v) - d) / scale */
    float a = 1 / (sx * scale), b = 1 / (sy * scale);
    fm->m[0] = c * a, fm->m[1] = s * b;
    fm->m[2] = (c * (-(float)w / 2 / sx - dx) + s * (-(float)h / 2 / sy - dy)) / scale;
    fm->m[3] = -s * a, fm->m[4] = c * b;
    fm->m[5] = (-s * (-(float)w / 2 / sx - dx) + c * (-(float)h / 2 / sy - dy)) / scale;
    float det = fm->m[0] * fm->m[4] - fm->m[1] * fm->m[3];
    fm->inv[0] = fm->m[4] / det, fm->inv[1] = -fm->m[1] / det;
    fm->inv[3] = -fm->m[3] / det, fm->inv[4] = fm->m[0] / det;
    fm->inv[2] = -(fm->inv[0] * fm->m[2] + fm->inv[1] * fm->m[5]);
    fm->inv[5] = -(fm->inv[3] * fm->m[2] + fm->inv[4] * fm->m[5]);
    fm->px = fmaxf(a, b);
    fm->edge = fmaxf(0.004f, 0.8f * fm->px);
}

/* Places the heart: an ellipse tilted down to the image's right (the apex is on the patient's
 * left), width ratio x the thoracic width with `shift` of that width right of the midline, its
 * widest point above the left dome and its base sunk into the diaphragm. */
static heart_geom place_heart(const film *fm, float ratio, float shift, float tilt, float k) {
    heart_geom hg;
    float thorax = fm->lung[0].lat + fm->lung[1].lat;
    float width = ratio * thorax, ext_x = width / 2;
    hg.c = cosf(tilt), hg.s = sinf(tilt);
    hg.a = ext_x / sqrtf(sq(hg.c) + sq(k * hg.s));
    hg.b = k * hg.a;
    float ext_y = sqrtf(sq(hg.a * hg.s) + sq(hg.b * hg.c));
    hg.x = width * shift;
    hg.y = fm->lung[1].dome_top + 0.06f - ext_y;
    return hg;
}

static void setup_anatomy(film *fm, mt_rng *r) {
    float cy = urange(r, -0.06f, -0.02f);
    float bt = urange(r, 0.36f, 0.41f), dome_lift = urange(r, 0.58f, 0.7f);
    float dome_h = urange(r, 0.06f, 0.09f), a = urange(r, 0.19f, 0.215f);
    for (int k = 0; k < 2; k++) {
        lung_geom *g = &fm->lung[k];
        g->side = k == 0 ? -1.0f : 1.0f;
        g->a = a * urange(r, 0.96f, 1.04f);
        g->cx = g->side * (urange(r, 0.02f, 0.035f) + g->a);
        g->cy = cy + urange(r, -0.01f, 0.01f);
        g->bt = bt * urange(r, 0.97f, 1.03f);
        g->bb = 0.38f;
        /* The right hemidiaphragm (image left) sits higher than the left. */
        g->dome_top = g->cy + g->bb * dome_lift + (k == 1 ? urange(r, 0.015f, 0.04f) : 0.0f);
        g->dome_cx = fabsf(g->cx) - urange(r, 0.0f, 0.03f);
        g->dome_hw = g->a * urange(r, 0.95f, 1.1f);
        g->dome_h = dome_h * urange(r, 0.9f, 1.1f);
    }
    for (int k = 0; k < 2; k++) fm->lung[k].lat = lung_lateral(&fm->lung[k]);
    float lat = fmaxf(fm->lung[0].lat, fm->lung[1].lat);
    fm->med_hw = urange(r, 0.04f, 0.055f);
    fm->hilum_x = urange(r, 0.085f, 0.105f);
    fm->hilum_y = cy - urange(r, 0.03f, 0.06f);
    fm->carina_y = fm->hilum_y - urange(r, 0.06f, 0.09f);
    fm->knob_y = fm->hilum_y - urange(r, 0.1f, 0.13f);
    fm->knob_r = urange(r, 0.015f, 0.03f);
    fm->body_hw = lat + urange(r, 0.04f, 0.07f);
    fm->shoulder_y = fm->lung[0].cy - fm->lung[0].bt - urange(r, 0.03f, 0.06f);
    fm->clav_y = fm->lung[0].cy - fm->lung[0].bt + urange(r, 0.03f, 0.06f);
    fm->rib_y0 = fminf(fm->lung[0].cy - fm->lung[0].bt, fm->lung[1].cy - fm->lung[1].bt) + 0.01f;
    fm->rib_sp = (fm->lung[0].dome_top + fm->lung[0].dome_h - fm->rib_y0) / urange(r, 8.5f, 9.5f);
    fm->rib_ht = fm->rib_sp * urange(r, 0.32f, 0.38f);
    fm->rib_amp = urange(r, 0.04f, 0.065f);
    fm->rib_lat = lat + 0.015f;
    fm->bubble = mt_rng_uniform(r) < 0.7f ? urange(r, 0.08f, 0.2f) : 0.0f;
    fm->n_gas = 4 + (int)mt_rng_below(r, 13);
    float gas_top = fmaxf(fm->lung[0].dome_top, fm->lung[1].dome_top) + 0.15f;
    for (int k = 0; k < fm->n_gas; k++) {
        fm->gas[k][0] = urange(r, -0.35f, 0.35f);
        fm->gas[k][1] = gas_top + urange(r, 0.0f, 0.5f);
        fm->gas[k][2] = urange(r, 0.015f, 0.05f);
        fm->gas[k][3] = fm->gas[k][2] * urange(r, 0.6f, 1.2f);
    }
    fm->mu = urange(r, 1.6f, 2.2f);
    fm->lo = urange(r, 0.0f, 0.08f);
    fm->hi = urange(r, 0.9f, 1.0f);
    fm->gamma = urange(r, 0.8f, 1.25f);
    fm->noise = urange(r, 0.006f, 0.018f);
    for (int k = 0; k < 3; k++) {
        float ang = urange(r, 0, 6.2831853f), wl = urange(r, 0.4f, 1.2f);
        fm->wave[k][0] = 6.2831853f / wl * cosf(ang);
        fm->wave[k][1] = 6.2831853f / wl * sinf(ang);
        fm->wave[k][2] = urange(r, 0, 6.2831853f);
        fm->wave[k][3] = urange(r, 0.01f, 0.035f);
    }
    fm->heart_tilt = urange(r, 0.35f, 0.55f);
    fm->heart_k = urange(r, 0.66f, 0.76f);
    float ratio = urange(r, 0.37f, 0.47f), shift = urange(r, 0.14f, 0.19f);
    fm->heart = place_heart(fm, ratio, shift, fm->heart_tilt, fm->heart_k);
    fm->key = mt_rng_u32(r);
}

/* A point well inside lung `side`, off the heart and above the dome (rejection sampling). */
static void lung_point(const film *fm, const heart_geom *keep_out, mt_rng *r, int side, float depth,
                       float *x, float *y) {
    const lung_geom *g = &fm->lung[side];
    for (int tries = 0; tries < 64; tries++) {
        float X = g->cx + g->side * g->a * urange(r, -0.8f, 0.8f);
        float Y = g->cy + urange(r, -0.8f * g->bt, 0.5f * g->bb);
        if (lung_sd(g, X, Y) > -depth) continue;
        if (Y > dome_y(g, X) - depth || g->side * X < medial_x(fm, g, Y) + depth) continue;
        if (heart_q(keep_out, X, Y) < 1.3f) continue;
        *x = X, *y = Y;
        return;
    }
    *x = g->cx + g->side * 0.2f * g->a, *y = g->cy - 0.3f * g->bt; /* upper zone: always lung */
}

static void setup_findings(film *fm, uint64_t seed, int64_t index) {
    mt_rng r;
    /* Effusion: one side or both, filling 25-42% of the lung's height from the base. */
    mt_rng_init(&r, seed, S_FINDING + F_EFFUSION, (uint64_t)index);
    uint32_t which = mt_rng_below(&r, 10);
    fm->eff_sides = which < 4 ? 1 : which < 7 ? 2 : 3;
    for (int k = 0; k < 2; k++) {
        const lung_geom *g = &fm->lung[k];
        float cp = g->dome_top + g->dome_h, apex = g->cy - g->bt;
        fm->eff_top[k] = cp - urange(&r, 0.25f, 0.42f) * (cp - apex);
    }
    fm->eff_menisc = urange(&r, 0.06f, 0.1f);

    /* Pneumothorax: one side, a lucent rim 3.5-8% of the chest wide over the apex and lateral
     * wall. */
    mt_rng_init(&r, seed, S_FINDING + F_PNEUMOTHORAX, (uint64_t)index);
    fm->ptx_side = (int)mt_rng_below(&r, 2);
    fm->ptx_gap = urange(&r, 0.035f, 0.08f);

    /* Cardiomegaly: heart 57-68% of the thoracic width. */
    mt_rng_init(&r, seed, S_FINDING + F_CARDIOMEGALY, (uint64_t)index);
    float big = urange(&r, 0.58f, 0.68f), shift = urange(&r, 0.19f, 0.24f);
    /* Lesions are placed off the enlarged heart whether or not it is drawn, so that they stay put
     * when cardiomegaly is switched on. */
    heart_geom enlarged = place_heart(fm, big, shift, fm->heart_tilt, fm->heart_k);
    if (fm->f[F_CARDIOMEGALY]) fm->heart = enlarged;

    /* Consolidation: a dense lobar patch with air bronchograms. */
    mt_rng_init(&r, seed, S_FINDING + F_CONSOLIDATION, (uint64_t)index);
    fm->cons_side = (int)mt_rng_below(&r, 2);
    lung_point(fm, &enlarged, &r, fm->cons_side, 0.05f, &fm->cons_x, &fm->cons_y);
    fm->cons_sx = urange(&r, 0.06f, 0.09f);
    fm->cons_sy = urange(&r, 0.055f, 0.085f);
    {
        /* Bronchi from the patch's hilar side, branching outwards. */
        float side = fm->lung[fm->cons_side].side;
        float ang0 = atan2f(fm->cons_y - fm->hilum_y, fm->cons_x - side * fm->hilum_x);
        float x = fm->cons_x - 0.8f * fm->cons_sx * cosf(ang0);
        float y = fm->cons_y - 0.8f * fm->cons_sy * sinf(ang0);
        for (int t = 0; t < 3; t++) {
            float ang = ang0 + urange(&r, -0.5f, 0.5f), len = urange(&r, 0.04f, 0.06f);
            float x1 = x + len * cosf(ang), y1 = y + len * sinf(ang);
            seg_push(&fm->bronchi, x, y, x1, y1, 0.0045f, 0.0035f, -0.14f);
            for (int u = 0; u < 2; u++) {
                float a2 = ang + (u ? 1.0f : -1.0f) * urange(&r, 0.3f, 0.6f);
                float l2 = urange(&r, 0.025f, 0.045f);
                seg_push(&fm->bronchi, x1, y1, x1 + l2 * cosf(a2), y1 + l2 * sinf(a2), 0.0033f,
                         0.0022f, -0.12f);
            }
        }
    }

    /* Edema: bilateral perihilar haze and Kerley B lines at the lateral bases. */
    mt_rng_init(&r, seed, S_FINDING + F_EDEMA, (uint64_t)index);
    fm->edema_amp = urange(&r, 0.2f, 0.3f);
    for (int k = 0; k < 2; k++) {
        const lung_geom *g = &fm->lung[k];
        int n = 5 + (int)mt_rng_below(&r, 6);
        for (int i = 0; i < n; i++) {
            float Y = g->dome_top - urange(&r, 0.0f, 0.14f);
            float ly = (Y - g->cy) / (Y < g->cy ? g->bt : g->bb);
            float aw = g->a * (0.86f + 0.14f * ly);
            float fy = ly < 0 ? ly * ly : sq(ly * ly);
            float X = g->cx + g->side * aw * powf(fmaxf(0.0f, 1 - fy), 0.4f);
            float len = urange(&r, 0.015f, 0.035f), tilt = urange(&r, -0.004f, 0.004f);
            if (fm->f[F_EDEMA])
                seg_push(&fm->vessels, X, Y, X - g->side * len, Y + tilt, 0.0016f, 0.0014f, 0.12f);
        }
    }

    /* Nodule: a round opacity 4-6% of the thoracic width across, anywhere in either lung. */
    mt_rng_init(&r, seed, S_FINDING + F_NODULE, (uint64_t)index);
    fm->nod_side = (int)mt_rng_below(&r, 2);
    lung_point(fm, &enlarged, &r, fm->nod_side, 0.04f, &fm->nod_x, &fm->nod_y);
    fm->nod_r = urange(&r, 0.019f, 0.028f);
    fm->nod_amp = urange(&r, 0.36f, 0.46f);
    fm->nod_phase = urange(&r, 0, 6.2831853f);
}

static void setup_vessels(film *fm, uint64_t seed, int64_t index) {
    mt_rng r;
    mt_rng_init(&r, seed, S_VESSELS, (uint64_t)index);
    /* Trunks leave each hilum up, out, down-and-out and down; upper-lobe vessels are smaller on
     * an upright film (and, with edema, larger: "cephalisation"). */
    static const float trunk_angle[4] = {-1.15f, -0.35f, 0.35f, 1.05f};
    for (int k = 0; k < 2; k++) {
        const lung_geom *g = &fm->lung[k];
        for (int t = 0; t < 4; t++) {
            float a = trunk_angle[t] + urange(&r, -0.15f, 0.15f);
            float ang = g->side > 0 ? a : 3.14159265f - a;
            bool upper = t == 0;
            float amp = urange(&r, 0.08f, 0.11f) * (upper ? (fm->f[F_EDEMA] ? 1.3f : 0.8f) : 1.0f);
            float x0 = g->side * fm->hilum_x, y0 = fm->hilum_y + urange(&r, -0.01f, 0.01f);
            float len = urange(&r, 0.07f, 0.1f), rad = urange(&r, 0.012f, 0.016f);
            grow_vessels(&fm->vessels, &r, g, x0, y0, ang, len, rad, amp, 0);
        }
    }
}

/* ---- the per-pixel pass ---------------------------------------------------------------------- */

typedef struct lung_here {
    float m;     /* anatomical lung membership (0..1) */
    float hemi;  /* hemithorax without the diaphragm cut (where effusion collects) */
    float sd;    /* signed distance to the lung outline */
    float depth; /* relative air thickness */
} lung_here;

static void lung_at(const film *fm, int k, float X, float Y, lung_here *o) {
    const lung_geom *g = &fm->lung[k];
    float e = fm->edge;
    o->sd = lung_sd(g, X, Y);
    float sd_med = medial_x(fm, g, Y) - g->side * X;
    float sd_dia = Y - dome_y(g, X);
    float hemi_sd = fmaxf(o->sd, sd_med);
    o->hemi = smooth(e, -e, hemi_sd);
    o->m = smooth(e, -e, fmaxf(hemi_sd, sd_dia));
    o->depth = 0.5f + 0.5f * smooth(0.0f, 0.06f, -fmaxf(o->sd, 0.7f * sd_dia));
}

/* Pneumothorax geometry at a point of lung `side`: *line is the visceral pleural line's
 * brightness, and the return value how much the point lies in the lucent rim. */
static float ptx_at(const film *fm, float X, float Y, float sd, float *line) {
    const lung_geom *g = &fm->lung[fm->ptx_side];
    float ux = g->side * (X - g->cx) / g->a, uy = (Y - g->cy) / g->bt;
    float n = sqrtf(ux * ux + uy * uy) + 1e-6f;
    float wdir = smooth(0.0f, 1.0f, 0.35f + 0.8f * ux / n - 0.9f * uy / n);
    float at = -fm->ptx_gap * wdir;
    *line = wdir > 0.15f ? expf(-sq((sd - at) / 0.0025f)) : 0.0f;
    return wdir > 0 ? smooth(at - 0.5f * fm->edge, at + 0.5f * fm->edge, sd) : 0.0f;
}

/* Ribs: posterior ribs arch out from the spine and fall at the lateral wall; anterior ribs run
 * from there down and in, fainter. Both are uniformly spaced copies of one curve, so the nearest
 * rib is found by rounding rather than by searching. A rib is a band with denser cortical edges. */
static float ribs_at(const film *fm, float X, float Y) {
    float d = fabsf(X);
    if (d < 0.02f || d > fm->rib_lat + 0.03f) return 0;
    float fade = smooth(0.02f, 0.05f, d) * smooth(fm->rib_lat + 0.03f, fm->rib_lat - 0.01f, d);
    float v = 0;
    float g = -0.5f * d + 2.2f * d * d * d; /* posterior curve */
    float q = (Y - g - fm->rib_y0) / fm->rib_sp;
    float i = floorf(q + 0.5f);
    if (i >= 0 && i <= 11) {
        float t = fabsf(q - i) * fm->rib_sp / (fm->rib_ht * (1 + 0.03f * i));
        if (t < 1) v += fm->rib_amp * smooth(1.0f, 0.8f, t) * (0.7f + 0.4f * t * t);
    }
    float L = fm->rib_lat;
    float ga = -0.5f * L + 2.2f * L * L * L + 0.5f * (L - d); /* anterior, from the lateral end */
    q = (Y - ga - fm->rib_y0) / fm->rib_sp;
    i = floorf(q + 0.5f);
    if (i >= 0 && i <= 7 && d > 0.12f) {
        float t = fabsf(q - i) * fm->rib_sp / (1.25f * fm->rib_ht);
        if (t < 1) v += 0.4f * fm->rib_amp * smooth(1.0f, 0.7f, t) * smooth(0.12f, 0.2f, d);
    }
    return v * fade;
}

/* Soft tissue and bones of the body outside the lungs: torso widening into the shoulders, neck,
 * spine, clavicles, humeral heads. Returns density; *torso gets the torso's membership. */
static float body_at(const film *fm, float X, float Y, float *torso) {
    float e = fm->edge, ax = fabsf(X), sy = fm->shoulder_y;
    float bh = fm->body_hw + 0.07f * smooth(sy + 0.25f, sy + 0.02f, Y); /* shoulders */
    float top = sy + 0.13f * sq(ax / (bh + 0.04f)) * sq(sq(ax / (bh + 0.04f)));
    float t_m = smooth(e, -e, ax - bh) * smooth(-e, e, Y - top);
    float t_th = sqrtf(fmaxf(0.0f, 1 - sq(X / (bh + 0.02f))));
    /* the neck, fading out above the shoulders where the film is collimated */
    float n_m =
        smooth(e, -e, ax - 0.09f) * smooth(e, -e, Y - sy - 0.05f) * smooth(sy - 0.2f, sy - 0.1f, Y);
    float n_th = sqrtf(fmaxf(0.0f, 1 - sq(X / 0.09f)));
    float D = fmaxf(0.6f * t_m * (0.3f + 0.7f * t_th), 0.45f * n_m * n_th);
    *torso = t_m;
    /* spine: vertebral bodies with disc spaces, faint through the mediastinum */
    float sp = fmaxf(0.0f, 1 - sq(X / 0.034f));
    if (sp > 0) {
        float disc = 0.75f + 0.25f * smooth(0.2f, 0.6f, fabsf(sinf(Y * 60.0f)));
        D += 0.1f * sqrtf(sp) * disc * smooth(-0.05f, 0.0f, Y - sy);
    }
    /* clavicles: from the sternal end up and out to the shoulder, gently S-shaped */
    if (ax > 0.025f && ax < 0.36f && Y < fm->clav_y + 0.06f && Y > fm->clav_y - 0.14f) {
        float u = (ax - 0.025f) / 0.33f;
        float yc = fm->clav_y - 0.075f * u - 0.012f * sinf(6.2831853f * u);
        float t = fabsf(Y - yc) / (0.012f + 0.006f * sq(1 - u));
        if (t < 1)
            D += 0.17f * smooth(1.0f, 0.75f, t) * (0.8f + 0.2f * t) * smooth(0.025f, 0.05f, ax) *
                 smooth(0.36f, 0.33f, ax);
    }
    /* humeral heads */
    float hq = (sq(ax - fm->body_hw - 0.025f) + sq(Y - sy - 0.06f)) / sq(0.05f);
    if (hq < 1) D += 0.22f * sqrtf(1 - hq) * smooth(1.0f, 0.85f, hq);
    return D;
}

/* Density at a pixel, the mask class there (cls) and the structures it lies in (parts: bit s for
 * mt_synth_structures[s]; lung k is the patient's right lung for k = 0, the image's left). */
static float density_at(const film *fm, float X, float Y, const float *vessel, const float *bronch,
                        uint8_t *cls, uint8_t *parts) {
    const uint8_t *f = fm->f;
    float e = fm->edge, torso;
    float D = 0.03f + body_at(fm, X, Y, &torso);
    float dia = diaphragm_y(fm, X);
    /* liver and spleen below the domes, bowel gas lower down */
    if (Y > dia - e) {
        float low = smooth(dia + 0.08f, dia + 0.3f, Y);
        float gas = 0;
        for (int k = 0; k < fm->n_gas; k++) {
            const float *g = fm->gas[k];
            float q = sq((X - g[0]) / g[2]) + sq((Y - g[1]) / g[3]);
            if (q < 1) gas = fmaxf(gas, smooth(1.0f, 0.6f, q));
        }
        D += torso * (0.04f * smooth(-e, e, Y - dia) - 0.05f * low - 0.1f * gas * low);
    }

    /* heart */
    const heart_geom *hg = &fm->heart;
    float hq = heart_q(hg, X, Y), ee = 2 * e / hg->a;
    float heart = smooth(1 + ee, 1 - ee, hq) * smooth(e, -e, Y - dia - 0.01f);
    D += 0.12f * heart * sqrtf(fmaxf(0.0f, 1 - hq)) + 0.03f * heart;
    /* mediastinum (widening into the vascular pedicle) and hila */
    float med = medial_x(fm, &fm->lung[X > 0], Y);
    D += 0.1f * smooth(e, -e, fabsf(X) - med) * smooth(-0.05f, 0.0f, Y - fm->shoulder_y) *
         smooth(0.04f, -0.02f, Y - dia);
    for (int k = 0; k < 2; k++) {
        float hx = fm->lung[k].side * (fm->hilum_x + 0.005f);
        D += 0.09f * expf(-(sq(X - hx) + sq(Y - fm->hilum_y) * 0.5f) / sq(0.028f));
    }

    /* lungs: air takes density away, scaled by how much lung the ray crosses */
    float lung_any = 0, ptx_rim = 0, fluid_any = 0, lung_m[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        const lung_geom *g = &fm->lung[k];
        if (g->side * X < 0.0f || Y < g->cy - g->bt - 0.03f || Y > g->cy + g->bb + 0.03f) continue;
        lung_here L;
        lung_at(fm, k, X, Y, &L);
        if (L.hemi <= 0) continue;
        float air = L.m * L.depth * (1 - 0.75f * heart);
        if (f[F_EFFUSION] && (fm->eff_sides >> k & 1)) {
            float lat = clampf((g->side * X - fm->med_hw) / (g->lat - fm->med_hw), 0.0f, 1.0f);
            /* the meniscus: level medially, climbing the lateral chest wall */
            float top = fm->eff_top[k] + fm->eff_menisc * (1 - sq(lat * lat));
            float fluid = L.hemi * smooth(top - 0.012f, top + 0.02f, Y);
            /* fluid is as dense as the liver below: the dome's outline disappears */
            air *= 1 - fluid;
            D += 0.04f * fluid * smooth(e, -e, Y - dome_y(g, X));
            fluid_any = fmaxf(fluid_any, fluid);
        }
        if (f[F_PNEUMOTHORAX] && fm->ptx_side == k && L.m > 0) {
            float line;
            float rim = ptx_at(fm, X, Y, L.sd, &line) * L.m;
            air = air * (1 - rim) * (1 + 0.1f * (1 - rim)) + 1.15f * L.m * rim;
            D += 0.12f * line * L.m;
            ptx_rim = fmaxf(ptx_rim, rim);
        }
        if (f[F_CONSOLIDATION] && fm->cons_side == k && L.m > 0) {
            float G = expf(
                -0.5f * (sq((X - fm->cons_x) / fm->cons_sx) + sq((Y - fm->cons_y) / fm->cons_sy)));
            float c = L.m * smooth(0.2f, 0.6f, G + 0.35f * (vnoise(X, Y, 30, fm->key ^ 7) - 0.5f));
            air *= 1 - 0.85f * c * (0.8f + 0.4f * vnoise(X, Y, 60, fm->key ^ 9));
            D += 0.05f * c + (bronch ? c * *bronch : 0.0f);
        }
        D -= 0.42f * air;
        lung_any = fmaxf(lung_any, L.m);
        lung_m[k] = L.m;
    }
    if (lung_any > 0) {
        float keep = lung_any * (1 - ptx_rim) * (1 - fluid_any);
        D += keep * (*vessel + 0.03f * (vnoise(X, Y, 45, fm->key) - 0.5f) +
                     0.03f * (vnoise(X, Y, 12, fm->key ^ 11) - 0.5f));
        if (f[F_EDEMA]) {
            float haze = 0;
            for (int k = 0; k < 2; k++)
                haze += expf(-0.5f * (sq((X - fm->lung[k].side * 0.12f) / 0.11f) +
                                      sq((Y - fm->hilum_y - 0.02f) / 0.13f)));
            haze =
                fm->edema_amp * fminf(haze, 1.0f) * (0.75f + 0.5f * vnoise(X, Y, 18, fm->key ^ 3));
            D += keep * (haze + 0.05f);
        }
    }
    if (f[F_NODULE]) {
        float r2 = sq(X - fm->nod_x) + sq(Y - fm->nod_y), R = fm->nod_r;
        if (r2 < sq(1.2f * R)) {
            float ang = atan2f(Y - fm->nod_y, X - fm->nod_x);
            float Rl = R * (1 + 0.08f * cosf(3 * ang + fm->nod_phase));
            float q = r2 / sq(Rl);
            D += fm->nod_amp * sqrtf(fmaxf(0.0f, 1 - q)) * smooth(1.0f, 0.9f, q);
        }
    }

    /* airways: trachea down to the carina, main bronchi to the hila */
    if (fabsf(X) < 0.12f && Y < fm->hilum_y + 0.02f) {
        float tr = smooth(0.015f, 0.011f, fabsf(X)) * smooth(0.0f, -0.01f, Y - fm->carina_y);
        float br = 0;
        for (int k = 0; k < 2; k++) {
            float bx = fm->lung[k].side * fm->hilum_x, by = fm->hilum_y;
            float dx = bx, dy = by - fm->carina_y, len2 = dx * dx + dy * dy;
            float t = clampf((X * dx + (Y - fm->carina_y) * dy) / len2, 0.0f, 1.0f);
            float d = sqrtf(sq(X - t * dx) + sq(Y - fm->carina_y - t * dy));
            br = fmaxf(br, smooth(0.01f, 0.006f, d) * (1 - 0.5f * t));
        }
        D -= 0.12f * fmaxf(tr, br) * (1 - heart * 0.5f);
    }
    /* gastric bubble under the left dome */
    if (fm->bubble > 0) {
        const lung_geom *g = &fm->lung[1];
        /* gas under the dome over a flat fluid level */
        float bq = sq((X - g->dome_cx + 0.01f) / 0.065f) + sq((Y - g->dome_top - 0.03f) / 0.06f);
        D -= fm->bubble * smooth(1.0f, 0.8f, bq) * smooth(-e, e, Y - dome_y(g, X) - 0.012f) *
             smooth(e, -e, Y - g->dome_top - 0.07f);
    }
    D += ribs_at(fm, X, Y) * smooth(-0.02f, 0.0f, Y - fm->shoulder_y) * torso *
         (0.35f + 0.65f * smooth(0.05f, -0.01f, Y - dia));

    if (cls) {
        *cls = heart > 0.5f      ? MT_SYNTH_HEART
               : lung_any > 0.5f ? MT_SYNTH_LUNG
                                 : MT_SYNTH_BACKGROUND;
    }
    if (parts) {
        *parts = (uint8_t)((lung_m[0] > 0.5f) << MT_SYNTH_RIGHT_LUNG |
                           (lung_m[1] > 0.5f) << MT_SYNTH_LEFT_LUNG |
                           (heart > 0.5f) << MT_SYNTH_HEART_ML);
    }
    return D;
}

mt_status mt_synth_render(uint64_t seed, int64_t index, int h, int w,
                          const uint8_t findings[MT_SYNTH_N_FINDINGS], mt_image *img,
                          uint8_t *mask) {
    return mt_synth_render_structures(seed, index, h, w, findings, img, mask, NULL);
}

mt_status mt_synth_render_structures(uint64_t seed, int64_t index, int h, int w,
                                     const uint8_t findings[MT_SYNTH_N_FINDINGS], mt_image *img,
                                     uint8_t *mask, uint8_t *structures) {
    if (h < 16 || w < 16 || h > 16384 || w > 16384)
        return mt_fail(MT_ERR_ARG, "synth render: size %dx%d: expected 16..16384 on each side", h,
                       w);
    static const uint8_t none[MT_SYNTH_N_FINDINGS] = {0};
    film fm = {.h = h, .w = w, .f = findings ? findings : none};
    mt_rng r;
    mt_rng_init(&r, seed, S_ANATOMY, (uint64_t)index);
    setup_transform(&fm, &r);
    setup_anatomy(&fm, &r);

    size_t n = (size_t)h * (size_t)w;
    segment vseg[1400], bseg[16];
    fm.vessels = (seglist){vseg, 0, 1400};
    fm.bronchi = (seglist){bseg, 0, 16};
    setup_findings(&fm, seed, index);
    setup_vessels(&fm, seed, index);

    MT_TRY(mt_image_alloc(img, h, w));
    float *vessel = mt_calloc(n, sizeof(float), "synth vessel layer");
    float *bronch = fm.f[F_CONSOLIDATION] ? mt_calloc(n, sizeof(float), "synth bronchi") : NULL;
    if (!vessel || (fm.f[F_CONSOLIDATION] && !bronch)) {
        mt_free(vessel), mt_free(bronch);
        mt_image_free(img);
        return MT_ERR_NOMEM;
    }
    draw_segments(&fm, &fm.vessels, vessel);
    if (bronch) draw_segments(&fm, &fm.bronchi, bronch);

    float inv_range = 1 / (fm.hi - fm.lo);
    uint32_t noise_key = fm.key ^ 0x6e6f6973u;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            float X, Y;
            to_chest(&fm, (float)x + 0.5f, (float)y + 0.5f, &X, &Y);
            uint8_t parts = 0;
            float D = density_at(&fm, X, Y, &vessel[i], bronch ? &bronch[i] : NULL,
                                 mask ? &mask[i] : NULL, structures ? &parts : NULL);
            for (int s = 0; structures && s < MT_SYNTH_N_STRUCTURES; s++)
                structures[(size_t)s * n + i] = parts >> s & 1;
            for (int k = 0; k < 3; k++)
                D += fm.wave[k][3] * cosf(fm.wave[k][0] * X + fm.wave[k][1] * Y + fm.wave[k][2]);
            float v = (1 - expf(-fm.mu * fmaxf(D, 0.0f)) - fm.lo) * inv_range;
            v = powf(clampf(v, 0.0f, 1.0f), fm.gamma);
            v += fm.noise * pixel_gauss(x, y, noise_key);
            img->data[i] = clampf(v, 0.0f, 1.0f);
        }
    }
    mt_free(vessel);
    mt_free(bronch);
    return MT_OK;
}

/* ---- cohorts --------------------------------------------------------------------------------- */

enum { LABEL_BLANK = 2 };          /* a label cell left empty (unknown); -1 is uncertain */
#define SYNTH_DEFLATE_MAX 8000000u /* pixel bytes GDCM deflates without failing (see plan_file) */

/* One image of the plan: who, where, how its file is encoded, what it shows, what it says. */
typedef struct synth_item {
    int64_t index, patient;
    int study, series; /* 1-based within the patient, within the study */
    int study_days;    /* days since 1970-01-01 of the study */
    char sex;          /* 'F' or 'M' */
    int h, w, bits;    /* bits stored: 8, 12 or 16 (allocated 8 or 16) */
    bool mono1, rescale, window, dx, ap;
    double slope, intercept, fullscale, spacing;
    mt_dicom_syntax syntax;
    uint8_t findings[MT_SYNTH_N_FINDINGS];
    int8_t labels[MT_SYNTH_N_FINDINGS]; /* 1, 0, -1 or LABEL_BLANK */
    char rel[96];                       /* path under OUT/dicom */
} synth_item;

/* Findings and labels for one image. Each finding is drawn independently (edema more often with
 * cardiomegaly, as heart failure goes), and in every block of 10 consecutive images one image is
 * forced positive and another negative for each finding, shown and labelled, so that any cohort
 * of 10 or more images has both classes of every label. A few labels are left blank (unknown) or
 * -1 (uncertain) as in real label sets; the image still shows the truth. */
static void plan_findings(uint64_t seed, synth_item *it) {
    static const float prevalence[MT_SYNTH_N_FINDINGS] = {0.22f, 0.15f, 0.2f, 0.18f, 0.0f, 0.17f};
    mt_rng r, force;
    mt_rng_init(&r, seed, S_PLAN_FINDINGS, (uint64_t)it->index);
    int64_t block = it->index / 10, slot = it->index % 10;
    for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++) {
        /* (cardiomegaly, index 2, is settled before edema, index 4) */
        float p = f == F_EDEMA ? (it->findings[F_CARDIOMEGALY] ? 0.45f : 0.12f) : prevalence[f];
        bool present = mt_rng_uniform(&r) < p;
        float u = mt_rng_uniform(&r);
        mt_rng_init(&force, seed, S_PLAN_FORCE,
                    (uint64_t)block * MT_SYNTH_N_FINDINGS + (uint64_t)f);
        int64_t pos = mt_rng_below(&force, 10), neg = (pos + 1 + mt_rng_below(&force, 9)) % 10;
        bool forced = slot == pos || slot == neg;
        if (forced) present = slot == pos;
        it->findings[f] = present;
        it->labels[f] = (int8_t)(!forced && u < 0.03f   ? LABEL_BLANK
                                 : !forced && u < 0.05f ? -1
                                                        : present);
    }
}

/* How the file is encoded: size, bits, photometric, rescale, window, modality, view, spacing. */
static void plan_file(uint64_t seed, const mt_synth_opts *o, synth_item *it) {
    mt_rng r;
    mt_rng_init(&r, seed, S_PLAN_IMAGE, (uint64_t)it->index);
    if (o->h > 0) {
        it->h = o->h, it->w = o->w;
    } else {
        it->h = 1000 + (int)mt_rng_below(&r, 2001);
        it->w = 1000 + (int)mt_rng_below(&r, 2000);
        if (it->w >= it->h) it->w++; /* never square */
    }
    static const int bits[3] = {8, 12, 16};
    it->bits = it->syntax == MT_TS_JPEG_BASELINE ? 8 : bits[mt_rng_below(&r, 3)];
    if (o->bits && it->syntax != MT_TS_JPEG_BASELINE) it->bits = o->bits;
    it->fullscale = it->bits == 8 ? 1.0 : 0.6 + 0.4 * mt_rng_uniform_f64(&r);
    it->mono1 = mt_rng_uniform(&r) < 0.3f;
    it->rescale = mt_rng_uniform(&r) < 0.4f;
    static const double slopes[4] = {0.5, 1.0, 1.5, 2.0};
    it->slope = it->rescale ? slopes[mt_rng_below(&r, 4)] : 1.0;
    uint32_t ic = mt_rng_below(&r, 3);
    it->intercept = !it->rescale ? 0.0
                    : ic == 0    ? 0.0
                    : ic == 1    ? -1024.0
                                 : -(double)mt_rng_below(&r, 1025);
    it->window = mt_rng_uniform(&r) < 0.6f;
    it->dx = mt_rng_uniform(&r) < 0.6f;
    it->ap = mt_rng_uniform(&r) < 0.3f;
    /* GDCM 3.0's deflate writer aborts on pixel data over about 8 MiB: deflated films are kept
     * under 8 MB, smaller (varying sizes) or, at a fixed size, written explicit-LE instead. */
    size_t bytes = (size_t)it->h * (size_t)it->w * (it->bits == 8 ? 1 : 2);
    if (it->syntax == MT_TS_DEFLATE && bytes > SYNTH_DEFLATE_MAX) {
        if (o->h > 0) {
            it->syntax = MT_TS_EXPLICIT_LE;
        } else {
            double f = sqrt((double)SYNTH_DEFLATE_MAX / (double)bytes);
            it->h = (int)fmax(1000.0, floor(it->h * f));
            it->w = (int)fmax(1000.0, floor(it->w * f));
            if (it->w == it->h) it->w++;
        }
    }
    /* a field of view of 350-430 mm over the longer side */
    it->spacing = (350.0 + 80.0 * mt_rng_uniform_f64(&r)) / (double)(it->h > it->w ? it->h : it->w);
}

/* The whole cohort's plan, sequentially from the seed: patients with 1-3 studies of 1-2 images,
 * transfer syntaxes shuffled within each block of MT_TS_COUNT images (so any MT_TS_COUNT
 * consecutive-from-zero images use them all), then each image's file and findings. */
static mt_status plan_cohort(const mt_synth_opts *o, synth_item **out, int64_t *n_patients,
                             int64_t *n_studies) {
    int64_t n = o->n;
    synth_item *items = mt_calloc((size_t)n, sizeof *items, "synth plan");
    if (!items) return MT_ERR_NOMEM;
    int64_t i = 0, p = 0, studies = 0;
    while (i < n) {
        mt_rng r;
        mt_rng_init(&r, o->seed, S_PLAN_PATIENT, (uint64_t)p);
        int n_st = 1 + (int)mt_rng_below(&r, 3);
        char sex = mt_rng_below(&r, 2) ? 'M' : 'F';
        int days = 14610 + (int)mt_rng_below(&r, 4000); /* 2010-01-01 onwards */
        for (int s = 1; s <= n_st && i < n; s++, studies++) {
            int n_img = 1 + (int)mt_rng_below(&r, 2);
            for (int k = 1; k <= n_img && i < n; k++, i++) {
                synth_item *it = &items[i];
                it->index = i, it->patient = p, it->study = s, it->series = k;
                it->sex = sex, it->study_days = days;
                snprintf(it->rel, sizeof it->rel, "pat_%04lld/study_%d/img_%06lld.dcm",
                         (long long)p, s, (long long)i);
            }
            days += 30 + (int)mt_rng_below(&r, 700);
        }
        p++;
    }
    for (int64_t b = 0; b * MT_TS_COUNT < n; b++) {
        int64_t perm[MT_TS_COUNT];
        for (int k = 0; k < MT_TS_COUNT; k++) perm[k] = k;
        mt_rng r;
        mt_rng_init(&r, o->seed, S_PLAN_SYNTAX, (uint64_t)b);
        mt_rng_shuffle_i64(&r, perm, MT_TS_COUNT);
        for (int k = 0; k < MT_TS_COUNT && b * MT_TS_COUNT + k < n; k++)
            items[b * MT_TS_COUNT + k].syntax =
                o->fixed_syntax ? o->syntax : (mt_dicom_syntax)perm[k];
    }
    for (i = 0; i < n; i++) {
        plan_file(o->seed, o, &items[i]);
        plan_findings(o->seed, &items[i]);
    }
    *out = items, *n_patients = p, *n_studies = studies;
    return MT_OK;
}

/* "2.25." and a decimal below 2^128 from the stream (PS3.5 B.2), at most 44 characters. */
static void make_uid(uint64_t seed, uint64_t stream, uint64_t key, char out[64]) {
    mt_rng r;
    mt_rng_init(&r, seed, stream, key);
    uint64_t hi = mt_rng_u64(&r) >> 1 | 1, lo = mt_rng_u64(&r) % 10000000000000000000ull;
    snprintf(out, 64, "2.25.%llu%019llu", (unsigned long long)hi, (unsigned long long)lo);
}

/* Days since 1970-01-01 -> "YYYYMMDD" (Howard Hinnant's civil_from_days). */
static void format_date(int days, char out[32], int *year) {
    int z = days + 719468, era = z / 146097, doe = z - era * 146097;
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int y = yoe + era * 400 + (m <= 2);
    snprintf(out, 32, "%04d%02d%02d", y, m, d);
    *year = y;
}

/* The header of one file: everything but the image pixel module, which the writer fills in. Every
 * identifying value carries MT_SYNTH_PHI_MARK and differs per patient. */
typedef struct synth_header {
    char study_uid[64], series_uid[64], sop_uid[64];
    char date[32], time[32], age[16], name[48], id[32], accession[17], study_id[17];
    char institution[48], address[64], referring[40], performing[40], operator_[40], station[17];
    char private_value[48], series_no[12], instance_no[12];
    char spacing[48], center[24], width[24], slope[24], intercept[24];
    mt_dicom_tag tags[48];
    size_t n;
} synth_header;

static void add(synth_header *hd, uint16_t g, uint16_t e, const char *v) {
    hd->tags[hd->n++] = (mt_dicom_tag){g, e, v};
}

static void build_header(uint64_t seed, const synth_item *it, double wmin, double wmax,
                         double wscale, synth_header *hd) {
    static const char *const institutions[3] = {"QZPHI MEMORIAL HOSPITAL",
                                                "QZPHI GENERAL INFIRMARY", "QZPHI VALLEY CLINIC"};
    long long p = (long long)it->patient;
    char letter = (char)('A' + p % 26);
    make_uid(seed, S_UID_STUDY, (uint64_t)p * 8 + (uint64_t)it->study, hd->study_uid);
    make_uid(seed, S_UID_SERIES, (uint64_t)it->index, hd->series_uid);
    make_uid(seed, S_UID_SOP, (uint64_t)it->index, hd->sop_uid);
    int year;
    format_date(it->study_days, hd->date, &year);
    snprintf(hd->time, sizeof hd->time, "%02d%02d00", 8 + (int)(it->index % 10),
             (int)(it->index * 7 % 60));
    snprintf(hd->age, sizeof hd->age, "%03dY", year - 1923);
    snprintf(hd->name, sizeof hd->name, "QZPHI^PATIENT%04lld", p);
    snprintf(hd->id, sizeof hd->id, "QZPHI-ID-%04lld", p);
    snprintf(hd->accession, sizeof hd->accession, "QZPHI-A%04lld-%d", p, it->study);
    snprintf(hd->study_id, sizeof hd->study_id, "QZPHI%04lld-%d", p, it->study);
    snprintf(hd->institution, sizeof hd->institution, "%s", institutions[p % 3]);
    snprintf(hd->address, sizeof hd->address, "%lld QZPHI ROAD, QZPHIVILLE", 1 + p % 97);
    snprintf(hd->referring, sizeof hd->referring, "QZPHI^REFERRER^%c", letter);
    snprintf(hd->performing, sizeof hd->performing, "QZPHI^DOCTOR^%c", (char)('A' + it->study));
    snprintf(hd->operator_, sizeof hd->operator_, "QZPHI^TECH^%c", (char)('Z' - p % 26));
    snprintf(hd->station, sizeof hd->station, "QZPHI-XR%02lld", p % 7);
    snprintf(hd->private_value, sizeof hd->private_value, "QZPHI-PRIVATE-%04lld", p);
    snprintf(hd->series_no, sizeof hd->series_no, "%d", it->series);
    snprintf(hd->instance_no, sizeof hd->instance_no, "%d", 1);
    snprintf(hd->spacing, sizeof hd->spacing, "%.6f\\%.6f", it->spacing, it->spacing);

    hd->n = 0;
    add(hd, 0x0008, 0x0008, "ORIGINAL\\PRIMARY");
    add(hd, 0x0008, 0x0016,
        it->dx ? "1.2.840.10008.5.1.4.1.1.1.1" /* DX for presentation */
               : "1.2.840.10008.5.1.4.1.1.1"); /* CR */
    add(hd, 0x0008, 0x0018, hd->sop_uid);
    add(hd, 0x0008, 0x0020, hd->date);
    add(hd, 0x0008, 0x0030, hd->time);
    add(hd, 0x0008, 0x0050, hd->accession);
    add(hd, 0x0008, 0x0060, it->dx ? "DX" : "CR");
    add(hd, 0x0008, 0x0080, hd->institution);
    add(hd, 0x0008, 0x0081, hd->address);
    add(hd, 0x0008, 0x0090, hd->referring);
    add(hd, 0x0008, 0x1010, hd->station);
    add(hd, 0x0008, 0x1030, "CHEST XRAY");
    add(hd, 0x0008, 0x1050, hd->performing);
    add(hd, 0x0008, 0x1070, hd->operator_);
    add(hd, 0x0010, 0x0010, hd->name);
    add(hd, 0x0010, 0x0020, hd->id);
    add(hd, 0x0010, 0x0030, MT_SYNTH_PHI_BIRTH_DATE);
    add(hd, 0x0010, 0x0040, it->sex == 'F' ? "F" : "M");
    add(hd, 0x0010, 0x1010, hd->age);
    add(hd, 0x0018, 0x0015, "CHEST");
    add(hd, 0x0018, 0x5101, it->ap ? "AP" : "PA");
    add(hd, 0x0020, 0x000d, hd->study_uid);
    add(hd, 0x0020, 0x000e, hd->series_uid);
    add(hd, 0x0020, 0x0010, hd->study_id);
    add(hd, 0x0020, 0x0011, hd->series_no);
    add(hd, 0x0020, 0x0013, hd->instance_no);
    add(hd, 0x0020, 0x0020, "L\\F"); /* rows run to the patient's left, columns to the feet */
    add(hd, 0x0028, 0x0030, hd->spacing);
    if (it->window) {
        /* the data's range, a little wider, in modality units (after rescale) */
        double lo = wmin * it->slope + it->intercept, hi = wmax * it->slope + it->intercept;
        snprintf(hd->center, sizeof hd->center, "%.8g", (lo + hi) / 2);
        snprintf(hd->width, sizeof hd->width, "%.8g", fmax((hi - lo) * wscale, 2.0));
        add(hd, 0x0028, 0x1050, hd->center);
        add(hd, 0x0028, 0x1051, hd->width);
    }
    if (it->rescale) {
        snprintf(hd->intercept, sizeof hd->intercept, "%.8g", it->intercept);
        snprintf(hd->slope, sizeof hd->slope, "%.8g", it->slope);
        add(hd, 0x0028, 0x1052, hd->intercept);
        add(hd, 0x0028, 0x1053, hd->slope);
        add(hd, 0x0028, 0x1054, "US");
    }
    add(hd, 0x0029, 0x0010, "QZPHI PRIVATE");
    add(hd, 0x0029, 0x1010, hd->private_value);
}

/* Renders item it and writes its DICOM file and mask. */
static mt_status write_item(const mt_synth_opts *o, const synth_item *it) {
    char dir[4096], path[4096];
    snprintf(path, sizeof path, "%s/dicom/%s", o->out, it->rel);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    MT_TRY(mt_mkdir_p(dir));

    size_t n = (size_t)it->h * (size_t)it->w;
    mt_image img = {0};
    uint8_t *mask = mt_alloc(n, "synth mask");
    uint8_t *parts =
        o->multilabel_masks ? mt_alloc(n * MT_SYNTH_N_STRUCTURES, "synth parts") : NULL;
    if (!mask || (o->multilabel_masks && !parts)) {
        mt_free(mask), mt_free(parts);
        return MT_ERR_NOMEM;
    }
    mt_status st = mt_synth_render_structures(o->seed, it->index, it->h, it->w, it->findings, &img,
                                              mask, parts);
    if (st == MT_OK) {
        snprintf(path, sizeof path, "%s/masks/img_%06lld.png", o->out, (long long)it->index);
        st = mt_png_write_gray(path, mask, it->h, it->w, 8);
    }
    for (int s = 0; st == MT_OK && parts && s < MT_SYNTH_N_STRUCTURES; s++) {
        uint8_t *plane = parts + (size_t)s * n;
        for (size_t i = 0; i < n; i++) plane[i] = plane[i] ? 255 : 0; /* viewable: white inside */
        snprintf(path, sizeof path, "%s/masks_ml/%s/img_%06lld.png", o->out, mt_synth_structures[s],
                 (long long)it->index);
        st = mt_png_write_gray(path, plane, it->h, it->w, 8);
    }
    mt_free(mask);
    mt_free(parts);
    if (st != MT_OK) {
        mt_image_free(&img);
        return st;
    }

    /* Stored values: the film over the used part of the range, inverted for MONOCHROME1. */
    int top = (int)lround(((1 << it->bits) - 1) * it->fullscale);
    void *px = mt_alloc(n * (it->bits == 8 ? 1 : 2), "synth stored pixels");
    if (!px) {
        mt_image_free(&img);
        return MT_ERR_NOMEM;
    }
    int vmin = top, vmax = 0;
    for (size_t i = 0; i < n; i++) {
        int v = (int)lroundf(img.data[i] * (float)top);
        if (it->mono1) v = top - v;
        if (v < vmin) vmin = v;
        if (v > vmax) vmax = v;
        if (it->bits == 8)
            ((uint8_t *)px)[i] = (uint8_t)v;
        else
            ((uint16_t *)px)[i] = (uint16_t)v;
    }
    mt_image_free(&img);
    mt_rng r;
    mt_rng_init(&r, o->seed, S_PLAN_IMAGE + 0x100, (uint64_t)it->index);
    synth_header hd;
    build_header(o->seed, it, vmin, vmax, 1.0 + 0.08 * mt_rng_uniform_f64(&r), &hd);
    mt_dicom_write_spec spec = {
        .pixels = px,
        .rows = it->h,
        .cols = it->w,
        .bits_allocated = it->bits == 8 ? 8 : 16,
        .bits_stored = it->bits,
        .photometric = it->mono1 ? "MONOCHROME1" : "MONOCHROME2",
        .syntax = it->syntax,
        .tags = hd.tags,
        .n_tags = hd.n,
    };
    snprintf(path, sizeof path, "%s/dicom/%s", o->out, it->rel);
    st = mt_dicom_write(path, &spec);
    mt_free(px);
    return st;
}

static mt_status write_labels(const mt_synth_opts *o, const synth_item *items) {
    size_t cap = 96 + (size_t)o->n * 96, len = 0;
    char *csv = mt_alloc(cap, "labels.csv");
    if (!csv) return MT_ERR_NOMEM;
    len += (size_t)snprintf(csv + len, cap - len, "path");
    for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++)
        len += (size_t)snprintf(csv + len, cap - len, ",%s", mt_synth_findings[f]);
    len += (size_t)snprintf(csv + len, cap - len, "\n");
    for (int64_t i = 0; i < o->n; i++) {
        len += (size_t)snprintf(csv + len, cap - len, "%s", items[i].rel);
        for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++) {
            int v = items[i].labels[f];
            if (v == LABEL_BLANK)
                len += (size_t)snprintf(csv + len, cap - len, ",");
            else
                len += (size_t)snprintf(csv + len, cap - len, ",%d", v);
        }
        len += (size_t)snprintf(csv + len, cap - len, "\n");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.csv", o->out);
    mt_status st = mt_file_write_atomic(path, csv, len);
    mt_free(csv);
    return st;
}

static mt_status check_opts(const mt_synth_opts *o) {
    if (!o || !o->out || !o->out[0]) return mt_fail(MT_ERR_ARG, "synth: no output directory");
    if (strlen(o->out) > 3800)
        return mt_fail(MT_ERR_ARG, "synth: output directory name too long (%zu characters)",
                       strlen(o->out));
    if (o->n < 1 || o->n > 1000000)
        return mt_fail(MT_ERR_ARG, "synth: %lld images: expected 1..1000000", (long long)o->n);
    if ((o->h == 0) != (o->w == 0) ||
        (o->h != 0 && (o->h < 16 || o->w < 16 || o->h > 16384 || o->w > 16384)))
        return mt_fail(MT_ERR_ARG,
                       "synth: size %dx%d: expected 16..16384 on each side, or 0,0 for sizes "
                       "varying in 1000..3000",
                       o->h, o->w);
    if (o->threads < 0) return mt_fail(MT_ERR_ARG, "synth: %d threads", o->threads);
    return MT_OK;
}

mt_status mt_synth_cohort(const mt_synth_opts *opts, mt_synth_summary *summary) {
    MT_TRY(check_opts(opts));
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.csv", opts->out);
    if (mt_path_exists(path))
        return mt_fail(MT_ERR_ARG,
                       "%s already holds a cohort (labels.csv): choose a new directory or remove "
                       "it",
                       opts->out);
    snprintf(path, sizeof path, "%s/dicom", opts->out);
    MT_TRY(mt_mkdir_p(path));
    snprintf(path, sizeof path, "%s/masks", opts->out);
    MT_TRY(mt_mkdir_p(path));
    for (int s = 0; opts->multilabel_masks && s < MT_SYNTH_N_STRUCTURES; s++) {
        snprintf(path, sizeof path, "%s/masks_ml/%s", opts->out, mt_synth_structures[s]);
        MT_TRY(mt_mkdir_p(path));
    }

    synth_item *items;
    int64_t n_patients, n_studies;
    MT_TRY(plan_cohort(opts, &items, &n_patients, &n_studies));

    mt_progress prog;
    mt_progress_begin(&prog, "synth", opts->n, "img");
    int threads = opts->threads > 0 ? opts->threads : omp_get_max_threads();
    int64_t done = 0, failed_at = -1;
    mt_status failed = MT_OK;
    char *message = mt_alloc(MT_ERROR_MAX, "synth error message");
    if (!message) {
        mt_free(items);
        return MT_ERR_NOMEM;
    }
    /* Images are independent: each is rendered from its own streams, so the bytes do not depend
     * on which thread writes them. The first failure (by index) is reported. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < opts->n; i++) {
        int64_t stop;
#pragma omp atomic read
        stop = failed_at;
        if (stop >= 0) continue;
        mt_status st = write_item(opts, &items[i]);
#pragma omp critical(synth_progress)
        {
            if (st != MT_OK && (failed_at < 0 || i < failed_at)) {
#pragma omp atomic write
                failed_at = i;
                failed = st;
                snprintf(message, MT_ERROR_MAX, "%s", mt_error_message());
            }
            mt_progress_update(&prog, ++done);
        }
    }
    mt_progress_end(&prog);

    mt_status st = failed;
    if (st != MT_OK)
        st = mt_fail(failed, "synth: image %lld (%s): %s", (long long)failed_at,
                     items[failed_at].rel, message);
    if (st == MT_OK) st = write_labels(opts, items);
    if (st == MT_OK && summary) {
        memset(summary, 0, sizeof *summary);
        summary->images = opts->n;
        summary->patients = n_patients;
        summary->studies = n_studies;
        for (int64_t i = 0; i < opts->n; i++) {
            summary->per_syntax[items[i].syntax]++;
            for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++)
                summary->positives[f] += items[i].labels[f] == 1;
        }
    }
    mt_free(message);
    mt_free(items);
    return st;
}
