/* What the two halves of `medtrain eval` share: the parsed arguments and the model description
 * (cmd_eval.c reads both and evaluates classifiers; cmd_eval_seg.c evaluates segmenters). */
#ifndef MEDTRAIN_CLI_EVAL_INTERNAL_H
#define MEDTRAIN_CLI_EVAL_INTERNAL_H

#include <limits.h>
#include <stdbool.h>

#include "medtrain/comm.h"
#include "medtrain/loader.h"
#include "medtrain/model.h"
#include "medtrain/pack.h"
#include "medtrain/segmetrics.h"

typedef struct eval_args {
    const char *model, *pack, *out;
    mt_split split, thr_split;
    bool use_thr_split;
    int batch, threads;
    mt_seg_empty empty; /* segment: empty ground truth */
    int overlays;       /* segment: overlay PNGs of the first K cases */
    char default_out[PATH_MAX + 16];
} eval_args;

typedef struct eval_model {
    char dir[PATH_MAX];     /* where model.safetensors is */
    char run_dir[PATH_MAX]; /* default output parent */
    char task[16];          /* classify | segment */
    char arch[32];
    char pack[PATH_MAX];
    int in_channels, n_outputs, size;
    mt_norm_mode norm;
    float mean, std;
    char **labels;      /* n_outputs names, or NULL (checkpoints: the pack's); segment: class names
                           (n_classes of them) */
    int n_classes;      /* segment: mask classes, background included (a multi-label pack's
                           structures: no background) */
    bool sigmoid;       /* segment: sigmoid head */
    mt_model_opts unet; /* segment: depth, channels, norm, bilinear */
} eval_model;

/* Evaluates a segmentation model (m->task "segment") on a pack split. Collective. */
mt_status mt_eval_segment(mt_comm *comm, eval_args *a, eval_model *m, mt_pack *pack);

#endif
