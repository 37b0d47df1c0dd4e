/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_deps.c: dependency-aware reloading against a real apache2.  A handler's
 * own modules (under its directory or a PyReloadPath) reload with it, as a
 * consistent set; the standard library stays ordinary.
 */
#include "fixture.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static httpd_t *srv;
static long tick;

#define T0 1700000000

/* Write a file and give it a fresh mtime: a change whatever the clock. */
static void
put(const char *name, const char *text)
{
    ck_assert_int_eq(httpd_write(srv, name, text), 0);
    ck_assert_int_eq(httpd_set_mtime(srv, name, T0, ++tick * 1000), 0);
}

static char *
get(const char *path)
{
    http_resp_t *r = http_get(srv, path);
    char *body;

    ck_assert_msg(r->status == 200, "%s: status %ld: %.500s", path, r->status, r->body);
    body = strdup(r->body);
    http_free(r);
    return body;
}

#define expect(path, want)                                                   \
    do {                                                                     \
        char *got_ = get(path);                                              \
        ck_assert_msg(strcmp(got_, want) == 0, "%s: '%s', want '%s'", path,  \
                      got_, want);                                           \
        free(got_);                                                          \
    } while (0)

static const httpd_file_t files[] = {
    /* helper edited; __clone__ state; stdlib identity; import at request time */
    {"a.py", "import pyreload, json, sys, importlib, helper\n"
             "def handler(req):\n"
             "    import late\n"
             "    via = importlib.import_module('helper')\n"
             "    req.write('%s n=%d late=%s via=%s json=%d std=%s inmods=%s' % (helper.TEXT,\n"
             "              helper.bump(), late.L, via.TEXT, id(json), json.__name__ == 'json'\n"
             "              and hasattr(json, 'dumps'), 'helper' in sys.modules))\n"
             "    return pyreload.OK\n"},
    {"helper.py", "TEXT = 'h1'\n"
                  "if '_hits' not in globals(): _hits = {'n': 0}\n"
                  "def __clone__(new):\n    new._hits = _hits\n"
                  "def bump():\n    _hits['n'] += 1\n    return _hits['n']\n"},
    {"late.py", "L = 'l1'\n"},
    /* a local json.py must not shadow the standard library */
    {"json.py", "raise RuntimeError('the app json.py was imported')\n"},
    /* chain: handler -> service -> model */
    {"chain.py", "import pyreload, service\n"
                 "def handler(req):\n    req.write(service.describe())\n    return pyreload.OK\n"},
    {"service.py", "import model\n"
                   "def describe():\n    return 'service(%s)' % model.V\n"},
    {"model.py", "V = 'm1'\n"},
    /* a package with relative imports */
    {"pk.py", "import pyreload\nfrom shop import views\nfrom shop.sub import thing\n"
              "def handler(req):\n    req.write('%s %s' % (views.render(), thing))\n"
              "    return pyreload.OK\n"},
    {"shop/__init__.py", "NAME = 'shop'\n"},
    {"shop/views.py", "from . import util\nfrom . import sub as _sub\n"
                      "def render():\n    return 'views(%s)' % util.U\n"},
    {"shop/util.py", "U = 'u1'\n"},
    {"shop/sub/__init__.py", "from ..util import U as thing\n"},
    /* a package whose __init__ imports its own submodule, which imports a
     * sibling through the package (a Flask blueprint package) */
    {"pinit.py", "import pyreload\nfrom store import bp\n"
                 "def handler(req):\n    req.write(bp())\n    return pyreload.OK\n"},
    {"store/__init__.py", "from .views import bp\n"},
    {"store/views.py", "from . import pricing\n"
                       "def bp():\n    return 'v1(%s)' % pricing.P\n"},
    {"store/pricing.py", "P = 'p1'\n"},
    /* one module, two handlers */
    {"s1.py", "import pyreload, shared\n"
              "def handler(req):\n    req.write('%s id=%d' % (shared.S, id(shared._one)))\n"
              "    return pyreload.OK\n"},
    {"s2.py", "import pyreload, shared\n"
              "def handler(req):\n    req.write('%s id=%d' % (shared.S, id(shared._one)))\n"
              "    return pyreload.OK\n"},
    {"shared.py", "S = 's1'\n"
                  "if '_one' not in globals(): _one = object()\n"
                  "def __clone__(new):\n    new._one = _one\n"},
    /* a cycle */
    {"cy.py", "import pyreload, ca\n"
              "def handler(req):\n    req.write(ca.both())\n    return pyreload.OK\n"},
    {"ca.py", "import cb\nA = 'a1'\ndef both():\n    return A + '+' + cb.B + '+' + cb.seen_a()\n"},
    {"cb.py", "import ca\nB = 'b1'\ndef seen_a():\n    return ca.A\n"},
    /* a broken helper keeps the whole old set */
    {"br.py", "import pyreload, bx, by\n"
              "def handler(req):\n    req.write(bx.X + by.Y)\n    return pyreload.OK\n"},
    {"bx.py", "X = 'x1'\n"},
    {"by.py", "import bx\nY = '/' + bx.X\n"},
    /* first imported inside handler(), from another directory: a
     * PyReloadPath root, a package's subdirectory */
    {"lateroot.py", "import pyreload\n"
                    "def handler(req):\n    import rtlib\n    req.write(rtlib.V)\n"
                    "    return pyreload.OK\n"},
    {"../latelib/rtlib.py", "V = 'v1'\n"},
    {"latepkg.py", "import pyreload\n"
                   "def handler(req):\n    from rtpkg import rtmod\n    req.write(rtmod.V)\n"
                   "    return pyreload.OK\n"},
    {"rtpkg/__init__.py", "P = 1\n"},
    {"rtpkg/rtmod.py", "V = 'v1'\n"},
    /* first imported inside handler(), a module that imports another at
     * load time, from its own directory */
    {"latedep.py", "import pyreload\n"
                   "def handler(req):\n    import rtwrap\n    req.write(rtwrap.V)\n"
                   "    return pyreload.OK\n"},
    {"rtdeep/rtwrap.py", "from rtdeepdep import V\n"},
    {"rtdeep/rtdeepdep.py", "V = 'v1'\n"},
    /* imported at load time from other directories */
    {"farimp.py", "import pyreload, farlib\nfrom farpkg import farmod\n"
                  "def handler(req):\n    req.write(farlib.V + farmod.V)\n"
                  "    return pyreload.OK\n"},
    {"../lib/farlib.py", "V = 'l1'\n"},
    /* one name under two roots: each importer's own root first */
    {"twins.py", "import pyreload, twin, libside\n"
                 "def handler(req):\n    req.write(twin.WHERE + '/' + libside.TWIN)\n"
                 "    return pyreload.OK\n"},
    {"twin.py", "WHERE = 'app'\n"},
    {"../lib/twin.py", "WHERE = 'lib'\n"},
    {"../lib/libside.py", "from twin import WHERE as TWIN\n"},
    {"farpkg/__init__.py", "P = 1\n"},
    {"farpkg/farmod.py", "V = 'p1'\n"},
    {NULL, NULL}
};

