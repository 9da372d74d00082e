/* The deterministic values tests/oracles/torchvision_oracle.py gives every parameter, buffer,
 * input and target (its fill() and inputs(); unet_oracle.py's class_targets()), computed
 * identically here so that the fixtures need no weights. Element i of state_dict entry p is a
 * function of hash(p, i). */
#ifndef MEDTRAIN_TEST_MODEL_FILL_H
#define MEDTRAIN_TEST_MODEL_FILL_H

#include <stdint.h>
#include "medtrain/model.h"

/* BN biases sit around this value, so that few pre-ReLU values lie within float32 noise of 0
 * (see BN_BIAS in the oracle script). */
#define FILL_BN_BIAS 3.0

enum {
    FILL_X_STREAM = 1000001,
    FILL_TARGET_STREAM = 1000002,
    FILL_POS_WEIGHT_STREAM = 1000003,
    FILL_CLASS_STREAM = 1000005,
};

/* u in [0,1) with 24 random bits: the oracle's u01(p, n)[i]. */
double fill_u01(uint64_t p, uint64_t i);
/* Every table entry of m from the formula (entry index = state_dict index). */
mt_status fill_model(mt_model *m);
/* x (N,H,W,C) NHWC with the values the oracle lays out NCHW; n*h*w*c floats. */
void fill_input(float *x, int n, int c, int h, int w);
/* targets (N,L) in {0, 1, NaN} and pos_weight (L). */
void fill_targets(float *y, float *pos_weight, int n, int l);
/* Per-pixel class targets of a dense model: t[i] = floor(u(FILL_CLASS_STREAM, i) * classes) for
 * the n pixels in (N,H,W) order. */
void fill_classes(int32_t *t, int64_t n, int classes);

#endif
