/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_hostile.c: handlers (and clients) that try to break the server.  After
 * every case the next request is served, the httpd parent is alive and the
 * log has no crash line: a handler can take down at most its own process.
 *
 *   handler     nonsense return values, exceptions, SystemExit,
 *               KeyboardInterrupt, recursion, sys.stdout closed or replaced,
 *               os.fork() (a copy that returns into httpd), os.kill() aimed
 *               at the server, threads calling sys.exit()
 *   client      garbage bytes, bad request lines, broken bodies, bad UTF-8
 *   stdio       sys.stdout.write() without a newline: bounded memory and
 *               latency, split long lines, the partial line logged at the
 *               end of its request
 *   exit        os._exit(15), os._exit(3), os._exit(0), os.abort(): the
 *               server stays up, a new child serves, the log names the file
 *               and line; requests in flight in the same process finish
 *   threads     a non-daemon thread left running never holds up a stop or a
 *               graceful restart, and the log names it; a thread that
 *               outlives finalisation (wakes at exit(), calls os.kill()
 *               while atexit functions run) does not crash the child
 *
 * Every case runs under the MPM of PYR_MPM (event, worker, prefork).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "fixture.h"

#define LOG_WAIT_MS 5000

static const char HOSTILE_PY[] =
    "import io\n"
    "import os\n"
    "import signal\n"
    "import sys\n"
    "import threading\n"
    "import time\n"
    "import pyreload\n"
    "\n"
    "def hello(req):\n"
    "    req.write('hello')\n"
    "    return pyreload.OK\n"
    "\n"
    "def pid(req):\n"
    "    req.write(str(os.getpid()))\n"
    "    return pyreload.OK\n"
    "\n"
    "RETS = {'none': None, 'str': 'OK', 'huge': 10 ** 100, 'big': 2 ** 63,\n"
    "        'neg': -12345, 'float': 200.0, 'bool': True, 'tuple': (200,),\n"
    "        'obj': object()}\n"
    "\n"
    "def ret(req):\n"
    "    req.write('PYRT-discarded')\n"
    "    return RETS[req.args]\n"
    "\n"
    "def exc(req):\n"
    "    raise ValueError('PYRT-value-error')\n"
    "\n"
    "def sysexit(req):\n"
    "    sys.exit(7)\n"
    "\n"
    "def kbint(req):\n"
    "    raise KeyboardInterrupt('PYRT-kbint')\n"
    "\n"
    "def recurse(req):\n"
    "    def f(n):\n"
    "        return f(n + 1)\n"
    "    return f(0)\n"
    "\n"
    "def deep_c(req):\n"
    "    x = []\n"
    "    for _ in range(200000):\n"
    "        x = [x]\n"
    "    req.write(repr(x))\n"
    "    return pyreload.OK\n"
    "\n"
    "def stdout_close(req):\n"
    "    sys.stdout.close()\n"
    "    sys.stderr.close()\n"
    "    print('PYRT-after-close', req.args)\n"
    "    req.write('closed')\n"
    "    return pyreload.OK\n"
    "\n"
    "class Broken:\n"
    "    def write(self, s):\n"
    "        raise OSError('PYRT-broken-stdout')\n"
    "    def flush(self):\n"
    "        raise OSError('PYRT-broken-stdout')\n"
    "\n"
    "def stdout_replace(req):\n"
    "    sys.stdout = Broken()\n"
    "    sys.stderr = None\n"
    "    req.write('replaced')\n"
    "    return pyreload.OK\n"
    "\n"
    "def stdout_restore(req):\n"
    "    sys.stdout = sys.__stdout__\n"
    "    sys.stderr = sys.__stderr__\n"
    "    print('PYRT-restored', req.args)\n"
    "    req.write('restored')\n"
    "    return pyreload.OK\n"
    "\n"
    "def printuri(req):\n"
    "    print('PYRT-uri', req.uri, req.args)\n"
    "    sys.stderr.write('PYRT-uri-err %s\\n' % req.unparsed_uri)\n"
    "    req.write('printed')\n"
    "    return pyreload.OK\n"
    "\n"
    "def thread_sysexit(req):\n"
    "    t = threading.Thread(target=sys.exit, args=(3,), name='pyrt-sysexit')\n"
    "    t.start()\n"
    "    t.join(5)\n"
    "    req.write('joined=%r' % (not t.is_alive()))\n"
    "    return pyreload.OK\n"
    "\n"
    "def fork_exit(req):\n"
    "    child = os.fork()\n"
    "    if child == 0:\n"
    "        os._exit(0)\n"
    "    os.waitpid(child, 0)\n"
    "    req.write('reaped')\n"
    "    return pyreload.OK\n"
    "\n"
    "def fork_return(req):\n"
    "    child = os.fork()\n"
    "    if child == 0:\n"
    "        if req.args == 'raise':\n"
    "            raise SystemExit(0)\n"
    "        return pyreload.OK\n"
    "    req.write(str(child))\n"
    "    return pyreload.OK\n"
    "\n"
    "def kill(req):\n"
    "    how = req.args\n"
    "    if how != 'probe' and getattr(os.kill, '__self__', None) is not None:\n"
    "        # the real posix.kill: kill(-1) would reach every process of the\n"
    "        # user the server runs as, on the whole machine; do not send it\n"
    "        req.write('unguarded: not sent')\n"
    "        return pyreload.OK\n"
    "    try:\n"
    "        if how == 'parent':\n"
    "            os.kill(os.getppid(), signal.SIGTERM)\n"
    "        elif how == 'group':\n"
    "            os.kill(0, signal.SIGTERM)\n"
    "        elif how == 'killpg':\n"
    "            os.killpg(os.getpgrp(), signal.SIGTERM)\n"
    "        elif how == 'all':\n"
    "            os.kill(-1, signal.SIGTERM)\n"
    "        elif how == 'probe':\n"
    "            os.kill(os.getpid(), 0)\n"
    "        req.write('sent')\n"
    "    except PermissionError as e:\n"
    "        req.write('refused: %s' % e)\n"
    "    return pyreload.OK\n"
    "\n"
    "def sleep(req):\n"
    "    time.sleep(float(req.args or '1'))\n"
    "    req.write('slept')\n"
    "    return pyreload.OK\n"
    "\n"
    "def spin(req):\n"
    "    end = time.monotonic() + float(req.args or '1')\n"
    "    while time.monotonic() < end:\n"
    "        pass\n"
    "    req.write('spun')\n"
    "    return pyreload.OK\n"
    "\n"
    "def exit(req):\n"
    "    os._exit(int(req.args))  # PYRT-EXIT-LINE\n"
    "\n"
    "def abort(req):\n"
    "    os.abort()  # PYRT-ABORT-LINE\n"
    "\n"
    "def _run():\n"
    "    while True:\n"
    "        time.sleep(0.05)\n"
    "\n"
    "_pools = []\n"
    "\n"
    "def forever(req):\n"
    "    # a thread started here is a daemon unless told otherwise: the issue's\n"
    "    # threads were not; an executor's workers are joined at exit either way\n"
    "    name = 'pyrt-%s-%d' % (req.args, os.getpid())\n"
    "    if not any(t.name.startswith(name) for t in threading.enumerate()):\n"
    "        if req.args == 'thread':\n"
    "            threading.Thread(target=_run, name=name, daemon=False).start()\n"
    "        else:\n"
    "            import concurrent.futures\n"
    "            pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=name)\n"
    "            pool.submit(_run)\n"
    "            _pools.append(pool)\n"
    "    req.write(name)\n"
    "    return pyreload.OK\n"
    "\n"
    "def late_wake(req):\n"
    "    # a daemon thread blocked in a read that returns only at the very end\n"
    "    # of the process (tests/late_wake.c)\n"
    "    import ctypes\n"
    "    r, w = os.pipe()\n"
    "    threading.Thread(target=os.read, args=(r, 1), name='pyrt-late', daemon=True).start()\n"
    "    ctypes.CDLL(req.args).pyrt_wake_at_exit(w)\n"
    "    req.write('armed')\n"
    "    return pyreload.OK\n"
    "\n"
    "def kill_late(req):\n"
    "    # a daemon thread that calls os.kill() (signal 0: is it there?) while\n"
    "    # finalisation runs an atexit function that sleeps\n"
    "    import atexit\n"
    "    def probe(kill=os.kill):\n"
    "        while True:\n"
    "            try:\n"
    "                kill(os.getpid(), 0)  # a reference taken before the end\n"
    "            except RuntimeError:\n"
    "                os.kill(os.getpid(), 0)\n"
    "            time.sleep(0.01)\n"
    "    threading.Thread(target=probe, name='pyrt-kill-late', daemon=True).start()\n"
    "    atexit.register(time.sleep, 0.3)\n"
    "    req.write('armed')\n"
    "    return pyreload.OK\n"
    "\n"
    "def atexit_hang(req):\n"
    "    import atexit\n"
    "    atexit.register(time.sleep, 3600)\n"
    "    req.write('registered')\n"
    "    return pyreload.OK\n"
    "\n"
    "def echo(req):\n"
    "    data = req.read()\n"
    "    req.write(b'%d' % len(data))\n"
    "    return pyreload.OK\n"
    "\n"
    "def partial(req):\n"
    "    sys.stdout.write(req.args or 'PYRT-partial')\n"
    "    req.write('ok')\n"
    "    return pyreload.OK\n"
    "\n"
    "CHUNK = 'x' * (100 * 1024)\n"
    "\n"
    "def nonl(req):\n"
    "    sys.stdout.write(CHUNK)\n"
    "    req.write('ok')\n"
    "    return pyreload.OK\n";

