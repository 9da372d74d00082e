/* The trainer's state, shared by trainer.c (the loop), run.c (run directory, provenance, export)
 * and resume.c (checkpoints in and out). Not a public interface. */
#ifndef MEDTRAIN_TRAINER_INTERNAL_H
#define MEDTRAIN_TRAINER_INTERNAL_H

#include <limits.h>
#include <stdio.h>

#include "medtrain/loader.h"
#include "medtrain/pack.h"
#include "medtrain/train.h"
#include "task.h"

typedef struct train_settings {
    const char *run_dir;
    uint64_t seed;
    int64_t batch, micro, accum, steps;
    mt_opt_config opt;
    mt_schedule sched;
    double clip;
    size_t bucket_bytes;
    int threads;
    int64_t log_every, val_every, ckpt_every;
    int keep;
    int size;
    mt_norm_mode norm;
    float mean, std;
    bool augment;
    int prefetch;
} train_settings;

typedef struct trainer {
    const mt_config *cfg;
    const mt_train_opts *opts;
    mt_comm *comm;
    int rank, world;
    train_settings s;
    const char *pack_path;
    char ckpt_root[PATH_MAX];
    char last_ckpt[PATH_MAX + 32]; /* the newest checkpoint written or resumed from */
    char resumed_from[PATH_MAX];
    mt_ctx ctx;
    bool ctx_ok, opt_ok;
    bool warned_no_val;
    mt_pack *pack;
    mt_loader *loader;
    int64_t batches_per_epoch;
    mt_task *task;
    mt_params *params;
    mt_optimizer opt;
    mt_comm_buckets *buckets;
    int64_t step; /* optimizer steps completed */
    char dataset_digest[65], config_digest[65];
    FILE *log;
    cJSON *last_val;   /* the latest validation summary */
    cJSON *provenance; /* rank 0 */
} trainer;

mt_status trainer_open_loader(trainer *tr, mt_split split, bool training, mt_loader **out);
mt_status trainer_validate(trainer *tr, mt_split split, cJSON *into, double *primary);

/* run.c */
mt_status trainer_dataset_digest(trainer *tr);
mt_status trainer_prepare_run_dir(trainer *tr); /* collective */
mt_status trainer_open_log(trainer *tr);        /* collective */
mt_status trainer_export(trainer *tr);          /* collective */
void trainer_finish_provenance(trainer *tr, mt_status st);

/* resume.c */
mt_status trainer_save_checkpoint(trainer *tr); /* collective */
mt_status trainer_resume(trainer *tr);          /* collective */

#endif
