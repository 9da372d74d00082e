/* Text packs (include/medtrain/textpack.h): chat templates that turn turns into ids and a loss
 * mask, the single-process HDF5 writer and reader, and the length-grouped batch sampler.
 *
 * Every template is a list of segments, each either one special id or a piece of text, each with
 * or without loss. Text segments are tokenized on their own (add_special = false) and the ids
 * concatenated, so the loss mask falls exactly on segment boundaries. SentencePiece-style
 * tokenizers (Llama-2, Mistral) put "▁" before every encode call's text: there a segment's one
 * leading space is dropped before encoding, as the "▁" already stands for it. */
#include "medtrain/textpack.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "h5internal.h"
#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/mem.h"
#include "medtrain/rng.h"

/* ---- chat templates ------------------------------------------------------------------------ */

static const char *const template_names[] = {"plain", "vicuna_v1", "llama-3"};

/* FastChat's vicuna_v1 system message (LLaVA's conv_vicuna_v1 uses the same text). */
static const char VICUNA_SYSTEM[] =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.";

mt_status mt_chat_template_parse(const char *name, mt_chat_template *out) {
    for (int i = 0; i < 3; i++)
        if (strcmp(name, template_names[i]) == 0) {
            *out = (mt_chat_template)i;
            return MT_OK;
        }
    if (strcmp(name, "llama3") == 0 || strcmp(name, "vicuna") == 0) {
        *out = name[0] == 'l' ? MT_CHAT_LLAMA3 : MT_CHAT_VICUNA_V1;
        return MT_OK;
    }
    return mt_fail(MT_ERR_ARG, "unknown chat template '%s' (known: plain, vicuna_v1, llama-3)",
                   name);
}

const char *mt_chat_template_name(mt_chat_template t) {
    return (unsigned)t < 3 ? template_names[t] : "?";
}

void mt_chat_sample_free(mt_chat_sample *s) {
    mt_token_ids_free(&s->ids);
    free(s->mask);
    memset(s, 0, sizeof *s);
}

typedef struct encoder {
    const mt_tokenizer *tok;
    bool sp_prefix; /* the tokenizer prepends "▁" to each encode call's text */
    mt_chat_sample *out;
    char *buf; /* scratch for joined text */
    size_t buf_cap;
} encoder;

static mt_status grow_mask(mt_chat_sample *s, size_t n) {
    if (n <= s->mask_cap) return MT_OK;
    size_t cap = s->mask_cap ? s->mask_cap * 2 : 256;
    while (cap < n) cap *= 2;
    uint8_t *m = realloc(s->mask, cap);
    if (!m) return mt_fail(MT_ERR_NOMEM, "out of memory for a loss mask of %zu tokens", n);
    s->mask = m;
    s->mask_cap = cap;
    return MT_OK;
}

static mt_status emit_id(encoder *e, int32_t id, bool loss) {
    mt_token_ids *ids = &e->out->ids;
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 256;
        int32_t *p = realloc(ids->ids, cap * sizeof *p);
        if (!p) return mt_fail(MT_ERR_NOMEM, "out of memory for %zu token ids", cap);
        ids->ids = p;
        ids->cap = cap;
    }
    MT_TRY(grow_mask(e->out, ids->n + 1));
    e->out->mask[ids->n] = loss;
    ids->ids[ids->n++] = id;
    return MT_OK;
}

/* The concatenation a + b as one text segment. */
static mt_status emit_text2(encoder *e, const char *a, size_t an, const char *b, size_t bn,
                            bool loss) {
    if (e->buf_cap < an + bn + 1) {
        char *p = realloc(e->buf, an + bn + 1);
        if (!p) return mt_fail(MT_ERR_NOMEM, "out of memory for a %zu-byte message", an + bn);
        e->buf = p;
        e->buf_cap = an + bn + 1;
    }
    memcpy(e->buf, a, an);
    if (bn) memcpy(e->buf + an, b, bn);
    const char *t = e->buf;
    size_t n = an + bn;
    if (e->sp_prefix && n > 0 && t[0] == ' ') t++, n--;
    if (n == 0) return MT_OK;
    size_t before = e->out->ids.n;
    MT_TRY(mt_tokenizer_encode(e->tok, t, n, false, &e->out->ids));
    MT_TRY(grow_mask(e->out, e->out->ids.n));
    memset(e->out->mask + before, loss, e->out->ids.n - before);
    return MT_OK;
}

static mt_status emit_text(encoder *e, const char *s, bool loss) {
    return emit_text2(e, s, strlen(s), "", 0, loss);
}

static int32_t need_token(const mt_tokenizer *tok, const char *name, mt_chat_template t,
                          mt_status *st) {
    int32_t id = mt_tokenizer_token_id(tok, name);
    if (id < 0 && *st == MT_OK)
        *st = mt_fail(MT_ERR_FORMAT, "template %s needs the token %s, which the tokenizer lacks",
                      mt_chat_template_name(t), name);
    return id;
}

