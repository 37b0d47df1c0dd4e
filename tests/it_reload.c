/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_reload.c: the reload engine against a real apache2 (one child, or one
 * prefork process per concurrent client; `make it` runs it under each MPM):
 * every kind of edit is seen, state crosses reloads through
 * __clone__/__upgrade__, failed loads keep the last good generation and log
 * once, requests in flight finish on their own code,
 * __purge__ runs once after the last of them, and many clients during many
 * saves never see a torn or older version.
 *
 * Each handler answers with a version marker so "was it reloaded" is an
 * equality check, never a sleep.
 */
#include "fixture.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static httpd_t *srv;

#define T0 1700000000   /* a fixed second for mtime games */

/* A handler whose body is TEXT, in a file of a chosen size. */
static char *
text_handler(const char *text, int pad)
{
    char *s = malloc(256 + (size_t)pad);

    snprintf(s, 256, "import pyreload\nTEXT = '%s'\n"
             "def handler(req):\n    req.write(TEXT)\n    return pyreload.OK\n", text);
    if (pad > 0) {
        size_t n = strlen(s);
        memset(s + n, '#', (size_t)pad - 1);
        s[n + (size_t)pad - 1] = '\n';
        s[n + (size_t)pad] = '\0';
    }
    return s;
}

static void
put(const char *name, const char *text, int pad)
{
    char *src = text_handler(text, pad);

    ck_assert_int_eq(httpd_write(srv, name, src), 0);
    free(src);
}

static struct stat
stat_of(const char *name)
{
    char *path = httpd_path(srv, name);
    struct stat st;

    ck_assert_msg(stat(path, &st) == 0, "stat %s", path);
    free(path);
    return st;
}

#define same_ts(a, b) ((a).tv_sec == (b).tv_sec && (a).tv_nsec == (b).tv_nsec)

static void
expect(const char *path, long status, const char *body)
{
    http_resp_t *r = http_get(srv, path);

    http_assert_status(r, status);
    if (body) {
        ck_assert_msg(strcmp(r->body, body) == 0, "%s: body '%s', want '%s'", path,
                      r->body, body);
    }
    http_free(r);
}

static const char *config =
    "<Location /same>\n  PyReloadHandler @APP@/same.py\n</Location>\n"
    "<Location /atomic>\n  PyReloadHandler @APP@/atomic.py\n</Location>\n"
    "<Location /size>\n  PyReloadHandler @APP@/size.py\n</Location>\n"
    "<Location /link>\n  PyReloadHandler @APP@/link.py\n</Location>\n"
    "<Location /ctime>\n  PyReloadHandler @APP@/ctime.py\n</Location>\n"
    "<Location /inode>\n  PyReloadHandler @APP@/inode.py\n</Location>\n"
    "<Location /touch>\n  PyReloadHandler @APP@/touch.py\n</Location>\n"
    "<Location /far>\n  PyReloadHandler @APP@/far.py\n</Location>\n"
    "<Location /sealed>\n  PyReloadHandler @APP@/sealed/h.py\n</Location>\n"
    "<Location /origin>\n  PyReloadHandler @APP@/origin.py\n</Location>\n"
    "<Location /syntax>\n  PyReloadHandler @APP@/syntax.py\n</Location>\n"
    "<Location /clonefail>\n  PyReloadHandler @APP@/clonefail.py\n</Location>\n"
    "<Location /upgrade>\n  PyReloadHandler @APP@/upgrade.py\n</Location>\n"
    "<Location /purge>\n  PyReloadHandler @APP@/purge.py\n</Location>\n"
    "<Location /gone>\n  PyReloadHandler @APP@/gone.py\n</Location>\n"
    "<Location /freed>\n  PyReloadHandler @APP@/freed.py\n</Location>\n"
    "<Location /broken>\n  PyReloadHandler @APP@/broken.py\n  PyReloadDebug On\n</Location>\n"
    "<Location /broken-default>\n  PyReloadHandler @APP@/brokendef.py\n</Location>\n"
    "<Location /broken-off>\n  PyReloadHandler @APP@/brokenoff.py\n  PyReloadDebug Off\n"
    "</Location>\n"
    "<Location /frozen>\n  PyReloadHandler @APP@/frozen.py\n  PyReloadCheck Off\n</Location>\n"
    "<Location /frozen-late>\n  PyReloadHandler @APP@/frozenlate.py\n  PyReloadCheck Off\n"
    "</Location>\n"
    "<Location /interval>\n  PyReloadHandler @APP@/interval.py\n"
    "  PyReloadCheckInterval 2000\n</Location>\n";

/* sealed/: a directory the server's children may pass through but not
 * read (0311: not even its owner may list it, and a child never runs as
 * root), so inotify, which needs read permission, cannot watch it. */
static int
sealed_dir(mode_t mode)
{
    char *path = httpd_path(srv, "sealed");
    int rv = chmod(path, mode);

    free(path);
    return rv;
}

