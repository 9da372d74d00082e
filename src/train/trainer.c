/* The training loop every task uses.
 *
 * One step: zero the flat gradients; for each of `accumulate` micro-batches, the task runs
 * forward, loss and backward (the last micro-batch's backward starts the bucketed all-reduce of
 * each gradient bucket as soon as it is final); wait for the buckets; divide by the number of loss
 * terms over all ranks and micro-batches; clip by global norm; optimizer step at the schedule's
 * learning rate. Every rank agrees on its status at each step boundary, so a failure on one rank
 * ends all of them with its message instead of leaving them waiting.
 *
 * Runs are reproducible: the loader's sample order and augmentation depend on (seed, epoch, image)
 * only, initial weights come from rank 0, BN statistics are global (SyncBN), so 1 rank x batch 16
 * and 2 ranks x batch 8 compute the same steps, and a resumed run continues bit for bit. */
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/fs.h"
#include "medtrain/log.h"
#include "medtrain/mem.h"
#include "medtrain/ops.h"
#include "medtrain/progress.h"
#include "medtrain/safetensors.h"
#include "medtrain/timer.h"
#include "trainer_internal.h"

/* ---- settings ------------------------------------------------------------------------------ */

static mt_status read_settings(const mt_config *cfg, int world, train_settings *s) {
    memset(s, 0, sizeof *s);
    s->run_dir = mt_config_str(cfg, "run.dir");
    s->seed = (uint64_t)mt_config_int(cfg, "run.seed");
    s->batch = mt_config_int(cfg, "train.batch");
    s->accum = mt_config_int(cfg, "train.accumulate");
    s->micro = mt_config_int(cfg, "train.micro_batch");
    s->steps = mt_config_int(cfg, "train.steps");
    if (s->batch < 1) return mt_config_fail(cfg, "train.batch", "must be >= 1");
    if (s->accum < 1) return mt_config_fail(cfg, "train.accumulate", "must be >= 1");
    if (s->steps < 1) return mt_config_fail(cfg, "train.steps", "must be >= 1");
    if (s->micro == 0) {
        if (s->batch % (s->accum * world))
            return mt_config_fail(cfg, "train.batch",
                                  "%lld is not a multiple of accumulate (%lld) x ranks (%d)",
                                  (long long)s->batch, (long long)s->accum, world);
        s->micro = s->batch / (s->accum * world);
    } else if (s->micro * s->accum * world != s->batch) {
        return mt_config_fail(cfg, "train.micro_batch",
                              "micro_batch %lld x accumulate %lld x ranks %d = %lld, but "
                              "train.batch is %lld",
                              (long long)s->micro, (long long)s->accum, world,
                              (long long)(s->micro * s->accum * world), (long long)s->batch);
    }
    const char *opt = mt_config_str(cfg, "train.optimizer");
    s->opt.kind = !strcmp(opt, "adamw") ? MT_OPT_ADAMW : MT_OPT_SGD;
    s->opt.momentum = (float)mt_config_float(cfg, "train.momentum");
    s->opt.dampening = (float)mt_config_float(cfg, "train.dampening");
    s->opt.nesterov = mt_config_bool(cfg, "train.nesterov");
    s->opt.eps = (float)mt_config_float(cfg, "train.eps");
    s->opt.weight_decay = (float)mt_config_float(cfg, "train.weight_decay");
    if (mt_config_len(cfg, "train.betas") != 2)
        return mt_config_fail(cfg, "train.betas", "expected two values [beta1, beta2]");
    s->opt.beta1 = (float)mt_config_float_at(cfg, "train.betas", 0);
    s->opt.beta2 = (float)mt_config_float_at(cfg, "train.betas", 1);
    if (s->opt.nesterov && (s->opt.momentum <= 0 || s->opt.dampening != 0))
        return mt_config_fail(cfg, "train.nesterov",
                              "Nesterov momentum needs momentum > 0 and dampening 0");
    const char *sched = mt_config_str(cfg, "train.schedule");
    s->sched.kind = !strcmp(sched, "cosine")   ? MT_SCHED_COSINE
                    : !strcmp(sched, "linear") ? MT_SCHED_LINEAR
                                               : MT_SCHED_CONSTANT;
    s->sched.peak = mt_config_float(cfg, "train.lr");
    s->sched.min_lr = mt_config_float(cfg, "train.min_lr");
    s->sched.warmup = mt_config_int(cfg, "train.warmup_steps");
    s->sched.total = s->steps;
    if (s->sched.peak <= 0) return mt_config_fail(cfg, "train.lr", "must be > 0");
    if (s->sched.warmup < 0 || s->sched.warmup > s->steps)
        return mt_config_fail(cfg, "train.warmup_steps", "must be within [0, train.steps]");
    s->clip = mt_config_float(cfg, "train.clip_grad_norm");
    double mb = mt_config_float(cfg, "train.bucket_mb");
    if (mb <= 0) return mt_config_fail(cfg, "train.bucket_mb", "must be > 0");
    s->bucket_bytes = (size_t)(mb * 1024 * 1024);
    s->threads = (int)mt_config_int(cfg, "train.threads");
    s->log_every = mt_config_int(cfg, "train.log_every");
    s->val_every = mt_config_int(cfg, "train.val_every");
    s->ckpt_every = mt_config_int(cfg, "checkpoint.every");
    s->keep = (int)mt_config_int(cfg, "checkpoint.keep");
    if (s->log_every < 1) return mt_config_fail(cfg, "train.log_every", "must be >= 1");
    if (s->ckpt_every < 1) return mt_config_fail(cfg, "checkpoint.every", "must be >= 1");
    int ch = (int)mt_config_int(cfg, "model.in_channels");
    if (ch != 1 && ch != 3) return mt_config_fail(cfg, "model.in_channels", "must be 1 or 3");
    s->size = (int)mt_config_int(cfg, "data.size");
    const char *norm = mt_config_str(cfg, "data.norm");
    s->norm = !strcmp(norm, "xrv")    ? MT_NORM_XRV
              : !strcmp(norm, "none") ? MT_NORM_NONE
                                      : MT_NORM_MEANSTD;
    s->mean = (float)mt_config_float(cfg, "data.mean");
    s->std = (float)mt_config_float(cfg, "data.std");
    if (s->norm == MT_NORM_MEANSTD && !(s->std > 0))
        return mt_config_fail(cfg, "data.std", "must be > 0");
    s->augment = mt_config_bool(cfg, "data.augment");
    s->prefetch = (int)mt_config_int(cfg, "data.prefetch");
    return MT_OK;
}

