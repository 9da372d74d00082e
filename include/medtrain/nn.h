/* Layers for hand-written models: forward and backward of convolution (plain and transposed),
 * batch and instance norm, linear, activation, pooling, upsampling, dropout and channel
 * concatenation, built only on the ops of ops.h (so a
 * model runs on every backend that implements them).
 *
 * A layer is a small struct of geometry plus offsets into a model's flat buffers (model.h):
 * weights at `params + off`, their gradients at `grads + off`, BN running statistics at
 * `buffers + off`. What a call needs besides the layer (the buffers, the mode, the hooks) comes in
 * an mt_nn_env that the model fills once per forward or backward.
 *
 * Feature maps are NHWC; a BN or activation sees its input as (rows, C). Backward functions ADD
 * into the gradient buffer (gradient accumulation over micro-batches) and call env->ready for each
 * parameter range as soon as its gradient is final, so that its all-reduce can start.
 *
 * Planning. With env->plan set, every function here returns MT_OK at once without touching
 * memory: a model runs its forward and backward in that mode to measure the activation memory a
 * batch shape needs (model.c), with the same code that later runs for real. */
#ifndef MEDTRAIN_NN_H
#define MEDTRAIN_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called by backward as soon as the gradient of the trainable range [offset, offset+count) of the
 * flat gradient buffer is final for this step (bucketed all-reduce starts from here). */
typedef mt_status (*mt_grad_ready_fn)(void *user, size_t offset, size_t count);
/* SyncBN: sums buf[0..n) (host memory) over ranks in place. */
typedef mt_status (*mt_allreduce_fn)(void *user, float *buf, size_t n);

typedef struct mt_nn_env {
    mt_ctx *ctx;
    float *params, *grads, *buffers; /* the model's flat buffers, on ctx's device */
    float *stats;     /* per-BN batch statistics kept for backward (mt_nn_bn.stats) */
    float *small;     /* device scratch of small_n floats (per-channel sums), used within a call */
    float *host;      /* host scratch of small_n floats (SyncBN through host memory) */
    size_t small_n;   /* >= 2 * (largest channel count) + 2, and >= the largest linear output */
    const float *one; /* a 1.0f on the device (num_batches_tracked += 1) */
    bool train;       /* batch statistics, running-stat updates, active dropout */
    bool bn_frozen;   /* training, but BN normalises with its running statistics and leaves
                         them alone (eval-mode BN, as when fine-tuning) */
    bool plan;        /* measuring memory: every call returns MT_OK at once */
    float bn_momentum, bn_eps;
    mt_allreduce_fn sync; /* SyncBN when not NULL */
    void *sync_user;
    mt_grad_ready_fn ready; /* backward: gradient ranges that are final; may be NULL */
    void *ready_user;
} mt_nn_env;

/* A view of n floats of a flat buffer (base + off) on env's device. */
mt_tensor mt_nn_flat(const mt_nn_env *e, float *base, size_t off, int64_t n);
/* Reports [off, off+n) of the gradient buffer as final (no-op without env->ready or in plan). */
mt_status mt_nn_ready(mt_nn_env *e, size_t off, size_t n);

/* ---- convolution: x (N,H,W,C) -> y (N,P,Q,K), weight (K,R,S,C/groups) --------------------- */
typedef struct mt_nn_conv {
    int c, k, r, s;
    mt_conv2d_params geo;
    size_t w;  /* weight offset in params and grads */
    int64_t b; /* bias offset, or -1 without bias */
} mt_nn_conv;

void mt_nn_conv_out(const mt_nn_conv *l, int64_t h, int64_t w, int64_t *p, int64_t *q);
mt_status mt_nn_conv_fwd(mt_nn_env *e, const mt_nn_conv *l, const mt_tensor *x, mt_tensor *y);
/* dw (+= db) from x and dy, reported ready; then dx (overwritten) when dx is not NULL. */
mt_status mt_nn_conv_bwd(mt_nn_env *e, const mt_nn_conv *l, const mt_tensor *x, const mt_tensor *dy,
                         mt_tensor *dx);

