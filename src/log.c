/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * log.c: how the engine speaks to whoever embeds it.  The engine never
 * writes a file itself: it hands lines to a pyr_logger_t, which httpd maps to
 * ap_log_error() and the unit tests to a buffer they can assert on.
 */
#include "pyreload.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
pyr_log_lines(const pyr_logger_t *log, int level, const char *prefix, const char *text)
{
    const char *p = text;

    if (!log || !log->log) {
        return;
    }
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *line = malloc(strlen(prefix) + n + 1);

        if (!line) {
            return;
        }
        memcpy(line, prefix, strlen(prefix));
        memcpy(line + strlen(prefix), p, n);
        line[strlen(prefix) + n] = '\0';
        log->log(log->baton, level, line);
        free(line);
        p += n;
        if (*p == '\n') {
            p++;
        }
    }
}

void
pyr_logf(const pyr_logger_t *log, int level, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;

    if (!log || !log->log) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log->log(log->baton, level, buf);
}
