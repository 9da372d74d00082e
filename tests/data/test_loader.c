/* The loader: sharding over simulated ranks (several loaders in one process, rank r of W each),
 * determinism, augmentation (identical on any W, bounded, no flips unless asked, masks follow the
 * geometry), normalisation, resize without augmentation, seek/resume, a reader failure reaching
 * mt_loader_next, argument errors and shutdown without consuming.
 *
 * The packs are written here. In the "id" pack, pixel (y, x) of image i holds 1000*i + 16*y + x
 * (u16), so a batch says exactly which image arrived and in which geometry. In the "shape" pack
 * (u8, with masks) the left half is grey, the right half dark, and a bright rectangle, different
 * for every image, is marked in the mask: after augmentation the mask must still cover the bright
 * pixels, and left must still be brighter than right unless flips were asked for. The "ml" pack
 * has the shape pack's images with multi-label masks of ML_C planes: the rectangle, its
 * complement and the whole image, so every plane must move exactly as the index mask does. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "medtrain/comm.h"
#include "medtrain/image.h"
#include "medtrain/loader.h"
#include "medtrain/mem.h"
#include "medtrain/pack.h"
#include "mt_test.h"

static mt_comm *comm;
static char dir[256], id_pack[320], shape_pack[320], ml_pack[320];

enum { ID_N = 60, ID_HW = 16, ID_TRAIN = 36, SH_N = 40, SH_HW = 64, SH_TRAIN = 36, BIG_N = 400 };

/* ---- packs ----------------------------------------------------------------------------- */

static uint16_t id_value(int64_t i, int y, int x) {
    return (uint16_t)(1000 * i + ID_HW * y + x);
}

static mt_split id_split(int64_t i) {
    return i % 5 == 3 ? MT_SPLIT_VAL : i % 5 == 4 ? MT_SPLIT_TEST : MT_SPLIT_TRAIN;
}

/* Image i's bright rectangle: top, left, height, width. */
static void shape_rect(int64_t i, int r[4]) {
    r[0] = 8 + (int)(i * 7 % 30), r[1] = 6 + (int)(i * 11 % 38);
    r[2] = 10 + (int)(i % 9), r[3] = 10 + (int)(i * 3 % 11);
}

static bool in_rect(int64_t i, int y, int x) {
    int r[4];
    shape_rect(i, r);
    return y >= r[0] && y < r[0] + r[2] && x >= r[1] && x < r[1] + r[3];
}

static uint8_t shape_value(int64_t i, int y, int x) {
    return in_rect(i, y, x) ? 250 : x < SH_HW / 2 ? 120 : 20;
}

enum { PACK_ID, PACK_SHAPE, PACK_BIG, PACK_ML };
enum { ML_C = 3 }; /* planes of the ml pack: rectangle, not rectangle, everything */

/* Plane c of the ml pack at (y, x) of image i. */
static uint8_t ml_plane(int c, int64_t i, int y, int x) {
    return c == 0 ? in_rect(i, y, x) : c == 1 ? !in_rect(i, y, x) : 1;
}

static mt_status write_pack(const char *path, int kind) {
    static const char *const labels[] = {"index", "negated"}, *const classes[] = {"bg", "rect"},
                             *const ml_classes[ML_C] = {"rect", "outside", "all"};
    bool ml = kind == PACK_ML, shape = kind == PACK_SHAPE || ml;
    int n = kind == PACK_ID ? ID_N : shape ? SH_N : BIG_N;
    int hw = shape ? SH_HW : ID_HW, planes = ml ? ML_C : 1;
    mt_pack_spec spec = {.h = hw,
                         .w = hw,
                         .dtype = kind == PACK_ID ? MT_U16 : MT_U8,
                         .n_labels = 2,
                         .label_names = labels,
                         .n_mask_classes = ml      ? ML_C
                                           : shape ? 2
                                                   : 0,
                         .mask_classes = ml ? ml_classes : classes,
                         .creator = "test_loader",
                         .mask_multilabel = ml};
    size_t px = (size_t)hw * hw, esize = kind == PACK_ID ? 2 : 1;
    mt_pack_item *items = mt_calloc((size_t)n, sizeof *items, "items");
    uint8_t *pixels = mt_alloc((size_t)n * px * esize, "pixels");
    uint8_t *masks = mt_alloc((size_t)n * px * (size_t)planes, "masks");
    float *lab = mt_alloc((size_t)n * 2 * sizeof(float), "labels");
    for (int i = 0; i < n; i++) {
        for (int y = 0; y < hw; y++)
            for (int x = 0; x < hw; x++) {
                size_t j = (size_t)i * px + (size_t)y * hw + (size_t)x;
                if (kind == PACK_ID)
                    ((uint16_t *)pixels)[j] = id_value(i, y, x);
                else if (shape)
                    pixels[j] = shape_value(i, y, x);
                else
                    pixels[j] = (uint8_t)(i + y + x);
                uint8_t *m = masks + ((size_t)i * planes) * px + (size_t)y * hw + (size_t)x;
                for (int c = 0; c < planes; c++)
                    m[(size_t)c * px] = ml ? ml_plane(c, i, y, x) : shape && in_rect(i, y, x);
            }
        lab[2 * i] = (float)i;
        lab[2 * i + 1] = i % 2 ? NAN : (float)-i;
        items[i].pixels = pixels + (size_t)i * px * esize;
        items[i].labels = lab + 2 * i;
        items[i].mask = shape ? masks + (size_t)i * px * planes : NULL;
        snprintf(items[i].meta.case_id, sizeof items[i].meta.case_id, "case%d", i);
        items[i].meta.split = kind == PACK_ID ? id_split(i)
                              : shape         ? (i % 10 == 9 ? MT_SPLIT_VAL : MT_SPLIT_TRAIN)
                                              : MT_SPLIT_TRAIN;
    }
    mt_pack_writer *w = NULL;
    mt_status st = mt_pack_writer_create(comm, path, &spec, &w);
    if (st == MT_OK) {
        st = mt_pack_writer_append(w, items, n);
        mt_status fin = mt_pack_writer_finish(w, st == MT_OK, "test");
        if (st == MT_OK) st = fin;
    }
    mt_free(items);
    mt_free(pixels);
    mt_free(masks);
    mt_free(lab);
    return st;
}

