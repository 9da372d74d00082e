/* Image processing for packing: the float working image, the DICOM display pipeline (modality LUT,
 * VOI window or percentile window, MONOCHROME1 inversion), square crop/pad and antialiased resize,
 * and the same geometry for label masks. PNG and JPEG files live in imagefile.c.
 *
 * Two paths turn stored DICOM samples into display values. Grey 8- and 16-bit images (nearly all
 * radiographs) go through a table: one histogram pass gives exact percentiles, the whole pipeline
 * is evaluated once per possible stored value, and one more pass looks every pixel up, so a
 * 3000x3000 film costs two passes over memory whatever the window function. Colour and 32-bit
 * images compute modality values in float and find percentiles by selection. */
#include "medtrain/image.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/mem.h"

mt_status mt_image_alloc(mt_image *img, int h, int w) {
    img->data = NULL;
    img->h = img->w = 0;
    if (h <= 0 || w <= 0)
        return mt_fail(MT_ERR_ARG, "image size %dx%d: expected a positive height and width", h, w);
    img->data = mt_calloc((size_t)h * (size_t)w, sizeof(float), "image pixels");
    if (!img->data) return MT_ERR_NOMEM;
    img->h = h;
    img->w = w;
    return MT_OK;
}

void mt_image_free(mt_image *img) {
    if (!img) return;
    mt_free(img->data);
    img->data = NULL;
    img->h = img->w = 0;
}

static mt_status check_image(const mt_image *img, const char *what) {
    if (!img || !img->data || img->h <= 0 || img->w <= 0)
        return mt_fail(MT_ERR_ARG, "%s: expected an allocated image", what);
    return MT_OK;
}

/* ---- display pipeline --------------------------------------------------------------------- */

typedef enum voi_kind { VOI_LINEAR, VOI_LINEAR_EXACT, VOI_SIGMOID, VOI_RANGE } voi_kind;

/* Everything after the stored value: value = stored * slope + intercept, then the window. */
typedef struct display {
    double slope, intercept;
    voi_kind kind;
    double c, w;   /* header window (VOI_LINEAR, VOI_LINEAR_EXACT, VOI_SIGMOID) */
    double lo, hi; /* VOI_RANGE: lo -> 0, hi -> 1; hi <= lo maps everything to 0 */
    bool invert;   /* MONOCHROME1 */
} display;

static double clamp01(double y) {
    return y < 0 ? 0 : y > 1 ? 1 : y;
}

/* The VOI LUT on a modality value (PS3.3 C.11.2.1.2 with output range [0, 1]). */
static double voi_apply(const display *p, double x) {
    switch (p->kind) {
    case VOI_LINEAR: {
        double c = p->c - 0.5, half = (p->w - 1) / 2;
        if (x <= c - half) return 0;
        if (x > c + half) return 1;
        return (x - c) / (p->w - 1) + 0.5; /* w > 1 here: w == 1 leaves no middle band */
    }
    case VOI_LINEAR_EXACT:
        return clamp01((x - p->c) / p->w + 0.5);
    case VOI_SIGMOID:
        return 1 / (1 + exp(-4 * (x - p->c) / p->w));
    case VOI_RANGE:
        return p->hi > p->lo ? clamp01((x - p->lo) / (p->hi - p->lo)) : 0;
    }
    return 0;
}

/* The whole VOI + presentation step. A degenerate percentile window means a blank image: 0,
 * whatever the photometric interpretation. */
static float display_value(const display *p, double value) {
    if (p->kind == VOI_RANGE && !(p->hi > p->lo)) return 0;
    double y = voi_apply(p, value);
    return (float)(p->invert ? 1 - y : y);
}

/* The header's window function, or false when there is none medtrain can use: a missing or
 * unknown function name, a non-finite value, width < 1 for LINEAR or <= 0 for the others. */
