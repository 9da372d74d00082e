/* safetensors: files written by the reference implementation
 * (tests/oracles/safetensors_fixtures.py) are read back value for value; the C writer reproduces
 * them byte for byte; round trips; every kind of corrupt input fails with a message naming the file
 * and the tensor; atomic writes. test_safetensors DATA_DIR     (tests/core/data/safetensors) */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/safetensors.h"
#include "mt_test.h"

static const char *data_dir;
static char tmp_dir[64];
static cJSON *expected; /* expected.json: {"files": {name: {"metadata", "tensors", "size"}}} */

/* ---- helpers ------------------------------------------------------------------------------- */

static void fixture_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", data_dir, name);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    char *data = NULL;
    if (mt_file_read(path, &data, n) != MT_OK) return NULL;
    return (uint8_t *)data;
}

static uint8_t *from_hex(const char *hex, size_t *n) {
    size_t len = strlen(hex) / 2;
    uint8_t *out = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *n = len;
    return out;
}

/* Expected f32 value: a number, null (NaN), or "inf" / "-inf". */
static float expected_f32(const cJSON *v) {
    if (cJSON_IsNull(v)) return NAN;
    if (cJSON_IsString(v)) return v->valuestring[0] == '-' ? -INFINITY : INFINITY;
    return (float)v->valuedouble;
}

static bool same_f32(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y; /* bitwise: -0 is not 0 */
}

static bool mt_dtype_of(const char *name, mt_dtype *out) {
    static const struct {
        const char *name;
        mt_dtype d;
    } map[] = {{"F32", MT_F32}, {"BF16", MT_BF16}, {"F16", MT_F16}, {"U8", MT_U8},
               {"U16", MT_U16}, {"I32", MT_I32},   {"I64", MT_I64}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].name, name) == 0) {
            *out = map[i].d;
            return true;
        }
    return false;
}

static int count_entries(const char *d) {
    DIR *dp = opendir(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (e->d_name[0] != '.') n++;
    closedir(dp);
    return n;
}

/* ---- reading the reference's files --------------------------------------------------------- */

static void check_tensor(const mt_st_file *f, size_t i, const cJSON *exp) {
    const char *name = cJSON_GetObjectItemCaseSensitive(exp, "name")->valuestring;
    const char *dtype = cJSON_GetObjectItemCaseSensitive(exp, "dtype")->valuestring;
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(exp, "shape");
    const cJSON *f32 = cJSON_GetObjectItemCaseSensitive(exp, "f32");
    const mt_st_tensor *t = mt_st_at(f, i);
    MT_CHECK(t && strcmp(t->name, name) == 0, "tensor %zu: '%s', expected '%s'", i,
             t ? t->name : "(none)", name);
    if (!t) return;
    MT_CHECK(mt_st_find(f, name) == t, "find '%s'", name);
    MT_CHECK(strcmp(t->dtype_name, dtype) == 0, "'%s': dtype %s, expected %s", name, t->dtype_name,
             dtype);
    mt_dtype d = MT_F32;
    bool has = mt_dtype_of(dtype, &d);
    MT_CHECK(t->has_dtype == has && (!has || t->dtype == d), "'%s': medtrain dtype", name);
    MT_CHECK(t->ndim == cJSON_GetArraySize(shape), "'%s': ndim %d", name, t->ndim);
    int64_t numel = 1;
    for (int k = 0; k < t->ndim && k < cJSON_GetArraySize(shape); k++) {
        int64_t want = (int64_t)cJSON_GetArrayItem(shape, k)->valuedouble;
        MT_CHECK(t->shape[k] == want, "'%s': shape[%d]", name, k);
        numel *= want;
    }
    MT_CHECK(t->numel == numel, "'%s': numel %lld, expected %lld", name, (long long)t->numel,
             (long long)numel);
    size_t nbytes;
    uint8_t *raw = from_hex(cJSON_GetObjectItemCaseSensitive(exp, "hex")->valuestring, &nbytes);
    MT_CHECK(t->bytes == nbytes && memcmp(t->data, raw, nbytes) == 0, "'%s': raw bytes", name);
    free(raw);
    float *vals = malloc((size_t)(numel ? numel : 1) * sizeof *vals);
    if (f32) {
        MT_CHECK_OK(mt_st_read_f32(f, t, vals));
        MT_CHECK(cJSON_GetArraySize(f32) == numel, "'%s': expected value count", name);
        for (int64_t k = 0; k < numel && k < cJSON_GetArraySize(f32); k++) {
            float want = expected_f32(cJSON_GetArrayItem(f32, (int)k));
            MT_CHECK(same_f32(vals[k], want), "'%s'[%lld] = %.9g, expected %.9g", name,
                     (long long)k, vals[k], want);
        }
    } else {
        MT_CHECK_FAILS(mt_st_read_f32(f, t, vals), MT_ERR_UNSUPPORTED, mt_st_path(f), name, dtype);
    }
    free(vals);
}

static void check_file(const mt_st_file *f, const cJSON *exp) {
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(exp, "tensors");
    MT_CHECK(mt_st_count(f) == (size_t)cJSON_GetArraySize(tensors), "%s: %zu tensors",
             mt_st_path(f), mt_st_count(f));
    size_t i = 0;
    for (const cJSON *t = tensors->child; t; t = t->next, i++) check_tensor(f, i, t);
    MT_CHECK(mt_st_at(f, i) == NULL && mt_st_find(f, "no such tensor") == NULL);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(exp, "metadata");
    for (const cJSON *m = meta->child; m; m = m->next) {
        const char *v = mt_st_metadata(f, m->string);
        MT_CHECK(v && strcmp(v, m->valuestring) == 0, "%s: metadata '%s' = '%s'", mt_st_path(f),
                 m->string, v ? v : "(absent)");
    }
    MT_CHECK(mt_st_metadata(f, "no such key") == NULL);
}

static void test_read_reference_files(void) {
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(expected, "files");
    MT_CHECK(cJSON_GetArraySize(files) >= 5);
    for (const cJSON *exp = files->child; exp; exp = exp->next) {
        char path[512];
        fixture_path(path, sizeof path, exp->string);
        mt_st_file *f = NULL;
        MT_CHECK_OK(mt_st_open(path, &f));
        if (!f) continue;
        MT_CHECK(strcmp(mt_st_path(f), path) == 0);
        check_file(f, exp);
        /* Every tensor of a reference file is aligned for its type in a page-aligned mapping. */
        for (size_t i = 0; i < mt_st_count(f); i++) {
            const mt_st_tensor *t = mt_st_at(f, i);
            size_t elem = t->numel ? t->bytes / (size_t)t->numel : 1;
            MT_CHECK((uintptr_t)t->data % (elem ? elem : 1) == 0, "'%s' aligned", t->name);
        }
        mt_st_close(f);
    }
}

/* The same file at an odd address: conversions must not assume alignment (UBSan checks). */
static void test_read_unaligned_buffer(void) {
    char path[512];
    fixture_path(path, sizeof path, "mixed.safetensors");
    size_t n;
    uint8_t *bytes = read_bytes(path, &n);
    MT_CHECK(bytes != NULL);
    if (!bytes) return;
    uint8_t *odd = malloc(n + 1);
    memcpy(odd + 1, bytes, n);
    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open_buffer(odd + 1, n, "mixed (unaligned copy)", &f));
    if (f) {
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(expected, "files");
        check_file(f, cJSON_GetObjectItemCaseSensitive(files, "mixed.safetensors"));
        mt_st_close(f);
    }
    free(odd);
    free(bytes);
}

