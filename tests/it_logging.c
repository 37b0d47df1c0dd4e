/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_logging.c: Python's logging module into the error log at Apache's own
 * levels (DEBUG debug, INFO info, WARNING warn, ERROR error, CRITICAL crit),
 * honouring `LogLevel pyreload:...`, tagged with the client during a
 * request, with exc_info; and an application that configures logging itself
 * keeps what it configured.
 *
 * Four servers: `LogLevel info pyreload:debug`, `LogLevel info
 * pyreload:warn`, one with a virtual host of each, and one whose application
 * calls basicConfig() (process-wide: it would change what the others test).
 */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char LOG_PY[] =
    "import logging\n"
    "import threading\n"
    "import time\n"
    "import pyreload\n"
    "\n"
    "log = logging.getLogger('pyrt')\n"
    "\n"
    "def _text(req, s):\n"
    "    req.content_type = 'text/plain'\n"
    "    req.write(s)\n"
    "    return pyreload.OK\n"
    "\n"
    "def levels(req):\n"
    "    m = req.args\n"
    "    log.debug('PYRT-debug-%s', m)\n"
    "    log.info('PYRT-info-%s', m)\n"
    "    log.warning('PYRT-warning-%s', m)\n"
    "    log.error('PYRT-error-%s', m)\n"
    "    log.critical('PYRT-critical-%s', m)\n"
    "    logging.warning('PYRT-root-%s', m)\n"
    "    return _text(req, 'logged')\n"
    "\n"
    "def exc(req):\n"
    "    try:\n"
    "        1 / 0\n"
    "    except ZeroDivisionError:\n"
    "        log.exception('PYRT-exc-%s', req.args)\n"
    "    return _text(req, 'logged')\n"
    "\n"
    "def later(m):\n"
    "    time.sleep(0.3)\n"
    "    log.warning('PYRT-thread-%s', m)\n"
    "\n"
    "def thread(req):\n"
    "    threading.Thread(target=later, args=(req.args,)).start()\n"
    "    return _text(req, 'started')\n"
    "\n"
    "def root(req):\n"
    "    r = logging.getLogger()\n"
    "    return _text(req, '%d %d %s' % (r.level, len(r.handlers),\n"
    "                                    type(logging.lastResort).__name__))\n"
    "\n"
    "def application(environ, start_response):\n"
    "    log.warning('PYRT-wsgi-%s', environ['QUERY_STRING'])\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'logged']\n";

/* Flask gives app.logger a handler of its own (to wsgi.errors, so at error
 * level) unless a handler above it would take the record; the README's
 * line that removes it gives the records their own levels. */
static const char FLASK_PY[] =
    "from flask import Flask, request\n"
    "from flask.logging import default_handler\n"
    "\n"
    "app = Flask(__name__)\n"
    "application = app\n"
    "\n"
    "@app.route('/')\n"
    "def index():\n"
    "    if request.args.get('native'):\n"
    "        app.logger.removeHandler(default_handler)\n"
    "    app.logger.warning('PYRT-flask-%s', request.query_string.decode())\n"
    "    return 'logged'\n";

static const httpd_file_t FILES[] = {{"log.py", LOG_PY}, {"flaskapp.py", FLASK_PY},
                                     {NULL, NULL}};

static const char CONF[] =
    "<Location /levels>\n  PyReloadHandler @APP@/log.py::levels\n</Location>\n"
    "<Location /exc>\n  PyReloadHandler @APP@/log.py::exc\n</Location>\n"
    "<Location /thread>\n  PyReloadHandler @APP@/log.py::thread\n</Location>\n"
    "<Location /root>\n  PyReloadHandler @APP@/log.py::root\n</Location>\n"
    "<Location /wsgi>\n  PyReloadWSGI @APP@/log.py\n</Location>\n"
    "<Location /flask>\n  PyReloadWSGI @APP@/flaskapp.py\n</Location>\n";

static httpd_t *srv;

static void
start(const char *loglevel, const char *config, const httpd_file_t *files)
{
    httpd_opts_t o = {.config = config, .files = files, .loglevel = loglevel};

    srv = httpd_launch(&o);
    ck_assert_msg(srv != NULL, "httpd did not start");
}

