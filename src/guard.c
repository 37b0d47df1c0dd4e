/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * guard.c: whether a request is still running, and which thread is using it,
 * shared by `req` and the tables it hands out.
 *
 * A handler may give req (or req.headers_out) to other threads, which may
 * call it at any moment, also while the request ends.  Every call first
 * checks the guard under the GIL.  A call that releases the GIL while it
 * uses the request's brigade or request_rec (write, flush, read, log_error)
 * enters the guard first: until it leaves, every other call on that request,
 * and the request thread that wants to end it, wait (without the GIL).  A
 * call that keeps the GIL needs no more than the check: nobody else can be
 * inside the request then.  The request thread closes the guard when the
 * handler has returned; from then on every call raises RuntimeError.
 *
 * Tables hold the guard, not the request, so req and its tables form no
 * reference cycle: a request's objects go with their last reference.
 */
#include "pyr_python.h"

#include <pthread.h>

struct pyr_guard {
    long refs;           /* GIL */
    int live;            /* GIL */
    int busy;            /* atomic: set with the GIL, cleared without it, under mu */
    pthread_mutex_t mu;  /* only ever taken without the GIL */
    pthread_cond_t idle; /* busy went to 0 */
};

pyr_guard_t *
pyr_guard_new(void)
{
    pyr_guard_t *g = PyMem_Malloc(sizeof(*g));

    if (!g) {
        PyErr_NoMemory();
        return NULL;
    }
    g->refs = 1;
    g->live = 1;
    g->busy = 0;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->idle, NULL);
    return g;
}

void
pyr_guard_ref(pyr_guard_t *g)
{
    g->refs++;
}

void
pyr_guard_unref(pyr_guard_t *g)
{
    /* A thread waiting on it holds a reference through its req or table. */
    if (g && --g->refs == 0) {
        pthread_cond_destroy(&g->idle);
        pthread_mutex_destroy(&g->mu);
        PyMem_Free(g);
    }
}

/* Until no other thread is inside the request.  Only a thread that has
 * released the GIL can be (busy is set under the GIL), so waiting for it
 * must release the GIL too. */
static void
wait_idle(pyr_guard_t *g)
{
    while (__atomic_load_n(&g->busy, __ATOMIC_ACQUIRE)) {
        Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&g->mu);
        while (__atomic_load_n(&g->busy, __ATOMIC_ACQUIRE)) {
            pthread_cond_wait(&g->idle, &g->mu);
        }
        pthread_mutex_unlock(&g->mu);
        Py_END_ALLOW_THREADS
        /* Another thread may have entered before we had the GIL back. */
    }
}

int
pyr_guard_live(pyr_guard_t *g)
{
    wait_idle(g);
    return g->live;
}

int
pyr_guard_check(pyr_guard_t *g)
{
    if (!pyr_guard_live(g)) {
        PyErr_SetString(PyExc_RuntimeError, "this request has finished: req and its "
                                            "tables are only valid during their own request");
        return -1;
    }
    return 0;
}

int
pyr_guard_enter(pyr_guard_t *g)
{
    if (pyr_guard_check(g) < 0) {
        return -1;
    }
    /* Idle and live, and we kept the GIL since we saw it: ours alone. */
    __atomic_store_n(&g->busy, 1, __ATOMIC_RELEASE);
    return 0;
}

void
pyr_guard_leave(pyr_guard_t *g)
{
    pthread_mutex_lock(&g->mu);
    __atomic_store_n(&g->busy, 0, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&g->idle);
    pthread_mutex_unlock(&g->mu);
}

void
pyr_guard_close(pyr_guard_t *g)
{
    /* No one enters from now on; the one inside, if any, finishes first. */
    g->live = 0;
    wait_idle(g);
}
