/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_flask.c: real frameworks (Debian's python3-flask, python3-django)
 * served by PyReloadWSGI against a real apache2.
 *
 *   - flask: an application written as Flask's tutorial writes it
 *     (app = Flask(__name__) in app.py, templates/ and static/ next to it,
 *     a blueprint in a package with relative imports, a helper module the
 *     blueprint imports), mounted at <Location /shop>: Jinja templates,
 *     Flask's static route, url_for under SCRIPT_NAME, JSON in and out,
 *     Flask's own 404, pickle of the app's own class, find_spec; editing
 *     app.py, the blueprint or the helper shows on the next request with
 *     the counter dict carried by __clone__; a second copy at /other with
 *     the same module names never meets the first, and sys.modules only
 *     ever holds the serving version of each;
 *   - django: a minimal project (settings, urls, one view) answers; what
 *     an edit of its view does is pinned (see the README, "Django").
 */
#include "it_util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static httpd_t *srv;

/* ------------------------------------------------------------------ */
/* Flask                                                               */

/* app.py: VERSION */
static const char APP_PY[] =
    "import importlib.util, os, pickle, sys, threading\n"
    "from flask import Flask, jsonify, render_template, request, url_for\n"
    "from store import bp, views\n"
    "\n"
    "VERSION = '%s'\n"
    "\n"
    "app = Flask(__name__)\n"
    "app.register_blueprint(bp, url_prefix='/store')\n"
    "application = app\n"
    "\n"
    "if 'counts' not in globals():  # first load; a reload got them from __clone__\n"
    "    counts = {}\n"
    "    lock = threading.Lock()\n"
    "\n"
    "def __clone__(new):\n"
    "    new.counts = counts\n"
    "    new.lock = lock\n"
    "\n"
    "def bump(key):\n"
    "    with lock:\n"
    "        counts[key] = counts.get(key, 0) + 1\n"
    "        return counts[key]\n"
    "\n"
    "class Order:\n"
    "    def __init__(self, sku, qty):\n"
    "        self.sku, self.qty = sku, qty\n"
    "    def __eq__(self, other):\n"
    "        return type(other) is Order and vars(self) == vars(other)\n"
    "\n"
    "@app.route('/')\n"
    "def index():\n"
    "    return render_template('index.html', version=VERSION, n=bump('index'))\n"
    "\n"
    "@app.route('/count')\n"
    "def count():\n"
    "    return (f'{VERSION} {views.VERSION} {views.pricing.VERSION} '\n"
    "            f\"n={bump('count')}\")\n"
    "\n"
    "@app.route('/apps')\n"
    "def apps():\n"
    "    import gc\n"
    "    gc.collect()\n"
    "    return str(sum(1 for o in gc.get_objects() if type(o) is Flask))\n"
    "\n"
    "@app.route('/names')\n"
    "def names():\n"
    "    return f'{__name__} {views.__name__}'\n"
    "\n"
    "@app.post('/api/order')\n"
    "def order():\n"
    "    data = request.get_json()\n"
    "    o = Order(data['sku'], data['qty'])\n"
    "    back = pickle.loads(pickle.dumps(o))\n"
    "    app.logger.warning('order of %%s', back.sku)\n"
    "    return jsonify(sku=back.sku, total=views.pricing.total(back.qty),\n"
    "                   pickled=back == o, version=VERSION)\n"
    "\n"
    "def only(m):\n"
    "    same = [x for x in list(sys.modules.values())\n"
    "            if getattr(x, '__file__', None) == m.__file__]\n"
    "    return same == [m] and sys.modules[m.__name__] is m\n"
    "\n"
    "@app.route('/info')\n"
    "def info():\n"
    "    here = os.path.dirname(__file__)\n"
    "    spec = importlib.util.find_spec(__name__)\n"
    "    checks = {\n"
    "        'root': app.root_path == here,\n"
    "        'templates': app.jinja_loader.searchpath == [os.path.join(here, 'templates')],\n"
    "        'static': app.static_folder == os.path.join(here, 'static'),\n"
    "        'instance': app.instance_path == os.path.join(here, 'instance'),\n"
    "        'bproot': bp.root_path == os.path.join(here, 'store'),\n"
    "        'spec': spec is not None and spec.origin == __file__,\n"
    "        'self': only(sys.modules[__name__]) and sys.modules[__name__].__dict__ is globals(),\n"
    "        'views': only(views) and only(views.pricing),\n"
    "        'script': request.script_root == request.environ['SCRIPT_NAME'],\n"
    "    }\n"
    "    bad = [k for k, v in checks.items() if not v]\n"
    "    return ' '.join([','.join(bad) or 'ok', request.script_root,\n"
    "                     url_for('static', filename='style.css'),\n"
    "                     url_for('store.item', item_id=7)])\n";

/* store/views.py: VERSION */
static const char VIEWS_PY[] =
    "from flask import Blueprint, url_for\n"
    "from . import pricing\n"
    "\n"
    "VERSION = '%s'\n"
    "bp = Blueprint('store', __name__)\n"
    "\n"
    "@bp.route('/items/<int:item_id>')\n"
    "def item(item_id):\n"
    "    return (f'item {item_id} {pricing.price(item_id)} {pricing.CURRENCY} '\n"
    "            f\"{VERSION} {pricing.VERSION} {url_for('.item', item_id=item_id)}\")\n";

/* store/pricing.py: VERSION, CURRENCY */
static const char PRICING_PY[] =
    "VERSION = '%s'\n"
    "CURRENCY = '%s'\n"
    "\n"
    "def price(item_id):\n"
    "    return f'{item_id * 1.5:.2f}'\n"
    "\n"
    "def total(qty):\n"
    "    return qty * 2.5\n";

static const char INIT_PY[] = "from .views import bp\nfrom . import views\n";

static const char INDEX_HTML[] =
    "index {{ version }} n={{ n }} css={{ url_for('static', filename='style.css') }} "
    "item={{ url_for('store.item', item_id=7) }}";

static const char STYLE_CSS[] = "body { color: #333; }\n";

/* The tutorial's own layout (flask.palletsprojects.com/tutorial): an
 * application factory in a package, instance_relative_config, blueprints
 * that import the package's modules by absolute name; the WSGI file calls
 * the factory.  BLOG_PY: VERSION */
static const char TUT_WSGI_PY[] =
    "from flaskr import create_app\n"
    "application = create_app()\n";

static const char TUT_INIT_PY[] =
    "import os\n"
    "from flask import Flask\n"
    "\n"
    "def create_app(test_config=None):\n"
    "    app = Flask(__name__, instance_relative_config=True)\n"
    "    app.config.from_mapping(SECRET_KEY='dev')\n"
    "    if test_config is None:\n"
    "        app.config.from_pyfile('config.py', silent=True)\n"
    "    try:\n"
    "        os.makedirs(app.instance_path)\n"
    "    except OSError:\n"
    "        pass\n"
    "\n"
    "    @app.route('/hello')\n"
    "    def hello():\n"
    "        return 'Hello, World!'\n"
    "\n"
    "    from . import blog\n"
    "    app.register_blueprint(blog.bp)\n"
    "    app.add_url_rule('/', endpoint='index')\n"
    "    return app\n";

static const char TUT_DB_PY[] =
    "def get_db():\n"
    "    return {'posts': ['first']}\n";

static const char TUT_BLOG_PY[] =
    "import os\n"
    "from flask import Blueprint, current_app, render_template, url_for\n"
    "from flaskr.db import get_db\n"
    "\n"
    "bp = Blueprint('blog', __name__)\n"
    "\n"
    "@bp.route('/')\n"
    "def index():\n"
    "    here = os.path.dirname(os.path.dirname(__file__))\n"
    "    where = current_app.instance_path == os.path.join(here, 'instance')\n"
    "    return render_template('blog/index.html', version='%s', posts=get_db()['posts'],\n"
    "                           where=where, key=current_app.config['SECRET_KEY'])\n";

static const char TUT_BASE_HTML[] =
    "{% block content %}{% endblock %} {{ url_for('static', filename='style.css') }}";

static const char TUT_INDEX_HTML[] =
    "{% extends 'base.html' %}{% block content %}blog {{ version }} {{ posts }} "
    "{{ url_for('index') }} {{ url_for('hello') }} instance={{ where }} {{ key }}{% endblock %}";

/* Write dir/name from a format with up to two strings. */
static void
put_fmt(httpd_t *h, const char *dir, const char *name, const char *fmt, const char *a,
        const char *b)
{
    char path[256], *text;
    size_t n = strlen(fmt) + 256;

    text = malloc(n);
    snprintf(text, n, fmt, a, b);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    it_put(h, path, text);
    free(text);
}

/* Write dir/name as it is (templates have their own '%'). */
static void
put_raw(httpd_t *h, const char *dir, const char *name, const char *text)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    it_put(h, path, text);
}