static bool header_window(const mt_dicom_image *d, display *p) {
    if (!d->has_window || !isfinite(d->window_center) || !isfinite(d->window_width)) return false;
    char name[sizeof d->voi_lut_function + 1];
    size_t n = strnlen(d->voi_lut_function, sizeof d->voi_lut_function);
    memcpy(name, d->voi_lut_function, n);
    while (n > 0 && name[n - 1] == ' ') n--; /* DICOM pads CS values with spaces */
    name[n] = '\0';
    if (n == 0 || !strcmp(name, "LINEAR"))
        p->kind = VOI_LINEAR;
    else if (!strcmp(name, "LINEAR_EXACT"))
        p->kind = VOI_LINEAR_EXACT;
    else if (!strcmp(name, "SIGMOID"))
        p->kind = VOI_SIGMOID;
    else
        return false;
    p->c = d->window_center;
    p->w = d->window_width;
    return p->kind == VOI_LINEAR ? p->w >= 1 : p->w > 0;
}

/* The stored sample types of dicom.h. */
typedef enum px_type { PX_U8, PX_I8, PX_U16, PX_I16, PX_U32, PX_I32 } px_type;

static double sample_at(const void *px, px_type t, size_t i) {
    switch (t) {
    case PX_U8:
        return ((const uint8_t *)px)[i];
    case PX_I8:
        return ((const int8_t *)px)[i];
    case PX_U16:
        return ((const uint16_t *)px)[i];
    case PX_I16:
        return ((const int16_t *)px)[i];
    case PX_U32:
        return ((const uint32_t *)px)[i];
    case PX_I32:
        return ((const int32_t *)px)[i];
    }
    return 0;
}

/* Checks the pixel description and finds the sample type. Messages name no header value that
 * could identify anyone (dicom.h, PRIVACY). */
static mt_status dicom_layout(const mt_dicom_image *d, px_type *t, size_t *n) {
    if (!d->pixels) return mt_fail(MT_ERR_ARG, "DICOM image: no pixel data (header only?)");
    if (d->rows <= 0 || d->cols <= 0)
        return mt_fail(MT_ERR_FORMAT, "DICOM image: size %dx%d", d->rows, d->cols);
    if (d->samples_per_pixel != 1 && d->samples_per_pixel != 3)
        return mt_fail(MT_ERR_UNSUPPORTED, "DICOM image: %d samples per pixel (expected 1 or 3)",
                       d->samples_per_pixel);
    if (d->samples_per_pixel == 1 && !strncmp(d->photometric, "PALETTE", 7))
        return mt_fail(MT_ERR_UNSUPPORTED, "DICOM image: PALETTE COLOR images are not supported");
    bool sgn = d->pixel_representation == 1;
    size_t bytes;
    switch (d->bits_allocated) {
    case 8:
        *t = sgn ? PX_I8 : PX_U8, bytes = 1;
        break;
    case 16:
        *t = sgn ? PX_I16 : PX_U16, bytes = 2;
        break;
    case 32:
        *t = sgn ? PX_I32 : PX_U32, bytes = 4;
        break;
    default:
        return mt_fail(MT_ERR_UNSUPPORTED, "DICOM image: %d bits allocated (expected 8, 16 or 32)",
                       d->bits_allocated);
    }
    *n = (size_t)d->rows * (size_t)d->cols;
    size_t need = *n * (size_t)d->samples_per_pixel * bytes;
    if (d->pixel_bytes < need)
        return mt_fail(MT_ERR_FORMAT, "DICOM image: %zu bytes of pixel data, %dx%dx%d needs %zu",
                       d->pixel_bytes, d->rows, d->cols, d->samples_per_pixel, need);
    return MT_OK;
}

/* numpy-style linear interpolation between order statistics: rank position p/100 * (n - 1). */
static void percentile_rank(double p, size_t n, size_t *k, double *frac) {
    double pos = p / 100 * (double)(n - 1);
    *k = (size_t)pos;
    if (*k > n - 1) *k = n - 1;
    *frac = pos - (double)*k;
}

/* The bin holding rank r (0-based, ascending) of a histogram. */
static size_t hist_rank(const uint32_t *hist, size_t nbins, size_t r) {
    size_t seen = 0;
    for (size_t b = 0; b < nbins; b++) {
        seen += hist[b];
        if (seen > r) return b;
    }
    return nbins - 1;
}

