/* Models: a parameter table, a forward and a hand-written backward (no autograd tape).
 *
 * Parameters. A model declares a table of named tensors, named exactly as the ecosystem names them
 * (torchvision for ResNet/DenseNet: "layer1.0.conv1.weight", "features.denseblock1.denselayer1.
 * norm1.running_mean"). Trainable tensors live in one flat buffer (`params`), their gradients in a
 * second of the same layout (`grads`), non-trainable state (BN running statistics and counters) in
 * a third (`buffers`). Offsets follow the table order, which is torchvision's state_dict order, so
 * the last layers sit at the end of the gradient buffer: backward finishes them first, and gradient
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
#include "medtrain/nn.h"
#include "medtrain/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_param {
    char name[112];
    int ndim;
    int64_t shape[MT_MAX_DIMS]; /* as stored in files (torchvision) */
    int64_t numel;
    bool trainable;      /* in params/grads; otherwise in buffers */
    bool decay;          /* weight decay applies (not to norms and biases) */
    bool conv_krsc;      /* kept as (K,R,S,C) in memory, (K,C,R,S) in files */
    mt_dtype file_dtype; /* MT_F32, or MT_I64 for num_batches_tracked (kept as a float count) */
    size_t offset;       /* element offset in params (trainable) or buffers */
} mt_param;

typedef struct mt_params {
    mt_param *p;
    int n;
    size_t n_train, n_buf; /* elements in the flat buffers */
    float *params, *grads; /* n_train each, on the model's device */
    float *buffers;        /* n_buf, on the model's device */
} mt_params;

typedef enum mt_norm_kind { MT_NORM_BATCH, MT_NORM_INSTANCE } mt_norm_kind;

typedef struct mt_model_opts {
    const char *arch;  /* resnet18 | resnet34 | resnet50 | densenet121 | unet */
    int in_channels;   /* 1 or 3 */
    int n_outputs;     /* labels, or output channels of a dense (per-pixel) model */
    float drop_rate;   /* DenseNet dropout after each dense layer (torchvision drop_rate); 0 */
    float bn_momentum; /* 0.1 as PyTorch; running = (1-m)*running + m*batch; 0 means 0.1 */
    float bn_eps;      /* 1e-5; 0 means 1e-5 (also instance norm's eps) */
    /* U-Net (docs/SEGMENTATION.md) */
    int depth;         /* downsamplings; 0 means 4 */
    int channels;      /* channels at full resolution, doubled per level; 0 means 32 */
    mt_norm_kind norm; /* batch (default) or instance */
    bool bilinear;     /* upsample bilinearly + 1x1 conv instead of a transposed conv */
} mt_model_opts;

typedef struct mt_model mt_model;

/* Builds the parameter table and allocates the flat buffers on ctx's device (zeroed; call
 * mt_model_init or mt_model_load). Unknown arch: error listing the known ones. ctx must outlive
 * the model: its flat buffers and activation memory are allocated and freed through it. */
mt_status mt_model_create(mt_ctx *ctx, const mt_model_opts *opts, mt_model **out);
void mt_model_free(mt_model *m);
mt_params *mt_model_params(mt_model *m);
const mt_model_opts *mt_model_options(const mt_model *m);
/* Dense (per-pixel) models (U-Net) give logits (N,H,W,n_outputs) for an input (N,H,W,C);
 * classifiers give (N,n_outputs). */
bool mt_model_dense(const mt_model *m);
/* Index of the parameter called name, or -1. */
int mt_model_find(const mt_model *m, const char *name);

