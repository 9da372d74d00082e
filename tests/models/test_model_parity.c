/* Parity with PyTorch: logits, loss, updated BN running statistics and every parameter gradient
 * of ResNet-18, DenseNet-121 and ResNet-50 against the fixtures that
 * tests/oracles/torchvision_oracle.py computed in float64 (torchvision) from the same
 * formula-filled weights (model_fill.c), and of the U-Net against those of
 * tests/oracles/unet_oracle.py (its reference module; batch and instance norm, transposed and
 * bilinear upsampling). Usage: test_model_parity DATA_DIR.
 *
 * Classifiers are trained against BCE-with-logits targets (mt_bce_logits_*), the U-Net against
 * per-pixel classes with the mean softmax cross-entropy over all pixels (mt_cross_entropy_* on
 * the logits viewed as rows (N*H*W, C)). The fixtures hold the U-Net's logits in PyTorch's
 * (N,C,H,W) order; medtrain's (N,H,W,C) are reordered before comparing.
 *
 * Errors are relative (|c - r| / |r|) for the logits and the loss; running statistics and
 * gradients are compared through sums, norms and sampled elements (cmp_stat, cmp_grad). Every
 * error must be within 1e-4; the worst of each kind is printed, with, for the record, the worst
 * plain relative error of a sampled gradient element, |c - r| / max(|r|, rms of the gradient),
 * over the gradients that are not zero up to rounding (a BN shift that a later BN removes has a
 * gradient of 1e-17 in float64 and 1e-9 in float32). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "medtrain/model.h"
#include "medtrain/ops.h"
#include "model_fill.h"
#include "mt_test.h"

#define TOL 1e-4

static const char *data_dir = "tests/models/data";

typedef struct worst {
    double err;
    char what[200];
} worst;

static void note(worst *w, double err, const char *kind, const char *name) {
    MT_CHECK(err <= TOL, "%s %s: relative error %.3g", kind, name, err);
    if (err > w->err || w->what[0] == 0) {
        w->err = err;
        snprintf(w->what, sizeof w->what, "%s %s", kind, name);
    }
}

/* "tag n v1 .. vn" against v[0..n). */
static void cmp_vector(worst *w, const char *tag, char *rest, const float *v, int64_t n) {
    char *save, *t = strtok_r(rest, " ", &save);
    int64_t nref = t ? atoll(t) : -1;
    MT_CHECK(nref == n, "%s: %lld values in the fixture, %lld computed", tag, (long long)nref,
             (long long)n);
    if (nref != n || n <= 0) return;
    double *ref = malloc((size_t)n * sizeof *ref), rms = 0;
    for (int64_t i = 0; i < n; i++) ref[i] = strtod(strtok_r(NULL, " ", &save), NULL);
    for (int64_t i = 0; i < n; i++) rms += ref[i] * ref[i];
    rms = sqrt(rms / (double)n);
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(v[i] - ref[i]) / fmax(fabs(ref[i]), rms);
        note(w, err, tag, "");
    }
    free(ref);
}

/* "name numel sum sumabs l2 k i v ..." (running statistics) against v[0..numel): relative, the
 * sum against sum|v|, an element against max(|v_i|, rms(v)). */
static void cmp_stat(worst *w, const char *name, char *rest, const float *v, int64_t numel) {
    char *save;
    int64_t n = atoll(strtok_r(rest, " ", &save));
    MT_CHECK(n == numel, "%s: %lld elements in the fixture, %lld in the model", name, (long long)n,
             (long long)numel);
    if (n != numel) return;
    double sum = strtod(strtok_r(NULL, " ", &save), NULL);
    double sumabs = strtod(strtok_r(NULL, " ", &save), NULL);
    double l2 = strtod(strtok_r(NULL, " ", &save), NULL);
    int k = atoi(strtok_r(NULL, " ", &save));
    double s = 0, sa = 0, q = 0, rms = l2 / sqrt((double)n);
    for (int64_t i = 0; i < n; i++) s += v[i], sa += fabs(v[i]), q += (double)v[i] * v[i];
    note(w, fabs(s - sum) / sumabs, "running stat (sum)", name);
    note(w, fabs(sa - sumabs) / sumabs, "running stat (sum|v|)", name);
    note(w, fabs(sqrt(q) - l2) / l2, "running stat (L2)", name);
    for (int j = 0; j < k; j++) {
        int64_t i = atoll(strtok_r(NULL, " ", &save));
        double ref = strtod(strtok_r(NULL, " ", &save), NULL);
        note(w, fabs(v[i] - ref) / fmax(fabs(ref), rms), "running stat", name);
    }
}

