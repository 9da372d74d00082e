/* Tests for the YAML config module: typing, defaults, overrides, every error message (each names
 * the file and line, or the command-line override), canonical YAML round trips, digests,
 * allocation failures, and the aborts that catch getter misuse. argv[1] is tests/core/data. */
#define _POSIX_C_SOURCE 200809L
#include "mt_test.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "medtrain/config.h"
#include "medtrain/fs.h"
#include "medtrain/mem.h"

static const char *data_dir = "tests/core/data";

static const mt_cfg_key schema[] = {
    {"task", MT_CFG_STR, NULL, MT_CFG_REQUIRED, "classify|segment", "what to train"},
    {"model.arch", MT_CFG_STR, "resnet18", 0, "resnet18|resnet50|unet", "network architecture"},
    {"model.depth", MT_CFG_INT, "4", 0, NULL, "encoder depth"},
    {"train.lr", MT_CFG_FLOAT, "0.1", 0, NULL, "peak learning rate"},
    {"train.epochs", MT_CFG_INT, "10", 0, NULL, "passes over the data"},
    {"train.warmup", MT_CFG_INT, NULL, 0, NULL, "warm-up steps"},
    {"train.amp", MT_CFG_BOOL, "false", 0, NULL, "mixed precision"},
    {"train.optim.name", MT_CFG_STR, "sgd", 0, "sgd|adamw", "optimizer"},
    {"train.optim.betas", MT_CFG_FLOAT_LIST, "[0.9, 0.999]", 0, NULL, "Adam betas"},
    {"data.path", MT_CFG_STR, NULL, 0, NULL, "dataset file"},
    {"data.labels", MT_CFG_STR_LIST, "[]", 0, NULL, "class names"},
    {"data.sizes", MT_CFG_INT_LIST, NULL, 0, NULL, "crop sizes"},
    {"data.views", MT_CFG_STR_LIST, NULL, 0, "PA|AP|LAT", "views to keep"},
    {"seed", MT_CFG_INT, "0", 0, NULL, "random seed"},
    {NULL},
};

static char *fixture(const char *name) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    return path;
}

/* Parses text as "jobs/x.yaml" with the test schema. */
static mt_status parse(const char *text, mt_config **c) {
    return mt_config_parse(text, strlen(text), "jobs/x.yaml", schema, 0, NULL, c);
}

static mt_status parse_over(const char *text, int n, char **over, mt_config **c) {
    return mt_config_parse(text, strlen(text), "jobs/x.yaml", schema, n, over, c);
}

/* Runs parse(text) expecting failure with code and every given substring in the message. */
#define PARSE_FAILS(text, code, ...)                                                               \
    do {                                                                                           \
        mt_config *c_ = NULL;                                                                      \
        MT_CHECK_FAILS(parse(text, &c_), code, __VA_ARGS__);                                       \
        MT_CHECK(c_ == NULL);                                                                      \
        mt_config_free(c_);                                                                        \
    } while (0)

static void test_valid_file(void) {
    mt_config *c = NULL;
    char *path = fixture("valid.yaml");
    MT_CHECK_OK(mt_config_load(path, schema, 0, NULL, &c));
    if (!c) return;
    MT_CHECK(!strcmp(mt_config_str(c, "task"), "classify"));
    MT_CHECK(!strcmp(mt_config_str(c, "model.arch"), "resnet50"));
    MT_CHECK(mt_config_int(c, "model.depth") == 5);
    MT_CHECK_NEAR(mt_config_float(c, "train.lr"), 3e-4, 1e-15);
    MT_CHECK(mt_config_bool(c, "train.amp"));
    MT_CHECK(!strcmp(mt_config_str(c, "train.optim.name"), "adamw"));
    MT_CHECK(mt_config_len(c, "train.optim.betas") == 2);
    MT_CHECK_NEAR(mt_config_float_at(c, "train.optim.betas", 1), 0.95, 1e-15);
    MT_CHECK(!strcmp(mt_config_str(c, "data.path"), "/data/chest x-ray.h5"));
    MT_CHECK(mt_config_len(c, "data.labels") == 3);
    MT_CHECK(!strcmp(mt_config_str_at(c, "data.labels", 2), "No Finding"));
    MT_CHECK(mt_config_len(c, "data.sizes") == 2);
    MT_CHECK(mt_config_int_at(c, "data.sizes", 0) == 224);
    MT_CHECK(mt_config_int_at(c, "data.sizes", 1) == 256);
    /* defaults fill what the file leaves out */
    MT_CHECK(mt_config_int(c, "train.epochs") == 10);
    MT_CHECK(mt_config_int(c, "seed") == 0);
    MT_CHECK(!strcmp(mt_config_origin(c, "seed"), "default"));
    /* unset optional keys */
    MT_CHECK(!mt_config_is_set(c, "train.warmup"));
    MT_CHECK(!mt_config_is_set(c, "data.views"));
    MT_CHECK(mt_config_len(c, "data.views") == 0);
    MT_CHECK(mt_config_is_set(c, "seed"));
    /* origins name the file and the key's line */
    char want[4200];
    snprintf(want, sizeof want, "%s:7", path);
    MT_CHECK(!strcmp(mt_config_origin(c, "train.lr"), want), "origin %s",
             mt_config_origin(c, "train.lr"));
    snprintf(want, sizeof want, "%s:11", path);
    MT_CHECK(!strcmp(mt_config_origin(c, "train.optim.betas"), want));
    mt_config_free(c);
}

