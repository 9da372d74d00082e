/* Text metrics for generated reports: corpus BLEU equal to sacrebleu's corpus_bleu and ROUGE-L
 * equal to rouge-score's RougeScorer(['rougeL']) (tests/oracles/textmetrics_oracle.py is the
 * oracle: sacrebleu 2.6, rouge-score 0.1.2, nltk 3.10, Python 3.11).
 *
 * Text is NUL-terminated UTF-8; invalid UTF-8 (overlong forms, surrogates, > U+10FFFF, stray or
 * missing continuation bytes) is an MT_ERR_ARG naming the string and the byte offset, where Python
 * could not have decoded it. Where the metrics need Unicode (lowercasing, whitespace) they follow
 * Python's str.lower() and str.split() (src/eval/unicase.c, generated from Python 3.11's tables:
 * Unicode 14), including its final-sigma rule and U+0130 -> "i\u0307".
 *
 * BLEU (sacrebleu defaults: tokenize='13a', lowercase=False, smooth_method='exp', 4-grams,
 * effective order off). Each hypothesis and reference is lowercased (when asked), stripped of
 * trailing whitespace and tokenized by sacrebleu's tokenizer_13a (mteval-v13a): "<skipped>"
 * removed, "-\n" joined, "\n" to space, &quot; &amp; &lt; &gt; unescaped, the four punctuation
 * regexes, whitespace collapsed (mt_bleu_tokenize shows the result). For each hypothesis, its
 * n-gram counts are clipped by the largest count of that n-gram in any one of its references;
 * the reference length is that of the reference closest in length (ties to the shorter). The
 * statistics are summed over the corpus, then
 *     BP = 1 if sys_len >= ref_len, exp(1 - ref_len/sys_len) if sys_len > 0, else 0;
 *     p_n = 100 correct_n / total_n, smoothed; BLEU = BP exp(mean over n of log p_n),
 * with log 0 taken as -9999999999 (so BLEU is 0), and BLEU 0 outright when nothing matched.
 *
 * ROUGE-L (rouge-score's default tokenizer): lowercase (str.lower()), every character outside
 * [a-z0-9] a separator, and with stem=true nltk's PorterStemmer() in its default NLTK_EXTENSIONS
 * mode (what rouge-score 0.1.2 constructs; not ORIGINAL_ALGORITHM) on tokens longer than 3
 * characters. LCS = the longest common subsequence of the token lists;
 *     precision = LCS / hyp tokens, recall = LCS / ref tokens, F = 2PR / (P + R),
 * all 0 when either side has no token. With several references the one with the highest F wins
 * (the first on ties; rouge-score's score_multi). The corpus figure is the plain MEAN of the
 * per-pair precision, recall and F, not a pooled LCS (rouge-score's BootstrapAggregator "mid" is
 * a resampled estimate of this mean, close to it but not equal).
 *
 * Cost: BLEU O(L log L) per segment of L tokens; ROUGE-L O(hyp tokens x ref tokens) time and
 * O(hyp tokens) memory per pair. */
#ifndef MEDTRAIN_TEXTMETRICS_H
#define MEDTRAIN_TEXTMETRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_BLEU_ORDER 4 /* n-grams 1..4 */

/* sacrebleu's smooth_method (Chen & Cherry 2014), for an n with no match (correct_n = 0):
 *   EXP    p_n = 100 / (2^k total_n) for the k-th such n (mteval-v13a's smoothing; the default)
 *   NONE   p_n = 0, so BLEU = 0
 *   FLOOR  p_n = 100 value / total_n (value 0.1 by default)
 *   ADD_K  for n >= 2, correct_n and total_n both get + value first (1 by default) */
typedef enum mt_bleu_smooth {
    MT_BLEU_SMOOTH_EXP = 0,
    MT_BLEU_SMOOTH_NONE,
    MT_BLEU_SMOOTH_FLOOR,
    MT_BLEU_SMOOTH_ADD_K,
} mt_bleu_smooth;

