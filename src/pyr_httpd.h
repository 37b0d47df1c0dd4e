/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pyr_httpd.h: what mod_pyreload.c (httpd hooks and directives) shares with the
 * httpd-side Python glue: src/serve.c (a request, whatever the protocol),
 * src/req.c (the native protocol), src/child.c.  The engine never sees it.
 */
#ifndef PYR_HTTPD_H
#define PYR_HTTPD_H

#include "pyreload.h" /* first: Python.h must precede system headers */

#include "pyr_python.h"

#include "httpd.h"
#include "http_config.h"

/* "Not set here" for every scalar field of the configuration records
 * (pointers: NULL), so that merging can tell inherited from set. */
#define PYR_UNSET (-1)

/* The handler name (r->handler) of the requests mod_pyreload answers.
 * PyReloadHandler gives it to its requests itself (a fixup); a SetHandler
 * or AddHandler that applies to a request wins; `SetHandler
 * pyreload-handler` says the same explicitly. */
#define PYR_HANDLER_NAME "pyreload-handler"

typedef struct pyr_protocol pyr_protocol_t;

/* One per PyReloadHandler or PyReloadWSGI directive, in configuration
 * memory, which no request writes: each process binds a handler to its
 * cache entry in a table of its own (serve.c), indexed by id. */
typedef struct pyr_handler {
    const char *path; /* absolute */
    const char *callable;
    const char *directive; /* "PyReloadHandler" or "PyReloadWSGI", for logs */
    const char *where;     /* the directive's section, file and line, for logs */
    const pyr_protocol_t *protocol;
    /* The non-regex <Location> path the directive is in, without a trailing
     * '/' ("" for <Location />); NULL in any other context.  WSGI's
     * SCRIPT_NAME. */
    const char *location;
    int id;   /* 0, 1, ... in configuration order */
    int kind; /* pyr_kind_t: which directive (the status page says) */
} pyr_handler_t;

typedef struct pyr_dir_conf {
    pyr_handler_t *handler;       /* NULL: unset */
    int debug;                    /* PYR_UNSET, 0, 1 */
    int check;                    /* PYR_UNSET, 0, 1 */
    apr_interval_time_t interval; /* PYR_UNSET, or microseconds */
    apr_table_t *options;         /* PyReloadOption, merged (empty: none) */
} pyr_dir_conf_t;

typedef struct pyr_srv_conf {
    apr_array_header_t *paths; /* const char *: PyReloadPath; main server only */
    int safe_files;            /* PYR_UNSET, 0, 1; main server only */
    int status_entries;        /* PYR_UNSET or PyReloadStatusEntries; main server only */
    int status_error_bytes;    /* PYR_UNSET or PyReloadStatusErrorBytes; main server only */
} pyr_srv_conf_t;

/* The status page's sizes when not set. */
#define PYR_STATUS_ENTRIES_DEFAULT 64
#define PYR_STATUS_ERROR_BYTES_DEFAULT 4096

/* The handler name of the status page (SetHandler pyreload-status). */
#define PYR_STATUS_HANDLER_NAME "pyreload-status"

/* ------------------------------------------------------------------ */
/* serve.c: one request through Python, whatever the protocol         */

/* One request, as serve.c hands it to its protocol. */
typedef struct pyr_call {
    request_rec *r;
    const pyr_dir_conf_t *cfg;
    apr_bucket_brigade *bb; /* the response not yet passed to the filters:
                                   serve.c sends it, or drops it on a failure */
    pyr_gen_t *gen;         /* the generation serving the request (pinned) */
    void *state;            /* the protocol's, from start() to finish() */
} pyr_call_t;

/* What a handler's outcome means for the response. */
typedef struct pyr_outcome {
    int status;  /* what the hook returns: OK, DONE, DECLINED, an HTTP status */
    int failed;  /* a 500 of ours: log 'why', and show it if debugging */
    char *why;   /* malloc'd traceback or message, or NULL */
    int missing; /* the file lacks the callable: 1 log it, -1 said already */
} pyr_outcome_t;

/* A way of calling Python for a request: what the callable is given, what
 * its result means.  serve.c does the rest (bind, refresh, pin, call,
 * unpin, the failure tail).  Every function runs with the GIL held and may
 * release it around I/O; c->state is theirs. */
struct pyr_protocol {
    const char *name; /* "pyreload" (req.c), "wsgi" (wsgi.c) */
    /* Build what the callable is given (the native protocol's req).  0, or
     * -1 with a Python exception set. */
    int (*start)(pyr_call_t *c);
    /* Call fn for the request and carry out its response as far as the
     * protocol goes (a body to iterate, write and close()).  A new
     * reference, or NULL with an exception set. */
    PyObject *(*call)(pyr_call_t *c, PyObject *fn);
    /* What result (NULL: the exception set) means for the response, in *o;
     * the exception is cleared. */
    void (*judge)(pyr_call_t *c, PyObject *result, pyr_outcome_t *o);
    /* The request is over for Python: objects kept past it raise from now
     * on.  1 if the response had started going out (flushed headers). */
    int (*finish)(pyr_call_t *c);
};

