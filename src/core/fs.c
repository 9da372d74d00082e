/* Files: atomic writes (write aside, fsync, rename, fsync the directory), whole-file reads. */
#include "medtrain/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "medtrain/mem.h"

bool mt_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* The directory part of path ("." when there is none). */
static void dir_of(const char *path, char *dir, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, n, ".");
    else if (slash == path)
        snprintf(dir, n, "/");
    else
        snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

mt_status mt_fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return mt_fail(MT_ERR_IO, "%s: cannot open directory: %s", path, strerror(errno));
    /* Some file systems (and some network ones) refuse fsync on directories: not an error. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS && errno != ENOTSUP) {
        int e = errno;
        close(fd);
        return mt_fail(MT_ERR_IO, "%s: fsync of directory failed: %s", path, strerror(e));
    }
    close(fd);
    return MT_OK;
}

static mt_status write_all(int fd, const char *tmp, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return mt_fail(MT_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return MT_OK;
}

mt_status mt_file_write_atomic(const char *path, const void *data, size_t n) {
    char tmp[PATH_MAX], dir[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
        return mt_fail(MT_ERR_ARG, "%s: path too long", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return mt_fail(MT_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
    mt_status st = write_all(fd, tmp, data, n);
    if (st == MT_OK && fsync(fd) != 0)
        st = mt_fail(MT_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == MT_OK)
        st = mt_fail(MT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    /* mkstemp makes 0600 files; written outputs get the usual 0644 less the umask. */
    mode_t mask = umask(0);
    umask(mask);
    if (st == MT_OK) chmod(tmp, 0644 & ~mask);
    if (st == MT_OK && rename(tmp, path) != 0)
        st = mt_fail(MT_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (st != MT_OK) {
        unlink(tmp);
        return st;
    }
    dir_of(path, dir, sizeof dir);
    return mt_fsync_dir(dir);
}

mt_status mt_file_read(const char *path, char **data, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return mt_fail(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = mt_alloc(cap + 1, path);
    if (!buf) {
        fclose(f);
        return MT_ERR_NOMEM;
    }
    for (;;) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        char *bigger = mt_realloc(buf, 2 * cap + 1, 1, path);
        if (!bigger) {
            mt_free(buf);
            fclose(f);
            return MT_ERR_NOMEM;
        }
        buf = bigger;
        cap *= 2;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        mt_free(buf);
        return mt_fail(MT_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *data = buf;
    if (n) *n = len;
    return MT_OK;
}

mt_status mt_mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return mt_fail(MT_ERR_ARG, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return mt_fail(MT_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = saved;
        if (saved == '\0') break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return mt_fail(MT_ERR_IO, "%s: exists and is not a directory", path);
    return MT_OK;
}
