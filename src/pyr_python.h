/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * pyr_python.h: what the engine's Python-side files share with each other (no
 * httpd here either).  The public engine API is include/pyreload.h.
 */
#ifndef PYR_PYTHON_H
#define PYR_PYTHON_H

#include "pyreload.h"

#include <apr_tables.h>

/* pymod.c: the built-in "pyreload" module. */
PyObject *pyr_pymod_init(void); /* PyImport_AppendInittab target */
void pyr_pymod_set_extender(int (*extend)(PyObject *module));
extern PyObject *pyr_HTTPError; /* pyreload.HTTPError, owned by the module */
/* Have atexit call def (no arguments) at finalisation, while Python still
 * runs: where what a C global holds is dropped.  0, or -1 + exception. */
int pyr_atexit(PyMethodDef *def);

/* stdio.c: sys.stdout and sys.stderr into the error log.  GIL.  log must
 * outlive the interpreter. */
int pyr_stdio_install(const pyr_logger_t *log);
void pyr_stdio_flush(void);   /* log the unfinished lines */
void pyr_stdio_release(void); /* flush, and drop our references */

/* pylog.c: logging records into the error log at their own level, through
 * log when no request is bound to the thread (pyr_pylog_bind).  GIL, once
 * per process.  log must outlive the interpreter. */
int pyr_pylog_install(const pyr_logger_t *log);
/* A stream's writelines(): write(self, item) for each item of lines. */
PyObject *pyr_writelines(PyObject *self, PyObject *lines, PyObject *(*write)(PyObject *, PyObject *));

/* procguard.c: what a handler may do to its process (see there).  GIL.  log
 * must outlive the interpreter. */
int pyr_guard_install(const pyr_logger_t *log, void (*drain)(int max_ms));
void pyr_guard_release(void);
void pyr_guard_forked_copy(void); /* exits in a copy made by a handler's fork */

/* shutdown.c: a bounded end.  Wait at most timeout_ms for the threads
 * handlers left, log those abandoned; finalisation then does not wait for
 * them.  GIL, main thread. */
void pyr_shutdown_threads(const pyr_logger_t *log, int timeout_ms);
/* End the process (logged) if pyr_shutdown_backstop_cancel() is not called
 * within ms.  Any thread, GIL or not; log must stay valid. */
void pyr_shutdown_backstop(const pyr_logger_t *log, int ms);
void pyr_shutdown_backstop_cancel(void);

/* guard.c: whether a request is still running, and who is using it; shared
 * by req and its tables (see guard.c).  Every function: GIL, unless said. */
typedef struct pyr_guard pyr_guard_t;
pyr_guard_t *pyr_guard_new(void); /* live; NULL + MemoryError */
void pyr_guard_ref(pyr_guard_t *g);
void pyr_guard_unref(pyr_guard_t *g); /* NULL is fine */
/* Wait (GIL released) while another thread is inside the request, then:
 * live 1/0; check 0, or -1 with RuntimeError once it has finished. */
int pyr_guard_live(pyr_guard_t *g);
int pyr_guard_check(pyr_guard_t *g);
/* As check, and then the request is the caller's alone until leave, which
 * is called WITHOUT the GIL (release it first if need be). */
int pyr_guard_enter(pyr_guard_t *g);
void pyr_guard_leave(pyr_guard_t *g); /* no GIL */
/* The request thread, when the request ends: every later call raises. */
void pyr_guard_close(pyr_guard_t *g);

/* table.c: a case-insensitive mapping over an apr_table_t.  guard, if not
 * NULL, says when the table's memory is gone (a finished request's); the
 * table keeps a reference to it.  NULL: always valid (configuration). */
extern PyTypeObject pyr_TableType;
PyObject *pyr_table_new(apr_table_t *t, pyr_guard_t *guard, int readonly);

/* Strings we look up on every load or request, interned once (interp.c). */
typedef struct pyr_strings {
    PyObject *clone;      /* "__clone__" */
    PyObject *upgrade;    /* "__upgrade__" */
    PyObject *purge;      /* "__purge__" */
    PyObject *generation; /* "__generation__" */
    PyObject *file;       /* "__file__" */
    PyObject *builtins;   /* "__builtins__" */
} pyr_strings_t;
extern pyr_strings_t pyr_str;

#endif /* PYR_PYTHON_H */
