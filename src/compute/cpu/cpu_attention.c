/* Scaled dot-product attention with grouped-query heads on the CPU: a blocked ("flash") algorithm
 * that holds a block of scores at a time, never the (T, S) matrix.
 *
 * Layout. q (B,T,Hq,D), k and v (B,S,Hkv,D), as the projections write them (no transposes).
 * Query head h reads kv head g = h / rep with rep = Hq/Hkv, and the rep query heads of a group are
 * contiguous within a position. So the unit of work is (batch b, kv head g, block of query
 * positions): its rows are the (position, head of the group) pairs, rows = positions * rep, packed
 * into a (rows, D) buffer, while K and V of head g are read in place as (S, D) matrices of row
 * stride Hkv*D. One GEMM serves every query head of a group, so K and V are read once per block
 * and group rather than once per query head (decoding with a KV cache: T = 1, rows = rep).
 *
 * Forward (FlashAttention's online softmax, in f32). For each key block j of BK keys:
 *     S = scale Q K_j^T                                   (rows, BK), one sgemm
 *     m' = max(m, rowmax S);  P = exp(S - m');  l = l exp(m - m') + rowsum P
 *     O = O exp(m - m') + P V_j                           (rows, D), one sgemm
 * then out = O / l and lse = m + log l. A causal block stops after the last key its last position
 * sees, and gives the keys past each row's own limit (t + S - T) probability 0.
 *
 * Backward (FlashAttention-2), with P recomputed from lse rather than stored:
 *     delta = rowsum(dO * O)
 *     P = exp(scale Q K_j^T - lse);  dP = dO V_j^T;  dS = P * (dP - delta)
 *     dV_j += P^T dO;  dK_j += scale dS^T Q;  dQ += scale dS K_j
 * dK_j and dV_j sum over every row of the block, i.e. over positions and over the rep query heads
 * that share the kv head: the GEMM's inner dimension is repeat_kv's reduction.
 *
 * Determinism. No two threads add into the same output: a thread owns dQ of its query block and
 * the dK, dV rows of the key blocks it works on, and every sum runs in a fixed order (dQ over key
 * blocks, dK and dV over query blocks, each in increasing order) with GEMMs whose shapes depend on
 * the problem alone. The backward has two schedules that give the same bits:
 *   - one pass per (b, g): query blocks outer, key blocks inner, dQ, dK and dV together (five
 *     GEMMs per pair of blocks), B*Hkv work items;
 *   - two passes: (b, g, key block) items summing dK and dV over the query blocks, then
 *     (b, g, query block) items summing dQ over the key blocks (seven GEMMs per pair, but many
 *     more items, for a small batch with few kv heads).
 * one_pass() picks the faster for ctx->threads; test_ops checks that 1 and 3 threads agree.
 *
 * Threads. As in cpu_conv.c, the op runs in one OpenMP team of ctx->threads, each thread making
 * single-threaded sgemm calls, with OpenBLAS set to one thread for the duration of the op (the two
 * pools would otherwise spin against each other). Each thread has a workspace of a few blocks,
 * O(rows * (D + BK)) floats.
 *
 * exp. There is one exponential per score, about as much work as the score's GEMMs at D = 64,
 * and libm's expf does not vectorise; exp_f32 is Cephes' expf (within about one ulp of it) written
 * so that loops over a row vectorise. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>
#include "cpu_ops.h"

#define ROWS_BLOCK   128     /* query rows (positions x heads of a group) per block */
#define SCORES_BLOCK 16384   /* scores per block: keys per block = this / rows ... */
#define KEYS_MIN     64      /* ... but at least this many */
#define KEYS_MAX     1024    /* ... and at most this many (decoding: few rows, long blocks) */
#define PAR_MACS     1000000 /* multiply-adds below which one thread does everything */
#define LANES        8       /* partial sums and maxima of a row, for vectorised reductions */

/* ---- shapes and blocks ----------------------------------------------------------------------- */

typedef struct att {
    int64_t b, t, s, hq, hkv, d, rep;
    int64_t bq, rows; /* query positions per block, and the rows of a full block (bq * rep) */
    int64_t bk;       /* keys per block */
    int64_t qblocks, kblocks;
    int64_t ld;  /* row stride of K and V: Hkv*D */
    int64_t off; /* S - T: causal query t sees keys [0, t + off] */
    float scale;
    bool causal;
} att;

