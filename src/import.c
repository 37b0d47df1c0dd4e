/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * import.c: the import hook.  builtins.__import__ and
 * importlib.import_module are replaced once, at interpreter start; an
 * import made by a reloadable module (its globals carry __pyreload__) of a
 * name found under a reload root gets that module through the cache: from
 * the build running on this thread (build.c), from the set the request is
 * pinned to, or loaded now and added to that set.  Any other import is
 * Python's own.
 *
 * Locking: the GIL, for every function here.  The import hook takes no
 * engine lock itself: the cache's lock is taken in cache.c, the build
 * mutex in build.c, a handler's mutex in cache.c, each with the GIL
 * released.
 */
#include "pyr_engine.h"
#include "pyr_mem.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static PyObject *orig_import;        /* builtins.__import__ before us */
static PyObject *orig_import_module; /* importlib.import_module before us */
static PyObject *key_pyreload;       /* "__pyreload__" */
static PyObject *stdlib_names;       /* frozenset: never reloadable */

/* ------------------------------------------------------------------ */
/* Names to files                                                      */

static int
is_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* is_file(), but a module that has a good generation may be briefly absent
 * (a tool re-creating it): it gets a moment to come back.  No GIL. */
static int
is_module_file(pyr_cache_t *c, const char *path)
{
    pyr_entry_t *e;
    pyr_sig_t sig;

    if (is_file(path)) {
        return 1;
    }
    e = pyr_cache_find(c, path);
    return e && __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE) &&
           pyr_sig_stat_settled(path, &sig) == 0;
}

/* "a.b.c" under one root: the entries of a, a.b and a.b.c, or 0 if the
 * name is not there.  No GIL (stats, and the cache lock). */
static int
resolve_in(pyr_cache_t *c, const char *root, const char *absname, pyr_entry_t **out, int max)
{
    char dir[4096], path[4200], prefix[1024];
    const char *p = absname;
    int n = 0;

    snprintf(dir, sizeof(dir), "%s", root);
    prefix[0] = '\0';
    while (*p && n < max) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);

        if (len == 0 || strlen(prefix) + len + 2 > sizeof(prefix)) {
            return 0;
        }
        if (prefix[0]) {
            strcat(prefix, ".");
        }
        strncat(prefix, p, len);
        snprintf(path, sizeof(path), "%s/%.*s/__init__.py", dir, (int)len, p);
        if (is_module_file(c, path)) {
            out[n++] = pyr_entry_new(c, path, prefix, root, 0, 1);
            snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/%.*s", (int)len, p);
        }
        else {
            snprintf(path, sizeof(path), "%s/%.*s.py", dir, (int)len, p);
            if (dot || !is_module_file(c, path)) {
                return 0;
            }
            out[n++] = pyr_entry_new(c, path, prefix, root, 0, 0);
        }
        p += len + (dot ? 1 : 0);
    }
    return *p ? 0 : n;
}

#define MAX_DEPTH 32

/* The entries of absname's packages and module, as seen from importer, or 0
 * when it is not reloadable (then it is an ordinary import).  Remembered
 * per (root, name); forgotten at each rebuild, so new files are found. */
