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
    MT_ACT_SIGMOID,   /* 1 / (1 + exp(-x)) (per-class probabilities of multi-label heads) */
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

/* ---- convolution and normalisation layers (NHWC) ------------------------------------------- */

/* 2-D convolution geometry. Output size P = (H + 2*pad_h - dil_h*(R-1) - 1) / stride_h + 1 (and Q
 * likewise), as PyTorch's Conv2d. groups divides C and K. */
typedef struct mt_conv2d_params {
    int stride_h, stride_w;
    int pad_h, pad_w;
    int dil_h, dil_w;
    int groups;
} mt_conv2d_params;
/* One output dim of a convolution (in, kernel k) or a pooling, as the ops compute it; a result
 * below 1 means the geometry gives no output, which the ops reject. */
int64_t mt_conv2d_out_dim(int64_t in, int64_t k, int stride, int pad, int dil);
int64_t mt_pool2d_out_dim(int64_t in, int k, int stride, int pad, bool ceil_mode);

/* x (N,H,W,C), w (K,R,S,C/groups) ("KRSC": torchvision's (K,C,R,S) with C moved last), bias (K)
 * or NULL, y (N,P,Q,K). y = conv(x, w) + bias. */
mt_status mt_conv2d_fwd(mt_ctx *ctx, const mt_conv2d_params *p, const mt_tensor *x,
                        const mt_tensor *w, const mt_tensor *bias, mt_tensor *y);
/* dx (N,H,W,C) = the gradient of x for dy (N,P,Q,K); dx is overwritten. */
mt_status mt_conv2d_bwd_data(mt_ctx *ctx, const mt_conv2d_params *p, const mt_tensor *dy,
                             const mt_tensor *w, mt_tensor *dx);
/* dw (K,R,S,C/groups) += the gradient of w; dbias (K) += sum of dy over N,P,Q when not NULL.
 * Accumulates, so that micro-batches add into one flat gradient buffer. */
mt_status mt_conv2d_bwd_filter(mt_ctx *ctx, const mt_conv2d_params *p, const mt_tensor *x,
                               const mt_tensor *dy, mt_tensor *dw, mt_tensor *dbias);

/* Batch norm over x viewed as (rows, C): NHWC feature maps are (N*H*W, C).
 * Training: mt_bn_stats gives the batch mean and biased variance per channel (SyncBN combines
 * them across ranks before applying); evaluation passes the running statistics instead.
 * y = (x - mean) / sqrt(var + eps) * gamma + beta. y may alias x. mean, var, gamma, beta are (C);
 * gamma and beta may be NULL (1 and 0: BatchNorm2d(affine=False)). Per-channel sums run over a
 * fixed split of the rows (f32 within blocks of 16 rows, double across them), so results do not
 * depend on the thread count. */
mt_status mt_bn_stats(mt_ctx *ctx, const mt_tensor *x, mt_tensor *mean, mt_tensor *var);
mt_status mt_bn_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *mean, const mt_tensor *var,
                    float eps, const mt_tensor *gamma, const mt_tensor *beta, mt_tensor *y);
/* Per channel: sum_dy = sum(dy), sum_dy_xhat = sum(dy * xhat), xhat = (x - mean)/sqrt(var+eps).
 * These are also beta's and gamma's gradients. SyncBN all-reduces them before mt_bn_bwd. */
mt_status mt_bn_bwd_reduce(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy,
                           const mt_tensor *mean, const mt_tensor *var, float eps,
                           mt_tensor *sum_dy, mt_tensor *sum_dy_xhat);
/* dx = gamma * invstd * (dy - sum_dy/count - xhat * sum_dy_xhat/count) when batch_stats (count is
 * the number of rows the statistics covered, on all ranks for SyncBN), or gamma * invstd * dy when
 * the statistics were fixed (eval-mode BN; sum_dy and sum_dy_xhat are then unused and may be
 * NULL). dx is overwritten and may alias dy. */
mt_status mt_bn_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy, const mt_tensor *mean,
                    const mt_tensor *var, float eps, const mt_tensor *gamma,
                    const mt_tensor *sum_dy, const mt_tensor *sum_dy_xhat, double count,
                    bool batch_stats, mt_tensor *dx);

