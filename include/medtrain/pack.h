/* Dataset packs: one HDF5 file per dataset, readable by h5py (schema in docs/DATA.md).
 *
 *   /            attrs: format="medtrain-dataset", version, creator, created, input_digest
 *   /images      u8 or u16 [N,H,W], one image per chunk
 *   /labels      f32 [N,L], NaN = unknown; attr names
 *   /masks       u8 [N,H,W], class index; attr classes          (only when packed with masks)
 *                or u8 [N,C,H,W], 0/1 per class (multi-label: classes may overlap, no background
 *                class); attr classes (C names). The number of dims is the layout.
 *   /meta/case_id, /meta/modality, /meta/view, /meta/source_digest   fixed-length strings [N]
 *   /meta/pixel_spacing f32 [N,2] (mm per row, column after resizing; NaN when unknown)
 *   /meta/split  u8 [N] (0 train, 1 val, 2 test)
 *   /splits/train, /splits/val, /splits/test   i64 index lists
 *
 * Writing is collective over the communicator with parallel HDF5: ranks append rounds of images;
 * within a round rank 0's images come first, then rank 1's, so the order is the input order
 * whatever the rank count. The file is written under a temporary name and renamed into place
 * only when complete. Reading needs no MPI: each rank opens the file read-only on its own. A pack
 * handle is not thread-safe (HDF5 is not): one thread reads through it. */
#ifndef MEDTRAIN_PACK_H
#define MEDTRAIN_PACK_H

#include <stdbool.h>
#include <stdint.h>

#include "medtrain/comm.h"
#include "medtrain/status.h"
#include "medtrain/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_PACK_FORMAT  "medtrain-dataset"
#define MT_PACK_VERSION 1

typedef enum mt_split { MT_SPLIT_TRAIN, MT_SPLIT_VAL, MT_SPLIT_TEST, MT_SPLIT_COUNT } mt_split;
const char *mt_split_name(mt_split s); /* "train", "val", "test" */
mt_status mt_split_parse(const char *name, mt_split *out);

enum { MT_PACK_CASE_ID = 33, MT_PACK_SHORT = 17, MT_PACK_DIGEST = 65 }; /* string sizes with NUL */

typedef struct mt_pack_info {
    int version;
    int64_t n;
    int h, w;
    mt_dtype dtype; /* MT_U8 or MT_U16 */
    int n_labels;
    char **label_names;
    int n_mask_classes;   /* 0: no masks; index layout: background included */
    char **mask_classes;  /* n_mask_classes names */
    bool mask_multilabel; /* /masks is [N,C,H,W] 0/1, C = n_mask_classes (no background) */
    int64_t split_n[MT_SPLIT_COUNT];
    char creator[64], created[32], input_digest[MT_PACK_DIGEST];
} mt_pack_info;

/* ---- reading --------------------------------------------------------------------------- */

typedef struct mt_pack mt_pack;

/* Opens and checks a pack: refuses a file whose format or version attribute is wrong, naming
 * what it found, and one whose datasets disagree in length or shape. Labels and splits are loaded
 * into memory; images and masks are read on demand. */
mt_status mt_pack_open(const char *path, mt_pack **out);
void mt_pack_close(mt_pack *p);
const mt_pack_info *mt_pack_get_info(const mt_pack *p);
const char *mt_pack_path(const mt_pack *p);
/* The image indices of a split, in file order. */
const int64_t *mt_pack_split(const mt_pack *p, mt_split s, int64_t *n);
const float *mt_pack_labels(const mt_pack *p); /* [n, n_labels] */
/* Image i into out (h*w values of the pack's dtype). */
mt_status mt_pack_read_image(mt_pack *p, int64_t i, void *out);
/* Mask i into out: h*w class indices, or for a multi-label pack n_mask_classes*h*w 0/1 values
 * (channel-major: class c at out + c*h*w). Fails on a pack without masks. */
mt_status mt_pack_read_mask(mt_pack *p, int64_t i, uint8_t *out);
/* Planes per mask: 0 without masks, 1 for class-index masks, n_mask_classes for multi-label. */
int mt_pack_mask_planes(const mt_pack_info *in);

typedef struct mt_pack_meta {
    char case_id[MT_PACK_CASE_ID], modality[MT_PACK_SHORT], view[MT_PACK_SHORT];
    char source_digest[MT_PACK_DIGEST];
    float pixel_spacing[2];
    mt_split split;
} mt_pack_meta;
mt_status mt_pack_read_meta(mt_pack *p, int64_t i, mt_pack_meta *out);

/* ---- writing (collective) ------------------------------------------------------------- */

typedef struct mt_pack_spec {
    int h, w;
    mt_dtype dtype; /* MT_U8 or MT_U16 */
    int n_labels;
    const char *const *label_names;
    int n_mask_classes; /* 0: no /masks */
    const char *const *mask_classes;
    const char *creator;  /* "medtrain 0.1.0 (commit ...)" */
    bool mask_multilabel; /* /masks [N,C,H,W] 0/1 with C = n_mask_classes (>= 1) */
} mt_pack_spec;

typedef struct mt_pack_item {
    const void *pixels;  /* h*w of spec dtype */
    const float *labels; /* n_labels, NaN = unknown */
    const uint8_t *mask; /* mt_pack_mask_planes * h*w, or NULL (all background) */
    mt_pack_meta meta;
} mt_pack_item;

typedef struct mt_pack_writer mt_pack_writer;

/* Creates PATH.tmp (collective). */
mt_status mt_pack_writer_create(mt_comm *comm, const char *path, const mt_pack_spec *spec,
                                mt_pack_writer **out);
/* Appends this rank's n items (n may be 0) after everything appended so far; collective. */
mt_status mt_pack_writer_append(mt_pack_writer *w, const mt_pack_item *items, int n);
/* Collective. With ok: writes splits and the input digest (over the source digests in order and
 * extra_digest_text), closes, and renames PATH.tmp to PATH. Without ok (a rank failed): removes
 * PATH.tmp. Frees w either way. */
mt_status mt_pack_writer_finish(mt_pack_writer *w, bool ok, const char *extra_digest_text);

#ifdef __cplusplus
}
#endif

#endif
