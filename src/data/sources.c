/* Inputs of `medtrain pack`: sorted DICOM folder walks, manifest.json entries, labels CSV. */
#include "medtrain/sources.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"

/* ---- the list --------------------------------------------------------------------------- */

static mt_status push(mt_source_list *l, mt_source s) {
    if ((l->n & (l->n - 1)) == 0) { /* grow at powers of two */
        mt_source *bigger =
            mt_realloc(l->items, (size_t)(l->n ? 2 * l->n : 16), sizeof *bigger, "source list");
        if (!bigger) return MT_ERR_NOMEM;
        l->items = bigger;
    }
    l->items[l->n++] = s;
    return MT_OK;
}

static void free_source(mt_source *s) {
    mt_free(s->path), mt_free(s->rel), mt_free(s->case_id), mt_free(s->modality),
        mt_free(s->labels);
}

void mt_sources_free(mt_source_list *l) {
    for (int64_t i = 0; i < l->n; i++) free_source(&l->items[i]);
    mt_free(l->items);
    for (int i = 0; i < l->n_labels; i++) mt_free(l->label_names[i]);
    mt_free(l->label_names);
    memset(l, 0, sizeof *l);
}

/* ---- DICOM folders ------------------------------------------------------------------------ */

typedef struct path_vec {
    char **v;
    size_t n, cap;
} path_vec;

static mt_status walk(const char *root, const char *rel, path_vec *out) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) return mt_fail(MT_ERR_IO, "%s: cannot read folder: %s", dir, strerror(errno));
    mt_status st = MT_OK;
    struct dirent *e;
    while (st == MT_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char child[4096], full[8192];
        snprintf(child, sizeof child, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, child);
        struct stat sb;
        if (stat(full, &sb) != 0) continue; /* a dangling link */
        if (S_ISDIR(sb.st_mode)) {
            st = walk(root, child, out);
        } else if (S_ISREG(sb.st_mode)) {
            if (out->n == out->cap) {
                size_t cap = out->cap ? 2 * out->cap : 256;
                char **bigger = mt_realloc(out->v, cap, sizeof *bigger, "file list");
                if (!bigger) {
                    st = MT_ERR_NOMEM;
                    break;
                }
                out->v = bigger, out->cap = cap;
            }
            out->v[out->n] = mt_strdup(child, "file name");
            if (!out->v[out->n])
                st = MT_ERR_NOMEM;
            else
                out->n++;
        }
    }
    closedir(d);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

mt_status mt_sources_add_dicom_dir(mt_source_list *l, const char *dir) {
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return mt_fail(MT_ERR_IO, "%s: not a folder", dir);
    path_vec files = {0};
    mt_status st = walk(dir, "", &files);
    if (st == MT_OK) qsort(files.v, files.n, sizeof *files.v, cmp_str);
    for (size_t i = 0; i < files.n; i++) {
        if (st != MT_OK) {
            mt_free(files.v[i]);
            continue;
        }
        mt_source s = {0};
        size_t n = strlen(dir) + strlen(files.v[i]) + 2;
        s.path = mt_alloc(n, "path");
        if (!s.path) {
            st = MT_ERR_NOMEM;
            mt_free(files.v[i]);
            continue;
        }
        snprintf(s.path, n, "%s/%s", dir, files.v[i]);
        s.rel = files.v[i];
        s.dicom = true;
        st = push(l, s);
        if (st != MT_OK) free_source(&s);
    }
    mt_free(files.v);
    return st;
}

/* ---- manifests ---------------------------------------------------------------------------- */

static int label_index(mt_source_list *l, const char *name, mt_status *st) {
    for (int i = 0; i < l->n_labels; i++)
        if (strcmp(l->label_names[i], name) == 0) return i;
    char **bigger =
        mt_realloc(l->label_names, (size_t)l->n_labels + 1, sizeof *bigger, "label names");
    char *copy = bigger ? mt_strdup(name, "label name") : NULL;
    if (!copy) {
        if (bigger) l->label_names = bigger;
        *st = MT_ERR_NOMEM;
        return -1;
    }
    l->label_names = bigger;
    l->label_names[l->n_labels] = copy;
    return l->n_labels++;
}

/* A manifest label value: 1 or 0; -1 and null are unknown. */
static mt_status label_value(const cJSON *v, const char *path, int entry, const char *name,
                             float *out) {
    if (cJSON_IsNull(v)) {
        *out = NAN;
        return MT_OK;
    }
    if (cJSON_IsNumber(v) && (v->valuedouble == 1 || v->valuedouble == 0 || v->valuedouble == -1)) {
        *out = v->valuedouble == -1 ? NAN : (float)v->valuedouble;
        return MT_OK;
    }
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v) ? 1.0f : 0.0f;
        return MT_OK;
    }
    return mt_fail(MT_ERR_FORMAT, "%s: entry %d: labels.%s: expected 1, 0, -1 or null", path, entry,
                   name);
}

