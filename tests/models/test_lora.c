/* LoRA on Llama-family models (lm.h: mt_lm_lora_*, mt_lm_backward) against PEFT.
 * Usage: test_lora DATA_DIR TMP_DIR.
 *
 * DATA_DIR holds tests/oracles/lora_oracle.py's fixtures: lora_peft/ (an adapter PEFT wrote for
 * llama_f32/: r 4, alpha 8, all seven projections, lora_B nonzero) and lora_peft.ref.safetensors
 * (input_ids, next-token targets with -100, PEFT's float64 logits, loss, dlogits and
 * "grad.<key>" for every LoRA tensor). Errors are |c - r| / max(|r|, rms(r)) within 1e-4 (the
 * worst per quantity is printed).
 *
 * The reverse direction (medtrain writes, PEFT reads) needs Python; after this test has run:
 *     /work/torchenv/bin/python tests/oracles/lora_oracle.py --check \
 *         build-lora/tests/models/lora_tmp/lora_saved
 * prints the worst difference of PEFT's logits with medtrain's adapter against the reference
 * Run 2026-11-25: worst 5.66e-08 (what PEFT's own adapter gives: medtrain's
 * adapter_model.safetensors is byte-identical to PEFT's, metadata included). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/lm.h"
#include "medtrain/ops.h"
#include "medtrain/safetensors.h"
#include "mt_test.h"

#define TOL 1e-4

static const char *data_dir = "tests/models/data", *tmp_dir = "/tmp";
static mt_ctx ctx;

static const char *path_in(const char *dir, const char *name) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    char tmp[1024]; /* dir may be an earlier result of this function */
    snprintf(tmp, sizeof tmp, "%.700s/%.300s", dir, name);
    memcpy(buf[k], tmp, sizeof tmp);
    return buf[k];
}

static float *read_all(const mt_st_file *f, const char *name, int64_t *n) {
    const mt_st_tensor *t = mt_st_find(f, name);
    MT_CHECK(t != NULL, "lora_peft.ref.safetensors lacks %s", name);
    if (!t) return NULL;
    float *v = malloc((size_t)t->numel * sizeof *v);
    MT_CHECK_OK(mt_st_read_f32(f, t, v));
    if (n) *n = t->numel;
    return v;
}

static double rms_of(const float *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s / (double)n);
}

