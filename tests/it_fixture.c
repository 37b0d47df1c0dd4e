/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_fixture.c: tests of the harness itself (tests/fixture.c), with httpd
 * serving static files and mod_pyreload NOT loaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "fixture.h"

static httpd_t *srv;

static void setup_static(void)
{
    static const httpd_file_t files[] = {
        {"../htdocs/static.txt", "static file in @DIR@\n"},
        {NULL, NULL},
    };
    httpd_opts_t o = {.no_module = 1, .files = files};
    srv = httpd_launch(&o);
    ck_assert_msg(srv != NULL, "httpd (no module) did not start");
}

static void teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

START_TEST(test_static_file)
{
    char want[256];
    http_resp_t *r = http_get(srv, "/static.txt");
    snprintf(want, sizeof want, "static file in %s\n", srv->dir);
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, want);
    ck_assert_uint_eq(r->len, strlen(want));
    ck_assert_str_eq(r->content_type, "text/plain");
    ck_assert_ptr_nonnull(http_header(r, "content-length"));
    ck_assert_int_eq(atoi(http_header(r, "Content-Length")), (int)strlen(want));
    ck_assert_int_eq(http_header_count(r, "Server"), 1);
    ck_assert_ptr_null(http_header(r, "X-Nope"));
    ck_assert_int_eq(strncmp(r->headers, "HTTP/1.1 200", 12), 0);
    http_free(r);
}
END_TEST

