/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_config.c: mod_pyreload's directives.  Bad values make apache2 refuse to
 * start with a message naming the directive; good ones start.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <check.h>

#include "fixture.h"

static const char OK_PY[] =
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    req.write('ok')\n"
    "    return pyreload.OK\n"
    "\n"
    "def other_one(req):\n"
    "    req.write('other_one')\n"
    "    return pyreload.OK\n";

static const httpd_file_t FILES[] = {
    {"ok.py", OK_PY},
    {"../lib/.keep", ""},
    {NULL, NULL},
};

typedef struct {
    const char *config;
    const char *expect[3];   /* in apache2's start-up output (@APP@, @DIR@ substituted) */
} bad_case_t;

static const bad_case_t BAD[] = {
    {"PyReloadHandler @APP@/missing.py\n", {"PyReloadHandler", "missing.py"}},
    {"<Location /x>\n  PyReloadHandler @APP@/missing.py\n</Location>\n",
     {"PyReloadHandler", "missing.py"}},
    {"PyReloadHandler @APP@/ok.py::\n", {"PyReloadHandler"}},
    {"PyReloadHandler @APP@/ok.py::not-an-id\n", {"PyReloadHandler", "not-an-id"}},
    {"PyReloadHandler @APP@/ok.py::1abc\n", {"PyReloadHandler"}},
    {"PyReloadHandler @APP@/ok.py::a b\n", {"PyReloadHandler"}},
    {"PyReloadHandler\n", {"PyReloadHandler"}},
    /* gunicorn's FILE:CALLABLE: the file exists, with one colon it does not */
    {"PyReloadHandler @APP@/ok.py:other_one\n",
     {"PYR0701: PyReloadHandler @APP@/ok.py:other_one: no such file; to call other_one() in "
      "@APP@/ok.py, write two colons: PyReloadHandler @APP@/ok.py::other_one\n"}},
    {"<Location /x>\n  PyReloadWSGI app/ok.py:application\n</Location>\n",
     {"PYR0701: PyReloadWSGI app/ok.py:application: no such file; to call application() in "
      "@APP@/ok.py, write two colons: PyReloadWSGI app/ok.py::application\n"}},
    {"PyReloadHandler ::handler\n", {"PyReloadHandler"}},
    /* PyReloadWSGI shares PyReloadHandler's rules and says its own name. */
    {"<Location /x>\n  PyReloadWSGI @APP@/missing.py\n</Location>\n",
     {"PyReloadWSGI", "missing.py"}},
    {"PyReloadWSGI @APP@/ok.py::not-an-id\n", {"PyReloadWSGI", "not-an-id"}},
    {"PyReloadWSGI @APP@/ok.py::\n", {"PyReloadWSGI"}},
    {"PyReloadWSGI @DIR@/lib\n", {"PyReloadWSGI", "not a regular file"}},
    {"PyReloadPath @DIR@/no-such-dir\n", {"PyReloadPath", "no-such-dir"}},
    /* One interpreter per process: sys.path cannot differ per virtual host. */
    {"<VirtualHost 127.0.0.1:*>\n  PyReloadPath @DIR@/lib\n</VirtualHost>\n",
     {"PyReloadPath", "VirtualHost", "sys.path is process-wide"}},
    {"PyReloadDebug maybe\n", {"PyReloadDebug"}},
    {"PyReloadCheck sometimes\n", {"PyReloadCheck"}},
    {"PyReloadCheckInterval abc\n", {"PyReloadCheckInterval"}},
    {"PyReloadCheckInterval -5\n", {"PyReloadCheckInterval"}},
    {"PyReloadCheckInterval 10ms\n", {"PyReloadCheckInterval"}},
    {"PyReloadCheckInterval \"\"\n", {"PyReloadCheckInterval"}},
    {"PyReloadOption onlyname\n", {"PyReloadOption"}},
    {"PyReloadSafeFiles maybe\n", {"PyReloadSafeFiles"}},
    {"<Location /x>\n  PyReloadSafeFiles Off\n</Location>\n", {"PyReloadSafeFiles"}},
    {"<VirtualHost 127.0.0.1:*>\n  PyReloadSafeFiles Off\n</VirtualHost>\n",
     {"PyReloadSafeFiles", "VirtualHost"}},
};

START_TEST(test_bad_config_refused)
{
    const bad_case_t *c = &BAD[_i];
    httpd_opts_t o = {.config = c->config, .files = FILES};
    httpd_t *h = httpd_new(&o);
    int rc;
    ck_assert_ptr_nonnull(h);
    rc = httpd_start(h);
    if (rc == 0) {
        httpd_stop(h);
        ck_abort_msg("apache2 started with:\n%s", c->config);
    }
    ck_assert_int_eq(h->pid, 0);
    for (int i = 0; i < 3 && c->expect[i]; i++) {
        char *log = httpd_log(h), *want = httpd_subst(h, c->expect[i]);
        ck_assert_msg(strstr(h->startup_output, want) != NULL,
                      "config:\n%sstart-up output lacks \"%s\":\n%s\nerror log:\n%s",
                      c->config, want, h->startup_output, log);
        free(want);
        free(log);
    }
    httpd_free(h);
}
END_TEST

