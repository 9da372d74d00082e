/* Segmentation metrics and overlay images for `medtrain eval` of segmentation models: per case and
 * class Dice, IoU and the 95th-percentile Hausdorff distance with MONAI's semantics
 * (tests/oracles/segmetrics_oracle.py is the oracle), their means over a cohort, and an RGB PNG
 * that draws the true and predicted contours over the image.
 *
 * Masks are u8, row-major (h, w). A binary mask holds 0 or 1; a class map holds the class index of
 * each pixel (0 = background), < n_classes. Class c of a class map is the binary mask (map == c).
 *
 *   Dice  2|P∩G| / (|P| + |G|)   MONAI DiceMetric
 *   IoU   |P∩G| / |P∪G|           MONAI MeanIoU
 *   HD95  MONAI compute_hausdorff_distance(percentile=95, directed=False): the surface of a mask
 *         is mask XOR binary_erosion(mask) with scipy's default cross (4-connected) structuring
 *         element and border_value 0, so mask pixels on the image border are surface (see
 *         mt_seg_surface). Each surface pixel of P gets the Euclidean distance to the nearest
 *         surface pixel of G, with pixel spacing (row, col); the 95th percentile of those (numpy's
 *         default linear interpolation) is the P->G distance; HD95 = max(P->G, G->P). Exact: an
 *         exact Euclidean distance transform over the bounding box of P∪G, O(box area).
 *
 * Empty ground truth (|G| = 0), per opts.empty:
 *   MT_SEG_EMPTY_IGNORE  Dice and IoU are NaN (undefined) and skipped by mt_seg_summarize
 *                        (MONAI ignore_empty=True, the default there and here);
 *   MT_SEG_EMPTY_ONE     Dice and IoU are 1 when P is empty too, else 0 (ignore_empty=False).
 * HD95 is NaN (undefined, written as null in JSON) when either mask is empty, whatever opts.empty;
 * n_pred and n_true say which one was. MONAI gives NaN there too (with one mask empty its surface
 * distances are all inf, and torch.quantile's interpolation of infinities is NaN); its plain HD
 * (percentile=None) would be inf, which no mean could absorb.
 *
 * MONAI keeps HD in float32; these values are doubles (the oracle compares with float64 numpy). */
#ifndef MEDTRAIN_SEGMETRICS_H
#define MEDTRAIN_SEGMETRICS_H

#include <stdbool.h>
#include <stdint.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest mask, in pixels, and largest side (indices stay inside 32 bits). */
#define MT_SEG_MAX_PIXELS  ((int64_t)1 << 28)
#define MT_SEG_MAX_SIDE    65535
#define MT_SEG_MAX_CLASSES 256

/* A mask or class map with its size; pred and truth must have the same size (else MT_ERR_SHAPE). */
typedef struct mt_seg_mask {
    const uint8_t *px; /* (h, w) row-major */
    int h, w;
} mt_seg_mask;

typedef enum mt_seg_empty {
    MT_SEG_EMPTY_IGNORE = 0, /* empty truth: Dice and IoU NaN, skipped in means */
    MT_SEG_EMPTY_ONE = 1,    /* empty truth: 1 when the prediction is empty too, else 0 */
} mt_seg_empty;

/* Zero-initialised (or NULL) means the defaults: IGNORE, spacing 1 x 1, background excluded. */
typedef struct mt_seg_opts {
    mt_seg_empty empty;
    double spacing[2];       /* (row, col) in mm, > 0; 0 means 1 (then hd95_mm = hd95_px) */
    bool include_background; /* mt_seg_case_classes: also fill class 0 */
} mt_seg_opts;

/* One case, one class. NaN marks an undefined value (skipped by mt_seg_summarize). */
typedef struct mt_seg_class_metrics {
    double dice, iou;
    double hd95_px;                  /* with spacing 1 x 1 */
    double hd95_mm;                  /* with opts.spacing */
    int64_t n_pred, n_true, n_inter; /* |P|, |G|, |P∩G| in pixels */
} mt_seg_class_metrics;

/* A mean over the values that counted (NaN when none did) and how many counted. */
typedef struct mt_seg_mean {
    double mean;
    int64_t n;
} mt_seg_mean;

/* Per class: means over cases; n = cases where the value was defined. */
typedef struct mt_seg_class_summary {
    mt_seg_mean dice, iou, hd95_px, hd95_mm;
} mt_seg_class_summary;