/* "name numel sum sumabs l2 ssum sl2 k i v ..." (a gradient) against g[0..numel). The sum,
 * sum|g| and L2 norm are compared relative to the sum and L2 norm of the contribution scales
 * (ssum, sl2: what was added up, see the oracle), an element relative to max(|g_i|, rms of the
 * scales). plain collects |c - r| / max(|r|, rms(r)) for the record. */
static void cmp_grad(worst *w, worst *plain, const char *name, char *rest, const float *g,
                     int64_t numel) {
    char *save;
    int64_t n = atoll(strtok_r(rest, " ", &save));
    MT_CHECK(n == numel, "%s: %lld elements in the fixture, %lld in the model", name, (long long)n,
             (long long)numel);
    if (n != numel) return;
    double ref[5];
    for (int i = 0; i < 5; i++) ref[i] = strtod(strtok_r(NULL, " ", &save), NULL);
    double sum = ref[0], sumabs = ref[1], l2 = ref[2], ssum = ref[3], sl2 = ref[4];
    int k = atoi(strtok_r(NULL, " ", &save));
    double s = 0, sa = 0, q = 0, tiny = 1e-300;
    for (int64_t i = 0; i < n; i++) s += g[i], sa += fabs(g[i]), q += (double)g[i] * g[i];
    note(w, fabs(s - sum) / fmax(ssum, tiny), "grad (sum)", name);
    note(w, fabs(sa - sumabs) / fmax(ssum, tiny), "grad (sum|g|)", name);
    note(w, fabs(sqrt(q) - l2) / fmax(sl2, tiny), "grad (L2)", name);
    double floor = fmax(sl2 / sqrt((double)n), tiny), rms = fmax(l2 / sqrt((double)n), tiny);
    for (int j = 0; j < k; j++) {
        int64_t i = atoll(strtok_r(NULL, " ", &save));
        double r = strtod(strtok_r(NULL, " ", &save), NULL), d = fabs(g[i] - r);
        char what[160];
        snprintf(what, sizeof what, "%s[%lld]", name, (long long)i);
        note(w, d / fmax(fabs(r), floor), "grad", what);
        double e = d / fmax(fabs(r), rms);
        if (l2 >= 1e-3 * sl2 && e > plain->err) /* skip gradients that are 0 up to rounding */
            plain->err = e, snprintf(plain->what, sizeof plain->what, "%s", what);
    }
}

/* Which parameters backward reported ready, and how often. */
typedef struct ready_log {
    mt_model *m;
    int *calls;
    int order_inversions, n_calls, last;
    bool bad_range;
} ready_log;

static mt_status on_ready(void *user, size_t off, size_t count) {
    ready_log *r = user;
    mt_params *ps = mt_model_params(r->m);
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].trainable && ps->p[i].offset == off) {
            if ((size_t)ps->p[i].numel != count) r->bad_range = true;
            r->calls[i]++;
            r->n_calls++;
            if (i > r->last && r->last >= 0) r->order_inversions++;
            r->last = i;
            return MT_OK;
        }
    r->bad_range = true;
    return MT_OK;
}

/* One fixture's model and batch. A dense case (the U-Net) has logits (N,H,W,C), one row of C
 * per pixel, and class targets; a classifier logits (N,L) and BCE targets. */
typedef struct parity_case {
    char arch[32];
    int in_ch, outputs, n, h, w;
    bool dense;
    int64_t rows; /* rows of logits: N*H*W (dense) or N */
    mt_ctx ctx;
    mt_model *m;
    float *x, *logits, *dlogits;
    float *y, *pw;    /* classifier: BCE targets (N,L) and pos_weight (L) */
    int32_t *classes; /* dense: class per pixel (N*H*W) */
} parity_case;

