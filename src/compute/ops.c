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
#include <stdint.h>
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
        kind != MT_ACT_SILU)
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