/* ---- helpers --------------------------------------------------------------------------- */

static mt_loader_opts opts_for(int batch, int size) {
    mt_loader_opts o = {.split = MT_SPLIT_TRAIN,
                        .batch = batch,
                        .size = size,
                        .seed = 1234,
                        .shuffle = true,
                        .norm = MT_NORM_NONE};
    return o;
}

static mt_loader *open_ok(const char *path, int rank, int world, const mt_loader_opts *o) {
    mt_loader *l = NULL;
    MT_CHECK_OK(mt_loader_open(path, rank, world, o, &l));
    return l;
}

static const mt_batch *next_ok(mt_loader *l) {
    const mt_batch *b = NULL;
    MT_CHECK_OK(mt_loader_next(l, &b));
    return b;
}

/* Image k of an id-pack batch (size 16, no augmentation, no normalisation) is image indices[k],
 * pixel for pixel, with its labels. */
static void check_id_image(const mt_batch *b, int k) {
    int64_t i = b->indices[k];
    int bad = 0;
    for (int y = 0; y < ID_HW; y++)
        for (int x = 0; x < ID_HW; x++) {
            float v = b->images[(size_t)k * ID_HW * ID_HW + (size_t)y * ID_HW + (size_t)x];
            bad += lroundf(v * 65535) != id_value(i, y, x);
        }
    MT_CHECK(bad == 0, "image %lld: %d pixels are not its own", (long long)i, bad);
    MT_CHECK(b->labels[2 * k] == (float)i);
    MT_CHECK(i % 2 ? isnan(b->labels[2 * k + 1]) : b->labels[2 * k + 1] == (float)-i);
}

/* One epoch as W ranks deliver it: order[p] and weight[p] for every slot p of the epoch. */
static void gather_epoch(mt_loader **ls, int W, int B, int64_t epoch, int64_t batches,
                         int64_t *order, float *weight) {
    for (int64_t s = 0; s < batches; s++)
        for (int r = 0; r < W; r++) {
            const mt_batch *b = next_ok(ls[r]);
            if (!b) return;
            MT_CHECK(b->epoch == epoch && b->step == s,
                     "rank %d: got (%lld, %lld), expected "
                     "(%lld, %lld)",
                     r, (long long)b->epoch, (long long)b->step, (long long)epoch, (long long)s);
            MT_CHECK(b->n == B && b->size == ID_HW);
            int valid = 0;
            for (int k = 0; k < B; k++) {
                int64_t p = s * W * B + r + (int64_t)k * W;
                order[p] = b->indices[k];
                weight[p] = b->weights[k];
                valid += b->weights[k] == 1.0f;
                check_id_image(b, k);
            }
            MT_CHECK(b->n_valid == valid, "n_valid %d, weights say %d", b->n_valid, valid);
        }
}

static bool in_train(int64_t i) {
    return i >= 0 && i < ID_N && id_split(i) == MT_SPLIT_TRAIN;
}

/* ---- sharding and determinism ---------------------------------------------------------- */

