/* The model tables, initialisation, safetensors load/save with the PyTorch-style report,
 * activation memory, the backward contract (ready calls, accumulation), dropout and SyncBN.
 * Usage: test_models DATA_DIR TMP_DIR (DATA_DIR: tests/models/data, whose names_*.txt list
 * the state_dict keys and shapes of torchvision's models and of the reference U-Net; see
 * tests/oracles/torchvision_oracle.py and unet_oracle.py).
 * Numerical parity with torchvision is test_model_parity's. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "medtrain/model.h"
#include "medtrain/ops.h"
#include "medtrain/safetensors.h"
#include "model_fill.h"
#include "mt_test.h"

static const char *data_dir = "tests/models/data", *tmp_dir = "/tmp";
static mt_ctx ctx;

typedef struct batch {
    int n, h, w, c, l;
    float *x, *logits, *dlogits;
} batch;
static batch make_batch(int n, int h, int w, int c, int l);
static void free_batch(batch *b);
static mt_status forward(mt_model *m, batch *b, bool train, uint64_t step);

static mt_model *make(const char *arch, int in_ch, int outputs, float drop) {
    mt_model_opts o = {.arch = arch,
                       .in_channels = in_ch,
                       .n_outputs = outputs,
                       .drop_rate = drop,
                       .bn_momentum = 0.1f,
                       .bn_eps = 1e-5f};
    mt_model *m = NULL;
    MT_CHECK_OK(mt_model_create(&ctx, &o, &m));
    return m;
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_dir, name);
    return buf[k];
}

static float *get_param(mt_model *m, const char *name) {
    int i = mt_model_find(m, name);
    MT_CHECK(i >= 0, "no parameter %s", name);
    if (i < 0) return calloc(1, sizeof(float));
    float *v = malloc((size_t)mt_model_params(m)->p[i].numel * sizeof *v);
    MT_CHECK_OK(mt_model_param_get(m, i, v));
    return v;
}

/* Every table entry of a and b holds the same values. */
static bool same_values(mt_model *a, mt_model *b) {
    mt_params *pa = mt_model_params(a);
    bool same = true;
    for (int i = 0; i < pa->n && same; i++) {
        const mt_param *p = &pa->p[i];
        float *x = get_param(a, p->name), *y = get_param(b, p->name);
        same = !memcmp(x, y, (size_t)p->numel * sizeof *x);
        if (!same) printf("  %s differs\n", p->name);
        free(x), free(y);
    }
    return same;
}

/* ---- the table ------------------------------------------------------------------------------ */

/* The table of a model made with o against names_<stem>.txt: names, shapes and order as PyTorch's
 * state_dict, flags and offsets as the names imply. */
static void check_names_of(const mt_model_opts *o, const char *stem) {
    const char *ref = strncmp(stem, "unet", 4) ? "torchvision" : "the reference";
    mt_model *m = NULL;
    mt_status s = mt_model_create(&ctx, o, &m);
    MT_CHECK(s == MT_OK, "%s: cannot create the model (%s): %s", stem, mt_status_name(s),
             mt_error_message());
    if (s != MT_OK) return;
    char path[512], line[256];
    snprintf(path, sizeof path, "%s/names_%s.txt", data_dir, stem);
    FILE *f = fopen(path, "r");
    MT_CHECK(f != NULL, "cannot open %s", path);
    if (!f) return mt_model_free(m);
    mt_params *ps = mt_model_params(m);
    int i = 0;
    size_t n_train = 0, n_buf = 0;
    while (fgets(line, sizeof line, f)) {
        char name[160], shape[64];
        if (sscanf(line, "%159s %63s", name, shape) != 2) continue;
        MT_CHECK(i < ps->n, "%s: the table ends before %s", stem, name);
        if (i >= ps->n) break;
        const mt_param *p = &ps->p[i++];
        MT_CHECK(!strcmp(p->name, name), "%s: entry %d is %s, %s has %s", stem, i - 1, p->name, ref,
                 name);
        char mine[64] = "-";
        for (int d = 0, at = 0; d < p->ndim; d++)
            at += snprintf(mine + at, sizeof mine - (size_t)at, d ? ",%lld" : "%lld",
                           (long long)p->shape[d]);
        MT_CHECK(!strcmp(mine, shape), "%s: %s has shape %s, %s %s", stem, name, mine, ref, shape);
        bool weight_or_bias = strstr(name, ".weight") || strstr(name, ".bias");
        MT_CHECK(p->trainable == weight_or_bias, "%s: trainable", name);
        MT_CHECK(p->decay == (weight_or_bias && p->ndim > 1), "%s: decay", name);
        MT_CHECK(p->conv_krsc == (p->ndim == 4), "%s: layout", name);
        MT_CHECK((p->file_dtype == MT_I64) == (strstr(name, "num_batches_tracked") != NULL),
                 "%s: file dtype", name);
        size_t *next = p->trainable ? &n_train : &n_buf;
        MT_CHECK(p->offset == *next, "%s: offset %zu, expected %zu", name, p->offset, *next);
        *next += (size_t)p->numel;
    }
    fclose(f);
    MT_CHECK(i == ps->n, "%s: %d entries in %s, %d in the table", stem, i, ref, ps->n);
    MT_CHECK(n_train == ps->n_train && n_buf == ps->n_buf, "%s: buffer sizes", stem);
    printf("  %s: %d entries, %zu parameters, %zu buffer values\n", stem, ps->n, ps->n_train,
           ps->n_buf);
    mt_model_free(m);
}

