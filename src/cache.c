/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * cache.c: the per-process module cache: its entries and reload roots, the
 * check a request makes before it runs (refresh), and the watch lists those
 * checks sweep.  A generation's life is gen.c; building one is build.c.
 *
 * Locking (the order for the whole engine is in pyr_engine.h): this is the one
 * file that takes the cache's lock (entries and roots, held for a lookup
 * only) and an entry's mutex (what a request needs before it may run
 * Python: the files its handler watches, who is loading, the last
 * failure).  Its functions run WITHOUT the GIL, except pyr_cache_destroy(),
 * and load(), which takes the build mutex and then the GIL.
 */
#include "pyr_engine.h"
#include "pyr_mem.h"

#include <apr_hash.h>
#include <apr_strings.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* The cache and its entries                                           */

pyr_cache_t *
pyr_cache_create(apr_pool_t *pool)
{
    pyr_cache_t *c = apr_pcalloc(pool, sizeof(*c));

    c->pool = pool;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->build, NULL);
    c->entries = apr_hash_make(pool);
    c->roots = apr_array_make(pool, 4, sizeof(const char *));
    c->notify = pyr_notify_create(pool);
    return c;
}

void
pyr_cache_add_root(pyr_cache_t *c, const char *dir)
{
    int i;

    pthread_mutex_lock(&c->lock);
    for (i = 0; i < c->roots->nelts; i++) {
        if (strcmp(APR_ARRAY_IDX(c->roots, i, const char *), dir) == 0) {
            break;
        }
    }
    if (i == c->roots->nelts) {
        APR_ARRAY_PUSH(c->roots, const char *) = apr_pstrdup(c->pool, dir);
    }
    pthread_mutex_unlock(&c->lock);
}

void
pyr_cache_set_safe_files(pyr_cache_t *c, int on)
{
    c->unsafe_ok = !on;
}

void
pyr_cache_set_logger(pyr_cache_t *c, const pyr_logger_t *log)
{
    c->log = *log;
}

/* FNV-1a: a handler's __name__, or a reload root's package, unique per path
 * (names.c). */
static char *
unique_name(apr_pool_t *p, const char *path)
{
    uint64_t h = 14695981039346656037ULL;
    const unsigned char *s;

    for (s = (const unsigned char *)path; *s; s++) {
        h = (h ^ *s) * 1099511628211ULL;
    }
    return apr_psprintf(p, "_pyreload_%016" APR_UINT64_T_HEX_FMT, (apr_uint64_t)h);
}

pyr_entry_t *
pyr_entry_new(pyr_cache_t *c, const char *path, const char *name, const char *root, int is_handler,
              int is_package)
{
    pyr_entry_t *e;

    pthread_mutex_lock(&c->lock);
    e = apr_hash_get(c->entries, path, APR_HASH_KEY_STRING);
    if (!e) {
        const char *slash;

        e = apr_pcalloc(c->pool, sizeof(*e));
        e->cache = c;
        e->path = apr_pstrdup(c->pool, path);
        slash = strrchr(e->path, '/');
        e->dir = slash ? apr_pstrmemdup(c->pool, e->path, (apr_size_t)(slash - e->path))
                       : apr_pstrdup(c->pool, ".");
        e->root = root ? apr_pstrdup(c->pool, root) : e->dir;
        if (is_handler) {
            e->name = e->import_name = unique_name(c->pool, path);
        }
        else {
            e->import_name = apr_pstrdup(c->pool, name);
            e->prefix = unique_name(c->pool, e->root);
            e->name = apr_pstrcat(c->pool, e->prefix, ".", name, NULL);
        }
        e->is_handler = is_handler;
        e->is_package = is_package;
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->done, NULL);
        apr_hash_set(c->entries, e->path, APR_HASH_KEY_STRING, e);
    }
    else if (is_handler && !e->is_handler) {
        /* Imported before it was configured as a handler: it now has to
         * declare callables, and is checked as a handler. */
        e->is_handler = 1;
    }
    pthread_mutex_unlock(&c->lock);
    return e;
}

