/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * build.c: building new generations of a handler and of the modules it
 * imports from its reload roots (the import hook, import.c, hands those
 * imports to the build running on its thread), and publishing them.
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
 * Locking: every function here runs with the GIL held unless it says
 * otherwise, and (but pyr_build_first(), which takes it) with the cache's
 * build mutex held, so one build at a time runs in a process.
 */
#include "pyr_engine.h"
#include "pyr_mem.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* A build: the new modules of one attempt, before anything is published. */

typedef struct {
    pyr_entry_t *e;
    int item;       /* index of a module of this build, or -1 */
    pyr_gen_t *gen; /* else: the published generation it uses */
} dep_t;

typedef struct {
    pyr_entry_t *e;
    PyObject *module; /* owned */
    PyObject *code;   /* owned */
    pyr_sig_t sig;
    int exists;
    double ms; /* its build, the modules it built on the way included */
    dep_t *deps;
    int ndeps, capdeps;
} item_t;

typedef struct {
    pyr_entry_t *e;
    pyr_gen_t *g; /* its generation in the old closure */
    pyr_sig_t now;
    int exists;
    int changed; /* its file differs from its current generation */
    int stale;   /* the closure holds an older generation than current */
    int marked;  /* rebuilt: changed, or imports a changed or stale one */
} old_t;

