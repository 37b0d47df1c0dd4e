/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_status.c: the status page (SetHandler pyreload-status) against real
 * apache2 servers, under each MPM: the JSON fields for a handler, a WSGI
 * application and an imported module; generation, loads and sha256 after
 * an edit; last_error after a broken edit and cleared after the fix;
 * in_flight and retired_alive around a slow request on an old generation;
 * every child listed, and seen from another child; a child's slot gone once
 * it exits (or dies), and a graceful restart that starts clean; the
 * Prometheus text parsed back; the HTML page and mod_status's section.
 *
 * The JSON is read with a strict parser (it_json.c), the Prometheus text
 * with the small one below; hashes are checked against sha256sum(1).
 */
#include "fixture.h"
#include "it_json.h"
#include "it_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static httpd_t *srv;
static char *flags; /* the slow handler's and the test's meeting place */

/* A handler that says which process ran it. */
/* ?hold: the request takes 0.3 s, so that parallel ones fill a process. */
#define PID_PY                                                                                     \
    "import os, time, pyreload\ndef handler(req):\n"                                              \
    "    if req.args == 'hold':\n        time.sleep(0.3)\n"                                        \
    "    req.write(str(os.getpid()))\n    return pyreload.OK\n"
static const httpd_file_t pid_files[] = { { "pid.py", PID_PY }, { NULL, NULL } };

#define STATUS_CONF "<Location /pyreload-status>\n  SetHandler pyreload-status\n</Location>\n"
/* ExtendedStatus: httpd counts each process's requests (status "requests"). */
#define PID_CONF "ExtendedStatus On\n" STATUS_CONF "<Location /pid>\n  PyReloadHandler @APP@/pid.py\n</Location>\n"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* GET the status page as JSON, strictly parsed. */
static json_t *
status_json(httpd_t *h)
{
    http_resp_t *r = http_get(h, "/pyreload-status?json");
    char err[200];
    json_t *j;

    http_assert_status(r, 200);
    ck_assert_str_eq(r->content_type, "application/json");
    j = json_parse(r->body, err, sizeof(err));
    ck_assert_msg(j != NULL, "status JSON: %s:\n%.3000s", err, r->body);
    http_free(r);
    return j;
}

/* The entry of path (app-relative) in process pid (0: the first process
 * that has it), or NULL. */
static const json_t *
entry_of(const json_t *st, pid_t pid, const char *name)
{
    char *path = httpd_path(srv, name);
    const json_t *procs = json_get(st, "processes"), *found = NULL;
    int i, j;

    for (i = 0; !found && json_at(procs, i); i++) {
        const json_t *p = json_at(procs, i), *es = json_get(p, "entries");

        if (pid && (pid_t)json_num(p, "pid") != pid) {
            continue;
        }
        for (j = 0; !found && json_at(es, j); j++) {
            const char *ep = json_str(json_at(es, j), "path");

            if (ep && strcmp(ep, path) == 0) {
                found = json_at(es, j);
            }
        }
    }
    free(path);
    return found;
}

static const json_t *
need_entry(const json_t *st, pid_t pid, const char *name)
{
    const json_t *e = entry_of(st, pid, name);

    ck_assert_msg(e != NULL, "no entry for %s (pid %ld) on the status page", name, (long)pid);
    return e;
}

/* sha256sum of an app file, hex. */
static void
sha256_of(const char *name, char hex[65])
{
    char *path = httpd_path(srv, name), cmd[600];
    FILE *f;

    snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%64s", hex), 1);
    pclose(f);
    free(path);
}

/* An ISO-8601 UTC time as the page writes it: 2026-12-02T03:40:00.123Z */
static int
is_iso(const char *s)
{
    int y, mo, d, h, mi, sec, ms;
    char z;

    return s && strlen(s) == 24 &&
           sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &d, &h, &mi, &sec, &ms, &z) == 8 &&
           z == 'Z' && y >= 2020 && mo >= 1 && mo <= 12;
}

static int
has_key(const json_t *o, const char *k)
{
    return json_get(o, k) != NULL;
}

/* Every TCase's setup: one server at a time, in srv. */
static void
launch(const httpd_opts_t *o)
{
    srv = httpd_launch(o);
    ck_assert_msg(srv != NULL, "httpd did not start");
}

/* Every TCase's teardown. */
static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
    free(flags);
    flags = NULL;
}

/* ------------------------------------------------------------------ */
/* One process: fields, edits, errors, metrics, pages                  */

static const char h_src[] = "import pyreload\nimport helper\nV = 'v1'\n"
                            "def handler(req):\n"
                            "    req.write('%s %s' % (V, helper.X))\n"
                            "    return pyreload.OK\n";

/* A file name with a double quote, a backslash and a letter that is not
 * ASCII.  (Not a byte that is not UTF-8: such a handler file does not load
 * at all today, UnicodeDecodeError in the engine.) */
#define ODD "q\"u\\\xc3\xa9.py"

