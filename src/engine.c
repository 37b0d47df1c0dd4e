/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * engine.c: the per-process module cache and the reload sequence.
 *
 * Two locks, never nested the wrong way:
 *   - an entry's mutex guards what a request needs before it may run Python
 *     (the signature last loaded, who is loading, the last failure).  It is
 *     only ever taken WITHOUT the GIL and held for a few instructions, so a
 *     loader that needs the GIL can never deadlock against a thread that
 *     holds the GIL and waits for the mutex.
 *   - the GIL guards the Python side: the current generation and the
 *     in-flight counts, so publishing a generation and pinning one for a
 *     request are atomic with respect to each other at no extra cost.
 */
#include "pyr_py.h"

#include <apr_hash.h>
#include <apr_strings.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CALLABLES 32

struct pyr_gen {
    pyr_entry_t *entry;
    PyObject *module;               /* owned */
    PyObject *callables[MAX_CALLABLES]; /* owned; resolved when published */
    int ncallables;
    long number;
    long inflight;                  /* GIL */
    int retired;                    /* GIL */
};

struct pyr_entry {
    pyr_cache_t *cache;
    char *path;
    char modname[40];               /* __name__: unique per path */

    pthread_mutex_t lock;
    pthread_cond_t done;            /* a load finished */
    /* Under lock. */
    int loading;
    int attempted;                  /* seen is valid */
    pyr_sig_t seen;                 /* the source of the last load attempt */
    int missing;                    /* the file is gone (logged once) */
    char *error;                    /* traceback of the last failure, malloc'd */
    /* Append-only; read without lock up to nnames (atomic). */
    char *names[MAX_CALLABLES];
    int nnames;
    /* Atomic. */
    int has_gen;
    apr_time_t next_check;

    /* Under the GIL. */
    pyr_gen_t *current;
    long published;
};

struct pyr_cache {
    apr_pool_t *pool;
    pthread_mutex_t lock;
    apr_hash_t *entries;            /* path -> pyr_entry_t */
};

/* ------------------------------------------------------------------ */
/* The cache                                                           */

pyr_cache_t *
pyr_cache_create(apr_pool_t *pool)
{
    pyr_cache_t *c = apr_pcalloc(pool, sizeof(*c));

    c->pool = pool;
    pthread_mutex_init(&c->lock, NULL);
    c->entries = apr_hash_make(pool);
    return c;
}

/* FNV-1a: a stable, readable-enough module name per path. */
static void
module_name(const char *path, char *out, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    const unsigned char *p;

    for (p = (const unsigned char *)path; *p; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    snprintf(out, n, "_pyreload_%016llx", (unsigned long long)h);
}

pyr_entry_t *
pyr_cache_entry(pyr_cache_t *c, const char *path)
{
    pyr_entry_t *e;

    pthread_mutex_lock(&c->lock);
    e = apr_hash_get(c->entries, path, APR_HASH_KEY_STRING);
    if (!e) {
        e = apr_pcalloc(c->pool, sizeof(*e));
        e->cache = c;
        e->path = apr_pstrdup(c->pool, path);
        module_name(path, e->modname, sizeof(e->modname));
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->done, NULL);
        apr_hash_set(c->entries, e->path, APR_HASH_KEY_STRING, e);
    }
    pthread_mutex_unlock(&c->lock);
    return e;
}

const char *
pyr_entry_path(const pyr_entry_t *e)
{
    return e->path;
}

