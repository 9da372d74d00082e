/* Job configuration: YAML text -> a small tree -> typed values checked against a schema.
 *
 * Loading fills one mt_config in four passes:
 *   1. defaults: each schema default is read as YAML and stored with origin "default" (a default
 *      that does not read or check is a bug in the schema: MT_ERR_INTERNAL);
 *   2. the file: libyaml's event parser builds a tree of mappings, lists and scalars that keeps
 *      line numbers (ynode); walking it joins nested keys into dotted keys and stores each leaf;
 *   3. command-line overrides "key=value", each value read as a YAML scalar or flow list;
 *   4. required keys.
 * Every value passes through one converter (convert_value), so the file, the command line and the
 * defaults obey the same typing rules and fail with messages of the same shape.
 *
 * Values are kept per schema key, parallel to the schema, which is borrowed: it must outlive the
 * config (schemas are static tables). Everything is allocated through mt_alloc, so allocation
 * failures can be injected; libyaml allocates its own (freed) parser state. */
#include "medtrain/config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/mem.h"

/* ---- growable strings ----------------------------------------------------------------------- */

typedef struct sbuf {
    char *p; /* NUL-terminated once anything was added */
    size_t len, cap;
    bool failed; /* an allocation failed (the message is set); later appends do nothing */
} sbuf;

