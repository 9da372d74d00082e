/* Ops: the arithmetic every model is built from, one name and several backends.
 *
 * Each op checks its arguments (device, dtype, shape; messages name the op and the shapes) and then
 * runs the implementation of ctx's backend. An op a backend does not implement fails with
 * MT_ERR_UNSUPPORTED; there are no placeholder implementations. The CPU backend is the reference;
 * tests/compute/test_ops.c runs every op on every available backend against a naive reference,
 * checks gradients by finite differences, and compares backends with each other.
 *
 * Unless said otherwise tensors are f32, live on ctx's device, and an output may alias an input of
 * the same shape. "Rows" are all dims but the last, which is the one softmax and losses work over.
 */
#ifndef MEDTRAIN_OPS_H
#define MEDTRAIN_OPS_H

#include <stdbool.h>
#include "medtrain/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C = alpha * op(A) @ op(B) + beta * C.  op(A) is (M,K): A is (M,K), or (K,M) when trans_a.
 * op(B) is (K,N): B is (K,N), or (N,K) when trans_b.  C is (M,N).
 * Strided-batched when tensors are 3-D (batch, rows, cols); A or B may have batch 1 and is then
 * shared by every C[b] (a weight times a batch of activations). */
mt_status mt_gemm(mt_ctx *ctx, bool trans_a, bool trans_b, float alpha, const mt_tensor *a,
                  const mt_tensor *b, float beta, mt_tensor *c);

mt_status mt_axpy(mt_ctx *ctx, float alpha, const mt_tensor *x, mt_tensor *y); /* y += alpha x */
mt_status mt_scale(mt_ctx *ctx, float alpha, mt_tensor *x);                    /* x *= alpha */
/* out = a + b, out = a * b. b has a's shape, or a's trailing dims, and is then repeated over a's
 * leading dims (a bias over rows). */
mt_status mt_add(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);
mt_status mt_mul(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);

typedef enum mt_reduce_kind { MT_REDUCE_SUM, MT_REDUCE_MEAN, MT_REDUCE_MAX } mt_reduce_kind;
/* Reduces x over one axis (negative counts from the end). out has x's shape without that axis; for
 * a 1-D x, out has one element. Sums accumulate in double on the CPU. */
mt_status mt_reduce(mt_ctx *ctx, mt_reduce_kind kind, const mt_tensor *x, int axis, mt_tensor *out);

typedef enum mt_act_kind {
    MT_ACT_RELU,
    MT_ACT_GELU,      /* exact, x * Phi(x) (PyTorch's default) */
    MT_ACT_GELU_TANH, /* tanh approximation (GPT-2, PyTorch approximate='tanh') */
    MT_ACT_SILU,      /* x * sigmoid(x) (Llama's MLP) */
} mt_act_kind;
mt_status mt_act_fwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, mt_tensor *y);
/* dx = f'(x) * dy, from the forward input x. dx may alias dy. */
mt_status mt_act_bwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, const mt_tensor *dy,
                     mt_tensor *dx);

/* Softmax (or log-softmax when log) over the last dim. The backward takes the forward output y. */
mt_status mt_softmax_fwd(mt_ctx *ctx, bool log, const mt_tensor *x, mt_tensor *y);
mt_status mt_softmax_bwd(mt_ctx *ctx, bool log, const mt_tensor *y, const mt_tensor *dy,
                         mt_tensor *dx);

/* Cross-entropy of logits (N,C) against class targets (N) i32, averaged over rows whose target is
 * not ignore_index (loss 0 when there are none). loss is a 1-element tensor. The backward writes
 * dlogits = dloss * (softmax(logits) - onehot) / count. On the CPU a target outside [0,C) fails
 * naming its row. */
mt_status mt_cross_entropy_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                               int ignore_index, mt_tensor *loss);
mt_status mt_cross_entropy_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                               int ignore_index, float dloss, mt_tensor *dlogits);

/* Binary cross-entropy with logits (N,L) against targets (N,L) f32 in [0,1], where NaN means
 * "unknown" and neither adds to the loss nor gets a gradient. Averaged over known targets (loss 0
 * when there are none). pos_weight (L) or NULL weighs positive targets per label, as PyTorch's
 * BCEWithLogitsLoss(pos_weight=...). */
mt_status mt_bce_logits_fwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                            const mt_tensor *pos_weight, mt_tensor *loss);
mt_status mt_bce_logits_bwd(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                            const mt_tensor *pos_weight, float dloss, mt_tensor *dlogits);

/* out[i] = table[ids[i]]: table (V,D), ids (N) i32, out (N,D). The backward adds dout's rows into
 * dtable (dtable += ...; repeated ids accumulate). On the CPU an id outside [0,V) fails naming it.
 */
mt_status mt_embedding_fwd(mt_ctx *ctx, const mt_tensor *table, const mt_tensor *ids,
                           mt_tensor *out);
mt_status mt_embedding_bwd(mt_ctx *ctx, const mt_tensor *ids, const mt_tensor *dout,
                           mt_tensor *dtable);

/* Converts between dtypes (same element count): f32 <-> bf16/f16, and u8/u16/i32 -> f32. */
mt_status mt_cast(mt_ctx *ctx, const mt_tensor *src, mt_tensor *dst);

/* The op registry, for tests and `medtrain doctor`: which ops each backend implements. */
int mt_op_count(void);
const char *mt_op_name(int i);
bool mt_op_supported(mt_device d, int i);

#ifdef __cplusplus
}
#endif

#endif