static int
resolve(pyr_entry_t *importer, PyObject *absname, pyr_entry_t **out)
{
    pyr_cache_t *c = importer->cache;
    PyObject *key, *hit, *list;
    const char *name, *r;
    int n = 0, i;

    if (!c->resolved && !(c->resolved = PyDict_New())) {
        return -1;
    }
    /* The standard library stays ordinary, as in Python, where no file
     * shadows a built-in module: a handler's own json.py or gc.py is not
     * what "import json" means to the modules next to it. */
    {
        Py_ssize_t dot = PyUnicode_FindChar(absname, '.', 0, PyUnicode_GET_LENGTH(absname), 1);
        PyObject *top = dot < 0 ? Py_NewRef(absname) : PyUnicode_Substring(absname, 0, dot);
        int std = top ? PySet_Contains(stdlib_names, top) : -1;

        Py_XDECREF(top);
        if (std != 0) {
            return std < 0 ? -1 : 0;
        }
    }
    if (!(key = PyUnicode_DecodeFSDefault(importer->root))) {
        return -1;
    }
    Py_SETREF(key, PyUnicode_FromFormat("%U\n%U", key, absname));
    if (!key) {
        return -1;
    }
    hit = PyDict_GetItemWithError(c->resolved, key); /* borrowed */
    if (hit) {
        Py_DECREF(key);
        if (hit == Py_None) {
            return 0;
        }
        n = (int)PyTuple_GET_SIZE(hit);
        for (i = 0; i < n; i++) {
            out[i] = PyCapsule_GetPointer(PyTuple_GET_ITEM(hit, i), NULL);
        }
        return n;
    }
    if (PyErr_Occurred() || !(name = PyUnicode_AsUTF8(absname))) {
        Py_DECREF(key);
        return -1;
    }

    Py_BEGIN_ALLOW_THREADS n = resolve_in(c, importer->root, name, out, MAX_DEPTH);
    for (i = 0; !n && (r = pyr_cache_root(c, i)); i++) {
        if (strcmp(r, importer->root) != 0) {
            n = resolve_in(c, r, name, out, MAX_DEPTH);
        }
    }
    Py_END_ALLOW_THREADS

        if (n > 0)
    {
        if (!(list = PyTuple_New(n))) {
            Py_DECREF(key);
            return -1;
        }
        for (i = 0; i < n; i++) {
            if (!out[i]->capsule && !(out[i]->capsule = PyCapsule_New(out[i], NULL, NULL))) {
                Py_DECREF(list);
                Py_DECREF(key);
                return -1;
            }
            PyTuple_SET_ITEM(list, i, Py_NewRef(out[i]->capsule));
        }
    }
    else
    {
        list = Py_NewRef(Py_None);
    }
    i = PyDict_SetItem(c->resolved, key, list);
    Py_DECREF(list);
    Py_DECREF(key);
    return i < 0 ? -1 : n;
}

/* ------------------------------------------------------------------ */
/* The module a reloadable importer gets for entry d                  */

/* Where d stands in the closure of the generation a request is pinned to. */
static pyr_gen_t *
in_closure(pyr_gen_t *g, pyr_entry_t *d, int depth)
{
    int i;

    if (g->entry == d) {
        return g;
    }
    if (depth > 64) {
        return NULL;
    }
    for (i = 0; i < g->ndeps; i++) {
        pyr_gen_t *f = in_closure(g->deps[i], d, depth + 1);
        if (f) {
            return f;
        }
    }
    return NULL;
}

/* The generations of g's closure that pinned's closure lacks, added to
 * *out (n of them so far); the new count. */
static int
missing_from(pyr_gen_t *pinned, pyr_gen_t *g, pyr_gen_t ***out, int *cap, int n, int depth)
{
    int i;

    if (depth > 64 || in_closure(pinned, g->entry, 0)) {
        return n;
    }
    for (i = 0; i < n; i++) {
        if ((*out)[i] == g) {
            return n;
        }
    }
    *out = pyr_xgrow(*out, cap, n + 1, sizeof(**out));
    (*out)[n++] = g;
    for (i = 0; i < g->ndeps; i++) {
        n = missing_from(pinned, g->deps[i], out, cap, n, depth + 1);
    }
    return n;
}

/* A request imports a module its pinned set does not have: load it now if
 * it never was, and add it to the request's handler generation so that the
 * handler's checks watch it, and every module it imports, from now on. */
