/* The communicator on 1 process (singleton, no mpirun) and on N ranks: identity, blocking and
 * non-blocking collectives, bucketed all-reduce (including the mistakes it must catch without
 * hanging the job), and agreeing on a failure.
 *
 * Registered three times: as a singleton, under mpiexec -n 2, and under mpiexec -n 2 with
 * MEDTRAIN_COMM_MAX_COUNT=1000 so that every collective here also goes through its chunked path
 * (the one that handles counts above INT_MAX). Every expected value is computed from the rank, so
 * the same checks hold for any world size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/comm.h"
#include "medtrain/mem.h"
#include "mt_test.h"

static mt_comm *comm;
static int rank, world;

/* ---- identity ---- */

#define HOST_BYTES 256

static void test_identity(void) {
    MT_CHECK(world >= 1);
    MT_CHECK(rank >= 0 && rank < world);
    MT_CHECK(mt_rank() == rank && mt_world() == world, "(status.h was told the rank)");
    int lw = mt_comm_local_world(comm), lr = mt_comm_local_rank(comm);
    MT_CHECK(lw >= 1 && lw <= world);
    MT_CHECK(lr >= 0 && lr < lw);
    MT_CHECK(mt_comm_mpi(comm) != NULL);
    const char *host = mt_comm_host(comm);
    MT_CHECK(host && *host && strlen(host) < HOST_BYTES);
    const char *version = mt_comm_library_version();
    MT_CHECK(*version && !strchr(version, '\n'), "version: %s", version);

    /* Everyone's host and local rank: the ranks sharing my host are local_world in number and
     * hold local ranks 0..local_world-1. */
    struct {
        char host[HOST_BYTES];
        int local_rank;
    } me = {.local_rank = lr}, *all = calloc((size_t)world, sizeof me);
    snprintf(me.host, sizeof me.host, "%s", host);
    MT_CHECK_OK(mt_comm_allgather(comm, &me, all, sizeof me));
    int same_host = 0, local_seen = 0;
    for (int r = 0; r < world; r++) {
        if (strcmp(all[r].host, host) != 0) continue;
        same_host++;
        if (all[r].local_rank >= 0 && all[r].local_rank < lw) local_seen |= 1 << all[r].local_rank;
    }
    MT_CHECK(same_host == lw, "%d ranks on %s, local world %d", same_host, host, lw);
    if (lw < 31) MT_CHECK(local_seen == (1 << lw) - 1, "local ranks seen: %#x", local_seen);
    MT_CHECK(strcmp(all[rank].host, host) == 0);
    free(all);
}

/* ---- blocking all-reduce ---- */

#define N 1003 /* above MEDTRAIN_COMM_MAX_COUNT in the chunked run */

static void test_allreduce_f32(void) {
    float *buf = malloc(N * sizeof *buf);
    for (mt_comm_op op = MT_COMM_SUM; op <= MT_COMM_AVG; op++) {
        for (int i = 0; i < N; i++) buf[i] = (float)(rank + 1) + 0.5f * (float)i;
        MT_CHECK_OK(mt_comm_allreduce_f32(comm, buf, N, op));
        int bad = 0;
        for (int i = 0; i < N; i++) {
            /* sum over r of (r + 1 + i/2) = w(w+1)/2 + w i/2 */
            double sum = world * (world + 1) / 2.0 + world * 0.5 * i;
            double want = op == MT_COMM_SUM ? sum : sum / world;
            bad += fabs(buf[i] - want) > 1e-6 * fmax(1.0, want);
        }
        MT_CHECK(bad == 0, "op %d: %d of %d elements wrong (buf[7] = %g)", (int)op, bad, N, buf[7]);
    }
    MT_CHECK_OK(mt_comm_allreduce_f32(comm, NULL, 0, MT_COMM_SUM));
    MT_CHECK_FAILS(mt_comm_allreduce_f32(comm, NULL, 5, MT_COMM_SUM), MT_ERR_ARG, "NULL");
    MT_CHECK_FAILS(mt_comm_allreduce_f32(comm, buf, N, (mt_comm_op)7), MT_ERR_ARG, "op 7");
    free(buf);
}

