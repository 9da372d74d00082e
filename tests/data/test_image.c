/* Image processing and PNG/JPEG files: the DICOM display pipeline on hand-computed values, square
 * crop/pad geometry, the resize against Pillow's (fixtures from tests/oracles/
 * image_resize_oracle.py) and its anti-aliasing, masks following the image geometry, and file
 * round trips, odd PNG/JPEG flavours, corrupt files and allocation failures.
 *
 * argv[1], when given, is the fixture folder (default: fixtures/ beside this source file). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

#include "medtrain/fs.h"
#include "medtrain/image.h"
#include "medtrain/mem.h"
#include "medtrain/timer.h"
#include "mt_test.h"

static char fixtures[1024];
static char tmpdir[64];

/* ---- helpers ------------------------------------------------------------------------------ */

static uint32_t lcg_state = 12345;
static uint32_t lcg(void) {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state >> 8;
}

static mt_dicom_image dicom(void *pixels, size_t bytes, int rows, int cols, int spp, int bits,
                            int sign, const char *photometric) {
    mt_dicom_image d;
    memset(&d, 0, sizeof d);
    d.pixels = pixels;
    d.pixel_bytes = bytes;
    d.rows = rows, d.cols = cols, d.samples_per_pixel = spp, d.frames = 1;
    d.bits_allocated = bits, d.bits_stored = bits, d.pixel_representation = sign;
    snprintf(d.photometric, sizeof d.photometric, "%s", photometric);
    return d;
}

static void set_window(mt_dicom_image *d, double c, double w, const char *fn) {
    d->has_window = true;
    d->window_center = c;
    d->window_width = w;
    snprintf(d->voi_lut_function, sizeof d->voi_lut_function, "%s", fn);
}

/* Runs the pipeline on d; checks the window source and each expected value. */
static void check_display(mt_dicom_image *d, const mt_window_opts *o, const char *source,
                          const double *want, int n, int line) {
    mt_image img = {0};
    const char *src = "unset";
    mt_status st = mt_image_from_dicom(d, o, &img, &src);
    if (st != MT_OK) {
        mt_test_check_failed(__FILE__, line, "mt_image_from_dicom failed: %s", mt_error_message());
        return;
    }
    if (strcmp(src, source))
        mt_test_check_failed(__FILE__, line, "window source %s, expected %s", src, source);
    for (int i = 0; i < n; i++)
        if (!(fabs(img.data[i] - want[i]) <= 1e-6))
            mt_test_check_failed(__FILE__, line, "pixel %d: %.9f, expected %.9f", i, img.data[i],
                                 want[i]);
    mt_image_free(&img);
}
#define CHECK_DISPLAY(d, o, source, ...)                                                           \
    do {                                                                                           \
        const double want_[] = {__VA_ARGS__};                                                      \
        check_display(d, o, source, want_, (int)(sizeof want_ / sizeof *want_), __LINE__);         \
    } while (0)

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static int count_tmp_files(void) {
    DIR *dp = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; dp && (e = readdir(dp));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (dp) closedir(dp);
    return n;
}

/* ---- display pipeline ----------------------------------------------------------------------- */

static void test_window_linear(void) {
    /* c = 100, w = 50: x <= 99.5 - 24.5 = 75 -> 0, x > 124 -> 1, else (x - 99.5) / 49 + 0.5. */
    uint16_t px[] = {0, 74, 75, 76, 100, 123, 124, 125, 200};
    mt_dicom_image d = dicom(px, sizeof px, 3, 3, 1, 16, 0, "MONOCHROME2");
    set_window(&d, 100, 50, "LINEAR");
    CHECK_DISPLAY(&d, NULL, "header", 0, 0, 0, 1.0 / 49, 0.5 + 0.5 / 49, 23.5 / 49 + 0.5, 1, 1, 1);
    set_window(&d, 100, 50, ""); /* absent function = LINEAR */
    CHECK_DISPLAY(&d, NULL, "header", 0, 0, 0, 1.0 / 49, 0.5 + 0.5 / 49, 23.5 / 49 + 0.5, 1, 1, 1);
    /* w = 1: a threshold at c - 0.5. */
    uint8_t px1[] = {99, 100};
    mt_dicom_image d1 = dicom(px1, sizeof px1, 1, 2, 1, 8, 0, "MONOCHROME2");
    set_window(&d1, 100, 1, "LINEAR");
    CHECK_DISPLAY(&d1, NULL, "header", 0, 1);
}

static void test_window_linear_exact(void) {
    uint16_t px[] = {50, 75, 80, 100, 120, 125, 130};
    mt_dicom_image d = dicom(px, sizeof px, 1, 7, 1, 16, 0, "MONOCHROME2");
    set_window(&d, 100, 50, "LINEAR_EXACT"); /* (x - 100) / 50 + 0.5, clamped */
    CHECK_DISPLAY(&d, NULL, "header", 0, 0, 0.1, 0.5, 0.9, 1, 1);
    set_window(&d, 100, 0.5, "LINEAR_EXACT"); /* widths below 1 are fine here */
    CHECK_DISPLAY(&d, NULL, "header", 0, 0, 0, 0.5, 1, 1, 1);
}

static void test_window_sigmoid(void) {
    uint16_t px[] = {0, 75, 100, 125};
    mt_dicom_image d = dicom(px, sizeof px, 2, 2, 1, 16, 0, "MONOCHROME2");
    set_window(&d, 100, 50, "SIGMOID  "); /* space padding as in a DICOM CS value */
    /* 1 / (1 + exp(-4 (x - 100) / 50)) */
    CHECK_DISPLAY(&d, NULL, "header", 1 / (1 + exp(8.0)), 1 / (1 + exp(2.0)), 0.5,
                  1 / (1 + exp(-2.0)));
}

static void test_window_fallbacks(void) {
    /* 0..99 with the 10th/90th percentiles: lo = 9.9, hi = 89.1 (rank 0.1 * 99 = 9.9 ...). */
    uint8_t px[100];
    for (int i = 0; i < 100; i++) px[i] = (uint8_t)i;
    mt_dicom_image d = dicom(px, sizeof px, 10, 10, 1, 8, 0, "MONOCHROME2");
    mt_window_opts o = {.use_header = true, .pct_lo = 10, .pct_hi = 90};
    double want[100];
    for (int i = 0; i < 100; i++) want[i] = fmin(1, fmax(0, (i - 9.9) / 79.2));
    check_display(&d, &o, "percentile", want, 100, __LINE__); /* no header window */
    set_window(&d, 50, 0.5, "LINEAR");                        /* LINEAR needs width >= 1 */
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    set_window(&d, 50, 20, "LOG"); /* unknown function */
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    set_window(&d, NAN, 20, "LINEAR");
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    set_window(&d, 50, 20, "LINEAR");
    o.use_header = false; /* told to ignore a valid header window */
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    /* Defaults (opts NULL): 0.5 .. 99.5 -> lo = 0.495, hi = 98.505. */
    d.has_window = false;
    for (int i = 0; i < 100; i++) want[i] = fmin(1, fmax(0, (i - 0.495) / 98.01));
    check_display(&d, NULL, "percentile", want, 100, __LINE__);
    o = (mt_window_opts){.pct_lo = 50, .pct_hi = 40};
    mt_image img;
    MT_CHECK_FAILS(mt_image_from_dicom(&d, &o, &img, NULL), MT_ERR_ARG, "50..40");
}

