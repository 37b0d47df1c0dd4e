/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_wsgi.c: PyReloadWSGI (issue 10, PEP 3333) against a real apache2, one
 * test per behaviour that the issue and the PEP ask for: environ keys,
 * wsgi.input, wsgi.errors, start_response, the response, close(),
 * file_wrapper, wrong responses, wsgiref.validate, reloading.  Where the
 * PEP leaves a choice, the comment at the test says which one is expected.
 *
 * The applications live in tests/wsgi/ (IT_WSGI_DIR, from the Makefile) and
 * are copied into the server's app/ dir:
 *   env.py  the environ as "KEY=ascii(value)" lines, plus derived "_x=" lines
 *   w.py    one application per behaviour, /w/<name>?...; close() calls and
 *           runs counted per token, read back through /w/count?t=<token>
 *   v.py    applications wrapped in wsgiref.validate.validator, whose
 *           warnings are made errors
 * and reloading uses generated files (r_*.py).
 *
 * Every case must pass under the event, worker and prefork MPMs (PYR_MPM);
 * the main server has one process, the reload server two under prefork (a
 * request made while a stream runs needs the other one).
 */
#define _GNU_SOURCE /* strcasestr */
#include "it_util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IT_WSGI_DIR
#error "IT_WSGI_DIR (tests/wsgi) comes from the Makefile"
#endif

#define MOD "/usr/lib/apache2/modules/"
#define MIB (1024 * 1024)
#define BIGFILE_LEN (10 * MIB)

static httpd_t *srv;   /* the PEP 3333 server: one process */
static httpd_t *rsrv;  /* reloading: two processes under prefork */

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static char *
slurp(const char *name)
{
    char path[512];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%s/%s", IT_WSGI_DIR, name);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    ck_assert_msg(fread(buf, 1, (size_t)n, f) == (size_t)n, "short read of %s", path);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The byte at offset i of the big file (a period prime to every block size). */
static unsigned char
pattern(size_t i)
{
    return (unsigned char)((i * 7 + i / 251) % 251);
}

static uint32_t
crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;

    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        }
    }
    return ~c;
}

/* A unique token per call, for counters that outlive a test. */
static const char *
token(char *buf, size_t n, const char *what)
{
    static int seq;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, n, "%s-%d-%ld-%d", what, (int)getpid(), (long)ts.tv_nsec, ++seq);
    return buf;
}

/* "closed=N ran=N blocks=N" of a token, read through /w/count. */
static void
counts(httpd_t *h, const char *tok, int *closed, int *ran, int *blocks)
{
    char path[256];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/w/count?t=%s", tok);
    r = http_get(h, path);
    http_assert_status(r, 200);
    ck_assert_msg(sscanf(r->body, "closed=%d ran=%d blocks=%d", closed, ran, blocks) == 3,
                  "count: '%s'", r->body);
    http_free(r);
}

/* Wait (bounded) until the token's close() ran at least once, then a moment
 * more: a second call would show. */
static int
closed_count(httpd_t *h, const char *tok, int *ran)
{
    int closed = 0, blocks = 0, i;

    for (i = 0; i < 60; i++) {
        counts(h, tok, &closed, ran, &blocks);
        if (closed > 0) {
            break;
        }
        usleep(100 * 1000);
    }
    usleep(200 * 1000);
    counts(h, tok, &closed, ran, &blocks);
    return closed;
}

static void
assert_no_crash(httpd_t *h, size_t mark)
{
    http_resp_t *r = http_get(h, "/w/count?t=alive");
    char *log;

    http_assert_status(r, 200);
    http_free(r);
    log = httpd_log_since(h, mark);
    ck_assert_msg(httpd_log_no_crash(h, mark), "a child crashed; log:\n%.4000s", log);
    free(log);
}

/* A 200 with exactly this body; r freed. */
static void
expect_ok(http_resp_t *r, const char *body)
{
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, body);
    http_free(r);
}