START_TEST(test_not_found_logged)
{
    size_t mark = httpd_log_mark(srv);
    http_resp_t *r = http_get(srv, "/missing-file.txt");
    http_assert_status(r, 404);
    http_assert_body_has(r, "<title>404 Not Found</title>");
    http_free(r);
    /* core logs AH00128 at info */
    ck_assert_msg(httpd_log_wait(srv, mark, "missing-file.txt", 1, 3000),
                  "no log line for the 404");
    ck_assert_int_eq(httpd_log_count(srv, mark, "missing-file.txt"), 1);
    {
        char *line = httpd_log_line(srv, mark, "missing-file.txt");
        ck_assert_ptr_nonnull(line);
        ck_assert_ptr_nonnull(strstr(line, ":info]"));
        ck_assert_ptr_null(strchr(line, '\n'));
        free(line);
    }
    ck_assert_int_eq(httpd_log_wait(srv, mark, "never-logged-text", 1, 50), 0);
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

START_TEST(test_keepalive_client)
{
    http_client_t *c = http_client_new(srv);
    for (int i = 0; i < 20; i++) {
        http_resp_t *r = http_client_get(c, "/static.txt");
        http_assert_status(r, 200);
        http_free(r);
    }
    ck_assert_int_eq(http_client_connects(c), 1);
    http_client_free(c);
}
END_TEST

START_TEST(test_methods_and_bodies)
{
    static const char *const hdrs[] = {"X-Test: 1", NULL};
    http_resp_t *r = http_request(srv, "HEAD", "/static.txt", hdrs, NULL, 0);
    http_assert_status(r, 200);
    ck_assert_uint_eq(r->len, 0);
    http_free(r);
    /* the default handler refuses a body on a static file's POST: 405 */
    r = http_post(srv, "/static.txt", "abc", 3);
    ck_assert_msg(r->status == 405 || r->status == 200, "status %ld", r->status);
    http_free(r);
    {
        http_req_t rq = {.path = "/static.txt", .http10 = 1};
        r = http_do(srv, &rq);
        http_assert_status(r, 200);
        ck_assert_int_eq(strncmp(r->headers, "HTTP/1.", 7), 0);
        http_free(r);
    }
    {
        static const char req[] = "GET /static.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  "Connection: close\r\n\r\n";
        size_t len;
        char *raw = http_raw(srv, req, sizeof req - 1, &len, 5000);
        ck_assert_msg(!strncmp(raw, "HTTP/1.1 200 OK\r\n", 17), "raw: %s", raw);
        ck_assert_ptr_nonnull(strstr(raw, "static file in"));
        free(raw);
    }
}
END_TEST

START_TEST(test_one_child_and_rss)
{
    pid_t kids[8];
    pid_t kid = httpd_child(srv);
    ck_assert_int_gt(kid, 0);
    ck_assert_int_eq(httpd_children(srv, kids, 8), 1);
    ck_assert_int_eq(kids[0], kid);
    ck_assert(httpd_pid_alive(srv->pid));
    ck_assert(httpd_pid_alive(kid));
    ck_assert_int_gt(httpd_rss_kb(kid), 100);
    ck_assert_int_eq(httpd_rss_kb(999999999), -1);
}
END_TEST

START_TEST(test_file_helpers)
{
    struct stat a, b;
    char *p = httpd_path(srv, "sub/dir/f.py");
    char *lnk = httpd_path(srv, "link.py");
    char buf[64];
    ssize_t n;

    ck_assert_int_eq(httpd_write(srv, "sub/dir/f.py", "one\n"), 0);
    ck_assert_int_eq(stat(p, &a), 0);
    ck_assert_int_eq(a.st_mode & 07777, 0644);
    ck_assert_int_eq(a.st_size, 4);
    /* in place: same inode */
    ck_assert_int_eq(httpd_write(srv, "sub/dir/f.py", "second\n"), 0);
    ck_assert_int_eq(stat(p, &b), 0);
    ck_assert_int_eq(a.st_ino, b.st_ino);
    ck_assert_int_eq(b.st_size, 7);
    /* atomic: new inode, same name, 0644 */
    ck_assert_int_eq(httpd_write_atomic(srv, "sub/dir/f.py", "third!!\n"), 0);
    ck_assert_int_eq(stat(p, &b), 0);
    ck_assert_int_ne(a.st_ino, b.st_ino);
    ck_assert_int_eq(b.st_mode & 07777, 0644);
    /* exact mtime */
    ck_assert_int_eq(httpd_set_mtime(srv, "sub/dir/f.py", 1700000000, 123456789), 0);
    ck_assert_int_eq(stat(p, &b), 0);
    ck_assert_int_eq(b.st_mtim.tv_sec, 1700000000);
    ck_assert_int_eq(b.st_mtim.tv_nsec, 123456789);
    /* symlink create, then swap */
    ck_assert_int_eq(httpd_write(srv, "v1.py", "v1\n"), 0);
    ck_assert_int_eq(httpd_write(srv, "v2.py", "v2\n"), 0);
    ck_assert_int_eq(httpd_symlink(srv, "v1.py", "link.py"), 0);
    n = readlink(lnk, buf, sizeof buf - 1);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_str_eq(buf, "v1.py");
    ck_assert_int_eq(httpd_symlink(srv, "v2.py", "link.py"), 0);
    n = readlink(lnk, buf, sizeof buf - 1);
    buf[n] = '\0';
    ck_assert_str_eq(buf, "v2.py");
    /* remove */
    ck_assert_int_eq(httpd_remove(srv, "link.py"), 0);
    ck_assert_int_eq(lstat(lnk, &b), -1);
    ck_assert_int_eq(httpd_remove(srv, "link.py"), -1);
    ck_assert_int_eq(errno, ENOENT);
    /* absolute names, mkdir */
    ck_assert_int_eq(httpd_mkdir(srv, "../lib/pkg"), 0);
    {
        char *abs;
        if (asprintf(&abs, "%s/lib/pkg/m.py", srv->dir) < 0) abort();
        ck_assert_int_eq(httpd_write(srv, abs, "x = 1\n"), 0);
        ck_assert_int_eq(access(abs, R_OK), 0);
        free(abs);
    }
    /* served files are readable by www-data: the static file went through */
    free(p);
    free(lnk);
}
END_TEST

START_TEST(test_subst)
{
    char *s = httpd_subst(srv, "a @APP@ b @DIR@ c @NOPE@");
    char want[512];
    snprintf(want, sizeof want, "a %s/app b %s c @NOPE@", srv->dir, srv->dir);
    ck_assert_str_eq(s, want);
    free(s);
}
END_TEST

/* A server of its own: start, serve, stop; assert the stop is clean. */
static const char *const mpms[] = {"event", "worker", "prefork"};

START_TEST(test_stop_clean)
{
    httpd_opts_t o = {.no_module = 1, .mpm = mpms[_i]};
    httpd_t *h = httpd_launch(&o);
    http_client_t *c;
    http_resp_t *r;
    pid_t kids[8];
    char *log;

    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(httpd_children(h, kids, 8), 1);
    /* a keep-alive connection stays open across the stop */
    c = http_client_new(h);
    r = http_client_get(c, "/");
    ck_assert_msg(r->status == 404 || r->status == 403, "status %ld", r->status);
    http_free(r);
    ck_assert_int_eq(httpd_stop(h), 0);
    ck_assert(h->stop_clean);
    ck_assert_msg(h->stop_seconds < 5.0, "stop took %.2f s", h->stop_seconds);
    ck_assert_int_eq(h->pid, 0);
    ck_assert(!httpd_pid_alive(kids[0]));
    log = httpd_log(h);
    ck_assert_msg(strstr(log, "still did not exit") == NULL, "log:\n%s", log);
    ck_assert_msg(strstr(log, "SIGKILL") == NULL, "log:\n%s", log);
    ck_assert_msg(strstr(log, "caught SIGTERM") != NULL, "log:\n%s", log);
    free(log);
    http_client_free(c);
    /* restartable, on a new port */
    ck_assert_int_eq(httpd_start(h), 0);
    r = http_get(h, "/");
    ck_assert_int_ne(r->status, 0);
    http_free(r);
    httpd_free(h);
}
END_TEST

START_TEST(test_config_error_captured)
{
    httpd_opts_t o = {.no_module = 1, .config = "BogusDirective 1\n"};
    httpd_t *h = httpd_new(&o);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(httpd_start(h), -1);
    ck_assert_int_eq(h->pid, 0);
    ck_assert_msg(strstr(h->startup_output, "BogusDirective") != NULL, "output: %s",
                  h->startup_output);
    httpd_free(h);
}
END_TEST

START_TEST(test_clean_environment)
{
    static const char *const env[] = {"PYR_IT_EXTRA=yes", NULL};
    httpd_opts_t o = {.no_module = 1, .env = env};
    httpd_t *h;
    char path[64], *environ_text, buf[8192];
    FILE *f;
    size_t n;

    setenv("PYTHONPATH", "/nonexistent-pyr-it", 1);
    setenv("PYR_IT_LEAK", "1", 1);
    h = httpd_launch(&o);
    ck_assert_ptr_nonnull(h);
    snprintf(path, sizeof path, "/proc/%d/environ", (int)h->pid);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!buf[i]) buf[i] = '\n';
    environ_text = buf;
    ck_assert_msg(strstr(environ_text, "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n") != NULL, "%s",
                  environ_text);
    ck_assert_msg(strstr(environ_text, "LANG=C.UTF-8\n") != NULL, "%s", environ_text);
    ck_assert_msg(strstr(environ_text, "PYR_IT_EXTRA=yes\n") != NULL, "%s", environ_text);
    ck_assert_msg(strstr(environ_text, "PYTHON") == NULL, "%s", environ_text);
    ck_assert_msg(strstr(environ_text, "PYR_IT_LEAK") == NULL, "%s", environ_text);
    httpd_free(h);
}
END_TEST

