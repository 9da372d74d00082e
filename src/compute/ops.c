/* The public ops: argument checks, then the context's backend.
 *
 * Every check happens here, once for all backends, so that an implementation in cpu/ or cuda/ may
 * assume consistent devices, dtypes and shapes. Messages name the op (as the registry spells it)
 * and show each tensor involved, e.g.
 *     gemm: A [3,4] f32 cpu and B [5,6] f32 cpu: inner dims differ (4 vs 5)
 * Data-dependent checks (a class id out of range) belong to the backend, which sees the data.
 * Backends never see an empty output: ops with nothing to compute return here (a loss over no rows
 * is zeroed through mt_tensor_zero). */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include "backend.h"

#define DESC_MAX 96
/* A description of t in a buffer that lives until the end of the enclosing block. */
#define D(t) mt_tensor_describe((t), (char[DESC_MAX]){0}, DESC_MAX)

#define ANY_DTYPE ((mt_dtype)-1)

/* ---- shared checks --------------------------------------------------------------------------- */

static mt_status check_ctx(const char *op, const mt_ctx *ctx) {
    if (!ctx || !ctx->backend)
        return mt_fail(MT_ERR_ARG, "%s: the context is not initialised (call mt_ctx_init)", op);
    if (ctx->threads < 1)
        return mt_fail(MT_ERR_ARG, "%s: the context has %d threads (call mt_ctx_init)", op,
                       ctx->threads);
    return MT_OK;
}

/* t exists, is well formed, lives on ctx's device, has dtype (unless ANY_DTYPE) and ndim within
 * [min_dims, max_dims]. */
static mt_status check_tensor(const char *op, const char *role, const mt_ctx *ctx,
                              const mt_tensor *t, mt_dtype dtype, int min_dims, int max_dims) {
    if (!t) return mt_fail(MT_ERR_ARG, "%s: %s is NULL", op, role);
    if (t->ndim < min_dims || t->ndim > max_dims) {
        if (min_dims == max_dims)
            return mt_fail(MT_ERR_SHAPE, "%s: %s %s: expected %d dims", op, role, D(t), min_dims);
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: expected %d to %d dims", op, role, D(t), min_dims,
                       max_dims);
    }
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return mt_fail(MT_ERR_SHAPE, "%s: %s %s: negative dim", op, role, D(t));
    if (t->device != ctx->device)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s is on %s, but the context runs on %s", op, role,
                       D(t), mt_device_name(t->device), mt_device_name(ctx->device));
    if (dtype != ANY_DTYPE && t->dtype != dtype)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: expected dtype %s", op, role, D(t),
                       mt_dtype_name(dtype));
    if (!t->data && mt_tensor_numel(t) > 0)
        return mt_fail(MT_ERR_ARG, "%s: %s %s has no data", op, role, D(t));
    return MT_OK;
}

static mt_status check_same_shape(const char *op, const char *ra, const mt_tensor *a,
                                  const char *rb, const mt_tensor *b) {
    if (!mt_tensor_same_shape(a, b))
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s and %s %s: shapes differ", op, ra, D(a), rb, D(b));
    return MT_OK;
}

static mt_status check_scalar(const char *op, const char *role, const mt_tensor *t) {
    if (mt_tensor_numel(t) != 1)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: expected one element", op, role, D(t));
    return MT_OK;
}

static bool overlaps(const mt_tensor *a, const mt_tensor *b) {
    uintptr_t pa = (uintptr_t)a->data, pb = (uintptr_t)b->data;
    size_t na = mt_tensor_bytes(a), nb = mt_tensor_bytes(b);
    return na && nb && pa < pb + nb && pb < pa + na;
}

/* An output may be its input (same memory, same shape and dtype) where the op allows it, but may
 * never partly overlap one: the result would depend on the order of the loop. */
static mt_status check_alias(const char *op, const char *rout, const mt_tensor *out,
                             const char *rin, const mt_tensor *in, bool exact_ok) {
    if (!in || !overlaps(out, in)) return MT_OK;
    if (exact_ok && out->data == in->data && out->dtype == in->dtype &&
        mt_tensor_same_shape(out, in))
        return MT_OK;
    return mt_fail(MT_ERR_ARG, "%s: %s %s overlaps %s %s%s", op, rout, D(out), rin, D(in),
                   exact_ok ? " without being the same tensor" : "");
}

/* A hyperparameter that must be finite and at least lo. */
static mt_status check_hyper(const char *op, const char *name, float v, float lo) {
    if (!(v >= lo) || isinf(v))
        return mt_fail(MT_ERR_ARG, "%s: %s %g: expected a finite value >= %g", op, name, (double)v,
                       (double)lo);
    return MT_OK;
}

static mt_status not_implemented(const mt_ctx *ctx, const char *op) {
    return mt_fail(MT_ERR_UNSUPPORTED, "op '%s' is not implemented on the %s backend", op,
                   ctx->backend->name);
}

/* Calls the backend's entry for an op, or reports that it has none. The entry's field name is the
 * op's registry name (src/compute/dispatch.c). */
#define DISPATCH(field, ...)                                                                       \
    (ctx->backend->field ? ctx->backend->field(ctx, __VA_ARGS__) : not_implemented(ctx, #field))

/* ---- gemm ------------------------------------------------------------------------------------ */

static int64_t mat_rows(const mt_tensor *t) {
    return t->shape[t->ndim - 2];
}
static int64_t mat_cols(const mt_tensor *t) {
    return t->shape[t->ndim - 1];
}
static int64_t mat_batch(const mt_tensor *t) {
    return t->ndim == 3 ? t->shape[0] : 1;
}

mt_status mt_gemm(mt_ctx *ctx, bool trans_a, bool trans_b, float alpha, const mt_tensor *a,
                  const mt_tensor *b, float beta, mt_tensor *c) {
    const char *op = "gemm";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "A", ctx, a, MT_F32, 2, 3));
    MT_TRY(check_tensor(op, "B", ctx, b, MT_F32, 2, 3));
    MT_TRY(check_tensor(op, "C", ctx, c, MT_F32, 2, 3));
    const char *ta = trans_a ? " (transposed)" : "", *tb = trans_b ? " (transposed)" : "";
    int64_t m = trans_a ? mat_cols(a) : mat_rows(a), ka = trans_a ? mat_rows(a) : mat_cols(a);
    int64_t kb = trans_b ? mat_cols(b) : mat_rows(b), n = trans_b ? mat_rows(b) : mat_cols(b);
    if (ka != kb)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: A %s%s and B %s%s: inner dims differ (%" PRId64 " vs %" PRId64 ")", op,
                       D(a), ta, D(b), tb, ka, kb);
    if (mat_rows(c) != m || mat_cols(c) != n)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: C %s: expected %" PRId64 " x %" PRId64 " from A %s%s and B %s%s", op,
                       D(c), m, n, D(a), ta, D(b), tb);
    /* C's batch is the batch; A or B may have batch 1 and is then shared by every C[i]. */
    int64_t batch = mat_batch(c);
    const mt_tensor *ops[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        int64_t bi = mat_batch(ops[i]);
        if (bi != batch && bi != 1)
            return mt_fail(MT_ERR_SHAPE,
                           "%s: %s %s and C %s: batch differs (%" PRId64 " vs %" PRId64
                           "; only batch 1 is shared)",
                           op, i ? "B" : "A", D(ops[i]), D(c), bi, batch);
    }
    MT_TRY(check_alias(op, "C", c, "A", a, false));
    MT_TRY(check_alias(op, "C", c, "B", b, false));
    mt_gemm_desc d = {
        .trans_a = trans_a,
        .trans_b = trans_b,
        .m = m,
        .n = n,
        .k = ka,
        .batch = batch,
        .alpha = alpha,
        .beta = beta,
        .a = a->data,
        .b = b->data,
        .c = c->data,
        .lda = mat_cols(a),
        .ldb = mat_cols(b),
        .ldc = mat_cols(c),
        .stride_a = mat_batch(a) == 1 ? 0 : mat_rows(a) * mat_cols(a),
        .stride_b = mat_batch(b) == 1 ? 0 : mat_rows(b) * mat_cols(b),
        .stride_c = mat_rows(c) * mat_cols(c),
    };
    if (m == 0 || n == 0 || batch == 0) return MT_OK;
    return DISPATCH(gemm, &d);
}

/* ---- elementwise ----------------------------------------------------------------------------- */

mt_status mt_axpy(mt_ctx *ctx, float alpha, const mt_tensor *x, mt_tensor *y) {
    const char *op = "axpy";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "y", y));
    MT_TRY(check_alias(op, "y", y, "x", x, true));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(axpy, alpha, x, y);
}

mt_status mt_scale(mt_ctx *ctx, float alpha, mt_tensor *x) {
    const char *op = "scale";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 0, MT_MAX_DIMS));
    if (mt_tensor_numel(x) == 0) return MT_OK;
    return DISPATCH(scale, alpha, x);
}

/* b has a's shape or a's trailing dims (repeated over a's leading dims). */
static mt_status check_binary(const char *op, mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b,
                              mt_tensor *out) {
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "a", ctx, a, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "b", ctx, b, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "out", ctx, out, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "a", a, "out", out));
    bool trailing = b->ndim <= a->ndim;
    for (int i = 0; trailing && i < b->ndim; i++)
        trailing = b->shape[i] == a->shape[a->ndim - b->ndim + i];
    if (!trailing)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: a %s and b %s: b must have a's shape or a's trailing dims", op, D(a),
                       D(b));
    MT_TRY(check_alias(op, "out", out, "a", a, true));
    return check_alias(op, "out", out, "b", b, true);
}

mt_status mt_add(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out) {
    MT_TRY(check_binary("add", ctx, a, b, out));
    if (mt_tensor_numel(out) == 0) return MT_OK;
    return DISPATCH(add, a, b, out);
}

mt_status mt_mul(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out) {
    MT_TRY(check_binary("mul", ctx, a, b, out));
    if (mt_tensor_numel(out) == 0) return MT_OK;
    return DISPATCH(mul, a, b, out);
}

/* ---- reduce ---------------------------------------------------------------------------------- */

