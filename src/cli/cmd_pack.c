/* medtrain pack: DICOM folders and/or PNG/JPEG manifests -> one PHI-free HDF5 pack.
 *
 * Every rank builds the same sorted source list. Files are processed in rounds: round r hands
 * files [r*W*B, (r+1)*W*B) out in blocks of B, rank k taking block k, and then the ranks append
 * their results collectively in rank order, so the pack holds images in source order whatever the
 * rank count (1 and 2 ranks give the same pack). A file that cannot be used is skipped with one
 * line naming it and the reason, and counted (--strict makes it fatal). Patient identifiers become
 * keyed hashes (HMAC-SHA256 with the site key) for case ids and the patient-level split; no
 * header value is logged or stored. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build_info.h"
#include "cli.h"
#include "medtrain/dicom.h"
#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/image.h"
#include "medtrain/log.h"
#include "medtrain/mem.h"
#include "medtrain/pack.h"
#include "medtrain/progress.h"
#include "medtrain/sources.h"

enum { KEY_BYTES = 32, MAX_INPUTS = 64 };

typedef struct pack_opts {
    const char *out, *dicom[MAX_INPUTS], *manifest[MAX_INPUTS], *labels, *masks, *key_file;
    int n_dicom, n_manifest;
    char mask_classes[512];
    bool mask_classes_given, multilabel; /* --mask-classes given; --mask-layout multilabel */
    int size, round;
    mt_dtype dtype;
    mt_square_mode square;
    int split[3];
    mt_window_opts window;
    bool strict, overwrite;
} pack_opts;

/* Why a file was skipped; counted per kind in the summary. */
enum { SKIP_UNREADABLE, SKIP_NOT_IMAGE, SKIP_DECODE, SKIP_MASK, SKIP_KINDS };
static const char *skip_names[SKIP_KINDS] = {
    "unreadable or not DICOM/PNG/JPEG", "no image (SOP class)",
    "image could not be decoded or processed", "mask problem"};

typedef struct job {
    pack_opts o;
    mt_comm *comm;
    uint8_t key[KEY_BYTES];
    mt_source_list src;
    mt_label_table *labels; /* or NULL */
    int n_labels;
    const char *const *label_names;
    int n_mask_classes;
    char *mask_class_names[64];
    int64_t skipped[SKIP_KINDS], unlabelled;
} job;

void mt_cmd_pack_usage(FILE *out) {
    fprintf(
        out,
        "usage: medtrain pack --out PACK.h5 (--dicom DIR | --manifest FILE)... [options]\n\n"
        "Turns a folder of DICOM studies (searched recursively) and/or manifest.json files of\n"
        "PNG/JPEG images into one HDF5 pack with no identifying header values. Run it under\n"
        "mpirun -np N (or srun) to divide the files across ranks; the pack is the same.\n\n"
        "  --dicom DIR          a folder of DICOM files (repeatable)\n"
        "  --manifest FILE      [{\"image_path\",\"case_id\",\"modality\",\"labels\":{...}}] "
        "(repeatable)\n"
        "  --labels CSV         labels: key column path | sop_instance_uid | patient_id, then one\n"
        "                       column per label with 1, 0, -1 or blank (-1/blank: unknown)\n"
        "  --masks DIR          PNG masks with the images' basenames (class index per pixel)\n"
        "  --mask-classes LIST  names of the mask classes (default background,lung,heart)\n"
        "  --mask-layout index|multilabel   index (default): DIR/<image>.png holds a class\n"
        "                       index per pixel; multilabel: DIR/<class>/<image>.png per class\n"
        "                       of --mask-classes (required then; no background class), nonzero\n"
        "                       = inside, so classes may overlap\n"
        "  --size N             output images are N x N (default 512)\n"
        "  --dtype u8|u16       stored pixel type (default u8)\n"
        "  --square crop|pad    centre-crop or pad to square before resizing (default crop)\n"
        "  --split A,B,C        train,val,test percentages by patient (default 80,10,10)\n"
        "  --window header|percentile   VOI window: the header's (with a percentile fallback)\n"
        "                       or always percentiles (default header)\n"
        "  --percentiles LO,HI  percentile window (default 0.5,99.5)\n"
        "  --key-file FILE      site key for pseudonymous case ids and splits; created (mode 600)\n"
        "                       when absent; never stored in the pack (default "
        "~/.medtrain/site.key)\n"
        "  --strict             a file that cannot be packed is an error, not a skip\n"
        "  --overwrite          replace an existing pack\n"
        "  --round N            files per rank per round (default 16)\n");
}