static void test_defaults_and_text(void) {
    mt_config *c = NULL;
    MT_CHECK_OK(parse("task: segment\n", &c));
    if (!c) return;
    MT_CHECK(!strcmp(mt_config_str(c, "task"), "segment"));
    MT_CHECK(!strcmp(mt_config_str(c, "model.arch"), "resnet18"));
    MT_CHECK(mt_config_int(c, "model.depth") == 4);
    MT_CHECK_NEAR(mt_config_float(c, "train.lr"), 0.1, 0);
    MT_CHECK(!mt_config_bool(c, "train.amp"));
    MT_CHECK(mt_config_len(c, "train.optim.betas") == 2);
    MT_CHECK_NEAR(mt_config_float_at(c, "train.optim.betas", 1), 0.999, 0);
    MT_CHECK(mt_config_is_set(c, "data.labels") && mt_config_len(c, "data.labels") == 0);
    MT_CHECK(mt_config_str(c, "data.path") == NULL);
    MT_CHECK(!strcmp(mt_config_origin(c, "task"), "jobs/x.yaml:1"));
    MT_CHECK(!strcmp(mt_config_origin(c, "model.arch"), "default"));
    mt_config_free(c);

    /* dotted keys in the file, flow mappings, comments, an empty section, YAML spellings */
    c = NULL;
    MT_CHECK_OK(parse("# job\ntask: classify  # comment\ntrain.lr: .5\nmodel: {depth: -3}\n"
                      "data:\ntrain:\n  amp: TRUE\n  epochs: +7\n",
                      &c));
    if (!c) return;
    MT_CHECK_NEAR(mt_config_float(c, "train.lr"), 0.5, 0);
    MT_CHECK(mt_config_int(c, "model.depth") == -3);
    MT_CHECK(mt_config_bool(c, "train.amp"));
    MT_CHECK(mt_config_int(c, "train.epochs") == 7);
    MT_CHECK(!strcmp(mt_config_origin(c, "train.lr"), "jobs/x.yaml:3"));
    mt_config_free(c);

    /* floats: integers and exponents are numbers */
    c = NULL;
    MT_CHECK_OK(parse("task: classify\ntrain: {lr: -3}\n", &c));
    if (c) MT_CHECK_NEAR(mt_config_float(c, "train.lr"), -3.0, 0);
    mt_config_free(c);
    c = NULL;
    MT_CHECK_OK(parse("task: classify\ntrain: {lr: 1E-4}\n", &c));
    if (c) MT_CHECK_NEAR(mt_config_float(c, "train.lr"), 1e-4, 0);
    mt_config_free(c);
}

static void test_empty_and_shapes(void) {
    mt_config *c = NULL;
    /* an empty file is an empty mapping: only the required key is missing */
    MT_CHECK_FAILS(mt_config_parse("", 0, "jobs/empty.yaml", schema, 0, NULL, &c), MT_ERR_CONFIG,
                   "jobs/empty.yaml: missing required key 'task' (what to train)");
    MT_CHECK_FAILS(parse("# nothing but a comment\n", &c), MT_ERR_CONFIG, "missing required key");
    char *over[] = {"task=classify"};
    MT_CHECK_OK(mt_config_parse("", 0, "jobs/empty.yaml", schema, 1, over, &c));
    mt_config_free(c);
    c = NULL;
    MT_CHECK_FAILS(parse("---\n", &c), MT_ERR_CONFIG, "jobs/x.yaml: missing required key");
    /* no file at all: defaults and overrides */
    MT_CHECK_OK(mt_config_load(NULL, schema, 1, over, &c));
    if (c) MT_CHECK(mt_config_int(c, "model.depth") == 4);
    mt_config_free(c);

    PARSE_FAILS("- a\n- b\n", MT_ERR_CONFIG, "jobs/x.yaml:1: expected a mapping",
                "top level, found a list");
    PARSE_FAILS("\n\njust words\n", MT_ERR_CONFIG, "jobs/x.yaml:3:", "found 'just words'");
    PARSE_FAILS("task: classify\n---\ntask: segment\n", MT_ERR_FORMAT,
                "jobs/x.yaml:2:", "second YAML document");
    PARSE_FAILS("task: &t classify\nmodel:\n  arch: *t\n", MT_ERR_FORMAT,
                "jobs/x.yaml:3:", "aliases (*t) are not supported");
    PARSE_FAILS("task: !!str classify\n", MT_ERR_FORMAT, "jobs/x.yaml:1:", "tags");
    PARSE_FAILS("task: classify\n[a]: 1\n", MT_ERR_FORMAT, "jobs/x.yaml:2:", "key must be a name");
    PARSE_FAILS("task: classify\nmodel: resnet18\n", MT_ERR_CONFIG, "jobs/x.yaml:2: model:",
                "expected a mapping of keys (arch, depth), found 'resnet18'");
    PARSE_FAILS("task: classify\nmodel: [a, b]\n", MT_ERR_CONFIG,
                "jobs/x.yaml:2: model:", "found a list");
    PARSE_FAILS("task:\n  name: classify\n", MT_ERR_CONFIG,
                "jobs/x.yaml:1: task: expected a string, found a mapping");
    PARSE_FAILS("task: [classify]\n", MT_ERR_CONFIG,
                "jobs/x.yaml:1: task: expected a string, found a list");
    PARSE_FAILS("task: classify\ndata:\n  path:\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: data.path: expected a string, found nothing");
    PARSE_FAILS("task: classify\ndata:\n  path: ~\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: data.path: expected a string, found '~'");
}

