/* task: segment — a U-Net over the pack's masks with soft Dice, cross-entropy or both.
 *
 * Masks come from the pack as class indices (class 0 background), or as multi-label planes
 * (one 0/1 plane per structure, structures may overlap, no background). Two heads:
 *   softmax: one output per class (background included); CE over classes, Dice over the
 *            softmax probabilities against the one-hot mask (MONAI: DiceCELoss(softmax=True,
 *            to_onehot_y=True)), the background class in the Dice only when asked. Index masks
 *            only: a softmax cannot say that a pixel is in two structures.
 *   sigmoid: one output per foreground class (a binary mask gives one output; a multi-label
 *            pack one per structure, its planes the targets); BCE-with-logits per class and
 *            pixel, Dice over the sigmoid probabilities (MONAI: sigmoid=True).
 *
 * The loss (segloss.c) is computed per image with MONAI's semantics (batch=False); the task
 * reports the SUM over real images and their COUNT, and the trainer divides by the count over all
 * ranks: the batch mean is MONAI's DiceCELoss over the global batch, and 1 rank x 16 equals
 * 2 ranks x 8.
 *
 * Validation outputs per image: for each foreground class (every class of a multi-label pack)
 * the intersection, predicted and true pixel counts of the hard prediction (argmax, or
 * sigmoid > 0.5), then the image's loss. */
#include <math.h>
#include <string.h>

#include "medtrain/log.h"
#include "medtrain/mem.h"
#include "medtrain/ops.h"
#include "segloss.h"
#include "task.h"

typedef struct segment {
    mt_pack *pack;
    const mt_pack_info *info;
    int in_channels;
    int n_classes;   /* in the pack's masks, background included (multi-label: structures) */
    bool multilabel; /* the pack's masks are (C,H,W) 0/1 planes */
    int fg;          /* foreground classes scored: n_classes - 1, or n_classes (multi-label) */
    int k;           /* model outputs */
    mt_seg_loss_opts lo;
    mt_seg_loss *loss;
    int cap, size; /* rows and size the buffers hold */
    float *x, *logits, *dlogits;
    double *img_loss; /* (cap) */
} segment;

static void free_buffers(segment *s) {
    mt_free(s->x), mt_free(s->logits), mt_free(s->dlogits), mt_free(s->img_loss);
    s->x = s->logits = s->dlogits = NULL, s->img_loss = NULL;
    s->cap = 0;
}

static mt_status ensure(segment *s, int n, int size) {
    if (n <= s->cap && size == s->size) return MT_OK;
    free_buffers(s);
    size_t px = (size_t)n * size * size, e = px * s->k * sizeof(float);
    s->x =
        s->in_channels > 1 ? mt_alloc(px * s->in_channels * sizeof(float), "input images") : NULL;
    s->logits = mt_alloc(e, "logits");
    s->dlogits = mt_alloc(e, "logit gradients");
    s->img_loss = mt_alloc((size_t)n * sizeof(double), "image losses");
    if ((s->in_channels > 1 && !s->x) || !s->logits || !s->dlogits || !s->img_loss) {
        free_buffers(s);
        return MT_ERR_NOMEM;
    }
    s->cap = n, s->size = size;
    return MT_OK;
}

/* Name of foreground class c (0-based over the scored classes). */
static const char *fg_name(const segment *s, int c) {
    return s->info->mask_classes[s->multilabel ? c : c + 1];
}

static mt_status segment_train_micro(mt_task *t, mt_ctx *ctx, const mt_batch *b, uint64_t seed,
                                     int64_t step, mt_grad_ready_fn ready, void *user,
                                     double *loss_sum, double *count) {
    segment *s = t->state;
    int S = b->size;
    MT_TRY(ensure(s, b->n, S));
    mt_tensor x = mt_batch_images(b, s->in_channels, s->x);
    mt_tensor logits = mt_tensor_4d(s->logits, MT_F32, MT_CPU, b->n, S, S, s->k);
    MT_TRY(mt_model_forward(t->model, ctx, &x, true, seed, (uint64_t)step, &logits));
    MT_TRY(mt_seg_loss_compute(s->loss, ctx, s->logits, b->masks, b->weights, b->n, S,
                               mt_pack_path(s->pack), b->indices, s->img_loss, s->dlogits));
    double total = 0;
    int real = 0;
    for (int i = 0; i < b->n; i++) total += s->img_loss[i], real += b->weights[i] > 0;
    mt_tensor dlogits = mt_tensor_4d(s->dlogits, MT_F32, MT_CPU, b->n, S, S, s->k);
    MT_TRY(mt_model_backward(t->model, ctx, &dlogits, ready, user));
    *loss_sum = total;
    *count = real;
    return MT_OK;
}

