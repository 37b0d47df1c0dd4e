/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_engine.c: the module cache and reload sequence, driven directly:
 * first load, change detection, __clone__/__upgrade__/__purge__, failed
 * loads that keep the last good generation, deleted files, the check policy,
 * in-flight pinning and concurrent refreshes.
 */
#include "unit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pyr_entry_t *
entry(const char *name, int *slot)
{
    pyr_entry_t *e = pyr_cache_entry(ut_cache, ut_path(name));

    *slot = pyr_entry_require(e, "handler");
    return e;
}

#define ck_eval(e, expr, want)                                             \
    do {                                                                   \
        char *got_ = ut_eval(e, expr);                                     \
        ck_assert_msg(strcmp(got_, want) == 0, "%s = '%s', want '%s'\n%s",  \
                      expr, got_, want, ut_log_from("PYR"));               \
        free(got_);                                                        \
    } while (0)

/* ------------------------------------------------------------------ */

START_TEST(test_first_load_and_no_change)
{
    int slot;
    pyr_entry_t *e;

    ut_edit("h.py", "def handler(req):\n    return 'v1'\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "v1");
    ck_serves(e, slot, "v1");
    ck_serves(e, slot, "v1");
    ck_assert_int_eq(ut_log_count("loaded in"), 1);
    ck_assert_int_eq(ut_log_count("generation 1 loaded"), 1);
    ck_eval(e, "__generation__", "1");
    ck_eval(e, "__file__", ut_path("h.py"));
    ck_eval(e, "__import__('sys').modules[__name__].__dict__ is globals()", "True");
}
END_TEST

START_TEST(test_reload_on_change)
{
    int slot;
    pyr_entry_t *e;

    ut_edit("h.py", "def handler(req):\n    return 'v1'\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "v1");
    ut_edit("h.py", "def handler(req):\n    return 'v2'\n");
    ck_serves(e, slot, "v2");
    ck_eval(e, "__generation__", "2");
    ut_write_atomic("h.py", "def handler(req):\n    return 'v3'\n");
    ck_serves(e, slot, "v3");
    ck_eval(e, "__generation__", "3");
    ck_assert_int_eq(ut_log_count("generation 3 loaded"), 1);
}
END_TEST

START_TEST(test_same_name_two_directories)
{
    int s1, s2;
    pyr_entry_t *a, *b;
    char *na, *nb;

    ck_assert_int_eq(mkdir(ut_path("a"), 0755), 0);
    ck_assert_int_eq(mkdir(ut_path("b"), 0755), 0);
    ut_edit("a/handler.py", "def handler(req):\n    return 'A'\n");
    ut_edit("b/handler.py", "def handler(req):\n    return 'B'\n");
    a = entry("a/handler.py", &s1);
    b = entry("b/handler.py", &s2);
    ck_serves(a, s1, "A");
    ck_serves(b, s2, "B");
    na = ut_eval(a, "__name__");
    nb = ut_eval(b, "__name__");
    ck_assert_str_ne(na, nb);
    free(na);
    free(nb);
}
END_TEST

/* The origin's own example: a lock and a dict survive reloads; the counter
 * counts them. */
static const char origin_src[] =
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
    "    return '%%d %%d' %% (_data['reloads'], id(_lock))\n"
    "# edit %d\n";

START_TEST(test_origin_clone_example)
{
    char src[1024], *first, *last;
    pyr_entry_t *e;
    int slot, i;

    snprintf(src, sizeof(src), origin_src, 0);
    ut_edit("h.py", src);
    e = entry("h.py", &slot);
    first = ut_serve(e, slot);
    ck_assert_str_eq(strtok(strdup(first), " "), "0");
    for (i = 1; i <= 5; i++) {
        snprintf(src, sizeof(src), origin_src, i);
        ut_edit("h.py", src);
        free(ut_serve(e, slot));
    }
    last = ut_serve(e, slot);
    ck_assert_msg(strncmp(last, "5 ", 2) == 0, "after 5 reloads: %s", last);
    /* The very same Lock object. */
    ck_assert_str_eq(strchr(first, ' '), strchr(last, ' '));
    ck_eval(e, "__generation__", "6");
    free(first);
    free(last);
}
END_TEST

START_TEST(test_syntax_error_keeps_last_good_and_logs_once)
{
    pyr_entry_t *e;
    char *err;
    int slot;

    ut_edit("h.py", "state = {'n': 0}\n"
                 "def __clone__(new):\n    new.state = state\n"
                 "if 'state' not in globals(): state = {'n': 0}\n"
                 "def handler(req):\n    state['n'] += 1\n    return 'good%d' % state['n']\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "good1");
    ut_edit("h.py", "def handler(req)\n    return 'broken'\n");
    ck_serves(e, slot, "good2");
    ck_serves(e, slot, "good3");
    ck_serves(e, slot, "good4");
    ck_assert_int_eq(ut_log_count("load failed"), 1);
    ck_assert_int_eq(ut_log_count("SyntaxError"), 1);
    ck_assert_int_eq(ut_log_count("generation 1 keeps serving"), 1);
    err = pyr_entry_last_error(e, ut_pool);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "h.py\", line 1"));
    /* Fixed: the next request loads it, cloning the last good state. */
    ut_edit("h.py", "def handler(req):\n    state['n'] += 1\n    return 'fixed%d' % state['n']\n");
    ck_serves(e, slot, "fixed5");
    ck_eval(e, "__generation__", "2");
    ck_assert_ptr_null(pyr_entry_last_error(e, ut_pool));
}
END_TEST

START_TEST(test_first_load_fails_then_fixed)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "raise RuntimeError('body failed')\n");
    e = entry("h.py", &slot);
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_FAILED);
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_FAILED);
    ck_assert_int_eq(ut_log_count("RuntimeError: body failed"), 1);
    ck_assert_int_eq(ut_log_count("nothing to serve"), 1);
    ut_edit("h.py", "def handler(req):\n    return 'ok'\n");
    ck_serves(e, slot, "ok");
    ck_eval(e, "__generation__", "1");
}
END_TEST

