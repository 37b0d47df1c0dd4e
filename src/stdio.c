/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * stdio.c: sys.stdout and sys.stderr as line-buffered streams into the
 * error log.  A server's stdout is not a client: print() from a handler, a
 * library's warning and logging's last-resort handler (which writes to
 * whatever sys.stderr is at the time) all land in the log.
 *
 * What is held back is bounded: the unfinished line lives in a fixed buffer
 * of PYR_STDIO_PIECE bytes, a longer line is logged in pieces of that size,
 * and whatever a request left unfinished is logged when it ends
 * (pyr_stdio_flush).  A write costs time in proportion to its own length,
 * never to what came before it.
 */
#include "pyr_python.h"

#include <string.h>

/* httpd cuts an error log line at 8 KiB, header included, and writes each
 * byte outside printable ASCII as \xHH: 2,000 bytes always fit whole. */
#define PYR_STDIO_PIECE 2000

typedef struct {
    PyObject_HEAD const pyr_logger_t *log;
    int level;
    const char *prefix;
    size_t len;                     /* GIL: bytes in line */
    char line[PYR_STDIO_PIECE + 1]; /* GIL: the unfinished line, UTF-8 */
} stream_t;

/* Ours, whatever sys.stdout and sys.stderr are now (a handler may replace
 * them); owned. */
static stream_t *streams[2];

/* Log the held line and empty it.  GIL held on entry and exit; released
 * while the line is written (the error log is a file), so the line is
 * copied out first: another thread may write meanwhile. */
static void
emit(stream_t *self)
{
    char copy[PYR_STDIO_PIECE + 1];

    if (self->len == 0) {
        return;
    }
    memcpy(copy, self->line, self->len);
    copy[self->len] = '\0';
    self->len = 0;
    Py_BEGIN_ALLOW_THREADS pyr_log_lines(self->log, self->level, self->prefix, copy);
    Py_END_ALLOW_THREADS
}

/* How many of the first n bytes of p fit in room without cutting a UTF-8
 * sequence in two. */
static size_t
fit(const char *p, size_t n, size_t room)
{
    size_t cut;

    if (n <= room) {
        return n;
    }
    cut = room;
    while (cut > 0 && ((unsigned char)p[cut] & 0xC0) == 0x80) {
        cut--;
    }
    return cut;
}

/* Append n bytes that hold no newline, logging a piece whenever the line
 * is full. */
static void
append(stream_t *self, const char *p, size_t n)
{
    while (n > 0) {
        size_t take = fit(p, n, PYR_STDIO_PIECE - self->len);

        memcpy(self->line + self->len, p, take);
        self->len += take;
        p += take;
        n -= take;
        if (n > 0) {
            emit(self);
        }
    }
}

static PyObject *
stream_write(stream_t *self, PyObject *arg)
{
    PyObject *bytes = NULL;
    const char *p, *nl;
    Py_ssize_t n;

    if (!PyUnicode_Check(arg)) {
        return PyErr_Format(PyExc_TypeError, "write() argument must be str, not %.100s",
                            Py_TYPE(arg)->tp_name);
    }
    if (!(p = PyUnicode_AsUTF8AndSize(arg, &n))) {
        /* Lone surrogates, e.g. a URI's undecodable bytes: written as
         * escapes, as Python's own stderr does, rather than failing. */
        PyErr_Clear();
        if (!(bytes = PyUnicode_AsEncodedString(arg, "utf-8", "backslashreplace"))) {
            return NULL;
        }
        p = PyBytes_AS_STRING(bytes);
        n = PyBytes_GET_SIZE(bytes);
    }
    /* p stays valid while the GIL is released in emit(): arg (and bytes)
     * are referenced until we return. */
    while ((nl = memchr(p, '\n', (size_t)n)) != NULL) {
        append(self, p, (size_t)(nl - p));
        emit(self);
        n -= nl + 1 - p;
        p = nl + 1;
    }
    append(self, p, (size_t)n);
    Py_XDECREF(bytes);
    return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(arg));
}