/* The selection path (colour, 32-bit) must give the same percentiles as the histogram path. */
static void test_percentile_float_paths(void) {
    mt_window_opts o = {.use_header = true, .pct_lo = 10, .pct_hi = 90};
    double want[100];
    for (int i = 0; i < 100; i++) want[i] = fmin(1, fmax(0, (i - 9.9) / 79.2));
    uint8_t rgb[300];
    int32_t i32[100];
    uint32_t u32[100];
    for (int i = 0; i < 100; i++) {
        int v = (i * 37) % 100; /* shuffled: selection must not depend on order */
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = (uint8_t)v;
        i32[i] = v;
        u32[i] = (uint32_t)v;
        want[i] = fmin(1, fmax(0, (v - 9.9) / 79.2));
    }
    mt_dicom_image d = dicom(rgb, sizeof rgb, 10, 10, 3, 8, 0, "RGB");
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    d = dicom(i32, sizeof i32, 10, 10, 1, 32, 1, "MONOCHROME2");
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    d = dicom(u32, sizeof u32, 10, 10, 1, 32, 0, "MONOCHROME2");
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    /* Extremes: 0th/100th percentiles are the minimum and maximum. */
    o.pct_lo = 0, o.pct_hi = 100;
    for (int i = 0; i < 100; i++) want[i] = u32[i] / 99.0;
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    uint8_t g[100];
    for (int i = 0; i < 100; i++) g[i] = (uint8_t)u32[i];
    d = dicom(g, sizeof g, 10, 10, 1, 8, 0, "MONOCHROME2");
    check_display(&d, &o, "percentile", want, 100, __LINE__);
}

static void test_percentile_degenerate(void) {
    /* Constant: everything 0. */
    uint16_t c[64];
    for (int i = 0; i < 64; i++) c[i] = 700;
    mt_dicom_image d = dicom(c, sizeof c, 8, 8, 1, 16, 0, "MONOCHROME2");
    double zeros[64] = {0};
    check_display(&d, NULL, "percentile", zeros, 64, __LINE__);
    d.photometric[10] = '1'; /* MONOCHROME1: a blank image stays 0, not inverted to white */
    check_display(&d, NULL, "percentile", zeros, 64, __LINE__);
    /* 998 zeros, one 50, one 100: both default percentiles are 0, so the window widens to the
     * full range [0, 100]. */
    uint16_t m[1000] = {0};
    m[500] = 50, m[999] = 100;
    d = dicom(m, sizeof m, 10, 100, 1, 16, 0, "MONOCHROME2");
    mt_image img;
    MT_CHECK_OK(mt_image_from_dicom(&d, NULL, &img, NULL));
    if (img.data) {
        MT_CHECK_NEAR(img.data[0], 0, 1e-7);
        MT_CHECK_NEAR(img.data[500], 0.5, 1e-7);
        MT_CHECK_NEAR(img.data[999], 1, 1e-7);
    }
    mt_image_free(&img);
    uint8_t rgb[3000] = {0}; /* the same through the selection path */
    for (int k = 0; k < 3; k++) rgb[1500 + k] = 50, rgb[2997 + k] = 100;
    d = dicom(rgb, sizeof rgb, 10, 100, 3, 8, 0, "RGB");
    MT_CHECK_OK(mt_image_from_dicom(&d, NULL, &img, NULL));
    if (img.data) {
        MT_CHECK_NEAR(img.data[0], 0, 1e-6);
        MT_CHECK_NEAR(img.data[500], 0.5, 1e-6);
        MT_CHECK_NEAR(img.data[999], 1, 1e-6);
    }
    mt_image_free(&img);
}

static void test_rescale(void) {
    /* v = 2 s - 1024, LINEAR_EXACT c = 0, w = 2048: v / 2048 + 0.5 = s / 1024. */
    uint16_t px[] = {0, 256, 512, 1024, 2000};
    mt_dicom_image d = dicom(px, sizeof px, 1, 5, 1, 16, 0, "MONOCHROME2");
    d.has_rescale = true, d.rescale_slope = 2, d.rescale_intercept = -1024;
    set_window(&d, 0, 2048, "LINEAR_EXACT");
    CHECK_DISPLAY(&d, NULL, "header", 0, 0.25, 0.5, 1, 1);
    /* Percentile windows do not care about a positive linear rescale ... */
    uint8_t g[100];
    for (int i = 0; i < 100; i++) g[i] = (uint8_t)i;
    mt_window_opts o = {.use_header = true, .pct_lo = 10, .pct_hi = 90};
    d = dicom(g, sizeof g, 10, 10, 1, 8, 0, "MONOCHROME2");
    d.has_rescale = true, d.rescale_slope = 2, d.rescale_intercept = 5;
    double want[100];
    for (int i = 0; i < 100; i++) want[i] = fmin(1, fmax(0, (i - 9.9) / 79.2));
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    /* ... but a negative slope reverses them: v = -s, window [-89.1, -9.9]. */
    d.rescale_slope = -1, d.rescale_intercept = 0;
    for (int i = 0; i < 100; i++) want[i] = fmin(1, fmax(0, (89.1 - i) / 79.2));
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    d.rescale_slope = NAN;
    mt_image img;
    MT_CHECK_FAILS(mt_image_from_dicom(&d, &o, &img, NULL), MT_ERR_FORMAT, "rescale");
}

static void test_monochrome1(void) {
    uint16_t px[] = {50, 80, 100, 130};
    mt_dicom_image d = dicom(px, sizeof px, 2, 2, 1, 16, 0, "MONOCHROME1");
    set_window(&d, 100, 50, "LINEAR_EXACT");
    CHECK_DISPLAY(&d, NULL, "header", 1, 0.9, 0.5, 0);
    uint8_t g[100];
    for (int i = 0; i < 100; i++) g[i] = (uint8_t)i;
    d = dicom(g, sizeof g, 10, 10, 1, 8, 0, "MONOCHROME1");
    mt_window_opts o = {.use_header = true, .pct_lo = 10, .pct_hi = 90};
    double want[100];
    for (int i = 0; i < 100; i++) want[i] = 1 - fmin(1, fmax(0, (i - 9.9) / 79.2));
    check_display(&d, &o, "percentile", want, 100, __LINE__);
}

