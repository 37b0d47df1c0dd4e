/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * source.c: what "the file changed" means, and reading a file that may be
 * being written while we read it.
 *
 * stat(2) rather than apr_stat(): APR keeps mtime in microseconds, and two
 * saves within one microsecond-rounded tick, or an editor that restores the
 * mtime, must still count as a change.
 */
#include "pyreload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A writer that truncates then writes can be caught in between; a few quick
 * re-reads get the finished file without publishing a torn one. */
#define READ_ATTEMPTS   5
#define READ_RETRY_USEC 1000
/* An empty read is looked at again for up to this long (a loaded machine can
 * take milliseconds between a writer's truncate and its write). */
#define EMPTY_ATTEMPTS   25
#define EMPTY_RETRY_USEC 2000
/* A tool that deletes and re-creates a file (git checkout, tar x) leaves it
 * absent for a moment; one that creates it 0600 and then chmods it
 * (install, tar) leaves it unreadable: looked at again for up to this long
 * before the absence is believed. */
#define SETTLE_MSEC       100
#define SETTLE_RETRY_USEC 2000

static void
sig_from_stat(const struct stat *st, pyr_sig_t *sig)
{
    memset(sig, 0, sizeof(*sig));
    sig->dev = st->st_dev;
    sig->ino = st->st_ino;
    sig->size = st->st_size;
    sig->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    sig->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

int
pyr_sig_stat(const char *path, pyr_sig_t *sig)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        return errno;
    }
    if (!S_ISREG(st.st_mode)) {
        return EISDIR;
    }
    sig_from_stat(&st, sig);
    return 0;
}

int
pyr_sig_equal(const pyr_sig_t *a, const pyr_sig_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

static int
transient(int rv)
{
    return rv == ENOENT || rv == ENOTDIR || rv == EACCES;
}

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 while a transient failure may still be waited out (since *start). */
static int
settling(int rv, int64_t *start)
{
    if (!transient(rv)) {
        return 0;
    }
    if (!*start) {
        *start = now_ms();
    }
    else if (now_ms() - *start >= SETTLE_MSEC) {
        return 0;
    }
    usleep(SETTLE_RETRY_USEC);
    return 1;
}

int
pyr_sig_stat_settled(const char *path, pyr_sig_t *sig)
{
    int64_t start = 0;
    int rv;

    while ((rv = pyr_sig_stat(path, sig)) != 0 && settling(rv, &start)) {
    }
    return rv;
}

/* One attempt: 0 and a stable read, EAGAIN if the file moved under us. */
static int
read_once(const char *path, char **data, size_t *len, pyr_sig_t *sig)
{
    struct stat st;
    pyr_sig_t after;
    size_t cap, n = 0;
    char *buf;
    int fd, rv;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    if (fstat(fd, &st) != 0) {
        rv = errno;
        close(fd);
        return rv;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return EISDIR;
    }
    sig_from_stat(&st, sig);
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return ENOMEM;
    }
    for (;;) {
        ssize_t got;

        if (n == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger) {
                free(buf);
                close(fd);
                return ENOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
        got = read(fd, buf + n, cap - n);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            rv = errno;
            free(buf);
            close(fd);
            return rv;
        }
        if (got == 0) {
            break;
        }
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    /* Same inode, same size, same times before and after, and the path still
     * names it: nothing wrote while we read, and no rename replaced it. */
    if ((off_t)n != sig->size || pyr_sig_stat(path, &after) != 0 || !pyr_sig_equal(sig, &after)) {
        free(buf);
        return EAGAIN;
    }
    *data = buf;
    *len = n;
    return 0;
}

int
pyr_source_read(const char *path, char **data, size_t *len, pyr_sig_t *sig)
{
    int torn = 0, empty = 0, rv;
    int64_t start = 0;

    for (;;) {
        rv = read_once(path, data, len, sig);
        if (settling(rv, &start)) {
            continue;
        }
        if (rv == EAGAIN) {
            if (++torn >= READ_ATTEMPTS) {
                return rv;
            }
            usleep(READ_RETRY_USEC);
            continue;
        }
        /* An empty file is stable, but it is also what open(path, "w")
         * leaves until the write lands: look again before believing it. */
        if (rv == 0 && *len == 0 && ++empty < EMPTY_ATTEMPTS) {
            free(*data);
            *data = NULL;
            usleep(EMPTY_RETRY_USEC);
            continue;
        }
        if (rv == 0) {
            pyr_sha256(*data, *len, sig->sha256);
            sig->has_sha256 = 1;
        }
        return rv;
    }
}