/* Raw HTTP: a connected socket with a receive timeout. */
static int
raw_connect(const httpd_t *h)
{
    struct sockaddr_in a;
    struct timeval tv = { 15, 0 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)h->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
                  "connect: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void
raw_send(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* Reset, not FIN: the server's next write fails at once. */
static void
raw_abort(int fd)
{
    struct linger lg = { 1, 0 };

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* A raw response split: status, header block (NUL-terminated, within the
 * response), body (dechunked if chunked; complete=0 if the framing says the
 * body is cut). */
typedef struct {
    int status;
    char *head;
    char *body;
    size_t len;
    int chunked;
    int complete;
} raw_resp_t;

static void
raw_parse(char *resp, size_t len, raw_resp_t *out)
{
    char *end = strstr(resp, "\r\n\r\n");
    const char *cl;

    memset(out, 0, sizeof(*out));
    if (strncmp(resp, "HTTP/1.", 7) != 0 || !end) {
        out->head = resp;
        out->body = resp + len;
        return;
    }
    out->status = atoi(resp + 9);
    *end = '\0';
    out->head = resp;
    out->body = end + 4;
    out->len = len - (size_t)(out->body - resp);
    out->chunked = strcasestr(resp, "\r\nTransfer-Encoding: chunked") != NULL;
    cl = strcasestr(resp, "\r\nContent-Length: ");
    out->complete = 1;
    if (out->chunked) {
        char *in = out->body, *o = out->body, *stop = out->body + out->len;

        out->complete = 0;
        while (in < stop) {
            char *nl = strstr(in, "\r\n");
            unsigned long n;

            if (!nl) {
                break;
            }
            n = strtoul(in, NULL, 16);
            in = nl + 2;
            if (n == 0) {
                out->complete = strncmp(in, "\r\n", 2) == 0;
                break;
            }
            if ((size_t)(stop - in) < n + 2) {
                memmove(o, in, (size_t)(stop - in));
                o += stop - in;
                break;
            }
            memmove(o, in, n);
            o += n;
            in += n + 2;
        }
        out->len = (size_t)(o - out->body);
        *o = '\0';
    }
    else if (cl) {
        out->complete = out->len == strtoul(cl + 18, NULL, 10);
    }
}

/* One request on a fresh connection (send all, read until close). */
static char *
raw_do(httpd_t *h, const char *req, size_t reqlen, raw_resp_t *out)
{
    size_t len;
    char *resp = http_raw(h, req, reqlen, &len, 15000);

    raw_parse(resp, len, out);
    return resp;
}

/* "\nKEY=value\n" present (or, with a leading '!', no "\nKEY=" at all). */
static void
assert_env_line(const char *body, const char *want, const char *what)
{
    char needle[512];

    if (want[0] == '!') {
        snprintf(needle, sizeof(needle), "\n%s=", want + 1);
        ck_assert_msg(strstr(body, needle) == NULL, "%s: %s present; environ:%.3000s", what,
                      want + 1, body);
        return;
    }
    snprintf(needle, sizeof(needle), "\n%s\n", want);
    if (!strstr(body, needle)) {
        char key[128], *eq, *line;

        snprintf(key, sizeof(key), "\n%.*s=", (int)strcspn(want, "="), want);
        line = strstr(body, key);
        eq = line ? line + 1 : NULL;
        ck_abort_msg("%s: want '%s', got '%.*s'", what, want,
                     eq ? (int)strcspn(eq, "\n") : 9, eq ? eq : "(absent)");
    }
}

/* ------------------------------------------------------------------ */
/* The server                                                          */

static const char config[] =
    "LoadModule env_module " MOD "mod_env.so\n"
    "LoadModule authn_core_module " MOD "mod_authn_core.so\n"
    "LoadModule authn_file_module " MOD "mod_authn_file.so\n"
    "LoadModule auth_basic_module " MOD "mod_auth_basic.so\n"
    "LoadModule authz_user_module " MOD "mod_authz_user.so\n"
    "LoadModule rewrite_module " MOD "mod_rewrite.so\n"
    "LoadModule headers_module " MOD "mod_headers.so\n"
    "<Location /shop>\n"
    "  PyReloadWSGI @APP@/env.py\n"
    "  PyReloadOption color blue\n"
    "  PyReloadOption size L\n"
    "  SetEnv PYRT_SET hello-setenv\n"
    "</Location>\n"
    "<Location /slash/>\n  PyReloadWSGI @APP@/env.py\n</Location>\n"
    "<LocationMatch \"^/rx/\">\n  PyReloadWSGI @APP@/env.py\n</LocationMatch>\n"
    "<Directory @DIR@/htdocs/d>\n  PyReloadWSGI @APP@/env.py\n</Directory>\n"
    "<Location /auth>\n"
    "  PyReloadWSGI @APP@/env.py\n"
    "  AuthType Basic\n  AuthName pyrt\n  AuthUserFile @APP@/htpasswd\n"
    "  Require valid-user\n"
    "</Location>\n"
    "<Location /w>\n"
    "  PyReloadWSGI @APP@/w.py::dispatch\n"
    "  PyReloadOption bigfile @APP@/big.bin\n"
    "</Location>\n"
    "<Location /wdebug>\n"
    "  PyReloadWSGI @APP@/w.py::dispatch\n  PyReloadDebug On\n"
    "</Location>\n"
    "<Location /small>\n"
    "  PyReloadWSGI @APP@/w.py::dispatch\n  LimitRequestBody 1000\n"
    "</Location>\n"
    "<Location /v>\n  PyReloadWSGI @APP@/v.py::validated\n</Location>\n"
    "<Location /clash>\n"
    "  PyReloadWSGI @APP@/env.py\n"
    "  SetEnv SCRIPT_NAME /evil\n  SetEnv PATH_INFO /evil\n  SetEnv REQUEST_METHOD EVIL\n"
    "  SetEnv HTTP_HOST evil.example\n  SetEnv wsgi.url_scheme evil\n  SetEnv PYRT_OK yes\n"
    "</Location>\n"
    "<Location /rw>\n"
    "  PyReloadWSGI @APP@/env.py\n"
    "  RewriteEngine On\n  RewriteRule ^ - [E=PYRT_RW:rw-ok]\n"
    "</Location>\n"
    "<Location /hdr>\n"
    "  PyReloadWSGI @APP@/env.py\n"
    "  RequestHeader add X-Twice a\n  RequestHeader add X-Twice a\n"
    "  RequestHeader add X-Pair a\n  RequestHeader add X-Pair b\n"
    "</Location>\n"
    "<Location /cls>\n  PyReloadWSGI @APP@/w.py::AppClass\n</Location>\n"
    "<Location /inst>\n  PyReloadWSGI @APP@/w.py::app_instance\n</Location>\n";

static void
setup(void)
{
    httpd_opts_t o = { .config = config };
    static const char *const apps[] = { "env.py", "w.py", "v.py", NULL };
    unsigned char *big = malloc(BIGFILE_LEN);
    char *text;
    int i;

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    for (i = 0; apps[i]; i++) {
        text = slurp(apps[i]);
        ck_assert_int_eq(httpd_write(srv, apps[i], text), 0);
        free(text);
    }
    /* alice:secret */
    ck_assert_int_eq(httpd_write(srv, "htpasswd", "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"),
                     0);
    for (size_t k = 0; k < BIGFILE_LEN; k++) {
        big[k] = pattern(k);
    }
    ck_assert_int_eq(httpd_write_bytes(srv, "big.bin", big, BIGFILE_LEN), 0);
    ck_assert_int_eq(httpd_write(srv, "big.bin.empty", ""), 0);
    free(big);
    text = malloc(strlen(srv->dir) + 16);
    sprintf(text, "%s/htdocs/d", srv->dir);
    ck_assert_int_eq(httpd_mkdir(srv, text), 0);
    free(text);
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* ------------------------------------------------------------------ */
/* environ                                                             */

typedef struct {
    const char *name;
    const char *method;            /* NULL: GET (POST with a body) */
    const char *path;
    const char *headers[5];
    const char *body;
    int http10;
    long status;                   /* 0: 200 */
    const char *want[14];          /* "KEY=ascii(value)", "!KEY" absent; %PORT%, %MT% */
} env_case_t;

static const env_case_t ENV[] = {
    { "location_bare", NULL, "/shop", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME='/shop'", "PATH_INFO=''", "REQUEST_METHOD='GET'", "QUERY_STRING=''",
        "REQUEST_URI='/shop'", "!CONTENT_TYPE", "!CONTENT_LENGTH", "!HTTPS", "!REMOTE_USER",
        "!AUTH_TYPE", "_nonstr=[]", NULL } },
    { "location_slash", NULL, "/shop/", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME='/shop'", "PATH_INFO='/'", NULL } },
    { "location_sub", NULL, "/shop/items/7", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME='/shop'", "PATH_INFO='/items/7'", "REQUEST_URI='/shop/items/7'", NULL } },
    { "percent_latin1", NULL, "/shop/caf%C3%A9", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME='/shop'", "PATH_INFO='/caf\\xc3\\xa9'", "REQUEST_URI='/shop/caf%C3%A9'",
        "_nonstr=[]", NULL } },
    { "query_string", NULL, "/shop/q?a=1&b=%20x&c", {NULL}, NULL, 0, 0,
      { "QUERY_STRING='a=1&b=%20x&c'", "PATH_INFO='/q'", "REQUEST_URI='/shop/q?a=1&b=%20x&c'",
        NULL } },
    { "query_empty", NULL, "/shop/q?", {NULL}, NULL, 0, 0,
      { "QUERY_STRING=''", "PATH_INFO='/q'", NULL } },
    { "post_content", NULL, "/shop/p", {"Content-Type: application/x-test", NULL}, "hello", 0, 0,
      { "REQUEST_METHOD='POST'", "CONTENT_TYPE='application/x-test'", "CONTENT_LENGTH='5'",
        "!HTTP_CONTENT_TYPE", "!HTTP_CONTENT_LENGTH", "_nonstr=[]", NULL } },
    { "other_method", "DELETE", "/shop/x", {NULL}, NULL, 0, 0,
      { "REQUEST_METHOD='DELETE'", "!CONTENT_LENGTH", NULL } },
    { "server_vars", NULL, "/shop", {NULL}, NULL, 0, 0,
      { "SERVER_NAME='127.0.0.1'", "SERVER_PORT='%PORT%'", "_server_port_str=True",
        "SERVER_PROTOCOL='HTTP/1.1'", "HTTP_HOST='127.0.0.1:%PORT%'", "REMOTE_ADDR='127.0.0.1'",
        "_remote_port_digits=True", NULL } },
    { "http10", NULL, "/shop", {NULL}, NULL, 1, 0,
      { "SERVER_PROTOCOL='HTTP/1.0'", NULL } },
    { "http_headers", NULL, "/shop",
      { "X-Custom-Thing: v1", "X-Rep: a", "X-Rep: b", "Accept: text/x-y", NULL }, NULL, 0, 0,
      { "HTTP_X_CUSTOM_THING='v1'", "HTTP_X_REP='a, b'", "HTTP_ACCEPT='text/x-y'",
        "!HTTP_X_ABSENT", NULL } },
    { "http_headers_same_value", NULL, "/shop", { "X-Same: a", "X-Same: a", NULL }, NULL, 0, 0,
      { "HTTP_X_SAME='a, a'", NULL } },
    /* Two entries of one name in r->headers_in (mod_headers adds them
     * apart; httpd's reader merges the client's own): joined too. */
    { "http_headers_table_twice", NULL, "/hdr", {NULL}, NULL, 0, 0,
      { "HTTP_X_TWICE='a, a'", "HTTP_X_PAIR='a, b'", NULL } },
    /* "httpoxy": a Proxy header must not become HTTP_PROXY (the proxy
     * libraries would use for the application's own requests). */
    { "http_proxy_left_out", NULL, "/shop", { "Proxy: http://127.0.0.1:9/", NULL }, NULL, 0, 0,
      { "!HTTP_PROXY", NULL } },
    { "http_header_latin1", NULL, "/shop", { "X-Latin: caf\xe9", NULL }, NULL, 0, 0,
      { "HTTP_X_LATIN='caf\\xe9'", "_nonstr=[]", NULL } },
    { "wsgi_keys", NULL, "/shop", {NULL}, NULL, 0, 0,
      { "wsgi.version=(1, 0)", "wsgi.url_scheme='http'", "_run_once=False",
        "wsgi.input_terminated=True", "_input_api=True", "_errors_api=True",
        "_file_wrapper_callable=True", "_gen_is_int=True", NULL } },
    /* As mod_wsgi: true when the MPM's limits allow more than one thread /
     * process (this server: one process; prefork one thread). */
    { "multithread_multiprocess", NULL, "/shop", {NULL}, NULL, 0, 0,
      { "_multithread=%MT%", "_multiprocess=False", NULL } },
    { "pyreload_options", NULL, "/shop", {NULL}, NULL, 0, 0,
      { "pyreload.options=[('color', 'blue'), ('size', 'L')]", "_options_readonly=True",
        NULL } },
    { "setenv", NULL, "/shop", {NULL}, NULL, 0, 0, { "PYRT_SET='hello-setenv'", NULL } },
    { "basic_auth", NULL, "/auth/x", { "Authorization: Basic YWxpY2U6c2VjcmV0", NULL }, NULL, 0,
      0, { "REMOTE_USER='alice'", "AUTH_TYPE='Basic'", "SCRIPT_NAME='/auth'", "PATH_INFO='/x'",
           NULL } },
    { "basic_auth_refused", NULL, "/auth/x", { "Authorization: Basic YWxpY2U6d3Jvbmc=", NULL },
      NULL, 0, 401, { NULL } },
    { "location_trailing_slash", NULL, "/slash/x", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME='/slash'", "PATH_INFO='/x'", NULL } },
    { "locationmatch", NULL, "/rx/a/b", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME=''", "PATH_INFO='/rx/a/b'", NULL } },
    { "directory", NULL, "/d/x/y", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME=''", "PATH_INFO='/d/x/y'", NULL } },
    { "request_uri_as_sent", NULL, "/shop/a/../b?x=1", {NULL}, NULL, 0, 0,
      { "PATH_INFO='/b'", "REQUEST_URI='/shop/a/../b?x=1'", "QUERY_STRING='x=1'", NULL } },
    { "path_space_plus", NULL, "/shop/a%20b+c", {NULL}, NULL, 0, 0,
      { "PATH_INFO='/a b+c'", NULL } },
    /* As httpd's CGI: a header with '_' is dropped, so that X_Spoof cannot
     * pass for X-Spoof. */
    { "header_underscore_dropped", NULL, "/shop", { "X-Spoof: good", "X_Spoof: evil", NULL },
      NULL, 0, 0, { "HTTP_X_SPOOF='good'", NULL } },
    { "header_empty_value", NULL, "/shop", { "X-Empty;", NULL }, NULL, 0, 0,
      { "HTTP_X_EMPTY=''", NULL } },
    { "setenv_no_clash", NULL, "/clash/x", {NULL}, NULL, 0, 0,
      { "SCRIPT_NAME='/clash'", "PATH_INFO='/x'", "REQUEST_METHOD='GET'",
        "HTTP_HOST='127.0.0.1:%PORT%'", "wsgi.url_scheme='http'", "PYRT_OK='yes'", NULL } },
    { "rewrite_env", NULL, "/rw/x", {NULL}, NULL, 0, 0, { "PYRT_RW='rw-ok'", NULL } },
    /* <Location /shop> is not /shopping: no application there. */
    { "location_prefix_not_segment", NULL, "/shopping", {NULL}, NULL, 0, 404, { NULL } },
    { "double_slashes", NULL, "//shop//items//7", {NULL}, NULL, 0, 0,
      { "_path_info_ok=True", "_script_name_ok=True", "REQUEST_URI='//shop//items//7'", NULL } },
    { "dot_segments", NULL, "/shop/./x/", {NULL}, NULL, 0, 0, { "PATH_INFO='/x/'", NULL } },
};

START_TEST(test_environ)
{
    const env_case_t *c = &ENV[_i];
    http_req_t rq = { .method = c->method, .path = c->path, .headers = c->headers,
                      .body = c->body, .body_len = c->body ? strlen(c->body) : 0,
                      .http10 = c->http10 };
    http_resp_t *r = http_do(srv, &rq);
    const char *mt = strcmp(httpd_mpm(srv), "prefork") ? "True" : "False";

    ck_assert_msg(r->status == (c->status ? c->status : 200), "%s: status %ld (%s): %.2000s",
                  c->name, r->status, r->error, r->body);
    for (int k = 0; c->want[k]; k++) {
        char want[512], port[16];
        const char *w = c->want[k];
        char *p;

        snprintf(port, sizeof(port), "%d", srv->port);
        snprintf(want, sizeof(want), "%s", w);
        while ((p = strstr(want, "%PORT%")) || (p = strstr(want, "%MT%"))) {
            char rest[512];
            int isport = p[1] == 'P';

            snprintf(rest, sizeof(rest), "%s", p + (isport ? 6 : 4));
            snprintf(p, sizeof(want) - (size_t)(p - want), "%s%s", isport ? port : mt, rest);
        }
        assert_env_line(r->body, want, c->name);
    }
    http_free(r);
}
END_TEST

/* REMOTE_PORT is the client's own port. */
START_TEST(test_environ_remote_port_exact)
{
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    char want[64], buf[16384];
    int fd = raw_connect(srv), got = 0, n;
    static const char req[] = "GET /shop HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&me, &len), 0);
    raw_send(fd, req, strlen(req));
    while (got < (int)sizeof(buf) - 1
           && (n = (int)recv(fd, buf + got, sizeof(buf) - 1 - (size_t)got, 0)) > 0) {
        got += n;
    }
    buf[got] = '\0';
    close(fd);
    snprintf(want, sizeof(want), "\nREMOTE_PORT='%d'\n", ntohs(me.sin_port));
    ck_assert_msg(strstr(buf, want) != NULL, "want %s in:\n%.3000s", want + 1, buf);
}
END_TEST

/* What an application does to its environ does not reach the next request
 * (same connection, or a new one). */
START_TEST(test_environ_not_shared)
{
    http_client_t *c = http_client_new(srv);
    http_resp_t *r = http_client_get(c, "/shop?mutate");
    int i;

    http_assert_status(r, 200);
    http_free(r);
    for (i = 0; i < 2; i++) {
        if (i) {
            /* prefork: the one process is free for a new connection */
            http_client_free(c);
            c = NULL;
        }
        r = i ? http_get(srv, "/shop") : http_client_get(c, "/shop");
        http_assert_status(r, 200);
        assert_env_line(r->body, "!PYRT_LEAK", "after mutate");
        assert_env_line(r->body, "PATH_INFO=''", "after mutate");
        assert_env_line(r->body, "wsgi.url_scheme='http'", "after mutate");
        ck_assert_msg(strstr(r->body, "\nHTTP_HOST='127.0.0.1:") != NULL, "%s", r->body);
        http_free(r);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* wsgi.input                                                          */

#define SMALL "alpha\nbravo-bravo\n\ncharlie"

/* The semantics of a Python file (io), where PEP 3333 leaves a choice:
 * readline(size) is supported, read(n) returns n bytes until the end (never
 * short, as apps that read(CONTENT_LENGTH) need), the end reads as b"".
 * readlines(hint) may honour the hint or not: only "at least the lines that
 * reach the hint" is checked. */
static const struct {
    const char *op;
    const char *want;   /* ascii() of the results, before "'CL=...'" */
} INPUT[] = {
    { "readall", "[b'alpha\\nbravo-bravo\\n\\ncharlie', b'', b''" },
    { "read4", "[b'alph', b'a\\nbr', b'avo-', b'brav', b'o\\n\\nc', b'harl', b'ie', b''" },
    { "readline", "[b'alpha\\n', b'bravo-bravo\\n', b'\\n', b'charlie', b''" },
    { "readline5", "[b'alpha', b'\\n', b'bravo', b'-brav', b'o\\n', b'\\n', b'charl', b'ie', b''" },
    { "readlines", "[[b'alpha\\n', b'bravo-bravo\\n', b'\\n', b'charlie'], []" },
    { "readlines_hint", "[[b'alpha\\n', b'bravo-bravo\\n', b'\\n', b'charlie'], True" },
    { "iter", "[[b'alpha\\n', b'bravo-bravo\\n', b'\\n', b'charlie'], []" },
    { "mixed", "[b'alp', b'ha\\n', b'br', [b'avo-bravo\\n', b'\\n', b'charlie'], b''" },
};
#define NINPUT ((int)(sizeof(INPUT) / sizeof(INPUT[0])))

/* Results for an empty body. */
static const char *const INPUT_EMPTY[] = {
    "[b'', b'', b''", "[b''", "[b''", "[b''", "[[], []", "[[], False", "[[], []",
    "[b'', b'', b'', [], b''",
};

/* The request: mode 0 plain (Content-Length), 1 chunked (in uneven
 * chunks), 2 empty with Content-Length: 0, 3 GET without a body. */
static char *
input_request(const char *path, const char *body, size_t len, int mode, size_t *reqlen)
{
    size_t cap = len * 2 + 1024, n;
    char *req = malloc(cap);

    if (mode == 3) {
        n = (size_t)snprintf(req, cap, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                             path);
    }
    else if (mode == 1) {
        size_t off = 0, step = 1;

        n = (size_t)snprintf(req, cap, "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n", path);
        while (off < len) {
            size_t k = len - off < step ? len - off : step;

            n += (size_t)snprintf(req + n, cap - n, "%zx\r\n", k);
            memcpy(req + n, body + off, k);
            n += k;
            memcpy(req + n, "\r\n", 2);
            n += 2;
            off += k;
            step = step * 3 + 1;   /* 1, 4, 13, 40, ... bytes */
            if (step > 65536) {
                step = 65536;
            }
        }
        n += (size_t)snprintf(req + n, cap - n, "0\r\n\r\n");
    }
    else {
        if (mode == 2) {
            len = 0;
        }
        n = (size_t)snprintf(req, cap, "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                             "Content-Type: application/octet-stream\r\n"
                             "Content-Length: %zu\r\n\r\n", path, len);
        memcpy(req + n, body, len);
        n += len;
    }
    *reqlen = n;
    return req;
}

static const char *const INPUT_MODE[] = { "plain", "chunked", "empty", "no body" };

/* _i = op * 4 + mode */
START_TEST(test_input)
{
    int op = _i / 4, mode = _i % 4;
    char path[128], want[512], *req, *resp;
    size_t reqlen;
    raw_resp_t rr;

    snprintf(path, sizeof(path), "/w/in?op=%s", INPUT[op].op);
    req = input_request(path, SMALL, strlen(SMALL), mode, &reqlen);
    resp = raw_do(srv, req, reqlen, &rr);
    free(req);
    snprintf(want, sizeof(want), "%s, 'CL=%s']", mode >= 2 ? INPUT_EMPTY[op] : INPUT[op].want,
             mode == 0 ? "26" : mode == 2 ? "0" : "None");
    ck_assert_msg(rr.status == 200, "%s, %s body: status %d:\n%.2000s", INPUT[op].op,
                  INPUT_MODE[mode], rr.status, resp);
    ck_assert_msg(strcmp(rr.body, want) == 0, "%s, %s body:\n got %s\nwant %s", INPUT[op].op,
                  INPUT_MODE[mode], rr.body, want);
    free(resp);
}
END_TEST

static unsigned char *
big_body(size_t len)
{
    unsigned char *b = malloc(len);

    for (size_t k = 0; k < len; k++) {
        b[k] = pattern(k * 13 + 5);
    }
    return b;
}

/* 10 MiB, plain (curl) and chunked (raw): every byte arrives. */
START_TEST(test_input_10mib)
{
    size_t len = 10 * MIB, reqlen;
    unsigned char *body = big_body(len);
    char want[128], *req, *resp;
    http_resp_t *r;
    raw_resp_t rr;

    snprintf(want, sizeof(want), "[%zu, '%08x', 'CL=%zu']", len, crc32_of(body, len), len);
    r = http_post(srv, "/w/in?op=big", body, len);
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, want);
    http_free(r);

    snprintf(want, sizeof(want), "[%zu, '%08x', 'CL=None']", len, crc32_of(body, len));
    req = input_request("/w/in?op=big", (const char *)body, len, 1, &reqlen);
    resp = raw_do(srv, req, reqlen, &rr);
    ck_assert_msg(rr.status == 200, "chunked 10 MiB: %.1000s", resp);
    ck_assert_str_eq(rr.body, want);
    free(resp);
    free(req);
    free(body);
}
END_TEST

/* 10 MiB read by readline() and by iteration, across chunk and buffer
 * boundaries: _i = op * 2 + chunked. */
static const char *const BIG_OPS[] = { "bigline", "bigiter" };

START_TEST(test_input_10mib_lines)
{
    size_t len = 10 * MIB, reqlen;
    unsigned char *body = big_body(len);
    char want[128], path[64], *req, *resp;
    int chunked = _i % 2;
    raw_resp_t rr;

    snprintf(path, sizeof(path), "/w/in?op=%s&len=%zu", BIG_OPS[_i / 2], len);
    snprintf(want, sizeof(want), "[%zu, '%08x', 'CL=%s']", len, crc32_of(body, len),
             chunked ? "None" : "10485760");
    req = input_request(path, (const char *)body, len, chunked, &reqlen);
    resp = raw_do(srv, req, reqlen, &rr);
    ck_assert_msg(rr.status == 200, "%s %s: %.1000s", BIG_OPS[_i / 2], chunked ? "chunked" : "plain",
                  resp);
    ck_assert_str_eq(rr.body, want);
    free(resp);
    free(req);
    free(body);
}
END_TEST

/* The body arrives in pieces, with pauses: read(n) and readline() wait for
 * what they were asked (or the end), never return short.  _i = op * 2 +
 * chunked. */
static const int SLOW_OPS[] = { 1, 2, 3, 7 };   /* read4, readline, readline5, mixed */

START_TEST(test_input_slow_body)
{
    int op = SLOW_OPS[_i / 2], chunked = _i % 2, fd, got = 0, n;
    char path[64], want[512], buf[8192], *req, *cut;
    size_t reqlen, headlen, parts[3], off;
    raw_resp_t rr;

    snprintf(path, sizeof(path), "/w/in?op=%s", INPUT[op].op);
    req = input_request(path, SMALL, strlen(SMALL), chunked, &reqlen);
    cut = strstr(req, "\r\n\r\n") + 4;
    headlen = (size_t)(cut - req);
    /* three pieces of the body, cut inside lines and (chunked) inside
     * chunk framing */
    parts[0] = headlen + 3;
    parts[1] = headlen + (reqlen - headlen) / 2 + 1;
    parts[2] = reqlen;
    fd = raw_connect(srv);
    for (off = 0, n = 0; n < 3; n++) {
        raw_send(fd, req + off, parts[n] - off);
        off = parts[n];
        if (n < 2) {
            usleep(200 * 1000);
        }
    }
    while (got < (int)sizeof(buf) - 1
           && (n = (int)recv(fd, buf + got, sizeof(buf) - 1 - (size_t)got, 0)) > 0) {
        got += n;
    }
    buf[got] = '\0';
    close(fd);
    raw_parse(buf, (size_t)got, &rr);
    snprintf(want, sizeof(want), "%s, 'CL=%s']", INPUT[op].want, chunked ? "None" : "26");
    ck_assert_msg(rr.status == 200, "%s: %.1000s", INPUT[op].op, buf);
    ck_assert_msg(strcmp(rr.body, want) == 0, "%s, %s, in pieces:\n got %s\nwant %s",
                  INPUT[op].op, chunked ? "chunked" : "plain", rr.body, want);
    free(req);
}
END_TEST

/* LimitRequestBody 1000: 413 for a longer body, plain or chunked; a body
 * within the limit is read. */
START_TEST(test_input_limit_413)
{
    size_t mark = httpd_log_mark(srv), reqlen;
    unsigned char *body = big_body(2000);
    char *req, *resp;
    http_resp_t *r;
    raw_resp_t rr;

    r = http_post(srv, "/small/in?op=readall", body, 2000);
    ck_assert_msg(r->status == 413, "plain 2000 > 1000: status %ld: %.500s", r->status, r->body);
    http_free(r);
    req = input_request("/small/in?op=readall", (const char *)body, 2000, 1, &reqlen);
    resp = raw_do(srv, req, reqlen, &rr);
    ck_assert_msg(rr.status == 413, "chunked 2000 > 1000: %.1000s", resp);
    free(resp);
    free(req);
    r = http_post(srv, "/small/in?op=big", body, 999);
    http_assert_status(r, 200);
    http_free(r);
    free(body);
    assert_no_crash(srv, mark);
}
END_TEST

/* read() sizes a file accepts: 2**31 (no preallocation), 0, -1; a
 * non-int is a TypeError. */
START_TEST(test_input_odd_sizes)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_post(srv, "/w/readodd", SMALL, strlen(SMALL));

    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "[b'', b'alpha', b'', b'', 'TypeError']");
    http_free(r);
    assert_no_crash(srv, mark);
}
END_TEST

/* A body the application read in part (or not at all) does not spoil the
 * connection: the next request on it is answered right. */
START_TEST(test_keepalive_partial_body)
{
    http_client_t *c = http_client_new(srv);
    unsigned char *body = big_body(100000);
    http_req_t post = { .path = "/w/partial", .body = body, .body_len = 100000 };
    http_req_t unread = { .path = "/w/resp?kind=list", .body = body, .body_len = 5000 };
    int i;

    for (i = 0; i < 3; i++) {
        expect_ok(http_client_do(c, &post), "partial ok");
        expect_ok(http_client_do(c, &unread), "one-two-three");
        expect_ok(http_client_get(c, "/w/resp?kind=gen"), "one-two-three");
    }
    fprintf(stderr, "keep-alive after partly read bodies: %ld connection(s) for 9 requests\n",
            http_client_connects(c));
    http_client_free(c);
    free(body);
}
END_TEST

/* Streamed (chunked) responses end properly: the connection is reused. */
START_TEST(test_keepalive_after_stream)
{
    http_client_t *c = http_client_new(srv);
    int i;

    for (i = 0; i < 6; i++) {
        expect_ok(http_client_get(c, i % 2 ? "/w/resp?kind=gen" : "/w/write?ret=gen"),
                  i % 2 ? "one-two-three" : "AAABBBCCCDDD");
    }
    ck_assert_int_eq(http_client_connects(c), 1);
    http_client_free(c);
}
END_TEST

/* Two requests in one packet, the first with a body left unread. */
START_TEST(test_pipelined)
{
    static const char req[] =
        "POST /w/partial HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n"
        "0123456789abcdefghijklmnopqrst"
        "GET /w/resp?kind=gen HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    char *resp = http_raw(srv, req, strlen(req), NULL, 10000), *second;

    ck_assert_msg(strncmp(resp, "HTTP/1.1 200 ", 13) == 0 && strstr(resp, "partial ok"),
                  "%.2000s", resp);
    second = strstr(resp + 13, "HTTP/1.1 ");
    ck_assert_msg(second && strncmp(second, "HTTP/1.1 200 ", 13) == 0
                  && strstr(second, "one-") && strstr(second, "three"), "%.2000s", resp);
    free(resp);
}
END_TEST

/* Expect: 100-continue: the client is told to send the body (PEP 3333,
 * "HTTP 1.1 Expect/Continue"). */
START_TEST(test_input_expect_continue)
{
    char buf[4096], req[512];
    int fd = raw_connect(srv), n, got = 0;
    struct pollfd pfd;

    snprintf(req, sizeof(req), "POST /w/in?op=readall HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Content-Length: %zu\r\nExpect: 100-continue\r\n\r\n", strlen(SMALL));
    raw_send(fd, req, strlen(req));
    pfd.fd = fd;
    pfd.events = POLLIN;
    ck_assert_msg(poll(&pfd, 1, 5000) == 1, "no 100 Continue within 5 s");
    n = (int)recv(fd, buf, sizeof(buf) - 1, 0);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_msg(strncmp(buf, "HTTP/1.1 100 ", 13) == 0, "first response: %s", buf);
    raw_send(fd, SMALL, strlen(SMALL));
    got = n;
    while (got < (int)sizeof(buf) - 1 && (n = (int)recv(fd, buf + got, sizeof(buf) - 1 - (size_t)got,
                                                        0)) > 0) {
        got += n;
    }
    buf[got] = '\0';
    close(fd);
    ck_assert_msg(strstr(buf, "HTTP/1.1 200 ") && strstr(buf, "bravo-bravo"), "response: %s",
                  buf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* wsgi.errors                                                         */

START_TEST(test_errors_stream)
{
    static const char *const what[] = { "write", "lines-a", "lines-b", "print", "unicode",
                                        "noeol", NULL };
    size_t mark = httpd_log_mark(srv);
    char tok[64], path[128], needle[128], *line;
    http_resp_t *r;

    token(tok, sizeof(tok), "err");
    snprintf(path, sizeof(path), "/w/errors?t=%s", tok);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "logged");
    http_free(r);
    for (int k = 0; what[k]; k++) {
        snprintf(needle, sizeof(needle), "PYRT-err-%s-%s", what[k], tok);
        ck_assert_msg(httpd_log_wait(srv, mark, needle, 1, 3000), "%s not in the log:\n%.3000s",
                      needle, httpd_log_since(srv, mark));
        line = httpd_log_line(srv, mark, needle);
        ck_assert_msg(strstr(line, "[client 127.0.0.1:") != NULL,
                      "not tagged with the client: %s", line);
        free(line);
    }
    ck_assert_int_eq(httpd_log_count(srv, mark, "Traceback"), 0);
}
END_TEST

/* A text stream: bytes are refused (TypeError), not logged as a repr. */
START_TEST(test_errors_refuses_bytes)
{
    http_resp_t *r = http_get(srv, "/w/errbytes");

    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "TypeError");
    http_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* start_response                                                      */

static const char *const SR_BAD[] = {
    "status_no_reason", "status_short_code", "status_long_code", "status_alpha_code",
    "status_no_space", "status_bytes", "status_int", "status_crlf", "headers_tuple",
    "headers_none", "header_str", "header_triple", "name_bytes", "value_bytes", "value_int",
    "value_none", "value_crlf", "value_lf", "value_cr", "name_crlf", "name_colon", "name_space",
    "name_empty", "value_nul", "value_non_latin1", "status_non_latin1",
    "hop_connection", "hop_connection_lower", "hop_keep_alive", "hop_proxy_authenticate",
    "hop_proxy_authorization", "hop_te", "hop_trailers", "hop_transfer_encoding", "hop_upgrade",
    "twice", "twice_after_failed",
};
#define NSR_BAD ((int)(sizeof(SR_BAD) / sizeof(SR_BAD[0])))

/* Uncaught: a 500, the traceback in the log only, nothing of the bad
 * header sent. */
START_TEST(test_start_response_bad)
{
    const char *c = SR_BAD[_i];
    size_t mark = httpd_log_mark(srv);
    char path[128];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/w/sr?c=%s", c);
    r = http_get(srv, path);
    ck_assert_msg(r->status == 500, "%s: status %ld (%s), want 500; headers:\n%s\nbody: %.500s",
                  c, r->status, r->error, r->headers, r->body);
    http_assert_body_lacks(r, "Traceback");
    http_assert_body_lacks(r, "PYRT-sr-body");
    ck_assert_msg(strcasestr(r->headers, "X-Evil") == NULL, "%s: headers:\n%s", c, r->headers);
    http_free(r);
    ck_assert_msg(httpd_log_wait(srv, mark, "PYR0200", 1, 3000), "%s: no PYR0200 line:\n%.3000s",
                  c, httpd_log_since(srv, mark));
    ck_assert_msg(httpd_log_wait(srv, mark, "Traceback", 1, 3000), "%s: no traceback:\n%.3000s",
                  c, httpd_log_since(srv, mark));
    assert_no_crash(srv, mark);
}
END_TEST

/* The error is raised in the application, where it can be caught. */
START_TEST(test_start_response_bad_raises_in_app)
{
    const char *c = SR_BAD[_i];
    char path[128];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/w/sr?c=%s&catch=1", c);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    ck_assert_msg(!strcmp(r->body, "caught ValueError") || !strcmp(r->body, "caught TypeError")
                  || !strcmp(r->body, "caught AssertionError")
                  || !strcmp(r->body, "caught UnicodeEncodeError"),
                  "%s: the application got '%s'", c, r->body);
    http_free(r);
}
END_TEST

static const char *const SR_DEBUG[] = { "value_crlf", "hop_connection", "status_int", "twice" };

START_TEST(test_start_response_bad_debug_body)
{
    const char *c = SR_DEBUG[_i];
    char path[128];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/wdebug/sr?c=%s", c);
    r = http_get(srv, path);
    http_assert_status(r, 500);
    http_assert_body_has(r, "Traceback");
    http_free(r);
}
END_TEST

/* Valid forms are kept as given. */
START_TEST(test_start_response_good_forms)
{
    http_resp_t *r = http_get(srv, "/w/srgood");

    http_assert_status(r, 299);
    ck_assert_str_eq(r->body, "good");
    ck_assert_msg(strstr(r->headers, " 299 Quite Fine, Thanks\r\n"), "status line:\n%s",
                  r->headers);
    ck_assert_int_eq(http_header_count(r, "X-Multi"), 2);
    ck_assert_str_eq(http_header_nth(r, "X-Multi", 0), "a");
    ck_assert_str_eq(http_header_nth(r, "X-Multi", 1), "b");
    ck_assert_str_eq(http_header(r, "X-Latin"), "caf\xe9");
    http_free(r);
}
END_TEST

/* The application's status and body are what the client gets, error
 * statuses included (no httpd error page instead); headers repeat. */
static const char *const STATUS[] = { "404", "500", "403", "503", "301", "418", "204", "304" };

START_TEST(test_app_status_kept)
{
    const char *code = STATUS[_i];
    char path[64], body[64];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/w/status?s=%s", code);
    r = http_get(srv, path);
    http_assert_status(r, atol(code));
    if (strcmp(code, "204") && strcmp(code, "304")) {
        snprintf(body, sizeof(body), "PYRT-app-body-%s", code);
        ck_assert_msg(strcmp(r->body, body) == 0, "%s: body '%.500s'", code, r->body);
    }
    else {
        ck_assert_uint_eq(r->len, 0);
    }
    ck_assert_msg(strstr(r->headers, " Custom Reason\r\n") != NULL, "%s: status line:\n%s", code,
                  r->headers);
    ck_assert_int_eq(http_header_count(r, "Set-Cookie"), 2);
    http_free(r);
}
END_TEST

/* start_response, write and wsgi.input kept past their request raise when
 * used; nothing crashes, nothing reaches another response. */
START_TEST(test_kept_objects_raise)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/w/keep?phase=store");

    http_assert_status(r, 200);
    http_free(r);
    r = http_get(srv, "/w/keep?phase=use");
    http_assert_status(r, 200);
    fprintf(stderr, "kept past the request: %s\n", r->body);
    ck_assert_msg(strstr(r->body, "input:ok") == NULL && strstr(r->body, "start_response:ok") == NULL
                  && strstr(r->body, "write:ok") == NULL, "a kept object still works: %s",
                  r->body);
    http_assert_body_lacks(r, "PYRT-late");
    http_free(r);
    assert_no_crash(srv, mark);
}
END_TEST

/* Application threads use write(), wsgi.input, wsgi.errors and
 * start_response while their request ends: RuntimeError in the thread once
 * it has, never a crash; the responses are whole. */
#define HAMMER_REQUESTS 100

START_TEST(test_threads_use_request_objects_as_it_ends)
{
    size_t mark = httpd_log_mark(srv);
    http_client_t *c = http_client_new(srv);
    http_resp_t *r;
    char want[96];
    int i, bad = 0;

    for (i = 0; i < HAMMER_REQUESTS; i++) {
        r = http_client_get(c, "/w/hammer");
        /* the thread's writes, each whole, then the list's block: a write
         * once the body has ended raises */
        {
            size_t hs = strspn(r->body, "h");

            if (r->status != 200 || hs + 7 != r->len || strcmp(r->body + hs, "started") != 0
                || hs % 100 != 0) {
                if (!bad++) {
                    fprintf(stderr, "threads: a bad response: %ld, %zu bytes: %.300s\n",
                            r->status, r->len, r->body);
                }
            }
        }
        http_free(r);
    }
    http_client_free(c);
    r = http_get(srv, "/w/hammer?report=1");
    http_assert_status(r, 200);
    fprintf(stderr, "threads using a request's objects as it ends: %d of %d responses not "
            "whole blocks of 100 h then 'started'; %s\n", bad, HAMMER_REQUESTS, r->body);
    ck_assert_msg(httpd_log_no_crash(srv, mark), "a child crashed: %s", r->body);
    snprintf(want, sizeof(want), "started=%d runtime=%d alive=0 other=[]", HAMMER_REQUESTS,
             HAMMER_REQUESTS);
    ck_assert_str_eq(r->body, want);
    http_free(r);
    ck_assert_int_eq(bad, 0);
    assert_no_crash(srv, mark);
}
END_TEST

/* A class as the application, and a callable instance. */
START_TEST(test_app_class_and_instance)
{
    it_expect(srv, "/cls?t=x", "from-class");
    it_expect(srv, "/inst", "from-instance");
}
END_TEST

/* exc_info before any output replaces status and headers. */
START_TEST(test_exc_info_before_output_replaces)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/w/excbefore");

    http_assert_status(r, 503);
    ck_assert_str_eq(r->body, "replaced");
    ck_assert_ptr_null(http_header(r, "X-First"));
    ck_assert_msg(http_header(r, "X-Second") && !strcmp(http_header(r, "X-Second"), "2"),
                  "headers:\n%s", r->headers);
    http_free(r);
    usleep(100 * 1000);
    ck_assert_int_eq(httpd_log_count(srv, mark, "PYRT-handled"), 0);
}
END_TEST

/* exc_info after output re-raises: the response is cut, the error logged. */
static const char *const EXC_AFTER[] = { "/w/excafter", "/w/excafter_write" };

START_TEST(test_exc_info_after_output_reraises)
{
    size_t mark = httpd_log_mark(srv);
    http_req_t rq = { .path = EXC_AFTER[_i], .timeout_ms = 5000 };
    http_resp_t *r = http_do(srv, &rq);

    ck_assert_msg(r->status == 0, "%s: curl saw a whole response: %ld, %zu bytes: %.300s",
                  rq.path, r->status, r->len, r->body);
    ck_assert_msg(strstr(r->error, "imeout") == NULL, "%s: %s", rq.path, r->error);
    ck_assert_msg(strstr(r->body, "PYRT-never-sent") == NULL, "%s", r->body);
    http_free(r);
    ck_assert_msg(httpd_log_wait(srv, mark, _i ? "ValueError: PYRT-after-write"
                                               : "ValueError: PYRT-after-output", 1, 3000),
                  "%s: the re-raised error is not logged:\n%.3000s", rq.path,
                  httpd_log_since(srv, mark));
    assert_no_crash(srv, mark);
}
END_TEST

static const struct {
    const char *path;
    const char *body;
} WRITES[] = {
    { "/w/write?ret=list", "AAABBBCCC" },
    { "/w/write?ret=gen", "AAABBBCCCDDD" },
    { "/w/write?ret=empty", "AAABBB" },
};

/* write()'s output comes before the iterable's. */
START_TEST(test_write_callable)
{
    expect_ok(http_get(srv, WRITES[_i].path), WRITES[_i].body);
}
END_TEST

START_TEST(test_write_str_is_error)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/w/write_str");

    http_assert_status(r, 500);
    http_assert_body_lacks(r, "PYRT-secret");
    http_free(r);
    ck_assert(httpd_log_wait(srv, mark, "TypeError", 1, 3000));
    assert_no_crash(srv, mark);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Responses                                                           */

static const struct {
    const char *kind;
    const char *body;
    int has_length;   /* 1: Content-Length expected (a list or tuple) */
} RESP[] = {
    { "list", "one-two-three", 1 },
    { "tuple", "one-two-three", 1 },
    { "gen", "one-two-three", 0 },
    { "iter", "one-two-three", 0 },
    { "empty", "", 1 },
};

START_TEST(test_response_kinds)
{
    char path[64];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/w/resp?kind=%s", RESP[_i].kind);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, RESP[_i].body);
    if (RESP[_i].has_length) {
        ck_assert_msg(http_header(r, "Content-Length")
                      && (size_t)atol(http_header(r, "Content-Length")) == r->len,
                      "%s: no Content-Length:\n%s", RESP[_i].kind, r->headers);
    }
    http_free(r);
}
END_TEST

START_TEST(test_response_big_tuple)
{
    http_resp_t *r = http_get(srv, "/w/resp?kind=bigtuple");

    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 300000);
    ck_assert_ptr_nonnull(http_header(r, "Content-Length"));
    http_free(r);
}
END_TEST

/* close() exactly once: how each mode ends, what the client sees. */
static const struct {
    const char *mode;
    long status;       /* -1: a broken response (curl: transfer error) */
    const char *body;  /* NULL: not checked */
    const char *log;   /* must be logged, or NULL */
} CLOSE[] = {
    { "normal", 200, "block-1;block-2;block-3;", NULL },
    { "list", 200, "list-a;list-b;", NULL },
    { "raise_mid", -1, NULL, "PYRT-raised-in-iteration" },
    { "raise_first", 500, NULL, "PYRT-raised-in-iteration" },
    { "iter_raises", 500, NULL, "PYRT-raised-in-iter" },     /* iter() itself fails */
    { "str_item", 500, NULL, NULL },
    { "nostart", 500, NULL, NULL },
    { "close_raises", -2, NULL, "PYRT-close-raised" },  /* -2: not checked */
    { "cl_short", -1, NULL, NULL },
    { "cl_long", 200, "block-1;b", NULL },
};

START_TEST(test_close_once)
{
    size_t mark = httpd_log_mark(srv);
    char tok[64], path[160];
    http_req_t rq = { .path = path, .timeout_ms = 5000 };
    http_resp_t *r;
    int ran;

    token(tok, sizeof(tok), CLOSE[_i].mode);
    snprintf(path, sizeof(path), "/w/closeable?t=%s&mode=%s", tok, CLOSE[_i].mode);
    r = http_do(srv, &rq);
    if (CLOSE[_i].status == -1) {
        ck_assert_msg(r->status == 0, "%s: curl saw a whole response: %ld '%.300s'",
                      CLOSE[_i].mode, r->status, r->body);
    }
    else if (CLOSE[_i].status > 0) {
        ck_assert_msg(r->status == CLOSE[_i].status, "%s: status %ld (%s), want %ld: %.300s",
                      CLOSE[_i].mode, r->status, r->error, CLOSE[_i].status, r->body);
        http_assert_body_lacks(r, "PYRT-");
    }
    if (CLOSE[_i].body) {
        ck_assert_str_eq(r->body, CLOSE[_i].body);
    }
    http_free(r);
    ck_assert_int_eq(closed_count(srv, tok, &ran), 1);
    ck_assert_int_eq(ran, 1);
    if (CLOSE[_i].log) {
        ck_assert_msg(httpd_log_wait(srv, mark, CLOSE[_i].log, 1, 3000), "%s: not logged",
                      CLOSE[_i].log);
    }
    assert_no_crash(srv, mark);
}
END_TEST

/* The client goes away mid-stream: iteration stops, close() once. */
START_TEST(test_close_once_client_gone)
{
    size_t mark = httpd_log_mark(srv);
    char tok[64], req[256], buf[65536];
    int fd = raw_connect(srv), ran, closed, blocks, blocks2;
    size_t got = 0;
    double t0;
    struct timespec ts;

    token(tok, sizeof(tok), "gone");
    snprintf(req, sizeof(req), "GET /w/closeable?t=%s&mode=forever HTTP/1.1\r\nHost: t\r\n\r\n",
             tok);
    raw_send(fd, req, strlen(req));
    while (got < 300000) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);

        ck_assert_msg(n > 0, "stream ended after %zu bytes", got);
        got += (size_t)n;
    }
    raw_abort(fd);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = ts.tv_sec + ts.tv_nsec / 1e9;
    closed = closed_count(srv, tok, &ran);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    counts(srv, tok, &closed, &ran, &blocks);
    fprintf(stderr, "client gone after %zu bytes: close() seen after %.2f s, %d blocks made\n",
            got, ts.tv_sec + ts.tv_nsec / 1e9 - t0, blocks);
    ck_assert_int_eq(closed, 1);
    /* Iteration stopped: no more blocks made. */
    usleep(300 * 1000);
    counts(srv, tok, &closed, &ran, &blocks2);
    ck_assert_int_eq(blocks2, blocks);
    ck_assert_int_eq(closed, 1);
    /* the iterable would go on for 8 s by itself */
    ck_assert_msg(ts.tv_sec + ts.tv_nsec / 1e9 - t0 < 5, "close() only after %.2f s",
                  ts.tv_sec + ts.tv_nsec / 1e9 - t0);
    assert_no_crash(srv, mark);
}
END_TEST

/* HEAD of path_fmt (%s: a fresh token): 200, no body, close() once. */
static void
head_closes_once(const char *path_fmt)
{
    char tok[64], path[160], req[256], *resp;
    raw_resp_t rr;
    int ran;

    token(tok, sizeof(tok), "head");
    snprintf(path, sizeof(path), path_fmt, tok);
    snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
             path);
    resp = raw_do(srv, req, strlen(req), &rr);
    ck_assert_msg(rr.status == 200 && rr.len == 0, "HEAD %s: %zu body bytes:\n%.500s", path,
                  rr.len, resp);
    free(resp);
    ck_assert_int_eq(closed_count(srv, tok, &ran), 1);
    ck_assert_int_eq(ran, 1);
}

