/* Hugging Face tokenizer.json BPE tokenizers: the public API and the encode pipeline of
 * `tokenizers`' Tokenizer::encode, step for step:
 *
 *   1. added tokens that are not normalized are cut out of the raw text (leftmost-longest, with
 *      single_word / lstrip / rstrip);
 *   2. each remaining piece is normalized, and normalized added tokens are cut out of it;
 *   3. each pre-tokenizer maps the text pieces to smaller pieces (Split, ByteLevel, Metaspace);
 *   4. the BPE model turns every text piece into ids; added tokens keep their ids;
 *   5. with add_special, the post-processor's tokens go around the whole.
 *
 * The loaded tables are never written after loading; every call keeps its scratch in a local
 * context, so calls on one tokenizer may run on many threads. */
#include "medtrain/tokenizer.h"

#include <string.h>

#include "medtrain/fs.h"
#include "medtrain/mem.h"
#include "tokenizer_internal.h"

/* ---- added tokens ---------------------------------------------------------------------------- */

/* The longest added token of the set (0: raw, 1: normalized) that starts at s[i]; -1 if none. */
static int32_t added_at(const mt_tokenizer *tok, int set, const char *s, size_t n, size_t i) {
    const uint32_t *off = tok->match_off[set];
    unsigned b = (unsigned char)s[i];
    for (uint32_t k = off[b]; k < off[b + 1]; k++) {
        const tk_added *a = &tok->added[tok->match_idx[set][k]];
        if (a->pat_len <= n - i && !memcmp(s + i, a->pattern, a->pat_len))
            return tok->match_idx[set][k];
    }
    return -1;
}

/* A single_word match must not touch a word character (regex \w) on either side. */
static bool single_word_ok(const char *s, size_t n, size_t start, size_t stop) {
    const unsigned char *u = (const unsigned char *)s;
    uint32_t cp;
    if (start > 0) {
        size_t j = start - 1;
        while (j > 0 && (u[j] & 0xC0) == 0x80) j--;
        tk_utf8_next(u, j, &cp);
        if (tk_uc_is_word(cp)) return false;
    }
    if (stop < n) {
        tk_utf8_next(u, stop, &cp);
        if (tk_uc_is_word(cp)) return false;
    }
    return true;
}

/* Start of the whitespace run that ends at s[i] (regex \s*$ on s[..i]), but not before lo. */
static size_t space_run_before(const char *s, size_t i, size_t lo) {
    while (i > lo) {
        size_t j = i - 1;
        while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
        uint32_t cp;
        tk_utf8_next((const unsigned char *)s, j, &cp);
        if (!tk_uc_is_space(cp)) break;
        i = j;
    }
    return i;
}

static size_t space_run_after(const char *s, size_t n, size_t i) {
    while (i < n) {
        uint32_t cp;
        int len = tk_utf8_next((const unsigned char *)s, i, &cp);
        if (!tk_uc_is_space(cp)) break;
        i += (size_t)len;
    }
    return i;
}

/* AddedVocabulary::find_matches + split_with_indices: pieces of s, added tokens as ids; lstrip /
 * rstrip take the whitespace beside a token into it. As in `tokenizers`, the search goes on from
 * the end of the match itself (even a rejected one), not from the end of what rstrip took: a
 * whitespace token with rstrip matches again inside the run it took, and gives its id again (unless
 * lstrip then leaves it empty: `tokenizers` drops empty splits, tokens or not). */
static mt_status split_added(const mt_tokenizer *tok, int set, const char *s, size_t n, size_t z,
                             tk_plist *out) {
    if (tok->match_off[set][256] == 0) return tk_plist_text(out, s, n, z);
    size_t done = 0; /* s[..done) is in out */
    for (size_t i = 0; i < n;) {
        int32_t k = added_at(tok, set, s, n, i);
        if (k < 0) {
            i++;
            continue;
        }
        const tk_added *a = &tok->added[k];
        size_t start = i, stop = i + a->pat_len;
        i = stop;
        if (a->single_word && !single_word_ok(s, n, start, stop)) continue;
        if (a->lstrip) { /* back over the whitespace before it, not into what is already out */
            size_t ls = space_run_before(s, start, done < start ? done : start);
            start = ls > done ? ls : done;
        }
        if (a->rstrip) stop = space_run_after(s, n, stop);
        if (done < start)
            MT_TRY(tk_plist_text(out, s + done, start - done, tk_sub_z(z, done, start)));
        if (start < stop) MT_TRY(tk_plist_id(out, a->id)); /* an emptied match is dropped */
        done = stop;
    }
    return done < n ? tk_plist_text(out, s + done, n - done, tk_sub_z(z, done, n)) : MT_OK;
}