/* ---- writing what the reference writes ----------------------------------------------------- */

/* Feeds the tensors of a reference file to the C writer (in reverse header order, to show that
 * the order of mt_st_writer_add does not matter) and compares the files byte for byte. */
static void check_writer_reproduces(const char *fixture) {
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(expected, "files");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(files, fixture);
    MT_CHECK(exp != NULL, "%s in expected.json", fixture);
    if (!exp) return;
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(exp, "tensors");
    int n = cJSON_GetArraySize(tensors);
    uint8_t **bufs = calloc((size_t)n + 1, sizeof *bufs);
    mt_st_writer *w = NULL;
    MT_CHECK_OK(mt_st_writer_new(&w));
    for (int i = n - 1; i >= 0; i--) {
        const cJSON *t = cJSON_GetArrayItem(tensors, i);
        mt_dtype d = MT_F32;
        MT_CHECK(mt_dtype_of(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, &d));
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
        int64_t dims[MT_ST_MAX_DIMS];
        int ndim = cJSON_GetArraySize(shape);
        for (int k = 0; k < ndim; k++) dims[k] = (int64_t)cJSON_GetArrayItem(shape, k)->valuedouble;
        size_t nb;
        bufs[i] = from_hex(cJSON_GetObjectItemCaseSensitive(t, "hex")->valuestring, &nb);
        MT_CHECK_OK(mt_st_writer_add(w, cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring, d,
                                     ndim, dims, bufs[i]));
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(exp, "metadata");
    for (const cJSON *m = meta->child; m; m = m->next)
        MT_CHECK_OK(mt_st_writer_meta(w, m->string, m->valuestring));
    char out[128], ref[512];
    snprintf(out, sizeof out, "%s/%s", tmp_dir, fixture);
    fixture_path(ref, sizeof ref, fixture);
    MT_CHECK_OK(mt_st_writer_save(w, out));
    mt_st_writer_free(w);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);

    size_t na = 0, nb = 0;
    uint8_t *a = read_bytes(out, &na), *b = read_bytes(ref, &nb);
    MT_CHECK(a && b);
    if (a && b) {
        size_t at = 0;
        while (at < na && at < nb && a[at] == b[at]) at++;
        MT_CHECK(na == nb && at == na,
                 "%s: the C writer's file (%zu bytes) differs from the reference's (%zu bytes) at "
                 "byte %zu:\n  C:         %.80s\n  reference: %.80s",
                 fixture, na, nb, at, at < na ? (const char *)a + at : "",
                 at < nb ? (const char *)b + at : "");
    }
    mt_free(a);
    mt_free(b);
}