/* HEAD: the application runs, close() once, no body goes out. */
START_TEST(test_head_no_body)
{
    static const char req[] = "HEAD /w/resp?kind=gen HTTP/1.1\r\nHost: t\r\nConnection: close"
                              "\r\n\r\n";
    char *resp;
    raw_resp_t rr;

    head_closes_once("/w/closeable?t=%s&mode=normal");
    resp = raw_do(srv, req, strlen(req), &rr);
    ck_assert_msg(rr.status == 200 && rr.len == 0, "HEAD of a generator: %.1000s", resp);
    free(resp);
}
END_TEST

/* An application Content-Length: never more bytes than it says; fewer cut
 * the connection. */
static const struct {
    const char *query;
    long n;            /* bytes the client must get; -1: broken */
} CL[] = {
    { "n=10&send=20&kind=list", 10 }, { "n=10&send=20&kind=gen", 10 },
    { "n=10&send=20&kind=write", 10 },  /* write() past it: what fits, then an error */
    { "n=20&send=20&kind=write", 20 }, { "n=20&send=20&kind=gen", 20 },
    { "n=100&send=10&kind=list", -1 }, { "n=100&send=10&kind=gen", -1 },
    { "n=100&send=10&kind=write", -1 }, { "n=0&send=0&kind=gen", 0 },
};

