/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * wsgi.c: the WSGI protocol (PEP 3333), application(environ, start_response),
 * as a row of serve.c's protocol table: start_response and write(),
 * calling the application, sending what it returns, close() of the
 * result exactly once, and what the outcome means for the response.
 * environ is wsgi_environ.c, wsgi.input wsgi_input.c, wsgi.errors and
 * wsgi.file_wrapper wsgi_stream.c.
 *
 * How a response goes out:
 *   - status and headers become r's when the first non-empty block comes
 *     (or at the end): until then start_response(..., exc_info) may
 *     replace them;
 *   - a list or tuple: copied into serve.c's brigade, which it sends with
 *     the EOS (httpd adds the Content-Length) after the GIL is released;
 *     past BUFFER_LIMIT bytes, passed without a copy under a
 *     Content-Length of ours;
 *   - a FileWrapper over a regular file: an APR file bucket (sendfile);
 *   - any other iterable, and write(): each block passed to the filters
 *     with a flush as it comes, the GIL released, so nothing accumulates
 *     (a 200 MiB generator streams in bounded memory);
 *   - an application's Content-Length is a limit: bytes past it are
 *     dropped, and a body that ends short of it is a failure (after output
 *     started: serve.c cuts the response short);
 *   - HEAD: the application runs, no body goes out.
 *
 * Every object a request gives the application (start_response, write,
 * wsgi.input, wsgi.errors) shares the request's guard (guard.c): kept past
 * the request, they raise RuntimeError instead of touching freed memory.
 */
#include "pyr_httpd.h"
#include "pyr_mem.h"

#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "util_filter.h"

#include <apr_lib.h>
#include <apr_strings.h>

#include <unistd.h>

APLOG_USE_MODULE(pyreload);

/* A list or tuple result up to this size is copied into one brigade. */
#define BUFFER_LIMIT (64 * 1024)

static PyObject *str_close; /* "close", interned */
static int registered;      /* what pyr_wsgi_register() makes exists */

typedef struct header {
    const char *name, *value;
} header_t;

/* start_response for one request; also what write() is bound to. */
typedef struct {
    PyObject_HEAD vectorcallfunc vectorcall;
    pyr_guard_t *guard; /* owned */
    request_rec *r;     /* valid while the guard is live */
    apr_bucket_brigade *bb;
    PyObject *input, *errors; /* owned: wsgi.input and wsgi.errors */
    /* The last start_response() call (r->pool), applied to r when output
     * starts. */
    int status;
    const char *status_line;
    apr_array_header_t *headers; /* header_t, Content-Type left out */
    const char *content_type;
    apr_off_t clen; /* the application's Content-Length, or -1 */
    apr_off_t sent; /* body bytes given to httpd (counted also for HEAD) */
    int started;    /* start_response() was called */
    int applied;    /* status and headers are r's: they can no longer change */
    int passed;     /* something went to the filters: the headers are out */
    int head;       /* HEAD: no body */
    int gone;       /* sending failed: the client has gone */
    int undo;       /* judged a failure: r gets none of the response */
    char *fault;    /* malloc'd: what was wrong with a response that returned */
} resp_t;

/* The protocol's state of a request (c->state), from r->pool. */
typedef struct wsgi_state {
    resp_t *resp;      /* owned */
    PyObject *environ; /* owned */
} wsgi_state_t;

static PyTypeObject resp_type;

static void
rlog(void *baton, int level, const char *line)
{
    ap_log_rerror(APLOG_MARK, level, 0, (request_rec *)baton, "%s", line);
}

/* ------------------------------------------------------------------ */
/* start_response                                                      */

/* The bytes of a native string (ISO-8859-1, PEP 3333), borrowed from u. */
static int
latin1_view(PyObject *u, const char *what, const char **s, Py_ssize_t *n)
{
    if (!PyUnicode_Check(u)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(u)->tp_name);
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(u) < 0) {
        return -1;
    }
#endif
    if (PyUnicode_KIND(u) != PyUnicode_1BYTE_KIND) {
        PyErr_Format(PyExc_ValueError, "%s must be ISO-8859-1 text (PEP 3333): %R", what, u);
        return -1;
    }
    *s = (const char *)PyUnicode_DATA(u);
    *n = PyUnicode_GET_LENGTH(u);
    return 0;
}

