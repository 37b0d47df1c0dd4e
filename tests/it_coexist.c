/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_coexist.c: mod_pyreload in one httpd with another module that embeds
 * Python (Debian's mod_wsgi and mod_python), in both load orders.
 *
 *   mod_wsgi     both serve: mod_wsgi starts Python in each child and
 *                mod_pyreload uses that interpreter (PYR0003); handlers,
 *                WSGI applications (own sub-interpreter, %{GLOBAL}, daemon
 *                mode) all answer, and a stop crashes nothing.
 *   mod_python   refused at start-up and by configtest (PYR0002), with a
 *                message that names it and the fix.  Unfixed, httpd started
 *                and every handler answered 500 ("failed to read thread
 *                state").
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "fixture.h"

#define MODDIR "/usr/lib/apache2/modules"

static const char HANDLER_PY[] =
    "import os\n"
    "import sys\n"
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    print('PYRT-printed', req.uri)\n"
    "    req.write('pyreload %d' % os.getpid())\n"
    "    return pyreload.OK\n";

static const char APP_WSGI[] =
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'wsgi group=' + environ['mod_wsgi.application_group'].encode()]\n";

static const char WSGI_CONF[] =
    "<Location /hello>\n  PyReloadHandler @APP@/hello.py\n</Location>\n"
    "WSGIScriptAlias /global @APP@/app.wsgi\n"
    "<Location /global>\n  WSGIApplicationGroup %{GLOBAL}\n</Location>\n"
    "WSGIScriptAlias /sub @APP@/app.wsgi\n"
    "WSGISocketPrefix @DIR@/run/wsgi\n"
    "WSGIDaemonProcess pyrt processes=1 threads=2\n"
    "WSGIScriptAlias /daemon @APP@/app.wsgi process-group=pyrt "
    "application-group=%{GLOBAL}\n";

static const char PYTHON_CONF[] =
    "<Location /hello>\n  PyReloadHandler @APP@/hello.py\n</Location>\n";

/* A server (not started) that loads mod_pyreload and MODDIR/mod_NAME.so
 * as NAME_module, in the order asked (the fixture's own line is off); NULL
 * if Debian's package for it is not installed. */
static httpd_t *
make(const char *name, int pyreload_first, const char *conf)
{
    static const httpd_file_t files[] = {
        {"hello.py", HANDLER_PY}, {"app.wsgi", APP_WSGI}, {NULL, NULL},
    };
    char path[256], other[320], *text = NULL;
    /* The process's Python is mod_wsgi's (or mod_python's): what it leaks at
     * exit is theirs, so only ASan's and UBSan's other checks apply here. */
    httpd_opts_t o = {.files = files, .no_module = 1, .no_leak_check = 1};
    httpd_t *h;

    snprintf(path, sizeof path, MODDIR "/mod_%s.so", name);
    /* make check installs it (DEB_TEST): missing, the test fails, never
     * passes without having looked. */
    ck_assert_msg(access(path, R_OK) == 0, "%s is not installed (make deps installs it)", path);
    snprintf(other, sizeof other, "LoadModule %s_module %s\n", name, path);
    ck_assert_int_gt(asprintf(&text, "%sLoadModule pyreload_module %s\n%s%s",
                              pyreload_first ? "" : other, httpd_module_path(),
                              pyreload_first ? other : "", conf), 0);
    o.config = text;
    h = httpd_new(&o);
    free(text);
    ck_assert_ptr_nonnull(h);
    return h;
}

static void
expect(httpd_t *h, const char *path, const char *body)
{
    http_resp_t *r = http_get(h, path);

    http_assert_status(r, 200);
    http_assert_body_has(r, body);
    http_free(r);
}

/* _i: 0 = mod_pyreload loaded first, 1 = mod_wsgi first. */
START_TEST(test_with_mod_wsgi)
{
    httpd_t *h;
    char *log;
    int rc;

    if (!(h = make("wsgi", _i == 0, WSGI_CONF))) {
        return;
    }
    rc = httpd_start(h);
    ck_assert_msg(rc == 0, "httpd did not start:\n%s", h->startup_output);
    for (int i = 0; i < 2; i++) {
        expect(h, "/hello", "pyreload ");
        expect(h, "/global", "wsgi group=");
        expect(h, "/daemon", "wsgi group=");
    }
    ck_assert(httpd_log_wait(h, 0, "[stdout] PYRT-printed /hello", 1, 3000));
    rc = httpd_stop(h);
    log = httpd_log(h);
    fprintf(stderr, "[%s] mod_wsgi %s: stop %.2f s, %s\n",
            getenv("PYR_MPM") ? getenv("PYR_MPM") : "event", _i ? "first" : "second",
            h->stop_seconds, h->stop_clean ? "clean" : "SIGKILL");
    ck_assert_msg(rc == 0 && h->stop_clean, "stop needed SIGKILL; log:\n%.3000s", log);
    ck_assert_msg(httpd_log_no_crash(h, 0) && !strstr(log, "Fatal Python error")
                  && !strstr(log, "PYR0001"), "log:\n%.3000s", log);
    ck_assert_msg(strstr(log, "PYR0003: Python was started in this process by mod_wsgi;"),
                  "log:\n%.3000s", log);
    free(log);
    httpd_free(h);
}
END_TEST

/* A WSGI application in its own sub-interpreter (mod_wsgi's default) next
 * to our handlers.  mod_wsgi 4.9 with Python 3.11 cannot end such a child
 * by itself (Py_EndInterpreter waits in threading._shutdown, also without
 * mod_pyreload: httpd SIGKILLs it after 10 s), so only the answers and the
 * absence of crashes are ours to check here. */
START_TEST(test_with_mod_wsgi_subinterpreter)
{
    httpd_t *h;
    char *log;

    if (!(h = make("wsgi", _i == 0, WSGI_CONF))) {
        return;
    }
    ck_assert_msg(httpd_start(h) == 0, "httpd did not start:\n%s", h->startup_output);
    for (int i = 0; i < 2; i++) {
        expect(h, "/hello", "pyreload ");
        expect(h, "/sub", "wsgi group=127.0.0.1:");
        expect(h, "/global", "wsgi group=");
    }
    (void)httpd_stop(h);
    log = httpd_log(h);
    ck_assert_msg(httpd_log_no_crash(h, 0) && !strstr(log, "Fatal Python error"),
                  "log:\n%.3000s", log);
    free(log);
    httpd_free(h);
}
END_TEST

START_TEST(test_with_mod_python_refused)
{
    httpd_t *h;
    char *out;
    int rc;

    if (!(h = make("python", _i == 0, PYTHON_CONF))) {
        return;
    }
    rc = httpd_start(h);
    ck_assert_msg(rc != 0, "httpd started with mod_python and mod_pyreload");
    ck_assert_msg(strstr(h->startup_output, "PYR0002") && strstr(h->startup_output, "mod_python")
                  && strstr(h->startup_output, "a2dismod python"),
                  "startup output:\n%s", h->startup_output);
    /* configtest must not say "Syntax OK" */
    rc = httpd_configtest(h, &out);
    ck_assert_msg(rc != 0 && strstr(out, "PYR0002") && !strstr(out, "Syntax OK"),
                  "apache2 -t: %d\n%s", rc, out);
    free(out);
    httpd_free(h);
}
END_TEST

Suite *
suite_coexist(void)
{
    Suite *s = suite_create("coexist");
    TCase *tc = httpd_tcase("embedders", 120, NULL, NULL);

    tcase_add_loop_test(tc, test_with_mod_wsgi, 0, 2);
    tcase_add_loop_test(tc, test_with_mod_wsgi_subinterpreter, 0, 2);
    tcase_add_loop_test(tc, test_with_mod_python_refused, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
