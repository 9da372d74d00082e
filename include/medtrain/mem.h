/* Checked allocation and arenas.
 *
 * mt_alloc and friends return NULL and set an error message naming what was being allocated and how
 * many bytes, so that "out of memory" says which buffer. Sizes are overflow-checked.
 *
 * An arena hands out 64-byte-aligned pieces of large blocks and frees them all at once: per-step
 * activations, op scratch. Pieces stay valid until rewound past; blocks are kept for reuse. The
 * block allocator is pluggable so the CUDA backend can make device-memory arenas. */
#ifndef MEDTRAIN_MEM_H
#define MEDTRAIN_MEM_H

#include <stddef.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

void *mt_alloc(size_t bytes, const char *what);               /* uninitialised, 64-aligned */
void *mt_calloc(size_t count, size_t size, const char *what); /* zeroed, 64-aligned */
void *mt_realloc(void *p, size_t count, size_t size, const char *what); /* malloc-aligned only */
char *mt_strdup(const char *s, const char *what);
void mt_free(void *p);

/* Test hook (SQLite-style fault injection): the n-th allocation from now fails (0 = never). */
void mt_alloc_fail_after(long n);

typedef struct mt_arena_block mt_arena_block;

typedef struct mt_arena_allocator {
    void *(*alloc)(size_t bytes, void *user); /* NULL on failure (the allocator sets the message) */
    void (*free)(void *p, void *user);
    void *user;
} mt_arena_allocator;

typedef struct mt_arena {
    const char *name;           /* for error messages: "activations", "cuda scratch" */
    size_t block_bytes;         /* minimum size of a new block */
    mt_arena_allocator alloc;   /* host memory unless mt_arena_init_with() says otherwise */
    mt_arena_block *head, *cur; /* block list; cur is where allocation happens */
    size_t used_total, peak;    /* bytes handed out now, and the most ever */
} mt_arena;

typedef struct mt_arena_mark {
    mt_arena_block *block;
    size_t used, used_total;
} mt_arena_mark;

void mt_arena_init(mt_arena *a, const char *name, size_t block_bytes);
void mt_arena_init_with(mt_arena *a, const char *name, size_t block_bytes, mt_arena_allocator al);
void *mt_arena_alloc(mt_arena *a, size_t bytes); /* NULL + message when memory runs out */
mt_arena_mark mt_arena_save(const mt_arena *a);
void mt_arena_rewind(mt_arena *a, mt_arena_mark m); /* everything allocated after m is released */
void mt_arena_reset(mt_arena *a);                   /* everything is released, blocks are kept */
void mt_arena_free(mt_arena *a);                    /* blocks go back to the allocator */

#ifdef __cplusplus
}
#endif

#endif
