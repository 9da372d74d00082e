/* Split patterns without a regex engine. tokenizer.json files in the wild use a handful of split
 * regexes; each is recognised by its exact text and run by a scanner written from its alternation,
 * with Oniguruma's semantics (leftmost match, first alternative that matches, greedy quantifiers
 * that backtrack). Every pattern here matches at every position, so the matches tile the text.
 * The classes: \p{L} letters, \p{N} numbers, \s White_Space (Unicode, as Oniguruma). */
#include <string.h>

#include "medtrain/mem.h"
#include "tokenizer_internal.h"

static const char *const REGEX_TEXT[] = {
    [TK_RE_GPT2] =
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
    [TK_RE_LLAMA3] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    [TK_RE_QWEN2] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
static const char *const REGEX_NAME[] = {
    [TK_RE_GPT2] = "GPT-2",
    [TK_RE_LLAMA3] = "Llama-3 / cl100k",
    [TK_RE_QWEN2] = "Qwen2",
};

int tk_regex_lookup(const char *re) {
    for (int r = 0; r < (int)(sizeof REGEX_TEXT / sizeof *REGEX_TEXT); r++)
        if (!strcmp(re, REGEX_TEXT[r])) return r;
    return -1;
}

const char *tk_regex_name(tk_regex r) {
    return REGEX_NAME[r];
}

/* ---- scanning helpers ------------------------------------------------------------------------ */

typedef struct scan {
    const unsigned char *s;
    size_t n;
} scan;

static unsigned class_at(scan t, size_t i, int *len) {
    uint32_t cp;
    *len = tk_utf8_next(t.s, i, &cp);
    return tk_uc_class(cp);
}

/* End of the run of characters whose class is in `want`. */
static size_t run_of(scan t, size_t i, unsigned want) {
    while (i < t.n) {
        int len;
        if (!(class_at(t, i, &len) & want)) break;
        i += (size_t)len;
    }
    return i;
}

/* End of a run of "other" characters: not \s, \p{L} or \p{N}. */
static size_t run_other(scan t, size_t i) {
    while (i < t.n) {
        int len;
        if (class_at(t, i, &len)) break;
        i += (size_t)len;
    }
    return i;
}

static bool is_other(scan t, size_t i) {
    int len;
    return i < t.n && class_at(t, i, &len) == 0;
}

/* \s+(?!\S)|\s+ at i (a whitespace character): the run, less its last character when a non-space
 * follows and the run has two or more (backtracking gives one back for the lookahead). */
static size_t space_tail(scan t, size_t i) {
    size_t e = i, last = i;
    while (e < t.n) {
        int len;
        if (!(class_at(t, e, &len) & TK_UC_WS)) break;
        last = e;
        e += (size_t)len;
    }
    if (e == t.n || last == i) return e;
    return last;
}

/* 's 't 're 've 'm 'll 'd at i (which holds '\''); case-insensitive when fold (with Unicode simple
 * case folding: U+017F LONG S folds to s). Returns the end, or 0. */
static size_t contraction(scan t, size_t i, bool fold) {
    size_t j = i + 1;
    if (j >= t.n) return 0;
    unsigned c = t.s[j];
    if (fold && c == 0xC5 && j + 1 < t.n && t.s[j + 1] == 0xBF) return j + 2; /* 'ſ */
    if (fold && c < 0x80) c |= 0x20;
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return j + 1;
    if (j + 1 >= t.n) return 0;
    unsigned d = t.s[j + 1];
    if (fold && d < 0x80) d |= 0x20;
    if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l')) return j + 2;
    return 0;
}

/* ---- the patterns ---------------------------------------------------------------------------- */

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t gpt2_next(scan t, size_t i) {
    size_t e;
    if (t.s[i] == '\'' && (e = contraction(t, i, false))) return e;
    size_t j = i + (t.s[i] == ' ' && i + 1 < t.n); /* the optional space, when something follows */
    int len;
    unsigned c = class_at(t, j, &len);
    if (c == TK_UC_L || c == TK_UC_N) return run_of(t, j, c);
    if (c == 0) return run_other(t, j);
    return space_tail(t, i); /* j == i here: a lone ' ' at the end, or space before space */
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t llama3_next(scan t, size_t i, int max_digits) {
    size_t e;
    if (t.s[i] == '\'' && (e = contraction(t, i, true))) return e;
    int len;
    unsigned c = class_at(t, i, &len);
    if (c == TK_UC_L) return run_of(t, i, TK_UC_L);
    if (c != TK_UC_N && t.s[i] != '\r' && t.s[i] != '\n' && i + (size_t)len < t.n) {
        int len2;
        if (class_at(t, i + (size_t)len, &len2) == TK_UC_L)
            return run_of(t, i + (size_t)len, TK_UC_L);
    }
    if (c == TK_UC_N) {
        e = i;
        for (int k = 0; k < max_digits && e < t.n; k++) {
            int l2;
            if (class_at(t, e, &l2) != TK_UC_N) break;
            e += (size_t)l2;
        }
        return e;
    }
    size_t j = i + (t.s[i] == ' ');
    if (is_other(t, j)) {
        e = run_other(t, j);
        while (e < t.n && (t.s[e] == '\r' || t.s[e] == '\n')) e++;
        return e;
    }
    /* Whitespace at i. \s*[\r\n]+ : up to and including the run's last \r or \n. */
    size_t end = i, crlf = 0;
    bool has_crlf = false;
    while (end < t.n) {
        int l2;
        if (!(class_at(t, end, &l2) & TK_UC_WS)) break;
        if (t.s[end] == '\r' || t.s[end] == '\n') crlf = end, has_crlf = true;
        end += (size_t)l2;
    }
    if (has_crlf) return crlf + 1;
    return space_tail(t, i);
}

size_t tk_regex_next(tk_regex r, const unsigned char *s, size_t n, size_t i) {
    scan t = {s, n};
    switch (r) {
    case TK_RE_GPT2:
        return gpt2_next(t, i);
    case TK_RE_LLAMA3:
        return llama3_next(t, i, 3);
    case TK_RE_QWEN2:
        return llama3_next(t, i, 1);
    }
    return n;
}

/* ---- spans and split behaviours -------------------------------------------------------------- */

static mt_status spans_push(tk_spans *sp, size_t lo, size_t hi, bool match) {
    if (sp->n == sp->cap)
        MT_TRY(tk_grow((void **)&sp->v, &sp->cap, sp->n + 1, sizeof *sp->v, "split spans"));
    sp->v[sp->n++] = (tk_span){lo, hi, match};
    return MT_OK;
}

mt_status tk_spans_regex(tk_spans *sp, tk_regex r, const char *s, size_t n) {
    sp->n = 0;
    if (n == 0) return spans_push(sp, 0, 0, false);
    for (size_t i = 0; i < n;) {
        size_t e = tk_regex_next(r, (const unsigned char *)s, n, i);
        MT_TRY(spans_push(sp, i, e, true));
        i = e;
    }
    return MT_OK;
}

mt_status tk_spans_literal(tk_spans *sp, const char *lit, size_t lit_n, const char *s, size_t n) {
    sp->n = 0;
    if (n == 0 || lit_n == 0) return spans_push(sp, 0, n, false);
    size_t prev = 0;
    for (size_t i = 0; i + lit_n <= n;) {
        const char *hit = memmem(s + i, n - i, lit, lit_n);
        if (!hit) break;
        size_t at = (size_t)(hit - s);
        if (at > prev) MT_TRY(spans_push(sp, prev, at, false));
        MT_TRY(spans_push(sp, at, at + lit_n, true));
        prev = i = at + lit_n;
    }
    if (prev < n) MT_TRY(spans_push(sp, prev, n, false));
    return MT_OK;
}

/* NormalizedString::split: Removed drops matches; Isolated keeps every span; Contiguous joins runs
 * of spans of the same kind; MergedWithPrevious appends a match to the span before it (unless that
 * is a match too); MergedWithNext prepends it to the span after. Computed in place on the spans. */
mt_status tk_split_emit(tk_plist *out, const char *s, size_t n, tk_spans *sp, tk_behavior b,
                        bool invert, size_t z) {
    if (invert)
        for (size_t k = 0; k < sp->n; k++) sp->v[k].match = !sp->v[k].match;
    size_t m = 0; /* spans kept, rewritten in place; .match now means "remove" */
    bool prev_match = false;
    if (b == TK_SPLIT_MERGED_NEXT) {
        /* Walk backwards, as `tokenizers` does, then restore the order. */
        size_t w = sp->n;
        for (size_t k = sp->n; k-- > 0;) {
            tk_span x = sp->v[k];
            if (x.match && !prev_match && w < sp->n)
                sp->v[w].lo = x.lo;
            else
                sp->v[--w] = (tk_span){x.lo, x.hi, false};
            prev_match = x.match;
        }
        memmove(sp->v, sp->v + w, (sp->n - w) * sizeof *sp->v);
        m = sp->n - w;
    } else {
        for (size_t k = 0; k < sp->n; k++) {
            tk_span x = sp->v[k];
            bool join = false;
            if (b == TK_SPLIT_CONTIGUOUS) join = x.match == prev_match && m > 0;
            if (b == TK_SPLIT_MERGED_PREV) join = x.match && !prev_match && m > 0;
            if (join)
                sp->v[m - 1].hi = x.hi;
            else
                sp->v[m++] = (tk_span){x.lo, x.hi, b == TK_SPLIT_REMOVED && x.match};
            prev_match = x.match;
        }
    }
    for (size_t k = 0; k < m; k++) {
        tk_span x = sp->v[k];
        if (x.match) continue;
        MT_TRY(tk_plist_text(out, s + x.lo, x.hi - x.lo, tk_sub_z(z, x.lo, x.hi)));
    }
    return MT_OK;
}