static void
setup(void)
{
    static const char *names[] = {"same.py", "atomic.py", "size.py", "v1.py", "v2.py",
                                  "ctime.py", "iv1.py", "iv2.py", "touch.py",
                                  "../releases/far.py", "sealed/h.py",
                                  "origin.py", "syntax.py", "clonefail.py",
                                  "upgrade.py", "purge.py", "gone.py", "freed.py", "broken.py",
                                  "brokendef.py", "brokenoff.py",
                                  "frozen.py", "frozenlate.py", "interval.py", NULL};
    httpd_opts_t o = { .config = config };
    int i;

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    for (i = 0; names[i]; i++) {
        put(names[i], names[i], 0);
    }
    ck_assert_int_eq(httpd_symlink(srv, "v1.py", "link.py"), 0);
    ck_assert_int_eq(httpd_symlink(srv, "iv1.py", "inode.py"), 0);
    ck_assert_int_eq(httpd_symlink(srv, "../releases/far.py", "far.py"), 0);
    ck_assert_int_eq(sealed_dir(0311), 0);
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
teardown(void)
{
    (void)sealed_dir(0755);   /* listable again: the fixture's clean-up, whoever runs it */
    httpd_free(srv);
    srv = NULL;
}

/* ------------------------------------------------------------------ */

START_TEST(test_same_second_edits)
{
    put("same.py", "one", 0);
    httpd_set_mtime(srv, "same.py", T0, 100);
    expect("/same", 200, "one");
    put("same.py", "two", 0);                   /* same size */
    httpd_set_mtime(srv, "same.py", T0, 200);   /* same second */
    expect("/same", 200, "two");
    put("same.py", "six", 0);
    httpd_set_mtime(srv, "same.py", T0, 300);
    expect("/same", 200, "six");
}
END_TEST

START_TEST(test_atomic_rename_save)
{
    char *src = text_handler("renamed-1", 0);

    ck_assert_int_eq(httpd_write_atomic(srv, "atomic.py", src), 0);
    free(src);
    httpd_set_mtime(srv, "atomic.py", T0, 0);
    expect("/atomic", 200, "renamed-1");
    src = text_handler("renamed-2", 0);
    ck_assert_int_eq(httpd_write_atomic(srv, "atomic.py", src), 0);
    free(src);
    httpd_set_mtime(srv, "atomic.py", T0, 0);   /* same size, same mtime */
    expect("/atomic", 200, "renamed-2");
}
END_TEST

START_TEST(test_size_change_mtime_restored)
{
    put("size.py", "small", 0);
    httpd_set_mtime(srv, "size.py", T0, 0);
    expect("/size", 200, "small");
    put("size.py", "bigger", 40);
    httpd_set_mtime(srv, "size.py", T0, 0);
    expect("/size", 200, "bigger");
}
END_TEST

START_TEST(test_symlink_swap)
{
    put("v1.py", "release-1", 0);
    put("v2.py", "release-2", 0);
    httpd_set_mtime(srv, "v1.py", T0, 0);
    httpd_set_mtime(srv, "v2.py", T0, 0);
    ck_assert_int_eq(httpd_symlink(srv, "v1.py", "link.py"), 0);
    expect("/link", 200, "release-1");
    ck_assert_int_eq(httpd_symlink(srv, "v2.py", "link.py"), 0);
    expect("/link", 200, "release-2");
    ck_assert_int_eq(httpd_symlink(srv, "v1.py", "link.py"), 0);
    expect("/link", 200, "release-1");
}
END_TEST

/* cp -p, rsync -t --inplace: rewritten in place, same size, the old mtime
 * put back; only ctime tells.  The rewrite is repeated (bounded) until the
 * kernel's ctime tick has moved past the ctime of the loaded version, so the
 * test ends on a real ctime-only change whatever the file system's
 * granularity, and checks that it is one before asking. */
START_TEST(test_ctime_only_change)
{
    struct stat loaded, now;
    int tries;

    put("ctime.py", "one", 0);
    httpd_set_mtime(srv, "ctime.py", T0, 0);
    expect("/ctime", 200, "one");
    expect("/ctime", 200, "one");
    loaded = stat_of("ctime.py");
    for (tries = 0; tries < 300; tries++) {
        put("ctime.py", "two", 0);                  /* same size */
        httpd_set_mtime(srv, "ctime.py", T0, 0);    /* same mtime */
        now = stat_of("ctime.py");
        if (!same_ts(now.st_ctim, loaded.st_ctim)) {
            break;
        }
        usleep(10 * 1000);
    }
    ck_assert_msg(!same_ts(now.st_ctim, loaded.st_ctim), "ctime did not move in %d rewrites",
                  tries);
    ck_assert(now.st_ino == loaded.st_ino && now.st_size == loaded.st_size
              && same_ts(now.st_mtim, loaded.st_mtim));
    expect("/ctime", 200, "two");
}
END_TEST

/* Only the inode differs: iv1.py and iv2.py have one size, one mtime and
 * equal ctimes, and inode.py is a symlink swapped between them by rename
 * (which changes the link's own ctime, never its targets': the server's
 * stat follows the link).  ctime cannot be set: both mtimes are set back to
 * back until the two calls land in one ctime tick (bounded), and the
 * precondition is checked again after each swap, not trusted.  Twice per
 * try, for multigrain timestamps (see unit_source.c's test_inode_only_swap):
 * the first round spends the fine clock a read ctime earns. */
static void
only_inodes_differ(void)
{
    struct stat a = stat_of("iv1.py"), b = stat_of("iv2.py");

    ck_assert(a.st_dev == b.st_dev && a.st_ino != b.st_ino && a.st_size == b.st_size);
    ck_assert(same_ts(a.st_mtim, b.st_mtim));
    ck_assert_msg(same_ts(a.st_ctim, b.st_ctim), "ctimes %ld.%09ld and %ld.%09ld",
                  (long)a.st_ctim.tv_sec, a.st_ctim.tv_nsec, (long)b.st_ctim.tv_sec,
                  b.st_ctim.tv_nsec);
}

START_TEST(test_inode_only_swap)
{
    struct stat a, b;
    int tries, k;

    put("iv1.py", "inode-1", 0);
    put("iv2.py", "inode-2", 0);
    for (tries = 0; tries < 200; tries++) {
        for (k = 0; k < 2; k++) {
            httpd_set_mtime(srv, "iv1.py", T0, 0);
            httpd_set_mtime(srv, "iv2.py", T0, 0);
        }
        a = stat_of("iv1.py");
        b = stat_of("iv2.py");
        if (same_ts(a.st_ctim, b.st_ctim)) {
            break;
        }
    }
    only_inodes_differ();
    ck_assert_int_eq(httpd_symlink(srv, "iv1.py", "inode.py"), 0);
    expect("/inode", 200, "inode-1");
    expect("/inode", 200, "inode-1");
    ck_assert_int_eq(httpd_symlink(srv, "iv2.py", "inode.py"), 0);
    only_inodes_differ();
    expect("/inode", 200, "inode-2");
    ck_assert_int_eq(httpd_symlink(srv, "iv1.py", "inode.py"), 0);
    expect("/inode", 200, "inode-1");
    only_inodes_differ();
}
END_TEST

/* Once a few quiet requests have made the checks trust inotify's "nothing
 * happened", a change must still raise an event that is watched: */

/* `touch` alone (the times move, nothing is written) reloads; */
START_TEST(test_touch_reloads)
{
    int i;

    httpd_write(srv, "touch.py", "import pyreload\ndef handler(req):\n"
                "    req.write('gen=%d' % __generation__)\n    return pyreload.OK\n");
    httpd_set_mtime(srv, "touch.py", T0, 1);
    for (i = 0; i < 4; i++) {
        expect("/touch", 200, "gen=1");
    }
    ck_assert_int_eq(httpd_set_mtime(srv, "touch.py", T0, 2), 0);
    expect("/touch", 200, "gen=2");
}
END_TEST

/* url serves file's text `before` through a few quiet requests (enough for
 * the checks to trust "nothing happened"), then an in-place edit to `after`
 * reaches the next request.  Each save gets an mtime of its own. */
static void
quiet_then_edit(const char *url, const char *file, const char *before, const char *after)
{
    static long tick;
    int i;

    put(file, before, 0);
    httpd_set_mtime(srv, file, T0, ++tick);
    for (i = 0; i < 4; i++) {
        expect(url, 200, before);
    }
    put(file, after, 0);
    httpd_set_mtime(srv, file, T0, ++tick);
    expect(url, 200, after);
}

/* and so does an in-place edit of a symlinked handler's target in another
 * directory (app/far.py -> ../releases/far.py), under no name of app/. */
START_TEST(test_symlink_target_elsewhere)
{
    quiet_then_edit("/far", "../releases/far.py", "far-1", "far-2");
}
END_TEST

/* A directory that cannot be watched is stat'ed on every request: an edit
 * there is seen by the next request, however quiet the requests before. */
START_TEST(test_unwatchable_directory_is_stated)
{
    quiet_then_edit("/sealed", "sealed/h.py", "sealed-1", "sealed-2");
    quiet_then_edit("/sealed", "sealed/h.py", "sealed-3", "sealed-4");
}
END_TEST

/* The design's own example (../shared/origin.txt), in Python 3. */
static const char origin_src[] =
    "import pyreload\n"
    "from threading import Lock\n"
    "def __clone__(module):\n"
    "    _lock.acquire()\n"
    "    module._lock = _lock\n"
    "    module._data = _data\n"
    "    _data['reloads'] = _data['reloads'] + 1\n"
    "    _lock.release()\n"
    "if '_lock' not in globals():\n"
    "    _lock = Lock()\n"
    "    _data = {'reloads': 0}\n"
    "_cache = {}\n"
    "def handler(req):\n"
    "    req.write('reloads=%%d lock=%%d gen=%%d' %% (_data['reloads'], id(_lock), __generation__))\n"
    "    return pyreload.OK\n"
    "# edit %d\n";

START_TEST(test_origin_clone_example)
{
    char src[1024];
    http_resp_t *first, *last;
    int i;

    snprintf(src, sizeof(src), origin_src, 0);
    httpd_write(srv, "origin.py", src);
    httpd_set_mtime(srv, "origin.py", T0, 0);
    first = http_get(srv, "/origin");
    http_assert_body_has(first, "reloads=0 ");
    for (i = 1; i <= 5; i++) {
        snprintf(src, sizeof(src), origin_src, i);
        httpd_write(srv, "origin.py", src);
        httpd_set_mtime(srv, "origin.py", T0, i);
        expect("/origin", 200, NULL);
    }
    last = http_get(srv, "/origin");
    http_assert_body_has(last, "reloads=5 ");
    http_assert_body_has(last, " gen=6");
    /* The same Lock object all along. */
    ck_assert_msg(strncmp(strstr(first->body, "lock="), strstr(last->body, "lock="),
                          strcspn(strstr(first->body, "lock="), " ")) == 0,
                  "lock changed: %s vs %s", first->body, last->body);
    http_free(first);
    http_free(last);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A purged generation's objects are freed once its last request has ended,
 * without anyone calling gc.collect(): each generation keeps a weak
 * reference to its own class Gone in a list that __clone__ carries (state
 * that must survive).  Generation 2 also makes a Kept object, carried on:
 * what the application still holds keeps its module's globals alive and
 * working. */

static const char freed_src[] =
    "import pyreload, weakref\n"
    "TEXT = '%s'\n"
    "class Gone:\n"
    "    pass\n"
    "class Kept:\n"
    "    def hello(self):\n"
    "        return 'kept:' + TEXT\n"
    "def __clone__(module):\n"
    "    module.refs = refs\n"
    "    module.kept = kept\n"
    "if 'refs' not in globals():\n"
    "    refs, kept = [], None\n"
    "refs.append(weakref.ref(Gone))\n"
    "if TEXT == 'v2':\n"
    "    kept = Kept()\n"
    "def handler(req):\n"
    "    alive = ''.join('0' if r() is None else '1' for r in refs)\n"
    "    req.write('%%s gen=%%d alive=%%s %%s' %% (TEXT, __generation__, alive,\n"
    "              kept.hello() if kept else '-'))\n"
    "    return pyreload.OK\n";

/* Version text of a handler made from fmt (one %s), saved at T0 + nsec. */
static void
put_version(httpd_t *h, const char *name, const char *fmt, const char *text, long nsec)
{
    char src[2048];

    snprintf(src, sizeof(src), fmt, text);
    ck_assert_int_eq(httpd_write(h, name, src), 0);
    httpd_set_mtime(h, name, T0, nsec);
}

static void
freed_put(const char *text, long nsec)
{
    put_version(srv, "freed.py", freed_src, text, nsec);
}

/* The collection runs after the response that ended the generation's last
 * request: the next requests see it done (bounded wait). */
static void
expect_freed(const char *body)
{
    http_resp_t *r = NULL;
    int i;

    for (i = 0; i < 60; i++) {
        http_free(r);
        r = http_get(srv, "/freed");
        if (r->status == 200 && strcmp(r->body, body) == 0) {
            break;
        }
        usleep(50 * 1000);
    }
    http_assert_status(r, 200);
    ck_assert_msg(strcmp(r->body, body) == 0, "body '%s', want '%s'", r->body, body);
    http_free(r);
}

START_TEST(test_purged_generation_freed)
{
    freed_put("v1", 1);
    expect("/freed", 200, "v1 gen=1 alive=1 -");
    freed_put("v2", 2);
    expect_freed("v2 gen=2 alive=01 kept:v2");
    freed_put("v3", 3);
    /* Generation 2 lives on through the Kept object it made, and works. */
    expect_freed("v3 gen=3 alive=011 kept:v2");
}
END_TEST

/* ------------------------------------------------------------------ */
/* In flight: a request that sleeps finishes on its code while new
 * requests already run the new code; __purge__ waits for it. */

static const char slow_src[] =
    "import pyreload, time, sys\n"
    "TEXT = '%s'\n"
    "def __purge__():\n"
    "    print('PURGED %%s generation %%d' %% (__file__, __generation__))\n"
    "    sys.stdout.flush()\n"
    "def handler(req):\n"
    "    if req.args == 'sleep':\n"
    "        time.sleep(1.5)\n"
    "    req.write(TEXT + ' gen=%%d' %% __generation__)\n"
    "    return pyreload.OK\n";

static httpd_t *isrv;

static void
slow_put(const char *text, long nsec)
{
    put_version(isrv, "slow.py", slow_src, text, nsec);
}

/* Under prefork a process serves one request at a time, so the request made
 * while the slow one runs goes to the other process (procs = 2): the slow
 * request's process is then reached again through the keep-alive connection
 * that ran it, and its old generation is purged when that process loads the
 * new code.  Under event and worker everything happens in the one process. */
static void
isetup(void)
{
    httpd_opts_t o = { .config = "<Location /slow>\n  PyReloadHandler @APP@/slow.py\n"
                                 "</Location>\n", .procs = 2 };

    isrv = httpd_new(&o);
    ck_assert_ptr_nonnull(isrv);
    slow_put("old", 1);
    if (httpd_start(isrv) != 0) {
        httpd_dump_log_tail(isrv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
iteardown(void)
{
    httpd_free(isrv);
    isrv = NULL;
}

typedef struct {
    http_client_t *client;
    http_resp_t *resp;
} bg_t;

static void *
bg_slow(void *arg)
{
    bg_t *b = arg;

    b->resp = http_client_get(b->client, "/slow?sleep");
    return NULL;
}

static void
expect_on(http_client_t *c, const char *body)
{
    http_resp_t *r = http_client_get(c, "/slow");

    http_assert_status(r, 200);
    ck_assert_msg(strcmp(r->body, body) == 0, "body '%s', want '%s'", r->body, body);
    http_free(r);
}

START_TEST(test_in_flight_finishes_on_old_code)
{
    bg_t b = { http_client_new(isrv), NULL };
    pthread_t t;
    http_resp_t *r;
    size_t mark;

    expect_on(b.client, "old gen=1");
    mark = httpd_log_mark(isrv);
    pthread_create(&t, NULL, bg_slow, &b);
    usleep(300 * 1000);                     /* the slow request is running */
    slow_put("new", 2);
    r = http_get(isrv, "/slow");
    /* prefork: the other process, whose first load this may be */
    ck_assert_msg(!strcmp(r->body, "new gen=2")
                  || (!strcmp(httpd_mpm(isrv), "prefork") && !strcmp(r->body, "new gen=1")),
                  "body '%s', want 'new gen=2'", r->body);
    ck_assert_msg(r->total_ms < 1000, "the new request waited %.0f ms", r->total_ms);
    http_free(r);
    /* Generation 1 is retired but still in use: not purged yet. */
    ck_assert_int_eq(httpd_log_count(isrv, mark, "PURGED"), 0);
    pthread_join(t, NULL);
    ck_assert_str_eq(b.resp->body, "old gen=1");
    ck_assert_msg(b.resp->total_ms >= 1400, "slow request took %.0f ms", b.resp->total_ms);
    http_free(b.resp);
    /* Now it is, exactly once (prefork: once its process has looked). */
    expect_on(b.client, "new gen=2");
    ck_assert(httpd_log_wait(isrv, mark, "PURGED", 1, 3000));
    ck_assert_int_eq(httpd_log_count(isrv, mark, "slow.py generation 1"), 1);
    /* An idle generation is purged as soon as it is replaced. */
    slow_put("newer", 3);
    expect_on(b.client, "newer gen=3");
    ck_assert(httpd_log_wait(isrv, mark, "slow.py generation 2", 1, 3000));
    usleep(100 * 1000);
    ck_assert_int_eq(httpd_log_count(isrv, mark, "PURGED"), 2);
    http_client_free(b.client);
}
END_TEST

/* ------------------------------------------------------------------ */

START_TEST(test_syntax_error_then_fix)
{
    size_t mark;
    int i;

    put("syntax.py", "good", 0);
    httpd_set_mtime(srv, "syntax.py", T0, 1);
    expect("/syntax", 200, "good");
    mark = httpd_log_mark(srv);
    httpd_write(srv, "syntax.py", "import pyreload\ndef handler(req)\n    return 0\n");
    httpd_set_mtime(srv, "syntax.py", T0, 2);
    for (i = 0; i < 5; i++) {
        expect("/syntax", 200, "good");         /* the last good code serves */
    }
    ck_assert_int_eq(httpd_log_count(srv, mark, "SyntaxError"), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "syntax.py\", line 2"), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "load failed"), 1);
    put("syntax.py", "fixed", 0);
    httpd_set_mtime(srv, "syntax.py", T0, 3);
    expect("/syntax", 200, "fixed");
    ck_assert_int_eq(httpd_log_count(srv, mark, "SyntaxError"), 1);
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

START_TEST(test_clone_raising_keeps_old)
{
    size_t mark;

    httpd_write(srv, "clonefail.py",
                "import pyreload\n"
                "def __clone__(new):\n    raise KeyError('cannot carry')\n"
                "def handler(req):\n    req.write('before')\n    return pyreload.OK\n");
    httpd_set_mtime(srv, "clonefail.py", T0, 1);
    expect("/clonefail", 200, "before");
    mark = httpd_log_mark(srv);
    put("clonefail.py", "after", 0);
    httpd_set_mtime(srv, "clonefail.py", T0, 2);
    expect("/clonefail", 200, "before");
    expect("/clonefail", 200, "before");
    ck_assert_int_eq(httpd_log_count(srv, mark, "KeyError: 'cannot carry'"), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "in __clone__"), 1);
}
END_TEST

static const char upgrade_v1[] =
    "import pyreload\n"
    "if 'store' not in globals(): store = {'format': 1, 'users': ['ann', 'bob']}\n"
    "def __clone__(new):\n    new.store = store\n"
    "def handler(req):\n"
    "    req.write('format=%d gen=%d users=%r' % (store['format'], __generation__, store['users']))\n"
    "    return pyreload.OK\n";

static const char upgrade_v2[] =
    "import pyreload\n"
    "def __clone__(new):\n    new.store = store\n"
    "def __upgrade__(old):\n"
    "    # version 2 keeps users as {name: visits}\n"
    "    if store['format'] == 1:\n"
    "        store['users'] = {u: 0 for u in store['users']}\n"
    "        store['format'] = 2\n"
    "    store['upgraded_from'] = old.__generation__\n"
    "def handler(req):\n"
    "    store['users']['ann'] += 1\n"
    "    req.write('format=%d gen=%d from=%d users=%r' % (store['format'], __generation__,\n"
    "              store['upgraded_from'], sorted(store['users'].items())))\n"
    "    return pyreload.OK\n";

START_TEST(test_upgrade_converts_data)
{
    httpd_write(srv, "upgrade.py", upgrade_v1);
    httpd_set_mtime(srv, "upgrade.py", T0, 1);
    expect("/upgrade", 200, "format=1 gen=1 users=['ann', 'bob']");
    httpd_write(srv, "upgrade.py", upgrade_v2);
    httpd_set_mtime(srv, "upgrade.py", T0, 2);
    expect("/upgrade", 200, "format=2 gen=2 from=1 users=[('ann', 1), ('bob', 0)]");
    /* v2 again (a new edit): the data is already in format 2 and carried on. */
    httpd_write(srv, "upgrade.py", upgrade_v2);
    httpd_set_mtime(srv, "upgrade.py", T0, 3);
    expect("/upgrade", 200, "format=2 gen=3 from=2 users=[('ann', 2), ('bob', 0)]");
}
END_TEST

START_TEST(test_deleted_then_restored)
{
    static const char src[] =
        "import pyreload\n"
        "if 'hits' not in globals(): hits = {'n': 0}\n"
        "def __clone__(new):\n    new.hits = hits\n"
        "def handler(req):\n"
        "    hits['n'] += 1\n"
        "    req.write('%s n=%%d' %% hits['n'])\n"
        "    return pyreload.OK\n";
    char buf[512];
    size_t mark;

    snprintf(buf, sizeof(buf), src, "here");
    httpd_write(srv, "gone.py", buf);
    httpd_set_mtime(srv, "gone.py", T0, 1);
    expect("/gone", 200, "here n=1");
    mark = httpd_log_mark(srv);
    ck_assert_int_eq(httpd_remove(srv, "gone.py"), 0);
    expect("/gone", 404, NULL);
    expect("/gone", 404, NULL);
    ck_assert_int_eq(httpd_log_count(srv, mark, "PYR0103"), 1);
    snprintf(buf, sizeof(buf), src, "back");
    httpd_write(srv, "gone.py", buf);
    expect("/gone", 200, "back n=2");
}
END_TEST

START_TEST(test_failed_first_load_debug_page)
{
    http_resp_t *r;

    httpd_write(srv, "broken.py", "import pyreload\nraise ValueError('cold start')\n");
    httpd_set_mtime(srv, "broken.py", T0, 1);
    r = http_get(srv, "/broken");
    http_assert_status(r, 500);
    http_assert_body_has(r, "ValueError: cold start");
    http_assert_body_has(r, "broken.py\", line 2");
    http_free(r);
    put("broken.py", "mended", 0);
    httpd_set_mtime(srv, "broken.py", T0, 2);
    expect("/broken", 200, "mended");
}
END_TEST

/* Without PyReloadDebug On (not set, or Off), a file that cannot load gives
 * the client Apache's plain 500: no exception, no path; the traceback goes
 * to the error log, once. */
static const struct {
    const char *url, *file;
} QUIET_FAILS[] = {
    {"/broken-default", "brokendef.py"},   /* PyReloadDebug not set */
    {"/broken-off", "brokenoff.py"},       /* PyReloadDebug Off */
};

START_TEST(test_failed_first_load_no_debug)
{
    const char *file = QUIET_FAILS[_i].file;
    char *path = httpd_path(srv, file), *line;
    size_t mark = httpd_log_mark(srv);
    int i;

    httpd_write(srv, file, "import pyreload\nraise ValueError('PYRT-cold-secret')\n");
    httpd_set_mtime(srv, file, T0, 1);
    for (i = 0; i < 2; i++) {
        http_resp_t *r = http_get(srv, QUIET_FAILS[_i].url);

        http_assert_status(r, 500);
        http_assert_body_lacks(r, "PYRT-cold-secret");
        http_assert_body_lacks(r, "ValueError");
        http_assert_body_lacks(r, "Traceback");
        http_assert_body_lacks(r, file);
        http_assert_body_lacks(r, srv->app);
        http_free(r);
    }
    ck_assert_int_eq(httpd_log_count(srv, mark, "ValueError: PYRT-cold-secret"), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "Traceback (most recent call last)"), 1);
    line = httpd_log_line(srv, mark, "\", line 2");
    ck_assert_msg(line && strstr(line, path), "no traceback line naming %s", path);
    free(line);
    free(path);
}
END_TEST

START_TEST(test_check_off_freezes)
{
    put("frozen.py", "ice", 0);
    httpd_set_mtime(srv, "frozen.py", T0, 1);
    expect("/frozen", 200, "ice");
    put("frozen.py", "melted", 0);
    httpd_set_mtime(srv, "frozen.py", T0, 2);
    expect("/frozen", 200, "ice");
}
END_TEST

/* PyReloadCheck Off freezes a file after its first successful load: one
 * that failed is looked at again until it loads, then frozen. */
START_TEST(test_check_off_after_failed_first_load)
{
    int i;

    httpd_write(srv, "frozenlate.py", "import pyreload\nraise ValueError('not yet')\n");
    httpd_set_mtime(srv, "frozenlate.py", T0, 1);
    for (i = 0; i < 2; i++) {
        expect("/frozen-late", 500, NULL);
    }
    put("frozenlate.py", "thawed", 0);
    httpd_set_mtime(srv, "frozenlate.py", T0, 2);
    expect("/frozen-late", 200, "thawed");
    put("frozenlate.py", "melted", 0);
    httpd_set_mtime(srv, "frozenlate.py", T0, 3);
    expect("/frozen-late", 200, "thawed");
}
END_TEST

static double
ms_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* PyReloadCheckInterval 2000: a file is looked at no more than once per 2 s,
 * so an edit right after a look is not seen yet; it is seen once the
 * interval has run.  The clock starts before the first request (every look
 * is after it), and "not seen yet" is only asserted when the request ended
 * inside the interval, so a slow machine cannot make the test lie. */
START_TEST(test_check_interval_throttles)
{
    struct timespec t0;
    http_resp_t *r;
    double ms;
    int i, seen = 0;

    put("interval.py", "look-1", 0);
    httpd_set_mtime(srv, "interval.py", T0, 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect("/interval", 200, "look-1");
    expect("/interval", 200, "look-1");
    put("interval.py", "look-2", 0);
    httpd_set_mtime(srv, "interval.py", T0, 2);
    r = http_get(srv, "/interval");
    ms = ms_since(&t0);
    http_assert_status(r, 200);
    if (ms < 2000) {
        ck_assert_msg(strcmp(r->body, "look-1") == 0, "%.0f ms after the first request: '%s'",
                      ms, r->body);
    }
    else {
        fprintf(stderr, "interval: the machine took %.0f ms; staleness not asserted\n", ms);
    }
    http_free(r);
    for (i = 0; i < 60 && !seen; i++) {
        usleep(100 * 1000);
        r = http_get(srv, "/interval");
        seen = r->status == 200 && strcmp(r->body, "look-2") == 0;
        http_free(r);
    }
    ck_assert_msg(seen, "the edit was not seen %.0f ms after the first look", ms_since(&t0));
}
END_TEST

/* ------------------------------------------------------------------ */
/* Many clients while the file is saved again and again. */

#define CLIENTS 8
#define SAVES 200
#define BODY_PAD 2000

static httpd_t *csrv;
static volatile int writer_done;

typedef struct {
    long requests, failures, torn, backwards, last;
    char why[256];
} client_stats_t;

/* version %06d, a fixed-size pad and an end marker: anything else is torn. */
static int
parse_body(const char *body, size_t len, long *version)
{
    char end[32];

    if (len != 15 + BODY_PAD + 4 || sscanf(body, "version %06ld ", version) != 1) {
        return -1;
    }
    snprintf(end, sizeof(end), "END\n");
    return memcmp(body + len - 4, end, 4) == 0 ? 0 : -1;
}

static void *
client(void *arg)
{
    client_stats_t *st = arg;
    http_client_t *c = http_client_new(csrv);

    while (!__atomic_load_n(&writer_done, __ATOMIC_ACQUIRE)) {
        http_resp_t *r = http_client_get(c, "/c");
        long v;

        st->requests++;
        if (r->status != 200) {
            st->failures++;
            snprintf(st->why, sizeof(st->why), "status %ld %.200s", r->status, r->error);
        }
        else if (parse_body(r->body, r->len, &v) != 0) {
            st->torn++;
            snprintf(st->why, sizeof(st->why), "torn body (%zu bytes): %.60s", r->len, r->body);
        }
        else {
            if (v < st->last) {
                st->backwards++;
                snprintf(st->why, sizeof(st->why), "saw %ld after %ld", v, st->last);
            }
            st->last = v;
        }
        http_free(r);
    }
    http_client_free(c);
    return NULL;
}

static char *
versioned(long v)
{
    char *s = malloc(512 + BODY_PAD);

    snprintf(s, 512 + BODY_PAD,
             "import pyreload\n"
             "BODY = 'version %06ld ' + '.' * %d + 'END\\n'\n"
             "def handler(req):\n"
             "    req.content_type = 'text/plain'\n"
             "    req.write(BODY)\n"
             "    return pyreload.OK\n", v, BODY_PAD);
    return s;
}

static void
csetup(void)
{
    char *src = versioned(0);
    httpd_file_t files[] = {{"c.py", src}, {NULL, NULL}};
    /* prefork: one process per keep-alive client, and one for our own */
    httpd_opts_t o = { .config = "<Location /c>\n  PyReloadHandler @APP@/c.py\n</Location>\n",
                       .files = files, .loglevel = "notice", .procs = CLIENTS + 1 };

    csrv = httpd_launch(&o);
    free(src);
    ck_assert_msg(csrv != NULL, "httpd did not start");
}

static void
cteardown(void)
{
    httpd_free(csrv);
    csrv = NULL;
}

START_TEST(test_concurrent_clients_during_saves)
{
    pthread_t t[CLIENTS];
    client_stats_t st[CLIENTS];
    http_client_t *me = http_client_new(csrv);
    long total = 0, stale_reads = 0;
    int i;

    memset(st, 0, sizeof(st));
    writer_done = 0;
    for (i = 0; i < CLIENTS; i++) {
        pthread_create(&t[i], NULL, client, &st[i]);
    }
    /* 200 saves over ~10 s, alternating in-place writes and atomic renames.
     * After each save has completed, a request of our own must see it. */
    for (i = 1; i <= SAVES; i++) {
        char *src = versioned(i);
        http_resp_t *r;
        long v = -1;

        if (i % 2) {
            ck_assert_int_eq(httpd_write(csrv, "c.py", src), 0);
        }
        else {
            ck_assert_int_eq(httpd_write_atomic(csrv, "c.py", src), 0);
        }
        free(src);
        r = http_client_get(me, "/c");
        if (r->status != 200 || parse_body(r->body, r->len, &v) != 0 || v != i) {
            stale_reads++;
        }
        http_free(r);
        usleep(48 * 1000);
    }
    __atomic_store_n(&writer_done, 1, __ATOMIC_RELEASE);
    for (i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        total += st[i].requests;
        ck_assert_msg(st[i].failures == 0 && st[i].torn == 0 && st[i].backwards == 0,
                      "client %d: %ld failed, %ld torn, %ld went backwards of %ld (%s)", i,
                      st[i].failures, st[i].torn, st[i].backwards, st[i].requests, st[i].why);
    }
    http_client_free(me);
    ck_assert_msg(stale_reads == 0, "%ld of %d saves were not seen by the next request",
                  stale_reads, SAVES);
    ck_assert_msg(total > CLIENTS * 100, "only %ld requests in all", total);
    ck_assert(httpd_log_no_crash(csrv, 0));
    ck_assert_int_eq(httpd_log_count(csrv, 0, "load failed"), 0);
    fprintf(stderr, "concurrency: %ld requests by %d clients during %d saves\n", total,
            CLIENTS, SAVES);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Memory: many reloads do not grow the child, and old generations die.
 * Each reload goes through what a reload can hold on to: a new generation
 * with __clone__, __upgrade__ and __purge__, a reloadable dependency rebuilt
 * every other time, a request-time import, and every tenth time a failed
 * load (traceback, report text) before the good one.  Three signals, each
 * failing on a leak of one object (or 8 bytes) per reload: generations
 * still alive (weak references), Python's allocated blocks, and the bytes
 * malloc has handed out (mallinfo2: C-level leaks of the engine, APR pool
 * growth, large Python objects), besides RSS. */

#define RELOADS 2000
#define WARMUP 1500

static const char mem_src[] =
    "import pyreload, sys, weakref, gc\n"
    "import helper\n"
    "import ca\n"
    "class Marker: pass\n"
    "marker = Marker()\n"
    "sys.__dict__.setdefault('_pyr_alive', weakref.WeakSet()).add(marker)\n"
    "sys._pyr_made = getattr(sys, '_pyr_made', 0) + 1\n"
    "TABLE = {i: str(i) * 3 for i in range(200)}\n"
    "if 'state' not in globals():\n"
    "    state = {'upgrades': 0, 'purges': 0}\n"
    "def __clone__(new):\n"
    "    new.state = state\n"
    "def __upgrade__(old):\n"
    "    state['upgrades'] += 1\n"
    "def __purge__():\n"
    "    state['purges'] += 1\n"
    "def malloc_in_use():\n"
    "    # one ctypes prototype for the process: a new one per reload would\n"
    "    # grow ctypes' own caches\n"
    "    if '_pyr_mallinfo' not in sys.__dict__:\n"
    "        import ctypes\n"
    "        class MI(ctypes.Structure):\n"
    "            _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks',\n"
    "                        'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',\n"
    "                        'fordblks', 'keepcost')]\n"
    "        f = ctypes.CDLL(None).mallinfo2\n"
    "        f.restype = MI\n"
    "        sys._pyr_mallinfo = f\n"
    "    mi = sys._pyr_mallinfo()\n"
    "    return mi.uordblks + mi.hblkhd\n"
    "def handler(req):\n"
    "    import later\n"
    "    if req.args == 'alive':\n"
    "        gc.collect()\n"
    "        mi = malloc_in_use()\n"
    "        req.write('%%d/%%d/%%d/%%d/%%d/%%d' %% (len(sys._pyr_alive), sys._pyr_made,\n"
    "                  sys.getallocatedblocks(), mi, state['upgrades'], state['purges']))\n"
    "    else:\n"
    "        req.write('%ld ' + helper.VERSION + later.NAME)\n"
    "    return pyreload.OK\n";

static void
msetup(void)
{
    /* glibc's per-thread caches keep freed chunks, which mallinfo2 counts
     * as in use and which fill up slowly over 16 worker threads (~150 B per
     * reload for the first thousands): without them malloc's bytes in use
     * are exact, and flat over reloads (+0 B over 2000). */
    static const char *const env[] = {"GLIBC_TUNABLES=glibc.malloc.tcache_count=0", NULL};
    httpd_opts_t o = { .config = "<Location /m>\n  PyReloadHandler @APP@/m.py\n</Location>\n",
                       .loglevel = "crit", .env = env };
    char src[4096];

    snprintf(src, sizeof(src), mem_src, 0L);
    csrv = httpd_new(&o);
    ck_assert_ptr_nonnull(csrv);
    httpd_write(csrv, "m.py", src);
    httpd_write(csrv, "helper.py", "VERSION = 'h0'\n");
    httpd_write(csrv, "later.py", "NAME = '.'\n");
    /* An import cycle: its old generations hold each other. */
    httpd_write(csrv, "ca.py", "import cb\nA = 1\n");
    httpd_write(csrv, "cb.py", "import ca\nB = 2\n");
    if (httpd_start(csrv) != 0) {
        httpd_dump_log_tail(csrv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
get_expect(http_client_t *c, long i, const char *want)
{
    http_resp_t *r = http_client_get(c, "/m");

    ck_assert_msg(r->status == 200 && strcmp(r->body, want) == 0,
                  "reload %ld: status %ld body '%s', want '%s'", i, r->status, r->body, want);
    http_free(r);
}

static void
reload_n(http_client_t *c, long from, long n)
{
    char src[4096], want[64], helper[32];
    long i, hv = (from - 1) / 2;

    for (i = from; i < from + n; i++) {
        int64_t sec = T0 + i / 1000000;
        long ns = (i % 1000000) * 1000;

        if (i % 10 == 0) {          /* a failed load: the last good one serves */
            ck_assert_int_eq(httpd_write(csrv, "m.py", "import pyreload\ndef handler(req)\n"), 0);
            httpd_set_mtime(csrv, "m.py", sec, ns + 1);
            snprintf(want, sizeof(want), "%ld h%ld.", i - 1, hv);
            get_expect(c, i, want);
        }
        if (i % 2 == 0) {           /* the dependency changes too */
            hv = i / 2;
            snprintf(helper, sizeof(helper), "VERSION = 'h%ld'\n", hv);
            ck_assert_int_eq(httpd_write(csrv, "helper.py", helper), 0);
            httpd_set_mtime(csrv, "helper.py", sec, ns);
            httpd_set_mtime(csrv, "cb.py", sec, ns);
        }
        snprintf(src, sizeof(src), mem_src, i);
        ck_assert_int_eq(httpd_write(csrv, "m.py", src), 0);
        httpd_set_mtime(csrv, "m.py", sec, ns + 2);
        snprintf(want, sizeof(want), "%ld h%ld.", i, hv);
        get_expect(c, i, want);
    }
}

typedef struct {
    int alive, made, upgrades, purges;
    long blocks, malloced;
} mem_stats_t;

static mem_stats_t
mem_stats(http_client_t *c)
{
    mem_stats_t m;
    http_resp_t *r = http_client_get(c, "/m?alive");

    ck_assert_msg(sscanf(r->body, "%d/%d/%ld/%ld/%d/%d", &m.alive, &m.made, &m.blocks,
                         &m.malloced, &m.upgrades, &m.purges) == 6,
                  "status %ld body '%.500s'", r->status, r->body);
    http_free(r);
    return m;
}

START_TEST(test_memory_over_reloads)
{
    http_client_t *c = http_client_new(csrv);
    pid_t child = httpd_child(csrv);
    /* Under AddressSanitizer RSS and mallinfo measure its quarantine, and
     * Python has no blocks of its own: a few reloads, and LeakSanitizer at
     * the child's exit says whether any of them leaked. */
    int san = httpd_sanitizing();
    long warmup = san ? 50 : WARMUP, reloads = san ? 200 : RELOADS;
    long before, after;
    mem_stats_t m0, m1;

    ck_assert_int_gt(child, 0);
    /* Warm-up long enough for every worker thread's malloc caches to fill:
     * what follows then measures reloads, not glibc's high-water marks. */
    reload_n(c, 1, warmup);
    m0 = mem_stats(c);
    before = httpd_rss_kb(child);
    reload_n(c, warmup + 1, reloads);
    after = httpd_rss_kb(child);
    ck_assert_int_eq(httpd_child(csrv), child);  /* same process throughout */
    m1 = mem_stats(c);
    http_client_free(c);
    fprintf(stderr, "memory: RSS %ld kB -> %ld kB over %ld reloads (%+ld kB); Python blocks "
            "%ld -> %ld; malloc'd %ld -> %ld kB (%+.1f B/reload); %d of %d generations alive\n",
            before, after, reloads, after - before, m0.blocks, m1.blocks, m0.malloced / 1024,
            m1.malloced / 1024, (double)(m1.malloced - m0.malloced) / (double)reloads,
            m1.alive, m1.made);
    ck_assert_int_eq(m1.made, reloads + warmup);
    ck_assert_msg(m1.alive <= 2, "%d old generations still alive", m1.alive);
    ck_assert_int_eq(m1.upgrades, reloads + warmup - 1);
    ck_assert_msg(m1.purges >= reloads + warmup - 2, "%d purges for %ld reloads", m1.purges,
                  reloads + warmup);
    if (san) {
        return;
    }
    /* The leak signals: Python's live blocks and malloc's bytes in use do
     * not grow with reloads. */
    ck_assert_msg(m1.blocks - m0.blocks < reloads / 4, "Python blocks grew by %ld over %ld "
                  "reloads", m1.blocks - m0.blocks, reloads);
    ck_assert_msg(m1.malloced - m0.malloced < reloads * 8, "malloc'd bytes grew by %ld over "
                  "%ld reloads", m1.malloced - m0.malloced, reloads);
    ck_assert_msg(after - before < 2048, "RSS grew by %ld kB", after - before);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Process life: a handler that imports threading from a worker thread
 * must not make the child hang at exit, and a graceful restart serves on. */

static const char life_src[] =
    "import pyreload, threading, os\n"
    "lock = threading.Lock()\n"
    "def handler(req):\n"
    "    with lock:\n"
    "        req.write('pid=%d thread=%s' % (os.getpid(), threading.current_thread().name))\n"
    "    return pyreload.OK\n";

static httpd_t *
life_server(void)
{
    httpd_file_t files[] = {{"life.py", life_src}, {NULL, NULL}};
    httpd_opts_t o = { .config = "<Location /life>\n  PyReloadHandler @APP@/life.py\n"
                                 "</Location>\n", .files = files };
    httpd_t *h = httpd_launch(&o);

    ck_assert_msg(h != NULL, "httpd did not start");
    return h;
}

START_TEST(test_stop_after_threading_in_worker)
{
    httpd_t *h = life_server();
    http_resp_t *r = http_get(h, "/life");

    http_assert_status(r, 200);
    /* really a worker thread; prefork has none: requests run on the main one */
    http_assert_body_has(r, strcmp(httpd_mpm(h), "prefork") ? "thread=Dummy-"
                                                             : "thread=MainThread");
    http_free(r);
    ck_assert_int_eq(httpd_stop(h), 0);
    ck_assert_msg(h->stop_clean && h->stop_seconds < 5, "stop took %.1f s (%s)",
                  h->stop_seconds, h->stop_clean ? "clean" : "needed SIGKILL");
    ck_assert_int_eq(httpd_log_count(h, 0, "still did not exit"), 0);
    ck_assert(httpd_log_no_crash(h, 0));
    httpd_free(h);
}
END_TEST

START_TEST(test_graceful_restart)
{
    httpd_t *h = life_server();
    http_resp_t *r = http_get(h, "/life");
    pid_t before = httpd_child(h), after = before;
    int i;

    http_assert_status(r, 200);
    http_free(r);
    ck_assert_int_eq(httpd_signal(h, SIGUSR1), 0);
    for (i = 0; i < 100 && after == before; i++) {
        usleep(100 * 1000);
        after = httpd_child(h);
    }
    ck_assert_msg(after != before, "no new child after a graceful restart");
    r = http_get(h, "/life");
    http_assert_status(r, 200);
    http_free(r);
    ck_assert(httpd_log_wait(h, 0, "resuming normal operations", 2, 5000));
    ck_assert(httpd_log_no_crash(h, 0));
    ck_assert_int_eq(httpd_stop(h), 0);
    ck_assert_msg(h->stop_clean, "stop needed SIGKILL");
    httpd_free(h);
}
END_TEST

Suite *
suite_reload(void)
{
    Suite *s = suite_create("reload");
    TCase *tc = httpd_tcase("edits", 60, setup, teardown);
    TCase *cc = httpd_tcase("concurrency", 90, csetup, cteardown);
    TCase *mc = httpd_tcase("memory", 120, msetup, cteardown);
    TCase *ic = httpd_tcase("inflight", 60, isetup, iteardown);

    tcase_add_test(tc, test_same_second_edits);
    tcase_add_test(tc, test_atomic_rename_save);
    tcase_add_test(tc, test_size_change_mtime_restored);
    tcase_add_test(tc, test_symlink_swap);
    tcase_add_test(tc, test_ctime_only_change);
    tcase_add_test(tc, test_inode_only_swap);
    tcase_add_test(tc, test_touch_reloads);
    tcase_add_test(tc, test_symlink_target_elsewhere);
    tcase_add_test(tc, test_unwatchable_directory_is_stated);
    tcase_add_test(tc, test_origin_clone_example);
    tcase_add_test(tc, test_purged_generation_freed);
    tcase_add_test(tc, test_syntax_error_then_fix);
    tcase_add_test(tc, test_clone_raising_keeps_old);
    tcase_add_test(tc, test_upgrade_converts_data);
    tcase_add_test(tc, test_deleted_then_restored);
    tcase_add_test(tc, test_failed_first_load_debug_page);
    tcase_add_loop_test(tc, test_failed_first_load_no_debug, 0,
                        (int)(sizeof QUIET_FAILS / sizeof QUIET_FAILS[0]));
    tcase_add_test(tc, test_check_off_freezes);
    tcase_add_test(tc, test_check_off_after_failed_first_load);
    tcase_add_test(tc, test_check_interval_throttles);
    suite_add_tcase(s, tc);
    tcase_add_test(ic, test_in_flight_finishes_on_old_code);
    suite_add_tcase(s, ic);
    tcase_add_test(cc, test_concurrent_clients_during_saves);
    suite_add_tcase(s, cc);
    tcase_add_test(mc, test_memory_over_reloads);
    suite_add_tcase(s, mc);
    {
        TCase *lc = httpd_tcase("life", 60, NULL, NULL);

        tcase_add_test(lc, test_stop_after_threading_in_worker);
        tcase_add_test(lc, test_graceful_restart);
        suite_add_tcase(s, lc);
    }
    return s;
}
