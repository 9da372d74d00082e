// The CUDA backend: contexts (device, stream, cuBLAS handle), device memory, and GEMM through
// cuBLAS. Elementwise kernels live in cuda_elementwise.cu. Ops without a CUDA implementation yet
// are left NULL in the table below and so are not registered (tests list them); issue-by-issue
// they gain kernels, cuBLASLt epilogues and cuDNN convolutions.
#include <stdint.h>
#include <stdio.h>

#include "cuda_common.h"
#include "medtrain/cuda.h"
#include "medtrain/mem.h"
#ifdef MEDTRAIN_HAVE_NCCL
#include <nccl.h>
#endif

extern "C" bool mt_cuda_device_present(void) {
    return mt_cuda_device_count() > 0;
}

extern "C" int mt_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return n;
}

extern "C" void mt_cuda_versions(char *buf, size_t n) {
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaError_t e = cudaDriverGetVersion(&drv);
    if (e != cudaSuccess || drv == 0)
        snprintf(buf, n, "CUDA runtime %d.%d, no driver", rt / 1000, rt % 1000 / 10);
    else
        snprintf(buf, n, "CUDA runtime %d.%d, driver %d.%d", rt / 1000, rt % 1000 / 10, drv / 1000,
                 drv % 1000 / 10);
    cudaGetLastError();
}

extern "C" void mt_cuda_device_describe(int i, char *buf, size_t n) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, n, "device %d: properties unavailable", i);
        return;
    }
    snprintf(buf, n, "%s, %.1f GiB, sm_%d%d", p.name, (double)p.totalGlobalMem / (1u << 30),
             p.major, p.minor);
}

extern "C" const char *mt_cuda_nccl_version(void) {
#ifdef MEDTRAIN_HAVE_NCCL
    static char buf[32];
    int v = 0;
    if (ncclGetVersion(&v) != ncclSuccess) return "unavailable";
    snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    return buf;
#else
    return "not built";
#endif
}

// Scratch arenas on the GPU: blocks come from cudaMalloc on the context's device (user holds the
// device ordinal), so ops never allocate device memory per call.
enum { CUDA_SCRATCH_BLOCK = 64 << 20 };

