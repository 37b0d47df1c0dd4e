/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pyr_mem.h: the engine's C heap (mem.c).  Running out of memory is not a state
 * the engine recovers from: as httpd's ap_malloc() family does, these write
 * one line to stderr (httpd's error log) and abort(), so no caller checks
 * for NULL.  Python memory keeps Python's rule (NULL and MemoryError).
 */
#ifndef PYR_MEM_H
#define PYR_MEM_H

#include <stddef.h>

void *pyr_xmalloc(size_t size);
void *pyr_xcalloc(size_t n, size_t size);
void *pyr_xrealloc(void *p, size_t size);
char *pyr_xstrdup(const char *s);
/* arr, with room for at least need elements of size bytes; *cap is the
 * room it has, updated. */
void *pyr_xgrow(void *arr, int *cap, int need, size_t size);

#endif /* PYR_MEM_H */
