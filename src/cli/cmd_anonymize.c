/* medtrain anonymize: de-identified copies of a folder of DICOM files.
 *
 * Walks --src recursively (in sorted order, so that runs repeat), writes each DICOM file to the
 * same relative path under --out through mt_dicom_anonymize (PS3.15 basic profile attributes
 * removed or emptied, private tags removed, UIDs and patient IDs replaced by keyed hashes), and
 * skips every other file with one line naming it and the reason. The key decides the replacement
 * UIDs: the same key maps the same UID to the same new one in every run, so batches anonymized
 * apart still fit together. It is read from --key-file (made there, 32 random bytes, mode 0600,
 * when the file does not exist) and goes nowhere else. Runs on one process; it does not start MPI.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "medtrain/dicom.h"
#include "medtrain/fs.h"
#include "medtrain/timer.h"

enum { KEY_MIN = 32, KEY_MAX = 4096 };

typedef struct anon_job {
    const char *src, *out;
    uint8_t key[KEY_MAX];
    size_t key_n;
    bool strict;
    long written, skipped;
} anon_job;

void mt_cmd_anonymize_usage(FILE *out) {
    fprintf(out,
            "usage: medtrain anonymize --src DIR --out DIR [--key-file F] [--strict]\n\n"
            "Writes de-identified copies of every DICOM file under --src to the same relative\n"
            "path under --out: the attributes of the DICOM PS3.15 Basic Application Level\n"
            "Confidentiality Profile are removed or emptied (names, IDs, dates, institution,\n"
            "physicians, descriptions, device serial numbers, ...), private tags are removed,\n"
            "every instance/series/study UID becomes 2.25.<keyed hash> and the patient ID the\n"
            "first 16 hex digits of a keyed hash. Pixel data are copied unchanged (text burned\n"
            "into the pixels is not removed). Other files are skipped, one line each.\n\n"
            "  --src DIR       folder to read (recursively)\n"
            "  --out DIR       folder to write; must not lie inside --src\n"
            "  --key-file F    the secret key (32 or more bytes): the same key gives the same\n"
            "                  new UIDs in every run. Created with 32 random bytes (mode 0600)\n"
            "                  when F does not exist. Keep it secret and outside --out. Without\n"
            "                  it, a random key is used for this run only.\n"
            "  --strict        a file that cannot be anonymized ends the run (exit status 1)\n");
}

/* ---- the key --------------------------------------------------------------------------------- */

static mt_status random_bytes(uint8_t *buf, size_t n) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mt_fail(MT_ERR_IO, "/dev/urandom: cannot open: %s", strerror(errno));
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            close(fd);
            return mt_fail(MT_ERR_IO, "/dev/urandom: short read");
        }
        got += (size_t)r;
    }
    close(fd);
    return MT_OK;
}

/* Makes path (which must not exist) with KEY_MIN random bytes, readable by its owner only. */
static mt_status create_key(const char *path, anon_job *j) {
    MT_TRY(random_bytes(j->key, KEY_MIN));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return mt_fail(MT_ERR_IO, "%s: cannot create the key file: %s", path, strerror(errno));
    mt_status st = MT_OK;
    if (write(fd, j->key, KEY_MIN) != KEY_MIN || fsync(fd) != 0)
        st = mt_fail(MT_ERR_IO, "%s: cannot write the key file: %s", path, strerror(errno));
    if (close(fd) != 0 && st == MT_OK)
        st = mt_fail(MT_ERR_IO, "%s: cannot write the key file: %s", path, strerror(errno));
    if (st != MT_OK) {
        unlink(path);
        return st;
    }
    j->key_n = KEY_MIN;
    printf("anonymize: created key file %s (%d random bytes, mode 0600): keep it secret, and keep "
           "it to give the same UIDs in later runs\n",
           path, KEY_MIN);
    return MT_OK;
}

