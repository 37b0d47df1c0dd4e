/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_browser.c: the status page's HTML as a person sees it.  Debian's
 * chromium (make check installs it), headless, renders /pyreload-status of
 * a server that has loaded a handler importing a module, a second handler
 * whose latest save failed, and a WSGI application: it writes a screenshot
 * (<server dir>/status.png) and prints the DOM it rendered.  The picture
 * must be the window's size and hold much more than an empty page's
 * screenshot (the same browser's, taken first, is the yardstick); the text must
 * show every file's path and the failed save's error.  Each run of the
 * browser is bounded, and its process group is killed after it.
 *
 * docs/status.png (the README's picture) is this test's screenshot:
 * `PYR_KEEP=1 CK_RUN_SUITE=browser make it PYR_MPM=event` keeps the dir.
 */
#include "it_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHROMIUM "/usr/bin/chromium"
#define WIDTH 1280
#define HEIGHT 900
#define BROWSER_TIMEOUT_MS 60000

static httpd_t *srv;

static const httpd_file_t files[] = {
    {"site/hello.py",
     "# Edit this file while the server runs: the next request runs the new code.\n"
     "import pyreload\n"
     "import greeting\n"
     "\n"
     "def handler(req):\n"
     "    req.content_type = 'text/plain; charset=utf-8'\n"
     "    req.write(greeting.text(req.uri))\n"
     "    return pyreload.OK\n"},
    {"site/greeting.py",
     "def text(uri):\n"
     "    return 'hello from %s\\n' % uri\n"},
    {"site/counter.py",
     "import pyreload\n"
     "\n"
     "def handler(req):\n"
     "    req.content_type = 'text/plain; charset=utf-8'\n"
     "    req.write('code generation %d\\n' % __generation__)\n"
     "    return pyreload.OK\n"},
    {"shop/app.py",
     "def application(environ, start_response):\n"
     "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
     "    return [b'shop\\n']\n"},
    {"../htdocs/empty.html", "<!DOCTYPE html><html><body></body></html>\n"},
    {NULL, NULL}};

static void
setup(void)
{
    httpd_opts_t o = {
        .config = "LoadModule authz_host_module /usr/lib/apache2/modules/mod_authz_host.so\n"
                  "<Location /hello>\n"
                  "  PyReloadHandler @APP@/site/hello.py\n"
                  "</Location>\n"
                  "<Location /counter>\n"
                  "  PyReloadHandler @APP@/site/counter.py\n"
                  "</Location>\n"
                  "<Location /shop>\n"
                  "  PyReloadWSGI @APP@/shop/app.py\n"
                  "</Location>\n"
                  "<Location /pyreload-status>\n"
                  "  SetHandler pyreload-status\n"
                  "  Require local\n"
                  "</Location>\n",
        .files = files};

    srv = httpd_launch(&o);
    ck_assert_msg(srv != NULL, "httpd did not start");
}

static void
teardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* Chromium renders path: the PNG written to png, the DOM into *dom.  Its
 * profile and HOME live in the server's dir, so nothing of the user's is
 * read or written. */
static void
render(const char *path, const char *png, char **dom)
{
    char url[160], shot[256], home[200], profile[220], size[32];
    const char *envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", home, NULL};
    const char *argv[] = {CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--no-first-run", profile, size, shot, "--dump-dom", url, NULL};
    int rc;

    ck_assert_msg(access(CHROMIUM, X_OK) == 0,
                  CHROMIUM " is not installed (make check installs it: chromium)");
    snprintf(url, sizeof(url), "%s%s", srv->url, path);
    snprintf(shot, sizeof(shot), "--screenshot=%s", png);
    snprintf(home, sizeof(home), "HOME=%s", srv->dir);
    snprintf(profile, sizeof(profile), "--user-data-dir=%s/chromium", srv->dir);
    snprintf(size, sizeof(size), "--window-size=%d,%d", WIDTH, HEIGHT);
    unlink(png);
    rc = it_run(argv, envp, BROWSER_TIMEOUT_MS, dom);
    ck_assert_msg(rc == 0, "chromium %s: exit %d:\n%.3000s", url, rc, *dom);
}

/* The size of a PNG file after checking that it is one, of WIDTH x HEIGHT. */
static long
png_size(const char *png)
{
    size_t len;
    unsigned char *d;
    unsigned long w, h;
    FILE *f = fopen(png, "rb");

    ck_assert_msg(f != NULL, "no screenshot at %s", png);
    d = malloc(32);
    ck_assert_ptr_nonnull(d);
    len = fread(d, 1, 32, f);
    ck_assert_msg(len >= 24 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0
                      && memcmp(d + 12, "IHDR", 4) == 0,
                  "%s is not a PNG", png);
    w = (unsigned long)d[16] << 24 | (unsigned long)d[17] << 16 | d[18] << 8 | d[19];
    h = (unsigned long)d[20] << 24 | (unsigned long)d[21] << 16 | d[22] << 8 | d[23];
    ck_assert_msg(w == WIDTH && h == HEIGHT, "%s is %lux%lu, want %dx%d", png, w, h, WIDTH,
                  HEIGHT);
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    fclose(f);
    free(d);
    return (long)len;
}

#define assert_dom_has(dom, needle)                                           \
    ck_assert_msg(strstr((dom), (needle)) != NULL,                            \
                  "the rendered page lacks \"%s\":\n%.4000s", (needle), (dom))

START_TEST(test_status_page_in_chromium)
{
    char empty_png[200], png[200], *dom, *path;
    long empty_size, size;

    /* Every kind of file loaded, then a broken save of one. */
    it_expect(srv, "/hello", "hello from /hello\n");
    it_expect(srv, "/counter", "code generation 1\n");
    it_expect(srv, "/shop", "shop\n");
    it_put(srv, "site/counter.py", "import pyreload\ndef handler(req)\n    return 0\n");
    it_expect(srv, "/counter", "code generation 1\n");

    snprintf(empty_png, sizeof(empty_png), "%s/empty.png", srv->dir);
    render("/empty.html", empty_png, &dom);
    free(dom);
    empty_size = png_size(empty_png);

    snprintf(png, sizeof(png), "%s/status.png", srv->dir);
    render("/pyreload-status", png, &dom);
    size = png_size(png);
    fprintf(stderr, "browser: status.png %ld bytes (an empty page: %ld)\n", size, empty_size);
    /* A 404 page's is about twice an empty page's; the status page's 17 times. */
    ck_assert_msg(size > 4 * empty_size,
                  "the screenshot (%ld bytes) holds little more than an empty page's (%ld)",
                  size, empty_size);
    assert_dom_has(dom, "<table");
    path = httpd_path(srv, "site/hello.py");
    assert_dom_has(dom, path);
    free(path);
    path = httpd_path(srv, "site/greeting.py");
    assert_dom_has(dom, path);
    free(path);
    path = httpd_path(srv, "shop/app.py");
    assert_dom_has(dom, path);
    free(path);
    assert_dom_has(dom, "SyntaxError");
    free(dom);
}
END_TEST

Suite *
suite_browser(void)
{
    Suite *s = suite_create("browser");
    TCase *tc = httpd_tcase("browser", 180, setup, teardown);

    tcase_add_test(tc, test_status_page_in_chromium);
    suite_add_tcase(s, tc);
    return s;
}