mt_status mt_reduce(mt_ctx *ctx, mt_reduce_kind kind, const mt_tensor *x, int axis,
                    mt_tensor *out) {
    const char *op = "reduce";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "out", ctx, out, MT_F32, 0, MT_MAX_DIMS));
    if (kind != MT_REDUCE_SUM && kind != MT_REDUCE_MEAN && kind != MT_REDUCE_MAX)
        return mt_fail(MT_ERR_ARG, "%s: unknown reduction kind %d", op, (int)kind);
    int ax = axis < 0 ? axis + x->ndim : axis;
    if (ax < 0 || ax >= x->ndim)
        return mt_fail(MT_ERR_ARG, "%s: axis %d is out of range for x %s", op, axis, D(x));
    mt_tensor want = *x;
    want.data = NULL;
    want.ndim = x->ndim == 1 ? 1 : x->ndim - 1;
    if (x->ndim == 1) want.shape[0] = 1;
    for (int i = ax; x->ndim > 1 && i < x->ndim - 1; i++) want.shape[i] = x->shape[i + 1];
    bool ok = x->ndim == 1 ? mt_tensor_numel(out) == 1 : mt_tensor_same_shape(out, &want);
    if (!ok)
        return mt_fail(MT_ERR_SHAPE, "%s: out %s: expected %s (x %s reduced over axis %d)", op,
                       D(out), D(&want), D(x), axis);
    int64_t outer = 1, inner = 1, n = x->shape[ax];
    for (int i = 0; i < ax; i++) outer *= x->shape[i];
    for (int i = ax + 1; i < x->ndim; i++) inner *= x->shape[i];
    if (kind == MT_REDUCE_MAX && n == 0 && outer * inner > 0)
        return mt_fail(MT_ERR_SHAPE, "%s: max of x %s over axis %d, which is empty", op, D(x),
                       axis);
    MT_TRY(check_alias(op, "out", out, "x", x, false));
    if (outer * inner == 0) return MT_OK;
    return DISPATCH(reduce, kind, x, outer, n, inner, out);
}

/* ---- activations and softmax ----------------------------------------------------------------- */

static mt_status check_act_kind(const char *op, mt_act_kind kind) {
    if (kind != MT_ACT_RELU && kind != MT_ACT_GELU && kind != MT_ACT_GELU_TANH &&
        kind != MT_ACT_SILU && kind != MT_ACT_SIGMOID)
        return mt_fail(MT_ERR_ARG, "%s: unknown activation kind %d", op, (int)kind);
    return MT_OK;
}

mt_status mt_act_fwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, mt_tensor *y) {
    const char *op = "act_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_act_kind(op, kind));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "y", y));
    MT_TRY(check_alias(op, "y", y, "x", x, true));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(act_fwd, kind, x, y);
}

mt_status mt_act_bwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, const mt_tensor *dy,
                     mt_tensor *dx) {
    const char *op = "act_bwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_act_kind(op, kind));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dy", ctx, dy, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dx", ctx, dx, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "dy", dy));
    MT_TRY(check_same_shape(op, "x", x, "dx", dx));
    MT_TRY(check_alias(op, "dx", dx, "x", x, true));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, true));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    return DISPATCH(act_bwd, kind, x, dy, dx);
}

mt_status mt_softmax_fwd(mt_ctx *ctx, bool log, const mt_tensor *x, mt_tensor *y) {
    const char *op = "softmax_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "y", y));
    MT_TRY(check_alias(op, "y", y, "x", x, true));
    if (mt_tensor_numel(x) == 0) return MT_OK;
    return DISPATCH(softmax_fwd, log, x, y);
}

mt_status mt_softmax_bwd(mt_ctx *ctx, bool log, const mt_tensor *y, const mt_tensor *dy,
                         mt_tensor *dx) {
    const char *op = "softmax_bwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dy", ctx, dy, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dx", ctx, dx, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "y", y, "dy", dy));
    MT_TRY(check_same_shape(op, "y", y, "dx", dx));
    MT_TRY(check_alias(op, "dx", dx, "y", y, true));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, true));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(softmax_bwd, log, y, dy, dx);
}

/* ---- losses ---------------------------------------------------------------------------------- */

/* logits (rows..., C) with C > 0 and targets i32 shaped like logits' leading dims. */
static mt_status check_ce(const char *op, mt_ctx *ctx, const mt_tensor *logits,
                          const mt_tensor *targets) {
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "logits", ctx, logits, MT_F32, 2, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "targets", ctx, targets, MT_I32, 1, MT_MAX_DIMS - 1));
    bool ok = targets->ndim == logits->ndim - 1;
    for (int i = 0; ok && i < targets->ndim; i++) ok = targets->shape[i] == logits->shape[i];
    if (!ok)
        return mt_fail(MT_ERR_SHAPE, "%s: logits %s and targets %s: expected one target per row",
                       op, D(logits), D(targets));
    if (mat_cols(logits) == 0)
        return mt_fail(MT_ERR_SHAPE, "%s: logits %s: no classes", op, D(logits));
    return MT_OK;
}

mt_status mt_cross_entropy_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                               int ignore_index, mt_tensor *loss) {
    const char *op = "cross_entropy_fwd";
    MT_TRY(check_ce(op, ctx, logits, targets));
    MT_TRY(check_tensor(op, "loss", ctx, loss, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_scalar(op, "loss", loss));
    MT_TRY(check_alias(op, "loss", loss, "logits", logits, false));
    MT_TRY(check_alias(op, "loss", loss, "targets", targets, false));
    if (mt_tensor_numel(logits) == 0) return mt_tensor_zero(ctx, loss);
    return DISPATCH(cross_entropy_fwd, logits, targets, ignore_index, loss);
}

mt_status mt_cross_entropy_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                               int ignore_index, float dloss, mt_tensor *dlogits) {
    const char *op = "cross_entropy_bwd";
    MT_TRY(check_ce(op, ctx, logits, targets));
    MT_TRY(check_tensor(op, "dlogits", ctx, dlogits, MT_F32, 2, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "logits", logits, "dlogits", dlogits));
    MT_TRY(check_alias(op, "dlogits", dlogits, "logits", logits, true));
    MT_TRY(check_alias(op, "dlogits", dlogits, "targets", targets, false));
    if (mt_tensor_numel(logits) == 0) return MT_OK;
    return DISPATCH(cross_entropy_bwd, logits, targets, ignore_index, dloss, dlogits);
}

static mt_status check_bce(const char *op, mt_ctx *ctx, const mt_tensor *logits,
                           const mt_tensor *targets, const mt_tensor *pos_weight) {
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "logits", ctx, logits, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "targets", ctx, targets, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "logits", logits, "targets", targets));
    if (pos_weight) {
        MT_TRY(check_tensor(op, "pos_weight", ctx, pos_weight, MT_F32, 1, 1));
        if (pos_weight->shape[0] != mat_cols(logits))
            return mt_fail(MT_ERR_SHAPE,
                           "%s: pos_weight %s and logits %s: expected one weight per label "
                           "(%" PRId64 ")",
                           op, D(pos_weight), D(logits), mat_cols(logits));
    }
    return MT_OK;
}

mt_status mt_bce_logits_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                            const mt_tensor *pos_weight, mt_tensor *loss) {
    const char *op = "bce_logits_fwd";
    MT_TRY(check_bce(op, ctx, logits, targets, pos_weight));
    MT_TRY(check_tensor(op, "loss", ctx, loss, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_scalar(op, "loss", loss));
    MT_TRY(check_alias(op, "loss", loss, "logits", logits, false));
    MT_TRY(check_alias(op, "loss", loss, "targets", targets, false));
    MT_TRY(check_alias(op, "loss", loss, "pos_weight", pos_weight, false));
    if (mt_tensor_numel(logits) == 0) return mt_tensor_zero(ctx, loss);
    return DISPATCH(bce_logits_fwd, logits, targets, pos_weight, loss);
}

mt_status mt_bce_logits_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                            const mt_tensor *pos_weight, float dloss, mt_tensor *dlogits) {
    const char *op = "bce_logits_bwd";
    MT_TRY(check_bce(op, ctx, logits, targets, pos_weight));
    MT_TRY(check_tensor(op, "dlogits", ctx, dlogits, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "logits", logits, "dlogits", dlogits));
    MT_TRY(check_alias(op, "dlogits", dlogits, "logits", logits, true));
    MT_TRY(check_alias(op, "dlogits", dlogits, "targets", targets, true));
    MT_TRY(check_alias(op, "dlogits", dlogits, "pos_weight", pos_weight, false));
    if (mt_tensor_numel(logits) == 0) return MT_OK;
    return DISPATCH(bce_logits_bwd, logits, targets, pos_weight, dloss, dlogits);
}

/* ---- embedding ------------------------------------------------------------------------------- */

/* ids (N...) i32 and rows (N..., D) f32. */
static mt_status check_rows_of_ids(const char *op, mt_ctx *ctx, const mt_tensor *ids,
                                   const char *rrows, const mt_tensor *rows, int64_t d) {
    MT_TRY(check_tensor(op, "ids", ctx, ids, MT_I32, 1, MT_MAX_DIMS - 1));
    MT_TRY(check_tensor(op, rrows, ctx, rows, MT_F32, 2, MT_MAX_DIMS));
    bool ok = rows->ndim == ids->ndim + 1 && mat_cols(rows) == d;
    for (int i = 0; ok && i < ids->ndim; i++) ok = rows->shape[i] == ids->shape[i];
    if (!ok)
        return mt_fail(MT_ERR_SHAPE, "%s: ids %s and %s %s: expected one row of %" PRId64 " per id",
                       op, D(ids), rrows, D(rows), d);
    return MT_OK;
}

mt_status mt_embedding_fwd(mt_ctx *ctx, const mt_tensor *table, const mt_tensor *ids,
                           mt_tensor *out) {
    const char *op = "embedding_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "table", ctx, table, MT_F32, 2, 2));
    MT_TRY(check_rows_of_ids(op, ctx, ids, "out", out, table->shape[1]));
    MT_TRY(check_alias(op, "out", out, "table", table, false));
    MT_TRY(check_alias(op, "out", out, "ids", ids, false));
    if (mt_tensor_numel(out) == 0) return MT_OK;
    return DISPATCH(embedding_fwd, table, ids, out);
}

