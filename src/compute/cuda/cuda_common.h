/* Shared by the CUDA backend's files: checked-call macros and the per-context state. */
#ifndef MEDTRAIN_CUDA_COMMON_H
#define MEDTRAIN_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "backend.h"

/* Per-context state behind mt_ctx.backend_state. */
typedef struct mt_cuda_state {
    cublasHandle_t cublas;
} mt_cuda_state;

static inline cudaStream_t mt_cuda_stream(mt_ctx *ctx) {
    return (cudaStream_t)ctx->stream;
}

/* Every CUDA runtime call that can fail goes through these: the message names the call, the
 * source line and CUDA's reason. */
#define MT_CUDA_TRY(call)                                                                          \
    do {                                                                                           \
        cudaError_t mt_e_ = (call);                                                                \
        if (mt_e_ != cudaSuccess)                                                                  \
            return mt_fail(MT_ERR_DEVICE, "%s (%s:%d): %s", #call, __FILE__, __LINE__,             \
                           cudaGetErrorString(mt_e_));                                             \
    } while (0)

#define MT_CUBLAS_TRY(call)                                                                        \
    do {                                                                                           \
        cublasStatus_t mt_e_ = (call);                                                             \
        if (mt_e_ != CUBLAS_STATUS_SUCCESS)                                                        \
            return mt_fail(MT_ERR_DEVICE, "%s (%s:%d): %s", #call, __FILE__, __LINE__,             \
                           cublasGetStatusString(mt_e_));                                          \
    } while (0)

/* A kernel launch is checked for launch errors (bad configuration); faults surface at sync. */
#define MT_CUDA_LAUNCHED() MT_CUDA_TRY(cudaGetLastError())

static inline unsigned mt_cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535 * 32 ? 65535 * 32 : (b < 1 ? 1 : b));
}

#ifdef __cplusplus
extern "C" {
#endif
mt_status mt_cuda_axpy(mt_ctx *ctx, float alpha, const mt_tensor *x, mt_tensor *y);
mt_status mt_cuda_scale(mt_ctx *ctx, float alpha, mt_tensor *x);
mt_status mt_cuda_add(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);
mt_status mt_cuda_mul(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out);
mt_status mt_cuda_act_fwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, mt_tensor *y);
mt_status mt_cuda_act_bwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x, const mt_tensor *dy,
                          mt_tensor *dx);
#ifdef __cplusplus
}
#endif

#endif
