/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_request.c: the request path under real use, against a real apache2:
 * memory per request with every req attribute and method touched; threads
 * that keep a req and use it while its request ends (or while the handler
 * uses it too); statuses that cannot be final; responses that fail after
 * they started; and what PyReloadDebug shows after a broken save.
 *
 * Every case must pass under the event, worker and prefork MPMs (PYR_MPM).
 */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T0 1700000000   /* a fixed second for mtime games */

/* ------------------------------------------------------------------ */
/* The handlers                                                        */

/* Touches every attribute and method of req and of its tables. */
static const char all_py[] =
    "import gc, sys\n"
    "import pyreload\n"
    "\n"
    "ATTRS = ('method', 'uri', 'unparsed_uri', 'path_info', 'args', 'protocol',\n"
    "         'hostname', 'remote_addr', 'filename', 'content_type', 'status')\n"
    "\n"
    "def _mapping(m):\n"
    "    m.get('Host'); m.get('X-Absent', 'd'); m.getall('Host'); 'Host' in m\n"
    "    len(m); m.keys(); m.values(); m.items(); list(m); repr(m)\n"
    "    try:\n"
    "        m['X-Absent']\n"
    "    except KeyError:\n"
    "        pass\n"
    "\n"
    "def handler(req):\n"
    "    for name in ATTRS:\n"
    "        getattr(req, name)\n"
    "    req.content_type = 'text/plain'\n"
    "    req.status = 200\n"
    "    _mapping(req.headers_in)\n"
    "    req.headers_in['Host']\n"
    "    out = req.headers_out\n"
    "    out['X-A'] = '1'\n"
    "    out.add('X-B', '2')\n"
    "    out.add('X-B', '3')\n"
    "    del out['X-A']\n"
    "    _mapping(out)\n"
    "    err = req.err_headers_out\n"
    "    err['X-E'] = '1'\n"
    "    err.add('X-E', '2')\n"
    "    _mapping(err)\n"
    "    _mapping(req.options)\n"
    "    body = req.read()\n"
    "    req.read(10)\n"
    "    req.log_error('PYRT-filtered-by-loglevel', pyreload.APLOG_DEBUG)\n"
    "    repr(req)\n"
    "    req.write(b'got %d' % len(body))\n"
    "    req.write(' ok')\n"
    "    req.flush()\n"
    "    return pyreload.OK\n"
    "\n"
    "def blocks(req):\n"
    "    gc.collect()\n"
    "    req.write(str(sys.getallocatedblocks()))\n"
    "    return pyreload.OK\n";

/* Threads that use a req while its request ends, or while the handler
 * uses it too; what they met is kept in module state for /report. */
