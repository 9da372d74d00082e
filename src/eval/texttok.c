/* Tokenizers of the text metrics (textmetrics.h): strict UTF-8 decoding, Python's str.lower(),
 * sacrebleu's tokenizer_13a with BLEU's preprocessing, and rouge-score's default tokenizer.
 *
 * Both tokenizers work on code points, so that "one character" means what it means to Python's
 * str methods and re module, and write their tokens as UTF-8 joined by single spaces. The 13a
 * rules are applied literally, one pass each, in sacrebleu's order: every str.replace and every
 * re.sub is a left-to-right scan that consumes what it matched, as Python's are. */
#include "textmetrics_internal.h"

#include <string.h>

#include "medtrain/mem.h"

/* ---- Unicode lookups (tables in unicase.c) ------------------------------------------------- */

uint32_t mt_unicase_lower(uint32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c == 0x130) return 'i';
    if (c == 0x3A3) return 0x3C3;
    /* The last range with first <= c. */
    int lo = 0, hi = mt_unicase_n_lower_ranges;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (mt_unicase_lower_ranges[mid].first <= c)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) return c;
    const mt_unicase_range *r = &mt_unicase_lower_ranges[lo - 1];
    if (c > r->last || (c - r->first) % r->step) return c;
    return (uint32_t)((int64_t)c + r->delta);
}

int mt_unicase_sigma_class(uint32_t c) {
    int lo = 0, hi = mt_unicase_n_sigma_runs;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (mt_unicase_sigma_runs[mid].first <= c)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || c > mt_unicase_sigma_runs[lo - 1].last) return 0;
    return mt_unicase_sigma_runs[lo - 1].cls;
}

bool mt_unicase_isspace(uint32_t c) {
    if (c == ' ') return true;
    if (c > 0x3000 || (c > ' ' && c < 0x85)) return false;
    for (int i = 0; i < mt_unicase_n_spaces; i++)
        if (mt_unicase_spaces[i] == c) return true;
    return false;
}

/* ---- Buffers ------------------------------------------------------------------------------ */

static mt_status u32_reserve(mt_text_u32 *b, size_t n) {
    if (n <= b->cap) return MT_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < n) cap *= 2;
    uint32_t *p = mt_realloc(b->p, cap, sizeof *p, "text: code points");
    if (!p) return MT_ERR_NOMEM;
    b->p = p, b->cap = cap;
    return MT_OK;
}

void mt_text_u32_free(mt_text_u32 *b) {
    mt_free(b->p);
    memset(b, 0, sizeof *b);
}

static mt_status text_reserve(mt_text_buf *t, size_t n) {
    if (n + 1 <= t->cap) return MT_OK;
    size_t cap = t->cap ? t->cap : 64;
    while (cap < n + 1) cap *= 2;
    char *p = mt_realloc(t->p, cap, 1, "text: tokens");
    if (!p) return MT_ERR_NOMEM;
    t->p = p, t->cap = cap;
    return MT_OK;
}

void mt_text_buf_free(mt_text_buf *t) {
    mt_free(t->p);
    memset(t, 0, sizeof *t);
}

void mt_text_scratch_free(mt_text_scratch *s) {
    mt_text_u32_free(&s->a);
    mt_text_u32_free(&s->b);
}

static void swap_bufs(mt_text_u32 *x, mt_text_u32 *y) {
    mt_text_u32 t = *x;
    *x = *y, *y = t;
}

/* ---- UTF-8 and lowercase -------------------------------------------------------------------- */

static mt_status bad_utf8(const char *what, size_t at, unsigned byte) {
    return mt_fail(MT_ERR_ARG, "%s: invalid UTF-8 at byte %zu (0x%02x), expected valid UTF-8 text",
                   what, at, byte);
}

/* Strict UTF-8 (Python's decoder): no overlong forms, no surrogates, nothing above U+10FFFF. */
mt_status mt_text_decode_utf8(const char *s, const char *what, mt_text_u32 *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s);
    MT_TRY(u32_reserve(out, len));
    out->n = 0;
    for (size_t i = 0; i < len;) {
        unsigned b = p[i], lo = 0x80, hi = 0xBF;
        uint32_t c;
        int k;
        if (b < 0x80) {
            out->p[out->n++] = b, i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            c = b & 0x1F, k = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            c = b & 0x0F, k = 2;
            lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            c = b & 0x07, k = 3;
            lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
        } else {
            return bad_utf8(what, i, b);
        }
        /* p[len] is the terminator, so the scan stops at it at the latest. */
        for (int j = 1; j <= k; j++) {
            unsigned nb = p[i + j];
            if (nb < (j == 1 ? lo : 0x80) || nb > (j == 1 ? hi : 0xBF))
                return bad_utf8(what, i + j, nb);
            c = c << 6 | (nb & 0x3F);
        }
        out->p[out->n++] = c, i += (size_t)k + 1;
    }
    return MT_OK;
}