/* Reads the key from path, or creates it there when path does not exist. */
static mt_status load_key(const char *path, anon_job *j) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) return create_key(path, j);
    if (fd < 0)
        return mt_fail(MT_ERR_IO, "%s: cannot open the key file: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mt_fail(MT_ERR_IO, "%s: the key file is not a regular file", path);
    }
    ssize_t n = read(fd, j->key, KEY_MAX);
    int err = errno;
    close(fd);
    if (n < 0) return mt_fail(MT_ERR_IO, "%s: cannot read the key file: %s", path, strerror(err));
    if (n < KEY_MIN)
        return mt_fail(MT_ERR_ARG,
                       "%s: the key file holds %zd bytes; a key needs at least %d (remove the file "
                       "to have a new key made, which changes every new UID)",
                       path, n, KEY_MIN);
    j->key_n = (size_t)n;
    if (st.st_mode & 077)
        fprintf(stderr,
                "medtrain anonymize: warning: key file %s can be read by others (mode %04o); "
                "`chmod 600 %s`\n",
                path, (unsigned)(st.st_mode & 07777), path);
    return MT_OK;
}

/* ---- paths ----------------------------------------------------------------------------------- */

/* True when path is dir or lies inside it (both resolved). */
static bool inside(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 &&
           (path[n] == '\0' || path[n] == '/' || strcmp(dir, "/") == 0);
}

/* The resolved form of a key file's folder (the file itself may not exist yet). */
static bool resolve_parent(const char *file, char *out) {
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s", file) >= (int)sizeof dir) return false;
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    return realpath(dir, out) != NULL;
}

/* a/b, or just a or b when the other is empty. */
static mt_status join(char *out, size_t cap, const char *a, const char *b) {
    int n =
        a[0] && b[0] ? snprintf(out, cap, "%s/%s", a, b) : snprintf(out, cap, "%s", a[0] ? a : b);
    if (n < 0 || (size_t)n >= cap) return mt_fail(MT_ERR_ARG, "%s/%s: path too long", a, b);
    return MT_OK;
}

/* ---- the walk -------------------------------------------------------------------------------- */

static mt_status skip(anon_job *j, const char *path, const char *why) {
    if (j->strict)
        return mt_fail(MT_ERR_FORMAT, "%s: %s (--strict: a file was not anonymized)", path, why);
    printf("skipped %s: %s\n", path, why);
    j->skipped++;
    return MT_OK;
}

/* The reason in an error message that starts with "path: ". */
static const char *reason(const char *msg, const char *path) {
    size_t n = strlen(path);
    return strncmp(msg, path, n) == 0 && strncmp(msg + n, ": ", 2) == 0 ? msg + n + 2 : msg;
}

static mt_status anonymize_file(anon_job *j, const char *rel_dir, const char *src) {
    /* Unreadable sources are skipped; after this, an I/O error is about the output: fatal. */
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return skip(j, src, strerror(errno));
    close(fd);
    char out_dir[PATH_MAX], dst[PATH_MAX];
    MT_TRY(join(out_dir, sizeof out_dir, j->out, rel_dir));
    MT_TRY(join(dst, sizeof dst, out_dir, strrchr(src, '/') + 1));
    MT_TRY(mt_mkdir_p(out_dir));
    mt_status st = mt_dicom_anonymize(src, dst, j->key, j->key_n);
    if (st == MT_ERR_FORMAT || st == MT_ERR_UNSUPPORTED) {
        char why[MT_ERROR_MAX];
        snprintf(why, sizeof why, "%s", reason(mt_error_message(), src));
        return skip(j, src, why);
    }
    if (st != MT_OK) return st;
    j->written++;
    return MT_OK;
}

static int not_dot(const struct dirent *e) {
    return strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
}