static double worst_error(const float *got, const float *want, int64_t n) {
    const double rms = rms_of(want, n);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / fmax(fabs(want[i]), rms);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

typedef struct ready_log {
    int calls;
    size_t covered;
    size_t last_offset;
    bool descending;
} ready_log;

static mt_status on_ready(void *user, size_t offset, size_t count) {
    ready_log *r = user;
    if (r->calls && offset >= r->last_offset) r->descending = false;
    r->last_offset = offset;
    r->calls++;
    r->covered += count;
    return MT_OK;
}

static mt_lm *load_with_adapter(const char *adapter) {
    mt_lm *lm = NULL;
    MT_CHECK_OK(mt_lm_load(&ctx, path_in(data_dir, "llama_f32"), &lm));
    if (lm && adapter) MT_CHECK_OK(mt_lm_lora_load(lm, adapter));
    return lm;
}

/* Logits, loss, and every LoRA gradient against PEFT; then save, reload, same logits. */
static void test_parity_and_gradients(void) {
    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open(path_in(data_dir, "lora_peft.ref.safetensors"), &f));
    if (!f) return;
    const mt_st_tensor *ti = mt_st_find(f, "input_ids");
    const int64_t B = ti->shape[0], T = ti->shape[1];
    int64_t n;
    float *ids_f = read_all(f, "input_ids", NULL), *tg_f = read_all(f, "targets", NULL);
    float *ref = read_all(f, "logits", &n), *dref = read_all(f, "dlogits", NULL);
    float *loss_ref = read_all(f, "loss", NULL);
    const int64_t V = n / (B * T);
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids),
            *tg = malloc((size_t)(B * T) * sizeof *tg);
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)ids_f[i], tg[i] = (int32_t)tg_f[i];
    mt_lm *lm = load_with_adapter(path_in(data_dir, "lora_peft"));
    float *lg = calloc((size_t)n, sizeof *lg), *dlg = calloc((size_t)n, sizeof *dlg);
    if (!lm) goto done;
    mt_params *P = mt_lm_params(lm);
    int n_lora = 0;
    for (int i = 0; i < P->n; i++) n_lora += P->p[i].trainable;
    MT_CHECK(n_lora == 28, "%d trainable entries, expected 2 layers x 7 x (A, B)", n_lora);

    mt_tensor t_ids = mt_tensor_2d(ids, MT_I32, MT_CPU, B, T);
    mt_tensor t_lg = mt_tensor_3d(lg, MT_F32, MT_CPU, B, T, V);
    MT_CHECK_OK(mt_lm_forward(lm, &ctx, &t_ids, true, &t_lg));
    double e = worst_error(lg, ref, n);
    printf("  logits vs PEFT: worst %.3g\n", e);
    MT_CHECK(e <= TOL, "logits: worst error %.3g > %g", e, TOL);

    mt_tensor l2 = mt_tensor_2d(lg, MT_F32, MT_CPU, B * T, V),
              d2 = mt_tensor_2d(dlg, MT_F32, MT_CPU, B * T, V);
    mt_tensor t_tg = mt_tensor_1d(tg, MT_I32, MT_CPU, B * T);
    float loss = 0;
    mt_tensor t_loss = mt_tensor_1d(&loss, MT_F32, MT_CPU, 1);
    MT_CHECK_OK(mt_cross_entropy_fwd(&ctx, &l2, &t_tg, -100, &t_loss));
    MT_CHECK_OK(mt_cross_entropy_bwd(&ctx, &l2, &t_tg, -100, 1.0f, &d2));
    printf("  loss %.7g, PEFT %.7g; dlogits worst %.3g\n", loss, loss_ref[0],
           worst_error(dlg, dref, n));
    MT_CHECK_NEAR(loss, loss_ref[0], TOL);

    ready_log rl = {.descending = true};
    mt_tensor t_dlg = mt_tensor_3d(dlg, MT_F32, MT_CPU, B, T, V);
    MT_CHECK_OK(mt_lm_backward(lm, &ctx, &t_dlg, on_ready, &rl));
    MT_CHECK(rl.calls == 28 && rl.covered == P->n_train && rl.descending,
             "ready: %d calls covering %zu of %zu floats, descending %d", rl.calls, rl.covered,
             P->n_train, rl.descending);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < P->n; i++) {
        if (!P->p[i].trainable) continue;
        char key[160];
        snprintf(key, sizeof key, "grad.%s", P->p[i].name);
        int64_t m;
        float *want = read_all(f, key, &m);
        if (!want) continue;
        float *got = calloc((size_t)m, sizeof *got);
        MT_CHECK_OK(mt_lm_grad_get(lm, i, got));
        double ge = worst_error(got, want, m);
        if (ge > worst || ge != ge) worst = ge, worst_name = P->p[i].name;
        MT_CHECK(ge <= TOL, "%s: gradient worst error %.3g > %g", P->p[i].name, ge, TOL);
        free(got);
        free(want);
    }
    printf("  LoRA gradients vs PEFT: worst %.3g (%s)\n", worst, worst_name);
    /* grads accumulate: a second forward + backward doubles them; zeroing resets */
    {
        const int i =
            mt_lm_find(lm, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        float g1[256], g2[256];
        MT_CHECK_OK(mt_lm_grad_get(lm, i, g1));
        MT_CHECK_OK(mt_lm_forward(lm, &ctx, &t_ids, true, &t_lg));
        MT_CHECK_OK(mt_lm_backward(lm, &ctx, &t_dlg, NULL, NULL));
        MT_CHECK_OK(mt_lm_grad_get(lm, i, g2));
        MT_CHECK(g2[7] == 2 * g1[7] || fabsf(g2[7] - 2 * g1[7]) <= 1e-6f * fabsf(g1[7]),
                 "accumulated %g, first %g", g2[7], g1[7]);
        MT_CHECK_OK(mt_lm_zero_grads(lm));
        MT_CHECK_OK(mt_lm_grad_get(lm, i, g2));
        MT_CHECK(g2[7] == 0, "after zeroing: %g", g2[7]);
    }

    /* save, reload into a fresh model: identical logits */
    const char *saved = path_in(tmp_dir, "lora_saved");
    MT_CHECK_OK(mt_lm_lora_save(lm, saved));
    MT_CHECK_OK(mt_lm_lora_save(lm, saved)); /* replacing an existing adapter works too */
    mt_lm *again = load_with_adapter(saved);
    if (again) {
        float *lg2 = calloc((size_t)n, sizeof *lg2);
        mt_tensor t2 = mt_tensor_3d(lg2, MT_F32, MT_CPU, B, T, V);
        MT_CHECK_OK(mt_lm_forward(again, &ctx, &t_ids, false, &t2));
        MT_CHECK(!memcmp(lg2, lg, (size_t)n * sizeof *lg), "reloaded adapter: different logits");
        free(lg2);
        mt_lm_free(again);
    }
    cJSON *j = NULL;
    MT_CHECK_OK(mt_json_read_file(path_in(saved, "adapter_config.json"), &j));
    if (j) {
        const cJSON *pt = cJSON_GetObjectItem(j, "peft_type"), *r = cJSON_GetObjectItem(j, "r");
        MT_CHECK(cJSON_IsString(pt) && !strcmp(pt->valuestring, "LORA"), "peft_type");
        MT_CHECK(cJSON_IsNumber(r) && r->valueint == 4, "r");
        MT_CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "target_modules")) == 7, "targets");
        cJSON_Delete(j);
    }
