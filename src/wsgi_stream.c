/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * wsgi_stream.c: the two streams of PEP 3333 besides wsgi.input.
 *
 * wsgi.errors: a text stream into the error log, one log line per line
 * written, through ap_log_rerror() so that each carries the request's
 * client, as req.log_error() does.  A line is logged when its '\n' comes,
 * on flush(), at the end of the request, or when it grows past LINE_MAX_BYTES
 * (so a stream without newlines cannot grow without bound).
 *
 * wsgi.file_wrapper: pyreload.FileWrapper(filelike, blksize=8192), an
 * iterable over filelike.read(blksize) whose close() closes filelike.
 * When an application returns one over a regular file, wsgi.c sends the
 * file itself as an APR file bucket (sendfile, or mmap) instead
 * (pyr_file_wrapper_fd()).
 */
#include "pyr_httpd.h"

#include "http_log.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

APLOG_USE_MODULE(pyreload);

/* ------------------------------------------------------------------ */
/* wsgi.errors                                                         */

#define LINE_MAX_BYTES 2000

typedef struct {
    PyObject_HEAD pyr_guard_t *guard; /* owned */
    request_rec *r;                   /* valid while the guard is live */
    char *line;                       /* PyMem: the unfinished line */
    Py_ssize_t len, cap;
} errors_t;

PyObject *
pyr_wsgi_errors_new(request_rec *r, pyr_guard_t *guard)
{
    errors_t *self = PyObject_New(errors_t, &pyr_WSGIErrorsType);

    if (!self) {
        return NULL;
    }
    pyr_guard_ref(guard);
    self->guard = guard;
    self->r = r;
    self->line = NULL;
    self->len = self->cap = 0;
    return (PyObject *)self;
}

static void
errors_dealloc(errors_t *self)
{
    PyMem_Free(self->line);
    pyr_guard_unref(self->guard);
    PyObject_Free(self);
}

static int
keep(errors_t *self, const char *text, Py_ssize_t n)
{
    if (self->len + n > self->cap) {
        Py_ssize_t cap = self->len + n > 256 ? self->len + n : 256;
        char *line = PyMem_Realloc(self->line, (size_t)cap);

        if (!line) {
            PyErr_NoMemory();
            return -1;
        }
        self->line = line;
        self->cap = cap;
    }
    if (n > 0) {
        memcpy(self->line + self->len, text, (size_t)n);
        self->len += n;
    }
    return 0;
}

/* Log the unfinished line followed by text (n bytes, no '\n'); the line
 * is then empty.  httpd cuts a log line at about 8 KB: a longer one goes
 * in pieces of at most LINE_MAX_BYTES, cut between UTF-8 characters.
 * Inside the guard, without the GIL. */
static int
log_line(errors_t *self, const char *text, Py_ssize_t n)
{
    request_rec *r;
    Py_ssize_t at = 0;

    if (keep(self, text, n) < 0 || pyr_guard_enter(self->guard) < 0) {
        return -1;
    }
    r = self->r;
    Py_BEGIN_ALLOW_THREADS do {
        Py_ssize_t piece = self->len - at;

        if (piece > LINE_MAX_BYTES) {
            piece = LINE_MAX_BYTES;
            while (piece > 1 && ((unsigned char)self->line[at + piece] & 0xC0) == 0x80) {
                piece--;
            }
        }
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "%.*s", (int)piece,
                      piece ? self->line + at : "");
        at += piece;
    } while (at < self->len);
    pyr_guard_leave(self->guard);
    Py_END_ALLOW_THREADS self->len = 0;
    return 0;
}

static PyObject *
errors_write(errors_t *self, PyObject *s)
{
    const char *text, *nl;
    Py_ssize_t n;

    if (!PyUnicode_Check(s)) {
        return PyErr_Format(PyExc_TypeError, "wsgi.errors.write() takes a str, not %.100s",
                            Py_TYPE(s)->tp_name);
    }
    if (pyr_guard_check(self->guard) < 0 || !(text = PyUnicode_AsUTF8AndSize(s, &n))) {
        return NULL;
    }
    while ((nl = memchr(text, '\n', (size_t)n))) {
        if (log_line(self, text, nl - text) < 0) {
            return NULL;
        }
        n -= nl + 1 - text;
        text = nl + 1;
    }
    if (n > 0 && (self->len + n > LINE_MAX_BYTES ? log_line(self, text, n) : keep(self, text, n)) < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(s));
}

static PyObject *
errors_writelines(errors_t *self, PyObject *seq)
{
    return pyr_writelines((PyObject *)self, seq, (PyObject * (*)(PyObject *, PyObject *)) errors_write);
}

int
pyr_wsgi_errors_flush(PyObject *errors)
{
    errors_t *self = (errors_t *)errors;

    return self->len > 0 ? log_line(self, "", 0) : 0;
}

