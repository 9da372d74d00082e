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
#include "mt_test.h"

#define MAX_IO   4
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

static const char *act_names[] = {"relu", "gelu", "gelu_tanh", "silu"};

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
    for (int k = 0; k < 4; k++) {
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

/* Every op reports MT_ERR_UNSUPPORTED, naming itself and the backend, when an entry is missing. */
static mt_status call_by_name(mt_ctx *ctx, const char *op) {
    static float f[256];
    static int32_t ids[4];
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
    MT_CHECK(n == fields, "(registry has %d ops, mt_backend %d op fields)", n, fields);
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
    static const char *with_grad[] = {
        "gemm", "act_bwd", "softmax_bwd", "cross_entropy_bwd", "bce_logits_bwd", "embedding_bwd"};
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
    RUN(test_embedding);
    RUN(test_cast);
    RUN(test_bad_args);
    RUN(test_not_implemented);
    RUN(test_determinism);
    RUN(test_census);
    for (int d = 0; d < MT_DEVICE_COUNT; d++)
        if (g_have[d]) mt_ctx_free(&g_ctx[d]);
    mt_arena_free(&g_mem);
    return mt_test_summary();
}
