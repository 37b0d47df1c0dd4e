/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * perm.c: whether a file is safe to run, in the spirit of suexec.
 *
 * A file that any user may write, or one that any user may swap for
 * another, must not become code in the server.  The path is resolved here
 * one name at a time, as the kernel does (symlinks followed, ".." taken
 * lexically from where the walk stands), and every directory a name is
 * looked up in is checked: writable by others without the sticky bit means
 * anyone can rename what it holds, so everything below it is theirs.
 * Directories with the sticky bit (/tmp) are accepted: others may add
 * names there but not replace ours.  Group write is accepted (deploy
 * groups): the rule is about "anyone", as the issue and suexec's o-w are.
 *
 * Also: whether the server's User may read a file at all, asked of the
 * kernel by a child process that takes that user's identity.
 *
 * No GIL, no httpd header: stat calls only (and that child).
 */
#include "pyreload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LINKS 40 /* the kernel's own limit (ELOOP) */

static int
others_may_replace(const struct stat *st)
{
    return S_ISDIR(st->st_mode) && (st->st_mode & S_IWOTH) && !(st->st_mode & S_ISVTX);
}

/* Prepend "head/" to the rest of the path still to resolve. */
static int
push_front(char *todo, size_t size, const char *head)
{
    size_t hl = strlen(head), tl = strlen(todo);

    if (hl + 1 + tl + 1 > size) {
        return ENAMETOOLONG;
    }
    memmove(todo + hl + 1, todo, tl + 1);
    memcpy(todo, head, hl);
    todo[hl] = '/';
    return 0;
}

static int
refuse_dir(char *msg, size_t len, const char *path, const char *dir, mode_t mode)
{
    if (strcmp(path, dir) == 0) {
        snprintf(msg, len,
                 "refusing to use %s: the directory is writable by any user "
                 "and has no sticky bit (mode %04o), so anyone could replace what it "
                 "holds; fix: chmod o-w %s (or chmod +t %s)",
                 path, (unsigned)(mode & 07777), dir, dir);
    }
    else {
        snprintf(msg, len,
                 "refusing to run %s: the directory %s is writable by any "
                 "user and has no sticky bit (mode %04o), so anyone could replace the "
                 "file; fix: chmod o-w %s (or chmod +t %s)",
                 path, dir, (unsigned)(mode & 07777), dir, dir);
    }
    return 1;
}

int
pyr_perm_check(const char *path, char *msg, size_t len)
{
    char done[PATH_MAX + 1];     /* resolved so far: a directory */
    char todo[2 * PATH_MAX + 2]; /* still to resolve */
    char cand[PATH_MAX + 1];
    struct stat dst, st;
    int have_dst = 0, links = 0, rv;

    msg[0] = '\0';
    done[0] = '\0'; /* "" is "/" */
    todo[0] = '\0';
    if (path[0] != '/') {
        if (!getcwd(cand, sizeof(cand))) {
            return errno;
        }
        if ((size_t)snprintf(todo, sizeof(todo), "%s/%s", cand, path) >= sizeof(todo)) {
            return ENAMETOOLONG;
        }
    }
    else if ((size_t)snprintf(todo, sizeof(todo), "%s", path) >= sizeof(todo)) {
        return ENAMETOOLONG;
    }

    for (;;) {
        char *comp = todo, *rest;
        size_t clen;

        while (*comp == '/') {
            comp++;
        }
        if (!*comp) {
            break;
        }
        clen = strcspn(comp, "/");
        rest = comp + clen;
        while (*rest == '/') {
            rest++;
        }
        if (clen == 1 && comp[0] == '.') {
            memmove(todo, rest, strlen(rest) + 1);
            continue;
        }
        if (clen == 2 && comp[0] == '.' && comp[1] == '.') {
            /* Its meaning is fixed whoever may write the directory. */
            char *slash = strrchr(done, '/');

            if (slash) {
                *slash = '\0';
            }
            have_dst = 0;
            memmove(todo, rest, strlen(rest) + 1);
            continue;
        }
        /* A name is looked up in done: whoever may rename its entries
         * decides what the name is. */
        if (!have_dst) {
            if (stat(done[0] ? done : "/", &dst) != 0) {
                return errno;
            }
            have_dst = 1;
        }
        if (others_may_replace(&dst)) {
            return refuse_dir(msg, len, path, done[0] ? done : "/", dst.st_mode);
        }
        if (strlen(done) + 1 + clen + 1 > sizeof(cand)) {
            return ENAMETOOLONG;
        }
        {
            size_t dl = strlen(done);

            memcpy(cand, done, dl);
            cand[dl] = '/';
            memcpy(cand + dl + 1, comp, clen);
            cand[dl + 1 + clen] = '\0';
        }
        if (lstat(cand, &st) != 0) {
            return errno;
        }
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX + 1];
            ssize_t n;

            if (++links > MAX_LINKS) {
                return ELOOP;
            }
            if ((n = readlink(cand, target, PATH_MAX)) < 0) {
                return errno;
            }
            target[n] = '\0';
            memmove(todo, rest, strlen(rest) + 1);
            if ((rv = push_front(todo, sizeof(todo), target)) != 0) {
                return rv;
            }
            if (target[0] == '/') {
                done[0] = '\0';
                have_dst = 0;
            }
            continue;
        }
        memmove(todo, rest, strlen(rest) + 1);
        if (todo[strspn(todo, "/")] != '\0') {
            if (!S_ISDIR(st.st_mode)) {
                return ENOTDIR;
            }
            strcpy(done, cand);
            dst = st;
            continue;
        }
        /* The last name: the file itself, or a directory (PyReloadPath). */
        if (S_ISDIR(st.st_mode)) {
            return others_may_replace(&st) ? refuse_dir(msg, len, path, cand, st.st_mode) : 0;
        }
        if (st.st_mode & S_IWOTH) {
            if (strcmp(cand, path) == 0) {
                snprintf(msg, len,
                         "refusing to run %s: it is writable by any user "
                         "(mode %04o); fix: chmod o-w %s",
                         path, (unsigned)(st.st_mode & 07777), cand);
            }
            else {
                snprintf(msg, len,
                         "refusing to run %s: %s is writable by any user "
                         "(mode %04o); fix: chmod o-w %s",
                         path, cand, (unsigned)(st.st_mode & 07777), cand);
            }
            return 1;
        }
        return 0;
    }
    return 0; /* "/" itself */
}

