/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_source.c: every kind of edit the reload issue names is a change of
 * signature, and an unchanged file is not.
 */
#include "unit.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pyr_sig_t
sig_of(const char *name)
{
    pyr_sig_t s;

    ck_assert_int_eq(pyr_sig_stat(ut_path(name), &s), 0);
    return s;
}

START_TEST(test_unchanged_is_equal)
{
    pyr_sig_t a, b;

    ut_write("f.py", "x = 1\n");
    a = sig_of("f.py");
    b = sig_of("f.py");
    ck_assert(pyr_sig_equal(&a, &b));
}
END_TEST

START_TEST(test_same_second_edit)
{
    pyr_sig_t a, b;

    ut_write("f.py", "x = 1\n");
    ut_set_mtime("f.py", 1700000000, 100);
    a = sig_of("f.py");
    ut_write("f.py", "x = 2\n");             /* same size */
    ut_set_mtime("f.py", 1700000000, 200);   /* same second */
    b = sig_of("f.py");
    ck_assert(!pyr_sig_equal(&a, &b));
    ck_assert(a.mtime_ns != b.mtime_ns);
}
END_TEST

START_TEST(test_size_change_mtime_restored)
{
    pyr_sig_t a, b;

    ut_write("f.py", "x = 1\n");
    ut_set_mtime("f.py", 1700000000, 0);
    a = sig_of("f.py");
    ut_write("f.py", "x = 12345\n");
    ut_set_mtime("f.py", 1700000000, 0);
    b = sig_of("f.py");
    ck_assert_int_eq(a.mtime_ns, b.mtime_ns);
    ck_assert(!pyr_sig_equal(&a, &b));
}
END_TEST

START_TEST(test_atomic_rename)
{
    pyr_sig_t a, b;

    ut_write("f.py", "x = 1\n");
    ut_set_mtime("f.py", 1700000000, 0);
    a = sig_of("f.py");
    ut_write_atomic("f.py", "x = 2\n");
    ut_set_mtime("f.py", 1700000000, 0);    /* same size, same mtime: inode differs */
    b = sig_of("f.py");
    ck_assert(a.ino != b.ino);
    ck_assert(!pyr_sig_equal(&a, &b));
}
END_TEST

START_TEST(test_symlink_swap)
{
    pyr_sig_t a, b;

    ut_write("v1.py", "x = 1\n");
    ut_write("v2.py", "x = 2\n");
    ut_set_mtime("v1.py", 1700000000, 0);
    ut_set_mtime("v2.py", 1700000000, 0);
    ck_assert_int_eq(symlink(ut_path("v1.py"), ut_path("cur.py")), 0);
    a = sig_of("cur.py");
    ck_assert_int_eq(symlink(ut_path("v2.py"), ut_path("new.lnk")), 0);
    ck_assert_int_eq(rename(ut_path("new.lnk"), ut_path("cur.py")), 0);
    b = sig_of("cur.py");
    ck_assert(!pyr_sig_equal(&a, &b));
}
END_TEST

/* Each field, alone, is a change: signatures built by hand from one real
 * stat, so that no timestamp tick decides the outcome.  The loop index is
 * the field that differs by one unit (a nanosecond for the times). */
static const char *const SIG_FIELDS[] = {"dev", "ino", "size", "mtime_ns", "ctime_ns"};

START_TEST(test_one_field_alone_is_a_change)
{
    pyr_sig_t a, b;

    ut_write("f.py", "x = 1\n");
    a = sig_of("f.py");
    b = a;
    ck_assert(pyr_sig_equal(&a, &b));
    switch (_i) {
    case 0: b.dev++; break;
    case 1: b.ino++; break;
    case 2: b.size++; break;
    case 3: b.mtime_ns++; break;
    case 4: b.ctime_ns++; break;
    }
    ck_assert_msg(!pyr_sig_equal(&a, &b), "signatures that differ only in %s compare equal",
                  SIG_FIELDS[_i]);
    ck_assert_msg(!pyr_sig_equal(&b, &a), "signatures that differ only in %s compare equal",
                  SIG_FIELDS[_i]);
}
END_TEST

