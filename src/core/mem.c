/* Checked allocation (with a fault-injection hook for tests) and arenas. */
#include "medtrain/mem.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MT_ALIGN 64

static long fail_countdown = 0; /* > 0: the allocation that brings it to 0 fails */

void mt_alloc_fail_after(long n) {
    fail_countdown = n;
}

static bool injected_failure(void) {
    if (fail_countdown <= 0) return false;
    return --fail_countdown == 0;
}

static void *nomem(size_t bytes, const char *what) {
    mt_fail(MT_ERR_NOMEM, "out of memory allocating %zu bytes (%.1f MiB) for %s", bytes,
            (double)bytes / (1 << 20), what ? what : "(unnamed)");
    return NULL;
}

void *mt_alloc(size_t bytes, const char *what) {
    if (injected_failure()) return nomem(bytes, what);
    size_t rounded = (bytes + MT_ALIGN - 1) / MT_ALIGN * MT_ALIGN;
    if (rounded < bytes) return nomem(bytes, what);
    void *p = aligned_alloc(MT_ALIGN, rounded ? rounded : MT_ALIGN);
    return p ? p : nomem(bytes, what);
}

void *mt_calloc(size_t count, size_t size, const char *what) {
    if (size && count > SIZE_MAX / size) return nomem(SIZE_MAX, what);
    void *p = mt_alloc(count * size, what);
    if (p) memset(p, 0, count * size);
    return p;
}

void *mt_realloc(void *p, size_t count, size_t size, const char *what) {
    if (size && count > SIZE_MAX / size) return nomem(SIZE_MAX, what);
    if (injected_failure()) return nomem(count * size, what);
    size_t bytes = count * size;
    void *q = realloc(p, bytes ? bytes : 1);
    return q ? q : nomem(count * size, what);
}

char *mt_strdup(const char *s, const char *what) {
    size_t n = strlen(s) + 1;
    char *p = mt_alloc(n, what);
    if (p) memcpy(p, s, n);
    return p;
}

void mt_free(void *p) {
    free(p);
}

/* ---- arenas ------------------------------------------------------------------------------ */

struct mt_arena_block {
    mt_arena_block *next;
    char *base;
    size_t size, used;
};

static void *host_block_alloc(size_t bytes, void *user) {
    return mt_alloc(bytes, (const char *)user);
}
static void host_block_free(void *p, void *user) {
    mt_free(p);
}

void mt_arena_init_with(mt_arena *a, const char *name, size_t block_bytes, mt_arena_allocator al) {
    memset(a, 0, sizeof *a);
    a->name = name;
    a->block_bytes = block_bytes ? block_bytes : (1u << 20);
    a->alloc = al;
}

void mt_arena_init(mt_arena *a, const char *name, size_t block_bytes) {
    mt_arena_init_with(a, name, block_bytes,
                       (mt_arena_allocator){host_block_alloc, host_block_free, (void *)name});
}

/* Block headers live in host memory even when the block's memory is on a device. */
static mt_arena_block *new_block(mt_arena *a, size_t need) {
    size_t size = need > a->block_bytes ? need : a->block_bytes;
    mt_arena_block *b = mt_calloc(1, sizeof *b, "arena block header");
    if (!b) return NULL;
    b->base = a->alloc.alloc(size, a->alloc.user);
    if (!b->base) {
        mt_free(b);
        mt_error_wrap(MT_ERR_NOMEM, "arena '%s': ", a->name ? a->name : "?");
        return NULL;
    }
    b->size = size;
    return b;
}

void *mt_arena_alloc(mt_arena *a, size_t bytes) {
    size_t need = (bytes + MT_ALIGN - 1) / MT_ALIGN * MT_ALIGN;
    if (need < bytes) {
        mt_fail(MT_ERR_NOMEM, "arena '%s': request of %zu bytes overflows", a->name, bytes);
        return NULL;
    }
    /* Find room in the current block or a later, kept one; else append a new block. */
    mt_arena_block *b = a->cur ? a->cur : a->head;
    mt_arena_block *last = NULL;
    while (b && b->used + need > b->size) {
        last = b;
        b = b->next;
        if (b) b->used = 0;
    }
    if (!b) {
        b = new_block(a, need);
        if (!b) return NULL;
        if (last)
            last->next = b;
        else
            a->head = b;
    }
    /* Blocks skipped over above keep their offsets for rewind; their tails go unused. */
    void *p = b->base + b->used;
    b->used += need;
    a->cur = b;
    a->used_total += need;
    if (a->used_total > a->peak) a->peak = a->used_total;
    return p;
}

mt_arena_mark mt_arena_save(const mt_arena *a) {
    mt_arena_mark m = {a->cur, a->cur ? a->cur->used : 0, a->used_total};
    return m;
}

void mt_arena_rewind(mt_arena *a, mt_arena_mark m) {
    if (!m.block) {
        mt_arena_reset(a);
        return;
    }
    m.block->used = m.used;
    for (mt_arena_block *b = m.block->next; b; b = b->next) b->used = 0;
    a->cur = m.block;
    a->used_total = m.used_total;
}

void mt_arena_reset(mt_arena *a) {
    for (mt_arena_block *b = a->head; b; b = b->next) b->used = 0;
    a->cur = a->head;
    a->used_total = 0;
}

void mt_arena_free(mt_arena *a) {
    mt_arena_block *b = a->head;
    while (b) {
        mt_arena_block *next = b->next;
        a->alloc.free(b->base, a->alloc.user);
        mt_free(b);
        b = next;
    }
    a->head = a->cur = NULL;
    a->used_total = 0;
}