static void trim(const mt_chat_turn *in, const char **s, size_t *n) {
    const char *p = in->text;
    size_t len = in->len;
    while (len && strchr(" \t\r\n", p[0])) p++, len--;
    while (len && strchr(" \t\r\n", p[len - 1])) len--;
    *s = p;
    *n = len;
}

/* Checks the turn order: [system] (user assistant)+. */
static mt_status check_turns(mt_chat_template t, const mt_chat_turn *turns, int n) {
    int first = n > 0 && turns[0].role == MT_ROLE_SYSTEM;
    bool any_assistant = false;
    for (int i = first; i < n; i++) any_assistant |= turns[i].role == MT_ROLE_ASSISTANT;
    if (!any_assistant) return mt_fail(MT_ERR_FORMAT, "the conversation has no assistant turn");
    for (int i = first; i < n; i++) {
        mt_chat_role want = (i - first) % 2 ? MT_ROLE_ASSISTANT : MT_ROLE_USER;
        if (turns[i].role != want)
            return mt_fail(MT_ERR_FORMAT,
                           "turn %d is %s, expected %s (turns must alternate user, "
                           "assistant after an optional system turn)",
                           i + 1,
                           turns[i].role == MT_ROLE_SYSTEM ? "system"
                           : turns[i].role == MT_ROLE_USER ? "user"
                                                           : "assistant",
                           want == MT_ROLE_USER ? "user" : "assistant");
    }
    if ((n - first) % 2)
        return mt_fail(MT_ERR_FORMAT,
                       "the conversation ends with a user turn (turn %d) that no "
                       "assistant turn answers",
                       n);
    if (t == MT_CHAT_PLAIN && (first || n != 2))
        return mt_fail(MT_ERR_FORMAT,
                       "template plain takes one user and one assistant turn, "
                       "found %d turns",
                       n);
    return MT_OK;
}

static mt_status encode_plain(encoder *e, const mt_chat_turn *turns) {
    const char *q, *a;
    size_t qn, an;
    trim(&turns[0], &q, &qn);
    trim(&turns[1], &a, &an);
    int32_t bos = mt_tokenizer_bos(e->tok), eos = mt_tokenizer_eos(e->tok);
    if (eos < 0)
        return mt_fail(MT_ERR_FORMAT, "template plain needs an EOS token, the tokenizer has none");
    if (bos >= 0) MT_TRY(emit_id(e, bos, false));
    MT_TRY(emit_text2(e, q, qn, "\n", 1, false));
    MT_TRY(emit_text2(e, a, an, "", 0, true));
    return emit_id(e, eos, true);
}

/* FastChat ADD_COLON_TWO: system + " " + "USER: " q " " "ASSISTANT: " a "</s>" "USER: " ... */
static mt_status encode_vicuna(encoder *e, const mt_chat_turn *turns, int n) {
    int32_t bos = mt_tokenizer_bos(e->tok), eos = mt_tokenizer_eos(e->tok);
    if (eos < 0)
        return mt_fail(MT_ERR_FORMAT,
                       "template vicuna_v1 needs an EOS token (</s>), the tokenizer has none");
    if (bos >= 0) MT_TRY(emit_id(e, bos, false));
    int i = 0;
    if (n && turns[0].role == MT_ROLE_SYSTEM) {
        const char *s;
        size_t sn;
        trim(&turns[0], &s, &sn);
        MT_TRY(emit_text2(e, s, sn, "", 0, false));
        i = 1;
    } else {
        MT_TRY(emit_text(e, VICUNA_SYSTEM, false));
    }
    for (bool first = true; i + 1 < n; i += 2, first = false) {
        const char *q, *a;
        size_t qn, an;
        trim(&turns[i], &q, &qn);
        trim(&turns[i + 1], &a, &an);
        const char *head = first ? " USER: " : "USER: ";
        size_t hn = strlen(head);
        /* head + q + " ASSISTANT:" as one segment (no loss) */
        char *joined = malloc(hn + qn + 12);
        if (!joined) return mt_fail(MT_ERR_NOMEM, "out of memory for a message");
        memcpy(joined, head, hn);
        memcpy(joined + hn, q, qn);
        memcpy(joined + hn + qn, " ASSISTANT:", 11);
        mt_status st = emit_text2(e, joined, hn + qn + 11, "", 0, false);
        free(joined);
        MT_TRY(st);
        MT_TRY(emit_text2(e, " ", 1, a, an, true));
        MT_TRY(emit_id(e, eos, true));
    }
    return MT_OK;
}

