/* Fuzz target: the YAML job-config parser and schema checks (outside input: users' job files and
 * command-line overrides). Any input must give MT_OK or an error with a message, never a crash, a
 * leak or undefined behaviour; a config that loads must survive its own canonical round trip. */
#include <stdint.h>
#include <string.h>

#include "medtrain/config.h"
#include "medtrain/mem.h"

static const mt_cfg_key schema[] = {
    {"task", MT_CFG_STR, NULL, MT_CFG_REQUIRED, "classify|segment|lm-lora", "what to train"},
    {"model.arch", MT_CFG_STR, "resnet18", 0, NULL, "architecture"},
    {"model.channels", MT_CFG_INT, "1", 0, NULL, "input channels"},
    {"train.lr", MT_CFG_FLOAT, "0.1", 0, NULL, "learning rate"},
    {"train.nesterov", MT_CFG_BOOL, "false", 0, NULL, "Nesterov momentum"},
    {"data.labels", MT_CFG_STR_LIST, "[a, b]", 0, NULL, "label names"},
    {"data.split", MT_CFG_INT_LIST, "[80, 10, 10]", 0, NULL, "split percentages"},
    {"data.mean", MT_CFG_FLOAT_LIST, NULL, 0, NULL, "normalisation mean"},
    {NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The last line, if it looks like key=value, is also tried as an override. */
    char override[256] = "";
    const uint8_t *nl = size ? memchr(data, '\n', size) : NULL;
    if (nl && (size_t)(nl - data) < sizeof override && memchr(data, '=', (size_t)(nl - data)))
        memcpy(override, data, (size_t)(nl - data));
    char *ov[1] = {override};
    mt_config *c = NULL;
    mt_status st =
        mt_config_parse((const char *)data, size, "fuzz.yaml", schema, override[0] ? 1 : 0, ov, &c);
    if (st != MT_OK) {
        if (!mt_error_message()[0]) __builtin_trap(); /* every failure explains itself */
        return 0;
    }
    char *yaml = mt_config_to_yaml(c);
    mt_config *again = NULL;
    if (!yaml ||
        mt_config_parse(yaml, strlen(yaml), "round trip", schema, 0, NULL, &again) != MT_OK)
        __builtin_trap();
    char *yaml2 = mt_config_to_yaml(again);
    if (!yaml2 || strcmp(yaml, yaml2) != 0) __builtin_trap(); /* canonical form is a fixed point */
    mt_free(yaml);
    mt_free(yaml2);
    mt_config_free(again);
    mt_config_free(c);
    return 0;
}
