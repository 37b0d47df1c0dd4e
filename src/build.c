/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * build.c: building new generations of a handler and of the modules it
 * imports from its reload roots, and the import hook that makes those
 * imports go through the cache.
 *
 * A reloadable module is a file under a reload root (the handler's own
 * directory, or a PyReloadPath directory) imported by a reloadable module.
 * It is loaded like a handler file (fresh module, __clone__, __upgrade__,
 * atomic publish, __purge__), kept out of sys.modules (so no stale copy can
 * be reached there and two applications' models.py never collide), and each
 * generation records the generations it imported.  A change anywhere in a
 * handler's closure rebuilds the changed modules and everything that
 * imports them, dependencies first, and publishes the whole set or nothing.
 *
 * Every function here runs with the GIL held unless it says otherwise.
 */
#include "engine.h"
#include "mem.h"

#include <apr_strings.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static PyObject *orig_import;           /* builtins.__import__ before us */
static PyObject *orig_import_module;    /* importlib.import_module before us */
static PyObject *key_pyreload;          /* "__pyreload__" */
static PyObject *stdlib_names;          /* frozenset: never reloadable */

/* ------------------------------------------------------------------ */
/* A build: the new modules of one attempt, before anything is published. */

typedef struct {
    pyr_entry_t *e;
    int item;                   /* index of a module of this build, or -1 */
    pyr_gen_t *gen;             /* else: the published generation it uses */
} dep_t;

typedef struct {
    pyr_entry_t *e;
    PyObject *module;           /* owned */
    PyObject *code;             /* owned */
    pyr_sig_t sig;
    int exists;
    dep_t *deps;
    int ndeps, capdeps;
} item_t;

typedef struct {
    pyr_entry_t *e;
    pyr_gen_t *g;               /* its generation in the old closure */
    pyr_sig_t now;
    int exists;
    int changed;                /* its file differs from its current generation */
    int stale;                  /* the closure holds an older generation than current */
    int marked;                 /* rebuilt: changed, or imports a changed or stale one */
} old_t;

struct pyr_build {
    pyr_cache_t *cache;
    const pyr_logger_t *log;
    item_t *items;
    int nitems, capitems;
    old_t *old;
    int nold, capold;
    char *report;               /* info lines, '\n'-separated */
    const char *why;            /* the changed files, for the report */
    char *refused;              /* a file anyone may write was met: the message */
};

static __thread pyr_build_t *building;

static int
find_item(pyr_build_t *b, pyr_entry_t *e)
{
    int i;

    for (i = 0; i < b->nitems; i++) {
        if (b->items[i].e == e) {
            return i;
        }
    }
    return -1;
}

static int
find_old(pyr_build_t *b, pyr_entry_t *e)
{
    int i;

    for (i = 0; i < b->nold; i++) {
        if (b->old[i].e == e) {
            return i;
        }
    }
    return -1;
}

static void
report(pyr_build_t *b, const char *fmt, ...)
{
    char line[1024];
    size_t have = b->report ? strlen(b->report) : 0;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    b->report = pyr_xrealloc(b->report, have + strlen(line) + 2);
    memcpy(b->report + have, line, strlen(line));
    b->report[have + strlen(line)] = '\n';
    b->report[have + strlen(line) + 1] = '\0';
}

static void
record_dep(pyr_build_t *b, int from, pyr_entry_t *to)
{
    item_t *it;
    int i, ti;

    if (from < 0 || b->items[from].e == to) {
        return;
    }
    it = &b->items[from];
    for (i = 0; i < it->ndeps; i++) {
        if (it->deps[i].e == to) {
            return;
        }
    }
    it->deps = pyr_xgrow(it->deps, &it->capdeps, it->ndeps + 1, sizeof(dep_t));
    ti = find_item(b, to);
    it->deps[it->ndeps].e = to;
    it->deps[it->ndeps].item = ti;
    it->deps[it->ndeps].gen = ti < 0 ? to->current : NULL;
    it->ndeps++;
}

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
    return e && __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE)
        && pyr_sig_stat_settled(path, &sig) == 0;
}