static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

static att att_of(const mt_tensor *q, const mt_tensor *k, float scale, bool causal) {
    att a = {.b = q->shape[0],
             .t = q->shape[1],
             .hq = q->shape[2],
             .d = q->shape[3],
             .s = k->shape[1],
             .hkv = k->shape[2],
             .scale = scale,
             .causal = causal};
    a.rep = a.hq / a.hkv;
    a.bq = ROWS_BLOCK / a.rep > 1 ? ROWS_BLOCK / a.rep : 1;
    a.bq = min64(a.bq, a.t);
    a.rows = a.bq * a.rep;
    a.bk = SCORES_BLOCK / a.rows;
    a.bk = a.bk < KEYS_MIN ? KEYS_MIN : a.bk > KEYS_MAX ? KEYS_MAX : a.bk;
    a.bk = min64(a.bk, a.s);
    a.qblocks = (a.t + a.bq - 1) / a.bq;
    a.kblocks = (a.s + a.bk - 1) / a.bk;
    a.ld = a.hkv * a.d;
    a.off = a.s - a.t;
    return a;
}

/* OpenBLAS takes int sizes and strides. */
static mt_status check_blas_sizes(const char *op, const att *a) {
    if (a->hq * a->d > INT_MAX || a->rows * a->bk > INT_MAX)
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "%s: %lld heads of %lld exceed the 32-bit strides of the CPU BLAS", op,
                       (long long)a->hq, (long long)a->d);
    return MT_OK;
}

/* Query block qb: positions [*t0, *t0 + return value). */
static int64_t qblock(const att *a, int64_t qb, int64_t *t0) {
    *t0 = qb * a->bq;
    return min64(a->bq, a->t - *t0);
}

/* The keys [0, return value) that some position of [t0, t0 + nt) sees. */
static int64_t keys_seen(const att *a, int64_t t0, int64_t nt) {
    return a->causal ? min64(a->s, t0 + nt + a->off) : a->s;
}

/* How many keys of the block [j0, j0 + nk) position t sees (a prefix of the block). */
static int64_t row_keys(const att *a, int64_t t, int64_t j0, int64_t nk) {
    if (!a->causal) return nk;
    int64_t n = t + a->off + 1 - j0;
    return n < 0 ? 0 : min64(n, nk);
}

/* Floats of a per-thread workspace, rounded to a cache line so threads never share one. */
static size_t round_line(size_t floats) {
    return (floats + 15) / 16 * 16;
}

/* The rows of group g of batch b at positions [t0, t0 + nt) of x (B,T,Hq,D), copied into the
 * packed buf (nt * rep, D), or from buf back into x. */
static void gather(const att *a, const float *x, int64_t b, int64_t g, int64_t t0, int64_t nt,
                   float *buf) {
    const int64_t n = a->rep * a->d;
    for (int64_t i = 0; i < nt; i++)
        memcpy(buf + i * n, x + ((b * a->t + t0 + i) * a->hq + g * a->rep) * a->d,
               (size_t)n * sizeof(float));
}

static void scatter(const att *a, const float *buf, int64_t b, int64_t g, int64_t t0, int64_t nt,
                    float *x) {
    const int64_t n = a->rep * a->d;
    for (int64_t i = 0; i < nt; i++)
        memcpy(x + ((b * a->t + t0 + i) * a->hq + g * a->rep) * a->d, buf + i * n,
               (size_t)n * sizeof(float));
}

/* Where row r (position t0 + r / rep, head g * rep + r % rep) keeps its lse in (B,Hq,T). */
static int64_t lse_index(const att *a, int64_t b, int64_t g, int64_t t0, int64_t r) {
    return (b * a->hq + g * a->rep + r % a->rep) * a->t + t0 + r / a->rep;
}

/* K or V of kv head g of batch b, as an (S, D) matrix of row stride a->ld. */
static const float *kv_head(const att *a, const float *x, int64_t b, int64_t g) {
    return x + b * a->s * a->ld + g * a->d;
}

/* ---- BLAS and arithmetic --------------------------------------------------------------------- */

