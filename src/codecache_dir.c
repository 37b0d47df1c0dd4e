/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * codecache_dir.c: the httpd side of the code cache (the engine's is
 * codecache.c): PyReloadCodeCache DIR|Off, and the directory, made and
 * vetted before any child runs.
 *
 *   PyReloadCodeCache /var/cache/apache2/pyreload   # default: DefaultRuntimeDir/pyreload-code
 *
 * The children read the code they find there with marshal, which trusts
 * its input: so the directory must be writable by no one but the server's
 * User (or root).  At start-up (and `apache2 -t`) an existing directory
 * that others may write, sticky or not, or whose owner is neither root nor
 * User, or that lies where others may rename it away (an ancestor writable
 * by others without the sticky bit), stops the server with a message
 * naming the fix.  A missing one is made (post_config, in the parent, as
 * root: mode 0700, owned by User), as mod_cgid makes its socket directory.
 *
 * Locking: configuration time only (one thread), and child_init.
 */
#include "pyr_httpd.h"
#include "pyr_codecache.h"

#include "http_core.h"
#include "http_log.h"
#include "unixd.h"

#include <apr_strings.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

APLOG_USE_MODULE(pyreload);

extern module AP_MODULE_DECLARE_DATA pyreload_module;

#define DEFAULT_NAME "pyreload-code"

static pyr_srv_conf_t *
srv_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &pyreload_module);
}

const char *
pyr_codecache_cmd(cmd_parms *cmd, void *mconfig, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    pyr_srv_conf_t *sc = srv_conf(cmd->server);

    if (err) {
        return apr_pstrcat(cmd->pool, err,
                           ": the code cache is process-wide (one per server), so "
                           "PyReloadCodeCache belongs at server level",
                           NULL);
    }
    if (!strcasecmp(arg, "Off")) {
        sc->codecache = "";
        return NULL;
    }
    if (!*arg || !(sc->codecache = ap_server_root_relative(cmd->pool, arg))) {
        return apr_psprintf(cmd->pool, "%s takes a directory or Off, not '%s'", cmd->cmd->name,
                            arg);
    }
    return NULL;
}

/* The uid the children run as: User when the parent is root. */
static uid_t
children_uid(void)
{
    return geteuid() == 0 ? ap_unixd_config.user_id : geteuid();
}

static const char *
user_name(apr_pool_t *p, uid_t uid)
{
    struct passwd *pw = getpwuid(uid);

    return pw ? apr_pstrdup(p, pw->pw_name) : apr_psprintf(p, "uid %ld", (long)uid);
}

/* NULL when dir (which exists) may hold the cache; else why not, and the
 * fix. */
static const char *
unsafe(apr_pool_t *p, const char *dir)
{
    uid_t user = children_uid();
    struct stat st;
    char msg[1024];

    if (stat(dir, &st) != 0) {
        return apr_psprintf(p, "%s: %s", dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        return apr_psprintf(p, "%s is not a directory", dir);
    }
    if (st.st_mode & S_IWOTH) {
        return apr_psprintf(p,
                            "%s is writable by others (mode %04o): they could put code "
                            "there for the server to run; chmod 0700 %s",
                            dir, (unsigned)(st.st_mode & 07777), dir);
    }
    if (st.st_uid != 0 && st.st_uid != user) {
        return apr_psprintf(p,
                            "%s is owned by %s, neither root nor the server's User (%s): "
                            "chown %s %s, or remove it and let mod_pyreload make it",
                            dir, user_name(p, st.st_uid), user_name(p, user), user_name(p, user),
                            dir);
    }
    /* Its ancestors: one that others may write could swap it for theirs. */
    if (pyr_perm_check(dir, msg, sizeof(msg)) == 1) {
        return apr_pstrdup(p, msg);
    }
    return NULL;
}

/* Whether the children (User and its primary group; a supplementary
 * group is not looked at) may make files in dir. */
static int
children_may_write(const char *dir)
{
    uid_t user = children_uid();
    struct stat st;

    if (stat(dir, &st) != 0 || user == 0) {
        return 1;
    }
    return (st.st_uid == user && (st.st_mode & S_IWUSR)) ||
           (st.st_gid == (geteuid() == 0 ? ap_unixd_config.group_id : getegid()) &&
            (st.st_mode & S_IWGRP));
}

static void
refuse(const char *why)
{
    ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                 "PYR0610: PyReloadCodeCache: %s; or PyReloadCodeCache Off", why);
}

/* `apache2 -k stop` (or graceful-stop) reads the configuration, and its
 * check_config failing would leave the server running: a stop is not
 * refused for a directory that the running server no longer trusts.  httpd
 * takes -k out of process->argv (ap_mpm_rewrite_args), so the command line
 * is read from /proc. */
static int
stopping(void)
{
    char buf[4096], *p, *end;
    ssize_t n = 0;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
    }
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    for (p = buf, end = buf + n; p < end; p += strlen(p) + 1) {
        const char *k = NULL;

        if (!strcmp(p, "-k") && p + 3 < end) {
            k = p + 3; /* the next word */
        }
        else if (!strncmp(p, "-k", 2)) {
            k = p + 2;
        }
        if (k) {
            return !strcmp(k, "stop") || !strcmp(k, "graceful-stop");
        }
    }
    return 0;
}

/* Where the cache is (default filled in: the runtime directory is known
 * once the configuration is read), and whether what is there now is safe. */
int
pyr_codecache_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                           server_rec *s)
{
    pyr_srv_conf_t *sc = srv_conf(s);
    const char *why;
    struct stat st;

    if (!sc->codecache) {
        sc->codecache = ap_runtime_dir_relative(pconf, DEFAULT_NAME);
    }
    if (!sc->codecache || !*sc->codecache) {
        return OK;
    }
    if ((stat(sc->codecache, &st) != 0 && errno == ENOENT) || stopping()) {
        return OK; /* made in post_config; or no child will start */
    }
    if ((why = unsafe(ptemp, sc->codecache))) {
        refuse(why);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

/* Make the directory if it is missing: 0700, the children's. */
int
pyr_codecache_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    pyr_srv_conf_t *sc = srv_conf(s);
    const char *dir = sc->codecache, *why;

    if (!dir || !*dir) {
        return OK;
    }
    if (mkdir(dir, 0700) == 0) {
        if ((geteuid() == 0 && chown(dir, ap_unixd_config.user_id, ap_unixd_config.group_id) != 0) ||
            chmod(dir, 0700) != 0) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, errno, NULL,
                         "PYR0611: PyReloadCodeCache: cannot give %s to the server's User (%s)",
                         dir, user_name(ptemp, children_uid()));
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    else if (errno != EEXIST) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, errno, NULL,
                     "PYR0611: PyReloadCodeCache: cannot make %s (its parent must exist); or "
                     "PyReloadCodeCache Off",
                     dir);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* Again: made by us, or by someone else since check_config. */
    if ((why = unsafe(ptemp, dir))) {
        refuse(why);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* Safe but root's alone: the children can read it, not fill it. */
    if (!children_may_write(dir) && ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "PYR0612: PyReloadCodeCache: %s is not writable by the server's User (%s): "
                     "the code cache will only be read; chown %s %s",
                     dir, user_name(ptemp, children_uid()), user_name(ptemp, children_uid()), dir);
    }
    return OK;
}

void
pyr_codecache_child_init(server_rec *s)
{
    pyr_srv_conf_t *sc = srv_conf(s);

    pyr_codecache_set_dir(sc->codecache && *sc->codecache ? sc->codecache : NULL);
}
