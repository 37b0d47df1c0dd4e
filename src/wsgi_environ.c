/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * wsgi_environ.c: the environ dict of one WSGI request (PEP 3333), built
 * straight from the request_rec.
 *
 * Cheap on purpose: every key is a string interned once per process, the
 * values that repeat from request to request (method, protocol, server
 * name and port, script name, client address) are kept from the last
 * request that had them, and the HTTP_* keys of the header names seen so
 * far are kept in a small table.  ap_add_common_vars()/ap_add_cgi_vars()
 * are not used: they build an apr table of everything CGI defines, which
 * would then be copied again into the dict.
 *
 * Every str value is the request's bytes decoded as ISO-8859-1 (PEP 3333's
 * native strings), so no byte is lost.  Everything here runs with the GIL,
 * which is also what guards the static caches.
 */
#include "pyr_httpd.h"

#include "ap_mpm.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_ssl.h"

#include <apr_lib.h>
#include <apr_strings.h>

/* The keys, interned once. */
enum {
    K_REQUEST_METHOD,
    K_SCRIPT_NAME,
    K_PATH_INFO,
    K_QUERY_STRING,
    K_CONTENT_TYPE,
    K_CONTENT_LENGTH,
    K_SERVER_NAME,
    K_SERVER_PORT,
    K_SERVER_PROTOCOL,
    K_REMOTE_ADDR,
    K_REMOTE_PORT,
    K_REQUEST_URI,
    K_HTTPS,
    K_REMOTE_USER,
    K_AUTH_TYPE,
    K_WSGI_VERSION,
    K_WSGI_URL_SCHEME,
    K_WSGI_MULTITHREAD,
    K_WSGI_MULTIPROCESS,
    K_WSGI_RUN_ONCE,
    K_WSGI_INPUT,
    K_WSGI_ERRORS,
    K_WSGI_FILE_WRAPPER,
    K_WSGI_INPUT_TERMINATED,
    K_PYRELOAD_OPTIONS,
    K_PYRELOAD_GENERATION,
    NKEYS
};

static const char *const key_names[NKEYS] = {
    "REQUEST_METHOD",    "SCRIPT_NAME",      "PATH_INFO",
    "QUERY_STRING",      "CONTENT_TYPE",     "CONTENT_LENGTH",
    "SERVER_NAME",       "SERVER_PORT",      "SERVER_PROTOCOL",
    "REMOTE_ADDR",       "REMOTE_PORT",      "REQUEST_URI",
    "HTTPS",             "REMOTE_USER",      "AUTH_TYPE",
    "wsgi.version",      "wsgi.url_scheme",  "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once",    "wsgi.input",
    "wsgi.errors",       "wsgi.file_wrapper", "wsgi.input_terminated",
    "pyreload.options",  "pyreload.generation",
};

static PyObject *keys[NKEYS];
static PyObject *version;       /* (1, 0) */
static PyObject *str_http, *str_https, *str_on, *str_empty;
static PyObject *multithread, *multiprocess; /* Py_True / Py_False */
static PyObject *no_options;    /* a read-only empty pyreload.Table */
/* What every environ starts as (a copy of it): the values that never change
 * in this process, and None under the keys every request sets, so that a
 * request replaces values in a table already the right size instead of
 * inserting into one that grows (and is reallocated) three times. */
static PyObject *template_env;
static apr_pool_t *env_pool;    /* no_options' table */

/* One remembered value: the text it was made from and the str. */
typedef struct memo {
    char text[64];
    apr_size_t len;
    PyObject *str;
} memo_t;

enum { M_METHOD, M_METHOD2, M_PROTOCOL, M_SERVER_NAME, M_SERVER_PORT, M_SCRIPT_NAME,
       M_REMOTE_ADDR, NMEMOS };
static memo_t memos[NMEMOS];

/* The HTTP_* key of a header name, by the name's letters (any case):
 * bounded, so a client that sends many names costs no memory. */
#define HDR_SLOTS 128
typedef struct hdr_key {
    char name[48]; /* lower case; "" when free */
    PyObject *key;
} hdr_key_t;
static hdr_key_t hdr_keys[HDR_SLOTS];

static PyObject *
latin1(const char *s, apr_size_t n)
{
    return PyUnicode_DecodeLatin1(s, (Py_ssize_t)n, NULL);
}

/* A new reference to the str of s, reusing the last one made in this memo. */
static PyObject *
memo_str(memo_t *m, const char *s)
{
    apr_size_t n = strlen(s);
    PyObject *str;

    if (m->str && n == m->len && memcmp(m->text, s, n) == 0) {
        return Py_NewRef(m->str);
    }
    if ((str = latin1(s, n)) && n < sizeof(m->text)) {
        memcpy(m->text, s, n);
        m->text[n] = '\0';
        m->len = n;
        Py_XSETREF(m->str, Py_NewRef(str));
    }
    return str;
}

