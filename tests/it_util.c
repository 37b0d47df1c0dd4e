/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_util.c: helpers shared by integration suites (see it_util.h).
 */
#include "it_util.h"

#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

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
