/* Random numbers do not depend on the rank count: with the stream named by (seed, epoch, sample),
 * ranks that each draw for their strided shard of the samples together produce exactly what one
 * process draws for all of them, and an epoch's shuffle is the same permutation on every rank.
 * Runs under mpiexec -n 2; any world size works. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/comm.h"
#include "medtrain/rng.h"
#include "mt_test.h"

static mt_comm *comm;
static int rank, world;

#define SEED    20240611u
#define EPOCH   3u
#define SAMPLES 1001 /* not a multiple of the world size */

/* What one sample draws for its augmentation: a mix of every kind of output. */
typedef struct draw {
    uint32_t u32[2];
    uint64_t u64;
    float uniform, normal;
    double uniform64;
    uint32_t below;
    uint32_t pad;
} draw;

static draw draw_for(uint64_t epoch, uint64_t sample) {
    mt_rng r;
    mt_rng_init(&r, SEED, epoch, sample);
    draw d = {0};
    d.u32[0] = mt_rng_u32(&r);
    d.u32[1] = mt_rng_u32(&r);
    d.u64 = mt_rng_u64(&r);
    d.uniform = mt_rng_uniform(&r);
    d.normal = mt_rng_normal(&r);
    d.uniform64 = mt_rng_uniform_f64(&r);
    d.below = mt_rng_below(&r, 1000);
    return d;
}

static bool same_draw(const draw *a, const draw *b) {
    return memcmp(a, b, sizeof *a) == 0;
}

static void test_sharded_draws(void) {
    /* My shard: samples rank, rank + world, ...; slot j holds sample rank + j * world. */
    size_t per = (SAMPLES + (size_t)world - 1) / (size_t)world;
    draw *mine = calloc(per, sizeof *mine), *all = calloc(per * (size_t)world, sizeof *all);
    for (size_t j = 0, i = (size_t)rank; i < SAMPLES; j++, i += (size_t)world)
        mine[j] = draw_for(EPOCH, i);
    MT_CHECK_OK(mt_comm_allgather(comm, mine, all, per * sizeof *mine));

    /* The single-process reference: every sample drawn here, in order. */
    size_t bad = 0, same_as_previous = 0, same_in_other_epoch = 0;
    draw prev = {0};
    for (size_t i = 0; i < SAMPLES; i++) {
        draw want = draw_for(EPOCH, i);
        const draw *got = &all[(i % (size_t)world) * per + i / (size_t)world];
        bad += !same_draw(got, &want);
        same_as_previous += i > 0 && want.u32[0] == prev.u32[0];
        draw other = draw_for(EPOCH + 1, i);
        same_in_other_epoch += other.u32[0] == want.u32[0];
        MT_CHECK(want.uniform >= 0 && want.uniform < 1 && want.below < 1000);
        prev = want;
    }
    MT_CHECK(bad == 0, "%zu of %d samples drew differently on %d ranks", bad, SAMPLES, world);
    /* Not vacuous: the draws differ between samples and between epochs. */
    MT_CHECK(same_as_previous == 0, "%zu samples repeat the previous one", same_as_previous);
    MT_CHECK(same_in_other_epoch == 0, "%zu samples ignore the epoch", same_in_other_epoch);
    free(mine);
    free(all);
}

static void epoch_permutation(int64_t *perm, uint64_t epoch) {
    for (int64_t i = 0; i < SAMPLES; i++) perm[i] = i;
    mt_rng r;
    mt_rng_init(&r, SEED, epoch, UINT64_MAX); /* one stream per epoch, for the shuffle */
    mt_rng_shuffle_i64(&r, perm, SAMPLES);
}

static void test_shuffle_same_on_every_rank(void) {
    int64_t *perm = malloc(SAMPLES * sizeof *perm), *all = malloc(SAMPLES * sizeof *perm * world);
    epoch_permutation(perm, EPOCH);
    MT_CHECK_OK(mt_comm_allgather(comm, perm, all, SAMPLES * sizeof *perm));
    for (int r = 0; r < world; r++)
        MT_CHECK(memcmp(all + (size_t)r * SAMPLES, perm, SAMPLES * sizeof *perm) == 0,
                 "rank %d shuffled differently", r);

    /* A permutation, not the identity, and a different one next epoch. */
    char *seen = calloc(SAMPLES, 1);
    int64_t fixed = 0, bad = 0;
    for (int64_t i = 0; i < SAMPLES; i++) {
        if (perm[i] < 0 || perm[i] >= SAMPLES || seen[perm[i]]++) bad++;
        fixed += perm[i] == i;
    }
    MT_CHECK(bad == 0, "%lld entries repeat or fall outside", (long long)bad);
    MT_CHECK(fixed < 20, "%lld fixed points: barely shuffled", (long long)fixed);
    int64_t *next = malloc(SAMPLES * sizeof *next);
    epoch_permutation(next, EPOCH + 1);
    MT_CHECK(memcmp(next, perm, SAMPLES * sizeof *perm) != 0);

    /* Each rank takes perm[rank::world]; together the shards hold every sample once. */
    memset(seen, 0, SAMPLES);
    for (int r = 0; r < world; r++)
        for (int64_t i = r; i < SAMPLES; i += world) seen[all[(size_t)r * SAMPLES + i]]++;
    int64_t not_once = 0;
    for (int64_t i = 0; i < SAMPLES; i++) not_once += seen[i] != 1;
    MT_CHECK(not_once == 0, "%lld samples not in exactly one shard", (long long)not_once);
    free(next);
    free(seen);
    free(perm);
    free(all);
}

int main(int argc, char **argv) {
    if (mt_comm_init(&argc, &argv, &comm) != MT_OK) {
        fprintf(stderr, "mt_comm_init: %s\n", mt_error_message());
        return 1;
    }
    rank = mt_comm_rank(comm);
    world = mt_comm_world(comm);
    MT_RUN(test_sharded_draws);
    MT_RUN(test_shuffle_same_on_every_rank);

    int64_t failed = mt_test_summary(); /* every rank's result decides every rank's exit code */
    if (mt_comm_allreduce_i64(comm, &failed, 1, MT_COMM_SUM) != MT_OK) failed = 1;
    if (failed && rank == 0) printf("FAIL: %lld rank(s) had failed tests\n", (long long)failed);
    mt_comm_finalize(comm);
    return failed ? 1 : 0;
}
