/* medtrain eval MODEL [--pack PACK] [--split test] [--out DIR]: a trained classifier on a pack
 * split, with per-label AUROC and F1, macro/micro averages, per-image predictions and ROC curves.
 *
 * MODEL is a run directory (its model/), an exported model directory (config.json +
 * model.safetensors) or a checkpoint directory (state.json, verified by checksum). Ranks share
 * the images; rank 0 computes the metrics and writes OUT/ (written as OUT.tmp/, then renamed):
 *   metrics.json      per label: AUROC (undefined when one class only), F1/precision/recall at
 *                     0.5 and at the threshold that maximised F1 on the threshold split (val)
 *   predictions.csv   index, case id (pseudonymous), per-label probability and target
 *   roc/LABEL.csv     fpr, tpr, threshold; roc/LABEL.png when gnuplot is installed */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "eval_internal.h"
#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/loader.h"
#include "medtrain/log.h"
#include "medtrain/mem.h"
#include "medtrain/metrics.h"
#include "medtrain/model.h"
#include "medtrain/pack.h"
#include "medtrain/train.h"

void mt_cmd_eval_usage(FILE *out) {
    fprintf(out,
            "usage: medtrain eval MODEL [--pack PACK] [--split test] [--threshold-split val|none]\n"
            "                     [--out DIR] [--batch 32] [--threads N]\n"
            "                     [--empty ignore|one] [--overlays 8]   (segmentation)\n\n"
            "MODEL is a run directory, its model/ export, or a checkpoint (RUN/ckpt/step_N).\n"
            "--pack defaults to the pack the model was trained on. Writes DIR (default\n"
            "RUN/eval-SPLIT/).\n"
            "Classifiers: metrics.json, predictions.csv, roc/*.csv (and roc/*.png with gnuplot);\n"
            "prints per-label AUROC and F1 and `macro AUROC = ...`.\n"
            "Segmenters: metrics.json (per-class Dice, IoU, HD95 in pixels and mm), cases.csv,\n"
            "overlays/*.png (true contours solid, predicted dashed) for the first K cases;\n"
            "--empty: a case whose truth lacks a class is skipped (ignore) or scores 1 when the\n"
            "prediction lacks it too (one); prints `mean Dice = ...`.\n");
}

static bool is_segment(const eval_model *m) {
    return !strcmp(m->task, "segment");
}

/* Entries of m->labels: label names, or a segmenter's class names. */
static int n_names(const eval_model *m) {
    return is_segment(m) ? m->n_classes : m->n_outputs;
}

static void free_model_desc(eval_model *m) {
    if (m->labels)
        for (int i = 0; i < n_names(m); i++) mt_free(m->labels[i]);
    mt_free(m->labels);
}

/* The U-Net options of a segmenter, from config.json's fields or the job's model.* keys. */
static void set_unet(eval_model *m, int depth, int channels, const char *norm, const char *up,
                     const char *head) {
    m->unet = (mt_model_opts){.depth = depth,
                              .channels = channels,
                              .norm = !strcmp(norm, "instance") ? MT_NORM_INSTANCE : MT_NORM_BATCH,
                              .bilinear = !strcmp(up, "bilinear")};
    m->sigmoid = !strcmp(head, "sigmoid");
}

static const char *json_str(const cJSON *c, const char *key, const char *def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsString(v) ? v->valuestring : def;
}

static int json_int(const cJSON *c, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsNumber(v) ? v->valueint : def;
}

static mt_norm_mode parse_norm(const char *s) {
    return !strcmp(s, "xrv") ? MT_NORM_XRV : !strcmp(s, "none") ? MT_NORM_NONE : MT_NORM_MEANSTD;
}