static mt_status add_entry(mt_source_list *l, const cJSON *e, const char *path, const char *base,
                           int i) {
    if (!cJSON_IsObject(e)) return mt_fail(MT_ERR_FORMAT, "%s: entry %d is not an object", path, i);
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(e, "image_path");
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(e, "case_id");
    const cJSON *mod = cJSON_GetObjectItemCaseSensitive(e, "modality");
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(e, "labels");
    if (!cJSON_IsString(img) || !img->valuestring[0])
        return mt_fail(MT_ERR_FORMAT, "%s: entry %d: 'image_path' (a string) is missing", path, i);
    if (!cJSON_IsString(cid) || !cid->valuestring[0])
        return mt_fail(MT_ERR_FORMAT, "%s: entry %d: 'case_id' (a string) is missing", path, i);
    if (mod && !cJSON_IsString(mod) && !cJSON_IsNull(mod))
        return mt_fail(MT_ERR_FORMAT, "%s: entry %d: 'modality' must be a string", path, i);
    if (lab && !cJSON_IsObject(lab) && !cJSON_IsNull(lab))
        return mt_fail(MT_ERR_FORMAT, "%s: entry %d: 'labels' must be an object", path, i);

    mt_status st = MT_OK;
    mt_source s = {0};
    const char *rel = img->valuestring;
    size_t n = strlen(base) + strlen(rel) + 2;
    s.path = mt_alloc(n, "path");
    if (s.path) snprintf(s.path, n, "%s%s", rel[0] == '/' ? "" : base, rel);
    s.rel = mt_strdup(rel, "path");
    s.case_id = mt_strdup(cid->valuestring, "case id");
    s.modality = cJSON_IsString(mod) ? mt_strdup(mod->valuestring, "modality") : NULL;
    if (!s.path || !s.rel || !s.case_id || (cJSON_IsString(mod) && !s.modality)) st = MT_ERR_NOMEM;
    if (st == MT_OK && cJSON_IsObject(lab)) {
        const cJSON *v;
        float vals[1024];
        int idx[1024], k = 0;
        cJSON_ArrayForEach(v, lab) {
            if (k == 1024) {
                st = mt_fail(MT_ERR_FORMAT, "%s: entry %d: more than 1024 labels", path, i);
                break;
            }
            st = label_value(v, path, i, v->string, &vals[k]);
            if (st == MT_OK) idx[k] = label_index(l, v->string, &st);
            if (st != MT_OK) break;
            k++;
        }
        /* The row covers the labels named so far; later entries may name more. */
        if (st == MT_OK && l->n_labels > 0) {
            s.n_labels = l->n_labels;
            s.labels = mt_alloc(sizeof(float) * (size_t)s.n_labels, "manifest labels");
            if (!s.labels) st = MT_ERR_NOMEM;
            for (int j = 0; st == MT_OK && j < s.n_labels; j++) s.labels[j] = NAN;
            for (int j = 0; st == MT_OK && j < k; j++) s.labels[idx[j]] = vals[j];
        }
    }
    if (st == MT_OK) st = push(l, s);
    if (st != MT_OK) free_source(&s);
    return st;
}

mt_status mt_sources_add_manifest(mt_source_list *l, const char *path) {
    cJSON *j;
    MT_TRY(mt_json_read_file(path, &j));
    mt_status st = MT_OK;
    if (!cJSON_IsArray(j))
        st = mt_fail(MT_ERR_FORMAT, "%s: expected a JSON array of entries", path);
    char base[4096] = "";
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(base, sizeof base, "%.*s/", (int)(slash - path), path);
    int i = 0;
    const cJSON *e;
    if (st == MT_OK) cJSON_ArrayForEach(e, j) {
            st = add_entry(l, e, path, base, i++);
            if (st != MT_OK) break;
        }
    cJSON_Delete(j);
    if (st == MT_OK && l->n_labels > 1024)
        st = mt_fail(MT_ERR_FORMAT, "%s: more than 1024 distinct label names", path);
    return st;
}

/* ---- labels CSV --------------------------------------------------------------------------- */

typedef struct label_row {
    char *key;
    float *values;
    int line;
    bool used;
} label_row;