static void *scratch_block_alloc(size_t bytes, void *user) {
    int device = (int)(intptr_t)user;
    void *p = NULL;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        mt_fail(MT_ERR_NOMEM, "out of GPU memory for a %zu-byte scratch block on device %d: %s",
                bytes, device, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void scratch_block_free(void *p, void *user) {
    cudaFree(p);
}

static mt_status cuda_ctx_init(mt_ctx *ctx) {
    MT_CUDA_TRY(cudaSetDevice(ctx->device_index));
    cudaStream_t s;
    MT_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    mt_cuda_state *st = (mt_cuda_state *)mt_calloc(1, sizeof *st, "CUDA context state");
    if (!st) {
        cudaStreamDestroy(s);
        return MT_ERR_NOMEM;
    }
    ctx->stream = s;
    ctx->backend_state = st;
    mt_arena_allocator device_memory = {scratch_block_alloc, scratch_block_free,
                                        (void *)(intptr_t)ctx->device_index};
    mt_arena_init_with(&ctx->scratch, "cuda scratch", CUDA_SCRATCH_BLOCK, device_memory);
    MT_CUBLAS_TRY(cublasCreate(&st->cublas));
    MT_CUBLAS_TRY(cublasSetStream(st->cublas, s));
    return MT_OK;
}

static void cuda_ctx_free(mt_ctx *ctx) {
    mt_cuda_state *st = (mt_cuda_state *)ctx->backend_state;
    if (st) {
        if (st->cublas) cublasDestroy(st->cublas);
        mt_free(st);
    }
    if (ctx->stream) {
        cudaStreamSynchronize(mt_cuda_stream(ctx)); // no kernel may still use scratch memory
        mt_arena_free(&ctx->scratch);
        cudaStreamDestroy(mt_cuda_stream(ctx));
    }
    ctx->backend_state = NULL;
    ctx->stream = NULL;
}

static mt_status cuda_sync(mt_ctx *ctx) {
    MT_CUDA_TRY(cudaStreamSynchronize(mt_cuda_stream(ctx)));
    return MT_OK;
}

static void *cuda_alloc(mt_ctx *ctx, size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        mt_fail(MT_ERR_NOMEM, "out of GPU memory allocating %zu bytes (%.1f MiB) on device %d: %s",
                bytes, (double)bytes / (1 << 20), ctx->device_index, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free(mt_ctx *ctx, void *p) {
    cudaFree(p);
}

static mt_status cuda_copy(mt_ctx *ctx, void *dst, mt_device dst_dev, const void *src,
                           mt_device src_dev, size_t bytes) {
    cudaMemcpyKind kind =
        dst_dev == MT_CUDA
            ? (src_dev == MT_CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
            : (src_dev == MT_CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    MT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, kind, mt_cuda_stream(ctx)));
    /* Host memory may be reused as soon as we return: copies touching the host complete here. */
    if (dst_dev != MT_CUDA || src_dev != MT_CUDA)
        MT_CUDA_TRY(cudaStreamSynchronize(mt_cuda_stream(ctx)));
    return MT_OK;
}

static mt_status cuda_zero(mt_ctx *ctx, void *p, size_t bytes) {
    MT_CUDA_TRY(cudaMemsetAsync(p, 0, bytes, mt_cuda_stream(ctx)));
    return MT_OK;
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands and M/N.
static mt_status cuda_gemm(mt_ctx *ctx, const mt_gemm_desc *d) {
    mt_cuda_state *st = (mt_cuda_state *)ctx->backend_state;
    cublasOperation_t ta = d->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = d->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    MT_CUBLAS_TRY(cublasSgemmStridedBatched(st->cublas, tb, ta, (int)d->n, (int)d->m, (int)d->k,
                                            &d->alpha, d->b, (int)d->ldb, d->stride_b, d->a,
                                            (int)d->lda, d->stride_a, &d->beta, d->c, (int)d->ldc,
                                            d->stride_c, (int)d->batch));
    return MT_OK;
}

extern "C" const mt_backend mt_cuda_backend = {
    /* name */ "cuda",
    /* device */ MT_CUDA,
    /* ctx_init */ cuda_ctx_init,
    /* ctx_free */ cuda_ctx_free,
    /* sync */ cuda_sync,
    /* alloc */ cuda_alloc,
    /* free */ cuda_free,
    /* copy */ cuda_copy,
    /* zero */ cuda_zero,
    /* gemm */ cuda_gemm,
    /* axpy */ mt_cuda_axpy,
    /* scale */ mt_cuda_scale,
    /* add */ mt_cuda_add,
    /* mul */ mt_cuda_mul,
    /* reduce */ NULL,
    /* act_fwd */ mt_cuda_act_fwd,
    /* act_bwd */ mt_cuda_act_bwd,
    /* softmax_fwd */ NULL,
    /* softmax_bwd */ NULL,
    /* cross_entropy_fwd */ NULL,
    /* cross_entropy_bwd */ NULL,
    /* bce_logits_fwd */ NULL,
    /* bce_logits_bwd */ NULL,
    /* dice_sums */ NULL,
    /* dice_bwd */ NULL,
    /* embedding_fwd */ NULL,
    /* embedding_bwd */ NULL,
    /* cast */ NULL,
    /* conv2d_fwd */ NULL,
    /* conv2d_bwd_data */ NULL,
    /* conv2d_bwd_filter */ NULL,
    /* bias_add */ NULL,
    /* bias_grad */ NULL,
    /* bn_stats */ NULL,
    /* bn_fwd */ NULL,
    /* bn_bwd_reduce */ NULL,
    /* bn_bwd */ NULL,
    /* maxpool2d_fwd */ NULL,
    /* maxpool2d_bwd */ NULL,
    /* avgpool2d_fwd */ NULL,
    /* avgpool2d_bwd */ NULL,
    /* upsample2d_fwd */ NULL,
    /* upsample2d_bwd */ NULL,
    /* dropout_fwd */ NULL,
    /* dropout_bwd */ NULL,
    /* channels_put */ NULL,
    /* channels_get */ NULL,
    /* rmsnorm_fwd */ NULL,
    /* rmsnorm_bwd */ NULL,
    /* rope */ NULL,
    /* attention_fwd */ NULL,
    /* attention_bwd */ NULL,
    /* swiglu_fwd */ NULL,
    /* swiglu_bwd */ NULL,
    /* sgd_step */ NULL,
    /* adamw_step */ NULL,
    /* sumsq */ NULL,
};
