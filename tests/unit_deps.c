/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_deps.c: a handler and the modules it imports from its reload roots,
 * driven through the engine API without Apache.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

START_TEST(test_helper_change_rebuilds_importer)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "import helper\ndef handler(req):\n    return helper.T\n");
    ut_edit("helper.py", "T = 'one'\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "one");
    ut_edit("helper.py", "T = 'two'\n");
    ck_serves(e, slot, "two");
    ck_assert_int_eq(ut_log_count("helper ("), 1);
    ck_assert_int_eq(ut_log_count("generation 2 loaded"), 1);
    /* Unchanged: no rebuild at all. */
    ck_serves(e, slot, "two");
    ck_assert_int_eq(ut_log_count("loaded in"), 2);
}
END_TEST

START_TEST(test_roots_and_stdlib)
{
    pyr_entry_t *e;
    int slot;

    ck_assert_int_eq(mkdir(ut_path("lib"), 0755), 0);
    pyr_cache_add_root(ut_cache, ut_path("lib"));
    ut_edit("h.py", "import json, libmod, sys\n"
                 "def handler(req):\n"
                 "    return '%s %s %s' % (libmod.X, hasattr(json, 'dumps'), 'libmod' in sys.modules)\n");
    ut_edit("json.py", "raise RuntimeError('shadowed the standard library')\n");
    ut_edit("lib/libmod.py", "X = 'lib1'\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "lib1 True False");
    ut_edit("lib/libmod.py", "X = 'lib2'\n");
    ck_serves(e, slot, "lib2 True False");
}
END_TEST

START_TEST(test_broken_dependency_keeps_old_set)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "import a, b\ndef handler(req):\n    return a.A + b.B\n");
    ut_edit("a.py", "A = 'a1'\n");
    ut_edit("b.py", "import a\nB = '/' + a.A\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "a1/a1");
    ut_edit("a.py", "A = 'a2'\nraise ValueError('half way')\n");
    ck_serves(e, slot, "a1/a1");
    ck_serves(e, slot, "a1/a1");
    ck_assert_int_eq(ut_log_count("ValueError: half way"), 1);
    ut_edit("a.py", "A = 'a3'\n");
    ck_serves(e, slot, "a3/a3");
}
END_TEST

START_TEST(test_shared_module_one_generation)
{
    pyr_entry_t *e1, *e2;
    int s1, s2;

    ut_edit("h1.py", "import shared\ndef handler(req):\n    return 'h1 %s %d' % (shared.S, shared.n['c'])\n");
    ut_edit("h2.py", "import shared\ndef handler(req):\n    return 'h2 %s %d' % (shared.S, shared.n['c'])\n");
    ut_edit("shared.py", "S = 's1'\nif 'n' not in globals(): n = {'c': 0}\n"
                      "def __clone__(new):\n    new.n = n\n    n['c'] += 1\n");
    e1 = pyr_cache_entry(ut_cache, ut_path("h1.py"));
    e2 = pyr_cache_entry(ut_cache, ut_path("h2.py"));
    s1 = pyr_entry_require(e1, "handler");
    s2 = pyr_entry_require(e2, "handler");
    ck_serves(e1, s1, "h1 s1 0");
    ck_serves(e2, s2, "h2 s1 0");
    ut_edit("shared.py", "S = 's2'\nif 'n' not in globals(): n = {'c': 0}\n"
                      "def __clone__(new):\n    new.n = n\n    n['c'] += 1\n");
    ck_serves(e1, s1, "h1 s2 1");
    ck_serves(e2, s2, "h2 s2 1");     /* one clone, not two */
    ck_assert_int_eq(ut_log_count("shared ("), 1);
}
END_TEST

