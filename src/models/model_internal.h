/* What the files of src/models share: the model struct, the table builder, the activation
 * memory allocator, and the interface each architecture implements.
 *
 *   model.c     create/free, forward/backward entry points, activation memory planning
 *   table.c     the parameter table builder (mdl_conv, mdl_bn, mdl_linear)
 *   init.c      initialisation, parameter get/set in file layout
 *   io.c        safetensors load (with the PyTorch-style report) and save
 *   stem.c      the conv-BN-ReLU-maxpool stem that ResNet and DenseNet share
 *   resnet.c    ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck)
 *   densenet.c  DenseNet-121
 *   unet.c      U-Net (docs/SEGMENTATION.md) */
#ifndef MEDTRAIN_MODELS_INTERNAL_H
#define MEDTRAIN_MODELS_INTERNAL_H

#include "medtrain/model.h"
#include "medtrain/nn.h"

/* How mt_model_init fills a table entry. */
typedef enum mdl_init {
    MDL_INIT_ZERO,
    MDL_INIT_ONE,
    MDL_INIT_CONV_FAN_OUT, /* kaiming_normal_(mode='fan_out', nonlinearity='relu') */
    MDL_INIT_CONV_FAN_IN,  /* kaiming_normal_() defaults: fan_in, gain sqrt(2) */
    MDL_INIT_LINEAR,       /* nn.Linear's default: weight and bias uniform +-1/sqrt(fan_in) */
} mdl_init;

/* The table being built: entries in torchvision's state_dict order. Errors are sticky: the first
 * one is kept in status and later calls do nothing. */
typedef struct mdl_builder {
    mt_param *p;
    unsigned char *init; /* mdl_init per entry */
    int *fan_in;         /* per entry, for MDL_INIT_LINEAR */
    int n, cap;
    size_t n_train, n_buf, n_stats; /* floats in params, buffers, BN statistics */
    int max_c;                      /* largest BN channel count or linear output */
    mt_status status;
} mdl_builder;

/* Adds "<name>.weight" (K,C,R,S) (kept (K,R,S,C)), no bias; padding and stride as given. */
mt_nn_conv mdl_conv(mdl_builder *b, const char *name, int c, int k, int r, int stride, int pad,
                    mdl_init init);
/* Adds "<name>.weight" (K,C,R,R) and ".bias" (K), stride 1, PyTorch's default init for both. */
mt_nn_conv mdl_conv_bias(mdl_builder *b, const char *name, int c, int k, int r, int pad);
/* Adds a ConvTranspose2d's "<name>.weight" (C,K,R,R) (kept (C,R,R,K)) and ".bias" (K), PyTorch's
 * default init (fan_in = K*R*R). */
mt_nn_convt mdl_convt(mdl_builder *b, const char *name, int c, int k, int r, int stride);
/* Adds an InstanceNorm2d(affine=True)'s "<name>.weight" and ".bias". */
mt_nn_in mdl_in(mdl_builder *b, const char *name, int c);
/* Adds "<name>.weight", ".bias", ".running_mean", ".running_var", ".num_batches_tracked". */
mt_nn_bn mdl_bn(mdl_builder *b, const char *name, int c);
/* Adds "<name>.weight" (out,in) and ".bias" (out); zero_bias: the bias initialises to 0. */
mt_nn_linear mdl_linear(mdl_builder *b, const char *name, int in, int out, bool zero_bias);

/* ---- activation memory ----------------------------------------------------------------------
 * One device allocation per model, handed out first-fit by a deterministic allocator: forward
 * takes what backward will need and temporaries, backward gives each back as soon as it is dead.
 * Planning runs the same forward and backward with every layer call skipped (env.plan) and a
 * fake base address, and records the highest byte used; because the sequence of requests only
 * depends on the batch shape and mode, the real run places every tensor exactly where the plan
 * did, inside the planned size. */
