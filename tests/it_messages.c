/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_messages.c: messages that teach, on the request path.  A WSGI
 * application given to PyReloadHandler is told to use PyReloadWSGI, with the
 * exact message; a handler whose own TypeError has nothing to do with it is
 * not.  (Start-up messages are in it_config.c.)
 */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char W_PY[] =
    "import pyreload\n"
    "\n"
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'wsgi']\n"
    "\n"
    "class App:\n"
    "    def __call__(self, environ, start_response):\n"
    "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "        return [b'wsgi']\n"
    "\n"
    "app = App()\n"
    "\n"
    "def handler(req):\n"
    "    return len(42)   # a TypeError of its own\n";

static const char CONF[] =
    "<Location /fn>\n  PyReloadHandler @APP@/w.py::application\n</Location>\n"
    "<Location /obj>\n  PyReloadHandler @APP@/w.py::app\n</Location>\n"
    "<Location /own>\n  PyReloadHandler @APP@/w.py\n</Location>\n"
    "<Location /right>\n  PyReloadWSGI @APP@/w.py::app\n</Location>\n";

static httpd_t *srv;

static void
setup(void)
{
    static const httpd_file_t files[] = {{"w.py", W_PY}, {NULL, NULL}};
    httpd_opts_t o = {.config = CONF, .files = files};

    srv = httpd_launch(&o);
    ck_assert_msg(srv != NULL, "httpd did not start");
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

static const struct {
    const char *url, *callable;
} WSGI_GIVEN[] = {{"/fn", "application"}, {"/obj", "app"}};

START_TEST(test_wsgi_app_given_to_handler)
{
    size_t mark = httpd_log_mark(srv);
    char want[512], *text, *line;
    http_resp_t *r = http_get(srv, WSGI_GIVEN[_i].url);

    http_assert_status(r, 500);
    http_free(r);
    snprintf(want, sizeof(want),
             "PYR0702: @APP@/w.py::%s takes two arguments, as a WSGI application does "
             "(environ, start_response), and PyReloadHandler calls it with one (req): serve "
             "it with PyReloadWSGI @APP@/w.py::%s (<Location %s>, @DIR@/httpd.conf:",
             WSGI_GIVEN[_i].callable, WSGI_GIVEN[_i].callable, WSGI_GIVEN[_i].url);
    text = httpd_subst(srv, want);
    line = httpd_log_line(srv, mark, "PYR0702");
    ck_assert_msg(line && strstr(line, text), "want a line with\n%s\nlog:\n%s", text,
                  httpd_log_since(srv, mark));
    ck_assert_msg(strstr(line, "[pyreload:error]") && strstr(line, "[client 127.0.0.1:"),
                  "%s", line);
    free(line);
    free(text);
    /* The same file through the directive meant for it serves. */
    r = http_get(srv, "/right");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "wsgi");
    http_free(r);
}
END_TEST

START_TEST(test_handler_typeerror_no_hint)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/own");

    http_assert_status(r, 500);
    http_free(r);
    ck_assert_int_eq(httpd_log_count(srv, mark, "TypeError: object of type 'int' has no len()"),
                     1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "PYR0702"), 0);
}
END_TEST

Suite *
suite_messages(void)
{
    Suite *s = suite_create("messages");
    TCase *tc = httpd_tcase("request", 60, setup, teardown);

    tcase_add_loop_test(tc, test_wsgi_app_given_to_handler, 0,
                        (int)(sizeof(WSGI_GIVEN) / sizeof(WSGI_GIVEN[0])));
    tcase_add_test(tc, test_handler_typeerror_no_hint);
    suite_add_tcase(s, tc);
    return s;
}
