/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_codecache.c: compiled once per host (PyReloadCodeCache).  Two child
 * processes and a restart reuse one compiled file (the load lines say
 * "compiled" once, then "from cache"); an edit is a new file; a truncated,
 * corrupt or wrongly-owned file is ignored, said once and replaced; a cache
 * directory others may write, or owned by another user, stops the start;
 * a traceback from cached code names the real file and line.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "fixture.h"
#include "it_util.h"

static const char H_V1[] = "import os\n"
                           "import pyreload\n"
                           "\n"
                           "def handler(req):\n"
                           "    req.write('v1 %d' % os.getpid())\n"
                           "    return pyreload.OK\n";

static const char H_V2[] = "import os\n"
                           "import pyreload\n"
                           "\n"
                           "def handler(req):\n"
                           "    req.write('v2 %d' % os.getpid())\n"
                           "    return pyreload.OK\n";

static const char T_PY[] = "import pyreload\n"
                           "\n"
                           "def handler(req):\n"
                           "    return 1 / 0\n";

static const httpd_file_t FILES[] = {
    {"h.py", H_V1},
    {"t.py", T_PY},
    {NULL, NULL},
};

static const char CONF[] = "<Location /h>\n"
                           "  PyReloadHandler @APP@/h.py\n"
                           "</Location>\n"
                           "<Location /t>\n"
                           "  PyReloadHandler @APP@/t.py\n"
                           "  PyReloadDebug On\n"
                           "</Location>\n";

/* The default directory: under DefaultRuntimeDir (the fixture's run/). */
static char *
cache_dir(const httpd_t *h)
{
    char *d;

    ck_assert_int_ne(asprintf(&d, "%s/run/pyreload-code", h->dir), -1);
    return d;
}

/* The cache files (*.pyrc) of h; the last one's path in *last (malloc'd). */
static int
cache_files(const httpd_t *h, char **last)
{
    char *dir = cache_dir(h);
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    ck_assert_msg(d != NULL, "no cache directory %s", dir);
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);

        if (len > 5 && !strcmp(e->d_name + len - 5, ".pyrc")) {
            n++;
            if (last) {
                free(*last);
                ck_assert_int_ne(asprintf(last, "%s/%s", dir, e->d_name), -1);
            }
        }
    }
    closedir(d);
    free(dir);
    return n;
}

/* GET /h on fresh connections until `want` distinct processes have served
 * it with a body starting with prefix (bounded: 15 s). */
static void
served_by(httpd_t *h, const char *prefix, int want)
{
    long pids[8] = {0};
    int n = 0, tries = 0;
    time_t end = time(NULL) + 15;

    while (n < want && time(NULL) < end) {
        http_resp_t *r = http_get(h, "/h");
        long pid;
        int i, known = 0;

        tries++;
        if (r->status == 200 && !strncmp(r->body, prefix, strlen(prefix)) &&
            sscanf(r->body + strlen(prefix), " %ld", &pid) == 1) {
            for (i = 0; i < n; i++) {
                known |= pids[i] == pid;
            }
            if (!known && n < 8) {
                pids[n++] = pid;
            }
        }
        http_free(r);
    }
    ck_assert_msg(n >= want, "%d process(es) served '%s' in %d requests, want %d", n, prefix,
                  tries, want);
}

static httpd_t *
launch(int children)
{
    httpd_opts_t o = {.config = CONF, .files = FILES, .children = children};
    httpd_t *h = httpd_launch(&o);

    ck_assert_msg(h != NULL, "httpd did not start");
    return h;
}

static void
restart(httpd_t *h)
{
    ck_assert_int_eq(httpd_stop(h), 0);
    ck_assert_msg(httpd_start(h) == 0, "restart failed: %s", h->startup_output);
}

/* ------------------------------------------------------------------ */