/* ---- transposed convolution: x (N,H,W,C) -> y (N,P,Q,K), weight (C,R,S,K/groups) ------- */
/* PyTorch's ConvTranspose2d, weight (C, K/groups, R, S) in files; kept with K/groups last. */
typedef struct mt_nn_convt {
    int c, k, r, s;
    mt_conv2d_params geo;
    int out_pad_h, out_pad_w;
    size_t w;  /* weight offset in params and grads */
    int64_t b; /* bias offset, or -1 without bias */
} mt_nn_convt;

void mt_nn_convt_out(const mt_nn_convt *l, int64_t h, int64_t w, int64_t *p, int64_t *q);
mt_status mt_nn_convt_fwd(mt_nn_env *e, const mt_nn_convt *l, const mt_tensor *x, mt_tensor *y);
/* dw (+= db) from x and dy, reported ready; then dx (overwritten) when dx is not NULL. */
mt_status mt_nn_convt_bwd(mt_nn_env *e, const mt_nn_convt *l, const mt_tensor *x,
                          const mt_tensor *dy, mt_tensor *dx);

/* ---- batch norm over (rows, C), PyTorch's BatchNorm2d ------------------------------------- */
typedef struct mt_nn_bn {
    int c;
    size_t weight, bias;                           /* params (C each) */
    size_t running_mean, running_var, num_batches; /* buffers (C, C, 1) */
    size_t stats; /* env->stats + stats: mean, var (2C) of the last training forward */
    double count; /* rows those statistics covered (all ranks with SyncBN) */
} mt_nn_bn;

/* Training: batch mean and biased variance (combined over ranks with SyncBN), kept for backward;
 * running_mean/var move by momentum (var with the unbiased n/(n-1) factor) and num_batches += 1.
 * Evaluation: the running statistics. y may alias x. */
mt_status mt_nn_bn_fwd(mt_nn_env *e, mt_nn_bn *l, const mt_tensor *x, mt_tensor *y);
/* The forward output again from the statistics the last forward used, nothing updated: a cheap
 * activation recomputed in backward instead of being kept. relu applies max(0, .) after. */
mt_status mt_nn_bn_apply(mt_nn_env *e, const mt_nn_bn *l, const mt_tensor *x, bool relu,
                         mt_tensor *y);
/* After a training forward: gamma and beta gradients += this rank's sums (ready), then dx with
 * sums over all ranks (SyncBN) and the global count. dx may alias dy. */
mt_status mt_nn_bn_bwd(mt_nn_env *e, const mt_nn_bn *l, const mt_tensor *x, const mt_tensor *dy,
                       mt_tensor *dx);

/* ---- instance norm over each image's (H*W, C), PyTorch's InstanceNorm2d(affine=True) --------
 * Statistics are always the image's own (track_running_stats=False: the same in training and
 * evaluation). stats (N, 2C) f32 on the device receives each image's mean and biased variance in
 * forward and is read by apply and backward; the caller owns it (activation memory). */
typedef struct mt_nn_in {
    int c;
    size_t weight, bias; /* params (C each) */
} mt_nn_in;

mt_status mt_nn_in_fwd(mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x, mt_tensor *stats,
                       mt_tensor *y);
/* The forward output again from stats (relu: max(0, .) after). */
mt_status mt_nn_in_apply(mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x,
                         const mt_tensor *stats, bool relu, mt_tensor *y);
/* gamma and beta gradients += (ready), then dx (may alias dy). */
mt_status mt_nn_in_bwd(mt_nn_env *e, const mt_nn_in *l, const mt_tensor *x, const mt_tensor *stats,
                       const mt_tensor *dy, mt_tensor *dx);

