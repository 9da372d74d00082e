/* The MPI communicator: start-up, who is who, blocking and non-blocking collectives on host
 * buffers, agreeing on a failure, and ending the whole job.
 *
 * All state lives in struct mt_comm (beside what MPI itself keeps): a duplicate of MPI_COMM_WORLD
 * with MPI_ERRORS_RETURN, so that an MPI error comes back as MT_ERR_COMM with MPI's own words
 * instead of killing the process without a message. The bucketed all-reduce (buckets.c) is built
 * on the non-blocking calls here and needs nothing else from this file.
 *
 * MPI counts are ints; every call here moves at most c->max_count elements (INT_MAX) at once and
 * loops over chunks beyond that. The environment variable MEDTRAIN_COMM_MAX_COUNT lowers that
 * limit, which exists only so that tests can exercise the chunked paths without 8 GiB buffers. */
#define _POSIX_C_SOURCE 200809L

#include "medtrain/comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "medtrain/mem.h"

struct mt_comm {
    MPI_Comm comm; /* our duplicate of MPI_COMM_WORLD; errors return to us */
    int rank, world;
    int local_rank, local_world; /* among the ranks sharing this host's memory */
    size_t max_count;            /* most elements (or bytes) one MPI call moves */
    bool initialised_mpi;        /* we called MPI_Init_thread, so finalize calls MPI_Finalize */
    bool failure_agreed;         /* mt_comm_agree() has seen a failed rank */
    char host[MPI_MAX_PROCESSOR_NAME];
};

/* Several MPI requests when the buffer needs more than one chunk; all complete before AVG. */
struct mt_comm_request {
    mt_comm *comm;
    float *buf;
    size_t n;
    mt_comm_op op;
    int count;
    MPI_Request mpi[]; /* count of them */
};

/* Turns an MPI error code into MT_ERR_COMM naming the call ("MPI_Allreduce: <MPI's words>"). */
static mt_status mpi_fail(int rc, const char *expr) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "error %d", rc);
    return mt_fail(MT_ERR_COMM, "%.*s failed: %s", (int)strcspn(expr, "("), expr, text);
}

#define MPI_TRY(call)                                                                              \
    do {                                                                                           \
        int mpi_rc_ = (call);                                                                      \
        if (mpi_rc_ != MPI_SUCCESS) return mpi_fail(mpi_rc_, #call);                               \
    } while (0)

static size_t min_size(size_t a, size_t b) {
    return a < b ? a : b;
}

/* ---- start-up and identity ---- */

static size_t max_count_from_env(void) {
    const char *s = getenv("MEDTRAIN_COMM_MAX_COUNT");
    if (!s || !*s) return INT_MAX;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v == 0 || v > INT_MAX) return INT_MAX;
    return (size_t)v;
}

/* Fills in everything after the communicator exists; on failure the caller frees c->comm. */
static mt_status comm_describe(mt_comm *c) {
    MPI_TRY(MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN));
    MPI_TRY(MPI_Comm_rank(c->comm, &c->rank));
    MPI_TRY(MPI_Comm_size(c->comm, &c->world));

    MPI_Comm local;
    MPI_TRY(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local));
    int rc = MPI_Comm_rank(local, &c->local_rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(local, &c->local_world);
    MPI_Comm_free(&local);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Comm_rank/size(shared-memory communicator)");

    int len = 0;
    MPI_TRY(MPI_Get_processor_name(c->host, &len));
    c->host[len < (int)sizeof c->host ? len : (int)sizeof c->host - 1] = '\0';
    c->max_count = max_count_from_env();
    return MT_OK;
}

