/* Counter-based random numbers: Philox 4x32-10 (Salmon et al., SC'11, as in Random123 and cuRAND).
 *
 * A stream is named by (seed, stream, index): the seed is the run's, the stream says what the
 * numbers are for (an epoch's permutation, augmentation of epoch E, dropout of step S), and the
 * index says for which item (a sample, a layer). The numbers depend on nothing else, so sample 17's
 * augmentation in epoch 3 is the same on 1 rank or 8, on any thread, on CPU or GPU. Streams are
 * cheap to create: make one per item rather than sharing one across items. */
#ifndef MEDTRAIN_RNG_H
#define MEDTRAIN_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One Philox 4x32 block: 10 rounds of (counter, key) -> 128 random bits. */
void mt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

typedef struct mt_rng {
    uint32_t key[2]; /* derived from (seed, stream) */
    uint32_t ctr[4]; /* ctr[0] counts blocks; ctr[2..3] hold the index */
    uint32_t buf[4]; /* the current block's outputs */
    int avail;       /* outputs of buf not yet used */
} mt_rng;

void mt_rng_init(mt_rng *r, uint64_t seed, uint64_t stream, uint64_t index);
uint32_t mt_rng_u32(mt_rng *r);
uint64_t mt_rng_u64(mt_rng *r);
float mt_rng_uniform(mt_rng *r);              /* [0, 1), 24 random bits */
double mt_rng_uniform_f64(mt_rng *r);         /* [0, 1), 53 random bits */
float mt_rng_normal(mt_rng *r);               /* mean 0, variance 1 (Box-Muller) */
uint32_t mt_rng_below(mt_rng *r, uint32_t n); /* uniform in [0, n), unbiased; n > 0 */
/* Fisher-Yates permutation of idx[0..n). */
void mt_rng_shuffle_i64(mt_rng *r, int64_t *idx, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
