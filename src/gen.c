/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * gen.c: the life of a generation, one version of one file's module.  It is
 * allocated when a build publishes it (build.c), referenced by the requests
 * pinned to it and by the generations that imported it, retired when a newer
 * one replaces it, collected once nothing outside the retired generations
 * holds it (import cycles included), purged (__purge__) and freed, all here.
 * The module hooks (__clone__, __upgrade__, __purge__) are called through
 * pyr_call_hook().
 *
 * Locking: the GIL, for every function here; no mutex is taken.
 */
#include "pyr_engine.h"
#include "pyr_mem.h"

#include <stdlib.h>

/* The handler generation the calling thread's request is pinned to. */
static __thread pyr_gen_t *pinned;

int
pyr_call_hook(PyObject *module, PyObject *name, PyObject *arg)
{
    PyObject *fn, *r;

    fn = PyDict_GetItemWithError(PyModule_GetDict(module), name); /* borrowed */
    if (!fn) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!PyCallable_Check(fn)) {
        return 0;
    }
    Py_INCREF(fn); /* the hook may rebind its own name */
    r = arg ? PyObject_CallOneArg(fn, arg) : PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    if (!r) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

pyr_gen_t *
pyr_gen_new(pyr_entry_t *e, const pyr_sig_t *sig)
{
    pyr_gen_t *g = PyMem_Calloc(1, sizeof(*g));

    if (!g) {
        PyErr_NoMemory();
        return NULL;
    }
    g->entry = e;
    g->sig = *sig;
    g->number = e->published + 1;
    return g;
}

void
pyr_gen_add_dep(pyr_gen_t *g, pyr_gen_t *d)
{
    g->deps = pyr_xgrow(g->deps, &g->capdeps, g->ndeps + 1, sizeof(*g->deps));
    g->deps[g->ndeps++] = d;
    pyr_gen_ref(d);
}

/* A retired generation nobody uses any more, before it is freed: __purge__
 * it and let go of its module.  GIL. */
static void
gen_purge(pyr_gen_t *g, const pyr_logger_t *log)
{
    pyr_cache_t *c = g->entry->cache;

    if (g->rprev) {
        g->rprev->rnext = g->rnext;
    }
    else if (c->retired == g) {
        c->retired = g->rnext;
    }
    if (g->rnext) {
        g->rnext->rprev = g->rprev;
    }
    g->rnext = g->rprev = NULL;
    pyr_status_changed();
    if (pyr_call_hook(g->module, pyr_str.purge, NULL) < 0) {
        char *tb = pyr_exc_format();

        Py_BEGIN_ALLOW_THREADS pyr_logf(
            log, PYR_LOG_ERR, "PYR0104: %s: __purge__() of generation %ld raised:", g->entry->path,
            g->number);
        pyr_log_lines(log, PYR_LOG_ERR, "PYR0104: ", tb);
        Py_END_ALLOW_THREADS free(tb);
    }
    pyr_gen_clear(g);
    __atomic_store_n(&c->purged, 1, __ATOMIC_RELEASE);
}

void
pyr_cache_tidy(pyr_cache_t *c)
{
    /* No cache: Python did not start in this process. */
    if (!c || !__atomic_load_n(&c->purged, __ATOMIC_ACQUIRE) ||
        !__atomic_exchange_n(&c->purged, 0, __ATOMIC_ACQ_REL)) {
        return;
    }
    /* The retired module's objects are old: only a full collection reaches
     * them, and Python would start one only after many more allocations
     * (never, for a small application reloaded now and then).  Its cost is
     * the size of the heap, once per purge, after the response.  The freed
     * memory stays with malloc for the next build, as in any Python process:
     * malloc_trim() here gave it back (24 MB instead of 45 MB after 8
     * reloads of a 10,000-line module) but the next build paid 10 times the
     * page faults for it (+25 % CPU). */
    pyr_gil_take();
    (void)PyGC_Collect();
    pyr_gil_drop();
}

void
pyr_gen_clear(pyr_gen_t *g)
{
    int i;

    for (i = 0; i < g->ncallables; i++) {
        Py_CLEAR(g->callables[i]);
    }
    pyr_names_forget(g->entry, g->module);
    Py_CLEAR(g->module);
    Py_CLEAR(g->code);
}

/* Let go of what g imported (which may finish those in turn), except the
 * generations freed in the same collection.  GIL. */
static void
gen_unref_deps(pyr_gen_t *g, const pyr_logger_t *log)
{
    int i;

    for (i = 0; i < g->ndeps; i++) {
        if (!g->deps[i]->dying) {
            pyr_gen_unref(g->deps[i], log);
        }
    }
}

void
pyr_gen_free(pyr_gen_t *g)
{
    free(g->deps);
    PyMem_Free(g);
}

void
pyr_gen_ref(pyr_gen_t *g)
{
    g->refs++;
}

void
pyr_gen_unref(pyr_gen_t *g, const pyr_logger_t *log)
{
    if (--g->refs == 0 && g->retired) {
        gen_purge(g, log);
        gen_unref_deps(g, log);
        pyr_gen_free(g);
    }
    else if (g->retired) {
        /* What is left may be other retired generations only (a cycle). */
        pyr_gen_collect(g->entry->cache, log);
    }
}

void
pyr_gen_retire(pyr_gen_t *g)
{
    pyr_cache_t *c = g->entry->cache;

    g->retired = 1;
    g->retired_at = apr_time_now();
    pyr_status_changed();
    g->rprev = NULL;
    g->rnext = c->retired;
    if (c->retired) {
        c->retired->rprev = g;
    }
    c->retired = g;
}

