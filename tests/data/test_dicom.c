/* DICOM through GDCM (src/data/dicom.cpp): writing in every transfer syntax and reading back,
 * pydicom's third-party files, truncated and damaged files (which must fail with a reason, never
 * take the process down inside GDCM), failure messages that carry no PHI, and de-identification.
 *
 *     test_dicom PYDICOM_FILES_DIR SCRATCH_DIR
 *
 * The pydicom files come from the fetch_pydicom_files fixture; without them the corpus tests are
 * skipped. GDCM's own decoder (`gdcmconv --raw`, package libgdcm-tools) is the reference for the
 * corpus when it is on PATH. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "medtrain/dicom.h"
#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/mem.h"
#include "mt_test.h"

/* GDCM's JPEG-LS codec and OpenJPEG leak on the error paths that the damaged-file tests take
 * (their memory, not medtrain's); under -DMEDTRAIN_SANITIZE=ON LeakSanitizer is told so. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libgdcmMSFF.so\nleak:libopenjp2.so\n";
}

static const char *g_pydicom; /* argv[1] */
static char g_tmp[512];       /* argv[2], created */

/* Declares char var[] holding the scratch path of name. */
#define TMP(var, name)                                                                             \
    char var[1024];                                                                                \
    snprintf(var, sizeof var, "%s/%s", g_tmp, name)

static char *slurp(const char *path, size_t *n) {
    char *data = NULL;
    if (mt_file_read(path, &data, n) != MT_OK) return NULL;
    return data;
}

