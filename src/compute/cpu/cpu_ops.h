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
mt_status mt_cpu_bias_add(mt_ctx *ctx, const mt_tensor *bias, mt_tensor *x);
mt_status mt_cpu_bias_grad(mt_ctx *ctx, const mt_tensor *dy, mt_tensor *dbias);
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
/* cpu_dice.c */
mt_status mt_cpu_dice_sums(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g, bool squared,
                           mt_tensor *sums);
mt_status mt_cpu_dice_bwd(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g,
                          const mt_tensor *coef, bool squared, mt_tensor *dp);
/* cpu_embedding.c */
mt_status mt_cpu_embedding_fwd(mt_ctx *ctx, const mt_tensor *table, const mt_tensor *ids,
                               mt_tensor *out);
mt_status mt_cpu_embedding_bwd(mt_ctx *ctx, const mt_tensor *ids, const mt_tensor *dout,
                               mt_tensor *dtable);
/* cpu_conv.c */
mt_status mt_cpu_conv2d_fwd(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *x,
                            const mt_tensor *w, const mt_tensor *bias, mt_tensor *y);
mt_status mt_cpu_conv2d_bwd_data(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *dy,
                                 const mt_tensor *w, mt_tensor *dx);
mt_status mt_cpu_conv2d_bwd_filter(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *x,
                                   const mt_tensor *dy, mt_tensor *dw, mt_tensor *dbias);
/* cpu_winograd.c: 3x3 stride-1 convolutions by Winograd F(2x2, 3x3), for cpu_conv.c. Whether d
 * (a forward convolution, or the one a backward-data pass runs; with filter_gradient, the
 * convolution whose filter gradient is wanted) takes that path: */
bool mt_cpu_winograd_pays(const mt_conv2d_desc *d, bool filter_gradient);
/* y (n,p,q,k) = conv(x (n,h,w,c), w) + bias (NULL: none) with w (k,3,3,c); with flip, w is
 * (c,3,3,k) and the filters are w[c', 2-r, 2-s, k'] (a backward-data pass). Runs on ctx->threads
 * threads; the caller has set OpenBLAS to one thread. */
mt_status mt_cpu_winograd_fwd(mt_ctx *ctx, const mt_conv2d_desc *d, const float *x, const float *w,
                              bool flip, const float *bias, float *y, const char *op);
/* dw (k,3,3,c) += the filter gradient of that convolution for x and dy (n,p,q,k); the same. */
mt_status mt_cpu_winograd_bwd_filter(mt_ctx *ctx, const mt_conv2d_desc *d, const float *x,
                                     const float *dy, float *dw);
/* The bytes of tile data a thread transforms at once (0: the default); see
 * mt_cpu_conv_set_chunk_bytes. */
void mt_cpu_winograd_set_block_bytes(size_t bytes);
/* cpu_norm.c */
mt_status mt_cpu_bn_stats(mt_ctx *ctx, const mt_tensor *x, mt_tensor *mean, mt_tensor *var);
mt_status mt_cpu_bn_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *mean,
                        const mt_tensor *var, float eps, const mt_tensor *gamma,
                        const mt_tensor *beta, mt_tensor *y);
mt_status mt_cpu_bn_bwd_reduce(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy,
                               const mt_tensor *mean, const mt_tensor *var, float eps,
                               mt_tensor *sum_dy, mt_tensor *sum_dy_xhat);
mt_status mt_cpu_bn_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy, const mt_tensor *mean,
                        const mt_tensor *var, float eps, const mt_tensor *gamma,
                        const mt_tensor *sum_dy, const mt_tensor *sum_dy_xhat, double count,
                        bool batch_stats, mt_tensor *dx);
/* cpu_pool.c */
mt_status mt_cpu_maxpool2d_fwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *x,
                               mt_tensor *y, mt_tensor *argmax);
mt_status mt_cpu_maxpool2d_bwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *argmax,
                               const mt_tensor *dy, mt_tensor *dx);
mt_status mt_cpu_avgpool2d_fwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *x,
                               mt_tensor *y);
mt_status mt_cpu_avgpool2d_bwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *dy,
                               mt_tensor *dx);
/* cpu_upsample.c */
mt_status mt_cpu_upsample2d_fwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                                const mt_tensor *x, mt_tensor *y);
mt_status mt_cpu_upsample2d_bwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                                const mt_tensor *dy, mt_tensor *dx);
/* cpu_dropout.c */
mt_status mt_cpu_dropout_fwd(mt_ctx *ctx, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                             const mt_tensor *x, mt_tensor *y, mt_tensor *mask);
mt_status mt_cpu_dropout_bwd(mt_ctx *ctx, float p, const mt_tensor *mask, const mt_tensor *dy,
                             mt_tensor *dx);
/* cpu_channels.c */
mt_status mt_cpu_channels_put(mt_ctx *ctx, const mt_tensor *src, int64_t offset, mt_tensor *dst);
mt_status mt_cpu_channels_get(mt_ctx *ctx, const mt_tensor *src, int64_t offset, float beta,
                              mt_tensor *out);
/* cpu_rmsnorm.c */
mt_status mt_cpu_rmsnorm_fwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, float eps,
                             mt_tensor *y, mt_tensor *rstd);
mt_status mt_cpu_rmsnorm_bwd(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w,
                             const mt_tensor *rstd, const mt_tensor *dy, mt_tensor *dx,
                             mt_tensor *dw);
/* cpu_rope.c */
mt_status mt_cpu_rope(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *cos, const mt_tensor *sin,
                      bool inverse, mt_tensor *y);
/* cpu_attention.c */
mt_status mt_cpu_attention_fwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k,
                               const mt_tensor *v, float scale, bool causal, mt_tensor *out,
                               mt_tensor *lse);
mt_status mt_cpu_attention_bwd(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k,
                               const mt_tensor *v, const mt_tensor *out, const mt_tensor *lse,
                               const mt_tensor *dout, float scale, bool causal, mt_tensor *dq,
                               mt_tensor *dk, mt_tensor *dv);
/* cpu_swiglu.c */
mt_status mt_cpu_swiglu_fwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up, mt_tensor *y);
mt_status mt_cpu_swiglu_bwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up,
                            const mt_tensor *dy, mt_tensor *dgate, mt_tensor *dup);
/* cpu_optim.c */
mt_status mt_cpu_sgd_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad,
                          mt_tensor *momentum_buf, float lr, float momentum, float dampening,
                          float weight_decay, bool nesterov, bool first_step);
mt_status mt_cpu_adamw_step(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad, mt_tensor *m,
                            mt_tensor *v, float lr, float beta1, float beta2, float eps,
                            float weight_decay, int64_t t);
mt_status mt_cpu_sumsq(mt_ctx *ctx, const mt_tensor *x, mt_tensor *out);

/* Helpers shared by the files above (cpu_reduce.c). */

/* Splits rows into chunks for a per-column sum: a fixed function of (rows, cols), never of the
 * thread count, so that sums accumulated chunk by chunk and then added in chunk order give the
 * same bits on any number of threads. */
int64_t mt_cpu_sum_chunk_rows(int64_t rows, int64_t cols);
/* out[j] += sum_i x[i*cols + j] over rows, accumulated in double over that fixed split. */
mt_status mt_cpu_column_sums_add(mt_ctx *ctx, const float *x, int64_t rows, int64_t cols,
                                 float *out);
/* Scratch from ctx's arena with a message naming the op and the purpose when it runs out. */
void *mt_cpu_scratch(mt_ctx *ctx, size_t bytes, const char *op, const char *what);

#endif