static void test_allreduce_f64(void) {
    double *buf = malloc(N * sizeof *buf);
    for (mt_comm_op op = MT_COMM_SUM; op <= MT_COMM_AVG; op++) {
        for (int i = 0; i < N; i++) buf[i] = 1e-3 * (rank + 1) * (i + 1);
        MT_CHECK_OK(mt_comm_allreduce_f64(comm, buf, N, op));
        int bad = 0;
        for (int i = 0; i < N; i++) {
            double sum = 1e-3 * (world * (world + 1) / 2.0) * (i + 1);
            double want = op == MT_COMM_SUM ? sum : sum / world;
            bad += fabs(buf[i] - want) > 1e-12 * fmax(1.0, want);
        }
        MT_CHECK(bad == 0, "op %d: %d of %d elements wrong", (int)op, bad, N);
    }
    free(buf);
}

static void test_allreduce_i64(void) {
    int64_t *buf = malloc(N * sizeof *buf);
    const int64_t big = INT64_C(1) << 40; /* would not survive a trip through 32 bits */
    for (mt_comm_op op = MT_COMM_SUM; op <= MT_COMM_AVG; op++) {
        for (int i = 0; i < N; i++) buf[i] = big * (i % 5) + rank + i;
        MT_CHECK_OK(mt_comm_allreduce_i64(comm, buf, N, op));
        int bad = 0;
        for (int i = 0; i < N; i++) {
            int64_t sum = world * (big * (i % 5) + i) + (int64_t)world * (world - 1) / 2;
            int64_t want = op == MT_COMM_SUM ? sum : sum / world; /* AVG rounds towards zero */
            bad += buf[i] != want;
        }
        MT_CHECK(bad == 0, "op %d: %d of %d elements wrong (buf[3] = %lld)", (int)op, bad, N,
                 (long long)buf[3]);
    }
    free(buf);
}

static void test_max_f64(void) {
    double *buf = malloc(N * sizeof *buf);
    for (int i = 0; i < N; i++) buf[i] = (i % 2 ? -1.0 : 1.0) * (rank + 1) * i;
    MT_CHECK_OK(mt_comm_max_f64(comm, buf, N));
    int bad = 0;
    for (int i = 0; i < N; i++) bad += buf[i] != (i % 2 ? -1.0 * i : (double)world * i);
    MT_CHECK(bad == 0, "%d of %d maxima wrong", bad, N);
    free(buf);
}

/* ---- broadcast, all-gather, barrier ---- */

static unsigned char pattern(int r, size_t i) {
    return (unsigned char)(r * 37 + i * 11 + 5);
}

static void check_broadcast_from(int root) {
    size_t bytes = 10007;
    unsigned char *buf = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) buf[i] = rank == root ? pattern(root, i) : 0xEE;
    MT_CHECK_OK(mt_comm_broadcast(comm, buf, bytes, root));
    size_t bad = 0;
    for (size_t i = 0; i < bytes; i++) bad += buf[i] != pattern(root, i);
    MT_CHECK(bad == 0, "root %d: %zu of %zu bytes differ", root, bad, bytes);
    free(buf);
}

static void test_broadcast(void) {
    if (world > 1) check_broadcast_from(1);
    check_broadcast_from(0);
    char c = 0;
    MT_CHECK_FAILS(mt_comm_broadcast(comm, &c, 1, world), MT_ERR_ARG, "root", "not a rank");
    MT_CHECK_FAILS(mt_comm_broadcast(comm, &c, 1, -1), MT_ERR_ARG, "root -1");
}

