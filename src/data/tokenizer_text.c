/* The tokenizer's text plumbing: growable buffers, UTF-8 (checking, writing, Rust's lossy
 * conversion), Unicode classes over the generated tables, and piece lists. */
#include <stdlib.h>
#include <string.h>

#include "medtrain/mem.h"
#include "tokenizer_internal.h"

/* ---- buffers --------------------------------------------------------------------------------- */

mt_status tk_grow(void **p, size_t *cap, size_t need, size_t size, const char *what) {
    if (need <= *cap) return MT_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) c = c > SIZE_MAX / 2 ? need : 2 * c;
    void *q = mt_realloc(*p, c, size, what);
    if (!q) return MT_ERR_NOMEM;
    *p = q, *cap = c;
    return MT_OK;
}

mt_status tk_bytes_reserve(tk_bytes *b, size_t extra) {
    if (extra > SIZE_MAX - b->n - 1) return mt_fail(MT_ERR_NOMEM, "tokenizer: text too large");
    return tk_grow((void **)&b->p, &b->cap, b->n + extra + 1, 1, "tokenizer text");
}

mt_status tk_bytes_add(tk_bytes *b, const void *s, size_t n) {
    MT_TRY(tk_bytes_reserve(b, n));
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return MT_OK;
}

void tk_bytes_free(tk_bytes *b) {
    mt_free(b->p);
    *b = (tk_bytes){0};
}

mt_status tk_ids_push(mt_token_ids *out, int32_t id) {
    if (out->n == out->cap)
        MT_TRY(tk_grow((void **)&out->ids, &out->cap, out->n + 1, sizeof *out->ids, "token ids"));
    out->ids[out->n++] = id;
    return MT_OK;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

int tk_utf8_put(uint32_t cp, char out[4]) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)), out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the longest prefix of s[0..n) that could start a valid sequence (1..4), and whether
 * it is a complete one: the "maximal subpart" rule that Rust and the WHATWG decoder follow. */
static int utf8_subpart(const unsigned char *s, size_t n, bool *complete) {
    unsigned c = s[0];
    int want;
    unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c < 0x80) return *complete = true, 1;
    if (c >= 0xC2 && c <= 0xDF)
        want = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        want = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        want = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return *complete = false, 1;
    int k = 1;
    for (; k < want && (size_t)k < n; k++) {
        unsigned d = s[k];
        if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) break;
    }
    *complete = k == want;
    return k;
}

size_t tk_utf8_check(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        bool ok;
        int k = utf8_subpart(u + i, n - i, &ok);
        if (!ok) return i;
        i += (size_t)k;
    }
    return n;
}

mt_status tk_utf8_lossy(tk_bytes *out, const unsigned char *s, size_t n) {
    MT_TRY(tk_bytes_reserve(out, n + n / 2 + 3)); /* worst case: every byte becomes 3 */
    size_t i = 0;
    while (i < n) {
        size_t run = i; /* copy valid runs whole */
        for (;;) {
            if (run < n && s[run] < 0x80) {
                run++;
                continue;
            }
            bool ok = false;
            int k = run < n ? utf8_subpart(s + run, n - run, &ok) : 0;
            if (!ok) break;
            run += (size_t)k;
        }
        MT_TRY(tk_bytes_add(out, s + i, run - i));
        i = run;
        if (i < n) {
            bool ok;
            i += (size_t)utf8_subpart(s + i, n - i, &ok);
            MT_TRY(tk_bytes_add(out, "\xEF\xBF\xBD", 3));
        }
    }
    return MT_OK;
}

/* ---- Unicode classes ------------------------------------------------------------------------- */

static bool in_ranges(const mt_uc_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* White_Space: unchanged since Unicode 6.3 (when U+180E left it). */
bool tk_uc_is_space(uint32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

unsigned tk_uc_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return TK_UC_L;
        if (cp >= '0' && cp <= '9') return TK_UC_N;
        return tk_uc_is_space(cp) ? TK_UC_WS : 0;
    }
    if (tk_uc_is_space(cp)) return TK_UC_WS;
    if (in_ranges(mt_uc_letter, mt_uc_letter_n, cp)) return TK_UC_L;
    if (in_ranges(mt_uc_number, mt_uc_number_n, cp)) return TK_UC_N;
    return 0;
}

bool tk_uc_is_word(uint32_t cp) {
    if (cp < 0x80)
        return ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') || (cp >= '0' && cp <= '9') || cp == '_';
    return in_ranges(mt_uc_word, mt_uc_word_n, cp);
}

/* ---- piece lists ----------------------------------------------------------------------------- */

static mt_status plist_push(tk_plist *l, tk_piece p) {
    if (l->n == l->cap) MT_TRY(tk_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, "pieces"));
    l->v[l->n++] = p;
    return MT_OK;
}

mt_status tk_plist_text(tk_plist *l, const char *s, size_t n, size_t z) {
    if (n == 0) return MT_OK; /* `tokenizers` drops empty splits */
    size_t off = l->text.n;
    MT_TRY(tk_bytes_add(&l->text, s, n));
    return plist_push(l, (tk_piece){off, n, -1, z});
}

mt_status tk_plist_id(tk_plist *l, int32_t id) {
    return plist_push(l, (tk_piece){0, 0, id, 0});
}

void tk_plist_clear(tk_plist *l) {
    l->n = 0;
    l->text.n = 0;
}

void tk_plist_free(tk_plist *l) {
    mt_free(l->v);
    tk_bytes_free(&l->text);
    *l = (tk_plist){0};
}
