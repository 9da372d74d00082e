/* medtrain doctor: checks that an allocation works before it burns GPU hours.
 *
 * Run under N ranks, it reports the ranks and hosts, measures GEMM throughput on every rank and
 * all-reduce bandwidth across them (checking the results), writes and reads back a file with
 * parallel HDF5, and reports GDCM, CUDA, NCCL and the GPUs it sees. Every check is collective and
 * its outcome agreed, so a failure on one rank is reported by rank 0 and no rank hangs. The exit
 * status is non-zero when any check fails; the last line says which. */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "medtrain/cuda.h"
#include "medtrain/dicom.h"
#include "medtrain/h5.h"
#include "medtrain/mem.h"
#include "medtrain/ops.h"
#include "medtrain/timer.h"

typedef struct doctor {
    mt_comm *comm;
    int rank, world;
    char failed[512]; /* names of failed checks */
    int n_failed;
} doctor;

void mt_cmd_doctor_usage(FILE *out) {
    fprintf(out,
            "usage: medtrain doctor [--scratch DIR] [--gemm N] [--allreduce-mib M]\n\n"
            "Checks this allocation: ranks and hosts, BLAS threads and GEMM GFLOP/s per rank,\n"
            "all-reduce bandwidth, parallel HDF5 (a collective write and read-back), GDCM, CUDA,\n"
            "NCCL and GPUs. Exits non-zero and names the failed checks when any fails.\n\n"
            "  --scratch DIR       where the HDF5 test file goes; must be shared by all ranks\n"
            "                      (default: the current directory)\n"
            "  --gemm N            GEMM size N x N x N (default 1024)\n"
            "  --allreduce-mib M   all-reduce buffer size in MiB (default 64)\n\n"
            "Run it the way the job will run: mpirun -np 2 medtrain doctor, or srun --mpi=pmix.\n");
}

/* Prints on rank 0. */
#define SAY(d, ...)                                                                                \
    do {                                                                                           \
        if ((d)->rank == 0) printf(__VA_ARGS__);                                                   \
    } while (0)

static void check_result(doctor *d, const char *name, mt_status st) {
    if (st == MT_OK) return;
    SAY(d, "  FAILED: %s\n", mt_error_message());
    d->n_failed++;
    size_t n = strlen(d->failed);
    snprintf(d->failed + n, sizeof d->failed - n, "%s%s", n ? ", " : "", name);
}

static mt_status check_ranks(doctor *d) {
    char host[64] = {0};
    snprintf(host, sizeof host, "%s", mt_comm_host(d->comm));
    char *hosts = mt_calloc((size_t)d->world, sizeof host, "host names");
    if (!hosts) return mt_comm_agree(d->comm, MT_ERR_NOMEM);
    mt_status st = mt_comm_allgather(d->comm, host, hosts, sizeof host);
    int local[2] = {mt_comm_local_rank(d->comm), mt_comm_local_world(d->comm)};
    int *locals = mt_calloc((size_t)d->world, sizeof local, "local ranks");
    if (st == MT_OK && locals) st = mt_comm_allgather(d->comm, local, locals, sizeof local);
    if (st == MT_OK && d->rank == 0) {
        int n_hosts = 0;
        for (int r = 0; r < d->world; r++) {
            bool first = true;
            for (int q = 0; q < r; q++)
                first &= strcmp(hosts + q * sizeof host, hosts + r * sizeof host) != 0;
            n_hosts += first;
        }
        printf("ranks:     %d rank%s on %d host%s\n", d->world, d->world > 1 ? "s" : "", n_hosts,
               n_hosts > 1 ? "s" : "");
        for (int r = 0; r < d->world && r < 64; r++)
            printf("           rank %d on %s (local rank %d of %d)\n", r, hosts + r * sizeof host,
                   locals[2 * r], locals[2 * r + 1]);
        if (d->world > 64) printf("           ... %d more\n", d->world - 64);
    }
    /* N processes that each think they are rank 0 of 1 is a launcher/MPI mismatch. */
    const char *env[] = {"SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (int i = 0; st == MT_OK && i < 4; i++) {
        const char *v = getenv(env[i]);
        if (v && atoi(v) > 1 && d->world == 1)
            st = mt_fail(MT_ERR_COMM,
                         "%s=%s but MPI sees 1 rank: the launcher and MPI do not "
                         "agree (with Slurm use `srun --mpi=pmix`; `srun --mpi=list` shows the "
                         "choices)",
                         env[i], v);
    }
    mt_free(hosts);
    mt_free(locals);
    return mt_comm_agree(d->comm, st);
}