/* Writes a scratch file without the fsyncs of mt_file_write_atomic (hundreds are written). */
static mt_status write_plain(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return mt_fail(MT_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t w = fwrite(data, 1, n, f);
    if (fclose(f) != 0 || w != n) return mt_fail(MT_ERR_IO, "%s: write failed", path);
    return MT_OK;
}

static bool contains(const char *hay, size_t n, const char *needle) {
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static bool file_contains(const char *path, const char *needle) {
    size_t n;
    char *d = slurp(path, &n);
    bool found = d && contains(d, n, needle);
    mt_free(d);
    return found;
}

/* ---- synthetic images ------------------------------------------------------------------------ */

enum { ROWS = 67, COLS = 90 };

/* A gradient plus noise, so that codecs have edges, smooth areas and randomness to get right. */
static void make_pixels(void *px, int bits_allocated, int bits_stored) {
    uint32_t s = 12345;
    uint32_t maxv = (1u << bits_stored) - 1;
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) {
            s = s * 1664525u + 1013904223u;
            double g = (double)(r * COLS + c) / (ROWS * COLS) * maxv * 0.8;
            uint32_t v = (uint32_t)g + (s >> 16) % (maxv / 16 + 1);
            if (v > maxv) v = maxv;
            if (bits_allocated == 8)
                ((uint8_t *)px)[r * COLS + c] = (uint8_t)v;
            else
                ((uint16_t *)px)[r * COLS + c] = (uint16_t)v;
        }
}

/* Planted PHI: every value a privacy test searches output bytes and messages for. */
#define PHI_NAME    "QZPHI^TEST"
#define PHI_ID      "QZPHI-ID-0042"
#define PHI_BIRTH   "19230417"
#define PHI_INST    "QZPHI General Hospital"
#define PHI_DOCTOR  "QZPHI^REFERRER"
#define PHI_ACC     "QZACC777"
#define PHI_DESC    "QZPHI chest study"
#define PHI_STUDY   "1.2.826.0.1.3680043.10.999.424242.1"
#define PHI_SERIES  "1.2.826.0.1.3680043.10.999.424242.2"
#define PHI_SOP     "1.2.826.0.1.3680043.10.999.424242.3"
#define PHI_SOP2    "1.2.826.0.1.3680043.10.999.424242.4"
#define PHI_FOR     "1.2.826.0.1.3680043.10.999.424242.5"
#define PHI_PRIVATE "QZPHI-PRIVATE-VALUE"
#define PHI_DATE    "20240229"
#define PHI_OPER    "QZPHI^OPERATOR"

static const char *const phi_values[] = {
    PHI_NAME,    PHI_ID,    PHI_BIRTH,  PHI_INST, PHI_DOCTOR, PHI_ACC,
    PHI_DESC,    PHI_STUDY, PHI_SERIES, PHI_SOP,  PHI_SOP2,   PHI_FOR,
    PHI_PRIVATE, PHI_DATE,  PHI_OPER,   "QZPHI",  "424242",
};
enum { N_PHI = sizeof phi_values / sizeof phi_values[0] };

static const mt_dicom_tag phi_tags[] = {
    {0x0008, 0x0018, PHI_SOP},
    {0x0008, 0x0020, PHI_DATE},
    {0x0008, 0x0050, PHI_ACC},
    {0x0008, 0x0060, "DX"},
    {0x0008, 0x0080, PHI_INST},
    {0x0008, 0x0090, PHI_DOCTOR},
    {0x0008, 0x1030, PHI_DESC},
    {0x0008, 0x1070, PHI_OPER},
    {0x0009, 0x0010, "QZPHI PRIVATE CREATOR"},
    {0x0009, 0x1001, PHI_PRIVATE},
    {0x0010, 0x0010, PHI_NAME},
    {0x0010, 0x0020, PHI_ID},
    {0x0010, 0x0030, PHI_BIRTH},
    {0x0010, 0x0040, "F"},
    {0x0018, 0x1164, "0.139\\0.143"},
    {0x0018, 0x5101, "PA"},
    {0x0020, 0x000d, PHI_STUDY},
    {0x0020, 0x000e, PHI_SERIES},
    {0x0020, 0x0052, PHI_FOR},
    {0x0020, 0x0013, "7"},
    {0x0028, 0x1050, "2048\\1000"},
    {0x0028, 0x1051, "4000\\2000"},
    {0x0028, 0x1052, "-1024"},
    {0x0028, 0x1053, "1.5"},
    {0x0028, 0x1056, "SIGMOID"},
};
enum { N_PHI_TAGS = sizeof phi_tags / sizeof phi_tags[0] };

static mt_status write_image(const char *path, int bits, mt_dicom_syntax ts, void *px,
                             const mt_dicom_tag *tags, size_t n_tags) {
    mt_dicom_write_spec spec = {
        .pixels = px,
        .rows = ROWS,
        .cols = COLS,
        .bits_allocated = bits,
        .bits_stored = bits == 16 ? 12 : 8,
        .photometric = bits == 16 ? "MONOCHROME2" : "MONOCHROME1",
        .syntax = ts,
        .tags = tags,
        .n_tags = n_tags,
    };
    return mt_dicom_write(path, &spec);
}

/* Evidence in the file's bytes that it is encoded in ts, beyond what its meta header says. */
static bool encoded_as(const char *bytes, size_t n, mt_dicom_syntax ts, int bits) {
    /* (0008,0060) Modality "DX", explicit VR ("CS", 2) or implicit (length 2). */
    static const char explicit_modality[] = "\x08\x00\x60\x00"
                                            "CS\x02\x00"
                                            "DX";
    static const char implicit_modality[] = "\x08\x00\x60\x00\x02\x00\x00\x00"
                                            "DX";
    bool expl = memmem(bytes, n, explicit_modality, 10) != NULL;
    bool impl = memmem(bytes, n, implicit_modality, 10) != NULL;
    /* Encapsulated Pixel Data: (7FE0,0010) OB, undefined length, then the offset table item. */
    static const char encapsulated[] = "\xe0\x7f\x10\x00"
                                       "OB\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0";
    const char *enc = memmem(bytes, n, encapsulated, 16);
    const char *frag = NULL;
    if (enc) { /* the first fragment follows the (empty or not) basic offset table */
        uint32_t bot;
        memcpy(&bot, enc + 16, 4);
        frag = enc + 20 + bot + 8;
        if (frag + 64 > bytes + n) return false;
    }
    const unsigned char *f = (const unsigned char *)frag;
    switch (ts) {
    case MT_TS_IMPLICIT_LE:
        return impl && !expl && !enc;
    case MT_TS_EXPLICIT_LE:
        return expl && !enc;
    case MT_TS_DEFLATE: /* the data set is compressed: no plain modality element at all */
        return !expl && !impl && !enc;
    case MT_TS_RLE: { /* RLE header: number of segments = bytes per sample */
        uint32_t segs;
        if (!f) return false;
        memcpy(&segs, f, 4);
        return segs == (uint32_t)bits / 8;
    }
    case MT_TS_JPEG_BASELINE: /* SOI then, after tables, SOF0 */
        return f && f[0] == 0xff && f[1] == 0xd8 && memmem(f, 2000, "\xff\xc0", 2);
    case MT_TS_JPEG_LOSSLESS: /* SOF3 */
        return f && f[0] == 0xff && f[1] == 0xd8 && memmem(f, 2000, "\xff\xc3", 2);
    case MT_TS_JPEG_LS: /* SOF55 */
        return f && f[0] == 0xff && f[1] == 0xd8 && memmem(f, 2000, "\xff\xf7", 2);
    case MT_TS_JPEG2000: /* J2K codestream: SOC, SIZ (or a JP2 box) */
        return f && ((f[0] == 0xff && f[1] == 0x4f && f[2] == 0xff && f[3] == 0x51) ||
                     memcmp(f + 4, "jP  ", 4) == 0);
    default:
        return false;
    }
}

static void check_round_trip(int bits, mt_dicom_syntax ts) {
    uint16_t px[ROWS * COLS];
    make_pixels(px, bits, bits == 16 ? 12 : 8);
    char name[64];
    snprintf(name, sizeof name, "rt_%d_%s.dcm", bits, mt_dicom_syntax_name(ts));
    TMP(path, name);
    MT_CHECK_OK(write_image(path, bits, ts, px, phi_tags, N_PHI_TAGS));

    size_t n;
    char *bytes = slurp(path, &n);
    MT_CHECK(bytes && n > 132 && memcmp(bytes + 128, "DICM", 4) == 0, "%s: no DICM prefix", name);
    MT_CHECK(bytes && contains(bytes, n, mt_dicom_syntax_uid(ts)), "%s: no TS UID in meta", name);
    MT_CHECK(bytes && encoded_as(bytes, n, ts, bits), "%s: not encoded as %s", name,
             mt_dicom_syntax_name(ts));
    mt_free(bytes);

    mt_dicom_image d = {0};
    MT_CHECK_OK(mt_dicom_read(path, &d));
    MT_CHECK(d.rows == ROWS && d.cols == COLS, "%s: %dx%d", name, d.rows, d.cols);
    MT_CHECK(d.samples_per_pixel == 1 && d.frames == 1);
    MT_CHECK(d.bits_allocated == bits && d.bits_stored == (bits == 16 ? 12 : 8), "%s: bits %d/%d",
             name, d.bits_allocated, d.bits_stored);
    MT_CHECK(d.pixel_representation == 0);
    MT_CHECK(strcmp(d.photometric, bits == 16 ? "MONOCHROME2" : "MONOCHROME1") == 0, "%s: %s", name,
             d.photometric);
    MT_CHECK(d.has_rescale);
    MT_CHECK_NEAR(d.rescale_slope, 1.5, 1e-12);
    MT_CHECK_NEAR(d.rescale_intercept, -1024, 1e-12);
    MT_CHECK(d.has_window);
    MT_CHECK_NEAR(d.window_center, 2048, 1e-12);
    MT_CHECK_NEAR(d.window_width, 4000, 1e-12);
    MT_CHECK(strcmp(d.voi_lut_function, "SIGMOID") == 0);
    MT_CHECK(d.has_spacing);
    MT_CHECK_NEAR(d.pixel_spacing[0], 0.139, 1e-12);
    MT_CHECK_NEAR(d.pixel_spacing[1], 0.143, 1e-12);
    MT_CHECK(strcmp(d.modality, "DX") == 0 && strcmp(d.view_position, "PA") == 0);
    MT_CHECK(strcmp(d.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1.1") == 0, "%s", d.sop_class_uid);
    MT_CHECK(strcmp(d.transfer_syntax_uid, mt_dicom_syntax_uid(ts)) == 0, "%s: TS %s", name,
             d.transfer_syntax_uid);
    MT_CHECK(d.transfer_syntax_name[0] != '\0');
    MT_CHECK(strcmp(d.patient_id, PHI_ID) == 0 && strcmp(d.study_instance_uid, PHI_STUDY) == 0 &&
             strcmp(d.series_instance_uid, PHI_SERIES) == 0 &&
             strcmp(d.sop_instance_uid, PHI_SOP) == 0);
    MT_CHECK(d.pixels && d.pixel_bytes == (size_t)ROWS * COLS * (bits / 8));
    if (d.pixels && d.pixel_bytes == (size_t)ROWS * COLS * (bits / 8)) {
        if (ts == MT_TS_JPEG_BASELINE) {
            const uint8_t *a = d.pixels, *b = (const uint8_t *)px;
            int worst = 0;
            double sum = 0;
            for (int i = 0; i < ROWS * COLS; i++) {
                int e = abs((int)a[i] - (int)b[i]);
                worst = e > worst ? e : worst;
                sum += e;
            }
            MT_CHECK(worst <= 12 && sum / (ROWS * COLS) <= 2.0,
                     "JPEG baseline: max error %d, mean %g", worst, sum / (ROWS * COLS));
        } else {
            MT_CHECK(memcmp(d.pixels, px, d.pixel_bytes) == 0, "%s: pixels differ", name);
        }
    }
    /* The header-only read agrees and decodes nothing. */
    mt_dicom_image h = {0};
    MT_CHECK_OK(mt_dicom_read_header(path, &h));
    MT_CHECK(h.pixels == NULL && h.rows == ROWS && h.cols == COLS &&
             h.bits_stored == d.bits_stored);
    MT_CHECK(strcmp(h.transfer_syntax_uid, d.transfer_syntax_uid) == 0);
    mt_dicom_image_free(&h);
    mt_dicom_image_free(&d);
}

static void test_write_read_every_syntax(void) {
    for (int ts = 0; ts < MT_TS_COUNT; ts++) {
        check_round_trip(16, (mt_dicom_syntax)ts == MT_TS_JPEG_BASELINE ? MT_TS_EXPLICIT_LE
                                                                        : (mt_dicom_syntax)ts);
        check_round_trip(8, (mt_dicom_syntax)ts);
    }
}

static void test_syntax_names(void) {
    for (int ts = 0; ts < MT_TS_COUNT; ts++) {
        mt_dicom_syntax back;
        MT_CHECK_OK(mt_dicom_syntax_parse(mt_dicom_syntax_name((mt_dicom_syntax)ts), &back));
        MT_CHECK(back == (mt_dicom_syntax)ts);
        MT_CHECK_OK(mt_dicom_syntax_parse(mt_dicom_syntax_uid((mt_dicom_syntax)ts), &back));
        MT_CHECK(back == (mt_dicom_syntax)ts);
    }
    mt_dicom_syntax s;
    MT_CHECK_FAILS(mt_dicom_syntax_parse("jpeg-xl", &s), MT_ERR_ARG, "jpeg-xl", "jpeg2000");
    MT_CHECK(mt_dicom_is_image_sop_class("1.2.840.10008.5.1.4.1.1.1.1"));    /* DX */
    MT_CHECK(mt_dicom_is_image_sop_class("1.2.840.10008.5.1.4.1.1.1"));      /* CR */
    MT_CHECK(mt_dicom_is_image_sop_class("1.2.840.10008.5.1.4.1.1.7"));      /* SC */
    MT_CHECK(!mt_dicom_is_image_sop_class("1.2.840.10008.5.1.4.1.1.88.11")); /* Basic Text SR */
    MT_CHECK(!mt_dicom_is_image_sop_class("1.2.840.10008.5.1.4.1.1.11.1"));  /* GSPS */
    MT_CHECK(!mt_dicom_is_image_sop_class("1.2.840.10008.5.1.4.1.1.104.1")); /* PDF */
    MT_CHECK(!mt_dicom_is_image_sop_class("1.2.840.10008.5.1.4.1.1.481.2")); /* RT Dose */
    MT_CHECK(!mt_dicom_is_image_sop_class(""));
}

/* GDCM 3.0.21 asserts when it deflates an element over 8 MiB; dicom.cpp deflates by itself. */
static void test_large_deflate(void) {
    enum { H = 2100, W = 2048 }; /* 8.2 MiB of pixels */
    uint16_t *px = malloc((size_t)H * W * sizeof *px);
    for (size_t i = 0; i < (size_t)H * W; i++) px[i] = (uint16_t)((i * 2654435761u) >> 20 & 4095);
    mt_dicom_tag tags[] = {{0x0008, 0x0060, "DX"}, {0x0010, 0x0020, PHI_ID}};
    mt_dicom_write_spec spec = {.pixels = px,
                                .rows = H,
                                .cols = W,
                                .bits_allocated = 16,
                                .bits_stored = 12,
                                .photometric = "MONOCHROME2",
                                .syntax = MT_TS_DEFLATE,
                                .tags = tags,
                                .n_tags = 2};
    TMP(p, "large_deflate.dcm");
    TMP(q, "large_deflate_anon.dcm");
    MT_CHECK_OK(mt_dicom_write(p, &spec));
    static const uint8_t key[32] = "large deflate test key..........";
    MT_CHECK_OK(mt_dicom_anonymize(p, q, key, sizeof key));
    for (int k = 0; k < 2; k++) {
        mt_dicom_image d = {0};
        MT_CHECK_OK(mt_dicom_read(k ? q : p, &d));
        MT_CHECK(strcmp(d.transfer_syntax_uid, "1.2.840.10008.1.2.1.99") == 0);
        MT_CHECK(d.pixels && d.pixel_bytes == (size_t)H * W * 2 &&
                     memcmp(d.pixels, px, d.pixel_bytes) == 0,
                 "large deflated file %d: pixels differ", k);
        mt_dicom_image_free(&d);
    }
    MT_CHECK(!file_contains(q, PHI_ID));
    free(px);
}

static void test_write_errors(void) {
    uint16_t px[ROWS * COLS] = {0};
    TMP(p, "bad.dcm");
    MT_CHECK_FAILS(write_image(p, 16, MT_TS_JPEG_BASELINE, px, NULL, 0), MT_ERR_ARG, "8-bit");
    mt_dicom_tag meta = {0x0002, 0x0010, "1.2.840.10008.1.2"};
    MT_CHECK_FAILS(write_image(p, 8, MT_TS_EXPLICIT_LE, px, &meta, 1), MT_ERR_ARG, "(0002,0010)");
    mt_dicom_tag rows = {0x0028, 0x0010, "5"};
    MT_CHECK_FAILS(write_image(p, 8, MT_TS_EXPLICIT_LE, px, &rows, 1), MT_ERR_ARG, "(0028,0010)");
    mt_dicom_tag unknown = {0x0008, 0xfff0, "x"};
    MT_CHECK_FAILS(write_image(p, 8, MT_TS_EXPLICIT_LE, px, &unknown, 1), MT_ERR_ARG,
                   "not in the DICOM dictionary");
    mt_dicom_tag not_number = {0x0018, 0x1150, "QZPHI"}; /* Exposure Time, IS: kept as text */
    MT_CHECK_OK(write_image(p, 8, MT_TS_EXPLICIT_LE, px, &not_number, 1));
    mt_dicom_tag bad_us = {0x0028, 0x0106, "QZPHI"}; /* Smallest Image Pixel Value, US */
    MT_CHECK_FAILS(write_image(p, 8, MT_TS_EXPLICIT_LE, px, &bad_us, 1), MT_ERR_ARG, "(0028,0106)");
    MT_CHECK(!strstr(mt_error_message(), "QZPHI"), "value in message: %s", mt_error_message());
    mt_dicom_write_spec spec = {.pixels = px,
                                .rows = 4,
                                .cols = 4,
                                .bits_allocated = 16,
                                .bits_stored = 12,
                                .photometric = "RGB"};
    MT_CHECK_FAILS(mt_dicom_write(p, &spec), MT_ERR_ARG, "MONOCHROME");
    spec.photometric = "MONOCHROME2", spec.bits_stored = 17;
    MT_CHECK_FAILS(mt_dicom_write(p, &spec), MT_ERR_ARG, "bits stored");
    /* With no SOP class, a CR modality makes a CR image and anything else a DX one. */
    mt_dicom_tag cr = {0x0008, 0x0060, "CR"};
    mt_dicom_image d = {0};
    MT_CHECK_OK(write_image(p, 8, MT_TS_EXPLICIT_LE, px, &cr, 1));
    MT_CHECK_OK(mt_dicom_read_header(p, &d));
    MT_CHECK(strcmp(d.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1") == 0, "%s", d.sop_class_uid);
    MT_CHECK(strncmp(d.sop_instance_uid, "2.25.", 5) == 0, "generated UID %s", d.sop_instance_uid);
    MT_CHECK(!d.has_rescale && !d.has_window && !d.has_spacing);
    MT_CHECK(strcmp(d.voi_lut_function, "LINEAR") == 0);
    mt_dicom_image_free(&d);
}

/* ---- pydicom's files ------------------------------------------------------------------------- */

static bool have_pydicom(void) {
    char p[1024];
    snprintf(p, sizeof p, "%s/.complete", g_pydicom);
    return mt_path_exists(p);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The .dcm names in dir, sorted; *n of them. Free with free_names. */
static char **list_dcm(const char *dir, int *n) {
    DIR *d = opendir(dir);
    char **names = NULL;
    *n = 0;
    if (!d) return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".dcm") != 0) continue;
        names = realloc(names, (size_t)(*n + 1) * sizeof *names);
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (*n) qsort(names, (size_t)*n, sizeof *names, cmp_str);
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static bool lossless_syntax(const char *uid) {
    static const char *const ok[] = {
        "1.2.840.10008.1.2",      "1.2.840.10008.1.2.1",    "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",    "1.2.840.10008.1.2.5",    "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(uid, ok[i]) == 0) return true;
    return false;
}

static bool have_gdcmconv(void) {
    return system("gdcmconv --version >/dev/null 2>&1") == 0;
}

static bool same_pixels(const mt_dicom_image *a, const mt_dicom_image *b) {
    return a->rows == b->rows && a->cols == b->cols &&
           a->samples_per_pixel == b->samples_per_pixel && a->bits_allocated == b->bits_allocated &&
           a->pixel_bytes == b->pixel_bytes && memcmp(a->pixels, b->pixels, a->pixel_bytes) == 0;
}

/* GDCM's own decode: gdcmconv --raw, read back. Returns 1 same, 0 different, -1 not compared. */
static int compare_with_gdcmconv(const char *in, const char *name, const mt_dicom_image *d) {
    char out[1024], cmd[3072];
    snprintf(out, sizeof out, "%s/raw_%s", g_tmp, name);
    snprintf(cmd, sizeof cmd, "gdcmconv --raw '%s' '%s' >/dev/null 2>&1", in, out);
    if (system(cmd) != 0) return -1;
    mt_dicom_image r = {0};
    int same = -1;
    if (mt_dicom_read(out, &r) == MT_OK) same = same_pixels(d, &r);
    mt_dicom_image_free(&r);
    return same;
}

static const char *short_reason(const char *msg, const char *path) {
    size_t n = strlen(path);
    return strncmp(msg, path, n) == 0 && msg[n] == ':' ? msg + n + 2 : msg;
}

static void test_pydicom_corpus(void) {
    int n;
    char **names = list_dcm(g_pydicom, &n);
    bool conv = have_gdcmconv();
    if (!conv) printf("  gdcmconv not on PATH: no comparison with GDCM's raw decode\n");
    int decoded = 0, failed = 0, compared = 0, identical = 0;
    printf("  %-42s %-44s %s\n", "file", "transfer syntax", "outcome");
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_pydicom, names[i]);
        mt_dicom_image h = {0}, d = {0};
        mt_status hs = mt_dicom_read_header(path, &h);
        char hmsg[MT_ERROR_MAX];
        snprintf(hmsg, sizeof hmsg, "%s", mt_error_message());
        mt_error_clear();
        mt_status st = mt_dicom_read(path, &d);
        const char *ts = d.transfer_syntax_name[0]
                             ? d.transfer_syntax_name
                             : (h.transfer_syntax_name[0] ? h.transfer_syntax_name : "-");
        if (st == MT_OK) {
            decoded++;
            char what[160] = "";
            /* GDCM swaps big-endian 32-bit samples as 16-bit words, and gdcmconv --raw writes
             * them so; mt_dicom_read corrects it (test_pydicom_same_pixels checks rtdose_expb
             * against its little-endian twin), so gdcmconv is no reference there. */
            bool be32 =
                strcmp(d.transfer_syntax_uid, "1.2.840.10008.1.2.2") == 0 && d.bits_allocated == 32;
            if (lossless_syntax(d.transfer_syntax_uid) && conv && !be32) {
                int same = compare_with_gdcmconv(path, names[i], &d);
                compared += same >= 0;
                identical += same == 1;
                MT_CHECK(same != 0, "%s: pixels differ from gdcmconv --raw", names[i]);
                snprintf(what, sizeof what, "%s", same == 1 ? ", = gdcmconv --raw" : "");
            }
            printf("  %-42s %-44.44s ok %dx%dx%d %d/%d-bit%s %s%s\n", names[i], ts, d.rows, d.cols,
                   d.samples_per_pixel, d.bits_stored, d.bits_allocated,
                   d.pixel_representation ? " signed" : "", d.photometric, what);
            MT_CHECK(hs == MT_OK, "%s: decodes but its header read fails: %s", names[i], hmsg);
            MT_CHECK(d.pixels && d.pixel_bytes > 0);
        } else {
            failed++;
            const char *msg = mt_error_message();
            MT_CHECK(msg[0] != '\0', "%s: failed with an empty message", names[i]);
            MT_CHECK(strstr(msg, names[i]) != NULL, "%s: message does not name the file: %s",
                     names[i], msg);
            printf("  %-42s %-44.44s FAIL (%s) %s\n", names[i], ts, mt_status_name(st),
                   short_reason(msg, path));
        }
        mt_dicom_image_free(&h);
        mt_dicom_image_free(&d);
    }
    printf("  %d files: %d decoded, %d failed; %d compared with gdcmconv --raw, %d identical\n", n,
           decoded, failed, compared, identical);
    MT_CHECK(n >= 70, "only %d pydicom files", n);
    MT_CHECK(decoded >= 40, "only %d of %d pydicom files decode", decoded, n);
    if (conv) MT_CHECK(compared >= 20 && identical == compared);
    free_names(names, n);
}

static void read_pydicom(const char *name, mt_dicom_image *d) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_pydicom, name);
    MT_CHECK_OK(mt_dicom_read(path, d));
}

/* The same pixels stored in different syntaxes decode to the same values. */
static void test_pydicom_same_pixels(void) {
    static const char *const groups[][8] = {
        {"MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
         "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
         "MR_small_padded.dcm"},
        {"rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm"},
        {"SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm"},
        {"SC_rgb_rle.dcm", "SC_rgb_rle_2frame.dcm"},
        {"SC_rgb_rle_16bit.dcm", "SC_rgb_rle_16bit_2frame.dcm"},
        {"SC_rgb_rle_32bit.dcm", "SC_rgb_rle_32bit_2frame.dcm"},
    };
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        mt_dicom_image ref = {0};
        read_pydicom(groups[g][0], &ref);
        for (int i = 1; i < 8 && groups[g][i]; i++) {
            mt_dicom_image d = {0};
            read_pydicom(groups[g][i], &d);
            MT_CHECK(ref.pixels && d.pixels && same_pixels(&ref, &d), "%s and %s differ",
                     groups[g][0], groups[g][i]);
            mt_dicom_image_free(&d);
        }
        mt_dicom_image_free(&ref);
    }
    /* Values a person can check with pydicom: MR_small is signed 16-bit, CT_small has rescale. */
    mt_dicom_image d = {0};
    read_pydicom("CT_small.dcm", &d);
    MT_CHECK(d.rows == 128 && d.cols == 128 && d.pixel_representation == 1 && d.bits_stored == 16);
    MT_CHECK(d.has_rescale && d.rescale_slope == 1 && d.rescale_intercept == -1024);
    MT_CHECK(strcmp(d.modality, "CT") == 0 && d.has_spacing);
    MT_CHECK_NEAR(d.pixel_spacing[0], 0.661468, 1e-6);
    MT_CHECK(d.pixels && ((int16_t *)d.pixels)[0] == 175, "CT_small[0] = %d",
             d.pixels ? ((int16_t *)d.pixels)[0] : -1);
    mt_dicom_image_free(&d);
    /* A YBR JPEG comes back from GDCM as YCbCr, full resolution, interleaved, and says so: the
     * same picture stored as RGB matches it after the ITU-R BT.601 conversion. */
    mt_dicom_image rgb = {0};
    read_pydicom("SC_rgb_dcmtk_+eb+cr.dcm", &rgb);
    MT_CHECK(strcmp(rgb.photometric, "RGB") == 0, "%s", rgb.photometric);
    for (int k = 0; k < 2; k++) {
        read_pydicom(k ? "SC_rgb_dcmtk_+eb+cy+s2.dcm" : "SC_rgb_jpeg_dcmtk.dcm", &d);
        MT_CHECK(d.samples_per_pixel == 3 && strcmp(d.photometric, "YBR_FULL") == 0, "%d %s",
                 d.samples_per_pixel, d.photometric);
        if (d.pixels && rgb.pixels && d.pixel_bytes == rgb.pixel_bytes) {
            const uint8_t *y = d.pixels, *c = rgb.pixels;
            double err = 0;
            for (size_t i = 0; i + 2 < d.pixel_bytes; i += 3) {
                double cb = y[i + 1] - 128.0, cr = y[i + 2] - 128.0;
                err += fabs(y[i] + 1.402 * cr - c[i]) +
                       fabs(y[i] - 0.344136 * cb - 0.714136 * cr - c[i + 1]) +
                       fabs(y[i] + 1.772 * cb - c[i + 2]);
            }
            err /= (double)d.pixel_bytes;
            MT_CHECK(err < 1.5, "YBR -> RGB differs from the RGB file by %g on average", err);
        }
        mt_dicom_image_free(&d);
    }
    mt_dicom_image_free(&rgb);
    /* Multi-frame: the first frame, and the count. */
    read_pydicom("SC_rgb_rle_2frame.dcm", &d);
    MT_CHECK(d.frames == 2 && d.pixel_bytes == (size_t)d.rows * d.cols * 3);
    mt_dicom_image_free(&d);
}

static void expect_failure(const char *path, mt_status code, const char *what) {
    mt_dicom_image d = {0};
    MT_CHECK_FAILS(mt_dicom_read(path, &d), code, path, what);
    MT_CHECK(d.pixels == NULL);
    MT_CHECK_FAILS(mt_dicom_read_header(path, &d), code, path, what);
}

static void test_bad_input(void) {
    char p[1024];
    if (have_pydicom()) {
        snprintf(p, sizeof p, "%s/MR_truncated.dcm", g_pydicom);
        expect_failure(p, MT_ERR_FORMAT, "pixel data is 8130 bytes, expected 8192: truncated?");
        snprintf(p, sizeof p, "%s/rtplan_truncated.dcm", g_pydicom);
        expect_failure(p, MT_ERR_FORMAT, "truncated or corrupt");
        snprintf(p, sizeof p, "%s/reportsi.dcm", g_pydicom);
        expect_failure(p, MT_ERR_UNSUPPORTED, "no pixel data (SOP class Basic Text SR");
        snprintf(p, sizeof p, "%s/test-SR.dcm", g_pydicom);
        expect_failure(p, MT_ERR_UNSUPPORTED, "no pixel data (SOP class Comprehensive SR");
        snprintf(p, sizeof p, "%s/rtstruct.dcm", g_pydicom);
        expect_failure(p, MT_ERR_UNSUPPORTED, "no pixel data (SOP class RT Structure Set");
        snprintf(p, sizeof p, "%s/rtdose_1frame.dcm", g_pydicom);
        expect_failure(p, MT_ERR_FORMAT, "without Number of Frames (0028,0008)");
        /* Implicit VR labelled explicit: GDCM would allocate 1.3 GB to read these 4 KB. */
        snprintf(p, sizeof p, "%s/SC_rgb_jpeg.dcm", g_pydicom);
        expect_failure(p, MT_ERR_FORMAT, "the data set is implicit VR, but its transfer syntax");
        snprintf(p, sizeof p, "%s/waveform_ecg.dcm", g_pydicom);
        expect_failure(p, MT_ERR_UNSUPPORTED, "no pixel data (SOP class 12-lead ECG");
    }
    TMP(text, "notes.txt");
    MT_CHECK_OK(mt_file_write_atomic(text, "This is not a DICOM file.\n", 26));
    expect_failure(text, MT_ERR_FORMAT, "not a DICOM file");
    TMP(empty, "empty.dcm");
    MT_CHECK_OK(mt_file_write_atomic(empty, "", 0));
    expect_failure(empty, MT_ERR_FORMAT, "empty file");
    TMP(missing, "missing.dcm");
    expect_failure(missing, MT_ERR_IO, "cannot open");
    expect_failure(g_tmp, MT_ERR_IO, "not a regular file");
    /* 200 bytes of zeros, then garbage: a preamble without DICM. */
    char junk[600] = {0};
    for (int i = 200; i < 600; i++) junk[i] = (char)(i * 7);
    TMP(jp, "junk.dcm");
    MT_CHECK_OK(mt_file_write_atomic(jp, junk, sizeof junk));
    expect_failure(jp, MT_ERR_FORMAT, "not a DICOM file");
}

/* ---- privacy: messages ----------------------------------------------------------------------- */

/* Pixel Data's element header in an explicit-VR little-endian file. */
static char *find_pixel_header(char *bytes, size_t n) {
    return memmem(bytes, n, "\xe0\x7f\x10\x00OW\x00\x00", 8);
}

/* Writes bytes[0, n) to name after applying a patch, and checks that reading it fails or
 * succeeds without any planted value in the message. */
static void check_no_phi_in_errors(const char *name, const char *bytes, size_t n, int *failures) {
    TMP(p, name);
    MT_CHECK_OK(write_plain(p, bytes, n));
    mt_dicom_image d = {0};
    for (int pass = 0; pass < 2; pass++) {
        mt_error_clear();
        mt_status st = pass ? mt_dicom_read_header(p, &d) : mt_dicom_read(p, &d);
        if (st != MT_OK) {
            ++*failures;
            const char *msg = mt_error_message();
            MT_CHECK(msg[0] != '\0');
            for (int i = 0; i < N_PHI; i++)
                MT_CHECK(!strstr(msg, phi_values[i]), "%s: message holds '%s': %s", name,
                         phi_values[i], msg);
        }
        mt_dicom_image_free(&d);
    }
}

static void test_no_phi_in_errors(void) {
    uint16_t px[ROWS * COLS];
    make_pixels(px, 16, 12);
    TMP(src, "phi_src.dcm");
    MT_CHECK_OK(write_image(src, 16, MT_TS_EXPLICIT_LE, px, phi_tags, N_PHI_TAGS));
    size_t n;
    char *bytes = slurp(src, &n);
    if (!bytes) return;
    char *pix = find_pixel_header(bytes, n);
    MT_CHECK(pix != NULL);
    if (!pix) {
        mt_free(bytes);
        return;
    }
    size_t pix_at = (size_t)(pix - bytes);

    /* GDCM must not print header values either: catch everything written to stderr. */
    fflush(stderr);
    int saved = dup(2);
    TMP(err_path, "stderr.txt");
    int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);

    int failures = 0;
    char name[64];
    /* Truncated everywhere: in the meta header, in the middle of PHI values, in the pixels. */
    for (size_t cut = 1; cut < n; cut += cut < pix_at + 16 ? 7 : 997) {
        snprintf(name, sizeof name, "phi_cut_%zu.dcm", cut);
        check_no_phi_in_errors(name, bytes, cut, &failures);
    }
    /* Zero-size pixel data. */
    char *patched = malloc(n);
    memcpy(patched, bytes, n);
    memset(patched + pix_at + 8, 0, 4);
    check_no_phi_in_errors("phi_zero_pixels.dcm", patched, pix_at + 12, &failures);
    MT_CHECK(strstr(mt_error_message(), "zero-size pixel data"), "%s", mt_error_message());
    /* Zero rows. */
    memcpy(patched, bytes, n);
    char *rows = memmem(patched, n, "\x28\x00\x10\x00US\x02\x00", 8);
    MT_CHECK(rows != NULL);
    if (rows) memset(rows + 8, 0, 2);
    check_no_phi_in_errors("phi_zero_rows.dcm", patched, n, &failures);
    MT_CHECK(strstr(mt_error_message(), "0 rows"), "%s", mt_error_message());
    /* No pixel data (the element moved to a private group) and a SOP class that is not a UID. */
    memcpy(patched, bytes, n);
    patched[pix_at] = (char)0xe1;
    int patched_uids = 0; /* in the meta information and in the data set */
    for (char *sop; (sop = memmem(patched, n, "1.2.840.10008.5.1.4.1.1.1.1", 27)); patched_uids++)
        memcpy(sop, "9.9.QZPHI.424242.1.1.1.1.1.", 27);
    MT_CHECK(patched_uids == 2, "%d", patched_uids);
    check_no_phi_in_errors("phi_no_pixels.dcm", patched, n, &failures);
    MT_CHECK(strstr(mt_error_message(), "no pixel data (SOP class a non-standard UID)"), "%s",
             mt_error_message());
    free(patched);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    for (int i = 0; i < N_PHI; i++)
        MT_CHECK(!file_contains(err_path, phi_values[i]), "stderr holds '%s'", phi_values[i]);
    MT_CHECK(failures > 50, "only %d failing reads", failures);
    mt_free(bytes);
}

