/* Upsampling on the CPU: nearest and bilinear resizing of NHWC maps, as PyTorch's F.interpolate
 * with the output size given.
 *
 * Resizing is separable. Along each axis, output index o reads input indices i0(o) and i1(o) with
 * weights l0(o) and l1(o) (nearest: i0 alone, weight 1). The axis tables are computed once per
 * call with PyTorch's own float arithmetic (ATen/native/UpSample.h: nearest_idx,
 * area_pixel_compute_scale, area_pixel_compute_source_index, guard_index_and_lambda), so that the
 * same input pixels are read and the weights agree with PyTorch's bit for bit:
 *     nearest    out == in: i = o;  out == 2*in: i = o/2;  else i = min(floor(o * s), in-1) with
 *                s = (float)in / out and o * s a float product (OpenCV's INTER_NEAREST, not
 *                'nearest-exact');
 *     bilinear   out == in: i0 = i1 = o, l1 = 0. Else src = s * o with s = (in-1)/(out-1) (0 when
 *                out is 1) for align_corners, or src = s * (o + 0.5) - 0.5 with s = in/out,
 *                clamped at 0; then i0 = min(floor(src), in-1), l1 = clamp(src - i0, 0, 1),
 *                l0 = 1 - l1 and i1 = i0 + 1 unless i0 is the last row (then i1 = i0: the edge
 *                pixel is repeated).
 * Checked against torch 2.x on the CPU (AVX512): nearest and align_corners agree everywhere
 * tried (every in <= 40 with out < 90, and 150 random pairs up to 700 -> 1500). Without
 * align_corners, s * (o + 0.5) - 0.5 is rounded once (a fused multiply-add) by PyTorch's
 * channels-last kernel for C >= 4 at every size, and by all its kernels for outputs up to ~126;
 * its generic kernels (NCHW, or channels-last with C < 4) round twice for larger outputs. We
 * round once everywhere, so in those cases src may differ from PyTorch's by one f32 ulp (weights
 * by ~1e-7; rarely i0 moves by one with a weight of ~0 or ~1 on the same pixels).
 * The sizes always come from the tensors: PyTorch called with a scale_factor it does not recompute
 * uses 1/scale_factor instead of in/out, which is the same float for integer factors only.
 *
 * Forward: one work item per output row (n, p): a copy of C floats per pixel (nearest), or four
 * weighted input pixels, y = l0h (l0w x00 + l1w x01) + l1h (l0w x10 + l1w x11), in f32.
 *
 * Backward: a gather, so that threads never share a dx element and every sum has a fixed order.
 * The axis tables are inverted into per-input lists of (output index, weight), in order of output
 * index; each input row (n, h) then adds up, in double, for each output row in its list and each
 * input column's list of output columns, the weighted dy that read it, and stores the row once.
 * The total work is the forward's, and the result does not depend on the thread count. */
#include <math.h>
#include <string.h>
#include <omp.h>
#include "cpu_ops.h"

#define PAR_MIN 32768 /* output elements below which a loop runs on one thread */

/* One axis of the resize: in -> out, with (for the backward) its inverse. */
typedef struct axis {
    int64_t in, out;
    int taps;         /* input indices each output index reads: 1 (nearest) or 2 (bilinear) */
    int64_t *i0, *i1; /* (out) the indices read ... */
    float *l0, *l1;   /* (out) ... and their weights */
    int64_t *first;   /* (in + 1) input i is read by list entries [first[i], first[i+1]) */
    int64_t *src_o;   /* (out * taps) the list: output index ... */
    float *src_w;     /* ... and weight */
} axis;

/* PyTorch's nearest_idx with the scale inferred from the sizes. */
static int64_t nearest_index(int64_t o, int64_t in, int64_t out) {
    if (out == in) return o;
    if (out == 2 * in) return o >> 1;
    float s = (float)in / (float)out;
    int64_t i = (int64_t)floorf((float)o * s);
    return i < in - 1 ? i : in - 1;
}