/* ---- pre-tokenizers -------------------------------------------------------------------------- */

typedef struct enc {
    tk_plist a, b;     /* pieces in and out of a step */
    tk_spans sp;       /* split spans */
    tk_bytes t1, t2;   /* piece text being rewritten */
    tk_bpe_scratch bs; /* BPE symbols and heap */
} enc;

static void enc_free(enc *e) {
    tk_plist_free(&e->a), tk_plist_free(&e->b);
    mt_free(e->sp.v);
    tk_bytes_free(&e->t1), tk_bytes_free(&e->t2);
    tk_bpe_scratch_free(&e->bs);
}

/* Bytes -> the byte-level alphabet's characters. */
static mt_status bytelevel_map(const tk_bytemap *m, const char *s, size_t n, tk_bytes *out) {
    out->n = 0;
    MT_TRY(tk_bytes_reserve(out, 2 * n));
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        memcpy(out->p + out->n, m->utf8[b], m->len[b]);
        out->n += m->len[b];
    }
    return MT_OK;
}

/* Length of the byte-level image of s[0..k). */
static size_t mapped_len(const tk_bytemap *m, const char *s, size_t k) {
    size_t len = 0;
    for (size_t i = 0; i < k; i++) len += m->len[(unsigned char)s[i]];
    return len;
}

/* ByteLevel: a leading space when asked (and none is there), the GPT-2 split when use_regex, then
 * every byte as its alphabet character. */
static mt_status pre_bytelevel(const mt_tokenizer *tok, const tk_pretok *t, const char *s, size_t n,
                               size_t z, enc *e, tk_plist *out) {
    if (t->add_prefix_space && s[0] != ' ') {
        e->t1.n = 0;
        MT_TRY(tk_bytes_add(&e->t1, " ", 1));
        MT_TRY(tk_bytes_add(&e->t1, s, n));
        s = e->t1.p, n = e->t1.n;
        z += z > 0;
    }
    for (size_t i = 0; i < n;) {
        size_t end = t->use_regex ? tk_regex_next(TK_RE_GPT2, (const unsigned char *)s, n, i) : n;
        size_t zi = tk_sub_z(z, i, end);
        MT_TRY(bytelevel_map(&tok->bytemap, s + i, end - i, &e->t2));
        MT_TRY(tk_plist_text(out, e->t2.p, e->t2.n, mapped_len(&tok->bytemap, s + i, zi)));
        i = end;
    }
    return MT_OK;
}

/* Metaspace: ' ' -> replacement, the replacement prepended per prepend_scheme ("first": only to
 * the piece at the start of the text), then, when split, a piece starting at each replacement. */
static mt_status pre_metaspace(const tk_pretok *t, const char *s, size_t n, size_t z, enc *e,
                               tk_plist *out) {
    size_t rn = strlen(t->replacement), zin = z;
    tk_bytes *w = &e->t1;
    w->n = 0;
    for (size_t i = 0; i < zin; i++) z += s[i] == ' ' ? rn - 1 : 0; /* ' ' keeps its alignment */
    bool starts = n >= 1 && s[0] == ' '; /* the text will start with the replacement */
    if (!starts && n >= rn && !memcmp(s, t->replacement, rn)) starts = true;
    if (!starts && (t->prepend == TK_PREPEND_ALWAYS || (t->prepend == TK_PREPEND_FIRST && z > 0))) {
        MT_TRY(tk_bytes_add(w, t->replacement, rn));
        if (z) z += rn;
    }
    for (size_t i = 0; i < n;) {
        const char *sp = memchr(s + i, ' ', n - i);
        size_t at = sp ? (size_t)(sp - s) : n;
        MT_TRY(tk_bytes_add(w, s + i, at - i));
        if (!sp) break;
        MT_TRY(tk_bytes_add(w, t->replacement, rn));
        i = at + 1;
    }
    if (!t->split) return tk_plist_text(out, w->p, w->n, z);
    MT_TRY(tk_spans_literal(&e->sp, t->replacement, rn, w->p, w->n));
    return tk_split_emit(out, w->p, w->n, &e->sp, TK_SPLIT_MERGED_NEXT, false, z);
}