mt_status mt_embedding_bwd(mt_ctx *ctx, const mt_tensor *ids, const mt_tensor *dout,
                           mt_tensor *dtable) {
    const char *op = "embedding_bwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "dtable", ctx, dtable, MT_F32, 2, 2));
    MT_TRY(check_rows_of_ids(op, ctx, ids, "dout", dout, dtable->shape[1]));
    MT_TRY(check_alias(op, "dtable", dtable, "dout", dout, false));
    MT_TRY(check_alias(op, "dtable", dtable, "ids", ids, false));
    if (mt_tensor_numel(dout) == 0) return MT_OK;
    return DISPATCH(embedding_bwd, ids, dout, dtable);
}

/* ---- cast ------------------------------------------------------------------------------------ */

static bool cast_supported(mt_dtype from, mt_dtype to) {
    if (from == MT_F32) return to == MT_BF16 || to == MT_F16;
    if (to == MT_F32)
        return from == MT_BF16 || from == MT_F16 || from == MT_U8 || from == MT_U16 ||
               from == MT_I32;
    return false;
}

mt_status mt_cast(mt_ctx *ctx, const mt_tensor *src, mt_tensor *dst) {
    const char *op = "cast";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "src", ctx, src, ANY_DTYPE, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dst", ctx, dst, ANY_DTYPE, 0, MT_MAX_DIMS));
    if (mt_tensor_numel(src) != mt_tensor_numel(dst))
        return mt_fail(MT_ERR_SHAPE, "%s: src %s and dst %s: element counts differ", op, D(src),
                       D(dst));
    if (src->dtype == dst->dtype) return mt_tensor_copy(ctx, dst, src);
    if (!cast_supported(src->dtype, dst->dtype))
        return mt_fail(MT_ERR_UNSUPPORTED,
                       "%s: src %s to dst %s: %s -> %s is not supported (f32 <-> bf16/f16, "
                       "u8/u16/i32 -> f32)",
                       op, D(src), D(dst), mt_dtype_name(src->dtype), mt_dtype_name(dst->dtype));
    MT_TRY(check_alias(op, "dst", dst, "src", src, false));
    if (mt_tensor_numel(src) == 0) return MT_OK;
    return DISPATCH(cast, src, dst);
}

/* ---- geometry -------------------------------------------------------------------------------- */

/* Floor division (C's / truncates towards zero; a negative numerator must round down). */
static int64_t div_floor(int64_t a, int64_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

int64_t mt_conv2d_out_dim(int64_t in, int64_t k, int stride, int pad, int dil) {
    if (stride < 1 || dil < 1 || pad < 0 || k < 1) return 0;
    int64_t span = in + 2 * (int64_t)pad - (int64_t)dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
}

/* PyTorch's pooling_output_shape: with ceil_mode the last window may hang over the end, but must
 * start inside the input or its left padding. */
int64_t mt_pool2d_out_dim(int64_t in, int k, int stride, int pad, bool ceil_mode) {
    if (stride < 1 || k < 1 || pad < 0) return 0;
    int64_t out =
        div_floor(in + 2 * (int64_t)pad - (k - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
    if (ceil_mode && out > 0 && (out - 1) * stride >= in + pad) out--;
    return out;
}

/* t is a 4-D NHWC tensor of dtype (messages call it role). */
static mt_status check_nhwc(const char *op, const char *role, const mt_ctx *ctx, const mt_tensor *t,
                            mt_dtype dtype) {
    return check_tensor(op, role, ctx, t, dtype, 4, 4);
}

/* t has exactly the given shape (a description of what it should be is in the message). */
static mt_status check_shape_is(const char *op, const char *role, const mt_tensor *t, int ndim,
                                const int64_t *shape, const char *from) {
    mt_tensor want = mt_tensor_view(NULL, t->dtype, t->device, ndim, shape);
    if (!mt_tensor_same_shape(t, &want))
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: expected %s%s", op, role, D(t), D(&want), from);
    return MT_OK;
}

/* ---- convolution ----------------------------------------------------------------------------- */

/* Resolves and checks the geometry of a convolution from the input-shaped tensor x (the input, or
 * its gradient: role names it) and the filters w. */
static mt_status check_conv_params(const char *op, const mt_conv2d_params *p) {
    if (!p) return mt_fail(MT_ERR_ARG, "%s: params is NULL", op);
    if (p->stride_h < 1 || p->stride_w < 1)
        return mt_fail(MT_ERR_ARG, "%s: stride %dx%d: expected at least 1", op, p->stride_h,
                       p->stride_w);
    if (p->dil_h < 1 || p->dil_w < 1)
        return mt_fail(MT_ERR_ARG, "%s: dilation %dx%d: expected at least 1", op, p->dil_h,
                       p->dil_w);
    if (p->pad_h < 0 || p->pad_w < 0)
        return mt_fail(MT_ERR_ARG, "%s: padding %dx%d: expected at least 0", op, p->pad_h,
                       p->pad_w);
    if (p->groups < 1)
        return mt_fail(MT_ERR_ARG, "%s: groups %d: expected at least 1", op, p->groups);
    return MT_OK;
}

static mt_status conv_geometry(const char *op, const mt_conv2d_params *p, const char *xrole,
                               const mt_tensor *x, const char *wrole, const mt_tensor *w,
                               mt_conv2d_desc *d) {
    MT_TRY(check_conv_params(op, p));
    *d = (mt_conv2d_desc){.n = x->shape[0],
                          .h = x->shape[1],
                          .w = x->shape[2],
                          .c = x->shape[3],
                          .k = w->shape[0],
                          .r = w->shape[1],
                          .s = w->shape[2],
                          .stride_h = p->stride_h,
                          .stride_w = p->stride_w,
                          .pad_h = p->pad_h,
                          .pad_w = p->pad_w,
                          .dil_h = p->dil_h,
                          .dil_w = p->dil_w,
                          .groups = p->groups};
    if (d->c < 1) return mt_fail(MT_ERR_SHAPE, "%s: %s %s: no channels", op, xrole, D(x));
    if (d->r < 1 || d->s < 1)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: empty kernel", op, wrole, D(w));
    if (d->c % p->groups)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s: groups %d does not divide its %" PRId64 " channels", op, xrole,
                       D(x), p->groups, d->c);
    if (d->k % p->groups)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: groups %d does not divide its %" PRId64 " filters",
                       op, wrole, D(w), p->groups, d->k);
    if (w->shape[3] != d->c / p->groups)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s and %s %s: expected %" PRId64 " channels per filter (C/groups = "
                       "%" PRId64 "/%d)",
                       op, xrole, D(x), wrole, D(w), d->c / p->groups, d->c, p->groups);
    d->p = mt_conv2d_out_dim(d->h, d->r, p->stride_h, p->pad_h, p->dil_h);
    d->q = mt_conv2d_out_dim(d->w, d->s, p->stride_w, p->pad_w, p->dil_w);
    if (d->p < 1 || d->q < 1)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s and %s %s with padding %dx%d and dilation %dx%d: the kernel is "
                       "larger than the padded input (no output)",
                       op, xrole, D(x), wrole, D(w), p->pad_h, p->pad_w, p->dil_h, p->dil_w);
    return MT_OK;
}

/* The output-shaped tensor y (or dy) is (N,P,Q,K) for the geometry d. */
static mt_status check_conv_out(const char *op, const char *role, const mt_tensor *y,
                                const mt_conv2d_desc *d) {
    char from[128];
    snprintf(from, sizeof from, " (stride %dx%d, padding %dx%d, dilation %dx%d)", d->stride_h,
             d->stride_w, d->pad_h, d->pad_w, d->dil_h, d->dil_w);
    return check_shape_is(op, role, y, 4, (int64_t[]){d->n, d->p, d->q, d->k}, from);
}

static mt_status check_conv_bias(const char *op, const char *role, mt_ctx *ctx,
                                 const mt_tensor *bias, const mt_conv2d_desc *d) {
    if (!bias) return MT_OK;
    MT_TRY(check_tensor(op, role, ctx, bias, MT_F32, 1, 1));
    return check_shape_is(op, role, bias, 1, (int64_t[]){d->k}, " (one per filter)");
}

mt_status mt_conv2d_fwd(mt_ctx *ctx, const mt_conv2d_params *p, const mt_tensor *x,
                        const mt_tensor *w, const mt_tensor *bias, mt_tensor *y) {
    const char *op = "conv2d_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "x", ctx, x, MT_F32));
    MT_TRY(check_nhwc(op, "w", ctx, w, MT_F32));
    MT_TRY(check_nhwc(op, "y", ctx, y, MT_F32));
    mt_conv2d_desc d;
    MT_TRY(conv_geometry(op, p, "x", x, "w", w, &d));
    MT_TRY(check_conv_bias(op, "bias", ctx, bias, &d));
    MT_TRY(check_conv_out(op, "y", y, &d));
    MT_TRY(check_alias(op, "y", y, "x", x, false));
    MT_TRY(check_alias(op, "y", y, "w", w, false));
    MT_TRY(check_alias(op, "y", y, "bias", bias, false));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(conv2d_fwd, &d, x, w, bias, y);
}

mt_status mt_conv2d_bwd_data(mt_ctx *ctx, const mt_conv2d_params *p, const mt_tensor *dy,
                             const mt_tensor *w, mt_tensor *dx) {
    const char *op = "conv2d_bwd_data";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "dy", ctx, dy, MT_F32));
    MT_TRY(check_nhwc(op, "w", ctx, w, MT_F32));
    MT_TRY(check_nhwc(op, "dx", ctx, dx, MT_F32));
    mt_conv2d_desc d;
    MT_TRY(conv_geometry(op, p, "dx", dx, "w", w, &d));
    MT_TRY(check_conv_out(op, "dy", dy, &d));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, false));
    MT_TRY(check_alias(op, "dx", dx, "w", w, false));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    if (d.k == 0) return mt_tensor_zero(ctx, dx); /* no filters: x does not reach y */
    return DISPATCH(conv2d_bwd_data, &d, dy, w, dx);
}