static void test_writer_matches_reference(void) {
    check_writer_reproduces("writer_torch.safetensors");
    check_writer_reproduces("writer_numpy.safetensors");
    check_writer_reproduces("meta.safetensors"); /* several metadata keys, sorted */
    check_writer_reproduces("empty.safetensors");
}

/* ---- round trips --------------------------------------------------------------------------- */

static void test_round_trip(void) {
    float f32[24];
    for (int i = 0; i < 24; i++) f32[i] = (float)i * 0.75f - 3.0f;
    uint16_t bf16[5], f16[4] = {0x3c00, 0xc000, 0x7bff, 0x0001}; /* 1, -2, 65504, 2^-24 */
    for (int i = 0; i < 5; i++) bf16[i] = mt_f32_to_bf16((float)i - 1.5f);
    uint8_t u8[3] = {0, 128, 255};
    uint16_t u16[2] = {65535, 3};
    int32_t i32[2] = {-7, 1 << 30};
    int64_t i64[3] = {-1, 1LL << 40, 5};
    int64_t s24[8] = {1, 2, 1, 3, 1, 2, 1, 2}, s5[] = {5}, s4[] = {2, 2}, s3[] = {3}, s2[] = {2},
            s0[] = {0, 7};
    mt_st_writer *w = NULL;
    MT_CHECK_OK(mt_st_writer_new(&w));
    MT_CHECK_OK(mt_st_writer_add(w, "layer.0.w", MT_F32, 8, s24, f32)); /* 8 dims */
    MT_CHECK_OK(mt_st_writer_add(w, "scalar", MT_F32, 0, NULL, f32 + 3));
    MT_CHECK_OK(mt_st_writer_add(w, "empty", MT_F32, 2, s0, NULL));
    MT_CHECK_OK(mt_st_writer_add(w, "bf", MT_BF16, 1, s5, bf16));
    MT_CHECK_OK(mt_st_writer_add(w, "half", MT_F16, 2, s4, f16));
    MT_CHECK_OK(mt_st_writer_add(w, "bytes", MT_U8, 1, s3, u8));
    MT_CHECK_OK(mt_st_writer_add(w, "shorts", MT_U16, 1, s2, u16));
    MT_CHECK_OK(mt_st_writer_add(w, "ints", MT_I32, 1, s2, i32));
    MT_CHECK_OK(mt_st_writer_add(w, "longs", MT_I64, 1, s3, i64));
    MT_CHECK_OK(mt_st_writer_meta(w, "zeta", "last"));
    MT_CHECK_OK(mt_st_writer_meta(w, "alpha", "first \"quoted\"\n"));
    MT_CHECK_OK(mt_st_writer_meta(w, "empty", ""));
    char path[128];
    snprintf(path, sizeof path, "%s/round.safetensors", tmp_dir);
    MT_CHECK_OK(mt_st_writer_save(w, path));
    mt_st_writer_free(w);

    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open(path, &f));
    if (!f) return;
    MT_CHECK(mt_st_count(f) == 9);
    /* Header order: I64, F32 (by name), I32, BF16, F16, U16, U8. */
    const char *order[] = {"longs", "empty", "layer.0.w", "scalar", "ints",
                           "bf",    "half",  "shorts",    "bytes"};
    for (size_t i = 0; i < 9; i++)
        MT_CHECK(mt_st_at(f, i) && strcmp(mt_st_at(f, i)->name, order[i]) == 0,
                 "tensor %zu is '%s', expected '%s'", i, mt_st_at(f, i) ? mt_st_at(f, i)->name : "",
                 order[i]);
    float got[24];
    const mt_st_tensor *t = mt_st_find(f, "layer.0.w");
    MT_CHECK(t && t->ndim == 8 && t->numel == 24 && t->dtype == MT_F32 && t->has_dtype);
    if (t) {
        MT_CHECK_OK(mt_st_read_f32(f, t, got));
        MT_CHECK(memcmp(got, f32, sizeof f32) == 0);
    }
    t = mt_st_find(f, "scalar");
    MT_CHECK(t && t->ndim == 0 && t->numel == 1 && t->bytes == 4);
    if (t) MT_CHECK_OK(mt_st_read_f32(f, t, got));
    MT_CHECK(got[0] == f32[3]);
    t = mt_st_find(f, "empty");
    MT_CHECK(t && t->ndim == 2 && t->numel == 0 && t->bytes == 0 && t->shape[1] == 7);
    if (t) MT_CHECK_OK(mt_st_read_f32(f, t, NULL));
    t = mt_st_find(f, "bf");
    if (t) MT_CHECK_OK(mt_st_read_f32(f, t, got));
    for (int i = 0; i < 5; i++) MT_CHECK(got[i] == (float)i - 1.5f);
    t = mt_st_find(f, "half");
    if (t) MT_CHECK_OK(mt_st_read_f32(f, t, got));
    MT_CHECK(got[0] == 1.0f && got[1] == -2.0f && got[2] == 65504.0f && got[3] == 0x1p-24f);
    t = mt_st_find(f, "bytes");
    if (t) MT_CHECK_OK(mt_st_read_f32(f, t, got));
    MT_CHECK(got[0] == 0 && got[1] == 128 && got[2] == 255 && t && t->dtype == MT_U8);
    t = mt_st_find(f, "shorts");
    if (t) MT_CHECK_OK(mt_st_read_f32(f, t, got));
    MT_CHECK(got[0] == 65535 && got[1] == 3);
    t = mt_st_find(f, "ints");
    if (t) MT_CHECK_OK(mt_st_read_f32(f, t, got));
    MT_CHECK(got[0] == -7 && got[1] == (float)(1 << 30));
    t = mt_st_find(f, "longs");
    MT_CHECK(t && memcmp(t->data, i64, sizeof i64) == 0 && t->dtype == MT_I64);
    MT_CHECK(strcmp(mt_st_metadata(f, "alpha"), "first \"quoted\"\n") == 0);
    MT_CHECK(strcmp(mt_st_metadata(f, "zeta"), "last") == 0);
    MT_CHECK(strcmp(mt_st_metadata(f, "empty"), "") == 0);
    mt_st_close(f);
}