static void test_sharding(void) {
    enum { EPOCHS = 2, MAXP = 64 };
    int64_t ref[EPOCHS][ID_TRAIN];
    float w1[MAXP];
    mt_loader_opts o1 = opts_for(1, ID_HW);
    mt_loader *one = open_ok(id_pack, 0, 1, &o1);
    if (!one) return;
    MT_CHECK(mt_loader_batches_per_epoch(one) == ID_TRAIN);
    for (int e = 0; e < EPOCHS; e++) gather_epoch(&one, 1, 1, e, ID_TRAIN, ref[e], w1);
    mt_loader_close(one);

    for (int W = 1; W <= 3; W++)
        for (int B = 4; B <= 5; B++)
            for (int drop = 0; drop <= 1; drop++) {
                mt_loader_opts o = opts_for(B, ID_HW);
                o.drop_last = drop;
                mt_loader *ls[3] = {0};
                int64_t WB = (int64_t)W * B;
                int64_t want = drop ? ID_TRAIN / WB : (ID_TRAIN + WB - 1) / WB;
                for (int r = 0; r < W; r++) {
                    ls[r] = open_ok(id_pack, r, W, &o);
                    if (!ls[r]) return;
                    MT_CHECK(mt_loader_batches_per_epoch(ls[r]) == want, "W %d B %d drop %d", W, B,
                             drop);
                }
                for (int e = 0; e < EPOCHS; e++) {
                    int64_t order[MAXP];
                    float weight[MAXP];
                    int seen[ID_N] = {0};
                    gather_epoch(ls, W, B, e, want, order, weight);
                    for (int64_t p = 0; p < want * WB; p++) {
                        MT_CHECK(in_train(order[p]));
                        if (p < ID_TRAIN) {
                            MT_CHECK(weight[p] == 1.0f && order[p] == ref[e][p],
                                     "W %d B %d: slot %lld differs from one rank's order", W, B,
                                     (long long)p);
                            seen[order[p]]++;
                        } else {
                            /* Padding: only past the end, weight 0, wrapping to the start. */
                            MT_CHECK(weight[p] == 0.0f && order[p] == order[p - ID_TRAIN]);
                        }
                    }
                    for (int i = 0; i < ID_N; i++) MT_CHECK(in_train(i) || seen[i] == 0);
                    int covered = 0, twice = 0;
                    for (int i = 0; i < ID_N; i++) covered += seen[i] == 1, twice += seen[i] > 1;
                    MT_CHECK(twice == 0);
                    MT_CHECK(covered == (drop ? want * WB : ID_TRAIN), "W %d B %d drop %d: %d", W,
                             B, drop, covered);
                }
                for (int r = 0; r < W; r++) mt_loader_close(ls[r]);
            }
}

/* 1 rank x batch 6 and 2 ranks x batch 3 give the same set of images at every global step. */
static void test_global_batch_is_the_same_set(void) {
    mt_loader_opts o6 = opts_for(6, ID_HW), o3 = opts_for(3, ID_HW);
    mt_loader *a = open_ok(id_pack, 0, 1, &o6), *b0 = open_ok(id_pack, 0, 2, &o3),
              *b1 = open_ok(id_pack, 1, 2, &o3);
    if (a && b0 && b1)
        for (int s = 0; s < 12; s++) { /* two epochs */
            const mt_batch *x = next_ok(a), *y0 = next_ok(b0), *y1 = next_ok(b1);
            if (!x || !y0 || !y1) break;
            int64_t u[6], v[6];
            memcpy(u, x->indices, sizeof u);
            memcpy(v, y0->indices, 3 * sizeof *v);
            memcpy(v + 3, y1->indices, 3 * sizeof *v);
            int match = 0;
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++) match += u[i] == v[j];
            MT_CHECK(match == 6, "step %d: the global batches differ", s);
            MT_CHECK(x->epoch == y0->epoch && x->step == y1->step);
        }
    mt_loader_close(a);
    mt_loader_close(b0);
    mt_loader_close(b1);
}

static void epoch_order(const mt_loader_opts *o, int64_t *out, int epochs) {
    mt_loader *l = open_ok(id_pack, 0, 1, o);
    if (!l) return;
    int64_t per = mt_loader_batches_per_epoch(l);
    for (int64_t s = 0; s < per * epochs; s++) {
        const mt_batch *b = next_ok(l);
        if (!b) break;
        for (int k = 0; k < o->batch; k++) out[s * o->batch + k] = b->indices[k];
    }
    mt_loader_close(l);
}

static void test_determinism(void) {
    int64_t a[2 * ID_TRAIN], b[2 * ID_TRAIN], c[2 * ID_TRAIN], d[2 * ID_TRAIN];
    mt_loader_opts o = opts_for(4, ID_HW);
    epoch_order(&o, a, 2);
    epoch_order(&o, b, 2);
    MT_CHECK(memcmp(a, b, sizeof a) == 0, "same seed, different order");
    MT_CHECK(memcmp(a, a + ID_TRAIN, ID_TRAIN * sizeof *a) != 0, "epochs share one order");
    o.seed = 99;
    epoch_order(&o, c, 2);
    MT_CHECK(memcmp(a, c, sizeof a) != 0, "the seed changes nothing");
    o.shuffle = false;
    epoch_order(&o, d, 2);
    int64_t p = 0;
    for (int i = 0; i < ID_N; i++)
        if (in_train(i)) {
            MT_CHECK(d[p] == i && d[p + ID_TRAIN] == i, "shuffle off: position %lld holds %lld",
                     (long long)p, (long long)d[p]);
            p++;
        }
}