static PyObject *
request_import(pyr_entry_t *d)
{
    pyr_gen_t *pinned = pyr_gen_pinned();

    if (!d->current && pyr_build_first(d) < 0) {
        return NULL;
    }
    if (pinned && !in_closure(pinned, d, 0)) {
        pyr_gen_t **add = NULL;
        pyr_entry_t **ents;
        pyr_sig_t *sigs;
        int cap = 0, n = missing_from(pinned, d->current, &add, &cap, 0, 0), i;

        /* Without the GIL only entries (alive as long as the cache) and
         * copies of the signatures are used. */
        ents = pyr_xmalloc((size_t)n * sizeof(*ents));
        sigs = pyr_xmalloc((size_t)n * sizeof(*sigs));
        for (i = 0; i < n; i++) {
            ents[i] = add[i]->entry;
            sigs[i] = add[i]->sig;
        }
        free(add);
        pyr_gen_add_dep(pinned, d->current);
        Py_BEGIN_ALLOW_THREADS
        for (i = 0; i < n; i++) {
            pyr_entry_watch_add(pinned->entry, ents[i], &sigs[i]);
        }
        Py_END_ALLOW_THREADS
        free(ents);
        free(sigs);
    }
    return d->current->module;
}

/* Borrowed reference to the version of d that importer should see. */
static PyObject *
module_for(pyr_entry_t *importer, pyr_entry_t *d)
{
    pyr_build_t *b = pyr_build_current();
    pyr_gen_t *pinned;

    if (b) {
        return pyr_build_import(b, importer, d);
    }
    if ((pinned = pyr_gen_pinned())) {
        pyr_gen_t *g = in_closure(pinned, d, 0);
        if (g) {
            return g->module;
        }
    }
    return request_import(d);
}

/* ------------------------------------------------------------------ */
/* The import hook                                                     */

int
pyr_import_bind_globals(PyObject *globals, pyr_entry_t *e)
{
    return PyDict_SetItem(globals, key_pyreload, e->capsule);
}

static pyr_entry_t *
importer_of(PyObject *globals)
{
    PyObject *cap;

    if (!globals || !PyDict_Check(globals)) {
        return NULL;
    }
    cap = PyDict_GetItemWithError(globals, key_pyreload); /* borrowed */
    if (!cap || !PyCapsule_CheckExact(cap)) {
        return NULL;
    }
    return PyCapsule_GetPointer(cap, NULL);
}

/* The absolute import name ("a.b", as resolved under the reload roots) of
 * a relative import, as importlib computes it from the importer's
 * __package__.  A package under a reload root carries the root's prefix
 * (names.c), which is not part of the import name; a bare prefix is the
 * root, which is no package for relative imports, as in Python.  NULL with
 * no exception when it cannot be resolved here (leave it to Python), or
 * with ImportError as Python raises it. */
static PyObject *
absolute_name(pyr_entry_t *importer, PyObject *package, PyObject *name, int level)
{
    Py_ssize_t start = 0, end;
    const char *pkg;
    PyObject *base;

    if (!package || !PyUnicode_Check(package) || PyUnicode_GET_LENGTH(package) == 0 ||
        !(pkg = PyUnicode_AsUTF8(package))) {
        return NULL;
    }
    if (importer->prefix) {
        size_t pl = strlen(importer->prefix);

        if (strcmp(pkg, importer->prefix) == 0) {
            PyErr_SetString(PyExc_ImportError,
                            "attempted relative import with no known parent package");
            return NULL;
        }
        if (strncmp(pkg, importer->prefix, pl) == 0 && pkg[pl] == '.') {
            start = (Py_ssize_t)pl + 1; /* the prefix is ASCII: bytes = chars */
        }
    }
    end = PyUnicode_GET_LENGTH(package);
    while (--level > 0) {
        end = PyUnicode_FindChar(package, '.', start, end, -1);
        if (end < 0) {
            if (start > 0) {
                PyErr_SetString(PyExc_ImportError,
                                "attempted relative import beyond top-level package");
            }
            return NULL;
        }
    }
    if (!(base = PyUnicode_Substring(package, start, end))) {
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(name) == 0) {
        return base;
    }
    Py_SETREF(base, PyUnicode_FromFormat("%U.%U", base, name));
    return base;
}

/* Bind child into parent as Python does (parent.child = module), and make
 * the parent package depend on its submodule within a build. */
