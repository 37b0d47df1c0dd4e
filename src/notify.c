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
 * What is watched is every directory whose change can alter what a path
 * resolves to: each directory the kernel's lookup of the path goes through
 * (the parent of every symlink on the way, the directories a symlink leads
 * to, the directory of the real file), each with the names looked up in it.
 * An inotify watch follows an inode, not a path: once `current` is
 * re-pointed, or the handler's directory is renamed away or deleted, the
 * inode watched is no longer on the way.  Such a change is always an event
 * on the way (a name looked up was created, deleted or renamed, or a watched
 * directory itself went: IN_DELETE_SELF, IN_MOVE_SELF, IN_IGNORED), and it
 * moves the generation: every path is resolved again and watched where it
 * now leads before any request trusts "no event" again.  Until then the
 * entries stat their files (cache.c).
 *
 * Read-your-writes holds: the kernel queues the event inside the writer's
 * own system call, so once a save has returned, a request that starts
 * afterwards finds the event pending, or a drain in progress (both mean
 * "sweep"), or the epoch that the draining thread bumped after the drain.
 *
 * Where inotify cannot see every writer (network file systems), or a watch
 * cannot be added, a path is reported as unwatched and stat'ed every time.
 */
#include "pyreload.h"
#include "pyr_notify.h"

#include <apr_hash.h>
#include <apr_strings.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define WATCH_MASK                                                                                 \
    (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE |            \
     IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)
/* Events that change what a name resolves to, not only what a file holds. */
#define MOVED_MASK (IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE)
/* The watched directory is gone from where it was: the watch is stale. */
#define STALE_MASK (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT)
#define MAX_LINKS  40

/* One inotify watch: a directory, and the names lookups go through in it. */
typedef struct wdir {
    int wd;
    char **names; /* malloc'd */
    int nnames, capnames;
} wdir_t;

/* During a rebuild, what one lookup found, for the next paths: every path
 * goes through the same few directories, and re-resolving them all after
 * each save cost 3 system calls per directory per path (a 10-line module's
 * reload was mostly that). */
typedef struct memo {
    char *path; /* malloc'd */
    int wd;     /* a directory watched: its watch, or -1 */
    int err;    /* an lstat: its errno, or 0 and st */
    struct stat st;
} memo_t;

/* A path the cache asked about. */
typedef struct wpath {
    uint64_t gen; /* the generation of its last resolution */
    int ok;       /* every directory on its way is watched */
} wpath_t;

struct pyr_notify {
    int fd;               /* -1: not available, always stat */
    uint64_t epoch;       /* atomic: bumped after a drain that saw something */
    uint64_t gen;         /* atomic, changed under lock: resolutions may differ */
    int draining;         /* atomic */
    pthread_mutex_t lock; /* everything below, and draining */
    uint64_t built;       /* the generation the watches were rebuilt for */
    apr_pool_t *pool;
    apr_hash_t *watches; /* int wd -> wdir_t (malloc'd) */
    apr_hash_t *paths;   /* path -> wpath_t (pool: the set only grows) */
    int rebuilding;      /* the memos below are valid */
    memo_t *dirs, *stats;
    int ndirs, capdirs, nstats, capstats;
};

pyr_notify_t *
pyr_notify_create(apr_pool_t *pool)
{
    pyr_notify_t *n = apr_pcalloc(pool, sizeof(*n));

    n->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    n->epoch = 1;
    n->gen = 1;
    n->built = 1;
    n->pool = pool;
    n->watches = apr_hash_make(pool);
    n->paths = apr_hash_make(pool);
    pthread_mutex_init(&n->lock, NULL);
    return n;
}

static void
wdir_free(wdir_t *w)
{
    int i;

    for (i = 0; i < w->nnames; i++) {
        free(w->names[i]);
    }
    free(w->names);
    free(w);
}