static void
setup(void)
{
    static const httpd_file_t files[] = {
        { "h.py", h_src },
        { "helper.py", "X = 'x1'\n" },
        { "w.py", "def application(environ, start_response):\n"
                  "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                  "    return [b'wsgi']\n" },
        { ODD, "import pyreload\ndef handler(req):\n    req.write('odd')\n"
               "    return pyreload.OK\n" },
        { NULL, NULL }
    };
    httpd_opts_t o = { .files = files,
                       .config = "LoadModule status_module /usr/lib/apache2/modules/mod_status.so\n"
                                 "<Location /server-status>\n  SetHandler server-status\n"
                                 "</Location>\n"
                                 STATUS_CONF
                                 "<Location /h>\n  PyReloadHandler @APP@/h.py\n</Location>\n"
                                 "<Location /w>\n  PyReloadWSGI @APP@/w.py\n</Location>\n"
                                 "<Location /odd>\n  PyReloadHandler \"@APP@/q\\\"u\\\xc3\xa9.py\"\n"
                                 "</Location>\n" };

    launch(&o);
}

START_TEST(test_json_fields)
{
    const json_t *server, *procs, *p, *h, *m, *w, *files, *imports;
    char hex[65], *helper = httpd_path(srv, "helper.py");
    json_t *st;
    int i, found = 0;

    it_expect(srv, "/h", "v1 x1");
    it_expect(srv, "/w", "wsgi");
    st = status_json(srv);
    ck_assert_str_eq(json_str(st, "version"), "0.1.0");
    ck_assert_msg(is_iso(json_str(st, "generated_at")), "generated_at %s",
                  json_str(st, "generated_at"));
    server = json_get(st, "server");
    ck_assert_int_eq((long)json_num(server, "pid"), (long)srv->pid);
    ck_assert_str_eq(json_str(server, "mpm"), httpd_mpm(srv));
    procs = json_get(st, "processes");
    ck_assert_msg(procs && procs->type == JSON_ARR && procs->n >= 1, "processes");
    p = json_at(procs, 0);
    /* mod_status is loaded: httpd counts requests (ExtendedStatus), once
     * logged (after their responses: the children case waits for them). */
    ck_assert_msg(json_num(p, "pid") > 0 && is_iso(json_str(p, "started_at")) &&
                      json_num(p, "requests") >= 0 && json_get(p, "entries"),
                  "process fields");

    h = need_entry(st, 0, "h.py");
    ck_assert_str_eq(json_str(h, "kind"), "handler");
    ck_assert_ptr_nonnull(json_str(h, "name"));
    ck_assert_msg(json_num(h, "generation") >= 1, "generation");
    ck_assert_msg(json_num(h, "loads") == json_num(h, "generation"), "loads");
    ck_assert_msg(json_num(h, "failures") == 0, "failures");
    ck_assert_msg(json_num(h, "last_load_ms") >= 0, "last_load_ms");
    ck_assert_msg(is_iso(json_str(h, "loaded_at")), "loaded_at");
    sha256_of("h.py", hex);
    ck_assert_str_eq(json_str(h, "sha256"), hex);
    imports = json_get(h, "imports");
    ck_assert_msg(imports && imports->type == JSON_ARR, "imports");
    for (i = 0; json_at(imports, i); i++) {
        found |= json_at(imports, i)->type == JSON_STR && !strcmp(json_at(imports, i)->str, helper);
    }
    ck_assert_msg(found, "h.py's imports lack %s", helper);
    ck_assert_msg(json_num(h, "in_flight") == 0 && json_num(h, "retired_alive") == 0, "in flight");
    ck_assert_msg(json_get(h, "last_error") && json_get(h, "last_error")->type == JSON_NULL,
                  "last_error");

    m = need_entry(st, 0, "helper.py");
    ck_assert_str_eq(json_str(m, "kind"), "module");
    ck_assert_str_eq(json_str(m, "name"), "helper");
    sha256_of("helper.py", hex);
    ck_assert_str_eq(json_str(m, "sha256"), hex);

    w = need_entry(st, 0, "w.py");
    ck_assert_str_eq(json_str(w, "kind"), "wsgi");
    ck_assert_msg(has_key(w, "generation") && has_key(w, "loads") && has_key(w, "failures") &&
                      has_key(w, "last_load_ms") && has_key(w, "loaded_at") &&
                      has_key(w, "sha256") && has_key(w, "imports") && has_key(w, "in_flight") &&
                      has_key(w, "retired_alive") && has_key(w, "last_error"),
                  "a key is missing");

    files = json_get(st, "files");
    found = 0;
    sha256_of("h.py", hex);
    for (i = 0; json_at(files, i); i++) {
        const json_t *f = json_at(files, i);
        char *hp = httpd_path(srv, "h.py");

        if (!strcmp(json_str(f, "path"), hp)) {
            found = 1;
            ck_assert_str_eq(json_str(f, "sha256"), hex);
            ck_assert_msg(json_get(f, "exists")->type == JSON_BOOL && json_get(f, "exists")->b,
                          "exists");
        }
        free(hp);
    }
    ck_assert_msg(found, "files lacks h.py");
    json_free(st);
    free(helper);
}
END_TEST

START_TEST(test_edit_changes_generation_loads_sha)
{
    char before[65], after[65], text[300];
    json_t *st;
    const json_t *h;
    double gen, loads, mgen;

    it_expect(srv, "/h", "v1 x1");
    st = status_json(srv);
    h = need_entry(st, 0, "h.py");
    gen = json_num(h, "generation");
    loads = json_num(h, "loads");
    snprintf(before, sizeof(before), "%s", json_str(h, "sha256"));
    mgen = json_num(need_entry(st, 0, "helper.py"), "generation");
    json_free(st);

    snprintf(text, sizeof(text), "%s", h_src);
    *strstr(text, "v1") = 'e'; /* V = 'e1' */
    it_put(srv, "h.py", text);
    it_expect(srv, "/h", "e1 x1");
    st = status_json(srv);
    h = need_entry(st, 0, "h.py");
    ck_assert_msg(json_num(h, "generation") == gen + 1, "generation %g after %g",
                  json_num(h, "generation"), gen);
    ck_assert_msg(json_num(h, "loads") == loads + 1, "loads");
    sha256_of("h.py", after);
    ck_assert_str_eq(json_str(h, "sha256"), after);
    ck_assert_str_ne(before, after);
    /* Only the handler changed: its import kept its generation. */
    ck_assert_msg(json_num(need_entry(st, 0, "helper.py"), "generation") == mgen, "helper");
    json_free(st);

    /* The import changed: both are rebuilt. */
    it_put(srv, "helper.py", "X = 'x2'\n");
    it_expect(srv, "/h", "e1 x2");
    st = status_json(srv);
    ck_assert_msg(json_num(need_entry(st, 0, "helper.py"), "generation") == mgen + 1, "helper");
    ck_assert_msg(json_num(need_entry(st, 0, "h.py"), "generation") == gen + 2, "h.py");
    sha256_of("helper.py", after);
    ck_assert_str_eq(json_str(need_entry(st, 0, "helper.py"), "sha256"), after);
    json_free(st);
    it_put(srv, "helper.py", "X = 'x1'\n");
    it_put(srv, "h.py", h_src);
    it_expect(srv, "/h", "v1 x1");
}
END_TEST

START_TEST(test_last_error_set_then_cleared)
{
    const json_t *h, *err, *f;
    char disk[65], loaded[65], *hp = httpd_path(srv, "h.py");
    json_t *st;
    double failures;
    int i;

    it_expect(srv, "/h", "v1 x1");
    st = status_json(srv);
    failures = json_num(need_entry(st, 0, "h.py"), "failures");
    json_free(st);

    it_put(srv, "h.py", "import pyreload\ndef handler(req:\n    return pyreload.OK\n");
    it_expect(srv, "/h", "v1 x1"); /* the last good code serves */
    st = status_json(srv);
    h = need_entry(st, 0, "h.py");
    ck_assert_msg(json_num(h, "failures") == failures + 1, "failures");
    err = json_get(h, "last_error");
    ck_assert_msg(err && err->type == JSON_OBJ, "last_error is not an object");
    ck_assert_msg(is_iso(json_str(err, "at")), "at");
    ck_assert_msg(strstr(json_str(err, "message"), "SyntaxError") &&
                      strstr(json_str(err, "message"), "(h.py, line 2)"),
                  "message '%s'", json_str(err, "message"));
    ck_assert_msg(strstr(json_str(err, "traceback"), "SyntaxError") &&
                      strstr(json_str(err, "traceback"), hp),
                  "traceback '%s'", json_str(err, "traceback"));
    /* On disk is not what is loaded: files says the one, the entry the other. */
    sha256_of("h.py", disk);
    snprintf(loaded, sizeof(loaded), "%s", json_str(h, "sha256"));
    ck_assert_str_ne(disk, loaded);
    for (i = 0; (f = json_at(json_get(st, "files"), i)); i++) {
        if (!strcmp(json_str(f, "path"), hp)) {
            ck_assert_str_eq(json_str(f, "sha256"), disk);
        }
    }
    json_free(st);

    it_put(srv, "h.py", h_src);
    it_expect(srv, "/h", "v1 x1");
    st = status_json(srv);
    h = need_entry(st, 0, "h.py");
    ck_assert_msg(json_get(h, "last_error")->type == JSON_NULL, "last_error not cleared");
    ck_assert_msg(json_num(h, "failures") == failures + 1, "failures");
    json_free(st);
    free(hp);
}
END_TEST

/* ---- Prometheus text: a small strict parser ---- */

typedef struct sample {
    char name[64];
    char path[512];
    long pid;
    double value;
} sample_t;

/* Parse the exposition into samples (every one preceded by its family's
 * HELP and TYPE lines); the number of samples, or -1 with err set. */
static int
prom_parse(char *text, sample_t *out, int max, char *err, size_t errlen)
{
    char typed[16][64];
    int ntyped = 0, n = 0, i;
    char *line, *save = NULL;

    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[64], *s, *end;
        int known = 0;

        if (!strncmp(line, "# HELP ", 7)) {
            continue;
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            char type[32];

            if (sscanf(line + 7, "%63s %31s", name, type) != 2 ||
                (strcmp(type, "gauge") && strcmp(type, "counter"))) {
                snprintf(err, errlen, "bad TYPE line: %s", line);
                return -1;
            }
            if (ntyped < 16) {
                snprintf(typed[ntyped++], 64, "%s", name);
            }
            continue;
        }
        s = line + strspn(line, "abcdefghijklmnopqrstuvwxyz_:0123456789");
        if (s == line || *s != '{' || s - line >= 64 || n >= max) {
            snprintf(err, errlen, "bad sample line: %s", line);
            return -1;
        }
        memset(&out[n], 0, sizeof(out[n]));
        memcpy(out[n].name, line, (size_t)(s - line));
        for (i = 0; i < ntyped; i++) {
            known |= !strcmp(typed[i], out[n].name);
        }
        if (!known) {
            snprintf(err, errlen, "sample before its TYPE: %s", line);
            return -1;
        }
        s++;
        while (*s != '}') {
            char label[32], value[512];
            size_t ln = strspn(s, "abcdefghijklmnopqrstuvwxyz_"), vn = 0;

            if (ln == 0 || ln >= sizeof(label) || s[ln] != '=' || s[ln + 1] != '"') {
                snprintf(err, errlen, "bad label in: %s", line);
                return -1;
            }
            memcpy(label, s, ln);
            label[ln] = '\0';
            for (s += ln + 2; *s != '"'; s++) {
                if (!*s || vn + 1 >= sizeof(value)) {
                    snprintf(err, errlen, "unterminated label value: %s", line);
                    return -1;
                }
                if (*s == '\\') {
                    s++;
                    if (*s != '\\' && *s != '"' && *s != 'n') {
                        snprintf(err, errlen, "bad escape: %s", line);
                        return -1;
                    }
                    value[vn++] = *s == 'n' ? '\n' : *s;
                }
                else {
                    value[vn++] = *s;
                }
            }
            value[vn] = '\0';
            s++;
            if (!strcmp(label, "path")) {
                snprintf(out[n].path, sizeof(out[n].path), "%s", value);
            }
            else if (!strcmp(label, "pid")) {
                out[n].pid = strtol(value, NULL, 10);
            }
            if (*s == ',') {
                s++;
            }
            else if (*s != '}') {
                snprintf(err, errlen, "bad label list: %s", line);
                return -1;
            }
        }
        if (s[1] != ' ') {
            snprintf(err, errlen, "no value: %s", line);
            return -1;
        }
        out[n].value = strtod(s + 2, &end);
        if (end == s + 2 || *end) {
            snprintf(err, errlen, "bad value: %s", line);
            return -1;
        }
        n++;
    }
    return n;
}

