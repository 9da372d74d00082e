/* Models: a parameter table, a forward and a hand-written backward (no autograd tape).
 *
 * Parameters. A model declares a table of named tensors, named exactly as the ecosystem names them
 * (torchvision for ResNet/DenseNet: "layer1.0.conv1.weight", "features.denseblock1.denselayer1.
 * norm1.running_mean"). Trainable tensors live in one flat buffer (`params`), their gradients in a
 * second of the same layout (`grads`), non-trainable state (BN running statistics and counters) in a
 * third (`buffers`). Offsets follow the table order, which is torchvision's state_dict order, so the
 * last layers sit at the end of the gradient buffer: backward finishes them first, and gradient
 * buckets are cut from the end (comm.h).
 *
 * Layout. Convolution weights are kept as (K,R,S,C) (channels last, what the NHWC kernels want) and
 * converted to torchvision's (K,C,R,S) when reading or writing safetensors; `shape` in the table
 * is always the file (torchvision) shape.
 *
 * A model never calls MPI: SyncBN gets an all-reduce function from the caller. */
#ifndef MEDTRAIN_MODEL_H
#define MEDTRAIN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_param {
    char name[112];
    int ndim;
    int64_t shape[MT_MAX_DIMS]; /* as stored in files (torchvision) */
    int64_t numel;
    bool trainable;  /* in params/grads; otherwise in buffers */
    bool decay;      /* weight decay applies (not to norms and biases) */
    bool conv_krsc;  /* kept as (K,R,S,C) in memory, (K,C,R,S) in files */
    mt_dtype file_dtype; /* MT_F32, or MT_I64 for num_batches_tracked (kept as a float count) */
    size_t offset;   /* element offset in params (trainable) or buffers */
} mt_param;

typedef struct mt_params {
    mt_param *p;
    int n;
    size_t n_train, n_buf;   /* elements in the flat buffers */
    float *params, *grads;   /* n_train each, on the model's device */
    float *buffers;          /* n_buf, on the model's device */
} mt_params;

typedef struct mt_model_opts {
    const char *arch;  /* resnet18 | resnet34 | resnet50 | densenet121 */
    int in_channels;   /* 1 or 3 */
    int n_outputs;     /* labels */
    float drop_rate;   /* DenseNet dropout after each dense layer (torchvision drop_rate); 0 */
    float bn_momentum; /* 0.1 as PyTorch; running = (1-m)*running + m*batch */
    float bn_eps;      /* 1e-5 */
} mt_model_opts;

typedef struct mt_model mt_model;

/* Builds the parameter table and allocates the flat buffers on ctx's device (contents undefined
 * until mt_model_init or mt_model_load). Unknown arch: error listing the known ones. */
mt_status mt_model_create(mt_ctx *ctx, const mt_model_opts *opts, mt_model **out);
void mt_model_free(mt_model *m);
mt_params *mt_model_params(mt_model *m);
const mt_model_opts *mt_model_options(const mt_model *m);
/* Index of the parameter called name, or -1. */
int mt_model_find(const mt_model *m, const char *name);

/* torchvision's initialisation: conv kaiming_normal_(fan_out, relu), BN weight 1 bias 0, linear
 * PyTorch default (kaiming_uniform a=sqrt(5), bias uniform +-1/sqrt(fan_in)); DenseNet's
 * classifier bias 0. Random numbers from Philox keyed by seed, one stream per parameter index,
 * so the result does not depend on threads or ranks. BN buffers reset (mean 0, var 1, count 0). */
mt_status mt_model_init(mt_model *m, uint64_t seed);
/* Re-initialises only the named parameters' tensors (a new head), as mt_model_init would. */
mt_status mt_model_init_params(mt_model *m, uint64_t seed, int n, const char *const *names);

/* What loading a safetensors file found, PyTorch-style. Each list is a newline-separated string
 * ("" when empty), owned by the report; free with mt_load_report_free. */
typedef struct mt_load_report {
    int n_missing, n_unexpected, n_mismatched;
    char *missing;    /* names the model has and the file lacks */
    char *unexpected; /* names the file has and the model lacks */
    char *mismatched; /* "fc.weight: file [14,512], model [6,512]" */
} mt_load_report;
void mt_load_report_free(mt_load_report *r);

typedef struct mt_load_opts {
    bool strict;      /* any missing/unexpected/mismatched key is an error naming them */
    bool reinit_head; /* mis-shaped head tensors (fc.*, classifier.*) are re-initialised with
                         head_seed instead of failing */
    uint64_t head_seed;
} mt_load_opts;

/* Reads parameters and buffers from a safetensors file (F32, BF16 or F16; converted), e.g. a
 * torchvision or torchxrayvision state_dict saved with safetensors. report may be NULL. The
 * error (strict) lists the offending names. */
mt_status mt_model_load(mt_model *m, const char *path, const mt_load_opts *opts,
                        mt_load_report *report);
/* Writes every parameter and buffer under its torchvision name and shape (F32; I64 for
 * num_batches_tracked), atomically. meta (key/value pairs, n_meta of them) goes into
 * __metadata__. */
mt_status mt_model_save(mt_model *m, const char *path, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values);

/* Called by backward as soon as the gradient of the trainable range [offset, offset+count) of the
 * flat gradient buffer is final for this step (bucketed all-reduce starts from here). */
typedef mt_status (*mt_grad_ready_fn)(void *user, size_t offset, size_t count);
/* SyncBN: sums buf[0..n) (host memory) over ranks in place. */
typedef mt_status (*mt_allreduce_fn)(void *user, float *buf, size_t n);
void mt_model_set_sync_bn(mt_model *m, mt_allreduce_fn fn, void *user);

/* x (N,H,W,in_channels) f32 NHWC -> logits (N,n_outputs). train: BN uses batch statistics and
 * updates running statistics, dropout is active (dropout_seed/step key its masks); otherwise
 * eval mode. Activations needed by backward are kept inside the model (sized on first use for
 * a batch shape, reused after). */
mt_status mt_model_forward(mt_model *m, mt_ctx *ctx, const mt_tensor *x, bool train,
                           uint64_t dropout_seed, uint64_t step, mt_tensor *logits);
/* After a training forward on the same batch: grads += d(loss)/d(params) for dlogits (N,L).
 * ready (may be NULL) is called for every trainable parameter exactly once, in the order its
 * gradient becomes final (roughly the reverse of the table). */
mt_status mt_model_backward(mt_model *m, mt_ctx *ctx, const mt_tensor *dlogits,
                            mt_grad_ready_fn ready, void *user);

/* Bytes of activation memory the model holds for backward at its current batch shape. */
size_t mt_model_activation_bytes(const mt_model *m);

#ifdef __cplusplus
}
#endif

#endif
