/* Backend lookup and the op registry.
 *
 * The registry is a table of {name, offset of the op's entry in mt_backend}, so a name can only
 * refer to a real field (offsetof will not compile otherwise) and a static assertion below checks
 * that every op field of the struct has exactly one row. A backend "supports" an op when its entry
 * is non-NULL; tests and `medtrain doctor` list the gaps.
 *
 * After those come the composed ops, which ops.c runs as a sequence of other entries and which
 * have none of their own: each lists the entries it runs, and is supported where all of them
 * are. Registry indices count the entry ops first, then the composed ones. */
#include <stddef.h>
#include <string.h>
#include "backend.h"

typedef struct mt_op_entry {
    const char *name;
    size_t offset;
} mt_op_entry;

#define MT_OP(field)                                                                               \
    { #field, offsetof(mt_backend, field) }

/* In the order of the fields of mt_backend, from gemm to the end of the struct. */
static const mt_op_entry MT_OP_TABLE[] = {
    MT_OP(gemm),
    MT_OP(axpy),
    MT_OP(scale),
    MT_OP(add),
    MT_OP(mul),
    MT_OP(reduce),
    MT_OP(act_fwd),
    MT_OP(act_bwd),
    MT_OP(softmax_fwd),
    MT_OP(softmax_bwd),
    MT_OP(cross_entropy_fwd),
    MT_OP(cross_entropy_bwd),
    MT_OP(bce_logits_fwd),
    MT_OP(bce_logits_bwd),
    MT_OP(dice_sums),
    MT_OP(dice_bwd),
    MT_OP(embedding_fwd),
    MT_OP(embedding_bwd),
    MT_OP(cast),
    MT_OP(conv2d_fwd),
    MT_OP(conv2d_bwd_data),
    MT_OP(conv2d_bwd_filter),
    MT_OP(bias_add),
    MT_OP(bias_grad),
    MT_OP(bn_stats),
    MT_OP(bn_fwd),
    MT_OP(bn_bwd_reduce),
    MT_OP(bn_bwd),
    MT_OP(maxpool2d_fwd),
    MT_OP(maxpool2d_bwd),
    MT_OP(avgpool2d_fwd),
    MT_OP(avgpool2d_bwd),
    MT_OP(upsample2d_fwd),
    MT_OP(upsample2d_bwd),
    MT_OP(dropout_fwd),
    MT_OP(dropout_bwd),
    MT_OP(channels_put),
    MT_OP(channels_get),
    MT_OP(rmsnorm_fwd),
    MT_OP(rmsnorm_bwd),
    MT_OP(rope),
    MT_OP(attention_fwd),
    MT_OP(attention_bwd),
    MT_OP(swiglu_fwd),
    MT_OP(swiglu_bwd),
    MT_OP(sgd_step),
    MT_OP(adamw_step),
    MT_OP(sumsq),
};

#define MT_ENTRY_OPS ((int)(sizeof MT_OP_TABLE / sizeof MT_OP_TABLE[0]))

#define MT_COMPOSED_MAX 2 /* entries a composed op runs, at most */

typedef struct mt_composed_entry {
    const char *name;
    int n;
    size_t needs[MT_COMPOSED_MAX]; /* offsets of the entries it runs */
} mt_composed_entry;

#define MT_NEEDS(field) offsetof(mt_backend, field)

/* The transposed convolutions (ops.c): the adjoint convolution's passes plus the bias ops. */
static const mt_composed_entry MT_COMPOSED_TABLE[] = {
    {"conv_transpose2d_fwd", 2, {MT_NEEDS(conv2d_bwd_data), MT_NEEDS(bias_add)}},
    {"conv_transpose2d_bwd_data", 1, {MT_NEEDS(conv2d_fwd)}},
    {"conv_transpose2d_bwd_filter", 2, {MT_NEEDS(conv2d_bwd_filter), MT_NEEDS(bias_grad)}},
};

#define MT_OP_COUNT (MT_ENTRY_OPS + (int)(sizeof MT_COMPOSED_TABLE / sizeof MT_COMPOSED_TABLE[0]))

/* Every field from gemm on is one op pointer; a field added to the struct without a row here (or a
 * row dropped) changes one side of this equation. */
_Static_assert(sizeof(mt_backend) - offsetof(mt_backend, gemm) ==
                   sizeof MT_OP_TABLE / sizeof MT_OP_TABLE[0] * sizeof(void (*)(void)),
               "MT_OP_TABLE must have one row per op field of mt_backend (src/compute/backend.h)");

const mt_backend *mt_backend_for(mt_device d) {
    switch (d) {
    case MT_CPU:
        return &mt_cpu_backend;
#ifdef MEDTRAIN_HAVE_CUDA
    case MT_CUDA:
        return &mt_cuda_backend;
#endif
    default:
        return NULL;
    }
}

int mt_op_count(void) {
    return MT_OP_COUNT;
}

const char *mt_op_name(int i) {
    if (i < 0 || i >= MT_OP_COUNT) return NULL;
    return i < MT_ENTRY_OPS ? MT_OP_TABLE[i].name : MT_COMPOSED_TABLE[i - MT_ENTRY_OPS].name;
}

/* Whether b's entry at offset is set. All function pointers share one representation on the
 * platforms we build for; copy the entry's bytes rather than reading it through a pointer of
 * another function type. */
static bool has_entry(const mt_backend *b, size_t offset) {
    void (*fn)(void);
    memcpy(&fn, (const char *)b + offset, sizeof fn);
    return fn != NULL;
}

static bool supports_index(const mt_backend *b, int i) {
    if (i < MT_ENTRY_OPS) return has_entry(b, MT_OP_TABLE[i].offset);
    const mt_composed_entry *c = &MT_COMPOSED_TABLE[i - MT_ENTRY_OPS];
    for (int k = 0; k < c->n; k++)
        if (!has_entry(b, c->needs[k])) return false;
    return true;
}

bool mt_op_supported(mt_device d, int i) {
    const mt_backend *b = mt_backend_for(d);
    if (!b || i < 0 || i >= MT_OP_COUNT) return false;
    return supports_index(b, i);
}

bool mt_backend_supports(const mt_backend *b, const char *op) {
    for (int i = 0; b && op && i < MT_OP_COUNT; i++)
        if (strcmp(mt_op_name(i), op) == 0) return supports_index(b, i);
    return false;
}