static PyObject *
errors_flush(errors_t *self, PyObject *unused)
{
    if (pyr_guard_check(self->guard) < 0 || pyr_wsgi_errors_flush((PyObject *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
errors_repr(errors_t *self)
{
    return PyUnicode_FromString("<pyreload wsgi.errors>");
}

static PyMethodDef errors_methods[] = {
    { "write", (PyCFunction)errors_write, METH_O, "write(str): into the error log, line by line." },
    { "writelines", (PyCFunction)errors_writelines, METH_O, "writelines(iterable of str)" },
    { "flush", (PyCFunction)errors_flush, METH_NOARGS, "Log the unfinished line, if any." },
    { NULL }
};

PyTypeObject pyr_WSGIErrorsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyreload.WSGIErrors",
    .tp_basicsize = sizeof(errors_t),
    .tp_dealloc = (destructor)errors_dealloc,
    .tp_repr = (reprfunc)errors_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.errors: text into the error log (valid only during its request).",
    .tp_methods = errors_methods,
};

/* ------------------------------------------------------------------ */
/* wsgi.file_wrapper                                                   */

typedef struct {
    PyObject_HEAD PyObject *filelike;
    Py_ssize_t blksize;
} wrapper_t;

static PyObject *
wrapper_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "filelike", "blksize", NULL };
    PyObject *filelike;
    Py_ssize_t blksize = 8192;
    wrapper_t *self;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n:FileWrapper", kwlist, &filelike, &blksize)) {
        return NULL;
    }
    if (blksize <= 0) {
        return PyErr_Format(PyExc_ValueError, "blksize must be positive, not %zd", blksize);
    }
    if (!(self = (wrapper_t *)type->tp_alloc(type, 0))) {
        return NULL;
    }
    self->filelike = Py_NewRef(filelike);
    self->blksize = blksize;
    return (PyObject *)self;
}

static int
wrapper_traverse(wrapper_t *self, visitproc visit, void *arg)
{
    Py_VISIT(self->filelike);
    return 0;
}

static int
wrapper_clear(wrapper_t *self)
{
    Py_CLEAR(self->filelike);
    return 0;
}

static void
wrapper_dealloc(wrapper_t *self)
{
    PyObject_GC_UnTrack(self);
    (void)wrapper_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
wrapper_next(wrapper_t *self)
{
    PyObject *data;

    if (!self->filelike) {
        return NULL;
    }
    data = PyObject_CallMethod(self->filelike, "read", "n", self->blksize);
    if (data && PyObject_Length(data) == 0) {
        Py_CLEAR(data); /* the end: StopIteration */
    }
    return data;
}

static PyObject *
wrapper_close(wrapper_t *self, PyObject *unused)
{
    PyObject *close, *r;

    if (!self->filelike) {
        Py_RETURN_NONE;
    }
    if (!(close = PyObject_GetAttrString(self->filelike, "close"))) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear(); /* PEP 3333: close() only if filelike has one */
        Py_RETURN_NONE;
    }
    r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    return r;
}

static PyMethodDef wrapper_methods[] = {
    { "close", (PyCFunction)wrapper_close, METH_NOARGS, "Close the file-like object." },
    { NULL }
};

PyTypeObject pyr_FileWrapperType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyreload.FileWrapper",
    .tp_basicsize = sizeof(wrapper_t),
    .tp_dealloc = (destructor)wrapper_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FileWrapper(filelike, blksize=8192): wsgi.file_wrapper; returned by an "
              "application over a regular file, the file is sent by httpd itself.",
    .tp_traverse = (traverseproc)wrapper_traverse,
    .tp_clear = (inquiry)wrapper_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)wrapper_next,
    .tp_methods = wrapper_methods,
    .tp_new = wrapper_new,
};

/* A call whose failure only means "no file to send": cleared. */
static PyObject *
try_call(PyObject *obj, const char *method)
{
    PyObject *r = PyObject_CallMethod(obj, method, NULL);

    if (!r) {
        PyErr_Clear();
    }
    return r;
}

int
pyr_file_wrapper_fd(PyObject *wrapper, int *fd, apr_off_t *offset, apr_off_t *size)
{
    wrapper_t *self = (wrapper_t *)wrapper;
    PyObject *fileno, *pos;
    struct stat st;
    long long at;
    long n;

    if (!PyObject_TypeCheck(wrapper, &pyr_FileWrapperType) || !self->filelike ||
        !(fileno = try_call(self->filelike, "fileno"))) {
        return 0;
    }
    n = PyLong_Check(fileno) ? PyLong_AsLong(fileno) : -1;
    Py_DECREF(fileno);
    if (n < 0 || n > INT_MAX || fstat((int)n, &st) != 0 || !S_ISREG(st.st_mode)) {
        PyErr_Clear();
        return 0;
    }
    /* tell(), not the descriptor's offset: a buffered file has read ahead. */
    if ((pos = try_call(self->filelike, "tell"))) {
        at = PyLong_Check(pos) ? PyLong_AsLongLong(pos) : -1;
        Py_DECREF(pos);
    }
    else {
        at = (long long)lseek((int)n, 0, SEEK_CUR);
    }
    if (at < 0) {
        PyErr_Clear();
        return 0;
    }
    /* Our own descriptor: the application closes its file when it likes,
     * and the bucket lives until httpd has sent it. */
    if ((*fd = fcntl((int)n, F_DUPFD_CLOEXEC, 0)) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *offset = (apr_off_t)at;
    *size = st.st_size > (off_t)at ? (apr_off_t)(st.st_size - (off_t)at) : 0;
    return 1;
}
