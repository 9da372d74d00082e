/* A backend is a table of function pointers: memory management plus one entry per op. The public
 * functions in ops.c check arguments and then call these, so an implementation may assume that
 * devices, dtypes and shapes are consistent. An entry left NULL means the backend does not
 * implement that op; tests list such gaps. To add an op: declare it in include/medtrain/ops.h, add
 * an entry here and to MT_OP_TABLE in dispatch.c, check arguments in ops.c, implement it in
 * cpu/ (and cuda/), and add its cases to tests/compute/test_ops.c. */
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
    mt_status (*embedding_fwd)(mt_ctx *ctx, const mt_tensor *table, const mt_tensor *ids,
                               mt_tensor *out);
    mt_status (*embedding_bwd)(mt_ctx *ctx, const mt_tensor *ids, const mt_tensor *dout,
                               mt_tensor *dtable);
    mt_status (*cast)(mt_ctx *ctx, const mt_tensor *src, mt_tensor *dst);
};

extern const mt_backend mt_cpu_backend;
#ifdef MEDTRAIN_HAVE_CUDA
extern const mt_backend mt_cuda_backend;
bool mt_cuda_device_present(void);
#endif

const mt_backend *mt_backend_for(mt_device d); /* NULL when not compiled in */

#ifdef __cplusplus
}
#endif

#endif
