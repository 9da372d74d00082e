/* Optimizers against torch.optim, learning-rate schedules, and checkpoint directories.
 *
 * tests/oracles/optim_oracle.py wrote data/optim_reference.json: two parameters (one with weight
 * decay, one without) after each of three steps of SGD (plain, momentum, Nesterov, dampening) and
 * AdamW. medtrain runs the same steps in f32 from the same start and gradients. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/train.h"
#include "mt_test.h"

static const char *data_dir = ".";

static void fill(float *dst, const cJSON *arr) {
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) dst[i++] = (float)v->valuedouble;
}

/* A parameter table like a model's: w (20, decayed) then b (17, not decayed). */
static void make_params(mt_params *ps, mt_param p[2], float *params, float *grads) {
    memset(p, 0, 2 * sizeof *p);
    snprintf(p[0].name, sizeof p[0].name, "w");
    p[0].ndim = 1, p[0].shape[0] = p[0].numel = 20, p[0].trainable = true, p[0].decay = true;
    snprintf(p[1].name, sizeof p[1].name, "b");
    p[1].ndim = 1, p[1].shape[0] = p[1].numel = 17, p[1].trainable = true, p[1].offset = 20;
    *ps = (mt_params){.p = p, .n = 2, .n_train = 37, .params = params, .grads = grads};
}

static double num(const cJSON *o, const char *k, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsTrue(v) ? 1 : def;
}

static void test_optimizers_match_torch(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/optim_reference.json", data_dir);
    cJSON *ref;
    MT_CHECK_OK(mt_json_read_file(path, &ref));
    if (!ref) return;
    mt_ctx ctx;
    MT_CHECK_OK(mt_ctx_init(&ctx, MT_CPU, 0, 1));
    const cJSON *p0 = cJSON_GetObjectItem(ref, "p0"), *grads = cJSON_GetObjectItem(ref, "grads");
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "cases")) {
        float params[37], g[37];
        mt_param p[2];
        mt_params ps;
        make_params(&ps, p, params, g);
        fill(params, cJSON_GetArrayItem(p0, 0));
        fill(params + 20, cJSON_GetArrayItem(p0, 1));
        const cJSON *h = cJSON_GetObjectItem(c, "hyper");
        bool adamw = !strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, "adamw");
        mt_opt_config oc = {.kind = adamw ? MT_OPT_ADAMW : MT_OPT_SGD,
                            .momentum = (float)num(h, "momentum", 0),
                            .dampening = (float)num(h, "dampening", 0),
                            .nesterov = num(h, "nesterov", 0) != 0,
                            .eps = (float)num(h, "eps", 1e-8),
                            .weight_decay = (float)num(h, "weight_decay", 0)};
        if (adamw) {
            const cJSON *b = cJSON_GetObjectItem(h, "betas");
            oc.beta1 = (float)cJSON_GetArrayItem(b, 0)->valuedouble;
            oc.beta2 = (float)cJSON_GetArrayItem(b, 1)->valuedouble;
        }
        mt_optimizer o;
        MT_CHECK_OK(mt_optimizer_init(&o, &ctx, &ps, &oc));
        int s = 0;
        const cJSON *step;
        cJSON_ArrayForEach(step, cJSON_GetObjectItem(c, "steps")) {
            const cJSON *gs = cJSON_GetArrayItem(grads, s);
            fill(g, cJSON_GetArrayItem(gs, 0));
            fill(g + 20, cJSON_GetArrayItem(gs, 1));
            MT_CHECK_OK(mt_optimizer_step(&o, (float)num(h, "lr", 0)));
            float want[37];
            fill(want, cJSON_GetArrayItem(step, 0));
            fill(want + 20, cJSON_GetArrayItem(step, 1));
            for (int i = 0; i < 37; i++) MT_CHECK_NEAR(params[i], want[i], 2e-6);
            s++;
        }
        MT_CHECK(s == 3, "case %d has %d steps", n_cases, s);
        MT_CHECK(o.t == 3);
        mt_optimizer_free(&o);
        n_cases++;
    }
    MT_CHECK(n_cases == 6, "found %d cases", n_cases);
    mt_ctx_free(&ctx);
    cJSON_Delete(ref);
}