/* ---- corrupt input ------------------------------------------------------------------------- */

#define NAME "corrupt.safetensors"

static const uint8_t zeros[256];

static mt_status open_raw(const void *bytes, size_t n) {
    uint8_t *copy = malloc(n ? n : 1); /* exact size, so ASan sees any read past the end */
    memcpy(copy, bytes, n);
    mt_st_file *f = NULL;
    mt_status st = mt_st_open_buffer(copy, n, NAME, &f);
    mt_st_close(f);
    free(copy);
    return st;
}

/* A file of the given header (length len, or strlen) followed by ndata zero bytes. */
static mt_status open_header_n(const char *json, size_t len, size_t ndata) {
    size_t n = 8 + len + ndata;
    uint8_t *b = malloc(n);
    uint64_t le = len;
    memcpy(b, &le, 8);
    memcpy(b + 8, json, len);
    memcpy(b + 8 + len, zeros, ndata);
    mt_status st = open_raw(b, n);
    free(b);
    return st;
}

static mt_status open_header(const char *json, size_t ndata) {
    return open_header_n(json, strlen(json), ndata);
}

#define T(name, dtype, shape, b, e)                                                                \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_corrupt_lengths(void) {
    MT_CHECK_FAILS(open_raw("", 0), MT_ERR_FORMAT, NAME, "0 bytes, too short");
    MT_CHECK_FAILS(open_raw("\x02\0\0\0\0", 5), MT_ERR_FORMAT, NAME, "too short");
    uint8_t b[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    MT_CHECK_FAILS(open_raw(b, 10), MT_ERR_FORMAT, NAME, "header length 100 runs past the end");
    uint8_t big[16] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100000001 */
    MT_CHECK_FAILS(open_raw(big, 16), MT_ERR_FORMAT, NAME, "100 MB");
    memset(big, 0xff, 8); /* 2^64 - 1: no overflow in the bounds checks */
    MT_CHECK_FAILS(open_raw(big, 16), MT_ERR_FORMAT, NAME, "100 MB");
    uint8_t zero_len[8] = {0};
    MT_CHECK_FAILS(open_raw(zero_len, 8), MT_ERR_FORMAT, NAME, "invalid JSON");
}

static void test_corrupt_json(void) {
    MT_CHECK_FAILS(open_header("{\"a\":", 0), MT_ERR_FORMAT, NAME, "invalid JSON");
    MT_CHECK_FAILS(open_header("{\"a\":{]}", 0), MT_ERR_FORMAT, NAME, "invalid JSON");
    MT_CHECK_FAILS(open_header("{}x", 0), MT_ERR_FORMAT, NAME, "text after its JSON object");
    MT_CHECK_FAILS(open_header("{} {}", 0), MT_ERR_FORMAT, NAME, "text after");
    MT_CHECK_FAILS(open_header_n("{}\0\0\0\0\0\0", 8, 0), MT_ERR_FORMAT, NAME, "text after");
    MT_CHECK_FAILS(open_header("\x01{}", 0), MT_ERR_FORMAT, NAME, "control byte outside");
    MT_CHECK_FAILS(open_header("\xef\xbb\xbf{}", 0), MT_ERR_FORMAT, NAME, "byte-order mark");
    MT_CHECK_FAILS(open_header("[]      ", 0), MT_ERR_FORMAT, NAME, "expected a JSON object");
    MT_CHECK_FAILS(open_header("\"x\"", 0), MT_ERR_FORMAT, NAME, "a string, expected");
    MT_CHECK_FAILS(open_header("{\"\xff\":1}", 0), MT_ERR_FORMAT, NAME, "not valid UTF-8");
    MT_CHECK_FAILS(open_header("{\"\xc0\xaf\":1}", 0), MT_ERR_FORMAT, NAME, "UTF-8"); /* overlong */
    MT_CHECK_FAILS(open_header("{\"\xed\xa0\x80\":1}", 0), MT_ERR_FORMAT, NAME,
                   "UTF-8"); /* surrogate */
    MT_CHECK_FAILS(open_header("{\"a\x01\":1}", 0), MT_ERR_FORMAT, NAME, "control byte inside");
    MT_CHECK_FAILS(open_header("{" T("a\\u0000b", "U8", "[1]", 0, 1) "}", 1), MT_ERR_FORMAT, NAME,
                   "escaped NUL");
    /* Accepted: leading and trailing whitespace, other fields, null metadata, non-ASCII names. */
    MT_CHECK_OK(open_header(" \n{" T("a", "U8", "[1]", 0, 1) "}\t\r\n  ", 1));
    MT_CHECK_OK(open_header("{\"a\":{\"dtype\":\"U8\",\"x\":[{}],\"shape\":[1],\"data_offsets\":"
                            "[0,1]},\"__metadata__\":null}",
                            1));
    MT_CHECK_OK(
        open_header("{" T("caf\xc3\xa9 \\u00e9 \xf0\x9f\x98\x80", "U8", "[1]", 0, 1) "}", 1));
}