/* PyTorch's compute_source_index_and_lambda for one output index. */
static void linear_taps(int64_t o, int64_t in, int64_t out, bool align_corners, int64_t *i0,
                        int64_t *i1, float *l0, float *l1) {
    if (out == in) {
        *i0 = *i1 = o;
        *l0 = 1.0f;
        *l1 = 0.0f;
        return;
    }
    float src;
    if (align_corners) {
        float s = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
        src = s * (float)o;
    } else {
        float s = (float)in / (float)out;
        /* s * (o + 0.5) - 0.5 rounded once: the float product is exact in double, and so is the
         * difference for any size that fits in memory, so this is fmaf without its cost. */
        src = (float)((double)s * ((double)o + 0.5) - 0.5);
        if (src < 0.0f) src = 0.0f;
    }
    int64_t i = (int64_t)floorf(src);
    if (i > in - 1) i = in - 1;
    float l = src - (float)i;
    l = l < 0.0f ? 0.0f : (l > 1.0f ? 1.0f : l);
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *l1 = l;
    *l0 = 1.0f - l;
}

/* Fills a's forward tables (and with inverse, the per-input lists) from scratch memory. */
static mt_status axis_init(mt_ctx *ctx, const char *op, mt_upsample_mode mode, bool align_corners,
                           int64_t in, int64_t out, bool inverse, axis *a) {
    *a = (axis){.in = in, .out = out, .taps = mode == MT_UPSAMPLE_NEAREST ? 1 : 2};
    a->i0 = mt_cpu_scratch(ctx, (size_t)(2 * out) * sizeof(int64_t), op, "index tables");
    a->l0 = mt_cpu_scratch(ctx, (size_t)(2 * out) * sizeof(float), op, "weight tables");
    if (!a->i0 || !a->l0) return MT_ERR_NOMEM;
    a->i1 = a->i0 + out;
    a->l1 = a->l0 + out;
    for (int64_t o = 0; o < out; o++) {
        if (mode == MT_UPSAMPLE_NEAREST) {
            a->i0[o] = a->i1[o] = nearest_index(o, in, out);
            a->l0[o] = 1.0f;
            a->l1[o] = 0.0f;
        } else {
            linear_taps(o, in, out, align_corners, &a->i0[o], &a->i1[o], &a->l0[o], &a->l1[o]);
        }
    }
    if (!inverse) return MT_OK;
    int64_t entries = out * a->taps;
    a->first = mt_cpu_scratch(ctx, (size_t)(in + 1 + entries) * sizeof(int64_t), op,
                              "inverse index lists");
    a->src_w = mt_cpu_scratch(ctx, (size_t)entries * sizeof(float), op, "inverse weight lists");
    if (!a->first || !a->src_w) return MT_ERR_NOMEM;
    a->src_o = a->first + in + 1;
    /* count per input, prefix sums, then fill in order of output index (a counting sort) */
    memset(a->first, 0, (size_t)(in + 1) * sizeof(int64_t));
    for (int64_t o = 0; o < out; o++) {
        a->first[a->i0[o] + 1]++;
        if (a->taps == 2) a->first[a->i1[o] + 1]++;
    }
    for (int64_t i = 0; i < in; i++) a->first[i + 1] += a->first[i];
    int64_t *next = a->first; /* first[i] is input i's next free entry while filling */
    for (int64_t o = 0; o < out; o++) {
        int64_t k = next[a->i0[o]]++;
        a->src_o[k] = o;
        a->src_w[k] = a->l0[o];
        if (a->taps == 2) {
            k = next[a->i1[o]]++;
            a->src_o[k] = o;
            a->src_w[k] = a->l1[o];
        }
    }
    /* first[i] is now the end of input i's list, which is where input i+1's starts */
    for (int64_t i = in; i > 0; i--) a->first[i] = a->first[i - 1];
    a->first[0] = 0;
    return MT_OK;
}