/* An exported model directory: config.json written by the trainer. */
static mt_status describe_export(const char *dir, eval_model *m) {
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/config.json", dir);
    cJSON *c;
    MT_TRY(mt_json_read_file(p, &c));
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(c, "architecture");
    const cJSON *inch = cJSON_GetObjectItemCaseSensitive(c, "in_channels");
    const cJSON *nout = cJSON_GetObjectItemCaseSensitive(c, "num_outputs");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(c, "input_size");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(c, "normalization");
    const cJSON *pack = cJSON_GetObjectItemCaseSensitive(c, "data_pack");
    snprintf(m->task, sizeof m->task, "%s", json_str(c, "task", "classify"));
    bool seg = is_segment(m);
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(c, seg ? "class_names" : "label_names");
    int n_names_want =
        seg ? cJSON_GetArraySize(names) : (cJSON_IsNumber(nout) ? nout->valueint : -1);
    /* a multi-label segmenter names its structures only (no background): 1 is enough */
    int min_classes = strcmp(json_str(c, "mask_layout", "index"), "multilabel") ? 2 : 1;
    mt_status st = MT_OK;
    if (!cJSON_IsString(arch) || !cJSON_IsNumber(inch) || !cJSON_IsNumber(nout) ||
        !cJSON_IsNumber(size) || !cJSON_IsArray(names) || !cJSON_IsObject(norm) ||
        cJSON_GetArraySize(names) != n_names_want || (seg && n_names_want < min_classes))
        st =
            mt_fail(MT_ERR_FORMAT,
                    "%s: expected architecture, in_channels, num_outputs, input_size, %s and "
                    "normalization",
                    p,
                    seg ? (min_classes == 1 ? "class_names (1 or more)" : "class_names (2 or more)")
                        : "label_names (num_outputs of them)");
    if (st == MT_OK && seg) {
        m->n_classes = n_names_want;
        set_unet(m, json_int(c, "depth", 4), json_int(c, "channels", 32),
                 json_str(c, "norm", "batch"), json_str(c, "upsample", "transpose"),
                 json_str(c, "head", "softmax"));
    }
    if (st == MT_OK) {
        snprintf(m->dir, sizeof m->dir, "%s", dir);
        snprintf(m->arch, sizeof m->arch, "%s", arch->valuestring);
        m->in_channels = inch->valueint, m->n_outputs = nout->valueint, m->size = size->valueint;
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(norm, "mode");
        const cJSON *mean = cJSON_GetObjectItemCaseSensitive(norm, "mean");
        const cJSON *sd = cJSON_GetObjectItemCaseSensitive(norm, "std");
        m->norm = parse_norm(cJSON_IsString(mode) ? mode->valuestring : "meanstd");
        m->mean = cJSON_IsNumber(mean) ? (float)mean->valuedouble : 0.5f;
        m->std = cJSON_IsNumber(sd) ? (float)sd->valuedouble : 0.25f;
        if (cJSON_IsString(pack)) snprintf(m->pack, sizeof m->pack, "%s", pack->valuestring);
        m->labels = mt_calloc((size_t)n_names(m), sizeof *m->labels, "label names");
        st = m->labels ? MT_OK : MT_ERR_NOMEM;
        for (int i = 0; st == MT_OK && i < n_names(m); i++) {
            const cJSON *n = cJSON_GetArrayItem(names, i);
            m->labels[i] = mt_strdup(cJSON_IsString(n) ? n->valuestring : "?", "label name");
            if (!m->labels[i]) st = MT_ERR_NOMEM;
        }
    }
    cJSON_Delete(c);
    return st;
}

