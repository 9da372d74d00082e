/* The run directory: config.yaml, provenance.json, log.jsonl, and the exported model.
 *
 *   RUN/config.yaml        the resolved job (canonical YAML; its SHA-256 is the config digest)
 *   RUN/provenance.json    who/what/where/when: build, libraries, dataset and config digests,
 *                          world size, hosts, start and end times, how the run ended
 *   RUN/log.jsonl          one JSON object per logged step, and one per validation
 *   RUN/model/             model.safetensors + config.json + README.md (the model card)
 *
 * Rank 0 writes; every write is atomic; the other ranks learn the outcome through an agreement. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/json.h"
#include "medtrain/log.h"
#include "medtrain/mem.h"
#include "trainer_internal.h"

static void iso_now(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The dataset digest: the pack's input digest (over every source file) plus what the pack made of
 * it (size, pixel type, labels, split sizes), so a re-pack with other options differs. */
mt_status trainer_dataset_digest(trainer *tr) {
    const mt_pack_info *in = mt_pack_get_info(tr->pack);
    char text[8192];
    int n =
        snprintf(text, sizeof text, "%s|%lld|%dx%d|%s|%lld,%lld,%lld", in->input_digest,
                 (long long)in->n, in->h, in->w, mt_dtype_name(in->dtype),
                 (long long)in->split_n[0], (long long)in->split_n[1], (long long)in->split_n[2]);
    for (int l = 0; l < in->n_labels && n > 0 && (size_t)n < sizeof text; l++)
        n += snprintf(text + n, sizeof text - (size_t)n, "|%s", in->label_names[l]);
    uint8_t d[MT_SHA256_BYTES];
    MT_TRY(mt_sha256(text, strlen(text), d));
    mt_hex(d, sizeof d, tr->dataset_digest);
    return MT_OK;
}

static cJSON *hosts_json(trainer *tr, mt_status *st) {
    char me[64] = {0};
    snprintf(me, sizeof me, "%s", mt_comm_host(tr->comm));
    char *all = mt_calloc((size_t)tr->world, sizeof me, "host names");
    *st = all ? MT_OK : MT_ERR_NOMEM;
    *st = mt_comm_agree(tr->comm, *st);
    if (*st == MT_OK) *st = mt_comm_allgather(tr->comm, me, all, sizeof me);
    cJSON *hosts = cJSON_CreateArray();
    for (int r = 0; *st == MT_OK && r < tr->world; r++) {
        const char *h = all + (size_t)r * sizeof me;
        bool seen = false;
        for (int q = 0; q < r; q++) seen |= !strcmp(h, all + (size_t)q * sizeof me);
        if (!seen) cJSON_AddItemToArray(hosts, cJSON_CreateString(h));
    }
    mt_free(all);
    return hosts;
}

static mt_status write_provenance(trainer *tr) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/provenance.json", tr->s.run_dir);
    return mt_json_write_file(path, tr->provenance, 0);
}

static cJSON *start_provenance(trainer *tr, cJSON *hosts) {
    cJSON *p = cJSON_CreateObject();
    char now[32];
    iso_now(now, sizeof now);
    cJSON_AddStringToObject(p, "format", "medtrain-provenance");
    if (tr->opts->build) cJSON_AddItemToObject(p, "build", cJSON_Duplicate(tr->opts->build, 1));
    cJSON_AddStringToObject(p, "config", tr->opts->config_path ? tr->opts->config_path : "");
    cJSON_AddStringToObject(p, "config_digest", tr->config_digest);
    cJSON *d = cJSON_AddObjectToObject(p, "dataset");
    const mt_pack_info *in = mt_pack_get_info(tr->pack);
    cJSON_AddStringToObject(d, "pack", tr->pack_path);
    cJSON_AddStringToObject(d, "digest", tr->dataset_digest);
    cJSON_AddStringToObject(d, "input_digest", in->input_digest);
    cJSON_AddStringToObject(d, "pack_creator", in->creator);
    cJSON_AddNumberToObject(d, "images", (double)in->n);
    cJSON_AddNumberToObject(p, "world_size", tr->world);
    cJSON_AddItemToObject(p, "hosts", hosts);
    cJSON_AddStringToObject(p, "start_time", now);
    cJSON_AddNullToObject(p, "end_time");
    cJSON_AddStringToObject(p, "status", "running");
    return p;
}

/* Creates RUN/, refuses to start afresh over an existing run's checkpoints, writes config.yaml
 * and a first provenance.json. */