static bool sb_reserve(sbuf *b, size_t extra) {
    if (b->failed) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = mt_realloc(b->p, cap, 1, "config text");
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static bool sb_put(sbuf *b, const char *s, size_t n) {
    if (!sb_reserve(b, n)) return false;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static bool sb_puts(sbuf *b, const char *s) {
    return sb_put(b, s, strlen(s));
}

static bool sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !sb_reserve(b, (size_t)n)) return false;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

static void sb_indent(sbuf *b, size_t depth) {
    for (size_t i = 0; i < depth; i++) sb_put(b, "  ", 2);
}

/* ---- where a value or an error comes from --------------------------------------------------- */

typedef enum src_kind { SRC_FILE, SRC_CMDLINE, SRC_DEFAULT } src_kind;

typedef struct src {
    src_kind kind;
    const char
        *name; /* SRC_FILE: the file name; SRC_CMDLINE: the override "k=v"; SRC_DEFAULT: key */
} src;

/* Fails with "FILE:LINE: msg", "FILE: msg" (line 0), "command line `k=v`: msg" or, for a schema
 * default, just msg (the caller wraps it). */
static mt_status fail_at(mt_status code, const src *s, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static mt_status fail_at(mt_status code, const src *s, int line, const char *fmt, ...) {
    char msg[MT_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    switch (s->kind) {
    case SRC_CMDLINE:
        return mt_fail(code, "command line `%s`: %s", s->name, msg);
    case SRC_DEFAULT:
        return mt_fail(code, "%s", msg);
    case SRC_FILE:
        break;
    }
    if (line > 0) return mt_fail(code, "%s:%d: %s", s->name, line, msg);
    return mt_fail(code, "%s: %s", s->name, msg);
}

/* Copies text for a message: at most about 60 bytes (cut on a UTF-8 boundary, "..." added), with
 * control characters shown as spaces so that a message stays on one line. */
static void shorten(const char *text, char *out, size_t cap) {
    size_t limit = cap > 64 ? 60 : cap - 4, n = 0;
    for (; text[n] && n < limit; n++) out[n] = (unsigned char)text[n] < 0x20 ? ' ' : text[n];
    if (text[n]) {
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--;
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

/* ---- the YAML tree -------------------------------------------------------------------------- */

typedef enum ykind { Y_SCALAR, Y_SEQ, Y_MAP } ykind;

typedef struct ynode ynode;

typedef struct yentry {
    char *key;
    int line; /* 1-based line of the key */
    ynode *val;
} yentry;

struct ynode {
    ykind kind;
    int line;      /* 1-based */
    char *text;    /* Y_SCALAR: the value */
    bool quoted;   /* Y_SCALAR: quoted or a block scalar (| or >): always a string */
    size_t n, cap; /* Y_SEQ: items; Y_MAP: entries */
    ynode **items;
    yentry *entries;
};

enum { MAX_DEPTH = 200 }; /* nesting a config never needs; keeps the reader's recursion bounded */

static void ynode_free(ynode *y) {
    if (!y) return;
    for (size_t i = 0; i < y->n; i++) {
        if (y->kind == Y_SEQ) ynode_free(y->items[i]);
        if (y->kind == Y_MAP) {
            mt_free(y->entries[i].key);
            ynode_free(y->entries[i].val);
        }
    }
    mt_free(y->text);
    mt_free(y->items);
    mt_free(y->entries);
    mt_free(y);
}

/* YAML's null: no value at all, ~, or null written plainly. */
static bool ynode_is_null(const ynode *y) {
    if (!y) return true;
    if (y->kind != Y_SCALAR || y->quoted) return false;
    const char *t = y->text;
    return !t[0] || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") ||
           !strcmp(t, "NULL");
}

/* Describes a value for "found ...": 'fast', "123" (quoted), a mapping, a list, nothing. */
static void describe(const ynode *y, char *out, size_t cap) {
    char text[72];
    if (!y || (y->kind == Y_SCALAR && !y->quoted && !y->text[0]))
        snprintf(out, cap, "nothing");
    else if (y->kind == Y_MAP)
        snprintf(out, cap, "a mapping");
    else if (y->kind == Y_SEQ)
        snprintf(out, cap, "a list");
    else {
        shorten(y->text, text, sizeof text);
        snprintf(out, cap, y->quoted ? "\"%s\"" : "'%s'", text);
    }
}

typedef struct yreader {
    yaml_parser_t parser;
    const char *text;
    size_t n;
    const src *s;
    mt_status syntax; /* the code for malformed YAML: MT_ERR_FORMAT, or MT_ERR_USAGE on the CLI */
} yreader;

/* 0-based line numbers, for libyaml errors that only give a byte offset. */
static size_t line_at_offset(const yreader *r, size_t off) {
    size_t line = 0;
    for (size_t i = 0; i < off && i < r->n; i++) line += r->text[i] == '\n';
    return line;
}

static bool line_has_tab(const yreader *r, size_t line) {
    size_t i = 0;
    for (size_t l = 0; l < line && i < r->n; i++) l += r->text[i] == '\n';
    for (; i < r->n && r->text[i] != '\n'; i++)
        if (r->text[i] == '\t') return true;
    return false;
}

static mt_status yr_error(yreader *r) {
    const yaml_parser_t *p = &r->parser;
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_MEMORY_ERROR)
        return fail_at(MT_ERR_NOMEM, r->s, 0, "out of memory while reading YAML");
    if (p->error == YAML_READER_ERROR) {
        int line = (int)line_at_offset(r, p->problem_offset) + 1;
        if (p->problem_value >= 0)
            return fail_at(r->syntax, r->s, line, "%s (byte 0x%02X); the text must be UTF-8",
                           problem, (unsigned)p->problem_value);
        return fail_at(r->syntax, r->s, line, "%s", problem);
    }
    int line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
    const char *tab = line_has_tab(r, p->problem_mark.line)
                          ? "; the line has a tab: YAML must be indented with spaces"
                          : "";
    if (r->s->kind != SRC_FILE)
        return fail_at(r->syntax, r->s, 0, "not a valid YAML value: %s", problem);
    /* The context helps when it starts elsewhere: an unclosed quote is found at the end. */
    if (p->context && p->context_mark.line != p->problem_mark.line)
        return mt_fail(r->syntax, "%s:%d:%d: %s (%s at line %d)%s", r->s->name, line, col, problem,
                       p->context, (int)p->context_mark.line + 1, tab);
    return mt_fail(r->syntax, "%s:%d:%d: %s%s", r->s->name, line, col, problem, tab);
}

static mt_status yr_next(yreader *r, yaml_event_t *ev) {
    return yaml_parser_parse(&r->parser, ev) ? MT_OK : yr_error(r);
}

static mt_status read_node(yreader *r, yaml_event_t *ev, int depth, ynode **out);

static mt_status read_scalar(yreader *r, const yaml_event_t *ev, ynode *y) {
    const char *value = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (ev->data.scalar.tag)
        return fail_at(r->syntax, r->s, y->line,
                       "YAML tags (%s) are not supported; quote the value to make it a string",
                       (const char *)ev->data.scalar.tag);
    if (memchr(value, '\0', len))
        return fail_at(r->syntax, r->s, y->line, "a value holds a NUL character");
    y->text = mt_alloc(len + 1, "config YAML scalar");
    if (!y->text) return MT_ERR_NOMEM;
    memcpy(y->text, value, len);
    y->text[len] = '\0';
    y->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    return MT_OK;
}

static mt_status read_seq(yreader *r, ynode *y, int depth) {
    for (;;) {
        yaml_event_t ev;
        MT_TRY(yr_next(r, &ev));
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return MT_OK;
        }
        if (y->n == y->cap) {
            size_t cap = y->cap ? 2 * y->cap : 8;
            ynode **items = mt_realloc(y->items, cap, sizeof *items, "config YAML list");
            if (!items) {
                yaml_event_delete(&ev);
                return MT_ERR_NOMEM;
            }
            y->items = items;
            y->cap = cap;
        }
        MT_TRY(read_node(r, &ev, depth + 1, &y->items[y->n]));
        y->n++;
    }
}

/* Reads one "key: value" pair whose key event is ev (taken). */
static mt_status read_entry(yreader *r, ynode *map, yaml_event_t *ev, int depth) {
    ynode *key;
    MT_TRY(read_node(r, ev, depth + 1, &key));
    mt_status st = MT_OK;
    if (key->kind != Y_SCALAR)
        st = fail_at(r->syntax, r->s, key->line, "a mapping key must be a name, found a %s",
                     key->kind == Y_MAP ? "mapping" : "list");
    else if (ynode_is_null(key))
        st = fail_at(r->syntax, r->s, key->line, "a mapping key is empty");
    for (size_t i = 0; st == MT_OK && i < map->n; i++)
        if (!strcmp(map->entries[i].key, key->text))
            st = fail_at(MT_ERR_CONFIG, r->s, key->line,
                         "duplicate key '%s' (first given at line %d)", key->text,
                         map->entries[i].line);
    if (st == MT_OK && map->n == map->cap) {
        size_t cap = map->cap ? 2 * map->cap : 8;
        yentry *entries = mt_realloc(map->entries, cap, sizeof *entries, "config YAML mapping");
        if (entries) {
            map->entries = entries;
            map->cap = cap;
        } else
            st = MT_ERR_NOMEM;
    }
    yaml_event_t vev;
    ynode *val = NULL;
    if (st == MT_OK) st = yr_next(r, &vev);
    if (st == MT_OK) st = read_node(r, &vev, depth + 1, &val);
    if (st == MT_OK) {
        map->entries[map->n++] = (yentry){key->text, key->line, val};
        key->text = NULL;
    }
    ynode_free(key);
    return st;
}

static mt_status read_map(yreader *r, ynode *y, int depth) {
    for (;;) {
        yaml_event_t ev;
        MT_TRY(yr_next(r, &ev));
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return MT_OK;
        }
        MT_TRY(read_entry(r, y, &ev, depth));
    }
}

/* Reads the node that starts with event ev, which it takes (deletes). */
static mt_status read_node(yreader *r, yaml_event_t *ev, int depth, ynode **out) {
    *out = NULL;
    int line = (int)ev->start_mark.line + 1;
    ynode *y = mt_calloc(1, sizeof *y, "config YAML node");
    mt_status st = y ? MT_OK : MT_ERR_NOMEM;
    if (y) y->line = line;
    const yaml_char_t *tag = NULL;
    if (ev->type == YAML_SEQUENCE_START_EVENT) tag = ev->data.sequence_start.tag;
    if (ev->type == YAML_MAPPING_START_EVENT) tag = ev->data.mapping_start.tag;
    if (st != MT_OK) {
        /* nothing more to do but clean up */
    } else if (depth > MAX_DEPTH)
        st = fail_at(r->syntax, r->s, line, "YAML nested more than %d levels deep", MAX_DEPTH);
    else if (tag)
        st = fail_at(r->syntax, r->s, line, "YAML tags (%s) are not supported", (const char *)tag);
    else if (ev->type == YAML_SCALAR_EVENT) {
        y->kind = Y_SCALAR;
        st = read_scalar(r, ev, y);
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        y->kind = Y_SEQ;
        st = read_seq(r, y, depth);
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        y->kind = Y_MAP;
        st = read_map(r, y, depth);
    } else if (ev->type == YAML_ALIAS_EVENT)
        st = fail_at(r->syntax, r->s, line,
                     "YAML aliases (*%s) are not supported; write the value out in full",
                     (const char *)ev->data.alias.anchor);
    else
        st = fail_at(MT_ERR_INTERNAL, r->s, line, "unexpected YAML event %d", (int)ev->type);
    yaml_event_delete(ev);
    if (st != MT_OK) {
        ynode_free(y);
        return st;
    }
    *out = y;
    return MT_OK;
}

static mt_status read_stream(yreader *r, ynode **root) {
    yaml_event_t ev;
    MT_TRY(yr_next(r, &ev)); /* stream start */
    yaml_event_delete(&ev);
    MT_TRY(yr_next(r, &ev));
    bool empty = ev.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev); /* document start */
    if (empty) return MT_OK;
    MT_TRY(yr_next(r, &ev));
    MT_TRY(read_node(r, &ev, 0, root));
    MT_TRY(yr_next(r, &ev)); /* document end */
    yaml_event_delete(&ev);
    MT_TRY(yr_next(r, &ev));
    int line = (int)ev.start_mark.line + 1;
    bool more = ev.type != YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    if (more)
        return fail_at(r->syntax, r->s, line,
                       "a second YAML document starts here; a config is one document");
    return MT_OK;
}

/* Reads YAML text into a tree; *out is NULL for an empty text. */
static mt_status yaml_read(const char *text, size_t n, const src *s, mt_status syntax,
                           ynode **out) {
    *out = NULL;
    yreader r = {.text = text ? text : "", .n = text ? n : 0, .s = s, .syntax = syntax};
    if (!yaml_parser_initialize(&r.parser))
        return fail_at(MT_ERR_NOMEM, s, 0, "out of memory starting the YAML parser");
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)r.text, r.n);
    mt_status st = read_stream(&r, out);
    yaml_parser_delete(&r.parser);
    if (st != MT_OK) {
        ynode_free(*out);
        *out = NULL;
    }
    return st;
}

