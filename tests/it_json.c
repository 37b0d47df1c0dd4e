/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_json.c: the strict JSON parser of it_json.h.
 */
#include "it_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s, *start;
    char *err;
    size_t errlen;
} parser_t;

static json_t *value(parser_t *p, int depth);

static void
fail(parser_t *p, const char *what)
{
    if (p->err && !p->err[0]) {
        snprintf(p->err, p->errlen, "%s at offset %ld", what, (long)(p->s - p->start));
    }
}

static void
ws(parser_t *p)
{
    while (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r') {
        p->s++;
    }
}

static json_t *
node(json_type_t t)
{
    json_t *v = calloc(1, sizeof(*v));

    v->type = t;
    return v;
}

static int
hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        char c = s[i];

        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void
put_utf8(char *out, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    }
    else if (cp < 0x800) {
        out[(*n)++] = (char)(0xC0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
    else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xE0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
    else {
        out[(*n)++] = (char)(0xF0 | (cp >> 18));
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* A string at p->s (on its opening quote): malloc'd, its length in *len. */
static char *
string(parser_t *p, size_t *len)
{
    const char *s = ++p->s;
    char *out = malloc(strlen(s) * 4 + 1);
    size_t n = 0;

    for (;;) {
        unsigned char c = (unsigned char)*s;

        if (c == '"') {
            break;
        }
        if (c == '\0' || c < 0x20) {
            p->s = s;
            fail(p, c ? "control character in a string" : "unterminated string");
            free(out);
            return NULL;
        }
        if (c != '\\') {
            out[n++] = (char)c;
            s++;
            continue;
        }
        s++;
        switch (*s) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;

            if (hex4(s + 1, &cp) < 0) {
                p->s = s;
                fail(p, "bad \\u escape");
                free(out);
                return NULL;
            }
            s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s[1] == '\\' && s[2] == 'u' &&
                hex4(s + 3, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
                put_utf8(out, &n, cp);
            }
            else if (cp >= 0xDC80 && cp <= 0xDCFF) {
                out[n++] = (char)(cp - 0xDC00); /* surrogateescape */
            }
            else if (cp >= 0xD800 && cp < 0xE000) {
                p->s = s;
                fail(p, "lone surrogate");
                free(out);
                return NULL;
            }
            else {
                put_utf8(out, &n, cp);
            }
            break;
        }
        default:
            p->s = s;
            fail(p, "bad escape");
            free(out);
            return NULL;
        }
        s++;
    }
    p->s = s + 1;
    out[n] = '\0';
    *len = n;
    return out;
}

static json_t *
container(parser_t *p, int depth, int obj)
{
    json_t *v = node(obj ? JSON_OBJ : JSON_ARR);
    char close = obj ? '}' : ']';

    p->s++;
    ws(p);
    if (*p->s == close) {
        p->s++;
        return v;
    }
    for (;;) {
        json_t *item;
        char *key = NULL;
        size_t klen;

        ws(p);
        if (obj) {
            if (*p->s != '"' || !(key = string(p, &klen))) {
                fail(p, "expected a key");
                json_free(v);
                return NULL;
            }
            ws(p);
            if (*p->s != ':') {
                fail(p, "expected ':'");
                free(key);
                json_free(v);
                return NULL;
            }
            p->s++;
        }
        if (!(item = value(p, depth + 1))) {
            free(key);
            json_free(v);
            return NULL;
        }
        v->items = realloc(v->items, sizeof(*v->items) * (size_t)(v->n + 1));
        v->keys = realloc(v->keys, sizeof(*v->keys) * (size_t)(v->n + 1));
        v->items[v->n] = item;
        v->keys[v->n] = key;
        v->n++;
        ws(p);
        if (*p->s == ',') {
            p->s++;
            continue;
        }
        if (*p->s == close) {
            p->s++;
            return v;
        }
        fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        json_free(v);
        return NULL;
    }
}

static json_t *
number(parser_t *p)
{
    const char *s = p->s;
    json_t *v;

    if (*s == '-') s++;
    if (*s == '0') s++;
    else if (*s >= '1' && *s <= '9') while (*s >= '0' && *s <= '9') s++;
    else { fail(p, "bad number"); return NULL; }
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9')) { fail(p, "bad fraction"); return NULL; }
        while (*s >= '0' && *s <= '9') s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!(*s >= '0' && *s <= '9')) { fail(p, "bad exponent"); return NULL; }
        while (*s >= '0' && *s <= '9') s++;
    }
    v = node(JSON_NUM);
    v->num = strtod(p->s, NULL);
    p->s = s;
    return v;
}

static json_t *
value(parser_t *p, int depth)
{
    json_t *v;

    ws(p);
    if (depth > 64) {
        fail(p, "too deep");
        return NULL;
    }
    switch (*p->s) {
    case '{': return container(p, depth, 1);
    case '[': return container(p, depth, 0);
    case '"':
        v = node(JSON_STR);
        if (!(v->str = string(p, &v->len))) {
            free(v);
            return NULL;
        }
        return v;
    case 't':
    case 'f':
    case 'n': {
        static const char *const words[] = { "true", "false", "null" };
        int i;

        for (i = 0; i < 3; i++) {
            if (strncmp(p->s, words[i], strlen(words[i])) == 0) {
                p->s += strlen(words[i]);
                v = node(i == 2 ? JSON_NULL : JSON_BOOL);
                v->b = i == 0;
                return v;
            }
        }
        fail(p, "bad literal");
        return NULL;
    }
    default: return number(p);
    }
}

json_t *
json_parse(const char *text, char *err, size_t errlen)
{
    parser_t p = { text, text, err, errlen };
    json_t *v;

    if (err && errlen) {
        err[0] = '\0';
    }
    if (!(v = value(&p, 0))) {
        return NULL;
    }
    ws(&p);
    if (*p.s) {
        fail(&p, "text after the value");
        json_free(v);
        return NULL;
    }
    return v;
}

void
json_free(json_t *v)
{
    int i;

    if (!v) {
        return;
    }
    for (i = 0; i < v->n; i++) {
        json_free(v->items[i]);
        if (v->keys) {
            free(v->keys[i]);
        }
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

const json_t *
json_get(const json_t *obj, const char *key)
{
    int i;

    if (!obj || obj->type != JSON_OBJ) {
        return NULL;
    }
    for (i = 0; i < obj->n; i++) {
        if (strcmp(obj->keys[i], key) == 0) {
            return obj->items[i];
        }
    }
    return NULL;
}

const json_t *
json_at(const json_t *arr, int i)
{
    return arr && arr->type == JSON_ARR && i >= 0 && i < arr->n ? arr->items[i] : NULL;
}

const char *
json_str(const json_t *obj, const char *key)
{
    const json_t *v = json_get(obj, key);

    return v && v->type == JSON_STR ? v->str : NULL;
}

double
json_num(const json_t *obj, const char *key)
{
    const json_t *v = json_get(obj, key);

    return v && v->type == JSON_NUM ? v->num : -1e300;
}