/* ---- damaged files --------------------------------------------------------------------------- */

/* Debian's GDCM is built with assertions on: many damaged files abort the process inside GDCM
 * unless dicom.cpp refuses them first. Each case below once did. */

/* Writes src's bytes [0, n) with one patch to name, and reads it: it must fail with code and
 * the given text, naming the file. */
static void expect_patched(const char *name, const char *bytes, size_t n, const char *at,
                           const void *patch, size_t patch_n, mt_status code, const char *what) {
    char *copy = malloc(n);
    memcpy(copy, bytes, n);
    if (at) memcpy(copy + (at - bytes), patch, patch_n);
    TMP(p, name);
    MT_CHECK_OK(write_plain(p, copy, n));
    free(copy);
    mt_dicom_image d = {0};
    MT_CHECK_FAILS(mt_dicom_read(p, &d), code, p, what);
    mt_dicom_image_free(&d);
}

static char *write_and_slurp(mt_dicom_syntax ts, int bits, const char *name, size_t *n) {
    uint16_t px[ROWS * COLS];
    make_pixels(px, bits, bits == 16 ? 12 : 8);
    TMP(p, name);
    MT_CHECK_OK(write_image(p, bits, ts, px, phi_tags, N_PHI_TAGS));
    return slurp(p, n);
}

