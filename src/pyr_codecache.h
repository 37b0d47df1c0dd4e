/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pyr_codecache.h: the host-wide cache of compiled code (codecache.c), an
 * engine file (no httpd header).  The httpd side (src/codecache_dir.c)
 * makes and vets the directory; module.c asks for a module's code.
 */
#ifndef PYR_CODECACHE_H
#define PYR_CODECACHE_H

#include "pyreload.h"

#include <stddef.h>
#include <stdint.h>

#define PYR_CC_KEY_LEN    32
#define PYR_CC_HEADER_LEN 64
/* "<64 hex digits of the key>.pyrc" */
#define PYR_CC_NAME_LEN (2 * PYR_CC_KEY_LEN + 5)

/* The directory of this process's code cache, or NULL: off (the default).
 * Copied.  Before the first load; no GIL needed. */
void pyr_codecache_set_dir(const char *dir);
const char *pyr_codecache_dir(void);

/* The code of the file at path (fname: the same as a str) whose bytes are
 * src[0..len) and hash (SHA-256) source_sha: unmarshalled from the cache
 * when it holds a good file for that key, else compiled (honouring a coding
 * cookie) and stored for the other processes; then the file of the version
 * it replaces (replaces_sha: the current generation's hash, or NULL) is
 * removed.  One PYR0600 ("compiled") or PYR0601 ("from cache") line goes
 * to log.  GIL (released around the file system).  New reference, or NULL
 * with an exception (a SyntaxError). */
PyObject *pyr_codecache_code(const char *path, PyObject *fname, const char *src, size_t len,
                             const unsigned char *source_sha, const unsigned char *replaces_sha,
                             const pyr_logger_t *log);

/* The file format, for the unit tests.  key: what the file must be for
 * (path, source hash, Python's magic number, optimisation level); name: its
 * file name (NUL-terminated, PYR_CC_NAME_LEN + 1 bytes).  GIL (reads
 * Python's optimisation level and magic number, the first time; header and
 * check use what it read). */
void pyr_codecache_key(const char *path, const unsigned char *source_sha,
                       unsigned char key[PYR_CC_KEY_LEN], char *name);
/* The header of a file holding payload (len bytes) for key. */
void pyr_codecache_header(const unsigned char key[PYR_CC_KEY_LEN], const void *payload, size_t len,
                          unsigned char header[PYR_CC_HEADER_LEN]);
/* NULL when data (size bytes: header and payload) is a whole, intact file
 * for key (*payload, *len: the marshalled code in it); else why not. */
const char *pyr_codecache_check(const unsigned char key[PYR_CC_KEY_LEN], const unsigned char *data,
                                size_t size, const unsigned char **payload, size_t *len);

#endif /* PYR_CODECACHE_H */