START_TEST(test_clone_raising_keeps_old)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "def __clone__(new):\n    raise ValueError('no clone today')\n"
                 "def handler(req):\n    return 'old'\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "old");
    ut_edit("h.py", "def handler(req):\n    return 'new'\n");
    ck_serves(e, slot, "old");
    ck_assert_int_eq(ut_log_count("ValueError: no clone today"), 1);
    ck_assert_int_eq(ut_log_count("in __clone__"), 1);
    ck_eval(e, "__generation__", "1");
}
END_TEST

START_TEST(test_upgrade_converts_old_format)
{
    pyr_entry_t *e;
    int slot;

    /* v1 keeps users as a list of names. */
    ut_edit("h.py", "users = ['ann', 'bob']\n"
                 "def handler(req):\n    return ','.join(users)\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "ann,bob");
    /* v2 wants a dict name -> visits, and converts whatever it finds. */
    ut_edit("h.py", "FORMAT = 2\nusers = {}\n"
                 "def __upgrade__(old):\n"
                 "    global users\n"
                 "    assert old.__generation__ == __generation__ - 1\n"
                 "    if getattr(old, 'FORMAT', 1) == 1:\n"
                 "        users = {n: 0 for n in old.users}\n"
                 "    else:\n"
                 "        users = old.users\n"
                 "def handler(req):\n"
                 "    return ','.join('%s=%d' % kv for kv in sorted(users.items()))\n");
    ck_serves(e, slot, "ann=0,bob=0");
    ck_eval(e, "__generation__", "2");
    /* v3 of the same format carries the dict on. */
    ut_edit("h.py", "FORMAT = 2\nusers = {}\n"
                 "def __upgrade__(old):\n"
                 "    global users\n"
                 "    users = old.users if getattr(old, 'FORMAT', 1) == 2 else {}\n"
                 "    users['cat'] = __generation__\n"
                 "def handler(req):\n"
                 "    return ','.join('%s=%d' % kv for kv in sorted(users.items()))\n");
    ck_serves(e, slot, "ann=0,bob=0,cat=3");
}
END_TEST

/* An exception in __upgrade__ is a failed load: the last good generation
 * keeps serving, the number is not used up, and the next good version's
 * __upgrade__ gets that last good module. */
START_TEST(test_upgrade_raising_keeps_old)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "def handler(req):\n    return 'old'\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "old");
    ut_edit("h.py", "def __upgrade__(old):\n    raise KeyError('cannot convert')\n"
                 "def handler(req):\n    return 'new'\n");
    ck_serves(e, slot, "old");
    ck_serves(e, slot, "old");
    ck_assert_int_eq(ut_log_count("KeyError: 'cannot convert'"), 1);
    ck_assert_int_eq(ut_log_count("in __upgrade__"), 1);
    ck_eval(e, "__generation__", "1");
    ut_edit("h.py", "def __upgrade__(old):\n    global FROM\n    FROM = old.__generation__\n"
                 "def handler(req):\n    return 'fixed from %d' % FROM\n");
    ck_serves(e, slot, "fixed from 1");
    ck_eval(e, "__generation__", "2");
}
END_TEST