/* <|begin_of_text|> then per turn <|start_header_id|>ROLE<|end_header_id|>\n\nTEXT<|eot_id|>. */
static mt_status encode_llama3(encoder *e, const mt_chat_turn *turns, int n) {
    mt_status st = MT_OK;
    mt_chat_template t = MT_CHAT_LLAMA3;
    int32_t bot = need_token(e->tok, "<|begin_of_text|>", t, &st);
    int32_t sh = need_token(e->tok, "<|start_header_id|>", t, &st);
    int32_t eh = need_token(e->tok, "<|end_header_id|>", t, &st);
    int32_t eot = need_token(e->tok, "<|eot_id|>", t, &st);
    MT_TRY(st);
    MT_TRY(emit_id(e, bot, false));
    static const char *const role_names[] = {"system", "user", "assistant"};
    for (int i = 0; i < n; i++) {
        bool loss = turns[i].role == MT_ROLE_ASSISTANT;
        const char *s;
        size_t sn;
        trim(&turns[i], &s, &sn);
        MT_TRY(emit_id(e, sh, false));
        MT_TRY(emit_text(e, role_names[turns[i].role], false));
        MT_TRY(emit_id(e, eh, false));
        MT_TRY(emit_text(e, "\n\n", false));
        MT_TRY(emit_text2(e, s, sn, "", 0, loss));
        MT_TRY(emit_id(e, eot, loss));
    }
    return MT_OK;
}

/* Whether encode("a") starts with "▁": the tokenizer marks a word start on every call. */
static bool prepends_space(const mt_tokenizer *tok) {
    mt_token_ids ids = {0};
    bool yes = false;
    if (mt_tokenizer_encode(tok, "a", 1, false, &ids) == MT_OK && ids.n > 0) {
        const char *s = mt_tokenizer_token(tok, ids.ids[0], NULL);
        yes = s && strncmp(s, "\xe2\x96\x81", 3) == 0;
    }
    mt_token_ids_free(&ids);
    return yes;
}

mt_status mt_chat_encode(const mt_tokenizer *tok, mt_chat_template t, const mt_chat_turn *turns,
                         int n, mt_chat_sample *out) {
    MT_TRY(check_turns(t, turns, n));
    out->ids.n = 0;
    encoder e = {.tok = tok, .sp_prefix = prepends_space(tok), .out = out};
    mt_status st = t == MT_CHAT_PLAIN       ? encode_plain(&e, turns)
                   : t == MT_CHAT_VICUNA_V1 ? encode_vicuna(&e, turns, n)
                                            : encode_llama3(&e, turns, n);
    free(e.buf);
    return st;
}

/* ---- splits --------------------------------------------------------------------------------- */

mt_split mt_textpack_split_of(const char *id, size_t len, const int pct[3]) {
    uint8_t d[MT_SHA256_BYTES];
    char *buf = malloc(len + 6);
    if (!buf) return MT_SPLIT_TRAIN;
    memcpy(buf, "split:", 6);
    memcpy(buf + 6, id, len);
    mt_status st = mt_sha256(buf, len + 6, d);
    free(buf);
    if (st != MT_OK) return MT_SPLIT_TRAIN;
    uint64_t h = 0;
    for (int i = 0; i < 8; i++) h = h << 8 | d[i];
    int64_t r = (int64_t)(h % 10000);
    if (r < pct[0] * 100) return MT_SPLIT_TRAIN;
    if (r < (pct[0] + pct[1]) * 100) return MT_SPLIT_VAL;
    return MT_SPLIT_TEST;
}

/* ---- writing -------------------------------------------------------------------------------- */

/* A growable array of fixed-size elements. */
typedef struct vec {
    void *p;
    size_t n, cap, elem;
} vec;

static mt_status vec_push(vec *v, const void *x, size_t k) {
    if (v->n + k > v->cap) {
        size_t cap = v->cap ? v->cap : 1024;
        while (cap < v->n + k) cap *= 2;
        void *p = realloc(v->p, cap * v->elem);
        if (!p) return mt_fail(MT_ERR_NOMEM, "out of memory growing a text pack to %zu rows", cap);
        v->p = p;
        v->cap = cap;
    }
    if (k) memcpy((char *)v->p + v->n * v->elem, x, k * v->elem);
    v->n += k;
    return MT_OK;
}

struct mt_textpack_writer {
    char path[4096], tmp[4108];
    mt_textpack_spec spec;
    vec tokens, offsets, mask, split, image_index, image_names; /* image_names: char* */
    int64_t *name_table; /* open addressing over image_names, -1 empty */
    size_t table_cap;
    bool any_image;
};

