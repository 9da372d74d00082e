/* DenseNet-121 (torchvision's densenet121: growth 32, bn_size 4, blocks 6/12/24/16, 64 initial
 * features), with its module names: features.conv0, features.norm0,
 * features.denseblock1.denselayer1.norm1/conv1/norm2/conv2, features.transition1.norm/conv,
 * features.norm5, classifier. Final ReLU, adaptive average pool, linear; dropout (drop_rate)
 * on each dense layer's new features.
 *
 * Memory. A dense block is one buffer (N,H,W,C_end) that each layer appends its 32 channels to
 * (channels last, so an append is a strided put); a layer's input is a channel prefix of it,
 * gathered into a temporary when needed. Kept per layer: only its bottleneck conv output (128
 * channels, norm2's input) and dropout mask; the normalised inputs of both convs are recomputed
 * in backward. That is linear in depth where torchvision's default keeps each layer's
 * concatenated input and its normalised copy (quadratic). The block gradient is one buffer too:
 * each layer's input gradient is added into its prefix. */
#include <stdio.h>
#include "model_internal.h"

enum { GROWTH = 32, BOTTLENECK = 128, N_BLOCKS = 4 };
static const int block_layers[N_BLOCKS] = {6, 12, 24, 16};

typedef struct dn_layer {
    int c_in;
    mt_nn_bn norm1, norm2;
    mt_nn_conv conv1, conv2;
    mt_tensor c1, mask; /* kept: conv1's output (norm2's input); dropout mask (u8) */
} dn_layer;

typedef struct densenet {
    mdl_stem stem;
    dn_layer *layers; /* all dense layers, block after block */
    int first[N_BLOCKS], c_end[N_BLOCKS];
    mt_nn_bn tnorm[N_BLOCKS - 1];
    mt_nn_conv tconv[N_BLOCKS - 1];
    mt_nn_bn norm5;
    mt_nn_linear classifier;
    float drop;
    mt_tensor block[N_BLOCKS]; /* each block's concatenated features (N,H,W,c_end) */
    mt_tensor f;               /* pooled features (N, c_end[3]) */
} densenet;

static const mt_pool2d_params trans_pool = {.kh = 2, .kw = 2, .stride_h = 2, .stride_w = 2};

static void add_layer(mdl_builder *b, dn_layer *l, int block, int index, int c_in) {
    char name[96];
    const mdl_init init = MDL_INIT_CONV_FAN_IN;
    l->c_in = c_in;
#define NAME(leaf)                                                                                 \
    (snprintf(name, sizeof name, "features.denseblock%d.denselayer%d." leaf, block + 1,            \
              index + 1),                                                                          \
     name)
    l->norm1 = mdl_bn(b, NAME("norm1"), c_in);
    l->conv1 = mdl_conv(b, NAME("conv1"), c_in, BOTTLENECK, 1, 1, 0, init);
    l->norm2 = mdl_bn(b, NAME("norm2"), BOTTLENECK);
    l->conv2 = mdl_conv(b, NAME("conv2"), BOTTLENECK, GROWTH, 3, 1, 1, init);
#undef NAME
}

static mt_status densenet_build(mdl_builder *b, const mt_model_opts *o, void **net) {
    densenet *dn = mt_calloc(1, sizeof *dn, "densenet");
    if (!dn) return MT_ERR_NOMEM;
    *net = dn;
    int total = 0;
    for (int k = 0; k < N_BLOCKS; k++) total += block_layers[k];
    dn->layers = mt_calloc((size_t)total, sizeof *dn->layers, "densenet layers");
    if (!dn->layers) return MT_ERR_NOMEM;
    dn->drop = o->drop_rate;
    mdl_stem_build(b, &dn->stem, "features.conv0", "features.norm0", o->in_channels,
                   MDL_INIT_CONV_FAN_IN);
    int c = 64, li = 0;
    char name[64];
    for (int k = 0; k < N_BLOCKS; k++) {
        dn->first[k] = li;
        for (int j = 0; j < block_layers[k]; j++)
            add_layer(b, &dn->layers[li++], k, j, c + j * GROWTH);
        c += block_layers[k] * GROWTH;
        dn->c_end[k] = c;
        if (k == N_BLOCKS - 1) break;
        snprintf(name, sizeof name, "features.transition%d.norm", k + 1);
        dn->tnorm[k] = mdl_bn(b, name, c);
        snprintf(name, sizeof name, "features.transition%d.conv", k + 1);
        dn->tconv[k] = mdl_conv(b, name, c, c / 2, 1, 1, 0, MDL_INIT_CONV_FAN_IN);
        c /= 2;
    }
    dn->norm5 = mdl_bn(b, "features.norm5", c);
    dn->classifier = mdl_linear(b, "classifier", c, o->n_outputs, true);
    return MT_OK;
}