static void
debug_setup(void)
{
    start("info pyreload:debug", CONF, FILES);
}

static void
warn_setup(void)
{
    start("info pyreload:warn", CONF, FILES);
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* GET path?tag, 200; returns the body (malloc'd). */
static char *
get(const char *path, const char *tag)
{
    char url[128];
    http_resp_t *r;
    char *body;

    snprintf(url, sizeof(url), "%s?%s", path, tag);
    r = http_get(srv, url);
    http_assert_status(r, 200);
    body = strdup(r->body);
    http_free(r);
    return body;
}

/* The log line after mark that holds text: at level (e.g. "[pyreload:warn]"),
 * with or without the client's tag, ending with text exactly. */
static void
assert_line(size_t mark, const char *text, const char *level, int client)
{
    char *line = httpd_log_line(srv, mark, text);
    size_t n, t = strlen(text);

    ck_assert_msg(line != NULL, "no log line has \"%s\"; log:\n%s", text,
                  httpd_log_since(srv, mark));
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        line[--n] = '\0';
    }
    ck_assert_msg(strstr(line, level) != NULL, "not at %s: %s", level, line);
    ck_assert_msg(n >= t && strcmp(line + n - t, text) == 0, "does not end with \"%s\": %s",
                  text, line);
    if (client) {
        ck_assert_msg(strstr(line, "[client 127.0.0.1:") != NULL, "no client tag: %s", line);
    }
    else {
        ck_assert_msg(strstr(line, "[client ") == NULL, "a client tag: %s", line);
    }
    free(line);
}

/* GET path?<what><pid>, its answer dropped: the log's mark from before it;
 * the tag (<what><pid>) in tag. */
static size_t
request(const char *path, const char *what, char tag[32])
{
    size_t mark = httpd_log_mark(srv);

    snprintf(tag, 32, "%s%d", what, (int)getpid());
    free(get(path, tag));
    return mark;
}

/* ---- LogLevel info pyreload:debug --------------------------------- */

START_TEST(test_each_level_at_its_apache_level)
{
    static const struct {
        const char *name, *level;
    } cases[] = {
        {"debug", "[pyreload:debug]"},  {"info", "[pyreload:info]"},
        {"warning", "[pyreload:warn]"}, {"error", "[pyreload:error]"},
        {"critical", "[pyreload:crit]"},
    };
    char tag[32], text[96];
    size_t i;
    size_t mark = request("/levels", "lv", tag);

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "pyrt: PYRT-%s-%s", cases[i].name, tag);
        assert_line(mark, text, cases[i].level, 1);
        /* once: no [stderr] copy from logging's own last resort */
        ck_assert_int_eq(httpd_log_count(srv, mark, text), 1);
    }
    snprintf(text, sizeof(text), "root: PYRT-root-%s", tag);
    assert_line(mark, text, "[pyreload:warn]", 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "[stderr]"), 0);
}
END_TEST

START_TEST(test_exc_info_logged)
{
    char tag[32], text[96];
    size_t mark = request("/exc", "ex", tag);

    snprintf(text, sizeof(text), "pyrt: PYRT-exc-%s", tag);
    assert_line(mark, text, "[pyreload:error]", 1);
    assert_line(mark, "Traceback (most recent call last):", "[pyreload:error]", 1);
    assert_line(mark, "    1 / 0", "[pyreload:error]", 1);
    assert_line(mark, "ZeroDivisionError: division by zero", "[pyreload:error]", 1);
}
END_TEST

START_TEST(test_wsgi_request_tagged)
{
    char tag[32], text[96];
    size_t mark = request("/wsgi", "ws", tag);

    snprintf(text, sizeof(text), "pyrt: PYRT-wsgi-%s", tag);
    assert_line(mark, text, "[pyreload:warn]", 1);
}
END_TEST

