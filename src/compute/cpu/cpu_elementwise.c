/* Elementwise ops on the CPU: axpy, scale, add and mul (with b repeated over a's leading dims),
 * activations forward and backward, the per-channel bias and its gradient, and dtype casts.
 *
 * Each is one flat loop over contiguous memory, split across ctx->threads by OpenMP once it is long
 * enough to pay for the threads. Every element is computed independently, so results do not depend
 * on the thread count, and an output may be its input. (The bias gradient is a column sum, over
 * the fixed split of mt_cpu_column_sums_add.) */
#include <math.h>
#include "cpu_ops.h"

/* Below this many elements a loop runs on one thread (thread start-up costs more than it saves). */
#define PAR_MIN 32768

mt_status mt_cpu_axpy(mt_ctx *ctx, float alpha, const mt_tensor *x, mt_tensor *y) {
    const float *xp = x->data;
    float *yp = y->data;
    int64_t n = mt_tensor_numel(y);
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) yp[i] += alpha * xp[i];
    return MT_OK;
}

mt_status mt_cpu_scale(mt_ctx *ctx, float alpha, mt_tensor *x) {
    float *xp = x->data;
    int64_t n = mt_tensor_numel(x);
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) xp[i] *= alpha;
    return MT_OK;
}

/* out = a (op) b, with b (inner) repeated over the leading dims of a (outer, inner). */
static mt_status binary(mt_ctx *ctx, bool mul, const mt_tensor *a, const mt_tensor *b,
                        mt_tensor *out) {
    const float *ap = a->data, *bp = b->data;
    float *op = out->data;
    int64_t n = mt_tensor_numel(out), inner = mt_tensor_numel(b);
    if (inner == n) { /* same shape: no index arithmetic */
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) op[i] = mul ? ap[i] * bp[i] : ap[i] + bp[i];
        return MT_OK;
    }
    int64_t outer = n / inner;
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t r = 0; r < outer; r++) {
        const float *ar = ap + r * inner;
        float *orow = op + r * inner;
        if (mul)
            for (int64_t j = 0; j < inner; j++) orow[j] = ar[j] * bp[j];
        else
            for (int64_t j = 0; j < inner; j++) orow[j] = ar[j] + bp[j];
    }
    return MT_OK;
}

mt_status mt_cpu_add(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out) {
    return binary(ctx, false, a, b, out);
}

mt_status mt_cpu_mul(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out) {
    return binary(ctx, true, a, b, out);
}

/* ---- activations ----------------------------------------------------------------------------- */

#define INV_SQRT2      0.70710678118654752440f
#define INV_SQRT_2PI   0.39894228040143267794f
#define SQRT_2_OVER_PI 0.79788456080286535588f
#define GELU_TANH_C    0.044715f

static inline float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

/* sigmoid(x) and sigmoid'(x) = e / (1 + e)^2 with e = exp(-|x|) <= 1: no overflow, and both keep
 * their relative accuracy in the tails (1 - sigmoid(x) would round to 0 for x beyond ~17). */
static inline float sigmoid_tailsafe(float x) {
    float e = expf(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

static inline float sigmoid_grad(float x) {
    float e = expf(-fabsf(x)), d = 1.0f + e;
    return e / (d * d);
}

static inline float act(mt_act_kind kind, float x) {
    switch (kind) {
    case MT_ACT_RELU:
        return x > 0.0f ? x : 0.0f;
    case MT_ACT_GELU: /* x Phi(x); erfc keeps Phi accurate in the far negative tail */
        return 0.5f * x * erfcf(-x * INV_SQRT2);
    case MT_ACT_GELU_TANH: {
        float u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    case MT_ACT_SILU:
        return x * sigmoidf(x);
    case MT_ACT_SIGMOID:
        return sigmoid_tailsafe(x);
    }
    return NAN;
}

/* f'(x) */
static inline float act_grad(mt_act_kind kind, float x) {
    switch (kind) {
    case MT_ACT_RELU:
        return x > 0.0f ? 1.0f : 0.0f;
    case MT_ACT_GELU: /* Phi(x) + x phi(x) */
        return 0.5f * erfcf(-x * INV_SQRT2) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    case MT_ACT_GELU_TANH: {
        float u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x), t = tanhf(u);
        float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_C * x * x);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    case MT_ACT_SILU: {
        float s = sigmoidf(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case MT_ACT_SIGMOID:
        return sigmoid_grad(x);
    }
    return NAN;
}

mt_status mt_cpu_act_fwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, mt_tensor *y) {
    const float *xp = x->data;
    float *yp = y->data;
    int64_t n = mt_tensor_numel(y);
    if (kind == MT_ACT_RELU) { /* its own loop, so that it vectorises */
#pragma omp parallel for simd num_threads(ctx->threads) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) yp[i] = xp[i] > 0.0f ? xp[i] : 0.0f;
        return MT_OK;
    }
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN / 4)
    for (int64_t i = 0; i < n; i++) yp[i] = act(kind, xp[i]);
    return MT_OK;
}

mt_status mt_cpu_act_bwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, const mt_tensor *dy,
                         mt_tensor *dx) {
    const float *xp = x->data, *dyp = dy->data;
    float *dxp = dx->data;
    int64_t n = mt_tensor_numel(dx);
    if (kind == MT_ACT_RELU) { /* as torch's threshold_backward: 0 where x <= 0, even for inf dy */
#pragma omp parallel for simd num_threads(ctx->threads) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) dxp[i] = xp[i] > 0.0f ? dyp[i] : 0.0f;
        return MT_OK;
    }
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN / 4)
    for (int64_t i = 0; i < n; i++) dxp[i] = act_grad(kind, xp[i]) * dyp[i];
    return MT_OK;
}