mt_status mt_cpu_upsample2d_fwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                                const mt_tensor *x, mt_tensor *y) {
    const int64_t n = x->shape[0], h = x->shape[1], w = x->shape[2], c = x->shape[3];
    const int64_t p = y->shape[1], q = y->shape[2];
    const float *xp = x->data;
    float *yp = y->data;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    axis ah, aw;
    mt_status s = axis_init(ctx, "upsample2d_fwd", mode, align_corners, h, p, false, &ah);
    if (s == MT_OK) s = axis_init(ctx, "upsample2d_fwd", mode, align_corners, w, q, false, &aw);
    if (s != MT_OK) {
        mt_arena_rewind(&ctx->scratch, mark);
        return s;
    }
    const bool nearest = mode == MT_UPSAMPLE_NEAREST;
#pragma omp parallel for num_threads(ctx->threads) if (n * p * q * c > PAR_MIN)
    for (int64_t row = 0; row < n * p; row++) {
        int64_t img = row / p, o = row % p;
        const float *r0 = xp + (img * h + ah.i0[o]) * w * c,
                    *r1 = xp + (img * h + ah.i1[o]) * w * c;
        float *out = yp + row * q * c;
        if (nearest) {
            for (int64_t j = 0; j < q; j++)
                memcpy(out + j * c, r0 + aw.i0[j] * c, (size_t)c * sizeof(float));
            continue;
        }
        const float lh0 = ah.l0[o], lh1 = ah.l1[o];
        for (int64_t j = 0; j < q; j++, out += c) {
            const float *a0 = r0 + aw.i0[j] * c, *a1 = r0 + aw.i1[j] * c;
            const float *b0 = r1 + aw.i0[j] * c, *b1 = r1 + aw.i1[j] * c;
            const float lw0 = aw.l0[j], lw1 = aw.l1[j];
            for (int64_t k = 0; k < c; k++)
                out[k] = lh0 * (lw0 * a0[k] + lw1 * a1[k]) + lh1 * (lw0 * b0[k] + lw1 * b1[k]);
        }
    }
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}

/* dx row (img, i) from dy: every output row that read input row i, and within it every output
 * column that read each input column, weighted; acc holds w*c doubles. */
static void gather_row(const axis *ah, const axis *aw, const float *dy, int64_t img, int64_t i,
                       int64_t c, double *acc, float *dx_row) {
    const int64_t w = aw->in, p = ah->out, q = aw->out;
    for (int64_t k = 0; k < w * c; k++) acc[k] = 0.0;
    for (int64_t e = ah->first[i]; e < ah->first[i + 1]; e++) {
        const float *dy_row = dy + (img * p + ah->src_o[e]) * q * c;
        const double wh = ah->src_w[e];
        for (int64_t j = 0; j < w; j++) {
            double *a = acc + j * c;
            for (int64_t f = aw->first[j]; f < aw->first[j + 1]; f++) {
                const float *g = dy_row + aw->src_o[f] * c;
                const double wt = wh * aw->src_w[f];
                for (int64_t k = 0; k < c; k++) a[k] += wt * g[k];
            }
        }
    }
    for (int64_t k = 0; k < w * c; k++) dx_row[k] = (float)acc[k];
}

mt_status mt_cpu_upsample2d_bwd(mt_ctx *ctx, mt_upsample_mode mode, bool align_corners,
                                const mt_tensor *dy, mt_tensor *dx) {
    const char *op = "upsample2d_bwd";
    const int64_t n = dx->shape[0], h = dx->shape[1], w = dx->shape[2], c = dx->shape[3];
    const int64_t p = dy->shape[1], q = dy->shape[2];
    const float *dyp = dy->data;
    float *dxp = dx->data;
    const int threads = n * p * q * c > PAR_MIN ? ctx->threads : 1;
    mt_arena_mark mark = mt_arena_save(&ctx->scratch);
    axis ah, aw;
    mt_status s = axis_init(ctx, op, mode, align_corners, h, p, true, &ah);
    if (s == MT_OK) s = axis_init(ctx, op, mode, align_corners, w, q, true, &aw);
    double *acc = NULL;
    if (s == MT_OK) {
        acc = mt_cpu_scratch(ctx, (size_t)(threads * w * c) * sizeof(double), op, "row sums");
        if (!acc) s = MT_ERR_NOMEM;
    }
    if (s != MT_OK) {
        mt_arena_rewind(&ctx->scratch, mark);
        return s;
    }
#pragma omp parallel for num_threads(threads) if (threads > 1)
    for (int64_t row = 0; row < n * h; row++)
        gather_row(&ah, &aw, dyp, row / h, row % h, c, acc + omp_get_thread_num() * w * c,
                   dxp + row * w * c);
    mt_arena_rewind(&ctx->scratch, mark);
    return MT_OK;
}
