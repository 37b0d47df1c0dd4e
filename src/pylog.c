/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pylog.c: Python's logging records into the error log at their own level
 * (DEBUG debug, INFO info, WARNING warn, ERROR error, CRITICAL crit), tagged
 * with the request's client when logged on a request's thread.
 *
 * Our handler replaces logging.lastResort, the handler Python uses when a
 * record finds no handler at all, rather than being added to the root
 * logger: an application that configures logging itself (basicConfig,
 * dictConfig, a handler of its own) keeps exactly what it configured, since
 * basicConfig() does nothing once the root logger has a handler, and a
 * logger with a handler of its own gets no second copy in the error log.
 * logging.warning() and its siblings call basicConfig() with no argument
 * when the root logger has no handler, which would put a handler writing to
 * sys.stderr ([stderr] at error level) before ours: basicConfig() with no
 * argument therefore does nothing.  With arguments that name no destination
 * (no handlers, stream or filename), Python's default destination, standard
 * error, is the error log here anyway: the root logger gets our handler, with
 * the format and level asked for, so the records keep their levels.  The
 * handler's level follows the LogLevel the server gives us, so records the
 * server would drop are not even formatted; under `LogLevel pyreload:info`
 * (or debug) the root logger's level is lowered from Python's default
 * WARNING to match, or INFO records would never reach a handler.  The same
 * class is pyreload.LogHandler, for applications that configure logging
 * themselves and want these levels.
 *
 * Locking: the handler takes no lock of its own (Python's Handler would hold
 * an RLock across emit); lines are written with the GIL released.
 */
#include "pyr_python.h"

/* The most verbose level the server writes for us (set before Python
 * starts), and where records go when no request is bound to the thread. */
static int server_level = PYR_LOG_WARNING;
static const pyr_logger_t *process_log;

/* The request this thread serves, if any (serve.c binds it). */
static __thread const pyr_logger_t *bound;

void
pyr_pylog_set_level(int level)
{
    server_level = level;
}

void
pyr_pylog_bind(const pyr_logger_t *log)
{
    bound = log;
}

/* A record's Apache level: the Python level at or below it.  Levels between
 * Python's own (a custom 25) go with the one below them. */
static int
apache_level(int levelno)
{
    if (levelno >= 50) {
        return PYR_LOG_CRIT;
    }
    if (levelno >= 40) {
        return PYR_LOG_ERR;
    }
    if (levelno >= 30) {
        return PYR_LOG_WARNING;
    }
    if (levelno >= 20) {
        return PYR_LOG_INFO;
    }
    return PYR_LOG_DEBUG;
}

/* The lowest Python level that apache_level() maps to a level the server
 * writes.  NOTICE writes no Python level below WARNING; trace1..8 (past
 * DEBUG) write everything. */
static int
python_threshold(int level)
{
    if (level > PYR_LOG_DEBUG) {
        return 1;
    }
    if (level == PYR_LOG_DEBUG) {
        return 10;
    }
    if (level == PYR_LOG_INFO) {
        return 20;
    }
    if (level >= PYR_LOG_WARNING) {
        return 30;
    }
    return level == PYR_LOG_ERR ? 40 : 50;
}

/* _emit(levelno, text): every line of text at levelno's Apache level. */
static PyObject *
log_emit(PyObject *self, PyObject *args)
{
    const pyr_logger_t *log = bound ? bound : process_log;
    PyObject *text, *bytes;
    int levelno;

    if (!PyArg_ParseTuple(args, "iU:_emit", &levelno, &text)) {
        return NULL;
    }
    /* Lone surrogates (a URI's undecodable bytes) are logged as escapes. */
    if (!(bytes = PyUnicode_AsEncodedString(text, "utf-8", "backslashreplace"))) {
        return NULL;
    }
    /* bytes is ours until we return: its buffer outlives the unlocked call. */
    Py_BEGIN_ALLOW_THREADS pyr_log_lines(log, apache_level(levelno), "", PyBytes_AS_STRING(bytes));
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    Py_RETURN_NONE;
}

static PyMethodDef emit_def = { "_emit", log_emit, METH_VARARGS, NULL };

/* Small enough to read as Python; it runs once per process. */
static const char handler_src[] =
    "import logging\n"
    "\n"
    "class LogHandler(logging.Handler):\n"
    "    \"\"\"Records into the server's error log at the matching Apache level\n"
    "    (DEBUG debug, INFO info, WARNING warn, ERROR error, CRITICAL crit),\n"
    "    tagged with the client when logged on a request's thread.\"\"\"\n"
    "    def __init__(self, level=logging.NOTSET):\n"
    "        super().__init__(level)\n"
    "        self.setFormatter(logging.Formatter('%(name)s: %(message)s'))\n"
    "    def createLock(self):\n"
    "        self.lock = None    # _emit is thread-safe and releases the GIL\n"
    "    def emit(self, record):\n"
    "        try:\n"
    "            _emit(record.levelno, self.format(record))\n"
    "        except RecursionError:\n"
    "            raise\n"
    "        except Exception:\n"
    "            self.handleError(record)\n"
    "\n"
    "LogHandler.__module__ = 'pyreload'\n"
    "\n"
    "_basicConfig = logging.basicConfig\n"
    "\n"
    "def basicConfig(**kwargs):\n"
    "    if not kwargs:\n"
    "        return\n"
    "    if not {'handlers', 'stream', 'filename'} & kwargs.keys():\n"
    "        h = LogHandler()\n"
    "        if {'format', 'style', 'datefmt'} & kwargs.keys():\n"
    "            h.formatter = None    # basicConfig() sets the one asked for\n"
    "        kwargs['handlers'] = [h]\n"
    "    _basicConfig(**kwargs)\n"
    "\n"
    "basicConfig.__doc__ = _basicConfig.__doc__\n"
    "\n"
    "def _install(threshold):\n"
    "    logging.lastResort = LogHandler(threshold)\n"
    "    logging.basicConfig = basicConfig\n"
    "    root = logging.getLogger()\n"
    "    if threshold < root.level and not root.handlers:\n"
    "        root.setLevel(threshold)\n";

int
pyr_pylog_install(const pyr_logger_t *log)
{
    PyObject *ns = NULL, *fn = NULL, *r = NULL, *m = NULL, *install, *cls;
    int rc = -1;

    process_log = log;
    if (!(ns = Py_BuildValue("{s:s}", "__name__", "pyreload")) ||
        !(fn = PyCFunction_New(&emit_def, NULL)) || PyDict_SetItemString(ns, "_emit", fn) < 0 ||
        PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0) {
        goto done;
    }
    if (!(r = PyRun_String(handler_src, Py_file_input, ns, ns))) {
        goto done;
    }
    Py_CLEAR(r);
    /* Both borrowed from ns, which we hold; the source above defines them. */
    install = PyDict_GetItemString(ns, "_install");
    cls = PyDict_GetItemString(ns, "LogHandler");
    if (!install || !cls) {
        PyErr_SetString(PyExc_RuntimeError, "pylog: the handler source defines no LogHandler");
        goto done;
    }
    if (!(r = PyObject_CallFunction(install, "i", python_threshold(server_level))) ||
        !(m = PyImport_ImportModule("pyreload")) || PyObject_SetAttrString(m, "LogHandler", cls) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(m);
    Py_XDECREF(r);
    Py_XDECREF(fn);
    Py_XDECREF(ns);
    return rc;
}
