/* Layers of src/nn against naive double-precision references: batch norm (training statistics,
 * PyTorch's running-stat update, backward, eval mode), instance norm (with central differences),
 * transposed conv, linear, and the conventions every layer
 * keeps: gradients accumulate, ready() reports each parameter once, plan mode touches nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "medtrain/nn.h"
#include "mt_test.h"

static mt_ctx ctx;

static double rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (1 << 24) * 2 - 1;
}

typedef struct ready_log {
    size_t off[8], n[8];
    int calls;
} ready_log;

static mt_status log_ready(void *user, size_t off, size_t n) {
    ready_log *r = user;
    if (r->calls < 8) r->off[r->calls] = off, r->n[r->calls] = n;
    r->calls++;
    return MT_OK;
}

/* An env over host arrays: params/grads of np floats, buffers of nb, stats of ns. */
typedef struct fixture {
    float params[4096], grads[4096], buffers[256], stats[256], small[512], host[512], one;
    mt_nn_env e;
    ready_log log;
} fixture;

static void fixture_init(fixture *f, bool train) {
    memset(f, 0, sizeof *f);
    f->one = 1.0f;
    f->e = (mt_nn_env){.ctx = &ctx,
                       .params = f->params,
                       .grads = f->grads,
                       .buffers = f->buffers,
                       .stats = f->stats,
                       .small = f->small,
                       .host = f->host,
                       .small_n = 512,
                       .one = &f->one,
                       .train = train,
                       .bn_momentum = 0.1f,
                       .bn_eps = 1e-5f,
                       .ready = log_ready,
                       .ready_user = &f->log};
}

enum { ROWS = 50, C = 6 };