/* Control characters would split or end the header block (CR, LF) or
 * confuse a client (NUL and the others); a tab is allowed in values. */
static int
has_control(const char *s, Py_ssize_t n, int tab_ok)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if ((ch < 0x20 && !(tab_ok && ch == '\t')) || ch == 0x7f) {
            return 1;
        }
    }
    return 0;
}

static int
is_token(const char *s, Py_ssize_t n)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (!apr_isalnum(ch) && !(ch && strchr("!#$%&'*+-.^_`|~", ch))) {
            return 0;
        }
    }
    return n > 0;
}

/* PEP 3333: an application must not send these; the server owns the
 * connection. */
static int
is_hop_by_hop(const char *name)
{
    static const char *const hop[] = { "Connection", "Keep-Alive",
                                       "Proxy-Authenticate", "Proxy-Authorization",
                                       "TE",         "Trailers",
                                       "Transfer-Encoding", "Upgrade" };
    size_t i;

    for (i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
        if (!strcasecmp(name, hop[i])) {
            return 1;
        }
    }
    return 0;
}

/* "NNN Reason": the code, and the line httpd is to send. */
static int
parse_status(resp_t *self, PyObject *status, int *code, const char **line)
{
    const char *s;
    Py_ssize_t n;

    if (latin1_view(status, "status", &s, &n) < 0) {
        return -1;
    }
    if (n < 4 || !apr_isdigit(s[0]) || !apr_isdigit(s[1]) || !apr_isdigit(s[2]) || s[3] != ' ' ||
        has_control(s, n, 0)) {
        PyErr_Format(PyExc_ValueError,
                     "status must be three digits, a space and a reason, such as '200 OK' "
                     "(PEP 3333), not %R",
                     status);
        return -1;
    }
    *code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (*code < 200 || *code > 599) {
        PyErr_Format(PyExc_ValueError, "status must be from 200 to 599%s, not %R",
                     *code >= 100 && *code < 200 ? " (a 1xx is not a final status)" : "",
                     status);
        return -1;
    }
    *line = apr_pstrmemdup(self->r->pool, s, (apr_size_t)n);
    return 0;
}

static int
parse_length(const char *s, Py_ssize_t n, apr_off_t *len)
{
    apr_off_t v = 0;
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        if (!apr_isdigit(s[i]) || v > (APR_INT64_MAX - 9) / 10) {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *len = v;
    return n > 0 ? 0 : -1;
}

/* The response headers, checked, into r->pool: all or nothing. */
static int
parse_headers(resp_t *self, PyObject *list, apr_array_header_t **out, const char **ctype,
              apr_off_t *clen)
{
    apr_pool_t *p = self->r->pool;
    Py_ssize_t i, count;
    apr_array_header_t *arr;

    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError,
                     "response_headers must be a list of (name, value) tuples, not %.100s",
                     Py_TYPE(list)->tp_name);
        return -1;
    }
    count = PyList_GET_SIZE(list);
    arr = apr_array_make(p, count > 0 ? (int)count : 1, sizeof(header_t));
    *ctype = NULL;
    *clen = -1;
    for (i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        const char *name, *value;
        Py_ssize_t nn, vn;
        header_t *h;

        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "each response header must be a (name, value) tuple, not %.100s",
                         Py_TYPE(item)->tp_name);
            return -1;
        }
        if (latin1_view(PyTuple_GET_ITEM(item, 0), "a header name", &name, &nn) < 0 ||
            latin1_view(PyTuple_GET_ITEM(item, 1), "a header value", &value, &vn) < 0) {
            return -1;
        }
        if (!is_token(name, nn)) {
            PyErr_Format(PyExc_ValueError, "invalid header name %R", PyTuple_GET_ITEM(item, 0));
            return -1;
        }
        if (has_control(value, vn, 1)) {
            PyErr_Format(PyExc_ValueError,
                         "the value of header %R contains a control character (CR, LF, ...)",
                         PyTuple_GET_ITEM(item, 0));
            return -1;
        }
        name = apr_pstrmemdup(p, name, (apr_size_t)nn);
        value = apr_pstrmemdup(p, value, (apr_size_t)vn);
        if (is_hop_by_hop(name)) {
            PyErr_Format(PyExc_ValueError,
                         "%s is a hop-by-hop header, which an application must not send "
                         "(PEP 3333)",
                         name);
            return -1;
        }
        if (!strcasecmp(name, "Content-Type")) {
            *ctype = value;
            continue;
        }
        if (!strcasecmp(name, "Content-Length") && parse_length(value, vn, clen) < 0) {
            PyErr_Format(PyExc_ValueError, "Content-Length must be a number of bytes, not %R",
                         PyTuple_GET_ITEM(item, 1));
            return -1;
        }
        h = apr_array_push(arr);
        h->name = name;
        h->value = value;
    }
    *out = arr;
    return 0;
}

