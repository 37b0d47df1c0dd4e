/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * req.c: the native protocol, `handler(req)`: the `req` object a handler
 * is given, and what its return value means.  serve.c runs the rest of
 * the request (and is where the request's cost is kept low).
 *
 * req builds nothing until an attribute is asked for, and req.write() only
 * copies into the request's brigade, so a small response costs no GIL
 * round trip: it goes to the network after the handler returns, with the
 * GIL released (and with a Content-Length, since the whole body is known
 * by then).
 */
#include "pyr_httpd.h"
#include "pyr_python.h"
#include "pyr_mem.h"

#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"

#include <apr_strings.h>

APLOG_USE_MODULE(pyreload);

/* Below this, req.write() copies into the brigade and sends nothing. */
#define PENDING_LIMIT (64 * 1024)

/* Any thread may call a req.  The fields below r are used only by the thread
 * that may touch the request (guard.c): under the GIL after a check, or
 * inside the guard with the GIL released. */
typedef struct {
    PyObject_HEAD pyr_guard_t *guard; /* owned; shared with the tables */
    request_rec *r;                   /* NULL once the request has finished */
    const pyr_dir_conf_t *cfg;
    apr_bucket_brigade *bb; /* output not yet passed to the filters */
    apr_off_t pending;
    int passed;     /* headers (and maybe body) are on their way */
    int body_ready; /* ap_setup_client_block() done */
    apr_off_t body_read;
    PyObject *headers_in, *headers_out, *err_headers_out, *options;
} request_t;

static PyTypeObject request_type;

/* Raises RuntimeError once the request has finished; may release the GIL
 * while another thread is inside it, so check before reading self->r. */
#define LIVE(self, fail)                                                                           \
    do {                                                                                           \
        if (pyr_guard_check((self)->guard) < 0) {                                                  \
            return fail;                                                                           \
        }                                                                                          \
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

enum {
    A_METHOD,
    A_URI,
    A_UNPARSED_URI,
    A_PATH_INFO,
    A_ARGS,
    A_PROTOCOL,
    A_HOSTNAME,
    A_REMOTE_ADDR,
    A_FILENAME
};

static PyObject *
req_get_str(request_t *self, void *which)
{
    request_rec *r;

    LIVE(self, NULL);
    r = self->r;
    switch ((int)(intptr_t)which) {
    case A_METHOD: return path_text(r->method);
    case A_URI: return path_text(r->uri);
    case A_UNPARSED_URI: return path_text(r->unparsed_uri);
    case A_PATH_INFO: return path_text(r->path_info ? r->path_info : "");
    case A_ARGS: return path_text(r->args);
    case A_PROTOCOL: return path_text(r->protocol);
    case A_HOSTNAME: return path_text(r->hostname);
    case A_REMOTE_ADDR: return path_text(r->useragent_ip);
    case A_FILENAME: return path_text(r->filename);
    }
    Py_RETURN_NONE;
}

enum { T_HEADERS_IN, T_HEADERS_OUT, T_ERR_HEADERS_OUT, T_OPTIONS };

/* The table holds the guard, not req: no cycle (req owns the table). */
static PyObject *
req_get_table(request_t *self, void *which)
{
    PyObject **slot;
    apr_table_t *t;
    int readonly = 0;

    LIVE(self, NULL);
    switch ((int)(intptr_t)which) {
    case T_HEADERS_IN:
        slot = &self->headers_in;
        t = self->r->headers_in;
        readonly = 1;
        break;
    case T_HEADERS_OUT:
        slot = &self->headers_out;
        t = self->r->headers_out;
        break;
    case T_ERR_HEADERS_OUT:
        slot = &self->err_headers_out;
        t = self->r->err_headers_out;
        break;
    default:
        slot = &self->options;
        t = self->cfg->options;
        readonly = 1;
        break;
    }
    if (!*slot && !(*slot = pyr_table_new(t, self->guard, readonly))) {
        return NULL;
    }
    return Py_NewRef(*slot);
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
    if (s < 200 || s > 599) {
        PyErr_Format(PyExc_ValueError, "status must be from 200 to 599, not %ld%s", s,
                     s >= 100 && s < 200 ? ": a 1xx is not a final status" : "");
        return -1;
    }
    self->r->status = (int)s;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

/* Hand the pending brigade (and a flush, if asked) to the output filters
 * with the GIL released, inside the guard.  0, or -1 with OSError (or
 * RuntimeError) set. */
static int
pass_pending(request_t *self, int flush)
{
    request_rec *r;
    apr_status_t rv;
    int aborted;

    if (pyr_guard_enter(self->guard) < 0) {
        return -1;
    }
    r = self->r;
    if (flush) {
        APR_BRIGADE_INSERT_TAIL(self->bb, apr_bucket_flush_create(r->connection->bucket_alloc));
    }
    self->pending = 0;
    self->passed = 1;
    Py_BEGIN_ALLOW_THREADS rv = ap_pass_brigade(r->output_filters, self->bb);
    apr_brigade_cleanup(self->bb);
    aborted = r->connection->aborted;
    pyr_guard_leave(self->guard);
    Py_END_ALLOW_THREADS if (rv != APR_SUCCESS)
    {
        PyErr_Format(PyExc_OSError,
                     "sending the response failed (the client may "
                     "have gone): %s",
                     aborted ? "connection aborted" : "filter error");
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

    /* From the check on, the GIL is kept until pass_pending(), if any. */
    if (pyr_guard_check(self->guard) < 0) {
        rv = -1;
    }
    else if (n >= PENDING_LIMIT) {
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
    Py_ssize_t want = -1, have = 0, cap;
    PyObject *out;
    int rc = OK;

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

    cap = want >= 0 ? want : 8192;
    if (!(out = PyBytes_FromStringAndSize(NULL, cap))) {
        return NULL;
    }
    while (want < 0 || have < want) {
        request_rec *r;
        apr_off_t limit = 0, before = 0;
        apr_size_t room;
        long got = 0;

        if (have == cap) {
            cap *= 2;
            if (_PyBytes_Resize(&out, cap) < 0) {
                return NULL;
            }
        }
        room = (apr_size_t)(cap - have);
        /* Each piece inside the guard: threads that read the same body take
         * turns, and the request cannot end under them. */
        if (pyr_guard_enter(self->guard) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        r = self->r;
        Py_BEGIN_ALLOW_THREADS if (!self->body_ready)
        {
            rc = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);
            if (rc == OK) {
                (void)ap_should_client_block(r); /* sends 100-continue if asked */
                self->body_ready = 1;
            }
        }
        if (rc == OK) {
            got = ap_get_client_block(r, PyBytes_AS_STRING(out) + have, room);
            if (got > 0) {
                self->body_read += got;
            }
            else if (got < 0) {
                limit = ap_get_limit_req_body(r);
                before = self->body_read;
            }
        }
        pyr_guard_leave(self->guard);
        Py_END_ALLOW_THREADS if (rc != OK)
        {
            Py_DECREF(out);
            return http_error(rc, "the request body cannot be read");
        }
        if (got == 0) {
            break;
        }
        if (got < 0) {
            Py_DECREF(out);
            if (limit > 0 && before + (apr_off_t)room > limit) {
                return http_error(HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "the request body is larger than LimitRequestBody");
            }
            return http_error(HTTP_BAD_REQUEST, "reading the request body failed");
        }
        have += got;
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
    static char *kwlist[] = { "message", "level", NULL };
    const char *msg; /* borrowed from args, which outlive the call */
    int level = APLOG_ERR;
    request_rec *r;

    LIVE(self, NULL);
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|i:log_error", kwlist, &msg, &level)) {
        return NULL;
    }
    if (level < APLOG_EMERG || level > APLOG_DEBUG) {
        return PyErr_Format(PyExc_ValueError,
                            "level must be one of pyreload.APLOG_*, "
                            "from %d to %d",
                            APLOG_EMERG, APLOG_DEBUG);
    }
    if (pyr_guard_enter(self->guard) < 0) {
        return NULL;
    }
    r = self->r;
    Py_BEGIN_ALLOW_THREADS ap_log_rerror(APLOG_MARK, level, 0, r, "%s", msg);
    pyr_guard_leave(self->guard);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static void
req_dealloc(request_t *self)
{
    Py_CLEAR(self->headers_in);
    Py_CLEAR(self->headers_out);
    Py_CLEAR(self->err_headers_out);
    Py_CLEAR(self->options);
    pyr_guard_unref(self->guard);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
req_repr(request_t *self)
{
    if (!pyr_guard_live(self->guard)) {
        return PyUnicode_FromString("<pyreload.Request (finished)>");
    }
    return PyUnicode_FromFormat("<pyreload.Request %s %s>", self->r->method, self->r->uri);
}

#define STR_ATTR(name, which, doc)                                                                 \
    {                                                                                              \
        name, (getter)req_get_str, NULL, doc, (void *)(intptr_t)(which)                            \
    }
#define TABLE_ATTR(name, which, doc)                                                               \
    {                                                                                              \
        name, (getter)req_get_table, NULL, doc, (void *)(intptr_t)(which)                          \
    }

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
    TABLE_ATTR("headers_in", T_HEADERS_IN, "Request headers (read-only)."),
    TABLE_ATTR("headers_out", T_HEADERS_OUT, "Response headers."),
    TABLE_ATTR("err_headers_out", T_ERR_HEADERS_OUT,
               "Response headers kept on error responses too."),
    TABLE_ATTR("options", T_OPTIONS, "PyReloadOption values."),
    { "content_type", (getter)req_get_content_type, (setter)req_set_content_type,
      "The response's Content-Type.", NULL },
    { "status", (getter)req_get_status, (setter)req_set_status,
      "The response's status (returned with OK).", NULL },
    { NULL }
};

static PyMethodDef req_methods[] = {
    { "write", (PyCFunction)req_write, METH_O, "write(data): bytes, or str as UTF-8." },
    { "flush", (PyCFunction)req_flush, METH_NOARGS, "Send what was written so far." },
    { "read", (PyCFunction)(void (*)(void))req_read, METH_FASTCALL,
      "read(size=-1): the request body, as bytes; b'' at its end." },
    { "log_error", (PyCFunction)(void (*)(void))req_log_error, METH_VARARGS | METH_KEYWORDS,
      "log_error(message, level=pyreload.APLOG_ERR)" },
    { NULL }
};

static PyTypeObject request_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyreload.Request",
    .tp_basicsize = sizeof(request_t),
    .tp_dealloc = (destructor)req_dealloc,
    .tp_repr = (reprfunc)req_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The request a handler is answering (valid only during it).",
    .tp_methods = req_methods,
    .tp_getset = req_getset,
};

int
pyr_req_register(PyObject *module)
{
    if (PyType_Ready(&request_type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Request", (PyObject *)&request_type);
}

/* ------------------------------------------------------------------ */
/* The protocol                                                        */

/* A 1xx would go out as the final response, and the client would wait for
 * the real one: a 500 of ours instead. */
static void
not_final(const char *what, const char *how, long v, pyr_outcome_t *o)
{
    char buf[256];

    snprintf(buf, sizeof(buf),
             "%s %s %ld: a 1xx is not a final status; a handler must "
             "answer with a status from 200 to 599\n",
             what, how, v);
    o->status = HTTP_INTERNAL_SERVER_ERROR;
    o->failed = 1;
    o->why = pyr_xstrdup(buf);
}

static void
req_judge(pyr_call_t *c, PyObject *result, pyr_outcome_t *o)
{
    const char *what = c->cfg->handler->callable;
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
            if (v >= 100 && v < 200) {
                not_final(what, "raised pyreload.HTTPError", v, o);
                return;
            }
            o->status = (v >= 200 && v <= 599) ? (int)v : HTTP_INTERNAL_SERVER_ERROR;
            return;
        }
        pyr_outcome_exception(o);
        return;
    }
    if (PyLong_Check(result) && !PyBool_Check(result)) {
        v = PyLong_AsLong(result);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear(); /* too large for a long: reported below as invalid */
        }
        else if (v == OK || v == HTTP_OK) {
            o->status = OK;
            return;
        }
        else if (v >= 100 && v < 200) {
            not_final(what, "returned", v, o);
            return;
        }
        else if (v == DECLINED || v == DONE || (v >= 200 && v <= 599)) {
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
        snprintf(buf, sizeof(buf),
                 "%s returned %.200s (a %.100s); a handler must "
                 "return an int: pyreload.OK, an HTTP status from 200 to 599, "
                 "pyreload.DECLINED or pyreload.DONE\n",
                 what, rs ? rs : "?", Py_TYPE(result)->tp_name);
        Py_XDECREF(repr);
        o->status = HTTP_INTERNAL_SERVER_ERROR;
        o->failed = 1;
        o->why = pyr_xstrdup(buf);
    }
}

static int
req_start(pyr_call_t *c)
{
    pyr_guard_t *guard;
    request_t *req;

    if (!(guard = pyr_guard_new())) {
        return -1;
    }
    if (!(req = PyObject_New(request_t, &request_type))) {
        pyr_guard_unref(guard);
        return -1;
    }
    req->guard = guard; /* req's reference */
    req->r = c->r;
    req->cfg = c->cfg;
    req->bb = c->bb;
    req->pending = 0;
    req->passed = 0;
    req->body_ready = 0;
    req->body_read = 0;
    req->headers_in = req->headers_out = req->err_headers_out = req->options = NULL;
    c->state = req; /* owned until req_finish() */
    return 0;
}

static PyObject *
req_call(pyr_call_t *c, PyObject *fn)
{
    return PyObject_CallOneArg(fn, (PyObject *)c->state);
}

/* Threads that kept req: the one inside it finishes, the others get
 * RuntimeError from now on, and r and bb are serve.c's again. */
static int
req_finish(pyr_call_t *c)
{
    request_t *req = c->state;
    int passed;

    pyr_guard_close(req->guard);
    passed = req->passed;
    req->r = NULL;
    Py_DECREF(req);
    c->state = NULL;
    return passed;
}

const pyr_protocol_t pyr_protocol_pyreload = {
    "pyreload", req_start, req_call, req_judge, req_finish,
};
