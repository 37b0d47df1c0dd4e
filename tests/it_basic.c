/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_basic.c: mod_pyreload in a real httpd: the request object, return
 * values, errors, stdio, contexts, environment isolation, clean stops.
 *
 * Handlers report what they saw in their body ("name=repr(value)" lines), so
 * a failing assertion prints the whole story.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "fixture.h"
#include "it_util.h"

#define LOG_WAIT_MS 3000

/* Needle in the log after mark (waits a little: the log is written by
 * another process). */
#define assert_log_has(h, mark, needle)                                        \
    do {                                                                       \
        if (!httpd_log_wait((h), (mark), (needle), 1, LOG_WAIT_MS)) {          \
            char *log_ = httpd_log_since((h), (mark));                         \
            ck_abort_msg("error log lacks \"%s\"; log since mark:\n%.3000s",   \
                         (needle), log_);                                      \
        }                                                                      \
    } while (0)

#define assert_log_lacks(h, mark, needle)                                      \
    do {                                                                       \
        char *log_ = httpd_log_since((h), (mark));                             \
        ck_assert_msg(strstr(log_, (needle)) == NULL,                          \
                      "error log has \"%s\"; log since mark:\n%.3000s",        \
                      (needle), log_);                                         \
        free(log_);                                                            \
    } while (0)

/* ================================================================== */
/* The main server: one handler file with many callables                */

static const char HELLO_PY[] =
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    req.content_type = 'text/plain; charset=utf-8'\n"
    "    req.write('Hello, world!\\n')\n"
    "    return pyreload.OK\n";

static const char MULTI_PY[] =
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    req.content_type = 'text/plain'\n"
    "    req.write('multi:handler')\n"
    "    return pyreload.OK\n"
    "\n"
    "def other(req):\n"
    "    req.content_type = 'text/plain'\n"
    "    req.write('multi:other uri=%s' % req.uri)\n"
    "    return pyreload.OK\n";

static const char REQ_PY[] =
    "import logging\n"
    "import sys\n"
    "import time\n"
    "import pyreload\n"
    "from pyreload import OK\n"
    "\n"
    "def _text(req, lines):\n"
    "    req.content_type = 'text/plain; charset=utf-8'\n"
    "    req.write('\\n'.join(lines) + '\\n')\n"
    "    return OK\n"
    "\n"
    "def _try(out, name, fn):\n"
    "    try:\n"
    "        r = fn()\n"
    "        out.append('%s=ok:%r' % (name, r))\n"
    "    except Exception as e:\n"
    "        out.append('%s=%s' % (name, type(e).__name__))\n"
    "\n"
    "ATTRS = ('method', 'uri', 'unparsed_uri', 'path_info', 'args', 'protocol',\n"
    "         'hostname', 'remote_addr', 'filename', 'status')\n"
    "\n"
    "def attrs(req):\n"
    "    seen = [(n, getattr(req, n)) for n in ATTRS]\n"
    "    req.headers_out['X-Method'] = req.method\n"
    "    out = ['%s=%r' % nv for nv in seen]\n"
    "    out.append('strs=%r' % all(type(v) is str for n, v in seen\n"
    "                               if n not in ('args', 'status')))\n"
    "    out.append('status_type=%s' % type(req.status).__name__)\n"
    "    return _text(req, out)\n"
    "\n"
    "def headers_in(req):\n"
    "    h = req.headers_in\n"
    "    out = []\n"
    "    out.append('get=%r' % h.get('x-pyr-test'))\n"
    "    out.append('upper=%r' % h['X-PYR-TEST'])\n"
    "    out.append('mixed=%r' % h['X-Pyr-Test'])\n"
    "    out.append('in=%r' % ('x-PYR-test' in h))\n"
    "    out.append('notin=%r' % ('X-Absent' in h))\n"
    "    out.append('getnone=%r' % h.get('X-Absent'))\n"
    "    out.append('getdflt=%r' % h.get('X-Absent', 'dflt'))\n"
    "    _try(out, 'missing', lambda: h['X-Absent'])\n"
    "    keys = [k.lower() for k in h.keys()]\n"
    "    out.append('keys=%r' % ('x-pyr-test' in keys and 'host' in keys))\n"
    "    out.append('iter=%r' % ('x-pyr-test' in [k.lower() for k in h]))\n"
    "    items = dict((k.lower(), v) for k, v in h.items())\n"
    "    out.append('items=%r' % items.get('x-pyr-test'))\n"
    "    out.append('len=%r' % (len(h) == len(keys) and len(h) >= 3))\n"
    "    out.append('host=%r' % h.get('HOST'))\n"
    "    def setitem():\n"
    "        h['X-New'] = '1'\n"
    "    def delitem():\n"
    "        del h['X-Pyr-Test']\n"
    "    _try(out, 'setitem', setitem)\n"
    "    _try(out, 'delitem', delitem)\n"
    "    out.append('after=%r' % h.get('X-Pyr-Test'))\n"
    "    out.append('new=%r' % h.get('X-New'))\n"
    "    return _text(req, out)\n"
    "\n"
    "def headers_out(req):\n"
    "    ho = req.headers_out\n"
    "    ho['X-One'] = '1'\n"
    "    ho['x-two'] = 'a'\n"
    "    ho.add('X-Two', 'b')\n"
    "    ho['X-Gone'] = 'g'\n"
    "    del ho['x-GONE']\n"
    "    ho['X-Replace'] = 'old'\n"
    "    ho['x-replace'] = 'new'\n"
    "    req.err_headers_out['X-Err'] = 'e'\n"
    "    req.err_headers_out.add('X-Err-Add', 'e1')\n"
    "    req.err_headers_out.add('X-Err-Add', 'e2')\n"
    "    out = ['in=%r' % ('X-ONE' in ho), 'get=%r' % ho.get('x-one'),\n"
    "           'idx=%r' % ho['X-Two'], 'gone=%r' % ('X-Gone' in ho),\n"
    "           'getgone=%r' % ho.get('X-Gone'),\n"
    "           'twos=%r' % sorted(v for k, v in ho.items() if k.lower() == 'x-two'),\n"
    "           'len=%r' % (len(ho) >= 3),\n"
    "           'errin=%r' % ('x-err' in req.err_headers_out),\n"
    "           'errget=%r' % req.err_headers_out.get('X-ERR')]\n"
    "    return _text(req, out)\n"
    "\n"
    "def err_headers(req):\n"
    "    req.err_headers_out['X-Err-Kept'] = 'kept'\n"
    "    req.headers_out['X-Normal-Dropped'] = 'dropped'\n"
    "    req.write('PYRT-discarded-body')\n"
    "    if req.args == 'raise':\n"
    "        raise pyreload.HTTPError(pyreload.HTTP_FORBIDDEN)\n"
    "    return pyreload.HTTP_NOT_FOUND\n"
    "\n"
    "def ctype(req):\n"
    "    req.content_type = 'application/json'\n"
    "    req.status = 201\n"
    "    req.write('{\"got\": \"%s %d\"}' % (req.content_type, req.status))\n"
    "    return OK\n"
    "\n"
    "def echo(req):\n"
    "    data = req.read()\n"
    "    rest = req.read()\n"
    "    req.content_type = 'application/octet-stream'\n"
    "    req.headers_out['X-Type'] = type(data).__name__\n"
    "    req.headers_out['X-Len'] = str(len(data))\n"
    "    req.headers_out['X-Rest'] = repr(rest)\n"
    "    req.write(data)\n"
    "    return OK\n"
    "\n"
    "def chunks(req):\n"
    "    size = int(req.args or '4096')\n"
    "    parts = []\n"
    "    while True:\n"
    "        c = req.read(size)\n"
    "        if not c:\n"
    "            break\n"
    "        if type(c) is not bytes or len(c) > size:\n"
    "            raise AssertionError('read(%d) gave %r bytes' % (size, len(c)))\n"
    "        parts.append(c)\n"
    "    req.headers_out['X-Chunks'] = str(len(parts))\n"
    "    req.content_type = 'application/octet-stream'\n"
    "    req.write(b''.join(parts))\n"
    "    return OK\n"
    "\n"
    "def read_catch(req):\n"
    "    try:\n"
    "        data = req.read()\n"
    "    except pyreload.HTTPError as e:\n"
    "        req.log_error('PYRT-caught HTTPError %r' % (getattr(e, 'status', e.args),),\n"
    "                      pyreload.APLOG_WARNING)\n"
    "        raise\n"
    "    req.write('read %d bytes' % len(data))\n"
    "    return OK\n"
    "\n"
    "def wstr(req):\n"
    "    req.content_type = 'text/plain; charset=utf-8'\n"
    "    req.write('h\\u00e9llo w\\u00f6rld \\u2713 \\u65e5\\u672c')\n"
    "    return OK\n"
    "\n"
    "def wbytes(req):\n"
    "    req.content_type = 'application/octet-stream'\n"
    "    req.write(b'\\x00\\x01')\n"
    "    req.write(b'')\n"
    "    req.write(b'\\xfe\\xff')\n"
    "    return OK\n"
    "\n"
    "def wint(req):\n"
    "    req.write('PYRT-before-int')\n"
    "    req.write(42)\n"
    "    return OK\n"
    "\n"
    "def badarg(req):\n"
    "    req.read('PYRT-not-a-size')\n"
    "    return OK\n"
    "\n"
    "def flush(req):\n"
    "    req.content_type = 'text/plain'\n"
    "    req.write('first\\n')\n"
    "    req.flush()\n"
    "    time.sleep(1.0)\n"
    "    req.write('second\\n')\n"
    "    return OK\n"
    "\n"
    "def options(req):\n"
    "    o = req.options\n"
    "    out = ['server=%r' % o.get('SERVER-LEVEL'), 'loc=%r' % o.get('loc'),\n"
    "           'shared=%r' % o.get('Shared'), 'idx=%r' % o['server-level'],\n"
    "           'len=%d' % len(o), 'in=%r' % ('Server-Level' in o),\n"
    "           'missing=%r' % o.get('nope')]\n"
    "    def setitem():\n"
    "        o['x'] = 'y'\n"
    "    _try(out, 'setitem', setitem)\n"
    "    out.append('after=%r' % o.get('x'))\n"
    "    return _text(req, out)\n"
    "\n"
    "def logerr(req):\n"
    "    m = req.args\n"
    "    req.log_error('PYRT-%s-default' % m)\n"
    "    req.log_error('PYRT-%s-warning' % m, pyreload.APLOG_WARNING)\n"
    "    req.log_error('PYRT-%s-info' % m, pyreload.APLOG_INFO)\n"
    "    req.log_error('PYRT-%s-debug' % m, pyreload.APLOG_DEBUG)\n"
    "    out = []\n"
    "    _try(out, 'kw', lambda: req.log_error('PYRT-%s-notice' % m,\n"
    "                                         level=pyreload.APLOG_NOTICE))\n"
    "    return _text(req, out)\n"
    "\n"
    "RETS = {'ok': lambda: pyreload.OK, '200': lambda: 200,\n"
    "        '404': lambda: pyreload.HTTP_NOT_FOUND,\n"
    "        '400': lambda: pyreload.HTTP_BAD_REQUEST, '503': lambda: 503,\n"
    "        'done': lambda: pyreload.DONE,\n"
    "        'none': lambda: None, 'str': lambda: 'x', 'true': lambda: True,\n"
    "        '42': lambda: 42, '1000': lambda: 1000, 'float': lambda: 200.0}\n"
    "\n"
    "def ret(req):\n"
    "    req.content_type = 'text/plain'\n"
    "    req.write('PYRT-written-%s' % req.args)\n"
    "    return RETS[req.args]()\n"
    "\n"
    "def declined(req):\n"
    "    return pyreload.DECLINED\n"
    "\n"
    "def raise403(req):\n"
    "    req.write('PYRT-discarded-body')\n"
    "    raise pyreload.HTTPError(403)\n"
    "\n"
    "def exc(req):\n"
    "    req.write('PYRT-discarded-body')\n"
    "    raise ValueError('PYRT-boom')\n"
    "\n"
    "NAMES = ('OK', 'DECLINED', 'DONE', 'HTTP_OK', 'HTTP_CREATED', 'HTTP_BAD_REQUEST',\n"
    "         'HTTP_FORBIDDEN', 'HTTP_NOT_FOUND', 'HTTP_REQUEST_ENTITY_TOO_LARGE',\n"
    "         'HTTP_INTERNAL_SERVER_ERROR', 'APLOG_ERR', 'APLOG_WARNING',\n"
    "         'APLOG_NOTICE', 'APLOG_INFO', 'APLOG_DEBUG')\n"
    "\n"
    "def consts(req):\n"
    "    out = ['%s=%r' % (n, getattr(pyreload, n, 'MISSING')) for n in NAMES]\n"
    "    out.append('HTTPError_is_Exception=%r'\n"
    "               % issubclass(pyreload.HTTPError, Exception))\n"
    "    out.append('HTTPError_arg0=%r' % (pyreload.HTTPError(404).args[0],))\n"
    "    return _text(req, out)\n"
    "\n"
    "def stdio(req):\n"
    "    m = req.args\n"
    "    print('PYRT-print-' + m)\n"
    "    sys.stdout.write('PYRT-stdout-%s\\n' % m)\n"
    "    sys.stderr.write('PYRT-stderr-%s\\n' % m)\n"
    "    sys.stdout.flush()\n"
    "    sys.stderr.flush()\n"
    "    logging.warning('PYRT-logging-%s', m)\n"
    "    req.content_type = 'text/plain'\n"
    "    req.write('stdio-ok')\n"
    "    return OK\n";