static const char *config =
    "PyReloadPath @DIR@/lib\n"
    "PyReloadPath @APP@/rtdeep\n"
    "PyReloadPath @DIR@/latelib\n"
    "<Location /a>\n  PyReloadHandler @APP@/a.py\n</Location>\n"
    "<Location /chain>\n  PyReloadHandler @APP@/chain.py\n</Location>\n"
    "<Location /pk>\n  PyReloadHandler @APP@/pk.py\n</Location>\n"
    "<Location /pinit>\n  PyReloadHandler @APP@/pinit.py\n</Location>\n"
    "<Location /s1>\n  PyReloadHandler @APP@/s1.py\n</Location>\n"
    "<Location /s2>\n  PyReloadHandler @APP@/s2.py\n</Location>\n"
    "<Location /cy>\n  PyReloadHandler @APP@/cy.py\n</Location>\n"
    "<Location /br>\n  PyReloadHandler @APP@/br.py\n</Location>\n"
    "<Location /late-root>\n  PyReloadHandler @APP@/lateroot.py\n</Location>\n"
    "<Location /late-pkg>\n  PyReloadHandler @APP@/latepkg.py\n</Location>\n"
    "<Location /late-dep>\n  PyReloadHandler @APP@/latedep.py\n</Location>\n"
    "<Location /far-imports>\n  PyReloadHandler @APP@/farimp.py\n</Location>\n"
    "<Location /twins>\n  PyReloadHandler @APP@/twins.py\n</Location>\n";

