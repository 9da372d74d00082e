/* Philox 4x32-10 against Random123's known-answer vectors, and the stream helpers. */
#include <stdlib.h>

#include "medtrain/rng.h"
#include "mt_test.h"

static void check_kat(const uint32_t ctr[4], const uint32_t key[2], const uint32_t want[4]) {
    uint32_t out[4];
    mt_philox4x32_10(ctr, key, out);
    for (int i = 0; i < 4; i++)
        MT_CHECK(out[i] == want[i], "word %d: %08x vs %08x", i, out[i], want[i]);
}

/* Vectors from Random123's kat_vectors (philox4x32 10 rounds). */
static void test_philox_known_answers(void) {
    check_kat((uint32_t[]){0, 0, 0, 0}, (uint32_t[]){0, 0},
              (uint32_t[]){0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    check_kat((uint32_t[]){0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
              (uint32_t[]){0xffffffff, 0xffffffff},
              (uint32_t[]){0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    check_kat((uint32_t[]){0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
              (uint32_t[]){0xa4093822, 0x299f31d0},
              (uint32_t[]){0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

static void test_streams_are_pure_functions_of_their_name(void) {
    mt_rng a, b, c;
    mt_rng_init(&a, 42, 3, 17);
    mt_rng_init(&b, 42, 3, 17);
    mt_rng_init(&c, 42, 3, 18);
    int same_c = 0;
    for (int i = 0; i < 100; i++) {
        uint32_t x = mt_rng_u32(&a), y = mt_rng_u32(&b), z = mt_rng_u32(&c);
        MT_CHECK(x == y);
        same_c += x == z;
    }
    MT_CHECK(same_c < 3, "neighbouring indices give unrelated numbers");
}

static void test_uniform_and_normal_moments(void) {
    mt_rng r;
    mt_rng_init(&r, 7, 0, 0);
    double s = 0, s2 = 0, n1 = 0, n2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        float u = mt_rng_uniform(&r);
        MT_CHECK(u >= 0.0f && u < 1.0f);
        s += u, s2 += (double)u * u;
        float g = mt_rng_normal(&r);
        n1 += g, n2 += (double)g * g;
    }
    MT_CHECK_NEAR(s / n, 0.5, 0.01);
    MT_CHECK_NEAR(s2 / n - (s / n) * (s / n), 1.0 / 12, 0.01);
    MT_CHECK_NEAR(n1 / n, 0.0, 0.01);
    MT_CHECK_NEAR(n2 / n, 1.0, 0.02);
}

static void test_below_and_shuffle(void) {
    mt_rng r;
    mt_rng_init(&r, 1, 2, 3);
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[mt_rng_below(&r, 7)]++;
    for (int i = 0; i < 7; i++)
        MT_CHECK(abs(counts[i] - 10000) < 500, "bucket %d: %d", i, counts[i]);
    int64_t idx[1000];
    for (int i = 0; i < 1000; i++) idx[i] = i;
    mt_rng_shuffle_i64(&r, idx, 1000);
    int seen[1000] = {0}, moved = 0;
    for (int i = 0; i < 1000; i++) seen[idx[i]]++, moved += idx[i] != i;
    for (int i = 0; i < 1000; i++) MT_CHECK(seen[i] == 1);
    MT_CHECK(moved > 900);
}

int main(void) {
    MT_RUN(test_philox_known_answers);
    MT_RUN(test_streams_are_pure_functions_of_their_name);
    MT_RUN(test_uniform_and_normal_moments);
    MT_RUN(test_below_and_shuffle);
    return mt_test_summary();
}
