/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_stdio.c: sys.stdout and sys.stderr into the log: what is held back
 * is bounded, a long line is split into pieces httpd will not cut (never
 * inside a UTF-8 character), a write costs its own length only, and what a
 * request leaves unfinished is logged when it ends.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PIECE 2000      /* stdio.c's PYR_STDIO_PIECE */

/* The lines of the log that start with tag and then start, and their total
 * length after tag; *longest gets the longest. */
static int
lines_with(const char *tag, const char *start, size_t *total, size_t *longest)
{
    char *copy = strdup(ut_log_text()), *save = NULL, *line;
    int n = 0;

    *total = 0;
    *longest = 0;
    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t len;

        if (strncmp(line, tag, strlen(tag)) != 0
            || strncmp(line + strlen(tag), start, strlen(start)) != 0) {
            continue;
        }
        len = strlen(line) - strlen(tag);
        n++;
        *total += len;
        if (len > *longest) {
            *longest = len;
        }
    }
    free(copy);
    return n;
}

/* Every sequence in text is complete (lines cut between characters). */
static int
whole_utf8(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;

    while (*p) {
        int more = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2
                   : (*p & 0xF8) == 0xF0 ? 3 : -1;

        if (more < 0) {
            return 0;
        }
        for (p++; more > 0; more--, p++) {
            if ((*p & 0xC0) != 0x80) {
                return 0;
            }
        }
    }
    return 1;
}

START_TEST(test_long_line_split)
{
    size_t total, longest;

    ut_run("import sys\nsys.stdout.write('x' * 10000 + '\\n')\n");
    ck_assert_int_eq(lines_with("[stdout] ", "x", &total, &longest), 5);
    ck_assert_uint_eq(total, 10000);
    ck_assert_uint_eq(longest, PIECE);
}
END_TEST

START_TEST(test_partial_line_bounded)
{
    size_t total, longest;

    /* 5,000 bytes and no newline: two full pieces are out at once, and only
     * the rest (1,000) is held back */
    ut_run("import sys\nsys.stdout.write('y' * 5000)\n");
    ck_assert_int_eq(lines_with("[stdout] ", "y", &total, &longest), 2);
    ck_assert_uint_eq(total, 2 * PIECE);
    /* the end of a request logs what is left */
    pyr_gil_take();
    pyr_interp_request_done();
    pyr_gil_drop();
    ck_assert_int_eq(lines_with("[stdout] ", "y", &total, &longest), 3);
    ck_assert_uint_eq(total, 5000);
    /* and nothing is left for the next line */
    ut_run("print('next')\n");
    ck_assert_int_eq(ut_log_count("[stdout] next"), 1);
    ck_assert_int_eq(ut_log_count("ynext"), 0);
}
END_TEST

START_TEST(test_split_keeps_utf8_whole)
{
    size_t total, longest;

    /* 1,500 two-byte characters: 3,000 bytes, cut at 2,000 = 1,000 of them */
    ut_run("import sys\nsys.stderr.write('\\u00e9' * 1500 + '\\n')\n");
    ck_assert_int_eq(lines_with("[stderr] ", "\xc3\xa9", &total, &longest), 2);
    ck_assert_uint_eq(total, 3000);
    /* three-byte characters: a piece may end short of 2,000, never inside one */
    ut_run("import sys\nsys.stderr.write('\\u20ac' * 1000 + '\\n')\n");
    ck_assert_int_eq(lines_with("[stderr] ", "\xe2\x82\xac", &total, &longest), 2);
    ck_assert_uint_eq(total, 3000);
    ck_assert_uint_eq(longest, 1998);
    ck_assert_msg(whole_utf8(ut_log_text()), "a character was cut:\n%s", ut_log_from("[stderr]"));
}
END_TEST

/* The slow-down: each write without a newline copied everything
 * held so far (quadratic); 10,000 writes of 1,000 characters took 69 s.
 * Linear means four times the writes cost about four times the time, not
 * sixteen: a ratio, so a slow machine or a sanitizer build cannot fail it. */
static double
timed_writes(int n)
{
    struct timespec a, b;
    char src[256];

    snprintf(src, sizeof(src), "import sys\nw = sys.stdout.write\nchunk = 'z' * 1000\n"
             "for _ in range(%d):\n    w(chunk)\nsys.stdout.flush()\n", n);
    clock_gettime(CLOCK_MONOTONIC, &a);
    ut_run(src);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
}