typedef struct mdl_block {
    size_t off, len;
} mdl_block;

typedef struct mdl_ws {
    uintptr_t base; /* the allocation, or a fake address when planning */
    size_t cap;     /* bytes */
    size_t peak;    /* highest end handed out */
    mdl_block *live;
    int n, n_cap;
} mdl_ws;

/* One forward or backward call. */
typedef struct mdl_run {
    mt_nn_env e;
    mdl_ws *ws;
    uint64_t dropout_seed, step;
} mdl_run;

/* A tensor (N,H,W,C) of dtype from the workspace; mdl_alloc2: (N,C) f32. */
mt_status mdl_alloc(mdl_run *r, mt_tensor *t, mt_dtype dtype, int64_t n, int64_t h, int64_t w,
                    int64_t c);
mt_status mdl_alloc2(mdl_run *r, mt_tensor *t, int64_t n, int64_t c);
mt_status mdl_alloc_like(mdl_run *r, mt_tensor *t, const mt_tensor *like); /* f32, like's shape */
/* Gives t's memory back (t->data becomes NULL; a NULL t->data is ignored). */
void mdl_release(mdl_run *r, mt_tensor *t);

/* ---- architectures --------------------------------------------------------------------------- */
typedef struct mdl_arch {
    const char *name;
    mt_status (*build)(mdl_builder *b, const mt_model_opts *o, void **net);
    /* x (N,H,W,C) on the device -> logits (N,L); train keeps what backward needs. */
    mt_status (*forward)(mdl_run *r, void *net, const mt_tensor *x, mt_tensor *logits);
    mt_status (*backward)(mdl_run *r, void *net, const mt_tensor *dlogits);
    void (*free)(void *net);
    bool dense; /* logits (N,H,W,L) instead of (N,L) */
} mdl_arch;

extern const mdl_arch mdl_resnet18, mdl_resnet34, mdl_resnet50, mdl_densenet121, mdl_unet;

/* The stem both architectures share: conv 7x7/2 (pad 3), BN, ReLU, maxpool 3x3/2 (pad 1). */
typedef struct mdl_stem {
    mt_nn_conv conv;
    mt_nn_bn bn;
    mt_tensor x, c0, argmax; /* kept for backward: input copy, conv output, pool winners */
} mdl_stem;

/* Builds the stem's table entries under conv_name and bn_name. */
void mdl_stem_build(mdl_builder *b, mdl_stem *s, const char *conv_name, const char *bn_name,
                    int in_channels, mdl_init init);
/* x (N,H,W,Cin) (any device; copied) -> *p (N,H/4,W/4,64) allocated here. */
mt_status mdl_stem_fwd(mdl_run *r, mdl_stem *s, const mt_tensor *x, mt_tensor *p);
/* dp and p (the pool output the forward returned, or an equal copy) are released here, with
 * everything the stem kept. */
mt_status mdl_stem_bwd(mdl_run *r, mdl_stem *s, mt_tensor *p, mt_tensor *dp);

/* The model. */
struct mt_model {
    mt_ctx *ctx;
    mt_model_opts opts;
    char arch_name[32];
    const mdl_arch *arch;
    void *net;
    mt_params P;
    unsigned char *init; /* mdl_init per table entry */
    int *fan_in;
    mt_tensor t_params, t_grads, t_buffers, t_aux; /* allocations behind P and the env */
    float *stats, *small, *one, *host; /* aux views: BN statistics, scratch, 1.0f; host scratch */
    size_t n_stats, small_n;
    float *stage; /* host staging of the largest tensor (init, get/set, load) */
    size_t stage_n;
    /* activation memory */
    mt_tensor act;
    size_t act_cap, act_need;
    int64_t shape_n, shape_h, shape_w;
    mdl_ws ws;
    bool ready_for_backward;
    mt_allreduce_fn sync;
    void *sync_user;
    bool bn_frozen;
};

#endif
