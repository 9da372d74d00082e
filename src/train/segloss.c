/* Segmentation losses (segloss.h), on the ops of ops.h.
 *
 * Per image n and Dice channel c, with p the probabilities (softmax over classes, or sigmoid per
 * class) and g the one-hot mask (multi-label masks: their 0/1 planes, transposed to NHWC):
 *   dice(n,c) = 1 - (2 I + smooth_nr) / (D + smooth_dr),  I = sum p g,  D = sum p + sum g
 *               (squared: sum p^2 + sum g^2)
 *   CE_n      = mean over the image's pixels of -log softmax (softmax head), or mean over pixels
 *               and classes of BCE-with-logits (sigmoid head)
 *   loss_n    = lambda_dice mean_c dice(n,c) + lambda_ce CE_n
 * Gradients: d dice / dI = -2/(D+sdr), d dice / dD = (2I+snr)/(D+sdr)^2, taken through the sums by
 * mt_dice_bwd and through the softmax or sigmoid; the CE ops give d(mean)/dlogits, scaled by the
 * number of real images to make it d(sum of CE_n). */
#include "segloss.h"

#include <math.h>
#include <string.h>

#include "medtrain/mem.h"

#define CE_IGNORE (-100)

struct mt_seg_loss {
    mt_seg_loss_opts o;
    int k;         /* outputs */
    int cap, size; /* images and size the buffers hold */
    float *probs, *dprobs, *tmp, *g, *bce_t;
    int32_t *ce_t;
    float *sums, *coef; /* (cap, k, 3), (cap, k, 2) */
};

int mt_seg_loss_outputs(const mt_seg_loss_opts *o) {
    if (o->multilabel) return o->n_classes;
    return o->sigmoid ? o->n_classes - 1 : o->n_classes;
}

static void free_buffers(mt_seg_loss *l) {
    mt_free(l->probs), mt_free(l->dprobs), mt_free(l->tmp), mt_free(l->g), mt_free(l->bce_t);
    mt_free(l->ce_t), mt_free(l->sums), mt_free(l->coef);
    l->probs = l->dprobs = l->tmp = l->g = l->bce_t = l->sums = l->coef = NULL;
    l->ce_t = NULL;
    l->cap = 0;
}

mt_status mt_seg_loss_create(const mt_seg_loss_opts *o, mt_seg_loss **out) {
    if (o->multilabel && (o->n_classes < 1 || o->n_classes > 256))
        return mt_fail(MT_ERR_ARG, "segmentation loss: %d multi-label classes (expected 1..256)",
                       o->n_classes);
    if (o->multilabel && !o->sigmoid)
        return mt_fail(MT_ERR_ARG,
                       "segmentation loss: multi-label masks need a sigmoid head (classes "
                       "overlap; a softmax picks one class per pixel)");
    if (!o->multilabel && (o->n_classes < 2 || o->n_classes > 256))
        return mt_fail(MT_ERR_ARG, "segmentation loss: %d classes (expected 2..256)", o->n_classes);
    if (!(o->lambda_dice >= 0) || !(o->lambda_ce >= 0) || o->lambda_dice + o->lambda_ce <= 0)
        return mt_fail(MT_ERR_ARG, "segmentation loss: lambda_dice %g, lambda_ce %g",
                       o->lambda_dice, o->lambda_ce);
    if (!(o->smooth_nr >= 0) || !(o->smooth_dr > 0))
        return mt_fail(MT_ERR_ARG, "segmentation loss: smooth_nr %g, smooth_dr %g", o->smooth_nr,
                       o->smooth_dr);
    mt_seg_loss *l = mt_calloc(1, sizeof *l, "segmentation loss");
    if (!l) return MT_ERR_NOMEM;
    l->o = *o;
    l->k = mt_seg_loss_outputs(o);
    *out = l;
    return MT_OK;
}

void mt_seg_loss_free(mt_seg_loss *l) {
    if (!l) return;
    free_buffers(l);
    mt_free(l);
}

static mt_status ensure(mt_seg_loss *l, int n, int size) {
    if (n <= l->cap && size == l->size) return MT_OK;
    free_buffers(l);
    size_t px = (size_t)n * size * size, e = px * l->k * sizeof(float);
    l->probs = mt_alloc(e, "probabilities");
    l->dprobs = mt_alloc(e, "probability gradients");
    l->tmp = mt_alloc(e, "loss scratch");
    l->g = mt_alloc(e, "one-hot masks");
    l->bce_t = l->o.sigmoid ? mt_alloc(e, "BCE targets") : NULL;
    l->ce_t = l->o.sigmoid ? NULL : mt_alloc(px * sizeof(int32_t), "class targets");
    l->sums = mt_alloc((size_t)n * l->k * 3 * sizeof(float), "Dice sums");
    l->coef = mt_alloc((size_t)n * l->k * 2 * sizeof(float), "Dice coefficients");
    if (!l->probs || !l->dprobs || !l->tmp || !l->g || (l->o.sigmoid ? !l->bce_t : !l->ce_t) ||
        !l->sums || !l->coef) {
        free_buffers(l);
        return MT_ERR_NOMEM;
    }
    l->cap = n, l->size = size;
    return MT_OK;
}

