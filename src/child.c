/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * child.c: the httpd side of a server process's Python life: which other
 * module may already run Python in it (checked at start-up), and waiting
 * for the process's requests before a handler's os._exit() ends it.
 */
#include "pyr_httpd.h"

#include "ap_mpm.h"
#include "http_log.h"
#include "http_main.h"
#include "scoreboard.h"

#include <apr_time.h>

#include <pthread.h>
#include <unistd.h>

APLOG_USE_MODULE(pyreload);

/* Modules that embed Python too, and whether we can share a process with
 * them.  One process has one Python runtime (libpython's globals), so two
 * embedders must agree on who starts it and on thread states. */
static const struct {
    const char *module; /* as ap_find_linked_module() knows it */
    const char *name;
    const char *why; /* NULL: we can run beside it */
} embedders[] = {
    /* mod_python starts Python in the httpd parent, before the children are
     * forked, and drives it from there with its own thread states: every
     * child inherits a Python that mod_pyreload can neither start (it is
     * started already) nor safely share.  mod_wsgi 4 refuses mod_python for
     * the same reason. */
    { "mod_python.c", "mod_python",
      "mod_python starts Python in the httpd parent process and owns it in "
      "every child; a process can run only one Python, so mod_pyreload and "
      "mod_python cannot both be loaded (mod_wsgi refuses mod_python too). "
      "Remove the LoadModule line of python_module (Debian: a2dismod python), "
      "or do not load mod_pyreload" },
    /* mod_wsgi starts Python in each child (child_init, before ours: see
     * register_hooks) and uses the GILState API for the main interpreter:
     * mod_pyreload attaches to that interpreter. */
    { "mod_wsgi.c", "mod_wsgi", NULL },
};

int
pyr_child_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    size_t i;

    for (i = 0; i < sizeof(embedders) / sizeof(embedders[0]); i++) {
        if (embedders[i].why && ap_find_linked_module(embedders[i].module)) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                         "PYR0002: mod_pyreload cannot run beside %s: %s.", embedders[i].name,
                         embedders[i].why);
            return !OK;
        }
    }
    return OK;
}

const char *
pyr_child_python_owner(void)
{
    size_t i;

    if (!Py_IsInitialized()) {
        return NULL;
    }
    for (i = 0; i < sizeof(embedders) / sizeof(embedders[0]); i++) {
        if (ap_find_linked_module(embedders[i].module)) {
            return embedders[i].name;
        }
    }
    return "another module";
}

/* Threads of this process other than the caller's that are inside a
 * request, as the scoreboard says. */
static int
busy_others(int slot, int threads)
{
    apr_os_thread_t self = apr_os_thread_current();
    int i, n = 0;

    for (i = 0; i < threads; i++) {
        worker_score *ws = ap_get_scoreboard_worker_from_indexes(slot, i);

        if (!ws || pthread_equal(ws->tid, self)) {
            continue;
        }
        switch (ws->status) {
        case SERVER_BUSY_READ:
        case SERVER_BUSY_WRITE:
        case SERVER_BUSY_LOG:
        case SERVER_BUSY_DNS:
        case SERVER_GRACEFUL: n++; break;
        default: break;
        }
    }
    return n;
}

void
pyr_child_drain(int max_ms)
{
    apr_time_t until = apr_time_now() + apr_time_from_msec(max_ms);
    apr_proc_t me;
    int threaded = 0, threads = 0, slot, busy;

    /* One request per process (prefork): it is the caller's. */
    if (ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) != APR_SUCCESS ||
        threaded == AP_MPMQ_NOT_SUPPORTED ||
        ap_mpm_query(AP_MPMQ_HARD_LIMIT_THREADS, &threads) != APR_SUCCESS) {
        return;
    }
    me.pid = getpid();
    if ((slot = ap_find_child_by_pid(&me)) < 0) {
        return;
    }
    while ((busy = busy_others(slot, threads)) > 0 && apr_time_now() < until) {
        apr_sleep(apr_time_from_msec(20));
    }
    if (busy > 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf,
                     "PYR0301: %d request(s) "
                     "of this process still running after %d ms are cut short",
                     busy, max_ms);
    }
}