/* Every syntax, cut at ~80 places and with ~100 damaged bytes each: reading fails cleanly (or
 * reads the same pixels), and never takes the process down. */
static void test_damaged_every_syntax(void) {
    int failures = 0;
    for (int ts = 0; ts < MT_TS_COUNT; ts++) {
        int bits = ts == MT_TS_JPEG_BASELINE ? 8 : 16;
        char name[64];
        snprintf(name, sizeof name, "dmg_%s.dcm", mt_dicom_syntax_name((mt_dicom_syntax)ts));
        size_t n;
        char *bytes = write_and_slurp((mt_dicom_syntax)ts, bits, name, &n);
        if (!bytes) continue;
        TMP(orig, name);
        mt_dicom_image ref = {0};
        MT_CHECK_OK(mt_dicom_read(orig, &ref));
        char *copy = malloc(n);
        uint32_t s = 99u + (uint32_t)ts;
        for (int k = 0; k < 180; k++) {
            size_t len = n;
            memcpy(copy, bytes, n);
            if (k < 80) {
                len = (size_t)k * n / 80; /* truncated */
            } else { /* one to three bytes overwritten, mostly in the headers */
                for (int b = 0; b < 1 + k % 3; b++) {
                    s = s * 1664525u + 1013904223u;
                    size_t at = (s >> 8) % (k % 2 ? n : (n < 1600 ? n : 1600));
                    copy[at] = (char)(s >> 24);
                }
            }
            TMP(p, "dmg_case.dcm");
            MT_CHECK_OK(write_plain(p, copy, len));
            mt_dicom_image d = {0};
            mt_error_clear();
            mt_status st = mt_dicom_read(p, &d);
            if (st != MT_OK) {
                failures++;
                MT_CHECK(strstr(mt_error_message(), p) != NULL, "%s case %d: %s", name, k,
                         mt_error_message());
            } else if (k < 80) {
                MT_CHECK(same_pixels(&d, &ref), "%s cut at %zu reads other pixels", name, len);
            }
            mt_dicom_image_free(&d);
            mt_status hs = mt_dicom_read_header(p, &d);
            MT_CHECK(hs == MT_OK || mt_error_message()[0] != '\0');
            mt_dicom_image_free(&d);
        }
        free(copy);
        mt_dicom_image_free(&ref);
        mt_free(bytes);
    }
    MT_CHECK(failures > 8 * 80, "only %d damaged files refused", failures);
}

