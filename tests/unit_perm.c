/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_perm.c: which files may be run (src/perm.c), table-driven over temp
 * trees of files, directories and symlinks with chosen modes.
 */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One node of a tree under ut_dir: a directory ('d'), a file ('f') or a
 * symlink ('l', to target); made in order, then chmod'ed. */
typedef struct {
    char kind;
    const char *name;
    int mode;
    const char *target;
} node_t;

typedef struct {
    const char *what;
    node_t tree[8];
    const char *check;          /* relative to ut_dir */
    int want;                   /* 0 safe, 1 refused, or an errno value */
    const char *says[3];        /* in the message; @ is ut_dir */
} perm_case_t;

static const perm_case_t CASES[] = {
    {"plain file", {{'d', "a", 0755}, {'f', "a/h.py", 0644}}, "a/h.py", 0, {NULL}},
    {"group-writable file", {{'d', "a", 0775}, {'f', "a/h.py", 0664}}, "a/h.py", 0, {NULL}},
    {"world-writable file", {{'d', "a", 0755}, {'f', "a/h.py", 0666}}, "a/h.py", 1,
     {"@/a/h.py", "writable by any user", "chmod o-w @/a/h.py"}},
    {"others may only write", {{'d', "a", 0755}, {'f', "a/h.py", 0602}}, "a/h.py", 1,
     {"chmod o-w @/a/h.py"}},
    {"world-writable directory", {{'d', "a", 0777}, {'f', "a/h.py", 0644}}, "a/h.py", 1,
     {"@/a/h.py", "directory @/a ", "chmod o-w @/a (or chmod +t @/a)"}},
    {"sticky world-writable directory", {{'d', "a", 01777}, {'f', "a/h.py", 0644}},
     "a/h.py", 0, {NULL}},
    {"world-writable ancestor", {{'d', "a", 0777}, {'d', "a/b", 0755}, {'f', "a/b/h.py", 0644}},
     "a/b/h.py", 1, {"directory @/a ", "chmod o-w @/a"}},
    {"symlink to a world-writable file",
     {{'d', "a", 0755}, {'d', "r", 0755}, {'f', "r/real.py", 0666},
      {'l', "a/h.py", 0, "../r/real.py"}},
     "a/h.py", 1, {"@/a/h.py", "chmod o-w @/r/real.py"}},
    {"symlink in a world-writable directory",
     {{'d', "a", 0777}, {'d', "r", 0755}, {'f', "r/real.py", 0644},
      {'l', "a/h.py", 0, "../r/real.py"}},
     "a/h.py", 1, {"directory @/a ", "chmod o-w @/a"}},
    {"symlinked directory that is world-writable",
     {{'d', "a", 0755}, {'d', "r", 0777}, {'f', "r/h.py", 0644}, {'l', "a/cur", 0, "../r"}},
     "a/cur/h.py", 1, {"directory @/r ", "chmod o-w @/r"}},
    {"absolute symlink to a safe file",
     {{'d', "a", 0755}, {'d', "r", 0755}, {'f', "r/h.py", 0644}, {'l', "a/h.py", 0, "@/r/h.py"}},
     "a/h.py", 0, {NULL}},
    /* ".." in a directory means its parent whoever may write it */
    {"dot-dot out of a world-writable directory",
     {{'d', "a", 0755}, {'d', "w", 0777}, {'f', "a/h.py", 0644}},
     "w/../a/h.py", 0, {NULL}},
    {"dot-dot in a safe tree",
     {{'d', "a", 0755}, {'d', "a/b", 0755}, {'f', "a/h.py", 0644}},
     "a/b/../h.py", 0, {NULL}},
    {"missing file", {{'d', "a", 0755}}, "a/h.py", ENOENT, {NULL}},
    {"file as a directory", {{'d', "a", 0755}, {'f', "a/h.py", 0644}}, "a/h.py/x.py",
     ENOTDIR, {NULL}},
    {"symlink loop", {{'d', "a", 0755}, {'l', "a/x", 0, "y"}, {'l', "a/y", 0, "x"}},
     "a/x", ELOOP, {NULL}},
    {"safe directory", {{'d', "a", 0755}, {'d', "a/lib", 0755}}, "a/lib", 0, {NULL}},
    {"sticky directory", {{'d', "a", 0755}, {'d', "a/lib", 01777}}, "a/lib", 0, {NULL}},
    {"world-writable directory itself", {{'d', "a", 0755}, {'d', "a/lib", 0777}}, "a/lib", 1,
     {"@/a/lib", "chmod o-w @/a/lib (or chmod +t @/a/lib)"}},
};