/* torchvision's initialisation: conv kaiming_normal_ (ResNet: fan_out, relu; DenseNet: its
 * default, fan_in), BN weight 1 bias 0, linear PyTorch default (kaiming_uniform a=sqrt(5), bias
 * uniform +-1/sqrt(fan_in)); DenseNet's classifier bias 0. Random numbers from Philox keyed by
 * seed, one stream per parameter index, drawn in torchvision's element order, so the result does
 * not depend on threads, ranks or memory layout. BN buffers reset (mean 0, var 1, count 0). */
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
 * error (strict) lists the offending names. As torch's load_state_dict: a mis-shaped tensor is
 * an error even when not strict (unless reinit_head covers it); a file without
 * "*.num_batches_tracked" (older torchvision weights) sets those counters to 0 and does not
 * count them as missing; tensors the file lacks keep their values. Nothing is changed when the
 * load fails. */
mt_status mt_model_load(mt_model *m, const char *path, const mt_load_opts *opts,
                        mt_load_report *report);
/* Writes every parameter and buffer under its torchvision name and shape (F32; I64 for
 * num_batches_tracked), atomically. meta (key/value pairs, n_meta of them) goes into
 * __metadata__. */
mt_status mt_model_save(mt_model *m, const char *path, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values);

/* mt_grad_ready_fn (backward's "this gradient range is final") and mt_allreduce_fn (SyncBN's
 * sum over ranks of a host buffer) are declared in nn.h. fn NULL turns SyncBN off. */
void mt_model_set_sync_bn(mt_model *m, mt_allreduce_fn fn, void *user);
/* Frozen BN: training forwards normalise with the running statistics and do not update them;
 * backward treats the statistics as constants. Results then do not depend on how the batch is
 * split over ranks. */
void mt_model_set_bn_frozen(mt_model *m, bool frozen);

/* x (N,H,W,in_channels) f32 NHWC (on ctx's device or the host; copied in) -> logits
 * (N,n_outputs), or (N,H,W,n_outputs) for a dense model, on ctx's device. train: BN uses batch
 * statistics and updates running statistics, dropout is active (dropout_seed/step key its masks);
 * otherwise eval mode. Activations needed by backward are kept inside the model: the memory is
 * planned for a batch shape on first use (the forward and backward run once without arithmetic to
 * measure it), allocated once and reused; a larger shape later grows it. ctx must run on the device
 * the model was created on. */
mt_status mt_model_forward(mt_model *m, mt_ctx *ctx, const mt_tensor *x, bool train,
                           uint64_t dropout_seed, uint64_t step, mt_tensor *logits);
/* After a training forward on the same batch: grads += d(loss)/d(params) for dlogits (logits'
 * shape). ready (may be NULL) is called for every trainable parameter exactly once, in the order
 * its gradient becomes final (roughly the reverse of the table). Backward consumes the forward's
 * activations: a second backward needs another training forward. No input gradient is
 * computed. */
mt_status mt_model_backward(mt_model *m, mt_ctx *ctx, const mt_tensor *dlogits,
                            mt_grad_ready_fn ready, void *user);

/* Bytes of activation memory the model holds for backward at its current batch shape (the
 * planned peak of forward plus backward: kept activations, gradients of activations and
 * temporaries; plus the batch statistics); 0 before the first forward or mt_model_reserve. */
size_t mt_model_activation_bytes(const mt_model *m);
/* The activation bytes a batch of n images of h x w would need, without allocating. */
mt_status mt_model_plan(mt_model *m, int64_t n, int64_t h, int64_t w, size_t *bytes);
/* Plans and allocates activation memory for that batch shape now (fail early, before step 1). */
mt_status mt_model_reserve(mt_model *m, int64_t n, int64_t h, int64_t w);

/* Parameter or buffer i between host memory in file (torchvision) layout and the model's flat
 * buffers ((K,C,R,S) <-> (K,R,S,C) for convolutions). numel floats. */
mt_status mt_model_param_get(mt_model *m, int i, float *dst);
mt_status mt_model_param_set(mt_model *m, int i, const float *src);
/* The gradient of trainable parameter i, in file layout. */
mt_status mt_model_grad_get(mt_model *m, int i, float *dst);

#ifdef __cplusplus
}
#endif

#endif
