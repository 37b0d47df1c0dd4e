/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_fleet.c: issue 11's many hosts.  Two apache2 "hosts" on 127.0.0.1,
 * each with its status page and @APP@/current/hello.py (current ->
 * releases/<tag>; hello.py imports helper.py from the release), behind a
 * third apache2 whose mod_proxy_balancer spreads /app over both.  A release
 * is deployed on both hosts by swapping the symlink (symlink + rename),
 * traffic goes through the balancer, and the real
 * tools/pyreload-deploy-check reads both status pages: red ("not yet
 * requested") right after the swap, green once the balancer has brought a
 * request to each host; red, with the error's message, after a release
 * with a syntax error (while the last good release keeps answering), green
 * again after the fix.  Every answer says "r<tag> web<N>", so "which
 * release did which host serve" is an equality check.
 */
#include "it_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IT_DEPLOY_CHECK
#define IT_DEPLOY_CHECK "tools/pyreload-deploy-check"
#endif
#define MODDIR "/usr/lib/apache2/modules/"
#define HOSTS 2
#define PARALLEL (2 * HOSTS)    /* under prefork, each host has 2 processes */
#define TOOL_TIMEOUT_MS 30000

static httpd_t *web[HOSTS], *front;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* Releases                                                            */

/* releases/<tag>/ on host i: hello.py and helper.py, both naming the
 * release (so that every release changes both files' bytes); broken: a
 * helper.py that does not compile. */
static void
write_release(int i, const char *tag, int broken)
{
    char name[128], src[512];

    snprintf(name, sizeof(name), "releases/%s/hello.py", tag);
    snprintf(src, sizeof(src),
             "# release %s\n"
             "import time\n"
             "import pyreload\n"
             "import helper\n"
             "def handler(req):\n"
             "    if req.args == 'hold':\n"
             "        time.sleep(0.3)\n"
             "    req.content_type = 'text/plain'\n"
             "    req.write('%%s %%s' %% (helper.RELEASE, req.options['host']))\n"
             "    return pyreload.OK\n", tag);
    ck_assert_int_eq(httpd_write(web[i], name, src), 0);
    snprintf(name, sizeof(name), "releases/%s/helper.py", tag);
    snprintf(src, sizeof(src), "RELEASE = 'r%s'\n%s", tag,
             broken ? "def broken(:\n    pass\n" : "");
    ck_assert_int_eq(httpd_write(web[i], name, src), 0);
}

/* Deploy on every host as a release tool does: the release written beside
 * the others, then `current` swapped to it in one rename. */
static void
deploy(const char *tag, int broken)
{
    char target[64];
    int i;

    snprintf(target, sizeof(target), "releases/%s", tag);
    for (i = 0; i < HOSTS; i++) {
        write_release(i, tag, broken);
        ck_assert_int_eq(httpd_symlink(web[i], target, "current"), 0);
    }
}

/* One request through the balancer that the handler holds for a moment,
 * so that those sent together overlap: a host given two at once serves
 * them in two processes under prefork (serial requests would all go to
 * the process that accepts first). */
static void *
request_held(void *arg)
{
    return http_get(front, "/app?hold");
}

/* Rounds of PARALLEL requests through the balancer until every host has
 * answered (at most 5 rounds): each must be 200 "r<tag> web<N>". */
static void
traffic(const char *tag)
{
    int seen[HOSTS] = {0}, left = HOSTS, round, i;
    char want[64];

    snprintf(want, sizeof(want), "r%s web", tag);
    for (round = 0; round < 5 && left > 0; round++) {
        pthread_t t[PARALLEL];
        http_resp_t *rs[PARALLEL];

        for (i = 0; i < PARALLEL; i++) {
            ck_assert_int_eq(pthread_create(&t[i], NULL, request_held, NULL), 0);
        }
        /* Every thread joined before any assertion ends the test: one that
         * timed out may be printing the server's stacks. */
        for (i = 0; i < PARALLEL; i++) {
            pthread_join(t[i], (void **)&rs[i]);
        }
        for (i = 0; i < PARALLEL; i++) {
            http_resp_t *r = rs[i];
            int host;

            http_assert_status(r, 200);
            ck_assert_msg(strncmp(r->body, want, strlen(want)) == 0,
                          "through the balancer: '%s', want '%sN'", r->body, want);
            host = atoi(r->body + strlen(want)) - 1;
            ck_assert_msg(host >= 0 && host < HOSTS, "no host in '%s'", r->body);
            if (!seen[host]++) {
                left--;
            }
            http_free(r);
        }
    }
    ck_assert_msg(left == 0, "the balancer brought %d rounds of requests to one host only",
                  round);
}

/* ------------------------------------------------------------------ */
/* The tool                                                            */

/* Run the deploy check with these arguments (NULL-terminated); its output in
 * *out (malloc'd), how long it took in *secs.  Its exit status. */
static int
check(char **out, double *secs, const char *arg, ...)
{
    const char *argv[16];
    int n = 0, rc;
    double t0 = now_s();
    va_list ap;

    argv[n++] = IT_DEPLOY_CHECK;
    va_start(ap, arg);
    for (; arg && n < 15; arg = va_arg(ap, const char *)) {
        argv[n++] = arg;
    }
    va_end(ap);
    argv[n] = NULL;
    rc = it_run(argv, NULL, TOOL_TIMEOUT_MS, out);
    if (secs) {
        *secs = now_s() - t0;
    }
    fprintf(stderr, "fleet: pyreload-deploy-check exited %d:\n%s", rc, *out);
    return rc;
}

/* The deploy check over both hosts' status pages, every file they list
 * (the files' paths differ from host to host here: each has its own dir). */
static int
check_fleet(char **out, double *secs, const char *opt, const char *val)
{
    char url0[96], url1[96];

    /* One page URL as an admin copies it, one with the query already. */
    snprintf(url0, sizeof(url0), "%s/pyreload-status", web[0]->url);
    snprintf(url1, sizeof(url1), "%s/pyreload-status?json", web[1]->url);
    if (opt) {
        return check(out, secs, opt, val, url0, url1, NULL);
    }
    return check(out, secs, url0, url1, NULL);
}

/* Traffic through the balancer, then the deploy check, until the check is
 * green (at most 20 rounds): under prefork each host has two processes, and
 * which of them accepts a connection is the kernel's choice.  The last
 * check's exit status; its output in *out. */
static int
serve_until_green(const char *tag, char **out)
{
    int round, rc = -1;

    *out = NULL;
    for (round = 0; round < 20 && rc != 0; round++) {
        free(*out);
        traffic(tag);
        rc = check_fleet(out, NULL, NULL, NULL);
    }
    fprintf(stderr, "fleet: release %s: %s after %d round(s) of traffic\n", tag,
            rc == 0 ? "green" : "still red", round);
    return rc;
}

#define assert_out_has(out, needle)                                           \
    ck_assert_msg(strstr((out), (needle)) != NULL,                            \
                  "the check's output lacks \"%s\":\n%s", (needle), (out))

/* ------------------------------------------------------------------ */
/* Servers                                                             */

static void
setup(void)
{
    char conf[2048], route[HOSTS][160];
    int i;

    for (i = 0; i < HOSTS; i++) {
        /* prefork: two processes per host, so that "every process" is more
         * than one. */
        httpd_opts_t o = {.config = conf, .procs = 2};

        snprintf(conf, sizeof(conf),
                 "LoadModule authz_host_module " MODDIR "mod_authz_host.so\n"
                 "<Location /app>\n"
                 "  PyReloadHandler @APP@/current/hello.py\n"
                 "  PyReloadOption host web%d\n"
                 "</Location>\n"
                 "<Location /pyreload-status>\n"
                 "  SetHandler pyreload-status\n"
                 "  Require local\n"
                 "</Location>\n", i + 1);
        web[i] = httpd_new(&o);
        ck_assert_ptr_nonnull(web[i]);
        write_release(i, "1", 0);
        ck_assert_int_eq(httpd_symlink(web[i], "releases/1", "current"), 0);
        if (httpd_start(web[i]) != 0) {
            httpd_dump_log_tail(web[i], 40);
            ck_abort_msg("host web%d did not start", i + 1);
        }
    }
    for (i = 0; i < HOSTS; i++) {
        /* disablereuse: a connection the balancer kept open would hold one
         * prefork process of the host for itself (KeepAlive), away from
         * the other traffic and from the status page. */
        snprintf(route[i], sizeof(route[i]),
                 "  BalancerMember \"%s\" route=web%d disablereuse=On\n", web[i]->url,
                 i + 1);
    }
    snprintf(conf, sizeof(conf),
             "LoadModule slotmem_shm_module " MODDIR "mod_slotmem_shm.so\n"
             "LoadModule proxy_module " MODDIR "mod_proxy.so\n"
             "LoadModule proxy_http_module " MODDIR "mod_proxy_http.so\n"
             "LoadModule proxy_balancer_module " MODDIR "mod_proxy_balancer.so\n"
             "LoadModule lbmethod_byrequests_module " MODDIR "mod_lbmethod_byrequests.so\n"
             "<Proxy \"balancer://fleet\">\n%s%s"
             "  ProxySet lbmethod=byrequests\n"
             "</Proxy>\n"
             "ProxyPass \"/app\" \"balancer://fleet/app\"\n", route[0], route[1]);
    {
        /* The balancer is no server under test: event, whatever the MPM. */
        httpd_opts_t o = {.config = conf, .no_module = 1, .mpm = "event"};

        front = httpd_launch(&o);
    }
    ck_assert_msg(front != NULL, "the balancer did not start");
}

static void
teardown(void)
{
    int i;

    httpd_free(front);
    front = NULL;
    for (i = 0; i < HOSTS; i++) {
        httpd_free(web[i]);
        web[i] = NULL;
    }
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */

/* Each test deploys releases of its own (tags from its pid), so that none
 * depends on what another left. */
static void
tag_of(char *tag, size_t size, const char *what)
{
    snprintf(tag, size, "%d%s", (int)getpid(), what);
}

START_TEST(test_green_after_traffic)
{
    char before[32], tag[32], *out;
    int rc;

    tag_of(before, sizeof(before), "a");
    tag_of(tag, sizeof(tag), "b");
    deploy(before, 0);
    rc = serve_until_green(before, &out);
    ck_assert_msg(rc == 0, "a release every process has served: exit %d, want 0", rc);
    assert_out_has(out, "green: 2 host(s)");
    free(out);

    deploy(tag, 0);
    /* Swapped on disk, not yet requested anywhere: red, and says so. */
    rc = check_fleet(&out, NULL, NULL, NULL);
    ck_assert_msg(rc == 1, "right after the swap: exit %d, want 1", rc);
    assert_out_has(out, "/current/hello.py: not yet requested");
    assert_out_has(out, "/current/helper.py: not yet requested");
    assert_out_has(out, web[0]->url + strlen("http://"));
    assert_out_has(out, web[1]->url + strlen("http://"));
    free(out);

    rc = serve_until_green(tag, &out);
    ck_assert_msg(rc == 0, "after traffic to both hosts: exit %d, want 0", rc);
    assert_out_has(out, "green");
    free(out);
}
END_TEST

/* A host that has served nothing yet proves nothing: without named files,
 * red. */
START_TEST(test_idle_host_is_not_green)
{
    char url[96], *out;
    httpd_t *idle;
    int rc;

    {
        httpd_opts_t o = {.config = "<Location /pyreload-status>\n"
                                    "  SetHandler pyreload-status\n"
                                    "</Location>\n"};

        idle = httpd_launch(&o);
    }
    ck_assert_msg(idle != NULL, "httpd did not start");
    snprintf(url, sizeof(url), "%s/pyreload-status", idle->url);
    rc = check(&out, NULL, url, NULL);
    httpd_free(idle);
    ck_assert_msg(rc == 1, "a host that loaded nothing: exit %d, want 1", rc);
    assert_out_has(out, "no process has loaded a file yet");
    free(out);
}
END_TEST

/* Files named on the command line, as an admin checks one host's files. */
START_TEST(test_named_files)
{
    char tag[32], url[96], *hello, *helper, *missing, *out;
    int rc;

    tag_of(tag, sizeof(tag), "n");
    deploy(tag, 0);
    ck_assert_int_eq(serve_until_green(tag, &out), 0);
    free(out);
    snprintf(url, sizeof(url), "%s/pyreload-status", web[0]->url);
    hello = httpd_path(web[0], "current/hello.py");
    helper = httpd_path(web[0], "current/helper.py");
    missing = httpd_path(web[0], "current/nothere.py");
    rc = check(&out, NULL, url, hello, helper, NULL);
    ck_assert_msg(rc == 0, "both files served: exit %d, want 0", rc);
    free(out);
    rc = check(&out, NULL, "--quiet", url, hello, NULL);
    ck_assert_msg(rc == 0 && out[0] == '\0', "--quiet and green: exit %d, printed '%s'", rc,
                  out);
    free(out);
    rc = check(&out, NULL, url, hello, missing, NULL);
    ck_assert_msg(rc == 1, "a file no process knows: exit %d, want 1", rc);
    assert_out_has(out, "nothere.py: unknown to the host");
    free(out);
    rc = check(&out, NULL, "--quiet", url, hello, missing, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "nothere.py") && !strstr(out, "lagging:"),
                  "--quiet and lagging: exit %d, printed '%s'", rc, out);
    free(out);
    /* Unreadable for the server's user (www-data): the page cannot hash it. */
    it_chmod(web[0], "current/hello.py", 0600);
    rc = check(&out, NULL, url, hello, NULL);
    it_chmod(web[0], "current/hello.py", 0644);
    ck_assert_msg(rc == 1, "a file the server cannot read: exit %d, want 1", rc);
    assert_out_has(out, "hello.py: unreadable on disk");
    free(out);
    /* Gone from the disk of the release that is current. */
    ck_assert_int_eq(httpd_remove(web[0], "current/helper.py"), 0);
    rc = check(&out, NULL, url, hello, helper, NULL);
    ck_assert_msg(rc == 1, "a file removed from disk: exit %d, want 1", rc);
    assert_out_has(out, "helper.py: missing on disk");
    free(out);
    free(hello);
    free(helper);
    free(missing);
}
END_TEST

START_TEST(test_red_on_syntax_error)
{
    char good[32], bad[32], fixed[32], want[64], *out;
    double secs;
    int i, rc;

    tag_of(good, sizeof(good), "g");
    tag_of(bad, sizeof(bad), "b");
    tag_of(fixed, sizeof(fixed), "f");
    deploy(good, 0);
    ck_assert_int_eq(serve_until_green(good, &out), 0);
    free(out);

    deploy(bad, 1);
    /* The last good release keeps answering on both hosts... */
    traffic(good);
    /* ...and the check says which process failed on which file, and why. */
    rc = check_fleet(&out, NULL, NULL, NULL);
    ck_assert_msg(rc == 1, "after a broken release: exit %d, want 1", rc);
    assert_out_has(out, "failed to load it: SyntaxError");
    for (i = 0; i < HOSTS; i++) {
        snprintf(want, sizeof(want), "%s: process ", web[i]->url + strlen("http://"));
        assert_out_has(out, want);
    }
    assert_out_has(out, "/current/helper.py: failed to load it");
    free(out);
    /* Waiting does not turn it green. */
    rc = check_fleet(&out, &secs, "--wait", "2");
    ck_assert_msg(rc == 1, "--wait 2 on a broken release: exit %d, want 1", rc);
    ck_assert_msg(secs >= 1.5 && secs < 15, "--wait 2 took %.1f s", secs);
    free(out);

    deploy(fixed, 0);
    rc = serve_until_green(fixed, &out);
    ck_assert_msg(rc == 0, "after the fix: exit %d, want 0", rc);
    free(out);
}
END_TEST

START_TEST(test_usage_and_unreachable)
{
    char url[96], silent[64], *out;
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    double secs;
    int rc, fd;

    rc = check(&out, NULL, NULL);
    ck_assert_msg(rc == 2, "no argument: exit %d, want 2", rc);
    assert_out_has(out, "usage: pyreload-deploy-check");
    free(out);
    rc = check(&out, NULL, "--help", NULL);
    ck_assert_msg(rc == 0, "--help: exit %d, want 0", rc);
    assert_out_has(out, "exit status");
    free(out);
    snprintf(url, sizeof(url), "%s/pyreload-status", web[0]->url);
    rc = check(&out, NULL, url, "relative.py", NULL);
    ck_assert_msg(rc == 2, "a relative file: exit %d, want 2", rc);
    free(out);

    /* A host that refuses the connection: 2, said. */
    rc = check(&out, NULL, url, "http://127.0.0.1:1/pyreload-status", NULL);
    ck_assert_msg(rc == 2, "a host that is down: exit %d, want 2", rc);
    assert_out_has(out, "127.0.0.1:1: unreachable");
    free(out);

    /* A host that accepts and never answers: given up after --timeout. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(silent, sizeof(silent), "http://127.0.0.1:%d/pyreload-status", ntohs(a.sin_port));
    rc = check(&out, &secs, "--timeout", "1", url, silent, NULL);
    close(fd);
    ck_assert_msg(rc == 2, "a host that does not answer: exit %d, want 2", rc);
    ck_assert_msg(secs < 10, "--timeout 1 took %.1f s", secs);
    assert_out_has(out, "timed out");
    free(out);
}
END_TEST

Suite *
suite_fleet(void)
{
    Suite *s = suite_create("fleet");
    TCase *tc = httpd_tcase("fleet", 120, setup, teardown);

    tcase_add_test(tc, test_usage_and_unreachable);
    tcase_add_test(tc, test_green_after_traffic);
    tcase_add_test(tc, test_idle_host_is_not_green);
    tcase_add_test(tc, test_named_files);
    tcase_add_test(tc, test_red_on_syntax_error);
    suite_add_tcase(s, tc);
    return s;
}
