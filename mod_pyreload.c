/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * mod_pyreload: Python handler files that can be edited on a running server.
 *
 *   LoadModule pyreload_module modules/mod_pyreload.so
 *   PyReloadPath /srv/app/lib                 # prepended to sys.path
 *   <Location /hello>
 *       PyReloadHandler /srv/app/hello.py     # calls handler(req)
 *   </Location>
 *   <Location /shop>
 *       PyReloadWSGI /srv/shop/app.py         # application(environ, start_response)
 *   </Location>
 *   <Location /api>
 *       PyReloadHandler /srv/app/api.py::serve
 *       PyReloadOption db /var/lib/app/db.sqlite
 *       PyReloadDebug On                      # tracebacks in 500 bodies
 *   </Location>
 *
 * This file is httpd glue only: directives, configuration, hooks.  The
 * engine (module cache, reloads, generations) is behind include/pyreload.h;
 * one request through Python is src/serve.c, handler(req) is src/req.c and
 * WSGI (PEP 3333) is src/wsgi*.c.
 */
#include "pyr_httpd.h"

#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_config.h"

#include <apr_strings.h>

#include <sys/stat.h>

module AP_MODULE_DECLARE_DATA pyreload_module;

/* Per process (each child), never the httpd parent. */
static pyr_cache_t *cache;
static server_rec *main_server;

/* Every PyReloadHandler and PyReloadWSGI of the configuration being read (pconf), for the
 * start-up check of its file once PyReloadSafeFiles is known. */
static apr_array_header_t *configured;

/* ------------------------------------------------------------------ */
/* Configuration                                                       */

static void *
create_dir_conf(apr_pool_t *p, char *dir)
{
    pyr_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));

    c->handler = NULL;
    c->debug = PYR_UNSET;
    c->check = PYR_UNSET;
    c->interval = PYR_UNSET;
    c->options = apr_table_make(p, 4);
    return c;
}

static void *
merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    pyr_dir_conf_t *base = basev, *add = addv;
    pyr_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));

    c->handler = add->handler ? add->handler : base->handler;
    c->debug = add->debug != PYR_UNSET ? add->debug : base->debug;
    c->check = add->check != PYR_UNSET ? add->check : base->check;
    c->interval = add->interval != PYR_UNSET ? add->interval : base->interval;
    /* base first, then add: compressing with SET keeps the last, inner value. */
    c->options = apr_table_overlay(p, base->options, add->options);
    apr_table_compress(c->options, APR_OVERLAP_TABLES_SET);
    return c;
}

static void *
create_srv_conf(apr_pool_t *p, server_rec *s)
{
    pyr_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));

    c->paths = apr_array_make(p, 4, sizeof(const char *));
    c->safe_files = PYR_UNSET;
    c->status_entries = PYR_UNSET;
    c->status_error_bytes = PYR_UNSET;
    return c;
}

/* "<Location /x>, /etc/apache2/sites-enabled/app.conf:12": which directive
 * a log line is about. */
static const char *
directive_where(cmd_parms *cmd)
{
    const ap_directive_t *d = cmd->directive, *sec = d ? d->parent : NULL;

    if (!d) {
        return "";
    }
    if (sec) {
        return apr_psprintf(cmd->pool, "%s %s, %s:%d", sec->directive, sec->args, d->filename,
                            d->line_num);
    }
    return apr_psprintf(cmd->pool, "%s:%d", d->filename, d->line_num);
}

/* What a handler directive calls (its cmd->info). */
typedef struct directive_kind {
    const pyr_protocol_t *protocol;
    const char *default_callable;
    pyr_kind_t kind;
} directive_kind_t;

static const directive_kind_t handler_kind = { &pyr_protocol_pyreload, "handler",
                                               PYR_KIND_HANDLER };
static const directive_kind_t wsgi_kind = { &pyr_protocol_wsgi, "application", PYR_KIND_WSGI };