static PyObject *resp_write(resp_t *self, PyObject *data);
static PyMethodDef write_def = { "write", (PyCFunction)resp_write, METH_O,
                                 "write(bytes): send a block of the body now." };

/* start_response(status, response_headers, exc_info=None) -> write */
static PyObject *
start_response(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    static const char *const names[3] = { "status", "response_headers", "exc_info" };
    resp_t *self = (resp_t *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), i, j;
    PyObject *a[3] = { NULL, NULL, NULL }, *exc_info;
    apr_array_header_t *headers;
    const char *line, *ctype;
    apr_off_t clen;
    int code;

    if (nargs > 3) {
        return PyErr_Format(PyExc_TypeError, "start_response() takes at most 3 arguments");
    }
    for (i = 0; i < nargs; i++) {
        a[i] = args[i];
    }
    for (i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++) {
        for (j = 0; j < 3; j++) {
            if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), names[j]) == 0) {
                break;
            }
        }
        if (j == 3 || a[j]) {
            return PyErr_Format(PyExc_TypeError, "start_response() got %s argument %R",
                                j == 3 ? "an unexpected keyword" : "multiple values for",
                                PyTuple_GET_ITEM(kwnames, i));
        }
        a[j] = args[nargs + i];
    }
    if (!a[0] || !a[1]) {
        return PyErr_Format(PyExc_TypeError,
                            "start_response() takes status and response_headers");
    }
    if (pyr_guard_check(self->guard) < 0) {
        return NULL;
    }
    exc_info = a[2] == Py_None ? NULL : a[2];
    if (exc_info) {
        if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3 ||
            !PyExceptionClass_Check(PyTuple_GET_ITEM(exc_info, 0))) {
            return PyErr_Format(PyExc_TypeError,
                                "exc_info must be a (type, value, traceback) tuple "
                                "(sys.exc_info())");
        }
        if (self->applied) {
            /* Too late to replace what has gone out: PEP 3333 has the
             * application's exception raised again, to end the request. */
            PyObject *tb = PyTuple_GET_ITEM(exc_info, 2);

            PyErr_Restore(Py_NewRef(PyTuple_GET_ITEM(exc_info, 0)),
                          Py_NewRef(PyTuple_GET_ITEM(exc_info, 1)),
                          tb == Py_None ? NULL : Py_NewRef(tb));
            return NULL;
        }
    }
    else if (self->started) {
        PyErr_SetString(PyExc_AssertionError,
                        "start_response() was called already: a second call must pass "
                        "exc_info (PEP 3333)");
        return NULL;
    }
    /* A call that raises still counts, as in wsgiref: calling again needs
     * exc_info, and a body without a good call is an error. */
    self->started = 1;
    if (parse_status(self, a[0], &code, &line) < 0 ||
        parse_headers(self, a[1], &headers, &ctype, &clen) < 0) {
        self->headers = NULL;
        return NULL;
    }
    self->status = code;
    self->status_line = line;
    self->headers = headers;
    self->content_type = ctype;
    self->clen = clen;
    return PyCFunction_New(&write_def, (PyObject *)self);
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

/* The status and headers become r's.  GIL; request live. */
static void
apply(resp_t *self)
{
    request_rec *r = self->r;
    const header_t *h = (const header_t *)self->headers->elts;
    int i;

    r->status = self->status;
    r->status_line = self->status_line;
    if (self->content_type) {
        ap_set_content_type(r, self->content_type);
    }
    for (i = 0; i < self->headers->nelts; i++) {
        apr_table_addn(r->headers_out, h[i].name, h[i].value);
    }
    self->applied = 1;
}

/* A failure answered by httpd's own error page: nothing of the
 * application's response may go with it. */
static void
unapply(resp_t *self)
{
    if (self->applied && !self->passed) {
        apr_table_clear(self->r->headers_out);
        self->r->status_line = NULL;
        self->r->content_type = NULL;
        self->r->status = HTTP_OK;
        self->applied = 0;
    }
}