/* text with @ replaced by ut_dir; static buffer per slot (2 live at once). */
static const char *
at(const char *text)
{
    static char bufs[2][1024];
    static int next;
    char *b = bufs[next++ % 2], *o = b;

    for (; *text && o < b + sizeof(bufs[0]) - 300; text++) {
        if (*text == '@') {
            o += snprintf(o, 300, "%s", ut_dir);
        }
        else {
            *o++ = *text;
        }
    }
    *o = '\0';
    return b;
}

static void
make_tree(const node_t *tree)
{
    int i;

    for (i = 0; i < 8 && tree[i].kind; i++) {
        const char *p = ut_path(tree[i].name);

        switch (tree[i].kind) {
        case 'd':
            ck_assert_int_eq(mkdir(p, 0700), 0);
            break;
        case 'f':
            ut_write(tree[i].name, "X = 1\n");
            break;
        case 'l':
            ck_assert_int_eq(symlink(at(tree[i].target), p), 0);
            continue;
        }
        ck_assert_int_eq(chmod(p, (mode_t)tree[i].mode), 0);
    }
}

START_TEST(test_perm_table)
{
    const perm_case_t *c = &CASES[_i];
    char msg[1024] = "";
    int rv, i;

    make_tree(c->tree);
    rv = pyr_perm_check(ut_path(c->check), msg, sizeof(msg));
    ck_assert_msg(rv == c->want, "[%s] %s: %d, want %d (%s)", c->what, c->check, rv,
                  c->want, msg);
    for (i = 0; i < 3 && c->says[i]; i++) {
        ck_assert_msg(strstr(msg, at(c->says[i])) != NULL, "[%s] message lacks '%s':\n%s",
                      c->what, at(c->says[i]), msg);
    }
}
END_TEST

/* Relative paths are seen from the working directory, ancestors included. */
START_TEST(test_perm_relative_path)
{
    char msg[512] = "", cwd[512];

    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    make_tree((node_t[]){{'d', "w", 0777}, {'d', "w/a", 0755}, {'f', "w/a/h.py", 0644}, {0}});
    ck_assert_int_eq(chdir(ut_path("w/a")), 0);
    ck_assert_int_eq(pyr_perm_check("h.py", msg, sizeof(msg)), 1);
    ck_assert_msg(strstr(msg, at("directory @/w ")) != NULL, "%s", msg);
    ck_assert_int_eq(chdir(cwd), 0);
}
END_TEST

/* The server's own user (here: nobody, through seteuid) may write the file
 * or its directory: a warning, not a refusal. */
START_TEST(test_perm_writable_by_self)
{
    char msg[512] = "";

    if (geteuid() != 0) {
        return;     /* needs root to become another user */
    }
    make_tree((node_t[]){{'d', "a", 0755}, {'f', "a/mine.py", 0644}, {'f', "a/root.py", 0644},
                         {'d', "b", 0755}, {'f', "b/h.py", 0644}, {0}});
    ck_assert_int_eq(chmod(ut_dir, 0755), 0);
    ck_assert_int_eq(chown(ut_path("a/mine.py"), 65534, 65534), 0);
    ck_assert_int_eq(chown(ut_path("b"), 65534, 65534), 0);
    /* root itself may write anything: never a warning */
    ck_assert_int_eq(pyr_perm_self_writable(ut_path("a/mine.py"), msg, sizeof(msg)), 0);
    ck_assert_int_eq(seteuid(65534), 0);
    ck_assert_int_eq(pyr_perm_self_writable(ut_path("a/root.py"), msg, sizeof(msg)), 0);
    ck_assert_int_eq(pyr_perm_self_writable(ut_path("a/mine.py"), msg, sizeof(msg)), 1);
    ck_assert_msg(strstr(msg, ut_path("a/mine.py")) != NULL, "%s", msg);
    ck_assert_int_eq(pyr_perm_self_writable(ut_path("b/h.py"), msg, sizeof(msg)), 1);
    ck_assert_msg(strstr(msg, ut_path("b")) != NULL, "%s", msg);
    ck_assert_int_eq(seteuid(0), 0);
}
END_TEST

