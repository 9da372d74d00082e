/* Tasks: what differs between training a classifier, a segmenter or a LoRA adapter, behind one
 * small table so that the training loop (trainer.c) stays the same for all of them.
 *
 * A task owns its model and its loss. The trainer hands it micro-batches; the task runs forward,
 * the loss and backward, and reports the loss as a SUM over its loss terms with their COUNT
 * (known labels, pixels, tokens), so that the trainer can normalise by the count over all
 * micro-batches and ranks: 1 rank x batch 16 and 2 ranks x batch 8 then give the same gradient
 * even when some labels are unknown. */
#ifndef MEDTRAIN_TRAIN_TASK_H
#define MEDTRAIN_TRAIN_TASK_H

#include <stdio.h>

#include <cjson/cJSON.h>
#include "medtrain/config.h"
#include "medtrain/loader.h"
#include "medtrain/model.h"
#include "medtrain/pack.h"

typedef struct mt_task mt_task;

struct mt_task {
    const char *name;
    mt_model *model;
    int n_outputs;    /* values predict() writes per image */
    bool needs_masks; /* the loaders deliver the pack's masks */
    void *state;

    /* Forward, loss and backward of one micro-batch: grads += d(sum of loss terms)/d(params).
     * ready is passed to the model's backward (NULL except on the last micro-batch of a step). */
    mt_status (*train_micro)(mt_task *t, mt_ctx *ctx, const mt_batch *b, uint64_t seed,
                             int64_t step, mt_grad_ready_fn ready, void *user, double *loss_sum,
                             double *count);
    /* Eval-mode outputs for the batch's rows: out (b->n, n_outputs). */
    mt_status (*predict)(mt_task *t, mt_ctx *ctx, const mt_batch *b, float *out);
    /* Validation summary of outputs (n, n_outputs) against the pack rows idx (n): adds fields
     * to `into` (e.g. "val_loss", "val_macro_auroc") and sets *primary (higher is better). */
    mt_status (*summarize)(mt_task *t, const float *outputs, const int64_t *idx, int64_t n,
                           cJSON *into, double *primary);
    /* Task fields for the exported config.json. */
    void (*describe)(mt_task *t, cJSON *into);
    /* The model card's task sections (Markdown): intended use and what the data holds. */
    void (*card)(mt_task *t, FILE *f);
    void (*free)(mt_task *t);
};

/* task: classify. The model comes from model.* keys; labels from the pack. */
mt_status mt_task_classify_create(const mt_config *cfg, mt_ctx *ctx, mt_pack *pack, mt_task **out);
/* task: segment. A U-Net (model.arch unet) over the pack's masks (docs/SEGMENTATION.md). */
mt_status mt_task_segment_create(const mt_config *cfg, mt_ctx *ctx, mt_pack *pack, mt_task **out);

#endif
