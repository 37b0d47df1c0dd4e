/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pyr_engine.h: what the engine's files share: the cache, its entries and
 * their generations, and the functions each file offers the others.
 * Nothing outside these files looks inside the structures (the API is
 * include/pyreload.h).
 *
 *   cache.c   entries, reload roots, a request's check, watch lists
 *   gen.c     a generation's life: made, pinned, retired, collected, freed
 *   build.c   a build: what to rebuild, in which order; publishing the set
 *   module.c  one module of a build: safety, code, globals, hooks, body
 *   import.c  the import hook and name resolution
 *   names.c   generations in sys.modules
 *
 * Three locks, never taken the wrong way round:
 *   - an entry's mutex guards what a request needs before it may run Python
 *     (the files its handler watches, who is loading, the last failure);
 *   - the cache's build mutex lets one rebuild run at a time;
 *   - the GIL guards the Python side: current generations and their counts.
 * The two mutexes are only ever waited for WITHOUT the GIL, and the GIL is
 * taken after them, so a loader that needs the GIL can never deadlock
 * against a thread that holds the GIL and waits for a mutex.  The cache's
 * own lock (entries, roots) is held for a lookup only, without the GIL.
 */
#ifndef PYR_ENGINE_H
#define PYR_ENGINE_H

#include "pyr_python.h"
#include "pyr_notify.h"

#include <apr_hash.h>
#include <apr_tables.h>

#include <pthread.h>

#define PYR_MAX_CALLABLES 32

/* One version of one file's module. */
struct pyr_gen {
    pyr_entry_t *entry;
    PyObject *module;                       /* owned */
    PyObject *code;                         /* owned: reused when only a dependency changed */
    pyr_sig_t sig;                          /* the source it was built from */
    PyObject *callables[PYR_MAX_CALLABLES]; /* owned or NULL (missing); handlers */
    int ncallables;
    unsigned char told[PYR_MAX_CALLABLES]; /* GIL: a missing one was logged */
    long number;
    /* GIL.  Requests pinning it, and generations that imported it. */
    long refs;
    long pins;              /* GIL: of refs, the requests (status.c's in_flight) */
    int retired;
    apr_time_t retired_at; /* GIL: when it was replaced */
    pyr_gen_t *rnext, *rprev; /* GIL: the cache's retired generations */
    /* GIL: pyr_gen_collect()'s scratch. */
    long held; /* refs from other retired generations */
    int live, dying;
    pyr_gen_t *dnext; /* the garbage found by one pass */
    pyr_gen_t **deps; /* what it imported; each holds one ref */
    int ndeps, capdeps;
};

/* The files a handler's requests look at, and what they looked like at the
 * last load attempt.  Immutable once published; refcounted (atomic) so that
 * a request can stat the files without holding the entry's lock. */
typedef struct pyr_watch {
    int refs;
    int n;
    struct {
        pyr_entry_t *e;
        pyr_sig_t sig;
        int exists;
    } item[];
} pyr_watch_t;

struct pyr_entry {
    pyr_cache_t *cache;
    char *path;
    char *name;        /* __name__, its key in sys.modules (names.c) */
    char *import_name; /* "a.b" as imported (logs); handlers: = name */
    char *prefix;      /* the root's package in sys.modules, or NULL */
    char *dir;         /* the file's directory */
    char *root;        /* where its absolute imports are looked up */
    int is_handler;    /* handler files are nobody's import */
    int is_package;    /* an __init__.py */
    PyObject *capsule; /* GIL; points here, put in the module's globals */

    pthread_mutex_t lock;
    pthread_cond_t done;
    /* Under lock. */
    int loading;
    pyr_watch_t *watch; /* handler files only */
    int missing;
    char *error;
    char *names[PYR_MAX_CALLABLES]; /* append-only */
    int nnames;                     /* atomic */
    /* Atomic. */
    int has_gen;
    apr_time_t next_check;
    uint64_t clean_epoch; /* notify epoch of the last sweep that found nothing */
    uint64_t watch_gen;   /* notify generation the watch list was watched under */
    int notified;         /* ... and every file of it is watched */
    long sweeps;          /* stat sweeps of the watch list */

    /* GIL. */
    pyr_gen_t *current;
    long published;
    int warned_writable; /* the server's User may write it: said once */

