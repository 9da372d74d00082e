/* Errors and logging: messages, context wrapping, rank prefixes, level parsing. */
#include <string.h>

#include "medtrain/log.h"
#include "mt_test.h"

static void test_fail_sets_message(void) {
    mt_status st = mt_fail(MT_ERR_CONFIG, "%s:%d: unknown key '%s'", "job.yaml", 7, "lrr");
    MT_CHECK(st == MT_ERR_CONFIG);
    MT_CHECK(strcmp(mt_error_message(), "job.yaml:7: unknown key 'lrr'") == 0, "%s",
             mt_error_message());
    mt_error_clear();
    MT_CHECK(mt_error_message()[0] == '\0');
}

static void test_wrap_adds_context(void) {
    mt_fail(MT_ERR_IO, "disk full");
    MT_CHECK(mt_error_wrap(MT_ERR_IO, "writing %s: ", "ckpt/step_5") == MT_ERR_IO);
    MT_CHECK(strcmp(mt_error_message(), "writing ckpt/step_5: disk full") == 0);
}

static void test_rank_prefix(void) {
    mt_set_rank(3, 4);
    mt_fail(MT_ERR_IO, "oops");
    MT_CHECK(strcmp(mt_error_message(), "rank 3: oops") == 0, "%s", mt_error_message());
    mt_error_wrap(MT_ERR_IO, "loading x: ");
    MT_CHECK(strcmp(mt_error_message(), "rank 3: loading x: oops") == 0, "%s", mt_error_message());
    MT_CHECK(strcmp(mt_error_text(), "loading x: oops") == 0, "%s", mt_error_text());
    mt_set_rank(0, 1);
    mt_fail(MT_ERR_IO, "oops");
    MT_CHECK(strcmp(mt_error_message(), "oops") == 0);
}

static void test_long_message_truncates_safely(void) {
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mt_fail(MT_ERR_FORMAT, "%s", big);
    MT_CHECK(strlen(mt_error_message()) == MT_ERROR_MAX - 1);
    mt_error_wrap(MT_ERR_FORMAT, "ctx: ");
    MT_CHECK(strncmp(mt_error_message(), "ctx: xxx", 8) == 0);
}

static void test_status_names(void) {
    MT_CHECK(strcmp(mt_status_name(MT_OK), "ok") == 0);
    MT_CHECK(strcmp(mt_status_name(MT_ERR_NOMEM), "out of memory") == 0);
    for (int s = MT_OK; s <= MT_ERR_INTERNAL; s++)
        MT_CHECK(strcmp(mt_status_name(s), "unknown") != 0);
}

static void test_log_levels(void) {
    mt_log_level l;
    MT_CHECK_OK(mt_log_parse_level("DEBUG", &l));
    MT_CHECK(l == MT_LOG_DEBUG);
    MT_CHECK_OK(mt_log_parse_level("warn", &l));
    MT_CHECK(l == MT_LOG_WARN);
    MT_CHECK_FAILS(mt_log_parse_level("loud", &l), MT_ERR_USAGE, "loud",
                   "error, warn, info or debug");
    mt_log_set_level(MT_LOG_WARN);
    MT_CHECK(mt_log_get_level() == MT_LOG_WARN);
    MT_INFO("this line is filtered out");
    mt_log_set_level(MT_LOG_INFO);
}

int main(void) {
    MT_RUN(test_fail_sets_message);
    MT_RUN(test_wrap_adds_context);
    MT_RUN(test_rank_prefix);
    MT_RUN(test_long_message_truncates_safely);
    MT_RUN(test_status_names);
    MT_RUN(test_log_levels);
    return mt_test_summary();
}