/* A checkpoint: the run's resolved config travels in state.json. */
static mt_status describe_checkpoint(const char *dir, eval_model *m) {
    cJSON *s;
    MT_TRY(mt_ckpt_open(dir, &s));
    const cJSON *yaml = cJSON_GetObjectItemCaseSensitive(s, "config");
    mt_config *cfg = NULL;
    mt_status st =
        cJSON_IsString(yaml)
            ? mt_config_parse(yaml->valuestring, strlen(yaml->valuestring),
                              "the checkpoint's config", mt_train_schema(), 0, NULL, &cfg)
            : mt_fail(MT_ERR_FORMAT, "%s/state.json: no config", dir);
    if (st == MT_OK) {
        snprintf(m->dir, sizeof m->dir, "%s", dir);
        snprintf(m->arch, sizeof m->arch, "%s", mt_config_str(cfg, "model.arch"));
        snprintf(m->pack, sizeof m->pack, "%s", mt_config_str(cfg, "data.pack"));
        m->in_channels = (int)mt_config_int(cfg, "model.in_channels");
        m->size = (int)mt_config_int(cfg, "data.size");
        m->norm = parse_norm(mt_config_str(cfg, "data.norm"));
        m->mean = (float)mt_config_float(cfg, "data.mean");
        m->std = (float)mt_config_float(cfg, "data.std");
        m->n_outputs = -1; /* the pack's label count; a mismatch fails when loading weights */
        snprintf(m->task, sizeof m->task, "%s", mt_config_str(cfg, "task"));
        set_unet(m, (int)mt_config_int(cfg, "model.depth"),
                 (int)mt_config_int(cfg, "model.channels"), mt_config_str(cfg, "model.norm"),
                 mt_config_str(cfg, "model.upsample"), mt_config_str(cfg, "model.head"));
        m->n_classes = -1; /* the pack's */
    }
    mt_config_free(cfg);
    cJSON_Delete(s);
    return st;
}

static mt_status describe_model(const char *arg, eval_model *m) {
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/model/config.json", arg);
    if (mt_path_exists(p)) {
        snprintf(m->run_dir, sizeof m->run_dir, "%s", arg);
        snprintf(p, sizeof p, "%s/model", arg);
        return describe_export(p, m);
    }
    snprintf(p, sizeof p, "%s/config.json", arg);
    if (mt_path_exists(p)) {
        snprintf(m->run_dir, sizeof m->run_dir, "%s/..", arg);
        return describe_export(arg, m);
    }
    snprintf(p, sizeof p, "%s/state.json", arg);
    if (mt_path_exists(p)) {
        snprintf(m->run_dir, sizeof m->run_dir, "%s/../..", arg);
        return describe_checkpoint(arg, m);
    }
    return mt_fail(MT_ERR_IO,
                   "%s: not a run directory, model export (config.json) or checkpoint "
                   "(state.json)",
                   arg);
}

/* The model's labels must be the pack's, in the same order. */
static mt_status check_labels(const eval_model *m, const mt_pack_info *in, const char *pack) {
    if (m->n_outputs >= 0 && m->n_outputs != in->n_labels)
        return mt_fail(MT_ERR_SHAPE, "the model predicts %d labels, but %s has %d", m->n_outputs,
                       pack, in->n_labels);
    for (int l = 0; m->labels && l < in->n_labels; l++)
        if (strcmp(m->labels[l], in->label_names[l]) != 0)
            return mt_fail(MT_ERR_SHAPE,
                           "label %d is '%s' in the model but '%s' in %s (labels must match in "
                           "name and order)",
                           l, m->labels[l], in->label_names[l], pack);
    return MT_OK;
}

typedef struct predictions {
    float *prob;    /* (n, L) sigmoid of the logits */
    float *targets; /* (n, L) */
    int64_t *idx;   /* (n) pack image index */
    int64_t n;
} predictions;

static void free_predictions(predictions *p) {
    mt_free(p->prob), mt_free(p->targets), mt_free(p->idx);
    memset(p, 0, sizeof *p);
}