/* Before the request thread touches r or the brigade: wait until no
 * thread the application started is inside the request (reading
 * wsgi.input without the GIL, say); holding the GIL from then on, nobody
 * can enter.  Then the status and headers, applied if need be. */
static int
need_start(resp_t *self, const char *when)
{
    if (pyr_guard_check(self->guard) < 0) {
        return -1;
    }
    if (self->headers) {
        if (!self->applied) {
            apply(self);
        }
        return 0;
    }
    PyErr_Format(PyExc_RuntimeError, "the application %s before %s", when,
                 self->started ? "a start_response() call that succeeded"
                               : "it called start_response()");
    return -1;
}

/* How much of n more bytes the application's Content-Length lets out. */
static apr_off_t
allowed(resp_t *self, apr_off_t n)
{
    if (self->clen >= 0 && n > self->clen - self->sent) {
        n = self->clen - self->sent > 0 ? self->clen - self->sent : 0;
    }
    self->sent += n;
    return n;
}

/* Pass serve.c's brigade to the filters with the first `room` bytes of the
 * bytes objects items[0 .. count) and a flush, the GIL released, inside the
 * guard.  The blocks go as transient buckets: they stay alive and
 * unchanged (bytes) until the filters return, and a filter that keeps one
 * copies it.  0, or -1 with an exception. */
static int
pass(resp_t *self, PyObject *const *items, Py_ssize_t count, apr_off_t room)
{
    request_rec *r;
    apr_status_t rv;
    Py_ssize_t i;

    if (self->gone) {
        PyErr_SetString(PyExc_OSError, "sending the response failed: the client has gone");
        return -1;
    }
    if (pyr_guard_enter(self->guard) < 0) {
        return -1;
    }
    r = self->r;
    self->passed = 1;
    Py_BEGIN_ALLOW_THREADS apr_bucket_alloc_t *ba = r->connection->bucket_alloc;

    for (i = 0; i < count && room > 0; i++) {
        apr_off_t n = PyBytes_GET_SIZE(items[i]) < room ? PyBytes_GET_SIZE(items[i]) : room;

        if (n > 0) {
            APR_BRIGADE_INSERT_TAIL(self->bb, apr_bucket_transient_create(
                                                  PyBytes_AS_STRING(items[i]), (apr_size_t)n, ba));
        }
        room -= n;
    }
    APR_BRIGADE_INSERT_TAIL(self->bb, apr_bucket_flush_create(ba));
    rv = ap_pass_brigade(r->output_filters, self->bb);
    apr_brigade_cleanup(self->bb);
    pyr_guard_leave(self->guard);
    Py_END_ALLOW_THREADS

    if (rv != APR_SUCCESS) {
        self->gone = 1;
        PyErr_SetString(PyExc_OSError, "sending the response failed: the client has gone");
        return -1;
    }
    return 0;
}

/* One block of the body, sent now. */
static int
send_block(resp_t *self, PyObject *block)
{
    apr_off_t n;

    if (!PyBytes_Check(block)) {
        PyErr_Format(PyExc_TypeError, "response body blocks must be bytes (PEP 3333), not %.100s",
                     Py_TYPE(block)->tp_name);
        return -1;
    }
    if (PyBytes_GET_SIZE(block) == 0) {
        return 0;
    }
    if (need_start(self, "produced body") < 0) {
        return -1;
    }
    n = allowed(self, PyBytes_GET_SIZE(block));
    if (self->head) {
        /* The headers go now, as for GET; the body never. */
        return self->passed ? 0 : pass(self, NULL, 0, 0);
    }
    return n > 0 ? pass(self, &block, 1, n) : 0;
}

static PyObject *
resp_write(resp_t *self, PyObject *data)
{
    int past;

    if (pyr_guard_check(self->guard) < 0) {
        return NULL;
    }
    past = PyBytes_Check(data) && self->clen >= 0 &&
           PyBytes_GET_SIZE(data) > self->clen - self->sent;
    if (send_block(self, data) < 0) {
        return NULL;
    }
    if (past) {
        /* PEP 3333: what fits was sent; the application is told the rest
         * was not. */
        return PyErr_Format(PyExc_ValueError,
                            "write() past the Content-Length of %" APR_OFF_T_FMT
                            " bytes the application set: the rest was not sent (PEP 3333)",
                            self->clen);
    }
    Py_RETURN_NONE;
}

