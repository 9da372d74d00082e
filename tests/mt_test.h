/* A small test harness. A test program defines test functions, lists them in main with MT_RUN, and
 * returns mt_test_summary(). Checks report file:line and keep going; a test with a failed check
 * counts as failed. The summary line is "N passed, N failed" (", N skipped").
 *
 *     static void test_sum(void) { MT_CHECK_NEAR(sum(a, 3), 6.0, 1e-12); }
 *     int main(void) { MT_RUN(test_sum); return mt_test_summary(); }
 */
#ifndef MEDTRAIN_TEST_H
#define MEDTRAIN_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "medtrain/status.h"

extern int mt_test_failed_checks; /* failed checks in the running test */

void mt_test_run(const char *name, void (*fn)(void));
void mt_test_skip(const char *name, const char *why);
int mt_test_summary(void); /* prints the summary line on rank 0; returns the exit code */
void mt_test_check_failed(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mt_test_cond_failed(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define MT_RUN(fn) mt_test_run(#fn, fn)

#define MT_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) mt_test_cond_failed(__FILE__, __LINE__, #cond, " " __VA_ARGS__);              \
    } while (0)

/* |a - b| <= tol * max(1, |b|): relative for large values, absolute near zero. */
#define MT_CHECK_NEAR(a, b, tol)                                                                   \
    do {                                                                                           \
        double mt_a_ = (double)(a), mt_b_ = (double)(b);                                           \
        if (!(fabs(mt_a_ - mt_b_) <= (tol)*fmax(1.0, fabs(mt_b_))))                                \
            mt_test_check_failed(__FILE__, __LINE__, "%s = %.9g, expected %s = %.9g (tol %g)", #a, \
                                 mt_a_, #b, mt_b_, (double)(tol));                                 \
    } while (0)

/* expr must return MT_OK; otherwise the check fails with the error message. */
#define MT_CHECK_OK(expr)                                                                          \
    do {                                                                                           \
        mt_status mt_s_ = (expr);                                                                  \
        if (mt_s_ != MT_OK)                                                                        \
            mt_test_check_failed(__FILE__, __LINE__, "%s failed (%s): %s", #expr,                  \
                                 mt_status_name(mt_s_), mt_error_message());                       \
    } while (0)

/* expr must fail with code, and its message must contain each of the given substrings. */
#define MT_CHECK_FAILS(expr, code, ...)                                                            \
    do {                                                                                           \
        mt_error_clear();                                                                          \
        mt_status mt_s_ = (expr);                                                                  \
        const char *mt_subs_[] = {__VA_ARGS__, NULL};                                              \
        if (mt_s_ != (code))                                                                       \
            mt_test_check_failed(__FILE__, __LINE__, "%s returned %s, expected %s (message: %s)",  \
                                 #expr, mt_status_name(mt_s_), mt_status_name(code),               \
                                 mt_error_message());                                              \
        for (int mt_i_ = 0; mt_subs_[mt_i_]; mt_i_++)                                              \
            if (!strstr(mt_error_message(), mt_subs_[mt_i_]))                                      \
                mt_test_check_failed(__FILE__, __LINE__, "%s: message lacks \"%s\": %s", #expr,    \
                                     mt_subs_[mt_i_], mt_error_message());                         \
    } while (0)

#endif