static void test_drop_and_pad_counts(void) {
    mt_loader_opts o = opts_for(8, ID_HW);
    mt_loader *l = open_ok(id_pack, 1, 2, &o);
    if (!l) return;
    MT_CHECK(mt_loader_batches_per_epoch(l) == 3); /* ceil(36 / 16) */
    int padded = 0;
    for (int s = 0; s < 3; s++) {
        const mt_batch *b = next_ok(l);
        if (b) padded += b->n - b->n_valid;
    }
    MT_CHECK(padded == 6, "rank 1 pads %d of the 12 padding slots", padded);
    const mt_batch *b = next_ok(l);
    MT_CHECK(b && b->epoch == 1 && b->step == 0, "the stream crosses into epoch 1");
    MT_CHECK(mt_loader_wait_seconds(l) >= 0);
    mt_loader_close(l);
    o.drop_last = true;
    l = open_ok(id_pack, 1, 2, &o);
    if (l) MT_CHECK(mt_loader_batches_per_epoch(l) == 2);
    mt_loader_close(l);

    /* A split smaller than half a batch wraps more than once: val has 12 images, batch 30. */
    o = opts_for(30, ID_HW);
    o.split = MT_SPLIT_VAL;
    l = open_ok(id_pack, 0, 1, &o);
    b = l ? next_ok(l) : NULL;
    if (b) {
        MT_CHECK(mt_loader_info(l)->n == ID_N && mt_loader_batches_per_epoch(l) == 1);
        MT_CHECK(b->n == 30 && b->n_valid == 12);
        int seen[ID_N] = {0};
        for (int k = 0; k < 30; k++) {
            MT_CHECK(id_split(b->indices[k]) == MT_SPLIT_VAL);
            MT_CHECK(b->weights[k] == (k < 12 ? 1.0f : 0.0f));
            if (k < 12)
                seen[b->indices[k]]++;
            else
                MT_CHECK(b->indices[k] == b->indices[k % 12], "slot %d wraps to %d", k, k % 12);
            check_id_image(b, k);
        }
        for (int i = 0; i < ID_N; i++) MT_CHECK(seen[i] == (id_split(i) == MT_SPLIT_VAL));
    }
    mt_loader_close(l);
}

static void test_open_errors(void) {
    mt_loader *l = NULL;
    mt_loader_opts o = opts_for(10, ID_HW);
    o.drop_last = true;
    MT_CHECK_FAILS(mt_loader_open(id_pack, 0, 4, &o, &l), MT_ERR_ARG, "train", "36", "40");
    MT_CHECK(l == NULL);
    o = opts_for(2, SH_HW);
    o.split = MT_SPLIT_TEST;
    MT_CHECK_FAILS(mt_loader_open(shape_pack, 0, 1, &o, &l), MT_ERR_ARG, "test", "empty");
    o = opts_for(2, ID_HW);
    o.masks = true;
    MT_CHECK_FAILS(mt_loader_open(id_pack, 0, 1, &o, &l), MT_ERR_ARG, "no /masks");
    o = opts_for(2, ID_HW);
    MT_CHECK_FAILS(mt_loader_open(id_pack, 2, 2, &o, &l), MT_ERR_ARG, "rank 2 of world 2");
    o.batch = 0;
    MT_CHECK_FAILS(mt_loader_open(id_pack, 0, 1, &o, &l), MT_ERR_ARG, "batch 0");
    o = opts_for(2, ID_HW);
    o.norm = MT_NORM_MEANSTD;
    MT_CHECK_FAILS(mt_loader_open(id_pack, 0, 1, &o, &l), MT_ERR_ARG, "std");
    o = opts_for(2, ID_HW);
    o.aug = mt_augment_defaults();
    o.aug.crop_scale_min = 0;
    MT_CHECK_FAILS(mt_loader_open(id_pack, 0, 1, &o, &l), MT_ERR_ARG, "crop scale");
    char missing[400];
    snprintf(missing, sizeof missing, "%s/missing.h5", dir);
    o = opts_for(2, ID_HW);
    MT_CHECK_FAILS(mt_loader_open(missing, 0, 1, &o, &l), MT_ERR_IO, "missing.h5");
}

/* ---- pixels: normalisation and resizing ------------------------------------------------ */

static void test_normalisation(void) {
    const mt_norm_mode modes[3] = {MT_NORM_NONE, MT_NORM_XRV, MT_NORM_MEANSTD};
    for (int m = 0; m < 3; m++) {
        mt_loader_opts o = opts_for(3, ID_HW);
        o.shuffle = false;
        o.norm = modes[m];
        o.mean = 0.5f, o.std = 0.25f;
        mt_loader *l = open_ok(id_pack, 0, 1, &o);
        const mt_batch *b = l ? next_ok(l) : NULL;
        if (b)
            for (int k = 0; k < 3; k++)
                for (int y = 0; y < ID_HW; y += 5)
                    for (int x = 0; x < ID_HW; x += 3) {
                        double v = id_value(b->indices[k], y, x) / 65535.0;
                        double want = modes[m] == MT_NORM_XRV       ? (2 * v - 1) * 1024
                                      : modes[m] == MT_NORM_MEANSTD ? (v - 0.5) / 0.25
                                                                    : v;
                        MT_CHECK_NEAR(b->images[(size_t)k * ID_HW * ID_HW + y * ID_HW + x], want,
                                      1e-5);
                    }
        mt_loader_close(l);
    }
    /* u8: value / 255. */
    mt_loader_opts o = opts_for(2, SH_HW);
    o.norm = MT_NORM_XRV;
    mt_loader *l = open_ok(shape_pack, 0, 1, &o);
    const mt_batch *b = l ? next_ok(l) : NULL;
    if (b)
        for (int y = 0; y < SH_HW; y += 7)
            for (int x = 0; x < SH_HW; x += 3)
                MT_CHECK_NEAR(b->images[y * SH_HW + x],
                              (2 * shape_value(b->indices[0], y, x) / 255.0 - 1) * 1024, 1e-4);
    mt_loader_close(l);
}