mt_status mt_conv2d_bwd_filter(mt_ctx *ctx, const mt_conv2d_params *p, const mt_tensor *x,
                               const mt_tensor *dy, mt_tensor *dw, mt_tensor *dbias) {
    const char *op = "conv2d_bwd_filter";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "x", ctx, x, MT_F32));
    MT_TRY(check_nhwc(op, "dy", ctx, dy, MT_F32));
    MT_TRY(check_nhwc(op, "dw", ctx, dw, MT_F32));
    mt_conv2d_desc d;
    MT_TRY(conv_geometry(op, p, "x", x, "dw", dw, &d));
    MT_TRY(check_conv_bias(op, "dbias", ctx, dbias, &d));
    MT_TRY(check_conv_out(op, "dy", dy, &d));
    const mt_tensor *ins[] = {x, dy};
    const char *in_roles[] = {"x", "dy"};
    for (int i = 0; i < 2; i++) {
        MT_TRY(check_alias(op, "dw", dw, in_roles[i], ins[i], false));
        if (dbias) MT_TRY(check_alias(op, "dbias", dbias, in_roles[i], ins[i], false));
    }
    if (dbias) MT_TRY(check_alias(op, "dbias", dbias, "dw", dw, false));
    if (mt_tensor_numel(dw) == 0 || d.n == 0) return MT_OK; /* nothing to add */
    return DISPATCH(conv2d_bwd_filter, &d, x, dy, dw, dbias);
}

/* ---- per-channel bias ------------------------------------------------------------------------ */

/* t (rows..., C) and a per-channel vector v (C). */
static mt_status check_bias_pair(const char *op, mt_ctx *ctx, const char *rt, const mt_tensor *t,
                                 const char *rv, const mt_tensor *v) {
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, rt, ctx, t, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, rv, ctx, v, MT_F32, 1, 1));
    if (v->shape[0] != mat_cols(t))
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s and %s %s: expected one value per channel (%" PRId64 ")", op, rv,
                       D(v), rt, D(t), mat_cols(t));
    return MT_OK;
}

mt_status mt_bias_add(mt_ctx *ctx, const mt_tensor *bias, mt_tensor *x) {
    const char *op = "bias_add";
    MT_TRY(check_bias_pair(op, ctx, "x", x, "bias", bias));
    MT_TRY(check_alias(op, "x", x, "bias", bias, false));
    if (mt_tensor_numel(x) == 0) return MT_OK;
    return DISPATCH(bias_add, bias, x);
}

mt_status mt_bias_grad(mt_ctx *ctx, const mt_tensor *dy, mt_tensor *dbias) {
    const char *op = "bias_grad";
    MT_TRY(check_bias_pair(op, ctx, "dy", dy, "dbias", dbias));
    MT_TRY(check_alias(op, "dbias", dbias, "dy", dy, false));
    if (mt_tensor_numel(dy) == 0) return MT_OK; /* adds nothing */
    return DISPATCH(bias_grad, dy, dbias);
}

/* ---- transposed convolution ------------------------------------------------------------------ */

/* A transposed convolution x (N,H,W,C) -> y (N,P,Q,K) with filters w (C,R,S,K/groups) is the
 * adjoint of the convolution y -> x with the same filters and geometry. So its three passes are
 * that convolution's passes with the roles swapped, and every backend with convolutions runs it:
 *     forward      y  = conv2d_bwd_data(dy := x)   (+ bias_add)
 *     backward x   dx = conv2d_fwd(x := dy)
 *     backward w   dw += conv2d_bwd_filter(x := dy, dy := x)   (+ bias_grad for dbias)
 * The descriptor below is that convolution's: input (N,P,Q,K), filters (C,R,S,K/groups), output
 * (N,H,W,C). With 0 <= out_pad < stride the convolution's output size from P is exactly H. */

/* Whether ctx's backend has every entry a composed op runs (dispatch.c lists them). */
static mt_status check_composed(const mt_ctx *ctx, const char *op) {
    return mt_backend_supports(ctx->backend, op) ? MT_OK : not_implemented(ctx, op);
}

/* Resolves the geometry from the input-shaped tensor x (or dx: xrole) and the filters w (or dw). */
static mt_status conv_t_geometry(const char *op, const mt_conv2d_params *p, int out_pad_h,
                                 int out_pad_w, const char *xrole, const mt_tensor *x,
                                 const char *wrole, const mt_tensor *w, mt_conv2d_desc *d) {
    MT_TRY(check_conv_params(op, p));
    if (out_pad_h < 0 || out_pad_w < 0 || out_pad_h >= p->stride_h || out_pad_w >= p->stride_w)
        return mt_fail(MT_ERR_ARG,
                       "%s: output padding %dx%d with stride %dx%d: expected at least 0 and "
                       "less than the stride",
                       op, out_pad_h, out_pad_w, p->stride_h, p->stride_w);
    int64_t n = x->shape[0], h = x->shape[1], wd = x->shape[2], c = x->shape[3];
    int64_t r = w->shape[1], s = w->shape[2], kg = w->shape[3];
    if (c < 1) return mt_fail(MT_ERR_SHAPE, "%s: %s %s: no channels", op, xrole, D(x));
    if (h < 1 || wd < 1) return mt_fail(MT_ERR_SHAPE, "%s: %s %s: empty map", op, xrole, D(x));
    if (r < 1 || s < 1) return mt_fail(MT_ERR_SHAPE, "%s: %s %s: empty kernel", op, wrole, D(w));
    if (kg < 1)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: no output channels per group", op, wrole, D(w));
    if (c % p->groups)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s: groups %d does not divide its %" PRId64 " channels", op, xrole,
                       D(x), p->groups, c);
    if (w->shape[0] != c)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s and %s %s: expected %" PRId64
                       " filters, one per input channel (w is (C,R,S,K/groups))",
                       op, xrole, D(x), wrole, D(w), c);
    int64_t pp =
        (h - 1) * p->stride_h - 2 * (int64_t)p->pad_h + (int64_t)p->dil_h * (r - 1) + 1 + out_pad_h;
    int64_t qq = (wd - 1) * p->stride_w - 2 * (int64_t)p->pad_w + (int64_t)p->dil_w * (s - 1) + 1 +
                 out_pad_w;
    if (pp < 1 || qq < 1)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s and %s %s with stride %dx%d and padding %dx%d: the padding "
                       "removes the whole output",
                       op, xrole, D(x), wrole, D(w), p->stride_h, p->stride_w, p->pad_h, p->pad_w);
    *d = (mt_conv2d_desc){.n = n,
                          .h = pp,
                          .w = qq,
                          .c = kg * p->groups,
                          .k = c,
                          .r = r,
                          .s = s,
                          .p = h,
                          .q = wd,
                          .stride_h = p->stride_h,
                          .stride_w = p->stride_w,
                          .pad_h = p->pad_h,
                          .pad_w = p->pad_w,
                          .dil_h = p->dil_h,
                          .dil_w = p->dil_w,
                          .groups = p->groups};
    return MT_OK;
}

/* The output-shaped tensor y (or dy) is (N,P,Q,K) for the adjoint convolution's descriptor d. */
static mt_status check_conv_t_out(const char *op, const char *role, const mt_tensor *y,
                                  const mt_conv2d_desc *d, int out_pad_h, int out_pad_w) {
    char from[160];
    snprintf(from, sizeof from,
             " (stride %dx%d, padding %dx%d, dilation %dx%d, output padding %dx%d)", d->stride_h,
             d->stride_w, d->pad_h, d->pad_w, d->dil_h, d->dil_w, out_pad_h, out_pad_w);
    return check_shape_is(op, role, y, 4, (int64_t[]){d->n, d->h, d->w, d->c}, from);
}

static mt_status check_conv_t_bias(const char *op, const char *role, mt_ctx *ctx,
                                   const mt_tensor *bias, const mt_conv2d_desc *d) {
    if (!bias) return MT_OK;
    MT_TRY(check_tensor(op, role, ctx, bias, MT_F32, 1, 1));
    return check_shape_is(op, role, bias, 1, (int64_t[]){d->c}, " (one per output channel)");
}

mt_status mt_conv_transpose2d_fwd(mt_ctx *ctx, const mt_conv2d_params *p, int out_pad_h,
                                  int out_pad_w, const mt_tensor *x, const mt_tensor *w,
                                  const mt_tensor *bias, mt_tensor *y) {
    const char *op = "conv_transpose2d_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "x", ctx, x, MT_F32));
    MT_TRY(check_nhwc(op, "w", ctx, w, MT_F32));
    MT_TRY(check_nhwc(op, "y", ctx, y, MT_F32));
    mt_conv2d_desc d;
    MT_TRY(conv_t_geometry(op, p, out_pad_h, out_pad_w, "x", x, "w", w, &d));
    MT_TRY(check_conv_t_bias(op, "bias", ctx, bias, &d));
    MT_TRY(check_conv_t_out(op, "y", y, &d, out_pad_h, out_pad_w));
    MT_TRY(check_alias(op, "y", y, "x", x, false));
    MT_TRY(check_alias(op, "y", y, "w", w, false));
    MT_TRY(check_alias(op, "y", y, "bias", bias, false));
    MT_TRY(check_composed(ctx, op));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    MT_TRY(ctx->backend->conv2d_bwd_data(ctx, &d, x, w, y));
    return bias ? ctx->backend->bias_add(ctx, bias, y) : MT_OK;
}

mt_status mt_conv_transpose2d_bwd_data(mt_ctx *ctx, const mt_conv2d_params *p, int out_pad_h,
                                       int out_pad_w, const mt_tensor *dy, const mt_tensor *w,
                                       mt_tensor *dx) {
    const char *op = "conv_transpose2d_bwd_data";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "dy", ctx, dy, MT_F32));
    MT_TRY(check_nhwc(op, "w", ctx, w, MT_F32));
    MT_TRY(check_nhwc(op, "dx", ctx, dx, MT_F32));
    mt_conv2d_desc d;
    MT_TRY(conv_t_geometry(op, p, out_pad_h, out_pad_w, "dx", dx, "w", w, &d));
    MT_TRY(check_conv_t_out(op, "dy", dy, &d, out_pad_h, out_pad_w));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, false));
    MT_TRY(check_alias(op, "dx", dx, "w", w, false));
    MT_TRY(check_composed(ctx, op));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    return ctx->backend->conv2d_fwd(ctx, &d, dy, w, NULL, dx);
}

