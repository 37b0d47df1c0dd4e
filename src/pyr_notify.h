/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pyr_notify.h: "did anything happen in the watched directories?" (notify.c).
 */
#ifndef PYR_NOTIFY_H
#define PYR_NOTIFY_H

#include <apr_pools.h>
#include <stdint.h>

typedef struct pyr_notify pyr_notify_t;

/* One per process; never fails (without inotify, every answer is 0). */
pyr_notify_t *pyr_notify_create(apr_pool_t *pool);
void pyr_notify_destroy(pyr_notify_t *n);

/* Watch every directory the lookup of path goes through (the parents of
 * its symlinks, where they lead, the real file's directory), as it resolves
 * under the current generation.  1 if changes to path are seen from now on
 * (until the generation moves), 0 if they may not be (no inotify, a network
 * file system, no watch left).  No GIL. */
int pyr_notify_watch(pyr_notify_t *n, const char *path);

/* The generation of the watches: it moves when something on the way to a
 * watched path was created, deleted or renamed, or a watched directory went
 * away.  A path watched under an older generation may not be watched where
 * it now leads: watch it again.  0: no inotify.  Lock-free.  No GIL. */
uint64_t pyr_notify_gen(pyr_notify_t *n);

/* The current epoch: it moves whenever something happened to a watched
 * path (after the generation, when that moves too).  0 means "cannot tell
 * now": look at the files.  Lock-free, one system call.  No GIL. */
uint64_t pyr_notify_epoch(pyr_notify_t *n);

#endif