static void test_signed16(void) {
    int16_t px[] = {-1000, -750, -500, 0, 500, -32768, 32767};
    mt_dicom_image d = dicom(px, sizeof px, 1, 7, 1, 16, 1, "MONOCHROME2");
    set_window(&d, -500, 1000, "LINEAR_EXACT");
    CHECK_DISPLAY(&d, NULL, "header", 0, 0.25, 0.5, 1, 1, 0, 1);
    /* CT-style: stored 0..2000 with intercept -1024, window c = 40, w = 400 (soft tissue):
     * LINEAR bounds 39.5 -+ 199.5 -> (-160, 239]. */
    int16_t ct[] = {0, 864, 1064, 1263, 1264, 2000};
    d = dicom(ct, sizeof ct, 2, 3, 1, 16, 1, "MONOCHROME2");
    d.has_rescale = true, d.rescale_slope = 1, d.rescale_intercept = -1024;
    set_window(&d, 40, 400, "LINEAR");
    CHECK_DISPLAY(&d, NULL, "header", 0, 0, (40 - 39.5) / 399 + 0.5, (239 - 39.5) / 399 + 0.5, 1,
                  1);
    /* Percentiles over negative values: -50..49, 10/90 -> [-40.1, 39.1]. */
    int16_t s[100];
    double want[100];
    for (int i = 0; i < 100; i++)
        s[i] = (int16_t)(i - 50), want[i] = fmin(1, fmax(0, (i - 9.9) / 79.2));
    d = dicom(s, sizeof s, 10, 10, 1, 16, 1, "MONOCHROME2");
    mt_window_opts o = {.use_header = true, .pct_lo = 10, .pct_hi = 90};
    check_display(&d, &o, "percentile", want, 100, __LINE__);
    /* Signed 8-bit (sign-extended in uint8 storage) too. */
    int8_t s8[100];
    for (int i = 0; i < 100; i++) s8[i] = (int8_t)(i - 50);
    d = dicom(s8, sizeof s8, 10, 10, 1, 8, 1, "MONOCHROME2");
    check_display(&d, &o, "percentile", want, 100, __LINE__);
}

static void test_rgb_luminance(void) {
    /* BT.601: 0.299 R + 0.587 G + 0.114 B; window c = 127.5, w = 255 maps 0..255 to 0..1. */
    uint8_t px[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255};
    mt_dicom_image d = dicom(px, sizeof px, 2, 2, 3, 8, 0, "RGB");
    set_window(&d, 127.5, 255, "LINEAR_EXACT");
    CHECK_DISPLAY(&d, NULL, "header", 0.299, 0.587, 0.114, 1);
    uint16_t px16[] = {1000, 0, 0, 0, 1000, 0};
    d = dicom(px16, sizeof px16, 1, 2, 3, 16, 0, "RGB");
    set_window(&d, 500, 1000, "LINEAR_EXACT");
    CHECK_DISPLAY(&d, NULL, "header", 0.299, 0.587);
    /* YBR: Y is the luma already. */
    uint8_t ybr[] = {51, 200, 10, 204, 0, 255};
    d = dicom(ybr, sizeof ybr, 1, 2, 3, 8, 0, "YBR_FULL");
    set_window(&d, 127.5, 255, "LINEAR_EXACT");
    CHECK_DISPLAY(&d, NULL, "header", 0.2, 0.8);
}

static void test_dicom_errors(void) {
    uint16_t px[16] = {0};
    mt_image img = {0};
    mt_dicom_image d = dicom(px, sizeof px, 4, 4, 2, 16, 0, "MONOCHROME2");
    MT_CHECK_FAILS(mt_image_from_dicom(&d, NULL, &img, NULL), MT_ERR_UNSUPPORTED, "2 samples");
    d = dicom(px, sizeof px, 4, 4, 1, 12, 0, "MONOCHROME2");
    MT_CHECK_FAILS(mt_image_from_dicom(&d, NULL, &img, NULL), MT_ERR_UNSUPPORTED, "12 bits");
    d = dicom(px, sizeof px - 2, 4, 4, 1, 16, 0, "MONOCHROME2");
    MT_CHECK_FAILS(mt_image_from_dicom(&d, NULL, &img, NULL), MT_ERR_FORMAT, "30 bytes", "32");
    d = dicom(NULL, 0, 4, 4, 1, 16, 0, "MONOCHROME2");
    MT_CHECK_FAILS(mt_image_from_dicom(&d, NULL, &img, NULL), MT_ERR_ARG, "no pixel data");
    d = dicom(px, sizeof px, 4, 4, 1, 16, 0, "PALETTE COLOR");
    MT_CHECK_FAILS(mt_image_from_dicom(&d, NULL, &img, NULL), MT_ERR_UNSUPPORTED, "PALETTE");
    d = dicom(px, sizeof px, 0, 4, 1, 16, 0, "MONOCHROME2");
    MT_CHECK_FAILS(mt_image_from_dicom(&d, NULL, &img, NULL), MT_ERR_FORMAT, "0x4");
    MT_CHECK(img.data == NULL && img.h == 0);
}

/* ---- geometry ------------------------------------------------------------------------------- */

static mt_image ramp(int h, int w) {
    mt_image img;
    if (mt_image_alloc(&img, h, w) != MT_OK) return img;
    for (int i = 0; i < h * w; i++) img.data[i] = (float)i;
    return img;
}

/* Squares an h x w ramp and checks the offsets and every pixel (pad = -1). */
static void check_square(int h, int w, mt_square_mode mode, int size, int oy, int ox, int line) {
    mt_image src = ramp(h, w), out = {0};
    int gy = 99, gx = 99;
    MT_CHECK_OK(mt_image_square(&src, mode, -1.0f, &out, &gy, &gx));
    if (out.h != size || out.w != size || gy != oy || gx != ox) {
        mt_test_check_failed(__FILE__, line, "%dx%d -> %dx%d off (%d, %d), expected %d (%d, %d)", h,
                             w, out.h, out.w, gy, gx, size, oy, ox);
    } else {
        int bad = 0;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                int sy = y - oy, sx = x - ox;
                float want = sy >= 0 && sy < h && sx >= 0 && sx < w ? (float)(sy * w + sx) : -1;
                bad += out.data[y * size + x] != want;
            }
        if (bad) mt_test_check_failed(__FILE__, line, "%d pixels misplaced", bad);
    }
    /* The mask follows the same geometry (pad = class 0). */
    uint8_t *m = mt_alloc((size_t)h * w, "mask"), *mo = NULL;
    for (int i = 0; i < h * w; i++) m[i] = (uint8_t)(1 + i % 250);
    int msize = 0;
    MT_CHECK_OK(mt_mask_square(m, h, w, mode, &mo, &msize));
    if (mo && msize == size) {
        int bad = 0;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                float v = out.data[y * size + x];
                bad += mo[y * size + x] != (v < 0 ? 0 : 1 + (int)v % 250);
            }
        if (bad) mt_test_check_failed(__FILE__, line, "mask: %d pixels differ from the image", bad);
    } else {
        mt_test_check_failed(__FILE__, line, "mask square size %d, expected %d", msize, size);
    }
    mt_free(m);
    mt_free(mo);
    mt_image_free(&src);
    mt_image_free(&out);
}

