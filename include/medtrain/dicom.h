/* DICOM through GDCM: the C side of src/data/dicom.cpp, the project's only C++ file.
 *
 * Reading decodes any transfer syntax GDCM can (implicit/explicit little endian, big endian,
 * deflate, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000) and returns the stored pixel
 * values with what is needed to turn them into an image (rescale, window, photometric
 * interpretation, spacing) and the identifiers needed to pseudonymise it.
 *
 * PRIVACY: the identifier fields (patient_id, UIDs, ...) are for keyed hashing inside `medtrain
 * pack` only. They must never be logged, printed, put in an error message or written to a pack.
 * Error messages from this module name the file and the problem, never a header value. */
#ifndef MEDTRAIN_DICOM_H
#define MEDTRAIN_DICOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

const char *mt_dicom_gdcm_version(void); /* "3.0.21" */

typedef struct mt_dicom_image {
    /* Pixels of the first frame as stored, row-major, samples interleaved (RGB as RGBRGB...):
     * bits_allocated 8 -> uint8_t, 16 -> uint16_t or int16_t (pixel_representation 1), 32 ->
     * uint32_t or int32_t. NULL after mt_dicom_read_header. Values are masked/sign-extended to
     * bits_stored. */
    void *pixels;
    size_t pixel_bytes;
    int rows, cols, samples_per_pixel, frames;
    int bits_allocated, bits_stored, pixel_representation; /* 0 unsigned, 1 two's complement */
    char photometric[32];                                  /* MONOCHROME1, MONOCHROME2, RGB, ... */

    bool has_rescale; /* Modality LUT: value = stored * slope + intercept */
    double rescale_slope, rescale_intercept;
    bool has_window; /* VOI LUT: the first (center, width) pair */
    double window_center, window_width;
    char voi_lut_function[16]; /* "LINEAR" (default), "LINEAR_EXACT", "SIGMOID" */
    bool has_spacing;          /* PixelSpacing, else ImagerPixelSpacing: mm per (row, column) */
    double pixel_spacing[2];

    char modality[17];      /* CR, DX, CT, ... */
    char view_position[17]; /* PA, AP, LL, ... */
    char sop_class_uid[65];
    char transfer_syntax_uid[65];
    char transfer_syntax_name[64]; /* "JPEG 2000 Lossless", for reports (not identifying) */

    /* Identifiers: for pseudonymisation only (see PRIVACY above). */
    char patient_id[65];
    char study_instance_uid[65];
    char series_instance_uid[65];
    char sop_instance_uid[65];
} mt_dicom_image;

/* Reads and decodes path. Fails (MT_ERR_FORMAT or MT_ERR_UNSUPPORTED) with a reason a person can
 * act on for: a file that is not DICOM, a truncated file, a SOP class that holds no image (SR,
 * presentation state, ...: "no pixel data (SOP class Basic Text SR)"), a transfer syntax GDCM
 * cannot decode, zero-size or short pixel data. */
mt_status mt_dicom_read(const char *path, mt_dicom_image *out);
/* The same without decoding pixels (pixels stays NULL): for scanning a folder quickly. */
mt_status mt_dicom_read_header(const char *path, mt_dicom_image *out);
void mt_dicom_image_free(mt_dicom_image *img);
/* True for SOP classes that hold images medtrain can train on. */
bool mt_dicom_is_image_sop_class(const char *sop_class_uid);

/* ---- writing (medtrain synth) ------------------------------------------------------------- */

typedef enum mt_dicom_syntax {
    MT_TS_IMPLICIT_LE,   /* 1.2.840.10008.1.2 */
    MT_TS_EXPLICIT_LE,   /* 1.2.840.10008.1.2.1 */
    MT_TS_DEFLATE,       /* 1.2.840.10008.1.2.1.99 */
    MT_TS_RLE,           /* 1.2.840.10008.1.2.5 */
    MT_TS_JPEG_BASELINE, /* 1.2.840.10008.1.2.4.50, 8-bit lossy */
    MT_TS_JPEG_LOSSLESS, /* 1.2.840.10008.1.2.4.70, process 14 SV1 */
    MT_TS_JPEG_LS,       /* 1.2.840.10008.1.2.4.80, lossless */
    MT_TS_JPEG2000,      /* 1.2.840.10008.1.2.4.90, lossless */
    MT_TS_COUNT
} mt_dicom_syntax;

const char *mt_dicom_syntax_uid(mt_dicom_syntax ts);
const char *mt_dicom_syntax_name(mt_dicom_syntax ts); /* "explicit-le", "jpeg2000", ... */
mt_status mt_dicom_syntax_parse(const char *name, mt_dicom_syntax *out);

/* A data element given as text, written with its dictionary VR: {0x0010, 0x0010, "DOE^JANE"}.
 * Private tags (odd group) are written as LO with their creator given as another element. */
typedef struct mt_dicom_tag {
    uint16_t group, element;
    const char *value;
} mt_dicom_tag;

typedef struct mt_dicom_write_spec {
    const void *pixels; /* uint8_t when bits_allocated is 8, uint16_t when 16; rows x cols */
    int rows, cols, bits_allocated, bits_stored;
    const char *photometric; /* MONOCHROME1 or MONOCHROME2 */
    mt_dicom_syntax syntax;
    const mt_dicom_tag *tags; /* everything else: patient, study, UIDs, modality, window, ... */
    size_t n_tags;
} mt_dicom_write_spec;

/* Writes a Digital X-Ray (or CR, by the Modality tag) image file, encoded in spec->syntax,
 * atomically. SOP class and instance UIDs come from the tags (0008,0016), (0008,0018). */
mt_status mt_dicom_write(const char *path, const mt_dicom_write_spec *spec);

/* ---- de-identification (medtrain anonymize) ------------------------------------------------ */

/* Writes a de-identified copy of src to dst (atomically): attributes of the DICOM PS3.15 Basic
 * Application Level Confidentiality Profile removed or emptied, all private tags removed, and every
 * instance UID (study, series, SOP instance, frame of reference, ...; not SOP class or transfer
 * syntax UIDs) replaced by one derived from key (the first 16 bytes of HMAC-SHA256 of the UID, as
 * "2.25.<decimal>"), so the same UID maps to the same new UID across files and runs with the same
 * key. Patient ID is replaced by the first 16 hex digits of the HMAC of the patient ID. Pixel data
 * are copied unchanged. key_n is at least 16. */
mt_status mt_dicom_anonymize(const char *src, const char *dst, const uint8_t *key, size_t key_n);

#ifdef __cplusplus
}
#endif

#endif