static const char threads_py[] =
    "import threading, time\n"
    "import pyreload\n"
    "\n"
    "lock = threading.Lock()\n"
    "state = {'started': 0, 'runtime': 0, 'other': [], 'threads': []}\n"
    "BIG = b'B' * 70000\n"
    "\n"
    "def _record(key, value=None):\n"
    "    with lock:\n"
    "        if key == 'other':\n"
    "            state['other'].append(value)\n"
    "        else:\n"
    "            state[key] += 1\n"
    "\n"
    "def _hammer(req):\n"
    "    deadline = time.monotonic() + 10\n"
    "    try:\n"
    "        i = 0\n"
    "        while time.monotonic() < deadline:\n"
    "            i += 1\n"
    "            req.write(BIG if i % 3 == 0 else b's' * 100)\n"
    "            req.flush()\n"
    "            req.headers_out['X-T'] = str(i)\n"
    "            req.err_headers_out.add('X-E', str(i))\n"
    "            req.headers_in.get('Host')\n"
    "            req.options.get('x')\n"
    "            req.read(10)\n"
    "            req.status = 200\n"
    "            req.content_type = 'text/plain'\n"
    "            req.uri, req.status, repr(req)\n"
    "            req.log_error('PYRT-thread', pyreload.APLOG_DEBUG)\n"
    "        _record('other', 'no error after 10 s')\n"
    "    except RuntimeError:\n"
    "        _record('runtime')\n"
    "    except Exception as e:\n"
    "        _record('other', repr(e))\n"
    "\n"
    "def keep(req):\n"
    "    t = threading.Thread(target=_hammer, args=(req,), daemon=True)\n"
    "    with lock:\n"
    "        state['started'] += 1\n"
    "        state['threads'].append(t)\n"
    "    t.start()\n"
    "    req.write('started\\n')\n"
    "    if req.args == 'wait':\n"
    "        time.sleep(0.002)\n"
    "    return pyreload.OK\n"
    "\n"
    "def _writer(req, n, out):\n"
    "    try:\n"
    "        for i in range(n):\n"
    "            req.write(BIG)\n"
    "            req.headers_out['X-W'] = str(i)\n"
    "            if i % 4 == 0:\n"
    "                req.flush()\n"
    "    except Exception as e:\n"
    "        out.append(repr(e))\n"
    "\n"
    "def during(req):\n"
    "    n = int(req.args or '10')\n"
    "    errors = []\n"
    "    t = threading.Thread(target=_writer, args=(req, n, errors))\n"
    "    t.start()\n"
    "    for i in range(n):\n"
    "        req.write(BIG)\n"
    "        req.headers_out.get('X-W')\n"
    "    t.join()\n"
    "    if errors:\n"
    "        raise AssertionError(errors)\n"
    "    return pyreload.OK\n"
    "\n"
    "def report(req):\n"
    "    for t in list(state['threads']):\n"
    "        t.join(15)\n"
    "    with lock:\n"
    "        alive = sum(t.is_alive() for t in state['threads'])\n"
    "        req.write('started=%d runtime=%d alive=%d other=%r' % (state['started'],\n"
    "                  state['runtime'], alive, state['other']))\n"
    "    return pyreload.OK\n";

/* Statuses and failures after the response started. */
static const char status_py[] =
    "import pyreload\n"
    "\n"
    "def ret(req):\n"
    "    req.write('PYRT-discarded')\n"
    "    return int(req.args)\n"
    "\n"
    "def setstatus(req):\n"
    "    req.status = int(req.args)\n"
    "    req.write('PYRT-discarded')\n"
    "    return pyreload.OK\n"
    "\n"
    "def raise_status(req):\n"
    "    raise pyreload.HTTPError(int(req.args))\n"
    "\n"
    "def broken(req):\n"
    "    mode = req.args or ''\n"
    "    req.content_type = 'text/plain'\n"
    "    if 'cl' in mode:\n"
    "        req.headers_out['Content-Length'] = '100000'\n"
    "    if 'big' in mode:\n"
    "        req.write(b'PYRT-partial\\n' + b'P' * 70000)\n"
    "    else:\n"
    "        req.write('PYRT-partial\\n')\n"
    "        req.flush()\n"
    "    if 'notfound' in mode:\n"
    "        return pyreload.HTTP_NOT_FOUND\n"
    "    raise ValueError('PYRT-broken-after-start')\n";

static const char config[] =
    "PyReloadOption x y\n"
    "<Location /all>\n  PyReloadHandler @APP@/all.py\n</Location>\n"
    "<Location /blocks>\n  PyReloadHandler @APP@/all.py::blocks\n</Location>\n"
    "<Location /keep>\n  PyReloadHandler @APP@/threads.py::keep\n</Location>\n"
    "<Location /during>\n  PyReloadHandler @APP@/threads.py::during\n</Location>\n"
    "<Location /report>\n  PyReloadHandler @APP@/threads.py::report\n</Location>\n"
    "<Location /ret>\n  PyReloadHandler @APP@/status.py::ret\n</Location>\n"
    "<Location /setstatus>\n  PyReloadHandler @APP@/status.py::setstatus\n</Location>\n"
    "<Location /raise>\n  PyReloadHandler @APP@/status.py::raise_status\n</Location>\n"
    "<Location /broken>\n  PyReloadHandler @APP@/status.py::broken\n</Location>\n"
    "<Location /dev>\n  PyReloadHandler @APP@/edited.py\n  PyReloadDebug On\n</Location>\n"
    "<Location /prod>\n  PyReloadHandler @APP@/edited.py\n  PyReloadDebug Off\n</Location>\n";