/* d[key] = value, value stolen (NULL: the error that made it). */
static int
put(PyObject *d, int key, PyObject *value)
{
    int rv;

    if (!value) {
        return -1;
    }
    rv = PyDict_SetItem(d, keys[key], value);
    Py_DECREF(value);
    return rv;
}

static int
put_text(PyObject *d, int key, const char *s)
{
    return put(d, key, latin1(s, strlen(s)));
}

static int
make_template(void)
{
    static const int every_request[] = {
        K_REQUEST_METHOD, K_SCRIPT_NAME,    K_PATH_INFO,       K_QUERY_STRING,
        K_SERVER_NAME,    K_SERVER_PORT,    K_SERVER_PROTOCOL, K_REMOTE_ADDR,
        K_REMOTE_PORT,    K_REQUEST_URI,    K_WSGI_URL_SCHEME, K_WSGI_INPUT,
        K_WSGI_ERRORS,    K_PYRELOAD_OPTIONS, K_PYRELOAD_GENERATION,
    };
    size_t i;

    /* Room for the keys below and some 20 more (headers, CONTENT_*,
     * HTTPS...): PyDict_Copy() keeps the table's size.  The one private
     * CPython call we make (3.11 exports it; Cython relies on it too): the
     * public API has no way to size a dict ahead. */
    if (!(template_env = _PyDict_NewPresized(40))) {
        return -1;
    }
    for (i = 0; i < sizeof(every_request) / sizeof(every_request[0]); i++) {
        if (PyDict_SetItem(template_env, keys[every_request[i]], Py_None) < 0) {
            return -1;
        }
    }
    if (PyDict_SetItem(template_env, keys[K_WSGI_VERSION], version) < 0 ||
        PyDict_SetItem(template_env, keys[K_WSGI_MULTITHREAD], multithread) < 0 ||
        PyDict_SetItem(template_env, keys[K_WSGI_MULTIPROCESS], multiprocess) < 0 ||
        PyDict_SetItem(template_env, keys[K_WSGI_RUN_ONCE], Py_False) < 0 ||
        PyDict_SetItem(template_env, keys[K_WSGI_FILE_WRAPPER],
                       (PyObject *)&pyr_FileWrapperType) < 0 ||
        PyDict_SetItem(template_env, keys[K_WSGI_INPUT_TERMINATED], Py_True) < 0) {
        return -1;
    }
    return 0;
}

int
pyr_wsgi_environ_init(void)
{
    apr_table_t *empty;
    int i, threaded = 0, threads = 1, daemons = 1;

    for (i = 0; i < NKEYS; i++) {
        if (!(keys[i] = PyUnicode_InternFromString(key_names[i]))) {
            return -1;
        }
    }
    if (!(version = Py_BuildValue("(ii)", 1, 0)) ||
        !(str_http = PyUnicode_InternFromString("http")) ||
        !(str_https = PyUnicode_InternFromString("https")) ||
        !(str_on = PyUnicode_InternFromString("on")) ||
        !(str_empty = PyUnicode_InternFromString(""))) {
        return -1;
    }
    /* The limits the configuration gives this server: more than one thread
     * per process, more than one process at a time. */
    if (ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) != APR_SUCCESS) {
        threaded = AP_MPMQ_NOT_SUPPORTED;
    }
    if (threaded != AP_MPMQ_NOT_SUPPORTED && ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS) {
        threads = 1;
    }
    if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) != APR_SUCCESS) {
        daemons = 1;
    }
    multithread = Py_NewRef(threaded != AP_MPMQ_NOT_SUPPORTED && threads > 1 ? Py_True : Py_False);
    multiprocess = Py_NewRef(daemons > 1 ? Py_True : Py_False);

    if (!env_pool && apr_pool_create(&env_pool, NULL) != APR_SUCCESS) {
        PyErr_NoMemory();
        return -1;
    }
    empty = apr_table_make(env_pool, 1);
    if (!(no_options = pyr_table_new(empty, NULL, 1))) {
        return -1;
    }
    return make_template();
}

void
pyr_wsgi_environ_fini(void)
{
    int i;

    for (i = 0; i < NKEYS; i++) {
        Py_CLEAR(keys[i]);
    }
    for (i = 0; i < NMEMOS; i++) {
        Py_CLEAR(memos[i].str);
        memos[i].len = 0;
    }
    for (i = 0; i < HDR_SLOTS; i++) {
        Py_CLEAR(hdr_keys[i].key);
        hdr_keys[i].name[0] = '\0';
    }
    Py_CLEAR(version);
    Py_CLEAR(str_http);
    Py_CLEAR(str_https);
    Py_CLEAR(str_on);
    Py_CLEAR(str_empty);
    Py_CLEAR(multithread);
    Py_CLEAR(multiprocess);
    Py_CLEAR(no_options);
    Py_CLEAR(template_env);
}