static mt_status pre_piece(const mt_tokenizer *tok, const tk_pretok *t, const char *s, size_t n,
                           size_t z, enc *e, tk_plist *out) {
    switch (t->kind) {
    case TK_PRE_SPLIT_REGEX:
        MT_TRY(tk_spans_regex(&e->sp, t->regex, s, n));
        return tk_split_emit(out, s, n, &e->sp, t->behavior, t->invert, z);
    case TK_PRE_SPLIT_LITERAL:
        MT_TRY(tk_spans_literal(&e->sp, t->literal, strlen(t->literal), s, n));
        return tk_split_emit(out, s, n, &e->sp, t->behavior, t->invert, z);
    case TK_PRE_BYTELEVEL:
        return pre_bytelevel(tok, t, s, n, z, e, out);
    case TK_PRE_METASPACE:
        return pre_metaspace(t, s, n, z, e, out);
    }
    return mt_fail(MT_ERR_INTERNAL, "tokenizer: unknown pre-tokenizer step %d", (int)t->kind);
}

/* ---- the pipeline ---------------------------------------------------------------------------- */

/* Steps 1 and 2: raw text -> e->b (added tokens as ids, normalized text pieces). */
static mt_status extract_and_normalize(const mt_tokenizer *tok, const char *text, size_t len,
                                       enc *e) {
    tk_plist_clear(&e->a), tk_plist_clear(&e->b);
    MT_TRY(split_added(tok, 0, text, len, len ? (size_t)tk_utf8_len((unsigned char)text[0]) : 0,
                       &e->a));
    for (size_t k = 0; k < e->a.n; k++) {
        tk_piece p = e->a.v[k];
        if (p.id >= 0) {
            MT_TRY(tk_plist_id(&e->b, p.id));
            continue;
        }
        size_t z = p.z;
        MT_TRY(tk_normalize(tok, e->a.text.p + p.off, p.len, &e->t1, &e->t2, &z));
        MT_TRY(split_added(tok, 1, e->t1.p, e->t1.n, z, &e->b));
    }
    return MT_OK;
}

static mt_status encode_run(const mt_tokenizer *tok, const char *text, size_t len, bool add_special,
                            enc *e, mt_token_ids *out) {
    MT_TRY(extract_and_normalize(tok, text, len, e));
    tk_plist *in = &e->b, *next = &e->a;
    for (size_t s = 0; s < tok->n_pre; s++) {
        tk_plist_clear(next);
        for (size_t k = 0; k < in->n; k++) {
            tk_piece p = in->v[k];
            if (p.id >= 0)
                MT_TRY(tk_plist_id(next, p.id));
            else
                MT_TRY(pre_piece(tok, &tok->pre[s], in->text.p + p.off, p.len, p.z, e, next));
        }
        tk_plist *t = in;
        in = next, next = t;
    }
    if (add_special)
        for (size_t k = 0; k < tok->n_tpl_pre; k++) MT_TRY(tk_ids_push(out, tok->tpl_pre[k]));
    for (size_t k = 0; k < in->n; k++) {
        tk_piece p = in->v[k];
        if (p.id >= 0)
            MT_TRY(tk_ids_push(out, p.id));
        else
            MT_TRY(tk_bpe_encode(&tok->bpe, in->text.p + p.off, p.len, &e->bs, out));
    }
    if (add_special)
        for (size_t k = 0; k < tok->n_tpl_post; k++) MT_TRY(tk_ids_push(out, tok->tpl_post[k]));
    return MT_OK;
}

mt_status mt_tokenizer_encode(const mt_tokenizer *tok, const char *text, size_t len,
                              bool add_special, mt_token_ids *out) {
    if (!tok || !out || (!text && len))
        return mt_fail(MT_ERR_ARG, "mt_tokenizer_encode: NULL tokenizer, text or output");
    size_t bad = tk_utf8_check(text, len);
    if (bad < len)
        return mt_fail(MT_ERR_ARG, "%s: encode: text is not valid UTF-8 at byte %zu of %zu",
                       tok->name, bad, len);
    size_t before = out->n;
    enc e = {0};
    mt_status st = encode_run(tok, text ? text : "", len, add_special, &e, out);
    enc_free(&e);
    if (st) out->n = before;
    return st;
}

