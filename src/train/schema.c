/* The job schema of `medtrain train`: every key a job file may set, with its default and help.
 * jobs/classifier.yaml and docs/CLASSIFIER.md document the same keys; `medtrain train --help`
 * prints this table. */
#include <string.h>

#include "medtrain/train.h"

static const mt_cfg_key schema[] = {
    {"task", MT_CFG_STR, NULL, MT_CFG_REQUIRED, "classify|segment", "what to train"},
    {"run.dir", MT_CFG_STR, NULL, MT_CFG_REQUIRED, NULL,
     "the run directory (config, provenance, log, checkpoints, exported model)"},
    {"run.seed", MT_CFG_INT, "0", 0, NULL, "seed of initialisation, sampling and augmentation"},
    {"data.pack", MT_CFG_STR, NULL, MT_CFG_REQUIRED, NULL, "the dataset pack (medtrain pack)"},
    {"data.size", MT_CFG_INT, "0", 0, NULL, "input size in pixels (0: the pack's image size)"},
    {"data.augment", MT_CFG_BOOL, "true", 0, NULL,
     "random resized crop, small rotation, brightness/contrast/gamma on training images"},
    {"data.norm", MT_CFG_STR, "meanstd", 0, "meanstd|xrv|none",
     "input normalisation: (x-mean)/std on [0,1], torchxrayvision's [-1024,1024], or [0,1]"},
    {"data.mean", MT_CFG_FLOAT, "0.5", 0, NULL, "mean for data.norm=meanstd"},
    {"data.std", MT_CFG_FLOAT, "0.25", 0, NULL, "std for data.norm=meanstd"},
    {"data.prefetch", MT_CFG_INT, "2", 0, NULL, "batches the loader reads ahead"},
    {"model.arch", MT_CFG_STR, "resnet18", 0, "resnet18|resnet34|resnet50|densenet121|unet",
     "architecture (torchvision parameter names; unet: docs/SEGMENTATION.md)"},
    {"model.in_channels", MT_CFG_INT, "1", 0, NULL, "1 (grey) or 3 (grey repeated)"},
    {"model.pretrained", MT_CFG_STR, "\"\"", 0, NULL,
     "safetensors file to start from (torchvision/torchxrayvision names); empty: from scratch"},
    {"model.reinit_head", MT_CFG_BOOL, "false", 0, NULL,
     "re-initialise a pretrained head whose label count differs instead of failing"},
    {"model.sync_bn", MT_CFG_BOOL, "true", 0, NULL,
     "batch statistics over all ranks (SyncBN), so results do not depend on the rank count"},
    {"model.freeze_bn", MT_CFG_BOOL, "false", 0, NULL,
     "BN uses its running statistics while training and leaves them alone (fine-tuning)"},
    {"model.drop_rate", MT_CFG_FLOAT, "0", 0, NULL, "DenseNet dropout after each dense layer"},
    {"model.bn_momentum", MT_CFG_FLOAT, "0.1", 0, NULL, "BN running statistics momentum"},
    {"model.bn_eps", MT_CFG_FLOAT, "1e-5", 0, NULL, "BN (and instance norm) epsilon"},
    {"model.depth", MT_CFG_INT, "4", 0, NULL,
     "U-Net: downsamplings (input sides: multiples of 2^depth)"},
    {"model.channels", MT_CFG_INT, "32", 0, NULL,
     "U-Net: channels at full resolution, doubled per level"},
    {"model.norm", MT_CFG_STR, "batch", 0, "batch|instance", "U-Net: normalisation layers"},
    {"model.upsample", MT_CFG_STR, "transpose", 0, "transpose|bilinear",
     "U-Net: 2x2 transposed conv, or bilinear x2 then a 1x1 conv"},
    {"model.head", MT_CFG_STR, "softmax", 0, "softmax|sigmoid",
     "segment: softmax over the mask classes, or a sigmoid per foreground class"},
    {"train.batch", MT_CFG_INT, "32", 0, NULL,
     "global batch = micro_batch x accumulate x ranks (checked)"},
    {"train.micro_batch", MT_CFG_INT, "0", 0, NULL,
     "images per rank per forward (0: batch / (accumulate x ranks))"},
    {"train.accumulate", MT_CFG_INT, "1", 0, NULL, "micro-batches per optimizer step"},
    {"train.steps", MT_CFG_INT, "1000", 0, NULL, "optimizer steps"},
    {"train.optimizer", MT_CFG_STR, "sgd", 0, "sgd|adamw", "optimizer (torch.optim semantics)"},
    {"train.lr", MT_CFG_FLOAT, "0.1", 0, NULL, "peak learning rate"},
    {"train.min_lr", MT_CFG_FLOAT, "0", 0, NULL, "learning rate at the end of the decay"},
    {"train.schedule", MT_CFG_STR, "cosine", 0, "cosine|linear|constant", "decay after warmup"},
    {"train.warmup_steps", MT_CFG_INT, "0", 0, NULL, "linear warmup steps"},
    {"train.momentum", MT_CFG_FLOAT, "0.9", 0, NULL, "SGD momentum"},
    {"train.dampening", MT_CFG_FLOAT, "0", 0, NULL, "SGD dampening"},
    {"train.nesterov", MT_CFG_BOOL, "false", 0, NULL, "SGD Nesterov momentum"},
    {"train.betas", MT_CFG_FLOAT_LIST, "[0.9, 0.999]", 0, NULL, "AdamW betas"},
    {"train.eps", MT_CFG_FLOAT, "1e-8", 0, NULL, "AdamW epsilon"},
    {"train.weight_decay", MT_CFG_FLOAT, "1e-4", 0, NULL,
     "weight decay (never on norms and biases)"},
    {"train.clip_grad_norm", MT_CFG_FLOAT, "0", 0, NULL, "global gradient-norm limit (0: off)"},
    {"train.pos_weight", MT_CFG_FLOAT_LIST, "[]", 0, NULL,
     "per-label weight of positive targets, in the pack's label order (empty: 1)"},
    {"train.loss", MT_CFG_STR, "dice_ce", 0, "dice_ce|dice|ce",
     "segment: soft Dice + cross-entropy, or either alone (MONAI DiceCELoss semantics)"},
    {"train.lambda_dice", MT_CFG_FLOAT, "1", 0, NULL, "segment: weight of the Dice term"},
    {"train.lambda_ce", MT_CFG_FLOAT, "1", 0, NULL, "segment: weight of the cross-entropy term"},
    {"train.dice_include_background", MT_CFG_BOOL, "false", 0, NULL,
     "segment, softmax head: the background class counts in the Dice"},
    {"train.dice_squared", MT_CFG_BOOL, "false", 0, NULL,
     "segment: squared terms in the Dice denominator (MONAI squared_pred)"},
    {"train.dice_smooth_nr", MT_CFG_FLOAT, "1e-5", 0, NULL, "segment: Dice numerator smoothing"},
    {"train.dice_smooth_dr", MT_CFG_FLOAT, "1e-5", 0, NULL, "segment: Dice denominator smoothing"},
    {"train.bucket_mb", MT_CFG_FLOAT, "25", 0, NULL, "gradient all-reduce bucket size (MiB)"},
    {"train.threads", MT_CFG_INT, "0", 0, NULL, "CPU threads per rank (0: OMP_NUM_THREADS)"},
    {"train.log_every", MT_CFG_INT, "10", 0, NULL, "steps between log lines"},
    {"train.val_every", MT_CFG_INT, "0", 0, NULL, "steps between validations (0: only at the end)"},
    {"checkpoint.every", MT_CFG_INT, "500", 0, NULL, "steps between checkpoints (and at the end)"},
    {"checkpoint.keep", MT_CFG_INT, "3", 0, NULL, "checkpoints kept (0: all)"},
    {NULL},
};

const mt_cfg_key *mt_train_schema(void) {
    return schema;
}

/* Keys that may change between a run and its resumption: they do not change what is computed. */
static const char *const resumable[] = {
    "run.dir",         "train.steps",      "train.log_every",
    "train.val_every", "checkpoint.every", "checkpoint.keep",
    "train.threads",   "data.prefetch",    NULL,
};

bool mt_train_key_resumable(const char *key) {
    for (int i = 0; resumable[i]; i++)
        if (!strcmp(resumable[i], key)) return true;
    return false;
}
