/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * module.c: one module of a build, from its file to a module whose body
 * has run: the safety check of the file, its code (compiled, or the
 * current generation's when only a dependency changed), a fresh module and
 * its globals, then __clone__, the body and __upgrade__.  Which modules a
 * build makes, and what becomes of them, is build.c.
 *
 * Locking: the GIL, released around the file system calls; called with the
 * cache's build mutex held (build.c).
 */
#include "pyr_engine.h"
#include "pyr_mem.h"
#include "pyr_codecache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Code anyone may write never runs (unless PyReloadSafeFiles Off); code the
 * server's own User may write runs, with a warning once per file.  The
 * refusal is recorded in *refused (the build's), so that the build fails
 * even if the importer catches the exception.  0, or -1 with
 * PermissionError set. */
static int
safe_to_run(pyr_entry_t *e, const pyr_logger_t *log, char **refused)
{
    char msg[1024];
    int unsafe = 0, writable = 0;

    Py_BEGIN_ALLOW_THREADS if (!e->cache->unsafe_ok)
    {
        unsafe = pyr_perm_check(e->path, msg, sizeof(msg)) == 1;
    }
    if (!unsafe && !e->warned_writable) {
        writable = pyr_perm_self_writable(e->path, msg, sizeof(msg));
        if (writable && log) {
            pyr_logf(log, PYR_LOG_WARNING, "PYR0121: %s", msg);
        }
    }
    Py_END_ALLOW_THREADS if (writable)
    {
        e->warned_writable = 1;
    }
    if (!unsafe) {
        return 0;
    }
    if (!*refused) {
        *refused = pyr_xstrdup(msg);
    }
    PyErr_SetString(PyExc_PermissionError, msg);
    return -1;
}

PyObject *
pyr_module_code(pyr_entry_t *e, const pyr_logger_t *log, pyr_sig_t *sig, int *exists,
                char **refused)
{
    PyObject *fname, *code;
    char *src = NULL;
    size_t len = 0;
    int rv;

    if (!log && e->cache->log.log) {
        log = &e->cache->log;
    }
    if (safe_to_run(e, log, refused) < 0) {
        return NULL;
    }
    if (e->current && e->current->code) {
        pyr_sig_t now;

        Py_BEGIN_ALLOW_THREADS rv = pyr_sig_stat(e->path, &now);
        Py_END_ALLOW_THREADS if (rv == 0 && pyr_sig_equal(&now, &e->current->sig))
        {
            /* The same bytes as the current generation's (unchanged
             * signature): its hash still names them. */
            now.has_sha256 = e->current->sig.has_sha256;
            memcpy(now.sha256, e->current->sig.sha256, sizeof(now.sha256));
            *sig = now;
            *exists = 1;
            return Py_NewRef(e->current->code);
        }
    }
    Py_BEGIN_ALLOW_THREADS rv = pyr_source_read(e->path, &src, &len, sig);
    Py_END_ALLOW_THREADS if (rv != 0)
    {
        *exists = rv != ENOENT && rv != ENOTDIR;
        if (!*exists) {
            memset(sig, 0, sizeof(*sig));
            (void)pyr_sig_stat(e->path, sig);
        }
        PyErr_Format(rv == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError, "%s: %s", e->path,
                     rv == EAGAIN ? "it kept changing while it was being read" : strerror(rv));
        return NULL;
    }
    *exists = 1;
    if (memchr(src, '\0', len)) {
        free(src);
        PyErr_Format(PyExc_SyntaxError, "%s: source code contains a NUL byte", e->path);
        return NULL;
    }
    if (!(fname = PyUnicode_DecodeFSDefault(e->path))) {
        free(src);
        return NULL;
    }
    /* From bytes, with the real path: a coding cookie is honoured and
     * tracebacks name the file and line.  Compiled once per host. */
    code = pyr_codecache_code(e->path, fname, src, len, sig->sha256,
                              e->current && e->current->sig.has_sha256 ? e->current->sig.sha256
                                                                       : NULL,
                              log);
    Py_DECREF(fname);
    free(src);
    return code;
}

static int
init_globals(pyr_entry_t *e, PyObject *dict, long number)
{
    PyObject *v;
    int rv;

    if (!(v = PyUnicode_DecodeFSDefault(e->path))) {
        return -1;
    }
    rv = PyDict_SetItem(dict, pyr_str.file, v);
    Py_DECREF(v);
    if (rv < 0 || PyDict_SetItem(dict, pyr_str.builtins, PyEval_GetBuiltins()) < 0 ||
        pyr_import_bind_globals(dict, e) < 0 || pyr_names_set_spec(e, dict) < 0) {
        return -1;
    }
    if (!(v = PyLong_FromLong(number))) {
        return -1;
    }
    rv = PyDict_SetItem(dict, pyr_str.generation, v);
    Py_DECREF(v);
    if (rv < 0) {
        return -1;
    }
    if (e->is_handler) {
        return 0;
    }
    if (e->is_package) {
        PyObject *path = Py_BuildValue("[N]", PyUnicode_DecodeFSDefault(e->dir));

        rv = path ? PyDict_SetItemString(dict, "__path__", path) : -1;
        Py_XDECREF(path);
        v = PyUnicode_FromString(e->name);
    }
    else {
        const char *dot = strrchr(e->name, '.');

        v = PyUnicode_FromStringAndSize(e->name, dot ? dot - e->name : 0);
    }
    if (rv < 0 || !v) {
        Py_XDECREF(v);
        return -1;
    }
    rv = PyDict_SetItemString(dict, "__package__", v);
    Py_DECREF(v);
    return rv;
}

PyObject *
pyr_module_new(pyr_entry_t *e, long number)
{
    PyObject *mod = PyModule_New(e->name);

    if (mod && init_globals(e, PyModule_GetDict(mod), number) < 0) {
        Py_CLEAR(mod);
    }
    return mod;
}

int
pyr_module_exec(pyr_entry_t *e, PyObject *mod, PyObject *code)
{
    PyObject *old = e->current ? e->current->module : NULL; /* borrowed */
    PyObject *r, *saved;
    int ok;

    /* Old code hands its state over before the new body runs. */
    if (old && pyr_call_hook(old, pyr_str.clone, mod) < 0) {
        return -1;
    }
    /* Code run at import time finds the new module by its name (dataclasses,
     * pickle in __upgrade__); the name goes back to the serving generation
     * until the whole set is published. */
    if (pyr_names_enter(e, mod, &saved) < 0) {
        return -1;
    }
    r = PyEval_EvalCode(code, PyModule_GetDict(mod), PyModule_GetDict(mod));
    ok = r != NULL;
    Py_XDECREF(r);
    /* New code knows old data formats; old code cannot know future ones. */
    if (ok && old && pyr_call_hook(mod, pyr_str.upgrade, old) < 0) {
        ok = 0;
    }
    /* Where nothing was, the name stays, as with Python's import: the rest
     * of the build finds the module (a factory calling Flask(__name__) for
     * a package whose body is done); a failed build takes it back. */
    if (ok && !saved) {
        return 0;
    }
    pyr_names_leave(e, &saved);
    return ok ? 0 : -1;
}