static double hist_percentile(const uint32_t *hist, size_t nbins, size_t n, double p) {
    size_t k;
    double f;
    percentile_rank(p, n, &k, &f);
    double a = (double)hist_rank(hist, nbins, k);
    double b = f > 0 && k + 1 < n ? (double)hist_rank(hist, nbins, k + 1) : a;
    return a + f * (b - a);
}

/* Percentile window [lo, hi] of stored values s (given in stored units) carried into modality
 * units v = slope * s + intercept. A negative slope reverses the order, so the lo percentile of v
 * is the hi one of s. A degenerate window (most pixels equal) widens to the full range. */
static void range_window(display *p, double s_plo, double s_phi, double s_min, double s_max) {
    if (s_phi <= s_plo) s_plo = s_min, s_phi = s_max;
    double a = p->slope * s_plo + p->intercept, b = p->slope * s_phi + p->intercept;
    p->kind = VOI_RANGE;
    p->lo = a < b ? a : b;
    p->hi = a < b ? b : a;
}

/* Grey 8/16-bit: histogram -> percentiles -> one table entry per stored value -> lookup. */
static mt_status from_dicom_table(const mt_dicom_image *d, px_type t, size_t n, display *p,
                                  bool use_header, const mt_window_opts *o, float *out) {
    size_t nbins = (t == PX_U8 || t == PX_I8) ? 256 : 65536;
    long base = t == PX_I8 ? -128 : t == PX_I16 ? -32768 : 0;
    float *table = mt_alloc(nbins * sizeof(float), "display table");
    if (!table) return MT_ERR_NOMEM;
    if (!use_header) {
        uint32_t *hist = mt_calloc(nbins, sizeof(uint32_t), "pixel histogram");
        if (!hist) {
            mt_free(table);
            return MT_ERR_NOMEM;
        }
        const void *px = d->pixels;
        switch (t) {
        case PX_U8:
            for (size_t i = 0; i < n; i++) hist[((const uint8_t *)px)[i]]++;
            break;
        case PX_I8:
            for (size_t i = 0; i < n; i++) hist[((const int8_t *)px)[i] + 128]++;
            break;
        case PX_U16:
            for (size_t i = 0; i < n; i++) hist[((const uint16_t *)px)[i]]++;
            break;
        case PX_I16:
            for (size_t i = 0; i < n; i++) hist[((const int16_t *)px)[i] + 32768]++;
            break;
        default:
            break;
        }
        /* Percentiles of v = slope * s + intercept: for slope < 0 the ranks run backwards. */
        double plo = p->slope < 0 ? 100 - o->pct_hi : o->pct_lo;
        double phi = p->slope < 0 ? 100 - o->pct_lo : o->pct_hi;
        double s_lo = hist_percentile(hist, nbins, n, plo) + (double)base;
        double s_hi = hist_percentile(hist, nbins, n, phi) + (double)base;
        double s_min = (double)hist_rank(hist, nbins, 0) + (double)base;
        double s_max = (double)hist_rank(hist, nbins, n - 1) + (double)base;
        mt_free(hist);
        range_window(p, s_lo, s_hi, s_min, s_max);
    }
    for (size_t b = 0; b < nbins; b++)
        table[b] = display_value(p, ((double)b + (double)base) * p->slope + p->intercept);
    const void *px = d->pixels;
    switch (t) {
    case PX_U8:
        for (size_t i = 0; i < n; i++) out[i] = table[((const uint8_t *)px)[i]];
        break;
    case PX_I8:
        for (size_t i = 0; i < n; i++) out[i] = table[((const int8_t *)px)[i] + 128];
        break;
    case PX_U16:
        for (size_t i = 0; i < n; i++) out[i] = table[((const uint16_t *)px)[i]];
        break;
    case PX_I16:
        for (size_t i = 0; i < n; i++) out[i] = table[((const int16_t *)px)[i] + 32768];
        break;
    default:
        break;
    }
    mt_free(table);
    return MT_OK;
}

