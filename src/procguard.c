/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * procguard.c: what a handler may do to the process it runs in, and to the
 * server around it.  A handler can end its own process, never the server.
 *
 *   os._exit(N), os.abort()   log the file and line that called them, let the
 *                             process's other requests finish (bounded), and
 *                             end the process with status 0: httpd reads 15
 *                             (APEXIT_CHILDFATAL) as "stop the whole server"
 *                             and 7 (APEXIT_CHILDSICK) as "children cannot
 *                             start"; neither is the handler's to say.
 *   os.kill(), os.killpg()    refused (PermissionError) when aimed at the
 *                             httpd parent, this process group or every
 *                             process: those signals stop the server.
 *   os.fork()                 allowed; a copy that returns from the handler
 *                             into httpd exits there (pyr_guard_forked_copy)
 *                             instead of living on as a broken server process.
 *                             In a copy, os._exit() and the rest are the real
 *                             ones (multiprocessing, daemonising).
 *
 * How a process ends when httpd asks it to is shutdown.c.
 */
#include "pyr_python.h"
#include "pyr_mem.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long an exiting process waits for the requests it still serves. */
#define DRAIN_MS 2000

static const pyr_logger_t *glog;
static void (*drain)(int max_ms);
static pid_t server_pid;             /* this server process */
static pid_t server_parent;          /* the httpd parent */
static volatile sig_atomic_t forked; /* set in a copy made by fork() */

/* The real functions, for the cases that are allowed.  Owned. */
static PyObject *real_kill, *real_killpg;

static void
after_fork_in_child(void)
{
    forked = 1;
}

/* "FILE:LINE" of the Python code that called us (the innermost frame:
 * a C function pushes none).  malloc'd. */
static char *
caller(void)
{
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed */
    PyCodeObject *code;
    PyObject *file = NULL;
    const char *u = NULL;
    char *out;
    int line;

    if (!f) {
        return pyr_xstrdup("(no Python frame)");
    }
    code = PyFrame_GetCode(f);
    line = PyFrame_GetLineNumber(f);
    file = PyObject_GetAttrString((PyObject *)code, "co_filename");
    if (file && PyUnicode_Check(file)) {
        u = PyUnicode_AsUTF8(file);
    }
    if (!u) {
        PyErr_Clear();
    }
    out = pyr_xmalloc(strlen(u ? u : "?") + 24);
    sprintf(out, "%s:%d", u ? u : "?", line);
    Py_XDECREF(file);
    Py_DECREF(code);
    return out;
}

/* End this process on a handler's request.  GIL held; never returns. */
static void
end_process(const char *what)
{
    char *where = caller();

    pyr_logf(glog, PYR_LOG_ERR,
             "PYR0300: %s called at %s; this child process exits "
             "(the server goes on; httpd starts another process)",
             what, where ? where : "?");
    free(where);
    pyr_stdio_flush();
    (void)PyEval_SaveThread();
    if (drain) {
        drain(DRAIN_MS);
    }
    /* Like the os._exit() it replaces: no cleanup runs, no Python code,
     * nothing that could wait on a thread this one interrupted. */
    _exit(0);
}

static PyObject *
guard_exit(PyObject *self, PyObject *arg)
{
    PyObject *index = PyNumber_Index(arg); /* what os._exit() accepts */
    int overflow;
    long status;
    char what[64];

    if (!index) {
        return NULL;
    }
    status = PyLong_AsLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (forked || getpid() != server_pid) {
        _exit((int)status);
    }
    if (overflow) {
        snprintf(what, sizeof(what), "os._exit(<%s>)", overflow > 0 ? "huge" : "-huge");
    }
    else {
        snprintf(what, sizeof(what), "os._exit(%ld)", status);
    }
    end_process(what);
    return NULL;
}

static PyObject *
guard_abort(PyObject *self, PyObject *unused)
{
    if (forked || getpid() != server_pid) {
        abort();
    }
    end_process("os.abort()");
    return NULL;
}

/* Whether a signal sent with kill(2)'s pid argument, or killpg(2)'s group
 * argument, reaches beyond this process into the server. */
static int
pid_hits_server(long pid)
{
    return pid == 0 || pid == -1 || (pid < -1 && -pid == (long)getpgrp()) ||
           (pid > 0 && (pid_t)pid == server_parent && getppid() == server_parent);
}

static int
group_hits_server(long group)
{
    return group == 0 || group == (long)getpgrp();
}