static int
bind_child(pyr_entry_t *pe, PyObject *parent, pyr_entry_t *ce, PyObject *child)
{
    const char *last = strrchr(ce->name, '.');

    pyr_build_t *b = pyr_build_current();

    if (b) {
        pyr_build_bind(b, pe, ce);
    }
    return PyObject_SetAttrString(parent, last ? last + 1 : ce->name, child);
}

/* Import absname for importer: the top package (want_leaf 0) or the module
 * itself.  New reference; NULL with no exception set when the name is not
 * reloadable. */
static PyObject *
import_abs(pyr_entry_t *importer, PyObject *absname, int want_leaf, PyObject *fromlist)
{
    pyr_entry_t *chain[MAX_DEPTH];
    PyObject *mods[MAX_DEPTH];
    int n, i;

    n = resolve(importer, absname, chain);
    if (n <= 0) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (!(mods[i] = module_for(importer, chain[i]))) {
            return NULL;
        }
        if (i > 0 && bind_child(chain[i - 1], mods[i - 1], chain[i], mods[i]) < 0) {
            return NULL;
        }
    }
    if (fromlist && PyObject_IsTrue(fromlist) == 1) {
        PyObject *it = PyObject_GetIter(fromlist), *x;

        if (!it) {
            return NULL;
        }
        /* from pkg import sub: a submodule file under the package is
         * imported through the cache (the package's attribute may be an
         * older version). */
        while ((x = PyIter_Next(it))) {
            if (PyUnicode_Check(x) && chain[n - 1]->is_package &&
                PyUnicode_CompareWithASCIIString(x, "*") != 0) {
                PyObject *sub = PyUnicode_FromFormat("%U.%U", absname, x);
                pyr_entry_t *sc[MAX_DEPTH];
                int sn = sub ? resolve(importer, sub, sc) : -1;

                Py_XDECREF(sub);
                if (sn < 0) {
                    Py_DECREF(x);
                    Py_DECREF(it);
                    return NULL;
                }
                if (sn == n + 1) {
                    PyObject *m = module_for(importer, sc[n]);
                    if (!m || bind_child(chain[n - 1], mods[n - 1], sc[n], m) < 0) {
                        Py_DECREF(x);
                        Py_DECREF(it);
                        return NULL;
                    }
                }
            }
            Py_DECREF(x);
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) {
            return NULL;
        }
        return Py_NewRef(mods[n - 1]);
    }
    return Py_NewRef(want_leaf ? mods[n - 1] : mods[0]);
}

/* builtins.__import__(name, globals=None, locals=None, fromlist=(), level=0) */
static PyObject *
hook_import(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "name", "globals", "locals", "fromlist", "level", NULL };
    PyObject *name, *globals = NULL, *locals = NULL, *fromlist = NULL, *absname, *r;
    pyr_entry_t *importer;
    int level = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|OOOi:__import__", kwlist, &name, &globals,
                                     &locals, &fromlist, &level)) {
        return NULL;
    }
    if (!globals || globals == Py_None) {
        globals = PyEval_GetGlobals(); /* borrowed; __import__('x') from code */
    }
    importer = importer_of(globals);
    if (!importer) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        return PyObject_Call(orig_import, args, kw);
    }
    if (level > 0) {
        absname =
            absolute_name(importer, PyDict_GetItemString(globals, "__package__"), name, level);
    }
    else {
        absname = Py_NewRef(name);
    }
    if (!absname) {
        return PyErr_Occurred() ? NULL : PyObject_Call(orig_import, args, kw);
    }
    r = import_abs(importer, absname, level > 0, fromlist);
    Py_DECREF(absname);
    if (r || PyErr_Occurred()) {
        return r;
    }
    return PyObject_Call(orig_import, args, kw);
}

