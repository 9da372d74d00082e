/* bench_allreduce: blocking f32 all-reduce (mt_comm_allreduce_f32, SUM) against a local memcpy of
 * the same size, for 1 KiB .. 256 MiB in powers of 4.
 *
 *     mpiexec -n 2 build/bench/bench_allreduce [max_bytes]
 *
 * Per size: a few warm-up calls, then repeats (fewer for large sizes, so the whole run stays well
 * under a minute); each repeat starts after a barrier and counts the slowest rank's time; the
 * median repeat is reported. Bandwidths in GB/s (1e9 bytes/s):
 *   algbw   = size / time
 *   busbw   = 2 (n-1)/n * size / time, what each rank's link carries in a ring all-reduce, the
 *             number to hold against a link's (or, on one host, memory's) bandwidth
 *   memcpy  = size / time of one memcpy on rank 0 while the other ranks wait (bytes copied; the
 *             memory traffic is twice that)
 *   ratio   = busbw / memcpy
 * A table goes to stdout, then one JSON line with the same numbers. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/comm.h"
#include "medtrain/mem.h"
#include "medtrain/timer.h"

#define MIN_BYTES   ((size_t)1 << 10)
#define MAX_BYTES   ((size_t)256 << 20)
#define MAX_SIZES   16
#define MAX_REPEATS 100
#define TARGET_S    0.5 /* time per size for the timed repeats */

typedef struct result {
    size_t bytes;
    int repeats;
    double allreduce_s, memcpy_s;
} result;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static int repeats_for(double one_call_s) {
    int r = one_call_s > 0 ? (int)(TARGET_S / one_call_s) : MAX_REPEATS;
    return r < 5 ? 5 : r > MAX_REPEATS ? MAX_REPEATS : r;
}

/* Median over repeats of the slowest rank's all-reduce time; every rank gets the same answer. */
static mt_status time_allreduce(mt_comm *c, float *buf, size_t n, result *res) {
    double t[MAX_REPEATS];
    for (int i = 0; i < 3; i++) MT_TRY(mt_comm_allreduce_f32(c, buf, n, MT_COMM_SUM)); /* warm */
    MT_TRY(mt_comm_barrier(c));
    double one = mt_now();
    MT_TRY(mt_comm_allreduce_f32(c, buf, n, MT_COMM_SUM));
    one = mt_now() - one;
    MT_TRY(mt_comm_max_f64(c, &one, 1)); /* the same repeat count on every rank */
    res->repeats = repeats_for(one);
    for (int i = 0; i < res->repeats; i++) {
        MT_TRY(mt_comm_barrier(c));
        double t0 = mt_now();
        MT_TRY(mt_comm_allreduce_f32(c, buf, n, MT_COMM_SUM));
        t[i] = mt_now() - t0;
    }
    MT_TRY(mt_comm_max_f64(c, t, (size_t)res->repeats));
    res->allreduce_s = median(t, res->repeats);
    return MT_OK;
}

static volatile unsigned char sink; /* keeps the copies observable */

static double time_memcpy(unsigned char *dst, const unsigned char *src, size_t bytes) {
    double t[MAX_REPEATS];
    memcpy(dst, src, bytes); /* warm */
    double one = mt_now();
    memcpy(dst, src, bytes);
    one = mt_now() - one;
    int reps = repeats_for(one);
    for (int i = 0; i < reps; i++) {
        double t0 = mt_now();
        memcpy(dst, src, bytes);
        t[i] = mt_now() - t0;
        sink = dst[(size_t)i % bytes];
    }
    return median(t, reps);
}