/* The body has ended: what a short one means. */
static int
end_body(resp_t *self)
{
    if (need_start(self, "returned") < 0) {
        return -1;
    }
    if (self->clen >= 0 && self->sent < self->clen && !self->head && !self->fault) {
        char buf[256];

        snprintf(buf, sizeof(buf),
                 "the response has %" APR_OFF_T_FMT " bytes of body, less than the "
                 "Content-Length of %" APR_OFF_T_FMT " that the application sent\n",
                 self->sent, self->clen);
        self->fault = pyr_xstrdup(buf);
        /* What there is goes out, and then the connection is cut (serve.c),
         * so that no client takes it for the whole body. */
        if (!self->passed) {
            return pass(self, NULL, 0, 0);
        }
    }
    return 0;
}

/* Set Content-Length to a body we know whole but do not send in one brigade
 * with its EOS. */
static void
set_length(resp_t *self, apr_off_t total)
{
    if (!self->passed && self->clen < 0) {
        ap_set_content_length(self->r, total);
    }
}

/* A list or tuple: every block is known now. */
static int
send_sequence(resp_t *self, PyObject *seq)
{
    Py_ssize_t i, count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    apr_off_t total = 0, room;
    PyObject *snap;
    int rc;

    /* From here to the copy or the pass the GIL is kept (the guard is
     * idle, need_start() waits for nothing), so no other thread can change
     * a list between its check and its use. */
    if (pyr_guard_check(self->guard) < 0) {
        return -1;
    }
    for (i = 0; i < count; i++) {
        if (!PyBytes_Check(items[i])) {
            PyErr_Format(PyExc_TypeError,
                         "response body blocks must be bytes (PEP 3333), not %.100s",
                         Py_TYPE(items[i])->tp_name);
            return -1;
        }
        total += PyBytes_GET_SIZE(items[i]);
    }
    if (need_start(self, "returned") < 0) {
        return -1;
    }
    room = total = allowed(self, total);
    if (self->head || total == 0) {
        if (self->head) {
            set_length(self, total);
        }
        return end_body(self);
    }
    if (total <= BUFFER_LIMIT) {
        for (i = 0; i < count && room > 0; i++) {
            apr_off_t n = PyBytes_GET_SIZE(items[i]) < room ? PyBytes_GET_SIZE(items[i]) : room;

            apr_brigade_write(self->bb, NULL, NULL, PyBytes_AS_STRING(items[i]), (apr_size_t)n);
            room -= n;
        }
        return end_body(self);
    }
    /* Large: no copy.  Passed without the GIL, the blocks must stay alive
     * even if another thread empties the list meanwhile: a tuple of them. */
    if (!(snap = PyList_CheckExact(seq) ? PyList_AsTuple(seq) : Py_NewRef(seq))) {
        return -1;
    }
    set_length(self, total);
    rc = pass(self, PySequence_Fast_ITEMS(snap), PySequence_Fast_GET_SIZE(snap), total);
    Py_DECREF(snap);
    return rc < 0 ? -1 : end_body(self);
}

static apr_status_t
close_fd(void *fd)
{
    close((int)(intptr_t)fd);
    return APR_SUCCESS;
}

/* A FileWrapper over a regular file: the file goes as a bucket of its own
 * descriptor (fd, now ours), which r->pool closes after httpd has sent it
 * (the request's pool outlives its output). */
static int
send_file(resp_t *self, int fd, apr_off_t offset, apr_off_t size)
{
    request_rec *r = self->r;
    apr_os_file_t osf = fd;
    apr_file_t *f = NULL;
    apr_off_t n;

    if (pyr_guard_check(self->guard) < 0) {
        close(fd);
        return -1;
    }
    apr_pool_cleanup_register(r->pool, (void *)(intptr_t)fd, close_fd, apr_pool_cleanup_null);
    if (need_start(self, "returned") < 0) {
        return -1;
    }
    n = allowed(self, size);
    if (self->head) {
        set_length(self, n);
    }
    else if (n > 0) {
        if (apr_os_file_put(&f, &osf, APR_FOPEN_READ | APR_FOPEN_SENDFILE_ENABLED, r->pool) !=
            APR_SUCCESS) {
            PyErr_SetString(PyExc_OSError, "cannot send the file");
            return -1;
        }
        apr_brigade_insert_file(self->bb, f, offset, n, r->pool);
    }
    return end_body(self);
}