START_TEST(test_metrics_parse_back)
{
    static const char *const names[] = { "pyreload_generation",
                                          "pyreload_loads_total",
                                          "pyreload_load_failures_total",
                                          "pyreload_last_load_seconds",
                                          "pyreload_in_flight",
                                          "pyreload_retired_generations" };
    sample_t samples[200];
    char err[300], *hp = httpd_path(srv, "h.py");
    http_resp_t *r;
    json_t *st;
    const json_t *h;
    int n, i, k, seen;

    it_expect(srv, "/h", "v1 x1");
    st = status_json(srv);
    h = need_entry(st, 0, "h.py");
    r = http_get(srv, "/pyreload-status?metrics");
    http_assert_status(r, 200);
    ck_assert_msg(!strncmp(r->content_type, "text/plain; version=0.0.4", 25), "type %s",
                  r->content_type);
    for (k = 0; k < 6; k++) {
        char help[100];

        snprintf(help, sizeof(help), "# HELP %s ", names[k]);
        ck_assert_msg(strstr(r->body, help), "no HELP for %s", names[k]);
    }
    n = prom_parse(r->body, samples, 200, err, sizeof(err));
    ck_assert_msg(n > 0, "metrics: %s", err);
    for (k = 0; k < 6; k++) {
        for (seen = 0, i = 0; i < n; i++) {
            if (!strcmp(samples[i].name, names[k]) && !strcmp(samples[i].path, hp) &&
                samples[i].pid > 0) {
                seen++;
                if (k == 0) {
                    ck_assert_msg(samples[i].value == json_num(h, "generation"), "generation");
                }
                if (k == 1) {
                    ck_assert_msg(samples[i].value == json_num(h, "loads"), "loads");
                }
            }
        }
        ck_assert_msg(seen >= 1, "no %s sample for h.py", names[k]);
    }
    http_free(r);
    json_free(st);
    free(hp);
}
END_TEST