    /* What the status page shows (status.c).  The directive that bound it
     * (atomic: set once per binding); loads (GIL, at publish); failures
     * and when the last one was (under lock, with error). */
    int kind;             /* pyr_kind_t */
    long loads;           /* GIL */
    double last_load_ms;  /* GIL */
    apr_time_t loaded_at; /* GIL */
    long failures;        /* lock */
    apr_time_t error_at;  /* lock */
};

struct pyr_cache {
    apr_pool_t *pool;
    pthread_mutex_t lock;      /* entries and roots; never held with the GIL */
    apr_hash_t *entries;       /* path -> pyr_entry_t */
    apr_array_header_t *roots; /* const char *: PyReloadPath directories */
    /* One rebuild at a time in a process: taken without the GIL, before it. */
    pthread_mutex_t build;
    pyr_notify_t *notify;
    int unsafe_ok;    /* PyReloadSafeFiles Off: run what anyone may write */
    pyr_logger_t log; /* outside a refresh; log.log may be NULL */
    /* GIL. */
    pyr_gen_t *retired; /* replaced generations still alive */
    int collecting, collect_again;
    int purged; /* atomic: a generation was purged since the last tidy */
    PyObject *resolved; /* "root\0name" -> capsule of an entry, or None */
    PyObject *packages; /* prefix -> the root's package (names.c) */
};

/* cache.c (no GIL: each takes the cache's lock or e's mutex) */
pyr_entry_t *pyr_entry_new(pyr_cache_t *c, const char *path, const char *name, const char *root,
                           int is_handler, int is_package);
/* The entry of path if there is one, else NULL. */
pyr_entry_t *pyr_cache_find(pyr_cache_t *c, const char *path);
/* The i-th PyReloadPath directory, or NULL past the last. */
const char *pyr_cache_root(pyr_cache_t *c, int i);
/* A watch list of n items for the caller to fill in; one reference. */
pyr_watch_t *pyr_watch_new(int n);
/* A request of handler e imported d for the first time (d's file looked
 * like sig): e's checks watch d from now on. */
void pyr_entry_watch_add(pyr_entry_t *e, pyr_entry_t *d, const pyr_sig_t *sig);

/* gen.c (GIL) */
/* The next generation of e, built from a file that looked like sig; the
 * build fills in its module, code and callables.  NULL with MemoryError. */
pyr_gen_t *pyr_gen_new(pyr_entry_t *e, const pyr_sig_t *sig);
/* g imported d: g holds a reference to d until g is freed. */
void pyr_gen_add_dep(pyr_gen_t *g, pyr_gen_t *d);
/* Handler generations: whether module, e's next one, has the callables
 * the configuration names (0, or -1 with an exception: see gen.c); take
 * them into g, whose module is set, before it is published. */
int pyr_gen_check_callables(pyr_entry_t *e, PyObject *module);
void pyr_gen_take_callables(pyr_gen_t *g);
/* Let go of g's module, code and callables (and its name in sys.modules). */
void pyr_gen_clear(pyr_gen_t *g);
/* Free g itself, letting go of no reference it holds: a generation never
 * published, or any at the end of the process. */
void pyr_gen_free(pyr_gen_t *g);
void pyr_gen_ref(pyr_gen_t *g);
void pyr_gen_unref(pyr_gen_t *g, const pyr_logger_t *log);
/* g was replaced: from now on it lives only while a request or another
 * generation holds it.  Then pyr_gen_collect() frees what nobody holds,
 * import cycles among replaced generations included.  GIL. */
void pyr_gen_retire(pyr_gen_t *g);
void pyr_gen_collect(pyr_cache_t *c, const pyr_logger_t *log);

/* Call module.<name>(arg) (arg NULL: no argument) if the module defines a
 * callable of that name.  0, also when absent, or -1 with an exception. */
int pyr_call_hook(PyObject *module, PyObject *name, PyObject *arg);

/* The handler generation the calling thread's request is pinned to
 * (pyr_entry_acquire() to pyr_gen_release()), or NULL. */
pyr_gen_t *pyr_gen_pinned(void);

/* status.c: something the status page shows changed (a publish, a failure,
 * a generation retired, purged, or a request on a retired one ended).  Any
 * thread, lock-free. */
void pyr_status_changed(void);