static void
setup(void)
{
    httpd_opts_t o = { .config = config, .files = files };

    srv = httpd_launch(&o);
    ck_assert_msg(srv != NULL, "httpd did not start");
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* ------------------------------------------------------------------ */

START_TEST(test_helper_edit_reloads_handler)
{
    char *first, *second, *jf, *js;
    size_t mark;

    first = get("/a");
    ck_assert_msg(strncmp(first, "h1 n=1 late=l1 via=h1 ", 22) == 0, "%s", first);
    ck_assert_ptr_nonnull(strstr(first, "std=True inmods=False"));
    mark = httpd_log_mark(srv);
    put("helper.py", "TEXT = 'h2'\n"
                     "if '_hits' not in globals(): _hits = {'n': 0}\n"
                     "def __clone__(new):\n    new._hits = _hits\n"
                     "def bump():\n    _hits['n'] += 1\n    return _hits['n']\n");
    second = get("/a");
    /* New helper code, its state carried by __clone__, importlib agrees,
     * and the standard library's json is the very same object. */
    ck_assert_msg(strncmp(second, "h2 n=2 late=l1 via=h2 ", 22) == 0, "%s", second);
    jf = strstr(first, "json=");
    js = strstr(second, "json=");
    ck_assert_msg(strncmp(jf, js, strcspn(jf, " ")) == 0, "json changed: %s / %s", first, second);
    ck_assert_ptr_nonnull(strstr(second, "inmods=False"));
    ck_assert_int_eq(httpd_log_count(srv, mark, "helper ("), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "helper.py changed"), 1);
    free(first);
    free(second);
}
END_TEST

START_TEST(test_import_inside_handler_function)
{
    char *body;

    free(get("/a"));
    put("late.py", "L = 'l2'\n");
    body = get("/a");
    ck_assert_msg(strstr(body, " late=l2 ") != NULL, "%s", body);
    free(body);
}
END_TEST

START_TEST(test_two_level_chain)
{
    size_t mark;

    expect("/chain", "service(m1)");
    mark = httpd_log_mark(srv);
    put("model.py", "V = 'm2'\n");
    expect("/chain", "service(m2)");
    /* model and the service that imports it were rebuilt, because of model. */
    ck_assert_int_eq(httpd_log_count(srv, mark, "model ("), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "service ("), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "model.py changed"), 2);
    put("service.py", "import model\ndef describe():\n    return 'svc2(%s)' % model.V\n");
    expect("/chain", "svc2(m2)");
}
END_TEST

START_TEST(test_package_relative_imports)
{
    expect("/pk", "views(u1) u1");
    put("shop/util.py", "U = 'u2'\n");
    expect("/pk", "views(u2) u2");
    put("shop/views.py", "from . import util\n"
                         "def render():\n    return 'V2(%s)' % util.U\n");
    expect("/pk", "V2(u2) u2");
}
END_TEST

/* Python imports a package before its submodules: a rebuild of a
 * submodule (or of what it imports) with its package runs the package's
 * __init__ first, which imports the submodule, as the first load did. */
