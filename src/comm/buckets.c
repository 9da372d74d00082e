/* Bucketed all-reduce: overlapping gradient communication with backward.
 *
 * The flat gradient buffer buf[0..n) is cut into buckets of E = bucket_bytes / 4 elements counted
 * from the END, because backward finishes the last layers first:
 *
 *     buf:   [ bucket K-1 (short) | ... | bucket 1 | bucket 0 ]
 *     bucket k covers [n - (k+1)E, n - kE), clipped at 0
 *
 * Backward calls mt_comm_buckets_ready(offset, count) as each parameter's gradient becomes final.
 * Each bucket counts its elements still pending; when a bucket is complete its non-blocking
 * all-reduce starts (mt_comm_allreduce_start), and mt_comm_buckets_wait() finishes them all.
 *
 * Order. MPI requires every rank to start the collectives of one communicator in the same order.
 * Buckets therefore start strictly in index order 0, 1, 2, ...: a complete bucket waits until all
 * buckets before it have started. The start order is the same on every rank by construction, even
 * if ranks mark ranges in different orders (with the usual reverse order nothing waits: bucket 0
 * completes first). mt_comm_buckets_wait() starts whatever has not started, in the same order, so
 * a rank that forgot to mark a range reports an error instead of leaving the others hanging. Every
 * rank must still call mt_comm_buckets_wait() once per step, errors or not, before agreeing on
 * the step's status with mt_comm_agree().
 *
 * Marks are kept as a sorted list of disjoint, non-touching ranges, so that marking an element
 * twice, which would start a bucket before its data is final, is caught exactly. */
#include "medtrain/comm.h"

#include <stdio.h>
#include <string.h>

#include "medtrain/mem.h"
#include "medtrain/timer.h"

typedef struct span {
    size_t begin, end;
} span;

typedef struct bucket {
    size_t begin, end;    /* buf[begin, end) */
    size_t pending;       /* elements not yet marked this step */
    mt_comm_request *req; /* the all-reduce in flight, NULL before it starts */
} bucket;

struct mt_comm_buckets {
    mt_comm *comm;
    float *buf;
    size_t n;
    mt_comm_op op;
    size_t per;    /* elements in a full bucket */
    size_t count;  /* buckets */
    bucket *b;     /* b[0] holds the end of buf */
    size_t next;   /* the next bucket to start: b[0..next) have started */
    size_t oldest; /* b[0..oldest) are known complete */
    span *marks;   /* marked ranges this step, sorted, disjoint, not touching */
    size_t nmarks, cap;
};

mt_status mt_comm_buckets_init(mt_comm *c, float *buf, size_t n, size_t bucket_bytes, mt_comm_op op,
                               mt_comm_buckets **out) {
    *out = NULL;
    if (!c) return mt_fail(MT_ERR_ARG, "mt_comm_buckets_init: communicator is NULL");
    if (!buf && n > 0)
        return mt_fail(MT_ERR_ARG, "mt_comm_buckets_init: buffer is NULL but count is %zu", n);
    if (bucket_bytes < sizeof(float))
        return mt_fail(MT_ERR_ARG, "mt_comm_buckets_init: bucket size %zu bytes holds no float",
                       bucket_bytes);
    if (op != MT_COMM_SUM && op != MT_COMM_AVG)
        return mt_fail(MT_ERR_ARG, "mt_comm_buckets_init: op %d is neither SUM nor AVG", (int)op);

    size_t per = bucket_bytes / sizeof(float);
    size_t count = n / per + (n % per != 0);
    mt_comm_buckets *bs = mt_calloc(1, sizeof *bs, "gradient buckets");
    if (!bs) return MT_ERR_NOMEM;
    *bs = (mt_comm_buckets){
        .comm = c, .buf = buf, .n = n, .op = op, .per = per, .count = count, .cap = 16};
    bs->b = mt_calloc(count ? count : 1, sizeof *bs->b, "gradient bucket table");
    bs->marks = mt_alloc(bs->cap * sizeof *bs->marks, "gradient bucket marks");
    if (!bs->b || !bs->marks) {
        mt_comm_buckets_free(bs);
        return MT_ERR_NOMEM;
    }
    for (size_t k = 0; k < count; k++) {
        bucket *b = &bs->b[k];
        b->end = n - k * per;
        b->begin = b->end > per ? b->end - per : 0;
        b->pending = b->end - b->begin;
    }
    *out = bs;
    return MT_OK;
}

size_t mt_comm_buckets_count(const mt_comm_buckets *b) {
    return b->count;
}

/* ---- marked ranges ---- */