mt_status mt_textpack_writer_create(const char *path, const mt_textpack_spec *spec,
                                    mt_textpack_writer **out) {
    mt_textpack_writer *w = calloc(1, sizeof *w);
    if (!w) return mt_fail(MT_ERR_NOMEM, "out of memory for a text pack writer");
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
    w->spec = *spec;
    w->tokens.elem = sizeof(int32_t);
    w->offsets.elem = w->image_index.elem = sizeof(int64_t);
    w->mask.elem = w->split.elem = 1;
    w->image_names.elem = sizeof(char *);
    int64_t zero = 0;
    mt_status st = vec_push(&w->offsets, &zero, 1);
    if (st != MT_OK) {
        free(w);
        return st;
    }
    *out = w;
    return MT_OK;
}

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* The index of image name s in w->image_names, adding it when new. */
static mt_status image_id(mt_textpack_writer *w, const char *s, int64_t *out) {
    if (2 * (w->image_names.n + 1) > w->table_cap) {
        size_t cap = w->table_cap ? w->table_cap * 2 : 1024;
        int64_t *t = malloc(cap * sizeof *t);
        if (!t) return mt_fail(MT_ERR_NOMEM, "out of memory for image names");
        for (size_t i = 0; i < cap; i++) t[i] = -1;
        char **names = w->image_names.p;
        for (size_t i = 0; i < w->image_names.n; i++) {
            size_t h = str_hash(names[i]) & (cap - 1);
            while (t[h] >= 0) h = (h + 1) & (cap - 1);
            t[h] = (int64_t)i;
        }
        free(w->name_table);
        w->name_table = t;
        w->table_cap = cap;
    }
    char **names = w->image_names.p;
    size_t h = str_hash(s) & (w->table_cap - 1);
    for (; w->name_table[h] >= 0; h = (h + 1) & (w->table_cap - 1))
        if (strcmp(names[w->name_table[h]], s) == 0) {
            *out = w->name_table[h];
            return MT_OK;
        }
    char *copy = strdup(s);
    if (!copy) return mt_fail(MT_ERR_NOMEM, "out of memory for an image name");
    mt_status st = vec_push(&w->image_names, &copy, 1);
    if (st != MT_OK) {
        free(copy);
        return st;
    }
    *out = w->name_table[h] = (int64_t)w->image_names.n - 1;
    return MT_OK;
}

mt_status mt_textpack_writer_add(mt_textpack_writer *w, const int32_t *ids, const uint8_t *mask,
                                 int64_t n, mt_split split, const char *image) {
    int64_t img = -1;
    if (image) {
        MT_TRY(image_id(w, image, &img));
        w->any_image = true;
    }
    uint8_t s = (uint8_t)split;
    MT_TRY(vec_push(&w->tokens, ids, (size_t)n));
    MT_TRY(vec_push(&w->mask, mask, (size_t)n));
    int64_t end = (int64_t)w->tokens.n;
    MT_TRY(vec_push(&w->offsets, &end, 1));
    MT_TRY(vec_push(&w->split, &s, 1));
    return vec_push(&w->image_index, &img, 1);
}

/* A 1-D dataset of n values, chunked (HDF5 needs chunks for nothing here, but h5py and readers
 * of one sample benefit from them); an empty one is written contiguous. */
static mt_status write_1d(hid_t loc, const char *name, hid_t type, const void *data, size_t n,
                          const char *path) {
    hsize_t dims = n;
    hid_t space = H5Screate_simple(1, &dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk = n < 65536 ? (n ? n : 1) : 65536;
    if (n) H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t e = d < 0 ? -1 : n ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (e < 0) {
        char what[128];
        snprintf(what, sizeof what, "write %s", name);
        return mt_h5_fail(path, what);
    }
    return MT_OK;
}

static mt_status write_attr(hid_t obj, const char *name, const char *s, int64_t v,
                            const char *path) {
    hid_t space = H5Screate(H5S_SCALAR), t;
    if (s) {
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, strlen(s) + 1);
        H5Tset_cset(t, H5T_CSET_UTF8);
    } else {
        t = H5Tcopy(H5T_NATIVE_INT64);
    }
    hid_t a = H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Awrite(a, t, s ? (const void *)s : (const void *)&v);
    if (a >= 0) H5Aclose(a);
    H5Tclose(t);
    H5Sclose(space);
    return e < 0 ? mt_h5_fail(path, "write an attribute") : MT_OK;
}

