/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * serve.c: one request through a Python handler, whatever the protocol:
 * bind the configured handler to its cache entry, bring the entry up to
 * date, pin its generation, let the protocol (req.c: handler(req)) build
 * what the callable is given, call it and judge the result, unpin, then
 * send the response or the failure (logged; a debug page; a response cut
 * short if it had started).
 *
 * Locking: the file's check happens before the GIL is taken; the GIL is
 * taken once per request, through a thread state made once per thread;
 * the response is sent with the GIL released.  A handler's binding is read
 * without a lock once made.
 */
#include "pyr_httpd.h"

#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "util_filter.h"

#include <apr_portable.h>
#include <apr_strings.h>

#include <sys/socket.h>

APLOG_USE_MODULE(pyreload);

/* A handler's cache entry in this process, bound on its first request.
 * Configuration memory is shared by the processes and never written by a
 * request: the binding lives here, one per handler id. */
typedef struct binding {
    pyr_entry_t *entry; /* atomic; NULL until bound */
    int slot;           /* stored before entry */
} binding_t;

static binding_t *bindings; /* per process, from pchild */
static int nbindings;

void
pyr_serve_child_init(apr_pool_t *pchild, int nhandlers)
{
    nbindings = nhandlers;
    bindings = apr_pcalloc(pchild, sizeof(*bindings) * (nhandlers > 0 ? nhandlers : 1));
}

static void
rlog(void *baton, int level, const char *line)
{
    ap_log_rerror(APLOG_MARK, level, 0, (request_rec *)baton, "%s", line);
}

/* The handler's binding: a lock-free read once made.  No GIL. */
static binding_t *
bind_handler(const pyr_handler_t *h, pyr_cache_t *cache)
{
    binding_t *b = &bindings[h->id];
    pyr_entry_t *e;

    if (!__atomic_load_n(&b->entry, __ATOMIC_ACQUIRE)) {
        /* Racing binders compute the same entry and slot. */
        e = pyr_cache_entry(cache, h->path);
        b->slot = pyr_entry_require(e, h->callable);
        pyr_entry_set_kind(e, (pyr_kind_t)h->kind);
        __atomic_store_n(&b->entry, e, __ATOMIC_RELEASE);
    }
    return b;
}

void
pyr_outcome_exception(pyr_outcome_t *o)
{
    o->status = HTTP_INTERNAL_SERVER_ERROR;
    o->failed = 1;
    o->why = pyr_exc_format();
}

/* The status line has gone: all we can do is make the client see a broken
 * response rather than a complete-looking one.  A 502 error bucket is how
 * mod_proxy says that a backend broke mid-response: httpd's chunk filter then
 * leaves out the last chunk, and the connection is closed after it.  A body
 * that is not chunked (HTTP/1.0, a Content-Length set by the handler) has no
 * end marker to leave out: the connection is reset instead, since a plain
 * close is how such a body ends normally.  HTTP/2 resets the stream on the
 * error bucket by itself. */
