/* A backend is a table of function pointers: memory management plus one entry per op. The public
 * functions in ops.c check arguments and then call these, so an implementation may assume that
 * devices, dtypes and shapes are consistent. An entry left NULL means the backend does not
 * implement that op; tests list such gaps. To add an op: declare it in include/medtrain/ops.h, add
 * an entry here and to MT_OP_TABLE in dispatch.c, check arguments in ops.c, implement it in
 * cpu/ (and cuda/), and add its cases to tests/compute/test_ops.c. An op that is a composition of
 * other entries (a transposed convolution is a convolution's backward run forwards) has no entry
 * of its own: it goes in MT_COMPOSED_TABLE in dispatch.c, with the entries it runs. */
#ifndef MEDTRAIN_COMPUTE_BACKEND_H
#define MEDTRAIN_COMPUTE_BACKEND_H

#include "medtrain/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A GEMM with shapes resolved by mt_gemm: row-major, leading dims are row strides. */
typedef struct mt_gemm_desc {
    bool trans_a, trans_b;
    int64_t m, n, k, batch;
    float alpha, beta;
    const float *a, *b;
    float *c;
    int64_t lda, ldb, ldc;                /* row strides of A, B, C as stored */
    int64_t stride_a, stride_b, stride_c; /* elements between batch items; 0 = shared */
} mt_gemm_desc;

/* A convolution with its geometry resolved and checked by ops.c: x (n,h,w,c), w (k,r,s,c/groups),
 * y (n,p,q,k). The same description serves the forward and both backwards. */
typedef struct mt_conv2d_desc {
    int64_t n, h, w, c; /* input */
    int64_t k, r, s;    /* filters and kernel */
    int64_t p, q;       /* output height and width */
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
} mt_conv2d_desc;

/* A pooling with its geometry resolved by ops.c (ceil_mode is folded into p and q): x (n,h,w,c),
 * y (n,p,q,c). */
typedef struct mt_pool2d_desc {
    int64_t n, h, w, c, p, q;
    int kh, kw, stride_h, stride_w, pad_h, pad_w;
    bool count_include_pad;
} mt_pool2d_desc;

struct mt_backend {
    const char *name;
    mt_device device;

    /* contexts and memory */
    mt_status (*ctx_init)(mt_ctx *ctx);
    void (*ctx_free)(mt_ctx *ctx);
    mt_status (*sync)(mt_ctx *ctx);
    void *(*alloc)(mt_ctx *ctx, size_t bytes); /* NULL + message on failure */
    void (*free)(mt_ctx *ctx, void *p);
    mt_status (*copy)(mt_ctx *ctx, void *dst, mt_device dst_dev, const void *src, mt_device src_dev,
                      size_t bytes);
    mt_status (*zero)(mt_ctx *ctx, void *p, size_t bytes);

