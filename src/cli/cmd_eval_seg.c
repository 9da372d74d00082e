/* medtrain eval for segmentation models: per-case and per-class Dice, IoU and HD95 (in pixels and
 * mm) on a pack split, their means, and overlay PNGs (src/eval/segmetrics.c has the metrics).
 *
 * Ranks share the split's images; each computes its cases' metrics (and the overlays of the
 * first K cases of the split that fall to it) and rank 0 gathers the table and writes OUT/
 * (as OUT.tmp/, renamed when complete):
 *   metrics.json   per class: mean Dice, IoU, HD95 px and mm with the number of cases that
 *                  counted; the means over foreground classes; the options used
 *   cases.csv      one row per case: index, case id, then Dice, IoU, HD95 px, HD95 mm per class
 *                  (empty where undefined)
 *   overlays/      CASE.png: the image with true contours solid and predicted ones dashed
 *
 * Multi-label packs (one 0/1 plane per structure, structures may overlap) need a sigmoid head:
 * class c's prediction is output c > 0, its truth plane c; the tables keep the index layout's
 * shape (column 0 unused, structure c in column c + 1) so that summaries treat both alike, and
 * overlays are composed here from each structure's own contours.
 *
 * Pixel spacing: the pack's /meta/pixel_spacing (mm per row and column at the pack's size),
 * scaled to the evaluation size; HD95 in mm is undefined for an image whose spacing is unknown. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval_internal.h"
#include "medtrain/fs.h"
#include "medtrain/image.h"
#include "medtrain/json.h"
#include "medtrain/log.h"
#include "medtrain/mem.h"

typedef struct seg_eval {
    eval_args *a;
    eval_model *m;
    mt_pack *pack;
    const mt_pack_info *in;
    int C;   /* table columns: classes, background included (multi-label: structures + 1, column 0
                unused) */
    bool ml; /* the pack's masks are multi-label planes */
    int planes; /* mask planes per image: 1, or the structures */
    const int64_t *split;
    int64_t n_split;
    mt_pack_meta *meta; /* per split position */
    char tmp[PATH_MAX + 8];
} seg_eval;