static void test_unknown_keys(void) {
    PARSE_FAILS("task: classify\ntrain:\n  lrr: 0.1\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: unknown key 'train.lrr' (did you mean 'train.lr'?)");
    /* a mistyped section */
    PARSE_FAILS("task: classify\ntrian:\n  lr: 0.1\n", MT_ERR_CONFIG,
                "jobs/x.yaml:2: unknown key 'trian' (did you mean 'train'?)");
    /* deeply nested */
    PARSE_FAILS("task: classify\ntrain:\n  optim:\n    nmae: sgd\n", MT_ERR_CONFIG,
                "jobs/x.yaml:4: unknown key 'train.optim.nmae' (did you mean 'train.optim.name'?)");
    /* right name, wrong section */
    PARSE_FAILS("task: classify\nmodel:\n  lr: 0.1\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: unknown key 'model.lr' (did you mean 'train.lr'?)");
    /* nothing close: the valid keys at that level are listed */
    PARSE_FAILS("task: classify\ntrain:\n  momentum: 0.9\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: unknown key 'train.momentum' (keys under 'train': lr, epochs, "
                "warmup, amp, optim)");
    PARSE_FAILS("task: classify\n\nbatchsize: 32\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: unknown key 'batchsize' (top-level keys: task, model, train, "
                "data, seed)");
    /* a fixture file, named as given */
    mt_config *c = NULL;
    char *path = fixture("typo.yaml");
    char want[4200];
    snprintf(want, sizeof want, "%s:4: unknown key 'train.epohcs' (did you mean 'train.epochs'?)",
             path);
    MT_CHECK_FAILS(mt_config_load(path, schema, 0, NULL, &c), MT_ERR_CONFIG, want);
    MT_CHECK(c == NULL);
}

static void test_wrong_types(void) {
    /* integers */
    PARSE_FAILS("task: classify\ntrain:\n  epochs: 1.5\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.epochs: expected an integer, found '1.5' (not a whole "
                "number)");
    PARSE_FAILS("task: classify\ntrain:\n  epochs: 1e3\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.epochs: expected an integer, found '1e3'");
    PARSE_FAILS("task: classify\ntrain:\n  epochs: abc\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.epochs: expected an integer, found 'abc'");
    PARSE_FAILS("task: classify\nseed: 0x10\n", MT_ERR_CONFIG,
                "jobs/x.yaml:2: seed: expected an integer, found '0x10'");
    PARSE_FAILS("task: classify\nseed: 9223372036854775808\n", MT_ERR_CONFIG,
                "jobs/x.yaml:2: seed: expected an integer", "64-bit");
    PARSE_FAILS("task: classify\nseed: -9223372036854775809\n", MT_ERR_CONFIG,
                "jobs/x.yaml:2:", "64-bit");
    /* the extremes themselves are fine */
    mt_config *c = NULL;
    MT_CHECK_OK(parse("task: classify\nseed: -9223372036854775808\n", &c));
    if (c) MT_CHECK(mt_config_int(c, "seed") == INT64_MIN);
    mt_config_free(c);
    /* floats */
    PARSE_FAILS("task: classify\ntrain:\n  lr: fast\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.lr: expected a number, found 'fast'");
    PARSE_FAILS("task: classify\ntrain:\n  lr: .inf\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.lr: expected a number, found '.inf'", "NaN");
    PARSE_FAILS("task: classify\ntrain:\n  lr: -.inf\n", MT_ERR_CONFIG, "jobs/x.yaml:3:");
    PARSE_FAILS("task: classify\ntrain:\n  lr: .NaN\n", MT_ERR_CONFIG, "jobs/x.yaml:3:");
    PARSE_FAILS("task: classify\ntrain:\n  lr: 1e999\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3:", "too large");
    PARSE_FAILS("task: classify\ntrain:\n  lr: 1.2.3\n", MT_ERR_CONFIG, "jobs/x.yaml:3:");
    PARSE_FAILS("task: classify\ntrain:\n  lr: .\n", MT_ERR_CONFIG, "jobs/x.yaml:3:");
    /* booleans: YAML 1.2 spellings only */
    PARSE_FAILS("task: classify\ntrain:\n  amp: yes\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.amp: expected true or false, found 'yes'");
    PARSE_FAILS("task: classify\ntrain:\n  amp: 1\n", MT_ERR_CONFIG, "jobs/x.yaml:3:");
    /* list items: the index and the item's own line */
    PARSE_FAILS("task: classify\ndata:\n  sizes: [224, x, 3]\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: data.sizes[1]: expected an integer, found 'x'");
    PARSE_FAILS("task: classify\ntrain:\n  optim:\n    betas:\n      - 0.9\n      - [1]\n",
                MT_ERR_CONFIG,
                "jobs/x.yaml:6: train.optim.betas[1]: expected a number, found a list");
    char *path = fixture("wrong_type.yaml");
    char want[4200];
    snprintf(want, sizeof want, "%s:7: data.sizes[1]: expected an integer, found 'big'", path);
    MT_CHECK_FAILS(mt_config_load(path, schema, 0, NULL, &c), MT_ERR_CONFIG, want);
    /* a scalar where a list belongs, and a mapping */
    PARSE_FAILS("task: classify\ndata:\n  sizes: 224\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: data.sizes: expected a list of integers, found '224'", "[a, b]");
    PARSE_FAILS("task: classify\ndata:\n  labels: {a: 1}\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: data.labels: expected a list of strings, found a mapping");
    PARSE_FAILS("task: classify\ntrain:\n  lr: {a: 1}\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.lr: expected a number, found a mapping");
    /* any scalar is a string, numbers included */
    c = NULL;
    MT_CHECK_OK(parse("task: classify\ndata:\n  path: 123\n  labels: [1, true, 2.5]\n", &c));
    if (c) {
        MT_CHECK(!strcmp(mt_config_str(c, "data.path"), "123"));
        MT_CHECK(!strcmp(mt_config_str_at(c, "data.labels", 1), "true"));
    }
    mt_config_free(c);
}

