/* medtrain pack-text: a JSONL file of prompt/response pairs or LLaVA conversations -> one HDF5
 * text pack of token ids and loss masks under a chat template (include/medtrain/textpack.h).
 *
 * One process reads the file line by line, templates and tokenizes each record, cuts it to
 * --max-len, assigns a split by a hash of its id, and the writer puts the whole pack down at the
 * end (PATH.tmp, renamed). Record text never reaches a message: errors name the file, the line
 * and the field. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "build_info.h"
#include "cli.h"
#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/json.h"
#include "medtrain/log.h"
#include "medtrain/textpack.h"

enum { MAX_TURNS = 256 };

typedef struct text_opts {
    const char *jsonl, *model, *out, *template_name;
    mt_chat_template tmpl;
    int64_t max_len;
    int split[3];
    int report_batch;
    bool skip_bad, overwrite;
} text_opts;

typedef struct text_counts {
    int64_t lines, samples, truncated, skipped, dropped, tokens, loss_tokens, split_n[3];
} text_counts;

void mt_cmd_pack_text_usage(FILE *out) {
    fprintf(
        out,
        "usage: medtrain pack-text --jsonl FILE --model DIR --out PACK.h5 [options]\n\n"
        "Tokenizes a JSONL file of {\"prompt\",\"response\"} records or LLaVA conversations\n"
        "({\"conversations\":[{\"from\":\"human\"|\"user\",\"value\"},{\"from\":\"gpt\"|"
        "\"assistant\",\"value\"}],\n\"image\"?}) under a chat template into one HDF5 text pack "
        "(tokens, offsets, loss mask on\nassistant tokens only, splits). Single process.\n\n"
        "  --jsonl FILE        one JSON object per line (blank lines are ignored)\n"
        "  --model DIR         a Hugging Face model folder: DIR/tokenizer.json is used\n"
        "  --out PACK.h5       the pack to write (atomically)\n"
        "  --template NAME     plain (default), vicuna_v1 or llama-3 (docs/DATA.md)\n"
        "  --max-len N         keep the first N tokens of each sample (default 2048); cut\n"
        "                      samples are counted, those left with no target are dropped\n"
        "  --split A,B,C       train,val,test percentages by a hash of \"id\"/\"case_id\" or\n"
        "                      the line number (default 90,5,5)\n"
        "  --skip-bad          skip and count malformed lines instead of failing\n"
        "  --report-batch B    report the padding of length-grouped batches of B (default 8)\n"
        "  --overwrite         replace an existing pack\n");
}

static mt_status parse_int(const char *s, int64_t lo, int64_t hi, const char *opt, int64_t *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return mt_cli_usage_error(mt_cmd_pack_text_usage,
                                  "%s %s: expected an integer in "
                                  "[%lld, %lld]",
                                  opt, s, (long long)lo, (long long)hi);
    *out = v;
    return MT_OK;
}

static mt_status parse_split(const char *s, int pct[3]) {
    int a, b, c, n = 0;
    if (sscanf(s, "%d,%d,%d%n", &a, &b, &c, &n) != 3 || s[n] != '\0' || a < 0 || b < 0 || c < 0 ||
        a + b + c != 100)
        return mt_cli_usage_error(mt_cmd_pack_text_usage,
                                  "--split %s: expected three percentages summing to 100", s);
    pct[0] = a, pct[1] = b, pct[2] = c;
    return MT_OK;
}

static mt_status parse_options(int argc, char **argv, text_opts *o) {
    static const struct option opts[] = {
        {"jsonl", required_argument, 0, 'j'},   {"model", required_argument, 0, 'm'},
        {"out", required_argument, 0, 'o'},     {"template", required_argument, 0, 't'},
        {"max-len", required_argument, 0, 'n'}, {"split", required_argument, 0, 'p'},
        {"skip-bad", no_argument, 0, 's'},      {"report-batch", required_argument, 0, 'b'},
        {"overwrite", no_argument, 0, 'O'},     {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->template_name = "plain";
    o->max_len = 2048;
    o->split[0] = 90, o->split[1] = 5, o->split[2] = 5;
    o->report_batch = 8;
    optind = 1;
    opterr = 0;
    int c;
    int64_t v = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            o->jsonl = optarg;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 't':
            o->template_name = optarg;
            break;
        case 'n':
            MT_TRY(parse_int(optarg, 1, 1 << 24, "--max-len", &o->max_len));
            break;
        case 'p':
            MT_TRY(parse_split(optarg, o->split));
            break;
        case 's':
            o->skip_bad = true;
            break;
        case 'b':
            MT_TRY(parse_int(optarg, 1, 1 << 16, "--report-batch", &v));
            o->report_batch = (int)v;
            break;
        case 'O':
            o->overwrite = true;
            break;
        default:
            return mt_cli_usage_error(mt_cmd_pack_text_usage,
                                      "pack-text: unknown or incomplete "
                                      "option %s",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return mt_cli_usage_error(mt_cmd_pack_text_usage, "pack-text: unexpected argument %s",
                                  argv[optind]);
    if (!o->jsonl || !o->model || !o->out)
        return mt_cli_usage_error(mt_cmd_pack_text_usage,
                                  "pack-text: --jsonl, --model and --out are required");
    if (mt_chat_template_parse(o->template_name, &o->tmpl) != MT_OK)
        return mt_cli_usage_error(mt_cmd_pack_text_usage, "--template: %s", mt_error_message());
    return MT_OK;
}

/* A role spelling: LLaVA's human/gpt, OpenAI's user/assistant, and system. */
static bool parse_role(const char *s, mt_chat_role *out) {
    if (!strcmp(s, "human") || !strcmp(s, "user"))
        *out = MT_ROLE_USER;
    else if (!strcmp(s, "gpt") || !strcmp(s, "assistant"))
        *out = MT_ROLE_ASSISTANT;
    else if (!strcmp(s, "system"))
        *out = MT_ROLE_SYSTEM;
    else
        return false;
    return true;
}