/* Forget a watch (and remove it from the kernel unless it is gone there). */
static void
drop_watch(pyr_notify_t *n, wdir_t *w, int in_kernel)
{
    apr_hash_set(n->watches, &w->wd, sizeof(w->wd), NULL);
    if (in_kernel) {
        inotify_rm_watch(n->fd, w->wd);
    }
    wdir_free(w);
}

void
pyr_notify_destroy(pyr_notify_t *n)
{
    apr_hash_index_t *hi;

    if (!n || n->fd < 0) {
        return;
    }
    while ((hi = apr_hash_first(NULL, n->watches))) {
        drop_watch(n, apr_hash_this_val(hi), 0);
    }
    close(n->fd);
    n->fd = -1;
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
    case 0x6969:     /* NFS */
    case 0x517B:     /* SMB */
    case 0xFF534D42: /* CIFS */
    case 0xFE534D42: /* SMB2 */
    case 0x65735546: /* FUSE */
    case 0x00C36400: /* Ceph */
    case 0x01021997: /* 9p */
    case 0x0BD00BD0: /* Lustre */
    case 0x47504653: /* GPFS */ return 1;
    }
    return 0;
}

static memo_t *
memo_find(memo_t *m, int count, const char *path)
{
    int i;

    for (i = 0; i < count; i++) {
        if (strcmp(m[i].path, path) == 0) {
            return &m[i];
        }
    }
    return NULL;
}

/* A new memo of path in *m, or NULL (out of memory: not remembered). */
static memo_t *
memo_add(memo_t **m, int *count, int *cap, const char *path)
{
    if (*count == *cap) {
        int bigger = *cap ? *cap * 2 : 16;
        memo_t *more = realloc(*m, (size_t)bigger * sizeof(**m));

        if (!more) {
            return NULL;
        }
        *m = more;
        *cap = bigger;
    }
    memset(&(*m)[*count], 0, sizeof(**m));
    if (!((*m)[*count].path = strdup(path))) {
        return NULL;
    }
    return &(*m)[(*count)++];
}

static void
memo_clear(memo_t **m, int *count, int *cap)
{
    while (*count > 0) {
        free((*m)[--*count].path);
    }
    free(*m);
    *m = NULL;
    *cap = 0;
}

/* lstat(2), answered from the memo during a rebuild. */
static int
memo_lstat(pyr_notify_t *n, const char *path, struct stat *st)
{
    memo_t *m = n->rebuilding ? memo_find(n->stats, n->nstats, path) : NULL;
    int err;

    if (m) {
        *st = m->st;
        return m->err ? -1 : 0;
    }
    err = lstat(path, st) == 0 ? 0 : errno ? errno : EIO;
    if (n->rebuilding && (m = memo_add(&n->stats, &n->nstats, &n->capstats, path))) {
        m->err = err;
        m->st = *st;
    }
    return err ? -1 : 0;
}

/* Watch the directory now at dir (always asked again, once per rebuild: the
 * inode there may not be the one watched before) and note that name is
 * looked up in it.  0, or -1 if it cannot be watched.  Caller holds
 * n->lock. */
static int
watch_lookup(pyr_notify_t *n, const char *dir, const char *name)
{
    memo_t *m = n->rebuilding ? memo_find(n->dirs, n->ndirs, dir) : NULL;
    wdir_t *w;
    int wd, i;

    if (m) {
        wd = m->wd;
    }
    else {
        wd = remote_fs(dir) ? -1 : inotify_add_watch(n->fd, dir, WATCH_MASK | IN_ONLYDIR);
        if (n->rebuilding && (m = memo_add(&n->dirs, &n->ndirs, &n->capdirs, dir))) {
            m->wd = wd;
        }
    }
    if (wd < 0) {
        return -1;
    }
    w = apr_hash_get(n->watches, &wd, sizeof(wd));
    if (!w) {
        if (!(w = calloc(1, sizeof(*w)))) {
            inotify_rm_watch(n->fd, wd);
            return -1;
        }
        w->wd = wd;
        apr_hash_set(n->watches, &w->wd, sizeof(w->wd), w);
    }
    for (i = 0; i < w->nnames; i++) {
        if (strcmp(w->names[i], name) == 0) {
            return 0;
        }
    }
    if (w->nnames == w->capnames) {
        int cap = w->capnames ? w->capnames * 2 : 4;
        char **bigger = realloc(w->names, (size_t)cap * sizeof(char *));

        if (!bigger) {
            return -1;
        }
        w->names = bigger;
        w->capnames = cap;
    }
    if (!(w->names[w->nnames] = strdup(name))) {
        return -1;
    }
    w->nnames++;
    return 0;
}

