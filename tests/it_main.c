/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_main.c: the check runner of the integration suites (tests/it_*.c).
 *
 * Each tests/it_<area>.c defines `Suite *suite_<area>(void)` (a name the
 * unit runner does not use too: it_deps.c's is suite_imports, unit_deps.c
 * having suite_deps); declare it and add it to SUITES below.  A new suite runs under every MPM in `make it`;
 * list it in MPM_INDEPENDENT too only if nothing it tests can depend on the
 * MPM (the harness itself, configuration parsing).
 *
 * check's usual environment applies: CK_RUN_SUITE, CK_RUN_CASE, CK_VERBOSITY,
 * CK_FORK, CK_DEFAULT_TIMEOUT; the fixture reads PYR_MODULE, PYR_MPM,
 * PYR_PORTS, PYR_KEEP and PYR_SANITIZE (see fixture.h).  PYR_IT_MPM_ONLY=1
 * leaves out the MPM_INDEPENDENT suites (`make it` sets it for every MPM but
 * the first), unless CK_RUN_SUITE names one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "fixture.h"

Suite *suite_fixture(void);
Suite *suite_basic(void);
Suite *suite_config(void);
Suite *suite_reload(void);
Suite *suite_imports(void);   /* tests/it_deps.c */
Suite *suite_deploy(void);
Suite *suite_request(void);
Suite *suite_names(void);
Suite *suite_safety(void);
Suite *suite_hostile(void);
Suite *suite_coexist(void);
Suite *suite_wsgi_core(void);
Suite *suite_wsgi(void);
Suite *suite_flask(void);
Suite *suite_logging(void);
Suite *suite_messages(void);
Suite *suite_recipes(void);
Suite *suite_status_page(void); /* tests/it_status.c */
Suite *suite_codecache(void);
Suite *suite_fleet(void);
Suite *suite_browser(void);

static Suite *(*const SUITES[])(void) = {
    suite_fixture,
    suite_basic,
    suite_config,
    suite_reload,
    suite_imports,
    suite_deploy,
    suite_request,
    suite_names,
    suite_safety,
    suite_hostile,
    suite_coexist,
    suite_wsgi_core,
    suite_wsgi,
    suite_flask,
    suite_logging,
    suite_messages,
    suite_recipes,
    suite_status_page,
    suite_codecache,
    suite_fleet,
    suite_browser,
};

/* Run once by `make it`, not once per MPM. */
static Suite *(*const MPM_INDEPENDENT[])(void) = {
    suite_fixture,
    suite_config,
};

static int wanted(Suite *(*fn)(void))
{
    const char *only = getenv("PYR_IT_MPM_ONLY");
    const char *named = getenv("CK_RUN_SUITE");

    if (!only || strcmp(only, "1") || (named && *named)) return 1;
    for (size_t i = 0; i < sizeof MPM_INDEPENDENT / sizeof MPM_INDEPENDENT[0]; i++)
        if (MPM_INDEPENDENT[i] == fn) return 0;
    return 1;
}

int main(void)
{
    SRunner *sr = NULL;
    int failed;

    httpd_install_signal_handlers(1);
    for (size_t i = 0; i < sizeof SUITES / sizeof SUITES[0]; i++) {
        if (!SUITES[i] || !wanted(SUITES[i])) continue;
        if (!sr) sr = srunner_create(SUITES[i]());
        else srunner_add_suite(sr, SUITES[i]());
    }
    if (!httpd_have_module())
        fprintf(stderr, "it_runner: warning: %s does not exist (set PYR_MODULE); "
                        "tests that load the module will fail\n",
                httpd_module_path());
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (httpd_sanitizer_reports()) {
        fprintf(stderr, "it_runner: %d sanitizer report(s) (printed above): failing\n",
                httpd_sanitizer_reports());
        failed++;
    }
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