/* Every callable of hostile.py at /NAME. */
static const char *const CALLABLES[] = {
    "hello", "pid", "ret", "exc", "sysexit", "kbint", "recurse", "deep_c", "stdout_close",
    "stdout_replace", "stdout_restore", "printuri", "thread_sysexit", "fork_exit",
    "fork_return", "kill", "sleep", "spin", "exit", "abort", "forever", "late_wake", "kill_late", "atexit_hang", "echo", "partial", "nonl",
};

/* abandons: the server's processes end without freeing what Python holds,
 * on purpose (threads left behind, a stop in the middle of a handler):
 * LeakSanitizer at their exit would report all of it, so it is off there;
 * ASan's and UBSan's other checks stay on. */
static httpd_t *
launch(const char *loglevel, int procs, const char *extra, int abandons)
{
    static const httpd_file_t files[] = {{"hostile.py", HOSTILE_PY}, {NULL, NULL}};
    char *conf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&conf, &len);
    httpd_opts_t o = {.files = files, .loglevel = loglevel, .procs = procs,
                      .no_leak_check = abandons};
    httpd_t *h;

    for (size_t i = 0; i < sizeof CALLABLES / sizeof CALLABLES[0]; i++) {
        fprintf(f, "<Location /%s>\n  PyReloadHandler @APP@/hostile.py::%s\n</Location>\n",
                CALLABLES[i], CALLABLES[i]);
    }
    if (extra) {
        fputs(extra, f);
    }
    fclose(f);
    o.config = conf;
    h = httpd_launch(&o);
    free(conf);
    ck_assert_msg(h != NULL, "httpd did not start");
    return h;
}

