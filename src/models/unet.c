/* U-Net (docs/SEGMENTATION.md): an encoder of D+1 double convs (3x3 conv, norm, ReLU, twice) with
 * 2x2 max pooling between levels, a decoder that upsamples (transposed conv, or bilinear x2 and a
 * 1x1 conv), concatenates the encoder's map of the same level (skip first) and runs a double conv,
 * and a 1x1 head. Names and order as the reference module in tests/oracles/unet_oracle.py:
 * enc.{i}.conv1/norm1/conv2/norm2, dec.{k}.up, dec.{k}.conv.conv1..norm2 (dec.0 is the deepest
 * level), head.
 *
 * Memory. A double conv keeps its two conv outputs c[0], c[1] (the norm inputs) and its output
 * (the next layer's input and its last ReLU's mask); the normalised-and-rectified map between
 * the convs is recomputed in backward from c[0] (three maps per double conv where PyTorch keeps
 * four). The decoder keeps each level's concatenation (its first conv's input) and, for
 * bilinear upsampling, the upsampled map (the 1x1 conv's input); pooling keeps its outputs and
 * argmax. In eval everything is released as soon as it has been read. */
#include <stdio.h>
#include <string.h>
#include "model_internal.h"

#define UNET_MAX_DEPTH 8

static const mt_pool2d_params pool2 = {.kh = 2, .kw = 2, .stride_h = 2, .stride_w = 2};

typedef struct un_norm {
    bool inst;
    mt_nn_bn bn;
    mt_nn_in in;
    mt_tensor stats; /* instance norm: (N, 2C) per-image statistics, kept for backward */
} un_norm;

typedef struct un_dconv {
    mt_nn_conv conv[2];
    un_norm norm[2];
    mt_tensor in, c[2], out; /* kept by a training forward; `in` belongs to the caller */
} un_dconv;

typedef struct un_up {
    mt_nn_convt t; /* transposed conv 2x2 stride 2 */
    mt_nn_conv c;  /* or: 1x1 conv after bilinear x2 */
    mt_tensor ub;  /* bilinear: the upsampled input, kept for the 1x1 conv's backward */
} un_up;

typedef struct unet {
    int depth, ch;
    bool bilinear;
    un_dconv enc[UNET_MAX_DEPTH + 1];
    mt_tensor pooled[UNET_MAX_DEPTH + 1], argmax[UNET_MAX_DEPTH + 1]; /* level i >= 1 inputs */
    un_up up[UNET_MAX_DEPTH];     /* by decoder index k: level D-1-k */
    un_dconv dec[UNET_MAX_DEPTH]; /* by decoder index k */
    mt_tensor cat[UNET_MAX_DEPTH];
    mt_nn_conv head;
    mt_tensor x; /* the input, copied into activation memory */
} unet;

/* ---- building ------------------------------------------------------------------------------ */

static void add_norm(mdl_builder *b, un_norm *nm, const char *name, int c, bool inst) {
    nm->inst = inst;
    if (inst)
        nm->in = mdl_in(b, name, c);
    else
        nm->bn = mdl_bn(b, name, c);
}

static void add_dconv(mdl_builder *b, un_dconv *d, const char *prefix, int cin, int cout,
                      bool inst) {
    char name[96];
    for (int j = 0; j < 2; j++) {
        snprintf(name, sizeof name, "%s.conv%d", prefix, j + 1);
        d->conv[j] = mdl_conv(b, name, j ? cout : cin, cout, 3, 1, 1, MDL_INIT_CONV_FAN_OUT);
        snprintf(name, sizeof name, "%s.norm%d", prefix, j + 1);
        add_norm(b, &d->norm[j], name, cout, inst);
    }
}

static mt_status unet_build(mdl_builder *b, const mt_model_opts *o, void **net) {
    if (o->depth > UNET_MAX_DEPTH)
        return mt_fail(MT_ERR_ARG, "model unet: depth %d (at most %d)", o->depth, UNET_MAX_DEPTH);
    unet *u = mt_calloc(1, sizeof *u, "unet");
    if (!u) return MT_ERR_NOMEM;
    *net = u;
    u->depth = o->depth, u->ch = o->channels, u->bilinear = o->bilinear;
    bool inst = o->norm == MT_NORM_INSTANCE;
    char name[96];
    for (int i = 0; i <= u->depth; i++) {
        snprintf(name, sizeof name, "enc.%d", i);
        add_dconv(b, &u->enc[i], name, i ? u->ch << (i - 1) : o->in_channels, u->ch << i, inst);
    }
    for (int k = 0; k < u->depth; k++) {
        int l = u->depth - 1 - k, cin = u->ch << (l + 1), cout = u->ch << l;
        snprintf(name, sizeof name, "dec.%d.up", k);
        if (u->bilinear)
            u->up[k].c = mdl_conv_bias(b, name, cin, cout, 1, 0);
        else
            u->up[k].t = mdl_convt(b, name, cin, cout, 2, 2);
        snprintf(name, sizeof name, "dec.%d.conv", k);
        add_dconv(b, &u->dec[k], name, 2 * cout, cout, inst);
    }
    u->head = mdl_conv_bias(b, "head", u->ch, o->n_outputs, 1, 0);
    return MT_OK;
}