/* Each callable of req.py gets <Location /NAME> (no two are prefixes). */
static const char *const REQ_CALLABLES[] = {
    "attrs", "headers_in", "headers_out", "err_headers", "ctype", "echo", "chunks",
    "wstr", "wbytes", "wint", "badarg", "flush", "logerr", "ret", "raise403", "exc",
    "consts", "stdio",
};

static const char MAIN_CONF[] =
    "PyReloadOption Server-Level yes\n"
    "PyReloadOption Shared server\n"
    "<Location /hello>\n"
    "  PyReloadHandler @APP@/hello.py\n"
    "</Location>\n"
    "<Location /options>\n"
    "  PyReloadHandler @APP@/req.py::options\n"
    "  PyReloadOption Loc here\n"
    "  PyReloadOption shared location\n"
    "</Location>\n"
    "<Location /opts-plain>\n"
    "  PyReloadHandler @APP@/req.py::options\n"
    "</Location>\n"
    "<Location /limited>\n"
    "  LimitRequestBody 1000\n"
    "  PyReloadHandler @APP@/req.py::echo\n"
    "</Location>\n"
    "<Location /limit-catch>\n"
    "  LimitRequestBody 1000\n"
    "  PyReloadHandler @APP@/req.py::read_catch\n"
    "</Location>\n"
    "<Location /debug>\n"
    "  PyReloadDebug On\n"
    "  PyReloadHandler @APP@/req.py::exc\n"
    "</Location>\n"
    "<Location /declined.txt>\n"
    "  PyReloadHandler @APP@/req.py::declined\n"
    "</Location>\n"
    "<Location /multi-a>\n"
    "  PyReloadHandler @APP@/multi.py\n"
    "</Location>\n"
    "<Location /multi-b>\n"
    "  PyReloadHandler @APP@/multi.py::other\n"
    "</Location>\n"
    "<Directory @DIR@/htdocs/dirctx>\n"
    "  PyReloadHandler @APP@/multi.py::other\n"
    "</Directory>\n";

static httpd_t *srv;
static pid_t srv_child;

static void setup_main(void)
{
    static const httpd_file_t files[] = {
        {"hello.py", HELLO_PY},
        {"multi.py", MULTI_PY},
        {"req.py", REQ_PY},
        {"../htdocs/declined.txt", "PYRT static file content\n"},
        {"../htdocs/dirctx/.keep", ""},
        {NULL, NULL},
    };
    char *conf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&conf, &len);
    httpd_opts_t o = {.files = files};

    fputs(MAIN_CONF, f);
    for (size_t i = 0; i < sizeof REQ_CALLABLES / sizeof REQ_CALLABLES[0]; i++)
        fprintf(f, "<Location /%s>\n  PyReloadHandler @APP@/req.py::%s\n</Location>\n",
                REQ_CALLABLES[i], REQ_CALLABLES[i]);
    fclose(f);
    o.config = conf;
    srv = httpd_launch(&o);
    free(conf);
    ck_assert_msg(srv != NULL, "httpd with mod_pyreload did not start");
    srv_child = httpd_child(srv);
}