START_TEST(test_two_children_and_restart_share_one_file)
{
    httpd_t *h = launch(2);
    size_t mark;
    char *file = NULL;
    struct stat st;
    struct passwd *pw = getpwnam("www-data");

    served_by(h, "v1", 2);
    ck_assert(httpd_log_wait(h, 0, "PYR0601", 1, 5000));
    ck_assert_msg(httpd_log_count(h, 0, ": compiled in ") == 1, "%s", httpd_log(h));
    ck_assert_int_eq(httpd_log_count(h, 0, "h.py: from cache in "), 1);
    ck_assert_int_eq(cache_files(h, &file), 1);
    /* Written by a child: the server's User's, and no one else's. */
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_ptr_nonnull(pw);
    ck_assert_int_eq(st.st_uid, pw->pw_uid);
    ck_assert_int_eq(st.st_mode & 0777, 0600);

    /* A restart: every new child reads it. */
    mark = httpd_log_mark(h);
    restart(h);
    served_by(h, "v1", 2);
    ck_assert(httpd_log_wait(h, mark, "PYR0601", 2, 5000));
    ck_assert_msg(httpd_log_count(h, mark, ": compiled in ") == 0, "%s",
                  httpd_log_since(h, mark));
    ck_assert_int_eq(cache_files(h, NULL), 1);

    /* An edit: a new key, compiled once, read by the other child; the
     * replaced version's file is gone. */
    mark = httpd_log_mark(h);
    it_put(h, "h.py", H_V2);
    served_by(h, "v2", 2);
    ck_assert(httpd_log_wait(h, mark, "PYR0601", 1, 5000));
    ck_assert_msg(httpd_log_count(h, mark, "h.py: compiled in ") == 1, "%s",
                  httpd_log_since(h, mark));
    ck_assert_int_eq(httpd_log_count(h, mark, "h.py: from cache in "), 1);
    ck_assert_int_eq(cache_files(h, NULL), 1);
    ck_assert_int_ne(access(file, F_OK), 0);
    ck_assert(httpd_log_no_crash(h, 0));
    free(file);
    httpd_free(h);
}
END_TEST

/* ------------------------------------------------------------------ */

typedef struct {
    const char *what;
    const char *reason; /* in the PYR0602 line */
} spoil_t;

static const spoil_t SPOILS[] = {
    {"truncated", "truncated"},
    {"corrupt", "corrupt (checksum mismatch)"},
    {"owned by nobody", "neither this server's user"},
};

static void
spoil(const char *file, int how)
{
    struct stat st;
    char c;
    int fd;

    ck_assert_int_eq(stat(file, &st), 0);
    switch (how) {
    case 0:
        ck_assert_int_eq(truncate(file, st.st_size / 2), 0);
        break;
    case 1:
        fd = open(file, O_RDWR);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(pread(fd, &c, 1, st.st_size - 10), 1);
        c ^= 0x01;
        ck_assert_int_eq(pwrite(fd, &c, 1, st.st_size - 10), 1);
        close(fd);
        break;
    default:
        ck_assert_int_eq(chown(file, 65534, 65534), 0);
    }
}

START_TEST(test_bad_file_ignored_once_and_replaced)
{
    const spoil_t *s = &SPOILS[_i];
    httpd_t *h = launch(1);
    struct passwd *pw = getpwnam("www-data");
    char *file = NULL;
    struct stat st;
    size_t mark;

    free(it_get(h, "/h", 200));
    ck_assert(httpd_log_wait(h, 0, "h.py: compiled in ", 1, 5000));
    ck_assert_int_eq(cache_files(h, &file), 1);
    ck_assert_int_eq(httpd_stop(h), 0);
    spoil(file, _i);

    mark = httpd_log_mark(h);
    ck_assert_msg(httpd_start(h) == 0, "start failed: %s", h->startup_output);
    free(it_get(h, "/h", 200));
    free(it_get(h, "/h", 200));
    ck_assert(httpd_log_wait(h, mark, "h.py: compiled in ", 1, 5000));
    ck_assert_msg(httpd_log_count(h, mark, "PYR0602") == 1, "%s: %s", s->what,
                  httpd_log_since(h, mark));
    ck_assert_msg(httpd_log_count(h, mark, s->reason) == 1, "%s: %s", s->what,
                  httpd_log_since(h, mark));
    ck_assert_int_eq(httpd_log_count(h, mark, "from cache"), 0);
    /* Replaced by a good one, the server's User's. */
    ck_assert_int_eq(cache_files(h, NULL), 1);
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(st.st_uid, pw->pw_uid);

    mark = httpd_log_mark(h);
    restart(h);
    free(it_get(h, "/h", 200));
    ck_assert(httpd_log_wait(h, mark, "h.py: from cache in ", 1, 5000));
    ck_assert_int_eq(httpd_log_count(h, mark, "PYR0602"), 0);
    ck_assert_int_eq(httpd_log_count(h, mark, ": compiled in "), 0);
    free(file);
    httpd_free(h);
}
END_TEST