/* The path of the non-regex <Location> the directive is in, without its
 * trailing '/'; NULL elsewhere (<Directory>, <Files>, <LocationMatch>,
 * <Location ~>, server or virtual host). */
static const char *
location_of(cmd_parms *cmd)
{
    const ap_directive_t *sec = cmd->directive ? cmd->directive->parent : NULL;
    const char *path = cmd->path;
    apr_size_t n;

    if (!sec || !path || strcasecmp(sec->directive, "<Location") || !sec->args ||
        sec->args[0] == '~') {
        return NULL;
    }
    n = strlen(path);
    while (n > 0 && path[n - 1] == '/') {
        n--;
    }
    return apr_pstrmemdup(cmd->pool, path, n);
}

/* httpd has no end-of-line comments: "PyReloadHandler app.py  # calls
 * handler(req)" reaches the directive as four arguments.  The directives take
 * theirs as a list (TAKE_ARGV) so that the error can say so, where httpd
 * would only count them.  A '#' that starts a value the directive takes
 * ("PyReloadOption colour #ff0000") is that value. */
static const char *
check_argc(cmd_parms *cmd, int argc, char *const argv[], int want)
{
    const char *comment;
    int i;

    if (argc == want) {
        return NULL;
    }
    for (i = 1; i < argc && argv[i][0] != '#'; i++) {
    }
    if (i == argc) {
        return apr_psprintf(cmd->pool, "%s takes %s, %s", cmd->cmd->name,
                            want == 1 ? "one argument" : "two arguments", cmd->cmd->errmsg);
    }
    for (comment = argv[i++]; i < argc; i++) {
        comment = apr_pstrcat(cmd->pool, comment, " ", argv[i], NULL);
    }
    return apr_psprintf(cmd->pool,
                        "%s: httpd has no comments at the end of a line: '%s' is read as "
                        "more arguments; put the comment on a line of its own",
                        cmd->cmd->name, comment);
}

static const char *
set_handler(cmd_parms *cmd, void *mconfig, int argc, char *const argv[])
{
    const directive_kind_t *kind = cmd->info;
    pyr_dir_conf_t *c = mconfig;
    const char *file, *callable, *err, *path, *arg;
    pyr_handler_t *h;
    struct stat st;

    if ((err = check_argc(cmd, argc, argv, 1))) {
        return err;
    }
    arg = argv[0];
    if ((err = pyr_spec_parse(cmd->pool, arg, kind->default_callable, &file, &callable))) {
        return apr_psprintf(cmd->pool, "%s %s", cmd->cmd->name, err);
    }
    if (!(path = ap_server_root_relative(cmd->pool, file))) {
        return apr_psprintf(cmd->pool, "%s: invalid file path '%s'", cmd->cmd->name, file);
    }
    if (stat(path, &st) != 0) {
        int e = errno;
        const char *colon = strrchr(file, ':'), *base;

        /* FILE:CALLABLE, gunicorn's habit: a file literally named so would
         * have been found above. */
        if (e == ENOENT && !strstr(arg, "::") && colon && colon > file &&
            pyr_is_identifier(colon + 1) &&
            (base = ap_server_root_relative(cmd->pool, apr_pstrmemdup(cmd->pool, file,
                                                                      (apr_size_t)(colon - file)))) &&
            stat(base, &st) == 0 && S_ISREG(st.st_mode)) {
            return apr_psprintf(cmd->pool,
                                "PYR0701: %s %s: no such file; to call %s() in %s, write "
                                "two colons: %s %.*s::%s",
                                cmd->cmd->name, arg, colon + 1, base, cmd->cmd->name,
                                (int)(colon - file), file, colon + 1);
        }
        return apr_psprintf(cmd->pool, "%s: cannot use '%s': %s", cmd->cmd->name, path,
                            strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a regular file", cmd->cmd->name, path);
    }
    h = apr_pcalloc(cmd->pool, sizeof(*h));
    h->path = path;
    h->callable = callable;
    h->directive = cmd->cmd->name;
    h->where = directive_where(cmd);
    h->protocol = kind->protocol;
    h->location = location_of(cmd);
    h->id = configured->nelts;
    h->kind = kind->kind;
    APR_ARRAY_PUSH(configured, const pyr_handler_t *) = h;
    c->handler = h;
    return NULL;
}

static const char *
add_path(cmd_parms *cmd, void *mconfig, int argc, char *const argv[])
{
    pyr_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config, &pyreload_module);
    const char *err = ap_check_cmd_context(cmd, NOT_IN_VIRTUALHOST);
    const char *arg, *dir;
    struct stat st;

    if (err) {
        return apr_pstrcat(cmd->pool, err,
                           ": sys.path is process-wide (one Python "
                           "serves every virtual host of a process), so PyReloadPath "
                           "belongs at server level",
                           NULL);
    }
    if ((err = check_argc(cmd, argc, argv, 1))) {
        return err;
    }
    arg = argv[0];
    dir = ap_server_root_relative(cmd->pool, arg);
    if (!dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a directory", cmd->cmd->name,
                            dir ? dir : arg);
    }
    APR_ARRAY_PUSH(sc->paths, const char *) = dir;
    return NULL;
}

