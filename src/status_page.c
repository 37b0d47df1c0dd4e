/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * status_page.c: what every process of the host has loaded, in the forms
 * people read, from one pass over the processes (status_shm.c):
 *
 *   <Location /pyreload-status>
 *       SetHandler pyreload-status
 *       Require local
 *   </Location>
 *
 *   GET /pyreload-status           an HTML page (no JavaScript)
 *   GET /pyreload-status?json      application/json, for tools
 *   GET /pyreload-status?metrics   Prometheus text exposition 0.0.4
 *
 * and, when mod_status is loaded, a short section of /server-status
 * (its status_hook, an optional hook, as mod_cache's socache does).
 *
 * Paths and tracebacks may hold any byte: JSON escapes a byte that is not
 * UTF-8 as \udcXX (Python's surrogateescape: json.loads and os.fsencode
 * give the bytes back), HTML escapes markup, Prometheus label values
 * escape \, " and newlines and carry U+FFFD for a byte that is not UTF-8.
 *
 * Locking: no GIL here (the snapshot takes it itself).
 */
#include "pyr_httpd.h"

#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "mod_status.h"

#include <apr_hash.h>
#include <apr_optional_hooks.h>
#include <apr_strings.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

APLOG_USE_MODULE(pyreload);

/* A retired generation alive longer than this is shown as a leak. */
#define RETIRED_OLD apr_time_from_sec(60)

/* ------------------------------------------------------------------ */
/* Text                                                                */

/* "2026-12-02T03:40:00.123Z" */
static const char *
iso_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t x;

    apr_time_exp_gmt(&x, t);
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", x.tm_year + 1900, x.tm_mon + 1,
                        x.tm_mday, x.tm_hour, x.tm_min, x.tm_sec, x.tm_usec / 1000);
}

/* The length of the well-formed UTF-8 sequence at s (2 to 4), or 0. */
static int
utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];

    if (c >= 0xC2 && c <= 0xDF) {
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (c == 0xE0 && s[1] < 0xA0) ||
            (c == 0xED && s[1] >= 0xA0)) {
            return 0;
        }
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80 ||
            (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)) {
            return 0;
        }
        return 4;
    }
    return 0;
}

/* s as a JSON string (null for NULL). */
static void
json_str(request_rec *r, const char *str)
{
    const unsigned char *s = (const unsigned char *)str, *run;
    int n;

    if (!str) {
        ap_rputs("null", r);
        return;
    }
    ap_rputc('"', r);
    for (run = s; *s;) {
        if (*s >= 0x20 && *s < 0x7F && *s != '"' && *s != '\\') {
            s++;
            continue;
        }
        if (*s >= 0x80 && (n = utf8_seq(s)) > 0) {
            s += n;
            continue;
        }
        ap_rwrite(run, (int)(s - run), r);
        switch (*s) {
        case '"': ap_rputs("\\\"", r); break;
        case '\\': ap_rputs("\\\\", r); break;
        case '\n': ap_rputs("\\n", r); break;
        case '\r': ap_rputs("\\r", r); break;
        case '\t': ap_rputs("\\t", r); break;
        default:
            /* A control character, DEL, or a byte that is not UTF-8
             * (surrogateescape). */
            ap_rprintf(r, *s < 0x80 ? "\\u%04x" : "\\udc%02x", *s);
        }
        run = ++s;
    }
    ap_rwrite(run, (int)(s - run), r);
    ap_rputc('"', r);
}

static void
json_time(request_rec *r, apr_time_t t)
{
    if (t) {
        ap_rprintf(r, "\"%s\"", iso_time(r->pool, t));
    }
    else {
        ap_rputs("null", r);
    }
}

/* s as a Prometheus label value (without its quotes). */
static void
prom_label(request_rec *r, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    int n;

    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            ap_rputc('\\', r);
            ap_rputc(*s, r);
        }
        else if (*s == '\n') {
            ap_rputs("\\n", r);
        }
        else if (*s >= 0x80) {
            if ((n = utf8_seq(s)) > 0) {
                ap_rwrite(s, n, r);
                s += n - 1;
            }
            else {
                ap_rputs("\xEF\xBF\xBD", r); /* U+FFFD */
            }
        }
        else {
            ap_rputc(*s, r);
        }
    }
}

