/* Dropout on the CPU.
 *
 * The mask depends only on (seed, stream) and each element's index plus offset, never on threads
 * or backend: element e = i + offset takes the e-th 32-bit output of the Philox stream
 * mt_rng_init(seed, stream, 0), that is lane e % 4 of block e / 4, turned into a uniform u in
 * [0, 1) with 24 bits as mt_rng_uniform does. The element is kept when u >= p, so with
 * probability 1 - p. Any backend that draws the same way gives the same mask; an offset lets a
 * caller split one logical tensor into calls. */
#include "medtrain/rng.h"
#include "cpu_ops.h"

#define BLOCK 4096 /* elements per work item (a multiple of 4: items start on a Philox block) */

/* The kept scale 1/(1-p); p == 1 keeps nothing, and the scale is then never used. */
static float keep_scale(float p) {
    return p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
}

mt_status mt_cpu_dropout_fwd(mt_ctx *ctx, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                             const mt_tensor *x, mt_tensor *y, mt_tensor *mask) {
    const float *xp = x->data;
    float *yp = y->data;
    uint8_t *mp = mask->data;
    const int64_t n = mt_tensor_numel(x), items = (n + BLOCK - 1) / BLOCK;
    const float scale = keep_scale(p);
    mt_rng key;
    mt_rng_init(&key, seed, stream, 0);
#pragma omp parallel for num_threads(ctx->threads) if (n > BLOCK)
    for (int64_t it = 0; it < items; it++) {
        int64_t i0 = it * BLOCK, i1 = i0 + BLOCK < n ? i0 + BLOCK : n;
        uint32_t bits[4];
        uint64_t have = UINT64_MAX; /* the Philox block in bits */
        for (int64_t i = i0; i < i1; i++) {
            uint64_t e = (uint64_t)i + offset, blk = e >> 2;
            if (blk != have) {
                uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), 0, 0};
                mt_philox4x32_10(ctr, key.key, bits);
                have = blk;
            }
            float u = (float)(bits[e & 3] >> 8) * 0x1.0p-24f;
            bool keep = u >= p;
            mp[i] = keep;
            yp[i] = keep ? xp[i] * scale : 0.0f;
        }
    }
    return MT_OK;
}

mt_status mt_cpu_dropout_bwd(mt_ctx *ctx, float p, const mt_tensor *mask, const mt_tensor *dy,
                             mt_tensor *dx) {
    const uint8_t *mp = mask->data;
    const float *gp = dy->data;
    float *out = dx->data;
    const int64_t n = mt_tensor_numel(dx);
    const float scale = keep_scale(p);
#pragma omp parallel for num_threads(ctx->threads) if (n > 32768)
    for (int64_t i = 0; i < n; i++) out[i] = mp[i] ? gp[i] * scale : 0.0f;
    return MT_OK;
}