static const char *
mpm(void)
{
    return getenv("PYR_MPM") ? getenv("PYR_MPM") : "event";
}

/* The line of hostile.py that holds marker (1-based). */
static int
line_of(const char *marker)
{
    const char *at = strstr(HOSTILE_PY, marker);
    int line = 1;

    ck_assert_ptr_nonnull(at);
    for (const char *p = HOSTILE_PY; p < at; p++) {
        line += *p == '\n';
    }
    return line;
}

/* What must never appear: a crashed child, or a child that took the whole
 * server down (AH00050 "Child returned a Fatal error... Apache is exiting"). */
static void
assert_no_crash(httpd_t *h, size_t mark)
{
    char *log = httpd_log_since(h, mark);

    ck_assert_msg(httpd_log_no_crash(h, mark) && !strstr(log, "AH00050")
                  && !strstr(log, "Apache is exiting") && !strstr(log, "PYR0001"),
                  "crash line in the log:\n%.4000s", log);
    free(log);
}

/* The contract after every hostile case: the server is alive and serves. */
static void
assert_serving(httpd_t *h, size_t mark)
{
    http_resp_t *r = http_get(h, "/hello");

    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "hello");
    http_free(r);
    ck_assert_msg(httpd_pid_alive(h->pid), "the httpd parent %d is gone", (int)h->pid);
    assert_no_crash(h, mark);
}

static void
assert_log_has(httpd_t *h, size_t mark, const char *needle)
{
    if (!httpd_log_wait(h, mark, needle, 1, LOG_WAIT_MS)) {
        char *log = httpd_log_since(h, mark);
        ck_abort_msg("error log lacks \"%s\"; log since mark:\n%.4000s", needle, log);
    }
}