static const char *
set_debug(cmd_parms *cmd, void *mconfig, int on)
{
    ((pyr_dir_conf_t *)mconfig)->debug = on;
    return NULL;
}

static const char *
set_check(cmd_parms *cmd, void *mconfig, int on)
{
    ((pyr_dir_conf_t *)mconfig)->check = on;
    return NULL;
}

static const char *
set_interval(cmd_parms *cmd, void *mconfig, int argc, char *const argv[])
{
    pyr_dir_conf_t *c = mconfig;
    const char *err = check_argc(cmd, argc, argv, 1), *arg;
    apr_int64_t ms;
    char *end;

    if (err) {
        return err;
    }
    arg = argv[0];
    ms = apr_strtoi64(arg, &end, 10);
    if (!*arg || *end || ms < 0 || ms > 86400000) {
        return apr_psprintf(cmd->pool,
                            "%s takes milliseconds, a whole number from 0 "
                            "(check on every request) to 86400000, not '%s'",
                            cmd->cmd->name, arg);
    }
    c->interval = (apr_interval_time_t)ms * 1000;
    return NULL;
}

static const char *
set_safe_files(cmd_parms *cmd, void *mconfig, int on)
{
    pyr_srv_conf_t *sc;
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    if (err) {
        return err;
    }
    sc = ap_get_module_config(cmd->server->module_config, &pyreload_module);
    sc->safe_files = on;
    return NULL;
}

/* PyReloadStatusEntries, PyReloadStatusErrorBytes: the status page's room
 * in shared memory (cmd->info: the field's offset, and its bounds). */
typedef struct status_size {
    apr_size_t offset;
    int min, max;
    const char *unit;
} status_size_t;

static const status_size_t status_entries = { APR_OFFSETOF(pyr_srv_conf_t, status_entries), 1,
                                               100000, "entries per process" };
static const status_size_t status_error_bytes = {
    APR_OFFSETOF(pyr_srv_conf_t, status_error_bytes), 0, 1048576, "bytes of traceback per entry"
};

static const char *
set_status_size(cmd_parms *cmd, void *mconfig, const char *arg)
{
    const status_size_t *sz = cmd->info;
    pyr_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config, &pyreload_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t n;
    char *end;

    if (err) {
        return err;
    }
    n = apr_strtoi64(arg, &end, 10);
    if (!*arg || *end || n < sz->min || n > sz->max) {
        return apr_psprintf(cmd->pool, "%s takes a whole number of %s from %d to %d, not '%s'",
                            cmd->cmd->name, sz->unit, sz->min, sz->max, arg);
    }
    *(int *)((char *)sc + sz->offset) = (int)n;
    return NULL;
}

static const char *
add_option(cmd_parms *cmd, void *mconfig, int argc, char *const argv[])
{
    const char *err = check_argc(cmd, argc, argv, 2);

    if (err) {
        return err;
    }
    apr_table_set(((pyr_dir_conf_t *)mconfig)->options, argv[0], argv[1]);
    return NULL;
}

