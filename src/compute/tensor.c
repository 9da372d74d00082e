/* Tensors and contexts: dtype helpers, views, shape arithmetic, f16 conversion, and the
 * context/memory functions that forward to the backend table (src/compute/backend.h).
 *
 * Nothing here touches tensor data directly except through the backend, so the same calls work on
 * host and device memory. */
#include "medtrain/tensor.h"

#include <inttypes.h>
#include <stdio.h>
#include <omp.h>
#include "backend.h"

/* ---- dtypes and devices ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_info[MT_DTYPE_COUNT] = {
    [MT_F32] = {"f32", 4}, [MT_BF16] = {"bf16", 2}, [MT_F16] = {"f16", 2}, [MT_U8] = {"u8", 1},
    [MT_U16] = {"u16", 2}, [MT_I32] = {"i32", 4},   [MT_I64] = {"i64", 8},
};

static bool dtype_valid(mt_dtype t) {
    return (int)t >= 0 && t < MT_DTYPE_COUNT;
}

size_t mt_dtype_size(mt_dtype t) {
    return dtype_valid(t) ? dtype_info[t].size : 0;
}

const char *mt_dtype_name(mt_dtype t) {
    return dtype_valid(t) ? dtype_info[t].name : "?dtype";
}

mt_status mt_dtype_parse(const char *name, mt_dtype *out) {
    /* The short names, plus the spellings PyTorch and safetensors use. */
    static const struct {
        const char *alias;
        mt_dtype t;
    } aliases[] = {{"float32", MT_F32}, {"F32", MT_F32}, {"bfloat16", MT_BF16}, {"BF16", MT_BF16},
                   {"float16", MT_F16}, {"F16", MT_F16}, {"uint8", MT_U8},      {"U8", MT_U8},
                   {"uint16", MT_U16},  {"U16", MT_U16}, {"int32", MT_I32},     {"I32", MT_I32},
                   {"int64", MT_I64},   {"I64", MT_I64}};
    if (!name) return mt_fail(MT_ERR_ARG, "dtype: expected a name, found NULL");
    for (int t = 0; t < MT_DTYPE_COUNT; t++)
        if (strcmp(name, dtype_info[t].name) == 0) return *out = (mt_dtype)t, MT_OK;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].alias) == 0) return *out = aliases[i].t, MT_OK;
    return mt_fail(MT_ERR_ARG, "unknown dtype '%s' (expected f32, bf16, f16, u8, u16, i32 or i64)",
                   name);
}

const char *mt_device_name(mt_device d) {
    switch (d) {
    case MT_CPU:
        return "cpu";
    case MT_CUDA:
        return "cuda";
    default:
        return "?device";
    }
}

/* ---- views and shapes ------------------------------------------------------------------------ */

mt_tensor mt_tensor_view(void *data, mt_dtype dtype, mt_device device, int ndim,
                         const int64_t *shape) {
    mt_tensor t = {.data = data, .dtype = dtype, .device = device, .ndim = ndim};
    /* An out-of-range ndim is kept as is (ops reject it by name) but never indexes past shape[]. */
    for (int i = 0; i < ndim && i < MT_MAX_DIMS; i++) t.shape[i] = shape[i];
    return t;
}

mt_tensor mt_tensor_1d(void *data, mt_dtype dtype, mt_device device, int64_t d0) {
    return mt_tensor_view(data, dtype, device, 1, (int64_t[]){d0});
}

mt_tensor mt_tensor_2d(void *data, mt_dtype dtype, mt_device device, int64_t d0, int64_t d1) {
    return mt_tensor_view(data, dtype, device, 2, (int64_t[]){d0, d1});
}

mt_tensor mt_tensor_3d(void *data, mt_dtype dtype, mt_device device, int64_t d0, int64_t d1,
                       int64_t d2) {
    return mt_tensor_view(data, dtype, device, 3, (int64_t[]){d0, d1, d2});
}

mt_tensor mt_tensor_4d(void *data, mt_dtype dtype, mt_device device, int64_t d0, int64_t d1,
                       int64_t d2, int64_t d3) {
    return mt_tensor_view(data, dtype, device, 4, (int64_t[]){d0, d1, d2, d3});
}

/* 0 for a malformed tensor (bad ndim, negative dim), so that sizes never go negative. */
int64_t mt_tensor_numel(const mt_tensor *t) {
    if (t->ndim < 0 || t->ndim > MT_MAX_DIMS) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) return 0;
        n *= t->shape[i];
    }
    return n;
}

size_t mt_tensor_bytes(const mt_tensor *t) {
    return (size_t)mt_tensor_numel(t) * mt_dtype_size(t->dtype);
}

