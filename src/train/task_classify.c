/* task: classify — multi-label classification with BCE-with-logits.
 *
 * Unknown labels (NaN in the pack) neither add to the loss nor get a gradient; rows that pad the
 * last batch of an epoch are treated as all-unknown. Optional per-label pos_weight as PyTorch's
 * BCEWithLogitsLoss. The model is a ResNet or DenseNet from model.*; a 3-channel model gets the
 * grey image repeated over its channels. */
#include <math.h>
#include <string.h>

#include "medtrain/log.h"
#include "medtrain/mem.h"
#include "medtrain/metrics.h"
#include "medtrain/ops.h"
#include "task.h"

typedef struct classify {
    mt_pack *pack;
    const mt_pack_info *info;
    int in_channels, n_labels;
    int cap;           /* rows the buffers below hold */
    float *x;          /* (cap, S, S, in_channels) when in_channels > 1 */
    float *logits;     /* (cap, L) */
    float *dlogits;    /* (cap, L) */
    float *targets;    /* (cap, L), NaN for padding rows */
    float *pos_weight; /* (L) or NULL */
    int size;
} classify;

static mt_status ensure(classify *c, int n, int size) {
    if (n <= c->cap && size == c->size) return MT_OK;
    mt_free(c->x), mt_free(c->logits), mt_free(c->dlogits), mt_free(c->targets);
    size_t rows = (size_t)n, L = (size_t)c->n_labels;
    c->x = c->in_channels > 1
               ? mt_alloc(rows * size * size * c->in_channels * sizeof(float), "input images")
               : NULL;
    c->logits = mt_alloc(rows * L * sizeof(float), "logits");
    c->dlogits = mt_alloc(rows * L * sizeof(float), "logit gradients");
    c->targets = mt_alloc(rows * L * sizeof(float), "targets");
    if ((c->in_channels > 1 && !c->x) || !c->logits || !c->dlogits || !c->targets) {
        c->cap = 0;
        return MT_ERR_NOMEM;
    }
    c->cap = n, c->size = size;
    return MT_OK;
}

static mt_status classify_train_micro(mt_task *t, mt_ctx *ctx, const mt_batch *b, uint64_t seed,
                                      int64_t step, mt_grad_ready_fn ready, void *user,
                                      double *loss_sum, double *count) {
    classify *c = t->state;
    int L = c->n_labels;
    MT_TRY(ensure(c, b->n, b->size));
    mt_tensor x = mt_batch_images(b, c->in_channels, c->x);
    mt_tensor logits = mt_tensor_2d(c->logits, MT_F32, MT_CPU, b->n, L);
    mt_tensor dlogits = mt_tensor_2d(c->dlogits, MT_F32, MT_CPU, b->n, L);
    mt_tensor targets = mt_tensor_2d(c->targets, MT_F32, MT_CPU, b->n, L);
    int64_t known = 0;
    for (int i = 0; i < b->n; i++)
        for (int l = 0; l < L; l++) {
            float v = b->weights[i] > 0 ? b->labels[(size_t)i * L + l] : NAN;
            c->targets[(size_t)i * L + l] = v;
            known += !isnan(v);
        }
    float loss = 0;
    mt_tensor loss_t = mt_tensor_1d(&loss, MT_F32, MT_CPU, 1);
    mt_tensor pw = mt_tensor_1d(c->pos_weight, MT_F32, MT_CPU, L);
    const mt_tensor *pwp = c->pos_weight ? &pw : NULL;
    MT_TRY(mt_model_forward(t->model, ctx, &x, true, seed, (uint64_t)step, &logits));
    MT_TRY(mt_bce_logits_fwd(ctx, &logits, &targets, pwp, &loss_t));
    /* d(sum of terms) = d(mean) * count */
    MT_TRY(mt_bce_logits_bwd(ctx, &logits, &targets, pwp, (float)known, &dlogits));
    MT_TRY(mt_model_backward(t->model, ctx, &dlogits, ready, user));
    *loss_sum = (double)loss * (double)known;
    *count = (double)known;
    return MT_OK;
}

static mt_status classify_predict(mt_task *t, mt_ctx *ctx, const mt_batch *b, float *out) {
    classify *c = t->state;
    MT_TRY(ensure(c, b->n, b->size));
    mt_tensor x = mt_batch_images(b, c->in_channels, c->x);
    mt_tensor logits = mt_tensor_2d(out, MT_F32, MT_CPU, b->n, c->n_labels);
    return mt_model_forward(t->model, ctx, &x, false, 0, 0, &logits);
}

/* Mean BCE over known labels (no pos_weight) and AUROC per label, macro and micro. */
static mt_status classify_summarize(mt_task *t, const float *outputs, const int64_t *idx, int64_t n,
                                    cJSON *into, double *primary) {
    classify *c = t->state;
    int L = c->n_labels;
    const float *labels = mt_pack_labels(c->pack);
    float *targets = mt_alloc((size_t)(n ? n : 1) * L * sizeof(float), "validation targets");
    if (!targets) return MT_ERR_NOMEM;
    double loss = 0;
    int64_t known = 0;
    for (int64_t i = 0; i < n; i++)
        for (int l = 0; l < L; l++) {
            float y = labels[idx[i] * L + l], z = outputs[i * L + l];
            targets[i * L + l] = y;
            if (isnan(y)) continue;
            /* log(1 + exp(-|z|)) + max(z, 0) - z*y, stable for large |z| */
            loss += log1p(exp(-fabs((double)z))) + fmax((double)z, 0.0) - (double)z * y;
            known++;
        }
    mt_score_table tab = {.scores = outputs,
                          .targets = targets,
                          .n = n,
                          .n_labels = L,
                          .names = (const char *const *)c->info->label_names};
    float *thr = mt_calloc((size_t)L, sizeof(float), "thresholds"); /* logits: 0 = prob 0.5 */
    mt_metrics_summary s;
    mt_status st = thr ? mt_metrics_summarize(&tab, thr, NULL, &s) : MT_ERR_NOMEM;
    mt_free(targets), mt_free(thr);
    MT_TRY(st);
    double mean_loss = known ? loss / (double)known : 0.0;
    cJSON_AddNumberToObject(into, "val_loss", mean_loss);
    if (!isnan(s.macro_auroc)) cJSON_AddNumberToObject(into, "val_macro_auroc", s.macro_auroc);
    if (s.micro_auroc.defined)
        cJSON_AddNumberToObject(into, "val_micro_auroc", s.micro_auroc.value);
    cJSON_AddNumberToObject(into, "val_macro_f1", s.macro_f1);
    *primary = isnan(s.macro_auroc) ? -mean_loss : s.macro_auroc;
    return MT_OK;
}

