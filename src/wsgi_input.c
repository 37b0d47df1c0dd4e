/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * wsgi_input.c: wsgi.input, the request body as PEP 3333 reads it:
 * read(size), read(), readline(size), readlines(hint), iteration.
 *
 * The body comes from httpd's input filters (ap_get_brigade), which
 * dechunk a chunked body, stop at its end (Content-Length or the last
 * chunk: read() then returns b"", hence wsgi.input_terminated), send
 * "100 Continue" when the client waits for it, and enforce
 * LimitRequestBody.  Each read runs with the GIL released and inside the
 * request's guard (guard.c), so a thread that kept wsgi.input past its
 * request gets RuntimeError, and two threads reading take turns.
 *
 * Only readline() needs a look-ahead buffer; read(size) fills the bytes
 * object it returns directly.
 */
#include "pyr_httpd.h"

#include "http_protocol.h"
#include "util_filter.h"

APLOG_USE_MODULE(pyreload);

#define CHUNK 8192

typedef struct {
    PyObject_HEAD pyr_guard_t *guard; /* owned */
    request_rec *r;                   /* valid while the guard is live */
    apr_bucket_brigade *bb;           /* from r->pool, on the first read */
    char *buf;                        /* PyMem: what readline() read ahead */
    Py_ssize_t pos, len, cap;
    int eof;
    int error; /* the HTTP status a failed read calls for, or 0 */
} input_t;

PyObject *
pyr_wsgi_input_new(request_rec *r, pyr_guard_t *guard)
{
    input_t *self = PyObject_New(input_t, &pyr_WSGIInputType);

    if (!self) {
        return NULL;
    }
    pyr_guard_ref(guard);
    self->guard = guard;
    self->r = r;
    self->bb = NULL;
    self->buf = NULL;
    self->pos = self->len = self->cap = 0;
    self->eof = 0;
    self->error = 0;
    return (PyObject *)self;
}

int
pyr_wsgi_input_error(PyObject *input)
{
    return ((input_t *)input)->error;
}

static void
input_dealloc(input_t *self)
{
    PyMem_Free(self->buf);
    pyr_guard_unref(self->guard);
    PyObject_Free(self);
}

/* Up to room bytes of the body into dst: *got 0 at its end.  0, or -1
 * with OSError (or RuntimeError) set. */
static int
fetch(input_t *self, char *dst, apr_size_t room, apr_size_t *got)
{
    request_rec *r;
    apr_status_t rv = APR_SUCCESS;
    apr_size_t n = 0;
    int eos = 0;

    *got = 0;
    if (self->error) {
        PyErr_SetString(PyExc_OSError, "reading the request body failed already");
        return -1;
    }
    if (self->eof || room == 0) {
        return 0;
    }
    if (pyr_guard_enter(self->guard) < 0) {
        return -1;
    }
    r = self->r;
    Py_BEGIN_ALLOW_THREADS if (!self->bb)
    {
        self->bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    }
    /* A blocking read gives data, the end, or an error. */
    while (n == 0 && !eos && rv == APR_SUCCESS) {
        rv = ap_get_brigade(r->input_filters, self->bb, AP_MODE_READBYTES, APR_BLOCK_READ,
                            (apr_off_t)room);
        if (rv == APR_SUCCESS) {
            apr_bucket *b;

            for (b = APR_BRIGADE_FIRST(self->bb); b != APR_BRIGADE_SENTINEL(self->bb);
                 b = APR_BUCKET_NEXT(b)) {
                if (APR_BUCKET_IS_EOS(b)) {
                    eos = 1;
                }
            }
            n = room;
            rv = apr_brigade_flatten(self->bb, dst, &n);
        }
        apr_brigade_cleanup(self->bb);
    }
    pyr_guard_leave(self->guard);
    Py_END_ALLOW_THREADS

    if (rv != APR_SUCCESS) {
        int status = ap_map_http_request_error(rv, HTTP_BAD_REQUEST);

        /* AP_FILTER_ERROR: the input filter has sent the error response. */
        self->error = status == HTTP_REQUEST_ENTITY_TOO_LARGE || status == AP_FILTER_ERROR
                          ? status
                          : HTTP_BAD_REQUEST;
        self->eof = 1;
        if (self->error == HTTP_REQUEST_ENTITY_TOO_LARGE) {
            PyErr_SetString(PyExc_OSError,
                            "the request body is larger than LimitRequestBody allows (413)");
        }
        else {
            PyErr_SetString(PyExc_OSError,
                            "reading the request body failed (the client may have gone, or "
                            "sent a malformed body)");
        }
        return -1;
    }
    self->eof = eos;
    *got = n;
    return 0;
}

/* An int size argument, or -1 for "all" (absent, None or negative). */
static int
size_arg(PyObject *const *args, Py_ssize_t nargs, const char *fn, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", fn, nargs);
        return -1;
    }
    if (nargs == 1 && args[0] != Py_None) {
        if (!PyLong_Check(args[0])) {
            PyErr_Format(PyExc_TypeError, "%s() argument must be an int or None, not %.100s", fn,
                         Py_TYPE(args[0])->tp_name);
            return -1;
        }
        *size = PyLong_AsSsize_t(args[0]);
        if (*size == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (*size < 0) {
            *size = -1;
        }
    }
    return 0;
}