/* Before the first request of this process: room to bind nhandlers
 * handlers (ids 0 .. nhandlers-1), from pchild. */
void pyr_serve_child_init(apr_pool_t *pchild, int nhandlers);
/* Answer r with cfg->handler.  No GIL. */
int pyr_serve(request_rec *r, const pyr_dir_conf_t *cfg, pyr_cache_t *cache);
/* A 500 of ours, whose reason is the exception set (cleared).  GIL. */
void pyr_outcome_exception(pyr_outcome_t *o);

/* req.c: the native protocol, handler(req) */
extern const pyr_protocol_t pyr_protocol_pyreload;
int pyr_req_register(PyObject *module); /* adds pyreload.Request */

/* wsgi.c: PEP 3333, application(environ, start_response) */
extern const pyr_protocol_t pyr_protocol_wsgi;
/* Adds pyreload.FileWrapper and makes what every WSGI request shares
 * (environ keys, constant values).  GIL, at interpreter start. */
int pyr_wsgi_register(PyObject *module);

/* wsgi_environ.c: environ for one request.  GIL.  New dict (input and
 * errors put into it; pyreload.options tied to guard), or NULL + exception. */
PyObject *pyr_wsgi_environ(pyr_call_t *c, pyr_guard_t *guard, PyObject *input, PyObject *errors);
int pyr_wsgi_environ_init(void); /* once per process; GIL */
void pyr_wsgi_environ_fini(void);

/* wsgi_input.c: wsgi.input over r's body.  GIL.  Every object of a
 * request shares its guard (guard.c): once the request has ended, they
 * raise. */
extern PyTypeObject pyr_WSGIInputType;
PyObject *pyr_wsgi_input_new(request_rec *r, pyr_guard_t *guard);
/* The HTTP status a failed body read calls for (413, 400), or 0. */
int pyr_wsgi_input_error(PyObject *input);

/* wsgi_stream.c: wsgi.errors (text into the error log, tagged with r's
 * client) and wsgi.file_wrapper. */
extern PyTypeObject pyr_WSGIErrorsType;
extern PyTypeObject pyr_FileWrapperType;
PyObject *pyr_wsgi_errors_new(request_rec *r, pyr_guard_t *guard);
int pyr_wsgi_errors_flush(PyObject *errors); /* log an unfinished line */
/* The file a FileWrapper result can send as an APR file bucket: 1 with
 * *fd (a dup, the caller's), *offset (the file's position) and *size (to
 * its end); 0 if it has none (iterate it instead); -1 + exception. */
int pyr_file_wrapper_fd(PyObject *wrapper, int *fd, apr_off_t *offset, apr_off_t *size);

/* status_shm.c: every child's status summary in shared memory */

/* One process as the status page shows it. */
typedef struct pyr_status_proc {
    pid_t pid;
    apr_time_t started_at;
    apr_time_t updated_at; /* its summary's last write */
    long requests;         /* from the scoreboard; -1: unknown */
    int live;              /* the serving process, from its own memory */
    int no_slot;           /* it found no free slot: others cannot see it */
    int omitted;           /* entries that did not fit in its slot */
    int nentries;
    pyr_status_entry_t *entries;
} pyr_status_proc_t;

/* post_config: the shared memory for the next children (0 on success; a
 * failure is logged and the page shows its own process only). */
int pyr_status_shm_create(apr_pool_t *pconf, server_rec *s, int entries, int error_bytes);
/* child_init: claim this process's slot, freed by pchild's cleanup. */
void pyr_status_shm_child_init(apr_pool_t *pchild, server_rec *s);
/* Rewrite this process's slot if something changed since it was last
 * written.  No GIL. */
void pyr_status_publish(pyr_cache_t *cache);
/* Every serving process, this one first (from its own memory).  No GIL. */
int pyr_status_read(apr_pool_t *p, pyr_cache_t *cache, pyr_status_proc_t **out);
/* The slots' sizes, how many are claimed, and how many of those by a
 * process that is gone (it died without freeing its slot): how many slots
 * (0: no shared memory). */
int pyr_status_shm_sizes(int *entries, int *error_bytes, int *used, int *stale);

/* status_page.c: SetHandler pyreload-status (HTML, ?json, ?metrics), and
 * mod_status's /server-status section. */
int pyr_status_page(request_rec *r, pyr_cache_t *cache);
void pyr_status_register_hooks(apr_pool_t *p, pyr_cache_t **cache);

/* readable.c: PYR0703 for each handler file (configured: pyr_handler_t *)
 * and PyReloadPath directory (dirs: const char *) that the server's User
 * cannot read (a directory: read and search).  OK, or
 * HTTP_INTERNAL_SERVER_ERROR after logging; OK when not root.  A
 * check_config hook's body. */
int pyr_readable_check(apr_pool_t *ptemp, const apr_array_header_t *configured,
                       const apr_array_header_t *dirs);

/* child.c */
int pyr_child_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                           server_rec *s); /* refuses mod_python */
const char *pyr_child_python_owner(void);  /* who started Python, or NULL */
void pyr_child_drain(int max_ms);          /* pyr_interp_opts_t.drain */

#endif /* PYR_HTTPD_H */