/* Row-major sgemm; check_blas_sizes has made every size fit in an int. */
static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                  int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* OpenBLAS single-threaded while the op's team makes the calls; returns the setting to restore. */
static int blas_enter(void) {
    int n = openblas_get_num_threads();
    if (n != 1) openblas_set_num_threads(1);
    return n;
}

static void blas_leave(int n) {
    if (n != 1) openblas_set_num_threads(n);
}

static inline uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* exp(x) as Cephes' expf: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial, times
 * 2^n built in the exponent bits. Branch-free, so that a loop of it vectorises. Below -87 it
 * returns 0 (the result would be subnormal), above 88 infinity; NaN stays NaN. Adding 1.5 * 2^23
 * rounds to an integer that the low mantissa bits then hold, so n needs no float-to-int
 * conversion (undefined for NaN). */
static inline float exp_f32(float x) {
    const float magic = 12582912.0f;
    float xc = x < -87.0f ? -87.0f : x; /* one select per statement, or GCC will not vectorise */
    xc = xc > 88.0f ? 88.0f : xc;
    const float t = xc * 1.44269504088896341f + magic;
    const uint32_t n = bits_of(t) - bits_of(magic); /* round(xc / ln 2), two's complement */
    const float fn = t - magic;
    const float r = (xc - fn * 0.693359375f) - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    float y = p * float_of((n + 127u) << 23);
    y = x < -87.0f ? 0.0f : y;
    return x > 88.0f ? INFINITY : y;
}

/* max(m, x[0..n)), in LANES running maxima (the order does not change a maximum; a NaN is
 * skipped here and reaches the output through its exponential). */
static float row_max(const float *x, int64_t n, float m) {
    float acc[LANES];
    for (int k = 0; k < LANES; k++) acc[k] = m;
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int k = 0; k < LANES; k++) acc[k] = x[j + k] > acc[k] ? x[j + k] : acc[k];
    for (; j < n; j++) acc[0] = x[j] > acc[0] ? x[j] : acc[0];
    for (int k = 1; k < LANES; k++) acc[0] = acc[k] > acc[0] ? acc[k] : acc[0];
    return acc[0];
}

/* sum x[0..n) in LANES partial sums, added in a fixed order. */
static float row_sum(const float *x, int64_t n) {
    float acc[LANES] = {0};
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += x[j + k];
    for (; j < n; j++) acc[0] += x[j];
    for (int k = 1; k < LANES; k++) acc[0] += acc[k];
    return acc[0];
}

/* ---- forward --------------------------------------------------------------------------------- */

/* One row of a key block in the online softmax: the scores s[0, n) that the row sees (of the
 * block's nk) become exp(s - m') for the new running max m', the rest 0; the row's sum l and
 * output o (D) are rescaled by exp(m - m'). */
static void softmax_row(float *s, int64_t n, int64_t nk, float *m, float *l, float *o, int64_t d) {
    const float mx = row_max(s, n, *m);
    for (int64_t j = n; j < nk; j++) s[j] = 0.0f;
    if (mx == -INFINITY) { /* nothing seen yet: no mass */
        for (int64_t j = 0; j < n; j++) s[j] = 0.0f;
        return;
    }
    for (int64_t j = 0; j < n; j++) s[j] = exp_f32(s[j] - mx);
    const float alpha = exp_f32(*m - mx); /* 0 on the first block with keys */
    *l = *l * alpha + row_sum(s, n);
    *m = mx;
    if (alpha != 1.0f)
        for (int64_t c = 0; c < d; c++) o[c] *= alpha;
}

