/* safetensors: a reader that maps a file (or takes a buffer) and validates the whole header before
 * handing out a tensor, and a writer whose output is byte-identical to the reference writer's
 * (huggingface/safetensors, which `safetensors.torch.save_file` and `.numpy.save_file` call).
 *
 * The reference rules followed here (checked against safetensors 0.8 with the oracle script
 * tests/oracles/safetensors_fixtures.py):
 *   - header: u64 little-endian length N (at most 100 MB), then N bytes of UTF-8 JSON, one object;
 *     trailing spaces are allowed (the writer pads with them to a multiple of 8);
 *   - a tensor is {"dtype", "shape", "data_offsets": [begin, end]}, offsets counted from the byte
 *     after the header; other fields are ignored; shape [] is a scalar (1 element);
 *   - sorted by offsets, tensors must tile the data region exactly: no gap, no overlap, and the
 *     last one ends at the end of the file;
 *   - the writer orders tensors by dtype, descending in the reference's Dtype enumeration order
 *     (the table below), then by name (bytewise); the header lists them in that order, and the
 *     data follows in the same order.
 * medtrain is stricter than the reference in a few places where the reference silently picks one
 * meaning: a tensor name or metadata key given twice, a field given twice, a string holding NUL,
 * and integers of 2^53 or more (cJSON holds numbers as doubles; no real file needs them). */
#include "medtrain/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes little-endian data in place: port it for this host"
#endif

#define ST_MAX_HEADER 100000000u         /* the reference's limit on the header length */
#define ST_MAX_INT    9007199254740992.0 /* 2^53: integers above lose precision in a double */

/* ---- dtypes -------------------------------------------------------------------------------- */

/* Every dtype of the reference, in the order of its Dtype enumeration: the writer sorts tensors by
 * this rank, descending. Sizes are in bits because F4 and F6 pack below a byte. */
typedef enum {
    ST_BOOL,
    ST_F4,
    ST_F6_E2M3,
    ST_F6_E3M2,
    ST_U8,
    ST_I8,
    ST_F8_E5M2,
    ST_F8_E4M3,
    ST_F8_E8M0,
    ST_F8_E4M3FNUZ,
    ST_F8_E5M2FNUZ,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_C64,
    ST_F64,
    ST_I64,
    ST_U64,
    ST_DTYPE_COUNT
} st_dtype;

static const struct {
    const char *name;
    unsigned bits;
    bool has_mt;
    mt_dtype mt;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 8, false, 0},
    [ST_F4] = {"F4", 4, false, 0},
    [ST_F6_E2M3] = {"F6_E2M3", 6, false, 0},
    [ST_F6_E3M2] = {"F6_E3M2", 6, false, 0},
    [ST_U8] = {"U8", 8, true, MT_U8},
    [ST_I8] = {"I8", 8, false, 0},
    [ST_F8_E5M2] = {"F8_E5M2", 8, false, 0},
    [ST_F8_E4M3] = {"F8_E4M3", 8, false, 0},
    [ST_F8_E8M0] = {"F8_E8M0", 8, false, 0},
    [ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8, false, 0},
    [ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8, false, 0},
    [ST_I16] = {"I16", 16, false, 0},
    [ST_U16] = {"U16", 16, true, MT_U16},
    [ST_F16] = {"F16", 16, true, MT_F16},
    [ST_BF16] = {"BF16", 16, true, MT_BF16},
    [ST_I32] = {"I32", 32, true, MT_I32},
    [ST_U32] = {"U32", 32, false, 0},
    [ST_F32] = {"F32", 32, true, MT_F32},
    [ST_C64] = {"C64", 64, false, 0},
    [ST_F64] = {"F64", 64, false, 0},
    [ST_I64] = {"I64", 64, true, MT_I64},
    [ST_U64] = {"U64", 64, false, 0},
};

static int st_dtype_find(const char *name) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(st_dtypes[i].name, name) == 0) return i;
    return -1;
}

/* The file dtype a medtrain dtype is written as (mt_dtype_size lives in mt_compute, not here). */
static st_dtype st_from_mt(mt_dtype d) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (st_dtypes[i].has_mt && st_dtypes[i].mt == d) return (st_dtype)i;
    return ST_DTYPE_COUNT;
}

/* ---- small text helpers -------------------------------------------------------------------- */

/* The offset of the first byte of s[0..n) that is not well-formed UTF-8, or n. */
static size_t utf8_bad_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xbf; /* range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0) lo = 0xa0; /* overlong */
            if (c == 0xed) hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0) lo = 0x90; /* overlong */
            if (c == 0xf4) hi = 0x8f; /* above U+10FFFF */
        } else {
            return i;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80) return i;
        i += len;
    }
    return n;
}