struct mt_label_table {
    mt_label_key key;
    int n_labels;
    char **names;
    label_row *rows;
    int64_t n_rows;
};

/* Splits one CSV record starting at *p into fields (RFC 4180: quotes, doubled quotes, commas and
 * newlines inside quotes). Advances *p past the record and counts lines. Returns field count. */
static int csv_record(char **p, char **fields, int max, int *line, bool *bad_quote) {
    char *s = *p, *out = s;
    int n = 0;
    *bad_quote = false;
    fields[n++] = out;
    for (;;) {
        if (*s == '"' && out == fields[n - 1]) { /* a quoted field */
            s++;
            for (;;) {
                if (*s == '\0') {
                    *bad_quote = true;
                    break;
                }
                if (*s == '"' && s[1] == '"')
                    *out++ = '"', s += 2;
                else if (*s == '"') {
                    s++;
                    break;
                } else {
                    if (*s == '\n') (*line)++;
                    *out++ = *s++;
                }
            }
            if (*bad_quote) break;
        }
        if (*s == ',') {
            *out++ = '\0';
            s++;
            if (n == max) { /* too many fields: keep counting */
                n++;
                fields[max - 1] = out;
                continue;
            }
            fields[n++] = out;
            continue;
        }
        if (*s == '\r' && s[1] == '\n') s++;
        if (*s == '\n' || *s == '\0') {
            bool end = *s == '\0';
            *out = '\0';
            if (!end) s++;
            break;
        }
        *out++ = *s++;
    }
    *p = s;
    return n;
}

static int cmp_row(const void *a, const void *b) {
    return strcmp(((const label_row *)a)->key, ((const label_row *)b)->key);
}

static mt_status parse_value(const char *v, float *out) {
    while (*v == ' ') v++;
    if (!*v) return *out = NAN, MT_OK;
    char *end;
    double d = strtod(v, &end);
    while (*end == ' ') end++;
    if (*end || (d != 1 && d != 0 && d != -1)) return MT_ERR_FORMAT;
    *out = d == -1 ? NAN : (float)d;
    return MT_OK;
}

static mt_status key_column(const char *name, mt_label_key *k) {
    if (!strcasecmp(name, "path") || !strcasecmp(name, "image_path"))
        *k = MT_KEY_PATH;
    else if (!strcasecmp(name, "sop_instance_uid") || !strcasecmp(name, "SOPInstanceUID"))
        *k = MT_KEY_SOP_UID;
    else if (!strcasecmp(name, "patient_id") || !strcasecmp(name, "PatientID"))
        *k = MT_KEY_PATIENT_ID;
    else
        return MT_ERR_FORMAT;
    return MT_OK;
}