/* Rearranges a[0, n) so that a[k] holds the value of rank k, smaller ones before it and larger
 * ones after (Hoare partition around a median of three: expected O(n), fine with duplicates). */
static void select_rank(float *a, size_t n, size_t k) {
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
    while (hi > lo) {
        ptrdiff_t mid = lo + (hi - lo) / 2;
        float t;
#define MT_SORT2(p, q) (a[q] < a[p] ? (t = a[p], a[p] = a[q], a[q] = t) : 0)
        MT_SORT2(lo, mid);
        MT_SORT2(lo, hi);
        MT_SORT2(mid, hi);
#undef MT_SORT2
        float pivot = a[mid];
        ptrdiff_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                t = a[i], a[i] = a[j], a[j] = t;
                i++, j--;
            }
        }
        /* Now a[lo, j] <= pivot <= a[i, hi], and a[j+1, i-1] == pivot. */
        if (kk <= j)
            hi = j;
        else if (kk >= i)
            lo = i;
        else
            return;
    }
}

static float min_of(const float *a, size_t n) {
    float m = a[0];
    for (size_t i = 1; i < n; i++) m = a[i] < m ? a[i] : m;
    return m;
}

/* Values of ranks k and k + 1 (the latter clamped to n - 1); a[] is rearranged. */
static void rank_pair(float *a, size_t n, size_t k, double *v0, double *v1) {
    select_rank(a, n, k);
    *v0 = a[k];
    *v1 = k + 1 < n ? min_of(a + k + 1, n - k - 1) : a[k];
}

/* The pct_lo and pct_hi percentiles of a[0, n) (rearranged), plus its minimum and maximum. */
static void float_percentiles(float *a, size_t n, double plo, double phi, double *lo, double *hi,
                              double *mn, double *mx) {
    size_t klo, khi;
    double flo, fhi, a0, a1, b0, b1;
    percentile_rank(plo, n, &klo, &flo);
    percentile_rank(phi, n, &khi, &fhi);
    rank_pair(a, n, khi, &b0, &b1);
    if (klo == khi)
        a0 = b0, a1 = b1;
    else
        rank_pair(a, khi + 1, klo, &a0, &a1); /* ranks <= khi sit in a[0, khi] */
    *lo = a0 + flo * (a1 - a0);
    *hi = b0 + fhi * (b1 - b0);
    *mn = min_of(a, n);
    float m = a[0];
    for (size_t i = 1; i < n; i++) m = a[i] > m ? a[i] : m;
    *mx = m;
}

/* Colour, YBR or 32-bit: modality values in float, percentiles by selection, window in place. */
static mt_status from_dicom_float(const mt_dicom_image *d, px_type t, size_t n, display *p,
                                  bool use_header, const mt_window_opts *o, float *out) {
    int spp = d->samples_per_pixel;
    bool ybr = !strncmp(d->photometric, "YBR", 3); /* Y is already the luma */
    for (size_t i = 0; i < n; i++) {
        double s;
        if (spp == 1 || ybr)
            s = sample_at(d->pixels, t, i * (size_t)spp);
        else
            s = 0.299 * sample_at(d->pixels, t, 3 * i) +
                0.587 * sample_at(d->pixels, t, 3 * i + 1) +
                0.114 * sample_at(d->pixels, t, 3 * i + 2);
        out[i] = (float)(s * p->slope + p->intercept);
    }
    if (!use_header) {
        float *copy = mt_alloc(n * sizeof(float), "percentile scratch");
        if (!copy) return MT_ERR_NOMEM;
        memcpy(copy, out, n * sizeof(float));
        double lo, hi, mn, mx;
        float_percentiles(copy, n, o->pct_lo, o->pct_hi, &lo, &hi, &mn, &mx);
        mt_free(copy);
        /* Values are already in modality units: slope 1 in range_window. */
        display q = *p;
        q.slope = 1, q.intercept = 0;
        range_window(&q, lo, hi, mn, mx);
        p->kind = q.kind, p->lo = q.lo, p->hi = q.hi;
    }
    for (size_t i = 0; i < n; i++) out[i] = display_value(p, out[i]);
    return MT_OK;
}