struct pyr_build {
    pyr_cache_t *cache;
    const pyr_logger_t *log;
    item_t *items;
    int nitems, capitems;
    old_t *old;
    int nold, capold;
    char *report;    /* info lines, '\n'-separated */
    const char *why; /* the changed files, for the report */
    char *refused;   /* a file anyone may write was met: the message */
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
/* Building one module                                                 */

/* Build the next generation of e's module into b (once per build: a second
 * request for it, e.g. from an import cycle, gets the module as far as it
 * got, as Python's own imports do).  Borrowed reference, or NULL. */
static PyObject *
build_module(pyr_build_t *b, pyr_entry_t *e)
{
    PyObject *code, *mod;
    item_t *it;
    int idx = find_item(b, e), i;
    apr_time_t t0 = apr_time_now();

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
    if (!(code = pyr_module_code(e, b->log, &it->sig, &it->exists, &b->refused))) {
        return NULL;
    }
    it = &b->items[idx];
    it->code = code;
    if (!(mod = pyr_module_new(e, e->published + 1))) {
        return NULL;
    }
    it->module = mod;
    /* The body's imports may build more modules of b: items move. */
    if (pyr_module_exec(e, mod, code) < 0) {
        return NULL;
    }
    b->items[idx].ms = (double)(apr_time_now() - t0) / 1000.0;
    return b->items[idx].module;
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

/* Python imports a package before any of its submodules, and a package's
 * __init__ often imports its own submodules (a Flask blueprint package):
 * when e's package is rebuilt too, the package is built first, and its
 * body builds e as the first load did.  Built the other way round, e's
 * `from . import x` would build the package in the middle of e's body and
 * its `from .e import y` would find e half-built. */
static int
build_package_first(pyr_build_t *b, pyr_entry_t *e, int depth)
{
    const char *dot = e->prefix ? strrchr(e->name, '.') : NULL;
    size_t len = dot ? (size_t)(dot - e->name) : 0;
    int i;

    if (len <= strlen(e->prefix ? e->prefix : "") || depth > 64) {
        return 0; /* top level under its root: no package */
    }
    for (i = 0; i < b->nold; i++) {
        pyr_entry_t *p = b->old[i].e;

        if (b->old[i].marked && p->is_package && strlen(p->name) == len &&
            strncmp(p->name, e->name, len) == 0) {
            if (find_item(b, p) >= 0) {
                return 0;
            }
            if (build_package_first(b, p, depth + 1) < 0) {
                return -1;
            }
            return find_item(b, p) >= 0 || build_module(b, p) ? 0 : -1;
        }
    }
    return 0;
}

/* Marked modules of the old closure, dependencies before their importers. */
static int
build_marked(pyr_build_t *b, pyr_gen_t *g, int depth)
{
    int i, k = find_old(b, g->entry);

    if (k < 0 || !b->old[k].marked || find_item(b, g->entry) >= 0 || depth > 64) {
        return 0;
    }
    b->old[k].marked = 2; /* visiting: a cycle stops here */
    for (i = 0; i < g->ndeps; i++) {
        int d = find_old(b, g->deps[i]->entry);
        if (d >= 0 && b->old[d].marked == 1 && build_marked(b, g->deps[i], depth + 1) < 0) {
            return -1;
        }
    }
    if (find_item(b, g->entry) < 0 && !g->entry->is_handler &&
        build_package_first(b, g->entry, 0) < 0) {
        return -1;
    }
    if (find_item(b, g->entry) < 0 && !g->entry->is_handler && !build_module(b, g->entry)) {
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

/* A failed build: sys.modules as it was before it. */
static void
rollback_names(pyr_build_t *b)
{
    int i;

    for (i = 0; i < b->nitems; i++) {
        pyr_names_rollback(b->items[i].e, b->items[i].module);
    }
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
    int i, j;

    for (i = 0; i < b->nitems; i++) {
        if (b->items[i].e->is_handler &&
            pyr_gen_check_callables(b->items[i].e, b->items[i].module) < 0) {
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
            pyr_gen_take_callables(g);
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
        e->loads++;
        e->last_load_ms = b->items[i].ms;
        e->loaded_at = apr_time_now();
        __atomic_store_n(&e->has_gen, 1, __ATOMIC_RELEASE);
        gens[i] = old; /* retired below, once every entry points to its new one */
    }
    for (i = 0; i < b->nitems; i++) {
        if (gens[i]) {
            pyr_gen_retire(gens[i]);
        }
    }
    pyr_gen_collect(b->cache, b->log);
    PyMem_Free(gens);
    pyr_status_changed();
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
pyr_load_closure(pyr_entry_t *e, const pyr_logger_t *log, char **error, pyr_watch_t **watch,
                 char **report_out)
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
        PyDict_Clear(e->cache->resolved); /* new files may have appeared */
    }
    if (!e->capsule && !(e->capsule = PyCapsule_New(e, NULL, NULL))) {
        *error = pyr_exc_format();
        *watch = watch_seen(&b, e);
        return -1;
    }

    if (e->current) {
        collect_old(&b, e->current);
        Py_BEGIN_ALLOW_THREADS for (i = 0; i < b.nold; i++)
        {
            b.old[i].exists = pyr_sig_stat(b.old[i].e->path, &b.old[i].now) == 0;
        }
        Py_END_ALLOW_THREADS if (!mark(&b))
        {
            /* Touched and put back, or only a stat race: nothing to build. */
            *watch = watch_of(e->current);
            build_free(&b);
            return 0;
        }
        for (i = 0; i < b.nold; i++) {
            if ((b.old[i].changed || b.old[i].stale) &&
                strlen(why) + strlen(b.old[i].e->path) + 3 < sizeof(why)) {
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
    if (failed || b.refused) {
        rollback_names(&b);
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
        *report_out = b.report; /* the caller's now */
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
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&c->build);
    Py_END_ALLOW_THREADS
        /* Another thread may have loaded it meanwhile. */
        if (!d->current)
    {
        PyObject *m;

        memset(&b, 0, sizeof(b));
        b.cache = c;
        b.log = c->log.log ? &c->log : NULL;
        building = &b;
        m = build_module(&b, d);
        building = NULL;
        rv = m && publish(&b) == 0 ? 0 : -1;
        if (rv < 0) {
            rollback_names(&b);
        }
        build_free(&b);
    }
    pthread_mutex_unlock(&c->build);
    return rv;
}