/* Control bytes the reference's JSON parser rejects but cJSON accepts (raw bytes below 0x20
 * inside strings, or between tokens other than JSON's whitespace), and escaped NULs, which a C
 * string cannot hold. Returns the offset of the first, or n; *what says which. Runs on JSON that
 * cJSON parsed, so quotes and escapes are well formed. */
static size_t json_control_at(const char *h, size_t n, const char **what) {
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!in_string) {
            if (c == '"') in_string = true;
            if (c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                *what = "a control byte outside a string";
                return i;
            }
        } else if (c == '"') {
            in_string = false;
        } else if (c < 0x20) {
            *what = "a control byte inside a string (it must be escaped)";
            return i;
        } else if (c == '\\' && i + 1 < n) {
            if (n - i >= 6 && memcmp(h + i + 1, "u0000", 5) == 0) {
                *what = "an escaped NUL (\\u0000), which medtrain does not accept in names";
                return i;
            }
            i++; /* the escaped character */
        }
    }
    return n;
}

/* How many bytes of JSON whitespace start [p, end). */
static size_t json_space_end(const char *p, const char *end) {
    size_t k = 0;
    while (p + k < end && (p[k] == ' ' || p[k] == '\t' || p[k] == '\n' || p[k] == '\r')) k++;
    return k;
}

static const char *json_type_name(const cJSON *j) {
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "something else";
}

/* "[2, 3]" into buf. */
static const char *shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && used < n; d++)
        used +=
            (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

/* ---- the reader ---------------------------------------------------------------------------- */

typedef struct st_meta {
    char *key, *value;
} st_meta;

struct mt_st_file {
    char *path;          /* the file, or the name given for a buffer */
    const uint8_t *base; /* the whole file */
    size_t size;
    bool mapped;         /* base is our mapping */
    const uint8_t *data; /* the byte after the header */
    size_t data_bytes;
    mt_st_tensor *tensors; /* in header order */
    size_t count;
    uint64_t *begin; /* data_offsets[0] of each tensor */
    size_t *by_name; /* tensor indices sorted by name, for mt_st_find */
    st_meta *meta;   /* sorted by key */
    size_t nmeta;
};

void mt_st_close(mt_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->count; i++) mt_free((char *)f->tensors[i].name);
    for (size_t i = 0; i < f->nmeta; i++) {
        mt_free(f->meta[i].key);
        mt_free(f->meta[i].value);
    }
    if (f->mapped && f->base) munmap((void *)f->base, f->size);
    mt_free(f->tensors);
    mt_free(f->begin);
    mt_free(f->by_name);
    mt_free(f->meta);
    mt_free(f->path);
    mt_free(f);
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < ST_MAX_INT) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

/* The one member of object j called key: NULL when absent; fails when given twice. */
static mt_status json_field(const mt_st_file *f, const char *tname, const cJSON *j, const char *key,
                            const cJSON **out) {
    *out = NULL;
    for (const cJSON *c = j->child; c; c = c->next) {
        if (!c->string || strcmp(c->string, key) != 0) continue;
        if (*out)
            return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s': field '%s' appears twice", f->path,
                           tname, key);
        *out = c;
    }
    if (!*out)
        return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s': missing field '%s'", f->path, tname, key);
    return MT_OK;
}

static mt_status parse_dtype(const mt_st_file *f, const char *tname, const cJSON *j, int *dt) {
    if (!cJSON_IsString(j))
        return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s': dtype: expected a string, found %s",
                       f->path, tname, json_type_name(j));
    *dt = st_dtype_find(j->valuestring);
    if (*dt < 0)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: tensor '%s': unknown dtype '%.40s' (known: BOOL, U8, I8, I16, U16, "
                       "F16, BF16, I32, U32, F32, F64, I64, U64, C64, F8_E4M3, F8_E5M2, F8_E8M0, "
                       "F8_E4M3FNUZ, F8_E5M2FNUZ, F4, F6_E2M3, F6_E3M2)",
                       f->path, tname, j->valuestring);
    return MT_OK;
}

