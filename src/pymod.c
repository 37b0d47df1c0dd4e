/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pymod.c: the built-in "pyreload" module a handler imports: return codes,
 * HTTP status and log level constants, HTTPError, and the Table type.
 * The Request type is added by whoever embeds the engine (src/req.c for
 * httpd) through the extender hook, so the engine stays httpd-free.
 */
#include "pyr_python.h"

/* pyreload.HTTPError: our own reference, since handler code may rebind or
 * delete the module's attribute and req.read() still raises the class. */
PyObject *pyr_HTTPError;

static int (*extender)(PyObject *module);

void
pyr_pymod_set_extender(int (*extend)(PyObject *module))
{
    extender = extend;
}

static const struct {
    const char *name;
    int value;
} constants[] = {
    /* Return codes: httpd's own values, so they pass straight through. */
    { "OK", 0 },
    { "DECLINED", -1 },
    { "DONE", -2 },
    { "HTTP_CONTINUE", 100 },
    { "HTTP_SWITCHING_PROTOCOLS", 101 },
    { "HTTP_OK", 200 },
    { "HTTP_CREATED", 201 },
    { "HTTP_ACCEPTED", 202 },
    { "HTTP_NON_AUTHORITATIVE", 203 },
    { "HTTP_NO_CONTENT", 204 },
    { "HTTP_RESET_CONTENT", 205 },
    { "HTTP_PARTIAL_CONTENT", 206 },
    { "HTTP_MULTIPLE_CHOICES", 300 },
    { "HTTP_MOVED_PERMANENTLY", 301 },
    { "HTTP_MOVED_TEMPORARILY", 302 },
    { "HTTP_SEE_OTHER", 303 },
    { "HTTP_NOT_MODIFIED", 304 },
    { "HTTP_USE_PROXY", 305 },
    { "HTTP_TEMPORARY_REDIRECT", 307 },
    { "HTTP_PERMANENT_REDIRECT", 308 },
    { "HTTP_BAD_REQUEST", 400 },
    { "HTTP_UNAUTHORIZED", 401 },
    { "HTTP_PAYMENT_REQUIRED", 402 },
    { "HTTP_FORBIDDEN", 403 },
    { "HTTP_NOT_FOUND", 404 },
    { "HTTP_METHOD_NOT_ALLOWED", 405 },
    { "HTTP_NOT_ACCEPTABLE", 406 },
    { "HTTP_PROXY_AUTHENTICATION_REQUIRED", 407 },
    { "HTTP_REQUEST_TIME_OUT", 408 },
    { "HTTP_CONFLICT", 409 },
    { "HTTP_GONE", 410 },
    { "HTTP_LENGTH_REQUIRED", 411 },
    { "HTTP_PRECONDITION_FAILED", 412 },
    { "HTTP_REQUEST_ENTITY_TOO_LARGE", 413 },
    { "HTTP_REQUEST_URI_TOO_LARGE", 414 },
    { "HTTP_UNSUPPORTED_MEDIA_TYPE", 415 },
    { "HTTP_RANGE_NOT_SATISFIABLE", 416 },
    { "HTTP_EXPECTATION_FAILED", 417 },
    { "HTTP_UNPROCESSABLE_ENTITY", 422 },
    { "HTTP_TOO_MANY_REQUESTS", 429 },
    { "HTTP_INTERNAL_SERVER_ERROR", 500 },
    { "HTTP_NOT_IMPLEMENTED", 501 },
    { "HTTP_BAD_GATEWAY", 502 },
    { "HTTP_SERVICE_UNAVAILABLE", 503 },
    { "HTTP_GATEWAY_TIME_OUT", 504 },
    { "HTTP_VERSION_NOT_SUPPORTED", 505 },
    { "APLOG_EMERG", PYR_LOG_EMERG },
    { "APLOG_ALERT", PYR_LOG_ALERT },
    { "APLOG_CRIT", PYR_LOG_CRIT },
    { "APLOG_ERR", PYR_LOG_ERR },
    { "APLOG_WARNING", PYR_LOG_WARNING },
    { "APLOG_NOTICE", PYR_LOG_NOTICE },
    { "APLOG_INFO", PYR_LOG_INFO },
    { "APLOG_DEBUG", PYR_LOG_DEBUG },
};

/* Small enough to read as Python; it runs once per process. */
static const char http_error_src[] =
    "class HTTPError(Exception):\n"
    "    \"\"\"Raise from a handler to answer with an HTTP status: httpd then\n"
    "    sends its error document, and no traceback is logged.\"\"\"\n"
    "    def __init__(self, status, message=None):\n"
    "        if not isinstance(status, int) or isinstance(status, bool) \\\n"
    "                or not 100 <= status <= 599:\n"
    "            raise ValueError('HTTPError status must be an int from 100 to 599')\n"
    "        super().__init__(status, message)\n"
    "        self.status = status\n"
    "        self.message = message\n"
    "HTTPError.__module__ = 'pyreload'\n";

/* Finalisation drops our reference while the interpreter still runs
 * (atexit functions run first in Py_FinalizeEx(), also when another module
 * owns Python), so that a later interpreter in the process starts clean. */
static PyObject *
drop_http_error(PyObject *self, PyObject *unused)
{
    Py_CLEAR(pyr_HTTPError);
    Py_RETURN_NONE;
}

static PyMethodDef drop_http_error_def = { "_drop_http_error", drop_http_error, METH_NOARGS, NULL };

int
pyr_atexit(PyMethodDef *def)
{
    PyObject *atexit, *fn = NULL, *r = NULL;

    if ((atexit = PyImport_ImportModule("atexit")) && (fn = PyCFunction_New(def, NULL))) {
        r = PyObject_CallMethod(atexit, "register", "O", fn);
    }
    Py_XDECREF(atexit);
    Py_XDECREF(fn);
    if (!r) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
hold_http_error(PyObject *dict)
{
    PyObject *cls;

    if (!(cls = PyMapping_GetItemString(dict, "HTTPError"))) {
        return -1;
    }
    Py_XSETREF(pyr_HTTPError, cls);
    return pyr_atexit(&drop_http_error_def);
}

/* Fill the module made by pyr_pymod_init() (single-phase: the module is
 * made, then filled, in one call). */
static int
fill_module(PyObject *m)
{
    PyObject *dict = PyModule_GetDict(m); /* borrowed */
    PyObject *r;
    size_t i;

    for (i = 0; i < sizeof(constants) / sizeof(constants[0]); i++) {
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) {
            return -1;
        }
    }
    if (PyModule_AddStringConstant(m, "__version__", PYR_VERSION) < 0) {
        return -1;
    }
    if (PyDict_GetItemString(dict, "__builtins__") == NULL &&
        PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) < 0) {
        return -1;
    }
    r = PyRun_String(http_error_src, Py_file_input, dict, dict);
    if (!r) {
        return -1;
    }
    Py_DECREF(r);
    if (hold_http_error(dict) < 0) {
        return -1;
    }
    if (PyType_Ready(&pyr_TableType) < 0 ||
        PyModule_AddObjectRef(m, "Table", (PyObject *)&pyr_TableType) < 0) {
        return -1;
    }
    return extender ? extender(m) : 0;
}

static struct PyModuleDef pyreload_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyreload",
    .m_doc = "mod_pyreload: return codes, constants and types for handlers.",
    .m_size = -1,
};

PyObject *
pyr_pymod_init(void)
{
    PyObject *m = PyModule_Create(&pyreload_def);

    if (m && fill_module(m) < 0) {
        Py_CLEAR(m);
    }
    return m;
}
