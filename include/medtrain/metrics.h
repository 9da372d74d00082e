/* Classification metrics for multi-label models: per-label ROC AUC and ROC curves, confusion
 * counts, precision, recall and F1 at a threshold, the F1-maximising threshold, and macro/micro
 * aggregates. Every number equals scikit-learn's (tests/oracles/metrics_oracle.py is the oracle).
 *
 * Input is a score table: scores (n, L) row-major float, probabilities or logits (AUROC does not
 * care which; thresholds are on the same scale as the scores), and targets (n, L) row-major float:
 * 1 positive, 0 negative, NaN unknown. A (row, label) pair with a NaN target is skipped everywhere,
 * whatever its score. A pair with a known target must have a finite score: NaN or +-inf is an
 * MT_ERR_NUMERIC naming the label and row (sklearn rejects them too); a target other than 0, 1 or
 * NaN is an MT_ERR_ARG naming the label and row. -0.0 and +0.0 are the same score.
 *
 * A label is "undefined" for AUROC when its known targets hold one class only (or none): its AUROC
 * is NaN with defined = false, never an error. Macro AUROC averages the defined labels only.
 *
 * Prediction rule: a pair is predicted positive when score >= threshold, compared as floats (as
 * numpy compares a float32 array with a threshold). Precision, recall and F1 with a zero
 * denominator are 0 (sklearn's zero_division=0).
 *
 * Cost: one O(n) pass plus a radix sort of the known pairs per label (scratch of 8 bytes per row;
 * the micro AUROC in mt_metrics_summarize pools all labels: 8 bytes per (row, label)). */
#ifndef MEDTRAIN_METRICS_H
#define MEDTRAIN_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include "medtrain/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest number of rows per label, and of (row, label) pairs pooled; keeps counts and exact
 * integer arithmetic inside 64 bits. */
#define MT_METRICS_MAX_PAIRS ((INT64_C(1) << 31) - 1)

typedef struct mt_score_table {
    const float *scores;      /* (n, n_labels) row-major */
    const float *targets;     /* (n, n_labels) row-major: 1, 0 or NaN (unknown) */
    int64_t n;                /* rows; 0 is allowed (every label undefined) */
    int n_labels;             /* L >= 1 */
    const char *const *names; /* L names for messages ("label 'Edema' (3), row 17: ..."), or NULL */
} mt_score_table;

typedef struct mt_confusion {
    int64_t tp, fp, fn, tn; /* over known pairs only */
} mt_confusion;

typedef struct mt_auroc {
    double value;                    /* tie-aware: equal scores count 1/2; NaN when undefined */
    bool defined;                    /* both classes present among the known targets */
    int64_t n_pos, n_neg, n_unknown; /* known positives, known negatives, NaN targets */
} mt_auroc;

/* sklearn.metrics.roc_curve(drop_intermediate=False): point 0 is (0, 0) at threshold +inf, then
 * one point per distinct known score, descending. fpr is NaN throughout when the label has no
 * negatives, tpr when it has no positives (as sklearn). One allocation; free with
 * mt_roc_curve_free. */
typedef struct mt_roc_curve {
    int64_t n;         /* points: distinct known scores + 1 */
    double *fpr, *tpr; /* (n) fp / n_neg, tp / n_pos */
    float *thresholds; /* (n) +inf, then the distinct scores descending */
    int64_t *tp, *fp;  /* (n) counts of known pairs with score >= threshold */
} mt_roc_curve;

/* The threshold that maximises F1 over the label's distinct known scores (every cut where the
 * predictions change). Ties in F1 (exact, compared as integer ratios) go to the LARGEST threshold:
 * the fewest positive predictions. Undefined (threshold NaN, f1 0) when there is no known
 * positive, since F1 is 0 at every threshold. */
typedef struct mt_best_f1 {
    float threshold;
    double f1;
    mt_confusion counts; /* at threshold */
    bool defined;
} mt_best_f1;

typedef struct mt_label_metrics {
    mt_auroc auroc;
    mt_confusion counts; /* at the label's threshold */
    double precision, recall, f1;
} mt_label_metrics;

typedef struct mt_metrics_summary {
    double macro_auroc; /* mean over defined labels; NaN when none is */
    int n_auroc_defined, n_auroc_undefined;
    /* All known (row, label) pairs pooled: sklearn average='micro' without the unknown pairs. */
    mt_auroc micro_auroc;
    double macro_f1;           /* mean of all L per-label F1 (sklearn average='macro'); a label
                                  with no known positive counts 0 */
    double micro_f1;           /* F1 of micro_counts (sklearn average='micro') */
    mt_confusion micro_counts; /* summed over labels */
} mt_metrics_summary;

/* Ratios of counts; 0 where the denominator is 0. f1 = 2tp / (2tp + fp + fn). */
double mt_metrics_precision(mt_confusion c);
double mt_metrics_recall(mt_confusion c);
double mt_metrics_f1(mt_confusion c);

/* ROC AUC of one label (0 <= label < L): sklearn.metrics.roc_auc_score of its known pairs. */
mt_status mt_metrics_auroc(const mt_score_table *t, int label, mt_auroc *out);
/* The label's ROC curve; on failure *out is empty ({0}) and needs no free. */
mt_status mt_metrics_roc_curve(const mt_score_table *t, int label, mt_roc_curve *out);
void mt_roc_curve_free(mt_roc_curve *c);
/* Confusion counts of (score >= threshold) against the label's known targets. */
mt_status mt_metrics_confusion(const mt_score_table *t, int label, float threshold,
                               mt_confusion *out);
mt_status mt_metrics_best_f1(const mt_score_table *t, int label, mt_best_f1 *out);

/* Every label and the aggregates. thresholds: L values, one per label (fill it with 0.5, or 0 for
 * logits, for one common threshold; or with mt_best_f1 thresholds from a validation set).
 * per_label: L entries, or NULL when only the summary is wanted. */
mt_status mt_metrics_summarize(const mt_score_table *t, const float *thresholds,
                               mt_label_metrics *per_label, mt_metrics_summary *out);

#ifdef __cplusplus
}
#endif

#endif
