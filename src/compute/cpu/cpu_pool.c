/* Max and average pooling on the CPU over the H and W of NHWC maps, as PyTorch's MaxPool2d and
 * AvgPool2d (ceil_mode and padding resolved into the output size by ops.c).
 *
 * A window of output (p, q) covers input rows [p*stride_h - pad_h, + kh) clipped to the map, and
 * likewise for columns: padding never wins a max, and an average divides by the window's full
 * size (count_include_pad, clipped to the padded map) or by its valid part. Every inner loop runs
 * over the C contiguous channels of a pixel.
 *
 * Forward passes are parallel over output rows. The backward passes scatter each output's
 * gradient into its window; windows overlap when the stride is below the kernel, so the work is
 * split by (image, block of channels), which no two threads share, and each item walks its
 * windows in order: the result does not depend on the thread count. */
#include <math.h>
#include <string.h>
#include "cpu_ops.h"

#define PAR_MIN 32768 /* elements below which a loop runs on one thread */
#define CBLOCK  64    /* channels per backward work item */

/* The window of output (p, q) clipped to the map, and its divisor for an average. */
typedef struct window {
    int64_t h0, h1, w0, w1;
    float div;
} window;

static window window_of(const mt_pool2d_desc *d, int64_t p, int64_t q) {
    int64_t h0 = p * d->stride_h - d->pad_h, w0 = q * d->stride_w - d->pad_w;
    int64_t h1 = h0 + d->kh, w1 = w0 + d->kw;
    /* PyTorch: the full window stops at the padded edge; count_include_pad divides by that */
    int64_t hp = h1 < d->h + d->pad_h ? h1 : d->h + d->pad_h;
    int64_t wp = w1 < d->w + d->pad_w ? w1 : d->w + d->pad_w;
    int64_t full = (hp - h0) * (wp - w0);
    window win = {.h0 = h0 > 0 ? h0 : 0,
                  .h1 = h1 < d->h ? h1 : d->h,
                  .w0 = w0 > 0 ? w0 : 0,
                  .w1 = w1 < d->w ? w1 : d->w};
    win.div = (float)(d->count_include_pad ? full : (win.h1 - win.h0) * (win.w1 - win.w0));
    return win;
}

mt_status mt_cpu_maxpool2d_fwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *x,
                               mt_tensor *y, mt_tensor *argmax) {
    const float *xp = x->data;
    float *yp = y->data;
    int32_t *ap = argmax->data;
    const int64_t c = d->c, rows = d->n * d->p;
#pragma omp parallel for num_threads(ctx->threads) if (rows * d->q * c * d->kh * d->kw > PAR_MIN)
    for (int64_t np = 0; np < rows; np++) {
        int64_t n = np / d->p, p = np % d->p;
        for (int64_t q = 0; q < d->q; q++) {
            window win = window_of(d, p, q);
            float *out = yp + (np * d->q + q) * c;
            int32_t *arg = ap + (np * d->q + q) * c;
            int32_t first = (int32_t)(win.h0 * d->w + win.w0);
            for (int64_t k = 0; k < c; k++) out[k] = -INFINITY, arg[k] = first;
            for (int64_t ih = win.h0; ih < win.h1; ih++)
                for (int64_t iw = win.w0; iw < win.w1; iw++) {
                    const float *in = xp + ((n * d->h + ih) * d->w + iw) * c;
                    int32_t pos = (int32_t)(ih * d->w + iw);
                    /* a NaN wins (and a later NaN wins over it), as in PyTorch; written as
                     * selects so that the loop vectorises */
                    for (int64_t k = 0; k < c; k++) {
                        float v = in[k], o = out[k];
                        bool take = v > o || v != v;
                        out[k] = take ? v : o;
                        arg[k] = take ? pos : arg[k];
                    }
                }
        }
    }
    return MT_OK;
}