static void unet_free(void *net) {
    mt_free(net);
}

/* ---- norms ----------------------------------------------------------------------------------- */

static mt_status norm_fwd(mdl_run *r, un_norm *nm, const mt_tensor *x, mt_tensor *y) {
    if (!nm->inst) return mt_nn_bn_fwd(&r->e, &nm->bn, x, y);
    MT_TRY(mdl_alloc2(r, &nm->stats, x->shape[0], 2 * (int64_t)nm->in.c));
    MT_TRY(mt_nn_in_fwd(&r->e, &nm->in, x, &nm->stats, y));
    if (!r->e.train) mdl_release(r, &nm->stats);
    return MT_OK;
}

static mt_status norm_apply_relu(mdl_run *r, un_norm *nm, const mt_tensor *x, mt_tensor *y) {
    if (!nm->inst) return mt_nn_bn_apply(&r->e, &nm->bn, x, true, y);
    return mt_nn_in_apply(&r->e, &nm->in, x, &nm->stats, true, y);
}

static mt_status norm_bwd(mdl_run *r, un_norm *nm, const mt_tensor *x, const mt_tensor *dy,
                          mt_tensor *dx) {
    if (!nm->inst) return mt_nn_bn_bwd(&r->e, &nm->bn, x, dy, dx);
    MT_TRY(mt_nn_in_bwd(&r->e, &nm->in, x, &nm->stats, dy, dx));
    mdl_release(r, &nm->stats);
    return MT_OK;
}

/* ---- double conv ----------------------------------------------------------------------------- */

/* in (N,H,W,Cin) (kept by the caller in training) -> d->out (N,H,W,Cout), allocated here. */
static mt_status dconv_fwd(mdl_run *r, un_dconv *d, const mt_tensor *in) {
    mt_nn_env *e = &r->e;
    int64_t n = in->shape[0], h = in->shape[1], w = in->shape[2], k = d->conv[0].k;
    d->in = *in;
    MT_TRY(mdl_alloc(r, &d->c[0], MT_F32, n, h, w, k));
    MT_TRY(mt_nn_conv_fwd(e, &d->conv[0], in, &d->c[0]));
    mt_tensor a = d->c[0]; /* eval: normalised in place */
    if (e->train) MT_TRY(mdl_alloc_like(r, &a, &d->c[0]));
    MT_TRY(norm_fwd(r, &d->norm[0], &d->c[0], &a));
    MT_TRY(mt_nn_relu_fwd(e, &a, &a));
    MT_TRY(mdl_alloc(r, &d->c[1], MT_F32, n, h, w, k));
    MT_TRY(mt_nn_conv_fwd(e, &d->conv[1], &a, &d->c[1]));
    mdl_release(r, &a); /* training: recomputed in backward */
    if (!e->train) d->c[0].data = NULL;
    if (e->train) {
        MT_TRY(mdl_alloc_like(r, &d->out, &d->c[1]));
    } else {
        d->out = d->c[1], d->c[1].data = NULL;
    }
    MT_TRY(norm_fwd(r, &d->norm[1], e->train ? &d->c[1] : &d->out, &d->out));
    return mt_nn_relu_fwd(e, &d->out, &d->out);
}

/* dout: gradient of d->out (released here, with out and everything kept) -> *din: gradient of
 * the input (allocated here) unless din is NULL. */
static mt_status dconv_bwd(mdl_run *r, un_dconv *d, mt_tensor *dout, mt_tensor *din) {
    mt_nn_env *e = &r->e;
    mt_tensor g, a, da;
    MT_TRY(mt_nn_relu_bwd(e, &d->out, dout, dout));
    mdl_release(r, &d->out);
    MT_TRY(mdl_alloc_like(r, &g, &d->c[1]));
    MT_TRY(norm_bwd(r, &d->norm[1], &d->c[1], dout, &g));
    mdl_release(r, &d->c[1]);
    mdl_release(r, dout);
    MT_TRY(mdl_alloc_like(r, &a, &d->c[0]));
    MT_TRY(norm_apply_relu(r, &d->norm[0], &d->c[0], &a));
    MT_TRY(mdl_alloc_like(r, &da, &d->c[0]));
    MT_TRY(mt_nn_conv_bwd(e, &d->conv[1], &a, &g, &da));
    mdl_release(r, &g);
    MT_TRY(mt_nn_relu_bwd(e, &a, &da, &da));
    mdl_release(r, &a);
    MT_TRY(norm_bwd(r, &d->norm[0], &d->c[0], &da, &da));
    mdl_release(r, &d->c[0]);
    if (din) MT_TRY(mdl_alloc_like(r, din, &d->in));
    MT_TRY(mt_nn_conv_bwd(e, &d->conv[0], &d->in, &da, din));
    mdl_release(r, &da);
    return MT_OK;
}

