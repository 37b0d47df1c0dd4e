/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * interp.c: the one interpreter of a server process, and the GIL per thread.
 *
 * httpd calls pyr_interp_init() from child_init, never in the parent: the
 * parent survives graceful restarts and reads its configuration twice at
 * start-up, and an interpreter there would leak or be forked mid-state.
 */
#include "pyr_engine.h"

#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

pyr_strings_t pyr_str;

static int ready;
static int owner; /* we started Python (else another module did) */
static PyThreadState *main_tstate;
static pyr_logger_t server_log; /* the process's, for stdio and guards */

/* How long an ending process waits for threads handlers left running, and
 * how long finalisation may take in all before the process just exits:
 * httpd's parent sends SIGKILL about 9 s after its SIGTERM. */
#define THREADS_WAIT_MS 1000
#define FINALIZE_MAX_MS 5000

/* One thread state per OS thread, made on first use and kept: httpd's worker
 * threads live as long as the process, so a request pays for no allocation.
 * Made through PyGILState_Ensure so that C extensions that call
 * PyGILState_Ensure themselves (ctypes callbacks, sqlite3) find this thread
 * state rather than making a second one and deadlocking on the GIL. */
static __thread PyThreadState *thread_tstate;
/* This thread is between pyr_gil_take() and pyr_gil_drop(). */
static __thread int in_python;

static int
intern_strings(void)
{
#define INTERN(field, text)                                                                        \
    if (!(pyr_str.field = PyUnicode_InternFromString(text)))                                       \
    return -1
    INTERN(clone, "__clone__");
    INTERN(upgrade, "__upgrade__");
    INTERN(purge, "__purge__");
    INTERN(generation, "__generation__");
    INTERN(file, "__file__");
    INTERN(builtins, "__builtins__");
#undef INTERN
    return 0;
}

static void
release_strings(void)
{
    Py_CLEAR(pyr_str.clone);
    Py_CLEAR(pyr_str.upgrade);
    Py_CLEAR(pyr_str.purge);
    Py_CLEAR(pyr_str.generation);
    Py_CLEAR(pyr_str.file);
    Py_CLEAR(pyr_str.builtins);
}

/* Put the configured directories first on sys.path, in configuration order. */
static int
prepend_paths(const pyr_interp_opts_t *opts)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    int i;

    if (!path || !PyList_Check(path)) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path is not a list");
        return -1;
    }
    for (i = opts->npaths - 1; i >= 0; i--) {
        PyObject *dir = PyUnicode_DecodeFSDefault(opts->paths[i]);
        int rv;

        if (!dir) {
            return -1;
        }
        rv = PyList_Insert(path, 0, dir);
        Py_DECREF(dir);
        if (rv < 0) {
            return -1;
        }
    }
    return 0;
}

/* threading records the thread that first imports it as the main thread,
 * and Py_FinalizeEx() makes that thread's state lock the one to wait for.
 * Imported first from an httpd worker thread (a handler's "import
 * threading"), it would make the child hang at exit until httpd kills it;
 * imported here, it names the thread that will finalise. */
static int
import_threading(void)
{
    PyObject *m = PyImport_ImportModule("threading");

    Py_XDECREF(m);
    return m ? 0 : -1;
}

/* Python was started in this process by another module (mod_wsgi, whose
 * child_init runs before ours): use its interpreter, through the GILState
 * API it also uses, and make the pyreload module importable, since an
 * inittab entry cannot be added any more.  Returns with the GIL held. */
static int
attach(void)
{
    PyObject *m;
    int rv;

    (void)PyGILState_Ensure();
    if (!(m = pyr_pymod_init())) {
        return -1;
    }
    rv = PyDict_SetItemString(PyImport_GetModuleDict(), "pyreload", m);
    Py_DECREF(m);
    return rv;
}

/* The module's init readies the Request type and pyreload.HTTPError, which
 * every request uses, whether or not its handler imports pyreload.  GIL. */
static int
import_pyreload(void)
{
    PyObject *m = PyImport_ImportModule("pyreload");

    Py_XDECREF(m); /* sys.modules keeps it */
    return m ? 0 : -1;
}

/* Python's own start, isolated: the PYTHON* environment and user
 * site-packages of whoever started httpd do not reach the server, and
 * Python installs no signal handlers (httpd owns the process's signals). */
