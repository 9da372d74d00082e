/* Checkpoints of a training run, in and out.
 *
 * A checkpoint holds everything the next step depends on: the model (parameters and BN buffers,
 * under torchvision names: model.safetensors is also a usable export), the optimizer state
 * (optim.safetensors, one flat tensor per state buffer), and state.json: the step, the optimizer's
 * step count, the sampler position, the seed (all randomness is counter-based: seed + position
 * is the whole RNG state), the world size, the dataset and config digests and the resolved config.
 * Resuming restores all of it, so 10 steps + resume + 10 steps gives the same bits as 20 steps.
 *
 * Resume refuses a checkpoint made from another dataset, with another world size, or with a config
 * that differs in a key that changes the computation (naming each difference), unless forced. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/json.h"
#include "medtrain/log.h"
#include "medtrain/mem.h"
#include "medtrain/safetensors.h"
#include "trainer_internal.h"

static cJSON *state_json(trainer *tr) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "format", "medtrain-checkpoint");
    cJSON_AddNumberToObject(s, "step", (double)tr->step);
    int64_t micro = tr->step * tr->s.accum;
    cJSON_AddNumberToObject(s, "epoch", (double)(micro / tr->batches_per_epoch));
    cJSON_AddNumberToObject(s, "epoch_step", (double)(micro % tr->batches_per_epoch));
    cJSON_AddNumberToObject(s, "optimizer_steps", (double)tr->opt.t);
    cJSON *rng = cJSON_AddObjectToObject(s, "rng");
    cJSON_AddStringToObject(rng, "kind", "philox4x32-10, counter-based: (seed, stream, index)");
    cJSON_AddNumberToObject(rng, "seed", (double)tr->s.seed);
    cJSON_AddNumberToObject(s, "world_size", tr->world);
    cJSON_AddStringToObject(s, "architecture", mt_model_options(tr->task->model)->arch);
    cJSON_AddStringToObject(s, "dataset_digest", tr->dataset_digest);
    cJSON_AddStringToObject(s, "config_digest", tr->config_digest);
    char *yaml = mt_config_to_yaml(tr->cfg);
    cJSON_AddStringToObject(s, "config", yaml ? yaml : "");
    mt_free(yaml);
    return s;
}

static mt_status write_optim(trainer *tr, const char *path) {
    const char *names[2];
    float *bufs[2];
    int n = mt_optimizer_state(&tr->opt, names, bufs);
    mt_st_writer *w;
    MT_TRY(mt_st_writer_new(&w));
    int64_t shape[1] = {(int64_t)tr->params->n_train};
    mt_status st = MT_OK;
    for (int i = 0; i < n && st == MT_OK; i++)
        st = mt_st_writer_add(w, names[i], MT_F32, 1, shape, bufs[i]);
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)tr->opt.t);
    if (st == MT_OK) st = mt_st_writer_meta(w, "optimizer_steps", t);
    if (st == MT_OK)
        st = mt_st_writer_meta(w, "optimizer", mt_config_str(tr->cfg, "train.optimizer"));
    if (st == MT_OK) st = mt_st_writer_save(w, path);
    mt_st_writer_free(w);
    return st;
}

mt_status trainer_save_checkpoint(trainer *tr) {
    mt_status st = MT_OK;
    char tmp[PATH_MAX], p[PATH_MAX + 32];
    if (tr->rank == 0) {
        st = mt_ckpt_begin(tr->ckpt_root, tr->step, tmp, sizeof tmp);
        snprintf(p, sizeof p, "%s/model.safetensors", tmp);
        const char *k[] = {"format"}, *v[] = {"pt"};
        if (st == MT_OK) st = mt_model_save(tr->task->model, p, 1, k, v);
        snprintf(p, sizeof p, "%s/optim.safetensors", tmp);
        if (st == MT_OK) st = write_optim(tr, p);
        if (st == MT_OK) {
            cJSON *s = state_json(tr);
            st = mt_ckpt_commit(tr->ckpt_root, tr->step, tmp, s, tr->s.keep);
            cJSON_Delete(s);
        }
        if (st != MT_OK)
            st = mt_error_wrap(st, "saving the checkpoint of step %lld: ", (long long)tr->step);
    }
    st = mt_comm_agree(tr->comm, st);
    if (st == MT_OK)
        snprintf(tr->last_ckpt, sizeof tr->last_ckpt, "%s/step_%08lld", tr->ckpt_root,
                 (long long)tr->step);
    return st;
}

/* ---- comparing configs --------------------------------------------------------------------- */

