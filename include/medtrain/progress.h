/* A progress report for long loops, printed by rank 0 only. On a terminal: one redrawn line with a
 * bar, the rate and the time left. Elsewhere (a Slurm log, a pipe): a plain line every
 * `interval` seconds and one at the end, so logs stay readable. */
#ifndef MEDTRAIN_PROGRESS_H
#define MEDTRAIN_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_progress {
    char label[64], unit[16], note[96];
    int64_t total, done;
    double start, last_draw, interval;
    FILE *out;
    bool tty, enabled;
} mt_progress;

/* total <= 0 means unknown (no bar or ETA). unit names the items: "img", "step". */
void mt_progress_begin(mt_progress *p, const char *label, int64_t total, const char *unit);
void mt_progress_update(mt_progress *p, int64_t done);
void mt_progress_note(mt_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mt_progress_end(mt_progress *p);
/* For tests: draw to out as if it were (or were not) a terminal, every interval seconds. */
void mt_progress_begin_on(mt_progress *p, FILE *out, bool tty, double interval, const char *label,
                          int64_t total, const char *unit);

#ifdef __cplusplus
}
#endif

#endif
