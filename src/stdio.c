/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * stdio.c: sys.stdout and sys.stderr as line-buffered streams into the
 * error log.  A server's stdout is not a client: print() from a handler, a
 * library's warning and logging's last-resort handler (which writes to
 * whatever sys.stderr is at the time) all land in the log.
 */
#include "pyr_py.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    const pyr_logger_t *log;
    int level;
    const char *prefix;
    PyObject *pending;      /* str: the unfinished last line, or NULL */
} stream_t;

/* Emit text line by line, without the GIL: the error log is a file. */
static void
emit(stream_t *self, const char *text)
{
    char *copy = strdup(text);

    if (!copy) {
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    pyr_log_lines(self->log, self->level, self->prefix, copy);
    Py_END_ALLOW_THREADS
    free(copy);
}

static PyObject *
stream_write(stream_t *self, PyObject *arg)
{
    PyObject *all = NULL, *done = NULL, *rest = NULL;
    Py_ssize_t len, cut;

    if (!PyUnicode_Check(arg)) {
        return PyErr_Format(PyExc_TypeError, "write() argument must be str, not %.100s",
                            Py_TYPE(arg)->tp_name);
    }
    len = PyUnicode_GET_LENGTH(arg);
    if (self->pending) {
        all = PyUnicode_Concat(self->pending, arg);
        if (!all) {
            return NULL;
        }
        Py_CLEAR(self->pending);
    }
    else {
        all = Py_NewRef(arg);
    }
    cut = PyUnicode_FindChar(all, '\n', 0, PyUnicode_GET_LENGTH(all), -1);
    if (cut == -2) {
        goto fail;
    }
    if (cut >= 0) {
        const char *u;

        done = PyUnicode_Substring(all, 0, cut);
        rest = PyUnicode_Substring(all, cut + 1, PyUnicode_GET_LENGTH(all));
        if (!done || !rest || !(u = PyUnicode_AsUTF8(done))) {
            goto fail;
        }
        emit(self, u);
        if (PyUnicode_GET_LENGTH(rest) > 0) {
            self->pending = Py_NewRef(rest);
        }
    }
    else {
        self->pending = Py_NewRef(all);
    }
    Py_XDECREF(done);
    Py_XDECREF(rest);
    Py_DECREF(all);
    return PyLong_FromSsize_t(len);

fail:
    Py_XDECREF(done);
    Py_XDECREF(rest);
    Py_XDECREF(all);
    return NULL;
}

static PyObject *
stream_flush(stream_t *self, PyObject *unused)
{
    if (self->pending) {
        PyObject *text = self->pending;
        const char *u;

        self->pending = NULL;
        u = PyUnicode_AsUTF8(text);
        if (!u) {
            Py_DECREF(text);
            return NULL;
        }
        emit(self, u);
        Py_DECREF(text);
    }
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
    Py_CLEAR(self->pending);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)stream_write, METH_O, "Log complete lines; keep the rest."},
    {"flush", (PyCFunction)stream_flush, METH_NOARGS, "Log the unfinished line."},
    {"isatty", (PyCFunction)stream_false, METH_NOARGS, NULL},
    {"writable", (PyCFunction)stream_true, METH_NOARGS, NULL},
    {"readable", (PyCFunction)stream_false, METH_NOARGS, NULL},
    {"seekable", (PyCFunction)stream_false, METH_NOARGS, NULL},
    {NULL}
};

static PyGetSetDef stream_getset[] = {
    {"encoding", (getter)stream_get_encoding, NULL, NULL, NULL},
    {"closed", (getter)stream_get_closed, NULL, NULL, NULL},
    {NULL}
};

static PyTypeObject stream_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyreload.LogStream",
    .tp_basicsize = sizeof(stream_t),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A text stream whose lines go to the server's error log.",
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
};

static int
install(const char *name, const char *dunder, const pyr_logger_t *log,
        int level, const char *prefix)
{
    stream_t *s = PyObject_New(stream_t, &stream_type);
    int rv;

    if (!s) {
        return -1;
    }
    s->log = log;
    s->level = level;
    s->prefix = prefix;
    s->pending = NULL;
    rv = PySys_SetObject(name, (PyObject *)s);
    if (rv == 0) {
        rv = PySys_SetObject(dunder, (PyObject *)s);
    }
    Py_DECREF(s);
    return rv;
}

int
pyr_stdio_install(const pyr_logger_t *log)
{
    static pyr_logger_t keep;

    keep = *log;
    if (PyType_Ready(&stream_type) < 0) {
        return -1;
    }
    if (install("stdout", "__stdout__", &keep, PYR_LOG_WARNING, "[stdout] ") < 0
        || install("stderr", "__stderr__", &keep, PYR_LOG_ERR, "[stderr] ") < 0) {
        return -1;
    }
    return 0;
}