static const command_rec pyreload_cmds[] = {
    AP_INIT_TAKE_ARGV("PyReloadHandler", set_handler, (void *)&handler_kind,
                      RSRC_CONF | ACCESS_CONF,
                      "FILE[::CALLABLE]: the Python file (and function, default "
                      "'handler') that answers requests here"),
    AP_INIT_TAKE_ARGV("PyReloadWSGI", set_handler, (void *)&wsgi_kind,
                      RSRC_CONF | ACCESS_CONF,
                      "FILE[::CALLABLE]: the Python file (and WSGI application, "
                      "default 'application') that answers requests here"),
    AP_INIT_TAKE_ARGV("PyReloadPath", add_path, NULL, RSRC_CONF,
                      "DIR: a directory to put first on sys.path (repeatable); "
                      "server-wide"),
    AP_INIT_FLAG("PyReloadDebug", set_debug, NULL, RSRC_CONF | ACCESS_CONF,
                 "On: 500 responses carry the Python traceback (default Off)"),
    AP_INIT_FLAG("PyReloadCheck", set_check, NULL, RSRC_CONF | ACCESS_CONF,
                 "Off: never look at a handler file again after its first load "
                 "(default On)"),
    AP_INIT_TAKE_ARGV("PyReloadCheckInterval", set_interval, NULL,
                      RSRC_CONF | ACCESS_CONF,
                      "MS: look at a handler file at most once per MS milliseconds "
                      "(default 0: on every request)"),
    AP_INIT_TAKE_ARGV("PyReloadOption", add_option, NULL,
                      RSRC_CONF | ACCESS_CONF,
                      "NAME VALUE: a setting handlers read as req.options[NAME]"),
    AP_INIT_FLAG("PyReloadSafeFiles", set_safe_files, NULL, RSRC_CONF,
                 "Off: run Python files that any user may write (a development "
                 "machine; default On: refuse them); server-wide"),
    AP_INIT_TAKE1("PyReloadStatusEntries", set_status_size, (void *)&status_entries, RSRC_CONF,
                  "N: entries each process shows on the status page of the whole host "
                  "(default 64); server-wide"),
    AP_INIT_TAKE1("PyReloadStatusErrorBytes", set_status_size, (void *)&status_error_bytes,
                  RSRC_CONF,
                  "N: bytes of an entry's last traceback that other processes' status pages "
                  "show (default 4096); server-wide"),
    AP_INIT_TAKE1("PyReloadCodeCache", pyr_codecache_cmd, NULL, RSRC_CONF,
                  "DIR|Off: where compiled code is shared by the server's processes "
                  "(default: DefaultRuntimeDir/pyreload-code); server-wide"),
    { NULL }
};

/* ------------------------------------------------------------------ */
/* Hooks                                                               */

static int
safe_files_on(server_rec *s)
{
    pyr_srv_conf_t *sc = ap_get_module_config(s->module_config, &pyreload_module);

    return sc->safe_files != 0;
}

static int
pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    configured = apr_array_make(pconf, 8, sizeof(const pyr_handler_t *));
    return OK;
}

/* Code anyone may write is refused before the server starts (and by
 * `apache2 -t`): every PyReloadHandler file and PyReloadPath directory.
 * Files found later (imports, edits) are checked when they load. */
static int
check_files(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    pyr_srv_conf_t *sc = ap_get_module_config(s->module_config, &pyreload_module);
    char msg[1024];
    int i, bad = 0;

    if (!safe_files_on(s)) {
        return OK;
    }
    for (i = 0; configured && i < configured->nelts; i++) {
        const pyr_handler_t *h = APR_ARRAY_IDX(configured, i, const pyr_handler_t *);

        if (pyr_perm_check(h->path, msg, sizeof(msg)) == 1) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                         "PYR0020: "
                         "%s (%s): %s; or, on a development machine only, "
                         "PyReloadSafeFiles Off",
                         h->directive, h->where, msg);
            bad = 1;
        }
    }
    for (i = 0; i < sc->paths->nelts; i++) {
        const char *dir = APR_ARRAY_IDX(sc->paths, i, const char *);

        if (pyr_perm_check(dir, msg, sizeof(msg)) == 1) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                         "PYR0020: "
                         "PyReloadPath: %s; or, on a development machine only, "
                         "PyReloadSafeFiles Off",
                         msg);
            bad = 1;
        }
    }
    return bad ? HTTP_INTERNAL_SERVER_ERROR : OK;
}