START_TEST(test_package_init_imports_submodule)
{
    expect("/pinit", "v1(p1)");
    put("store/views.py", "from . import pricing\n"
                          "def bp():\n    return 'v2(%s)' % pricing.P\n");
    expect("/pinit", "v2(p1)");
    put("store/pricing.py", "P = 'p2'\n");
    expect("/pinit", "v2(p2)");
    put("store/__init__.py", "from .views import bp\nX = 1\n");
    expect("/pinit", "v2(p2)");
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

START_TEST(test_module_shared_by_two_handlers)
{
    char *a = get("/s1"), *b = get("/s2"), *c, *d;
    size_t mark = httpd_log_mark(srv);

    ck_assert_str_eq(a, b);     /* one module: the same object inside */
    put("shared.py", "S = 's2'\n"
                     "if '_one' not in globals(): _one = object()\n"
                     "def __clone__(new):\n    new._one = _one\n");
    c = get("/s1");
    d = get("/s2");
    ck_assert_msg(strncmp(c, "s2 ", 3) == 0 && strcmp(c, d) == 0, "%s / %s", c, d);
    ck_assert_str_eq(strchr(a, ' '), strchr(c, ' '));      /* state carried */
    /* One change, one new generation of shared, whoever asked first. */
    ck_assert_int_eq(httpd_log_count(srv, mark, "shared ("), 1);
    free(a);
    free(b);
    free(c);
    free(d);
}
END_TEST

START_TEST(test_import_cycle)
{
    size_t mark;

    expect("/cy", "a1+b1+a1");
    put("cb.py", "import ca\nB = 'b2'\ndef seen_a():\n    return ca.A\n");
    expect("/cy", "a1+b2+a1");
    put("ca.py", "import cb\nA = 'a3'\ndef both():\n"
                 "    return A + '+' + cb.B + '+' + cb.seen_a()\n");
    mark = httpd_log_mark(srv);
    expect("/cy", "a3+b2+a3");
    ck_assert_int_eq(httpd_log_count(srv, mark, "ca ("), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "cb ("), 1);
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

START_TEST(test_broken_helper_keeps_old_set)
{
    size_t mark;
    int i;

    expect("/br", "x1/x1");
    mark = httpd_log_mark(srv);
    put("bx.py", "X = 'x2'\ndef broken(:\n    pass\n");
    for (i = 0; i < 4; i++) {
        expect("/br", "x1/x1");     /* the whole old set, not half of it */
    }
    ck_assert_int_eq(httpd_log_count(srv, mark, "SyntaxError"), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "bx.py\", line 2"), 1);
    put("bx.py", "X = 'x3'\n");
    expect("/br", "x3/x3");
    ck_assert_int_eq(httpd_log_count(srv, mark, "SyntaxError"), 1);
}
END_TEST

/* Modules imported at load time from other directories than the handler's
 * (a PyReloadPath root, a package directory) are watched too: from the first
 * load, and again after each rebuild. */
START_TEST(test_imports_from_other_directories)
{
    int i;

    for (i = 0; i < 4; i++) {
        expect("/far-imports", "l1p1");
    }
    put("../lib/farlib.py", "V = 'l2'\n");
    for (i = 0; i < 4; i++) {
        expect("/far-imports", "l2p1");
    }
    put("farpkg/farmod.py", "V = 'p2'\n");
    expect("/far-imports", "l2p2");
}
END_TEST

/* A name found under two roots is the importer's own: the handler's twin
 * is app/twin.py, lib/libside.py's is lib/twin.py; the PyReloadPath roots
 * are searched only after the importer's own. */
START_TEST(test_own_root_first)
{
    expect("/twins", "app/lib");
    put("twin.py", "WHERE = 'app2'\n");
    expect("/twins", "app2/lib");
    put("../lib/twin.py", "WHERE = 'lib2'\n");
    expect("/twins", "app2/lib2");
}
END_TEST

/* A module first imported at request time from another directory than the
 * handler's: once the checks trust the kernel's "nothing happened" (after a
 * clean sweep), an edit there must still reach the next request.  Nothing
 * else in this server imports from those directories (latelib/, rtpkg/), so
 * no other closure's watch can hide a missing one. */
static const struct {
    const char *url, *module;
} LATE[] = {
    {"/late-root", "../latelib/rtlib.py"},
    {"/late-pkg", "rtpkg/rtmod.py"},
    {"/late-dep", "rtdeep/rtdeepdep.py"},  /* a dependency of what it imports */
};