/* Transposed convolution (PyTorch's ConvTranspose2d), the adjoint of mt_conv2d_fwd with the same
 * geometry: x (N,H,W,C) -> y (N,P,Q,K) with P = (H-1)*stride_h - 2*pad_h + dil_h*(R-1) + 1 +
 * out_pad_h (Q likewise). w is (C,R,S,K/groups): PyTorch's (C, K/groups, R, S) with K/groups
 * moved last, which is exactly the (K',R,S,C') layout of the convolution it is the adjoint of
 * (K' = C, C' = K/groups). 0 <= out_pad < stride (PyTorch also allows < dil; not here).
 * bias (K) or NULL. C, H, W and K/groups are at least 1, and P, Q too.
 * The three ops run that convolution's backward-data / forward / backward-filter passes (plus
 * mt_bias_add / mt_bias_grad), so a backend supports them where it has those. */
mt_status mt_conv_transpose2d_fwd(mt_ctx *ctx, const mt_conv2d_params *p, int out_pad_h,
                                  int out_pad_w, const mt_tensor *x, const mt_tensor *w,
                                  const mt_tensor *bias, mt_tensor *y);
/* dx (N,H,W,C) = the gradient of x for dy (N,P,Q,K); dx is overwritten. */
mt_status mt_conv_transpose2d_bwd_data(mt_ctx *ctx, const mt_conv2d_params *p, int out_pad_h,
                                       int out_pad_w, const mt_tensor *dy, const mt_tensor *w,
                                       mt_tensor *dx);
/* dw (C,R,S,K/groups) += the gradient of w; dbias (K) += sum of dy over N,P,Q when not NULL. */
mt_status mt_conv_transpose2d_bwd_filter(mt_ctx *ctx, const mt_conv2d_params *p, int out_pad_h,
                                         int out_pad_w, const mt_tensor *x, const mt_tensor *dy,
                                         mt_tensor *dw, mt_tensor *dbias);

/* Per-channel bias on x viewed as (rows, C): add: x += bias; grad: dbias (C) += column sums of dy
 * (accumulated in double on the CPU). */
mt_status mt_bias_add(mt_ctx *ctx, const mt_tensor *bias, mt_tensor *x);
mt_status mt_bias_grad(mt_ctx *ctx, const mt_tensor *dy, mt_tensor *dbias);

/* Upsampling of (N,H,W,C) to (N,P,Q,C), the sizes taken from y (any sizes >= 1, so downsampling
 * too), as PyTorch's F.interpolate(size=...) per axis:
 * nearest (mode='nearest', not 'nearest-exact'): src = min(floor(dst * s), in-1) with s the f32
 * in/out and an f32 product (so 7->3 reads 0, 2, 4), except dst when out == in and dst/2 when
 * out == 2*in; align_corners must be false. Bilinear: align_corners true maps corners to corners
 * (src = dst * (in-1)/(out-1), 0 when out is 1), false maps pixel centres (src = (dst + 0.5) *
 * in/out - 0.5, clamped at 0, rounded once to f32); then i0 = floor(src) (at most in-1), weight
 * src - i0 on i0 + 1, which at the last row or column is i0 itself (edges replicate). These are
 * PyTorch's CPU formulas in its f32 arithmetic, so the pixels read and the weights match torch
 * bit for bit (except where torch's own kernels round src twice, by one ulp: see
 * cpu_upsample.c). torch called with a scale_factor (not recomputed) uses 1/scale_factor instead
 * of in/out: the same for integer factors only. The backward adds each output gradient into the
 * input pixels it was read from, with the same weights; dx is overwritten. */
typedef enum mt_upsample_mode { MT_UPSAMPLE_NEAREST, MT_UPSAMPLE_BILINEAR } mt_upsample_mode;
mt_status mt_upsample2d_fwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                            const mt_tensor *x, mt_tensor *y);
mt_status mt_upsample2d_bwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                            const mt_tensor *dy, mt_tensor *dx);

