/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * request.c: one request through a Python handler, and the `req` object.
 *
 * The per-request path is designed to cost a few microseconds over a C
 * handler: the file's stat happens before the GIL is taken; the GIL is taken
 * once, through a thread state made once per thread; `req` builds nothing
 * until an attribute is asked for; and req.write() only copies into the
 * request's brigade, so a small response costs no GIL round trip: it goes to
 * the network after the handler returns, with the GIL released (and with a
 * Content-Length, since the whole body is known by then).
 */
#include "glue.h"
#include "pyr_py.h"

#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"

#include <apr_strings.h>

APLOG_USE_MODULE(pyreload);

/* Below this, req.write() copies into the brigade and sends nothing. */
#define PENDING_LIMIT (64 * 1024)

typedef struct {
    PyObject_HEAD
    request_rec *r;             /* NULL once the request has finished */
    const pyr_dir_conf_t *cfg;
    apr_bucket_brigade *bb;     /* output not yet passed to the filters */
    apr_off_t pending;
    int passed;                 /* headers (and maybe body) are on their way */
    int body_ready;             /* ap_setup_client_block() done */
    apr_off_t body_read;
    PyObject *headers_in, *headers_out, *err_headers_out, *options;
} request_t;

static PyTypeObject request_type;

#define LIVE(self, fail)                                                    \
    do {                                                                    \
        if (!(self)->r) {                                                   \
            PyErr_SetString(PyExc_RuntimeError,                             \
                            "this request has finished; a req object is "   \
                            "only valid during its own request");           \
            return fail;                                                    \
        }                                                                   \
    } while (0)

/* ------------------------------------------------------------------ */
/* Attributes                                                          */

/* URIs and paths are bytes on the wire; surrogateescape keeps every byte. */
static PyObject *
path_text(const char *s)
{
    if (!s) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "surrogateescape");
}

enum { A_METHOD, A_URI, A_UNPARSED_URI, A_PATH_INFO, A_ARGS, A_PROTOCOL,
       A_HOSTNAME, A_REMOTE_ADDR, A_FILENAME };

static PyObject *
req_get_str(request_t *self, void *which)
{
    request_rec *r = self->r;

    LIVE(self, NULL);
    switch ((int)(intptr_t)which) {
    case A_METHOD:       return path_text(r->method);
    case A_URI:          return path_text(r->uri);
    case A_UNPARSED_URI: return path_text(r->unparsed_uri);
    case A_PATH_INFO:    return path_text(r->path_info ? r->path_info : "");
    case A_ARGS:         return path_text(r->args);
    case A_PROTOCOL:     return path_text(r->protocol);
    case A_HOSTNAME:     return path_text(r->hostname);
    case A_REMOTE_ADDR:  return path_text(r->useragent_ip);
    case A_FILENAME:     return path_text(r->filename);
    }
    Py_RETURN_NONE;
}

static PyObject *
lazy_table(request_t *self, PyObject **slot, apr_table_t *t, int readonly)
{
    LIVE(self, NULL);
    if (!*slot) {
        *slot = pyr_table_new(t, (PyObject *)self, (void *const *)&self->r, readonly);
        if (!*slot) {
            return NULL;
        }
    }
    return Py_NewRef(*slot);
}

static PyObject *
req_get_headers_in(request_t *self, void *u)
{
    return lazy_table(self, &self->headers_in, self->r ? self->r->headers_in : NULL, 1);
}

static PyObject *
req_get_headers_out(request_t *self, void *u)
{
    return lazy_table(self, &self->headers_out, self->r ? self->r->headers_out : NULL, 0);
}

static PyObject *
req_get_err_headers_out(request_t *self, void *u)
{
    return lazy_table(self, &self->err_headers_out,
                      self->r ? self->r->err_headers_out : NULL, 0);
}

static PyObject *
req_get_options(request_t *self, void *u)
{
    return lazy_table(self, &self->options, self->cfg->options, 1);
}

static PyObject *
req_get_content_type(request_t *self, void *u)
{
    LIVE(self, NULL);
    return path_text(self->r->content_type);
}

