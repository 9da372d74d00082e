/* The segmentation losses of task: segment (docs/SEGMENTATION.md): soft Dice, cross-entropy
 * (softmax) or BCE-with-logits (sigmoid), and their weighted sum, per image, with MONAI's
 * DiceCELoss semantics (batch=False), and the gradient of their sum over the real images.
 * Host buffers on a CPU context (the task runs its loss there). */
#ifndef MEDTRAIN_TRAIN_SEGLOSS_H
#define MEDTRAIN_TRAIN_SEGLOSS_H

#include <stdbool.h>
#include <stdint.h>
#include "medtrain/ops.h"

typedef struct mt_seg_loss_opts {
    int n_classes; /* mask classes, background (0) included; >= 2 (multilabel: structures, >= 1) */
    bool sigmoid;  /* sigmoid head (n_classes - 1 outputs) instead of softmax (n_classes) */
    bool multilabel; /* masks are (n,C,S,S) 0/1 planes, C = n_classes, used as g directly; needs
                        sigmoid; n_classes outputs */
    bool include_bg; /* softmax: class 0 counts in the Dice */
    bool squared;    /* squared terms in the Dice denominator */
    double smooth_nr, smooth_dr, lambda_dice, lambda_ce;
} mt_seg_loss_opts;

/* The model outputs a head needs. */
int mt_seg_loss_outputs(const mt_seg_loss_opts *o);

typedef struct mt_seg_loss mt_seg_loss;

mt_status mt_seg_loss_create(const mt_seg_loss_opts *o, mt_seg_loss **out);
void mt_seg_loss_free(mt_seg_loss *l);

/* One batch of n images of S x S: logits (n,S,S,K) NHWC, masks (n,S,S) class indices (or, with
 * multilabel, (n,K,S,S) 0/1 planes), weights (n) (> 0: a real image, else padding, which gets
 * loss 0 and no gradient). img_loss (n) gets each image's loss
 * lambda_dice * mean_c dice(n,c) + lambda_ce * CE_n. When dlogits (n,S,S,K) is not NULL it is
 * overwritten with d(sum of img_loss)/d(logits). A mask value >= n_classes (multilabel: > 1)
 * fails naming `source` and the image's index from indices (n). */
mt_status mt_seg_loss_compute(mt_seg_loss *l, mt_ctx *ctx, const float *logits,
                              const uint8_t *masks, const float *weights, int n, int S,
                              const char *source, const int64_t *indices, double *img_loss,
                              float *dlogits);

#endif