static void test_corrupt_tensor_entries(void) {
    MT_CHECK_FAILS(open_header("{\"w\":3}", 0), MT_ERR_FORMAT, NAME, "'w'", "expected an object");
    MT_CHECK_FAILS(open_header("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1), MT_ERR_FORMAT,
                   NAME, "'w'", "missing field 'dtype'");
    MT_CHECK_FAILS(open_header("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1),
                   MT_ERR_FORMAT, NAME, "'w'", "missing field 'shape'");
    MT_CHECK_FAILS(open_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1), MT_ERR_FORMAT, NAME,
                   "'w'", "missing field 'data_offsets'");
    MT_CHECK_FAILS(open_header("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],"
                               "\"data_offsets\":[0,1]}}",
                               1),
                   MT_ERR_FORMAT, NAME, "'w'", "field 'dtype' appears twice");
    MT_CHECK_FAILS(open_header("{" T("w", "F128", "[1]", 0, 16) "}", 16), MT_ERR_FORMAT, NAME,
                   "'w'", "unknown dtype 'F128'");
    MT_CHECK_FAILS(open_header("{" T("w", "f32", "[1]", 0, 4) "}", 4), MT_ERR_FORMAT, NAME, "'w'",
                   "unknown dtype 'f32'");
    MT_CHECK_FAILS(open_header("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
                   MT_ERR_FORMAT, NAME, "'w'", "dtype: expected a string, found a number");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "\"1\"", 0, 1) "}", 1), MT_ERR_FORMAT, NAME, "'w'",
                   "shape: expected an array");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[-1]", 0, 1) "}", 1), MT_ERR_FORMAT, NAME, "'w'",
                   "shape[0]", "found -1");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[1, 1.5]", 0, 1) "}", 1), MT_ERR_FORMAT, NAME,
                   "'w'", "shape[1]");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[null]", 0, 1) "}", 1), MT_ERR_FORMAT, NAME, "'w'",
                   "shape[0]");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[1e300]", 0, 1) "}", 1), MT_ERR_FORMAT, NAME,
                   "'w'", "shape[0]");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[1152921504606846976]", 0, 1) "}", 1),
                   MT_ERR_FORMAT, NAME, "'w'", "shape[0]"); /* 2^60 */
    /* 2^52 * 2^52 * 2^52 elements overflow 64 bits; so do 2^62 elements of 4 bytes. */
    MT_CHECK_FAILS(
        open_header(
            "{" T("w", "U8", "[4503599627370496,4503599627370496,4503599627370496]", 0, 1) "}", 1),
        MT_ERR_FORMAT, NAME, "'w'", "too many elements");
    MT_CHECK_FAILS(open_header("{" T("w", "F32", "[4503599627370496,1024]", 0, 1) "}", 1),
                   MT_ERR_FORMAT, NAME, "'w'", "too many elements");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}", 1),
                   MT_ERR_UNSUPPORTED, NAME, "'w'", "at most 8");
    MT_CHECK_FAILS(open_header("{" T("w", "F32", "[2,3]", 0, 20) "}", 20), MT_ERR_FORMAT, NAME,
                   "'w'", "needs 24 bytes", "hold 20");
    MT_CHECK_FAILS(open_header("{" T("w", "F4", "[3]", 0, 2) "}", 2), MT_ERR_FORMAT, NAME, "'w'",
                   "byte boundary");
    MT_CHECK_OK(
        open_header("{" T("w", "F4", "[4]", 0, 2) "," T("v", "F6_E2M3", "[4]", 2, 5) "}", 5));
    MT_CHECK_FAILS(open_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1),
                   MT_ERR_FORMAT, NAME, "'w'", "data_offsets: expected [begin, end]");
    MT_CHECK_FAILS(
        open_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1),
        MT_ERR_FORMAT, NAME, "'w'", "data_offsets");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[1]", 0, "1") "}", 1), MT_ERR_FORMAT, NAME, "'w'",
                   "data_offsets");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[1]", -1, 0) "}", 1), MT_ERR_FORMAT, NAME, "'w'",
                   "data_offsets");
    MT_CHECK_FAILS(open_header("{" T("w", "U8", "[0]", 2, 1) "}", 2), MT_ERR_FORMAT, NAME, "'w'",
                   "end before they begin");
}

