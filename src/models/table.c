/* The parameter table builder. Architectures describe their layers in torchvision's module order;
 * each call appends the layer's state_dict entries (parameters and buffers, as
 * torch.nn.Module.state_dict lists them) and returns the layer with its offsets: trainable
 * entries take the next range of the params/grads buffers, the others the next range of buffers,
 * so both follow the table order. */
#include <stdio.h>
#include <string.h>
#include "model_internal.h"

static int grow(mdl_builder *b) {
    if (b->n < b->cap) return 1;
    int cap = b->cap ? 2 * b->cap : 256;
    mt_param *p = mt_realloc(b->p, (size_t)cap, sizeof *p, "parameter table");
    if (p) b->p = p;
    unsigned char *in = p ? mt_realloc(b->init, (size_t)cap, 1, "parameter table") : NULL;
    if (in) b->init = in;
    int *fan = in ? mt_realloc(b->fan_in, (size_t)cap, sizeof *fan, "parameter table") : NULL;
    if (!fan) {
        b->status = MT_ERR_NOMEM;
        return 0;
    }
    b->fan_in = fan;
    b->cap = cap;
    return 1;
}

/* Appends "<prefix>.<leaf>" with the given file shape; returns its offset (params or buffers). */
static size_t add(mdl_builder *b, const char *prefix, const char *leaf, int ndim,
                  const int64_t *shape, bool trainable, bool decay, mdl_init init, int fan_in) {
    if (b->status != MT_OK || !grow(b)) return 0;
    mt_param *p = &b->p[b->n];
    memset(p, 0, sizeof *p);
    int len = snprintf(p->name, sizeof p->name, "%s.%s", prefix, leaf);
    if (len < 0 || (size_t)len >= sizeof p->name) {
        b->status = mt_fail(MT_ERR_INTERNAL, "parameter name '%s.%s' is too long", prefix, leaf);
        return 0;
    }
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i], p->numel *= shape[i];
    p->trainable = trainable;
    p->decay = decay;
    p->conv_krsc = ndim == 4;
    p->file_dtype = strcmp(leaf, "num_batches_tracked") ? MT_F32 : MT_I64;
    size_t *next = trainable ? &b->n_train : &b->n_buf;
    p->offset = *next;
    *next += (size_t)p->numel;
    b->init[b->n] = (unsigned char)init;
    b->fan_in[b->n] = fan_in;
    b->n++;
    return p->offset;
}

mt_nn_conv mdl_conv(mdl_builder *b, const char *name, int c, int k, int r, int stride, int pad,
                    mdl_init init) {
    mt_nn_conv l = {.c = c, .k = k, .r = r, .s = r, .b = -1};
    l.geo = (mt_conv2d_params){.stride_h = stride,
                               .stride_w = stride,
                               .pad_h = pad,
                               .pad_w = pad,
                               .dil_h = 1,
                               .dil_w = 1,
                               .groups = 1};
    l.w = add(b, name, "weight", 4, (int64_t[]){k, c, r, r}, true, true, init, c * r * r);
    return l;
}

mt_nn_bn mdl_bn(mdl_builder *b, const char *name, int c) {
    mt_nn_bn l = {.c = c};
    int64_t shape[1] = {c};
    l.weight = add(b, name, "weight", 1, shape, true, false, MDL_INIT_ONE, 0);
    l.bias = add(b, name, "bias", 1, shape, true, false, MDL_INIT_ZERO, 0);
    l.running_mean = add(b, name, "running_mean", 1, shape, false, false, MDL_INIT_ZERO, 0);
    l.running_var = add(b, name, "running_var", 1, shape, false, false, MDL_INIT_ONE, 0);
    l.num_batches = add(b, name, "num_batches_tracked", 0, shape, false, false, MDL_INIT_ZERO, 0);
    l.stats = b->n_stats;
    b->n_stats += 2 * (size_t)c;
    if (c > b->max_c) b->max_c = c;
    return l;
}

mt_nn_linear mdl_linear(mdl_builder *b, const char *name, int in, int out, bool zero_bias) {
    mt_nn_linear l = {.in = in, .out = out};
    l.w = add(b, name, "weight", 2, (int64_t[]){out, in}, true, true, MDL_INIT_LINEAR, in);
    l.b = (int64_t)add(b, name, "bias", 1, (int64_t[]){out}, true, false,
                       zero_bias ? MDL_INIT_ZERO : MDL_INIT_LINEAR, in);
    if (out > b->max_c) b->max_c = out;
    return l;
}

mt_nn_conv mdl_conv_bias(mdl_builder *b, const char *name, int c, int k, int r, int pad) {
    mt_nn_conv l = {.c = c, .k = k, .r = r, .s = r};
    l.geo = (mt_conv2d_params){.stride_h = 1,
                               .stride_w = 1,
                               .pad_h = pad,
                               .pad_w = pad,
                               .dil_h = 1,
                               .dil_w = 1,
                               .groups = 1};
    int fan_in = c * r * r;
    l.w = add(b, name, "weight", 4, (int64_t[]){k, c, r, r}, true, true, MDL_INIT_LINEAR, fan_in);
    l.b = (int64_t)add(b, name, "bias", 1, (int64_t[]){k}, true, false, MDL_INIT_LINEAR, fan_in);
    return l;
}

mt_nn_convt mdl_convt(mdl_builder *b, const char *name, int c, int k, int r, int stride) {
    mt_nn_convt l = {.c = c, .k = k, .r = r, .s = r};
    l.geo = (mt_conv2d_params){
        .stride_h = stride, .stride_w = stride, .dil_h = 1, .dil_w = 1, .groups = 1};
    int fan_in = k * r * r; /* PyTorch: weight.size(1) * kernel area */
    l.w = add(b, name, "weight", 4, (int64_t[]){c, k, r, r}, true, true, MDL_INIT_LINEAR, fan_in);
    l.b = (int64_t)add(b, name, "bias", 1, (int64_t[]){k}, true, false, MDL_INIT_LINEAR, fan_in);
    return l;
}

mt_nn_in mdl_in(mdl_builder *b, const char *name, int c) {
    mt_nn_in l = {.c = c};
    int64_t shape[1] = {c};
    l.weight = add(b, name, "weight", 1, shape, true, false, MDL_INIT_ONE, 0);
    l.bias = add(b, name, "bias", 1, shape, true, false, MDL_INIT_ZERO, 0);
    if (c > b->max_c) b->max_c = c;
    return l;
}