/* ---- loaders ------------------------------------------------------------------------------- */

mt_status trainer_open_loader(trainer *tr, mt_split split, bool training, mt_loader **out) {
    const train_settings *s = &tr->s;
    mt_loader_opts lo = {
        .split = split,
        .batch = (int)s->micro,
        .size = s->size,
        .seed = s->seed,
        .shuffle = training,
        .drop_last = training,
        .norm = s->norm,
        .mean = s->mean,
        .std = s->std,
        .prefetch = s->prefetch,
        .masks = tr->task && tr->task->needs_masks,
    };
    if (training && s->augment) lo.aug = mt_augment_defaults();
    return mt_loader_open(tr->pack_path, tr->rank, tr->world, &lo, out);
}

/* ---- one step ------------------------------------------------------------------------------ */

static mt_status on_grad_ready(void *user, size_t offset, size_t count) {
    return mt_comm_buckets_ready(user, offset, count);
}

static mt_status sync_bn_allreduce(void *user, float *buf, size_t n) {
    return mt_comm_allreduce_f32(user, buf, n, MT_COMM_SUM);
}

typedef struct step_stats {
    double loss, grad_norm, lr, terms;
    double data_wait, comm_wait;
} step_stats;

static mt_status train_step(trainer *tr, step_stats *out) {
    mt_params *ps = tr->params;
    mt_tensor grads = mt_tensor_1d(ps->grads, MT_F32, tr->ctx.device, (int64_t)ps->n_train);
    MT_TRY(mt_tensor_zero(&tr->ctx, &grads));
    double sums[2] = {0, 0}; /* loss sum, loss terms */
    double wait0 = mt_loader_wait_seconds(tr->loader);
    for (int64_t a = 0; a < tr->s.accum; a++) {
        const mt_batch *b;
        MT_TRY(mt_loader_next(tr->loader, &b));
        bool last = a == tr->s.accum - 1;
        double loss_sum, terms;
        MT_TRY(tr->task->train_micro(tr->task, &tr->ctx, b, tr->s.seed, tr->step,
                                     last && tr->buckets ? on_grad_ready : NULL, tr->buckets,
                                     &loss_sum, &terms));
        sums[0] += loss_sum, sums[1] += terms;
    }
    out->data_wait = mt_loader_wait_seconds(tr->loader) - wait0;
    double t0 = mt_now(), wait = 0;
    if (tr->buckets) MT_TRY(mt_comm_buckets_wait(tr->buckets, &wait));
    if (tr->world > 1) MT_TRY(mt_comm_allreduce_f64(tr->comm, sums, 2, MT_COMM_SUM));
    out->comm_wait = mt_now() - t0;
    out->terms = sums[1];
    out->loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    if (sums[1] > 0) MT_TRY(mt_scale(&tr->ctx, (float)(1.0 / sums[1]), &grads));
    float sq = 0;
    mt_tensor sq_t = mt_tensor_1d(&sq, MT_F32, MT_CPU, 1);
    MT_TRY(mt_sumsq(&tr->ctx, &grads, &sq_t));
    out->grad_norm = sqrt((double)sq);
    if (!isfinite(out->loss) || !isfinite(out->grad_norm))
        return mt_fail(MT_ERR_NUMERIC,
                       "step %lld: the loss is %g and the gradient norm %g; stopping. Last good "
                       "checkpoint: %s (lower train.lr or set train.clip_grad_norm)",
                       (long long)tr->step + 1, out->loss, out->grad_norm,
                       tr->last_ckpt[0] ? tr->last_ckpt : "none yet");
    if (tr->s.clip > 0 && out->grad_norm > tr->s.clip)
        MT_TRY(mt_scale(&tr->ctx, (float)(tr->s.clip / (out->grad_norm + 1e-6)), &grads));
    out->lr = mt_schedule_lr(&tr->s.sched, tr->step);
    MT_TRY(mt_optimizer_step(&tr->opt, (float)out->lr));
    tr->step++;
    return MT_OK;
}