/* Zero-initialised (or NULL) is sacrebleu's default. */
typedef struct mt_bleu_opts {
    mt_bleu_smooth smooth;
    double smooth_value;  /* FLOOR and ADD_K: finite, >= 0; 0 means the default (0.1, 1) */
    bool lowercase;       /* lowercase (str.lower()) before tokenizing */
    bool effective_order; /* average over n up to the last n with total_n > 0 (sentence BLEU) */
} mt_bleu_opts;

/* BLEU's sufficient statistics. Integers that add: sum them over ranks (or shards) and score the
 * sum with mt_bleu_score to get the corpus BLEU of the union. */
typedef struct mt_bleu_stats {
    int64_t sys_len, ref_len; /* hypothesis tokens; closest-reference tokens */
    int64_t correct[MT_BLEU_ORDER], total[MT_BLEU_ORDER]; /* clipped matches, hypothesis n-grams */
} mt_bleu_stats;

/* sacrebleu's BLEUScore. Its counts/totals are stats.correct/total, except that for ADD_K
 * sacrebleu reports them after adding k (n >= 2); here they stay raw. */
typedef struct mt_bleu_result {
    double score;                     /* 0..100 */
    double precisions[MT_BLEU_ORDER]; /* percent, smoothed; all 0 when nothing matched */
    double bp;                        /* brevity penalty */
    mt_bleu_stats stats;
} mt_bleu_result;

/* Corpus BLEU of hyps[0..n) (n >= 1) against n_refs >= 1 reference streams: refs[r][i] is
 * reference r of hypothesis i (sacrebleu's layout: corpus_bleu(hyps, [refs[0], refs[1], ...])).
 * refs[r][i] may be NULL where hypothesis i has fewer references (sacrebleu's None); each
 * hypothesis needs at least one. opts NULL: defaults. */
mt_status mt_bleu_corpus(const char *const *hyps, size_t n, const char *const *const *refs,
                         int n_refs, const mt_bleu_opts *opts, mt_bleu_result *out);

/* Adds one hypothesis's statistics to *acc (untouched on failure): refs[0..n_refs) are ITS
 * references (NULL entries skipped, at least one not NULL); lowercase as mt_bleu_opts. */
mt_status mt_bleu_add_segment(const char *hyp, const char *const *refs, int n_refs, bool lowercase,
                              mt_bleu_stats *acc);

/* BLEU of summed statistics (sacrebleu's compute_bleu). */
mt_status mt_bleu_score(const mt_bleu_stats *stats, const mt_bleu_opts *opts, mt_bleu_result *out);

/* sacrebleu's preprocessing of one segment (lowercase, rstrip, tokenizer_13a): tokens joined by
 * single spaces, in *out (free with mt_free). */
mt_status mt_bleu_tokenize(const char *text, bool lowercase, char **out);

typedef struct mt_rouge_result {
    double precision, recall, f;
} mt_rouge_result;

/* ROUGE-L of hypothesis hyp against reference ref (rouge-score's score(ref, hyp)). */
mt_status mt_rouge_l(const char *hyp, const char *ref, bool stem, mt_rouge_result *out);

/* Against refs[0..n_refs) (NULL entries skipped, at least one not NULL): the reference with the
 * highest F, the first on ties (score_multi(refs, hyp)). */
mt_status mt_rouge_l_multi(const char *hyp, const char *const *refs, int n_refs, bool stem,
                           mt_rouge_result *out);

/* Mean precision, recall and F over the n >= 1 pairs (summed in order, divided by n), references
 * in mt_bleu_corpus's layout (refs[r][i], NULL where hypothesis i has fewer); per_pair: n
 * results, or NULL. */
mt_status mt_rouge_l_corpus(const char *const *hyps, size_t n, const char *const *const *refs,
                            int n_refs, bool stem, mt_rouge_result *mean,
                            mt_rouge_result *per_pair);

/* rouge-score's tokens of text (stemmed when stem), joined by single spaces, in *out (free with
 * mt_free). */
mt_status mt_rouge_tokenize(const char *text, bool stem, char **out);

#ifdef __cplusplus
}
#endif

#endif