static const char *string_field(const cJSON *obj, const char *a, const char *b) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, a);
    if (!v && b) v = cJSON_GetObjectItemCaseSensitive(obj, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The turns of one record (pointers into rec). Messages name the line, never the text. */
static mt_status record_turns(const cJSON *rec, const char *where, mt_chat_turn *turns, int *n) {
    *n = 0;
    if (!cJSON_IsObject(rec)) return mt_fail(MT_ERR_FORMAT, "%s: expected a JSON object", where);
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(rec, "conversations");
    if (conv) {
        if (!cJSON_IsArray(conv))
            return mt_fail(MT_ERR_FORMAT, "%s: \"conversations\" is not an array", where);
        int k = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, conv) {
            k++;
            const char *from = string_field(t, "from", "role");
            const char *value = string_field(t, "value", "content");
            if (!from || !value)
                return mt_fail(MT_ERR_FORMAT,
                               "%s: conversations[%d] needs string \"from\" and "
                               "\"value\" (or \"role\" and \"content\")",
                               where, k - 1);
            if (*n == MAX_TURNS)
                return mt_fail(MT_ERR_FORMAT, "%s: more than %d turns", where, MAX_TURNS);
            if (!parse_role(from, &turns[*n].role))
                return mt_fail(MT_ERR_FORMAT,
                               "%s: conversations[%d]: unknown role (expected "
                               "human, user, gpt, assistant or system)",
                               where, k - 1);
            turns[*n].text = value;
            turns[(*n)++].len = strlen(value);
        }
        return MT_OK;
    }
    const char *prompt = string_field(rec, "prompt", NULL);
    const char *response = string_field(rec, "response", NULL);
    if (!prompt || !response)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: expected string \"prompt\" and \"response\", or "
                       "\"conversations\"",
                       where);
    turns[0] = (mt_chat_turn){MT_ROLE_USER, prompt, strlen(prompt)};
    turns[1] = (mt_chat_turn){MT_ROLE_ASSISTANT, response, strlen(response)};
    *n = 2;
    return MT_OK;
}

/* The id that decides the split: "id" or "case_id" (string or number), else "line:N". */
static void record_id(const cJSON *rec, int64_t line, char *out, size_t n) {
    const char *keys[] = {"id", "case_id"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, keys[i]);
        if (cJSON_IsString(v)) {
            snprintf(out, n, "%s", v->valuestring);
            return;
        }
        if (cJSON_IsNumber(v)) {
            snprintf(out, n, "%.17g", v->valuedouble);
            return;
        }
    }
    snprintf(out, n, "line:%lld", (long long)line);
}