/* Ports come from $PYR_PORTS; taken ones are skipped.  Three of a range of
 * four are held here: the server must get the fourth. */
START_TEST(test_ports_from_range)
{
    httpd_opts_t o = {.no_module = 1};
    int base = 25000 + (int)(getpid() % 1000) * 4, fds[3], free_port = -1;
    char range[32];
    httpd_t *h;

    snprintf(range, sizeof range, "%d-%d", base, base + 3);
    setenv("PYR_PORTS", range, 1);
    for (int i = 0, k = 0; i < 4; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)(base + i)),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd;
        if (i == 2) {               /* the one left free */
            free_port = base + i;
            continue;
        }
        fd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_msg(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind %d: %s", base + i,
                      strerror(errno));
        fds[k++] = fd;
    }
    h = httpd_launch(&o);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(h->port, free_port);
    httpd_free(h);
    for (int k = 0; k < 3; k++) close(fds[k]);
    unsetenv("PYR_PORTS");
}
END_TEST

/* A process that starts a server and dies without stopping it (what a failed
 * check test does): the reaper stops it. */
START_TEST(test_orphan_reaped)
{
    int fds[2];
    pid_t child, hpid = 0;
    int status;
    char dir[128] = "";

    ck_assert_int_eq(pipe(fds), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        httpd_opts_t o = {.no_module = 1};
        httpd_t *h = httpd_launch(&o);
        char msg[256];
        snprintf(msg, sizeof msg, "%d %s", h ? (int)h->pid : 0, h ? h->dir : "-");
        if (write(fds[1], msg, strlen(msg) + 1) < 0) _exit(2);
        _exit(1);
    }
    close(fds[1]);
    {
        char msg[256] = "";
        ssize_t n = read(fds[0], msg, sizeof msg - 1);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(sscanf(msg, "%d %127s", &hpid, dir), 2);
    }
    close(fds[0]);
    waitpid(child, &status, 0);
    ck_assert_int_gt(hpid, 0);
    ck_assert(httpd_pid_alive(hpid));
    fprintf(stderr, "it_fixture: test_orphan_reaped: the reaper message below is expected\n");
    httpd_reap_orphans();
    ck_assert(!httpd_pid_alive(hpid));
    /* the reaper keeps the dir for inspection; this one was on purpose */
    {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        ck_assert_int_eq(system(cmd), 0);
    }
}
END_TEST

Suite *suite_fixture(void)
{
    Suite *s = suite_create("fixture");
    TCase *tc = httpd_tcase("static", 30, setup_static, teardown);
    tcase_add_test(tc, test_static_file);
    tcase_add_test(tc, test_not_found_logged);
    tcase_add_test(tc, test_keepalive_client);
    tcase_add_test(tc, test_methods_and_bodies);
    tcase_add_test(tc, test_one_child_and_rss);
    tcase_add_test(tc, test_file_helpers);
    tcase_add_test(tc, test_subst);
    suite_add_tcase(s, tc);

    tc = httpd_tcase("lifecycle", 60, NULL, NULL);
    tcase_add_loop_test(tc, test_stop_clean, 0, (int)(sizeof mpms / sizeof mpms[0]));
    tcase_add_test(tc, test_config_error_captured);
    tcase_add_test(tc, test_clean_environment);
    tcase_add_test(tc, test_ports_from_range);
    tcase_add_test(tc, test_orphan_reaped);
    suite_add_tcase(s, tc);
    return s;
}