mt_status mt_labels_load(const char *path, mt_label_table **out) {
    char *text;
    size_t len;
    MT_TRY(mt_file_read(path, &text, &len));
    if (len >= 3 && (unsigned char)text[0] == 0xef && (unsigned char)text[1] == 0xbb)
        memmove(text, text + 3, len - 2);
    mt_label_table *t = mt_calloc(1, sizeof *t, "labels table");
    enum { MAX_FIELDS = 1025 };
    char **fields = mt_alloc(MAX_FIELDS * sizeof *fields, "CSV fields");
    mt_status st = t && fields ? MT_OK : MT_ERR_NOMEM;
    char *p = text;
    int line = 1;
    bool bad_quote = false;
    int nf = 0;
    if (st == MT_OK) {
        nf = csv_record(&p, fields, MAX_FIELDS, &line, &bad_quote);
        if (bad_quote)
            st = mt_fail(MT_ERR_FORMAT, "%s:1: unclosed quote in the header", path);
        else if (nf < 2 || nf > MAX_FIELDS - 1)
            st = mt_fail(MT_ERR_FORMAT,
                         "%s:1: the header needs a key column and 1 to %d label columns, "
                         "found %d columns",
                         path, MAX_FIELDS - 2, nf);
        else if (key_column(fields[0], &t->key) != MT_OK)
            st = mt_fail(MT_ERR_FORMAT,
                         "%s:1: first column is '%s': expected path, sop_instance_uid "
                         "or patient_id",
                         path, fields[0]);
    }
    if (st == MT_OK) {
        t->n_labels = nf - 1;
        t->names = mt_calloc((size_t)nf, sizeof *t->names, "label names");
        if (!t->names) st = MT_ERR_NOMEM;
        for (int i = 1; st == MT_OK && i < nf; i++) {
            if (!fields[i][0])
                st = mt_fail(MT_ERR_FORMAT, "%s:1: label column %d has no name", path, i + 1);
            else if (!(t->names[i - 1] = mt_strdup(fields[i], "label name")))
                st = MT_ERR_NOMEM;
            for (int j = 1; st == MT_OK && j < i; j++)
                if (!strcmp(fields[i], fields[j]))
                    st = mt_fail(MT_ERR_FORMAT, "%s:1: label column '%s' appears twice", path,
                                 fields[i]);
        }
    }
    int64_t cap = 0;
    while (st == MT_OK && *p) {
        int start = ++line;
        nf = csv_record(&p, fields, MAX_FIELDS, &line, &bad_quote);
        if (bad_quote) {
            st = mt_fail(MT_ERR_FORMAT, "%s:%d: unclosed quote", path, start);
            break;
        }
        if (nf == 1 && !fields[0][0]) continue; /* a blank line */
        if (nf != t->n_labels + 1) {
            st = mt_fail(MT_ERR_FORMAT, "%s:%d: %d fields, expected %d (a key and %d labels)", path,
                         start, nf, t->n_labels + 1, t->n_labels);
            break;
        }
        if (!fields[0][0]) {
            st = mt_fail(MT_ERR_FORMAT, "%s:%d: the key column is empty", path, start);
            break;
        }
        if (t->n_rows == cap) {
            cap = cap ? 2 * cap : 1024;
            label_row *bigger = mt_realloc(t->rows, (size_t)cap, sizeof *bigger, "label rows");
            if (!bigger) {
                st = MT_ERR_NOMEM;
                break;
            }
            t->rows = bigger;
        }
        label_row *r = &t->rows[t->n_rows];
        memset(r, 0, sizeof *r);
        r->line = start;
        r->key = mt_strdup(fields[0], "label key");
        r->values = mt_alloc(sizeof(float) * (size_t)t->n_labels, "label values");
        if (!r->key || !r->values) {
            mt_free(r->key), mt_free(r->values);
            st = MT_ERR_NOMEM;
            break;
        }
        t->n_rows++;
        for (int i = 0; st == MT_OK && i < t->n_labels; i++)
            if (parse_value(fields[i + 1], &r->values[i]) != MT_OK)
                st = mt_fail(MT_ERR_FORMAT,
                             "%s:%d: column '%s': expected 1, 0, -1 or blank, found '%.40s'", path,
                             start, t->names[i], fields[i + 1]);
    }
    if (st == MT_OK) {
        qsort(t->rows, (size_t)t->n_rows, sizeof *t->rows, cmp_row);
        for (int64_t i = 1; st == MT_OK && i < t->n_rows; i++)
            if (!strcmp(t->rows[i].key, t->rows[i - 1].key)) {
                int a = t->rows[i - 1].line, b = t->rows[i].line;
                st = mt_fail(MT_ERR_FORMAT, "%s:%d: the same key as line %d", path, a > b ? a : b,
                             a < b ? a : b);
            }
    }
    mt_free(fields);
    mt_free(text);
    if (st != MT_OK) {
        mt_labels_free(t);
        return st;
    }
    *out = t;
    return MT_OK;
}

void mt_labels_free(mt_label_table *t) {
    if (!t) return;
    for (int64_t i = 0; i < t->n_rows; i++) mt_free(t->rows[i].key), mt_free(t->rows[i].values);
    for (int i = 0; t->names && i < t->n_labels; i++) mt_free(t->names[i]);
    mt_free(t->names);
    mt_free(t->rows);
    mt_free(t);
}

mt_label_key mt_labels_key(const mt_label_table *t) {
    return t->key;
}
int mt_labels_count(const mt_label_table *t) {
    return t->n_labels;
}
const char *const *mt_labels_names(const mt_label_table *t) {
    return (const char *const *)t->names;
}
int64_t mt_labels_rows(const mt_label_table *t) {
    return t->n_rows;
}

const float *mt_labels_find(mt_label_table *t, const char *key) {
    label_row probe = {.key = (char *)key};
    label_row *r = bsearch(&probe, t->rows, (size_t)t->n_rows, sizeof *t->rows, cmp_row);
    if (!r) return NULL;
    r->used = true;
    return r->values;
}

bool mt_labels_row_used(const mt_label_table *t, int64_t i) {
    return i >= 0 && i < t->n_rows && t->rows[i].used;
}

void mt_labels_set_used(mt_label_table *t, int64_t i) {
    if (i >= 0 && i < t->n_rows) t->rows[i].used = true;
}

int64_t mt_labels_unused(const mt_label_table *t) {
    int64_t n = 0;
    for (int64_t i = 0; i < t->n_rows; i++) n += !t->rows[i].used;
    return n;
}