/* C = A B with A, B filled so that C's entries are known exactly: checks and times mt_gemm. */
static mt_status gemm_local(int n, double *gflops) {
    mt_ctx ctx;
    MT_TRY(mt_ctx_init(&ctx, MT_CPU, 0, 0));
    size_t nn = (size_t)n * n;
    float *a = mt_alloc(nn * sizeof(float), "doctor GEMM A");
    float *b = mt_alloc(nn * sizeof(float), "doctor GEMM B");
    float *c = mt_alloc(nn * sizeof(float), "doctor GEMM C");
    mt_status st = (a && b && c) ? MT_OK : MT_ERR_NOMEM;
    if (st == MT_OK) {
        /* A[i][k] = (i+k) % 3 - 1, B[k][j] = 1: C[i][j] = sum_k A[i][k], known in closed form. */
        for (size_t i = 0; i < nn; i++) a[i] = (float)((int)((i / n + i % n) % 3) - 1), b[i] = 1.0f;
        mt_tensor ta = mt_tensor_2d(a, MT_F32, MT_CPU, n, n),
                  tb = mt_tensor_2d(b, MT_F32, MT_CPU, n, n),
                  tc = mt_tensor_2d(c, MT_F32, MT_CPU, n, n);
        st = mt_gemm(&ctx, false, false, 1.0f, &ta, &tb, 0.0f, &tc); /* warm-up */
        double best = 1e30;
        for (int rep = 0; st == MT_OK && rep < 3; rep++) {
            double t0 = mt_now();
            st = mt_gemm(&ctx, false, false, 1.0f, &ta, &tb, 0.0f, &tc);
            double t = mt_now() - t0;
            if (t < best) best = t;
        }
        *gflops = 2.0 * n * (double)n * n / best / 1e9;
        for (int i = 0; st == MT_OK && i < n; i += n / 7 + 1) {
            double want = 0;
            for (int k = 0; k < n; k++) want += (i + k) % 3 - 1;
            if (c[(size_t)i * n + (size_t)i] != (float)want)
                st = mt_fail(MT_ERR_NUMERIC,
                             "GEMM gave C[%d][%d] = %g, expected %g: the BLAS "
                             "library computes wrong results",
                             i, i, c[(size_t)i * n + i], want);
        }
    }
    mt_free(a), mt_free(b), mt_free(c);
    mt_ctx_free(&ctx);
    return st;
}

static mt_status check_gemm(doctor *d, int n) {
    double mine = 0;
    mt_status st = gemm_local(n, &mine);
    st = mt_comm_agree(d->comm, st);
    if (st != MT_OK) return st;
    double *all = mt_calloc((size_t)d->world, sizeof(double), "GEMM results");
    if (!all) return mt_comm_agree(d->comm, MT_ERR_NOMEM);
    st = mt_comm_allgather(d->comm, &mine, all, sizeof mine);
    if (st == MT_OK && d->rank == 0) {
        double lo = all[0], hi = all[0];
        for (int r = 1; r < d->world; r++) lo = fmin(lo, all[r]), hi = fmax(hi, all[r]);
        printf("BLAS:      %s; %d thread%s per rank\n", openblas_get_config(),
               openblas_get_num_threads(), openblas_get_num_threads() > 1 ? "s" : "");
        printf("GEMM:      %dx%dx%d f32: %.1f GFLOP/s on rank 0", n, n, n, all[0]);
        if (d->world > 1) printf(" (ranks: min %.1f, max %.1f)", lo, hi);
        printf(", results checked\n");
        if (hi > 0 && lo < 0.5 * hi)
            printf("  note: the slowest rank is under half the fastest: oversubscribed cores? "
                   "Set OPENBLAS_NUM_THREADS so ranks x threads <= cores.\n");
    }
    mt_free(all);
    return st;
}