/* The shared memory of the status page, for the children to come. */
static int
post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    pyr_srv_conf_t *sc = ap_get_module_config(s->module_config, &pyreload_module);

    return pyr_status_shm_create(
        pconf, s, sc->status_entries != PYR_UNSET ? sc->status_entries : PYR_STATUS_ENTRIES_DEFAULT,
        sc->status_error_bytes != PYR_UNSET ? sc->status_error_bytes
                                            : PYR_STATUS_ERROR_BYTES_DEFAULT);
}

/* A file the server's User cannot read is refused before the server starts
 * (src/readable.c). */
static int
check_readable(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    pyr_srv_conf_t *sc = ap_get_module_config(s->module_config, &pyreload_module);

    return pyr_readable_check(ptemp, configured, sc->paths);
}

/* `apache2 -k stop` (or graceful-stop) reads the configuration and runs the
 * check_config hooks before it signals the server: one failing would leave
 * the server running.  A file or directory that became unsafe or unreadable
 * since the start refuses a start, never a stop (no child will start).  httpd
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

/* Every check, so that a start that is refused says every reason at once. */
static int
check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    static int (*const checks[])(apr_pool_t *, apr_pool_t *, apr_pool_t *, server_rec *) = {
        check_files, check_readable, pyr_child_check_config, pyr_codecache_check_config,
    };
    size_t i;
    int rv = OK;

    if (stopping()) {
        return OK;
    }
    for (i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        if (checks[i](pconf, plog, ptemp, s) != OK) {
            rv = HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return rv;
}

/* What the pyreload module gets from the httpd side. */
static int
extend_module(PyObject *m)
{
    return pyr_req_register(m) < 0 || pyr_wsgi_register(m) < 0 ? -1 : 0;
}

static void
stdio_log(void *baton, int level, const char *line)
{
    ap_log_error(APLOG_MARK, level, 0, (server_rec *)baton, "%s", line);
}

static apr_status_t
child_exit(void *unused)
{
    if (pyr_interp_interrupted()) {
        /* prefork's SIGTERM handler, in the middle of a handler: Python's
         * state belongs to the interrupted code; the process just ends. */
        return APR_SUCCESS;
    }
    pyr_cache_destroy(cache);
    cache = NULL;
    pyr_interp_fini();
    return APR_SUCCESS;
}

/* The most verbose LogLevel any server (virtual hosts included) sets for
 * us: Python's logging records below it are dropped before they are
 * formatted.  httpd itself then applies each request's own level. */
static int
most_verbose_level(server_rec *s)
{
    int level = APLOG_EMERG;

    for (; s; s = s->next) {
        int l = ap_get_server_module_loglevel(s, APLOG_MODULE_INDEX);

        level = l > level ? l : level;
    }
    return level;
}

/* Python starts here, in each child: never in the parent, which outlives
 * graceful restarts and reads its configuration twice at start-up. */
static void
child_init(apr_pool_t *pchild, server_rec *s)
{
    pyr_srv_conf_t *sc = ap_get_module_config(s->module_config, &pyreload_module);
    apr_array_header_t *paths = apr_array_make(pchild, 4, sizeof(const char *));
    pyr_interp_opts_t opts;
    const char *err = NULL, *owner = pyr_child_python_owner();
    int i;

    /* PyReloadPath is server-wide (refused in a virtual host). */
    for (i = 0; i < sc->paths->nelts; i++) {
        const char *dir = APR_ARRAY_IDX(sc->paths, i, const char *);
        int j, dup = 0;

        for (j = 0; j < paths->nelts; j++) {
            dup |= strcmp(APR_ARRAY_IDX(paths, j, const char *), dir) == 0;
        }
        if (!dup) {
            APR_ARRAY_PUSH(paths, const char *) = dir;
        }
    }
    pyr_serve_child_init(pchild, configured->nelts);
    pyr_status_shm_child_init(pchild, s);
    pyr_codecache_child_init(s);
    main_server = s;
    opts.paths = (const char *const *)paths->elts;
    opts.npaths = paths->nelts;
    opts.stdio.log = stdio_log;
    opts.stdio.baton = main_server;
    opts.extend_module = extend_module;
    opts.drain = pyr_child_drain;
    if (owner) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "PYR0003: Python was started in "
                     "this process by %s; mod_pyreload uses that interpreter (so %s's "
                     "Python settings apply, not mod_pyreload's isolation)",
                     owner, owner);
    }
    pyr_pylog_set_level(most_verbose_level(s));
    if (pyr_interp_init(&opts, &err) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "PYR0001: cannot start Python in "
                     "this process; every Python handler will answer 500:");
        pyr_log_lines(&opts.stdio, APLOG_CRIT, "PYR0001: ", err ? err : "unknown error");
        return;
    }
    cache = pyr_cache_create(pchild);
    pyr_cache_set_safe_files(cache, safe_files_on(s));
    pyr_cache_set_logger(cache, &opts.stdio);
    for (i = 0; i < paths->nelts; i++) {
        pyr_cache_add_root(cache, APR_ARRAY_IDX(paths, i, const char *));
    }
    apr_pool_cleanup_register(pchild, NULL, child_exit, apr_pool_cleanup_null);
}

