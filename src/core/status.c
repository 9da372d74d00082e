/* Errors: the per-thread message behind mt_fail(), and the rank that messages carry. */
#include "medtrain/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char message[MT_ERROR_MAX];
static int the_rank = 0, the_world = 1;

void mt_set_rank(int rank, int world) {
    the_rank = rank;
    the_world = world;
}
int mt_rank(void) {
    return the_rank;
}
int mt_world(void) {
    return the_world;
}

mt_status mt_fail(mt_status code, const char *fmt, ...) {
    int n = 0;
    if (the_world > 1) n = snprintf(message, sizeof message, "rank %d: ", the_rank);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message + n, sizeof message - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

mt_status mt_error_wrap(mt_status code, const char *fmt, ...) {
    char prefix[MT_ERROR_MAX], old[MT_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Keep "rank R: " at the very front: "rank 1: loading x: bad header". */
    const char *rest = message;
    int n = 0;
    if (the_world > 1 && strncmp(message, "rank ", 5) == 0) {
        const char *colon = strstr(message, ": ");
        if (colon) {
            n = (int)(colon + 2 - message);
            rest = colon + 2;
        }
    }
    snprintf(old, sizeof old, "%s", rest);
    snprintf(message + n, sizeof message - (size_t)n, "%s%s", prefix, old);
    return code;
}

const char *mt_error_message(void) {
    return message;
}
const char *mt_error_text(void) {
    if (strncmp(message, "rank ", 5) != 0) return message;
    const char *colon = strstr(message, ": ");
    return colon ? colon + 2 : message;
}

void mt_error_clear(void) {
    message[0] = '\0';
}

const char *mt_status_name(mt_status code) {
    switch (code) {
    case MT_OK:
        return "ok";
    case MT_ERR_USAGE:
        return "usage";
    case MT_ERR_ARG:
        return "argument";
    case MT_ERR_IO:
        return "io";
    case MT_ERR_FORMAT:
        return "format";
    case MT_ERR_CONFIG:
        return "config";
    case MT_ERR_NOMEM:
        return "out of memory";
    case MT_ERR_SHAPE:
        return "shape";
    case MT_ERR_UNSUPPORTED:
        return "unsupported";
    case MT_ERR_COMM:
        return "communication";
    case MT_ERR_DEVICE:
        return "device";
    case MT_ERR_NUMERIC:
        return "numeric";
    case MT_ERR_INTERNAL:
        return "internal";
    }
    return "unknown";
}