/* Damage that got through the structure check once, one case each. */
static void test_damaged_cases(void) {
    size_t n;
    char *rle = write_and_slurp(MT_TS_RLE, 16, "dmg_rle.dcm", &n);
    if (rle) { /* a sequence delimiter with a length: GDCM tried to allocate it */
        MT_CHECK(memcmp(rle + n - 8, "\xfe\xff\xdd\xe0\0\0\0\0", 8) == 0);
        expect_patched("dmg_delim.dcm", rle, n, rle + n - 4, "\x00\x00\x00\xef", 4, MT_ERR_FORMAT,
                       "sequence delimiter has a length");
        /* Columns (US) recorded with another VR: gdcm::Attribute asserts */
        const char *cols = memmem(rle, n, "\x28\x00\x11\x00US", 6);
        MT_CHECK(cols != NULL);
        expect_patched("dmg_vr.dcm", rle, n, cols ? cols + 4 : NULL, "DS", 2, MT_ERR_FORMAT,
                       "(0028,0011) has VR DS, expected US");
        mt_free(rle);
    }
    char *rgb = NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/SC_rgb_small_odd.dcm", g_pydicom);
    if (have_pydicom() && (rgb = slurp(path, &n))) { /* Planar Configuration 81: gdcm::Bitmap */
        const char *planar = memmem(rgb, n, "\x28\x00\x06\x00US\x02\x00", 8);
        MT_CHECK(planar != NULL);
        expect_patched("dmg_planar.dcm", rgb, n, planar ? planar + 8 : NULL, "\x51\x00", 2,
                       MT_ERR_FORMAT, "impossible pixel description: planar configuration 81");
        mt_free(rgb);
    }
    char *jls = write_and_slurp(MT_TS_JPEG_LS, 16, "dmg_jls.dcm", &n);
    if (jls) { /* a JPEG-LS frame larger than the header says: GDCM's buffer check asserts */
        const char *sof = memmem(jls, n, "\xff\xf7", 2);
        MT_CHECK(sof != NULL);
        expect_patched("dmg_sof.dcm", jls, n, sof ? sof + 5 : NULL, "\x01\x00", 2, MT_ERR_FORMAT,
                       "the JPEG-LS stream is 256x90");
        mt_free(jls);
    }
    char *jpg = write_and_slurp(MT_TS_JPEG_BASELINE, 8, "dmg_jpg.dcm", &n);
    if (jpg) { /* bytes between JPEG marker segments: libjpeg warns, and GDCM asserts */
        const char *dqt = memmem(jpg, n, "\xff\xdb", 2);
        MT_CHECK(dqt != NULL);
        expect_patched("dmg_jfif.dcm", jpg, n, dqt, "\x00", 1, MT_ERR_FORMAT,
                       "unreadable JPEG frame header");
        mt_free(jpg);
    }
    char *ex = write_and_slurp(MT_TS_EXPLICIT_LE, 16, "dmg_pad.dcm", &n);
    if (ex) { /* zero bytes after the last element: GDCM's fallback parsers assert */
        char *padded = calloc(n + 8, 1);
        memcpy(padded, ex, n);
        expect_patched("dmg_pad4.dcm", padded, n + 4, NULL, NULL, 0, MT_ERR_FORMAT,
                       "4 bytes after the last element");
        expect_patched("dmg_pad8.dcm", padded, n + 8, NULL, NULL, 0, MT_ERR_FORMAT,
                       "(0000,0000) has no valid VR");
        free(padded);
        mt_free(ex);
    }
    /* decimal strings GDCM indexes past what it could parse: asserts in gdcm::Attribute */
    uint8_t zeros[ROWS * COLS] = {0};
    mt_dicom_tag spacing = {0x0028, 0x0030, "0.1\\x0.1"}, orient = {0x0020, 0x0037, "1\\0"};
    TMP(sp, "dmg_spacing.dcm");
    MT_CHECK_OK(write_image(sp, 8, MT_TS_EXPLICIT_LE, zeros, &spacing, 1));
    mt_dicom_image di = {0};
    MT_CHECK_FAILS(mt_dicom_read(sp, &di), MT_ERR_FORMAT, "(0028,0030) holds a value that is not");
    MT_CHECK_OK(write_image(sp, 8, MT_TS_EXPLICIT_LE, zeros, &orient, 1));
    MT_CHECK_FAILS(mt_dicom_read(sp, &di), MT_ERR_FORMAT, "(0020,0037) holds 2 values, expected 6");
    /* a Recognition Code that is not ACR-NEMA's: asserts in gdcm::PixmapReader */
    uint8_t px[ROWS * COLS] = {0};
    mt_dicom_tag code = {0x0008, 0x0010, "GEMS_PARM_01"};
    TMP(p, "dmg_code.dcm");
    MT_CHECK_OK(write_image(p, 8, MT_TS_EXPLICIT_LE, px, &code, 1));
    mt_dicom_image d = {0};
    MT_CHECK_FAILS(mt_dicom_read(p, &d), MT_ERR_FORMAT, "Recognition Code (0008,0010)");
}

