/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * spec.c: the "FILE[::CALLABLE]" argument of PyReloadHandler and PyReloadWSGI.
 */
#include "pyreload.h"

#include <apr_strings.h>
#include <string.h>

int
pyr_is_identifier(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    /* ASCII rules, plus any non-ASCII byte: Python accepts many non-ASCII
     * identifiers and the exact check happens at load (hasattr). */
    if (!*p || (*p >= '0' && *p <= '9')) {
        return 0;
    }
    for (; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p >= 0x80)) {
            return 0;
        }
    }
    return 1;
}

const char *
pyr_spec_parse(apr_pool_t *p, const char *arg, const char *default_callable, const char **file,
               const char **callable)
{
    const char *sep = NULL, *s;

    /* The last "::" splits, so a file name may itself contain "::". */
    for (s = strstr(arg, "::"); s; s = strstr(s + 1, "::")) {
        sep = s;
    }
    if (!sep) {
        *file = apr_pstrdup(p, arg);
        *callable = default_callable;
    }
    else {
        *file = apr_pstrmemdup(p, arg, (apr_size_t)(sep - arg));
        *callable = apr_pstrdup(p, sep + 2);
        if (!**callable) {
            return apr_psprintf(p,
                                "'%s': the callable after '::' is empty "
                                "(write FILE or FILE::CALLABLE)",
                                arg);
        }
        if (!pyr_is_identifier(*callable)) {
            return apr_psprintf(p, "'%s': '%s' is not a Python identifier", arg, *callable);
        }
    }
    if (!**file) {
        return apr_psprintf(p, "'%s': the file name is empty", arg);
    }
    return NULL;
}
