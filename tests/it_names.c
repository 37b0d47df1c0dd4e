/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_names.c: names against a real apache2.
 *
 *   - modules: every current generation is in sys.modules under its own
 *     unique __name__, so what modern Python looks up there works
 *     (dataclasses with `from __future__ import annotations`,
 *     typing.get_type_hints, pickle of enum members and instances), two
 *     applications' `models` never meet, and a replaced generation is
 *     never found there again;
 *   - callables: one file used by two configurations, one of which names a
 *     callable the file lacks: that configuration answers 500 (said once
 *     per generation, naming the configuration), the other is served and
 *     reloads, whichever is asked first.
 */
#include "it_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static httpd_t *srv;

/* ------------------------------------------------------------------ */
/* Modules by __name__                                                 */

/* A handler (VERSION, and a method only v2 has) that checks, for a class
 * of its own and one of an imported module: future annotations under
 * @dataclass, get_type_hints, pickle round trips, sys.modules[__name__].
 * ?dump pickles instances; ?load=B64 unpickles them with the code of now. */
static const char DC_PY[] =
    "from __future__ import annotations\n"
    "import base64, dataclasses, enum, importlib.util, os, pickle, sys, typing\n"
    "import pyreload, dcmod\n"
    "VERSION = '%s'\n"
    "@dataclasses.dataclass\n"
    "class Point:\n"
    "    x: int\n"
    "    y: int = 0\n"
    "    %s\n"
    "class Color(enum.Enum):\n"
    "    RED = 1\n"
    "    BLUE = 2\n"
    "def copies(path):\n"
    "    return sum(1 for m in list(sys.modules.values())\n"
    "               if getattr(m, '__file__', None) == path)\n"
    "def found(m):\n"
    "    s = importlib.util.find_spec(m.__name__)\n"
    "    return (s is m.__spec__ and s.name == m.__name__ and s.origin == m.__file__\n"
    "            and s.has_location and s.parent == (m.__package__ or ''))\n"
    "def checks():\n"
    "    p, it = Point(1, 2), dcmod.Item('a', 3)\n"
    "    return {\n"
    "        'hints': typing.get_type_hints(Point) == {'x': int, 'y': int},\n"
    "        'mhints': typing.get_type_hints(dcmod.Item) == {'name': str, 'n': int},\n"
    "        'point': pickle.loads(pickle.dumps(p)) == p,\n"
    "        'color': pickle.loads(pickle.dumps(Color.BLUE)) is Color.BLUE,\n"
    "        'item': pickle.loads(pickle.dumps(it)) == it,\n"
    "        'kind': pickle.loads(pickle.dumps(dcmod.Kind.B)) is dcmod.Kind.B,\n"
    "        'self': getattr(sys.modules.get(__name__), '__dict__', None) is globals(),\n"
    "        'dep': sys.modules.get(dcmod.__name__) is dcmod,\n"
    "        'once': copies(__file__) == 1 and copies(dcmod.__file__) == 1,\n"
    "        'private': 'dcmod' not in sys.modules and dcmod.__name__.endswith('.dcmod'),\n"
    "        'package': dcmod.__package__ == dcmod.__name__.rpartition('.')[0],\n"
    "        'spec': found(sys.modules[__name__]),\n"
    "        'mspec': found(dcmod),\n"
    "    }\n"
    "def handler(req):\n"
    "    a = req.args or ''\n"
    "    if a == 'dump':\n"
    "        obj = (Point(3, 4), dcmod.Item('z', 9), Color.RED, dcmod.Kind.A)\n"
    "        req.write(base64.urlsafe_b64encode(pickle.dumps(obj)).decode())\n"
    "    elif a.startswith('load='):\n"
    "        p, it, c, k = pickle.loads(base64.urlsafe_b64decode(a[5:]))\n"
    "        ok = (type(p) is Point and p.twice() == 6 and type(it) is dcmod.Item\n"
    "              and it.tag() == dcmod.VERSION + ':z' and c is Color.RED and k is dcmod.Kind.A)\n"
    "        req.write('loaded %%s %%s' %% (VERSION, ok))\n"
    "    else:\n"
    "        bad = [k for k, v in checks().items() if not v]\n"
    "        req.write('%%s %%s %%s' %% (VERSION, dcmod.VERSION, ','.join(bad) or 'ok'))\n"
    "    return pyreload.OK\n";

static const char DCMOD_PY[] =
    "from __future__ import annotations\n"
    "import dataclasses, enum, sys\n"
    "VERSION = '%s'\n"
    "assert sys.modules[__name__].__dict__ is globals(), 'not in sys.modules during its exec'\n"
    "@dataclasses.dataclass\n"
    "class Item:\n"
    "    name: str\n"
    "    n: int = 0\n"
    "    def tag(self) -> str:\n"
    "        return VERSION + ':' + self.name\n"
    "class Kind(enum.Enum):\n"
    "    A = 'a'\n"
    "    B = 'b'\n"
    "%s\n";

