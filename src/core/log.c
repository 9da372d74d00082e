/* Rank-aware logging: formats a whole line into a buffer and writes it with one call. */
#include "medtrain/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static mt_log_level max_level = MT_LOG_INFO;
static bool all_ranks = false;

void mt_log_set_level(mt_log_level level) {
    max_level = level;
}
mt_log_level mt_log_get_level(void) {
    return max_level;
}
void mt_log_set_all_ranks(bool all) {
    all_ranks = all;
}

mt_status mt_log_parse_level(const char *text, mt_log_level *out) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(text, names[i]) == 0) {
            *out = (mt_log_level)i;
            return MT_OK;
        }
    return mt_fail(MT_ERR_USAGE, "log level '%s': expected error, warn, info or debug", text);
}

static void emit(mt_log_level level, const char *fmt, va_list ap) {
    static const char *tags[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
    char line[4096];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03d ", (int)(tv.tv_usec / 1000));
    if (mt_world() > 1) n += (size_t)snprintf(line + n, sizeof line - n, "rank %d ", mt_rank());
    n += (size_t)snprintf(line + n, sizeof line - n, "%s ", tags[level]);
    int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
    n = (m < 0 || n + (size_t)m >= sizeof line - 1) ? sizeof line - 2 : n + (size_t)m;
    line[n++] = '\n';
    /* One write(2) so that lines from threads and ranks sharing stderr do not interleave. */
    fflush(stderr);
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void mt_log(mt_log_level level, const char *fmt, ...) {
    if (level > max_level) return;
    if (level != MT_LOG_ERROR && mt_rank() != 0 && !all_ranks) return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, fmt, ap);
    va_end(ap);
}

void mt_log_rank(mt_log_level level, const char *fmt, ...) {
    if (level > max_level) return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, fmt, ap);
    va_end(ap);
}
