/* Job configuration: YAML (through libyaml) checked against a schema.
 *
 * A schema is a table of dotted keys with a type, a default, allowed choices and a line of help. A
 * job file is a tree of YAML mappings whose leaves are scalars or lists of scalars:
 *
 *     task: classify
 *     model:
 *       arch: resnet18        # -> key "model.arch"
 *     data:
 *       labels: [Effusion, Nodule]
 *
 * Loading parses the file, applies command-line overrides (`model.arch=resnet50`, the value read as
 * a YAML scalar or flow list), fills defaults and checks everything: an unknown key ("did you mean
 * model.arch?"), a wrong type, a value outside its choices, a missing required key and malformed
 * YAML each fail with a message that names the file and line, or the command-line override.
 *
 *     static const mt_cfg_key schema[] = {
 *         {"task", MT_CFG_STR, NULL, MT_CFG_REQUIRED, "classify|segment", "what to train"},
 *         {"train.lr", MT_CFG_FLOAT, "0.1", 0, NULL, "peak learning rate"},
 *         {NULL},
 *     };
 *
 * Getters take a key from the schema; asking for a key the schema lacks, or with the wrong type, is
 * a programming error and aborts with the key named. */
#ifndef MEDTRAIN_CONFIG_H
#define MEDTRAIN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mt_cfg_type {
    MT_CFG_STR,
    MT_CFG_INT,   /* a YAML integer; 1e3 or 2.0 are not integers */
    MT_CFG_FLOAT, /* any YAML number; .inf and .nan are refused */
    MT_CFG_BOOL,  /* true/false (YAML 1.2 spelling) */
    MT_CFG_STR_LIST,
    MT_CFG_INT_LIST,
    MT_CFG_FLOAT_LIST,
} mt_cfg_type;

enum { MT_CFG_REQUIRED = 1 };

typedef struct mt_cfg_key {
    const char *key; /* dotted path, e.g. "train.lr"; NULL ends the table */
    mt_cfg_type type;
    const char *def;     /* default as YAML text ("0.1", "[a, b]"); NULL: unset unless given */
    int flags;           /* MT_CFG_REQUIRED */
    const char *choices; /* "sgd|adamw": allowed values of a STR (or each STR_LIST item); or NULL */
    const char *doc;     /* one line for --help and error hints */
} mt_cfg_key;

typedef struct mt_config mt_config;

/* Loads path (or, when path is NULL, the YAML text in `text` named `name`), applies the overrides
 * ("key=value" strings), and checks against schema. */
mt_status mt_config_load(const char *path, const mt_cfg_key *schema, int n_overrides,
                         char *const *overrides, mt_config **out);
mt_status mt_config_parse(const char *text, size_t n, const char *name, const mt_cfg_key *schema,
                          int n_overrides, char *const *overrides, mt_config **out);
void mt_config_free(mt_config *c);

bool mt_config_is_set(const mt_config *c, const char *key); /* given, or has a default */
const char *mt_config_str(const mt_config *c, const char *key);
int64_t mt_config_int(const mt_config *c, const char *key);
double mt_config_float(const mt_config *c, const char *key);
bool mt_config_bool(const mt_config *c, const char *key);
size_t mt_config_len(const mt_config *c, const char *key); /* items in a list */
const char *mt_config_str_at(const mt_config *c, const char *key, size_t i);
int64_t mt_config_int_at(const mt_config *c, const char *key, size_t i);
double mt_config_float_at(const mt_config *c, const char *key, size_t i);

/* Where a value came from, for messages about values that are well-typed but wrong together:
 * "jobs/x.yaml:12" or "command line `train.lr=5`" or "default". */
const char *mt_config_origin(const mt_config *c, const char *key);
/* Fails with "<origin>: <key>: <message>" (e.g. a batch size that does not divide). */
mt_status mt_config_fail(const mt_config *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The resolved config (every schema key that is set, defaults included) as canonical YAML, sorted
 * by key: written into run directories and hashed into the config digest. Caller frees. */
char *mt_config_to_yaml(const mt_config *c);
mt_status mt_config_write(const mt_config *c, const char *path); /* atomic */
mt_status mt_config_digest(const mt_config *c, char hex[65]);    /* SHA-256 of the canonical YAML */

/* Prints the schema as documented YAML (for --help and docs). */
void mt_config_print_schema(const mt_cfg_key *schema, void *file /* FILE* */);

#ifdef __cplusplus
}
#endif

#endif