/* ------------------------------------------------------------------ */

START_TEST(test_traceback_from_cached_code)
{
    httpd_t *h = launch(1);
    char *body, *want;
    size_t mark;

    body = it_get(h, "/t", 500);
    free(body);
    ck_assert(httpd_log_wait(h, 0, "t.py: compiled in ", 1, 5000));
    mark = httpd_log_mark(h);
    restart(h);
    body = it_get(h, "/t", 500);
    ck_assert(httpd_log_wait(h, mark, "t.py: from cache in ", 1, 5000));
    ck_assert_int_ne(asprintf(&want, "File \"%s/t.py\", line 4, in handler\n    return 1 / 0",
                              h->app), -1);
    ck_assert_msg(strstr(body, want) != NULL, "body lacks\n%s\n:\n%s", want, body);
    free(want);
    free(body);
    httpd_free(h);
}
END_TEST

/* ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    mode_t mode;      /* of the directory made before the start; 0: none */
    uid_t owner;      /* (uid_t)-1: root's */
    const char *conf; /* the PyReloadCodeCache line */
    const char *expect[3]; /* in the refusal */
} dir_case_t;

static const dir_case_t DIRS[] = {
    {"writable by others", 0777, (uid_t)-1, "PyReloadCodeCache @DIR@/cc\n",
     {"PYR0610", "@DIR@/cc", "writable by others"}},
    {"sticky, writable by others", 01777, (uid_t)-1, "PyReloadCodeCache @DIR@/cc\n",
     {"PYR0610", "@DIR@/cc", "writable by others"}},
    {"another owner", 0700, 65534, "PyReloadCodeCache @DIR@/cc\n",
     {"PYR0610", "@DIR@/cc", "owned by"}},
    {"in a virtual host", 0, (uid_t)-1,
     "<VirtualHost 127.0.0.1:*>\n  PyReloadCodeCache @DIR@/cc\n</VirtualHost>\n",
     {"PyReloadCodeCache", "VirtualHost"}},
};

START_TEST(test_unsafe_directory_refused)
{
    const dir_case_t *c = &DIRS[_i];
    char *conf, *dir, *out = NULL;
    httpd_opts_t o = {.files = FILES};
    httpd_t *h;
    int i, rc;

    ck_assert_int_ne(asprintf(&conf, "%s%s", CONF, c->conf), -1);
    o.config = conf;
    h = httpd_new(&o);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_ne(asprintf(&dir, "%s/cc", h->dir), -1);
    if (c->mode) {
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        ck_assert_int_eq(chmod(dir, c->mode), 0);
        if (c->owner != (uid_t)-1) {
            ck_assert_int_eq(chown(dir, c->owner, c->owner), 0);
        }
    }
    rc = httpd_start(h);
    if (rc == 0) {
        httpd_stop(h);
        ck_abort_msg("%s: the server started", c->name);
    }
    rc = httpd_configtest(h, &out);
    ck_assert_msg(rc != 0 && !strstr(out, "Syntax OK"), "%s: apache2 -t passed:\n%s", c->name,
                  out);
    for (i = 0; i < 3 && c->expect[i]; i++) {
        char *want = httpd_subst(h, c->expect[i]);

        ck_assert_msg(strstr(h->startup_output, want), "%s: start-up output lacks '%s':\n%s",
                      c->name, want, h->startup_output);
        ck_assert_msg(strstr(out, want), "%s: apache2 -t lacks '%s':\n%s", c->name, want, out);
        free(want);
    }
    free(out);
    free(dir);
    free(conf);
    httpd_free(h);
}
END_TEST

/* A directory that is not there is made, the server's User's, 0700; Off
 * makes none and compiles. */