/* "a.b.c" under one root: the entries of a, a.b and a.b.c, or 0 if the
 * name is not there.  No GIL (stats, and the cache lock). */
static int
resolve_in(pyr_cache_t *c, const char *root, const char *absname,
           pyr_entry_t **out, int max)
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
    key = PyUnicode_FromFormat("%s\n%U", importer->root, absname);
    if (!key) {
        return -1;
    }
    hit = PyDict_GetItemWithError(c->resolved, key);   /* borrowed */
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

    Py_BEGIN_ALLOW_THREADS
    n = resolve_in(c, importer->root, name, out, MAX_DEPTH);
    for (i = 0; !n && (r = pyr_cache_root(c, i)); i++) {
        if (strcmp(r, importer->root) != 0) {
            n = resolve_in(c, r, name, out, MAX_DEPTH);
        }
    }
    Py_END_ALLOW_THREADS

    if (n > 0) {
        if (!(list = PyTuple_New(n))) {
            Py_DECREF(key);
            return -1;
        }
        for (i = 0; i < n; i++) {
            if (!out[i]->capsule
                && !(out[i]->capsule = PyCapsule_New(out[i], NULL, NULL))) {
                Py_DECREF(list);
                Py_DECREF(key);
                return -1;
            }
            PyTuple_SET_ITEM(list, i, Py_NewRef(out[i]->capsule));
        }
    }
    else {
        list = Py_NewRef(Py_None);
    }
    i = PyDict_SetItem(c->resolved, key, list);
    Py_DECREF(list);
    Py_DECREF(key);
    return i < 0 ? -1 : n;
}

/* ------------------------------------------------------------------ */
/* Building one module                                                 */

/* Code anyone may write never runs (unless PyReloadSafeFiles Off); code the
 * server's own User may write runs, with a warning once per file.  The
 * refusal is recorded in the build, so that it fails even if the importer
 * catches the exception.  0, or -1 with PermissionError set. */
static int
safe_to_run(pyr_build_t *b, pyr_entry_t *e)
{
    const pyr_logger_t *log = b->log ? b->log : e->cache->log.log ? &e->cache->log : NULL;
    char msg[1024];
    int unsafe = 0, writable = 0;

    Py_BEGIN_ALLOW_THREADS
    if (!e->cache->unsafe_ok) {
        unsafe = pyr_perm_check(e->path, msg, sizeof(msg)) == 1;
    }
    if (!unsafe && !e->warned_writable) {
        writable = pyr_perm_self_writable(e->path, msg, sizeof(msg));
        if (writable && log) {
            pyr_logf(log, PYR_LOG_WARNING, "PYR0121: %s", msg);
        }
    }
    Py_END_ALLOW_THREADS
    if (writable) {
        e->warned_writable = 1;
    }
    if (!unsafe) {
        return 0;
    }
    if (!b->refused) {
        b->refused = pyr_xstrdup(msg);
    }
    PyErr_SetString(PyExc_PermissionError, msg);
    return -1;
}

/* Compile e's source (or reuse the current code when the file is the same:
 * only a dependency changed).  New reference, or NULL with an exception. */