/* Reference counts alone never free two retired generations that import
 * each other.  As CPython's cycle collector does, subtract the references
 * that retired generations hold on each other: what is still held from
 * outside (a request, a current generation) lives, and so does everything
 * it imports; the rest is garbage.  Retired generations are few and short
 * lived, so a whole pass costs little, and only replaced code pays it. */
void
pyr_gen_collect(pyr_cache_t *c, const pyr_logger_t *log)
{
    pyr_gen_t *g, *dead;
    int i, again;

    if (c->collecting) {
        c->collect_again = 1;
        return;
    }
    c->collecting = 1;
    do {
        c->collect_again = 0;
        for (g = c->retired; g; g = g->rnext) {
            g->held = 0;
        }
        for (g = c->retired; g; g = g->rnext) {
            for (i = 0; i < g->ndeps; i++) {
                g->deps[i]->held += g->deps[i]->retired;
            }
        }
        for (g = c->retired; g; g = g->rnext) {
            g->live = g->refs > g->held;
        }
        do {
            again = 0;
            for (g = c->retired; g; g = g->rnext) {
                for (i = 0; g->live && i < g->ndeps; i++) {
                    if (g->deps[i]->retired && !g->deps[i]->live) {
                        g->deps[i]->live = again = 1;
                    }
                }
            }
        } while (again);
        dead = NULL;
        for (g = c->retired; g; g = g->rnext) {
            g->dying = !g->live;
            if (g->dying) {
                g->dnext = dead;
                dead = g;
            }
        }
        /* Every hook runs before any generation of the garbage is freed,
         * and each one's imports are let go of while all of the garbage is
         * still there to say it is dying. */
        for (g = dead; g; g = g->dnext) {
            gen_purge(g, log);
        }
        for (g = dead; g; g = g->dnext) {
            gen_unref_deps(g, log);
        }
        while ((g = dead)) {
            dead = g->dnext;
            pyr_gen_free(g);
        }
    } while (c->collect_again);
    c->collecting = 0;
}

pyr_gen_t *
pyr_entry_acquire(pyr_entry_t *e)
{
    pyr_gen_t *g = e->current;

    if (g) {
        g->refs++;
        g->pins++;
        pinned = g;
    }
    return g;
}

void
pyr_gen_release(pyr_gen_t *g, const pyr_logger_t *log)
{
    if (pinned == g) {
        pinned = NULL;
    }
    g->pins--;
    if (g->retired) {
        /* Its in_flight is shown exactly; the current one's is not (it
         * changes with every request). */
        pyr_status_changed();
    }
    pyr_gen_unref(g, log);
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

/* Handler files: a callable that a configuration uses must not disappear.
 * One the current generation has and the new one lacks fails the load (the
 * last good code keeps serving, as for any broken edit); one never found
 * belongs to the configuration that names it, not to the file: out[i] is
 * NULL and only that configuration's requests fail. */
static int
find_callables(pyr_entry_t *e, PyObject *module, PyObject **out, int *nout)
{
    int i, n = __atomic_load_n(&e->nnames, __ATOMIC_ACQUIRE);
    PyObject *dict = PyModule_GetDict(module);
    PyObject *had = e->current ? PyModule_GetDict(e->current->module) : NULL;

    for (i = 0; i < n; i++) {
        PyObject *fn = PyDict_GetItemString(dict, e->names[i]); /* borrowed */
        PyObject *old = had ? PyDict_GetItemString(had, e->names[i]) : NULL;

        out[i] = fn && PyCallable_Check(fn) ? fn : NULL;
        if (out[i] || !old || !PyCallable_Check(old)) {
            continue;
        }
        if (!fn) {
            PyErr_Format(PyExc_AttributeError,
                         "%s defines no '%s' (named by its "
                         "PyReloadHandler or PyReloadWSGI, and defined by the code serving now)",
                         e->path, e->names[i]);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "'%s' in %s is a %.100s, not a callable "
                         "(named by its PyReloadHandler or PyReloadWSGI)",
                         e->names[i], e->path, Py_TYPE(fn)->tp_name);
        }
        return -1;
    }
    *nout = n;
    return 0;
}

int
pyr_gen_check_callables(pyr_entry_t *e, PyObject *module)
{
    PyObject *calls[PYR_MAX_CALLABLES];
    int n;

    return find_callables(e, module, calls, &n);
}

void
pyr_gen_take_callables(pyr_gen_t *g)
{
    int i;

    (void)find_callables(g->entry, g->module, g->callables, &g->ncallables);
    for (i = 0; i < g->ncallables; i++) {
        Py_XINCREF(g->callables[i]);
    }
}

PyObject *
pyr_gen_callable(pyr_gen_t *g, int slot)
{
    PyObject *name, *fn;
    pyr_entry_t *e = g->entry;

    if (slot >= 0 && slot < g->ncallables && g->callables[slot]) {
        return g->callables[slot];
    }
    /* Declared after this generation was published, or missing from it:
     * look it up now (and say why it cannot be called). */
    if (slot < 0 || slot >= __atomic_load_n(&e->nnames, __ATOMIC_ACQUIRE)) {
        PyErr_SetString(PyExc_RuntimeError, "too many callables declared for one file");
        return NULL;
    }
    if (!(name = PyUnicode_FromString(e->names[slot]))) {
        return NULL;
    }
    fn = PyDict_GetItemWithError(PyModule_GetDict(g->module), name); /* borrowed */
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

int
pyr_gen_tell_missing(pyr_gen_t *g, int slot)
{
    if (slot < 0 || slot >= PYR_MAX_CALLABLES || g->told[slot]) {
        return 0;
    }
    g->told[slot] = 1;
    return 1;
}

pyr_gen_t *
pyr_gen_pinned(void)
{
    return pinned;
}