/* importlib.import_module(name, package=None), seen from the caller. */
static PyObject *
hook_import_module(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "name", "package", NULL };
    PyObject *name, *package = Py_None, *absname = NULL, *r;
    pyr_entry_t *importer = importer_of(PyEval_GetGlobals());
    Py_ssize_t level = 0;

    if (!importer) {
        return PyErr_Occurred() ? NULL : PyObject_Call(orig_import_module, args, kw);
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|O:import_module", kwlist, &name, &package)) {
        return NULL;
    }
    while (level < PyUnicode_GET_LENGTH(name) && PyUnicode_READ_CHAR(name, level) == '.') {
        level++;
    }
    if (level > 0) {
        PyObject *rest;

        if (!PyUnicode_Check(package)) {
            return PyObject_Call(orig_import_module, args, kw);
        }
        rest = PyUnicode_Substring(name, level, PyUnicode_GET_LENGTH(name));
        absname = rest ? absolute_name(importer, package, rest, (int)level) : NULL;
        Py_XDECREF(rest);
    }
    else {
        absname = Py_NewRef(name);
    }
    if (!absname) {
        return PyErr_Occurred() ? NULL : PyObject_Call(orig_import_module, args, kw);
    }
    r = import_abs(importer, absname, 1, NULL);
    Py_DECREF(absname);
    if (r || PyErr_Occurred()) {
        return r;
    }
    return PyObject_Call(orig_import_module, args, kw);
}

static PyMethodDef hook_import_def = {
    "__import__", (PyCFunction)(void (*)(void))hook_import, METH_VARARGS | METH_KEYWORDS,
    "mod_pyreload: imports from reloadable modules go through the module cache."
};

static PyMethodDef hook_import_module_def = {
    "import_module", (PyCFunction)(void (*)(void))hook_import_module, METH_VARARGS | METH_KEYWORDS,
    "importlib.import_module, through mod_pyreload's module cache for reloadable modules."
};

int
pyr_loader_init(void)
{
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed dict */
    PyObject *importlib = NULL, *fn = NULL;
    int rv = -1;

    if (!(key_pyreload = PyUnicode_InternFromString("__pyreload__"))) {
        return -1;
    }
    {
        PyObject *std = PySys_GetObject("stdlib_module_names"); /* borrowed */
        PyObject *bi = PySys_GetObject("builtin_module_names"); /* borrowed */
        PyObject *all = std ? PySet_New(std) : NULL;
        Py_ssize_t i;

        for (i = 0; all && bi && i < PyTuple_Size(bi); i++) {
            if (PySet_Add(all, PyTuple_GET_ITEM(bi, i)) < 0) {
                Py_CLEAR(all);
            }
        }
        if (!all || !bi) {
            Py_XDECREF(all);
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "sys.stdlib_module_names is missing");
            }
            return -1;
        }
        stdlib_names = all;
    }
    orig_import = PyDict_GetItemString(builtins, "__import__");
    if (!orig_import) {
        PyErr_SetString(PyExc_RuntimeError, "builtins has no __import__");
        return -1;
    }
    Py_INCREF(orig_import);
    if (!(importlib = PyImport_ImportModule("importlib")) ||
        !(orig_import_module = PyObject_GetAttrString(importlib, "import_module"))) {
        goto done;
    }
    /* A module-wide replacement keeps one shared builtins dict: modules that
     * are not reloadable pay one dict lookup per import statement. */
    if (!(fn = PyCFunction_New(&hook_import_def, NULL)) ||
        PyDict_SetItemString(builtins, "__import__", fn) < 0) {
        goto done;
    }
    Py_CLEAR(fn);
    if (!(fn = PyCFunction_New(&hook_import_module_def, NULL)) ||
        PyObject_SetAttrString(importlib, "import_module", fn) < 0) {
        goto done;
    }
    rv = 0;
done:
    Py_XDECREF(fn);
    Py_XDECREF(importlib);
    return rv;
}

void
pyr_loader_fini(void)
{
    PyObject *builtins = PyEval_GetBuiltins();

    if (orig_import && builtins) {
        (void)PyDict_SetItemString(builtins, "__import__", orig_import);
    }
    Py_CLEAR(orig_import);
    Py_CLEAR(orig_import_module);
    Py_CLEAR(key_pyreload);
    Py_CLEAR(stdlib_names);
    PyErr_Clear();
}