/* cp -p, rsync -t --inplace: the same inode rewritten with text of the same
 * size, its old mtime put back; only ctime tells.  The kernel sets ctime
 * from its own clock, in ticks of the file system's granularity, so the
 * rewrite is repeated (bounded) until ctime has moved: whatever the tick,
 * the test ends on a real ctime-only change, and checks that it is one. */
START_TEST(test_ctime_only_change)
{
    pyr_sig_t a, b;
    int tries;

    ut_write("f.py", "x = 1\n");
    ut_set_mtime("f.py", 1700000000, 0);
    a = sig_of("f.py");
    for (tries = 0; tries < 300; tries++) {
        ut_write("f.py", "x = 2\n");
        ut_set_mtime("f.py", 1700000000, 0);
        b = sig_of("f.py");
        if (b.ctime_ns != a.ctime_ns) {
            break;
        }
        usleep(10000);
    }
    ck_assert_msg(b.ctime_ns != a.ctime_ns, "ctime did not move in %d rewrites", tries);
    ck_assert(a.dev == b.dev && a.ino == b.ino);
    ck_assert_int_eq(a.size, b.size);
    ck_assert_int_eq(a.mtime_ns, b.mtime_ns);
    ck_assert(!pyr_sig_equal(&a, &b));
}
END_TEST

/* Only the inode differs: two files of one size and one mtime whose ctimes
 * are equal, and a symlink to them swapped by rename.  The rename changes
 * the link's own ctime, never its target's, and stat follows the link: the
 * two signatures are the two targets'.  ctime cannot be set, so equal ctimes
 * are made by setting both mtimes back to back until the two calls land in
 * one ctime tick (bounded; a file system with coarser ticks only makes that
 * easier), and the precondition is checked, not trusted. */
START_TEST(test_inode_only_swap)
{
    pyr_sig_t a, b;
    int tries;

    ut_write("v1.py", "x = 1\n");
    ut_write("v2.py", "x = 2\n");
    for (tries = 0; tries < 200; tries++) {
        ut_set_mtime("v1.py", 1700000000, 0);
        ut_set_mtime("v2.py", 1700000000, 0);
        a = sig_of("v1.py");
        b = sig_of("v2.py");
        if (a.ctime_ns == b.ctime_ns) {
            break;
        }
    }
    ck_assert_msg(a.ctime_ns == b.ctime_ns, "no two equal ctimes in %d tries", tries);
    ck_assert_int_eq(symlink(ut_path("v1.py"), ut_path("cur.py")), 0);
    a = sig_of("cur.py");
    ck_assert_int_eq(symlink(ut_path("v2.py"), ut_path("new.lnk")), 0);
    ck_assert_int_eq(rename(ut_path("new.lnk"), ut_path("cur.py")), 0);
    b = sig_of("cur.py");
    ck_assert(a.dev == b.dev && a.ino != b.ino);
    ck_assert_int_eq(a.size, b.size);
    ck_assert_int_eq(a.mtime_ns, b.mtime_ns);
    ck_assert_int_eq(a.ctime_ns, b.ctime_ns);
    ck_assert(!pyr_sig_equal(&a, &b));
}
END_TEST

START_TEST(test_missing_and_directory)
{
    pyr_sig_t s;

    ck_assert_int_eq(pyr_sig_stat(ut_path("nope.py"), &s), ENOENT);
    ck_assert_int_eq(pyr_sig_stat(ut_dir, &s), EISDIR);
}
END_TEST

START_TEST(test_read_matches_signature)
{
    char *data = NULL;
    size_t len = 0;
    pyr_sig_t s, now;

    ut_write("f.py", "print('hi')\n");
    ck_assert_int_eq(pyr_source_read(ut_path("f.py"), &data, &len, &s), 0);
    ck_assert_str_eq(data, "print('hi')\n");
    ck_assert_uint_eq(len, 12);
    now = sig_of("f.py");
    ck_assert(pyr_sig_equal(&s, &now));
    ck_assert(!now.has_sha256);
    free(data);
    ck_assert_int_eq(pyr_source_read(ut_path("gone.py"), &data, &len, &s), ENOENT);
}
END_TEST