/* ---- forward --------------------------------------------------------------------------------- */

static mt_status check_size(const unet *u, const mt_tensor *x) {
    int64_t m = (int64_t)1 << u->depth;
    for (int d = 1; d <= 2; d++) {
        int64_t s = x->shape[d];
        if (s % m == 0 && s >= m) continue;
        int64_t lo = s / m * m, hi = lo + m;
        char near[64];
        if (lo >= m)
            snprintf(near, sizeof near, "%lld or %lld", (long long)lo, (long long)hi);
        else
            snprintf(near, sizeof near, "%lld", (long long)hi);
        return mt_fail(MT_ERR_SHAPE,
                       "input of %lldx%lld: a U-Net of depth %d needs a %s that is a multiple of "
                       "%lld (nearest valid: %s)",
                       (long long)x->shape[1], (long long)x->shape[2], u->depth,
                       d == 1 ? "height" : "width", (long long)m, near);
    }
    return MT_OK;
}

/* Decoder index k: up(cur) -> cat([skip, up]) -> double conv. Eval releases cur and the skip. */
static mt_status dec_fwd(mdl_run *r, unet *u, int k, mt_tensor *cur) {
    mt_nn_env *e = &r->e;
    int l = u->depth - 1 - k;
    mt_tensor *skip = &u->enc[l].out, up;
    int64_t n = skip->shape[0], h = skip->shape[1], w = skip->shape[2], c = skip->shape[3];
    MT_TRY(mdl_alloc(r, &up, MT_F32, n, h, w, c));
    if (u->bilinear) {
        un_up *p = &u->up[k];
        MT_TRY(mdl_alloc(r, &p->ub, MT_F32, n, h, w, cur->shape[3]));
        MT_TRY(mt_nn_upsample_fwd(e, MT_UPSAMPLE_BILINEAR, false, cur, &p->ub));
        MT_TRY(mt_nn_conv_fwd(e, &p->c, &p->ub, &up));
        if (!e->train) mdl_release(r, &p->ub);
    } else {
        MT_TRY(mt_nn_convt_fwd(e, &u->up[k].t, cur, &up));
    }
    if (!e->train) mdl_release(r, cur);
    MT_TRY(mdl_alloc(r, &u->cat[k], MT_F32, n, h, w, 2 * c));
    MT_TRY(mt_nn_concat_put(e, skip, 0, &u->cat[k]));
    MT_TRY(mt_nn_concat_put(e, &up, c, &u->cat[k]));
    mdl_release(r, &up);
    if (!e->train) mdl_release(r, skip);
    MT_TRY(dconv_fwd(r, &u->dec[k], &u->cat[k]));
    if (!e->train) mdl_release(r, &u->cat[k]);
    return MT_OK;
}

static mt_status unet_forward(mdl_run *r, void *net, const mt_tensor *x, mt_tensor *logits) {
    unet *u = net;
    mt_nn_env *e = &r->e;
    MT_TRY(check_size(u, x));
    int64_t n = x->shape[0];
    MT_TRY(mdl_alloc(r, &u->x, MT_F32, n, x->shape[1], x->shape[2], x->shape[3]));
    MT_TRY(mt_nn_copy(e, x, &u->x));
    MT_TRY(dconv_fwd(r, &u->enc[0], &u->x));
    if (!e->train) mdl_release(r, &u->x);
    for (int i = 1; i <= u->depth; i++) {
        const mt_tensor *prev = &u->enc[i - 1].out;
        int64_t h = prev->shape[1] / 2, w = prev->shape[2] / 2, c = prev->shape[3];
        MT_TRY(mdl_alloc(r, &u->pooled[i], MT_F32, n, h, w, c));
        MT_TRY(mdl_alloc(r, &u->argmax[i], MT_I32, n, h, w, c));
        MT_TRY(mt_nn_maxpool_fwd(e, &pool2, prev, &u->pooled[i], &u->argmax[i]));
        if (!e->train) mdl_release(r, &u->argmax[i]);
        MT_TRY(dconv_fwd(r, &u->enc[i], &u->pooled[i]));
        if (!e->train) mdl_release(r, &u->pooled[i]);
    }
    mt_tensor cur = u->enc[u->depth].out;
    for (int k = 0; k < u->depth; k++) {
        MT_TRY(dec_fwd(r, u, k, &cur));
        cur = u->dec[k].out;
    }
    MT_TRY(mt_nn_conv_fwd(e, &u->head, &cur, logits));
    if (!e->train) mdl_release(r, &cur);
    return MT_OK;
}