/* Shape into t (ndim, shape, numel) and the byte count that dtype dt needs for it. */
static mt_status parse_shape(const mt_st_file *f, mt_st_tensor *t, int dt, const cJSON *j,
                             uint64_t *bytes) {
    if (!cJSON_IsArray(j))
        return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s': shape: expected an array, found %s",
                       f->path, t->name, json_type_name(j));
    int ndim = cJSON_GetArraySize(j);
    if (ndim > MT_ST_MAX_DIMS)
        return mt_fail(MT_ERR_UNSUPPORTED, "%s: tensor '%s': %d dims; medtrain reads at most %d",
                       f->path, t->name, ndim, MT_ST_MAX_DIMS);
    uint64_t numel = 1;
    bool overflow = false;
    int d = 0;
    for (const cJSON *c = j->child; c; c = c->next, d++) {
        uint64_t v;
        if (!json_u64(c, &v))
            return cJSON_IsNumber(c)
                       ? mt_fail(MT_ERR_FORMAT,
                                 "%s: tensor '%s': shape[%d]: expected an integer in [0, 2^53), "
                                 "found %.17g",
                                 f->path, t->name, d, c->valuedouble)
                       : mt_fail(MT_ERR_FORMAT,
                                 "%s: tensor '%s': shape[%d]: expected an integer, found %s",
                                 f->path, t->name, d, json_type_name(c));
        t->shape[d] = (int64_t)v;
        overflow |= __builtin_mul_overflow(numel, v, &numel);
    }
    t->ndim = ndim;
    uint64_t bits;
    if (overflow || numel > INT64_MAX || __builtin_mul_overflow(numel, st_dtypes[dt].bits, &bits)) {
        char s[256];
        return mt_fail(MT_ERR_FORMAT, "%s: tensor '%s': shape %s has too many elements to address",
                       f->path, t->name, shape_str(s, sizeof s, t->ndim, t->shape));
    }
    if (bits % 8 != 0) {
        char s[256];
        return mt_fail(
            MT_ERR_FORMAT, "%s: tensor '%s': %s tensor of shape %s does not end on a byte boundary",
            f->path, t->name, st_dtypes[dt].name, shape_str(s, sizeof s, t->ndim, t->shape));
    }
    t->numel = (int64_t)numel;
    *bytes = bits / 8;
    return MT_OK;
}

static mt_status parse_offsets(const mt_st_file *f, const char *tname, const cJSON *j,
                               uint64_t *begin, uint64_t *end) {
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != 2 || !json_u64(j->child, begin) ||
        !json_u64(j->child->next, end))
        return mt_fail(MT_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets: expected [begin, end], two integers in "
                       "[0, 2^53)",
                       f->path, tname);
    if (*end < *begin)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", f->path,
                       tname, (unsigned long long)*begin, (unsigned long long)*end);
    return MT_OK;
}

/* One header entry into t (name already set) and begin; checks it against the data size. */
static mt_status parse_tensor(mt_st_file *f, const cJSON *j, mt_st_tensor *t, uint64_t *begin) {
    if (!cJSON_IsObject(j))
        return mt_fail(MT_ERR_FORMAT,
                       "%s: tensor '%s': expected an object with dtype, shape and data_offsets, "
                       "found %s",
                       f->path, t->name, json_type_name(j));
    const cJSON *jd, *js, *jo;
    int dt;
    uint64_t bytes = 0, b = 0, e = 0;
    MT_TRY(json_field(f, t->name, j, "dtype", &jd));
    MT_TRY(json_field(f, t->name, j, "shape", &js));
    MT_TRY(json_field(f, t->name, j, "data_offsets", &jo));
    MT_TRY(parse_dtype(f, t->name, jd, &dt));
    MT_TRY(parse_shape(f, t, dt, js, &bytes));
    MT_TRY(parse_offsets(f, t->name, jo, &b, &e));
    t->dtype_name = st_dtypes[dt].name;
    t->has_dtype = st_dtypes[dt].has_mt;
    t->dtype = st_dtypes[dt].has_mt ? st_dtypes[dt].mt : MT_F32;
    if (e - b != bytes) {
        char s[256];
        return mt_fail(MT_ERR_FORMAT,
                       "%s: tensor '%s': dtype %s with shape %s needs %llu bytes, but data_offsets "
                       "[%llu, %llu] hold %llu",
                       f->path, t->name, t->dtype_name, shape_str(s, sizeof s, t->ndim, t->shape),
                       (unsigned long long)bytes, (unsigned long long)b, (unsigned long long)e,
                       (unsigned long long)(e - b));
    }
    if (e > f->data_bytes)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data "
                       "(%zu bytes after the header): the file is truncated or the offsets are "
                       "wrong",
                       f->path, t->name, (unsigned long long)b, (unsigned long long)e,
                       f->data_bytes);
    t->data = f->data + b;
    t->bytes = (size_t)bytes;
    *begin = b;
    return MT_OK;
}

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* "__metadata__": null, or an object of strings; copied into f->meta, sorted by key. */
static mt_status parse_metadata(mt_st_file *f, const cJSON *j) {
    if (cJSON_IsNull(j)) return MT_OK;
    if (!cJSON_IsObject(j))
        return mt_fail(MT_ERR_FORMAT, "%s: __metadata__: expected an object of strings, found %s",
                       f->path, json_type_name(j));
    size_t n = (size_t)cJSON_GetArraySize(j);
    f->meta = mt_calloc(n ? n : 1, sizeof *f->meta, "safetensors metadata");
    if (!f->meta) return MT_ERR_NOMEM;
    for (const cJSON *c = j->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return mt_fail(MT_ERR_FORMAT,
                           "%s: __metadata__: key '%s': expected a string value, found %s", f->path,
                           c->string, json_type_name(c));
        st_meta *m = &f->meta[f->nmeta];
        m->key = mt_strdup(c->string, "safetensors metadata key");
        m->value = m->key ? mt_strdup(c->valuestring, "safetensors metadata value") : NULL;
        if (!m->value) {
            mt_free(m->key);
            return MT_ERR_NOMEM;
        }
        f->nmeta++;
    }
    qsort(f->meta, f->nmeta, sizeof *f->meta, cmp_meta);
    for (size_t i = 1; i < f->nmeta; i++)
        if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0)
            return mt_fail(MT_ERR_FORMAT, "%s: __metadata__: key '%s' appears twice", f->path,
                           f->meta[i].key);
    return MT_OK;
}

