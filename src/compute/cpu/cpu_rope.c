/* Rotary position embedding on the CPU, in Hugging Face's rotate_half convention.
 *
 * x (B,T,H,D): the first and second halves of each head are the two coordinates of D/2 rotating
 * pairs, (x[i], x[i + D/2]) turned by the angle whose cos and sin are cos[t, i], sin[t, i]:
 *     y[i] = x[i] cos - x[i + D/2] sin,   y[i + D/2] = x[i + D/2] cos + x[i] sin
 * which is HF's q * cos + rotate_half(q) * sin with cos = cat(cos, cos). The inverse turns by the
 * negative angle; a rotation's inverse is its transpose, so that is also the backward. Every pair
 * is read before it is written (y may be x); (b, t) rows split over threads. */
#include "cpu_ops.h"

#define PAR_MIN 32768 /* elements below which one thread does all rows */

mt_status mt_cpu_rope(mt_ctx *ctx, const mt_tensor *x, const mt_tensor *cos, const mt_tensor *sin,
                      bool inverse, mt_tensor *y) {
    const int64_t b = x->shape[0], t = x->shape[1], h = x->shape[2], half = x->shape[3] / 2;
    const float *xp = x->data, *cp = cos->data, *sp = sin->data;
    float *yp = y->data;
    const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for num_threads(ctx->threads) if (b * t * h * half * 2 > PAR_MIN)
    for (int64_t bt = 0; bt < b * t; bt++) {
        const float *c = cp + (bt % t) * half, *s = sp + (bt % t) * half;
        for (int64_t hh = 0; hh < h; hh++) {
            const float *xr = xp + (bt * h + hh) * 2 * half;
            float *yr = yp + (bt * h + hh) * 2 * half;
            for (int64_t i = 0; i < half; i++) {
                const float x0 = xr[i], x1 = xr[i + half], si = sign * s[i];
                yr[i] = x0 * c[i] - x1 * si;
                yr[i + half] = x1 * c[i] + x0 * si;
            }
        }
    }
    return MT_OK;
}
