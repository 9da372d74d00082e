/* Decoding: ids -> token strings (added tokens first; special ones dropped on request) -> the
 * decoder chain of `tokenizers`, each step mapping a list of strings to a list of strings
 * (decode_chain), and the result joined. Without a decoder the tokens are joined with spaces. */
#include <string.h>

#include "medtrain/mem.h"
#include "tokenizer_internal.h"

typedef struct sref {
    size_t off, len;
} sref;

/* A list of strings in one buffer. */
typedef struct slist {
    sref *v;
    size_t n, cap;
    tk_bytes b;
} slist;

static mt_status sl_begin(slist *l) {
    if (l->n == l->cap) MT_TRY(tk_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, "decode"));
    l->v[l->n++] = (sref){l->b.n, 0};
    return MT_OK;
}

static mt_status sl_add(slist *l, const void *s, size_t n) { /* to the last string */
    MT_TRY(tk_bytes_add(&l->b, s, n));
    l->v[l->n - 1].len += n;
    return MT_OK;
}

static mt_status sl_push(slist *l, const void *s, size_t n) {
    MT_TRY(sl_begin(l));
    return sl_add(l, s, n);
}

static const char *sl_at(const slist *l, size_t k) {
    return l->b.p + l->v[k].off;
}

static void sl_clear(slist *l) {
    l->n = 0, l->b.n = 0;
}

static void sl_free(slist *l) {
    mt_free(l->v);
    tk_bytes_free(&l->b);
}

/* ---- the steps ------------------------------------------------------------------------------- */

/* ByteLevel: every token's characters back to bytes (a token with a character outside the alphabet
 * is kept as its UTF-8), all joined, then String::from_utf8_lossy. One string out. */
static mt_status dec_bytelevel(const mt_tokenizer *tok, const slist *in, slist *out,
                               tk_bytes *tmp) {
    tmp->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        const unsigned char *s = (const unsigned char *)sl_at(in, k);
        size_t n = in->v[k].len, mark = tmp->n;
        bool ok = true;
        for (size_t i = 0; i < n && ok;) {
            uint32_t cp;
            i += (size_t)tk_utf8_next(s, i, &cp);
            int b = cp < 324 ? tok->bytemap.byte_of[cp] : -1;
            if (b < 0) {
                ok = false;
                break;
            }
            unsigned char c = (unsigned char)b;
            MT_TRY(tk_bytes_add(tmp, &c, 1));
        }
        if (!ok) {
            tmp->n = mark;
            MT_TRY(tk_bytes_add(tmp, s, n));
        }
    }
    MT_TRY(sl_begin(out));
    size_t before = out->b.n;
    MT_TRY(tk_utf8_lossy(&out->b, (const unsigned char *)tmp->p, tmp->n));
    out->v[out->n - 1].len = out->b.n - before;
    return MT_OK;
}

/* Replace (a string pattern): every occurrence, left to right. */
static mt_status dec_replace(const tk_dec *d, const slist *in, slist *out) {
    size_t an = strlen(d->a), bn = strlen(d->b);
    for (size_t k = 0; k < in->n; k++) {
        const char *s = sl_at(in, k);
        size_t n = in->v[k].len, i = 0;
        MT_TRY(sl_begin(out));
        while (i < n) {
            const char *hit = an ? memmem(s + i, n - i, d->a, an) : NULL;
            size_t at = hit ? (size_t)(hit - s) : n;
            MT_TRY(sl_add(out, s + i, at - i));
            if (!hit) break;
            MT_TRY(sl_add(out, d->b, bn));
            i = at + an;
        }
    }
    return MT_OK;
}

/* "<0xNN>" (u8::from_str_radix on the two characters: hex, either case, or "+" and one digit). */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int h = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (i == 3 && c == '+') continue;
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* ByteFallback: runs of <0xNN> tokens become their bytes when those are valid UTF-8, else one
 * U+FFFD per byte; other tokens pass through. */
static mt_status flush_bytes(slist *out, tk_bytes *run) {
    if (!run->n) return MT_OK;
    if (tk_utf8_check(run->p, run->n) == run->n)
        MT_TRY(sl_push(out, run->p, run->n));
    else
        for (size_t i = 0; i < run->n; i++) MT_TRY(sl_push(out, "\xEF\xBF\xBD", 3));
    run->n = 0;
    return MT_OK;
}

static mt_status dec_bytefallback(const slist *in, slist *out, tk_bytes *run) {
    run->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        int b = byte_token(sl_at(in, k), in->v[k].len);
        if (b >= 0) {
            unsigned char c = (unsigned char)b;
            MT_TRY(tk_bytes_add(run, &c, 1));
            continue;
        }
        MT_TRY(flush_bytes(out, run));
        MT_TRY(sl_push(out, sl_at(in, k), in->v[k].len));
    }
    return flush_bytes(out, run);
}