/* Tensor indices of file ctx by name (qsort_r). */
static int cmp_name(const void *a, const void *b, void *ctx) {
    const mt_st_tensor *t = ((const mt_st_file *)ctx)->tensors;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* By data_offsets, then header position (zero-size tensors share offsets). */
static int cmp_offset(const void *a, const void *b, void *ctx) {
    size_t i = *(const size_t *)a, k = *(const size_t *)b;
    const uint64_t *bg = ((const mt_st_file *)ctx)->begin;
    const mt_st_tensor *t = ((const mt_st_file *)ctx)->tensors;
    if (bg[i] != bg[k]) return bg[i] < bg[k] ? -1 : 1;
    if (t[i].bytes != t[k].bytes) return t[i].bytes < t[k].bytes ? -1 : 1;
    return i < k ? -1 : i > k;
}

/* Names are unique; sorted by offset, the tensors tile the data exactly. */
static mt_status check_layout(mt_st_file *f) {
    size_t n = f->count, *order = mt_alloc((n ? n : 1) * sizeof *order, "safetensors layout");
    if (!order) return MT_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) order[i] = i;
    qsort_r(order, n, sizeof *order, cmp_offset, f);
    uint64_t at = 0;
    const mt_st_tensor *prev = NULL;
    mt_status st = MT_OK;
    for (size_t k = 0; k < n && st == MT_OK; k++) {
        const mt_st_tensor *t = &f->tensors[order[k]];
        uint64_t b = f->begin[order[k]], e = b + t->bytes;
        if (b < at)
            st = mt_fail(MT_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s', which "
                         "ends at %llu",
                         f->path, t->name, (unsigned long long)b, (unsigned long long)e, prev->name,
                         (unsigned long long)at);
        else if (b > at)
            st = mt_fail(MT_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] leave bytes [%llu, %llu) of "
                         "the data to no tensor (a gap %s%s%s)",
                         f->path, t->name, (unsigned long long)b, (unsigned long long)e,
                         (unsigned long long)at, (unsigned long long)b,
                         prev ? "after tensor '" : "at the start of the data",
                         prev ? prev->name : "", prev ? "'" : "");
        at = e;
        prev = t;
    }
    if (st == MT_OK && at != f->data_bytes)
        st = mt_fail(MT_ERR_FORMAT,
                     "%s: the tensors cover %llu bytes of data but %zu follow the header: %zu "
                     "bytes belong to no tensor",
                     f->path, (unsigned long long)at, f->data_bytes, f->data_bytes - (size_t)at);
    if (st == MT_OK) {
        for (size_t i = 0; i < n; i++) order[i] = i;
        qsort_r(order, n, sizeof *order, cmp_name, f);
        for (size_t i = 1; i < n && st == MT_OK; i++)
            if (strcmp(f->tensors[order[i - 1]].name, f->tensors[order[i]].name) == 0)
                st = mt_fail(MT_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", f->path,
                             f->tensors[order[i]].name);
    }
    if (st == MT_OK)
        f->by_name = order;
    else
        mt_free(order);
    return st;
}

/* The JSON object's members into f: tensors in header order, and the metadata. */
static mt_status parse_entries(mt_st_file *f, const cJSON *root) {
    size_t n = (size_t)cJSON_GetArraySize(root);
    f->tensors = mt_calloc(n ? n : 1, sizeof *f->tensors, "safetensors tensor table");
    f->begin = mt_calloc(n ? n : 1, sizeof *f->begin, "safetensors tensor table");
    if (!f->tensors || !f->begin) return MT_ERR_NOMEM;
    bool have_meta = false;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (have_meta) return mt_fail(MT_ERR_FORMAT, "%s: __metadata__ appears twice", f->path);
            have_meta = true;
            MT_TRY(parse_metadata(f, c));
            continue;
        }
        mt_st_tensor *t = &f->tensors[f->count];
        t->name = mt_strdup(c->string, "safetensors tensor name");
        if (!t->name) return MT_ERR_NOMEM;
        f->count++;
        MT_TRY(parse_tensor(f, c, t, &f->begin[f->count - 1]));
    }
    return check_layout(f);
}