static void test_batchnorm_train(void) {
    static fixture f;
    fixture_init(&f, true);
    mt_nn_bn l = {.c = C,
                  .weight = 10,
                  .bias = 20,
                  .running_mean = 0,
                  .running_var = C,
                  .num_batches = 2 * C,
                  .stats = 0};
    unsigned s = 1;
    float x[ROWS * C], y[ROWS * C], dy[ROWS * C], dx[ROWS * C];
    for (int i = 0; i < ROWS * C; i++) x[i] = (float)(3 + rnd(&s)), dy[i] = (float)rnd(&s);
    for (int c = 0; c < C; c++) {
        f.params[10 + c] = (float)(1 + 0.3 * rnd(&s)), f.params[20 + c] = (float)(0.2 * rnd(&s));
        f.buffers[c] = 0.5f, f.buffers[C + c] = 2.0f;
    }
    f.buffers[2 * C] = 7;
    mt_tensor tx = mt_tensor_4d(x, MT_F32, MT_CPU, 2, 5, 5, C);
    mt_tensor ty = mt_tensor_4d(y, MT_F32, MT_CPU, 2, 5, 5, C);
    mt_tensor tdy = mt_tensor_4d(dy, MT_F32, MT_CPU, 2, 5, 5, C);
    mt_tensor tdx = mt_tensor_4d(dx, MT_F32, MT_CPU, 2, 5, 5, C);
    MT_CHECK_OK(mt_nn_bn_fwd(&f.e, &l, &tx, &ty));
    MT_CHECK(l.count == ROWS);
    MT_CHECK_OK(mt_nn_bn_bwd(&f.e, &l, &tx, &tdy, &tdx));
    MT_CHECK_OK(mt_nn_bn_bwd(&f.e, &l, &tx, &tdy, &tdx)); /* gradients accumulate */
    for (int c = 0; c < C; c++) {
        double m = 0, v = 0, sdy = 0, sdyx = 0;
        for (int r = 0; r < ROWS; r++) m += x[r * C + c];
        m /= ROWS;
        for (int r = 0; r < ROWS; r++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
        v /= ROWS;
        double inv = 1 / sqrt(v + 1e-5), g = f.params[10 + c], b = f.params[20 + c];
        for (int r = 0; r < ROWS; r++) {
            double xh = (x[r * C + c] - m) * inv;
            MT_CHECK_NEAR(y[r * C + c], g * xh + b, 1e-5);
            sdy += dy[r * C + c], sdyx += dy[r * C + c] * xh;
        }
        for (int r = 0; r < ROWS; r++) {
            double xh = (x[r * C + c] - m) * inv;
            MT_CHECK_NEAR(dx[r * C + c], g * inv * (dy[r * C + c] - sdy / ROWS - xh * sdyx / ROWS),
                          1e-5);
        }
        MT_CHECK_NEAR(f.grads[20 + c], 2 * sdy, 1e-5);
        MT_CHECK_NEAR(f.grads[10 + c], 2 * sdyx, 1e-5);
        MT_CHECK_NEAR(f.buffers[c], 0.9 * 0.5 + 0.1 * m, 1e-6);
        MT_CHECK_NEAR(f.buffers[C + c], 0.9 * 2.0 + 0.1 * v * ROWS / (ROWS - 1), 1e-6);
    }
    MT_CHECK(f.buffers[2 * C] == 8, "num_batches_tracked %g", f.buffers[2 * C]);
    MT_CHECK(f.log.calls == 4 && f.log.off[0] == 20 && f.log.off[1] == 10 && f.log.n[0] == C);
    /* eval: the running statistics, nothing updated */
    f.e.train = false;
    float rm = f.buffers[0], rv = f.buffers[C];
    MT_CHECK_OK(mt_nn_bn_fwd(&f.e, &l, &tx, &ty));
    MT_CHECK_NEAR(y[0], (x[0] - rm) / sqrt(rv + 1e-5) * f.params[10] + f.params[20], 1e-5);
    MT_CHECK(f.buffers[2 * C] == 8 && f.buffers[0] == rm);
    /* one value per channel cannot be normalised in training */
    f.e.train = true;
    mt_tensor one_row = mt_tensor_2d(x, MT_F32, MT_CPU, 1, C);
    MT_CHECK_FAILS(mt_nn_bn_fwd(&f.e, &l, &one_row, &one_row), MT_ERR_SHAPE, "more than one value");
}

static void test_linear(void) {
    static fixture f;
    fixture_init(&f, true);
    enum { N = 3, IN = 5, OUT = 4 };
    mt_nn_linear l = {.in = IN, .out = OUT, .w = 0, .b = IN * OUT};
    unsigned s = 7;
    float x[N * IN], y[N * OUT], dy[N * OUT], dx[N * IN];
    for (int i = 0; i < N * IN; i++) x[i] = (float)rnd(&s);
    for (int i = 0; i < N * OUT; i++) dy[i] = (float)rnd(&s);
    for (int i = 0; i < IN * OUT + OUT; i++) f.params[i] = (float)rnd(&s);
    mt_tensor tx = mt_tensor_2d(x, MT_F32, MT_CPU, N, IN),
              ty = mt_tensor_2d(y, MT_F32, MT_CPU, N, OUT);
    mt_tensor tdy = mt_tensor_2d(dy, MT_F32, MT_CPU, N, OUT);
    mt_tensor tdx = mt_tensor_2d(dx, MT_F32, MT_CPU, N, IN);
    MT_CHECK_OK(mt_nn_linear_fwd(&f.e, &l, &tx, &ty));
    f.grads[0] = 1.0f; /* accumulates onto what is there */
    MT_CHECK_OK(mt_nn_linear_bwd(&f.e, &l, &tx, &tdy, &tdx));
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double v = f.params[IN * OUT + o];
            for (int i = 0; i < IN; i++) v += x[n * IN + i] * f.params[o * IN + i];
            MT_CHECK_NEAR(y[n * OUT + o], v, 1e-6);
        }
    for (int o = 0; o < OUT; o++) {
        double db = 0;
        for (int n = 0; n < N; n++) db += dy[n * OUT + o];
        MT_CHECK_NEAR(f.grads[IN * OUT + o], db, 1e-6);
        for (int i = 0; i < IN; i++) {
            double dw = o == 0 && i == 0 ? 1.0 : 0.0;
            for (int n = 0; n < N; n++) dw += dy[n * OUT + o] * x[n * IN + i];
            MT_CHECK_NEAR(f.grads[o * IN + i], dw, 1e-6);
        }
    }
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IN; i++) {
            double v = 0;
            for (int o = 0; o < OUT; o++) v += dy[n * OUT + o] * f.params[o * IN + i];
            MT_CHECK_NEAR(dx[n * IN + i], v, 1e-6);
        }
    MT_CHECK(f.log.calls == 2 && f.log.off[0] == 0 && f.log.n[0] == IN * OUT &&
             f.log.off[1] == IN * OUT && f.log.n[1] == OUT);
}