/* Soft Dice pieces over probabilities p and targets g, both (N,P,C) (images, pixels, classes):
 * sums (N,C,3) f32 gets, per image and class, sum(p*g), sum(p) and sum(g) (plain), or
 * sum(p*g), sum(p^2), sum(g^2) (squared), accumulated in double on the CPU over a fixed split of
 * the pixels (the same bits on any thread count). sums is overwritten (zeros when P is 0). The
 * loss from these sums is the caller's (a few numbers); its gradient comes back as coef (N,C,2) =
 * (a, b), a = dL/dsum(p*g) and b = dL/dsum(p) (or dL/dsum(p^2)), and mt_dice_bwd writes
 * dp = a*g + b*(squared ? 2p : 1) per element (dp overwritten; it may be p or g). */
mt_status mt_dice_sums(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g, bool squared,
                       mt_tensor *sums);
mt_status mt_dice_bwd(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g, const mt_tensor *coef,
                      bool squared, mt_tensor *dp);

/* Pooling over H and W of (N,H,W,C), PyTorch's MaxPool2d/AvgPool2d semantics (ceil_mode; for
 * average, count_include_pad). Padding never wins a max. Global average pooling is an average
 * pool whose window is the whole map. */
typedef struct mt_pool2d_params {
    int kh, kw;
    int stride_h, stride_w;
    int pad_h, pad_w;
    bool ceil_mode;
    bool count_include_pad;
} mt_pool2d_params;
/* argmax (N,P,Q,C) i32 receives each window's winning position (h*W + w) for the backward. */
mt_status mt_maxpool2d_fwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *x, mt_tensor *y,
                           mt_tensor *argmax);
mt_status mt_maxpool2d_bwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *argmax,
                           const mt_tensor *dy, mt_tensor *dx); /* dx overwritten */
mt_status mt_avgpool2d_fwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *x,
                           mt_tensor *y);
mt_status mt_avgpool2d_bwd(mt_ctx *ctx, const mt_pool2d_params *p, const mt_tensor *dy,
                           mt_tensor *dx); /* dx overwritten */

/* Dropout: keeps each element with probability 1-p and scales kept ones by 1/(1-p). The mask (u8,
 * x's shape) comes from Philox keyed by (seed, stream) and counted by element index + offset, so
 * it does not depend on threads or backend. The backward is dx = dy * mask / (1-p). */
mt_status mt_dropout_fwd(mt_ctx *ctx, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                         const mt_tensor *x, mt_tensor *y, mt_tensor *mask);
mt_status mt_dropout_bwd(mt_ctx *ctx, float p, const mt_tensor *mask, const mt_tensor *dy,
                         mt_tensor *dx);

/* Concatenation along the last dim (channels in NHWC). src (rows, Cs) and dst (rows, Cd) have the
 * same leading dims. put: dst[..., off:off+Cs] = src. get: out = beta*out + src[..., off:off+Co]
 * (beta 0 or 1: the backward of a concatenation adds into each input's gradient). */
mt_status mt_channels_put(mt_ctx *ctx, const mt_tensor *src, int64_t offset, mt_tensor *dst);
mt_status mt_channels_get(mt_ctx *ctx, const mt_tensor *src, int64_t offset, float beta,
                          mt_tensor *out);

/* ---- decoder (Llama-family) layers ----------------------------------------------------------- */

/* RMSNorm over the last dim, as Hugging Face's LlamaRMSNorm (in f32): y = (x * rstd) * w with
 * rstd = 1/sqrt(mean(x^2) + eps) per row. x, y (rows..., D) with D >= 1; w (D); eps >= 0. rstd,
 * when not NULL, is f32 with x's leading dims (or 1-D, one value per row) and receives rstd for
 * the backward. y may alias x. */
mt_status mt_rmsnorm_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, float eps,
                         mt_tensor *y, mt_tensor *rstd);
/* From x, w, the forward's rstd and dy:
 *     dx = rstd * (w * dy) - x * rstd^3 * mean(x * w * dy)   (overwritten; may alias dy)
 *     dw += sum over rows of dy * x * rstd                   (when dw is not NULL) */