/* g (n,P,K) from multi-label planes (n,K,P) of 0/1 (zero on padding). */
static mt_status planes_to_g(mt_seg_loss *l, const uint8_t *masks, const float *weights, int n,
                             size_t P, const char *source, const int64_t *indices) {
    int K = l->k;
    for (int i = 0; i < n; i++) {
        bool real = weights[i] > 0;
        float *g = l->g + (size_t)i * P * K;
        for (int c = 0; c < K; c++) {
            const uint8_t *m = masks + ((size_t)i * K + c) * P;
            for (size_t p = 0; p < P; p++) {
                if (real && m[p] > 1)
                    return mt_fail(MT_ERR_FORMAT,
                                   "%s: image %lld: multi-label mask value %d in class %d, "
                                   "expected 0 or 1",
                                   source, (long long)(indices ? indices[i] : i), m[p], c);
                g[p * K + c] = real ? (float)m[p] : 0.0f;
            }
        }
    }
    return MT_OK;
}

/* One-hot g (n,P,k), CE class targets (CE_IGNORE on padding) or BCE targets (NaN on padding). */
static mt_status targets(mt_seg_loss *l, const uint8_t *masks, const float *weights, int n,
                         size_t P, const char *source, const int64_t *indices) {
    int K = l->k;
    if (l->o.multilabel) {
        MT_TRY(planes_to_g(l, masks, weights, n, P, source, indices));
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < P * K; j++) {
                size_t e = (size_t)i * P * K + j;
                l->bce_t[e] = weights[i] > 0 ? l->g[e] : NAN;
            }
        return MT_OK;
    }
    memset(l->g, 0, (size_t)n * P * K * sizeof(float));
    for (int i = 0; i < n; i++) {
        bool real = weights[i] > 0;
        const uint8_t *m = masks + (size_t)i * P;
        float *g = l->g + (size_t)i * P * K;
        for (size_t p = 0; p < P; p++) {
            int c = m[p];
            if (real && c >= l->o.n_classes)
                return mt_fail(MT_ERR_FORMAT,
                               "%s: image %lld: mask value %d, but there are %d classes", source,
                               (long long)(indices ? indices[i] : i), c, l->o.n_classes);
            int ch = l->o.sigmoid ? c - 1 : c;
            if (real && ch >= 0) g[p * K + ch] = 1;
            if (!l->o.sigmoid) l->ce_t[(size_t)i * P + p] = real ? c : CE_IGNORE;
        }
        if (l->o.sigmoid)
            for (size_t j = 0; j < P * K; j++) l->bce_t[(size_t)i * P * K + j] = real ? g[j] : NAN;
    }
    return MT_OK;
}

static bool dice_channel(const mt_seg_loss *l, int ch) {
    return l->o.sigmoid || ch > 0 || l->o.include_bg;
}

/* img_loss[i] += lambda_dice mean_c dice(i,c); coef = its gradient w.r.t. the sums. */
static mt_status dice_terms(mt_seg_loss *l, mt_ctx *ctx, const float *weights, int n, int64_t P,
                            double *img_loss) {
    int K = l->k, nd = 0;
    for (int ch = 0; ch < K; ch++) nd += dice_channel(l, ch);
    if (nd == 0) return MT_OK;
    mt_tensor p = mt_tensor_3d(l->probs, MT_F32, MT_CPU, n, P, K);
    mt_tensor g = mt_tensor_3d(l->g, MT_F32, MT_CPU, n, P, K);
    mt_tensor sums = mt_tensor_3d(l->sums, MT_F32, MT_CPU, n, K, 3);
    MT_TRY(mt_dice_sums(ctx, &p, &g, l->o.squared, &sums));
    double w = l->o.lambda_dice / nd;
    for (int i = 0; i < n; i++) {
        double loss = 0;
        for (int ch = 0; ch < K; ch++) {
            const float *q = l->sums + ((size_t)i * K + ch) * 3;
            float *cf = l->coef + ((size_t)i * K + ch) * 2;
            cf[0] = cf[1] = 0;
            if (weights[i] <= 0 || !dice_channel(l, ch)) continue;
            double den = (double)q[1] + q[2] + l->o.smooth_dr, num = 2.0 * q[0] + l->o.smooth_nr;
            loss += 1 - num / den;
            cf[0] = (float)(w * -2 / den);
            cf[1] = (float)(w * num / (den * den));
        }
        img_loss[i] += w * loss;
    }
    return MT_OK;
}