/* Per image: (inter, predicted, true) per foreground class of the hard prediction, then the
 * image's loss. */
static mt_status segment_predict(mt_task *t, mt_ctx *ctx, const mt_batch *b, float *out) {
    segment *s = t->state;
    int K = s->k, S = b->size, F = s->fg;
    int64_t P = (int64_t)S * S;
    MT_TRY(ensure(s, b->n, S));
    mt_tensor x = mt_batch_images(b, s->in_channels, s->x);
    mt_tensor logits = mt_tensor_4d(s->logits, MT_F32, MT_CPU, b->n, S, S, K);
    MT_TRY(mt_model_forward(t->model, ctx, &x, false, 0, 0, &logits));
    MT_TRY(mt_seg_loss_compute(s->loss, ctx, s->logits, b->masks, b->weights, b->n, S,
                               mt_pack_path(s->pack), b->indices, s->img_loss, NULL));
    for (int i = 0; i < b->n; i++) {
        float *o = out + (size_t)i * (3 * F + 1);
        memset(o, 0, (3 * (size_t)F + 1) * sizeof(float));
        if (b->weights[i] <= 0) continue;
        o[3 * F] = (float)s->img_loss[i];
        const float *z = s->logits + (size_t)i * P * K;
        if (s->multilabel) {
            /* plane c of the mask is class c's truth, output c its logit */
            for (int c = 0; c < F; c++) {
                const uint8_t *m = b->masks + ((size_t)i * F + c) * P;
                for (int64_t p = 0; p < P; p++) {
                    bool on = z[p * K + c] > 0, truth = m[p] != 0;
                    o[3 * c] += on && truth, o[3 * c + 1] += on, o[3 * c + 2] += truth;
                }
            }
            continue;
        }
        const uint8_t *m = b->masks + (size_t)i * P;
        for (int64_t p = 0; p < P; p++) {
            int pred = 0;
            if (s->lo.sigmoid) {
                /* a pixel can be in several classes; count each class with a logit > 0 */
                for (int c = 1; c <= F; c++) {
                    bool on = z[p * K + c - 1] > 0, truth = m[p] == c;
                    o[3 * (c - 1)] += on && truth, o[3 * (c - 1) + 1] += on;
                    o[3 * (c - 1) + 2] += truth;
                }
                continue;
            }
            for (int c = 1; c < K; c++)
                if (z[p * K + c] > z[p * K + pred]) pred = c;
            if (pred > 0) o[3 * (pred - 1) + 1] += 1;
            if (m[p] > 0) o[3 * (m[p] - 1) + 2] += 1;
            if (pred > 0 && pred == m[p]) o[3 * (pred - 1)] += 1;
        }
    }
    return MT_OK;
}

/* Mean Dice per class over the images whose truth has the class (MONAI's ignore_empty), their
 * mean, and the mean loss. */
static mt_status segment_summarize(mt_task *t, const float *outputs, const int64_t *idx, int64_t n,
                                   cJSON *into, double *primary) {
    (void)idx;
    segment *s = t->state;
    int F = s->fg;
    double loss = 0, mean = 0;
    int defined = 0;
    for (int64_t i = 0; i < n; i++) loss += outputs[i * (3 * F + 1) + 3 * F];
    for (int c = 0; c < F; c++) {
        double sum = 0;
        int64_t cnt = 0;
        for (int64_t i = 0; i < n; i++) {
            const float *o = outputs + i * (3 * F + 1) + 3 * c;
            if (o[2] <= 0) continue;
            sum += 2.0 * o[0] / ((double)o[1] + o[2]);
            cnt++;
        }
        if (!cnt) continue;
        char key[96];
        snprintf(key, sizeof key, "val_dice_%s", fg_name(s, c));
        cJSON_AddNumberToObject(into, key, sum / (double)cnt);
        mean += sum / (double)cnt, defined++;
    }
    double mean_loss = n ? loss / (double)n : 0.0;
    cJSON_AddNumberToObject(into, "val_loss", mean_loss);
    if (defined) cJSON_AddNumberToObject(into, "val_mean_dice", mean / defined);
    *primary = defined ? mean / defined : -mean_loss;
    return MT_OK;
}