static const char purge_src[] =
    "import sys\n"
    "def __purge__():\n    sys._purged.append(__generation__)\n"
    "if not hasattr(sys, '_purged'): sys._purged = []\n"
    "def handler(req):\n    return '%s'\n";

START_TEST(test_purge_after_last_request)
{
    char src[512];
    pyr_entry_t *e;
    pyr_gen_t *pinned;
    int slot;

    snprintf(src, sizeof(src), purge_src, "v1");
    ut_edit("h.py", src);
    e = entry("h.py", &slot);
    ck_serves(e, slot, "v1");
    /* A request in flight on generation 1. */
    pyr_gil_take();
    pinned = pyr_entry_acquire(e);
    pyr_gil_drop();
    snprintf(src, sizeof(src), purge_src, "v2");
    ut_edit("h.py", src);
    ck_serves(e, slot, "v2");
    ck_eval(e, "sys._purged", "[]");
    /* The old request still runs the old code with the old globals. */
    {
        char *old = ut_call(pinned, slot);
        ck_assert_str_eq(old, "v1");
        free(old);
    }
    pyr_gil_take();
    pyr_gen_release(pinned, &ut_log);
    pyr_gil_drop();
    ck_eval(e, "sys._purged", "[1]");
    /* Nobody on generation 2 when 3 arrives: purged at once, once. */
    snprintf(src, sizeof(src), purge_src, "v3");
    ut_edit("h.py", src);
    ck_serves(e, slot, "v3");
    ck_serves(e, slot, "v3");
    ck_eval(e, "sys._purged", "[1, 2]");
}
END_TEST

START_TEST(test_old_generations_are_freed)
{
    pyr_entry_t *e;
    int slot, i;

    ut_edit("h.py", "import sys, weakref\n"
                 "if not hasattr(sys, '_refs'): sys._refs = []\n"
                 "class Marker: pass\n"
                 "marker = Marker()\n"
                 "sys._refs.append(weakref.ref(marker))\n"
                 "def handler(req):\n    return 'x'\n");
    e = entry("h.py", &slot);
    for (i = 0; i < 20; i++) {
        ut_set_mtime("h.py", 1700000100, i * 1000);
        free(ut_serve(e, slot));
    }
    ck_eval(e, "len(__import__('sys')._refs)", "20");
    ck_eval(e, "__import__('gc').collect() >= 0 and "
               "sum(r() is not None for r in __import__('sys')._refs)", "1");
}
END_TEST