/* Length prefix, UTF-8, JSON: the header's text into a cJSON object. */
static mt_status parse_json(mt_st_file *f, uint64_t n, cJSON **out) {
    const char *text = (const char *)f->base + 8;
    size_t bad = utf8_bad_at((const unsigned char *)text, (size_t)n);
    if (bad < n)
        return mt_fail(MT_ERR_FORMAT, "%s: header is not valid UTF-8 (byte %zu of the header)",
                       f->path, bad);
    /* A NUL-terminated copy: cJSON then cannot read past the header, whatever the input. */
    char *copy = mt_alloc((size_t)n + 1, "safetensors header");
    if (!copy) return MT_ERR_NOMEM;
    memcpy(copy, text, (size_t)n);
    copy[n] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(copy, (size_t)n, &end, 0);
    mt_status st = MT_OK;
    const char *what = NULL;
    size_t at;
    if (!root) {
        cJSON *again = NULL; /* for the message with line and column */
        st = mt_json_parse(copy, (size_t)n, f->path, &again);
        cJSON_Delete(again);
        if (st == MT_OK) st = mt_fail(MT_ERR_FORMAT, "%s: header is not valid JSON", f->path);
    } else if ((at = json_space_end(end, copy + n)) < (size_t)(copy + n - end)) {
        st = mt_fail(MT_ERR_FORMAT, "%s: header has text after its JSON object (at byte %zu)",
                     f->path, (size_t)(end - copy) + at);
    } else if (n >= 3 && memcmp(copy, "\xef\xbb\xbf", 3) == 0) {
        st = mt_fail(MT_ERR_FORMAT, "%s: header starts with a byte-order mark", f->path);
    } else if ((at = json_control_at(copy, (size_t)n, &what)) < n) {
        st =
            mt_fail(MT_ERR_FORMAT, "%s: header has %s (byte %zu of the header)", f->path, what, at);
    } else if (!cJSON_IsObject(root)) {
        st = mt_fail(MT_ERR_FORMAT, "%s: header is %s, expected a JSON object", f->path,
                     json_type_name(root));
    }
    mt_free(copy);
    if (st != MT_OK) {
        cJSON_Delete(root);
        return st;
    }
    *out = root;
    return MT_OK;
}

static mt_status parse_file(mt_st_file *f) {
    if (f->size < 8)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: %zu bytes, too short for a safetensors file (the header length alone "
                       "takes 8)",
                       f->path, f->size);
    uint64_t n;
    memcpy(&n, f->base, 8);
    if (n > ST_MAX_HEADER)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: header length %llu exceeds the 100 MB limit (not a safetensors file?)",
                       f->path, (unsigned long long)n);
    if (n > f->size - 8)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes): the file "
                       "is truncated",
                       f->path, (unsigned long long)n, f->size);
    f->data = f->base + 8 + n;
    f->data_bytes = f->size - 8 - (size_t)n;
    cJSON *root = NULL;
    MT_TRY(parse_json(f, n, &root));
    mt_status st = parse_entries(f, root);
    cJSON_Delete(root);
    return st;
}

static mt_status new_file(const char *name, mt_st_file **out) {
    *out = NULL;
    mt_st_file *f = mt_calloc(1, sizeof *f, "safetensors file");
    if (!f) return mt_error_wrap(MT_ERR_NOMEM, "%s: ", name);
    f->path = mt_strdup(name, "safetensors file name");
    if (!f->path) {
        mt_free(f);
        return mt_error_wrap(MT_ERR_NOMEM, "%s: ", name);
    }
    *out = f;
    return MT_OK;
}

static mt_status finish_open(mt_st_file *f, mt_st_file **out) {
    mt_status st = parse_file(f);
    if (st != MT_OK) {
        if (st == MT_ERR_NOMEM) mt_error_wrap(st, "%s: ", f->path); /* other messages name it */
        mt_st_close(f);
        return st;
    }
    *out = f;
    return MT_OK;
}

mt_status mt_st_open_buffer(const void *buf, size_t n, const char *name, mt_st_file **out) {
    if (!out || (!buf && n)) return mt_fail(MT_ERR_ARG, "mt_st_open_buffer: NULL argument");
    *out = NULL;
    mt_st_file *f;
    MT_TRY(new_file(name ? name : "(buffer)", &f));
    f->base = buf ? buf : (const uint8_t *)"";
    f->size = n;
    return finish_open(f, out);
}