static void test_corrupt_layout(void) {
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[2]", 0, 2) "," T("b", "U8", "[2]", 1, 3) "}", 3),
                   MT_ERR_FORMAT, NAME, "'b'", "overlap tensor 'a'");
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[2]", 0, 2) "," T("b", "U8", "[2]", 0, 2) "}", 2),
                   MT_ERR_FORMAT, NAME, "overlap tensor");
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[1]", 0, 1) "," T("b", "U8", "[1]", 2, 3) "}", 3),
                   MT_ERR_FORMAT, NAME, "'b'", "bytes [1, 2)", "gap after tensor 'a'");
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[1]", 1, 2) "}", 2), MT_ERR_FORMAT, NAME, "'a'",
                   "gap at the start");
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[4]", 0, 4) "}", 3), MT_ERR_FORMAT, NAME, "'a'",
                   "run past the end", "truncated");
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[8]", 9007199254740000, 9007199254740008) "}", 3),
                   MT_ERR_FORMAT, NAME, "'a'", "run past the end");
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[1]", 0, 1) "}", 4), MT_ERR_FORMAT, NAME,
                   "3 bytes belong to no tensor");
    MT_CHECK_FAILS(open_header("{}", 1), MT_ERR_FORMAT, NAME, "belong to no tensor");
    MT_CHECK_FAILS(open_header("{" T("a", "U8", "[1]", 0, 1) "," T("a", "U8", "[1]", 1, 2) "}", 2),
                   MT_ERR_FORMAT, NAME, "tensor 'a' appears twice");
    /* Header order need not be data order; zero-size tensors may sit anywhere in the tiling. */
    MT_CHECK_OK(open_header("{" T("b", "U8", "[1]", 1, 2) "," T("z", "F32", "[0,3]", 1, 1) "," T(
                                "a", "U8", "[1]", 0, 1) "," T("y", "F32", "[]", 2, 6) "}",
                            6));
    MT_CHECK_OK(
        open_header("{" T("z", "F32", "[0]", 0, 0) "," T("y", "BOOL", "[4,0]", 0, 0) "}", 0));
}