START_TEST(test_missing_file_then_back)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "hits = {'n': 0}\n"
                 "def __clone__(new):\n    new.hits = hits\n"
                 "def handler(req):\n    hits['n'] += 1\n    return 'n=%d' % hits['n']\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "n=1");
    ck_assert_int_eq(unlink(ut_path("h.py")), 0);
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_MISSING);
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_MISSING);
    ck_assert_int_eq(ut_log_count("PYR0103"), 1);
    /* Back, with new code; the state came across through __clone__. */
    ut_edit("h.py", "if 'hits' not in globals(): hits = {'n': 0}\n"
                 "def __clone__(new):\n    new.hits = hits\n"
                 "def handler(req):\n    hits['n'] += 1\n    return 'back=%d' % hits['n']\n");
    ck_serves(e, slot, "back=2");
    ck_eval(e, "__generation__", "2");
}
END_TEST

/* A callable never found belongs to the configuration naming it: the file
 * is published for the others, and that slot alone fails (told once per
 * generation).  One that the serving code has and an edit removes is a
 * failed load: the last good code keeps serving. */
START_TEST(test_missing_callable_is_per_slot)
{
    pyr_entry_t *e;
    pyr_gen_t *g;
    int hs, ss;

    ut_edit("h.py", "def handler(req):\n    return 'v1'\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    ss = pyr_entry_require(e, "serve");
    hs = pyr_entry_require(e, "handler");
    ck_serves(e, hs, "v1");
    ck_assert_int_eq(ut_log_count("PYR0102"), 0);
    pyr_gil_take();
    g = pyr_entry_acquire(e);
    ck_assert_ptr_null(pyr_gen_callable(g, ss));
    ck_assert(PyErr_ExceptionMatches(PyExc_AttributeError));
    PyErr_Clear();
    ck_assert_int_eq(pyr_gen_tell_missing(g, ss), 1);
    ck_assert_int_eq(pyr_gen_tell_missing(g, ss), 0);
    pyr_gen_release(g, &ut_log);
    pyr_gil_drop();

    ut_edit("h.py", "serve = 42\ndef handler(req):\n    return 'v2'\n");
    ck_serves(e, hs, "v2");
    ck_serves(e, ss, "EXC:TypeError");
    ut_edit("h.py", "def serve(req):\n    return 'served'\n"
                    "def handler(req):\n    return 'v3'\n");
    ck_serves(e, ss, "served");
    ck_serves(e, hs, "v3");
    /* Removing (or breaking) a callable in use does not publish. */
    ut_edit("h.py", "def handler(req):\n    return 'v4'\n");
    ck_serves(e, hs, "v3");
    ck_assert_int_eq(ut_log_count("defines no 'serve'"), 1);
    ut_edit("h.py", "serve = 1\ndef handler(req):\n    return 'v5'\n");
    ck_serves(e, hs, "v3");
    ck_assert_int_eq(ut_log_count("not a callable"), 1);
    ck_eval(e, "__generation__", "3");
}
END_TEST

START_TEST(test_callable_declared_after_load)
{
    pyr_entry_t *e;
    int s1, s2;

    ut_edit("h.py", "def handler(req):\n    return 'h'\n"
                 "def other(req):\n    return 'o'\n");
    e = entry("h.py", &s1);
    ck_serves(e, s1, "h");
    s2 = pyr_entry_require(e, "other");
    ck_assert_int_ne(s1, s2);
    ck_serves(e, s2, "o");
}
END_TEST

START_TEST(test_check_off_freezes)
{
    pyr_check_t off = { 0, 0 }, slow = { 1, apr_time_from_sec(3600) };
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "def handler(req):\n    return 'v1'\n");
    e = entry("h.py", &slot);
    ck_assert_int_eq(pyr_entry_refresh(e, &off, &ut_log), PYR_READY);
    ut_edit("h.py", "def handler(req):\n    return 'v2'\n");
    ck_assert_int_eq(pyr_entry_refresh(e, &off, &ut_log), PYR_READY);
    ck_eval(e, "__generation__", "1");
    /* An interval: the first check looks, later ones wait. */
    ck_assert_int_eq(pyr_entry_refresh(e, &slow, &ut_log), PYR_READY);
    ck_eval(e, "__generation__", "2");
    ut_edit("h.py", "def handler(req):\n    return 'v3'\n");
    ck_assert_int_eq(pyr_entry_refresh(e, &slow, &ut_log), PYR_READY);
    ck_eval(e, "__generation__", "2");
    ck_serves(e, slot, "v3");   /* 'every' looks again */
}
END_TEST