typedef struct text_job {
    text_opts o;
    mt_tokenizer *tok;
    mt_textpack_writer *w;
    mt_chat_sample sample;
    mt_chat_turn turns[MAX_TURNS];
    text_counts c;
    int64_t *lengths;
    size_t lengths_cap;
} text_job;

/* One line: parse, template, cut, add. A bad record fails with MT_ERR_FORMAT naming the line. */
static mt_status pack_line(text_job *j, const char *text, size_t len, int64_t line) {
    char where[4200];
    snprintf(where, sizeof where, "%s:%lld", j->o.jsonl, (long long)line);
    const char *end = NULL;
    cJSON *rec = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!rec) {
        long col = end ? (long)(end - text) + 1 : 0;
        return mt_fail(MT_ERR_FORMAT, "%s: malformed JSON (near column %ld)", where, col);
    }
    int n;
    mt_status st = record_turns(rec, where, j->turns, &n);
    if (st == MT_OK) {
        st = mt_chat_encode(j->tok, j->o.tmpl, j->turns, n, &j->sample);
        /* invalid UTF-8 (MT_ERR_ARG) is bad input like the rest */
        if (st != MT_OK) st = mt_error_wrap(st == MT_ERR_ARG ? MT_ERR_FORMAT : st, "%s: ", where);
    }
    if (st == MT_OK) {
        size_t k = j->sample.ids.n;
        if ((int64_t)k > j->o.max_len) {
            k = (size_t)j->o.max_len;
            j->c.truncated++;
        }
        int64_t loss = 0;
        for (size_t i = 0; i < k; i++) loss += j->sample.mask[i];
        if (loss == 0) {
            j->c.dropped++;
        } else {
            char id[512];
            record_id(rec, line, id, sizeof id);
            mt_split s = mt_textpack_split_of(id, strlen(id), j->o.split);
            const char *image = string_field(rec, "image", NULL);
            st = mt_textpack_writer_add(j->w, j->sample.ids.ids, j->sample.mask, (int64_t)k, s,
                                        image);
            if (st == MT_OK && (size_t)j->c.samples == j->lengths_cap) {
                size_t cap = j->lengths_cap ? j->lengths_cap * 2 : 1024;
                int64_t *p = realloc(j->lengths, cap * sizeof *p);
                if (!p)
                    st = mt_fail(MT_ERR_NOMEM, "out of memory for sample lengths");
                else
                    j->lengths = p, j->lengths_cap = cap;
            }
            if (st == MT_OK) {
                j->lengths[j->c.samples++] = (int64_t)k;
                j->c.split_n[s]++;
                j->c.tokens += (int64_t)k;
                j->c.loss_tokens += loss;
            }
        }
    }
    cJSON_Delete(rec);
    return st;
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", s[i])) return false;
    return true;
}

static mt_status pack_file(text_job *j, mt_sha256_ctx *h) {
    FILE *f = fopen(j->o.jsonl, "rb");
    if (!f) return mt_fail(MT_ERR_IO, "%s: cannot open the JSONL file", j->o.jsonl);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    mt_status st = MT_OK;
    int64_t records = 0;
    while (st == MT_OK && (len = getline(&line, &cap, f)) >= 0) {
        j->c.lines++;
        st = mt_sha256_update(h, line, (size_t)len);
        if (st != MT_OK || blank(line, (size_t)len)) continue;
        records++;
        st = pack_line(j, line, (size_t)len, j->c.lines);
        if (st == MT_ERR_FORMAT && j->o.skip_bad) {
            MT_WARN("skipped %s", mt_error_message());
            j->c.skipped++;
            st = MT_OK;
        }
    }
    if (st == MT_OK && ferror(f)) st = mt_fail(MT_ERR_IO, "%s: read error", j->o.jsonl);
    free(line);
    fclose(f);
    if (st == MT_OK && records == 0)
        st = mt_fail(MT_ERR_FORMAT, "%s: no records (the file is empty)", j->o.jsonl);
    if (st == MT_OK && j->c.samples == 0)
        st = mt_fail(MT_ERR_FORMAT, "%s: no usable records (%lld skipped, %lld dropped)",
                     j->o.jsonl, (long long)j->c.skipped, (long long)j->c.dropped);
    return st;
}