/* Good values of every directive, in every context they are allowed in. */
static const char GOOD_CONF[] =
    "PyReloadPath @DIR@/lib\n"
    "PyReloadDebug Off\n"
    "PyReloadCheck On\n"
    "PyReloadCheckInterval 0\n"
    "PyReloadOption a b\n"
    "PyReloadSafeFiles On\n"
    "<Location /a>\n"
    "  PyReloadHandler @APP@/ok.py\n"
    "  PyReloadDebug on\n"
    "  PyReloadCheck off\n"
    "  PyReloadCheckInterval 250\n"
    "  PyReloadOption c \"d e\"\n"
    "</Location>\n"
    "<Location /b>\n"
    "  PyReloadHandler app/ok.py::other_one\n"
    "</Location>\n"
    "<Directory @DIR@/htdocs/d>\n"
    "  PyReloadHandler @APP@/ok.py::handler\n"
    "</Directory>\n"
    "<Location /colon>\n"
    "  PyReloadHandler @APP@/odd.py:other_one\n"
    "</Location>\n";

START_TEST(test_good_config_starts)
{
    static const httpd_file_t files[] = {
        {"ok.py", OK_PY}, {"../lib/.keep", ""}, {"../htdocs/d/.keep", ""},
        {"odd.py:other_one", OK_PY}, {NULL, NULL},
    };
    httpd_opts_t o = {.config = GOOD_CONF, .files = files};
    httpd_t *h = httpd_launch(&o);
    http_resp_t *r;
    ck_assert_msg(h != NULL, "apache2 refused a good configuration");
    r = http_get(h, "/a");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "ok");
    http_free(r);
    r = http_get(h, "/b");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "other_one");
    http_free(r);
    r = http_get(h, "/d/x");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "ok");
    http_free(r);
    /* a file literally named "odd.py:other_one" is that file */
    r = http_get(h, "/colon");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "ok");
    http_free(r);
    httpd_free(h);
}
END_TEST

/* A file (or PyReloadPath directory) that the server's User, www-data in
 * the fixture, cannot read: `apache2 -t` fails, naming the user; so does
 * the start.  Made unreadable after httpd_new() wrote it 0644. */
static const struct {
    const char *config, *chmod_path;
    mode_t mode;
    const char *expect[2];
} UNREADABLE[] = {
    {"<Location /u>\n  PyReloadHandler @APP@/ok.py\n</Location>\n", "ok.py", 0600,
     {"PYR0703: PyReloadHandler (<Location /u>, @DIR@/httpd.conf:",
      "): the server's User www-data (group www-data) cannot read @APP@/ok.py (Permission "
      "denied); give that user read access (chmod o+r, or chgrp www-data and chmod g+r), and "
      "search access (x) to every directory above it\n"}},
    {"<Location /u>\n  PyReloadWSGI @APP@/sub/w.py\n</Location>\n", "sub", 0700,
     {"PYR0703: PyReloadWSGI (<Location /u>, @DIR@/httpd.conf:",
      "): the server's User www-data (group www-data) cannot read @APP@/sub/w.py (Permission "
      "denied)"}},
    {"PyReloadPath @DIR@/lib\n", "../lib", 0700,
     {"PYR0703: PyReloadPath: the server's User www-data (group www-data) cannot read and "
      "search the directory @DIR@/lib (Permission denied); give that user read access (chmod "
      "o+rx, or chgrp www-data and chmod g+rx), and search access (x) to every directory "
      "above it\n"}},
};

START_TEST(test_unreadable_by_user_refused)
{
    static const httpd_file_t files[] = {
        {"ok.py", OK_PY}, {"sub/w.py", OK_PY}, {"../lib/.keep", ""}, {NULL, NULL},
    };
    httpd_opts_t o = {.config = UNREADABLE[_i].config, .files = files};
    httpd_t *h = httpd_new(&o);
    char *path, *out = NULL;
    int rc, i;

    ck_assert_ptr_nonnull(h);
    path = httpd_path(h, UNREADABLE[_i].chmod_path);
    ck_assert_int_eq(chmod(path, UNREADABLE[_i].mode), 0);
    free(path);
    /* the start writes httpd.conf, and fails */
    ck_assert_int_ne(httpd_start(h), 0);
    rc = httpd_configtest(h, &out);
    for (i = 0; i < 2 && UNREADABLE[_i].expect[i]; i++) {
        char *want = httpd_subst(h, UNREADABLE[_i].expect[i]);

        ck_assert_msg(strstr(out, want) != NULL, "apache2 -t said:\n%s\nnot:\n%s", out, want);
        ck_assert_msg(strstr(h->startup_output, want) != NULL, "the start said:\n%s",
                      h->startup_output);
        free(want);
    }
    ck_assert_msg(rc != 0, "apache2 -t passed:\n%s", out);
    free(out);
    httpd_free(h);
}
END_TEST

Suite *suite_config(void)
{
    Suite *s = suite_create("config");
    TCase *tc = httpd_tcase("directives", 60, NULL, NULL);
    tcase_add_loop_test(tc, test_bad_config_refused, 0, (int)(sizeof BAD / sizeof BAD[0]));
    tcase_add_test(tc, test_good_config_starts);
    tcase_add_loop_test(tc, test_unreadable_by_user_refused, 0,
                        (int)(sizeof UNREADABLE / sizeof UNREADABLE[0]));
    suite_add_tcase(s, tc);
    return s;
}