static void test_square(void) {
    check_square(4, 7, MT_SQUARE_CROP, 4, 0, -1, __LINE__); /* odd: 3 -> 1 left, 2 right */
    check_square(4, 8, MT_SQUARE_CROP, 4, 0, -2, __LINE__);
    check_square(8, 5, MT_SQUARE_CROP, 5, -1, 0, __LINE__); /* portrait */
    check_square(9, 5, MT_SQUARE_CROP, 5, -2, 0, __LINE__);
    check_square(3, 6, MT_SQUARE_PAD, 6, 1, 0, __LINE__); /* odd: 3 -> 1 above, 2 below */
    check_square(4, 6, MT_SQUARE_PAD, 6, 1, 0, __LINE__);
    check_square(7, 4, MT_SQUARE_PAD, 7, 0, 1, __LINE__);
    check_square(7, 2, MT_SQUARE_PAD, 7, 0, 2, __LINE__);
    check_square(5, 5, MT_SQUARE_CROP, 5, 0, 0, __LINE__);
    check_square(5, 5, MT_SQUARE_PAD, 5, 0, 0, __LINE__);
    check_square(1, 9, MT_SQUARE_PAD, 9, 4, 0, __LINE__);
    mt_image src = ramp(3, 3), out;
    MT_CHECK_FAILS(mt_image_square(&src, (mt_square_mode)7, 0, &out, NULL, NULL), MT_ERR_ARG,
                   "mode");
    mt_image_free(&src);
}

/* Reads a fixture: int32 h, int32 w, h*w float32 (little-endian, as this machine). */
static bool read_fixture(const char *name, mt_image *img) {
    char path[1200], *data = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/%s", fixtures, name);
    if (mt_file_read(path, &data, &n) != MT_OK) {
        mt_test_check_failed(__FILE__, __LINE__, "%s", mt_error_message());
        return false;
    }
    int32_t hw[2];
    memcpy(hw, data, sizeof hw);
    bool ok = n == 8 + (size_t)hw[0] * hw[1] * 4 && mt_image_alloc(img, hw[0], hw[1]) == MT_OK;
    if (ok) memcpy(img->data, data + 8, n - 8);
    MT_CHECK(ok, "%s: bad fixture (%zu bytes)", path, n);
    mt_free(data);
    return ok;
}

static void test_resize_pillow(void) {
    mt_image src = {0};
    if (!read_fixture("resize_src.bin", &src)) return;
    const char *names[] = {"resize_16x20.bin", "resize_80x90.bin", "resize_60x20.bin"};
    for (int k = 0; k < 3; k++) {
        mt_image want = {0}, got = {0};
        if (!read_fixture(names[k], &want)) continue;
        MT_CHECK_OK(mt_image_resize(&src, want.h, want.w, &got));
        double worst = 0;
        for (int i = 0; got.data && i < want.h * want.w; i++)
            worst = fmax(worst, fabs(got.data[i] - want.data[i]));
        MT_CHECK(got.data && worst <= 1e-4, "%s: max |C - Pillow| = %g", names[k], worst);
        mt_image_free(&want);
        mt_image_free(&got);
    }
    mt_image_free(&src);
}

static void test_resize_properties(void) {
    mt_image c, out;
    MT_CHECK_OK(mt_image_alloc(&c, 30, 45));
    for (int i = 0; i < 30 * 45; i++) c.data[i] = 0.7f;
    int sizes[][2] = {{7, 11}, {100, 90}, {30, 13}, {1, 1}, {30, 45}};
    for (int k = 0; k < 5; k++) {
        MT_CHECK_OK(mt_image_resize(&c, sizes[k][0], sizes[k][1], &out));
        float worst = 0;
        for (int i = 0; out.data && i < out.h * out.w; i++)
            worst = fmaxf(worst, fabsf(out.data[i] - 0.7f));
        MT_CHECK(worst < 1e-6, "constant image to %dx%d: off by %g", sizes[k][0], sizes[k][1],
                 worst);
        mt_image_free(&out);
    }
    mt_image_free(&c);

    /* A linear ramp stays linear: pixel x holds x + 0.5 (its centre); output i is centred at
     * (i + 0.5) * 5 in input coordinates, and the symmetric filter keeps that value inside. */
    mt_image g;
    MT_CHECK_OK(mt_image_alloc(&g, 10, 300));
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 300; x++) g.data[y * 300 + x] = x + 0.5f;
    MT_CHECK_OK(mt_image_resize(&g, 4, 60, &out));
    for (int i = 2; out.data && i < 58; i++)
        MT_CHECK_NEAR(out.data[out.w + i], (i + 0.5) * 5, 1e-5);
    mt_image_free(&out);
    mt_image_free(&g);

    /* Anti-aliasing: a 1-pixel checkerboard reduced 4x is mid-grey. Point sampling (what the
     * mask's nearest neighbour does) hits one colour only and gives a flat 0 or 1. */
    mt_image cb;
    MT_CHECK_OK(mt_image_alloc(&cb, 64, 64));
    uint8_t mask[64 * 64], small[16 * 16];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) cb.data[y * 64 + x] = mask[y * 64 + x] = (x + y) % 2;
    MT_CHECK_OK(mt_image_resize(&cb, 16, 16, &out));
    double worst_inner = 0, worst = 0;
    for (int y = 0; out.data && y < 16; y++)
        for (int x = 0; x < 16; x++) {
            double e = fabs(out.data[y * 16 + x] - 0.5);
            worst = fmax(worst, e);
            if (y > 0 && y < 15 && x > 0 && x < 15) worst_inner = fmax(worst_inner, e);
        }
    MT_CHECK(worst_inner < 1e-5 && worst < 0.1, "checkerboard: off grey by %g inside, %g at edges",
             worst_inner, worst);
    MT_CHECK_OK(mt_mask_resize(mask, 64, 64, 16, 16, small));
    int ones = 0;
    for (int i = 0; i < 256; i++) ones += small[i];
    MT_CHECK(ones == 0 || ones == 256, "point sampling aliases to a flat colour (%d ones)", ones);
    mt_image_free(&out);
    mt_image_free(&cb);

    /* The mean survives an odd reduction of a random image. */
    mt_image r;
    MT_CHECK_OK(mt_image_alloc(&r, 301, 257));
    double mean_in = 0, mean_out = 0;
    for (int i = 0; i < 301 * 257; i++) mean_in += r.data[i] = (float)(lcg() % 1000) / 999;
    MT_CHECK_OK(mt_image_resize(&r, 81, 70, &out));
    for (int i = 0; out.data && i < 81 * 70; i++) mean_out += out.data[i];
    MT_CHECK_NEAR(mean_out / (81 * 70), mean_in / (301 * 257), 0.01);
    mt_image_free(&out);
    MT_CHECK_FAILS(mt_image_resize(&r, 0, 5, &out), MT_ERR_ARG, "0x5");
    mt_image_free(&r);
}