/* ---- the schema ----------------------------------------------------------------------------- */

static bool is_list(mt_cfg_type t) {
    return t == MT_CFG_STR_LIST || t == MT_CFG_INT_LIST || t == MT_CFG_FLOAT_LIST;
}

static mt_cfg_type item_type(mt_cfg_type t) {
    switch (t) {
    case MT_CFG_STR_LIST:
        return MT_CFG_STR;
    case MT_CFG_INT_LIST:
        return MT_CFG_INT;
    case MT_CFG_FLOAT_LIST:
        return MT_CFG_FLOAT;
    default:
        return t;
    }
}

static const char *type_expect(mt_cfg_type t) {
    switch (t) {
    case MT_CFG_STR:
        return "a string";
    case MT_CFG_INT:
        return "an integer";
    case MT_CFG_FLOAT:
        return "a number";
    case MT_CFG_BOOL:
        return "true or false";
    case MT_CFG_STR_LIST:
        return "a list of strings";
    case MT_CFG_INT_LIST:
        return "a list of integers";
    case MT_CFG_FLOAT_LIST:
        return "a list of numbers";
    }
    return "?";
}

/* Is the dotted name p[0..len) a section, i.e. a proper prefix of some key? */
static bool schema_is_section(const mt_cfg_key *schema, const char *p, size_t len) {
    if (len == 0) return false;
    for (const mt_cfg_key *k = schema; k->key; k++)
        if (!strncmp(k->key, p, len) && k->key[len] == '.') return true;
    return false;
}

/* The segment of key right below the section prefix[0..plen) ("" is the top level), or NULL when
 * key is not under it; *seglen gets its length. */
static const char *next_segment(const char *key, const char *prefix, size_t plen, size_t *seglen) {
    const char *seg = key;
    if (plen) {
        if (strncmp(key, prefix, plen) || key[plen] != '.') return NULL;
        seg = key + plen + 1;
    }
    const char *dot = strchr(seg, '.');
    *seglen = dot ? (size_t)(dot - seg) : strlen(seg);
    return seg;
}

/* Did a key before schema[i] already have segment seg under the same prefix? */
static bool segment_seen(const mt_cfg_key *schema, size_t i, const char *prefix, size_t plen,
                         const char *seg, size_t seglen) {
    for (size_t j = 0; j < i; j++) {
        size_t len;
        const char *other = next_segment(schema[j].key, prefix, plen, &len);
        if (other && len == seglen && !memcmp(other, seg, len)) return true;
    }
    return false;
}

/* Appends "a, b, c" (the names right below a section), at most 20 of them. */
static void list_level(const mt_cfg_key *schema, const char *prefix, size_t plen, sbuf *b) {
    size_t shown = 0;
    for (size_t i = 0; schema[i].key; i++) {
        size_t len;
        const char *seg = next_segment(schema[i].key, prefix, plen, &len);
        if (!seg || segment_seen(schema, i, prefix, plen, seg, len)) continue;
        if (shown == 20) {
            sb_puts(b, ", ...");
            break;
        }
        if (shown++) sb_puts(b, ", ");
        sb_put(b, seg, len);
    }
    if (!shown) sb_puts(b, "(none)");
}