/* Plan mode: no memory is touched (there is none) and ready is never called. */
static void test_plan_mode(void) {
    static fixture f;
    fixture_init(&f, true);
    f.e.plan = true;
    f.e.params = f.e.grads = f.e.buffers = f.e.stats = NULL;
    mt_tensor x = mt_tensor_4d(NULL, MT_F32, MT_CPU, 2, 8, 8, 4);
    mt_tensor y = mt_tensor_4d(NULL, MT_F32, MT_CPU, 2, 8, 8, 4);
    mt_nn_bn bn = {.c = 4};
    mt_nn_conv conv = {.c = 4,
                       .k = 4,
                       .r = 3,
                       .s = 3,
                       .b = -1,
                       .geo = {.stride_h = 1,
                               .stride_w = 1,
                               .pad_h = 1,
                               .pad_w = 1,
                               .dil_h = 1,
                               .dil_w = 1,
                               .groups = 1}};
    MT_CHECK_OK(mt_nn_conv_fwd(&f.e, &conv, &x, &y));
    MT_CHECK_OK(mt_nn_conv_bwd(&f.e, &conv, &x, &y, &x));
    MT_CHECK_OK(mt_nn_bn_fwd(&f.e, &bn, &x, &y));
    MT_CHECK_OK(mt_nn_bn_bwd(&f.e, &bn, &x, &y, &y));
    MT_CHECK_OK(mt_nn_relu_fwd(&f.e, &x, &x));
    MT_CHECK(f.log.calls == 0);
    int64_t p, q;
    mt_nn_conv_out(&conv, 8, 8, &p, &q);
    MT_CHECK(p == 8 && q == 8);
    conv.geo.stride_h = conv.geo.stride_w = 2;
    mt_nn_conv_out(&conv, 7, 8, &p, &q);
    MT_CHECK(p == 4 && q == 4);
}

/* ReLU's backward from the output, in place: what an in-place ReLU keeps is enough. */
static void test_relu_from_output(void) {
    static fixture f;
    fixture_init(&f, true);
    float v[6] = {-1, 2, 0, 3, -0.5f, 1}, g[6] = {1, 1, 1, 1, 1, 1};
    mt_tensor t = mt_tensor_1d(v, MT_F32, MT_CPU, 6), dt = mt_tensor_1d(g, MT_F32, MT_CPU, 6);
    MT_CHECK_OK(mt_nn_relu_fwd(&f.e, &t, &t));
    MT_CHECK_OK(mt_nn_relu_bwd(&f.e, &t, &dt, &dt));
    float want[6] = {0, 1, 0, 1, 0, 1};
    MT_CHECK(!memcmp(g, want, sizeof want));
}

/* Instance norm: each image's own statistics (train and eval alike), gamma/beta shared; the
 * backward against central differences of sum(dy * y) in double; gradients accumulate. */
enum { IN_N = 3, IN_H = 4, IN_W = 5, IN_C = 4, IN_E = IN_N * IN_H * IN_W * IN_C };

static double in_objective(fixture *f, const mt_nn_in *l, const float *x, const float *dy) {
    float y[IN_E], st[IN_N * 2 * IN_C];
    mt_tensor tx = mt_tensor_4d((float *)x, MT_F32, MT_CPU, IN_N, IN_H, IN_W, IN_C);
    mt_tensor ty = mt_tensor_4d(y, MT_F32, MT_CPU, IN_N, IN_H, IN_W, IN_C);
    mt_tensor ts = mt_tensor_2d(st, MT_F32, MT_CPU, IN_N, 2 * IN_C);
    if (mt_nn_in_fwd(&f->e, l, &tx, &ts, &ty) != MT_OK) return NAN;
    double o = 0;
    for (int i = 0; i < IN_E; i++) o += (double)dy[i] * y[i];
    return o;
}