/* Anonymizes everything under src/rel_dir into out/rel_dir. */
static mt_status walk(anon_job *j, const char *rel_dir, int depth) {
    char dir[PATH_MAX];
    MT_TRY(join(dir, sizeof dir, j->src, rel_dir));
    if (depth > 64) return skip(j, dir, "folders nested more than 64 deep");
    struct dirent **list = NULL;
    int n = scandir(dir, &list, not_dot, alphasort);
    if (n < 0) return skip(j, dir, strerror(errno));
    mt_status st = MT_OK;
    for (int i = 0; i < n && st == MT_OK; i++) {
        char path[PATH_MAX], rel[PATH_MAX];
        struct stat ls, s;
        st = join(path, sizeof path, dir, list[i]->d_name);
        if (st == MT_OK) st = join(rel, sizeof rel, rel_dir, list[i]->d_name);
        if (st != MT_OK) break;
        if (lstat(path, &ls) != 0 || stat(path, &s) != 0)
            st = skip(j, path, strerror(errno));
        else if (S_ISDIR(s.st_mode) && S_ISLNK(ls.st_mode))
            st = skip(j, path, "a symbolic link to a folder (not followed)");
        else if (S_ISDIR(s.st_mode))
            st = walk(j, rel, depth + 1);
        else if (!S_ISREG(s.st_mode))
            st = skip(j, path, "not a regular file");
        else
            st = anonymize_file(j, rel_dir, path);
    }
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
    return st;
}

/* ---- the command ----------------------------------------------------------------------------- */

/* Checks the folders and the key file's place: output outside the input, key outside the output. */
static mt_status check_places(const anon_job *j, const char *key_file) {
    char src[PATH_MAX], out[PATH_MAX], key_dir[PATH_MAX];
    struct stat st;
    if (stat(j->src, &st) != 0 || !S_ISDIR(st.st_mode))
        return mt_cli_usage_error(mt_cmd_anonymize_usage, "anonymize: --src %s: not a folder",
                                  j->src);
    MT_TRY(mt_mkdir_p(j->out));
    if (!realpath(j->src, src) || !realpath(j->out, out))
        return mt_fail(MT_ERR_IO, "anonymize: cannot resolve %s or %s: %s", j->src, j->out,
                       strerror(errno));
    if (inside(out, src))
        return mt_cli_usage_error(mt_cmd_anonymize_usage,
                                  "anonymize: --out %s lies inside --src %s", j->out, j->src);
    if (key_file && resolve_parent(key_file, key_dir) && inside(key_dir, out))
        return mt_cli_usage_error(mt_cmd_anonymize_usage,
                                  "anonymize: --key-file %s lies inside --out %s: the key would "
                                  "travel with the data",
                                  key_file, j->out);
    return MT_OK;
}

mt_status mt_cmd_anonymize(mt_comm *comm, int argc, char **argv) {
    (void)comm;
    if (mt_cli_wants_help(argc, argv, mt_cmd_anonymize_usage)) return MT_OK;
    static anon_job j; /* the key lives here: zeroed when done */
    memset(&j, 0, sizeof j);
    const char *key_file = NULL;
    static const struct option opts[] = {{"src", required_argument, 0, 's'},
                                         {"out", required_argument, 0, 'o'},
                                         {"key-file", required_argument, 0, 'k'},
                                         {"strict", no_argument, 0, 'S'},
                                         {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            j.src = optarg;
            break;
        case 'o':
            j.out = optarg;
            break;
        case 'k':
            key_file = optarg;
            break;
        case 'S':
            j.strict = true;
            break;
        default:
            return mt_cli_usage_error(mt_cmd_anonymize_usage, "anonymize: unknown option '%s'",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return mt_cli_usage_error(mt_cmd_anonymize_usage, "anonymize: unexpected argument '%s'",
                                  argv[optind]);
    if (!j.src || !j.out)
        return mt_cli_usage_error(mt_cmd_anonymize_usage,
                                  "anonymize: --src and --out are required");

    MT_TRY(check_places(&j, key_file));
    mt_status st;
    if (key_file) {
        st = load_key(key_file, &j);
    } else {
        st = random_bytes(j.key, KEY_MIN);
        j.key_n = KEY_MIN;
        if (st == MT_OK)
            printf("anonymize: no --key-file: a random key for this run only, so new UIDs and "
                   "patient IDs will not match those of other runs\n");
    }
    double t0 = mt_now();
    if (st == MT_OK) st = walk(&j, "", 0);
    explicit_bzero(j.key, sizeof j.key);
    if (st != MT_OK) return st;
    printf("anonymize: %ld file%s written to %s, %ld skipped, %.1f s\n", j.written,
           j.written == 1 ? "" : "s", j.out, j.skipped, mt_now() - t0);
    return MT_OK;
}
