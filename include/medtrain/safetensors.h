/* safetensors files (https://github.com/huggingface/safetensors): the weight format everywhere.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header ({"name": {"dtype",
 * "shape", "data_offsets": [begin, end]}, ..., optional "__metadata__": {str: str}}), then the
 * data, little-endian, row-major. Reading maps the file and validates everything before any
 * tensor is handed out: header length within the file (at most 100 MB), UTF-8 JSON well formed,
 * every dtype known, shape times element size equal to the byte range, ranges inside the data, not
 * overlapping, covering it entirely. Errors (MT_ERR_FORMAT; MT_ERR_IO from the file system) name
 * the file and the tensor. Stricter than the reference: a tensor name, metadata key or field given
 * twice, a string holding NUL, an integer of 2^53 or more, and more than MT_ST_MAX_DIMS dims
 * (MT_ERR_UNSUPPORTED) are refused.
 *
 * Writing collects (name, dtype, shape, data pointer) and writes the file atomically (aside,
 * fsync, rename, fsync of the directory), streaming the data from the caller's memory. The output
 * is byte-identical to safetensors.torch/numpy.save_file: tensors are ordered by dtype, descending
 * in the reference's Dtype order (U64 I64 F64 C64 F32 U32 I32 BF16 F16 U16 I16 F8s I8 U8 F6s F4
 * BOOL: wider types first, so every tensor is aligned for its type), then by name bytewise; the
 * header lists them in that order, the data follows in the same order, and the header is padded
 * with spaces to a multiple of 8. Metadata keys are written sorted (the reference writes them in
 * hash-map order, which changes from run to run: with two or more keys only that order differs). */
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
    bool has_dtype;         /* dtype_name maps onto a medtrain dtype (BOOL does not: not U8) */
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
const mt_st_tensor *mt_st_at(const mt_st_file *f, size_t i);           /* in header order */
const mt_st_tensor *mt_st_find(const mt_st_file *f, const char *name); /* NULL when absent */
const char *mt_st_metadata(const mt_st_file *f, const char *key);      /* NULL when absent */
const char *mt_st_path(const mt_st_file *f);
/* Copies t's numel elements into dst as f32, from F32, BF16, F16, F64, I64, U64, I32, U32, I16,
 * U16, I8, U8 or BOOL (0/1); other dtypes (F8s, F4, F6s, C64) fail with MT_ERR_UNSUPPORTED naming
 * the tensor. t must come from f. */
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
