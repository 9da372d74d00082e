/* Tensors and the op context.
 *
 * A tensor is a view: a pointer to contiguous row-major memory plus dtype, shape (up to 4 dims) and
 * device. It owns nothing; memory comes from flat parameter buffers, arenas or mt_tensor_alloc.
 * Layout conventions (see docs/ARCHITECTURE.md): images and feature maps are NHWC, sequences are
 * (B, T, C), matrices are (rows, cols).
 *
 * An op runs in a context that names the backend (CPU or CUDA), the CUDA stream, a scratch arena
 * and the CPU thread count. Ops never read device memory from the host: scalar results (a loss)
 * are written to a one-element tensor on the op's device. */
#ifndef MEDTRAIN_TENSOR_H
#define MEDTRAIN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "medtrain/mem.h"
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mt_dtype {
    MT_F32,
    MT_BF16,
    MT_F16,
    MT_U8,
    MT_U16,
    MT_I32,
    MT_I64,
    MT_DTYPE_COUNT
} mt_dtype;
typedef enum mt_device { MT_CPU, MT_CUDA, MT_DEVICE_COUNT } mt_device;

#define MT_MAX_DIMS 4

typedef struct mt_tensor {
    void *data;
    mt_dtype dtype;
    mt_device device;
    int ndim;
    int64_t shape[MT_MAX_DIMS];
} mt_tensor;

size_t mt_dtype_size(mt_dtype t);
const char *mt_dtype_name(mt_dtype t); /* "f32", "bf16", ... */
mt_status mt_dtype_parse(const char *name, mt_dtype *out);
const char *mt_device_name(mt_device d); /* "cpu", "cuda" */

/* A view of data with the given shape; dims are given outermost first. */
mt_tensor mt_tensor_view(void *data, mt_dtype dtype, mt_device device, int ndim,
                         const int64_t *shape);
mt_tensor mt_tensor_1d(void *data, mt_dtype dtype, mt_device device, int64_t d0);
mt_tensor mt_tensor_2d(void *data, mt_dtype dtype, mt_device device, int64_t d0, int64_t d1);
mt_tensor mt_tensor_3d(void *data, mt_dtype dtype, mt_device device, int64_t d0, int64_t d1,
                       int64_t d2);
mt_tensor mt_tensor_4d(void *data, mt_dtype dtype, mt_device device, int64_t d0, int64_t d1,
                       int64_t d2, int64_t d3);
int64_t mt_tensor_numel(const mt_tensor *t);
size_t mt_tensor_bytes(const mt_tensor *t);
bool mt_tensor_same_shape(const mt_tensor *a, const mt_tensor *b);
/* The same memory seen with another shape of the same element count. */
mt_status mt_tensor_reshape(const mt_tensor *t, int ndim, const int64_t *shape, mt_tensor *out);
/* "[8,224,224,3] f32 cpu" into buf; returns buf. */
const char *mt_tensor_describe(const mt_tensor *t, char *buf, size_t n);

/* bf16 and f16 conversions (round to nearest even; NaN stays NaN). */
static inline uint16_t mt_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float mt_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t mt_f32_to_f16(float f);
float mt_f16_to_f32(uint16_t h);

/* ---- contexts and backends ---------------------------------------------------------------- */

typedef struct mt_backend mt_backend; /* an op table; see src/compute/backend.h */

typedef struct mt_ctx {
    const mt_backend *backend;
    mt_device device;
    int device_index;    /* CUDA ordinal; 0 on CPU */
    void *stream;        /* cudaStream_t on CUDA; NULL on CPU */
    mt_arena scratch;    /* op workspace on the context's device, rewound by each op */
    int threads;         /* CPU threads for OpenMP loops (BLAS threads are set separately) */
    void *backend_state; /* the backend's own per-context state (cuBLAS handle, ...); or NULL */
} mt_ctx;

bool mt_backend_available(mt_device d); /* compiled in and a device present */
/* threads <= 0 means "as many as OpenMP would use". */
mt_status mt_ctx_init(mt_ctx *ctx, mt_device d, int device_index, int threads);
void mt_ctx_free(mt_ctx *ctx);
mt_status mt_ctx_sync(mt_ctx *ctx); /* waits for the context's queued work */

/* Device memory through the context's backend (host memory for MT_CPU). */
mt_status mt_tensor_alloc(mt_ctx *ctx, mt_tensor *t, mt_dtype dtype, int ndim,
                          const int64_t *shape);
void mt_tensor_free(mt_ctx *ctx, mt_tensor *t);
/* Copies between tensors of equal size on any pair of devices (host<->device included). */
mt_status mt_tensor_copy(mt_ctx *ctx, mt_tensor *dst, const mt_tensor *src);
mt_status mt_tensor_zero(mt_ctx *ctx, mt_tensor *t);

#ifdef __cplusplus
}
#endif

#endif