static mt_status write_contents(mt_textpack_writer *w, hid_t f, int64_t truncated,
                                const char *input_digest) {
    const char *p = w->tmp;
    size_t n = w->split.n;
    MT_TRY(write_1d(f, "tokens", H5T_NATIVE_INT32, w->tokens.p, w->tokens.n, p));
    MT_TRY(write_1d(f, "offsets", H5T_NATIVE_INT64, w->offsets.p, w->offsets.n, p));
    MT_TRY(write_1d(f, "loss_mask", H5T_NATIVE_UINT8, w->mask.p, w->mask.n, p));
    hid_t meta = H5Gcreate2(f, "meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (meta < 0) return mt_h5_fail(p, "create /meta");
    mt_status st = write_1d(meta, "split", H5T_NATIVE_UINT8, w->split.p, n, p);
    H5Gclose(meta);
    MT_TRY(st);
    hid_t g = H5Gcreate2(f, "splits", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return mt_h5_fail(p, "create /splits");
    int64_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) st = mt_fail(MT_ERR_NOMEM, "out of memory for split lists");
    for (int s = 0; st == MT_OK && s < MT_SPLIT_COUNT; s++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (((uint8_t *)w->split.p)[i] == s) idx[k++] = (int64_t)i;
        st = write_1d(g, mt_split_name((mt_split)s), H5T_NATIVE_INT64, idx, k, p);
    }
    free(idx);
    H5Gclose(g);
    MT_TRY(st);
    if (w->any_image) {
        MT_TRY(write_1d(f, "image_index", H5T_NATIVE_INT64, w->image_index.p, n, p));
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
        st = write_1d(f, "image_names", t, w->image_names.p, w->image_names.n, p);
        H5Tclose(t);
        MT_TRY(st);
    }
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const mt_textpack_spec *s = &w->spec;
    MT_TRY(write_attr(f, "format", MT_TEXTPACK_FORMAT, 0, p));
    MT_TRY(write_attr(f, "version", NULL, MT_TEXTPACK_VERSION, p));
    MT_TRY(write_attr(f, "creator", s->creator ? s->creator : "medtrain", 0, p));
    MT_TRY(write_attr(f, "created", created, 0, p));
    MT_TRY(write_attr(f, "input_digest", input_digest ? input_digest : "", 0, p));
    MT_TRY(write_attr(f, "tokenizer_digest", s->tokenizer_digest ? s->tokenizer_digest : "", 0, p));
    MT_TRY(write_attr(f, "template", s->template_name ? s->template_name : "", 0, p));
    MT_TRY(write_attr(f, "max_len", NULL, s->max_len, p));
    return write_attr(f, "truncated", NULL, truncated, p);
}

static void writer_free(mt_textpack_writer *w) {
    char **names = w->image_names.p;
    for (size_t i = 0; i < w->image_names.n; i++) free(names[i]);
    free(w->tokens.p), free(w->offsets.p), free(w->mask.p), free(w->split.p);
    free(w->image_index.p), free(w->image_names.p), free(w->name_table);
    free(w);
}

mt_status mt_textpack_writer_finish(mt_textpack_writer *w, bool ok, int64_t truncated,
                                    const char *input_digest) {
    if (!ok) {
        writer_free(w);
        return MT_OK;
    }
    mt_h5_quiet();
    mt_status st = MT_OK;
    hid_t f = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) st = mt_h5_fail(w->tmp, "create the text pack");
    if (st == MT_OK) st = write_contents(w, f, truncated, input_digest);
    if (f >= 0 && H5Fclose(f) < 0 && st == MT_OK) st = mt_h5_fail(w->tmp, "close the text pack");
    /* fsync the file, rename it into place, fsync the directory */
    if (st == MT_OK) {
        FILE *fp = fopen(w->tmp, "rb+");
        if (!fp || fflush(fp) != 0 || fsync(fileno(fp)) != 0)
            st = mt_fail(MT_ERR_IO, "%s: cannot sync the text pack to disk", w->tmp);
        if (fp) fclose(fp);
    }
    if (st == MT_OK && rename(w->tmp, w->path) != 0)
        st = mt_fail(MT_ERR_IO, "%s: cannot rename %s into place", w->path, w->tmp);
    if (st == MT_OK) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", w->path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        st = mt_fsync_dir(slash ? (dir[0] ? dir : "/") : ".");
    }
    if (st != MT_OK) unlink(w->tmp);
    writer_free(w);
    return st;
}

/* ---- reading -------------------------------------------------------------------------------- */

struct mt_textpack {
    char path[4096];
    hid_t file, tokens, mask;
    mt_textpack_info info;
    int64_t *offsets; /* [n+1] */
    int64_t *split_idx[MT_SPLIT_COUNT];
    int64_t *image_index; /* [n] or NULL */
    char **image_names;
    int64_t n_image_names;
};

static mt_status read_attr_str(hid_t f, const char *name, char *out, size_t n, const char *path) {
    if (H5Aexists(f, name) <= 0)
        return mt_fail(MT_ERR_FORMAT, "%s: not a medtrain text pack (attribute '%s' is missing)",
                       path, name);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT), t = a < 0 ? -1 : H5Aget_type(a);
    mt_status st = MT_OK;
    if (t < 0 || H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) > 0) {
        st = mt_fail(MT_ERR_FORMAT, "%s: attribute '%s' is not a fixed-length string", path, name);
    } else {
        size_t sz = H5Tget_size(t);
        char *buf = calloc(sz + 1, 1);
        if (!buf || H5Aread(a, t, buf) < 0)
            st = buf ? mt_h5_fail(path, "read an attribute") : mt_fail(MT_ERR_NOMEM, "attribute");
        else
            snprintf(out, n, "%s", buf);
        free(buf);
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return st;
}

static mt_status read_attr_i64(hid_t f, const char *name, int64_t *out, const char *path) {
    if (H5Aexists(f, name) <= 0)
        return mt_fail(MT_ERR_FORMAT, "%s: not a medtrain text pack (attribute '%s' is missing)",
                       path, name);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Aread(a, H5T_NATIVE_INT64, out);
    if (a >= 0) H5Aclose(a);
    return e < 0 ? mt_h5_fail(path, "read an integer attribute") : MT_OK;
}

