/* ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, stride on the 3x3 conv: torchvision's
 * "v1.5"), with torchvision's module names: conv1, bn1, layer1.0.conv1, layer1.0.downsample.0/1,
 * fc. The stem takes in_channels (1 or 3).
 *
 * Memory. A block keeps its conv outputs c[i] (the BN inputs) and its output (the next block's
 * input, and the final ReLU's mask); the normalised-and-rectified activations between convs are
 * recomputed in backward from c[i] and the batch statistics (one BN apply, much cheaper than
 * a conv). Per BasicBlock that is 3 maps where PyTorch keeps 4; gradients of activations live
 * only while their block runs backward. */
#include <stdio.h>
#include <string.h>
#include "model_internal.h"

typedef struct rn_block {
    int n_conv; /* 2 (BasicBlock) or 3 (Bottleneck) */
    mt_nn_conv conv[3];
    mt_nn_bn bn[3];
    bool has_ds;
    mt_nn_conv ds_conv; /* downsample.0: 1x1, stride */
    mt_nn_bn ds_bn;     /* downsample.1 */
    /* kept by a training forward: input (owned by the previous block or the stem), conv outputs,
     * downsample conv output, output */
    mt_tensor in, c[3], d, out;
} rn_block;

typedef struct resnet {
    mdl_stem stem;
    rn_block *blocks;
    int n_blocks, features;
    mt_nn_linear fc;
    mt_tensor f; /* pooled features (N, features): fc's input */
} resnet;

static void add_block(mdl_builder *b, rn_block *k, const char *prefix, int inplanes, int planes,
                      int stride, bool bottleneck) {
    char name[96];
    int out = bottleneck ? planes * 4 : planes;
    const mdl_init init = MDL_INIT_CONV_FAN_OUT;
    /* (in, out, kernel, stride, pad) of conv1.. in torchvision's order */
    int geo[3][5] = {{inplanes, planes, 3, stride, 1}, {planes, planes, 3, 1, 1}, {0}};
    if (bottleneck) {
        int g[3][5] = {
            {inplanes, planes, 1, 1, 0}, {planes, planes, 3, stride, 1}, {planes, out, 1, 1, 0}};
        memcpy(geo, g, sizeof geo);
    }
    k->n_conv = bottleneck ? 3 : 2;
    for (int i = 0; i < k->n_conv; i++) {
        snprintf(name, sizeof name, "%s.conv%d", prefix, i + 1);
        k->conv[i] = mdl_conv(b, name, geo[i][0], geo[i][1], geo[i][2], geo[i][3], geo[i][4], init);
        snprintf(name, sizeof name, "%s.bn%d", prefix, i + 1);
        k->bn[i] = mdl_bn(b, name, geo[i][1]);
    }
    k->has_ds = stride != 1 || inplanes != out;
    if (k->has_ds) {
        snprintf(name, sizeof name, "%s.downsample.0", prefix);
        k->ds_conv = mdl_conv(b, name, inplanes, out, 1, stride, 0, init);
        snprintf(name, sizeof name, "%s.downsample.1", prefix);
        k->ds_bn = mdl_bn(b, name, out);
    }
}

static mt_status build(mdl_builder *b, const mt_model_opts *o, void **net, const int layers[4],
                       bool bottleneck) {
    resnet *rn = mt_calloc(1, sizeof *rn, "resnet");
    if (!rn) return MT_ERR_NOMEM;
    *net = rn;
    rn->n_blocks = layers[0] + layers[1] + layers[2] + layers[3];
    rn->blocks = mt_calloc((size_t)rn->n_blocks, sizeof *rn->blocks, "resnet blocks");
    if (!rn->blocks) return MT_ERR_NOMEM;
    mdl_stem_build(b, &rn->stem, "conv1", "bn1", o->in_channels, MDL_INIT_CONV_FAN_OUT);
    int inplanes = 64, nb = 0;
    for (int li = 0; li < 4; li++) {
        int planes = 64 << li;
        for (int bi = 0; bi < layers[li]; bi++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d", li + 1, bi);
            int stride = bi == 0 && li > 0 ? 2 : 1;
            add_block(b, &rn->blocks[nb++], prefix, inplanes, planes, stride, bottleneck);
            inplanes = bottleneck ? planes * 4 : planes;
        }
    }
    rn->features = inplanes;
    rn->fc = mdl_linear(b, "fc", inplanes, o->n_outputs, false);
    return MT_OK;
}

