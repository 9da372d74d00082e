/* PNG and JPEG files: reading any common PNG/JPEG as grey levels, reading 8-bit masks, and atomic
 * writes of grey and RGB PNGs and grey JPEGs.
 *
 * Files are read whole and decoded from memory; writes encode into memory and then go through
 * mt_file_write_atomic, so a crash never leaves half an image. libpng and libjpeg report errors by
 * longjmp: each decoder/encoder runs in one function that owns only the library struct, while
 * every buffer it allocates lives in a context struct that the caller frees, so nothing leaks and
 * no local variable changes between setjmp and longjmp. */
#include "medtrain/image.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "medtrain/fs.h"
#include "medtrain/mem.h"

/* A PNG of more than this many pixels (or a JPEG of more than its share of the file size, below)
 * is refused as corrupt before anything is allocated for it: 2^28 floats are 1 GiB. */
#define MAX_PIXELS ((size_t)1 << 28)

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static bool is_png(const uint8_t *p, size_t n) {
    return n >= 8 && !memcmp(p, png_magic, 8);
}
static bool is_jpeg(const uint8_t *p, size_t n) {
    return n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff;
}

/* Luminance (ITU-R BT.601), as in mt_image_from_dicom. */
static float luma(float r, float g, float b) {
    return 0.299f * r + 0.587f * g + 0.114f * b;
}

/* ---- PNG decoding ------------------------------------------------------------------------- */

typedef struct png_dec {
    const char *path;
    const uint8_t *data;
    size_t n, pos;
    bool raw_u8;      /* mt_png_read_u8: 8-bit grey or palette indices, no conversion */
    bool truncated;   /* the read callback ran out of data */
    bool wrong_kind;  /* a valid PNG of a kind the caller cannot use */
    char reason[160]; /* libpng's message, or ours */
    uint8_t *pixels;  /* decoded rows (owned; freed by the caller) */
    png_bytep *rows;
    int h, w, channels, depth;
} png_dec;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_dec *s = png_get_error_ptr(png);
    snprintf(s->reason, sizeof s->reason, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png, (void)msg; /* e.g. "iCCP: known incorrect sRGB profile": harmless */
}

static void png_read_mem(png_structp png, png_bytep out, size_t len) {
    png_dec *s = png_get_io_ptr(png);
    if (len > s->n - s->pos) {
        s->truncated = true;
        png_error(png, "truncated");
    }
    memcpy(out, s->data + s->pos, len);
    s->pos += len;
}

/* Sets up libpng's transformations for what the caller wants; fails with a reason. */
static bool png_choose_transforms(png_structp png, png_infop info, png_dec *s) {
    int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (s->raw_u8) {
        bool single = type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_PALETTE;
        if (!single || depth > 8) {
            snprintf(s->reason, sizeof s->reason,
                     "%d-bit %s PNG, expected an 8-bit single-channel (grey or palette) mask",
                     depth,
                     type == PNG_COLOR_TYPE_GRAY         ? "grey"
                     : type == PNG_COLOR_TYPE_GRAY_ALPHA ? "grey+alpha"
                     : type == PNG_COLOR_TYPE_RGB        ? "RGB"
                     : type == PNG_COLOR_TYPE_RGB_ALPHA  ? "RGBA"
                                                         : "palette");
            s->wrong_kind = true;
            return false;
        }
        png_set_packing(png); /* 1/2/4-bit values one per byte, unscaled: class indices */
    } else {
        if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
        if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    return true;
}

/* Decodes s->data into s->pixels / s->rows. png and info are set before setjmp and never
 * changed after it; all allocations hang off s. */
static bool png_decode(png_dec *s) {
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, s, png_on_error, png_on_warning);
    if (!png) {
        snprintf(s->reason, sizeof s->reason, "out of memory in libpng");
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(s->reason, sizeof s->reason, "out of memory in libpng");
        return false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return false;
    }
    png_set_read_fn(png, s, png_read_mem);
    png_read_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    /* Deflate cannot compress beyond 1032:1, so a header claiming more raw bytes (a filter byte
     * plus the packed samples per row) than the file can hold is corrupt: refuse it before
     * allocating anything. */
    uint64_t raw = (uint64_t)h * (png_get_rowbytes(png, info) + 1);
    if ((uint64_t)w * h > MAX_PIXELS || raw / 1032 > s->n)
        png_error(png, "image size does not fit the file size (corrupt header)");
    if (!png_choose_transforms(png, info, s)) png_longjmp(png, 1);
    size_t rowbytes = png_get_rowbytes(png, info);
    s->h = (int)h, s->w = (int)w;
    s->channels = png_get_channels(png, info);
    s->depth = png_get_bit_depth(png, info);
    s->pixels = mt_alloc(rowbytes * h, "PNG pixels");
    s->rows = mt_alloc(h * sizeof *s->rows, "PNG row pointers");
    if (!s->pixels || !s->rows) {
        snprintf(s->reason, sizeof s->reason, "%s", mt_error_message());
        png_longjmp(png, 2);
    }
    for (uint32_t y = 0; y < h; y++) s->rows[y] = s->pixels + (size_t)y * rowbytes;
    png_read_image(png, s->rows);
    png_read_end(png, NULL); /* checks the remaining CRCs and that the file is complete */
    png_destroy_read_struct(&png, &info, NULL);
    return true;
}