/* Follow path as the kernel's lookup does, component by component, watching
 * each directory a name is looked up in.  1 if every one is watched (a
 * missing name counts: its creation is an event in a watched directory).
 * Caller holds n->lock. */
static int
resolve(pyr_notify_t *n, const char *path)
{
    char dir[PATH_MAX], rest[PATH_MAX], next[PATH_MAX], target[PATH_MAX];
    int links = 0;

    if (path[0] != '/' || strlen(path) >= sizeof(rest)) {
        return 0;
    }
    strcpy(dir, "/"); /* real: no symlink in it */
    strcpy(rest, path);
    for (;;) {
        char *name = rest, *end, *tail;
        struct stat st;
        ssize_t len;

        while (*name == '/') {
            name++;
        }
        if (!*name) {
            return 1;
        }
        end = strchr(name, '/');
        tail = end ? end + 1 : name + strlen(name);
        if (end) {
            *end = '\0';
        }
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
            if (name[1] == '.') {
                char *slash = strrchr(dir, '/');

                slash[slash == dir ? 1 : 0] = '\0';
            }
            memmove(rest, tail, strlen(tail) + 1);
            continue;
        }
        if (watch_lookup(n, dir, name) < 0) {
            return 0;
        }
        if (snprintf(next, sizeof(next), "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", name) >=
            (int)sizeof(next)) {
            return 0;
        }
        if (memo_lstat(n, next, &st) != 0) {
            return 1;
        }
        if (S_ISLNK(st.st_mode)) {
            if (++links > MAX_LINKS || (len = readlink(next, target, sizeof(target) - 1)) <= 0) {
                return 0;
            }
            target[len] = '\0';
            if (strlen(target) + strlen(tail) + 2 > sizeof(rest)) {
                return 0;
            }
            /* The link's target, then what followed the link. */
            memmove(rest + len + 1, tail, strlen(tail) + 1);
            memcpy(rest, target, (size_t)len);
            rest[len] = '/';
            if (target[0] == '/') {
                strcpy(dir, "/");
            }
            continue;
        }
        if (!*tail || !S_ISDIR(st.st_mode)) {
            return 1; /* the file itself, or a lookup that fails here */
        }
        strcpy(dir, next);
        memmove(rest, tail, strlen(tail) + 1);
    }
}

/* After the generation moved: resolve every path again, and remove the
 * watches that no path goes through any more.  Caller holds n->lock. */
static void
rebuild(pyr_notify_t *n, uint64_t gen)
{
    apr_hash_index_t *hi;

    for (hi = apr_hash_first(NULL, n->watches); hi; hi = apr_hash_next(hi)) {
        wdir_t *w = apr_hash_this_val(hi);

        while (w->nnames > 0) {
            free(w->names[--w->nnames]);
        }
    }
    n->rebuilding = 1;
    for (hi = apr_hash_first(NULL, n->paths); hi; hi = apr_hash_next(hi)) {
        wpath_t *p = apr_hash_this_val(hi);

        p->ok = resolve(n, apr_hash_this_key(hi));
        p->gen = gen;
    }
    n->rebuilding = 0;
    memo_clear(&n->dirs, &n->ndirs, &n->capdirs);
    memo_clear(&n->stats, &n->nstats, &n->capstats);
    for (hi = apr_hash_first(NULL, n->watches); hi; hi = apr_hash_next(hi)) {
        wdir_t *w = apr_hash_this_val(hi);

        if (w->nnames == 0) {
            drop_watch(n, w, 1); /* APR allows deleting the current entry */
        }
    }
    n->built = gen;
}