static const char *
html(request_rec *r, const char *s)
{
    return ap_escape_html2(r->pool, s ? s : "", 0);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */

/* Every path any process has loaded, once, as it is on disk now. */
static void
json_files(request_rec *r, const pyr_status_proc_t *procs, int nprocs)
{
    apr_hash_t *seen = apr_hash_make(r->pool);
    apr_array_header_t *paths = apr_array_make(r->pool, 16, sizeof(const char *));
    int i, j, first = 1;

    for (i = 0; i < nprocs; i++) {
        for (j = 0; j < procs[i].nentries; j++) {
            const char *path = procs[i].entries[j].path;

            if (!apr_hash_get(seen, path, APR_HASH_KEY_STRING)) {
                apr_hash_set(seen, path, APR_HASH_KEY_STRING, path);
                APR_ARRAY_PUSH(paths, const char *) = path;
            }
        }
    }
    ap_rputs("\"files\": [", r);
    for (i = 0; i < paths->nelts; i++) {
        const char *path = APR_ARRAY_IDX(paths, i, const char *);
        char *data = NULL, hex[PYR_SHA256_HEX];
        size_t len;
        pyr_sig_t sig;
        int rv = pyr_source_read(path, &data, &len, &sig);

        ap_rputs(first ? "\n  {\"path\": " : ",\n  {\"path\": ", r);
        first = 0;
        json_str(r, path);
        if (rv == 0 && sig.has_sha256) {
            pyr_sha256_hex(sig.sha256, hex);
            ap_rprintf(r, ", \"sha256\": \"%s\", \"exists\": true}", hex);
        }
        else {
            ap_rprintf(r, ", \"sha256\": null, \"exists\": %s}",
                       rv == ENOENT || rv == ENOTDIR ? "false" : "true");
        }
        free(data);
    }
    ap_rputs("]", r);
}

static void
json_entry(request_rec *r, const pyr_status_entry_t *e)
{
    int k;

    ap_rputs("{\"path\": ", r);
    json_str(r, e->path);
    ap_rprintf(r, ", \"kind\": \"%s\", \"name\": ", pyr_kind_name(e->kind));
    json_str(r, e->name);
    ap_rprintf(r, ", \"generation\": %ld, \"loads\": %ld, \"failures\": %ld, \"last_load_ms\": %.3f",
               e->generation, e->loads, e->failures, e->last_load_ms);
    ap_rputs(", \"loaded_at\": ", r);
    json_time(r, e->loaded_at);
    ap_rputs(", \"sha256\": ", r);
    json_str(r, e->sha256[0] ? e->sha256 : NULL);
    ap_rputs(", \"imports\": [", r);
    for (k = 0; k < e->nimports; k++) {
        if (k) {
            ap_rputs(", ", r);
        }
        json_str(r, e->imports[k]);
    }
    ap_rprintf(r, "], \"in_flight\": %ld, \"in_flight_retired\": %ld, \"retired_alive\": %d",
               e->in_flight + e->in_flight_retired, e->in_flight_retired, e->retired_alive);
    ap_rputs(", \"retired_oldest_at\": ", r);
    json_time(r, e->retired_oldest);
    ap_rputs(", \"last_error\": ", r);
    if (!e->error) {
        ap_rputs("null}", r);
        return;
    }
    ap_rputs("{\"at\": ", r);
    json_time(r, e->error_at);
    ap_rputs(", \"message\": ", r);
    json_str(r, e->message);
    ap_rputs(", \"traceback\": ", r);
    json_str(r, e->error);
    ap_rprintf(r, ", \"truncated\": %s}}", e->error_truncated ? "true" : "false");
}

static void
json_page(request_rec *r, const pyr_status_proc_t *procs, int n)
{
    int i, j, entries, error_bytes, used, stale;
    int nslots = pyr_status_shm_sizes(&entries, &error_bytes, &used, &stale);

    ap_set_content_type(r, "application/json");
    ap_rputs("{\"version\": ", r);
    json_str(r, PYR_VERSION);
    ap_rputs(", \"generated_at\": ", r);
    json_time(r, apr_time_now());
    ap_rprintf(r, ",\n \"server\": {\"pid\": %ld, \"mpm\": ", (long)getppid());
    json_str(r, ap_show_mpm());
    ap_rprintf(r,
               ", \"served_by\": %ld, \"slots\": %d, \"slots_used\": %d, \"slots_stale\": %d, "
               "\"entries_per_process\": %d, \"error_bytes\": %d},\n \"processes\": [",
               (long)getpid(), nslots, used, stale, entries, error_bytes);
    for (i = 0; i < n; i++) {
        const pyr_status_proc_t *pr = &procs[i];

        ap_rprintf(r, "%s\n  {\"pid\": %ld, \"started_at\": ", i ? "," : "", (long)pr->pid);
        json_time(r, pr->started_at);
        if (pr->requests >= 0) {
            ap_rprintf(r, ", \"requests\": %ld", pr->requests);
        }
        else {
            ap_rputs(", \"requests\": null", r);
        }
        ap_rputs(", \"updated_at\": ", r);
        json_time(r, pr->updated_at);
        ap_rprintf(r, ", \"answering\": %s, \"entries_omitted\": %d, \"entries\": [",
                   pr->live ? "true" : "false", pr->omitted);
        for (j = 0; j < pr->nentries; j++) {
            ap_rputs(j ? ",\n    " : "\n    ", r);
            json_entry(r, &pr->entries[j]);
        }
        ap_rputs("]}", r);
    }
    ap_rputs("],\n ", r);
    json_files(r, procs, n);
    ap_rputs("}\n", r);
}

/* ------------------------------------------------------------------ */
/* Prometheus text                                                     */

typedef enum { M_GENERATION, M_LOADS, M_FAILURES, M_LAST_LOAD, M_IN_FLIGHT, M_RETIRED } metric_t;

static const struct {
    const char *name, *type, *help;
} metrics[] = {
    { "pyreload_generation", "gauge", "Generation of the file's module serving now." },
    { "pyreload_loads_total", "counter", "Generations of the file published (successful loads)." },
    { "pyreload_load_failures_total", "counter", "Loads of the file that failed." },
    { "pyreload_last_load_seconds", "gauge",
      "Duration of the file's last successful load, its imports included." },
    { "pyreload_in_flight", "gauge",
      "Requests running on a generation of the file (the current generation's as of the "
      "process's last update, except in the process that answered)." },
    { "pyreload_retired_generations", "gauge", "Replaced generations of the file still alive." },
};

static void
metrics_page(request_rec *r, const pyr_status_proc_t *procs, int n)
{
    int m, i, j;

    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    for (m = 0; m < (int)(sizeof(metrics) / sizeof(metrics[0])); m++) {
        ap_rprintf(r, "# HELP %s %s\n# TYPE %s %s\n", metrics[m].name, metrics[m].help,
                   metrics[m].name, metrics[m].type);
        for (i = 0; i < n; i++) {
            for (j = 0; j < procs[i].nentries; j++) {
                const pyr_status_entry_t *e = &procs[i].entries[j];

                ap_rprintf(r, "%s{path=\"", metrics[m].name);
                prom_label(r, e->path);
                ap_rprintf(r, "\",pid=\"%ld\"} ", (long)procs[i].pid);
                switch ((metric_t)m) {
                case M_GENERATION: ap_rprintf(r, "%ld\n", e->generation); break;
                case M_LOADS: ap_rprintf(r, "%ld\n", e->loads); break;
                case M_FAILURES: ap_rprintf(r, "%ld\n", e->failures); break;
                case M_LAST_LOAD: ap_rprintf(r, "%.6f\n", e->last_load_ms / 1000.0); break;
                case M_IN_FLIGHT: ap_rprintf(r, "%ld\n", e->in_flight + e->in_flight_retired); break;
                case M_RETIRED: ap_rprintf(r, "%d\n", e->retired_alive); break;
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* HTML                                                                */

/* A process: its pid, since when, its requests, and whether it answered. */
static const char *
process_cell(request_rec *r, const pyr_status_proc_t *pr)
{
    return apr_psprintf(r->pool, "%ld<br><small>since %s%s%s</small>", (long)pr->pid,
                        iso_time(r->pool, pr->started_at),
                        pr->requests >= 0
                            ? apr_psprintf(r->pool, "<br>%ld requests", pr->requests)
                            : "",
                        pr->live ? "<br>(answered this page)" : "");
}

static void
html_entry(request_rec *r, const pyr_status_proc_t *pr, const pyr_status_entry_t *e, int first,
           apr_time_t now)
{
    int k, old = e->retired_alive && now - e->retired_oldest > RETIRED_OLD;

    ap_rputs("<tr>", r);
    if (first) {
        ap_rprintf(r, "<td rowspan=\"%d\">%s</td>", pr->nentries, process_cell(r, pr));
    }
    ap_rprintf(r, "<td>%s</td><td class=\"path\">%s<br><small>%s</small></td>",
               pyr_kind_name(e->kind), html(r, e->path), html(r, e->name));
    ap_rprintf(r, "<td>%ld</td><td>%ld</td><td%s>%ld</td><td>%.2f ms<br><small>%s</small></td>",
               e->generation, e->loads, e->failures ? " class=\"bad\"" : "", e->failures,
               e->last_load_ms, e->loaded_at ? iso_time(r->pool, e->loaded_at) : "never");
    ap_rprintf(r, "<td class=\"sha\">%s</td>", e->sha256[0] ? apr_pstrndup(r->pool, e->sha256, 12)
                                                          : "");
    ap_rprintf(r, "<td>%ld</td>", e->in_flight);
    if (e->retired_alive) {
        ap_rprintf(r, "<td%s>%d (%ld in flight; oldest %" APR_TIME_T_FMT " s)</td>",
                   old ? " class=\"bad\"" : "", e->retired_alive, e->in_flight_retired,
                   apr_time_sec(now - e->retired_oldest));
    }
    else {
        ap_rputs("<td>0</td>", r);
    }
    ap_rputs("<td class=\"path\">", r);
    for (k = 0; k < e->nimports; k++) {
        ap_rprintf(r, "%s%s", k ? "<br>" : "", html(r, e->imports[k]));
    }
    ap_rputs("</td><td>", r);
    if (e->error) {
        ap_rprintf(r,
                   "<details class=\"bad\"><summary>%s <small>(%s)</small></summary>"
                   "<pre>%s</pre>%s</details>",
                   html(r, e->message), iso_time(r->pool, e->error_at), html(r, e->error),
                   e->error_truncated ? "<p>(truncated in shared memory: the whole traceback "
                                        "is in the error log)</p>"
                                      : "");
    }
    ap_rputs("</td></tr>\n", r);
}

static void
html_page(request_rec *r, const pyr_status_proc_t *procs, int n)
{
    apr_time_t now = apr_time_now();
    int i, j;

    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                               "<title>mod_pyreload status</title><style>"
                               "body{font-family:sans-serif}table{border-collapse:collapse}"
                               "td,th{border:1px solid #999;padding:2px 6px;vertical-align:top}"
                               ".bad{color:#c00;font-weight:bold}.path{font-family:monospace}"
                               ".sha{font-family:monospace}pre{font-weight:normal}"
                               "</style></head><body>\n<h1>mod_pyreload status</h1>\n",
             r);
    ap_rprintf(r,
               "<p>mod_pyreload %s, MPM %s, server pid %ld; %d process%s; generated %s; "
               "<a href=\"?json\">JSON</a>, <a href=\"?metrics\">metrics</a></p>\n",
               PYR_VERSION, html(r, ap_show_mpm()), (long)getppid(), n, n == 1 ? "" : "es",
               iso_time(r->pool, now));
    ap_rputs("<table>\n<tr><th>process</th><th>kind</th><th>file</th><th>generation</th>"
             "<th>loads</th><th>failures</th><th>last load</th><th>sha256</th>"
             "<th>in flight</th><th>retired alive</th><th>imports</th><th>last error</th></tr>\n",
             r);
    for (i = 0; i < n; i++) {
        const pyr_status_proc_t *pr = &procs[i];

        for (j = 0; j < pr->nentries; j++) {
            html_entry(r, pr, &pr->entries[j], j == 0, now);
        }
        if (!pr->nentries) {
            ap_rprintf(r, "<tr><td>%s</td><td colspan=\"11\">nothing loaded</td></tr>\n",
                       process_cell(r, pr));
        }
        if (pr->omitted) {
            ap_rprintf(r, "<tr><td colspan=\"12\" class=\"bad\">process %ld: %d more entries did "
                          "not fit in shared memory (PyReloadStatusEntries)</td></tr>\n",
                       (long)pr->pid, pr->omitted);
        }
        if (pr->no_slot) {
            ap_rprintf(r, "<tr><td colspan=\"12\" class=\"bad\">process %ld found no free status "
                          "slot: the other processes cannot show it</td></tr>\n",
                       (long)pr->pid);
        }
    }
    ap_rputs("</table>\n<p>In flight: requests on the current generation, as of each process's "
             "last update (exact for the process that answered); retired generations: exact. A "
             "retired generation alive for more than 60 s is shown in red.</p>\n</body></html>\n",
             r);
}

/* ------------------------------------------------------------------ */

/* 1 if the query string has the word w (?json, ?metrics&x). */
static int
query_has(const request_rec *r, const char *w)
{
    const char *a = r->args;
    size_t n = strlen(w);

    while (a && *a) {
        if (strncmp(a, w, n) == 0 && (a[n] == '\0' || a[n] == '&' || a[n] == '=')) {
            return 1;
        }
        a = strchr(a, '&');
        a = a ? a + 1 : NULL;
    }
    return 0;
}

int
pyr_status_page(request_rec *r, pyr_cache_t *cache)
{
    pyr_status_proc_t *procs;
    int n;

    if (!r->handler || strcmp(r->handler, PYR_STATUS_HANDLER_NAME)) {
        return DECLINED;
    }
    r->allowed = AP_METHOD_BIT << M_GET;
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    n = pyr_status_read(r->pool, cache, &procs);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (query_has(r, "json")) {
        json_page(r, procs, n);
    }
    else if (query_has(r, "metrics")) {
        metrics_page(r, procs, n);
    }
    else {
        html_page(r, procs, n);
    }
    return OK;
}

/* mod_status's /server-status: a few totals per process. */
static pyr_cache_t **hook_cache;

static int
status_hook(request_rec *r, int flags)
{
    pyr_status_proc_t *procs;
    int n = pyr_status_read(r->pool, *hook_cache, &procs), i, j, files = 0, failing = 0,
        retired = 0;

    for (i = 0; i < n; i++) {
        for (j = 0; j < procs[i].nentries; j++) {
            files++;
            failing += procs[i].entries[j].error != NULL;
            retired += procs[i].entries[j].retired_alive;
        }
    }
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r,
                   "PyReloadProcesses: %d\nPyReloadEntries: %d\nPyReloadFailing: %d\n"
                   "PyReloadRetiredAlive: %d\n",
                   n, files, failing, retired);
        return OK;
    }
    ap_rputs("<hr>\n<h2>mod_pyreload</h2>\n<table border=\"0\"><tr><th>process</th>"
             "<th>files</th><th>failing</th><th>retired alive</th></tr>\n",
             r);
    for (i = 0; i < n; i++) {
        int f = 0, rt = 0;

        for (j = 0; j < procs[i].nentries; j++) {
            f += procs[i].entries[j].error != NULL;
            rt += procs[i].entries[j].retired_alive;
        }
        ap_rprintf(r, "<tr><td>%ld</td><td>%d</td><td>%d</td><td>%d</td></tr>\n",
                   (long)procs[i].pid, procs[i].nentries, f, rt);
    }
    ap_rputs("</table>\n<p>Details: a location with <code>SetHandler pyreload-status</code>.</p>\n",
             r);
    return OK;
}

void
pyr_status_register_hooks(apr_pool_t *p, pyr_cache_t **cache)
{
    hook_cache = cache;
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