int
pyr_entry_require(pyr_entry_t *e, const char *callable)
{
    int i, slot = -1;

    pthread_mutex_lock(&e->lock);
    for (i = 0; i < e->nnames; i++) {
        if (strcmp(e->names[i], callable) == 0) {
            slot = i;
            break;
        }
    }
    if (slot < 0 && e->nnames < MAX_CALLABLES) {
        e->names[e->nnames] = strdup(callable);
        slot = e->nnames;
        __atomic_store_n(&e->nnames, e->nnames + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&e->lock);
    return slot;
}

char *
pyr_entry_last_error(pyr_entry_t *e, apr_pool_t *p)
{
    char *copy = NULL;

    pthread_mutex_lock(&e->lock);
    if (e->error) {
        copy = apr_pstrdup(p, e->error);
    }
    pthread_mutex_unlock(&e->lock);
    return copy;
}

/* ------------------------------------------------------------------ */
/* Generations                                                         */

/* Call module.<name>(arg) if the module defines a callable of that name.
 * 0 (also when absent) or -1 with an exception set.  GIL. */
static int
call_hook(PyObject *module, PyObject *name, PyObject *arg)
{
    PyObject *fn, *r;

    fn = PyDict_GetItemWithError(PyModule_GetDict(module), name);  /* borrowed */
    if (!fn) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!PyCallable_Check(fn)) {
        return 0;
    }
    Py_INCREF(fn);      /* the hook may rebind its own name */
    r = arg ? PyObject_CallOneArg(fn, arg) : PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    if (!r) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* A retired generation's last request has ended: __purge__ it, free it. */
static void
gen_finish(pyr_gen_t *g, const pyr_logger_t *log)
{
    int i;

    if (call_hook(g->module, pyr_str.purge, NULL) < 0) {
        char *tb = pyr_exc_format();
        char prefix[64];

        snprintf(prefix, sizeof(prefix), "PYR0104: generation %ld: ", g->number);
        Py_BEGIN_ALLOW_THREADS
        pyr_logf(log, PYR_LOG_ERR, "PYR0104: %s: __purge__() of generation %ld raised:",
                 g->entry->path, g->number);
        pyr_log_lines(log, PYR_LOG_ERR, prefix, tb);
        Py_END_ALLOW_THREADS
        free(tb);
    }
    for (i = 0; i < g->ncallables; i++) {
        Py_CLEAR(g->callables[i]);
    }
    Py_CLEAR(g->module);
    PyMem_Free(g);
}

pyr_gen_t *
pyr_entry_acquire(pyr_entry_t *e)
{
    pyr_gen_t *g = e->current;

    if (g) {
        g->inflight++;
    }
    return g;
}

void
pyr_gen_release(pyr_gen_t *g, const pyr_logger_t *log)
{
    if (--g->inflight == 0 && g->retired) {
        gen_finish(g, log);
    }
}

PyObject *
pyr_gen_module(pyr_gen_t *g)
{
    return g->module;
}

long
pyr_gen_number(const pyr_gen_t *g)
{
    return g->number;
}

PyObject *
pyr_gen_callable(pyr_gen_t *g, int slot)
{
    PyObject *name, *fn;
    pyr_entry_t *e = g->entry;

    if (slot >= 0 && slot < g->ncallables) {
        return g->callables[slot];
    }
    /* Declared after this generation was published: look it up now. */
    if (slot < 0 || slot >= __atomic_load_n(&e->nnames, __ATOMIC_ACQUIRE)) {
        PyErr_SetString(PyExc_RuntimeError, "too many callables declared for one file");
        return NULL;
    }
    name = PyUnicode_FromString(e->names[slot]);
    if (!name) {
        return NULL;
    }
    fn = PyDict_GetItemWithError(PyModule_GetDict(g->module), name);    /* borrowed */
    if (!fn && !PyErr_Occurred()) {
        PyErr_Format(PyExc_AttributeError, "%s defines no '%U'", e->path, name);
    }
    else if (fn && !PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "'%U' in %s is not callable", name, e->path);
        fn = NULL;
    }
    Py_DECREF(name);
    return fn;
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */

/* Build the next generation from source.  GIL.  Returns it, or NULL with an
 * exception set; nothing is published either way. */
static pyr_gen_t *
build(pyr_entry_t *e, const char *src, size_t len, int nnames)
{
    PyCompilerFlags flags = {0, PY_MINOR_VERSION};
    PyObject *fname = NULL, *code = NULL, *mod = NULL, *num = NULL, *r = NULL;
    PyObject *old = e->current ? e->current->module : NULL;     /* borrowed */
    PyObject *dict;
    pyr_gen_t *g = NULL;
    int i;

    if (memchr(src, '\0', len)) {
        PyErr_Format(PyExc_SyntaxError, "%s: source code contains a NUL byte", e->path);
        return NULL;
    }
    if (!(fname = PyUnicode_DecodeFSDefault(e->path))) {
        goto fail;
    }
    /* Compiled from bytes with the real path: a coding cookie is honoured and
     * tracebacks name the file and line. */
    if (!(code = Py_CompileStringObject(src, fname, Py_file_input, &flags, -1))) {
        goto fail;
    }
    /* A fresh module, outside sys.modules: in-flight requests keep the old
     * one, with its old globals, for as long as they run. */
    if (!(mod = PyModule_New(e->modname))) {
        goto fail;
    }
    dict = PyModule_GetDict(mod);   /* borrowed */
    if (!(num = PyLong_FromLong(e->published + 1))) {
        goto fail;
    }
    if (PyDict_SetItem(dict, pyr_str.file, fname) < 0
        || PyDict_SetItem(dict, pyr_str.builtins, PyEval_GetBuiltins()) < 0
        || PyDict_SetItem(dict, pyr_str.generation, num) < 0) {
        goto fail;
    }
    /* Old code carries its state into the new module before the new body
     * runs, so the body can see what was carried and not recreate it. */
    if (old && call_hook(old, pyr_str.clone, mod) < 0) {
        goto fail;
    }
    if (!(r = PyEval_EvalCode(code, dict, dict))) {
        goto fail;
    }
    /* New code knows old data formats; old code cannot know future ones. */
    if (old && call_hook(mod, pyr_str.upgrade, old) < 0) {
        goto fail;
    }

    if (!(g = PyMem_Calloc(1, sizeof(*g)))) {
        PyErr_NoMemory();
        goto fail;
    }
    for (i = 0; i < nnames; i++) {
        PyObject *fn = PyDict_GetItemString(dict, e->names[i]);     /* borrowed */

        if (!fn) {
            PyErr_Format(PyExc_AttributeError,
                         "%s defines no '%s' (named by PyReloadHandler)",
                         e->path, e->names[i]);
            goto fail;
        }
        if (!PyCallable_Check(fn)) {
            PyErr_Format(PyExc_TypeError, "'%s' in %s is a %.100s, not a callable",
                         e->names[i], e->path, Py_TYPE(fn)->tp_name);
            goto fail;
        }
        g->callables[i] = Py_NewRef(fn);
        g->ncallables = i + 1;
    }
    g->entry = e;
    g->module = mod;
    g->number = e->published + 1;
    Py_DECREF(fname);
    Py_DECREF(code);
    Py_DECREF(num);
    Py_DECREF(r);
    return g;

fail:
    if (g) {
        for (i = 0; i < g->ncallables; i++) {
            Py_CLEAR(g->callables[i]);
        }
        PyMem_Free(g);
    }
    Py_XDECREF(fname);
    Py_XDECREF(code);
    Py_XDECREF(mod);
    Py_XDECREF(num);
    Py_XDECREF(r);
    return NULL;
}

/* Make g current; the previous generation is retired and, if no request is
 * running on it, purged now.  GIL. */
static void
publish(pyr_entry_t *e, pyr_gen_t *g, const pyr_logger_t *log)
{
    pyr_gen_t *old = e->current;

    e->current = g;
    e->published = g->number;
    if (old) {
        old->retired = 1;
        if (old->inflight == 0) {
            gen_finish(old, log);
        }
    }
}

static double
ms_since(apr_time_t t0)
{
    return (double)(apr_time_now() - t0) / 1000.0;
}

/* Load the file into a new generation and record the outcome.  Called by the
 * one thread that holds e->loading, without the entry lock and without the
 * GIL.  Returns 0, or ENOENT when the file vanished before it was read. */
static int
load(pyr_entry_t *e, const pyr_logger_t *log)
{
    apr_time_t t0 = apr_time_now();
    char *src = NULL, *error = NULL;
    pyr_gen_t *g = NULL;
    pyr_sig_t sig;
    size_t len = 0;
    long number = 0, serving = 0;
    int rv, nnames;

    memset(&sig, 0, sizeof(sig));
    rv = pyr_source_read(e->path, &src, &len, &sig);
    if (rv == ENOENT || rv == ENOTDIR) {
        return ENOENT;
    }
    if (rv != 0) {
        char buf[512];

        snprintf(buf, sizeof(buf), "%s: cannot read the file: %s\n", e->path,
                 rv == EAGAIN ? "it kept changing while it was being read"
                              : strerror(rv));
        error = strdup(buf);
        /* Remember what is there now, so the next change is a new attempt. */
        (void)pyr_sig_stat(e->path, &sig);
        /* Only the loader changes e->current, and we are it. */
        serving = e->current ? e->current->number : 0;
    }
    else {
        nnames = __atomic_load_n(&e->nnames, __ATOMIC_ACQUIRE);
        pyr_gil_take();
        g = build(e, src, len, nnames);
        if (g) {
            publish(e, g, log);
        }
        else {
            error = pyr_exc_format();
        }
        number = e->published;
        serving = e->current ? e->current->number : 0;
        pyr_gil_drop();
        free(src);
    }

    pthread_mutex_lock(&e->lock);
    e->attempted = 1;
    e->seen = sig;
    free(e->error);
    e->error = error;
    if (g) {
        __atomic_store_n(&e->has_gen, 1, __ATOMIC_RELEASE);
    }
    error = error ? strdup(error) : NULL;   /* our copy to log, outside the lock */
    pthread_mutex_unlock(&e->lock);

    if (g) {
        pyr_logf(log, PYR_LOG_INFO, "PYR0100: %s: generation %ld loaded in %.3f ms",
                 e->path, number, ms_since(t0));
    }
    else {
        char prefix[32];

        if (serving) {
            pyr_logf(log, PYR_LOG_ERR, "PYR0102: %s: load failed; generation %ld "
                     "keeps serving until the file changes again:", e->path, serving);
        }
        else {
            pyr_logf(log, PYR_LOG_ERR, "PYR0102: %s: load failed; nothing to serve "
                     "until the file changes again:", e->path);
        }
        snprintf(prefix, sizeof(prefix), "PYR0102: ");
        pyr_log_lines(log, PYR_LOG_ERR, prefix, error ? error : "(unknown error)\n");
        free(error);
    }
    return 0;
}

static pyr_status_t
stat_failure(pyr_entry_t *e, int rv, const pyr_logger_t *log)
{
    pyr_status_t st = (rv == ENOENT || rv == ENOTDIR) ? PYR_MISSING
                    : rv == EACCES ? PYR_DENIED : PYR_SYSERR;
    int first;

    pthread_mutex_lock(&e->lock);
    first = !e->missing;
    e->missing = 1;
    pthread_mutex_unlock(&e->lock);
    if (first) {
        pyr_logf(log, PYR_LOG_ERR, "PYR0103: %s: %s; answering %s until it is back%s",
                 e->path, strerror(rv), st == PYR_MISSING ? "404" : st == PYR_DENIED
                 ? "403" : "500", __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE)
                 ? " (its last generation is kept)" : "");
    }
    return st;
}

