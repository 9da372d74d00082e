/* medtrain info PACK: what a pack holds, per split, and where it came from. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "medtrain/mem.h"
#include "medtrain/pack.h"

void mt_cmd_info_usage(FILE *out) {
    fprintf(out,
            "usage: medtrain info PACK.h5\n\n"
            "Prints a pack's image count per split, label prevalence per split (positives among\n"
            "known labels), image size and type, mask classes with their pixel share in a sample,\n"
            "and its provenance (format version, creator, creation time, input digest).\n");
}

/* Share of pixels per mask class over up to 64 images spread through the pack (multi-label:
 * the share of pixels inside each class; classes may overlap). */
static mt_status mask_shares(mt_pack *p, double *share) {
    const mt_pack_info *in = mt_pack_get_info(p);
    size_t px = (size_t)in->h * in->w;
    int planes = mt_pack_mask_planes(in);
    uint8_t *m = mt_alloc(px * (size_t)planes, "mask");
    if (!m) return MT_ERR_NOMEM;
    int64_t samples = in->n < 64 ? in->n : 64, total = 0;
    mt_status st = MT_OK;
    for (int64_t s = 0; st == MT_OK && s < samples; s++) {
        st = mt_pack_read_mask(p, s * in->n / samples, m);
        for (size_t i = 0; st == MT_OK && !in->mask_multilabel && i < px; i++)
            if (m[i] < in->n_mask_classes) share[m[i]]++;
        for (int c = 0; st == MT_OK && in->mask_multilabel && c < planes; c++)
            for (size_t i = 0; i < px; i++) share[c] += m[(size_t)c * px + i] != 0;
        total += (int64_t)px;
    }
    for (int c = 0; c < in->n_mask_classes; c++) share[c] = total ? share[c] / (double)total : 0;
    mt_free(m);
    return st;
}

mt_status mt_cmd_info(mt_comm *comm, int argc, char **argv) {
    if (mt_cli_wants_help(argc, argv, mt_cmd_info_usage)) return MT_OK;
    if (argc != 2 || argv[1][0] == '-')
        return mt_cli_usage_error(mt_cmd_info_usage, "info: give exactly one pack file");
    mt_pack *p;
    MT_TRY(mt_pack_open(argv[1], &p));
    const mt_pack_info *in = mt_pack_get_info(p);
    printf("%s: medtrain dataset pack, version %d\n", argv[1], in->version);
    printf("  created %s by %s\n", in->created, in->creator);
    printf("  input digest %s\n", in->input_digest);
    printf("  images: %lld, %dx%d %s\n", (long long)in->n, in->h, in->w, mt_dtype_name(in->dtype));
    printf("  splits: train %lld, val %lld, test %lld\n", (long long)in->split_n[0],
           (long long)in->split_n[1], (long long)in->split_n[2]);
    if (in->n_labels) {
        printf("  labels: %d  (positives / known, per split)\n", in->n_labels);
        printf("    %-24s %18s %18s %18s\n", "", "train", "val", "test");
        const float *lab = mt_pack_labels(p);
        for (int l = 0; l < in->n_labels; l++) {
            printf("    %-24.24s", in->label_names[l]);
            for (int s = 0; s < MT_SPLIT_COUNT; s++) {
                int64_t n, pos = 0, known = 0;
                const int64_t *idx = mt_pack_split(p, (mt_split)s, &n);
                for (int64_t i = 0; i < n; i++) {
                    float v = lab[idx[i] * in->n_labels + l];
                    if (!isnan(v)) known++, pos += v > 0.5f;
                }
                char cell[352];
                if (known)
                    snprintf(cell, sizeof cell, "%lld/%lld %5.1f%%", (long long)pos,
                             (long long)known, 100.0 * pos / known);
                else
                    snprintf(cell, sizeof cell, "-");
                printf(" %18s", cell);
            }
            printf("\n");
        }
    } else {
        printf("  labels: none\n");
    }
    mt_status st = MT_OK;
    if (in->n_mask_classes) {
        double *share = mt_calloc((size_t)in->n_mask_classes, sizeof *share, "mask shares");
        st = share ? mask_shares(p, share) : MT_ERR_NOMEM;
        if (st == MT_OK) {
            if (in->mask_multilabel)
                printf("  masks: multi-label, %d classes (pixel share in a sample; classes may "
                       "overlap):",
                       in->n_mask_classes);
            else
                printf("  masks: %d classes (pixel share in a sample):", in->n_mask_classes);
            for (int c = 0; c < in->n_mask_classes; c++)
                printf(" %s %.1f%%", in->mask_classes[c], 100 * share[c]);
            printf("\n");
        }
        mt_free(share);
    } else {
        printf("  masks: none\n");
    }
    mt_pack_close(p);
    return st;
}
