/* JSON through cJSON: parse errors with line and column, atomic pretty writes. */
#include "medtrain/json.h"

#include <string.h>

#include "medtrain/fs.h"
#include "medtrain/mem.h"

mt_status mt_json_parse(const char *text, size_t n, const char *name, cJSON **out) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!j) {
        /* cJSON reports where it stopped; turn that into line:column and show what was there. */
        const char *at = end ? end : cJSON_GetErrorPtr();
        if (!at || at < text || at > text + n) at = text;
        int line = 1, col = 1;
        for (const char *p = text; p < at; p++) {
            if (*p == '\n')
                line++, col = 1;
            else
                col++;
        }
        int show = 0;
        while (at + show < text + n && show < 20 && at[show] != '\n') show++;
        if (show == 0)
            return mt_fail(MT_ERR_FORMAT, "%s:%d:%d: invalid JSON (unexpected end of input)", name,
                           line, col);
        return mt_fail(MT_ERR_FORMAT, "%s:%d:%d: invalid JSON near '%.*s'", name, line, col, show,
                       at);
    }
    *out = j;
    return MT_OK;
}

mt_status mt_json_read_file(const char *path, cJSON **out) {
    char *text;
    size_t n;
    MT_TRY(mt_file_read(path, &text, &n));
    mt_status st = mt_json_parse(text, n, path, out);
    mt_free(text);
    return st;
}

mt_status mt_json_write_file(const char *path, const cJSON *j, int compact) {
    char *text = compact ? cJSON_PrintUnformatted(j) : cJSON_Print(j);
    if (!text) return mt_fail(MT_ERR_NOMEM, "%s: out of memory printing JSON", path);
    size_t n = strlen(text);
    text[n] = '\0';
    /* Files end with a newline, as text files should. */
    char *withnl = mt_alloc(n + 2, path);
    if (!withnl) {
        cJSON_free(text);
        return MT_ERR_NOMEM;
    }
    memcpy(withnl, text, n);
    withnl[n] = '\n';
    cJSON_free(text);
    mt_status st = mt_file_write_atomic(path, withnl, n + 1);
    mt_free(withnl);
    return st;
}