static void test_schedules(void) {
    mt_schedule s = {
        .kind = MT_SCHED_COSINE, .peak = 1.0, .min_lr = 0.0, .warmup = 10, .total = 110};
    MT_CHECK_NEAR(mt_schedule_lr(&s, 0), 0.1, 1e-12);
    MT_CHECK_NEAR(mt_schedule_lr(&s, 9), 1.0, 1e-12);
    MT_CHECK_NEAR(mt_schedule_lr(&s, 10), 1.0, 1e-12);
    MT_CHECK_NEAR(mt_schedule_lr(&s, 60), 0.5, 1e-12);
    MT_CHECK_NEAR(mt_schedule_lr(&s, 110), 0.0, 1e-12);
    MT_CHECK_NEAR(mt_schedule_lr(&s, 500), 0.0, 1e-12);
    s.kind = MT_SCHED_LINEAR, s.min_lr = 0.2;
    MT_CHECK_NEAR(mt_schedule_lr(&s, 60), 0.6, 1e-12);
    MT_CHECK_NEAR(mt_schedule_lr(&s, 110), 0.2, 1e-12);
    s.kind = MT_SCHED_CONSTANT;
    MT_CHECK_NEAR(mt_schedule_lr(&s, 4), 0.5, 1e-12);
    MT_CHECK_NEAR(mt_schedule_lr(&s, 100), 1.0, 1e-12);
    s.warmup = 0;
    MT_CHECK_NEAR(mt_schedule_lr(&s, 0), 1.0, 1e-12);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    MT_CHECK_OK(mt_file_write_atomic(p, text, strlen(text)));
}

static void save_step(const char *root, int64_t step, int keep, const char *payload) {
    char tmp[PATH_MAX];
    MT_CHECK_OK(mt_ckpt_begin(root, step, tmp, sizeof tmp));
    write_text(tmp, "model.safetensors", payload);
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "step", (double)step);
    MT_CHECK_OK(mt_ckpt_commit(root, step, tmp, s, keep));
    cJSON_Delete(s);
}

static void test_checkpoint_dirs(void) {
    char root[] = "/tmp/mt_ckpt_XXXXXX";
    MT_CHECK(mkdtemp(root) != NULL);
    char dir[PATH_MAX], p[PATH_MAX + 64];
    bool found = true;
    MT_CHECK_OK(mt_ckpt_latest(root, dir, sizeof dir, &found));
    MT_CHECK(!found, "no checkpoint yet");
    for (int s = 1; s <= 5; s++) save_step(root, s * 10, 2, s == 5 ? "last" : "older");
    MT_CHECK_OK(mt_ckpt_latest(root, dir, sizeof dir, &found));
    MT_CHECK(found && strstr(dir, "step_00000050"), "latest is %s", dir);
    snprintf(p, sizeof p, "%s/step_00000040", root);
    MT_CHECK(mt_path_exists(p), "keep 2 keeps step 40");
    snprintf(p, sizeof p, "%s/step_00000030", root);
    MT_CHECK(!mt_path_exists(p), "keep 2 removes step 30");
    snprintf(p, sizeof p, "%s/step_00000050.tmp", root);
    MT_CHECK(!mt_path_exists(p), "no temporary directory is left");

    cJSON *state = NULL;
    MT_CHECK_OK(mt_ckpt_open(dir, &state));
    MT_CHECK(state &&
             cJSON_GetObjectItem(cJSON_GetObjectItem(state, "files"), "model.safetensors"));
    cJSON_Delete(state);

    /* One changed byte is found and the file named. */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "r+");
    MT_CHECK(f != NULL);
    if (f) {
        fputc('L' ^ 1, f);
        fclose(f);
    }
    MT_CHECK_FAILS(mt_ckpt_open(dir, &state), MT_ERR_FORMAT, "model.safetensors",
                   "checksum mismatch");
    /* A missing file too. */
    unlink(p);
    MT_CHECK_FAILS(mt_ckpt_open(dir, &state), MT_ERR_IO, "model.safetensors");
    /* A stale .tmp from a crash is replaced by the next save of that step. */
    char tmp[PATH_MAX];
    MT_CHECK_OK(mt_ckpt_begin(root, 60, tmp, sizeof tmp));
    write_text(tmp, "partial", "x");
    save_step(root, 60, 2, "again");
    snprintf(p, sizeof p, "%s/step_00000060/partial", root);
    MT_CHECK(!mt_path_exists(p), "a stale temporary directory does not leak into a checkpoint");
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    MT_CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    MT_RUN(test_optimizers_match_torch);
    MT_RUN(test_schedules);
    MT_RUN(test_checkpoint_dirs);
    return mt_test_summary();
}