/* ---- de-identification ----------------------------------------------------------------------- */

static const uint8_t key_a[32] = "medtrain test key A.............";
static const uint8_t key_b[32] = "medtrain test key B.............";

/* The UID the anonymizer should give uid: "2.25." + decimal of the first 16 bytes of the HMAC. */
static void expected_uid(const uint8_t *key, const char *uid, char *out, size_t cap) {
    uint8_t h[MT_SHA256_BYTES];
    mt_hmac_sha256(key, 32, uid, strlen(uid), h);
    unsigned __int128 v = 0;
    for (int i = 0; i < 16; i++) v = v << 8 | h[i];
    char digits[48];
    int k = 0;
    do {
        digits[k++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    int o = snprintf(out, cap, "2.25.");
    while (k > 0 && (size_t)o + 1 < cap) out[o++] = digits[--k];
    out[o] = '\0';
}

static int count(const char *hay, size_t n, const char *needle) {
    int c = 0;
    size_t l = strlen(needle);
    for (const char *p = hay; (p = memmem(p, n - (size_t)(p - hay), needle, l)); p += l) c++;
    return c;
}

static void check_anonymized(const char *in, const char *out, const uint8_t *key) {
    size_t n;
    char *bytes = slurp(out, &n);
    MT_CHECK(bytes != NULL, "%s not written", out);
    if (!bytes) return;
    for (int i = 0; i < N_PHI; i++)
        MT_CHECK(!contains(bytes, n, phi_values[i]), "%s holds '%s'", out, phi_values[i]);
    MT_CHECK(contains(bytes, n, "Basic Application Confidentiality Profile"));
    mt_dicom_image a = {0}, b = {0};
    MT_CHECK_OK(mt_dicom_read(in, &a));
    MT_CHECK_OK(mt_dicom_read(out, &b));
    MT_CHECK(a.pixels && b.pixels && same_pixels(&a, &b), "%s: pixels changed", out);
    MT_CHECK(strcmp(a.transfer_syntax_uid, b.transfer_syntax_uid) == 0);
    char want[80];
    expected_uid(key, a.study_instance_uid, want, sizeof want);
    MT_CHECK(strcmp(b.study_instance_uid, want) == 0, "study UID %s, expected %s",
             b.study_instance_uid, want);
    expected_uid(key, a.sop_instance_uid, want, sizeof want);
    MT_CHECK(strcmp(b.sop_instance_uid, want) == 0);
    /* The meta header's Media Storage SOP Instance UID is the new one too. */
    MT_CHECK(count(bytes, n, b.sop_instance_uid) == 2, "new SOP instance UID appears %d times",
             count(bytes, n, b.sop_instance_uid));
    uint8_t h[MT_SHA256_BYTES];
    char hex[MT_SHA256_HEX];
    mt_hmac_sha256(key, 32, PHI_ID, strlen(PHI_ID), h);
    mt_hex(h, MT_SHA256_BYTES, hex);
    hex[16] = '\0';
    MT_CHECK(strcmp(b.patient_id, hex) == 0, "patient id %s, expected %s", b.patient_id, hex);
    MT_CHECK(strcmp(b.modality, "DX") == 0 && b.has_window && b.has_rescale && b.has_spacing);
    mt_dicom_image_free(&a);
    mt_dicom_image_free(&b);
    mt_free(bytes);
}

static void test_anonymize(void) {
    uint16_t px[ROWS * COLS];
    make_pixels(px, 16, 12);
    mt_dicom_tag tags[N_PHI_TAGS];
    memcpy(tags, phi_tags, sizeof tags);
    TMP(in1, "anon_in1.dcm");
    TMP(in2, "anon_in2.dcm");
    TMP(in3, "anon_in3.dcm");
    MT_CHECK_OK(write_image(in1, 16, MT_TS_EXPLICIT_LE, px, tags, N_PHI_TAGS));
    tags[0].value = PHI_SOP2; /* same study and series, another instance */
    MT_CHECK_OK(write_image(in2, 16, MT_TS_IMPLICIT_LE, px, tags, N_PHI_TAGS));
    MT_CHECK_OK(write_image(in3, 16, MT_TS_JPEG2000, px, tags, N_PHI_TAGS));
    TMP(o1, "anon_out1.dcm");
    TMP(o2, "anon_out2.dcm");
    TMP(o3, "anon_out3.dcm");
    TMP(o1b, "anon_out1b.dcm");
    MT_CHECK_OK(mt_dicom_anonymize(in1, o1, key_a, 32));
    MT_CHECK_OK(mt_dicom_anonymize(in2, o2, key_a, 32));
    MT_CHECK_OK(mt_dicom_anonymize(in3, o3, key_a, 32));
    MT_CHECK_OK(mt_dicom_anonymize(in1, o1b, key_b, 32));
    check_anonymized(in1, o1, key_a);
    check_anonymized(in2, o2, key_a);
    check_anonymized(in3, o3, key_a);
    check_anonymized(in1, o1b, key_b);

    mt_dicom_image d1 = {0}, d2 = {0}, d1b = {0};
    MT_CHECK_OK(mt_dicom_read_header(o1, &d1));
    MT_CHECK_OK(mt_dicom_read_header(o2, &d2));
    MT_CHECK_OK(mt_dicom_read_header(o1b, &d1b));
    MT_CHECK(strcmp(d1.study_instance_uid, d2.study_instance_uid) == 0, "study UIDs differ");
    MT_CHECK(strcmp(d1.series_instance_uid, d2.series_instance_uid) == 0, "series UIDs differ");
    MT_CHECK(strcmp(d1.sop_instance_uid, d2.sop_instance_uid) != 0, "SOP UIDs collide");
    MT_CHECK(strcmp(d1.patient_id, d2.patient_id) == 0);
    MT_CHECK(strcmp(d1.study_instance_uid, d1b.study_instance_uid) != 0, "key B = key A");
    MT_CHECK(strcmp(d1.patient_id, d1b.patient_id) != 0);
    mt_dicom_image_free(&d1);
    mt_dicom_image_free(&d2);
    mt_dicom_image_free(&d1b);

    /* Same input, same key: the same bytes. */
    TMP(o1c, "anon_out1c.dcm");
    MT_CHECK_OK(mt_dicom_anonymize(in1, o1c, key_a, 32));
    size_t na, nc;
    char *a = slurp(o1, &na), *c = slurp(o1c, &nc);
    MT_CHECK(a && c && na == nc && memcmp(a, c, na) == 0, "anonymize is not deterministic");
    mt_free(a);
    mt_free(c);

    TMP(notes, "notes.txt");
    TMP(x, "x.dcm");
    MT_CHECK_FAILS(mt_dicom_anonymize(notes, x, key_a, 32), MT_ERR_FORMAT, "not a DICOM file");
    MT_CHECK(!mt_path_exists(x));
}

/* Every pydicom file that decodes still decodes, to the same pixels, after de-identification;
 * the rest fail with a reason. */
static void test_anonymize_pydicom(void) {
    int n, ok = 0, refused = 0;
    char **names = list_dcm(g_pydicom, &n);
    for (int i = 0; i < n; i++) {
        char in[1024], out[1024];
        snprintf(in, sizeof in, "%s/%s", g_pydicom, names[i]);
        snprintf(out, sizeof out, "%s/anon_%s", g_tmp, names[i]);
        mt_status st = mt_dicom_anonymize(in, out, key_a, 32);
        if (st != MT_OK) {
            refused++;
            MT_CHECK(mt_error_message()[0] != '\0');
            printf("  anonymize %-40s refused: %s\n", names[i],
                   short_reason(mt_error_message(), in));
            continue;
        }
        ok++;
        mt_dicom_image a = {0}, b = {0};
        if (mt_dicom_read(in, &a) == MT_OK) {
            MT_CHECK_OK(mt_dicom_read(out, &b));
            MT_CHECK(b.pixels && same_pixels(&a, &b), "%s: pixels changed by anonymize", names[i]);
            MT_CHECK(!a.patient_id[0] || strcmp(a.patient_id, b.patient_id) != 0);
            MT_CHECK(!a.sop_instance_uid[0] || strncmp(b.sop_instance_uid, "2.25.", 5) == 0,
                     "%s: SOP instance UID not remapped", names[i]);
        }
        mt_dicom_image_free(&a);
        mt_dicom_image_free(&b);
    }
    printf("  anonymize: %d of %d pydicom files written, %d refused\n", ok, n, refused);
    MT_CHECK(ok >= 60, "only %d pydicom files anonymized", ok);
    free_names(names, n);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_dicom PYDICOM_FILES_DIR SCRATCH_DIR\n");
        return 2;
    }
    g_pydicom = argv[1];
    snprintf(g_tmp, sizeof g_tmp, "%s", argv[2]);
    if (mt_mkdir_p(g_tmp) != MT_OK) {
        fprintf(stderr, "test_dicom: %s\n", mt_error_message());
        return 1;
    }
    printf("GDCM %s\n", mt_dicom_gdcm_version());
    MT_RUN(test_syntax_names);
    MT_RUN(test_write_read_every_syntax);
    MT_RUN(test_large_deflate);
    MT_RUN(test_write_errors);
    MT_RUN(test_bad_input);
    MT_RUN(test_no_phi_in_errors);
    MT_RUN(test_damaged_every_syntax);
    MT_RUN(test_damaged_cases);
    MT_RUN(test_anonymize);
    if (have_pydicom()) {
        MT_RUN(test_pydicom_corpus);
        MT_RUN(test_pydicom_same_pixels);
        MT_RUN(test_anonymize_pydicom);
    } else {
        const char *why = "no pydicom files (the fetch_pydicom_files fixture failed: offline?)";
        mt_test_skip("test_pydicom_corpus", why);
        mt_test_skip("test_pydicom_same_pixels", why);
        mt_test_skip("test_anonymize_pydicom", why);
    }
    return mt_test_summary();
}
