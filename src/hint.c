/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * hint.c: what a failure most likely means, for the messages that teach.
 * Asked only when something already failed, so cost does not matter here.
 *
 * GIL for all; the pending exception is left as it was.
 */
#include "pyr_python.h"

/* Two required positional parameters and no more: (environ, start_response),
 * for a function, a bound method or an object with __call__. */
static const char wsgi_like_src[] =
    "def wsgi_like(fn):\n"
    "    import inspect\n"
    "    try:\n"
    "        ps = inspect.signature(fn).parameters.values()\n"
    "    except (TypeError, ValueError):\n"
    "        return False\n"
    "    positional = (inspect.Parameter.POSITIONAL_ONLY,\n"
    "                  inspect.Parameter.POSITIONAL_OR_KEYWORD)\n"
    "    return len([p for p in ps if p.kind in positional\n"
    "                and p.default is inspect.Parameter.empty]) == 2\n";

int
pyr_hint_wsgi(PyObject *fn)
{
    PyObject *type, *value, *tb, *ns = NULL, *r = NULL, *f;
    int yes = 0;

    if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
        return 0;
    }
    PyErr_Fetch(&type, &value, &tb);
    if ((ns = PyDict_New()) && PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) == 0 &&
        (r = PyRun_String(wsgi_like_src, Py_file_input, ns, ns))) {
        Py_CLEAR(r);
        f = PyDict_GetItemString(ns, "wsgi_like"); /* borrowed from ns */
        if (f && (r = PyObject_CallOneArg(f, fn))) {
            yes = PyObject_IsTrue(r) == 1;
        }
    }
    /* Whatever failed here is not what the request is about. */
    PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(ns);
    PyErr_Restore(type, value, tb);
    return yes;
}