mt_status mt_st_open(const char *path, mt_st_file **out) {
    if (!path || !out) return mt_fail(MT_ERR_ARG, "mt_st_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mt_fail(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return mt_fail(MT_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return mt_fail(MT_ERR_IO, "%s: not a regular file", path);
    }
    mt_st_file *f;
    mt_status st = new_file(path, &f);
    if (st != MT_OK) {
        close(fd);
        return st;
    }
    f->size = (size_t)sb.st_size;
    f->base = (const uint8_t *)"";
    if (f->size >= 8) { /* shorter files fail in parse_file; mmap refuses length 0 */
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            st = mt_fail(MT_ERR_IO, "%s: cannot map %zu bytes: %s", path, f->size, strerror(errno));
            close(fd);
            mt_st_close(f);
            return st;
        }
        f->base = p;
        f->mapped = true;
    }
    close(fd);
    return finish_open(f, out);
}

size_t mt_st_count(const mt_st_file *f) {
    return f->count;
}

const mt_st_tensor *mt_st_at(const mt_st_file *f, size_t i) {
    return i < f->count ? &f->tensors[i] : NULL;
}

const mt_st_tensor *mt_st_find(const mt_st_file *f, const char *name) {
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[f->by_name[mid]].name, name);
        if (c == 0) return &f->tensors[f->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *mt_st_metadata(const mt_st_file *f, const char *key) {
    st_meta probe = {(char *)key, NULL};
    const st_meta *m =
        f->nmeta ? bsearch(&probe, f->meta, f->nmeta, sizeof *f->meta, cmp_meta) : NULL;
    return m ? m->value : NULL;
}

const char *mt_st_path(const mt_st_file *f) {
    return f->path;
}

/* ---- conversion to f32 ----------------------------------------------------------------------- */

/* IEEE half to float, exactly (mt_f16_to_f32 lives in mt_compute, which core may not use). */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 0x1f)
        u = sign | 0x7f800000u | (man << 13); /* infinity, or NaN with its payload */
    else
        u = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One loop per source type; memcpy because the data may be unaligned for its type. */
#define ST_CONVERT(type, expr)                                                                     \
    do {                                                                                           \
        for (int64_t i = 0; i < t->numel; i++) {                                                   \
            type x;                                                                                \
            memcpy(&x, p + (size_t)i * sizeof x, sizeof x);                                        \
            dst[i] = (expr);                                                                       \
        }                                                                                          \
    } while (0)

mt_status mt_st_read_f32(const mt_st_file *f, const mt_st_tensor *t, float *dst) {
    if (!f || !t || t < f->tensors || t >= f->tensors + f->count)
        return mt_fail(MT_ERR_ARG, "mt_st_read_f32: the tensor is not one of %s's",
                       f ? f->path : "the file");
    if (!dst && t->numel > 0)
        return mt_fail(MT_ERR_ARG, "%s: tensor '%s': mt_st_read_f32 given no destination", f->path,
                       t->name);
    if (t->numel == 0) return MT_OK;
    const uint8_t *p = t->data;
    switch ((st_dtype)st_dtype_find(t->dtype_name)) {
    case ST_F32:
        memcpy(dst, p, t->bytes);
        break;
    case ST_BF16:
        ST_CONVERT(uint16_t, mt_bf16_to_f32(x));
        break;
    case ST_F16:
        ST_CONVERT(uint16_t, f16_to_f32(x));
        break;
    case ST_F64:
        ST_CONVERT(double, (float)x);
        break;
    case ST_I64:
        ST_CONVERT(int64_t, (float)x);
        break;
    case ST_U64:
        ST_CONVERT(uint64_t, (float)x);
        break;
    case ST_I32:
        ST_CONVERT(int32_t, (float)x);
        break;
    case ST_U32:
        ST_CONVERT(uint32_t, (float)x);
        break;
    case ST_I16:
        ST_CONVERT(int16_t, (float)x);
        break;
    case ST_U16:
        ST_CONVERT(uint16_t, (float)x);
        break;
    case ST_I8:
        ST_CONVERT(int8_t, (float)x);
        break;
    case ST_U8:
        ST_CONVERT(uint8_t, (float)x);
        break;
    case ST_BOOL:
        ST_CONVERT(uint8_t, x ? 1.0f : 0.0f);
        break;
    default:
        return mt_fail(
            MT_ERR_UNSUPPORTED,
            "%s: tensor '%s': cannot convert dtype %s to f32 (supported: F32, BF16, F16, "
            "F64, I64, U64, I32, U32, I16, U16, I8, U8, BOOL)",
            f->path, t->name, t->dtype_name);
    }
    return MT_OK;
}

/* ---- the writer ---------------------------------------------------------------------------- */

typedef struct st_entry {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[MT_ST_MAX_DIMS];
    const void *data;
    size_t bytes;
} st_entry;

struct mt_st_writer {
    st_entry *e;
    size_t n, cap;
    st_meta *meta;
    size_t nmeta, capmeta;
};

mt_status mt_st_writer_new(mt_st_writer **out) {
    *out = mt_calloc(1, sizeof **out, "safetensors writer");
    return *out ? MT_OK : MT_ERR_NOMEM;
}