void mt_token_ids_free(mt_token_ids *ids) {
    if (!ids) return;
    mt_free(ids->ids);
    *ids = (mt_token_ids){0};
}

mt_status mt_tokenizer_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n,
                              bool skip_special, char **text, size_t *len) {
    if (!tok || !text || (!ids && n))
        return mt_fail(MT_ERR_ARG, "mt_tokenizer_decode: NULL tokenizer, ids or output");
    tk_bytes out = {0};
    mt_status st = tk_decode(tok, ids, n, skip_special, &out);
    if (st) {
        tk_bytes_free(&out);
        return st;
    }
    *text = out.p;
    if (len) *len = out.n;
    return MT_OK;
}

/* ---- loading and lookups --------------------------------------------------------------------- */

void mt_tokenizer_free(mt_tokenizer *tok) {
    if (!tok) return;
    tk_bpe_free(&tok->bpe);
    for (size_t k = 0; k < tok->n_added; k++) {
        if (tok->added[k].pattern != tok->added[k].content) mt_free(tok->added[k].pattern);
        mt_free(tok->added[k].content);
    }
    mt_free(tok->added);
    tk_strmap_free(&tok->added_by_content);
    mt_free(tok->added_of_id);
    mt_free(tok->match_idx[0]), mt_free(tok->match_idx[1]);
    for (size_t k = 0; k < tok->n_norm; k++) mt_free(tok->norm[k].a), mt_free(tok->norm[k].b);
    for (size_t k = 0; k < tok->n_pre; k++)
        mt_free(tok->pre[k].literal), mt_free(tok->pre[k].replacement);
    for (size_t k = 0; k < tok->n_dec; k++) mt_free(tok->dec[k].a), mt_free(tok->dec[k].b);
    mt_free(tok->norm), mt_free(tok->pre), mt_free(tok->dec);
    mt_free(tok->tpl_pre), mt_free(tok->tpl_post);
    mt_free(tok->name);
    mt_free(tok);
}

mt_status mt_tokenizer_load_buffer(const char *json, size_t n, const char *name,
                                   mt_tokenizer **out) {
    *out = NULL;
    if (!name) name = "tokenizer.json";
    mt_tokenizer *tok = mt_calloc(1, sizeof *tok, "tokenizer");
    if (!tok) return MT_ERR_NOMEM;
    tok->name = mt_strdup(name, "tokenizer name");
    mt_status st = tok->name ? tk_load(json, n, name, tok) : MT_ERR_NOMEM;
    if (st) {
        mt_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return MT_OK;
}

mt_status mt_tokenizer_load(const char *path, mt_tokenizer **out) {
    char *json;
    size_t n;
    *out = NULL;
    MT_TRY(mt_file_read(path, &json, &n));
    mt_status st = mt_tokenizer_load_buffer(json, n, path, out);
    mt_free(json);
    return st;
}

int32_t mt_tokenizer_token_id(const mt_tokenizer *tok, const char *token) {
    size_t n = strlen(token);
    int32_t a = tk_strmap_get(&tok->added_by_content, token, n);
    return a >= 0 ? tok->added[a].id : tk_strmap_get(&tok->bpe.vocab, token, n);
}

const char *mt_tokenizer_token(const mt_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_ids) return NULL;
    int32_t a = tok->added_of_id[id];
    if (a >= 0) { /* a normalized token decodes as its normalized form ("▁mmHg") */
        if (len) *len = tok->added[a].pat_len;
        return tok->added[a].pattern;
    }
    int32_t e = id < tok->bpe.n_ids ? tok->bpe.tok_of_id[id] : -1;
    if (e < 0) return NULL;
    if (len) *len = tok->bpe.vocab.ent[e].len;
    return tok->bpe.vocab.pool.p + tok->bpe.vocab.ent[e].off;
}

bool mt_tokenizer_is_special(const mt_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_ids || tok->added_of_id[id] < 0) return false;
    return tok->added[tok->added_of_id[id]].special;
}

int32_t mt_tokenizer_vocab_size(const mt_tokenizer *tok) {
    return tok->n_ids;
}

int32_t mt_tokenizer_bos(const mt_tokenizer *tok) {
    return tok->bos;
}

int32_t mt_tokenizer_eos(const mt_tokenizer *tok) {
    return tok->eos;
}

const char *mt_tokenizer_digest(const mt_tokenizer *tok) {
    return tok->digest;
}