mt_status mt_conv_transpose2d_bwd_filter(mt_ctx *ctx, const mt_conv2d_params *p, int out_pad_h,
                                         int out_pad_w, const mt_tensor *x, const mt_tensor *dy,
                                         mt_tensor *dw, mt_tensor *dbias) {
    const char *op = "conv_transpose2d_bwd_filter";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "x", ctx, x, MT_F32));
    MT_TRY(check_nhwc(op, "dy", ctx, dy, MT_F32));
    MT_TRY(check_nhwc(op, "dw", ctx, dw, MT_F32));
    mt_conv2d_desc d;
    MT_TRY(conv_t_geometry(op, p, out_pad_h, out_pad_w, "x", x, "dw", dw, &d));
    MT_TRY(check_conv_t_bias(op, "dbias", ctx, dbias, &d));
    MT_TRY(check_conv_t_out(op, "dy", dy, &d, out_pad_h, out_pad_w));
    const mt_tensor *ins[] = {x, dy};
    const char *in_roles[] = {"x", "dy"};
    for (int i = 0; i < 2; i++) {
        MT_TRY(check_alias(op, "dw", dw, in_roles[i], ins[i], false));
        if (dbias) MT_TRY(check_alias(op, "dbias", dbias, in_roles[i], ins[i], false));
    }
    if (dbias) MT_TRY(check_alias(op, "dbias", dbias, "dw", dw, false));
    MT_TRY(check_composed(ctx, op));
    if (d.n == 0) return MT_OK; /* nothing to add */
    MT_TRY(ctx->backend->conv2d_bwd_filter(ctx, &d, dy, x, dw, NULL));
    return dbias ? ctx->backend->bias_grad(ctx, dy, dbias) : MT_OK;
}

/* ---- batch norm ------------------------------------------------------------------------------ */

/* x (rows..., C) with C >= 1; returns C. */
static mt_status check_bn_x(const char *op, const char *role, mt_ctx *ctx, const mt_tensor *x,
                            int64_t *c) {
    MT_TRY(check_tensor(op, role, ctx, x, MT_F32, 1, MT_MAX_DIMS));
    *c = mat_cols(x);
    if (*c < 1) return mt_fail(MT_ERR_SHAPE, "%s: %s %s: no channels", op, role, D(x));
    return MT_OK;
}

/* A per-channel vector (C); optional ones may be NULL. */
static mt_status check_bn_vec(const char *op, const char *role, mt_ctx *ctx, const mt_tensor *v,
                              int64_t c, bool optional) {
    if (!v && optional) return MT_OK;
    MT_TRY(check_tensor(op, role, ctx, v, MT_F32, 1, 1));
    return check_shape_is(op, role, v, 1, (int64_t[]){c}, " (one per channel)");
}

static mt_status check_eps(const char *op, float eps) {
    if (!(eps >= 0.0f) || isinf(eps))
        return mt_fail(MT_ERR_ARG, "%s: eps %g: expected a finite value >= 0", op, (double)eps);
    return MT_OK;
}

mt_status mt_bn_stats(mt_ctx *ctx, const mt_tensor *x, mt_tensor *mean, mt_tensor *var) {
    const char *op = "bn_stats";
    int64_t c;
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_bn_x(op, "x", ctx, x, &c));
    MT_TRY(check_bn_vec(op, "mean", ctx, mean, c, false));
    MT_TRY(check_bn_vec(op, "var", ctx, var, c, false));
    if (mt_tensor_numel(x) == 0)
        return mt_fail(MT_ERR_SHAPE, "%s: x %s has no rows to take statistics of", op, D(x));
    MT_TRY(check_alias(op, "mean", mean, "x", x, false));
    MT_TRY(check_alias(op, "var", var, "x", x, false));
    MT_TRY(check_alias(op, "var", var, "mean", mean, false));
    return DISPATCH(bn_stats, x, mean, var);
}

mt_status mt_bn_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *mean, const mt_tensor *var,
                    float eps, const mt_tensor *gamma, const mt_tensor *beta, mt_tensor *y) {
    const char *op = "bn_fwd";
    int64_t c;
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_eps(op, eps));
    MT_TRY(check_bn_x(op, "x", ctx, x, &c));
    MT_TRY(check_bn_vec(op, "mean", ctx, mean, c, false));
    MT_TRY(check_bn_vec(op, "var", ctx, var, c, false));
    MT_TRY(check_bn_vec(op, "gamma", ctx, gamma, c, true));
    MT_TRY(check_bn_vec(op, "beta", ctx, beta, c, true));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "y", y));
    MT_TRY(check_alias(op, "y", y, "x", x, true));
    const mt_tensor *vecs[] = {mean, var, gamma, beta};
    const char *roles[] = {"mean", "var", "gamma", "beta"};
    for (int i = 0; i < 4; i++) MT_TRY(check_alias(op, "y", y, roles[i], vecs[i], false));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(bn_fwd, x, mean, var, eps, gamma, beta, y);
}

mt_status mt_bn_bwd_reduce(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy,
                           const mt_tensor *mean, const mt_tensor *var, float eps,
                           mt_tensor *sum_dy, mt_tensor *sum_dy_xhat) {
    const char *op = "bn_bwd_reduce";
    int64_t c;
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_eps(op, eps));
    MT_TRY(check_bn_x(op, "x", ctx, x, &c));
    MT_TRY(check_tensor(op, "dy", ctx, dy, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "dy", dy));
    MT_TRY(check_bn_vec(op, "mean", ctx, mean, c, false));
    MT_TRY(check_bn_vec(op, "var", ctx, var, c, false));
    MT_TRY(check_bn_vec(op, "sum_dy", ctx, sum_dy, c, false));
    MT_TRY(check_bn_vec(op, "sum_dy_xhat", ctx, sum_dy_xhat, c, false));
    const mt_tensor *ins[] = {x, dy, mean, var};
    const char *roles[] = {"x", "dy", "mean", "var"};
    for (int i = 0; i < 4; i++) {
        MT_TRY(check_alias(op, "sum_dy", sum_dy, roles[i], ins[i], false));
        MT_TRY(check_alias(op, "sum_dy_xhat", sum_dy_xhat, roles[i], ins[i], false));
    }
    MT_TRY(check_alias(op, "sum_dy_xhat", sum_dy_xhat, "sum_dy", sum_dy, false));
    return DISPATCH(bn_bwd_reduce, x, dy, mean, var, eps, sum_dy, sum_dy_xhat);
}

mt_status mt_bn_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy, const mt_tensor *mean,
                    const mt_tensor *var, float eps, const mt_tensor *gamma,
                    const mt_tensor *sum_dy, const mt_tensor *sum_dy_xhat, double count,
                    bool batch_stats, mt_tensor *dx) {
    const char *op = "bn_bwd";
    int64_t c;
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_eps(op, eps));
    MT_TRY(check_bn_x(op, "x", ctx, x, &c));
    MT_TRY(check_tensor(op, "dy", ctx, dy, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dx", ctx, dx, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "dy", dy));
    MT_TRY(check_same_shape(op, "x", x, "dx", dx));
    MT_TRY(check_bn_vec(op, "mean", ctx, mean, c, false));
    MT_TRY(check_bn_vec(op, "var", ctx, var, c, false));
    MT_TRY(check_bn_vec(op, "gamma", ctx, gamma, c, true));
    MT_TRY(check_bn_vec(op, "sum_dy", ctx, sum_dy, c, !batch_stats));
    MT_TRY(check_bn_vec(op, "sum_dy_xhat", ctx, sum_dy_xhat, c, !batch_stats));
    if (batch_stats && !(count > 0 && isfinite(count)))
        return mt_fail(MT_ERR_ARG,
                       "%s: count %g: expected the number of rows (> 0) the batch "
                       "statistics covered",
                       op, count);
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, true));
    const mt_tensor *ins[] = {x, mean, var, gamma, sum_dy, sum_dy_xhat};
    const char *roles[] = {"x", "mean", "var", "gamma", "sum_dy", "sum_dy_xhat"};
    for (int i = 0; i < 6; i++) MT_TRY(check_alias(op, "dx", dx, roles[i], ins[i], false));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    return DISPATCH(bn_bwd, x, dy, mean, var, eps, gamma, batch_stats ? sum_dy : NULL,
                    batch_stats ? sum_dy_xhat : NULL, count, batch_stats, dx);
}

/* ---- pooling --------------------------------------------------------------------------------- */

/* Resolves and checks a pooling's geometry from the input-shaped tensor x (role names it). */
static mt_status pool_geometry(const char *op, const mt_pool2d_params *p, const char *xrole,
                               const mt_tensor *x, mt_pool2d_desc *d) {
    if (!p) return mt_fail(MT_ERR_ARG, "%s: params is NULL", op);
    if (p->kh < 1 || p->kw < 1)
        return mt_fail(MT_ERR_ARG, "%s: kernel %dx%d: expected at least 1x1", op, p->kh, p->kw);
    if (p->stride_h < 1 || p->stride_w < 1)
        return mt_fail(MT_ERR_ARG, "%s: stride %dx%d: expected at least 1", op, p->stride_h,
                       p->stride_w);
    if (p->pad_h < 0 || p->pad_w < 0 || p->pad_h > p->kh / 2 || p->pad_w > p->kw / 2)
        return mt_fail(MT_ERR_ARG,
                       "%s: padding %dx%d with kernel %dx%d: expected between 0 and half the "
                       "kernel",
                       op, p->pad_h, p->pad_w, p->kh, p->kw);
    *d = (mt_pool2d_desc){.n = x->shape[0],
                          .h = x->shape[1],
                          .w = x->shape[2],
                          .c = x->shape[3],
                          .kh = p->kh,
                          .kw = p->kw,
                          .stride_h = p->stride_h,
                          .stride_w = p->stride_w,
                          .pad_h = p->pad_h,
                          .pad_w = p->pad_w,
                          .count_include_pad = p->count_include_pad};
    d->p = mt_pool2d_out_dim(d->h, p->kh, p->stride_h, p->pad_h, p->ceil_mode);
    d->q = mt_pool2d_out_dim(d->w, p->kw, p->stride_w, p->pad_w, p->ceil_mode);
    if (d->p < 1 || d->q < 1)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s with kernel %dx%d, stride %dx%d, padding %dx%d%s: no output "
                       "(the window is larger than the padded input)",
                       op, xrole, D(x), p->kh, p->kw, p->stride_h, p->stride_w, p->pad_h, p->pad_w,
                       p->ceil_mode ? ", ceil_mode" : "");
    return MT_OK;
}