/* Any other iterable: each block sent as it comes. */
static int
send_iterable(resp_t *self, PyObject *result)
{
    PyObject *it = PyObject_GetIter(result), *item;

    if (!it) {
        return -1;
    }
    while ((item = PyIter_Next(it))) {
        int rc = send_block(self, item);

        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
        /* PEP 3333: stop iterating once the Content-Length is sent. */
        if (self->clen >= 0 && self->sent >= self->clen) {
            break;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        return -1;
    }
    return end_body(self);
}

static int
respond(resp_t *self, PyObject *result)
{
    if (PyList_CheckExact(result) || PyTuple_CheckExact(result)) {
        return send_sequence(self, result);
    }
    if (PyObject_TypeCheck(result, &pyr_FileWrapperType)) {
        apr_off_t offset, size;
        int fd, rc = pyr_file_wrapper_fd(result, &fd, &offset, &size);

        if (rc != 0) {
            return rc < 0 ? -1 : send_file(self, fd, offset, size);
        }
    }
    return send_iterable(self, result);
}

/* result.close() if it has one, whatever happened before (an exception
 * may be set: it stays the one reported; close()'s own is logged). */
static int
close_result(pyr_call_t *c, PyObject *result)
{
    PyObject *type, *value, *tb, *close, *r = NULL;

    if (PyList_CheckExact(result) || PyTuple_CheckExact(result)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyErr_Fetch(&type, &value, &tb);
    if ((close = PyObject_GetAttr(result, str_close))) {
        r = PyObject_CallNoArgs(close);
        Py_DECREF(close);
    }
    else if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        r = Py_NewRef(Py_None);
    }
    if (r) {
        Py_DECREF(r);
    }
    else if (type) {
        pyr_logger_t log = { rlog, c->r };
        char *why = pyr_exc_format();

        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, c->r,
                      "PYR0401: %s::%s: close() of the response failed too:",
                      c->cfg->handler->path, c->cfg->handler->callable);
        pyr_log_lines(&log, APLOG_ERR, "PYR0401: ", why);
        free(why);
    }
    else {
        return -1;
    }
    PyErr_Restore(type, value, tb);
    return type ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* The protocol                                                        */

static int
wsgi_start(pyr_call_t *c)
{
    request_rec *r = c->r;
    pyr_guard_t *guard = pyr_guard_new();
    wsgi_state_t *w;
    resp_t *self;

    if (!guard) {
        return -1;
    }
    if (!(self = PyObject_New(resp_t, &resp_type))) {
        pyr_guard_unref(guard);
        return -1;
    }
    self->vectorcall = start_response;
    self->guard = guard; /* self's reference */
    self->r = r;
    self->bb = c->bb;
    self->input = self->errors = NULL;
    self->status = HTTP_OK;
    self->status_line = NULL;
    self->headers = NULL;
    self->content_type = NULL;
    self->clen = -1;
    self->sent = 0;
    self->started = self->applied = self->passed = self->gone = self->undo = 0;
    self->head = r->header_only;
    self->fault = NULL;
    w = apr_palloc(r->pool, sizeof(*w));
    w->resp = self;
    if (!(self->input = pyr_wsgi_input_new(r, guard)) ||
        !(self->errors = pyr_wsgi_errors_new(r, guard)) ||
        !(w->environ = pyr_wsgi_environ(c, guard, self->input, self->errors))) {
        Py_DECREF(self);
        return -1;
    }
    c->state = w;
    return 0;
}

static PyObject *
wsgi_call(pyr_call_t *c, PyObject *fn)
{
    wsgi_state_t *w = c->state;
    PyObject *args[2] = { w->environ, (PyObject *)w->resp };
    PyObject *result = PyObject_Vectorcall(fn, args, 2, NULL);
    int rc;

    if (!result) {
        return NULL;
    }
    rc = respond(w->resp, result);
    rc = close_result(c, result) < 0 || rc < 0 ? -1 : 0;
    Py_DECREF(result);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static void
wsgi_judge(pyr_call_t *c, PyObject *result, pyr_outcome_t *o)
{
    resp_t *self = ((wsgi_state_t *)c->state)->resp;
    int body = pyr_wsgi_input_error(self->input);

    o->status = OK;
    o->failed = 0;
    o->why = NULL;
    if (!result && self->gone) {
        /* Nobody is left to answer; not the application's fault. */
        PyErr_Clear();
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, c->r,
                      "PYR0402: the client went away before the response of %s::%s was sent",
                      c->cfg->handler->path, c->cfg->handler->callable);
    }
    else if (!result && self->passed && self->clen >= 0 && self->sent >= self->clen) {
        /* The whole body its Content-Length announced is out: cutting the
         * connection now could only lose what the client has not read yet
         * (a reset discards it).  Logged, not cut. */
        pyr_logger_t log = { rlog, c->r };
        char *why = pyr_exc_format();

        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, c->r,
                      "PYR0403: %s::%s failed after its whole response (Content-Length %" APR_OFF_T_FMT
                      ") was sent:",
                      c->cfg->handler->path, c->cfg->handler->callable, self->clen);
        pyr_log_lines(&log, APLOG_ERR, "PYR0403: ", why);
        free(why);
    }
    else if (!result && body && !self->passed) {
        /* The application let the failed body read end it: the status
         * that read called for (413 past LimitRequestBody). */
        PyErr_Clear();
        o->status = body;
    }
    else if (!result) {
        pyr_outcome_exception(o);
    }
    else if (self->fault) {
        o->status = HTTP_INTERNAL_SERVER_ERROR;
        o->failed = 1;
        o->why = self->fault;
        self->fault = NULL;
    }
    /* Undone in finish(), once no other thread can be inside r. */
    self->undo = o->status != OK;
}

