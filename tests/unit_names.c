/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_names.c: generations in sys.modules under their unique __name__
 * (src/names.c), and relative imports under a reload root's prefix.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static pyr_entry_t *
handler(const char *name, int *slot)
{
    pyr_entry_t *e = pyr_cache_entry(ut_cache, ut_path(name));

    *slot = pyr_entry_require(e, "handler");
    return e;
}

/* str() of expr evaluated in __main__, malloc'd. */
static char *
eval_main(const char *expr)
{
    PyObject *d, *r, *s;
    char *out;

    pyr_gil_take();
    d = PyModule_GetDict(PyImport_AddModule("__main__"));
    r = PyRun_String(expr, Py_eval_input, d, d);
    s = r ? PyObject_Str(r) : NULL;
    out = strdup(s ? PyUnicode_AsUTF8(s) : "EXC");
    PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(s);
    pyr_gil_drop();
    return out;
}

#define ck_main(expr, want)                                                  \
    do {                                                                     \
        char *got_ = eval_main(expr);                                        \
        ck_assert_msg(strcmp(got_, want) == 0, "%s = '%s', want '%s'\n%s",    \
                      expr, got_, want, ut_log_from("PYR"));                 \
        free(got_);                                                          \
    } while (0)

/* How many modules of sys.modules come from ut_dir/name. */
static char *
copies_expr(const char *name)
{
    static char buf[700];

    snprintf(buf, sizeof(buf), "sum(1 for m in list(__import__('sys').modules.values()) "
             "if getattr(m, '__file__', None) == %s%s%s)", "'", ut_path(name), "'");
    return buf;
}

static const char NAMES_PY[] =
    "import importlib.util, os, sys, helper\n"
    "from pkg import sub\n"
    "# later in the load that built them, as with any import\n"
    "AT_LOAD = sys.modules.get(helper.__name__) is helper and sys.modules.get(sub.__name__) is sub\n"
    "def handler(req):\n"
    "    root = sys.modules[helper.__name__.rpartition('.')[0]]\n"
    "    rs = importlib.util.find_spec(root.__name__)\n"
    "    here = os.path.dirname(__file__)\n"
    "    return ' '.join(str(x) for x in [\n"
    "        AT_LOAD or __generation__ > 1,\n"
    "        rs.submodule_search_locations == [os.path.join(here, root.__name__)]\n"
    "        and os.path.dirname(os.path.dirname(rs.origin)) == here\n"
    "        and importlib.util.find_spec(sub.__name__).submodule_search_locations is None\n"
    "        and importlib.util.find_spec(sub.__name__.rpartition('.')[0])\n"
    "            .submodule_search_locations == [os.path.join(here, 'pkg')],\n"
    "        sys.modules[__name__].__dict__ is globals(),\n"
    "        sys.modules[helper.__name__] is helper,\n"
    "        sys.modules[sub.__name__] is sub,\n"
    "        sub.__name__ == root.__name__ + '.pkg.sub',\n"
    "        sub.__package__ == root.__name__ + '.pkg',\n"
    "        helper.__package__ == root.__name__,\n"
    "        root.__path__ == [] and root.__name__.startswith('_pyreload_'),\n"
    "        'helper' not in sys.modules and 'pkg' not in sys.modules,\n"
    "        helper.T])\n";

START_TEST(test_generations_in_sys_modules)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", NAMES_PY);
    ut_edit("helper.py", "T = 'one'\n");
    ck_assert_int_eq(mkdir(ut_path("pkg"), 0755), 0);
    ut_edit("pkg/__init__.py", "");
    ut_edit("pkg/sub.py", "");
    e = handler("h.py", &slot);
    ck_serves(e, slot, "True True True True True True True True True True one");
    /* After a reload the name is the new module's, and only one copy is. */
    ut_edit("helper.py", "T = 'two'\n");
    ck_serves(e, slot, "True True True True True True True True True True two");
    ck_main(copies_expr("helper.py"), "1");
    ck_main(copies_expr("h.py"), "1");
}
END_TEST

/* A failed rebuild, a failed first load, a request in flight on a retired
 * generation: sys.modules always holds the serving generation only. */