static void teardown_main(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* Assert that the server's one child is the one from setup, and nothing
 * crashed: run last in each TCase with a shared server. */
static void assert_same_child(httpd_t *h, pid_t child)
{
    pid_t kids[8];
    int n = httpd_children(h, kids, 8);
    char *log = httpd_log(h);
    ck_assert_msg(httpd_log_no_crash(h, 0), "a child crashed; log:\n%.4000s", log);
    ck_assert_msg(n == 1 && kids[0] == child, "children: %d, first %d, expected %d", n,
                  n ? (int)kids[0] : 0, (int)child);
    free(log);
}

START_TEST(test_main_no_crash)
{
    http_resp_t *r = http_get(srv, "/hello");
    http_assert_status(r, 200);
    http_free(r);
    assert_same_child(srv, srv_child);
}
END_TEST

/* ---- hello ---------------------------------------------------------- */

START_TEST(test_hello)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/hello");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "Hello, world!\n");
    ck_assert_str_eq(r->content_type, "text/plain; charset=utf-8");
    ck_assert_ptr_nonnull(http_header(r, "Content-Length"));
    ck_assert_int_eq(atoi(http_header(r, "Content-Length")), 14);
    http_free(r);
    assert_log_lacks(srv, mark, "Traceback");
    assert_log_lacks(srv, mark, ":error]");
}
END_TEST

START_TEST(test_hello_keepalive)
{
    http_client_t *c = http_client_new(srv);
    for (int i = 0; i < 50; i++) {
        http_resp_t *r = http_client_get(c, "/hello");
        http_assert_status(r, 200);
        ck_assert_str_eq(r->body, "Hello, world!\n");
        http_free(r);
    }
    ck_assert_int_eq(http_client_connects(c), 1);
    http_client_free(c);
}
END_TEST

START_TEST(test_load_logged)
{
    /* every handler file was loaded by now (hello ran in test_hello) */
    char *path = httpd_path(srv, "hello.py");
    char *line, *load;
    http_resp_t *r = http_get(srv, "/hello");
    http_free(r);
    /* The load's line, not its code's (PYR0600 compiled / PYR0601 from cache). */
    ck_assert_int_ne(asprintf(&load, "%s: generation", path), -1);
    line = httpd_log_line(srv, 0, load);
    free(load);
    ck_assert_msg(line && strstr(line, "generation 1 loaded in") && strstr(line, "PYR"),
                  "no load line for %s: %s", path, line ? line : "(none)");
    ck_assert_ptr_nonnull(strstr(line, ":info]"));
    free(line);
    free(path);
}
END_TEST

/* ---- request attributes (table) ------------------------------------ */

typedef struct {
    const char *name;
    const char *method;
    const char *path;
    const char *host;       /* Host header, NULL: default */
    int http10;
    const char *body;
    const char *expect[8];  /* substrings of the body (@DIR@ substituted) */
} attr_case_t;

static const attr_case_t ATTR_CASES[] = {
    {"plain GET", "GET", "/attrs", NULL, 0, NULL,
     {"method='GET'", "uri='/attrs'", "unparsed_uri='/attrs'", "args=None",
      "path_info=''", "protocol='HTTP/1.1'", "status=200", "strs=True"}},
    {"query", "GET", "/attrs/q?a=1&b=%20x", NULL, 0, NULL,
     {"uri='/attrs/q'", "unparsed_uri='/attrs/q?a=1&b=%20x'", "args='a=1&b=%20x'",
      "path_info='/q'"}},
    {"empty query", "GET", "/attrs?", NULL, 0, NULL, {"unparsed_uri='/attrs?'", "uri='/attrs'"}},
    {"path_info", "GET", "/attrs/extra/path.txt", NULL, 0, NULL,
     {"uri='/attrs/extra/path.txt'", "path_info='/extra/path.txt'",
      "filename='@DIR@/htdocs/attrs'"}},
    {"filename", "GET", "/attrs", NULL, 0, NULL, {"filename='@DIR@/htdocs/attrs'"}},
    {"decoded uri", "GET", "/attrs/a%20b", NULL, 0, NULL,
     {"uri='/attrs/a b'", "unparsed_uri='/attrs/a%20b'", "path_info='/a b'"}},
    {"POST", "POST", "/attrs", NULL, 0, "a=1", {"method='POST'", "args=None"}},
    {"PUT", "PUT", "/attrs/put", NULL, 0, "data", {"method='PUT'", "uri='/attrs/put'"}},
    {"DELETE", "DELETE", "/attrs", NULL, 0, NULL, {"method='DELETE'"}},
    {"PATCH", "PATCH", "/attrs", NULL, 0, "x", {"method='PATCH'"}},
    {"HTTP/1.0", "GET", "/attrs", NULL, 1, NULL, {"protocol='HTTP/1.0'"}},
    {"hostname", "GET", "/attrs", NULL, 0, NULL,
     {"hostname='127.0.0.1'", "remote_addr='127.0.0.1'"}},
    {"Host header", "GET", "/attrs", "Example.TEST", 0, NULL, {"hostname='example.test'"}},
    {"Host with port", "GET", "/attrs", "other.test:8080", 0, NULL,
     {"hostname='other.test'"}},
};

START_TEST(test_attrs)
{
    const attr_case_t *c = &ATTR_CASES[_i];
    char host[128];
    const char *hdrs[2] = {NULL, NULL};
    http_req_t rq = {.method = c->method, .path = c->path, .http10 = c->http10,
                     .body = c->body, .body_len = c->body ? strlen(c->body) : 0};
    http_resp_t *r;
    if (c->host) {
        snprintf(host, sizeof host, "Host: %s", c->host);
        hdrs[0] = host;
        rq.headers = hdrs;
    }
    r = http_do(srv, &rq);
    ck_assert_msg(r->status == 200, "[%s] status %ld (%s); body:\n%s", c->name, r->status,
                  r->error, r->body);
    for (int i = 0; i < 8 && c->expect[i]; i++) {
        char *want = httpd_subst(srv, c->expect[i]);
        ck_assert_msg(strstr(r->body, want) != NULL, "[%s] body lacks %s; body:\n%s",
                      c->name, want, r->body);
        free(want);
    }
    ck_assert_str_eq(http_header(r, "X-Method"), c->method);
    http_free(r);
}
END_TEST

START_TEST(test_attrs_head)
{
    http_resp_t *r = http_request(srv, "HEAD", "/attrs", NULL, NULL, 0);
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 0);
    ck_assert_ptr_nonnull(http_header(r, "X-Method"));
    ck_assert_str_eq(http_header(r, "X-Method"), "HEAD");
    http_free(r);
}
END_TEST

/* ---- headers -------------------------------------------------------- */

START_TEST(test_headers_in)
{
    static const char *const hdrs[] = {"X-Pyr-Test: value-1", NULL};
    char want[64];
    http_resp_t *r = http_request(srv, "GET", "/headers_in", hdrs, NULL, 0);
    static const char *const expect[] = {
        "get='value-1'", "upper='value-1'", "mixed='value-1'", "in=True", "notin=False",
        "getnone=None", "getdflt='dflt'", "missing=KeyError", "keys=True", "iter=True",
        "items='value-1'", "len=True", "setitem=TypeError", "after='value-1'", "new=None",
    };
    http_assert_status(r, 200);
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        http_assert_body_has(r, expect[i]);
    snprintf(want, sizeof want, "host='127.0.0.1:%d'", srv->port);
    http_assert_body_has(r, want);
    /* read-only: del must not succeed either */
    http_assert_body_lacks(r, "delitem=ok");
    http_free(r);
}
END_TEST