static void test_instance_norm(void) {
    static fixture f;
    fixture_init(&f, true);
    mt_nn_in l = {.c = IN_C, .weight = 0, .bias = IN_C};
    unsigned s = 7;
    static float x[IN_E], y[IN_E], dy[IN_E], dx[IN_E], st[IN_N * 2 * IN_C];
    for (int i = 0; i < IN_E; i++)
        x[i] = (float)(2 + rnd(&s) * (1 + i % 3)), dy[i] = (float)rnd(&s);
    for (int c = 0; c < IN_C; c++)
        f.params[c] = (float)(1 + 0.3 * rnd(&s)), f.params[IN_C + c] = (float)(0.2 * rnd(&s));
    mt_tensor tx = mt_tensor_4d(x, MT_F32, MT_CPU, IN_N, IN_H, IN_W, IN_C);
    mt_tensor ty = mt_tensor_4d(y, MT_F32, MT_CPU, IN_N, IN_H, IN_W, IN_C);
    mt_tensor tdy = mt_tensor_4d(dy, MT_F32, MT_CPU, IN_N, IN_H, IN_W, IN_C);
    mt_tensor tdx = mt_tensor_4d(dx, MT_F32, MT_CPU, IN_N, IN_H, IN_W, IN_C);
    mt_tensor ts = mt_tensor_2d(st, MT_F32, MT_CPU, IN_N, 2 * IN_C);
    MT_CHECK_OK(mt_nn_in_fwd(&f.e, &l, &tx, &ts, &ty));
    const int P = IN_H * IN_W;
    for (int n = 0; n < IN_N; n++)
        for (int c = 0; c < IN_C; c++) {
            double m = 0, v = 0;
            for (int p = 0; p < P; p++) m += x[(n * P + p) * IN_C + c];
            m /= P;
            for (int p = 0; p < P; p++) {
                double d = x[(n * P + p) * IN_C + c] - m;
                v += d * d;
            }
            v /= P;
            MT_CHECK_NEAR(st[n * 2 * IN_C + c], m, 1e-5);
            MT_CHECK_NEAR(st[n * 2 * IN_C + IN_C + c], v, 1e-5);
            for (int p = 0; p < P; p++) {
                double xh = (x[(n * P + p) * IN_C + c] - m) / sqrt(v + 1e-5);
                MT_CHECK_NEAR(y[(n * P + p) * IN_C + c], f.params[c] * xh + f.params[IN_C + c],
                              1e-5);
            }
        }
    /* eval mode gives the same output: the statistics are the image's own */
    float y2[IN_E];
    mt_tensor ty2 = mt_tensor_4d(y2, MT_F32, MT_CPU, IN_N, IN_H, IN_W, IN_C);
    f.e.train = false;
    MT_CHECK_OK(mt_nn_in_fwd(&f.e, &l, &tx, &ts, &ty2));
    MT_CHECK(!memcmp(y, y2, sizeof y2), "eval-mode instance norm differs from training mode");
    f.e.train = true;
    /* recompute from the kept statistics, with ReLU */
    MT_CHECK_OK(mt_nn_in_apply(&f.e, &l, &tx, &ts, true, &ty2));
    for (int i = 0; i < IN_E; i++) MT_CHECK_NEAR(y2[i], y[i] > 0 ? y[i] : 0, 1e-6);
    MT_CHECK_OK(mt_nn_in_fwd(&f.e, &l, &tx, &ts, &ty));
    MT_CHECK_OK(mt_nn_in_bwd(&f.e, &l, &tx, &ts, &tdy, &tdx));
    MT_CHECK(f.log.calls == 2 && f.log.off[0] == IN_C && f.log.off[1] == 0 && f.log.n[0] == IN_C,
             "ready calls %d", f.log.calls);
    /* dx, dgamma, dbeta against central differences of sum(dy * y) */
    const double h = 1e-2;
    for (int i = 0; i < IN_E; i += 7) {
        float keep = x[i];
        x[i] = (float)(keep + h);
        double up = in_objective(&f, &l, x, dy);
        x[i] = (float)(keep - h);
        double dn = in_objective(&f, &l, x, dy);
        x[i] = keep;
        double fd = (up - dn) / (2 * h);
        MT_CHECK(fabs(dx[i] - fd) <= 2e-3 * fmax(1, fabs(fd)), "dx[%d] %g, differences %g", i,
                 dx[i], fd);
    }
    for (int j = 0; j < 2 * IN_C; j++) {
        float keep = f.params[j];
        f.params[j] = (float)(keep + h);
        double up = in_objective(&f, &l, x, dy);
        f.params[j] = (float)(keep - h);
        double dn = in_objective(&f, &l, x, dy);
        f.params[j] = keep;
        double fd = (up - dn) / (2 * h);
        MT_CHECK(fabs(f.grads[j] - fd) <= 2e-3 * fmax(1, fabs(fd)), "%s[%d] %g, differences %g",
                 j < IN_C ? "dgamma" : "dbeta", j % IN_C, f.grads[j], fd);
    }
    /* accumulates */
    float g0 = f.grads[0];
    MT_CHECK_OK(mt_nn_in_bwd(&f.e, &l, &tx, &ts, &tdy, &tdx));
    MT_CHECK_NEAR(f.grads[0], 2 * g0, 1e-5);
    /* one pixel per image cannot be normalised in training; wrong shapes are named */
    mt_tensor px = mt_tensor_4d(x, MT_F32, MT_CPU, IN_N, 1, 1, IN_C);
    mt_tensor ps = mt_tensor_2d(st, MT_F32, MT_CPU, IN_N, 2 * IN_C);
    MT_CHECK_FAILS(mt_nn_in_fwd(&f.e, &l, &px, &ps, &px), MT_ERR_SHAPE,
                   "more than one spatial element");
    mt_tensor bad = mt_tensor_2d(st, MT_F32, MT_CPU, IN_N, IN_C);
    MT_CHECK_FAILS(mt_nn_in_fwd(&f.e, &l, &tx, &bad, &ty), MT_ERR_SHAPE, "stats");
}