static PyObject *
input_read(input_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t want, have, cap;
    PyObject *out;

    if (size_arg(args, nargs, "read", &want) < 0 || pyr_guard_check(self->guard) < 0) {
        return NULL;
    }
    have = self->len - self->pos;
    if (want >= 0 && have > want) {
        have = want;
    }
    cap = want >= 0 ? want : (have > CHUNK ? have * 2 : CHUNK);
    if (!(out = PyBytes_FromStringAndSize(NULL, cap))) {
        return NULL;
    }
    if (have > 0) {
        memcpy(PyBytes_AS_STRING(out), self->buf + self->pos, (size_t)have);
        self->pos += have;
    }
    while ((want < 0 || have < want) && !self->eof) {
        apr_size_t got;

        if (have == cap) {
            cap *= 2;
            if (_PyBytes_Resize(&out, cap) < 0) {
                return NULL;
            }
        }
        if (fetch(self, PyBytes_AS_STRING(out) + have, (apr_size_t)(cap - have), &got) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        have += (Py_ssize_t)got;
    }
    if (have != cap && _PyBytes_Resize(&out, have) < 0) {
        return NULL;
    }
    return out;
}

/* One line (up to and with its '\n'), at most limit bytes (-1: no limit);
 * b"" at the end of the body. */
static PyObject *
read_line(input_t *self, Py_ssize_t limit)
{
    Py_ssize_t scanned = 0;

    for (;;) {
        Py_ssize_t avail = self->len - self->pos, upto = avail;
        const char *nl = NULL;
        apr_size_t got;

        if (limit >= 0 && upto > limit) {
            upto = limit;
        }
        if (upto > scanned) {
            nl = memchr(self->buf + self->pos + scanned, '\n', (size_t)(upto - scanned));
        }
        if (nl || (limit >= 0 && avail >= limit) || self->eof) {
            Py_ssize_t n = nl ? nl - (self->buf + self->pos) + 1 : upto;
            PyObject *line = PyBytes_FromStringAndSize(n ? self->buf + self->pos : "", n);

            if (line) {
                self->pos += n;
            }
            return line;
        }
        scanned = upto;
        /* Room for a piece more: move what is left to the front, or grow. */
        if (self->pos > 0 && avail > 0) {
            memmove(self->buf, self->buf + self->pos, (size_t)avail);
        }
        self->len = avail;
        self->pos = 0;
        if (self->cap - self->len < CHUNK) {
            Py_ssize_t cap = self->cap ? self->cap * 2 : CHUNK * 2;
            char *buf = PyMem_Realloc(self->buf, (size_t)cap);

            if (!buf) {
                return PyErr_NoMemory();
            }
            self->buf = buf;
            self->cap = cap;
        }
        if (fetch(self, self->buf + self->len, (apr_size_t)(self->cap - self->len), &got) < 0) {
            return NULL;
        }
        self->len += (Py_ssize_t)got;
    }
}

static PyObject *
input_readline(input_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;

    if (size_arg(args, nargs, "readline", &limit) < 0 || pyr_guard_check(self->guard) < 0) {
        return NULL;
    }
    return read_line(self, limit);
}

static PyObject *
input_readlines(input_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint, total = 0;
    PyObject *lines;

    if (size_arg(args, nargs, "readlines", &hint) < 0 || pyr_guard_check(self->guard) < 0) {
        return NULL;
    }
    if (!(lines = PyList_New(0))) {
        return NULL;
    }
    for (;;) {
        PyObject *line = read_line(self, -1);
        Py_ssize_t n;

        if (!line) {
            Py_DECREF(lines);
            return NULL;
        }
        n = PyBytes_GET_SIZE(line);
        if (n == 0 || PyList_Append(lines, line) < 0) {
            Py_DECREF(line);
            if (n == 0) {
                return lines;
            }
            Py_DECREF(lines);
            return NULL;
        }
        Py_DECREF(line);
        total += n;
        if (hint > 0 && total >= hint) {
            return lines;
        }
    }
}

static PyObject *
input_next(input_t *self)
{
    PyObject *line;

    if (pyr_guard_check(self->guard) < 0 || !(line = read_line(self, -1))) {
        return NULL;
    }
    if (PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return NULL; /* StopIteration */
    }
    return line;
}

static PyObject *
input_repr(input_t *self)
{
    return PyUnicode_FromString("<pyreload wsgi.input>");
}

static PyMethodDef input_methods[] = {
    { "read", (PyCFunction)(void (*)(void))input_read, METH_FASTCALL,
      "read(size=-1): up to size bytes of the request body (all that is left "
      "without size); b'' at its end." },
    { "readline", (PyCFunction)(void (*)(void))input_readline, METH_FASTCALL,
      "readline(size=-1): one line, with its b'\\n'." },
    { "readlines", (PyCFunction)(void (*)(void))input_readlines, METH_FASTCALL,
      "readlines(hint=-1): the lines left (stopping once hint bytes were read)." },
    { NULL }
};

PyTypeObject pyr_WSGIInputType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyreload.WSGIInput",
    .tp_basicsize = sizeof(input_t),
    .tp_dealloc = (destructor)input_dealloc,
    .tp_repr = (reprfunc)input_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.input: the request body (valid only during its request).",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)input_next,
    .tp_methods = input_methods,
};