static bool valid_key_name(const char *k) {
    size_t seg = 0;
    for (; *k; k++) {
        if (*k == '.') {
            if (!seg) return false;
            seg = 0;
        } else if ((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
                   (*k >= '0' && *k <= '9') || *k == '_' || *k == '-')
            seg++;
        else
            return false;
    }
    return seg > 0;
}

static bool valid_choices(const char *c) {
    if (!*c) return false;
    for (const char *p = c;; p++) {
        if ((*p == '|' || !*p) && (p == c || p[-1] == '|')) return false;
        if (!*p) return true;
    }
}

/* Checks a schema for the mistakes its author could make; *n gets its length. */
static mt_status check_schema(const mt_cfg_key *schema, size_t *n) {
    size_t i = 0;
    for (; schema[i].key; i++) {
        const mt_cfg_key *k = &schema[i];
        if (!valid_key_name(k->key))
            return mt_fail(MT_ERR_INTERNAL,
                           "config schema: key '%s' is not a dotted name of letters, digits, '_' "
                           "and '-'",
                           k->key);
        if ((int)k->type < (int)MT_CFG_STR || (int)k->type > (int)MT_CFG_FLOAT_LIST)
            return mt_fail(MT_ERR_INTERNAL, "config schema: '%s' has type %d, which is unknown",
                           k->key, (int)k->type);
        if (k->flags & ~MT_CFG_REQUIRED)
            return mt_fail(MT_ERR_INTERNAL, "config schema: '%s' has unknown flags 0x%x", k->key,
                           (unsigned)k->flags);
        if (k->choices && item_type(k->type) != MT_CFG_STR)
            return mt_fail(MT_ERR_INTERNAL, "config schema: '%s' has choices but is not a string",
                           k->key);
        if (k->choices && !valid_choices(k->choices))
            return mt_fail(MT_ERR_INTERNAL,
                           "config schema: '%s' has choices \"%s\" with an empty one", k->key,
                           k->choices);
        size_t len = strlen(k->key);
        for (size_t j = 0; j < i; j++) {
            const char *o = schema[j].key;
            size_t olen = strlen(o);
            if (!strcmp(o, k->key))
                return mt_fail(MT_ERR_INTERNAL, "config schema: '%s' appears twice", o);
            if ((olen < len && !strncmp(o, k->key, olen) && k->key[olen] == '.') ||
                (len < olen && !strncmp(o, k->key, len) && o[len] == '.'))
                return mt_fail(MT_ERR_INTERNAL,
                               "config schema: '%s' and '%s': a key cannot also be a section", o,
                               k->key);
        }
    }
    *n = i;
    return MT_OK;
}

/* ---- did you mean ---------------------------------------------------------------------------- */

enum { SUGGEST_MAX = 256 }; /* longer words get no suggestion (no one mistypes those) */

/* Levenshtein distance; SIZE_MAX when a word is too long to bother. */
static size_t edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    if (na > SUGGEST_MAX || nb > SUGGEST_MAX) return SIZE_MAX;
    size_t row[SUGGEST_MAX + 1];
    for (size_t j = 0; j <= nb; j++) row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

typedef struct guess {
    const char *p; /* NULL: nothing close */
    size_t len, dist;
} guess;

/* Keeps cand when it is closer to word than the best so far and close enough to be a typo:
 * at most max(2, len/3) edits, and fewer edits than either word has letters. */
static void guess_consider(guess *g, const char *word, size_t wlen, const char *cand, size_t clen) {
    size_t d = edit_distance(word, wlen, cand, clen);
    size_t limit = clen / 3 > 2 ? clen / 3 : 2;
    if (d == SIZE_MAX || d > limit || d >= clen || d >= wlen) return;
    if (!g->p || d < g->dist) *g = (guess){cand, clen, d};
}

/* The schema key or section closest to word. A key elsewhere with the same last segment
 * ("model.lr" -> "train.lr") beats anything but a one-letter slip. */
static guess suggest_key(const mt_cfg_key *schema, const char *word) {
    guess g = {0};
    size_t wlen = strlen(word);
    for (const mt_cfg_key *k = schema; k->key; k++)
        for (const char *e = k->key;; e++)
            if (*e == '.' || !*e) {
                guess_consider(&g, word, wlen, k->key, (size_t)(e - k->key));
                if (!*e) break;
            }
    if (g.p && g.dist <= 1) return g;
    const char *last = strrchr(word, '.');
    last = last ? last + 1 : word;
    for (const mt_cfg_key *k = schema; k->key; k++) {
        const char *klast = strrchr(k->key, '.');
        klast = klast ? klast + 1 : k->key;
        if (!strcmp(klast, last) && strcmp(k->key, word)) return (guess){k->key, strlen(k->key), 0};
    }
    return g;
}

static mt_status fail_unknown(const mt_cfg_key *schema, const src *s, int line, const char *key) {
    guess g = suggest_key(schema, key);
    if (g.p)
        return fail_at(MT_ERR_CONFIG, s, line, "unknown key '%s' (did you mean '%.*s'?)", key,
                       (int)g.len, g.p);
    /* List what is valid at the deepest section the key is in. */
    size_t plen = strlen(key);
    do {
        while (plen > 0 && key[plen - 1] != '.') plen--;
        if (plen > 0) plen--;
    } while (plen > 0 && !schema_is_section(schema, key, plen));
    sbuf b = {0};
    list_level(schema, key, plen, &b);
    mt_status st = MT_ERR_NOMEM;
    if (!b.failed && plen)
        st = fail_at(MT_ERR_CONFIG, s, line, "unknown key '%s' (keys under '%.*s': %s)", key,
                     (int)plen, key, b.p);
    else if (!b.failed)
        st = fail_at(MT_ERR_CONFIG, s, line, "unknown key '%s' (top-level keys: %s)", key, b.p);
    mt_free(b.p);
    return st;
}

/* ---- typed values --------------------------------------------------------------------------- */

typedef union item {
    char *s;
    int64_t i;
    double f;
    bool b;
} item;

typedef struct value {
    bool set;
    int file_line; /* the line of the file that set it; 0 when the file did not */
    char *origin;  /* "FILE:LINE", "command line `k=v`" or "default" */
    size_t n;      /* items; 1 for a scalar */
    item *items;
} value;

struct mt_config {
    const mt_cfg_key *schema; /* borrowed */
    size_t n_keys;
    char *name;  /* the file name, for messages */
    value *vals; /* [n_keys], parallel to schema */
};

static void value_clear(value *v, mt_cfg_type t) {
    if (item_type(t) == MT_CFG_STR)
        for (size_t i = 0; i < v->n; i++) mt_free(v->items[i].s);
    mt_free(v->items);
    mt_free(v->origin);
    memset(v, 0, sizeof *v);
}

/* A YAML 1.2 decimal integer: [-+]?[0-9]+. *range is set when it does not fit in 64 bits. */
static bool parse_int(const char *t, int64_t *out, bool *range) {
    const char *p = t + (*t == '-' || *t == '+');
    if (!*p) return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9') return false;
    errno = 0;
    long long v = strtoll(t, NULL, 10);
    if (errno == ERANGE) {
        *range = true;
        return false;
    }
    *out = v;
    return true;
}

/* A YAML 1.2 number: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool float_syntax(const char *t) {
    const char *p = t + (*t == '-' || *t == '+');
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9'; p++) digits++;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++) digits++;
    if (!digits) return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '-' || *p == '+';
        if (*p < '0' || *p > '9') return false;
        while (*p >= '0' && *p <= '9') p++;
    }
    return *p == '\0';
}

static bool is_inf_or_nan(const char *t) {
    static const char *const words[] = {".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN"};
    t += *t == '-' || *t == '+';
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (!strcmp(t, words[i])) return true;
    return false;
}

/* Converts one scalar to type t (not a list type). Returns MT_OK; MT_ERR_NOMEM (message set); or
 * MT_ERR_CONFIG with no message but *hint set to what follows "expected X, found Y". */
static mt_status convert_scalar(mt_cfg_type t, const ynode *y, item *it, const char **hint) {
    *hint = "";
    if (!y || y->kind != Y_SCALAR || ynode_is_null(y)) return MT_ERR_CONFIG;
    const char *text = y->text;
    if (t == MT_CFG_STR) {
        it->s = mt_strdup(text, "config string");
        return it->s ? MT_OK : MT_ERR_NOMEM;
    }
    if (y->quoted) {
        *hint = " (quotes make it a string; remove them)";
        return MT_ERR_CONFIG;
    }
    bool range = false;
    switch (t) {
    case MT_CFG_INT:
        if (parse_int(text, &it->i, &range)) return MT_OK;
        if (range)
            *hint = " (outside the 64-bit integer range)";
        else if (float_syntax(text))
            *hint = " (not a whole number)";
        return MT_ERR_CONFIG;
    case MT_CFG_FLOAT:
        if (float_syntax(text)) {
            it->f = strtod(text, NULL);
            if (isfinite(it->f)) return MT_OK;
            *hint = " (too large for a double)";
        } else if (is_inf_or_nan(text))
            *hint = " (infinity and NaN are not allowed)";
        return MT_ERR_CONFIG;
    case MT_CFG_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "True") || !strcmp(text, "TRUE")) {
            it->b = true;
            return MT_OK;
        }
        if (!strcmp(text, "false") || !strcmp(text, "False") || !strcmp(text, "FALSE")) {
            it->b = false;
            return MT_OK;
        }
        return MT_ERR_CONFIG;
    default:
        return MT_ERR_CONFIG;
    }
}