bool mt_tensor_same_shape(const mt_tensor *a, const mt_tensor *b) {
    if (a->ndim != b->ndim || a->ndim < 0 || a->ndim > MT_MAX_DIMS) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *mt_tensor_describe(const mt_tensor *t, char *buf, size_t n) {
    if (!buf || n == 0) return buf;
    if (!t) {
        snprintf(buf, n, "(null tensor)");
        return buf;
    }
    size_t len = 0;
#define MT_PUT(...)                                                                                \
    do {                                                                                           \
        int w_ = snprintf(buf + len, n - len, __VA_ARGS__);                                        \
        if (w_ < 0 || (size_t)w_ >= n - len) return buf; /* truncated, still terminated */         \
        len += (size_t)w_;                                                                         \
    } while (0)
    if (t->ndim < 0 || t->ndim > MT_MAX_DIMS) {
        MT_PUT("[ndim %d?]", t->ndim);
    } else {
        MT_PUT("[");
        for (int i = 0; i < t->ndim; i++) MT_PUT(i ? ",%" PRId64 : "%" PRId64, t->shape[i]);
        MT_PUT("]");
    }
    MT_PUT(" %s %s", mt_dtype_name(t->dtype), mt_device_name(t->device));
#undef MT_PUT
    return buf;
}

mt_status mt_tensor_reshape(const mt_tensor *t, int ndim, const int64_t *shape, mt_tensor *out) {
    char d[96];
    if (ndim < 0 || ndim > MT_MAX_DIMS)
        return mt_fail(MT_ERR_SHAPE, "reshape %s: expected 0..%d dims, found %d",
                       mt_tensor_describe(t, d, sizeof d), MT_MAX_DIMS, ndim);
    /* One dim may be -1: it takes whatever the others leave. */
    int64_t known = 1, n = mt_tensor_numel(t);
    int infer = -1;
    int64_t dims[MT_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        dims[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] < 0) {
            return mt_fail(MT_ERR_SHAPE, "reshape %s: dim %d is %" PRId64 " (only one -1 allowed)",
                           mt_tensor_describe(t, d, sizeof d), i, shape[i]);
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || n % known != 0)
            return mt_fail(MT_ERR_SHAPE,
                           "reshape %s: %" PRId64 " elements do not divide into %" PRId64,
                           mt_tensor_describe(t, d, sizeof d), n, known);
        dims[infer] = n / known;
        known = n;
    }
    if (known != n) {
        mt_tensor want = mt_tensor_view(NULL, t->dtype, t->device, ndim, dims);
        char w[96];
        return mt_fail(
            MT_ERR_SHAPE, "reshape %s to %s: element counts differ (%" PRId64 " vs %" PRId64 ")",
            mt_tensor_describe(t, d, sizeof d), mt_tensor_describe(&want, w, sizeof w), n, known);
    }
    *out = mt_tensor_view(t->data, t->dtype, t->device, ndim, dims);
    return MT_OK;
}

/* ---- f16 ------------------------------------------------------------------------------------- */

/* IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Round to nearest even; values
 * from 65520 up become infinity; NaN stays a quiet NaN with the top payload bits kept. */
uint16_t mt_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: overflow to inf */
    if (a >= 0x38800000u) {                                  /* normal: >= 2^-14 */
        /* Rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a carry
         * out of the mantissa correctly bumps the exponent. */
        uint32_t r = a - 0x38000000u;
        r += 0x0fffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a <= 0x33000000u) return sign; /* <= 2^-25 rounds to (signed) zero */
    /* Subnormal: value = m * 2^(e-150) with the implicit bit; in units of 2^-24 that is
     * m >> (126 - e), rounded to nearest even. */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 here */
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

float mt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        float f = (float)man * 0x1p-24f; /* zero or subnormal, exact */
        memcpy(&u, &f, 4);
        u |= sign;
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u); /* inf, or quiet NaN */
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- contexts -------------------------------------------------------------------------------- */

bool mt_backend_available(mt_device d) {
    switch (d) {
    case MT_CPU:
        return true;
    case MT_CUDA:
#ifdef MEDTRAIN_HAVE_CUDA
        return mt_cuda_device_present();
#else
        return false;
#endif
    default:
        return false;
    }
}

mt_status mt_ctx_init(mt_ctx *ctx, mt_device d, int device_index, int threads) {
    memset(ctx, 0, sizeof *ctx);
    const mt_backend *b = mt_backend_for(d);
    if (!b) {
        if (d == MT_CUDA)
            return mt_fail(MT_ERR_UNSUPPORTED,
                           "the cuda backend is not compiled into this build "
                           "(configure with -DMEDTRAIN_CUDA=ON on a machine with nvcc)");
        return mt_fail(MT_ERR_ARG, "unknown device %d", (int)d);
    }
    ctx->backend = b;
    ctx->device = d;
    ctx->device_index = device_index;
    ctx->threads = threads > 0 ? threads : omp_get_max_threads();
    if (ctx->threads < 1) ctx->threads = 1;
    mt_status s = b->ctx_init(ctx);
    if (s != MT_OK) {
        ctx->backend = NULL;
        return mt_error_wrap(s, "starting the %s backend: ", b->name);
    }
    return MT_OK;
}