/* A whole 1-D dataset into a new buffer of elem-byte values; *n its length. */
static mt_status read_1d(hid_t loc, const char *name, hid_t type, size_t elem, void **out,
                         int64_t *n, const char *path) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return mt_fail(MT_ERR_FORMAT, "%s: dataset %s is missing", path, name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT), space = d < 0 ? -1 : H5Dget_space(d);
    hsize_t dims = 0;
    mt_status st = MT_OK;
    if (space < 0 || H5Sget_simple_extent_ndims(space) != 1) {
        st = mt_fail(MT_ERR_FORMAT, "%s: dataset %s is not one-dimensional", path, name);
    } else {
        H5Sget_simple_extent_dims(space, &dims, NULL);
        *out = malloc((dims ? dims : 1) * elem);
        if (!*out)
            st = mt_fail(MT_ERR_NOMEM, "out of memory reading %s", name);
        else if (dims && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
            st = mt_h5_fail(path, "read a dataset");
        if (st != MT_OK) free(*out), *out = NULL;
    }
    *n = (int64_t)dims;
    if (space >= 0) H5Sclose(space);
    if (d >= 0) H5Dclose(d);
    return st;
}

static mt_status read_image_names(mt_textpack *p) {
    hid_t d = H5Dopen2(p->file, "image_names", H5P_DEFAULT);
    if (d < 0) return mt_h5_fail(p->path, "open /image_names");
    hid_t space = H5Dget_space(d), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, NULL);
    mt_status st = MT_OK;
    char **raw = calloc(n ? n : 1, sizeof *raw);
    p->image_names = calloc(n ? n : 1, sizeof *p->image_names);
    if (!raw || !p->image_names)
        st = mt_fail(MT_ERR_NOMEM, "out of memory for image names");
    else if (n && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)
        st = mt_h5_fail(p->path, "read /image_names");
    for (hsize_t i = 0; st == MT_OK && i < n; i++)
        if (!(p->image_names[i] = strdup(raw[i] ? raw[i] : "")))
            st = mt_fail(MT_ERR_NOMEM, "out of memory for image names");
    if (raw && n) H5Dvlen_reclaim(t, space, H5P_DEFAULT, raw);
    p->n_image_names = (int64_t)n;
    free(raw);
    H5Tclose(t);
    H5Sclose(space);
    H5Dclose(d);
    return st;
}

static mt_status open_contents(mt_textpack *p) {
    mt_textpack_info *in = &p->info;
    const char *path = p->path;
    char format[64];
    MT_TRY(read_attr_str(p->file, "format", format, sizeof format, path));
    if (strcmp(format, MT_TEXTPACK_FORMAT) != 0)
        return mt_fail(MT_ERR_FORMAT, "%s: format attribute is '%s', expected '%s'", path, format,
                       MT_TEXTPACK_FORMAT);
    int64_t v;
    MT_TRY(read_attr_i64(p->file, "version", &v, path));
    if (v != MT_TEXTPACK_VERSION)
        return mt_fail(MT_ERR_FORMAT, "%s: text pack version %lld, this medtrain reads version %d",
                       path, (long long)v, MT_TEXTPACK_VERSION);
    in->version = (int)v;
    MT_TRY(read_attr_str(p->file, "creator", in->creator, sizeof in->creator, path));
    MT_TRY(read_attr_str(p->file, "created", in->created, sizeof in->created, path));
    MT_TRY(read_attr_str(p->file, "template", in->template_name, sizeof in->template_name, path));
    MT_TRY(read_attr_str(p->file, "tokenizer_digest", in->tokenizer_digest,
                         sizeof in->tokenizer_digest, path));
    MT_TRY(read_attr_str(p->file, "input_digest", in->input_digest, sizeof in->input_digest, path));
    MT_TRY(read_attr_i64(p->file, "max_len", &in->max_len, path));
    MT_TRY(read_attr_i64(p->file, "truncated", &in->truncated, path));
    int64_t n_off;
    MT_TRY(read_1d(p->file, "offsets", H5T_NATIVE_INT64, 8, (void **)&p->offsets, &n_off, path));
    if (n_off < 1 || p->offsets[0] != 0)
        return mt_fail(MT_ERR_FORMAT, "%s: /offsets must start with 0", path);
    in->n = n_off - 1;
    for (int64_t i = 0; i < in->n; i++)
        if (p->offsets[i + 1] < p->offsets[i])
            return mt_fail(MT_ERR_FORMAT, "%s: /offsets decreases at %lld", path, (long long)i);
    in->n_tokens = p->offsets[in->n];
    hsize_t dt = 0, dm = 0;
    p->tokens = H5Dopen2(p->file, "tokens", H5P_DEFAULT);
    p->mask = H5Dopen2(p->file, "loss_mask", H5P_DEFAULT);
    if (p->tokens < 0 || p->mask < 0) return mt_h5_fail(path, "open /tokens and /loss_mask");
    hid_t s1 = H5Dget_space(p->tokens), s2 = H5Dget_space(p->mask);
    H5Sget_simple_extent_dims(s1, &dt, NULL);
    H5Sget_simple_extent_dims(s2, &dm, NULL);
    H5Sclose(s1), H5Sclose(s2);
    if ((int64_t)dt != in->n_tokens || dm != dt)
        return mt_fail(MT_ERR_FORMAT,
                       "%s: /tokens has %llu ids, /loss_mask %llu, /offsets ends "
                       "at %lld: they must agree",
                       path, (unsigned long long)dt, (unsigned long long)dm,
                       (long long)in->n_tokens);
    hid_t g = H5Gopen2(p->file, "splits", H5P_DEFAULT);
    if (g < 0) return mt_h5_fail(path, "open /splits");
    mt_status st = MT_OK;
    for (int s = 0; st == MT_OK && s < MT_SPLIT_COUNT; s++) {
        st = read_1d(g, mt_split_name((mt_split)s), H5T_NATIVE_INT64, 8, (void **)&p->split_idx[s],
                     &in->split_n[s], path);
        for (int64_t i = 0; st == MT_OK && i < in->split_n[s]; i++)
            if (p->split_idx[s][i] < 0 || p->split_idx[s][i] >= in->n)
                st = mt_fail(MT_ERR_FORMAT, "%s: /splits/%s holds %lld, outside [0, %lld)", path,
                             mt_split_name((mt_split)s), (long long)p->split_idx[s][i],
                             (long long)in->n);
    }
    H5Gclose(g);
    MT_TRY(st);
    if (H5Lexists(p->file, "image_index", H5P_DEFAULT) > 0) {
        int64_t k;
        MT_TRY(read_1d(p->file, "image_index", H5T_NATIVE_INT64, 8, (void **)&p->image_index, &k,
                       path));
        MT_TRY(read_image_names(p));
        if (k != in->n)
            return mt_fail(MT_ERR_FORMAT,
                           "%s: /image_index has %lld rows for %lld "
                           "samples",
                           path, (long long)k, (long long)in->n);
        for (int64_t i = 0; i < k; i++)
            if (p->image_index[i] < -1 || p->image_index[i] >= p->n_image_names)
                return mt_fail(MT_ERR_FORMAT, "%s: /image_index[%lld] is out of range", path,
                               (long long)i);
        in->has_images = true;
    }
    return MT_OK;
}