START_TEST(test_directory_made_or_off)
{
    struct passwd *pw = getpwnam("www-data");
    httpd_opts_t o = {.files = FILES};
    char *conf, *dir;
    struct stat st;
    httpd_t *h;

    ck_assert_int_ne(asprintf(&conf, "%sPyReloadCodeCache @DIR@/made\n", CONF), -1);
    o.config = conf;
    h = httpd_launch(&o);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_ne(asprintf(&dir, "%s/made", h->dir), -1);
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(st.st_mode & 07777, 0700);
    ck_assert_int_eq(st.st_uid, pw->pw_uid);
    free(it_get(h, "/h", 200));
    ck_assert(httpd_log_wait(h, 0, "h.py: compiled in ", 1, 5000));
    ck_assert_int_eq(httpd_log_count(h, 0, "(code cache: stored as "), 1);
    free(dir);
    free(conf);
    httpd_free(h);

    ck_assert_int_ne(asprintf(&conf, "%sPyReloadCodeCache Off\n", CONF), -1);
    o.config = conf;
    h = httpd_launch(&o);
    ck_assert_ptr_nonnull(h);
    free(it_get(h, "/h", 200));
    ck_assert(httpd_log_wait(h, 0, "h.py: compiled in ", 1, 5000));
    ck_assert_int_eq(httpd_log_count(h, 0, "(code cache off)"), 1);
    dir = cache_dir(h);
    ck_assert_int_ne(stat(dir, &st), 0);
    free(dir);
    free(conf);
    httpd_free(h);
}
END_TEST

/* A directory that became unsafe while the server ran refuses a start, not
 * a stop: `apache2 -k stop` still stops the server. */
START_TEST(test_unsafe_directory_does_not_block_stop)
{
    const char *stop[] = {"-k", "stop", NULL};
    httpd_t *h = launch(1);
    char *dir = cache_dir(h), *out = NULL;
    pid_t parent = h->pid;
    int rc, i;

    free(it_get(h, "/h", 200));
    ck_assert_int_eq(chmod(dir, 0777), 0);
    rc = httpd_apache2(h, stop, &out);
    ck_assert_msg(rc == 0, "apache2 -k stop: %d\n%s", rc, out);
    for (i = 0; i < 100 && httpd_pid_alive(parent); i++) {
        usleep(100000);
    }
    ck_assert_msg(!httpd_pid_alive(parent), "still running after apache2 -k stop");
    ck_assert_int_eq(chmod(dir, 0700), 0);
    free(out);
    free(dir);
    httpd_free(h);
}
END_TEST

/* A directory the children cannot write (root's, 0755) is safe, so the
 * server starts, and says the cache will only be read; loads compile and
 * say they stored nothing. */
START_TEST(test_read_only_directory_said)
{
    httpd_opts_t o = {.files = FILES};
    char *conf, *dir;
    httpd_t *h;

    ck_assert_int_ne(asprintf(&conf, "%sPyReloadCodeCache @DIR@/ro\n", CONF), -1);
    o.config = conf;
    h = httpd_new(&o);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_ne(asprintf(&dir, "%s/ro", h->dir), -1);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    ck_assert_int_eq(chmod(dir, 0755), 0);
    ck_assert_msg(httpd_start(h) == 0, "start failed: %s", h->startup_output);
    ck_assert_msg(httpd_log_count(h, 0, "PYR0612") == 1, "%s", httpd_log(h));
    ck_assert_int_ge(httpd_log_count(h, 0, "not writable by the server's User"), 1);
    free(it_get(h, "/h", 200));
    ck_assert(httpd_log_wait(h, 0, "h.py: compiled in ", 1, 5000));
    ck_assert_int_eq(httpd_log_count(h, 0, "(code cache: not stored: Permission denied)"), 1);
    ck_assert_int_eq(httpd_log_count(h, 0, "PYR0603"), 1);
    free(dir);
    free(conf);
    httpd_free(h);
}
END_TEST

Suite *
suite_codecache(void)
{
    Suite *s = suite_create("codecache");
    TCase *tc = httpd_tcase("codecache", 120, NULL, NULL);

    tcase_add_test(tc, test_two_children_and_restart_share_one_file);
    tcase_add_loop_test(tc, test_bad_file_ignored_once_and_replaced, 0,
                        sizeof(SPOILS) / sizeof(SPOILS[0]));
    tcase_add_test(tc, test_traceback_from_cached_code);
    tcase_add_loop_test(tc, test_unsafe_directory_refused, 0, sizeof(DIRS) / sizeof(DIRS[0]));
    tcase_add_test(tc, test_directory_made_or_off);
    tcase_add_test(tc, test_read_only_directory_said);
    tcase_add_test(tc, test_unsafe_directory_does_not_block_stop);
    suite_add_tcase(s, tc);
    return s;
}