mt_status trainer_prepare_run_dir(trainer *tr) {
    mt_status st = MT_OK;
    cJSON *hosts = hosts_json(tr, &st);
    if (st != MT_OK) {
        cJSON_Delete(hosts);
        return st;
    }
    if (tr->rank == 0) {
        bool resuming = tr->opts->resume && tr->opts->resume[0];
        char latest[PATH_MAX];
        bool found = false;
        st = mt_mkdir_p(tr->s.run_dir);
        if (st == MT_OK) st = mt_ckpt_latest(tr->ckpt_root, latest, sizeof latest, &found);
        if (st == MT_OK && found && !resuming)
            st = mt_fail(MT_ERR_CONFIG,
                         "%s already holds a run with checkpoints (latest: %s): continue it with "
                         "--resume auto, or set run.dir to a new directory",
                         tr->s.run_dir, latest);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/config.yaml", tr->s.run_dir);
        if (st == MT_OK) st = mt_config_write(tr->cfg, path);
        if (st == MT_OK) {
            tr->provenance = start_provenance(tr, hosts);
            hosts = NULL;
            st = write_provenance(tr);
        }
    }
    cJSON_Delete(hosts);
    return mt_comm_agree(tr->comm, st);
}

/* Opens log.jsonl for appending; on a resumed run first drops lines logged after the checkpoint
 * (they will be logged again). */
mt_status trainer_open_log(trainer *tr) {
    mt_status st = MT_OK;
    if (tr->rank == 0) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/log.jsonl", tr->s.run_dir);
        if (mt_path_exists(path) && tr->resumed_from[0]) {
            char *text = NULL;
            size_t n = 0;
            st = mt_file_read(path, &text, &n);
            char *kept = st == MT_OK ? mt_alloc(n + 1, "log lines") : NULL;
            if (st == MT_OK && !kept) st = MT_ERR_NOMEM;
            size_t k = 0;
            for (char *line = text, *end; st == MT_OK && line && *line; line = end) {
                end = strchr(line, '\n');
                end = end ? end + 1 : line + strlen(line);
                cJSON *j = cJSON_ParseWithLength(line, (size_t)(end - line));
                cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
                if (j && cJSON_IsNumber(s) && s->valuedouble <= (double)tr->step) {
                    memcpy(kept + k, line, (size_t)(end - line));
                    k += (size_t)(end - line);
                }
                cJSON_Delete(j);
            }
            if (st == MT_OK) st = mt_file_write_atomic(path, kept, k);
            mt_free(text), mt_free(kept);
        }
        if (st == MT_OK && !(tr->log = fopen(path, "a")))
            st = mt_fail(MT_ERR_IO, "%s: cannot open for appending", path);
    }
    return mt_comm_agree(tr->comm, st);
}

/* ---- export -------------------------------------------------------------------------------- */

static cJSON *model_config_json(trainer *tr) {
    const mt_model_opts *mo = mt_model_options(tr->task->model);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "format", "medtrain-model");
    cJSON_AddStringToObject(c, "task", tr->task->name);
    cJSON_AddStringToObject(c, "architecture", mo->arch);
    cJSON_AddNumberToObject(c, "in_channels", mo->in_channels);
    cJSON_AddNumberToObject(c, "num_outputs", mo->n_outputs);
    tr->task->describe(tr->task, c);
    cJSON_AddNumberToObject(c, "input_size", tr->s.size);
    cJSON_AddStringToObject(c, "layout",
                            mt_model_dense(tr->task->model)
                                ? "weights as the state_dict of the PyTorch U-Net of "
                                  "docs/SEGMENTATION.md (NCHW); NHWC in medtrain"
                                : "weights as torchvision state_dict (NCHW); NHWC inputs "
                                  "in medtrain");
    cJSON *n = cJSON_AddObjectToObject(c, "normalization");
    const char *mode = tr->s.norm == MT_NORM_XRV    ? "xrv"
                       : tr->s.norm == MT_NORM_NONE ? "none"
                                                    : "meanstd";
    cJSON_AddStringToObject(n, "mode", mode);
    cJSON_AddStringToObject(n, "input_range", "[0,1] after windowing, as stored in the pack");
    if (tr->s.norm == MT_NORM_MEANSTD) {
        cJSON_AddNumberToObject(n, "mean", tr->s.mean);
        cJSON_AddNumberToObject(n, "std", tr->s.std);
    }
    cJSON_AddStringToObject(c, "data_pack", tr->pack_path);
    cJSON_AddStringToObject(c, "dataset_digest", tr->dataset_digest);
    cJSON_AddStringToObject(c, "config_digest", tr->config_digest);
    cJSON_AddNumberToObject(c, "steps", (double)tr->step);
    return c;
}