START_TEST(test_no_newline_linear)
{
    double small, big;
    size_t total, longest;

    small = timed_writes(2500);
    ck_assert_int_eq(lines_with("[stdout] ", "z", &total, &longest), 1250);
    big = timed_writes(10000);
    fprintf(stderr, "stdio: writes of 1,000 characters without a newline: 2,500 in %.0f ms, "
            "10,000 in %.0f ms (x%.1f)\n", small, big, big / (small > 0 ? small : 1));
    ck_assert_int_eq(lines_with("[stdout] ", "z", &total, &longest), 1250 + 5000);
    ck_assert_uint_eq(total, 12500000);
    ck_assert_msg(big < 8 * small + 100, "4x the writes took %.1fx the time (%.0f ms, "
                  "then %.0f ms): not linear", big / small, small, big);
}
END_TEST

START_TEST(test_surrogates_escaped)
{
    /* a URI's undecodable bytes (surrogateescape) are logged, not refused */
    ut_run("import sys\nprint('uri', '/a\\udcff')\nsys.stderr.write('e\\udc80\\n')\n");
    ck_assert_int_eq(ut_log_count("[stdout] uri /a\\udcff"), 1);
    ck_assert_int_eq(ut_log_count("[stderr] e\\udc80"), 1);
}
END_TEST

START_TEST(test_close_keeps_working)
{
    ut_run("import sys\nsys.stdout.write('half')\nsys.stdout.close()\n"
        "print('after close', sys.stdout.closed)\n"
        "sys.stderr.writelines(['a', 'b\\n', 'c\\n'])\n");
    ck_assert_int_eq(ut_log_count("[stdout] half"), 1);
    ck_assert_int_eq(ut_log_count("[stdout] after close False"), 1);
    ck_assert_int_eq(ut_log_count("[stderr] ab"), 1);
    ck_assert_int_eq(ut_log_count("[stderr] c"), 1);
}
END_TEST

/* logging records, as pylog.c maps them: "level name: message" lines of a
 * logger bound to this thread. */
static char levels_seen[1024];

static void
level_record(void *baton, int level, const char *line)
{
    size_t n = strlen(levels_seen);

    snprintf(levels_seen + n, sizeof(levels_seen) - n, "%d %s\n", level, line);
}

START_TEST(test_logging_levels_mapped)
{
    pyr_logger_t mine = { level_record, NULL };

    levels_seen[0] = '\0';
    pyr_pylog_bind(&mine);
    /* The server's level is the default (warn): DEBUG and INFO never come. */
    ut_run("import logging\n"
           "log = logging.getLogger('u')\n"
           "log.debug('d'); log.info('i'); log.warning('w'); log.error('e')\n"
           "log.critical('c'); log.log(45, 'between')\n"
           "logging.warning('root %d', 1)\n"
           "try:\n"
           "    {}['k']\n"
           "except KeyError:\n"
           "    log.exception('x')\n");
    pyr_pylog_bind(NULL);
    ck_assert_str_eq(levels_seen, "4 u: w\n3 u: e\n2 u: c\n3 u: between\n4 root: root 1\n"
                                  "3 u: x\n3 Traceback (most recent call last):\n"
                                  "3   File \"<string>\", line 7, in <module>\n"
                                  "3 KeyError: 'k'\n");
    /* logging.warning() left the root logger without a handler of its own */
    ut_run("import logging\nassert not logging.getLogger().handlers\n");
}
END_TEST

Suite *
suite_stdio(void)
{
    Suite *s = suite_create("stdio");
    TCase *tc = tcase_create("stream");

    tcase_add_checked_fixture(tc, ut_setup, ut_teardown);
    tcase_add_test(tc, test_long_line_split);
    tcase_add_test(tc, test_partial_line_bounded);
    tcase_add_test(tc, test_split_keeps_utf8_whole);
    tcase_add_test(tc, test_no_newline_linear);
    tcase_add_test(tc, test_surrogates_escaped);
    tcase_add_test(tc, test_close_keeps_working);
    tcase_add_test(tc, test_logging_levels_mapped);
    suite_add_tcase(s, tc);
    return s;
}
