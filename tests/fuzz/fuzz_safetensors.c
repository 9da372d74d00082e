/* Fuzz target: the safetensors reader (outside input: downloaded models, checkpoints written by
 * other tools). Any input must give MT_OK or an error whose message names the file, never a
 * crash, a leak or undefined behaviour. A file that opens must keep the reader's promises: every
 * tensor lies inside the input, the tensors tile the data exactly, names are found again, and
 * each tensor converts to f32 or says why not. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "medtrain/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mt_st_file *f = NULL;
    mt_status st = mt_st_open_buffer(data, size, "fuzz.safetensors", &f);
    if (st != MT_OK) {
        if (f || !strstr(mt_error_message(), "fuzz.safetensors")) __builtin_trap();
        return 0;
    }
    uint64_t header;
    memcpy(&header, data, 8);
    size_t covered = 0;
    for (size_t i = 0; i < mt_st_count(f); i++) {
        const mt_st_tensor *t = mt_st_at(f, i);
        const uint8_t *p = t->data;
        if (mt_st_find(f, t->name) != t) __builtin_trap();
        if (p < data + 8 + header || t->bytes > (size_t)(data + size - p)) __builtin_trap();
        if (t->numel < 0 || t->ndim < 0 || t->ndim > MT_ST_MAX_DIMS) __builtin_trap();
        covered += t->bytes;
        float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
        if (!out) __builtin_trap();
        st = mt_st_read_f32(f, t, out);
        if (st != MT_OK && (st != MT_ERR_UNSUPPORTED || !strstr(mt_error_message(), t->dtype_name)))
            __builtin_trap();
        free(out);
    }
    if (8 + header + covered != size) __builtin_trap();
    const char *format = mt_st_metadata(f, "format");
    if (format && strlen(format) > size) __builtin_trap();
    mt_st_close(f);
    return 0;
}