done:
    mt_lm_free(lm);
    mt_st_close(f);
    free(ids), free(tg), free(ids_f), free(tg_f), free(ref), free(dref), free(loss_ref), free(lg),
        free(dlg);
}

/* mt_lm_lora_add: PEFT's names, shapes and init (A within +-1/sqrt(in), B zero, so the logits
 * are the base model's); the same seed gives the same A. */
static void test_add_and_init(void) {
    mt_lm *lm = load_with_adapter(NULL), *lm2 = load_with_adapter(NULL);
    if (!lm || !lm2) goto done;
    mt_lm_lora_opts o = {.r = 8, .alpha = 16, .targets = "q_proj,v_proj", .seed = 5};
    MT_CHECK_OK(mt_lm_lora_add(lm, &o));
    MT_CHECK_OK(mt_lm_lora_add(lm2, &o));
    MT_CHECK_FAILS(mt_lm_lora_add(lm, &o), MT_ERR_ARG, "already");
    const int a = mt_lm_find(lm, "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight");
    const int b = mt_lm_find(lm, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    MT_CHECK(a >= 0 && b == a + 1, "v_proj LoRA entries %d %d", a, b);
    MT_CHECK(mt_lm_find(lm, "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight") < 0,
             "up_proj is not a target");
    if (a < 0 || b < 0) goto done;
    const mt_param *pa = &mt_lm_params(lm)->p[a], *pb = &mt_lm_params(lm)->p[b];
    MT_CHECK(pa->shape[0] == 8 && pa->shape[1] == 64 && pb->shape[0] == 32 && pb->shape[1] == 8,
             "shapes [%lld,%lld] [%lld,%lld]", (long long)pa->shape[0], (long long)pa->shape[1],
             (long long)pb->shape[0], (long long)pb->shape[1]);
    float va[512], va2[512], vb[256];
    MT_CHECK_OK(mt_lm_param_get(lm, a, va));
    MT_CHECK_OK(mt_lm_param_get(lm2, a, va2));
    MT_CHECK_OK(mt_lm_param_get(lm, b, vb));
    double most = 0;
    for (int i = 0; i < 512; i++) most = fmax(most, fabs(va[i]));
    MT_CHECK(most <= 0.125 && most > 0.1, "A: max |a| %g, bound 1/sqrt(64)", most);
    MT_CHECK(!memcmp(va, va2, sizeof va), "same seed, different A");
    for (int i = 0; i < 256; i++) MT_CHECK(vb[i] == 0, "B[%d] = %g", i, vb[i]);
    /* a backward without a training forward is refused */
    float dl[1];
    mt_tensor t = mt_tensor_3d(dl, MT_F32, MT_CPU, 1, 1, 1);
    MT_CHECK_FAILS(mt_lm_backward(lm, &ctx, &t, NULL, NULL), MT_ERR_ARG, "training forward");
done:
    mt_lm_free(lm);
    mt_lm_free(lm2);
}

/* sum(w * logits) in double for a training forward at the model's dropout step. */
static double weighted(mt_lm *lm, const int32_t *ids, int64_t B, int64_t T, const float *w,
                       float *lg) {
    const int64_t V = mt_lm_get_config(lm)->vocab_size;
    mt_tensor t_ids = mt_tensor_2d((void *)ids, MT_I32, MT_CPU, B, T);
    mt_tensor t_lg = mt_tensor_3d(lg, MT_F32, MT_CPU, B, T, V);
    MT_CHECK_OK(mt_lm_forward(lm, &ctx, &t_ids, true, &t_lg));
    double s = 0;
    for (int64_t i = 0; i < B * T * V; i++) s += (double)w[i] * lg[i];
    return s;
}

/* LoRA dropout: masks fixed by (seed, step), off in eval; the backward (recomputing the masks) is
 * checked against central differences of L = sum(w * logits) on a few A and B entries. PEFT's
 * masks come from torch's generator, so there is no PEFT parity for dropout > 0. */
static void test_dropout(void) {
    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open(path_in(data_dir, "lora_peft.ref.safetensors"), &f));
    if (!f) return;
    const mt_st_tensor *ti = mt_st_find(f, "input_ids");
    const int64_t B = ti->shape[0], T = ti->shape[1];
    int64_t n;
    float *ids_f = read_all(f, "input_ids", NULL), *ref = read_all(f, "logits", &n);
    float *w = read_all(f, "dlogits", NULL);
    mt_st_close(f);
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids);
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)ids_f[i];
    float *lg = calloc((size_t)n, sizeof *lg), *lg2 = calloc((size_t)n, sizeof *lg2);
    mt_lm *lm = load_with_adapter(NULL);
    if (!lm) goto done;
    mt_lm_lora_opts o = {.r = 4, .alpha = 8, .dropout = 0.3f, .seed = 11};
    MT_CHECK_OK(mt_lm_lora_add(lm, &o));
    MT_CHECK_OK(mt_lm_lora_load(lm, path_in(data_dir, "lora_peft")));
    mt_lm_lora_set_step(lm, 3);
    const double l0 = weighted(lm, ids, B, T, w, lg);
    weighted(lm, ids, B, T, w, lg2);
    MT_CHECK(!memcmp(lg, lg2, (size_t)n * sizeof *lg), "same step, different dropout masks");
    mt_lm_lora_set_step(lm, 4);
    weighted(lm, ids, B, T, w, lg2);
    MT_CHECK(memcmp(lg, lg2, (size_t)n * sizeof *lg), "steps 3 and 4 gave the same masks");
    const int64_t V = n / (B * T);
    mt_tensor t_ids = mt_tensor_2d(ids, MT_I32, MT_CPU, B, T);
    mt_tensor t_lg = mt_tensor_3d(lg2, MT_F32, MT_CPU, B, T, V);
    MT_CHECK_OK(mt_lm_forward(lm, &ctx, &t_ids, false, &t_lg));
    double e = worst_error(lg2, ref, n);
    MT_CHECK(e <= TOL, "eval forward with dropout set: worst %.3g against PEFT (no dropout)", e);

    mt_lm_lora_set_step(lm, 3);
    (void)weighted(lm, ids, B, T, w, lg);
    mt_lm_lora_set_step(lm, 99); /* after the forward: the backward keeps the forward's masks */
    mt_tensor t_w = mt_tensor_3d(w, MT_F32, MT_CPU, B, T, V);
    MT_CHECK_OK(mt_lm_backward(lm, &ctx, &t_w, NULL, NULL));
    mt_lm_lora_set_step(lm, 3);
    static const char *const names[] = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
        "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
        "base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight"};
    double worst = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const int i = mt_lm_find(lm, names[k]);
        MT_CHECK(i >= 0, "%s", names[k]);
        if (i < 0) continue;
        const int64_t m = mt_lm_params(lm)->p[i].numel;
        float *v = malloc((size_t)m * sizeof *v), *g = malloc((size_t)m * sizeof *g);
        MT_CHECK_OK(mt_lm_param_get(lm, i, v));
        MT_CHECK_OK(mt_lm_grad_get(lm, i, g));
        double gmax = 0;
        int64_t at = 0;
        for (int64_t j = 0; j < m; j++)
            if (fabs(g[j]) > gmax) gmax = fabs(g[j]), at = j;
        const float keep = v[at], h = 1e-3f;
        v[at] = keep + h;
        MT_CHECK_OK(mt_lm_param_set(lm, i, v));
        const double lp = weighted(lm, ids, B, T, w, lg);
        v[at] = keep - h;
        MT_CHECK_OK(mt_lm_param_set(lm, i, v));
        const double lm_ = weighted(lm, ids, B, T, w, lg);
        v[at] = keep;
        MT_CHECK_OK(mt_lm_param_set(lm, i, v));
        const double fd = (lp - lm_) / (2.0 * h), err = fabs(fd - g[at]) / gmax;
        if (err > worst) worst = err;
        MT_CHECK(err <= 1e-2, "%s[%lld]: backward %.6g, central difference %.6g", names[k],
                 (long long)at, (double)g[at], fd);
        free(v), free(g);
    }
    printf("  dropout 0.3: backward vs central differences: worst %.3g (L %.6g)\n", worst, l0);