/* Predicts one split on all ranks and gathers every row on every rank. Collective. */
static mt_status predict_split(mt_comm *comm, mt_ctx *ctx, mt_model *model, const eval_model *m,
                               mt_pack *pack, mt_split split, int batch, predictions *out) {
    int L = mt_pack_get_info(pack)->n_labels, rank = mt_comm_rank(comm),
        world = mt_comm_world(comm);
    mt_loader_opts lo = {.split = split,
                         .batch = batch,
                         .size = m->size,
                         .norm = m->norm,
                         .mean = m->mean,
                         .std = m->std};
    mt_loader *l = NULL;
    mt_status st = mt_loader_open(mt_pack_path(pack), rank, world, &lo, &l);
    MT_TRY(mt_comm_agree(comm, st));
    int64_t nb = mt_loader_batches_per_epoch(l);
    size_t rows = nb * batch > 0 ? (size_t)(nb * batch) : 1;
    int C = m->in_channels;
    float *logits = mt_alloc(rows * L * sizeof(float), "logits");
    int64_t *idx = mt_alloc(rows * sizeof(int64_t), "indices");
    float *x3 =
        C > 1 ? mt_alloc((size_t)batch * m->size * m->size * C * sizeof(float), "input") : NULL;
    st = logits && idx && (C == 1 || x3) ? MT_OK : MT_ERR_NOMEM;
    for (int64_t i = 0; st == MT_OK && i < nb; i++) {
        const mt_batch *b;
        st = mt_loader_next(l, &b);
        if (st != MT_OK) break;
        mt_tensor xt = mt_batch_images(b, C, x3);
        mt_tensor yt = mt_tensor_2d(logits + (size_t)i * batch * L, MT_F32, MT_CPU, b->n, L);
        st = mt_model_forward(model, ctx, &xt, false, 0, 0, &yt);
        for (int j = 0; j < b->n; j++) idx[i * batch + j] = b->weights[j] > 0 ? b->indices[j] : -1;
    }
    mt_loader_close(l);
    mt_free(x3);
    st = mt_comm_agree(comm, st);
    void *gathered = NULL;
    int64_t *all_idx = NULL, n = 0;
    if (st == MT_OK)
        st = mt_comm_allgather_rows(comm, logits, idx, rows, L * sizeof(float), &gathered, &all_idx,
                                    &n);
    mt_free(logits), mt_free(idx);
    const float *all = gathered;
    if (st == MT_OK) {
        out->prob = mt_alloc((size_t)(n ? n : 1) * L * sizeof(float), "probabilities");
        out->targets = mt_alloc((size_t)(n ? n : 1) * L * sizeof(float), "targets");
        st = out->prob && out->targets ? MT_OK : MT_ERR_NOMEM;
    }
    const float *labels = mt_pack_labels(pack);
    for (int64_t r = 0; st == MT_OK && r < n; r++)
        for (int k = 0; k < L; k++) {
            out->prob[r * L + k] = 1.0f / (1.0f + expf(-all[r * L + k]));
            out->targets[r * L + k] = labels[all_idx[r] * L + k];
        }
    mt_free(gathered);
    out->idx = all_idx;
    out->n = n;
    if (st != MT_OK) free_predictions(out);
    return st;
}

/* ---- writing results (rank 0) -------------------------------------------------------------- */

static cJSON *counts_json(mt_confusion c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "tp", (double)c.tp);
    cJSON_AddNumberToObject(j, "fp", (double)c.fp);
    cJSON_AddNumberToObject(j, "fn", (double)c.fn);
    cJSON_AddNumberToObject(j, "tn", (double)c.tn);
    return j;
}

