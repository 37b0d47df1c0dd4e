/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_codecache.c: the code cache's file format (a whole file for its key
 * passes; a truncated, corrupt, foreign or renamed one does not), and the
 * cache driven through the engine: a second "process" (a fresh cache in
 * the same directory) unmarshals what the first compiled, an edit is a new
 * key, bad or untrusted files are ignored, said once and replaced.
 */
#include "unit.h"
#include "pyr_codecache.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char handler_v1[] = "def handler(req):\n"
                                 "    return 'v1'\n";

/* ------------------------------------------------------------------ */
/* The format                                                          */

typedef struct {
    unsigned char key[PYR_CC_KEY_LEN];
    unsigned char *file;
    size_t size;
} sample_t;

static void
sample(sample_t *s, const char *path, const char *payload)
{
    unsigned char sha[PYR_SHA256_LEN];
    char name[PYR_CC_NAME_LEN + 1];
    size_t n = strlen(payload);

    pyr_sha256("x = 1\n", 6, sha);
    pyr_gil_take();
    pyr_codecache_key(path, sha, s->key, name);
    pyr_gil_drop();
    ck_assert_int_eq(strlen(name), PYR_CC_NAME_LEN);
    s->size = PYR_CC_HEADER_LEN + n;
    s->file = malloc(s->size);
    pyr_codecache_header(s->key, payload, n, s->file);
    memcpy(s->file + PYR_CC_HEADER_LEN, payload, n);
}

START_TEST(test_format_whole_file_passes)
{
    const unsigned char *payload;
    size_t len;
    sample_t s;
    const char *why;

    sample(&s, "/srv/app/x.py", "some marshalled code, 36 bytes long");
    why = pyr_codecache_check(s.key, s.file, s.size, &payload, &len);
    ck_assert_msg(why == NULL, "%s", why);
    ck_assert_uint_eq(len, 35);
    ck_assert(memcmp(payload, "some marshalled code", 20) == 0);
    free(s.file);
}
END_TEST

START_TEST(test_format_bad_files_fail)
{
    const unsigned char *payload;
    unsigned char other[PYR_CC_KEY_LEN], *longer;
    char name[PYR_CC_NAME_LEN + 1];
    size_t len;
    sample_t s;

    sample(&s, "/srv/app/x.py", "0123456789abcdefghijklmnopqrstuvwxyz0123456789");
    /* Cut anywhere: header or payload. */
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, 10, &payload, &len),
                     "truncated (shorter than its header)");
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, s.size - 1, &payload, &len), "truncated");
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, PYR_CC_HEADER_LEN, &payload, &len),
                     "truncated");
    /* One flipped bit in the payload, at its start, middle and end. */
    s.file[PYR_CC_HEADER_LEN] ^= 1;
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, s.size, &payload, &len),
                     "corrupt (checksum mismatch)");
    s.file[PYR_CC_HEADER_LEN] ^= 1;
    s.file[PYR_CC_HEADER_LEN + 20] ^= 0x40;
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, s.size, &payload, &len),
                     "corrupt (checksum mismatch)");
    s.file[PYR_CC_HEADER_LEN + 20] ^= 0x40;
    s.file[s.size - 1] ^= 0x80;
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, s.size, &payload, &len),
                     "corrupt (checksum mismatch)");
    s.file[s.size - 1] ^= 0x80;
    /* Another file's (a file renamed to this key's name). */
    pyr_gil_take();
    pyr_codecache_key("/srv/app/y.py", s.key, other, name);
    pyr_gil_drop();
    ck_assert_str_eq(pyr_codecache_check(other, s.file, s.size, &payload, &len),
                     "written for another file or version (key)");
    /* Not ours at all; another Python's. */
    s.file[0] = 'X';
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, s.size, &payload, &len),
                     "not a mod_pyreload code cache file");
    s.file[0] = 'P';
    s.file[8] ^= 1;
    ck_assert_str_eq(pyr_codecache_check(s.key, s.file, s.size, &payload, &len),
                     "written for another Python (magic number)");
    s.file[8] ^= 1;
    /* Bytes after the payload. */
    longer = calloc(1, s.size + 3);
    memcpy(longer, s.file, s.size);
    ck_assert_str_eq(pyr_codecache_check(s.key, longer, s.size + 3, &payload, &len),
                     "longer than its header says");
    ck_assert_ptr_null(pyr_codecache_check(s.key, s.file, s.size, &payload, &len));
    free(longer);
    free(s.file);
}
END_TEST