/* Runs the decoder; on failure sets the error naming the file and frees what it made. */
static mt_status png_run(png_dec *s) {
    if (png_decode(s)) return MT_OK;
    mt_free(s->pixels);
    mt_free(s->rows);
    s->pixels = NULL, s->rows = NULL;
    if (!strncasecmp(s->reason, "out of memory", 13))
        return mt_fail(MT_ERR_NOMEM, "%s: %s", s->path, s->reason);
    if (s->truncated) return mt_fail(MT_ERR_FORMAT, "%s: truncated PNG file", s->path);
    if (s->wrong_kind) return mt_fail(MT_ERR_FORMAT, "%s: %s", s->path, s->reason);
    return mt_fail(MT_ERR_FORMAT, "%s: corrupt or unsupported PNG: %s", s->path, s->reason);
}

/* Decoded PNG rows (1-4 channels of 8 or 16 bits) -> grey levels in [0, 1]. */
static void png_to_grey(const png_dec *s, float *out) {
    int ch = s->channels;
    bool colour = ch >= 3; /* 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA: alpha is dropped */
    for (int y = 0; y < s->h; y++) {
        const uint8_t *r = s->rows[y];
        float *o = out + (size_t)y * s->w;
        for (int x = 0; x < s->w; x++) {
            float v[3];
            for (int c = 0; c < (colour ? 3 : 1); c++) {
                size_t i = (size_t)x * ch + c;
                v[c] = s->depth == 16 ? (float)((r[2 * i] << 8) | r[2 * i + 1]) / 65535.0f
                                      : (float)r[i] / 255.0f;
            }
            o[x] = colour ? luma(v[0], v[1], v[2]) : v[0];
        }
    }
}

static mt_status png_read_grey(const char *path, const uint8_t *data, size_t n, mt_image *out) {
    png_dec s = {.path = path, .data = data, .n = n};
    MT_TRY(png_run(&s));
    mt_status st = mt_image_alloc(out, s.h, s.w);
    if (st == MT_OK) png_to_grey(&s, out->data);
    mt_free(s.pixels);
    mt_free(s.rows);
    return st;
}

/* ---- JPEG decoding ------------------------------------------------------------------------ */

/* libjpeg's error manager extended with the jump back and the message. Warnings (corrupt data,
 * premature end of file) are errors here: a training set should not silently get grey blocks. */
typedef struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    bool truncated;
    char reason[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    c->err->format_message(c, e->reason);
    longjmp(e->jump, 1);
}

static void jpeg_on_message(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace messages */
    jpeg_err *e = (jpeg_err *)c->err;
    e->truncated = c->err->msg_code == JWRN_JPEG_EOF;
    jpeg_on_error(c);
}

static void jpeg_err_init(jpeg_err *e) {
    jpeg_std_error(&e->mgr);
    e->mgr.error_exit = jpeg_on_error;
    e->mgr.emit_message = jpeg_on_message;
    e->truncated = false;
    e->reason[0] = '\0';
}

typedef struct jpeg_dec {
    const char *path;
    const uint8_t *data;
    size_t n;
    struct jpeg_decompress_struct c; /* zeroed, so destroying it before creation is safe */
    jpeg_err err;
    bool cmyk;
    JSAMPLE *row; /* one decoded scanline (owned; freed by the caller) */
    mt_image img; /* the result (owned; freed by the caller on failure) */
} jpeg_dec;

/* Decodes s->data into s->img. Like png_decode, the function keeps no state of its own: the
 * libjpeg struct and every buffer live in *s. */
