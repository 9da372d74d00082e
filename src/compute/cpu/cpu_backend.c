/* The CPU backend: host memory and the op table.
 *
 * The CPU implementations are the reference every other backend is tested against: plain loops over
 * contiguous row-major data, OpenMP over rows or elements (ctx->threads), sums in double where a
 * long sum decides the result, and results that do not depend on the thread count. GEMM goes to
 * OpenBLAS, whose thread count the caller sets (openblas_set_num_threads / OPENBLAS_NUM_THREADS);
 * the convolutions (cpu_conv.c) instead split their GEMMs over ctx->threads themselves, with
 * OpenBLAS single-threaded for the duration of the op, so that the two thread pools never spin
 * against each other.
 *
 * The op functions live in cpu_*.c, one file per family, declared in cpu_ops.h; the table is
 * assembled here. */
#include <string.h>
#include "cpu_ops.h"

#define CPU_SCRATCH_BLOCK (4u << 20) /* bytes; the arena grows by blocks of at least this */

static mt_status cpu_ctx_init(mt_ctx *ctx) {
    mt_arena_init(&ctx->scratch, "cpu scratch", CPU_SCRATCH_BLOCK);
    return MT_OK;
}

static void cpu_ctx_free(mt_ctx *ctx) {
    mt_arena_free(&ctx->scratch);
}

static mt_status cpu_sync(mt_ctx *ctx) {
    return MT_OK;
} /* every CPU op is synchronous */

static void *cpu_alloc(mt_ctx *ctx, size_t bytes) {
    return mt_alloc(bytes, "cpu tensor");
}

static void cpu_free(mt_ctx *ctx, void *p) {
    mt_free(p);
}

static mt_status cpu_copy(mt_ctx *ctx, void *dst, mt_device dst_dev, const void *src,
                          mt_device src_dev, size_t bytes) {
    if (dst_dev != MT_CPU || src_dev != MT_CPU)
        return mt_fail(MT_ERR_UNSUPPORTED, "cpu backend: cannot copy %s -> %s memory",
                       mt_device_name(src_dev), mt_device_name(dst_dev));
    memmove(dst, src, bytes);
    return MT_OK;
}

static mt_status cpu_zero(mt_ctx *ctx, void *p, size_t bytes) {
    memset(p, 0, bytes);
    return MT_OK;
}

const mt_backend mt_cpu_backend = {
    .name = "cpu",
    .device = MT_CPU,
    .ctx_init = cpu_ctx_init,
    .ctx_free = cpu_ctx_free,
    .sync = cpu_sync,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .gemm = mt_cpu_gemm,
    .axpy = mt_cpu_axpy,
    .scale = mt_cpu_scale,
    .add = mt_cpu_add,
    .mul = mt_cpu_mul,
    .reduce = mt_cpu_reduce,
    .act_fwd = mt_cpu_act_fwd,
    .act_bwd = mt_cpu_act_bwd,
    .softmax_fwd = mt_cpu_softmax_fwd,
    .softmax_bwd = mt_cpu_softmax_bwd,
    .cross_entropy_fwd = mt_cpu_cross_entropy_fwd,
    .cross_entropy_bwd = mt_cpu_cross_entropy_bwd,
    .bce_logits_fwd = mt_cpu_bce_logits_fwd,
    .bce_logits_bwd = mt_cpu_bce_logits_bwd,
    .dice_sums = mt_cpu_dice_sums,
    .dice_bwd = mt_cpu_dice_bwd,
    .embedding_fwd = mt_cpu_embedding_fwd,
    .embedding_bwd = mt_cpu_embedding_bwd,
    .cast = mt_cpu_cast,
    .conv2d_fwd = mt_cpu_conv2d_fwd,
    .conv2d_bwd_data = mt_cpu_conv2d_bwd_data,
    .conv2d_bwd_filter = mt_cpu_conv2d_bwd_filter,
    .bias_add = mt_cpu_bias_add,
    .bias_grad = mt_cpu_bias_grad,
    .bn_stats = mt_cpu_bn_stats,
    .bn_fwd = mt_cpu_bn_fwd,
    .bn_bwd_reduce = mt_cpu_bn_bwd_reduce,
    .bn_bwd = mt_cpu_bn_bwd,
    .maxpool2d_fwd = mt_cpu_maxpool2d_fwd,
    .maxpool2d_bwd = mt_cpu_maxpool2d_bwd,
    .avgpool2d_fwd = mt_cpu_avgpool2d_fwd,
    .avgpool2d_bwd = mt_cpu_avgpool2d_bwd,
    .upsample2d_fwd = mt_cpu_upsample2d_fwd,
    .upsample2d_bwd = mt_cpu_upsample2d_bwd,
    .dropout_fwd = mt_cpu_dropout_fwd,
    .dropout_bwd = mt_cpu_dropout_bwd,
    .channels_put = mt_cpu_channels_put,
    .channels_get = mt_cpu_channels_get,
    .rmsnorm_fwd = mt_cpu_rmsnorm_fwd,
    .rmsnorm_bwd = mt_cpu_rmsnorm_bwd,
    .rope = mt_cpu_rope,
    .attention_fwd = mt_cpu_attention_fwd,
    .attention_bwd = mt_cpu_attention_bwd,
    .swiglu_fwd = mt_cpu_swiglu_fwd,
    .swiglu_bwd = mt_cpu_swiglu_bwd,
    .sgd_step = mt_cpu_sgd_step,
    .adamw_step = mt_cpu_adamw_step,
    .sumsq = mt_cpu_sumsq,
};
