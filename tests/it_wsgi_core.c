/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_wsgi_core.c: a smoke suite of PyReloadWSGI against a real apache2: a
 * hello world, SCRIPT_NAME/PATH_INFO, a POST echoed through wsgi.input,
 * a generator response, and a reload of the WSGI file carrying state with
 * __clone__; and no Python memory kept per request by what a request
 * builds (environ, wsgi.input, wsgi.errors, start_response, write).  The
 * exhaustive PEP 3333 suite is tests/it_wsgi.c.
 *
 * Every case must pass under the event, worker and prefork MPMs (PYR_MPM).
 */
#include "fixture.h"
#include "it_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char hello_py[] =
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'Hello, ', b'WSGI']\n";

static const char paths_py[] =
    "def show(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    text = '%s|%s|%s' % (environ['SCRIPT_NAME'], environ['PATH_INFO'],\n"
    "                         environ['QUERY_STRING'])\n"
    "    return [text.encode('utf-8')]\n";

static const char dup_py[] =
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [environ.get('HTTP_X_DUP', '-').encode('latin-1')]\n";

/* One long line into wsgi.errors: é is two bytes in UTF-8, so that a cut
 * at a fixed byte count would fall inside one. */
static const char longerr_py[] =
    "def application(environ, start_response):\n"
    "    environ['wsgi.errors'].write('PYRT-long:' + '\\u00e9' * 2500 + ':end\\n')\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'logged']\n";

/* write() past the application's Content-Length. */
static const char clpast_py[] =
    "CT5 = [('Content-Type', 'text/plain'), ('Content-Length', '5')]\n"
    "def caught(environ, start_response):\n"
    "    write = start_response('200 OK', CT5)\n"
    "    try:\n"
    "        write(b'12345678')\n"
    "    except ValueError as e:\n"
    "        environ['wsgi.errors'].write('PYRT-clpast-raised %s\\n' % e)\n"
    "    return []\n"
    "def uncaught(environ, start_response):\n"
    "    start_response('200 OK', CT5)(b'12345678')\n"
    "    return []\n";

static const char echo_py[] =
    "def application(environ, start_response):\n"
    "    body = environ['wsgi.input'].read()\n"
    "    start_response('201 Created', [('Content-Type', 'application/octet-stream'),\n"
    "                                   ('X-Length', environ.get('CONTENT_LENGTH', '-'))])\n"
    "    return [body]\n";

static const char gen_py[] =
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    def blocks():\n"
    "        for i in range(1000):\n"
    "            yield b'%04d\\n' % i\n"
    "    return blocks()\n";

static const char counter_v1[] =
    "if 'hits' not in globals():\n"
    "    hits = {'n': 0}\n"
    "def __clone__(new):\n"
    "    new.hits = hits\n"
    "def application(environ, start_response):\n"
    "    hits['n'] += 1\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'v1 %d' % hits['n']]\n";

static const char counter_v2[] =
    "if 'hits' not in globals():\n"
    "    hits = {'n': 0}\n"
    "def __clone__(new):\n"
    "    new.hits = hits\n"
    "def application(environ, start_response):\n"
    "    hits['n'] += 1\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'v2 %d gen %d' % (hits['n'], environ['pyreload.generation'])]\n";

/* Everything a request builds, used; and the count of Python's blocks. */
static const char touch_py[] =
    "import gc, sys\n"
    "def touch(environ, start_response):\n"
    "    for k in list(environ):\n"
    "        environ[k]\n"
    "    environ['wsgi.input'].read()\n"
    "    environ['wsgi.errors'].flush()\n"
    "    dict(environ['pyreload.options'].items())\n"
    "    write = start_response('200 OK', [('Content-Type', 'text/plain'), ('X-A', '1')])\n"
    "    write(b'a')\n"
    "    def rest():\n"
    "        yield b'b'\n"
    "    return rest()\n"
    "def blocks(environ, start_response):\n"
    "    gc.collect()\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [str(sys.getallocatedblocks()).encode()]\n";

static httpd_t *srv;