START_TEST(test_content_length_honoured)
{
    size_t mark = httpd_log_mark(srv);
    char path[128], req[256], *resp;
    http_req_t rq = { .path = path, .timeout_ms = 5000 };
    http_resp_t *r;
    raw_resp_t rr;

    snprintf(path, sizeof(path), "/w/cl?%s", CL[_i].query);
    r = http_do(srv, &rq);
    if (CL[_i].n < 0) {
        ck_assert_msg(r->status == 0, "%s: curl saw a whole response: %ld, %zu bytes", path,
                      r->status, r->len);
        ck_assert_msg(strstr(r->error, "imeout") == NULL, "%s: %s", path, r->error);
    }
    else {
        http_assert_status(r, 200);
        ck_assert_uint_eq(r->len, (size_t)CL[_i].n);
        ck_assert_int_eq(memcmp(r->body, "01234567890123456789", (size_t)CL[_i].n), 0);
    }
    http_free(r);
    /* On the wire: exactly n bytes after the header, nothing more. */
    if (CL[_i].n >= 0) {
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                 path);
        resp = raw_do(srv, req, strlen(req), &rr);
        ck_assert_msg(rr.status == 200 && !rr.chunked && rr.len == (size_t)CL[_i].n,
                      "%s: %zu bytes on the wire:\n%.1000s", path, rr.len, resp);
        free(resp);
    }
    assert_no_crash(srv, mark);
}
END_TEST

