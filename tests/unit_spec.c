/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * unit_spec.c: the "FILE[::CALLABLE]" argument, as a table of cases.
 */
#include "unit.h"

#include <string.h>

static const struct {
    const char *arg;
    const char *file;       /* NULL: an error is expected */
    const char *callable;
    const char *error_has;
} cases[] = {
    {"/srv/app/hello.py", "/srv/app/hello.py", "handler", NULL},
    {"/srv/app/api.py::serve", "/srv/app/api.py", "serve", NULL},
    {"rel/h.py::_private2", "rel/h.py", "_private2", NULL},
    {"/a::b/h.py::go", "/a::b/h.py", "go", NULL},
    {"/srv/app/hello.py::", NULL, NULL, "empty"},
    {"/srv/app/hello.py::not-an-id", NULL, NULL, "not a Python identifier"},
    {"/srv/app/hello.py::9lives", NULL, NULL, "not a Python identifier"},
    {"::handler", NULL, NULL, "file name is empty"},
};

START_TEST(test_spec_cases)
{
    apr_pool_t *p;
    const char *file = NULL, *callable = NULL, *err;

    apr_pool_create(&p, NULL);
    err = pyr_spec_parse(p, cases[_i].arg, "handler", &file, &callable);
    if (cases[_i].file) {
        ck_assert_msg(err == NULL, "%s: unexpected error %s", cases[_i].arg, err);
        ck_assert_str_eq(file, cases[_i].file);
        ck_assert_str_eq(callable, cases[_i].callable);
    }
    else {
        ck_assert_msg(err != NULL, "%s: accepted", cases[_i].arg);
        ck_assert_msg(strstr(err, cases[_i].error_has), "%s: error '%s' lacks '%s'",
                      cases[_i].arg, err, cases[_i].error_has);
    }
    apr_pool_destroy(p);
}
END_TEST

/* The default callable is the directive's (PyReloadWSGI: application). */
START_TEST(test_spec_default_callable)
{
    apr_pool_t *p;
    const char *file = NULL, *callable = NULL;

    apr_pool_create(&p, NULL);
    ck_assert_ptr_null(pyr_spec_parse(p, "/srv/shop/app.py", "application", &file, &callable));
    ck_assert_str_eq(callable, "application");
    ck_assert_ptr_null(pyr_spec_parse(p, "/srv/shop/app.py::app", "application", &file, &callable));
    ck_assert_str_eq(callable, "app");
    apr_pool_destroy(p);
}
END_TEST

START_TEST(test_identifier)
{
    ck_assert(pyr_is_identifier("handler"));
    ck_assert(pyr_is_identifier("_x1"));
    ck_assert(!pyr_is_identifier(""));
    ck_assert(!pyr_is_identifier("1x"));
    ck_assert(!pyr_is_identifier("a.b"));
    ck_assert(!pyr_is_identifier("a b"));
}
END_TEST

Suite *
suite_spec(void)
{
    Suite *s = suite_create("spec");
    TCase *tc = tcase_create("parse");

    tcase_add_loop_test(tc, test_spec_cases, 0, sizeof(cases) / sizeof(cases[0]));
    tcase_add_test(tc, test_spec_default_callable);
    tcase_add_test(tc, test_identifier);
    suite_add_tcase(s, tc);
    return s;
}