static mt_status write_card(trainer *tr, const char *path) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return mt_fail(MT_ERR_NOMEM, "model card: cannot open a memory stream");
    const mt_pack_info *in = mt_pack_get_info(tr->pack);
    const mt_model_opts *mo = mt_model_options(tr->task->model);
    fprintf(f, "# %s %s model (medtrain)\n\n", mo->arch, tr->task->name);
    fprintf(f, "**Not for clinical use without human review.** This model was trained by "
               "medtrain for research. Its outputs are not a diagnosis: any clinical use needs "
               "review of every prediction by a qualified reader, and validation on the "
               "population, scanners and protocols where it would be used.\n\n");
    fprintf(f,
            "## Model\n\n- architecture: %s (parameter names as config.json says), %d input "
            "channel(s), %d outputs\n- input: %dx%d, normalisation as in config.json\n"
            "- trained for %lld steps, global batch %lld, %d rank(s)\n\n",
            mo->arch, mo->in_channels, mo->n_outputs, tr->s.size, tr->s.size, (long long)tr->step,
            (long long)tr->s.batch, tr->world);
    tr->task->card(tr->task, f);
    fprintf(f,
            "## Data\n\n- pack: `%s` (%lld images; train %lld, val %lld, test %lld)\n"
            "- dataset digest: `%s`\n- input digest: `%s`\n\n",
            tr->pack_path, (long long)in->n, (long long)in->split_n[0], (long long)in->split_n[1],
            (long long)in->split_n[2], tr->dataset_digest, in->input_digest);
    fprintf(f, "## Metrics\n\nValidation split at the end of training:\n\n");
    cJSON *it;
    if (tr->last_val)
        cJSON_ArrayForEach(it, tr->last_val) if (cJSON_IsNumber(it))
            fprintf(f, "- %s: %.4f\n", it->string, it->valuedouble);
    fprintf(f,
            "\nTest-split metrics: run `medtrain eval` on this directory.\n\n"
            "## Provenance\n\nconfig digest `%s`; see provenance.json in the run directory.\n",
            tr->config_digest);
    fclose(f);
    mt_status st = mt_file_write_atomic(path, buf, n);
    free(buf);
    return st;
}

/* RUN/model/ is written as RUN/model.tmp/ and renamed into place. */
mt_status trainer_export(trainer *tr) {
    mt_status st = MT_OK;
    if (tr->rank == 0) {
        char tmp[PATH_MAX], dir[PATH_MAX], p[PATH_MAX + 32], old[PATH_MAX + 8];
        snprintf(tmp, sizeof tmp, "%s/model.tmp", tr->s.run_dir);
        snprintf(dir, sizeof dir, "%s/model", tr->s.run_dir);
        st = mt_mkdir_p(tmp);
        cJSON *c = model_config_json(tr);
        char *cfg_text = cJSON_PrintUnformatted(c);
        const char *keys[] = {"format", "medtrain_config"};
        const char *vals[] = {"pt", cfg_text ? cfg_text : "{}"};
        snprintf(p, sizeof p, "%s/model.safetensors", tmp);
        if (st == MT_OK) st = mt_model_save(tr->task->model, p, 2, keys, vals);
        free(cfg_text);
        snprintf(p, sizeof p, "%s/config.json", tmp);
        if (st == MT_OK) st = mt_json_write_file(p, c, 0);
        cJSON_Delete(c);
        snprintf(p, sizeof p, "%s/README.md", tmp);
        if (st == MT_OK) st = write_card(tr, p);
        /* Replace an older export: move it aside, rename, then remove the old one. */
        snprintf(old, sizeof old, "%s.old", dir);
        if (st == MT_OK && mt_path_exists(dir)) {
            const char *names[] = {"model.safetensors", "config.json", "README.md"};
            for (int i = 0; i < 3; i++) {
                snprintf(p, sizeof p, "%s/%s", old, names[i]);
                unlink(p);
            }
            rmdir(old);
            if (rename(dir, old) != 0) st = mt_fail(MT_ERR_IO, "%s: cannot move aside", dir);
        }
        if (st == MT_OK && rename(tmp, dir) != 0)
            st = mt_fail(MT_ERR_IO, "%s -> %s: rename failed", tmp, dir);
        if (st == MT_OK && mt_path_exists(old)) {
            const char *names[] = {"model.safetensors", "config.json", "README.md"};
            for (int i = 0; i < 3; i++) {
                snprintf(p, sizeof p, "%s/%s", old, names[i]);
                unlink(p);
            }
            rmdir(old);
        }
        if (st == MT_OK) st = mt_fsync_dir(tr->s.run_dir);
        if (st == MT_OK) MT_INFO("exported the model to %s", dir);
    }
    return mt_comm_agree(tr->comm, st);
}

void trainer_finish_provenance(trainer *tr, mt_status st) {
    if (tr->rank != 0 || !tr->provenance) return;
    char now[32];
    iso_now(now, sizeof now);
    cJSON_ReplaceItemInObject(tr->provenance, "end_time", cJSON_CreateString(now));
    cJSON_ReplaceItemInObject(tr->provenance, "status",
                              cJSON_CreateString(st == MT_OK ? "completed" : "failed"));
    cJSON_DeleteItemFromObject(tr->provenance, "steps_completed");
    cJSON_AddNumberToObject(tr->provenance, "steps_completed", (double)tr->step);
    if (tr->resumed_from[0]) {
        cJSON_DeleteItemFromObject(tr->provenance, "resumed_from");
        cJSON_AddStringToObject(tr->provenance, "resumed_from", tr->resumed_from);
    }
    if (st != MT_OK) {
        cJSON_DeleteItemFromObject(tr->provenance, "error");
        cJSON_AddStringToObject(tr->provenance, "error", mt_error_text());
    }
    if (write_provenance(tr) != MT_OK) MT_WARN("%s", mt_error_message());
}
