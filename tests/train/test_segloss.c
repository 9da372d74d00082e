/* Segmentation losses (src/train/segloss.c) against MONAI's DiceLoss / DiceCELoss semantics.
 *
 * tests/oracles/segloss_oracle.py wrote data/segloss_reference.json: per case the loss options,
 * float32-exact logits (n,S,S,K) NHWC, masks and image weights, and MONAI's per-image losses, batch
 * loss and n_real * d(batch loss)/d(logits), computed in float64 with torch autograd. The cases
 * cover softmax with and without the background in the Dice, squared denominators, custom smooth
 * terms, lambda weights (Dice only, CE only), sigmoid heads with 1 and 2 outputs, classes absent
 * from an image, saturated logits (|z| ~ 30), padding images (weight 0), and multi-label masks
 * (overlapping 0/1 planes as the target: random overlaps, nested and identical structures, an
 * absent one, a single structure).
 *
 * Tolerances. medtrain works in f32 with double accumulation of the Dice sums and CE means:
 *   - a loss is a handful of f32 roundings (sums, mean, the per-image CE stored as a float) of
 *     values of order 1, so it is good to a few 1e-7 relative; 1e-5 leaves ample margin and still
 *     catches any semantic slip (a missing smooth term, a wrong scale, a dropped channel).
 *   - a dlogits element is a sum of a CE term and a Dice term taken through the softmax (sigmoid)
 *     backward, y * (dy - sum(dy * y)), each good to a few ulp of the terms that meet in it. Those
 *     terms can cancel, so an element is measured against max(|ref|, rms of the case's ref):
 *     |got - ref| <= 1e-5 * max(|ref|, rms). The rms is the gradient's natural scale; an error of
 *     1e-5 of it is ~100x the expected f32 error and far below any semantic change.
 * Padding images must get exactly 0 loss and 0 gradient. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/rng.h"
#include "train/segloss.h"
#include "mt_test.h"

#define LOSS_TOL 1e-5
#define GRAD_TOL 1e-5

static const char *data_dir = ".";

typedef struct seg_case {
    const char *name;
    mt_seg_loss_opts o;
    int n, S, K;
    size_t elems; /* n*S*S*K */
    float *logits, *weights, *want_d;
    uint8_t *masks;
    double *want_loss, batch_loss;
} seg_case;

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsTrue(v) ? 1 : 0;
}

/* Reads a JSON array of numbers of exactly `count` elements into floats or doubles. */
static bool read_floats(const cJSON *arr, size_t count, float *f, double *d) {
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (i == count || !cJSON_IsNumber(v)) return false;
        if (f) f[i] = (float)v->valuedouble;
        if (d) d[i] = v->valuedouble;
        i++;
    }
    return i == count;
}

static void case_free(seg_case *c) {
    free(c->logits), free(c->weights), free(c->want_d), free(c->masks), free(c->want_loss);
    memset(c, 0, sizeof *c);
}

static bool case_load(const cJSON *j, seg_case *c) {
    memset(c, 0, sizeof *c);
    c->name = cJSON_GetStringValue(cJSON_GetObjectItem(j, "name"));
    const cJSON *o = cJSON_GetObjectItem(j, "opts");
    c->o = (mt_seg_loss_opts){.n_classes = (int)num(o, "n_classes"),
                              .sigmoid = num(o, "sigmoid") != 0,
                              .multilabel = num(o, "multilabel") != 0,
                              .include_bg = num(o, "include_bg") != 0,
                              .squared = num(o, "squared") != 0,
                              .smooth_nr = num(o, "smooth_nr"),
                              .smooth_dr = num(o, "smooth_dr"),
                              .lambda_dice = num(o, "lambda_dice"),
                              .lambda_ce = num(o, "lambda_ce")};
    c->n = (int)num(j, "n"), c->S = (int)num(j, "S"), c->K = mt_seg_loss_outputs(&c->o);
    c->batch_loss = num(j, "batch_loss");
    size_t px = (size_t)c->n * c->S * c->S;
    c->elems = px * c->K;
    size_t mask_len = c->o.multilabel ? px * c->K : px; /* planes (n,K,S,S) or indices (n,S,S) */
    c->logits = malloc(c->elems * sizeof(float));
    c->want_d = malloc(c->elems * sizeof(float));
    c->weights = malloc(c->n * sizeof(float));
    c->want_loss = malloc(c->n * sizeof(double));
    c->masks = malloc(mask_len);
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(j, "masks"));
    if (!c->name || !c->logits || !c->want_d || !c->weights || !c->want_loss || !c->masks || !m ||
        strlen(m) != mask_len)
        return false;
    for (size_t p = 0; p < mask_len; p++) c->masks[p] = (uint8_t)(m[p] - '0');
    return read_floats(cJSON_GetObjectItem(j, "logits"), c->elems, c->logits, NULL) &&
           read_floats(cJSON_GetObjectItem(j, "dlogits"), c->elems, c->want_d, NULL) &&
           read_floats(cJSON_GetObjectItem(j, "weights"), c->n, c->weights, NULL) &&
           read_floats(cJSON_GetObjectItem(j, "img_loss"), c->n, NULL, c->want_loss);
}