mt_status mt_cpu_maxpool2d_bwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *argmax,
                               const mt_tensor *dy, mt_tensor *dx) {
    const int32_t *ap = argmax->data;
    const float *gp = dy->data;
    float *out = dx->data;
    const int64_t c = d->c, hw = d->h * d->w, outs = d->n * d->p * d->q * c;
    /* argmax came from the caller: an index outside the map would write outside dx */
    for (int64_t i = 0; i < outs; i++)
        if (ap[i] < 0 || ap[i] >= hw)
            return mt_fail(MT_ERR_ARG,
                           "maxpool2d_bwd: argmax[%lld] = %d is outside the %lldx%lld map "
                           "(expected h*W + w from maxpool2d_fwd)",
                           (long long)i, (int)ap[i], (long long)d->h, (long long)d->w);
    const int64_t blocks = (c + CBLOCK - 1) / CBLOCK, items = d->n * blocks;
#pragma omp parallel for num_threads(ctx->threads) if (d->n * hw * c > PAR_MIN)
    for (int64_t it = 0; it < items; it++) {
        int64_t n = it / blocks, c0 = (it % blocks) * CBLOCK,
                c1 = c0 + CBLOCK < c ? c0 + CBLOCK : c;
        float *img = out + n * hw * c;
        for (int64_t i = 0; i < hw; i++)
            for (int64_t k = c0; k < c1; k++) img[i * c + k] = 0.0f;
        const int64_t base = n * d->p * d->q * c;
        for (int64_t o = 0; o < d->p * d->q; o++)
            for (int64_t k = c0; k < c1; k++)
                img[(int64_t)ap[base + o * c + k] * c + k] += gp[base + o * c + k];
    }
    return MT_OK;
}

mt_status mt_cpu_avgpool2d_fwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *x,
                               mt_tensor *y) {
    const float *xp = x->data;
    float *yp = y->data;
    const int64_t c = d->c, rows = d->n * d->p;
#pragma omp parallel for num_threads(ctx->threads) if (rows * d->q * c * d->kh * d->kw > PAR_MIN)
    for (int64_t np = 0; np < rows; np++) {
        int64_t n = np / d->p, p = np % d->p;
        for (int64_t q = 0; q < d->q; q++) {
            window win = window_of(d, p, q);
            float *out = yp + (np * d->q + q) * c;
            for (int64_t k = 0; k < c; k++) out[k] = 0.0f;
            for (int64_t ih = win.h0; ih < win.h1; ih++)
                for (int64_t iw = win.w0; iw < win.w1; iw++) {
                    const float *in = xp + ((n * d->h + ih) * d->w + iw) * c;
                    for (int64_t k = 0; k < c; k++) out[k] += in[k];
                }
            for (int64_t k = 0; k < c; k++) out[k] /= win.div;
        }
    }
    return MT_OK;
}

mt_status mt_cpu_avgpool2d_bwd(mt_ctx *ctx, const mt_pool2d_desc *d, const mt_tensor *dy,
                               mt_tensor *dx) {
    const float *gp = dy->data;
    float *out = dx->data;
    const int64_t c = d->c, hw = d->h * d->w;
    const int64_t blocks = (c + CBLOCK - 1) / CBLOCK, items = d->n * blocks;
#pragma omp parallel for num_threads(ctx->threads) if (d->n * hw * c > PAR_MIN)
    for (int64_t it = 0; it < items; it++) {
        int64_t n = it / blocks, c0 = (it % blocks) * CBLOCK,
                c1 = c0 + CBLOCK < c ? c0 + CBLOCK : c;
        float *img = out + n * hw * c;
        for (int64_t i = 0; i < hw; i++)
            for (int64_t k = c0; k < c1; k++) img[i * c + k] = 0.0f;
        for (int64_t p = 0; p < d->p; p++)
            for (int64_t q = 0; q < d->q; q++) {
                window win = window_of(d, p, q);
                const float *g = gp + ((n * d->p + p) * d->q + q) * c;
                float share[CBLOCK];
                for (int64_t k = c0; k < c1; k++) share[k - c0] = g[k] / win.div;
                for (int64_t ih = win.h0; ih < win.h1; ih++)
                    for (int64_t iw = win.w0; iw < win.w1; iw++) {
                        float *dst = img + (ih * d->w + iw) * c;
                        for (int64_t k = c0; k < c1; k++) dst[k] += share[k - c0];
                    }
            }
    }
    return MT_OK;
}
