/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_util.h: small helpers that integration suites share, on top of the
 * fixture (fixture.h).  They assert with check: call them from tests.
 */
#ifndef PYR_IT_UTIL_H
#define PYR_IT_UTIL_H

#include "fixture.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* Write name (relative to app/) and give it a fresh mtime, never the same
 * twice: a change whatever the file system's timestamp granularity. */
void it_put(httpd_t *h, const char *name, const char *text);

/* What touch does: a fresh mtime, never the same twice. */
void it_touch(httpd_t *h, const char *name);

/* chmod name (relative to app/). */
void it_chmod(httpd_t *h, const char *name, mode_t mode);

/* GET path, asserting the status; the body, malloc'd. */
char *it_get(httpd_t *h, const char *path, long status);

/* Run argv (argv[0] an absolute path) with envp (NULL: PATH and LANG only),
 * stdin from /dev/null, stdout and stderr into *out (malloc'd, never NULL;
 * the first 4 MiB).  It runs in a process group of its own, which is
 * SIGKILLed when it has exited (helpers it left behind, a browser's) or
 * when timeout_ms has passed.  Returns its exit status, or -1: not run,
 * killed by a signal, or timed out (then *out ends with a line saying so). */
int it_run(const char *const *argv, const char *const *envp, int timeout_ms,
           char **out);

/* GET path: 200 and exactly this body. */
#define it_expect(h, path, want)                                             \
    do {                                                                     \
        char *got_ = it_get(h, path, 200);                                   \
        ck_assert_msg(strcmp(got_, want) == 0, "%s: '%s', want '%s'", path,  \
                      got_, want);                                           \
        free(got_);                                                          \
    } while (0)

#endif /* PYR_IT_UTIL_H */
