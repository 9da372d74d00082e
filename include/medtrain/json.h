/* JSON through cJSON, with errors that name the file, line and column, and atomic writes. */
#ifndef MEDTRAIN_JSON_H
#define MEDTRAIN_JSON_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parses text (n bytes, need not be NUL-terminated); name is used in messages ("manifest.json"). */
mt_status mt_json_parse(const char *text, size_t n, const char *name, cJSON **out);
mt_status mt_json_read_file(const char *path, cJSON **out);
/* Writes j pretty-printed (or on one line when compact) to path atomically. */
mt_status mt_json_write_file(const char *path, const cJSON *j, int compact);

#ifdef __cplusplus
}
#endif

#endif