static void densenet_free(void *net) {
    densenet *dn = net;
    mt_free(dn->layers);
    mt_free(dn);
}

/* ---- forward ------------------------------------------------------------------------------ */

/* Appends layer l's GROWTH channels to the block buffer B at channel l->c_in. */
static mt_status layer_fwd(mdl_run *r, densenet *dn, dn_layer *l, int index, mt_tensor *B) {
    mt_nn_env *e = &r->e;
    int64_t n = B->shape[0], h = B->shape[1], w = B->shape[2];
    mt_tensor g, a2, nf;
    l->mask.data = NULL;
    MT_TRY(mdl_alloc(r, &g, MT_F32, n, h, w, l->c_in)); /* relu(norm1(B[..., :c_in])) */
    MT_TRY(mt_nn_concat_get(e, B, 0, 0.0f, &g));
    MT_TRY(mt_nn_bn_fwd(e, &l->norm1, &g, &g));
    MT_TRY(mt_nn_relu_fwd(e, &g, &g));
    MT_TRY(mdl_alloc(r, &l->c1, MT_F32, n, h, w, BOTTLENECK));
    MT_TRY(mt_nn_conv_fwd(e, &l->conv1, &g, &l->c1));
    mdl_release(r, &g);
    a2 = l->c1; /* eval: normalised in place */
    if (e->train) MT_TRY(mdl_alloc_like(r, &a2, &l->c1));
    MT_TRY(mt_nn_bn_fwd(e, &l->norm2, &l->c1, &a2));
    MT_TRY(mt_nn_relu_fwd(e, &a2, &a2));
    if (!e->train) l->c1.data = NULL; /* a2 owns it now */
    MT_TRY(mdl_alloc(r, &nf, MT_F32, n, h, w, GROWTH));
    MT_TRY(mt_nn_conv_fwd(e, &l->conv2, &a2, &nf));
    mdl_release(r, &a2);
    if (e->train && dn->drop > 0) {
        MT_TRY(mdl_alloc(r, &l->mask, MT_U8, n, h, w, GROWTH));
        MT_TRY(mt_nn_dropout_fwd(e, dn->drop, r->dropout_seed, r->step, (uint64_t)index << 40, &nf,
                                 &nf, &l->mask));
    }
    MT_TRY(mt_nn_concat_put(e, &nf, l->c_in, B));
    mdl_release(r, &nf);
    return MT_OK;
}

/* Transition k: B (N,H,W,C) -> norm, relu, 1x1 conv to C/2, 2x2 average pool -> the first C/2
 * channels of the next block's buffer *next (allocated here). Eval releases B. */
static mt_status trans_fwd(mdl_run *r, densenet *dn, int k, mt_tensor *B, mt_tensor *next) {
    mt_nn_env *e = &r->e;
    int64_t n = B->shape[0], h = B->shape[1], w = B->shape[2], c = B->shape[3];
    int64_t h2 = mt_pool2d_out_dim(h, 2, 2, 0, false), w2 = mt_pool2d_out_dim(w, 2, 2, 0, false);
    if (h2 < 1 || w2 < 1)
        return mt_fail(MT_ERR_SHAPE,
                       "the input is too small: transition %d gets a %lldx%lld map and halves it "
                       "(densenet121 needs at least 29x29 images)",
                       k + 1, (long long)h, (long long)w);
    mt_tensor a = *B, conv, pool;
    if (e->train) MT_TRY(mdl_alloc_like(r, &a, B));
    MT_TRY(mt_nn_bn_fwd(e, &dn->tnorm[k], B, &a));
    MT_TRY(mt_nn_relu_fwd(e, &a, &a));
    if (!e->train) B->data = NULL; /* normalised in place: a owns it now */
    MT_TRY(mdl_alloc(r, &conv, MT_F32, n, h, w, c / 2));
    MT_TRY(mt_nn_conv_fwd(e, &dn->tconv[k], &a, &conv));
    mdl_release(r, &a);
    MT_TRY(mdl_alloc(r, &pool, MT_F32, n, h2, w2, c / 2));
    MT_TRY(mt_nn_avgpool_fwd(e, &trans_pool, &conv, &pool));
    mdl_release(r, &conv);
    MT_TRY(mdl_alloc(r, next, MT_F32, n, h2, w2, dn->c_end[k + 1]));
    MT_TRY(mt_nn_concat_put(e, &pool, 0, next));
    mdl_release(r, &pool);
    return MT_OK;
}