START_TEST(test_request_time_import_other_directory)
{
    int i;

    expect(LATE[_i].url, "v1");         /* the first import, inside handler() */
    for (i = 0; i < 3; i++) {
        expect(LATE[_i].url, "v1");     /* a clean sweep arms the quiet shortcut */
    }
    put(LATE[_i].module, "V = 'v2'\n");
    expect(LATE[_i].url, "v2");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Many clients while a helper is saved again and again: a handler never
 * sees a new helper with an old module built against the old one. */

#define CLIENTS 8
#define SAVES 100

static httpd_t *csrv;
static volatile int done_saving;

typedef struct {
    long requests, bad, backwards, last;
    char why[200];
} cstat_t;

static void *
client(void *arg)
{
    cstat_t *st = arg;
    http_client_t *c = http_client_new(csrv);

    while (!__atomic_load_n(&done_saving, __ATOMIC_ACQUIRE)) {
        http_resp_t *r = http_client_get(c, "/d");
        long v1 = -1, v2 = -2;

        st->requests++;
        if (r->status != 200 || sscanf(r->body, "%ld/%ld", &v1, &v2) != 2 || v1 != v2) {
            st->bad++;
            snprintf(st->why, sizeof(st->why), "%ld: %.100s", r->status, r->body);
        }
        else {
            if (v1 < st->last) {
                st->backwards++;
            }
            st->last = v1;
        }
        http_free(r);
    }
    http_client_free(c);
    return NULL;
}

static void
csetup(void)
{
    static const httpd_file_t cfiles[] = {
        {"d.py", "import pyreload, low, mid\n"
                 "def handler(req):\n    req.write('%d/%d' % (low.V, mid.SEEN))\n"
                 "    return pyreload.OK\n"},
        {"low.py", "V = 0\n"},
        {"mid.py", "import low\nSEEN = low.V\n"},
        {NULL, NULL}
    };
    httpd_opts_t o = { .config = "<Location /d>\n  PyReloadHandler @APP@/d.py\n</Location>\n",
                       .files = cfiles, .loglevel = "notice" };

    csrv = httpd_launch(&o);
    ck_assert_msg(csrv != NULL, "httpd did not start");
}

static void
cteardown(void)
{
    httpd_free(csrv);
    csrv = NULL;
}

START_TEST(test_concurrent_helper_saves)
{
    pthread_t t[CLIENTS];
    cstat_t st[CLIENTS];
    long total = 0;
    int i;

    memset(st, 0, sizeof(st));
    done_saving = 0;
    for (i = 0; i < CLIENTS; i++) {
        pthread_create(&t[i], NULL, client, &st[i]);
    }
    for (i = 1; i <= SAVES; i++) {
        char src[64];

        snprintf(src, sizeof(src), "V = %d\n", i);
        ck_assert_int_eq(i % 2 ? httpd_write(csrv, "low.py", src)
                               : httpd_write_atomic(csrv, "low.py", src), 0);
        usleep(45 * 1000);
    }
    __atomic_store_n(&done_saving, 1, __ATOMIC_RELEASE);
    for (i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        total += st[i].requests;
        ck_assert_msg(st[i].bad == 0 && st[i].backwards == 0,
                      "client %d: %ld inconsistent, %ld backwards of %ld (%s)", i,
                      st[i].bad, st[i].backwards, st[i].requests, st[i].why);
    }
    ck_assert_msg(total > CLIENTS * 50, "only %ld requests", total);
    ck_assert(httpd_log_no_crash(csrv, 0));
    fprintf(stderr, "deps concurrency: %ld requests by %d clients during %d helper saves\n",
            total, CLIENTS, SAVES);
}
END_TEST

Suite *
suite_imports(void)
{
    Suite *s = suite_create("deps");
    TCase *tc = httpd_tcase("imports", 60, setup, teardown);
    TCase *cc = httpd_tcase("concurrency", 60, csetup, cteardown);

    tcase_add_test(tc, test_helper_edit_reloads_handler);
    tcase_add_test(tc, test_import_inside_handler_function);
    tcase_add_test(tc, test_two_level_chain);
    tcase_add_test(tc, test_package_relative_imports);
    tcase_add_test(tc, test_package_init_imports_submodule);
    tcase_add_test(tc, test_module_shared_by_two_handlers);
    tcase_add_test(tc, test_import_cycle);
    tcase_add_test(tc, test_broken_helper_keeps_old_set);
    tcase_add_test(tc, test_imports_from_other_directories);
    tcase_add_test(tc, test_own_root_first);
    tcase_add_loop_test(tc, test_request_time_import_other_directory, 0,
                        (int)(sizeof LATE / sizeof LATE[0]));
    suite_add_tcase(s, tc);
    tcase_add_test(cc, test_concurrent_helper_saves);
    suite_add_tcase(s, cc);
    return s;
}