int
pyr_perm_self_writable(const char *path, char *msg, size_t len)
{
    char dir[PATH_MAX + 1];
    const char *slash = strrchr(path, '/');

    msg[0] = '\0';
    /* httpd never runs its children as root, and root may write anything. */
    if (geteuid() == 0) {
        return 0;
    }
    if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == 0) {
        snprintf(msg, len,
                 "%s is writable by the user the server runs as (uid %ld): "
                 "code running in the server could change it; fix: let another user "
                 "own it, or take that user's write permission away",
                 path, (long)geteuid());
        return 1;
    }
    if (slash && (size_t)(slash - path) < sizeof(dir)) {
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
        if (faccessat(AT_FDCWD, dir, W_OK, AT_EACCESS) == 0) {
            snprintf(msg, len,
                     "%s: its directory %s is writable by the user the server "
                     "runs as (uid %ld): code running in the server could replace it; "
                     "fix: take that user's write permission on %s away",
                     path, dir, (long)geteuid(), dir);
            return 1;
        }
    }
    return 0;
}

int
pyr_perm_readable_as(uid_t uid, gid_t gid, const gid_t *groups, int ngroups,
                     const char *const *paths, int n, int *errs)
{
    int fds[2], i, status;
    pid_t pid;
    ssize_t got = 0;

    if (geteuid() != 0 || uid == 0 || n <= 0) {
        return -1;
    }
    if (pipe(fds) != 0) {
        return -1;
    }
    /* A child takes the user's identity, so that the kernel answers for
     * every rule it applies (modes, ACLs, each directory's search right);
     * the caller's own credentials are never touched. */
    pid = fork();
    if (pid == 0) {
        close(fds[0]);
        if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
            _exit(1);
        }
        for (i = 0; i < n; i++) {
            struct stat st;
            int mode = R_OK, e;

            if (stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode)) {
                mode |= X_OK;
            }
            e = access(paths[i], mode) == 0 ? 0 : errno;
            if (write(fds[1], &e, sizeof(e)) != (ssize_t)sizeof(e)) {
                _exit(1);
            }
        }
        _exit(0);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    while (got < (ssize_t)(sizeof(int) * (size_t)n)) {
        ssize_t r = read(fds[0], (char *)errs + got, sizeof(int) * (size_t)n - (size_t)got);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += r;
    }
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return got == (ssize_t)(sizeof(int) * (size_t)n) && WIFEXITED(status) &&
                   WEXITSTATUS(status) == 0
               ? 0
               : -1;
}