static int
req_set_content_type(request_t *self, PyObject *v, void *u)
{
    const char *s;
    Py_ssize_t n;

    LIVE(self, -1);
    if (!v || !PyUnicode_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "content_type must be a str");
        return -1;
    }
    if (!(s = PyUnicode_AsUTF8AndSize(v, &n))) {
        return -1;
    }
    if ((Py_ssize_t)strcspn(s, "\r\n") != n) {
        PyErr_SetString(PyExc_ValueError, "content_type must not contain CR, LF or NUL");
        return -1;
    }
    ap_set_content_type(self->r, apr_pstrmemdup(self->r->pool, s, (apr_size_t)n));
    return 0;
}

static PyObject *
req_get_status(request_t *self, void *u)
{
    LIVE(self, NULL);
    return PyLong_FromLong(self->r->status);
}

static int
req_set_status(request_t *self, PyObject *v, void *u)
{
    long s;

    LIVE(self, -1);
    if (!v || !PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "status must be an int");
        return -1;
    }
    s = PyLong_AsLong(v);
    if (s == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (s < 100 || s > 599) {
        PyErr_Format(PyExc_ValueError, "status must be from 100 to 599, not %ld", s);
        return -1;
    }
    self->r->status = (int)s;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

/* Hand the pending brigade (and a flush, if asked) to the output filters
 * with the GIL released.  0, or -1 with OSError set. */
static int
pass_pending(request_t *self, int flush)
{
    request_rec *r = self->r;
    apr_status_t rv;

    if (flush) {
        APR_BRIGADE_INSERT_TAIL(self->bb,
                                apr_bucket_flush_create(r->connection->bucket_alloc));
    }
    Py_BEGIN_ALLOW_THREADS
    rv = ap_pass_brigade(r->output_filters, self->bb);
    apr_brigade_cleanup(self->bb);
    Py_END_ALLOW_THREADS
    self->pending = 0;
    self->passed = 1;
    if (rv != APR_SUCCESS) {
        PyErr_Format(PyExc_OSError, "sending the response failed (the client may "
                     "have gone): %s",
                     r->connection->aborted ? "connection aborted" : "filter error");
        return -1;
    }
    return 0;
}

static PyObject *
req_write(request_t *self, PyObject *data)
{
    Py_buffer view;
    const char *p;
    Py_ssize_t n;
    int rv = 0;

    LIVE(self, NULL);
    if (PyUnicode_Check(data)) {
        if (!(p = PyUnicode_AsUTF8AndSize(data, &n))) {
            return NULL;
        }
        view.obj = NULL;
    }
    else if (PyObject_CheckBuffer(data)) {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        p = view.buf;
        n = view.len;
    }
    else {
        return PyErr_Format(PyExc_TypeError, "write() takes bytes or str, not %.100s",
                            Py_TYPE(data)->tp_name);
    }

    if (n >= PENDING_LIMIT) {
        /* Large: no copy.  The buffer stays exported (so it cannot change)
         * while the transient bucket is passed without the GIL; filters that
         * keep it set it aside, which copies. */
        APR_BRIGADE_INSERT_TAIL(self->bb, apr_bucket_transient_create(
            p, (apr_size_t)n, self->r->connection->bucket_alloc));
        rv = pass_pending(self, 0);
    }
    else if (n > 0) {
        apr_brigade_write(self->bb, NULL, NULL, p, (apr_size_t)n);
        self->pending += n;
        if (self->pending >= PENDING_LIMIT) {
            rv = pass_pending(self, 0);
        }
    }
    if (view.obj) {
        PyBuffer_Release(&view);
    }
    if (rv < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
req_flush(request_t *self, PyObject *u)
{
    LIVE(self, NULL);
    if (pass_pending(self, 1) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* Input                                                               */

static PyObject *
http_error(int status, const char *message)
{
    PyObject *e = PyObject_CallFunction(pyr_HTTPError, "is", status, message);

    if (e) {
        PyErr_SetObject(pyr_HTTPError, e);
        Py_DECREF(e);
    }
    return NULL;
}

static PyObject *
req_read(request_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    request_rec *r = self->r;
    Py_ssize_t want = -1, have = 0, cap;
    PyObject *out;

    LIVE(self, NULL);
    if (nargs > 1) {
        return PyErr_Format(PyExc_TypeError, "read() takes at most 1 argument");
    }
    if (nargs == 1 && args[0] != Py_None) {
        if (!PyLong_Check(args[0])) {
            return PyErr_Format(PyExc_TypeError, "read() size must be an int");
        }
        want = PyLong_AsSsize_t(args[0]);
        if (want == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (!self->body_ready) {
        int rc;

        Py_BEGIN_ALLOW_THREADS
        rc = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);
        if (rc == OK) {
            (void)ap_should_client_block(r);    /* sends 100-continue if asked */
        }
        Py_END_ALLOW_THREADS
        if (rc != OK) {
            return http_error(rc, "the request body cannot be read");
        }
        self->body_ready = 1;
    }

    cap = want >= 0 ? want : 8192;
    if (!(out = PyBytes_FromStringAndSize(NULL, cap))) {
        return NULL;
    }
    while (want < 0 || have < want) {
        long got;
        apr_size_t room;

        if (have == cap) {
            cap *= 2;
            if (_PyBytes_Resize(&out, cap) < 0) {
                return NULL;
            }
        }
        room = (apr_size_t)(cap - have);
        Py_BEGIN_ALLOW_THREADS
        got = ap_get_client_block(r, PyBytes_AS_STRING(out) + have, room);
        Py_END_ALLOW_THREADS
        if (got == 0) {
            break;
        }
        if (got < 0) {
            apr_off_t limit = ap_get_limit_req_body(r);

            Py_DECREF(out);
            if (limit > 0 && self->body_read + (apr_off_t)room > limit) {
                return http_error(HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "the request body is larger than LimitRequestBody");
            }
            return http_error(HTTP_BAD_REQUEST, "reading the request body failed");
        }
        have += got;
        self->body_read += got;
    }
    if (have != cap && _PyBytes_Resize(&out, have) < 0) {
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------ */

static PyObject *
req_log_error(request_t *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"message", "level", NULL};
    const char *msg;
    int level = APLOG_ERR;
    request_rec *r = self->r;

    LIVE(self, NULL);
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|i:log_error", kwlist, &msg, &level)) {
        return NULL;
    }
    if (level < APLOG_EMERG || level > APLOG_DEBUG) {
        return PyErr_Format(PyExc_ValueError, "level must be one of pyreload.APLOG_*, "
                            "from %d to %d", APLOG_EMERG, APLOG_DEBUG);
    }
    msg = apr_pstrdup(r->pool, msg);
    Py_BEGIN_ALLOW_THREADS
    ap_log_rerror(APLOG_MARK, level, 0, r, "%s", msg);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static void
req_dealloc(request_t *self)
{
    Py_CLEAR(self->headers_in);
    Py_CLEAR(self->headers_out);
    Py_CLEAR(self->err_headers_out);
    Py_CLEAR(self->options);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
req_repr(request_t *self)
{
    if (!self->r) {
        return PyUnicode_FromString("<pyreload.Request (finished)>");
    }
    return PyUnicode_FromFormat("<pyreload.Request %s %s>", self->r->method,
                                self->r->uri);
}

#define STR_ATTR(name, which, doc) \
    {name, (getter)req_get_str, NULL, doc, (void *)(intptr_t)(which)}

static PyGetSetDef req_getset[] = {
    STR_ATTR("method", A_METHOD, "The request method, e.g. 'GET'."),
    STR_ATTR("uri", A_URI, "The decoded path of the request URI."),
    STR_ATTR("unparsed_uri", A_UNPARSED_URI, "The request URI as the client sent it."),
    STR_ATTR("path_info", A_PATH_INFO, "What follows the handler's location."),
    STR_ATTR("args", A_ARGS, "The query string, or None."),
    STR_ATTR("protocol", A_PROTOCOL, "e.g. 'HTTP/1.1'."),
    STR_ATTR("hostname", A_HOSTNAME, "The host the client asked for."),
    STR_ATTR("remote_addr", A_REMOTE_ADDR, "The client's address."),
    STR_ATTR("filename", A_FILENAME, "The file httpd mapped the URI to."),
    {"headers_in", (getter)req_get_headers_in, NULL, "Request headers (read-only).", NULL},
    {"headers_out", (getter)req_get_headers_out, NULL, "Response headers.", NULL},
    {"err_headers_out", (getter)req_get_err_headers_out, NULL,
     "Response headers kept on error responses too.", NULL},
    {"options", (getter)req_get_options, NULL, "PyReloadOption values.", NULL},
    {"content_type", (getter)req_get_content_type, (setter)req_set_content_type,
     "The response's Content-Type.", NULL},
    {"status", (getter)req_get_status, (setter)req_set_status,
     "The response's status (returned with OK).", NULL},
    {NULL}
};

static PyMethodDef req_methods[] = {
    {"write", (PyCFunction)req_write, METH_O, "write(data): bytes, or str as UTF-8."},
    {"flush", (PyCFunction)req_flush, METH_NOARGS, "Send what was written so far."},
    {"read", (PyCFunction)(void (*)(void))req_read, METH_FASTCALL,
     "read(size=-1): the request body, as bytes; b'' at its end."},
    {"log_error", (PyCFunction)(void (*)(void))req_log_error, METH_VARARGS | METH_KEYWORDS,
     "log_error(message, level=pyreload.APLOG_ERR)"},
    {NULL}
};

static PyTypeObject request_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyreload.Request",
    .tp_basicsize = sizeof(request_t),
    .tp_dealloc = (destructor)req_dealloc,
    .tp_repr = (reprfunc)req_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The request a handler is answering (valid only during it).",
    .tp_methods = req_methods,
    .tp_getset = req_getset,
};

int
pyr_request_register(PyObject *module)
{
    if (PyType_Ready(&request_type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Request", (PyObject *)&request_type);
}

/* ------------------------------------------------------------------ */
/* Running a handler                                                   */

static void
rlog(void *baton, int level, const char *line)
{
    ap_log_rerror(APLOG_MARK, level, 0, (request_rec *)baton, "%s", line);
}

static void
bind_handler(pyr_handler_t *h, pyr_cache_t *cache)
{
    pyr_entry_t *e = pyr_cache_entry(cache, h->path);

    /* Racing binders compute the same entry and slot. */
    h->slot = pyr_entry_require(e, h->callable);
    __atomic_store_n(&h->entry, e, __ATOMIC_RELEASE);
}

/* What the handler's outcome means for the response.  GIL. */
typedef struct {
    int status;         /* what the hook returns */
    int failed;         /* a 500 of ours: log 'why', and show it if debugging */
    char *why;          /* malloc'd traceback or message */
} outcome_t;

static void
judge(request_t *req, PyObject *result, const char *what, outcome_t *o)
{
    long v;

    o->failed = 0;
    o->why = NULL;
    if (!result) {
        if (PyErr_ExceptionMatches(pyr_HTTPError)) {
            PyObject *type, *value, *tb, *st;

            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            st = value ? PyObject_GetAttrString(value, "status") : NULL;
            v = st && PyLong_Check(st) ? PyLong_AsLong(st) : HTTP_INTERNAL_SERVER_ERROR;
            Py_XDECREF(st);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            PyErr_Clear();
            o->status = (v >= 100 && v <= 599) ? (int)v : HTTP_INTERNAL_SERVER_ERROR;
            return;
        }
        o->status = HTTP_INTERNAL_SERVER_ERROR;
        o->failed = 1;
        o->why = pyr_exc_format();
        return;
    }
    if (PyLong_Check(result) && !PyBool_Check(result)) {
        v = PyLong_AsLong(result);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();      /* too large for a long: reported below as invalid */
        }
        else if (v == OK || v == HTTP_OK) {
            o->status = OK;
            return;
        }
        else if (v == DECLINED || v == DONE || (v >= 100 && v <= 599)) {
            o->status = (int)v;
            return;
        }
    }
    {
        PyObject *repr = PyObject_Repr(result);
        const char *rs = repr ? PyUnicode_AsUTF8(repr) : NULL;
        char buf[512];

        if (!rs) {
            PyErr_Clear();
        }
        snprintf(buf, sizeof(buf), "%s returned %.200s (a %.100s); a handler must "
                 "return an int: pyreload.OK, an HTTP status from 100 to 599, "
                 "pyreload.DECLINED or pyreload.DONE\n", what, rs ? rs : "?",
                 Py_TYPE(result)->tp_name);
        Py_XDECREF(repr);
        o->status = HTTP_INTERNAL_SERVER_ERROR;
        o->failed = 1;
        o->why = strdup(buf);
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

static int
cannot_serve(request_rec *r, const pyr_dir_conf_t *cfg, pyr_entry_t *e)
{
    char *tb;

    if (cfg->debug != 1 || !(tb = pyr_entry_last_error(e, r->pool))) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return debug_page(r, apr_brigade_create(r->pool, r->connection->bucket_alloc),
                      "mod_pyreload: the handler file failed to load:", tb);
}

int
pyr_request_handle(request_rec *r, const pyr_dir_conf_t *cfg, pyr_cache_t *cache)
{
    pyr_handler_t *h = cfg->handler;
    pyr_logger_t log = { rlog, r };
    pyr_check_t check;
    pyr_entry_t *e;
    pyr_gen_t *g;
    PyObject *fn, *result = NULL;
    request_t *req;
    apr_bucket_brigade *bb;
    outcome_t o = { OK, 0, NULL };
    int passed = 0, rc;

    if (!pyr_interp_ready()) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "PYR0201: Python is not "
                      "available in this process (see the start-up errors)");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    e = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
    if (!e) {
        bind_handler(h, cache);
        e = h->entry;
    }
    check.enabled = cfg->check != 0;
    check.interval = cfg->interval;
    switch (pyr_entry_refresh(e, &check, &log)) {
    case PYR_READY:   break;
    case PYR_MISSING: return HTTP_NOT_FOUND;
    case PYR_DENIED:  return HTTP_FORBIDDEN;
    case PYR_FAILED:  return cannot_serve(r, cfg, e);
    default:          return HTTP_INTERNAL_SERVER_ERROR;
    }

    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);

    pyr_gil_take();
    g = pyr_entry_acquire(e);
    if (!(req = PyObject_New(request_t, &request_type))) {
        o.why = pyr_exc_format();
        o.status = HTTP_INTERNAL_SERVER_ERROR;
        o.failed = 1;
        pyr_gen_release(g, &log);
        pyr_gil_drop();
        goto report;
    }
    req->r = r;
    req->cfg = cfg;
    req->bb = bb;
    req->pending = 0;
    req->passed = 0;
    req->body_ready = 0;
    req->body_read = 0;
    req->headers_in = req->headers_out = req->err_headers_out = req->options = NULL;

    fn = pyr_gen_callable(g, h->slot);     /* borrowed from the generation */
    if (fn) {
        Py_INCREF(fn);
        result = PyObject_CallOneArg(fn, (PyObject *)req);
        Py_DECREF(fn);
    }
    judge(req, result, h->callable, &o);
    Py_XDECREF(result);
    pyr_interp_request_done();
    passed = req->passed;
    /* From here on the object outlives its request only as a husk. */
    req->r = NULL;
    Py_DECREF(req);
    pyr_gen_release(g, &log);
    pyr_gil_drop();

    if (o.status == OK || o.status == DONE || (o.status == DECLINED && passed)) {
        /* The whole body in one brigade with its EOS lets httpd add a
         * Content-Length, and the flush sends it now rather than after the
         * next keep-alive read. */
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(r->connection->bucket_alloc));
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(r->connection->bucket_alloc));
        rc = ap_pass_brigade(r->output_filters, bb);
        apr_brigade_cleanup(bb);
        return o.status == DONE ? DONE : (rc == APR_SUCCESS ? OK : AP_FILTER_ERROR);
    }

report:
    if (o.failed) {
        const char *where = apr_psprintf(r->pool, "%s::%s", h->path, h->callable);

        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "PYR0200: %s failed; answering 500:",
                      where);
        pyr_log_lines(&log, APLOG_ERR, "PYR0200: ", o.why);
    }
    if (passed) {
        /* The status line is gone already: all we can do is make the client
         * see a broken response rather than a complete-looking one. */
        APR_BRIGADE_INSERT_TAIL(bb, ap_bucket_error_create(o.status, NULL, r->pool,
                                r->connection->bucket_alloc));
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(r->connection->bucket_alloc));
        r->connection->keepalive = AP_CONN_CLOSE;
        (void)ap_pass_brigade(r->output_filters, bb);
        free(o.why);
        return OK;
    }
    apr_brigade_cleanup(bb);
    if (o.failed && cfg->debug == 1) {
        rc = debug_page(r, bb, apr_psprintf(r->pool, "mod_pyreload: %s::%s failed:",
                                            h->path, h->callable), o.why);
        free(o.why);
        return rc;
    }
    free(o.why);
    return o.status;
}
