/* Images for packing: single-channel float working images, the DICOM display pipeline (modality
 * LUT, VOI window, MONOCHROME1 inversion), geometry (square crop/pad, antialiased resize) and
 * PNG/JPEG files (libpng, libjpeg-turbo).
 *
 * The working image is float, row-major (h, w). After mt_image_from_dicom values are display
 * intensities in [0, 1] with 0 = black (air on a chest film) and 1 = white (bone). */
#ifndef MEDTRAIN_IMAGE_H
#define MEDTRAIN_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "medtrain/dicom.h"
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_image {
    float *data; /* h * w, owned (mt_free / mt_image_free) */
    int h, w;
} mt_image;

mt_status mt_image_alloc(mt_image *img, int h, int w);
void mt_image_free(mt_image *img);

typedef struct mt_window_opts {
    bool use_header;       /* use the header's window when it has one (default true) */
    double pct_lo, pct_hi; /* percentile fallback window, e.g. 0.5 and 99.5 */
} mt_window_opts;

/* Stored DICOM pixels -> display intensities in [0,1]:
 *   1. modality LUT: value = stored * slope + intercept (when present);
 *   2. VOI LUT: the header's window (LINEAR per PS3.3 C.11.2.1.2.1, LINEAR_EXACT, SIGMOID) when
 *      present and opts->use_header, else a window from the pct_lo..pct_hi percentiles of the
 *      image's values (a constant image maps to 0);
 *   3. MONOCHROME1 (white = low values) is inverted so that high always means bright.
 * RGB / YBR images are turned into luminance first (ITU-R BT.601 weights).
 * *window_source (may be NULL) says which window was used: "header" or "percentile". */
mt_status mt_image_from_dicom(const mt_dicom_image *d, const mt_window_opts *opts, mt_image *out,
                              const char **window_source);

typedef enum mt_square_mode { MT_SQUARE_CROP, MT_SQUARE_PAD } mt_square_mode;
/* Centre-crops the longer side, or pads the shorter one with pad_value, to make the image square.
 * Returns the offset of the original image inside the result (negative for a crop) so that a mask
 * can follow the same geometry. */
mt_status mt_image_square(const mt_image *src, mt_square_mode mode, float pad_value, mt_image *out,
                          int *off_y, int *off_x);

/* Antialiased resize to (h, w): separable filtering whose support grows with the reduction
 * factor, like Pillow's resize with a triangle (bilinear) filter, so that downsampling a 3000-pixel
 * film to 224 averages over each output pixel's footprint instead of aliasing. */
mt_status mt_image_resize(const mt_image *src, int h, int w, mt_image *out);

/* Masks (class index per pixel, uint8): the same square/resize geometry with nearest-neighbour
 * sampling, so labels stay labels. */
mt_status mt_mask_square(const uint8_t *src, int h, int w, mt_square_mode mode, uint8_t **out,
                         int *out_size);
mt_status mt_mask_resize(const uint8_t *src, int h, int w, int out_h, int out_w, uint8_t *out);

/* [0,1] -> u8 (0..255) or u16 (0..65535), rounding to nearest and clamping. */
void mt_image_to_u8(const mt_image *img, uint8_t *out);
void mt_image_to_u16(const mt_image *img, uint16_t *out);

/* ---- files ------------------------------------------------------------------------------ */

/* Reads a PNG or JPEG (by content, not by extension) as grey levels in [0,1]: 8- or 16-bit grey,
 * grey+alpha, palette or RGB(A) (turned into luminance). Errors name the file and the reason. */
mt_status mt_image_read_file(const char *path, mt_image *out);
/* Reads an 8-bit single-channel PNG as raw values (masks: class index per pixel). */
mt_status mt_png_read_u8(const char *path, uint8_t **pixels, int *h, int *w);
/* Writes an 8- or 16-bit greyscale PNG atomically (pixels are uint8_t or uint16_t). */
mt_status mt_png_write_gray(const char *path, const void *pixels, int h, int w, int bit_depth);
/* Writes an 8-bit RGB PNG atomically (overlays). */
mt_status mt_png_write_rgb(const char *path, const uint8_t *rgb, int h, int w);
/* Writes an 8-bit greyscale JPEG atomically (quality 1..100). */
mt_status mt_jpeg_write_gray(const char *path, const uint8_t *pixels, int h, int w, int quality);

#ifdef __cplusplus
}
#endif

#endif