/* A path comes back whole: JSON and Prometheus with its quote and
 * backslash escaped, HTML escaped. */
START_TEST(test_odd_path_escaped)
{
    sample_t samples[200];
    char err[300], *odd = httpd_path(srv, ODD);
    const char *want;
    http_resp_t *r;
    json_t *st;
    int n, i, seen = 0;

    it_expect(srv, "/odd", "odd");
    st = status_json(srv);
    need_entry(st, 0, ODD);
    json_free(st);

    r = http_get(srv, "/pyreload-status?json");
    http_assert_body_has(r, "q\\\"u\\\\\xc3\xa9.py");
    http_free(r);

    r = http_get(srv, "/pyreload-status");
    http_assert_body_has(r, "q&quot;u");
    http_free(r);

    r = http_get(srv, "/pyreload-status?metrics");
    n = prom_parse(r->body, samples, 200, err, sizeof(err));
    ck_assert_msg(n > 0, "metrics: %s", err);
    want = odd;
    for (i = 0; i < n; i++) {
        seen += !strcmp(samples[i].path, want);
    }
    ck_assert_int_eq(seen, 6);
    http_free(r);
    free(odd);
}
END_TEST

START_TEST(test_html_and_server_status)
{
    char *hp = httpd_path(srv, "h.py");
    http_resp_t *r;

    it_put(srv, "h.py", "def handler(req:\n");
    it_expect(srv, "/h", "v1 x1");
    r = http_get(srv, "/pyreload-status");
    http_assert_status(r, 200);
    ck_assert_msg(!strncmp(r->content_type, "text/html", 9), "type %s", r->content_type);
    http_assert_body_has(r, hp);
    http_assert_body_has(r, "<details");
    http_assert_body_has(r, "SyntaxError");
    http_assert_body_lacks(r, "<script");
    http_free(r);
    it_put(srv, "h.py", h_src);
    it_expect(srv, "/h", "v1 x1");

    r = http_get(srv, "/server-status");
    http_assert_status(r, 200);
    http_assert_body_has(r, "mod_pyreload");
    http_free(r);
    r = http_get(srv, "/server-status?auto");
    http_assert_status(r, 200);
    http_assert_body_has(r, "PyReloadProcesses: ");
    http_assert_body_has(r, "PyReloadEntries: ");
    http_free(r);
    free(hp);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A slow request on a generation that is replaced meanwhile           */

static const char slow_src[] =
    "import os, time, pyreload\n"
    "V = '%s'\n"
    "def handler(req):\n"
    "    if req.args == 'sleep':\n"
    "        open('@DIR@/flags/started', 'w').close()\n"
    "        t = time.time()\n"
    "        while not os.path.exists('@DIR@/flags/release') and time.time() - t < 10:\n"
    "            time.sleep(0.01)\n"
    "    req.write('%%s %%d' %% (V, os.getpid()))\n"
    "    return pyreload.OK\n";

static void
slow_put(const char *v)
{
    char src[1024], *sub;

    snprintf(src, sizeof(src), slow_src, v);
    sub = httpd_subst(srv, src);
    it_put(srv, "slow.py", sub);
    free(sub);
}

/* Under prefork a process serves one request at a time: the request that
 * loads the new code runs in another process (procs = 2), where nothing
 * runs on the old generation; the status page then shows the slow
 * request's process still on the old one. */
static void
isetup(void)
{
    httpd_opts_t o = { .config = STATUS_CONF "<Location /slow>\n  PyReloadHandler @APP@/slow.py\n"
                                             "</Location>\n",
                       .procs = 2 };

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    flags = httpd_subst(srv, "@DIR@/flags");
    /* Where the handler (www-data) and the test meet. */
    ck_assert_int_eq(mkdir(flags, 0755), 0);
    ck_assert_int_eq(chmod(flags, 01777), 0);
    slow_put("old");
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

typedef struct {
    http_client_t *client;
    http_resp_t *resp;
} bg_t;

static void *
bg_slow(void *arg)
{
    bg_t *b = arg;

    b->resp = http_client_get(b->client, "/slow?sleep");
    return NULL;
}

static const json_t *
slow_entry(const json_t *st, pid_t pid)
{
    return entry_of(st, pid, "slow.py");
}

START_TEST(test_in_flight_on_retired_generation)
{
    bg_t b = { http_client_new(srv), NULL };
    char started[300], release[300];
    pid_t slow_pid;
    pthread_t t;
    http_resp_t *r;
    const json_t *e;
    json_t *st;
    int i, prefork = !strcmp(httpd_mpm(srv), "prefork");
    FILE *f;

    snprintf(started, sizeof(started), "%s/started", flags);
    snprintf(release, sizeof(release), "%s/release", flags);

    r = http_client_get(b.client, "/slow");
    http_assert_status(r, 200);
    ck_assert_msg(!strncmp(r->body, "old ", 4), "body %s", r->body);
    slow_pid = (pid_t)strtol(r->body + 4, NULL, 10);
    http_free(r);
    pthread_create(&t, NULL, bg_slow, &b);
    for (i = 0; i < 500 && access(started, F_OK) != 0; i++) {
        usleep(10 * 1000);
    }
    ck_assert_msg(access(started, F_OK) == 0, "the slow request did not start");
    slow_put("new");
    r = http_get(srv, "/slow");
    http_assert_status(r, 200);
    ck_assert_msg(!strncmp(r->body, "new ", 4), "body %s", r->body);
    http_free(r);

    st = status_json(srv);
    e = slow_entry(st, slow_pid);
    ck_assert_msg(e != NULL, "no slow.py entry for process %ld", (long)slow_pid);
    if (!prefork) {
        /* The slow request pins generation 1, now retired. */
        ck_assert_msg(json_num(e, "generation") == 2, "generation %g", json_num(e, "generation"));
        ck_assert_msg(json_num(e, "in_flight") == 1, "in_flight %g", json_num(e, "in_flight"));
        ck_assert_msg(json_num(e, "retired_alive") == 1, "retired_alive %g",
                      json_num(e, "retired_alive"));
    }
    else {
        /* Its process has not looked since: still on generation 1. */
        ck_assert_msg(json_num(e, "generation") == 1, "generation %g", json_num(e, "generation"));
        ck_assert_msg(json_num(e, "retired_alive") == 0, "retired_alive");
    }
    json_free(st);

    ck_assert_ptr_nonnull(f = fopen(release, "w"));
    fclose(f);
    pthread_join(t, NULL);
    http_assert_status(b.resp, 200);
    ck_assert_msg(!strncmp(b.resp->body, "old ", 4), "slow body %s", b.resp->body);
    http_free(b.resp);
    if (prefork) {
        /* Its process loads the new code on its next request. */
        r = http_client_get(b.client, "/slow");
        ck_assert_msg(!strncmp(r->body, "new ", 4), "body %s", r->body);
        http_free(r);
    }
    st = status_json(srv);
    e = slow_entry(st, slow_pid);
    ck_assert_msg(e != NULL, "no slow.py entry for process %ld", (long)slow_pid);
    ck_assert_msg(json_num(e, "generation") == 2, "generation %g", json_num(e, "generation"));
    ck_assert_msg(json_num(e, "in_flight") == 0, "in_flight %g", json_num(e, "in_flight"));
    ck_assert_msg(json_num(e, "retired_alive") == 0, "retired_alive %g",
                  json_num(e, "retired_alive"));
    json_free(st);
    http_client_free(b.client);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Three processes                                                     */

#define NPROCS 3

static void
csetup(void)
{
    httpd_opts_t o = { .files = pid_files,
                       .config = PID_CONF,
                       .children = NPROCS,
                       .threads = 4 };

    launch(&o);
}

static int
pid_in(pid_t p, const pid_t *set, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        if (set[i] == p) {
            return 1;
        }
    }
    return 0;
}

#define HOLDERS (4 * NPROCS + 1)

typedef struct {
    http_client_t *client;
    pid_t pid;
} holder_t;

static void *
hold(void *arg)
{
    holder_t *h = arg;
    http_resp_t *r = http_client_get(h->client, "/pid?hold");

    h->pid = r && r->status == 200 ? (pid_t)strtol(r->body, NULL, 10) : 0;
    http_free(r);
    return NULL;
}

static void
seen_add(pid_t p, pid_t *seen, int *n)
{
    if (p > 0 && !pid_in(p, seen, *n)) {
        seen[(*n)++] = p;
    }
}

/* Requests until every child has served /pid; the children, in kids.  The
 * kernel hands a new connection to whichever process waits, and a loaded
 * machine can favour one for thousands of requests: then more requests
 * held at once than one process has threads (4 each) must spread. */
static int
every_child_serves(pid_t *kids)
{
    pid_t seen[16];
    int n = 0, nk, i, j;

    for (i = 0; i < 50 && (nk = httpd_children(srv, kids, 16)) != NPROCS; i++) {
        usleep(100 * 1000);
    }
    ck_assert_int_eq(nk, NPROCS);
    for (i = 0; i < 200 && n < nk; i++) {
        http_resp_t *r = http_get(srv, "/pid");

        http_assert_status(r, 200);
        seen_add((pid_t)strtol(r->body, NULL, 10), seen, &n);
        http_free(r);
    }
    /* A process just started (a killed one's replacement) may take seconds
     * to start Python under a sanitizer before it accepts: up to 20 s. */
    for (i = 0; i < 60 && n < nk; i++) {
        holder_t h[HOLDERS];
        pthread_t t[HOLDERS];

        for (j = 0; j < HOLDERS; j++) {
            h[j].client = http_client_new(srv);
            pthread_create(&t[j], NULL, hold, &h[j]);
        }
        for (j = 0; j < HOLDERS; j++) {
            pthread_join(t[j], NULL);
            http_client_free(h[j].client);
            seen_add(h[j].pid, seen, &n);
        }
    }
    ck_assert_msg(n == nk, "%d of %d children served (200 requests, then %d rounds of %d at once)",
                  n, nk, i, HOLDERS);
    return nk;
}

/* The pids the status page lists, and which of them served it. */
static int
listed(json_t *st, pid_t *out, pid_t *served_by, int with_entry)
{
    const json_t *procs = json_get(st, "processes");
    int i, n = 0;

    *served_by = (pid_t)json_num(json_get(st, "server"), "served_by");
    for (i = 0; json_at(procs, i); i++) {
        pid_t p = (pid_t)json_num(json_at(procs, i), "pid");

        if (!with_entry || entry_of(st, p, "pid.py")) {
            out[n++] = p;
        }
    }
    return n;
}

START_TEST(test_every_child_listed_from_any_child)
{
    pid_t kids[16], got[16], by;
    int nk = every_child_serves(kids), i, n, others = 0;
    json_t *st;

    for (i = 0; i < 6; i++) {
        st = status_json(srv);
        n = listed(st, got, &by, 1);
        ck_assert_msg(n == nk, "%d processes with pid.py listed, %d children", n, nk);
        for (int k = 0; k < n; k++) {
            ck_assert_msg(pid_in(got[k], kids, nk), "pid %ld is not a child", (long)got[k]);
        }
        ck_assert_msg(pid_in(by, kids, nk), "served by %ld", (long)by);
        /* One process says it answered: the one served_by names. */
        for (int k = 0, answering = 0; json_at(json_get(st, "processes"), k); k++) {
            const json_t *p = json_at(json_get(st, "processes"), k), *a = json_get(p, "answering");

            ck_assert_msg(a && a->type == JSON_BOOL, "process %d: no answering", k);
            ck_assert_msg(!a->b || (pid_t)json_num(p, "pid") == by, "%ld answering, served by %ld",
                          (long)json_num(p, "pid"), (long)by);
            answering += a->b;
            ck_assert_msg(answering <= 1, "two processes answering");
        }

        /* The entries of a process other than the one that answered. */
        others += n - 1;
        json_free(st);
    }
    ck_assert_msg(others >= 6 * (nk - 1), "entries of other children");
    /* httpd counts a request once it is logged, after its response. */
    for (i = 0; i < 100; i++) {
        int counted = 0;

        st = status_json(srv);
        for (int k = 0; json_at(json_get(st, "processes"), k); k++) {
            counted += json_num(json_at(json_get(st, "processes"), k), "requests") >= 1;
        }
        json_free(st);
        if (counted == nk) {
            break;
        }
        usleep(20 * 1000);
    }
    ck_assert_msg(i < 100, "a process that served counts no request");
}
END_TEST

/* Wait until pid has gone and NPROCS children run again. */
static void
replaced(pid_t gone, pid_t *kids)
{
    int i, nk = 0;

    for (i = 0; i < 100; i++) {
        nk = httpd_children(srv, kids, 16);
        if (!httpd_pid_alive(gone) && nk == NPROCS && !pid_in(gone, kids, nk)) {
            return;
        }
        usleep(100 * 1000);
    }
    ck_abort_msg("process %ld was not replaced (%d children)", (long)gone, nk);
}

/* A child that dies (SIGKILL: no cleanup runs) leaves its slot behind:
 * it is no longer listed, and its slot counts as stale. */
START_TEST(test_killed_child_not_listed)
{
    pid_t kids[16], got[16], by, victim;
    int n, k, nk;
    json_t *st;

    nk = every_child_serves(kids);
    victim = kids[nk - 1];
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    replaced(victim, kids);
    st = status_json(srv);
    n = listed(st, got, &by, 0);
    for (k = 0; k < n; k++) {
        ck_assert_msg(got[k] != victim, "process %ld is listed after it died", (long)victim);
        ck_assert_msg(pid_in(got[k], kids, NPROCS), "pid %ld is not a child", (long)got[k]);
    }
    ck_assert_msg(json_num(json_get(st, "server"), "slots_stale") == 1, "slots_stale %g",
                  json_num(json_get(st, "server"), "slots_stale"));
    json_free(st);
    /* The new process has a slot too. */
    every_child_serves(kids);
    st = status_json(srv);
    ck_assert_int_eq(listed(st, got, &by, 1), NPROCS);
    json_free(st);
}
END_TEST

START_TEST(test_graceful_restart_starts_clean)
{
    pid_t kids[16], after[16], got[16], by;
    int nk = every_child_serves(kids), na = 0, i, k, n;
    json_t *st;

    ck_assert_int_eq(httpd_signal(srv, SIGUSR1), 0);
    for (i = 0; i < 100; i++) {
        int old = 0;

        na = httpd_children(srv, after, 16);
        for (k = 0; k < na; k++) {
            old |= pid_in(after[k], kids, nk);
        }
        /* event and worker start new processes as the load needs them. */
        if (!old && na >= 1) {
            break;
        }
        usleep(100 * 1000);
    }
    ck_assert_msg(na >= 1 && i < 100, "the old processes did not go (%d children)", na);
    st = status_json(srv);
    n = listed(st, got, &by, 0);
    ck_assert_msg(n >= 1, "no process listed");
    for (k = 0; k < n; k++) {
        ck_assert_msg(!pid_in(got[k], kids, nk), "old process %ld listed", (long)got[k]);
    }
    /* Nothing loaded yet in the new generation of processes. */
    ck_assert_int_eq(listed(st, got, &by, 1), 0);
    json_free(st);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A child that exits frees its slot                                   */

static void
xsetup(void)
{
    /* Later than the fixture's MaxConnectionsPerChild 0: this one wins. */
    httpd_opts_t o = { .files = pid_files,
                       .config = "MaxConnectionsPerChild 3\n" STATUS_CONF
                                 "<Location /pid>\n  PyReloadHandler @APP@/pid.py\n</Location>\n" };

    launch(&o);
}

START_TEST(test_exited_child_frees_its_slot)
{
    http_resp_t *r = http_get(srv, "/pid");
    pid_t first = (pid_t)strtol(r->body, NULL, 10), now = first;
    const json_t *procs, *server;
    json_t *st;
    int i;

    http_assert_status(r, 200);
    http_free(r);
    /* Each request is a connection: the third ends the process. */
    for (i = 0; i < 200 && now == first; i++) {
        r = http_get(srv, "/pid");
        if (r->status == 200) {
            now = (pid_t)strtol(r->body, NULL, 10);
        }
        http_free(r);
        if (now == first && i >= 2) {
            usleep(20 * 1000);
        }
    }
    ck_assert_msg(now != first, "process %ld never exited", (long)first);
    for (i = 0; i < 100 && httpd_pid_alive(first); i++) {
        usleep(20 * 1000);
    }
    st = status_json(srv);
    server = json_get(st, "server");
    procs = json_get(st, "processes");
    for (i = 0; json_at(procs, i); i++) {
        ck_assert_msg((pid_t)json_num(json_at(procs, i), "pid") != first,
                      "process %ld listed after it exited", (long)first);
    }
    /* ExtendedStatus Off (no mod_status): httpd counts no requests. */
    ck_assert_msg(json_get(json_at(procs, 0), "requests")->type == JSON_NULL, "requests");
    /* Freed by its cleanup, not merely ignored. */
    ck_assert_msg(json_num(server, "slots_stale") == 0, "slots_stale %g",
                  json_num(server, "slots_stale"));
    json_free(st);
}
END_TEST

/* ------------------------------------------------------------------ */
/* What does not fit in shared memory is said                         */

START_TEST(test_sizes_truncate_and_say_so)
{
    http_client_t *c = http_client_new(srv);
    http_resp_t *r = http_client_get(c, "/pid");
    pid_t a = (pid_t)strtol(r->body, NULL, 10);
    const json_t *proc = NULL, *e, *err;
    json_t *st = NULL;
    int i, k;

    http_assert_status(r, 200);
    http_free(r);
    /* The same connection, the same process: two entries there. */
    r = http_client_get(c, "/bad");
    http_assert_status(r, 500);
    http_free(r);
    /* Read by another process, from shared memory. */
    for (i = 0; i < 2000 && !proc; i++) {
        json_free(st);
        st = status_json(srv);
        if ((pid_t)json_num(json_get(st, "server"), "served_by") == a) {
            continue;
        }
        for (k = 0; json_at(json_get(st, "processes"), k); k++) {
            if ((pid_t)json_num(json_at(json_get(st, "processes"), k), "pid") == a) {
                proc = json_at(json_get(st, "processes"), k);
            }
        }
    }
    ck_assert_msg(proc != NULL, "no other process served the page with process %ld on it",
                  (long)a);
    ck_assert_int_eq((int)json_num(proc, "entries_omitted"), 1);
    ck_assert_int_eq(json_get(proc, "entries")->n, 1);
    e = need_entry(st, a, "bad.py"); /* entries go by path: bad.py first */
    err = json_get(e, "last_error");
    ck_assert_msg(err && err->type == JSON_OBJ, "last_error");
    ck_assert_msg(json_get(err, "truncated")->type == JSON_BOOL && json_get(err, "truncated")->b,
                  "truncated");
    ck_assert_uint_le(json_get(err, "traceback")->len, 16);
    ck_assert_msg(strstr(json_str(err, "message"), "SyntaxError"), "message");
    json_free(st);

    /* Fresh connections go to whichever process takes them first. */
    for (i = 0; i < 2000; i++) {
        r = http_get(srv, "/pyreload-status");
        if (strstr(r->body, "did not fit")) {
            break;
        }
        http_free(r);
    }
    ck_assert_msg(i < 2000, "the page never said what did not fit");
    http_assert_body_has(r, "truncated in shared memory");
    http_free(r);
    http_client_free(c);
}
END_TEST

static void
ssetup(void)
{
    static const httpd_file_t files[] = {
        { "pid.py", PID_PY },
        { "bad.py", "def handler(req:\n" },
        { NULL, NULL }
    };
    httpd_opts_t o = { .files = files,
                       .config = "PyReloadStatusEntries 1\nPyReloadStatusErrorBytes 16\n" PID_CONF
                                 "<Location /bad>\n  PyReloadHandler @APP@/bad.py\n</Location>\n",
                       .children = 2,
                       .threads = 4 };

    launch(&o);
}

Suite *
suite_status_page(void)
{
    Suite *s = suite_create("status");
    TCase *tc = httpd_tcase("page", 60, setup, teardown);
    TCase *ic = httpd_tcase("in_flight", 60, isetup, teardown);
    TCase *cc = httpd_tcase("children", 120, csetup, teardown);
    TCase *xc = httpd_tcase("exit", 60, xsetup, teardown);
    TCase *sc = httpd_tcase("sizes", 60, ssetup, teardown);

    tcase_add_test(tc, test_json_fields);
    tcase_add_test(tc, test_edit_changes_generation_loads_sha);
    tcase_add_test(tc, test_last_error_set_then_cleared);
    tcase_add_test(tc, test_metrics_parse_back);
    tcase_add_test(tc, test_odd_path_escaped);
    tcase_add_test(tc, test_html_and_server_status);
    suite_add_tcase(s, tc);
    tcase_add_test(ic, test_in_flight_on_retired_generation);
    suite_add_tcase(s, ic);
    tcase_add_test(cc, test_every_child_listed_from_any_child);
    tcase_add_test(cc, test_killed_child_not_listed);
    tcase_add_test(cc, test_graceful_restart_starts_clean);
    suite_add_tcase(s, cc);
    tcase_add_test(xc, test_exited_child_frees_its_slot);
    suite_add_tcase(s, xc);
    tcase_add_test(sc, test_sizes_truncate_and_say_so);
    suite_add_tcase(s, sc);
    return s;
}