static void check_names(const char *arch) {
    mt_model_opts o = {.arch = arch, .in_channels = 1, .n_outputs = 14};
    check_names_of(&o, arch);
}

static void test_names_match_torchvision(void) {
    check_names("resnet18");
    check_names("resnet34");
    check_names("resnet50");
    check_names("densenet121");
}

/* The U-Net's table is unet_oracle.py's UNet's state_dict: the defaults (depth 4, 32 channels,
 * batch norm, transposed convolutions), and depth 3, 16 channels, instance norm, bilinear. */
static void test_names_match_unet(void) {
    mt_model_opts o = {.arch = "unet", .in_channels = 1, .n_outputs = 3};
    check_names_of(&o, "unet");
    o.depth = 3, o.channels = 16, o.norm = MT_NORM_INSTANCE, o.bilinear = true;
    check_names_of(&o, "unet_instance_bilinear");
}

static void test_bad_options(void) {
    mt_model *m = NULL;
    mt_model_opts o = {.arch = "resnet19", .in_channels = 1, .n_outputs = 3};
    MT_CHECK_FAILS(mt_model_create(&ctx, &o, &m), MT_ERR_ARG, "resnet19", "resnet18, resnet34",
                   "densenet121");
    o.arch = "resnet18", o.n_outputs = 0;
    MT_CHECK_FAILS(mt_model_create(&ctx, &o, &m), MT_ERR_ARG, "n_outputs");
    o.n_outputs = 2, o.drop_rate = 1.0f;
    MT_CHECK_FAILS(mt_model_create(&ctx, &o, &m), MT_ERR_ARG, "drop_rate");
    o.drop_rate = 0;
    MT_CHECK_OK(mt_model_create(&ctx, &o, &m)); /* momentum and eps 0: PyTorch's defaults */
    MT_CHECK(mt_model_options(m)->bn_momentum == 0.1f && mt_model_options(m)->bn_eps == 1e-5f);
    MT_CHECK(mt_model_find(m, "fc.bias") == mt_model_params(m)->n - 1);
    MT_CHECK(mt_model_find(m, "fc.nope") == -1);
    mt_model_free(m);
}

/* Every allocation of create and the first forward, then of load, may fail: the error is an
 * out-of-memory naming what was allocated, nothing crashes or leaks (ASan builds check). */
static void test_out_of_memory(void) {
    mt_model *src = make("resnet18", 1, 2, 0);
    if (!src) return;
    MT_CHECK_OK(fill_model(src));
    const char *path = tmp_path("oom.safetensors");
    MT_CHECK_OK(mt_model_save(src, path, 0, NULL, NULL));
    batch b = make_batch(2, 32, 32, 1, 2);
    int failures = 0;
    mt_model_opts o = {.arch = "resnet18", .in_channels = 1, .n_outputs = 2};
    mt_model *m = NULL;
    for (long k = 1; k < 1000; k++) { /* create and the first forward */
        mt_alloc_fail_after(k);
        mt_status s = mt_model_create(&ctx, &o, &m);
        if (s == MT_OK) s = forward(m, &b, true, 0);
        mt_alloc_fail_after(0);
        if (s == MT_OK) break; /* k is past the last allocation; m is kept for the loads */
        failures++;
        MT_CHECK(s == MT_ERR_NOMEM, "allocation %ld: %s: %s", k, mt_status_name(s),
                 mt_error_message());
        mt_model_free(m), m = NULL;
    }
    for (long k = 1; m && k < 1000; k++) { /* load */
        mt_alloc_fail_after(k);
        mt_status s = mt_model_load(m, path, NULL, NULL);
        mt_alloc_fail_after(0);
        if (s == MT_OK) break;
        failures++;
        MT_CHECK(s == MT_ERR_NOMEM, "load allocation %ld: %s: %s", k, mt_status_name(s),
                 mt_error_message());
    }
    MT_CHECK(m && same_values(m, src), "the last load did not complete");
    mt_model_free(m);
    MT_CHECK(failures > 10, "only %d allocations seen", failures);
    free_batch(&b);
    mt_model_free(src);
}

/* ---- initialisation ----------------------------------------------------------------------- */

static void moments(const float *v, int64_t n, double *mean, double *std, double *maxabs) {
    double s = 0, q = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) s += v[i], q += (double)v[i] * v[i], mx = fmax(mx, fabs(v[i]));
    *mean = s / n, *std = sqrt(q / n - *mean * *mean), *maxabs = mx;
}

