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
 *   - a module loaded for the first time keeps its name from its body on,
 *     as with Python's import (nothing served was there): code run later
 *     in the same build finds it (an application factory calling
 *     Flask(__name__) for a package whose body is done);
 *   - a failed build leaves sys.modules as it found it (rollback);
 *   - the entry goes when its generation is finished or the cache destroyed
 *     (only if it still maps to that generation's module); a retired
 *     generation is never found there: its successor took the name.
 *
 * Each module also has a __spec__, so that importlib.util.find_spec(name)
 * answers as for an imported file (Flask finds an application's instance
 * folder next to its file that way): origin = the file, has_location,
 * submodule_search_locations = [its directory] for a package; no loader,
 * since nothing but the cache may execute it (importlib.reload() finds no
 * spec to run).
 * The root's package is described as a package living in the reload root
 * (origin <root>/<prefix>/__init__.py, locations [<root>/<prefix>]: names
 * that do not exist, while its __path__ stays empty and it has no
 * __file__), so that a tool that asks which sys.path entry holds a module
 * under the root gets the root itself: Flask's find_package, which puts an
 * application's instance folder there.  (Described as a namespace package,
 * Flask's search for a package's location among its locations found none
 * and raised StopIteration.)
 *
 * Limit: while a module's body runs (for a first load: until its build
 * ends), another thread looking up its name in sys.modules finds the
 * module being built (importlib behaves alike).
 *
 * GIL everywhere.
 */
#include "pyr_engine.h"

#include <stdio.h>

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

/* importlib.machinery.ModuleSpec(name, None, origin=origin), located when
 * it has an origin, with [locations] as its search path when given.  New
 * reference. */
static PyObject *
new_spec(const char *name, const char *origin, const char *locations)
{
    PyObject *cls, *args = NULL, *kw = NULL, *spec = NULL, *v;

    if (!(v = PyImport_ImportModule("importlib.machinery"))) {
        return NULL;
    }
    cls = PyObject_GetAttrString(v, "ModuleSpec");
    Py_DECREF(v);
    if (!cls) {
        return NULL;
    }
    /* Paths are bytes: decoded as the file system encodes them (a name
     * that is not UTF-8 gets surrogates, which os.fsencode() turns back). */
    if ((args = Py_BuildValue("(sO)", name, Py_None)) &&
        (v = origin ? PyUnicode_DecodeFSDefault(origin) : Py_NewRef(Py_None))) {
        kw = Py_BuildValue("{sN}", "origin", v);
        spec = kw ? PyObject_Call(cls, args, kw) : NULL;
    }
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_DECREF(cls);
    if (spec && origin && PyObject_SetAttrString(spec, "has_location", Py_True) < 0) {
        Py_CLEAR(spec);
    }
    if (spec && locations) {
        v = Py_BuildValue("[N]", PyUnicode_DecodeFSDefault(locations));
        if (!v || PyObject_SetAttrString(spec, "submodule_search_locations", v) < 0) {
            Py_CLEAR(spec);
        }
        Py_XDECREF(v);
    }
    return spec;
}

int
pyr_names_set_spec(pyr_entry_t *e, PyObject *dict)
{
    PyObject *spec = new_spec(e->name, e->path, e->is_package ? e->dir : NULL);
    int rv;

    if (!spec) {
        return -1;
    }
    rv = PyDict_SetItemString(dict, "__spec__", spec);
    Py_DECREF(spec);
    return rv;
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
    if (rv == 0) {
        char where[4200], init[4300];
        PyObject *spec;

        snprintf(where, sizeof(where), "%s/%s", e->root, e->prefix);
        snprintf(init, sizeof(init), "%s/__init__.py", where);
        spec = new_spec(e->prefix, init, where);
        if (spec && PyObject_SetAttrString(spec, "has_location", Py_False) < 0) {
            Py_CLEAR(spec);
        }
        rv = spec ? PyObject_SetAttrString(pkg, "__spec__", spec) : -1;
        Py_XDECREF(spec);
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

/* e's name to its serving generation, or to nothing. */
static void
to_serving(PyObject *mods, pyr_entry_t *e)
{
    if (e->current) {
        (void)PyDict_SetItemString(mods, e->name, e->current->module);
    }
    else {
        (void)PyDict_DelItemString(mods, e->name);
    }
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
                to_serving(mods, entries[i]);
            }
            return -1;
        }
    }
    return 0;
}

/* If e's name maps to module: to e's serving generation (serving), or
 * away.  Keeps a pending exception: this runs on error paths. */
static void
unmap(pyr_entry_t *e, PyObject *module, int serving)
{
    PyObject *type, *value, *tb, *mods;

    if (!module) {
        return;
    }
    PyErr_Fetch(&type, &value, &tb);
    if ((mods = sys_modules()) && PyDict_GetItemString(mods, e->name) == module) {
        if (serving) {
            to_serving(mods, e);
        }
        else {
            (void)PyDict_DelItemString(mods, e->name);
        }
    }
    PyErr_Clear(); /* nothing better to do than leave it as it is */
    PyErr_Restore(type, value, tb);
}

void
pyr_names_forget(pyr_entry_t *e, PyObject *module)
{
    unmap(e, module, 0);
}

void
pyr_names_rollback(pyr_entry_t *e, PyObject *module)
{
    unmap(e, module, 1);
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