/* ---- validation ---------------------------------------------------------------------------- */

/* Runs the task's eval-mode prediction over split on all ranks, gathers every rank's rows and
 * lets the task summarise them into `into`. Collective. */
mt_status trainer_validate(trainer *tr, mt_split split, cJSON *into, double *primary) {
    mt_loader *l;
    MT_TRY(trainer_open_loader(tr, split, false, &l));
    int64_t nb = mt_loader_batches_per_epoch(l), B = tr->s.micro, K = tr->task->n_outputs;
    size_t rows = (size_t)(nb * B);
    float *out = mt_alloc((rows ? rows : 1) * K * sizeof(float), "validation outputs");
    int64_t *idx = mt_alloc((rows ? rows : 1) * sizeof(int64_t), "validation indices");
    mt_status st = out && idx ? MT_OK : MT_ERR_NOMEM;
    for (int64_t i = 0; st == MT_OK && i < nb; i++) {
        const mt_batch *b;
        st = mt_loader_next(l, &b);
        if (st == MT_OK) st = tr->task->predict(tr->task, &tr->ctx, b, out + (size_t)i * B * K);
        for (int j = 0; st == MT_OK && j < b->n; j++)
            idx[i * B + j] = b->weights[j] > 0 ? b->indices[j] : -1;
    }
    mt_loader_close(l);
    st = mt_comm_agree(tr->comm, st);
    void *all = NULL;
    int64_t *all_idx = NULL, n = 0;
    if (st == MT_OK)
        st =
            mt_comm_allgather_rows(tr->comm, out, idx, rows, K * sizeof(float), &all, &all_idx, &n);
    if (st == MT_OK) {
        st = tr->task->summarize(tr->task, all, all_idx, n, into, primary);
        cJSON_AddNumberToObject(into, "val_images", (double)n);
    }
    mt_free(out), mt_free(idx), mt_free(all), mt_free(all_idx);
    return mt_comm_agree(tr->comm, st);
}

