/* See model_fill.h; must stay in step with fill() and inputs() of the oracle script. */
#include "model_fill.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include "medtrain/mem.h"

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double fill_u01(uint64_t p, uint64_t i) {
    uint64_t base = p * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    return (double)(mix64(base + i) >> 40) * 0x1p-24;
}

static const char *leaf(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* A norm's shift (BatchNorm2d, InstanceNorm2d): every 1-D bias but a classifier head's or a
 * U-Net convolution's (dec.{k}.up, head), which sit around 0 (the oracle's is_norm_bias). */
static bool is_norm_bias(const char *name) {
    static const char *const conv[] = {"fc.", "classifier.", "head."};
    for (size_t k = 0; k < sizeof conv / sizeof *conv; k++)
        if (!strncmp(name, conv[k], strlen(conv[k]))) return false;
    size_t n = strlen(name), up = strlen(".up.bias");
    return n < up || strcmp(name + n - up, ".up.bias") != 0;
}

/* Norms (batch and instance) share the formulas; a 4-D weight is a convolution's, transposed
 * ones included: (Cin, Cout, R, S) in the file, shape[1] * R * S is PyTorch's fan_in for both. */
static float value(const mt_param *p, int index, int64_t i) {
    double u = fill_u01((uint64_t)index, (uint64_t)i);
    const char *l = leaf(p->name);
    if (!strcmp(l, "num_batches_tracked")) return 3.0f;
    if (!strcmp(l, "running_mean")) return (float)(0.1 * (2 * u - 1));
    if (!strcmp(l, "running_var")) return (float)(0.6 + 0.8 * u);
    if (!strcmp(l, "bias") && p->ndim == 1 && is_norm_bias(p->name))
        return (float)(FILL_BN_BIAS + 0.2 * (2 * u - 1));
    if (!strcmp(l, "bias")) return (float)(0.2 * (2 * u - 1));
    if (p->ndim == 4)
        return (float)((2 * u - 1) * sqrt(6.0 / (double)(p->shape[1] * p->shape[2] * p->shape[3])));
    if (p->ndim == 2) return (float)((2 * u - 1) / sqrt((double)p->shape[1]));
    return (float)(0.75 + 0.5 * u);
}

mt_status fill_model(mt_model *m) {
    mt_params *ps = mt_model_params(m);
    for (int k = 0; k < ps->n; k++) {
        const mt_param *p = &ps->p[k];
        float *v = mt_alloc((size_t)p->numel * sizeof *v, "fill");
        if (!v) return MT_ERR_NOMEM;
        for (int64_t i = 0; i < p->numel; i++) v[i] = value(p, k, i);
        mt_status s = mt_model_param_set(m, k, v);
        mt_free(v);
        MT_TRY(s);
    }
    return MT_OK;
}

void fill_input(float *x, int n, int c, int h, int w) {
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int z = 0; z < w; z++) {
                    uint64_t nchw = (((uint64_t)b * c + ch) * h + y) * w + z;
                    float u = (float)fill_u01(FILL_X_STREAM, nchw);
                    x[(((size_t)b * h + y) * w + z) * c + ch] = u * 2 - 1;
                }
}

void fill_targets(float *y, float *pos_weight, int n, int l) {
    for (int i = 0; i < n * l; i++) {
        double u = fill_u01(FILL_TARGET_STREAM, (uint64_t)i);
        y[i] = u < 0.25 ? NAN : u < 0.6 ? 1.0f : 0.0f;
    }
    for (int j = 0; j < l; j++)
        pos_weight[j] = (float)(0.5 + 1.5 * fill_u01(FILL_POS_WEIGHT_STREAM, (uint64_t)j));
}

void fill_classes(int32_t *t, int64_t n, int classes) {
    for (int64_t i = 0; i < n; i++)
        t[i] = (int32_t)(fill_u01(FILL_CLASS_STREAM, (uint64_t)i) * classes);
}