/* Checks a string against the key's choices ("sgd|adamw"). idx names a list item (or SIZE_MAX). */
static mt_status check_choice(const mt_cfg_key *k, const char *v, size_t idx, const src *s,
                              int line) {
    if (!k->choices) return MT_OK;
    guess g = {0};
    size_t vlen = strlen(v);
    for (const char *c = k->choices;;) {
        const char *bar = strchr(c, '|');
        size_t clen = bar ? (size_t)(bar - c) : strlen(c);
        if (clen == vlen && !memcmp(c, v, vlen)) return MT_OK;
        guess_consider(&g, v, vlen, c, clen);
        if (!bar) break;
        c = bar + 1;
    }
    char at[32] = "", shown[72], mean[SUGGEST_MAX + 32] = "";
    if (idx != SIZE_MAX) snprintf(at, sizeof at, "[%zu]", idx);
    shorten(v, shown, sizeof shown);
    if (g.p) snprintf(mean, sizeof mean, " (did you mean '%.*s'?)", (int)g.len, g.p);
    return fail_at(MT_ERR_CONFIG, s, line, "%s%s: expected one of %s, found '%s'%s", k->key, at,
                   k->choices, shown, mean);
}

static mt_status fail_type(const mt_cfg_key *k, mt_cfg_type t, size_t idx, const ynode *y,
                           const char *hint, const src *s, int line) {
    char at[32] = "", found[96];
    if (idx != SIZE_MAX) snprintf(at, sizeof at, "[%zu]", idx);
    describe(y, found, sizeof found);
    return fail_at(MT_ERR_CONFIG, s, line, "%s%s: expected %s, found %s%s", k->key, at,
                   type_expect(t), found, hint);
}

/* Converts the node given for key k (line: where the key is) into *out, which the caller clears. */
static mt_status convert_value(const mt_cfg_key *k, const ynode *y, const src *s, int line,
                               value *out) {
    memset(out, 0, sizeof *out);
    mt_cfg_type t = item_type(k->type);
    const char *hint = "";
    if (!is_list(k->type)) {
        out->items = mt_calloc(1, sizeof *out->items, "config value");
        if (!out->items) return MT_ERR_NOMEM;
        out->n = 1;
        mt_status st = convert_scalar(t, y, &out->items[0], &hint);
        if (st == MT_ERR_CONFIG) return fail_type(k, t, SIZE_MAX, y, hint, s, line);
        if (st == MT_OK && t == MT_CFG_STR)
            st = check_choice(k, out->items[0].s, SIZE_MAX, s, line);
        return st;
    }
    if (!y || y->kind != Y_SEQ) {
        if (!ynode_is_null(y) && y->kind == Y_SCALAR) hint = " (a list is written [a, b])";
        return fail_type(k, k->type, SIZE_MAX, y, hint, s, line);
    }
    out->items = mt_calloc(y->n ? y->n : 1, sizeof *out->items, "config list");
    if (!out->items) return MT_ERR_NOMEM;
    out->n = y->n;
    for (size_t i = 0; i < y->n; i++) {
        const ynode *e = y->items[i];
        int eline = s->kind == SRC_FILE ? e->line : line;
        mt_status st = convert_scalar(t, e, &out->items[i], &hint);
        if (st == MT_ERR_CONFIG) return fail_type(k, t, i, e, hint, s, eline);
        if (st == MT_OK && t == MT_CFG_STR) st = check_choice(k, out->items[i].s, i, s, eline);
        if (st != MT_OK) return st;
    }
    return MT_OK;
}

static char *make_origin(const src *s, int line) {
    sbuf b = {0};
    if (s->kind == SRC_FILE)
        sb_printf(&b, "%s:%d", s->name, line);
    else if (s->kind == SRC_CMDLINE)
        sb_printf(&b, "command line `%s`", s->name);
    else
        sb_puts(&b, "default");
    return b.p; /* NULL when it failed */
}

/* Converts y and stores it as the value of schema key i, replacing what was there. */
static mt_status store(mt_config *c, size_t i, const ynode *y, const src *s, int line) {
    const mt_cfg_key *k = &c->schema[i];
    value v;
    mt_status st = convert_value(k, y, s, line, &v);
    if (st == MT_OK) {
        v.origin = make_origin(s, line);
        if (!v.origin) st = MT_ERR_NOMEM;
    }
    if (st != MT_OK) {
        value_clear(&v, k->type);
        return st;
    }
    v.set = true;
    v.file_line = s->kind == SRC_FILE ? line : 0;
    value_clear(&c->vals[i], k->type);
    c->vals[i] = v;
    return MT_OK;
}

static ptrdiff_t find_key(const mt_config *c, const char *key, size_t len) {
    for (size_t i = 0; i < c->n_keys; i++)
        if (!strncmp(c->schema[i].key, key, len) && c->schema[i].key[len] == '\0')
            return (ptrdiff_t)i;
    return -1;
}

/* ---- loading -------------------------------------------------------------------------------- */

static mt_status fail_section(const mt_config *c, const src *s, int line, const char *key,
                              size_t len, const ynode *y) {
    char found[96];
    sbuf b = {0};
    describe(y, found, sizeof found);
    list_level(c->schema, key, len, &b);
    mt_status st = MT_ERR_NOMEM;
    if (!b.failed)
        st = fail_at(MT_ERR_CONFIG, s, line, "%.*s: expected a mapping of keys (%s), found %s",
                     (int)len, key, b.p, found);
    mt_free(b.p);
    return st;
}

static mt_status apply_map(mt_config *c, const ynode *map, sbuf *path, const src *s);

