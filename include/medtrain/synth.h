/* Synthetic chest radiographs: a cohort of real DICOM files that demos and tests train on.
 *
 * Each image is rendered procedurally from (seed, index): a body outline, lungs, heart,
 * mediastinum, ribs, diaphragm and noise, plus findings that change the film the way they do on
 * real ones (Effusion: blunted costophrenic angle and a dense meniscus at a lung base;
 * Pneumothorax: a lucent rim without lung markings along an apex; Cardiomegaly: a heart wider than
 * half the chest; Consolidation: a dense patch with air bronchograms; Edema: bilateral perihilar
 * haze; Nodule: a small round opacity), so that a classifier can learn them. Lung and heart masks
 * come from the same geometry: a class-index mask (the heart drawn over the lung), and, when
 * asked, one binary mask per structure (right lung, left lung, heart) in which the heart overlaps
 * the lungs' outline as it does on a film.
 *
 * A cohort directory looks like:
 *     OUT/dicom/pat_0007/study_2/img_000123.dcm   (patients with one or more studies)
 *     OUT/masks/img_000123.png                    (8-bit, 0 background, 1 lung, 2 heart)
 *     OUT/masks_ml/heart/img_000123.png           (with multilabel_masks: 0 outside, 255 inside,
 *                                                  one folder per mt_synth_structures entry)
 *     OUT/labels.csv                              (path relative to OUT/dicom, a column a finding)
 * Labels are 1, 0, -1 (uncertain) or blank (unknown); the film always shows the truth.
 *
 * Files vary as real archives do: 8/12/16 bits stored, MONOCHROME1 and 2, rescale slope and
 * intercept, window tags present or absent, non-square sizes, every transfer syntax in
 * mt_dicom_syntax (deflate only for pixel data under 8 MB, which GDCM cannot exceed; a fixed
 * size above that writes those films explicit-LE). Every header carries distinctive fake PHI
 * containing MT_SYNTH_PHI_MARK (patient name and id, accession number, institution, physicians, a
 * private tag) and the birth date MT_SYNTH_PHI_BIRTH_DATE, so privacy tests can search outputs for
 * them. Same seed, same bytes, whatever the thread count. */
#ifndef MEDTRAIN_SYNTH_H
#define MEDTRAIN_SYNTH_H

#include <stdint.h>

#include "medtrain/image.h"
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_SYNTH_N_FINDINGS     6
#define MT_SYNTH_PHI_MARK       "QZPHI"
#define MT_SYNTH_PHI_BIRTH_DATE "19230417"
extern const char *const mt_synth_findings[MT_SYNTH_N_FINDINGS]; /* Effusion, ..., Nodule */

enum { MT_SYNTH_BACKGROUND = 0, MT_SYNTH_LUNG = 1, MT_SYNTH_HEART = 2 };

/* The structures of the multi-label masks, in this order: the patient's right lung (the image's
 * left on a PA film), the left lung, the heart. */
#define MT_SYNTH_N_STRUCTURES 3
enum { MT_SYNTH_RIGHT_LUNG = 0, MT_SYNTH_LEFT_LUNG = 1, MT_SYNTH_HEART_ML = 2 };
extern const char *const mt_synth_structures[MT_SYNTH_N_STRUCTURES]; /* right_lung, ... */

/* Renders one radiograph of h x w pixels (16..16384 each): img is allocated here (free it with
 * mt_image_free) and gets intensities in [0,1] (1 = dense/white), mask (h*w, may be NULL) the class
 * of each pixel. findings[i] is 1 when finding i is present (NULL: none). The anatomy (size,
 * position, rotation, exposure) varies with (seed, index), and each finding's own placement does
 * not depend on the other findings, so a film with and without one finding differs by it alone. */
mt_status mt_synth_render(uint64_t seed, int64_t index, int h, int w,
                          const uint8_t findings[MT_SYNTH_N_FINDINGS], mt_image *img,
                          uint8_t *mask);
/* mt_synth_render, and also the structures as multi-label masks: structures (may be NULL) gets
 * MT_SYNTH_N_STRUCTURES planes of h*w, plane s 1 where the pixel is in mt_synth_structures[s],
 * else 0. Image and class mask are the same as mt_synth_render's: the class mask is HEART where
 * the heart plane is set, else LUNG where either lung plane is. */
mt_status mt_synth_render_structures(uint64_t seed, int64_t index, int h, int w,
                                     const uint8_t findings[MT_SYNTH_N_FINDINGS], mt_image *img,
                                     uint8_t *mask, uint8_t *structures);

typedef struct mt_synth_opts {
    const char *out; /* directory; created; must not already hold a cohort */
    int64_t n;       /* images */
    int h, w;        /* fixed size, or 0,0 for sizes varying in 1000..3000 (non-square) */
    uint64_t seed;
    int threads;       /* OpenMP threads for rendering and encoding */
    bool fixed_syntax; /* every file in `syntax` (benchmarks); else all syntaxes in turn */
    mt_dicom_syntax syntax;
    int bits;              /* bits stored of every file (8, 12, 16), or 0 to vary */
    bool multilabel_masks; /* also OUT/masks_ml/<structure>/img_*.png */
} mt_synth_opts;

typedef struct mt_synth_summary {
    int64_t images, patients, studies;
    int64_t per_syntax[16];                 /* images per mt_dicom_syntax */
    int64_t positives[MT_SYNTH_N_FINDINGS]; /* label 1 counts */
} mt_synth_summary;

mt_status mt_synth_cohort(const mt_synth_opts *opts, mt_synth_summary *summary);

#ifdef __cplusplus
}
#endif

#endif