static void value_text(const mt_config *c, const mt_cfg_key *k, char *buf, size_t n) {
    if (!mt_config_is_set(c, k->key)) {
        snprintf(buf, n, "(unset)");
        return;
    }
    size_t len = 0;
    buf[0] = '\0';
    switch (k->type) {
    case MT_CFG_STR:
        snprintf(buf, n, "%s", mt_config_str(c, k->key));
        break;
    case MT_CFG_INT:
        snprintf(buf, n, "%lld", (long long)mt_config_int(c, k->key));
        break;
    case MT_CFG_FLOAT:
        snprintf(buf, n, "%.17g", mt_config_float(c, k->key));
        break;
    case MT_CFG_BOOL:
        snprintf(buf, n, "%s", mt_config_bool(c, k->key) ? "true" : "false");
        break;
    default:
        for (size_t i = 0; i < mt_config_len(c, k->key) && len + 1 < n; i++) {
            const char *sep = i ? ", " : "";
            if (k->type == MT_CFG_STR_LIST)
                len += snprintf(buf + len, n - len, "%s%s", sep, mt_config_str_at(c, k->key, i));
            else if (k->type == MT_CFG_INT_LIST)
                len += snprintf(buf + len, n - len, "%s%lld", sep,
                                (long long)mt_config_int_at(c, k->key, i));
            else
                len +=
                    snprintf(buf + len, n - len, "%s%.17g", sep, mt_config_float_at(c, k->key, i));
        }
    }
}

/* Lists keys (other than resumable ones) whose values differ, into diff. */
static mt_status config_differences(trainer *tr, const char *yaml, char *diff, size_t n) {
    mt_config *old;
    MT_TRY(mt_config_parse(yaml, strlen(yaml), "the checkpoint's config", mt_train_schema(), 0,
                           NULL, &old));
    size_t len = 0;
    diff[0] = '\0';
    for (const mt_cfg_key *k = mt_train_schema(); k->key; k++) {
        if (mt_train_key_resumable(k->key)) continue;
        char a[512], b[512];
        value_text(old, k, a, sizeof a);
        value_text(tr->cfg, k, b, sizeof b);
        if (strcmp(a, b) != 0 && len + 1 < n)
            len +=
                snprintf(diff + len, n - len, "\n  %s: %s in the checkpoint, %s now", k->key, a, b);
    }
    mt_config_free(old);
    return MT_OK;
}

/* ---- resuming ------------------------------------------------------------------------------ */

static mt_status check_compatible(trainer *tr, const char *dir, cJSON *s) {
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(s, "dataset_digest");
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(s, "world_size");
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(s, "config");
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(s, "architecture");
    if (!cJSON_IsString(ds) || !cJSON_IsNumber(ws) || !cJSON_IsString(cfg) || !cJSON_IsString(arch))
        return mt_fail(MT_ERR_FORMAT,
                       "%s/state.json: missing dataset_digest, world_size, "
                       "architecture or config",
                       dir);
    const char *now_arch = mt_model_options(tr->task->model)->arch;
    if (strcmp(arch->valuestring, now_arch) != 0)
        return mt_fail(MT_ERR_CONFIG, "%s: checkpoint of a %s, but model.arch is %s", dir,
                       arch->valuestring, now_arch);
    if (tr->opts->force) return MT_OK;
    if (strcmp(ds->valuestring, tr->dataset_digest) != 0)
        return mt_fail(MT_ERR_CONFIG,
                       "%s: made from another dataset (digest %.12s..., data.pack %s has "
                       "%.12s...); pass --force to resume anyway",
                       dir, ds->valuestring, tr->pack_path, tr->dataset_digest);
    if ((int)ws->valuedouble != tr->world)
        return mt_fail(MT_ERR_CONFIG,
                       "%s: made with %d ranks, now %d: the sample order per step would differ; "
                       "pass --force to resume anyway",
                       dir, (int)ws->valuedouble, tr->world);
    char diff[4096];
    MT_TRY(config_differences(tr, cfg->valuestring, diff, sizeof diff));
    if (diff[0])
        return mt_fail(MT_ERR_CONFIG,
                       "%s: the config differs from the checkpoint's in keys that change the "
                       "computation:%s\n(pass --force to resume anyway)",
                       dir, diff);
    return MT_OK;
}