/* A rectangle marked in the mask lands where the image's bright rectangle lands. */
static void check_mask_follows(mt_square_mode mode, int size, int exact, int line) {
    int h = 40, w = 60;
    mt_image img, sq, rs;
    if (mt_image_alloc(&img, h, w) != MT_OK) return;
    uint8_t mask[40 * 60] = {0};
    for (int y = 10; y < 20; y++)
        for (int x = 16; x < 46; x++) img.data[y * w + x] = 1, mask[y * w + x] = 3;
    int oy, ox, msize;
    uint8_t *msq = NULL, *mrs = mt_alloc((size_t)size * size, "mask");
    MT_CHECK_OK(mt_image_square(&img, mode, 0, &sq, &oy, &ox));
    MT_CHECK_OK(mt_mask_square(mask, h, w, mode, &msq, &msize));
    MT_CHECK_OK(mt_image_resize(&sq, size, size, &rs));
    MT_CHECK_OK(mt_mask_resize(msq, msize, msize, size, size, mrs));
    int disagree = 0, far = 0, inside = 0;
    for (int i = 0; rs.data && i < size * size; i++) {
        bool bright = rs.data[i] > 0.5f, marked = mrs[i] == 3;
        inside += marked;
        disagree += bright != marked;
        far += marked ? rs.data[i] < 0.25f : rs.data[i] > 0.75f;
    }
    if (exact ? disagree != 0 : (disagree > size || far != 0) || inside == 0)
        mt_test_check_failed(__FILE__, line, "%d pixels disagree, %d far off (of %d marked)",
                             disagree, far, inside);
    mt_image_free(&img);
    mt_image_free(&sq);
    mt_image_free(&rs);
    mt_free(msq);
    mt_free(mrs);
}

static void test_mask_geometry(void) {
    check_mask_follows(MT_SQUARE_CROP, 20, 1, __LINE__); /* 2x: edges fall between pixels */
    check_mask_follows(MT_SQUARE_PAD, 25, 0, __LINE__);  /* 2.4x */
    check_mask_follows(MT_SQUARE_CROP, 17, 0, __LINE__);
    check_mask_follows(MT_SQUARE_PAD, 97, 0, __LINE__); /* upscale */
    /* Nearest neighbour picks the pixel holding each output centre: 4 -> 2 takes 1 and 3. */
    uint8_t m[] = {0, 1, 2, 3}, o[8];
    MT_CHECK_OK(mt_mask_resize(m, 1, 4, 1, 2, o));
    MT_CHECK(o[0] == 1 && o[1] == 3);
    MT_CHECK_OK(mt_mask_resize(m, 1, 4, 1, 8, o)); /* 4 -> 8: each pixel twice */
    MT_CHECK(!memcmp(o, (uint8_t[]){0, 0, 1, 1, 2, 2, 3, 3}, 8));
}

static void test_storage(void) {
    float v[] = {-0.5f, 0, 0.49f / 255, 0.51f / 255, 0.5f, 1, 1.5f, NAN, INFINITY, -INFINITY};
    mt_image img = {v, 1, 10};
    uint8_t u8[10];
    uint16_t u16[10];
    mt_image_to_u8(&img, u8);
    mt_image_to_u16(&img, u16);
    const uint8_t want8[] = {0, 0, 0, 1, 128, 255, 255, 0, 255, 0};
    const uint16_t want16[] = {0, 0, 126, 131, 32768, 65535, 65535, 0, 65535, 0};
    for (int i = 0; i < 10; i++) {
        MT_CHECK(u8[i] == want8[i], "u8[%d] = %d, expected %d", i, u8[i], want8[i]);
        MT_CHECK(u16[i] == want16[i], "u16[%d] = %d, expected %d", i, u16[i], want16[i]);
    }
    /* Every 8-bit level survives u8 -> [0,1] -> u8. */
    float f[256];
    for (int i = 0; i < 256; i++) f[i] = i / 255.0f;
    uint8_t back[256];
    mt_image_to_u8(&(mt_image){f, 16, 16}, back);
    for (int i = 0; i < 256; i++) MT_CHECK(back[i] == i);
}

/* ---- files ---------------------------------------------------------------------------------- */

/* Writes any PNG flavour with libpng directly (rows already packed as PNG wants them). */
static void write_png_raw(const char *path, int w, int h, int type, int depth, const uint8_t *rows,
                          size_t rowbytes, const png_color *pal, int npal, const uint8_t *trans,
                          int ntrans, bool interlace) {
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        mt_test_check_failed(__FILE__, __LINE__, "libpng could not write %s", path);
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, w, h, depth, type, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trans) png_set_tRNS(png, info, trans, ntrans, NULL);
    png_write_info(png, info);
    png_bytep *rp = malloc(sizeof *rp * h);
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)rows + y * rowbytes;
    png_write_image(png, rp);
    png_write_end(png, NULL);
    free(rp);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

/* Packs low-depth samples MSB first, as PNG stores them. */
static void pack_row(const uint8_t *v, int w, int depth, uint8_t *out) {
    size_t bytes = ((size_t)w * depth + 7) / 8;
    memset(out, 0, bytes);
    for (int x = 0; x < w; x++) {
        int bit = x * depth;
        out[bit / 8] |= (uint8_t)(v[x] << (8 - depth - bit % 8));
    }
}

static void check_read(const char *path, const float *want, int h, int w, float tol, int line) {
    mt_image img = {0};
    if (mt_image_read_file(path, &img) != MT_OK) {
        mt_test_check_failed(__FILE__, line, "reading %s: %s", path, mt_error_message());
        return;
    }
    if (img.h != h || img.w != w) {
        mt_test_check_failed(__FILE__, line, "%s: %dx%d, expected %dx%d", path, img.h, img.w, h, w);
    } else {
        double worst = 0;
        for (int i = 0; i < h * w; i++) worst = fmax(worst, fabs(img.data[i] - want[i]));
        if (!(worst <= tol))
            mt_test_check_failed(__FILE__, line, "%s: off by %g (tolerance %g)", path, worst, tol);
    }
    mt_image_free(&img);
}

static float luma(float r, float g, float b) {
    return 0.299f * r + 0.587f * g + 0.114f * b;
}

static void test_png_gray_roundtrip(void) {
    enum { H = 37, W = 53 };
    char path[128];
    uint8_t p8[H * W];
    uint16_t p16[H * W];
    float want8[H * W], want16[H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int i = y * W + x;
            p8[i] = (uint8_t)((x * 7 + y * 3) % 256);
            p16[i] = (uint16_t)((x * 1237 + y * 4111 + (x * y) % 7) % 65536);
            want8[i] = p8[i] / 255.0f;
            want16[i] = p16[i] / 65535.0f;
        }
    p16[0] = 65535, want16[0] = 1;
    tmp_path(path, sizeof path, "gray8.png");
    MT_CHECK_OK(mt_png_write_gray(path, p8, H, W, 8));
    check_read(path, want8, H, W, 0, __LINE__);
    uint8_t *back = NULL;
    int h = 0, w = 0;
    MT_CHECK_OK(mt_png_read_u8(path, &back, &h, &w));
    MT_CHECK(back && h == H && w == W && !memcmp(back, p8, sizeof p8), "8-bit round trip");
    mt_free(back);
    tmp_path(path, sizeof path, "gray16.png");
    MT_CHECK_OK(mt_png_write_gray(path, p16, H, W, 16));
    check_read(path, want16, H, W, 0, __LINE__);
    MT_CHECK_FAILS(mt_png_read_u8(path, &back, &h, &w), MT_ERR_FORMAT, "gray16.png", "16-bit");
    MT_CHECK_FAILS(mt_png_write_gray(path, p16, H, W, 12), MT_ERR_ARG, "bit depth 12");
    MT_CHECK(count_tmp_files() == 0, "atomic writes leave no temporary files");
    char bad[128];
    tmp_path(bad, sizeof bad, "no/such/dir/x.png");
    MT_CHECK_FAILS(mt_png_write_gray(bad, p8, H, W, 8), MT_ERR_IO, "x.png");
}