START_TEST(test_headers_out)
{
    http_resp_t *r = http_get(srv, "/headers_out");
    const char *two0, *two1;
    http_assert_status(r, 200);
    ck_assert_str_eq(http_header(r, "X-One"), "1");
    /* add() gives a second X-Two (httpd may fold them into one line) */
    two0 = http_header_nth(r, "X-Two", 0);
    two1 = http_header_nth(r, "X-Two", 1);
    ck_assert_msg(two0 != NULL, "no X-Two; headers:\n%s", r->headers);
    if (two1) {
        ck_assert_str_eq(two0, "a");
        ck_assert_str_eq(two1, "b");
    } else {
        ck_assert_str_eq(two0, "a, b");
    }
    ck_assert_msg(http_header(r, "X-Gone") == NULL, "X-Gone sent; headers:\n%s", r->headers);
    ck_assert_int_eq(http_header_count(r, "X-Replace"), 1);
    ck_assert_str_eq(http_header(r, "X-Replace"), "new");
    ck_assert_str_eq(http_header(r, "X-Err"), "e");
    ck_assert_int_eq(http_header_count(r, "X-Err-Add") + (http_header(r, "X-Err-Add")
                         && strchr(http_header(r, "X-Err-Add"), ',') ? 1 : 0), 2);
    http_assert_body_has(r, "in=True");
    http_assert_body_has(r, "get='1'");
    http_assert_body_has(r, "idx='a'");
    http_assert_body_has(r, "gone=False");
    http_assert_body_has(r, "getgone=None");
    http_assert_body_has(r, "twos=['a', 'b']");
    http_assert_body_has(r, "len=True");
    http_assert_body_has(r, "errin=True");
    http_assert_body_has(r, "errget='e'");
    http_free(r);
}
END_TEST

START_TEST(test_err_headers_survive_error)
{
    /* _i: 0 returns 404, 1 raises HTTPError(403) */
    http_resp_t *r = http_get(srv, _i ? "/err_headers?raise" : "/err_headers");
    http_assert_status(r, _i ? 403 : 404);
    http_assert_body_has(r, _i ? "<title>403 Forbidden</title>" : "<title>404 Not Found</title>");
    http_assert_body_lacks(r, "PYRT-discarded-body");
    ck_assert_msg(http_header(r, "X-Err-Kept") && !strcmp(http_header(r, "X-Err-Kept"), "kept"),
                  "X-Err-Kept missing; headers:\n%s", r->headers);
    ck_assert_msg(http_header(r, "X-Normal-Dropped") == NULL,
                  "headers_out survived an error status; headers:\n%s", r->headers);
    http_free(r);
}
END_TEST

START_TEST(test_content_type_and_status)
{
    http_resp_t *r = http_get(srv, "/ctype");
    http_assert_status(r, 201);
    ck_assert_str_eq(r->content_type, "application/json");
    ck_assert_str_eq(r->body, "{\"got\": \"application/json 201\"}");
    http_free(r);
}
END_TEST

/* ---- request body --------------------------------------------------- */

static char *pattern(size_t n)
{
    char *p = malloc(n + 1);
    for (size_t i = 0; i < n; i++) p[i] = (char)((i * 7 + i / 251) & 0xff);
    p[n] = '\0';
    return p;
}

static const size_t ECHO_SIZES[] = {0, 1, 11, 65536, 1 << 20};

START_TEST(test_post_echo)
{
    size_t n = ECHO_SIZES[_i];
    char *body = pattern(n);
    char len[32];
    http_resp_t *r = http_post(srv, "/echo", body, n);
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, n);
    ck_assert_msg(memcmp(r->body, body, n) == 0, "echoed body differs (size %zu)", n);
    snprintf(len, sizeof len, "%zu", n);
    ck_assert_str_eq(http_header(r, "X-Len"), len);
    ck_assert_str_eq(http_header(r, "X-Type"), "bytes");
    ck_assert_str_eq(http_header(r, "X-Rest"), "b''");
    ck_assert_str_eq(r->content_type, "application/octet-stream");
    http_free(r);
    free(body);
}
END_TEST

START_TEST(test_put_echo)
{
    static const char body[] = "put body \x01\x02";
    http_resp_t *r = http_request(srv, "PUT", "/echo", NULL, body, sizeof body - 1);
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, sizeof body - 1);
    ck_assert(memcmp(r->body, body, sizeof body - 1) == 0);
    http_free(r);
}
END_TEST

START_TEST(test_get_no_body)
{
    http_resp_t *r = http_get(srv, "/echo");
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 0);
    ck_assert_str_eq(http_header(r, "X-Len"), "0");
    ck_assert_str_eq(http_header(r, "X-Rest"), "b''");
    http_free(r);
}
END_TEST

static const int CHUNK_SIZES[] = {1000, 4096, 65536};

START_TEST(test_read_chunks)
{
    size_t n = (1 << 20) + 123;
    char *body = pattern(n);
    char path[64];
    int size = CHUNK_SIZES[_i];
    http_resp_t *r;
    snprintf(path, sizeof path, "/chunks?%d", size);
    r = http_post(srv, path, body, n);
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, n);
    ck_assert_msg(memcmp(r->body, body, n) == 0, "echoed body differs");
    ck_assert_ptr_nonnull(http_header(r, "X-Chunks"));
    ck_assert_int_ge(atoi(http_header(r, "X-Chunks")), (int)((n + size - 1) / size));
    http_free(r);
    free(body);
}
END_TEST

START_TEST(test_read_chunked_request)
{
    /* a request body in chunked transfer-coding (no Content-Length) */
    static const char req[] =
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    size_t len;
    char *raw = http_raw(srv, req, sizeof req - 1, &len, 5000);
    ck_assert_msg(!strncmp(raw, "HTTP/1.1 200 ", 13), "response:\n%s", raw);
    ck_assert_msg(strstr(raw, "\r\n\r\nhello world") != NULL || strstr(raw, "hello world"),
                  "response:\n%s", raw);
    ck_assert_msg(strstr(raw, "X-Len: 11") != NULL, "response:\n%s", raw);
    free(raw);
}
END_TEST

START_TEST(test_limit_request_body)
{
    size_t mark = httpd_log_mark(srv);
    char *body = pattern(2000);
    http_resp_t *r;

    /* within the limit */
    r = http_post(srv, "/limited", body, 1000);
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 1000);
    http_free(r);
    /* over it: HTTPError(413) not caught → 413 */
    r = http_post(srv, "/limited", body, 2000);
    http_assert_status(r, 413);
    http_assert_body_has(r, "<title>413 ");
    http_free(r);
    /* the exception is pyreload.HTTPError with status 413 */
    r = http_post(srv, "/limit-catch", body, 2000);
    http_assert_status(r, 413);
    http_free(r);
    assert_log_has(srv, mark, "PYRT-caught HTTPError 413");
    assert_log_lacks(srv, mark, "Traceback");
    free(body);
}
END_TEST

/* ---- write / flush --------------------------------------------------- */

START_TEST(test_write_str_utf8)
{
    static const char want[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac";
    http_resp_t *r = http_get(srv, "/wstr");
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, sizeof want - 1);
    ck_assert_str_eq(r->body, want);
    http_free(r);
}
END_TEST

START_TEST(test_write_bytes)
{
    http_resp_t *r = http_get(srv, "/wbytes");
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 4);
    ck_assert(memcmp(r->body, "\x00\x01\xfe\xff", 4) == 0);
    http_free(r);
}
END_TEST

START_TEST(test_write_int_is_500)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/wint");
    http_assert_status(r, 500);
    http_assert_body_has(r, "<title>500 Internal Server Error</title>");
    http_assert_body_lacks(r, "PYRT-before-int");
    http_assert_body_lacks(r, "Traceback");
    http_free(r);
    assert_log_has(srv, mark, "Traceback (most recent call last)");
    assert_log_has(srv, mark, "TypeError");
}
END_TEST

START_TEST(test_bad_argument_is_500)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/badarg");
    http_assert_status(r, 500);
    http_assert_body_lacks(r, "Traceback");
    http_free(r);
    assert_log_has(srv, mark, "Traceback (most recent call last)");
    assert_log_has(srv, mark, "TypeError");
}
END_TEST

START_TEST(test_flush_streams)
{
    http_resp_t *r = http_get(srv, "/flush");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "first\nsecond\n");
    /* the handler sleeps 1 s after flush(): the first part came before */
    ck_assert_msg(r->first_body_ms >= 0 && r->first_body_ms < 700,
                  "first body byte after %.0f ms (total %.0f ms): flush() did not send",
                  r->first_body_ms, r->total_ms);
    ck_assert_msg(r->total_ms >= 900, "total %.0f ms", r->total_ms);
    http_free(r);
}
END_TEST