static void add_num_or_null(cJSON *o, const char *k, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

/* A label name as a file name: letters, digits, '-' and '_' kept, anything else '_'. */
static void file_name_of(const char *label, char *out, size_t n) {
    size_t i = 0;
    for (; label[i] && i + 1 < n; i++) {
        char c = label[i];
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
        out[i] = keep ? c : '_';
    }
    out[i] = '\0';
}

static mt_status write_roc(const char *dir, const mt_score_table *t, bool gnuplot) {
    char p[PATH_MAX + 256];
    snprintf(p, sizeof p, "%s/roc", dir);
    MT_TRY(mt_mkdir_p(p));
    for (int l = 0; l < t->n_labels; l++) {
        mt_roc_curve c;
        MT_TRY(mt_metrics_roc_curve(t, l, &c));
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);
        if (!f) {
            mt_roc_curve_free(&c);
            return mt_fail(MT_ERR_NOMEM, "roc: cannot open a memory stream");
        }
        fprintf(f, "fpr,tpr,threshold\n");
        for (int64_t i = 0; i < c.n; i++)
            fprintf(f, "%.9g,%.9g,%.9g\n", c.fpr[i], c.tpr[i], (double)c.thresholds[i]);
        fclose(f);
        mt_roc_curve_free(&c);
        char name[128];
        file_name_of(t->names[l], name, sizeof name);
        snprintf(p, sizeof p, "%s/roc/%s.csv", dir, name);
        mt_status st = mt_file_write_atomic(p, buf, n);
        free(buf);
        MT_TRY(st);
        if (!gnuplot) continue;
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd,
                 "gnuplot -e \"set terminal png size 480,480; set output '%s/roc/%s.png'; "
                 "set datafile separator ','; set key off; set xrange [0:1]; set yrange [0:1]; "
                 "set xlabel 'false positive rate'; set ylabel 'true positive rate'; "
                 "set title 'ROC: %s'; plot '%s/roc/%s.csv' every ::1 using 1:2 with lines lw 2, "
                 "x with lines dt 2\" 2>/dev/null",
                 dir, name, name, dir, name);
        if (system(cmd) != 0) MT_WARN("gnuplot failed for %s; the CSV is there", t->names[l]);
    }
    return MT_OK;
}

static mt_status write_predictions(const char *path, mt_pack *pack, const predictions *pr) {
    const mt_pack_info *in = mt_pack_get_info(pack);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return mt_fail(MT_ERR_NOMEM, "predictions: cannot open a memory stream");
    fprintf(f, "index,case_id");
    for (int l = 0; l < in->n_labels; l++) fprintf(f, ",p_%s", in->label_names[l]);
    for (int l = 0; l < in->n_labels; l++) fprintf(f, ",y_%s", in->label_names[l]);
    fputc('\n', f);
    mt_status st = MT_OK;
    for (int64_t i = 0; st == MT_OK && i < pr->n; i++) {
        mt_pack_meta meta;
        st = mt_pack_read_meta(pack, pr->idx[i], &meta);
        fprintf(f, "%lld,%s", (long long)pr->idx[i], st == MT_OK ? meta.case_id : "");
        for (int l = 0; l < in->n_labels; l++) fprintf(f, ",%.6f", pr->prob[i * in->n_labels + l]);
        for (int l = 0; l < in->n_labels; l++) {
            float y = pr->targets[i * in->n_labels + l];
            if (isnan(y))
                fputc(',', f);
            else
                fprintf(f, ",%g", y);
        }
        fputc('\n', f);
    }
    fclose(f);
    if (st == MT_OK) st = mt_file_write_atomic(path, buf, n);
    free(buf);
    return st;
}

static cJSON *label_json(const mt_label_metrics *at05, const mt_label_metrics *atbest, float thr) {
    cJSON *j = cJSON_CreateObject();
    add_num_or_null(j, "auroc", at05->auroc.value);
    cJSON_AddBoolToObject(j, "auroc_defined", at05->auroc.defined);
    cJSON_AddNumberToObject(j, "positives", (double)at05->auroc.n_pos);
    cJSON_AddNumberToObject(j, "negatives", (double)at05->auroc.n_neg);
    cJSON_AddNumberToObject(j, "unknown", (double)at05->auroc.n_unknown);
    cJSON *a = cJSON_AddObjectToObject(j, "at_0.5");
    cJSON_AddNumberToObject(a, "f1", at05->f1);
    cJSON_AddNumberToObject(a, "precision", at05->precision);
    cJSON_AddNumberToObject(a, "recall", at05->recall);
    cJSON_AddItemToObject(a, "counts", counts_json(at05->counts));
    if (atbest) {
        cJSON *b = cJSON_AddObjectToObject(j, "at_val_threshold");
        add_num_or_null(b, "threshold", thr);
        cJSON_AddNumberToObject(b, "f1", atbest->f1);
        cJSON_AddNumberToObject(b, "precision", atbest->precision);
        cJSON_AddNumberToObject(b, "recall", atbest->recall);
        cJSON_AddItemToObject(b, "counts", counts_json(atbest->counts));
    }
    return j;
}