static bool jpeg_decode(jpeg_dec *s) {
    j_decompress_ptr c = &s->c;
    c->err = &s->err.mgr;
    jpeg_err_init(&s->err);
    if (setjmp(s->err.jump)) {
        jpeg_destroy_decompress(c);
        return false;
    }
    jpeg_create_decompress(c);
    jpeg_mem_src(c, s->data, (unsigned long)s->n);
    jpeg_read_header(c, TRUE);
    if (c->jpeg_color_space == JCS_CMYK || c->jpeg_color_space == JCS_YCCK) {
        s->cmyk = true;
        jpeg_destroy_decompress(c);
        return false;
    }
    c->out_color_space = c->num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(c);
    /* Huffman coding spends at least one bit per 8x8 block (<= 512 pixels a byte); arithmetic
     * coding can do better, so only large images are held to 2048 pixels a byte. */
    size_t pixels = (size_t)c->output_width * c->output_height;
    if (pixels > MAX_PIXELS || (pixels > ((size_t)1 << 24) && pixels / 2048 > s->n)) {
        snprintf(s->err.reason, sizeof s->err.reason,
                 "%ux%u pixels cannot fit in %zu bytes (corrupt header)", c->output_width,
                 c->output_height, s->n);
        longjmp(s->err.jump, 3);
    }
    int ch = c->output_components;
    s->row = mt_alloc((size_t)c->output_width * ch, "JPEG scanline");
    if (!s->row || mt_image_alloc(&s->img, (int)c->output_height, (int)c->output_width) != MT_OK) {
        snprintf(s->err.reason, sizeof s->err.reason, "%s", mt_error_message());
        longjmp(s->err.jump, 2);
    }
    while (c->output_scanline < c->output_height) {
        float *o = s->img.data + (size_t)c->output_scanline * c->output_width;
        JSAMPROW rowp = s->row;
        jpeg_read_scanlines(c, &rowp, 1);
        const JSAMPLE *r = s->row;
        for (JDIMENSION x = 0; x < c->output_width; x++)
            o[x] = ch == 1 ? r[x] / 255.0f : luma(r[3 * x], r[3 * x + 1], r[3 * x + 2]) / 255.0f;
    }
    jpeg_finish_decompress(c);
    jpeg_destroy_decompress(c);
    return true;
}

static mt_status jpeg_read_grey(const char *path, const uint8_t *data, size_t n, mt_image *out) {
    jpeg_dec *s = mt_calloc(1, sizeof *s, "JPEG decoder"); /* ~1 KiB of libjpeg state */
    if (!s) return MT_ERR_NOMEM;
    s->path = path, s->data = data, s->n = n;
    mt_status st = MT_OK;
    if (jpeg_decode(s))
        *out = s->img;
    else if (s->cmyk)
        st = mt_fail(MT_ERR_UNSUPPORTED, "%s: CMYK JPEG files are not supported", path);
    else if (!strncasecmp(s->err.reason, "out of memory", 13))
        st = mt_fail(MT_ERR_NOMEM, "%s: %s", path, s->err.reason);
    else if (s->err.mgr.msg_code == JERR_OUT_OF_MEMORY)
        st = mt_fail(MT_ERR_NOMEM, "%s: libjpeg: %s", path, s->err.reason);
    else if (s->err.truncated)
        st = mt_fail(MT_ERR_FORMAT, "%s: truncated JPEG file", path);
    else
        st = mt_fail(MT_ERR_FORMAT, "%s: corrupt or unsupported JPEG: %s", path, s->err.reason);
    if (st != MT_OK) mt_image_free(&s->img);
    mt_free(s->row);
    mt_free(s);
    return st;
}

/* ---- reading ------------------------------------------------------------------------------ */

static mt_status read_whole(const char *path, uint8_t **data, size_t *n) {
    char *buf;
    MT_TRY(mt_file_read(path, &buf, n));
    if (*n == 0) {
        mt_free(buf);
        return mt_fail(MT_ERR_FORMAT, "%s: empty file", path);
    }
    *data = (uint8_t *)buf;
    return MT_OK;
}

mt_status mt_image_read_file(const char *path, mt_image *out) {
    out->data = NULL;
    out->h = out->w = 0;
    uint8_t *data = NULL;
    size_t n = 0;
    MT_TRY(read_whole(path, &data, &n));
    mt_status st;
    if (is_png(data, n))
        st = png_read_grey(path, data, n, out);
    else if (is_jpeg(data, n))
        st = jpeg_read_grey(path, data, n, out);
    else
        st = mt_fail(MT_ERR_FORMAT, "%s: not a PNG or JPEG file", path);
    mt_free(data);
    return st;
}