static void
cut_short(request_rec *r, apr_bucket_brigade *bb)
{
    conn_rec *c = r->connection;

    r->no_cache = 1;
    c->keepalive = AP_CONN_CLOSE;
    APR_BRIGADE_INSERT_TAIL(
        bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
    (void)ap_pass_brigade(r->output_filters, bb);
    apr_brigade_cleanup(bb);
    if (!r->chunked && r->proto_num < HTTP_VERSION(2, 0) && !c->master) {
        apr_socket_t *s = ap_get_conn_socket(c);
        apr_os_sock_t fd;
        struct linger lg = { 1, 0 };

        /* SO_LINGER 0: the close sends RST; aborted: no lingering FIN first. */
        if (s && apr_os_sock_get(&fd, s) == APR_SUCCESS) {
            (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        c->aborted = 1;
    }
}

/* Send a 500 whose body is the traceback (PyReloadDebug On). */
static int
debug_page(request_rec *r, apr_bucket_brigade *bb, const char *title, const char *text)
{
    apr_brigade_cleanup(bb);
    r->status = HTTP_INTERNAL_SERVER_ERROR;
    ap_set_content_type(r, "text/plain; charset=utf-8");
    apr_brigade_printf(bb, NULL, NULL, "%s\n\n%s", title, text);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(r->connection->bucket_alloc));
    return ap_pass_brigade(r->output_filters, bb) == APR_SUCCESS ? OK : AP_FILTER_ERROR;
}

/* PyReloadDebug On: the latest load failure, if any, as a 500 page; also
 * when a last good generation could serve, so that a developer sees a broken
 * save at once and until it is fixed (Debug Off keeps the last good code
 * serving).  DECLINED when the latest load did not fail. */
static int
load_failure_page(request_rec *r, pyr_entry_t *e, int has_good)
{
    char *tb = pyr_entry_last_error(e, r->pool);

    if (!tb) {
        return DECLINED;
    }
    return debug_page(r, apr_brigade_create(r->pool, r->connection->bucket_alloc),
                      apr_psprintf(r->pool,
                                   has_good ? "mod_pyreload: the latest version of %s failed to "
                                              "load (without PyReloadDebug On, the last good "
                                              "version would answer):"
                                            : "mod_pyreload: %s failed to load:",
                                   pyr_entry_path(e)),
                      tb);
}

static int
serve(request_rec *r, const pyr_dir_conf_t *cfg, pyr_cache_t *cache)
{
    const pyr_handler_t *h = cfg->handler;
    const pyr_protocol_t *proto = h->protocol;
    pyr_logger_t log = { rlog, r };
    pyr_call_t call = { r, cfg, NULL, NULL, NULL };
    pyr_outcome_t o = { OK, 0, NULL, 0 };
    pyr_check_t check;
    pyr_status_t st;
    binding_t *b;
    pyr_entry_t *e;
    pyr_gen_t *g;
    PyObject *fn, *result = NULL;
    int passed = 0, wsgi_like = 0, rc;

    if (!pyr_interp_ready()) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "PYR0201: Python is not "
                      "available in this process (see the start-up errors)");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (h->id < 0 || h->id >= nbindings) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "PYR0220: %s (%s) is "
                      "not known to this process (handler %d of %d)",
                      h->directive, h->where, h->id, nbindings);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    b = bind_handler(h, cache);
    e = b->entry;
    check.enabled = cfg->check != 0;
    check.interval = cfg->interval == PYR_UNSET ? 0 : cfg->interval;
    st = pyr_entry_refresh(e, &check, &log);
    /* A load or a failure is on the status page before the response goes
     * out (a request that changed nothing pays a compare). */
    pyr_status_publish(cache);
    switch (st) {
    case PYR_READY:
        if (cfg->debug == 1 && (rc = load_failure_page(r, e, 1)) != DECLINED) {
            return rc;
        }
        break;
    case PYR_MISSING: return HTTP_NOT_FOUND;
    case PYR_DENIED: return HTTP_FORBIDDEN;
    case PYR_FAILED:
        if (cfg->debug == 1 && (rc = load_failure_page(r, e, 0)) != DECLINED) {
            return rc;
        }
        return HTTP_INTERNAL_SERVER_ERROR;
    default: return HTTP_INTERNAL_SERVER_ERROR;
    }

    call.bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);

    pyr_gil_take();
    g = pyr_entry_acquire(e);
    call.gen = g;
    if (proto->start(&call) < 0) {
        pyr_outcome_exception(&o);
        pyr_gen_release(g, &log);
        pyr_gil_drop();
        goto report;
    }
    fn = pyr_gen_callable(g, b->slot); /* borrowed from the generation */
    if (fn) {
        Py_INCREF(fn);
        result = proto->call(&call, fn);
        wsgi_like = !result && proto == &pyr_protocol_pyreload && pyr_hint_wsgi(fn);
        Py_DECREF(fn);
        proto->judge(&call, result, &o);
        Py_XDECREF(result);
    }
    else {
        /* The file serves its other configurations; this one is told once
         * per generation, not on every request. */
        pyr_outcome_exception(&o);
        o.missing = pyr_gen_tell_missing(g, b->slot) ? 1 : -1;
    }
    passed = proto->finish(&call);
    pyr_interp_request_done();
    pyr_gen_release(g, &log);
    pyr_gil_drop();
    /* The end of a request on a retired generation, or a first import. */
    pyr_status_publish(cache);

    if (o.status == OK || o.status == DONE || (o.status == DECLINED && passed)) {
        /* The whole body in one brigade with its EOS lets httpd add a
         * Content-Length, and the flush sends it now rather than after the
         * next keep-alive read. */
        APR_BRIGADE_INSERT_TAIL(call.bb, apr_bucket_eos_create(r->connection->bucket_alloc));
        APR_BRIGADE_INSERT_TAIL(call.bb, apr_bucket_flush_create(r->connection->bucket_alloc));
        rc = ap_pass_brigade(r->output_filters, call.bb);
        apr_brigade_cleanup(call.bb);
        return o.status == DONE ? DONE : (rc == APR_SUCCESS ? OK : AP_FILTER_ERROR);
    }

report:
    if (o.missing > 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "PYR0120: %s has no callable '%s' "
                      "(named by %s in %s); answering 500 there until it "
                      "has (said once per generation of the file)",
                      h->path, h->callable, h->directive, h->where ? h->where : "?");
    }
    else if (o.failed && !o.missing) {
        const char *where = apr_psprintf(r->pool, "%s::%s", h->path, h->callable);

        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "PYR0200: %s failed; %s:", where,
                      passed ? "the response had started: cutting it short" : "answering 500");
        pyr_log_lines(&log, APLOG_ERR, "PYR0200: ", o.why);
        if (wsgi_like) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                          "PYR0702: %s takes two arguments, as a WSGI application "
                          "does (environ, start_response), and %s calls it with one "
                          "(req): serve it with PyReloadWSGI %s (%s)",
                          where, h->directive, where, h->where ? h->where : "?");
        }
    }
    else if (passed) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "PYR0202: %s::%s answered %d after "
                      "the response had started (flush() or a large write): cutting it "
                      "short",
                      h->path, h->callable, o.status);
    }
    if (passed) {
        cut_short(r, call.bb);
        free(o.why);
        return OK;
    }
    apr_brigade_cleanup(call.bb);
    if (o.failed && cfg->debug == 1) {
        rc = debug_page(r, call.bb,
                        apr_psprintf(r->pool, "mod_pyreload: %s::%s failed:", h->path, h->callable),
                        o.why);
        free(o.why);
        return rc;
    }
    free(o.why);
    return o.status;
}

int
pyr_serve(request_rec *r, const pyr_dir_conf_t *cfg, pyr_cache_t *cache)
{
    pyr_logger_t log = { rlog, r };
    int rc;

    /* logging records of this thread carry the request's client, from the
     * load of its file to its response's close(). */
    pyr_pylog_bind(&log);
    rc = serve(r, cfg, cache);
    pyr_pylog_bind(NULL);
    return rc;
}