static PyObject *
refuse(const char *call)
{
    char *where = caller();
    PyObject *args;

    pyr_logf(glog, PYR_LOG_ERR,
             "PYR0305: %s at %s refused: it would signal the "
             "whole server; a handler may only end its own process (os._exit)",
             call, where ? where : "?");
    free(where);
    args = Py_BuildValue("(is)", EPERM,
                         "mod_pyreload: this signal would reach the "
                         "whole server; a handler may only end its own process");
    if (args) {
        PyErr_SetObject(PyExc_PermissionError, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* name(target, sig) through real, unless it hits the server.  Signal 0
 * only asks whether a process exists. */
static PyObject *
guard_signal(const char *name, PyObject *real, int (*hits)(long), PyObject *const *args,
             Py_ssize_t nargs)
{
    long target, sig;
    char call[96];

    if (!real) {
        /* A reference to the guard kept past pyr_guard_release(). */
        PyErr_Format(PyExc_RuntimeError, "%s: mod_pyreload has ended in this process", name);
        return NULL;
    }
    if (nargs == 2 && !forked && PyLong_Check(args[0]) && PyLong_Check(args[1])) {
        target = PyLong_AsLong(args[0]);
        sig = PyLong_AsLong(args[1]);
        if (PyErr_Occurred()) {
            PyErr_Clear(); /* out of range: the real call says why */
        }
        else if (sig != 0 && hits(target)) {
            snprintf(call, sizeof(call), "%s(%ld, %ld)", name, target, sig);
            return refuse(call);
        }
    }
    return PyObject_Vectorcall(real, args, (size_t)nargs, NULL);
}

static PyObject *
guard_kill(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return guard_signal("os.kill", real_kill, pid_hits_server, args, nargs);
}

static PyObject *
guard_killpg(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return guard_signal("os.killpg", real_killpg, group_hits_server, args, nargs);
}

static PyMethodDef guards[] = {
    { "_exit", (PyCFunction)guard_exit, METH_O,
      "mod_pyreload: end this server process (logged), never the server." },
    { "abort", (PyCFunction)guard_abort, METH_NOARGS,
      "mod_pyreload: end this server process (logged), never the server." },
    { "kill", (PyCFunction)(void (*)(void))guard_kill, METH_FASTCALL,
      "os.kill(), refused when aimed at the whole server." },
    { "killpg", (PyCFunction)(void (*)(void))guard_killpg, METH_FASTCALL,
      "os.killpg(), refused when aimed at the whole server." },
    { NULL }
};

/* Put fn in place of name in os and posix (code may call either). */
static int
put(const char *name, PyObject *fn)
{
    static const char *const modules[] = { "posix", "os" };
    size_t i;
    int rv = 0;

    for (i = 0; i < sizeof(modules) / sizeof(modules[0]) && rv == 0; i++) {
        PyObject *m = PyImport_ImportModule(modules[i]);

        rv = m ? PyObject_SetAttrString(m, name, fn) : -1;
        Py_XDECREF(m);
    }
    return rv;
}

static int
replace(PyMethodDef *def)
{
    PyObject *fn = PyCFunction_New(def, NULL);
    int rv;

    if (!fn) {
        return -1;
    }
    rv = put(def->ml_name, fn);
    Py_DECREF(fn);
    return rv;
}

int
pyr_guard_install(const pyr_logger_t *log, void (*drain_fn)(int max_ms))
{
    static int atfork;
    PyObject *posix;
    PyMethodDef *def;

    glog = log;
    drain = drain_fn;
    server_pid = getpid();
    server_parent = getppid();
    forked = 0;
    if (!atfork && pthread_atfork(NULL, NULL, after_fork_in_child) == 0) {
        atfork = 1;
    }
    if (!(posix = PyImport_ImportModule("posix"))) {
        return -1;
    }
    Py_XSETREF(real_kill, PyObject_GetAttrString(posix, "kill"));
    Py_XSETREF(real_killpg, PyObject_GetAttrString(posix, "killpg"));
    Py_DECREF(posix);
    if (!real_kill || !real_killpg) {
        return -1;
    }
    for (def = guards; def->ml_name; def++) {
        if (replace(def) < 0) {
            return -1;
        }
    }
    return 0;
}

void
pyr_guard_release(void)
{
    /* Threads can outlive this (abandoned at the process's end, or when
     * another module finalises Python later): os.kill and os.killpg are the
     * real ones again for them. */
    if ((real_kill && put("kill", real_kill) < 0) ||
        (real_killpg && put("killpg", real_killpg) < 0)) {
        PyErr_Clear();
    }
    Py_CLEAR(real_kill);
    Py_CLEAR(real_killpg);
}

void
pyr_guard_forked_copy(void)
{
    if (!forked || getpid() == server_pid) {
        return;
    }
    /* A copy that a handler made with os.fork() and let return: it shares
     * the client's connection and httpd's state with its parent, and must
     * not answer or go on serving.  If logging hangs (a lock some vanished
     * thread held), the alarm ends it anyway. */
    signal(SIGALRM, SIG_DFL);
    alarm(5);
    pyr_logf(glog, PYR_LOG_ERR,
             "PYR0304: process %ld, which a handler forked from "
             "server process %ld, returned from the handler into httpd; it exits "
             "(end the child of os.fork() with os._exit())",
             (long)getpid(), (long)server_pid);
    _exit(0);
}
