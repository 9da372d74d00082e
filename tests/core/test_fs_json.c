/* Atomic writes, whole-file reads, mkdir -p, and JSON errors with line and column. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "medtrain/fs.h"
#include "medtrain/json.h"
#include "medtrain/mem.h"
#include "mt_test.h"

static char dir[64];

static int count_entries(const char *d) {
    DIR *dp = opendir(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (e->d_name[0] != '.') n++;
    closedir(dp);
    return n;
}

static void test_atomic_write_and_read(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    MT_CHECK_OK(mt_mkdir_p(path));
    MT_CHECK_OK(mt_mkdir_p(path)); /* idempotent */
    snprintf(path, sizeof path, "%s/a/b/c/file.txt", dir);
    MT_CHECK_OK(mt_file_write_atomic(path, "first", 5));
    MT_CHECK_OK(mt_file_write_atomic(path, "second version", 14));
    char *data;
    size_t n;
    MT_CHECK_OK(mt_file_read(path, &data, &n));
    MT_CHECK(n == 14 && strcmp(data, "second version") == 0);
    mt_free(data);
    char parent[128];
    snprintf(parent, sizeof parent, "%s/a/b/c", dir);
    MT_CHECK(count_entries(parent) == 1, "no temporary files are left behind");
    struct stat st;
    MT_CHECK(stat(path, &st) == 0 && (st.st_mode & 0044), "written files are readable by others");
}

static void test_write_failure_leaves_old_file(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/missing_dir/x.json", dir);
    MT_CHECK_FAILS(mt_file_write_atomic(path, "x", 1), MT_ERR_IO, "missing_dir/x.json");
    MT_CHECK_FAILS(mt_file_read(path, NULL, NULL), MT_ERR_IO, "x.json");
    char file[128];
    snprintf(file, sizeof file, "%s/plain", dir);
    MT_CHECK_OK(mt_file_write_atomic(file, "x", 1));
    snprintf(path, sizeof path, "%s/plain/sub", dir);
    MT_CHECK_FAILS(mt_mkdir_p(path), MT_ERR_IO, "plain");
}

static void test_large_read(void) {
    size_t n = 3u << 20;
    char *big = mt_alloc(n, "big");
    for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
    char path[128];
    snprintf(path, sizeof path, "%s/big.bin", dir);
    MT_CHECK_OK(mt_file_write_atomic(path, big, n));
    char *back;
    size_t m;
    MT_CHECK_OK(mt_file_read(path, &back, &m));
    MT_CHECK(m == n && memcmp(back, big, n) == 0);
    mt_free(back);
    mt_free(big);
}

static void test_json_roundtrip_and_errors(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/m.json", dir);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "case_id", "c1");
    cJSON_AddNumberToObject(j, "n", 3);
    MT_CHECK_OK(mt_json_write_file(path, j, 0));
    cJSON_Delete(j);
    MT_CHECK_OK(mt_json_read_file(path, &j));
    MT_CHECK(cJSON_GetObjectItem(j, "n")->valuedouble == 3);
    cJSON_Delete(j);

    const char *bad = "[\n  {\"image_path\": \"a.png\",\n   \"labels\": {\"x\": 1,}\n  }\n]";
    MT_CHECK_FAILS(mt_json_parse(bad, strlen(bad), "manifest.json", &j), MT_ERR_FORMAT,
                   "manifest.json:3:", "invalid JSON");
    const char *truncated = "{\"a\": [1, 2";
    MT_CHECK_FAILS(mt_json_parse(truncated, strlen(truncated), "t.json", &j), MT_ERR_FORMAT,
                   "t.json:1:");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/mt_fs_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    MT_RUN(test_atomic_write_and_read);
    MT_RUN(test_write_failure_leaves_old_file);
    MT_RUN(test_large_read);
    MT_RUN(test_json_roundtrip_and_errors);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return mt_test_summary();
}
