/* Progress output: bar with rate and ETA on a terminal, plain lines otherwise. */
#include <stdlib.h>
#include <string.h>

#include "medtrain/progress.h"
#include "mt_test.h"

static char *capture(bool tty, double interval) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    mt_progress p;
    mt_progress_begin_on(&p, f, tty, interval, "train", 100, "step");
    for (int i = 1; i <= 100; i++) {
        if (i == 50) mt_progress_note(&p, "loss %.3f", 0.25);
        mt_progress_update(&p, i);
    }
    mt_progress_end(&p);
    fclose(f);
    return buf;
}

static void test_tty_bar(void) {
    char *out = capture(true, 0.0);
    MT_CHECK(strstr(out, "\r\033[K") != NULL, "redraws in place");
    MT_CHECK(strstr(out, "[########################] 100/100") != NULL, "%s", out);
    MT_CHECK(strstr(out, "left") != NULL, "shows time left while running");
    MT_CHECK(strstr(out, "loss 0.250") != NULL);
    MT_CHECK(out[strlen(out) - 1] == '\n', "ends the line when done");
    free(out);
}

static void test_plain_lines(void) {
    char *out = capture(false, 1e9); /* only the final line */
    MT_CHECK(strchr(out, '\r') == NULL && strchr(out, '\033') == NULL, "no terminal codes in logs");
    MT_CHECK(strstr(out, "train: 100/100 step") != NULL, "%s", out);
    int lines = 0;
    for (char *p = out; *p; p++) lines += *p == '\n';
    MT_CHECK(lines == 1, "%d lines", lines);
    free(out);
    out = capture(false, 0.0); /* every update */
    lines = 0;
    for (char *p = out; *p; p++) lines += *p == '\n';
    MT_CHECK(lines == 101, "%d lines", lines);
    free(out);
}

int main(void) {
    MT_RUN(test_tty_bar);
    MT_RUN(test_plain_lines);
    return mt_test_summary();
}
