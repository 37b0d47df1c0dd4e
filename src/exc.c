/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * exc.c: a pending Python exception as traceback text.
 *
 * Never PyErr_Print(): it exits the process on SystemExit, and it writes to
 * sys.stderr in one go, without the file name header we log before it.
 */
#include "pyr_python.h"
#include "pyr_mem.h"

#include <stdlib.h>
#include <string.h>

static char *
dup_utf8(PyObject *s)
{
    const char *u = PyUnicode_AsUTF8(s);
    return u ? pyr_xstrdup(u) : NULL;
}

char *
pyr_exc_format(void)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    PyObject *mod = NULL, *lines = NULL, *empty = NULL, *text = NULL;
    char *out = NULL;

    PyErr_Fetch(&type, &value, &tb);
    if (!type) {
        return pyr_xstrdup("(no Python exception was set)\n");
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value) {
        PyException_SetTraceback(value, tb);
    }

    mod = PyImport_ImportModule("traceback");
    if (mod) {
        lines = PyObject_CallMethod(mod, "format_exception", "OOO", type, value ? value : Py_None,
                                    tb ? tb : Py_None);
    }
    if (lines && (empty = PyUnicode_FromString(""))) {
        text = PyUnicode_Join(empty, lines);
    }
    if (text) {
        out = dup_utf8(text);
    }
    if (!out) {
        /* The traceback module itself failed (out of memory, a broken
         * stdlib): say at least what was raised. */
        PyObject *r;

        PyErr_Clear();
        r = PyObject_Repr(value ? value : type);
        out = r ? dup_utf8(r) : NULL;
        Py_XDECREF(r);
        PyErr_Clear();
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    Py_XDECREF(mod);
    Py_XDECREF(lines);
    Py_XDECREF(empty);
    Py_XDECREF(text);
    return out ? out : pyr_xstrdup("(the exception could not be formatted)\n");
}