/* Index of the first mark that ends after x (nmarks if none). */
static size_t first_mark_ending_after(const mt_comm_buckets *bs, size_t x) {
    size_t lo = 0, hi = bs->nmarks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bs->marks[mid].end > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static mt_status grow_marks(mt_comm_buckets *bs) {
    span *m = mt_alloc(2 * bs->cap * sizeof *m, "gradient bucket marks");
    if (!m) return MT_ERR_NOMEM;
    memcpy(m, bs->marks, bs->nmarks * sizeof *m);
    mt_free(bs->marks);
    bs->marks = m;
    bs->cap *= 2;
    return MT_OK;
}

/* Adds [a, b) to the marks, or fails without changing anything if part of it is marked. */
static mt_status add_mark(mt_comm_buckets *bs, size_t a, size_t b) {
    size_t j = first_mark_ending_after(bs, a);
    if (j < bs->nmarks && bs->marks[j].begin < b) {
        size_t x = bs->marks[j].begin > a ? bs->marks[j].begin : a;
        size_t y = bs->marks[j].end < b ? bs->marks[j].end : b;
        return mt_fail(MT_ERR_ARG,
                       "gradient buckets: buf[%zu, %zu) marked ready, but buf[%zu, %zu) was "
                       "already marked this step (each element is marked once per step)",
                       a, b, x, y);
    }
    bool joins_left = j > 0 && bs->marks[j - 1].end == a;
    bool joins_right = j < bs->nmarks && bs->marks[j].begin == b;
    if (joins_left && joins_right) {
        bs->marks[j - 1].end = bs->marks[j].end;
        memmove(&bs->marks[j], &bs->marks[j + 1], (bs->nmarks - j - 1) * sizeof *bs->marks);
        bs->nmarks--;
    } else if (joins_left) {
        bs->marks[j - 1].end = b;
    } else if (joins_right) {
        bs->marks[j].begin = a;
    } else {
        if (bs->nmarks == bs->cap) MT_TRY(grow_marks(bs));
        memmove(&bs->marks[j + 1], &bs->marks[j], (bs->nmarks - j) * sizeof *bs->marks);
        bs->marks[j] = (span){a, b};
        bs->nmarks++;
    }
    return MT_OK;
}

/* The first unmarked range inside [begin, end), which must have one. */
static span first_gap(const mt_comm_buckets *bs, size_t begin, size_t end) {
    size_t j = first_mark_ending_after(bs, begin);
    size_t at = begin;
    if (j < bs->nmarks && bs->marks[j].begin <= at) at = bs->marks[j++].end;
    size_t stop = j < bs->nmarks && bs->marks[j].begin < end ? bs->marks[j].begin : end;
    return (span){at, stop};
}

/* ---- starting and finishing buckets ---- */

/* Starts complete buckets (all of them when forced) in index order, the order that keeps ranks
 * matched. */
static mt_status start_buckets(mt_comm_buckets *bs, bool force) {
    while (bs->next < bs->count && (force || bs->b[bs->next].pending == 0)) {
        bucket *b = &bs->b[bs->next];
        MT_TRY(mt_comm_allreduce_start(bs->comm, bs->buf + b->begin, b->end - b->begin, bs->op,
                                       &b->req));
        bs->next++;
    }
    return MT_OK;
}

/* Lets MPI move data for buckets in flight: one test drives the progress engine for all. */
static mt_status drive_progress(mt_comm_buckets *bs) {
    while (bs->oldest < bs->next) {
        bool done = false;
        MT_TRY(mt_comm_test(bs->b[bs->oldest].req, &done));
        if (!done) break;
        bs->oldest++;
    }
    return MT_OK;
}

mt_status mt_comm_buckets_ready(mt_comm_buckets *bs, size_t offset, size_t count) {
    if (offset > bs->n || count > bs->n - offset)
        return mt_fail(MT_ERR_ARG,
                       "gradient buckets: buf[%zu, %zu + %zu) marked ready, outside the buffer "
                       "[0, %zu)",
                       offset, offset, count, bs->n);
    if (count == 0) return MT_OK;
    size_t a = offset, e = offset + count;
    MT_TRY(add_mark(bs, a, e));

    size_t lo = (bs->n - e) / bs->per, hi = (bs->n - 1 - a) / bs->per; /* buckets touching [a, e) */
    for (size_t k = lo; k <= hi; k++) {
        bucket *b = &bs->b[k];
        size_t x = a > b->begin ? a : b->begin, y = e < b->end ? e : b->end;
        b->pending -= y - x;
    }
    MT_TRY(start_buckets(bs, false));
    return drive_progress(bs);
}

/* Names the first bucket with unmarked elements (and how many more there are), or returns OK. */
static mt_status report_unmarked(const mt_comm_buckets *bs) {
    size_t first = bs->count, others = 0;
    for (size_t k = 0; k < bs->count; k++) {
        if (bs->b[k].pending == 0) continue;
        if (first == bs->count)
            first = k;
        else
            others++;
    }
    if (first == bs->count) return MT_OK;
    const bucket *b = &bs->b[first];
    span gap = first_gap(bs, b->begin, b->end);
    char more[64] = "";
    if (others) snprintf(more, sizeof more, " (and %zu more incomplete bucket(s))", others);
    return mt_fail(MT_ERR_INTERNAL,
                   "gradient buckets: bucket %zu (buf[%zu, %zu)) has %zu of %zu elements never "
                   "marked ready this step, first missing buf[%zu, %zu)%s; the step's gradients "
                   "are not fully reduced",
                   first, b->begin, b->end, b->pending, b->end - b->begin, gap.begin, gap.end,
                   more);
}

static void rearm(mt_comm_buckets *bs) {
    for (size_t k = 0; k < bs->count; k++) {
        bucket *b = &bs->b[k];
        b->pending = b->end - b->begin;
        b->req = NULL;
    }
    bs->next = bs->oldest = 0;
    bs->nmarks = 0;
}

mt_status mt_comm_buckets_wait(mt_comm_buckets *bs, double *wait_seconds) {
    double t0 = mt_now();
    mt_status unmarked = report_unmarked(bs);
    /* Incomplete buckets start anyway, in order, so that every rank makes the same calls. */
    mt_status st = start_buckets(bs, true);
    for (size_t k = 0; k < bs->next; k++) {
        mt_status w = mt_comm_wait(bs->b[k].req);
        if (w != MT_OK && st == MT_OK) st = w;
    }
    if (wait_seconds) *wait_seconds = mt_now() - t0;
    rearm(bs);
    return st != MT_OK ? st : unmarked; /* an MPI failure's message replaced the other one */
}

void mt_comm_buckets_free(mt_comm_buckets *bs) {
    if (!bs) return;
    mt_free(bs->b);
    mt_free(bs->marks);
    mt_free(bs);
}