static mt_status check_pool_out(const char *op, const char *role, const mt_tensor *y,
                                const mt_pool2d_desc *d) {
    char from[128];
    snprintf(from, sizeof from, " (kernel %dx%d, stride %dx%d, padding %dx%d)", d->kh, d->kw,
             d->stride_h, d->stride_w, d->pad_h, d->pad_w);
    return check_shape_is(op, role, y, 4, (int64_t[]){d->n, d->p, d->q, d->c}, from);
}

mt_status mt_maxpool2d_fwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *x, mt_tensor *y,
                           mt_tensor *argmax) {
    const char *op = "maxpool2d_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "x", ctx, x, MT_F32));
    MT_TRY(check_nhwc(op, "y", ctx, y, MT_F32));
    MT_TRY(check_nhwc(op, "argmax", ctx, argmax, MT_I32));
    mt_pool2d_desc d;
    MT_TRY(pool_geometry(op, p, "x", x, &d));
    MT_TRY(check_pool_out(op, "y", y, &d));
    MT_TRY(check_pool_out(op, "argmax", argmax, &d));
    if (d.h * d.w > INT32_MAX)
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: x %s: argmax positions h*W exceed 32 bits", op,
                       D(x));
    MT_TRY(check_alias(op, "y", y, "x", x, false));
    MT_TRY(check_alias(op, "argmax", argmax, "x", x, false));
    MT_TRY(check_alias(op, "argmax", argmax, "y", y, false));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(maxpool2d_fwd, &d, x, y, argmax);
}

mt_status mt_maxpool2d_bwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *argmax,
                           const mt_tensor *dy, mt_tensor *dx) {
    const char *op = "maxpool2d_bwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "argmax", ctx, argmax, MT_I32));
    MT_TRY(check_nhwc(op, "dy", ctx, dy, MT_F32));
    MT_TRY(check_nhwc(op, "dx", ctx, dx, MT_F32));
    mt_pool2d_desc d;
    MT_TRY(pool_geometry(op, p, "dx", dx, &d));
    MT_TRY(check_pool_out(op, "dy", dy, &d));
    MT_TRY(check_pool_out(op, "argmax", argmax, &d));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, false));
    MT_TRY(check_alias(op, "dx", dx, "argmax", argmax, false));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    return DISPATCH(maxpool2d_bwd, &d, argmax, dy, dx);
}

mt_status mt_avgpool2d_fwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *x,
                           mt_tensor *y) {
    const char *op = "avgpool2d_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "x", ctx, x, MT_F32));
    MT_TRY(check_nhwc(op, "y", ctx, y, MT_F32));
    mt_pool2d_desc d;
    MT_TRY(pool_geometry(op, p, "x", x, &d));
    MT_TRY(check_pool_out(op, "y", y, &d));
    MT_TRY(check_alias(op, "y", y, "x", x, false));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(avgpool2d_fwd, &d, x, y);
}

mt_status mt_avgpool2d_bwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *dy,
                           mt_tensor *dx) {
    const char *op = "avgpool2d_bwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_nhwc(op, "dy", ctx, dy, MT_F32));
    MT_TRY(check_nhwc(op, "dx", ctx, dx, MT_F32));
    mt_pool2d_desc d;
    MT_TRY(pool_geometry(op, p, "dx", dx, &d));
    MT_TRY(check_pool_out(op, "dy", dy, &d));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, false));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    return DISPATCH(avgpool2d_bwd, &d, dy, dx);
}

/* ---- upsampling ------------------------------------------------------------------------------ */

/* x (N,H,W,C) resized to y (N,P,Q,C) (roles name them: the backward passes dy and dx). Every size
 * is at least 1, as PyTorch requires; align_corners only goes with bilinear, as there. */
static mt_status check_upsample(const char *op, mt_ctx *ctx, mt_upsample_mode mode,
                                bool align_corners, const char *rx, const mt_tensor *x,
                                const char *ry, const mt_tensor *y) {
    MT_TRY(check_ctx(op, ctx));
    if (mode != MT_UPSAMPLE_NEAREST && mode != MT_UPSAMPLE_BILINEAR)
        return mt_fail(MT_ERR_ARG, "%s: unknown upsampling mode %d", op, (int)mode);
    if (mode == MT_UPSAMPLE_NEAREST && align_corners)
        return mt_fail(MT_ERR_ARG, "%s: align_corners goes with bilinear upsampling, not nearest",
                       op);
    MT_TRY(check_nhwc(op, rx, ctx, x, MT_F32));
    MT_TRY(check_nhwc(op, ry, ctx, y, MT_F32));
    if (x->shape[0] != y->shape[0] || x->shape[3] != y->shape[3])
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s and %s %s: images or channels differ", op, rx, D(x),
                       ry, D(y));
    const mt_tensor *maps[] = {x, y};
    const char *roles[] = {rx, ry};
    for (int i = 0; i < 2; i++)
        if (maps[i]->shape[1] < 1 || maps[i]->shape[2] < 1)
            return mt_fail(MT_ERR_SHAPE, "%s: %s %s: expected a map of at least 1x1", op, roles[i],
                           D(maps[i]));
    return MT_OK;
}

mt_status mt_upsample2d_fwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                            const mt_tensor *x, mt_tensor *y) {
    const char *op = "upsample2d_fwd";
    MT_TRY(check_upsample(op, ctx, mode, align_corners, "x", x, "y", y));
    MT_TRY(check_alias(op, "y", y, "x", x, false));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(upsample2d_fwd, mode, align_corners, x, y);
}

mt_status mt_upsample2d_bwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                            const mt_tensor *dy, mt_tensor *dx) {
    const char *op = "upsample2d_bwd";
    MT_TRY(check_upsample(op, ctx, mode, align_corners, "dx", dx, "dy", dy));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, false));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    return DISPATCH(upsample2d_bwd, mode, align_corners, dy, dx);
}

/* ---- soft Dice pieces ------------------------------------------------------------------------ */

/* p and g (N,P,C), the same shape, C >= 1; and a per-(image, class) tensor t (N,C,k). */
static mt_status check_dice(const char *op, mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g,
                            const char *rt, const mt_tensor *t, int64_t k) {
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "p", ctx, p, MT_F32, 3, 3));
    MT_TRY(check_tensor(op, "g", ctx, g, MT_F32, 3, 3));
    MT_TRY(check_same_shape(op, "p", p, "g", g));
    if (p->shape[2] < 1) return mt_fail(MT_ERR_SHAPE, "%s: p %s: no classes", op, D(p));
    MT_TRY(check_tensor(op, rt, ctx, t, MT_F32, 3, 3));
    char from[96];
    snprintf(from, sizeof from, " (images, classes, %" PRId64 ") for p %s", k, D(p));
    return check_shape_is(op, rt, t, 3, (int64_t[]){p->shape[0], p->shape[2], k}, from);
}

mt_status mt_dice_sums(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g, bool squared,
                       mt_tensor *sums) {
    const char *op = "dice_sums";
    MT_TRY(check_dice(op, ctx, p, g, "sums", sums, 3));
    MT_TRY(check_alias(op, "sums", sums, "p", p, false));
    MT_TRY(check_alias(op, "sums", sums, "g", g, false));
    if (mt_tensor_numel(sums) == 0) return MT_OK;
    if (p->shape[1] == 0) return mt_tensor_zero(ctx, sums); /* no pixels: sums of nothing */
    return DISPATCH(dice_sums, p, g, squared, sums);
}

mt_status mt_dice_bwd(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g, const mt_tensor *coef,
                      bool squared, mt_tensor *dp) {
    const char *op = "dice_bwd";
    MT_TRY(check_dice(op, ctx, p, g, "coef", coef, 2));
    MT_TRY(check_tensor(op, "dp", ctx, dp, MT_F32, 3, 3));
    MT_TRY(check_same_shape(op, "p", p, "dp", dp));
    MT_TRY(check_alias(op, "dp", dp, "p", p, true));
    MT_TRY(check_alias(op, "dp", dp, "g", g, true));
    MT_TRY(check_alias(op, "dp", dp, "coef", coef, false));
    if (mt_tensor_numel(dp) == 0) return MT_OK;
    return DISPATCH(dice_bwd, p, g, coef, squared, dp);
}

/* ---- dropout --------------------------------------------------------------------------------- */

static mt_status check_drop_p(const char *op, float p) {
    if (!(p >= 0.0f && p <= 1.0f))
        return mt_fail(MT_ERR_ARG, "%s: p %g: expected a probability in [0, 1]", op, (double)p);
    return MT_OK;
}

mt_status mt_dropout_fwd(mt_ctx *ctx, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                         const mt_tensor *x, mt_tensor *y, mt_tensor *mask) {
    const char *op = "dropout_fwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_drop_p(op, p));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "mask", ctx, mask, MT_U8, 0, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "y", y));
    MT_TRY(check_same_shape(op, "x", x, "mask", mask));
    MT_TRY(check_alias(op, "y", y, "x", x, true));
    MT_TRY(check_alias(op, "mask", mask, "x", x, false));
    MT_TRY(check_alias(op, "mask", mask, "y", y, false));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(dropout_fwd, p, seed, stream, offset, x, y, mask);
}