typedef struct worst {
    double loss, grad; /* relative loss error; gradient error / max(|ref|, rms) */
} worst;

/* Runs one case through a fresh loss and checks it against the reference. */
static void check_case(mt_ctx *ctx, const seg_case *c, worst *w) {
    mt_seg_loss *l = NULL;
    MT_CHECK_OK(mt_seg_loss_create(&c->o, &l));
    if (!l) return;
    /* Warm up on a different batch shape first, so the case runs on reallocated buffers. */
    {
        int n2 = c->n + 1, S2 = c->S + 2;
        size_t px2 = (size_t)n2 * S2 * S2;
        float *z2 = calloc(px2 * c->K, sizeof(float)), w2[8];
        uint8_t *m2 = calloc(px2 * c->K, 1);
        double loss2[8];
        for (int i = 0; i < n2; i++) w2[i] = 1;
        MT_CHECK_OK(mt_seg_loss_compute(l, ctx, z2, m2, w2, n2, S2, "warm-up", NULL, loss2, z2));
        free(z2), free(m2);
    }
    double *loss = malloc(c->n * sizeof(double)), *loss2 = malloc(c->n * sizeof(double));
    float *d = malloc(c->elems * sizeof(float));
    for (size_t e = 0; e < c->elems; e++) d[e] = NAN; /* dlogits must be overwritten */
    for (int i = 0; i < c->n; i++) loss[i] = NAN;
    MT_CHECK_OK(mt_seg_loss_compute(l, ctx, c->logits, c->masks, c->weights, c->n, c->S, c->name,
                                    NULL, loss, d));

    int real = 0;
    double sum = 0;
    for (int i = 0; i < c->n; i++) {
        double want = c->want_loss[i], err = fabs(loss[i] - want);
        if (c->weights[i] > 0) {
            real++, sum += loss[i];
            double rel = err / fabs(want);
            w->loss = fmax(w->loss, rel);
            MT_CHECK(rel <= LOSS_TOL, "%s: image %d: loss %.9g, expected %.9g", c->name, i, loss[i],
                     want);
        } else {
            MT_CHECK(loss[i] == 0, "%s: padding image %d has loss %g", c->name, i, loss[i]);
        }
    }
    double batch = sum / real;
    MT_CHECK(fabs(batch - c->batch_loss) <= LOSS_TOL * fabs(c->batch_loss),
             "%s: mean image loss %.9g, MONAI batch loss %.9g", c->name, batch, c->batch_loss);

    double ss = 0;
    for (size_t e = 0; e < c->elems; e++) ss += (double)c->want_d[e] * c->want_d[e];
    double rms = sqrt(ss / (double)c->elems);
    size_t per_image = (size_t)c->S * c->S * c->K, bad = 0;
    for (size_t e = 0; e < c->elems; e++) {
        int i = (int)(e / per_image);
        double ref = c->want_d[e], got = d[e];
        if (c->weights[i] <= 0) {
            if (got != 0 && bad++ < 5)
                MT_CHECK(got == 0, "%s: padding image %d: dlogits[%zu] = %g", c->name, i, e, got);
            continue;
        }
        double scale = fmax(fabs(ref), rms), err = fabs(got - ref) / scale;
        w->grad = isnan(err) ? INFINITY : fmax(w->grad, err);
        if (!(err <= GRAD_TOL) && bad++ < 5)
            MT_CHECK(err <= GRAD_TOL, "%s: dlogits[%zu] (image %d) = %.9g, expected %.9g (rms %g)",
                     c->name, e, i, got, ref, rms);
    }
    MT_CHECK(bad == 0, "%s: %zu dlogits elements out of tolerance", c->name, bad);

    /* Without dlogits the losses are the same, to the bit. */
    MT_CHECK_OK(mt_seg_loss_compute(l, ctx, c->logits, c->masks, c->weights, c->n, c->S, c->name,
                                    NULL, loss2, NULL));
    for (int i = 0; i < c->n; i++)
        MT_CHECK(loss2[i] == loss[i], "%s: image %d: loss %.17g without dlogits, %.17g with",
                 c->name, i, loss2[i], loss[i]);
    free(loss), free(loss2), free(d);
    mt_seg_loss_free(l);
}