/* ---- options ------------------------------------------------------------------------------- */

static mt_status parse_ints(const char *text, int *v, int n, const char *opt) {
    const char *p = text;
    for (int i = 0; i < n; i++) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || (i < n - 1 && *end != ',') || (i == n - 1 && *end) || x < 0 || x > 100000)
            return mt_cli_usage_error(mt_cmd_pack_usage,
                                      "%s %s: expected %d comma-separated numbers", opt, text, n);
        v[i] = (int)x;
        p = end + 1;
    }
    return MT_OK;
}

static mt_status parse_options(int argc, char **argv, pack_opts *o) {
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"dicom", required_argument, 0, 'd'},
                                         {"manifest", required_argument, 0, 'm'},
                                         {"labels", required_argument, 0, 'l'},
                                         {"masks", required_argument, 0, 'k'},
                                         {"mask-classes", required_argument, 0, 'c'},
                                         {"mask-layout", required_argument, 0, 'L'},
                                         {"size", required_argument, 0, 's'},
                                         {"dtype", required_argument, 0, 't'},
                                         {"square", required_argument, 0, 'q'},
                                         {"split", required_argument, 0, 'p'},
                                         {"window", required_argument, 0, 'w'},
                                         {"percentiles", required_argument, 0, 'P'},
                                         {"key-file", required_argument, 0, 'K'},
                                         {"strict", no_argument, 0, 'S'},
                                         {"overwrite", no_argument, 0, 'O'},
                                         {"round", required_argument, 0, 'r'},
                                         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->size = 512, o->round = 16, o->dtype = MT_U8, o->square = MT_SQUARE_CROP;
    o->split[0] = 80, o->split[1] = 10, o->split[2] = 10;
    o->window = (mt_window_opts){true, 0.5, 99.5};
    snprintf(o->mask_classes, sizeof o->mask_classes, "background,lung,heart");
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            o->out = optarg;
            break;
        case 'd':
            if (o->n_dicom == MAX_INPUTS)
                return mt_cli_usage_error(mt_cmd_pack_usage, "too many --dicom");
            o->dicom[o->n_dicom++] = optarg;
            break;
        case 'm':
            if (o->n_manifest == MAX_INPUTS)
                return mt_cli_usage_error(mt_cmd_pack_usage, "too many --manifest");
            o->manifest[o->n_manifest++] = optarg;
            break;
        case 'l':
            o->labels = optarg;
            break;
        case 'k':
            o->masks = optarg;
            break;
        case 'c':
            snprintf(o->mask_classes, sizeof o->mask_classes, "%s", optarg);
            o->mask_classes_given = true;
            break;
        case 'L':
            if (!strcmp(optarg, "index"))
                o->multilabel = false;
            else if (!strcmp(optarg, "multilabel"))
                o->multilabel = true;
            else
                return mt_cli_usage_error(mt_cmd_pack_usage,
                                          "--mask-layout %s: expected index or multilabel", optarg);
            break;
        case 's':
            MT_TRY(parse_ints(optarg, &o->size, 1, "--size"));
            if (o->size < 8 || o->size > 8192)
                return mt_cli_usage_error(mt_cmd_pack_usage, "--size %s: expected 8..8192", optarg);
            break;
        case 't':
            if (!strcmp(optarg, "u8"))
                o->dtype = MT_U8;
            else if (!strcmp(optarg, "u16"))
                o->dtype = MT_U16;
            else
                return mt_cli_usage_error(mt_cmd_pack_usage, "--dtype %s: expected u8 or u16",
                                          optarg);
            break;
        case 'q':
            if (!strcmp(optarg, "crop"))
                o->square = MT_SQUARE_CROP;
            else if (!strcmp(optarg, "pad"))
                o->square = MT_SQUARE_PAD;
            else
                return mt_cli_usage_error(mt_cmd_pack_usage, "--square %s: expected crop or pad",
                                          optarg);
            break;
        case 'p':
            MT_TRY(parse_ints(optarg, o->split, 3, "--split"));
            if (o->split[0] + o->split[1] + o->split[2] != 100)
                return mt_cli_usage_error(mt_cmd_pack_usage,
                                          "--split %s: percentages must add up to 100", optarg);
            break;
        case 'w':
            if (!strcmp(optarg, "header"))
                o->window.use_header = true;
            else if (!strcmp(optarg, "percentile"))
                o->window.use_header = false;
            else
                return mt_cli_usage_error(mt_cmd_pack_usage,
                                          "--window %s: expected header or percentile", optarg);
            break;
        case 'P': {
            char *end;
            o->window.pct_lo = strtod(optarg, &end);
            o->window.pct_hi = *end == ',' ? strtod(end + 1, &end) : -1;
            if (*end || o->window.pct_lo < 0 || o->window.pct_hi > 100 ||
                o->window.pct_lo >= o->window.pct_hi)
                return mt_cli_usage_error(
                    mt_cmd_pack_usage, "--percentiles %s: expected LO,HI with 0 <= LO < HI <= 100",
                    optarg);
            break;
        }
        case 'K':
            o->key_file = optarg;
            break;
        case 'S':
            o->strict = true;
            break;
        case 'O':
            o->overwrite = true;
            break;
        case 'r':
            MT_TRY(parse_ints(optarg, &o->round, 1, "--round"));
            if (o->round < 1) return mt_cli_usage_error(mt_cmd_pack_usage, "--round must be >= 1");
            break;
        default:
            return mt_cli_usage_error(mt_cmd_pack_usage, "pack: unknown option '%s'",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return mt_cli_usage_error(mt_cmd_pack_usage, "pack: unexpected argument '%s'",
                                  argv[optind]);
    if (!o->out) return mt_cli_usage_error(mt_cmd_pack_usage, "pack: --out is required");
    if (!o->n_dicom && !o->n_manifest)
        return mt_cli_usage_error(mt_cmd_pack_usage,
                                  "pack: give at least one --dicom DIR or --manifest FILE");
    if (o->multilabel && !o->masks)
        return mt_cli_usage_error(mt_cmd_pack_usage,
                                  "pack: --mask-layout multilabel needs --masks DIR");
    /* The default classes are the index layout's (with a background): name them explicitly. */
    if (o->multilabel && !o->mask_classes_given)
        return mt_cli_usage_error(mt_cmd_pack_usage,
                                  "pack: --mask-layout multilabel needs --mask-classes naming the "
                                  "structures (the folders under --masks), e.g. "
                                  "right_lung,left_lung,heart");
    return MT_OK;
}