static void check_std(mt_model *m, const char *name, double want) {
    float *v = get_param(m, name);
    const mt_param *p = &mt_model_params(m)->p[mt_model_find(m, name)];
    double mean, std, mx;
    moments(v, p->numel, &mean, &std, &mx);
    MT_CHECK(fabs(std / want - 1) < 0.03 && fabs(mean) < 0.05 * want,
             "%s: mean %g std %g, want 0, %g", name, mean, std, want);
    free(v);
}

static void check_const(mt_model *m, const char *name, float want) {
    float *v = get_param(m, name);
    const mt_param *p = &mt_model_params(m)->p[mt_model_find(m, name)];
    bool ok = true;
    for (int64_t i = 0; i < p->numel; i++) ok &= v[i] == want;
    MT_CHECK(ok, "%s: expected all %g", name, want);
    free(v);
}

static void check_uniform(mt_model *m, const char *name, double bound) {
    float *v = get_param(m, name);
    const mt_param *p = &mt_model_params(m)->p[mt_model_find(m, name)];
    double mean, std, mx;
    moments(v, p->numel, &mean, &std, &mx);
    MT_CHECK(mx <= bound, "%s: max |v| %g, bound %g", name, mx, bound);
    if (p->numel > 1000)
        MT_CHECK(fabs(std * sqrt(3) / bound - 1) < 0.05, "%s: std %g for bound %g", name, std,
                 bound);
    free(v);
}

static void test_init_resnet(void) {
    mt_model *m = make("resnet18", 3, 6, 0), *m2 = make("resnet18", 3, 6, 0);
    if (!m || !m2) return;
    MT_CHECK_OK(mt_model_init(m, 7));
    check_std(m, "conv1.weight", sqrt(2.0 / (64 * 49))); /* fan_out */
    check_std(m, "layer4.1.conv2.weight", sqrt(2.0 / (512 * 9)));
    check_std(m, "layer2.0.downsample.0.weight", sqrt(2.0 / 128));
    check_const(m, "bn1.weight", 1), check_const(m, "layer3.1.bn2.bias", 0);
    check_const(m, "bn1.running_mean", 0), check_const(m, "bn1.running_var", 1);
    check_const(m, "layer1.0.bn1.num_batches_tracked", 0);
    check_uniform(m, "fc.weight", 1 / sqrt(512.0));
    check_uniform(m, "fc.bias", 1 / sqrt(512.0));
    /* the same seed gives the same model; another seed another */
    MT_CHECK_OK(mt_model_init(m2, 7));
    MT_CHECK(same_values(m, m2));
    MT_CHECK_OK(mt_model_init(m2, 8));
    float *a = get_param(m, "conv1.weight"), *b = get_param(m2, "conv1.weight");
    MT_CHECK(memcmp(a, b, 64 * 3 * 49 * sizeof(float)) != 0);
    free(a), free(b);
    /* re-initialising a subset gives what a full initialisation gives */
    const char *head[] = {"fc.weight", "fc.bias"};
    MT_CHECK_OK(mt_model_init_params(m2, 7, 2, head));
    a = get_param(m, "fc.bias"), b = get_param(m2, "fc.bias");
    MT_CHECK(!memcmp(a, b, 6 * sizeof(float)));
    free(a), free(b);
    const char *bad[] = {"fc.weight", "head.weight"};
    MT_CHECK_FAILS(mt_model_init_params(m2, 7, 2, bad), MT_ERR_ARG, "head.weight");
    mt_model_free(m), mt_model_free(m2);
}

static void test_init_densenet(void) {
    mt_model *m = make("densenet121", 1, 5, 0);
    if (!m) return;
    MT_CHECK_OK(mt_model_init(m, 1));
    check_std(m, "features.conv0.weight", sqrt(2.0 / 49)); /* fan_in */
    check_std(m, "features.denseblock3.denselayer20.conv1.weight", sqrt(2.0 / 864));
    check_std(m, "features.transition2.conv.weight", sqrt(2.0 / 512));
    check_uniform(m, "classifier.weight", 1 / sqrt(1024.0));
    check_const(m, "classifier.bias", 0);
    check_const(m, "features.norm5.weight", 1);
    mt_model_free(m);
}

/* ---- save and load ------------------------------------------------------------------------ */