mt_status mt_dropout_bwd(mt_ctx *ctx, float p, const mt_tensor *mask, const mt_tensor *dy,
                         mt_tensor *dx) {
    const char *op = "dropout_bwd";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_drop_p(op, p));
    MT_TRY(check_tensor(op, "mask", ctx, mask, MT_U8, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dy", ctx, dy, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dx", ctx, dx, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "dy", dy, "mask", mask));
    MT_TRY(check_same_shape(op, "dy", dy, "dx", dx));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, true));
    MT_TRY(check_alias(op, "dx", dx, "mask", mask, false));
    if (mt_tensor_numel(dx) == 0) return MT_OK;
    return DISPATCH(dropout_bwd, p, mask, dy, dx);
}

/* ---- channel concatenation ------------------------------------------------------------------- */

/* part (rows..., cp) is columns [offset, offset+cp) of whole (rows..., cw). */
static mt_status check_channels(const char *op, mt_ctx *ctx, const char *rpart,
                                const mt_tensor *part, const char *rwhole, const mt_tensor *whole,
                                int64_t offset) {
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, rpart, ctx, part, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, rwhole, ctx, whole, MT_F32, 1, MT_MAX_DIMS));
    bool same_rows = part->ndim == whole->ndim;
    for (int i = 0; same_rows && i < part->ndim - 1; i++)
        same_rows = part->shape[i] == whole->shape[i];
    if (!same_rows)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s and %s %s: leading dims differ", op, rpart, D(part),
                       rwhole, D(whole));
    int64_t cp = mat_cols(part), cw = mat_cols(whole);
    if (offset < 0 || offset > cw || cp > cw - offset)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: %s %s at channel offset %" PRId64 " does not fit in %s %s (%" PRId64
                       " channels)",
                       op, rpart, D(part), offset, rwhole, D(whole), cw);
    return check_alias(op, rpart, part, rwhole, whole, false);
}

mt_status mt_channels_put(mt_ctx *ctx, const mt_tensor *src, int64_t offset, mt_tensor *dst) {
    const char *op = "channels_put";
    MT_TRY(check_channels(op, ctx, "src", src, "dst", dst, offset));
    if (mt_tensor_numel(src) == 0) return MT_OK;
    return DISPATCH(channels_put, src, offset, dst);
}

mt_status mt_channels_get(mt_ctx *ctx, const mt_tensor *src, int64_t offset, float beta,
                          mt_tensor *out) {
    const char *op = "channels_get";
    MT_TRY(check_channels(op, ctx, "out", out, "src", src, offset));
    if (mt_tensor_numel(out) == 0) return MT_OK;
    return DISPATCH(channels_get, src, offset, beta, out);
}

/* ---- decoder (Llama-family) layers ----------------------------------------------------------- */

/* x (rows..., D) with D >= 1 and a per-column vector w (D); returns the row count. */
static mt_status check_rows_and_weight(const char *op, mt_ctx *ctx, const char *rx,
                                       const mt_tensor *x, const mt_tensor *w, int64_t *rows) {
    MT_TRY(check_tensor(op, rx, ctx, x, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "w", ctx, w, MT_F32, 1, 1));
    if (mat_cols(x) < 1)
        return mt_fail(MT_ERR_SHAPE, "%s: %s %s: the normalised dim is empty", op, rx, D(x));
    if (w->shape[0] != mat_cols(x))
        return mt_fail(MT_ERR_SHAPE,
                       "%s: w %s and %s %s: expected one weight per column (%" PRId64 ")", op, D(w),
                       rx, D(x), mat_cols(x));
    *rows = mt_tensor_numel(x) / mat_cols(x);
    return MT_OK;
}

/* rstd holds one f32 per row of x: x's leading dims, or 1-D. */
static mt_status check_rstd(const char *op, mt_ctx *ctx, const mt_tensor *rstd, const mt_tensor *x,
                            int64_t rows) {
    MT_TRY(check_tensor(op, "rstd", ctx, rstd, MT_F32, 1, MT_MAX_DIMS - 1));
    bool ok = rstd->ndim == 1 ? rstd->shape[0] == rows : rstd->ndim == x->ndim - 1;
    for (int i = 0; ok && rstd->ndim > 1 && i < rstd->ndim; i++) ok = rstd->shape[i] == x->shape[i];
    if (!ok)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: rstd %s and x %s: expected one value per row (x's leading dims, or "
                       "[%" PRId64 "])",
                       op, D(rstd), D(x), rows);
    return MT_OK;
}

mt_status mt_rmsnorm_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, float eps,
                         mt_tensor *y, mt_tensor *rstd) {
    const char *op = "rmsnorm_fwd";
    int64_t rows;
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_hyper(op, "eps", eps, 0));
    MT_TRY(check_rows_and_weight(op, ctx, "x", x, w, &rows));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "y", y));
    MT_TRY(check_alias(op, "y", y, "x", x, true));
    MT_TRY(check_alias(op, "y", y, "w", w, false));
    if (rstd) {
        MT_TRY(check_rstd(op, ctx, rstd, x, rows));
        MT_TRY(check_alias(op, "rstd", rstd, "x", x, false));
        MT_TRY(check_alias(op, "rstd", rstd, "w", w, false));
        MT_TRY(check_alias(op, "rstd", rstd, "y", y, false));
    }
    if (rows == 0) return MT_OK;
    return DISPATCH(rmsnorm_fwd, x, w, eps, y, rstd);
}

mt_status mt_rmsnorm_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, const mt_tensor *rstd,
                         const mt_tensor *dy, mt_tensor *dx, mt_tensor *dw) {
    const char *op = "rmsnorm_bwd";
    int64_t rows;
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_rows_and_weight(op, ctx, "x", x, w, &rows));
    MT_TRY(check_rstd(op, ctx, rstd, x, rows));
    MT_TRY(check_tensor(op, "dy", ctx, dy, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "dx", ctx, dx, MT_F32, 1, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "x", x, "dy", dy));
    MT_TRY(check_same_shape(op, "x", x, "dx", dx));
    MT_TRY(check_alias(op, "dx", dx, "dy", dy, true));
    MT_TRY(check_alias(op, "dx", dx, "x", x, false));
    MT_TRY(check_alias(op, "dx", dx, "w", w, false));
    MT_TRY(check_alias(op, "dx", dx, "rstd", rstd, false));
    if (dw) {
        MT_TRY(check_tensor(op, "dw", ctx, dw, MT_F32, 1, 1));
        MT_TRY(check_same_shape(op, "w", w, "dw", dw));
        const mt_tensor *ins[] = {x, w, rstd, dy, dx};
        const char *roles[] = {"x", "w", "rstd", "dy", "dx"};
        for (int i = 0; i < 5; i++) MT_TRY(check_alias(op, "dw", dw, roles[i], ins[i], false));
    }
    if (rows == 0) return MT_OK; /* dw += nothing */
    return DISPATCH(rmsnorm_bwd, x, w, rstd, dy, dx, dw);
}

mt_status mt_rope(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *cos, const mt_tensor *sin,
                  bool inverse, mt_tensor *y) {
    const char *op = "rope";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 4, 4));
    MT_TRY(check_tensor(op, "cos", ctx, cos, MT_F32, 2, 2));
    MT_TRY(check_tensor(op, "sin", ctx, sin, MT_F32, 2, 2));
    MT_TRY(check_tensor(op, "y", ctx, y, MT_F32, 4, 4));
    if (x->shape[3] % 2)
        return mt_fail(MT_ERR_SHAPE, "%s: x %s: the head dim %" PRId64 " must be even", op, D(x),
                       x->shape[3]);
    char from[128];
    snprintf(from, sizeof from, " (T, D/2) for x %s (B,T,H,D)", D(x));
    int64_t want[2] = {x->shape[1], x->shape[3] / 2};
    MT_TRY(check_shape_is(op, "cos", cos, 2, want, from));
    MT_TRY(check_shape_is(op, "sin", sin, 2, want, from));
    MT_TRY(check_same_shape(op, "x", x, "y", y));
    MT_TRY(check_alias(op, "y", y, "x", x, true));
    MT_TRY(check_alias(op, "y", y, "cos", cos, false));
    MT_TRY(check_alias(op, "y", y, "sin", sin, false));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(rope, x, cos, sin, inverse, y);
}

/* q (B,T,Hq,D), k and v (B,S,Hkv,D) with the same B and D >= 1, Hkv >= 1 dividing Hq; causal
 * needs T <= S, and queries need keys. The output-shaped tensors (out, dout, dq, dk, dv) are
 * checked by the callers against q or k. */
static mt_status check_attention(const char *op, mt_ctx *ctx, const mt_tensor *q,
                                 const mt_tensor *k, const mt_tensor *v, float scale, bool causal) {
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "q", ctx, q, MT_F32, 4, 4));
    MT_TRY(check_tensor(op, "k", ctx, k, MT_F32, 4, 4));
    MT_TRY(check_tensor(op, "v", ctx, v, MT_F32, 4, 4));
    if (!isfinite(scale))
        return mt_fail(MT_ERR_ARG, "%s: scale %g: expected a finite value", op, (double)scale);
    MT_TRY(check_same_shape(op, "k", k, "v", v));
    if (q->shape[0] != k->shape[0] || q->shape[3] != k->shape[3])
        return mt_fail(MT_ERR_SHAPE,
                       "%s: q %s (B,T,Hq,D) and k %s (B,S,Hkv,D): batch or head dim differ", op,
                       D(q), D(k));
    if (q->shape[3] < 1) return mt_fail(MT_ERR_SHAPE, "%s: q %s: the head dim is empty", op, D(q));
    int64_t t = q->shape[1], hq = q->shape[2], s = k->shape[1], hkv = k->shape[2];
    if (hkv < 1 || hq % hkv)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: q %s and k %s: %" PRId64 " query heads are not a multiple of %" PRId64
                       " kv heads",
                       op, D(q), D(k), hq, hkv);
    if (causal && t > s)
        return mt_fail(MT_ERR_SHAPE,
                       "%s: q %s and k %s: a causal mask needs T <= S (%" PRId64
                       " queries, %" PRId64 " keys): query t sees keys up to t + S - T",
                       op, D(q), D(k), t, s);
    if (s == 0 && mt_tensor_numel(q) > 0)
        return mt_fail(MT_ERR_SHAPE, "%s: q %s and k %s: queries with no keys to attend to", op,
                       D(q), D(k));
    return MT_OK;
}