static void test_losses_match_monai(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/segloss_reference.json", data_dir);
    cJSON *ref = NULL;
    MT_CHECK_OK(mt_json_read_file(path, &ref));
    if (!ref) return;
    mt_ctx ctx;
    MT_CHECK_OK(mt_ctx_init(&ctx, MT_CPU, 0, 2));
    int n_cases = 0, n_sigmoid = 0, n_padding = 0, n_multilabel = 0;
    worst all = {0, 0};
    const cJSON *j;
    cJSON_ArrayForEach(j, cJSON_GetObjectItem(ref, "cases")) {
        seg_case c;
        bool ok = case_load(j, &c);
        MT_CHECK(ok, "case %d of %s is malformed", n_cases, path);
        if (ok) {
            worst w = {0, 0};
            check_case(&ctx, &c, &w);
            printf("  %-30s worst loss rel err %.2e, worst dlogits err %.2e\n", c.name, w.loss,
                   w.grad);
            all.loss = fmax(all.loss, w.loss), all.grad = fmax(all.grad, w.grad);
            n_sigmoid += c.o.sigmoid;
            n_multilabel += c.o.multilabel;
            for (int i = 0; i < c.n; i++)
                if (c.weights[i] <= 0) {
                    n_padding++;
                    break;
                }
        }
        case_free(&c);
        n_cases++;
    }
    printf("  all cases: worst loss rel err %.2e (tol %g), worst dlogits err %.2e (tol %g)\n",
           all.loss, LOSS_TOL, all.grad, GRAD_TOL);
    MT_CHECK(n_cases == 24, "found %d cases", n_cases);
    MT_CHECK(n_sigmoid >= 3 && n_padding >= 2, "%d sigmoid cases, %d with padding", n_sigmoid,
             n_padding);
    MT_CHECK(n_multilabel == 4, "%d multi-label cases", n_multilabel);
    mt_ctx_free(&ctx);
    cJSON_Delete(ref);
}

static mt_seg_loss_opts default_opts(void) {
    return (mt_seg_loss_opts){
        .n_classes = 3, .smooth_nr = 1e-5, .smooth_dr = 1e-5, .lambda_dice = 1, .lambda_ce = 1};
}

static void test_bad_mask_names_source_and_image(void) {
    mt_ctx ctx;
    MT_CHECK_OK(mt_ctx_init(&ctx, MT_CPU, 0, 1));
    enum { N = 3, S = 4 };
    for (int sigmoid = 0; sigmoid <= 1; sigmoid++) {
        mt_seg_loss_opts o = default_opts();
        o.sigmoid = sigmoid;
        mt_seg_loss *l = NULL;
        MT_CHECK_OK(mt_seg_loss_create(&o, &l));
        if (!l) continue;
        int K = mt_seg_loss_outputs(&o);
        float z[N * S * S * 3] = {0}, d[N * S * S * 3], w[N] = {1, 1, 1};
        uint8_t m[N * S * S] = {0};
        double loss[N];
        int64_t idx[N] = {7, 42, 9};
        m[1 * S * S + 5] = 3; /* == n_classes, in image 1 (pack index 42) */
        MT_CHECK(K <= 3);
        MT_CHECK_FAILS(mt_seg_loss_compute(l, &ctx, z, m, w, N, S, "train.pack", idx, loss, d),
                       MT_ERR_FORMAT, "train.pack", "image 42", "mask value 3", "3 classes");
        m[1 * S * S + 5] = 255;
        MT_CHECK_FAILS(mt_seg_loss_compute(l, &ctx, z, m, w, N, S, "val.pack", NULL, loss, NULL),
                       MT_ERR_FORMAT, "val.pack", "image 1", "mask value 255");
        m[1 * S * S + 5] = 2; /* the largest valid class is fine */
        MT_CHECK_OK(mt_seg_loss_compute(l, &ctx, z, m, w, N, S, "val.pack", NULL, loss, d));
        mt_seg_loss_free(l);
    }
    mt_ctx_free(&ctx);
}