static void resnet_free(void *net) {
    resnet *rn = net;
    mt_free(rn->blocks);
    mt_free(rn);
}

/* ---- forward ------------------------------------------------------------------------------ */

/* relu(bn[last](c[last]) + identity), identity = in or downsample(in). Training keeps c[last]
 * and d; eval normalises them in place and lets them go. */
static mt_status block_out(mdl_run *r, rn_block *k, const mt_tensor *in, mt_tensor *out) {
    mt_nn_env *e = &r->e;
    mt_tensor *c = &k->c[k->n_conv - 1];
    if (e->train) {
        MT_TRY(mdl_alloc_like(r, out, c));
        MT_TRY(mt_nn_bn_fwd(e, &k->bn[k->n_conv - 1], c, out));
    } else {
        MT_TRY(mt_nn_bn_fwd(e, &k->bn[k->n_conv - 1], c, c));
        *out = *c, c->data = NULL;
    }
    if (k->has_ds) {
        mt_tensor t;
        MT_TRY(mdl_alloc_like(r, &k->d, out));
        MT_TRY(mt_nn_conv_fwd(e, &k->ds_conv, in, &k->d));
        if (e->train) {
            MT_TRY(mdl_alloc_like(r, &t, out));
            MT_TRY(mt_nn_bn_fwd(e, &k->ds_bn, &k->d, &t));
        } else {
            MT_TRY(mt_nn_bn_fwd(e, &k->ds_bn, &k->d, &k->d));
            t = k->d, k->d.data = NULL;
        }
        MT_TRY(mt_nn_add(e, &t, out));
        mdl_release(r, &t);
    } else {
        MT_TRY(mt_nn_add(e, in, out));
    }
    return mt_nn_relu_fwd(e, out, out);
}

/* in (N,H,W,Cin) -> *out (N,H',W',Cout), allocated here. Eval releases in. */
static mt_status block_fwd(mdl_run *r, rn_block *k, mt_tensor *in, mt_tensor *out) {
    mt_nn_env *e = &r->e;
    int64_t n = in->shape[0], h = in->shape[1], w = in->shape[2];
    mt_tensor cur = *in;
    k->in = *in;
    for (int i = 0; i < k->n_conv; i++) {
        mt_nn_conv_out(&k->conv[i], h, w, &h, &w);
        MT_TRY(mdl_alloc(r, &k->c[i], MT_F32, n, h, w, k->conv[i].k));
        MT_TRY(mt_nn_conv_fwd(e, &k->conv[i], &cur, &k->c[i]));
        if (i > 0) mdl_release(r, &cur); /* relu(bn(c[i-1])): recomputed in backward */
        if (i == k->n_conv - 1) break;
        cur = k->c[i]; /* eval: normalised in place */
        if (e->train) MT_TRY(mdl_alloc_like(r, &cur, &k->c[i]));
        MT_TRY(mt_nn_bn_fwd(e, &k->bn[i], &k->c[i], &cur));
        MT_TRY(mt_nn_relu_fwd(e, &cur, &cur));
        if (!e->train) k->c[i].data = NULL; /* cur owns it now */
    }
    MT_TRY(block_out(r, k, in, out));
    k->out = *out;
    if (!e->train) mdl_release(r, in);
    return MT_OK;
}

static mt_status resnet_forward(mdl_run *r, void *net, const mt_tensor *x, mt_tensor *logits) {
    resnet *rn = net;
    mt_nn_env *e = &r->e;
    mt_tensor cur, out;
    MT_TRY(mdl_stem_fwd(r, &rn->stem, x, &cur));
    for (int b = 0; b < rn->n_blocks; b++) {
        MT_TRY(block_fwd(r, &rn->blocks[b], &cur, &out));
        cur = out;
    }
    MT_TRY(mdl_alloc2(r, &rn->f, cur.shape[0], rn->features));
    MT_TRY(mt_nn_gap_fwd(e, &cur, &rn->f));
    MT_TRY(mt_nn_linear_fwd(e, &rn->fc, &rn->f, logits));
    if (!e->train) {
        mdl_release(r, &cur);
        mdl_release(r, &rn->f);
    }
    return MT_OK;
}

/* ---- backward ----------------------------------------------------------------------------- */

/* Down the conv chain: g is the gradient of c[last]'s conv output; returns the gradient of the
 * block input in *din (allocated here). Releases c[] and g. */