/* Query block qb of (b, g): out rows and lse (when not NULL). ws holds fwd_ws_floats(). */
static void fwd_block(const att *a, const float *q, const float *k, const float *v, float *out,
                      float *lse, int64_t b, int64_t g, int64_t qb, float *ws) {
    int64_t t0;
    const int64_t nt = qblock(a, qb, &t0), rows = nt * a->rep, d = a->d;
    float *qs = ws, *o = qs + a->rows * d, *p = o + a->rows * d, *m = p + a->rows * a->bk,
          *l = m + a->rows;
    gather(a, q, b, g, t0, nt, qs);
    memset(o, 0, (size_t)(rows * d) * sizeof(float));
    for (int64_t i = 0; i < rows; i++) m[i] = -INFINITY, l[i] = 0.0f;
    const float *kg = kv_head(a, k, b, g), *vg = kv_head(a, v, b, g);
    const int64_t end = keys_seen(a, t0, nt);
    for (int64_t j0 = 0; j0 < end; j0 += a->bk) {
        const int64_t nk = min64(a->bk, end - j0);
        sgemm(false, true, rows, nk, d, a->scale, qs, d, kg + j0 * a->ld, a->ld, 0.0f, p, nk);
        for (int64_t i = 0; i < rows; i++)
            softmax_row(p + i * nk, row_keys(a, t0 + i / a->rep, j0, nk), nk, &m[i], &l[i],
                        o + i * d, d);
        sgemm(false, false, rows, d, nk, 1.0f, p, nk, vg + j0 * a->ld, a->ld, 1.0f, o, d);
    }
    for (int64_t i = 0; i < rows; i++) {
        const float inv = 1.0f / l[i];
        for (int64_t c = 0; c < d; c++) o[i * d + c] *= inv;
        if (lse) lse[lse_index(a, b, g, t0, i)] = m[i] + logf(l[i]);
    }
    scatter(a, o, b, g, t0, nt, out);
}

static size_t fwd_ws_floats(const att *a) {
    return round_line((size_t)(a->rows * (2 * a->d + a->bk + 2)));
}

/* Multiply-adds of the problem (both GEMMs, as if nothing were masked). */
static bool worth_threads(const att *a) {
    return (double)a->b * a->hq * a->t * a->s * a->d * 2 > PAR_MACS;
}