static void test_png_rgb(void) {
    uint8_t rgb[2 * 3 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 10, 200, 30};
    float want[6];
    for (int i = 0; i < 6; i++) want[i] = luma(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]) / 255;
    char path[128];
    tmp_path(path, sizeof path, "rgb.png");
    MT_CHECK_OK(mt_png_write_rgb(path, rgb, 2, 3));
    check_read(path, want, 2, 3, 1e-6f, __LINE__);
    uint8_t *m = NULL;
    int h, w;
    MT_CHECK_FAILS(mt_png_read_u8(path, &m, &h, &w), MT_ERR_FORMAT, "rgb.png", "RGB");
}

/* PNG flavours written by libpng itself: low bit depths, palettes, alpha, 16-bit colour,
 * interlacing. */
static void test_png_flavours(void) {
    enum { W = 13, H = 5 };
    char path[128];
    uint8_t v[W], rows[H * 128];
    float want[H * W];
    /* 1-, 2- and 4-bit grey expand to 0..1. */
    for (int depth = 1; depth <= 4; depth *= 2) {
        int max = (1 << depth) - 1;
        size_t rb = ((size_t)W * depth + 7) / 8;
        for (int y = 0; y < H; y++) {
            for (int x = 0; x < W; x++) v[x] = (uint8_t)((x + 3 * y) % (max + 1));
            for (int x = 0; x < W; x++) want[y * W + x] = (float)v[x] / max;
            pack_row(v, W, depth, rows + y * rb);
        }
        tmp_path(path, sizeof path, "low.png");
        write_png_raw(path, W, H, PNG_COLOR_TYPE_GRAY, depth, rows, rb, NULL, 0, NULL, 0, false);
        check_read(path, want, H, W, 1e-6f, __LINE__);
        /* As a mask the same file gives the raw values. */
        uint8_t *m = NULL;
        int h = 0, w = 0;
        MT_CHECK_OK(mt_png_read_u8(path, &m, &h, &w));
        int bad = 0;
        for (int i = 0; m && i < H * W; i++) bad += m[i] != (uint8_t)lrintf(want[i] * max);
        MT_CHECK(m && h == H && w == W && bad == 0, "%d-bit mask: %d wrong", depth, bad);
        mt_free(m);
    }
    /* 2-bit palette (with transparency, dropped): luminance of the palette colour. */
    png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
    uint8_t trans[4] = {255, 0, 128, 255};
    size_t rb = (W * 2 + 7) / 8;
    uint8_t idx[H * W];
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) v[x] = idx[y * W + x] = (uint8_t)((x * y + x) % 4);
        for (int x = 0; x < W; x++)
            want[y * W + x] = luma(pal[v[x]].red, pal[v[x]].green, pal[v[x]].blue) / 255;
        pack_row(v, W, 2, rows + y * rb);
    }
    tmp_path(path, sizeof path, "palette.png");
    write_png_raw(path, W, H, PNG_COLOR_TYPE_PALETTE, 2, rows, rb, pal, 4, NULL, 0, false);
    check_read(path, want, H, W, 1e-6f, __LINE__);
    uint8_t *m = NULL;
    int h, w;
    MT_CHECK_OK(mt_png_read_u8(path, &m, &h, &w)); /* palette masks: indices */
    MT_CHECK(m && !memcmp(m, idx, sizeof idx));
    mt_free(m);
    write_png_raw(path, W, H, PNG_COLOR_TYPE_PALETTE, 2, rows, rb, pal, 4, trans, 4, false);
    check_read(path, want, H, W, 1e-6f, __LINE__);
    /* Grey + alpha, 8 and 16 bits: alpha dropped. */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int g = (x * 19 + y * 40) % 256, i = y * W + x;
            rows[2 * i] = (uint8_t)g, rows[2 * i + 1] = (uint8_t)(255 - g);
            want[i] = g / 255.0f;
        }
    tmp_path(path, sizeof path, "ga.png");
    write_png_raw(path, W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 8, rows, 2 * W, NULL, 0, NULL, 0, false);
    check_read(path, want, H, W, 1e-6f, __LINE__);
    MT_CHECK_FAILS(mt_png_read_u8(path, &m, &h, &w), MT_ERR_FORMAT, "grey+alpha");
    static uint8_t big[H * W * 8];
    for (int i = 0; i < H * W; i++) {
        int g = (i * 2017) % 65536;
        big[4 * i] = (uint8_t)(g >> 8), big[4 * i + 1] = (uint8_t)g, big[4 * i + 2] = 7;
        want[i] = g / 65535.0f;
    }
    write_png_raw(path, W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 16, big, 4 * W, NULL, 0, NULL, 0, false);
    check_read(path, want, H, W, 1e-6f, __LINE__);
    /* RGBA 8-bit and RGB 16-bit: luminance. */
    for (int i = 0; i < H * W; i++) {
        uint8_t r = (uint8_t)(i * 7), g = (uint8_t)(i * 13 + 5), b = (uint8_t)(255 - i);
        big[4 * i] = r, big[4 * i + 1] = g, big[4 * i + 2] = b, big[4 * i + 3] = (uint8_t)i;
        want[i] = luma(r, g, b) / 255;
    }
    tmp_path(path, sizeof path, "rgba.png");
    write_png_raw(path, W, H, PNG_COLOR_TYPE_RGB_ALPHA, 8, big, 4 * W, NULL, 0, NULL, 0, false);
    check_read(path, want, H, W, 1e-6f, __LINE__);
    for (int i = 0; i < H * W; i++) {
        int c[3] = {(i * 3001) % 65536, (i * 877 + 100) % 65536, 65535 - i * 11};
        for (int k = 0; k < 3; k++)
            big[6 * i + 2 * k] = (uint8_t)(c[k] >> 8), big[6 * i + 2 * k + 1] = (uint8_t)c[k];
        want[i] = luma(c[0] / 65535.0f, c[1] / 65535.0f, c[2] / 65535.0f);
    }
    tmp_path(path, sizeof path, "rgb16.png");
    write_png_raw(path, W, H, PNG_COLOR_TYPE_RGB, 16, big, 6 * W, NULL, 0, NULL, 0, false);
    check_read(path, want, H, W, 1e-6f, __LINE__);
    /* A blank 1-bit 3000x3000 film compresses ~1000:1 and must not be mistaken for a corrupt
     * header by the size-versus-file-size check. */
    static uint8_t blank[3000 * 375];
    tmp_path(path, sizeof path, "blank1.png");
    write_png_raw(path, 3000, 3000, PNG_COLOR_TYPE_GRAY, 1, blank, 375, NULL, 0, NULL, 0, false);
    mt_image img = {0};
    MT_CHECK_OK(mt_image_read_file(path, &img));
    MT_CHECK(img.h == 3000 && img.w == 3000 && img.data && img.data[4500000] == 0);
    mt_image_free(&img);
    /* Interlaced 8-bit grey. */
    for (int i = 0; i < H * W; i++) rows[i] = (uint8_t)(i * 31), want[i] = rows[i] / 255.0f;
    tmp_path(path, sizeof path, "adam7.png");
    write_png_raw(path, W, H, PNG_COLOR_TYPE_GRAY, 8, rows, W, NULL, 0, NULL, 0, true);
    check_read(path, want, H, W, 0, __LINE__);
}

