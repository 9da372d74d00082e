/* Monotonic time, for throughput and waits: never wall-clock, which jumps. */
#ifndef MEDTRAIN_TIMER_H
#define MEDTRAIN_TIMER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

double mt_now(void); /* seconds since an arbitrary fixed point, monotonic */

/* Accumulates time over many start/stop intervals (data wait, communication wait). */
typedef struct mt_timer {
    double started, total;
    int64_t count;
} mt_timer;

static inline void mt_timer_start(mt_timer *t) {
    t->started = mt_now();
}
static inline void mt_timer_stop(mt_timer *t) {
    t->total += mt_now() - t->started;
    t->count++;
}
static inline void mt_timer_reset(mt_timer *t) {
    t->started = t->total = 0, t->count = 0;
}

#ifdef __cplusplus
}
#endif

#endif