static mt_status check_allreduce(doctor *d, size_t mib) {
    size_t n = mib * (1u << 20) / sizeof(float);
    float *buf = mt_alloc(n * sizeof(float), "all-reduce test buffer");
    mt_status st = mt_comm_agree(d->comm, buf ? MT_OK : MT_ERR_NOMEM);
    double best = 1e30;
    for (int rep = 0; st == MT_OK && rep < 4; rep++) {
        for (size_t i = 0; i < n; i++) buf[i] = (float)(d->rank + 1) + (float)(i % 7);
        MT_TRY(mt_comm_barrier(d->comm));
        double t0 = mt_now();
        st = mt_comm_allreduce_f32(d->comm, buf, n, MT_COMM_SUM);
        double t = mt_now() - t0;
        if (rep > 0 && t < best) best = t; /* the first round is warm-up */
        float base = (float)d->world * (float)(d->world + 1) / 2;
        for (size_t i = 0; st == MT_OK && i < n; i += 4099)
            if (buf[i] != base + (float)d->world * (float)(i % 7))
                st = mt_fail(MT_ERR_COMM, "all-reduce gave %g at element %zu, expected %g", buf[i],
                             i, base + (float)d->world * (float)(i % 7));
        st = mt_comm_agree(d->comm, st);
    }
    mt_free(buf);
    if (st != MT_OK) return st;
    double t = best;
    MT_TRY(mt_comm_max_f64(d->comm, &t, 1));
    double bytes = (double)n * sizeof(float);
    SAY(d,
        "allreduce: %zu MiB f32 over %d rank%s: %.3f s, algorithm %.2f GB/s, bus %.2f GB/s, "
        "results checked\n",
        mib, d->world, d->world > 1 ? "s" : "", t, bytes / t / 1e9,
        2.0 * (d->world - 1) / d->world * bytes / t / 1e9);
    return MT_OK;
}

static mt_status check_hdf5(doctor *d, const char *scratch) {
    double secs = 0;
    SAY(d, "HDF5:      %s\n", mt_h5_version());
    mt_status st = mt_h5_parallel_selftest(d->comm, scratch, &secs);
    if (st == MT_OK)
        SAY(d, "           collective write and read-back under %s: ok (%.2f s)\n", scratch, secs);
    return st;
}

static mt_status check_gdcm(doctor *d) {
    const char *v = mt_dicom_gdcm_version();
    if (!v || !*v) return mt_fail(MT_ERR_UNSUPPORTED, "GDCM reports no version");
    SAY(d, "GDCM:      %s\n", v);
    return MT_OK;
}

/* Lists the ops each backend implements. */
static void report_ops(doctor *d) {
    for (int dev = 0; dev < MT_DEVICE_COUNT; dev++) {
        int have = 0;
        char missing[512] = "";
        for (int i = 0; i < mt_op_count(); i++) {
            if (mt_op_supported((mt_device)dev, i))
                have++;
            else {
                size_t m = strlen(missing);
                snprintf(missing + m, sizeof missing - m, "%s%s", m ? ", " : "", mt_op_name(i));
            }
        }
        if (dev == MT_CUDA && have == 0) continue; /* not built */
        SAY(d, "ops:       %d of %d on %s%s%s%s\n", have, mt_op_count(),
            mt_device_name((mt_device)dev), missing[0] ? " (not yet: " : "", missing,
            missing[0] ? ")" : "");
    }
}

#ifdef MEDTRAIN_HAVE_CUDA
/* A small GEMM on this rank's GPU compared with the CPU backend. */
static mt_status gpu_gemm_matches_cpu(int device) {
    enum { N = 128 };
    static float a[N * N], b[N * N], c_cpu[N * N], c_gpu[N * N];
    for (int i = 0; i < N * N; i++) a[i] = (float)(i % 13) / 13.0f, b[i] = (float)(i % 7) / 7.0f;
    mt_ctx cpu, gpu;
    MT_TRY(mt_ctx_init(&cpu, MT_CPU, 0, 1));
    mt_status st = mt_ctx_init(&gpu, MT_CUDA, device, 0);
    if (st != MT_OK) {
        mt_ctx_free(&cpu);
        return st;
    }
    int64_t shape[2] = {N, N};
    mt_tensor ha = mt_tensor_2d(a, MT_F32, MT_CPU, N, N),
              hb = mt_tensor_2d(b, MT_F32, MT_CPU, N, N);
    mt_tensor hc = mt_tensor_2d(c_cpu, MT_F32, MT_CPU, N, N),
              hg = mt_tensor_2d(c_gpu, MT_F32, MT_CPU, N, N);
    mt_tensor da = {0}, db = {0}, dc = {0};
    st = mt_gemm(&cpu, false, false, 1.0f, &ha, &hb, 0.0f, &hc);
    if (st == MT_OK) st = mt_tensor_alloc(&gpu, &da, MT_F32, 2, shape);
    if (st == MT_OK) st = mt_tensor_alloc(&gpu, &db, MT_F32, 2, shape);
    if (st == MT_OK) st = mt_tensor_alloc(&gpu, &dc, MT_F32, 2, shape);
    if (st == MT_OK) st = mt_tensor_copy(&gpu, &da, &ha);
    if (st == MT_OK) st = mt_tensor_copy(&gpu, &db, &hb);
    if (st == MT_OK) st = mt_gemm(&gpu, false, false, 1.0f, &da, &db, 0.0f, &dc);
    if (st == MT_OK) st = mt_tensor_copy(&gpu, &hg, &dc);
    for (int i = 0; st == MT_OK && i < N * N; i++)
        if (fabsf(c_gpu[i] - c_cpu[i]) > 1e-3f * fmaxf(1.0f, fabsf(c_cpu[i])))
            st = mt_fail(MT_ERR_DEVICE, "GPU %d GEMM differs from the CPU at %d: %g vs %g", device,
                         i, c_gpu[i], c_cpu[i]);
    mt_tensor_free(&gpu, &da), mt_tensor_free(&gpu, &db), mt_tensor_free(&gpu, &dc);
    mt_ctx_free(&gpu);
    mt_ctx_free(&cpu);
    return st;
}
#endif