/* Position of pack image idx in the split (the split lists indices in increasing file order). */
static int64_t split_pos(const seg_eval *e, int64_t idx) {
    int64_t lo = 0, hi = e->n_split - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (e->split[mid] == idx) return mid;
        if (e->split[mid] < idx)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* The name of table column c >= 1. */
static const char *class_name(const seg_eval *e, int c) {
    return e->in->mask_classes[e->ml ? c - 1 : c];
}

static mt_status check_classes(const seg_eval *e) {
    const eval_model *m = e->m;
    const char *pack = mt_pack_path(e->pack);
    if (e->in->n_mask_classes == 0 || (!e->ml && e->in->n_mask_classes < 2))
        return mt_fail(MT_ERR_CONFIG, "%s has no masks: a segmentation model needs them", pack);
    if (e->ml && !m->sigmoid)
        return mt_fail(MT_ERR_CONFIG,
                       "%s has multi-label masks (structures may overlap): the model has a "
                       "softmax head, which gives each pixel one class; evaluate a model trained "
                       "with model.head: sigmoid on it",
                       pack);
    if (m->n_classes >= 0 && m->n_classes != e->in->n_mask_classes)
        return mt_fail(MT_ERR_SHAPE, "the model segments %d classes, but %s has %d", m->n_classes,
                       pack, e->in->n_mask_classes);
    for (int c = 0; m->labels && c < e->in->n_mask_classes; c++)
        if (strcmp(m->labels[c], e->in->mask_classes[c]))
            return mt_fail(MT_ERR_SHAPE,
                           "class %d is '%s' in the model but '%s' in %s (classes must match in "
                           "name and order)",
                           c, m->labels[c], e->in->mask_classes[c], pack);
    if (e->in->split_n[e->a->split] == 0)
        return mt_fail(MT_ERR_CONFIG, "%s has no '%s' images", pack, mt_split_name(e->a->split));
    return MT_OK;
}

/* Case metadata for the split (before any loader thread reads the file). */
static mt_status read_meta(seg_eval *e) {
    e->split = mt_pack_split(e->pack, e->a->split, &e->n_split);
    e->meta = mt_calloc((size_t)e->n_split, sizeof *e->meta, "case metadata");
    if (!e->meta) return MT_ERR_NOMEM;
    for (int64_t i = 0; i < e->n_split; i++)
        MT_TRY(mt_pack_read_meta(e->pack, e->split[i], &e->meta[i]));
    return MT_OK;
}

/* The hard prediction of one image as a class map: argmax, or for a sigmoid head the first
 * foreground class whose logit is > 0 (for drawing; metrics use each class's own mask). */
static void class_map(const eval_model *m, const float *z, int64_t P, int K, uint8_t *out) {
    for (int64_t p = 0; p < P; p++) {
        const float *v = z + p * K;
        int best = 0;
        if (m->sigmoid) {
            for (int k = 0; k < K && !best; k++)
                if (v[k] > 0) best = k + 1;
        } else {
            for (int k = 1; k < K; k++)
                if (v[k] > v[best]) best = k;
        }
        out[p] = (uint8_t)best;
    }
}

/* One case: metrics per class into row (C entries). */
static mt_status case_metrics(const seg_eval *e, const float *z, const uint8_t *truth,
                              const uint8_t *pred, int S, const mt_pack_meta *meta,
                              uint8_t *scratch, mt_seg_class_metrics *row) {
    const eval_model *m = e->m;
    int64_t P = (int64_t)S * S;
    double scale = (double)e->in->h / S; /* pack pixels per evaluated pixel */
    mt_seg_opts o = {.empty = e->a->empty};
    bool spacing = meta->pixel_spacing[0] > 0 && meta->pixel_spacing[1] > 0;
    o.spacing[0] = spacing ? meta->pixel_spacing[0] * scale : 1;
    o.spacing[1] = spacing ? meta->pixel_spacing[1] * scale : 1;
    mt_seg_mask tm = {truth, S, S}, pm = {pred, S, S};
    if (e->ml) {
        /* Structure c: output c against truth plane c (column c + 1). */
        uint8_t *pb = scratch;
        row[0] = (mt_seg_class_metrics){.dice = NAN, .iou = NAN, .hd95_px = NAN, .hd95_mm = NAN};
        for (int c = 0; c < e->planes; c++) {
            for (int64_t p = 0; p < P; p++) pb[p] = z[p * e->planes + c] > 0;
            mt_seg_mask pbm = {pb, S, S}, tbm = {truth + (size_t)c * P, S, S};
            MT_TRY(mt_seg_case_binary(&pbm, &tbm, &o, &row[c + 1]));
        }
    } else if (!m->sigmoid) {
        MT_TRY(mt_seg_case_classes(&pm, &tm, e->C, &o, row));
    } else {
        /* Each foreground class from its own output: classes may overlap. */
        uint8_t *pb = scratch, *tb = scratch + P;
        row[0] = (mt_seg_class_metrics){.dice = NAN, .iou = NAN, .hd95_px = NAN, .hd95_mm = NAN};
        for (int c = 1; c < e->C; c++) {
            for (int64_t p = 0; p < P; p++) {
                pb[p] = z[p * (e->C - 1) + c - 1] > 0;
                tb[p] = truth[p] == c;
            }
            mt_seg_mask pbm = {pb, S, S}, tbm = {tb, S, S};
            MT_TRY(mt_seg_case_binary(&pbm, &tbm, &o, &row[c]));
        }
    }
    if (!spacing)
        for (int c = 0; c < e->C; c++) row[c].hd95_mm = NAN;
    return MT_OK;
}

/* The dash pattern of mt_seg_overlay_render's predicted contours (segmetrics.h). */
static bool dash_on(int64_t y, int64_t x) {
    return (y + 2 * x) % 8 < 4;
}

/* A multi-label overlay, drawn as mt_seg_overlay_render draws class maps: the grey image, then
 * each structure's true contour solid, then each predicted contour dashed over them, structure c
 * in mt_seg_color(c + 1). truth (C,S,S) planes, z (S,S,C) logits. */
static mt_status write_overlay_ml(const char *path, const float *image, const float *z,
                                  const uint8_t *truth, int S, int C) {
    int64_t P = (int64_t)S * S;
    uint8_t *rgb = mt_alloc((size_t)P * 3, "overlay"), *bin = mt_alloc((size_t)P, "overlay mask");
    uint8_t *surf = mt_alloc((size_t)P, "overlay contour");
    mt_status st = rgb && bin && surf ? MT_OK : MT_ERR_NOMEM;
    mt_seg_overlay grey = {.image_f32 = image, .h = S, .w = S, .n_classes = 2};
    if (st == MT_OK) st = mt_seg_overlay_render(&grey, rgb);
    for (int pass = 0; pass < 2; pass++) { /* truth, then prediction */
        for (int c = 0; st == MT_OK && c < C; c++) {
            for (int64_t p = 0; p < P; p++)
                bin[p] = pass == 0 ? truth[(size_t)c * P + p] != 0 : z[p * C + c] > 0;
            mt_seg_mask bm = {bin, S, S};
            st = mt_seg_surface(&bm, surf);
            uint8_t col[3];
            mt_seg_color(c + 1, col);
            for (int64_t p = 0; st == MT_OK && p < P; p++)
                if (surf[p] && (pass == 0 || dash_on(p / S, p % S))) memcpy(rgb + p * 3, col, 3);
        }
    }
    if (st == MT_OK) st = mt_png_write_rgb(path, rgb, S, S);
    mt_free(rgb), mt_free(bin), mt_free(surf);
    return st;
}

static void overlay_name(const seg_eval *e, int64_t pos, char *out, size_t n) {
    const char *id = e->meta[pos].case_id;
    char safe[96];
    size_t k = 0;
    for (const char *c = id; *c && k + 1 < sizeof safe; c++)
        safe[k++] = (char)((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
                                   (*c >= 'A' && *c <= 'Z') || *c == '-' || *c == '_'
                               ? *c
                               : '_');
    safe[k] = 0;
    snprintf(out, n, "%s/overlays/%04lld_%s.png", e->tmp, (long long)pos, k ? safe : "case");
}

/* This rank's share of the split: metrics rows (rows x C) and split positions (-1: padding). */
static mt_status predict_cases(seg_eval *e, mt_comm *comm, mt_ctx *ctx, mt_model *model,
                               mt_seg_class_metrics **rows_out, int64_t **pos_out, size_t *n_rows) {
    const eval_model *m = e->m;
    int B = e->a->batch, S = m->size, K = m->n_outputs;
    mt_loader_opts lo = {.split = e->a->split,
                         .batch = B,
                         .size = S,
                         .norm = m->norm,
                         .mean = m->mean,
                         .std = m->std,
                         .masks = true};
    mt_loader *l = NULL;
    MT_TRY(mt_comm_agree(comm, mt_loader_open(mt_pack_path(e->pack), mt_comm_rank(comm),
                                              mt_comm_world(comm), &lo, &l)));
    int64_t nb = mt_loader_batches_per_epoch(l), P = (int64_t)S * S;
    size_t rows = (size_t)(nb * B > 0 ? nb * B : 1);
    int Cin = m->in_channels;
    mt_seg_class_metrics *tab = mt_calloc(rows * e->C, sizeof *tab, "case metrics");
    int64_t *pos = mt_alloc(rows * sizeof *pos, "case positions");
    float *z = mt_alloc((size_t)B * P * K * sizeof(float), "logits");
    float *x3 = Cin > 1 ? mt_alloc((size_t)B * P * Cin * sizeof(float), "input") : NULL;
    uint8_t *pred = mt_alloc((size_t)P * 3, "predicted classes");
    mt_status st = tab && pos && z && pred && (Cin == 1 || x3) ? MT_OK : MT_ERR_NOMEM;
    for (size_t r = 0; st == MT_OK && r < rows; r++) pos[r] = -1;
    for (int64_t i = 0; st == MT_OK && i < nb; i++) {
        const mt_batch *b;
        st = mt_loader_next(l, &b);
        if (st != MT_OK) break;
        mt_tensor xt = mt_batch_images(b, Cin, x3);
        mt_tensor yt = mt_tensor_4d(z, MT_F32, MT_CPU, b->n, S, S, K);
        st = mt_model_forward(model, ctx, &xt, false, 0, 0, &yt);
        for (int j = 0; st == MT_OK && j < b->n; j++) {
            if (b->weights[j] <= 0) continue;
            int64_t p = split_pos(e, b->indices[j]);
            if (p < 0) {
                st = mt_fail(MT_ERR_INTERNAL, "image %lld is not in the split",
                             (long long)b->indices[j]);
                break;
            }
            size_t r = (size_t)(i * B + j);
            const float *zj = z + (size_t)j * P * K;
            const uint8_t *truth = b->masks + (size_t)j * P * e->planes;
            if (!e->ml) class_map(m, zj, P, K, pred);
            pos[r] = p;
            st = case_metrics(e, zj, truth, pred, S, &e->meta[p], pred + P, tab + r * e->C);
            if (st == MT_OK && p < e->a->overlays) {
                char path[PATH_MAX + 160];
                overlay_name(e, p, path, sizeof path);
                mt_seg_overlay ov = {.image_f32 = b->images + (size_t)j * P,
                                     .truth = truth,
                                     .pred = pred,
                                     .h = S,
                                     .w = S,
                                     .n_classes = e->C};
                st = e->ml ? write_overlay_ml(path, ov.image_f32, zj, truth, S, e->planes)
                           : mt_seg_overlay_write(path, &ov);
            }
        }
    }
    mt_loader_close(l);
    mt_free(z), mt_free(x3), mt_free(pred);
    if (st != MT_OK) {
        mt_free(tab), mt_free(pos);
        return st;
    }
    *rows_out = tab, *pos_out = pos, *n_rows = rows;
    return MT_OK;
}

static void num_or_null(cJSON *o, const char *k, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static cJSON *mean_json(mt_seg_mean v) {
    cJSON *j = cJSON_CreateObject();
    num_or_null(j, "mean", v.mean);
    cJSON_AddNumberToObject(j, "n", (double)v.n);
    return j;
}

static void csv_num(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, ",%.6g", v);
    else
        fprintf(f, ",");
}

/* metrics.json and cases.csv into e->tmp (rank 0). cases: n x C, in split order. */
static mt_status write_results(seg_eval *e, const mt_seg_class_metrics *cases, const int64_t *order,
                               int64_t n) {
    int C = e->C;
    mt_seg_class_summary *per = mt_calloc((size_t)C, sizeof *per, "class summaries");
    if (!per) return MT_ERR_NOMEM;
    mt_seg_summary sum;
    mt_status st = mt_seg_summarize(cases, n, C, 1, per, &sum);
    char p[PATH_MAX + 64];
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", e->m->dir);
    cJSON_AddStringToObject(j, "task", "segment");
    cJSON_AddStringToObject(j, "pack", mt_pack_path(e->pack));
    cJSON_AddStringToObject(j, "split", mt_split_name(e->a->split));
    cJSON_AddNumberToObject(j, "images", (double)n);
    cJSON_AddNumberToObject(j, "size", e->m->size);
    cJSON_AddStringToObject(j, "empty_truth", e->a->empty == MT_SEG_EMPTY_ONE ? "one" : "ignore");
    cJSON_AddStringToObject(j, "prediction", e->m->sigmoid ? "sigmoid > 0.5 per class" : "argmax");
    cJSON_AddStringToObject(j, "mask_layout", e->ml ? "multilabel" : "index");
    num_or_null(j, "mean_dice", sum.dice.mean);
    num_or_null(j, "mean_iou", sum.iou.mean);
    num_or_null(j, "mean_hd95_px", sum.hd95_px.mean);
    num_or_null(j, "mean_hd95_mm", sum.hd95_mm.mean);
    cJSON *cl = cJSON_AddObjectToObject(j, "classes");
    for (int c = 1; c < C; c++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "dice", mean_json(per[c].dice));
        cJSON_AddItemToObject(o, "iou", mean_json(per[c].iou));
        cJSON_AddItemToObject(o, "hd95_px", mean_json(per[c].hd95_px));
        cJSON_AddItemToObject(o, "hd95_mm", mean_json(per[c].hd95_mm));
        cJSON_AddItemToObject(cl, class_name(e, c), o);
    }
    snprintf(p, sizeof p, "%s/metrics.json", e->tmp);
    if (st == MT_OK) st = mt_json_write_file(p, j, 0);
    cJSON_Delete(j);
    /* cases.csv */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = st == MT_OK ? open_memstream(&buf, &len) : NULL;
    if (st == MT_OK && !f) st = mt_fail(MT_ERR_NOMEM, "cases.csv: no memory stream");
    if (f) {
        fprintf(f, "index,case_id");
        for (int c = 1; c < C; c++) {
            const char *nm = class_name(e, c);
            fprintf(f, ",dice_%s,iou_%s,hd95_px_%s,hd95_mm_%s", nm, nm, nm, nm);
        }
        fprintf(f, "\n");
        for (int64_t i = 0; i < n; i++) {
            fprintf(f, "%lld,%s", (long long)e->split[order[i]], e->meta[order[i]].case_id);
            for (int c = 1; c < C; c++) {
                const mt_seg_class_metrics *r = &cases[i * C + c];
                csv_num(f, r->dice), csv_num(f, r->iou), csv_num(f, r->hd95_px);
                csv_num(f, r->hd95_mm);
            }
            fprintf(f, "\n");
        }
        fclose(f);
        snprintf(p, sizeof p, "%s/cases.csv", e->tmp);
        st = mt_file_write_atomic(p, buf, len);
        free(buf);
    }
    if (st == MT_OK) {
        printf("%-16s %8s %8s %10s %10s %6s\n", "class", "Dice", "IoU", "HD95 px", "HD95 mm",
               "cases");
        for (int c = 1; c < C; c++)
            printf("%-16.16s %8.4f %8.4f %10.3f %10.3f %6lld\n", class_name(e, c), per[c].dice.mean,
                   per[c].iou.mean, per[c].hd95_px.mean, per[c].hd95_mm.mean,
                   (long long)per[c].dice.n);
        printf("mean Dice = %.4f  (IoU %.4f, HD95 %.2f px; %lld images, split %s)\n", sum.dice.mean,
               sum.iou.mean, sum.hd95_px.mean, (long long)n, mt_split_name(e->a->split));
    }
    mt_free(per);
    return st;
}

/* Rank 0: OUT replaced by OUT.tmp. */
static mt_status publish(const seg_eval *e) {
    const char *out = e->a->out;
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    if (mt_path_exists(out) && system(cmd) != 0)
        return mt_fail(MT_ERR_IO, "%s: cannot replace the old results", out);
    if (rename(e->tmp, out) != 0) return mt_fail(MT_ERR_IO, "%s -> %s: rename failed", e->tmp, out);
    printf("results in %s (overlays/ of the first %d case(s))\n", out, e->a->overlays);
    return MT_OK;
}

/* Gathers every rank's rows on rank 0 and orders the real ones by split position. */
static mt_status gather(seg_eval *e, mt_comm *comm, const mt_seg_class_metrics *tab,
                        const int64_t *pos, size_t rows, mt_seg_class_metrics **cases,
                        int64_t **order, int64_t *n) {
    int world = mt_comm_world(comm), C = e->C;
    mt_seg_class_metrics *all = mt_alloc(rows * world * C * sizeof *all, "gathered metrics");
    int64_t *all_pos = mt_alloc(rows * world * sizeof *all_pos, "gathered positions");
    mt_status st = mt_comm_agree(comm, all && all_pos ? MT_OK : MT_ERR_NOMEM);
    if (st == MT_OK) st = mt_comm_allgather(comm, tab, all, rows * C * sizeof *tab);
    if (st == MT_OK) st = mt_comm_allgather(comm, pos, all_pos, rows * sizeof *pos);
    /* Real rows by split position: at most one per position. */
    int64_t *row_of = st == MT_OK ? mt_alloc((size_t)e->n_split * sizeof *row_of, "rows") : NULL;
    if (st == MT_OK && !row_of) st = MT_ERR_NOMEM;
    for (int64_t i = 0; st == MT_OK && i < e->n_split; i++) row_of[i] = -1;
    for (size_t r = 0; st == MT_OK && r < rows * world; r++)
        if (all_pos[r] >= 0) row_of[all_pos[r]] = (int64_t)r;
    mt_seg_class_metrics *sorted =
        st == MT_OK
            ? mt_alloc((size_t)(e->n_split ? e->n_split : 1) * C * sizeof *sorted, "case metrics")
            : NULL;
    int64_t *order_out =
        sorted ? mt_alloc((size_t)(e->n_split ? e->n_split : 1) * sizeof *order_out, "case order")
               : NULL;
    if (st == MT_OK && !order_out) st = MT_ERR_NOMEM;
    int64_t k = 0;
    for (int64_t i = 0; st == MT_OK && i < e->n_split; i++) {
        if (row_of[i] < 0) continue;
        memcpy(sorted + k * C, all + row_of[i] * C, C * sizeof *all);
        order_out[k++] = i;
    }
    mt_free(row_of), mt_free(all), mt_free(all_pos);
    if (st != MT_OK) {
        mt_free(sorted), mt_free(order_out);
        return st;
    }
    *cases = sorted, *order = order_out, *n = k;
    return MT_OK;
}

mt_status mt_eval_segment(mt_comm *comm, eval_args *a, eval_model *m, mt_pack *pack) {
    seg_eval e = {.a = a, .m = m, .pack = pack, .in = mt_pack_get_info(pack)};
    e.ml = e.in->mask_multilabel;
    e.planes = mt_pack_mask_planes(e.in);
    e.C = e.in->n_mask_classes + (e.ml ? 1 : 0);
    snprintf(e.tmp, sizeof e.tmp, "%s.tmp", a->out);
    MT_TRY(mt_comm_agree(comm, check_classes(&e)));
    if (m->size == 0) m->size = e.in->h;
    int K = m->sigmoid ? e.C - 1 : e.C; /* multi-label: one output per structure */
    if (m->n_outputs < 0) m->n_outputs = K;
    mt_status st = m->n_outputs == K ? MT_OK
                                     : mt_fail(MT_ERR_SHAPE,
                                               "the model has %d outputs; a %s head over %d "
                                               "%sclasses needs %d",
                                               m->n_outputs, m->sigmoid ? "sigmoid" : "softmax",
                                               e.in->n_mask_classes, e.ml ? "multi-label " : "", K);
    if (st == MT_OK) st = read_meta(&e);
    if (st == MT_OK && mt_comm_rank(comm) == 0) {
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", e.tmp);
        if (mt_path_exists(e.tmp) && system(cmd) != 0)
            st = mt_fail(MT_ERR_IO, "%s: cannot remove", e.tmp);
        char ov[PATH_MAX + 32];
        snprintf(ov, sizeof ov, "%s/overlays", e.tmp);
        if (st == MT_OK) st = mt_mkdir_p(ov);
    }
    st = mt_comm_agree(comm, st);
    mt_ctx ctx;
    bool ctx_ok = false;
    mt_model *model = NULL;
    if (st == MT_OK) st = mt_ctx_init(&ctx, MT_CPU, 0, a->threads);
    ctx_ok = st == MT_OK;
    mt_model_opts mo = m->unet;
    mo.arch = m->arch, mo.in_channels = m->in_channels, mo.n_outputs = K;
    if (st == MT_OK) st = mt_model_create(&ctx, &mo, &model);
    char wpath[PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/model.safetensors", m->dir);
    mt_load_opts lo = {.strict = true};
    if (st == MT_OK) st = mt_model_load(model, wpath, &lo, NULL);
    st = mt_comm_agree(comm, st);
    mt_seg_class_metrics *tab = NULL, *cases = NULL;
    int64_t *pos = NULL, *order = NULL, n = 0;
    size_t rows = 0;
    if (st == MT_OK) st = predict_cases(&e, comm, &ctx, model, &tab, &pos, &rows);
    st = mt_comm_agree(comm, st);
    if (st == MT_OK) st = gather(&e, comm, tab, pos, rows, &cases, &order, &n);
    if (st == MT_OK && mt_comm_rank(comm) == 0) {
        st = write_results(&e, cases, order, n);
        if (st == MT_OK) st = publish(&e);
    }
    st = mt_comm_agree(comm, st);
    mt_free(tab), mt_free(pos), mt_free(cases), mt_free(order), mt_free(e.meta);
    mt_model_free(model);
    if (ctx_ok) mt_ctx_free(&ctx);
    return st;
}