/* ---- backward -------------------------------------------------------------------------------- */

/* The map the up layer of decoder index k read: the level below's output. */
static mt_tensor *up_input(unet *u, int k) {
    return k == 0 ? &u->enc[u->depth].out : &u->dec[k - 1].out;
}

/* dout: gradient of dec[k].out (released) -> *dcur: gradient of up_input(k) (allocated), and
 * dskip (allocated here): the gradient of the skip map enc[l].out through the concatenation. */
static mt_status dec_bwd(mdl_run *r, unet *u, int k, mt_tensor *dout, mt_tensor *dcur,
                         mt_tensor *dskip) {
    mt_nn_env *e = &r->e;
    int l = u->depth - 1 - k;
    mt_tensor dcat, dup;
    MT_TRY(dconv_bwd(r, &u->dec[k], dout, &dcat));
    mdl_release(r, &u->cat[k]);
    const mt_tensor *skip = &u->enc[l].out;
    int64_t c = skip->shape[3];
    MT_TRY(mdl_alloc_like(r, dskip, skip));
    MT_TRY(mt_nn_concat_get(e, &dcat, 0, 0.0f, dskip));
    MT_TRY(mdl_alloc_like(r, &dup, skip));
    MT_TRY(mt_nn_concat_get(e, &dcat, c, 0.0f, &dup));
    mdl_release(r, &dcat);
    mt_tensor *in = up_input(u, k);
    MT_TRY(mdl_alloc_like(r, dcur, in));
    if (u->bilinear) {
        un_up *p = &u->up[k];
        mt_tensor dub;
        MT_TRY(mdl_alloc_like(r, &dub, &p->ub));
        MT_TRY(mt_nn_conv_bwd(e, &p->c, &p->ub, &dup, &dub));
        mdl_release(r, &dup);
        mdl_release(r, &p->ub);
        MT_TRY(mt_nn_upsample_bwd(e, MT_UPSAMPLE_BILINEAR, false, &dub, dcur));
        mdl_release(r, &dub);
    } else {
        MT_TRY(mt_nn_convt_bwd(e, &u->up[k].t, in, &dup, dcur));
        mdl_release(r, &dup);
    }
    return MT_OK;
}

static mt_status unet_backward(mdl_run *r, void *net, const mt_tensor *dlogits) {
    unet *u = net;
    mt_nn_env *e = &r->e;
    int D = u->depth;
    mt_tensor dskip[UNET_MAX_DEPTH + 1] = {0}, dcur, next;
    mt_tensor *top = D ? &u->dec[D - 1].out : &u->enc[0].out;
    MT_TRY(mdl_alloc_like(r, &dcur, top));
    MT_TRY(mt_nn_conv_bwd(e, &u->head, top, dlogits, &dcur));
    for (int k = D - 1; k >= 0; k--) {
        MT_TRY(dec_bwd(r, u, k, &dcur, &next, &dskip[D - 1 - k]));
        dcur = next;
    }
    /* dcur: the gradient of enc[D].out; each enc[i].out (i < D) has its skip gradient in
     * dskip[i], to which the pooling's gradient is added. */
    for (int i = D; i >= 1; i--) {
        mt_tensor dpool, t;
        MT_TRY(dconv_bwd(r, &u->enc[i], &dcur, &dpool));
        mdl_release(r, &u->pooled[i]);
        MT_TRY(mdl_alloc_like(r, &t, &dskip[i - 1]));
        MT_TRY(mt_nn_maxpool_bwd(e, &pool2, &u->argmax[i], &dpool, &t));
        mdl_release(r, &u->argmax[i]);
        mdl_release(r, &dpool);
        MT_TRY(mt_nn_add(e, &t, &dskip[i - 1]));
        mdl_release(r, &t);
        dcur = dskip[i - 1];
    }
    MT_TRY(dconv_bwd(r, &u->enc[0], &dcur, NULL));
    mdl_release(r, &u->x);
    return MT_OK;
}

const mdl_arch mdl_unet = {"unet", unet_build, unet_forward, unet_backward, unet_free, true};
