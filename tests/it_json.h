/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * it_json.h: a small, strict JSON parser (RFC 8259) for the integration
 * tests that read the status page (tests/it_status.c).  Strict: the whole
 * text is one value, no trailing commas, no control characters in strings,
 * every escape checked.  A \udcXX escape with no high surrogate before it
 * becomes the byte 0xXX, as Python's surrogateescape would give it back,
 * so that a path that is not UTF-8 can be compared byte for byte.
 */
#ifndef PYR_IT_JSON_H
#define PYR_IT_JSON_H

#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ } json_type_t;

typedef struct json {
    json_type_t type;
    int b;           /* JSON_BOOL */
    double num;      /* JSON_NUM */
    char *str;       /* JSON_STR: NUL-terminated (may hold NULs: len) */
    size_t len;
    int n;           /* JSON_ARR, JSON_OBJ: items */
    struct json **items;
    char **keys;     /* JSON_OBJ */
} json_t;

/* The value of text, or NULL with err set (what and where). */
json_t *json_parse(const char *text, char *err, size_t errlen);
void json_free(json_t *v);

/* obj[key], or NULL when obj is not an object or lacks key. */
const json_t *json_get(const json_t *obj, const char *key);
/* arr[i], or NULL. */
const json_t *json_at(const json_t *arr, int i);
/* The string value of obj[key], or NULL if absent or not a string. */
const char *json_str(const json_t *obj, const char *key);
/* The number of obj[key]; -1e300 if absent or not a number. */
double json_num(const json_t *obj, const char *key);

#endif /* PYR_IT_JSON_H */
