/* Training: optimizers over flat buffers, learning-rate schedules, checkpoints, and the one
 * training loop every task uses (`medtrain train JOB.yaml`).
 *
 * Optimizers keep their state in flat buffers with the layout of the model's trainable parameters
 * (model.h), and step each parameter's slice with the per-parameter weight-decay flag: norms and
 * biases are not decayed. The arithmetic is torch.optim's (SGD with momentum/Nesterov, AdamW).
 *
 * Checkpoints (DESIGN.md "Formats"): RUN/ckpt/step_00000500/{model.safetensors, optim.safetensors,
 * state.json}, written into step_00000500.tmp/, fsynced, renamed, then `latest` (a symlink) is
 * replaced atomically and all but the newest keep_last are removed. state.json records the
 * SHA-256 of every other file in the directory; loading verifies them. */
#ifndef MEDTRAIN_TRAIN_H
#define MEDTRAIN_TRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "medtrain/comm.h"
#include "medtrain/config.h"
#include "medtrain/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- optimizers ----------------------------------------------------------------------------- */

typedef enum mt_opt_kind { MT_OPT_SGD, MT_OPT_ADAMW } mt_opt_kind;

typedef struct mt_opt_config {
    mt_opt_kind kind;
    float momentum, dampening; /* SGD */
    bool nesterov;             /* SGD */
    float beta1, beta2, eps;   /* AdamW */
    float weight_decay;        /* applied to parameters whose decay flag is set */
} mt_opt_config;

typedef struct mt_optimizer {
    mt_opt_config cfg;
    mt_ctx *ctx;
    mt_params *params;
    float *m, *v; /* SGD: momentum buffer in m; AdamW: exp_avg in m, exp_avg_sq in v */
    int64_t t;    /* steps taken */
} mt_optimizer;

mt_status mt_optimizer_init(mt_optimizer *o, mt_ctx *ctx, mt_params *params,
                            const mt_opt_config *cfg);
void mt_optimizer_free(mt_optimizer *o);
/* One update of every trainable parameter from params->grads with learning rate lr. */
mt_status mt_optimizer_step(mt_optimizer *o, float lr);
/* The state as named flat tensors for a checkpoint ("exp_avg", "exp_avg_sq" or
 * "momentum_buffer"); returns how many (<= 2). */
int mt_optimizer_state(mt_optimizer *o, const char *names[2], float *bufs[2]);

/* ---- learning-rate schedules ---------------------------------------------------------------- */

typedef enum mt_sched_kind { MT_SCHED_CONSTANT, MT_SCHED_LINEAR, MT_SCHED_COSINE } mt_sched_kind;

typedef struct mt_schedule {
    mt_sched_kind kind;
    double peak, min_lr;
    int64_t warmup, total; /* steps */
} mt_schedule;

/* The learning rate of update number step (0-based): linear warmup from peak/warmup to peak over
 * the first `warmup` updates, then constant, linear or cosine decay to min_lr at `total`. */
double mt_schedule_lr(const mt_schedule *s, int64_t step);

/* ---- checkpoints ---------------------------------------------------------------------------- */

/* Creates (empty) RUN/ckpt/step_N.tmp/ into tmp (PATH_MAX bytes), removing a stale one. */
mt_status mt_ckpt_begin(const char *ckpt_root, int64_t step, char *tmp, size_t n);
/* Adds checksums of every file in tmp to state ("files": {name: sha256}), writes state.json,
 * fsyncs, renames tmp to step_N, points `latest` at it, and keeps the newest keep_last (0: all). */
mt_status mt_ckpt_commit(const char *ckpt_root, int64_t step, const char *tmp, cJSON *state,
                         int keep_last);
/* The directory `latest` names (into dir, n bytes); *found false when there is none. */
mt_status mt_ckpt_latest(const char *ckpt_root, char *dir, size_t n, bool *found);
/* Reads DIR/state.json and verifies every checksum in it; errors name the file that differs. */
mt_status mt_ckpt_open(const char *dir, cJSON **state);

/* ---- the trainer ---------------------------------------------------------------------------- */

typedef struct mt_train_opts {
    const char *config_path; /* for messages and provenance */
    const char *resume;      /* NULL/"" none, "auto" (latest if any), or a checkpoint dir */
    bool force;              /* resume despite a different dataset or incompatible config */
    const cJSON *build;      /* the program's build: commit, flags, library versions (provenance) */
} mt_train_opts;

/* The job schema of `medtrain train` (every task), NULL-terminated. */
const mt_cfg_key *mt_train_schema(void);
/* Whether a key may differ between a run and its resumption (train.steps, logging intervals). */
bool mt_train_key_resumable(const char *key);
/* Runs a whole training job on every rank of comm (collective). Errors are agreed across ranks. */
mt_status mt_train_run(const mt_config *cfg, const mt_train_opts *opts, mt_comm *comm);

#ifdef __cplusplus
}
#endif

#endif