static pid_t
served_by(httpd_t *h)
{
    http_resp_t *r = http_get(h, "/pid");
    pid_t pid;

    http_assert_status(r, 200);
    pid = (pid_t)atoi(r->body);
    http_free(r);
    return pid;
}

/* ================================================================== */
/* Handlers that misbehave without touching their process              */

/* The server of the running TCase: one process, or two under prefork for
 * the cases with concurrent requests. */
static httpd_t *srv;

static void
setup_shared(void)
{
    srv = launch(NULL, 0, NULL, 0);
}

static void
setup_two(void)
{
    srv = launch(NULL, 2, NULL, 0);
}

static void
teardown_shared(void)
{
    httpd_free(srv);
    srv = NULL;
}

static const struct {
    const char *path;
    long status;            /* expected status */
    const char *log;        /* expected in the log, or NULL */
    const char *body;       /* expected in the body, or NULL */
} HANDLER_CASES[] = {
    {"/ret?none", 500, "returned None", NULL},
    {"/ret?str", 500, "returned 'OK'", NULL},
    {"/ret?huge", 500, "returned 10000000000", NULL},
    {"/ret?big", 500, "returned 9223372036854775808", NULL},
    {"/ret?neg", 500, "returned -12345", NULL},
    {"/ret?float", 500, "returned 200.0", NULL},
    {"/ret?bool", 500, "returned True", NULL},
    {"/ret?tuple", 500, "returned (200,)", NULL},
    {"/ret?obj", 500, "returned <object object", NULL},
    {"/exc", 500, "PYRT-value-error", NULL},
    {"/sysexit", 500, "SystemExit: 7", NULL},
    {"/kbint", 500, "KeyboardInterrupt: PYRT-kbint", NULL},
    {"/recurse", 500, "RecursionError", NULL},
    {"/deep_c", 500, "RecursionError", NULL},
    {"/stdout_close?c1", 200, "[stdout] PYRT-after-close c1", "closed"},
    {"/thread_sysexit", 200, NULL, "joined=True"},
    {"/fork_exit", 200, NULL, "reaped"},
    {"/kill?probe", 200, NULL, "sent"},
    {"/printuri/%ff%fe?%ff", 200, "PYRT-uri /printuri/", "printed"},
};

/* One request to srv: its status, then something in its body and in the
 * log (NULL: not checked), then the contract. */
static void
hit(const char *path, long status, const char *body, const char *log)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, path);

    ck_assert_msg(r->status == status, "%s: status %ld (%s), want %ld; body:\n%.1000s",
                  path, r->status, r->error, status, r->body);
    http_assert_body_lacks(r, "PYRT-discarded");
    if (body) {
        http_assert_body_has(r, body);
    }
    http_free(r);
    if (log) {
        assert_log_has(srv, mark, log);
    }
    assert_serving(srv, mark);
}

START_TEST(test_handler_case)
{
    hit(HANDLER_CASES[_i].path, HANDLER_CASES[_i].status, HANDLER_CASES[_i].body,
        HANDLER_CASES[_i].log);
}
END_TEST

/* A replaced sys.stdout is the handler's business (it is the process's
 * stdout); it breaks no other request, and restoring it works. */
START_TEST(test_stdout_replaced)
{
    hit("/stdout_replace", 200, "replaced", NULL);
    hit("/stdout_restore?r1", 200, "restored", "[stdout] PYRT-restored r1");
}
END_TEST

/* A process forked by a handler that returns into httpd instead of exiting
 * must not live on as a second, broken server process. */
START_TEST(test_fork_returns)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, _i ? "/fork_return?raise" : "/fork_return");
    pid_t copy;

    http_assert_status(r, 200);
    copy = (pid_t)atoi(r->body);
    ck_assert_msg(copy > 0, "body: %s", r->body);
    http_free(r);
    for (int i = 0; i < 300 && httpd_pid_alive(copy); i++) {
        usleep(10000);
    }
    ck_assert_msg(!httpd_pid_alive(copy), "the forked copy %d still runs", (int)copy);
    assert_log_has(srv, mark, "PYR0304");
    assert_serving(srv, mark);
}
END_TEST

/* os.kill() aimed at the server (its parent, its process group, every
 * process) is refused; a handler may only end its own process. */
static const char *const KILL_CASES[] = {"parent", "group", "killpg", "all"};

