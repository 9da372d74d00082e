/* Helpers shared by the layer files of src/nn. */
#ifndef MEDTRAIN_NN_INTERNAL_H
#define MEDTRAIN_NN_INTERNAL_H

#include "medtrain/nn.h"

/* x seen as (rows, c): the view every per-channel op takes. */
static inline mt_tensor nn_rows(const mt_tensor *x, int64_t c) {
    int64_t n = mt_tensor_numel(x);
    return mt_tensor_2d(x->data, x->dtype, x->device, c ? n / c : 0, c);
}

/* The last dim of x (channels in NHWC). */
static inline int64_t nn_channels(const mt_tensor *x) {
    return x->ndim ? x->shape[x->ndim - 1] : 1;
}

#endif
