/* Rank-aware logging to stderr. Lines look like
 *     2026-11-24 21:40:01.123 rank 0 INFO  loaded 2000 images
 * (the rank is shown when the job has more than one). By default only rank 0 prints INFO, WARN and
 * DEBUG, so that N ranks do not print N copies; errors print on every rank. mt_log_rank() is for
 * news only this rank has (a file it skipped) and prints on any rank. --log-all-ranks turns the
 * rank-0 filter off. Lines are written whole, so threads and ranks do not interleave mid-line. */
#ifndef MEDTRAIN_LOG_H
#define MEDTRAIN_LOG_H

#include <stdbool.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mt_log_level { MT_LOG_ERROR, MT_LOG_WARN, MT_LOG_INFO, MT_LOG_DEBUG } mt_log_level;

void mt_log_set_level(mt_log_level level);
mt_log_level mt_log_get_level(void);
void mt_log_set_all_ranks(bool all);
/* Parses "error", "warn", "info" or "debug". */
mt_status mt_log_parse_level(const char *text, mt_log_level *out);

void mt_log(mt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mt_log_rank(mt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define MT_ERROR(...) mt_log(MT_LOG_ERROR, __VA_ARGS__)
#define MT_WARN(...)  mt_log(MT_LOG_WARN, __VA_ARGS__)
#define MT_INFO(...)  mt_log(MT_LOG_INFO, __VA_ARGS__)
#define MT_DEBUG(...) mt_log(MT_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