mt_status mt_rmsnorm_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, const mt_tensor *rstd,
                         const mt_tensor *dy, mt_tensor *dx, mt_tensor *dw);

/* Rotary position embedding in Hugging Face's rotate_half convention: x (B,T,H,D), D even;
 * cos, sin (T, D/2) f32 hold the angle of frequency pair i at position t (the caller builds them
 * from rope_theta and any rope scaling, for the positions the T rows have: past + t with a KV
 * cache; HF's cos is this one repeated twice along the last dim). For i < D/2:
 *   y[i] = x[i] cos - x[i + D/2] sin,   y[i + D/2] = x[i + D/2] cos + x[i] sin.
 * inverse rotates by the negative angle: the backward (dx = rope(dy, inverse)). y may alias x. */
mt_status mt_rope(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *cos, const mt_tensor *sin,
                  bool inverse, mt_tensor *y);

/* Scaled dot-product attention with grouped-query heads: q (B,T,Hq,D), k and v (B,S,Hkv,D), Hq a
 * multiple of Hkv (query head h reads kv head h / (Hq/Hkv), as HF's repeat_kv); D >= 1, and
 * S >= 1 when there are queries. out (B,T,Hq,D) = softmax(q k^T * scale [+ causal mask]) v.
 * causal: query t sees keys s <= t + (S - T), which needs T <= S (a block of queries at the end
 * of a KV cache sees the whole past; T == S is the usual lower-triangular mask). lse (B,Hq,T) f32
 * receives each softmax row's log-sum-exp (of the scaled scores) for the backward, or is NULL.
 * No output may overlap an input. */
mt_status mt_attention_fwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k, const mt_tensor *v,
                           float scale, bool causal, mt_tensor *out, mt_tensor *lse);
/* dq, dk, dv (overwritten; dk and dv summed over the query heads that share a kv head) from the
 * forward's inputs, out and lse (required), and dout (q's shape). */
mt_status mt_attention_bwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k, const mt_tensor *v,
                           const mt_tensor *out, const mt_tensor *lse, const mt_tensor *dout,
                           float scale, bool causal, mt_tensor *dq, mt_tensor *dk, mt_tensor *dv);

/* SwiGLU of Llama's MLP: y = silu(gate) * up (same shapes; y may alias gate or up). The backward
 * writes dgate = dy * up * s * (1 + gate * (1 - s)) with s = sigmoid(gate) and dup = dy *
 * silu(gate) (overwritten; each may alias an input, but not the other). */
mt_status mt_swiglu_fwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up, mt_tensor *y);
mt_status mt_swiglu_bwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up,
                        const mt_tensor *dy, mt_tensor *dgate, mt_tensor *dup);

/* ---- optimizer steps on one parameter's slice of the flat buffers --------------------------- */

/* torch.optim.SGD for one step: g' = g + wd*p; buf = momentum*buf + (1-dampening)*g' (buf = g' on
 * the first step); g' = nesterov ? g' + momentum*buf : buf (when momentum > 0); p -= lr * g'.
 * momentum_buf may be NULL when momentum is 0. nesterov needs momentum > 0 and dampening 0. */
mt_status mt_sgd_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad, mt_tensor *momentum_buf,
                      float lr, float momentum, float dampening, float weight_decay, bool nesterov,
                      bool first_step);
/* torch.optim.AdamW (amsgrad off) for step t >= 1: p *= 1 - lr*wd; m = b1*m + (1-b1)*g;
 * v = b2*v + (1-b2)*g^2; p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps). */
mt_status mt_adamw_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad, mt_tensor *m,
                        mt_tensor *v, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t t);
/* out (1 element, f32) += sum of x^2 (accumulated in double on the CPU): global-norm clipping. */
mt_status mt_sumsq(mt_ctx *ctx, const mt_tensor *x, mt_tensor *out);

/* The op registry, for tests and `medtrain doctor`: which ops each backend implements. */
int mt_op_count(void);
const char *mt_op_name(int i);
bool mt_op_supported(mt_device d, int i);

#ifdef __cplusplus
}
#endif

#endif