/* `touch` reloads, also once the checks trust inotify's "nothing happened":
 * only the times move, nothing is written. */
START_TEST(test_touch_reloads)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "def handler(req):\n    return str(__generation__)\n");
    e = entry("h.py", &slot);
    ut_serve_until_quiet(e, slot, "1");
    ut_set_mtime("h.py", 1700000900, 0);
    ck_serves(e, slot, "2");
}
END_TEST

/* A handler that is a symlink into another directory (a release): an edit
 * of the target, through no name in the handler's directory, is seen once
 * the checks trust "nothing happened" (the target's directory is watched). */
START_TEST(test_symlink_target_elsewhere)
{
    pyr_entry_t *e;
    int slot;

    ck_assert_int_eq(mkdir(ut_path("release"), 0755), 0);
    ut_edit("release/app.py", "def handler(req):\n    return 'r1'\n");
    ck_assert_int_eq(symlink(ut_path("release/app.py"), ut_path("h.py")), 0);
    e = entry("h.py", &slot);
    ut_serve_until_quiet(e, slot, "r1");
    ut_edit("release/app.py", "def handler(req):\n    return 'r2'\n");
    ck_serves(e, slot, "r2");
}
END_TEST

/* Hooks are called only when callable: a module may hold data under those
 * names, and it reloads (and retires) as any other. */
START_TEST(test_non_callable_hooks_ignored)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "__clone__ = None\n__upgrade__ = 'up'\n__purge__ = 3\n"
                 "def handler(req):\n    return 'v1'\n");
    e = entry("h.py", &slot);
    ck_serves(e, slot, "v1");
    ut_edit("h.py", "__clone__ = None\n__upgrade__ = 'up'\n__purge__ = 3\n"
                 "def handler(req):\n    return 'v2'\n");
    ck_serves(e, slot, "v2");
    ck_eval(e, "__generation__", "2");
    ck_assert_int_eq(ut_log_count("load failed"), 0);
    ck_assert_int_eq(ut_log_count("PYR0104"), 0);
}
END_TEST