START_TEST(test_kill_server)
{
    size_t mark = httpd_log_mark(srv);
    pid_t before = served_by(srv);
    char path[64];
    http_resp_t *r;

    snprintf(path, sizeof path, "/kill?%s", KILL_CASES[_i]);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    http_assert_body_has(r, "refused");
    http_free(r);
    assert_log_has(srv, mark, "PYR0305");
    assert_serving(srv, mark);
    ck_assert_int_eq(served_by(srv), before);
}
END_TEST

/* ================================================================== */
/* Clients that send garbage                                           */

#define RAW(text) text, sizeof(text) - 1     /* NULs included */

static const struct {
    const char *data;
    size_t len;
} CLIENT_CASES[] = {
    {RAW("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\x00\xfe\r\n\r\n")},
    {RAW("GET /hello\r\n\r\n")},
    {RAW("GET /hello HTTP/9.9\r\nHost: x\r\n\r\n")},
    {RAW("G\x01T /hello HTTP/1.1\r\nHost: x\r\n\r\n")},
    {RAW("BREW /hello HTTP/1.1\r\nHost: x\r\n\r\n")},
    {RAW("GET /hel\0lo HTTP/1.1\r\nHost: x\r\n\r\n")},
    {RAW("GET /printuri/\xff\xfe?\xc3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")},
    {RAW("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
         "Connection: close\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n")},
    {RAW("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nabc")},
    {RAW("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")},
    {RAW("GET /hello HTTP/1.1\r\nHost: x\r\nJunk\r\n\r\n")},
    {RAW("GET /echo HTTP/1.1\nHost: x\nConnection: close\n\n")},
};

START_TEST(test_client_garbage)
{
    size_t mark = httpd_log_mark(srv);
    char *resp = http_raw(srv, CLIENT_CASES[_i].data, CLIENT_CASES[_i].len, NULL, 3000);

    free(resp);
    assert_serving(srv, mark);
}
END_TEST

START_TEST(test_client_huge_header)
{
    size_t mark = httpd_log_mark(srv);
    size_t n = 200 * 1024;
    char *req = malloc(n + 128);
    int off = snprintf(req, 128, "GET /printuri HTTP/1.1\r\nHost: x\r\nX-Big: ");
    char *resp;

    memset(req + off, 'b', n);
    memcpy(req + off + n, "\r\n\r\n", 4);
    resp = http_raw(srv, req, off + n + 4, NULL, 3000);
    ck_assert_msg(strstr(resp, " 400 ") || strstr(resp, " 431 ") || !*resp,
                  "response: %.300s", resp);
    free(resp);
    free(req);
    assert_serving(srv, mark);
}
END_TEST

/* ================================================================== */
/* stdout without a newline                                            */

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* The measurement: 1,000 requests that each write 100 KB to
 * sys.stdout without a newline.  Unfixed: the child grew 11.9 -> 111 MB and
 * a request went from 1.4 to 129 ms.  Here 600 requests (60 MB written): the
 * child's RSS must stay flat and the last requests as fast as the first. */
#define NONL_REQUESTS 600
#define NONL_WINDOW 50

START_TEST(test_stdout_no_newline_bounded)
{
    httpd_t *h = launch(NULL, 0, NULL, 0);
    http_client_t *c = http_client_new(h);
    double first[NONL_WINDOW], last[NONL_WINDOW], t0, m_first, m_last;
    pid_t child;
    long rss0, rss1;

    for (int i = 0; i < 20; i++) {          /* warm up: load, first allocations */
        http_resp_t *r = http_client_get(c, "/nonl");
        http_assert_status(r, 200);
        http_free(r);
    }
    child = httpd_child(h);
    rss0 = httpd_rss_kb(child);
    for (int i = 0; i < NONL_REQUESTS; i++) {
        http_resp_t *r;

        t0 = now_ms();
        r = http_client_get(c, "/nonl");
        http_assert_status(r, 200);
        http_free(r);
        if (i < NONL_WINDOW) {
            first[i] = now_ms() - t0;
        }
        else if (i >= NONL_REQUESTS - NONL_WINDOW) {
            last[i - (NONL_REQUESTS - NONL_WINDOW)] = now_ms() - t0;
        }
    }
    rss1 = httpd_rss_kb(child);
    m_first = median(first, NONL_WINDOW);
    m_last = median(last, NONL_WINDOW);
    fprintf(stderr, "[%s] stdout without newline, %d x 100 KB: child RSS %ld -> %ld kB, "
            "median latency first %d: %.2f ms, last %d: %.2f ms\n",
            mpm(), NONL_REQUESTS, rss0, rss1,
            NONL_WINDOW, m_first, NONL_WINDOW, m_last);
    /* Under ASan, RSS is its quarantine; LeakSanitizer judges at exit. */
    ck_assert_msg(httpd_sanitizing() || rss1 - rss0 < 8 * 1024, "child RSS grew %ld -> %ld kB",
                  rss0, rss1);
    ck_assert_msg(m_last < 3 * m_first + 5, "latency grew: median %.2f -> %.2f ms",
                  m_first, m_last);
    http_client_free(c);
    httpd_free(h);
}
END_TEST

