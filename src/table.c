/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * table.c: pyreload.Table, a case-insensitive mapping over an apr_table_t
 * (headers_in, headers_out, err_headers_out, options).
 *
 * It copies nothing: reads and writes go straight to the request's table, so
 * a header set from Python is the header httpd sends.  Header text is
 * ISO-8859-1, as in HTTP and PEP 3333, so every byte round-trips.
 */
#include "pyr_python.h"

#include <apr_strings.h>
#include <string.h>

typedef struct {
    PyObject_HEAD apr_table_t *t;
    pyr_guard_t *guard; /* owned; NULL: always valid */
    int readonly;
} table_t;

static int
check_alive(table_t *self)
{
    return self->guard ? pyr_guard_check(self->guard) : 0;
}

static int
check_writable(table_t *self)
{
    if (check_alive(self) < 0) {
        return -1;
    }
    if (self->readonly) {
        PyErr_SetString(PyExc_TypeError, "this table is read-only");
        return -1;
    }
    return 0;
}

/* str -> latin-1 bytes (new reference), refusing what would split a header. */
static PyObject *
header_bytes(PyObject *o, const char *what)
{
    PyObject *b;

    if (!PyUnicode_Check(o)) {
        return PyErr_Format(PyExc_TypeError, "header %s must be str, not %.100s", what,
                            Py_TYPE(o)->tp_name);
    }
    b = PyUnicode_AsLatin1String(o);
    if (!b) {
        return NULL;
    }
    if (strpbrk(PyBytes_AS_STRING(b), "\r\n") ||
        (Py_ssize_t)strlen(PyBytes_AS_STRING(b)) != PyBytes_GET_SIZE(b)) {
        Py_DECREF(b);
        return PyErr_Format(PyExc_ValueError, "header %s must not contain CR, LF or NUL", what);
    }
    return b;
}

static PyObject *
text(const char *s)
{
    return PyUnicode_DecodeLatin1(s, (Py_ssize_t)strlen(s), NULL);
}

static const char *
key_arg(PyObject *key, PyObject **hold)
{
    *hold = header_bytes(key, "name");
    return *hold ? PyBytes_AS_STRING(*hold) : NULL;
}

static Py_ssize_t
table_len(table_t *self)
{
    if (check_alive(self) < 0) {
        return -1;
    }
    return apr_table_elts(self->t)->nelts;
}

static PyObject *
table_getitem(table_t *self, PyObject *key)
{
    PyObject *hold = NULL;
    const char *k, *v;

    if (check_alive(self) < 0 || !(k = key_arg(key, &hold))) {
        return NULL;
    }
    v = apr_table_get(self->t, k);
    Py_DECREF(hold);
    if (!v) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return text(v);
}

static int
table_setitem(table_t *self, PyObject *key, PyObject *value)
{
    PyObject *kh = NULL, *vh = NULL;
    const char *k;

    if (check_writable(self) < 0 || !(k = key_arg(key, &kh))) {
        return -1;
    }
    if (!value) {
        if (!apr_table_get(self->t, k)) {
            PyErr_SetObject(PyExc_KeyError, key);
            Py_DECREF(kh);
            return -1;
        }
        apr_table_unset(self->t, k);
        Py_DECREF(kh);
        return 0;
    }
    if (!(vh = header_bytes(value, "value"))) {
        Py_DECREF(kh);
        return -1;
    }
    apr_table_set(self->t, k, PyBytes_AS_STRING(vh));
    Py_DECREF(kh);
    Py_DECREF(vh);
    return 0;
}

static int
table_contains(table_t *self, PyObject *key)
{
    PyObject *hold = NULL;
    const char *k;
    int found;

    if (check_alive(self) < 0) {
        return -1;
    }
    if (!PyUnicode_Check(key)) {
        return 0;
    }
    if (!(k = key_arg(key, &hold))) {
        /* Not encodable as a header name: certainly not in the table. */
        PyErr_Clear();
        return 0;
    }
    found = apr_table_get(self->t, k) != NULL;
    Py_DECREF(hold);
    return found;
}