static void segment_describe(mt_task *t, cJSON *into) {
    segment *s = t->state;
    cJSON *names = cJSON_AddArrayToObject(into, "class_names");
    for (int c = 0; c < s->n_classes; c++)
        cJSON_AddItemToArray(names, cJSON_CreateString(s->info->mask_classes[c]));
    cJSON_AddStringToObject(into, "problem_type", "semantic_segmentation");
    cJSON_AddStringToObject(into, "head", s->lo.sigmoid ? "sigmoid" : "softmax");
    cJSON_AddStringToObject(into, "mask_layout", s->multilabel ? "multilabel" : "index");
    cJSON_AddStringToObject(
        into, "output",
        s->multilabel   ? "per-pixel logits (N,H,W,classes) in medtrain, (N,classes,H,W) in "
                          "PyTorch; sigmoid > 0.5 marks each class (classes may overlap; no "
                          "background class)"
        : s->lo.sigmoid ? "per-pixel logits (N,H,W,classes-1) in medtrain, "
                          "(N,classes-1,H,W) in PyTorch; sigmoid > 0.5 marks "
                          "each foreground class"
                        : "per-pixel logits (N,H,W,classes) in medtrain, "
                          "(N,classes,H,W) in PyTorch; argmax gives the class");
    const mt_model_opts *mo = mt_model_options(t->model);
    cJSON_AddNumberToObject(into, "depth", mo->depth);
    cJSON_AddNumberToObject(into, "channels", mo->channels);
    cJSON_AddStringToObject(into, "norm", mo->norm == MT_NORM_INSTANCE ? "instance" : "batch");
    cJSON_AddStringToObject(into, "upsample", mo->bilinear ? "bilinear" : "transpose");
}

static void segment_card(mt_task *t, FILE *f) {
    segment *s = t->state;
    fprintf(f, "## Intended use\n\nSegmentation of anatomical structures (");
    for (int c = 0; c < s->fg; c++) fprintf(f, "%s%s", c ? ", " : "", fg_name(s, c));
    fprintf(f, ") on frontal chest radiographs, as a research tool or to pre-fill contours that a "
               "qualified reader corrects.\n\n");
}

static void segment_free(mt_task *t) {
    if (!t) return;
    segment *s = t->state;
    if (s) {
        free_buffers(s);
        mt_seg_loss_free(s->loss);
        mt_free(s);
    }
    mt_model_free(t->model);
    mt_free(t);
}