/* metrics.json, predictions.csv and roc/ into OUT.tmp, then renamed to OUT. */
static mt_status write_results(const eval_args *a, const eval_model *m, mt_pack *pack,
                               const predictions *test, const float *best_thr) {
    const mt_pack_info *in = mt_pack_get_info(pack);
    int L = in->n_labels;
    mt_score_table t = {.scores = test->prob,
                        .targets = test->targets,
                        .n = test->n,
                        .n_labels = L,
                        .names = (const char *const *)in->label_names};
    mt_label_metrics *m05 = mt_calloc((size_t)L, sizeof *m05, "label metrics");
    mt_label_metrics *mb = mt_calloc((size_t)L, sizeof *mb, "label metrics");
    float *half = mt_alloc((size_t)L * sizeof(float), "thresholds");
    if (!m05 || !mb || !half) {
        mt_free(m05), mt_free(mb), mt_free(half);
        return MT_ERR_NOMEM;
    }
    for (int l = 0; l < L; l++) half[l] = 0.5f;
    mt_metrics_summary s05, sb;
    mt_status st = mt_metrics_summarize(&t, half, m05, &s05);
    if (st == MT_OK && best_thr) st = mt_metrics_summarize(&t, best_thr, mb, &sb);
    char tmp[PATH_MAX + 8], p[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp", a->out);
    if (st == MT_OK) st = mt_mkdir_p(tmp);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", m->dir);
    cJSON_AddStringToObject(j, "architecture", m->arch);
    cJSON_AddStringToObject(j, "pack", mt_pack_path(pack));
    cJSON_AddStringToObject(j, "split", mt_split_name(a->split));
    cJSON_AddNumberToObject(j, "images", (double)test->n);
    add_num_or_null(j, "macro_auroc", s05.macro_auroc);
    cJSON_AddNumberToObject(j, "auroc_undefined_labels", s05.n_auroc_undefined);
    add_num_or_null(j, "micro_auroc", s05.micro_auroc.defined ? s05.micro_auroc.value : NAN);
    cJSON_AddNumberToObject(j, "macro_f1_at_0.5", s05.macro_f1);
    cJSON_AddNumberToObject(j, "micro_f1_at_0.5", s05.micro_f1);
    if (best_thr) {
        cJSON_AddStringToObject(j, "threshold_split", mt_split_name(a->thr_split));
        cJSON_AddNumberToObject(j, "macro_f1_at_val_threshold", sb.macro_f1);
        cJSON_AddNumberToObject(j, "micro_f1_at_val_threshold", sb.micro_f1);
    }
    cJSON *labels = cJSON_AddObjectToObject(j, "labels");
    for (int l = 0; st == MT_OK && l < L; l++)
        cJSON_AddItemToObject(
            labels, in->label_names[l],
            label_json(&m05[l], best_thr ? &mb[l] : NULL, best_thr ? best_thr[l] : NAN));
    snprintf(p, sizeof p, "%s/metrics.json", tmp);
    if (st == MT_OK) st = mt_json_write_file(p, j, 0);
    snprintf(p, sizeof p, "%s/predictions.csv", tmp);
    if (st == MT_OK) st = write_predictions(p, pack, test);
    bool gnuplot = system("command -v gnuplot >/dev/null 2>&1") == 0;
    if (st == MT_OK) st = write_roc(tmp, &t, gnuplot);
    if (st == MT_OK) {
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", a->out);
        if (mt_path_exists(a->out) && system(cmd) != 0)
            st = mt_fail(MT_ERR_IO, "%s: cannot replace the old results", a->out);
        if (st == MT_OK && rename(tmp, a->out) != 0)
            st = mt_fail(MT_ERR_IO, "%s -> %s: rename failed", tmp, a->out);
    }
    if (st == MT_OK) {
        printf("%-24s %8s %8s %8s %8s\n", "label", "AUROC", "F1@0.5", "thr(val)", "F1@thr");
        for (int l = 0; l < L; l++) {
            printf("%-24.24s ", in->label_names[l]);
            if (m05[l].auroc.defined)
                printf("%8.4f", m05[l].auroc.value);
            else
                printf("%8s", "undef");
            printf(" %8.4f", m05[l].f1);
            if (best_thr) printf(" %8.3f %8.4f", best_thr[l], mb[l].f1);
            printf("\n");
        }
        printf("macro AUROC = %.4f  (micro %.4f, %d label(s) undefined; %lld images, split %s)\n",
               s05.macro_auroc, s05.micro_auroc.value, s05.n_auroc_undefined, (long long)test->n,
               mt_split_name(a->split));
        printf("results in %s\n", a->out);
    }
    cJSON_Delete(j);
    mt_free(m05), mt_free(mb), mt_free(half);
    return st;
}

/* ---- the command --------------------------------------------------------------------------- */

static mt_status parse_args(int argc, char **argv, eval_args *a) {
    *a = (eval_args){.split = MT_SPLIT_TEST,
                     .thr_split = MT_SPLIT_VAL,
                     .use_thr_split = true,
                     .batch = 32,
                     .overlays = 8};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (o[0] != '-') {
            if (a->model) return mt_cli_usage_error(mt_cmd_eval_usage, "eval: one model please");
            a->model = o;
            continue;
        }
        if (!v) return mt_cli_usage_error(mt_cmd_eval_usage, "eval: %s needs a value", o);
        i++;
        if (!strcmp(o, "--pack"))
            a->pack = v;
        else if (!strcmp(o, "--out"))
            a->out = v;
        else if (!strcmp(o, "--split")) {
            if (mt_split_parse(v, &a->split) != MT_OK)
                return mt_cli_usage_error(mt_cmd_eval_usage, "eval: --split: %s", mt_error_text());
        } else if (!strcmp(o, "--threshold-split")) {
            a->use_thr_split = strcmp(v, "none") != 0;
            if (a->use_thr_split && mt_split_parse(v, &a->thr_split) != MT_OK)
                return mt_cli_usage_error(mt_cmd_eval_usage, "eval: --threshold-split: %s",
                                          mt_error_text());
        } else if (!strcmp(o, "--batch"))
            a->batch = atoi(v);
        else if (!strcmp(o, "--threads"))
            a->threads = atoi(v);
        else if (!strcmp(o, "--overlays"))
            a->overlays = atoi(v);
        else if (!strcmp(o, "--empty")) {
            if (strcmp(v, "ignore") && strcmp(v, "one"))
                return mt_cli_usage_error(mt_cmd_eval_usage, "eval: --empty ignore|one, not %s", v);
            a->empty = strcmp(v, "one") ? MT_SEG_EMPTY_IGNORE : MT_SEG_EMPTY_ONE;
        } else
            return mt_cli_usage_error(mt_cmd_eval_usage, "eval: unknown option %s", o);
    }
    if (!a->model) return mt_cli_usage_error(mt_cmd_eval_usage, "eval: give a model directory");
    if (a->batch < 1) return mt_cli_usage_error(mt_cmd_eval_usage, "eval: --batch must be >= 1");
    if (a->overlays < 0)
        return mt_cli_usage_error(mt_cmd_eval_usage, "eval: --overlays must be >= 0");
    return MT_OK;
}