static void test_save_load_roundtrip(void) {
    mt_model *a = make("resnet18", 3, 6, 0), *b = make("resnet18", 3, 6, 0);
    if (!a || !b) return;
    MT_CHECK_OK(fill_model(a)); /* every value distinct, counters 3 */
    MT_CHECK_OK(mt_model_init(b, 1));
    const char *keys[] = {"format", "step"}, *values[] = {"medtrain", "12"};
    const char *path = tmp_path("roundtrip.safetensors");
    MT_CHECK_OK(mt_model_save(a, path, 2, keys, values));
    mt_load_report rep;
    MT_CHECK_OK(mt_model_load(b, path, &(mt_load_opts){.strict = true}, &rep));
    MT_CHECK(rep.n_missing == 0 && rep.n_unexpected == 0 && rep.n_mismatched == 0);
    MT_CHECK(!strcmp(rep.missing, "") && !strcmp(rep.mismatched, ""));
    mt_load_report_free(&rep);
    MT_CHECK(same_values(a, b));
    /* the file is torchvision's: (K,C,R,S) convs, I64 counters, our metadata */
    mt_st_file *f;
    MT_CHECK_OK(mt_st_open(path, &f));
    if (!f) return;
    MT_CHECK(!strcmp(mt_st_metadata(f, "step"), "12"));
    MT_CHECK(mt_st_count(f) == (size_t)mt_model_params(a)->n);
    const mt_st_tensor *w = mt_st_find(f, "layer1.0.conv1.weight");
    MT_CHECK(w && w->ndim == 4 && w->shape[0] == 64 && w->shape[1] == 64 && w->shape[2] == 3 &&
             !strcmp(w->dtype_name, "F32"));
    float *file = malloc(64 * 64 * 9 * sizeof(float)),
          *mine = get_param(a, "layer1.0.conv1.weight");
    MT_CHECK_OK(mt_st_read_f32(f, w, file));
    MT_CHECK(!memcmp(file, mine, 64 * 64 * 9 * sizeof(float)));
    /* and in file order: element (k=1, c=2, r=0, s=1) is u(p, 1*576 + 2*9 + 1) */
    int p = mt_model_find(a, "layer1.0.conv1.weight");
    double u = fill_u01((uint64_t)p, 1 * 576 + 2 * 9 + 1);
    MT_CHECK(file[1 * 576 + 2 * 9 + 1] == (float)((2 * u - 1) * sqrt(6.0 / 576)));
    const mt_st_tensor *nb = mt_st_find(f, "bn1.num_batches_tracked");
    MT_CHECK(nb && nb->ndim == 0 && !strcmp(nb->dtype_name, "I64"));
    int64_t count = 0;
    if (nb) memcpy(&count, nb->data, 8);
    MT_CHECK(count == 3);
    free(file), free(mine);
    mt_st_close(f);
    mt_model_free(a), mt_model_free(b);
}

/* Writes m's tensors to path as dtype (BF16/F16 for floats), leaving out the names listed in
 * skip and adding extra (a name) when not NULL. */
static void write_variant(mt_model *m, const char *path, mt_dtype dtype, const char *const *skip,
                          int n_skip, const char *extra) {
    mt_st_writer *w;
    MT_CHECK_OK(mt_st_writer_new(&w));
    mt_params *ps = mt_model_params(m);
    void **bufs = calloc((size_t)ps->n + 1, sizeof *bufs);
    for (int i = 0; i < ps->n; i++) {
        const mt_param *p = &ps->p[i];
        bool skipped = false;
        for (int k = 0; k < n_skip; k++) skipped |= !strcmp(skip[k], p->name);
        if (skipped) continue;
        float *v = get_param(m, p->name);
        if (p->file_dtype == MT_I64) {
            int64_t *c = malloc(8);
            *c = (int64_t)v[0];
            bufs[i] = c;
            MT_CHECK_OK(mt_st_writer_add(w, p->name, MT_I64, 0, p->shape, c));
            free(v);
            continue;
        }
        if (dtype != MT_F32) {
            uint16_t *h = malloc((size_t)p->numel * 2);
            for (int64_t j = 0; j < p->numel; j++)
                h[j] = dtype == MT_BF16 ? mt_f32_to_bf16(v[j]) : mt_f32_to_f16(v[j]);
            free(v);
            bufs[i] = h;
        } else {
            bufs[i] = v;
        }
        MT_CHECK_OK(mt_st_writer_add(w, p->name, dtype, p->ndim, p->shape, bufs[i]));
    }
    float extra_value[4] = {1, 2, 3, 4};
    if (extra) MT_CHECK_OK(mt_st_writer_add(w, extra, MT_F32, 1, (int64_t[]){4}, extra_value));
    MT_CHECK_OK(mt_st_writer_save(w, path));
    mt_st_writer_free(w);
    for (int i = 0; i < ps->n; i++) free(bufs[i]);
    free(bufs);
}