static void test_corrupt_metadata(void) {
    MT_CHECK_FAILS(open_header("{\"__metadata__\":{\"epoch\":3}}", 0), MT_ERR_FORMAT, NAME,
                   "__metadata__", "'epoch'", "expected a string value");
    MT_CHECK_FAILS(open_header("{\"__metadata__\":{\"k\":null}}", 0), MT_ERR_FORMAT, NAME, "'k'");
    MT_CHECK_FAILS(open_header("{\"__metadata__\":[\"k\"]}", 0), MT_ERR_FORMAT, NAME,
                   "__metadata__: expected an object");
    MT_CHECK_FAILS(open_header("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0), MT_ERR_FORMAT,
                   NAME, "key 'k' appears twice");
    MT_CHECK_FAILS(open_header("{\"__metadata__\":{},\"__metadata__\":{}}", 0), MT_ERR_FORMAT, NAME,
                   "__metadata__ appears twice");
}

static void test_open_errors(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/does_not_exist.safetensors", tmp_dir);
    mt_st_file *f = NULL;
    MT_CHECK_FAILS(mt_st_open(path, &f), MT_ERR_IO, "does_not_exist.safetensors");
    MT_CHECK(f == NULL);
    MT_CHECK_FAILS(mt_st_open(tmp_dir, &f), MT_ERR_IO, tmp_dir, "not a regular file");
    snprintf(path, sizeof path, "%s/empty_file.safetensors", tmp_dir);
    MT_CHECK_OK(mt_file_write_atomic(path, "", 0));
    MT_CHECK_FAILS(mt_st_open(path, &f), MT_ERR_FORMAT, "empty_file.safetensors", "too short");

    /* A reference file cut short on disk: the message names the file and the tensor. */
    char ref[512];
    fixture_path(ref, sizeof ref, "mixed.safetensors");
    size_t n;
    uint8_t *bytes = read_bytes(ref, &n);
    MT_CHECK(bytes != NULL);
    if (!bytes) return;
    snprintf(path, sizeof path, "%s/truncated.safetensors", tmp_dir);
    MT_CHECK_OK(mt_file_write_atomic(path, bytes, n - 1));
    MT_CHECK_FAILS(mt_st_open(path, &f), MT_ERR_FORMAT, "truncated.safetensors", "'mask'",
                   "truncated");
    uint64_t hlen;
    memcpy(&hlen, bytes, 8);
    MT_CHECK_OK(mt_file_write_atomic(path, bytes, 8 + (size_t)hlen - 3));
    MT_CHECK_FAILS(mt_st_open(path, &f), MT_ERR_FORMAT, "truncated.safetensors", "runs past");
    mt_free(bytes);
}

/* Every allocation the reader makes can fail; each failure is reported, nothing leaks (ASan). */
static void test_allocation_failures(void) {
    char ref[512];
    fixture_path(ref, sizeof ref, "mixed.safetensors");
    size_t n;
    uint8_t *bytes = read_bytes(ref, &n);
    MT_CHECK(bytes != NULL);
    if (!bytes) return;
    int failures = 0;
    for (long k = 1; k < 1000; k++) {
        mt_alloc_fail_after(k);
        mt_st_file *f = NULL;
        mt_error_clear();
        mt_status st = mt_st_open_buffer(bytes, n, "mixed", &f);
        mt_alloc_fail_after(0);
        if (st == MT_OK) {
            mt_st_close(f);
            break;
        }
        failures++;
        MT_CHECK(st == MT_ERR_NOMEM && f == NULL &&
                     strstr(mt_error_message(), "mixed: out of memory"),
                 "failure %ld: %s", k, mt_error_message());
    }
    MT_CHECK(failures > 10, "%d injected failures", failures);
    mt_free(bytes);
}

/* The writer's allocations fail one by one: each failure is reported and leaves no file. */
static void test_writer_allocation_failures(void) {
    float x[6] = {1, 2, 3, 4, 5, 6};
    int64_t s[] = {2, 3};
    char path[128];
    snprintf(path, sizeof path, "%s/alloc.safetensors", tmp_dir);
    int failures = 0;
    for (long k = 1; k < 1000; k++) {
        mt_st_writer *w = NULL;
        mt_alloc_fail_after(k);
        mt_error_clear();
        mt_status st = mt_st_writer_new(&w);
        if (st == MT_OK) st = mt_st_writer_add(w, "a", MT_F32, 2, s, x);
        if (st == MT_OK) st = mt_st_writer_add(w, "b", MT_BF16, 1, s, x);
        if (st == MT_OK) st = mt_st_writer_meta(w, "format", "pt");
        if (st == MT_OK) st = mt_st_writer_save(w, path);
        mt_alloc_fail_after(0);
        mt_st_writer_free(w);
        if (st == MT_OK) break;
        failures++;
        MT_CHECK(st == MT_ERR_NOMEM && strstr(mt_error_message(), "out of memory") &&
                     !mt_path_exists(path),
                 "failure %ld: %s", k, mt_error_message());
    }
    MT_CHECK(failures >= 5, "%d injected failures", failures);
    MT_CHECK(mt_path_exists(path));
}

/* ---- writer errors and atomic writes ------------------------------------------------------- */

static void test_writer_errors(void) {
    float x[4] = {0};
    int64_t s[] = {4}, neg[] = {-1}, huge[] = {1LL << 62, 1LL << 62};
    mt_st_writer *w = NULL;
    MT_CHECK_OK(mt_st_writer_new(&w));
    MT_CHECK_OK(mt_st_writer_add(w, "w", MT_F32, 1, s, x));
    MT_CHECK_FAILS(mt_st_writer_add(w, "w", MT_F32, 1, s, x), MT_ERR_ARG, "'w' added twice");
    MT_CHECK_FAILS(mt_st_writer_add(w, "w", MT_I32, 1, s, x), MT_ERR_ARG, "'w' added twice");
    MT_CHECK_FAILS(mt_st_writer_add(w, "__metadata__", MT_F32, 1, s, x), MT_ERR_ARG, "reserved");
    MT_CHECK_FAILS(mt_st_writer_add(w, "bad\xff", MT_F32, 1, s, x), MT_ERR_ARG, "UTF-8");
    MT_CHECK_FAILS(mt_st_writer_add(w, "n", MT_F32, 1, neg, x), MT_ERR_ARG, "'n'", "shape [-1]");
    MT_CHECK_FAILS(mt_st_writer_add(w, "h", MT_F32, 2, huge, x), MT_ERR_ARG, "'h'", "bad shape");
    MT_CHECK_FAILS(mt_st_writer_add(w, "d", MT_DTYPE_COUNT, 1, s, x), MT_ERR_ARG, "'d'", "dtype");
    MT_CHECK_FAILS(mt_st_writer_add(w, "nd", MT_F32, 9, huge, x), MT_ERR_ARG, "'nd'", "9 dims");
    MT_CHECK_FAILS(mt_st_writer_add(w, "null", MT_F32, 1, s, NULL), MT_ERR_ARG, "'null'",
                   "NULL data");
    MT_CHECK_OK(mt_st_writer_meta(w, "k", "v"));
    MT_CHECK_FAILS(mt_st_writer_meta(w, "k", "v2"), MT_ERR_ARG, "'k' given twice");
    MT_CHECK_FAILS(mt_st_writer_meta(w, "k2", "\xc3"), MT_ERR_ARG, "'k2'", "UTF-8");
    char path[128];
    snprintf(path, sizeof path, "%s/errors.safetensors", tmp_dir);
    MT_CHECK_OK(mt_st_writer_save(w, path)); /* the failed calls left nothing behind */
    mt_st_writer_free(w);
    mt_st_file *f = NULL;
    MT_CHECK_OK(mt_st_open(path, &f));
    MT_CHECK(f && mt_st_count(f) == 1 && strcmp(mt_st_metadata(f, "k"), "v") == 0);
    mt_st_close(f);
}

static void test_atomic_write(void) {
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/atomic", tmp_dir);
    MT_CHECK_OK(mt_mkdir_p(dir));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static float big[16384]; /* 64 KiB */
    int64_t s_small[] = {1}, s_big[] = {16384};
    float one = 1.0f;
    mt_st_writer *w = NULL;
    MT_CHECK_OK(mt_st_writer_new(&w));
    MT_CHECK_OK(mt_st_writer_add(w, "old", MT_F32, 1, s_small, &one));
    MT_CHECK_OK(mt_st_writer_save(w, path));
    MT_CHECK_OK(mt_st_writer_save(w, path)); /* replaces */
    mt_st_writer_free(w);
    MT_CHECK(count_entries(dir) == 1, "no temporary file is left behind");
    struct stat sb;
    MT_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0044), "written files are readable by others");
    size_t n_old;
    uint8_t *old = read_bytes(path, &n_old);

    /* A write that fails half way (the file-size limit stops it at 4 KiB): the old file stays. */
    MT_CHECK_OK(mt_st_writer_new(&w));
    MT_CHECK_OK(mt_st_writer_add(w, "new", MT_F32, 1, s_big, big));
    struct rlimit saved, small = {4096, 0};
    getrlimit(RLIMIT_FSIZE, &saved);
    small.rlim_max = saved.rlim_max;
    void (*handler)(int) = signal(SIGXFSZ, SIG_IGN);
    MT_CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    MT_CHECK_FAILS(mt_st_writer_save(w, path), MT_ERR_IO, "model.safetensors", "temporary file");
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, handler);
    size_t n_now;
    uint8_t *now = read_bytes(path, &n_now);
    MT_CHECK(old && now && n_now == n_old && memcmp(old, now, n_old) == 0,
             "the old file is untouched");
    MT_CHECK(count_entries(dir) == 1, "the temporary file is removed");
    mt_free(old);
    mt_free(now);

    /* A directory that does not exist, and (when not root) one that cannot be written. */
    snprintf(path, sizeof path, "%s/missing/model.safetensors", dir);
    MT_CHECK_FAILS(mt_st_writer_save(w, path), MT_ERR_IO, "missing/model.safetensors");
    if (geteuid() != 0) {
        MT_CHECK(chmod(dir, 0555) == 0);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        MT_CHECK_FAILS(mt_st_writer_save(w, path), MT_ERR_IO, "model.safetensors");
        chmod(dir, 0755);
        MT_CHECK(count_entries(dir) == 1);
    }
    mt_st_writer_free(w);
}

