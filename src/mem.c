/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * mem.c: allocations that never return NULL (see pyr_mem.h).  Any thread, no
 * lock.
 */
#include "pyr_mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* stderr is unbuffered: the line needs no memory of its own. */
static void
out_of_memory(size_t size)
{
    fprintf(stderr, "PYR0199: mod_pyreload: out of memory (%zu bytes); aborting\n", size);
    abort();
}

void *
pyr_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);

    if (!p) {
        out_of_memory(size);
    }
    return p;
}

void *
pyr_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p) {
        out_of_memory(n * size);
    }
    return p;
}

void *
pyr_xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);

    if (!q) {
        out_of_memory(size);
    }
    return q;
}

char *
pyr_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;

    return memcpy(pyr_xmalloc(n), s, n);
}

void *
pyr_xgrow(void *arr, int *cap, int need, size_t size)
{
    if (need <= *cap) {
        return arr;
    }
    *cap = need < 8 ? 8 : need * 2;
    return pyr_xrealloc(arr, (size_t)*cap * size);
}
