/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * shutdown.c: a server process ends within a bounded time, whatever its
 * handlers left behind.
 *
 * Py_FinalizeEx() first calls threading._shutdown(), which joins every
 * non-daemon thread and runs threading's exit hooks (concurrent.futures
 * joins its workers there), with no time limit: one thread a handler
 * started with daemon=False, or one executor task that never ends, kept a
 * child alive until httpd's SIGKILL on a stop, and for ever on a graceful
 * restart (until the scoreboard was full).  Finalisation can also wait on
 * an atexit function or a finaliser.  Here the threads get a bounded wait,
 * those abandoned are named in the log, and a backstop ends the process if
 * finalisation still does not return.
 */
#include "pyr_python.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>


/* threading's own _shutdown() runs in a helper thread that the caller
 * waits for up to a deadline; threading._shutdown then becomes a no-op, so
 * that finalisation does not wait again.  Threads still running afterwards
 * are left like daemon threads: they end with the process.  Called from the
 * main thread, _shutdown() first releases the main thread's own entry in
 * the set it joins; from the helper it would wait for the main thread, so
 * that entry is taken out (Python 3.7 to 3.12 keep it there; later versions
 * do not, and the getattr()s find nothing).  Only public names otherwise. */
static const char threads_src[] =
    "def _pyreload_threads_at_exit(timeout):\n"
    "    import threading\n"
    "    shutdown = threading._shutdown\n"
    "    threading._shutdown = lambda: None\n"
    "    locks = getattr(threading, '_shutdown_locks', None)\n"
    "    main = getattr(threading.main_thread(), '_tstate_lock', None)\n"
    "    if locks is not None and main is not None:\n"
    "        with threading._shutdown_locks_lock:\n"
    "            locks.discard(main)\n"
    "    helper = threading.Thread(target=shutdown, name='pyreload-exit', daemon=True)\n"
    "    helper.start()\n"
    "    helper.join(timeout)\n"
    "    if not helper.is_alive():\n"
    "        return None\n"
    "    dummy = getattr(threading, '_DummyThread', ())\n"
    "    left = [t for t in threading.enumerate()\n"
    "            if t is not helper and t is not threading.main_thread()\n"
    "            and t is not threading.current_thread() and not isinstance(t, dummy)]\n"
    "    left.sort(key=lambda t: t.daemon)\n"
    "    return ', '.join(repr(t.name) + (' (daemon)' if t.daemon else '') for t in left)\n";

void
pyr_shutdown_threads(const pyr_logger_t *log, int timeout_ms)
{
    PyObject *globals = NULL, *r = NULL, *fn;
    const char *names;

    if (!(globals = PyDict_New()) ||
        PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0 ||
        !(r = PyRun_String(threads_src, Py_file_input, globals, globals))) {
        goto fail;
    }
    Py_CLEAR(r);
    fn = PyDict_GetItemString(globals, "_pyreload_threads_at_exit"); /* borrowed */
    if (!fn || !(r = PyObject_CallFunction(fn, "d", timeout_ms / 1000.0))) {
        goto fail;
    }
    if (r != Py_None && (names = PyUnicode_AsUTF8(r)) != NULL) {
        pyr_logf(log, PYR_LOG_WARNING,
                 "PYR0302: this process exits without waiting "
                 "any longer (%.1f s) for threads that handlers left running: %.1500s",
                 timeout_ms / 1000.0, *names ? names : "(threading's exit hooks)");
    }
    PyErr_Clear();
    Py_DECREF(r);
    Py_DECREF(globals);
    return;

fail : {
    char *tb = pyr_exc_format();

    pyr_log_lines(log, PYR_LOG_ERR, "PYR0302: ", tb);
    free(tb);
}
    Py_XDECREF(r);
    Py_XDECREF(globals);
}

/* The last resort: whatever finalisation waits on (an atexit function, a
 * finaliser that joins a thread), the process ends within a bound. */
static pthread_mutex_t backstop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t backstop_cond = PTHREAD_COND_INITIALIZER;
static int backstop_done;
static const pyr_logger_t *backstop_log;

static void *
backstop(void *arg)
{
    int ms = (int)(intptr_t)arg, rc = 0, late;
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&backstop_lock);
    while (!backstop_done && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&backstop_cond, &backstop_lock, &until);
    }
    late = !backstop_done;
    pthread_mutex_unlock(&backstop_lock);
    if (late) {
        pyr_logf(backstop_log, PYR_LOG_ERR,
                 "PYR0303: Python's finalisation has not ended "
                 "after %.1f s (an atexit function or a finaliser that waits?); "
                 "this process exits now",
                 ms / 1000.0);
        _exit(0);
    }
    return NULL;
}

void
pyr_shutdown_backstop(const pyr_logger_t *log, int ms)
{
    pthread_t t;
    pthread_attr_t attr;
    sigset_t all, old;

    backstop_done = 0;
    backstop_log = log;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* No signal of httpd's may land on this thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    (void)pthread_create(&t, &attr, backstop, (void *)(intptr_t)ms);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

void
pyr_shutdown_backstop_cancel(void)
{
    pthread_mutex_lock(&backstop_lock);
    backstop_done = 1;
    pthread_cond_signal(&backstop_cond);
    pthread_mutex_unlock(&backstop_lock);
}
