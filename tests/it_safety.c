/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_safety.c: code anyone may write is never run (against a real apache2).
 *
 *   - start-up: a PyReloadHandler file (or PyReloadPath directory) that any
 *     user may write or swap stops apache2 (`apache2 -t` too), with a
 *     message naming the file and the chmod that fixes it;
 *   - load time: a reloadable file (handler or imported module) that became
 *     unsafe fails to load like a broken one: the last good code keeps
 *     serving, one clear line in the log, no traceback;
 *   - PyReloadSafeFiles Off lets a development machine run them;
 *   - a file the server's own User may write is run, with one warning.
 */
#define _GNU_SOURCE
#include "it_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static httpd_t *srv;

/* ------------------------------------------------------------------ */
/* Start-up                                                            */

static const char OK_PY[] =
    "import pyreload\n"
    "def handler(req):\n    req.write('ok')\n    return pyreload.OK\n";

typedef struct {
    const char *what;
    const char *config;
    const char *file;           /* chmod'ed to mode before the start */
    mode_t mode;
    int starts;
    const char *says[3];        /* in the start-up output (@APP@, @DIR@) */
} start_case_t;

static const start_case_t STARTS[] = {
    {"world-writable handler",
     "<Location /ok>\n  PyReloadHandler @APP@/ok.py\n</Location>\n", "ok.py", 0666, 0,
     {"PYR0020", "@APP@/ok.py", "chmod o-w @APP@/ok.py"}},
    {"world-writable handler directory",
     "PyReloadHandler @APP@/ok.py::handler\n", ".", 0777, 0,
     {"PYR0020", "@APP@/ok.py", "chmod o-w @APP@ (or chmod +t @APP@)"}},
    {"world-writable PyReloadPath",
     "PyReloadPath @DIR@/lib\n<Location /ok>\n  PyReloadHandler @APP@/ok.py\n</Location>\n",
     "../lib", 0777, 0, {"PYR0020", "@DIR@/lib", "chmod o-w @DIR@/lib"}},
    {"sticky world-writable directory",
     "<Location /ok>\n  PyReloadHandler @APP@/ok.py\n</Location>\n", ".", 01777, 1, {NULL}},
    {"group-writable handler",
     "<Location /ok>\n  PyReloadHandler @APP@/ok.py\n</Location>\n", "ok.py", 0664, 1, {NULL}},
    {"world-writable handler, PyReloadSafeFiles Off (after the handler)",
     "<Location /ok>\n  PyReloadHandler @APP@/ok.py\n</Location>\nPyReloadSafeFiles Off\n",
     "ok.py", 0666, 1, {NULL}},
};