static void test_load_report(void) {
    mt_model *src = make("resnet18", 1, 6, 0), *m = make("resnet18", 1, 6, 0);
    if (!src || !m) return;
    MT_CHECK_OK(fill_model(src));
    MT_CHECK_OK(mt_model_init(m, 5));
    const char *skip[] = {"layer1.0.conv1.weight", "bn1.num_batches_tracked"};
    const char *path = tmp_path("partial.safetensors");
    write_variant(src, path, MT_F32, skip, 2, "extra.weight");
    float *before = get_param(m, "bn1.weight");
    mt_load_report rep;
    /* strict: an error naming the missing and unexpected keys, and nothing changes */
    MT_CHECK_FAILS(mt_model_load(m, path, &(mt_load_opts){.strict = true}, &rep), MT_ERR_SHAPE,
                   "1 missing (layer1.0.conv1.weight)", "1 unexpected (extra.weight)");
    MT_CHECK(rep.n_missing == 1 && rep.n_unexpected == 1 && rep.n_mismatched == 0);
    mt_load_report_free(&rep);
    float *after = get_param(m, "bn1.weight");
    MT_CHECK(!memcmp(before, after, 64 * sizeof(float)), "a failed load changed the model");
    free(after);
    /* not strict: loads the rest and reports; a missing counter is 0, not "missing" */
    MT_CHECK_OK(mt_model_load(m, path, &(mt_load_opts){.strict = false}, &rep));
    MT_CHECK(rep.n_missing == 1 && !strcmp(rep.missing, "layer1.0.conv1.weight"));
    MT_CHECK(rep.n_unexpected == 1 && !strcmp(rep.unexpected, "extra.weight"));
    mt_load_report_free(&rep);
    float *kept = get_param(m, "layer1.0.conv1.weight"),
          *file = get_param(src, "layer1.0.conv1.weight");
    MT_CHECK(memcmp(kept, file, 64 * 64 * 9 * sizeof(float)) != 0, "a missing tensor was loaded");
    free(kept), free(file);
    check_const(m, "bn1.num_batches_tracked", 0);
    check_const(m, "layer1.0.bn1.num_batches_tracked", 3);
    after = get_param(m, "bn1.weight");
    float *want = get_param(src, "bn1.weight");
    MT_CHECK(!memcmp(want, after, 64 * sizeof(float)));
    free(before), free(after), free(want);
    MT_CHECK_FAILS(mt_model_load(m, tmp_path("no-such.safetensors"), NULL, NULL), MT_ERR_IO,
                   "no-such.safetensors");
    mt_model_free(src), mt_model_free(m);
}

static void test_load_new_head(void) {
    mt_model *src = make("resnet18", 1, 14, 0), *m = make("resnet18", 1, 6, 0);
    mt_model *fresh = make("resnet18", 1, 6, 0);
    if (!src || !m || !fresh) return;
    MT_CHECK_OK(fill_model(src));
    const char *path = tmp_path("head14.safetensors");
    MT_CHECK_OK(mt_model_save(src, path, 0, NULL, NULL));
    MT_CHECK_OK(mt_model_init(m, 1));
    mt_load_report rep;
    /* a mis-shaped tensor is an error even when not strict, unless reinit_head covers it */
    MT_CHECK_FAILS(mt_model_load(m, path, &(mt_load_opts){.strict = false}, &rep), MT_ERR_SHAPE,
                   "fc.weight: file [14,512], model [6,512]", "fc.bias: file [14], model [6]",
                   "reinit_head");
    MT_CHECK(rep.n_mismatched == 2);
    mt_load_report_free(&rep);
    mt_load_opts o = {.strict = true, .reinit_head = true, .head_seed = 99};
    MT_CHECK_OK(mt_model_load(m, path, &o, &rep));
    MT_CHECK(rep.n_mismatched == 2 && rep.n_missing == 0 && rep.n_unexpected == 0);
    MT_CHECK(!strcmp(rep.mismatched, "fc.weight: file [14,512], model [6,512]\n"
                                     "fc.bias: file [14], model [6]"),
             "%s", rep.mismatched);
    mt_load_report_free(&rep);
    /* the head is what init with head_seed gives; the rest is the file's */
    MT_CHECK_OK(mt_model_init(fresh, 99));
    float *a = get_param(m, "fc.weight"), *b = get_param(fresh, "fc.weight");
    MT_CHECK(!memcmp(a, b, 6 * 512 * sizeof(float)));
    free(a), free(b);
    a = get_param(m, "layer4.1.bn2.running_var"), b = get_param(src, "layer4.1.bn2.running_var");
    MT_CHECK(!memcmp(a, b, 512 * sizeof(float)));
    free(a), free(b);
    /* a mis-shaped non-head tensor stays an error */
    mt_model *three = make("resnet18", 3, 14, 0);
    MT_CHECK_FAILS(mt_model_load(three, path, &o, NULL), MT_ERR_SHAPE,
                   "conv1.weight: file [64,1,7,7], model [64,3,7,7]");
    mt_model_free(three);
    mt_model_free(src), mt_model_free(m), mt_model_free(fresh);
}

static void check_half_load(mt_dtype dtype) {
    mt_model *src = make("resnet18", 1, 6, 0), *m = make("resnet18", 1, 6, 0);
    if (!src || !m) return;
    MT_CHECK_OK(fill_model(src));
    const char *path = tmp_path("half.safetensors");
    write_variant(src, path, dtype, NULL, 0, NULL);
    MT_CHECK_OK(mt_model_load(m, path, NULL, NULL));
    mt_params *ps = mt_model_params(m);
    bool ok = true;
    for (int i = 0; i < ps->n && ok; i++) {
        const mt_param *p = &ps->p[i];
        float *a = get_param(src, p->name), *b = get_param(m, p->name);
        for (int64_t j = 0; j < p->numel && ok; j++) {
            float want = p->file_dtype == MT_I64 ? a[j]
                         : dtype == MT_BF16      ? mt_bf16_to_f32(mt_f32_to_bf16(a[j]))
                                                 : mt_f16_to_f32(mt_f32_to_f16(a[j]));
            ok = b[j] == want;
            if (!ok) printf("  %s[%lld]: %g, expected %g\n", p->name, (long long)j, b[j], want);
        }
        free(a), free(b);
    }
    MT_CHECK(ok, "%s load", mt_dtype_name(dtype));
    mt_model_free(src), mt_model_free(m);
}

