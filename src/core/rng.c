/* Philox 4x32-10 and the (seed, stream, index) streams built on it. */
#include "medtrain/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void mt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* The key mixes seed and stream through one Philox block, so that nearby seeds and streams give
 * unrelated keys; the counter holds the index in its upper half and a block count in its lower. */
void mt_rng_init(mt_rng *r, uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t ctr[4] = {(uint32_t)stream, (uint32_t)(stream >> 32), 0x6d74726eu /* "mtrn" */, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, out[4];
    mt_philox4x32_10(ctr, key, out);
    r->key[0] = out[0];
    r->key[1] = out[1];
    r->ctr[0] = 0;
    r->ctr[1] = 0;
    r->ctr[2] = (uint32_t)index;
    r->ctr[3] = (uint32_t)(index >> 32);
    r->avail = 0;
}

uint32_t mt_rng_u32(mt_rng *r) {
    if (r->avail == 0) {
        mt_philox4x32_10(r->ctr, r->key, r->buf);
        if (++r->ctr[0] == 0) ++r->ctr[1];
        r->avail = 4;
    }
    return r->buf[4 - r->avail--];
}

uint64_t mt_rng_u64(mt_rng *r) {
    uint64_t hi = mt_rng_u32(r);
    return hi << 32 | mt_rng_u32(r);
}

float mt_rng_uniform(mt_rng *r) {
    return (float)(mt_rng_u32(r) >> 8) * 0x1.0p-24f;
}

double mt_rng_uniform_f64(mt_rng *r) {
    return (double)(mt_rng_u64(r) >> 11) * 0x1.0p-53;
}

float mt_rng_normal(mt_rng *r) {
    /* Box-Muller on (0,1] x [0,1); one of the pair is used so the stream position stays simple. */
    double u1 = 1.0 - mt_rng_uniform_f64(r), u2 = mt_rng_uniform_f64(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint32_t mt_rng_below(mt_rng *r, uint32_t n) {
    /* Lemire's multiply-shift with rejection: unbiased for every n. */
    uint64_t m = (uint64_t)mt_rng_u32(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)-n % n;
        while (low < threshold) {
            m = (uint64_t)mt_rng_u32(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void mt_rng_shuffle_i64(mt_rng *r, int64_t *idx, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (i + 1) <= UINT32_MAX ? (int64_t)mt_rng_below(r, (uint32_t)(i + 1))
                                          : (int64_t)(mt_rng_u64(r) % (uint64_t)(i + 1));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