/* The environ key of request header `name` (a new reference): HTTP_ and
 * the name in upper case with '-' as '_', as CGI has it; CONTENT_TYPE and
 * CONTENT_LENGTH for those two.  NULL without an exception for a name
 * with other characters than letters, digits and '-': as httpd's CGI
 * does, such a header is left out, since "X_Foo" and "X-Foo" would give
 * the same key and one could pass for the other. */
static PyObject *
header_key(const char *name)
{
    char buf[256], low[sizeof(((hdr_key_t *)0)->name)];
    apr_size_t n = strlen(name), i;
    unsigned h = 5381;
    hdr_key_t *slot = NULL;
    PyObject *key;

    if (n == 0 || n + 5 >= sizeof(buf)) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];

        if (!apr_isalnum(ch) && ch != '-') {
            return NULL;
        }
        h = h * 33 + (unsigned)apr_tolower(ch);
    }
    if (n < sizeof(low)) {
        for (i = 0; i < n; i++) {
            low[i] = (char)apr_tolower((unsigned char)name[i]);
        }
        low[n] = '\0';
        slot = &hdr_keys[h % HDR_SLOTS];
        if (slot->key && strcmp(slot->name, low) == 0) {
            return Py_NewRef(slot->key);
        }
    }
    /* "httpoxy": a client's Proxy header would reach the application as
     * HTTP_PROXY, which libraries read as the proxy to use for outgoing
     * requests.  httpd's CGI leaves it out since 2.4.24; so do we. */
    if (!strcasecmp(name, "Proxy")) {
        return NULL;
    }
    if (!strcasecmp(name, "Content-Type")) {
        key = Py_NewRef(keys[K_CONTENT_TYPE]);
    }
    else if (!strcasecmp(name, "Content-Length")) {
        key = Py_NewRef(keys[K_CONTENT_LENGTH]);
    }
    else {
        memcpy(buf, "HTTP_", 5);
        for (i = 0; i < n; i++) {
            buf[5 + i] = name[i] == '-' ? '_' : (char)apr_toupper((unsigned char)name[i]);
        }
        buf[5 + n] = '\0';
        /* Interned: the dict then compares keys by identity. */
        if (!(key = PyUnicode_InternFromString(buf))) {
            return NULL;
        }
    }
    if (slot && !slot->key) {
        memcpy(slot->name, low, n + 1);
        slot->key = Py_NewRef(key);
    }
    return key;
}

/* HTTP_* for every request header; a header sent twice (which httpd's
 * HTTP/1 reader has merged already, but HTTP/2 may not) is joined with
 * ", ". */
static int
put_headers(PyObject *d, request_rec *r)
{
    const apr_array_header_t *arr = apr_table_elts(r->headers_in);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    int i;

    for (i = 0; i < arr->nelts; i++) {
        PyObject *key, *val, *had;
        Py_ssize_t size = PyDict_GET_SIZE(d);

        if (!e[i].key || !e[i].val) {
            continue;
        }
        if (!(key = header_key(e[i].key))) {
            if (PyErr_Occurred()) {
                return -1;
            }
            continue;
        }
        if (!(val = latin1(e[i].val, strlen(e[i].val)))) {
            Py_DECREF(key);
            return -1;
        }
        had = PyDict_SetDefault(d, key, val); /* borrowed */
        /* Not by identity: Python shares the str of one Latin-1 character. */
        if (had && PyDict_GET_SIZE(d) == size) {
            PyObject *joined = PyUnicode_FromFormat("%U, %U", had, val);

            if (!joined || PyDict_SetItem(d, key, joined) < 0) {
                had = NULL;
            }
            Py_XDECREF(joined);
        }
        Py_DECREF(key);
        Py_DECREF(val);
        if (!had) {
            return -1;
        }
    }
    return 0;
}

/* SetEnv, mod_rewrite's E=, mod_setenvif...: what is not there already. */
static int
put_subprocess_env(PyObject *d, request_rec *r)
{
    const apr_array_header_t *arr = apr_table_elts(r->subprocess_env);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    int i;

    for (i = 0; i < arr->nelts; i++) {
        PyObject *key, *val;
        int rv = -1;

        if (!e[i].key || !e[i].val) {
            continue;
        }
        if ((key = latin1(e[i].key, strlen(e[i].key)))) {
            if ((val = latin1(e[i].val, strlen(e[i].val)))) {
                rv = PyDict_SetDefault(d, key, val) ? 0 : -1;
                Py_DECREF(val);
            }
            Py_DECREF(key);
        }
        if (rv < 0) {
            return -1;
        }
    }
    return 0;
}

