/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * names.c: every current generation is in sys.modules under its __name__.
 *
 * Modern Python finds a module by the __name__ its classes and functions
 * carry: dataclasses (with `from __future__ import annotations`),
 * typing.get_type_hints, pickle, enum, inspect all look up
 * sys.modules[cls.__module__].  So a generation is registered there, under
 * a name no other application can have:
 *
 *   - a handler file:  _pyreload_<hash of its path>
 *   - a module found under a reload root, imported as "a.b":
 *                      _pyreload_<hash of the root>.a.b
 *     where _pyreload_<hash of the root> is a package of nothing
 *     (__path__ = []), so that the dotted name imports, and nothing else
 *     does through it.  Two applications' `models` are two names.
 *
 * Life of an entry of sys.modules:
 *   - while a new module's body (and its __upgrade__) runs, the name maps
 *     to it, as importlib does, so that code run at import time finds it;
 *     then what was there before is put back;
 *   - at publish, every module of the set replaces its predecessor at once
 *     (under the GIL, no Python code in between);
 *   - a failed build leaves sys.modules as it found it;
 *   - the entry goes when its generation is finished or the cache destroyed
 *     (only if it still maps to that generation's module); a retired
 *     generation is never found there: its successor took the name.
 *
 * Limit: while a module's body runs, another thread looking up its name
 * in sys.modules finds the module being built (importlib behaves alike).
 *
 * GIL everywhere.
 */
#include "pyr_engine.h"

static PyObject *
sys_modules(void)
{
    PyObject *m = PySys_GetObject("modules"); /* borrowed */

    if (!m || !PyDict_Check(m)) {
        PyErr_SetString(PyExc_RuntimeError, "sys.modules is not a dict");
        return NULL;
    }
    return m;
}

/* The root's package, made once per cache: the parent of e's dotted name. */
static int
ensure_package(pyr_entry_t *e, PyObject *mods)
{
    pyr_cache_t *c = e->cache;
    PyObject *pkg, *path;
    int rv;

    if (!e->prefix) {
        return 0;
    }
    if (!c->packages && !(c->packages = PyDict_New())) {
        return -1;
    }
    pkg = PyDict_GetItemString(c->packages, e->prefix); /* borrowed */
    if (pkg) {
        return PyDict_SetItemString(mods, e->prefix, pkg);
    }
    if (!(pkg = PyModule_New(e->prefix))) {
        return -1;
    }
    path = PyList_New(0);
    rv = path ? PyObject_SetAttrString(pkg, "__path__", path) : -1;
    Py_XDECREF(path);
    if (rv == 0) {
        PyObject *doc = PyUnicode_FromFormat("mod_pyreload: the reloadable modules "
                                             "under %s",
                                             e->root);

        rv = doc ? PyObject_SetAttrString(pkg, "__doc__", doc) : -1;
        Py_XDECREF(doc);
    }
    if (rv == 0) {
        PyObject *name = PyModule_GetNameObject(pkg);

        rv = name ? PyObject_SetAttrString(pkg, "__package__", name) : -1;
        Py_XDECREF(name);
    }
    if (rv == 0 && (rv = PyDict_SetItemString(c->packages, e->prefix, pkg)) == 0) {
        rv = PyDict_SetItemString(mods, e->prefix, pkg);
    }
    Py_DECREF(pkg);
    return rv;
}

int
pyr_names_enter(pyr_entry_t *e, PyObject *module, PyObject **saved)
{
    PyObject *mods = sys_modules();

    *saved = NULL;
    if (!mods || ensure_package(e, mods) < 0) {
        return -1;
    }
    *saved = PyDict_GetItemString(mods, e->name); /* borrowed */
    Py_XINCREF(*saved);
    if (PyDict_SetItemString(mods, e->name, module) < 0) {
        Py_CLEAR(*saved);
        return -1;
    }
    return 0;
}

/* Keeps a pending exception: this runs on error paths. */
void
pyr_names_leave(pyr_entry_t *e, PyObject **saved)
{
    PyObject *type, *value, *tb, *mods;

    PyErr_Fetch(&type, &value, &tb);
    if ((mods = sys_modules())) {
        if (*saved) {
            (void)PyDict_SetItemString(mods, e->name, *saved);
        }
        else if (PyDict_GetItemString(mods, e->name)) {
            (void)PyDict_DelItemString(mods, e->name);
        }
    }
    PyErr_Clear(); /* nothing better to do than leave it as it is */
    Py_CLEAR(*saved);
    PyErr_Restore(type, value, tb);
}

int
pyr_names_publish(pyr_entry_t **entries, PyObject **modules, int n)
{
    PyObject *mods = sys_modules();
    int i;

    if (!mods) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (ensure_package(entries[i], mods) < 0 ||
            PyDict_SetItemString(mods, entries[i]->name, modules[i]) < 0) {
            /* Back to the generations that still serve. */
            while (--i >= 0) {
                pyr_gen_t *g = entries[i]->current;

                if (g) {
                    (void)PyDict_SetItemString(mods, entries[i]->name, g->module);
                }
                else {
                    (void)PyDict_DelItemString(mods, entries[i]->name);
                }
            }
            return -1;
        }
    }
    return 0;
}

void
pyr_names_forget(pyr_entry_t *e, PyObject *module)
{
    PyObject *type, *value, *tb, *mods;

    if (!module) {
        return;
    }
    PyErr_Fetch(&type, &value, &tb);
    if ((mods = sys_modules()) && PyDict_GetItemString(mods, e->name) == module) {
        (void)PyDict_DelItemString(mods, e->name);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

void
pyr_names_fini(pyr_cache_t *c)
{
    PyObject *mods, *key, *pkg;
    Py_ssize_t pos = 0;

    if (!c->packages) {
        return;
    }
    if ((mods = sys_modules())) {
        while (PyDict_Next(c->packages, &pos, &key, &pkg)) {
            if (PyDict_GetItem(mods, key) == pkg) {
                (void)PyDict_DelItem(mods, key);
            }
        }
    }
    PyErr_Clear();
    Py_CLEAR(c->packages);
}