static PyObject *
compile_source(pyr_build_t *b, pyr_entry_t *e, item_t *it)
{
    PyCompilerFlags flags = {0, PY_MINOR_VERSION};
    PyObject *fname, *code;
    char *src = NULL;
    size_t len = 0;
    int rv;

    if (safe_to_run(b, e) < 0) {
        return NULL;
    }
    if (e->current && e->current->code) {
        pyr_sig_t now;

        Py_BEGIN_ALLOW_THREADS
        rv = pyr_sig_stat(e->path, &now);
        Py_END_ALLOW_THREADS
        if (rv == 0 && pyr_sig_equal(&now, &e->current->sig)) {
            it->sig = now;
            it->exists = 1;
            return Py_NewRef(e->current->code);
        }
    }
    Py_BEGIN_ALLOW_THREADS
    rv = pyr_source_read(e->path, &src, &len, &it->sig);
    Py_END_ALLOW_THREADS
    if (rv != 0) {
        it->exists = rv != ENOENT && rv != ENOTDIR;
        if (!it->exists) {
            memset(&it->sig, 0, sizeof(it->sig));
            (void)pyr_sig_stat(e->path, &it->sig);
        }
        PyErr_Format(rv == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError,
                     "%s: %s", e->path, rv == EAGAIN
                     ? "it kept changing while it was being read" : strerror(rv));
        return NULL;
    }
    it->exists = 1;
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
     * tracebacks name the file and line. */
    code = Py_CompileStringObject(src, fname, Py_file_input, &flags, -1);
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
    if (rv < 0 || PyDict_SetItem(dict, pyr_str.builtins, PyEval_GetBuiltins()) < 0
        || PyDict_SetItem(dict, key_pyreload, e->capsule) < 0) {
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
        PyObject *path = Py_BuildValue("[s]", e->dir);

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

/* Build the next generation of e's module into b (once per build: a second
 * request for it, e.g. from an import cycle, gets the module as far as it
 * got, as Python's own imports do).  Borrowed reference, or NULL. */
static PyObject *
build_module(pyr_build_t *b, pyr_entry_t *e)
{
    PyObject *code, *mod, *r, *saved;
    PyObject *old = e->current ? e->current->module : NULL;    /* borrowed */
    item_t *it;
    int idx = find_item(b, e), i, ok;

    if (idx >= 0) {
        return b->items[idx].module;
    }
    if (!e->capsule && !(e->capsule = PyCapsule_New(e, NULL, NULL))) {
        return NULL;
    }
    b->items = pyr_xgrow(b->items, &b->capitems, b->nitems + 1, sizeof(item_t));
    idx = b->nitems++;
    it = &b->items[idx];
    memset(it, 0, sizeof(*it));
    it->e = e;
    /* Anyone who recorded e as "published" before it was rebuilt in this
     * build now gets the new one. */
    for (i = 0; i < idx; i++) {
        int j;

        for (j = 0; j < b->items[i].ndeps; j++) {
            if (b->items[i].deps[j].e == e) {
                b->items[i].deps[j].item = idx;
                b->items[i].deps[j].gen = NULL;
            }
        }
    }

    if (b->why && !e->is_handler) {
        report(b, "PYR0101: %s (%s) rebuilt: %s", e->import_name, e->path, b->why);
    }
    if (!(code = compile_source(b, e, it))) {
        return NULL;
    }
    it = &b->items[idx];
    it->code = code;
    if (!(mod = PyModule_New(e->name))) {
        return NULL;
    }
    it->module = mod;
    if (init_globals(e, PyModule_GetDict(mod), e->published + 1) < 0) {
        return NULL;
    }
    /* Old code hands its state over before the new body runs. */
    if (old && pyr_call_hook(old, pyr_str.clone, mod) < 0) {
        return NULL;
    }
    /* Code run at import time finds the new module by its name (dataclasses,
     * pickle in __upgrade__); the name goes back to the serving generation
     * until the whole set is published. */
    if (pyr_names_enter(e, mod, &saved) < 0) {
        return NULL;
    }
    r = PyEval_EvalCode(code, PyModule_GetDict(mod), PyModule_GetDict(mod));
    ok = r != NULL;
    Py_XDECREF(r);
    /* New code knows old data formats; old code cannot know future ones. */
    if (ok && old && pyr_call_hook(mod, pyr_str.upgrade, old) < 0) {
        ok = 0;
    }
    pyr_names_leave(e, &saved);
    return ok ? b->items[idx].module : NULL;
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


/* A request imports a module its pinned set does not have: load it now if
 * it never was, and add it to the request's handler generation so that the
 * handler's checks watch it from now on. */
static PyObject *
request_import(pyr_entry_t *d)
{
    pyr_gen_t *pinned = pyr_gen_pinned();

    if (!d->current && pyr_build_first(d) < 0) {
        return NULL;
    }
    if (pinned && !in_closure(pinned, d, 0)) {
        pyr_sig_t sig = d->current->sig;

        pyr_gen_add_dep(pinned, d->current);
        Py_BEGIN_ALLOW_THREADS
        pyr_entry_watch_add(pinned->entry, d, &sig);
        Py_END_ALLOW_THREADS
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

static pyr_entry_t *
importer_of(PyObject *globals)
{
    PyObject *cap;

    if (!globals || !PyDict_Check(globals)) {
        return NULL;
    }
    cap = PyDict_GetItemWithError(globals, key_pyreload);      /* borrowed */
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

    if (!package || !PyUnicode_Check(package) || PyUnicode_GET_LENGTH(package) == 0
        || !(pkg = PyUnicode_AsUTF8(package))) {
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
            start = (Py_ssize_t)pl + 1;     /* the prefix is ASCII: bytes = chars */
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
            if (PyUnicode_Check(x) && chain[n - 1]->is_package
                && PyUnicode_CompareWithASCIIString(x, "*") != 0) {
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
    static char *kwlist[] = {"name", "globals", "locals", "fromlist", "level", NULL};
    PyObject *name, *globals = NULL, *locals = NULL, *fromlist = NULL, *absname, *r;
    pyr_entry_t *importer;
    int level = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|OOOi:__import__", kwlist, &name,
                                     &globals, &locals, &fromlist, &level)) {
        return NULL;
    }
    if (!globals || globals == Py_None) {
        globals = PyEval_GetGlobals();      /* borrowed; __import__('x') from code */
    }
    importer = importer_of(globals);
    if (!importer) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        return PyObject_Call(orig_import, args, kw);
    }
    if (level > 0) {
        absname = absolute_name(importer, PyDict_GetItemString(globals, "__package__"),
                                name, level);
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
    static char *kwlist[] = {"name", "package", NULL};
    PyObject *name, *package = Py_None, *absname = NULL, *r;
    pyr_entry_t *importer = importer_of(PyEval_GetGlobals());
    Py_ssize_t level = 0;

    if (!importer) {
        return PyErr_Occurred() ? NULL : PyObject_Call(orig_import_module, args, kw);
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|O:import_module", kwlist, &name,
                                     &package)) {
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
    "import_module", (PyCFunction)(void (*)(void))hook_import_module,
    METH_VARARGS | METH_KEYWORDS,
    "importlib.import_module, through mod_pyreload's module cache for reloadable modules."
};

int
pyr_loader_init(void)
{
    PyObject *builtins = PyEval_GetBuiltins();      /* borrowed dict */
    PyObject *importlib = NULL, *fn = NULL;
    int rv = -1;

    if (!(key_pyreload = PyUnicode_InternFromString("__pyreload__"))) {
        return -1;
    }
    {
        PyObject *std = PySys_GetObject("stdlib_module_names");     /* borrowed */
        PyObject *bi = PySys_GetObject("builtin_module_names");     /* borrowed */
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
    if (!(importlib = PyImport_ImportModule("importlib"))
        || !(orig_import_module = PyObject_GetAttrString(importlib, "import_module"))) {
        goto done;
    }
    /* A module-wide replacement keeps one shared builtins dict: modules that
     * are not reloadable pay one dict lookup per import statement. */
    if (!(fn = PyCFunction_New(&hook_import_def, NULL))
        || PyDict_SetItemString(builtins, "__import__", fn) < 0) {
        goto done;
    }
    Py_CLEAR(fn);
    if (!(fn = PyCFunction_New(&hook_import_module_def, NULL))
        || PyObject_SetAttrString(importlib, "import_module", fn) < 0) {
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

/* ------------------------------------------------------------------ */
/* A whole closure                                                     */

static void
collect_old(pyr_build_t *b, pyr_gen_t *g)
{
    int i;

    if (find_old(b, g->entry) >= 0) {
        return;
    }
    b->old = pyr_xgrow(b->old, &b->capold, b->nold + 1, sizeof(old_t));
    memset(&b->old[b->nold], 0, sizeof(old_t));
    b->old[b->nold].e = g->entry;
    b->old[b->nold].g = g;
    b->nold++;
    for (i = 0; i < g->ndeps; i++) {
        collect_old(b, g->deps[i]);
    }
}

/* A module is rebuilt if its file changed since its current generation, or
 * if it imports (directly or not) a module that is rebuilt or that another
 * handler's rebuild has already replaced: one change, one new generation,
 * whichever handler sees it first. */
static int
mark(pyr_build_t *b)
{
    int i, j, again = 1, any = 0;

    for (i = 0; i < b->nold; i++) {
        old_t *o = &b->old[i];
        pyr_gen_t *cur = o->e->current;

        o->changed = !o->exists || !cur || !pyr_sig_equal(&o->now, &cur->sig);
        o->stale = cur != o->g;
        o->marked = o->changed;
        any |= o->changed || o->stale;
    }
    while (again) {
        again = 0;
        for (i = 0; i < b->nold; i++) {
            old_t *o = &b->old[i];

            for (j = 0; !o->marked && j < o->g->ndeps; j++) {
                int k = find_old(b, o->g->deps[j]->entry);
                if (k >= 0 && (b->old[k].marked || b->old[k].stale)) {
                    o->marked = again = 1;
                }
            }
        }
    }
    return any;
}

/* Marked modules of the old closure, dependencies before their importers. */
static int
build_marked(pyr_build_t *b, pyr_gen_t *g, int depth)
{
    int i, k = find_old(b, g->entry);

    if (k < 0 || !b->old[k].marked || find_item(b, g->entry) >= 0 || depth > 64) {
        return 0;
    }
    b->old[k].marked = 2;   /* visiting: a cycle stops here */
    for (i = 0; i < g->ndeps; i++) {
        int d = find_old(b, g->deps[i]->entry);
        if (d >= 0 && b->old[d].marked == 1 && build_marked(b, g->deps[i], depth + 1) < 0) {
            return -1;
        }
    }
    if (find_item(b, g->entry) < 0 && !g->entry->is_handler
        && !build_module(b, g->entry)) {
        return -1;
    }
    return 0;
}

static void
item_clear(item_t *it)
{
    Py_CLEAR(it->module);
    Py_CLEAR(it->code);
    free(it->deps);
    it->deps = NULL;
}

static void
build_free(pyr_build_t *b)
{
    int i;

    for (i = 0; i < b->nitems; i++) {
        item_clear(&b->items[i]);
    }
    free(b->items);
    free(b->old);
    free(b->report);
    free(b->refused);
}

/* Handler files: a callable that a configuration uses must not disappear.
 * One the current generation has and the new one lacks fails the load (the
 * last good code keeps serving, as for any broken edit); one never found
 * belongs to the configuration that names it, not to the file: out[i] is
 * NULL and only that configuration's requests fail. */
static int
check_callables(pyr_entry_t *e, PyObject *module, PyObject **out, int *nout)
{
    int i, n = __atomic_load_n(&e->nnames, __ATOMIC_ACQUIRE);
    PyObject *dict = PyModule_GetDict(module);
    PyObject *had = e->current ? PyModule_GetDict(e->current->module) : NULL;

    for (i = 0; i < n; i++) {
        PyObject *fn = PyDict_GetItemString(dict, e->names[i]);    /* borrowed */
        PyObject *old = had ? PyDict_GetItemString(had, e->names[i]) : NULL;

        out[i] = fn && PyCallable_Check(fn) ? fn : NULL;
        if (out[i] || !old || !PyCallable_Check(old)) {
            continue;
        }
        if (!fn) {
            PyErr_Format(PyExc_AttributeError, "%s defines no '%s' (named by "
                         "PyReloadHandler, and defined by the code serving now)",
                         e->path, e->names[i]);
        }
        else {
            PyErr_Format(PyExc_TypeError, "'%s' in %s is a %.100s, not a callable "
                         "(named by PyReloadHandler)", e->names[i], e->path,
                         Py_TYPE(fn)->tp_name);
        }
        return -1;
    }
    *nout = n;
    return 0;
}

/* sys.modules: every name of the build to its new module (or none). */
static int
publish_names(pyr_build_t *b)
{
    pyr_entry_t **es = PyMem_Calloc((size_t)b->nitems + 1, sizeof(*es));
    PyObject **ms = PyMem_Calloc((size_t)b->nitems + 1, sizeof(*ms));
    int i, rv = -1;

    if (!es || !ms) {
        PyErr_NoMemory();
    }
    else {
        for (i = 0; i < b->nitems; i++) {
            es[i] = b->items[i].e;
            ms[i] = b->items[i].module;
        }
        rv = pyr_names_publish(es, ms, b->nitems);
    }
    PyMem_Free(es);
    PyMem_Free(ms);
    return rv;
}

/* Every module of the build becomes current at once. */
static int
publish(pyr_build_t *b)
{
    pyr_gen_t **gens;
    PyObject *calls[PYR_MAX_CALLABLES];
    int i, j, ncalls = 0;

    for (i = 0; i < b->nitems; i++) {
        if (b->items[i].e->is_handler
            && check_callables(b->items[i].e, b->items[i].module, calls, &ncalls) < 0) {
            return -1;
        }
    }
    if (!(gens = PyMem_Calloc((size_t)b->nitems + 1, sizeof(*gens)))) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < b->nitems; i++) {
        if (!(gens[i] = pyr_gen_new(b->items[i].e, &b->items[i].sig))) {
            break;
        }
    }
    if (i < b->nitems || publish_names(b) < 0) {
        for (i = 0; i < b->nitems && gens[i]; i++) {
            pyr_gen_free(gens[i]);
        }
        PyMem_Free(gens);
        return -1;
    }
    for (i = 0; i < b->nitems; i++) {
        item_t *it = &b->items[i];
        pyr_gen_t *g = gens[i];

        g->module = it->module;
        g->code = it->code;
        it->module = it->code = NULL;
        if (it->e->is_handler) {
            check_callables(it->e, g->module, g->callables, &g->ncallables);
            for (j = 0; j < g->ncallables; j++) {
                Py_XINCREF(g->callables[j]);
            }
        }
        for (j = 0; j < it->ndeps; j++) {
            pyr_gen_t *d = it->deps[j].item >= 0 ? gens[it->deps[j].item] : it->deps[j].gen;
            if (d) {
                pyr_gen_add_dep(g, d);
            }
        }
    }
    for (i = 0; i < b->nitems; i++) {
        pyr_entry_t *e = b->items[i].e;
        pyr_gen_t *old = e->current;

        e->current = gens[i];
        e->published = gens[i]->number;
        __atomic_store_n(&e->has_gen, 1, __ATOMIC_RELEASE);
        gens[i] = old;      /* retired below, once every entry points to its new one */
    }
    for (i = 0; i < b->nitems; i++) {
        if (gens[i]) {
            pyr_gen_retire(gens[i]);
        }
    }
    pyr_gen_collect(b->cache, b->log);
    PyMem_Free(gens);
    return 0;
}

/* The closure of a generation, as watched by its handler's requests. */
static pyr_watch_t *
watch_of(pyr_gen_t *g)
{
    pyr_build_t tmp;
    pyr_watch_t *w;
    int i;

    memset(&tmp, 0, sizeof(tmp));
    collect_old(&tmp, g);
    w = pyr_watch_new(tmp.nold);
    for (i = 0; i < tmp.nold; i++) {
        w->item[i].e = tmp.old[i].e;
        w->item[i].sig = tmp.old[i].g->sig;
        w->item[i].exists = 1;
    }
    free(tmp.old);
    return w;
}

/* After a failure: the files as this attempt saw them, so that the same
 * broken state is not retried (and logged) on every request. */
static pyr_watch_t *
watch_seen(pyr_build_t *b, pyr_entry_t *root)
{
    pyr_watch_t *w = pyr_watch_new(b->nold + b->nitems + 1);
    int i, n = 0;

    for (i = 0; i < b->nold; i++) {
        w->item[n].e = b->old[i].e;
        w->item[n].sig = b->old[i].now;
        w->item[n++].exists = b->old[i].exists;
    }
    for (i = 0; i < b->nitems; i++) {
        if (find_old(b, b->items[i].e) < 0) {
            w->item[n].e = b->items[i].e;
            w->item[n].sig = b->items[i].sig;
            w->item[n++].exists = b->items[i].exists;
        }
    }
    if (n == 0) {
        w->item[n].e = root;
        w->item[n].exists = pyr_sig_stat(root->path, &w->item[n].sig) == 0;
        n++;
    }
    w->n = n;
    return w;
}

int
pyr_load_closure(pyr_entry_t *e, const pyr_logger_t *log, char **error,
                 pyr_watch_t **watch, char **report_out)
{
    pyr_build_t b;
    char why[2048];
    int i, failed = 0;

    memset(&b, 0, sizeof(b));
    b.cache = e->cache;
    b.log = log;
    *error = NULL;
    *report_out = NULL;
    why[0] = '\0';
    if (e->cache->resolved) {
        PyDict_Clear(e->cache->resolved);   /* new files may have appeared */
    }
    if (!e->capsule && !(e->capsule = PyCapsule_New(e, NULL, NULL))) {
        *error = pyr_exc_format();
        *watch = watch_seen(&b, e);
        return -1;
    }

    if (e->current) {
        collect_old(&b, e->current);
        Py_BEGIN_ALLOW_THREADS
        for (i = 0; i < b.nold; i++) {
            b.old[i].exists = pyr_sig_stat(b.old[i].e->path, &b.old[i].now) == 0;
        }
        Py_END_ALLOW_THREADS
        if (!mark(&b)) {
            /* Touched and put back, or only a stat race: nothing to build. */
            *watch = watch_of(e->current);
            build_free(&b);
            return 0;
        }
        for (i = 0; i < b.nold; i++) {
            if ((b.old[i].changed || b.old[i].stale)
                && strlen(why) + strlen(b.old[i].e->path) + 3 < sizeof(why)) {
                strcat(why, why[0] ? ", " : "");
                strcat(why, b.old[i].e->path);
            }
        }
        strncat(why, " changed", sizeof(why) - strlen(why) - 1);
        b.why = why;
    }

    building = &b;
    if (e->current && build_marked(&b, e->current, 0) < 0) {
        failed = 1;
    }
    if (!failed && !build_module(&b, e)) {
        failed = 1;
    }
    building = NULL;
    /* A refused file fails the build even if its importer caught the error. */
    if (!failed && !b.refused && publish(&b) < 0) {
        failed = 1;
    }
    if (b.refused) {
        /* Not a bug in the code: the message says it all, no traceback. */
        PyErr_Clear();
        *error = pyr_xmalloc(strlen(b.refused) + 2);
        sprintf(*error, "%s\n", b.refused);
        *watch = watch_seen(&b, e);
        failed = 1;
    }
    else if (failed) {
        *error = pyr_exc_format();
        *watch = watch_seen(&b, e);
    }
    else {
        *watch = watch_of(e->current);
        *report_out = b.report;     /* the caller's now */
        b.report = NULL;
    }
    build_free(&b);
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* The build in progress on this thread, for the import hook           */

pyr_build_t *
pyr_build_current(void)
{
    return building;
}

PyObject *
pyr_build_import(pyr_build_t *b, pyr_entry_t *importer, pyr_entry_t *d)
{
    int from = find_item(b, importer), i = find_item(b, d), o;
    PyObject *m;

    if (i >= 0) {
        record_dep(b, from, d);
        return b->items[i].module;
    }
    o = find_old(b, d);
    if (!d->current || (o >= 0 && b->old[o].marked)) {
        if (!(m = build_module(b, d))) {
            return NULL;
        }
    }
    else {
        m = d->current->module;
    }
    record_dep(b, from, d);
    return m;
}

void
pyr_build_bind(pyr_build_t *b, pyr_entry_t *parent, pyr_entry_t *child)
{
    record_dep(b, find_item(b, parent), child);
}

int
pyr_build_first(pyr_entry_t *d)
{
    pyr_cache_t *c = d->cache;
    pyr_build_t b;
    int rv = 0;

    /* The build lock is never waited for with the GIL held. */
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->build);
    Py_END_ALLOW_THREADS
    /* Another thread may have loaded it meanwhile. */
    if (!d->current) {
        PyObject *m;

        memset(&b, 0, sizeof(b));
        b.cache = c;
        b.log = c->log.log ? &c->log : NULL;
        building = &b;
        m = build_module(&b, d);
        building = NULL;
        rv = m && publish(&b) == 0 ? 0 : -1;
        build_free(&b);
    }
    pthread_mutex_unlock(&c->build);
    return rv;
}