/* The key changes with the path, the source and the optimisation level's
 * inputs; the same inputs give the same name. */
START_TEST(test_key_inputs)
{
    unsigned char a[PYR_SHA256_LEN], b[PYR_SHA256_LEN], k1[PYR_CC_KEY_LEN], k2[PYR_CC_KEY_LEN];
    char n1[PYR_CC_NAME_LEN + 1], n2[PYR_CC_NAME_LEN + 1];

    pyr_sha256("x = 1\n", 6, a);
    pyr_sha256("x = 2\n", 6, b);
    pyr_gil_take();
    pyr_codecache_key("/a.py", a, k1, n1);
    pyr_codecache_key("/a.py", a, k2, n2);
    ck_assert_str_eq(n1, n2);
    pyr_codecache_key("/a.py", b, k2, n2);
    ck_assert_str_ne(n1, n2);
    pyr_codecache_key("/b.py", a, k2, n2);
    ck_assert_str_ne(n1, n2);
    pyr_gil_drop();
    ck_assert(strcmp(n1 + 2 * PYR_CC_KEY_LEN, ".pyrc") == 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Through the engine                                                  */

static char cc_dir[512];

static void
setup_dir(void)
{
    ut_setup();
    snprintf(cc_dir, sizeof(cc_dir), "%s", ut_path("cc"));
    ck_assert_int_eq(mkdir(cc_dir, 0700), 0);
    pyr_codecache_set_dir(cc_dir);
}

static void
teardown_dir(void)
{
    pyr_codecache_set_dir(NULL);
    ut_teardown();
}

static void
setup_dir_cache(void)
{
    setup_dir();
    apr_pool_create(&ut_pool, NULL);
    ut_cache = pyr_cache_create(ut_pool);
}

static void
teardown_dir_cache(void)
{
    pyr_cache_destroy(ut_cache);
    apr_pool_destroy(ut_pool);
    teardown_dir();
}

/* What one process serving name once does: a fresh cache, one request. */
static void
serve_once(const char *name, const char *want)
{
    apr_pool_t *p;
    pyr_cache_t *c;
    pyr_entry_t *e;
    int slot;

    apr_pool_create(&p, NULL);
    c = pyr_cache_create(p);
    e = pyr_cache_entry(c, ut_path(name));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, want);
    pyr_cache_destroy(c);
    apr_pool_destroy(p);
}

/* The cache files in cc_dir (temporary files count too); the last one's
 * path in last. */
static int
cache_files(char *last, size_t len)
{
    struct dirent *d;
    DIR *dir = opendir(cc_dir);
    int n = 0;

    ck_assert_ptr_nonnull(dir);
    while ((d = readdir(dir))) {
        if (d->d_name[0] != '.' || (strcmp(d->d_name, ".") && strcmp(d->d_name, ".."))) {
            n++;
            if (last) {
                snprintf(last, len, "%s/%s", cc_dir, d->d_name);
            }
        }
    }
    closedir(dir);
    return n;
}

START_TEST(test_second_process_from_cache)
{
    char file[1024];
    struct stat st;

    ut_edit("h.py", handler_v1);
    serve_once("h.py", "v1");
    ck_assert_int_eq(ut_log_count("PYR0600"), 1);
    ck_assert_int_eq(ut_log_count("(code cache: stored as "), 1);
    ck_assert_int_eq(cache_files(file, sizeof(file)), 1);
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    serve_once("h.py", "v1");
    serve_once("h.py", "v1");
    ck_assert_msg(ut_log_count("PYR0600") == 1, "%s", ut_log_text());
    ck_assert_int_eq(ut_log_count(": from cache in "), 2);
    ck_assert_int_eq(cache_files(NULL, 0), 1);
}
END_TEST

START_TEST(test_edit_is_a_new_key)
{
    ut_edit("h.py", handler_v1);
    serve_once("h.py", "v1");
    ut_edit("h.py", "def handler(req):\n    return 'v2'\n");
    serve_once("h.py", "v2");
    ck_assert_int_eq(ut_log_count("PYR0600"), 2);
    ck_assert_int_eq(ut_log_count("from cache"), 0);
    ck_assert_int_eq(cache_files(NULL, 0), 2);
    serve_once("h.py", "v2");
    ck_assert_int_eq(ut_log_count("from cache"), 1);
}
END_TEST

/* The process that compiles a new version removes the file of the version
 * it replaces: the directory does not grow by a file per save. */
START_TEST(test_replaced_version_removed)
{
    char first[1024], now[1024];
    int slot;
    pyr_entry_t *e = pyr_cache_entry(ut_cache, ut_path("h.py"));

    slot = pyr_entry_require(e, "handler");
    ut_edit("h.py", handler_v1);
    ck_serves(e, slot, "v1");
    ck_assert_int_eq(cache_files(first, sizeof(first)), 1);
    ut_edit("h.py", "def handler(req):\n    return 'v2'\n");
    ck_serves(e, slot, "v2");
    ck_assert_int_eq(ut_log_count("PYR0600"), 2);
    ck_assert_msg(cache_files(now, sizeof(now)) == 1, "%d files", cache_files(NULL, 0));
    ck_assert_str_ne(first, now);
    /* An edit that changes no byte (touch) keeps the file. */
    ut_edit("h.py", "def handler(req):\n    return 'v2'\n");
    ck_serves(e, slot, "v2");
    ck_assert_int_eq(cache_files(first, sizeof(first)), 1);
    ck_assert_str_eq(first, now);
}
END_TEST

/* Each kind of bad file: ignored (compiled instead), said once with its
 * reason, replaced by a good one that the next process reads. */
typedef struct {
    const char *what;
    const char *reason;
} spoil_t;

static const spoil_t spoils[] = {
    { "truncate", "truncated" },
    { "corrupt", "corrupt (checksum mismatch)" },
    { "owner", "neither this server's user" },
    { "mode", "writable by group or others" },
    { "garbage", "not a mod_pyreload code cache file" },
    { "empty", "truncated (shorter than its header)" },
};

static void
spoil(const char *file, const char *what)
{
    struct stat st;
    int fd;

    ck_assert_int_eq(stat(file, &st), 0);
    if (!strcmp(what, "truncate")) {
        ck_assert_int_eq(truncate(file, st.st_size - 7), 0);
    }
    else if (!strcmp(what, "corrupt")) {
        char c;

        fd = open(file, O_RDWR);
        ck_assert_int_eq(pread(fd, &c, 1, st.st_size / 2 + 32), 1);
        c ^= 0x20;
        ck_assert_int_eq(pwrite(fd, &c, 1, st.st_size / 2 + 32), 1);
        close(fd);
    }
    else if (!strcmp(what, "owner")) {
        ck_assert_int_eq(chown(file, 65534, 65534), 0); /* nobody */
    }
    else if (!strcmp(what, "mode")) {
        ck_assert_int_eq(chmod(file, 0666), 0);
    }
    else if (!strcmp(what, "garbage")) {
        static const char text[] = "#!/bin/sh\n# longer than a header, and not a code "
                                   "cache file at all: something else's file\n";

        fd = open(file, O_WRONLY | O_TRUNC);
        ck_assert_int_eq(write(fd, text, sizeof(text) - 1), sizeof(text) - 1);
        close(fd);
    }
    else {
        ck_assert_int_eq(truncate(file, 0), 0);
    }
}

START_TEST(test_bad_file_ignored_once_and_replaced)
{
    const spoil_t *s = &spoils[_i];
    char file[1024];
    struct stat st;

    ut_edit("h.py", handler_v1);
    serve_once("h.py", "v1");
    ck_assert_int_eq(cache_files(file, sizeof(file)), 1);
    spoil(file, s->what);
    serve_once("h.py", "v1");
    ck_assert_msg(ut_log_count("PYR0602") == 1, "%s: %s", s->what, ut_log_text());
    ck_assert_msg(ut_log_count(s->reason) == 1, "%s: %s", s->what, ut_log_text());
    ck_assert_int_eq(ut_log_count("PYR0600"), 2);
    /* Replaced: a good file, ours, that the next process reads. */
    ck_assert_int_eq(cache_files(NULL, 0), 1);
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(st.st_uid, geteuid());
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    serve_once("h.py", "v1");
    ck_assert_int_eq(ut_log_count("from cache"), 1);
    ck_assert_int_eq(ut_log_count("PYR0602"), 1);
}
END_TEST

/* A bad file that cannot be replaced (a directory holds its name) is said
 * once per process, however many loads meet it; so is the failed write. */
START_TEST(test_bad_file_said_once)
{
    char file[1024], inner[1100];
    int i;

    ut_edit("h.py", handler_v1);
    serve_once("h.py", "v1");
    ck_assert_int_eq(cache_files(file, sizeof(file)), 1);
    ck_assert_int_eq(unlink(file), 0);
    ck_assert_int_eq(mkdir(file, 0700), 0);
    snprintf(inner, sizeof(inner), "%s/x", file);
    ck_assert_int_eq(mkdir(inner, 0700), 0);
    for (i = 0; i < 3; i++) {
        serve_once("h.py", "v1");
    }
    ck_assert_int_eq(ut_log_count("PYR0600"), 4);
    ck_assert_msg(ut_log_count("PYR0602") == 1, "%s", ut_log_text());
    ck_assert_int_eq(ut_log_count("not a regular file"), 1);
    ck_assert_int_eq(ut_log_count("PYR0603"), 1);
    ck_assert_int_eq(ut_log_count("not stored: Is a directory"), 3);
    rmdir(inner);
    rmdir(file);
}
END_TEST

/* Code from the cache names the real file and line (co_filename is the
 * path the key was made for; linecache reads the line from the file). */
START_TEST(test_cached_code_names_file_and_line)
{
    apr_pool_t *p;
    pyr_cache_t *c;
    pyr_entry_t *e;
    char *got, want[700];

    ut_edit("h.py", "import traceback\n"
                    "\n"
                    "def handler(req):\n"
                    "    return 1 / 0\n"
                    "\n"
                    "def where():\n"
                    "    try:\n"
                    "        handler(None)\n"
                    "    except ZeroDivisionError:\n"
                    "        return traceback.format_exc()\n");
    serve_once("h.py", "EXC:ZeroDivisionError");
    apr_pool_create(&p, NULL);
    c = pyr_cache_create(p);
    e = pyr_cache_entry(c, ut_path("h.py"));
    (void)pyr_entry_require(e, "handler");
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    ck_assert_int_eq(ut_log_count("from cache"), 1);
    got = ut_eval(e, "where()");
    snprintf(want, sizeof(want), "File \"%s\", line 4, in handler\n    return 1 / 0", ut_path("h.py"));
    ck_assert_msg(strstr(got, want) != NULL, "traceback:\n%s\nlacks:\n%s", got, want);
    free(got);
    pyr_cache_destroy(c);
    apr_pool_destroy(p);
}
END_TEST

Suite *
suite_codecache(void)
{
    Suite *s = suite_create("codecache");
    TCase *tc = tcase_create("format");

    tcase_add_checked_fixture(tc, ut_setup, ut_teardown);
    tcase_add_test(tc, test_format_whole_file_passes);
    tcase_add_test(tc, test_format_bad_files_fail);
    tcase_add_test(tc, test_key_inputs);
    suite_add_tcase(s, tc);
    tc = tcase_create("engine");
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_add_test(tc, test_second_process_from_cache);
    tcase_add_test(tc, test_edit_is_a_new_key);
    tcase_add_loop_test(tc, test_bad_file_ignored_once_and_replaced, 0,
                        sizeof(spoils) / sizeof(spoils[0]));
    tcase_add_test(tc, test_bad_file_said_once);
    tcase_add_test(tc, test_cached_code_names_file_and_line);
    suite_add_tcase(s, tc);
    tc = tcase_create("one process");
    tcase_add_checked_fixture(tc, setup_dir_cache, teardown_dir_cache);
    tcase_add_test(tc, test_replaced_version_removed);
    suite_add_tcase(s, tc);
    return s;
}