static void test_allgather(void) {
    size_t bytes = 2503;
    unsigned char *send = malloc(bytes), *recv = malloc(bytes * (size_t)world);
    for (size_t i = 0; i < bytes; i++) send[i] = pattern(rank, i);
    memset(recv, 0xEE, bytes * (size_t)world);
    MT_CHECK_OK(mt_comm_allgather(comm, send, recv, bytes));
    size_t bad = 0;
    for (int r = 0; r < world; r++)
        for (size_t i = 0; i < bytes; i++) bad += recv[(size_t)r * bytes + i] != pattern(r, i);
    MT_CHECK(bad == 0, "%zu of %zu bytes differ", bad, bytes * (size_t)world);

    /* In place: my part already sits in my slot of recv. */
    memset(recv, 0xEE, bytes * (size_t)world);
    memcpy(recv + (size_t)rank * bytes, send, bytes);
    MT_CHECK_OK(mt_comm_allgather(comm, recv + (size_t)rank * bytes, recv, bytes));
    bad = 0;
    for (int r = 0; r < world; r++)
        for (size_t i = 0; i < bytes; i++) bad += recv[(size_t)r * bytes + i] != pattern(r, i);
    MT_CHECK(bad == 0, "in place: %zu of %zu bytes differ", bad, bytes * (size_t)world);
    free(send);
    free(recv);
}

/* Keyed rows: rank r has 5 rows of 3 doubles, keyed 100r + i; rows with odd i are padding
 * (key -1). Every rank gets the real rows of rank 0, 1, ... in order. */
static void test_allgather_rows(void) {
    enum { ROWS = 5, W = 3 };
    double mine[ROWS][W];
    int64_t keys[ROWS];
    for (int i = 0; i < ROWS; i++) {
        keys[i] = i % 2 ? -1 : 100 * rank + i;
        for (int j = 0; j < W; j++) mine[i][j] = rank * 1000 + i * 10 + j;
    }
    void *out = NULL;
    int64_t *out_keys = NULL, n = -1;
    MT_CHECK_OK(
        mt_comm_allgather_rows(comm, mine, keys, ROWS, sizeof mine[0], &out, &out_keys, &n));
    MT_CHECK(n == 3 * (int64_t)world, "%lld rows", (long long)n);
    const double *rows = out;
    int64_t k = 0, bad = 0;
    for (int r = 0; r < world; r++)
        for (int i = 0; i < ROWS; i += 2, k++) {
            bad += out_keys[k] != 100 * r + i;
            for (int j = 0; j < W; j++) bad += rows[k * W + j] != r * 1000 + i * 10 + j;
        }
    MT_CHECK(bad == 0, "%lld values or keys differ", (long long)bad);
    mt_free(out), mt_free(out_keys);
    /* no rows at all */
    MT_CHECK_OK(mt_comm_allgather_rows(comm, mine, keys, 0, sizeof mine[0], &out, &out_keys, &n));
    MT_CHECK(n == 0);
    mt_free(out), mt_free(out_keys);
}

static void test_barrier(void) {
    MT_CHECK_OK(mt_comm_barrier(comm));
    MT_CHECK_OK(mt_comm_barrier(comm));
}

/* ---- non-blocking all-reduce ---- */

static void test_async(void) {
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    for (int i = 0; i < N; i++) a[i] = (float)(rank + i), b[i] = (float)(2 * rank + 1);
    mt_comm_request *ra = NULL, *rb = NULL;
    MT_CHECK_OK(mt_comm_allreduce_start(comm, a, N, MT_COMM_SUM, &ra));
    MT_CHECK_OK(mt_comm_allreduce_start(comm, b, N, MT_COMM_AVG, &rb));
    bool done = false;
    for (long spins = 0; !done && spins < 100000000L; spins++) MT_CHECK_OK(mt_comm_test(ra, &done));
    MT_CHECK(done, "(the first all-reduce never completed)");
    MT_CHECK_OK(mt_comm_test(ra, &done)); /* testing a completed request again is harmless */
    MT_CHECK(done);
    MT_CHECK_OK(mt_comm_wait(ra));
    MT_CHECK_OK(mt_comm_wait(rb));
    int bad = 0;
    for (int i = 0; i < N; i++) {
        bad += a[i] != (float)(world * (world - 1) / 2 + world * i);
        bad += b[i] != (float)world; /* mean of 2r + 1 over r < w is w */
    }
    MT_CHECK(bad == 0, "%d wrong elements (a[1] = %g, b[1] = %g)", bad, a[1], b[1]);

    mt_comm_request *rz = NULL;
    MT_CHECK_OK(mt_comm_allreduce_start(comm, a, 0, MT_COMM_SUM, &rz));
    MT_CHECK_OK(mt_comm_wait(rz));
    MT_CHECK_FAILS(mt_comm_wait(NULL), MT_ERR_ARG, "NULL");
    free(a);
    free(b);
}

