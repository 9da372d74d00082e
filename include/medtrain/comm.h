/* The communicator: who the ranks are and how they exchange data.
 *
 * Initialised from MPI, it works as a singleton (no mpirun), under `mpirun -np N` and under
 * `srun --mpi=pmix`. Collectives here move host (CPU) buffers over MPI; the NCCL path for device
 * buffers joins later behind the same calls.
 *
 * Failure never hangs a job. Two tools for that:
 *   - mt_comm_agree(): at a step boundary every rank says whether it is fine; if any rank failed,
 *     all ranks return that rank's error (its message is broadcast), and can stop together.
 *   - mt_comm_abort(): a rank that cannot continue prints its message and ends the whole job
 *     (MPI_Abort), so ranks blocked in a collective do not wait forever.
 *
 * Gradient all-reduce overlaps backward through buckets: the trainer declares ranges of the flat
 * gradient buffer in the order backward completes them; each bucket starts a non-blocking
 * all-reduce as soon as all of its elements are final, and mt_comm_buckets_wait() finishes them. */
#ifndef MEDTRAIN_COMM_H
#define MEDTRAIN_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_comm mt_comm;

typedef enum mt_comm_op { MT_COMM_SUM, MT_COMM_AVG } mt_comm_op;

/* Initialises MPI (if nobody has) and sets the rank for errors and logs. */
mt_status mt_comm_init(int *argc, char ***argv, mt_comm **out);
/* Finalises MPI when mt_comm_init initialised it. */
void mt_comm_finalize(mt_comm *c);

int mt_comm_rank(const mt_comm *c);
int mt_comm_world(const mt_comm *c);
int mt_comm_local_rank(const mt_comm *c);  /* rank among the ranks on this host */
int mt_comm_local_world(const mt_comm *c); /* ranks on this host */
const char *mt_comm_host(const mt_comm *c);
/* The MPI communicator (an MPI_Comm, as a pointer to it) for parallel HDF5. */
const void *mt_comm_mpi(const mt_comm *c);

/* Blocking collectives on host memory. n counts elements and may exceed INT_MAX. */
mt_status mt_comm_allreduce_f32(mt_comm *c, float *buf, size_t n, mt_comm_op op);
mt_status mt_comm_allreduce_f64(mt_comm *c, double *buf, size_t n, mt_comm_op op);
mt_status mt_comm_allreduce_i64(mt_comm *c, int64_t *buf, size_t n, mt_comm_op op);
mt_status mt_comm_max_f64(mt_comm *c, double *buf, size_t n);
mt_status mt_comm_broadcast(mt_comm *c, void *buf, size_t bytes, int root);
/* recv holds world * bytes: rank r's send lands at recv + r * bytes. */
mt_status mt_comm_allgather(mt_comm *c, const void *send, void *recv, size_t bytes);
/* Every rank's keyed rows on every rank, padding dropped: each rank has `rows` rows of row_bytes
 * (the same count on every rank) and a key per row (>= 0: a real row, e.g. an image index; < 0:
 * padding). *out and *out_keys (allocated here; free with mt_free) receive the real rows of rank
 * 0, then rank 1, ..., in their order, and *n their count. Collective; errors (memory on any rank)
 * are agreed. */
mt_status mt_comm_allgather_rows(mt_comm *c, const void *rows_data, const int64_t *keys,
                                 size_t rows, size_t row_bytes, void **out, int64_t **out_keys,
                                 int64_t *n);
mt_status mt_comm_barrier(mt_comm *c);

/* Non-blocking all-reduce of one f32 buffer (MPI_Iallreduce); wait applies AVG and frees req. */
typedef struct mt_comm_request mt_comm_request;
mt_status mt_comm_allreduce_start(mt_comm *c, float *buf, size_t n, mt_comm_op op,
                                  mt_comm_request **req);
mt_status mt_comm_test(mt_comm_request *req, bool *done); /* drives progress; does not free */
mt_status mt_comm_wait(mt_comm_request *req);

/* Bucketed all-reduce over a flat buffer. */
typedef struct mt_comm_buckets mt_comm_buckets;
/* Splits buf[0..n) into buckets of about bucket_bytes, from the END of the buffer towards the start
 * (backward produces the last layers' gradients first). */
mt_status mt_comm_buckets_init(mt_comm *c, float *buf, size_t n, size_t bucket_bytes, mt_comm_op op,
                               mt_comm_buckets **out);
size_t mt_comm_buckets_count(const mt_comm_buckets *b);
/* Says buf[offset, offset+count) is final for this step; a bucket whose elements are all final
 * starts its all-reduce at once. Every element must be marked exactly once per step. */
mt_status mt_comm_buckets_ready(mt_comm_buckets *b, size_t offset, size_t count);
/* Waits for every bucket (starting any whose elements were not all marked, which is an error) and
 * re-arms for the next step. *wait_seconds (may be NULL) gets the time spent blocked here. */
mt_status mt_comm_buckets_wait(mt_comm_buckets *b, double *wait_seconds);
void mt_comm_buckets_free(mt_comm_buckets *b);

/* Every rank passes its own status. All ranks get MT_OK if all were MT_OK; otherwise all get the
 * first failed rank's code and message ("rank 1 failed: ..."), and mt_comm_failure_agreed() turns
 * true so that the caller can end normally instead of aborting. Collective. */
mt_status mt_comm_agree(mt_comm *c, mt_status local);
bool mt_comm_failure_agreed(const mt_comm *c);

/* Prints message (with this rank) to stderr and ends every rank of the job. */
#ifdef __cplusplus
[[noreturn]]
#else
_Noreturn
#endif
void mt_comm_abort(mt_comm *c, int exit_code, const char *message);

/* "Open MPI v4.1.4, ..." */
const char *mt_comm_library_version(void);

#ifdef __cplusplus
}
#endif

#endif
