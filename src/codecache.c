/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * codecache.c: compiled once per host.  The first process to load a version
 * of a file compiles it and leaves the marshalled code in the cache
 * directory; the other processes, and every process after a restart,
 * unmarshal it instead of compiling.
 *
 * One file per key, named after it.  The key is a SHA-256 over the file's
 * path, the hash of its exact bytes, Python's magic number, the marshal
 * version and the optimisation level: an edit, another Python or `-O` is
 * another file.  The path is in the key because a code object carries its
 * file name (co_filename, in every nested code object): code cached under
 * the path it runs as names the real file and line in tracebacks with no
 * rewriting on each load, at the cost of compiling twice two identical
 * files at two paths.
 *
 * A file is [64-byte header][marshalled code].  The header holds a magic,
 * Python's magic number, the key, the payload's length and a checksum of
 * it, so that a truncated, corrupt or foreign file (or one renamed to
 * another key's name) is noticed, logged once, compiled over and replaced.
 * The checksum guards against accidents, not attackers: what keeps those
 * out is that only files owned by this process's user (the server's User)
 * or root, and writable by nobody else, are read at all, in a directory
 * that mod_pyreload made or vetted at start-up (src/codecache_dir.c).  A
 * file is written whole under a temporary name in the same directory, then
 * renamed over its name: a reader sees the old file or the new one, never
 * half of one.  No fsync: a file cut short by a crash fails its checksum
 * and is replaced, like any other bad file.
 *
 * Locking: the GIL (module.c's caller holds the build mutex too),
 * released around the file system.  The directory is set before any load.
 */
#include "pyr_codecache.h"

#include <marshal.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FILE_MAGIC "PYRCODE1"
/* Larger is not a cache file of ours (a 10,000-line module is 330 KB). */
#define MAX_PAYLOAD ((size_t)256 << 20)
/* Bad files said once each, per process (a file that cannot be replaced
 * is met again at each load). */
#define TOLD_MAX 16

static char *cache_dir;
static int optimize = -2; /* -2: not read yet */
static long py_magic = -1; /* -1: not read yet */
static int write_failed;  /* GIL: said once */
static unsigned char told[TOLD_MAX][PYR_CC_KEY_LEN];
static int ntold;
static unsigned long tmp_serial;

void
pyr_codecache_set_dir(const char *dir)
{
    free(cache_dir);
    cache_dir = dir && *dir ? strdup(dir) : NULL;
}

const char *
pyr_codecache_dir(void)
{
    return cache_dir;
}

/* ------------------------------------------------------------------ */
/* The format                                                          */

static void
put64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint64_t
get64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t
rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* XXH64's mixing, four lanes: fast enough (several GB/s) that checking a
 * large module's file costs little next to unmarshalling it. */
static uint64_t
checksum(const unsigned char *p, size_t n)
{
    const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL;
    uint64_t v[4] = { P1 + P2, P2, 0, -P1 }, h;
    size_t i = 0;
    int k;

    for (; i + 32 <= n; i += 32) {
        for (k = 0; k < 4; k++) {
            uint64_t w;

            memcpy(&w, p + i + 8 * k, 8);
            v[k] = rotl(v[k] + w * P2, 31) * P1;
        }
    }
    h = rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18) + (uint64_t)n;
    for (; i < n; i++) {
        h = rotl(h ^ (p[i] * P1), 11) * P2;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P1;
    return h ^ (h >> 32);
}

/* Python's bytecode magic number: read through importlib, so with the GIL,
 * the first time (a key is always made before a file is read). */
static uint64_t
python_magic(void)
{
    if (py_magic == -1) {
        py_magic = PyImport_GetMagicNumber();
        if (py_magic == -1) {
            PyErr_Clear(); /* then no file matches: every load compiles */
            py_magic = 0;
        }
    }
    return (uint64_t)py_magic;
}

/* sys.flags.optimize: -O changes the code (asserts, docstrings). */
static int
optimization_level(void)
{
    if (optimize == -2) {
        PyObject *flags = PySys_GetObject("flags"); /* borrowed */
        PyObject *v = flags ? PyObject_GetAttrString(flags, "optimize") : NULL;

        optimize = v ? (int)PyLong_AsLong(v) : 0;
        Py_XDECREF(v);
        PyErr_Clear(); /* no flags: Python's default, 0 */
    }
    return optimize;
}

static void
hash_feed(unsigned char **buf, size_t *n, size_t *cap, const void *data, size_t len)
{
    if (*n + len > *cap) {
        *cap = (*n + len) * 2;
        if (!(*buf = realloc(*buf, *cap))) {
            abort();
        }
    }
    memcpy(*buf + *n, data, len);
    *n += len;
}

void
pyr_codecache_key(const char *path, const unsigned char *source_sha,
                  unsigned char key[PYR_CC_KEY_LEN], char *name)
{
    unsigned char *buf = NULL, num[8];
    size_t n = 0, cap = 0;
    int i;

    hash_feed(&buf, &n, &cap, FILE_MAGIC, sizeof(FILE_MAGIC));
    put64(num, python_magic());
    hash_feed(&buf, &n, &cap, num, 8);
    put64(num, (uint64_t)Py_MARSHAL_VERSION);
    hash_feed(&buf, &n, &cap, num, 8);
    put64(num, (uint64_t)(int64_t)optimization_level());
    hash_feed(&buf, &n, &cap, num, 8);
    hash_feed(&buf, &n, &cap, path, strlen(path) + 1);
    hash_feed(&buf, &n, &cap, source_sha, 32);
    pyr_sha256(buf, n, key);
    free(buf);
    for (i = 0; i < PYR_CC_KEY_LEN; i++) {
        sprintf(name + 2 * i, "%02x", key[i]);
    }
    strcpy(name + 2 * PYR_CC_KEY_LEN, ".pyrc");
}

/* magic[8] pymagic[8] key[32] length[8] checksum[8], little-endian. */
void
pyr_codecache_header(const unsigned char key[PYR_CC_KEY_LEN], const void *payload, size_t len,
                     unsigned char header[PYR_CC_HEADER_LEN])
{
    memcpy(header, FILE_MAGIC, 8);
    put64(header + 8, python_magic());
    memcpy(header + 16, key, PYR_CC_KEY_LEN);
    put64(header + 48, (uint64_t)len);
    put64(header + 56, checksum(payload, len));
}

const char *
pyr_codecache_check(const unsigned char key[PYR_CC_KEY_LEN], const unsigned char *data,
                    size_t size, const unsigned char **payload, size_t *len)
{
    uint64_t want;

    if (size < PYR_CC_HEADER_LEN) {
        return "truncated (shorter than its header)";
    }
    if (memcmp(data, FILE_MAGIC, 8) != 0) {
        return "not a mod_pyreload code cache file";
    }
    if (get64(data + 8) != python_magic()) {
        return "written for another Python (magic number)";
    }
    if (memcmp(data + 16, key, PYR_CC_KEY_LEN) != 0) {
        return "written for another file or version (key)";
    }
    want = get64(data + 48);
    if (want != size - PYR_CC_HEADER_LEN) {
        return want > size - PYR_CC_HEADER_LEN ? "truncated" : "longer than its header says";
    }
    if (get64(data + 56) != checksum(data + PYR_CC_HEADER_LEN, (size_t)want)) {
        return "corrupt (checksum mismatch)";
    }
    *payload = data + PYR_CC_HEADER_LEN;
    *len = (size_t)want;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Files                                                               */

/* 1 when st is ours or root's; else 0, with the reason in buf. */
static int
trusted_owner(const struct stat *st, char *buf, size_t buflen)
{
    if (st->st_uid == geteuid() || st->st_uid == 0) {
        return 1;
    }
    snprintf(buf, buflen, "owned by uid %ld, neither this server's user (uid %ld) nor root",
             (long)st->st_uid, (long)geteuid());
    return 0;
}

/* Read file if it may be trusted and is whole: 1 (*data, *size: malloc'd);
 * 0 when there is none; -1 when it is bad (*why).  No GIL. */
static int
read_file(const char *file, const unsigned char *key, unsigned char **data, size_t *size,
          const char **why, char *buf, size_t buflen)
{
    const unsigned char *payload;
    struct stat st;
    size_t n = 0, plen;
    int fd;

    fd = open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;

        if (err == ENOENT) {
            return 0;
        }
        /* Someone else's file (0600) cannot even be opened: say whose. */
        if (lstat(file, &st) != 0 || trusted_owner(&st, buf, buflen)) {
            snprintf(buf, buflen, "cannot be opened (%s)", strerror(err));
        }
        *why = buf;
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "not a regular file";
    }
    else if (!trusted_owner(&st, buf, buflen)) {
        *why = buf;
    }
    else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        *why = "writable by group or others";
    }
    else if ((size_t)st.st_size > MAX_PAYLOAD + PYR_CC_HEADER_LEN) {
        *why = "too large";
    }
    else {
        *why = NULL;
    }
    if (*why) {
        close(fd);
        return -1;
    }
    *data = malloc((size_t)st.st_size + 1);
    while (*data && n < (size_t)st.st_size) {
        ssize_t got = read(fd, *data + n, (size_t)st.st_size - n);

        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            break;
        }
        n += (size_t)got;
    }
    close(fd);
    if (!*data) {
        *why = "too large to read";
        return -1;
    }
    if ((*why = pyr_codecache_check(key, *data, n, &payload, &plen))) {
        free(*data);
        *data = NULL;
        return -1;
    }
    *size = n;
    return 1;
}