static void
setup(void)
{
    static const httpd_file_t files[] = {
        { "hello.py", hello_py },   { "paths.py", paths_py },     { "echo.py", echo_py },
        { "gen.py", gen_py },       { "counter.py", counter_v1 },
        { "touch.py", touch_py },   { "dup.py", dup_py },
        { "longerr.py", longerr_py }, { "clpast.py", clpast_py }, { NULL, NULL },
    };
    httpd_opts_t o = { .config = "LoadModule headers_module "
                                 "/usr/lib/apache2/modules/mod_headers.so\n"
                                 "<Location /dup>\n"
                                 "  PyReloadWSGI @APP@/dup.py\n"
                                 "  RequestHeader add X-Dup a\n"
                                 "</Location>\n"
                                 "<Location /clpast/caught>\n"
                                 "  PyReloadWSGI @APP@/clpast.py::caught\n"
                                 "</Location>\n"
                                 "<Location /clpast/uncaught>\n"
                                 "  PyReloadWSGI @APP@/clpast.py::uncaught\n"
                                 "</Location>\n"
                                 "<Location /longerr>\n"
                                 "  PyReloadWSGI @APP@/longerr.py\n"
                                 "</Location>\n"
                                 "<Location /hello>\n"
                                 "  PyReloadWSGI @APP@/hello.py\n"
                                 "</Location>\n"
                                 "<Location /shop>\n"
                                 "  PyReloadWSGI @APP@/paths.py::show\n"
                                 "</Location>\n"
                                 "<LocationMatch ^/re/>\n"
                                 "  PyReloadWSGI @APP@/paths.py::show\n"
                                 "</LocationMatch>\n"
                                 "<Location /echo>\n"
                                 "  PyReloadWSGI @APP@/echo.py\n"
                                 "</Location>\n"
                                 "<Location /gen>\n"
                                 "  PyReloadWSGI @APP@/gen.py\n"
                                 "</Location>\n"
                                 "<Location /counter>\n"
                                 "  PyReloadWSGI @APP@/counter.py\n"
                                 "</Location>\n"
                                 "<Location /touch>\n"
                                 "  PyReloadWSGI @APP@/touch.py::touch\n"
                                 "  PyReloadOption k v\n"
                                 "</Location>\n"
                                 "<Location /blocks>\n"
                                 "  PyReloadWSGI @APP@/touch.py::blocks\n"
                                 "</Location>\n",
                       .files = files };

    srv = httpd_launch(&o);
    ck_assert_msg(srv != NULL, "httpd did not start");
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

START_TEST(test_hello)
{
    http_resp_t *r = http_get(srv, "/hello");

    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "Hello, WSGI");
    ck_assert_str_eq(r->content_type, "text/plain");
    ck_assert_str_eq(http_header(r, "Content-Length"), "11");
    http_free(r);
}
END_TEST

static const struct {
    const char *path, *want;
} path_cases[] = {
    { "/shop/items/7?x=1", "/shop|/items/7|x=1" },
    { "/shop", "/shop||" },
    { "/shop/", "/shop|/|" },
    { "/shop/caf%C3%A9", "/shop|/caf\xc3\x83\xc2\xa9|" },
    { "/re/a/b", "|/re/a/b|" },
};

START_TEST(test_paths)
{
    http_resp_t *r = http_get(srv, path_cases[_i].path);

    http_assert_status(r, 200);
    ck_assert_msg(strcmp(r->body, path_cases[_i].want) == 0, "%s: '%s', want '%s'",
                  path_cases[_i].path, r->body, path_cases[_i].want);
    http_free(r);
}
END_TEST

/* A header twice in r->headers_in (httpd's HTTP/1 reader merges what the
 * client repeats; mod_headers' "add" and HTTP/2 do not): joined, also when
 * both values are the same one character. */
START_TEST(test_header_twice)
{
    static const char *const one[] = { "X-Dup: a", NULL }, *const other[] = { "X-Dup: b", NULL };
    http_resp_t *r = http_request(srv, "GET", "/dup", one, NULL, 0);

    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "a, a");
    http_free(r);
    r = http_request(srv, "GET", "/dup", other, NULL, 0);
    ck_assert_str_eq(r->body, "b, a");
    http_free(r);
}
END_TEST

/* A 5,000-byte wsgi.errors line reaches the log whole, in pieces that
 * httpd does not cut (its limit is 8 KB a line, after it has escaped each
 * byte over 127 as four characters), each cut between characters. */
START_TEST(test_errors_long_line)
{
    size_t mark = httpd_log_mark(srv);
    char *log, *p, *line, *e;
    size_t chars = 0;
    int pieces = 0;

    free(it_get(srv, "/longerr", 200));
    ck_assert(httpd_log_wait(srv, mark, ":end", 1, 3000));
    log = httpd_log_since(srv, mark);
    for (line = strtok_r(log, "\n", &p); line; line = strtok_r(NULL, "\n", &p)) {
        if (!strstr(line, "\\xc3")) {
            continue;
        }
        pieces++;
        ck_assert_msg(strlen(line) < 8192, "a log line of %zu bytes", strlen(line));
        for (e = strstr(line, "\\xc3"); e; e = strstr(e + 4, "\\xc3")) {
            ck_assert_msg(strncmp(e, "\\xc3\\xa9", 8) == 0, "a piece cut inside a character");
            chars++;
        }
    }
    ck_assert_int_ge(pieces, 3);
    ck_assert_uint_eq(chars, 2500);
    free(log);
}
END_TEST

/* PEP 3333: write() past the Content-Length raises in the application,
 * after what fits was sent; uncaught, the response (whole by its
 * Content-Length) is not cut: the error is logged. */