void mt_st_writer_free(mt_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) mt_free(w->e[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        mt_free(w->meta[i].key);
        mt_free(w->meta[i].value);
    }
    mt_free(w->e);
    mt_free(w->meta);
    mt_free(w);
}

static bool valid_utf8(const char *s) {
    size_t n = strlen(s);
    return utf8_bad_at((const unsigned char *)s, n) == n;
}

/* Checks one tensor's arguments; its byte count into *bytes. */
static mt_status check_add(const mt_st_writer *w, const char *name, mt_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t *bytes) {
    if (!name) return mt_fail(MT_ERR_ARG, "mt_st_writer_add: NULL name");
    if (strcmp(name, "__metadata__") == 0 || !valid_utf8(name))
        return mt_fail(MT_ERR_ARG, "safetensors writer: tensor '%s': %s", name,
                       valid_utf8(name) ? "that name is reserved for metadata"
                                        : "name is not valid UTF-8");
    if ((unsigned)dtype >= MT_DTYPE_COUNT || st_from_mt(dtype) == ST_DTYPE_COUNT)
        return mt_fail(MT_ERR_ARG, "safetensors writer: tensor '%s': bad dtype %d", name,
                       (int)dtype);
    if (ndim < 0 || ndim > MT_ST_MAX_DIMS || (ndim > 0 && !shape))
        return mt_fail(MT_ERR_ARG, "safetensors writer: tensor '%s': %d dims (0 to %d allowed)",
                       name, ndim, MT_ST_MAX_DIMS);
    size_t n = st_dtypes[st_from_mt(dtype)].bits / 8;
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || (uint64_t)shape[d] >= (uint64_t)ST_MAX_INT ||
            __builtin_mul_overflow(n, (size_t)shape[d], &n)) {
            char s[256];
            return mt_fail(MT_ERR_ARG, "safetensors writer: tensor '%s': bad shape %s", name,
                           shape_str(s, sizeof s, ndim, shape));
        }
    if (!data && n > 0)
        return mt_fail(MT_ERR_ARG, "safetensors writer: tensor '%s': NULL data for %zu bytes", name,
                       n);
    for (size_t i = 0; i < w->n; i++) /* writers hold hundreds of tensors, not millions */
        if (strcmp(w->e[i].name, name) == 0)
            return mt_fail(MT_ERR_ARG, "safetensors writer: tensor '%s' added twice", name);
    *bytes = n;
    return MT_OK;
}

mt_status mt_st_writer_add(mt_st_writer *w, const char *name, mt_dtype dtype, int ndim,
                           const int64_t *shape, const void *data) {
    size_t bytes;
    MT_TRY(check_add(w, name, dtype, ndim, shape, data, &bytes));
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        st_entry *e = mt_realloc(w->e, cap, sizeof *e, "safetensors writer table");
        if (!e) return MT_ERR_NOMEM;
        w->e = e;
        w->cap = cap;
    }
    st_entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = mt_strdup(name, "safetensors tensor name");
    if (!e->name) return MT_ERR_NOMEM;
    e->dtype = st_from_mt(dtype);
    e->ndim = ndim;
    if (ndim > 0) memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->data = data;
    e->bytes = bytes;
    w->n++;
    return MT_OK;
}

mt_status mt_st_writer_meta(mt_st_writer *w, const char *key, const char *value) {
    if (!key || !value) return mt_fail(MT_ERR_ARG, "mt_st_writer_meta: NULL key or value");
    if (!valid_utf8(key) || !valid_utf8(value))
        return mt_fail(MT_ERR_ARG, "safetensors writer: metadata '%s': not valid UTF-8", key);
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[i].key, key) == 0)
            return mt_fail(MT_ERR_ARG, "safetensors writer: metadata key '%s' given twice", key);
    if (w->nmeta == w->capmeta) {
        size_t cap = w->capmeta ? 2 * w->capmeta : 8;
        st_meta *m = mt_realloc(w->meta, cap, sizeof *m, "safetensors writer metadata");
        if (!m) return MT_ERR_NOMEM;
        w->meta = m;
        w->capmeta = cap;
    }
    st_meta *m = &w->meta[w->nmeta];
    m->key = mt_strdup(key, "safetensors metadata key");
    m->value = m->key ? mt_strdup(value, "safetensors metadata value") : NULL;
    if (!m->value) {
        mt_free(m->key);
        return MT_ERR_NOMEM;
    }
    w->nmeta++;
    return MT_OK;
}

