/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_recipes.c: the README's Python recipes, run as the README writes them.
 * The code is read from README.md (the runner runs in the source tree), so
 * that a recipe cannot drift from what is tested: the `isinstance` /
 * `__upgrade__` recipe (cart.py, versions 1 and 2), and version 2 without
 * its `__upgrade__`, which fails as the README says.
 */
#include "fixture.h"
#include "it_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ```python block of README.md whose first line is first; malloc'd. */
static char *
readme_block(const char *first)
{
    FILE *f = fopen("README.md", "r");
    char *text, *start, *end, *block;
    long size;

    ck_assert_msg(f != NULL, "README.md not found (run from the source tree)");
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);
    text = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    start = strstr(text, first);
    ck_assert_msg(start != NULL, "README.md has no block starting \"%s\"", first);
    end = strstr(start, "\n```");
    ck_assert_ptr_nonnull(end);
    block = strndup(start, (size_t)(end - start) + 1);
    free(text);
    return block;
}

/* text without its `def name(...)` function (up to the next blank line
 * followed by a top-level statement); malloc'd. */
static char *
without_function(const char *text, const char *def)
{
    const char *from = strstr(text, def), *to;
    char *out;

    ck_assert_ptr_nonnull(from);
    to = strstr(from, "\n\ndef ");
    ck_assert_ptr_nonnull(to);
    out = malloc(strlen(text) + 1);
    memcpy(out, text, (size_t)(from - text));
    strcpy(out + (from - text), to + 2);
    return out;
}

static httpd_t *srv;
static char *v1, *v2;

static void
setup(void)
{
    httpd_opts_t o = {.config = "<Location /cart>\n  PyReloadHandler @APP@/cart.py\n</Location>\n"
                                "<Location /bare>\n  PyReloadHandler @APP@/bare.py\n</Location>\n"};

    v1 = readme_block("# cart.py, version 1\n");
    v2 = readme_block("# cart.py, version 2");
    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    it_put(srv, "cart.py", v1);
    it_put(srv, "bare.py", v1);
    ck_assert_msg(httpd_start(srv) == 0, "httpd did not start");
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
    free(v1);
    free(v2);
}

START_TEST(test_upgrade_recipe)
{
    it_expect(srv, "/cart?ann", "1 items, isinstance True");
    it_put(srv, "cart.py", v2);
    it_expect(srv, "/cart?ann", "2 items, isinstance True, total 5.00");
    it_expect(srv, "/cart?bob", "1 items, isinstance True, total 2.50");
    /* a second reload finds them converted already */
    it_touch(srv, "cart.py");
    it_expect(srv, "/cart?ann", "3 items, isinstance True, total 7.50");
}
END_TEST

START_TEST(test_without_upgrade_fails)
{
    char *bare = without_function(v2, "def __upgrade__(old):");
    size_t mark;
    char *body;

    ck_assert_ptr_null(strstr(bare, "__upgrade__"));
    it_expect(srv, "/bare?ann", "1 items, isinstance True");
    mark = httpd_log_mark(srv);
    it_put(srv, "bare.py", bare);
    body = it_get(srv, "/bare?ann", 500);
    free(body);
    ck_assert_int_eq(
        httpd_log_count(srv, mark, "AttributeError: 'Cart' object has no attribute 'total'"), 1);
    free(bare);
}
END_TEST

Suite *
suite_recipes(void)
{
    Suite *s = suite_create("recipes");
    TCase *tc = httpd_tcase("upgrade", 60, setup, teardown);

    tcase_add_test(tc, test_upgrade_recipe);
    tcase_add_test(tc, test_without_upgrade_fails);
    suite_add_tcase(s, tc);
    return s;
}
