/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_notify.c: what the inotify shortcut may and may not skip.  A deploy
 * that re-points a symlinked release or replaces a directory moves what a
 * path resolves to: every later change must still be seen (the watches
 * follow the path, not the inode first found), and once re-watched, quiet
 * checks skip their stats again.  Also the check interval's first look, and
 * brief absences, which are waited out.
 */
#include "unit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pyr_entry_t *
handler(const char *name, int *slot)
{
    pyr_entry_t *e = pyr_cache_entry(ut_cache, ut_path(name));

    *slot = pyr_entry_require(e, "handler");
    return e;
}

/* A release: h.py imports d.py; serves "<h> <d>". */
static void
release(const char *dir, const char *h, const char *d)
{
    char name[256], src[256];

    mkdir(ut_path(dir), 0755);
    snprintf(name, sizeof(name), "%s/h.py", dir);
    snprintf(src, sizeof(src), "import d\ndef handler(req):\n    return '%s ' + d.V\n", h);
    ut_edit(name, src);
    snprintf(name, sizeof(name), "%s/d.py", dir);
    snprintf(src, sizeof(src), "V = '%s'\n", d);
    ut_edit(name, src);
}

/* Point link at target, atomically (as `ln -s` + `mv -T` does). */
static void
repoint(const char *target, const char *link)
{
    char tmp[600];

    snprintf(tmp, sizeof(tmp), "%s.new", ut_path(link));
    ck_assert_int_eq(symlink(target, tmp), 0);
    ck_assert_int_eq(rename(tmp, ut_path(link)), 0);
}

/* Quiet checks look at no file (the shortcut works again). */
static void
ck_quiet(pyr_entry_t *e)
{
    long before = pyr_entry_sweeps(e);
    int i;

    for (i = 0; i < 100; i++) {
        ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    }
    ck_assert_msg(pyr_entry_sweeps(e) - before <= 2, "%ld sweeps for 100 quiet checks",
                  pyr_entry_sweeps(e) - before);
}

START_TEST(test_release_symlink_swaps)
{
    pyr_entry_t *e;
    int slot, n;

    mkdir(ut_path("releases"), 0755);
    release("releases/1", "h1", "d1");
    repoint("releases/1", "current");
    e = handler("current/h.py", &slot);
    ck_serves(e, slot, "h1 d1");
    for (n = 2; n <= 5; n++) {
        char rel[64], want[64], h[16], d[16];

        snprintf(rel, sizeof(rel), "releases/%d", n);
        snprintf(h, sizeof(h), "h%d", n);
        snprintf(d, sizeof(d), "d%d", n);
        release(rel, h, d);
        ck_quiet(e);
        repoint(rel, "current");
        snprintf(want, sizeof(want), "h%d d%d", n, n);
        ck_serves(e, slot, want);
        ck_serves(e, slot, want);
        ck_quiet(e);
        /* An edit inside the release now current: only its watch sees it. */
        snprintf(rel, sizeof(rel), "releases/%d/d.py", n);
        ut_write(rel, "V = 'x'\n");
        snprintf(want, sizeof(want), "h%d x", n);
        ck_serves(e, slot, want);
    }
}
END_TEST

START_TEST(test_dir_renamed_away_and_replaced)
{
    pyr_entry_t *e;
    int slot, n;

    release("app", "h1", "d1");
    e = handler("app/h.py", &slot);
    ck_serves(e, slot, "h1 d1");
    for (n = 2; n <= 4; n++) {
        char h[16], d[16], want[64], old[600];

        snprintf(h, sizeof(h), "h%d", n);
        snprintf(d, sizeof(d), "d%d", n);
        release("app.new", h, d);
        snprintf(old, sizeof(old), "%s.old%d", ut_path("app"), n);
        ck_assert_int_eq(rename(ut_path("app"), old), 0);
        ck_assert_int_eq(rename(ut_path("app.new"), ut_path("app")), 0);
        snprintf(want, sizeof(want), "h%d d%d", n, n);
        ck_serves(e, slot, want);
        ck_quiet(e);
        /* The old directory, still watched once, says nothing any more;
         * the new one does. */
        ut_write("app/d.py", "V = 'y'\n");
        snprintf(want, sizeof(want), "h%d y", n);
        ck_serves(e, slot, want);
        ck_quiet(e);
    }
}
END_TEST

