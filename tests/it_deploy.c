/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_deploy.c: deploys as users do them, with the real tools, against a real
 * apache2: a release directory re-pointed by a symlink (`ln -sfn`, and
 * `ln -s` + `mv -T`), a directory replaced (`mv` swap, `rm -rf` +
 * re-create), `git checkout`, `rsync` (temp + rename, and `--inplace`; and
 * its quick check, which `-c` turns off), `cp` + `mv` one file at a time,
 * `tar x`, `install`, and vim's save modes.  The README's deploy recipes
 * are these commands, as written.  Each deploy is followed by two
 * or more requests and comes several times in a row (a watch that went
 * stale shows only from the second deploy on); the tools that delete and
 * re-create files run under concurrent keep-alive clients, which must get
 * no error status, while the error log gets no error line from us.
 *
 * Every release answers "h<N> d<M>" (its handler's and its dependency's
 * marker), so "was it deployed" is an equality check.  Tools run with
 * fork/exec, a fixed environment and a bounded wait.
 */
#include "fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static httpd_t *srv;

#define TOOL_TIMEOUT_MS 20000
#define CLIENTS 4

/* ------------------------------------------------------------------ */
/* Tools                                                               */

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* The absolute path of a program on the usual PATH, or NULL. */
static const char *
which(const char *prog, char *buf, size_t size)
{
    static const char *const dirs[] = {"/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin",
                                       "/sbin", NULL};
    int i;

    for (i = 0; dirs[i]; i++) {
        snprintf(buf, size, "%s/%s", dirs[i], prog);
        if (access(buf, X_OK) == 0) {
            return buf;
        }
    }
    return NULL;
}

/* Run argv in cwd (relative to app/) with a fixed environment (HOME is the
 * server's dir, so no user's git or vim configuration applies); output goes
 * to tools.log in the server's dir.  The exit status, or -1 (not run, killed
 * by a signal, or still running after TOOL_TIMEOUT_MS: then killed). */
static int
run_tool(const char *cwd, const char *const *argv)
{
    char prog[256], home[256], logpath[256];
    char *dir = httpd_path(srv, cwd);
    char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", home, "LC_ALL=C",
                    "GIT_CONFIG_NOSYSTEM=1", "TERM=dumb", NULL};
    double deadline;
    pid_t pid;
    int status, log;

    if (!which(argv[0], prog, sizeof(prog))) {
        fprintf(stderr, "it_deploy: %s is not installed (make deps installs it)\n", argv[0]);
        free(dir);
        return -1;
    }
    snprintf(home, sizeof(home), "HOME=%s", srv->dir);
    snprintf(logpath, sizeof(logpath), "%s/tools.log", srv->dir);
    log = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);

        /* Only async-signal-safe calls: the test may have threads. */
        if (chdir(dir) != 0 || null < 0 || log < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0
            || dup2(log, 2) < 0) {
            _exit(126);
        }
        execve(prog, (char *const *)argv, envp);
        _exit(127);
    }
    if (log >= 0) {
        close(log);
    }
    free(dir);
    if (pid < 0) {
        return -1;
    }
    deadline = now_ms() + TOOL_TIMEOUT_MS;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);

        if (got == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        if (got < 0 && errno != EINTR) {
            return -1;
        }
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "it_deploy: %s still running after %d ms: killed\n", argv[0],
                    TOOL_TIMEOUT_MS);
            return -1;
        }
        usleep(1000);
    }
}

