/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_status.c: the engine's status snapshot (status.c), driven directly:
 * what it says after loads, edits, a failure and its fix; in-flight counts
 * on current and retired generations; a change counter that a request
 * which changed nothing leaves alone; the message line of a traceback.
 */
#include "unit.h"

#include <stdlib.h>
#include <string.h>

/* The snapshot entry of name, or a failed test. */
static const pyr_status_entry_t *
snap(pyr_status_entry_t **all, int *n, const char *name)
{
    int i;

    *n = pyr_status_snapshot(ut_cache, ut_pool, all);
    for (i = 0; i < *n; i++) {
        if (strcmp((*all)[i].path, ut_path(name)) == 0) {
            return &(*all)[i];
        }
    }
    ck_abort_msg("no entry for %s in the snapshot", name);
    return NULL;
}

static void
sha_hex(const char *text, char hex[PYR_SHA256_HEX])
{
    unsigned char sum[PYR_SHA256_LEN];

    pyr_sha256(text, strlen(text), sum);
    pyr_sha256_hex(sum, hex);
}

static const char h1[] = "import m\ndef handler(req):\n    return m.X\n";

START_TEST(test_snapshot_loads_edits_failures)
{
    pyr_status_entry_t *all;
    const pyr_status_entry_t *h, *m;
    char hex[PYR_SHA256_HEX];
    pyr_entry_t *e;
    unsigned long c0;
    int slot, n;

    ut_edit("m.py", "X = 'x1'\n");
    ut_edit("h.py", h1);
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    pyr_entry_set_kind(e, PYR_KIND_WSGI);
    ck_serves(e, slot, "x1");

    h = snap(&all, &n, "h.py");
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(all[0].path, ut_path("h.py")); /* sorted by path */
    ck_assert_str_eq(pyr_kind_name(h->kind), "wsgi");
    ck_assert_int_eq(h->generation, 1);
    ck_assert_int_eq(h->loads, 1);
    ck_assert_int_eq(h->failures, 0);
    ck_assert(h->loaded_at > 0 && h->last_load_ms >= 0);
    sha_hex(h1, hex);
    ck_assert_str_eq(h->sha256, hex);
    ck_assert_int_eq(h->nimports, 1);
    ck_assert_str_eq(h->imports[0], ut_path("m.py"));
    ck_assert_ptr_null(h->error);
    m = snap(&all, &n, "m.py");
    ck_assert_str_eq(pyr_kind_name(m->kind), "module");
    ck_assert_str_eq(m->name, "m");

    /* Nothing changed: the counter stays, whatever the requests. */
    c0 = pyr_status_changes();
    ck_serves(e, slot, "x1");
    ck_serves(e, slot, "x1");
    ck_assert_uint_eq(pyr_status_changes(), c0);

    ut_edit("h.py", "def handler(req:\n");
    ck_serves(e, slot, "x1");
    ck_assert_uint_gt(pyr_status_changes(), c0);
    h = snap(&all, &n, "h.py");
    ck_assert_int_eq(h->failures, 1);
    ck_assert_int_eq(h->generation, 1);
    ck_assert_ptr_nonnull(h->error);
    ck_assert(h->error_at > 0);
    ck_assert_msg(strstr(h->message, "SyntaxError") && strstr(h->message, "(h.py, line 1)"),
                  "message '%s'", h->message);

    ut_edit("m.py", "X = 'x2'\n");
    ut_edit("h.py", h1);
    ck_serves(e, slot, "x2");
    h = snap(&all, &n, "h.py");
    ck_assert_ptr_null(h->error);
    ck_assert_ptr_null(h->message);
    ck_assert_int_eq(h->failures, 1);
    ck_assert_int_eq(h->generation, 2);
    ck_assert_int_eq(h->loads, 2);
    ck_assert_int_eq(snap(&all, &n, "m.py")->generation, 2);
}
END_TEST

START_TEST(test_snapshot_in_flight_and_retired)
{
    pyr_status_entry_t *all;
    const pyr_status_entry_t *h;
    pyr_gen_t *g1, *g2;
    pyr_entry_t *e;
    unsigned long c0;
    int slot, n;

    ut_edit("h.py", "def handler(req):\n    return 'v1'\n");
    e = pyr_cache_entry(ut_cache, ut_path("h.py"));
    slot = pyr_entry_require(e, "handler");
    ck_serves(e, slot, "v1");
    pyr_gil_take();
    g1 = pyr_entry_acquire(e);
    pyr_gil_drop();
    h = snap(&all, &n, "h.py");
    ck_assert_int_eq(h->in_flight, 1);
    ck_assert_int_eq(h->retired_alive, 0);

    ut_edit("h.py", "def handler(req):\n    return 'v2'\n");
    ck_serves(e, slot, "v2");
    pyr_gil_take();
    g2 = pyr_entry_acquire(e);
    pyr_gil_drop();
    h = snap(&all, &n, "h.py");
    ck_assert_int_eq(h->generation, 2);
    ck_assert_int_eq(h->in_flight, 1);
    ck_assert_int_eq(h->in_flight_retired, 1);
    ck_assert_int_eq(h->retired_alive, 1);
    ck_assert(h->retired_oldest > 0);

    /* The end of a request on a retired generation is a change; one on
     * the current generation is not. */
    c0 = pyr_status_changes();
    pyr_gil_take();
    pyr_gen_release(g2, &ut_log);
    pyr_gil_drop();
    ck_assert_uint_eq(pyr_status_changes(), c0);
    pyr_gil_take();
    pyr_gen_release(g1, &ut_log);
    pyr_gil_drop();
    ck_assert_uint_gt(pyr_status_changes(), c0);
    h = snap(&all, &n, "h.py");
    ck_assert_int_eq(h->in_flight, 0);
    ck_assert_int_eq(h->in_flight_retired, 0);
    ck_assert_int_eq(h->retired_alive, 0);
    ck_assert(h->retired_oldest == 0);
}
END_TEST

static const struct {
    const char *traceback, *message;
} messages[] = {
    { "Traceback (most recent call last):\n  File \"/srv/a/h.py\", line 3, in handler\n"
      "    x()\nNameError: name 'x' is not defined\n",
      "NameError: name 'x' is not defined (h.py, line 3)" },
    { "  File \"/srv/a/h.py\", line 2\n    def handler(req:\n               ^\n"
      "SyntaxError: '(' was never closed\n",
      "SyntaxError: '(' was never closed (h.py, line 2)" },
    /* The innermost frame, and the first line of a message on several. */
    { "Traceback (most recent call last):\n  File \"/a/x.py\", line 1, in <module>\n"
      "    import y\n  File \"/a/y.py\", line 7, in <module>\n    raise E('a\\nb')\n"
      "ValueError: first\nsecond\n",
      "ValueError: first (y.py, line 7)" },
    /* A refusal has no frame: its first line. */
    { "/srv/a/h.py is writable by others: chmod o-w /srv/a/h.py\n",
      "/srv/a/h.py is writable by others: chmod o-w /srv/a/h.py" },
};

START_TEST(test_message_line)
{
    ck_assert_str_eq(pyr_status_message(ut_pool, messages[_i].traceback), messages[_i].message);
}
END_TEST

Suite *
suite_status(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("snapshot");

    tcase_add_checked_fixture(tc, ut_setup_cache, ut_teardown_cache);
    tcase_add_test(tc, test_snapshot_loads_edits_failures);
    tcase_add_test(tc, test_snapshot_in_flight_and_retired);
    tcase_add_loop_test(tc, test_message_line, 0, sizeof(messages) / sizeof(messages[0]));
    suite_add_tcase(s, tc);
    return s;
}