static mt_status read_optim(trainer *tr, const char *dir) {
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/optim.safetensors", dir);
    const char *names[2];
    float *bufs[2];
    int n = mt_optimizer_state(&tr->opt, names, bufs);
    mt_st_file *f;
    MT_TRY(mt_st_open(p, &f));
    mt_status st = MT_OK;
    for (int i = 0; i < n && st == MT_OK; i++) {
        const mt_st_tensor *t = mt_st_find(f, names[i]);
        if (!t)
            st = mt_fail(MT_ERR_FORMAT,
                         "%s: no tensor '%s' (was it written by another "
                         "optimizer?)",
                         p, names[i]);
        else if (t->numel != (int64_t)tr->params->n_train)
            st = mt_fail(MT_ERR_SHAPE, "%s: '%s' has %lld elements, the model has %zu trainable", p,
                         names[i], (long long)t->numel, tr->params->n_train);
        else
            st = mt_st_read_f32(f, t, bufs[i]);
    }
    mt_st_close(f);
    return st;
}

static mt_status load_state(trainer *tr, const char *dir, cJSON *s) {
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(s, "step");
    const cJSON *ot = cJSON_GetObjectItemCaseSensitive(s, "optimizer_steps");
    if (!cJSON_IsNumber(step) || !cJSON_IsNumber(ot))
        return mt_fail(MT_ERR_FORMAT, "%s/state.json: missing step or optimizer_steps", dir);
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    mt_load_opts lo = {.strict = true};
    mt_load_report rep = {0};
    mt_status st = mt_model_load(tr->task->model, p, &lo, &rep);
    mt_load_report_free(&rep);
    MT_TRY(st);
    MT_TRY(read_optim(tr, dir));
    tr->step = (int64_t)step->valuedouble;
    tr->opt.t = (int64_t)ot->valuedouble;
    int64_t micro = tr->step * tr->s.accum;
    return mt_loader_seek(tr->loader, micro / tr->batches_per_epoch, micro % tr->batches_per_epoch);
}

mt_status trainer_resume(trainer *tr) {
    const char *want = tr->opts->resume;
    if (!want || !want[0]) return MT_OK;
    char dir[PATH_MAX];
    bool found = true;
    mt_status st = MT_OK;
    if (!strcmp(want, "auto"))
        st = mt_ckpt_latest(tr->ckpt_root, dir, sizeof dir, &found);
    else
        snprintf(dir, sizeof dir, "%s", want);
    MT_TRY(mt_comm_agree(tr->comm, st));
    if (!found) {
        MT_INFO("--resume auto: no checkpoint in %s yet, starting from step 0", tr->ckpt_root);
        return MT_OK;
    }
    /* Rank 0 verifies the checksums once; then every rank reads the verified files. */
    cJSON *s = NULL;
    if (tr->rank == 0) {
        st = mt_ckpt_open(dir, &s);
        if (st == MT_OK) st = check_compatible(tr, dir, s);
        if (st != MT_OK) st = mt_error_wrap(st, "resuming from %s: ", dir);
    }
    cJSON_Delete(s);
    s = NULL;
    MT_TRY(mt_comm_agree(tr->comm, st));
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/state.json", dir);
    st = mt_json_read_file(p, &s);
    if (st == MT_OK) st = load_state(tr, dir, s);
    if (st != MT_OK) st = mt_error_wrap(st, "resuming from %s: ", dir);
    cJSON_Delete(s);
    MT_TRY(mt_comm_agree(tr->comm, st));
    snprintf(tr->resumed_from, sizeof tr->resumed_from, "%s", dir);
    snprintf(tr->last_ckpt, sizeof tr->last_ckpt, "%s", dir);
    MT_INFO("resumed from %s at step %lld", dir, (long long)tr->step);
    return MT_OK;
}