/* Over classes first_class..n_classes-1:
 *   mean  the mean of the per-class means (classes with no defined case are skipped; n = the
 *         number of classes that counted);
 *   pooled the mean over every defined (case, class) value (n = how many): MONAI's
 *         reduction="mean", which weighs a class by how often it is defined. */
typedef struct mt_seg_summary {
    mt_seg_mean dice, iou, hd95_px, hd95_mm;
    mt_seg_mean pooled_dice, pooled_iou, pooled_hd95_px, pooled_hd95_mm;
} mt_seg_summary;

/* Binary masks (0/1; another value is an MT_ERR_ARG naming the pixel). */
mt_status mt_seg_case_binary(const mt_seg_mask *pred, const mt_seg_mask *truth,
                             const mt_seg_opts *opts, mt_seg_class_metrics *out);

/* Class maps with n_classes classes (2..256; a value >= n_classes is an MT_ERR_ARG naming the
 * pixel): out[c] for c = 1..n_classes-1, and out[0] when opts->include_background (else out[0]
 * is all NaN with zero counts, so summaries skip it). out holds n_classes entries. */
mt_status mt_seg_case_classes(const mt_seg_mask *pred, const mt_seg_mask *truth, int n_classes,
                              const mt_seg_opts *opts, mt_seg_class_metrics *out);

/* Means of a table of cases: cases (n_cases, n_classes) row-major, as mt_seg_case_classes fills
 * it (n_cases >= 0). per_class: n_classes entries, or NULL. The summary covers classes
 * first_class..n_classes-1: 1 for class maps (foreground only, the default), 0 to include the
 * background, or for a table of mt_seg_case_binary results (one column, the foreground). */
mt_status mt_seg_summarize(const mt_seg_class_metrics *cases, int64_t n_cases, int n_classes,
                           int first_class, mt_seg_class_summary *per_class, mt_seg_summary *out);

/* Surface pixels (as above) of every class of a class map or binary mask: out[i] = labels[i] when
 * pixel i is on the surface of its class's mask (a 4-neighbour is outside the image or has another
 * value), else 0. out holds h * w bytes and may not alias labels. */
mt_status mt_seg_surface(const mt_seg_mask *labels, uint8_t *out);

/* ---- Overlays ----------------------------------------------------------------------------- */

/* What an overlay draws. The grey image is exactly one of image_f32 / image_u8, (h, w), windowed
 * linearly from its minimum (black) to its maximum (white): grey = floor(255 (x - min) /
 * (max - min) + 1/2). A constant image is black; non-finite float pixels are black and ignored by
 * the window. truth and pred are class maps (binary masks are class maps with 2 classes) of the
 * same size; either may be NULL. */
typedef struct mt_seg_overlay {
    const float *image_f32;
    const uint8_t *image_u8;
    const uint8_t *truth, *pred;
    int h, w, n_classes; /* n_classes 2..256; class 0 is never drawn */
} mt_seg_overlay;

/* Fills rgb (h * w * 3, row-major RGB): the grey image, then the surface pixels (mt_seg_surface)
 * of every true class c >= 1 SOLID in class c's colour, then the surface pixels of every
 * predicted class DASHED in the same colour: a predicted surface pixel (row, col) is drawn when
 * (row + 2 * col) % 8 < 4, which breaks horizontal, vertical and diagonal runs alike. Predictions
 * are drawn over the truth. */
mt_status mt_seg_overlay_render(const mt_seg_overlay *ov, uint8_t *rgb);

/* Renders and writes an 8-bit RGB PNG atomically (written aside, then renamed into place: a
 * failed write leaves no file and an older file at path untouched). */
mt_status mt_seg_overlay_write(const char *path, const mt_seg_overlay *ov);

/* Class c's colour (c >= 1; black for c < 1): 12 distinct colours, repeating after 12: red
 * (230,25,75), green (60,180,75), blue (0,130,200), yellow (255,225,25), orange (245,130,48),
 * purple (145,30,180), cyan (70,240,240), magenta (240,50,230), lime (210,245,60), pink
 * (250,190,212), teal (0,128,128), brown (170,110,40). */
void mt_seg_color(int c, uint8_t rgb[3]);

#ifdef __cplusplus
}
#endif

#endif