/* dlogits += the Dice gradient, through the softmax or sigmoid. */
static mt_status dice_backward(mt_seg_loss *l, mt_ctx *ctx, const float *logits, int n, int64_t P,
                               float *dlogits) {
    int K = l->k;
    mt_tensor p3 = mt_tensor_3d(l->probs, MT_F32, MT_CPU, n, P, K);
    mt_tensor g3 = mt_tensor_3d(l->g, MT_F32, MT_CPU, n, P, K);
    mt_tensor dp3 = mt_tensor_3d(l->dprobs, MT_F32, MT_CPU, n, P, K);
    mt_tensor coef = mt_tensor_3d(l->coef, MT_F32, MT_CPU, n, K, 2);
    MT_TRY(mt_dice_bwd(ctx, &p3, &g3, &coef, l->o.squared, &dp3));
    mt_tensor dp = mt_tensor_2d(l->dprobs, MT_F32, MT_CPU, n * P, K);
    mt_tensor t = mt_tensor_2d(l->tmp, MT_F32, MT_CPU, n * P, K);
    mt_tensor dz = mt_tensor_2d(dlogits, MT_F32, MT_CPU, n * P, K);
    if (l->o.sigmoid) {
        mt_tensor z = mt_tensor_2d((float *)logits, MT_F32, MT_CPU, n * P, K);
        MT_TRY(mt_act_bwd(ctx, MT_ACT_SIGMOID, &z, &dp, &t));
    } else {
        mt_tensor p = mt_tensor_2d(l->probs, MT_F32, MT_CPU, n * P, K);
        MT_TRY(mt_softmax_bwd(ctx, false, &p, &dp, &t));
    }
    return mt_axpy(ctx, 1.0f, &t, &dz);
}

/* Mean CE (or BCE) over the known targets of rows [row0, row0 + rows). */
static mt_status ce_mean(mt_seg_loss *l, mt_ctx *ctx, const float *logits, int64_t row0,
                         int64_t rows, float *loss) {
    int K = l->k;
    mt_tensor out = mt_tensor_1d(loss, MT_F32, MT_CPU, 1);
    mt_tensor z = mt_tensor_2d((float *)logits + row0 * K, MT_F32, MT_CPU, rows, K);
    if (l->o.sigmoid) {
        mt_tensor y = mt_tensor_2d(l->bce_t + row0 * K, MT_F32, MT_CPU, rows, K);
        return mt_bce_logits_fwd(ctx, &z, &y, NULL, &out);
    }
    mt_tensor y = mt_tensor_1d(l->ce_t + row0, MT_I32, MT_CPU, rows);
    return mt_cross_entropy_fwd(ctx, &z, &y, CE_IGNORE, &out);
}

mt_status mt_seg_loss_compute(mt_seg_loss *l, mt_ctx *ctx, const float *logits,
                              const uint8_t *masks, const float *weights, int n, int S,
                              const char *source, const int64_t *indices, double *img_loss,
                              float *dlogits) {
    int K = l->k;
    int64_t P = (int64_t)S * S;
    MT_TRY(ensure(l, n, S));
    MT_TRY(targets(l, masks, weights, n, (size_t)P, source, indices));
    int real = 0;
    for (int i = 0; i < n; i++) img_loss[i] = 0, real += weights[i] > 0;
    mt_tensor z = mt_tensor_2d((float *)logits, MT_F32, MT_CPU, n * P, K);
    mt_tensor dz = mt_tensor_2d(dlogits, MT_F32, MT_CPU, n * P, K);
    if (dlogits) MT_TRY(mt_tensor_zero(ctx, &dz));
    if (l->o.lambda_ce > 0 && real > 0) {
        for (int i = 0; i < n; i++) {
            if (weights[i] <= 0) continue;
            float ce = 0;
            MT_TRY(ce_mean(l, ctx, logits, i * P, P, &ce));
            img_loss[i] += l->o.lambda_ce * ce;
        }
        float dloss = (float)(l->o.lambda_ce * real); /* d(sum_n CE_n) = d(mean) x images */
        if (dlogits && l->o.sigmoid) {
            mt_tensor y = mt_tensor_2d(l->bce_t, MT_F32, MT_CPU, n * P, K);
            MT_TRY(mt_bce_logits_bwd(ctx, &z, &y, NULL, dloss, &dz));
        } else if (dlogits) {
            mt_tensor y = mt_tensor_1d(l->ce_t, MT_I32, MT_CPU, n * P);
            MT_TRY(mt_cross_entropy_bwd(ctx, &z, &y, CE_IGNORE, dloss, &dz));
        }
    }
    if (l->o.lambda_dice > 0) {
        mt_tensor p = mt_tensor_2d(l->probs, MT_F32, MT_CPU, n * P, K);
        MT_TRY(l->o.sigmoid ? mt_act_fwd(ctx, MT_ACT_SIGMOID, &z, &p)
                            : mt_softmax_fwd(ctx, false, &z, &p));
        MT_TRY(dice_terms(l, ctx, weights, n, P, img_loss));
        if (dlogits) MT_TRY(dice_backward(l, ctx, logits, n, P, dlogits));
    }
    return MT_OK;
}