done:
    mt_lm_free(lm);
    free(ids), free(ids_f), free(ref), free(w), free(lg), free(lg2);
}

/* A broken adapter: the error names the tensor. */
static void test_load_errors(void) {
    char dir[1024], dir2[1024]; /* path_in's buffers are reused */
    snprintf(dir, sizeof dir, "%s", path_in(tmp_dir, "lora_broken"));
    snprintf(dir2, sizeof dir2, "%s", path_in(tmp_dir, "lora_broken2"));
    mt_mkdir_p(dir);
    char *cfg = NULL;
    size_t n = 0;
    MT_CHECK_OK(mt_file_read(path_in(data_dir, "lora_peft/adapter_config.json"), &cfg, &n));
    if (!cfg) return;
    MT_CHECK_OK(mt_file_write_atomic(path_in(dir, "adapter_config.json"), cfg, n));
    free(cfg);
    float z[4 * 64] = {0};
    mt_st_writer *w = NULL;
    MT_CHECK_OK(mt_st_writer_new(&w));
    MT_CHECK_OK(mt_st_writer_add(w,
                                 "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                                 MT_F32, 2, (int64_t[]){4, 64}, z));
    MT_CHECK_OK(mt_st_writer_save(w, path_in(dir, "adapter_model.safetensors")));
    mt_st_writer_free(w);
    mt_lm *lm = load_with_adapter(NULL);
    if (!lm) return;
    MT_CHECK_FAILS(mt_lm_lora_load(lm, dir), MT_ERR_FORMAT, "q_proj.lora_B.weight", "missing");
    mt_lm_free(lm);

    /* a mis-shaped tensor (r 3 where the config says 4), and an extra one */
    mt_lm *ok = load_with_adapter(path_in(data_dir, "lora_peft"));
    if (!ok) return;
    MT_CHECK_OK(mt_lm_lora_save(ok, dir2));
    mt_lm_free(ok);
    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open(path_in(dir2, "adapter_model.safetensors"), &f));
    if (!f) return;
    static float buf[64 * 172];
    for (int extra = 0; extra < 2; extra++) {
        MT_CHECK_OK(mt_st_writer_new(&w));
        for (size_t k = 0; k < mt_st_count(f); k++) {
            const mt_st_tensor *t = mt_st_at(f, k);
            int64_t shape[2] = {t->shape[0], t->shape[1]};
            if (!extra &&
                !strcmp(t->name, "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"))
                shape[0] = 3;
            MT_CHECK_OK(mt_st_writer_add(w, t->name, MT_F32, 2, shape, buf));
        }
        if (extra)
            MT_CHECK_OK(mt_st_writer_add(w, "base_model.model.lm_head.lora_A.weight", MT_F32, 2,
                                         (int64_t[]){4, 64}, buf));
        MT_CHECK_OK(mt_st_writer_save(w, path_in(dir, "adapter_model.safetensors")));
        mt_st_writer_free(w);
        lm = load_with_adapter(NULL);
        if (!lm) break;
        if (!extra)
            MT_CHECK_FAILS(mt_lm_lora_load(lm, dir), MT_ERR_SHAPE,
                           "layers.1.mlp.up_proj.lora_A.weight", "file [3,64], model [4,64]");
        else
            MT_CHECK_FAILS(mt_lm_lora_load(lm, dir), MT_ERR_FORMAT,
                           "base_model.model.lm_head.lora_A.weight", "not a LoRA tensor");
        mt_lm_free(lm);
    }
    mt_st_close(f);

    /* the config: a model with other LoRA, and what medtrain does not do */
    lm = load_with_adapter(NULL);
    if (!lm) return;
    mt_lm_lora_opts o = {.r = 8, .alpha = 16};
    MT_CHECK_OK(mt_lm_lora_add(lm, &o));
    MT_CHECK_FAILS(mt_lm_lora_load(lm, path_in(data_dir, "lora_peft")), MT_ERR_CONFIG, "r 4",
                   "has LoRA with r 8");
    mt_lm_free(lm);
    const char *cfg_dora = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
                           "\"target_modules\": [\"q_proj\"], \"use_dora\": true}";
    MT_CHECK_OK(
        mt_file_write_atomic(path_in(dir, "adapter_config.json"), cfg_dora, strlen(cfg_dora)));
    lm = load_with_adapter(NULL);
    if (!lm) return;
    MT_CHECK_FAILS(mt_lm_lora_load(lm, dir), MT_ERR_UNSUPPORTED, "use_dora");
    mt_lm_lora_opts bad_t = {.r = 4, .targets = "q_proj,lm_head"};
    MT_CHECK_FAILS(mt_lm_lora_add(lm, &bad_t), MT_ERR_CONFIG, "'lm_head'");
    mt_lm_free(lm);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    if (argc > 2) tmp_dir = argv[2];
    mkdir(tmp_dir, 0755);
    if (mt_ctx_init(&ctx, MT_CPU, 0, 0) != MT_OK) {
        fprintf(stderr, "%s\n", mt_error_message());
        return 1;
    }
    MT_RUN(test_parity_and_gradients);
    MT_RUN(test_add_and_init);
    MT_RUN(test_dropout);
    MT_RUN(test_load_errors);
    mt_ctx_free(&ctx);
    return mt_test_summary();
}