/* ---- buckets ---- */

#define BN       1000003      /* elements: 10 full buckets and a short one of 3 */
#define BUCKET_B (100000 * 4) /* bytes per bucket */
static const size_t chunk_sizes[] = {7, 1001, 12345, 3, 99991, 55555, 1}; /* odd marking steps */

static void fill_grads(float *g, int step) {
    for (size_t i = 0; i < BN; i++)
        g[i] = (float)((i * 7 + (size_t)step) % 1000) * 0.001f + (float)rank;
}

/* Marks the whole buffer in odd-sized chunks, from the end (as backward does) or the start. */
static mt_status mark_all(mt_comm_buckets *b, bool from_end, size_t skip_begin, size_t skip_end) {
    size_t done = 0;
    for (int k = 0; done < BN; k++) {
        size_t c = chunk_sizes[k % (sizeof chunk_sizes / sizeof *chunk_sizes)];
        if (c > BN - done) c = BN - done;
        size_t off = from_end ? BN - done - c : done;
        done += c;
        /* leave out [skip_begin, skip_end), marking what is around it */
        size_t lo = off, hi = off + c;
        if (hi <= skip_begin || lo >= skip_end) {
            MT_TRY(mt_comm_buckets_ready(b, lo, hi - lo));
            continue;
        }
        if (lo < skip_begin) MT_TRY(mt_comm_buckets_ready(b, lo, skip_begin - lo));
        if (hi > skip_end) MT_TRY(mt_comm_buckets_ready(b, skip_end, hi - skip_end));
    }
    return MT_OK;
}

static size_t count_mismatches(const float *got, const float *want, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += fabsf(got[i] - want[i]) > 1e-6f * fmaxf(1.0f, want[i]);
    return bad;
}

/* One step: fill, mark (reverse or forward), wait; compare with a blocking all-reduce. */
static void check_bucket_step(mt_comm_buckets *b, float *g, float *want, int step, bool from_end) {
    fill_grads(g, step);
    memcpy(want, g, BN * sizeof *g);
    MT_CHECK_OK(mt_comm_allreduce_f32(comm, want, BN, MT_COMM_AVG));
    MT_CHECK_OK(mark_all(b, from_end, 0, 0));
    double waited = -1;
    MT_CHECK_OK(mt_comm_buckets_wait(b, &waited));
    MT_CHECK(waited >= 0 && waited < 60, "waited %g s", waited);
    size_t bad = count_mismatches(g, want, BN);
    MT_CHECK(bad == 0, "step %d: %zu of %d elements differ from the blocking all-reduce", step, bad,
             BN);
}