static mt_status densenet_forward(mdl_run *r, void *net, const mt_tensor *x, mt_tensor *logits) {
    densenet *dn = net;
    mt_nn_env *e = &r->e;
    mt_tensor p, a;
    MT_TRY(mdl_stem_fwd(r, &dn->stem, x, &p));
    MT_TRY(mdl_alloc(r, &dn->block[0], MT_F32, p.shape[0], p.shape[1], p.shape[2], dn->c_end[0]));
    MT_TRY(mt_nn_concat_put(e, &p, 0, &dn->block[0]));
    mdl_release(r, &p);
    for (int k = 0; k < N_BLOCKS; k++) {
        for (int j = 0; j < block_layers[k]; j++) {
            int li = dn->first[k] + j;
            MT_TRY(layer_fwd(r, dn, &dn->layers[li], li, &dn->block[k]));
        }
        if (k < N_BLOCKS - 1) MT_TRY(trans_fwd(r, dn, k, &dn->block[k], &dn->block[k + 1]));
    }
    mt_tensor *B = &dn->block[N_BLOCKS - 1];
    a = *B;
    if (e->train) MT_TRY(mdl_alloc_like(r, &a, B));
    MT_TRY(mt_nn_bn_fwd(e, &dn->norm5, B, &a));
    MT_TRY(mt_nn_relu_fwd(e, &a, &a));
    if (!e->train) B->data = NULL;
    MT_TRY(mdl_alloc2(r, &dn->f, a.shape[0], a.shape[3]));
    MT_TRY(mt_nn_gap_fwd(e, &a, &dn->f));
    mdl_release(r, &a);
    MT_TRY(mt_nn_linear_fwd(e, &dn->classifier, &dn->f, logits));
    if (!e->train) mdl_release(r, &dn->f);
    return MT_OK;
}

/* ---- backward ----------------------------------------------------------------------------- */

/* Layer l's backward: its new channels' gradient is final in dB; its input gradient is added
 * into dB's first c_in channels. Releases c1 and the mask. */
static mt_status layer_bwd(mdl_run *r, densenet *dn, dn_layer *l, mt_tensor *B, mt_tensor *dB) {
    mt_nn_env *e = &r->e;
    int64_t n = B->shape[0], h = B->shape[1], w = B->shape[2];
    mt_tensor dnf, a2, da2, g, dg;
    MT_TRY(mdl_alloc(r, &dnf, MT_F32, n, h, w, GROWTH));
    MT_TRY(mt_nn_concat_get(e, dB, l->c_in, 0.0f, &dnf));
    if (l->mask.data) {
        MT_TRY(mt_nn_dropout_bwd(e, dn->drop, &l->mask, &dnf, &dnf));
        mdl_release(r, &l->mask);
    }
    MT_TRY(mdl_alloc_like(r, &a2, &l->c1));
    MT_TRY(mt_nn_bn_apply(e, &l->norm2, &l->c1, true, &a2));
    MT_TRY(mdl_alloc_like(r, &da2, &l->c1));
    MT_TRY(mt_nn_conv_bwd(e, &l->conv2, &a2, &dnf, &da2));
    mdl_release(r, &dnf);
    MT_TRY(mt_nn_relu_bwd(e, &a2, &da2, &da2));
    mdl_release(r, &a2);
    MT_TRY(mt_nn_bn_bwd(e, &l->norm2, &l->c1, &da2, &da2));
    mdl_release(r, &l->c1);
    MT_TRY(mdl_alloc(r, &g, MT_F32, n, h, w, l->c_in)); /* relu(norm1(input)), recomputed */
    MT_TRY(mt_nn_concat_get(e, B, 0, 0.0f, &g));
    MT_TRY(mt_nn_bn_apply(e, &l->norm1, &g, true, &g));
    MT_TRY(mdl_alloc_like(r, &dg, &g));
    MT_TRY(mt_nn_conv_bwd(e, &l->conv1, &g, &da2, &dg));
    mdl_release(r, &da2);
    MT_TRY(mt_nn_relu_bwd(e, &g, &dg, &dg));
    MT_TRY(mt_nn_concat_get(e, B, 0, 0.0f, &g)); /* norm1's input again */
    MT_TRY(mt_nn_bn_bwd(e, &l->norm1, &g, &dg, &dg));
    mdl_release(r, &g);
    MT_TRY(mt_nn_concat_get(e, dB, 0, 1.0f, &dg)); /* dg += dB[..., :c_in] */
    MT_TRY(mt_nn_concat_put(e, &dg, 0, dB));
    mdl_release(r, &dg);
    return MT_OK;
}