static httpd_t *srv;

static void
setup(void)
{
    static const httpd_file_t files[] = {
        {"all.py", all_py}, {"threads.py", threads_py}, {"status.py", status_py},
        {"edited.py", "import pyreload\n"
                      "def handler(req):\n    req.write('v1')\n    return pyreload.OK\n"},
        {NULL, NULL},
    };
    httpd_opts_t o = { .config = config, .files = files };

    srv = httpd_launch(&o);
    ck_assert_msg(srv != NULL, "httpd did not start");
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

static void
assert_alive(size_t mark)
{
    http_resp_t *r = http_get(srv, "/blocks");
    char *log;

    http_assert_status(r, 200);
    http_free(r);
    log = httpd_log_since(srv, mark);
    ck_assert_msg(httpd_log_no_crash(srv, mark), "a child crashed; log:\n%.4000s", log);
    free(log);
}

/* ------------------------------------------------------------------ */
/* Memory per request                                                  */

#define MEM_WARMUP   2000
#define MEM_REQUESTS 20000
#define MEM_MAX_BYTES_PER_REQUEST 20

static void
touch_all(http_client_t *c, long n)
{
    static const char *const hdrs[] = {"X-Pyr: 1", NULL};
    static const char body[] = "0123456789abcdef";
    http_req_t rq = { .path = "/all?a=1", .headers = hdrs, .body = body,
                      .body_len = sizeof(body) - 1 };
    long i;

    for (i = 0; i < n; i++) {
        http_resp_t *r = http_client_do(c, &rq);

        ck_assert_msg(r->status == 200 && strcmp(r->body, "got 16 ok") == 0,
                      "request %ld: status %ld body '%.200s' (%s)", i, r->status, r->body,
                      r->error);
        http_free(r);
    }
}

static long
py_blocks(http_client_t *c)
{
    http_resp_t *r = http_client_get(c, "/blocks");
    long n = -1;

    http_assert_status(r, 200);
    n = atol(r->body);
    http_free(r);
    return n;
}

START_TEST(test_memory_per_request)
{
    http_client_t *c = http_client_new(srv);
    pid_t child = httpd_child(srv);
    long before, after, b0, b1;
    double per_request;

    ck_assert_int_gt(child, 0);
    /* Warm-up: every malloc cache and Python free list at its high-water
     * mark, so that what follows measures requests. */
    touch_all(c, MEM_WARMUP);
    b0 = py_blocks(c);
    before = httpd_rss_kb(child);
    touch_all(c, MEM_REQUESTS);
    after = httpd_rss_kb(child);
    b1 = py_blocks(c);
    ck_assert_int_eq(httpd_child(srv), child);  /* one process throughout */
    http_client_free(c);
    per_request = (double)(after - before) * 1024.0 / MEM_REQUESTS;
    fprintf(stderr, "memory per request: RSS %ld kB -> %ld kB over %d requests touching "
            "every req attribute (%.1f B/request); Python blocks %ld -> %ld\n", before,
            after, MEM_REQUESTS, per_request, b0, b1);
    ck_assert_msg(b1 - b0 < MEM_REQUESTS / 100, "Python blocks grew by %ld over %d requests",
                  b1 - b0, MEM_REQUESTS);
    if (httpd_sanitizing()) {
        return;     /* RSS is ASan's quarantine; LeakSanitizer judges at exit */
    }
    ck_assert_msg(per_request <= MEM_MAX_BYTES_PER_REQUEST, "RSS grew by %.1f B/request "
                  "(%ld kB over %d requests)", per_request, after - before, MEM_REQUESTS);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Threads                                                             */

#define KEEP_REQUESTS 200

/* A thread keeps req and uses it (writes, flushes, reads, headers) while
 * its request ends: RuntimeError in the thread, never a crash. */
START_TEST(test_thread_keeps_req)
{
    size_t mark = httpd_log_mark(srv);
    http_client_t *c = http_client_new(srv);
    char want[64];
    http_resp_t *r;
    int i, failed = 0;

    for (i = 0; i < KEEP_REQUESTS; i++) {
        r = http_client_get(c, i % 2 ? "/keep?wait" : "/keep");
        failed += r->status != 200;
        http_free(r);
    }
    http_client_free(c);
    r = http_get(srv, "/report");
    http_assert_status(r, 200);
    fprintf(stderr, "threads keeping req: %d of %d requests failed; %s\n", failed,
            KEEP_REQUESTS, r->body);
    snprintf(want, sizeof(want), "started=%d runtime=%d alive=0 other=[]", KEEP_REQUESTS,
             KEEP_REQUESTS);
    ck_assert_msg(httpd_log_no_crash(srv, mark), "a child crashed (%d of %d requests "
                  "failed); report: %s", failed, KEEP_REQUESTS, r->body);
    ck_assert_str_eq(r->body, want);
    ck_assert_int_eq(failed, 0);
    http_free(r);
    assert_alive(mark);
}
END_TEST

/* The handler and a thread of its own write to req at the same time: each
 * write is whole and in one piece, nothing is lost, nothing crashes. */
START_TEST(test_thread_writes_during_request)
{
    size_t mark = httpd_log_mark(srv);
    int i;

    for (i = 0; i < 20; i++) {
        http_resp_t *r = http_get(srv, "/during?8");

        http_assert_status(r, 200);
        ck_assert_uint_eq(r->len, 2 * 8 * 70000);
        http_free(r);
    }
    assert_alive(mark);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 1xx is not a final status                                           */

static const char *const INFORMATIONAL[] = {
    "/ret?100", "/ret?101", "/ret?103", "/ret?199",
    "/setstatus?100", "/setstatus?101", "/setstatus?103",
    "/raise?100", "/raise?101",
};

START_TEST(test_1xx_is_not_final)
{
    const char *path = INFORMATIONAL[_i];
    size_t mark = httpd_log_mark(srv);
    char req[256], *resp;

    /* Raw: a client library would wait for the final response forever. */
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
             path);
    resp = http_raw(srv, req, strlen(req), NULL, 5000);
    ck_assert_msg(strncmp(resp, "HTTP/1.1 500 ", 13) == 0, "%s: response:\n%.1000s", path,
                  resp);
    ck_assert_msg(strstr(resp, "PYRT-discarded") == NULL, "%s: response:\n%.1000s", path,
                  resp);
    free(resp);
    ck_assert_msg(httpd_log_wait(srv, mark, "not a final status", 1, 3000),
                  "%s: the log does not say why:\n%.3000s", path, httpd_log_since(srv, mark));
    ck_assert_msg(httpd_log_wait(srv, mark, "PYR02", 1, 3000), "%s: no PYR02xx line", path);
    assert_alive(mark);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A response that fails after it started must look broken             */

static const char *const BROKEN[] = {"/broken", "/broken?big", "/broken?notfound"};

/* HTTP/1.1, chunked: no last chunk. */
START_TEST(test_broken_chunked_has_no_last_chunk)
{
    const char *path = BROKEN[_i];
    size_t mark = httpd_log_mark(srv), len;
    char req[256], *resp, *body;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    resp = http_raw(srv, req, strlen(req), &len, 5000);
    ck_assert_msg(strncmp(resp, "HTTP/1.1 200 ", 13) == 0, "%s:\n%.1000s", path, resp);
    ck_assert_msg(strstr(resp, "Transfer-Encoding: chunked") != NULL, "%s:\n%.1000s", path,
                  resp);
    ck_assert_msg((body = strstr(resp, "\r\n\r\n")) != NULL && strstr(body, "PYRT-partial"),
                  "%s: the part sent is lost:\n%.1000s", path, resp);
    ck_assert_msg(len < 5 || strcmp(resp + len - 5, "0\r\n\r\n") != 0,
                  "%s: the response ends with a valid last chunk:\n%.300s", path,
                  len > 300 ? resp + len - 300 : resp);
    free(resp);
    assert_alive(mark);
}
END_TEST

/* What a client library says: the transfer is incomplete, whatever the
 * framing (chunked, a Content-Length, or HTTP/1.0's end of connection). */
static const struct {
    const char *path;
    int http10;
} BROKEN_CURL[] = {
    {"/broken", 0}, {"/broken?big", 0}, {"/broken?cl", 0}, {"/broken?notfound", 0},
    {"/broken", 1}, {"/broken?big", 1}, {"/broken?cl", 1},
};

START_TEST(test_broken_is_incomplete_for_curl)
{
    size_t mark = httpd_log_mark(srv);
    http_req_t rq = { .path = BROKEN_CURL[_i].path, .http10 = BROKEN_CURL[_i].http10,
                      .timeout_ms = 5000 };
    http_resp_t *r = http_do(srv, &rq);

    ck_assert_msg(r->status == 0, "%s (HTTP/1.%d): curl saw a complete response: status "
                  "%ld, %zu bytes", rq.path, rq.http10 ? 0 : 1, r->status, r->len);
    ck_assert_msg(strstr(r->error, "imeout") == NULL, "%s: %s", rq.path, r->error);
    fprintf(stderr, "broken %s HTTP/1.%d: %s\n", rq.path, rq.http10 ? 0 : 1, r->error);
    http_free(r);
    if (strstr(rq.path, "notfound") == NULL) {
        ck_assert_msg(httpd_log_wait(srv, mark, "PYRT-broken-after-start", 1, 3000),
                      "not logged");
    }
    assert_alive(mark);
}
END_TEST

/* ------------------------------------------------------------------ */
/* PyReloadDebug On shows the latest broken save                        */

static void
edit(const char *text, long n)
{
    ck_assert_int_eq(httpd_write_atomic(srv, "edited.py", text), 0);
    ck_assert_int_eq(httpd_set_mtime(srv, "edited.py", T0, n * 1000), 0);
}

static void
expect(const char *path, long status, const char *has)
{
    http_resp_t *r = http_get(srv, path);

    http_assert_status(r, status);
    http_assert_body_has(r, has);
    http_free(r);
}

START_TEST(test_debug_shows_latest_failure)
{
    expect("/dev", 200, "v1");
    expect("/prod", 200, "v1");
    edit("import pyreload\ndef handler(req)\n    return pyreload.OK\n", 1);
    /* Debug On: the traceback of the broken save, on every request until
     * it is fixed; Debug Off: the last good code serves on. */
    expect("/dev", 500, "SyntaxError");
    expect("/prod", 200, "v1");
    expect("/dev", 500, "edited.py\", line 2");
    expect("/prod", 200, "v1");
    edit("import pyreload\nraise ValueError('PYRT-second-break')\n", 2);
    expect("/prod", 200, "v1");
    expect("/dev", 500, "ValueError: PYRT-second-break");
    edit("import pyreload\ndef handler(req):\n    req.write('v3')\n    return pyreload.OK\n",
         3);
    expect("/dev", 200, "v3");
    expect("/prod", 200, "v3");
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *
suite_request(void)
{
    Suite *s = suite_create("request");
    TCase *tc = httpd_tcase("request", 120, setup, teardown);
    TCase *mc = httpd_tcase("memory", 240, setup, teardown);

    tcase_add_loop_test(tc, test_1xx_is_not_final, 0,
                        (int)(sizeof(INFORMATIONAL) / sizeof(INFORMATIONAL[0])));
    tcase_add_loop_test(tc, test_broken_chunked_has_no_last_chunk, 0,
                        (int)(sizeof(BROKEN) / sizeof(BROKEN[0])));
    tcase_add_loop_test(tc, test_broken_is_incomplete_for_curl, 0,
                        (int)(sizeof(BROKEN_CURL) / sizeof(BROKEN_CURL[0])));
    tcase_add_test(tc, test_debug_shows_latest_failure);
    tcase_add_test(tc, test_thread_writes_during_request);
    tcase_add_test(tc, test_thread_keeps_req);
    suite_add_tcase(s, tc);

    tcase_add_test(mc, test_memory_per_request);
    suite_add_tcase(s, mc);
    return s;
}