/* Writes a JPEG with libjpeg directly (colour spaces mt_jpeg_write_gray does not make). */
static void write_jpeg_raw(const char *path, const uint8_t *px, int h, int w, int comps,
                           J_COLOR_SPACE cs) {
    FILE *f = fopen(path, "wb");
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = w, c.image_height = h, c.input_components = comps, c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

static void test_jpeg(void) {
    enum { H = 48, W = 64 };
    static uint8_t px[H * W], rgb[H * W * 4];
    float want[H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            px[y * W + x] = (uint8_t)(40 + 2 * x + y), want[y * W + x] = px[y * W + x] / 255.0f;
    char path[128];
    tmp_path(path, sizeof path, "gray.jpg");
    MT_CHECK_OK(mt_jpeg_write_gray(path, px, H, W, 95));
    check_read(path, want, H, W, 4.0f / 255, __LINE__); /* lossy: a few levels at most */
    mt_image img = {0};
    MT_CHECK_OK(mt_image_read_file(path, &img));
    double mad = 0;
    for (int i = 0; img.data && i < H * W; i++) mad += fabs(img.data[i] - want[i]);
    MT_CHECK(mad / (H * W) < 1.0 / 255, "mean error %g levels", mad / (H * W) * 255);
    mt_image_free(&img);
    /* An extension says nothing: a JPEG named .png is read as a JPEG. */
    char lie[128];
    tmp_path(lie, sizeof lie, "really_a_jpeg.png");
    MT_CHECK_OK(mt_jpeg_write_gray(lie, px, H, W, 90));
    check_read(lie, want, H, W, 6.0f / 255, __LINE__);
    MT_CHECK_FAILS(mt_png_read_u8(lie, &(uint8_t *){NULL}, &(int){0}, &(int){0}), MT_ERR_FORMAT,
                   "not a PNG");
    MT_CHECK_FAILS(mt_jpeg_write_gray(path, px, H, W, 0), MT_ERR_ARG, "quality 0");
    /* Colour: (200, 100, 50) everywhere -> luminance 124.2. */
    for (int i = 0; i < H * W; i++) rgb[3 * i] = 200, rgb[3 * i + 1] = 100, rgb[3 * i + 2] = 50;
    for (int i = 0; i < H * W; i++) want[i] = 124.2f / 255;
    tmp_path(path, sizeof path, "rgb.jpg");
    write_jpeg_raw(path, rgb, H, W, 3, JCS_RGB);
    check_read(path, want, H, W, 3.0f / 255, __LINE__);
    tmp_path(path, sizeof path, "cmyk.jpg");
    for (int i = 0; i < H * W * 4; i++) rgb[i] = (uint8_t)(i * 3);
    write_jpeg_raw(path, rgb, H, W, 4, JCS_CMYK);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_UNSUPPORTED, "cmyk.jpg", "CMYK");
    MT_CHECK(count_tmp_files() == 0);
}

/* The CRC-32 of PNG chunks (ISO 3309), bit by bit: only used on a few bytes. */
static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

/* Every truncation of a valid file, and random byte flips, fail cleanly (never crash). */
static void fuzz_file(const char *name, const uint8_t *good, size_t n, const char *format) {
    char path[128];
    tmp_path(path, sizeof path, name);
    mt_image img = {0};
    int not_format = 0;
    for (size_t len = 1; len < n; len++) {
        write_bytes(path, good, len);
        mt_status st = mt_image_read_file(path, &img);
        not_format += st != MT_ERR_FORMAT;
        if (st == MT_OK) mt_image_free(&img);
    }
    MT_CHECK(not_format == 0, "%s: %d truncations not refused", format, not_format);
    uint8_t *bad = mt_alloc(n, "fuzz copy");
    int crashed_not = 0;
    for (int trial = 0; trial < 300; trial++) {
        memcpy(bad, good, n);
        for (int k = 0, flips = 1 + (int)(lcg() % 4); k < flips; k++)
            bad[lcg() % n] ^= (uint8_t)(1 + lcg() % 255);
        write_bytes(path, bad, n);
        mt_status st = mt_image_read_file(path, &img);
        crashed_not += st != MT_OK && st != MT_ERR_FORMAT && st != MT_ERR_UNSUPPORTED;
        if (st == MT_OK) mt_image_free(&img);
    }
    MT_CHECK(crashed_not == 0, "%s: %d mutations gave an unexpected status", format, crashed_not);
    mt_free(bad);
}

static void test_corrupt_files(void) {
    char path[128], png[128], jpg[128];
    mt_image img = {0};
    tmp_path(path, sizeof path, "empty.png");
    write_bytes(path, "", 0);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "empty.png", "empty");
    uint8_t junk[1000];
    for (int i = 0; i < 1000; i++) junk[i] = (uint8_t)lcg();
    junk[0] = 'G';
    tmp_path(path, sizeof path, "junk.png");
    write_bytes(path, junk, sizeof junk);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "junk.png",
                   "not a PNG or JPEG file");
    memcpy(junk, "\x89PNG\r\n\x1a\n", 8);
    write_bytes(path, junk, sizeof junk);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "junk.png", "PNG");
    memcpy(junk, "\xff\xd8\xff", 3);
    tmp_path(path, sizeof path, "junk.jpg");
    write_bytes(path, junk, sizeof junk);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "junk.jpg", "JPEG");
    tmp_path(path, sizeof path, "missing.png");
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_IO, "missing.png");
    MT_CHECK(img.data == NULL);

    /* Truncated halfway; a flipped byte in the image data (CRC error). */
    enum { H = 24, W = 20 };
    uint8_t px[H * W];
    for (int i = 0; i < H * W; i++) px[i] = (uint8_t)(lcg() % 256);
    tmp_path(png, sizeof png, "good.png");
    tmp_path(jpg, sizeof jpg, "good.jpg");
    MT_CHECK_OK(mt_png_write_gray(png, px, H, W, 8));
    MT_CHECK_OK(mt_jpeg_write_gray(jpg, px, H, W, 80));
    char *p = NULL, *j = NULL;
    size_t pn = 0, jn = 0;
    MT_CHECK_OK(mt_file_read(png, &p, &pn));
    MT_CHECK_OK(mt_file_read(jpg, &j, &jn));
    if (!p || !j) return;
    tmp_path(path, sizeof path, "half.png");
    write_bytes(path, p, pn / 2);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "half.png", "truncated");
    tmp_path(path, sizeof path, "half.jpg");
    write_bytes(path, j, jn / 2);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "half.jpg", "truncated");
    p[pn / 2] ^= 0x55;
    tmp_path(path, sizeof path, "flipped.png");
    write_bytes(path, p, pn);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "flipped.png", "corrupt");
    p[pn / 2] ^= 0x55;
    fuzz_file("fuzz.png", (uint8_t *)p, pn, "PNG");
    fuzz_file("fuzz.jpg", (uint8_t *)j, jn, "JPEG");
    /* A (CRC-correct) header claiming 10000 x 10000 pixels in a file of a few hundred bytes is
     * refused before anything is allocated for it. */
    tmp_path(path, sizeof path, "huge.png");
    uint8_t *q = (uint8_t *)p;
    q[16] = 0, q[17] = 0, q[18] = 0x27, q[19] = 0x10; /* width, big-endian */
    q[20] = 0, q[21] = 0, q[22] = 0x27, q[23] = 0x10; /* height */
    uint32_t crc = crc32_png(q + 12, 17);             /* "IHDR" + 13 bytes of data */
    q[29] = (uint8_t)(crc >> 24), q[30] = (uint8_t)(crc >> 16), q[31] = (uint8_t)(crc >> 8);
    q[32] = (uint8_t)crc;
    write_bytes(path, q, pn);
    MT_CHECK_FAILS(mt_image_read_file(path, &img), MT_ERR_FORMAT, "huge.png", "file size");
    mt_free(p);
    mt_free(j);
}