static void test_quoted_numbers(void) {
    PARSE_FAILS("task: classify\ntrain:\n  epochs: \"10\"\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.epochs: expected an integer, found \"10\"", "quotes");
    PARSE_FAILS("task: classify\ntrain:\n  lr: '0.1'\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: train.lr: expected a number, found \"0.1\"");
    PARSE_FAILS("task: classify\ntrain:\n  amp: \"true\"\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3:", "expected true or false");
    PARSE_FAILS("task: classify\ndata:\n  sizes: [1, \"2\"]\n", MT_ERR_CONFIG,
                "jobs/x.yaml:3: data.sizes[1]: expected an integer, found \"2\"");
    mt_config *c = NULL;
    MT_CHECK_OK(parse("task: classify\ndata:\n  path: \"123\"\n", &c));
    if (c) MT_CHECK(!strcmp(mt_config_str(c, "data.path"), "123"));
    mt_config_free(c);
}

static void test_missing(void) {
    PARSE_FAILS("model:\n  arch: unet\n", MT_ERR_CONFIG,
                "jobs/x.yaml: missing required key 'task' (what to train)");
    mt_config *c = NULL;
    MT_CHECK_FAILS(mt_config_load("/nonexistent/dir/job.yaml", schema, 0, NULL, &c), MT_ERR_IO,
                   "/nonexistent/dir/job.yaml");
    MT_CHECK(c == NULL);
    static const mt_cfg_key two[] = {
        {"a", MT_CFG_INT, NULL, MT_CFG_REQUIRED, NULL, "first"},
        {"b.c", MT_CFG_STR, NULL, MT_CFG_REQUIRED, NULL, NULL},
        {NULL},
    };
    MT_CHECK_FAILS(mt_config_parse("", 0, "j.yaml", two, 0, NULL, &c), MT_ERR_CONFIG,
                   "j.yaml: missing required keys 'a' (first), 'b.c'");
}