/* A partial line is logged when its request ends, not held until some
 * later newline; a long line is split into pieces httpd will not cut. */
START_TEST(test_stdout_partial_line_flushed)
{
    hit("/partial?PYRT-part-one", 200, "ok", "[stdout] PYRT-part-one");
}
END_TEST

START_TEST(test_stdout_long_line_split)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/nonl");
    char *log;
    size_t total = 0;
    int pieces = 0;

    http_assert_status(r, 200);
    http_free(r);
    ck_assert(httpd_log_wait(srv, mark, "[stdout] xxx", 1, LOG_WAIT_MS));
    usleep(200000);
    log = httpd_log_since(srv, mark);
    /* every x written is in the log: no line was cut by httpd */
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        char *p = strstr(line, "[stdout] ");
        if (!p) {
            continue;
        }
        pieces++;
        p += strlen("[stdout] ");
        total += strspn(p, "x");
        ck_assert_msg(strlen(line) < 8000, "log line of %zu chars", strlen(line));
    }
    free(log);
    ck_assert_msg(total == 100 * 1024, "%zu of %d bytes in %d log lines", total,
                  100 * 1024, pieces);
    ck_assert_int_ge(pieces, 13);
}
END_TEST

/* ================================================================== */
/* os._exit() and os.abort(): the process ends, never the server        */

static const struct {
    const char *path;
    const char *call;
    const char *marker;
} EXIT_CASES[] = {
    {"/exit?15", "os._exit(15)", "PYRT-EXIT-LINE"},     /* APEXIT_CHILDFATAL */
    {"/exit?3", "os._exit(3)", "PYRT-EXIT-LINE"},       /* APEXIT_CHILDINIT */
    {"/exit?0", "os._exit(0)", "PYRT-EXIT-LINE"},
    {"/exit?7", "os._exit(7)", "PYRT-EXIT-LINE"},       /* APEXIT_CHILDSICK */
    {"/abort", "os.abort()", "PYRT-ABORT-LINE"},
};

START_TEST(test_exit_ends_only_the_child)
{
    size_t mark = httpd_log_mark(srv);
    char needle[512];
    http_resp_t *r = http_get(srv, EXIT_CASES[_i].path);
    char *line, *at;
    pid_t gone;

    ck_assert_msg(r->status == 0, "%s answered %ld", EXIT_CASES[_i].path, r->status);
    http_free(r);
    snprintf(needle, sizeof needle, "%s called at %s/hostile.py:%d", EXIT_CASES[_i].call,
             srv->app, line_of(EXIT_CASES[_i].marker));
    assert_log_has(srv, mark, needle);
    line = httpd_log_line(srv, mark, needle);
    ck_assert_msg(strstr(line, ":error]") && strstr(line, "PYR0300"), "line: %s", line);
    at = strstr(line, "[pid ");
    ck_assert_ptr_nonnull(at);
    gone = (pid_t)atoi(at + 5);
    free(line);
    /* the next request is served, and the process that called it is gone */
    assert_serving(srv, mark);
    for (int i = 0; i < 300 && httpd_pid_alive(gone); i++) {
        usleep(10000);
    }
    ck_assert_msg(!httpd_pid_alive(gone), "the child %d that called %s still runs",
                  (int)gone, EXIT_CASES[_i].call);
    ck_assert_int_ne(served_by(srv), gone);
    assert_no_crash(srv, mark);
}
END_TEST

struct bg {
    httpd_t *h;
    const char *path;
    http_resp_t *r;
};

static void *
bg_get(void *arg)
{
    struct bg *b = arg;

    b->r = http_get(b->h, b->path);
    return NULL;
}