/* Applies one "key: value" of the file; path holds the dotted key. */
static mt_status apply_entry(mt_config *c, const yentry *e, sbuf *path, const src *s) {
    ptrdiff_t i = find_key(c, path->p, path->len);
    if (i >= 0) {
        if (c->vals[i].file_line)
            return fail_at(MT_ERR_CONFIG, s, e->line, "duplicate key '%s' (first given at line %d)",
                           path->p, c->vals[i].file_line);
        return store(c, (size_t)i, e->val, s, e->line);
    }
    if (!schema_is_section(c->schema, path->p, path->len))
        return fail_unknown(c->schema, s, e->line, path->p);
    if (ynode_is_null(e->val)) return MT_OK; /* "model:" with all its keys commented out */
    if (e->val->kind != Y_MAP) return fail_section(c, s, e->line, path->p, path->len, e->val);
    if (!sb_puts(path, ".")) return MT_ERR_NOMEM;
    return apply_map(c, e->val, path, s);
}

static mt_status apply_map(mt_config *c, const ynode *map, sbuf *path, const src *s) {
    for (size_t i = 0; i < map->n; i++) {
        size_t mark = path->len;
        if (!sb_puts(path, map->entries[i].key)) return MT_ERR_NOMEM;
        mt_status st = apply_entry(c, &map->entries[i], path, s);
        path->len = mark;
        path->p[mark] = '\0';
        if (st != MT_OK) return st;
    }
    return MT_OK;
}

static mt_status apply_file(mt_config *c, const char *text, size_t n) {
    src s = {SRC_FILE, c->name};
    ynode *root;
    MT_TRY(yaml_read(text, n, &s, MT_ERR_FORMAT, &root));
    mt_status st = MT_OK;
    sbuf path = {0};
    char found[96];
    if (ynode_is_null(root)) {
        /* an empty file is an empty mapping */
    } else if (root->kind != Y_MAP) {
        describe(root, found, sizeof found);
        st = fail_at(MT_ERR_CONFIG, &s, root->line,
                     "expected a mapping of keys (key: value) at the top level, found %s", found);
    } else if (!sb_reserve(&path, 64))
        st = MT_ERR_NOMEM;
    else {
        path.p[0] = '\0';
        st = apply_map(c, root, &path, &s);
    }
    mt_free(path.p);
    ynode_free(root);
    return st;
}

static mt_status apply_override(mt_config *c, const char *arg) {
    src s = {SRC_CMDLINE, arg};
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) return fail_at(MT_ERR_USAGE, &s, 0, "expected key=value (train.lr=0.01)");
    size_t len = (size_t)(eq - arg);
    ptrdiff_t i = find_key(c, arg, len);
    if (i >= 0) {
        ynode *y;
        MT_TRY(yaml_read(eq + 1, strlen(eq + 1), &s, MT_ERR_USAGE, &y));
        mt_status st = store(c, (size_t)i, y, &s, 0);
        ynode_free(y);
        return st;
    }
    if (schema_is_section(c->schema, arg, len)) {
        sbuf b = {0};
        list_level(c->schema, arg, len, &b);
        mt_status st = MT_ERR_NOMEM;
        if (!b.failed)
            st = fail_at(MT_ERR_CONFIG, &s, 0, "'%.*s' is a section; set one of its keys (%s)",
                         (int)len, arg, b.p);
        mt_free(b.p);
        return st;
    }
    char *key = mt_alloc(len + 1, "config override key");
    if (!key) return MT_ERR_NOMEM;
    memcpy(key, arg, len);
    key[len] = '\0';
    mt_status st = fail_unknown(c->schema, &s, 0, key);
    mt_free(key);
    return st;
}

static mt_status apply_defaults(mt_config *c) {
    for (size_t i = 0; i < c->n_keys; i++) {
        const mt_cfg_key *k = &c->schema[i];
        if (!k->def) continue;
        src s = {SRC_DEFAULT, k->key};
        ynode *y;
        mt_status st = yaml_read(k->def, strlen(k->def), &s, MT_ERR_FORMAT, &y);
        if (st == MT_OK) st = store(c, i, y, &s, 0);
        ynode_free(y);
        if (st == MT_ERR_NOMEM) return st;
        if (st != MT_OK) {
            char why[MT_ERROR_MAX];
            snprintf(why, sizeof why, "%s", mt_error_message());
            return mt_fail(MT_ERR_INTERNAL,
                           "config schema: the default of '%s' (\"%s\") is broken: %s", k->key,
                           k->def, why);
        }
    }
    return MT_OK;
}

static mt_status check_required(const mt_config *c) {
    sbuf b = {0};
    size_t missing = 0;
    for (size_t i = 0; i < c->n_keys; i++) {
        const mt_cfg_key *k = &c->schema[i];
        if (!(k->flags & MT_CFG_REQUIRED) || c->vals[i].set) continue;
        sb_printf(&b, "%s'%s'", missing++ ? ", " : "", k->key);
        if (k->doc) sb_printf(&b, " (%s)", k->doc);
    }
    mt_status st = MT_OK;
    if (b.failed)
        st = MT_ERR_NOMEM;
    else if (missing)
        st = mt_fail(MT_ERR_CONFIG, "%s: missing required key%s %s", c->name,
                     missing > 1 ? "s" : "", b.p);
    mt_free(b.p);
    return st;
}

mt_status mt_config_parse(const char *text, size_t n, const char *name, const mt_cfg_key *schema,
                          int n_overrides, char *const *overrides, mt_config **out) {
    if (!out) return mt_fail(MT_ERR_ARG, "mt_config_parse: out is NULL");
    *out = NULL;
    if (!schema) return mt_fail(MT_ERR_ARG, "mt_config_parse: schema is NULL");
    if (n_overrides < 0 || (n_overrides > 0 && !overrides))
        return mt_fail(MT_ERR_ARG, "mt_config_parse: %d overrides but no array", n_overrides);
    size_t n_keys = 0;
    MT_TRY(check_schema(schema, &n_keys));
    mt_config *c = mt_calloc(1, sizeof *c, "config");
    if (!c) return MT_ERR_NOMEM;
    c->schema = schema;
    c->n_keys = n_keys;
    c->name = mt_strdup(name ? name : "(config text)", "config name");
    c->vals = mt_calloc(n_keys ? n_keys : 1, sizeof *c->vals, "config values");
    mt_status st = c->name && c->vals ? MT_OK : MT_ERR_NOMEM;
    if (st == MT_OK) st = apply_defaults(c);
    if (st == MT_OK) st = apply_file(c, text, n);
    for (int i = 0; st == MT_OK && i < n_overrides; i++) st = apply_override(c, overrides[i]);
    if (st == MT_OK) st = check_required(c);
    if (st != MT_OK) {
        mt_config_free(c);
        return st;
    }
    *out = c;
    return MT_OK;
}

