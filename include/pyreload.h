/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pyreload.h: the mod_pyreload engine, free of any httpd header.
 *
 * The engine is the per-process module cache (one entry per handler file,
 * keyed by absolute path), change detection (a stat signature compared on
 * every request), the load sequence (read, compile, fresh module,
 * old.__clone__(new), exec, new.__upgrade__(old), publish) and the life of a
 * generation (pinned by the requests running on it, __purge__d when it is
 * retired and idle).  mod_pyreload.c and src/serve.c drive it from httpd;
 * tests/ drive it directly.
 *
 * Locking rules, which every function below states again:
 *   - "GIL" means the caller holds the GIL; "no GIL" means it must not.
 *   - The engine never waits on one of its mutexes while holding the GIL.
 */
#ifndef PYRELOAD_H
#define PYRELOAD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <sys/types.h>
#include <stdint.h>

#include <apr_pools.h>
#include <apr_time.h>

#if PY_VERSION_HEX < 0x030A0000
#error "mod_pyreload needs Python 3.10 or later"
#endif

#define PYR_VERSION "0.1.0"

/* Log levels are syslog's numbers, which are also httpd's APLOG_* values. */
#define PYR_LOG_EMERG   0
#define PYR_LOG_ALERT   1
#define PYR_LOG_CRIT    2
#define PYR_LOG_ERR     3
#define PYR_LOG_WARNING 4
#define PYR_LOG_NOTICE  5
#define PYR_LOG_INFO    6
#define PYR_LOG_DEBUG   7

/* Where the engine's messages go.  log() is called without the GIL, one line
 * per call (tracebacks arrive line by line), from any thread. */
typedef struct pyr_logger {
    void (*log)(void *baton, int level, const char *line);
    void *baton;
} pyr_logger_t;