/* Allocation failures anywhere give MT_ERR_NOMEM, leak nothing (ASan) and leave no output. */
static void test_alloc_failures(void) {
    enum { H = 30, W = 40 };
    uint8_t px[H * W];
    for (int i = 0; i < H * W; i++) px[i] = (uint8_t)i;
    char png[128], jpg[128];
    tmp_path(png, sizeof png, "af.png");
    tmp_path(jpg, sizeof jpg, "af.jpg");
    MT_CHECK_OK(mt_png_write_gray(png, px, H, W, 8));
    MT_CHECK_OK(mt_jpeg_write_gray(jpg, px, H, W, 90));
    int wrong = 0, done[5] = {0};
    for (int k = 1; k <= 40; k++) {
        mt_image img = {0};
        uint8_t *m = NULL;
        int h, w;
        mt_status st[5];
        mt_alloc_fail_after(k);
        st[0] = mt_image_read_file(png, &img);
        mt_image_free(&img);
        mt_alloc_fail_after(k);
        st[1] = mt_image_read_file(jpg, &img);
        mt_alloc_fail_after(k);
        st[2] = mt_png_read_u8(png, &m, &h, &w);
        mt_alloc_fail_after(k);
        st[3] = mt_png_write_gray(png, px, H, W, 8);
        mt_alloc_fail_after(k);
        st[4] = mt_jpeg_write_gray(jpg, px, H, W, 90);
        mt_alloc_fail_after(0);
        for (int i = 0; i < 5; i++) {
            wrong += st[i] != MT_OK && st[i] != MT_ERR_NOMEM;
            done[i] |= st[i] == MT_OK;
        }
        mt_image_free(&img);
        mt_free(m);
    }
    MT_CHECK(wrong == 0, "%d calls failed with something other than nomem", wrong);
    for (int i = 0; i < 5; i++) MT_CHECK(done[i], "call %d never succeeded", i);
    MT_CHECK(count_tmp_files() == 0);
    /* from_dicom and resize under failures. */
    uint16_t d16[64 * 64];
    for (int i = 0; i < 64 * 64; i++) d16[i] = (uint16_t)(i * 13);
    mt_dicom_image d = dicom(d16, sizeof d16, 64, 64, 1, 16, 0, "MONOCHROME2");
    mt_image src;
    MT_CHECK_OK(mt_image_alloc(&src, 50, 70));
    int wrong2 = 0;
    for (int k = 1; k <= 8; k++) {
        mt_image a = {0}, b = {0}, c = {0};
        mt_alloc_fail_after(k);
        mt_status s1 = mt_image_from_dicom(&d, NULL, &a, NULL);
        mt_alloc_fail_after(k);
        mt_status s2 = mt_image_resize(&src, 20, 30, &b);
        mt_alloc_fail_after(k);
        mt_status s3 = mt_image_square(&src, MT_SQUARE_PAD, 0, &c, NULL, NULL);
        mt_alloc_fail_after(0);
        wrong2 += (s1 != MT_OK && s1 != MT_ERR_NOMEM) || (s2 != MT_OK && s2 != MT_ERR_NOMEM) ||
                  (s3 != MT_OK && s3 != MT_ERR_NOMEM);
        wrong2 += (s1 != MT_OK && a.data) || (s2 != MT_OK && b.data);
        mt_image_free(&a);
        mt_image_free(&b);
        mt_image_free(&c);
    }
    MT_CHECK(wrong2 == 0);
    mt_image_free(&src);
}

/* Not an assertion: how long the common packing operations take on a full-size film. */
static void test_speed(void) {
    mt_image big, out;
    MT_CHECK_OK(mt_image_alloc(&big, 3000, 2500));
    for (size_t i = 0; i < (size_t)3000 * 2500; i++) big.data[i] = (float)(lcg() % 4096) / 4095;
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mt_now();
        MT_CHECK_OK(mt_image_resize(&big, 512, 512, &out));
        best = fmin(best, mt_now() - t0);
        mt_image_free(&out);
    }
    mt_image_free(&big);
    uint16_t *px = mt_alloc((size_t)3000 * 3000 * 2, "film");
    for (size_t i = 0; i < (size_t)3000 * 3000; i++) px[i] = (uint16_t)(lcg() % 4096);
    mt_dicom_image d = dicom(px, (size_t)3000 * 3000 * 2, 3000, 3000, 1, 16, 0, "MONOCHROME1");
    double t0 = mt_now();
    MT_CHECK_OK(mt_image_from_dicom(&d, NULL, &out, NULL));
    double tw = mt_now() - t0;
    mt_image_free(&out);
    mt_free(px);
    const char *threads = getenv("OMP_NUM_THREADS");
    printf("  resize 3000x2500 -> 512x512: %.1f ms; percentile window 3000x3000 u16: %.1f ms "
           "(OMP_NUM_THREADS=%s)\n",
           best * 1e3, tw * 1e3, threads ? threads : "unset");
}

int main(int argc, char **argv) {
    if (argc > 1) {
        snprintf(fixtures, sizeof fixtures, "%s", argv[1]);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        snprintf(fixtures, sizeof fixtures, "%.*sfixtures", slash ? (int)(slash - __FILE__ + 1) : 0,
                 __FILE__);
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mt_image_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    MT_RUN(test_window_linear);
    MT_RUN(test_window_linear_exact);
    MT_RUN(test_window_sigmoid);
    MT_RUN(test_window_fallbacks);
    MT_RUN(test_percentile_float_paths);
    MT_RUN(test_percentile_degenerate);
    MT_RUN(test_rescale);
    MT_RUN(test_monochrome1);
    MT_RUN(test_signed16);
    MT_RUN(test_rgb_luminance);
    MT_RUN(test_dicom_errors);
    MT_RUN(test_square);
    MT_RUN(test_resize_pillow);
    MT_RUN(test_resize_properties);
    MT_RUN(test_mask_geometry);
    MT_RUN(test_storage);
    MT_RUN(test_png_gray_roundtrip);
    MT_RUN(test_png_rgb);
    MT_RUN(test_png_flavours);
    MT_RUN(test_jpeg);
    MT_RUN(test_corrupt_files);
    MT_RUN(test_alloc_failures);
    MT_RUN(test_speed);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return mt_test_summary();
}
