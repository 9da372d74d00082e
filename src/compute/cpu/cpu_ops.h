/* The CPU backend's op functions, one file per family (cpu_*.c); cpu_backend.c assembles them
 * into mt_cpu_backend. Their signatures are those of the mt_backend fields they fill. */
#ifndef MEDTRAIN_CPU_OPS_H
#define MEDTRAIN_CPU_OPS_H

#include "backend.h"

/* cpu_gemm.c */
mt_status mt_cpu_gemm(mt_ctx *ctx, const mt_gemm_desc *d);
/* cpu_elementwise.c */
mt_status mt_cpu_axpy(mt_ctx *ctx, float alpha, const mt_tensor *x, mt_tensor *y);
mt_status mt_cpu_scale(mt_ctx *ctx, float alpha, mt_tensor *x);
mt_status mt_cpu_add(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);
mt_status mt_cpu_mul(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);
mt_status mt_cpu_act_fwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, mt_tensor *y);
mt_status mt_cpu_act_bwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, const mt_tensor *dy,
                         mt_tensor *dx);
mt_status mt_cpu_cast(mt_ctx *ctx, const mt_tensor *src, mt_tensor *dst);
/* cpu_reduce.c */
mt_status mt_cpu_reduce(mt_ctx *ctx, mt_reduce_kind kind, const mt_tensor *x, int64_t outer,
                        int64_t n, int64_t inner, mt_tensor *out);
/* cpu_softmax.c */
mt_status mt_cpu_softmax_fwd(mt_ctx *ctx, bool log, const mt_tensor *x, mt_tensor *y);
mt_status mt_cpu_softmax_bwd(mt_ctx *ctx, bool log, const mt_tensor *y, const mt_tensor *dy,
                             mt_tensor *dx);
/* cpu_loss.c */
mt_status mt_cpu_cross_entropy_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                   int ignore_index, mt_tensor *loss);
mt_status mt_cpu_cross_entropy_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                   int ignore_index, float dloss, mt_tensor *dlogits);
mt_status mt_cpu_bce_logits_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                const mt_tensor *pos_weight, mt_tensor *loss);
mt_status mt_cpu_bce_logits_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                const mt_tensor *pos_weight, float dloss, mt_tensor *dlogits);
/* cpu_embedding.c */
mt_status mt_cpu_embedding_fwd(mt_ctx *ctx, const mt_tensor *table, const mt_tensor *ids,
                               mt_tensor *out);
mt_status mt_cpu_embedding_bwd(mt_ctx *ctx, const mt_tensor *ids, const mt_tensor *dout,
                               mt_tensor *dtable);

#endif