/* Readable by another user (nobody, 65534): asked of the kernel in a child
 * that takes its identity; the caller's credentials stay root's. */
START_TEST(test_perm_readable_as)
{
    const char *paths[4];
    int errs[4] = {-1, -1, -1, -1};
    gid_t groups[1] = {65534};

    if (geteuid() != 0) {
        ck_assert_int_eq(pyr_perm_readable_as(65534, 65534, groups, 1, paths, 0, errs), -1);
        return;
    }
    make_tree((node_t[]){{'f', "open.py", 0644}, {'f', "secret.py", 0600}, {'d', "shut", 0700},
                         {'f', "shut/h.py", 0644}, {0}});
    ck_assert_int_eq(chmod(ut_dir, 0755), 0);
    paths[0] = ut_path("open.py");
    paths[1] = ut_path("secret.py");
    paths[2] = ut_path("shut/h.py");
    paths[3] = ut_path("shut");
    ck_assert_int_eq(pyr_perm_readable_as(65534, 65534, groups, 1, paths, 4, errs), 0);
    ck_assert_int_eq(errs[0], 0);
    ck_assert_int_eq(errs[1], EACCES);
    ck_assert_int_eq(errs[2], EACCES);
    ck_assert_int_eq(errs[3], EACCES);
    ck_assert_int_eq(geteuid(), 0);
    /* uid 0 would read anything: not asked */
    ck_assert_int_eq(pyr_perm_readable_as(0, 0, groups, 1, paths, 4, errs), -1);
}
END_TEST

/* The engine refuses such files when it loads them: a failed load with a
 * plain message, even if the importer catches the error; off, it runs them. */
START_TEST(test_engine_refuses_unsafe_files)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "try:\n    import opt\nexcept Exception:\n    opt = None\n"
                    "import dep\ndef handler(req):\n    return dep.D + str(opt is None)\n");
    ut_edit("dep.py", "D = 'd1'\n");
    ut_edit("opt.py", "");
    ck_assert_int_eq(chmod(ut_path("h.py"), 0666), 0);
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_FAILED);
    ck_assert_int_eq(ut_log_count("chmod o-w"), 1);
    ck_assert_int_eq(ut_log_count("Traceback"), 0);
    ck_assert_int_eq(chmod(ut_path("h.py"), 0644), 0);
    ck_serves(e, slot, "d1False");

    /* A module the importer would do without is still refused. */
    ut_edit("opt.py", "X = 1\n");
    ck_assert_int_eq(chmod(ut_path("opt.py"), 0646), 0);
    ck_serves(e, slot, "d1False");
    ck_assert_int_eq(ut_log_count("chmod o-w"), 2);
    ck_assert_msg(strstr(ut_log_text(), "opt.py: it is writable by any user") != NULL, "%s",
                  ut_log_from("PYR0102"));

    pyr_cache_set_safe_files(ut_cache, 0);
    ut_edit("dep.py", "D = 'd2'\n");
    ck_assert_int_eq(chmod(ut_path("dep.py"), 0666), 0);
    ck_serves(e, slot, "d2False");
    ck_assert_int_eq(ut_log_count("Traceback"), 0);
}
END_TEST

Suite *
suite_perm(void)
{
    Suite *s = suite_create("perm");
    TCase *tc = tcase_create("modes");
    TCase *ec = tcase_create("engine");

    tcase_add_checked_fixture(tc, ut_setup_nopython, ut_teardown_nopython);
    tcase_add_loop_test(tc, test_perm_table, 0, (int)(sizeof CASES / sizeof CASES[0]));
    tcase_add_test(tc, test_perm_relative_path);
    tcase_add_test(tc, test_perm_writable_by_self);
    tcase_add_test(tc, test_perm_readable_as);
    suite_add_tcase(s, tc);
    tcase_add_checked_fixture(ec, ut_setup_cache, ut_teardown_cache);
    tcase_set_timeout(ec, 30);
    tcase_add_test(ec, test_engine_refuses_unsafe_files);
    suite_add_tcase(s, ec);
    return s;
}