/* ---- options, log_error, constants ---------------------------------- */

START_TEST(test_options_merged)
{
    http_resp_t *r = http_get(srv, "/options");
    http_assert_status(r, 200);
    http_assert_body_has(r, "server='yes'");
    http_assert_body_has(r, "loc='here'");
    http_assert_body_has(r, "shared='location'");
    http_assert_body_has(r, "idx='yes'");
    http_assert_body_has(r, "len=3");
    http_assert_body_has(r, "in=True");
    http_assert_body_has(r, "missing=None");
    http_assert_body_lacks(r, "setitem=ok");
    http_assert_body_has(r, "after=None");
    http_free(r);

    r = http_get(srv, "/opts-plain");
    http_assert_status(r, 200);
    http_assert_body_has(r, "server='yes'");
    http_assert_body_has(r, "loc=None");
    http_assert_body_has(r, "shared='server'");
    http_assert_body_has(r, "len=2");
    http_free(r);
}
END_TEST

START_TEST(test_log_error_levels)
{
    size_t mark = httpd_log_mark(srv);
    char path[64], needle[64], *line;
    int tag = (int)getpid();
    http_resp_t *r;
    static const struct { const char *suffix, *level; } want[] = {
        {"default", ":error]"}, {"warning", ":warn]"}, {"info", ":info]"},
        {"notice", ":notice]"},
    };

    snprintf(path, sizeof path, "/logerr?m%d", tag);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    http_assert_body_has(r, "kw=ok");
    http_free(r);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(needle, sizeof needle, "PYRT-m%d-%s", tag, want[i].suffix);
        assert_log_has(srv, mark, needle);
        line = httpd_log_line(srv, mark, needle);
        ck_assert_msg(line && strstr(line, want[i].level), "%s not at level %s: %s", needle,
                      want[i].level, line ? line : "(none)");
        ck_assert_msg(strstr(line, "127.0.0.1") != NULL, "no client in: %s", line);
        free(line);
    }
    /* below LogLevel info: not written */
    snprintf(needle, sizeof needle, "PYRT-m%d-debug", tag);
    assert_log_lacks(srv, mark, needle);
}
END_TEST

START_TEST(test_constants)
{
    static const char *const expect[] = {
        "OK=0", "DECLINED=-1", "DONE=-2", "HTTP_OK=200", "HTTP_CREATED=201",
        "HTTP_BAD_REQUEST=400", "HTTP_FORBIDDEN=403", "HTTP_NOT_FOUND=404",
        "HTTP_REQUEST_ENTITY_TOO_LARGE=413", "HTTP_INTERNAL_SERVER_ERROR=500",
        "APLOG_ERR=3", "APLOG_WARNING=4", "APLOG_NOTICE=5", "APLOG_INFO=6", "APLOG_DEBUG=7",
        "HTTPError_is_Exception=True", "HTTPError_arg0=404",
    };
    http_resp_t *r = http_get(srv, "/consts");
    http_assert_status(r, 200);
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        http_assert_body_has(r, expect[i]);
    http_free(r);
}
END_TEST

/* ---- return values (table) ------------------------------------------ */

typedef struct {
    const char *path;
    long status;
    const char *body_has;     /* NULL: nothing to check */
    const char *body_lacks;
    const char *log_has;      /* NULL: no check */
    int no_traceback;         /* 1: "Traceback" must not be logged */
} ret_case_t;

static const ret_case_t RET_CASES[] = {
    {"/ret?ok", 200, "PYRT-written-ok", NULL, NULL, 1},
    {"/ret?200", 200, "PYRT-written-200", NULL, NULL, 1},
    {"/ret?done", 200, "PYRT-written-done", NULL, NULL, 1},
    {"/ret?404", 404, "<title>404 Not Found</title>", "PYRT-written", NULL, 1},
    {"/ret?400", 400, "<title>400 Bad Request</title>", "PYRT-written", NULL, 1},
    {"/ret?503", 503, "<title>503 Service Unavailable</title>", "PYRT-written", NULL, 1},
    {"/declined.txt", 200, "PYRT static file content", NULL, NULL, 1},
    {"/raise403", 403, "<title>403 Forbidden</title>", "PYRT-discarded", NULL, 1},
    {"/ret?none", 500, "<title>500 Internal Server Error</title>", "PYRT-written",
     "returned None", 0},
    {"/ret?str", 500, "<title>500 Internal Server Error</title>", "PYRT-written",
     "returned 'x'", 0},
    {"/ret?true", 500, "<title>500 Internal Server Error</title>", "PYRT-written",
     "returned True", 0},
    {"/ret?42", 500, "<title>500 Internal Server Error</title>", "PYRT-written",
     "returned 42", 0},
    {"/ret?1000", 500, "<title>500 Internal Server Error</title>", "PYRT-written",
     "returned 1000", 0},
    {"/ret?float", 500, "<title>500 Internal Server Error</title>", "PYRT-written",
     "returned 200.0", 0},
    {"/exc", 500, "<title>500 Internal Server Error</title>", "PYRT-boom",
     "ValueError: PYRT-boom", 0},
};

START_TEST(test_return_values)
{
    const ret_case_t *c = &RET_CASES[_i];
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, c->path);
    ck_assert_msg(r->status == c->status, "[%s] status %ld, expected %ld; body:\n%s", c->path,
                  r->status, c->status, r->body);
    if (c->body_has)
        ck_assert_msg(strstr(r->body, c->body_has) != NULL, "[%s] body lacks %s:\n%s",
                      c->path, c->body_has, r->body);
    if (c->body_lacks)
        ck_assert_msg(strstr(r->body, c->body_lacks) == NULL, "[%s] body has %s:\n%s",
                      c->path, c->body_lacks, r->body);
    ck_assert_msg(strstr(r->body, "Traceback") == NULL, "[%s] traceback in body:\n%s",
                  c->path, r->body);
    if (c->log_has) {
        assert_log_has(srv, mark, c->log_has);
        /* an error, in the error log, with the PYR tag */
        char *line = httpd_log_line(srv, mark, c->log_has);
        ck_assert_msg(line && strstr(line, ":error]") && strstr(line, "PYR"),
                      "[%s] log line: %s", c->path, line ? line : "(none)");
        free(line);
    }
    if (c->no_traceback) {
        /* let any late log line arrive, then check */
        http_resp_t *r2 = http_get(srv, "/hello");
        http_free(r2);
        assert_log_lacks(srv, mark, "Traceback");
        assert_log_lacks(srv, mark, ":error]");
    }
    http_free(r);
}
END_TEST

START_TEST(test_exception_traceback_logged)
{
    size_t mark = httpd_log_mark(srv);
    char *path = httpd_path(srv, "req.py");
    http_resp_t *r = http_get(srv, "/exc");
    http_assert_status(r, 500);
    ck_assert_str_ne(r->content_type, "text/plain");
    http_assert_body_lacks(r, "PYRT-boom");
    http_assert_body_lacks(r, "req.py");
    http_free(r);
    assert_log_has(srv, mark, "Traceback (most recent call last)");
    assert_log_has(srv, mark, "ValueError: PYRT-boom");
    assert_log_has(srv, mark, path);   /* the frame's file */
    free(path);
}
END_TEST

START_TEST(test_debug_traceback_in_body)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/debug");
    http_assert_status(r, 500);
    ck_assert_msg(!strncmp(r->content_type, "text/plain", 10), "content type %s",
                  r->content_type);
    http_assert_body_has(r, "Traceback (most recent call last)");
    http_assert_body_has(r, "ValueError: PYRT-boom");
    http_assert_body_lacks(r, "PYRT-discarded-body");
    http_free(r);
    /* still logged too */
    assert_log_has(srv, mark, "ValueError: PYRT-boom");
}
END_TEST

/* ---- stdio ---------------------------------------------------------- */

START_TEST(test_stdio_to_error_log)
{
    size_t mark = httpd_log_mark(srv);
    char path[64], needle[64];
    static const char *const kinds[] = {"print", "stdout", "stderr", "logging"};
    int tag = (int)getpid();
    http_resp_t *r;
    snprintf(path, sizeof path, "/stdio?s%d", tag);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "stdio-ok");
    http_free(r);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        snprintf(needle, sizeof needle, "PYRT-%s-s%d", kinds[i], tag);
        assert_log_has(srv, mark, needle);
    }
}
END_TEST