/* ---- the site key ----------------------------------------------------------------------- */

/* Rank 0 reads the key (creating it, mode 0600, when absent) and broadcasts it. */
static mt_status load_key(job *j) {
    char path[4096];
    if (j->o.key_file)
        snprintf(path, sizeof path, "%s", j->o.key_file);
    else
        snprintf(path, sizeof path, "%s/.medtrain/site.key", getenv("HOME") ? getenv("HOME") : ".");
    mt_status st = MT_OK;
    if (mt_comm_rank(j->comm) == 0) {
        int fd = open(path, O_RDONLY);
        if (fd < 0 && errno == ENOENT) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", path);
            char *slash = strrchr(dir, '/');
            if (slash && slash != dir) *slash = '\0', st = mt_mkdir_p(dir);
            int rnd = open("/dev/urandom", O_RDONLY);
            uint8_t fresh[KEY_BYTES];
            if (st == MT_OK && (rnd < 0 || read(rnd, fresh, KEY_BYTES) != KEY_BYTES))
                st = mt_fail(MT_ERR_IO, "cannot read /dev/urandom to make a site key");
            if (rnd >= 0) close(rnd);
            int w = st == MT_OK ? open(path, O_WRONLY | O_CREAT | O_EXCL, 0600) : -1;
            if (st == MT_OK && (w < 0 || write(w, fresh, KEY_BYTES) != KEY_BYTES || fsync(w) != 0))
                st =
                    mt_fail(MT_ERR_IO, "%s: cannot create the site key: %s", path, strerror(errno));
            if (w >= 0) close(w);
            if (st == MT_OK) {
                MT_WARN("created a new site key %s: keep it private and keep it; the same key "
                        "gives the "
                        "same case ids and splits next time",
                        path);
                fd = open(path, O_RDONLY);
            }
        }
        if (st == MT_OK && fd < 0)
            st = mt_fail(MT_ERR_IO, "%s: cannot read the site key: %s", path, strerror(errno));
        struct stat sb;
        if (st == MT_OK && fstat(fd, &sb) == 0 && (sb.st_mode & 077))
            MT_WARN("%s: the site key is readable by others (mode %03o): chmod 600 it", path,
                    (unsigned)(sb.st_mode & 0777));
        if (st == MT_OK && read(fd, j->key, KEY_BYTES) != KEY_BYTES)
            st = mt_fail(MT_ERR_FORMAT, "%s: a site key needs at least %d bytes", path, KEY_BYTES);
        if (fd >= 0) close(fd);
    }
    st = mt_comm_agree(j->comm, st);
    if (st == MT_OK) st = mt_comm_broadcast(j->comm, j->key, KEY_BYTES, 0);
    return st;
}