static mt_status dec_fuse(const slist *in, slist *out) {
    MT_TRY(sl_begin(out));
    for (size_t k = 0; k < in->n; k++) MT_TRY(sl_add(out, sl_at(in, k), in->v[k].len));
    return MT_OK;
}

/* Strip: up to `start` leading and `stop` trailing copies of one character from every token. */
static mt_status dec_strip(const tk_dec *d, const slist *in, slist *out) {
    size_t cn = strlen(d->a);
    for (size_t k = 0; k < in->n; k++) {
        const char *s = sl_at(in, k);
        size_t lo = 0, hi = in->v[k].len;
        for (int i = 0; i < d->start && hi - lo >= cn && !memcmp(s + lo, d->a, cn); i++) lo += cn;
        for (int i = 0; i < d->stop && hi - lo >= cn && !memcmp(s + hi - cn, d->a, cn); i++)
            hi -= cn;
        MT_TRY(sl_push(out, s + lo, hi - lo));
    }
    return MT_OK;
}

/* Metaspace: the replacement becomes a space, except in the first token (unless prepend_scheme is
 * "never") where it is dropped. */
static mt_status dec_metaspace(const tk_dec *d, const slist *in, slist *out) {
    size_t an = strlen(d->a);
    for (size_t k = 0; k < in->n; k++) {
        const char *s = sl_at(in, k);
        size_t n = in->v[k].len, i = 0;
        bool drop = k == 0 && d->prepend != TK_PREPEND_NEVER;
        MT_TRY(sl_begin(out));
        while (i < n) {
            const char *hit = memmem(s + i, n - i, d->a, an);
            size_t at = hit ? (size_t)(hit - s) : n;
            MT_TRY(sl_add(out, s + i, at - i));
            if (!hit) break;
            if (!drop) MT_TRY(sl_add(out, " ", 1));
            i = at + an;
        }
    }
    return MT_OK;
}

/* ---- the chain ------------------------------------------------------------------------------- */

static mt_status gather_tokens(const mt_tokenizer *tok, const int32_t *ids, size_t n,
                               bool skip_special, slist *l) {
    for (size_t k = 0; k < n; k++) {
        int32_t id = ids[k];
        if (id < 0 || id >= tok->n_ids)
            return mt_fail(MT_ERR_ARG,
                           "%s: decode: id %d at position %zu is outside the vocabulary "
                           "[0, %d)",
                           tok->name, id, k, tok->n_ids);
        size_t len;
        const char *s = mt_tokenizer_token(tok, id, &len);
        if (!s) continue;   /* ids no token has are skipped, as in `tokenizers` */
        if (skip_special) { /* `tokenizers` asks whether the token's string is special */
            int32_t a = tk_strmap_get(&tok->added_by_content, s, len);
            if (a >= 0 && tok->added[a].special) continue;
        }
        MT_TRY(sl_push(l, s, len));
    }
    return MT_OK;
}

static mt_status run_step(const mt_tokenizer *tok, const tk_dec *d, const slist *in, slist *out,
                          tk_bytes *tmp) {
    switch (d->kind) {
    case TK_DEC_BYTELEVEL:
        return dec_bytelevel(tok, in, out, tmp);
    case TK_DEC_REPLACE:
        return dec_replace(d, in, out);
    case TK_DEC_BYTEFALLBACK:
        return dec_bytefallback(in, out, tmp);
    case TK_DEC_FUSE:
        return dec_fuse(in, out);
    case TK_DEC_STRIP:
        return dec_strip(d, in, out);
    case TK_DEC_METASPACE:
        return dec_metaspace(d, in, out);
    }
    return mt_fail(MT_ERR_INTERNAL, "tokenizer: unknown decoder step %d", (int)d->kind);
}

static mt_status decode_lists(const mt_tokenizer *tok, const int32_t *ids, size_t n,
                              bool skip_special, slist l[2], tk_bytes *tmp, tk_bytes *out) {
    MT_TRY(gather_tokens(tok, ids, n, skip_special, &l[0]));
    int cur = 0;
    for (size_t k = 0; k < tok->n_dec; k++) {
        sl_clear(&l[1 - cur]);
        MT_TRY(run_step(tok, &tok->dec[k], &l[cur], &l[1 - cur], tmp));
        cur = 1 - cur;
    }
    out->n = 0;
    MT_TRY(tk_bytes_reserve(out, 0));
    out->p[0] = '\0';
    for (size_t k = 0; k < l[cur].n; k++) {
        if (k > 0 && !tok->has_decoder) MT_TRY(tk_bytes_add(out, " ", 1));
        MT_TRY(tk_bytes_add(out, sl_at(&l[cur], k), l[cur].v[k].len));
    }
    return MT_OK;
}

mt_status tk_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                    tk_bytes *out) {
    slist l[2] = {{0}, {0}};
    tk_bytes tmp = {0};
    mt_status st = decode_lists(tok, ids, n, skip_special, l, &tmp, out);
    sl_free(&l[0]), sl_free(&l[1]);
    tk_bytes_free(&tmp);
    return st;
}
