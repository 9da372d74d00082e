/* nltk's Porter stemmer, PorterStemmer() in its default mode NLTK_EXTENSIONS, which is what
 * rouge-score's DefaultTokenizer(use_stemmer=True) constructs (textmetrics_internal.h).
 *
 * A transcription of nltk/stem/porter.py, step by step, for lowercase ASCII words (rouge-score
 * stems [a-z0-9]+ tokens): the same rule lists in the same order, and the same rule-list
 * semantics (the FIRST rule whose suffix matches decides; when its condition fails the word is
 * left as it is, later rules are not tried). The NLTK_EXTENSIONS departures from the 1980 paper
 * are marked "nltk:". Every step shortens the word or keeps its length, so it works in place. */
#include "textmetrics_internal.h"

#include <string.h>

/* ---- Consonants, measure, conditions --------------------------------------------------------- */

static bool is_vowel_letter(char c) {
    return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
}

/* A consonant is a letter other than a e i o u, and other than a y preceded by a consonant (a y
 * at the start is a consonant). Digits are consonants, as in nltk. */
static bool is_consonant(const char *w, size_t i) {
    if (is_vowel_letter(w[i])) return false;
    if (w[i] != 'y') return true;
    bool negate = false;
    while (i > 0 && w[i] == 'y') negate = !negate, i--;
    return !is_vowel_letter(w[i]) != negate;
}

/* m in [C](VC){m}[V] of w[0..n): the number of vowel -> consonant transitions. */
static int measure(const char *w, size_t n) {
    int m = 0;
    bool prev_cons = true;
    for (size_t i = 0; i < n; i++) {
        bool cons = is_vowel_letter(w[i]) ? false : w[i] == 'y' ? (i == 0 || !prev_cons) : true;
        if (cons && i > 0 && !prev_cons) m++;
        prev_cons = cons;
    }
    return m;
}

static bool contains_vowel(const char *w, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_consonant(w, i)) return true;
    return false;
}

/* *d: ends with a double consonant. */
static bool ends_double_consonant(const char *w, size_t n) {
    return n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1);
}

/* *o: ends consonant-vowel-consonant, the last not w, x or y; nltk: or is a vowel-consonant pair
 * of two letters. */
static bool ends_cvc(const char *w, size_t n) {
    if (n >= 3 && is_consonant(w, n - 3) && !is_consonant(w, n - 2) && is_consonant(w, n - 1) &&
        w[n - 1] != 'w' && w[n - 1] != 'x' && w[n - 1] != 'y')
        return true;
    return n == 2 && !is_consonant(w, 0) && is_consonant(w, 1);
}

static bool ends_with(const char *w, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && !memcmp(w + n - k, suffix, k);
}

/* ---- Rule lists ------------------------------------------------------------------------------ */

typedef enum cond {
    ALWAYS,
    M_GT_0,   /* m(stem) > 0 */
    M_GT_1,   /* m(stem) > 1 */
    ION_COND, /* m(stem) > 1 and the stem ends in s or t */
    LOGI,     /* nltk: m(word[:-3]) > 0, the stem plus its 'l' */
    LL,       /* m(word[:-1]) > 1 */
} cond;

typedef struct rule {
    const char *suffix, *replacement;
    cond c;
} rule;

static bool holds(cond c, const char *w, size_t n, size_t stem_n) {
    switch (c) {
    case ALWAYS:
        return true;
    case M_GT_0:
        return measure(w, stem_n) > 0;
    case M_GT_1:
        return measure(w, stem_n) > 1;
    case ION_COND:
        return measure(w, stem_n) > 1 && (w[stem_n - 1] == 's' || w[stem_n - 1] == 't');
    case LOGI:
        return measure(w, n - 3) > 0;
    case LL:
        return measure(w, n - 1) > 1;
    }
    return false;
}

/* nltk's _apply_rule_list for plain suffix rules: returns the new length. */
static size_t apply_rules(char *w, size_t n, const rule *rules, size_t count) {
    for (size_t r = 0; r < count; r++) {
        if (!ends_with(w, n, rules[r].suffix)) continue;
        size_t stem_n = n - strlen(rules[r].suffix);
        if (!holds(rules[r].c, w, n, stem_n)) return n;
        size_t k = strlen(rules[r].replacement);
        memcpy(w + stem_n, rules[r].replacement, k);
        return stem_n + k;
    }
    return n;
}

#define APPLY(w, n, rules) apply_rules(w, n, rules, sizeof rules / sizeof rules[0])

/* Replaces the last k characters by repl (no longer than k). */
static size_t replace_end(char *w, size_t n, size_t k, const char *repl) {
    size_t r = strlen(repl);
    memcpy(w + n - k, repl, r);
    return n - k + r;
}

/* ---- Steps ----------------------------------------------------------------------------------- */

static size_t step1a(char *w, size_t n) {
    static const rule rules[] = {
        {"sses", "ss", ALWAYS}, {"ies", "i", ALWAYS}, {"ss", "ss", ALWAYS}, {"s", "", ALWAYS}};
    if (n == 4 && ends_with(w, n, "ies")) return replace_end(w, n, 3, "ie"); /* nltk: ties */
    return APPLY(w, n, rules);
}