static void
flask_app(httpd_t *h, const char *dir, const char *currency)
{
    put_fmt(h, dir, "app.py", APP_PY, "a1", NULL);
    put_fmt(h, dir, "store/__init__.py", INIT_PY, NULL, NULL);
    put_fmt(h, dir, "store/views.py", VIEWS_PY, "v1", NULL);
    put_fmt(h, dir, "store/pricing.py", PRICING_PY, "p1", currency);
    put_raw(h, dir, "templates/index.html", INDEX_HTML);
    put_raw(h, dir, "static/style.css", STYLE_CSS);
}

static void
fsetup(void)
{
    httpd_opts_t o = {
        .config = "<Location /shop>\n  PyReloadWSGI @APP@/shop/app.py\n</Location>\n"
                  "<Location /other>\n  PyReloadWSGI @APP@/other/app.py\n</Location>\n"
                  "<Location /tut>\n  PyReloadWSGI @APP@/tut/wsgi.py\n</Location>\n"
    };

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    flask_app(srv, "shop", "EUR");
    flask_app(srv, "other", "USD");
    put_fmt(srv, "tut", "wsgi.py", TUT_WSGI_PY, NULL, NULL);
    put_fmt(srv, "tut", "flaskr/__init__.py", TUT_INIT_PY, NULL, NULL);
    put_fmt(srv, "tut", "flaskr/db.py", TUT_DB_PY, NULL, NULL);
    put_fmt(srv, "tut", "flaskr/blog.py", TUT_BLOG_PY, "b1", NULL);
    put_raw(srv, "tut", "flaskr/templates/base.html", TUT_BASE_HTML);
    put_raw(srv, "tut", "flaskr/templates/blog/index.html", TUT_INDEX_HTML);
    put_raw(srv, "tut", "flaskr/static/style.css", STYLE_CSS);
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
fteardown(void)
{
    httpd_free(srv);
    srv = NULL;
}

/* The counter of /count in "a1 v1 p1 n=N"; the versions in *versions. */
static int
count(const char *base, char *versions, size_t size)
{
    char path[64], *body, *n;
    int v;

    snprintf(path, sizeof(path), "%s/count", base);
    body = it_get(srv, path, 200);
    n = strstr(body, " n=");
    ck_assert_msg(n != NULL, "%s: '%s'", path, body);
    v = atoi(n + 3);
    snprintf(versions, size, "%.*s", (int)(n - body), body);
    free(body);
    return v;
}

START_TEST(test_flask_pages)
{
    static const char *const json[] = { "Content-Type: application/json", NULL };
    static const char order[] = "{\"sku\": \"tea\", \"qty\": 4}";
    http_resp_t *r;
    char *body;
    size_t mark;

    /* Jinja template, url_for under SCRIPT_NAME */
    body = it_get(srv, "/shop/", 200);
    ck_assert_msg(strncmp(body, "index a1 n=", 11) == 0 &&
                  strstr(body, " css=/shop/static/style.css item=/shop/store/items/7"),
                  "%s", body);
    free(body);
    /* Flask's static route */
    r = http_get(srv, "/shop/static/style.css");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, STYLE_CSS);
    ck_assert_msg(strncmp(r->content_type, "text/css", 8) == 0, "%s", r->content_type);
    http_free(r);
    /* the blueprint and its helper, url_for('.item') */
    it_expect(srv, "/shop/store/items/7", "item 7 10.50 EUR v1 p1 /shop/store/items/7");
    /* JSON in and out, pickle of the app's own class; app.logger writes
     * to wsgi.errors, the error log */
    mark = httpd_log_mark(srv);
    r = http_request(srv, "POST", "/shop/api/order", json, order, strlen(order));
    http_assert_status(r, 200);
    ck_assert_msg(strncmp(r->content_type, "application/json", 16) == 0, "%s",
                  r->content_type);
    ck_assert_msg(strstr(r->body, "\"sku\":\"tea\"") && strstr(r->body, "\"total\":10.0") &&
                  strstr(r->body, "\"pickled\":true") && strstr(r->body, "\"version\":\"a1\""),
                  "%s", r->body);
    http_free(r);
    ck_assert(httpd_log_wait(srv, mark, "order of tea", 1, 2000));
    /* Flask's own 404 (werkzeug says "on the server", Apache "on this server") */
    r = http_get(srv, "/shop/no/such/page");
    http_assert_status(r, 404);
    ck_assert_msg(strstr(r->body, "<h1>Not Found</h1>") &&
                  strstr(r->body, "The requested URL was not found on the server."),
                  "%s", r->body);
    http_free(r);
    /* where Flask finds its files, and sys.modules */
    it_expect(srv, "/shop/info", "ok /shop /shop/static/style.css /shop/store/items/7");
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

START_TEST(test_flask_edits_keep_state)
{
    char v[64], ov[64];
    int n = count("/shop", v, sizeof(v)), on = count("/other", ov, sizeof(ov)), i;
    size_t mark;

    ck_assert_str_eq(v, "a1 v1 p1");
    /* app.py */
    put_fmt(srv, "shop", "app.py", APP_PY, "a2", NULL);
    ck_assert_int_eq(count("/shop", v, sizeof(v)), n + 1);
    ck_assert_str_eq(v, "a2 v1 p1");
    /* the blueprint */
    put_fmt(srv, "shop", "store/views.py", VIEWS_PY, "v2", NULL);
    ck_assert_int_eq(count("/shop", v, sizeof(v)), n + 2);
    ck_assert_str_eq(v, "a2 v2 p1");
    it_expect(srv, "/shop/store/items/7", "item 7 10.50 EUR v2 p1 /shop/store/items/7");
    /* the helper the blueprint imports */
    put_fmt(srv, "shop", "store/pricing.py", PRICING_PY, "p2", "GBP");
    ck_assert_int_eq(count("/shop", v, sizeof(v)), n + 3);
    ck_assert_str_eq(v, "a2 v2 p2");
    it_expect(srv, "/shop/store/items/7", "item 7 10.50 GBP v2 p2 /shop/store/items/7");
    /* a broken blueprint: the last good application serves, said once */
    mark = httpd_log_mark(srv);
    put_fmt(srv, "shop", "store/views.py", "from . import pricing\nbp = None\n", NULL, NULL);
    ck_assert_int_eq(count("/shop", v, sizeof(v)), n + 4);
    ck_assert_str_eq(v, "a2 v2 p2");
    ck_assert_int_eq(count("/shop", v, sizeof(v)), n + 5);
    ck_assert(httpd_log_wait(srv, mark, "PYR0102", 1, 2000));
    ck_assert_int_eq(httpd_log_count(srv, mark, "load failed"), 1);
    put_fmt(srv, "shop", "store/views.py", VIEWS_PY, "v3", NULL);
    ck_assert_int_eq(count("/shop", v, sizeof(v)), n + 6);
    ck_assert_str_eq(v, "a2 v3 p2");
    /* retired applications are freed: the Flask objects alive are the
     * three served ones, once the request that ran on the last retired
     * one has let it go (bounded: 2 s) */
    for (i = 0; i < 5; i++) {
        char *apps = NULL;
        int tries;

        it_touch(srv, "shop/store/pricing.py");
        for (tries = 0; tries < 100; tries++) {
            free(apps);
            apps = it_get(srv, "/shop/apps", 200);
            if (strcmp(apps, "3") == 0) {
                break;
            }
            usleep(20 * 1000);
        }
        ck_assert_msg(strcmp(apps, "3") == 0, "Flask objects alive: %s", apps);
        free(apps);
    }
    /* sys.modules holds the serving versions only */
    it_expect(srv, "/shop/info", "ok /shop /shop/static/style.css /shop/store/items/7");
    /* the other application: its own modules, its own counter */
    ck_assert_int_eq(count("/other", ov, sizeof(ov)), on + 1);
    ck_assert_str_eq(ov, "a1 v1 p1");
    it_expect(srv, "/other/store/items/7", "item 7 10.50 USD v1 p1 /other/store/items/7");
    it_expect(srv, "/other/info", "ok /other /other/static/style.css /other/store/items/7");
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

/* The tutorial's application factory: its instance folder is next to the
 * package, an edit of a blueprint is served. */
START_TEST(test_flask_tutorial_factory)
{
    http_resp_t *r;

    it_expect(srv, "/tut/hello", "Hello, World!");
    it_expect(srv, "/tut/", "blog b1 [&#39;first&#39;] /tut/ /tut/hello instance=True dev "
                            "/tut/static/style.css");
    r = http_get(srv, "/tut/static/style.css");
    http_assert_status(r, 200);
    ck_assert_str_eq(r->body, STYLE_CSS);
    http_free(r);
    put_fmt(srv, "tut", "flaskr/blog.py", TUT_BLOG_PY, "b2", NULL);
    it_expect(srv, "/tut/", "blog b2 [&#39;first&#39;] /tut/ /tut/hello instance=True dev "
                            "/tut/static/style.css");
    put_fmt(srv, "tut", "flaskr/db.py", "def get_db():\n    return {'posts': ['1', '2']}\n",
            NULL, NULL);
    it_expect(srv, "/tut/", "blog b2 [&#39;1&#39;, &#39;2&#39;] /tut/ /tut/hello instance=True dev "
                            "/tut/static/style.css");
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

START_TEST(test_flask_two_apps_same_module_names)
{
    char *a = it_get(srv, "/shop/names", 200), *b = it_get(srv, "/other/names", 200);

    ck_assert_msg(strcmp(a, b) != 0 && strstr(a, ".store.views") && strstr(b, ".store.views"),
                  "%s / %s", a, b);
    free(a);
    free(b);
    it_expect(srv, "/other/store/items/2", "item 2 3.00 USD v1 p1 /other/store/items/2");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Django                                                              */

/* A project as django-admin startproject lays it out (trimmed): the
 * project directory is a PyReloadPath (on sys.path, as WSGIPythonPath
 * would put it), wsgi.py is the file of startproject. */
static const char DJ_WSGI_PY[] =
    "import os\n"
    "from django.core.wsgi import get_wsgi_application\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
    "application = get_wsgi_application()\n";

/* The same, with the URLconf imported through the reload cache (a
 * reloadable module, rebuilt with the views it imports) and handed to
 * Django as a module object, its resolver cache dropped: an edit of a view
 * or of urls.py rebuilds this file, which hands over the new URLconf. */
static const char DJ_LIVE_WSGI_PY[] =
    "import os\n"
    "from django.core.wsgi import get_wsgi_application\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
    "application = get_wsgi_application()\n"
    "\n"
    "from django.conf import settings\n"
    "from django.urls import clear_url_caches\n"
    "from mysite import urls\n"
    "settings.ROOT_URLCONF = urls\n"
    "clear_url_caches()\n";

static const char DJ_SETTINGS_PY[] =
    "SECRET_KEY = 'not-a-secret'\n"
    "DEBUG = False\n"
    "ALLOWED_HOSTS = ['*']\n"
    "ROOT_URLCONF = 'mysite.urls'\n"
    "INSTALLED_APPS = []\n"
    "MIDDLEWARE = []\n"
    "DATABASES = {}\n"
    "USE_TZ = True\n";

static const char DJ_URLS_PY[] =
    "from django.urls import path\n"
    "from . import views\n"
    "urlpatterns = [path('hello/', views.hello, name='hello')]\n";

/* views.py: VERSION */
static const char DJ_VIEWS_PY[] =
    "import os, json\n"
    "from django.http import HttpResponse, JsonResponse\n"
    "from django.urls import reverse\n"
    "VERSION = '%s'\n"
    "def hello(request):\n"
    "    if request.method == 'POST':\n"
    "        return JsonResponse({'got': json.loads(request.body), 'version': VERSION})\n"
    "    return HttpResponse(f\"django {VERSION} {request.path} {reverse('hello')} \"\n"
    "                        f\"pid={os.getpid()}\", content_type='text/plain')\n";

static void
django_start(const char *wsgi)
{
    httpd_opts_t o = {
        .config = "PyReloadPath @APP@/dj\n"
                  "<Location /dj>\n  PyReloadWSGI @APP@/dj/wsgi.py\n</Location>\n"
    };

    srv = httpd_new(&o);
    ck_assert_ptr_nonnull(srv);
    put_fmt(srv, "dj", "wsgi.py", wsgi, NULL, NULL);
    put_fmt(srv, "dj", "mysite/__init__.py", "", NULL, NULL);
    put_fmt(srv, "dj", "mysite/settings.py", DJ_SETTINGS_PY, NULL, NULL);
    put_fmt(srv, "dj", "mysite/urls.py", DJ_URLS_PY, NULL, NULL);
    put_fmt(srv, "dj", "mysite/views.py", DJ_VIEWS_PY, "v1", NULL);
    if (httpd_start(srv) != 0) {
        httpd_dump_log_tail(srv, 40);
        ck_abort_msg("httpd did not start");
    }
}

static void
dsetup(void)
{
    django_start(DJ_WSGI_PY);
}

static void
dlsetup(void)
{
    django_start(DJ_LIVE_WSGI_PY);
}

/* "django VERSION PATH REVERSED pid=N": the version, and the pid in *pid. */
static char *
django_hello(long *pid)
{
    char *body = it_get(srv, "/dj/hello/", 200), *p = strstr(body, " pid=");

    ck_assert_msg(p != NULL, "%s", body);
    *pid = atol(p + 5);
    *p = '\0';
    return body;
}

START_TEST(test_django_answers)
{
    static const char *const json[] = { "Content-Type: application/json", NULL };
    static const char msg[] = "{\"a\": [1, 2]}";
    http_resp_t *r;
    long pid;
    char *body = django_hello(&pid);

    /* SCRIPT_NAME: request.path and reverse() carry the mount point */
    ck_assert_str_eq(body, "django v1 /dj/hello/ /dj/hello/");
    free(body);
    r = http_request(srv, "POST", "/dj/hello/", json, msg, strlen(msg));
    http_assert_status(r, 200);
    ck_assert_msg(strstr(r->body, "\"got\": {\"a\": [1, 2]}") != NULL, "%s", r->body);
    http_free(r);
    /* Django's own 404 (DEBUG off) */
    r = http_get(srv, "/dj/nothing/here");
    http_assert_status(r, 404);
    ck_assert_msg(strstr(r->body, "The requested resource was not found on this server."),
                  "%s", r->body);
    http_free(r);
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

/* What an edit of a Django view does, pinned (README, "Django"): Django
 * imports its project modules itself (settings, ROOT_URLCONF and what it
 * imports) with Python's own import, once per process, and caches the URL
 * resolver: they are not reloadable modules.  So an edited view is NOT
 * served by a process that has served the old one, silently (no load, no
 * error), and neither does an edit (or touch) of wsgi.py, which reloads
 * only wsgi.py: the new get_wsgi_application() finds Django set up and the
 * old urls and views in sys.modules.  A new process (graceful restart)
 * serves the new view. */
START_TEST(test_django_view_edit_needs_new_process)
{
    long pid, pid2;
    char *body;
    size_t mark;
    int i;

    body = django_hello(&pid);
    ck_assert_str_eq(body, "django v1 /dj/hello/ /dj/hello/");
    free(body);
    mark = httpd_log_mark(srv);
    put_fmt(srv, "dj", "mysite/views.py", DJ_VIEWS_PY, "v2", NULL);
    body = django_hello(&pid2);
    ck_assert_str_eq(body, "django v1 /dj/hello/ /dj/hello/");
    ck_assert_int_eq(pid2, pid);
    free(body);
    /* wsgi.py reloads (generation 2), Django keeps its old view */
    it_touch(srv, "dj/wsgi.py");
    body = django_hello(&pid2);
    ck_assert_str_eq(body, "django v1 /dj/hello/ /dj/hello/");
    ck_assert_int_eq(pid2, pid);
    free(body);
    ck_assert_int_eq(httpd_log_count(srv, mark, "wsgi.py: generation 2 loaded"), 1);
    ck_assert_int_eq(httpd_log_count(srv, mark, "views.py"), 0);
    ck_assert_int_eq(httpd_log_count(srv, mark, "PYR0102"), 0);
    /* a new process: the new view (bounded: 10 s) */
    ck_assert_int_eq(httpd_signal(srv, SIGUSR1), 0);
    for (i = 0; i < 200; i++) {
        http_resp_t *r = http_get(srv, "/dj/hello/");

        if (r->status == 200 && strncmp(r->body, "django v2 ", 10) == 0) {
            http_free(r);
            break;
        }
        http_free(r);
        usleep(50 * 1000);
    }
    body = django_hello(&pid2);
    ck_assert_str_eq(body, "django v2 /dj/hello/ /dj/hello/");
    ck_assert_int_ne(pid2, pid);
    free(body);
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

/* The URLconf through the reload cache: view and urls edits are served by
 * the next request, in the same process. */
START_TEST(test_django_urlconf_through_cache)
{
    long pid, pid2;
    char *body = django_hello(&pid);

    ck_assert_str_eq(body, "django v1 /dj/hello/ /dj/hello/");
    free(body);
    put_fmt(srv, "dj", "mysite/views.py", DJ_VIEWS_PY, "v2", NULL);
    body = django_hello(&pid2);
    ck_assert_str_eq(body, "django v2 /dj/hello/ /dj/hello/");
    ck_assert_int_eq(pid2, pid);
    free(body);
    put_fmt(srv, "dj", "mysite/urls.py",
            "from django.urls import path\n"
            "from . import views\n"
            "urlpatterns = [path('hello/', views.hello, name='hello'),\n"
            "               path('hi/', views.hello)]\n", NULL, NULL);
    body = it_get(srv, "/dj/hi/", 200);
    ck_assert_msg(strncmp(body, "django v2 /dj/hi/ /dj/hello/ ", 29) == 0, "%s", body);
    free(body);
    ck_assert(httpd_log_no_crash(srv, 0));
}
END_TEST

Suite *
suite_flask(void)
{
    Suite *s = suite_create("flask");
    TCase *fc = httpd_tcase("flask", 90, fsetup, fteardown);
    TCase *dc = httpd_tcase("django", 90, dsetup, fteardown);
    TCase *lc = httpd_tcase("django-urlconf", 90, dlsetup, fteardown);

    tcase_add_test(fc, test_flask_pages);
    tcase_add_test(fc, test_flask_two_apps_same_module_names);
    tcase_add_test(fc, test_flask_tutorial_factory);
    tcase_add_test(fc, test_flask_edits_keep_state);
    suite_add_tcase(s, fc);
    tcase_add_test(dc, test_django_answers);
    tcase_add_test(dc, test_django_view_edit_needs_new_process);
    suite_add_tcase(s, dc);
    tcase_add_test(lc, test_django_urlconf_through_cache);
    suite_add_tcase(s, lc);
    return s;
}