mt_status mt_image_from_dicom(const mt_dicom_image *d, const mt_window_opts *opts, mt_image *out,
                              const char **window_source) {
    static const mt_window_opts defaults = {.use_header = true, .pct_lo = 0.5, .pct_hi = 99.5};
    const mt_window_opts *o = opts ? opts : &defaults;
    out->data = NULL;
    out->h = out->w = 0;
    if (!(o->pct_lo >= 0 && o->pct_lo < o->pct_hi && o->pct_hi <= 100))
        return mt_fail(MT_ERR_ARG, "percentile window %g..%g: expected 0 <= low < high <= 100",
                       o->pct_lo, o->pct_hi);
    px_type t = PX_U8;
    size_t n = 0;
    MT_TRY(dicom_layout(d, &t, &n));
    display p = {.slope = 1, .intercept = 0};
    if (d->has_rescale) {
        if (!isfinite(d->rescale_slope) || !isfinite(d->rescale_intercept))
            return mt_fail(MT_ERR_FORMAT, "DICOM image: rescale slope or intercept is not finite");
        p.slope = d->rescale_slope, p.intercept = d->rescale_intercept;
    }
    p.invert = !strncmp(d->photometric, "MONOCHROME1", 11);
    bool use_header = o->use_header && header_window(d, &p);
    MT_TRY(mt_image_alloc(out, d->rows, d->cols));
    mt_status st;
    if (d->samples_per_pixel == 1 && d->bits_allocated <= 16)
        st = from_dicom_table(d, t, n, &p, use_header, o, out->data);
    else
        st = from_dicom_float(d, t, n, &p, use_header, o, out->data);
    if (st != MT_OK) {
        mt_image_free(out);
        return st;
    }
    if (window_source) *window_source = use_header ? "header" : "percentile";
    return MT_OK;
}

/* ---- square ------------------------------------------------------------------------------- */

/* Side of the square and where the original's top-left corner lands in it. Odd differences put
 * the smaller half on the top/left (crop removes floor(d/2) there; pad adds floor(d/2)). */
static void square_geometry(int h, int w, mt_square_mode mode, int *size, int *oy, int *ox) {
    if (mode == MT_SQUARE_CROP) {
        *size = h < w ? h : w;
        *oy = -((h - *size) / 2);
        *ox = -((w - *size) / 2);
    } else {
        *size = h > w ? h : w;
        *oy = (*size - h) / 2;
        *ox = (*size - w) / 2;
    }
}

/* Copies the part of src (h, w; elem bytes a pixel) that falls inside dst (size, size) when src's
 * corner sits at (oy, ox); the rest of dst is left as it is. */
static void place(const void *src, int h, int w, size_t elem, void *dst, int size, int oy, int ox) {
    int x0 = ox > 0 ? ox : 0, x1 = ox + w < size ? ox + w : size;
    for (int y = 0; y < size; y++) {
        int sy = y - oy;
        if (sy < 0 || sy >= h || x1 <= x0) continue;
        memcpy((char *)dst + ((size_t)y * size + x0) * elem,
               (const char *)src + ((size_t)sy * w + (x0 - ox)) * elem, (size_t)(x1 - x0) * elem);
    }
}

static mt_status check_mode(mt_square_mode mode) {
    if (mode != MT_SQUARE_CROP && mode != MT_SQUARE_PAD)
        return mt_fail(MT_ERR_ARG, "square mode %d: expected crop or pad", (int)mode);
    return MT_OK;
}

mt_status mt_image_square(const mt_image *src, mt_square_mode mode, float pad_value, mt_image *out,
                          int *off_y, int *off_x) {
    MT_TRY(check_image(src, "mt_image_square"));
    MT_TRY(check_mode(mode));
    int size, oy, ox;
    square_geometry(src->h, src->w, mode, &size, &oy, &ox);
    MT_TRY(mt_image_alloc(out, size, size));
    if (mode == MT_SQUARE_PAD && (size != src->h || size != src->w))
        for (size_t i = 0; i < (size_t)size * size; i++) out->data[i] = pad_value;
    place(src->data, src->h, src->w, sizeof(float), out->data, size, oy, ox);
    if (off_y) *off_y = oy;
    if (off_x) *off_x = ox;
    return MT_OK;
}