    /* ops */
    mt_status (*gemm)(mt_ctx *ctx, const mt_gemm_desc *d);
    mt_status (*axpy)(mt_ctx *ctx, float alpha, const mt_tensor *x, mt_tensor *y);
    mt_status (*scale)(mt_ctx *ctx, float alpha, mt_tensor *x);
    mt_status (*add)(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);
    mt_status (*mul)(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);
    /* x viewed as (outer, n, inner), reduced over n into out (outer, inner) */
    mt_status (*reduce)(mt_ctx *ctx, mt_reduce_kind kind, const mt_tensor *x, int64_t outer,
                        int64_t n, int64_t inner, mt_tensor *out);
    mt_status (*act_fwd)(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, mt_tensor *y);
    mt_status (*act_bwd)(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, const mt_tensor *dy,
                         mt_tensor *dx);
    mt_status (*softmax_fwd)(mt_ctx *ctx, bool log, const mt_tensor *x, mt_tensor *y);
    mt_status (*softmax_bwd)(mt_ctx *ctx, bool log, const mt_tensor *y, const mt_tensor *dy,
                             mt_tensor *dx);
    mt_status (*cross_entropy_fwd)(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                   int ignore_index, mt_tensor *loss);
    mt_status (*cross_entropy_bwd)(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                   int ignore_index, float dloss, mt_tensor *dlogits);
    mt_status (*bce_logits_fwd)(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                const mt_tensor *pos_weight, mt_tensor *loss);
    mt_status (*bce_logits_bwd)(mt_ctx *ctx, const mt_tensor *logits, const mt_tensor *targets,
                                const mt_tensor *pos_weight, float dloss, mt_tensor *dlogits);
    /* p, g (n, pixels, c); sums (n, c, 3) overwritten; coef (n, c, 2) */
    mt_status (*dice_sums)(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g, bool squared,
                           mt_tensor *sums);
    mt_status (*dice_bwd)(mt_ctx *ctx, const mt_tensor *p, const mt_tensor *g,
                          const mt_tensor *coef, bool squared, mt_tensor *dp);
    mt_status (*embedding_fwd)(mt_ctx *ctx, const mt_tensor *table, const mt_tensor *ids,
                               mt_tensor *out);
    mt_status (*embedding_bwd)(mt_ctx *ctx, const mt_tensor *ids, const mt_tensor *dout,
                               mt_tensor *dtable);
    mt_status (*cast)(mt_ctx *ctx, const mt_tensor *src, mt_tensor *dst);
    /* layers (NHWC) */
    mt_status (*conv2d_fwd)(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *x,
                            const mt_tensor *w, const mt_tensor *bias, mt_tensor *y);
    mt_status (*conv2d_bwd_data)(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *dy,
                                 const mt_tensor *w, mt_tensor *dx);
    mt_status (*conv2d_bwd_filter)(mt_ctx *ctx, const mt_conv2d_desc *d, const mt_tensor *x,
                                   const mt_tensor *dy, mt_tensor *dw, mt_tensor *dbias);
    /* x (rows, c) += bias (c); dbias (c) += column sums of dy (rows, c) */
    mt_status (*bias_add)(mt_ctx *ctx, const mt_tensor *bias, mt_tensor *x);
    mt_status (*bias_grad)(mt_ctx *ctx, const mt_tensor *dy, mt_tensor *dbias);
    mt_status (*bn_stats)(mt_ctx *ctx, const mt_tensor *x, mt_tensor *mean, mt_tensor *var);
    mt_status (*bn_fwd)(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *mean,
                        const mt_tensor *var, float eps, const mt_tensor *gamma,
                        const mt_tensor *beta, mt_tensor *y);
    mt_status (*bn_bwd_reduce)(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy,
                               const mt_tensor *mean, const mt_tensor *var, float eps,
                               mt_tensor *sum_dy, mt_tensor *sum_dy_xhat);
    mt_status (*bn_bwd)(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *dy, const mt_tensor *mean,
                        const mt_tensor *var, float eps, const mt_tensor *gamma,
                        const mt_tensor *sum_dy, const mt_tensor *sum_dy_xhat, double count,
                        bool batch_stats, mt_tensor *dx);
    mt_status (*maxpool2d_fwd)(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *x,
                               mt_tensor *y, mt_tensor *argmax);
    mt_status (*maxpool2d_bwd)(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *argmax,
                               const mt_tensor *dy, mt_tensor *dx);
    mt_status (*avgpool2d_fwd)(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *x,
                               mt_tensor *y);
    mt_status (*avgpool2d_bwd)(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *dy,
                               mt_tensor *dx);
    /* x (n,h,w,c) -> y (n,p,q,c), every size at least 1; align_corners only with bilinear */
    mt_status (*upsample2d_fwd)(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                                const mt_tensor *x, mt_tensor *y);
    mt_status (*upsample2d_bwd)(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                                const mt_tensor *dy, mt_tensor *dx);
    mt_status (*dropout_fwd)(mt_ctx *ctx, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                             const mt_tensor *x, mt_tensor *y, mt_tensor *mask);
    mt_status (*dropout_bwd)(mt_ctx *ctx, float p, const mt_tensor *mask, const mt_tensor *dy,
                             mt_tensor *dx);
    /* src (rows, cs) into dst (rows, cd) at column offset, or out (rows, co) from src at offset */
    mt_status (*channels_put)(mt_ctx *ctx, const mt_tensor *src, int64_t offset, mt_tensor *dst);
    mt_status (*channels_get)(mt_ctx *ctx, const mt_tensor *src, int64_t offset, float beta,
                              mt_tensor *out);
    /* decoder (Llama-family) layers. rmsnorm: x viewed as (rows, D), rstd and dw may be NULL.
     * rope: x (B,T,H,D), cos and sin (T,D/2). attention: q (B,T,Hq,D), k and v (B,S,Hkv,D),
     * lse (B,Hq,T) (NULL allowed in the forward), and no empty q. */
    mt_status (*rmsnorm_fwd)(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w, float eps,
                             mt_tensor *y, mt_tensor *rstd);
    mt_status (*rmsnorm_bwd)(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *w,
                             const mt_tensor *rstd, const mt_tensor *dy, mt_tensor *dx,
                             mt_tensor *dw);
    mt_status (*rope)(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *cos, const mt_tensor *sin,
                      bool inverse, mt_tensor *y);
    mt_status (*attention_fwd)(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k,
                               const mt_tensor *v, float scale, bool causal, mt_tensor *out,
                               mt_tensor *lse);
    mt_status (*attention_bwd)(mt_ctx *ctx, const mt_tensor *q, const mt_tensor *k,
                               const mt_tensor *v, const mt_tensor *out, const mt_tensor *lse,
                               const mt_tensor *dout, float scale, bool causal, mt_tensor *dq,
                               mt_tensor *dk, mt_tensor *dv);
    mt_status (*swiglu_fwd)(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up, mt_tensor *y);
    mt_status (*swiglu_bwd)(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up,
                            const mt_tensor *dy, mt_tensor *dgate, mt_tensor *dup);
    /* optimizer steps */
    mt_status (*sgd_step)(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad,
                          mt_tensor *momentum_buf, float lr, float momentum, float dampening,
                          float weight_decay, bool nesterov, bool first_step);
    mt_status (*adamw_step)(mt_ctx *ctx, mt_tensor *param, const mt_tensor *grad, mt_tensor *m,
                            mt_tensor *v, float lr, float beta1, float beta2, float eps,
                            float weight_decay, int64_t t);
    mt_status (*sumsq)(mt_ctx *ctx, const mt_tensor *x, mt_tensor *out);
};

extern const mt_backend mt_cpu_backend;
/* For tests and benchmarks: the CPU convolutions' im2col buffer size per chunk, which also bounds
 * the Winograd tile blocks (0 restores the defaults). Tiny values force many chunks and blocks,
 * which exercises their boundaries on small shapes. */
void mt_cpu_conv_set_chunk_bytes(size_t bytes);
#ifdef MEDTRAIN_HAVE_CUDA
extern const mt_backend mt_cuda_backend;
bool mt_cuda_device_present(void);
#endif

const mt_backend *mt_backend_for(mt_device d); /* NULL when not compiled in */
/* Whether b runs the registry op named op: its entry is set or, for an op that ops.c composes
 * from others (the transposed convolutions), every entry it runs is. false for unknown names. */
bool mt_backend_supports(const mt_backend *b, const char *op);

#ifdef __cplusplus
}
#endif

#endif