START_TEST(test_dir_deleted_and_recreated)
{
    pyr_entry_t *e;
    int slot;

    release("app", "h1", "d1");
    e = handler("app/h.py", &slot);
    ck_serves(e, slot, "h1 d1");
    ck_assert_int_eq(unlink(ut_path("app/h.py")), 0);
    ck_assert_int_eq(unlink(ut_path("app/d.py")), 0);
    ck_assert_int_eq(rmdir(ut_path("app")), 0);
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_MISSING);
    release("app", "h2", "d2");
    ck_serves(e, slot, "h2 d2");
    ck_quiet(e);
    ut_write("app/d.py", "V = 'z'\n");
    ck_serves(e, slot, "h2 z");
}
END_TEST

/* A symlinked directory in the middle of the path, and a link to a link. */
START_TEST(test_chained_links)
{
    pyr_entry_t *e;
    int slot;

    release("a", "ha", "da");
    release("b", "hb", "db");
    repoint("a", "mid");
    repoint("mid", "top");
    e = handler("top/h.py", &slot);
    ck_serves(e, slot, "ha da");
    ck_quiet(e);
    repoint("b", "mid");            /* the inner link moves, the outer one not */
    ck_serves(e, slot, "hb db");
    ck_quiet(e);
    ut_write("b/d.py", "V = 'w'\n");
    ck_serves(e, slot, "hb w");
}
END_TEST

/* PyReloadCheckInterval: the first load is a look; the interval runs from it. */
START_TEST(test_interval_counts_first_load)
{
    pyr_check_t slow = { 1, apr_time_from_sec(3600) };
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "def handler(req):\n    return 'v1'\n");
    e = handler("h.py", &slot);
    ck_assert_int_eq(pyr_entry_refresh(e, &slow, &ut_log), PYR_READY);
    ut_edit("h.py", "def handler(req):\n    return 'v2'\n");
    ck_assert_int_eq(pyr_entry_refresh(e, &slow, &ut_log), PYR_READY);
    ck_assert_int_eq(ut_log_count("generation 2"), 0);
    ck_serves(e, slot, "v2");       /* 'every' looks */
}
END_TEST

static volatile int flapped;

static void *
flap(void *arg)
{
    int i;

    (void)arg;
    for (i = 0; i < 10; i++) {
        ck_assert_int_eq(unlink(ut_path("h.py")), 0);
        usleep(20 * 1000);
        ut_write("h.py", "def handler(req):\n    return 'back'\n");
        usleep(5 * 1000);
    }
    __atomic_store_n(&flapped, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A file with a good generation, absent for 20 ms at a time: never missing. */
START_TEST(test_brief_absence_is_waited_out)
{
    pyr_entry_t *e;
    pthread_t t;
    int slot, missing = 0;

    ut_edit("h.py", "def handler(req):\n    return 'v1'\n");
    e = handler("h.py", &slot);
    ck_serves(e, slot, "v1");
    pthread_create(&t, NULL, flap, NULL);
    while (!__atomic_load_n(&flapped, __ATOMIC_ACQUIRE)) {
        missing += pyr_entry_refresh(e, &ut_every, &ut_log) == PYR_MISSING;
        usleep(1000);
    }
    pthread_join(t, NULL);
    ck_assert_int_eq(missing, 0);
    ck_assert_int_eq(ut_log_count("PYR0103"), 0);
    ck_serves(e, slot, "back");
    /* A lasting absence is reported, once, and not waited for again. */
    ck_assert_int_eq(unlink(ut_path("h.py")), 0);
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_MISSING);
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_MISSING);
    ck_assert_int_eq(ut_log_count("PYR0103"), 1);
}
END_TEST

Suite *
suite_notify(void)
{
    Suite *s = suite_create("notify");
    TCase *tc = tcase_create("deploys");

    tcase_add_checked_fixture(tc, ut_setup_cache, ut_teardown_cache);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_release_symlink_swaps);
    tcase_add_test(tc, test_dir_renamed_away_and_replaced);
    tcase_add_test(tc, test_dir_deleted_and_recreated);
    tcase_add_test(tc, test_chained_links);
    tcase_add_test(tc, test_interval_counts_first_load);
    tcase_add_test(tc, test_brief_absence_is_waited_out);
    suite_add_tcase(s, tc);
    return s;
}
