/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_interp.c: the interpreter is isolated, its stdio goes to the log, and
 * any thread can take the GIL through its own kept thread state.
 */
#include "unit.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include "pyr_python.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long
eval_long(const char *expr)
{
    PyObject *main_dict, *r;
    long v;

    pyr_gil_take();
    main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
    r = PyRun_String(expr, Py_eval_input, main_dict, main_dict);
    if (!r) {
        PyErr_Print();
    }
    ck_assert_ptr_nonnull(r);
    v = PyLong_AsLong(r);
    Py_DECREF(r);
    pyr_gil_drop();
    return v;
}

START_TEST(test_isolated)
{
    ck_assert_int_eq(eval_long("__import__('sys').flags.isolated"), 1);
    ck_assert_int_eq(eval_long("__import__('sys').flags.ignore_environment"), 1);
    ck_assert_int_eq(eval_long("__import__('sys').flags.no_user_site"), 1);
}
END_TEST

START_TEST(test_stdio_to_log)
{
    ut_run("import sys, logging\n"
        "print('hello stdout')\n"
        "sys.stderr.write('partial ')\n"
        "sys.stderr.write('line\\n')\n"
        "logging.warning('last resort %d', 42)\n");
    ck_assert_int_eq(ut_log_count("[stdout] hello stdout"), 1);
    ck_assert_int_eq(ut_log_count("[stderr] partial line"), 1);
    ck_assert_int_eq(ut_log_count("last resort 42"), 1);
}
END_TEST

START_TEST(test_pyreload_module)
{
    ck_assert_int_eq(eval_long("__import__('pyreload').OK"), 0);
    ck_assert_int_eq(eval_long("__import__('pyreload').DECLINED"), -1);
    ck_assert_int_eq(eval_long("__import__('pyreload').HTTP_NOT_FOUND"), 404);
    ck_assert_int_eq(eval_long("__import__('pyreload').HTTPError(403).status"), 403);
    ck_assert_int_eq(eval_long("issubclass(__import__('pyreload').HTTPError, Exception)"), 1);
}
END_TEST

/* The engine's HTTPError is its own reference: a module whose dict drops
 * the class (a handler's `del pyreload.HTTPError`, or mod_wsgi's process,
 * where nothing else keeps a copy) leaves it alive for req.read()'s 413. */
START_TEST(test_httperror_owned)
{
    PyObject *m, *wr, *cls;

    pyr_gil_take();
    m = pyr_pymod_init();       /* as attaching to mod_wsgi's Python does */
    ck_assert_ptr_nonnull(m);
    cls = PyObject_GetAttrString(m, "HTTPError");
    ck_assert_ptr_eq(cls, pyr_HTTPError);
    wr = PyWeakref_NewRef(cls, NULL);
    ck_assert_ptr_nonnull(wr);
    Py_DECREF(cls);
    ck_assert_int_eq(PyObject_DelAttrString(m, "HTTPError"), 0);
    Py_DECREF(m);
    PyGC_Collect();
    ck_assert_msg(PyWeakref_GetObject(wr) == pyr_HTTPError,
                  "pyreload.HTTPError was freed while the engine points at it");
    ck_assert_int_eq(PyType_Check(pyr_HTTPError), 1);
    Py_DECREF(wr);
    pyr_gil_drop();
}
END_TEST

static void *
thread_body(void *arg)
{
    int i;

    for (i = 0; i < 200; i++) {
        ut_run("counter += 1\n");
    }
    return NULL;
}

START_TEST(test_gil_from_threads)
{
    pthread_t t[4];
    int i;

    ut_run("counter = 0\n");
    for (i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, thread_body, NULL);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    ck_assert_int_eq(eval_long("counter"), 800);
    /* A C extension's own PyGILState_Ensure must find this thread's state. */
    pyr_gil_take();
    ck_assert_int_eq(PyGILState_Check(), 1);
    pyr_gil_drop();
}
END_TEST

/* A non-daemon thread that never ends, and an executor task that never
 * ends, do not hold the end of the process: fini waits about a second,
 * names them, and returns. */
START_TEST(test_fini_bounded_with_threads)
{
    struct timespec a, b;
    double ms;

#if defined(__SANITIZE_ADDRESS__)
    /* What the abandoned threads hold is never freed, by design: check for
     * leaks before they start, which also ends LeakSanitizer's check at
     * this test process's exit. */
    __lsan_do_leak_check();
#endif
    ut_run("import threading, time, concurrent.futures\n"
           "def run():\n"
           "    while True:\n"
           "        time.sleep(0.05)\n"
           "threading.Thread(target=run, name='pyrt-unit-forever', daemon=False).start()\n"
           "pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix='pyrt-unit-pool')\n"
           "pool.submit(run)\n");
    clock_gettime(CLOCK_MONOTONIC, &a);
    pyr_interp_fini();
    clock_gettime(CLOCK_MONOTONIC, &b);
    ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    ck_assert_msg(ms < 3000, "fini took %.0f ms", ms);
    ck_assert_int_eq(ut_log_count("PYR0302"), 1);
    ck_assert_int_eq(ut_log_count("'pyrt-unit-forever'"), 1);
    ck_assert_int_eq(ut_log_count("'pyrt-unit-pool_0'"), 1);
}
END_TEST

START_TEST(test_fini_quick_without_threads)
{
    struct timespec a, b;
    double ms;

    ut_run("import threading\nt = threading.Thread(target=lambda: None)\nt.start()\n");
    clock_gettime(CLOCK_MONOTONIC, &a);
    pyr_interp_fini();
    clock_gettime(CLOCK_MONOTONIC, &b);
    ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    ck_assert_msg(ms < 500, "fini took %.0f ms", ms);
    ck_assert_int_eq(ut_log_count("PYR0302"), 0);
}
END_TEST

Suite *
suite_interp(void)
{
    Suite *s = suite_create("interp");
    TCase *tc = tcase_create("life");

    tcase_add_checked_fixture(tc, ut_setup, ut_teardown);
    tcase_add_test(tc, test_isolated);
    tcase_add_test(tc, test_stdio_to_log);
    tcase_add_test(tc, test_pyreload_module);
    tcase_add_test(tc, test_httperror_owned);
    tcase_add_test(tc, test_gil_from_threads);
    tcase_add_test(tc, test_fini_quick_without_threads);
    suite_add_tcase(s, tc);
    /* Abandons threads on purpose: what they hold is never freed, and they
     * outlive the test.  Tagged so that make check-valgrind, which runs
     * every test in one process, leaves it out (check-asan forks it). */
    tc = tcase_create("abandon");
    tcase_set_tags(tc, "abandons-threads");
    tcase_add_checked_fixture(tc, ut_setup, ut_teardown);
    tcase_add_test(tc, test_fini_bounded_with_threads);
    suite_add_tcase(s, tc);
    return s;
}