/* ---- several handlers ----------------------------------------------- */

static const struct {
    const char *path;
    const char *body;
} MULTI_CASES[] = {
    {"/multi-a", "multi:handler"},
    {"/multi-a/x", "multi:handler"},
    {"/multi-b", "multi:other uri=/multi-b"},
    {"/dirctx/anything", "multi:other uri=/dirctx/anything"},
    {"/hello", "Hello, world!\n"},
};

START_TEST(test_multiple_handlers)
{
    http_resp_t *r = http_get(srv, MULTI_CASES[_i].path);
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, MULTI_CASES[_i].body);
    http_free(r);
}
END_TEST

START_TEST(test_unconfigured_url)
{
    /* no handler here: plain httpd 404 */
    http_resp_t *r = http_get(srv, "/nothing-here");
    http_assert_status(r, 404);
    http_free(r);
}
END_TEST

/* ================================================================== */
/* Dangerous handlers (SystemExit, req kept past its request): own server */

static const char DANGER_PY[] =
    "import sys\n"
    "import pyreload\n"
    "\n"
    "_saved = {}\n"
    "\n"
    "def sysexit(req):\n"
    "    req.write('PYRT-discarded-body')\n"
    "    if req.args == 'plain':\n"
    "        sys.exit()\n"
    "    raise SystemExit(3)\n"
    "\n"
    "def keep(req):\n"
    "    _saved['req'] = req\n"
    "    req.write('saved')\n"
    "    return pyreload.OK\n"
    "\n"
    "def keep_map(req):\n"
    "    _saved['headers_in'] = req.headers_in\n"
    "    _saved['headers_out'] = req.headers_out\n"
    "    _saved['options'] = req.options\n"
    "    req.write('saved')\n"
    "    return pyreload.OK\n"
    "\n"
    "def _try(out, name, fn):\n"
    "    try:\n"
    "        fn()\n"
    "        out.append('%s=no-error' % name)\n"
    "    except Exception as e:\n"
    "        out.append('%s=%s' % (name, type(e).__name__))\n"
    "\n"
    "def use(req):\n"
    "    old = _saved['req']\n"
    "    out = []\n"
    "    _try(out, 'uri', lambda: old.uri)\n"
    "    _try(out, 'method', lambda: old.method)\n"
    "    _try(out, 'write', lambda: old.write(b'x'))\n"
    "    _try(out, 'read', lambda: old.read())\n"
    "    _try(out, 'headers_in', lambda: old.headers_in)\n"
    "    _try(out, 'log_error', lambda: old.log_error('PYRT-stale'))\n"
    "    _try(out, 'status', lambda: setattr(old, 'status', 404))\n"
    "    req.write('\\n'.join(out))\n"
    "    return pyreload.OK\n"
    "\n"
    "def rebind(req):\n"
    "    import gc\n"
    "    if req.args == 'del':\n"
    "        del pyreload.HTTPError\n"
    "    else:\n"
    "        pyreload.HTTPError = None\n"
    "    gc.collect()\n"
    "    req.write('rebound')\n"
    "    return pyreload.OK\n"
    "\n"
    "def echo(req):\n"
    "    req.write(req.read())\n"
    "    return pyreload.OK\n"
    "\n"
    "def use_map(req):\n"
    "    out = []\n"
    "    _try(out, 'headers_in', lambda: _saved['headers_in'].get('Host'))\n"
    "    _try(out, 'headers_out', lambda: _saved['headers_out'].__setitem__('X', 'y'))\n"
    "    _try(out, 'options', lambda: _saved['options'].get('x'))\n"
    "    req.write('\\n'.join(out))\n"
    "    return pyreload.OK\n";

static const char DANGER_CONF[] =
    "<Location /hello>\n  PyReloadHandler @APP@/hello.py\n</Location>\n"
    "<Location /sysexit>\n  PyReloadHandler @APP@/danger.py::sysexit\n</Location>\n"
    "<Location /keep>\n  PyReloadHandler @APP@/danger.py::keep\n</Location>\n"
    "<Location /kmap>\n  PyReloadHandler @APP@/danger.py::keep_map\n</Location>\n"
    "<Location /use>\n  PyReloadHandler @APP@/danger.py::use\n</Location>\n"
    "<Location /umap>\n  PyReloadHandler @APP@/danger.py::use_map\n</Location>\n"
    "<Location /rebind>\n  PyReloadHandler @APP@/danger.py::rebind\n</Location>\n"
    "<Location /limited>\n  LimitRequestBody 100\n"
    "  PyReloadHandler @APP@/danger.py::echo\n</Location>\n";

static httpd_t *dsrv;
static pid_t dsrv_child;

static void setup_danger(void)
{
    static const httpd_file_t files[] = {
        {"hello.py", HELLO_PY}, {"danger.py", DANGER_PY}, {NULL, NULL},
    };
    httpd_opts_t o = {.config = DANGER_CONF, .files = files};
    dsrv = httpd_launch(&o);
    ck_assert_msg(dsrv != NULL, "httpd did not start");
    dsrv_child = httpd_child(dsrv);
}

static void teardown_danger(void)
{
    httpd_free(dsrv);
    dsrv = NULL;
}

START_TEST(test_system_exit)
{
    size_t mark = httpd_log_mark(dsrv);
    http_resp_t *r = http_get(dsrv, _i ? "/sysexit?plain" : "/sysexit");
    http_assert_status(r, 500);
    http_assert_body_lacks(r, "PYRT-discarded-body");
    http_free(r);
    assert_log_has(dsrv, mark, "SystemExit");
    /* the child survives and keeps serving */
    r = http_get(dsrv, "/hello");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "Hello, world!\n");
    http_free(r);
    assert_same_child(dsrv, dsrv_child);
}
END_TEST

/* pyreload.HTTPError rebound or deleted by a handler: the module's own
 * class still answers a body over LimitRequestBody with 413. */
START_TEST(test_httperror_rebound)
{
    static char body[200];
    size_t mark = httpd_log_mark(dsrv);
    http_resp_t *r = http_get(dsrv, _i ? "/rebind?del" : "/rebind");

    http_assert_status(r, 200);
    http_free(r);
    memset(body, 'x', sizeof body);
    for (int i = 0; i < 3; i++) {
        r = http_post(dsrv, "/limited", body, sizeof body);
        http_assert_status(r, 413);
        http_free(r);
    }
    r = http_post(dsrv, "/limited", body, 10);
    http_assert_status(r, 200);
    http_free(r);
    assert_log_lacks(dsrv, mark, "Traceback");
    assert_same_child(dsrv, dsrv_child);
}
END_TEST

START_TEST(test_req_after_request)
{
    http_resp_t *r = http_get(dsrv, "/keep");
    http_assert_status(r, 200);
    http_free(r);
    r = http_get(dsrv, "/use");
    http_assert_status(r, 200);
    http_assert_body_has(r, "uri=RuntimeError");
    http_assert_body_has(r, "method=RuntimeError");
    http_assert_body_has(r, "write=RuntimeError");
    http_assert_body_has(r, "read=RuntimeError");
    http_assert_body_has(r, "headers_in=RuntimeError");
    http_assert_body_has(r, "log_error=RuntimeError");
    http_assert_body_has(r, "status=RuntimeError");
    http_free(r);
    assert_same_child(dsrv, dsrv_child);
}
END_TEST

/* Beyond the letter of the contract: mappings taken from req and kept
 * past the request must not crash the child either (RuntimeError). */
START_TEST(test_mappings_after_request)
{
    http_resp_t *r = http_get(dsrv, "/kmap");
    http_assert_status(r, 200);
    http_free(r);
    r = http_get(dsrv, "/umap");
    http_assert_status(r, 200);
    http_assert_body_has(r, "headers_in=RuntimeError");
    http_assert_body_has(r, "headers_out=RuntimeError");
    http_assert_body_has(r, "options=RuntimeError");
    http_free(r);
    r = http_get(dsrv, "/hello");
    http_assert_status(r, 200);
    http_free(r);
    assert_same_child(dsrv, dsrv_child);
}
END_TEST