mt_status mt_config_load(const char *path, const mt_cfg_key *schema, int n_overrides,
                         char *const *overrides, mt_config **out) {
    if (!path) /* no job file: defaults and overrides only */
        return mt_config_parse("", 0, "(no config file)", schema, n_overrides, overrides, out);
    if (out) *out = NULL;
    char *text;
    size_t n;
    MT_TRY(mt_file_read(path, &text, &n));
    mt_status st = mt_config_parse(text, n, path, schema, n_overrides, overrides, out);
    mt_free(text);
    return st;
}

void mt_config_free(mt_config *c) {
    if (!c) return;
    if (c->vals)
        for (size_t i = 0; i < c->n_keys; i++) value_clear(&c->vals[i], c->schema[i].type);
    mt_free(c->vals);
    mt_free(c->name);
    mt_free(c);
}

/* ---- getters: misuse is a programming error and aborts --------------------------------------- */

static const char *getter_for(mt_cfg_type t) {
    switch (t) {
    case MT_CFG_STR:
        return "mt_config_str";
    case MT_CFG_INT:
        return "mt_config_int";
    case MT_CFG_FLOAT:
        return "mt_config_float";
    case MT_CFG_BOOL:
        return "mt_config_bool";
    case MT_CFG_STR_LIST:
        return "mt_config_len and mt_config_str_at";
    case MT_CFG_INT_LIST:
        return "mt_config_len and mt_config_int_at";
    case MT_CFG_FLOAT_LIST:
        return "mt_config_len and mt_config_float_at";
    }
    return "?";
}

static _Noreturn void die(const char *fn, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static _Noreturn void die(const char *fn, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "medtrain: bug: %s(\"%s\"): ", fn, key ? key : "(null)");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static size_t lookup(const mt_config *c, const char *key, const char *fn) {
    if (!c || !key) die(fn, key, "called with a NULL %s", c ? "key" : "config");
    ptrdiff_t i = find_key(c, key, strlen(key));
    if (i < 0) die(fn, key, "the key is not in the schema");
    return (size_t)i;
}

enum { ANY_LIST = -1 }; /* for get(): any list type will do */

/* The value of key, which must have type want (or be a list, for ANY_LIST); need_set: abort when
 * it is unset. */
static const value *get(const mt_config *c, const char *key, const char *fn, int want,
                        bool need_set) {
    size_t i = lookup(c, key, fn);
    mt_cfg_type t = c->schema[i].type;
    if (want == ANY_LIST ? !is_list(t) : (int)t != want)
        die(fn, key, "the key holds %s; use %s", type_expect(t), getter_for(t));
    if (need_set && !c->vals[i].set)
        die(fn, key, "the key is unset (no default and not given); check mt_config_is_set first");
    return &c->vals[i];
}

static const item *get_at(const mt_config *c, const char *key, const char *fn, int want, size_t i) {
    const value *v = get(c, key, fn, want, false);
    if (i >= v->n) die(fn, key, "index %zu is past the end of the list (%zu items)", i, v->n);
    return &v->items[i];
}

bool mt_config_is_set(const mt_config *c, const char *key) {
    size_t i = lookup(c, key, "mt_config_is_set");
    return c->vals[i].set;
}

const char *mt_config_str(const mt_config *c, const char *key) {
    const value *v = get(c, key, "mt_config_str", MT_CFG_STR, false);
    return v->set ? v->items[0].s : NULL;
}

int64_t mt_config_int(const mt_config *c, const char *key) {
    return get(c, key, "mt_config_int", MT_CFG_INT, true)->items[0].i;
}

double mt_config_float(const mt_config *c, const char *key) {
    return get(c, key, "mt_config_float", MT_CFG_FLOAT, true)->items[0].f;
}

bool mt_config_bool(const mt_config *c, const char *key) {
    return get(c, key, "mt_config_bool", MT_CFG_BOOL, true)->items[0].b;
}

size_t mt_config_len(const mt_config *c, const char *key) {
    return get(c, key, "mt_config_len", ANY_LIST, false)->n; /* 0 when unset */
}

const char *mt_config_str_at(const mt_config *c, const char *key, size_t i) {
    return get_at(c, key, "mt_config_str_at", MT_CFG_STR_LIST, i)->s;
}

int64_t mt_config_int_at(const mt_config *c, const char *key, size_t i) {
    return get_at(c, key, "mt_config_int_at", MT_CFG_INT_LIST, i)->i;
}

double mt_config_float_at(const mt_config *c, const char *key, size_t i) {
    return get_at(c, key, "mt_config_float_at", MT_CFG_FLOAT_LIST, i)->f;
}

const char *mt_config_origin(const mt_config *c, const char *key) {
    size_t i = lookup(c, key, "mt_config_origin");
    const value *v = &c->vals[i];
    return v->set ? v->origin : "unset";
}

mt_status mt_config_fail(const mt_config *c, const char *key, const char *fmt, ...) {
    size_t i = lookup(c, key, "mt_config_fail");
    const value *v = &c->vals[i];
    char msg[MT_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mt_fail(MT_ERR_CONFIG, "%s: %s: %s", v->set ? v->origin : c->name, key, msg);
}

/* ---- canonical YAML ------------------------------------------------------------------------- */

/* Can s be written without quotes and still read back as the same string, here and in other YAML
 * readers (YAML 1.1 ones included)? Conservative: a name-like word that is no keyword. */
static bool plain_safe(const char *s) {
    static const char *const words[] = {"null", "true", "false", "yes", "no",
                                        "on",   "off",  "y",     "n"};
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || *s == '/'))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '/' || *p == '-'))
            return false;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        size_t n = strlen(words[i]);
        if (strlen(s) == n) {
            size_t j = 0;
            while (j < n && (s[j] | 0x20) == words[i][j]) j++;
            if (j == n) return false;
        }
    }
    return true;
}