static mt_status check_gpus(doctor *d) {
#ifdef MEDTRAIN_HAVE_CUDA
    char v[128];
    mt_cuda_versions(v, sizeof v);
    int n = mt_cuda_device_count();
    SAY(d, "CUDA:      backend built; %s; NCCL %s\n", v, mt_cuda_nccl_version());
    if (d->rank == 0) {
        if (n == 0)
            printf("GPUs:      none visible on rank 0's host (the CPU backend will be used)\n");
        for (int i = 0; i < n; i++) {
            char desc[256];
            mt_cuda_device_describe(i, desc, sizeof desc);
            printf("GPUs:      %d: %s\n", i, desc);
        }
    }
    mt_status st = MT_OK;
    if (n > 0) {
        st = gpu_gemm_matches_cpu(mt_comm_local_rank(d->comm) % n);
        st = mt_comm_agree(d->comm, st);
        if (st == MT_OK) SAY(d, "           GEMM on each rank's GPU matches the CPU backend\n");
    }
    return st;
#else
    SAY(d,
        "CUDA:      backend not built (configure with MEDTRAIN_CUDA=ON on a machine with nvcc)\n");
    return MT_OK;
#endif
}

mt_status mt_cmd_doctor(mt_comm *comm, int argc, char **argv) {
    if (mt_cli_wants_help(argc, argv, mt_cmd_doctor_usage)) return MT_OK;
    const char *scratch = ".";
    int gemm_n = 1024;
    long mib = 64;
    static const struct option opts[] = {{"scratch", required_argument, 0, 's'},
                                         {"gemm", required_argument, 0, 'g'},
                                         {"allreduce-mib", required_argument, 0, 'a'},
                                         {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 's':
            scratch = optarg;
            break;
        case 'g':
            gemm_n = (int)strtol(optarg, &end, 10);
            if (*end || gemm_n < 16 || gemm_n > 16384)
                return mt_cli_usage_error(mt_cmd_doctor_usage, "--gemm %s: expected 16..16384",
                                          optarg);
            break;
        case 'a':
            mib = strtol(optarg, &end, 10);
            if (*end || mib < 1 || mib > 8192)
                return mt_cli_usage_error(mt_cmd_doctor_usage,
                                          "--allreduce-mib %s: expected 1..8192", optarg);
            break;
        default:
            return mt_cli_usage_error(mt_cmd_doctor_usage, "doctor: unknown option '%s'",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return mt_cli_usage_error(mt_cmd_doctor_usage, "doctor: unexpected argument '%s'",
                                  argv[optind]);

    doctor d = {.comm = comm, .rank = mt_comm_rank(comm), .world = mt_comm_world(comm)};
    SAY(&d, "medtrain doctor\n");
    check_result(&d, "ranks", check_ranks(&d));
    check_result(&d, "gemm", check_gemm(&d, gemm_n));
    check_result(&d, "allreduce", check_allreduce(&d, (size_t)mib));
    check_result(&d, "hdf5", check_hdf5(&d, scratch));
    check_result(&d, "gdcm", check_gdcm(&d));
    check_result(&d, "gpu", check_gpus(&d));
    report_ops(&d);
    fflush(stdout);
    if (d.n_failed) {
        /* Every check agreed its outcome across ranks, so every rank knows and can end normally. */
        return mt_comm_agree(comm, mt_fail(MT_ERR_UNSUPPORTED, "%d check%s failed: %s", d.n_failed,
                                           d.n_failed > 1 ? "s" : "", d.failed));
    }
    SAY(&d, "result:    all checks passed\n");
    return MT_OK;
}