static mt_status run(mt_comm *c, size_t max_bytes, result *res, int *count) {
    int rank = mt_comm_rank(c);
    float *buf = mt_alloc(max_bytes, "all-reduce buffer");
    unsigned char *src = NULL, *dst = NULL;
    if (rank == 0) {
        src = mt_alloc(max_bytes, "memcpy source");
        dst = mt_alloc(max_bytes, "memcpy destination");
    }
    mt_status st = buf && (rank != 0 || (src && dst)) ? MT_OK : MT_ERR_NOMEM;
    /* Small normal values: 100-odd doublings in place stay far from overflow. */
    for (size_t i = 0; st == MT_OK && i < max_bytes / sizeof *buf; i++) buf[i] = 1e-30f;
    if (src) memset(src, 0x5a, max_bytes), memset(dst, 0, max_bytes);

    *count = 0;
    for (size_t bytes = MIN_BYTES; st == MT_OK && bytes <= max_bytes && *count < MAX_SIZES;
         bytes *= 4) {
        result *r = &res[(*count)++];
        r->bytes = bytes;
        st = time_allreduce(c, buf, bytes / sizeof *buf, r);
        if (st == MT_OK && rank == 0) r->memcpy_s = time_memcpy(dst, src, bytes);
        if (st == MT_OK) st = mt_comm_barrier(c);
    }
    mt_free(buf);
    mt_free(src);
    mt_free(dst);
    return st;
}

static void print_results(mt_comm *c, const result *res, int count) {
    int world = mt_comm_world(c);
    double bus = world > 1 ? 2.0 * (world - 1) / world : 0.0;
    printf("# bench_allreduce: %d ranks, %d on this host (%s); %s\n", world, mt_comm_local_world(c),
           mt_comm_host(c), mt_comm_library_version());
    printf("# %10s %6s %13s %11s %11s %12s %13s\n", "bytes", "reps", "allreduce_us", "algbw_GB/s",
           "busbw_GB/s", "memcpy_GB/s", "busbw/memcpy");
    for (int i = 0; i < count; i++) {
        const result *r = &res[i];
        double alg = r->bytes / r->allreduce_s / 1e9, mem = r->bytes / r->memcpy_s / 1e9;
        printf("  %10zu %6d %13.1f %11.3f %11.3f %12.3f %13.3f\n", r->bytes, r->repeats,
               r->allreduce_s * 1e6, alg, alg * bus, mem, alg * bus / mem);
    }
    printf("{\"bench\":\"allreduce\",\"ranks\":%d,\"ranks_per_host\":%d,\"mpi\":\"", world,
           mt_comm_local_world(c));
    for (const char *p = mt_comm_library_version(); *p; p++)
        if (*p != '"' && *p != '\\') putchar(*p);
    printf("\",\"results\":[");
    for (int i = 0; i < count; i++) {
        const result *r = &res[i];
        double alg = r->bytes / r->allreduce_s / 1e9, mem = r->bytes / r->memcpy_s / 1e9;
        printf("%s{\"bytes\":%zu,\"repeats\":%d,\"allreduce_s\":%.9f,\"algbw_gbs\":%.4f,"
               "\"busbw_gbs\":%.4f,\"memcpy_s\":%.9f,\"memcpy_gbs\":%.4f,\"ratio\":%.4f}",
               i ? "," : "", r->bytes, r->repeats, r->allreduce_s, alg, alg * bus, r->memcpy_s, mem,
               alg * bus / mem);
    }
    printf("]}\n");
}

int main(int argc, char **argv) {
    mt_comm *c = NULL;
    if (mt_comm_init(&argc, &argv, &c) != MT_OK) {
        fprintf(stderr, "bench_allreduce: %s\n", mt_error_message());
        return 1;
    }
    size_t max_bytes = MAX_BYTES;
    if (argc > 1) {
        char *end;
        unsigned long long v = strtoull(argv[1], &end, 10);
        if (*end || v < MIN_BYTES)
            mt_comm_abort(c, 2, "usage: bench_allreduce [max_bytes >= 1024]");
        max_bytes = (size_t)v;
    }
    result res[MAX_SIZES];
    int count = 0;
    mt_status st = run(c, max_bytes, res, &count);
    if (st != MT_OK) mt_comm_abort(c, 1, mt_error_message());
    if (mt_comm_rank(c) == 0) print_results(c, res, count);
    mt_comm_finalize(c);
    return 0;
}