static void test_load_bf16_f16(void) {
    check_half_load(MT_BF16);
    check_half_load(MT_F16);
}

/* ---- forward, backward, memory ------------------------------------------------------------ */

static batch make_batch(int n, int h, int w, int c, int l) {
    batch b = {.n = n, .h = h, .w = w, .c = c, .l = l};
    b.x = malloc((size_t)n * h * w * c * sizeof(float));
    b.logits = calloc((size_t)n * l, sizeof(float));
    b.dlogits = malloc((size_t)n * l * sizeof(float));
    fill_input(b.x, n, c, h, w);
    for (int i = 0; i < n * l; i++) b.dlogits[i] = (float)(fill_u01(77, (uint64_t)i) - 0.5);
    return b;
}

static void free_batch(batch *b) {
    free(b->x), free(b->logits), free(b->dlogits);
}

static mt_status forward(mt_model *m, batch *b, bool train, uint64_t step) {
    mt_tensor x = mt_tensor_4d(b->x, MT_F32, MT_CPU, b->n, b->h, b->w, b->c);
    mt_tensor z = mt_tensor_2d(b->logits, MT_F32, MT_CPU, b->n, b->l);
    return mt_model_forward(m, &ctx, &x, train, 42, step, &z);
}

static mt_status backward(mt_model *m, batch *b, mt_grad_ready_fn ready, void *user) {
    mt_tensor dz = mt_tensor_2d(b->dlogits, MT_F32, MT_CPU, b->n, b->l);
    return mt_model_backward(m, &ctx, &dz, ready, user);
}

static void zero_grads(mt_model *m) {
    mt_params *ps = mt_model_params(m);
    mt_tensor g = mt_tensor_1d(ps->grads, MT_F32, MT_CPU, (int64_t)ps->n_train);
    MT_CHECK_OK(mt_tensor_zero(&ctx, &g));
}

static void test_backward_contract(void) {
    mt_model *m = make("resnet18", 1, 3, 0);
    if (!m) return;
    MT_CHECK_OK(fill_model(m));
    batch b = make_batch(2, 32, 32, 1, 3);
    MT_CHECK_FAILS(backward(m, &b, NULL, NULL), MT_ERR_ARG, "training forward");
    MT_CHECK_OK(forward(m, &b, false, 0));
    MT_CHECK_FAILS(backward(m, &b, NULL, NULL), MT_ERR_ARG, "training forward");
    /* gradients accumulate: two micro-batches of the same data give twice the gradient */
    mt_params *ps = mt_model_params(m);
    zero_grads(m);
    MT_CHECK_OK(forward(m, &b, true, 0));
    MT_CHECK_OK(backward(m, &b, NULL, NULL));
    float *once = malloc(ps->n_train * sizeof(float));
    memcpy(once, ps->grads, ps->n_train * sizeof(float));
    MT_CHECK_FAILS(backward(m, &b, NULL, NULL), MT_ERR_ARG, "training forward");
    MT_CHECK_OK(forward(m, &b, true, 1));
    MT_CHECK_OK(backward(m, &b, NULL, NULL));
    double worst = 0;
    for (size_t i = 0; i < ps->n_train; i++)
        worst = fmax(worst, fabs(ps->grads[i] - 2 * once[i]) / fmax(fabs(2 * once[i]), 1e-3));
    MT_CHECK(worst < 1e-5, "accumulated gradients differ from twice one step by %g", worst);
    free(once);
    /* the wrong shapes are refused with the shapes named */
    mt_tensor dz = mt_tensor_2d(b.dlogits, MT_F32, MT_CPU, 1, 3);
    MT_CHECK_OK(forward(m, &b, true, 2));
    MT_CHECK_FAILS(mt_model_backward(m, &ctx, &dz, NULL, NULL), MT_ERR_SHAPE, "[1,3]", "[2,3]");
    mt_tensor x3 = mt_tensor_4d(b.x, MT_F32, MT_CPU, 1, 32, 32, 3);
    mt_tensor z = mt_tensor_2d(b.logits, MT_F32, MT_CPU, 1, 3);
    MT_CHECK_FAILS(mt_model_forward(m, &ctx, &x3, true, 0, 0, &z), MT_ERR_SHAPE, "(N,H,W,1)");
    free_batch(&b);
    mt_model_free(m);
}

/* Eval is per image: an image's logits do not depend on its batch, whatever the batch shape
 * the activation memory was planned for (a smaller shape after a larger one re-plans and keeps
 * the allocation). */