pyr_entry_t *
pyr_cache_find(pyr_cache_t *c, const char *path)
{
    pyr_entry_t *e;

    pthread_mutex_lock(&c->lock);
    e = apr_hash_get(c->entries, path, APR_HASH_KEY_STRING);
    pthread_mutex_unlock(&c->lock);
    return e;
}

const char *
pyr_cache_root(pyr_cache_t *c, int i)
{
    const char *r = NULL;

    pthread_mutex_lock(&c->lock);
    if (i >= 0 && i < c->roots->nelts) {
        r = APR_ARRAY_IDX(c->roots, i, const char *);
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

pyr_entry_t *
pyr_cache_entry(pyr_cache_t *c, const char *path)
{
    return pyr_entry_new(c, path, NULL, NULL, 1, 0);
}

long
pyr_entry_sweeps(const pyr_entry_t *e)
{
    return __atomic_load_n(&e->sweeps, __ATOMIC_RELAXED);
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
    if (slot < 0 && e->nnames < PYR_MAX_CALLABLES) {
        e->names[e->nnames] = pyr_xstrdup(callable);
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
/* Watch lists                                                         */

pyr_watch_t *
pyr_watch_new(int n)
{
    pyr_watch_t *w = pyr_xmalloc(sizeof(*w) + (size_t)n * sizeof(w->item[0]));

    w->refs = 1;
    w->n = n;
    return w;
}

static void
watch_release(pyr_watch_t *w)
{
    if (w && __atomic_sub_fetch(&w->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free(w);
    }
}

void
pyr_entry_watch_add(pyr_entry_t *e, pyr_entry_t *d, const pyr_sig_t *sig)
{
    /* The next check of the handler must look at d as well. */
    __atomic_store_n(&e->next_check, 0, __ATOMIC_RELAXED);
    pthread_mutex_lock(&e->lock);
    if (e->watch) {
        pyr_watch_t *w = e->watch, *nw = pyr_watch_new(w->n + 1);

        memcpy(nw->item, w->item, (size_t)w->n * sizeof(nw->item[0]));
        nw->item[w->n].e = d;
        nw->item[w->n].sig = *sig;
        nw->item[w->n].exists = 1;
        e->watch = nw;
        /* The next check watches the new list, then sweeps it. */
        __atomic_store_n(&e->clean_epoch, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&e->watch_gen, 0, __ATOMIC_RELEASE);
        watch_release(w);
    }
    pthread_mutex_unlock(&e->lock);
}

static pyr_status_t
stat_failure(pyr_entry_t *e, int rv, const pyr_logger_t *log)
{
    pyr_status_t st = (rv == ENOENT || rv == ENOTDIR) ? PYR_MISSING
                      : rv == EACCES                  ? PYR_DENIED
                                                      : PYR_SYSERR;
    int first;

    pthread_mutex_lock(&e->lock);
    first = !e->missing;
    e->missing = 1;
    pthread_mutex_unlock(&e->lock);
    if (first) {
        pyr_logf(log, PYR_LOG_ERR, "PYR0103: %s: %s; answering %s until it is back%s", e->path,
                 strerror(rv),
                 st == PYR_MISSING  ? "404"
                 : st == PYR_DENIED ? "403"
                                    : "500",
                 __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE) ? " (its last generation is kept)"
                                                                : "");
    }
    return st;
}

/* 1 if a file of the watch list differs from what it was; -errno if the
 * handler file itself cannot be stat'ed.  patient: a file that was there and
 * is now absent or unreadable gets a moment to come back (a tool deleting
 * and re-creating it) before that counts.  No GIL, no lock. */
static int
watch_changed(pyr_entry_t *e, const pyr_watch_t *w, int patient)
{
    int i;

    for (i = 0; i < w->n; i++) {
        pyr_sig_t now;
        int rv = pyr_sig_stat(w->item[i].e->path, &now);

        if (rv != 0 && patient && w->item[i].exists) {
            rv = pyr_sig_stat_settled(w->item[i].e->path, &now);
        }
        if (rv != 0 && w->item[i].e == e) {
            return -rv;
        }
        if ((rv == 0) != w->item[i].exists || (rv == 0 && !pyr_sig_equal(&now, &w->item[i].sig))) {
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Checking                                                            */

/* Watch every file of w where its path leads now.  1 if all are watched.
 * No GIL, no lock. */
static int
watch_files(pyr_notify_t *n, const pyr_watch_t *w)
{
    int i, ok = 1;

    for (i = 0; i < w->n; i++) {
        ok &= pyr_notify_watch(n, w->item[i].e->path);
    }
    return ok;
}

/* The watches of w's files may have gone stale since they were set (a
 * symlink re-pointed, a directory replaced): set them where the paths lead
 * now, before a sweep makes "no event" mean "no change" again.  No GIL. */
static void
rewatch(pyr_entry_t *e, pyr_watch_t *w)
{
    uint64_t gen = pyr_notify_gen(e->cache->notify);
    int ok;

    if (!gen || gen == __atomic_load_n(&e->watch_gen, __ATOMIC_ACQUIRE)) {
        return;
    }
    ok = watch_files(e->cache->notify, w);
    pthread_mutex_lock(&e->lock);
    if (e->watch == w) {
        __atomic_store_n(&e->notified, ok, __ATOMIC_RELEASE);
        __atomic_store_n(&e->watch_gen, gen, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&e->lock);
}

static void
log_outcome(pyr_entry_t *e, const pyr_logger_t *log, int failed, char *error, char *report,
            long number, apr_time_t t0)
{
    if (report) {
        pyr_log_lines(log, PYR_LOG_INFO, "", report);
    }
    if (!failed) {
        pyr_logf(log, PYR_LOG_INFO, "PYR0100: %s: generation %ld loaded in %.3f ms", e->path,
                 number, (double)(apr_time_now() - t0) / 1000.0);
        return;
    }
    if (number) {
        pyr_logf(log, PYR_LOG_ERR,
                 "PYR0102: %s: load failed; generation %ld "
                 "keeps serving until a file changes again:",
                 e->path, number);
    }
    else {
        pyr_logf(log, PYR_LOG_ERR,
                 "PYR0102: %s: load failed; nothing to serve "
                 "until a file changes again:",
                 e->path);
    }
    pyr_log_lines(log, PYR_LOG_ERR, "PYR0102: ", error ? error : "(unknown error)\n");
}

/* The one thread that holds e->loading: rebuild, publish, record. */
static void
load(pyr_entry_t *e, const pyr_logger_t *log)
{
    apr_time_t t0 = apr_time_now();
    pyr_watch_t *w = NULL, *old;
    char *error = NULL, *report = NULL, *copy;
    long before, number;
    uint64_t gen;
    int failed, notified;

    pthread_mutex_lock(&e->cache->build);
    pyr_gil_take();
    before = e->published;
    failed = pyr_load_closure(e, log, &error, &w, &report) != 0;
    number = e->current ? e->current->number : 0;
    pyr_gil_drop();
    pthread_mutex_unlock(&e->cache->build);

    /* Watched before the next sweep sets the baseline: nothing is missed.
     * The generation is read first: if it moves meanwhile, they are watched
     * again. */
    gen = pyr_notify_gen(e->cache->notify);
    notified = watch_files(e->cache->notify, w);
    pthread_mutex_lock(&e->lock);
    old = e->watch;
    e->watch = w;
    __atomic_store_n(&e->clean_epoch, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&e->notified, notified, __ATOMIC_RELEASE);
    __atomic_store_n(&e->watch_gen, gen, __ATOMIC_RELEASE);
    if (!failed) {
        free(e->error);
        e->error = NULL;
    }
    else {
        free(e->error);
        e->error = error;
        e->failures++;
        e->error_at = apr_time_now();
        pyr_status_changed();
    }
    copy = error ? pyr_xstrdup(error) : NULL;
    pthread_mutex_unlock(&e->lock);
    watch_release(old);

    if (failed || number != before) {
        log_outcome(e, log, failed, copy, report, number, t0);
    }
    free(copy);
    free(report);
}

pyr_status_t
pyr_entry_refresh(pyr_entry_t *e, const pyr_check_t *check, const pyr_logger_t *log)
{
    pyr_watch_t *w;
    int changed, was_missing, patient;
    int has_gen = __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE);

    if (has_gen && !check->enabled) {
        return PYR_READY;
    }
    if (check->interval > 0) {
        apr_time_t now = apr_time_now();

        if (has_gen && now < __atomic_load_n(&e->next_check, __ATOMIC_RELAXED)) {
            return PYR_READY;
        }
        /* This is a look, the first load included: the interval runs from it. */
        __atomic_store_n(&e->next_check, now + check->interval, __ATOMIC_RELAXED);
    }

    for (;;) {
        uint64_t epoch = pyr_notify_epoch(e->cache->notify);

        /* Nothing happened on the way to any of its files since the last
         * sweep found them as they were: no lock, no stat. */
        if (epoch && __atomic_load_n(&e->notified, __ATOMIC_ACQUIRE) &&
            epoch == __atomic_load_n(&e->clean_epoch, __ATOMIC_ACQUIRE)) {
            return __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE) ? PYR_READY : PYR_FAILED;
        }

        pthread_mutex_lock(&e->lock);
        w = e->watch;
        if (w) {
            __atomic_add_fetch(&w->refs, 1, __ATOMIC_ACQ_REL);
        }
        /* Once a file has a good generation, a brief absence is waited out;
         * an absence already reported is not waited for again. */
        patient = !e->missing && __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE);
        pthread_mutex_unlock(&e->lock);

        if (w) {
            rewatch(e, w);
            __atomic_add_fetch(&e->sweeps, 1, __ATOMIC_RELAXED);
            changed = watch_changed(e, w, patient);
            if (changed == 0 && epoch) {
                /* Only for the list that was swept: a newer one may name
                 * files this sweep did not look at. */
                pthread_mutex_lock(&e->lock);
                if (e->watch == w) {
                    __atomic_store_n(&e->clean_epoch, epoch, __ATOMIC_RELEASE);
                }
                pthread_mutex_unlock(&e->lock);
            }
        }
        else {
            pyr_sig_t sig;
            int rv = pyr_sig_stat(e->path, &sig);

            changed = rv ? -rv : 1;
        }
        if (changed < 0) {
            watch_release(w);
            return stat_failure(e, -changed, log);
        }

        pthread_mutex_lock(&e->lock);
        was_missing = e->missing;
        e->missing = 0;
        if (!changed) {
            pthread_mutex_unlock(&e->lock);
            watch_release(w);
            break;
        }
        /* Someone is loading: wait for that load (without the GIL), then
         * look again, so a request that starts after a save runs it. */
        while (e->loading) {
            pthread_cond_wait(&e->done, &e->lock);
        }
        if (e->watch != w) {
            pthread_mutex_unlock(&e->lock);
            watch_release(w);
            continue;
        }
        e->loading = 1;
        pthread_mutex_unlock(&e->lock);
        watch_release(w);

        load(e, log);

        pthread_mutex_lock(&e->lock);
        e->loading = 0;
        pthread_cond_broadcast(&e->done);
        pthread_mutex_unlock(&e->lock);
        break;
    }
    if (was_missing) {
        pyr_logf(log, PYR_LOG_NOTICE, "PYR0105: %s: the file is back", e->path);
    }
    return __atomic_load_n(&e->has_gen, __ATOMIC_ACQUIRE) ? PYR_READY : PYR_FAILED;
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
    /* The process is ending: release the current modules without the
     * retire protocol (no request runs any more). */
    for (hi = apr_hash_first(NULL, c->entries); hi; hi = apr_hash_next(hi)) {
        pyr_entry_t *e = apr_hash_this_val(hi);

        if (e->current) {
            pyr_gen_clear(e->current);
        }
    }
    for (hi = apr_hash_first(NULL, c->entries); hi; hi = apr_hash_next(hi)) {
        pyr_entry_t *e = apr_hash_this_val(hi);

        if (e->current) {
            pyr_gen_free(e->current);
            e->current = NULL;
        }
        Py_CLEAR(e->capsule);
        free(e->error);
        e->error = NULL;
        while (e->nnames > 0) {
            free(e->names[--e->nnames]);
        }
        watch_release(e->watch);
        e->watch = NULL;
    }
    Py_CLEAR(c->resolved);
    pyr_names_fini(c);
    pyr_gil_drop();
    pyr_notify_destroy(c->notify);
}