mt_status mt_png_read_u8(const char *path, uint8_t **pixels, int *h, int *w) {
    *pixels = NULL;
    uint8_t *data = NULL;
    size_t n = 0;
    MT_TRY(read_whole(path, &data, &n));
    if (!is_png(data, n)) {
        mt_free(data);
        return mt_fail(MT_ERR_FORMAT, "%s: not a PNG file", path);
    }
    png_dec s = {.path = path, .data = data, .n = n, .raw_u8 = true};
    mt_status st = png_run(&s);
    mt_free(data);
    if (st != MT_OK) return st;
    /* After png_set_packing every row is w bytes: copy them out contiguously. */
    uint8_t *p = mt_alloc((size_t)s.h * s.w, "mask pixels");
    if (p)
        for (int y = 0; y < s.h; y++) memcpy(p + (size_t)y * s.w, s.rows[y], (size_t)s.w);
    mt_free(s.pixels);
    mt_free(s.rows);
    if (!p) return MT_ERR_NOMEM;
    *pixels = p;
    *h = s.h;
    *w = s.w;
    return MT_OK;
}

/* ---- PNG encoding ------------------------------------------------------------------------- */

typedef struct png_enc {
    const void *pixels;
    int h, w, depth, channels;
    uint8_t *buf; /* the encoded file, growing (owned; freed by the caller) */
    size_t n, cap;
    uint8_t *row; /* one big-endian row for 16-bit data */
    char reason[160];
} png_enc;

static void png_write_mem(png_structp png, png_bytep data, size_t len) {
    png_enc *e = png_get_io_ptr(png);
    if (len > e->cap - e->n) {
        size_t cap = e->cap ? e->cap : 1 << 16;
        while (cap - e->n < len) cap *= 2;
        uint8_t *bigger = mt_realloc(e->buf, cap, 1, "PNG encoding buffer");
        if (!bigger) png_error(png, "out of memory");
        e->buf = bigger;
        e->cap = cap;
    }
    memcpy(e->buf + e->n, data, len);
    e->n += len;
}

static void png_flush_mem(png_structp png) {
    (void)png;
}

static void png_enc_error(png_structp png, png_const_charp msg) {
    png_enc *e = png_get_error_ptr(png);
    snprintf(e->reason, sizeof e->reason, "%s", msg);
    png_longjmp(png, 1);
}

