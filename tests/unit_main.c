/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_main.c: the engine's unit tests (no Apache), one suite per area, and
 * the helpers of unit.h.
 */
#include "unit.h"

#include <apr_general.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char ut_dir[256];

const char *
ut_path(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];

    snprintf(b, 512, "%s/%s", ut_dir, name);
    return b;
}

static void
write_fd(int fd, const char *text)
{
    size_t n = strlen(text), off = 0;

    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        ck_assert_msg(w > 0, "write: %s", strerror(errno));
        off += (size_t)w;
    }
}

void
ut_write(const char *name, const char *text)
{
    int fd = open(ut_path(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);

    ck_assert_msg(fd >= 0, "open %s: %s", name, strerror(errno));
    write_fd(fd, text);
    close(fd);
}

void
ut_write_atomic(const char *name, const char *text)
{
    char tmp[600];
    int fd;

    snprintf(tmp, sizeof(tmp), "%s.tmp%d", ut_path(name), (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_msg(fd >= 0, "open %s: %s", tmp, strerror(errno));
    write_fd(fd, text);
    close(fd);
    ck_assert_int_eq(rename(tmp, ut_path(name)), 0);
}

void
ut_set_mtime(const char *name, long sec, long nsec)
{
    struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};

    ck_assert_int_eq(utimensat(AT_FDCWD, ut_path(name), ts, 0), 0);
}

/* ------------------------------------------------------------------ */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_buf;
static size_t log_len, log_cap;

static void
record(void *baton, int level, const char *line)
{
    size_t n = strlen(line);

    pthread_mutex_lock(&log_lock);
    if (log_len + n + 2 > log_cap) {
        /* Doubling: a test that logs megabytes must not time its logger. */
        log_cap = (log_len + n + 2) * 2;
        log_buf = realloc(log_buf, log_cap);
        ck_assert_ptr_nonnull(log_buf);
    }
    memcpy(log_buf + log_len, line, n);
    log_len += n;
    log_buf[log_len++] = '\n';
    log_buf[log_len] = '\0';
    pthread_mutex_unlock(&log_lock);
    if (getenv("PYR_UNIT_VERBOSE")) {
        fprintf(stderr, "log[%d]: %s\n", level, line);
    }
}

pyr_logger_t ut_log = { record, NULL };

int
ut_log_count(const char *needle)
{
    const char *p;
    int n = 0;

    pthread_mutex_lock(&log_lock);
    for (p = log_buf; p && (p = strstr(p, needle)); p += strlen(needle)) {
        n++;
    }
    pthread_mutex_unlock(&log_lock);
    return n;
}

const char *
ut_log_text(void)
{
    return log_buf ? log_buf : "";
}

const char *
ut_log_from(const char *needle)
{
    static char excerpt[1501];
    const char *p = strstr(ut_log_text(), needle);

    snprintf(excerpt, sizeof(excerpt), "%s", p ? p : "(not in the log)");
    return excerpt;
}

/* ------------------------------------------------------------------ */

static char *
result_text(PyObject *r)
{
    char *out;

    if (!r) {
        PyObject *t, *v, *tb;

        PyErr_Fetch(&t, &v, &tb);
        out = malloc(128);
        snprintf(out, 128, "EXC:%s", t ? ((PyTypeObject *)t)->tp_name : "?");
        Py_XDECREF(t);
        Py_XDECREF(v);
        Py_XDECREF(tb);
        return out;
    }
    else {
        PyObject *s = PyObject_Str(r);
        out = strdup(s ? PyUnicode_AsUTF8(s) : "?");
        Py_XDECREF(s);
        Py_DECREF(r);
    }
    return out;
}

void
ut_run(const char *code)
{
    PyObject *main_dict, *r;

    pyr_gil_take();
    main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
    r = PyRun_String(code, Py_file_input, main_dict, main_dict);
    if (!r) {
        PyErr_Print();
    }
    ck_assert_ptr_nonnull(r);
    Py_DECREF(r);
    pyr_gil_drop();
}

char *
ut_call(pyr_gen_t *g, int slot)
{
    PyObject *fn, *r;
    char *out;

    pyr_gil_take();
    fn = pyr_gen_callable(g, slot);
    r = fn ? PyObject_CallOneArg(fn, Py_None) : NULL;
    out = result_text(r);
    pyr_gil_drop();
    return out;
}

char *
ut_eval(pyr_entry_t *e, const char *expr)
{
    pyr_gen_t *g;
    PyObject *d, *r;
    char *out;

    pyr_gil_take();
    g = pyr_entry_acquire(e);
    if (!g) {
        pyr_gil_drop();
        return strdup("NOGEN");
    }
    d = PyModule_GetDict(pyr_gen_module(g));
    r = PyRun_String(expr, Py_eval_input, d, d);
    out = result_text(r);
    pyr_gen_release(g, &ut_log);
    pyr_gil_drop();
    return out;
}

long
ut_eval_long(pyr_entry_t *e, const char *expr)
{
    char *s = ut_eval(e, expr);
    long v = strtol(s, NULL, 10);

    free(s);
    return v;
}

/* ------------------------------------------------------------------ */

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

void
ut_setup_nopython(void)
{
    snprintf(ut_dir, sizeof(ut_dir), "/tmp/pyr-unit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(ut_dir));
    log_len = 0;
    if (log_buf) {
        log_buf[0] = '\0';
    }
}

void
ut_teardown_nopython(void)
{
    nftw(ut_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void
ut_setup(void)
{
    pyr_interp_opts_t opts = { NULL, 0, { record, NULL }, NULL };
    const char *err = NULL;

    ut_setup_nopython();
    ck_assert_msg(pyr_interp_init(&opts, &err) == 0, "Python: %s", err ? err : "?");
}

void
ut_teardown(void)
{
    pyr_interp_fini();
    ut_teardown_nopython();
}

pyr_cache_t *ut_cache;
apr_pool_t *ut_pool;
const pyr_check_t ut_every = { 1, 0 };

void
ut_setup_cache(void)
{
    ut_setup();
    apr_pool_create(&ut_pool, NULL);
    ut_cache = pyr_cache_create(ut_pool);
}

void
ut_teardown_cache(void)
{
    pyr_cache_destroy(ut_cache);
    apr_pool_destroy(ut_pool);
    ut_teardown();
}

void
ut_edit(const char *name, const char *text)
{
    static long tick;

    ut_write(name, text);
    ut_set_mtime(name, 1700000000, ++tick * 1000);
}

char *
ut_serve(pyr_entry_t *e, int slot)
{
    pyr_gen_t *g;
    char *out;

    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    pyr_gil_take();
    g = pyr_entry_acquire(e);
    pyr_gil_drop();
    ck_assert_ptr_nonnull(g);
    out = ut_call(g, slot);
    pyr_gil_take();
    pyr_gen_release(g, &ut_log);
    pyr_gil_drop();
    return out;
}

void
ut_serve_until_quiet(pyr_entry_t *e, int slot, const char *want)
{
    int i;

    /* The first serve may be the first load, which has no watch list to
     * sweep yet: only a later check that leaves the count alone skipped. */
    ck_serves(e, slot, want);
    for (i = 0; i < 5; i++) {
        long before = pyr_entry_sweeps(e);

        ck_serves(e, slot, want);
        if (pyr_entry_sweeps(e) == before) {
            return;
        }
    }
    ck_abort_msg("every check still stats the files: the quiet shortcut never armed");
}

/* ------------------------------------------------------------------ */

/* Built for a memory checker (PYR_SANITIZE: make check-asan, check-valgrind),
 * Python must allocate from malloc, where the checker sees every object;
 * otherwise from pymalloc, whose live blocks the memory tests count. */
START_TEST(test_allocator)
{
    PyObject *fn, *r;
    long blocks;

    pyr_gil_take();
    fn = PySys_GetObject("getallocatedblocks");     /* borrowed */
    r = fn ? PyObject_CallNoArgs(fn) : NULL;
    blocks = r ? PyLong_AsLong(r) : -1;
    Py_XDECREF(r);
    pyr_gil_drop();
#ifdef PYR_SANITIZE
    ck_assert_msg(blocks == 0, "pymalloc in use (%ld blocks) in a sanitizer build", blocks);
#else
    ck_assert_msg(blocks > 0, "pymalloc not in use");
#endif
}
END_TEST

static Suite *
suite_build(void)
{
    Suite *s = suite_create("build");
    TCase *tc = tcase_create("allocator");

    tcase_add_checked_fixture(tc, ut_setup, ut_teardown);
    tcase_add_test(tc, test_allocator);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    apr_initialize();
    sr = srunner_create(suite_spec());
    srunner_add_suite(sr, suite_source());
    srunner_add_suite(sr, suite_interp());
    srunner_add_suite(sr, suite_engine());
    srunner_add_suite(sr, suite_deps());
    srunner_add_suite(sr, suite_notify());
    srunner_add_suite(sr, suite_perm());
    srunner_add_suite(sr, suite_names());
    srunner_add_suite(sr, suite_build());
    srunner_add_suite(sr, suite_stdio());
    srunner_add_suite(sr, suite_status());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