START_TEST(test_flask_app_logger)
{
    char tag[32], text[96];
    size_t mark = request("/flask/", "fl", tag);
    char *line;

    /* Flask's own handler: its format, through wsgi.errors */
    snprintf(text, sizeof(text), "PYRT-flask-%s", tag);
    line = httpd_log_line(srv, mark, text);
    ck_assert_msg(line && strstr(line, "[pyreload:error]") && strstr(line, "WARNING in flaskapp"),
                  "%s", line ? line : httpd_log_since(srv, mark));
    free(line);
    /* without it: the record's own level */
    snprintf(text, sizeof(text), "native=1&%s", tag);
    mark = httpd_log_mark(srv);
    free(get("/flask/", text));
    snprintf(text, sizeof(text), "PYRT-flask-native=1&%s", tag);
    line = httpd_log_line(srv, mark, text);
    ck_assert_msg(line && strstr(line, "[pyreload:warn]") && strstr(line, ": PYRT-flask-native"),
                  "%s", line ? line : httpd_log_since(srv, mark));
    free(line);
}
END_TEST

/* A thread still running after its request logs for the server: no client. */
START_TEST(test_thread_outside_request)
{
    char tag[32], text[96];
    size_t mark = request("/thread", "th", tag);

    snprintf(text, sizeof(text), "pyrt: PYRT-thread-%s", tag);
    ck_assert_msg(httpd_log_wait(srv, mark, text, 1, 5000), "the thread's record never came");
    assert_line(mark, text, "[pyreload:warn]", 0);
}
END_TEST

/* pyreload:debug: the root logger lets DEBUG through; lastResort is ours. */
START_TEST(test_root_level_follows_loglevel)
{
    char *body = get("/root", "x");

    ck_assert_str_eq(body, "10 0 LogHandler");
    free(body);
}
END_TEST

/* ---- LogLevel info pyreload:warn ----------------------------------- */

START_TEST(test_below_loglevel_dropped)
{
    char tag[32], text[96];
    char *body;
    size_t mark = request("/levels", "q", tag);

    snprintf(text, sizeof(text), "pyrt: PYRT-warning-%s", tag);
    assert_line(mark, text, "[pyreload:warn]", 1);
    snprintf(text, sizeof(text), "pyrt: PYRT-critical-%s", tag);
    assert_line(mark, text, "[pyreload:crit]", 1);
    snprintf(text, sizeof(text), "PYRT-debug-%s", tag);
    ck_assert_int_eq(httpd_log_count(srv, mark, text), 0);
    snprintf(text, sizeof(text), "PYRT-info-%s", tag);
    ck_assert_int_eq(httpd_log_count(srv, mark, text), 0);
    /* Python's default WARNING stays: nothing lower is made for nothing */
    body = get("/root", "x");
    ck_assert_str_eq(body, "30 0 LogHandler");
    free(body);
}
END_TEST

/* ---- two virtual hosts, two levels ---------------------------------- */

static const char VHOSTS_CONF[] =
    "<VirtualHost *>\n"
    "  ServerName quiet.test\n"
    "  LogLevel info pyreload:warn\n"
    "  <Location /levels>\n    PyReloadHandler @APP@/log.py::levels\n  </Location>\n"
    "</VirtualHost>\n"
    "<VirtualHost *>\n"
    "  ServerName loud.test\n"
    "  LogLevel info pyreload:debug\n"
    "  <Location /levels>\n    PyReloadHandler @APP@/log.py::levels\n  </Location>\n"
    "</VirtualHost>\n";

static void
vhosts_setup(void)
{
    start("info pyreload:warn", VHOSTS_CONF, FILES);
}

/* Each virtual host's LogLevel decides for its requests, in one process. */
START_TEST(test_vhost_levels)
{
    static const char *const hosts[] = {"quiet.test", "loud.test"};
    char tag[2][32], url[96], text[96];
    size_t mark = httpd_log_mark(srv);
    int i;

    for (i = 0; i < 2; i++) {
        const char *headers[2] = {NULL, NULL};
        char host[64];
        http_resp_t *r;

        snprintf(host, sizeof(host), "Host: %s", hosts[i]);
        headers[0] = host;
        snprintf(tag[i], sizeof(tag[i]), "vh%d-%d", i, (int)getpid());
        snprintf(url, sizeof(url), "/levels?%s", tag[i]);
        r = http_request(srv, "GET", url, headers, NULL, 0);
        http_assert_status(r, 200);
        http_free(r);
    }
    snprintf(text, sizeof(text), "pyrt: PYRT-warning-%s", tag[0]);
    assert_line(mark, text, "[pyreload:warn]", 1);
    snprintf(text, sizeof(text), "PYRT-info-%s", tag[0]);
    ck_assert_int_eq(httpd_log_count(srv, mark, text), 0);
    snprintf(text, sizeof(text), "PYRT-debug-%s", tag[0]);
    ck_assert_int_eq(httpd_log_count(srv, mark, text), 0);
    snprintf(text, sizeof(text), "pyrt: PYRT-debug-%s", tag[1]);
    assert_line(mark, text, "[pyreload:debug]", 1);
    snprintf(text, sizeof(text), "pyrt: PYRT-info-%s", tag[1]);
    assert_line(mark, text, "[pyreload:info]", 1);
}
END_TEST