mt_status mt_cpu_attention_fwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k,
                               const mt_tensor *v, float scale, bool causal, mt_tensor *out,
                               mt_tensor *lse) {
    const char *op = "attention_fwd";
    const att a = att_of(q, k, scale, causal);
    MT_TRY(check_blas_sizes(op, &a));
    const size_t per = fwd_ws_floats(&a);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *ws =
        mt_cpu_scratch(ctx, (size_t)ctx->threads * per * sizeof(float), op, "per-thread blocks");
    if (!ws) {
        mt_arena_rewind(&ctx->scratch, mark);
        return MT_ERR_NOMEM;
    }
    const float *qp = q->data, *kp = k->data, *vp = v->data;
    float *op_ = out->data, *lp = lse ? lse->data : NULL;
    const int64_t items = a.b * a.hkv * a.qblocks;
    const int blas = blas_enter();
    /* the last query blocks of a causal mask are the longest: they go first */
#pragma omp parallel for num_threads(ctx->threads) schedule(dynamic) if (worth_threads(&a))
    for (int64_t it = 0; it < items; it++) {
        const int64_t bg = it / a.qblocks, qb = a.qblocks - 1 - it % a.qblocks;
        fwd_block(&a, qp, kp, vp, op_, lp, bg / a.hkv, bg % a.hkv, qb,
                  ws + (size_t)omp_get_thread_num() * per);
    }
    blas_leave(blas);
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* ---- backward -------------------------------------------------------------------------------- */

typedef struct bwd_io {
    const float *q, *k, *v, *out, *lse, *dout;
    float *dq, *dk, *dv;
} bwd_io;

/* A thread's blocks: Q, dO and the dQ accumulator (rows, D); P and dP, then dS (rows, BK); lse
 * and delta per row. */
typedef struct bwd_ws {
    float *q, *dout, *dq, *p, *dp, *lse, *delta;
} bwd_ws;

static size_t bwd_ws_floats(const att *a) {
    return round_line((size_t)(a->rows * (3 * a->d + 2 * a->bk + 2)));
}

static bwd_ws bwd_ws_at(const att *a, float *base) {
    bwd_ws w = {.q = base};
    w.dout = w.q + a->rows * a->d;
    w.dq = w.dout + a->rows * a->d;
    w.p = w.dq + a->rows * a->d;
    w.dp = w.p + a->rows * a->bk;
    w.lse = w.dp + a->rows * a->bk;
    w.delta = w.lse + a->rows;
    return w;
}

/* Loads query block qb of (b, g): Q, dO, lse and delta = rowsum(dO * O) per row, and zeroes dQ.
 * Returns the block's position count; *t0 its first position. */
static int64_t bwd_load(const att *a, const bwd_io *io, int64_t b, int64_t g, int64_t qb,
                        const bwd_ws *w, int64_t *t0) {
    const int64_t nt = qblock(a, qb, t0), rows = nt * a->rep, d = a->d;
    gather(a, io->q, b, g, *t0, nt, w->q);
    gather(a, io->dout, b, g, *t0, nt, w->dout);
    memset(w->dq, 0, (size_t)(rows * d) * sizeof(float));
    for (int64_t i = 0; i < rows; i++) {
        const int64_t t = *t0 + i / a->rep, h = g * a->rep + i % a->rep;
        const float *o = io->out + ((b * a->t + t) * a->hq + h) * d, *dout = w->dout + i * d;
        double s = 0.0;
        for (int64_t c = 0; c < d; c++) s += (double)dout[c] * o[c];
        w->delta[i] = (float)s;
        w->lse[i] = io->lse[lse_index(a, b, g, *t0, i)];
    }
    return nt;
}

/* The pair (loaded query block at t0 of nt positions, key block kb) of (b, g): adds into w->dq
 * (want_dq) and into the dK and dV rows of the key block (want_kv). */
static void bwd_pair(const att *a, const bwd_io *io, int64_t b, int64_t g, int64_t t0, int64_t nt,
                     int64_t kb, const bwd_ws *w, bool want_dq, bool want_kv) {
    const int64_t rows = nt * a->rep, d = a->d, ld = a->ld, j0 = kb * a->bk;
    const int64_t nk = min64(a->bk, keys_seen(a, t0, nt) - j0);
    const float *kj = kv_head(a, io->k, b, g) + j0 * ld, *vj = kv_head(a, io->v, b, g) + j0 * ld;
    sgemm(false, true, rows, nk, d, a->scale, w->q, d, kj, ld, 0.0f, w->p, nk);
    sgemm(false, true, rows, nk, d, 1.0f, w->dout, d, vj, ld, 0.0f, w->dp, nk);
    for (int64_t i = 0; i < rows; i++) {
        float *p = w->p + i * nk, *dp = w->dp + i * nk;
        const int64_t n = row_keys(a, t0 + i / a->rep, j0, nk);
        const float lse = w->lse[i], delta = w->delta[i];
        for (int64_t j = 0; j < n; j++) p[j] = exp_f32(p[j] - lse);
        for (int64_t j = n; j < nk; j++) p[j] = 0.0f;
        for (int64_t j = 0; j < nk; j++) dp[j] = p[j] * (dp[j] - delta); /* dS */
    }
    if (want_kv) {
        float *dkj = io->dk + (b * a->s * a->hkv + g) * d + j0 * ld;
        float *dvj = io->dv + (b * a->s * a->hkv + g) * d + j0 * ld;
        sgemm(true, false, nk, d, rows, 1.0f, w->p, nk, w->dout, d, 1.0f, dvj, ld);
        sgemm(true, false, nk, d, rows, a->scale, w->dp, nk, w->q, d, 1.0f, dkj, ld);
    }
    if (want_dq) sgemm(false, false, rows, d, nk, a->scale, w->dp, nk, kj, ld, 1.0f, w->dq, d);
}

/* Zeroes the dK and dV rows [j0, j1) of (b, g). */
static void zero_kv(const att *a, const bwd_io *io, int64_t b, int64_t g, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; j++) {
        const int64_t at = ((b * a->s + j) * a->hkv + g) * a->d;
        memset(io->dk + at, 0, (size_t)a->d * sizeof(float));
        memset(io->dv + at, 0, (size_t)a->d * sizeof(float));
    }
}

/* Whether query block qb reaches key block kb. */
static bool pair_live(const att *a, int64_t qb, int64_t kb) {
    int64_t t0;
    const int64_t nt = qblock(a, qb, &t0);
    return kb * a->bk < keys_seen(a, t0, nt);
}

/* One pass over (b, g): every pair, query blocks outer. */
static void bwd_group(const att *a, const bwd_io *io, int64_t b, int64_t g, const bwd_ws *w) {
    zero_kv(a, io, b, g, 0, a->s);
    for (int64_t qb = 0; qb < a->qblocks; qb++) {
        int64_t t0;
        const int64_t nt = bwd_load(a, io, b, g, qb, w, &t0);
        for (int64_t kb = 0; kb < a->kblocks && pair_live(a, qb, kb); kb++)
            bwd_pair(a, io, b, g, t0, nt, kb, w, true, true);
        scatter(a, w->dq, b, g, t0, nt, io->dq);
    }
}