/* kind: 0 keys, 1 values, 2 items */
static PyObject *
table_list(table_t *self, int kind)
{
    const apr_array_header_t *arr;
    const apr_table_entry_t *ent;
    PyObject *list;
    int i;

    if (check_alive(self) < 0) {
        return NULL;
    }
    arr = apr_table_elts(self->t);
    ent = (const apr_table_entry_t *)arr->elts;
    if (!(list = PyList_New(0))) {
        return NULL;
    }
    for (i = 0; i < arr->nelts; i++) {
        PyObject *item;

        if (!ent[i].key) {
            continue;
        }
        if (kind == 0) {
            item = text(ent[i].key);
        }
        else if (kind == 1) {
            item = text(ent[i].val ? ent[i].val : "");
        }
        else {
            item = Py_BuildValue("(NN)", text(ent[i].key), text(ent[i].val ? ent[i].val : ""));
        }
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

static PyObject *
table_keys(table_t *self, PyObject *u)
{
    return table_list(self, 0);
}
static PyObject *
table_values(table_t *self, PyObject *u)
{
    return table_list(self, 1);
}
static PyObject *
table_items(table_t *self, PyObject *u)
{
    return table_list(self, 2);
}

static PyObject *
table_iter(table_t *self)
{
    PyObject *keys = table_list(self, 0), *it;

    if (!keys) {
        return NULL;
    }
    it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
table_get(table_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *hold = NULL;
    const char *k, *v;

    if (nargs < 1 || nargs > 2) {
        return PyErr_Format(PyExc_TypeError, "get() takes 1 or 2 arguments (%zd given)", nargs);
    }
    if (check_alive(self) < 0 || !(k = key_arg(args[0], &hold))) {
        return NULL;
    }
    v = apr_table_get(self->t, k);
    Py_DECREF(hold);
    if (v) {
        return text(v);
    }
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

/* Every value of a repeated header, in order (Set-Cookie, Via, ...). */
static PyObject *
table_getall(table_t *self, PyObject *key)
{
    PyObject *hold = NULL, *list;
    const apr_array_header_t *arr;
    const apr_table_entry_t *ent;
    const char *k;
    int i;

    if (check_alive(self) < 0 || !(k = key_arg(key, &hold))) {
        return NULL;
    }
    arr = apr_table_elts(self->t);
    ent = (const apr_table_entry_t *)arr->elts;
    if (!(list = PyList_New(0))) {
        Py_DECREF(hold);
        return NULL;
    }
    for (i = 0; i < arr->nelts; i++) {
        PyObject *v;

        if (!ent[i].key || strcasecmp(ent[i].key, k) != 0) {
            continue;
        }
        v = text(ent[i].val ? ent[i].val : "");
        if (!v || PyList_Append(list, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(list);
            Py_DECREF(hold);
            return NULL;
        }
        Py_DECREF(v);
    }
    Py_DECREF(hold);
    return list;
}

static PyObject *
table_add(table_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *kh = NULL, *vh = NULL;
    const char *k;

    if (nargs != 2) {
        return PyErr_Format(PyExc_TypeError, "add() takes 2 arguments (%zd given)", nargs);
    }
    if (check_writable(self) < 0 || !(k = key_arg(args[0], &kh))) {
        return NULL;
    }
    if (!(vh = header_bytes(args[1], "value"))) {
        Py_DECREF(kh);
        return NULL;
    }
    apr_table_add(self->t, k, PyBytes_AS_STRING(vh));
    Py_DECREF(kh);
    Py_DECREF(vh);
    Py_RETURN_NONE;
}

static PyObject *
table_repr(table_t *self)
{
    PyObject *items, *r;

    if (self->guard && !pyr_guard_live(self->guard)) {
        return PyUnicode_FromString("<pyreload.Table of a finished request>");
    }
    if (!(items = table_list(self, 2))) {
        return NULL;
    }
    r = PyUnicode_FromFormat("pyreload.Table(%R)", items);
    Py_DECREF(items);
    return r;
}

static void
table_dealloc(table_t *self)
{
    pyr_guard_unref(self->guard);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMappingMethods table_as_mapping = {
    .mp_length = (lenfunc)table_len,
    .mp_subscript = (binaryfunc)table_getitem,
    .mp_ass_subscript = (objobjargproc)table_setitem,
};

static PySequenceMethods table_as_sequence = {
    .sq_contains = (objobjproc)table_contains,
};

static PyMethodDef table_methods[] = {
    { "get", (PyCFunction)(void (*)(void))table_get, METH_FASTCALL,
      "get(name, default=None): the first value of a header." },
    { "getall", (PyCFunction)table_getall, METH_O, "Every value of a header, in order." },
    { "add", (PyCFunction)(void (*)(void))table_add, METH_FASTCALL,
      "add(name, value): append a header, keeping those of the same name." },
    { "keys", (PyCFunction)table_keys, METH_NOARGS, NULL },
    { "values", (PyCFunction)table_values, METH_NOARGS, NULL },
    { "items", (PyCFunction)table_items, METH_NOARGS, NULL },
    { NULL }
};

PyTypeObject pyr_TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyreload.Table",
    .tp_basicsize = sizeof(table_t),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_repr = (reprfunc)table_repr,
    .tp_as_sequence = &table_as_sequence,
    .tp_as_mapping = &table_as_mapping,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Case-insensitive mapping over an httpd table (headers, options).",
    .tp_iter = (getiterfunc)table_iter,
    .tp_methods = table_methods,
};

PyObject *
pyr_table_new(apr_table_t *t, pyr_guard_t *guard, int readonly)
{
    table_t *self = PyObject_New(table_t, &pyr_TableType);

    if (!self) {
        return NULL;
    }
    self->t = t;
    if (guard) {
        pyr_guard_ref(guard);
    }
    self->guard = guard;
    self->readonly = readonly;
    return (PyObject *)self;
}
