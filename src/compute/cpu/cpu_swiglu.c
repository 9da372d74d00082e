/* SwiGLU (Llama's MLP gate) on the CPU: y = silu(gate) * up, elementwise.
 *
 * silu(g) = g / (1 + exp(-g)), rounded to f32 and then multiplied by up, as PyTorch computes
 * F.silu(gate) * up. With s = sigmoid(g), silu'(g) = s (1 + g (1 - s)), so
 *     dgate = dy * up * s * (1 + g (1 - s)),   dup = dy * silu(g).
 * Each element is read before it is written, so outputs may be inputs. */
#include <math.h>
#include "cpu_ops.h"

#define PAR_MIN 32768 /* elements below which one thread does all */

mt_status mt_cpu_swiglu_fwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up, mt_tensor *y) {
    const int64_t n = mt_tensor_numel(y);
    const float *gp = gate->data, *up_ = up->data;
    float *yp = y->data;
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float g = gp[i], silu = g / (1.0f + expf(-g));
        yp[i] = silu * up_[i];
    }
    return MT_OK;
}

mt_status mt_cpu_swiglu_bwd(mt_ctx *ctx, const mt_tensor *gate, const mt_tensor *up,
                            const mt_tensor *dy, mt_tensor *dgate, mt_tensor *dup) {
    const int64_t n = mt_tensor_numel(dgate);
    const float *gp = gate->data, *up_ = up->data, *dyp = dy->data;
    float *dgp = dgate->data, *dup_ = dup->data;
#pragma omp parallel for num_threads(ctx->threads) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float g = gp[i], u = up_[i], d = dyp[i];
        const float den = 1.0f + expf(-g), s = 1.0f / den;
        dgp[i] = d * u * (s * (1.0f + g * (1.0f - s)));
        dup_[i] = d * (g / den);
    }
    return MT_OK;
}