/* Content-Length reached: iteration stops there (PEP 3333: "should stop
 * iterating over the response when enough data has been sent") and close()
 * is called, also when the iterable would go on for ever: a generator
 * (bounded at 8 s by itself) and a file_wrapper over /dev/zero (not a
 * regular file: iterated; bounded at 64 reads by itself). */
static const struct {
    const char *path;
    size_t len;
    char byte;
} CL_STOP[] = {
    { "/w/closeable?mode=cl_forever&t=%s", 9, 'f' },
    { "/w/fw?mode=devzero&t=%s", 5000, '\0' },
};

START_TEST(test_content_length_stops_iteration)
{
    size_t mark = httpd_log_mark(srv), k;
    char tok[64], path[160];
    http_resp_t *r;
    int closed, ran, blocks;

    token(tok, sizeof(tok), "clstop");
    snprintf(path, sizeof(path), CL_STOP[_i].path, tok);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, CL_STOP[_i].len);
    for (k = 0; k < r->len && r->body[k] == CL_STOP[_i].byte; k++) {
    }
    ck_assert_uint_eq(k, r->len);
    http_free(r);
    closed = closed_count(srv, tok, &ran);
    counts(srv, tok, &closed, &ran, &blocks);
    ck_assert_msg(closed == 1 && blocks <= 2, "%s: Content-Length reached; close() called %d "
                  "time(s), %d block(s) taken from the iterable", path, closed, blocks);
    assert_no_crash(srv, mark);
}
END_TEST

/* A block is sent when it is produced (PEP 3333: servers "must not delay
 * the transmission of any block"), by the iterable or by write(). */
static const char *const SLOW[] = { "/w/slow?how=gen", "/w/slow?how=write" };

START_TEST(test_blocks_not_delayed)
{
    http_resp_t *r = http_get(srv, SLOW[_i]);

    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, "first;second");
    fprintf(stderr, "%s: first byte after %.0f ms, whole after %.0f ms\n", SLOW[_i],
            r->first_body_ms, r->total_ms);
    ck_assert_msg(r->total_ms >= 900, "%.0f ms", r->total_ms);
    ck_assert_msg(r->first_body_ms >= 0 && r->first_body_ms < 800,
                  "%s: the first block came after %.0f ms (whole after %.0f ms)", SLOW[_i],
                  r->first_body_ms, r->total_ms);
    http_free(r);
}
END_TEST

/* HEAD: the application's Content-Length is the one a GET would get. */
START_TEST(test_head_keeps_content_length)
{
    static const char req[] = "HEAD /w/cl?n=20&send=20&kind=gen HTTP/1.1\r\nHost: t\r\n"
                              "Connection: close\r\n\r\n";
    char *resp;
    raw_resp_t rr;

    resp = raw_do(srv, req, strlen(req), &rr);
    ck_assert_msg(rr.status == 200 && rr.len == 0, "%.1000s", resp);
    ck_assert_msg(strcasestr(rr.head, "\r\nContent-Length: 20") != NULL, "%.1000s", rr.head);
    free(resp);
}
END_TEST

/* Empty blocks are not output: an error after them is still a clean 500,
 * and exc_info can still replace the status. */
START_TEST(test_empty_blocks_are_not_output)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/w/emptyfirst?mode=raise");

    ck_assert_msg(r->status == 500, "raise after empty blocks: status %ld (%s) '%.300s'",
                  r->status, r->error, r->body);
    http_free(r);
    ck_assert(httpd_log_wait(srv, mark, "PYRT-before-any-byte", 1, 3000));
    r = http_get(srv, "/w/emptyfirst?mode=replace");
    ck_assert_msg(r->status == 503, "exc_info after empty blocks: status %ld (%s) '%.300s'",
                  r->status, r->error, r->body);
    ck_assert_str_eq(r->body, "late error page");
    ck_assert_ptr_nonnull(http_header(r, "X-Late"));
    http_free(r);
}
END_TEST

/* 200 MiB from a generator: streamed, the child's memory bounded. */
#define STREAM_MB 200
#define STREAM_MAX_GROWTH_KB (30 * 1024)