static const char *
hex_of(const void *data, size_t len)
{
    static char hex[PYR_SHA256_HEX];
    unsigned char sum[PYR_SHA256_LEN];

    pyr_sha256(data, len, sum);
    pyr_sha256_hex(sum, hex);
    return hex;
}

/* FIPS 180-4's examples, and the lengths at the padding's one- and
 * two-block edges (reference digests from Python's hashlib). */
START_TEST(test_sha256_vectors)
{
    static char million[1000000];
    char *data = NULL;
    size_t len = 0;
    char hex[PYR_SHA256_HEX];
    pyr_sig_t s;

    ck_assert_str_eq(hex_of("", 0),
                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ck_assert_str_eq(hex_of("abc", 3),
                     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ck_assert_str_eq(hex_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56),
                     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    memset(million, 'a', sizeof(million));
    ck_assert_str_eq(hex_of(million, sizeof(million)),
                     "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    ck_assert_str_eq(hex_of(million, 55),
                     "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    ck_assert_str_eq(hex_of(million, 63),
                     "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34");
    ck_assert_str_eq(hex_of(million, 64),
                     "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
    /* What a read returns is hashed: the same digest as the bytes'. */
    ut_write("f.py", "print('hi')\n");
    ck_assert_int_eq(pyr_source_read(ut_path("f.py"), &data, &len, &s), 0);
    ck_assert(s.has_sha256);
    pyr_sha256_hex(s.sha256, hex);
    ck_assert_str_eq(hex, hex_of("print('hi')\n", 12));
    free(data);
}
END_TEST

/* open(path, "w") then a late write: the reader must not settle for the
 * empty file in between. */
static sem_t truncated;

static void *
slow_writer(void *arg)
{
    FILE *f = fopen(ut_path("f.py"), "w");

    sem_post(&truncated);
    usleep(15000);
    fputs("late = True\n", f);
    fclose(f);
    return NULL;
}

START_TEST(test_empty_then_written)
{
    pthread_t t;
    char *data = NULL;
    size_t len = 0;
    pyr_sig_t s;

    ut_write("f.py", "early = True\n");
    sem_init(&truncated, 0, 0);
    pthread_create(&t, NULL, slow_writer, NULL);
    sem_wait(&truncated);   /* read only once the file is empty: no race with the truncation */
    ck_assert_int_eq(pyr_source_read(ut_path("f.py"), &data, &len, &s), 0);
    pthread_join(t, NULL);
    ck_assert_str_eq(data, "late = True\n");
    free(data);
    /* A file that stays empty is read as empty, in bounded time. */
    ut_write("e.py", "");
    ck_assert_int_eq(pyr_source_read(ut_path("e.py"), &data, &len, &s), 0);
    ck_assert_uint_eq(len, 0);
    free(data);
}
END_TEST

Suite *
suite_source(void)
{
    Suite *s = suite_create("source");
    TCase *tc = tcase_create("signature");

    tcase_add_checked_fixture(tc, ut_setup_nopython, ut_teardown_nopython);
    tcase_add_test(tc, test_unchanged_is_equal);
    tcase_add_test(tc, test_same_second_edit);
    tcase_add_test(tc, test_size_change_mtime_restored);
    tcase_add_test(tc, test_atomic_rename);
    tcase_add_test(tc, test_symlink_swap);
    tcase_add_loop_test(tc, test_one_field_alone_is_a_change, 0,
                        (int)(sizeof SIG_FIELDS / sizeof SIG_FIELDS[0]));
    tcase_add_test(tc, test_ctime_only_change);
    tcase_add_test(tc, test_inode_only_swap);
    tcase_add_test(tc, test_missing_and_directory);
    tcase_add_test(tc, test_read_matches_signature);
    tcase_add_test(tc, test_sha256_vectors);
    tcase_add_test(tc, test_empty_then_written);
    suite_add_tcase(s, tc);
    return s;
}