/* Log every line of text (split at '\n'), each prefixed with prefix. */
void pyr_log_lines(const pyr_logger_t *log, int level, const char *prefix, const char *text);
/* printf-style single message; no GIL. */
void pyr_logf(const pyr_logger_t *log, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* pylog.c: Python's logging records go to the error log at their own
 * level (DEBUG debug ... CRITICAL crit).  The most verbose level the server
 * writes for us (PYR_LOG_*; default PYR_LOG_WARNING): records below it are
 * not formatted, and the root logger's level is lowered to it if it is more
 * verbose than Python's WARNING.  Call before pyr_interp_init(). */
void pyr_pylog_set_level(int level);
/* Records logged on this thread go to log (a request's, tagged with its
 * client) until pyr_pylog_bind(NULL) (the process's logger).  log must
 * outlive the binding.  Any thread; GIL or not. */
void pyr_pylog_bind(const pyr_logger_t *log);

/* ------------------------------------------------------------------ */
/* interp.c: the interpreter of this process, and the GIL per thread   */

typedef struct pyr_interp_opts {
    const char *const *paths; /* prepended to sys.path, in this order */
    int npaths;
    pyr_logger_t stdio; /* sys.stdout / sys.stderr / logging's last resort */
    /* Called by the pyreload module's init function to add what only the
     * caller knows (httpd's Request type); may be NULL. 0 or -1 + exception. */
    int (*extend_module)(PyObject *module);
    /* Wait (no GIL; at most max_ms) until the requests this process serves
     * on other threads have ended: called when a handler's os._exit() is
     * about to end the process.  May be NULL (no wait). */
    void (*drain)(int max_ms);
} pyr_interp_opts_t;

/* Initialise Python in this process (isolated: PYTHON* variables of whoever
 * started the server are ignored), or, if another module (mod_wsgi) started
 * it already, use that interpreter.  Returns 0, or -1 with *errmsg set
 * (static or malloc'd text).  Leaves the GIL released.  Call once, from one
 * thread. */
int pyr_interp_init(const pyr_interp_opts_t *opts, const char **errmsg);
/* Finalise (GIL must not be held by this thread); safe if init failed.
 * Bounded in time whatever threads handlers left running; finalises only a
 * Python we started. */
void pyr_interp_fini(void);
int pyr_interp_ready(void);
/* 1 if this thread is inside a call into Python (between pyr_gil_take()
 * and pyr_gil_drop()): the process is being ended by a signal handler that
 * interrupted it (prefork's SIGTERM), and no Python may run or be freed. */
int pyr_interp_interrupted(void);

/* After every handler call, on its thread.  GIL.  Logs what the handler
 * left unfinished on sys.stdout and sys.stderr; in a copy of the process
 * that the handler made with os.fork() and let return, exits instead of
 * returning (the copy must not answer the request or go on serving). */
void pyr_interp_request_done(void);

/* Take / drop the GIL on this thread.  Each OS thread gets one thread state,
 * made on its first call and kept, so a request costs no allocation.
 * Not reentrant: never call pyr_gil_take() while holding the GIL. */
void pyr_gil_take(void);
void pyr_gil_drop(void);

/* hint.c: 1 when the pending exception is a TypeError and fn takes two
 * required positional arguments, as a WSGI application does (environ,
 * start_response): a handler(req) call cannot have worked.  GIL; the
 * exception is kept. */
int pyr_hint_wsgi(PyObject *fn);

/* Format the pending Python exception (which is cleared) as a traceback.
 * GIL.  Returns malloc'd UTF-8 text, never NULL. */
char *pyr_exc_format(void);

/* ------------------------------------------------------------------ */
/* source.c: what "the file changed" means                             */

/* Any difference in one of these is a change: two edits in one second
 * (mtime_ns), an atomic rename or symlink swap (dev, ino), a restored mtime
 * with another size (size, ctime_ns). */
#define PYR_SHA256_LEN 32
#define PYR_SHA256_HEX (2 * PYR_SHA256_LEN + 1)

typedef struct pyr_sig {
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
    int64_t ctime_ns;
    /* Not part of the comparison: the SHA-256 of the bytes pyr_source_read()
     * returned (has_sha256), what a status page or a code cache names. */
    int has_sha256;
    unsigned char sha256[PYR_SHA256_LEN];
} pyr_sig_t;

/* stat(2) the path (following symlinks).  0, or an errno value. No GIL. */
int pyr_sig_stat(const char *path, pyr_sig_t *sig);
/* The same, but a file briefly absent or unreadable (ENOENT, ENOTDIR,
 * EACCES: a tool re-creating it) is looked at again for up to 100 ms before
 * that is the answer.  No GIL. */
int pyr_sig_stat_settled(const char *path, pyr_sig_t *sig);
int pyr_sig_equal(const pyr_sig_t *a, const pyr_sig_t *b);

/* Read a whole file and the signature of what was read.  The read is retried
 * when the file changes under it, and for up to 100 ms while it is absent or
 * unreadable (a tool re-creating it).  *data is malloc'd and NUL-terminated;
 * sig->sha256 is the hash of exactly those bytes.
 * 0 or an errno value (EAGAIN: never stable). */
int pyr_source_read(const char *path, char **data, size_t *len, pyr_sig_t *sig);

/* sha256.c: the SHA-256 of a buffer, and its lowercase hex (NUL-terminated). */
void pyr_sha256(const void *data, size_t len, unsigned char out[PYR_SHA256_LEN]);
/* The same without the CPU's SHA instructions (which pyr_sha256 uses where
 * there are some): what the tests compare. */
void pyr_sha256_portable(const void *data, size_t len, unsigned char out[PYR_SHA256_LEN]);
void pyr_sha256_hex(const unsigned char sum[PYR_SHA256_LEN], char hex[PYR_SHA256_HEX]);

/* ------------------------------------------------------------------ */
/* perm.c: whether a file may be run                                   */

/* 0 when path is safe to run: the file is not writable by others, and no
 * directory a name of the path is looked up in (symlinks followed) is
 * writable by others without the sticky bit.  1 when it is not: msg says
 * which file or directory and the chmod that fixes it.  Otherwise an errno
 * value (the path cannot be examined; reading it will say why).  A path
 * that names a directory is held to the directory rule.  No GIL. */
int pyr_perm_check(const char *path, char *msg, size_t len);

/* 1 when this process (its effective user: the server's User) may write
 * path or its directory, with msg saying which; 0 otherwise, and always
 * as root.  A warning, not a refusal.  No GIL. */
int pyr_perm_self_writable(const char *path, char *msg, size_t len);

/* Whether the user uid (primary group gid, supplementary groups[ngroups])
 * may read each of the n paths (a directory: read and search it), every
 * directory on the way included: errs[i] is 0 or the errno of access(2) as
 * that user (EACCES).  Asked in a child process that takes the identity;
 * the caller's credentials are untouched.  0, or -1 when it cannot be asked
 * (not root, uid 0, fork failed).  No GIL; call while single-threaded
 * (httpd's configuration phase). */
int pyr_perm_readable_as(uid_t uid, gid_t gid, const gid_t *groups, int ngroups,
                         const char *const *paths, int n, int *errs);

/* ------------------------------------------------------------------ */
/* spec.c: "FILE[::CALLABLE]"                                          */

/* Split arg into file and callable (default_callable when absent).  Returns
 * NULL or an error message; results are allocated from p. */
const char *pyr_spec_parse(apr_pool_t *p, const char *arg, const char *default_callable,
                           const char **file, const char **callable);
int pyr_is_identifier(const char *s);

/* ------------------------------------------------------------------ */
/* cache.c, gen.c: the module cache and its generations                */

typedef struct pyr_cache pyr_cache_t;
typedef struct pyr_entry pyr_entry_t;
typedef struct pyr_gen pyr_gen_t;

/* How a request checks its file. */
typedef struct pyr_check {
    int enabled;                  /* 0: freeze a file after its first load */
    apr_interval_time_t interval; /* 0: stat on every request */
} pyr_check_t;

typedef enum pyr_status {
    PYR_READY = 0, /* a generation can be acquired */
    PYR_MISSING,   /* the file is gone (its last generation is kept) */
    PYR_FAILED,    /* never loaded successfully: nothing to serve */
    PYR_DENIED,    /* the file cannot be read (EACCES) */
    PYR_SYSERR     /* any other stat or read failure */
} pyr_status_t;

/* A cache lives as long as its pool; destroy it (no GIL) before finalising
 * Python so that modules are released while the interpreter is alive. */
pyr_cache_t *pyr_cache_create(apr_pool_t *pool);
void pyr_cache_destroy(pyr_cache_t *cache);

/* Find or create the entry of a handler file (absolute path).  Its own
 * directory becomes a reload root for what it imports.  No GIL; thread-safe. */
pyr_entry_t *pyr_cache_entry(pyr_cache_t *cache, const char *path);

/* Another reload root (PyReloadPath): modules found under it, imported by a
 * reloadable module, reload with their importers.  No GIL; thread-safe. */
void pyr_cache_add_root(pyr_cache_t *cache, const char *dir);

/* Whether files anyone may write are refused (on, the default) or run
 * (PyReloadSafeFiles Off, a development machine).  Before any request.  */
void pyr_cache_set_safe_files(pyr_cache_t *cache, int on);

/* Where the cache logs what happens outside a refresh (a module imported
 * for the first time while a request runs).  Copied; before any request. */
void pyr_cache_set_logger(pyr_cache_t *cache, const pyr_logger_t *log);

/* Declare that requests will call this attribute.  A load publishes unless
 * a declared callable that the current generation has is missing from the
 * new one (an edit that deletes a function in use keeps the last good code);
 * one that was never there does not hold the file back from the other
 * configurations: pyr_gen_callable() fails for it alone.  Returns the slot
 * to pass to pyr_gen_callable().  No GIL; thread-safe; idempotent per name. */
int pyr_entry_require(pyr_entry_t *e, const char *callable);

/* Bring the entry up to date with its files: stat the handler file and every
 * module of its closure (unless the check policy says not now) and, on a
 * change, rebuild what changed and what imports it, and publish the set.
 * Only one thread loads at a time; a request that sees the same change waits
 * (without the GIL) for that load.  No GIL. */
pyr_status_t pyr_entry_refresh(pyr_entry_t *e, const pyr_check_t *check, const pyr_logger_t *log);

/* How many times the entry's files were stat'ed: a check that finds nothing
 * happened in their directories (inotify) looks at no file.  No GIL. */
long pyr_entry_sweeps(const pyr_entry_t *e);

/* The last load failure's traceback, or NULL; allocated from p.  No GIL. */
char *pyr_entry_last_error(pyr_entry_t *e, apr_pool_t *p);
const char *pyr_entry_path(const pyr_entry_t *e);

/* Pin the current generation (and, through it, the modules it imported) for
 * one request on this thread; NULL if there is none.  GIL. */
pyr_gen_t *pyr_entry_acquire(pyr_entry_t *e);
/* Unpin; when a retired generation's last request ends, its __purge__() runs
 * and it is freed.  GIL. */
void pyr_gen_release(pyr_gen_t *g, const pyr_logger_t *log);
/* After a request, once its response is sent: if a retired generation was
 * purged since the last call, free what its module held (a full cyclic
 * collection: functions and classes hold their module's globals in cycles
 * that reference counts never free).  Cheap when nothing was purged (one
 * atomic read); nothing when cache is NULL.  No GIL. */
void pyr_cache_tidy(pyr_cache_t *cache);

/* Borrowed references, valid while the generation is pinned.  GIL.
 * pyr_gen_callable() returns NULL with an exception set when missing. */
PyObject *pyr_gen_module(pyr_gen_t *g);
PyObject *pyr_gen_callable(pyr_gen_t *g, int slot);
/* After pyr_gen_callable() failed: 1 the first time this generation lacks
 * that slot (log it then), 0 after.  GIL. */
int pyr_gen_tell_missing(pyr_gen_t *g, int slot);
long pyr_gen_number(const pyr_gen_t *g);

/* ------------------------------------------------------------------ */
/* status.c: what this process has loaded, for a status page           */

/* Which directive bound an entry; a file only imported is a module. */
typedef enum pyr_kind {
    PYR_KIND_MODULE = 0,
    PYR_KIND_HANDLER, /* PyReloadHandler */
    PYR_KIND_WSGI     /* PyReloadWSGI */
} pyr_kind_t;

/* "module", "handler", "wsgi". */
const char *pyr_kind_name(pyr_kind_t kind);
/* Record which directive bound the handler entry e (its first binding in
 * this process; the last one wins when both directives name one file).
 * No GIL; any thread. */
void pyr_entry_set_kind(pyr_entry_t *e, pyr_kind_t kind);

/* One entry of the cache as it is now.  Strings and arrays from the pool
 * given to pyr_status_snapshot(). */
typedef struct pyr_status_entry {
    const char *path;
    const char *name; /* as imported ("pkg.mod"); a handler: its file's name */
    pyr_kind_t kind;
    long generation;     /* the current one; 0: none yet */
    long loads;          /* generations published */
    long failures;       /* load attempts that failed */
    double last_load_ms; /* the last successful load, its own imports included */
    apr_time_t loaded_at; /* 0: never */
    char sha256[PYR_SHA256_HEX]; /* of the current generation's source; "" unknown */
    const char **imports; /* paths the current generation imported */
    int nimports;
    long in_flight;         /* requests on the current generation */
    long in_flight_retired; /* requests on retired generations */
    int retired_alive;      /* replaced generations still alive */
    apr_time_t retired_oldest; /* when the oldest of them was replaced; 0: none */
    apr_time_t error_at;    /* the latest load failed then; 0: it did not */
    const char *message;    /* its exception line (file, line); NULL: none */
    const char *error;      /* its whole traceback; NULL: none */
    int error_truncated;    /* error was cut (a copy kept in shared memory) */
} pyr_status_entry_t;

/* Every entry of c (sorted by path) into *out, from p; returns how many.
 * No GIL (takes each entry's mutex, then the GIL). */
int pyr_status_snapshot(pyr_cache_t *c, apr_pool_t *p, pyr_status_entry_t **out);

/* A counter bumped by every change a snapshot shows, except the requests
 * in flight on current generations (they change with every request): a
 * caller that publishes snapshots publishes again when it moved.  Any
 * thread, lock-free. */
unsigned long pyr_status_changes(void);

/* The first line a reader needs from a traceback: its exception line, and
 * where the innermost frame was ("SyntaxError: invalid syntax (app.py,
 * line 3)").  From p. */
const char *pyr_status_message(apr_pool_t *p, const char *traceback);

#endif /* PYRELOAD_H */