START_TEST(test_write_past_content_length)
{
    size_t mark = httpd_log_mark(srv);
    int i;

    for (i = 0; i < 2; i++) {
        http_resp_t *r = http_get(srv, i ? "/clpast/uncaught" : "/clpast/caught");

        http_assert_status(r, 200);
        ck_assert_uint_eq(r->len, 5);
        ck_assert_str_eq(r->body, "12345");
        http_free(r);
    }
    ck_assert(httpd_log_wait(srv, mark, "PYRT-clpast-raised write() past the Content-Length", 1,
                             3000));
    ck_assert(httpd_log_wait(srv, mark, "PYR0403", 1, 3000));
    ck_assert(httpd_log_wait(srv, mark, "ValueError: write() past", 1, 3000));
    ck_assert_int_eq(httpd_log_count(srv, mark, "PYR0200"), 0);
    ck_assert(httpd_log_no_crash(srv, mark));
}
END_TEST

START_TEST(test_post_echo)
{
    size_t n = 300000, i;
    char *body = malloc(n);
    http_resp_t *r;

    for (i = 0; i < n; i++) {
        body[i] = (char)('a' + i % 26);
    }
    r = http_post(srv, "/echo", body, n);
    http_assert_status(r, 201);
    ck_assert_uint_eq(r->len, n);
    ck_assert(memcmp(r->body, body, n) == 0);
    ck_assert_str_eq(http_header(r, "X-Length"), "300000");
    http_free(r);
    free(body);
}
END_TEST

START_TEST(test_post_chunked)
{
    static const char *const hdrs[] = { "Transfer-Encoding: chunked", NULL };
    http_resp_t *r = http_request(srv, "POST", "/echo", hdrs, "chunked body", 12);

    http_assert_status(r, 201);
    ck_assert_str_eq(r->body, "chunked body");
    ck_assert_str_eq(http_header(r, "X-Length"), "-");
    http_free(r);
}
END_TEST

START_TEST(test_generator)
{
    http_resp_t *r = http_get(srv, "/gen");

    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 5000);
    ck_assert(strncmp(r->body, "0000\n0001\n", 10) == 0);
    ck_assert(strcmp(r->body + 4995, "0999\n") == 0);
    http_free(r);
}
END_TEST

START_TEST(test_reload_clone)
{
    char *a, *b;
    size_t mark = httpd_log_mark(srv);

    a = it_get(srv, "/counter", 200);
    ck_assert_msg(strncmp(a, "v1 ", 3) == 0, "got '%s'", a);
    it_put(srv, "counter.py", counter_v2);
    b = it_get(srv, "/counter", 200);
    /* One more hit than before, on the new code, counted in the carried dict. */
    ck_assert_msg(strncmp(b, "v2 ", 3) == 0 && atoi(b + 3) == atoi(a + 3) + 1, "'%s' then '%s'",
                  a, b);
    ck_assert_msg(strstr(b, " gen 1") == NULL, "generation not advanced: '%s'", b);
    ck_assert(httpd_log_no_crash(srv, mark));
    free(a);
    free(b);
}
END_TEST

static void
touch_n(http_client_t *c, int n)
{
    static const char *const hdrs[] = { "X-One: 1", "X-Two: 2", "Accept-Language: fr", NULL };
    http_req_t rq = { .path = "/touch?q=1", .headers = hdrs, .body = "xyz", .body_len = 3 };
    int i;

    for (i = 0; i < n; i++) {
        http_resp_t *r = http_client_do(c, &rq);

        http_assert_status(r, 200);
        ck_assert_str_eq(r->body, "ab");
        http_free(r);
    }
}

/* Python blocks after 3000 requests against before: nothing kept. */
START_TEST(test_no_growth_per_request)
{
    http_client_t *c = http_client_new(srv);
    long before, after;
    char *b;

    touch_n(c, 300);
    b = it_get(srv, "/blocks", 200);
    before = atol(b);
    free(b);
    touch_n(c, 3000);
    b = it_get(srv, "/blocks", 200);
    after = atol(b);
    free(b);
    fprintf(stderr, "wsgi: Python blocks %ld -> %ld over 3000 requests\n", before, after);
    ck_assert_msg(after - before < 300, "Python blocks %ld -> %ld over 3000 requests", before,
                  after);
    http_client_free(c);
}
END_TEST

Suite *
suite_wsgi_core(void)
{
    Suite *s = suite_create("wsgi_core");
    TCase *tc = httpd_tcase("wsgi_core", 120, setup, teardown);

    tcase_add_test(tc, test_hello);
    tcase_add_loop_test(tc, test_paths, 0, sizeof(path_cases) / sizeof(path_cases[0]));
    tcase_add_test(tc, test_header_twice);
    tcase_add_test(tc, test_errors_long_line);
    tcase_add_test(tc, test_write_past_content_length);
    tcase_add_test(tc, test_post_echo);
    tcase_add_test(tc, test_post_chunked);
    tcase_add_test(tc, test_generator);
    tcase_add_test(tc, test_reload_clone);
    tcase_add_test(tc, test_no_growth_per_request);
    suite_add_tcase(s, tc);
    return s;
}