/* build.c: building new generations (GIL held, build mutex held). */
typedef struct pyr_build pyr_build_t;

/* Rebuild what changed in the closure of e (a handler), or load it for the
 * first time, and publish the whole set, or nothing.  Returns 0 when a new
 * set was published or nothing needed building, -1 when the attempt failed
 * (*error: malloc'd traceback).  *watch receives what the closure's files
 * looked like (for the next requests' checks).  Info lines about what was
 * rebuilt and why go to *report (malloc'd, may be NULL). */
int pyr_load_closure(pyr_entry_t *e, const pyr_logger_t *log, char **error, pyr_watch_t **watch,
                     char **report);

/* The build in progress on this thread: while a build runs the body of one
 * of its modules, the import hook (import.c) hands that module's imports to
 * the build, not to the published generations.  A build is current on its
 * thread from the first module it builds to the last, not while it
 * publishes.  All: GIL held. */
pyr_build_t *pyr_build_current(void); /* NULL: no build on this thread */
/* Within b: the module importer gets for d (built now if b must rebuild it
 * or it never was loaded), recorded as importer's dependency.  Borrowed
 * reference, or NULL with an exception. */
PyObject *pyr_build_import(pyr_build_t *b, pyr_entry_t *importer, pyr_entry_t *d);
/* Within b: package parent depends on its submodule child. */
void pyr_build_bind(pyr_build_t *b, pyr_entry_t *parent, pyr_entry_t *child);
/* Outside any build: load d, never loaded, on its own and publish it (a
 * request's first import of d).  Takes the build mutex, waiting for it
 * with the GIL released.  0, or -1 with an exception. */
int pyr_build_first(pyr_entry_t *d);

/* module.c: one module of a build (GIL held, build mutex held).
 * code: e's code for its next generation, compiled from its file, or the
 * current generation's when the file is the same (only a dependency
 * changed); *sig and *exists say what the file looked like.  A file anyone
 * may write is refused (unless PyReloadSafeFiles Off): PermissionError, and
 * *refused, if still NULL, gets the message (malloc'd), so that the build
 * fails even if the importer catches the exception.  log NULL: the
 * cache's.  New reference, or NULL with an exception.
 * new: a fresh module for e's generation number, its globals set (new
 * reference, or NULL).  exec: run code in mod: the current module's
 * __clone__(mod), the body (under e's name in sys.modules), then
 * mod.__upgrade__(current).  0, or -1 with an exception. */
PyObject *pyr_module_code(pyr_entry_t *e, const pyr_logger_t *log, pyr_sig_t *sig, int *exists,
                          char **refused);
PyObject *pyr_module_new(pyr_entry_t *e, long number);
int pyr_module_exec(pyr_entry_t *e, PyObject *mod, PyObject *code);

/* import.c (GIL).  Install the import hook (builtins.__import__ for
 * reloadable modules, and importlib.import_module), at interpreter start
 * (the names are older than the file). */
int pyr_loader_init(void);
void pyr_loader_fini(void);
/* Code run in globals (a module e's dict) imports through the cache, as e. */
int pyr_import_bind_globals(PyObject *globals, pyr_entry_t *e);

/* names.c: generations in sys.modules (GIL).
 * enter: while e's new module runs its body, sys.modules[e->name] is it;
 * leave puts back what was there (*saved), keeping a pending exception.
 * publish: each entries[i]->name maps to modules[i], before the entries'
 * current generations are swapped (on failure they are put back: -1).
 * forget: remove e's name if it maps to module.  fini: the root packages.
 * set_spec: e's __spec__ in its module's dict.  rollback: e's name, if it
 * maps to module (of a failed build), back to e's serving generation or
 * to nothing. */
int pyr_names_enter(pyr_entry_t *e, PyObject *module, PyObject **saved);
void pyr_names_leave(pyr_entry_t *e, PyObject **saved);
int pyr_names_publish(pyr_entry_t **entries, PyObject **modules, int n);
void pyr_names_forget(pyr_entry_t *e, PyObject *module);
void pyr_names_fini(pyr_cache_t *c);
int pyr_names_set_spec(pyr_entry_t *e, PyObject *dict);
void pyr_names_rollback(pyr_entry_t *e, PyObject *module);

#endif /* PYR_ENGINE_H */