/* ================================================================== */
/* Contexts: server-level relative handler, vhost, PyReloadPath        */

static const char CTX_CONF[] =
    "PyReloadPath @DIR@/lib1\n"
    "PyReloadPath @DIR@/lib2\n"
    "PyReloadHandler app/rel.py\n"
    "<VirtualHost *>\n"
    "  ServerName 127.0.0.1\n"
    "</VirtualHost>\n"
    "<VirtualHost *>\n"
    "  ServerName vhost.test\n"
    "  PyReloadHandler @APP@/vhost.py::serve\n"
    "</VirtualHost>\n";

static const char REL_PY[] =
    "import sys\n"
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    import pyrt_lib1, pyrt_lib2\n"
    "    req.content_type = 'text/plain'\n"
    "    req.write('rel:%s:%s\\n' % (pyrt_lib1.VALUE, pyrt_lib2.VALUE))\n"
    "    req.write('path0=%s\\npath1=%s\\n' % (sys.path[0], sys.path[1]))\n"
    "    req.write('lib1file=%s\\n' % pyrt_lib1.__file__)\n"
    "    return pyreload.OK\n";

static const char VHOST_PY[] =
    "import pyreload\n"
    "\n"
    "def serve(req):\n"
    "    req.write('vhost:%s' % req.hostname)\n"
    "    return pyreload.OK\n";

static httpd_t *csrv;

static void setup_ctx(void)
{
    static const httpd_file_t files[] = {
        {"rel.py", REL_PY},
        {"vhost.py", VHOST_PY},
        {"../lib1/pyrt_lib1.py", "VALUE = 'from-lib1'\n"},
        {"../lib2/pyrt_lib2.py", "VALUE = 'from-lib2'\n"},
        {NULL, NULL},
    };
    httpd_opts_t o = {.config = CTX_CONF, .files = files};
    csrv = httpd_launch(&o);
    ck_assert_msg(csrv != NULL, "httpd did not start");
}

static void teardown_ctx(void)
{
    httpd_free(csrv);
    csrv = NULL;
}

START_TEST(test_relative_handler_path)
{
    char want[256];
    http_resp_t *r = http_get(csrv, "/any/url");
    http_assert_status(r, 200);
    http_assert_body_has(r, "rel:");
    http_free(r);
    /* "app/rel.py" was resolved against ServerRoot: the load line names
     * the absolute path */
    snprintf(want, sizeof want, "%s/app/rel.py: generation 1 loaded", csrv->dir);
    assert_log_has(csrv, 0, want);
}
END_TEST

START_TEST(test_pyreload_path)
{
    char want[512];
    http_resp_t *r = http_get(csrv, "/");
    http_assert_status(r, 200);
    http_assert_body_has(r, "rel:from-lib1:from-lib2");
    snprintf(want, sizeof want, "path0=%s/lib1\npath1=%s/lib2\n", csrv->dir, csrv->dir);
    http_assert_body_has(r, want);
    snprintf(want, sizeof want, "lib1file=%s/lib1/pyrt_lib1.py", csrv->dir);
    http_assert_body_has(r, want);
    http_free(r);
}
END_TEST

START_TEST(test_vhost_handler)
{
    static const char *const hdrs[] = {"Host: vhost.test", NULL};
    http_resp_t *r = http_request(csrv, "GET", "/x", hdrs, NULL, 0);
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "vhost:vhost.test");
    http_free(r);
}
END_TEST

/* ================================================================== */
/* The interpreter ignores PYTHON* variables of whoever starts httpd    */

static const char ENV_PY[] =
    "import sys\n"
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    try:\n"
    "        import pyrt_envmod\n"
    "        imp = 'imported'\n"
    "    except ImportError:\n"
    "        imp = 'ImportError'\n"
    "    req.write('import=%s\\n' % imp)\n"
    "    req.write('ignore_environment=%d\\n' % sys.flags.ignore_environment)\n"
    "    req.write('optimize=%d\\n' % sys.flags.optimize)\n"
    "    req.write('envlib_in_path=%r\\n' % any('envlib' in p for p in sys.path))\n"
    "    return pyreload.OK\n";

START_TEST(test_python_env_ignored)
{
    static const char *const env[] = {
        "PYTHONPATH=@DIR@/envlib",
        "PYTHONHOME=/nonexistent-pyr-it",
        "PYTHONOPTIMIZE=2",
        "PYTHONSTARTUP=@DIR@/envlib/pyrt_envmod.py",
        "PYTHONWARNINGS=error",
        NULL,
    };
    static const httpd_file_t files[] = {
        {"env.py", ENV_PY},
        {"../envlib/pyrt_envmod.py", "VALUE = 1\n"},
        {NULL, NULL},
    };
    httpd_opts_t o = {.config = "PyReloadHandler @APP@/env.py\n", .files = files, .env = env};
    httpd_t *h = httpd_launch(&o);
    http_resp_t *r;
    ck_assert_msg(h != NULL, "httpd did not start with PYTHON* variables set");
    r = http_get(h, "/");
    http_assert_status(r, 200);
    http_assert_body_has(r, "import=ImportError");
    http_assert_body_has(r, "ignore_environment=1");
    http_assert_body_has(r, "optimize=0");
    http_assert_body_has(r, "envlib_in_path=False");
    http_free(r);
    httpd_free(h);
}
END_TEST

/* ================================================================== */
/* Every MPM: serve, then stop cleanly and quickly                      */

static const char *const MPMS[] = {"event", "worker", "prefork"};

/* What real handlers do: import threading (logging does too) in a request. */
static const char THREADS_PY[] =
    "import logging\n"
    "import threading\n"
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    logging.getLogger('pyrt').info('quiet')\n"
    "    req.write('thread=%s' % type(threading.current_thread()).__name__)\n"
    "    return pyreload.OK\n";

START_TEST(test_mpm_serve_and_stop)
{
    static const httpd_file_t files[] = {
        {"hello.py", HELLO_PY}, {"threads.py", THREADS_PY}, {NULL, NULL},
    };
    httpd_opts_t o = {.config = "<Location /hello>\n  PyReloadHandler @APP@/hello.py\n"
                                "</Location>\n"
                                "<Location /threads>\n  PyReloadHandler @APP@/threads.py\n"
                                "</Location>\n",
                      .files = files,
                      .mpm = MPMS[_i]};
    httpd_t *h = httpd_launch(&o);
    http_client_t *c;
    pid_t kids[4];
    char *log;

    ck_assert_msg(h != NULL, "httpd (%s) did not start", MPMS[_i]);
    ck_assert_int_eq(httpd_children(h, kids, 4), 1);
    c = http_client_new(h);
    for (int i = 0; i < 20; i++) {
        http_resp_t *r = http_client_get(c, "/hello");
        http_assert_status(r, 200);
        ck_assert_str_eq(r->body, "Hello, world!\n");
        http_free(r);
    }
    {
        http_resp_t *r = http_client_get(c, "/threads");
        http_assert_status(r, 200);
        http_assert_body_has(r, "thread=");
        http_free(r);
    }
    /* the keep-alive connection is still open while we stop */
    {
        int rc = httpd_stop(h);
        log = httpd_log(h);
        ck_assert_msg(rc == 0 && h->stop_clean,
                      "[%s] stop needed SIGKILL (%.2f s); dir %s; log tail:\n%s", MPMS[_i],
                      h->stop_seconds, h->dir, log + (strlen(log) > 3000 ? strlen(log) - 3000 : 0));
        ck_assert_msg(h->stop_seconds < 5.0, "[%s] stop took %.2f s", MPMS[_i],
                      h->stop_seconds);
    }
    ck_assert_msg(strstr(log, "still did not exit") == NULL, "log:\n%s", log);
    ck_assert_msg(strstr(log, "SIGKILL") == NULL, "log:\n%s", log);
    ck_assert_msg(httpd_log_no_crash(h, 0), "log:\n%s", log);
    free(log);
    http_client_free(c);
    httpd_free(h);
}
END_TEST

/* ================================================================== */

/* ================================================================== */
/* Dispatch on the handler name: a nested SetHandler wins               */