mt_status mt_comm_init(int *argc, char ***argv, mt_comm **out) {
    if (!out) return mt_fail(MT_ERR_ARG, "mt_comm_init: out is NULL");
    *out = NULL;
    int initialised = 0, finalized = 0;
    MPI_TRY(MPI_Initialized(&initialised));
    MPI_TRY(MPI_Finalized(&finalized));
    if (finalized)
        return mt_fail(MT_ERR_COMM, "mt_comm_init: MPI was already finalised in this process; it "
                                    "cannot be started twice");
    bool ours = false;
    if (!initialised) {
        /* FUNNELED: OpenMP threads compute, only the main thread talks to MPI. */
        int provided = 0;
        MPI_TRY(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
        ours = true;
    }

    mt_comm *c = mt_calloc(1, sizeof *c, "communicator");
    if (!c) return MT_ERR_NOMEM;
    c->initialised_mpi = ours;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
    if (rc != MPI_SUCCESS) {
        mt_free(c);
        return mpi_fail(rc, "MPI_Comm_dup(MPI_COMM_WORLD)");
    }
    mt_status st = comm_describe(c);
    if (st != MT_OK) {
        MPI_Comm_free(&c->comm);
        mt_free(c);
        return st;
    }
    mt_set_rank(c->rank, c->world);
    *out = c;
    return MT_OK;
}

void mt_comm_finalize(mt_comm *c) {
    if (!c) return;
    MPI_Comm_free(&c->comm);
    if (c->initialised_mpi) MPI_Finalize();
    mt_free(c);
}

int mt_comm_rank(const mt_comm *c) {
    return c->rank;
}
int mt_comm_world(const mt_comm *c) {
    return c->world;
}
int mt_comm_local_rank(const mt_comm *c) {
    return c->local_rank;
}
int mt_comm_local_world(const mt_comm *c) {
    return c->local_world;
}
const char *mt_comm_host(const mt_comm *c) {
    return c->host;
}
const void *mt_comm_mpi(const mt_comm *c) {
    return &c->comm;
}

/* ---- blocking collectives ---- */

static mt_status check_buffer(const char *what, const void *buf, size_t n) {
    if (!buf && n > 0) return mt_fail(MT_ERR_ARG, "%s: buffer is NULL but count is %zu", what, n);
    return MT_OK;
}

/* In-place all-reduce of n elements of type, in chunks of at most max_count. */
static mt_status allreduce_chunks(mt_comm *c, void *buf, size_t n, size_t elem_bytes,
                                  MPI_Datatype type, MPI_Op op) {
    char *p = buf;
    for (size_t done = 0; done < n;) {
        size_t k = min_size(n - done, c->max_count);
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, p + done * elem_bytes, (int)k, type, op, c->comm));
        done += k;
    }
    return MT_OK;
}

static mt_status check_op(const char *what, mt_comm_op op) {
    if (op != MT_COMM_SUM && op != MT_COMM_AVG)
        return mt_fail(MT_ERR_ARG, "%s: op %d is neither MT_COMM_SUM nor MT_COMM_AVG", what,
                       (int)op);
    return MT_OK;
}

static void scale_f32(float *buf, size_t n, int world) {
    float s = (float)(1.0 / world);
    for (size_t i = 0; i < n; i++) buf[i] *= s;
}

mt_status mt_comm_allreduce_f32(mt_comm *c, float *buf, size_t n, mt_comm_op op) {
    MT_TRY(check_op("mt_comm_allreduce_f32", op));
    MT_TRY(check_buffer("mt_comm_allreduce_f32", buf, n));
    MT_TRY(allreduce_chunks(c, buf, n, sizeof *buf, MPI_FLOAT, MPI_SUM));
    if (op == MT_COMM_AVG) scale_f32(buf, n, c->world);
    return MT_OK;
}

mt_status mt_comm_allreduce_f64(mt_comm *c, double *buf, size_t n, mt_comm_op op) {
    MT_TRY(check_op("mt_comm_allreduce_f64", op));
    MT_TRY(check_buffer("mt_comm_allreduce_f64", buf, n));
    MT_TRY(allreduce_chunks(c, buf, n, sizeof *buf, MPI_DOUBLE, MPI_SUM));
    if (op == MT_COMM_AVG) {
        double s = 1.0 / c->world;
        for (size_t i = 0; i < n; i++) buf[i] *= s;
    }
    return MT_OK;
}

/* AVG of integers divides the sum by world with C's division (rounds towards zero). */
mt_status mt_comm_allreduce_i64(mt_comm *c, int64_t *buf, size_t n, mt_comm_op op) {
    MT_TRY(check_op("mt_comm_allreduce_i64", op));
    MT_TRY(check_buffer("mt_comm_allreduce_i64", buf, n));
    MT_TRY(allreduce_chunks(c, buf, n, sizeof *buf, MPI_INT64_T, MPI_SUM));
    if (op == MT_COMM_AVG)
        for (size_t i = 0; i < n; i++) buf[i] /= c->world;
    return MT_OK;
}

mt_status mt_comm_max_f64(mt_comm *c, double *buf, size_t n) {
    MT_TRY(check_buffer("mt_comm_max_f64", buf, n));
    return allreduce_chunks(c, buf, n, sizeof *buf, MPI_DOUBLE, MPI_MAX);
}

mt_status mt_comm_broadcast(mt_comm *c, void *buf, size_t bytes, int root) {
    MT_TRY(check_buffer("mt_comm_broadcast", buf, bytes));
    if (root < 0 || root >= c->world)
        return mt_fail(MT_ERR_ARG, "mt_comm_broadcast: root %d is not a rank (world %d)", root,
                       c->world);
    char *p = buf;
    for (size_t done = 0; done < bytes;) {
        size_t k = min_size(bytes - done, c->max_count);
        MPI_TRY(MPI_Bcast(p + done, (int)k, MPI_BYTE, root, c->comm));
        done += k;
    }
    return MT_OK;
}