/* Without augmentation the whole image is resized (antialiased), the mask by nearest neighbour. */
static void test_resize_without_augmentation(void) {
    enum { S = 24 };
    mt_loader_opts o = opts_for(2, S);
    o.masks = true;
    mt_loader *l = open_ok(shape_pack, 0, 1, &o);
    const mt_batch *b = l ? next_ok(l) : NULL;
    if (b) {
        mt_image src = {0}, want = {0};
        uint8_t mask[SH_HW * SH_HW], want_mask[S * S];
        MT_CHECK_OK(mt_image_alloc(&src, SH_HW, SH_HW));
        int64_t i = b->indices[1];
        for (int y = 0; y < SH_HW; y++)
            for (int x = 0; x < SH_HW; x++) {
                src.data[y * SH_HW + x] = shape_value(i, y, x) * (1.0f / 255);
                mask[y * SH_HW + x] = in_rect(i, y, x);
            }
        MT_CHECK_OK(mt_image_resize(&src, S, S, &want));
        MT_CHECK_OK(mt_mask_resize(mask, SH_HW, SH_HW, S, S, want_mask));
        double worst = 0;
        for (int j = 0; j < S * S; j++)
            worst = fmax(worst, fabs(b->images[S * S + j] - want.data[j]));
        MT_CHECK(worst < 1e-6, "resized image differs by %g", worst);
        MT_CHECK(memcmp(b->masks + S * S, want_mask, S * S) == 0);
        mt_image_free(&src);
        mt_image_free(&want);
    }
    mt_loader_close(l);
}

/* ---- augmentation ---------------------------------------------------------------------- */

typedef struct store {
    int size;
    bool have[2][SH_N];
    float *img[2][SH_N];
    uint8_t *mask[2][SH_N];
} store;

static void store_batch(store *s, const mt_batch *b) {
    size_t npix = (size_t)b->size * b->size;
    for (int k = 0; k < b->n; k++) {
        int e = (int)b->epoch;
        int64_t i = b->indices[k];
        if (e > 1 || i < 0 || i >= SH_N || s->have[e][i]) continue;
        s->have[e][i] = true;
        s->img[e][i] = mt_alloc(npix * sizeof(float), "stored image");
        memcpy(s->img[e][i], b->images + k * npix, npix * sizeof(float));
        if (b->masks) {
            s->mask[e][i] = mt_alloc(npix, "stored mask");
            memcpy(s->mask[e][i], b->masks + k * npix, npix);
        }
    }
}

static void store_free(store *s) {
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < SH_N; i++) mt_free(s->img[e][i]), mt_free(s->mask[e][i]);
}

/* Two epochs of the shape pack through W ranks into s. */
static void run_shape(store *s, int W, int B, const mt_loader_opts *base) {
    mt_loader *ls[4] = {0};
    mt_loader_opts o = *base;
    o.batch = B;
    for (int r = 0; r < W; r++)
        if (!(ls[r] = open_ok(shape_pack, r, W, &o))) goto done;
    for (int64_t step = 0; step < 2 * mt_loader_batches_per_epoch(ls[0]); step++)
        for (int r = 0; r < W; r++) {
            const mt_batch *b = next_ok(ls[r]);
            if (!b) goto done;
            store_batch(s, b);
        }
done:
    for (int r = 0; r < W; r++) mt_loader_close(ls[r]);
}

static mt_loader_opts aug_opts(int size) {
    mt_loader_opts o = opts_for(1, size);
    o.aug = mt_augment_defaults();
    o.masks = true;
    return o;
}

/* The same (epoch, image) gets the same pixels and mask on 1, 2 or 3 ranks, and whatever the
 * number of threads augmenting a batch (the loader uses at most `batch` of them). */
static void test_augmentation_same_on_any_world(void) {
    static store one, two, three;
    mt_loader_opts o = aug_opts(40);
    o.aug.hflip = true;
    run_shape(&one, 1, 4, &o);
    run_shape(&two, 2, 2, &o);
    run_shape(&three, 3, 1, &o);
    int compared = 0;
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < SH_N; i++) {
            if (!one.have[e][i]) continue;
            MT_CHECK(two.have[e][i] && three.have[e][i], "image %d missing", i);
            if (!two.have[e][i] || !three.have[e][i]) continue;
            MT_CHECK(memcmp(one.img[e][i], two.img[e][i], 40 * 40 * sizeof(float)) == 0 &&
                         memcmp(one.img[e][i], three.img[e][i], 40 * 40 * sizeof(float)) == 0,
                     "epoch %d image %d: augmentation depends on the rank count", e, i);
            MT_CHECK(memcmp(one.mask[e][i], two.mask[e][i], 40 * 40) == 0 &&
                     memcmp(one.mask[e][i], three.mask[e][i], 40 * 40) == 0);
            compared++;
        }
    MT_CHECK(compared == 2 * SH_TRAIN, "compared %d", compared);
    store_free(&one);
    store_free(&two);
    store_free(&three);
}