mt_status mt_textpack_open(const char *path, mt_textpack **out) {
    mt_h5_quiet();
    mt_textpack *p = calloc(1, sizeof *p);
    if (!p) return mt_fail(MT_ERR_NOMEM, "out of memory opening a text pack");
    snprintf(p->path, sizeof p->path, "%s", path);
    p->tokens = p->mask = -1;
    p->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    mt_status st = p->file < 0 ? mt_h5_fail(path, "open the text pack") : open_contents(p);
    if (st != MT_OK) {
        mt_textpack_close(p);
        return st;
    }
    *out = p;
    return MT_OK;
}

void mt_textpack_close(mt_textpack *p) {
    if (!p) return;
    if (p->tokens >= 0) H5Dclose(p->tokens);
    if (p->mask >= 0) H5Dclose(p->mask);
    if (p->file >= 0) H5Fclose(p->file);
    free(p->offsets);
    for (int s = 0; s < MT_SPLIT_COUNT; s++) free(p->split_idx[s]);
    free(p->image_index);
    for (int64_t i = 0; p->image_names && i < p->n_image_names; i++) free(p->image_names[i]);
    free(p->image_names);
    free(p);
}

const mt_textpack_info *mt_textpack_get_info(const mt_textpack *p) {
    return &p->info;
}

const int64_t *mt_textpack_split(const mt_textpack *p, mt_split s, int64_t *n) {
    *n = p->info.split_n[s];
    return p->split_idx[s];
}

int64_t mt_textpack_length(const mt_textpack *p, int64_t i) {
    return i < 0 || i >= p->info.n ? 0 : p->offsets[i + 1] - p->offsets[i];
}

const char *mt_textpack_image(const mt_textpack *p, int64_t i) {
    if (!p->image_index || i < 0 || i >= p->info.n || p->image_index[i] < 0) return NULL;
    return p->image_names[p->image_index[i]];
}

static mt_status read_range(hid_t d, hid_t type, hsize_t start, hsize_t count, void *out,
                            const char *path) {
    if (count == 0) return MT_OK;
    hid_t space = H5Dget_space(d), mem = H5Screate_simple(1, &count, NULL);
    herr_t e = H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, NULL, &count, NULL);
    if (e >= 0) e = H5Dread(d, type, mem, space, H5P_DEFAULT, out);
    H5Sclose(mem);
    H5Sclose(space);
    return e < 0 ? mt_h5_fail(path, "read a sample") : MT_OK;
}