static void test_malformed(void) {
    struct {
        const char *file, *substr[3];
    } cases[] = {
        {"bad_indent.yaml", {":4:", "mapping values are not allowed", NULL}},
        {"unclosed_quote.yaml", {":5:", "quoted scalar at line 3", NULL}},
        {"tab.yaml", {":3:1:", "tab", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mt_config *c = NULL;
        char *path = fixture(cases[i].file), want[4200];
        snprintf(want, sizeof want, "%s%s", path, cases[i].substr[0]);
        MT_CHECK_FAILS(mt_config_load(path, schema, 0, NULL, &c), MT_ERR_FORMAT, want,
                       cases[i].substr[1]);
        MT_CHECK(c == NULL);
    }
    PARSE_FAILS("task: classify\ndata:\n  labels: [a, b\n", MT_ERR_FORMAT, "jobs/x.yaml:4:");
    PARSE_FAILS("task: classify\nmodel:\n  arch: 'unet\n", MT_ERR_FORMAT,
                "jobs/x.yaml:4:", "at line 3");
    PARSE_FAILS("task: classify\n\xff\xfe: 1\n", MT_ERR_FORMAT, "jobs/x.yaml:2:", "UTF-8");
    /* a NUL byte in the middle of the text */
    mt_config *c = NULL;
    MT_CHECK_FAILS(mt_config_parse("task: a\0b\n", 10, "jobs/x.yaml", schema, 0, NULL, &c),
                   MT_ERR_FORMAT, "jobs/x.yaml:1:");
}

static void test_duplicates(void) {
    mt_config *c = NULL;
    char *path = fixture("duplicate.yaml"), want[4200];
    snprintf(want, sizeof want, "%s:5: duplicate key 'lr' (first given at line 3)", path);
    MT_CHECK_FAILS(mt_config_load(path, schema, 0, NULL, &c), MT_ERR_CONFIG, want);
    /* the same key written nested and dotted */
    PARSE_FAILS("task: classify\ntrain:\n  lr: 0.1\ntrain.lr: 0.2\n", MT_ERR_CONFIG,
                "jobs/x.yaml:4: duplicate key 'train.lr' (first given at line 3)");
    PARSE_FAILS("task: a\ntask: b\n", MT_ERR_CONFIG,
                "jobs/x.yaml:2: duplicate key 'task' (first given at line 1)");
    /* a section twice */
    PARSE_FAILS("task: classify\ntrain:\n  lr: 0.1\nmodel: {}\ntrain:\n  epochs: 2\n",
                MT_ERR_CONFIG, "jobs/x.yaml:5: duplicate key 'train' (first given at line 2)");
}

static void test_choices(void) {
    PARSE_FAILS("task: clasify\n", MT_ERR_CONFIG,
                "jobs/x.yaml:1: task: expected one of classify|segment, found 'clasify' (did you "
                "mean 'classify'?)");
    PARSE_FAILS("task: detect\n", MT_ERR_CONFIG,
                "jobs/x.yaml:1: task: expected one of classify|segment, found 'detect'");
    PARSE_FAILS("task: classify\ntrain:\n  optim:\n    name: adam\n", MT_ERR_CONFIG,
                "jobs/x.yaml:4: train.optim.name: expected one of sgd|adamw, found 'adam' (did you "
                "mean 'adamw'?)");
    PARSE_FAILS("task: classify\ndata:\n  views:\n    - PA\n    - LATERAL\n", MT_ERR_CONFIG,
                "jobs/x.yaml:5: data.views[1]: expected one of PA|AP|LAT, found 'LATERAL'");
    mt_config *c = NULL;
    MT_CHECK_OK(parse("task: segment\ndata: {views: [AP, LAT]}\n", &c));
    if (c) MT_CHECK(mt_config_len(c, "data.views") == 2);
    mt_config_free(c);
}

static void test_overrides(void) {
    const char *file = "task: classify\ntrain:\n  lr: 0.1\ndata:\n  sizes: [1]\n";
    mt_config *c = NULL;
    char *ok[] = {"train.lr=0.5",    "data.sizes=[224, 256, 320]",
                  "model.arch=unet", "train.amp=true",
                  "data.labels=[]",  "train.lr=0.25"};
    MT_CHECK_OK(parse_over(file, 6, ok, &c));
    if (c) {
        MT_CHECK_NEAR(mt_config_float(c, "train.lr"), 0.25, 0); /* the last one wins */
        MT_CHECK(!strcmp(mt_config_origin(c, "train.lr"), "command line `train.lr=0.25`"));
        MT_CHECK(mt_config_len(c, "data.sizes") == 3);
        MT_CHECK(mt_config_int_at(c, "data.sizes", 2) == 320);
        MT_CHECK(!strcmp(mt_config_str(c, "model.arch"), "unet"));
        MT_CHECK(mt_config_bool(c, "train.amp"));
        MT_CHECK(mt_config_len(c, "data.labels") == 0);
        MT_CHECK(!strcmp(mt_config_origin(c, "task"), "jobs/x.yaml:1"));
    }
    mt_config_free(c);
    /* a quoted override value is a string */
    char *quoted[] = {"data.path='/tmp/a b: c'"};
    c = NULL;
    MT_CHECK_OK(parse_over(file, 1, quoted, &c));
    if (c) MT_CHECK(!strcmp(mt_config_str(c, "data.path"), "/tmp/a b: c"));
    mt_config_free(c);

    char *unknown[] = {"train.lrr=1"};
    MT_CHECK_FAILS(
        parse_over(file, 1, unknown, &c), MT_ERR_CONFIG,
        "command line `train.lrr=1`: unknown key 'train.lrr' (did you mean 'train.lr'?)");
    char *noeq[] = {"train.lr"};
    MT_CHECK_FAILS(parse_over(file, 1, noeq, &c), MT_ERR_USAGE, "command line `train.lr`",
                   "key=value");
    char *nokey[] = {"=3"};
    MT_CHECK_FAILS(parse_over(file, 1, nokey, &c), MT_ERR_USAGE, "command line `=3`");
    char *badyaml[] = {"data.sizes=[1, 2"};
    MT_CHECK_FAILS(parse_over(file, 1, badyaml, &c), MT_ERR_USAGE,
                   "command line `data.sizes=[1, 2`");
    char *badtype[] = {"train.lr=fast"};
    MT_CHECK_FAILS(parse_over(file, 1, badtype, &c), MT_ERR_CONFIG,
                   "command line `train.lr=fast`: train.lr: expected a number, found 'fast'");
    char *baditem[] = {"data.sizes=[1,x]"};
    MT_CHECK_FAILS(parse_over(file, 1, baditem, &c), MT_ERR_CONFIG,
                   "command line `data.sizes=[1,x]`: data.sizes[1]: expected an integer");
    char *empty[] = {"train.epochs="};
    MT_CHECK_FAILS(
        parse_over(file, 1, empty, &c), MT_ERR_CONFIG,
        "command line `train.epochs=`: train.epochs: expected an integer, found nothing");
    char *section[] = {"train=1"};
    MT_CHECK_FAILS(parse_over(file, 1, section, &c), MT_ERR_CONFIG, "command line `train=1`",
                   "'train' is a section", "lr");
    char *choice[] = {"model.arch=resnet5"};
    MT_CHECK_FAILS(parse_over(file, 1, choice, &c), MT_ERR_CONFIG,
                   "command line `model.arch=resnet5`", "did you mean 'resnet50'?");
    /* an override supplies a required key and fixes nothing else */
    char *task[] = {"task=segment"};
    c = NULL;
    MT_CHECK_OK(parse_over("", 1, task, &c));
    if (c) MT_CHECK(!strcmp(mt_config_origin(c, "task"), "command line `task=segment`"));
    mt_config_free(c);
}

/* Checks that a and b hold the same values for every key of the schema. */
static void check_same(const mt_config *a, const mt_config *b) {
    for (const mt_cfg_key *k = schema; k->key; k++) {
        MT_CHECK(mt_config_is_set(a, k->key) == mt_config_is_set(b, k->key), "key %s", k->key);
        if (!mt_config_is_set(a, k->key) || !mt_config_is_set(b, k->key)) continue;
        switch (k->type) {
        case MT_CFG_STR:
            MT_CHECK(!strcmp(mt_config_str(a, k->key), mt_config_str(b, k->key)), "key %s", k->key);
            break;
        case MT_CFG_INT:
            MT_CHECK(mt_config_int(a, k->key) == mt_config_int(b, k->key));
            break;
        case MT_CFG_FLOAT:
            MT_CHECK(mt_config_float(a, k->key) == mt_config_float(b, k->key), "key %s", k->key);
            break;
        case MT_CFG_BOOL:
            MT_CHECK(mt_config_bool(a, k->key) == mt_config_bool(b, k->key));
            break;
        default: {
            size_t n = mt_config_len(a, k->key);
            MT_CHECK(n == mt_config_len(b, k->key), "key %s", k->key);
            if (n != mt_config_len(b, k->key)) break;
            for (size_t i = 0; i < n; i++) {
                if (k->type == MT_CFG_STR_LIST)
                    MT_CHECK(
                        !strcmp(mt_config_str_at(a, k->key, i), mt_config_str_at(b, k->key, i)),
                        "key %s[%zu]: '%s' vs '%s'", k->key, i, mt_config_str_at(a, k->key, i),
                        mt_config_str_at(b, k->key, i));
                if (k->type == MT_CFG_INT_LIST)
                    MT_CHECK(mt_config_int_at(a, k->key, i) == mt_config_int_at(b, k->key, i));
                if (k->type == MT_CFG_FLOAT_LIST)
                    MT_CHECK(mt_config_float_at(a, k->key, i) == mt_config_float_at(b, k->key, i),
                             "key %s[%zu]", k->key, i);
            }
        }
        }
    }
}

static void test_to_yaml(void) {
    mt_config *c = NULL;
    MT_CHECK_OK(parse("task: classify\nmodel: {arch: unet}\ndata: {sizes: [3, 1]}\n", &c));
    if (!c) return;
    char *y = mt_config_to_yaml(c);
    const char *want = "data:\n"
                       "  labels: []\n"
                       "  sizes: [3, 1]\n"
                       "model:\n"
                       "  arch: unet\n"
                       "  depth: 4\n"
                       "seed: 0\n"
                       "task: classify\n"
                       "train:\n"
                       "  amp: false\n"
                       "  epochs: 10\n"
                       "  lr: 0.1\n"
                       "  optim:\n"
                       "    betas: [0.9, 0.999]\n"
                       "    name: sgd\n";
    MT_CHECK(y && !strcmp(y, want), "got:\n%s", y ? y : "(null)");
    mt_free(y);
    mt_config_free(c);
}

static void test_round_trip(void) {
    const char *text =
        "task: segment\n"
        "model:\n  arch: unet\n  depth: -9223372036854775808\n"
        "train:\n  lr: 0.30000000000000004\n  amp: true\n  warmup: 9223372036854775807\n"
        "  optim:\n    betas: [0.1, 1e-300, -2.5e10, 5e-324, 1.7976931348623157e308, -0.0, 3]\n"
        "data:\n"
        "  path: \"a: b # c\\n\\t\\\"q\\\" \\\\ \\u00e9 \\u4e2d \\u2028 \\x01 \\x85 \\x7f end \"\n"
        "  labels: [\"\", \"123\", \"true\", \"null\", \"~\", \"-x\", \" lead\", \"trail \", "
        "\"[x]\", \"a,b\", \"yes\", \"No\", \"\\u00e9\", \"#c\", \".5\", \"- a\", \"a: b\", "
        "\"{x}\", \"&a\", \"*a\", \"!t\", \"%p\", \"@x\", \"`x\", \"|\", \">\", \"'\", "
        "\"\\U0001F600\", \"\\uFEFF\", \"x\\r\\ny\", plain/path_1.h5, \"0x1F\", \"1:20\", "
        "\"2024-01-01\", \".inf\", \"NaN\", \"Y\", \"off\"]\n"
        "  sizes: [-1, 0, +5, 007]\n"
        "  views: [PA, AP]\n"
        "seed: 7\n";
    mt_config *a = NULL, *b = NULL;
    MT_CHECK_OK(parse(text, &a));
    if (!a) return;
    char *y1 = mt_config_to_yaml(a);
    MT_CHECK(y1 != NULL);
    if (!y1) goto out;
    MT_CHECK_OK(mt_config_parse(y1, strlen(y1), "canonical.yaml", schema, 0, NULL, &b));
    if (!b) {
        fprintf(stderr, "canonical YAML was:\n%s\n", y1);
        goto out;
    }
    check_same(a, b);
    char *y2 = mt_config_to_yaml(b);
    MT_CHECK(y2 && !strcmp(y1, y2), "second round differs:\n%s\n---\n%s", y1, y2 ? y2 : "");
    mt_free(y2);
    /* shortest round-trip floats, exact integers */
    MT_CHECK(strstr(y1, "lr: 0.30000000000000004\n") != NULL);
    MT_CHECK(strstr(y1, "depth: -9223372036854775808\n") != NULL);
    MT_CHECK(strstr(y1, "sizes: [-1, 0, 5, 7]\n") != NULL);
    MT_CHECK(strstr(y1, "views: [PA, AP]\n") != NULL);
out:
    mt_free(y1);
    mt_config_free(a);
    mt_config_free(b);
}

static void test_write_and_digest(void) {
    mt_config *a = NULL, *b = NULL, *c = NULL;
    MT_CHECK_OK(parse("task: classify\ntrain:\n  lr: 0.1\n", &a));
    /* the same values written differently: same canonical YAML, same digest */
    MT_CHECK_OK(parse("train.lr: 1e-1\ntask: \"classify\"\nseed: 0\n", &b));
    char *over[] = {"train.lr=0.2"};
    MT_CHECK_OK(parse_over("task: classify\ntrain:\n  lr: 0.1\n", 1, over, &c));
    if (!a || !b || !c) goto out;
    char ha[65], hb[65], hc[65], again[65];
    MT_CHECK_OK(mt_config_digest(a, ha));
    MT_CHECK_OK(mt_config_digest(a, again));
    MT_CHECK_OK(mt_config_digest(b, hb));
    MT_CHECK_OK(mt_config_digest(c, hc));
    MT_CHECK(strlen(ha) == 64);
    MT_CHECK(!strcmp(ha, again));
    MT_CHECK(!strcmp(ha, hb));
    MT_CHECK(strcmp(ha, hc) != 0);

    char path[256];
    snprintf(path, sizeof path, "/tmp/medtrain_test_config_%ld.yaml", (long)getpid());
    MT_CHECK_OK(mt_config_write(a, path));
    char *text = NULL, *y = mt_config_to_yaml(a);
    size_t n = 0;
    MT_CHECK_OK(mt_file_read(path, &text, &n));
    MT_CHECK(text && y && n == strlen(y) && !strcmp(text, y));
    mt_free(text);
    mt_free(y);
    remove(path);
out:
    mt_config_free(a);
    mt_config_free(b);
    mt_config_free(c);
}

static void test_config_fail(void) {
    mt_config *c = NULL;
    char *over[] = {"seed=3"};
    MT_CHECK_OK(parse_over("task: classify\ntrain:\n  epochs: 7\n", 1, over, &c));
    if (!c) return;
    MT_CHECK_FAILS(mt_config_fail(c, "train.epochs", "must divide %d", 10), MT_ERR_CONFIG,
                   "jobs/x.yaml:3: train.epochs: must divide 10");
    MT_CHECK_FAILS(mt_config_fail(c, "seed", "too small"), MT_ERR_CONFIG,
                   "command line `seed=3`: seed: too small");
    MT_CHECK_FAILS(mt_config_fail(c, "model.depth", "odd"), MT_ERR_CONFIG,
                   "default: model.depth: odd");
    mt_config_free(c);
}

static void test_schema_errors(void) {
    mt_config *c = NULL;
    static const mt_cfg_key broken_default[] = {
        {"train.lr", MT_CFG_FLOAT, "fast", 0, NULL, NULL},
        {NULL},
    };
    MT_CHECK_FAILS(mt_config_parse("", 0, "j.yaml", broken_default, 0, NULL, &c), MT_ERR_INTERNAL,
                   "default of 'train.lr'", "expected a number, found 'fast'");
    static const mt_cfg_key bad_choice_default[] = {
        {"opt", MT_CFG_STR, "adam", 0, "sgd|adamw", NULL},
        {NULL},
    };
    MT_CHECK_FAILS(mt_config_parse("", 0, "j.yaml", bad_choice_default, 0, NULL, &c),
                   MT_ERR_INTERNAL, "default of 'opt'");
    static const mt_cfg_key bad_yaml_default[] = {
        {"xs", MT_CFG_INT_LIST, "[1, 2", 0, NULL, NULL},
        {NULL},
    };
    MT_CHECK_FAILS(mt_config_parse("", 0, "j.yaml", bad_yaml_default, 0, NULL, &c), MT_ERR_INTERNAL,
                   "default of 'xs'");
    static const mt_cfg_key twice[] = {
        {"a.b", MT_CFG_INT, NULL, 0, NULL, NULL},
        {"a.b", MT_CFG_INT, NULL, 0, NULL, NULL},
        {NULL},
    };
    MT_CHECK_FAILS(mt_config_parse("", 0, "j.yaml", twice, 0, NULL, &c), MT_ERR_INTERNAL,
                   "'a.b' appears twice");
    static const mt_cfg_key key_and_section[] = {
        {"a", MT_CFG_INT, NULL, 0, NULL, NULL},
        {"a.b", MT_CFG_INT, NULL, 0, NULL, NULL},
        {NULL},
    };
    MT_CHECK_FAILS(mt_config_parse("", 0, "j.yaml", key_and_section, 0, NULL, &c), MT_ERR_INTERNAL,
                   "cannot also be a section");
    static const mt_cfg_key bad_name[] = {
        {"a..b", MT_CFG_INT, NULL, 0, NULL, NULL},
        {NULL},
    };
    MT_CHECK_FAILS(mt_config_parse("", 0, "j.yaml", bad_name, 0, NULL, &c), MT_ERR_INTERNAL,
                   "'a..b'");
    MT_CHECK(c == NULL);
}

static void test_large_inputs(void) {
    /* 1000-item lists and a 100 000-character string: no fixed limits */
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    if (!text) return;
    len += (size_t)snprintf(text + len, cap - len, "task: classify\ndata:\n  sizes: [");
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s%d", i ? ", " : "", i * 3);
    len += (size_t)snprintf(text + len, cap - len, "]\n  labels:\n");
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(text + len, cap - len, "    - label_%d\n", i);
    len += (size_t)snprintf(text + len, cap - len, "  path: ");
    for (int i = 0; i < 100000; i++) text[len++] = (char)('a' + i % 26);
    len += (size_t)snprintf(text + len, cap - len, "\n  views: [PA, %d]\n", 7);
    mt_config *c = NULL;
    /* the last item is out of its choices and on line 1006 */
    MT_CHECK_FAILS(mt_config_parse(text, len, "big.yaml", schema, 0, NULL, &c), MT_ERR_CONFIG,
                   "big.yaml:1006: data.views[1]: expected one of PA|AP|LAT, found '7'");
    len -= strlen("  views: [PA, 7]\n");
    MT_CHECK_OK(mt_config_parse(text, len, "big.yaml", schema, 0, NULL, &c));
    if (c) {
        MT_CHECK(mt_config_len(c, "data.sizes") == 1000);
        MT_CHECK(mt_config_int_at(c, "data.sizes", 999) == 2997);
        MT_CHECK(mt_config_len(c, "data.labels") == 1000);
        MT_CHECK(!strcmp(mt_config_str_at(c, "data.labels", 999), "label_999"));
        MT_CHECK(strlen(mt_config_str(c, "data.path")) == 100000);
        char *y = mt_config_to_yaml(c);
        mt_config *d = NULL;
        MT_CHECK(y != NULL);
        if (y) MT_CHECK_OK(mt_config_parse(y, strlen(y), "big2.yaml", schema, 0, NULL, &d));
        if (d) check_same(c, d);
        mt_config_free(d);
        mt_free(y);
    }
    mt_config_free(c);
    /* an unknown key far longer than any suggestion is still reported */
    memset(text, 'k', 1000); /* YAML allows simple keys up to 1024 characters */
    memcpy(text + 1000, ": 1\n", 5);
    MT_CHECK_FAILS(mt_config_parse(text, strlen(text), "long.yaml", schema, 0, NULL, &c),
                   MT_ERR_CONFIG, "long.yaml:1: unknown key 'kkkk", "top-level keys");
    free(text);
}

static void test_print_schema(void) {
    FILE *f = tmpfile();
    if (!f) {
        mt_test_skip("test_print_schema", "no tmpfile");
        return;
    }
    mt_config_print_schema(schema, f);
    long n = ftell(f);
    rewind(f);
    char *text = calloc((size_t)n + 1, 1);
    MT_CHECK(text && fread(text, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    if (!text) return;
    const char *want = "task:  # required: what to train (classify|segment)\n"
                       "model:\n"
                       "  arch: resnet18  # network architecture (resnet18|resnet50|unet)\n"
                       "  depth: 4  # encoder depth\n"
                       "train:\n"
                       "  lr: 0.1  # peak learning rate\n";
    MT_CHECK(!strncmp(text, want, strlen(want)), "got:\n%s", text);
    MT_CHECK(strstr(text, "\n  optim:\n    name: sgd  # optimizer (sgd|adamw)\n"
                          "    betas: [0.9, 0.999]  # Adam betas\n") != NULL,
             "got:\n%s", text);
    MT_CHECK(strstr(text, "\nseed: 0  # random seed\n") != NULL);
    free(text);
}

/* Runs fn in a child and checks that it aborts, printing what to stderr. */
static void check_aborts(void (*fn)(const mt_config *), const mt_config *c, const char *what) {
    int fds[2];
    if (pipe(fds) != 0) return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn(c);
        _exit(0);
    }
    close(fds[1]);
    char out[4096] = "";
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], out + len, sizeof out - 1 - len)) > 0) len += (size_t)r;
    out[len] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    MT_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "for %s", what);
    MT_CHECK(strstr(out, what) != NULL, "stderr lacks \"%s\": %s", what, out);
}