mt_status mt_mask_square(const uint8_t *src, int h, int w, mt_square_mode mode, uint8_t **out,
                         int *out_size) {
    *out = NULL;
    if (!src || h <= 0 || w <= 0)
        return mt_fail(MT_ERR_ARG,
                       "mt_mask_square: mask %dx%d: expected pixels and a positive size", h, w);
    MT_TRY(check_mode(mode));
    int size, oy, ox;
    square_geometry(h, w, mode, &size, &oy, &ox);
    uint8_t *m = mt_calloc((size_t)size * size, 1, "square mask"); /* pad = class 0 */
    if (!m) return MT_ERR_NOMEM;
    place(src, h, w, 1, m, size, oy, ox);
    *out = m;
    if (out_size) *out_size = size;
    return MT_OK;
}

/* ---- resize ------------------------------------------------------------------------------- */

/* Resampling weights along one axis, as Pillow's precompute_coeffs with the triangle filter:
 * output i is centred at input coordinate (i + 0.5) * scale; the filter is stretched by
 * max(1, scale) so that a reduction averages over each output pixel's footprint; weights are
 * normalised per output. Output i reads inputs first[i] .. first[i] + count[i] - 1 with weights
 * w[i * ksize ...]. */
typedef struct taps {
    int *first, *count;
    float *w;
    int ksize;
} taps;

static void taps_free(taps *t) {
    mt_free(t->first);
    mt_free(t->count);
    mt_free(t->w);
    *t = (taps){0};
}

static double triangle(double x) {
    x = fabs(x);
    return x < 1 ? 1 - x : 0;
}

static mt_status taps_make(int in, int out, taps *t) {
    double scale = (double)in / out, fscale = scale < 1 ? 1 : scale;
    double support = 1.0 * fscale; /* the triangle filter's support is 1 */
    t->ksize = (int)ceil(support) * 2 + 1;
    t->first = mt_alloc((size_t)out * sizeof(int), "resize taps");
    t->count = mt_alloc((size_t)out * sizeof(int), "resize taps");
    t->w = mt_calloc((size_t)out * (size_t)t->ksize, sizeof(float), "resize weights");
    if (!t->first || !t->count || !t->w) {
        taps_free(t);
        return MT_ERR_NOMEM;
    }
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        lo = lo < 0 ? 0 : lo;
        hi = hi > in ? in : hi;
        double sum = 0;
        for (int x = lo; x < hi; x++) sum += triangle((x - center + 0.5) / fscale);
        float *k = t->w + (size_t)i * t->ksize;
        for (int x = lo; x < hi; x++)
            k[x - lo] = (float)(sum > 0 ? triangle((x - center + 0.5) / fscale) / sum : 0);
        t->first[i] = lo;
        t->count[i] = hi - lo;
    }
    return MT_OK;
}

/* (h, in_w) -> (h, out_w), row by row. */
static void resize_rows(const float *src, int h, int in_w, const taps *tx, int out_w, float *dst) {
    size_t work = (size_t)h * out_w * tx->ksize;
#pragma omp parallel for schedule(static) if (work > (1 << 20))
    for (int y = 0; y < h; y++) {
        const float *s = src + (size_t)y * in_w;
        float *d = dst + (size_t)y * out_w;
        for (int x = 0; x < out_w; x++) {
            const float *k = tx->w + (size_t)x * tx->ksize, *p = s + tx->first[x];
            float acc = 0;
            for (int j = 0; j < tx->count[x]; j++) acc += p[j] * k[j];
            d[x] = acc;
        }
    }
}