static mt_status chain_bwd(mdl_run *r, rn_block *k, mt_tensor g, mt_tensor *din) {
    mt_nn_env *e = &r->e;
    for (int i = k->n_conv - 1; i >= 0; i--) {
        mt_tensor x = k->in, dx;
        if (i > 0) {
            MT_TRY(mdl_alloc_like(r, &x, &k->c[i - 1]));
            MT_TRY(mt_nn_bn_apply(e, &k->bn[i - 1], &k->c[i - 1], true, &x));
        }
        MT_TRY(mdl_alloc_like(r, &dx, &x));
        MT_TRY(mt_nn_conv_bwd(e, &k->conv[i], &x, &g, &dx));
        mdl_release(r, &g);
        if (i > 0) {
            MT_TRY(mt_nn_relu_bwd(e, &x, &dx, &dx));
            mdl_release(r, &x);
            MT_TRY(mt_nn_bn_bwd(e, &k->bn[i - 1], &k->c[i - 1], &dx, &dx));
            mdl_release(r, &k->c[i - 1]);
        }
        g = dx;
    }
    *din = g;
    return MT_OK;
}

/* dout: gradient of the block output (released here) -> *din: gradient of its input. */
static mt_status block_bwd(mdl_run *r, rn_block *k, mt_tensor *dout, mt_tensor *din) {
    mt_nn_env *e = &r->e;
    int last = k->n_conv - 1;
    mt_tensor g;
    MT_TRY(mt_nn_relu_bwd(e, &k->out, dout, dout));
    mdl_release(r, &k->out);
    MT_TRY(mdl_alloc_like(r, &g, &k->c[last]));
    MT_TRY(mt_nn_bn_bwd(e, &k->bn[last], &k->c[last], dout, &g));
    mdl_release(r, &k->c[last]);
    MT_TRY(chain_bwd(r, k, g, din));
    if (k->has_ds) {
        mt_tensor t;
        MT_TRY(mt_nn_bn_bwd(e, &k->ds_bn, &k->d, dout, dout));
        mdl_release(r, &k->d);
        MT_TRY(mdl_alloc_like(r, &t, &k->in));
        MT_TRY(mt_nn_conv_bwd(e, &k->ds_conv, &k->in, dout, &t));
        MT_TRY(mt_nn_add(e, &t, din));
        mdl_release(r, &t);
    } else {
        MT_TRY(mt_nn_add(e, dout, din));
    }
    mdl_release(r, dout);
    return MT_OK;
}

static mt_status resnet_backward(mdl_run *r, void *net, const mt_tensor *dlogits) {
    resnet *rn = net;
    mt_nn_env *e = &r->e;
    mt_tensor df, dcur, din;
    MT_TRY(mdl_alloc_like(r, &df, &rn->f));
    MT_TRY(mt_nn_linear_bwd(e, &rn->fc, &rn->f, dlogits, &df));
    mdl_release(r, &rn->f);
    MT_TRY(mdl_alloc_like(r, &dcur, &rn->blocks[rn->n_blocks - 1].out));
    MT_TRY(mt_nn_gap_bwd(e, &df, &dcur));
    mdl_release(r, &df);
    for (int b = rn->n_blocks - 1; b >= 0; b--) {
        MT_TRY(block_bwd(r, &rn->blocks[b], &dcur, &din));
        dcur = din;
    }
    mt_tensor p = rn->blocks[0].in;
    return mdl_stem_bwd(r, &rn->stem, &p, &dcur);
}

/* ---- the three depths ---------------------------------------------------------------------- */

static mt_status build18(mdl_builder *b, const mt_model_opts *o, void **net) {
    return build(b, o, net, (const int[4]){2, 2, 2, 2}, false);
}
static mt_status build34(mdl_builder *b, const mt_model_opts *o, void **net) {
    return build(b, o, net, (const int[4]){3, 4, 6, 3}, false);
}
static mt_status build50(mdl_builder *b, const mt_model_opts *o, void **net) {
    return build(b, o, net, (const int[4]){3, 4, 6, 3}, true);
}

const mdl_arch mdl_resnet18 = {"resnet18",      build18,     resnet_forward,
                               resnet_backward, resnet_free, false};
const mdl_arch mdl_resnet34 = {"resnet34",      build34,     resnet_forward,
                               resnet_backward, resnet_free, false};
const mdl_arch mdl_resnet50 = {"resnet50",      build50,     resnet_forward,
                               resnet_backward, resnet_free, false};