static mt_status read_options(const mt_config *cfg, segment *s, mt_model_opts *mo) {
    const char *arch = mt_config_str(cfg, "model.arch");
    if (strcmp(arch, "unet"))
        return mt_config_fail(cfg, "model.arch", "task segment needs arch unet, not %s", arch);
    mt_seg_loss_opts *lo = &s->lo;
    lo->n_classes = s->n_classes;
    lo->multilabel = s->multilabel;
    lo->sigmoid = !strcmp(mt_config_str(cfg, "model.head"), "sigmoid");
    if (s->multilabel && !lo->sigmoid)
        return mt_config_fail(cfg, "model.head",
                              "%s has multi-label masks (%d structures that may overlap): task "
                              "segment needs model.head: sigmoid, not %s (a softmax gives each "
                              "pixel one class)",
                              mt_pack_path(s->pack), s->n_classes,
                              mt_config_str(cfg, "model.head"));
    s->k = mt_seg_loss_outputs(lo);
    const char *loss = mt_config_str(cfg, "train.loss");
    lo->lambda_dice = strcmp(loss, "ce") ? mt_config_float(cfg, "train.lambda_dice") : 0;
    lo->lambda_ce = strcmp(loss, "dice") ? mt_config_float(cfg, "train.lambda_ce") : 0;
    if (lo->lambda_dice < 0 || lo->lambda_ce < 0 || lo->lambda_dice + lo->lambda_ce <= 0)
        return mt_config_fail(cfg, "train.lambda_dice",
                              "lambda_dice %g and lambda_ce %g: both >= 0, one > 0",
                              lo->lambda_dice, lo->lambda_ce);
    lo->include_bg = mt_config_bool(cfg, "train.dice_include_background");
    lo->squared = mt_config_bool(cfg, "train.dice_squared");
    lo->smooth_nr = mt_config_float(cfg, "train.dice_smooth_nr");
    lo->smooth_dr = mt_config_float(cfg, "train.dice_smooth_dr");
    if (lo->smooth_nr < 0 || !(lo->smooth_dr > 0))
        return mt_config_fail(cfg, "train.dice_smooth_dr",
                              "smooth_nr %g must be >= 0 and smooth_dr %g > 0", lo->smooth_nr,
                              lo->smooth_dr);
    if (!lo->sigmoid && !lo->include_bg && s->k < 2 && lo->lambda_dice > 0)
        return mt_config_fail(cfg, "train.dice_include_background",
                              "a softmax head over %d class leaves no class for the Dice", s->k);
    MT_TRY(mt_seg_loss_create(lo, &s->loss));
    *mo = (mt_model_opts){
        .arch = arch,
        .in_channels = s->in_channels,
        .n_outputs = s->k,
        .bn_momentum = (float)mt_config_float(cfg, "model.bn_momentum"),
        .bn_eps = (float)mt_config_float(cfg, "model.bn_eps"),
        .depth = (int)mt_config_int(cfg, "model.depth"),
        .channels = (int)mt_config_int(cfg, "model.channels"),
        .norm =
            strcmp(mt_config_str(cfg, "model.norm"), "instance") ? MT_NORM_BATCH : MT_NORM_INSTANCE,
        .bilinear = !strcmp(mt_config_str(cfg, "model.upsample"), "bilinear"),
    };
    if (mo->depth < 1 || mo->depth > 8)
        return mt_config_fail(cfg, "model.depth", "%d: expected 1 to 8", mo->depth);
    if (mo->channels < 1)
        return mt_config_fail(cfg, "model.channels", "%d: expected >= 1", mo->channels);
    return MT_OK;
}

mt_status mt_task_segment_create(const mt_config *cfg, mt_ctx *ctx, mt_pack *pack, mt_task **out) {
    const mt_pack_info *info = mt_pack_get_info(pack);
    if (info->n_mask_classes == 0 || (!info->mask_multilabel && info->n_mask_classes < 2))
        return mt_fail(MT_ERR_CONFIG,
                       "%s: the pack has no masks; task segment needs them (medtrain pack "
                       "--masks DIR)",
                       mt_pack_path(pack));
    mt_task *t = mt_calloc(1, sizeof *t, "task");
    segment *s = mt_calloc(1, sizeof *s, "segment task");
    if (!t || !s) {
        mt_free(t), mt_free(s);
        return MT_ERR_NOMEM;
    }
    s->pack = pack, s->info = info, s->n_classes = info->n_mask_classes;
    s->multilabel = info->mask_multilabel;
    s->fg = s->multilabel ? s->n_classes : s->n_classes - 1;
    s->in_channels = (int)mt_config_int(cfg, "model.in_channels");
    *t = (mt_task){.name = "segment",
                   .n_outputs = 3 * s->fg + 1,
                   .needs_masks = true,
                   .state = s,
                   .train_micro = segment_train_micro,
                   .predict = segment_predict,
                   .summarize = segment_summarize,
                   .describe = segment_describe,
                   .card = segment_card,
                   .free = segment_free};
    mt_model_opts mo;
    mt_status st = read_options(cfg, s, &mo);
    if (st == MT_OK) st = mt_model_create(ctx, &mo, &t->model);
    if (st != MT_OK) {
        segment_free(t);
        return st;
    }
    *out = t;
    return MT_OK;
}