/* (in_h, w) -> (out_h, w): each output row is a weighted sum of whole input rows (vectorises). */
static void resize_cols(const float *src, int w, const taps *ty, int out_h, float *dst) {
    size_t work = (size_t)out_h * w * ty->ksize;
#pragma omp parallel for schedule(static) if (work > (1 << 20))
    for (int y = 0; y < out_h; y++) {
        float *d = dst + (size_t)y * w;
        const float *k = ty->w + (size_t)y * ty->ksize;
        for (int x = 0; x < w; x++) d[x] = 0;
        for (int j = 0; j < ty->count[y]; j++) {
            const float *s = src + (size_t)(ty->first[y] + j) * w;
            float kj = k[j];
            for (int x = 0; x < w; x++) d[x] += kj * s[x];
        }
    }
}

mt_status mt_image_resize(const mt_image *src, int h, int w, mt_image *out) {
    out->data = NULL;
    out->h = out->w = 0;
    MT_TRY(check_image(src, "mt_image_resize"));
    if (h <= 0 || w <= 0)
        return mt_fail(MT_ERR_ARG, "resize to %dx%d: expected a positive height and width", h, w);
    taps tx = {0}, ty = {0};
    mt_image mid = {0};
    mt_status st = MT_OK;
    /* Horizontal pass first (as Pillow), skipped when the width does not change. */
    const mt_image *rows = src;
    if (w != src->w) {
        if ((st = taps_make(src->w, w, &tx)) != MT_OK) goto done;
        if ((st = mt_image_alloc(&mid, src->h, w)) != MT_OK) goto done;
        resize_rows(src->data, src->h, src->w, &tx, w, mid.data);
        rows = &mid;
    }
    if ((st = mt_image_alloc(out, h, w)) != MT_OK) goto done;
    if (h != src->h) {
        if ((st = taps_make(src->h, h, &ty)) != MT_OK) goto done;
        resize_cols(rows->data, w, &ty, h, out->data);
    } else {
        memcpy(out->data, rows->data, (size_t)h * w * sizeof(float));
    }
done:
    if (st != MT_OK) mt_image_free(out);
    taps_free(&tx);
    taps_free(&ty);
    mt_image_free(&mid);
    return st;
}

/* Nearest neighbour with the resize's pixel centres: output i samples the input pixel that holds
 * coordinate (i + 0.5) * in / out, i.e. floor((2i + 1) * in / (2 out)). */
static int nearest(int i, int in, int out) {
    return (int)(((2 * (int64_t)i + 1) * in) / (2 * (int64_t)out));
}

mt_status mt_mask_resize(const uint8_t *src, int h, int w, int out_h, int out_w, uint8_t *out) {
    if (!src || !out || h <= 0 || w <= 0 || out_h <= 0 || out_w <= 0)
        return mt_fail(MT_ERR_ARG,
                       "mt_mask_resize: %dx%d -> %dx%d: expected pixels and positive sizes", h, w,
                       out_h, out_w);
    int *col = mt_alloc((size_t)out_w * sizeof(int), "mask resize columns");
    if (!col) return MT_ERR_NOMEM;
    for (int x = 0; x < out_w; x++) col[x] = nearest(x, w, out_w);
    for (int y = 0; y < out_h; y++) {
        const uint8_t *s = src + (size_t)nearest(y, h, out_h) * w;
        uint8_t *d = out + (size_t)y * out_w;
        for (int x = 0; x < out_w; x++) d[x] = s[col[x]];
    }
    mt_free(col);
    return MT_OK;
}

/* ---- storage ------------------------------------------------------------------------------ */

/* [0,1] -> 0..max rounded to nearest; NaN and anything <= 0 -> 0. */
static uint32_t quantise(float v, float max) {
    if (!(v > 0)) return 0;
    if (v >= 1) return (uint32_t)max;
    return (uint32_t)(v * max + 0.5f);
}

void mt_image_to_u8(const mt_image *img, uint8_t *out) {
    size_t n = (size_t)img->h * img->w;
    for (size_t i = 0; i < n; i++) out[i] = (uint8_t)quantise(img->data[i], 255.0f);
}

void mt_image_to_u16(const mt_image *img, uint16_t *out) {
    size_t n = (size_t)img->h * img->w;
    for (size_t i = 0; i < n; i++) out[i] = (uint16_t)quantise(img->data[i], 65535.0f);
}