/* PyReloadHandler needs no SetHandler: its requests get our handler name
 * here, unless one was set for them already.  core sets SetHandler's in
 * its own fixup (APR_HOOK_REALLY_FIRST, before this one) and mod_mime sets
 * AddHandler's in type_checker (before every fixup): so `SetHandler
 * default-handler` for a static subtree under a Python location wins. */
static int
name_handler(request_rec *r)
{
    pyr_dir_conf_t *cfg = ap_get_module_config(r->per_dir_config, &pyreload_module);

    if (cfg->handler && !r->handler) {
        r->handler = PYR_HANDLER_NAME;
    }
    return DECLINED;
}

static int
pyreload_handler(request_rec *r)
{
    pyr_dir_conf_t *cfg;
    int rc;

    if (!r->handler || strcmp(r->handler, PYR_HANDLER_NAME)) {
        return DECLINED;
    }
    cfg = ap_get_module_config(r->per_dir_config, &pyreload_module);
    if (!cfg->handler) {
        /* SetHandler pyreload-handler without a PyReloadHandler here. */
        return DECLINED;
    }
    rc = pyr_serve(r, cfg, cache);
    /* A response has gone out by now (an error page goes after: rare), so
     * the client does not wait for this. */
    pyr_cache_tidy(cache);
    return rc;
}

static int
status_handler(request_rec *r)
{
    return pyr_status_page(r, cache);
}

static void
register_hooks(apr_pool_t *p)
{
    /* mod_wsgi, if loaded, starts Python and we attach: it must start it in
     * both load orders, since its child cleanup needs the thread state it
     * made then. */
    static const char *const after[] = { "mod_wsgi.c", NULL };

    ap_hook_pre_config(pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(pyr_codecache_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, after, NULL, APR_HOOK_MIDDLE);
    ap_hook_fixups(name_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(pyreload_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    pyr_status_register_hooks(p, &cache);
}

AP_DECLARE_MODULE(pyreload) = {
    STANDARD20_MODULE_STUFF, create_dir_conf, merge_dir_conf,     create_srv_conf, NULL,
    pyreload_cmds,           register_hooks,  AP_MODULE_FLAG_NONE
};