/* ---- an application that configures logging itself ----------------- */

static const char OWN_PY[] =
    "import logging\n"
    "import pyreload\n"
    "\n"
    "logging.basicConfig(format='PYRT-own %(levelname)s %(name)s %(message)s',\n"
    "                    level=logging.INFO)\n"
    "native = logging.getLogger('native')\n"
    "native.propagate = False\n"
    "if not native.handlers:\n"
    "    native.addHandler(pyreload.LogHandler())\n"
    "\n"
    "def handler(req):\n"
    "    logging.getLogger('pyrt').info('PYRT-basic-%s', req.args)\n"
    "    native.info('PYRT-native-%s', req.args)\n"
    "    r = logging.getLogger()\n"
    "    req.write('%d %s' % (len(r.handlers), type(r.handlers[0]).__name__))\n"
    "    return pyreload.OK\n";

static void
own_setup(void)
{
    static const httpd_file_t files[] = {{"own.py", OWN_PY}, {NULL, NULL}};

    start("info pyreload:info",
          "<Location /own>\n  PyReloadHandler @APP@/own.py\n</Location>\n", files);
}

START_TEST(test_own_basicconfig_kept)
{
    char tag[32], text[96];
    char *body;
    size_t mark = httpd_log_mark(srv);

    snprintf(tag, sizeof(tag), "own%d", (int)getpid());
    body = get("/own", tag);
    /* basicConfig() with a format and a level but no destination did
     * configure the root logger: its format and level, and our handler
     * (Python's default destination, standard error, is the error log):
     * the record keeps its level and its client, and is logged once */
    ck_assert_str_eq(body, "1 LogHandler");
    free(body);
    snprintf(text, sizeof(text), "PYRT-own INFO pyrt PYRT-basic-%s", tag);
    assert_line(mark, text, "[pyreload:info]", 1);
    snprintf(text, sizeof(text), "PYRT-basic-%s", tag);
    ck_assert_int_eq(httpd_log_count(srv, mark, text), 1);
    /* pyreload.LogHandler added by the application: native level, client */
    snprintf(text, sizeof(text), "native: PYRT-native-%s", tag);
    assert_line(mark, text, "[pyreload:info]", 1);
}
END_TEST

Suite *
suite_logging(void)
{
    Suite *s = suite_create("logging");
    TCase *dbg = httpd_tcase("debug", 60, debug_setup, teardown);
    TCase *warn = httpd_tcase("warn", 60, warn_setup, teardown);
    TCase *own = httpd_tcase("own", 60, own_setup, teardown);
    TCase *vh = httpd_tcase("vhosts", 60, vhosts_setup, teardown);

    tcase_add_test(dbg, test_each_level_at_its_apache_level);
    tcase_add_test(dbg, test_exc_info_logged);
    tcase_add_test(dbg, test_wsgi_request_tagged);
    tcase_add_test(dbg, test_thread_outside_request);
    tcase_add_test(dbg, test_flask_app_logger);
    tcase_add_test(dbg, test_root_level_follows_loglevel);
    suite_add_tcase(s, dbg);
    tcase_add_test(warn, test_below_loglevel_dropped);
    suite_add_tcase(s, warn);
    tcase_add_test(own, test_own_basicconfig_kept);
    suite_add_tcase(s, own);
    tcase_add_test(vh, test_vhost_levels);
    suite_add_tcase(s, vh);
    return s;
}