/* SCRIPT_NAME is the <Location> path of the directive, PATH_INFO the rest
 * of the (decoded) path; where that does not apply (no <Location>, or a
 * path <Location /shop> matched without being under it: /shopping), all
 * of the path is PATH_INFO. */
static int
put_script_path(PyObject *d, request_rec *r, const char *location)
{
    const char *uri = r->uri ? r->uri : "";
    apr_size_t n = location ? strlen(location) : 0;

    if (location && strncmp(uri, location, n) == 0 && (uri[n] == '/' || uri[n] == '\0')) {
        if (put(d, K_SCRIPT_NAME, memo_str(&memos[M_SCRIPT_NAME], location)) < 0) {
            return -1;
        }
        return put_text(d, K_PATH_INFO, uri + n);
    }
    if (PyDict_SetItem(d, keys[K_SCRIPT_NAME], str_empty) < 0) {
        return -1;
    }
    return put_text(d, K_PATH_INFO, uri);
}

static PyObject *
method_str(request_rec *r)
{
    /* Two memos: GET and POST mixed keep both. */
    memo_t *m = &memos[M_METHOD];

    if (m->str && strcmp(m->text, r->method) != 0) {
        m = &memos[M_METHOD2];
    }
    return memo_str(m, r->method);
}

PyObject *
pyr_wsgi_environ(pyr_call_t *c, pyr_guard_t *guard, PyObject *input, PyObject *errors)
{
    request_rec *r = c->r;
    conn_rec *conn = r->connection;
    const char *s;
    char port[16], rport[16];
    PyObject *d = PyDict_Copy(template_env);

    if (!d) {
        return NULL;
    }
    apr_snprintf(port, sizeof(port), "%u", ap_get_server_port(r));
    apr_snprintf(rport, sizeof(rport), "%u",
                 r->useragent_addr ? r->useragent_addr->port : conn->client_addr->port);
    if (put(d, K_REQUEST_METHOD, method_str(r)) < 0 ||
        put_script_path(d, r, c->cfg->handler->location) < 0 ||
        (r->args ? put_text(d, K_QUERY_STRING, r->args)
                 : PyDict_SetItem(d, keys[K_QUERY_STRING], str_empty)) < 0 ||
        put(d, K_SERVER_NAME, memo_str(&memos[M_SERVER_NAME], ap_get_server_name(r))) < 0 ||
        put(d, K_SERVER_PORT, memo_str(&memos[M_SERVER_PORT], port)) < 0 ||
        put(d, K_SERVER_PROTOCOL, memo_str(&memos[M_PROTOCOL], r->protocol)) < 0 ||
        put(d, K_REMOTE_ADDR, memo_str(&memos[M_REMOTE_ADDR], r->useragent_ip)) < 0 ||
        put_text(d, K_REMOTE_PORT, rport) < 0 ||
        put_text(d, K_REQUEST_URI, r->unparsed_uri ? r->unparsed_uri : "") < 0 ||
        put_headers(d, r) < 0) {
        goto fail;
    }
    if (ap_ssl_conn_is_ssl(conn) && PyDict_SetItem(d, keys[K_HTTPS], str_on) < 0) {
        goto fail;
    }
    if (r->user && put_text(d, K_REMOTE_USER, r->user) < 0) {
        goto fail;
    }
    if (r->ap_auth_type && put_text(d, K_AUTH_TYPE, r->ap_auth_type) < 0) {
        goto fail;
    }
    s = ap_http_scheme(r);
    if (PyDict_SetItem(d, keys[K_WSGI_URL_SCHEME],
                       s && !strcmp(s, "https") ? str_https : str_http) < 0 ||
        PyDict_SetItem(d, keys[K_WSGI_INPUT], input) < 0 ||
        PyDict_SetItem(d, keys[K_WSGI_ERRORS], errors) < 0 ||
        put(d, K_PYRELOAD_OPTIONS,
            apr_is_empty_table(c->cfg->options)
                ? Py_NewRef(no_options)
                : pyr_table_new(c->cfg->options, guard, 1)) < 0 ||
        put(d, K_PYRELOAD_GENERATION, PyLong_FromLong(c->gen ? pyr_gen_number(c->gen) : 0)) < 0) {
        goto fail;
    }
    if (!apr_is_empty_table(r->subprocess_env) && put_subprocess_env(d, r) < 0) {
        goto fail;
    }
    return d;

fail:
    Py_DECREF(d);
    return NULL;
}