START_TEST(test_bad_sources)
{
    static const char latin1[] = "# -*- coding: latin-1 -*-\n"
                                 "def handler(req):\n    return len('\xe9t\xe9')\n";
    pyr_entry_t *e;
    char *err;
    int slot;

    ut_edit("h.py", latin1);
    e = entry("h.py", &slot);
    ck_serves(e, slot, "3");
    ut_write("h.py", "x = 1\n\0\n");
    ut_set_mtime("h.py", 1700000200, 0);
    ut_write("nul.py", "ok = 1");
    {
        FILE *f = fopen(ut_path("h.py"), "wb");
        fwrite("x = 1\n\0y = 2\n", 1, 13, f);
        fclose(f);
    }
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    ck_assert_int_eq(ut_log_count("NUL byte"), 1);
    /* A runtime error in the body names the file and the line. */
    ut_edit("h.py", "x = 1\ny = 1 / 0\n");
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    err = pyr_entry_last_error(e, ut_pool);
    ck_assert_ptr_nonnull(strstr(err, "h.py\", line 2"));
    ck_assert_ptr_nonnull(strstr(err, "ZeroDivisionError"));
    /* SystemExit in a module body is a failed load, not an exit. */
    ut_edit("h.py", "raise SystemExit(3)\n");
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    ck_assert_int_eq(ut_log_count("SystemExit: 3"), 1);
    ck_serves(e, slot, "3");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency: readers never see a generation go backwards, exactly one
 * load (and one __clone__) happens per change, and every change is seen. */

#define READERS 6

static volatile int stop_readers;
static pyr_entry_t *shared_entry;
static int shared_slot;

static void *
reader(void *arg)
{
    long last = 0, *bad = arg;

    while (!__atomic_load_n(&stop_readers, __ATOMIC_ACQUIRE)) {
        pyr_gen_t *g;
        char *out;
        long n;

        if (pyr_entry_refresh(shared_entry, &ut_every, &ut_log) != PYR_READY) {
            (*bad)++;
            continue;
        }
        pyr_gil_take();
        g = pyr_entry_acquire(shared_entry);
        pyr_gil_drop();
        out = ut_call(g, shared_slot);
        n = strtol(out, NULL, 10);
        if (n < last || n != pyr_gen_number(g)) {
            (*bad)++;
        }
        last = n;
        free(out);
        pyr_gil_take();
        pyr_gen_release(g, &ut_log);
        pyr_gil_drop();
    }
    return NULL;
}

START_TEST(test_concurrent_refresh)
{
    pthread_t t[READERS];
    long bad[READERS] = {0};
    const char *src = "import threading\n"
                      "def __clone__(new):\n    new.clones = clones\n    clones['n'] += 1\n"
                      "if 'clones' not in globals(): clones = {'n': 0}\n"
                      "def handler(req):\n    return str(__generation__)\n";
    int i, edits = 60;

    ut_edit("h.py", src);
    shared_entry = entry("h.py", &shared_slot);
    free(ut_serve(shared_entry, shared_slot));
    stop_readers = 0;
    for (i = 0; i < READERS; i++) {
        pthread_create(&t[i], NULL, reader, &bad[i]);
    }
    for (i = 0; i < edits; i++) {
        usleep(3000);
        if (i % 2) {
            ut_edit("h.py", src);
        }
        else {
            ut_write_atomic("h.py", src);
            ut_set_mtime("h.py", 1700000300, i * 1000);
        }
    }
    usleep(20000);
    __atomic_store_n(&stop_readers, 1, __ATOMIC_RELEASE);
    for (i = 0; i < READERS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(bad[i], 0);
    }
    free(ut_serve(shared_entry, shared_slot));
    {
        long gen = ut_eval_long(shared_entry, "__generation__");
        long clones = ut_eval_long(shared_entry, "clones['n']");

        /* One load per generation, one clone per reload. */
        ck_assert_msg(ut_log_count("load failed") == 0, "%s", ut_log_from("load failed"));
        ck_assert_int_eq(ut_log_count("loaded in"), gen);
        ck_assert_int_eq(clones, gen - 1);
        ck_assert_int_ge(gen, 2);
    }
}
END_TEST

Suite *
suite_engine(void)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("reload");

    tcase_add_checked_fixture(tc, ut_setup_cache, ut_teardown_cache);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_first_load_and_no_change);
    tcase_add_test(tc, test_reload_on_change);
    tcase_add_test(tc, test_same_name_two_directories);
    tcase_add_test(tc, test_origin_clone_example);
    tcase_add_test(tc, test_syntax_error_keeps_last_good_and_logs_once);
    tcase_add_test(tc, test_first_load_fails_then_fixed);
    tcase_add_test(tc, test_clone_raising_keeps_old);
    tcase_add_test(tc, test_upgrade_converts_old_format);
    tcase_add_test(tc, test_upgrade_raising_keeps_old);
    tcase_add_test(tc, test_purge_after_last_request);
    tcase_add_test(tc, test_old_generations_are_freed);
    tcase_add_test(tc, test_missing_file_then_back);
    tcase_add_test(tc, test_missing_callable_is_per_slot);
    tcase_add_test(tc, test_callable_declared_after_load);
    tcase_add_test(tc, test_check_off_freezes);
    tcase_add_test(tc, test_bad_sources);
    tcase_add_test(tc, test_touch_reloads);
    tcase_add_test(tc, test_symlink_target_elsewhere);
    tcase_add_test(tc, test_non_callable_hooks_ignored);
    tcase_add_test(tc, test_concurrent_refresh);
    suite_add_tcase(s, tc);
    return s;
}
