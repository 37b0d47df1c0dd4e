/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * readable.c: whether the server's User can read what the configuration
 * names, asked at start-up (and by `apache2 -t`, both run as root) so that
 * the answer names the user, rather than a 403 at the first request.
 */
#include "pyr_httpd.h"

#include "http_log.h"
#include "unixd.h"

#include <apr_strings.h>

#include <errno.h>
#include <grp.h>
#include <string.h>

APLOG_USE_MODULE(pyreload);

/* A file the server's User cannot read fails every request for it: say so
 * before the server starts (and in `apache2 -t`, which runs as root too),
 * naming the user, rather than at the first request.  Every PyReloadHandler
 * and PyReloadWSGI file; every PyReloadPath directory (read and search). */
int
pyr_readable_check(apr_pool_t *ptemp, const apr_array_header_t *configured,
                   const apr_array_header_t *dirs)
{
    const char *user = ap_unixd_config.user_name, *group;
    uid_t uid = ap_unixd_config.user_id;
    gid_t gid = ap_unixd_config.group_id, groups[256];
    int ngroups = (int)(sizeof(groups) / sizeof(groups[0]));
    int nh = configured ? configured->nelts : 0, n = nh + dirs->nelts, i, bad = 0;
    const char **paths;
    int *errs;
    struct group *gr;

    if (n == 0 || uid == (uid_t)-1) {
        return OK;
    }
    if (!user || getgrouplist(user, gid, groups, &ngroups) < 0) {
        groups[0] = gid; /* "#33", or too many groups: the primary one */
        ngroups = 1;
    }
    gr = getgrgid(gid);
    group = gr ? apr_pstrdup(ptemp, gr->gr_name) : apr_psprintf(ptemp, "#%ld", (long)gid);
    paths = apr_palloc(ptemp, sizeof(*paths) * (apr_size_t)n);
    errs = apr_pcalloc(ptemp, sizeof(*errs) * (apr_size_t)n);
    for (i = 0; i < nh; i++) {
        paths[i] = APR_ARRAY_IDX(configured, i, const pyr_handler_t *)->path;
    }
    for (i = nh; i < n; i++) {
        paths[i] = APR_ARRAY_IDX(dirs, i - nh, const char *);
    }
    if (pyr_perm_readable_as(uid, gid, groups, ngroups, paths, n, errs) != 0) {
        return OK; /* not root: httpd will not change user either */
    }
    for (i = 0; i < n; i++) {
        const pyr_handler_t *h = i < nh ? APR_ARRAY_IDX(configured, i, const pyr_handler_t *) : NULL;

        if (errs[i] != EACCES && errs[i] != EPERM) {
            continue;
        }
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                     "PYR0703: %s%s%s%s: the server's User %s (group %s) cannot %s %s (%s); "
                     "give that user read access (chmod o+r%s, or chgrp %s and chmod g+r%s), "
                     "and search access (x) to every directory above it",
                     h ? h->directive : "PyReloadPath", h ? " (" : "", h ? h->where : "",
                     h ? ")" : "", user, group, h ? "read" : "read and search the directory",
                     paths[i], strerror(errs[i]), h ? "" : "x", group, h ? "" : "x");
        bad = 1;
    }
    return bad ? HTTP_INTERNAL_SERVER_ERROR : OK;
}