/* ---- logging ------------------------------------------------------------------------------- */

static void log_line(trainer *tr, cJSON *j) {
    if (tr->rank != 0 || !tr->log) return;
    char *text = cJSON_PrintUnformatted(j);
    if (text) {
        fprintf(tr->log, "%s\n", text);
        fflush(tr->log);
        free(text);
    }
}

typedef struct interval {
    double start, data_wait, comm_wait, loss_sum, terms, grad_norm;
    int64_t steps;
} interval;

static void log_step(trainer *tr, interval *iv, const step_stats *st, mt_progress *bar) {
    iv->data_wait += st->data_wait, iv->comm_wait += st->comm_wait;
    iv->loss_sum += st->loss * st->terms, iv->terms += st->terms;
    iv->grad_norm = st->grad_norm;
    iv->steps++;
    mt_progress_update(bar, tr->step);
    mt_progress_note(bar, "loss %.4f", st->loss);
    if (tr->step % tr->s.log_every != 0 && tr->step != tr->s.steps) return;
    double dt = mt_now() - iv->start;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", (double)tr->step);
    cJSON_AddNumberToObject(j, "epoch", (double)(tr->step * tr->s.accum / tr->batches_per_epoch));
    cJSON_AddNumberToObject(j, "loss", iv->terms > 0 ? iv->loss_sum / iv->terms : 0.0);
    cJSON_AddNumberToObject(j, "lr", st->lr);
    cJSON_AddNumberToObject(j, "grad_norm", iv->grad_norm);
    cJSON_AddNumberToObject(j, "img_per_s", dt > 0 ? (double)(iv->steps * tr->s.batch) / dt : 0);
    cJSON_AddNumberToObject(j, "data_wait_pct", dt > 0 ? 100.0 * iv->data_wait / dt : 0);
    cJSON_AddNumberToObject(j, "comm_wait_pct", dt > 0 ? 100.0 * iv->comm_wait / dt : 0);
    log_line(tr, j);
    if (!bar->tty)
        MT_INFO("step %lld/%lld  loss %.4f  lr %.3g  |g| %.3g  %.1f img/s  data-wait %.0f%%",
                (long long)tr->step, (long long)tr->s.steps,
                iv->terms > 0 ? iv->loss_sum / iv->terms : 0.0, st->lr, iv->grad_norm,
                dt > 0 ? (double)(iv->steps * tr->s.batch) / dt : 0,
                dt > 0 ? 100.0 * iv->data_wait / dt : 0);
    cJSON_Delete(j);
    *iv = (interval){.start = mt_now()};
}

