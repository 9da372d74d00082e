// Elementwise CUDA kernels: axpy, scale, add/mul (with b repeated over a's leading dims), and the
// activations with their gradients. Grid-stride loops over the flat element index; f32.
#include <math.h>

#include "cuda_common.h"

enum { THREADS = 256 };

__global__ void axpy_kernel(float alpha, const float *x, float *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += alpha * x[i];
}

__global__ void scale_kernel(float alpha, float *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= alpha;
}

// out[i] = a[i] (op) b[i % nb]: nb == n for equal shapes, the trailing size for a broadcast b.
template <bool MUL>
__global__ void binary_kernel(const float *a, const float *b, float *out, int64_t n, int64_t nb) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float bv = b[i % nb];
        out[i] = MUL ? a[i] * bv : a[i] + bv;
    }
}

__device__ __forceinline__ float gelu_tanh_inner(float x) {
    return 0.7978845608028654f * (x + 0.044715f * x * x * x);
}

__global__ void act_fwd_kernel(int kind, const float *x, float *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i], r;
        switch (kind) {
        case MT_ACT_RELU:
            r = v > 0.f ? v : 0.f;
            break;
        case MT_ACT_GELU:
            r = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
            break;
        case MT_ACT_GELU_TANH:
            r = 0.5f * v * (1.f + tanhf(gelu_tanh_inner(v)));
            break;
        case MT_ACT_SIGMOID: { // as the CPU: e = exp(-|x|) never overflows
            float e = expf(-fabsf(v));
            r = v >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
            break;
        }
        default:
            r = v / (1.f + expf(-v));
            break; // silu
        }
        y[i] = r;
    }
}

__global__ void act_bwd_kernel(int kind, const float *x, const float *dy, float *dx, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i], g;
        switch (kind) {
        case MT_ACT_RELU:
            g = v > 0.f ? 1.f : 0.f;
            break;
        case MT_ACT_GELU: {
            float cdf = 0.5f * (1.f + erff(v * 0.70710678118654752f));
            float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
            g = cdf + v * pdf;
            break;
        }
        case MT_ACT_GELU_TANH: {
            float t = tanhf(gelu_tanh_inner(v));
            float dinner = 0.7978845608028654f * (1.f + 3.f * 0.044715f * v * v);
            g = 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * dinner;
            break;
        }
        case MT_ACT_SIGMOID: { // e / (1 + e)^2, e = exp(-|x|)
            float e = expf(-fabsf(v)), d = 1.f + e;
            g = e / (d * d);
            break;
        }
        default: { // silu
            float s = 1.f / (1.f + expf(-v));
            g = s * (1.f + v * (1.f - s));
            break;
        }
        }
        dx[i] = g * dy[i];
    }
}

extern "C" mt_status mt_cuda_axpy(mt_ctx *ctx, float alpha, const mt_tensor *x, mt_tensor *y) {
    int64_t n = mt_tensor_numel(y);
    axpy_kernel<<<mt_cuda_blocks(n, THREADS), THREADS, 0, mt_cuda_stream(ctx)>>>(
        alpha, (const float *)x->data, (float *)y->data, n);
    MT_CUDA_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_scale(mt_ctx *ctx, float alpha, mt_tensor *x) {
    int64_t n = mt_tensor_numel(x);
    scale_kernel<<<mt_cuda_blocks(n, THREADS), THREADS, 0, mt_cuda_stream(ctx)>>>(
        alpha, (float *)x->data, n);
    MT_CUDA_LAUNCHED();
    return MT_OK;
}

template <bool MUL>
static mt_status binary(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b, mt_tensor *out) {
    int64_t n = mt_tensor_numel(a), nb = mt_tensor_numel(b);
    binary_kernel<MUL><<<mt_cuda_blocks(n, THREADS), THREADS, 0, mt_cuda_stream(ctx)>>>(
        (const float *)a->data, (const float *)b->data, (float *)out->data, n, nb);
    MT_CUDA_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_add(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b,
                                 mt_tensor *out) {
    return binary<false>(ctx, a, b, out);
}

extern "C" mt_status mt_cuda_mul(mt_ctx *ctx, const mt_tensor *a, const mt_tensor *b,
                                 mt_tensor *out) {
    return binary<true>(ctx, a, b, out);
}

extern "C" mt_status mt_cuda_act_fwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x,
                                     mt_tensor *y) {
    int64_t n = mt_tensor_numel(x);
    act_fwd_kernel<<<mt_cuda_blocks(n, THREADS), THREADS, 0, mt_cuda_stream(ctx)>>>(
        (int)kind, (const float *)x->data, (float *)y->data, n);
    MT_CUDA_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_act_bwd(mt_ctx *ctx, mt_act_kind kind, const mt_tensor *x,
                                     const mt_tensor *dy, mt_tensor *dx) {
    int64_t n = mt_tensor_numel(x);
    act_bwd_kernel<<<mt_cuda_blocks(n, THREADS), THREADS, 0, mt_cuda_stream(ctx)>>>(
        (int)kind, (const float *)x->data, (const float *)dy->data, (float *)dx->data, n);
    MT_CUDA_LAUNCHED();
    return MT_OK;
}
