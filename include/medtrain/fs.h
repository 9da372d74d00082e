/* Files. Nothing medtrain writes is ever half-written: mt_file_write_atomic writes to a temporary
 * name beside the target, fsyncs it, renames it into place and fsyncs the directory, so a crash
 * leaves either the old file or the new one. */
#ifndef MEDTRAIN_FS_H
#define MEDTRAIN_FS_H

#include <stdbool.h>
#include <stddef.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

mt_status mt_file_write_atomic(const char *path, const void *data, size_t n);
/* Reads a whole file; *data is NUL-terminated (not counted in *n) and freed with mt_free. */
mt_status mt_file_read(const char *path, char **data, size_t *n);
mt_status mt_mkdir_p(const char *path);   /* like `mkdir -p` */
mt_status mt_fsync_dir(const char *path); /* makes a rename in that directory durable */
bool mt_path_exists(const char *path);

#ifdef __cplusplus
}
#endif

#endif