static void test_augmentation_changes_pixels_within_bounds(void) {
    enum { S = 48 };
    static store plain, aug;
    mt_loader_opts o = opts_for(1, S);
    run_shape(&plain, 1, 4, &o);
    o.aug = mt_augment_defaults();
    run_shape(&aug, 1, 4, &o);
    int changed = 0, epochs_differ = 0;
    for (int i = 0; i < SH_N; i++) {
        if (!plain.have[0][i]) continue;
        double diff = 0, sum_p = 0, sum_a = 0, lo = 1, hi = 0;
        for (int j = 0; j < S * S; j++) {
            float p = plain.img[0][i][j], a = aug.img[0][i][j];
            diff = fmax(diff, fabs(p - a));
            sum_p += p, sum_a += a;
            lo = fmin(lo, a), hi = fmax(hi, a);
        }
        changed += diff > 0.05;
        MT_CHECK(lo >= 0 && hi <= 1, "image %d: values in [%g, %g]", i, lo, hi);
        MT_CHECK(hi > 0.3, "image %d: the augmented image is dark", i);
        MT_CHECK(fabs(sum_a - sum_p) / (S * S) < 0.15, "image %d: mean %g, unaugmented %g", i,
                 sum_a / (S * S), sum_p / (S * S));
        epochs_differ += memcmp(aug.img[0][i], aug.img[1][i], S * S * sizeof(float)) != 0;
    }
    MT_CHECK(changed == SH_TRAIN, "%d of %d images changed", changed, SH_TRAIN);
    MT_CHECK(epochs_differ == SH_TRAIN, "epochs give the same augmentation");
    store_free(&plain);
    store_free(&aug);
}

/* Outside the rectangle, the left third is brighter than the right third: the film is the right
 * way round. */
static bool looks_flipped(const float *img, const uint8_t *mask, int s) {
    double left = 0, right = 0;
    for (int y = 0; y < s; y++)
        for (int x = 0; x < s / 3; x++) {
            int l = y * s + x, r = y * s + s - 1 - x;
            if (!mask[l]) left += img[l];
            if (!mask[r]) right += img[r];
        }
    return right > left;
}

static void test_no_flip_unless_asked(void) {
    MT_CHECK(!mt_augment_defaults().hflip, "flips must be off by default");
    static store off, on;
    mt_loader_opts o = aug_opts(32);
    run_shape(&off, 1, 4, &o);
    o.aug.hflip = true;
    run_shape(&on, 1, 4, &o);
    int flips_off = 0, flips_on = 0, n = 0;
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < SH_N; i++)
            if (off.have[e][i] && on.have[e][i]) {
                flips_off += looks_flipped(off.img[e][i], off.mask[e][i], 32);
                flips_on += looks_flipped(on.img[e][i], on.mask[e][i], 32);
                n++;
            }
    MT_CHECK(n == 2 * SH_TRAIN);
    MT_CHECK(flips_off == 0, "%d of %d images flipped with flips off", flips_off, n);
    MT_CHECK(flips_on > n / 4 && flips_on < 3 * n / 4, "%d of %d flipped with flips on", flips_on,
             n);
    store_free(&off);
    store_free(&on);
}

/* With photometric changes off, the mask marks the bright pixels, except along the rectangle's
 * edge (bilinear and antialiasing blur the image there, the mask is nearest-neighbour). */
static void check_mask_follows(int S) {
    static store s;
    memset(&s, 0, sizeof s);
    mt_loader_opts o = aug_opts(S);
    o.aug.hflip = true;
    o.aug.rotate_deg = 15;
    o.aug.brightness = o.aug.contrast = o.aug.gamma = 0;
    run_shape(&s, 1, 4, &o);
    float thr = (250 + 120) / 2 / 255.0f;
    int inner_bad = 0, edge_bad = 0, marked = 0, images = 0;
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < SH_N; i++) {
            if (!s.have[e][i]) continue;
            images++;
            const float *img = s.img[e][i];
            const uint8_t *m = s.mask[e][i];
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    bool bright = img[y * S + x] > thr, in = m[y * S + x] == 1;
                    marked += in;
                    if (bright == in) continue;
                    bool edge = false;
                    for (int dy = -2; dy <= 2; dy++)
                        for (int dx = -2; dx <= 2; dx++) {
                            int yy = y + dy, xx = x + dx;
                            if (yy >= 0 && yy < S && xx >= 0 && xx < S && m[yy * S + xx] != in)
                                edge = true;
                        }
                    edge ? edge_bad++ : inner_bad++;
                }
        }
    MT_CHECK(images == 2 * SH_TRAIN);
    MT_CHECK(inner_bad == 0, "size %d: %d pixels away from an edge disagree with the mask", S,
             inner_bad);
    MT_CHECK(marked > images * S * S / 40, "size %d: masks nearly empty (%d pixels)", S, marked);
    MT_CHECK(edge_bad < marked / 4, "size %d: %d edge pixels disagree", S, edge_bad);
    store_free(&s);
}