/* Write header + payload under a temporary name, then rename it to file.
 * 0, or an errno value.  No GIL. */
static int
write_file(const char *file, const unsigned char *header, const char *payload, size_t len)
{
    char tmp[4200];
    struct iovec iov[2];
    size_t total = PYR_CC_HEADER_LEN + len, done = 0;
    int fd, rv = 0;

    snprintf(tmp, sizeof(tmp), "%s.%ld.%lu.tmp", file, (long)getpid(),
             __atomic_add_fetch(&tmp_serial, 1, __ATOMIC_RELAXED));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        return errno;
    }
    while (done < total) {
        size_t off = done > PYR_CC_HEADER_LEN ? done - PYR_CC_HEADER_LEN : 0;
        ssize_t put;
        int k = 0;

        if (done < PYR_CC_HEADER_LEN) {
            iov[k].iov_base = (void *)(header + done);
            iov[k++].iov_len = PYR_CC_HEADER_LEN - done;
        }
        iov[k].iov_base = (void *)(payload + off);
        iov[k++].iov_len = len - off;
        put = writev(fd, iov, k);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            rv = put < 0 ? errno : EIO;
            break;
        }
        done += (size_t)put;
    }
    if (close(fd) != 0 && !rv) {
        rv = errno;
    }
    if (!rv && rename(tmp, file) != 0) {
        rv = errno;
    }
    if (rv) {
        unlink(tmp);
    }
    return rv;
}