static char *
dc_source(const char *version, const char *extra)
{
    char *s = malloc(sizeof(DC_PY) + 256);

    snprintf(s, sizeof(DC_PY) + 256, DC_PY, version, extra);
    return s;
}

static char *
dcmod_source(const char *version, const char *tail)
{
    char *s = malloc(sizeof(DCMOD_PY) + 256);

    snprintf(s, sizeof(DCMOD_PY) + 256, DCMOD_PY, version, tail);
    return s;
}

/* Two applications, each with a models.py imported as `models`. */
#define APP_PY                                                              \
    "import pickle, sys, pyreload, models\n"                                \
    "def handler(req):\n"                                                   \
    "    t = models.Thing(models.NAME)\n"                                   \
    "    back = pickle.loads(pickle.dumps(t))\n"                            \
    "    req.write('%s %s %s' % (back.name, type(back) is models.Thing,\n"  \
    "              sys.modules[models.__name__] is models))\n"              \
    "    return pyreload.OK\n"
#define MODELS_PY(name)                                                     \
    "NAME = '" name "'\n"                                                   \
    "class Thing:\n"                                                        \
    "    def __init__(self, name):\n"                                       \
    "        self.name = name\n"

static void
msetup(void)
{
    static const httpd_file_t files[] = {
        {"one/h.py", APP_PY}, {"one/models.py", MODELS_PY("one")},
        {"two/h.py", APP_PY}, {"two/models.py", MODELS_PY("two")},
        /* a module whose first load fails at request time */
        {"late.py", "import os, sys, pyreload\n"
                    "def handler(req):\n"
                    "    try:\n"
                    "        import badmod\n"
                    "    except ZeroDivisionError:\n"
                    "        pass\n"
                    "    path = os.path.join(os.path.dirname(__file__), 'badmod.py')\n"
                    "    left = [n for n, m in list(sys.modules.items())\n"
                    "            if getattr(m, '__file__', None) == path]\n"
                    "    req.write('left=%r' % left)\n"
                    "    return pyreload.OK\n"},
        {"badmod.py", "import dataclasses\nX = 1\n1 / 0\n"},
        {NULL, NULL}
    };
    httpd_opts_t o = {
        .config = "<Location /dc>\n  PyReloadHandler @APP@/dc.py\n</Location>\n"
                  "<Location /one>\n  PyReloadHandler @APP@/one/h.py\n</Location>\n"
                  "<Location /two>\n  PyReloadHandler @APP@/two/h.py\n</Location>\n"
                  "<Location /late>\n  PyReloadHandler @APP@/late.py\n</Location>\n",
        .files = files };
    char *a = dc_source("v1", "pass"), *b = dcmod_source("m1", "");

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    it_put(srv, "dc.py", a);
    it_put(srv, "dcmod.py", b);
    free(a);
    free(b);
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
mteardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

START_TEST(test_future_annotations_dataclass_pickle)
{
    it_expect(srv, "/dc", "v1 m1 ok");
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

START_TEST(test_two_apps_same_module_name)
{
    it_expect(srv, "/one", "one True True");
    it_expect(srv, "/two", "two True True");
    it_put(srv, "two/models.py", MODELS_PY("two-b"));
    it_expect(srv, "/two", "two-b True True");
    it_expect(srv, "/one", "one True True");
}
END_TEST

/* After a reload, sys.modules[__name__] is the new module (and only it);
 * what old code pickled loads into the new code's classes. */
START_TEST(test_reload_replaces_and_old_pickles_load)
{
    char *dump, *path, *a, *b;

    it_expect(srv, "/dc", "v1 m1 ok");
    dump = it_get(srv, "/dc?dump", 200);
    a = dc_source("v2", "def twice(self): return 2 * self.x");
    b = dcmod_source("m2", "");
    it_put(srv, "dc.py", a);
    it_put(srv, "dcmod.py", b);
    it_expect(srv, "/dc", "v2 m2 ok");
    path = malloc(strlen(dump) + 16);
    sprintf(path, "/dc?load=%s", dump);
    it_expect(srv, path, "loaded v2 True");
    free(path);
    free(dump);
    free(a);
    free(b);
}
END_TEST

/* A failed rebuild leaves sys.modules as it was; so does a module whose
 * first load failed. */
START_TEST(test_failed_build_restores_sys_modules)
{
    size_t mark = httpd_log_mark(srv);
    char *a = dc_source("v3", "def twice(self): return 2 * self.x");
    char *b = dcmod_source("m3", "raise RuntimeError('m3 is broken')");

    it_expect(srv, "/dc", "v2 m2 ok");
    it_put(srv, "dc.py", a);
    it_put(srv, "dcmod.py", b);
    it_expect(srv, "/dc", "v2 m2 ok");
    ck_assert_int_eq(httpd_log_count(srv, mark, "RuntimeError: m3 is broken"), 1);
    it_expect(srv, "/late", "left=[]");
    it_expect(srv, "/late", "left=[]");
    free(a);
    free(b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* One file, two configurations, a callable only one of them finds     */

static const char HELLO_PY[] =
    "import pyreload\n"
    "def handler(req):\n"
    "    req.write('hello %s')\n"
    "    return pyreload.OK\n"
    "%s";

static void
hello(httpd_t *h, const char *version, const char *extra)
{
    char src[512];

    snprintf(src, sizeof(src), HELLO_PY, version, extra);
    it_put(h, "hello.py", src);
}

START_TEST(test_missing_callable_is_per_configuration)
{
    int serve_first = _i;
    httpd_opts_t o = {
        .config = "<Location /hello>\n  PyReloadHandler @APP@/hello.py\n</Location>\n"
                  "<Location /serve>\n  PyReloadHandler @APP@/hello.py::serve\n</Location>\n"
    };
    httpd_t *h = httpd_new(&o);
    char *line;
    size_t mark;
    int i;

    ck_assert_ptr_nonnull(h);
    hello(h, "v1", "");
    if (httpd_start(h) != 0) {
        httpd_dump_log_tail(h, 40);
        ck_abort_msg("httpd did not start");
    }
    mark = httpd_log_mark(h);
    if (serve_first) {
        free(it_get(h, "/serve", 500));
    }
    it_expect(h, "/hello", "hello v1");
    for (i = 0; i < 3; i++) {
        free(it_get(h, "/serve", 500));
    }
    /* Said once for this generation, naming the file, the callable and the
     * configuration that wants it. */
    ck_assert(httpd_log_wait(h, mark, "PYR0120", 1, 2000));
    ck_assert_int_eq(httpd_log_count(h, mark, "PYR0120"), 1);
    line = httpd_log_line(h, mark, "PYR0120");
    ck_assert_msg(strstr(line, "hello.py") && strstr(line, "'serve'")
                  && strstr(line, "<Location /serve>") && strstr(line, "httpd.conf:"),
                  "%s", line);
    free(line);
    ck_assert_int_eq(httpd_log_count(h, mark, "PYR0102"), 0);

    /* touch: a new generation, still served at /hello; /serve says it once
     * more.  Then an edit, the same. */
    it_touch(h, "hello.py");
    it_expect(h, "/hello", "hello v1");
    free(it_get(h, "/serve", 500));
    free(it_get(h, "/serve", 500));
    ck_assert(httpd_log_wait(h, mark, "PYR0120", 2, 2000));
    ck_assert_int_eq(httpd_log_count(h, mark, "PYR0120"), 2);
    hello(h, "v2", "");
    it_expect(h, "/hello", "hello v2");
    free(it_get(h, "/serve", 500));
    ck_assert(httpd_log_wait(h, mark, "PYR0120", 3, 2000));
    ck_assert_int_eq(httpd_log_count(h, mark, "PYR0120"), 3);

    /* Defined: both are served. */
    hello(h, "v3", "def serve(req):\n    req.write('serve v3')\n    return pyreload.OK\n");
    it_expect(h, "/serve", "serve v3");
    it_expect(h, "/hello", "hello v3");

    /* A callable that was there and is removed: the edit does not publish,
     * the last good code keeps serving both. */
    mark = httpd_log_mark(h);
    it_put(h, "hello.py", "import pyreload\n"
                       "def serve(req):\n    req.write('serve v4')\n    return pyreload.OK\n");
    it_expect(h, "/hello", "hello v3");
    it_expect(h, "/serve", "serve v3");
    ck_assert(httpd_log_wait(h, mark, "PYR0102", 1, 2000));
    ck_assert_int_eq(httpd_log_count(h, mark, "defines no 'handler'"), 1);
    ck_assert(httpd_log_no_crash(h, 0));
    httpd_free(h);
}
END_TEST

Suite *
suite_names(void)
{
    Suite *s = suite_create("names");
    TCase *mc = httpd_tcase("modules", 60, msetup, mteardown);
    TCase *cc = httpd_tcase("callables", 60, NULL, NULL);

    tcase_add_test(mc, test_future_annotations_dataclass_pickle);
    tcase_add_test(mc, test_two_apps_same_module_name);
    tcase_add_test(mc, test_reload_replaces_and_old_pickles_load);
    tcase_add_test(mc, test_failed_build_restores_sys_modules);
    suite_add_tcase(s, mc);
    tcase_add_loop_test(cc, test_missing_callable_is_per_configuration, 0, 2);
    suite_add_tcase(s, cc);
    return s;
}