static void test_masks_follow_geometry(void) {
    check_mask_follows(48); /* about one source pixel per output pixel: no prefilter */
    check_mask_follows(24); /* 2-2.7 source pixels per output pixel: antialiased first */
}

/* Multi-label masks ([n, C, S, S]) take the image's geometry plane by plane: through the ml pack
 * (the shape pack's images) every batch has the shape pack's indices and pixels, plane 0 (the
 * rectangle) is the index mask exactly, plane 1 its complement within plane 2, and plane 2 (the
 * whole source image) is 0 only where the warp reads outside the source. */
static void check_multilabel_follows(int S, bool augment) {
    mt_loader_opts o = augment ? aug_opts(S) : opts_for(1, S);
    o.batch = 4, o.masks = true;
    mt_loader *li = open_ok(shape_pack, 0, 1, &o), *lm = open_ok(ml_pack, 0, 1, &o);
    if (!li || !lm) goto done;
    MT_CHECK(mt_loader_info(lm)->mask_multilabel && mt_loader_info(lm)->n_mask_classes == ML_C);
    size_t npix = (size_t)S * S;
    int64_t outside = 0, inside_rect = 0;
    for (int step = 0; step < 2 * (int)mt_loader_batches_per_epoch(li); step++) {
        const mt_batch *bi = next_ok(li), *bm = next_ok(lm);
        if (!bi || !bm) break;
        MT_CHECK(memcmp(bi->indices, bm->indices, 4 * sizeof *bi->indices) == 0 &&
                     memcmp(bi->images, bm->images, 4 * npix * sizeof(float)) == 0,
                 "S %d step %d: the images differ between the packs", S, step);
        for (int k = 0; k < bm->n; k++) {
            const uint8_t *idx = bi->masks + k * npix, *m = bm->masks + k * ML_C * npix;
            int bad = 0;
            for (size_t p = 0; p < npix; p++) {
                uint8_t rect = m[p], rest = m[npix + p], all = m[2 * npix + p];
                bad += rect != idx[p] || rest != (all && !idx[p]) || (rect && !all);
                outside += !all, inside_rect += rect;
            }
            MT_CHECK(bad == 0, "S %d step %d image %lld: %d pixels where the planes disagree", S,
                     step, (long long)bm->indices[k], bad);
        }
    }
    MT_CHECK(inside_rect > 0, "the rectangles arrived");
    if (augment)
        MT_CHECK(outside > 0, "rotations read outside the source: background 0 there");
    else
        MT_CHECK(outside == 0, "without augmentation the whole image is inside");
done:
    mt_loader_close(li);
    mt_loader_close(lm);
}

static void test_multilabel_masks_follow_geometry(void) {
    check_multilabel_follows(48, true);
    check_multilabel_follows(24, true);  /* antialiased prefilter path for the image */
    check_multilabel_follows(24, false); /* plain resize */
    check_multilabel_follows(SH_HW, false);
}

/* ---- resume and errors ------------------------------------------------------------------ */

typedef struct saved {
    mt_batch b;
    float img[4 * 32 * 32], lab[8], w[4];
    uint8_t mask[4 * 32 * 32];
    int64_t idx[4];
} saved;

static void save(saved *s, const mt_batch *b) {
    s->b = *b;
    memcpy(s->img, b->images, sizeof s->img);
    memcpy(s->mask, b->masks, sizeof s->mask);
    memcpy(s->lab, b->labels, sizeof s->lab);
    memcpy(s->w, b->weights, sizeof s->w);
    memcpy(s->idx, b->indices, sizeof s->idx);
}

static void check_same(const saved *s, const mt_batch *b, const char *what) {
    if (!b) return;
    MT_CHECK(b->epoch == s->b.epoch && b->step == s->b.step, "%s: (%lld, %lld) vs (%lld, %lld)",
             what, (long long)b->epoch, (long long)b->step, (long long)s->b.epoch,
             (long long)s->b.step);
    MT_CHECK(memcmp(b->indices, s->idx, sizeof s->idx) == 0 &&
                 memcmp(b->images, s->img, sizeof s->img) == 0 &&
                 memcmp(b->masks, s->mask, sizeof s->mask) == 0 &&
                 memcmp(b->labels, s->lab, sizeof s->lab) == 0 &&
                 memcmp(b->weights, s->w, sizeof s->w) == 0 && b->n_valid == s->b.n_valid,
             "%s: the batch differs from the uninterrupted stream", what);
}