/* ---- per-channel bias ------------------------------------------------------------------------ */

/* x (rows, c) += bias (c). */
mt_status mt_cpu_bias_add(mt_ctx *ctx, const mt_tensor *bias, mt_tensor *x) {
    const float *bp = bias->data;
    float *xp = x->data;
    int64_t n = mt_tensor_numel(x), c = bias->shape[0], rows = n / c;
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *row = xp + r * c;
        for (int64_t j = 0; j < c; j++) row[j] += bp[j];
    }
    return MT_OK;
}

/* dbias (c) += column sums of dy (rows, c), in double over a fixed split of the rows. */
mt_status mt_cpu_bias_grad(mt_ctx *ctx, const mt_tensor *dy, mt_tensor *dbias) {
    int64_t c = dbias->shape[0];
    return mt_cpu_column_sums_add(ctx, dy->data, mt_tensor_numel(dy) / c, c, dbias->data);
}

/* ---- casts ----------------------------------------------------------------------------------- */

/* One loop per (from, to) pair so that each conversion inlines; ops.c rejects other pairs. */
// clang-format off
#define CAST_LOOP(from_t, to_t, convert)                                                           \
    do {                                                                                           \
        const from_t *s_ = src->data;                                                              \
        to_t *d_ = dst->data;                                                                      \
        _Pragma("omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)")                     \
        for (int64_t i = 0; i < n; i++) d_[i] = convert(s_[i]);                                    \
        return MT_OK;                                                                              \
    } while (0)
// clang-format on

#define AS_FLOAT(v) ((float)(v))

mt_status mt_cpu_cast(mt_ctx *ctx, const mt_tensor *src, mt_tensor *dst) {
    int64_t n = mt_tensor_numel(src);
    switch (src->dtype * MT_DTYPE_COUNT + dst->dtype) {
    case MT_F32 *MT_DTYPE_COUNT + MT_BF16:
        CAST_LOOP(float, uint16_t, mt_f32_to_bf16);
    case MT_F32 *MT_DTYPE_COUNT + MT_F16:
        CAST_LOOP(float, uint16_t, mt_f32_to_f16);
    case MT_BF16 *MT_DTYPE_COUNT + MT_F32:
        CAST_LOOP(uint16_t, float, mt_bf16_to_f32);
    case MT_F16 *MT_DTYPE_COUNT + MT_F32:
        CAST_LOOP(uint16_t, float, mt_f16_to_f32);
    case MT_U8 *MT_DTYPE_COUNT + MT_F32:
        CAST_LOOP(uint8_t, float, AS_FLOAT);
    case MT_U16 *MT_DTYPE_COUNT + MT_F32:
        CAST_LOOP(uint16_t, float, AS_FLOAT);
    case MT_I32 *MT_DTYPE_COUNT + MT_F32:
        CAST_LOOP(int32_t, float, AS_FLOAT);
    default:
        break;
    }
    return mt_fail(MT_ERR_UNSUPPORTED, "cast: %s -> %s is not implemented on the cpu backend",
                   mt_dtype_name(src->dtype), mt_dtype_name(dst->dtype));
}