/* A growing byte buffer for the header; out of memory is remembered and reported once. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        char *p = mt_realloc(b->p, cap, 1, "safetensors header");
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void sb_str(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

static void sb_u64(sbuf *b, uint64_t v) {
    char s[24];
    sb_put(b, s, (size_t)snprintf(s, sizeof s, "%llu", (unsigned long long)v));
}

/* A JSON string escaped as serde_json escapes it: quote, backslash and the short forms \b \f \n
 * \r \t; other bytes below 0x20 as \u00xx (lowercase hex); everything else as is (UTF-8, DEL). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        const char *esc = NULL;
        char u[8];
        switch (*c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (*c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", *c);
                esc = u;
            }
        }
        if (esc)
            sb_str(b, esc);
        else
            sb_put(b, c, 1);
    }
    sb_put(b, "\"", 1);
}

/* The reference's order: dtype rank descending, then name bytewise. */
static int cmp_entry(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The 8-byte length and the JSON header, padded with spaces to a multiple of 8, into b. */
static void build_header(const mt_st_writer *w, st_entry *const *order, sbuf *b) {
    sb_put(b, "\0\0\0\0\0\0\0\0", 8); /* the length, filled in below */
    sb_str(b, "{");
    if (w->nmeta) {
        /* The reference keeps metadata in a hash map, so its order varies from run to run;
         * medtrain writes keys sorted, so that equal inputs give equal files. */
        st_meta *m = mt_alloc(w->nmeta * sizeof *m, "safetensors metadata order");
        if (!m) {
            b->oom = true;
            return;
        }
        memcpy(m, w->meta, w->nmeta * sizeof *m);
        qsort(m, w->nmeta, sizeof *m, cmp_meta);
        sb_str(b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) sb_str(b, ",");
            sb_json_str(b, m[i].key);
            sb_str(b, ":");
            sb_json_str(b, m[i].value);
        }
        sb_str(b, "}");
        mt_free(m);
    }
    uint64_t at = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_entry *e = order[i];
        if (i || w->nmeta) sb_str(b, ",");
        sb_json_str(b, e->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, st_dtypes[e->dtype].name);
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) sb_str(b, ",");
            sb_u64(b, (uint64_t)e->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, at);
        sb_str(b, ",");
        sb_u64(b, at + e->bytes);
        sb_str(b, "]}");
        at += e->bytes;
    }
    sb_str(b, "}");
    while (!b->oom && b->n % 8 != 0) sb_str(b, " ");
    if (!b->oom) {
        uint64_t n = b->n - 8;
        memcpy(b->p, &n, 8);
    }
}

static mt_status write_all(int fd, const char *path, const char *tmp, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return mt_fail(MT_ERR_IO, "%s: writing the temporary file %s failed: %s", path, tmp,
                           strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return MT_OK;
}

/* A new file beside path, made with the usual 0666-less-umask permissions (mkstemp would make it
 * 0600, and changing the umask to learn it is not thread-safe). */
static int open_temp(const char *path, char *tmp, size_t n) {
    static unsigned counter;
    for (int tries = 0; tries < 100; tries++) {
        unsigned c = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        if (snprintf(tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), c) >= (int)n) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

/* Header, then each tensor's data straight from the caller's memory (no copy of the whole file),
 * into a temporary file that is fsynced and renamed over path. */
static mt_status write_file(const char *path, const sbuf *hdr, st_entry *const *order, size_t n) {
    char tmp[PATH_MAX + 32], dir[PATH_MAX];
    int fd = open_temp(path, tmp, sizeof tmp);
    if (fd < 0)
        return mt_fail(MT_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                       strerror(errno));
    mt_status st = write_all(fd, path, tmp, hdr->p, hdr->n);
    for (size_t i = 0; i < n && st == MT_OK; i++)
        st = write_all(fd, path, tmp, order[i]->data, order[i]->bytes);
    if (st == MT_OK && fsync(fd) != 0)
        st = mt_fail(MT_ERR_IO, "%s: fsync of the temporary file %s failed: %s", path, tmp,
                     strerror(errno));
    if (close(fd) != 0 && st == MT_OK)
        st = mt_fail(MT_ERR_IO, "%s: closing the temporary file %s failed: %s", path, tmp,
                     strerror(errno));
    if (st == MT_OK && rename(tmp, path) != 0)
        st = mt_fail(MT_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (st != MT_OK) {
        unlink(tmp);
        return st;
    }
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    return mt_fsync_dir(dir);
}

mt_status mt_st_writer_save(mt_st_writer *w, const char *path) {
    if (!w || !path) return mt_fail(MT_ERR_ARG, "mt_st_writer_save: NULL argument");
    st_entry **order = mt_alloc((w->n ? w->n : 1) * sizeof *order, "safetensors writer order");
    if (!order) return MT_ERR_NOMEM;
    for (size_t i = 0; i < w->n; i++) order[i] = &w->e[i];
    qsort(order, w->n, sizeof *order, cmp_entry);
    sbuf hdr = {0};
    build_header(w, order, &hdr);
    mt_status st = hdr.oom ? mt_error_wrap(MT_ERR_NOMEM, "writing %s: ", path)
                           : write_file(path, &hdr, order, w->n);
    mt_free(hdr.p);
    mt_free(order);
    return st;
}