static void test_buckets(void) {
    float *g = malloc(BN * sizeof *g), *want = malloc(BN * sizeof *want);
    mt_comm_buckets *b = NULL;
    MT_CHECK_OK(mt_comm_buckets_init(comm, g, BN, BUCKET_B, MT_COMM_AVG, &b));
    if (!b) return;
    MT_CHECK(mt_comm_buckets_count(b) == 11, "%zu buckets", mt_comm_buckets_count(b));
    for (int step = 0; step < 3; step++) check_bucket_step(b, g, want, step, true);
    /* Ranks marking in different orders still start buckets in the same order. */
    check_bucket_step(b, g, want, 3, rank % 2 == 0);
    mt_comm_buckets_free(b);

    MT_CHECK_FAILS(mt_comm_buckets_init(comm, g, BN, 2, MT_COMM_SUM, &b), MT_ERR_ARG, "2 bytes");
    MT_CHECK_OK(mt_comm_buckets_init(comm, NULL, 0, BUCKET_B, MT_COMM_SUM, &b));
    if (b) {
        MT_CHECK(mt_comm_buckets_count(b) == 0);
        MT_CHECK_OK(mt_comm_buckets_ready(b, 0, 0));
        MT_CHECK_OK(mt_comm_buckets_wait(b, NULL));
        mt_comm_buckets_free(b);
    }
    free(g);
    free(want);
}

static void test_buckets_mistakes(void) {
    float *g = malloc(BN * sizeof *g), *want = malloc(BN * sizeof *want);
    mt_comm_buckets *b = NULL;
    MT_CHECK_OK(mt_comm_buckets_init(comm, g, BN, BUCKET_B, MT_COMM_AVG, &b));
    if (!b) return;

    /* Marking twice or out of range is refused, and the refused call changes nothing. */
    fill_grads(g, 0);
    memcpy(want, g, BN * sizeof *g);
    MT_CHECK_OK(mt_comm_allreduce_f32(comm, want, BN, MT_COMM_AVG));
    MT_CHECK_OK(mt_comm_buckets_ready(b, 900000, 100003));
    MT_CHECK_OK(mt_comm_buckets_ready(b, 100, 50));
    MT_CHECK_FAILS(mt_comm_buckets_ready(b, 999999, 1), MT_ERR_ARG, "buf[999999, 1000000)",
                   "already marked");
    MT_CHECK_FAILS(mt_comm_buckets_ready(b, 140, 20), MT_ERR_ARG, "buf[140, 150) was already");
    MT_CHECK_FAILS(mt_comm_buckets_ready(b, 0, 1000), MT_ERR_ARG, "already marked");
    MT_CHECK_FAILS(mt_comm_buckets_ready(b, BN, 1), MT_ERR_ARG, "outside");
    MT_CHECK_FAILS(mt_comm_buckets_ready(b, 5, SIZE_MAX), MT_ERR_ARG, "outside");
    MT_CHECK_OK(mt_comm_buckets_ready(b, 150, 900000 - 150)); /* joins both neighbours */
    MT_CHECK_OK(mt_comm_buckets_ready(b, 0, 100));
    MT_CHECK_OK(mt_comm_buckets_wait(b, NULL));
    MT_CHECK(count_mismatches(g, want, BN) == 0);

    /* The last rank forgets buf[500, 700) (in bucket 9): it gets an error naming the bucket and
     * the range, and no rank hangs, although that bucket starts later there than elsewhere. */
    fill_grads(g, 1);
    int forgetful = world - 1;
    MT_CHECK_OK(mark_all(b, true, rank == forgetful ? 500 : 0, rank == forgetful ? 700 : 0));
    if (rank != forgetful) {
        MT_CHECK_OK(mt_comm_buckets_wait(b, NULL));
    } else {
        MT_CHECK_FAILS(mt_comm_buckets_wait(b, NULL), MT_ERR_INTERNAL,
                       "bucket 9 (buf[3, 100003)) has 200 of 100000 elements never marked",
                       "first missing buf[500, 700)");
        MT_CHECK(!strstr(mt_error_message(), "more incomplete"), "message: %s", mt_error_message());
    }

    /* Re-armed: the next step is whole and right on every rank. */
    check_bucket_step(b, g, want, 2, true);
    mt_comm_buckets_free(b);
    free(g);
    free(want);
}