/* Requests the exiting process was serving on other threads finish first. */
START_TEST(test_exit_lets_others_finish)
{
    size_t mark = httpd_log_mark(srv);
    struct bg b = {srv, "/sleep?1.5", NULL};
    pthread_t t;
    http_resp_t *r;

    pthread_create(&t, NULL, bg_get, &b);
    usleep(400000);
    r = http_get(srv, "/exit?3");
    http_free(r);
    pthread_join(t, NULL);
    http_assert_status(b.r, 200);
    ck_assert_str_eq(b.r->body, "slept");
    http_free(b.r);
    assert_log_has(srv, mark, "PYR0300");
    assert_serving(srv, mark);
}
END_TEST

/* ================================================================== */
/* Threads a handler leaves running                                    */

/* Stop h; the figure goes to stderr.  The stop must be clean (no SIGKILL),
 * within max_s, with no crash line.  Returns the log (malloc'd). */
static char *
stop_within(httpd_t *h, const char *what, double max_s)
{
    int rc = httpd_stop(h);
    char *log = httpd_log(h);

    fprintf(stderr, "[%s] stop %s: %.2f s, %s\n", mpm(), what, h->stop_seconds,
            h->stop_clean ? "clean" : "SIGKILL");
    ck_assert_msg(rc == 0 && h->stop_clean, "stop %s needed SIGKILL (%.2f s); log:\n%.3000s",
                  what, h->stop_seconds, log);
    ck_assert_msg(h->stop_seconds < max_s, "stop %s took %.2f s", what, h->stop_seconds);
    ck_assert_msg(httpd_log_no_crash(h, 0), "log:\n%.3000s", log);
    return log;
}

/* A stop (SIGTERM) while a non-daemon thread runs forever.  Unfixed: 10 s,
 * then SIGKILL. */
static const char *const FOREVER[] = {"/forever?thread", "/forever?pool"};

START_TEST(test_thread_stop)
{
    httpd_t *h = launch(NULL, 0, NULL, 1);
    http_resp_t *r = http_get(h, FOREVER[_i]);
    char *name, *log;

    http_assert_status(r, 200);
    name = strdup(r->body);
    http_free(r);
    log = stop_within(h, FOREVER[_i], 3.0);
    ck_assert_msg(strstr(log, "PYR0302") && strstr(log, name),
                  "the log does not name the thread %s:\n%.3000s", name, log);
    free(log);
    free(name);
    httpd_free(h);
}
END_TEST

/* A thread that outlives finalisation and wakes at the very end of the
 * process (after httpd's pools, and its modules with them, are gone) must
 * find the code it runs still there. */
START_TEST(test_thread_wakes_at_exit)
{
    httpd_t *h = launch(NULL, 0, NULL, 1);
    http_resp_t *r = http_get(h, "/late_wake?" IT_LATE_WAKE_SO);
    char *log, *at;

    http_assert_status(r, 200);
    http_free(r);
    log = stop_within(h, "with a thread that wakes at exit", 3.0);
    at = strstr(log, "pyrt-late-wake: at exit");
    ck_assert_msg(at, "the helper did not run:\n%.3000s", log);
    fprintf(stderr, "[%s] %.*s\n", mpm(), (int)strcspn(at, "\n"), at);
    free(log);
    httpd_free(h);
}
END_TEST

/* A thread that calls os.kill() while finalisation runs (after the guard
 * of os.kill() is released).  Unfixed: the child crashed (SIGSEGV). */
START_TEST(test_thread_kills_at_exit)
{
    httpd_t *h = launch(NULL, 0, NULL, 1);
    http_resp_t *r = http_get(h, "/kill_late");

    http_assert_status(r, 200);
    http_free(r);
    free(stop_within(h, "with a thread that calls os.kill() at exit", 3.0));
    httpd_free(h);
}
END_TEST

/* Finalisation itself may wait for ever (an atexit function that sleeps):
 * the process still ends, a while before httpd's SIGKILL. */
START_TEST(test_atexit_blocks)
{
    httpd_t *h = launch(NULL, 0, NULL, 1);
    http_resp_t *r = http_get(h, "/atexit_hang");
    char *log;

    http_assert_status(r, 200);
    http_free(r);
    log = stop_within(h, "with an atexit function that sleeps", 7.0);
    ck_assert_msg(strstr(log, "PYR0303"), "log:\n%.3000s", log);
    free(log);
    httpd_free(h);
}
END_TEST