static void summary(const text_job *j) {
    const text_counts *c = &j->c;
    printf("packed %lld samples (train %lld, val %lld, test %lld), %lld tokens (%lld with loss) "
           "into %s\n",
           (long long)c->samples, (long long)c->split_n[0], (long long)c->split_n[1],
           (long long)c->split_n[2], (long long)c->tokens, (long long)c->loss_tokens, j->o.out);
    printf("template %s, max-len %lld: truncated %lld samples\n", j->o.template_name,
           (long long)j->o.max_len, (long long)c->truncated);
    if (c->dropped)
        printf("dropped %lld samples with no assistant token left after truncation\n",
               (long long)c->dropped);
    printf("skipped %lld bad lines of %lld\n", (long long)c->skipped, (long long)c->lines);
    int64_t *idx = malloc((size_t)c->samples * sizeof *idx);
    mt_length_batches b;
    if (idx) {
        for (int64_t i = 0; i < c->samples; i++) idx[i] = i;
        if (mt_length_batches_make(j->lengths, idx, c->samples, j->o.report_batch, 64, 0, 0, &b) ==
            MT_OK) {
            printf("padding with length-grouped batches of %d: %.2f%% of tokens\n",
                   j->o.report_batch, 100.0 * mt_length_batches_padding(&b, j->lengths));
            mt_length_batches_free(&b);
        }
    }
    free(idx);
}

static mt_status run(text_job *j) {
    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", j->o.model);
    if (!mt_path_exists(tok_path))
        return mt_fail(MT_ERR_IO, "%s: no tokenizer.json in the model folder %s", tok_path,
                       j->o.model);
    MT_TRY(mt_tokenizer_load(tok_path, &j->tok));
    mt_sha256_ctx *h = NULL;
    MT_TRY(mt_sha256_begin(&h));
    char creator[128];
    snprintf(creator, sizeof creator, "medtrain %s (commit %s)", MT_BUILD_VERSION, MT_BUILD_COMMIT);
    mt_textpack_spec spec = {.template_name = mt_chat_template_name(j->o.tmpl),
                             .tokenizer_digest = mt_tokenizer_digest(j->tok),
                             .max_len = j->o.max_len,
                             .creator = creator};
    mt_status st = mt_textpack_writer_create(j->o.out, &spec, &j->w);
    if (st == MT_OK) st = pack_file(j, h);
    /* The input digest: the file's bytes, then everything that shapes the pack. */
    char opts[512], hex[MT_SHA256_HEX];
    snprintf(opts, sizeof opts, "\ntemplate=%s max_len=%lld split=%d,%d,%d tokenizer=%s",
             spec.template_name, (long long)j->o.max_len, j->o.split[0], j->o.split[1],
             j->o.split[2], spec.tokenizer_digest);
    if (st == MT_OK) st = mt_sha256_update(h, opts, strlen(opts));
    uint8_t d[MT_SHA256_BYTES];
    mt_status st2 = mt_sha256_end(h, st == MT_OK ? d : NULL);
    if (st == MT_OK) st = st2;
    if (st == MT_OK) mt_hex(d, MT_SHA256_BYTES, hex);
    if (j->w) {
        mt_status fin =
            mt_textpack_writer_finish(j->w, st == MT_OK, j->c.truncated, st == MT_OK ? hex : NULL);
        if (st == MT_OK) st = fin;
    }
    if (st == MT_OK) summary(j);
    return st;
}

mt_status mt_cmd_pack_text(mt_comm *comm, int argc, char **argv) {
    (void)comm;
    if (mt_cli_wants_help(argc, argv, mt_cmd_pack_text_usage)) return MT_OK;
    text_job *j = calloc(1, sizeof *j);
    if (!j) return mt_fail(MT_ERR_NOMEM, "out of memory");
    mt_status st = parse_options(argc, argv, &j->o);
    if (st == MT_OK && mt_path_exists(j->o.out) && !j->o.overwrite)
        st = mt_fail(MT_ERR_USAGE, "%s already exists: choose another --out or add --overwrite",
                     j->o.out);
    if (st == MT_OK) st = run(j);
    mt_chat_sample_free(&j->sample);
    mt_tokenizer_free(j->tok);
    free(j->lengths);
    free(j);
    return st;
}