/* Several incomplete buckets: the message names the first and counts the rest. */
static void test_buckets_missing_many(void) {
    float *g = calloc(BN, sizeof *g);
    mt_comm_buckets *b = NULL;
    MT_CHECK_OK(mt_comm_buckets_init(comm, g, BN, BUCKET_B, MT_COMM_SUM, &b));
    if (!b) return;
    MT_CHECK_OK(mt_comm_buckets_ready(b, 900003, 100000)); /* bucket 0 only */
    MT_CHECK_OK(mt_comm_buckets_ready(b, 800003, 50000));  /* half of bucket 1 */
    MT_CHECK_FAILS(mt_comm_buckets_wait(b, NULL), MT_ERR_INTERNAL,
                   "bucket 1 (buf[800003, 900003)) has 50000 of 100000 elements",
                   "first missing buf[850003, 900003)", "and 9 more incomplete");
    mt_comm_buckets_free(b);
    free(g);
}

/* ---- agreeing on failure (last: the agreed flag stays set) ---- */

static void test_agree(void) {
    MT_CHECK_OK(mt_comm_agree(comm, MT_OK));
    MT_CHECK(!mt_comm_failure_agreed(comm));

    int failing = world - 1;
    mt_status mine = MT_OK;
    if (rank == failing) mine = mt_fail(MT_ERR_IO, "disk full writing ckpt/step_7 (agree test)");
    mt_status st = mt_comm_agree(comm, mine);
    MT_CHECK(st == MT_ERR_IO, "returned %s: %s", mt_status_name(st), mt_error_message());
    MT_CHECK(strstr(mt_error_message(), "disk full writing ckpt/step_7 (agree test)") != NULL,
             "message: %s", mt_error_message());
    char who[64];
    snprintf(who, sizeof who, "rank %d failed: disk full", failing);
    if (rank != failing)
        MT_CHECK(strstr(mt_error_message(), who) != NULL, "message: %s", mt_error_message());
    MT_CHECK(mt_comm_failure_agreed(comm));

    /* Everyone fails: rank 0 speaks for all. */
    mine = mt_fail(rank == 0 ? MT_ERR_FORMAT : MT_ERR_NUMERIC, "trouble on rank %d", rank);
    st = mt_comm_agree(comm, mine);
    MT_CHECK(st == MT_ERR_FORMAT, "returned %s", mt_status_name(st));
    MT_CHECK(strstr(mt_error_message(), "trouble on rank 0") != NULL, "message: %s",
             mt_error_message());
    if (rank != 0)
        MT_CHECK(strstr(mt_error_message(), "rank 0 failed: trouble on rank 0") != NULL,
                 "message: %s", mt_error_message());
}

int main(int argc, char **argv) {
    if (mt_comm_init(&argc, &argv, &comm) != MT_OK) {
        fprintf(stderr, "mt_comm_init: %s\n", mt_error_message());
        return 1;
    }
    rank = mt_comm_rank(comm);
    world = mt_comm_world(comm);
    if (rank == 0)
        printf("%d rank(s); %s; max count %s\n", world, mt_comm_library_version(),
               getenv("MEDTRAIN_COMM_MAX_COUNT") ? getenv("MEDTRAIN_COMM_MAX_COUNT") : "INT_MAX");

    MT_RUN(test_identity);
    MT_RUN(test_allreduce_f32);
    MT_RUN(test_allreduce_f64);
    MT_RUN(test_allreduce_i64);
    MT_RUN(test_max_f64);
    MT_RUN(test_broadcast);
    MT_RUN(test_allgather);
    MT_RUN(test_allgather_rows);
    MT_RUN(test_barrier);
    MT_RUN(test_async);
    MT_RUN(test_buckets);
    MT_RUN(test_buckets_mistakes);
    MT_RUN(test_buckets_missing_many);
    MT_RUN(test_agree);

    /* A failure on any rank fails the program on every rank (rank 0 prints the summary). */
    int64_t failed = mt_test_summary();
    if (mt_comm_allreduce_i64(comm, &failed, 1, MT_COMM_SUM) != MT_OK) failed = 1;
    if (failed && rank == 0) printf("FAIL: %lld rank(s) had failed tests\n", (long long)failed);
    mt_comm_finalize(comm);
    return failed ? 1 : 0;
}
