/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * status.c: what this process has loaded, as plain C records for a status
 * page (src/status_page.c renders them, src/status_shm.c shares them with
 * the other processes): per entry its kind, generation, loads, failures,
 * the last load's time, the hash of the source serving now, its imports,
 * the requests on its generations and the retired ones still alive, and
 * the latest load failure.
 *
 * The counters are kept where the events happen (build.c publishes,
 * cache.c records a failure, gen.c retires and purges); nothing here runs
 * on a request that does not ask for a snapshot, except the change counter
 * those events bump.
 *
 * Locking: a snapshot takes the cache's lock for the list of entries, each
 * entry's mutex for its failure (no GIL), then the GIL for the
 * generations, in the engine's order (pyr_engine.h).
 */
#include "pyr_engine.h"

#include <apr_hash.h>
#include <apr_strings.h>

#include <stdlib.h>
#include <string.h>

static unsigned long changes;

void
pyr_status_changed(void)
{
    __atomic_add_fetch(&changes, 1, __ATOMIC_RELEASE);
}

unsigned long
pyr_status_changes(void)
{
    return __atomic_load_n(&changes, __ATOMIC_ACQUIRE);
}

const char *
pyr_kind_name(pyr_kind_t kind)
{
    switch (kind) {
    case PYR_KIND_HANDLER: return "handler";
    case PYR_KIND_WSGI: return "wsgi";
    default: return "module";
    }
}

void
pyr_entry_set_kind(pyr_entry_t *e, pyr_kind_t kind)
{
    if (__atomic_exchange_n(&e->kind, (int)kind, __ATOMIC_RELAXED) != (int)kind) {
        pyr_status_changed();
    }
}

/* The line at s, up to its end (without the '\n'). */
static const char *
line_dup(apr_pool_t *p, const char *s)
{
    const char *nl = strchr(s, '\n');

    return nl ? apr_pstrmemdup(p, s, (apr_size_t)(nl - s)) : apr_pstrdup(p, s);
}

const char *
pyr_status_message(apr_pool_t *p, const char *tb)
{
    const char *s, *frame = NULL, *exc = NULL, *msg;

    if (!tb) {
        return NULL;
    }
    /* The innermost frame is the last '  File "..."' line; the exception
     * line is the first unindented one after it (a message may go on over
     * several lines).  A refusal has no frame: its first line says it. */
    for (s = tb; *s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : s + strlen(s)) {
        if (strncmp(s, "  File \"", 8) == 0) {
            frame = s;
            exc = NULL;
        }
        else if (!exc && frame && *s != ' ' && *s != '\n') {
            exc = s;
        }
    }
    if (!exc) {
        for (s = tb; *s == '\n'; s++) {
        }
        return line_dup(p, s);
    }
    msg = line_dup(p, exc);
    if (frame) {
        const char *path = frame + 8, *q = strstr(path, "\", line ");
        const char *base;

        if (q) {
            long line = strtol(q + 8, NULL, 10);

            base = apr_pstrmemdup(p, path, (apr_size_t)(q - path));
            if (strrchr(base, '/')) {
                base = strrchr(base, '/') + 1;
            }
            msg = apr_psprintf(p, "%s (%s, line %ld)", msg, base, line);
        }
    }
    return msg;
}

static int
by_path(const void *a, const void *b)
{
    return strcmp((*(pyr_entry_t *const *)a)->path, (*(pyr_entry_t *const *)b)->path);
}

int
pyr_status_snapshot(pyr_cache_t *c, apr_pool_t *p, pyr_status_entry_t **out)
{
    apr_hash_index_t *hi;
    apr_hash_t *index = apr_hash_make(p);
    pyr_entry_t **es;
    pyr_status_entry_t *st;
    pyr_gen_t *g;
    int n = 0, i, j;

    pthread_mutex_lock(&c->lock);
    es = apr_pcalloc(p, sizeof(*es) * (apr_hash_count(c->entries) + 1));
    for (hi = apr_hash_first(NULL, c->entries); hi; hi = apr_hash_next(hi)) {
        es[n++] = apr_hash_this_val(hi);
    }
    pthread_mutex_unlock(&c->lock);
    qsort(es, (size_t)n, sizeof(*es), by_path);

    st = apr_pcalloc(p, sizeof(*st) * (size_t)(n + 1));
    for (i = 0; i < n; i++) {
        pyr_entry_t *e = es[i];

        /* The entry's strings live as long as the cache. */
        st[i].path = e->path;
        st[i].name = e->is_handler ? e->name : e->import_name;
        st[i].kind = e->is_handler ? (pyr_kind_t)__atomic_load_n(&e->kind, __ATOMIC_RELAXED)
                                   : PYR_KIND_MODULE;
        if (e->is_handler && st[i].kind == PYR_KIND_MODULE) {
            st[i].kind = PYR_KIND_HANDLER; /* bound by a caller that did not say how */
        }
        pthread_mutex_lock(&e->lock);
        st[i].failures = e->failures;
        if (e->error) {
            st[i].error = apr_pstrdup(p, e->error);
            st[i].error_at = e->error_at;
        }
        pthread_mutex_unlock(&e->lock);
        st[i].message = pyr_status_message(p, st[i].error);
        apr_hash_set(index, &es[i], sizeof(pyr_entry_t *), &st[i]);
    }

    if (pyr_interp_ready()) {
        pyr_gil_take();
        for (i = 0; i < n; i++) {
            pyr_entry_t *e = es[i];

            st[i].loads = e->loads;
            st[i].last_load_ms = e->last_load_ms;
            st[i].loaded_at = e->loaded_at;
            if (!(g = e->current)) {
                continue;
            }
            st[i].generation = g->number;
            st[i].in_flight = g->pins;
            if (g->sig.has_sha256) {
                pyr_sha256_hex(g->sig.sha256, st[i].sha256);
            }
            st[i].imports = apr_pcalloc(p, sizeof(char *) * (size_t)(g->ndeps + 1));
            for (j = 0; j < g->ndeps; j++) {
                st[i].imports[st[i].nimports++] = g->deps[j]->entry->path;
            }
        }
        for (g = c->retired; g; g = g->rnext) {
            pyr_status_entry_t *s = apr_hash_get(index, &g->entry, sizeof(pyr_entry_t *));

            if (s) {
                s->retired_alive++;
                s->in_flight_retired += g->pins;
                if (!s->retired_oldest || g->retired_at < s->retired_oldest) {
                    s->retired_oldest = g->retired_at;
                }
            }
        }
        pyr_gil_drop();
    }
    *out = st;
    return n;
}