static void test_read_f32_errors(void) {
    char path[512];
    fixture_path(path, sizeof path, "mixed.safetensors");
    mt_st_file *a = NULL, *b = NULL;
    MT_CHECK_OK(mt_st_open(path, &a));
    fixture_path(path, sizeof path, "meta.safetensors");
    MT_CHECK_OK(mt_st_open(path, &b));
    if (!a || !b) return;
    float out[64];
    MT_CHECK_FAILS(mt_st_read_f32(a, mt_st_find(b, "x"), out), MT_ERR_ARG, "not one of");
    MT_CHECK_FAILS(mt_st_read_f32(a, mt_st_find(a, "f8_e4m3"), out), MT_ERR_UNSUPPORTED,
                   "mixed.safetensors", "'f8_e4m3'", "F8_E4M3");
    MT_CHECK_FAILS(mt_st_read_f32(a, mt_st_find(a, "u8"), NULL), MT_ERR_ARG, "'u8'");
    mt_st_close(a);
    mt_st_close(b);
}

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_safetensors DATA_DIR\n");
        return 2;
    }
    data_dir = argv[1];
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mt_st_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[512];
    fixture_path(path, sizeof path, "expected.json");
    if (mt_json_read_file(path, &expected) != MT_OK) {
        fprintf(stderr, "%s\n", mt_error_message());
        return 1;
    }
    MT_RUN(test_read_reference_files);
    MT_RUN(test_read_unaligned_buffer);
    MT_RUN(test_writer_matches_reference);
    MT_RUN(test_round_trip);
    MT_RUN(test_corrupt_lengths);
    MT_RUN(test_corrupt_json);
    MT_RUN(test_corrupt_tensor_entries);
    MT_RUN(test_corrupt_layout);
    MT_RUN(test_corrupt_metadata);
    MT_RUN(test_open_errors);
    MT_RUN(test_allocation_failures);
    MT_RUN(test_writer_allocation_failures);
    MT_RUN(test_writer_errors);
    MT_RUN(test_atomic_write);
    MT_RUN(test_read_f32_errors);
    cJSON_Delete(expected);
    cleanup();
    return mt_test_summary();
}
