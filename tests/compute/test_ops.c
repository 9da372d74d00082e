/* The op test: every op in the registry, on every available backend.
 *
 * Each case is written once, as a call (an op_fn) plus host inputs and a double-precision reference
 * computed here by the most naive loop that can be trusted. run_case() copies the inputs to each
 * backend's device with mt_tensor_copy, runs the call, copies the outputs back, compares them with
 * the reference, and compares every non-CPU backend with the CPU result. Ops with a backward are
 * also checked by central differences of the forward op (fd_check). Then come bad arguments, the
 * BCE NaN-target rules, thread-count determinism, tensor helpers and the f16/bf16 conversions, and
 * last a census that fails when an op in the registry ran no cases (a test that passes on nothing
 * is a defect).
 *
 * Tolerances: a value passes when |got - ref| <= tol * max(mag, floor), where mag is |ref| or, for
 * ops whose result is a sum that may cancel (gemm, axpy, reductions, softmax backward), the sum of
 * the magnitudes of its terms; floor is 1 unless the output has a natural smaller scale. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "compute/backend.h"
#include "medtrain/ops.h"
#include "medtrain/rng.h"
#include "medtrain/timer.h"
#include "mt_test.h"

#define MAX_IO   8
#define MAX_OPS  64
#define F32_TOL  1e-5 /* f32 forward ops against the double reference, and backend vs backend */
#define GRAD_TOL 1e-4 /* backward ops against the double reference */
#define FD_TOL   1e-2 /* central differences against <grad, v> */
#define PI       3.14159265358979323846

/* ---- randomness: splitmix64, seeded per test so tests do not depend on each other's draws ---- */

static uint64_t rng_state;

static void rng_seed(uint64_t s) {
    rng_state = s * 0x9e3779b97f4a7c15ull + 1;
}

static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unif(void) {
    return (double)(rng_u64() >> 11) * 0x1p-53;
}
static float rng_range(double lo, double hi) {
    return (float)(lo + (hi - lo) * rng_unif());
}
static int64_t rng_int(int64_t lo, int64_t hi) {
    return lo + (int64_t)(rng_u64() % (uint64_t)(hi - lo + 1));
}

static float rng_normal(void) {
    double u = rng_unif(), v = rng_unif();
    return (float)(sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v));
}

/* ---- backends and host memory ---------------------------------------------------------------- */

static mt_ctx g_ctx[MT_DEVICE_COUNT];
static bool g_have[MT_DEVICE_COUNT];
static mt_arena g_mem; /* host tensors and reference arrays of the running test */

/* Per registry op: cases checked on the CPU, cases compared across backends, gradient checks by
 * finite differences, and cases a non-CPU backend skipped because it lacks the op. */
static int g_cases[MAX_OPS], g_cross[MAX_OPS], g_fd[MAX_OPS], g_skips[MAX_OPS];

static int op_index(const char *name) {
    for (int i = 0; i < mt_op_count(); i++)
        if (strcmp(mt_op_name(i), name) == 0) return i;
    mt_test_check_failed(__FILE__, __LINE__, "op '%s' is not in the registry", name);
    return -1;
}

static void *test_alloc(size_t bytes) {
    void *p = mt_arena_alloc(&g_mem, bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "test arena: %s\n", mt_error_message());
        abort();
    }
    return p;
}

/* A host tensor, filled with 0xff bytes (NaN as f32) so that an output an op forgets to write
 * shows up in the comparison. */
static mt_tensor H(mt_dtype dt, int ndim, const int64_t *shape) {
    mt_tensor t = mt_tensor_view(NULL, dt, MT_CPU, ndim, shape);
    t.data = test_alloc(mt_tensor_bytes(&t));
    memset(t.data, 0xff, mt_tensor_bytes(&t));
    return t;
}
#define NDIMS(...)  ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define HT(dt, ...) H(dt, NDIMS(__VA_ARGS__), (int64_t[]){__VA_ARGS__})

static mt_tensor H_like(const mt_tensor *t) {
    return H(t->dtype, t->ndim, t->shape);
}
static double *DBL(int64_t n) {
    return test_alloc((size_t)n * sizeof(double));
}
static float *F(const mt_tensor *t) {
    return t->data;
}
static int32_t *I32(const mt_tensor *t) {
    return t->data;
}
static int64_t N(const mt_tensor *t) {
    return mt_tensor_numel(t);
}
static int64_t last_dim(const mt_tensor *t) {
    return t->shape[t->ndim - 1];
}

static void fill_uniform(mt_tensor *t, double lo, double hi) {
    for (int64_t i = 0; i < N(t); i++) F(t)[i] = rng_range(lo, hi);
}

static void fill_normal(mt_tensor *t, double scale) {
    for (int64_t i = 0; i < N(t); i++) F(t)[i] = (float)(scale * rng_normal());
}

static const char *desc(const mt_tensor *t, char *buf) {
    return mt_tensor_describe(t, buf, 96);
}

/* A value of a host tensor as double (f32, bf16, f16, integer dtypes). */
static double get(const mt_tensor *t, int64_t i) {
    switch (t->dtype) {
    case MT_F32:
        return ((const float *)t->data)[i];
    case MT_BF16:
        return mt_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case MT_F16:
        return mt_f16_to_f32(((const uint16_t *)t->data)[i]);
    case MT_U8:
        return ((const uint8_t *)t->data)[i];
    case MT_U16:
        return ((const uint16_t *)t->data)[i];
    case MT_I32:
        return ((const int32_t *)t->data)[i];
    case MT_I64:
        return (double)((const int64_t *)t->data)[i];
    default:
        return NAN;
    }
}

/* ---- running one case on every backend ------------------------------------------------------- */

/* A case's tensors, on the host. Outputs hold their initial contents (beta * C, += targets). */
typedef struct io {
    int nin, nout;
    mt_tensor in[MAX_IO], out[MAX_IO];
} io;

/* Runs one op (or a short sequence) on ctx with tensors already on ctx's device. */
typedef mt_status (*op_fn)(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out);

/* What an output should be: val (NULL = only compared across backends), mag (NULL = |val|). */
typedef struct expect {
    const double *val, *mag;
    double tol, floor;
} expect;

static bool close_enough(double got, double ref, double mag, double tol, double floor) {
    if (isnan(ref)) return isnan(got);
    if (isinf(ref)) return got == ref;
    if (tol == 0 && got == ref) return signbit(got) == signbit(ref); /* exact: -0 is not +0 */
    return fabs(got - ref) <= tol * fmax(mag, floor);
}

/* Compares a host output with expected values; reports the first few mismatches. */
static void compare(const char *what, const mt_tensor *got, const double *ref, const double *mag,
                    double tol, double floor) {
    int64_t bad = 0, n = N(got);
    for (int64_t i = 0; i < n; i++) {
        double g = get(got, i), m = mag ? mag[i] : fabs(ref[i]);
        if (close_enough(g, ref[i], m, tol, floor)) continue;
        if (++bad <= 3)
            mt_test_check_failed(__FILE__, __LINE__,
                                 "%s: [%" PRId64 "] = %.9g, expected %.9g (tol %g x %g)", what, i,
                                 g, ref[i], tol, fmax(m, floor));
    }
    if (bad > 3)
        mt_test_check_failed(__FILE__, __LINE__, "%s: %" PRId64 " of %" PRId64 " values differ",
                             what, bad, n);
}

static void free_all(mt_ctx *ctx, mt_tensor *t, int n) {
    for (int i = 0; i < n; i++) mt_tensor_free(ctx, &t[i]);
}

/* Copies c's tensors to ctx's device, calls fn and copies the outputs back into res (host). */
static mt_status run_on(mt_ctx *ctx, op_fn fn, const void *p, const io *c, mt_tensor *res) {
    mt_tensor din[MAX_IO] = {0}, dout[MAX_IO] = {0};
    mt_status s = MT_OK;
    for (int i = 0; i < c->nin && s == MT_OK; i++) {
        s = mt_tensor_alloc(ctx, &din[i], c->in[i].dtype, c->in[i].ndim, c->in[i].shape);
        if (s == MT_OK) s = mt_tensor_copy(ctx, &din[i], &c->in[i]);
    }
    for (int i = 0; i < c->nout && s == MT_OK; i++) {
        s = mt_tensor_alloc(ctx, &dout[i], c->out[i].dtype, c->out[i].ndim, c->out[i].shape);
        if (s == MT_OK) s = mt_tensor_copy(ctx, &dout[i], &c->out[i]);
    }
    if (s == MT_OK) s = fn(ctx, p, din, dout);
    if (s == MT_OK) s = mt_ctx_sync(ctx);
    for (int i = 0; i < c->nout && s == MT_OK; i++) {
        res[i] = H_like(&c->out[i]);
        s = mt_tensor_copy(ctx, &res[i], &dout[i]);
    }
    free_all(ctx, din, c->nin);
    free_all(ctx, dout, c->nout);
    return s;
}

/* Runs a case on every backend: outputs against ex (one per output) and non-CPU backends against
 * the CPU. The CPU outputs go to cpu_res when it is not NULL. */
static void run_case(const char *op, const char *label, op_fn fn, const void *p, const io *c,
                     const expect *ex, mt_tensor *cpu_res) {
    int oi = op_index(op);
    if (oi < 0) return;
    mt_tensor cpu[MAX_IO];
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        if (!g_have[d]) continue;
        mt_tensor res[MAX_IO];
        char what[256];
        mt_status s = run_on(&g_ctx[d], fn, p, c, res);
        if (s == MT_ERR_UNSUPPORTED && d != MT_CPU && !mt_op_supported((mt_device)d, oi)) {
            g_skips[oi]++;
            continue;
        }
        if (s != MT_OK) {
            mt_test_check_failed(__FILE__, __LINE__, "%s (%s) on %s failed (%s): %s", op, label,
                                 mt_device_name((mt_device)d), mt_status_name(s),
                                 mt_error_message());
            if (d == MT_CPU) return;
            continue;
        }
        for (int o = 0; o < c->nout; o++) {
            snprintf(what, sizeof what, "%s (%s) on %s, output %d", op, label,
                     mt_device_name((mt_device)d), o);
            if (ex[o].val) compare(what, &res[o], ex[o].val, ex[o].mag, ex[o].tol, ex[o].floor);
            if (d == MT_CPU) continue;
            /* Against the CPU: non-f32 outputs (casts) exactly, NaN matching any NaN; f32 within
             * the case's tolerance, at least F32_TOL. */
            double *cv = DBL(N(&cpu[o]));
            for (int64_t i = 0; i < N(&cpu[o]); i++) cv[i] = get(&cpu[o], i);
            bool exact = c->out[o].dtype != MT_F32;
            snprintf(what, sizeof what, "%s (%s): %s vs cpu, output %d", op, label,
                     mt_device_name((mt_device)d), o);
            compare(what, &res[o], cv, ex[o].mag, exact ? 0.0 : fmax(ex[o].tol, F32_TOL),
                    ex[o].floor);
        }
        if (d == MT_CPU) {
            memcpy(cpu, res, sizeof res);
            g_cases[oi]++;
        } else {
            g_cross[oi]++;
        }
    }
    if (cpu_res)
        for (int o = 0; o < c->nout; o++) cpu_res[o] = cpu[o];
}

/* ---- finite differences ---------------------------------------------------------------------- */

/* L = sum_i w_i f_i over output 0 of fwd; *abs_sum = sum_i |w_i f_i|, for the rounding floor. */
static bool eval_loss(mt_ctx *ctx, op_fn fwd, const void *p, const io *c, const float *w, double *L,
                      double *abs_sum) {
    mt_tensor res[MAX_IO];
    mt_status s = run_on(ctx, fwd, p, c, res);
    if (s == MT_ERR_UNSUPPORTED && ctx->device != MT_CPU) return false; /* listed by the census */
    if (s != MT_OK) {
        mt_test_check_failed(__FILE__, __LINE__, "finite differences: forward failed: %s",
                             mt_error_message());
        return false;
    }
    *L = *abs_sum = 0.0;
    for (int64_t i = 0; i < N(&res[0]); i++) {
        *L += (double)w[i] * F(&res[0])[i];
        *abs_sum += fabs((double)w[i] * F(&res[0])[i]);
    }
    return true;
}

/* Checks grad (the backward's result for input `wrt` of fwd, given output weights w) against a
 * central difference of the f32 forward along a random direction v:
 *     L(x + eps v) - L(x - eps v)  vs  <grad, (x + eps v) - (x - eps v)>
 * using the perturbation as actually stored in f32. Counted for op (the backward's name). */
static void fd_check(mt_ctx *ctx, const char *op, const char *label, op_fn fwd, const void *p,
                     const io *c, int wrt, const float *w, const mt_tensor *grad, double eps) {
    io plus = *c, minus = *c;
    const mt_tensor *x = &c->in[wrt];
    plus.in[wrt] = H_like(x);
    minus.in[wrt] = H_like(x);
    double dot = 0.0, dot_abs = 0.0;
    for (int64_t i = 0; i < N(x); i++) {
        float v = rng_range(-1.0, 1.0);
        F(&plus.in[wrt])[i] = F(x)[i] + (float)eps * v;
        F(&minus.in[wrt])[i] = F(x)[i] - (float)eps * v;
        double step = (double)F(&plus.in[wrt])[i] - F(&minus.in[wrt])[i];
        dot += F(grad)[i] * step;
        dot_abs += fabs(F(grad)[i] * step);
    }
    double lp, lm, ap, am;
    if (!eval_loss(ctx, fwd, p, &plus, w, &lp, &ap) || !eval_loss(ctx, fwd, p, &minus, w, &lm, &am))
        return;
    /* Relative to the directional derivative (or a tenth of its terms' magnitude when they
     * cancel), plus the f32 rounding of the two forward results. */
    double allowed = FD_TOL * fmax(fabs(dot), 0.1 * dot_abs) + 20 * FLT_EPSILON * (ap + am);
    if (!(fabs((lp - lm) - dot) <= allowed))
        mt_test_check_failed(
            __FILE__, __LINE__,
            "%s (%s) on %s: finite difference %.9g vs <grad, step> %.9g (allowed %.3g)", op, label,
            mt_device_name(ctx->device), lp - lm, dot, allowed);
    if (ctx->device == MT_CPU) {
        int oi = op_index(op);
        if (oi >= 0) g_fd[oi]++;
    }
}

/* Runs a backward call on ctx and returns its output 0 on the host (or false). */
static bool grad_on(mt_ctx *ctx, op_fn bwd, const void *p, const io *c, mt_tensor *grad) {
    mt_tensor res[MAX_IO];
    mt_status s = run_on(ctx, bwd, p, c, res);
    if (s == MT_ERR_UNSUPPORTED && ctx->device != MT_CPU) return false;
    if (s != MT_OK) {
        mt_test_check_failed(__FILE__, __LINE__, "backward on %s failed: %s",
                             mt_device_name(ctx->device), mt_error_message());
        return false;
    }
    *grad = res[0];
    return true;
}

/* ==== gemm ==================================================================================== */

typedef struct gemm_p {
    bool ta, tb;
    float alpha, beta;
} gemm_p;

static mt_status call_gemm(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const gemm_p *g = p;
    return mt_gemm(ctx, g->ta, g->tb, g->alpha, &in[0], &in[1], g->beta, &out[0]);
}

static int64_t rows_of(const mt_tensor *t) {
    return t->shape[t->ndim - 2];
}
static int64_t cols_of(const mt_tensor *t) {
    return t->shape[t->ndim - 1];
}
static int64_t batch_of(const mt_tensor *t) {
    return t->ndim == 3 ? t->shape[0] : 1;
}

/* C = alpha op(A) op(B) + beta C0 in double, and mag, the magnitude of the terms. beta 0 ignores
 * C0. */
static void gemm_ref(const gemm_p *g, const mt_tensor *a, const mt_tensor *b, const mt_tensor *c0,
                     double *out, double *mag) {
    int64_t batch = batch_of(c0), m = rows_of(c0), n = cols_of(c0);
    int64_t k = g->ta ? rows_of(a) : cols_of(a), lda = cols_of(a), ldb = cols_of(b);
    for (int64_t bi = 0; bi < batch; bi++) {
        const float *A = F(a) + (batch_of(a) == 1 ? 0 : bi * rows_of(a) * lda);
        const float *B = F(b) + (batch_of(b) == 1 ? 0 : bi * rows_of(b) * ldb);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0, sm = 0;
                for (int64_t q = 0; q < k; q++) {
                    double av = g->ta ? A[q * lda + i] : A[i * lda + q];
                    double bv = g->tb ? B[j * ldb + q] : B[q * ldb + j];
                    s += av * bv;
                    sm += fabs(av * bv);
                }
                int64_t o = (bi * m + i) * n + j;
                double cterm = g->beta == 0 ? 0.0 : (double)g->beta * F(c0)[o];
                out[o] = g->alpha * s + cterm;
                mag[o] = fabs(g->alpha) * sm + fabs(cterm);
            }
    }
}

/* One gemm case. a_batch/b_batch: 0 = a 2-D operand, else the batch of a 3-D one; c_batch 0 = a
 * 2-D C. beta 0 fills C with NaN, which must not leak into the result. */
static void gemm_case(int64_t c_batch, int64_t a_batch, int64_t b_batch, int64_t m, int64_t n,
                      int64_t k, bool ta, bool tb, float alpha, float beta) {
    gemm_p g = {ta, tb, alpha, beta};
    io c = {.nin = 2, .nout = 1};
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    c.in[0] = a_batch ? HT(MT_F32, a_batch, ar, ac) : HT(MT_F32, ar, ac);
    c.in[1] = b_batch ? HT(MT_F32, b_batch, br, bc) : HT(MT_F32, br, bc);
    c.out[0] = c_batch ? HT(MT_F32, c_batch, m, n) : HT(MT_F32, m, n);
    fill_uniform(&c.in[0], -1, 1);
    fill_uniform(&c.in[1], -1, 1);
    if (beta == 0)
        for (int64_t i = 0; i < N(&c.out[0]); i++) F(&c.out[0])[i] = NAN;
    else
        fill_uniform(&c.out[0], -1, 1);
    double *val = DBL(N(&c.out[0])), *mag = DBL(N(&c.out[0]));
    gemm_ref(&g, &c.in[0], &c.in[1], &c.out[0], val, mag);
    char label[160], da[96], db[96], dc[96];
    snprintf(label, sizeof label, "A %s%s, B %s%s, C %s, alpha %g, beta %g", desc(&c.in[0], da),
             ta ? "^T" : "", desc(&c.in[1], db), tb ? "^T" : "", desc(&c.out[0], dc), alpha, beta);
    run_case("gemm", label, call_gemm, &g, &c, (expect[]){{val, mag, F32_TOL, 1.0}}, NULL);
}

static void test_gemm(void) {
    rng_seed(1);
    static const int64_t mnk[][3] = {{1, 1, 1},    {1, 7, 5}, {3, 4, 5}, {17, 13, 9},
                                     {64, 33, 70}, {5, 1, 8}, {2, 3, 1}, {31, 65, 129}};
    static const float ab[][2] = {{1, 0}, {0.5f, -1.5f}, {2, 1}, {-1, 0.25f}};
    int i = 0;
    for (size_t s = 0; s < sizeof mnk / sizeof mnk[0]; s++)
        for (int t = 0; t < 4; t++, i++)
            gemm_case(0, 0, 0, mnk[s][0], mnk[s][1], mnk[s][2], t & 1, t & 2, ab[i % 4][0],
                      ab[i % 4][1]);
    /* Strided-batched, and batch-1 operands shared by every C[b], in every transpose combination.
     */
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        gemm_case(3, 3, 3, 5, 6, 7, ta, tb, 1, 0);     /* all batched */
        gemm_case(4, 4, 0, 9, 5, 3, ta, tb, 1, 0);     /* activations x shared weight (2-D B) */
        gemm_case(3, 0, 3, 6, 4, 11, ta, tb, 0.5f, 2); /* shared 2-D A */
        gemm_case(2, 1, 2, 3, 8, 4, ta, tb, 1, 1);     /* A with batch 1 */
        gemm_case(5, 5, 1, 1, 7, 2, ta, tb, -2, 0);    /* B with batch 1, one row per item */
    }
    /* Random sizes, batch layouts and transposes. */
    for (int r = 0; r < 24; r++) {
        int64_t batch = rng_int(1, 4), layout = rng_int(0, 3);
        int64_t a_b = layout == 1 ? 0 : batch, b_b = layout == 2 ? 0 : layout == 3 ? 1 : batch;
        gemm_case(batch, a_b, b_b, rng_int(1, 80), rng_int(1, 80), rng_int(1, 80), rng_int(0, 1),
                  rng_int(0, 1), rng_range(-2, 2), r % 3 ? rng_range(-2, 2) : 0);
    }
    gemm_case(0, 1, 1, 4, 5, 6, false, false, 1, 0);    /* 2-D C from batch-1 operands */
    gemm_case(0, 0, 0, 3, 4, 0, false, false, 1, 0.5f); /* k = 0: C = beta C */
    gemm_case(2, 2, 0, 3, 4, 0, false, true, 1, 0);     /* k = 0, beta 0: zeros */
    MT_CHECK(g_cases[op_index("gemm")] >= 70, "(gemm ran %d cases)", g_cases[op_index("gemm")]);
}

/* Gradients of C = op(A) op(B) through the gemm op itself: with dC = w,
 *   dA = w B^T (or B w^T when A is transposed), dB = A^T w. */
static void gemm_grad_case(int64_t m, int64_t n, int64_t k, bool ta, bool wrt_b) {
    gemm_p fwd = {ta, false, 1, 0};
    io c = {.nin = 2, .nout = 1};
    c.in[0] = ta ? HT(MT_F32, k, m) : HT(MT_F32, m, k);
    c.in[1] = HT(MT_F32, k, n);
    c.out[0] = HT(MT_F32, m, n);
    fill_uniform(&c.in[0], -1, 1);
    fill_uniform(&c.in[1], -1, 1);
    memset(c.out[0].data, 0, mt_tensor_bytes(&c.out[0]));
    mt_tensor w = HT(MT_F32, m, n);
    fill_uniform(&w, -1, 1);
    io g = {.nin = 2, .nout = 1};
    gemm_p bp = {false, true, 1, 0};
    if (wrt_b) { /* dB (k,n) = A^T (k,m) w (m,n); A stored (m,k) */
        bp = (gemm_p){true, false, 1, 0};
        g.in[0] = c.in[0], g.in[1] = w, g.out[0] = H_like(&c.in[1]);
    } else if (ta) { /* dA (k,m) = B (k,n) w^T */
        g.in[0] = c.in[1], g.in[1] = w, g.out[0] = H_like(&c.in[0]);
    } else { /* dA (m,k) = w (m,n) B^T */
        g.in[0] = w, g.in[1] = c.in[1], g.out[0] = H_like(&c.in[0]);
    }
    memset(g.out[0].data, 0, mt_tensor_bytes(&g.out[0]));
    char label[64];
    snprintf(label, sizeof label, "d%s, m %" PRId64 " n %" PRId64 " k %" PRId64 "%s",
             wrt_b ? "B" : "A", m, n, k, ta ? ", A^T" : "");
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        mt_tensor grad;
        if (g_have[d] && grad_on(&g_ctx[d], call_gemm, &bp, &g, &grad))
            fd_check(&g_ctx[d], "gemm", label, call_gemm, &fwd, &c, wrt_b ? 1 : 0, F(&w), &grad,
                     1e-2);
    }
}

static void test_gemm_grad(void) {
    rng_seed(2);
    gemm_grad_case(5, 7, 3, false, false);
    gemm_grad_case(8, 3, 6, true, false);
    gemm_grad_case(4, 9, 5, false, true);
    gemm_grad_case(1, 1, 1, false, false);
}

/* ==== axpy, scale, add, mul
 * ======================================================================== */

static mt_status call_axpy(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_axpy(ctx, *(const float *)p, &in[0], &out[0]);
}

static mt_status call_scale(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_scale(ctx, *(const float *)p, &out[0]);
}

/* A few shapes of 1 to 4 dims, including single rows and odd sizes. */
static int random_shape(int64_t *shape, int ndim, int64_t max_dim) {
    for (int i = 0; i < ndim; i++) shape[i] = rng_int(1, max_dim);
    return ndim;
}

static void test_axpy_scale(void) {
    rng_seed(3);
    static const float alphas[] = {1, -0.5f, 3.25f, 0};
    for (int t = 0; t < 8; t++) {
        int64_t shape[4];
        int nd = random_shape(shape, 1 + t % 4, t < 4 ? 9 : 40);
        if (t == 0) shape[0] = 1;
        float alpha = alphas[t % 4];
        io c = {.nin = 1, .nout = 1};
        c.in[0] = H(MT_F32, nd, shape);
        c.out[0] = H(MT_F32, nd, shape);
        fill_uniform(&c.in[0], -2, 2);
        fill_uniform(&c.out[0], -2, 2);
        int64_t n = N(&c.in[0]);
        double *val = DBL(n), *mag = DBL(n);
        for (int64_t i = 0; i < n; i++) {
            val[i] = F(&c.out[0])[i] + (double)alpha * F(&c.in[0])[i];
            mag[i] = fabs(F(&c.out[0])[i]) + fabs((double)alpha * F(&c.in[0])[i]);
        }
        char label[96], d[96];
        snprintf(label, sizeof label, "%s, alpha %g", desc(&c.in[0], d), alpha);
        run_case("axpy", label, call_axpy, &alpha, &c, (expect[]){{val, mag, F32_TOL, 1.0}}, NULL);
        io s = {.nin = 0, .nout = 1, .out = {c.in[0]}};
        for (int64_t i = 0; i < n; i++) val[i] = (double)alpha * F(&c.in[0])[i];
        run_case("scale", label, call_scale, &alpha, &s, (expect[]){{val, NULL, F32_TOL, 1.0}},
                 NULL);
    }
}

typedef struct bin_p {
    bool mul, alias; /* alias: out is a */
} bin_p;

static mt_status call_binary(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bin_p *b = p;
    mt_status (*fn)(mt_ctx *, const mt_tensor *, const mt_tensor *, mt_tensor *) =
        b->mul ? mt_mul : mt_add;
    if (!b->alias) return fn(ctx, &in[0], &in[1], &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return fn(ctx, &out[0], &in[1], &out[0]);
}

static void binary_case(bool mul, bool alias, int nd, const int64_t *shape, int b_dims) {
    bin_p bp = {mul, alias};
    io c = {.nin = 2, .nout = 1};
    c.in[0] = H(MT_F32, nd, shape);
    c.in[1] = H(MT_F32, b_dims, shape + (nd - b_dims)); /* a's trailing dims */
    c.out[0] = H(MT_F32, nd, shape);
    fill_uniform(&c.in[0], -3, 3);
    fill_uniform(&c.in[1], -3, 3);
    fill_uniform(&c.out[0], -3, 3);
    int64_t n = N(&c.in[0]), inner = N(&c.in[1]);
    double *val = DBL(n), *mag = DBL(n);
    for (int64_t i = 0; i < n; i++) {
        double a = F(&c.in[0])[i], b = F(&c.in[1])[i % inner];
        val[i] = mul ? a * b : a + b;
        mag[i] = mul ? fabs(a * b) : fabs(a) + fabs(b);
    }
    char label[160], da[96], db[96];
    snprintf(label, sizeof label, "a %s, b %s%s", desc(&c.in[0], da), desc(&c.in[1], db),
             alias ? ", out = a" : "");
    run_case(mul ? "mul" : "add", label, call_binary, &bp, &c, (expect[]){{val, mag, F32_TOL, 1.0}},
             NULL);
}

static void test_add_mul(void) {
    rng_seed(4);
    for (int t = 0; t < 12; t++) {
        int64_t shape[4];
        int nd = random_shape(shape, 1 + t % 4, 12);
        if (t == 1) shape[0] = 1;
        int b_dims = (int)rng_int(1, nd); /* nd: same shape; fewer: a bias over rows */
        binary_case(t & 1, t % 5 == 0, nd, shape, b_dims);
        binary_case(!(t & 1), false, nd, shape, nd);
    }
    binary_case(false, false, 2, (int64_t[]){300, 257}, 1); /* above the OpenMP threshold */
    binary_case(true, true, 2, (int64_t[]){300, 257}, 1);
}

/* ==== reduce ================================================================================== */

typedef struct red_p {
    mt_reduce_kind kind;
    int axis;
} red_p;

static mt_status call_reduce(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const red_p *r = p;
    return mt_reduce(ctx, r->kind, &in[0], r->axis, &out[0]);
}

static void reduce_case(mt_reduce_kind kind, int nd, const int64_t *shape, int axis) {
    red_p rp = {kind, axis};
    int ax = axis < 0 ? axis + nd : axis;
    io c = {.nin = 1, .nout = 1};
    c.in[0] = H(MT_F32, nd, shape);
    fill_uniform(&c.in[0], -2, 2);
    int64_t oshape[4], outer = 1, inner = 1, n = shape[ax];
    int ond = 0;
    for (int i = 0; i < nd; i++)
        if (i != ax) oshape[ond++] = shape[i];
    if (nd == 1) oshape[ond++] = 1;
    for (int i = 0; i < ax; i++) outer *= shape[i];
    for (int i = ax + 1; i < nd; i++) inner *= shape[i];
    c.out[0] = H(MT_F32, ond, oshape);
    double *val = DBL(outer * inner), *mag = DBL(outer * inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            double s = 0, sa = 0, mx = -INFINITY;
            for (int64_t q = 0; q < n; q++) {
                double v = F(&c.in[0])[(o * n + q) * inner + j];
                s += v;
                sa += fabs(v);
                mx = fmax(mx, v);
            }
            int64_t i = o * inner + j;
            val[i] = kind == MT_REDUCE_SUM ? s : kind == MT_REDUCE_MEAN ? s / n : mx;
            mag[i] = kind == MT_REDUCE_SUM ? sa : kind == MT_REDUCE_MEAN ? sa / n : fabs(mx);
        }
    static const char *names[] = {"sum", "mean", "max"};
    char label[128], d[96];
    snprintf(label, sizeof label, "%s of %s over axis %d", names[kind], desc(&c.in[0], d), axis);
    run_case("reduce", label, call_reduce, &rp, &c, (expect[]){{val, mag, F32_TOL, 1.0}}, NULL);
}

static void test_reduce(void) {
    rng_seed(5);
    for (int t = 0; t < 10; t++) {
        int64_t shape[4];
        int nd = random_shape(shape, 1 + t % 4, 9);
        for (int k = 0; k < 3; k++) {
            int axis = (int)rng_int(0, nd - 1);
            reduce_case((mt_reduce_kind)k, nd, shape, t & 1 ? axis - nd : axis);
        }
    }
    reduce_case(MT_REDUCE_SUM, 1, (int64_t[]){1}, 0);
    reduce_case(MT_REDUCE_MAX, 2, (int64_t[]){1, 1}, -1);
    reduce_case(MT_REDUCE_SUM, 1, (int64_t[]){100003}, 0); /* a long sum */
    reduce_case(MT_REDUCE_MEAN, 2, (int64_t[]){3, 70001}, 1);
    reduce_case(MT_REDUCE_SUM, 3, (int64_t[]){3, 1000, 130}, 1); /* wide inner, threads */
    reduce_case(MT_REDUCE_MAX, 3, (int64_t[]){200, 3, 97}, 0);
}

/* ==== activations ============================================================================= */

typedef struct act_p {
    mt_act_kind kind;
    bool alias; /* y is x (forward) or dx is dy (backward) */
} act_p;

static const char *act_names[] = {"relu", "gelu", "gelu_tanh", "silu", "sigmoid"};

static mt_status call_act_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const act_p *a = p;
    if (!a->alias) return mt_act_fwd(ctx, a->kind, &in[0], &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_act_fwd(ctx, a->kind, &out[0], &out[0]);
}

static mt_status call_act_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const act_p *a = p;
    if (!a->alias) return mt_act_bwd(ctx, a->kind, &in[0], &in[1], &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[1]));
    return mt_act_bwd(ctx, a->kind, &in[0], &out[0], &out[0]);
}

static double phi_cdf(double x) {
    return 0.5 * erfc(-x / sqrt(2.0));
}

static double act_ref(mt_act_kind k, double x) {
    switch (k) {
    case MT_ACT_RELU:
        return x > 0 ? x : 0;
    case MT_ACT_GELU:
        return x * phi_cdf(x);
    case MT_ACT_GELU_TANH:
        return 0.5 * x * (1 + tanh(sqrt(2 / PI) * (x + 0.044715 * x * x * x)));
    case MT_ACT_SILU:
        return x / (1 + exp(-x));
    case MT_ACT_SIGMOID:
        return 1 / (1 + exp(-x));
    }
    return NAN;
}

static double act_grad_ref(mt_act_kind k, double x) {
    switch (k) {
    case MT_ACT_RELU:
        return x > 0 ? 1 : 0;
    case MT_ACT_GELU:
        return phi_cdf(x) + x * exp(-0.5 * x * x) / sqrt(2 * PI);
    case MT_ACT_GELU_TANH: {
        double c = sqrt(2 / PI), t = tanh(c * (x + 0.044715 * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
    }
    case MT_ACT_SILU: {
        double s = 1 / (1 + exp(-x));
        return s * (1 + x * (1 - s));
    }
    case MT_ACT_SIGMOID: {
        double s = 1 / (1 + exp(-x));
        return s * (1 - s);
    }
    }
    return NAN;
}

/* Inputs in [-range, range], nudged away from 0 so relu's kink is never within a step. */
static void fill_act_input(mt_tensor *x, double range) {
    fill_uniform(x, -range, range);
    for (int64_t i = 0; i < N(x); i++)
        if (fabsf(F(x)[i]) < 0.05f) F(x)[i] += F(x)[i] < 0 ? -0.05f : 0.05f;
}

static void act_case(mt_act_kind kind, bool alias, int nd, const int64_t *shape, double range) {
    act_p ap = {kind, alias};
    io f = {.nin = 1, .nout = 1}, b = {.nin = 2, .nout = 1};
    f.in[0] = H(MT_F32, nd, shape);
    f.out[0] = H(MT_F32, nd, shape);
    fill_act_input(&f.in[0], range);
    b.in[0] = f.in[0];
    b.in[1] = H(MT_F32, nd, shape);
    b.out[0] = H(MT_F32, nd, shape);
    fill_uniform(&b.in[1], -1, 1);
    int64_t n = N(&f.in[0]);
    double *y = DBL(n), *dx = DBL(n);
    for (int64_t i = 0; i < n; i++) {
        y[i] = act_ref(kind, F(&f.in[0])[i]);
        dx[i] = act_grad_ref(kind, F(&f.in[0])[i]) * F(&b.in[1])[i];
    }
    char label[128], d[96];
    snprintf(label, sizeof label, "%s %s, range %g%s", act_names[kind], desc(&f.in[0], d), range,
             alias ? ", in place" : "");
    run_case("act_fwd", label, call_act_fwd, &ap, &f, (expect[]){{y, NULL, F32_TOL, 1.0}}, NULL);
    /* f'(x) dy is elementwise: relative to the value down to 1e-2 */
    run_case("act_bwd", label, call_act_bwd, &ap, &b, (expect[]){{dx, NULL, GRAD_TOL, 1e-2}}, NULL);
    /* central differences of the forward, with w = dy */
    ap.alias = false;
    for (int d2 = 0; d2 < MT_DEVICE_COUNT; d2++) {
        mt_tensor grad;
        if (g_have[d2] && grad_on(&g_ctx[d2], call_act_bwd, &ap, &b, &grad))
            fd_check(&g_ctx[d2], "act_bwd", label, call_act_fwd, &ap, &f, 0, F(&b.in[1]), &grad,
                     1e-3);
    }
}

static void test_act(void) {
    rng_seed(6);
    for (int k = 0; k <= MT_ACT_SIGMOID; k++) {
        for (int t = 0; t < 4; t++) {
            int64_t shape[4];
            int nd = random_shape(shape, 1 + t, 11);
            if (t == 1) shape[0] = 1;
            act_case((mt_act_kind)k, t == 2, nd, shape, t == 3 ? 12 : 4);
        }
        act_case((mt_act_kind)k, false, 2, (int64_t[]){2, 40}, 40);  /* tails: exp/erf saturate */
        act_case((mt_act_kind)k, false, 2, (int64_t[]){97, 131}, 5); /* OpenMP threshold */
    }
}

/* ==== softmax ================================================================================= */

typedef struct sm_p {
    bool log, alias;
} sm_p;

static mt_status call_softmax_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const sm_p *s = p;
    if (!s->alias) return mt_softmax_fwd(ctx, s->log, &in[0], &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_softmax_fwd(ctx, s->log, &out[0], &out[0]);
}

static mt_status call_softmax_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const sm_p *s = p;
    if (!s->alias) return mt_softmax_bwd(ctx, s->log, &in[0], &in[1], &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[1]));
    return mt_softmax_bwd(ctx, s->log, &in[0], &out[0], &out[0]);
}

/* Row-wise softmax or log-softmax in double, stable. */
static void softmax_ref(bool log_sm, const float *x, int64_t rows, int64_t c, double *y) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < c; j++) mx = fmax(mx, xr[j]);
        for (int64_t j = 0; j < c; j++) s += exp(xr[j] - mx);
        for (int64_t j = 0; j < c; j++)
            y[r * c + j] = log_sm ? xr[j] - mx - log(s) : exp(xr[j] - mx) / s;
    }
}

static void softmax_case(bool log_sm, bool alias, int nd, const int64_t *shape, double scale,
                         double offset) {
    sm_p sp = {log_sm, alias};
    io f = {.nin = 1, .nout = 1}, b = {.nin = 2, .nout = 1};
    f.in[0] = H(MT_F32, nd, shape);
    f.out[0] = H(MT_F32, nd, shape);
    fill_normal(&f.in[0], scale);
    for (int64_t i = 0; i < N(&f.in[0]); i++) F(&f.in[0])[i] += (float)offset;
    int64_t n = N(&f.in[0]), c = shape[nd - 1], rows = n / c;
    double *y = DBL(n), *dx = DBL(n), *mag = DBL(n);
    softmax_ref(log_sm, F(&f.in[0]), rows, c, y);
    /* The backward takes y as given (f32, as the forward would store it). */
    b.in[0] = H(MT_F32, nd, shape);
    for (int64_t i = 0; i < n; i++) F(&b.in[0])[i] = (float)y[i];
    b.in[1] = H(MT_F32, nd, shape);
    b.out[0] = H(MT_F32, nd, shape);
    fill_uniform(&b.in[1], -1, 1);
    const float *yf = F(&b.in[0]), *dy = F(&b.in[1]);
    for (int64_t r = 0; r < rows; r++) {
        double s = 0, sa = 0;
        for (int64_t j = 0; j < c; j++) {
            int64_t i = r * c + j;
            s += log_sm ? dy[i] : (double)dy[i] * yf[i];
            sa += log_sm ? fabs(dy[i]) : fabs((double)dy[i] * yf[i]);
        }
        for (int64_t j = 0; j < c; j++) {
            int64_t i = r * c + j;
            if (log_sm) {
                dx[i] = dy[i] - exp(yf[i]) * s;
                mag[i] = fabs(dy[i]) + exp(yf[i]) * sa;
            } else {
                dx[i] = yf[i] * (dy[i] - s);
                mag[i] = fabs(yf[i]) * (fabs(dy[i]) + sa);
            }
        }
    }
    char label[128], d[96];
    snprintf(label, sizeof label, "%s %s, scale %g, offset %g%s",
             log_sm ? "log-softmax" : "softmax", desc(&f.in[0], d), scale, offset,
             alias ? ", in place" : "");
    run_case("softmax_fwd", label, call_softmax_fwd, &sp, &f, (expect[]){{y, NULL, F32_TOL, 1.0}},
             NULL);
    run_case("softmax_bwd", label, call_softmax_bwd, &sp, &b, (expect[]){{dx, mag, GRAD_TOL, 1e-3}},
             NULL);
    /* central differences of the forward: the backward gets the forward's own output on each
     * backend, with w = dy */
    sp.alias = false;
    for (int d2 = 0; d2 < MT_DEVICE_COUNT; d2++) {
        if (!g_have[d2]) continue;
        mt_tensor yb[MAX_IO], grad;
        if (run_on(&g_ctx[d2], call_softmax_fwd, &sp, &f, yb) != MT_OK)
            continue; /* reported above */
        io bb = b;
        bb.in[0] = yb[0];
        if (grad_on(&g_ctx[d2], call_softmax_bwd, &sp, &bb, &grad))
            fd_check(&g_ctx[d2], "softmax_bwd", label, call_softmax_fwd, &sp, &f, 0, dy, &grad,
                     1e-3);
    }
}

static void test_softmax(void) {
    rng_seed(7);
    for (int l = 0; l < 2; l++) {
        softmax_case(l, false, 2, (int64_t[]){1, 1}, 1, 0);
        softmax_case(l, false, 2, (int64_t[]){1, 17}, 2, 0);
        softmax_case(l, true, 2, (int64_t[]){9, 1}, 1, 0);
        softmax_case(l, false, 2, (int64_t[]){7, 13}, 3, 0);
        softmax_case(l, false, 3, (int64_t[]){2, 5, 33}, 1, 0);
        softmax_case(l, true, 4, (int64_t[]){2, 3, 2, 6}, 2, 0);
        softmax_case(l, false, 2, (int64_t[]){3, 11}, 4, 1000); /* exp(1000) would overflow */
        softmax_case(l, false, 2, (int64_t[]){4, 9}, 30, -500);
        softmax_case(l, false, 2, (int64_t[]){40, 1000}, 2, 0); /* OpenMP threshold */
    }
}

/* ==== cross-entropy =========================================================================== */

typedef struct ce_p {
    int ignore;
    float dloss;
    bool alias; /* dlogits is logits */
} ce_p;

static mt_status call_ce_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const ce_p *c = p;
    return mt_cross_entropy_fwd(ctx, &in[0], &in[1], c->ignore, &out[0]);
}

static mt_status call_ce_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const ce_p *c = p;
    if (!c->alias) return mt_cross_entropy_bwd(ctx, &in[0], &in[1], c->ignore, c->dloss, &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_cross_entropy_bwd(ctx, &out[0], &in[1], c->ignore, c->dloss, &out[0]);
}

/* logits (rows..., C); p_ignore of the targets are ignore_index (or all when p_ignore >= 1). */
static void ce_case(int nd, const int64_t *shape, int ignore, double p_ignore, double scale,
                    float dloss, bool alias) {
    ce_p cp = {ignore, dloss, alias};
    io f = {.nin = 2, .nout = 1};
    f.in[0] = H(MT_F32, nd, shape);
    f.in[1] = H(MT_I32, nd - 1, shape);
    f.out[0] = HT(MT_F32, 1);
    fill_normal(&f.in[0], scale);
    F(&f.out[0])[0] = NAN; /* must be overwritten */
    int64_t c = shape[nd - 1], rows = N(&f.in[0]) / c, count = 0;
    for (int64_t r = 0; r < rows; r++) {
        bool ignored = rng_unif() < p_ignore || (r == 0 && p_ignore > 0); /* an edge row too */
        I32(&f.in[1])[r] = ignored ? ignore : (int32_t)rng_int(0, c - 1);
        count += I32(&f.in[1])[r] != ignore;
    }
    double *p = DBL(rows * c), loss = 0;
    softmax_ref(false, F(&f.in[0]), rows, c, p);
    double *ls = DBL(rows * c);
    softmax_ref(true, F(&f.in[0]), rows, c, ls);
    double *grad = DBL(rows * c), scale_g = count ? (double)dloss / count : 0;
    for (int64_t r = 0; r < rows; r++) {
        int32_t t = I32(&f.in[1])[r];
        for (int64_t j = 0; j < c; j++)
            grad[r * c + j] = t == ignore ? 0 : (p[r * c + j] - (j == t)) * scale_g;
        if (t != ignore) loss -= ls[r * c + t];
    }
    double lval = count ? loss / count : 0;
    io b = f;
    b.out[0] = H_like(&f.in[0]);
    char label[128], d[96];
    snprintf(label, sizeof label,
             "logits %s, ignore_index %d (%" PRId64 " of %" PRId64
             " rows count), scale %g, dloss %g%s",
             desc(&f.in[0], d), ignore, count, rows, scale, dloss, alias ? ", in place" : "");
    run_case("cross_entropy_fwd", label, call_ce_fwd, &cp, &f,
             (expect[]){{&lval, NULL, F32_TOL, 1.0}}, NULL);
    double gfloor = count ? fabs(dloss) / count : 1.0;
    run_case("cross_entropy_bwd", label, call_ce_bwd, &cp, &b,
             (expect[]){{grad, NULL, GRAD_TOL, gfloor}}, NULL);
    cp.alias = false;
    for (int d2 = 0; d2 < MT_DEVICE_COUNT; d2++) {
        mt_tensor g;
        if (g_have[d2] && grad_on(&g_ctx[d2], call_ce_bwd, &cp, &b, &g))
            fd_check(&g_ctx[d2], "cross_entropy_bwd", label, call_ce_fwd, &cp, &f, 0, &dloss, &g,
                     1e-3);
    }
}

static void test_cross_entropy(void) {
    rng_seed(8);
    ce_case(2, (int64_t[]){1, 1}, -100, 0, 1, 1, false);
    ce_case(2, (int64_t[]){1, 5}, -100, 0, 1, 1, false);
    ce_case(2, (int64_t[]){7, 3}, -100, 0.3, 2, 1, true);
    ce_case(2, (int64_t[]){16, 10}, 3, 0.25, 1, 0.5f, false); /* ignore_index inside [0,C) */
    ce_case(3, (int64_t[]){2, 9, 31}, -1, 0.2, 3, 2, false);  /* (B,T,V) with targets (B,T) */
    ce_case(2, (int64_t[]){5, 4}, -100, 1.0, 1, 1, false);    /* every row ignored: loss 0 */
    ce_case(2, (int64_t[]){6, 8}, -100, 0.1, 200, 1, false);  /* large logits */
    ce_case(2, (int64_t[]){64, 600}, -100, 0.1, 1, 3, false); /* OpenMP threshold */
}

/* ==== binary cross-entropy with logits
 * ============================================================ */

typedef struct bce_p {
    bool pw;
    float dloss;
} bce_p;

static mt_status call_bce_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bce_p *b = p;
    return mt_bce_logits_fwd(ctx, &in[0], &in[1], b->pw ? &in[2] : NULL, &out[0]);
}

static mt_status call_bce_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bce_p *b = p;
    return mt_bce_logits_bwd(ctx, &in[0], &in[1], b->pw ? &in[2] : NULL, b->dloss, &out[0]);
}

static double sigmoid(double x) {
    return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}

/* The textbook per-element loss, -(pw y log s + (1-y) log(1-s)), with log(1-s) = log s(-x)
 * computed without cancellation; and its derivative (1-y) s - pw y (1-s). */
static double bce_naive(double x, double y, double pw) {
    double log_s = x > -30 ? log(sigmoid(x)) : x, log_1ms = x < 30 ? log(sigmoid(-x)) : -x;
    return -(pw * y * log_s + (1 - y) * log_1ms);
}

static double bce_naive_grad(double x, double y, double pw) {
    return (1 - y) * sigmoid(x) - pw * y * sigmoid(-x);
}

/* Fills a BCE case: logits in [-range, range], targets 0/1 or soft, a fraction p_nan unknown. */
static void bce_inputs(io *c, bool pw, int nd, const int64_t *shape, double range, double p_nan,
                       bool soft) {
    c->nin = pw ? 3 : 2;
    c->nout = 1;
    c->in[0] = H(MT_F32, nd, shape);
    c->in[1] = H(MT_F32, nd, shape);
    fill_uniform(&c->in[0], -range, range);
    for (int64_t i = 0; i < N(&c->in[1]); i++)
        F(&c->in[1])[i] = rng_unif() < p_nan ? NAN : soft ? rng_range(0, 1) : (float)rng_int(0, 1);
    if (pw) {
        c->in[2] = HT(MT_F32, shape[nd - 1]);
        fill_uniform(&c->in[2], 0.2, 5);
    }
    c->out[0] = HT(MT_F32, 1);
    F(&c->out[0])[0] = NAN;
}

/* Reference loss and gradient; returns the number of known targets. */
static int64_t bce_ref(const io *c, bool pw, float dloss, double *loss, double *grad) {
    int64_t n = N(&c->in[0]), l = last_dim(&c->in[0]), count = 0;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(F(&c->in[1])[i])) {
            s += bce_naive(F(&c->in[0])[i], F(&c->in[1])[i], pw ? F(&c->in[2])[i % l] : 1);
            count++;
        }
    *loss = count ? s / count : 0;
    for (int64_t i = 0; i < n; i++) {
        double y = F(&c->in[1])[i];
        grad[i] = isnan(y) ? 0
                           : bce_naive_grad(F(&c->in[0])[i], y, pw ? F(&c->in[2])[i % l] : 1) *
                                 dloss / (double)count;
    }
    return count;
}

static void bce_case(bool pw, int nd, const int64_t *shape, double range, double p_nan, bool soft,
                     float dloss) {
    bce_p bp = {pw, dloss};
    io f;
    bce_inputs(&f, pw, nd, shape, range, p_nan, soft);
    double loss, *grad = DBL(N(&f.in[0]));
    int64_t count = bce_ref(&f, pw, dloss, &loss, grad);
    io b = f;
    b.out[0] = H_like(&f.in[0]);
    char label[160], d[96];
    snprintf(label, sizeof label, "logits %s, range %g, %" PRId64 " known, %s targets%s, dloss %g",
             desc(&f.in[0], d), range, count, soft ? "soft" : "0/1", pw ? ", pos_weight" : "",
             dloss);
    run_case("bce_logits_fwd", label, call_bce_fwd, &bp, &f,
             (expect[]){{&loss, NULL, F32_TOL, 1.0}}, NULL);
    run_case("bce_logits_bwd", label, call_bce_bwd, &bp, &b,
             (expect[]){{grad, NULL, GRAD_TOL, count ? fabs(dloss) / count : 1.0}}, NULL);
    for (int d2 = 0; d2 < MT_DEVICE_COUNT; d2++) {
        mt_tensor g;
        if (g_have[d2] && grad_on(&g_ctx[d2], call_bce_bwd, &bp, &b, &g))
            fd_check(&g_ctx[d2], "bce_logits_bwd", label, call_bce_fwd, &bp, &f, 0, &dloss, &g,
                     1e-3);
    }
}

static void test_bce(void) {
    rng_seed(9);
    bce_case(false, 2, (int64_t[]){1, 1}, 3, 0, false, 1);
    bce_case(false, 2, (int64_t[]){4, 14}, 5, 0, false, 1);
    bce_case(true, 2, (int64_t[]){8, 14}, 5, 0.3, false, 2);
    bce_case(true, 1, (int64_t[]){9}, 4, 0.2, true, 1);
    bce_case(false, 3, (int64_t[]){2, 3, 5}, 4, 0.1, true, 0.5f);
    bce_case(true, 2, (int64_t[]){5, 6}, 60, 0.2, false, 1);   /* saturated sigmoid both ways */
    bce_case(true, 2, (int64_t[]){300, 71}, 6, 0.2, false, 1); /* several chunks, threads */
}

/* NaN targets: no gradient, no effect on the loss; all-NaN gives 0; pos_weight is the formula. */
static void test_bce_nan_mask(void) {
    rng_seed(10);
    mt_ctx *ctx = &g_ctx[MT_CPU];
    for (int pw = 0; pw < 2; pw++) {
        bce_p bp = {pw, 1};
        io c;
        bce_inputs(&c, pw, 2, (int64_t[]){6, 7}, 4, 0.4, false);
        mt_tensor r1[MAX_IO], r2[MAX_IO], g[MAX_IO];
        MT_CHECK_OK(run_on(ctx, call_bce_fwd, &bp, &c, r1));
        /* Changing the logits where the target is unknown changes nothing. */
        io c2 = c;
        c2.in[0] = H_like(&c.in[0]);
        int64_t nan_count = 0;
        for (int64_t i = 0; i < N(&c.in[0]); i++) {
            bool unknown = isnan(F(&c.in[1])[i]);
            nan_count += unknown;
            F(&c2.in[0])[i] = unknown ? 1e4f * rng_range(-1, 1) : F(&c.in[0])[i];
        }
        MT_CHECK(nan_count > 0);
        MT_CHECK_OK(run_on(ctx, call_bce_fwd, &bp, &c2, r2));
        MT_CHECK(F(&r1[0])[0] == F(&r2[0])[0], "(loss %.9g vs %.9g)", F(&r1[0])[0], F(&r2[0])[0]);
        io b = c;
        b.out[0] = H_like(&c.in[0]);
        MT_CHECK_OK(run_on(ctx, call_bce_bwd, &bp, &b, g));
        int64_t l = last_dim(&c.in[0]), known = N(&c.in[0]) - nan_count;
        double s = 0;
        for (int64_t i = 0; i < N(&c.in[0]); i++) {
            double x = F(&c.in[0])[i], y = F(&c.in[1])[i], w = pw ? F(&c.in[2])[i % l] : 1;
            if (isnan(y)) {
                MT_CHECK(F(&g[0])[i] == 0.0f, "(gradient %g at unknown target %" PRId64 ")",
                         F(&g[0])[i], i);
                continue;
            }
            /* pos_weight as PyTorch defines it: -(pw y log s + (1-y) log(1-s)) */
            double sg = 1 / (1 + exp(-x));
            s += -(w * y * log(sg) + (1 - y) * log(1 - sg));
        }
        MT_CHECK_NEAR(F(&r1[0])[0], s / known, 1e-5);
        /* all unknown */
        for (int64_t i = 0; i < N(&c.in[1]); i++) F(&c.in[1])[i] = NAN;
        MT_CHECK_OK(run_on(ctx, call_bce_fwd, &bp, &c, r1));
        MT_CHECK(F(&r1[0])[0] == 0.0f, "(all-NaN loss %g)", F(&r1[0])[0]);
        MT_CHECK_OK(run_on(ctx, call_bce_bwd, &bp, &b, g));
        for (int64_t i = 0; i < N(&c.in[0]); i++) MT_CHECK(F(&g[0])[i] == 0.0f);
    }
    /* A positive weight of 1 is the same as none. */
    bce_p with = {true, 1}, without = {false, 1};
    io c;
    bce_inputs(&c, true, 2, (int64_t[]){3, 4}, 3, 0.2, true);
    for (int64_t i = 0; i < 4; i++) F(&c.in[2])[i] = 1;
    mt_tensor r1[MAX_IO], r2[MAX_IO];
    MT_CHECK_OK(run_on(ctx, call_bce_fwd, &with, &c, r1));
    c.nin = 2;
    MT_CHECK_OK(run_on(ctx, call_bce_fwd, &without, &c, r2));
    MT_CHECK(F(&r1[0])[0] == F(&r2[0])[0]);
}

/* ==== soft Dice pieces ======================================================================== */

typedef struct dice_p {
    bool squared;
    bool alias; /* dice_bwd: dp is p */
} dice_p;

/* in: p, g; out: sums */
static mt_status call_dice_sums(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const dice_p *d = p;
    return mt_dice_sums(ctx, &in[0], &in[1], d->squared, &out[0]);
}

/* in: p, g, coef; out: dp */
static mt_status call_dice_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const dice_p *d = p;
    if (!d->alias) return mt_dice_bwd(ctx, &in[0], &in[1], &in[2], d->squared, &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_dice_bwd(ctx, &out[0], &in[1], &in[2], d->squared, &out[0]);
}

/* p in (0,1); g hard {0,1} labels or soft ones in [0,1]. */
static void dice_case(int64_t n, int64_t pix, int64_t c, dice_p dp, bool soft, bool fd) {
    io f = {.nin = 2, .nout = 1};
    f.in[0] = HT(MT_F32, n, pix, c);
    f.in[1] = HT(MT_F32, n, pix, c);
    f.out[0] = HT(MT_F32, n, c, 3);
    fill_uniform(&f.in[0], 0.01, 0.99);
    for (int64_t i = 0; i < N(&f.in[1]); i++)
        F(&f.in[1])[i] = soft ? rng_range(0, 1) : (float)(rng_unif() < 0.3);
    io b = {.nin = 3, .nout = 1, .in = {f.in[0], f.in[1], HT(MT_F32, n, c, 2)}};
    b.out[0] = H_like(&f.in[0]);
    fill_uniform(&b.in[2], -1, 1);
    double *sums = DBL(n * c * 3), *dpv = DBL(N(&f.in[0])), *dpmag = DBL(N(&f.in[0]));
    for (int64_t i = 0; i < n * c * 3; i++) sums[i] = 0;
    for (int64_t img = 0; img < n; img++)
        for (int64_t i = 0; i < pix; i++)
            for (int64_t k = 0; k < c; k++) {
                int64_t e = (img * pix + i) * c + k, s = (img * c + k) * 3;
                double pv = F(&f.in[0])[e], gv = F(&f.in[1])[e];
                double a = F(&b.in[2])[(img * c + k) * 2], bb = F(&b.in[2])[(img * c + k) * 2 + 1];
                sums[s] += pv * gv;
                sums[s + 1] += dp.squared ? pv * pv : pv;
                sums[s + 2] += dp.squared ? gv * gv : gv;
                double t = bb * (dp.squared ? 2 * pv : 1);
                dpv[e] = a * gv + t;
                dpmag[e] = fabs(a * gv) + fabs(t);
            }
    char label[160], dd[96];
    snprintf(label, sizeof label, "p %s, %s, %s targets%s", desc(&f.in[0], dd),
             dp.squared ? "squared" : "plain", soft ? "soft" : "hard", dp.alias ? ", dp is p" : "");
    /* the sums have non-negative terms: relative to the value */
    run_case("dice_sums", label, call_dice_sums, &dp, &f, (expect[]){{sums, NULL, F32_TOL, 1e-6}},
             NULL);
    run_case("dice_bwd", label, call_dice_bwd, &dp, &b, (expect[]){{dpv, dpmag, F32_TOL, 1e-3}},
             NULL);
    if (!fd) return;
    /* L = sum a*S1 + b*S2 + c*S3 over images and classes: dL/dp is dice_bwd with coef (a, b) */
    float *wts = test_alloc((size_t)(n * c * 3) * sizeof(float));
    for (int64_t i = 0; i < n * c; i++) {
        wts[3 * i] = F(&b.in[2])[2 * i];
        wts[3 * i + 1] = F(&b.in[2])[2 * i + 1];
        wts[3 * i + 2] = rng_range(-1, 1);
    }
    dice_p plain = {dp.squared, false};
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        mt_tensor grad;
        if (g_have[d] && grad_on(&g_ctx[d], call_dice_bwd, &plain, &b, &grad))
            fd_check(&g_ctx[d], "dice_bwd", label, call_dice_sums, &plain, &f, 0, wts, &grad, 1e-3);
    }
}

static void test_dice(void) {
    rng_seed(30);
    for (int sq = 0; sq < 2; sq++) {
        dice_case(1, 1, 1, (dice_p){sq, false}, false, true);
        dice_case(2, 7, 3, (dice_p){sq, false}, false, true);
        dice_case(3, 50, 4, (dice_p){sq, true}, true, true);
        dice_case(2, 33, 1, (dice_p){sq, false}, true, true);
        dice_case(2, 70001, 2, (dice_p){sq, false}, false, false); /* chunks, threads */
        dice_case(1, 4096, 5, (dice_p){sq, true}, true, false);
    }
}

/* ==== embedding =============================================================================== */

static mt_status call_emb_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_embedding_fwd(ctx, &in[0], &in[1], &out[0]);
}

static mt_status call_emb_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_embedding_bwd(ctx, &in[0], &in[1], &out[0]);
}

/* ids of shape ids_shape (1 or 2 dims) into a (v, d) table; few distinct ids so rows repeat. */
static void emb_case(int64_t v, int64_t d, int ids_nd, const int64_t *ids_shape) {
    io f = {.nin = 2, .nout = 1}, b = {.nin = 2, .nout = 1};
    f.in[0] = HT(MT_F32, v, d);
    f.in[1] = H(MT_I32, ids_nd, ids_shape);
    int64_t oshape[4] = {ids_shape[0], ids_nd > 1 ? ids_shape[1] : d, d};
    f.out[0] = H(MT_F32, ids_nd + 1, oshape);
    fill_uniform(&f.in[0], -1, 1);
    int64_t n = N(&f.in[1]);
    for (int64_t i = 0; i < n; i++) I32(&f.in[1])[i] = (int32_t)rng_int(0, v - 1);
    double *out = DBL(n * d), *dt = DBL(v * d), *mag = DBL(v * d);
    b.in[0] = f.in[1];
    b.in[1] = H_like(&f.out[0]);
    b.out[0] = HT(MT_F32, v, d);
    fill_uniform(&b.in[1], -1, 1);
    fill_uniform(&b.out[0], -1, 1); /* the backward adds to what is there */
    for (int64_t i = 0; i < v * d; i++) dt[i] = F(&b.out[0])[i], mag[i] = fabs(dt[i]);
    for (int64_t i = 0; i < n; i++) {
        int32_t id = I32(&f.in[1])[i];
        for (int64_t j = 0; j < d; j++) {
            out[i * d + j] = F(&f.in[0])[id * d + j];
            dt[id * d + j] += F(&b.in[1])[i * d + j];
            mag[id * d + j] += fabs(F(&b.in[1])[i * d + j]);
        }
    }
    char label[128], dd[96];
    snprintf(label, sizeof label, "table [%" PRId64 ",%" PRId64 "], ids %s", v, d,
             desc(&f.in[1], dd));
    run_case("embedding_fwd", label, call_emb_fwd, NULL, &f, (expect[]){{out, NULL, 0, 1.0}}, NULL);
    run_case("embedding_bwd", label, call_emb_bwd, NULL, &b, (expect[]){{dt, mag, F32_TOL, 1.0}},
             NULL);
    /* L = sum(w * table[ids]) with dtable starting at zero */
    io bz = b;
    bz.out[0] = HT(MT_F32, v, d);
    memset(bz.out[0].data, 0, mt_tensor_bytes(&bz.out[0]));
    for (int d2 = 0; d2 < MT_DEVICE_COUNT; d2++) {
        mt_tensor g;
        if (g_have[d2] && grad_on(&g_ctx[d2], call_emb_bwd, NULL, &bz, &g))
            fd_check(&g_ctx[d2], "embedding_bwd", label, call_emb_fwd, NULL, &f, 0, F(&b.in[1]), &g,
                     1e-2);
    }
}

static void test_embedding(void) {
    rng_seed(11);
    emb_case(1, 1, 1, (int64_t[]){1});
    emb_case(5, 3, 1, (int64_t[]){12});
    emb_case(50, 17, 2, (int64_t[]){3, 7});
    emb_case(3, 200, 1, (int64_t[]){40}); /* heavy repetition, several column blocks */
    emb_case(1000, 64, 2, (int64_t[]){4, 130});
}

/* ==== cast ==================================================================================== */

static mt_status call_cast(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_cast(ctx, &in[0], &out[0]);
}

static float f32_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_of_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Round-to-nearest-even to a format whose finite values are listed (ascending, positive, zero
 * first) in vals/codes, written without bit tricks: find the neighbours, compare distances. */
static uint16_t round_to_table(double x, const double *vals, const uint16_t *codes, int n,
                               double overflow, uint16_t inf_code, uint16_t sign_bit) {
    uint16_t sign = signbit(x) ? sign_bit : 0;
    double a = fabs(x);
    if (a >= overflow) return sign | inf_code;
    int lo = 0, hi = n - 1; /* largest vals[lo] <= a */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (vals[mid] <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (lo == n - 1) return sign | codes[lo]; /* between max and the overflow threshold */
    double dl = a - vals[lo], dh = vals[lo + 1] - a;
    int pick = dl < dh ? lo : dh < dl ? lo + 1 : (codes[lo] & 1) ? lo + 1 : lo;
    return sign | codes[pick];
}

/* Every positive finite f16 value in order, decoded with ldexp (not with the code under test). */
static int f16_table(double *vals, uint16_t *codes) {
    int n = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        uint32_t e = h >> 10, m = h & 0x3ff;
        vals[n] = e ? ldexp(1.0 + m / 1024.0, (int)e - 15) : ldexp((double)m, -24);
        codes[n++] = (uint16_t)h;
    }
    return n;
}

static bool f16_is_nan(uint16_t h) {
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}
static bool bf16_is_nan(uint16_t h) {
    return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

/* bf16 by the same neighbour comparison: bf16 values are the f32 values with 16 zero low bits. */
static uint16_t bf16_ref(float f) {
    uint32_t u = bits_of_f32(f), a = u & 0x7fffffffu;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    if (a >= 0x7f800000u) return (uint16_t)(u >> 16); /* inf (NaN is checked separately) */
    uint32_t lo = a & 0xffff0000u;
    double x = fabs((double)f), vlo = f32_of_bits(lo);
    double vhi = lo + 0x10000u >= 0x7f800000u ? ldexp(1.0, 128) : f32_of_bits(lo + 0x10000u);
    double dl = x - vlo, dh = vhi - x;
    uint32_t pick = dl < dh ? lo : dh < dl ? lo + 0x10000u : ((lo >> 16) & 1) ? lo + 0x10000u : lo;
    return (uint16_t)(sign | (pick >> 16));
}

/* Interesting f32 inputs: specials, ties, the edges of each format, and random values across
 * exponents. */
static void fill_cast_inputs(mt_tensor *t) {
    static const uint32_t special[] = {
        0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001,
        0x00000001, 0x807fffff, 0x7f7fffff, 0xff7fffff, 0x3f808000, 0x3f818000, 0x3f808001,
        0x3f807fff, 0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x38800000, 0x387fe000,
        0x33000000, 0x33000001, 0x33800000, 0x33c00000, 0x34400000, 0x3f801000, 0x3f803000,
        0x7f7f8000, 0x7f7f7fff, 0x47800000, 0xc77ff000};
    int64_t n = N(t), ns = (int64_t)(sizeof special / sizeof special[0]);
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        if (i < ns)
            u = special[i];
        else if (i % 3 == 0)
            u = (uint32_t)rng_u64(); /* anything, NaNs included */
        else if (i % 3 == 1)
            u = (uint32_t)(rng_int(0x33000000, 0x47800000) | (rng_u64() & 1u) << 31);
        else
            u = ((uint32_t)rng_int(0x30000000, 0x7f7fffff) & 0xffffe000u) | 0x1000u; /* ties */
        F(t)[i] = f32_of_bits(u);
    }
}

static void cast_case_f32_to_16(mt_dtype to, int64_t n, const double *tv, const uint16_t *tc,
                                int tn) {
    io c = {.nin = 1, .nout = 1};
    c.in[0] = HT(MT_F32, n);
    c.out[0] = HT(to, n);
    fill_cast_inputs(&c.in[0]);
    mt_tensor res[MAX_IO] = {0};
    run_case("cast", to == MT_BF16 ? "f32 -> bf16" : "f32 -> f16", call_cast, NULL, &c,
             (expect[]){{NULL, NULL, 0, 1.0}}, res);
    if (!res[0].data) return;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float x = F(&c.in[0])[i];
        uint16_t got = ((uint16_t *)res[0].data)[i];
        bool ok;
        if (isnan(x)) {
            ok = to == MT_BF16 ? bf16_is_nan(got) : f16_is_nan(got);
        } else {
            uint16_t want = to == MT_BF16 ? bf16_ref(x)
                                          : round_to_table(x, tv, tc, tn, 65520.0, 0x7c00, 0x8000);
            ok = got == want;
            if (!ok && ++bad <= 3)
                mt_test_check_failed(__FILE__, __LINE__,
                                     "cast f32 %.9g (0x%08x) -> %s: 0x%04x, expected 0x%04x", x,
                                     bits_of_f32(x), mt_dtype_name(to), got, want);
            continue;
        }
        if (!ok && ++bad <= 3)
            mt_test_check_failed(__FILE__, __LINE__,
                                 "cast f32 NaN (0x%08x) -> %s: 0x%04x is not NaN", bits_of_f32(x),
                                 mt_dtype_name(to), got);
    }
}

/* Every 16-bit pattern to f32, exactly. */
static void cast_case_16_to_f32(mt_dtype from) {
    io c = {.nin = 1, .nout = 1};
    c.in[0] = HT(from, 65536);
    c.out[0] = HT(MT_F32, 65536);
    double *val = DBL(65536);
    for (uint32_t h = 0; h < 65536; h++) {
        ((uint16_t *)c.in[0].data)[h] = (uint16_t)h;
        if (from == MT_BF16) {
            val[h] = f32_of_bits(h << 16);
        } else {
            uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
            double mag = e == 31 ? (m ? NAN : INFINITY)
                         : e     ? ldexp(1.0 + m / 1024.0, (int)e - 15)
                                 : ldexp((double)m, -24);
            val[h] = (h & 0x8000) ? -mag : mag;
        }
    }
    run_case("cast", from == MT_BF16 ? "bf16 -> f32, all values" : "f16 -> f32, all values",
             call_cast, NULL, &c, (expect[]){{val, NULL, 0, 1.0}}, NULL);
}

static void cast_case_int(mt_dtype from, int64_t n) {
    io c = {.nin = 1, .nout = 1};
    c.in[0] = HT(from, n);
    c.out[0] = HT(MT_F32, n);
    double *val = DBL(n);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = from == MT_U8    ? i % 256
                    : from == MT_U16 ? (i < 2 ? i * 65535 : rng_int(0, 65535))
                    : i < 3          ? (int64_t[]){INT32_MAX, INT32_MIN, 16777217}[i]
                                     : rng_int(INT32_MIN, INT32_MAX);
        if (from == MT_U8) ((uint8_t *)c.in[0].data)[i] = (uint8_t)v;
        if (from == MT_U16) ((uint16_t *)c.in[0].data)[i] = (uint16_t)v;
        if (from == MT_I32) ((int32_t *)c.in[0].data)[i] = (int32_t)v;
        val[i] = (float)(double)v; /* exact to double, then one rounding to f32 */
    }
    char label[32];
    snprintf(label, sizeof label, "%s -> f32", mt_dtype_name(from));
    run_case("cast", label, call_cast, NULL, &c, (expect[]){{val, NULL, 0, 1.0}}, NULL);
}

static void test_cast(void) {
    rng_seed(12);
    double *tv = DBL(0x7c00);
    uint16_t *tc = test_alloc(0x7c00 * sizeof(uint16_t));
    int tn = f16_table(tv, tc);
    cast_case_f32_to_16(MT_BF16, 20000, tv, tc, tn);
    cast_case_f32_to_16(MT_F16, 20000, tv, tc, tn);
    cast_case_f32_to_16(MT_F16, 1, tv, tc, tn);
    cast_case_16_to_f32(MT_BF16);
    cast_case_16_to_f32(MT_F16);
    cast_case_int(MT_U8, 300);
    cast_case_int(MT_U16, 1000);
    cast_case_int(MT_I32, 1000);
    /* Round trips: every non-NaN 16-bit value survives 16 -> f32 -> 16 unchanged. */
    for (int bf = 0; bf < 2; bf++) {
        int64_t bad = 0;
        for (uint32_t h = 0; h < 65536; h++) {
            uint16_t h16 = (uint16_t)h;
            if (bf ? bf16_is_nan(h16) : f16_is_nan(h16)) continue;
            uint16_t back =
                bf ? mt_f32_to_bf16(mt_bf16_to_f32(h16)) : mt_f32_to_f16(mt_f16_to_f32(h16));
            if (back != h16 && ++bad <= 3)
                mt_test_check_failed(__FILE__, __LINE__, "%s round trip 0x%04x -> 0x%04x",
                                     bf ? "bf16" : "f16", h16, back);
        }
    }
    /* Same dtype is a copy. */
    mt_ctx *ctx = &g_ctx[MT_CPU];
    mt_tensor a = HT(MT_I32, 3), b = HT(MT_I32, 3);
    for (int i = 0; i < 3; i++) I32(&a)[i] = -i - 7;
    MT_CHECK_OK(mt_cast(ctx, &a, &b));
    MT_CHECK(memcmp(a.data, b.data, 12) == 0);
}

/* ==== convolution ============================================================================= */

typedef struct conv_p {
    mt_conv2d_params cp;
    bool bias;
} conv_p;

/* in: x, w[, bias]; out: y */
static mt_status call_conv_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const conv_p *c = p;
    return mt_conv2d_fwd(ctx, &c->cp, &in[0], &in[1], c->bias ? &in[2] : NULL, &out[0]);
}

/* in: dy, w; out: dx */
static mt_status call_conv_bwd_data(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const conv_p *c = p;
    return mt_conv2d_bwd_data(ctx, &c->cp, &in[0], &in[1], &out[0]);
}

/* in: x, dy; out: dw[, dbias] */
static mt_status call_conv_bwd_filter(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const conv_p *c = p;
    return mt_conv2d_bwd_filter(ctx, &c->cp, &in[0], &in[1], &out[0], c->bias ? &out[1] : NULL);
}

/* The same with dbias as output 0 (for grad_on): in: x, dy; out: dbias, dw. */
static mt_status call_conv_bwd_bias(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const conv_p *c = p;
    return mt_conv2d_bwd_filter(ctx, &c->cp, &in[0], &in[1], &out[1], &out[0]);
}

typedef struct conv_geo {
    int64_t n, h, w, c, k, r, s, p, q, cg, kg;
} conv_geo;

/* Output sizes by PyTorch's formula, written out here rather than taken from the library. */
static conv_geo conv_geo_of(const mt_conv2d_params *cp, int64_t n, int64_t h, int64_t w, int64_t c,
                            int64_t k, int64_t r, int64_t s) {
    conv_geo g = {n, h, w, c, k, r, s, 0, 0, c / cp->groups, k / cp->groups};
    g.p = (h + 2 * cp->pad_h - cp->dil_h * (r - 1) - 1) / cp->stride_h + 1;
    g.q = (w + 2 * cp->pad_w - cp->dil_w * (s - 1) - 1) / cp->stride_w + 1;
    return g;
}

/* Every term of the convolution once, by the direct 7-loop definition, in double: y, dx (for dy),
 * dw and db (for dy, added to what they hold), each with the magnitude of its terms. */
typedef struct conv_refs {
    double *y, *ymag, *dx, *dxmag, *dw, *dwmag, *db, *dbmag;
} conv_refs;

static void conv_reference(const mt_conv2d_params *cp, const conv_geo *g, const float *x,
                           const float *w, const float *b, const float *dy, conv_refs *o) {
    int64_t nx = g->n * g->h * g->w * g->c;
    for (int64_t i = 0; i < nx; i++) o->dx[i] = o->dxmag[i] = 0;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t p = 0; p < g->p; p++)
            for (int64_t q = 0; q < g->q; q++)
                for (int64_t k = 0; k < g->k; k++) {
                    int64_t gi = k / g->kg, yo = ((n * g->p + p) * g->q + q) * g->k + k;
                    double acc = b ? b[k] : 0, mag = fabs(acc);
                    o->db[k] += dy[yo];
                    o->dbmag[k] += fabs(dy[yo]);
                    for (int64_t r = 0; r < g->r; r++)
                        for (int64_t s = 0; s < g->s; s++) {
                            int64_t ih = p * cp->stride_h - cp->pad_h + r * cp->dil_h;
                            int64_t iw = q * cp->stride_w - cp->pad_w + s * cp->dil_w;
                            if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w) continue;
                            for (int64_t cc = 0; cc < g->cg; cc++) {
                                int64_t xi = ((n * g->h + ih) * g->w + iw) * g->c + gi * g->cg + cc;
                                int64_t wi = ((k * g->r + r) * g->s + s) * g->cg + cc;
                                double t = (double)x[xi] * w[wi];
                                acc += t;
                                mag += fabs(t);
                                o->dx[xi] += (double)dy[yo] * w[wi];
                                o->dxmag[xi] += fabs((double)dy[yo] * w[wi]);
                                o->dw[wi] += (double)dy[yo] * x[xi];
                                o->dwmag[wi] += fabs((double)dy[yo] * x[xi]);
                            }
                        }
                    o->y[yo] = acc;
                    o->ymag[yo] = mag;
                }
}

/* One convolution: forward, both backwards against the reference, and (fd) finite differences for
 * x, w and bias. chunk_rows > 0 shrinks the CPU's im2col chunks to that many output pixels. */
static void conv_case(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k, int64_t r, int64_t s,
                      mt_conv2d_params cp, bool bias, int64_t chunk_rows, bool fd) {
    conv_p pp = {cp, bias};
    conv_geo g = conv_geo_of(&cp, n, h, w, c, k, r, s);
    io f = {.nin = bias ? 3 : 2, .nout = 1};
    f.in[0] = HT(MT_F32, n, h, w, c);
    f.in[1] = HT(MT_F32, k, r, s, g.cg);
    if (bias) f.in[2] = HT(MT_F32, k);
    f.out[0] = HT(MT_F32, n, g.p, g.q, k);
    for (int i = 0; i < f.nin; i++) fill_uniform(&f.in[i], -1, 1);
    mt_tensor dy = H_like(&f.out[0]);
    fill_uniform(&dy, -1, 1);
    /* backward data: in dy, w; out dx (NaN-filled: must be overwritten) */
    io bd = {.nin = 2, .nout = 1, .in = {dy, f.in[1]}, .out = {H_like(&f.in[0])}};
    /* backward filter: in x, dy; out dw, dbias holding earlier gradients (they accumulate) */
    io bf = {.nin = 2, .nout = bias ? 2 : 1, .in = {f.in[0], dy}, .out = {H_like(&f.in[1])}};
    fill_uniform(&bf.out[0], -1, 1);
    if (bias) {
        bf.out[1] = HT(MT_F32, k);
        fill_uniform(&bf.out[1], -1, 1);
    }
    int64_t ny = N(&f.out[0]), nx = N(&f.in[0]), nw = N(&f.in[1]);
    conv_refs o = {DBL(ny), DBL(ny), DBL(nx), DBL(nx), DBL(nw), DBL(nw), DBL(k), DBL(k)};
    for (int64_t i = 0; i < nw; i++) o.dw[i] = F(&bf.out[0])[i], o.dwmag[i] = fabs(o.dw[i]);
    for (int64_t i = 0; i < k; i++) {
        o.db[i] = bias ? F(&bf.out[1])[i] : 0;
        o.dbmag[i] = fabs(o.db[i]);
    }
    conv_reference(&cp, &g, F(&f.in[0]), F(&f.in[1]), bias ? F(&f.in[2]) : NULL, F(&dy), &o);

    char label[200], dx_[96], dw_[96];
    snprintf(label, sizeof label, "x %s, w %s, stride %dx%d, pad %dx%d, dil %dx%d, groups %d%s%s",
             desc(&f.in[0], dx_), desc(&f.in[1], dw_), cp.stride_h, cp.stride_w, cp.pad_h, cp.pad_w,
             cp.dil_h, cp.dil_w, cp.groups, bias ? ", bias" : "",
             chunk_rows ? ", small chunks" : "");
    if (chunk_rows)
        mt_cpu_conv_set_chunk_bytes((size_t)(chunk_rows * r * s * g.cg) * sizeof(float));
    run_case("conv2d_fwd", label, call_conv_fwd, &pp, &f, (expect[]){{o.y, o.ymag, F32_TOL, 1.0}},
             NULL);
    run_case("conv2d_bwd_data", label, call_conv_bwd_data, &pp, &bd,
             (expect[]){{o.dx, o.dxmag, GRAD_TOL, 1.0}}, NULL);
    run_case("conv2d_bwd_filter", label, call_conv_bwd_filter, &pp, &bf,
             (expect[]){{o.dw, o.dwmag, GRAD_TOL, 1.0}, {o.db, o.dbmag, GRAD_TOL, 1.0}}, NULL);
    if (fd) { /* L = <dy, conv(x, w) + bias>; the filter gradients start from zero */
        io bz = bf;
        bz.out[0] = H_like(&f.in[1]);
        memset(bz.out[0].data, 0, mt_tensor_bytes(&bz.out[0]));
        if (bias) {
            bz.out[1] = HT(MT_F32, k);
            memset(bz.out[1].data, 0, mt_tensor_bytes(&bz.out[1]));
        }
        io bb = bz; /* dbias first, for grad_on */
        if (bias) bb.out[0] = bz.out[1], bb.out[1] = bz.out[0];
        for (int d = 0; d < MT_DEVICE_COUNT; d++) {
            mt_tensor grad;
            if (!g_have[d]) continue;
            if (grad_on(&g_ctx[d], call_conv_bwd_data, &pp, &bd, &grad))
                fd_check(&g_ctx[d], "conv2d_bwd_data", label, call_conv_fwd, &pp, &f, 0, F(&dy),
                         &grad, 1e-2);
            if (grad_on(&g_ctx[d], call_conv_bwd_filter, &pp, &bz, &grad))
                fd_check(&g_ctx[d], "conv2d_bwd_filter", label, call_conv_fwd, &pp, &f, 1, F(&dy),
                         &grad, 1e-2);
            if (bias && grad_on(&g_ctx[d], call_conv_bwd_bias, &pp, &bb, &grad))
                fd_check(&g_ctx[d], "conv2d_bwd_filter", label, call_conv_fwd, &pp, &f, 2, F(&dy),
                         &grad, 1e-2);
        }
    }
    if (chunk_rows) mt_cpu_conv_set_chunk_bytes(0);
}

/* stride, pad, dilation, groups */
#define CONV(sh, sw, ph, pw, dh, dw, gr) ((mt_conv2d_params){sh, sw, ph, pw, dh, dw, gr})

static void test_conv(void) {
    rng_seed(20);
    conv_case(2, 5, 4, 3, 4, 1, 1, CONV(1, 1, 0, 0, 1, 1, 1), true, 0, true); /* one GEMM */
    conv_case(2, 6, 7, 5, 6, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), true, 0, true);
    conv_case(1, 7, 9, 4, 5, 3, 3, CONV(2, 2, 1, 1, 1, 1, 1), false, 0, true); /* odd, strided */
    conv_case(2, 9, 8, 3, 4, 3, 3, CONV(1, 1, 2, 2, 2, 2, 1), true, 0, true);  /* dilated */
    conv_case(2, 6, 6, 6, 4, 3, 3, CONV(1, 1, 1, 1, 1, 1, 2), true, 0, true);  /* groups */
    conv_case(2, 5, 5, 6, 9, 1, 1, CONV(1, 1, 0, 0, 1, 1, 3), true, 0, true);  /* grouped 1x1 */
    conv_case(2, 7, 6, 5, 5, 3, 3, CONV(1, 1, 1, 1, 1, 1, 5), true, 0, true);  /* depthwise */
    conv_case(1, 9, 9, 4, 4, 5, 5, CONV(2, 2, 2, 2, 1, 1, 4), false, 0, true); /* depthwise 5x5 */
    conv_case(1, 9, 8, 3, 3, 3, 3, CONV(2, 2, 2, 2, 2, 2, 3), true, 0, true);  /* depthwise, dil */
    conv_case(2, 6, 5, 3, 6, 3, 3, CONV(1, 2, 1, 0, 1, 2, 3), true, 0, true);  /* multiplier 2 */
    conv_case(2, 16, 16, 1, 4, 7, 7, CONV(2, 2, 3, 3, 1, 1, 1), false, 0,
              true);                                                            /* 1-channel stem */
    conv_case(1, 15, 13, 3, 8, 7, 7, CONV(2, 2, 3, 3, 1, 1, 1), true, 0, true); /* RGB stem */
    conv_case(2, 8, 8, 6, 5, 1, 1, CONV(2, 2, 0, 0, 1, 1, 1), false, 0, true);  /* downsample */
    conv_case(1, 5, 6, 4, 3, 1, 3, CONV(1, 1, 0, 1, 1, 1, 1), true, 0, true);   /* 1x3 */
    conv_case(1, 6, 5, 4, 3, 3, 1, CONV(2, 1, 1, 0, 1, 1, 1), true, 0, true);   /* 3x1 */
    conv_case(1, 2, 2, 3, 2, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), true, 0, true);   /* map < kernel */
    conv_case(1, 3, 3, 2, 2, 3, 3, CONV(3, 3, 0, 0, 1, 1, 1), true, 0, true);   /* one pixel out */
    conv_case(2, 4, 5, 3, 4, 2, 2, CONV(3, 3, 1, 1, 1, 1, 1), true, 0, true);   /* stride > k */
    conv_case(1, 5, 5, 2, 3, 3, 3, CONV(1, 1, 4, 4, 1, 1, 1), false, 0, true);  /* pad > kernel */
    conv_case(3, 4, 3, 2, 1, 2, 3, CONV(1, 1, 0, 1, 1, 1, 1), true, 0, true);   /* one filter */
    /* chunks of a few output pixels, ending mid-row and mid-image */
    conv_case(2, 6, 7, 5, 6, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), true, 7, true);
    conv_case(2, 7, 9, 4, 5, 3, 3, CONV(2, 2, 1, 1, 1, 1, 1), false, 1, false);
    conv_case(2, 9, 8, 3, 4, 3, 3, CONV(1, 1, 2, 2, 2, 2, 1), true, 5, false);
    conv_case(2, 6, 6, 6, 4, 3, 3, CONV(1, 1, 1, 1, 1, 1, 2), true, 11, false);
    conv_case(2, 6, 5, 3, 6, 3, 3, CONV(1, 2, 1, 0, 1, 2, 3), true, 4, false);
    conv_case(2, 8, 8, 6, 5, 1, 1, CONV(2, 2, 0, 0, 1, 1, 1), false, 3, false);
    conv_case(2, 16, 16, 1, 4, 7, 7, CONV(2, 2, 3, 3, 1, 1, 1), false, 13, false);
    /* more filters than im2col columns */
    conv_case(2, 7, 6, 3, 20, 1, 1, CONV(2, 2, 0, 0, 1, 1, 1), true, 0, true);
    conv_case(1, 12, 12, 1, 64, 7, 7, CONV(2, 2, 3, 3, 1, 1, 1), false, 5, false);
    conv_case(2, 30, 30, 2, 64, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), true, 41, false);
    /* filter gradients too large for partial sums, split by columns or by filters */
    conv_case(1, 4, 4, 256, 128, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), true, 0, false);
    conv_case(2, 6, 6, 256, 128, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), false, 5, false);
    conv_case(1, 4, 4, 520, 560, 1, 1, CONV(2, 2, 0, 0, 1, 1, 1), false, 0, false);
    conv_case(2, 10, 10, 520, 560, 1, 1, CONV(2, 2, 0, 0, 1, 1, 1), true, 7, false);
    /* ... and large enough for a team of threads */
    conv_case(2, 26, 24, 16, 32, 3, 3, CONV(2, 2, 1, 1, 1, 1, 1), true, 37, false);
    conv_case(2, 20, 18, 16, 24, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), true, 29, false);
    /* larger: several chunks at the default size, OpenMP thresholds */
    conv_case(4, 32, 32, 64, 8, 3, 3, CONV(1, 1, 1, 1, 1, 1, 1), true, 0, false);
    conv_case(2, 20, 20, 48, 48, 3, 3, CONV(2, 2, 1, 1, 1, 1, 48), true, 0, false);
    conv_case(2, 14, 14, 32, 40, 1, 1, CONV(1, 1, 0, 0, 1, 1, 1), true, 0, false);
    conv_case(1, 6, 7, 80, 72, 3, 3, CONV(1, 1, 1, 1, 1, 1, 2), false, 0, false); /* wide groups */
    /* im2col copies each kernel row as one run of S*C floats, by length class (under 4, 4-8,
     * 9-16, 17-32, over 32), its edges clipped by the padding; blocks start mid-row */
    conv_case(2, 9, 11, 1, 6, 3, 3, CONV(2, 2, 1, 1, 1, 1, 1), true, 5, true);  /* 3, 1, 2 */
    conv_case(1, 8, 9, 4, 5, 2, 2, CONV(1, 2, 1, 1, 1, 1, 1), true, 7, true);   /* 8, 4 */
    conv_case(2, 7, 8, 8, 6, 3, 2, CONV(2, 1, 1, 1, 1, 1, 1), false, 3, false); /* 16, 8 */
    conv_case(1, 6, 9, 16, 4, 2, 2, CONV(1, 2, 0, 1, 1, 1, 1), true, 9, false); /* 32, 16 */
    conv_case(1, 7, 7, 11, 5, 3, 3, CONV(2, 2, 1, 1, 1, 1, 1), true, 4, false); /* 33, 22 */
    conv_case(2, 40, 36, 1, 64, 7, 7, CONV(2, 2, 3, 3, 1, 1, 1), true, 0,
              false); /* stem, threads */
    conv_case(1, 30, 34, 3, 64, 7, 7, CONV(2, 2, 3, 3, 1, 1, 1), true, 0, false);
}

/* 3x3 stride-1 convolutions of at least 8 channels and filters run Winograd F(2x2, 3x3) on the
 * CPU: the filter gradient always, the forward and backward data (whose transposed convolution
 * has padding 2 - pad) where the output is at least 8x8. 2x2 output tiles over 4x4 input patches,
 * the last tile row and column cut off where the output is odd, padding read as zeros, tiles in
 * blocks of a fixed size; filter gradients summed in fixed partial sums or, past 8192 filter
 * channel pairs, block by block. */
static void test_conv_winograd(void) {
    rng_seed(21);
    const mt_conv2d_params same = CONV(1, 1, 1, 1, 1, 1, 1);
    conv_case(1, 8, 8, 8, 8, 3, 3, same, true, 0, true);                         /* smallest */
    conv_case(2, 9, 11, 8, 12, 3, 3, same, true, 0, true);                       /* odd output */
    conv_case(1, 12, 10, 9, 8, 3, 3, CONV(1, 1, 0, 0, 1, 1, 1), true, 0, true);  /* pad 0 | 2 */
    conv_case(1, 8, 9, 10, 8, 3, 3, CONV(1, 1, 2, 2, 1, 1, 1), false, 0, true);  /* pad 2 | 0 */
    conv_case(2, 11, 8, 8, 9, 3, 3, CONV(1, 1, 0, 2, 1, 1, 1), true, 0, false);  /* pad 0x2 */
    conv_case(1, 9, 10, 8, 8, 3, 3, CONV(1, 1, 2, 1, 1, 1, 1), false, 0, false); /* pad 2x1 */
    conv_case(1, 8, 8, 8, 8, 3, 3, CONV(1, 1, 3, 3, 1, 1, 1), true, 0, false);   /* pad 3 */
    /* blocks of a few tiles (the last one partial, starting mid-row and mid-image) */
    conv_case(3, 9, 13, 8, 12, 3, 3, same, true, 37, false);
    conv_case(2, 10, 9, 16, 8, 3, 3, CONV(1, 1, 0, 1, 1, 1, 1), false, 3, false);
    /* larger: several blocks at the default size, a team of threads; where U_xi is packed
     * (C*K > 62500), blocks of many tiles */
    conv_case(3, 20, 17, 32, 24, 3, 3, same, true, 0, false);
    conv_case(2, 16, 16, 64, 64, 3, 3, same, false, 0, false);
    conv_case(2, 9, 8, 256, 264, 3, 3, same, true, 0, false);
    conv_case(2, 9, 8, 96, 100, 3, 3, same, false, 20, false); /* blocks of 5 tiles */
    /* just outside: 7 channels, 7 filters (im2col), a 7-pixel output (im2col but the filter
     * gradient) */
    conv_case(1, 9, 9, 7, 8, 3, 3, same, true, 0, false);
    conv_case(1, 9, 9, 8, 7, 3, 3, same, true, 0, false);
    conv_case(2, 7, 12, 8, 8, 3, 3, same, true, 0, false);
}

/* The geometry helpers against PyTorch's numbers. */
static void test_conv_pool_geometry(void) {
    MT_CHECK(mt_conv2d_out_dim(224, 7, 2, 3, 1) == 112);
    MT_CHECK(mt_conv2d_out_dim(56, 3, 1, 1, 1) == 56 && mt_conv2d_out_dim(56, 1, 2, 0, 1) == 28);
    MT_CHECK(mt_conv2d_out_dim(9, 3, 1, 2, 2) == 9 && mt_conv2d_out_dim(2, 3, 1, 0, 1) == 0);
    MT_CHECK(mt_conv2d_out_dim(5, 3, 0, 0, 1) == 0); /* bad stride */
    MT_CHECK(mt_pool2d_out_dim(112, 3, 2, 1, false) == 56);
    MT_CHECK(mt_pool2d_out_dim(6, 3, 2, 1, false) == 3 && mt_pool2d_out_dim(6, 3, 2, 1, true) == 4);
    MT_CHECK(mt_pool2d_out_dim(5, 2, 2, 0, false) == 2 && mt_pool2d_out_dim(5, 2, 2, 0, true) == 3);
    /* ceil_mode: a last window starting in the right padding is dropped */
    MT_CHECK(mt_pool2d_out_dim(5, 3, 3, 1, true) == 2 && mt_pool2d_out_dim(5, 3, 3, 1, false) == 2);
    MT_CHECK(mt_pool2d_out_dim(7, 7, 1, 0, false) == 1 && mt_pool2d_out_dim(2, 3, 1, 0, true) == 0);
}

/* ==== per-channel bias ======================================================================== */

/* in: bias; out: x (+= bias) */
static mt_status call_bias_add(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_bias_add(ctx, &in[0], &out[0]);
}

/* The forward as a function of the bias, for finite differences. in: bias, x; out: x + bias */
static mt_status call_bias_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[1]));
    return mt_bias_add(ctx, &in[0], &out[0]);
}

/* in: dy; out: dbias (+=) */
static mt_status call_bias_grad(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_bias_grad(ctx, &in[0], &out[0]);
}

static void bias_case(int nd, const int64_t *shape, bool fd) {
    int64_t c = shape[nd - 1];
    io a = {.nin = 1, .nout = 1, .in = {HT(MT_F32, c)}, .out = {H(MT_F32, nd, shape)}};
    fill_uniform(&a.in[0], -1, 1);
    fill_uniform(&a.out[0], -2, 2);
    int64_t n = N(&a.out[0]), rows = n / c;
    double *y = DBL(n), *db = DBL(c), *dbmag = DBL(c);
    for (int64_t i = 0; i < n; i++) y[i] = (double)F(&a.out[0])[i] + F(&a.in[0])[i % c];
    io g = {.nin = 1, .nout = 1, .in = {H(MT_F32, nd, shape)}, .out = {HT(MT_F32, c)}};
    fill_uniform(&g.in[0], -1, 1);
    fill_uniform(&g.out[0], -1, 1); /* earlier gradients: bias_grad adds */
    for (int64_t j = 0; j < c; j++) db[j] = F(&g.out[0])[j], dbmag[j] = fabs(db[j]);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < c; j++) {
            db[j] += F(&g.in[0])[r * c + j];
            dbmag[j] += fabs(F(&g.in[0])[r * c + j]);
        }
    char label[128], d[96];
    snprintf(label, sizeof label, "x %s", desc(&a.out[0], d));
    run_case("bias_add", label, call_bias_add, NULL, &a, (expect[]){{y, NULL, F32_TOL, 1.0}}, NULL);
    run_case("bias_grad", label, call_bias_grad, NULL, &g, (expect[]){{db, dbmag, GRAD_TOL, 1.0}},
             NULL);
    if (!fd) return;
    /* L = <dy, x + bias>, from a zero gradient */
    io f = {.nin = 2, .nout = 1, .in = {a.in[0], a.out[0]}, .out = {H_like(&a.out[0])}};
    io gz = g;
    gz.out[0] = HT(MT_F32, c);
    memset(gz.out[0].data, 0, mt_tensor_bytes(&gz.out[0]));
    for (int dv = 0; dv < MT_DEVICE_COUNT; dv++) {
        mt_tensor grad;
        if (g_have[dv] && grad_on(&g_ctx[dv], call_bias_grad, NULL, &gz, &grad))
            fd_check(&g_ctx[dv], "bias_grad", label, call_bias_fwd, NULL, &f, 0, F(&g.in[0]), &grad,
                     1e-2);
    }
}

static void test_bias(void) {
    rng_seed(27);
    bias_case(1, (int64_t[]){1}, true);
    bias_case(1, (int64_t[]){7}, true);
    bias_case(2, (int64_t[]){5, 3}, true);
    bias_case(4, (int64_t[]){2, 3, 4, 6}, true);
    bias_case(2, (int64_t[]){300, 257}, false); /* OpenMP threshold */
    bias_case(2, (int64_t[]){40000, 3}, false); /* several chunks of rows */
}

/* ==== transposed convolution ================================================================== */

typedef struct convt_p {
    mt_conv2d_params cp;
    int oph, opw; /* output padding */
    bool bias;
} convt_p;

/* in: x, w[, bias]; out: y */
static mt_status call_convt_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const convt_p *t = p;
    return mt_conv_transpose2d_fwd(ctx, &t->cp, t->oph, t->opw, &in[0], &in[1],
                                   t->bias ? &in[2] : NULL, &out[0]);
}

/* in: dy, w; out: dx */
static mt_status call_convt_bwd_data(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const convt_p *t = p;
    return mt_conv_transpose2d_bwd_data(ctx, &t->cp, t->oph, t->opw, &in[0], &in[1], &out[0]);
}

/* in: x, dy; out: dw[, dbias] */
static mt_status call_convt_bwd_filter(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const convt_p *t = p;
    return mt_conv_transpose2d_bwd_filter(ctx, &t->cp, t->oph, t->opw, &in[0], &in[1], &out[0],
                                          t->bias ? &out[1] : NULL);
}

/* The same with dbias as output 0 (for grad_on): in: x, dy; out: dbias, dw. */
static mt_status call_convt_bwd_bias(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const convt_p *t = p;
    return mt_conv_transpose2d_bwd_filter(ctx, &t->cp, t->oph, t->opw, &in[0], &in[1], &out[1],
                                          &out[0]);
}

/* Output sizes by PyTorch's ConvTranspose2d formula; c and k are the input and output channels. */
static conv_geo convt_geo_of(const convt_p *t, int64_t n, int64_t h, int64_t w, int64_t c,
                             int64_t k, int64_t r, int64_t s) {
    const mt_conv2d_params *cp = &t->cp;
    conv_geo g = {n, h, w, c, k, r, s, 0, 0, c / cp->groups, k / cp->groups};
    g.p = (h - 1) * cp->stride_h - 2 * cp->pad_h + cp->dil_h * (r - 1) + 1 + t->oph;
    g.q = (w - 1) * cp->stride_w - 2 * cp->pad_w + cp->dil_w * (s - 1) + 1 + t->opw;
    return g;
}

/* The transposed convolution by its definition, a scatter: every input pixel adds x * w into the
 * output pixels its kernel taps land on (those outside the output are cropped by the padding),
 * in double; dx, dw and db for dy likewise (dw and db added to what they hold), with magnitudes.
 * x (n,h,w,c), w (c,r,s,kg), y (n,p,q,k). */
static void convt_reference(const mt_conv2d_params *cp, const conv_geo *g, const float *x,
                            const float *w, const float *b, const float *dy, conv_refs *o) {
    int64_t ny = g->n * g->p * g->q * g->k, nx = g->n * g->h * g->w * g->c;
    for (int64_t i = 0; i < ny; i++) o->y[i] = b ? b[i % g->k] : 0, o->ymag[i] = fabs(o->y[i]);
    for (int64_t i = 0; i < nx; i++) o->dx[i] = o->dxmag[i] = 0;
    for (int64_t i = 0; i < ny; i++) {
        o->db[i % g->k] += dy[i];
        o->dbmag[i % g->k] += fabs(dy[i]);
    }
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t ih = 0; ih < g->h; ih++)
            for (int64_t iw = 0; iw < g->w; iw++)
                for (int64_t c = 0; c < g->c; c++) {
                    int64_t gi = c / g->cg, xi = ((n * g->h + ih) * g->w + iw) * g->c + c;
                    for (int64_t r = 0; r < g->r; r++)
                        for (int64_t s = 0; s < g->s; s++) {
                            int64_t oh = ih * cp->stride_h - cp->pad_h + r * cp->dil_h;
                            int64_t ow = iw * cp->stride_w - cp->pad_w + s * cp->dil_w;
                            if (oh < 0 || oh >= g->p || ow < 0 || ow >= g->q) continue;
                            for (int64_t kk = 0; kk < g->kg; kk++) {
                                int64_t yo = ((n * g->p + oh) * g->q + ow) * g->k + gi * g->kg + kk;
                                int64_t wi = ((c * g->r + r) * g->s + s) * g->kg + kk;
                                double t = (double)x[xi] * w[wi];
                                o->y[yo] += t;
                                o->ymag[yo] += fabs(t);
                                o->dx[xi] += (double)dy[yo] * w[wi];
                                o->dxmag[xi] += fabs((double)dy[yo] * w[wi]);
                                o->dw[wi] += (double)dy[yo] * x[xi];
                                o->dwmag[wi] += fabs((double)dy[yo] * x[xi]);
                            }
                        }
                }
}

/* One transposed convolution x (n,h,w,c) -> (n,p,q,k): the three passes against the scatter
 * reference, and (fd) finite differences for x, w and bias. */
static void convt_case(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k, int64_t r, int64_t s,
                       convt_p tp, bool fd) {
    conv_geo g = convt_geo_of(&tp, n, h, w, c, k, r, s);
    io f = {.nin = tp.bias ? 3 : 2, .nout = 1};
    f.in[0] = HT(MT_F32, n, h, w, c);
    f.in[1] = HT(MT_F32, c, r, s, g.kg);
    if (tp.bias) f.in[2] = HT(MT_F32, k);
    f.out[0] = HT(MT_F32, n, g.p, g.q, k);
    for (int i = 0; i < f.nin; i++) fill_uniform(&f.in[i], -1, 1);
    mt_tensor dy = H_like(&f.out[0]);
    fill_uniform(&dy, -1, 1);
    io bd = {.nin = 2, .nout = 1, .in = {dy, f.in[1]}, .out = {H_like(&f.in[0])}};
    io bf = {.nin = 2, .nout = tp.bias ? 2 : 1, .in = {f.in[0], dy}, .out = {H_like(&f.in[1])}};
    fill_uniform(&bf.out[0], -1, 1); /* earlier gradients: they accumulate */
    if (tp.bias) {
        bf.out[1] = HT(MT_F32, k);
        fill_uniform(&bf.out[1], -1, 1);
    }
    int64_t ny = N(&f.out[0]), nx = N(&f.in[0]), nw = N(&f.in[1]);
    conv_refs o = {DBL(ny), DBL(ny), DBL(nx), DBL(nx), DBL(nw), DBL(nw), DBL(k), DBL(k)};
    for (int64_t i = 0; i < nw; i++) o.dw[i] = F(&bf.out[0])[i], o.dwmag[i] = fabs(o.dw[i]);
    for (int64_t i = 0; i < k; i++) {
        o.db[i] = tp.bias ? F(&bf.out[1])[i] : 0;
        o.dbmag[i] = fabs(o.db[i]);
    }
    convt_reference(&tp.cp, &g, F(&f.in[0]), F(&f.in[1]), tp.bias ? F(&f.in[2]) : NULL, F(&dy), &o);

    const mt_conv2d_params *cp = &tp.cp;
    char label[220], dx_[96], dw_[96];
    snprintf(label, sizeof label,
             "x %s, w %s, stride %dx%d, pad %dx%d, dil %dx%d, groups %d, out_pad %dx%d%s",
             desc(&f.in[0], dx_), desc(&f.in[1], dw_), cp->stride_h, cp->stride_w, cp->pad_h,
             cp->pad_w, cp->dil_h, cp->dil_w, cp->groups, tp.oph, tp.opw, tp.bias ? ", bias" : "");
    run_case("conv_transpose2d_fwd", label, call_convt_fwd, &tp, &f,
             (expect[]){{o.y, o.ymag, F32_TOL, 1.0}}, NULL);
    run_case("conv_transpose2d_bwd_data", label, call_convt_bwd_data, &tp, &bd,
             (expect[]){{o.dx, o.dxmag, GRAD_TOL, 1.0}}, NULL);
    run_case("conv_transpose2d_bwd_filter", label, call_convt_bwd_filter, &tp, &bf,
             (expect[]){{o.dw, o.dwmag, GRAD_TOL, 1.0}, {o.db, o.dbmag, GRAD_TOL, 1.0}}, NULL);
    if (!fd) return;
    /* L = <dy, convT(x, w) + bias>; the filter gradients start from zero */
    io bz = bf;
    bz.out[0] = H_like(&f.in[1]);
    memset(bz.out[0].data, 0, mt_tensor_bytes(&bz.out[0]));
    if (tp.bias) {
        bz.out[1] = HT(MT_F32, k);
        memset(bz.out[1].data, 0, mt_tensor_bytes(&bz.out[1]));
    }
    io bb = bz; /* dbias first, for grad_on */
    if (tp.bias) bb.out[0] = bz.out[1], bb.out[1] = bz.out[0];
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        mt_tensor grad;
        if (!g_have[d]) continue;
        if (grad_on(&g_ctx[d], call_convt_bwd_data, &tp, &bd, &grad))
            fd_check(&g_ctx[d], "conv_transpose2d_bwd_data", label, call_convt_fwd, &tp, &f, 0,
                     F(&dy), &grad, 1e-2);
        if (grad_on(&g_ctx[d], call_convt_bwd_filter, &tp, &bz, &grad))
            fd_check(&g_ctx[d], "conv_transpose2d_bwd_filter", label, call_convt_fwd, &tp, &f, 1,
                     F(&dy), &grad, 1e-2);
        if (tp.bias && grad_on(&g_ctx[d], call_convt_bwd_bias, &tp, &bb, &grad))
            fd_check(&g_ctx[d], "conv_transpose2d_bwd_filter", label, call_convt_fwd, &tp, &f, 2,
                     F(&dy), &grad, 1e-2);
    }
}

/* stride, pad, dilation, groups, output padding, bias */
#define CONVT(sh, sw, ph, pw, dh, dw, gr, oph, opw, bias)                                          \
    ((convt_p){{sh, sw, ph, pw, dh, dw, gr}, oph, opw, bias})

static void test_conv_transpose(void) {
    rng_seed(28);
    convt_case(2, 4, 5, 3, 4, 3, 3, CONVT(1, 1, 0, 0, 1, 1, 1, 0, 0, true), true);  /* full */
    convt_case(2, 3, 3, 5, 4, 1, 1, CONVT(1, 1, 0, 0, 1, 1, 1, 0, 0, false), true); /* 1x1 */
    convt_case(2, 4, 4, 6, 3, 2, 2, CONVT(2, 2, 0, 0, 1, 1, 1, 0, 0, true), true);  /* UNet up */
    convt_case(1, 5, 4, 4, 5, 3, 3, CONVT(2, 2, 1, 1, 1, 1, 1, 1, 1, true), true);  /* out_pad */
    convt_case(1, 4, 4, 2, 3, 4, 4, CONVT(2, 2, 1, 1, 1, 1, 1, 0, 0, true), true);  /* DCGAN */
    convt_case(2, 4, 3, 3, 2, 3, 3, CONVT(1, 1, 2, 2, 2, 2, 1, 0, 0, true), true);  /* dilated */
    convt_case(2, 3, 4, 4, 6, 3, 3, CONVT(2, 1, 1, 0, 1, 1, 2, 1, 0, true), true);  /* groups */
    convt_case(1, 5, 5, 3, 3, 3, 3, CONVT(2, 2, 1, 1, 1, 1, 3, 0, 1, false), true); /* depthwise */
    convt_case(1, 3, 5, 2, 3, 2, 3, CONVT(3, 2, 0, 1, 1, 2, 1, 2, 1, true), true);  /* non-square */
    convt_case(2, 4, 4, 2, 6, 3, 3, CONVT(3, 3, 1, 1, 1, 1, 2, 2, 2, true), true);  /* stride > k */
    convt_case(1, 1, 1, 4, 3, 3, 3, CONVT(1, 1, 0, 0, 1, 1, 1, 0, 0, true), true);  /* one pixel */
    convt_case(1, 4, 4, 3, 2, 3, 3, CONVT(1, 1, 2, 2, 1, 1, 1, 0, 0, true), true);  /* crops */
    /* larger: the convolutions' chunked and threaded paths */
    convt_case(2, 16, 16, 32, 16, 2, 2, CONVT(2, 2, 0, 0, 1, 1, 1, 0, 0, true), false);
    convt_case(2, 12, 10, 24, 24, 3, 3, CONVT(2, 2, 1, 1, 1, 1, 1, 1, 1, true), false);
    convt_case(1, 9, 9, 16, 16, 3, 3, CONVT(1, 1, 1, 1, 1, 1, 16, 0, 0, true), false);
}

/* PyTorch's own ConvTranspose2d on a small grouped case, to pin the weight layout and the output
 * padding to torch rather than to the reference above: x (1,2,2,2) with x[h][w][c] =
 * ((h*W + w)*C + c) % 5 - 2, our w (C=2,R=2,S=3,K/groups=2) with w[c][r][s][k] =
 * ((((c*R + r)*S + s)*2 + k) % 7 - 3) / 2, bias[k] = k/4 - 1/2; groups 2, stride 2x1, padding 0x1,
 * output padding 1x0. Computed with /work/torchenv/bin/python (torch 2.x, CPU): nn.ConvTranspose2d
 * with weight = w.permute(0,3,1,2), y = m(x.permute(0,3,1,2)).permute(0,2,3,1), "%.9g". */
static const float torch_convt_y[] = {0.5f,  -0.25f, 2.5f,  2.75f, -1.5f, -2.25f, -1.0f, -0.75f,
                                      1.5f,  0.75f,  -1.0f, 2.75f, -0.5f, -1.25f, 2.5f,  -0.75f,
                                      0.0f,  0.75f,  3.0f,  2.25f, 1.0f,  1.75f,  1.0f,  0.25f,
                                      -4.0f, 0.25f,  -3.0f, 3.25f, 0.5f,  1.25f,  2.0f,  1.25f,
                                      -0.5f, -0.25f, 0.0f,  0.25f, -0.5f, -0.25f, 0.0f,  0.25f};

static void test_conv_transpose_torch(void) {
    convt_p tp = CONVT(2, 1, 0, 1, 1, 1, 2, 1, 0, true);
    io f = {.nin = 3,
            .nout = 1,
            .in = {HT(MT_F32, 1, 2, 2, 2), HT(MT_F32, 2, 2, 3, 2), HT(MT_F32, 4)},
            .out = {HT(MT_F32, 1, 5, 2, 4)}};
    for (int i = 0; i < 8; i++) F(&f.in[0])[i] = (float)(i % 5 - 2);
    for (int i = 0; i < 24; i++) F(&f.in[1])[i] = (float)(i % 7 - 3) / 2;
    for (int k = 0; k < 4; k++) F(&f.in[2])[k] = k / 4.0f - 0.5f;
    double ref[40];
    for (int i = 0; i < 40; i++) ref[i] = torch_convt_y[i];
    run_case("conv_transpose2d_fwd", "PyTorch's values, groups 2, stride 2x1, out_pad 1x0",
             call_convt_fwd, &tp, &f, (expect[]){{ref, NULL, F32_TOL, 1.0}}, NULL);
}

/* ==== batch norm ============================================================================== */

typedef struct bn_p {
    float eps;
    bool affine;  /* gamma and beta given (else NULL) */
    bool alias;   /* y is x (forward), dx is dy (backward) */
    bool batch;   /* bn_bwd: batch statistics (else fixed, eval mode) */
    double count; /* bn_bwd: rows the statistics covered */
} bn_p;

/* in: x; out: mean, var */
static mt_status call_bn_stats(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_bn_stats(ctx, &in[0], &out[0], &out[1]);
}

/* in: x, mean, var, gamma, beta; out: y */
static mt_status call_bn_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bn_p *b = p;
    const mt_tensor *g = b->affine ? &in[3] : NULL, *be = b->affine ? &in[4] : NULL;
    if (!b->alias) return mt_bn_fwd(ctx, &in[0], &in[1], &in[2], b->eps, g, be, &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_bn_fwd(ctx, &out[0], &in[1], &in[2], b->eps, g, be, &out[0]);
}

/* in: x, dy, mean, var; out: sum_dy, sum_dy_xhat */
static mt_status call_bn_bwd_reduce(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bn_p *b = p;
    return mt_bn_bwd_reduce(ctx, &in[0], &in[1], &in[2], &in[3], b->eps, &out[0], &out[1]);
}

/* in: x, dy, mean, var, gamma, sum_dy, sum_dy_xhat; out: dx */
static mt_status call_bn_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bn_p *b = p;
    const mt_tensor *g = b->affine ? &in[4] : NULL;
    const mt_tensor *s1 = b->batch ? &in[5] : NULL, *s2 = b->batch ? &in[6] : NULL;
    if (!b->alias)
        return mt_bn_bwd(ctx, &in[0], &in[1], &in[2], &in[3], b->eps, g, s1, s2, b->count, b->batch,
                         &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[1]));
    return mt_bn_bwd(ctx, &in[0], &out[0], &in[2], &in[3], b->eps, g, s1, s2, b->count, b->batch,
                     &out[0]);
}

/* Training-mode BN as one function, for finite differences. in: x, gamma, beta; out: y, mean,
 * var. */
static mt_status call_bn_train_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bn_p *b = p;
    MT_TRY(mt_bn_stats(ctx, &in[0], &out[1], &out[2]));
    return mt_bn_fwd(ctx, &in[0], &out[1], &out[2], b->eps, &in[1], &in[2], &out[0]);
}

/* Its backward. in: x, gamma, beta, dy; out: dx, mean, var, sums (2, C) = (dbeta, dgamma). */
static mt_status call_bn_train_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const bn_p *b = p;
    int64_t c = last_dim(&in[0]);
    mt_tensor sdy = mt_tensor_1d(out[3].data, MT_F32, ctx->device, c);
    mt_tensor sdx = mt_tensor_1d(F(&out[3]) + c, MT_F32, ctx->device, c);
    MT_TRY(mt_bn_stats(ctx, &in[0], &out[1], &out[2]));
    MT_TRY(mt_bn_bwd_reduce(ctx, &in[0], &in[3], &out[1], &out[2], b->eps, &sdy, &sdx));
    return mt_bn_bwd(ctx, &in[0], &in[3], &out[1], &out[2], b->eps, &in[1], &sdy, &sdx,
                     (double)(N(&in[0]) / c), true, &out[0]);
}

/* Per-channel mean and biased variance of x (rows, c) by two passes in double. */
static void bn_moments(const float *x, int64_t rows, int64_t c, double *mean, double *var) {
    for (int64_t j = 0; j < c; j++) {
        double s = 0, v = 0;
        for (int64_t i = 0; i < rows; i++) s += x[i * c + j];
        s /= rows;
        for (int64_t i = 0; i < rows; i++) v += (x[i * c + j] - s) * (x[i * c + j] - s);
        mean[j] = s;
        var[j] = v / rows;
    }
}

/* x of the given shape with channel j around offset * (j+1), spread scale. */
static void bn_case(int nd, const int64_t *shape, double offset, double scale, bool affine,
                    bool alias, float eps) {
    int64_t c = shape[nd - 1];
    mt_tensor x = H(MT_F32, nd, shape);
    int64_t rows = N(&x) / c;
    for (int64_t i = 0; i < N(&x); i++)
        F(&x)[i] = (float)(offset * (i % c + 1) + scale * rng_normal());
    char label[160], dd[96];
    snprintf(label, sizeof label, "x %s, offset %g, scale %g, eps %g%s%s", desc(&x, dd), offset,
             scale, eps, affine ? "" : ", no affine", alias ? ", in place" : "");

    /* statistics: the mean within 1e-5 of the data's spread (it is summed in f32 blocks) */
    io st = {.nin = 1, .nout = 2, .in = {x}, .out = {HT(MT_F32, c), HT(MT_F32, c)}};
    double *mean = DBL(c), *var = DBL(c);
    bn_moments(F(&x), rows, c, mean, var);
    run_case("bn_stats", label, call_bn_stats, NULL, &st,
             (expect[]){{mean, NULL, F32_TOL, 0.1 * scale}, {var, NULL, F32_TOL, 0}}, NULL);

    /* forward with the statistics as f32 tensors */
    bn_p bp = {eps, affine, alias, true, (double)rows};
    mt_tensor mt = HT(MT_F32, c), vt = HT(MT_F32, c), gt = HT(MT_F32, c), bt = HT(MT_F32, c);
    for (int64_t j = 0; j < c; j++) F(&mt)[j] = (float)mean[j], F(&vt)[j] = (float)var[j];
    fill_uniform(&gt, 0.5, 2);
    fill_uniform(&bt, -1, 1);
    io fw = {.nin = 5, .nout = 1, .in = {x, mt, vt, gt, bt}, .out = {H_like(&x)}};
    int64_t n = N(&x);
    double *y = DBL(n), *ymag = DBL(n), *inv = DBL(c);
    for (int64_t j = 0; j < c; j++) inv[j] = 1 / sqrt((double)F(&vt)[j] + eps);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i % c;
        double g = affine ? F(&gt)[j] : 1, b = affine ? F(&bt)[j] : 0;
        double t = ((double)F(&x)[i] - F(&mt)[j]) * inv[j] * g;
        y[i] = t + b;
        ymag[i] = fabs(t) + fabs(b);
    }
    run_case("bn_fwd", label, call_bn_fwd, &bp, &fw, (expect[]){{y, ymag, F32_TOL, 1e-3}}, NULL);

    /* backward: the sums, then dx in batch and eval mode */
    mt_tensor dy = H_like(&x);
    fill_uniform(&dy, -1, 1);
    io rd = {.nin = 4, .nout = 2, .in = {x, dy, mt, vt}, .out = {HT(MT_F32, c), HT(MT_F32, c)}};
    double *sdy = DBL(c), *sdx = DBL(c), *m1 = DBL(c), *m2 = DBL(c);
    for (int64_t j = 0; j < c; j++) sdy[j] = sdx[j] = m1[j] = m2[j] = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i % c;
        double xh = ((double)F(&x)[i] - F(&mt)[j]) * inv[j];
        sdy[j] += F(&dy)[i];
        m1[j] += fabs(F(&dy)[i]);
        sdx[j] += F(&dy)[i] * xh;
        m2[j] += fabs(F(&dy)[i] * xh);
    }
    run_case("bn_bwd_reduce", label, call_bn_bwd_reduce, &bp, &rd,
             (expect[]){{sdy, m1, F32_TOL, 1e-6}, {sdx, m2, F32_TOL, 1e-6}}, NULL);
    mt_tensor s1 = HT(MT_F32, c), s2 = HT(MT_F32, c);
    for (int64_t j = 0; j < c; j++) F(&s1)[j] = (float)sdy[j], F(&s2)[j] = (float)sdx[j];
    io bw = {.nin = 7, .nout = 1, .in = {x, dy, mt, vt, gt, s1, s2}, .out = {H_like(&x)}};
    double *dx = DBL(n), *dxmag = DBL(n), *dxe = DBL(n), *dxemag = DBL(n);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i % c;
        double a = (affine ? F(&gt)[j] : 1) * inv[j];
        double xh = ((double)F(&x)[i] - F(&mt)[j]) * inv[j];
        double t1 = F(&s1)[j] / (double)rows, t2 = xh * F(&s2)[j] / (double)rows;
        dx[i] = a * (F(&dy)[i] - t1 - t2);
        dxmag[i] = fabs(a) * (fabs(F(&dy)[i]) + fabs(t1) + fabs(t2));
        dxe[i] = a * F(&dy)[i];
        dxemag[i] = fabs(dxe[i]);
    }
    run_case("bn_bwd", label, call_bn_bwd, &bp, &bw, (expect[]){{dx, dxmag, GRAD_TOL, 1e-3}}, NULL);
    bn_p eval = bp;
    eval.batch = false;
    run_case("bn_bwd", label, call_bn_bwd, &eval, &bw, (expect[]){{dxe, dxemag, GRAD_TOL, 1e-3}},
             NULL);
}

/* Training-mode BN end to end against finite differences: dx through the statistics, dgamma and
 * dbeta; and eval-mode dx. */
static void bn_fd_case(int nd, const int64_t *shape, float eps) {
    int64_t c = shape[nd - 1];
    bn_p bp = {eps, true, false, true, 0};
    io f = {.nin = 3, .nout = 3};
    f.in[0] = H(MT_F32, nd, shape);
    f.in[1] = HT(MT_F32, c);
    f.in[2] = HT(MT_F32, c);
    fill_normal(&f.in[0], 1.5);
    fill_uniform(&f.in[1], 0.5, 2);
    fill_uniform(&f.in[2], -1, 1);
    f.out[0] = H_like(&f.in[0]);
    f.out[1] = HT(MT_F32, c);
    f.out[2] = HT(MT_F32, c);
    mt_tensor dy = H_like(&f.in[0]);
    fill_uniform(&dy, -1, 1);
    io b = {.nin = 4, .nout = 4, .in = {f.in[0], f.in[1], f.in[2], dy}};
    b.out[0] = H_like(&f.in[0]);
    b.out[1] = HT(MT_F32, c);
    b.out[2] = HT(MT_F32, c);
    b.out[3] = HT(MT_F32, 2, c);
    char label[128], dd[96];
    snprintf(label, sizeof label, "training mode, x %s, eps %g", desc(&f.in[0], dd), eps);
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        mt_tensor res[MAX_IO];
        if (!g_have[d]) continue;
        mt_status s = run_on(&g_ctx[d], call_bn_train_bwd, &bp, &b, res);
        if (s == MT_ERR_UNSUPPORTED && d != MT_CPU) continue;
        MT_CHECK_OK(s);
        if (s != MT_OK) continue;
        mt_tensor dbeta = mt_tensor_1d(F(&res[3]), MT_F32, MT_CPU, c);
        mt_tensor dgamma = mt_tensor_1d(F(&res[3]) + c, MT_F32, MT_CPU, c);
        fd_check(&g_ctx[d], "bn_bwd", label, call_bn_train_fwd, &bp, &f, 0, F(&dy), &res[0], 1e-3);
        fd_check(&g_ctx[d], "bn_bwd_reduce", label, call_bn_train_fwd, &bp, &f, 1, F(&dy), &dgamma,
                 1e-3);
        fd_check(&g_ctx[d], "bn_bwd_reduce", label, call_bn_train_fwd, &bp, &f, 2, F(&dy), &dbeta,
                 1e-3);
    }
    /* eval mode: fixed statistics, so y is affine in x */
    bn_p ev = {eps, true, false, false, 0};
    io fe = {.nin = 5, .nout = 1, .in = {f.in[0], HT(MT_F32, c), HT(MT_F32, c), f.in[1], f.in[2]}};
    fe.out[0] = H_like(&f.in[0]);
    fill_uniform(&fe.in[1], -0.5, 0.5);
    fill_uniform(&fe.in[2], 0.5, 2);
    io be = {
        .nin = 7, .nout = 1, .in = {f.in[0], dy, fe.in[1], fe.in[2], f.in[1], f.in[1], f.in[1]}};
    be.out[0] = H_like(&f.in[0]);
    snprintf(label, sizeof label, "eval mode, x %s", desc(&f.in[0], dd));
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        mt_tensor grad;
        if (g_have[d] && grad_on(&g_ctx[d], call_bn_bwd, &ev, &be, &grad))
            fd_check(&g_ctx[d], "bn_bwd", label, call_bn_fwd, &ev, &fe, 0, F(&dy), &grad, 1e-2);
    }
}

static void test_bn(void) {
    rng_seed(21);
    bn_case(2, (int64_t[]){1, 3}, 0, 1, true, false, 1e-5f); /* one row: variance 0 */
    bn_case(2, (int64_t[]){7, 5}, 0.5, 1, true, false, 1e-5f);
    bn_case(4, (int64_t[]){2, 3, 4, 6}, -1, 2, true, true, 1e-5f);
    bn_case(4, (int64_t[]){3, 5, 2, 1}, 0, 1, false, false, 1e-3f);
    bn_case(4, (int64_t[]){2, 5, 7, 16}, 100, 0.01, true, false, 1e-5f); /* mean >> spread */
    bn_case(1, (int64_t[]){9}, 0, 3, true, true, 0.1f);                  /* 1-D: one row of 9 */
    bn_case(4, (int64_t[]){4, 15, 15, 70}, 0.2, 1, true, false, 1e-5f);  /* chunks, threads */
    bn_case(2, (int64_t[]){40, 2100}, 0, 1, true, true, 1e-5f);          /* wide rows */
    bn_fd_case(2, (int64_t[]){6, 4}, 1e-5f);
    bn_fd_case(4, (int64_t[]){2, 3, 3, 5}, 1e-3f);
    bn_fd_case(4, (int64_t[]){3, 2, 5, 2}, 1e-5f);
}

/* ==== pooling ================================================================================= */

/* in: x; out: y, argmax */
static mt_status call_maxpool_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_maxpool2d_fwd(ctx, p, &in[0], &out[0], &out[1]);
}

/* in: argmax, dy; out: dx */
static mt_status call_maxpool_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_maxpool2d_bwd(ctx, p, &in[0], &in[1], &out[0]);
}

/* in: x; out: y */
static mt_status call_avgpool_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_avgpool2d_fwd(ctx, p, &in[0], &out[0]);
}

/* in: dy; out: dx */
static mt_status call_avgpool_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_avgpool2d_bwd(ctx, p, &in[0], &out[0]);
}

/* PyTorch's pooling_output_shape, written out. */
static int64_t pool_out_ref(int64_t in, int k, int s, int pad, bool ceil_mode) {
    int64_t num = in + 2 * pad - (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
    if (ceil_mode && (out - 1) * s >= in + pad) out--;
    return out;
}

/* x filled with distinct values at least 0.01 apart (a shuffled ramp), so that no perturbation of
 * finite differences changes which element wins a max. */
static void fill_distinct(mt_tensor *t) {
    int64_t n = N(t);
    for (int64_t i = 0; i < n; i++) F(t)[i] = (float)((i - n / 2) * 0.01);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = rng_int(0, i);
        float v = F(t)[i];
        F(t)[i] = F(t)[j];
        F(t)[j] = v;
    }
}

static void pool_case(bool is_max, int64_t n, int64_t h, int64_t w, int64_t c,
                      mt_pool2d_params pp) {
    int64_t p = pool_out_ref(h, pp.kh, pp.stride_h, pp.pad_h, pp.ceil_mode);
    int64_t q = pool_out_ref(w, pp.kw, pp.stride_w, pp.pad_w, pp.ceil_mode);
    io f = {.nin = 1, .nout = is_max ? 2 : 1};
    f.in[0] = HT(MT_F32, n, h, w, c);
    fill_distinct(&f.in[0]);
    f.out[0] = HT(MT_F32, n, p, q, c);
    if (is_max) f.out[1] = HT(MT_I32, n, p, q, c);
    int64_t ny = N(&f.out[0]), nx = N(&f.in[0]);
    double *y = DBL(ny), *arg = DBL(ny), *dx = DBL(nx), *dxmag = DBL(nx);
    mt_tensor dy = H_like(&f.out[0]), argt = HT(MT_I32, n, p, q, c);
    fill_uniform(&dy, -1, 1);
    for (int64_t i = 0; i < nx; i++) dx[i] = dxmag[i] = 0;
    for (int64_t b = 0; b < n; b++)
        for (int64_t oh = 0; oh < p; oh++)
            for (int64_t ow = 0; ow < q; ow++)
                for (int64_t k = 0; k < c; k++) {
                    int64_t h0 = oh * pp.stride_h - pp.pad_h, w0 = ow * pp.stride_w - pp.pad_w;
                    int64_t h1 = h0 + pp.kh, w1 = w0 + pp.kw, cnt = 0;
                    int64_t full = ((h1 < h + pp.pad_h ? h1 : h + pp.pad_h) - h0) *
                                   ((w1 < w + pp.pad_w ? w1 : w + pp.pad_w) - w0);
                    double best = -INFINITY, sum = 0;
                    int64_t at = -1;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) {
                            if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                            double v = F(&f.in[0])[((b * h + ih) * w + iw) * c + k];
                            cnt++;
                            sum += v;
                            if (v > best) best = v, at = ih * w + iw;
                        }
                    int64_t o = ((b * p + oh) * q + ow) * c + k;
                    double div = pp.count_include_pad ? (double)full : (double)cnt;
                    double g = F(&dy)[o];
                    y[o] = is_max ? best : sum / div;
                    arg[o] = (double)at;
                    I32(&argt)[o] = (int32_t)at;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) {
                            if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                            if (is_max && ih * w + iw != at) continue;
                            int64_t xi = ((b * h + ih) * w + iw) * c + k;
                            dx[xi] += is_max ? g : g / div;
                            dxmag[xi] += fabs(is_max ? g : g / div);
                        }
                }
    char label[200], dd[96];
    snprintf(label, sizeof label, "x %s, kernel %dx%d, stride %dx%d, pad %dx%d%s%s",
             desc(&f.in[0], dd), pp.kh, pp.kw, pp.stride_h, pp.stride_w, pp.pad_h, pp.pad_w,
             pp.ceil_mode ? ", ceil_mode" : "",
             !is_max && pp.count_include_pad ? ", count_include_pad" : "");
    io b = {.nin = is_max ? 2 : 1, .nout = 1};
    b.out[0] = H_like(&f.in[0]);
    if (is_max) {
        b.in[0] = argt, b.in[1] = dy;
        run_case("maxpool2d_fwd", label, call_maxpool_fwd, &pp, &f,
                 (expect[]){{y, NULL, 0, 1.0}, {arg, NULL, 0, 1.0}}, NULL);
        run_case("maxpool2d_bwd", label, call_maxpool_bwd, &pp, &b,
                 (expect[]){{dx, dxmag, F32_TOL, 1.0}}, NULL);
    } else {
        b.in[0] = dy;
        run_case("avgpool2d_fwd", label, call_avgpool_fwd, &pp, &f,
                 (expect[]){{y, NULL, F32_TOL, 1.0}}, NULL);
        run_case("avgpool2d_bwd", label, call_avgpool_bwd, &pp, &b,
                 (expect[]){{dx, dxmag, F32_TOL, 1.0}}, NULL);
    }
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        mt_tensor grad;
        if (!g_have[d] ||
            !grad_on(&g_ctx[d], is_max ? call_maxpool_bwd : call_avgpool_bwd, &pp, &b, &grad))
            continue;
        fd_check(&g_ctx[d], is_max ? "maxpool2d_bwd" : "avgpool2d_bwd", label,
                 is_max ? call_maxpool_fwd : call_avgpool_fwd, &pp, &f, 0, F(&dy), &grad, 1e-3);
    }
}

/* kernel, stride, pad, ceil_mode, count_include_pad */
#define POOL(kh, kw, sh, sw, ph, pw, ceil, cip)                                                    \
    ((mt_pool2d_params){kh, kw, sh, sw, ph, pw, ceil, cip})

static void test_pool(void) {
    rng_seed(22);
    for (int m = 1; m >= 0; m--) {
        bool mx = m;
        pool_case(mx, 2, 7, 7, 3, POOL(3, 3, 2, 2, 1, 1, false, true)); /* ResNet's stem pool */
        pool_case(mx, 1, 8, 8, 4, POOL(2, 2, 2, 2, 0, 0, false, true));
        pool_case(mx, 2, 6, 5, 3, POOL(3, 3, 2, 2, 1, 1, true, true)); /* ceil: windows hang over */
        pool_case(mx, 1, 5, 5, 2, POOL(2, 2, 2, 2, 0, 0, true, false));
        pool_case(mx, 1, 5, 7, 2, POOL(3, 3, 3, 3, 1, 1, true, true));   /* ceil rule drops one */
        pool_case(mx, 2, 6, 6, 5, POOL(3, 3, 1, 1, 1, 1, false, false)); /* overlapping windows */
        pool_case(mx, 1, 7, 9, 3, POOL(2, 3, 1, 2, 1, 1, false, true));  /* asymmetric */
        pool_case(mx, 1, 7, 9, 3, POOL(2, 3, 1, 2, 1, 1, true, false));
        pool_case(mx, 3, 1, 1, 2, POOL(1, 1, 1, 1, 0, 0, false, true));    /* identity */
        pool_case(mx, 2, 7, 7, 9, POOL(7, 7, 7, 7, 0, 0, false, true));    /* global */
        pool_case(mx, 2, 9, 9, 70, POOL(3, 3, 2, 2, 1, 1, true, false));   /* channel blocks */
        pool_case(mx, 4, 28, 28, 16, POOL(3, 3, 2, 2, 1, 1, false, true)); /* threads */
    }
    /* Max: a NaN wins and stays (PyTorch propagates it); a window of -inf still names its first
     * element */
    mt_pool2d_params pp = POOL(2, 2, 2, 2, 0, 0, false, true);
    io f = {.nin = 1, .nout = 2};
    f.in[0] = HT(MT_F32, 1, 2, 2, 2);
    float vals[8] = {1, -INFINITY, NAN, -INFINITY, 5, -INFINITY, 2, -INFINITY};
    memcpy(f.in[0].data, vals, sizeof vals);
    f.out[0] = HT(MT_F32, 1, 1, 1, 2);
    f.out[1] = HT(MT_I32, 1, 1, 1, 2);
    double y[2] = {NAN, -INFINITY}, a[2] = {1, 0};
    run_case("maxpool2d_fwd", "NaN and -inf", call_maxpool_fwd, &pp, &f,
             (expect[]){{y, NULL, 0, 1.0}, {a, NULL, 0, 1.0}}, NULL);
}

/* ==== upsampling ============================================================================== */

typedef struct up_p {
    mt_upsample_mode mode;
    bool ac; /* align_corners */
} up_p;

static const char *up_names[] = {"nearest", "bilinear"};

/* in: x; out: y */
static mt_status call_up_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const up_p *u = p;
    return mt_upsample2d_fwd(ctx, u->mode, u->ac, &in[0], &out[0]);
}

/* in: dy; out: dx */
static mt_status call_up_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const up_p *u = p;
    return mt_upsample2d_bwd(ctx, u->mode, u->ac, &in[0], &out[0]);
}

/* The input indices output index o reads along one axis (in -> out) and their weights, by
 * PyTorch's formulas in its float arithmetic (ATen/native/UpSample.h, written out again here;
 * the constants of test_upsample_torch pin them to torch itself). Returns the number of taps. */
static int up_taps_ref(const up_p *u, int64_t o, int64_t in, int64_t out, int64_t idx[2],
                       double wt[2]) {
    if (u->mode == MT_UPSAMPLE_NEAREST) {
        float sc = (float)in / (float)out;
        int64_t i = out == in ? o : out == 2 * in ? o / 2 : (int64_t)floorf((float)o * sc);
        idx[0] = i < in - 1 ? i : in - 1;
        wt[0] = 1;
        return 1;
    }
    if (out == in) {
        idx[0] = idx[1] = o;
        wt[0] = 1, wt[1] = 0;
        return 2;
    }
    float src;
    if (u->ac) {
        src = (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f) * (float)o;
    } else { /* rounded once, as PyTorch's channels-last kernel does (an FMA) */
        src = fmaf((float)in / (float)out, (float)o + 0.5f, -0.5f);
        src = src < 0 ? 0 : src;
    }
    int64_t i = (int64_t)floorf(src);
    i = i < in - 1 ? i : in - 1;
    float l = fminf(fmaxf(src - (float)i, 0.0f), 1.0f);
    idx[0] = i;
    idx[1] = i < in - 1 ? i + 1 : i;
    wt[0] = 1.0f - l, wt[1] = l;
    return 2;
}

/* y, dx (for dy) and their magnitudes by the definition: y[o] = sum of weighted x, and dx gets
 * every weighted dy back. */
static void up_reference(const up_p *u, const mt_tensor *x, const mt_tensor *y, const float *dy,
                         double *yv, double *ymag, double *dx, double *dxmag) {
    int64_t n = x->shape[0], h = x->shape[1], w = x->shape[2], c = x->shape[3];
    int64_t p = y->shape[1], q = y->shape[2];
    for (int64_t i = 0; i < N(x); i++) dx[i] = dxmag[i] = 0;
    for (int64_t b = 0; b < n; b++)
        for (int64_t oh = 0; oh < p; oh++)
            for (int64_t ow = 0; ow < q; ow++) {
                int64_t ih[2], iw[2];
                double wh[2], ww[2];
                int th = up_taps_ref(u, oh, h, p, ih, wh), tw = up_taps_ref(u, ow, w, q, iw, ww);
                for (int64_t k = 0; k < c; k++) {
                    int64_t yo = ((b * p + oh) * q + ow) * c + k;
                    yv[yo] = ymag[yo] = 0;
                    for (int a = 0; a < th; a++)
                        for (int e = 0; e < tw; e++) {
                            int64_t xi = ((b * h + ih[a]) * w + iw[e]) * c + k;
                            double t = wh[a] * ww[e] * F(x)[xi], g = wh[a] * ww[e] * dy[yo];
                            yv[yo] += t;
                            ymag[yo] += fabs(t);
                            dx[xi] += g;
                            dxmag[xi] += fabs(g);
                        }
                }
            }
}

static void up_case(up_p u, int64_t n, int64_t h, int64_t w, int64_t c, int64_t p, int64_t q,
                    bool fd) {
    io f = {.nin = 1, .nout = 1, .in = {HT(MT_F32, n, h, w, c)}, .out = {HT(MT_F32, n, p, q, c)}};
    fill_uniform(&f.in[0], -2, 2);
    mt_tensor dy = H_like(&f.out[0]);
    fill_uniform(&dy, -1, 1);
    io b = {.nin = 1, .nout = 1, .in = {dy}, .out = {H_like(&f.in[0])}};
    int64_t ny = N(&dy), nx = N(&f.in[0]);
    double *y = DBL(ny), *ymag = DBL(ny), *dx = DBL(nx), *dxmag = DBL(nx);
    up_reference(&u, &f.in[0], &f.out[0], F(&dy), y, ymag, dx, dxmag);
    char label[160], dd[96];
    snprintf(label, sizeof label, "%s%s, x %s to %" PRId64 "x%" PRId64, up_names[u.mode],
             u.ac ? " align_corners" : "", desc(&f.in[0], dd), p, q);
    run_case("upsample2d_fwd", label, call_up_fwd, &u, &f, (expect[]){{y, ymag, F32_TOL, 1.0}},
             NULL);
    run_case("upsample2d_bwd", label, call_up_bwd, &u, &b, (expect[]){{dx, dxmag, F32_TOL, 1.0}},
             NULL);
    for (int d = 0; fd && d < MT_DEVICE_COUNT; d++) {
        mt_tensor grad;
        if (g_have[d] && grad_on(&g_ctx[d], call_up_bwd, &u, &b, &grad))
            fd_check(&g_ctx[d], "upsample2d_bwd", label, call_up_fwd, &u, &f, 0, F(&dy), &grad,
                     1e-2);
    }
}

static void test_upsample(void) {
    rng_seed(29);
    static const up_p modes[] = {
        {MT_UPSAMPLE_NEAREST, false}, {MT_UPSAMPLE_BILINEAR, false}, {MT_UPSAMPLE_BILINEAR, true}};
    for (int m = 0; m < 3; m++) {
        up_p u = modes[m];
        up_case(u, 2, 3, 3, 2, 6, 6, true);       /* scale 2 */
        up_case(u, 1, 3, 5, 3, 9, 15, true);      /* scale 3 */
        up_case(u, 1, 5, 3, 2, 7, 4, true);       /* 5 -> 7, 3 -> 4 */
        up_case(u, 2, 7, 5, 1, 3, 9, true);       /* down in h, up by 9/5 in w */
        up_case(u, 1, 4, 6, 3, 4, 6, true);       /* same size */
        up_case(u, 1, 1, 1, 4, 5, 3, true);       /* from one pixel */
        up_case(u, 1, 6, 5, 2, 1, 1, true);       /* to one pixel */
        up_case(u, 1, 2, 9, 1, 13, 2, true);      /* 2 -> 13, 9 -> 2 */
        up_case(u, 1, 10, 7, 1, 23, 31, true);    /* odd ratios */
        up_case(u, 2, 32, 32, 16, 64, 64, false); /* OpenMP threshold */
        up_case(u, 1, 40, 30, 3, 100, 70, false); /* 2.5 and 7/3 */
        up_case(u, 1, 64, 64, 8, 17, 100, false); /* down and up */
    }
}

/* Forward values from PyTorch itself, for a 1-channel map x[h][w] = ((h*W + w)*3 % 7) - 3 + h/4,
 * computed with /work/torchenv/bin/python (torch 2.x, CPU):
 *     F.interpolate(x.view(1,1,H,W), size=(P,Q), mode=..., align_corners=...).view(-1)
 * printed with "%.9g". Nearest must match exactly (the same pixels are read); bilinear to f32
 * rounding (the weights are PyTorch's bit for bit, the order of the four products is not). */
static const float torch_b33_66[] = {
    -3.0f,    -2.25f,  -0.75f,   0.75f,    2.25f,    3.0f,     -2.4375f, -1.6875f, -0.1875f,
    0.875f,   1.5f,    1.8125f,  -1.3125f, -0.5625f, 0.9375f,  1.125f,   0.0f,     -0.5625f,
    -0.1875f, 0.125f,  0.75f,    0.5f,     -0.625f,  -1.1875f, 0.9375f,  0.375f,   -0.75f,
    -1.0f,    -0.375f, -0.0625f, 1.5f,     0.5f,     -1.5f,    -1.75f,   -0.25f,   0.5f};
static const float torch_b33_66_ac[] = {
    -3.0f,         -1.80000007f,    -0.599999964f, 0.600000143f,  1.80000007f,   3.0f,
    -2.10000014f,  -0.899999976f,   0.300000072f,  0.939999998f,  1.01999998f,   1.10000002f,
    -1.19999993f,  2.23517418e-08f, 1.20000017f,   1.27999985f,   0.23999989f,   -0.800000072f,
    -0.299999893f, 0.339999974f,    0.9799999f,    0.779999733f,  -0.26000005f,  -1.29999983f,
    0.600000024f,  0.120000005f,    -0.360000074f, -0.560000062f, -0.480000019f, -0.399999917f,
    1.5f,          -0.0999999642f,  -1.70000005f,  -1.89999986f,  -0.699999928f, 0.5f};
static const float torch_b53_74[] = {
    -3.0f,        -1.125f,      1.125f,        3.0f,         -1.71428561f, 0.160714373f,
    0.910714269f, 0.285714149f, -0.107142627f, 0.517856956f, 0.142856926f, -1.10714257f,
    1.5f,         -1.0f,        -1.375f,       0.5f,         3.10714316f,  0.607143164f,
    0.232143134f, 2.10714316f,  1.71428561f,   1.08928561f,  0.714285672f, 0.714285612f,
    -1.0f,        0.875f,       0.5f,          -2.0f};
static const float torch_b53_74_ac[] = {-3.0f,
                                        -0.99999994f,
                                        1.00000012f,
                                        3.0f,
                                        -1.5f,
                                        0.500000119f,
                                        0.944444299f,
                                        -0.166666761f,
                                        8.94069672e-08f,
                                        0.444444358f,
                                        0.111110896f,
                                        -0.99999994f,
                                        1.5f,
                                        -1.16666675f,
                                        -1.49999988f,
                                        0.5f,
                                        3.00000024f,
                                        0.333333433f,
                                        3.12924385e-07f,
                                        2.00000024f,
                                        2.16666603f,
                                        1.05555546f,
                                        0.722222209f,
                                        1.16666591f,
                                        -1.0f,
                                        1.0f,
                                        0.666666508f,
                                        -2.0f};
static const float torch_n33_66[] = {
    -3.0f,  -3.0f,  0.0f,  0.0f,  3.0f,   3.0f,   -3.0f,  -3.0f,  0.0f,  0.0f,  3.0f,   3.0f,
    -0.75f, -0.75f, 2.25f, 2.25f, -1.75f, -1.75f, -0.75f, -0.75f, 2.25f, 2.25f, -1.75f, -1.75f,
    1.5f,   1.5f,   -2.5f, -2.5f, 0.5f,   0.5f,   1.5f,   1.5f,   -2.5f, -2.5f, 0.5f,   0.5f};
static const float torch_n53_74[] = {-3.0f, -3.0f,  0.0f,   3.0f,  -3.0f,  -3.0f, 0.0f,
                                     3.0f,  -0.75f, -0.75f, 2.25f, -1.75f, 1.5f,  1.5f,
                                     -2.5f, 0.5f,   1.5f,   1.5f,  -2.5f,  0.5f,  3.75f,
                                     3.75f, -0.25f, 2.75f,  -1.0f, -1.0f,  2.0f,  -2.0f};
static const float torch_n75_39[] = {-3.0f, -3.0f, 0.0f,  0.0f,  3.0f,  3.0f,  -1.0f, -1.0f, 2.0f,
                                     -0.5f, -0.5f, 2.5f,  2.5f,  -1.5f, -1.5f, 1.5f,  1.5f,  -2.5f,
                                     2.0f,  2.0f,  -2.0f, -2.0f, 1.0f,  1.0f,  4.0f,  4.0f,  0.0f};

static void torch_up_case(up_p u, int64_t h, int64_t w, int64_t p, int64_t q, const float *vals) {
    io f = {.nin = 1, .nout = 1, .in = {HT(MT_F32, 1, h, w, 1)}, .out = {HT(MT_F32, 1, p, q, 1)}};
    for (int64_t i = 0; i < h; i++)
        for (int64_t j = 0; j < w; j++)
            F(&f.in[0])[i * w + j] = (float)(((i * w + j) * 3 % 7) - 3 + 0.25 * i);
    double *ref = DBL(p * q);
    for (int64_t i = 0; i < p * q; i++) ref[i] = vals[i];
    char label[128];
    snprintf(label, sizeof label,
             "PyTorch's values, %s%s, %" PRId64 "x%" PRId64 " to %" PRId64 "x%" PRId64,
             up_names[u.mode], u.ac ? " align_corners" : "", h, w, p, q);
    double tol = u.mode == MT_UPSAMPLE_NEAREST ? 0 : 1e-6;
    run_case("upsample2d_fwd", label, call_up_fwd, &u, &f, (expect[]){{ref, NULL, tol, 1.0}}, NULL);
}

/* The weights bit for bit: a 1-row map of one-hot images (image j is 1 at column j) resized along
 * its width gives each output pixel's weight of input column j exactly (a weight times 1, plus 0,
 * or the two weights' f32 sum where both taps are the last column). Against up_taps_ref with no
 * tolerance, over sizes where rounding s * (o + 0.5) - 0.5 twice instead of once changes weights
 * (PyTorch's channels-last kernel rounds once; see cpu_upsample.c). */
static void up_weights_case(up_p u, int64_t in, int64_t out) {
    io f = {
        .nin = 1, .nout = 1, .in = {HT(MT_F32, in, 1, in, 1)}, .out = {HT(MT_F32, in, 1, out, 1)}};
    memset(f.in[0].data, 0, mt_tensor_bytes(&f.in[0]));
    for (int64_t j = 0; j < in; j++) F(&f.in[0])[j * in + j] = 1;
    double *ref = DBL(in * out);
    for (int64_t j = 0; j < in; j++)
        for (int64_t o = 0; o < out; o++) {
            int64_t idx[2];
            double wt[2];
            int taps = up_taps_ref(&u, o, in, out, idx, wt);
            float v = 0;
            for (int t = 0; t < taps; t++)
                if (idx[t] == j) v += (float)wt[t];
            ref[j * out + o] = v;
        }
    char label[128];
    snprintf(label, sizeof label, "weights, %s%s, %" PRId64 " to %" PRId64, up_names[u.mode],
             u.ac ? " align_corners" : "", in, out);
    run_case("upsample2d_fwd", label, call_up_fwd, &u, &f, (expect[]){{ref, NULL, 0, 1.0}}, NULL);
}

static void test_upsample_torch(void) {
    up_p bl = {MT_UPSAMPLE_BILINEAR, false}, ac = {MT_UPSAMPLE_BILINEAR, true};
    up_p nn = {MT_UPSAMPLE_NEAREST, false};
    torch_up_case(bl, 3, 3, 6, 6, torch_b33_66);
    torch_up_case(ac, 3, 3, 6, 6, torch_b33_66_ac);
    torch_up_case(bl, 5, 3, 7, 4, torch_b53_74);
    torch_up_case(ac, 5, 3, 7, 4, torch_b53_74_ac);
    torch_up_case(nn, 3, 3, 6, 6, torch_n33_66);
    torch_up_case(nn, 5, 3, 7, 4, torch_n53_74);
    torch_up_case(nn, 7, 5, 3, 9, torch_n75_39);
    static const int64_t sizes[][2] = {{1, 3},  {3, 4},  {5, 7},   {7, 5},   {2, 13},  {10, 23},
                                       {7, 31}, {13, 2}, {40, 89}, {17, 64}, {33, 35}, {9, 9}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        up_weights_case(bl, sizes[i][0], sizes[i][1]);
        up_weights_case(ac, sizes[i][0], sizes[i][1]);
        up_weights_case(nn, sizes[i][0], sizes[i][1]);
    }
}

/* ==== dropout ================================================================================= */

typedef struct drop_p {
    float p;
    uint64_t seed, stream, offset;
    bool alias; /* y is x (forward), dx is dy (backward) */
} drop_p;

/* in: x; out: y, mask */
static mt_status call_dropout_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const drop_p *d = p;
    if (!d->alias)
        return mt_dropout_fwd(ctx, d->p, d->seed, d->stream, d->offset, &in[0], &out[0], &out[1]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_dropout_fwd(ctx, d->p, d->seed, d->stream, d->offset, &out[0], &out[0], &out[1]);
}

/* in: mask, dy; out: dx */
static mt_status call_dropout_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const drop_p *d = p;
    if (!d->alias) return mt_dropout_bwd(ctx, d->p, &in[0], &in[1], &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[1]));
    return mt_dropout_bwd(ctx, d->p, &in[0], &out[0], &out[0]);
}

/* The mask as ops.h defines it, drawn sequentially: element i keeps when the (offset + i)-th
 * uniform of the stream (seed, stream, index 0) is at least p. */
static void dropout_mask_ref(const drop_p *d, int64_t n, uint8_t *mask) {
    mt_rng r;
    mt_rng_init(&r, d->seed, d->stream, 0);
    for (uint64_t i = 0; i < d->offset; i++) mt_rng_u32(&r);
    for (int64_t i = 0; i < n; i++) mask[i] = mt_rng_uniform(&r) >= d->p;
}

static void dropout_case(int nd, const int64_t *shape, drop_p dp) {
    io f = {.nin = 1, .nout = 2};
    f.in[0] = H(MT_F32, nd, shape);
    fill_uniform(&f.in[0], -2, 2);
    f.out[0] = H(MT_F32, nd, shape);
    f.out[1] = H(MT_U8, nd, shape);
    int64_t n = N(&f.in[0]), kept = 0;
    uint8_t *mask = test_alloc((size_t)n);
    dropout_mask_ref(&dp, n, mask);
    double *y = DBL(n), *mv = DBL(n), *dx = DBL(n);
    mt_tensor dy = H(MT_F32, nd, shape), mt = H(MT_U8, nd, shape);
    fill_uniform(&dy, -1, 1);
    for (int64_t i = 0; i < n; i++) {
        kept += mask[i];
        ((uint8_t *)mt.data)[i] = mask[i];
        mv[i] = mask[i];
        y[i] = mask[i] ? F(&f.in[0])[i] / (1.0 - dp.p) : 0;
        dx[i] = mask[i] ? F(&dy)[i] / (1.0 - dp.p) : 0;
    }
    char label[160], dd[96];
    snprintf(label, sizeof label,
             "x %s, p %g, seed %" PRIu64 ", stream %" PRIu64 ", offset %" PRIu64 " (%" PRId64
             " kept)%s",
             desc(&f.in[0], dd), dp.p, dp.seed, dp.stream, dp.offset, kept,
             dp.alias ? ", in place" : "");
    run_case("dropout_fwd", label, call_dropout_fwd, &dp, &f,
             (expect[]){{y, NULL, F32_TOL, 1.0}, {mv, NULL, 0, 1.0}}, NULL);
    io b = {.nin = 2, .nout = 1, .in = {mt, dy}, .out = {H_like(&dy)}};
    run_case("dropout_bwd", label, call_dropout_bwd, &dp, &b, (expect[]){{dx, NULL, F32_TOL, 1.0}},
             NULL);
    drop_p plain = dp;
    plain.alias = false;
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        mt_tensor grad;
        if (g_have[d] && grad_on(&g_ctx[d], call_dropout_bwd, &plain, &b, &grad))
            fd_check(&g_ctx[d], "dropout_bwd", label, call_dropout_fwd, &plain, &f, 0, F(&dy),
                     &grad, 1e-2);
    }
}

static void test_dropout(void) {
    rng_seed(23);
    dropout_case(1, (int64_t[]){1}, (drop_p){0.5f, 1, 2, 0, false});
    dropout_case(2, (int64_t[]){7, 9}, (drop_p){0.1f, 42, 7, 0, false});
    dropout_case(2, (int64_t[]){7, 9}, (drop_p){0.1f, 42, 7, 5, true}); /* offset: not a block */
    dropout_case(4, (int64_t[]){2, 3, 4, 5}, (drop_p){0.5f, 3, 1, 1003, false});
    dropout_case(2, (int64_t[]){3, 4}, (drop_p){0.0f, 9, 9, 0, false});       /* keeps everything */
    dropout_case(2, (int64_t[]){3, 4}, (drop_p){1.0f, 9, 9, 0, true});        /* drops everything */
    dropout_case(2, (int64_t[]){129, 257}, (drop_p){0.3f, 77, 12, 2, false}); /* threads */
    /* The keep rate, and offsets: the mask of one call continues another's. */
    mt_ctx *ctx = &g_ctx[MT_CPU];
    int64_t n = 200000, kept = 0;
    mt_tensor x = HT(MT_F32, n), y = HT(MT_F32, n), m = HT(MT_U8, n), m2 = HT(MT_U8, n - 1000);
    mt_tensor y2 = HT(MT_F32, n - 1000), x2 = HT(MT_F32, n - 1000);
    fill_uniform(&x, 1, 2);
    memcpy(x2.data, F(&x) + 1000, (size_t)(n - 1000) * sizeof(float));
    MT_CHECK_OK(mt_dropout_fwd(ctx, 0.3f, 5, 6, 0, &x, &y, &m));
    MT_CHECK_OK(mt_dropout_fwd(ctx, 0.3f, 5, 6, 1000, &x2, &y2, &m2));
    for (int64_t i = 0; i < n; i++) kept += ((uint8_t *)m.data)[i];
    MT_CHECK(fabs(kept / (double)n - 0.7) < 0.005, "(kept %.4f, expected 0.7)", kept / (double)n);
    MT_CHECK(memcmp((uint8_t *)m.data + 1000, m2.data, (size_t)(n - 1000)) == 0);
    MT_CHECK(memcmp(F(&y) + 1000, y2.data, (size_t)(n - 1000) * sizeof(float)) == 0);
    /* another stream or seed gives another mask; a huge offset still draws fairly */
    MT_CHECK_OK(mt_dropout_fwd(ctx, 0.3f, 5, 7, 1000, &x2, &y2, &m2));
    MT_CHECK(memcmp((uint8_t *)m.data + 1000, m2.data, (size_t)(n - 1000)) != 0);
    MT_CHECK_OK(mt_dropout_fwd(ctx, 0.3f, 5, 6, (uint64_t)1 << 40, &x2, &y2, &m2));
    kept = 0;
    for (int64_t i = 0; i < n - 1000; i++) kept += ((uint8_t *)m2.data)[i];
    MT_CHECK(fabs(kept / (double)(n - 1000) - 0.7) < 0.005);
}

/* ==== channel concatenation =================================================================== */

typedef struct chan_p {
    int64_t offset;
    float beta;
} chan_p;

/* in: src; out: dst (its other channels must survive) */
static mt_status call_channels_put(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_channels_put(ctx, &in[0], ((const chan_p *)p)->offset, &out[0]);
}

/* in: src; out: out */
static mt_status call_channels_get(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const chan_p *c = p;
    return mt_channels_get(ctx, &in[0], c->offset, c->beta, &out[0]);
}

/* src (lead..., cs) into dst (lead..., cd) at offset, and back out of it with beta. */
static void channels_case(int nd, const int64_t *lead, int64_t cs, int64_t cd, int64_t offset,
                          float beta) {
    int64_t ss[4], sd[4];
    for (int i = 0; i < nd - 1; i++) ss[i] = sd[i] = lead[i];
    ss[nd - 1] = cs, sd[nd - 1] = cd;
    chan_p cp = {offset, beta};
    io put = {.nin = 1, .nout = 1, .in = {H(MT_F32, nd, ss)}, .out = {H(MT_F32, nd, sd)}};
    fill_uniform(&put.in[0], -1, 1);
    fill_uniform(&put.out[0], -1, 1);
    int64_t rows = N(&put.in[0]) / (cs ? cs : 1), nd_ = N(&put.out[0]);
    double *want = DBL(nd_), *got = DBL(N(&put.in[0]));
    for (int64_t i = 0; i < nd_; i++) want[i] = F(&put.out[0])[i];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cs; j++) want[r * cd + offset + j] = F(&put.in[0])[r * cs + j];
    /* get reads the same columns back out of the (original) dst into out of src's shape */
    io get = {.nin = 1, .nout = 1, .in = {put.out[0]}, .out = {H(MT_F32, nd, ss)}};
    if (beta == 0)
        for (int64_t i = 0; i < N(&get.out[0]); i++) F(&get.out[0])[i] = NAN;
    else
        fill_uniform(&get.out[0], -1, 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cs; j++) {
            double o = F(&get.out[0])[r * cs + j];
            got[r * cs + j] = (beta == 0 ? 0 : beta * o) + F(&put.out[0])[r * cd + offset + j];
        }
    char label[128], d1[96], d2[96];
    snprintf(label, sizeof label, "src %s, dst %s, offset %" PRId64 ", beta %g",
             desc(&put.in[0], d1), desc(&put.out[0], d2), offset, beta);
    run_case("channels_put", label, call_channels_put, &cp, &put, (expect[]){{want, NULL, 0, 1.0}},
             NULL);
    run_case("channels_get", label, call_channels_get, &cp, &get,
             (expect[]){{got, NULL, F32_TOL, 1.0}}, NULL);
}

static void test_channels(void) {
    rng_seed(24);
    channels_case(4, (int64_t[]){2, 3, 4}, 5, 12, 7, 0); /* the last channels */
    channels_case(4, (int64_t[]){2, 3, 4}, 5, 12, 0, 1); /* the first */
    channels_case(4, (int64_t[]){1, 5, 5}, 3, 11, 4, 1); /* the middle, accumulating */
    channels_case(1, (int64_t[]){0}, 4, 9, 2, 0);        /* one row */
    channels_case(2, (int64_t[]){5}, 6, 6, 0, 0);        /* all of it */
    channels_case(2, (int64_t[]){7}, 3, 8, 5, 0.5f);
    channels_case(4, (int64_t[]){8, 14, 14}, 32, 96, 64, 1); /* threads */
}

/* ==== optimizer steps ========================================================================= */

typedef struct sgd_p {
    float lr, momentum, dampening, wd;
    bool nesterov;
    int steps;
} sgd_p;

/* A view of row t of a (steps, n) tensor with param's shape. */
static mt_tensor step_row(const mt_tensor *grads, const mt_tensor *param, int t) {
    mt_tensor g = *param;
    g.data = (float *)grads->data + t * N(param);
    return g;
}

/* in: grads (steps, n); out: param[, momentum_buf]. Several steps, the first marked first. */
static mt_status call_sgd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const sgd_p *s = p;
    for (int t = 0; t < s->steps; t++) {
        mt_tensor g = step_row(&in[0], &out[0], t);
        MT_TRY(mt_sgd_step(ctx, &out[0], &g, s->momentum > 0 ? &out[1] : NULL, s->lr, s->momentum,
                           s->dampening, s->wd, s->nesterov, t == 0));
    }
    return MT_OK;
}

/* torch.optim.SGD's step, written out in double. */
static void sgd_case(int nd, const int64_t *shape, sgd_p sp) {
    io c = {.nin = 1, .nout = sp.momentum > 0 ? 2 : 1};
    c.out[0] = H(MT_F32, nd, shape);
    int64_t n = N(&c.out[0]);
    c.in[0] = HT(MT_F32, sp.steps, n);
    fill_uniform(&c.out[0], -1, 1);
    fill_uniform(&c.in[0], -1, 1);
    if (sp.momentum > 0) {
        c.out[1] = H(MT_F32, nd, shape);
        for (int64_t i = 0; i < n; i++) F(&c.out[1])[i] = NAN; /* the first step must not read it */
    }
    double *p = DBL(n), *buf = DBL(n);
    for (int64_t i = 0; i < n; i++) p[i] = F(&c.out[0])[i];
    for (int t = 0; t < sp.steps; t++)
        for (int64_t i = 0; i < n; i++) {
            double g = F(&c.in[0])[t * n + i] + (double)sp.wd * p[i];
            if (sp.momentum > 0) {
                buf[i] = t == 0 ? g : sp.momentum * buf[i] + (1.0 - sp.dampening) * g;
                g = sp.nesterov ? g + sp.momentum * buf[i] : buf[i];
            }
            p[i] -= sp.lr * g;
        }
    char label[160], dd[96];
    snprintf(label, sizeof label, "param %s, %d steps, lr %g, momentum %g, dampening %g, wd %g%s",
             desc(&c.out[0], dd), sp.steps, sp.lr, sp.momentum, sp.dampening, sp.wd,
             sp.nesterov ? ", nesterov" : "");
    run_case("sgd_step", label, call_sgd, &sp, &c,
             (expect[]){{p, NULL, F32_TOL, 1.0}, {buf, NULL, F32_TOL, 1.0}}, NULL);
}

typedef struct adamw_p {
    float lr, b1, b2, eps, wd;
    int64_t t0; /* the first step's t */
    int steps;
} adamw_p;

/* in: grads (steps, n); out: param, m, v */
static mt_status call_adamw(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const adamw_p *a = p;
    for (int t = 0; t < a->steps; t++) {
        mt_tensor g = step_row(&in[0], &out[0], t);
        MT_TRY(mt_adamw_step(ctx, &out[0], &g, &out[1], &out[2], a->lr, a->b1, a->b2, a->eps, a->wd,
                             a->t0 + t));
    }
    return MT_OK;
}

/* torch.optim.AdamW's step as its documentation writes it, in double. t0 > 1 continues from the
 * moments given. */
static void adamw_case(int nd, const int64_t *shape, adamw_p ap, double gscale) {
    io c = {.nin = 1, .nout = 3};
    c.out[0] = H(MT_F32, nd, shape);
    c.out[1] = H(MT_F32, nd, shape);
    c.out[2] = H(MT_F32, nd, shape);
    int64_t n = N(&c.out[0]);
    c.in[0] = HT(MT_F32, ap.steps, n);
    fill_uniform(&c.out[0], -1, 1);
    fill_uniform(&c.in[0], -gscale, gscale);
    if (ap.t0 == 1) {
        memset(c.out[1].data, 0, mt_tensor_bytes(&c.out[1]));
        memset(c.out[2].data, 0, mt_tensor_bytes(&c.out[2]));
    } else {
        fill_uniform(&c.out[1], -gscale, gscale);
        fill_uniform(&c.out[2], 0, gscale * gscale);
    }
    double *p = DBL(n), *m = DBL(n), *v = DBL(n);
    for (int64_t i = 0; i < n; i++)
        p[i] = F(&c.out[0])[i], m[i] = F(&c.out[1])[i], v[i] = F(&c.out[2])[i];
    for (int s = 0; s < ap.steps; s++) {
        double t = (double)(ap.t0 + s);
        double bc1 = 1 - pow(ap.b1, t), bc2 = 1 - pow(ap.b2, t);
        for (int64_t i = 0; i < n; i++) {
            double g = F(&c.in[0])[s * n + i];
            p[i] *= 1 - (double)ap.lr * ap.wd;
            m[i] = ap.b1 * m[i] + (1 - (double)ap.b1) * g;
            v[i] = ap.b2 * v[i] + (1 - (double)ap.b2) * g * g;
            p[i] -= ap.lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + ap.eps);
        }
    }
    char label[160], dd[96];
    snprintf(label, sizeof label,
             "param %s, steps %" PRId64 "..%" PRId64 ", lr %g, betas (%g, %g), eps %g, wd %g, "
             "grads ~%g",
             desc(&c.out[0], dd), ap.t0, ap.t0 + ap.steps - 1, ap.lr, ap.b1, ap.b2, ap.eps, ap.wd,
             gscale);
    run_case("adamw_step", label, call_adamw, &ap, &c,
             (expect[]){{p, NULL, F32_TOL, 1.0},
                        {m, NULL, F32_TOL, 1e-3 * gscale},
                        {v, NULL, F32_TOL, 1e-3 * gscale * gscale}},
             NULL);
}

static void test_optim(void) {
    rng_seed(25);
    sgd_case(1, (int64_t[]){1}, (sgd_p){0.1f, 0, 0, 0, false, 1});
    sgd_case(2, (int64_t[]){3, 7}, (sgd_p){0.05f, 0, 0, 1e-2f, false, 3}); /* plain, decay */
    sgd_case(2, (int64_t[]){4, 5}, (sgd_p){0.1f, 0.9f, 0, 0, false, 5});   /* momentum */
    sgd_case(3, (int64_t[]){2, 3, 4}, (sgd_p){0.1f, 0.9f, 0.1f, 5e-4f, false, 4}); /* dampening */
    sgd_case(1, (int64_t[]){33}, (sgd_p){0.2f, 0.8f, 0, 1e-3f, true, 6});          /* nesterov */
    sgd_case(2, (int64_t[]){300, 257}, (sgd_p){0.01f, 0.9f, 0, 1e-4f, true, 2});   /* threads */
    adamw_case(1, (int64_t[]){1}, (adamw_p){1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, 1}, 1);
    adamw_case(2, (int64_t[]){5, 6}, (adamw_p){0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, 6}, 1);
    adamw_case(2, (int64_t[]){5, 6}, (adamw_p){0.05f, 0.8f, 0.99f, 1e-6f, 0.1f, 1000, 3}, 0.1);
    adamw_case(1, (int64_t[]){40}, (adamw_p){0.01f, 0.5f, 0.9f, 1e-3f, 0, 1, 4}, 1e-4); /* eps */
    adamw_case(1, (int64_t[]){40}, (adamw_p){0.01f, 0.3f, 0.9f, 1e-8f, 0, 1, 3}, 1);    /* lerp 2 */
    adamw_case(2, (int64_t[]){300, 257}, (adamw_p){1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 1, 2}, 1);
}

/* ==== sum of squares ========================================================================== */

static mt_status call_sumsq(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    return mt_sumsq(ctx, &in[0], &out[0]);
}

static void sumsq_case(int nd, const int64_t *shape, float start, double scale) {
    io c = {.nin = 1, .nout = 1, .in = {H(MT_F32, nd, shape)}, .out = {HT(MT_F32, 1)}};
    fill_normal(&c.in[0], scale);
    F(&c.out[0])[0] = start;
    double s = start, mag = fabs(start);
    for (int64_t i = 0; i < N(&c.in[0]); i++) {
        s += (double)F(&c.in[0])[i] * F(&c.in[0])[i];
        mag += (double)F(&c.in[0])[i] * F(&c.in[0])[i];
    }
    char label[96], dd[96];
    snprintf(label, sizeof label, "x %s, out starts at %g", desc(&c.in[0], dd), start);
    run_case("sumsq", label, call_sumsq, NULL, &c, (expect[]){{&s, &mag, F32_TOL, 1e-30}}, NULL);
}

static void test_sumsq(void) {
    rng_seed(26);
    sumsq_case(1, (int64_t[]){1}, 0, 1);
    sumsq_case(2, (int64_t[]){3, 5}, 2.5f, 1);
    sumsq_case(4, (int64_t[]){2, 3, 4, 5}, -1, 1e-3); /* out += even when out < 0 */
    sumsq_case(1, (int64_t[]){300007}, 0, 1);         /* several partial sums */
    sumsq_case(2, (int64_t[]){1000, 1000}, 1e3f, 1e4);
}

/* ==== Llama-family decoder layers: RMSNorm, RoPE, attention, SwiGLU ========================== */

/* ---- RMSNorm ---- */

typedef struct rms_p {
    float eps;
    bool alias; /* y = x in the forward, dx = dy in the backward */
    bool full;  /* the forward writes rstd (output 1), the backward dw (output 1) */
} rms_p;

/* in: x, w; out: y (, rstd) */
static mt_status call_rms_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const rms_p *r = p;
    mt_tensor *rstd = r->full ? &out[1] : NULL;
    if (!r->alias) return mt_rmsnorm_fwd(ctx, &in[0], &in[1], r->eps, &out[0], rstd);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_rmsnorm_fwd(ctx, &out[0], &in[1], r->eps, &out[0], rstd);
}

/* in: x, w, rstd, dy; out: dx (, dw +=) */
static mt_status call_rms_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const rms_p *r = p;
    mt_tensor *dw = r->full ? &out[1] : NULL;
    if (!r->alias) return mt_rmsnorm_bwd(ctx, &in[0], &in[1], &in[2], &in[3], &out[0], dw);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[3]));
    return mt_rmsnorm_bwd(ctx, &in[0], &in[1], &in[2], &out[0], &out[0], dw);
}

/* rstd for x: x's leading dims up to 2-D x, one flat dim (the other accepted form) beyond. */
static mt_tensor rstd_like(int nd, const int64_t *shape) {
    int64_t rows = 1;
    for (int i = 0; i < nd - 1; i++) rows *= shape[i];
    return nd <= 2 ? HT(MT_F32, nd == 2 ? shape[0] : 1) : HT(MT_F32, rows);
}

static void rms_case(int nd, const int64_t *shape, float eps, double scale, bool alias, bool fd) {
    const int64_t d = shape[nd - 1];
    rms_p rp = {eps, alias, true};
    io f = {.nin = 2, .nout = 2, .in = {H(MT_F32, nd, shape), HT(MT_F32, d)}};
    const int64_t n = N(&f.in[0]), rows = n / d;
    fill_normal(&f.in[0], scale);
    fill_uniform(&f.in[1], -1.5, 1.5);
    f.out[0] = H(MT_F32, nd, shape);
    f.out[1] = rstd_like(nd, shape);
    const float *x = F(&f.in[0]), *w = F(&f.in[1]);
    double *y = DBL(n), *rs = DBL(rows);
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t j = 0; j < d; j++) ss += (double)x[r * d + j] * x[r * d + j];
        rs[r] = 1 / sqrt(ss / d + eps);
        for (int64_t j = 0; j < d; j++) y[r * d + j] = x[r * d + j] * rs[r] * w[j];
    }
    /* the backward takes rstd as the forward stores it (f32); dw adds to earlier gradients */
    io b = {.nin = 4, .nout = 2, .in = {f.in[0], f.in[1], rstd_like(nd, shape), H_like(&f.in[0])}};
    for (int64_t r = 0; r < rows; r++) F(&b.in[2])[r] = (float)rs[r];
    fill_uniform(&b.in[3], -1, 1);
    b.out[0] = H_like(&f.in[0]);
    b.out[1] = HT(MT_F32, d);
    fill_uniform(&b.out[1], -1, 1);
    const float *rf = F(&b.in[2]), *dy = F(&b.in[3]);
    double *dx = DBL(n), *dxmag = DBL(n), *dw = DBL(d), *dwmag = DBL(d);
    for (int64_t j = 0; j < d; j++) dw[j] = F(&b.out[1])[j], dwmag[j] = fabs(dw[j]);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *dyr = dy + r * d;
        double s = 0, sa = 0, r3 = (double)rf[r] * rf[r] * rf[r];
        for (int64_t j = 0; j < d; j++) {
            s += (double)w[j] * dyr[j] * xr[j];
            sa += fabs((double)w[j] * dyr[j] * xr[j]);
            dw[j] += (double)dyr[j] * xr[j] * rf[r];
            dwmag[j] += fabs((double)dyr[j] * xr[j] * rf[r]);
        }
        for (int64_t j = 0; j < d; j++) {
            dx[r * d + j] = rf[r] * (double)w[j] * dyr[j] - xr[j] * r3 * s / d;
            dxmag[r * d + j] = fabs(rf[r] * (double)w[j] * dyr[j]) + fabs(xr[j]) * r3 * sa / d;
        }
    }
    char label[160], dd[96];
    snprintf(label, sizeof label, "x %s, eps %g, scale %g%s", desc(&f.in[0], dd), eps, scale,
             alias ? ", in place" : "");
    run_case("rmsnorm_fwd", label, call_rms_fwd, &rp, &f,
             (expect[]){{y, NULL, F32_TOL, 1e-3}, {rs, NULL, F32_TOL, 1e-30}}, NULL);
    run_case("rmsnorm_bwd", label, call_rms_bwd, &rp, &b,
             (expect[]){{dx, dxmag, GRAD_TOL, 1e-6}, {dw, dwmag, GRAD_TOL, 1e-6}}, NULL);
    /* without the optional outputs */
    rms_p lean = {eps, alias, false};
    io fl = f, bl = b;
    fl.nout = bl.nout = 1;
    run_case("rmsnorm_fwd", label, call_rms_fwd, &lean, &fl, (expect[]){{y, NULL, F32_TOL, 1e-3}},
             NULL);
    run_case("rmsnorm_bwd", label, call_rms_bwd, &lean, &bl,
             (expect[]){{dx, dxmag, GRAD_TOL, 1e-6}}, NULL);
    if (!fd) return;
    /* central differences of the forward along x and w, with w = dy and the backward fed each
     * backend's own rstd, from a zero dw */
    rms_p plain = {eps, false, true};
    for (int dv = 0; dv < MT_DEVICE_COUNT; dv++) {
        mt_tensor fr[MAX_IO], gr[MAX_IO];
        if (!g_have[dv] || run_on(&g_ctx[dv], call_rms_fwd, &plain, &f, fr) != MT_OK) continue;
        io bb = b;
        bb.in[2] = fr[1];
        bb.out[1] = HT(MT_F32, d);
        memset(bb.out[1].data, 0, mt_tensor_bytes(&bb.out[1]));
        if (run_on(&g_ctx[dv], call_rms_bwd, &plain, &bb, gr) != MT_OK) continue;
        fd_check(&g_ctx[dv], "rmsnorm_bwd", label, call_rms_fwd, &plain, &f, 0, dy, &gr[0], 1e-3);
        fd_check(&g_ctx[dv], "rmsnorm_bwd", label, call_rms_fwd, &plain, &f, 1, dy, &gr[1], 1e-3);
    }
}

static void test_rmsnorm(void) {
    rng_seed(41);
    rms_case(1, (int64_t[]){1}, 1e-6f, 1, false, true);
    rms_case(2, (int64_t[]){3, 8}, 1e-6f, 1, false, true);
    rms_case(2, (int64_t[]){4, 7}, 1e-5f, 1, true, true);
    rms_case(3, (int64_t[]){2, 5, 16}, 1e-5f, 3, false, true);
    rms_case(2, (int64_t[]){3, 6}, 0.5f, 0.01, false, true); /* eps dominates */
    rms_case(2, (int64_t[]){2, 5}, 0, 1e-3, false, false);   /* no eps, small x */
    rms_case(4, (int64_t[]){2, 3, 4, 64}, 1e-6f, 1, true, false);
    rms_case(2, (int64_t[]){3001, 70}, 1e-6f, 1, false, false); /* chunks of rows, threads */
    rms_case(2, (int64_t[]){9, 4096}, 1e-5f, 2, false, false);  /* Llama-sized rows */
    for (int i = 0; i < 4; i++) {
        int64_t shape[3];
        int nd = (int)rng_int(1, 3);
        random_shape(shape, nd, 12);
        rms_case(nd, shape, 1e-6f, rng_range(0.1, 3), rng_int(0, 1), true);
    }
}

/* ---- RoPE ---- */

typedef struct rope_p {
    bool inverse, alias;
} rope_p;

/* in: x, cos, sin; out: y */
static mt_status call_rope(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const rope_p *r = p;
    if (!r->alias) return mt_rope(ctx, &in[0], &in[1], &in[2], r->inverse, &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[0]));
    return mt_rope(ctx, &out[0], &in[1], &in[2], r->inverse, &out[0]);
}

/* cos and sin (T, D/2) for positions past + t, as HF's default rope: angle = pos *
 * theta^(-2i/D). */
static void rope_tables(int64_t t, int64_t d, int64_t past, double theta, mt_tensor *cos_t,
                        mt_tensor *sin_t) {
    *cos_t = HT(MT_F32, t, d / 2);
    *sin_t = HT(MT_F32, t, d / 2);
    for (int64_t p = 0; p < t; p++)
        for (int64_t i = 0; i < d / 2; i++) {
            double a = (double)(past + p) * pow(theta, -2.0 * (double)i / (double)d);
            F(cos_t)[p * (d / 2) + i] = (float)cos(a);
            F(sin_t)[p * (d / 2) + i] = (float)sin(a);
        }
}

/* y for x (B,T,H,D) in double; sign -1 for the inverse. */
static void rope_ref(const mt_tensor *x, const float *c, const float *s, double sign, double *y,
                     double *mag) {
    int64_t t = x->shape[1], h = x->shape[2], half = x->shape[3] / 2;
    for (int64_t row = 0; row < N(x) / (2 * half); row++) {
        int64_t pos = row / h % t;
        const float *xr = F(x) + row * 2 * half;
        for (int64_t i = 0; i < half; i++) {
            double ci = c[pos * half + i], si = sign * s[pos * half + i];
            double x0 = xr[i], x1 = xr[i + half];
            y[row * 2 * half + i] = x0 * ci - x1 * si;
            y[row * 2 * half + i + half] = x1 * ci + x0 * si;
            mag[row * 2 * half + i] = fabs(x0 * ci) + fabs(x1 * si);
            mag[row * 2 * half + i + half] = fabs(x1 * ci) + fabs(x0 * si);
        }
    }
}

static void rope_case(int64_t b, int64_t t, int64_t h, int64_t d, int64_t past, bool alias,
                      bool fd) {
    io f = {.nin = 3, .nout = 1, .in = {HT(MT_F32, b, t, h, d)}, .out = {HT(MT_F32, b, t, h, d)}};
    fill_normal(&f.in[0], 1);
    rope_tables(t, d, past, 10000.0, &f.in[1], &f.in[2]);
    const int64_t n = N(&f.in[0]);
    double *y = DBL(n), *yi = DBL(n), *mag = DBL(n), *magi = DBL(n);
    rope_ref(&f.in[0], F(&f.in[1]), F(&f.in[2]), 1, y, mag);
    rope_ref(&f.in[0], F(&f.in[1]), F(&f.in[2]), -1, yi, magi);
    char label[160], dd[96];
    snprintf(label, sizeof label, "x %s, positions from %" PRId64 "%s", desc(&f.in[0], dd), past,
             alias ? ", in place" : "");
    run_case("rope", label, call_rope, &(rope_p){false, alias}, &f,
             (expect[]){{y, mag, F32_TOL, 1e-6}}, NULL);
    run_case("rope", label, call_rope, &(rope_p){true, alias}, &f,
             (expect[]){{yi, magi, F32_TOL, 1e-6}}, NULL);
    if (!fd) return;
    /* the backward of the rotation is the inverse rotation of dy */
    io g = f;
    g.in[0] = H_like(&f.in[0]);
    fill_uniform(&g.in[0], -1, 1);
    for (int dv = 0; dv < MT_DEVICE_COUNT; dv++) {
        mt_tensor grad;
        if (g_have[dv] && grad_on(&g_ctx[dv], call_rope, &(rope_p){true, false}, &g, &grad))
            fd_check(&g_ctx[dv], "rope", label, call_rope, &(rope_p){false, false}, &f, 0,
                     F(&g.in[0]), &grad, 1e-2);
    }
}

static void test_rope(void) {
    rng_seed(42);
    rope_case(1, 1, 1, 2, 0, false, true);
    rope_case(2, 3, 2, 8, 0, false, true);
    rope_case(1, 5, 3, 16, 7, true, true);     /* positions after a KV cache */
    rope_case(1, 1, 4, 64, 1000, false, true); /* decoding one token */
    rope_case(2, 37, 4, 128, 0, false, false);
    rope_case(1, 64, 8, 64, 3, true, false); /* OpenMP threshold */
    for (int i = 0; i < 4; i++) {
        const int64_t b = rng_int(1, 3), t = rng_int(1, 9), h = rng_int(1, 5);
        rope_case(b, t, h, 2 * rng_int(1, 12), rng_int(0, 100), rng_int(0, 1), true);
    }
}

/* ---- attention ---- */

typedef struct att_p {
    float scale;
    bool causal, lse; /* lse: the forward writes lse (output 1) */
} att_p;

/* in: q, k, v; out: out (, lse) */
static mt_status call_att_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const att_p *a = p;
    return mt_attention_fwd(ctx, &in[0], &in[1], &in[2], a->scale, a->causal, &out[0],
                            a->lse ? &out[1] : NULL);
}

/* in: q, k, v, out, lse, dout; out: dq, dk, dv */
static mt_status call_att_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const att_p *a = p;
    return mt_attention_bwd(ctx, &in[0], &in[1], &in[2], &in[3], &in[4], &in[5], a->scale,
                            a->causal, &out[0], &out[1], &out[2]);
}

typedef struct att_dims {
    int64_t b, t, s, hq, hkv, d;
} att_dims;

/* The reference's results with their magnitudes (sums of |terms|, for the tolerances). */
typedef struct att_ref {
    double *out, *out_mag, *lse, *dq, *dq_mag, *dk, *dk_mag, *dv, *dv_mag;
} att_ref;

/* One softmax row of the materialised reference, in double: query (b, h, t) against the keys of
 * kv head h / (Hq/Hkv) (HF's repeat_kv) that the mask lets it see (s <= t + S - T when causal).
 * Writes the row of out and lse and, with dout, of dq, and adds into dk and dv unless NULL. */
static void att_ref_row(const att_dims *a, float scale, bool causal, const float *q, const float *k,
                        const float *v, const float *dout, int64_t b, int64_t h, int64_t t,
                        const att_ref *r) {
    const int64_t d = a->d, g = h / (a->hq / a->hkv), lim = causal ? t + a->s - a->t + 1 : a->s;
    const int64_t qi = ((b * a->t + t) * a->hq + h) * d;
    double *p = DBL(a->s), *dp = DBL(a->s), *adp = DBL(a->s), mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < lim; j++) {
        const float *kj = k + ((b * a->s + j) * a->hkv + g) * d;
        double s = 0;
        for (int64_t c = 0; c < d; c++) s += (double)q[qi + c] * kj[c];
        p[j] = scale * s;
        mx = fmax(mx, p[j]);
    }
    for (int64_t j = 0; j < lim; j++) sum += p[j] = exp(p[j] - mx);
    for (int64_t j = 0; j < lim; j++) p[j] /= sum;
    r->lse[(b * a->hq + h) * a->t + t] = mx + log(sum);
    for (int64_t c = 0; c < d; c++) {
        double o = 0, m = 0;
        for (int64_t j = 0; j < lim; j++) {
            double vv = v[((b * a->s + j) * a->hkv + g) * d + c];
            o += p[j] * vv;
            m += p[j] * fabs(vv);
        }
        r->out[qi + c] = o;
        r->out_mag[qi + c] = m;
    }
    if (!dout) return;
    const float *dov = dout + qi;
    double dl = 0, adl = 0;
    for (int64_t c = 0; c < d; c++) dl += dov[c] * r->out[qi + c];
    for (int64_t j = 0; j < lim; j++) {
        const float *vj = v + ((b * a->s + j) * a->hkv + g) * d;
        dp[j] = adp[j] = 0;
        for (int64_t c = 0; c < d; c++) {
            dp[j] += (double)dov[c] * vj[c];
            adp[j] += fabs((double)dov[c] * vj[c]);
        }
        adl += p[j] * adp[j];
    }
    for (int64_t c = 0; c < d; c++) r->dq[qi + c] = r->dq_mag[qi + c] = 0;
    for (int64_t j = 0; j < lim; j++) {
        const int64_t kj = ((b * a->s + j) * a->hkv + g) * d;
        const double ds = p[j] * (dp[j] - dl), ms = p[j] * (adp[j] + adl);
        for (int64_t c = 0; c < d; c++) {
            r->dq[qi + c] += scale * ds * k[kj + c];
            r->dq_mag[qi + c] += scale * ms * fabs(k[kj + c]);
            if (!r->dk) continue;
            r->dk[kj + c] += scale * ds * q[qi + c];
            r->dk_mag[kj + c] += scale * ms * fabs(q[qi + c]);
            r->dv[kj + c] += p[j] * dov[c];
            r->dv_mag[kj + c] += p[j] * fabs(dov[c]);
        }
    }
}

static att_ref att_ref_alloc(const att_dims *a, bool kv) {
    const int64_t nq = a->b * a->t * a->hq * a->d, nk = a->b * a->s * a->hkv * a->d;
    att_ref r = {.out = DBL(nq),
                 .out_mag = DBL(nq),
                 .lse = DBL(a->b * a->hq * a->t),
                 .dq = DBL(nq),
                 .dq_mag = DBL(nq)};
    if (kv) {
        r.dk = DBL(nk), r.dk_mag = DBL(nk), r.dv = DBL(nk), r.dv_mag = DBL(nk);
        for (int64_t i = 0; i < nk; i++) r.dk[i] = r.dk_mag[i] = r.dv[i] = r.dv_mag[i] = 0;
    }
    return r;
}

static void att_label(char *label, size_t size, const att_dims *a, float scale, bool causal) {
    snprintf(label, size,
             "B %" PRId64 ", T %" PRId64 ", S %" PRId64 ", Hq %" PRId64 ", Hkv %" PRId64
             ", D %" PRId64 ", scale %.3g%s",
             a->b, a->t, a->s, a->hq, a->hkv, a->d, scale, causal ? ", causal" : "");
}

/* q, k, v, dout of a case, filled: q and k normal (scores of spread scale * sqrt(D)), v normal,
 * dout uniform. */
static void att_inputs(const att_dims *a, mt_tensor *t) {
    t[0] = HT(MT_F32, a->b, a->t, a->hq, a->d);
    t[1] = HT(MT_F32, a->b, a->s, a->hkv, a->d);
    t[2] = HT(MT_F32, a->b, a->s, a->hkv, a->d);
    t[3] = H_like(&t[0]);
    for (int i = 0; i < 3; i++) fill_normal(&t[i], 1);
    fill_uniform(&t[3], -1, 1);
}

static void att_case(att_dims a, bool causal, double scale_mult, bool fd) {
    const float scale = (float)(scale_mult / sqrt((double)a.d));
    mt_tensor in[4];
    att_inputs(&a, in);
    att_ref r = att_ref_alloc(&a, true);
    for (int64_t b = 0; b < a.b; b++)
        for (int64_t h = 0; h < a.hq; h++)
            for (int64_t t = 0; t < a.t; t++)
                att_ref_row(&a, scale, causal, F(&in[0]), F(&in[1]), F(&in[2]), F(&in[3]), b, h, t,
                            &r);
    io f = {.nin = 3, .nout = 2, .in = {in[0], in[1], in[2]}};
    f.out[0] = H_like(&in[0]);
    f.out[1] = HT(MT_F32, a.b, a.hq, a.t);
    /* the backward takes out and lse as the forward stores them (f32) */
    io bw = {
        .nin = 6, .nout = 3, .in = {in[0], in[1], in[2], H_like(&in[0]), H_like(&f.out[1]), in[3]}};
    for (int64_t i = 0; i < N(&in[0]); i++) F(&bw.in[3])[i] = (float)r.out[i];
    for (int64_t i = 0; i < N(&f.out[1]); i++) F(&bw.in[4])[i] = (float)r.lse[i];
    bw.out[0] = H_like(&in[0]);
    bw.out[1] = H_like(&in[1]);
    bw.out[2] = H_like(&in[2]);
    char label[192];
    att_label(label, sizeof label, &a, scale, causal);
    att_p ap = {scale, causal, true}, lean = {scale, causal, false};
    run_case("attention_fwd", label, call_att_fwd, &ap, &f,
             (expect[]){{r.out, r.out_mag, F32_TOL, 1e-6}, {r.lse, NULL, F32_TOL, 1.0}}, NULL);
    io fl = f;
    fl.nout = 1;
    run_case("attention_fwd", label, call_att_fwd, &lean, &fl,
             (expect[]){{r.out, r.out_mag, F32_TOL, 1e-6}}, NULL);
    run_case("attention_bwd", label, call_att_bwd, &ap, &bw,
             (expect[]){{r.dq, r.dq_mag, GRAD_TOL, 1e-6},
                        {r.dk, r.dk_mag, GRAD_TOL, 1e-6},
                        {r.dv, r.dv_mag, GRAD_TOL, 1e-6}},
             NULL);
    if (!fd) return;
    /* central differences along q, k and v, with w = dout and the backward fed each backend's
     * own out and lse */
    for (int dv = 0; dv < MT_DEVICE_COUNT; dv++) {
        mt_tensor fr[MAX_IO], gr[MAX_IO];
        if (!g_have[dv] || run_on(&g_ctx[dv], call_att_fwd, &ap, &f, fr) != MT_OK) continue;
        io bb = bw;
        bb.in[3] = fr[0];
        bb.in[4] = fr[1];
        if (run_on(&g_ctx[dv], call_att_bwd, &ap, &bb, gr) != MT_OK) continue;
        for (int wrt = 0; wrt < 3; wrt++)
            fd_check(&g_ctx[dv], "attention_bwd", label, call_att_fwd, &ap, &f, wrt, F(&in[3]),
                     &gr[wrt], 1e-3);
    }
}

#define ATT(b, t, s, hq, hkv, d) ((att_dims){b, t, s, hq, hkv, d})

static void test_attention(void) {
    rng_seed(43);
    att_case(ATT(1, 1, 1, 1, 1, 1), false, 1, true);
    att_case(ATT(2, 5, 5, 2, 2, 8), false, 1, true);
    att_case(ATT(2, 5, 5, 2, 2, 8), true, 1, true);
    att_case(ATT(1, 7, 7, 4, 2, 16), true, 1, true);  /* GQA 2 */
    att_case(ATT(2, 3, 9, 4, 1, 8), true, 1, true);   /* GQA 4, queries at the end of a cache */
    att_case(ATT(1, 1, 37, 8, 2, 16), true, 1, true); /* decoding one token */
    att_case(ATT(2, 1, 20, 4, 4, 8), false, 3, true); /* T = 1, peaky softmax */
    att_case(ATT(1, 9, 4, 2, 1, 4), false, 1, true);  /* more queries than keys */
    att_case(ATT(1, 6, 6, 3, 1, 5), true, 4, false);  /* GQA 3 */
    att_case(ATT(1, 4, 4, 2, 1, 8), true, 0, false);  /* scale 0: uniform over what is seen */
    /* several query and key blocks (128 rows, 128 keys): edges of blocks and of the mask */
    att_case(ATT(1, 300, 300, 2, 1, 32), true, 1, false);
    att_case(ATT(1, 260, 260, 1, 1, 24), false, 1, false);
    att_case(ATT(2, 130, 400, 2, 2, 16), true, 1, false);
    att_case(ATT(1, 200, 200, 4, 2, 64), true, 2, false);
    att_case(ATT(1, 150, 150, 2, 1, 128), true, 1, false);
    att_case(ATT(1, 1, 4096, 8, 2, 128), true, 1, false); /* decoding against a long cache */
    att_case(ATT(1, 3, 2500, 4, 1, 64), true, 1, false);  /* a few tokens at a time */
    /* random shapes: GQA ratios 1, 2 and 4, causal (then T <= S) or not */
    for (int i = 0; i < 10; i++) {
        const int64_t rep = (int64_t[]){1, 2, 4}[rng_int(0, 2)], hkv = rng_int(1, 3);
        const bool causal = rng_int(0, 1);
        const int64_t b = rng_int(1, 3), t = rng_int(1, 40), d = rng_int(1, 40);
        const int64_t s = causal ? t + rng_int(0, 30) : rng_int(1, 70);
        att_case(ATT(b, t, s, hkv * rep, hkv, d), causal, rng_range(0.5, 2), i < 4);
    }
}

/* A long causal sequence, T = S = 4096 with D = 128, too long for the whole reference: the rows
 * of a few queries (out, lse, dq) against the reference, and dk, dv of a few keys against sums
 * over every query that uses the op's own lse and out for P and delta (both checked on the
 * sampled rows). */
static void att_long_case(att_dims a) {
    const float scale = (float)(1 / sqrt((double)a.d));
    mt_tensor in[4];
    att_inputs(&a, in);
    io f = {.nin = 3, .nout = 2, .in = {in[0], in[1], in[2]}};
    f.out[0] = H_like(&in[0]);
    f.out[1] = HT(MT_F32, a.b, a.hq, a.t);
    att_p ap = {scale, true, true};
    mt_tensor fr[MAX_IO], gr[MAX_IO];
    MT_CHECK_OK(run_on(&g_ctx[MT_CPU], call_att_fwd, &ap, &f, fr));
    io bw = {.nin = 6, .nout = 3, .in = {in[0], in[1], in[2], fr[0], fr[1], in[3]}};
    bw.out[0] = H_like(&in[0]);
    bw.out[1] = H_like(&in[1]);
    bw.out[2] = H_like(&in[2]);
    MT_CHECK_OK(run_on(&g_ctx[MT_CPU], call_att_bwd, &ap, &bw, gr));
    char label[192];
    att_label(label, sizeof label, &a, scale, true);
    att_ref r = att_ref_alloc(&a, false);
    const int64_t ts[] = {0, 1, 127, 128, a.t / 2 + 3, a.t - 1}, d = a.d;
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        for (int64_t h = 0; h < a.hq; h++) {
            att_ref_row(&a, scale, true, F(&in[0]), F(&in[1]), F(&in[2]), F(&in[3]), 0, h, ts[i],
                        &r);
            const int64_t qi = (ts[i] * a.hq + h) * d, li = h * a.t + ts[i];
            for (int64_t c = 0; c < d; c++) {
                MT_CHECK(close_enough(F(&fr[0])[qi + c], r.out[qi + c], r.out_mag[qi + c], F32_TOL,
                                      1e-6),
                         "(%s: out[t %" PRId64 ", h %" PRId64 "] %.9g vs %.9g)", label, ts[i], h,
                         F(&fr[0])[qi + c], r.out[qi + c]);
                MT_CHECK(
                    close_enough(F(&gr[0])[qi + c], r.dq[qi + c], r.dq_mag[qi + c], GRAD_TOL, 1e-6),
                    "(%s: dq[t %" PRId64 ", h %" PRId64 "] %.9g vs %.9g)", label, ts[i], h,
                    F(&gr[0])[qi + c], r.dq[qi + c]);
            }
            MT_CHECK(close_enough(F(&fr[1])[li], r.lse[li], fabs(r.lse[li]), F32_TOL, 1.0),
                     "(%s: lse %.9g vs %.9g)", label, F(&fr[1])[li], r.lse[li]);
        }
    /* dk and dv of key j: sums over the queries that see it, t >= j, of every head of its group */
    const int64_t js[] = {0, 5, 1000, a.s - 2, a.s - 1}, rep = a.hq / a.hkv;
    double *dk = DBL(d), *dkm = DBL(d), *dvv = DBL(d), *dvm = DBL(d);
    for (size_t i = 0; i < sizeof js / sizeof js[0]; i++)
        for (int64_t g = 0; g < a.hkv; g++) {
            const int64_t j = js[i], ki = (j * a.hkv + g) * d;
            for (int64_t c = 0; c < d; c++) dk[c] = dkm[c] = dvv[c] = dvm[c] = 0;
            for (int64_t h = g * rep; h < (g + 1) * rep; h++)
                for (int64_t t = j; t < a.t; t++) {
                    const int64_t qi = (t * a.hq + h) * d;
                    const float *qv = F(&in[0]) + qi, *dov = F(&in[3]) + qi, *o = F(&fr[0]) + qi;
                    double s = 0, dp = 0, adp = 0, dl = 0, adl = 0;
                    for (int64_t c = 0; c < d; c++) {
                        s += (double)qv[c] * F(&in[1])[ki + c];
                        dp += (double)dov[c] * F(&in[2])[ki + c];
                        adp += fabs((double)dov[c] * F(&in[2])[ki + c]);
                        dl += (double)dov[c] * o[c];
                        adl += fabs((double)dov[c] * o[c]);
                    }
                    const double p = exp(scale * s - F(&fr[1])[h * a.t + t]);
                    for (int64_t c = 0; c < d; c++) {
                        dk[c] += scale * p * (dp - dl) * qv[c];
                        dkm[c] += scale * p * (adp + adl) * fabs(qv[c]);
                        dvv[c] += p * dov[c];
                        dvm[c] += p * fabs(dov[c]);
                    }
                }
            for (int64_t c = 0; c < d; c++) {
                MT_CHECK(close_enough(F(&gr[1])[ki + c], dk[c], dkm[c], GRAD_TOL, 1e-6),
                         "(%s: dk[s %" PRId64 "] %.9g vs %.9g)", label, j, F(&gr[1])[ki + c],
                         dk[c]);
                MT_CHECK(close_enough(F(&gr[2])[ki + c], dvv[c], dvm[c], GRAD_TOL, 1e-6),
                         "(%s: dv[s %" PRId64 "] %.9g vs %.9g)", label, j, F(&gr[2])[ki + c],
                         dvv[c]);
            }
        }
}

static void test_attention_long(void) {
    rng_seed(44);
    att_long_case(ATT(1, 4096, 4096, 2, 1, 128));
}

/* Times (not checked) on the test's CPU context: the forward and backward of a causal prefill,
 * and the forward of one token against a long KV cache. */
static void test_attention_bench(void) {
    rng_seed(45);
    mt_ctx *ctx = &g_ctx[MT_CPU];
    const struct {
        att_dims a;
        bool bwd;
    } runs[] = {{ATT(1, 2048, 2048, 8, 2, 128), true}, {ATT(1, 1, 4096, 32, 8, 128), false}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        const att_dims a = runs[i].a;
        const float scale = (float)(1 / sqrt((double)a.d));
        mt_tensor in[4], out = HT(MT_F32, a.b, a.t, a.hq, a.d), lse = HT(MT_F32, a.b, a.hq, a.t);
        att_inputs(&a, in);
        double t0 = mt_now();
        MT_CHECK_OK(mt_attention_fwd(ctx, &in[0], &in[1], &in[2], scale, true, &out, &lse));
        double tf = mt_now() - t0, tb = 0;
        if (runs[i].bwd) {
            mt_tensor dq = H_like(&in[0]), dk = H_like(&in[1]), dv = H_like(&in[2]);
            t0 = mt_now();
            MT_CHECK_OK(mt_attention_bwd(ctx, &in[0], &in[1], &in[2], &out, &lse, &in[3], scale,
                                         true, &dq, &dk, &dv));
            tb = mt_now() - t0;
        }
        /* two GEMMs (QK^T, PV) of 2 flop per multiply-add over the pairs the mask keeps; the
         * backward's five GEMMs are 2.5 times that */
        double pairs = a.t == a.s ? a.t * (a.t + 1) / 2.0 : (double)a.t * a.s;
        double flop = 4.0 * a.b * a.hq * pairs * a.d;
        char label[192];
        att_label(label, sizeof label, &a, scale, true);
        printf("attention %s, %d threads: forward %.2f ms (%.1f GFLOP/s)", label, ctx->threads,
               tf * 1e3, flop / tf * 1e-9);
        if (runs[i].bwd)
            printf(", backward %.2f ms (%.1f GFLOP/s)", tb * 1e3, 2.5 * flop / tb * 1e-9);
        printf("\n");
    }
}

/* ---- SwiGLU ---- */

/* Forward: 0 separate output, 1 y in place of gate, 2 of up. Backward: 0 separate outputs, 1
 * dgate in place of gate and dup of up, 2 dgate in place of up and dup of dy. */
typedef struct swiglu_p {
    int alias;
} swiglu_p;

/* in: gate, up; out: y */
static mt_status call_swiglu_fwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const swiglu_p *s = p;
    if (s->alias == 0) return mt_swiglu_fwd(ctx, &in[0], &in[1], &out[0]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[s->alias - 1]));
    if (s->alias == 1) return mt_swiglu_fwd(ctx, &out[0], &in[1], &out[0]);
    return mt_swiglu_fwd(ctx, &in[0], &out[0], &out[0]);
}

/* in: gate, up, dy; out: dgate, dup */
static mt_status call_swiglu_bwd(mt_ctx *ctx, const void *p, mt_tensor *in, mt_tensor *out) {
    const swiglu_p *s = p;
    if (s->alias == 0) return mt_swiglu_bwd(ctx, &in[0], &in[1], &in[2], &out[0], &out[1]);
    MT_TRY(mt_tensor_copy(ctx, &out[0], &in[s->alias - 1]));
    MT_TRY(mt_tensor_copy(ctx, &out[1], &in[s->alias]));
    if (s->alias == 1) return mt_swiglu_bwd(ctx, &out[0], &out[1], &in[2], &out[0], &out[1]);
    return mt_swiglu_bwd(ctx, &in[0], &out[0], &out[1], &out[0], &out[1]);
}

static void swiglu_case(int nd, const int64_t *shape, double range, int alias, bool fd) {
    io f = {.nin = 2, .nout = 1, .in = {H(MT_F32, nd, shape), H(MT_F32, nd, shape)}};
    fill_uniform(&f.in[0], -range, range);
    fill_normal(&f.in[1], 1);
    f.out[0] = H(MT_F32, nd, shape);
    io b = {.nin = 3, .nout = 2, .in = {f.in[0], f.in[1], H(MT_F32, nd, shape)}};
    fill_uniform(&b.in[2], -1, 1);
    b.out[0] = H(MT_F32, nd, shape);
    b.out[1] = H(MT_F32, nd, shape);
    const int64_t n = N(&f.in[0]);
    double *y = DBL(n), *dg = DBL(n), *dgm = DBL(n), *du = DBL(n);
    for (int64_t i = 0; i < n; i++) {
        double g = F(&f.in[0])[i], u = F(&f.in[1])[i], dy = F(&b.in[2])[i];
        double s = 1 / (1 + exp(-g));
        y[i] = g * s * u;
        dg[i] = dy * u * s * (1 + g * (1 - s));
        dgm[i] = fabs(dy * u * s) * (1 + fabs(g) * (1 - s));
        du[i] = dy * g * s;
    }
    char label[160], dd[96];
    snprintf(label, sizeof label, "gate %s in +-%g, alias %d", desc(&f.in[0], dd), range, alias);
    run_case("swiglu_fwd", label, call_swiglu_fwd, &(swiglu_p){alias}, &f,
             (expect[]){{y, NULL, F32_TOL, 1e-30}}, NULL);
    run_case("swiglu_bwd", label, call_swiglu_bwd, &(swiglu_p){alias}, &b,
             (expect[]){{dg, dgm, F32_TOL, 1e-30}, {du, NULL, F32_TOL, 1e-30}}, NULL);
    if (!fd) return;
    for (int dv = 0; dv < MT_DEVICE_COUNT; dv++) {
        mt_tensor gr[MAX_IO];
        if (!g_have[dv] || run_on(&g_ctx[dv], call_swiglu_bwd, &(swiglu_p){0}, &b, gr) != MT_OK)
            continue;
        for (int wrt = 0; wrt < 2; wrt++)
            fd_check(&g_ctx[dv], "swiglu_bwd", label, call_swiglu_fwd, &(swiglu_p){0}, &f, wrt,
                     F(&b.in[2]), &gr[wrt], 1e-3);
    }
}

static void test_swiglu(void) {
    rng_seed(46);
    swiglu_case(1, (int64_t[]){1}, 1, 0, true);
    swiglu_case(2, (int64_t[]){3, 7}, 4, 0, true);
    swiglu_case(3, (int64_t[]){2, 3, 11}, 8, 1, true);
    swiglu_case(2, (int64_t[]){5, 6}, 3, 2, true);
    swiglu_case(1, (int64_t[]){64}, 120, 0, false);     /* exp(-g) overflows: silu -> 0 or g */
    swiglu_case(2, (int64_t[]){70, 1000}, 6, 0, false); /* OpenMP threshold */
    for (int i = 0; i < 4; i++) {
        int64_t shape[4];
        int nd = (int)rng_int(1, 4);
        random_shape(shape, nd, 9);
        swiglu_case(nd, shape, rng_range(1, 10), (int)rng_int(0, 2), true);
    }
}

/* ---- PyTorch's values ---- */

/* Computed with /work/torchenv/bin/python (torch 2.15 CPU, transformers 5.24), printed "%.9g":
 *   RMSNorm: LlamaRMSNorm(6, eps=1e-6) with weight[j] = 0.5 + j/8 on x (2,6), x[i] = ((7i) % 11 -
 *     5)/4; y.backward(dy) with dy[i] = ((5i) % 9 - 4)/8 gives x.grad and weight.grad.
 *   RoPE: LlamaRotaryEmbedding(LlamaConfig(head_dim=8, rope_theta=10000)) at position_ids
 *     [[2,3,4]], apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)[0] on x (1,3,2,8) in our
 *     (B,T,H,D) layout, x[i] = ((3i) % 13 - 6)/5.
 *   Attention: F.scaled_dot_product_attention on q (1,2,2,4), k and v (1,3,1,4) transposed to
 *     (B,H,T,D), scale 0.5, enable_gqa=True, attn_mask = ones(2,3).tril(diagonal=1) (bottom-right
 *     causal), q[i] = ((5i) % 11 - 5)/4, k[i] = ((3i) % 7 - 3)/3, v[i] = ((7i) % 9 - 4)/2;
 *     backward of dout[i] = ((2i) % 5 - 2)/2; lse = torch.logsumexp of the masked scaled scores
 *     with k repeat_interleave'd over the query heads, (B,Hq,T).
 *   SwiGLU: F.silu(g) * u with g[i] = (i - 3.5) * 1.1, u[i] = ((3i) % 5 - 2)/2, backward of dy[i]
 *     = ((7i) % 5 - 2)/3. */
static const float torch_rms_y[] = {-0.742610157f, 0.371305078f, -0.445566118f, 1.29956782f,
                                    0.297044069f,  -1.00252378f, 0.598505139f,  0.0f,
                                    -0.897757709f, 0.785538018f, -0.29925257f,  -1.68329561f};
static const float torch_rms_dx[] = {-0.161900103f, 0.0387686864f, -0.280116975f, 0.124769598f,
                                     -0.324072868f, 0.582348287f,  -0.104961671f, 0.374065697f,
                                     0.0301485304f, -0.546303391f, 0.157163411f,  -0.467303067f};
static const float torch_rms_dw[] = {0.592983842f,   0.0742610171f, 0.222783059f,
                                     -0.0775737762f, -0.111667588f, 0.226924002f};
static const float torch_rope_y[] = {
    -0.591780722f, -0.429104507f, 0.00399973337f, 0.599198818f,    -1.59053326f,  -0.903254867f,
    -0.199960008f, 0.401199222f,  -1.14358473f,   -0.741663396f,   -0.387920827f, 0.199999616f,
    0.576379895f,  -1.3747493f,   -0.607879519f,  0.000399999757f, -0.650443494f, 0.850883722f,
    -0.769644558f, -0.198799103f, -0.311325014f,  1.30996084f,     -1.02354646f,  -0.400598228f,
    -0.197998509f, 0.586957097f,  -1.2354548f,    -0.597597361f,   0.0282240007f, 0.809618115f,
    1.1634655f,    -0.801796436f, -0.171992272f,  0.290540695f,    0.967208624f,  -0.995192051f,
    0.412817955f,  0.339979529f,  0.839349449f,   -1.20399046f,    -0.213255793f, 0.0778836757f,
    0.583524346f,  1.19599056f,   0.976996422f,   -0.184212193f,   0.42367366f,   1.00479198f};
static const float torch_att_out[] = {-1.89909339f, 1.60090661f,   0.60090661f,  -0.39909339f,
                                      -1.6344707f,  1.86552942f,   0.865529299f, -0.134470716f,
                                      -1.57511926f, 1.55623484f,   0.924880803f, -0.0751192421f,
                                      -1.24391389f, -0.922091484f, 1.25608611f,  0.256086141f};
static const float torch_att_lse[] = {1.51707923f, 1.54366267f, 1.31326163f, 1.34776938f};
static const float torch_att_dq[] = {-0.0335592628f, 0.0134237297f,  0.0134236682f,  0.0134237502f,
                                     0.0409608334f,  -0.0163843557f, -0.0163842998f, -0.0163843744f,
                                     -0.0457480066f, -0.133137062f,  0.11925672f,    -0.133137062f,
                                     0.101429075f,   0.286171794f,   -0.258400559f,  0.286171794f};
static const float torch_att_dk[] = {-0.014387738f,  -0.251193941f, 0.0629693121f,  -0.229209617f,
                                     0.0684722513f,  -0.148710012f, 0.0224198811f,  -0.139389515f,
                                     -0.0540843755f, 0.399903953f,  -0.0853892267f, 0.368599087f};
static const float torch_att_dv[] = {-0.585706532f,  -0.249906272f, 0.663071752f, -0.32424143f,
                                     -0.0795945376f, -0.43792358f,  -0.43428123f, 0.530503154f,
                                     0.665301085f,   -0.312170208f, 0.271209568f, -0.706261754f};
static const float torch_sw_y[] = {0.0802199319f, -0.0826191455f, 0.132914886f, -0.20122543f,
                                   0.0f,          -1.38417017f,   1.29238081f,  -1.88489008f};
static const float torch_sw_dg[] = {-0.0384747311f, -0.0f,        0.0206310861f, -0.0794200674f,
                                    0.0f,           0.707928896f, 0.0f,          -0.352570653f};
static const float torch_sw_du[] = {0.0534799546f, -0.0f,         -0.177219853f, 0.0670751482f,
                                    0.116258197f,  -0.922780156f, 0.0f,          2.51318693f};

static double *dbl_of(const float *v, int64_t n) {
    double *d = DBL(n);
    for (int64_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

/* t[i] = ((mul * i) % mod - sub) / div, the inputs of the PyTorch script. */
static void fill_pattern(mt_tensor *t, int mul, int mod, int sub, double div) {
    for (int64_t i = 0; i < N(t); i++) F(t)[i] = (float)((double)((mul * i) % mod - sub) / div);
}

static void test_llama_torch(void) {
    /* RMSNorm */
    io f = {.nin = 2, .nout = 2, .in = {HT(MT_F32, 2, 6), HT(MT_F32, 6)}};
    f.out[0] = HT(MT_F32, 2, 6);
    f.out[1] = HT(MT_F32, 2);
    fill_pattern(&f.in[0], 7, 11, 5, 4);
    for (int j = 0; j < 6; j++) F(&f.in[1])[j] = 0.5f + j / 8.0f;
    rms_p rp = {1e-6f, false, true};
    mt_tensor fr[MAX_IO];
    run_case("rmsnorm_fwd", "LlamaRMSNorm's values", call_rms_fwd, &rp, &f,
             (expect[]){{dbl_of(torch_rms_y, 12), NULL, F32_TOL, 1e-6}, {NULL}}, fr);
    io b = {.nin = 4, .nout = 2, .in = {f.in[0], f.in[1], fr[1], HT(MT_F32, 2, 6)}};
    fill_pattern(&b.in[3], 5, 9, 4, 8);
    b.out[0] = HT(MT_F32, 2, 6);
    b.out[1] = HT(MT_F32, 6);
    memset(b.out[1].data, 0, mt_tensor_bytes(&b.out[1]));
    run_case("rmsnorm_bwd", "LlamaRMSNorm's gradients", call_rms_bwd, &rp, &b,
             (expect[]){{dbl_of(torch_rms_dx, 12), NULL, F32_TOL * 3, 1e-6},
                        {dbl_of(torch_rms_dw, 6), NULL, F32_TOL, 1e-6}},
             NULL);
    /* RoPE */
    io r = {.nin = 3, .nout = 1, .in = {HT(MT_F32, 1, 3, 2, 8)}, .out = {HT(MT_F32, 1, 3, 2, 8)}};
    fill_pattern(&r.in[0], 3, 13, 6, 5);
    rope_tables(3, 8, 2, 10000.0, &r.in[1], &r.in[2]);
    run_case("rope", "apply_rotary_pos_emb's values", call_rope, &(rope_p){false, false}, &r,
             (expect[]){{dbl_of(torch_rope_y, 48), NULL, F32_TOL, 1e-3}}, NULL);
    /* attention: GQA 2, causal with T < S */
    io a = {.nin = 3,
            .nout = 2,
            .in = {HT(MT_F32, 1, 2, 2, 4), HT(MT_F32, 1, 3, 1, 4), HT(MT_F32, 1, 3, 1, 4)},
            .out = {HT(MT_F32, 1, 2, 2, 4), HT(MT_F32, 1, 2, 2)}};
    fill_pattern(&a.in[0], 5, 11, 5, 4);
    fill_pattern(&a.in[1], 3, 7, 3, 3);
    fill_pattern(&a.in[2], 7, 9, 4, 2);
    att_p ap = {0.5f, true, true};
    run_case("attention_fwd", "scaled_dot_product_attention's values", call_att_fwd, &ap, &a,
             (expect[]){{dbl_of(torch_att_out, 16), NULL, F32_TOL, 1e-3},
                        {dbl_of(torch_att_lse, 4), NULL, F32_TOL, 1e-3}},
             NULL);
    io ab = {.nin = 6,
             .nout = 3,
             .in = {a.in[0], a.in[1], a.in[2], HT(MT_F32, 1, 2, 2, 4), HT(MT_F32, 1, 2, 2)}};
    for (int i = 0; i < 16; i++) F(&ab.in[3])[i] = torch_att_out[i];
    for (int i = 0; i < 4; i++) F(&ab.in[4])[i] = torch_att_lse[i];
    ab.in[5] = HT(MT_F32, 1, 2, 2, 4);
    fill_pattern(&ab.in[5], 2, 5, 2, 2);
    ab.out[0] = HT(MT_F32, 1, 2, 2, 4);
    ab.out[1] = HT(MT_F32, 1, 3, 1, 4);
    ab.out[2] = HT(MT_F32, 1, 3, 1, 4);
    /* dq and dk are differences of nearby values: absolute tolerance at the scale of dv */
    run_case("attention_bwd", "scaled_dot_product_attention's gradients", call_att_bwd, &ap, &ab,
             (expect[]){{dbl_of(torch_att_dq, 16), NULL, F32_TOL, 0.1},
                        {dbl_of(torch_att_dk, 12), NULL, F32_TOL, 0.1},
                        {dbl_of(torch_att_dv, 12), NULL, F32_TOL, 0.1}},
             NULL);
    /* SwiGLU */
    io s = {.nin = 2, .nout = 1, .in = {HT(MT_F32, 8), HT(MT_F32, 8)}, .out = {HT(MT_F32, 8)}};
    for (int i = 0; i < 8; i++) F(&s.in[0])[i] = (float)((i - 3.5) * 1.1);
    fill_pattern(&s.in[1], 3, 5, 2, 2);
    run_case("swiglu_fwd", "silu(g) * u's values", call_swiglu_fwd, &(swiglu_p){0}, &s,
             (expect[]){{dbl_of(torch_sw_y, 8), NULL, F32_TOL, 1e-6}}, NULL);
    io sb = {.nin = 3, .nout = 2, .in = {s.in[0], s.in[1], HT(MT_F32, 8)}};
    fill_pattern(&sb.in[2], 7, 5, 2, 3);
    sb.out[0] = HT(MT_F32, 8);
    sb.out[1] = HT(MT_F32, 8);
    run_case("swiglu_bwd", "silu(g) * u's gradients", call_swiglu_bwd, &(swiglu_p){0}, &sb,
             (expect[]){{dbl_of(torch_sw_dg, 8), NULL, F32_TOL, 1e-6},
                        {dbl_of(torch_sw_du, 8), NULL, F32_TOL, 1e-6}},
             NULL);
}

/* ==== bad arguments =========================================================================== */

static void test_bad_args(void) {
    mt_ctx *ctx = &g_ctx[MT_CPU];
    float buf[4096];
    for (int i = 0; i < 4096; i++) buf[i] = 0.5f;
    int32_t ids[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    mt_tensor a34 = mt_tensor_2d(buf, MT_F32, MT_CPU, 3, 4),
              b56 = mt_tensor_2d(buf + 64, MT_F32, MT_CPU, 5, 6);
    mt_tensor b45 = mt_tensor_2d(buf + 128, MT_F32, MT_CPU, 4, 5),
              c35 = mt_tensor_2d(buf + 256, MT_F32, MT_CPU, 3, 5);
    mt_tensor c36 = mt_tensor_2d(buf + 256, MT_F32, MT_CPU, 3, 6);
    mt_tensor a34_bf16 = a34, a34_cuda = a34, v4 = mt_tensor_1d(buf, MT_F32, MT_CPU, 4);
    a34_bf16.dtype = MT_BF16;
    a34_cuda.device = MT_CUDA;

    /* gemm */
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a34, &b56, 0, &c36), MT_ERR_SHAPE,
                   "gemm: A [3,4] f32 cpu and B [5,6] f32 cpu: inner dims differ (4 vs 5)");
    MT_CHECK_FAILS(mt_gemm(ctx, true, false, 1, &a34, &b45, 0, &c35), MT_ERR_SHAPE, "gemm",
                   "(transposed)", "inner dims differ (3 vs 4)");
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a34, &b45, 0, &c36), MT_ERR_SHAPE,
                   "gemm: C [3,6]", "expected 3 x 5");
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a34_bf16, &b45, 0, &c35), MT_ERR_SHAPE,
                   "gemm: A [3,4] bf16 cpu", "expected dtype f32");
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a34_cuda, &b45, 0, &c35), MT_ERR_SHAPE, "gemm",
                   "is on cuda", "context runs on cpu");
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a34, NULL, 0, &c35), MT_ERR_ARG,
                   "gemm: B is NULL");
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &v4, &b45, 0, &c35), MT_ERR_SHAPE, "gemm: A [4]",
                   "expected 2 to 3 dims");
    mt_tensor a3d = mt_tensor_3d(buf, MT_F32, MT_CPU, 2, 3, 4),
              c3d = mt_tensor_3d(buf + 512, MT_F32, MT_CPU, 3, 3, 5);
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a3d, &b45, 0, &c3d), MT_ERR_SHAPE, "gemm",
                   "batch differs (2 vs 3;");
    mt_tensor c_on_a = mt_tensor_2d(buf + 4, MT_F32, MT_CPU, 3, 5);
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a34, &b45, 0, &c_on_a), MT_ERR_ARG, "gemm: C",
                   "overlaps A");
    mt_tensor nodata = b45;
    nodata.data = NULL;
    MT_CHECK_FAILS(mt_gemm(ctx, false, false, 1, &a34, &nodata, 0, &c35), MT_ERR_ARG, "gemm: B",
                   "no data");

    /* elementwise */
    MT_CHECK_FAILS(mt_axpy(ctx, 1, &a34, &b45), MT_ERR_SHAPE, "axpy: x [3,4] f32 cpu and y [4,5]",
                   "shapes differ");
    MT_CHECK_FAILS(mt_scale(ctx, 1, &a34_bf16), MT_ERR_SHAPE, "scale", "expected dtype f32");
    mt_tensor b3 = mt_tensor_1d(buf + 1024, MT_F32, MT_CPU, 3),
              out34 = mt_tensor_2d(buf + 1100, MT_F32, MT_CPU, 3, 4);
    MT_CHECK_FAILS(mt_add(ctx, &a34, &b3, &out34), MT_ERR_SHAPE, "add: a [3,4] f32 cpu and b [3]",
                   "trailing dims");
    MT_CHECK_FAILS(mt_mul(ctx, &a34, &v4, &c35), MT_ERR_SHAPE, "mul", "out [3,5]", "shapes differ");
    mt_tensor out_on_b = mt_tensor_2d(buf + 1024, MT_F32, MT_CPU, 3, 4),
              b4 = mt_tensor_1d(buf + 1024, MT_F32, MT_CPU, 4);
    MT_CHECK_FAILS(mt_add(ctx, &a34, &b4, &out_on_b), MT_ERR_ARG, "add: out", "overlaps b");

    /* reduce */
    mt_tensor r3 = mt_tensor_1d(buf + 2000, MT_F32, MT_CPU, 3),
              r4 = mt_tensor_1d(buf + 2000, MT_F32, MT_CPU, 4);
    MT_CHECK_FAILS(mt_reduce(ctx, MT_REDUCE_SUM, &a34, 2, &r3), MT_ERR_ARG, "reduce: axis 2",
                   "x [3,4] f32 cpu");
    MT_CHECK_FAILS(mt_reduce(ctx, MT_REDUCE_SUM, &a34, -3, &r3), MT_ERR_ARG, "reduce: axis -3");
    MT_CHECK_FAILS(mt_reduce(ctx, MT_REDUCE_SUM, &a34, 1, &r4), MT_ERR_SHAPE, "reduce: out [4]",
                   "expected [3]");
    MT_CHECK_FAILS(mt_reduce(ctx, (mt_reduce_kind)7, &a34, 1, &r3), MT_ERR_ARG, "reduce",
                   "unknown reduction");
    mt_tensor empty = mt_tensor_2d(buf, MT_F32, MT_CPU, 3, 0);
    MT_CHECK_FAILS(mt_reduce(ctx, MT_REDUCE_MAX, &empty, 1, &r3), MT_ERR_SHAPE, "reduce: max",
                   "empty");
    MT_CHECK_OK(mt_reduce(ctx, MT_REDUCE_SUM, &empty, 1, &r3)); /* a sum over nothing is 0 */
    MT_CHECK(buf[2000] == 0 && buf[2002] == 0);

    /* activations and softmax */
    MT_CHECK_FAILS(mt_act_fwd(ctx, (mt_act_kind)9, &a34, &out34), MT_ERR_ARG, "act_fwd",
                   "unknown activation kind 9");
    MT_CHECK_FAILS(mt_act_fwd(ctx, MT_ACT_GELU, &a34, &c35), MT_ERR_SHAPE, "act_fwd: x [3,4]",
                   "y [3,5]");
    MT_CHECK_FAILS(mt_act_bwd(ctx, MT_ACT_SILU, &a34, &b45, &out34), MT_ERR_SHAPE, "act_bwd",
                   "dy [4,5]");
    MT_CHECK_FAILS(mt_act_bwd(ctx, MT_ACT_SILU, &a34, &a34_cuda, &out34), MT_ERR_SHAPE, "act_bwd",
                   "dy [3,4] f32 cuda");
    MT_CHECK_FAILS(mt_softmax_fwd(ctx, false, &a34, &c35), MT_ERR_SHAPE, "softmax_fwd",
                   "shapes differ");
    MT_CHECK_FAILS(mt_softmax_bwd(ctx, true, &a34, &a34_bf16, &out34), MT_ERR_SHAPE, "softmax_bwd",
                   "dy [3,4] bf16 cpu");

    /* cross-entropy: shapes, dtypes, and a target out of range (outputs left untouched) */
    mt_tensor logits = mt_tensor_2d(buf, MT_F32, MT_CPU, 4, 5),
              dlog = mt_tensor_2d(buf + 3000, MT_F32, MT_CPU, 4, 5);
    mt_tensor tgt = mt_tensor_1d(ids, MT_I32, MT_CPU, 4),
              loss = mt_tensor_1d(buf + 2500, MT_F32, MT_CPU, 1);
    mt_tensor tgt_f = tgt, tgt3 = mt_tensor_1d(ids, MT_I32, MT_CPU, 3),
              loss2 = mt_tensor_1d(buf + 2500, MT_F32, MT_CPU, 2);
    tgt_f.dtype = MT_F32;
    MT_CHECK_OK(mt_cross_entropy_fwd(ctx, &logits, &tgt, -100, &loss));
    MT_CHECK_FAILS(mt_cross_entropy_fwd(ctx, &logits, &tgt_f, -100, &loss), MT_ERR_SHAPE,
                   "cross_entropy_fwd: targets [4] f32 cpu", "expected dtype i32");
    MT_CHECK_FAILS(mt_cross_entropy_fwd(ctx, &logits, &tgt3, -100, &loss), MT_ERR_SHAPE,
                   "cross_entropy_fwd: logits [4,5] f32 cpu and targets [3]", "one target per row");
    MT_CHECK_FAILS(mt_cross_entropy_fwd(ctx, &logits, &tgt, -100, &loss2), MT_ERR_SHAPE,
                   "cross_entropy_fwd: loss [2]", "one element");
    MT_CHECK_FAILS(mt_cross_entropy_bwd(ctx, &logits, &tgt, -100, 1, &c35), MT_ERR_SHAPE,
                   "cross_entropy_bwd: logits [4,5] f32 cpu and dlogits [3,5]");
    ids[2] = 7;
    buf[2500] = 42;
    buf[3000] = 42;
    MT_CHECK_FAILS(mt_cross_entropy_fwd(ctx, &logits, &tgt, -100, &loss), MT_ERR_ARG,
                   "cross_entropy_fwd: row 2: target 7 is outside [0,5)", "ignore_index (-100)");
    MT_CHECK_FAILS(mt_cross_entropy_bwd(ctx, &logits, &tgt, -100, 1, &dlog), MT_ERR_ARG,
                   "cross_entropy_bwd: row 2: target 7");
    MT_CHECK(buf[2500] == 42 && buf[3000] == 42, "(outputs were written before the target check)");
    ids[2] = -1;
    MT_CHECK_FAILS(mt_cross_entropy_fwd(ctx, &logits, &tgt, -100, &loss), MT_ERR_ARG, "row 2",
                   "target -1");
    MT_CHECK_OK(mt_cross_entropy_fwd(ctx, &logits, &tgt, -1, &loss)); /* now ignored */
    ids[2] = 2;

    /* BCE */
    mt_tensor t45 = mt_tensor_2d(buf + 500, MT_F32, MT_CPU, 4, 5),
              pw4 = mt_tensor_1d(buf + 600, MT_F32, MT_CPU, 4);
    mt_tensor pw5 = mt_tensor_1d(buf + 600, MT_F32, MT_CPU, 5);
    MT_CHECK_OK(mt_bce_logits_fwd(ctx, &logits, &t45, &pw5, &loss));
    MT_CHECK_FAILS(mt_bce_logits_fwd(ctx, &logits, &a34, NULL, &loss), MT_ERR_SHAPE,
                   "bce_logits_fwd: logits [4,5] f32 cpu and targets [3,4]", "shapes differ");
    MT_CHECK_FAILS(mt_bce_logits_fwd(ctx, &logits, &t45, &pw4, &loss), MT_ERR_SHAPE,
                   "bce_logits_fwd: pos_weight [4]", "one weight per label (5)");
    MT_CHECK_FAILS(mt_bce_logits_bwd(ctx, &logits, &t45, NULL, 1, &loss), MT_ERR_SHAPE,
                   "bce_logits_bwd", "dlogits [1]");
    MT_CHECK_FAILS(mt_bce_logits_fwd(ctx, &logits, &t45, NULL, &loss2), MT_ERR_SHAPE,
                   "bce_logits_fwd: loss [2]");

    /* embedding */
    mt_tensor table = mt_tensor_2d(buf, MT_F32, MT_CPU, 6, 4),
              eids = mt_tensor_1d(ids, MT_I32, MT_CPU, 8);
    mt_tensor eout = mt_tensor_2d(buf + 1000, MT_F32, MT_CPU, 8, 4),
              eout3 = mt_tensor_2d(buf + 1000, MT_F32, MT_CPU, 8, 3);
    mt_tensor dtab = mt_tensor_2d(buf + 2000, MT_F32, MT_CPU, 6, 4);
    buf[2000] = 42;
    MT_CHECK_FAILS(mt_embedding_fwd(ctx, &table, &eids, &eout), MT_ERR_ARG,
                   "embedding_fwd: ids[6] = 6 is outside", "[0,6)");
    MT_CHECK_FAILS(mt_embedding_bwd(ctx, &eids, &eout, &dtab), MT_ERR_ARG,
                   "embedding_bwd: ids[6] = 6");
    MT_CHECK(buf[2000] == 42, "(dtable was written before the id check)");
    ids[6] = -3;
    ids[7] = 1;
    MT_CHECK_FAILS(mt_embedding_fwd(ctx, &table, &eids, &eout), MT_ERR_ARG, "ids[6] = -3");
    ids[6] = 0;
    MT_CHECK_OK(mt_embedding_fwd(ctx, &table, &eids, &eout));
    MT_CHECK_FAILS(mt_embedding_fwd(ctx, &table, &eids, &eout3), MT_ERR_SHAPE,
                   "embedding_fwd: ids [8] i32 cpu and out [8,3]", "one row of 4 per id");
    MT_CHECK_FAILS(mt_embedding_fwd(ctx, &table, &tgt_f, &eout), MT_ERR_SHAPE, "embedding_fwd: ids",
                   "expected dtype i32");
    MT_CHECK_FAILS(mt_embedding_fwd(ctx, &table, &eids, &table), MT_ERR_SHAPE, "embedding_fwd");

    /* cast */
    mt_tensor h34 = a34_bf16, f16_34 = a34;
    h34.data = buf + 3500;
    f16_34.dtype = MT_F16;
    MT_CHECK_FAILS(mt_cast(ctx, &h34, &f16_34), MT_ERR_UNSUPPORTED, "cast",
                   "bf16 -> f16 is not supported");
    MT_CHECK_FAILS(mt_cast(ctx, &a34, &b45), MT_ERR_SHAPE, "cast: src [3,4] f32 cpu and dst [4,5]",
                   "element counts differ");

    /* a context that was never initialised */
    mt_ctx none = {0};
    MT_CHECK_FAILS(mt_scale(&none, 1, &a34), MT_ERR_ARG, "scale", "not initialised");
    MT_CHECK_FAILS(mt_gemm(NULL, false, false, 1, &a34, &b45, 0, &c35), MT_ERR_ARG, "gemm",
                   "not initialised");
}

/* Bad arguments of the layer and optimizer ops: each check fails with a message that names the op
 * and shows the tensors. */
static void test_bad_args_layers(void) {
    mt_ctx *ctx = &g_ctx[MT_CPU];
    static float buf[8192];
    static int32_t ibuf[512];
    static uint8_t mbuf[512];
    for (int i = 0; i < 8192; i++) buf[i] = 0.25f;
#define T4(off, a, b, c, d) mt_tensor_4d(buf + (off), MT_F32, MT_CPU, a, b, c, d)
#define T1(off, a)          mt_tensor_1d(buf + (off), MT_F32, MT_CPU, a)
#define REF(t)              ((mt_tensor[]){t}) /* a pointer to a temporary tensor */
    /* conv: x (2,6,6,4), w (8,3,3,4), y (2,6,6,8) with stride 1, pad 1 */
    mt_conv2d_params cp = CONV(1, 1, 1, 1, 1, 1, 1);
    mt_tensor x = T4(0, 2, 6, 6, 4), w = T4(400, 8, 3, 3, 4), y = T4(800, 2, 6, 6, 8);
    mt_tensor b8 = T1(1400, 8), b7 = T1(1400, 7), wg = T4(400, 8, 3, 3, 2);
    MT_CHECK_OK(mt_conv2d_fwd(ctx, &cp, &x, &w, &b8, &y));
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, NULL, &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv2d_fwd: params is NULL");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(0, 1, 1, 1, 1, 1, 1), &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv2d_fwd: stride 0x1");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(1, 1, 1, 1, 0, 1, 1), &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv2d_fwd: dilation 0x1");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(1, 1, -1, 1, 1, 1, 1), &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv2d_fwd: padding -1x1");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(1, 1, 1, 1, 1, 1, 0), &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv2d_fwd: groups 0");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(1, 1, 1, 1, 1, 1, 3), &x, &wg, NULL, &y), MT_ERR_SHAPE,
                   "conv2d_fwd: x [2,6,6,4] f32 cpu: groups 3 does not divide its 4 channels");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(1, 1, 1, 1, 1, 1, 2), &x, REF(T4(400, 7, 3, 3, 2)),
                                 NULL, REF(T4(800, 2, 6, 6, 7))),
                   MT_ERR_SHAPE, "conv2d_fwd: w [7,3,3,2] f32 cpu: groups 2 does not divide",
                   "7 filters");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(1, 1, 1, 1, 1, 1, 2), &x, &w, NULL, &y), MT_ERR_SHAPE,
                   "conv2d_fwd: x [2,6,6,4] f32 cpu and w [8,3,3,4] f32 cpu",
                   "expected 2 channels per filter (C/groups = 4/2)");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(1, 1, 0, 0, 4, 4, 1), &x, &w, NULL, &y), MT_ERR_SHAPE,
                   "conv2d_fwd", "dilation 4x4", "kernel is larger than the padded input");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &CONV(2, 2, 1, 1, 1, 1, 1), &x, &w, NULL, &y), MT_ERR_SHAPE,
                   "conv2d_fwd: y [2,6,6,8] f32 cpu: expected [2,3,3,8] f32 cpu", "stride 2x2");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &cp, &x, &w, &b7, &y), MT_ERR_SHAPE,
                   "conv2d_fwd: bias [7] f32 cpu: expected [8]", "one per filter");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &cp, REF(T1(0, 144)), &w, NULL, &y), MT_ERR_SHAPE,
                   "conv2d_fwd: x [144] f32 cpu: expected 4 dims");
    mt_tensor xh = x;
    xh.dtype = MT_BF16;
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &cp, &xh, &w, NULL, &y), MT_ERR_SHAPE,
                   "conv2d_fwd: x [2,6,6,4] bf16 cpu: expected dtype f32");
    MT_CHECK_FAILS(mt_conv2d_fwd(ctx, &cp, &x, &w, NULL, REF(T4(100, 2, 6, 6, 8))), MT_ERR_ARG,
                   "conv2d_fwd: y", "overlaps x");
    MT_CHECK_FAILS(mt_conv2d_bwd_data(ctx, &cp, &x, &w, &y), MT_ERR_SHAPE,
                   "conv2d_bwd_data: dx [2,6,6,8] f32 cpu and w [8,3,3,4]",
                   "expected 8 channels per filter");
    MT_CHECK_FAILS(mt_conv2d_bwd_data(ctx, &cp, REF(T4(800, 2, 5, 6, 8)), &w, &x), MT_ERR_SHAPE,
                   "conv2d_bwd_data: dy [2,5,6,8] f32 cpu: expected [2,6,6,8]");
    MT_CHECK_FAILS(mt_conv2d_bwd_filter(ctx, &cp, &x, &y, &wg, NULL), MT_ERR_SHAPE,
                   "conv2d_bwd_filter: x [2,6,6,4] f32 cpu and dw [8,3,3,2]");
    MT_CHECK_FAILS(mt_conv2d_bwd_filter(ctx, &cp, &x, &y, &w, &b7), MT_ERR_SHAPE,
                   "conv2d_bwd_filter: dbias [7]");
    MT_CHECK_FAILS(mt_conv2d_bwd_filter(ctx, &cp, &x, &y, &w, REF(T1(420, 8))), MT_ERR_ARG,
                   "conv2d_bwd_filter: dbias", "overlaps dw");

    /* batch norm: x (6, 4) */
    mt_tensor bx = mt_tensor_2d(buf, MT_F32, MT_CPU, 6, 4),
              by = mt_tensor_2d(buf + 100, MT_F32, MT_CPU, 6, 4);
    mt_tensor m4 = T1(200, 4), v4 = T1(210, 4), g4 = T1(220, 4), be4 = T1(230, 4), v3 = T1(210, 3);
    mt_tensor s1 = T1(240, 4), s2 = T1(250, 4);
    MT_CHECK_OK(mt_bn_fwd(ctx, &bx, &m4, &v4, 1e-5f, NULL, NULL, &by));
    MT_CHECK_FAILS(mt_bn_stats(ctx, &bx, &m4, &v3), MT_ERR_SHAPE,
                   "bn_stats: var [3] f32 cpu: expected [4]", "one per channel");
    MT_CHECK_FAILS(mt_bn_stats(ctx, REF(mt_tensor_2d(buf, MT_F32, MT_CPU, 0, 4)), &m4, &v4),
                   MT_ERR_SHAPE, "bn_stats: x [0,4] f32 cpu has no rows");
    MT_CHECK_FAILS(mt_bn_stats(ctx, REF(mt_tensor_2d(buf, MT_F32, MT_CPU, 3, 0)), &m4, &v4),
                   MT_ERR_SHAPE, "bn_stats: x [3,0] f32 cpu: no channels");
    MT_CHECK_FAILS(mt_bn_fwd(ctx, &bx, &m4, &v4, -1.0f, &g4, &be4, &by), MT_ERR_ARG,
                   "bn_fwd: eps -1");
    MT_CHECK_FAILS(mt_bn_fwd(ctx, &bx, &m4, &v4, 1e-5f, &v3, &be4, &by), MT_ERR_SHAPE,
                   "bn_fwd: gamma [3]");
    MT_CHECK_FAILS(mt_bn_fwd(ctx, &bx, &m4, &v4, 1e-5f, &g4, &be4, REF(T4(100, 1, 2, 3, 4))),
                   MT_ERR_SHAPE, "bn_fwd: x [6,4] f32 cpu and y [1,2,3,4]", "shapes differ");
    MT_CHECK_FAILS(mt_bn_fwd(ctx, &bx, &m4, &v4, 1e-5f, &g4, &be4,
                             REF(mt_tensor_2d(buf + 2, MT_F32, MT_CPU, 6, 4))),
                   MT_ERR_ARG, "bn_fwd: y", "overlaps x", "without being the same tensor");
    MT_CHECK_FAILS(mt_bn_bwd_reduce(ctx, &bx, REF(mt_tensor_2d(buf + 100, MT_F32, MT_CPU, 4, 6)),
                                    &m4, &v4, 1e-5f, &s1, &s2),
                   MT_ERR_SHAPE, "bn_bwd_reduce: x [6,4] f32 cpu and dy [4,6]");
    MT_CHECK_FAILS(mt_bn_bwd_reduce(ctx, &bx, &by, &m4, &v4, 1e-5f, &s1, REF(T1(241, 4))),
                   MT_ERR_ARG, "bn_bwd_reduce: sum_dy_xhat", "overlaps sum_dy");
    MT_CHECK_FAILS(mt_bn_bwd(ctx, &bx, &by, &m4, &v4, 1e-5f, &g4, &s1, &s2, 0, true, &by),
                   MT_ERR_ARG, "bn_bwd: count 0");
    MT_CHECK_FAILS(mt_bn_bwd(ctx, &bx, &by, &m4, &v4, 1e-5f, &g4, NULL, &s2, 6, true, &by),
                   MT_ERR_ARG, "bn_bwd: sum_dy is NULL");
    MT_CHECK_OK(mt_bn_bwd(ctx, &bx, &by, &m4, &v4, 1e-5f, &g4, NULL, NULL, 0, false, &by));
    MT_CHECK_FAILS(mt_bn_bwd(ctx, &bx, &by, &m4, &v4, 1e-5f, &g4, &s1, &s2, 6, true, &bx),
                   MT_ERR_ARG, "bn_bwd: dx", "overlaps x");

    /* pooling: x (2,6,6,3) */
    mt_pool2d_params pp = POOL(3, 3, 2, 2, 1, 1, false, true);
    mt_tensor px = T4(0, 2, 6, 6, 3), py = T4(300, 2, 3, 3, 3), pb = T4(300, 2, 4, 4, 3);
    mt_tensor am = mt_tensor_4d(ibuf, MT_I32, MT_CPU, 2, 3, 3, 3);
    MT_CHECK_OK(mt_maxpool2d_fwd(ctx, &pp, &px, &py, &am));
    MT_CHECK_FAILS(mt_maxpool2d_fwd(ctx, &POOL(0, 3, 2, 2, 0, 0, false, true), &px, &py, &am),
                   MT_ERR_ARG, "maxpool2d_fwd: kernel 0x3");
    MT_CHECK_FAILS(mt_maxpool2d_fwd(ctx, &POOL(3, 3, 0, 2, 0, 0, false, true), &px, &py, &am),
                   MT_ERR_ARG, "maxpool2d_fwd: stride 0x2");
    MT_CHECK_FAILS(mt_maxpool2d_fwd(ctx, &POOL(3, 3, 2, 2, 2, 1, false, true), &px, &py, &am),
                   MT_ERR_ARG, "maxpool2d_fwd: padding 2x1 with kernel 3x3", "half the kernel");
    MT_CHECK_FAILS(mt_avgpool2d_fwd(ctx, &POOL(7, 7, 1, 1, 0, 0, false, true), &px, &py),
                   MT_ERR_SHAPE, "avgpool2d_fwd: x [2,6,6,3] f32 cpu with kernel 7x7", "no output");
    MT_CHECK_FAILS(mt_maxpool2d_fwd(ctx, &pp, &px, &pb, &am), MT_ERR_SHAPE,
                   "maxpool2d_fwd: y [2,4,4,3] f32 cpu: expected [2,3,3,3]");
    MT_CHECK_FAILS(mt_maxpool2d_fwd(ctx, &pp, &px, &py, &py), MT_ERR_SHAPE,
                   "maxpool2d_fwd: argmax [2,3,3,3] f32 cpu: expected dtype i32");
    MT_CHECK_OK(mt_avgpool2d_fwd(ctx, &POOL(3, 3, 2, 2, 1, 1, true, true), &px, &pb));
    MT_CHECK_FAILS(mt_avgpool2d_bwd(ctx, &pp, &pb, &px), MT_ERR_SHAPE,
                   "avgpool2d_bwd: dy [2,4,4,3] f32 cpu: expected [2,3,3,3]");
    ibuf[5] = 36; /* outside the 6x6 map */
    float before = buf[1000];
    MT_CHECK_FAILS(mt_maxpool2d_bwd(ctx, &pp, &am, &py, REF(T4(1000, 2, 6, 6, 3))), MT_ERR_ARG,
                   "maxpool2d_bwd: argmax[5] = 36 is outside the 6x6 map");
    MT_CHECK(buf[1000] == before, "(dx was written before the argmax check)");

    /* dropout */
    mt_tensor dx12 = T1(0, 12), dy12 = T1(100, 12), mk = mt_tensor_1d(mbuf, MT_U8, MT_CPU, 12);
    MT_CHECK_FAILS(mt_dropout_fwd(ctx, 1.5f, 1, 2, 0, &dx12, &dy12, &mk), MT_ERR_ARG,
                   "dropout_fwd: p 1.5", "[0, 1]");
    MT_CHECK_FAILS(mt_dropout_fwd(ctx, NAN, 1, 2, 0, &dx12, &dy12, &mk), MT_ERR_ARG,
                   "dropout_fwd: p nan");
    MT_CHECK_FAILS(mt_dropout_fwd(ctx, 0.5f, 1, 2, 0, &dx12, &dy12, &dy12), MT_ERR_SHAPE,
                   "dropout_fwd: mask [12] f32 cpu: expected dtype u8");
    MT_CHECK_FAILS(
        mt_dropout_bwd(ctx, 0.5f, REF(mt_tensor_1d(mbuf, MT_U8, MT_CPU, 11)), &dy12, &dx12),
        MT_ERR_SHAPE, "dropout_bwd: dy [12] f32 cpu and mask [11] u8 cpu");

    /* channels */
    mt_tensor src = mt_tensor_2d(buf, MT_F32, MT_CPU, 4, 3),
              dst = mt_tensor_2d(buf + 100, MT_F32, MT_CPU, 4, 8);
    MT_CHECK_OK(mt_channels_put(ctx, &src, 5, &dst));
    MT_CHECK_FAILS(mt_channels_put(ctx, &src, 6, &dst), MT_ERR_SHAPE,
                   "channels_put: src [4,3] f32 cpu at channel offset 6 does not fit in dst [4,8]",
                   "(8 channels)");
    MT_CHECK_FAILS(mt_channels_put(ctx, &src, -1, &dst), MT_ERR_SHAPE, "channels_put", "offset -1");
    MT_CHECK_FAILS(mt_channels_get(ctx, &dst, 0, 1, REF(mt_tensor_2d(buf, MT_F32, MT_CPU, 5, 3))),
                   MT_ERR_SHAPE, "channels_get: out [5,3] f32 cpu and src [4,8]",
                   "leading dims differ");
    MT_CHECK_FAILS(
        mt_channels_get(ctx, &dst, 0, 1, REF(mt_tensor_2d(buf + 104, MT_F32, MT_CPU, 4, 3))),
        MT_ERR_ARG, "channels_get: out", "overlaps src");

    /* optimizer steps */
    mt_tensor prm = T1(0, 10), grd = T1(20, 10), mom = T1(40, 10), v2 = T1(60, 10), g9 = T1(20, 9);
    MT_CHECK_OK(mt_sgd_step(ctx, &prm, &grd, NULL, 0.1f, 0, 0, 0, false, true));
    MT_CHECK_FAILS(mt_sgd_step(ctx, &prm, &grd, NULL, 0.1f, 0.9f, 0, 0, false, true), MT_ERR_ARG,
                   "sgd_step: momentum 0.9 needs momentum_buf");
    MT_CHECK_FAILS(mt_sgd_step(ctx, &prm, &grd, &mom, -0.1f, 0.9f, 0, 0, false, true), MT_ERR_ARG,
                   "sgd_step: lr -0.1");
    MT_CHECK_FAILS(mt_sgd_step(ctx, &prm, &grd, &mom, 0.1f, 0.9f, 0.1f, 0, true, true), MT_ERR_ARG,
                   "sgd_step: nesterov needs momentum > 0 and dampening 0");
    MT_CHECK_FAILS(mt_sgd_step(ctx, &prm, &g9, &mom, 0.1f, 0.9f, 0, 0, false, true), MT_ERR_SHAPE,
                   "sgd_step: param [10] f32 cpu and grad [9]", "shapes differ");
    MT_CHECK_FAILS(mt_sgd_step(ctx, &prm, &grd, REF(T1(5, 10)), 0.1f, 0.9f, 0, 0, false, true),
                   MT_ERR_ARG, "sgd_step: momentum_buf", "overlaps param");
    MT_CHECK_FAILS(mt_adamw_step(ctx, &prm, &grd, &mom, &v2, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0),
                   MT_ERR_ARG, "adamw_step: step t = 0");
    MT_CHECK_FAILS(mt_adamw_step(ctx, &prm, &grd, &mom, &v2, 1e-3f, 1.0f, 0.999f, 1e-8f, 0, 1),
                   MT_ERR_ARG, "adamw_step: betas (1, 0.999)");
    MT_CHECK_FAILS(mt_adamw_step(ctx, &prm, &grd, &mom, &mom, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1),
                   MT_ERR_ARG, "adamw_step: v", "overlaps m");
    MT_CHECK_FAILS(mt_adamw_step(ctx, &prm, &grd, &mom, &v2, 1e-3f, 0.9f, 0.999f, -1, 0, 1),
                   MT_ERR_ARG, "adamw_step: eps -1");
    MT_CHECK_FAILS(mt_sumsq(ctx, &prm, REF(T1(20, 2))), MT_ERR_SHAPE, "sumsq: out [2]",
                   "one element");
    MT_CHECK_FAILS(mt_sumsq(ctx, &prm, REF(T1(3, 1))), MT_ERR_ARG, "sumsq: out", "overlaps x");
#undef T4
#undef T1
#undef REF
}

/* Bad arguments of the decoder and segmentation ops: transposed convolution, bias, upsampling and
 * the Dice pieces. */
static void test_bad_args_decoder(void) {
    mt_ctx *ctx = &g_ctx[MT_CPU];
    static float buf[8192];
    for (int i = 0; i < 8192; i++) buf[i] = 0.25f;
#define T4(off, a, b, c, d) mt_tensor_4d(buf + (off), MT_F32, MT_CPU, a, b, c, d)
#define T3(off, a, b, c)    mt_tensor_3d(buf + (off), MT_F32, MT_CPU, a, b, c)
#define T1(off, a)          mt_tensor_1d(buf + (off), MT_F32, MT_CPU, a)
#define REF(t)              ((mt_tensor[]){t})
    /* transposed conv: x (2,4,4,6), w (6,3,3,4), stride 2, pad 1, out_pad 1: y (2,8,8,4) */
    mt_conv2d_params cp = CONV(2, 2, 1, 1, 1, 1, 1);
    mt_tensor x = T4(0, 2, 4, 4, 6), w = T4(200, 6, 3, 3, 4), y = T4(500, 2, 8, 8, 4);
    mt_tensor b4 = T1(1100, 4), b3 = T1(1100, 3);
    MT_CHECK_OK(mt_conv_transpose2d_fwd(ctx, &cp, 1, 1, &x, &w, &b4, &y));
    MT_CHECK_OK(mt_conv_transpose2d_bwd_data(ctx, &cp, 1, 1, &y, &w, &x));
    MT_CHECK_OK(mt_conv_transpose2d_bwd_filter(ctx, &cp, 1, 1, &x, &y, &w, &b4));
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 2, 1, &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv_transpose2d_fwd: output padding 2x1 with stride 2x2",
                   "less than the stride");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, -1, 0, &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv_transpose2d_fwd: output padding -1x0");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, NULL, 0, 0, &x, &w, NULL, &y), MT_ERR_ARG,
                   "conv_transpose2d_fwd: params is NULL");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &CONV(2, 0, 1, 1, 1, 1, 1), 0, 0, &x, &w, NULL, &y),
                   MT_ERR_ARG, "conv_transpose2d_fwd: stride 2x0");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 1, 1, &x, REF(T4(200, 5, 3, 3, 4)), NULL, &y),
                   MT_ERR_SHAPE,
                   "conv_transpose2d_fwd: x [2,4,4,6] f32 cpu and w [5,3,3,4] f32 cpu: expected 6 "
                   "filters, one per input channel");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &CONV(2, 2, 1, 1, 1, 1, 4), 1, 1, &x, &w, NULL, &y),
                   MT_ERR_SHAPE,
                   "conv_transpose2d_fwd: x [2,4,4,6] f32 cpu: groups 4 does not divide its 6");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 0, 0, &x, &w, NULL, &y), MT_ERR_SHAPE,
                   "conv_transpose2d_fwd: y [2,8,8,4] f32 cpu: expected [2,7,7,4] f32 cpu",
                   "output padding 0x0");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &CONV(2, 2, 1, 1, 1, 1, 2), 1, 1, &x, &w, NULL, &y),
                   MT_ERR_SHAPE, "conv_transpose2d_fwd: y [2,8,8,4] f32 cpu: expected [2,8,8,8]");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 1, 1, &x, &w, &b3, &y), MT_ERR_SHAPE,
                   "conv_transpose2d_fwd: bias [3] f32 cpu: expected [4]",
                   "one per output channel");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &CONV(1, 1, 1, 1, 1, 1, 1), 0, 0,
                                           REF(T4(0, 2, 1, 1, 6)), REF(T4(200, 6, 1, 1, 4)), NULL,
                                           &y),
                   MT_ERR_SHAPE, "conv_transpose2d_fwd: x [2,1,1,6] f32 cpu and w [6,1,1,4]",
                   "the padding removes the whole output");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 1, 1, REF(T4(0, 2, 0, 4, 6)), &w, NULL, &y),
                   MT_ERR_SHAPE, "conv_transpose2d_fwd: x [2,0,4,6] f32 cpu: empty map");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 1, 1, &x, REF(T4(200, 6, 3, 3, 0)), NULL, &y),
                   MT_ERR_SHAPE, "conv_transpose2d_fwd: w [6,3,3,0] f32 cpu: no output channels");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 1, 1, &x, &w, NULL, REF(T4(100, 2, 8, 8, 4))),
                   MT_ERR_ARG, "conv_transpose2d_fwd: y", "overlaps x");
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(ctx, &cp, 1, 1, &x, REF(T3(200, 6, 3, 12)), NULL, &y),
                   MT_ERR_SHAPE, "conv_transpose2d_fwd: w [6,3,12] f32 cpu: expected 4 dims");
    MT_CHECK_FAILS(mt_conv_transpose2d_bwd_data(ctx, &cp, 1, 1, REF(T4(500, 2, 8, 8, 3)), &w, &x),
                   MT_ERR_SHAPE,
                   "conv_transpose2d_bwd_data: dy [2,8,8,3] f32 cpu: expected [2,8,8,4]");
    MT_CHECK_FAILS(mt_conv_transpose2d_bwd_data(ctx, &cp, 1, 1, &y, &w, REF(T4(0, 2, 4, 4, 5))),
                   MT_ERR_SHAPE, "conv_transpose2d_bwd_data: dx [2,4,4,5] f32 cpu and w [6,3,3,4]",
                   "expected 5 filters");
    MT_CHECK_FAILS(mt_conv_transpose2d_bwd_data(ctx, &cp, 1, 1, &y, &w, REF(T4(300, 2, 4, 4, 6))),
                   MT_ERR_ARG, "conv_transpose2d_bwd_data: dx", "overlaps w");
    MT_CHECK_FAILS(mt_conv_transpose2d_bwd_filter(ctx, &cp, 1, 1, &x, &y, &w, &b3), MT_ERR_SHAPE,
                   "conv_transpose2d_bwd_filter: dbias [3] f32 cpu: expected [4]");
    MT_CHECK_FAILS(mt_conv_transpose2d_bwd_filter(ctx, &cp, 1, 1, &x, &y, &w, REF(T1(210, 4))),
                   MT_ERR_ARG, "conv_transpose2d_bwd_filter: dbias", "overlaps dw");
    MT_CHECK_FAILS(
        mt_conv_transpose2d_bwd_filter(ctx, &cp, 1, 1, &x, &y, REF(T4(200, 6, 3, 3, 2)), NULL),
        MT_ERR_SHAPE,
        "conv_transpose2d_bwd_filter: dy [2,8,8,4] f32 cpu: expected "
        "[2,8,8,2]");

    /* bias */
    mt_tensor m34 = mt_tensor_2d(buf, MT_F32, MT_CPU, 3, 4), v4 = T1(100, 4), v5 = T1(100, 5);
    mt_tensor m34h = m34;
    m34h.dtype = MT_BF16;
    MT_CHECK_OK(mt_bias_add(ctx, &v4, &m34));
    MT_CHECK_OK(mt_bias_grad(ctx, &m34, &v4));
    MT_CHECK_FAILS(mt_bias_add(ctx, &v5, &m34), MT_ERR_SHAPE,
                   "bias_add: bias [5] f32 cpu and x [3,4] f32 cpu: expected one value per "
                   "channel (4)");
    MT_CHECK_FAILS(mt_bias_add(ctx, REF(mt_tensor_2d(buf + 100, MT_F32, MT_CPU, 1, 4)), &m34),
                   MT_ERR_SHAPE, "bias_add: bias [1,4] f32 cpu: expected 1 dims");
    MT_CHECK_FAILS(mt_bias_add(ctx, REF(T1(4, 4)), &m34), MT_ERR_ARG, "bias_add: x [3,4] f32 cpu",
                   "overlaps bias");
    MT_CHECK_FAILS(mt_bias_grad(ctx, &m34h, &v4), MT_ERR_SHAPE,
                   "bias_grad: dy [3,4] bf16 cpu: expected dtype f32");
    MT_CHECK_FAILS(mt_bias_grad(ctx, &m34, REF(T1(8, 4))), MT_ERR_ARG, "bias_grad: dbias [4]",
                   "overlaps dy");
    MT_CHECK_FAILS(mt_bias_grad(ctx, &m34, &v5), MT_ERR_SHAPE, "bias_grad: dbias [5] f32 cpu");

    /* upsampling: x (2,3,3,2) to y (2,6,6,2) */
    mt_tensor ux = T4(0, 2, 3, 3, 2), uy = T4(100, 2, 6, 6, 2);
    MT_CHECK_OK(mt_upsample2d_fwd(ctx, MT_UPSAMPLE_BILINEAR, true, &ux, &uy));
    MT_CHECK_OK(mt_upsample2d_bwd(ctx, MT_UPSAMPLE_NEAREST, false, &uy, &ux));
    MT_CHECK_FAILS(mt_upsample2d_fwd(ctx, (mt_upsample_mode)5, false, &ux, &uy), MT_ERR_ARG,
                   "upsample2d_fwd: unknown upsampling mode 5");
    MT_CHECK_FAILS(mt_upsample2d_fwd(ctx, MT_UPSAMPLE_NEAREST, true, &ux, &uy), MT_ERR_ARG,
                   "upsample2d_fwd: align_corners goes with bilinear upsampling, not nearest");
    MT_CHECK_FAILS(
        mt_upsample2d_fwd(ctx, MT_UPSAMPLE_BILINEAR, false, &ux, REF(T4(100, 2, 6, 6, 3))),
        MT_ERR_SHAPE,
        "upsample2d_fwd: x [2,3,3,2] f32 cpu and y [2,6,6,3] f32 cpu: images or "
        "channels differ");
    MT_CHECK_FAILS(
        mt_upsample2d_fwd(ctx, MT_UPSAMPLE_BILINEAR, false, &ux, REF(T4(100, 1, 6, 6, 2))),
        MT_ERR_SHAPE, "upsample2d_fwd", "y [1,6,6,2]", "images or channels differ");
    MT_CHECK_FAILS(
        mt_upsample2d_fwd(ctx, MT_UPSAMPLE_NEAREST, false, &ux, REF(T4(100, 2, 0, 6, 2))),
        MT_ERR_SHAPE, "upsample2d_fwd: y [2,0,6,2] f32 cpu: expected a map of at least");
    MT_CHECK_FAILS(mt_upsample2d_fwd(ctx, MT_UPSAMPLE_NEAREST, false, &ux, REF(T4(10, 2, 6, 6, 2))),
                   MT_ERR_ARG, "upsample2d_fwd: y", "overlaps x");
    MT_CHECK_FAILS(mt_upsample2d_bwd(ctx, MT_UPSAMPLE_NEAREST, false, REF(T3(100, 2, 36, 2)), &ux),
                   MT_ERR_SHAPE, "upsample2d_bwd: dy [2,36,2] f32 cpu: expected 4 dims");
    MT_CHECK_FAILS(
        mt_upsample2d_bwd(ctx, MT_UPSAMPLE_BILINEAR, false, &uy, REF(T4(110, 2, 3, 3, 2))),
        MT_ERR_ARG, "upsample2d_bwd: dx", "overlaps dy");

    /* Dice: p, g (2,5,3), sums (2,3,3), coef (2,3,2) */
    mt_tensor dp_ = T3(0, 2, 5, 3), dg = T3(100, 2, 5, 3), sums = T3(200, 2, 3, 3);
    mt_tensor coef = T3(300, 2, 3, 2), dpo = T3(400, 2, 5, 3);
    MT_CHECK_OK(mt_dice_sums(ctx, &dp_, &dg, true, &sums));
    MT_CHECK_OK(mt_dice_bwd(ctx, &dp_, &dg, &coef, false, &dpo));
    MT_CHECK_OK(mt_dice_bwd(ctx, &dp_, &dg, &coef, true, &dp_)); /* in place */
    MT_CHECK_FAILS(mt_dice_sums(ctx, &dp_, REF(T3(100, 2, 5, 4)), false, &sums), MT_ERR_SHAPE,
                   "dice_sums: p [2,5,3] f32 cpu and g [2,5,4] f32 cpu: shapes differ");
    MT_CHECK_FAILS(mt_dice_sums(ctx, &dp_, &dg, false, REF(T3(200, 2, 3, 2))), MT_ERR_SHAPE,
                   "dice_sums: sums [2,3,2] f32 cpu: expected [2,3,3] f32 cpu (images, classes, "
                   "3) for p [2,5,3]");
    MT_CHECK_FAILS(
        mt_dice_sums(ctx, REF(mt_tensor_2d(buf, MT_F32, MT_CPU, 10, 3)), &dg, false, &sums),
        MT_ERR_SHAPE, "dice_sums: p [10,3] f32 cpu: expected 3 dims");
    MT_CHECK_FAILS(
        mt_dice_sums(ctx, REF(T3(0, 2, 5, 0)), REF(T3(100, 2, 5, 0)), false, REF(T3(200, 2, 0, 3))),
        MT_ERR_SHAPE, "dice_sums: p [2,5,0] f32 cpu: no classes");
    MT_CHECK_FAILS(mt_dice_sums(ctx, &dp_, &dg, false, REF(T3(20, 2, 3, 3))), MT_ERR_ARG,
                   "dice_sums: sums", "overlaps p");
    MT_CHECK_FAILS(mt_dice_bwd(ctx, &dp_, &dg, REF(T3(300, 2, 3, 3)), false, &dpo), MT_ERR_SHAPE,
                   "dice_bwd: coef [2,3,3] f32 cpu: expected [2,3,2]");
    MT_CHECK_FAILS(mt_dice_bwd(ctx, &dp_, &dg, &coef, false, REF(T3(400, 2, 5, 2))), MT_ERR_SHAPE,
                   "dice_bwd: p [2,5,3] f32 cpu and dp [2,5,2] f32 cpu: shapes differ");
    MT_CHECK_FAILS(mt_dice_bwd(ctx, &dp_, &dg, &coef, false, REF(T3(2, 2, 5, 3))), MT_ERR_ARG,
                   "dice_bwd: dp", "overlaps p", "without being the same tensor");
    MT_CHECK_FAILS(mt_dice_bwd(ctx, &dp_, &dg, &coef, false, REF(T3(290, 2, 5, 3))), MT_ERR_ARG,
                   "dice_bwd: dp", "overlaps coef");
    /* no pixels: the sums of nothing are zero */
    for (int i = 200; i < 218; i++) buf[i] = 42;
    MT_CHECK_OK(mt_dice_sums(ctx, REF(T3(0, 2, 0, 3)), REF(T3(100, 2, 0, 3)), false, &sums));
    MT_CHECK(buf[200] == 0 && buf[217] == 0, "(sums over no pixels are %g, %g)", buf[200],
             buf[217]);
#undef T4
#undef T3
#undef T1
#undef REF
}

/* Bad arguments of the Llama-family layers: RMSNorm, RoPE, attention, SwiGLU. */
static void test_bad_args_llama(void) {
    mt_ctx *ctx = &g_ctx[MT_CPU];
    static float buf[8192];
    for (int i = 0; i < 8192; i++) buf[i] = 0.25f;
#define T4(off, a, b, c, d) mt_tensor_4d(buf + (off), MT_F32, MT_CPU, a, b, c, d)
#define T3(off, a, b, c)    mt_tensor_3d(buf + (off), MT_F32, MT_CPU, a, b, c)
#define T2(off, a, b)       mt_tensor_2d(buf + (off), MT_F32, MT_CPU, a, b)
#define T1(off, a)          mt_tensor_1d(buf + (off), MT_F32, MT_CPU, a)
#define REF(t)              ((mt_tensor[]){t})
    /* RMSNorm: x (3,8), w (8), rstd (3) */
    mt_tensor x = T2(0, 3, 8), w = T1(100, 8), y = T2(200, 3, 8), rs = T1(300, 3);
    mt_tensor dy = T2(400, 3, 8), dx = T2(500, 3, 8), dw = T1(600, 8);
    mt_tensor xh = x;
    xh.dtype = MT_BF16;
    MT_CHECK_OK(mt_rmsnorm_fwd(ctx, &x, &w, 1e-6f, &y, &rs));
    MT_CHECK_OK(mt_rmsnorm_fwd(ctx, &y, &w, 1e-6f, &y, NULL)); /* in place, no rstd */
    MT_CHECK_OK(mt_rmsnorm_bwd(ctx, &x, &w, &rs, &dy, &dx, &dw));
    MT_CHECK_OK(mt_rmsnorm_bwd(ctx, &x, &w, &rs, &dy, &dy, NULL)); /* in place, no dw */
    MT_CHECK_OK(mt_rmsnorm_fwd(ctx, REF(T3(0, 2, 3, 4)), REF(T1(100, 4)), 0, REF(T3(200, 2, 3, 4)),
                               REF(T2(300, 2, 3))));
    MT_CHECK_OK(mt_rmsnorm_fwd(ctx, REF(T3(0, 2, 3, 4)), REF(T1(100, 4)), 0, REF(T3(200, 2, 3, 4)),
                               REF(T1(300, 6)))); /* rstd flat */
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, REF(T3(0, 2, 3, 4)), REF(T1(100, 4)), 0,
                                  REF(T3(200, 2, 3, 4)), REF(T2(300, 3, 2))),
                   MT_ERR_SHAPE,
                   "rmsnorm_fwd: rstd [3,2] f32 cpu and x [2,3,4] f32 cpu: expected one value per "
                   "row (x's leading dims, or [6])");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, REF(T1(100, 7)), 1e-6f, &y, &rs), MT_ERR_SHAPE,
                   "rmsnorm_fwd: w [7] f32 cpu and x [3,8] f32 cpu: expected one weight per column "
                   "(8)");
    MT_CHECK_FAILS(
        mt_rmsnorm_fwd(ctx, REF(T2(0, 3, 0)), REF(T1(100, 0)), 1e-6f, REF(T2(200, 3, 0)), NULL),
        MT_ERR_SHAPE, "rmsnorm_fwd: x [3,0] f32 cpu: the normalised dim is empty");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, &w, -1, &y, &rs), MT_ERR_ARG,
                   "rmsnorm_fwd: eps -1: expected a finite value >= 0");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, &w, NAN, &y, &rs), MT_ERR_ARG, "rmsnorm_fwd: eps nan");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, &w, 1e-6f, &y, REF(T1(300, 4))), MT_ERR_SHAPE,
                   "rmsnorm_fwd: rstd [4] f32 cpu and x [3,8] f32 cpu: expected one value per row");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, &w, 1e-6f, &y, REF(T2(300, 3, 1))), MT_ERR_SHAPE,
                   "rmsnorm_fwd: rstd [3,1] f32 cpu and x [3,8]");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &xh, &w, 1e-6f, &y, &rs), MT_ERR_SHAPE,
                   "rmsnorm_fwd: x [3,8] bf16 cpu: expected dtype f32");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, &w, 1e-6f, REF(T2(4, 3, 8)), &rs), MT_ERR_ARG,
                   "rmsnorm_fwd: y [3,8] f32 cpu overlaps x [3,8] f32 cpu without being the same");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, &w, 1e-6f, &y, REF(T1(210, 3))), MT_ERR_ARG,
                   "rmsnorm_fwd: rstd [3] f32 cpu overlaps y");
    MT_CHECK_FAILS(mt_rmsnorm_fwd(ctx, &x, &w, 1e-6f, REF(T2(200, 3, 7)), &rs), MT_ERR_SHAPE,
                   "rmsnorm_fwd: x [3,8] f32 cpu and y [3,7] f32 cpu: shapes differ");
    MT_CHECK_FAILS(mt_rmsnorm_bwd(ctx, &x, &w, NULL, &dy, &dx, &dw), MT_ERR_ARG,
                   "rmsnorm_bwd: rstd is NULL");
    MT_CHECK_FAILS(mt_rmsnorm_bwd(ctx, &x, &w, &rs, &dy, &dx, REF(T1(600, 7))), MT_ERR_SHAPE,
                   "rmsnorm_bwd: w [8] f32 cpu and dw [7] f32 cpu: shapes differ");
    MT_CHECK_FAILS(mt_rmsnorm_bwd(ctx, &x, &w, &rs, &dy, REF(T2(10, 3, 8)), &dw), MT_ERR_ARG,
                   "rmsnorm_bwd: dx [3,8] f32 cpu overlaps x");
    MT_CHECK_FAILS(mt_rmsnorm_bwd(ctx, &x, &w, &rs, &dy, &dx, REF(T1(400, 8))), MT_ERR_ARG,
                   "rmsnorm_bwd: dw [8] f32 cpu overlaps dy");
    MT_CHECK_FAILS(mt_rmsnorm_bwd(ctx, &x, &w, &rs, REF(T2(400, 8, 3)), &dx, &dw), MT_ERR_SHAPE,
                   "rmsnorm_bwd: x [3,8] f32 cpu and dy [8,3] f32 cpu: shapes differ");

    /* RoPE: x (1,3,2,8), cos and sin (3,4) */
    mt_tensor rx = T4(1000, 1, 3, 2, 8), rc = T2(1100, 3, 4), rsn = T2(1120, 3, 4);
    mt_tensor ry = T4(1200, 1, 3, 2, 8);
    MT_CHECK_OK(mt_rope(ctx, &rx, &rc, &rsn, false, &ry));
    MT_CHECK_OK(mt_rope(ctx, &ry, &rc, &rsn, true, &ry)); /* in place */
    MT_CHECK_FAILS(
        mt_rope(ctx, REF(T4(1000, 1, 3, 2, 7)), &rc, &rsn, false, REF(T4(1200, 1, 3, 2, 7))),
        MT_ERR_SHAPE, "rope: x [1,3,2,7] f32 cpu: the head dim 7 must be even");
    MT_CHECK_FAILS(mt_rope(ctx, &rx, REF(T2(1100, 3, 8)), &rsn, false, &ry), MT_ERR_SHAPE,
                   "rope: cos [3,8] f32 cpu: expected [3,4] f32 cpu (T, D/2) for x [1,3,2,8]");
    MT_CHECK_FAILS(mt_rope(ctx, &rx, &rc, REF(T2(1120, 2, 4)), false, &ry), MT_ERR_SHAPE,
                   "rope: sin [2,4] f32 cpu: expected [3,4]");
    MT_CHECK_FAILS(mt_rope(ctx, REF(T3(1000, 3, 2, 8)), &rc, &rsn, false, &ry), MT_ERR_SHAPE,
                   "rope: x [3,2,8] f32 cpu: expected 4 dims");
    MT_CHECK_FAILS(mt_rope(ctx, &rx, &rc, &rsn, false, REF(T4(1100, 1, 3, 2, 8))), MT_ERR_ARG,
                   "rope: y [1,3,2,8] f32 cpu overlaps cos");
    MT_CHECK_FAILS(mt_rope(ctx, &rx, &rc, &rsn, false, REF(T4(1200, 1, 3, 1, 8))), MT_ERR_SHAPE,
                   "rope: x [1,3,2,8] f32 cpu and y [1,3,1,8] f32 cpu: shapes differ");

    /* attention: q (1,4,4,8), k and v (1,6,2,8), lse (1,4,4) */
    mt_tensor q = T4(2000, 1, 4, 4, 8), k = T4(2200, 1, 6, 2, 8), v = T4(2300, 1, 6, 2, 8);
    mt_tensor o = T4(2400, 1, 4, 4, 8), lse = T3(2600, 1, 4, 4), dout = T4(2700, 1, 4, 4, 8);
    mt_tensor dq = T4(2900, 1, 4, 4, 8), dk = T4(3100, 1, 6, 2, 8), dvv = T4(3200, 1, 6, 2, 8);
    MT_CHECK_OK(mt_attention_fwd(ctx, &q, &k, &v, 0.35f, true, &o, &lse));
    MT_CHECK_OK(mt_attention_fwd(ctx, &q, &k, &v, 0.35f, false, &o, NULL));
    MT_CHECK_OK(mt_attention_bwd(ctx, &q, &k, &v, &o, &lse, &dout, 0.35f, true, &dq, &dk, &dvv));
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, REF(T4(2200, 1, 6, 3, 8)), REF(T4(2400, 1, 6, 3, 8)),
                                    0.35f, false, REF(T4(3500, 1, 4, 4, 8)), NULL),
                   MT_ERR_SHAPE,
                   "attention_fwd: q [1,4,4,8] f32 cpu and k [1,6,3,8] f32 cpu: 4 query heads are "
                   "not a multiple of 3 kv heads");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, REF(T4(2200, 1, 6, 0, 8)), REF(T4(2300, 1, 6, 0, 8)),
                                    0.35f, false, &o, NULL),
                   MT_ERR_SHAPE, "attention_fwd", "not a multiple of 0 kv heads");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, &k, REF(T4(2300, 1, 6, 2, 4)), 0.35f, false, &o, NULL),
                   MT_ERR_SHAPE,
                   "attention_fwd: k [1,6,2,8] f32 cpu and v [1,6,2,4] f32 cpu: shapes differ");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, REF(T4(2200, 1, 6, 2, 4)), REF(T4(2300, 1, 6, 2, 4)),
                                    0.35f, false, &o, NULL),
                   MT_ERR_SHAPE,
                   "attention_fwd: q [1,4,4,8] f32 cpu (B,T,Hq,D) and k [1,6,2,4] f32 cpu "
                   "(B,S,Hkv,D): batch or head dim differ");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, REF(T4(2200, 2, 6, 2, 8)), REF(T4(2200, 2, 6, 2, 8)),
                                    0.35f, false, &o, NULL),
                   MT_ERR_SHAPE, "attention_fwd", "batch or head dim differ");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, REF(T4(2200, 1, 3, 2, 8)), REF(T4(2300, 1, 3, 2, 8)),
                                    0.35f, true, &o, &lse),
                   MT_ERR_SHAPE,
                   "attention_fwd: q [1,4,4,8] f32 cpu and k [1,3,2,8] f32 cpu: a causal mask "
                   "needs T <= S (4 queries, 3 keys)");
    MT_CHECK_OK(mt_attention_fwd(ctx, &q, REF(T4(2200, 1, 3, 2, 8)), REF(T4(2300, 1, 3, 2, 8)),
                                 0.35f, false, &o, &lse)); /* without the mask T > S is fine */
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, REF(T4(2200, 1, 0, 2, 8)), REF(T4(2300, 1, 0, 2, 8)),
                                    0.35f, false, &o, &lse),
                   MT_ERR_SHAPE, "attention_fwd", "queries with no keys to attend to");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, REF(T4(2000, 1, 4, 4, 0)), REF(T4(2200, 1, 6, 2, 0)),
                                    REF(T4(2300, 1, 6, 2, 0)), 0.35f, false,
                                    REF(T4(2400, 1, 4, 4, 0)), NULL),
                   MT_ERR_SHAPE, "attention_fwd: q [1,4,4,0] f32 cpu: the head dim is empty");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, &k, &v, 0.35f, true, &o, REF(T3(2600, 1, 4, 3))),
                   MT_ERR_SHAPE,
                   "attention_fwd: lse [1,4,3] f32 cpu: expected [1,4,4] f32 cpu (B,Hq,T) for q "
                   "[1,4,4,8]");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, &k, &v, 0.35f, true, &o, REF(T2(2600, 4, 4))),
                   MT_ERR_SHAPE, "attention_fwd: lse [4,4] f32 cpu: expected 3 dims");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, &k, &v, 0.35f, true, REF(T4(2400, 1, 4, 2, 8)), NULL),
                   MT_ERR_SHAPE, "attention_fwd: q [1,4,4,8] f32 cpu and out [1,4,2,8] f32 cpu");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, &k, &v, INFINITY, true, &o, NULL), MT_ERR_ARG,
                   "attention_fwd: scale inf: expected a finite value");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, REF(T3(2000, 4, 4, 8)), &k, &v, 0.35f, true, &o, NULL),
                   MT_ERR_SHAPE, "attention_fwd: q [4,4,8] f32 cpu: expected 4 dims");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, &k, &v, 0.35f, true, REF(T4(2010, 1, 4, 4, 8)), NULL),
                   MT_ERR_ARG, "attention_fwd: out [1,4,4,8] f32 cpu overlaps q");
    MT_CHECK_FAILS(mt_attention_fwd(ctx, &q, &k, &v, 0.35f, true, &o, REF(T3(2400, 1, 4, 4))),
                   MT_ERR_ARG, "attention_fwd: lse [1,4,4] f32 cpu overlaps out");
    MT_CHECK_FAILS(mt_attention_bwd(ctx, &q, &k, &v, &o, NULL, &dout, 0.35f, true, &dq, &dk, &dvv),
                   MT_ERR_ARG, "attention_bwd: lse is NULL");
    MT_CHECK_FAILS(mt_attention_bwd(ctx, &q, &k, &v, &o, &lse, REF(T4(2700, 1, 4, 4, 4)), 0.35f,
                                    true, &dq, &dk, &dvv),
                   MT_ERR_SHAPE, "attention_bwd: q [1,4,4,8] f32 cpu and dout [1,4,4,4]");
    MT_CHECK_FAILS(mt_attention_bwd(ctx, &q, &k, &v, &o, &lse, &dout, 0.35f, true, &dq,
                                    REF(T4(3100, 1, 6, 2, 4)), &dvv),
                   MT_ERR_SHAPE,
                   "attention_bwd: k [1,6,2,8] f32 cpu and dk [1,6,2,4] f32 cpu: shapes differ");
    MT_CHECK_FAILS(mt_attention_bwd(ctx, &q, &k, &v, &o, &lse, &dout, 0.35f, true,
                                    REF(T4(2750, 1, 4, 4, 8)), &dk, &dvv),
                   MT_ERR_ARG, "attention_bwd: dq [1,4,4,8] f32 cpu overlaps dout");
    MT_CHECK_FAILS(mt_attention_bwd(ctx, &q, &k, &v, &o, &lse, &dout, 0.35f, true, &dq, &dk,
                                    REF(T4(3150, 1, 6, 2, 8))),
                   MT_ERR_ARG, "attention_bwd: dv [1,6,2,8] f32 cpu overlaps dk");
    MT_CHECK_FAILS(mt_attention_bwd(ctx, &q, &k, &v, &o, &lse, &dout, 0.35f, true, &dq, &dk,
                                    REF(T4(2610, 1, 6, 2, 8))),
                   MT_ERR_ARG, "attention_bwd: dv [1,6,2,8] f32 cpu overlaps lse");
    /* no queries: nothing reaches k or v, whose gradients are zeroed */
    for (int i = 3100; i < 3296; i++) buf[i] = 42;
    MT_CHECK_OK(mt_attention_bwd(ctx, REF(T4(2000, 1, 0, 4, 8)), &k, &v, REF(T4(2400, 1, 0, 4, 8)),
                                 REF(T3(2600, 1, 4, 0)), REF(T4(2700, 1, 0, 4, 8)), 0.35f, true,
                                 REF(T4(2900, 1, 0, 4, 8)), &dk, &dvv));
    MT_CHECK(buf[3100] == 0 && buf[3295] == 0, "(dk, dv with no queries: %g, %g)", buf[3100],
             buf[3295]);

    /* SwiGLU: (3,5) */
    mt_tensor g = T2(4000, 3, 5), u = T2(4020, 3, 5), sy = T2(4040, 3, 5), sdy = T2(4060, 3, 5);
    mt_tensor dg = T2(4080, 3, 5), du = T2(4100, 3, 5);
    MT_CHECK_OK(mt_swiglu_fwd(ctx, &g, &u, &sy));
    MT_CHECK_OK(mt_swiglu_fwd(ctx, &g, &sy, &sy)); /* in place of up */
    MT_CHECK_OK(mt_swiglu_bwd(ctx, &g, &u, &sdy, &dg, &du));
    MT_CHECK_OK(mt_swiglu_bwd(ctx, &g, &u, &sdy, &sdy, &g)); /* in place of inputs */
    MT_CHECK_FAILS(mt_swiglu_fwd(ctx, &g, REF(T2(4020, 5, 3)), &sy), MT_ERR_SHAPE,
                   "swiglu_fwd: gate [3,5] f32 cpu and up [5,3] f32 cpu: shapes differ");
    MT_CHECK_FAILS(
        mt_swiglu_fwd(ctx, &g, &u, REF(T2(4005, 3, 5))), MT_ERR_ARG,
        "swiglu_fwd: y [3,5] f32 cpu overlaps gate [3,5] f32 cpu without being the same");
    MT_CHECK_FAILS(mt_swiglu_fwd(ctx, &xh, &u, &sy), MT_ERR_SHAPE,
                   "swiglu_fwd: gate [3,8] bf16 cpu: expected dtype f32");
    MT_CHECK_FAILS(mt_swiglu_bwd(ctx, &g, &u, &sdy, &dg, &dg), MT_ERR_ARG,
                   "swiglu_bwd: dup [3,5] f32 cpu overlaps dgate");
    MT_CHECK_FAILS(mt_swiglu_bwd(ctx, &g, &u, &sdy, REF(T2(4061, 3, 5)), &du), MT_ERR_ARG,
                   "swiglu_bwd: dgate [3,5] f32 cpu overlaps dy", "without being the same");
    MT_CHECK_FAILS(mt_swiglu_bwd(ctx, &g, &u, REF(T2(4060, 15, 1)), &dg, &du), MT_ERR_SHAPE,
                   "swiglu_bwd: gate [3,5] f32 cpu and dy [15,1] f32 cpu: shapes differ");
#undef T4
#undef T3
#undef T2
#undef T1
#undef REF
}

/* Every op reports MT_ERR_UNSUPPORTED, naming itself and the backend, when an entry is missing. */
static mt_status call_by_name(mt_ctx *ctx, const char *op) {
    static float f[512];
    static int32_t ids[16];
    static uint8_t mask[16];
    mt_tensor m22 = mt_tensor_2d(f, MT_F32, ctx->device, 2, 2),
              o22 = mt_tensor_2d(f + 16, MT_F32, ctx->device, 2, 2);
    mt_tensor m22b = mt_tensor_2d(f + 32, MT_F32, ctx->device, 2, 2),
              v2 = mt_tensor_1d(f + 48, MT_F32, ctx->device, 2);
    mt_tensor t2 = mt_tensor_1d(ids, MT_I32, ctx->device, 2),
              l1 = mt_tensor_1d(f + 64, MT_F32, ctx->device, 1);
    mt_tensor h4 = mt_tensor_1d(f + 80, MT_BF16, ctx->device, 4);
    if (!strcmp(op, "gemm")) return mt_gemm(ctx, false, false, 1, &m22, &m22b, 0, &o22);
    if (!strcmp(op, "axpy")) return mt_axpy(ctx, 1, &m22, &o22);
    if (!strcmp(op, "scale")) return mt_scale(ctx, 1, &o22);
    if (!strcmp(op, "add")) return mt_add(ctx, &m22, &v2, &o22);
    if (!strcmp(op, "mul")) return mt_mul(ctx, &m22, &m22b, &o22);
    if (!strcmp(op, "reduce")) return mt_reduce(ctx, MT_REDUCE_SUM, &m22, 0, &v2);
    if (!strcmp(op, "act_fwd")) return mt_act_fwd(ctx, MT_ACT_GELU, &m22, &o22);
    if (!strcmp(op, "act_bwd")) return mt_act_bwd(ctx, MT_ACT_GELU, &m22, &m22b, &o22);
    if (!strcmp(op, "softmax_fwd")) return mt_softmax_fwd(ctx, false, &m22, &o22);
    if (!strcmp(op, "softmax_bwd")) return mt_softmax_bwd(ctx, false, &m22, &m22b, &o22);
    if (!strcmp(op, "cross_entropy_fwd")) return mt_cross_entropy_fwd(ctx, &m22, &t2, -100, &l1);
    if (!strcmp(op, "cross_entropy_bwd"))
        return mt_cross_entropy_bwd(ctx, &m22, &t2, -100, 1, &o22);
    if (!strcmp(op, "bce_logits_fwd")) return mt_bce_logits_fwd(ctx, &m22, &m22b, NULL, &l1);
    if (!strcmp(op, "bce_logits_bwd")) return mt_bce_logits_bwd(ctx, &m22, &m22b, NULL, 1, &o22);
    if (!strcmp(op, "embedding_fwd")) return mt_embedding_fwd(ctx, &m22, &t2, &o22);
    if (!strcmp(op, "embedding_bwd")) return mt_embedding_bwd(ctx, &t2, &m22, &o22);
    if (!strcmp(op, "cast")) return mt_cast(ctx, &m22, &h4);
    /* layers: 1x2x2x2 maps, a 1x1 convolution with two filters, 1x1 pools */
    mt_device dev = ctx->device;
    mt_tensor x4 = mt_tensor_4d(f + 128, MT_F32, dev, 1, 2, 2, 2),
              y4 = mt_tensor_4d(f + 144, MT_F32, dev, 1, 2, 2, 2);
    mt_tensor w4 = mt_tensor_4d(f + 160, MT_F32, dev, 2, 1, 1, 2),
              a4 = mt_tensor_4d(ids, MT_I32, dev, 1, 2, 2, 2);
    mt_tensor u2 = mt_tensor_1d(f + 176, MT_F32, dev, 2),
              u2b = mt_tensor_1d(f + 192, MT_F32, dev, 2);
    mt_tensor u4 = mt_tensor_1d(f + 208, MT_F32, dev, 4), mk = mt_tensor_2d(mask, MT_U8, dev, 2, 2);
    mt_tensor o22b = mt_tensor_2d(f + 224, MT_F32, dev, 2, 2),
              u2c = mt_tensor_1d(f + 240, MT_F32, dev, 2);
    mt_conv2d_params cp = {1, 1, 0, 0, 1, 1, 1};
    mt_pool2d_params pp = {1, 1, 1, 1, 0, 0, false, true};
    if (!strcmp(op, "conv2d_fwd")) return mt_conv2d_fwd(ctx, &cp, &x4, &w4, NULL, &y4);
    if (!strcmp(op, "conv2d_bwd_data")) return mt_conv2d_bwd_data(ctx, &cp, &y4, &w4, &x4);
    if (!strcmp(op, "conv2d_bwd_filter")) return mt_conv2d_bwd_filter(ctx, &cp, &x4, &y4, &w4, &u2);
    if (!strcmp(op, "bn_stats")) return mt_bn_stats(ctx, &m22, &u2, &u2b);
    if (!strcmp(op, "bn_fwd")) return mt_bn_fwd(ctx, &m22, &v2, &u2b, 1e-5f, NULL, NULL, &o22);
    if (!strcmp(op, "bn_bwd_reduce"))
        return mt_bn_bwd_reduce(ctx, &m22, &m22b, &v2, &u2b, 1e-5f, &u2, &u2c);
    if (!strcmp(op, "bn_bwd"))
        return mt_bn_bwd(ctx, &m22, &m22b, &v2, &u2b, 1e-5f, NULL, NULL, NULL, 0, false, &o22);
    if (!strcmp(op, "maxpool2d_fwd")) return mt_maxpool2d_fwd(ctx, &pp, &x4, &y4, &a4);
    if (!strcmp(op, "maxpool2d_bwd")) return mt_maxpool2d_bwd(ctx, &pp, &a4, &y4, &x4);
    if (!strcmp(op, "avgpool2d_fwd")) return mt_avgpool2d_fwd(ctx, &pp, &x4, &y4);
    if (!strcmp(op, "avgpool2d_bwd")) return mt_avgpool2d_bwd(ctx, &pp, &y4, &x4);
    if (!strcmp(op, "dropout_fwd")) return mt_dropout_fwd(ctx, 0.5f, 1, 2, 0, &m22, &o22, &mk);
    if (!strcmp(op, "dropout_bwd")) return mt_dropout_bwd(ctx, 0.5f, &mk, &m22, &o22);
    if (!strcmp(op, "channels_put")) return mt_channels_put(ctx, &u2, 1, &u4);
    if (!strcmp(op, "channels_get")) return mt_channels_get(ctx, &u4, 2, 0, &u2);
    if (!strcmp(op, "sgd_step"))
        return mt_sgd_step(ctx, &o22, &m22, &o22b, 0.1f, 0.9f, 0, 0, false, true);
    if (!strcmp(op, "adamw_step"))
        return mt_adamw_step(ctx, &o22, &m22, &m22b, &o22b, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1);
    if (!strcmp(op, "sumsq")) return mt_sumsq(ctx, &m22, &l1);
    /* decoder and segmentation ops: the 1x1 convolution transposed, a 2x2 map resized to 4x4 */
    mt_tensor up4 = mt_tensor_4d(f + 256, MT_F32, dev, 1, 4, 4, 2);
    mt_tensor p3 = mt_tensor_3d(f + 300, MT_F32, dev, 1, 2, 2),
              g3 = mt_tensor_3d(f + 304, MT_F32, dev, 1, 2, 2);
    mt_tensor s3 = mt_tensor_3d(f + 308, MT_F32, dev, 1, 2, 3),
              c3 = mt_tensor_3d(f + 320, MT_F32, dev, 1, 2, 2);
    mt_tensor dp3 = mt_tensor_3d(f + 330, MT_F32, dev, 1, 2, 2);
    if (!strcmp(op, "bias_add")) return mt_bias_add(ctx, &u2, &o22);
    if (!strcmp(op, "bias_grad")) return mt_bias_grad(ctx, &m22, &u2);
    if (!strcmp(op, "conv_transpose2d_fwd"))
        return mt_conv_transpose2d_fwd(ctx, &cp, 0, 0, &x4, &w4, &u2, &y4);
    if (!strcmp(op, "conv_transpose2d_bwd_data"))
        return mt_conv_transpose2d_bwd_data(ctx, &cp, 0, 0, &y4, &w4, &x4);
    if (!strcmp(op, "conv_transpose2d_bwd_filter"))
        return mt_conv_transpose2d_bwd_filter(ctx, &cp, 0, 0, &x4, &y4, &w4, &u2);
    if (!strcmp(op, "upsample2d_fwd"))
        return mt_upsample2d_fwd(ctx, MT_UPSAMPLE_NEAREST, false, &x4, &up4);
    if (!strcmp(op, "upsample2d_bwd"))
        return mt_upsample2d_bwd(ctx, MT_UPSAMPLE_BILINEAR, true, &up4, &x4);
    if (!strcmp(op, "dice_sums")) return mt_dice_sums(ctx, &p3, &g3, false, &s3);
    if (!strcmp(op, "dice_bwd")) return mt_dice_bwd(ctx, &p3, &g3, &c3, true, &dp3);
    /* Llama-family layers: RMSNorm of 2x2, RoPE and attention on the 1x2x2x2 maps (T 2, 2
     * heads, D 2) with one kv head of 2 keys, SwiGLU of 2x2 */
    mt_tensor r2 = mt_tensor_1d(f + 344, MT_F32, dev, 2),
              cs = mt_tensor_2d(f + 348, MT_F32, dev, 2, 1),
              sn = mt_tensor_2d(f + 352, MT_F32, dev, 2, 1);
    mt_tensor kk = mt_tensor_4d(f + 360, MT_F32, dev, 1, 2, 1, 2),
              vv = mt_tensor_4d(f + 364, MT_F32, dev, 1, 2, 1, 2);
    mt_tensor ls = mt_tensor_3d(f + 368, MT_F32, dev, 1, 2, 2),
              dov = mt_tensor_4d(f + 372, MT_F32, dev, 1, 2, 2, 2);
    mt_tensor dqq = mt_tensor_4d(f + 380, MT_F32, dev, 1, 2, 2, 2),
              dkk = mt_tensor_4d(f + 388, MT_F32, dev, 1, 2, 1, 2);
    mt_tensor dvv = mt_tensor_4d(f + 392, MT_F32, dev, 1, 2, 1, 2),
              o22c = mt_tensor_2d(f + 400, MT_F32, dev, 2, 2);
    if (!strcmp(op, "rmsnorm_fwd")) return mt_rmsnorm_fwd(ctx, &m22, &v2, 1e-6f, &o22, &r2);
    if (!strcmp(op, "rmsnorm_bwd")) return mt_rmsnorm_bwd(ctx, &m22, &v2, &r2, &m22b, &o22, &u2);
    if (!strcmp(op, "rope")) return mt_rope(ctx, &x4, &cs, &sn, false, &y4);
    if (!strcmp(op, "attention_fwd"))
        return mt_attention_fwd(ctx, &x4, &kk, &vv, 0.5f, true, &y4, &ls);
    if (!strcmp(op, "attention_bwd"))
        return mt_attention_bwd(ctx, &x4, &kk, &vv, &y4, &ls, &dov, 0.5f, true, &dqq, &dkk, &dvv);
    if (!strcmp(op, "swiglu_fwd")) return mt_swiglu_fwd(ctx, &m22, &m22b, &o22);
    if (!strcmp(op, "swiglu_bwd")) return mt_swiglu_bwd(ctx, &m22, &m22b, &o22b, &o22, &o22c);
    return mt_fail(MT_ERR_INTERNAL, "test_ops: no call for op '%s'", op);
}

static void test_not_implemented(void) {
    /* A backend like the CPU one but with no ops at all. */
    mt_backend empty = mt_cpu_backend;
    empty.name = "empty";
    memset((char *)&empty + offsetof(mt_backend, gemm), 0,
           sizeof empty - offsetof(mt_backend, gemm));
    mt_ctx ctx = g_ctx[MT_CPU];
    ctx.backend = &empty;
    for (int i = 0; i < mt_op_count(); i++) {
        char want[96];
        snprintf(want, sizeof want, "op '%s' is not implemented on the empty backend",
                 mt_op_name(i));
        MT_CHECK_FAILS(call_by_name(&ctx, mt_op_name(i)), MT_ERR_UNSUPPORTED, want);
        /* and the same call works on the real CPU backend */
        MT_CHECK_OK(call_by_name(&g_ctx[MT_CPU], mt_op_name(i)));
    }
    /* A composed op needs every entry it runs, whether or not a given call uses it: without
     * bias_add, the transposed convolution's forward is missing even with no bias. */
    mt_backend no_bias = mt_cpu_backend;
    no_bias.name = "no-bias";
    no_bias.bias_add = NULL;
    ctx.backend = &no_bias;
    MT_CHECK(!mt_backend_supports(&no_bias, "conv_transpose2d_fwd"));
    MT_CHECK(mt_backend_supports(&no_bias, "conv_transpose2d_bwd_data"));
    MT_CHECK(mt_backend_supports(&no_bias, "conv2d_fwd") && !mt_backend_supports(&no_bias, "x"));
    mt_conv2d_params cp = {1, 1, 0, 0, 1, 1, 1};
    static float f[32];
    mt_tensor x = mt_tensor_4d(f, MT_F32, MT_CPU, 1, 2, 2, 2),
              w = mt_tensor_4d(f + 8, MT_F32, MT_CPU, 2, 1, 1, 2);
    mt_tensor y = mt_tensor_4d(f + 16, MT_F32, MT_CPU, 1, 2, 2, 2);
    MT_CHECK_FAILS(mt_conv_transpose2d_fwd(&ctx, &cp, 0, 0, &x, &w, NULL, &y), MT_ERR_UNSUPPORTED,
                   "op 'conv_transpose2d_fwd' is not implemented on the no-bias backend");
    MT_CHECK_OK(mt_conv_transpose2d_bwd_data(&ctx, &cp, 0, 0, &y, &w, &x));
}

/* ==== thread-count determinism
 * ===================================================================== */

/* Runs fn on CPU contexts with 1 and 3 threads; outputs must be identical bit for bit. */
static void same_for_threads(const char *what, op_fn fn, const void *p, const io *c) {
    mt_ctx one, three;
    MT_CHECK_OK(mt_ctx_init(&one, MT_CPU, 0, 1));
    MT_CHECK_OK(mt_ctx_init(&three, MT_CPU, 0, 3));
    mt_tensor r1[MAX_IO], r3[MAX_IO];
    MT_CHECK_OK(run_on(&one, fn, p, c, r1));
    MT_CHECK_OK(run_on(&three, fn, p, c, r3));
    for (int o = 0; o < c->nout; o++)
        MT_CHECK(memcmp(r1[o].data, r3[o].data, mt_tensor_bytes(&r1[o])) == 0,
                 "(%s: output %d differs between 1 and 3 threads)", what, o);
    mt_ctx_free(&one);
    mt_ctx_free(&three);
}

static void test_determinism(void) {
    rng_seed(13);
    io c = {.nin = 1, .nout = 1};
    c.in[0] = HT(MT_F32, 64, 3001);
    fill_normal(&c.in[0], 1);
    c.out[0] = HT(MT_F32, 3001);
    same_for_threads("reduce sum over rows", call_reduce, &(red_p){MT_REDUCE_SUM, 0}, &c);
    c.out[0] = HT(MT_F32, 64);
    same_for_threads("reduce mean over cols", call_reduce, &(red_p){MT_REDUCE_MEAN, 1}, &c);

    ce_p cp = {-1, 1, false};
    io ce = {.nin = 2, .nout = 1};
    ce.in[0] = HT(MT_F32, 500, 333);
    ce.in[1] = HT(MT_I32, 500);
    ce.out[0] = HT(MT_F32, 1);
    fill_normal(&ce.in[0], 2);
    for (int i = 0; i < 500; i++) I32(&ce.in[1])[i] = (int32_t)rng_int(-1, 332);
    same_for_threads("cross-entropy loss", call_ce_fwd, &cp, &ce);

    bce_p bp = {true, 1};
    io b;
    bce_inputs(&b, true, 2, (int64_t[]){400, 129}, 5, 0.3, true);
    same_for_threads("bce loss", call_bce_fwd, &bp, &b);

    io e = {.nin = 2, .nout = 1};
    e.in[0] = HT(MT_I32, 5000);
    e.in[1] = HT(MT_F32, 5000, 160);
    e.out[0] = HT(MT_F32, 7, 160);
    for (int i = 0; i < 5000; i++) I32(&e.in[0])[i] = (int32_t)rng_int(0, 6); /* many repeats */
    fill_normal(&e.in[1], 1);
    memset(e.out[0].data, 0, mt_tensor_bytes(&e.out[0]));
    same_for_threads("embedding backward", call_emb_bwd, NULL, &e);

    /* layers: sums over rows (bias and depthwise filter gradients, batch-norm statistics), and
     * the scatters of pooling backwards */
    conv_p cv = {CONV(1, 1, 1, 1, 1, 1, 1), true}, dw = {CONV(2, 2, 1, 1, 1, 1, 24), true};
    io cf = {.nin = 2, .nout = 2};
    cf.in[0] = HT(MT_F32, 3, 17, 19, 24);
    cf.in[1] = HT(MT_F32, 3, 17, 19, 32);
    fill_normal(&cf.in[0], 1);
    fill_normal(&cf.in[1], 1);
    cf.out[0] = HT(MT_F32, 32, 3, 3, 24);
    cf.out[1] = HT(MT_F32, 32);
    memset(cf.out[0].data, 0, mt_tensor_bytes(&cf.out[0]));
    memset(cf.out[1].data, 0, mt_tensor_bytes(&cf.out[1]));
    same_for_threads("conv filter and bias gradients", call_conv_bwd_filter, &cv, &cf);
    cf.in[1] = HT(MT_F32, 3, 9, 10, 24);
    fill_normal(&cf.in[1], 1);
    cf.out[0] = HT(MT_F32, 24, 3, 3, 1);
    cf.out[1] = HT(MT_F32, 24);
    memset(cf.out[0].data, 0, mt_tensor_bytes(&cf.out[0]));
    memset(cf.out[1].data, 0, mt_tensor_bytes(&cf.out[1]));
    same_for_threads("depthwise filter gradients", call_conv_bwd_filter, &dw, &cf);
    conv_p thin = {CONV(1, 1, 1, 1, 1, 1, 1), true}; /* few columns: summed in fixed parts */
    cf.in[0] = HT(MT_F32, 2, 30, 30, 2);
    cf.in[1] = HT(MT_F32, 2, 30, 30, 64);
    fill_normal(&cf.in[0], 1);
    fill_normal(&cf.in[1], 1);
    cf.out[0] = HT(MT_F32, 64, 3, 3, 2);
    cf.out[1] = HT(MT_F32, 64);
    memset(cf.out[0].data, 0, mt_tensor_bytes(&cf.out[0]));
    memset(cf.out[1].data, 0, mt_tensor_bytes(&cf.out[1]));
    same_for_threads("thin filter gradients", call_conv_bwd_filter, &thin, &cf);
    /* Winograd (3x3, stride 1): blocks of tiles taken by threads as they come free */
    conv_p wg = {CONV(1, 1, 1, 1, 1, 1, 1), true};
    io wf = {.nin = 3, .nout = 1};
    wf.in[0] = HT(MT_F32, 3, 20, 22, 24);
    wf.in[1] = HT(MT_F32, 32, 3, 3, 24);
    wf.in[2] = HT(MT_F32, 32);
    for (int i = 0; i < 3; i++) fill_normal(&wf.in[i], 1);
    wf.out[0] = HT(MT_F32, 3, 20, 22, 32);
    same_for_threads("winograd forward", call_conv_fwd, &wg, &wf);
    io wd = {.nin = 2, .nout = 1, .in = {HT(MT_F32, 3, 20, 22, 32), wf.in[1]}, .out = {wf.in[0]}};
    fill_normal(&wd.in[0], 1);
    same_for_threads("winograd backward data", call_conv_bwd_data, &wg, &wd);
    io wb = {.nin = 2, .nout = 2}; /* a filter gradient too large for partial sums */
    wb.in[0] = HT(MT_F32, 4, 16, 16, 96);
    wb.in[1] = HT(MT_F32, 4, 16, 16, 96);
    fill_normal(&wb.in[0], 1);
    fill_normal(&wb.in[1], 1);
    wb.out[0] = HT(MT_F32, 96, 3, 3, 96);
    wb.out[1] = HT(MT_F32, 96);
    memset(wb.out[0].data, 0, mt_tensor_bytes(&wb.out[0]));
    memset(wb.out[1].data, 0, mt_tensor_bytes(&wb.out[1]));
    same_for_threads("winograd filter gradients by blocks", call_conv_bwd_filter, &wg, &wb);
    io bs = {
        .nin = 1, .nout = 2, .in = {HT(MT_F32, 3001, 70)}, .out = {HT(MT_F32, 70), HT(MT_F32, 70)}};
    fill_normal(&bs.in[0], 2);
    same_for_threads("bn statistics", call_bn_stats, NULL, &bs);
    bn_p bnp = {1e-5f, true, false, true, 3001};
    io br = {.nin = 4, .nout = 2, .in = {bs.in[0], HT(MT_F32, 3001, 70), bs.out[0], bs.out[1]}};
    fill_normal(&br.in[1], 1);
    fill_uniform(&br.in[2], -1, 1);
    fill_uniform(&br.in[3], 0.5, 2);
    br.out[0] = HT(MT_F32, 70);
    br.out[1] = HT(MT_F32, 70);
    same_for_threads("bn backward sums", call_bn_bwd_reduce, &bnp, &br);
    mt_pool2d_params pp = POOL(3, 3, 1, 1, 1, 1, false, true);
    io pb = {
        .nin = 1, .nout = 1, .in = {HT(MT_F32, 3, 20, 20, 70)}, .out = {HT(MT_F32, 3, 20, 20, 70)}};
    fill_normal(&pb.in[0], 1);
    same_for_threads("avgpool backward", call_avgpool_bwd, &pp, &pb);
    io sq = {.nin = 1, .nout = 1, .in = {HT(MT_F32, 300007)}, .out = {HT(MT_F32, 1)}};
    fill_normal(&sq.in[0], 1);
    F(&sq.out[0])[0] = 0;
    same_for_threads("sum of squares", call_sumsq, NULL, &sq);
    drop_p dp = {0.4f, 3, 4, 7, false};
    io dr = {.nin = 1,
             .nout = 2,
             .in = {HT(MT_F32, 100003)},
             .out = {HT(MT_F32, 100003), HT(MT_U8, 100003)}};
    fill_normal(&dr.in[0], 1);
    same_for_threads("dropout", call_dropout_fwd, &dp, &dr);

    /* decoder and segmentation ops: column sums (bias, transposed-conv filters), the gathers of
     * the upsampling backwards, the per-image Dice sums */
    io bg = {.nin = 1, .nout = 1, .in = {HT(MT_F32, 50001, 7)}, .out = {HT(MT_F32, 7)}};
    fill_normal(&bg.in[0], 1);
    memset(bg.out[0].data, 0, mt_tensor_bytes(&bg.out[0]));
    same_for_threads("bias gradient", call_bias_grad, NULL, &bg);
    convt_p tp = CONVT(2, 2, 1, 1, 1, 1, 1, 1, 1, true);
    io tf = {.nin = 2,
             .nout = 2,
             .in = {HT(MT_F32, 2, 12, 13, 24), HT(MT_F32, 2, 24, 26, 16)},
             .out = {HT(MT_F32, 24, 3, 3, 16), HT(MT_F32, 16)}};
    fill_normal(&tf.in[0], 1);
    fill_normal(&tf.in[1], 1);
    memset(tf.out[0].data, 0, mt_tensor_bytes(&tf.out[0]));
    memset(tf.out[1].data, 0, mt_tensor_bytes(&tf.out[1]));
    same_for_threads("transposed conv filter and bias gradients", call_convt_bwd_filter, &tp, &tf);
    for (int m = 0; m < 3; m++) {
        up_p u = {m ? MT_UPSAMPLE_BILINEAR : MT_UPSAMPLE_NEAREST, m == 2};
        io ub = {.nin = 1,
                 .nout = 1,
                 .in = {HT(MT_F32, 2, 96, 77, 8)},
                 .out = {HT(MT_F32, 2, 37, 29, 8)}};
        fill_normal(&ub.in[0], 1);
        same_for_threads("upsample backward", call_up_bwd, &u, &ub);
    }
    for (int squared = 0; squared < 2; squared++) {
        dice_p dsp = {squared, false};
        io ds = {.nin = 2,
                 .nout = 1,
                 .in = {HT(MT_F32, 3, 100003, 3), HT(MT_F32, 3, 100003, 3)},
                 .out = {HT(MT_F32, 3, 3, 3)}};
        fill_uniform(&ds.in[0], 0, 1);
        fill_uniform(&ds.in[1], 0, 1);
        same_for_threads("dice sums", call_dice_sums, &dsp, &ds);
    }

    /* Llama-family layers: the RMSNorm weight gradient (a column sum over chunks of rows) and
     * attention, whose backward takes one pass over (batch, kv head) on one thread and two passes
     * (key blocks, then query blocks) on three when B*Hkv is small: the two must agree */
    rms_p rp = {1e-6f, false, true};
    io rb = {.nin = 4, .nout = 2};
    rb.in[0] = HT(MT_F32, 3001, 70);
    rb.in[1] = HT(MT_F32, 70);
    rb.in[2] = HT(MT_F32, 3001);
    rb.in[3] = HT(MT_F32, 3001, 70);
    fill_normal(&rb.in[0], 1);
    fill_normal(&rb.in[1], 1);
    fill_uniform(&rb.in[2], 0.5, 2);
    fill_normal(&rb.in[3], 1);
    rb.out[0] = HT(MT_F32, 3001, 70);
    rb.out[1] = HT(MT_F32, 70);
    memset(rb.out[1].data, 0, mt_tensor_bytes(&rb.out[1]));
    same_for_threads("rmsnorm backward", call_rms_bwd, &rp, &rb);
    const att_dims dims[] = {ATT(1, 300, 300, 2, 1, 32), ATT(1, 130, 400, 4, 2, 16),
                             ATT(2, 200, 200, 6, 3, 16), ATT(1, 1, 3000, 8, 2, 64)};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        const att_dims a = dims[i];
        mt_tensor in[4], fr[MAX_IO];
        att_inputs(&a, in);
        att_p ap = {(float)(1 / sqrt((double)a.d)), i != 2, true};
        io f = {.nin = 3, .nout = 2, .in = {in[0], in[1], in[2]}};
        f.out[0] = H_like(&in[0]);
        f.out[1] = HT(MT_F32, a.b, a.hq, a.t);
        same_for_threads("attention forward", call_att_fwd, &ap, &f);
        MT_CHECK_OK(run_on(&g_ctx[MT_CPU], call_att_fwd, &ap, &f, fr));
        io bw = {.nin = 6, .nout = 3, .in = {in[0], in[1], in[2], fr[0], fr[1], in[3]}};
        bw.out[0] = H_like(&in[0]);
        bw.out[1] = H_like(&in[1]);
        bw.out[2] = H_like(&in[2]);
        same_for_threads("attention backward", call_att_bwd, &ap, &bw);
    }
}

/* ==== tensors, contexts, the registry
 * ============================================================== */

static void test_tensor_basics(void) {
    char buf[96];
    mt_tensor t = mt_tensor_4d(NULL, MT_F32, MT_CPU, 8, 224, 224, 3);
    MT_CHECK(strcmp(mt_tensor_describe(&t, buf, sizeof buf), "[8,224,224,3] f32 cpu") == 0, "(%s)",
             buf);
    MT_CHECK(mt_tensor_numel(&t) == 8 * 224 * 224 * 3);
    MT_CHECK(mt_tensor_bytes(&t) == 4u * 8 * 224 * 224 * 3);
    mt_tensor s = mt_tensor_1d(NULL, MT_BF16, MT_CUDA, 5);
    MT_CHECK(strcmp(mt_tensor_describe(&s, buf, sizeof buf), "[5] bf16 cuda") == 0, "(%s)", buf);
    mt_tensor_describe(&t, buf, 8);
    MT_CHECK(strncmp(buf, "[8,224", 6) == 0 && strlen(buf) < 8, "(truncated: %s)", buf);
    static const size_t sizes[] = {4, 2, 2, 1, 2, 4, 8};
    for (int d = 0; d < MT_DTYPE_COUNT; d++) {
        mt_dtype back;
        MT_CHECK(mt_dtype_size((mt_dtype)d) == sizes[d]);
        MT_CHECK_OK(mt_dtype_parse(mt_dtype_name((mt_dtype)d), &back));
        MT_CHECK(back == (mt_dtype)d);
    }
    mt_dtype dt;
    MT_CHECK_OK(mt_dtype_parse("bfloat16", &dt));
    MT_CHECK(dt == MT_BF16);
    MT_CHECK_FAILS(mt_dtype_parse("f8", &dt), MT_ERR_ARG, "unknown dtype 'f8'");

    mt_tensor r;
    MT_CHECK_OK(mt_tensor_reshape(&t, 2, (int64_t[]){8, -1}, &r));
    MT_CHECK(r.ndim == 2 && r.shape[0] == 8 && r.shape[1] == 224 * 224 * 3);
    MT_CHECK_FAILS(mt_tensor_reshape(&t, 2, (int64_t[]){7, 3}, &r), MT_ERR_SHAPE,
                   "reshape [8,224,224,3] f32 cpu to [7,3]");
    MT_CHECK_FAILS(mt_tensor_reshape(&t, 2, (int64_t[]){-1, -1}, &r), MT_ERR_SHAPE, "only one -1");
    MT_CHECK(mt_tensor_same_shape(&t, &t) && !mt_tensor_same_shape(&t, &r));

    /* alloc, copy, zero through the CPU backend */
    mt_ctx *ctx = &g_ctx[MT_CPU];
    mt_tensor a, b;
    MT_CHECK_OK(mt_tensor_alloc(ctx, &a, MT_F32, 2, (int64_t[]){3, 5}));
    MT_CHECK_OK(mt_tensor_alloc(ctx, &b, MT_F32, 1, (int64_t[]){15}));
    for (int i = 0; i < 15; i++) F(&a)[i] = (float)i;
    MT_CHECK_OK(mt_tensor_copy(ctx, &b, &a)); /* same count, other shape */
    MT_CHECK(F(&b)[14] == 14.0f);
    MT_CHECK_OK(mt_tensor_zero(ctx, &b));
    MT_CHECK(F(&b)[7] == 0.0f);
    mt_tensor i15 = b;
    i15.dtype = MT_I32;
    MT_CHECK_FAILS(mt_tensor_copy(ctx, &i15, &a), MT_ERR_SHAPE, "tensor copy", "dtype");
    mt_tensor on_gpu = a;
    on_gpu.device = MT_CUDA;
    MT_CHECK_FAILS(mt_tensor_copy(ctx, &b, &on_gpu), MT_ERR_SHAPE, "cannot reach cuda memory");
    mt_tensor_free(ctx, &a);
    MT_CHECK(a.data == NULL);
    mt_tensor_free(ctx, &a); /* twice is harmless */
    mt_tensor_free(ctx, &b);
    MT_CHECK_FAILS(mt_tensor_alloc(ctx, &b, MT_F32, 5, (int64_t[]){1, 1, 1, 1, 1}), MT_ERR_SHAPE,
                   "expected 0..4 dims");
    MT_CHECK(b.data == NULL);

    /* backends */
    MT_CHECK(mt_backend_available(MT_CPU));
    MT_CHECK(mt_backend_for(MT_CPU) == &mt_cpu_backend);
    MT_CHECK_OK(mt_ctx_sync(ctx));
    if (!mt_backend_for(MT_CUDA)) {
        mt_ctx cuda;
        MT_CHECK(!mt_backend_available(MT_CUDA));
        MT_CHECK_FAILS(mt_ctx_init(&cuda, MT_CUDA, 0, 1), MT_ERR_UNSUPPORTED, "cuda",
                       "not compiled");
    }
}

/* f16 conversions directly (cast covers them through the backends too). */
static void test_f16(void) {
    MT_CHECK(mt_f32_to_f16(1.0f) == 0x3c00 && mt_f32_to_f16(-2.0f) == 0xc000);
    MT_CHECK(mt_f32_to_f16(65504.0f) == 0x7bff && mt_f32_to_f16(65519.99f) == 0x7bff);
    MT_CHECK(mt_f32_to_f16(65520.0f) == 0x7c00 && mt_f32_to_f16(-1e9f) == 0xfc00);
    MT_CHECK(mt_f32_to_f16(0x1p-24f) == 0x0001 && mt_f32_to_f16(0x1p-25f) == 0x0000);
    MT_CHECK(mt_f32_to_f16(0x1.8p-25f) == 0x0001 && mt_f32_to_f16(0x1.8p-24f) == 0x0002);
    MT_CHECK(mt_f32_to_f16(0x1.ffcp-15f) == 0x0400); /* rounds up into the smallest normal */
    MT_CHECK(mt_f32_to_f16(-0.0f) == 0x8000 && f16_is_nan(mt_f32_to_f16(NAN)));
    MT_CHECK(mt_f16_to_f32(0x7bff) == 65504.0f && mt_f16_to_f32(0x0001) == 0x1p-24f);
    MT_CHECK(isinf(mt_f16_to_f32(0xfc00)) && mt_f16_to_f32(0xfc00) < 0);
    MT_CHECK(isnan(mt_f16_to_f32(0x7e00)) && isnan(mt_f16_to_f32(0x7c01)));
    MT_CHECK(mt_f32_to_bf16(1.0f) == 0x3f80 && mt_bf16_to_f32(0x3f80) == 1.0f);
    MT_CHECK(bf16_is_nan(mt_f32_to_bf16(f32_of_bits(0x7f800001)))); /* a NaN never becomes inf */
}

static void test_registry(void) {
    int n = mt_op_count();
    int fields = (int)((sizeof(mt_backend) - offsetof(mt_backend, gemm)) / sizeof(void (*)(void)));
    /* the ops with entries, then those composed of other entries */
    static const char *composed[] = {"conv_transpose2d_fwd", "conv_transpose2d_bwd_data",
                                     "conv_transpose2d_bwd_filter"};
    MT_CHECK(n == fields + 3, "(registry has %d ops, mt_backend %d op fields + 3 composed)", n,
             fields);
    for (int i = 0; i < 3 && n == fields + 3; i++)
        MT_CHECK(strcmp(mt_op_name(fields + i), composed[i]) == 0, "(op %d is %s)", fields + i,
                 mt_op_name(fields + i));
    MT_CHECK(n <= MAX_OPS);
    MT_CHECK(mt_op_name(-1) == NULL && mt_op_name(n) == NULL);
    for (int i = 0; i < n; i++) {
        MT_CHECK(mt_op_name(i) && *mt_op_name(i));
        MT_CHECK(mt_op_supported(MT_CPU, i), "(cpu lacks %s)", mt_op_name(i));
        for (int j = 0; j < i; j++) MT_CHECK(strcmp(mt_op_name(i), mt_op_name(j)) != 0);
    }
    MT_CHECK(!mt_op_supported(MT_CPU, n) && !mt_op_supported(MT_DEVICE_COUNT, 0));
    /* The gaps of every other backend compiled in, whether or not its device is here. */
    for (int d = 1; d < MT_DEVICE_COUNT; d++) {
        if (!mt_backend_for((mt_device)d)) continue;
        char list[1024] = "";
        size_t len = 0;
        for (int i = 0; i < n; i++)
            if (!mt_op_supported((mt_device)d, i) && len < sizeof list)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "",
                                        mt_op_name(i));
        if (len)
            printf("not registered on %s: %s\n", mt_device_name((mt_device)d), list);
        else
            printf("%s registers every op\n", mt_device_name((mt_device)d));
    }
}

/* The census: every op ran cases on the CPU, and every op with a backward had finite differences.
 * Runs last. */
static void test_census(void) {
    static const char *with_grad[] = {"gemm",
                                      "act_bwd",
                                      "softmax_bwd",
                                      "cross_entropy_bwd",
                                      "bce_logits_bwd",
                                      "dice_bwd",
                                      "embedding_bwd",
                                      "conv2d_bwd_data",
                                      "conv2d_bwd_filter",
                                      "bias_grad",
                                      "conv_transpose2d_bwd_data",
                                      "conv_transpose2d_bwd_filter",
                                      "bn_bwd",
                                      "bn_bwd_reduce",
                                      "maxpool2d_bwd",
                                      "avgpool2d_bwd",
                                      "upsample2d_bwd",
                                      "dropout_bwd",
                                      "rmsnorm_bwd",
                                      "rope",
                                      "attention_bwd",
                                      "swiglu_bwd"};
    int total = 0, cross = 0, fd = 0, skips = 0;
    for (int i = 0; i < mt_op_count(); i++) {
        MT_CHECK(g_cases[i] >= 3, "(op %s ran %d cases on cpu)", mt_op_name(i), g_cases[i]);
        total += g_cases[i];
        cross += g_cross[i];
        fd += g_fd[i];
        skips += g_skips[i];
    }
    for (size_t k = 0; k < sizeof with_grad / sizeof with_grad[0]; k++) {
        int oi = op_index(with_grad[k]);
        MT_CHECK(oi >= 0 && g_fd[oi] >= 3, "(%s had %d finite-difference checks)", with_grad[k],
                 oi >= 0 ? g_fd[oi] : 0);
    }
    int backends = 0;
    for (int d = 0; d < MT_DEVICE_COUNT; d++) backends += g_have[d];
    MT_CHECK(backends == 1 || cross > 0, "(a second backend ran no comparisons)");
    printf("ops: %d cases on cpu, %d compared across backends (%d skipped: op missing), "
           "%d finite-difference checks, %d backend(s)\n",
           total, cross, skips, fd, backends);
}

/* test_ops [--require-cuda]: with the flag (the gpu-labelled run), no usable GPU means "skipped"
 * (exit 77, which ctest reports as skipped), never "passed". */
int main(int argc, char **argv) {
    bool require_cuda = argc > 1 && strcmp(argv[1], "--require-cuda") == 0;
    if (require_cuda && !mt_backend_available(MT_CUDA)) {
        printf("SKIP: %s\n",
               mt_backend_for(MT_CUDA) ? "no GPU visible" : "the CUDA backend is not compiled in");
        return 77;
    }
    mt_arena_init(&g_mem, "test_ops host", 1u << 22);
    for (int d = 0; d < MT_DEVICE_COUNT; d++) {
        if (!mt_backend_available((mt_device)d)) continue;
        if (mt_ctx_init(&g_ctx[d], (mt_device)d, 0, 2) != MT_OK) {
            fprintf(stderr, "cannot start the %s backend: %s\n", mt_device_name((mt_device)d),
                    mt_error_message());
            return 1;
        }
        g_have[d] = true;
    }
    printf("backends: cpu%s\n", g_have[MT_CUDA] ? ", cuda" : " (cuda not available)");
#define RUN(fn)                                                                                    \
    do {                                                                                           \
        MT_RUN(fn);                                                                                \
        mt_arena_reset(&g_mem);                                                                    \
    } while (0)
    RUN(test_registry);
    RUN(test_tensor_basics);
    RUN(test_f16);
    RUN(test_gemm);
    RUN(test_gemm_grad);
    RUN(test_axpy_scale);
    RUN(test_add_mul);
    RUN(test_reduce);
    RUN(test_act);
    RUN(test_softmax);
    RUN(test_cross_entropy);
    RUN(test_bce);
    RUN(test_bce_nan_mask);
    RUN(test_dice);
    RUN(test_embedding);
    RUN(test_cast);
    RUN(test_conv_pool_geometry);
    RUN(test_conv);
    RUN(test_conv_winograd);
    RUN(test_bias);
    RUN(test_conv_transpose);
    RUN(test_conv_transpose_torch);
    RUN(test_bn);
    RUN(test_pool);
    RUN(test_upsample);
    RUN(test_upsample_torch);
    RUN(test_dropout);
    RUN(test_channels);
    RUN(test_optim);
    RUN(test_sumsq);
    RUN(test_rmsnorm);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_attention_long);
    RUN(test_swiglu);
    RUN(test_llama_torch);
    RUN(test_bad_args);
    RUN(test_bad_args_layers);
    RUN(test_bad_args_decoder);
    RUN(test_bad_args_llama);
    RUN(test_not_implemented);
    RUN(test_determinism);
    RUN(test_attention_bench);
    RUN(test_census);
    for (int d = 0; d < MT_DEVICE_COUNT; d++)
        if (g_have[d]) mt_ctx_free(&g_ctx[d]);
    mt_arena_free(&g_mem);
    return mt_test_summary();
}