/* Transition k backward: *dB (gradient of block k+1's buffer, released with that buffer) ->
 * *dB = the gradient of block k's buffer. */
static mt_status trans_bwd(mdl_run *r, densenet *dn, int k, mt_tensor *dB) {
    mt_nn_env *e = &r->e;
    mt_tensor *B = &dn->block[k], *next = &dn->block[k + 1];
    int64_t c = B->shape[3];
    mt_tensor dpool, dconv, a, dprev;
    MT_TRY(mdl_alloc(r, &dpool, MT_F32, next->shape[0], next->shape[1], next->shape[2], c / 2));
    MT_TRY(mt_nn_concat_get(e, dB, 0, 0.0f, &dpool));
    mdl_release(r, dB);
    mdl_release(r, next);
    MT_TRY(mdl_alloc(r, &dconv, MT_F32, B->shape[0], B->shape[1], B->shape[2], c / 2));
    MT_TRY(mt_nn_avgpool_bwd(e, &trans_pool, &dpool, &dconv));
    mdl_release(r, &dpool);
    MT_TRY(mdl_alloc_like(r, &a, B));
    MT_TRY(mt_nn_bn_apply(e, &dn->tnorm[k], B, true, &a));
    MT_TRY(mdl_alloc_like(r, &dprev, B));
    MT_TRY(mt_nn_conv_bwd(e, &dn->tconv[k], &a, &dconv, &dprev));
    mdl_release(r, &dconv);
    MT_TRY(mt_nn_relu_bwd(e, &a, &dprev, &dprev));
    mdl_release(r, &a);
    MT_TRY(mt_nn_bn_bwd(e, &dn->tnorm[k], B, &dprev, &dprev));
    *dB = dprev;
    return MT_OK;
}

/* Head: classifier, pooling, final ReLU and norm5 -> *dB, the last block's buffer gradient. */
static mt_status head_bwd(mdl_run *r, densenet *dn, const mt_tensor *dlogits, mt_tensor *dB) {
    mt_nn_env *e = &r->e;
    mt_tensor *B = &dn->block[N_BLOCKS - 1];
    mt_tensor df, a;
    MT_TRY(mdl_alloc_like(r, &df, &dn->f));
    MT_TRY(mt_nn_linear_bwd(e, &dn->classifier, &dn->f, dlogits, &df));
    mdl_release(r, &dn->f);
    MT_TRY(mdl_alloc_like(r, dB, B));
    MT_TRY(mt_nn_gap_bwd(e, &df, dB));
    mdl_release(r, &df);
    MT_TRY(mdl_alloc_like(r, &a, B));
    MT_TRY(mt_nn_bn_apply(e, &dn->norm5, B, true, &a));
    MT_TRY(mt_nn_relu_bwd(e, &a, dB, dB));
    mdl_release(r, &a);
    return mt_nn_bn_bwd(e, &dn->norm5, B, dB, dB);
}

static mt_status densenet_backward(mdl_run *r, void *net, const mt_tensor *dlogits) {
    densenet *dn = net;
    mt_nn_env *e = &r->e;
    mt_tensor dB, p, dp;
    MT_TRY(head_bwd(r, dn, dlogits, &dB));
    for (int k = N_BLOCKS - 1; k >= 0; k--) {
        for (int j = block_layers[k] - 1; j >= 0; j--)
            MT_TRY(layer_bwd(r, dn, &dn->layers[dn->first[k] + j], &dn->block[k], &dB));
        if (k > 0) MT_TRY(trans_bwd(r, dn, k - 1, &dB));
    }
    mt_tensor *B = &dn->block[0];
    MT_TRY(mdl_alloc(r, &dp, MT_F32, B->shape[0], B->shape[1], B->shape[2], 64));
    MT_TRY(mt_nn_concat_get(e, &dB, 0, 0.0f, &dp));
    mdl_release(r, &dB);
    MT_TRY(mdl_alloc_like(r, &p, &dp));
    MT_TRY(mt_nn_concat_get(e, B, 0, 0.0f, &p)); /* the stem's pool output */
    mdl_release(r, B);
    return mdl_stem_bwd(r, &dn->stem, &p, &dp);
}

const mdl_arch mdl_densenet121 = {"densenet121",     densenet_build, densenet_forward,
                                  densenet_backward, densenet_free,  false};