/* CPython's Final_Sigma test for the capital sigma at s[i]: a cased letter before it and none
 * after it, skipping case-ignorable points on both sides. */
static bool final_sigma(const uint32_t *s, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && mt_unicase_sigma_class(s[j - 1]) == 1) j--;
    if (j == 0 || mt_unicase_sigma_class(s[j - 1]) != 2) return false;
    for (j = i + 1; j < n && mt_unicase_sigma_class(s[j]) == 1;) j++;
    return j == n || mt_unicase_sigma_class(s[j]) != 2;
}

mt_status mt_text_lower(const uint32_t *in, size_t n, mt_text_u32 *out) {
    size_t extra = 0;
    for (size_t i = 0; i < n; i++) extra += in[i] == 0x130;
    MT_TRY(u32_reserve(out, n + extra));
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c == 0x3A3)
            out->p[out->n++] = final_sigma(in, n, i) ? 0x3C2 : 0x3C3;
        else
            out->p[out->n++] = mt_unicase_lower(c);
        if (c == 0x130) out->p[out->n++] = 0x307; /* the one two-point lowercase */
    }
    return MT_OK;
}

/* ---- Writing tokens ---------------------------------------------------------------------------
 */

static size_t utf8_encode(uint32_t c, char *o) {
    if (c < 0x80) return o[0] = (char)c, 1;
    if (c < 0x800) return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18), o[1] = (char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (char)(0x80 | (c >> 6 & 0x3F)), o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ' '.join(s.split()): the whitespace-separated words of s, as UTF-8, into out. */
static mt_status join_words(const mt_text_u32 *s, mt_text_buf *out) {
    MT_TRY(text_reserve(out, 4 * s->n));
    out->n = 0;
    bool in_word = false;
    for (size_t i = 0; i < s->n; i++) {
        if (mt_unicase_isspace(s->p[i])) {
            in_word = false;
            continue;
        }
        if (!in_word && out->n) out->p[out->n++] = ' ';
        in_word = true;
        out->n += utf8_encode(s->p[i], out->p + out->n);
    }
    out->p[out->n] = '\0';
    return MT_OK;
}

/* ---- sacrebleu's tokenizer_13a -------------------------------------------------------------- */

/* str.replace(from, to) in place, for ASCII from and to with len(to) <= len(from). */
static void replace_all(mt_text_u32 *b, const char *from, const char *to) {
    size_t lf = strlen(from), lt = strlen(to), w = 0;
    for (size_t i = 0; i < b->n;) {
        size_t k = 0;
        while (k < lf && i + k < b->n && b->p[i + k] == (unsigned char)from[k]) k++;
        if (k == lf) {
            for (size_t j = 0; j < lt; j++) b->p[w++] = (unsigned char)to[j];
            i += lf;
        } else {
            b->p[w++] = b->p[i++];
        }
    }
    b->n = w;
}

static bool has_point(const mt_text_u32 *b, uint32_t c) {
    for (size_t i = 0; i < b->n; i++)
        if (b->p[i] == c) return true;
    return false;
}

static bool is_digit(uint32_t c) {
    return c >= '0' && c <= '9';
}
static bool is_point(uint32_t c) { /* [\.,] */
    return c == '.' || c == ',';
}

/* The first regex's class [\{-\~\[-\` -\&\(-\+\:-\@\/]: ASCII punctuation and space, except
 * ' , - . (handled by the next three rules or kept). */
static bool is_13a_punct(uint32_t c) {
    return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
           (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
}

static void push3(mt_text_u32 *o, uint32_t a, uint32_t b, uint32_t c) {
    o->p[o->n++] = a, o->p[o->n++] = b, o->p[o->n++] = c;
}

/* re.sub(r'([\{-\~\[-\` -\&\(-\+\:-\@\/])', r' \1 ', ' ' + line + ' '): out holds 3(n + 2). */
static void split_punct(const mt_text_u32 *in, mt_text_u32 *o) {
    o->n = 0;
    for (size_t i = 0; i < in->n + 2; i++) {
        uint32_t c = i == 0 || i == in->n + 1 ? ' ' : in->p[i - 1];
        if (is_13a_punct(c))
            push3(o, ' ', c, ' ');
        else
            o->p[o->n++] = c;
    }
}

/* The three two-character rules, each a re.sub over the whole line; out holds 2n.
 *   BEFORE_POINT  ([^0-9])([\.,]) -> \1 \2     period and comma unless preceded by a digit
 *   AFTER_POINT   ([\.,])([^0-9]) ->  \1 \2    period and comma unless followed by a digit
 *   DASH          ([0-9])(-)      -> \1 \2     dash preceded by a digit */
typedef enum pair_rule { BEFORE_POINT, AFTER_POINT, DASH } pair_rule;

static bool pair_matches(pair_rule r, uint32_t x, uint32_t y) {
    switch (r) {
    case BEFORE_POINT:
        return !is_digit(x) && is_point(y);
    case AFTER_POINT:
        return is_point(x) && !is_digit(y);
    case DASH:
        return is_digit(x) && y == '-';
    }
    return false;
}

static void apply_pair_rule(pair_rule r, const mt_text_u32 *in, mt_text_u32 *o) {
    o->n = 0;
    for (size_t i = 0; i < in->n;) {
        uint32_t x = in->p[i];
        if (i + 1 < in->n && pair_matches(r, x, in->p[i + 1])) {
            uint32_t y = in->p[i + 1];
            if (r == AFTER_POINT)
                o->p[o->n++] = ' ', push3(o, x, ' ', y);
            else
                push3(o, x, ' ', y), o->p[o->n++] = ' ';
            i += 2;
        } else {
            o->p[o->n++] = x, i++;
        }
    }
}

mt_status mt_text_tok_13a(const char *text, bool lowercase, const char *what, mt_text_scratch *s,
                          mt_text_buf *out) {
    mt_text_u32 *a = &s->a, *b = &s->b;
    MT_TRY(mt_text_decode_utf8(text, what, a));
    if (lowercase) {
        MT_TRY(mt_text_lower(a->p, a->n, b));
        swap_bufs(a, b);
    }
    while (a->n && mt_unicase_isspace(a->p[a->n - 1])) a->n--; /* BLEU's sent.rstrip() */

    /* tokenizer_13a: language-independent part */
    replace_all(a, "<skipped>", "");
    replace_all(a, "-\n", "");
    replace_all(a, "\n", " ");
    if (has_point(a, '&')) {
        replace_all(a, "&quot;", "\"");
        replace_all(a, "&amp;", "&");
        replace_all(a, "&lt;", "<");
        replace_all(a, "&gt;", ">");
    }

    /* TokenizerRegexp: four rules, each at most doubles (the first triples) the length */
    size_t cap = 3 * (a->n + 2);
    MT_TRY(u32_reserve(b, cap));
    split_punct(a, b);
    MT_TRY(u32_reserve(a, 2 * cap));
    apply_pair_rule(BEFORE_POINT, b, a);
    MT_TRY(u32_reserve(b, 2 * a->n));
    apply_pair_rule(AFTER_POINT, a, b);
    MT_TRY(u32_reserve(a, 2 * b->n));
    apply_pair_rule(DASH, b, a);
    return join_words(a, out);
}

/* ---- rouge-score's tokenizer ----------------------------------------------------------------- */

static bool is_rouge_char(uint32_t c) { /* [a-z0-9] after lowercasing */
    return (c >= 'a' && c <= 'z') || is_digit(c);
}

mt_status mt_text_tok_rouge(const char *text, bool stem, const char *what, mt_text_scratch *s,
                            mt_text_buf *out) {
    MT_TRY(mt_text_decode_utf8(text, what, &s->a));
    MT_TRY(mt_text_lower(s->a.p, s->a.n, &s->b));
    const mt_text_u32 *t = &s->b;
    MT_TRY(text_reserve(out, 2 * t->n));
    out->n = 0;
    for (size_t i = 0; i < t->n;) {
        if (!is_rouge_char(t->p[i])) {
            i++;
            continue;
        }
        if (out->n) out->p[out->n++] = ' ';
        size_t start = out->n;
        for (; i < t->n && is_rouge_char(t->p[i]); i++) out->p[out->n++] = (char)t->p[i];
        /* "Only stem words more than 3 characters long." */
        if (stem && out->n - start > 3)
            out->n = start + mt_porter_stem(out->p + start, out->n - start);
        if (out->n == start && start) out->n--; /* an empty stem is dropped, as rouge-score does */
    }
    out->p[out->n] = '\0';
    return MT_OK;
}
