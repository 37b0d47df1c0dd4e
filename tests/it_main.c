/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_main.c: the check runner of the integration suites (tests/it_*.c).
 *
 * Each tests/it_<area>.c defines `Suite *suite_<area>(void)`; add an
 * IT_SUITE(<area>) line and an entry in SUITES below.  check's usual environment applies: CK_RUN_SUITE,
 * CK_RUN_CASE, CK_VERBOSITY, CK_FORK, CK_DEFAULT_TIMEOUT; the fixture reads
 * PYR_MODULE, PYR_MPM and PYR_KEEP (see httpd.h).
 */
#include <stdio.h>
#include <stdlib.h>

#include <check.h>

#include "httpd.h"

Suite *suite_fixture(void);
Suite *suite_basic(void);
Suite *suite_config(void);
Suite *suite_reload(void);
Suite *suite_deps(void);
Suite *suite_hostile(void);
Suite *suite_coexist(void);

static Suite *(*const SUITES[])(void) = {
    suite_fixture,
    suite_basic,
    suite_config,
    suite_reload,
    suite_deps,
    suite_hostile,
    suite_coexist,
};

int main(void)
{
    SRunner *sr = NULL;
    int failed;

    httpd_install_signal_handlers(1);
    for (size_t i = 0; i < sizeof SUITES / sizeof SUITES[0]; i++) {
        if (!SUITES[i]) continue;
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
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
