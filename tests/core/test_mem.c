/* Checked allocation, fault injection and arenas. */
#include <stdint.h>
#include <string.h>

#include "medtrain/mem.h"
#include "mt_test.h"

static void test_alloc_aligned_and_named_failure(void) {
    void *p = mt_alloc(100, "test buffer");
    MT_CHECK(p && ((uintptr_t)p % 64) == 0);
    mt_free(p);
    mt_alloc_fail_after(1);
    mt_error_clear();
    MT_CHECK(mt_alloc(1000, "gradient buffer") == NULL);
    MT_CHECK(strstr(mt_error_message(), "gradient buffer") &&
                 strstr(mt_error_message(), "1000 bytes"),
             "%s", mt_error_message());
    /* The hook fires once. */
    p = mt_alloc(10, "x");
    MT_CHECK(p != NULL);
    mt_free(p);
}

static void test_calloc_overflow(void) {
    MT_CHECK(mt_calloc(SIZE_MAX / 2, 4, "huge table") == NULL);
    MT_CHECK(strstr(mt_error_message(), "huge table") != NULL);
    int *z = mt_calloc(10, sizeof(int), "zeros");
    int sum = 0;
    for (int i = 0; i < 10; i++) sum += z[i];
    MT_CHECK(sum == 0);
    mt_free(z);
}

static void test_strdup_realloc(void) {
    char *s = mt_strdup("hello", "s");
    MT_CHECK(strcmp(s, "hello") == 0);
    s = mt_realloc(s, 100, 1, "s");
    MT_CHECK(s && strcmp(s, "hello") == 0);
    mt_free(s);
}

static void test_arena_alloc_rewind_reuse(void) {
    mt_arena a;
    mt_arena_init(&a, "activations", 1024);
    char *p1 = mt_arena_alloc(&a, 100);
    MT_CHECK(p1 && ((uintptr_t)p1 % 64) == 0);
    memset(p1, 1, 100);
    mt_arena_mark m = mt_arena_save(&a);
    char *p2 = mt_arena_alloc(&a, 900);  /* does not fit after p1: a second block */
    char *p3 = mt_arena_alloc(&a, 5000); /* larger than a block: its own block */
    MT_CHECK(p2 && p3 && p2 != p1);
    memset(p2, 2, 900);
    memset(p3, 3, 5000);
    MT_CHECK(a.used_total >= 100 + 900 + 5000);
    size_t peak = a.peak;
    mt_arena_rewind(&a, m);
    MT_CHECK(p1[99] == 1);
    char *p4 = mt_arena_alloc(&a, 900);
    MT_CHECK(p4 == p2, "kept blocks are reused after a rewind");
    mt_arena_reset(&a);
    MT_CHECK(a.used_total == 0 && a.peak == peak);
    char *p5 = mt_arena_alloc(&a, 64);
    MT_CHECK(p5 == p1);
    mt_arena_free(&a);
}

static void test_arena_failure_names_arena(void) {
    mt_arena a;
    mt_arena_init(&a, "scratch", 1 << 10);
    mt_alloc_fail_after(2); /* the header allocation succeeds, the block fails */
    MT_CHECK(mt_arena_alloc(&a, 10) == NULL);
    MT_CHECK(strstr(mt_error_message(), "scratch") != NULL, "%s", mt_error_message());
    MT_CHECK(mt_arena_alloc(&a, 10) != NULL);
    mt_arena_free(&a);
}

int main(void) {
    MT_RUN(test_alloc_aligned_and_named_failure);
    MT_RUN(test_calloc_overflow);
    MT_RUN(test_strdup_realloc);
    MT_RUN(test_arena_alloc_rewind_reuse);
    MT_RUN(test_arena_failure_names_arena);
    return mt_test_summary();
}