/* ---- linear: x (N,in) -> y (N,out) = x W^T + b, W (out,in) as PyTorch ----------------------- */
typedef struct mt_nn_linear {
    int in, out;
    size_t w;
    int64_t b; /* or -1 */
} mt_nn_linear;

mt_status mt_nn_linear_fwd(mt_nn_env *e, const mt_nn_linear *l, const mt_tensor *x, mt_tensor *y);
/* dW += dy^T x, db += column sums of dy (ready), then dx = dy W when dx is not NULL. */
mt_status mt_nn_linear_bwd(mt_nn_env *e, const mt_nn_linear *l, const mt_tensor *x,
                           const mt_tensor *dy, mt_tensor *dx);

/* ---- stateless layers ---------------------------------------------------------------------- */
/* ReLU, y may alias x. The backward takes the forward OUTPUT y (y > 0 exactly where x > 0), so an
 * in-place ReLU keeps nothing else; dx may alias dy. */
mt_status mt_nn_relu_fwd(mt_nn_env *e, const mt_tensor *x, mt_tensor *y);
mt_status mt_nn_relu_bwd(mt_nn_env *e, const mt_tensor *y, const mt_tensor *dy, mt_tensor *dx);
/* Pooling (N,H,W,C) -> (N,P,Q,C); argmax (N,P,Q,C) i32. dx is overwritten. */
mt_status mt_nn_maxpool_fwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *x,
                            mt_tensor *y, mt_tensor *argmax);
mt_status mt_nn_maxpool_bwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *argmax,
                            const mt_tensor *dy, mt_tensor *dx);
mt_status mt_nn_avgpool_fwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *x,
                            mt_tensor *y);
mt_status mt_nn_avgpool_bwd(mt_nn_env *e, const mt_pool2d_params *p, const mt_tensor *dy,
                            mt_tensor *dx);
/* Global average pooling (adaptive_avg_pool2d to 1x1): x (N,H,W,C) -> y (N,C), and back. */
mt_status mt_nn_gap_fwd(mt_nn_env *e, const mt_tensor *x, mt_tensor *y);
mt_status mt_nn_gap_bwd(mt_nn_env *e, const mt_tensor *dy, mt_tensor *dx);
/* Dropout with probability p (active only when env->train and p > 0; otherwise y = x). mask (u8,
 * x's shape) comes from Philox(seed, stream) at element offset `offset`. */
mt_status mt_nn_dropout_fwd(mt_nn_env *e, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                            const mt_tensor *x, mt_tensor *y, mt_tensor *mask);
mt_status mt_nn_dropout_bwd(mt_nn_env *e, float p, const mt_tensor *mask, const mt_tensor *dy,
                            mt_tensor *dx);
/* Upsampling (N,H,W,C) -> (N,P,Q,C) (sizes from y), F.interpolate semantics; dx overwritten. */
mt_status mt_nn_upsample_fwd(mt_nn_env *e, mt_upsample_mode mode, bool align_corners,
                             const mt_tensor *x, mt_tensor *y);
mt_status mt_nn_upsample_bwd(mt_nn_env *e, mt_upsample_mode mode, bool align_corners,
                             const mt_tensor *dy, mt_tensor *dx);
/* Channel concatenation (NHWC, the last dim): dst[..., off:off+Cs] = src; and its backward
 * out = beta*out + src[..., off:off+Co] (beta 1 accumulates). */
mt_status mt_nn_concat_put(mt_nn_env *e, const mt_tensor *src, int64_t off, mt_tensor *dst);
mt_status mt_nn_concat_get(mt_nn_env *e, const mt_tensor *src, int64_t off, float beta,
                           mt_tensor *out);
/* y += x (a residual connection's backward, or forward sum). */
mt_status mt_nn_add(mt_nn_env *e, const mt_tensor *x, mt_tensor *y);
/* y = x (copy on the device). */
mt_status mt_nn_copy(mt_nn_env *e, const mt_tensor *x, mt_tensor *y);

#ifdef __cplusplus
}
#endif

#endif