static void get_unknown(const mt_config *c) {
    mt_config_int(c, "train.lrr");
}
static void get_wrong_type(const mt_config *c) {
    mt_config_int(c, "train.lr");
}
static void get_unset(const mt_config *c) {
    mt_config_int(c, "train.warmup");
}
static void get_past_end(const mt_config *c) {
    mt_config_int_at(c, "data.sizes", 2);
}
static void get_list_as_str(const mt_config *c) {
    mt_config_str_at(c, "data.sizes", 0);
}
static void get_len_of_scalar(const mt_config *c) {
    mt_config_len(c, "seed");
}

static void test_getter_misuse(void) {
    mt_config *c = NULL;
    MT_CHECK_OK(parse("task: classify\ndata: {sizes: [1, 2]}\n", &c));
    if (!c) return;
    MT_CHECK(mt_config_str(c, "data.path") == NULL); /* unset optional string: NULL, no abort */
    check_aborts(get_unknown, c, "mt_config_int(\"train.lrr\"): the key is not in the schema");
    check_aborts(get_wrong_type, c, "mt_config_int(\"train.lr\"): the key holds a number");
    check_aborts(get_unset, c, "mt_config_int(\"train.warmup\"): the key is unset");
    check_aborts(get_past_end, c, "mt_config_int_at(\"data.sizes\"): index 2");
    check_aborts(get_list_as_str, c, "holds a list of integers");
    check_aborts(get_len_of_scalar, c, "mt_config_len(\"seed\")");
    mt_config_free(c);
}