static void classify_describe(mt_task *t, cJSON *into) {
    classify *c = t->state;
    cJSON *names = cJSON_AddArrayToObject(into, "label_names");
    for (int l = 0; l < c->n_labels; l++)
        cJSON_AddItemToArray(names, cJSON_CreateString(c->info->label_names[l]));
    cJSON_AddStringToObject(into, "problem_type", "multi_label_classification");
    cJSON_AddStringToObject(into, "output", "logits; sigmoid gives per-label probabilities");
}

/* Intended use, and each label's prevalence in the training split. */
static void classify_card(mt_task *t, FILE *f) {
    classify *c = t->state;
    fprintf(f, "## Intended use\n\nMulti-label finding detection on frontal chest radiographs, "
               "as a research tool or a second reader under human supervision.\n\n");
    fprintf(f, "Label prevalence in the training split:\n\n");
    const float *lab = mt_pack_labels(c->pack);
    int64_t n;
    const int64_t *idx = mt_pack_split(c->pack, MT_SPLIT_TRAIN, &n);
    fprintf(f, "| label | positives | known | prevalence |\n|---|---:|---:|---:|\n");
    for (int l = 0; l < c->n_labels; l++) {
        int64_t pos = 0, known = 0;
        for (int64_t i = 0; i < n; i++) {
            float v = lab[idx[i] * c->n_labels + l];
            if (isnan(v)) continue;
            known++, pos += v > 0.5f;
        }
        fprintf(f, "| %s | %lld | %lld | %.3f |\n", c->info->label_names[l], (long long)pos,
                (long long)known, known ? (double)pos / (double)known : 0.0);
    }
    fprintf(f, "\n");
}

static void classify_free(mt_task *t) {
    if (!t) return;
    classify *c = t->state;
    if (c) {
        mt_free(c->x), mt_free(c->logits), mt_free(c->dlogits), mt_free(c->targets);
        mt_free(c->pos_weight);
        mt_free(c);
    }
    mt_model_free(t->model);
    mt_free(t);
}

static mt_status read_pos_weight(const mt_config *cfg, classify *c) {
    size_t n = mt_config_len(cfg, "train.pos_weight");
    if (n == 0) return MT_OK;
    if (n != (size_t)c->n_labels)
        return mt_config_fail(cfg, "train.pos_weight",
                              "%zu values for %d labels (the pack's labels, in order)", n,
                              c->n_labels);
    c->pos_weight = mt_alloc((size_t)n * sizeof(float), "pos_weight");
    if (!c->pos_weight) return MT_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        double v = mt_config_float_at(cfg, "train.pos_weight", i);
        if (!(v > 0))
            return mt_config_fail(cfg, "train.pos_weight", "value %zu (%s) must be > 0", i,
                                  c->info->label_names[i]);
        c->pos_weight[i] = (float)v;
    }
    return MT_OK;
}

mt_status mt_task_classify_create(const mt_config *cfg, mt_ctx *ctx, mt_pack *pack, mt_task **out) {
    const mt_pack_info *info = mt_pack_get_info(pack);
    if (info->n_labels < 1)
        return mt_fail(MT_ERR_CONFIG, "%s: the pack has no labels; task classify needs them",
                       mt_pack_path(pack));
    mt_task *t = mt_calloc(1, sizeof *t, "task");
    classify *c = mt_calloc(1, sizeof *c, "classify task");
    if (!t || !c) {
        mt_free(t), mt_free(c);
        return MT_ERR_NOMEM;
    }
    c->pack = pack, c->info = info, c->n_labels = info->n_labels;
    c->in_channels = (int)mt_config_int(cfg, "model.in_channels");
    *t = (mt_task){.name = "classify",
                   .n_outputs = info->n_labels,
                   .state = c,
                   .train_micro = classify_train_micro,
                   .predict = classify_predict,
                   .summarize = classify_summarize,
                   .describe = classify_describe,
                   .card = classify_card,
                   .free = classify_free};
    mt_model_opts mo = {
        .arch = mt_config_str(cfg, "model.arch"),
        .in_channels = c->in_channels,
        .n_outputs = info->n_labels,
        .drop_rate = (float)mt_config_float(cfg, "model.drop_rate"),
        .bn_momentum = (float)mt_config_float(cfg, "model.bn_momentum"),
        .bn_eps = (float)mt_config_float(cfg, "model.bn_eps"),
    };
    mt_status st = read_pos_weight(cfg, c);
    if (st == MT_OK) st = mt_model_create(ctx, &mo, &t->model);
    if (st != MT_OK) {
        classify_free(t);
        return st;
    }
    *out = t;
    return MT_OK;
}
