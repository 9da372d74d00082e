/* The test harness behind mt_test.h. */
#include "mt_test.h"

#include <stdarg.h>

int mt_test_failed_checks;
static int passed, failed, skipped;

void mt_test_check_failed(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    mt_test_failed_checks++;
}

void mt_test_cond_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    /* fmt is " " followed by the caller's optional format (see MT_CHECK). */
    fprintf(stderr, "  %s:%d: check failed: %s%s", file, line, cond, fmt[1] ? ":" : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    mt_test_failed_checks++;
}

void mt_test_run(const char *name, void (*fn)(void)) {
    mt_test_failed_checks = 0;
    mt_error_clear();
    fn();
    if (mt_test_failed_checks == 0) {
        passed++;
        if (mt_rank() == 0) printf("PASS %s\n", name);
    } else {
        failed++;
        printf("FAIL %s (rank %d: %d failed checks)\n", name, mt_rank(), mt_test_failed_checks);
    }
    fflush(stdout);
}

void mt_test_skip(const char *name, const char *why) {
    skipped++;
    if (mt_rank() == 0) printf("SKIP %s: %s\n", name, why);
}

int mt_test_summary(void) {
    if (mt_rank() == 0) {
        if (skipped)
            printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
        else
            printf("%d passed, %d failed\n", passed, failed);
    }
    fflush(stdout);
    return failed ? 1 : 0;
}