/* One chunk [off, off+k) of every rank's block: a datatype of k bytes whose extent is a whole
 * block places rank r's chunk at recv + r * bytes + off. */
static mt_status allgather_chunk(mt_comm *c, const void *send, char *recv, size_t bytes, size_t off,
                                 size_t k) {
    MPI_Datatype chunk, block;
    MPI_TRY(MPI_Type_contiguous((int)k, MPI_BYTE, &chunk));
    int rc = MPI_Type_create_resized(chunk, 0, (MPI_Aint)bytes, &block);
    MPI_Type_free(&chunk);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Type_create_resized");
    rc = MPI_Type_commit(&block);
    if (rc == MPI_SUCCESS) {
        const void *s = send == MPI_IN_PLACE ? MPI_IN_PLACE : (const char *)send + off;
        rc = MPI_Allgather(s, (int)k, MPI_BYTE, recv + off, 1, block, c->comm);
    }
    MPI_Type_free(&block);
    return rc == MPI_SUCCESS ? MT_OK : mpi_fail(rc, "MPI_Allgather");
}

mt_status mt_comm_allgather(mt_comm *c, const void *send, void *recv, size_t bytes) {
    MT_TRY(check_buffer("mt_comm_allgather (send)", send, bytes));
    MT_TRY(check_buffer("mt_comm_allgather (recv)", recv, bytes));
    if (bytes == 0) return MT_OK;
    char *r = recv;
    /* Sending from our own slot of recv is MPI's in-place case. */
    const void *s = send == r + (size_t)c->rank * bytes ? MPI_IN_PLACE : send;
    if (bytes <= c->max_count) {
        MPI_TRY(MPI_Allgather(s, (int)bytes, MPI_BYTE, r, (int)bytes, MPI_BYTE, c->comm));
        return MT_OK;
    }
    for (size_t off = 0; off < bytes;) {
        size_t k = min_size(bytes - off, c->max_count);
        MT_TRY(allgather_chunk(c, s, r, bytes, off, k));
        off += k;
    }
    return MT_OK;
}

mt_status mt_comm_allgather_rows(mt_comm *c, const void *rows_data, const int64_t *keys,
                                 size_t rows, size_t row_bytes, void **out, int64_t **out_keys,
                                 int64_t *n) {
    size_t total = rows * (size_t)c->world;
    char *all = mt_alloc(total * row_bytes > 0 ? total * row_bytes : 1, "gathered rows");
    int64_t *all_keys = mt_alloc(total ? total * sizeof *all_keys : 1, "gathered keys");
    mt_status st = mt_comm_agree(c, all && all_keys ? MT_OK : MT_ERR_NOMEM);
    if (st == MT_OK) st = mt_comm_allgather(c, rows_data, all, rows * row_bytes);
    if (st == MT_OK) st = mt_comm_allgather(c, keys, all_keys, rows * sizeof *keys);
    if (st != MT_OK) {
        mt_free(all), mt_free(all_keys);
        return st;
    }
    int64_t k = 0; /* compact in place: row r moves to k <= r */
    for (size_t r = 0; r < total; r++) {
        if (all_keys[r] < 0) continue;
        if ((size_t)k != r) memmove(all + (size_t)k * row_bytes, all + r * row_bytes, row_bytes);
        all_keys[k++] = all_keys[r];
    }
    *out = all, *out_keys = all_keys, *n = k;
    return MT_OK;
}

mt_status mt_comm_barrier(mt_comm *c) {
    MPI_TRY(MPI_Barrier(c->comm));
    return MT_OK;
}

/* ---- non-blocking all-reduce ---- */

mt_status mt_comm_allreduce_start(mt_comm *c, float *buf, size_t n, mt_comm_op op,
                                  mt_comm_request **req) {
    *req = NULL;
    MT_TRY(check_op("mt_comm_allreduce_start", op));
    MT_TRY(check_buffer("mt_comm_allreduce_start", buf, n));
    size_t chunks = n / c->max_count + (n % c->max_count != 0);
    mt_comm_request *r = mt_alloc(sizeof *r + chunks * sizeof r->mpi[0], "all-reduce request");
    if (!r) return MT_ERR_NOMEM;
    *r = (mt_comm_request){.comm = c, .buf = buf, .n = n, .op = op, .count = 0};
    for (size_t done = 0; done < n; r->count++) {
        size_t k = min_size(n - done, c->max_count);
        int rc = MPI_Iallreduce(MPI_IN_PLACE, buf + done, (int)k, MPI_FLOAT, MPI_SUM, c->comm,
                                &r->mpi[r->count]);
        if (rc != MPI_SUCCESS) {
            /* Chunks already started must finish before their buffer may be touched again. */
            MPI_Waitall(r->count, r->mpi, MPI_STATUSES_IGNORE);
            mt_free(r);
            return mpi_fail(rc, "MPI_Iallreduce");
        }
        done += k;
    }
    *req = r;
    return MT_OK;
}