/* 1 the first time this process meets a bad file for key.  GIL. */
static int
first_telling(const unsigned char *key)
{
    int i;

    for (i = 0; i < ntold && i < TOLD_MAX; i++) {
        if (memcmp(told[i], key, PYR_CC_KEY_LEN) == 0) {
            return 0;
        }
    }
    memcpy(told[ntold++ % TOLD_MAX], key, PYR_CC_KEY_LEN);
    return 1;
}

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* The code in a good file, or NULL (no exception) with *why when it is not
 * code for fname.  GIL. */
static PyObject *
unmarshal(const unsigned char *data, size_t size, PyObject *fname, const char **why)
{
    PyObject *code = PyMarshal_ReadObjectFromString((const char *)data + PYR_CC_HEADER_LEN,
                                                    (Py_ssize_t)(size - PYR_CC_HEADER_LEN));
    int same;

    if (!code) {
        PyErr_Clear(); /* a bad file is compiled over, not an error */
        *why = "cannot be unmarshalled";
        return NULL;
    }
    if (!PyCode_Check(code)) {
        *why = "holds no code object";
        Py_DECREF(code);
        return NULL;
    }
    same = PyUnicode_Compare(((PyCodeObject *)code)->co_filename, fname) == 0;
    PyErr_Clear(); /* a str always compares */
    if (!same) {
        *why = "holds code compiled for another file";
        Py_DECREF(code);
        return NULL;
    }
    return code;
}