void mt_ctx_free(mt_ctx *ctx) {
    if (!ctx || !ctx->backend) return;
    ctx->backend->ctx_free(ctx);
    memset(ctx, 0, sizeof *ctx);
}

mt_status mt_ctx_sync(mt_ctx *ctx) {
    if (!ctx || !ctx->backend) return mt_fail(MT_ERR_ARG, "sync: context is not initialised");
    return ctx->backend->sync(ctx);
}

/* ---- memory ---------------------------------------------------------------------------------- */

mt_status mt_tensor_alloc(mt_ctx *ctx, mt_tensor *t, mt_dtype dtype, int ndim,
                          const int64_t *shape) {
    memset(t, 0, sizeof *t);
    if (!ctx || !ctx->backend)
        return mt_fail(MT_ERR_ARG, "tensor alloc: context is not initialised");
    if (!dtype_valid(dtype))
        return mt_fail(MT_ERR_ARG, "tensor alloc: unknown dtype %d", (int)dtype);
    if (ndim < 0 || ndim > MT_MAX_DIMS)
        return mt_fail(MT_ERR_SHAPE, "tensor alloc: expected 0..%d dims, found %d", MT_MAX_DIMS,
                       ndim);
    mt_tensor want = mt_tensor_view(NULL, dtype, ctx->device, ndim, shape);
    char d[96];
    /* Overflow-checked element count: a size_t product must not wrap. */
    size_t bytes = mt_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return mt_fail(MT_ERR_SHAPE, "tensor alloc %s: negative dim",
                           mt_tensor_describe(&want, d, sizeof d));
        if (shape[i] > 0 && bytes > SIZE_MAX / (size_t)shape[i])
            return mt_fail(MT_ERR_NOMEM, "tensor alloc %s: size overflows",
                           mt_tensor_describe(&want, d, sizeof d));
        bytes *= (size_t)shape[i];
    }
    /* Empty tensors still get a (small) buffer so that "no data" always means a bug. */
    void *p = ctx->backend->alloc(ctx, bytes ? bytes : 64);
    if (!p)
        return mt_error_wrap(MT_ERR_NOMEM,
                             "tensor alloc %s: ", mt_tensor_describe(&want, d, sizeof d));
    *t = want;
    t->data = p;
    return MT_OK;
}

void mt_tensor_free(mt_ctx *ctx, mt_tensor *t) {
    if (!t || !t->data) return;
    if (ctx && ctx->backend) ctx->backend->free(ctx, t->data);
    t->data = NULL;
}

mt_status mt_tensor_copy(mt_ctx *ctx, mt_tensor *dst, const mt_tensor *src) {
    if (!ctx || !ctx->backend)
        return mt_fail(MT_ERR_ARG, "tensor copy: context is not initialised");
    if (!dst || !src) return mt_fail(MT_ERR_ARG, "tensor copy: %s is NULL", dst ? "src" : "dst");
    char ds[96], ss[96];
    mt_tensor_describe(dst, ds, sizeof ds);
    mt_tensor_describe(src, ss, sizeof ss);
    if (dst->dtype != src->dtype || mt_tensor_numel(dst) != mt_tensor_numel(src))
        return mt_fail(MT_ERR_SHAPE, "tensor copy %s -> %s: dtype and element count must match", ss,
                       ds);
    /* A context reaches host memory and its own device, nothing else. */
    for (int i = 0; i < 2; i++) {
        mt_device dev = i ? src->device : dst->device;
        if (dev != MT_CPU && dev != ctx->device)
            return mt_fail(MT_ERR_SHAPE,
                           "tensor copy %s -> %s: a %s context cannot reach %s memory", ss, ds,
                           mt_device_name(ctx->device), mt_device_name(dev));
    }
    size_t bytes = mt_tensor_bytes(src);
    if (bytes == 0 || dst->data == src->data) return MT_OK;
    if (!dst->data || !src->data)
        return mt_fail(MT_ERR_ARG, "tensor copy %s -> %s: %s has no data", ss, ds,
                       dst->data ? "src" : "dst");
    return ctx->backend->copy(ctx, dst->data, dst->device, src->data, src->device, bytes);
}

mt_status mt_tensor_zero(mt_ctx *ctx, mt_tensor *t) {
    if (!ctx || !ctx->backend)
        return mt_fail(MT_ERR_ARG, "tensor zero: context is not initialised");
    if (!t) return mt_fail(MT_ERR_ARG, "tensor zero: tensor is NULL");
    char d[96];
    if (t->device != ctx->device)
        return mt_fail(MT_ERR_SHAPE, "tensor zero %s: the context runs on %s",
                       mt_tensor_describe(t, d, sizeof d), mt_device_name(ctx->device));
    size_t bytes = mt_tensor_bytes(t);
    if (bytes == 0) return MT_OK;
    if (!t->data)
        return mt_fail(MT_ERR_ARG, "tensor zero %s: no data", mt_tensor_describe(t, d, sizeof d));
    return ctx->backend->zero(ctx, t->data, bytes);
}
