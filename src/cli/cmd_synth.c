/* medtrain synth: writes a synthetic chest X-ray cohort (DICOM files, lung and heart masks,
 * labels.csv) for demos and tests; see medtrain/synth.h for what the films show and how the files
 * vary. Runs on one process with OpenMP threads; it does not start MPI. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "medtrain/dicom.h"
#include "medtrain/synth.h"
#include "medtrain/timer.h"

void mt_cmd_synth_usage(FILE *out) {
    fprintf(out,
            "usage: medtrain synth --out DIR [--n N] [--size H,W] [--seed S] [--threads T]\n"
            "                      [--multilabel-masks]\n\n"
            "Writes a synthetic chest radiograph cohort: DIR/dicom/pat_*/study_*/img_*.dcm\n"
            "(patients with one or more studies; 8/12/16-bit, MONOCHROME1/2, every transfer\n"
            "syntax, fake PHI containing \"%s\" in every header), DIR/masks/img_*.png (0\n"
            "background, 1 lung, 2 heart) and DIR/labels.csv (%s, %s, %s,\n"
            "%s, %s, %s: 1, 0, -1 uncertain, blank unknown).\n\n"
            "  --out DIR      output directory; refused if it already holds a labels.csv\n"
            "  --n N          number of images (default 200)\n"
            "  --size H,W     image size in pixels (default: each image 1000..3000 per side,\n"
            "                 non-square)\n"
            "  --seed S       random seed; the same seed writes the same bytes (default 1)\n"
            "  --threads T    OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
            "  --syntax NAME  write every file in one transfer syntax (implicit-le, explicit-le,\n"
            "                 deflate, rle, jpeg-baseline, jpeg-lossless, jpeg-ls, jpeg2000);\n"
            "                 default: all of them in turn\n"
            "  --bits B       bits stored of every file: 8, 12 or 16 (default: varying)\n"
            "  --multilabel-masks  also write DIR/masks_ml/{%s,%s,%s}/img_*.png:\n"
            "                 one binary mask per structure (0 outside, 255 inside); the heart\n"
            "                 overlaps the lungs (medtrain pack --mask-layout multilabel)\n",
            MT_SYNTH_PHI_MARK, mt_synth_findings[0], mt_synth_findings[1], mt_synth_findings[2],
            mt_synth_findings[3], mt_synth_findings[4], mt_synth_findings[5],
            mt_synth_structures[0], mt_synth_structures[1], mt_synth_structures[2]);
}

static bool parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* "H,W" (or "HxW"), each side 16..16384. */
static bool parse_size(const char *s, int *h, int *w) {
    char buf[64];
    if (strlen(s) >= sizeof buf) return false;
    strcpy(buf, s);
    char *sep = strpbrk(buf, ",x");
    if (!sep) return false;
    *sep = '\0';
    long long a, b;
    if (!parse_int(buf, 16, 16384, &a) || !parse_int(sep + 1, 16, 16384, &b)) return false;
    *h = (int)a, *w = (int)b;
    return true;
}

mt_status mt_cmd_synth(mt_comm *comm, int argc, char **argv) {
    (void)comm;
    if (mt_cli_wants_help(argc, argv, mt_cmd_synth_usage)) return MT_OK;
    mt_synth_opts o = {.n = 200, .seed = 1};
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"n", required_argument, 0, 'n'},
                                         {"size", required_argument, 0, 's'},
                                         {"seed", required_argument, 0, 'S'},
                                         {"threads", required_argument, 0, 't'},
                                         {"syntax", required_argument, 0, 'x'},
                                         {"bits", required_argument, 0, 'b'},
                                         {"multilabel-masks", no_argument, 0, 'M'},
                                         {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    long long v;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            o.out = optarg;
            break;
        case 'n':
            if (!parse_int(optarg, 1, 1000000, &v))
                return mt_cli_usage_error(mt_cmd_synth_usage, "--n %s: expected 1..1000000",
                                          optarg);
            o.n = v;
            break;
        case 's':
            if (!parse_size(optarg, &o.h, &o.w))
                return mt_cli_usage_error(mt_cmd_synth_usage,
                                          "--size %s: expected H,W with each 16..16384 (e.g. "
                                          "512,512)",
                                          optarg);
            break;
        case 'S': {
            char *end = NULL;
            unsigned long long seed = strtoull(optarg, &end, 10);
            if (end == optarg || *end || optarg[0] == '-')
                return mt_cli_usage_error(mt_cmd_synth_usage,
                                          "--seed %s: expected a non-negative integer", optarg);
            o.seed = seed;
            break;
        }
        case 't':
            if (!parse_int(optarg, 1, 4096, &v))
                return mt_cli_usage_error(mt_cmd_synth_usage, "--threads %s: expected 1..4096",
                                          optarg);
            o.threads = (int)v;
            break;
        case 'x':
            if (mt_dicom_syntax_parse(optarg, &o.syntax) != MT_OK)
                return mt_cli_usage_error(mt_cmd_synth_usage, "--syntax: %s", mt_error_message());
            o.fixed_syntax = true;
            break;
        case 'b':
            if (!parse_int(optarg, 8, 16, &v) || (v != 8 && v != 12 && v != 16))
                return mt_cli_usage_error(mt_cmd_synth_usage, "--bits %s: expected 8, 12 or 16",
                                          optarg);
            o.bits = (int)v;
            break;
        case 'M':
            o.multilabel_masks = true;
            break;
        default:
            return mt_cli_usage_error(mt_cmd_synth_usage, "synth: unknown option '%s'",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return mt_cli_usage_error(mt_cmd_synth_usage, "synth: unexpected argument '%s'",
                                  argv[optind]);
    if (!o.out) return mt_cli_usage_error(mt_cmd_synth_usage, "synth: --out DIR is required");

    double t0 = mt_now();
    mt_synth_summary s;
    MT_TRY(mt_synth_cohort(&o, &s));
    double secs = mt_now() - t0;

    printf("synth: %lld images of %lld patients in %lld studies, seed %llu, %.1f s (%.1f img/s)\n",
           (long long)s.images, (long long)s.patients, (long long)s.studies,
           (unsigned long long)o.seed, secs, secs > 0 ? (double)s.images / secs : 0.0);
    if (o.h)
        printf("  size:      %d x %d\n", o.h, o.w);
    else
        printf("  size:      varying, 1000..3000 per side\n");
    printf("  syntaxes: ");
    for (int k = 0; k < MT_TS_COUNT; k++)
        printf(" %s %lld%s", mt_dicom_syntax_name((mt_dicom_syntax)k), (long long)s.per_syntax[k],
               k + 1 < MT_TS_COUNT ? "," : "\n");
    printf("  positives:");
    for (int f = 0; f < MT_SYNTH_N_FINDINGS; f++)
        printf(" %s %lld%s", mt_synth_findings[f], (long long)s.positives[f],
               f + 1 < MT_SYNTH_N_FINDINGS ? "," : "\n");
    printf("  wrote:     %s/dicom/, %s/masks/, %s%s%s/labels.csv\n", o.out, o.out,
           o.multilabel_masks ? o.out : "", o.multilabel_masks ? "/masks_ml/, " : "", o.out);
    fflush(stdout);
    return MT_OK;
}