START_TEST(test_unsafe_refused_at_start)
{
    static const httpd_file_t files[] = {{"ok.py", OK_PY}, {"../lib/.keep", ""}, {NULL, NULL}};
    const start_case_t *c = &STARTS[_i];
    httpd_opts_t o = {.config = c->config, .files = files};
    httpd_t *h = httpd_new(&o);
    char *out;
    int rc, i;

    ck_assert_ptr_nonnull(h);
    it_chmod(h, c->file, c->mode);
    rc = httpd_start(h);
    if (c->starts) {
        if (rc != 0) {
            httpd_dump_log_tail(h, 40);
        }
        ck_assert_msg(rc == 0, "[%s] apache2 refused to start:\n%s", c->what,
                      h->startup_output);
        it_expect(h, strstr(c->config, "<Location /ok>") ? "/ok" : "/", "ok");
        httpd_stop(h);
        it_chmod(h, c->file, c->file[0] == '.' ? 0755 : 0644);
        httpd_free(h);
        return;
    }
    if (rc == 0) {
        httpd_stop(h);
        ck_abort_msg("[%s] apache2 started", c->what);
    }
    for (i = 0; i < 3 && c->says[i]; i++) {
        char *want = httpd_subst(h, c->says[i]);

        ck_assert_msg(strstr(h->startup_output, want) != NULL,
                      "[%s] start-up output lacks \"%s\":\n%s", c->what, want,
                      h->startup_output);
        free(want);
    }
    rc = httpd_configtest(h, &out);
    ck_assert_msg(rc != 0 && strstr(out, "PYR0020") && !strstr(out, "Syntax OK"),
                  "[%s] apache2 -t: %d\n%s", c->what, rc, out);
    free(out);
    /* the temp dir is removed by the fixture: give the modes back */
    it_chmod(h, c->file, 0755);
    httpd_free(h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Load time                                                           */

static const char H_PY[] =
    "import pyreload, helper, libmod\n"
    "V = '%s'\n"
    "def handler(req):\n"
    "    if req.args == 'late':\n"
    "        import latemod\n"
    "        req.write(latemod.L)\n"
    "    elif req.args == 'pkg':\n"
    "        from pkg import mod\n"
    "        req.write(mod.P)\n"
    "    else:\n"
    "        req.write('%%s %%s %%s' %% (V, helper.H, libmod.L))\n"
    "    return pyreload.OK\n";

static void
handler_v(httpd_t *h, const char *v)
{
    char src[sizeof(H_PY) + 16];

    snprintf(src, sizeof(src), H_PY, v);
    it_put(h, "h.py", src);
}

static void
lsetup(void)
{
    static const httpd_file_t files[] = {
        {"helper.py", "H = 'h1'\n"},
        {"latemod.py", "L = 'late'\n"},
        {"pkg/__init__.py", ""},
        {"pkg/mod.py", "P = 'p1'\n"},
        {"../lib/libmod.py", "L = 'l1'\n"},
        {NULL, NULL}
    };
    httpd_opts_t o = {
        .config = "PyReloadPath @DIR@/lib\n"
                  "<Location /h>\n  PyReloadHandler @APP@/h.py\n</Location>\n",
        .files = files };

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    handler_v(srv, "v1");
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
lteardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* One load failure for file, said plainly: the file, the fix, no traceback. */
static void
refused_once(size_t mark, const char *file, const char *fix)
{
    char *path = httpd_subst(srv, file), *want = httpd_subst(srv, fix), *log;

    ck_assert(httpd_log_wait(srv, mark, "PYR0102", 1, 2000));
    log = httpd_log_since(srv, mark);
    ck_assert_msg(httpd_log_count(srv, mark, want) == 1 && strstr(log, path)
                  && !strstr(log, "Traceback"), "want one '%s' for %s, no traceback:\n%s",
                  want, path, log);
    free(log);
    free(path);
    free(want);
}

START_TEST(test_unsafe_module_keeps_last_good)
{
    size_t mark;
    int i;

    it_expect(srv, "/h", "v1 h1 l1");
    /* An imported module becomes world-writable (and is edited). */
    mark = httpd_log_mark(srv);
    it_put(srv, "helper.py", "H = 'h2'\n");
    it_chmod(srv, "helper.py", 0666);
    for (i = 0; i < 3; i++) {
        it_expect(srv, "/h", "v1 h1 l1");
    }
    refused_once(mark, "@APP@/helper.py", "chmod o-w @APP@/helper.py");
    it_chmod(srv, "helper.py", 0644);
    it_expect(srv, "/h", "v1 h2 l1");

    /* The handler itself. */
    mark = httpd_log_mark(srv);
    handler_v(srv, "v2");
    it_chmod(srv, "h.py", 0606);
    it_expect(srv, "/h", "v1 h2 l1");
    it_expect(srv, "/h", "v1 h2 l1");
    refused_once(mark, "@APP@/h.py", "chmod o-w @APP@/h.py");
    it_chmod(srv, "h.py", 0644);
    it_expect(srv, "/h", "v2 h2 l1");

    /* A module under a PyReloadPath root. */
    mark = httpd_log_mark(srv);
    it_put(srv, "../lib/libmod.py", "L = 'l2'\n");
    it_chmod(srv, "../lib/libmod.py", 0666);
    it_expect(srv, "/h", "v2 h2 l1");
    refused_once(mark, "@DIR@/lib/libmod.py", "chmod o-w @DIR@/lib/libmod.py");
    it_chmod(srv, "../lib/libmod.py", 0644);
    it_expect(srv, "/h", "v2 h2 l2");
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

/* Modules first imported at request time: the import raises, the handler
 * answers 500, the log says why. */
START_TEST(test_unsafe_module_at_request_time)
{
    size_t mark = httpd_log_mark(srv);
    char *log;

    it_chmod(srv, "latemod.py", 0666);
    free(it_get(srv, "/h?late", 500));
    ck_assert(httpd_log_wait(srv, mark, "chmod o-w", 1, 2000));
    log = httpd_log_since(srv, mark);
    ck_assert_msg(strstr(log, httpd_path(srv, "latemod.py")) != NULL, "%s", log);
    free(log);
    it_chmod(srv, "latemod.py", 0644);
    it_expect(srv, "/h?late", "late");

    /* a package directory anyone may write */
    mark = httpd_log_mark(srv);
    it_chmod(srv, "pkg", 0777);
    free(it_get(srv, "/h?pkg", 500));
    ck_assert(httpd_log_wait(srv, mark, "chmod +t", 1, 2000));
    it_chmod(srv, "pkg", 0755);
    it_expect(srv, "/h?pkg", "p1");
    it_expect(srv, "/h", "v2 h2 l2");
}
END_TEST

/* The server's User (www-data) may write a file: it runs, with a warning,
 * once per file in a process. */
START_TEST(test_writable_by_server_user_warns_once)
{
    char *p = httpd_path(srv, "helper.py");
    size_t mark = httpd_log_mark(srv);
    char *line;

    it_expect(srv, "/h", "v2 h2 l2");
    it_put(srv, "helper.py", "H = 'h3'\n");
    ck_assert_int_eq(chown(p, 33, 33), 0);        /* www-data on Debian */
    it_expect(srv, "/h", "v2 h3 l2");
    ck_assert(httpd_log_wait(srv, mark, "PYR0121", 1, 2000));
    line = httpd_log_line(srv, mark, "PYR0121");
    ck_assert_msg(strstr(line, p) && strstr(line, "warn"), "%s", line);
    it_put(srv, "helper.py", "H = 'h4'\n");
    it_expect(srv, "/h", "v2 h4 l2");
    ck_assert_int_eq(httpd_log_count(srv, mark, "PYR0121"), 1);
    ck_assert_int_eq(chown(p, 0, 0), 0);
    free(line);
    free(p);
}
END_TEST

/* PyReloadSafeFiles Off: a development machine runs what it is given. */
START_TEST(test_safe_files_off)
{
    static const httpd_file_t files[] = {{"ok.py", OK_PY}, {NULL, NULL}};
    httpd_opts_t o = {.config = "PyReloadSafeFiles Off\n"
                                "<Location /ok>\n  PyReloadHandler @APP@/ok.py\n</Location>\n",
                      .files = files};
    httpd_t *h = httpd_new(&o);

    ck_assert_ptr_nonnull(h);
    it_chmod(h, "ok.py", 0666);
    it_chmod(h, ".", 0777);
    ck_assert_msg(httpd_start(h) == 0, "%s", h->startup_output);
    it_expect(h, "/ok", "ok");
    it_put(h, "ok.py", "import pyreload\n"
                    "def handler(req):\n    req.write('ok2')\n    return pyreload.OK\n");
    it_chmod(h, "ok.py", 0666);
    it_expect(h, "/ok", "ok2");
    httpd_stop(h);
    it_chmod(h, ".", 0755);
    httpd_free(h);
}
END_TEST

Suite *
suite_safety(void)
{
    Suite *s = suite_create("safety");
    TCase *sc = httpd_tcase("start", 90, NULL, NULL);
    TCase *lc = httpd_tcase("load", 60, lsetup, lteardown);

    tcase_add_loop_test(sc, test_unsafe_refused_at_start, 0,
                        (int)(sizeof STARTS / sizeof STARTS[0]));
    tcase_add_test(sc, test_safe_files_off);
    suite_add_tcase(s, sc);
    tcase_add_test(lc, test_unsafe_module_keeps_last_good);
    tcase_add_test(lc, test_unsafe_module_at_request_time);
    tcase_add_test(lc, test_writable_by_server_user_warns_once);
    suite_add_tcase(s, lc);
    return s;
}