static void
tool_failed(const char *what, int rc)
{
    char path[256], line[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/tools.log", srv->dir);
    fprintf(stderr, "it_deploy: `%s` exited %d; %s says:\n", what, rc, path);
    if ((f = fopen(path, "r"))) {
        while (fgets(line, sizeof(line), f)) {
            fputs(line, stderr);
        }
        fclose(f);
    }
    ck_abort_msg("`%s` failed (%d)", what, rc);
}

#define RUN(cwd, ...)                                                         \
    do {                                                                      \
        const char *const argv_[] = {__VA_ARGS__, NULL};                      \
        int rc_ = run_tool(cwd, argv_);                                       \
        if (rc_ != 0) {                                                       \
            tool_failed(#__VA_ARGS__, rc_);                                   \
        }                                                                     \
    } while (0)

/* ------------------------------------------------------------------ */
/* Releases                                                            */

/* Release n of a handler and of its dependency, in dir (relative to app/).
 * Sizes differ from release to release, so that in-place tools that keep the
 * inode and the second cannot hide a change either. */
static void
write_release_pad(const char *dir, int n, int padlen)
{
    char name[256], src[1024], pad[64];

    memset(pad, '#', sizeof(pad));
    pad[padlen % (int)sizeof(pad)] = '\0';
    snprintf(name, sizeof(name), "%s/h.py", dir);
    snprintf(src, sizeof(src),
             "import pyreload\n"
             "import dep\n"
             "MARK = 'h%d'\n"
             "def handler(req):\n"
             "    req.content_type = 'text/plain'\n"
             "    req.write(MARK + ' ' + dep.MARK)\n"
             "    return pyreload.OK\n"
             "# %s\n", n, pad);
    ck_assert_int_eq(httpd_write(srv, name, src), 0);
    snprintf(name, sizeof(name), "%s/dep.py", dir);
    snprintf(src, sizeof(src), "MARK = 'd%d'\n# %s\n", n, pad);
    ck_assert_int_eq(httpd_write(srv, name, src), 0);
}

static void
write_release(const char *dir, int n)
{
    write_release_pad(dir, n, n);
}

/* What a round of requests saw: responses, and those that were not the
 * expected release (any status). */
static long seen, stale;

/* `times` requests to path, each expected to answer "h<h> d<d>". */
static void
expect_release(const char *path, int h, int d, int times)
{
    char want[64];
    int i;

    snprintf(want, sizeof(want), "h%d d%d", h, d);
    for (i = 0; i < times; i++) {
        http_resp_t *r = http_get(srv, path);

        seen++;
        if (r->status != 200 || strcmp(r->body, want) != 0) {
            if (!stale) {
                fprintf(stderr, "it_deploy: %s: first stale answer: %ld '%.80s', want '%s'\n",
                        path, r->status, r->body, want);
            }
            stale++;
        }
        http_free(r);
    }
}

static void
report_stale(const char *what)
{
    fprintf(stderr, "deploy: %s: %ld of %ld responses stale\n", what, stale, seen);
    ck_assert_msg(stale == 0, "%s: %ld of %ld responses were not the deployed release",
                  what, stale, seen);
    seen = stale = 0;
}

/* Error-level lines of ours after mark (0 if none); the first one printed. */
static int
our_errors(size_t mark)
{
    static const char *const levels[] = {"[pyreload:error]", "[pyreload:crit]",
                                         "[pyreload:alert]", "[pyreload:emerg]", NULL};
    int i, n = 0;

    for (i = 0; levels[i]; i++) {
        int k = httpd_log_count(srv, mark, levels[i]);

        if (k > 0) {
            char *line = httpd_log_line(srv, mark, levels[i]);

            fprintf(stderr, "it_deploy: %d error line(s), first: %s\n", k, line);
            free(line);
        }
        n += k;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Concurrent keep-alive clients                                       */

typedef struct {
    const char *path;
    long requests, bad;
    char why[256];
} hammer_t;

static volatile int hammer_stop;
static pthread_t hammer_tid[CLIENTS];
static hammer_t hammer_st[CLIENTS];

static void *
hammer_run(void *arg)
{
    hammer_t *st = arg;
    http_client_t *c = http_client_new(srv);

    while (!__atomic_load_n(&hammer_stop, __ATOMIC_ACQUIRE)) {
        http_resp_t *r = http_client_get(c, st->path);

        st->requests++;
        if (r->status != 200) {
            if (!st->bad) {
                snprintf(st->why, sizeof(st->why), "status %ld %.60s %.100s", r->status,
                         r->error, r->body);
            }
            st->bad++;
        }
        http_free(r);
    }
    http_client_free(c);
    return NULL;
}

static void
hammer_start(const char *path)
{
    int i;

    __atomic_store_n(&hammer_stop, 0, __ATOMIC_RELEASE);
    for (i = 0; i < CLIENTS; i++) {
        memset(&hammer_st[i], 0, sizeof(hammer_st[i]));
        hammer_st[i].path = path;
        ck_assert_int_eq(pthread_create(&hammer_tid[i], NULL, hammer_run, &hammer_st[i]), 0);
    }
}

/* Stop the clients; assert that none got a non-200 answer. */
static void
hammer_end(const char *what)
{
    long total = 0, bad = 0;
    const char *why = "";
    int i;

    __atomic_store_n(&hammer_stop, 1, __ATOMIC_RELEASE);
    for (i = 0; i < CLIENTS; i++) {
        pthread_join(hammer_tid[i], NULL);
        total += hammer_st[i].requests;
        bad += hammer_st[i].bad;
        if (hammer_st[i].bad && !why[0]) {
            why = hammer_st[i].why;
        }
    }
    fprintf(stderr, "deploy: %s: %ld of %ld concurrent responses not 200%s%s\n", what, bad,
            total, bad ? ", first: " : "", why);
    ck_assert_msg(bad == 0, "%s: %ld of %ld concurrent responses were not 200 (%s)", what,
                  bad, total, why);
    ck_assert_msg(total >= CLIENTS, "%s: only %ld concurrent requests", what, total);
}

/* Every server process loads path's release before a deploy starts: the
 * guarantees hold once a file has a good generation in the process.  With
 * prefork, a connection kept open holds its process, so CLIENTS + 2 open
 * connections are served by as many processes. */
static void
warm(const char *path, int h, int d)
{
    http_client_t *c[CLIENTS + 2];
    char want[64];
    int i;

    snprintf(want, sizeof(want), "h%d d%d", h, d);
    for (i = 0; i < CLIENTS + 2; i++) {
        http_resp_t *r;

        c[i] = http_client_new(srv);
        r = http_client_get(c[i], path);
        ck_assert_msg(r->status == 200 && strcmp(r->body, want) == 0,
                      "%s before the deploy: %ld '%s', want '%s'", path, r->status, r->body,
                      want);
        http_free(r);
    }
    for (i = 0; i < CLIENTS + 2; i++) {
        http_client_free(c[i]);
    }
}

/* ------------------------------------------------------------------ */
/* Swaps of directories: symlinked releases, replaced directories      */

static const char swap_config[] =
    "<Location /cap>\n  PyReloadHandler @APP@/cap/current/h.py\n</Location>\n"
    "<Location /capmv>\n  PyReloadHandler @APP@/capmv/current/h.py\n</Location>\n"
    "<Location /mvdir>\n  PyReloadHandler @APP@/mvdir/app/h.py\n</Location>\n"
    "<Location /rmdir>\n  PyReloadHandler @APP@/rmdir/app/h.py\n</Location>\n"
    "<Location /interval>\n  PyReloadHandler @APP@/interval/h.py\n"
    "  PyReloadCheckInterval 2000\n</Location>\n";

static void
swap_setup(void)
{
    httpd_opts_t o = { .config = swap_config };

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    write_release("cap/releases/1", 1);
    ck_assert_int_eq(httpd_symlink(srv, "releases/1", "cap/current"), 0);
    write_release("capmv/releases/1", 1);
    ck_assert_int_eq(httpd_symlink(srv, "releases/1", "capmv/current"), 0);
    write_release("mvdir/app", 1);
    write_release("rmdir/app", 1);
    write_release("interval", 1);
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* Capistrano: releases/N, `current` re-pointed; then an edit inside the
 * release that is current, which only a watch of the new release sees. */
static void
release_swaps(const char *site, const char *url, int use_mv)
{
    char rel[256], target[64], edit[256];
    size_t mark = httpd_log_mark(srv);
    int n;

    expect_release(url, 1, 1, 2);
    for (n = 2; n <= 5; n++) {
        snprintf(rel, sizeof(rel), "%s/releases/%d", site, n);
        snprintf(target, sizeof(target), "releases/%d", n);
        write_release(rel, n);
        if (use_mv) {
            RUN(site, "ln", "-s", target, "current.tmp");
            RUN(site, "mv", "-T", "current.tmp", "current");
        }
        else {
            RUN(site, "ln", "-sfn", target, "current");
        }
        expect_release(url, n, n, 3);
        /* An edit of the dependency in the release now current. */
        snprintf(edit, sizeof(edit), "%s/current/dep.py", site);
        ck_assert_int_eq(httpd_write(srv, edit, "MARK = 'd100'\n"), 0);
        expect_release(url, n, 100, 2);
    }
    ck_assert_int_eq(our_errors(mark), 0);
}

START_TEST(test_release_symlink_ln_sfn)
{
    release_swaps("cap", "/cap", 0);
    report_stale("ln -sfn releases/N current, 4 times");
}
END_TEST

START_TEST(test_release_symlink_mv_T)
{
    release_swaps("capmv", "/capmv", 1);
    report_stale("ln -s + mv -T, 4 times");
}
END_TEST

/* The handler's directory replaced by another one, then edited inside. */
static void
dir_replace(const char *site, const char *url, int use_rm)
{
    size_t mark = httpd_log_mark(srv);
    int n;

    expect_release(url, 1, 1, 2);
    for (n = 2; n <= 4; n++) {
        char app[256];

        snprintf(app, sizeof(app), "%s/app", site);
        if (use_rm) {
            RUN(site, "rm", "-rf", "app");
            RUN(site, "mkdir", "app");
            write_release(app, n);
        }
        else {
            char next[256];

            snprintf(next, sizeof(next), "%s/app.new", site);
            write_release(next, n);
            RUN(site, "rm", "-rf", "app.old");
            RUN(site, "mv", "app", "app.old");
            RUN(site, "mv", "app.new", "app");
        }
        expect_release(url, n, n, 3);
        /* Edits inside the new directory: in place, then atomically. */
        write_release(app, 10 * n);
        expect_release(url, 10 * n, 10 * n, 2);
        snprintf(app, sizeof(app), "%s/app/dep.py", site);
        ck_assert_int_eq(httpd_write_atomic(srv, app, "MARK = 'd7'\n"), 0);
        expect_release(url, 10 * n, 7, 2);
    }
    ck_assert_int_eq(our_errors(mark), 0);
}

START_TEST(test_dir_replace_mv)
{
    dir_replace("mvdir", "/mvdir", 0);
    report_stale("mv app app.old && mv app.new app, 3 times");
}
END_TEST

START_TEST(test_dir_replace_rm_rf)
{
    dir_replace("rmdir", "/rmdir", 1);
    report_stale("rm -rf app && mkdir app && write, 3 times");
}
END_TEST

/* PyReloadCheckInterval 2000: the first load is a look, so an edit right
 * after it waits for the interval; the next look after it sees it. */
START_TEST(test_interval_counts_first_load)
{
    double t0 = now_ms();
    http_resp_t *r;

    expect_release("/interval", 1, 1, 1);
    write_release("interval", 2);
    usleep(200 * 1000);
    r = http_get(srv, "/interval");
    if (now_ms() - t0 < 1500) {
        ck_assert_msg(strcmp(r->body, "h1 d1") == 0,
                      "an edit 0.2 s after the first load was seen at once ('%s'), "
                      "despite PyReloadCheckInterval 2000", r->body);
    }
    http_free(r);
    while (now_ms() - t0 < 2300) {
        usleep(50 * 1000);
    }
    expect_release("/interval", 2, 2, 2);
    report_stale("edit after the interval");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Tools that delete and re-create files, under concurrent clients     */

static const char tool_config[] =
    "<Location /git>\n  PyReloadHandler @APP@/git/h.py\n</Location>\n"
    "<Location /rsync>\n  PyReloadHandler @APP@/rsync/h.py\n</Location>\n"
    "<Location /rsyncin>\n  PyReloadHandler @APP@/rsyncin/h.py\n</Location>\n"
    "<Location /tar>\n  PyReloadHandler @APP@/tar/h.py\n</Location>\n"
    "<Location /install>\n  PyReloadHandler @APP@/install/h.py\n</Location>\n"
    "<Location /vim>\n  PyReloadHandler @APP@/vim/h.py\n</Location>\n"
    "<Location /flap>\n  PyReloadHandler @APP@/flap/h.py\n</Location>\n"
    "<Location /perm>\n  PyReloadHandler @APP@/perm/h.py\n</Location>\n"
    "<Location /rsq>\n  PyReloadHandler @APP@/rsq/h.py\n</Location>\n"
    "<Location /cpmv>\n  PyReloadHandler @APP@/cpmv/h.py\n</Location>\n";

static void
tool_setup(void)
{
    static const char *const dirs[] = {"git", "rsync", "rsyncin", "tar", "install", "vim",
                                       "flap", "perm", "rsq", "cpmv", NULL};
    /* prefork: one process per concurrent client, and one for the checks */
    httpd_opts_t o = { .config = tool_config, .procs = CLIENTS + 2 };
    int i;

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    for (i = 0; dirs[i]; i++) {
        write_release(dirs[i], 1);
    }
    for (i = 1; i <= 4; i++) {
        char stage[256];

        snprintf(stage, sizeof(stage), "%s/stage/%d", srv->dir, i);
        write_release(stage, i);
    }
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

START_TEST(test_git_checkout)
{
    static const int order[] = {1, 2, 3, 1, 3, 2, 1};
    size_t mark;
    int n, i;

    RUN("git", "git", "init", "-q");
    RUN("git", "git", "config", "user.name", "pyreload test");
    RUN("git", "git", "config", "user.email", "test@localhost");
    RUN("git", "git", "config", "commit.gpgsign", "false");
    for (n = 1; n <= 3; n++) {
        char tag[8];

        snprintf(tag, sizeof(tag), "r%d", n);
        write_release("git", n);
        RUN("git", "git", "add", "-A");
        RUN("git", "git", "commit", "-q", "-m", tag);
        RUN("git", "git", "tag", tag);
    }
    warm("/git", 3, 3);
    mark = httpd_log_mark(srv);
    hammer_start("/git");
    for (i = 0; i < (int)(sizeof(order) / sizeof(order[0])); i++) {
        char tag[8];

        snprintf(tag, sizeof(tag), "r%d", order[i]);
        RUN("git", "git", "checkout", "-q", tag);
        expect_release("/git", order[i], order[i], 3);
    }
    hammer_end("git checkout, 7 times");
    report_stale("git checkout, 7 times");
    ck_assert_int_eq(our_errors(mark), 0);
}
END_TEST

static void
rsync_rounds(const char *dir, const char *url, int inplace)
{
    char dest[64];
    size_t mark = httpd_log_mark(srv);
    int round, n;

    snprintf(dest, sizeof(dest), "%s/", dir);
    warm(url, 1, 1);
    hammer_start(url);
    for (round = 0; round < 6; round++) {
        char src[256];

        n = round % 4 + 1;
        snprintf(src, sizeof(src), "%s/stage/%d/", srv->dir, n);
        /* -I: size and second-granular mtime alone may look unchanged */
        if (inplace) {
            RUN(".", "rsync", "-a", "-I", "--inplace", src, dest);
        }
        else {
            RUN(".", "rsync", "-a", "-I", src, dest);
        }
        expect_release(url, n, n, 3);
    }
    hammer_end(inplace ? "rsync --inplace, 6 times" : "rsync, 6 times");
    report_stale(inplace ? "rsync --inplace, 6 times" : "rsync, 6 times");
    ck_assert_int_eq(our_errors(mark), 0);
}

START_TEST(test_rsync_rename)
{
    rsync_rounds("rsync", "/rsync", 0);
}
END_TEST

START_TEST(test_rsync_inplace)
{
    rsync_rounds("rsyncin", "/rsyncin", 1);
}
END_TEST

/* rsync's quick check: a file whose size and modification time (to the
 * second) are the same at both ends is skipped by rsync itself, whatever
 * its content, so no server can see the change; -c (--checksum) compares
 * contents.  Releases 5 and 6 here have the same sizes and mtimes. */
START_TEST(test_rsync_quick_check)
{
    static const char *const files[] = {"h.py", "dep.py"};
    char q5[256], q6[256];
    size_t mark = httpd_log_mark(srv);
    int n, i;

    for (n = 5; n <= 6; n++) {
        char *dir = n == 5 ? q5 : q6;

        snprintf(dir, 256, "%s/stage/q%d", srv->dir, n);
        write_release_pad(dir, n, 10);
        for (i = 0; i < 2; i++) {
            char path[300];

            snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
            ck_assert_int_eq(httpd_set_mtime(srv, path, 1700000000, 0), 0);
        }
        strcat(dir, "/");
    }
    warm("/rsq", 1, 1);
    hammer_start("/rsq");
    RUN(".", "rsync", "-a", q5, "rsq/");
    expect_release("/rsq", 5, 5, 3);
    /* same sizes, same second: rsync copies nothing */
    RUN(".", "rsync", "-a", q6, "rsq/");
    expect_release("/rsq", 5, 5, 3);
    RUN(".", "rsync", "-a", "-c", q6, "rsq/");
    expect_release("/rsq", 6, 6, 3);
    hammer_end("rsync -a, then rsync -a -c");
    report_stale("rsync -a, then rsync -a -c");
    ck_assert_int_eq(our_errors(mark), 0);
}
END_TEST

START_TEST(test_tar_x)
{
    size_t mark;
    int n, round;

    for (n = 1; n <= 4; n++) {
        char tarball[256], from[256];

        snprintf(tarball, sizeof(tarball), "%s/stage/r%d.tar", srv->dir, n);
        snprintf(from, sizeof(from), "%s/stage/%d", srv->dir, n);
        RUN(".", "tar", "-cf", tarball, "-C", from, "h.py", "dep.py");
    }
    warm("/tar", 1, 1);
    mark = httpd_log_mark(srv);
    hammer_start("/tar");
    for (round = 0; round < 6; round++) {
        char tarball[256];

        n = (round + 1) % 4 + 1;
        snprintf(tarball, sizeof(tarball), "%s/stage/r%d.tar", srv->dir, n);
        RUN("tar", "tar", "-xf", tarball);
        expect_release("/tar", n, n, 3);
    }
    hammer_end("tar x, 6 times");
    report_stale("tar x, 6 times");
    ck_assert_int_eq(our_errors(mark), 0);
}
END_TEST

/* Six deploys of stage/N (N = 2, 3, 4, 1, 2, 3) into the directory site
 * (served at /site) by deploy(), under concurrent clients. */
static void
staged_rounds(const char *site, void (*deploy)(const char *site, const char *h, const char *d),
              const char *what)
{
    char url[64];
    size_t mark = httpd_log_mark(srv);
    int n, round;

    snprintf(url, sizeof(url), "/%s", site);
    warm(url, 1, 1);
    hammer_start(url);
    for (round = 0; round < 6; round++) {
        char h[256], d[256];

        n = (round + 1) % 4 + 1;
        snprintf(h, sizeof(h), "%s/stage/%d/h.py", srv->dir, n);
        snprintf(d, sizeof(d), "%s/stage/%d/dep.py", srv->dir, n);
        deploy(site, h, d);
        expect_release(url, n, n, 3);
    }
    hammer_end(what);
    report_stale(what);
    ck_assert_int_eq(our_errors(mark), 0);
}

static void
deploy_install(const char *site, const char *h, const char *d)
{
    RUN(site, "install", "-m", "0644", d, h, ".");
}

START_TEST(test_install)
{
    staged_rounds("install", deploy_install, "install -m 0644, 6 times");
}
END_TEST

/* One file at a time, atomically: a copy next to it, renamed over it
 * (the dependency first, then the handler). */
static void
deploy_cp_mv(const char *site, const char *h, const char *d)
{
    RUN(site, "cp", d, "dep.py.new");
    RUN(site, "mv", "dep.py.new", "dep.py");
    RUN(site, "cp", h, "h.py.new");
    RUN(site, "mv", "h.py.new", "h.py");
}

START_TEST(test_cp_then_mv)
{
    staged_rounds("cpmv", deploy_cp_mv, "cp + mv, 6 times");
}
END_TEST

/* vim in ex mode, with the save modes that matter: a copy as backup and the
 * file rewritten in place, the file renamed to the backup and a new one
 * written (the name is briefly absent), and no backup at all.  backupskip is
 * emptied: its default skips backups for files under /tmp. */
START_TEST(test_vim_save_modes)
{
    static const char *const modes[] = {
        "set backupskip= writebackup nobackup backupcopy=yes",
        "set backupskip= writebackup nobackup backupcopy=no",
        "set backupskip= nowritebackup nobackup",
        "set backupskip= backup backupcopy=no",
    };
    size_t mark = httpd_log_mark(srv);
    int m, k, n = 1;

    warm("/vim", 1, 1);
    hammer_start("/vim");
    for (m = 0; m < 4; m++) {
        for (k = 0; k < 2; k++) {
            char rd[256];

            n = n % 4 + 1;
            snprintf(rd, sizeof(rd), "0r %s/stage/%d/h.py", srv->dir, n);
            RUN("vim", "vim", "-u", "NONE", "-i", "NONE", "-N", "-n", "-es", "-c", modes[m],
                "-c", "%d _", "-c", rd, "-c", "wq", "h.py");
            expect_release("/vim", n, 1, 3);
        }
    }
    hammer_end("vim, 4 save modes x 2");
    report_stale("vim, 4 save modes x 2");
    ck_assert_int_eq(our_errors(mark), 0);
}
END_TEST

/* A brief absence (20 ms) of a file that has a good generation is waited
 * out: no 404 and no error line; its new content is served. */
START_TEST(test_brief_absence_waited_out)
{
    size_t mark = httpd_log_mark(srv);
    int n;

    warm("/flap", 1, 1);
    hammer_start("/flap");
    for (n = 2; n <= 21; n++) {
        ck_assert_int_eq(httpd_remove(srv, "flap/h.py"), 0);
        usleep(20 * 1000);
        write_release("flap", n);
        expect_release("/flap", n, n, 2);
    }
    hammer_end("file absent for 20 ms, 20 times");
    report_stale("file absent for 20 ms, 20 times");
    ck_assert_int_eq(our_errors(mark), 0);
    ck_assert_int_eq(httpd_log_count(srv, mark, "PYR0103"), 0);
}
END_TEST

/* A new file that is unreadable (0600, root's) for 20 ms, then chmod'ed, as
 * `install` and `tar` do: waited out, no error line. */
START_TEST(test_brief_unreadable_waited_out)
{
    size_t mark = httpd_log_mark(srv);
    int n;

    warm("/perm", 1, 1);
    hammer_start("/perm");
    for (n = 2; n <= 21; n++) {
        char *tmp = httpd_path(srv, "perm/h.py.new"), *path = httpd_path(srv, "perm/h.py");
        char src[512];
        int fd;

        snprintf(src, sizeof(src),
                 "import pyreload\nimport dep\nMARK = 'h%d'\n"
                 "def handler(req):\n    req.write(MARK + ' ' + dep.MARK)\n"
                 "    return pyreload.OK\n", n);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fchmod(fd, 0600), 0);
        ck_assert_int_eq(write(fd, src, strlen(src)), (ssize_t)strlen(src));
        close(fd);
        ck_assert_int_eq(rename(tmp, path), 0);
        usleep(20 * 1000);
        ck_assert_int_eq(chmod(path, 0644), 0);
        free(tmp);
        free(path);
        expect_release("/perm", n, 1, 2);
    }
    hammer_end("file unreadable for 20 ms, 20 times");
    report_stale("file unreadable for 20 ms, 20 times");
    ck_assert_int_eq(our_errors(mark), 0);
}
END_TEST

/* A lasting absence is still reported, once, and answered 404. */
START_TEST(test_lasting_absence_is_404)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r;

    write_release("flap", 29);
    expect_release("/flap", 29, 29, 1);
    ck_assert_int_eq(httpd_remove(srv, "flap/h.py"), 0);
    r = http_get(srv, "/flap");
    http_assert_status(r, 404);
    http_free(r);
    r = http_get(srv, "/flap");
    http_assert_status(r, 404);
    http_free(r);
    /* once per process that saw it */
    ck_assert_int_ge(httpd_log_count(srv, mark, "PYR0103"), 1);
    ck_assert_int_le(httpd_log_count(srv, mark, "PYR0103"), 2);
    write_release("flap", 30);
    expect_release("/flap", 30, 30, 2);
    report_stale("back after a lasting absence");
}
END_TEST

Suite *
suite_deploy(void)
{
    Suite *s = suite_create("deploy");
    TCase *sw = httpd_tcase("swaps", 60, swap_setup, teardown);
    TCase *tl = httpd_tcase("tools", 90, tool_setup, teardown);

    tcase_add_test(sw, test_release_symlink_ln_sfn);
    tcase_add_test(sw, test_release_symlink_mv_T);
    tcase_add_test(sw, test_dir_replace_mv);
    tcase_add_test(sw, test_dir_replace_rm_rf);
    tcase_add_test(sw, test_interval_counts_first_load);
    suite_add_tcase(s, sw);
    tcase_add_test(tl, test_git_checkout);
    tcase_add_test(tl, test_rsync_rename);
    tcase_add_test(tl, test_rsync_inplace);
    tcase_add_test(tl, test_rsync_quick_check);
    tcase_add_test(tl, test_cp_then_mv);
    tcase_add_test(tl, test_tar_x);
    tcase_add_test(tl, test_install);
    tcase_add_test(tl, test_vim_save_modes);
    tcase_add_test(tl, test_brief_absence_waited_out);
    tcase_add_test(tl, test_brief_unreadable_waited_out);
    tcase_add_test(tl, test_lasting_absence_is_404);
    suite_add_tcase(s, tl);
    return s;
}