/* lse (B,Hq,T) f32 for q (B,T,Hq,D). */
static mt_status check_lse(const char *op, mt_ctx *ctx, const mt_tensor *lse, const mt_tensor *q) {
    MT_TRY(check_tensor(op, "lse", ctx, lse, MT_F32, 3, 3));
    char from[128];
    snprintf(from, sizeof from, " (B,Hq,T) for q %s (B,T,Hq,D)", D(q));
    return check_shape_is(op, "lse", lse, 3, (int64_t[]){q->shape[0], q->shape[2], q->shape[1]},
                          from);
}

mt_status mt_attention_fwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k, const mt_tensor *v,
                           float scale, bool causal, mt_tensor *out, mt_tensor *lse) {
    const char *op = "attention_fwd";
    MT_TRY(check_attention(op, ctx, q, k, v, scale, causal));
    MT_TRY(check_tensor(op, "out", ctx, out, MT_F32, 4, 4));
    MT_TRY(check_same_shape(op, "q", q, "out", out));
    if (lse) MT_TRY(check_lse(op, ctx, lse, q));
    const mt_tensor *ins[] = {q, k, v};
    const char *roles[] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        MT_TRY(check_alias(op, "out", out, roles[i], ins[i], false));
        if (lse) MT_TRY(check_alias(op, "lse", lse, roles[i], ins[i], false));
    }
    if (lse) MT_TRY(check_alias(op, "lse", lse, "out", out, false));
    if (mt_tensor_numel(out) == 0) return MT_OK;
    return DISPATCH(attention_fwd, q, k, v, scale, causal, out, lse);
}

mt_status mt_attention_bwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k, const mt_tensor *v,
                           const mt_tensor *out, const mt_tensor *lse, const mt_tensor *dout,
                           float scale, bool causal, mt_tensor *dq, mt_tensor *dk, mt_tensor *dv) {
    const char *op = "attention_bwd";
    MT_TRY(check_attention(op, ctx, q, k, v, scale, causal));
    MT_TRY(check_tensor(op, "out", ctx, out, MT_F32, 4, 4));
    MT_TRY(check_same_shape(op, "q", q, "out", out));
    MT_TRY(check_lse(op, ctx, lse, q));
    MT_TRY(check_tensor(op, "dout", ctx, dout, MT_F32, 4, 4));
    MT_TRY(check_same_shape(op, "q", q, "dout", dout));
    MT_TRY(check_tensor(op, "dq", ctx, dq, MT_F32, 4, 4));
    MT_TRY(check_same_shape(op, "q", q, "dq", dq));
    MT_TRY(check_tensor(op, "dk", ctx, dk, MT_F32, 4, 4));
    MT_TRY(check_same_shape(op, "k", k, "dk", dk));
    MT_TRY(check_tensor(op, "dv", ctx, dv, MT_F32, 4, 4));
    MT_TRY(check_same_shape(op, "v", v, "dv", dv));
    const mt_tensor *ins[] = {q, k, v, out, lse, dout}, *outs[] = {dq, dk, dv};
    const char *in_roles[] = {"q", "k", "v", "out", "lse", "dout"},
               *out_roles[] = {"dq", "dk", "dv"};
    for (int o = 0; o < 3; o++) {
        for (int i = 0; i < 6; i++)
            MT_TRY(check_alias(op, out_roles[o], outs[o], in_roles[i], ins[i], false));
        for (int p = 0; p < o; p++)
            MT_TRY(check_alias(op, out_roles[o], outs[o], out_roles[p], outs[p], false));
    }
    if (mt_tensor_numel(dq) == 0) { /* no queries: nothing reaches k or v */
        MT_TRY(mt_tensor_zero(ctx, dk));
        return mt_tensor_zero(ctx, dv);
    }
    return DISPATCH(attention_bwd, q, k, v, out, lse, dout, scale, causal, dq, dk, dv);
}

/* gate, up and the other tensors of a SwiGLU, all of one shape. */
static mt_status check_swiglu(const char *op, mt_ctx *ctx, int n, const mt_tensor *const *t,
                              const char *const *roles) {
    MT_TRY(check_ctx(op, ctx));
    for (int i = 0; i < n; i++) {
        MT_TRY(check_tensor(op, roles[i], ctx, t[i], MT_F32, 0, MT_MAX_DIMS));
        if (i) MT_TRY(check_same_shape(op, roles[0], t[0], roles[i], t[i]));
    }
    return MT_OK;
}

mt_status mt_swiglu_fwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up, mt_tensor *y) {
    const char *op = "swiglu_fwd";
    MT_TRY(check_swiglu(op, ctx, 3, (const mt_tensor *[]){gate, up, y},
                        (const char *[]){"gate", "up", "y"}));
    MT_TRY(check_alias(op, "y", y, "gate", gate, true));
    MT_TRY(check_alias(op, "y", y, "up", up, true));
    if (mt_tensor_numel(y) == 0) return MT_OK;
    return DISPATCH(swiglu_fwd, gate, up, y);
}

mt_status mt_swiglu_bwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up,
                        const mt_tensor *dy, mt_tensor *dgate, mt_tensor *dup) {
    const char *op = "swiglu_bwd";
    MT_TRY(check_swiglu(op, ctx, 5, (const mt_tensor *[]){gate, up, dy, dgate, dup},
                        (const char *[]){"gate", "up", "dy", "dgate", "dup"}));
    const mt_tensor *ins[] = {gate, up, dy};
    const char *roles[] = {"gate", "up", "dy"};
    for (int i = 0; i < 3; i++) {
        MT_TRY(check_alias(op, "dgate", dgate, roles[i], ins[i], true));
        MT_TRY(check_alias(op, "dup", dup, roles[i], ins[i], true));
    }
    MT_TRY(check_alias(op, "dup", dup, "dgate", dgate, false));
    if (mt_tensor_numel(dgate) == 0) return MT_OK;
    return DISPATCH(swiglu_bwd, gate, up, dy, dgate, dup);
}

/* ---- optimizer steps ------------------------------------------------------------------------- */

/* param and a same-shaped state or gradient tensor, which must not overlap it. */
static mt_status check_param_like(const char *op, mt_ctx *ctx, const mt_tensor *param,
                                  const char *role, const mt_tensor *t) {
    MT_TRY(check_tensor(op, role, ctx, t, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_same_shape(op, "param", param, role, t));
    return check_alias(op, role, t, "param", param, false);
}

mt_status mt_sgd_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad, mt_tensor *momentum_buf,
                      float lr, float momentum, float dampening, float weight_decay, bool nesterov,
                      bool first_step) {
    const char *op = "sgd_step";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_hyper(op, "lr", lr, 0));
    MT_TRY(check_hyper(op, "momentum", momentum, 0));
    MT_TRY(check_hyper(op, "dampening", dampening, -INFINITY));
    MT_TRY(check_hyper(op, "weight_decay", weight_decay, 0));
    if (nesterov && (momentum <= 0 || dampening != 0))
        return mt_fail(MT_ERR_ARG,
                       "%s: nesterov needs momentum > 0 and dampening 0 (found %g and %g)", op,
                       (double)momentum, (double)dampening);
    MT_TRY(check_tensor(op, "param", ctx, param, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_param_like(op, ctx, param, "grad", grad));
    if (momentum > 0) {
        if (!momentum_buf)
            return mt_fail(MT_ERR_ARG, "%s: momentum %g needs momentum_buf, found NULL", op,
                           (double)momentum);
        MT_TRY(check_param_like(op, ctx, param, "momentum_buf", momentum_buf));
        MT_TRY(check_alias(op, "momentum_buf", momentum_buf, "grad", grad, false));
    }
    if (mt_tensor_numel(param) == 0) return MT_OK;
    return DISPATCH(sgd_step, param, grad, momentum > 0 ? momentum_buf : NULL, lr, momentum,
                    dampening, weight_decay, nesterov, first_step);
}

mt_status mt_adamw_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad, mt_tensor *m,
                        mt_tensor *v, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t t) {
    const char *op = "adamw_step";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_hyper(op, "lr", lr, 0));
    MT_TRY(check_hyper(op, "eps", eps, 0));
    MT_TRY(check_hyper(op, "weight_decay", weight_decay, 0));
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
        return mt_fail(MT_ERR_ARG, "%s: betas (%g, %g): expected each in [0, 1)", op, (double)beta1,
                       (double)beta2);
    if (t < 1)
        return mt_fail(MT_ERR_ARG, "%s: step t = %" PRId64 ": expected >= 1 (steps count from 1)",
                       op, t);
    MT_TRY(check_tensor(op, "param", ctx, param, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_param_like(op, ctx, param, "grad", grad));
    MT_TRY(check_param_like(op, ctx, param, "m", m));
    MT_TRY(check_param_like(op, ctx, param, "v", v));
    MT_TRY(check_alias(op, "m", m, "grad", grad, false));
    MT_TRY(check_alias(op, "v", v, "grad", grad, false));
    MT_TRY(check_alias(op, "v", v, "m", m, false));
    if (mt_tensor_numel(param) == 0) return MT_OK;
    return DISPATCH(adamw_step, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, t);
}

mt_status mt_sumsq(mt_ctx *ctx, const mt_tensor *x, mt_tensor *out) {
    const char *op = "sumsq";
    MT_TRY(check_ctx(op, ctx));
    MT_TRY(check_tensor(op, "x", ctx, x, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_tensor(op, "out", ctx, out, MT_F32, 0, MT_MAX_DIMS));
    MT_TRY(check_scalar(op, "out", out));
    MT_TRY(check_alias(op, "out", out, "x", x, false));
    if (mt_tensor_numel(x) == 0) return MT_OK; /* adds nothing */
    return DISPATCH(sumsq, x, out);
}