START_TEST(test_failures_leave_sys_modules)
{
    pyr_entry_t *e, *b;
    pyr_gen_t *old;
    int slot, bslot;

    ut_edit("h.py", "import sys, helper\n"
                    "def handler(req):\n"
                    "    try:\n"
                    "        import late\n"
                    "    except ZeroDivisionError:\n"
                    "        pass\n"
                    "    return '%s %s %s' % (helper.T, sys.modules[helper.__name__] is helper,\n"
                    "                         sys.modules[__name__].__dict__ is globals())\n");
    ut_edit("helper.py", "T = 'one'\n");
    ut_edit("late.py", "import sys\nassert sys.modules[__name__]\n1 / 0\n");
    e = handler("h.py", &slot);
    ck_serves(e, slot, "one True True");
    ck_main(copies_expr("late.py"), "0");
    ut_edit("helper.py", "import sys\nT = 'two'\nassert sys.modules[__name__].T == 'two'\n"
                         "raise ValueError('broken')\n");
    ck_serves(e, slot, "one True True");
    ck_assert_int_eq(ut_log_count("ValueError: broken"), 1);
    ck_main(copies_expr("helper.py"), "1");

    /* A handler that never loaded is not there, nor what it imported
     * before it failed (a first load keeps its name until its build ends,
     * a failed build takes it back). */
    ut_edit("bad.py", "import sys, fine\n"
                      "assert sys.modules[fine.__name__] is fine\n"
                      "raise ValueError('never')\n");
    ut_edit("fine.py", "X = 1\n");
    b = handler("bad.py", &bslot);
    ck_assert_int_eq(pyr_entry_refresh(b, &ut_every, &ut_log), PYR_FAILED);
    ck_assert_int_eq(ut_log_count("ValueError: never"), 1);
    ck_main(copies_expr("bad.py"), "0");
    ck_main(copies_expr("fine.py"), "0");

    /* The retired generation's end does not take its successor's name. */
    pyr_gil_take();
    old = pyr_entry_acquire(e);
    pyr_gil_drop();
    ut_edit("helper.py", "T = 'three'\n");
    ck_serves(e, slot, "three True True");
    pyr_gil_take();
    pyr_gen_release(old, &ut_log);
    pyr_gil_drop();
    ck_serves(e, slot, "three True True");
    ck_main(copies_expr("helper.py"), "1");
    ck_main(copies_expr("h.py"), "1");
}
END_TEST

/* A cache's names, and its roots' packages, go with it. */
START_TEST(test_destroy_removes_names)
{
    apr_pool_t *pool;
    pyr_cache_t *c;
    pyr_entry_t *e;
    char *out;
    int slot;

    ut_edit("h.py", "import helper\ndef handler(req):\n    return helper.T\n");
    ut_edit("helper.py", "T = 'one'\n");
    apr_pool_create(&pool, NULL);
    c = pyr_cache_create(pool);
    e = pyr_cache_entry(c, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    out = ut_serve(e, slot);
    ck_assert_str_eq(out, "one");
    free(out);
    ck_main("len([k for k in __import__('sys').modules if k.startswith('_pyreload_')])", "3");
    pyr_cache_destroy(c);
    apr_pool_destroy(pool);
    ck_main("[k for k in __import__('sys').modules if k.startswith('_pyreload_')]", "[]");
}
END_TEST

/* Relative imports see the import name, not the root's prefix, and fail
 * where Python's fail. */
START_TEST(test_relative_imports_under_prefix)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "import importlib, top, pkg.a\n"
                    "from pkg import sub\n"
                    "def handler(req):\n"
                    "    x = importlib.import_module('.sub', package='pkg')\n"
                    "    y = importlib.import_module('.sub', package=pkg.__name__)\n"
                    "    return '%s|%s|%s %s' % (top.R, pkg.a.R, x is sub, y is sub)\n");
    ut_edit("top.py", "try:\n    from . import helper\n    R = 'imported'\n"
                      "except ImportError as e:\n    R = str(e)\n");
    ut_edit("helper.py", "");
    ck_assert_int_eq(mkdir(ut_path("pkg"), 0755), 0);
    ut_edit("pkg/__init__.py", "");
    ut_edit("pkg/sub.py", "");
    ut_edit("pkg/a.py", "from . import sub\n"
                        "try:\n    from .. import helper\n    R = 'imported'\n"
                        "except ImportError as e:\n    R = str(e)\n");
    e = handler("h.py", &slot);
    ck_serves(e, slot, "attempted relative import with no known parent package|"
                       "attempted relative import beyond top-level package|True True");
}
END_TEST

Suite *
suite_names(void)
{
    Suite *s = suite_create("names");
    TCase *tc = tcase_create("sys.modules");

    tcase_add_checked_fixture(tc, ut_setup_cache, ut_teardown_cache);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_generations_in_sys_modules);
    tcase_add_test(tc, test_failures_leave_sys_modules);
    tcase_add_test(tc, test_destroy_removes_names);
    tcase_add_test(tc, test_relative_imports_under_prefix);
    suite_add_tcase(s, tc);
    return s;
}
