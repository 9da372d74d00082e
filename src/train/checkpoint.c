/* Checkpoint directories: written aside, checksummed, renamed into place, `latest` swapped
 * atomically, old ones pruned.
 *
 *   RUN/ckpt/step_00000500.tmp/   being written (a crash leaves only this; the next save removes
 * it) RUN/ckpt/step_00000500/       complete: model.safetensors, optim.safetensors, state.json
 *   RUN/ckpt/latest -> step_00000500
 *
 * state.json's "files" maps every other file of the directory to its SHA-256, so a truncated or
 * altered file is found before any of it is used. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "medtrain/fs.h"
#include "medtrain/hash.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "medtrain/train.h"

static mt_status remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) return MT_OK;
        return mt_fail(MT_ERR_IO, "%s: cannot open directory: %s", path, strerror(errno));
    }
    struct dirent *e;
    char p[PATH_MAX];
    mt_status st = MT_OK;
    while (st == MT_OK && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (unlink(p) != 0) st = mt_fail(MT_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
    if (st == MT_OK && rmdir(path) != 0)
        st = mt_fail(MT_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return st;
}

mt_status mt_ckpt_begin(const char *ckpt_root, int64_t step, char *tmp, size_t n) {
    MT_TRY(mt_mkdir_p(ckpt_root));
    snprintf(tmp, n, "%s/step_%08lld.tmp", ckpt_root, (long long)step);
    MT_TRY(remove_tree(tmp));
    if (mkdir(tmp, 0755) != 0)
        return mt_fail(MT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    return MT_OK;
}

static mt_status fsync_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mt_fail(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0) return mt_fail(MT_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    return MT_OK;
}

/* Checksums every regular file in dir into a JSON object {name: sha256}. */
static mt_status checksum_dir(const char *dir, cJSON *files) {
    DIR *d = opendir(dir);
    if (!d) return mt_fail(MT_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    struct dirent *e;
    char p[PATH_MAX], hex[MT_SHA256_HEX];
    mt_status st = MT_OK;
    while (st == MT_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "state.json")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        st = fsync_file(p);
        if (st == MT_OK) st = mt_sha256_file(p, hex);
        if (st == MT_OK) cJSON_AddStringToObject(files, e->d_name, hex);
    }
    closedir(d);
    return st;
}

/* Keeps the keep_last newest step_* directories; `latest` always survives. */
static mt_status prune(const char *ckpt_root, int keep_last) {
    if (keep_last <= 0) return MT_OK;
    DIR *d = opendir(ckpt_root);
    if (!d) return mt_fail(MT_ERR_IO, "%s: cannot open: %s", ckpt_root, strerror(errno));
    long long steps[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        long long s;
        char tail;
        if (sscanf(e->d_name, "step_%lld%c", &s, &tail) == 1) steps[n++] = s;
    }
    closedir(d);
    mt_status st = MT_OK;
    for (int i = 0; i < n && st == MT_OK; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++) newer += steps[j] > steps[i];
        if (newer < keep_last) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/step_%08lld", ckpt_root, steps[i]);
        st = remove_tree(p);
    }
    return st;
}

mt_status mt_ckpt_commit(const char *ckpt_root, int64_t step, const char *tmp, cJSON *state,
                         int keep_last) {
    cJSON *files = cJSON_CreateObject();
    mt_status st = checksum_dir(tmp, files);
    if (st != MT_OK) {
        cJSON_Delete(files);
        return st;
    }
    cJSON_DeleteItemFromObject(state, "files");
    cJSON_AddItemToObject(state, "files", files);
    char p[PATH_MAX], final[PATH_MAX], name[64];
    snprintf(p, sizeof p, "%s/state.json", tmp);
    MT_TRY(mt_json_write_file(p, state, 0));
    MT_TRY(mt_fsync_dir(tmp));
    snprintf(name, sizeof name, "step_%08lld", (long long)step);
    snprintf(final, sizeof final, "%s/%s", ckpt_root, name);
    MT_TRY(remove_tree(final)); /* a checkpoint of the same step from an earlier attempt */
    if (rename(tmp, final) != 0)
        return mt_fail(MT_ERR_IO, "%s -> %s: rename failed: %s", tmp, final, strerror(errno));
    /* latest: a new symlink beside it, renamed over the old one. */
    char link_tmp[PATH_MAX], link[PATH_MAX];
    snprintf(link_tmp, sizeof link_tmp, "%s/.latest.tmp", ckpt_root);
    snprintf(link, sizeof link, "%s/latest", ckpt_root);
    unlink(link_tmp);
    if (symlink(name, link_tmp) != 0)
        return mt_fail(MT_ERR_IO, "%s: cannot create symlink: %s", link_tmp, strerror(errno));
    if (rename(link_tmp, link) != 0)
        return mt_fail(MT_ERR_IO, "%s: cannot replace: %s", link, strerror(errno));
    MT_TRY(mt_fsync_dir(ckpt_root));
    return prune(ckpt_root, keep_last);
}

mt_status mt_ckpt_latest(const char *ckpt_root, char *dir, size_t n, bool *found) {
    char link[PATH_MAX], target[PATH_MAX];
    snprintf(link, sizeof link, "%s/latest", ckpt_root);
    ssize_t len = readlink(link, target, sizeof target - 1);
    *found = false;
    if (len < 0) {
        if (errno == ENOENT) return MT_OK;
        return mt_fail(MT_ERR_IO, "%s: cannot read link: %s", link, strerror(errno));
    }
    target[len] = '\0';
    if (target[0] == '/')
        snprintf(dir, n, "%s", target);
    else
        snprintf(dir, n, "%s/%s", ckpt_root, target);
    if (!mt_path_exists(dir))
        return mt_fail(MT_ERR_IO, "%s points to %s, which does not exist", link, dir);
    *found = true;
    return MT_OK;
}

mt_status mt_ckpt_open(const char *dir, cJSON **state) {
    char p[PATH_MAX], hex[MT_SHA256_HEX];
    snprintf(p, sizeof p, "%s/state.json", dir);
    cJSON *s;
    MT_TRY(mt_json_read_file(p, &s));
    cJSON *files = cJSON_GetObjectItemCaseSensitive(s, "files");
    if (!cJSON_IsObject(files)) {
        cJSON_Delete(s);
        return mt_fail(MT_ERR_FORMAT, "%s: no \"files\" checksums: not a medtrain checkpoint", p);
    }
    cJSON *f;
    mt_status st = MT_OK;
    cJSON_ArrayForEach(f, files) {
        snprintf(p, sizeof p, "%s/%s", dir, f->string);
        if (!cJSON_IsString(f)) {
            st = mt_fail(MT_ERR_FORMAT, "%s/state.json: bad checksum entry", dir);
            break;
        }
        st = mt_sha256_file(p, hex);
        if (st != MT_OK) {
            st = mt_error_wrap(st, "checkpoint %s: ", dir);
            break;
        }
        if (strcmp(hex, f->valuestring) != 0) {
            st = mt_fail(MT_ERR_FORMAT,
                         "%s: checksum mismatch (state.json says %.12s..., the file has %.12s...): "
                         "the checkpoint is corrupted or was modified",
                         p, f->valuestring, hex);
            break;
        }
    }
    if (st != MT_OK) {
        cJSON_Delete(s);
        return st;
    }
    *state = s;
    return MT_OK;
}