/* The U-Net options after the six numbers of a case line: "depth=3 channels=8 norm=batch
 * up=transpose" (each optional; the model's defaults otherwise). */
static bool parse_options(mt_model_opts *o, const char *opts) {
    char key[32], val[32];
    int used = 0;
    while (sscanf(opts, " %31[^= ]=%31s%n", key, val, &used) == 2) {
        opts += used;
        bool ok = true;
        if (!strcmp(key, "depth"))
            o->depth = atoi(val);
        else if (!strcmp(key, "channels"))
            o->channels = atoi(val);
        else if (!strcmp(key, "norm") && (!strcmp(val, "batch") || !strcmp(val, "instance")))
            o->norm = !strcmp(val, "batch") ? MT_NORM_BATCH : MT_NORM_INSTANCE;
        else if (!strcmp(key, "up") && (!strcmp(val, "transpose") || !strcmp(val, "bilinear")))
            o->bilinear = !strcmp(val, "bilinear");
        else
            ok = false;
        MT_CHECK(ok, "case line: unknown option %s=%s", key, val);
        if (!ok) return false;
    }
    bool read_all = strspn(opts, " \n") == strlen(opts);
    MT_CHECK(read_all, "case line: cannot read the options at '%s'", opts);
    return read_all;
}

/* "case ARCH IN OUT BATCH H W [options]": creates and fills the model, makes the batch. */
static bool case_open(parity_case *c, const char *header) {
    int used = 0;
    if (sscanf(header, "case %31s %d %d %d %d %d%n", c->arch, &c->in_ch, &c->outputs, &c->n, &c->h,
               &c->w, &used) != 6) {
        MT_CHECK(false, "bad case line: %s", header);
        return false;
    }
    mt_model_opts o = {.arch = c->arch,
                       .in_channels = c->in_ch,
                       .n_outputs = c->outputs,
                       .bn_momentum = 0.1f,
                       .bn_eps = 1e-5f};
    if (!parse_options(&o, header + used)) return false;
    c->dense = !strcmp(c->arch, "unet");
    c->rows = c->dense ? (int64_t)c->n * c->h * c->w : c->n;
    mt_status s = mt_ctx_init(&c->ctx, MT_CPU, 0, 0);
    MT_CHECK_OK(s);
    if (s != MT_OK) return false;
    s = mt_model_create(&c->ctx, &o, &c->m);
    MT_CHECK(s == MT_OK, "cannot create the %s of this case (%s): %s", c->arch, mt_status_name(s),
             mt_error_message());
    if (s == MT_OK) {
        MT_CHECK(mt_model_dense(c->m) == c->dense, "%s: mt_model_dense says %d", c->arch,
                 mt_model_dense(c->m));
        s = fill_model(c->m);
        MT_CHECK_OK(s);
    }
    if (s != MT_OK) {
        mt_model_free(c->m), mt_ctx_free(&c->ctx);
        return false;
    }
    size_t nl = (size_t)c->rows * c->outputs;
    c->x = malloc((size_t)c->n * c->h * c->w * c->in_ch * sizeof(float));
    c->logits = malloc(nl * sizeof(float)), c->dlogits = malloc(nl * sizeof(float));
    fill_input(c->x, c->n, c->in_ch, c->h, c->w);
    if (c->dense) {
        c->classes = malloc((size_t)c->rows * sizeof *c->classes);
        fill_classes(c->classes, c->rows, c->outputs);
    } else {
        c->y = malloc(nl * sizeof(float)), c->pw = malloc((size_t)c->outputs * sizeof(float));
        fill_targets(c->y, c->pw, c->n, c->outputs);
    }
    return true;
}

static void case_close(parity_case *c) {
    mt_model_free(c->m);
    mt_ctx_free(&c->ctx);
    free(c->x), free(c->logits), free(c->dlogits), free(c->y), free(c->pw), free(c->classes);
}

/* data as the model's logits: (N,H,W,C) for a dense model, (N,L) for a classifier. */
static mt_tensor logits_tensor(parity_case *c, float *data) {
    if (c->dense) return mt_tensor_4d(data, MT_F32, MT_CPU, c->n, c->h, c->w, c->outputs);
    return mt_tensor_2d(data, MT_F32, MT_CPU, c->n, c->outputs);
}