/* A batch of padding only (a rank's share of a short last batch): no loss, no gradient, no error.
 */
static void test_all_padding_batch(void) {
    mt_ctx ctx;
    MT_CHECK_OK(mt_ctx_init(&ctx, MT_CPU, 0, 1));
    enum { N = 2, S = 5 };
    for (int sigmoid = 0; sigmoid <= 1; sigmoid++) {
        mt_seg_loss_opts o = default_opts();
        o.sigmoid = sigmoid, o.squared = true;
        mt_seg_loss *l = NULL;
        MT_CHECK_OK(mt_seg_loss_create(&o, &l));
        if (!l) continue;
        int K = mt_seg_loss_outputs(&o);
        float z[N * S * S * 3], d[N * S * S * 3], w[N] = {0, -1};
        uint8_t m[N * S * S];
        double loss[N] = {NAN, NAN};
        for (int e = 0; e < N * S * S * K; e++) z[e] = (float)((e % 7) - 3), d[e] = NAN;
        for (int p = 0; p < N * S * S; p++) m[p] = (uint8_t)(p % 3);
        MT_CHECK_OK(mt_seg_loss_compute(l, &ctx, z, m, w, N, S, "pad", NULL, loss, d));
        MT_CHECK(loss[0] == 0 && loss[1] == 0, "losses %g %g", loss[0], loss[1]);
        int nonzero = 0;
        for (int e = 0; e < N * S * S * K; e++) nonzero += d[e] != 0;
        MT_CHECK(nonzero == 0, "sigmoid %d: %d nonzero dlogits", sigmoid, nonzero);
        mt_seg_loss_free(l);
    }
    mt_ctx_free(&ctx);
}

/* A class-index mask as multi-label planes (plane c = (mask == c + 1)) through a multi-label loss
 * gives the sigmoid head's losses and gradients to the bit: the planes are g itself. */
static void test_multilabel_equals_index_sigmoid(void) {
    mt_ctx ctx;
    MT_CHECK_OK(mt_ctx_init(&ctx, MT_CPU, 0, 1));
    enum { N = 3, S = 6, C = 4, K = C - 1, P = S * S };
    float z[N * P * K], d1[N * P * K], d2[N * P * K], w[N] = {1, 0, 2};
    uint8_t m[N * P], planes[N * K * P];
    double l1[N], l2[N];
    mt_rng r;
    mt_rng_init(&r, 5, 0, 0);
    for (int e = 0; e < N * P * K; e++) z[e] = 4 * mt_rng_uniform(&r) - 2;
    for (int p = 0; p < N * P; p++) m[p] = (uint8_t)mt_rng_below(&r, C);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < K; c++)
            for (int p = 0; p < P; p++) planes[(i * K + c) * P + p] = m[i * P + p] == c + 1;
    for (int squared = 0; squared <= 1; squared++) {
        mt_seg_loss_opts o = default_opts();
        o.n_classes = C, o.sigmoid = true, o.squared = squared;
        mt_seg_loss *a = NULL, *b = NULL;
        MT_CHECK_OK(mt_seg_loss_create(&o, &a));
        o.multilabel = true, o.n_classes = K;
        MT_CHECK_OK(mt_seg_loss_create(&o, &b));
        MT_CHECK(mt_seg_loss_outputs(&o) == K);
        if (!a || !b) continue;
        MT_CHECK_OK(mt_seg_loss_compute(a, &ctx, z, m, w, N, S, "index", NULL, l1, d1));
        MT_CHECK_OK(mt_seg_loss_compute(b, &ctx, z, planes, w, N, S, "planes", NULL, l2, d2));
        MT_CHECK(memcmp(l1, l2, sizeof l1) == 0 && memcmp(d1, d2, sizeof d1) == 0,
                 "squared %d: multi-label planes differ from the index sigmoid head", squared);
        MT_CHECK(l1[1] == 0 && l1[0] > 0 && l1[2] > 0);
        mt_seg_loss_free(a);
        mt_seg_loss_free(b);
    }
    mt_ctx_free(&ctx);
}

/* Multi-label: a softmax head or no class is refused; a plane value other than 0/1 fails naming
 * the source, the image and the class; one structure is allowed. */