static mt_status validate_and_log(trainer *tr) {
    if (mt_pack_get_info(tr->pack)->split_n[MT_SPLIT_VAL] == 0) {
        if (!tr->warned_no_val)
            MT_WARN("%s has no validation images: no validation, and the model card has no "
                    "validation metrics",
                    tr->pack_path);
        tr->warned_no_val = true;
        return MT_OK;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", (double)tr->step);
    double primary = 0;
    mt_status st = trainer_validate(tr, MT_SPLIT_VAL, j, &primary);
    if (st == MT_OK) {
        log_line(tr, j);
        char *text = cJSON_PrintUnformatted(j);
        MT_INFO("validation at step %lld: %s", (long long)tr->step, text ? text : "");
        free(text);
        cJSON_Delete(tr->last_val);
        tr->last_val = j;
    } else {
        cJSON_Delete(j);
    }
    return st;
}

/* ---- the run ------------------------------------------------------------------------------- */

static mt_status setup(trainer *tr) {
    MT_TRY(read_settings(tr->cfg, tr->world, &tr->s));
    tr->pack_path = mt_config_str(tr->cfg, "data.pack");
    snprintf(tr->ckpt_root, sizeof tr->ckpt_root, "%s/ckpt", tr->s.run_dir);
    MT_TRY(mt_pack_open(tr->pack_path, &tr->pack));
    const mt_pack_info *info = mt_pack_get_info(tr->pack);
    if (tr->s.size == 0) tr->s.size = info->h;
    if (info->split_n[MT_SPLIT_TRAIN] < tr->s.micro * tr->world)
        return mt_fail(MT_ERR_CONFIG,
                       "%s: the train split has %lld images, fewer than one global micro-batch "
                       "(%lld x %d ranks)",
                       tr->pack_path, (long long)info->split_n[MT_SPLIT_TRAIN],
                       (long long)tr->s.micro, tr->world);
    MT_TRY(mt_ctx_init(&tr->ctx, MT_CPU, 0, tr->s.threads));
    tr->ctx_ok = true;
    const char *task = mt_config_str(tr->cfg, "task");
    if (!strcmp(task, "classify"))
        MT_TRY(mt_task_classify_create(tr->cfg, &tr->ctx, tr->pack, &tr->task));
    else if (!strcmp(task, "segment"))
        MT_TRY(mt_task_segment_create(tr->cfg, &tr->ctx, tr->pack, &tr->task));
    else
        return mt_config_fail(tr->cfg, "task", "task '%s' is not built in", task);
    tr->params = mt_model_params(tr->task->model);
    mt_model_set_bn_frozen(tr->task->model, mt_config_bool(tr->cfg, "model.freeze_bn"));
    if (tr->world > 1 && mt_config_bool(tr->cfg, "model.sync_bn"))
        mt_model_set_sync_bn(tr->task->model, sync_bn_allreduce, tr->comm);
    MT_TRY(trainer_dataset_digest(tr));
    MT_TRY(mt_config_digest(tr->cfg, tr->config_digest));
    MT_TRY(trainer_open_loader(tr, MT_SPLIT_TRAIN, true, &tr->loader));
    tr->batches_per_epoch = mt_loader_batches_per_epoch(tr->loader);
    MT_TRY(mt_optimizer_init(&tr->opt, &tr->ctx, tr->params, &tr->s.opt));
    tr->opt_ok = true;
    if (tr->world > 1)
        MT_TRY(mt_comm_buckets_init(tr->comm, tr->params->grads, tr->params->n_train,
                                    tr->s.bucket_bytes, MT_COMM_SUM, &tr->buckets));
    return MT_OK;
}

/* Initial weights: from scratch or a pretrained file on rank 0, then broadcast to all ranks so
 * every rank starts from the same bits. */
static mt_status initial_weights(trainer *tr) {
    mt_status st = MT_OK;
    if (tr->rank == 0) {
        const char *pre = mt_config_str(tr->cfg, "model.pretrained");
        st = mt_model_init(tr->task->model, tr->s.seed);
        if (st == MT_OK && pre[0]) {
            mt_load_opts lo = {.strict = true,
                               .reinit_head = mt_config_bool(tr->cfg, "model.reinit_head"),
                               .head_seed = tr->s.seed};
            mt_load_report rep = {0};
            st = mt_model_load(tr->task->model, pre, &lo, &rep);
            if (st == MT_OK && rep.n_mismatched)
                MT_INFO("%s: re-initialised head tensors: %s", pre, rep.mismatched);
            mt_load_report_free(&rep);
        }
    }
    MT_TRY(mt_comm_agree(tr->comm, st));
    mt_params *ps = tr->params;
    MT_TRY(mt_comm_broadcast(tr->comm, ps->params, ps->n_train * sizeof(float), 0));
    if (ps->n_buf) MT_TRY(mt_comm_broadcast(tr->comm, ps->buffers, ps->n_buf * sizeof(float), 0));
    return MT_OK;
}

/* Crash testing: MEDTRAIN_TEST_KILL_AFTER_STEP=N makes rank 0 SIGKILL itself after step N, the
 * same as `kill -9` at a known point (tests/train/test_train_cli.sh resumes from there). */
static void maybe_die(const trainer *tr) {
    const char *at = getenv("MEDTRAIN_TEST_KILL_AFTER_STEP");
    if (at && tr->rank == 0 && atoll(at) == tr->step) raise(SIGKILL);
}

static mt_status loop(trainer *tr) {
    mt_progress bar;
    mt_progress_begin(&bar, "train", tr->s.steps, "step");
    mt_progress_update(&bar, tr->step);
    interval iv = {.start = mt_now()};
    mt_status st = MT_OK;
    while (st == MT_OK && tr->step < tr->s.steps) {
        step_stats ss = {0};
        st = mt_comm_agree(tr->comm, train_step(tr, &ss));
        if (st != MT_OK) break;
        log_step(tr, &iv, &ss, &bar);
        bool end = tr->step == tr->s.steps;
        if (tr->s.val_every > 0 && tr->step % tr->s.val_every == 0 && !end)
            st = validate_and_log(tr);
        if (st == MT_OK && (tr->step % tr->s.ckpt_every == 0 || end))
            st = trainer_save_checkpoint(tr);
        maybe_die(tr);
    }
    mt_progress_end(&bar);
    return st;
}

static void teardown(trainer *tr) {
    if (tr->buckets) mt_comm_buckets_free(tr->buckets);
    if (tr->opt_ok) mt_optimizer_free(&tr->opt);
    if (tr->loader) mt_loader_close(tr->loader);
    if (tr->task) tr->task->free(tr->task);
    if (tr->pack) mt_pack_close(tr->pack);
    if (tr->ctx_ok) mt_ctx_free(&tr->ctx);
    if (tr->log) fclose(tr->log);
    cJSON_Delete(tr->last_val);
    cJSON_Delete(tr->provenance);
}

mt_status mt_train_run(const mt_config *cfg, const mt_train_opts *opts, mt_comm *comm) {
    trainer tr = {.cfg = cfg, .opts = opts, .comm = comm};
    tr.rank = mt_comm_rank(comm), tr.world = mt_comm_world(comm);
    mt_status st = mt_comm_agree(comm, setup(&tr));
    if (st == MT_OK) st = trainer_prepare_run_dir(&tr);
    if (st == MT_OK) st = initial_weights(&tr);
    if (st == MT_OK) st = trainer_resume(&tr);
    if (st == MT_OK) st = trainer_open_log(&tr);
    if (st == MT_OK) {
        MT_INFO("training %s on %d rank(s): %lld steps, global batch %lld (%lld x %lld x %d), "
                "%zu parameters; run %s",
                mt_config_str(cfg, "model.arch"), tr.world, (long long)tr.s.steps,
                (long long)tr.s.batch, (long long)tr.s.micro, (long long)tr.s.accum, tr.world,
                tr.params->n_train, tr.s.run_dir);
        st = loop(&tr);
    }
    if (st == MT_OK) st = validate_and_log(&tr);
    if (st == MT_OK) st = trainer_export(&tr);
    trainer_finish_provenance(&tr, st);
    teardown(&tr);
    return st;
}