static mt_status forward(parity_case *c, bool train) {
    mt_tensor x = mt_tensor_4d(c->x, MT_F32, MT_CPU, c->n, c->h, c->w, c->in_ch);
    mt_tensor z = logits_tensor(c, c->logits);
    return mt_model_forward(c->m, &c->ctx, &x, train, 1, 0, &z);
}

/* The loss and dlogits of the last forward's logits: the U-Net's mean cross-entropy over
 * pixels (rows (N*H*W, C)), a classifier's BCE. */
static mt_status loss(parity_case *c, float *value) {
    mt_tensor z = mt_tensor_2d(c->logits, MT_F32, MT_CPU, c->rows, c->outputs);
    mt_tensor dz = mt_tensor_2d(c->dlogits, MT_F32, MT_CPU, c->rows, c->outputs);
    mt_tensor l = mt_tensor_1d(value, MT_F32, MT_CPU, 1);
    if (c->dense) {
        mt_tensor t = mt_tensor_1d(c->classes, MT_I32, MT_CPU, c->rows);
        MT_TRY(mt_cross_entropy_fwd(&c->ctx, &z, &t, -100, &l));
        return mt_cross_entropy_bwd(&c->ctx, &z, &t, -100, 1.0f, &dz);
    }
    mt_tensor y = mt_tensor_2d(c->y, MT_F32, MT_CPU, c->n, c->outputs);
    mt_tensor pw = mt_tensor_1d(c->pw, MT_F32, MT_CPU, c->outputs);
    MT_TRY(mt_bce_logits_fwd(&c->ctx, &z, &y, &pw, &l));
    return mt_bce_logits_bwd(&c->ctx, &z, &y, &pw, 1.0f, &dz);
}

static mt_status backward(parity_case *c, ready_log *rl) {
    mt_params *ps = mt_model_params(c->m);
    mt_tensor g = mt_tensor_1d(ps->grads, MT_F32, MT_CPU, (int64_t)ps->n_train);
    MT_TRY(mt_tensor_zero(&c->ctx, &g));
    mt_tensor dz = logits_tensor(c, c->dlogits);
    return mt_model_backward(c->m, &c->ctx, &dz, on_ready, rl);
}

/* Compares the last forward's logits with a fixture line, in the fixture's order: PyTorch's
 * (N,C,H,W) for a dense model. */
static void cmp_logits(parity_case *c, worst *w, const char *tag, char *rest) {
    int64_t n = c->rows * c->outputs;
    if (!c->dense) return cmp_vector(w, tag, rest, c->logits, n);
    float *nchw = malloc((size_t)n * sizeof *nchw);
    int64_t hw = (int64_t)c->h * c->w;
    for (int64_t b = 0; b < c->n; b++)
        for (int64_t p = 0; p < hw; p++)
            for (int64_t k = 0; k < c->outputs; k++)
                nchw[(b * c->outputs + k) * hw + p] = c->logits[(b * hw + p) * c->outputs + k];
    cmp_vector(w, tag, rest, nchw, n);
    free(nchw);
}

static void check_ready(parity_case *c, ready_log *rl) {
    mt_params *ps = mt_model_params(c->m);
    int n_train = 0;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].trainable) {
            n_train++;
            MT_CHECK(rl->calls[i] == 1, "%s: ready called %d times", ps->p[i].name, rl->calls[i]);
        }
    MT_CHECK(!rl->bad_range, "ready got a range that is not one parameter");
    MT_CHECK(rl->n_calls == n_train, "%d ready calls for %d parameters", rl->n_calls, n_train);
    /* roughly the reverse of the table: few calls go forward in the table */
    MT_CHECK(rl->order_inversions * 4 < n_train, "%d of %d ready calls go forward",
             rl->order_inversions, n_train);
}

/* Compares one "stat" or "grad" line. */
static void cmp_entry(parity_case *c, worst *w, worst *plain, char *rest, bool grad) {
    char *save, *name = strtok_r(rest, " ", &save);
    int i = mt_model_find(c->m, name);
    MT_CHECK(i >= 0, "the model has no %s", name);
    if (i < 0) return;
    const mt_param *p = &mt_model_params(c->m)->p[i];
    float *v = malloc((size_t)p->numel * sizeof *v);
    MT_CHECK_OK(grad ? mt_model_grad_get(c->m, i, v) : mt_model_param_get(c->m, i, v));
    if (grad)
        cmp_grad(w, plain, name, save, v, p->numel);
    else
        cmp_stat(w, name, save, v, p->numel);
    free(v);
}