/* Graceful restarts with the scoreboard just large enough: each old child
 * must go, or the new generation cannot start (AH03490, requests hang). */
START_TEST(test_thread_graceful_restarts)
{
    httpd_t *h = launch(NULL, 0, NULL, 1);
    size_t mark = httpd_log_mark(h);

    for (int round = 0; round < 3; round++) {
        http_resp_t *r = http_get(h, FOREVER[round % 2]);
        pid_t old = served_by(h);
        double t0;
        char *name;

        http_assert_status(r, 200);
        name = strdup(r->body);
        http_free(r);
        r = http_get(h, FOREVER[(round + 1) % 2]);
        http_assert_status(r, 200);
        http_free(r);
        ck_assert_int_eq(httpd_signal(h, SIGUSR1), 0);
        t0 = now_ms();
        while (httpd_pid_alive(old) && now_ms() - t0 < 8000) {
            usleep(20000);
        }
        fprintf(stderr, "[%s] graceful restart %d: old child gone after %.2f s\n",
                mpm(), round + 1,
                (now_ms() - t0) / 1e3);
        ck_assert_msg(!httpd_pid_alive(old), "round %d: old child %d still alive after 8 s",
                      round + 1, (int)old);
        assert_log_has(h, mark, name);
        r = http_get(h, "/hello");
        http_assert_status(r, 200);
        http_free(r);
        ck_assert_int_ne(served_by(h), old);
        free(name);
    }
    assert_no_crash(h, mark);
    /* AH03490 ("scoreboard is full") may be logged while an old child takes
     * its bounded second to go: with ServerLimit 1 any exit that outlasts
     * the parent's one-second check does that.  What matters is above: it
     * goes, and the new generation serves. */
    ck_assert_int_eq(httpd_stop(h), 0);
    httpd_free(h);
}
END_TEST

/* A stop while a handler is inside Python, waiting (GIL released) or
 * computing (GIL held): prefork ends a child from its SIGTERM handler, in
 * the middle of the request, on the thread that runs it. */
static const char *const BUSY[] = {"/sleep?2", "/spin?2"};

START_TEST(test_stop_during_request)
{
    httpd_t *h = launch(NULL, 0, NULL, 1);
    struct bg b = {h, BUSY[_i], NULL};
    pthread_t t;

    pthread_create(&t, NULL, bg_get, &b);
    usleep(500000);
    free(stop_within(h, BUSY[_i], 5.0));
    pthread_join(t, NULL);
    http_free(b.r);
    httpd_free(h);
}
END_TEST

/* ================================================================== */

Suite *
suite_hostile(void)
{
    Suite *s = suite_create("hostile");
    TCase *tc;

    tc = httpd_tcase("handler", 120, setup_shared, teardown_shared);
    tcase_add_loop_test(tc, test_handler_case, 0,
                        (int)(sizeof HANDLER_CASES / sizeof HANDLER_CASES[0]));
    tcase_add_test(tc, test_stdout_replaced);
    tcase_add_loop_test(tc, test_fork_returns, 0, 2);
    tcase_add_loop_test(tc, test_kill_server, 0,
                        (int)(sizeof KILL_CASES / sizeof KILL_CASES[0]));
    tcase_add_loop_test(tc, test_client_garbage, 0,
                        (int)(sizeof CLIENT_CASES / sizeof CLIENT_CASES[0]));
    tcase_add_test(tc, test_client_huge_header);
    tcase_add_test(tc, test_stdout_partial_line_flushed);
    tcase_add_test(tc, test_stdout_long_line_split);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("stdio", 120, NULL, NULL);
    tcase_add_test(tc, test_stdout_no_newline_bounded);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("exit", 120, setup_two, teardown_shared);
    tcase_add_loop_test(tc, test_exit_ends_only_the_child, 0,
                        (int)(sizeof EXIT_CASES / sizeof EXIT_CASES[0]));
    tcase_add_test(tc, test_exit_lets_others_finish);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("threads", 60, NULL, NULL);
    tcase_add_loop_test(tc, test_thread_stop, 0, 2);
    tcase_add_test(tc, test_thread_wakes_at_exit);
    tcase_add_test(tc, test_thread_kills_at_exit);
    tcase_add_test(tc, test_thread_graceful_restarts);
    tcase_add_test(tc, test_atexit_blocks);
    tcase_add_loop_test(tc, test_stop_during_request, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
