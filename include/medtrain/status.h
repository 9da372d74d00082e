/* Errors. Every function that can fail returns an mt_status; on failure it also leaves a message
 * for humans in a per-thread buffer (like errno, but with words). The message names what the user
 * can act on: the file, the field or line, the expected and found values, and the rank when the job
 * has more than one. Callers add context with mt_error_wrap() as the error travels up.
 *
 *     if (n < 0) return mt_fail(MT_ERR_CONFIG, "%s:%d: train.batch: expected > 0, found %d", ...);
 *     MT_TRY(mt_config_load(path, schema, 0, NULL, &cfg));
 */
#ifndef MEDTRAIN_STATUS_H
#define MEDTRAIN_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mt_status {
    MT_OK = 0,
    MT_ERR_USAGE,       /* bad command-line usage: the CLI exits with 2 */
    MT_ERR_ARG,         /* bad argument to a function (a caller's bug or a bad value) */
    MT_ERR_IO,          /* file system or network I/O */
    MT_ERR_FORMAT,      /* malformed input file (YAML, JSON, DICOM, safetensors, ...) */
    MT_ERR_CONFIG,      /* unknown key, wrong type or missing key in a config */
    MT_ERR_NOMEM,       /* allocation failed */
    MT_ERR_SHAPE,       /* tensor shape, dtype or device mismatch */
    MT_ERR_UNSUPPORTED, /* valid request this build or backend cannot do */
    MT_ERR_COMM,        /* MPI or NCCL */
    MT_ERR_DEVICE,      /* CUDA runtime or library */
    MT_ERR_NUMERIC,     /* NaN or infinity where a number was needed */
    MT_ERR_INTERNAL,    /* a broken invariant: a bug in medtrain */
} mt_status;

#define MT_ERROR_MAX 2048 /* bytes kept for one message, terminator included */

/* Sets this thread's message (printf-style) and returns code, so that `return mt_fail(...)` reads
 * naturally. When the job has more than one rank the message starts with "rank R: ". */
mt_status mt_fail(mt_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes context to the current message ("loading ckpt/step_5: " + message) and returns code. */
mt_status mt_error_wrap(mt_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *mt_error_message(void); /* "" when no error was set on this thread */
/* The message without its "rank R: " prefix, for log lines that show the rank already. */
const char *mt_error_text(void);
void mt_error_clear(void);
const char *mt_status_name(mt_status code); /* "io", "config", ... */

/* Tells the error and log modules which rank this process is (set once by the communicator). */
void mt_set_rank(int rank, int world);
int mt_rank(void);
int mt_world(void);

/* Returns from the calling function when expr fails; the callee already set the message. */
#define MT_TRY(expr)                                                                               \
    do {                                                                                           \
        mt_status mt_try_status_ = (expr);                                                         \
        if (mt_try_status_ != MT_OK) return mt_try_status_;                                        \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