static void check_counters(parity_case *c, float expect) {
    mt_params *ps = mt_model_params(c->m);
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].file_dtype == MT_I64) {
            float v = -1;
            MT_CHECK_OK(mt_model_param_get(c->m, i, &v));
            MT_CHECK(v == expect, "%s = %g, expected %g", ps->p[i].name, v, expect);
        }
}

static void run_case(const char *file) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", data_dir, file);
    FILE *f = fopen(path, "r");
    MT_CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    parity_case c = {0};
    worst w_eval = {0}, w_logits = {0}, w_loss = {0}, w_stat = {0}, w_grad = {0}, w_plain = {0};
    int *calls = NULL;
    ready_log rl = {.last = -1};
    bool ok = getline(&line, &cap, f) > 0 && case_open(&c, line), backward_done = false;
    float loss_value = 0;
    while (ok && getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = 0;
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = 0;
        char *tag = line, *rest = sp + 1;
        if (!strcmp(tag, "eval_logits")) {
            MT_CHECK_OK(forward(&c, false));
            cmp_logits(&c, &w_eval, "eval logits", rest);
            check_counters(&c, 3);
        } else if (!strcmp(tag, "logits")) {
            MT_CHECK_OK(forward(&c, true));
            cmp_logits(&c, &w_logits, "logits", rest);
            check_counters(&c, 4);
        } else if (!strcmp(tag, "loss")) {
            MT_CHECK_OK(loss(&c, &loss_value));
            note(&w_loss, fabs(loss_value - atof(rest)) / fabs(atof(rest)), "loss", "");
        } else if (!strcmp(tag, "stat")) {
            cmp_entry(&c, &w_stat, NULL, rest, false);
        } else if (!strcmp(tag, "grad")) {
            if (!backward_done) {
                calls = calloc((size_t)mt_model_params(c.m)->n, sizeof *calls);
                rl.m = c.m, rl.calls = calls;
                MT_CHECK_OK(backward(&c, &rl));
                check_ready(&c, &rl);
                backward_done = true;
            }
            cmp_entry(&c, &w_grad, &w_plain, rest, true);
        }
    }
    MT_CHECK(ok, "%s: the case could not be set up (see above): nothing was compared", file);
    if (ok) {
        printf("  %s %s (%dx%dx%d, batch %d): worst relative errors\n", file, c.arch, c.h, c.w,
               c.in_ch, c.n);
        worst *all[] = {&w_eval, &w_logits, &w_loss, &w_stat, &w_grad, &w_plain};
        const char *names[] = {"eval logits",   "train logits", "loss",
                               "running stats", "gradients",    "(plain rel.)"};
        for (int i = 0; i < 6; i++)
            printf("    %-13s %.2e  (%s)\n", names[i], all[i]->err, all[i]->what);
        MT_CHECK(backward_done, "%s has no gradients", file);
    }
    free(calls);
    free(line);
    fclose(f);
    if (ok) case_close(&c);
}

static void test_resnet18(void) {
    run_case("resnet18_train.txt");
}
static void test_densenet121(void) {
    run_case("densenet121_train.txt");
}
static void test_resnet50(void) {
    run_case("resnet50_train.txt");
}
static void test_unet_bn_transpose(void) {
    run_case("unet_bn_transpose.txt");
}
static void test_unet_in_bilinear(void) {
    run_case("unet_in_bilinear.txt");
}
static void test_unet_bn_bilinear_d4(void) {
    run_case("unet_bn_bilinear_d4.txt");
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    MT_RUN(test_resnet18);
    MT_RUN(test_densenet121);
    MT_RUN(test_resnet50);
    MT_RUN(test_unet_bn_transpose);
    MT_RUN(test_unet_in_bilinear);
    MT_RUN(test_unet_bn_bilinear_d4);
    return mt_test_summary();
}