static int
wsgi_finish(pyr_call_t *c)
{
    wsgi_state_t *w = c->state;
    resp_t *self = w->resp;
    int passed;

    if (pyr_wsgi_errors_flush(self->errors) < 0) {
        PyErr_Clear(); /* the request ends either way */
    }
    pyr_guard_close(self->guard);
    if (self->undo) {
        unapply(self);
    }
    passed = self->passed;
    self->r = NULL;
    self->bb = NULL;
    Py_CLEAR(w->environ);
    Py_CLEAR(w->resp);
    c->state = NULL;
    return passed;
}

const pyr_protocol_t pyr_protocol_wsgi = {
    "wsgi", wsgi_start, wsgi_call, wsgi_judge, wsgi_finish,
};

/* ------------------------------------------------------------------ */
/* The type, and what every request shares                             */

static void
resp_dealloc(resp_t *self)
{
    Py_CLEAR(self->input);
    Py_CLEAR(self->errors);
    free(self->fault);
    pyr_guard_unref(self->guard);
    PyObject_Free(self);
}

static PyObject *
resp_repr(resp_t *self)
{
    return PyUnicode_FromString("<pyreload start_response>");
}

static PyTypeObject resp_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyreload.StartResponse",
    .tp_basicsize = sizeof(resp_t),
    .tp_dealloc = (destructor)resp_dealloc,
    .tp_vectorcall_offset = offsetof(resp_t, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_repr = (reprfunc)resp_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "start_response(status, response_headers, exc_info=None) -> write "
              "(valid only during its request).",
};

/* At finalisation, while Python still runs (atexit), as pymod.c does for
 * HTTPError. */
static PyObject *
drop_shared(PyObject *unused1, PyObject *unused2)
{
    pyr_wsgi_environ_fini();
    Py_CLEAR(str_close);
    registered = 0;
    Py_RETURN_NONE;
}

static PyMethodDef drop_shared_def = { "_drop_wsgi", drop_shared, METH_NOARGS, NULL };

int
pyr_wsgi_register(PyObject *module)
{
    if (PyType_Ready(&resp_type) < 0 || PyType_Ready(&pyr_WSGIInputType) < 0 ||
        PyType_Ready(&pyr_WSGIErrorsType) < 0 || PyType_Ready(&pyr_FileWrapperType) < 0 ||
        PyModule_AddObjectRef(module, "FileWrapper", (PyObject *)&pyr_FileWrapperType) < 0) {
        return -1;
    }
    if (registered) {
        return 0; /* the module made again (a handler removed it from sys.modules) */
    }
    if (!(str_close = PyUnicode_InternFromString("close")) || pyr_wsgi_environ_init() < 0 ||
        pyr_atexit(&drop_shared_def) < 0) {
        return -1;
    }
    registered = 1;
    return 0;
}