/* Fails the n-th allocation for n = 1, 2, ... until a run allocates fewer than n times: each run
 * must fail cleanly with MT_ERR_NOMEM (leak checkers watch the rest) or succeed. */
static void test_alloc_failures(void) {
    const char *text =
        "task: classify\nmodel:\n  arch: unet\ntrain:\n  optim: {betas: [0.5, 0.6]}\n"
        "data:\n  labels: [a, \"b c\", d]\n  sizes: [1, 2, 3]\n";
    char *over[] = {"train.lr=0.01", "data.views=[PA]"};
    long n = 1;
    for (; n < 100000; n++) {
        mt_config *c = NULL;
        mt_alloc_fail_after(n);
        mt_status st = parse_over(text, 2, over, &c);
        char *y = NULL, hex[65];
        mt_status dst = MT_OK;
        if (st == MT_OK) {
            y = mt_config_to_yaml(c);
            dst = mt_config_digest(c, hex);
        }
        mt_alloc_fail_after(0);
        if (st != MT_OK) {
            MT_CHECK(st == MT_ERR_NOMEM, "n=%ld: %s: %s", n, mt_status_name(st),
                     mt_error_message());
            MT_CHECK(c == NULL);
            continue;
        }
        bool done = y != NULL && dst == MT_OK;
        MT_CHECK(done || !y || dst == MT_ERR_NOMEM, "n=%ld", n);
        mt_free(y);
        mt_config_free(c);
        if (done) break;
    }
    MT_CHECK(n > 10 && n < 100000, "n=%ld", n);
    /* and the error paths, which allocate too */
    for (n = 1; n < 1000; n++) {
        mt_config *c = NULL;
        mt_alloc_fail_after(n);
        mt_status st = parse("task: classify\ntrain:\n  momentum: 1\n", &c);
        mt_alloc_fail_after(0);
        MT_CHECK(st == MT_ERR_NOMEM || st == MT_ERR_CONFIG, "n=%ld: %s", n, mt_status_name(st));
        MT_CHECK(c == NULL);
        if (st == MT_ERR_CONFIG) {
            MT_CHECK(strstr(mt_error_message(), "keys under 'train'") != NULL);
            break;
        }
    }
}

int main(int argc, char **argv) {
    if (argc > 1) data_dir = argv[1];
    MT_RUN(test_valid_file);
    MT_RUN(test_defaults_and_text);
    MT_RUN(test_empty_and_shapes);
    MT_RUN(test_unknown_keys);
    MT_RUN(test_wrong_types);
    MT_RUN(test_quoted_numbers);
    MT_RUN(test_missing);
    MT_RUN(test_malformed);
    MT_RUN(test_duplicates);
    MT_RUN(test_choices);
    MT_RUN(test_overrides);
    MT_RUN(test_to_yaml);
    MT_RUN(test_round_trip);
    MT_RUN(test_write_and_digest);
    MT_RUN(test_config_fail);
    MT_RUN(test_schema_errors);
    MT_RUN(test_large_inputs);
    MT_RUN(test_print_schema);
    MT_RUN(test_getter_misuse);
    MT_RUN(test_alloc_failures);
    return mt_test_summary();
}