START_TEST(test_pinned_set_for_in_flight_request)
{
    pyr_entry_t *e;
    pyr_gen_t *old;
    char *out;
    int slot;

    ut_edit("h.py", "def handler(req):\n    import dep\n    return dep.D\n");
    ut_edit("dep.py", "D = 'd1'\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "d1");
    /* A request in flight keeps its set, even for imports it makes later. */
    pyr_gil_take();
    old = pyr_entry_acquire(e);
    pyr_gil_drop();
    ut_edit("dep.py", "D = 'd2'\n");
    ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    out = ut_call(old, slot);
    ck_assert_str_eq(out, "d1");
    free(out);
    pyr_gil_take();
    pyr_gen_release(old, &ut_log);
    pyr_gil_drop();
    ck_serves(e, slot, "d2");
}
END_TEST

/* With the directories watched, a check that nothing happened looks at no
 * file; a save is still seen by the very next check. */
/* Two modules that import each other: each old generation holds the other,
 * so counting references alone never frees a cycle of retired generations.
 * Every reload must still purge (and free) the set it replaced. */
START_TEST(test_import_cycle_generations_freed)
{
    static const char purge[] =
        "def __purge__():\n"
        "    import sys\n"
        "    sys.pyr_purged = getattr(sys, 'pyr_purged', 0) + 1\n";
    char src[512];
    pyr_entry_t *e;
    int slot, i;

    ut_edit("h.py", "import ca\ndef handler(req):\n    return ca.cb.B\n");
    snprintf(src, sizeof(src), "import cb\n%s", purge);
    ut_edit("ca.py", src);
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    for (i = 0; i < 5; i++) {
        char want[16];

        snprintf(want, sizeof(want), "b%d", i);
        snprintf(src, sizeof(src), "import ca\nB = '%s'\n%s", want, purge);
        ut_edit("cb.py", src);
        ck_serves(e, slot, want);
    }
    /* Four reloads of the cycle: ca and cb purged four times each. */
    ck_assert_int_eq(ut_eval_long(e, "__import__('sys').__dict__.get('pyr_purged', 0)"), 8);
}
END_TEST

START_TEST(test_quiet_checks_skip_stats)
{
    pyr_entry_t *e;
    long before;
    int slot, i;

    ut_edit("h.py", "import d1, d2, d3\ndef handler(req):\n    return d1.V + d2.V + d3.V\n");
    ut_edit("d1.py", "V = '1'\n");
    ut_edit("d2.py", "V = '2'\n");
    ut_edit("d3.py", "V = '3'\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "123");
    ck_serves(e, slot, "123");
    before = pyr_entry_sweeps(e);
    for (i = 0; i < 200; i++) {
        ck_assert_int_eq(pyr_entry_refresh(e, &ut_every, &ut_log), PYR_READY);
    }
    ck_assert_msg(pyr_entry_sweeps(e) - before <= 2, "%ld sweeps for 200 quiet checks",
                  pyr_entry_sweeps(e) - before);
    /* Same size, same second: only the event says so, and the sweep confirms. */
    ut_write("d3.py", "V = '4'\n");
    ck_serves(e, slot, "124");
    ut_write_atomic("d2.py", "V = '5'\n");
    ck_serves(e, slot, "154");
}
END_TEST

/* __import__('x') called from code (no globals passed) is an import of the
 * calling module: through the cache, out of sys.modules, and reloaded. */
START_TEST(test_dunder_import_call)
{
    pyr_entry_t *e;
    int slot;

    ut_edit("h.py", "import sys\n"
                 "def handler(req):\n"
                 "    return '%s %s' % (__import__('dyn').V, 'dyn' in sys.modules)\n");
    ut_edit("dyn.py", "V = 'd1'\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "d1 False");
    ut_edit("dyn.py", "V = 'd2'\n");
    ck_serves(e, slot, "d2 False");
}
END_TEST

/* Modules imported at load time from other directories than the handler's
 * (a PyReloadPath root, a package's directory): their directories are
 * watched too, from the first load and after each rebuild, so an edit there
 * is seen by the next check even when "nothing happened" is trusted. */
START_TEST(test_quiet_checks_watch_every_directory)
{
    pyr_entry_t *e;
    int slot;

    ck_assert_int_eq(mkdir(ut_path("lib"), 0755), 0);
    ck_assert_int_eq(mkdir(ut_path("pk"), 0755), 0);
    pyr_cache_add_root(ut_cache, ut_path("lib"));
    ut_edit("lib/lm.py", "V = 'l1'\n");
    ut_edit("pk/__init__.py", "P = 1\n");
    ut_edit("pk/pm.py", "V = 'p1'\n");
    ut_edit("h.py", "import lm\nfrom pk import pm\ndef handler(req):\n    return lm.V + pm.V\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ut_serve_until_quiet(e, slot, "l1p1");
    ut_edit("lib/lm.py", "V = 'l2'\n");
    ck_serves(e, slot, "l2p1");
    ut_serve_until_quiet(e, slot, "l2p1");
    ut_edit("pk/pm.py", "V = 'p2'\n");
    ck_serves(e, slot, "l2p2");
}
END_TEST

/* A module first imported inside handler(), from another directory than the
 * handler's: a PyReloadPath root (0) or a package's subdirectory (1).  Once
 * the checks trust "nothing happened", an edit there is still seen. */
static const struct {
    const char *handler, *module;
} LATE_IMPORTS[] = {
    {"def handler(req):\n    import rtlib\n    return rtlib.V\n", "lib/rtlib.py"},
    {"def handler(req):\n    from rtpkg import rtmod\n    return rtmod.V\n", "rtpkg/rtmod.py"},
};

START_TEST(test_request_time_import_other_directory)
{
    pyr_entry_t *e;
    int slot;

    ck_assert_int_eq(mkdir(ut_path("lib"), 0755), 0);
    ck_assert_int_eq(mkdir(ut_path("rtpkg"), 0755), 0);
    pyr_cache_add_root(ut_cache, ut_path("lib"));
    ut_edit("rtpkg/__init__.py", "P = 1\n");
    ut_edit(LATE_IMPORTS[_i].module, "V = 'v1'\n");
    ut_edit("h.py", LATE_IMPORTS[_i].handler);
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "v1");       /* the first import */
    ut_serve_until_quiet(e, slot, "v1");
    ut_edit(LATE_IMPORTS[_i].module, "V = 'v2'\n");
    ck_serves(e, slot, "v2");
}
END_TEST

Suite *
suite_deps(void)
{
    Suite *s = suite_create("deps");
    TCase *tc = tcase_create("closure");

    tcase_add_checked_fixture(tc, ut_setup_cache, ut_teardown_cache);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_helper_change_rebuilds_importer);
    tcase_add_test(tc, test_roots_and_stdlib);
    tcase_add_test(tc, test_broken_dependency_keeps_old_set);
    tcase_add_test(tc, test_shared_module_one_generation);
    tcase_add_test(tc, test_pinned_set_for_in_flight_request);
    tcase_add_test(tc, test_import_cycle_generations_freed);
    tcase_add_test(tc, test_quiet_checks_skip_stats);
    tcase_add_test(tc, test_dunder_import_call);
    tcase_add_test(tc, test_quiet_checks_watch_every_directory);
    tcase_add_loop_test(tc, test_request_time_import_other_directory, 0,
                        (int)(sizeof LATE_IMPORTS / sizeof LATE_IMPORTS[0]));
    suite_add_tcase(s, tc);
    return s;
}