START_TEST(test_stream_200mib_bounded_rss)
{
    pid_t child = httpd_child(srv);
    char req[128], buf[1 << 16];
    long before, peak, after, rss;
    size_t got = 0, next_sample = 0;
    struct timespec t0, t1;
    http_resp_t *r;
    int fd;

    ck_assert_int_gt(child, 0);
    r = http_get(srv, "/w/stream?mb=4");     /* warm-up: the same path once */
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 4 * MIB);
    http_free(r);
    before = peak = httpd_rss_kb(child);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = raw_connect(srv);
    snprintf(req, sizeof(req), "GET /w/stream?mb=%d HTTP/1.0\r\n\r\n", STREAM_MB);
    raw_send(fd, req, strlen(req));
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);

        if (n <= 0) {
            break;
        }
        got += (size_t)n;
        if (got >= next_sample) {
            rss = httpd_rss_kb(child);
            peak = rss > peak ? rss : peak;
            next_sample += 8 * MIB;
        }
    }
    close(fd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    after = httpd_rss_kb(child);
    fprintf(stderr, "stream %d MiB (%s): %zu bytes in %.2f s; child VmRSS before %ld kB, "
            "peak %ld kB, after %ld kB (growth %ld kB)\n", STREAM_MB, httpd_mpm(srv), got,
            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, before, peak,
            after, peak - before);
    ck_assert_int_eq(httpd_child(srv), child);
    /* header + exactly the body */
    ck_assert_msg(got > (size_t)STREAM_MB * MIB && got < (size_t)STREAM_MB * MIB + 1024,
                  "%zu bytes", got);
    if (!httpd_sanitizing()) {
        ck_assert_msg(peak - before < STREAM_MAX_GROWTH_KB, "child RSS grew by %ld kB",
                      peak - before);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* wsgi.file_wrapper                                                   */

static const struct {
    const char *mode;
    size_t from, len;
} FW[] = {
    { "real", 0, BIGFILE_LEN },
    { "seek", 1000, BIGFILE_LEN - 1000 },
    { "cl", 0, 5000 },
    { "nofileno", 0, BIGFILE_LEN },
};

START_TEST(test_file_wrapper)
{
    char tok[64], path[160];
    http_resp_t *r;
    size_t k;
    int ran, closed, reads;

    token(tok, sizeof(tok), FW[_i].mode);
    snprintf(path, sizeof(path), "/w/fw?mode=%s&t=%s", FW[_i].mode, tok);
    r = http_get(srv, path);
    http_assert_status(r, 200);
    ck_assert_msg(r->len == FW[_i].len, "%s: %zu bytes, want %zu", FW[_i].mode, r->len,
                  FW[_i].len);
    for (k = 0; k < r->len; k++) {
        if ((unsigned char)r->body[k] != pattern(FW[_i].from + k)) {
            break;
        }
    }
    ck_assert_msg(k == r->len, "%s: body differs from the file at byte %zu", FW[_i].mode, k);
    http_free(r);
    ck_assert_int_eq(closed_count(srv, tok, &ran), 1);
    /* A regular file goes as a file bucket: Python's read() never runs. */
    counts(srv, tok, &closed, &ran, &reads);
    if (strcmp(FW[_i].mode, "nofileno") != 0) {
        ck_assert_msg(reads == 0, "%s: the file was read through Python (%d read() calls)",
                      FW[_i].mode, reads);
    }
}
END_TEST

static const struct {
    const char *mode;
    long len;       /* bytes; -1: a broken response */
} FW_EDGE[] = {
    { "noblksize", BIGFILE_LEN },
    { "empty", 0 },
    { "cl_over", -1 },          /* Content-Length past the end of the file */
};

START_TEST(test_file_wrapper_edges)
{
    size_t mark = httpd_log_mark(srv);
    char tok[64], path[160];
    http_req_t rq = { .path = path, .timeout_ms = 10000 };
    http_resp_t *r;
    long k;
    int ran;

    token(tok, sizeof(tok), FW_EDGE[_i].mode);
    snprintf(path, sizeof(path), "/w/fw?mode=%s&t=%s", FW_EDGE[_i].mode, tok);
    r = http_do(srv, &rq);
    if (FW_EDGE[_i].len < 0) {
        ck_assert_msg(r->status == 0, "%s: curl saw a whole response: %ld, %zu bytes",
                      FW_EDGE[_i].mode, r->status, r->len);
        ck_assert_msg(strstr(r->error, "imeout") == NULL, "%s: %s", path, r->error);
    }
    else {
        http_assert_status(r, 200);
        ck_assert_msg(r->len == (size_t)FW_EDGE[_i].len, "%s: %zu bytes, want %ld",
                      FW_EDGE[_i].mode, r->len, FW_EDGE[_i].len);
        for (k = 0; k < (long)r->len; k++) {
            if ((unsigned char)r->body[k] != pattern((size_t)k)) {
                break;
            }
        }
        ck_assert_msg(k == (long)r->len, "%s: body differs at byte %ld", FW_EDGE[_i].mode, k);
    }
    http_free(r);
    ck_assert_int_eq(closed_count(srv, tok, &ran), 1);
    assert_no_crash(srv, mark);
}
END_TEST

/* HEAD of a file_wrapper response: no body, the file closed once. */
START_TEST(test_file_wrapper_head)
{
    head_closes_once("/w/fw?mode=real&t=%s");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Wrong responses                                                     */

static const struct {
    const char *c;
    const char *log;   /* must be in the log */
} WRONG[] = {
    { "nostart", "PYR0200" },
    { "nostart_empty", "PYR0200" },
    { "gen_nostart_empty", "PYR0200" },
    { "none", "PYR0200" },
    { "str_item", "PYR0200" },
    { "str_result", "PYR0200" },
    { "bytes_result", "PYR0200" },
    { "int_item", "PYR0200" },
    { "int_result", "PYR0200" },
    { "none_item", "PYR0200" },
    { "raise_before", "ValueError: PYRT-secret-raise" },
    { "gen_str_first", "PYR0200" },
    { "gen_raise_first", "ValueError: PYRT-secret-gen-raise" },
};

START_TEST(test_wrong_response)
{
    size_t mark = httpd_log_mark(srv);
    char path[128];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/w/wrong?c=%s", WRONG[_i].c);
    r = http_get(srv, path);
    ck_assert_msg(r->status == 500, "%s: status %ld (%s): %.500s", WRONG[_i].c, r->status,
                  r->error, r->body);
    http_assert_body_lacks(r, "PYRT-secret");
    http_assert_body_lacks(r, "Traceback");
    http_free(r);
    ck_assert_msg(httpd_log_wait(srv, mark, WRONG[_i].log, 1, 3000), "%s: '%s' not logged:\n%.3000s",
                  WRONG[_i].c, WRONG[_i].log, httpd_log_since(srv, mark));
    ck_assert_msg(httpd_log_wait(srv, mark, "PYR0200", 1, 3000), "%s: no PYR0200", WRONG[_i].c);
    assert_no_crash(srv, mark);
}
END_TEST

static const char *const WRONG_DEBUG[] = { "raise_before", "str_item", "none" };

START_TEST(test_wrong_response_debug_body)
{
    char path[128];
    http_resp_t *r;

    snprintf(path, sizeof(path), "/wdebug/wrong?c=%s", WRONG_DEBUG[_i]);
    r = http_get(srv, path);
    http_assert_status(r, 500);
    if (_i == 0) {
        http_assert_body_has(r, "Traceback");
        http_assert_body_has(r, "ValueError: PYRT-secret-raise");
    }
    http_assert_body_has(r, "w.py::dispatch");
    http_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* wsgiref.validate                                                    */

static const struct {
    const char *name;
    const char *method;
    const char *path;
    const char *body;
    long status;
    const char *want;   /* exact body, or NULL */
} VALIDATE[] = {
    { "get", NULL, "/v/get/x", NULL, 200, "get-ok /get/x" },
    { "post", NULL, "/v/post", SMALL, 200,
      "[b'alp', b'ha\\n', b'bravo-bravo\\n\\ncharlie', b'']" },
    { "post_empty", "POST", "/v/post", "", 200, "[b'', b'', b'', b'']" },
    { "stream", NULL, "/v/stream", NULL, 200, NULL },
    { "write", NULL, "/v/write", NULL, 200, "w1-w2-i1" },
    { "notfound", NULL, "/v/notfound", NULL, 404, "nothing here" },
    { "empty_204", NULL, "/v/empty", NULL, 204, "" },
    { "file_wrapper", NULL, "/v/file", NULL, 200, NULL },
    { "exc_info", NULL, "/v/exc", NULL, 500, "handled" },
    { "head", "HEAD", "/v/get/h", NULL, 200, "" },
};

START_TEST(test_wsgiref_validate)
{
    size_t mark = httpd_log_mark(srv);
    http_req_t rq = { .method = VALIDATE[_i].method, .path = VALIDATE[_i].path,
                      .body = VALIDATE[_i].body,
                      .body_len = VALIDATE[_i].body ? strlen(VALIDATE[_i].body) : 0 };
    http_resp_t *r = http_do(srv, &rq);
    char *log;

    ck_assert_msg(r->status == VALIDATE[_i].status, "%s: status %ld (%s): %.1000s; log:\n%.3000s",
                  VALIDATE[_i].name, r->status, r->error, r->body, httpd_log_since(srv, mark));
    if (VALIDATE[_i].want) {
        ck_assert_str_eq(r->body, VALIDATE[_i].want);
    }
    if (!strcmp(VALIDATE[_i].name, "stream")) {
        ck_assert_uint_eq(r->len, 50 * 9);
    }
    http_free(r);
    usleep(150 * 1000);     /* an "Exception ignored" from __del__ comes after */
    log = httpd_log_since(srv, mark);
    ck_assert_msg(!strstr(log, "WSGIWarning") && !strstr(log, "AssertionError")
                  && !strstr(log, "Exception ignored") && !strstr(log, "PYR0200"),
                  "%s: the validator complained:\n%.3000s", VALIDATE[_i].name, log);
    free(log);
}
END_TEST

/* Chunked input under the validator. */
START_TEST(test_wsgiref_validate_chunked)
{
    size_t mark = httpd_log_mark(srv), reqlen;
    char *req = input_request("/v/post", SMALL, strlen(SMALL), 1, &reqlen), *resp, *log;
    raw_resp_t rr;

    resp = raw_do(srv, req, reqlen, &rr);
    ck_assert_msg(rr.status == 200, "%.2000s", resp);
    ck_assert_str_eq(rr.body, "[b'alp', b'ha\\n', b'bravo-bravo\\n\\ncharlie', b'']");
    free(resp);
    free(req);
    usleep(150 * 1000);
    log = httpd_log_since(srv, mark);
    ck_assert_msg(!strstr(log, "WSGIWarning") && !strstr(log, "AssertionError"),
                  "the validator complained:\n%.3000s", log);
    free(log);
}
END_TEST

/* A request blocked on the network, writing to a client that does not read
 * or reading from one that does not send, holds no GIL: another request
 * of the same process is answered meanwhile.  (prefork: one request per
 * process, nothing to share: skipped.) */
START_TEST(test_blocked_io_releases_gil)
{
    static const char stalled_reader[] = "GET /w/stream?mb=64 HTTP/1.1\r\nHost: t\r\n\r\n";
    static const char stalled_sender[] = "POST /w/in?op=readall HTTP/1.1\r\nHost: t\r\n"
                                         "Content-Length: 1000\r\n\r\n0123456789";
    const char *what = _i ? "reading a body that does not come" : "writing to a client that "
                                                                 "does not read";
    size_t mark = httpd_log_mark(srv);
    http_req_t rq = { .path = "/w/resp?kind=list", .timeout_ms = 5000 };
    http_resp_t *r;
    int fd;

    if (!strcmp(httpd_mpm(srv), "prefork")) {
        fprintf(stderr, "blocked I/O and the GIL: skipped under prefork (one request per "
                        "process)\n");
        return;
    }
    fd = raw_connect(srv);
    raw_send(fd, _i ? stalled_sender : stalled_reader,
             strlen(_i ? stalled_sender : stalled_reader));
    usleep(500 * 1000);         /* the server is blocked by now */
    r = http_do(srv, &rq);
    fprintf(stderr, "while a request is blocked %s: another took %.0f ms\n", what, r->total_ms);
    http_assert_status(r, 200);
    /* held, it would wait for the stalled request: httpd's Timeout (30 s) */
    ck_assert_msg(r->total_ms < 2000, "the other request waited %.0f ms", r->total_ms);
    http_free(r);
    raw_abort(fd);
    assert_no_crash(srv, mark);
}
END_TEST

/* The child's memory per request, through what a request builds and
 * frees (environ, wsgi.input, start_response, a closeable iterable, a
 * file_wrapper over a file, options): flat after a warm-up. */
#define MEM_WARMUP 500
#define MEM_ROUNDS 2500           /* 4 requests each */
#define MEM_MAX_BYTES_PER_REQUEST 40

static void
mem_rounds(http_client_t *c, int n)
{
    http_req_t post = { .path = "/w/in?op=readline", .body = SMALL, .body_len = strlen(SMALL) };
    static const char *const gets[] = { "/w/closeable?t=mem&mode=normal",
                                        "/w/fw?mode=cl&t=mem", "/shop/items/7?a=1" };

    for (int i = 0; i < n; i++) {
        http_resp_t *r = http_client_do(c, &post);

        ck_assert_msg(r->status == 200, "round %d: POST %ld", i, r->status);
        http_free(r);
        for (int k = 0; k < 3; k++) {
            r = http_client_get(c, gets[k]);
            ck_assert_msg(r->status == 200, "round %d: %s %ld", i, gets[k], r->status);
            http_free(r);
        }
    }
}

START_TEST(test_memory_per_request)
{
    http_client_t *c = http_client_new(srv);
    pid_t child = httpd_child(srv);
    long before, after;
    double per;

    ck_assert_int_gt(child, 0);
    mem_rounds(c, MEM_WARMUP);
    before = httpd_rss_kb(child);
    mem_rounds(c, MEM_ROUNDS);
    after = httpd_rss_kb(child);
    http_client_free(c);
    ck_assert_int_eq(httpd_child(srv), child);
    per = (double)(after - before) * 1024.0 / (MEM_ROUNDS * 4);
    fprintf(stderr, "wsgi memory per request (%s): RSS %ld kB -> %ld kB over %d requests "
            "(%.1f B/request)\n", httpd_mpm(srv), before, after, MEM_ROUNDS * 4, per);
    if (!httpd_sanitizing()) {
        ck_assert_msg(per <= MEM_MAX_BYTES_PER_REQUEST, "RSS grew by %.1f B/request", per);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency: clients at once, each response whole and its own        */

#define CONC_CLIENTS 8
#define CONC_REQUESTS 40

typedef struct {
    int id, failures;
    char first[600];
} conc_t;

static void *
conc_client(void *arg)
{
    conc_t *st = arg;
    http_client_t *c = http_client_new(srv);
    char body[64], want[256];

    for (int i = 0; i < CONC_REQUESTS; i++) {
        http_req_t rq = { .path = "/w/in?op=readline", .body = body };
        http_resp_t *r;

        snprintf(body, sizeof(body), "c%d\nr%d\n", st->id, i);
        rq.body_len = strlen(body);
        snprintf(want, sizeof(want), "[b'c%d\\n', b'r%d\\n', b'', 'CL=%zu']", st->id, i,
                 rq.body_len);
        r = i % 3 == 2 ? http_client_get(c, "/w/resp?kind=gen") : http_client_do(c, &rq);
        if (r->status != 200 || strcmp(r->body, i % 3 == 2 ? "one-two-three" : want)) {
            if (!st->failures++) {
                snprintf(st->first, sizeof(st->first), "%ld '%.200s' want '%s'", r->status,
                         r->body, i % 3 == 2 ? "one-two-three" : want);
            }
        }
        http_free(r);
    }
    http_client_free(c);
    return NULL;
}

START_TEST(test_concurrent_clients)
{
    size_t mark = httpd_log_mark(srv);
    pthread_t t[CONC_CLIENTS];
    conc_t st[CONC_CLIENTS];
    int i;

    for (i = 0; i < CONC_CLIENTS; i++) {
        memset(&st[i], 0, sizeof(st[i]));
        st[i].id = i;
        pthread_create(&t[i], NULL, conc_client, &st[i]);
    }
    for (i = 0; i < CONC_CLIENTS; i++) {
        pthread_join(t[i], NULL);
    }
    for (i = 0; i < CONC_CLIENTS; i++) {
        ck_assert_msg(st[i].failures == 0, "client %d: %d failures, first: %s", i,
                      st[i].failures, st[i].first);
    }
    assert_no_crash(srv, mark);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Reloading                                                           */

static const char reload_tpl[] =
    "import sys, time\n"
    "import %s as dep\n"
    "TEXT = '%s'\n"
    "if 'hits' not in globals():\n"
    "    hits = {'n': 0}\n"
    "def __clone__(new):\n"
    "    new.hits = hits\n"
    "def __purge__():\n"
    "    sys.stderr.write('PYRT-PURGED %%s\\n' %% TEXT)\n"
    "    sys.stderr.flush()\n"
    "class Stream:\n"
    "    def __init__(self):\n"
    "        self.i = 0\n"
    "    def __iter__(self):\n"
    "        return self\n"
    "    def __next__(self):\n"
    "        self.i += 1\n"
    "        if self.i > 6:\n"
    "            raise StopIteration\n"
    "        time.sleep(0.25)\n"
    "        return ('%%s/%%s;' %% (TEXT, dep.VERSION)).encode()\n"
    "    def close(self):\n"
    "        sys.stderr.write('PYRT-CLOSED %%s\\n' %% TEXT)\n"
    "        sys.stderr.flush()\n"
    "def application(environ, start_response):\n"
    "    hits['n'] += 1\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    if environ['PATH_INFO'] == '/stream':\n"
    "        return Stream()\n"
    "    return [('%%s dep=%%s hits=%%d gen=%%d egen=%%r' %% (TEXT, dep.VERSION, hits['n'],\n"
    "             __generation__, environ.get('pyreload.generation'))).encode()]\n";

static void
rput(const char *name, const char *dep, const char *text)
{
    char src[4096];

    snprintf(src, sizeof(src), reload_tpl, dep, text);
    it_put(rsrv, name, src);
}

static void
rsetup(void)
{
    static const char *const names[] = { "edit", "clone", "dep", "broken", "stream", "gone",
                                         "frozen", NULL };
    httpd_opts_t o = {
        .config = "<Location />\n  PyReloadWSGI @APP@/env.py\n</Location>\n"
                  "<Location /edit>\n  PyReloadWSGI @APP@/r_edit.py\n</Location>\n"
                  "<Location /clone>\n  PyReloadWSGI @APP@/r_clone.py\n</Location>\n"
                  "<Location /dep>\n  PyReloadWSGI @APP@/r_dep.py\n</Location>\n"
                  "<Location /broken>\n  PyReloadWSGI @APP@/r_broken.py\n</Location>\n"
                  "<Location /brokendbg>\n  PyReloadWSGI @APP@/r_broken.py\n"
                  "  PyReloadDebug On\n</Location>\n"
                  "<Location /gone>\n  PyReloadWSGI @APP@/r_gone.py\n</Location>\n"
                  "<Location /frozen>\n  PyReloadWSGI @APP@/r_frozen.py\n"
                  "  PyReloadCheck Off\n</Location>\n"
                  "<Location /stream>\n  PyReloadWSGI @APP@/r_stream.py\n</Location>\n"
                  "<Location /env>\n  PyReloadWSGI @APP@/env.py\n</Location>\n",
        .procs = 2,
    };
    char file[64], dep[64], text[64], *env;
    int i;

    rsrv = httpd_new(&o);
    ck_assert_ptr_nonnull(rsrv);
    for (i = 0; names[i]; i++) {
        snprintf(file, sizeof(file), "r_%s.py", names[i]);
        snprintf(dep, sizeof(dep), "dep_%s", names[i]);
        snprintf(text, sizeof(text), "%s-v1", names[i]);
        rput(file, dep, text);
        snprintf(file, sizeof(file), "dep_%s.py", names[i]);
        it_put(rsrv, file, "VERSION = 'd1'\n");
    }
    env = slurp("env.py");
    it_put(rsrv, "env.py", env);
    free(env);
    if (httpd_start(rsrv) != 0) {
        httpd_dump_log_tail(rsrv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
rteardown(void)
{
    httpd_free(rsrv);
    rsrv = NULL;
}

/* GET on a keep-alive client (under prefork: always the same process). */
static char *
cget(http_client_t *c, const char *path)
{
    http_resp_t *r = http_client_get(c, path);
    char *body;

    ck_assert_msg(r->status == 200, "%s: status %ld (%s): %.1500s", path, r->status, r->error,
                  r->body);
    body = strdup(r->body);
    http_free(r);
    return body;
}

#define assert_prefix(s, p) \
    ck_assert_msg(strncmp((s), (p), strlen(p)) == 0, "'%s', want '%s...'", (s), (p))

/* GET path (its body starts with before), write file (a reload template
 * with dep and text, or with dep NULL text itself), GET path again (after). */
static void
edit_then_expect(const char *path, const char *before, const char *file, const char *dep,
                 const char *text, const char *after)
{
    http_client_t *c = http_client_new(rsrv);
    char *b;

    b = cget(c, path);
    assert_prefix(b, before);
    free(b);
    if (dep) {
        rput(file, dep, text);
    }
    else {
        it_put(rsrv, file, text);
    }
    b = cget(c, path);
    assert_prefix(b, after);
    free(b);
    http_client_free(c);
}

START_TEST(test_reload_edit)
{
    edit_then_expect("/edit", "edit-v1 dep=d1", "r_edit.py", "dep_edit", "edit-v2",
                     "edit-v2 dep=d1");
}
END_TEST

START_TEST(test_reload_clone_state)
{
    http_client_t *c = http_client_new(rsrv);
    int hits1, gen1, hits2, gen2;
    char *b;

    free(cget(c, "/clone"));
    b = cget(c, "/clone");
    ck_assert_msg(sscanf(b, "clone-v1 dep=d1 hits=%d gen=%d", &hits1, &gen1) == 2, "'%s'", b);
    free(b);
    rput("r_clone.py", "dep_clone", "clone-v2");
    b = cget(c, "/clone");
    ck_assert_msg(sscanf(b, "clone-v2 dep=d1 hits=%d gen=%d", &hits2, &gen2) == 2, "'%s'", b);
    free(b);
    ck_assert_int_eq(hits2, hits1 + 1);
    ck_assert_int_eq(gen2, gen1 + 1);
    http_client_free(c);
}
END_TEST

START_TEST(test_reload_dependency)
{
    edit_then_expect("/dep", "dep-v1 dep=d1", "dep_dep.py", NULL, "VERSION = 'd2'\n",
                     "dep-v1 dep=d2");
}
END_TEST

START_TEST(test_reload_broken_keeps_last_good)
{
    http_client_t *c = http_client_new(rsrv);
    size_t mark;
    char *b;
    int i;

    b = cget(c, "/broken");
    assert_prefix(b, "broken-v1");
    free(b);
    mark = httpd_log_mark(rsrv);
    it_put(rsrv, "r_broken.py", "import sys\ndef application(environ, start_response)\n");
    for (i = 0; i < 3; i++) {
        b = cget(c, "/broken");
        assert_prefix(b, "broken-v1");
        free(b);
    }
    ck_assert_int_eq(httpd_log_count(rsrv, mark, "SyntaxError"), 1);
    ck_assert_int_eq(httpd_log_count(rsrv, mark, "load failed"), 1);
    /* PyReloadDebug On shows the broken save instead (same process). */
    {
        http_resp_t *r = http_client_get(c, "/brokendbg");

        http_assert_status(r, 500);
        http_assert_body_has(r, "SyntaxError");
        http_free(r);
    }
    rput("r_broken.py", "dep_broken", "broken-v3");
    b = cget(c, "/broken");
    assert_prefix(b, "broken-v3");
    free(b);
    http_client_free(c);
}
END_TEST

typedef struct {
    http_client_t *client;
    http_resp_t *resp;
} bg_t;

static void *
bg_stream(void *arg)
{
    bg_t *b = arg;

    b->resp = http_client_get(b->client, "/stream/stream");
    return NULL;
}

/* A streaming response begun before an edit finishes on the old code, and
 * its generation is pinned until close(): purged after, never before. */
START_TEST(test_reload_stream_pinned_until_close)
{
    bg_t b = { http_client_new(rsrv), NULL };
    size_t mark;
    pthread_t t;
    char *body, *closed, *purged, *log;
    http_resp_t *r;

    body = cget(b.client, "/stream");
    assert_prefix(body, "stream-v1");
    free(body);
    mark = httpd_log_mark(rsrv);
    pthread_create(&t, NULL, bg_stream, &b);
    usleep(400 * 1000);                     /* the stream is running */
    rput("r_stream.py", "dep_stream", "stream-v2");
    r = http_get(rsrv, "/stream");          /* prefork: the other process */
    http_assert_status(r, 200);
    assert_prefix(r->body, "stream-v2");
    ck_assert_msg(r->total_ms < 1000, "the new request waited %.0f ms", r->total_ms);
    http_free(r);
    ck_assert_int_eq(httpd_log_count(rsrv, mark, "PYRT-PURGED stream-v1"), 0);
    pthread_join(t, NULL);
    http_assert_status(b.resp, 200);
    ck_assert_str_eq(b.resp->body, "stream-v1/d1;stream-v1/d1;stream-v1/d1;stream-v1/d1;"
                                   "stream-v1/d1;stream-v1/d1;");
    http_free(b.resp);
    /* Its process sees the edit on its next request (prefork: this
     * connection's), and only then can the old generation go. */
    body = cget(b.client, "/stream");
    assert_prefix(body, "stream-v2");
    free(body);
    ck_assert_msg(httpd_log_wait(rsrv, mark, "PYRT-PURGED stream-v1", 1, 3000),
                  "stream-v1 never purged:\n%.3000s", httpd_log_since(rsrv, mark));
    log = httpd_log_since(rsrv, mark);
    closed = strstr(log, "PYRT-CLOSED stream-v1");
    purged = strstr(log, "PYRT-PURGED stream-v1");
    ck_assert_msg(closed && purged && closed < purged, "close() after __purge__:\n%.3000s", log);
    free(log);
    http_client_free(b.client);
}
END_TEST

/* environ['pyreload.generation'] is the generation serving the request. */
START_TEST(test_reload_environ_generation)
{
    http_client_t *c = http_client_new(rsrv);
    int gen, egen, hits, k;
    char *b;

    for (k = 0; k < 2; k++) {
        b = cget(c, "/edit");
        ck_assert_msg(sscanf(strchr(b, ' '), " dep=d1 hits=%d gen=%d egen=%d", &hits, &gen,
                             &egen) == 3, "'%s'", b);
        ck_assert_msg(gen == egen, "'%s'", b);
        free(b);
        rput("r_edit.py", "dep_edit", k ? "edit-v4" : "edit-v3");
    }
    http_client_free(c);
}
END_TEST

/* An edit that removes the configured callable: the last good one serves. */
START_TEST(test_reload_callable_removed)
{
    http_client_t *c = http_client_new(rsrv);
    size_t mark;
    char *b;

    b = cget(c, "/gone");
    assert_prefix(b, "gone-v1");
    free(b);
    mark = httpd_log_mark(rsrv);
    it_put(rsrv, "r_gone.py", "def app(environ, start_response):\n    return []\n");
    b = cget(c, "/gone");
    assert_prefix(b, "gone-v1");
    free(b);
    ck_assert_msg(httpd_log_wait(rsrv, mark, "application", 1, 3000), "not logged:\n%.2000s",
                  httpd_log_since(rsrv, mark));
    rput("r_gone.py", "dep_gone", "gone-v3");
    b = cget(c, "/gone");
    assert_prefix(b, "gone-v3");
    free(b);
    http_client_free(c);
}
END_TEST

/* PyReloadCheck Off applies to WSGI files as to handlers: no reload. */
START_TEST(test_reload_check_off)
{
    edit_then_expect("/frozen", "frozen-v1", "r_frozen.py", "dep_frozen", "frozen-v2",
                     "frozen-v1");
}
END_TEST

/* <Location />: SCRIPT_NAME '' (the '/' stripped), PATH_INFO the path. */
START_TEST(test_location_root)
{
    http_resp_t *r = http_get(rsrv, "/any/where");

    http_assert_status(r, 200);
    assert_env_line(r->body, "SCRIPT_NAME=''", "Location /");
    assert_env_line(r->body, "PATH_INFO='/any/where'", "Location /");
    http_free(r);
}
END_TEST

/* wsgi.multithread / wsgi.multiprocess with two prefork processes. */
START_TEST(test_multi_two_processes)
{
    int prefork = !strcmp(httpd_mpm(rsrv), "prefork");
    http_resp_t *r = http_get(rsrv, "/env");

    http_assert_status(r, 200);
    assert_env_line(r->body, prefork ? "_multithread=False" : "_multithread=True", "multi");
    assert_env_line(r->body, prefork ? "_multiprocess=True" : "_multiprocess=False", "multi");
    http_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Over TLS                                                            */

/* mod_ssl with a certificate made for the test (openssl): HTTPS=on and
 * wsgi.url_scheme 'https' (the environ rows check that plain HTTP has
 * neither). */
static const char TLS_APP[] =
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [('%s %s %s' % (environ.get('HTTPS'), environ['wsgi.url_scheme'],\n"
    "                          type(environ['SERVER_PORT']).__name__)).encode()]\n";

static size_t
tls_body(char *p, size_t size, size_t n, void *baton)
{
    char *buf = baton;
    size_t have = strlen(buf), add = size * n;

    if (have + add < 256) {
        memcpy(buf + have, p, add);
        buf[have + add] = '\0';
    }
    return add;
}

START_TEST(test_https)
{
    static const httpd_file_t files[] = { { "tls.py", TLS_APP }, { NULL, NULL } };
    httpd_opts_t o = {
        .files = files,
        .config = "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n"
                  "SSLEngine on\n"
                  "SSLCertificateFile @APP@/cert.pem\n"
                  "SSLCertificateKeyFile @APP@/key.pem\n"
                  "<Location /tls>\n  PyReloadWSGI @APP@/tls.py\n</Location>\n",
    };
    httpd_t *h = httpd_new(&o);
    char *key, *cert, *cmd, url[96], body[256] = "";
    CURL *c;
    CURLcode rc;
    long status = 0;

    ck_assert_ptr_nonnull(h);
    key = httpd_path(h, "key.pem");
    cert = httpd_path(h, "cert.pem");
    ck_assert_int_gt(asprintf(&cmd,
                              "timeout 60 openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
                              "-subj /CN=127.0.0.1 -keyout '%s' -out '%s' >/dev/null 2>&1",
                              key, cert), 0);
    ck_assert_msg(system(cmd) == 0, "openssl could not make a certificate: %s", cmd);
    free(cmd);
    free(key);
    free(cert);
    if (httpd_start(h) != 0) {
        httpd_dump_log_tail(h, 40);
        ck_abort_msg("httpd with mod_ssl did not start:\n%s", h->startup_output);
    }
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/tls/x", h->port);
    c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L); /* the test's own certificate */
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tls_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    ck_assert_msg(rc == CURLE_OK && status == 200, "%s: curl %d (%s), status %ld", url, (int)rc,
                  curl_easy_strerror(rc), status);
    ck_assert_msg(!strcmp(body, "on https str"), "%s: body '%s', want 'on https str'", url, body);
    httpd_free(h);
}
END_TEST

/* ------------------------------------------------------------------ */

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

Suite *
suite_wsgi(void)
{
    Suite *s = suite_create("wsgi");
    TCase *tc = httpd_tcase("wsgi", 180, setup, teardown);
    TCase *rc = httpd_tcase("wsgi_reload", 60, rsetup, rteardown);

    tcase_add_loop_test(tc, test_environ, 0, N(ENV));
    tcase_add_loop_test(tc, test_input, 0, NINPUT * 4);
    tcase_add_test(tc, test_environ_remote_port_exact);
    tcase_add_test(tc, test_environ_not_shared);
    tcase_add_test(tc, test_input_10mib);
    tcase_add_loop_test(tc, test_input_10mib_lines, 0, 2 * N(BIG_OPS));
    tcase_add_loop_test(tc, test_input_slow_body, 0, 2 * N(SLOW_OPS));
    tcase_add_test(tc, test_input_odd_sizes);
    tcase_add_test(tc, test_keepalive_partial_body);
    tcase_add_test(tc, test_keepalive_after_stream);
    tcase_add_test(tc, test_pipelined);
    tcase_add_test(tc, test_errors_refuses_bytes);
    tcase_add_loop_test(tc, test_app_status_kept, 0, N(STATUS));
    tcase_add_test(tc, test_kept_objects_raise);
    tcase_add_test(tc, test_app_class_and_instance);
    tcase_add_test(tc, test_threads_use_request_objects_as_it_ends);
    tcase_add_loop_test(tc, test_file_wrapper_edges, 0, N(FW_EDGE));
    tcase_add_test(tc, test_file_wrapper_head);
    tcase_add_test(tc, test_concurrent_clients);
    tcase_add_test(tc, test_memory_per_request);
    tcase_add_test(tc, test_input_limit_413);
    tcase_add_test(tc, test_input_expect_continue);
    tcase_add_test(tc, test_errors_stream);
    tcase_add_loop_test(tc, test_start_response_bad, 0, NSR_BAD);
    tcase_add_loop_test(tc, test_start_response_bad_raises_in_app, 0, NSR_BAD);
    tcase_add_loop_test(tc, test_start_response_bad_debug_body, 0, N(SR_DEBUG));
    tcase_add_test(tc, test_start_response_good_forms);
    tcase_add_test(tc, test_exc_info_before_output_replaces);
    tcase_add_loop_test(tc, test_exc_info_after_output_reraises, 0, N(EXC_AFTER));
    tcase_add_loop_test(tc, test_write_callable, 0, N(WRITES));
    tcase_add_test(tc, test_write_str_is_error);
    tcase_add_loop_test(tc, test_response_kinds, 0, N(RESP));
    tcase_add_test(tc, test_response_big_tuple);
    tcase_add_loop_test(tc, test_close_once, 0, N(CLOSE));
    tcase_add_test(tc, test_close_once_client_gone);
    tcase_add_test(tc, test_head_no_body);
    tcase_add_loop_test(tc, test_content_length_honoured, 0, N(CL));
    tcase_add_loop_test(tc, test_content_length_stops_iteration, 0, N(CL_STOP));
    tcase_add_test(tc, test_head_keeps_content_length);
    tcase_add_loop_test(tc, test_blocks_not_delayed, 0, N(SLOW));
    tcase_add_test(tc, test_empty_blocks_are_not_output);
    tcase_add_loop_test(tc, test_blocked_io_releases_gil, 0, 2);
    tcase_add_test(tc, test_stream_200mib_bounded_rss);
    tcase_add_loop_test(tc, test_file_wrapper, 0, N(FW));
    tcase_add_loop_test(tc, test_wrong_response, 0, N(WRONG));
    tcase_add_loop_test(tc, test_wrong_response_debug_body, 0, N(WRONG_DEBUG));
    tcase_add_loop_test(tc, test_wsgiref_validate, 0, N(VALIDATE));
    tcase_add_test(tc, test_wsgiref_validate_chunked);
    suite_add_tcase(s, tc);

    tcase_add_test(rc, test_reload_edit);
    tcase_add_test(rc, test_reload_clone_state);
    tcase_add_test(rc, test_reload_dependency);
    tcase_add_test(rc, test_reload_broken_keeps_last_good);
    tcase_add_test(rc, test_reload_stream_pinned_until_close);
    tcase_add_test(rc, test_reload_environ_generation);
    tcase_add_test(rc, test_reload_callable_removed);
    tcase_add_test(rc, test_multi_two_processes);
    tcase_add_test(rc, test_location_root);
    tcase_add_test(rc, test_reload_check_off);
    suite_add_tcase(s, rc);
    tc = httpd_tcase("wsgi_tls", 60, NULL, NULL);
    tcase_add_test(tc, test_https);
    suite_add_tcase(s, tc);
    return s;
}