static void test_eval_batch_independent(void) {
    mt_model *m = make("densenet121", 1, 4, 0);
    if (!m) return;
    MT_CHECK_OK(fill_model(m));
    batch b5 = make_batch(5, 40, 40, 1, 4), b2 = make_batch(2, 40, 40, 1, 4);
    MT_CHECK_OK(forward(m, &b5, false, 0));
    size_t bytes5 = mt_model_activation_bytes(m);
    MT_CHECK_OK(forward(m, &b2, false, 0));
    MT_CHECK(bytes5 > mt_model_activation_bytes(m) && mt_model_activation_bytes(m) > 0);
    double worst = 0;
    for (int i = 0; i < 2 * 4; i++)
        worst = fmax(worst, fabs(b2.logits[i] - b5.logits[i]) / fmax(fabs(b5.logits[i]), 1));
    MT_CHECK(worst < 1e-5, "eval logits depend on the batch: %g", worst);
    MT_CHECK_OK(forward(m, &b2, true, 0)); /* training after eval at this shape */
    MT_CHECK_OK(backward(m, &b2, NULL, NULL));
    free_batch(&b5), free_batch(&b2);
    batch tiny = make_batch(2, 16, 16, 1, 4);
    MT_CHECK_FAILS(forward(m, &tiny, true, 0), MT_ERR_SHAPE, "densenet121 forward", "too small");
    free_batch(&tiny);
    mt_model_free(m);
}

static void test_activation_memory(void) {
    const char *archs[] = {"resnet18", "resnet50", "densenet121"};
    for (int a = 0; a < 3; a++) {
        mt_model *m = make(archs[a], 1, 14, 0);
        if (!m) return;
        size_t b32 = 0, b8 = 0;
        MT_CHECK_OK(mt_model_plan(m, 32, 224, 224, &b32));
        MT_CHECK_OK(mt_model_plan(m, 8, 224, 224, &b8));
        MT_CHECK(b32 > 3 * b8 && b32 < 5 * b8, "%s: %zu vs %zu", archs[a], b32, b8);
        printf("  %s activation memory, batch 32 at 224x224: %.1f MiB\n", archs[a],
               (double)b32 / (1 << 20));
        MT_CHECK(mt_model_activation_bytes(m) == 0);
        MT_CHECK_OK(mt_model_reserve(m, 2, 64, 64));
        size_t held = mt_model_activation_bytes(m);
        batch b = make_batch(2, 64, 64, 1, 14);
        MT_CHECK_OK(forward(m, &b, true, 0));
        MT_CHECK_OK(backward(m, &b, NULL, NULL));
        MT_CHECK(mt_model_activation_bytes(m) == held, "the same shape re-planned");
        free_batch(&b);
        mt_model_free(m);
    }
}

static void test_dropout(void) {
    mt_model *m = make("densenet121", 1, 3, 0.2f), *plain = make("densenet121", 1, 3, 0);
    if (!m || !plain) return;
    MT_CHECK_OK(fill_model(m));
    MT_CHECK_OK(fill_model(plain));
    batch b = make_batch(2, 32, 32, 1, 3);
    float first[6], again[6], other[6], eval_drop[6];
    MT_CHECK_OK(forward(m, &b, true, 5));
    memcpy(first, b.logits, sizeof first);
    MT_CHECK_OK(backward(m, &b, NULL, NULL));
    MT_CHECK_OK(forward(m, &b, true, 5));
    memcpy(again, b.logits, sizeof again);
    MT_CHECK_OK(forward(m, &b, true, 6));
    memcpy(other, b.logits, sizeof other);
    MT_CHECK(!memcmp(first, again, sizeof first), "the same seed and step give other masks");
    MT_CHECK(memcmp(first, other, sizeof first) != 0, "another step gives the same masks");
    MT_CHECK_OK(forward(m, &b, false, 0));
    memcpy(eval_drop, b.logits, sizeof eval_drop);
    /* eval ignores drop_rate (running stats were moved by 3 training steps in m, 0 in plain) */
    mt_params *pm = mt_model_params(m), *pp = mt_model_params(plain);
    memcpy(pp->buffers, pm->buffers, pm->n_buf * sizeof(float));
    MT_CHECK_OK(forward(plain, &b, false, 0));
    MT_CHECK(!memcmp(eval_drop, b.logits, sizeof eval_drop), "eval applies dropout");
    free_batch(&b);
    mt_model_free(m), mt_model_free(plain);
}

/* ---- SyncBN: two ranks (threads) with half a batch each equal one rank with all of it ------ */

typedef struct fake_comm {
    pthread_barrier_t barrier;
    float *slot[2];
} fake_comm;

typedef struct rank {
    fake_comm *comm;
    int id;
    mt_model *m;
    batch b;
    mt_status status;
} rank;

static mt_status fake_allreduce(void *user, float *buf, size_t n) {
    rank *r = user;
    fake_comm *c = r->comm;
    c->slot[r->id] = buf;
    pthread_barrier_wait(&c->barrier);
    float *sum = malloc(n * sizeof *sum);
    for (size_t i = 0; i < n; i++) sum[i] = c->slot[0][i] + c->slot[1][i];
    pthread_barrier_wait(&c->barrier); /* both have read both */
    memcpy(buf, sum, n * sizeof *sum);
    free(sum);
    return MT_OK;
}