/* HMAC(key, domain + id): the same patient gets the same value for the same key. */
static mt_status keyed(const job *j, const char *domain, const char *id,
                       uint8_t out[MT_SHA256_BYTES]) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s:%s", domain, id);
    return mt_hmac_sha256(j->key, KEY_BYTES, buf,
                          (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1), out);
}

static mt_split split_of(const job *j, const uint8_t h[MT_SHA256_BYTES]) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | h[i];
    int bucket = (int)(v % 10000); /* 0.01 % steps */
    if (bucket < j->o.split[0] * 100) return MT_SPLIT_TRAIN;
    if (bucket < (j->o.split[0] + j->o.split[1]) * 100) return MT_SPLIT_VAL;
    return MT_SPLIT_TEST;
}

/* ---- one file ----------------------------------------------------------------------------- */

/* Decoder libraries (GDCM is built with assertions on) may abort on a damaged file that slipped
 * past our checks. Then the last words name the file, so the user can move it aside. */
static const char *volatile current_file;

static void on_crash(int sig) {
    const char *f = current_file;
    static const char a[] = "medtrain pack: crashed while reading ",
                      b[] = "\n  (a damaged file the decoder library could not handle: move it "
                            "aside and run again)\n";
    if (f) {
        ssize_t r = write(STDERR_FILENO, a, sizeof a - 1);
        r = write(STDERR_FILENO, f, strlen(f));
        r = write(STDERR_FILENO, b, sizeof b - 1);
        (void)r;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

typedef struct work {
    void *pixels;
    float *labels;
    uint8_t *mask;
    mt_pack_meta meta;
} work;

/* A skip: logs the reason on this rank (the message names the file) and counts it; fatal under
 * --strict. */
static mt_status skip(job *j, int kind) {
    j->skipped[kind]++;
    mt_log_rank(MT_LOG_WARN, "skipped %s", mt_error_text());
    return j->o.strict ? mt_error_wrap(MT_ERR_FORMAT, "--strict: ") : MT_OK;
}

static const char *basename_of(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* One mask PNG (the image's size, rows x cols), squared and resized like the image into out
 * (size x size, nearest). binary: a multi-label plane, nonzero -> 1; else class indices, each
 * below the number of classes. */
static mt_status fit_mask(job *j, const char *path, int rows, int cols, bool binary, uint8_t *out) {
    uint8_t *m = NULL, *sq = NULL;
    int h = 0, w = 0, side = 0;
    MT_TRY(mt_png_read_u8(path, &m, &h, &w));
    mt_status st = MT_OK;
    if (h != rows || w != cols)
        st = mt_fail(MT_ERR_FORMAT, "%s: mask is %dx%d, the image %dx%d", path, w, h, cols, rows);
    for (size_t i = 0; st == MT_OK && i < (size_t)h * w; i++) {
        if (binary)
            m[i] = m[i] != 0;
        else if (m[i] >= j->n_mask_classes)
            st = mt_fail(MT_ERR_FORMAT, "%s: pixel class %d, but --mask-classes names %d classes",
                         path, m[i], j->n_mask_classes);
    }
    if (st == MT_OK) st = mt_mask_square(m, h, w, j->o.square, &sq, &side);
    if (st == MT_OK) st = mt_mask_resize(sq, side, side, j->o.size, j->o.size, out);
    mt_free(m);
    mt_free(sq);
    return st;
}

/* The mask for src, squared and resized like the image: MASKS/<basename without extension>.png
 * (class indices), or with --mask-layout multilabel one plane per class from
 * MASKS/<class>/<basename>.png into out + c * size * size. *bad: the mask (not memory) failed. */
static mt_status load_mask(job *j, const mt_source *src, int rows, int cols, uint8_t *out,
                           bool *bad) {
    char path[4096], base[1024];
    snprintf(base, sizeof base, "%s", basename_of(src->rel));
    char *dot = strrchr(base, '.');
    if (dot) *dot = '\0';
    *bad = true;
    if (!j->o.multilabel) {
        snprintf(path, sizeof path, "%s/%s.png", j->o.masks, base);
        if (!mt_path_exists(path)) return mt_fail(MT_ERR_FORMAT, "%s: no mask %s", src->path, path);
        MT_TRY(fit_mask(j, path, rows, cols, false, out));
    } else {
        size_t px = (size_t)j->o.size * j->o.size;
        for (int c = 0; c < j->n_mask_classes; c++) {
            snprintf(path, sizeof path, "%s/%s/%s.png", j->o.masks, j->mask_class_names[c], base);
            if (!mt_path_exists(path))
                return mt_fail(MT_ERR_FORMAT, "%s: no mask %s (class %s)", src->path, path,
                               j->mask_class_names[c]);
            MT_TRY(fit_mask(j, path, rows, cols, true, out + (size_t)c * px));
        }
    }
    *bad = false;
    return MT_OK;
}

/* Reads, processes and describes one source into w. Returns MT_OK with *skipped set when the file
 * is skipped (already logged and counted), or an error that ends the job. */
static mt_status process(job *j, const mt_source *src, work *w, bool *skipped) {
    *skipped = false;
    mt_dicom_image d = {0};
    mt_image img = {0}, sq = {0}, out = {0};
    const char *patient = NULL;
    char patient_buf[80];
    double spacing[2] = {NAN, NAN};
    int rows = 0, cols = 0, kind = -1;
    mt_status st;
    memset(&w->meta, 0, sizeof w->meta);

    if (src->dicom) {
        st = mt_dicom_read(src->path, &d);
        if (st != MT_OK)
            kind = st == MT_ERR_NOMEM ? -1
                                      : (st == MT_ERR_UNSUPPORTED ? SKIP_DECODE : SKIP_UNREADABLE);
        if (st == MT_OK && !mt_dicom_is_image_sop_class(d.sop_class_uid)) {
            st = mt_fail(MT_ERR_FORMAT, "%s: not an image this trainer uses (SOP class %s)",
                         src->path, d.sop_class_uid);
            kind = SKIP_NOT_IMAGE;
        }
        if (st == MT_OK) {
            st = mt_image_from_dicom(&d, &j->o.window, &img, NULL);
            if (st != MT_OK) kind = SKIP_DECODE, mt_error_wrap(st, "%s: ", src->path);
        }
        if (st == MT_OK) {
            rows = d.rows, cols = d.cols;
            snprintf(w->meta.modality, sizeof w->meta.modality, "%s", d.modality);
            snprintf(w->meta.view, sizeof w->meta.view, "%s", d.view_position);
            if (d.has_spacing) spacing[0] = d.pixel_spacing[0], spacing[1] = d.pixel_spacing[1];
            /* The patient identifies the case; a file without one is its own case. */
            snprintf(patient_buf, sizeof patient_buf, "%s",
                     d.patient_id[0] ? d.patient_id : d.sop_instance_uid);
            patient = patient_buf;
        }
    } else {
        st = mt_image_read_file(src->path, &img);
        if (st != MT_OK) kind = st == MT_ERR_NOMEM ? -1 : SKIP_UNREADABLE;
        if (st == MT_OK) {
            rows = img.h, cols = img.w;
            snprintf(w->meta.modality, sizeof w->meta.modality, "%s",
                     src->modality ? src->modality : "");
            patient = src->case_id;
        }
    }
    int off_y = 0, off_x = 0;
    if (st == MT_OK) {
        st = mt_image_square(&img, j->o.square, 0.0f, &sq, &off_y, &off_x);
        if (st == MT_OK) st = mt_image_resize(&sq, j->o.size, j->o.size, &out);
        if (st != MT_OK)
            kind = st == MT_ERR_NOMEM ? -1 : SKIP_DECODE, mt_error_wrap(st, "%s: ", src->path);
    }
    if (st == MT_OK) {
        if (j->o.dtype == MT_U16)
            mt_image_to_u16(&out, w->pixels);
        else
            mt_image_to_u8(&out, w->pixels);
        double scale = (double)sq.h / j->o.size; /* source pixels per output pixel */
        w->meta.pixel_spacing[0] = (float)(spacing[0] * scale);
        w->meta.pixel_spacing[1] = (float)(spacing[1] * scale);
    }
    if (st == MT_OK && j->o.masks) {
        bool bad = false;
        st = load_mask(j, src, rows, cols, w->mask, &bad);
        if (st != MT_OK) kind = bad && st != MT_ERR_NOMEM ? SKIP_MASK : -1;
    }
    uint8_t h[MT_SHA256_BYTES];
    if (st == MT_OK) st = keyed(j, "case", patient, h);
    if (st == MT_OK) {
        mt_hex(h, 16, w->meta.case_id); /* 128 bits: 32 hex characters */
        st = keyed(j, "split", patient, h);
    }
    if (st == MT_OK) w->meta.split = split_of(j, h);
    if (st == MT_OK) st = mt_sha256_file(src->path, w->meta.source_digest);

    /* Labels: the CSV row for this file (by path, SOP instance UID or patient), else the
     * manifest's, else unknown. */
    if (st == MT_OK) {
        const float *row = NULL;
        if (j->labels) {
            mt_label_key k = mt_labels_key(j->labels);
            const char *key = k == MT_KEY_PATH      ? src->rel
                              : k == MT_KEY_SOP_UID ? d.sop_instance_uid
                                                    : patient;
            row = key && key[0] ? mt_labels_find(j->labels, key) : NULL;
            for (int i = 0; i < j->n_labels; i++) w->labels[i] = row ? row[i] : NAN;
        } else {
            row = src->labels;
            for (int i = 0; i < j->n_labels; i++)
                w->labels[i] = row && i < src->n_labels ? row[i] : NAN;
        }
        if (!row && j->n_labels) j->unlabelled++;
    }
    mt_dicom_image_free(&d);
    mt_image_free(&img);
    mt_image_free(&sq);
    mt_image_free(&out);
    if (st != MT_OK && kind >= 0) {
        *skipped = true;
        return skip(j, kind);
    }
    return st;
}

/* ---- rounds --------------------------------------------------------------------------------- */

static mt_status run_rounds(job *j, mt_pack_writer *wr) {
    int rank = mt_comm_rank(j->comm), world = mt_comm_world(j->comm), B = j->o.round;
    size_t px = (size_t)j->o.size * j->o.size, pxb = px * (j->o.dtype == MT_U16 ? 2 : 1);
    int planes = j->o.multilabel ? j->n_mask_classes : 1;
    work *w = mt_calloc((size_t)B, sizeof *w, "pack round");
    mt_pack_item *items = mt_calloc((size_t)B, sizeof *items, "pack items");
    mt_status st = w && items ? MT_OK : MT_ERR_NOMEM;
    for (int i = 0; st == MT_OK && i < B; i++) {
        w[i].pixels = mt_alloc(pxb, "packed image");
        w[i].labels = mt_alloc(sizeof(float) * (size_t)(j->n_labels ? j->n_labels : 1), "labels");
        w[i].mask = j->o.masks ? mt_alloc(px * (size_t)planes, "packed mask") : NULL;
        if (!w[i].pixels || !w[i].labels || (j->o.masks && !w[i].mask)) st = MT_ERR_NOMEM;
    }
    st = mt_comm_agree(j->comm, st);
    int64_t per_round = (int64_t)B * world, rounds = (j->src.n + per_round - 1) / per_round;
    mt_progress prog;
    mt_progress_begin(&prog, "pack", j->src.n, "file");
    signal(SIGABRT, on_crash);
    signal(SIGSEGV, on_crash);
    signal(SIGBUS, on_crash);
    for (int64_t r = 0; st == MT_OK && r < rounds; r++) {
        int n = 0;
        for (int b = 0; st == MT_OK && b < B; b++) {
            int64_t i = r * per_round + (int64_t)rank * B + b;
            if (i >= j->src.n) break;
            bool skipped;
            current_file = j->src.items[i].path;
            st = process(j, &j->src.items[i], &w[n], &skipped);
            current_file = NULL;
            if (st == MT_OK && !skipped) {
                items[n] = (mt_pack_item){w[n].pixels, w[n].labels, w[n].mask, w[n].meta};
                n++;
            }
        }
        st = mt_comm_agree(j->comm, st);
        if (st == MT_OK) st = mt_pack_writer_append(wr, items, n);
        int64_t done = (r + 1) * per_round;
        mt_progress_update(&prog, done < j->src.n ? done : j->src.n);
    }
    mt_progress_end(&prog);
    for (int i = 0; w && i < B; i++) mt_free(w[i].pixels), mt_free(w[i].labels), mt_free(w[i].mask);
    mt_free(w);
    mt_free(items);
    return st;
}

/* ---- the command ----------------------------------------------------------------------------- */

/* Multi-label class names are folder names under --masks: one path component each, distinct. */
static mt_status check_structure_names(const job *j) {
    if (j->n_mask_classes < 1)
        return mt_fail(MT_ERR_USAGE, "--mask-classes: name at least 1 structure");
    for (int c = 0; c < j->n_mask_classes; c++) {
        const char *nm = j->mask_class_names[c];
        if (strchr(nm, '/') || !strcmp(nm, ".") || !strcmp(nm, ".."))
            return mt_fail(MT_ERR_USAGE,
                           "--mask-classes: '%s' is not a folder name (multi-label classes name "
                           "the folders under --masks)",
                           nm);
        for (int k = 0; k < c; k++)
            if (!strcmp(nm, j->mask_class_names[k]))
                return mt_fail(MT_ERR_USAGE, "--mask-classes: '%s' is named twice", nm);
    }
    return MT_OK;
}

static mt_status load_inputs(job *j) {
    mt_status st = MT_OK;
    for (int i = 0; st == MT_OK && i < j->o.n_dicom; i++)
        st = mt_sources_add_dicom_dir(&j->src, j->o.dicom[i]);
    for (int i = 0; st == MT_OK && i < j->o.n_manifest; i++)
        st = mt_sources_add_manifest(&j->src, j->o.manifest[i]);
    if (st == MT_OK && j->o.labels) st = mt_labels_load(j->o.labels, &j->labels);
    if (st == MT_OK && j->src.n == 0) st = mt_fail(MT_ERR_ARG, "pack: the inputs hold no files");
    if (st != MT_OK) return st;
    if (j->labels) {
        j->n_labels = mt_labels_count(j->labels), j->label_names = mt_labels_names(j->labels);
    } else {
        j->n_labels = j->src.n_labels, j->label_names = (const char *const *)j->src.label_names;
    }
    if (j->o.masks) {
        char *save = NULL;
        for (char *t = strtok_r(j->o.mask_classes, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (j->n_mask_classes == 64)
                return mt_fail(MT_ERR_USAGE, "--mask-classes: at most 64 classes");
            j->mask_class_names[j->n_mask_classes++] = t;
        }
        if (!j->o.multilabel && j->n_mask_classes < 2)
            return mt_fail(MT_ERR_USAGE, "--mask-classes: name at least 2 classes");
        if (j->o.multilabel) MT_TRY(check_structure_names(j));
    }
    return MT_OK;
}

/* What, besides the files themselves, decides the pack's content: hashed into its input digest. */
static void digest_text(const job *j, char *buf, size_t n) {
    char labels_digest[MT_SHA256_HEX] = "none";
    if (j->o.labels && mt_sha256_file(j->o.labels, labels_digest) != MT_OK)
        snprintf(labels_digest, sizeof labels_digest, "?");
    /* Index masks keep the text they always had, so old and new packs of the same input agree. */
    char masks[600] = "no";
    if (j->o.masks) snprintf(masks, sizeof masks, "%s", j->o.multilabel ? "multilabel:" : "yes");
    for (int c = 0; j->o.masks && j->o.multilabel && c < j->n_mask_classes; c++) {
        size_t len = strlen(masks);
        snprintf(masks + len, sizeof masks - len, "%s%s", c ? "," : "", j->mask_class_names[c]);
    }
    snprintf(buf, n,
             "size=%d dtype=%s square=%s window=%s pct=%g,%g split=%d,%d,%d labels=%s masks=%s",
             j->o.size, mt_dtype_name(j->o.dtype), j->o.square == MT_SQUARE_CROP ? "crop" : "pad",
             j->o.window.use_header ? "header" : "percentile", j->o.window.pct_lo,
             j->o.window.pct_hi, j->o.split[0], j->o.split[1], j->o.split[2], labels_digest, masks);
}

/* A label row is used when any rank matched it: each rank looked up only its own files. */
static void merge_label_use(job *j) {
    int64_t n = mt_labels_rows(j->labels);
    int64_t *used = mt_alloc((size_t)(n ? n : 1) * sizeof *used, "label row marks");
    if (!used) return;
    for (int64_t i = 0; i < n; i++) used[i] = mt_labels_row_used(j->labels, i);
    if (mt_comm_allreduce_i64(j->comm, used, (size_t)n, MT_COMM_SUM) == MT_OK)
        for (int64_t i = 0; i < n; i++)
            if (used[i]) mt_labels_set_used(j->labels, i);
    mt_free(used);
}

static void summary(job *j, int64_t packed, const int64_t *split_n) {
    if (j->labels) merge_label_use(j);
    int64_t counts[SKIP_KINDS + 1];
    memcpy(counts, j->skipped, sizeof j->skipped);
    counts[SKIP_KINDS] = j->unlabelled;
    if (mt_comm_allreduce_i64(j->comm, counts, SKIP_KINDS + 1, MT_COMM_SUM) != MT_OK) return;
    if (mt_comm_rank(j->comm) != 0) return;
    int64_t skipped = 0;
    for (int k = 0; k < SKIP_KINDS; k++) skipped += counts[k];
    printf("packed %lld images into %s (train %lld, val %lld, test %lld); skipped %lld of %lld "
           "files\n",
           (long long)packed, j->o.out, (long long)split_n[0], (long long)split_n[1],
           (long long)split_n[2], (long long)skipped, (long long)j->src.n);
    for (int k = 0; k < SKIP_KINDS; k++)
        if (counts[k]) printf("  skipped, %s: %lld\n", skip_names[k], (long long)counts[k]);
    if (counts[SKIP_KINDS])
        printf("  images without labels (all unknown): %lld\n", (long long)counts[SKIP_KINDS]);
    if (j->labels && mt_labels_unused(j->labels))
        printf("  label rows that matched no packed image: %lld of %lld\n",
               (long long)mt_labels_unused(j->labels), (long long)mt_labels_rows(j->labels));
}

mt_status mt_cmd_pack(mt_comm *comm, int argc, char **argv) {
    if (mt_cli_wants_help(argc, argv, mt_cmd_pack_usage)) return MT_OK;
    job *j = mt_calloc(1, sizeof *j, "pack job");
    if (!j) return MT_ERR_NOMEM;
    j->comm = comm;
    mt_status st = parse_options(argc, argv, &j->o);
    if (st == MT_OK && mt_path_exists(j->o.out) && !j->o.overwrite)
        st = mt_fail(MT_ERR_USAGE, "%s already exists: choose another --out or add --overwrite",
                     j->o.out);
    if (st == MT_ERR_USAGE) { /* every rank parsed the same line: nobody waits */
        mt_free(j);
        return st;
    }
    st = mt_comm_agree(comm, st == MT_OK ? load_inputs(j) : st);
    if (st == MT_OK) st = load_key(j);
    mt_pack_writer *wr = NULL;
    char creator[128];
    snprintf(creator, sizeof creator, "medtrain %s (commit %s)", MT_BUILD_VERSION, MT_BUILD_COMMIT);
    mt_pack_spec spec = {.h = j->o.size,
                         .w = j->o.size,
                         .dtype = j->o.dtype,
                         .n_labels = j->n_labels,
                         .label_names = j->label_names,
                         .n_mask_classes = j->n_mask_classes,
                         .mask_classes = (const char *const *)j->mask_class_names,
                         .creator = creator,
                         .mask_multilabel = j->o.multilabel};
    if (st == MT_OK) st = mt_pack_writer_create(comm, j->o.out, &spec, &wr);
    if (st == MT_OK) {
        MT_INFO("packing %lld files on %d rank%s into %s (%dx%d %s)", (long long)j->src.n,
                mt_comm_world(comm), mt_comm_world(comm) > 1 ? "s" : "", j->o.out, j->o.size,
                j->o.size, mt_dtype_name(j->o.dtype));
        st = run_rounds(j, wr);
        char extra[1024];
        digest_text(j, extra, sizeof extra);
        mt_status fin = mt_pack_writer_finish(wr, st == MT_OK, extra);
        if (st == MT_OK) st = fin;
    }
    if (st == MT_OK) {
        mt_pack *p = NULL;
        st = mt_comm_agree(comm, mt_pack_open(j->o.out, &p));
        if (st == MT_OK) summary(j, mt_pack_get_info(p)->n, mt_pack_get_info(p)->split_n);
        mt_pack_close(p);
    }
    mt_sources_free(&j->src);
    mt_labels_free(j->labels);
    memset(j->key, 0, KEY_BYTES);
    mt_free(j);
    return st;
}