static int
start(const char **errmsg)
{
    PyConfig config;
    PyStatus status;

    if (PyImport_AppendInittab("pyreload", pyr_pymod_init) < 0) {
        *errmsg = "cannot register the pyreload module";
        return -1;
    }

#ifdef PYR_SANITIZE
    /* Built for a memory checker (make check-asan, check-valgrind): every
     * Python object straight from malloc, since pymalloc's arenas hide
     * overflows and leaks inside them.  Set before anything is allocated;
     * PYTHONMALLOC cannot do it, the configuration below being isolated. */
    {
        PyPreConfig pre;

        PyPreConfig_InitIsolatedConfig(&pre);
        pre.allocator = PYMEM_ALLOCATOR_MALLOC;
        status = Py_PreInitialize(&pre);
        if (PyStatus_Exception(status)) {
            *errmsg = status.err_msg ? status.err_msg : "Python pre-initialisation failed";
            return -1;
        }
    }
#endif

    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    config.write_bytecode = 0; /* children may not own the code directories */
    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        *errmsg = status.err_msg ? status.err_msg : "Python initialisation failed";
        return -1;
    }
    return 0;
}

/* glibc gives every thread that calls malloc() its own arena, and memory
 * freed in one arena is reused by its own threads only.  A reload compiles
 * on whichever worker thread saw the change: each large one left its peak
 * (22 MB for a 10,000-line module) in another arena, and paid as many page
 * faults again (a child at 214 MB after 8 reloads; 17 % of a reload's CPU
 * in the kernel).  Python code runs under the GIL, one thread at a time, so
 * one arena costs it no concurrency.  Before the worker threads start; an
 * administrator's MALLOC_ARENA_MAX wins. */
static void
one_malloc_arena(void)
{
#ifdef __GLIBC__
    if (!getenv("MALLOC_ARENA_MAX")) {
        (void)mallopt(M_ARENA_MAX, 1);
    }
#endif
}

int
pyr_interp_init(const pyr_interp_opts_t *opts, const char **errmsg)
{
    if (ready) {
        return 0;
    }
    one_malloc_arena();
    pyr_pymod_set_extender(opts->extend_module);
    server_log = opts->stdio;
    owner = !Py_IsInitialized();
    if (owner && start(errmsg) < 0) {
        return -1;
    }
    if ((owner ? import_pyreload() : attach()) < 0 || intern_strings() < 0 ||
        prepend_paths(opts) < 0 || pyr_stdio_install(&server_log) < 0 || import_threading() < 0 ||
        pyr_pylog_install(&server_log) < 0 ||
        pyr_guard_install(&server_log, opts->drain) < 0 || pyr_loader_init() < 0) {
        char *tb = pyr_exc_format();
        *errmsg = tb; /* leaked on purpose: start-up failure, logged once */
        if (owner) {
            Py_FinalizeEx();
        }
        else {
            (void)PyEval_SaveThread();
        }
        return -1;
    }

    main_tstate = PyEval_SaveThread();
    thread_tstate = main_tstate;
    ready = 1;
    return 0;
}

int
pyr_interp_interrupted(void)
{
    return in_python;
}

void
pyr_interp_fini(void)
{
    if (!ready || in_python) {
        /* in_python: see pyr_interp_interrupted(). */
        return;
    }
    ready = 0;
    PyEval_RestoreThread(main_tstate);
    pyr_loader_fini();
    release_strings();
    /* Py_FinalizeEx() would wait for every non-daemon thread, forever:
     * wait a bounded time here instead (also when another module finalises
     * later, since the threads are our handlers'). */
    pyr_shutdown_threads(&server_log, THREADS_WAIT_MS);
    pyr_stdio_release();
    pyr_guard_release();
    if (!owner) {
        (void)PyEval_SaveThread();
        return;
    }
    /* Other threads' states are deleted by finalisation itself; they only
     * ever run Python inside a request, and no request runs any more. */
    pyr_shutdown_backstop(&server_log, FINALIZE_MAX_MS - THREADS_WAIT_MS);
    Py_FinalizeEx();
    pyr_shutdown_backstop_cancel();
    main_tstate = NULL;
    thread_tstate = NULL;
}

int
pyr_interp_ready(void)
{
    return ready;
}

void
pyr_gil_take(void)
{
    in_python = 1;
    if (thread_tstate) {
        PyEval_RestoreThread(thread_tstate);
        return;
    }
    /* First use on this thread: make its thread state (and take the GIL)
     * through the GILState API, and never release that registration. */
    (void)PyGILState_Ensure();
    thread_tstate = PyThreadState_Get();
}

void
pyr_gil_drop(void)
{
    (void)PyEval_SaveThread();
    in_python = 0;
}

void
pyr_interp_request_done(void)
{
    pyr_stdio_flush();
    pyr_guard_forked_copy();
}
