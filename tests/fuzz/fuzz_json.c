/* Fuzz target: JSON parsing with positioned errors (outside input: manifests, state.json,
 * adapter_config.json, tokenizer.json). */
#include <stdint.h>

#include "medtrain/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *j = NULL;
    mt_status st = mt_json_parse((const char *)data, size, "fuzz.json", &j);
    if (st != MT_OK) {
        if (!mt_error_message()[0]) __builtin_trap();
        return 0;
    }
    cJSON_Delete(j);
    return 0;
}