/* Transposed conv layer: output size as PyTorch's, ready reports bias and weight. */
static void test_convt_layer(void) {
    static fixture f;
    fixture_init(&f, true);
    mt_nn_convt l = {.c = 2,
                     .k = 3,
                     .r = 2,
                     .s = 2,
                     .geo = {.stride_h = 2, .stride_w = 2, .dil_h = 1, .dil_w = 1, .groups = 1},
                     .w = 0,
                     .b = 2 * 2 * 2 * 3};
    int64_t p, q;
    mt_nn_convt_out(&l, 5, 7, &p, &q);
    MT_CHECK(p == 10 && q == 14, "%lldx%lld", (long long)p, (long long)q);
    unsigned s = 3;
    for (int i = 0; i < 27; i++) f.params[i] = (float)rnd(&s);
    float x[1 * 2 * 3 * 2], y[1 * 4 * 6 * 3], dy[1 * 4 * 6 * 3], dx[1 * 2 * 3 * 2];
    for (int i = 0; i < 12; i++) x[i] = (float)rnd(&s);
    for (int i = 0; i < 72; i++) dy[i] = (float)rnd(&s);
    mt_tensor tx = mt_tensor_4d(x, MT_F32, MT_CPU, 1, 2, 3, 2);
    mt_tensor ty = mt_tensor_4d(y, MT_F32, MT_CPU, 1, 4, 6, 3);
    mt_tensor tdy = mt_tensor_4d(dy, MT_F32, MT_CPU, 1, 4, 6, 3);
    mt_tensor tdx = mt_tensor_4d(dx, MT_F32, MT_CPU, 1, 2, 3, 2);
    MT_CHECK_OK(mt_nn_convt_fwd(&f.e, &l, &tx, &ty));
    /* kernel 2 stride 2: each output pixel has exactly one input pixel and tap */
    for (int oh = 0; oh < 4; oh++)
        for (int ow = 0; ow < 6; ow++)
            for (int k = 0; k < 3; k++) {
                double v = f.params[24 + k];
                for (int c = 0; c < 2; c++)
                    v += x[((oh / 2) * 3 + ow / 2) * 2 + c] *
                         f.params[((c * 2 + oh % 2) * 2 + ow % 2) * 3 + k];
                MT_CHECK_NEAR(y[(oh * 6 + ow) * 3 + k], v, 1e-5);
            }
    MT_CHECK_OK(mt_nn_convt_bwd(&f.e, &l, &tx, &tdy, &tdx));
    MT_CHECK(f.log.calls == 2 && f.log.off[0] == 24 && f.log.n[0] == 3 && f.log.off[1] == 0 &&
                 f.log.n[1] == 24,
             "ready calls %d", f.log.calls);
    for (int k = 0; k < 3; k++) {
        double sdy = 0;
        for (int i = 0; i < 24; i++) sdy += dy[i * 3 + k];
        MT_CHECK_NEAR(f.grads[24 + k], sdy, 1e-5);
    }
}

int main(void) {
    if (mt_ctx_init(&ctx, MT_CPU, 0, 1) != MT_OK) return 1;
    MT_RUN(test_batchnorm_train);
    MT_RUN(test_linear);
    MT_RUN(test_plan_mode);
    MT_RUN(test_relu_from_output);
    MT_RUN(test_instance_norm);
    MT_RUN(test_convt_layer);
    mt_ctx_free(&ctx);
    return mt_test_summary();
}
