/* Overlay images (segmetrics.h): the grey image with the true contours drawn solid and the
 * predicted ones dashed, one colour per class, written as an RGB PNG through mt_png_write_rgb
 * (mt_data), which writes aside and renames.
 *
 * Contours are the surface pixels of mt_seg_surface, the same pixels HD95 measures, so what the
 * picture shows is what the metric saw. Drawing order: grey, truth, prediction. */
#include "medtrain/segmetrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "medtrain/image.h"
#include "medtrain/mem.h"

/* Sasha Trubetskoy's "distinct colours", the saturated ones: visible on grey and on each other. */
static const uint8_t palette[][3] = {
    {230, 25, 75},   /* 1 red */
    {60, 180, 75},   /* 2 green */
    {0, 130, 200},   /* 3 blue */
    {255, 225, 25},  /* 4 yellow */
    {245, 130, 48},  /* 5 orange */
    {145, 30, 180},  /* 6 purple */
    {70, 240, 240},  /* 7 cyan */
    {240, 50, 230},  /* 8 magenta */
    {210, 245, 60},  /* 9 lime */
    {250, 190, 212}, /* 10 pink */
    {0, 128, 128},   /* 11 teal */
    {170, 110, 40},  /* 12 brown */
};
#define N_COLORS ((int)(sizeof palette / sizeof palette[0]))

void mt_seg_color(int c, uint8_t rgb[3]) {
    if (c < 1) {
        rgb[0] = rgb[1] = rgb[2] = 0;
        return;
    }
    memcpy(rgb, palette[(c - 1) % N_COLORS], 3);
}

/* The dash pattern of predicted contours: on for 4 pixels, off for 4 along rows and columns (the
 * pattern steps by 1 down a column, 2 along a row, 3 along a diagonal, -1 along an anti-diagonal:
 * none of them stays on). */
static bool dash_on(int y, int x) {
    return (y + 2 * x) % 8 < 4;
}

/* ---- Checking ------------------------------------------------------------------------------- */

static mt_status check_labels(const char *what, const uint8_t *px, int h, int w, int n_classes) {
    if (!px) return MT_OK;
    for (size_t i = 0; i < (size_t)h * w; i++)
        if (px[i] >= n_classes)
            return mt_fail(MT_ERR_ARG,
                           "overlay: %s pixel (row %zu, col %zu) holds %d, expected a class index "
                           "< n_classes = %d",
                           what, i / (size_t)w, i % (size_t)w, px[i], n_classes);
    return MT_OK;
}

static mt_status check_overlay(const mt_seg_overlay *ov) {
    if (!ov) return mt_fail(MT_ERR_ARG, "overlay: description is NULL");
    if (ov->h < 1 || ov->w < 1 || ov->h > MT_SEG_MAX_SIDE || ov->w > MT_SEG_MAX_SIDE ||
        (int64_t)ov->h * ov->w > MT_SEG_MAX_PIXELS)
        return mt_fail(MT_ERR_ARG, "overlay: image is %dx%d, expected 1..%d pixels a side", ov->h,
                       ov->w, MT_SEG_MAX_SIDE);
    if (!ov->image_f32 == !ov->image_u8)
        return mt_fail(MT_ERR_ARG,
                       "overlay: expected exactly one of image_f32 and image_u8, "
                       "found %s",
                       ov->image_f32 ? "both" : "neither");
    if (ov->n_classes < 2 || ov->n_classes > MT_SEG_MAX_CLASSES)
        return mt_fail(MT_ERR_ARG, "overlay: n_classes = %d, expected 2..%d", ov->n_classes,
                       MT_SEG_MAX_CLASSES);
    MT_TRY(check_labels("truth", ov->truth, ov->h, ov->w, ov->n_classes));
    MT_TRY(check_labels("pred", ov->pred, ov->h, ov->w, ov->n_classes));
    return MT_OK;
}

/* ---- Drawing -------------------------------------------------------------------------------- */

/* Pixel i of the image as a double (non-finite floats are NaN). */
static double pixel(const mt_seg_overlay *ov, size_t i) {
    if (ov->image_u8) return ov->image_u8[i];
    float v = ov->image_f32[i];
    return isfinite(v) ? (double)v : NAN;
}

/* floor(255 (v - lo) / (hi - lo) + 1/2); black for NaN and for a constant image. */
static uint8_t grey_level(double v, double lo, double hi) {
    if (isnan(v) || !(hi > lo)) return 0;
    return (uint8_t)fmin(255.0, floor((v - lo) * 255.0 / (hi - lo) + 0.5));
}

/* The grey image, min (black) .. max (white) of its finite values. */
static void draw_grey(const mt_seg_overlay *ov, uint8_t *rgb) {
    size_t n = (size_t)ov->h * ov->w;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double v = pixel(ov, i);
        if (v < lo) lo = v; /* false for NaN */
        if (v > hi) hi = v;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t g = grey_level(pixel(ov, i), lo, hi);
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g;
    }
}

/* The surface pixels of every class c >= 1 of labels, in class colours; dashed when asked. */
static mt_status draw_contours(const uint8_t *labels, int h, int w, bool dashed, uint8_t *surf,
                               uint8_t *rgb) {
    mt_seg_mask m = {labels, h, w};
    MT_TRY(mt_seg_surface(&m, surf));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            if (surf[i] && (!dashed || dash_on(y, x))) mt_seg_color(surf[i], rgb + 3 * i);
        }
    return MT_OK;
}

mt_status mt_seg_overlay_render(const mt_seg_overlay *ov, uint8_t *rgb) {
    MT_TRY(check_overlay(ov));
    if (!rgb) return mt_fail(MT_ERR_ARG, "overlay: output buffer is NULL");
    draw_grey(ov, rgb);
    if (!ov->truth && !ov->pred) return MT_OK;
    uint8_t *surf = mt_alloc((size_t)ov->h * ov->w, "overlay: contour pixels (1 byte per pixel)");
    if (!surf) return MT_ERR_NOMEM;
    mt_status st = MT_OK;
    if (ov->truth) st = draw_contours(ov->truth, ov->h, ov->w, false, surf, rgb);
    if (st == MT_OK && ov->pred) st = draw_contours(ov->pred, ov->h, ov->w, true, surf, rgb);
    mt_free(surf);
    return st;
}

mt_status mt_seg_overlay_write(const char *path, const mt_seg_overlay *ov) {
    if (!path) return mt_fail(MT_ERR_ARG, "overlay: path is NULL");
    MT_TRY(check_overlay(ov));
    uint8_t *rgb = mt_alloc((size_t)ov->h * ov->w * 3, "overlay: RGB image (3 bytes per pixel)");
    if (!rgb) return mt_error_wrap(MT_ERR_NOMEM, "%s: ", path);
    mt_status st = mt_seg_overlay_render(ov, rgb);
    if (st == MT_OK)
        st = mt_png_write_rgb(path, rgb, ov->h, ov->w);
    else
        st = mt_error_wrap(st, "%s: ", path);
    mt_free(rgb);
    return st;
}
