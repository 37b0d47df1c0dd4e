/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit.h: what the engine's unit suites share: a temp directory per test,
 * file writes (in place, atomic, with exact mtimes), a logger that records
 * lines, and Python in each forked test process.
 */
#ifndef PYR_UNIT_H
#define PYR_UNIT_H

#include "pyreload.h"

#include <check.h>

Suite *suite_spec(void);
Suite *suite_source(void);
Suite *suite_interp(void);
Suite *suite_engine(void);
Suite *suite_deps(void);
Suite *suite_notify(void);
Suite *suite_perm(void);
Suite *suite_names(void);
Suite *suite_stdio(void);
Suite *suite_status(void);

/* A fresh directory for the running test; removed by ut_teardown. */
extern char ut_dir[];
/* ut_dir/name, in a static buffer per call slot (up to 8 live at once). */
const char *ut_path(const char *name);

/* In place: same inode, truncated and rewritten. */
void ut_write(const char *name, const char *text);
/* Atomic: a temp file renamed over the name (new inode). */
void ut_write_atomic(const char *name, const char *text);
/* Exact mtime, so two "edits in one second" need no sleeping. */
void ut_set_mtime(const char *name, long sec, long nsec);

/* Checked fixture: temp dir + Python (each test runs in its own process). */
void ut_setup(void);
void ut_teardown(void);
void ut_setup_nopython(void);
void ut_teardown_nopython(void);

/* Checked fixture: ut_setup plus a fresh cache (ut_cache) in its own pool. */
extern pyr_cache_t *ut_cache;
extern apr_pool_t *ut_pool;
extern const pyr_check_t ut_every;     /* stat on every request */
void ut_setup_cache(void);
void ut_teardown_cache(void);

/* Rewrite in place with a distinct mtime: a change whatever the file
 * system's timestamp granularity. */
void ut_edit(const char *name, const char *text);

/* Refresh (asserting PYR_READY), pin, call slot(None), unpin: str() of the
 * result, malloc'd. */
char *ut_serve(pyr_entry_t *e, int slot);

#define ck_serves(e, slot, want)                                             \
    do {                                                                     \
        char *got_ = ut_serve(e, slot);                                      \
        ck_assert_msg(strcmp(got_, want) == 0, "served '%s', want '%s'\n%s",   \
                      got_, want, ut_log_from("PYR"));                       \
        free(got_);                                                          \
    } while (0)

/* Serve (as ut_serve, expecting want) until a check stats no file: from
 * then on the check trusts inotify's "nothing happened".  Bounded; fails
 * the test if that never happens. */
void ut_serve_until_quiet(pyr_entry_t *e, int slot, const char *want);

/* Every line the engine logged during this test. */
extern pyr_logger_t ut_log;
int ut_log_count(const char *needle);
const char *ut_log_text(void);
/* At most 1,500 characters of the log from the first line holding needle. */
const char *ut_log_from(const char *needle);

/* Run code in __main__ with the GIL taken; asserts it did not raise. */
void ut_run(const char *code);

/* Run handler(arg) of a pinned generation and return its result as a new
 * C string (str() of it), or "EXC:<type>" if it raised.  Takes the GIL. */
char *ut_call(pyr_gen_t *g, int slot);
/* Evaluate an expression in the generation's module.  Takes the GIL. */
char *ut_eval(pyr_entry_t *e, const char *expr);
long ut_eval_long(pyr_entry_t *e, const char *expr);

#endif