PyObject *
pyr_writelines(PyObject *self, PyObject *lines, PyObject *(*write)(PyObject *, PyObject *))
{
    PyObject *it = PyObject_GetIter(lines), *item;

    if (!it) {
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *r = write(self, item);

        Py_DECREF(item);
        if (!r) {
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_writelines(stream_t *self, PyObject *lines)
{
    return pyr_writelines((PyObject *)self, lines, (PyObject * (*)(PyObject *, PyObject *)) stream_write);
}

static PyObject *
stream_flush(stream_t *self, PyObject *unused)
{
    emit(self);
    Py_RETURN_NONE;
}

static PyObject *
stream_false(stream_t *self, PyObject *unused)
{
    Py_RETURN_FALSE;
}

static PyObject *
stream_true(stream_t *self, PyObject *unused)
{
    Py_RETURN_TRUE;
}

static PyObject *
stream_get_encoding(stream_t *self, void *unused)
{
    return PyUnicode_FromString("utf-8");
}

static PyObject *
stream_get_closed(stream_t *self, void *unused)
{
    Py_RETURN_FALSE;
}

static void
stream_dealloc(stream_t *self)
{
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef stream_methods[] = {
    { "write", (PyCFunction)stream_write, METH_O, "Log complete lines; keep the rest." },
    { "writelines", (PyCFunction)stream_writelines, METH_O, "write() each item." },
    { "flush", (PyCFunction)stream_flush, METH_NOARGS, "Log the unfinished line." },
    /* The server's error log is not the handler's to close: close() only
     * flushes, and the stream keeps working for every other handler. */
    { "close", (PyCFunction)stream_flush, METH_NOARGS, "Log the unfinished line." },
    { "isatty", (PyCFunction)stream_false, METH_NOARGS, NULL },
    { "writable", (PyCFunction)stream_true, METH_NOARGS, NULL },
    { "readable", (PyCFunction)stream_false, METH_NOARGS, NULL },
    { "seekable", (PyCFunction)stream_false, METH_NOARGS, NULL },
    { NULL }
};

static PyGetSetDef stream_getset[] = { { "encoding", (getter)stream_get_encoding, NULL, NULL,
                                         NULL },
                                       { "closed", (getter)stream_get_closed, NULL, NULL, NULL },
                                       { NULL } };

static PyTypeObject stream_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyreload.LogStream",
    .tp_basicsize = sizeof(stream_t),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A text stream whose lines go to the server's error log.",
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
};

static int
install(int which, const char *name, const char *dunder, const pyr_logger_t *log, int level,
        const char *prefix)
{
    stream_t *s = PyObject_New(stream_t, &stream_type);

    if (!s) {
        return -1;
    }
    s->log = log;
    s->level = level;
    s->prefix = prefix;
    s->len = 0;
    Py_XSETREF(streams[which], s);
    if (PySys_SetObject(name, (PyObject *)s) < 0 || PySys_SetObject(dunder, (PyObject *)s) < 0) {
        return -1;
    }
    return 0;
}

int
pyr_stdio_install(const pyr_logger_t *log)
{
    if (PyType_Ready(&stream_type) < 0) {
        return -1;
    }
    if (install(0, "stdout", "__stdout__", log, PYR_LOG_WARNING, "[stdout] ") < 0 ||
        install(1, "stderr", "__stderr__", log, PYR_LOG_ERR, "[stderr] ") < 0) {
        return -1;
    }
    return 0;
}

void
pyr_stdio_flush(void)
{
    int i;

    for (i = 0; i < 2; i++) {
        if (streams[i]) {
            emit(streams[i]);
        }
    }
}

void
pyr_stdio_release(void)
{
    pyr_stdio_flush();
    Py_CLEAR(streams[0]);
    Py_CLEAR(streams[1]);
}