static void *rank_main(void *arg) {
    rank *r = arg;
    mt_ctx c;
    r->status = mt_ctx_init(&c, MT_CPU, 0, 1);
    mt_tensor x = mt_tensor_4d(r->b.x, MT_F32, MT_CPU, r->b.n, r->b.h, r->b.w, r->b.c);
    mt_tensor z = mt_tensor_2d(r->b.logits, MT_F32, MT_CPU, r->b.n, r->b.l);
    mt_tensor dz = mt_tensor_2d(r->b.dlogits, MT_F32, MT_CPU, r->b.n, r->b.l);
    if (r->status == MT_OK) r->status = mt_model_forward(r->m, &c, &x, true, 0, 0, &z);
    if (r->status == MT_OK) r->status = mt_model_backward(r->m, &c, &dz, NULL, NULL);
    mt_ctx_free(&c);
    return NULL;
}

static void test_sync_bn(void) {
    batch all = make_batch(4, 64, 64, 1, 3);
    mt_model *one = make("resnet18", 1, 3, 0);
    if (!one) return;
    MT_CHECK_OK(fill_model(one));
    zero_grads(one);
    MT_CHECK_OK(forward(one, &all, true, 0));
    MT_CHECK_OK(backward(one, &all, NULL, NULL));
    fake_comm comm;
    pthread_barrier_init(&comm.barrier, NULL, 2);
    rank ranks[2];
    pthread_t th[2];
    size_t img = 64 * 64, nl = 2 * 3;
    for (int i = 0; i < 2; i++) {
        ranks[i] = (rank){.comm = &comm, .id = i, .m = make("resnet18", 1, 3, 0)};
        MT_CHECK_OK(fill_model(ranks[i].m));
        zero_grads(ranks[i].m);
        mt_model_set_sync_bn(ranks[i].m, fake_allreduce, &ranks[i]);
        ranks[i].b = make_batch(2, 64, 64, 1, 3);
        memcpy(ranks[i].b.x, all.x + i * 2 * img, 2 * img * sizeof(float));
        memcpy(ranks[i].b.dlogits, all.dlogits + i * nl, nl * sizeof(float));
    }
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, rank_main, &ranks[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&comm.barrier);
    for (int i = 0; i < 2; i++)
        MT_CHECK(ranks[i].status == MT_OK, "rank %d: %s", i, mt_error_message());
    double wz = 0, wg = 0, wb = 0;
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < nl; j++)
            wz = fmax(wz, fabs(ranks[i].b.logits[j] - all.logits[i * nl + j]) /
                              fmax(fabs(all.logits[i * nl + j]), 1));
    mt_params *p1 = mt_model_params(one), *pa = mt_model_params(ranks[0].m),
              *pb = mt_model_params(ranks[1].m);
    double gscale = 0;
    for (size_t j = 0; j < p1->n_train; j++) gscale = fmax(gscale, fabs(p1->grads[j]));
    for (size_t j = 0; j < p1->n_train; j++) /* the gradient all-reduce would add the ranks' */
        wg = fmax(wg, fabs(pa->grads[j] + pb->grads[j] - p1->grads[j]) / gscale);
    for (size_t j = 0; j < p1->n_buf; j++)
        wb = fmax(wb, fabs(pa->buffers[j] - p1->buffers[j]) / fmax(fabs(p1->buffers[j]), 1) +
                          fabs(pb->buffers[j] - p1->buffers[j]) / fmax(fabs(p1->buffers[j]), 1));
    printf("  SyncBN, 2 ranks vs 1: logits %.1e, gradients %.1e (of max |g|), buffers %.1e\n", wz,
           wg, wb);
    MT_CHECK(wz < 1e-5 && wg < 1e-5 && wb < 1e-5);
    for (int i = 0; i < 2; i++) mt_model_free(ranks[i].m), free_batch(&ranks[i].b);
    mt_model_free(one);
    free_batch(&all);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    if (argc > 2) tmp_dir = argv[2];
    mkdir(tmp_dir, 0755);
    if (mt_ctx_init(&ctx, MT_CPU, 0, 0) != MT_OK) {
        fprintf(stderr, "%s\n", mt_error_message());
        return 1;
    }
    MT_RUN(test_names_match_torchvision);
    MT_RUN(test_names_match_unet);
    MT_RUN(test_bad_options);
    MT_RUN(test_out_of_memory);
    MT_RUN(test_init_resnet);
    MT_RUN(test_init_densenet);
    MT_RUN(test_save_load_roundtrip);
    MT_RUN(test_load_report);
    MT_RUN(test_load_new_head);
    MT_RUN(test_load_bf16_f16);
    MT_RUN(test_backward_contract);
    MT_RUN(test_eval_batch_independent);
    MT_RUN(test_activation_memory);
    MT_RUN(test_dropout);
    MT_RUN(test_sync_bn);
    mt_ctx_free(&ctx);
    return mt_test_summary();
}
