/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * notify.c: knowing cheaply that nothing happened.
 *
 * The stat signature stays the only judge of "this file changed", but a
 * handler with twenty modules would pay twenty stats per request.  One
 * inotify instance per process watches the directories of every closure; a
 * request asks the kernel whether any event is pending (one ioctl) and skips
 * its stat sweep when nothing happened since its last clean sweep.
 *
 * Read-your-writes holds: the kernel queues the event inside the writer's
 * own system call, so once a save has returned, a request that starts
 * afterwards finds the event pending, or a drain in progress (both mean
 * "sweep"), or the epoch that the draining thread bumped after the drain.
 *
 * Where inotify cannot see every writer (network file systems), or a watch
 * cannot be added, a closure is marked as unwatched and stat'ed every time.
 */
#include "pyreload.h"
#include "notify.h"

#include <apr_hash.h>
#include <apr_strings.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#define WATCH_MASK (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO \
                    | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)

struct pyr_notify {
    int fd;                         /* -1: not available, always stat */
    uint64_t epoch;                 /* atomic: bumped after every drain */
    int draining;                   /* atomic */
    pthread_mutex_t lock;           /* the directory table and draining */
    apr_pool_t *pool;
    apr_hash_t *dirs;               /* dir -> (void *)1 watched, (void *)2 cannot be */
};

pyr_notify_t *
pyr_notify_create(apr_pool_t *pool)
{
    pyr_notify_t *n = apr_pcalloc(pool, sizeof(*n));

    n->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    n->epoch = 1;
    n->pool = pool;
    n->dirs = apr_hash_make(pool);
    pthread_mutex_init(&n->lock, NULL);
    return n;
}

void
pyr_notify_destroy(pyr_notify_t *n)
{
    if (n && n->fd >= 0) {
        close(n->fd);
        n->fd = -1;
    }
}

/* Writers that inotify does not see: other machines' clients. */
static int
remote_fs(const char *dir)
{
    struct statfs sf;

    if (statfs(dir, &sf) != 0) {
        return 1;
    }
    switch ((unsigned long)sf.f_type) {
    case 0x6969:        /* NFS */
    case 0x517B:        /* SMB */
    case 0xFF534D42:    /* CIFS */
    case 0xFE534D42:    /* SMB2 */
    case 0x65735546:    /* FUSE */
    case 0x00C36400:    /* Ceph */
    case 0x01021997:    /* 9p */
    case 0x0BD00BD0:    /* Lustre */
    case 0x47504653:    /* GPFS */
        return 1;
    }
    return 0;
}

/* 1 if dir is watched (adding it now if need be).  Caller holds n->lock. */
static int
watch_dir(pyr_notify_t *n, const char *dir)
{
    void *state = apr_hash_get(n->dirs, dir, APR_HASH_KEY_STRING);

    if (!state) {
        int ok = !remote_fs(dir) && inotify_add_watch(n->fd, dir, WATCH_MASK) >= 0;

        state = ok ? (void *)1 : (void *)2;
        apr_hash_set(n->dirs, apr_pstrdup(n->pool, dir), APR_HASH_KEY_STRING, state);
    }
    return state == (void *)1;
}

static int
watch_parent(pyr_notify_t *n, const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');

    if (!slash || (size_t)(slash - path) >= sizeof(dir)) {
        return 0;
    }
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    return watch_dir(n, slash == path ? "/" : dir);
}

int
pyr_notify_watch(pyr_notify_t *n, const char *path)
{
    char real[PATH_MAX];
    int ok;

    if (!n || n->fd < 0) {
        return 0;
    }
    pthread_mutex_lock(&n->lock);
    /* The name's directory sees saves, renames and symlink swaps; the real
     * file's directory sees edits through a symlink. */
    ok = watch_parent(n, path);
    if (ok && realpath(path, real) && strcmp(real, path) != 0) {
        ok = watch_parent(n, real);
    }
    pthread_mutex_unlock(&n->lock);
    return ok;
}

uint64_t
pyr_notify_epoch(pyr_notify_t *n)
{
    int pending = 0;

    if (!n || n->fd < 0 || ioctl(n->fd, FIONREAD, &pending) != 0) {
        return 0;
    }
    if (pending > 0) {
        if (pthread_mutex_trylock(&n->lock) == 0) {
            char buf[4096];

            __atomic_store_n(&n->draining, 1, __ATOMIC_SEQ_CST);
            while (read(n->fd, buf, sizeof(buf)) > 0) {
                /* the events themselves do not matter, only that they came */
            }
            __atomic_add_fetch(&n->epoch, 1, __ATOMIC_SEQ_CST);
            __atomic_store_n(&n->draining, 0, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&n->lock);
        }
        return 0;
    }
    /* An empty queue may be one another thread is draining right now. */
    if (__atomic_load_n(&n->draining, __ATOMIC_SEQ_CST)) {
        return 0;
    }
    return __atomic_load_n(&n->epoch, __ATOMIC_SEQ_CST);
}