pyr_status_t
pyr_entry_refresh(pyr_entry_t *e, const pyr_check_t *check, const pyr_logger_t *log)
{
    pyr_status_t st;
    pyr_sig_t sig;
    int rv, was_missing;

    if (__atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE)) {
        if (!check->enabled) {
            return PYR_READY;
        }
        if (check->interval > 0) {
            apr_time_t now = apr_time_now();

            if (now < __atomic_load_n(&e->next_check, __ATOMIC_RELAXED)) {
                return PYR_READY;
            }
            __atomic_store_n(&e->next_check, now + check->interval, __ATOMIC_RELAXED);
        }
    }

    rv = pyr_sig_stat(e->path, &sig);
    if (rv != 0) {
        return stat_failure(e, rv, log);
    }

    pthread_mutex_lock(&e->lock);
    was_missing = e->missing;
    e->missing = 0;
    for (;;) {
        if (e->attempted && pyr_sig_equal(&sig, &e->seen)) {
            st = __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE) ? PYR_READY : PYR_FAILED;
            pthread_mutex_unlock(&e->lock);
            goto done;
        }
        if (!e->loading) {
            break;
        }
        /* Someone is loading: wait for that load (we hold no GIL), then look
         * again, so a request that starts after a save runs what it saved. */
        pthread_cond_wait(&e->done, &e->lock);
    }
    e->loading = 1;
    pthread_mutex_unlock(&e->lock);

    rv = load(e, log);

    pthread_mutex_lock(&e->lock);
    e->loading = 0;
    pthread_cond_broadcast(&e->done);
    pthread_mutex_unlock(&e->lock);
    if (rv == ENOENT) {
        return stat_failure(e, rv, log);
    }
    st = __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE) ? PYR_READY : PYR_FAILED;

done:
    if (was_missing) {
        pyr_logf(log, PYR_LOG_NOTICE, "PYR0105: %s: the file is back", e->path);
    }
    return st;
}

/* ------------------------------------------------------------------ */

void
pyr_cache_destroy(pyr_cache_t *c)
{
    apr_hash_index_t *hi;

    if (!c || !pyr_interp_ready()) {
        return;
    }
    pyr_gil_take();
    for (hi = apr_hash_first(NULL, c->entries); hi; hi = apr_hash_next(hi)) {
        pyr_entry_t *e = apr_hash_this_val(hi);
        pyr_gen_t *g = e->current;
        int i;

        e->current = NULL;
        if (g && g->inflight == 0) {
            for (i = 0; i < g->ncallables; i++) {
                Py_CLEAR(g->callables[i]);
            }
            Py_CLEAR(g->module);
            PyMem_Free(g);
        }
        free(e->error);
        e->error = NULL;
    }
    pyr_gil_drop();
}