PyObject *
pyr_codecache_code(const char *path, PyObject *fname, const char *src, size_t len,
                   const unsigned char *source_sha, const unsigned char *replaces_sha,
                   const pyr_logger_t *log)
{
    PyCompilerFlags flags = { 0, PY_MINOR_VERSION };
    unsigned char key[PYR_CC_KEY_LEN], header[PYR_CC_HEADER_LEN], *data = NULL;
    char name[PYR_CC_NAME_LEN + 1], file[4096], reason[256], stored[300];
    char old[PYR_CC_NAME_LEN + 1] = "", oldfile[4096];
    const char *dir = cache_dir, *why = NULL;
    PyObject *code = NULL, *bytes;
    const char *payload;
    size_t size = 0, plen;
    double t0 = now_ms();
    int rv = 0, tell;

    if (!dir) {
        code = Py_CompileStringObject(src, fname, Py_file_input, &flags, optimization_level());
        if (code) {
            Py_BEGIN_ALLOW_THREADS
            pyr_logf(log, PYR_LOG_INFO, "PYR0600: %s: compiled in %.3f ms (code cache off)", path,
                     now_ms() - t0);
            Py_END_ALLOW_THREADS
        }
        return code;
    }
    pyr_codecache_key(path, source_sha, key, name);
    snprintf(file, sizeof(file), "%s/%s", dir, name);
    Py_BEGIN_ALLOW_THREADS
    rv = read_file(file, key, &data, &size, &why, reason, sizeof(reason));
    Py_END_ALLOW_THREADS
    if (rv == 1) {
        code = unmarshal(data, size, fname, &why);
        free(data);
        if (code) {
            Py_BEGIN_ALLOW_THREADS
            pyr_logf(log, PYR_LOG_INFO, "PYR0601: %s: from cache in %.3f ms (%s)", path,
                     now_ms() - t0, name);
            Py_END_ALLOW_THREADS
            return code;
        }
    }
    tell = why && first_telling(key);
    if (!(code = Py_CompileStringObject(src, fname, Py_file_input, &flags, optimization_level()))) {
        return NULL;
    }
    if (!(bytes = PyMarshal_WriteObjectToString(code, Py_MARSHAL_VERSION))) {
        PyErr_Clear(); /* a code object always marshals; the cache is only an aid */
        return code;
    }
    /* The version this one replaces in this process: its file goes, so that
     * the directory does not grow by a file per save. */
    if (replaces_sha && memcmp(replaces_sha, source_sha, PYR_SHA256_LEN) != 0) {
        unsigned char oldkey[PYR_CC_KEY_LEN];

        pyr_codecache_key(path, replaces_sha, oldkey, old);
        snprintf(oldfile, sizeof(oldfile), "%s/%s", dir, old);
    }
    payload = PyBytes_AS_STRING(bytes); /* bytes is immutable and held: read without the GIL */
    plen = (size_t)PyBytes_GET_SIZE(bytes);
    Py_BEGIN_ALLOW_THREADS
    if (tell) {
        pyr_logf(log, PYR_LOG_WARNING,
                 "PYR0602: code cache file %s/%s (for %s) %s: ignored, and replaced", dir, name,
                 path, why);
    }
    pyr_codecache_header(key, payload, plen, header);
    rv = write_file(file, header, payload, plen);
    if (rv) {
        snprintf(stored, sizeof(stored), "not stored: %s", strerror(rv));
    }
    else {
        snprintf(stored, sizeof(stored), "stored as %s", name);
        if (*old) {
            (void)unlink(oldfile); /* gone already: another process replaced it */
        }
    }
    pyr_logf(log, PYR_LOG_INFO, "PYR0600: %s: compiled in %.3f ms (code cache: %s)", path,
             now_ms() - t0, stored);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    if (rv && !write_failed) {
        write_failed = 1;
        Py_BEGIN_ALLOW_THREADS
        pyr_logf(log, PYR_LOG_WARNING,
                 "PYR0603: cannot write into the code cache %s (%s): this process compiles "
                 "without storing (said once per process)",
                 dir, strerror(rv));
        Py_END_ALLOW_THREADS
    }
    return code;
}