static size_t step1b(char *w, size_t n) {
    if (ends_with(w, n, "ied")) return replace_end(w, n, 3, n == 4 ? "ie" : "i"); /* nltk */
    if (ends_with(w, n, "eed")) return measure(w, n - 3) > 0 ? n - 1 : n;
    size_t stem_n = n;
    if (ends_with(w, n, "ed") && contains_vowel(w, n - 2))
        stem_n = n - 2;
    else if (ends_with(w, n, "ing") && contains_vowel(w, n - 3))
        stem_n = n - 3;
    if (stem_n == n) return n;

    /* The rule list on the intermediate stem: AT -> ATE, BL -> BLE, IZ -> IZE, then
     * (*d and not (*L or *S or *Z)) -> single letter, then (m=1 and *o) -> E. */
    static const rule rules[] = {
        {"at", "ate", ALWAYS}, {"bl", "ble", ALWAYS}, {"iz", "ize", ALWAYS}};
    n = stem_n;
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++)
        if (ends_with(w, n, rules[r].suffix)) return APPLY(w, n, rules);
    if (ends_double_consonant(w, n)) {
        char last = w[n - 1];
        return last != 'l' && last != 's' && last != 'z' ? n - 1 : n;
    }
    if (measure(w, n) == 1 && ends_cvc(w, n)) w[n++] = 'e';
    return n;
}

/* nltk: (*c and not c) Y -> I, i.e. a y after a consonant that is not the first letter. */
static size_t step1c(char *w, size_t n) {
    if (ends_with(w, n, "y") && n - 1 > 1 && is_consonant(w, n - 2)) w[n - 1] = 'i';
    return n;
}

static size_t step2(char *w, size_t n) {
    static const rule rules[] = {
        {"ational", "ate", M_GT_0}, {"tional", "tion", M_GT_0}, {"enci", "ence", M_GT_0},
        {"anci", "ance", M_GT_0},   {"izer", "ize", M_GT_0},    {"bli", "ble", M_GT_0},
        {"alli", "al", M_GT_0},     {"entli", "ent", M_GT_0},   {"eli", "e", M_GT_0},
        {"ousli", "ous", M_GT_0},   {"ization", "ize", M_GT_0}, {"ation", "ate", M_GT_0},
        {"ator", "ate", M_GT_0},    {"alism", "al", M_GT_0},    {"iveness", "ive", M_GT_0},
        {"fulness", "ful", M_GT_0}, {"ousness", "ous", M_GT_0}, {"aliti", "al", M_GT_0},
        {"iviti", "ive", M_GT_0},   {"biliti", "ble", M_GT_0},  {"fulli", "ful", M_GT_0}, /* nltk */
        {"logi", "log", LOGI},                                                            /* nltk */
    };
    /* nltk: ALLI -> AL first, then step 2 again on the result */
    if (ends_with(w, n, "alli") && measure(w, n - 4) > 0)
        return step2(w, replace_end(w, n, 4, "al"));
    return APPLY(w, n, rules);
}

static size_t step3(char *w, size_t n) {
    static const rule rules[] = {
        {"icate", "ic", M_GT_0}, {"ative", "", M_GT_0},  {"alize", "al", M_GT_0},
        {"iciti", "ic", M_GT_0}, {"ical", "ic", M_GT_0}, {"ful", "", M_GT_0},
        {"ness", "", M_GT_0},
    };
    return APPLY(w, n, rules);
}

static size_t step4(char *w, size_t n) {
    static const rule rules[] = {
        {"al", "", M_GT_1},    {"ance", "", M_GT_1}, {"ence", "", M_GT_1}, {"er", "", M_GT_1},
        {"ic", "", M_GT_1},    {"able", "", M_GT_1}, {"ible", "", M_GT_1}, {"ant", "", M_GT_1},
        {"ement", "", M_GT_1}, {"ment", "", M_GT_1}, {"ent", "", M_GT_1},  {"ion", "", ION_COND},
        {"ou", "", M_GT_1},    {"ism", "", M_GT_1},  {"ate", "", M_GT_1},  {"iti", "", M_GT_1},
        {"ous", "", M_GT_1},   {"ive", "", M_GT_1},  {"ize", "", M_GT_1},
    };
    return APPLY(w, n, rules);
}

static size_t step5a(char *w, size_t n) {
    if (!ends_with(w, n, "e")) return n;
    int m = measure(w, n - 1);
    return m > 1 || (m == 1 && !ends_cvc(w, n - 1)) ? n - 1 : n;
}

static size_t step5b(char *w, size_t n) {
    static const rule rules[] = {{"ll", "l", LL}};
    return APPLY(w, n, rules);
}

/* ---- stem() ---------------------------------------------------------------------------------- */

/* nltk: irregular forms, looked up before anything else. */
static const char *const pool[][2] = {
    {"sky", "sky"},        {"skies", "sky"},       {"dying", "die"},        {"lying", "lie"},
    {"tying", "tie"},      {"news", "news"},       {"innings", "inning"},   {"inning", "inning"},
    {"outings", "outing"}, {"outing", "outing"},   {"cannings", "canning"}, {"canning", "canning"},
    {"howe", "howe"},      {"proceed", "proceed"}, {"exceed", "exceed"},    {"succeed", "succeed"},
};

size_t mt_porter_stem(char *w, size_t n) {
    for (size_t i = 0; i < sizeof pool / sizeof pool[0]; i++)
        if (strlen(pool[i][0]) == n && !memcmp(w, pool[i][0], n))
            return replace_end(w, n, n, pool[i][1]);
    if (n <= 2) return n; /* nltk */
    n = step1a(w, n);
    n = step1b(w, n);
    n = step1c(w, n);
    n = step2(w, n);
    n = step3(w, n);
    n = step4(w, n);
    n = step5a(w, n);
    return step5b(w, n);
}