static void test_seek_resumes_the_stream(void) {
    static saved at_0_5, at_1_3, at_1_4;
    mt_loader_opts o = aug_opts(32);
    o.batch = 4;
    mt_loader *l = open_ok(shape_pack, 1, 2, &o);
    if (!l) return;
    int64_t per = mt_loader_batches_per_epoch(l);
    MT_CHECK(per == 5, "%lld", (long long)per); /* ceil(36 / 8) */
    for (int64_t s = 0; s < 2 * per; s++) {
        const mt_batch *b = next_ok(l);
        if (!b) break;
        if (s == 4) save(&at_0_5, b);
        if (s == per + 3) save(&at_1_3, b);
        if (s == per + 4) save(&at_1_4, b);
    }
    MT_CHECK(at_0_5.b.n_valid == 2, "the last batch pads: %d valid", at_0_5.b.n_valid);
    mt_loader_close(l);

    l = open_ok(shape_pack, 1, 2, &o); /* seek while the reader is prefetching epoch 0 */
    if (!l) return;
    MT_CHECK_OK(mt_loader_seek(l, 1, 3));
    check_same(&at_1_3, next_ok(l), "seek(1, 3) after open");
    check_same(&at_1_4, next_ok(l), "the batch after it");
    MT_CHECK_OK(mt_loader_seek(l, 0, 4));
    check_same(&at_0_5, next_ok(l), "seek(0, 4) mid-stream");
    MT_CHECK_FAILS(mt_loader_seek(l, 0, per), MT_ERR_ARG, "5 batches");
    mt_loader_close(l);
}

/* The file loses its tail while the loader reads it: the reader's HDF5 error, naming the image,
 * comes back from mt_loader_next after the batches read before it. */
static void test_read_error_reaches_next(void) {
    char copy[400];
    snprintf(copy, sizeof copy, "%s/big_copy.h5", dir);
    MT_CHECK_OK(write_pack(copy, PACK_BIG));
    mt_loader_opts o = opts_for(1, ID_HW);
    o.shuffle = false;
    o.prefetch = 1;
    mt_loader *l = open_ok(copy, 0, 1, &o);
    if (!l) return;
    MT_CHECK(next_ok(l) != NULL);
    MT_CHECK(truncate(copy, 4096) == 0);
    mt_status st = MT_OK;
    const mt_batch *b = NULL;
    int64_t got = 1;
    while (got < BIG_N && (st = mt_loader_next(l, &b)) == MT_OK) got++;
    MT_CHECK(st == MT_ERR_IO, "after %lld batches: %s (%s)", (long long)got, mt_status_name(st),
             mt_error_message());
    MT_CHECK(strstr(mt_error_message(), "image") && strstr(mt_error_message(), "big_copy.h5"), "%s",
             mt_error_message());
    MT_CHECK(b == NULL || st == MT_OK);
    /* The failure stays until a seek. */
    MT_CHECK(mt_loader_next(l, &b) == st && b == NULL);
    mt_loader_close(l);
    unlink(copy);
}

static void test_close_without_consuming(void) {
    for (int i = 0; i < 4; i++) {
        mt_loader_opts o = aug_opts(32);
        o.batch = 4;
        o.prefetch = i % 2 + 1;
        mt_loader *l = open_ok(shape_pack, 0, 1, &o);
        if (i >= 2 && l) next_ok(l); /* the reader is waiting on a full ring */
        if (i == 3 && l) usleep(20000);
        mt_loader_close(l);
    }
}

/* ---- main ------------------------------------------------------------------------------- */

static void on_alarm(int sig) {
    static const char msg[] = "test_loader: timed out: a loader thread hangs\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) _exit(2);
    _exit(2);
}

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        alarm(120);                                                                                \
        MT_RUN(fn);                                                                                \
        alarm(0);                                                                                  \
    } while (0)

int main(int argc, char **argv) {
    if (mt_comm_init(&argc, &argv, &comm) != MT_OK) {
        fprintf(stderr, "mt_comm_init: %s\n", mt_error_message());
        return 1;
    }
    signal(SIGALRM, on_alarm);
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/test_loader_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror(dir);
        return 1;
    }
    snprintf(id_pack, sizeof id_pack, "%s/id.h5", dir);
    snprintf(shape_pack, sizeof shape_pack, "%s/shape.h5", dir);
    snprintf(ml_pack, sizeof ml_pack, "%s/ml.h5", dir);
    if (write_pack(id_pack, PACK_ID) != MT_OK || write_pack(shape_pack, PACK_SHAPE) != MT_OK ||
        write_pack(ml_pack, PACK_ML) != MT_OK) {
        fprintf(stderr, "writing the test packs: %s\n", mt_error_message());
        return 1;
    }
    RUN(test_sharding);
    RUN(test_global_batch_is_the_same_set);
    RUN(test_determinism);
    RUN(test_drop_and_pad_counts);
    RUN(test_open_errors);
    RUN(test_normalisation);
    RUN(test_resize_without_augmentation);
    RUN(test_augmentation_same_on_any_world);
    RUN(test_augmentation_changes_pixels_within_bounds);
    RUN(test_no_flip_unless_asked);
    RUN(test_masks_follow_geometry);
    RUN(test_multilabel_masks_follow_geometry);
    RUN(test_seek_resumes_the_stream);
    RUN(test_read_error_reaches_next);
    RUN(test_close_without_consuming);
    unlink(id_pack);
    unlink(shape_pack);
    unlink(ml_pack);
    rmdir(dir);
    int rc = mt_test_summary();
    mt_comm_finalize(comm);
    return rc;
}