/* Decodes one UTF-8 character (the text came through libyaml, so it is valid). */
static size_t utf8_next(const unsigned char *s, uint32_t *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t n = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
    uint32_t v = s[0] & (0x3F >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) { /* not valid after all: pass the byte through */
            *cp = s[0];
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return n;
}

/* Characters YAML allows unescaped in a double-quoted scalar without folding them. */
static bool yaml_printable(uint32_t c) {
    return (c >= 0x20 && c <= 0x7E) || (c >= 0xA0 && c <= 0xD7FF && c != 0x2028 && c != 0x2029) ||
           (c >= 0xE000 && c <= 0xFFFD && c != 0xFEFF) || (c >= 0x10000 && c <= 0x10FFFF);
}

static void put_string(sbuf *b, const char *s) {
    if (plain_safe(s)) {
        sb_puts(b, s);
        return;
    }
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t c;
        size_t n = utf8_next(p, &c);
        if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", (char)c);
        else if (c == '\n')
            sb_puts(b, "\\n");
        else if (c == '\t')
            sb_puts(b, "\\t");
        else if (c == '\r')
            sb_puts(b, "\\r");
        else if (c <= 0xFF && !yaml_printable(c))
            sb_printf(b, "\\x%02X", (unsigned)c);
        else if (!yaml_printable(c))
            sb_printf(b, "\\u%04X", (unsigned)c);
        else
            sb_put(b, (const char *)p, n);
        p += n;
    }
    sb_put(b, "\"", 1);
}

/* The shortest %.Ng (N = 15..17) that reads back as the same double. */
static void put_float(sbuf *b, double x) {
    char text[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, x);
        if (strtod(text, NULL) == x) break;
    }
    sb_puts(b, text);
}

static void put_item(sbuf *b, mt_cfg_type t, const item *it) {
    switch (t) {
    case MT_CFG_STR:
        put_string(b, it->s);
        break;
    case MT_CFG_INT:
        sb_printf(b, "%" PRId64, it->i);
        break;
    case MT_CFG_FLOAT:
        put_float(b, it->f);
        break;
    case MT_CFG_BOOL:
        sb_puts(b, it->b ? "true" : "false");
        break;
    default:
        break;
    }
}

/* Writes the section lines that key needs beyond those prev (the key before it in sorted order)
 * opened, then "leaf: ". Sorted keys that share a section are adjacent, so a section once left is
 * never reopened. */
static void put_key_path(sbuf *b, const char *prev, const char *key) {
    size_t depth = 0;
    while (prev) {
        const char *pd = strchr(prev, '.'), *kd = strchr(key, '.');
        if (!pd || !kd || pd - prev != kd - key || memcmp(prev, key, (size_t)(pd - prev))) break;
        prev = pd + 1;
        key = kd + 1;
        depth++;
    }
    for (const char *dot; (dot = strchr(key, '.')); key = dot + 1, depth++) {
        sb_indent(b, depth);
        sb_put(b, key, (size_t)(dot - key));
        sb_puts(b, ":\n");
    }
    sb_indent(b, depth);
    sb_puts(b, key);
    sb_puts(b, ": ");
}

static int cmp_key(const void *a, const void *b) {
    return strcmp((*(const mt_cfg_key *const *)a)->key, (*(const mt_cfg_key *const *)b)->key);
}

char *mt_config_to_yaml(const mt_config *c) {
    if (!c) {
        mt_fail(MT_ERR_ARG, "mt_config_to_yaml: config is NULL");
        return NULL;
    }
    const mt_cfg_key **order = mt_calloc(c->n_keys ? c->n_keys : 1, sizeof *order, "config keys");
    if (!order) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < c->n_keys; i++)
        if (c->vals[i].set) order[n++] = &c->schema[i];
    qsort(order, n, sizeof *order, cmp_key);
    sbuf b = {0};
    sb_reserve(&b, 256);
    if (b.p) b.p[0] = '\0';
    const char *prev = NULL;
    for (size_t j = 0; j < n; j++) {
        const mt_cfg_key *k = order[j];
        const value *v = &c->vals[k - c->schema];
        put_key_path(&b, prev, k->key);
        prev = k->key;
        if (!is_list(k->type))
            put_item(&b, k->type, &v->items[0]);
        else {
            sb_put(&b, "[", 1);
            for (size_t i = 0; i < v->n; i++) {
                if (i) sb_puts(&b, ", ");
                put_item(&b, item_type(k->type), &v->items[i]);
            }
            sb_put(&b, "]", 1);
        }
        sb_put(&b, "\n", 1);
    }
    mt_free(order);
    if (b.failed) {
        mt_free(b.p);
        return NULL;
    }
    return b.p;
}

mt_status mt_config_write(const mt_config *c, const char *path) {
    char *yaml = mt_config_to_yaml(c);
    if (!yaml) return c ? MT_ERR_NOMEM : MT_ERR_ARG;
    mt_status st = mt_file_write_atomic(path, yaml, strlen(yaml));
    mt_free(yaml);
    return st;
}

mt_status mt_config_digest(const mt_config *c, char hex[65]) {
    char *yaml = mt_config_to_yaml(c);
    if (!yaml) return c ? MT_ERR_NOMEM : MT_ERR_ARG;
    uint8_t digest[MT_SHA256_BYTES];
    mt_status st = mt_sha256(yaml, strlen(yaml), digest);
    mt_free(yaml);
    if (st == MT_OK) mt_hex(digest, sizeof digest, hex);
    return st;
}

/* ---- documented schema ---------------------------------------------------------------------- */

static void print_leaf(FILE *f, const mt_cfg_key *k, const char *name, size_t depth) {
    fprintf(f, "%*s%s:", (int)(2 * depth), "", name);
    if (k->def) fprintf(f, " %s", k->def);
    if (!k->doc && !k->choices && !(k->flags & MT_CFG_REQUIRED)) {
        fputc('\n', f);
        return;
    }
    fputs("  #", f);
    if (k->flags & MT_CFG_REQUIRED) fputs(" required:", f);
    if (k->doc) fprintf(f, " %s", k->doc);
    if (k->choices) fprintf(f, " (%s)", k->choices);
    fputc('\n', f);
}

/* Prints the keys under prefix[0..plen), grouped by section in schema order. */
static void print_level(FILE *f, const mt_cfg_key *schema, const char *prefix, size_t plen,
                        size_t depth) {
    for (size_t i = 0; schema[i].key; i++) {
        size_t len;
        const char *seg = next_segment(schema[i].key, prefix, plen, &len);
        if (!seg || segment_seen(schema, i, prefix, plen, seg, len)) continue;
        if (!seg[len]) {
            print_leaf(f, &schema[i], seg, depth);
            continue;
        }
        fprintf(f, "%*s%.*s:\n", (int)(2 * depth), "", (int)len, seg);
        print_level(f, schema, schema[i].key, (size_t)(seg - schema[i].key) + len, depth + 1);
    }
}

void mt_config_print_schema(const mt_cfg_key *schema, void *file) {
    print_level(file ? (FILE *)file : stdout, schema, "", 0, 0);
}
