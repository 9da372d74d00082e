/* The data loader: feeds each rank its shard of a pack, batch by batch, from a background thread.
 *
 * Sharding. Every epoch has one permutation of the split's indices, the same on every rank (Philox
 * keyed by (seed, epoch)). Rank r of W takes positions r, r+W, r+2W, ... so global batch b is the
 * same set of images whatever W is (1 rank x batch 16 = 2 ranks x batch 8). Every rank gets the
 * same number of batches per epoch, so no collective waits forever: the tail is dropped
 * (drop_last) or padded by wrapping around to the epoch's first positions, with weight 0 for the
 * padding.
 *
 * Prefetch. One background thread reads images (one chunk each) and applies augmentation into a
 * ring of ready batches; HDF5 is not thread-safe, so that thread is the only one touching the pack.
 *
 * Augmentation (training only; all off unless enabled) is driven by Philox keyed by (seed, epoch,
 * image index), so an image gets the same augmentation on 1 rank or 8: random resized crop,
 * small rotation, brightness/contrast/gamma, horizontal flip (off by default: laterality matters
 * on a chest film). Masks follow the same geometry with nearest-neighbour sampling (every plane
 * of a multi-label mask the same way), background (0) outside the source image.
 *
 * Batches are NHWC float [B, S, S, 1], normalised as asked. */
#ifndef MEDTRAIN_LOADER_H
#define MEDTRAIN_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "medtrain/pack.h"
#include "medtrain/status.h"
#include "medtrain/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mt_norm_mode {
    MT_NORM_XRV,     /* torchxrayvision: [0,1] -> [-1024, 1024] */
    MT_NORM_MEANSTD, /* (x - mean) / std on [0,1] intensities */
    MT_NORM_NONE,    /* [0,1] */
} mt_norm_mode;

typedef struct mt_augment {
    bool enabled;
    float crop_scale_min, crop_scale_max; /* area fraction of the random resized crop (0.7, 1) */
    float crop_ratio_min, crop_ratio_max; /* aspect ratio range (3/4, 4/3) */
    float rotate_deg;                     /* uniform in [-rotate_deg, rotate_deg] (10) */
    float brightness, contrast, gamma;    /* max relative change, e.g. 0.1 -> [0.9, 1.1] */
    bool hflip;                           /* random horizontal flip (default false) */
} mt_augment;

/* Sensible training defaults: enabled, crop 0.7..1 area, ratio 3/4..4/3, 10 degrees, 0.1 each. */
mt_augment mt_augment_defaults(void);

typedef struct mt_loader_opts {
    mt_split split;
    int batch; /* per rank */
    int size;  /* output images are size x size */
    uint64_t seed;
    bool shuffle;   /* false: positions in file order (evaluation) */
    bool drop_last; /* false: pad the last batch (weights 0) */
    mt_augment aug;
    mt_norm_mode norm;
    float mean, std; /* for MT_NORM_MEANSTD */
    bool masks;      /* also deliver masks (the pack must have them) */
    int prefetch;    /* batches read ahead (default 2 when 0) */
} mt_loader_opts;

typedef struct mt_batch {
    int n;       /* batch size (always opts.batch) */
    int n_valid; /* images that are not padding */
    int size;
    float *images; /* [n, size, size, 1] */
    float *labels; /* [n, n_labels], NaN = unknown */
    /* Masks, or NULL: [n, size, size] class indices, or for a multi-label pack
     * (mt_pack_info.mask_multilabel) [n, C, size, size] 0/1 with C = n_mask_classes, plane c
     * of image k at masks + (k*C + c)*size*size. */
    uint8_t *masks;
    float *weights;      /* [n]: 1, or 0 for padding */
    int64_t *indices;    /* [n]: pack image index */
    int64_t epoch, step; /* this batch's epoch and index within the epoch */
} mt_batch;

typedef struct mt_loader mt_loader;

mt_status mt_loader_open(const char *pack_path, int rank, int world, const mt_loader_opts *opts,
                         mt_loader **out);
int64_t mt_loader_batches_per_epoch(const mt_loader *l);
const mt_pack_info *mt_loader_info(const mt_loader *l);
/* Restarts the stream at (epoch, step): the next batch is that one (resume). */
mt_status mt_loader_seek(mt_loader *l, int64_t epoch, int64_t step);
/* The next batch, valid until the next call; crosses epoch boundaries. Errors from the reader
 * thread (an unreadable chunk) come back here, naming the image. */
mt_status mt_loader_next(mt_loader *l, const mt_batch **out);
/* Seconds mt_loader_next spent waiting for the reader thread (data-wait time). */
double mt_loader_wait_seconds(const mt_loader *l);
void mt_loader_close(mt_loader *l);

/* The batch's images as a model input (n, size, size, channels) f32 on the host: the grey
 * images themselves for 1 channel, else each grey value repeated over the channels into scratch
 * (n * size * size * channels floats), for models pretrained on RGB. */
mt_tensor mt_batch_images(const mt_batch *b, int channels, float *scratch);

#ifdef __cplusplus
}
#endif

#endif