mt_status mt_textpack_read(mt_textpack *p, int64_t i, int32_t *tokens, uint8_t *mask) {
    if (i < 0 || i >= p->info.n)
        return mt_fail(MT_ERR_ARG, "%s: sample %lld outside [0, %lld)", p->path, (long long)i,
                       (long long)p->info.n);
    hsize_t start = (hsize_t)p->offsets[i], count = (hsize_t)(p->offsets[i + 1] - p->offsets[i]);
    MT_TRY(read_range(p->tokens, H5T_NATIVE_INT32, start, count, tokens, p->path));
    return mask ? read_range(p->mask, H5T_NATIVE_UINT8, start, count, mask, p->path) : MT_OK;
}

/* ---- length-grouped batches ----------------------------------------------------------------- */

typedef struct len_idx {
    int64_t len, idx;
} len_idx;

static int by_length(const void *a, const void *b) {
    const len_idx *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorts idx[0..m) by (length, index); scratch holds m pairs. */
static void sort_by_length(int64_t *idx, int64_t m, const int64_t *lengths, len_idx *scratch) {
    for (int64_t i = 0; i < m; i++) scratch[i] = (len_idx){lengths[idx[i]], idx[i]};
    qsort(scratch, (size_t)m, sizeof *scratch, by_length);
    for (int64_t i = 0; i < m; i++) idx[i] = scratch[i].idx;
}

mt_status mt_length_batches_make(const int64_t *lengths, const int64_t *idx, int64_t n, int batch,
                                 int bucket_batches, uint64_t seed, uint64_t epoch,
                                 mt_length_batches *out) {
    memset(out, 0, sizeof *out);
    if (batch < 1 || bucket_batches < 1)
        return mt_fail(MT_ERR_ARG, "length batches: batch %d and bucket_batches %d must be >= 1",
                       batch, bucket_batches);
    int64_t nb = 0, bucket = (int64_t)batch * bucket_batches;
    for (int64_t b = 0; b < n; b += bucket) {
        int64_t k = n - b < bucket ? n - b : bucket;
        nb += (k + batch - 1) / batch;
    }
    int64_t *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    int64_t *tmp = malloc((size_t)(n ? n : 1) * sizeof *tmp);
    int64_t *starts = malloc((size_t)(nb + 1) * sizeof *starts);
    int64_t *perm = malloc((size_t)(nb ? nb : 1) * sizeof *perm);
    int64_t *bstart = malloc((size_t)(nb ? nb : 1) * sizeof *bstart);
    len_idx *pairs = malloc((size_t)(bucket < n ? bucket : (n ? n : 1)) * sizeof *pairs);
    if (!order || !tmp || !starts || !perm || !bstart || !pairs) {
        free(order), free(tmp), free(starts), free(perm), free(bstart), free(pairs);
        return mt_fail(MT_ERR_NOMEM, "out of memory for %lld length-grouped samples", (long long)n);
    }
    memcpy(tmp, idx, (size_t)n * sizeof *tmp);
    mt_rng r;
    mt_rng_init(&r, seed, 0x7e47, epoch);
    mt_rng_shuffle_i64(&r, tmp, n);
    int64_t k = 0;
    for (int64_t b = 0; b < n; b += bucket) {
        int64_t m = n - b < bucket ? n - b : bucket;
        sort_by_length(tmp + b, m, lengths, pairs);
        for (int64_t j = 0; j < m; j += batch) bstart[k++] = b + j;
    }
    for (int64_t j = 0; j < nb; j++) perm[j] = j;
    mt_rng_shuffle_i64(&r, perm, nb);
    int64_t pos = 0;
    for (int64_t j = 0; j < nb; j++) {
        int64_t s = bstart[perm[j]];
        int64_t bucket_end = (s / bucket) * bucket + bucket;
        int64_t e = s + batch;
        if (e > bucket_end) e = bucket_end;
        if (e > n) e = n;
        starts[j] = pos;
        memcpy(order + pos, tmp + s, (size_t)(e - s) * sizeof *order);
        pos += e - s;
    }
    starts[nb] = pos;
    free(tmp), free(perm), free(bstart), free(pairs);
    out->n_batches = nb;
    out->order = order;
    out->starts = starts;
    return MT_OK;
}

double mt_length_batches_padding(const mt_length_batches *b, const int64_t *lengths) {
    double slots = 0, used = 0;
    for (int64_t j = 0; j < b->n_batches; j++) {
        int64_t longest = 0;
        for (int64_t k = b->starts[j]; k < b->starts[j + 1]; k++) {
            int64_t l = lengths[b->order[k]];
            used += (double)l;
            if (l > longest) longest = l;
        }
        slots += (double)longest * (double)(b->starts[j + 1] - b->starts[j]);
    }
    return slots > 0 ? (slots - used) / slots : 0.0;
}

void mt_length_batches_free(mt_length_batches *b) {
    free(b->order);
    free(b->starts);
    memset(b, 0, sizeof *b);
}
