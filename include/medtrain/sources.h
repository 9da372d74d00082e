/* The inputs of `medtrain pack`: files found in DICOM folders, entries of seed-format manifests,
 * and a labels CSV.
 *
 *   manifest.json   [{"image_path": "img/a.png", "case_id": "c001", "modality": "CR",
 *                     "labels": {"Effusion": 1, "Nodule": 0}}, ...]   (image_path relative to the
 *                     manifest's folder; label values 1, 0, -1 or null; -1 and null are unknown)
 *   labels.csv      key,LabelA,LabelB,...   where the key column is named path (relative to the
 *                     DICOM folder, or a manifest's image_path), sop_instance_uid or patient_id;
 *                     values 1, 0, -1 or blank (-1 and blank are unknown -> NaN)
 *
 * Every ranks builds the same source list from the same inputs (sorted folder walks), so ranks
 * agree on which files they own without exchanging lists. Keys of a labels CSV may be patient
 * identifiers: they are never printed; errors name the file, line and column only. */
#ifndef MEDTRAIN_SOURCES_H
#define MEDTRAIN_SOURCES_H

#include <stdbool.h>
#include <stdint.h>

#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_source {
    char *path;     /* to open */
    char *rel;      /* relative to its folder or manifest: the "path" key of a labels CSV */
    bool dicom;     /* from a DICOM folder; else an image file from a manifest */
    char *case_id;  /* manifest entries: the case (patient) identifier */
    char *modality; /* manifest entries: may be NULL */
    float *labels;  /* manifest entries with labels: values of the list's labels 0..n_labels-1 */
    int n_labels;   /* (labels first named by later entries are unknown here: NaN) */
} mt_source;

typedef struct mt_source_list {
    mt_source *items;
    int64_t n;
    char **label_names; /* labels named by manifests, in first-seen order */
    int n_labels;
} mt_source_list;

/* Adds every regular file under dir (recursively, hidden files excluded), sorted by relative
 * path. Files that turn out not to be DICOM are skipped later, with a reason. */
mt_status mt_sources_add_dicom_dir(mt_source_list *l, const char *dir);
/* Adds the entries of a manifest in file order; errors name the manifest and the entry. */
mt_status mt_sources_add_manifest(mt_source_list *l, const char *path);
void mt_sources_free(mt_source_list *l);

typedef enum mt_label_key { MT_KEY_PATH, MT_KEY_SOP_UID, MT_KEY_PATIENT_ID } mt_label_key;

typedef struct mt_label_table mt_label_table;

/* Parses a labels CSV (RFC 4180 quoting). Errors name the file and line: a row with the wrong
 * number of fields, a value that is not 1/0/-1/blank, a duplicate key, an unknown key column. */
mt_status mt_labels_load(const char *path, mt_label_table **out);
void mt_labels_free(mt_label_table *t);
mt_label_key mt_labels_key(const mt_label_table *t);
int mt_labels_count(const mt_label_table *t);
const char *const *mt_labels_names(const mt_label_table *t);
/* The row for key, or NULL. Rows are marked as used, for mt_labels_unused. */
const float *mt_labels_find(mt_label_table *t, const char *key);
int64_t mt_labels_rows(const mt_label_table *t);
int64_t mt_labels_unused(const mt_label_table *t);
/* Row i's used mark, and setting it: ranks that each looked up their own files merge marks. */
bool mt_labels_row_used(const mt_label_table *t, int64_t i);
void mt_labels_set_used(mt_label_table *t, int64_t i);

#ifdef __cplusplus
}
#endif

#endif