static const char DISPATCH_CONF[] =
    "<Location /app>\n  PyReloadHandler @APP@/hello.py\n</Location>\n"
    "<Location /app/static>\n  SetHandler default-handler\n</Location>\n"
    "<Location /explicit>\n  SetHandler pyreload-handler\n"
    "  PyReloadHandler @APP@/hello.py\n</Location>\n"
    "<Location /unnamed>\n  SetHandler pyreload-handler\n</Location>\n";

static httpd_t *xsrv;

static void setup_dispatch(void)
{
    static const httpd_file_t files[] = {
        {"hello.py", HELLO_PY},
        {"../htdocs/app/static/s.txt", "PYRT static under a Python location\n"},
        {"../htdocs/unnamed/u.txt", "PYRT unnamed\n"},
        {NULL, NULL},
    };
    httpd_opts_t o = {.config = DISPATCH_CONF, .files = files};
    xsrv = httpd_launch(&o);
    ck_assert_msg(xsrv != NULL, "httpd did not start");
}

static void teardown_dispatch(void)
{
    httpd_free(xsrv);
    xsrv = NULL;
}

START_TEST(test_nested_sethandler_wins)
{
    it_expect(xsrv, "/app/static/s.txt", "PYRT static under a Python location\n");
    it_expect(xsrv, "/app", "Hello, world!\n");
    it_expect(xsrv, "/app/x/y", "Hello, world!\n");
}
END_TEST

/* The name PyReloadHandler sets may be given explicitly; without a
 * PyReloadHandler there, the handler declines and the file is served. */
START_TEST(test_sethandler_pyreload)
{
    it_expect(xsrv, "/explicit", "Hello, world!\n");
    it_expect(xsrv, "/unnamed/u.txt", "PYRT unnamed\n");
}
END_TEST

/* A process where no handler imports pyreload: req, its mappings and the
 * outcome (including an HTTPError-free failure) must work all the same. */
START_TEST(test_no_import_of_pyreload)
{
    static const httpd_file_t files[] = {
        {"plain.py", "def handler(req):\n"
                     "    req.content_type = 'text/plain'\n"
                     "    req.headers_out['X-Plain'] = 'yes'\n"
                     "    req.write('plain %s' % req.uri)\n"
                     "    return 0\n"},
        {"bad.py", "def handler(req):\n    return 'nonsense'\n"},
        {NULL, NULL},
    };
    httpd_opts_t o = {.config = "<Location /plain>\n  PyReloadHandler @APP@/plain.py\n"
                                "</Location>\n<Location /bad>\n"
                                "  PyReloadHandler @APP@/bad.py\n</Location>\n",
                      .files = files};
    httpd_t *h = httpd_launch(&o);
    size_t mark;

    ck_assert_msg(h != NULL, "httpd did not start");
    mark = httpd_log_mark(h);
    for (int i = 0; i < 3; i++) {
        http_resp_t *r = http_get(h, i == 1 ? "/bad" : "/plain");

        http_assert_status(r, i == 1 ? 500 : 200);
        if (i != 1) {
            http_assert_body_has(r, "plain /plain");
        }
        http_free(r);
    }
    ck_assert_msg(httpd_log_no_crash(h, mark), "a child crashed:\n%s", httpd_log_since(h, mark));
    httpd_free(h);
}
END_TEST

/* ================================================================== */
/* A path that is not UTF-8 (Latin-1 names on an old file system): file */
/* names are bytes, and Python gets them as the file system encodes     */

static const char BYTES_PY[] =
    "import os\n"
    "import helper\n"
    "from pkg import sub\n"
    "import pyreload\n"
    "\n"
    "def handler(req):\n"
    "    req.write('%s:%s:%s' % (helper.NAME, sub.NAME,\n"
    "                            os.fsencode(__file__).endswith(b'/d\\xe9j\\xe0/h.py')))\n"
    "    return pyreload.OK\n";

START_TEST(test_path_not_utf8)
{
    static const httpd_file_t files[] = {
        {"d\xe9j\xe0/h.py", BYTES_PY},
        {"d\xe9j\xe0/helper.py", "NAME = 'helper'\n"},
        {"d\xe9j\xe0/pkg/__init__.py", ""},
        {"d\xe9j\xe0/pkg/sub.py", "NAME = 'sub'\n"},
        {NULL, NULL},
    };
    httpd_opts_t o = {.config = "<Location /b>\n  PyReloadHandler \"@APP@/d\xe9j\xe0/h.py\"\n"
                                "</Location>\n",
                      .files = files};
    httpd_t *h = httpd_launch(&o);
    char *body;

    ck_assert_msg(h != NULL, "httpd did not start");
    body = it_get(h, "/b", 200);
    ck_assert_str_eq(body, "helper:sub:True");
    free(body);
    httpd_free(h);
}
END_TEST

Suite *suite_basic(void)
{
    Suite *s = suite_create("basic");
    TCase *tc;

    tc = httpd_tcase("request", 60, setup_main, teardown_main);
    tcase_add_test(tc, test_hello);
    tcase_add_test(tc, test_hello_keepalive);
    tcase_add_test(tc, test_load_logged);
    tcase_add_loop_test(tc, test_attrs, 0, (int)(sizeof ATTR_CASES / sizeof ATTR_CASES[0]));
    tcase_add_test(tc, test_attrs_head);
    tcase_add_test(tc, test_headers_in);
    tcase_add_test(tc, test_headers_out);
    tcase_add_loop_test(tc, test_err_headers_survive_error, 0, 2);
    tcase_add_test(tc, test_content_type_and_status);
    tcase_add_loop_test(tc, test_post_echo, 0, (int)(sizeof ECHO_SIZES / sizeof ECHO_SIZES[0]));
    tcase_add_test(tc, test_put_echo);
    tcase_add_test(tc, test_get_no_body);
    tcase_add_loop_test(tc, test_read_chunks, 0,
                        (int)(sizeof CHUNK_SIZES / sizeof CHUNK_SIZES[0]));
    tcase_add_test(tc, test_read_chunked_request);
    tcase_add_test(tc, test_limit_request_body);
    tcase_add_test(tc, test_write_str_utf8);
    tcase_add_test(tc, test_write_bytes);
    tcase_add_test(tc, test_write_int_is_500);
    tcase_add_test(tc, test_bad_argument_is_500);
    tcase_add_test(tc, test_flush_streams);
    tcase_add_test(tc, test_options_merged);
    tcase_add_test(tc, test_log_error_levels);
    tcase_add_test(tc, test_constants);
    tcase_add_loop_test(tc, test_return_values, 0, (int)(sizeof RET_CASES / sizeof RET_CASES[0]));
    tcase_add_test(tc, test_exception_traceback_logged);
    tcase_add_test(tc, test_debug_traceback_in_body);
    tcase_add_test(tc, test_stdio_to_error_log);
    tcase_add_loop_test(tc, test_multiple_handlers, 0,
                        (int)(sizeof MULTI_CASES / sizeof MULTI_CASES[0]));
    tcase_add_test(tc, test_unconfigured_url);
    tcase_add_test(tc, test_main_no_crash);   /* last */
    suite_add_tcase(s, tc);

    tc = httpd_tcase("robustness", 60, setup_danger, teardown_danger);
    tcase_add_loop_test(tc, test_system_exit, 0, 2);
    tcase_add_loop_test(tc, test_httperror_rebound, 0, 2);
    tcase_add_test(tc, test_req_after_request);
    tcase_add_test(tc, test_mappings_after_request);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("contexts", 60, setup_ctx, teardown_ctx);
    tcase_add_test(tc, test_relative_handler_path);
    tcase_add_test(tc, test_pyreload_path);
    tcase_add_test(tc, test_vhost_handler);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("dispatch", 60, setup_dispatch, teardown_dispatch);
    tcase_add_test(tc, test_nested_sethandler_wins);
    tcase_add_test(tc, test_sethandler_pyreload);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("isolation", 60, NULL, NULL);
    tcase_add_test(tc, test_python_env_ignored);
    tcase_add_test(tc, test_no_import_of_pyreload);
    tcase_add_test(tc, test_path_not_utf8);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("mpm", 60, NULL, NULL);
    tcase_add_loop_test(tc, test_mpm_serve_and_stop, 0, (int)(sizeof MPMS / sizeof MPMS[0]));
    suite_add_tcase(s, tc);
    return s;
}
