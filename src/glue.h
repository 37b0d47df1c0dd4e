/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * glue.h: what mod_pyreload.c (httpd hooks and directives) shares with the
 * httpd-side Python glue in src/request.c.  The engine never sees it.
 */
#ifndef PYR_GLUE_H
#define PYR_GLUE_H

#include "pyreload.h"   /* first: Python.h must precede system headers */

#include "httpd.h"
#include "http_config.h"

#define PYR_UNSET (-1)

/* One per PyReloadHandler directive, in configuration memory.  Each process
 * binds it to its cache entry on first use (entry and slot). */
typedef struct pyr_handler {
    const char *path;           /* absolute */
    const char *callable;
    const char *where;          /* the directive's section, file and line, for logs */
    pyr_entry_t *entry;         /* atomic; NULL until bound */
    int slot;
} pyr_handler_t;

typedef struct pyr_dir_conf {
    pyr_handler_t *handler;     /* NULL: unset */
    int debug;                  /* PYR_UNSET, 0, 1 */
    int check;                  /* PYR_UNSET, 0, 1 */
    apr_interval_time_t interval;
    int interval_set;
    apr_table_t *options;       /* PyReloadOption, merged */
} pyr_dir_conf_t;

typedef struct pyr_srv_conf {
    apr_array_header_t *paths;  /* const char *: PyReloadPath */
    int safe_files;             /* PYR_UNSET, 0, 1; main server only */
} pyr_srv_conf_t;

/* request.c */
int pyr_request_register(PyObject *module);     /* adds pyreload.Request */
int pyr_request_handle(request_rec *r, const pyr_dir_conf_t *cfg,
                       pyr_cache_t *cache);

/* child.c */
int pyr_child_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                           server_rec *s);      /* refuses mod_python */
const char *pyr_child_python_owner(void);       /* who started Python, or NULL */
void pyr_child_drain(int max_ms);               /* pyr_interp_opts_t.drain */

#endif /* PYR_GLUE_H */