static bool png_encode(png_enc *e) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, png_enc_error, NULL);
    if (!png) return false;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return false;
    }
    png_set_write_fn(png, e, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (uint32_t)e->w, (uint32_t)e->h, e->depth,
                 e->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t row_samples = (size_t)e->w * e->channels;
    for (int y = 0; y < e->h; y++) {
        if (e->depth == 8) {
            png_write_row(png, (png_const_bytep)e->pixels + (size_t)y * row_samples);
            continue;
        }
        const uint16_t *src = (const uint16_t *)e->pixels + (size_t)y * row_samples;
        for (size_t i = 0; i < row_samples; i++) { /* PNG stores 16-bit samples big-endian */
            e->row[2 * i] = (uint8_t)(src[i] >> 8);
            e->row[2 * i + 1] = (uint8_t)(src[i] & 0xff);
        }
        png_write_row(png, e->row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return true;
}

static mt_status png_write(const char *path, const void *pixels, int h, int w, int depth,
                           int channels) {
    if (!pixels || h <= 0 || w <= 0)
        return mt_fail(MT_ERR_ARG, "%s: cannot write a %dx%d image", path, h, w);
    png_enc e = {.pixels = pixels, .h = h, .w = w, .depth = depth, .channels = channels};
    mt_status st = MT_OK;
    if (depth == 16 && !(e.row = mt_alloc((size_t)w * channels * 2, "PNG row")))
        return MT_ERR_NOMEM;
    if (!png_encode(&e)) {
        bool nomem = !e.reason[0] || !strncasecmp(e.reason, "out of memory", 13);
        st = mt_fail(nomem ? MT_ERR_NOMEM : MT_ERR_ARG, "%s: PNG encoding failed: %s", path,
                     e.reason[0] ? e.reason : "out of memory in libpng");
    }
    if (st == MT_OK) st = mt_file_write_atomic(path, e.buf, e.n);
    mt_free(e.buf);
    mt_free(e.row);
    return st;
}

mt_status mt_png_write_gray(const char *path, const void *pixels, int h, int w, int bit_depth) {
    if (bit_depth != 8 && bit_depth != 16)
        return mt_fail(MT_ERR_ARG, "%s: PNG bit depth %d, expected 8 or 16", path, bit_depth);
    return png_write(path, pixels, h, w, bit_depth, 1);
}

mt_status mt_png_write_rgb(const char *path, const uint8_t *rgb, int h, int w) {
    return png_write(path, rgb, h, w, 8, 3);
}

/* ---- JPEG encoding ------------------------------------------------------------------------ */

/* The encoder writes into a growing buffer of ours (libjpeg's jpeg_mem_dest loses track of its
 * buffer when an error interrupts it). */
typedef struct jpeg_enc {
    const uint8_t *pixels;
    int h, w, quality;
    struct jpeg_compress_struct c; /* zeroed, so destroying it before creation is safe */
    struct jpeg_destination_mgr dest;
    jpeg_err err;
    uint8_t *buf; /* the encoded file (owned; freed by the caller) */
    size_t n, cap;
} jpeg_enc;

static void jpeg_dest_grow(j_compress_ptr c) {
    jpeg_enc *e = c->client_data;
    size_t used = e->cap, cap = e->cap ? 2 * e->cap : 1 << 16;
    uint8_t *bigger = mt_realloc(e->buf, cap, 1, "JPEG encoding buffer");
    if (!bigger) ERREXIT1(c, JERR_OUT_OF_MEMORY, 0);
    e->buf = bigger;
    e->cap = cap;
    e->dest.next_output_byte = e->buf + used;
    e->dest.free_in_buffer = cap - used;
}

static void jpeg_dest_init(j_compress_ptr c) {
    jpeg_dest_grow(c);
}

/* Called when the buffer is full (libjpeg's contract: all of it is to be emptied). */
static boolean jpeg_dest_empty(j_compress_ptr c) {
    jpeg_dest_grow(c);
    return TRUE;
}

static void jpeg_dest_term(j_compress_ptr c) {
    jpeg_enc *e = c->client_data;
    e->n = e->cap - e->dest.free_in_buffer;
}

static bool jpeg_encode(jpeg_enc *e) {
    j_compress_ptr c = &e->c;
    c->err = &e->err.mgr;
    c->client_data = e; /* kept by jpeg_create_compress */
    jpeg_err_init(&e->err);
    if (setjmp(e->err.jump)) {
        jpeg_destroy_compress(c);
        return false;
    }
    jpeg_create_compress(c);
    e->dest.init_destination = jpeg_dest_init;
    e->dest.empty_output_buffer = jpeg_dest_empty;
    e->dest.term_destination = jpeg_dest_term;
    c->dest = &e->dest;
    c->image_width = (JDIMENSION)e->w;
    c->image_height = (JDIMENSION)e->h;
    c->input_components = 1;
    c->in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(c);
    jpeg_set_quality(c, e->quality, TRUE);
    jpeg_start_compress(c, TRUE);
    while (c->next_scanline < c->image_height) {
        JSAMPROW row = (JSAMPROW)(e->pixels + (size_t)c->next_scanline * e->w);
        jpeg_write_scanlines(c, &row, 1);
    }
    jpeg_finish_compress(c);
    jpeg_destroy_compress(c);
    return true;
}

mt_status mt_jpeg_write_gray(const char *path, const uint8_t *pixels, int h, int w, int quality) {
    if (!pixels || h <= 0 || w <= 0 || h > JPEG_MAX_DIMENSION || w > JPEG_MAX_DIMENSION)
        return mt_fail(MT_ERR_ARG, "%s: cannot write a %dx%d JPEG", path, h, w);
    if (quality < 1 || quality > 100)
        return mt_fail(MT_ERR_ARG, "%s: JPEG quality %d, expected 1..100", path, quality);
    jpeg_enc *e = mt_calloc(1, sizeof *e, "JPEG encoder");
    if (!e) return MT_ERR_NOMEM;
    e->pixels = pixels, e->h = h, e->w = w, e->quality = quality;
    mt_status st;
    if (jpeg_encode(e))
        st = mt_file_write_atomic(path, e->buf, e->n);
    else
        st = mt_fail(e->err.mgr.msg_code == JERR_OUT_OF_MEMORY ? MT_ERR_NOMEM : MT_ERR_ARG,
                     "%s: JPEG encoding failed: %s", path, e->err.reason);
    mt_free(e->buf);
    mt_free(e);
    return st;
}
