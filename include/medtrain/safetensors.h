/* safetensors files (https://github.com/huggingface/safetensors): the weight format everywhere.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header ({"name": {"dtype",
 * "shape", "data_offsets": [begin, end]}, ..., optional "__metadata__": {str: str}}), then the
 * data, little-endian, row-major. Reading maps the file and validates everything before any
 * tensor is handed out: header length within the file, JSON well formed, every dtype known, shape
 * times element size equal to the byte range, ranges inside the data, not overlapping, covering it
 * entirely. Errors name the file and the tensor.
 *
 * Writing collects (name, dtype, shape, data pointer) and writes the file atomically (aside,
 * fsync, rename); names are sorted in the header as the reference implementation does, data is
 * laid out in that order, and the header is padded with spaces to a multiple of 8. */
#ifndef MEDTRAIN_SAFETENSORS_H
#define MEDTRAIN_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/status.h"
#include "medtrain/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_ST_MAX_DIMS 8

typedef struct mt_st_tensor {
    const char *name;
    const char *dtype_name; /* as in the file: "F32", "BF16", "I64", "BOOL", "F8_E4M3", ... */
    bool has_dtype;         /* dtype_name maps onto a medtrain dtype */
    mt_dtype dtype;         /* valid when has_dtype */
    int ndim;
    int64_t shape[MT_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* inside the mapping; may be unaligned for its type */
    size_t bytes;
} mt_st_tensor;

typedef struct mt_st_file mt_st_file;

mt_status mt_st_open(const char *path, mt_st_file **out);
/* The same checks on a buffer in memory (fuzzing, tests); buf must outlive the handle. */
mt_status mt_st_open_buffer(const void *buf, size_t n, const char *name, mt_st_file **out);
void mt_st_close(mt_st_file *f);
size_t mt_st_count(const mt_st_file *f);
const mt_st_tensor *mt_st_at(const mt_st_file *f, size_t i); /* in header order */
const mt_st_tensor *mt_st_find(const mt_st_file *f, const char *name); /* NULL when absent */
const char *mt_st_metadata(const mt_st_file *f, const char *key);    /* NULL when absent */
const char *mt_st_path(const mt_st_file *f);
/* Copies a tensor's elements into dst as f32 (from F32, BF16, F16, F64, I64, I32, U8, ...). */
mt_status mt_st_read_f32(const mt_st_file *f, const mt_st_tensor *t, float *dst);

typedef struct mt_st_writer mt_st_writer;
mt_status mt_st_writer_new(mt_st_writer **out);
/* data is referenced, not copied: keep it alive until mt_st_writer_save. Duplicate names fail. */
mt_status mt_st_writer_add(mt_st_writer *w, const char *name, mt_dtype dtype, int ndim,
                           const int64_t *shape, const void *data);
mt_status mt_st_writer_meta(mt_st_writer *w, const char *key, const char *value);
mt_status mt_st_writer_save(mt_st_writer *w, const char *path); /* atomic */
void mt_st_writer_free(mt_st_writer *w);

#ifdef __cplusplus
}
#endif

#endif