mt_status mt_comm_test(mt_comm_request *req, bool *done) {
    if (!req) return mt_fail(MT_ERR_ARG, "mt_comm_test: request is NULL");
    int flag = 0;
    MPI_TRY(MPI_Testall(req->count, req->mpi, &flag, MPI_STATUSES_IGNORE));
    *done = flag != 0;
    return MT_OK;
}

/* Frees req whether or not the wait succeeds. */
mt_status mt_comm_wait(mt_comm_request *req) {
    if (!req) return mt_fail(MT_ERR_ARG, "mt_comm_wait: request is NULL");
    int rc = MPI_Waitall(req->count, req->mpi, MPI_STATUSES_IGNORE);
    if (rc == MPI_SUCCESS && req->op == MT_COMM_AVG) scale_f32(req->buf, req->n, req->comm->world);
    mt_free(req);
    return rc == MPI_SUCCESS ? MT_OK : mpi_fail(rc, "MPI_Waitall");
}

/* ---- failures ---- */

/* Skips a leading "rank R: " that mt_fail() put there, so it is not said twice. */
static const char *without_rank_prefix(const char *msg, int rank) {
    char prefix[32];
    int len = snprintf(prefix, sizeof prefix, "rank %d: ", rank);
    return strncmp(msg, prefix, (size_t)len) == 0 ? msg + len : msg;
}

mt_status mt_comm_agree(mt_comm *c, mt_status local) {
    /* The lowest failed rank speaks for everyone; world means nobody failed. */
    int mine = local != MT_OK ? c->rank : c->world, first = c->world;
    MPI_TRY(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->comm));
    if (first == c->world) return MT_OK;

    struct {
        int code;
        char msg[MT_ERROR_MAX];
    } failure = {0};
    if (c->rank == first) {
        failure.code = (int)local;
        snprintf(failure.msg, sizeof failure.msg, "%s", mt_error_message());
    }
    MPI_TRY(MPI_Bcast(&failure, (int)sizeof failure, MPI_BYTE, first, c->comm));
    c->failure_agreed = true;
    if (c->rank == first) return local;

    failure.msg[sizeof failure.msg - 1] = '\0';
    const char *msg = without_rank_prefix(failure.msg, first);
    mt_status code = (mt_status)failure.code;
    if (!*msg) msg = mt_status_name(code);
    return mt_fail(code, "rank %d failed: %s", first, msg);
}

bool mt_comm_failure_agreed(const mt_comm *c) {
    return c->failure_agreed;
}

/* The one place below cli/ that ends the process: a rank that cannot go on must take the whole
 * job down, or the others wait forever in their next collective. Without MPI running there is
 * nobody else to stop, so exit() does. An exit code of 0 would report success; it becomes 1. */
_Noreturn void mt_comm_abort(mt_comm *c, int exit_code, const char *message) {
    int initialised = 0, finalized = 0;
    MPI_Initialized(&initialised);
    MPI_Finalized(&finalized);
    bool mpi_up = initialised && !finalized;

    int rank = c ? c->rank : mt_rank();
    char host[MPI_MAX_PROCESSOR_NAME] = "?";
    if (c) {
        snprintf(host, sizeof host, "%s", c->host);
    } else if (mpi_up) {
        int len = 0;
        if (MPI_Get_processor_name(host, &len) != MPI_SUCCESS) snprintf(host, sizeof host, "?");
    } else if (gethostname(host, sizeof host) != 0) {
        snprintf(host, sizeof host, "?");
    }
    host[sizeof host - 1] = '\0';
    if (!message || !*message) message = *mt_error_message() ? mt_error_message() : "aborted";
    if (exit_code == 0) exit_code = 1;

    fflush(stdout);
    fprintf(stderr, "medtrain: rank %d (host %s): %s\n", rank, host,
            without_rank_prefix(message, rank));
    fflush(stderr);
    if (mpi_up) MPI_Abort(MPI_COMM_WORLD, exit_code);
    exit(exit_code); /* MPI not running, or (against the standard) MPI_Abort returned */
}

const char *mt_comm_library_version(void) {
    static char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(version, &len) != MPI_SUCCESS) return "MPI (version unknown)";
    version[strcspn(version, "\r\n")] = '\0';
    return version;
}
