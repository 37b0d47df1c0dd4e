/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * child.c: the httpd side of a server process's Python life: waiting for
 * the process's requests before a handler's os._exit() ends it.
 */
#include "glue.h"

#include "ap_mpm.h"
#include "http_log.h"
#include "scoreboard.h"

#include <apr_time.h>

#include <pthread.h>
#include <unistd.h>

APLOG_USE_MODULE(pyreload);

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
        case SERVER_GRACEFUL:
            n++;
            break;
        default:
            break;
        }
    }
    return n;
}

void
pyr_child_drain(int max_ms)
{
    apr_time_t until = apr_time_now() + apr_time_from_msec(max_ms);
    apr_proc_t me;
    int threaded = 0, threads = 0, slot;

    /* One request per process (prefork): it is the caller's. */
    if (ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) != APR_SUCCESS
        || threaded == AP_MPMQ_NOT_SUPPORTED
        || ap_mpm_query(AP_MPMQ_HARD_LIMIT_THREADS, &threads) != APR_SUCCESS) {
        return;
    }
    me.pid = getpid();
    if ((slot = ap_find_child_by_pid(&me)) < 0) {
        return;
    }
    while (busy_others(slot, threads) > 0 && apr_time_now() < until) {
        apr_sleep(apr_time_from_msec(20));
    }
}