static mt_status run_eval(mt_comm *comm, eval_args *a, eval_model *m) {
    MT_TRY(mt_comm_agree(comm, describe_model(a->model, m)));
    const char *pack_path = a->pack ? a->pack : m->pack;
    if (!pack_path[0])
        return mt_cli_usage_error(mt_cmd_eval_usage, "eval: %s does not name its pack: use --pack",
                                  a->model);
    if (!a->out) {
        snprintf(a->default_out, sizeof a->default_out, "%s/eval-%s", m->run_dir,
                 mt_split_name(a->split));
        a->out = a->default_out;
    }
    mt_pack *pack;
    MT_TRY(mt_comm_agree(comm, mt_pack_open(pack_path, &pack)));
    if (is_segment(m)) {
        mt_status s = mt_eval_segment(comm, a, m, pack);
        mt_pack_close(pack);
        return s;
    }
    const mt_pack_info *in = mt_pack_get_info(pack);
    mt_status st = check_labels(m, in, pack_path);
    if (st == MT_OK && in->split_n[a->split] == 0)
        st = mt_fail(MT_ERR_CONFIG, "%s has no '%s' images (train %lld, val %lld, test %lld)",
                     pack_path, mt_split_name(a->split), (long long)in->split_n[0],
                     (long long)in->split_n[1], (long long)in->split_n[2]);
    if (a->use_thr_split && in->split_n[a->thr_split] == 0) {
        MT_WARN("%s has no '%s' images: F1 only at 0.5", pack_path, mt_split_name(a->thr_split));
        a->use_thr_split = false;
    }
    if (m->size == 0) m->size = in->h;
    mt_ctx ctx;
    bool ctx_ok = false;
    mt_model *model = NULL;
    if (st == MT_OK) st = mt_ctx_init(&ctx, MT_CPU, 0, a->threads);
    ctx_ok = st == MT_OK;
    mt_model_opts mo = {.arch = m->arch,
                        .in_channels = m->in_channels,
                        .n_outputs = in->n_labels,
                        .bn_momentum = 0.1f,
                        .bn_eps = 1e-5f};
    if (st == MT_OK) st = mt_model_create(&ctx, &mo, &model);
    char wpath[PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/model.safetensors", m->dir);
    mt_load_opts lo = {.strict = true};
    if (st == MT_OK) st = mt_model_load(model, wpath, &lo, NULL);
    st = mt_comm_agree(comm, st);
    predictions test = {0}, val = {0};
    if (st == MT_OK) st = predict_split(comm, &ctx, model, m, pack, a->split, a->batch, &test);
    if (st == MT_OK && a->use_thr_split)
        st = predict_split(comm, &ctx, model, m, pack, a->thr_split, a->batch, &val);
    if (st == MT_OK && mt_comm_rank(comm) == 0) {
        float *thr = NULL;
        if (a->use_thr_split) {
            thr = mt_alloc((size_t)in->n_labels * sizeof(float), "thresholds");
            mt_score_table vt = {.scores = val.prob,
                                 .targets = val.targets,
                                 .n = val.n,
                                 .n_labels = in->n_labels,
                                 .names = (const char *const *)in->label_names};
            st = thr ? MT_OK : MT_ERR_NOMEM;
            for (int l = 0; st == MT_OK && l < in->n_labels; l++) {
                mt_best_f1 b;
                st = mt_metrics_best_f1(&vt, l, &b);
                thr[l] = b.defined ? b.threshold : 0.5f;
            }
        }
        if (st == MT_OK) st = write_results(a, m, pack, &test, thr);
        mt_free(thr);
    }
    st = mt_comm_agree(comm, st);
    free_predictions(&test), free_predictions(&val);
    mt_model_free(model);
    if (ctx_ok) mt_ctx_free(&ctx);
    mt_pack_close(pack);
    return st;
}

mt_status mt_cmd_eval(mt_comm *comm, int argc, char **argv) {
    if (mt_cli_wants_help(argc, argv, mt_cmd_eval_usage)) return MT_OK;
    eval_args a;
    MT_TRY(parse_args(argc, argv, &a));
    if (a.threads > 0) openblas_set_num_threads(a.threads);
    eval_model m = {0};
    mt_status st = run_eval(comm, &a, &m);
    free_model_desc(&m);
    return st;
}