/* Pass one of two: dK and dV of key block kb of (b, g), over the query blocks in order. */
static void bwd_keys(const att *a, const bwd_io *io, int64_t b, int64_t g, int64_t kb,
                     const bwd_ws *w) {
    zero_kv(a, io, b, g, kb * a->bk, min64((kb + 1) * a->bk, a->s));
    for (int64_t qb = 0; qb < a->qblocks; qb++) {
        if (!pair_live(a, qb, kb)) continue;
        int64_t t0;
        const int64_t nt = bwd_load(a, io, b, g, qb, w, &t0);
        bwd_pair(a, io, b, g, t0, nt, kb, w, false, true);
    }
}

/* Pass two of two: dQ of query block qb of (b, g), over the key blocks in order. */
static void bwd_queries(const att *a, const bwd_io *io, int64_t b, int64_t g, int64_t qb,
                        const bwd_ws *w) {
    int64_t t0;
    const int64_t nt = bwd_load(a, io, b, g, qb, w, &t0);
    for (int64_t kb = 0; kb < a->kblocks && pair_live(a, qb, kb); kb++)
        bwd_pair(a, io, b, g, t0, nt, kb, w, true, false);
    scatter(a, w->dq, b, g, t0, nt, io->dq);
}

/* One pass runs B*Hkv items of five GEMM units each, ceil(items/threads) rounds of them; two
 * passes seven units, over enough items to keep every thread busy. */
static bool one_pass(const att *a, int threads) {
    const int64_t n = a->b * a->hkv, rounds = (n + threads - 1) / threads;
    return rounds * 5 * threads <= 7 * n;
}

mt_status mt_cpu_attention_bwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k,
                               const mt_tensor *v, const mt_tensor *out, const mt_tensor *lse,
                               const mt_tensor *dout, float scale, bool causal, mt_tensor *dq,
                               mt_tensor *dk, mt_tensor *dv) {
    const char *op = "attention_bwd";
    const att a = att_of(q, k, scale, causal);
    MT_TRY(check_blas_sizes(op, &a));
    const size_t per = bwd_ws_floats(&a);
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    float *ws =
        mt_cpu_scratch(ctx, (size_t)ctx->threads * per * sizeof(float), op, "per-thread blocks");
    if (!ws) {
        mt_arena_rewind(&ctx->scratch, mark);
        return MT_ERR_NOMEM;
    }
    const bwd_io io = {q->data,    k->data,  v->data,  out->data, lse->data,
                       dout->data, dq->data, dk->data, dv->data};
    const int64_t groups = a.b * a.hkv;
    const bool par = worth_threads(&a);
    const int blas = blas_enter();
    if (one_pass(&a, ctx->threads)) {
#pragma omp parallel for num_threads(ctx->threads) schedule(dynamic) if (par)
        for (int64_t bg = 0; bg < groups; bg++) {
            bwd_ws w = bwd_ws_at(&a, ws + (size_t)omp_get_thread_num() * per);
            bwd_group(&a, &io, bg / a.hkv, bg % a.hkv, &w);
        }
    } else {
#pragma omp parallel num_threads(ctx->threads) if (par)
        {
            bwd_ws w = bwd_ws_at(&a, ws + (size_t)omp_get_thread_num() * per);
            /* the passes write disjoint outputs (dK and dV, then dQ): no barrier between them */
#pragma omp for schedule(dynamic) nowait
            for (int64_t it = 0; it < groups * a.kblocks; it++) {
                const int64_t bg = it / a.kblocks, kb = it % a.kblocks;
                bwd_keys(&a, &io, bg / a.hkv, bg % a.hkv, kb, &w);
            }
#pragma omp for schedule(dynamic)
            for (int64_t it = 0; it < groups * a.qblocks; it++) {
                const int64_t bg = it / a.qblocks, qb = a.qblocks - 1 - it % a.qblocks;
                bwd_queries(&a, &io, bg / a.hkv, bg % a.hkv, qb, &w);
            }
        }
    }
    blas_leave(blas);
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}
