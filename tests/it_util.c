/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_util.c: helpers shared by integration suites (see it_util.h).
 */
#define _GNU_SOURCE                 /* pipe2 */
#include "it_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void
it_touch(httpd_t *h, const char *name)
{
    static int64_t last;
    struct timespec now;
    int64_t ns;

    /* Now, to the nanosecond: forked tests that share a server go on from
     * where the previous one left off, whatever this process remembers. */
    clock_gettime(CLOCK_REALTIME, &now);
    ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    if (ns <= last) {
        ns = last + 1;
    }
    last = ns;
    ck_assert_int_eq(httpd_set_mtime(h, name, ns / 1000000000, (long)(ns % 1000000000)), 0);
}

void
it_put(httpd_t *h, const char *name, const char *text)
{
    ck_assert_int_eq(httpd_write(h, name, text), 0);
    it_touch(h, name);
}

void
it_chmod(httpd_t *h, const char *name, mode_t mode)
{
    char *p = httpd_path(h, name);

    ck_assert_msg(chmod(p, mode) == 0, "chmod %s", p);
    free(p);
}

char *
it_get(httpd_t *h, const char *path, long status)
{
    http_resp_t *r = http_get(h, path);
    char *body;

    ck_assert_msg(r->status == status, "%s: status %ld, want %ld: %.1500s", path,
                  r->status, status, r->body);
    body = strdup(r->body);
    http_free(r);
    return body;
}

static double
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

int
it_run(const char *const *argv, const char *const *envp, int timeout_ms, char **out)
{
    static const char *const clean_env[] = {"PATH=/usr/local/bin:/usr/bin:/bin",
                                            "LANG=C.UTF-8", NULL};
    const size_t cap = 4 << 20;
    double deadline = mono_ms() + timeout_ms;
    size_t len = 0;
    int fds[2], status = 0, exited = 0, timed_out = 0, eof = 0;
    pid_t pid;
    char *buf = malloc(cap + 128);

    ck_assert_ptr_nonnull(buf);
    buf[0] = '\0';
    *out = buf;
    if (pipe2(fds, O_CLOEXEC) != 0) {
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);

        /* Only async-signal-safe calls: the test may have threads. */
        setpgid(0, 0);
        if (nul < 0 || dup2(nul, 0) < 0 || dup2(fds[1], 1) < 0 || dup2(fds[1], 2) < 0) {
            _exit(126);
        }
        execve(argv[0], (char *const *)argv, (char *const *)(envp ? envp : clean_env));
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    /* Both sides set the group, so that a kill cannot come before it. */
    setpgid(pid, pid);
    while (!eof || !exited) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int left = (int)(deadline - mono_ms());

        if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
            exited = 1;
            /* What it started may hold the pipe open: end them. */
            kill(-pid, SIGKILL);
        }
        if (left <= 0) {
            timed_out = !exited;
            break;
        }
        if (eof) {
            usleep(10000);
            continue;
        }
        if (poll(&pfd, 1, left < 50 ? left : 50) > 0) {
            char tmp[8192];
            ssize_t n = read(fds[0], tmp, sizeof(tmp));

            if (n > 0) {
                size_t take = (size_t)n < cap - len ? (size_t)n : cap - len;

                memcpy(buf + len, tmp, take);
                len += take;
                buf[len] = '\0';
            }
            else if (n == 0 || errno != EINTR) {
                eof = 1;
            }
        }
    }
    close(fds[0]);
    if (!exited) {
        kill(-pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    if (timed_out) {
        snprintf(buf + len, 128, "\n[it_run: %s still running after %d ms: killed]\n",
                 argv[0], timeout_ms);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