static void test_multilabel_errors(void) {
    mt_seg_loss_opts o = default_opts();
    o.multilabel = true;
    mt_seg_loss *l = NULL;
    MT_CHECK_FAILS(mt_seg_loss_create(&o, &l), MT_ERR_ARG, "multi-label", "sigmoid head");
    MT_CHECK(l == NULL);
    o.sigmoid = true, o.n_classes = 0;
    MT_CHECK_FAILS(mt_seg_loss_create(&o, &l), MT_ERR_ARG, "0 multi-label classes");
    o.n_classes = 1;
    MT_CHECK_OK(mt_seg_loss_create(&o, &l));
    MT_CHECK(mt_seg_loss_outputs(&o) == 1);
    mt_seg_loss_free(l);
    l = NULL;
    o.n_classes = 2;
    MT_CHECK_OK(mt_seg_loss_create(&o, &l));
    if (!l) return;
    mt_ctx ctx;
    MT_CHECK_OK(mt_ctx_init(&ctx, MT_CPU, 0, 1));
    enum { N = 2, S = 3, K = 2, P = S * S };
    float z[N * P * K] = {0}, d[N * P * K], w[N] = {1, 1};
    uint8_t m[N * K * P] = {0};
    double loss[N];
    int64_t idx[N] = {4, 42};
    m[(1 * K + 1) * P + 3] = 2; /* image 1 (pack index 42), class 1 */
    MT_CHECK_FAILS(mt_seg_loss_compute(l, &ctx, z, m, w, N, S, "ml.pack", idx, loss, d),
                   MT_ERR_FORMAT, "ml.pack", "image 42", "multi-label mask value 2", "class 1");
    w[1] = 0; /* padding is not checked */
    MT_CHECK_OK(mt_seg_loss_compute(l, &ctx, z, m, w, N, S, "ml.pack", idx, loss, d));
    mt_ctx_free(&ctx);
    mt_seg_loss_free(l);
}

static void test_create_rejects_bad_options(void) {
    struct {
        const char *what, *msg;
        mt_seg_loss_opts o;
    } bad[8];
    int nb = 0;
    mt_seg_loss_opts o;
#define BAD(what_, msg_, field, value)                                                             \
    o = default_opts(), o.field = value;                                                           \
    bad[nb].what = what_, bad[nb].msg = msg_, bad[nb].o = o, nb++
    BAD("1 class", "1 classes", n_classes, 1);
    BAD("257 classes", "257 classes", n_classes, 257);
    BAD("negative lambda_dice", "lambda_dice -1", lambda_dice, -1);
    BAD("negative lambda_ce", "lambda_ce -0.5", lambda_ce, -0.5);
    BAD("NaN lambda_ce", "lambda_ce", lambda_ce, NAN);
    BAD("smooth_dr 0", "smooth_dr 0", smooth_dr, 0);
    BAD("negative smooth_nr", "smooth_nr -1", smooth_nr, -1);
#undef BAD
    o = default_opts(), o.lambda_dice = o.lambda_ce = 0;
    bad[nb].what = "both lambdas 0", bad[nb].msg = "lambda_dice 0, lambda_ce 0", bad[nb].o = o;
    nb++;
    for (int i = 0; i < nb; i++) {
        mt_seg_loss *l = NULL;
        MT_CHECK_FAILS(mt_seg_loss_create(&bad[i].o, &l), MT_ERR_ARG, "segmentation loss",
                       bad[i].msg);
        MT_CHECK(l == NULL, "%s: a loss was created", bad[i].what);
        mt_seg_loss_free(l);
    }
    /* The edges that are allowed: 2 and 256 classes, one lambda 0, smooth_nr 0. */
    int classes[] = {2, 256};
    for (int i = 0; i < 2; i++) {
        mt_seg_loss *l = NULL;
        o = default_opts(), o.n_classes = classes[i], o.lambda_ce = 0, o.smooth_nr = 0;
        MT_CHECK_OK(mt_seg_loss_create(&o, &l));
        mt_seg_loss_free(l);
    }
    o = default_opts(), o.sigmoid = true, o.n_classes = 2;
    MT_CHECK(mt_seg_loss_outputs(&o) == 1);
    o.sigmoid = false;
    MT_CHECK(mt_seg_loss_outputs(&o) == 2);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    MT_RUN(test_losses_match_monai);
    MT_RUN(test_bad_mask_names_source_and_image);
    MT_RUN(test_all_padding_batch);
    MT_RUN(test_multilabel_equals_index_sigmoid);
    MT_RUN(test_multilabel_errors);
    MT_RUN(test_create_rejects_bad_options);
    return mt_test_summary();
}