int
pyr_notify_watch(pyr_notify_t *n, const char *path)
{
    wpath_t *p;
    uint64_t gen;
    int ok;

    if (!n || n->fd < 0) {
        return 0;
    }
    pthread_mutex_lock(&n->lock);
    gen = __atomic_load_n(&n->gen, __ATOMIC_SEQ_CST);
    if (n->built != gen) {
        rebuild(n, gen);
    }
    p = apr_hash_get(n->paths, path, APR_HASH_KEY_STRING);
    if (!p) {
        p = apr_pcalloc(n->pool, sizeof(*p));
        apr_hash_set(n->paths, apr_pstrdup(n->pool, path), APR_HASH_KEY_STRING, p);
    }
    if (p->gen != gen) {
        p->ok = resolve(n, path);
        p->gen = gen;
    }
    ok = p->ok;
    pthread_mutex_unlock(&n->lock);
    return ok;
}

uint64_t
pyr_notify_gen(pyr_notify_t *n)
{
    return n && n->fd >= 0 ? __atomic_load_n(&n->gen, __ATOMIC_SEQ_CST) : 0;
}

/* Read every pending event.  1 if one may change what a watched path
 * resolves to, or events were lost; 2 if one only changed a file on the
 * way; 0 if none concerns a name we look up.  Caller holds n->lock. */
static int
drain(pyr_notify_t *n)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t got;
    int seen = 0;

    while ((got = read(n->fd, buf, sizeof(buf))) > 0) {
        char *p = buf;

        while (p + sizeof(struct inotify_event) <= buf + got) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            wdir_t *w = apr_hash_get(n->watches, &ev->wd, sizeof(ev->wd));
            int i;

            p += sizeof(struct inotify_event) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                seen = 1;
                continue;
            }
            if (!w) {
                continue; /* a watch dropped already */
            }
            if (ev->mask & STALE_MASK) {
                drop_watch(n, w, !(ev->mask & IN_IGNORED));
                seen = 1;
                continue;
            }
            for (i = 0; ev->len && i < w->nnames; i++) {
                if (strcmp(w->names[i], ev->name) == 0) {
                    seen = (ev->mask & MOVED_MASK) ? 1 : seen ? seen : 2;
                    break;
                }
            }
        }
    }
    return seen;
}

uint64_t
pyr_notify_epoch(pyr_notify_t *n)
{
    int pending = 0;

    if (!n || n->fd < 0 || ioctl(n->fd, FIONREAD, &pending) != 0) {
        return 0;
    }
    if (pending > 0) {
        uint64_t epoch;
        int seen;

        if (pthread_mutex_trylock(&n->lock) != 0) {
            return 0;
        }
        __atomic_store_n(&n->draining, 1, __ATOMIC_SEQ_CST);
        seen = drain(n);
        /* The generation first: whoever sees the new epoch re-watches. */
        if (seen == 1) {
            __atomic_add_fetch(&n->gen, 1, __ATOMIC_SEQ_CST);
        }
        /* What was drained is accounted for in this epoch (events about
         * names nobody looks up, as in a busy /tmp, leave it as it was);
         * what comes later is pending again. */
        epoch = seen ? __atomic_add_fetch(&n->epoch, 1, __ATOMIC_SEQ_CST)
                     : __atomic_load_n(&n->epoch, __ATOMIC_SEQ_CST);
        __atomic_store_n(&n->draining, 0, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&n->lock);
        return epoch;
    }
    /* An empty queue may be one another thread is draining right now. */
    if (__atomic_load_n(&n->draining, __ATOMIC_SEQ_CST)) {
        return 0;
    }
    return __atomic_load_n(&n->epoch, __ATOMIC_SEQ_CST);
}
